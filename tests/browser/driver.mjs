// A real browser for the tests: Debian's headless Chromium driven through playwright-core, one
// page, commanded by JSON lines on stdin, each answered by exactly one JSON line on stdout:
// {"ok":true,"value":...} or {"ok":false,"error":"...","timeout":bool}. The Rust side is
// tests/src/browser.rs; scripts/test installs playwright-core and sets SHARED_F2B_PLAYWRIGHT to
// the node_modules directory holding it. No browser is ever downloaded.
//
// Commands ("op"): init {script}, goto {url}, wait {expression, timeout_ms}, eval {expression},
// fill {selector, text}, click {selector}, press {selector, key}, screenshot {path, full_page},
// metrics, problems, close. A failing command (a timeout too) answers ok:false and the driver
// goes on; at the end of stdin, or on close, it closes the browser and exits 0.
//
// "problems" are what a user or a reviewer would call the page misbehaving, collected since the
// start: console errors, uncaught exceptions, CSP violations, failed requests and dialogs.

import { createInterface } from "node:readline";
import { join } from "node:path";
import { pathToFileURL } from "node:url";
import { performance } from "node:perf_hooks";

const modules = process.env.SHARED_F2B_PLAYWRIGHT;
if (!modules) {
  process.stderr.write(
    "driver.mjs: SHARED_F2B_PLAYWRIGHT is unset: run scripts/test, which installs playwright-core\n",
  );
  process.exit(2);
}
const { chromium } = await import(pathToFileURL(join(modules, "playwright-core", "index.mjs")).href);

// Debian's Chromium ($SHARED_F2B_CHROMIUM to try another): no sandbox, as the tests run as root;
// no background networking, so nothing but the pages under test goes out.
const browser = await chromium.launch({
  executablePath: process.env.SHARED_F2B_CHROMIUM || "/usr/bin/chromium",
  args: ["--headless", "--no-sandbox", "--disable-gpu", "--disable-background-networking"],
});
let closing = false;
browser.on("disconnected", () => {
  if (!closing) {
    process.stderr.write("driver.mjs: Chromium went away\n");
    process.exit(3);
  }
});

const problems = [];
const context = await browser.newContext({ viewport: { width: 1400, height: 1000 } });

// CSP violations as the page sees them: a listener installed before any of the page's scripts,
// reporting through a binding (bindings and init scripts are not subject to the page's CSP).
// Chromium also logs each violation as a console error, which is recorded as such.
await context.exposeBinding("__sharedF2bCspViolation", (_source, text) => {
  problems.push(`csp: ${text}`);
});
await context.addInitScript(() => {
  const report = globalThis.__sharedF2bCspViolation;
  globalThis.addEventListener(
    "securitypolicyviolation",
    (e) => {
      const where = e.sourceFile ? ` at ${e.sourceFile}:${e.lineNumber}` : "";
      report(`${e.effectiveDirective || e.violatedDirective} blocked ${e.blockedURI || "(inline)"} on ${e.documentURI}${where}`);
    },
    true,
  );
});

const page = await context.newPage();
// Actions (fill, click, press) give up after 10 s rather than Playwright's 30 s.
page.setDefaultTimeout(10_000);

page.on("console", (msg) => {
  const text = msg.text();
  if (msg.type() === "error" || text.includes("Refused to")) {
    const loc = msg.location();
    const where = loc && loc.url ? ` (${loc.url}:${loc.lineNumber})` : "";
    problems.push(`console.${msg.type()}: ${text}${where}`);
  }
});
page.on("pageerror", (err) => problems.push(`pageerror: ${err.message}`));
page.on("crash", () => problems.push("page crashed"));
page.on("dialog", (dialog) => {
  problems.push(`dialog ${dialog.type()}: ${dialog.message()}`);
  dialog.dismiss().catch(() => {});
});

// When each request started, and when the main frame last started navigating: a fetch (an event
// stream, a long poll) still open when the page navigates away is aborted by the browser, which
// is no fault of the page.
const started = new WeakMap();
let lastNavigation = -1;
page.on("request", (request) => {
  const now = performance.now();
  started.set(request, now);
  if (request.isNavigationRequest() && request.frame() === page.mainFrame()) lastNavigation = now;
});
page.on("requestfailed", (request) => {
  const error = request.failure()?.errorText ?? "failed";
  // A request a later navigation cut off (a stream the page held, an icon still loading) is
  // the navigation's doing, not the page's problem.
  const begun = started.get(request) ?? 0;
  if (error === "net::ERR_ABORTED" && lastNavigation >= begun) return;
  problems.push(`requestfailed: ${request.method()} ${request.url()}: ${error}`);
});

async function close() {
  closing = true;
  await browser.close().catch(() => {});
}

// Lets events already sent by the page (CSP reports through the binding, console messages)
// arrive before the list is read; harmless when there is no page to ask.
async function settle() {
  await page
    .evaluate(() => new Promise((resolve) => setTimeout(resolve, 0)))
    .catch(() => {});
}

// Waits until `expression` is truthy in the page, checked on every animation frame; returns the
// milliseconds it took. Not page.waitForFunction: that evaluates its predicate with eval() on each
// frame, which a strict CSP (no 'unsafe-eval', as the product's pages send) refuses, failing the
// wait and reporting a violation the page did not commit. Here the check is compiled once, during
// the evaluation DevTools makes, and only called afterwards. An expression that throws counts as
// not yet true (the last error is told on timeout); a navigation starts the check again.
async function waitFor(expression, timeout) {
  const begin = performance.now();
  const deadline = begin + timeout;
  let last = "";
  for (;;) {
    const left = Math.max(0, deadline - performance.now());
    const probe = `new Promise((resolve) => {
      const until = performance.now() + ${left};
      const check = async () => {
        let error = "";
        try {
          if (await (${expression}\n)) return resolve({ done: true });
        } catch (e) {
          error = String(e && e.message || e);
        }
        if (performance.now() >= until) return resolve({ done: false, error });
        requestAnimationFrame(check);
      };
      check();
    })`;
    try {
      const result = await page.evaluate(probe);
      if (result.done) return performance.now() - begin;
      last = result.error;
    } catch (e) {
      // An expression that does not parse never will.
      if (/SyntaxError/.test(String(e?.message))) throw e;
      last = String(e?.message ?? e);
    }
    if (performance.now() >= deadline) {
      const error = new Error(
        `timed out after ${timeout} ms waiting for ${expression}` + (last ? ` (last error: ${last})` : ""),
      );
      error.name = "TimeoutError";
      throw error;
    }
    await new Promise((resolve) => setTimeout(resolve, 16));
  }
}

const commands = {
  async init({ script }) {
    await context.addInitScript(script);
    return null;
  },
  async goto({ url }) {
    const begin = performance.now();
    const response = await page.goto(url, { waitUntil: "load", timeout: 30_000 });
    return { status: response ? response.status() : null, ms: performance.now() - begin };
  },
  async wait({ expression, timeout_ms }) {
    return await waitFor(expression, timeout_ms ?? 10_000);
  },
  async eval({ expression }) {
    return await page.evaluate(expression);
  },
  async fill({ selector, text }) {
    await page.fill(selector, text);
    return null;
  },
  async click({ selector }) {
    await page.click(selector);
    return null;
  },
  async press({ selector, key }) {
    await page.press(selector, key);
    return null;
  },
  async screenshot({ path, full_page }) {
    await page.screenshot({ path, fullPage: Boolean(full_page) });
    return null;
  },
  async metrics() {
    return await page.evaluate(() => {
      const paint = performance.getEntriesByType("paint").find((e) => e.name === "first-contentful-paint");
      const nav = performance.getEntriesByType("navigation")[0];
      return {
        fcp: paint ? paint.startTime : null,
        dcl: nav ? nav.domContentLoadedEventEnd : null,
        load: nav ? nav.loadEventEnd : null,
      };
    });
  },
  async problems() {
    await settle();
    return problems.slice();
  },
  async close() {
    await close();
    return null;
  },
};

function answer(reply) {
  process.stdout.write(JSON.stringify(reply) + "\n");
}

async function run(line) {
  let command;
  try {
    command = JSON.parse(line);
  } catch (e) {
    return { ok: false, error: `not JSON: ${e.message}`, timeout: false };
  }
  const handler = Object.hasOwn(commands, command?.op) ? commands[command.op] : null;
  if (!handler) return { ok: false, error: `unknown op ${JSON.stringify(command?.op)}`, timeout: false };
  try {
    return { ok: true, value: (await handler(command)) ?? null };
  } catch (e) {
    // Playwright's call logs come with terminal colours.
    const error = String(e?.message ?? e).replace(/\x1b\[[0-9;]*m/g, "");
    return { ok: false, error, timeout: e?.name === "TimeoutError" };
  }
}

process.on("unhandledRejection", (e) => process.stderr.write(`driver.mjs: unhandled: ${e?.stack ?? e}\n`));
for (const signal of ["SIGTERM", "SIGINT", "SIGHUP"]) {
  process.on(signal, () => close().then(() => process.exit(0)));
}

for await (const line of createInterface({ input: process.stdin, crlfDelay: Infinity })) {
  if (!line.trim()) continue;
  answer(await run(line));
  if (closing) process.exit(0);
}
await close();
process.exit(0);

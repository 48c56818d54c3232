//! A real browser: Debian's headless Chromium, driven through playwright-core by
//! `tests/browser/driver.mjs`, for what a user sees of the site's pages: one page, commands as
//! JSON lines, and the page's problems (console errors, uncaught exceptions, CSP violations,
//! failed requests, dialogs) collected since launch.
//!
//! scripts/test installs Chromium, Node and playwright-core (no browser is ever downloaded) and
//! sets `$SHARED_F2B_PLAYWRIGHT` to the `node_modules` directory that holds playwright-core.

use crate::repo_root;
use serde_json::{Value, json};
use std::io::{BufRead, BufReader, Write};
use std::os::unix::process::CommandExt;
use std::path::{Path, PathBuf};
use std::process::{Child, ChildStdin, Command, Stdio};
use std::sync::mpsc::{self, Receiver, RecvTimeoutError};
use std::time::{Duration, Instant};

/// How long Chromium may take to start (a loaded two-core machine is slow).
const LAUNCH: Duration = Duration::from_secs(60);
/// How long a command may take beyond its own timeout in the driver (navigations give up after
/// 30 s, actions after 10 s) before the driver counts as hung.
const SLACK: Duration = Duration::from_secs(30);
/// How long the driver may take to close Chromium and exit when dropped.
const GRACE: Duration = Duration::from_secs(5);

/// A running Chromium with one page (1400×1000), closed with everything it started on drop.
pub struct Browser {
    child: Child,
    stdin: Option<ChildStdin>,
    answers: Receiver<String>,
    /// The driver's stderr: Playwright's and Chromium's complaints.
    pub log: PathBuf,
}

/// The driver's answer to one command.
struct Answer {
    ok: bool,
    value: Value,
    error: String,
    /// The command gave up after its timeout.
    timeout: bool,
}

/// `s` as a JavaScript string literal (JSON quotes strings as JavaScript does), for building
/// expressions: `format!("document.title === {}", js_str(title))`.
pub fn js_str(s: &str) -> String {
    serde_json::to_string(s).expect("a string serializes")
}

impl Browser {
    /// Starts the driver and Chromium; the driver's stderr goes to `dir/browser.log`. Panics,
    /// saying to run scripts/test, when playwright-core or node is missing.
    pub fn launch(dir: &Path) -> Browser {
        let modules = std::env::var_os("SHARED_F2B_PLAYWRIGHT").filter(|dir| !dir.is_empty());
        let Some(modules) = modules else {
            panic!(
                "SHARED_F2B_PLAYWRIGHT is unset: run scripts/test, which installs playwright-core \
                 and sets it (or set it to a node_modules directory holding playwright-core)"
            )
        };
        let index = Path::new(&modules)
            .join("playwright-core")
            .join("index.mjs");
        assert!(
            index.exists(),
            "{} is missing: run scripts/test, which installs playwright-core",
            index.display()
        );
        std::fs::create_dir_all(dir).expect("browser dir");
        let log = dir.join("browser.log");
        let stderr = std::fs::File::create(&log).expect("browser log");
        let mut child = Command::new("node")
            .arg(repo_root().join("tests/browser/driver.mjs"))
            .env("SHARED_F2B_PLAYWRIGHT", &modules)
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .stderr(stderr)
            // A group of its own, so that a hung driver can be killed with all it started.
            .process_group(0)
            .spawn()
            .unwrap_or_else(|e| {
                panic!("node does not start ({e}): run scripts/test, which installs nodejs")
            });
        let stdin = child.stdin.take();
        let stdout = child.stdout.take().expect("driver stdout is piped");
        let (tx, answers) = mpsc::channel();
        std::thread::spawn(move || {
            for line in BufReader::new(stdout).lines() {
                let Ok(line) = line else { break };
                if tx.send(line).is_err() {
                    break;
                }
            }
        });
        let mut browser = Browser {
            child,
            stdin,
            answers,
            log,
        };
        // The driver reads commands once Chromium runs: its first answer says it started.
        browser.call(json!({"op": "problems"}), LAUNCH);
        browser
    }

    /// Adds a script run in every document before the page's own (e.g. a token put in
    /// `sessionStorage`); it applies from the next navigation on.
    pub fn init(&mut self, script: &str) {
        self.call(json!({"op": "init", "script": script}), SLACK);
    }

    /// Opens `url` and waits for its `load` event; the HTTP status, 0 when there is no HTTP
    /// response (`data:` or `about:` URLs). Panics when the navigation fails.
    pub fn goto(&mut self, url: &str) -> u16 {
        let value = self.call(json!({"op": "goto", "url": url}), SLACK * 2);
        value["status"]
            .as_u64()
            .map_or(0, |s| u16::try_from(s).expect("an HTTP status fits in u16"))
    }

    /// Waits until `expression` is truthy in the page (checked on every animation frame; one
    /// that throws counts as not yet true); how long it took. Panics with the expression, its
    /// last error and the page's problems when it does not become true within `timeout`.
    pub fn wait(&mut self, expression: &str, timeout: Duration) -> Duration {
        let answer = self.send_wait(expression, timeout);
        if answer.ok {
            return ms(&answer.value);
        }
        panic!(
            "in the browser: {}\nthe page's problems: {}",
            answer.error,
            self.problems_text()
        );
    }

    /// As [`Browser::wait`], `None` when `expression` does not become true within `timeout`.
    /// Panics on other failures (an expression that does not parse).
    pub fn try_wait(&mut self, expression: &str, timeout: Duration) -> Option<Duration> {
        let answer = self.send_wait(expression, timeout);
        if answer.ok {
            return Some(ms(&answer.value));
        }
        assert!(
            answer.timeout,
            "in the browser, waiting for {expression}: {}",
            answer.error
        );
        None
    }

    /// The value of `expression` in the page (awaited when it is a promise), as JSON; `null`
    /// for `undefined`. Panics when it throws.
    pub fn eval(&mut self, expression: &str) -> Value {
        self.call(json!({"op": "eval", "expression": expression}), SLACK)
    }

    /// Types `text` into the field `selector` matches (replacing what it held).
    pub fn fill(&mut self, selector: &str, text: &str) {
        self.call(
            json!({"op": "fill", "selector": selector, "text": text}),
            SLACK,
        );
    }

    /// Clicks the element `selector` matches, once it is visible, stable and enabled.
    pub fn click(&mut self, selector: &str) {
        self.call(json!({"op": "click", "selector": selector}), SLACK);
    }

    /// Presses `key` (`Enter`, `Escape`, `Control+a`…) in the element `selector` matches.
    pub fn press(&mut self, selector: &str, key: &str) {
        self.call(
            json!({"op": "press", "selector": selector, "key": key}),
            SLACK,
        );
    }

    /// Saves a PNG of the whole page (not only the viewport) to `path`.
    pub fn screenshot(&mut self, path: &Path) {
        let path = path.to_str().expect("a UTF-8 screenshot path");
        self.call(
            json!({"op": "screenshot", "path": path, "full_page": true}),
            SLACK,
        );
    }

    /// The page's timings in milliseconds since its navigation started: `fcp` (first
    /// contentful paint, `null` before it), `dcl` (`DOMContentLoaded` ended) and `load`.
    pub fn metrics(&mut self) -> Value {
        self.call(json!({"op": "metrics"}), SLACK)
    }

    /// What went wrong in the page since launch, one line each: console errors, uncaught
    /// exceptions, CSP violations, failed requests (not streams cut by a navigation), dialogs
    /// (dismissed).
    pub fn problems(&mut self) -> Vec<String> {
        let value = self.call(json!({"op": "problems"}), SLACK);
        serde_json::from_value(value).expect("problems are strings")
    }

    /// The driver's stderr so far.
    pub fn log_text(&self) -> String {
        std::fs::read_to_string(&self.log).unwrap_or_default()
    }

    /// Sends a `wait`, with room for the driver's own timeout.
    fn send_wait(&mut self, expression: &str, timeout: Duration) -> Answer {
        let timeout_ms = u64::try_from(timeout.as_millis()).expect("a timeout in u64 ms");
        self.send(
            &json!({"op": "wait", "expression": expression, "timeout_ms": timeout_ms}),
            timeout + SLACK,
        )
    }

    /// Sends `command`, returns its value; panics with the driver's error and the page's
    /// problems when it fails.
    fn call(&mut self, command: Value, timeout: Duration) -> Value {
        let answer = self.send(&command, timeout);
        if !answer.ok {
            panic!(
                "in the browser, {command}: {}\nthe page's problems: {}",
                answer.error,
                self.problems_text()
            );
        }
        answer.value
    }

    /// The page's problems for a panic message.
    fn problems_text(&mut self) -> String {
        let answer = self.send(&json!({"op": "problems"}), SLACK);
        if answer.ok {
            format!("{:#}", answer.value)
        } else {
            format!("(unavailable: {})", answer.error)
        }
    }

    /// Sends `command` and reads its answer; panics with the driver's log when the driver is
    /// gone or does not answer within `timeout`.
    fn send(&mut self, command: &Value, timeout: Duration) -> Answer {
        let stdin = self
            .stdin
            .as_mut()
            .expect("the browser driver's stdin is open");
        if let Err(e) = writeln!(stdin, "{command}").and_then(|()| stdin.flush()) {
            self.stdin = None;
            panic!(
                "the browser driver is gone ({e}) before {command}:\n{}",
                tail(&self.log_text(), 40)
            );
        }
        let line = match self.answers.recv_timeout(timeout) {
            Ok(line) => line,
            Err(RecvTimeoutError::Disconnected) => {
                // What it said before exiting is in its log.
                let _ = self.child.wait();
                self.stdin = None;
                panic!(
                    "the browser driver exited on {command}:\n{}",
                    tail(&self.log_text(), 40)
                );
            }
            Err(RecvTimeoutError::Timeout) => {
                // Its next answers would be out of step with the commands: no more commands.
                self.stdin = None;
                panic!(
                    "the browser driver did not answer {command} within {timeout:?}:\n{}",
                    tail(&self.log_text(), 40)
                );
            }
        };
        let mut answer: Value = serde_json::from_str(&line)
            .unwrap_or_else(|e| panic!("the browser driver answered {line:?}: {e}"));
        Answer {
            ok: answer["ok"].as_bool() == Some(true),
            value: answer["value"].take(),
            error: answer["error"].as_str().unwrap_or_default().to_owned(),
            timeout: answer["timeout"].as_bool() == Some(true),
        }
    }

    /// Whether the driver has exited.
    fn exited(&mut self) -> bool {
        !matches!(self.child.try_wait(), Ok(None))
    }

    /// Waits up to `limit` for the driver to exit; whether it did.
    fn exits_within(&mut self, limit: Duration) -> bool {
        let start = Instant::now();
        while !self.exited() {
            if start.elapsed() >= limit {
                return false;
            }
            std::thread::sleep(Duration::from_millis(20));
        }
        true
    }

    /// Sends `signal` to the driver's process group and to Chromium's (Playwright starts
    /// Chromium as the leader of a group of its own).
    fn signal_all(&self, signal: libc::c_int) {
        let pid = i32::try_from(self.child.id()).expect("a pid fits in i32");
        for group in group_leaders_under(pid) {
            unsafe { libc::kill(-group, signal) };
        }
        unsafe { libc::kill(-pid, signal) };
    }
}

impl Drop for Browser {
    fn drop(&mut self) {
        // A failing test shows what the driver and Chromium said.
        if std::thread::panicking() {
            eprintln!(
                "--- {} (tail) ---\n{}",
                self.log.display(),
                tail(&self.log_text(), 30)
            );
        }
        // `close`, then the end of its input: the driver closes Chromium and exits.
        if let Some(mut stdin) = self.stdin.take() {
            let _ = writeln!(stdin, "{}", json!({"op": "close"}));
        }
        if self.exits_within(GRACE) {
            return;
        }
        // Hung: SIGTERM has Playwright close Chromium; then SIGKILL for what is left.
        self.signal_all(libc::SIGTERM);
        if !self.exits_within(GRACE) {
            self.signal_all(libc::SIGKILL);
        }
        let _ = self.child.wait();
    }
}

/// Children of `parent` that lead process groups of their own (read from `/proc`).
fn group_leaders_under(parent: i32) -> Vec<i32> {
    let Ok(entries) = std::fs::read_dir("/proc") else {
        return Vec::new();
    };
    entries
        .filter_map(Result::ok)
        .filter_map(|e| e.file_name().to_str()?.parse::<i32>().ok())
        .filter(|&pid| {
            // `pid (comm) state ppid pgrp …`; comm may hold spaces and parentheses.
            let Ok(stat) = std::fs::read_to_string(format!("/proc/{pid}/stat")) else {
                return false;
            };
            let Some((_, rest)) = stat.rsplit_once(')') else {
                return false;
            };
            let fields: Vec<&str> = rest.split_whitespace().collect();
            fields.get(1).and_then(|p| p.parse().ok()) == Some(parent)
                && fields.get(2).and_then(|g| g.parse().ok()) == Some(pid)
        })
        .collect()
}

/// Milliseconds as the driver counts them, as a duration.
fn ms(value: &Value) -> Duration {
    Duration::from_secs_f64(value.as_f64().expect("milliseconds") / 1000.0)
}

/// The last `n` lines of `text`.
fn tail(text: &str, n: usize) -> String {
    let lines: Vec<&str> = text.lines().collect();
    lines[lines.len().saturating_sub(n)..].join("\n")
}

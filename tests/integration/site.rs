//! The site page on `[archiver] http_listen`: its data read with curl, and the page itself in
//! headless Chromium driven by Playwright (the browser test). Bans are published through the
//! shipped site config by the hosts' own users.

use shared_f2b_tests::browser::{Browser, js_str};
use shared_f2b_tests::db::TestDb;
use shared_f2b_tests::http::Got;
use shared_f2b_tests::site::{self, Admin};
use shared_f2b_tests::{HostConfig, free_port, wait_until};
use std::io::{BufRead, BufReader};
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

const TOKEN: &str = "site-token-0123456789abcdef";
const WAIT: Duration = Duration::from_secs(30);

/// `curl -i` on the archiver's listener at `port`, with the token unless `token` is false.
fn curl(port: u16, path: &str, token: bool) -> Got {
    let mut cmd = Command::new("curl");
    cmd.args(["-sS", "-i", "--max-time", "10"]);
    if token {
        cmd.arg("-H").arg(format!("Authorization: Bearer {TOKEN}"));
    }
    let out = cmd
        .arg(format!("http://127.0.0.1:{port}{path}"))
        .output()
        .expect("curl runs (scripts/test installs it)");
    assert!(out.status.success(), "curl {path}: {out:?}");
    Got::parse(&out.stdout).expect("a status line and headers")
}

/// The JSON at `path` (with the token), which must be a 200.
fn data(port: u16, path: &str) -> serde_json::Value {
    let got = curl(port, path, true);
    assert_eq!(got.code, 200, "{path}: {}", got.text());
    assert_eq!(got.header("content-type"), Some("application/json"));
    serde_json::from_slice(&got.body).unwrap_or_else(|e| panic!("{path}: {e}: {}", got.text()))
}

fn ban(cfg: &HostConfig, jail: &str, ip: &str) {
    let out = cfg.publish(&["ban", "--jail", jail, "--ip", ip, "--bantime", "3600"]);
    assert!(out.status.success(), "ban {ip}: {out:?}");
}

fn ips(page: &serde_json::Value) -> Vec<&str> {
    page["rows"]
        .as_array()
        .expect("rows")
        .iter()
        .map(|r| r["ip"].as_str().expect("ip"))
        .collect()
}

/// The page and its assets without a token; its data only with one; what it shows is what
/// was published, counted, charted and searchable; the latest events stream as they arrive.
/// The site of the page test: an archiver serving the page, and bob to publish.
struct Page {
    port: u16,
    bob: HostConfig,
    _archiver: shared_f2b_tests::host::Daemon,
    _nats: shared_f2b_tests::nats::NatsServer,
    _db: TestDb,
    _dir: tempfile::TempDir,
}

#[tokio::test(flavor = "multi_thread")]
async fn the_site_page_serves_what_is_banned_and_streams_what_arrives() {
    let p = a_site_with_bans_an_operator_s_ban_and_a_pardon();
    the_page_is_public_and_its_data_needs_the_token(&p);
    the_overview_counts_charts_and_tells_the_health(&p);
    bans_are_searched_sorted_and_paged(&p);
    an_address_tells_its_story(&p);
    a_following_page_gets_a_ban_as_it_is_stored(&p);
}

/// Bans by alice and bob, an operator's ban and a pardon, all in the page's data.
fn a_site_with_bans_an_operator_s_ban_and_a_pardon() -> Page {
    let dir = tempfile::tempdir().unwrap();
    let nats = site::nats(dir.path());
    let url = nats.url();
    let db = TestDb::mariadb();
    let port = free_port();
    let (_cfg, archiver) = site::archiver_with(
        dir.path(),
        &url,
        &db,
        &format!("http_listen = \"127.0.0.1:{port}\"\nhttp_tokens = [\"{TOKEN}\"]\n"),
    );
    let alice = site::config(dir.path(), "alice", "alice", &url, "");
    let bob = site::config(dir.path(), "bob", "bob", &url, "");
    let admin = Admin::new(dir.path(), "admin", &url);
    let p = Page {
        port,
        bob,
        _archiver: archiver,
        _nats: nats,
        _db: db,
        _dir: dir,
    };
    ban(&alice, "sshd", "192.0.2.10");
    ban(&p.bob, "nginx", "192.0.2.10");
    ban(&alice, "sshd", "198.51.100.7");
    ban(&alice, "sshd", "2001:db8::7");
    admin.order(&["ban", "--ip", "203.0.113.9", "--reason", "seen by the SOC"]);
    admin.order(&["pardon", "--ip", "2001:db8::7", "--reason", "a partner"]);
    wait_until(WAIT, "the page's data to hold the bans", || {
        let page = data(p.port, "/v1/site/bans?sort=ip&order=asc");
        ips(&page) == ["192.0.2.10", "198.51.100.7", "203.0.113.9"]
    });

    p
}

/// The page: no token needed, nothing but its own script and style allowed; its data: the
/// feeds' token.
fn the_page_is_public_and_its_data_needs_the_token(p: &Page) {
    for (path, kind) in [
        ("/", "text/html; charset=utf-8"),
        ("/ip/192.0.2.10", "text/html; charset=utf-8"),
        ("/assets/site.js", "text/javascript; charset=utf-8"),
        ("/assets/site.css", "text/css; charset=utf-8"),
    ] {
        let got = curl(p.port, path, false);
        assert_eq!(got.code, 200, "{path}");
        assert_eq!(got.header("content-type"), Some(kind), "{path}");
        let csp = got.header("content-security-policy").expect("a CSP");
        assert!(csp.contains("script-src 'self'") && csp.contains("default-src 'none'"));
        assert_eq!(got.header("x-content-type-options"), Some("nosniff"));
    }
    assert!(curl(p.port, "/", false).text().contains("/assets/site.js"));
    // Its data: the feeds' token.
    for path in [
        "/v1/site/overview",
        "/v1/site/bans",
        "/v1/site/address?ip=192.0.2.10",
        "/v1/site/live",
    ] {
        let got = curl(p.port, path, false);
        assert_eq!(got.code, 401, "{path}");
        assert!(got.header("www-authenticate").is_some(), "{path}");
    }
}

/// Every event stored so far among the latest; the counts, the chart and the health panel.
fn the_overview_counts_charts_and_tells_the_health(p: &Page) {
    wait_until(WAIT, "the six events among the latest", || {
        data(p.port, "/v1/site/overview")["latest"]
            .as_array()
            .is_some_and(|l| l.len() == 6)
    });
    let overview = data(p.port, "/v1/site/overview");
    assert_eq!(overview["active"], 3, "{overview}");
    let by_jail = &overview["by_jail"];
    assert_eq!(by_jail[0], serde_json::json!({"name": "sshd", "active": 2}));
    assert_eq!(
        by_jail[1],
        serde_json::json!({"name": "nginx", "active": 1})
    );
    let origins: Vec<(&str, u64)> = overview["by_origin"]
        .as_array()
        .unwrap()
        .iter()
        .map(|o| (o["name"].as_str().unwrap(), o["active"].as_u64().unwrap()))
        .collect();
    assert_eq!(origins, [("alice", 2), ("admin", 1), ("bob", 1)]);
    assert_eq!(overview["top"][0]["ip"], "192.0.2.10");
    assert_eq!(overview["top"][0]["hosts"], 2);
    let hourly = &overview["timeline"]["hourly"];
    assert_eq!(hourly["count"], 48);
    let sshd: u64 = hourly["jails"]["sshd"]
        .as_array()
        .unwrap()
        .iter()
        .map(|n| n.as_u64().unwrap())
        .sum();
    assert_eq!(sshd, 3, "{hourly}");
    assert_eq!(overview["timeline"]["daily"]["count"], 90);
    let health = &overview["health"];
    assert_eq!(health["database"]["ok"], true);
    assert_eq!(health["database"]["backend"], "mysql");
    assert_eq!(health["nats"]["ok"], true);
    let hosts: Vec<&str> = health["hosts"]
        .as_array()
        .unwrap()
        .iter()
        .map(|h| h["name"].as_str().unwrap())
        .collect();
    assert_eq!(hosts.len(), 2, "{health}");
    assert!(hosts.contains(&"alice") && hosts.contains(&"bob"));
    let latest = overview["latest"].as_array().unwrap();
    assert_eq!(latest.len(), 6, "{latest:?}");
    assert_eq!(latest[0]["type"], "control");
    assert_eq!(latest[0]["kind"], "pardon");
    assert_eq!(latest[0]["reason"], "a partner");
    assert_eq!(latest[5]["origin"], "alice");
}

/// Search, sort, paging, and bad parameters refused.
fn bans_are_searched_sorted_and_paged(p: &Page) {
    assert_eq!(
        ips(&data(p.port, "/v1/site/bans?q=192.0.2.")),
        ["192.0.2.10"]
    );
    assert_eq!(
        ips(&data(p.port, "/v1/site/bans?q=198.51.100.0%2F24")),
        ["198.51.100.7"]
    );
    assert_eq!(
        ips(&data(p.port, "/v1/site/bans?q=192.0.2.10")),
        ["192.0.2.10"]
    );
    let page = data(
        p.port,
        "/v1/site/bans?sort=hosts&order=desc&limit=1&offset=0",
    );
    assert_eq!(
        (page["matched"].as_u64(), ips(&page)),
        (Some(3), vec!["192.0.2.10"])
    );
    let row = &page["rows"][0];
    assert_eq!(row["jails"], serde_json::json!(["nginx", "sshd"]));
    assert_eq!(row["origins"], serde_json::json!(["alice", "bob"]));
    assert!(row["first_seen"].as_u64() <= row["last_seen"].as_u64());
    let op = data(p.port, "/v1/site/bans?q=203.0.113.9");
    assert_eq!(op["rows"][0]["operator"], "admin");
    for (query, says) in [
        ("q=%3Cscript%3E", "q \"<script>\""),
        ("q=1.2.3.4%2F99", "not a net"),
        ("sort=ip%3B", "sort"),
        ("order=up", "order \"up\""),
        ("limit=0", "limit \"0\""),
        ("limit=501", "limit"),
        ("offset=-1", "offset"),
        ("q=1&q=2", "twice"),
        ("format=plain", "unknown parameter \"format\""),
    ] {
        let got = curl(p.port, &format!("/v1/site/bans?{query}"), true);
        assert_eq!(got.code, 400, "{query}");
        assert!(got.text().contains(says), "{query}: {}", got.text());
    }
}

/// One address's story: what is banned now, every event, the orders covering it.
fn an_address_tells_its_story(p: &Page) {
    let story = data(p.port, "/v1/site/address?ip=192.0.2.10");
    assert_eq!(story["active"]["hosts"], 2);
    assert_eq!(story["events"].as_array().unwrap().len(), 2);
    let pardoned = data(p.port, "/v1/site/address?ip=2001:db8::7");
    assert_eq!(pardoned["active"], serde_json::Value::Null);
    assert_eq!(pardoned["orders"][0]["kind"], "pardon");
    assert_eq!(pardoned["orders"][0]["reason"], "a partner");
    let got = curl(p.port, "/v1/site/address?ip=nope", true);
    assert_eq!(got.code, 400, "{}", got.text());
}

/// The live events: a page following sees a ban as soon as it is stored.
fn a_following_page_gets_a_ban_as_it_is_stored(p: &Page) {
    let mut follower = Command::new("curl")
        .args(["-sS", "-N", "--max-time", "20", "-H"])
        .arg(format!("Authorization: Bearer {TOKEN}"))
        .arg(format!("http://127.0.0.1:{}/v1/site/live", p.port))
        .stdout(Stdio::piped())
        .spawn()
        .unwrap();
    let mut lines = BufReader::new(follower.stdout.take().unwrap()).lines();
    // The stream opens with its retry hint.
    assert_eq!(lines.next().unwrap().unwrap(), "retry: 1500");
    let published = Instant::now();
    ban(&p.bob, "sshd", "192.0.2.77");
    let line = lines
        .find(|l| l.as_ref().is_ok_and(|l| l.starts_with("data: ")))
        .expect("an event")
        .unwrap();
    let took = published.elapsed();
    let event: serde_json::Value = serde_json::from_str(&line["data: ".len()..]).unwrap();
    // The page asks for the bans "after" the event it saw, at once: they hold it (the
    // archiver waits for its archive to).
    let seq = event["seq"].as_u64().unwrap();
    let page = data(p.port, &format!("/v1/site/bans?q=192.0.2.77&after={seq}"));
    assert_eq!(ips(&page), ["192.0.2.77"]);
    assert_eq!(event["ip"], "192.0.2.77");
    assert_eq!(event["origin"], "bob");
    assert_eq!(event["action"], "ban");
    assert!(took < Duration::from_secs(5), "{took:?}");
    let _ = follower.kill();
    let _ = follower.wait();
}

/// A host whose name is markup, and an operator's reason that is: both must show as text.
const HOSTILE_HOST: &str = "<img/src=x/onerror=window.pwned=1><u/id=injected>\u{202e}evil\"'&";
const HOSTILE_REASON: &str = "<img src=x onerror=window.pwned=2><u id=injected2>x</u>";

/// The page in headless Chromium: it shows the bans, a ban published through the product
/// appears on it within one second without a reload, the search finds an address, hostile
/// names render as text, and an address's story opens from its link. The page's problems
/// (script errors, Content-Security-Policy violations, failed requests, dialogs) stay empty.
#[tokio::test(flavor = "multi_thread")]
async fn in_a_browser_bans_appear_live_the_search_finds_and_names_stay_text() {
    let dir = tempfile::tempdir().unwrap();
    let nats = site::nats_with_charlie_as(dir.path(), HOSTILE_HOST);
    let url = nats.url();
    let db = TestDb::mariadb();
    let port = free_port();
    let (_cfg, _archiver) = site::archiver_with(
        dir.path(),
        &url,
        &db,
        &format!("http_listen = \"127.0.0.1:{port}\"\nhttp_tokens = [\"{TOKEN}\"]\n"),
    );
    let alice = site::config(dir.path(), "alice", "alice", &url, "");
    let bob = site::config(dir.path(), "bob", "bob", &url, "");
    let hostile = site::config(dir.path(), "hostile", "charlie", &url, "");
    hostile.rename(HOSTILE_HOST);
    let admin = Admin::new(dir.path(), "admin", &url);
    for i in 1..=5 {
        ban(&alice, "sshd", &format!("192.0.2.{i}"));
    }
    ban(&bob, "nginx", "192.0.2.1");
    ban(&bob, "sshd", "198.51.100.20");
    ban(&bob, "sshd", "198.51.100.21");
    ban(&hostile, "sshd", "203.0.113.66");
    admin.order(&["ban", "--ip", "203.0.113.99", "--reason", HOSTILE_REASON]);
    wait_until(WAIT, "the page's data to hold the bans", || {
        data(port, "/v1/site/bans")["matched"] == 9
    });

    let mut browser = Browser::launch(&dir.path().join("browser"));
    browser.init(&format!(
        "sessionStorage.setItem('shared-f2b-token', {})",
        js_str(TOKEN)
    ));
    assert_eq!(browser.goto(&format!("http://127.0.0.1:{port}/")), 200);
    browser.wait(
        "document.body.dataset.ready === '1' && document.body.dataset.live === '1'",
        WAIT,
    );
    let row = |ip: &str| {
        format!(
            "!!document.querySelector('#bans tr[data-ip={}]')",
            js_str(ip)
        )
    };
    browser.wait(&row("192.0.2.1"), WAIT);
    // Marks this document: a reload would lose it.
    browser.eval("window.sameDocument = true");

    // A ban published through the product (shared-f2b-publish, as Fail2Ban's action runs it)
    // appears in the table and the latest events within a second, without a reload.
    let published = Instant::now();
    ban(&alice, "sshd", "192.0.2.200");
    let acked = published.elapsed();
    let shown = browser.wait(
        &format!(
            "{} && !!document.querySelector('#latest li[data-seq]') && \
             document.querySelector('#latest').textContent.includes('192.0.2.200')",
            row("192.0.2.200")
        ),
        Duration::from_secs(1),
    );
    println!("ban published (acked in {acked:?}) -> on the page {shown:?} later");
    assert_eq!(browser.eval("window.sameDocument === true"), true);

    // The search finds an address by its start, and by a net.
    browser.fill("#search", "198.51.100.2");
    browser.wait(
        "(() => { const ips = [...document.querySelectorAll('#bans tr[data-ip]')].map(r => r.dataset.ip); \
           return ips.length === 2 && ips.every(ip => ip.startsWith('198.51.100.2')); })()",
        WAIT,
    );
    browser.fill("#search", "192.0.2.0/24");
    browser.wait(
        "document.querySelectorAll('#bans tr[data-ip]').length === 6",
        WAIT,
    );
    browser.fill("#search", "");
    browser.wait(&row("203.0.113.66"), WAIT);

    // Hostile names: text on the page, never markup.
    let texts = "[...document.querySelectorAll('#by-origin, #latest, #health, #bans')].map(e => e.textContent).join('\\n')";
    browser.wait(
        &format!("({texts}).includes({})", js_str(HOSTILE_HOST)),
        WAIT,
    );
    browser.wait(
        &format!("({texts}).includes({})", js_str(HOSTILE_REASON)),
        WAIT,
    );
    let injected = "({pwned: window.pwned ?? null, injected: [...document.querySelectorAll('#injected, #injected2, u, img:not([src=\"/assets/favicon.svg\"])')].map(e => e.outerHTML)})";
    let clean = serde_json::json!({"pwned": null, "injected": []});
    assert_eq!(browser.eval(injected), clean);

    // An address's story, from its link.
    browser.click("#bans tr[data-ip='203.0.113.66'] a");
    browser.wait(
        &format!(
            "location.pathname === '/ip/203.0.113.66' && document.body.dataset.ready === '1' && \
             document.querySelector('#story-ip').textContent.includes('203.0.113.66') && \
             document.querySelector('#story-events').textContent.includes({})",
            js_str(HOSTILE_HOST)
        ),
        WAIT,
    );
    assert_eq!(browser.eval(injected), clean);
    if let Some(path) = std::env::var_os("SHARED_F2B_SITE_SCREENSHOT") {
        browser.goto(&format!("http://127.0.0.1:{port}/"));
        browser.wait("document.body.dataset.ready === '1'", WAIT);
        browser.screenshot(std::path::Path::new(&path));
    }
    let problems = browser.problems();
    assert!(problems.is_empty(), "the page's problems: {problems:#?}");
}

//! Site page figures with 100,000 active bans published and archived into MariaDB (the feeds'
//! setup): the page opened in headless Chromium (Playwright) — first contentful paint and the
//! moment the overview and the first page of bans are drawn — its data requests, and a ban
//! published -> shown on an open page. Reference in the same run: the snapshot loaded from
//! MariaDB at start.

use crate::feeds::{Loaded, get, polls};
use crate::report::{Report, percentiles};
use shared_f2b_tests::browser::{Browser, js_str};
use shared_f2b_tests::nats::{ban_event, burst};
use std::net::Ipv4Addr;
use std::time::{Duration, Instant};

const WAIT: Duration = Duration::from_secs(60);

fn ms(value: &serde_json::Value) -> f64 {
    value
        .as_f64()
        .unwrap_or_else(|| panic!("a time in ms, not {value}"))
}

/// Runs the site page benchmarks and adds their rows.
pub async fn run(report: &mut Report, active: usize, runs: usize) {
    let loaded = Loaded::new(active).await;
    let addr = loaded.addr;
    let load_ms = loaded.load_ms();
    let page = format!("http://{addr}/");

    // The page opened afresh (a new navigation each time, the browser's cache revalidating).
    let mut browser = Browser::launch(&loaded.dir.path().join("browser"));
    let (mut paint, mut ready) = (Vec::new(), Vec::new());
    for _ in 0..runs.min(30) {
        browser.goto(&page);
        // The paint entry is queued a little after the paint itself.
        browser.wait(
            "document.body.dataset.ready === '1' && \
             performance.getEntriesByName('first-contentful-paint').length > 0",
            WAIT,
        );
        let m = browser.eval(
            "({fcp: performance.getEntriesByName('first-contentful-paint')[0]?.startTime ?? null, \
              ready: performance.getEntriesByName('shared-f2b-ready')[0]?.startTime ?? null, \
              total: document.querySelector('#bans-total')?.textContent ?? ''})",
        );
        paint.push(Duration::from_secs_f64(ms(&m["fcp"]) / 1000.0));
        ready.push(Duration::from_secs_f64(ms(&m["ready"]) / 1000.0));
    }
    let (fcp50, fcp99) = percentiles(&mut paint);
    let (ready50, ready99) = percentiles(&mut ready);
    report
        .add(
            &format!("site page, {active} active bans: first contentful paint p50"),
            fcp50,
            "ms",
            "< 1000 ms",
        )
        .reference = Some(("snapshot loaded from MariaDB at start, ms".into(), load_ms));
    report.add("site page: first contentful paint p99", fcp99, "ms", "");
    report.add(
        "site page: overview + first page of bans drawn p50",
        ready50,
        "ms",
        "< 1000 ms",
    );
    report.add(
        "site page: overview + first page of bans drawn p99",
        ready99,
        "ms",
        "",
    );

    // Its data requests.
    for (name, path) in [
        ("GET /v1/site/overview", "/v1/site/overview"),
        ("GET /v1/site/bans (first page)", "/v1/site/bans"),
        (
            "GET /v1/site/bans?q=14.0.1. (prefix search)",
            "/v1/site/bans?q=14.0.1.",
        ),
    ] {
        let (p50, p99, size) = polls(addr, path, "", runs, 200);
        report.add(&format!("{name}: p50"), p50, "ms", "");
        report.add(&format!("{name}: p99"), p99, "ms", "");
        report.add(&format!("{name}: size"), size as f64 / 1e3, "kB", "");
    }

    // A ban published while the page is open: in the latest events and the table, without a
    // reload; and the first data request after it (the 100,000 rows listed and sorted again).
    browser.goto(&page);
    browser.wait(
        "document.body.dataset.ready === '1' && document.body.dataset.live === '1'",
        WAIT,
    );
    let (mut shown, mut relisted) = (Vec::new(), Vec::new());
    for i in 0..runs.min(30) {
        let ip = Ipv4Addr::from(0x0f10_0000 + i as u32).to_string();
        let t0 = Instant::now();
        burst(
            &loaded.nats.url(),
            loaded.prefix,
            &[ban_event("charlie", "sshd", &ip)],
        )
        .await;
        browser.wait(
            &format!(
                "!!document.querySelector('#bans tr[data-ip={}]')",
                js_str(&ip)
            ),
            WAIT,
        );
        shown.push(t0.elapsed());
        // The next ban's page request pays for the new listing: measure one here.
        let ip = Ipv4Addr::from(0x0f20_0000 + i as u32).to_string();
        burst(
            &loaded.nats.url(),
            loaded.prefix,
            &[ban_event("charlie", "sshd", &ip)],
        )
        .await;
        let path = format!("/v1/site/bans?q={ip}");
        let t1 = Instant::now();
        loop {
            let (code, _, size, took) = get(addr, &path, "");
            assert_eq!(code, 200);
            // An answer without rows is about 60 bytes, one with a row about 250.
            if size > 150 {
                relisted.push(took);
                break;
            }
            assert!(t1.elapsed() < WAIT, "the new ban never listed");
            tokio::time::sleep(Duration::from_millis(5)).await;
        }
    }
    let (shown50, shown99) = percentiles(&mut shown);
    report.add(
        "ban published -> on the open page: p50",
        shown50,
        "ms",
        "< 1000 ms",
    );
    report.add("ban published -> on the open page: p99", shown99, "ms", "");
    let (re50, re99) = percentiles(&mut relisted);
    report.add(
        "GET /v1/site/bans after a new ban (relisted, sorted): p50",
        re50,
        "ms",
        "",
    );
    report.add(
        "GET /v1/site/bans after a new ban (relisted, sorted): p99",
        re99,
        "ms",
        "",
    );
}

/// Writes a screenshot of the page to `path` (the README's), over a made-up site: six hosts,
/// four jails, about 7,000 bans spread over 90 days (more in the last two), some addresses
/// banned by several hosts.
pub async fn screenshot(path: &std::path::Path) {
    use shared_f2b_tests::db::TestDb;
    use shared_f2b_tests::host::Daemon;
    use shared_f2b_tests::nats::NatsServer;
    use shared_f2b_tests::{HostConfig, free_port, unique};
    use std::time::SystemTime;

    let dir = tempfile::tempdir().expect("temp dir");
    let nats = NatsServer::start_in(dir.path());
    let db = TestDb::mariadb();
    let port = free_port();
    let cfg = HostConfig::write(
        dir.path(),
        "archiver",
        &nats.url(),
        "f2b",
        &unique("SHOT"),
        &format!(
            "[archiver]\ndatabase_url = {:?}\nhttp_listen = \"127.0.0.1:{port}\"\n",
            db.url
        ),
    );
    let _archiver = Daemon::archiver(&cfg.path, &dir.path().join("archiver.log"));
    let hosts = ["web1", "web2", "mail", "git", "vpn", "login"];
    let jails = [
        ("sshd", 60),
        ("nginx-botsearch", 20),
        ("postfix-sasl", 12),
        ("recidive", 8),
    ];
    // A fixed sequence, so the picture is the same each time.
    let mut seed: u64 = 0x5eed;
    let mut next = |n: u64| {
        seed = seed
            .wrapping_mul(6_364_136_223_846_793_005)
            .wrapping_add(1_442_695_040_888_963_407);
        (seed >> 33) % n
    };
    let now = SystemTime::now();
    let mut events = Vec::new();
    for i in 0..7000u64 {
        // Two in five in the last 48 hours, the rest over 90 days.
        let ago = if i % 5 < 2 {
            next(48 * 3600)
        } else {
            next(90 * 86_400)
        };
        let mut pick = next(100);
        let jail = jails
            .iter()
            .find(|(_, share)| {
                let hit = pick < *share;
                pick = pick.saturating_sub(*share);
                hit
            })
            .map_or("sshd", |(j, _)| j);
        let ip = if next(10) == 0 {
            format!("2001:db8:{:x}::{:x}", next(16), next(4000))
        } else {
            Ipv4Addr::from(0xc612_0000 + next(3000) as u32).to_string()
        };
        let host = hosts[next(hosts.len() as u64) as usize];
        let mut event = ban_event(host, jail, &ip);
        event.time = now - Duration::from_secs(ago);
        event.bantime = if jail == "recidive" {
            7 * 86_400
        } else {
            86_400
        };
        events.push(event);
    }
    burst(&nats.url(), "f2b", &events).await;
    while db.rows().await < events.len() as i64 {
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    let mut browser = Browser::launch(&dir.path().join("browser"));
    browser.goto(&format!("http://127.0.0.1:{port}/"));
    browser.wait("document.body.dataset.ready === '1'", WAIT);
    // One ban arriving while the page is open, as it looks live.
    burst(
        &nats.url(),
        "f2b",
        &[ban_event("web1", "sshd", "198.51.100.23")],
    )
    .await;
    browser.wait(
        "!!document.querySelector('#latest li[data-seq]') && \
         document.querySelector('#latest').textContent.includes('198.51.100.23')",
        WAIT,
    );
    // The highlight of the new event fades in.
    tokio::time::sleep(Duration::from_millis(500)).await;
    browser.screenshot(path);
}

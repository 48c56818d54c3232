//! Feed figures: `GET /v1/blocklist?format=plain` on the archiver's `http_listen` with 100,000
//! active bans published and archived into MariaDB — the first request of a fresh archiver
//! (the snapshot loaded from the archive, the reference), then repeated polls (p50/p99), gzip,
//! 304 revalidation, and after one new ban (the snapshot brought forward, the list rendered
//! again; publish -> listed) — with the response sizes.

use crate::report::{Report, percentiles};
use shared_f2b_tests::db::TestDb;
use shared_f2b_tests::host::Daemon;
use shared_f2b_tests::nats::{NatsServer, ban_event, burst};
use shared_f2b_tests::{HostConfig, free_port, unique};
use std::io::{Read, Write};
use std::net::{Ipv4Addr, SocketAddr, TcpStream};
use std::time::{Duration, Instant};

/// One HTTP/1.1 GET (`Connection: close`): status, `ETag`, body bytes, and the time to the
/// last byte.
pub fn get(addr: SocketAddr, path: &str, extra: &str) -> (u16, String, usize, Duration) {
    let t0 = Instant::now();
    let mut conn = TcpStream::connect(addr).expect("the archiver listens");
    write!(
        conn,
        "GET {path} HTTP/1.1\r\nHost: bench\r\nConnection: close\r\n{extra}\r\n"
    )
    .unwrap();
    let mut raw = Vec::with_capacity(4 << 20);
    conn.read_to_end(&mut raw).unwrap();
    let took = t0.elapsed();
    let split = raw
        .windows(4)
        .position(|w| w == b"\r\n\r\n")
        .expect("headers end");
    let head = String::from_utf8_lossy(&raw[..split]).into_owned();
    let code = head
        .split_whitespace()
        .nth(1)
        .and_then(|c| c.parse().ok())
        .unwrap();
    let etag = head
        .lines()
        .find_map(|l| l.strip_prefix("etag: "))
        .unwrap_or_default()
        .to_owned();
    (code, etag, raw.len() - split - 4, took)
}

pub fn polls(
    addr: SocketAddr,
    path: &str,
    extra: &str,
    runs: usize,
    want: u16,
) -> (f64, f64, usize) {
    let mut samples = Vec::with_capacity(runs);
    let mut size = 0;
    for _ in 0..runs {
        let (code, _, bytes, took) = get(addr, path, extra);
        assert_eq!(code, want, "{path} {extra}");
        size = bytes;
        samples.push(took);
    }
    let (p50, p99) = percentiles(&mut samples);
    (p50, p99, size)
}

/// An archiver with `active` bans published through NATS and archived into MariaDB (two hosts
/// ban the same address for a fifth of them: 1.2 rows per address), restarted fresh, serving
/// `http_listen` on `addr`.
pub struct Loaded {
    pub nats: NatsServer,
    /// The test database, dropped with it.
    _db: TestDb,
    pub addr: SocketAddr,
    pub prefix: &'static str,
    pub archiver: Daemon,
    /// Holds the configs and logs; last, so it goes after the processes.
    pub dir: tempfile::TempDir,
}

impl Loaded {
    pub async fn new(active: usize) -> Loaded {
        let dir = tempfile::tempdir().expect("temp dir");
        let nats = NatsServer::start_in(dir.path());
        let db = TestDb::mariadb();
        let port = free_port();
        let prefix = "f2b";
        let cfg = HostConfig::write(
            dir.path(),
            "archiver",
            &nats.url(),
            prefix,
            &unique("BF"),
            &format!(
                "[archiver]\ndatabase_url = {:?}\nhttp_listen = \"127.0.0.1:{port}\"\n",
                db.url
            ),
        );
        let log = dir.path().join("archiver.log");
        let mut events = Vec::new();
        for i in 0..active {
            let ip = Ipv4Addr::from(0x0e00_0000 + i as u32).to_string();
            events.push(ban_event("alice", "sshd", &ip));
            if i % 5 == 0 {
                events.push(ban_event("bob", "sshd", &ip));
            }
        }
        let archiver = Daemon::archiver(&cfg.path, &log);
        burst(&nats.url(), prefix, &events).await;
        while db.rows().await < events.len() as i64 {
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
        // A fresh archiver: its first request loads the snapshot from MariaDB.
        drop(archiver);
        let archiver = Daemon::archiver(&cfg.path, &log);
        Loaded {
            addr: format!("127.0.0.1:{port}").parse().unwrap(),
            nats,
            _db: db,
            prefix,
            archiver,
            dir,
        }
    }
}

impl Loaded {
    /// How long the archiver took to load the snapshot from MariaDB at start (its log says),
    /// waiting for it to have.
    pub fn load_ms(&self) -> f64 {
        let started = Instant::now();
        loop {
            let log = self.archiver.log_text();
            // The last start's line: `... blocklist loaded from the archive took=679.1ms`.
            if let Some(took) = log
                .lines()
                .rev()
                .find(|l| l.contains("blocklist loaded from the archive"))
                .and_then(|l| l.split("took=").nth(1))
                .and_then(|t| debug_ms(t.trim()))
                && log.matches("blocklist loaded").count() >= 2
            {
                return took;
            }
            assert!(
                started.elapsed() < Duration::from_secs(600),
                "no snapshot load logged"
            );
            std::thread::sleep(Duration::from_millis(50));
        }
    }
}

/// Milliseconds in a `Duration`'s debug form (`679.1ms`, `1.2s`, `5.08µs`).
fn debug_ms(text: &str) -> Option<f64> {
    let digits = text.find(|c: char| !(c.is_ascii_digit() || c == '.'))?;
    let (value, unit) = text.split_at(digits);
    let value: f64 = value.parse().ok()?;
    let scale = match unit.split_whitespace().next()? {
        "s" => 1e3,
        "ms" => 1.0,
        "µs" => 1e-3,
        "ns" => 1e-6,
        _ => return None,
    };
    Some(value * scale)
}

/// Runs the feed benchmarks and adds their rows.
pub async fn run(report: &mut Report, active: usize, runs: usize) {
    let loaded = Loaded::new(active).await;
    let (addr, nats, prefix) = (loaded.addr, &loaded.nats, loaded.prefix);
    let plain = "/v1/blocklist?format=plain";

    let (code, etag, size, _) = get(addr, plain, "");
    assert_eq!(code, 200);
    let cold_ms = loaded.load_ms();
    let (p50, p99, _) = polls(addr, plain, "", runs, 200);
    report
        .add(
            &format!("GET blocklist plain, {active} active bans: p50"),
            p50,
            "ms",
            "<= 100 ms",
        )
        .reference = Some(("snapshot loaded from MariaDB at start, ms".into(), cold_ms));
    report.add(
        &format!("GET blocklist plain, {active} active bans: p99"),
        p99,
        "ms",
        "",
    );
    report.add(
        "blocklist plain: response size",
        size as f64 / 1e6,
        "MB",
        "",
    );
    let gzip = "Accept-Encoding: gzip\r\n";
    let (gz50, gz99, gz_size) = polls(addr, plain, gzip, runs, 200);
    report.add("GET blocklist plain gzip: p50", gz50, "ms", "");
    report.add("GET blocklist plain gzip: p99", gz99, "ms", "");
    report.add(
        "blocklist plain gzip: response size",
        gz_size as f64 / 1e6,
        "MB",
        "",
    );
    let (nm50, _, _) = polls(
        addr,
        plain,
        &format!("If-None-Match: {etag}\r\n"),
        runs,
        304,
    );
    report.add("GET blocklist, If-None-Match -> 304: p50", nm50, "ms", "");

    // One new ban published before each round: the first request that lists it (the snapshot
    // brought forward, the list rendered again), and publish -> listed.
    let (mut first, mut visible) = (Vec::new(), Vec::new());
    let mut last_tag = etag;
    for i in 0..runs.min(50) {
        let ip = Ipv4Addr::from(0x0f00_0000 + i as u32).to_string();
        let t0 = Instant::now();
        burst(&nats.url(), prefix, &[ban_event("charlie", "sshd", &ip)]).await;
        loop {
            let (code, tag, _, took) = get(addr, plain, "");
            assert_eq!(code, 200);
            if tag != last_tag {
                first.push(took);
                visible.push(t0.elapsed());
                last_tag = tag;
                break;
            }
            assert!(
                t0.elapsed() < Duration::from_secs(10),
                "the new ban never listed"
            );
            tokio::time::sleep(Duration::from_millis(5)).await;
        }
    }
    let (up50, up99) = percentiles(&mut first);
    report.add(
        "GET blocklist that first lists a new ban: p50",
        up50,
        "ms",
        "",
    );
    report.add(
        "GET blocklist that first lists a new ban: p99",
        up99,
        "ms",
        "",
    );
    let (vis50, vis99) = percentiles(&mut visible);
    report.add(
        "ban published -> in the blocklist: p50",
        vis50,
        "ms",
        "<= 100 ms + ingest",
    );
    report.add("ban published -> in the blocklist: p99", vis99, "ms", "");
}

//! `import-legacy` figures: the original's `f2b` table of 1,850,000 rows (Durham's size) into
//! a MariaDB archive, beside reading and converting the same rows with nothing written
//! (`--dry-run`, the ceiling of the reading side) in the same run; and the second import that
//! finds everything archived.

use crate::report::Report;
use shared_f2b_tests::db::{TestDb, mariadb_root};
use shared_f2b_tests::legacy::LEGACY_TABLE;
use shared_f2b_tests::{HostConfig, bin, unique};
use std::path::Path;
use std::time::Instant;

/// Runs the benchmark with `rows` rows in the legacy table.
pub fn run(report: &mut Report, rows: usize) {
    let dir = tempfile::tempdir().expect("temp dir");
    let source = TestDb::mariadb();
    let name = source.mariadb.clone().expect("a MariaDB database");
    fill(&name, rows);
    let archive = TestDb::mariadb();
    let cfg = HostConfig::archiver(
        dir.path(),
        "nats://127.0.0.1:4222",
        &unique("bleg"),
        &unique("BLEG"),
        &archive.url,
    );
    let dry = import(&cfg.path, &source.url, true);
    let first = import(&cfg.path, &source.url, false);
    let again = import(&cfg.path, &source.url, false);
    let target = "<= 60 s for 1,850,000 rows";
    report
        .add(
            &format!("import-legacy of {rows} rows into MariaDB"),
            first,
            "s",
            target,
        )
        .reference = Some(("the same rows read and converted (--dry-run) s".into(), dry));
    report.add(
        "import-legacy again (everything archived already)",
        again,
        "s",
        "",
    );
    report.add(
        "import-legacy rows per second",
        rows as f64 / first,
        "rows/s",
        ">= 30,833 rows/s",
    );
}

/// Fills the original's table with `rows` rows like Durham's: 150 hosts writing FQDNs, local
/// times over five years, a few jails, 166,000 addresses, an IPv6 one in 50.
fn fill(name: &str, rows: usize) {
    mariadb_root(&format!(
        "USE {name}; {LEGACY_TABLE}; \
         INSERT INTO f2b (hostname, created, jail, protocol, port, ip, bantime) \
         SELECT CONCAT('node', seq % 150, '.example.ac.uk'), \
           TIMESTAMPADD(SECOND, seq * 85, '2020-06-01 00:00:00'), \
           ELT(1 + seq % 3, 'SSH', 'sshd', 'apache-auth'), 'tcp', \
           ELT(1 + seq % 3, 'ssh', '22', 'http,https'), \
           IF(seq % 50 = 0, CONCAT('2001:db8::', HEX(seq % 65536)), \
              CONCAT('10.', (seq % 166052) DIV 65536, '.', ((seq % 166052) DIV 256) % 256, \
                     '.', seq % 256)), \
           ELT(1 + seq % 4, '900', '3600', '86400', '-1') \
         FROM seq_1_to_{rows};"
    ));
}

/// Seconds one `import-legacy` takes.
fn import(config: &Path, from: &str, dry_run: bool) -> f64 {
    let mut cmd = std::process::Command::new(bin("shared-f2b-archiver"));
    cmd.arg("--config").arg(config).args([
        "import-legacy",
        "--from",
        from,
        "--timezone",
        "Europe/London",
    ]);
    if dry_run {
        cmd.arg("--dry-run");
    }
    let t0 = Instant::now();
    let out = cmd.output().expect("shared-f2b-archiver runs");
    let took = t0.elapsed().as_secs_f64();
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    eprint!("{}", String::from_utf8_lossy(&out.stdout));
    took
}

const OLD_TOKEN: &str = "0123456789abcdef0123456789abcdef";

/// The old API's figures on the shipped site: `GET /api/v1/time/all/1` with `bans` bans in the
/// last hour (the copy warm, and read again each time) beside the `/v1/blocklist` feed of the
/// same bans; and an old host's PUT → applied in a new host's Fail2Ban beside a raw `banip`.
pub async fn api(report: &mut Report, bans: usize, runs: usize) {
    use shared_f2b_archiver::db::Db;
    use shared_f2b_archiver::store::{self, Archived};
    use shared_f2b_subscriber::apply::fail2ban::Fail2Ban as Socket;
    use shared_f2b_tests::legacy::{OldHost, api_keys, request};
    use shared_f2b_tests::{free_port, site};
    use std::time::{Duration, SystemTime};

    let dir = tempfile::tempdir().expect("temp dir");
    let nats = site::nats_with_hosts(dir.path(), &["oldweb"]);
    let url = nats.url();
    let db = TestDb::mariadb();
    let archive = Db::connect(&db.url).await.expect("archive");
    archive.migrate().await.expect("migrate");
    let now = SystemTime::now();
    let rows: Vec<Archived> = (0..bans)
        .map(|i| {
            let ip = std::net::Ipv4Addr::from(0x0b00_0000 + i as u32).to_string();
            let mut event = shared_f2b_tests::nats::ban_event("alice", "sshd", &ip);
            event.time = now - Duration::from_millis((i as u64 * 3_000_000) / bans as u64);
            event.bantime = 3600;
            Archived {
                event,
                seq: i as u64 + 1,
            }
        })
        .collect();
    for chunk in rows.chunks(5000) {
        store::insert(&archive, chunk, &[], &[])
            .await
            .expect("insert");
    }
    let http = free_port();
    let old = [OldHost {
        name: "oldweb",
        token: OLD_TOKEN,
        address: "127.0.0.1",
    }];
    let (_cfg, _archiver) = site::archiver_with(
        dir.path(),
        &url,
        &db,
        &api_keys(dir.path(), &url, http, &old),
    );
    // Bob follows jail ssh only: the sshd bans above are not his to backfill.
    let bob = site::host(dir.path(), "bob", &url, "ban", "jails = [\"ssh\"]\n", true);

    let time = |runs: usize, pause: Duration| async move {
        let mut samples = Vec::new();
        for _ in 0..runs {
            let t0 = Instant::now();
            let (status, body) = request(http, "127.0.0.1", "GET /api/v1/time/all/1", b"").await;
            samples.push(t0.elapsed());
            assert_eq!(status, 200, "{body}");
            assert!(body.len() > bans * 40, "{} bytes", body.len());
            tokio::time::sleep(pause).await;
        }
        samples
    };
    let mut warm = time(runs, Duration::ZERO).await;
    let mut cold = time(runs.min(20), Duration::from_millis(1100)).await;
    // The ceiling: the archive's read of the same bans alone, in this process.
    let mut read = Vec::new();
    for _ in 0..runs.min(20) {
        let t0 = Instant::now();
        let got =
            shared_f2b_archiver::query::recent_bans(&archive, now - Duration::from_secs(3600))
                .await
                .expect("read");
        read.push(t0.elapsed());
        assert_eq!(got.len(), bans);
    }
    let (w50, _) = crate::report::percentiles(&mut warm);
    let (c50, c99) = crate::report::percentiles(&mut cold);
    let (r50, _) = crate::report::percentiles(&mut read);
    report
        .add(
            &format!("old API GET time/all/1, {bans} bans, p50"),
            w50,
            "ms",
            "<= 50 ms",
        )
        .reference = Some(("the archive's read of them alone p50".into(), r50));
    report
        .add(
            "  the same, the copy read again each time, p50",
            c50,
            "ms",
            "",
        )
        .reference = Some(("the archive's read of them alone p50".into(), r50));
    report.add(
        "  the same, the copy read again each time, p99",
        c99,
        "ms",
        "",
    );

    // PUT -> applied at bob, beside a raw banip -> banned.
    let mut sock = Socket::new(&bob.f2b.socket);
    let mut floor = Vec::new();
    let mut put = Vec::new();
    for i in 0..runs {
        let ip = format!("10.77.{}.{}", i / 256, i % 256);
        let t0 = Instant::now();
        sock.command(&["set", "shared", "banip", &ip])
            .await
            .expect("banip");
        until_banned(&mut sock, &ip).await;
        floor.push(t0.elapsed());
        let ip = format!("10.78.{}.{}", i / 256, i % 256);
        let body = format!(
            r#"{{"hostname": "oldweb", "date": "", "jail": "SSH", "proto": "tcp", "port": "ssh", "ip": "{ip}", "bantime": "600"}}"#
        );
        let t0 = Instant::now();
        let (status, text) = request(
            http,
            "127.0.0.1",
            &format!("PUT /api/v1/put\r\nX-TOKEN: {OLD_TOKEN}"),
            body.as_bytes(),
        )
        .await;
        assert_eq!(status, 200, "{text}");
        until_banned(&mut sock, &ip).await;
        put.push(t0.elapsed());
    }
    let (f50, _) = crate::report::percentiles(&mut floor);
    let (p50, p99) = crate::report::percentiles(&mut put);
    report
        .add(
            &format!("old API PUT -> applied by a new host p50 ({runs})"),
            p50,
            "ms",
            "<= 20 ms",
        )
        .reference = Some(("raw banip -> banned p50".into(), f50));
    report.add("old API PUT -> applied by a new host p99", p99, "ms", "");
    drop(archive);
}

async fn until_banned(sock: &mut shared_f2b_subscriber::apply::fail2ban::Fail2Ban, ip: &str) {
    let t0 = Instant::now();
    loop {
        let r = sock.command(&["get", "shared", "banned", ip]).await;
        if r.is_ok_and(|v| v.as_int() == Some(1)) {
            return;
        }
        assert!(t0.elapsed().as_secs() < 30, "{ip} never banned");
        tokio::time::sleep(std::time::Duration::from_micros(200)).await;
    }
}

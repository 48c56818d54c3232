//! Archiver figures: sustained ingest into MariaDB beside a raw batched insert of the same rows,
//! backfill of 100,000 active bans into a new host's Fail2Ban, and `history --ip` on 2,000,000
//! events.

use crate::report::{Report, percentiles};
use crate::subscribe::banned_count;
use shared_f2b::Event;
use shared_f2b_archiver::db::Db;
use shared_f2b_archiver::query::{self, HistoryFilter};
use shared_f2b_archiver::store::{self, Archived};
use shared_f2b_subscriber::apply::fail2ban::Fail2Ban as Socket;
use shared_f2b_tests::db::TestDb;
use shared_f2b_tests::host::{Daemon, Host, HostSpec};
use shared_f2b_tests::nats::{NatsServer, ban_event, burst};
use shared_f2b_tests::{HostConfig, bin, unique};
use std::net::Ipv4Addr;
use std::process::Command;
use std::time::{Duration, Instant};

const PREFIX: &str = "f2b";

fn events(n: usize, first: u32) -> Vec<Event> {
    (0..n)
        .map(|i| {
            ban_event(
                "alice",
                "sshd",
                &Ipv4Addr::from(first + i as u32).to_string(),
            )
        })
        .collect()
}

async fn wait_rows(db: &TestDb, n: i64, limit: Duration) -> Duration {
    let t0 = Instant::now();
    while db.rows().await < n {
        assert!(t0.elapsed() < limit, "only {} of {n} rows", db.rows().await);
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    t0.elapsed()
}

/// Runs the archiver benchmarks and adds their rows.
pub async fn run(report: &mut Report, ingest_n: usize, history_rows: usize) {
    let dir = tempfile::tempdir().expect("temp dir");
    let nats = NatsServer::start_in(dir.path());
    let url = nats.url();
    let stream = unique("BA");

    // --- raw ceiling: the same rows inserted straight into MariaDB, same batch size ---
    let raw_db = TestDb::mariadb();
    let db = Db::connect(&raw_db.url).await.expect("raw db");
    db.migrate().await.expect("migrate");
    let rows: Vec<Archived> = events(ingest_n, 0x0c00_0000)
        .into_iter()
        .enumerate()
        .map(|(i, event)| Archived {
            event,
            seq: i as u64 + 1,
        })
        .collect();
    let t0 = Instant::now();
    for chunk in rows.chunks(5000) {
        store::insert(&db, chunk, &[], &[])
            .await
            .expect("raw insert");
    }
    let raw_rate = ingest_n as f64 / t0.elapsed().as_secs_f64();
    db.pool.close().await;
    drop(raw_db);

    // --- the product: events waiting on the stream, then the archiver takes them all ---
    let arch_db = TestDb::mariadb();
    let cfg = HostConfig::write(
        dir.path(),
        "archiver",
        &url,
        PREFIX,
        &stream,
        &format!("[archiver]\ndatabase_url = {:?}\n", arch_db.url),
    );
    let evs = events(ingest_n, 0x0d00_0000);
    // Create the stream first (the archiver would), then fill it.
    let archiver = Daemon::archiver(&cfg.path, &dir.path().join("archiver.log"));
    drop(archiver);
    burst(&url, PREFIX, &evs).await;
    let t0 = Instant::now();
    let archiver = Daemon::archiver(&cfg.path, &dir.path().join("archiver.log"));
    wait_rows(&arch_db, ingest_n as i64, Duration::from_secs(300)).await;
    let rate = ingest_n as f64 / t0.elapsed().as_secs_f64();
    report
        .add(
            &format!("archiver ingest into MariaDB ({ingest_n} events)"),
            rate,
            "/s",
            ">= 20,000/s and >= 50% of raw",
        )
        .reference = Some(("raw batched multi-row insert /s".into(), raw_rate));

    // --- backfill: a new host gets the 100,000 active bans into its Fail2Ban ---
    let mut dave = Host::new(
        dir.path(),
        &HostSpec {
            name: "dave",
            nats_url: &url,
            prefix: PREFIX,
            stream: &stream,
            apply: "ban",
            subscriber_extra: "",
            shared_jail_extra: "bantime = 86400",
        },
    );
    let mut sock = Socket::new(&dave.f2b.socket);
    let t0 = Instant::now();
    dave.start_subscriber();
    while banned_count(&mut sock, "shared").await < ingest_n as i64 {
        assert!(
            t0.elapsed() < Duration::from_secs(300),
            "backfill incomplete"
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    let backfill = t0.elapsed().as_secs_f64();
    report.add(
        &format!("backfill {ingest_n} active bans -> banned in a new host"),
        backfill,
        "s",
        "<= 10 s",
    );
    drop(dave);
    drop(archiver);

    // --- history --ip on a large table ---
    let db = Db::connect(&arch_db.url).await.expect("db");
    let per_ip = 10;
    let fill = history_rows.saturating_sub(ingest_n);
    let distinct = (fill / per_ip).max(1);
    let t0 = Instant::now();
    let mut batch = Vec::with_capacity(5000);
    for (i, seq) in (0..distinct * per_ip).zip(ingest_n as u64 + 1..) {
        let ip = Ipv4Addr::from(0x0e00_0000 + (i % distinct) as u32).to_string();
        batch.push(Archived {
            event: ban_event("carol", "sshd", &ip),
            seq,
        });
        if batch.len() == 5000 {
            store::insert(&db, &batch, &[], &[]).await.expect("fill");
            batch.clear();
        }
    }
    store::insert(&db, &batch, &[], &[]).await.expect("fill");
    let filled = t0.elapsed().as_secs_f64();
    let target = Ipv4Addr::from(0x0e00_0000 + 4242).into();
    let filter = HistoryFilter {
        ip: Some(target),
        limit: 100,
        ..Default::default()
    };
    let mut times = Vec::new();
    for _ in 0..50 {
        let t = Instant::now();
        let rows = query::history(&db, &filter).await.expect("history");
        times.push(t.elapsed());
        assert_eq!(rows.len(), per_ip);
    }
    let (h50, h99) = percentiles(&mut times);
    let total = db_rows(&arch_db).await;
    report.add(
        &format!("history --ip on {total} events, query p50"),
        h50,
        "ms",
        "<= 50 ms",
    );
    report.add(
        &format!("history --ip on {total} events, query p99"),
        h99,
        "ms",
        "<= 50 ms",
    );
    let t = Instant::now();
    let out = Command::new(bin("shared-f2b-archiver"))
        .arg("--config")
        .arg(&cfg.path)
        .args(["history", "--ip", &target.to_string()])
        .output()
        .expect("archiver runs");
    assert!(out.status.success());
    report.add(
        "  whole `shared-f2b-archiver history --ip` command",
        t.elapsed().as_secs_f64() * 1000.0,
        "ms",
        "report",
    );
    report.add(
        &format!("  (filling the table took {filled:.0} s)"),
        filled,
        "s",
        "",
    );
    db.pool.close().await;
}

async fn db_rows(db: &TestDb) -> i64 {
    db.rows().await
}

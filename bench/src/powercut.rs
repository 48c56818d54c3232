//! A power cut of the NATS host → every host consistent again (issue 25's recovery figure).
//! Each run: the shipped site config with its store on the test kit's power-cut simulator, the
//! archiver, and three hosts with real Fail2Ban; alice publishes `bans` bans with the one-shot
//! publisher (each acknowledged), then the cut takes nats-server and the archiver that runs
//! beside it (kill -9, what was not synced gone), and both start again. Measured from the
//! restart until the archive holds every ban once and bob's and charlie's Fail2Ban hold them
//! all. What the stream lost, the archive lacks only if the archiver had not committed it yet;
//! alice's subscriber asks the archive every 10 s and sends again what is missing (records
//! older than 10 s). Twice: with the archiver running (it has nearly everything before the
//! cut), and with the archiver down during the bans (the archive lacks all of them).

use crate::report::{Report, percentiles};
use shared_f2b_tests::db::TestDb;
use shared_f2b_tests::host::{Daemon, Host};
use shared_f2b_tests::powercut::PowerCut;
use shared_f2b_tests::site;
use std::collections::BTreeSet;
use std::time::{Duration, Instant};

const LIMIT: Duration = Duration::from_secs(120);

pub async fn run(report: &mut Report, runs: usize, bans: usize) {
    for archiver_down in [false, true] {
        let mut took = Vec::new();
        let mut resent = Vec::new();
        for run in 0..runs {
            let (t, r) = once(run, bans, archiver_down).await;
            eprintln!(
                "power cut run {run} (archiver down during the bans: {archiver_down}): \
                 consistent after {t:?}, {r} sent again"
            );
            took.push(t);
            resent.push(r);
        }
        let (p50, _) = percentiles(&mut took);
        let max = took.iter().max().copied().unwrap_or_default();
        let case = if archiver_down {
            "archiver down during the bans"
        } else {
            "archiver running"
        };
        report.add(
            &format!("power cut -> all consistent, p50 of {runs}, {case}"),
            p50 / 1000.0,
            "s",
            "",
        );
        report.add("  the slowest run", max.as_secs_f64(), "s", "");
        report.add(
            &format!("  of {bans} bans, sent again per run (mean)"),
            resent.iter().sum::<f64>() / runs.max(1) as f64,
            "",
            "",
        );
    }
}

async fn once(run: usize, bans: usize, archiver_down: bool) -> (Duration, f64) {
    let dir = tempfile::tempdir().expect("temp dir");
    let mut power = PowerCut::mount(dir.path());
    let store = power.mount.join("store");
    let mut nats = site::nats_on_store(dir.path(), &store, false);
    let url = nats.url();
    let db = TestDb::mariadb();
    let (arch, archiver) = site::archiver_with(dir.path(), &url, &db, "");
    let hosts: Vec<Host> = ["alice", "bob", "charlie"]
        .iter()
        .map(|n| site::host(dir.path(), n, &url, "ban", "", true))
        .collect();
    power.sync();
    let archiver = if archiver_down {
        archiver.kill9();
        None
    } else {
        Some(archiver)
    };
    let ips: Vec<String> = (0..bans)
        .map(|i| format!("198.18.{}.{}", i / 250, i % 250 + 1))
        .collect();
    hosts[0].publish_bans(&ips);
    nats.stop();
    if let Some(archiver) = archiver {
        archiver.kill9();
    }
    power.cut();
    nats.start();
    let started = Instant::now();
    let _archiver = Daemon::archiver(
        &arch.path,
        &dir.path().join(format!("archiver-after-{run}.log")),
    );
    let want: BTreeSet<&String> = ips.iter().collect();
    loop {
        let archived = db.event_ids_of("alice").await;
        let distinct: BTreeSet<&Vec<u8>> = archived.iter().collect();
        let done = distinct.len() == bans
            && archived.len() == bans
            && hosts[1..].iter().all(|h| {
                let held: BTreeSet<String> = h.shared_banned().into_iter().collect();
                want.iter().all(|ip| held.contains(*ip))
            });
        if done || started.elapsed() > LIMIT {
            break;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    let took = started.elapsed();
    let resent = hosts[0]
        .subscriber
        .as_ref()
        .map_or(0.0, |d| d.metric("shared_f2b_events_resent_total"));
    (took, resent)
}

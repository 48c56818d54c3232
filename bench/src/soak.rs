//! `shared-f2b-soak`: many bans from three publishing hosts through three subscribers and an
//! archiver on MariaDB, for minutes; checks that the counts match exactly everywhere and prints
//! each daemon's memory over the run.

use clap::Parser;
use shared_f2b::Event;
use shared_f2b_tests::db::TestDb;
use shared_f2b_tests::host::Daemon;
use shared_f2b_tests::nats::{NatsServer, burst};
use shared_f2b_tests::{HostConfig, unique};
use std::net::Ipv4Addr;
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant, SystemTime};

/// Runs the soak; build with `cargo build --release --workspace` first.
#[derive(Parser)]
struct Cli {
    /// Bans in all (split over the three hosts).
    #[arg(long, default_value_t = 1_000_000)]
    bans: usize,
    /// Over how many seconds they are published.
    #[arg(long, default_value_t = 180)]
    seconds: u64,
    /// Bantime of every ban (holdings end after it, so memory can settle).
    #[arg(long, default_value_t = 300)]
    bantime: i64,
}

const HOSTS: [&str; 3] = ["alice", "bob", "charlie"];

fn rss_mb(pid: u32) -> f64 {
    std::fs::read_to_string(format!("/proc/{pid}/status"))
        .ok()
        .and_then(|s| {
            s.lines()
                .find(|l| l.starts_with("VmRSS:"))
                .and_then(|l| l.split_whitespace().nth(1)?.parse::<f64>().ok())
        })
        .unwrap_or(0.0)
        / 1024.0
}

fn lines(path: &Path) -> usize {
    std::fs::read(path)
        .map(|b| b.iter().filter(|c| **c == b'\n').count())
        .unwrap_or(0)
}

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    let cli = Cli::parse();
    let dir = tempfile::tempdir()?;
    let nats = NatsServer::start_in(dir.path());
    let url = nats.url();
    let (prefix, stream) = ("f2b", unique("SOAK"));
    let db = TestDb::mariadb();

    let arch = HostConfig::write(
        &dir.path().join("archiver"),
        "archiver",
        &url,
        prefix,
        &stream,
        &format!("[archiver]\ndatabase_url = {:?}\n", db.url),
    );
    let archiver = Daemon::archiver(&arch.path, &dir.path().join("archiver.log"));
    let mut subs: Vec<(&str, PathBuf, Daemon)> = Vec::new();
    for host in HOSTS {
        let hdir = dir.path().join(host);
        let log = hdir.join("shared.log");
        let cfg = HostConfig::write(
            &hdir,
            host,
            &url,
            prefix,
            &stream,
            &format!(
                "[subscriber]\napply = \"log\"\nlog_file = {:?}\nstate_dir = {:?}\nmax_bans_per_minute = 1000000\n",
                log.display().to_string(),
                hdir.join("state").display().to_string()
            ),
        );
        let daemon = Daemon::subscriber(&cfg.path, &hdir);
        subs.push((host, log, daemon));
    }
    let pids: Vec<(String, u32)> = std::iter::once(("archiver".to_string(), archiver.pid()))
        .chain(
            subs.iter()
                .map(|(h, _, d)| (format!("subscriber {h}"), d.pid())),
        )
        .collect();

    // Memory samples every 5 s, in the background.
    let sampling = pids.clone();
    let samples = tokio::spawn(async move {
        let mut rows: Vec<Vec<f64>> = Vec::new();
        loop {
            rows.push(sampling.iter().map(|(_, pid)| rss_mb(*pid)).collect());
            if rows.last().is_some_and(|r| r.iter().all(|m| *m == 0.0)) {
                return rows;
            }
            tokio::time::sleep(Duration::from_secs(5)).await;
        }
    });

    // Published in windows of 1,000 per host: the counts are whole windows.
    let windows = (cli.bans / HOSTS.len() / 1000).max(1);
    let per_host = windows * 1000;
    let started = Instant::now();
    let pace = Duration::from_secs_f64(cli.seconds as f64 / windows as f64);
    let mut publishers = Vec::new();
    for (h, host) in HOSTS.iter().enumerate() {
        let (url, host, bantime) = (url.clone(), host.to_string(), cli.bantime);
        publishers.push(tokio::spawn(async move {
            let t0 = Instant::now();
            for w in 0..windows {
                let events: Vec<Event> = (0..1000)
                    .map(|i| {
                        let n = (h * per_host + w * 1000 + i) as u32;
                        let ip = Ipv4Addr::from(0x0a00_0000 + n);
                        Event::new(
                            shared_f2b::Action::Ban,
                            &host,
                            "sshd",
                            ip.into(),
                            SystemTime::now(),
                            bantime,
                            1,
                        )
                        .expect("valid")
                    })
                    .collect();
                burst(&url, prefix, &events).await;
                let due = pace * (w as u32 + 1);
                if let Some(wait) = due.checked_sub(t0.elapsed()) {
                    tokio::time::sleep(wait).await;
                }
            }
        }));
    }
    for p in publishers {
        p.await?;
    }
    let published = started.elapsed();
    let total = per_host * HOSTS.len();
    let expected_each = per_host * (HOSTS.len() - 1);
    loop {
        let applied: Vec<usize> = subs.iter().map(|(_, log, _)| lines(log)).collect();
        let rows = db.rows().await as usize;
        if applied.iter().all(|n| *n >= expected_each) && rows >= total {
            break;
        }
        anyhow::ensure!(
            started.elapsed() < Duration::from_secs(cli.seconds * 4 + 600),
            "stalled: {applied:?} {rows}"
        );
        tokio::time::sleep(Duration::from_secs(1)).await;
    }
    let done = started.elapsed();
    tokio::time::sleep(Duration::from_secs(2)).await;
    let applied: Vec<usize> = subs.iter().map(|(_, log, _)| lines(log)).collect();
    let rows = db.rows().await;
    drop(subs);
    drop(archiver);
    let rows_mem = samples.await?;

    println!(
        "soak: {total} bans from {} hosts, published in {:.1} s, all applied and archived after {:.1} s",
        HOSTS.len(),
        published.as_secs_f64(),
        done.as_secs_f64()
    );
    println!("  each subscriber applied (expected {expected_each}): {applied:?}");
    println!("  archive rows {rows} (expected {total})");
    println!("  memory (RSS MB) every 5 s:");
    for (i, (name, _)) in pids.iter().enumerate() {
        let series: Vec<f64> = rows_mem.iter().map(|r| r[i]).filter(|m| *m > 0.0).collect();
        let max = series.iter().cloned().fold(0.0, f64::max);
        let shown: Vec<String> = series.iter().map(|m| format!("{m:.0}")).collect();
        println!("    {name:<20} max {max:6.1}  [{}]", shown.join(" "));
    }
    let ok = applied.iter().all(|n| *n == expected_each) && rows as usize == total;
    println!("  counts {}", if ok { "MATCH" } else { "DO NOT MATCH" });
    anyhow::ensure!(ok, "counts do not match");
    Ok(())
}

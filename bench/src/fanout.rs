//! Fan-out: one ban -> N hosts. The hosts are in-process connections with the hosts' permissions
//! of the shipped site config (`HOSTS` account, a plain subscription to `f2b.live.>`), beside
//! the previous design in the same run (one account, one ordered consumer per host). Measures
//! publish -> every host has it (p50/p99) and the server's RSS and CPU.

use crate::report::Report;
use async_nats::jetstream::consumer::pull::OrderedConfig;
use futures::StreamExt;
use shared_f2b_tests::HostConfig;
use shared_f2b_tests::host::Daemon;
use shared_f2b_tests::nats::{NatsServer, ban_event};
use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::{Duration, Instant, SystemTime};
use tokio::sync::Notify;

/// The server's resident memory (MiB) and CPU time used so far (s).
fn usage(pid: u32) -> (f64, f64) {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).unwrap_or_default();
    let rss_kb: f64 = status
        .lines()
        .find(|l| l.starts_with("VmRSS:"))
        .and_then(|l| l.split_whitespace().nth(1))
        .and_then(|v| v.parse().ok())
        .unwrap_or(0.0);
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).unwrap_or_default();
    let fields: Vec<&str> = stat
        .rsplit(')')
        .next()
        .unwrap_or("")
        .split_whitespace()
        .collect();
    let ticks: f64 = fields
        .get(11)
        .and_then(|v| v.parse::<f64>().ok())
        .unwrap_or(0.0)
        + fields
            .get(12)
            .and_then(|v| v.parse::<f64>().ok())
            .unwrap_or(0.0);
    (rss_kb / 1024.0, ticks / 100.0)
}

fn percentile(sorted: &[f64], p: f64) -> f64 {
    sorted[((sorted.len() as f64 * p).ceil() as usize).clamp(1, sorted.len()) - 1]
}

/// Counts deliveries per round; wakes the publisher when every host has the round's event.
struct Tally {
    got: AtomicUsize,
    all: Notify,
    hosts: usize,
}

impl Tally {
    fn new(hosts: usize) -> Arc<Tally> {
        Arc::new(Tally {
            got: AtomicUsize::new(0),
            all: Notify::new(),
            hosts,
        })
    }

    fn seen(&self) {
        if self.got.fetch_add(1, Ordering::AcqRel) + 1 == self.hosts {
            self.all.notify_one();
        }
    }
}

async fn login(url: &str, user: &str) -> async_nats::Client {
    async_nats::ConnectOptions::with_user_and_password(user.into(), format!("change-me-{user}"))
        .custom_inbox_prefix(format!("_INBOX_{user}"))
        .connect(url)
        .await
        .expect("connect")
}

/// Publishes `rounds` bans as alice and measures until every host has each.
async fn rounds(js: &async_nats::jetstream::Context, tally: &Tally, rounds: usize) -> Vec<f64> {
    let mut ms = Vec::with_capacity(rounds);
    for i in 0..rounds {
        tally.got.store(0, Ordering::Release);
        let e = ban_event("alice", "sshd", &format!("198.18.{}.{}", i / 250, i % 250));
        let t0 = Instant::now();
        let all = tally.all.notified();
        js.publish("f2b.ban.sshd.alice", e.encode().into())
            .await
            .expect("publish")
            .await
            .expect("ack");
        tokio::time::timeout(Duration::from_secs(30), all)
            .await
            .expect("every host got it");
        ms.push(t0.elapsed().as_secs_f64() * 1000.0);
    }
    ms.sort_by(f64::total_cmp);
    ms
}

/// The new design on the shipped config: `hosts` subscriptions to the live subject.
async fn live(hosts: usize, n: usize) -> (Vec<f64>, (f64, f64)) {
    let dir = tempfile::tempdir().unwrap();
    let conf = shared_f2b_tests::site::shipped_config();
    let server = NatsServer::start_with_config(dir.path(), &conf);
    let url = server.url();
    let site = shared_f2b::config::NatsConfig {
        servers: vec![url.clone()],
        stream_max_age: Duration::from_secs(3600),
        ..Default::default()
    };
    let archiver = login(&url, "archiver").await;
    async_nats::jetstream::new(archiver)
        .get_or_create_stream(shared_f2b::nats::stream_config(&site))
        .await
        .expect("stream");
    let tally = Tally::new(hosts);
    let mut clients = Vec::new();
    for i in 0..hosts {
        let user = if i % 2 == 0 { "bob" } else { "charlie" };
        let client = login(&url, user).await;
        let mut sub = client.subscribe("f2b.live.>").await.expect("subscribe");
        let tally = tally.clone();
        tokio::spawn(async move {
            while sub.next().await.is_some() {
                tally.seen();
            }
        });
        clients.push(client);
    }
    for c in &clients {
        c.flush().await.unwrap();
    }
    let pid = server.pid().unwrap();
    let before = usage(pid);
    let js = async_nats::jetstream::new(login(&url, "alice").await);
    let ms = rounds(&js, &tally, n).await;
    let after = usage(pid);
    (ms, (after.0, after.1 - before.1))
}

/// The previous design: one account, an ordered consumer per host.
async fn ordered(hosts: usize, n: usize) -> (Vec<f64>, (f64, f64)) {
    let dir = tempfile::tempdir().unwrap();
    let server = NatsServer::start_in(dir.path());
    let url = server.url();
    let site = shared_f2b::config::NatsConfig {
        servers: vec![url.clone()],
        stream_max_age: Duration::from_secs(3600),
        ..Default::default()
    };
    let js = async_nats::jetstream::new(async_nats::connect(&url).await.unwrap());
    let stream = js
        .get_or_create_stream(shared_f2b::nats::stream_config(&site))
        .await
        .expect("stream");
    let tally = Tally::new(hosts);
    let mut clients = Vec::new();
    for _ in 0..hosts {
        let client = async_nats::connect(&url).await.unwrap();
        let stream = async_nats::jetstream::new(client.clone())
            .get_stream(&stream.cached_info().config.name)
            .await
            .unwrap();
        let consumer = stream
            .create_consumer(OrderedConfig::default())
            .await
            .expect("consumer");
        let mut messages = consumer.messages().await.expect("messages");
        let tally = tally.clone();
        tokio::spawn(async move {
            while let Some(Ok(_)) = messages.next().await {
                tally.seen();
            }
        });
        clients.push(client);
    }
    let pid = server.pid().unwrap();
    let before = usage(pid);
    let ms = rounds(&js, &tally, n).await;
    let after = usage(pid);
    (ms, (after.0, after.1 - before.1))
}

/// Runs both designs with `hosts` simulated hosts, `n` bans each.
pub async fn run(report: &mut Report, hosts: usize, n: usize) {
    let (new, (new_rss, new_cpu)) = live(hosts, n).await;
    let (old, (old_rss, old_cpu)) = ordered(hosts, n).await;
    let label = |what: &str| format!("fan-out {hosts} hosts, {what}");
    for (p, name) in [(0.5, "p50"), (0.99, "p99")] {
        report
            .add(
                &label(&format!("live subject {name}")),
                percentile(&new, p),
                "ms",
                if name == "p99" { "<= 50 ms" } else { "" },
            )
            .reference = Some((
            format!("ordered consumer per host {name}"),
            percentile(&old, p),
        ));
    }
    report
        .add(&label("server RSS, live subject"), new_rss, "MiB", "")
        .reference = Some(("ordered consumer per host".into(), old_rss));
    report
        .add(
            &label(&format!("server CPU for {n} bans, live")),
            new_cpu,
            "s",
            "",
        )
        .reference = Some(("ordered consumer per host".into(), old_cpu));
}

/// Real `shared-f2b-subscriber` processes in `log` mode on the shipped config: one ban -> the
/// line in every host's log file (its mtime is when that host wrote it).
async fn processes(hosts: usize, n: usize) -> (Vec<f64>, (f64, f64)) {
    let dir = tempfile::tempdir().unwrap();
    let conf = shared_f2b_tests::site::shipped_config();
    let server = NatsServer::start_with_config(dir.path(), &conf);
    let url = server.url();
    let site = shared_f2b::config::NatsConfig {
        servers: vec![url.clone()],
        stream_max_age: Duration::from_secs(3600),
        ..Default::default()
    };
    async_nats::jetstream::new(login(&url, "archiver").await)
        .get_or_create_stream(shared_f2b::nats::stream_config(&site))
        .await
        .expect("stream");
    let mut subs = Vec::new();
    let mut logs = Vec::new();
    for i in 0..hosts {
        let user = if i % 2 == 0 { "bob" } else { "charlie" };
        let hdir = dir.path().join(format!("h{i}"));
        std::fs::create_dir_all(&hdir).unwrap();
        let log = hdir.join("shared.log");
        let cfg = HostConfig::write(
            &hdir,
            user,
            &url,
            "f2b",
            "F2B_EVENTS",
            &format!(
                "[subscriber]\napply = \"log\"\nlog_file = {:?}\nstate_dir = {:?}\n",
                log.display().to_string(),
                hdir.join("state").display().to_string()
            ),
        );
        cfg.add_nats_keys(&format!(
            "user = {user:?}\npassword = \"change-me-{user}\"\ninbox_prefix = \"_INBOX_{user}\""
        ));
        // Started all at once, then waited for: each one's first catch-up waits for an
        // archiver that this bench does not run (~10 s), so one after another took over an hour.
        subs.push(Daemon::spawn(
            "shared-f2b-subscriber",
            &cfg.path,
            &hdir.join("subscriber.log"),
        ));
        logs.push(log);
    }
    for sub in &mut subs {
        sub.wait_healthy("shared-f2b-subscriber");
    }
    let pid = server.pid().unwrap();
    let before = usage(pid);
    let js = async_nats::jetstream::new(login(&url, "alice").await);
    let mut ms = Vec::with_capacity(n);
    for i in 0..n {
        let ip = format!("198.19.{}.{}", i / 250, i % 250);
        let e = ban_event("alice", "sshd", &ip);
        let needle = format!("[{ip}]");
        let t0 = SystemTime::now();
        js.publish("f2b.ban.sshd.alice", e.encode().into())
            .await
            .expect("publish")
            .await
            .expect("ack");
        let started = Instant::now();
        let mut last = t0;
        for log in &logs {
            loop {
                let text = std::fs::read_to_string(log).unwrap_or_default();
                if text.contains(&needle) {
                    let written = std::fs::metadata(log).and_then(|m| m.modified()).unwrap();
                    last = last.max(written);
                    break;
                }
                assert!(
                    started.elapsed() < Duration::from_secs(30),
                    "{ip} never reached {}",
                    log.display()
                );
                tokio::time::sleep(Duration::from_millis(5)).await;
            }
        }
        ms.push(last.duration_since(t0).unwrap_or_default().as_secs_f64() * 1000.0);
    }
    let after = usage(pid);
    drop(subs);
    ms.sort_by(f64::total_cmp);
    (ms, (after.0, after.1 - before.1))
}

/// Real subscriber processes: `hosts` of them, `n` bans.
pub async fn run_processes(report: &mut Report, hosts: usize, n: usize) {
    let (ms, (rss, cpu)) = processes(hosts, n).await;
    let label = |what: &str| format!("fan-out {hosts} subscriber processes (log mode), {what}");
    report.add(&label("p50"), percentile(&ms, 0.5), "ms", "report");
    report.add(&label("p99"), percentile(&ms, 0.99), "ms", "report");
    report.add(&label("server RSS"), rss, "MiB", "report");
    report.add(
        &label(&format!("server CPU for {n} bans")),
        cpu,
        "s",
        "report",
    );
}

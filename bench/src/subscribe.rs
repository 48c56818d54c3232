//! Subscriber figures: end-to-end latency (publish on alice → banned in bob's Fail2Ban) beside
//! the raw socket floor, burst throughput beside the raw batched `banip` ceiling, and memory.

use crate::report::{Report, percentiles};
use shared_f2b::Event;
use shared_f2b_subscriber::apply::fail2ban::{Fail2Ban as Socket, Value};
use shared_f2b_tests::host::{Daemon, Host, HostSpec};
use shared_f2b_tests::nats::{EventSender, NatsServer, ban_event, burst};
use shared_f2b_tests::{HostConfig, bin, unique};
use std::net::Ipv4Addr;
use std::path::Path;
use std::process::{Command, Stdio};
use std::time::{Duration, Instant, SystemTime};

const PREFIX: &str = "f2b";

fn ip(net: u8, i: usize) -> String {
    Ipv4Addr::new(10, net, (i >> 8) as u8, i as u8).to_string()
}

async fn is_banned(socket: &mut Socket, jail: &str, ip: &str) -> bool {
    socket
        .command(&["get", jail, "banned", ip])
        .await
        .is_ok_and(|r| r.as_int() == Some(1))
}

/// Polls until `ip` is banned in `jail`; the time it took since `since`.
async fn until_banned(socket: &mut Socket, jail: &str, ip: &str, since: Instant) -> Duration {
    let deadline = since + Duration::from_secs(30);
    while !is_banned(socket, jail, ip).await {
        assert!(Instant::now() < deadline, "{ip} never banned in {jail}");
        tokio::time::sleep(Duration::from_micros(200)).await;
    }
    since.elapsed()
}

/// A counter from `status <jail>` ("Currently banned", "Total failed", …).
async fn status_count(socket: &mut Socket, jail: &str, name: &str) -> i64 {
    fn find(v: &Value, name: &str) -> Option<i64> {
        match v {
            Value::Tuple(items) | Value::List(items) => {
                if let [Value::String(k), Value::I64(n)] = items.as_slice()
                    && k == name
                {
                    return Some(*n);
                }
                items.iter().find_map(|v| find(v, name))
            }
            _ => None,
        }
    }
    let reply = socket.command(&["status", jail]).await.expect("status");
    find(&reply.value, name).expect("status has the counter")
}

pub async fn banned_count(socket: &mut Socket, jail: &str) -> i64 {
    status_count(socket, jail, "Currently banned").await
}

/// When Fail2Ban logged `[jail] Attempt <ip>` (its log lines start `2026-11-25 07:13:51,391`).
fn attempt_logged_at(log: &str, ip: &str) -> Option<SystemTime> {
    let needle = format!("Attempt {ip} ");
    let line = log.lines().find(|l| l.contains(&needle))?;
    let stamp = line.get(..23)?.replacen(' ', "T", 1).replace(',', ".");
    humantime::parse_rfc3339_weak(&format!("{stamp}Z")).ok()
}

fn publish_as(config: &Path, ip: &str) {
    let status = Command::new(bin("shared-f2b-publish"))
        .arg("--config")
        .arg(config)
        .args(["ban", "--jail", "sshd", "--ip", ip, "--bantime", "3600"])
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .status()
        .expect("publisher runs");
    assert!(status.success());
}

fn host(dir: &Path, name: &str, url: &str, stream: &str, apply: &str) -> Host {
    host_with(dir, name, url, stream, apply, "")
}

/// As [`host`], with more `[subscriber]` keys (and tables after them).
fn host_with(dir: &Path, name: &str, url: &str, stream: &str, apply: &str, extra: &str) -> Host {
    let mut h = Host::new(
        dir,
        &HostSpec {
            name,
            nats_url: url,
            prefix: PREFIX,
            stream,
            apply,
            subscriber_extra: extra,
            shared_jail_extra: "bantime = 86400",
        },
    );
    h.start_subscriber();
    h
}

fn rss_kb(pid: u32) -> u64 {
    std::fs::read_to_string(format!("/proc/{pid}/status"))
        .ok()
        .and_then(|s| {
            s.lines()
                .find(|l| l.starts_with("VmRSS:"))
                .and_then(|l| l.split_whitespace().nth(1)?.parse().ok())
        })
        .unwrap_or(0)
}

/// Runs the subscriber benchmarks and adds their rows.
pub async fn run(report: &mut Report, latency_runs: usize, attempt_runs: usize, burst_n: usize) {
    let dir = tempfile::tempdir().expect("temp dir");
    let nats = NatsServer::start_in(dir.path());
    let url = nats.url();
    let stream = unique("BS");
    let alice = HostConfig::write(dir.path(), "alice", &url, PREFIX, &stream, "");

    // --- latency, apply = "ban" ---
    let mut bob = host(dir.path(), "bob", &url, &stream, "ban");
    let mut sock = Socket::new(&bob.f2b.socket);
    let mut floor = Vec::new();
    for i in 0..latency_runs {
        let ip = ip(1, i);
        let t0 = Instant::now();
        sock.command(&["set", "shared", "banip", &ip])
            .await
            .expect("banip");
        floor.push(until_banned(&mut sock, "shared", &ip, t0).await);
    }
    let mut e2e = Vec::new();
    for i in 0..latency_runs {
        let ip = ip(2, i);
        let t0 = Instant::now();
        publish_as(&alice.path, &ip);
        e2e.push(until_banned(&mut sock, "shared", &ip, t0).await);
    }
    let (f50, f99) = percentiles(&mut floor);
    let (e50, e99) = percentiles(&mut e2e);
    report
        .add(
            &format!("e2e ban mode p50 ({latency_runs} bans)"),
            e50,
            "ms",
            "<= 10 ms",
        )
        .reference = Some(("raw banip -> banned p50".into(), f50));
    report
        .add(
            &format!("e2e ban mode p99 ({latency_runs} bans)"),
            e99,
            "ms",
            "<= 50 ms",
        )
        .reference = Some(("raw banip -> banned p99".into(), f99));

    // --- burst, apply = "ban": raw batched banip ceiling, then the product ---
    sock.command(&["unban", "--all"]).await.expect("unban all");
    let raw_ips: Vec<String> = (0..burst_n).map(|i| ip(3, i)).collect();
    let t0 = Instant::now();
    for chunk in raw_ips.chunks(1000) {
        let mut args = vec!["set", "shared", "banip"];
        args.extend(chunk.iter().map(String::as_str));
        sock.command(&args).await.expect("banip");
    }
    let raw_rate = burst_n as f64 / t0.elapsed().as_secs_f64();
    assert_eq!(banned_count(&mut sock, "shared").await, burst_n as i64);
    sock.command(&["unban", "--all"]).await.expect("unban all");

    let events: Vec<Event> = (0..burst_n)
        .map(|i| ban_event("alice", "sshd", &ip(4, i)))
        .collect();
    let t0 = Instant::now();
    burst(&url, PREFIX, &events).await;
    let published = t0.elapsed();
    while banned_count(&mut sock, "shared").await < burst_n as i64 {
        assert!(t0.elapsed() < Duration::from_secs(300), "burst not applied");
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    let product_rate = burst_n as f64 / t0.elapsed().as_secs_f64();
    let mut one_by_one = Vec::new();
    for i in 0..20 {
        let t = Instant::now();
        let ok = bob
            .f2b
            .client(&["set", "shared", "banip", &ip(5, i)])
            .is_some();
        assert!(ok);
        one_by_one.push(t.elapsed());
    }
    let client_rate = 1.0 / (one_by_one.iter().sum::<Duration>().as_secs_f64() / 20.0);
    report
        .add(
            &format!("burst {burst_n} bans -> all banned on bob"),
            product_rate,
            "/s",
            ">= 50% of ceiling",
        )
        .reference = Some(("raw batched banip ceiling /s".into(), raw_rate));
    report
        .add(
            &format!("  of which publishing {burst_n} events"),
            published.as_secs_f64() * 1000.0,
            "ms",
            "",
        )
        .reference = None;
    report
        .add(
            "for scale: fail2ban-client set banip, one per address",
            client_rate,
            "/s",
            "",
        )
        .reference = None;

    // --- the same burst signed, at a host that requires signatures (bob stopped) ---
    let signed_rate = signed_burst(dir.path(), &url, &stream, burst_n, &mut bob).await;
    report
        .add(
            &format!("burst {burst_n} signed bans -> all banned, require_signatures"),
            signed_rate,
            "/s",
            ">= the unsigned burst",
        )
        .reference = Some(("unsigned burst, same run /s".into(), product_rate));

    // --- latency, apply = "attempt" ---
    let charlie = host(dir.path(), "charlie", &url, &stream, "attempt");
    let mut csock = Socket::new(&charlie.f2b.socket);
    let mut raw_attempt = Vec::new();
    for i in 0..attempt_runs {
        let ip = ip(6, i);
        let t0 = Instant::now();
        csock
            .command(&["set", "shared", "attempt", &ip, "bench"])
            .await
            .expect("attempt");
        raw_attempt.push(until_banned(&mut csock, "shared", &ip, t0).await);
    }
    // The product's share ends when Fail2Ban logs the attempt (its log is in UTC, ms precision):
    // read afterwards, so nothing polls Fail2Ban while the subscriber talks to it.
    let (mut e2e_attempt, mut share) = (Vec::new(), Vec::new());
    for i in 0..attempt_runs {
        let ip = ip(7, i);
        // Let Fail2Ban finish the previous ban (its database write) before the next run.
        tokio::time::sleep(Duration::from_millis(300)).await;
        let wall = SystemTime::now();
        let t0 = Instant::now();
        publish_as(&alice.path, &ip);
        e2e_attempt.push(until_banned(&mut csock, "shared", &ip, t0).await);
        let logged = attempt_logged_at(&charlie.f2b.log(), &ip).expect("attempt in the log");
        share.push(logged.duration_since(wall).unwrap_or_default());
    }
    let (r50, _) = percentiles(&mut raw_attempt);
    let (a50, a99) = percentiles(&mut e2e_attempt);
    let (s50, s99) = percentiles(&mut share);
    report
        .add(
            &format!("e2e attempt mode p50 ({attempt_runs} bans)"),
            a50,
            "ms",
            "report",
        )
        .reference = Some(("raw attempt -> banned p50".into(), r50));
    report.add(
        &format!("e2e attempt mode p99 ({attempt_runs} bans)"),
        a99,
        "ms",
        "report",
    );
    report.add(
        "  product's share: publish -> attempt logged by Fail2Ban, p50",
        s50,
        "ms",
        "<= 10 ms",
    );
    report.add(
        "  product's share: publish -> attempt logged by Fail2Ban, p99",
        s99,
        "ms",
        "report",
    );
    drop(bob);
    drop(charlie);

    // --- memory: a subscriber in log mode (no Fail2Ban in the way) ---
    let mdir = dir.path().join("mem");
    std::fs::create_dir_all(&mdir).unwrap();
    let log = mdir.join("shared.log");
    let mem_stream = unique("BM");
    let cfg = HostConfig::write(
        &mdir,
        "dave",
        &url,
        "f2bmem",
        &mem_stream,
        &format!(
            "[subscriber]\napply = \"log\"\nlog_file = {:?}\nstate_dir = {:?}\nmax_bans_per_minute = 1000000\n",
            log.display().to_string(),
            mdir.join("state").display().to_string()
        ),
    );
    // Subscribers do not create the stream (hosts hold no JetStream API): the sender does.
    EventSender::connect(&url, "f2bmem", &mem_stream)
        .await
        .create_stream()
        .await;
    let sub = Daemon::subscriber(&cfg.path, &mdir);
    tokio::time::sleep(Duration::from_secs(1)).await;
    let idle = rss_kb(sub.pid()) as f64 / 1024.0;
    let held = 100_000;
    let events: Vec<Event> = (0..held)
        .map(|i| {
            ban_event(
                "alice",
                "sshd",
                &Ipv4Addr::from(0x0b00_0000u32 + i as u32).to_string(),
            )
        })
        .collect();
    burst(&url, "f2bmem", &events).await;
    let t0 = Instant::now();
    loop {
        let lines = std::fs::read_to_string(&log)
            .map(|s| s.lines().count())
            .unwrap_or(0);
        if lines >= held {
            break;
        }
        assert!(
            t0.elapsed() < Duration::from_secs(300),
            "only {lines} applied"
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    let loaded = rss_kb(sub.pid()) as f64 / 1024.0;
    report.add("subscriber RSS idle", idle, "MB", "<= 20 MB");
    report.add(
        "subscriber RSS with 100,000 remote bans held",
        loaded,
        "MB",
        "report",
    );
    drop(sub);
}

/// A burst of `n` bans signed by alice's key, at a new host (carol) that requires signatures
/// and trusts the operator who vouched for alice's key; bob's subscriber is stopped first so
/// the two do not share the cores. Returns bans applied per second.
async fn signed_burst(dir: &Path, url: &str, stream: &str, n: usize, bob: &mut Host) -> f64 {
    use shared_f2b::control::{Control, ControlKind};
    use shared_f2b::signing::Signer;
    drop(bob.subscriber.take());
    let operator = Signer::generate();
    let alice = Signer::generate();
    let trust = format!(
        "require_signatures = true\n\n[trust]\noperator_keys = [{:?}]\n",
        operator.public_key()
    );
    let carol = host_with(dir, "carol", url, stream, "ban", &trust);
    let mut sock = Socket::new(&carol.f2b.socket);
    let mut record = Control::key_record(
        "admin",
        "alice",
        alice.public_key(),
        SystemTime::now() - Duration::from_secs(60),
        None,
        "bench",
    )
    .expect("a key record");
    operator.sign_control(&mut record);
    let js = async_nats::jetstream::new(async_nats::connect(url).await.expect("connect"));
    let subject = shared_f2b::subject::control_subject(PREFIX, ControlKind::Key, "admin").unwrap();
    js.publish(subject, record.encode().into())
        .await
        .expect("publish")
        .await
        .expect("ack");
    let daemon = carol.subscriber.as_ref().expect("carol's subscriber");
    let t = Instant::now();
    while !daemon.log_text().contains("host key record taken") {
        assert!(
            t.elapsed() < Duration::from_secs(30),
            "carol never took the key record"
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    let events: Vec<Event> = (0..n)
        .map(|i| {
            let mut e = ban_event("alice", "sshd", &ip(8, i));
            alice.sign_event(&mut e);
            e
        })
        .collect();
    let t0 = Instant::now();
    burst(url, PREFIX, &events).await;
    while banned_count(&mut sock, "shared").await < n as i64 {
        assert!(
            t0.elapsed() < Duration::from_secs(300),
            "signed burst not applied"
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    n as f64 / t0.elapsed().as_secs_f64()
}

//! `shared-f2b-publish`: from a Fail2Ban ban to an event on the stream, spooling, bad input.

use shared_f2b::Action;
use shared_f2b_tests::fail2ban::Fail2Ban;
use shared_f2b_tests::nats::{NatsServer, StreamGuard, read_stream};
use shared_f2b_tests::{HostConfig, bin, shared_nats, unique, wait_for};
use std::path::Path;
use std::process::{Command, Output};
use std::time::Duration;

fn publish(config: &Path, args: &[&str]) -> Output {
    Command::new(bin("shared-f2b-publish"))
        .arg("--config")
        .arg(config)
        .args(args)
        .output()
        .expect("publisher runs")
}

fn ban(config: &Path, ip: &str) -> Output {
    publish(
        config,
        &["ban", "--jail", "sshd", "--ip", ip, "--bantime", "600"],
    )
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_fail2ban_ban_becomes_one_event_on_the_stream() {
    let dir = tempfile::tempdir().unwrap();
    let (prefix, stream) = (unique("pf"), unique("PF"));
    let _guard = StreamGuard {
        url: shared_nats().into(),
        stream: stream.clone(),
    };
    let cfg = HostConfig::write(dir.path(), "alice", shared_nats(), &prefix, &stream, "");
    let jails = format!(
        "[DEFAULT]\nbackend = polling\n\n[login]\nenabled = true\nfilter = login\nlogpath = {}\n\
         maxretry = 3\nfindtime = 10m\nbantime = 3600\n\
         action = shared-f2b[publisher=\"{}\", config=\"{}\"]\n",
        dir.path().join("auth.log").display(),
        bin("shared-f2b-publish").display(),
        cfg.path.display()
    );
    std::fs::write(dir.path().join("auth.log"), "").unwrap();
    let f2b = Fail2Ban::start(dir.path(), &jails);
    let attempts = |ip: &str| {
        (0..3)
            .map(|_| format!("Failed login from {ip}"))
            .collect::<Vec<_>>()
    };
    f2b.append_log("auth.log", &attempts("192.0.2.10"));
    f2b.append_log("auth.log", &attempts("2001:db8::10"));

    let events = wait_for(
        Duration::from_secs(20),
        "two ban events on the stream",
        || async {
            let events = read_stream(shared_nats(), &stream).await;
            (events.len() >= 2).then_some(events)
        },
    )
    .await;
    assert_eq!(events.len(), 2, "exactly one event per ban: {events:?}");
    let mut ips: Vec<String> = events.iter().map(|(_, e)| e.ip.to_string()).collect();
    ips.sort();
    assert_eq!(ips, ["192.0.2.10", "2001:db8::10"]);
    for (subject, e) in &events {
        assert_eq!(subject, &format!("{prefix}.ban.login.alice"));
        assert_eq!(
            (e.v, e.origin.as_str(), e.jail.as_str()),
            (1, "alice", "login")
        );
        assert_eq!((e.action, e.bantime, e.failures), (Action::Ban, 3600, 3));
        let age = std::time::SystemTime::now().duration_since(e.time).unwrap();
        assert!(age < Duration::from_secs(60), "event time is the ban time");
    }

    // A manual unban is early: it is published.
    f2b.client(&["set", "login", "unbanip", "192.0.2.10"])
        .expect("unban");
    let unban = wait_for(Duration::from_secs(10), "the unban event", || async {
        read_stream(shared_nats(), &stream)
            .await
            .into_iter()
            .find(|(_, e)| e.action == Action::Unban)
    })
    .await;
    assert_eq!(unban.0, format!("{prefix}.unban.login.alice"));
    assert_eq!(unban.1.ip.to_string(), "192.0.2.10");

    // Stopping Fail2Ban lifts its bans locally, but those are not early unbans.
    f2b.client(&["stop"]).expect("fail2ban stops");
    let events = read_stream(shared_nats(), &stream).await;
    assert_eq!(events.len(), 3, "stop published nothing more: {events:?}");
    assert_eq!(cfg.spooled(), 0);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn with_nats_down_events_are_spooled_then_delivered_in_order_once() {
    let dir = tempfile::tempdir().unwrap();
    let mut nats = NatsServer::start_in(dir.path());
    let stream = unique("SP");
    let cfg = HostConfig::write(dir.path(), "alice", &nats.url(), &unique("sp"), &stream, "");
    nats.stop();

    let ips = ["192.0.2.1", "192.0.2.2", "2001:db8::3", "192.0.2.4"];
    for ip in &ips[..3] {
        let out = ban(&cfg.path, ip);
        assert!(
            out.status.success(),
            "{}",
            String::from_utf8_lossy(&out.stderr)
        );
        assert!(String::from_utf8_lossy(&out.stderr).contains("spooled"));
    }
    assert_eq!(cfg.spooled(), 3);

    nats.start();
    let out = publish(&cfg.path, &["flush"]);
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert_eq!(
        String::from_utf8_lossy(&out.stdout).trim(),
        "sent 3, remaining 0, set aside 0"
    );
    assert_eq!(cfg.spooled(), 0);

    // The next publish finds nothing old to send, and a second flush sends nothing again.
    assert!(ban(&cfg.path, ips[3]).status.success());
    let out = publish(&cfg.path, &["flush"]);
    assert_eq!(
        String::from_utf8_lossy(&out.stdout).trim(),
        "sent 0, remaining 0, set aside 0"
    );

    let got: Vec<String> = read_stream(&nats.url(), &stream)
        .await
        .iter()
        .map(|(_, e)| e.ip.to_string())
        .collect();
    assert_eq!(got, ips, "every event once, oldest first");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_next_publish_sends_the_spool_first() {
    let dir = tempfile::tempdir().unwrap();
    let mut nats = NatsServer::start_in(dir.path());
    let stream = unique("SN");
    let cfg = HostConfig::write(dir.path(), "alice", &nats.url(), &unique("sn"), &stream, "");
    nats.stop();
    assert!(ban(&cfg.path, "192.0.2.1").status.success());
    assert!(ban(&cfg.path, "192.0.2.2").status.success());
    nats.start();
    assert!(ban(&cfg.path, "192.0.2.3").status.success());
    assert_eq!(cfg.spooled(), 0);
    let got: Vec<String> = read_stream(&nats.url(), &stream)
        .await
        .iter()
        .map(|(_, e)| e.ip.to_string())
        .collect();
    assert_eq!(got, ["192.0.2.1", "192.0.2.2", "192.0.2.3"]);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn concurrent_flushes_never_send_an_entry_twice() {
    let dir = tempfile::tempdir().unwrap();
    let mut nats = NatsServer::start_in(dir.path());
    let stream = unique("SC");
    let cfg = HostConfig::write(dir.path(), "alice", &nats.url(), &unique("sc"), &stream, "");
    nats.stop();
    for i in 0..40 {
        assert!(ban(&cfg.path, &format!("198.51.100.{i}")).status.success());
    }
    assert_eq!(cfg.spooled(), 40);
    nats.start();
    // Four flushes at once: the lock lets one send, the others report the spool busy.
    let children: Vec<_> = (0..4)
        .map(|_| {
            Command::new(bin("shared-f2b-publish"))
                .arg("--config")
                .arg(&cfg.path)
                .arg("flush")
                .stdout(std::process::Stdio::piped())
                .stderr(std::process::Stdio::null())
                .spawn()
                .unwrap()
        })
        .collect();
    let mut sent = 0;
    for child in children {
        let out = child.wait_with_output().unwrap();
        let stdout = String::from_utf8_lossy(&out.stdout);
        sent += stdout
            .split_whitespace()
            .nth(1)
            .and_then(|n| n.trim_end_matches(',').parse::<usize>().ok())
            .unwrap_or(0);
    }
    assert_eq!(sent, 40, "each spooled event sent by exactly one flush");
    assert_eq!(cfg.spooled(), 0);
    assert_eq!(read_stream(&nats.url(), &stream).await.len(), 40);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn bad_input_is_refused_and_nothing_is_published_or_spooled() {
    let dir = tempfile::tempdir().unwrap();
    let (prefix, stream) = (unique("pb"), unique("PB"));
    let _guard = StreamGuard {
        url: shared_nats().into(),
        stream: stream.clone(),
    };
    let cfg = HostConfig::write(dir.path(), "alice", shared_nats(), &prefix, &stream, "");
    let long_jail = "j".repeat(65);
    let huge_ip = "1".repeat(100_000);
    let cases: Vec<(Vec<&str>, &str)> = vec![
        (
            vec!["ban", "--jail", "sshd", "--ip", "999.1.1.1"],
            "invalid IP",
        ),
        (
            vec!["ban", "--jail", "sshd", "--ip", "not-an-ip"],
            "invalid IP",
        ),
        (
            vec!["ban", "--jail", "sshd", "--ip", "fe80::1%eth0"],
            "invalid IP",
        ),
        (
            vec!["ban", "--jail", "sshd", "--ip", "10.0.0.0/8"],
            "invalid IP",
        ),
        (
            vec!["ban", "--jail", "sshd", "--ip", &huge_ip],
            "invalid IP",
        ),
        (
            vec!["ban", "--jail", "", "--ip", "192.0.2.1"],
            "invalid jail",
        ),
        (
            vec!["ban", "--jail", "a.b", "--ip", "192.0.2.1"],
            "invalid jail",
        ),
        (
            vec!["ban", "--jail", "my jail", "--ip", "192.0.2.1"],
            "invalid jail",
        ),
        (
            vec!["ban", "--jail", "f2b.>", "--ip", "192.0.2.1"],
            "invalid jail",
        ),
        (
            vec!["ban", "--jail", &long_jail, "--ip", "192.0.2.1"],
            "invalid jail",
        ),
        (
            vec![
                "ban",
                "--jail",
                "sshd",
                "--ip",
                "192.0.2.1",
                "--bantime",
                "-5",
            ],
            "invalid bantime",
        ),
        (
            vec![
                "ban",
                "--jail",
                "sshd",
                "--ip",
                "192.0.2.1",
                "--time",
                "yesterday",
            ],
            "invalid time",
        ),
        (
            vec![
                "ban",
                "--jail",
                "sshd",
                "--ip",
                "192.0.2.1",
                "--restored",
                "7",
            ],
            "restored",
        ),
        (vec!["ban", "--ip", "192.0.2.1"], "--jail"),
    ];
    for (args, message) in &cases {
        let out = publish(&cfg.path, args);
        let stderr = String::from_utf8_lossy(&out.stderr);
        assert_eq!(out.status.code(), Some(2), "{args:?}: {stderr}");
        assert!(stderr.contains(message), "{args:?}: {stderr}");
    }

    let bad_key = dir.path().join("bad-key.toml");
    let text = std::fs::read_to_string(&cfg.path).unwrap();
    std::fs::write(
        &bad_key,
        text.replace("[publisher]", "[publisher]\nspool = \"/tmp\""),
    )
    .unwrap();
    let missing = dir.path().join("missing.toml");
    for (config, message) in [
        (bad_key.as_path(), "unknown field `spool`"),
        (missing.as_path(), "cannot read config file"),
        (dir.path(), "cannot read config file"),
    ] {
        let out = publish(config, &["ban", "--jail", "sshd", "--ip", "192.0.2.1"]);
        let stderr = String::from_utf8_lossy(&out.stderr);
        assert_eq!(out.status.code(), Some(2), "{stderr}");
        assert!(stderr.contains(message), "{stderr}");
    }

    assert!(read_stream(shared_nats(), &stream).await.is_empty());
    assert_eq!(cfg.spooled(), 0);
    // The same config with good input does publish: the checks above were not vacuous.
    assert!(ban(&cfg.path, "192.0.2.1").status.success());
    assert_eq!(read_stream(shared_nats(), &stream).await.len(), 1);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn restored_bans_target_jails_and_natural_expiry_are_not_published() {
    let dir = tempfile::tempdir().unwrap();
    let (prefix, stream) = (unique("pk"), unique("PK"));
    let _guard = StreamGuard {
        url: shared_nats().into(),
        stream: stream.clone(),
    };
    let cfg = HostConfig::write(
        dir.path(),
        "alice",
        shared_nats(),
        &prefix,
        &stream,
        "[subscriber]\ntarget_jail = \"shared\"\n[subscriber.jail_map]\nsshd = \"shared-ssh\"\n",
    );
    let long_ago = "1000000000";
    for args in [
        vec![
            "ban",
            "--jail",
            "sshd",
            "--ip",
            "192.0.2.1",
            "--restored",
            "1",
        ],
        vec!["ban", "--jail", "shared", "--ip", "192.0.2.1"],
        vec!["ban", "--jail", "shared-ssh", "--ip", "192.0.2.1"],
        vec![
            "unban",
            "--jail",
            "sshd",
            "--ip",
            "192.0.2.1",
            "--time",
            long_ago,
            "--bantime",
            "600",
        ],
    ] {
        let out = publish(&cfg.path, &args);
        assert!(out.status.success(), "{args:?}");
        assert!(
            String::from_utf8_lossy(&out.stderr).contains("skipped"),
            "{args:?}"
        );
    }
    assert!(read_stream(shared_nats(), &stream).await.is_empty());
    // An unban of a permanent ban, or before the ban's end, is early and is published.
    let out = publish(
        &cfg.path,
        &[
            "unban",
            "--jail",
            "sshd",
            "--ip",
            "192.0.2.1",
            "--time",
            long_ago,
            "--bantime",
            "-1",
        ],
    );
    assert!(out.status.success());
    let events = read_stream(shared_nats(), &stream).await;
    assert_eq!(events.len(), 1);
    assert_eq!(events[0].1.action, Action::Unban);
}

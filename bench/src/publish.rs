//! Publisher figures: one `shared-f2b-publish ban` process, start to exit, with NATS up and down.

use crate::report::{Report, percentiles};
use shared_f2b_tests::fail2ban::Fail2Ban;
use shared_f2b_tests::nats::NatsServer;
use shared_f2b_tests::{HostConfig, bin, unique};
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

fn time_runs(runs: usize, mut cmd: impl FnMut(usize) -> Command) -> Vec<Duration> {
    (0..runs)
        .map(|i| {
            let mut c = cmd(i);
            c.stdout(Stdio::null()).stderr(Stdio::null());
            let start = Instant::now();
            let status = c.status().expect("command runs");
            let took = start.elapsed();
            assert!(status.success(), "{c:?} failed: {status}");
            took
        })
        .collect()
}

fn ban_cmd(config: &std::path::Path, i: usize) -> Command {
    let mut c = Command::new(bin("shared-f2b-publish"));
    c.arg("--config").arg(config).args([
        "ban",
        "--jail",
        "sshd",
        "--ip",
        &format!("10.{}.{}.{}", (i >> 16) & 255, (i >> 8) & 255, i & 255),
        "--bantime",
        "600",
    ]);
    c
}

/// Runs the publisher benchmarks and adds their rows.
pub fn run(report: &mut Report, runs: usize) {
    let dir = tempfile::tempdir().expect("temp dir");
    let mut nats = NatsServer::start_in(dir.path());
    let cfg = HostConfig::write(
        dir.path(),
        "alice",
        &nats.url(),
        &unique("bp"),
        &unique("BP"),
        "",
    );

    // Warm-up: creates the stream and the page cache for the binary.
    time_runs(10, |i| ban_cmd(&cfg.path, i));
    let mut up = time_runs(runs, |i| ban_cmd(&cfg.path, i));
    let (p50, p99) = percentiles(&mut up);

    let f2b = Fail2Ban::start(&dir.path().join("f2b"), "");
    let mut ping = time_runs(30, |_| {
        let mut c = Command::new("fail2ban-client");
        c.arg("-s").arg(&f2b.socket).arg("ping");
        c
    });
    let (ping50, _) = percentiles(&mut ping);
    drop(f2b);

    nats.stop();
    let mut down = time_runs(200, |i| ban_cmd(&cfg.path, i));
    let (d50, d99) = percentiles(&mut down);
    assert_eq!(
        cfg.spooled(),
        200,
        "every run with NATS down spooled its event"
    );

    let scale = ("fail2ban-client ping p50 ms".to_string(), ping50);
    report
        .add(
            &format!("publish ban, NATS up, p50 ({runs} runs)"),
            p50,
            "ms",
            "<= 5 ms",
        )
        .reference = Some(scale.clone());
    report
        .add(
            &format!("publish ban, NATS up, p99 ({runs} runs)"),
            p99,
            "ms",
            "<= 15 ms",
        )
        .reference = Some(scale);
    report.add(
        "publish ban, NATS down -> spooled, p50 (200 runs)",
        d50,
        "ms",
        "<= 20 ms",
    );
    report.add(
        "publish ban, NATS down -> spooled, p99 (200 runs)",
        d99,
        "ms",
        "<= 20 ms",
    );
}

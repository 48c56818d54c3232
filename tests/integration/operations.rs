//! Observing the daemons: the metrics endpoints serve the documented series with the right
//! counts after a known burst, `/healthz` answers, and `status` shows it as a table.

use shared_f2b::metrics::{Sample, scrape};
use shared_f2b_tests::db::TestDb;
use shared_f2b_tests::host::Daemon;
use shared_f2b_tests::nats::{EventSender, StreamGuard, ban_event};
use shared_f2b_tests::{HostConfig, bin, free_port, shared_nats, unique, wait_for};
use std::net::SocketAddr;
use std::time::Duration;

fn total(series: &[Sample], name: &str, label: Option<&str>) -> f64 {
    series
        .iter()
        .filter(|(n, labels, _)| {
            n == name && label.is_none_or(|l| labels.iter().any(|(_, v)| v == l))
        })
        .map(|(_, _, v)| v)
        .sum()
}

async fn healthz(addr: SocketAddr) -> String {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    let mut c = tokio::net::TcpStream::connect(addr).await.unwrap();
    c.write_all(b"GET /healthz HTTP/1.0\r\n\r\n").await.unwrap();
    let mut s = String::new();
    c.read_to_string(&mut s).await.unwrap();
    s
}

/// A subscriber (bob, `log` mode) and an archiver (SQLite), each with its metrics listener.
struct Observed {
    sub_addr: SocketAddr,
    arch_addr: SocketAddr,
    bob: HostConfig,
    arch: HostConfig,
    _bob: Daemon,
    _archiver: Daemon,
    _db: TestDb,
    _guard: StreamGuard,
    prefix: String,
    stream: String,
    _dir: tempfile::TempDir,
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn metrics_count_a_known_burst_and_status_shows_it() {
    let o = a_subscriber_and_an_archiver_with_metrics();
    a_known_burst(&o).await;
    the_subscriber_counts_every_outcome(&o).await;
    the_archiver_counts_what_it_stored(&o).await;
    status_shows_the_holdings(&o).await;
}

fn a_subscriber_and_an_archiver_with_metrics() -> Observed {
    let dir = tempfile::tempdir().unwrap();
    let (prefix, stream) = (unique("om"), unique("OM"));
    let _guard = StreamGuard {
        url: shared_nats().into(),
        stream: stream.clone(),
    };
    let sub_addr: SocketAddr = format!("127.0.0.1:{}", free_port()).parse().unwrap();
    let arch_addr: SocketAddr = format!("127.0.0.1:{}", free_port()).parse().unwrap();
    let bob_dir = dir.path().join("bob");
    let bob = HostConfig::write(
        &bob_dir,
        "bob",
        shared_nats(),
        &prefix,
        &stream,
        &format!(
            "[subscriber]\napply = \"log\"\nlog_file = {:?}\nstate_dir = {:?}\nmetrics_listen = \"{sub_addr}\"\n",
            bob_dir.join("shared.log").display().to_string(),
            bob_dir.join("state").display().to_string()
        ),
    );
    let bob_daemon = Daemon::subscriber(&bob.path, &bob_dir);
    let db = TestDb::sqlite(dir.path());
    let arch = HostConfig::write(
        &dir.path().join("arch"),
        "archiver",
        shared_nats(),
        &prefix,
        &stream,
        &format!(
            "[archiver]\ndatabase_url = {:?}\nmetrics_listen = \"{arch_addr}\"\n",
            db.url
        ),
    );
    let archiver = Daemon::archiver(&arch.path, &dir.path().join("archiver.log"));
    Observed {
        sub_addr,
        arch_addr,
        bob,
        arch,
        _bob: bob_daemon,
        _archiver: archiver,
        _db: db,
        _guard,
        prefix,
        stream,
        _dir: dir,
    }
}

/// 20 bans by alice, one of bob's own, three spoofed.
async fn a_known_burst(o: &Observed) {
    let send = EventSender::connect(shared_nats(), &o.prefix, &o.stream).await;
    for i in 0..20 {
        send.send(&ban_event("alice", "sshd", &format!("198.18.5.{i}")))
            .await;
    }
    send.send(&ban_event("bob", "sshd", "198.18.6.1")).await; // bob's own
    let client = async_nats::connect(shared_nats()).await.unwrap();
    let js = async_nats::jetstream::new(client);
    let spoofed = String::from_utf8(ban_event("alice", "sshd", "198.18.6.2").encode()).unwrap();
    for _ in 0..3 {
        js.publish(
            format!("{}.ban.sshd.mallory", o.prefix),
            spoofed.clone().into(),
        )
        .await
        .unwrap()
        .await
        .unwrap();
    }
}

/// Every outcome counted (a scrape may land mid-batch, so waited for), then exactly.
async fn the_subscriber_counts_every_outcome(o: &Observed) {
    let series = wait_for(
        Duration::from_secs(30),
        "the subscriber to count the burst",
        || async {
            let s = scrape(o.sub_addr).await.ok()?;
            let done = total(&s, "shared_f2b_events_received_total", None) >= 24.0
                && total(&s, "shared_f2b_events_applied_total", None) >= 20.0
                && total(&s, "shared_f2b_events_rejected_total", None) >= 3.0
                && total(&s, "shared_f2b_events_skipped_total", None) >= 1.0;
            done.then_some(s)
        },
    )
    .await;
    assert_eq!(
        total(&series, "shared_f2b_events_received_total", None),
        24.0
    );
    assert_eq!(
        total(&series, "shared_f2b_events_applied_total", None),
        20.0
    );
    assert_eq!(
        total(
            &series,
            "shared_f2b_events_rejected_total",
            Some("spoofed_origin")
        ),
        3.0
    );
    assert_eq!(
        total(&series, "shared_f2b_events_skipped_total", Some("own")),
        1.0
    );
    assert_eq!(
        total(&series, "shared_f2b_event_latency_seconds_count", None),
        20.0
    );
    for name in [
        "shared_f2b_apply_seconds_count",
        "shared_f2b_spool_depth",
        "shared_f2b_nats_connected",
        "shared_f2b_consumer_pending",
        "shared_f2b_last_applied_timestamp_seconds",
    ] {
        assert!(series.iter().any(|(n, _, _)| n == name), "{name} missing");
    }
    assert!(healthz(o.sub_addr).await.contains(" 200 OK"));
}

async fn the_archiver_counts_what_it_stored(o: &Observed) {
    let arch_series = wait_for(
        Duration::from_secs(30),
        "the archiver to count the burst",
        || async {
            let s = scrape(o.arch_addr).await.ok()?;
            (total(&s, "shared_f2b_archived_events_total", None) >= 21.0
                && total(&s, "shared_f2b_archive_rejects_total", None) >= 3.0)
                .then_some(s)
        },
    )
    .await;
    assert_eq!(
        total(&arch_series, "shared_f2b_archived_events_total", None),
        21.0
    );
    assert_eq!(
        total(&arch_series, "shared_f2b_archive_rejects_total", None),
        3.0
    );
    assert!(
        arch_series
            .iter()
            .any(|(n, _, _)| n == "shared_f2b_db_batch_seconds_count")
    );
    assert!(healthz(o.arch_addr).await.contains(" 200 OK"));
    let health = std::process::Command::new(bin("shared-f2b-archiver"))
        .arg("--config")
        .arg(&o.arch.path)
        .arg("health")
        .output()
        .unwrap();
    assert!(
        health.status.success(),
        "the compose healthcheck command passes"
    );
}

/// The held gauges are refreshed every 5 s; status shows them as a table.
async fn status_shows_the_holdings(o: &Observed) {
    let table = wait_for(
        Duration::from_secs(30),
        "status with the holdings",
        || async {
            let out = std::process::Command::new(bin("shared-f2b-subscriber"))
                .arg("--config")
                .arg(&o.bob.path)
                .arg("status")
                .output()
                .ok()?;
            let text = String::from_utf8_lossy(&out.stdout).into_owned();
            text.contains("alice 20").then_some(text)
        },
    )
    .await;
    assert!(table.contains("connected"), "{table}");
    assert!(table.contains("addresses applied      20"), "{table}");
    assert!(table.contains("spoofed_origin 3"), "{table}");
}

//! Health that tells the truth: `/healthz` answers 503 while NATS, the database (archiver) or
//! Fail2Ban's socket (subscriber) is away and 200 once it is back, and a daemon whose
//! background task dies exits non-zero (so systemd restarts it) instead of running on without it.

use shared_f2b_tests::db::TestDb;
use shared_f2b_tests::host::{Daemon, Host, HostSpec};
use shared_f2b_tests::nats::NatsServer;
use shared_f2b_tests::{HostConfig, unique, wait_until};
use std::time::Duration;

const WAIT: Duration = Duration::from_secs(30);

/// Waits until `daemon`'s `/healthz` answers `code`; returns the body.
fn wait_health(daemon: &Daemon, code: u16, what: &str) -> String {
    let mut body = String::new();
    wait_until(WAIT, what, || match daemon.health() {
        Some((c, b)) if c == code => {
            body = b;
            true
        }
        _ => false,
    });
    body
}

#[test]
fn healthz_says_when_nats_or_fail2ban_is_away_and_when_they_are_back() {
    let dir = tempfile::tempdir().unwrap();
    let mut nats = NatsServer::start_in(dir.path());
    let (prefix, stream) = (unique("hz"), unique("HZ"));
    let db = TestDb::sqlite(dir.path());
    let arch = HostConfig::archiver(dir.path(), &nats.url(), &prefix, &stream, &db.url);
    let archiver = Daemon::archiver(&arch.path, &dir.path().join("archiver.log"));
    let mut bob = Host::new(
        dir.path(),
        &HostSpec {
            name: "bob",
            nats_url: &nats.url(),
            prefix: &prefix,
            stream: &stream,
            apply: "ban",
            subscriber_extra: "",
            shared_jail_extra: "",
        },
    );
    bob.start_subscriber();
    let sub = bob.subscriber.as_ref().unwrap();
    assert_eq!(sub.health(), Some((200, "fail2ban: ok\nnats: ok\n".into())));
    assert_eq!(
        archiver.health(),
        Some((200, "database: ok\nnats: ok\n".into()))
    );

    bob.f2b.stop();
    let body = wait_health(sub, 503, "503 while Fail2Ban is away");
    assert_eq!(body, "fail2ban: unavailable\nnats: ok\n");
    bob.f2b.restart();
    wait_health(sub, 200, "200 once Fail2Ban is back");

    nats.stop();
    assert!(wait_health(sub, 503, "503 while NATS is away").contains("nats: unavailable"));
    assert!(wait_health(&archiver, 503, "503 while NATS is away").contains("nats: unavailable"));
    nats.start();
    wait_health(sub, 200, "200 once NATS is back");
    wait_health(&archiver, 200, "the archiver's 200 once NATS is back");
}

/// A daemon whose `/metrics` + `/healthz` listener cannot start (its port is taken) exits with
/// a non-zero code and says why, instead of running on unobserved.
#[test]
fn a_daemon_whose_background_task_dies_exits_non_zero() {
    let dir = tempfile::tempdir().unwrap();
    let nats = NatsServer::start_in(dir.path());
    let taken = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let addr = taken.local_addr().unwrap();
    let (prefix, stream) = (unique("hx"), unique("HX"));
    let db = TestDb::sqlite(dir.path());
    let arch = HostConfig::write(
        dir.path(),
        "archiver",
        &nats.url(),
        &prefix,
        &stream,
        &format!(
            "[archiver]\ndatabase_url = {:?}\nmetrics_listen = \"{addr}\"\n",
            db.url
        ),
    );
    let sub_dir = dir.path().join("bob");
    let bob = HostConfig::write(
        &sub_dir,
        "bob",
        &nats.url(),
        &prefix,
        &stream,
        &format!(
            "[subscriber]\napply = \"log\"\nlog_file = {:?}\nstate_dir = {:?}\nmetrics_listen = \"{addr}\"\n",
            sub_dir.join("shared.log").display().to_string(),
            sub_dir.join("state").display().to_string()
        ),
    );
    // Also while it still waits for its database (nothing listens where it points).
    let waiting = HostConfig::write(
        &dir.path().join("waiting"),
        "archiver",
        &nats.url(),
        &prefix,
        &stream,
        &format!(
            "[archiver]\ndatabase_url = \"mysql://nobody@127.0.0.1:{}/none\"\nmetrics_listen = \"{addr}\"\n",
            shared_f2b_tests::free_port()
        ),
    );
    for (name, config) in [
        ("shared-f2b-archiver", &arch.path),
        ("shared-f2b-archiver", &waiting.path),
        ("shared-f2b-subscriber", &bob.path),
    ] {
        let log = config.with_extension("log");
        let mut daemon = Daemon::spawn(name, config, &log);
        wait_until(WAIT, &format!("{name} to exit"), || !daemon.running());
        let log = daemon.log_text();
        assert_eq!(daemon.terminate(), Some(1), "{log}");
        assert!(
            log.contains(&format!("the http task failed: cannot listen on {addr}")),
            "{name} says why:\n{log}"
        );
    }
    // The feeds' listener too.
    let feeds = HostConfig::write(
        &dir.path().join("feeds"),
        "archiver",
        &nats.url(),
        &prefix,
        &stream,
        &format!(
            "[archiver]\ndatabase_url = {:?}\nhttp_listen = \"{addr}\"\n",
            db.url
        ),
    );
    let mut daemon = Daemon::spawn(
        "shared-f2b-archiver",
        &feeds.path,
        &dir.path().join("f.log"),
    );
    wait_until(WAIT, "the archiver to exit", || !daemon.running());
    let log = daemon.log_text();
    assert_eq!(daemon.terminate(), Some(1), "{log}");
    assert!(
        log.contains(&format!("the feeds task failed: cannot listen on {addr}")),
        "{log}"
    );
    drop(taken);
}

//! `shared-f2b-subscriber`: other hosts' bans applied to the local Fail2Ban, and nothing else.

use shared_f2b::Action;
use shared_f2b_tests::db::TestDb;
use shared_f2b_tests::host::Daemon;
use shared_f2b_tests::host::{Host, HostSpec};
use shared_f2b_tests::nats::{
    EventSender, NatsServer, StreamGuard, ban_event, read_stream, unban_event,
};
use shared_f2b_tests::{HostConfig, shared_nats, unique, wait_for};
use std::path::Path;
use std::time::Duration;

const WAIT: Duration = Duration::from_secs(60);

struct Site {
    prefix: String,
    stream: String,
    url: String,
    _guard: Option<StreamGuard>,
}

impl Site {
    fn shared() -> Site {
        let stream = unique("SUB");
        Site {
            prefix: unique("sub"),
            url: shared_nats().into(),
            _guard: Some(StreamGuard {
                url: shared_nats().into(),
                stream: stream.clone(),
            }),
            stream,
        }
    }

    fn private(nats: &NatsServer) -> Site {
        Site {
            prefix: unique("sub"),
            stream: unique("SUB"),
            url: nats.url(),
            _guard: None,
        }
    }

    fn host(&self, dir: &Path, name: &str, apply: &str, sub_extra: &str, jail_extra: &str) -> Host {
        let mut host = Host::new(
            dir,
            &HostSpec {
                name,
                nats_url: &self.url,
                prefix: &self.prefix,
                stream: &self.stream,
                apply,
                subscriber_extra: sub_extra,
                shared_jail_extra: jail_extra,
            },
        );
        host.start_subscriber();
        host
    }

    /// An archiver for this site (the catch-up service), on SQLite in `dir`.
    fn archiver(&self, dir: &Path) -> Daemon {
        let db = TestDb::sqlite(dir);
        let cfg = HostConfig::archiver(
            &dir.join("archiver"),
            &self.url,
            &self.prefix,
            &self.stream,
            &db.url,
        );
        Daemon::archiver(&cfg.path, &dir.join("archiver.log"))
    }

    async fn sender(&self) -> EventSender {
        EventSender::connect(&self.url, &self.prefix, &self.stream).await
    }
}

async fn wait_banned(host: &Host, ip: &str) {
    let what = format!("{ip} banned in {}'s shared jail", host.name);
    wait_for(WAIT, &what, || async {
        host.shared_banned().iter().any(|b| b == ip).then_some(())
    })
    .await;
}

async fn wait_unbanned(host: &Host, ip: &str) {
    let what = format!("{ip} lifted in {}'s shared jail", host.name);
    wait_for(WAIT, &what, || async {
        (!host.shared_banned().iter().any(|b| b == ip)).then_some(())
    })
    .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_ban_on_alice_reaches_bob_and_charlie_and_never_echoes() {
    let dir = tempfile::tempdir().unwrap();
    let site = Site::shared();
    let alice = site.host(dir.path(), "alice", "ban", "", "");
    let bob = site.host(dir.path(), "bob", "ban", "", "");
    let charlie = site.host(dir.path(), "charlie", "ban", "", "");

    alice.fail_logins("203.0.113.5", 3);
    alice.fail_logins("2001:db8:5::5", 3);
    // Bob's own Fail2Ban bans the same address at the same moment.
    bob.fail_logins("203.0.113.5", 3);
    for ip in ["203.0.113.5", "2001:db8:5::5"] {
        wait_banned(&bob, ip).await;
        wait_banned(&charlie, ip).await;
    }
    // Alice holds 203.0.113.5 in her shared jail only because bob reported it too.
    wait_banned(&alice, "203.0.113.5").await;
    assert!(
        !alice.shared_banned().contains(&"2001:db8:5::5".to_string()),
        "no echo to alice"
    );

    let events = read_stream(&site.url, &site.stream).await;
    let mut seen: Vec<(String, String)> = events
        .iter()
        .map(|(_, e)| (e.origin.clone(), e.ip.to_string()))
        .collect();
    seen.sort();
    assert_eq!(
        seen,
        [
            ("alice".into(), "2001:db8:5::5".into()),
            ("alice".into(), "203.0.113.5".into()),
            ("bob".into(), "203.0.113.5".into()),
        ],
        "one event per origin's ban, none re-published from the shared jail"
    );
    assert!(
        events
            .iter()
            .all(|(_, e)| e.action == Action::Ban && e.jail == "login")
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn attempt_mode_honours_maxretry_and_ignoreip() {
    let dir = tempfile::tempdir().unwrap();
    let site = Site::shared();
    let charlie = site.host(
        dir.path(),
        "charlie",
        "attempt",
        "",
        "maxretry = 2\nignoreip = 198.51.100.0/24\n",
    );
    let send = site.sender().await;
    send.send(&ban_event("alice", "sshd", "203.0.113.7")).await;
    wait_for(WAIT, "one attempt counted", || async {
        let status = charlie
            .f2b
            .client(&["status", "shared"])
            .unwrap_or_default();
        status.contains("Total failed:\t1").then_some(())
    })
    .await;
    assert!(
        charlie.shared_banned().is_empty(),
        "one report is not enough with maxretry 2"
    );
    send.send(&ban_event("bob", "sshd", "203.0.113.7")).await;
    wait_banned(&charlie, "203.0.113.7").await;

    // ignoreip: two reports of an ignored address, then two of a sentinel.
    for origin in ["alice", "bob"] {
        send.send(&ban_event(origin, "sshd", "198.51.100.9")).await;
    }
    for origin in ["alice", "bob"] {
        send.send(&ban_event(origin, "sshd", "203.0.113.8")).await;
    }
    wait_banned(&charlie, "203.0.113.8").await;
    assert!(
        !charlie
            .shared_banned()
            .contains(&"198.51.100.9".to_string())
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn ban_mode_enforces_ignoreip_and_the_allowlist() {
    let dir = tempfile::tempdir().unwrap();
    let site = Site::shared();
    let bob = site.host(
        dir.path(),
        "bob",
        "ban",
        "allowlist = [\"192.0.2.0/24\", \"2001:db8:aa::/48\"]\n",
        "ignoreip = 198.51.100.0/24\n",
    );
    let send = site.sender().await;
    for ip in [
        "198.51.100.9",
        "192.0.2.33",
        "2001:db8:aa::1",
        "127.0.0.1",
        "203.0.113.9",
    ] {
        send.send(&ban_event("alice", "sshd", ip)).await;
    }
    wait_banned(&bob, "203.0.113.9").await;
    assert_eq!(
        bob.shared_banned(),
        ["203.0.113.9"],
        "only the sentinel is banned"
    );
    assert!(
        bob.subscriber
            .as_ref()
            .unwrap()
            .log_text()
            .contains("allowlisted")
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_unban_lifts_the_ban_only_when_no_other_origin_holds_it() {
    let dir = tempfile::tempdir().unwrap();
    let site = Site::shared();
    let bob = site.host(dir.path(), "bob", "ban", "", "");
    let send = site.sender().await;
    let ip = "203.0.113.20";
    send.send(&ban_event("alice", "sshd", ip)).await;
    send.send(&ban_event("charlie", "sshd", ip)).await;
    wait_banned(&bob, ip).await;
    send.send(&unban_event("alice", "sshd", ip)).await;
    send.send(&ban_event("alice", "sshd", "203.0.113.21")).await;
    wait_banned(&bob, "203.0.113.21").await;
    assert!(
        bob.shared_banned().contains(&ip.to_string()),
        "charlie still holds it"
    );
    send.send(&unban_event("charlie", "sshd", ip)).await;
    wait_unbanned(&bob, ip).await;

    // The only origin's unban lifts it.
    send.send(&unban_event("alice", "sshd", "203.0.113.21"))
        .await;
    wait_unbanned(&bob, "203.0.113.21").await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn bad_events_are_rejected_and_the_daemon_keeps_going() {
    let dir = tempfile::tempdir().unwrap();
    let site = Site::shared();
    let mut bob = site.host(dir.path(), "bob", "ban", "", "");
    let client = async_nats::connect(&site.url).await.unwrap();
    let js = async_nats::jetstream::new(client);
    // The sender creates the stream; publish raw payloads onto it.
    let sender = EventSender::connect(&site.url, &site.prefix, &site.stream).await;
    sender.create_stream().await;
    let good = ban_event("alice", "sshd", "203.0.113.30");
    let text = String::from_utf8(good.encode()).unwrap();
    let subject = |host: &str| format!("{}.ban.sshd.{host}", site.prefix);
    let bad: Vec<(String, String)> = vec![
        (
            subject("mallory"),
            text.replace("203.0.113.30", "203.0.113.31"),
        ),
        (subject("alice"), "{\"v\":1,".into()),
        (
            subject("alice"),
            text.replace("203.0.113.30", "203.0.113.300"),
        ),
        (
            subject("alice"),
            text.replace("\"v\":1", "\"v\":2")
                .replace("203.0.113.30", "203.0.113.32"),
        ),
        (
            format!("{}.ban.sshd.alice.extra", site.prefix),
            text.replace("203.0.113.30", "203.0.113.34"),
        ),
    ];
    for (subject, payload) in bad {
        js.publish(subject, payload.into())
            .await
            .unwrap()
            .await
            .unwrap();
    }
    // The stream refuses an oversize message outright (max_message_size 4 KiB).
    let oversize = text.replacen('{', &format!("{{\"pad\":\"{}\",", "x".repeat(5000)), 1);
    let ack = js.publish(subject("alice"), oversize.into()).await.unwrap();
    assert!(ack.await.is_err(), "the stream stored a 5 KB message");
    sender.send(&good).await;
    wait_banned(&bob, "203.0.113.30").await;
    assert_eq!(bob.shared_banned(), ["203.0.113.30"]);
    let sub = bob.subscriber.as_mut().unwrap();
    assert!(sub.running());
    let log = sub.log_text();
    for reason in ["spoofed_origin", "malformed", "version", "bad_subject"] {
        assert!(log.contains(reason), "rejection {reason} logged:\n{log}");
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_stopped_subscriber_catches_up_without_applying_twice() {
    let dir = tempfile::tempdir().unwrap();
    let site = Site::shared();
    // `log` mode writes one line per applied ban, so "none twice" can be counted exactly; the
    // shared jail reads those lines with the shipped filter and bans.
    let _archiver = site.archiver(dir.path());
    let mut bob = site.host(dir.path(), "bob", "log", "", "");
    let send = site.sender().await;
    send.send(&ban_event("alice", "sshd", "203.0.113.1")).await;
    wait_banned(&bob, "203.0.113.1").await;

    let code = bob.subscriber.take().unwrap().terminate();
    assert_eq!(code, Some(0), "SIGTERM is a clean stop");
    let ips: Vec<String> = (0..100).map(|i| format!("198.18.0.{i}")).collect();
    for ip in &ips {
        send.send(&ban_event("alice", "sshd", ip)).await;
    }
    bob.start_subscriber();
    wait_for(WAIT, "all 100 banned", || async {
        let banned = bob.shared_banned();
        ips.iter().all(|ip| banned.contains(ip)).then_some(())
    })
    .await;
    let lines = std::fs::read_to_string(bob.dir.join("shared.log")).unwrap();
    assert_eq!(
        lines.lines().count(),
        101,
        "each ban written once:\n{lines}"
    );
    for ip in &ips {
        assert_eq!(lines.matches(&format!("[{ip}]")).count(), 1, "{ip}");
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn nats_restarts_and_fail2ban_outages_lose_nothing() {
    let dir = tempfile::tempdir().unwrap();
    let mut nats = NatsServer::start_in(dir.path());
    let site = Site::private(&nats);
    // Events published while bob reconnects come back through the archiver's catch-up.
    let _archiver = site.archiver(dir.path());
    let bob = site.host(dir.path(), "bob", "ban", "", "");

    let first: Vec<String> = (0..50).map(|i| format!("198.18.1.{i}")).collect();
    let send = site.sender().await;
    for ip in &first {
        send.send(&ban_event("alice", "sshd", ip)).await;
    }
    nats.stop();
    nats.start();
    let second: Vec<String> = (0..50).map(|i| format!("198.18.2.{i}")).collect();
    let send = site.sender().await;
    for ip in &second {
        send.send(&ban_event("alice", "sshd", ip)).await;
    }
    wait_for(WAIT, "all 100 banned across the NATS restart", || async {
        let banned = bob.shared_banned();
        first
            .iter()
            .chain(&second)
            .all(|ip| banned.contains(ip))
            .then_some(())
    })
    .await;

    // Fail2Ban away while events arrive: they are applied once it is back.
    bob.f2b.stop();
    let third: Vec<String> = (0..50).map(|i| format!("198.18.3.{i}")).collect();
    for ip in &third {
        send.send(&ban_event("alice", "sshd", ip)).await;
    }
    bob.f2b.restart();
    wait_for(WAIT, "all 50 banned after Fail2Ban returned", || async {
        let banned = bob.shared_banned();
        third.iter().all(|ip| banned.contains(ip)).then_some(())
    })
    .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_flooding_or_untrusted_origin_is_contained() {
    let dir = tempfile::tempdir().unwrap();
    let site = Site::shared();
    let bob = site.host(
        dir.path(),
        "bob",
        "ban",
        "max_bans_per_minute = 5\ntrusted_origins = [\"alice\", \"mallory\"]\n",
        "",
    );
    let send = site.sender().await;
    for i in 0..20 {
        send.send(&ban_event("mallory", "sshd", &format!("198.18.9.{i}")))
            .await;
    }
    send.send(&ban_event("eve", "sshd", "203.0.113.66")).await;
    send.send(&ban_event("alice", "sshd", "203.0.113.65")).await;
    wait_banned(&bob, "203.0.113.65").await;
    let banned = bob.shared_banned();
    let mallory = banned
        .iter()
        .filter(|ip| ip.starts_with("198.18.9."))
        .count();
    assert_eq!(mallory, 5, "mallory is cut at her rate: {banned:?}");
    assert!(
        !banned.contains(&"203.0.113.66".to_string()),
        "eve is not trusted"
    );
    let log = bob.subscriber.as_ref().unwrap().log_text();
    assert!(
        log.contains("rate_limited") && log.contains("untrusted_origin"),
        "{log}"
    );
}

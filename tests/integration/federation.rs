//! Sites sharing with sites (`deploy/federation/` as shipped: a hub and sites a, b, c, each its
//! own nats-server, archiver and operator key; real Fail2Ban hosts that sign their events).

use futures::StreamExt;
use shared_f2b::event::{Action, Event, parse_ip};
use shared_f2b::signing::Signer;
use shared_f2b_tests::federation::{Federation, publish_as_admin};
use shared_f2b_tests::host::Host;
use shared_f2b_tests::site;
use shared_f2b_tests::wait_for;
use std::time::{Duration, SystemTime};

const WAIT: Duration = Duration::from_secs(20);

fn holds(host: &Host, ip: &str) -> bool {
    host.f2b.banned("shared").iter().any(|b| b == ip)
}

async fn wait_held(host: &Host, ip: &str) {
    wait_for(WAIT, &format!("{ip} banned at {}", host.name), || async {
        holds(host, ip).then_some(())
    })
    .await;
}

fn ban(host: &Host, ip: &str) {
    let out = host.config.publish(&["ban", "--jail", "sshd", "--ip", ip]);
    assert!(
        out.status.success(),
        "{} could not publish: {}",
        host.name,
        String::from_utf8_lossy(&out.stderr)
    );
}

fn skipped(host: &Host, reason: &str) -> f64 {
    let sub = host.subscriber.as_ref().unwrap();
    sub.metric(&format!(
        "shared_f2b_events_skipped_total{{reason=\"{reason}\"}}"
    )) + sub.metric(&format!(
        "shared_f2b_events_rejected_total{{reason=\"{reason}\"}}"
    ))
}

/// Every host of every site has handled `ip`'s ban: a marker that what was sent before it
/// has been seen wherever it goes.
async fn barrier(from: &Host, to: &[&Host], ip: &str) {
    ban(from, ip);
    for host in to {
        wait_held(host, ip).await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_ban_at_one_site_reaches_the_others_once_and_min_sites_waits_for_a_second_site() {
    let dir = tempfile::tempdir().unwrap();
    let fed = Federation::start(dir.path());
    let alice = fed.host("a", "alice", "").await;
    let anna = fed.host("a", "anna", "").await;
    let bob = fed.host("b", "bob", "").await;
    let charlie = fed.host("c", "charlie", "").await;
    let carol = fed.host("c", "carol", "min_sites = 2").await;

    ban(&alice, "198.51.100.1");
    for host in [&anna, &bob, &charlie] {
        wait_held(host, "198.51.100.1").await;
    }
    // Not echoed back to a (its own, and what b and c relayed is theirs to keep), and carol
    // waits for a second site.
    barrier(&bob, &[&anna, &charlie], "198.51.100.200").await;
    assert!(!holds(&alice, "198.51.100.1"), "alice got her own ban back");
    assert!(
        !holds(&carol, "198.51.100.1"),
        "carol applied one site's report"
    );
    assert!(skipped(&carol, "awaiting_sites") >= 1.0);
    // ... which b gives her.
    ban(&bob, "198.51.100.1");
    wait_held(&carol, "198.51.100.1").await;

    // C's archive has a's event once, as alice@a; c's stream holds it once.
    let c = fed.site("c");
    let out = std::process::Command::new(shared_f2b_tests::bin("shared-f2b-archiver"))
        .arg("--config")
        .arg(&c.archiver_config.path)
        .args(["history", "--ip", "198.51.100.1"])
        .output()
        .unwrap();
    let history = String::from_utf8_lossy(&out.stdout);
    assert!(out.status.success(), "{history}");
    assert_eq!(
        history.matches("alice@a").count(),
        1,
        "alice's ban once in c's history: {history}"
    );
    assert_eq!(history.matches("bob@b").count(), 1, "{history}");
    let stored =
        shared_f2b_tests::nats::read_stream_as(&c.url(), "admin", "change-me-admin", site::STREAM)
            .await;
    let relayed = stored
        .iter()
        .filter(|(subject, e)| {
            subject.starts_with("f2b.remote.a.") && e.ip.to_string() == "198.51.100.1"
        })
        .count();
    assert_eq!(relayed, 1, "c's stream holds a's event once");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_site_cut_off_keeps_sharing_inside_and_gets_everything_once_on_heal() {
    let dir = tempfile::tempdir().unwrap();
    let mut fed = Federation::start(dir.path());
    let alice = fed.host("a", "alice", "").await;
    let bob = fed.host("b", "bob", "").await;
    let charlie = fed.host("c", "charlie", "").await;
    let carol = fed.host("c", "carol", "").await;
    barrier(&alice, &[&bob, &charlie, &carol], "203.0.113.250").await;

    fed.site("c").link.cut();
    let missed: Vec<String> = (1..=20).map(|n| format!("203.0.113.{n}")).collect();
    for (n, ip) in missed.iter().enumerate() {
        ban(if n % 2 == 0 { &alice } else { &bob }, ip);
    }
    // Inside c, sharing goes on.
    barrier(&charlie, &[&carol], "192.0.2.50").await;
    for ip in &missed {
        assert!(!holds(&carol, ip), "{ip} crossed a cut link");
    }
    fed.site("c").link.heal();
    for ip in &missed {
        wait_held(&carol, ip).await;
        wait_held(&charlie, ip).await;
    }
    // Exactly once in c's stream.
    let c = fed.site("c");
    let stored =
        shared_f2b_tests::nats::read_stream_as(&c.url(), "admin", "change-me-admin", site::STREAM)
            .await;
    for ip in &missed {
        let copies = stored
            .iter()
            .filter(|(s, e)| s.starts_with("f2b.remote.") && &e.ip.to_string() == ip)
            .count();
        assert_eq!(copies, 1, "{ip} stored {copies} times at c");
    }

    // The hub restarts: the same.
    fed.hub.stop();
    ban(&alice, "203.0.113.100");
    tokio::time::sleep(Duration::from_millis(500)).await;
    fed.hub.start();
    wait_held(&carol, "203.0.113.100").await;
    wait_held(&bob, "203.0.113.100").await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_compromised_site_cannot_speak_for_another() {
    let dir = tempfile::tempdir().unwrap();
    let fed = Federation::start(dir.path());
    let alice = fed.host("a", "alice", "").await;
    let bob = fed.host("b", "bob", "").await;
    let charlie = fed.host("c", "charlie", "").await;
    barrier(&alice, &[&bob, &charlie], "198.51.100.250").await;
    // A real, signed event of alice's, as b received it.
    let b = fed.site("b");
    let a_events =
        shared_f2b_tests::nats::read_stream_as(&b.url(), "admin", "change-me-admin", site::STREAM)
            .await;
    let (_, real) = a_events
        .iter()
        .find(|(s, _)| s.starts_with("f2b.remote.a.ban."))
        .expect("b relayed alice's ban")
        .clone();
    let mut real = real;
    real.site = None;

    // b's administrator, a stock client with every right in b's account.
    let admin = site::client(&b.url(), "admin").await;
    let forged = |ip: &str| {
        let mut e = real.clone();
        e.ip = parse_ip(ip).unwrap();
        e.encode()
    };
    // As a's live events, through the hub (the hub labels them b's, or drops them).
    for subject in [
        "site.a.f2b.live.ban.sshd.alice",
        "f2b.live.ban.sshd.alice",
        "f2b.live.remote.a.ban.sshd.alice",
    ] {
        let mut headers = async_nats::HeaderMap::new();
        headers.insert("Nats-Stream", "F2B_EVENTS");
        headers.insert("Nats-Sequence", "1000000");
        headers.insert("Nats-Subject", "f2b.ban.sshd.alice");
        admin
            .publish_with_headers(subject.to_owned(), headers, forged("192.0.2.66").into())
            .await
            .unwrap();
    }
    admin.flush().await.unwrap();
    // Into b's own stream: alice's real event with another address (the signature breaks),
    // the same unchanged as b's own host's (alice's key is not b's), and unsigned.
    publish_as_admin(&b.url(), "f2b.ban.sshd.alice", forged("192.0.2.67")).await;
    publish_as_admin(&b.url(), "f2b.ban.sshd.alice", real.encode()).await;
    let unsigned = Event::new(
        Action::Ban,
        "bert",
        "sshd",
        parse_ip("192.0.2.68").unwrap(),
        SystemTime::now(),
        600,
        1,
    )
    .unwrap();
    publish_as_admin(&b.url(), "f2b.ban.sshd.bert", unsigned.encode()).await;
    // A key record for alice's key made by a stranger (not b's operator), and one by b's
    // operator for a host of a: only b's own keyring gets the latter.
    let stranger = dir.path().join("stranger.seed");
    std::fs::write(&stranger, Signer::generate().seed()).unwrap();
    let mut record = shared_f2b::control::Control::key_record(
        "admin",
        "alice",
        real.key.as_deref().unwrap(),
        SystemTime::now() - Duration::from_secs(3600),
        None,
        "a forged enrolment",
    )
    .unwrap();
    Signer::from_file(&stranger)
        .unwrap()
        .sign_control(&mut record);
    publish_as_admin(&b.url(), "f2b.control.key.admin", record.encode()).await;
    // An order of b's operators (c does not accept them).
    let mut pardon = shared_f2b::control::Control::pardon(
        "admin",
        shared_f2b::control::parse_net("198.51.100.250").unwrap(),
        None,
        "b lifts a's ban everywhere",
    )
    .unwrap();
    Signer::from_file(&b.operator.0)
        .unwrap()
        .sign_control(&mut pardon);
    publish_as_admin(&b.url(), "f2b.control.pardon.admin", pardon.encode()).await;

    barrier(&bob, &[&charlie], "198.51.100.251").await;
    barrier(&alice, &[&charlie], "198.51.100.252").await;
    for ip in ["192.0.2.66", "192.0.2.67", "192.0.2.68"] {
        assert!(!holds(&charlie, ip), "{ip} applied at c");
    }
    assert!(
        holds(&charlie, "198.51.100.250"),
        "b's operator lifted a's ban at c"
    );
    // c's relay refused them and stored none.
    let c = fed.site("c");
    let stored =
        shared_f2b_tests::nats::read_stream_as(&c.url(), "admin", "change-me-admin", site::STREAM)
            .await;
    for (subject, e) in &stored {
        let ip = e.ip.to_string();
        assert!(
            !["192.0.2.66", "192.0.2.67", "192.0.2.68"].contains(&ip.as_str()),
            "{subject} {ip} stored at c"
        );
        assert!(
            !(subject.starts_with("f2b.remote.b.") && e.origin == "alice"),
            "alice's event stored as b's: {subject}"
        );
    }
    let log = c.archiver.as_ref().unwrap().log_text();
    assert!(log.contains("refused"), "c's relay says what it refused");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_compromised_hub_reaches_neither_a_sites_hosts_nor_its_stream() {
    let dir = tempfile::tempdir().unwrap();
    // Whoever took the hub over gave themselves a user in site a's account there.
    let fed = Federation::with_hub(dir.path(), |hub| {
        hub.replacen(
            "{ user: leaf-a,",
            "{ user: mallory, password: \"change-me-mallory\" }\n      { user: leaf-a,",
            1,
        )
    });
    let alice = fed.host("a", "alice", "").await;
    let anna = fed.host("a", "anna", "").await;
    let charlie = fed.host("c", "charlie", "").await;
    barrier(&alice, &[&anna, &charlie], "198.51.100.240").await;
    let a = fed.site("a");
    let before =
        shared_f2b_tests::nats::read_stream_as(&a.url(), "admin", "change-me-admin", site::STREAM)
            .await
            .len();
    // A stock client of anna's kind, to see what reaches a's hosts at all.
    let watcher = site::client(&a.url(), "anna").await;
    let mut seen = watcher.subscribe("f2b.live.>").await.unwrap();

    let mallory = async_nats::ConnectOptions::with_user_and_password(
        "mallory".into(),
        "change-me-mallory".into(),
    )
    .connect(fed.hub.url())
    .await
    .unwrap();
    let forged = Event::new(
        Action::Ban,
        "alice",
        "sshd",
        parse_ip("192.0.2.77").unwrap(),
        SystemTime::now(),
        600,
        1,
    )
    .unwrap()
    .encode();
    for subject in [
        "f2b.live.ban.sshd.alice",
        "f2b.ban.sshd.alice",
        "f2b.remote.b.ban.sshd.bob",
        "site.b.f2b.live.ban.sshd.bob",
    ] {
        let mut headers = async_nats::HeaderMap::new();
        headers.insert("Nats-Stream", "F2B_EVENTS");
        headers.insert("Nats-Sequence", "999999");
        headers.insert("Nats-Subject", "f2b.ban.sshd.alice");
        mallory
            .publish_with_headers(subject.to_owned(), headers, forged.clone().into())
            .await
            .unwrap();
    }
    for api in [
        "$JS.a.API.STREAM.PURGE.F2B_EVENTS",
        "$JS.API.STREAM.PURGE.F2B_EVENTS",
        "$JS.a.API.STREAM.DELETE.F2B_EVENTS",
    ] {
        let answer = tokio::time::timeout(
            Duration::from_secs(2),
            mallory.request(api.to_owned(), "{}".into()),
        )
        .await;
        assert!(!matches!(answer, Ok(Ok(_))), "{api} answered: {answer:?}");
    }
    mallory.flush().await.unwrap();
    barrier(&alice, &[&anna, &charlie], "198.51.100.241").await;
    // Nothing of mallory's reached a's hosts' subject, a's stream or anyone's Fail2Ban.
    while let Ok(Some(msg)) = tokio::time::timeout(Duration::from_millis(200), seen.next()).await {
        assert!(
            !String::from_utf8_lossy(&msg.payload).contains("192.0.2.77"),
            "a host of a received the hub's message on {}",
            msg.subject
        );
    }
    for host in [&alice, &anna, &charlie] {
        assert!(!holds(host, "192.0.2.77"), "applied at {}", host.name);
    }
    let after =
        shared_f2b_tests::nats::read_stream_as(&a.url(), "admin", "change-me-admin", site::STREAM)
            .await;
    assert!(
        after.len() > before && after.iter().all(|(_, e)| e.ip.to_string() != "192.0.2.77"),
        "a's stream is whole and holds nothing of the hub's"
    );
}

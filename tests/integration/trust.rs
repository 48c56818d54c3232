//! The shipped site config (`deploy/nats-server.conf`) on a real nats-server, attacked by a
//! compromised host with its own credentials and a stock NATS client: every attack is refused or
//! harmless, and afterwards the site still shares and the stream and the archive hold every
//! genuine event exactly once.

use async_nats::jetstream;
use shared_f2b::Event;
use shared_f2b_tests::db::TestDb;
use shared_f2b_tests::host::Host;
use shared_f2b_tests::nats::{ban_event, read_stream_as, unban_event};
use shared_f2b_tests::site::{self, STREAM, client, config};
use shared_f2b_tests::wait_for;
use std::collections::BTreeMap;
use std::path::Path;
use std::time::Duration;

const WAIT: Duration = Duration::from_secs(60);

fn host(dir: &Path, name: &str, url: &str, extra: &str) -> Host {
    site::host(dir, name, url, "ban", extra, true)
}

async fn wait_banned(host: &Host, ip: &str) {
    wait_for(WAIT, &format!("{ip} banned on {}", host.name), || async {
        host.shared_banned().iter().any(|b| b == ip).then_some(())
    })
    .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn each_role_works_within_its_permissions_and_a_spoofing_host_is_refused() {
    let dir = tempfile::tempdir().unwrap();
    let nats = site::nats(dir.path());
    let url = nats.url();
    let db = TestDb::sqlite(dir.path());
    // A stream as an earlier release made it (no limits, no live re-publishing): the archiver
    // brings it up to date at start.
    let admin_js = jetstream::new(client(&url, "admin").await);
    admin_js
        .create_stream(jetstream::stream::Config {
            name: STREAM.into(),
            subjects: vec!["f2b.ban.>".into(), "f2b.unban.>".into()],
            max_age: Duration::from_secs(3600),
            ..Default::default()
        })
        .await
        .unwrap();
    let mut first = Some(site::archiver(dir.path(), &url, &db));
    let config_now = || async {
        admin_js
            .get_stream(STREAM)
            .await
            .unwrap()
            .cached_info()
            .config
            .clone()
    };
    let updated = config_now().await;
    assert_eq!(updated.max_message_size, 4096, "limits updated");
    if updated.republish.is_none() {
        // nats-server 2.9 cannot add RePublish to an existing stream: the archiver says how to
        // get it, and following that (delete the stream, start the archiver) works.
        let log = first.as_ref().unwrap().log_text();
        assert!(log.contains("cannot add live re-publishing"), "{log}");
        first.take().unwrap().terminate();
        admin_js.delete_stream(STREAM).await.unwrap();
        first = Some(site::archiver(dir.path(), &url, &db));
        let created = config_now().await;
        assert!(created.republish.is_some(), "{created:?}");
    }
    let _archiver = first;
    let bob = host(dir.path(), "bob", &url, "");

    // Alice publishes as herself: the JetStream ack comes back across the accounts.
    let alice = config(dir.path(), "alice", "alice", &url, "");
    let out = alice.publish(&["ban", "--jail", "sshd", "--ip", "203.0.113.7"]);
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert_eq!(alice.spooled(), 0, "acked, not spooled");

    // Bob, logged in as bob, claims to be alice: the server refuses, nothing is spooled.
    let spoof = config(dir.path(), "alice", "bob", &url, "");
    let out = spoof.publish(&["ban", "--jail", "sshd", "--ip", "198.51.100.66"]);
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(1), "{stderr}");
    assert!(
        stderr.contains("NATS refused") && stderr.to_lowercase().contains("permissions violation"),
        "{stderr}"
    );
    assert_eq!(spoof.spooled(), 0, "a refused event is not spooled");

    let events = read_stream_as(&url, "admin", "change-me-admin", STREAM).await;
    let ips: Vec<String> = events.iter().map(|(_, e)| e.ip.to_string()).collect();
    assert_eq!(
        ips,
        ["203.0.113.7"],
        "only alice's own event is on the stream"
    );

    // Bob's subscriber applied it from the live subject; the archiver stored it.
    wait_banned(&bob, "203.0.113.7").await;
    wait_for(WAIT, "the archiver stores it", || async {
        (db.rows().await == 1).then_some(())
    })
    .await;

    // A new host (charlie) backfills through the catch-up service across the accounts.
    let charlie = host(dir.path(), "charlie", &url, "");
    wait_banned(&charlie, "203.0.113.7").await;
}

/// What bob's stock client tries, each refused by the server or harmless.
async fn attack(url: &str, alice_ban: &Event) {
    let bob = client(url, "bob").await;
    let own =
        |e: &Event| shared_f2b::subject::event_subject("f2b", e.action, &e.jail, "bob").unwrap();
    let bob_ban = ban_event("bob", "sshd", "198.51.100.1");

    // 1. A JetStream publish whose ack lands on the JetStream API, or on another host's subject.
    for reply in [
        "$JS.API.STREAM.PURGE.F2B_EVENTS",
        "$JS.API.STREAM.DELETE.F2B_EVENTS",
        "$JS.API.CONSUMER.DELETE.F2B_EVENTS.archiver",
        "f2b.ban.sshd.alice",
        "f2b.live.ban.sshd.alice",
        "_INBOX_alice.stolen",
    ] {
        let e = ban_event("bob", "sshd", "198.51.100.2");
        bob.publish_with_reply(own(&e), reply.to_string(), e.encode().into())
            .await
            .unwrap();
    }
    // 2. Catch-up requests whose answer would land on the API or an event subject.
    let req = br#"{"kind":"since","jails":["*"],"after":0,"limit":2000}"#;
    for reply in [
        "$JS.API.STREAM.PURGE.F2B_EVENTS",
        "$JS.API.STREAM.DELETE.F2B_EVENTS",
        "f2b.ban.sshd.alice",
        "f2b.unban.sshd.alice",
    ] {
        bob.publish_with_reply("f2b.replay", reply.to_string(), req.to_vec().into())
            .await
            .unwrap();
    }
    // 3. The JetStream API itself: info, purge, consumer create/update/delete, raw reads.
    let js = jetstream::new(bob.clone());
    assert!(
        js.query_account().await.is_err(),
        "bob has no JetStream API"
    );
    for (subject, body) in [
        ("$JS.API.STREAM.PURGE.F2B_EVENTS", "{}".to_string()),
        ("$JS.API.STREAM.DELETE.F2B_EVENTS", "{}".to_string()),
        (
            "$JS.API.CONSUMER.DURABLE.CREATE.F2B_EVENTS.archiver",
            r#"{"stream_name":"F2B_EVENTS","config":{"durable_name":"archiver","ack_policy":"explicit","filter_subject":"f2b.nothing","headers_only":true,"max_deliver":1}}"#.to_string(),
        ),
        ("$JS.API.CONSUMER.DELETE.F2B_EVENTS.archiver", "{}".to_string()),
        (
            "$JS.API.CONSUMER.CREATE.F2B_EVENTS",
            r#"{"stream_name":"F2B_EVENTS","config":{"ack_policy":"none"}}"#.to_string(),
        ),
        ("$JS.API.STREAM.MSG.GET.F2B_EVENTS", r#"{"seq":1}"#.to_string()),
    ] {
        let answer = bob.request(subject.to_string(), body.into()).await;
        assert!(answer.is_err(), "{subject} answered bob: {answer:?}");
    }
    // 4. Speaking for alice: through forged stream headers on his own subject (the server
    //    appends the real ones), and directly.
    let mut forged = async_nats::HeaderMap::new();
    forged.insert("Nats-Subject", "f2b.ban.sshd.alice");
    forged.insert("Nats-Sequence", "999999");
    forged.insert("Nats-Stream", "F2B_EVENTS");
    let as_alice = ban_event("alice", "sshd", "203.0.113.66");
    js.publish_with_headers(own(&as_alice), forged, as_alice.encode().into())
        .await
        .unwrap()
        .await
        .unwrap();
    bob.publish(
        own(alice_ban).replace(".bob", ".alice"),
        alice_ban.encode().into(),
    )
    .await
    .unwrap();
    let lift = unban_event("alice", "sshd", &alice_ban.ip.to_string());
    bob.publish("f2b.unban.sshd.alice".to_string(), lift.encode().into())
        .await
        .unwrap();
    // 5. Unbans of bans bob never placed: alice's, and a manual one.
    for ip in [alice_ban.ip.to_string(), "192.0.2.50".to_string()] {
        let e = unban_event("bob", "sshd", &ip);
        let js_bob = jetstream::new(bob.clone());
        js_bob
            .publish(own(&e), e.encode().into())
            .await
            .unwrap()
            .await
            .unwrap();
    }
    // 6. Oversize, a control-character jail token, and a flood of bans and unbans.
    let big = vec![b'x'; 5000];
    if let Ok(ack) = js.publish(own(&bob_ban), big.into()).await {
        assert!(ack.await.is_err(), "a 5,000-byte message was stored");
    }
    let hostile = "f2b.ban.ss\u{1b}[31mhd.bob".to_string();
    let _ = js
        .publish(
            hostile,
            ban_event("bob", "sshd", "198.51.100.3").encode().into(),
        )
        .await
        .unwrap()
        .await;
    let mut acks = Vec::new();
    for i in 0..200 {
        let e = ban_event("bob", "flood", &format!("198.18.{}.{}", i / 200, i % 200));
        acks.push(js.publish(own(&e), e.encode().into()).await.unwrap());
        let u = unban_event("bob", "flood", "198.18.9.9");
        acks.push(js.publish(own(&u), u.encode().into()).await.unwrap());
    }
    for ack in acks {
        let _ = ack.await;
    }
    bob.flush().await.unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_compromised_host_cannot_wipe_blind_replay_or_speak_for_others() {
    let dir = tempfile::tempdir().unwrap();
    let nats = site::nats(dir.path());
    let url = nats.url();
    let db = TestDb::sqlite(dir.path());
    let _archiver = site::archiver(dir.path(), &url, &db);
    let charlie = host(dir.path(), "charlie", &url, "max_bans_per_minute = 50\n");
    let alice = config(dir.path(), "alice", "alice", &url, "");

    // Genuine traffic: alice bans two addresses and lifts one; the local admin of charlie bans
    // one by hand.
    for args in [
        ["ban", "--jail", "sshd", "--ip", "203.0.113.10"],
        ["ban", "--jail", "sshd", "--ip", "203.0.113.11"],
        ["unban", "--jail", "sshd", "--ip", "203.0.113.11"],
    ] {
        let out = alice.publish(&args);
        assert!(
            out.status.success(),
            "{}",
            String::from_utf8_lossy(&out.stderr)
        );
    }
    charlie
        .f2b
        .client(&["set", "shared", "banip", "192.0.2.50"])
        .unwrap();
    wait_banned(&charlie, "203.0.113.10").await;
    let admin = client(&url, "admin").await;
    let admin_js = jetstream::new(admin.clone());
    let genuine = read_stream_as(&url, "admin", "change-me-admin", STREAM).await;
    assert_eq!(genuine.len(), 3);
    let alice_ban = genuine[0].1.clone();

    attack(&url, &alice_ban).await;

    // The stream and the archiver's consumer are intact and as they must be.
    let mut stream = admin_js
        .get_stream(STREAM)
        .await
        .expect("the stream survives");
    let info = stream.info().await.unwrap().clone();
    assert!(info.state.messages >= 3, "{:?}", info.state);
    assert_eq!(info.config.max_message_size, 4096);
    let consumer = stream
        .consumer_info("archiver")
        .await
        .expect("the archiver consumer survives");
    assert_eq!(consumer.config.filter_subject, "");
    assert!(!consumer.config.headers_only);
    assert!(consumer.config.max_deliver <= 0);

    // The site still shares: alice's next ban reaches charlie, and is archived.
    let out = alice.publish(&["ban", "--jail", "sshd", "--ip", "203.0.113.12"]);
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    wait_banned(&charlie, "203.0.113.12").await;

    // Nothing was stored under alice's name but her four events, each once, and nothing
    // oversize.
    let stored = read_stream_raw(&admin_js).await;
    let mut alice_ids: BTreeMap<String, usize> = BTreeMap::new();
    for (subject, payload) in &stored {
        if subject.ends_with(".alice") {
            let e = Event::decode(payload).expect("only alice's genuine events");
            *alice_ids.entry(e.id.to_string()).or_default() += 1;
        }
    }
    assert_eq!(alice_ids.len(), 4, "{stored:?}");
    assert!(alice_ids.values().all(|n| *n == 1), "{alice_ids:?}");
    assert!(
        !stored.iter().any(|(_, p)| p.len() > 4096),
        "no oversize message stored"
    );
    wait_for(
        WAIT,
        "the archive holds every genuine event once",
        || async {
            let rows = db.event_ids_of("alice").await;
            (rows.len() == 4).then_some(rows)
        },
    )
    .await;

    // On charlie: alice's ban holds (bob's unban and the forged one did nothing), the manual ban
    // holds, the lifted ban stays lifted, bob's flood was cut at his rate.
    let banned = charlie.shared_banned();
    for ip in ["203.0.113.10", "203.0.113.12", "192.0.2.50"] {
        assert!(banned.iter().any(|b| b == ip), "{ip} in {banned:?}");
    }
    assert!(!banned.iter().any(|b| b == "203.0.113.11"), "{banned:?}");
    assert!(
        !banned.iter().any(|b| b == "203.0.113.66"),
        "forged headers spoke for alice"
    );
    let flood = banned.iter().filter(|b| b.starts_with("198.18.")).count();
    assert!((1..=50).contains(&flood), "{flood} of bob's flood applied");
    let log = std::fs::read(charlie.dir.join("subscriber.log")).unwrap();
    assert!(
        !log.contains(&0x1b),
        "a control character reached the log raw"
    );
    let log = String::from_utf8_lossy(&log);
    assert!(log.contains("rate_limited"), "{log}");
    assert!(log.contains("spoofed_origin"), "{log}");
}

/// Every stored message as (subject, payload), read as the admin.
async fn read_stream_raw(js: &jetstream::Context) -> Vec<(String, Vec<u8>)> {
    let mut stream = js.get_stream(STREAM).await.unwrap();
    let info = stream.info().await.unwrap().state.clone();
    let mut out = Vec::new();
    for seq in info.first_sequence..=info.last_sequence {
        if let Ok(msg) = stream.get_raw_message(seq).await {
            out.push((msg.subject.to_string(), msg.payload.to_vec()));
        }
    }
    out
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn live_events_do_not_wait_for_an_archiver_that_does_not_answer() {
    let dir = tempfile::tempdir().unwrap();
    let nats = site::nats(dir.path());
    let url = nats.url();
    // The admin creates the stream; no archiver runs. Across the accounts a catch-up request
    // then gets no answer at all on 2.9 (the import always has interest): it times out.
    let admin = client(&url, "admin").await;
    let site = shared_f2b::config::NatsConfig {
        servers: vec![url.clone()],
        stream_max_age: Duration::from_secs(3600),
        ..Default::default()
    };
    jetstream::new(admin)
        .get_or_create_stream(shared_f2b::nats::stream_config(&site))
        .await
        .unwrap();
    let mut charlie = site::host(dir.path(), "charlie", &url, "ban", "", false);
    charlie.start_subscriber_catching_up();
    let alice = config(dir.path(), "alice", "alice", &url, "");
    let out = alice.publish(&["ban", "--jail", "sshd", "--ip", "203.0.113.20"]);
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    wait_banned(&charlie, "203.0.113.20").await;
    let sub = charlie.subscriber.as_ref().unwrap();
    let log = wait_for(WAIT, "the catch-up to give up once", || async {
        let log = sub.log_text();
        log.contains("cannot catch up now").then_some(log)
    })
    .await;
    let applied = log.find("batch applied").expect("applied");
    let gave_up = log.find("cannot catch up now").unwrap();
    if log[gave_up..]
        .lines()
        .next()
        .unwrap()
        .contains("no archiver answers")
    {
        // Newer servers answer "no responders" across the import at once: nothing to wait for.
        return;
    }
    assert!(
        applied < gave_up,
        "the live ban waited for the catch-up to time out:\n{log}"
    );
}

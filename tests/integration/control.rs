//! Operators' control events on the shipped site config (real nats-server, real Fail2Ban in
//! every host, an archiver): a pardon lifts a ban everywhere and keeps it lifted until it ends,
//! an allow entry is never banned, an operator's ban goes everywhere with its bantime, revokes,
//! restarts, catch-up and backfill; a host's own control event is refused. Then the prefix and
//! escalation rules on real jails (the banned ticket shows the CIDR and the bantime), and the
//! red team's attacks on all of it with a host's own credentials.

use shared_f2b_tests::db::TestDb;
use shared_f2b_tests::host::Host;
use shared_f2b_tests::site::{self, Admin, STREAM, client, config};
use shared_f2b_tests::{HostConfig, bin, wait_for};
use std::net::IpAddr;
use std::path::Path;
use std::process::Command;
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

const WAIT: Duration = Duration::from_secs(30);

/// A publisher on a host without a subscriber (so without the operators' orders): its bans
/// reach the stream whatever the orders say, and the subscribers must hold the line.
fn bare_publisher(dir: &Path, name: &str, url: &str) -> HostConfig {
    let state = dir.join(format!("{name}-no-subscriber"));
    config(
        dir,
        name,
        name,
        url,
        &format!(
            "[subscriber]\nstate_dir = {:?}\n",
            state.display().to_string()
        ),
    )
}

fn publish(cfg: &HostConfig, args: &[&str]) {
    let out = cfg.publish(args);
    assert!(
        out.status.success(),
        "publish {args:?}: {}",
        String::from_utf8_lossy(&out.stderr)
    );
}

fn ban(cfg: &HostConfig, ip: &str) {
    publish(cfg, &["ban", "--jail", "sshd", "--ip", ip]);
}

/// A ban that asks for `bantime` seconds.
fn ban_for(cfg: &HostConfig, ip: &str, bantime: u32) {
    publish(
        cfg,
        &[
            "ban",
            "--jail",
            "sshd",
            "--ip",
            ip,
            "--bantime",
            &bantime.to_string(),
        ],
    );
}

fn holds(host: &Host, jail: &str, ip: &str) -> bool {
    host.f2b.banned(jail).iter().any(|b| b == ip)
}

async fn wait_held(host: &Host, jail: &str, ip: &str) {
    wait_for(
        WAIT,
        &format!("{ip} banned in {} {jail}", host.name),
        || async { holds(host, jail, ip).then_some(()) },
    )
    .await;
}

/// The `+ <bantime>` Fail2Ban shows for `ip`'s ticket in `jail`.
fn ticket_bantime(host: &Host, jail: &str, ip: &str) -> Option<u64> {
    let text = host.f2b.client(&["get", jail, "banip", "--with-time"])?;
    let line = text
        .lines()
        .find(|l| l.split_whitespace().next() == Some(ip))?;
    line.split('+')
        .nth(1)?
        .split_whitespace()
        .next()?
        .parse()
        .ok()
}

/// Everything stored before it has reached `host`'s subscriber: a fresh ban published by `via`
/// (live delivery keeps the stream's order) is applied there.
async fn barrier(host: &Host, via: &HostConfig, ip: &str) {
    ban(via, ip);
    wait_held(host, "shared", ip).await;
}

/// The tickets in `jail` (addresses or CIDRs) that cover `ip`.
fn covering(host: &Host, jail: &str, ip: &str) -> Vec<String> {
    let ip: IpAddr = ip.parse().unwrap();
    host.f2b
        .banned(jail)
        .into_iter()
        .filter(|t| {
            shared_f2b::control::parse_net(t)
                .ok()
                .is_some_and(|n| n.contains(&ip))
        })
        .collect()
}

/// How often `host`'s subscriber skipped an event for `reason`.
fn skipped(host: &Host, reason: &str) -> f64 {
    host.subscriber
        .as_ref()
        .expect("a running subscriber")
        .metric(&format!(
            "shared_f2b_events_skipped_total{{reason=\"{reason}\"}}"
        ))
}

async fn wait_skipped(host: &Host, reason: &str, at_least: f64) {
    wait_for(WAIT, &format!("{} skips ({reason})", host.name), || async {
        (skipped(host, reason) >= at_least).then_some(())
    })
    .await;
}

struct Site {
    dir: tempfile::TempDir,
    url: String,
    _nats: shared_f2b_tests::nats::NatsServer,
    _db: TestDb,
    archiver: shared_f2b_tests::host::Daemon,
    admin: Admin,
}

/// The shipped site with hosts dave, eve and erin added.
fn site() -> Site {
    let dir = tempfile::tempdir().unwrap();
    let nats = site::nats_with_hosts(dir.path(), &["dave", "eve", "erin"]);
    let url = nats.url();
    let db = TestDb::mariadb();
    let archiver = site::archiver(dir.path(), &url, &db);
    let admin = Admin::new(dir.path(), "admin", &url);
    Site {
        url,
        _nats: nats,
        _db: db,
        archiver,
        admin,
        dir,
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_pardon_lifts_a_ban_everywhere_keeps_it_lifted_and_ends() {
    let s = site();
    let hosts: Vec<Host> = ["alice", "bob", "charlie"]
        .iter()
        .map(|n| site::host(s.dir.path(), n, &s.url, "ban", "", true))
        .collect();
    let (alice, bob, charlie) = (&hosts[0], &hosts[1], &hosts[2]);
    let ip = "203.0.113.7";
    // Alice's and Bob's Fail2Ban ban it (three failed logins each; the shipped action
    // publishes): all three hosts hold it, from two origins.
    alice.fail_logins(ip, 3);
    bob.fail_logins(ip, 3);
    for (host, jail) in [
        (alice, "login"),
        (bob, "login"),
        (alice, "shared"),
        (bob, "shared"),
        (charlie, "shared"),
    ] {
        wait_held(host, jail, ip).await;
    }

    let issued = Instant::now();
    let id = s.admin.order(&[
        "pardon",
        "--ip",
        ip,
        "--for",
        "8s",
        "--reason",
        "partner gateway",
    ]);
    wait_for(
        Duration::from_secs(1),
        "the pardon lifted everywhere",
        || async {
            let held = hosts
                .iter()
                .any(|h| holds(h, "shared", ip) || holds(h, "login", ip));
            (!held).then_some(())
        },
    )
    .await;
    eprintln!(
        "pardon {id} lifted on every host {:?} after the command started",
        issued.elapsed()
    );
    let list = s.admin.run(&["list"]);
    assert!(
        String::from_utf8_lossy(&list.stdout).contains(&id),
        "list shows the pardon: {}",
        String::from_utf8_lossy(&list.stdout)
    );

    // During the pardon: Alice's publisher knows it and publishes nothing; a host without a
    // subscriber publishes, and no subscriber applies it.
    let before = shared_f2b_tests::nats::read_stream_as(&s.url, "admin", "change-me-admin", STREAM)
        .await
        .len();
    let out = alice.publish(&["ban", "--jail", "login", "--ip", ip]);
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let dave = bare_publisher(s.dir.path(), "dave", &s.url);
    ban(&dave, ip);
    for host in [alice, bob, charlie] {
        wait_skipped(host, "pardoned", 1.0).await;
    }
    let after =
        shared_f2b_tests::nats::read_stream_as(&s.url, "admin", "change-me-admin", STREAM).await;
    let new: Vec<_> = after[before..].iter().map(|(subject, _)| subject).collect();
    assert!(
        new.iter()
            .all(|subject| !subject.ends_with(".alice") || subject.starts_with("f2b.unban")),
        "alice published no ban during the pardon: {new:?}"
    );
    for host in &hosts {
        assert!(
            !holds(host, "shared", ip),
            "{} applied a pardoned ban",
            host.name
        );
    }

    // After it ended, a new ban is applied again.
    let ends = issued + Duration::from_secs(9);
    tokio::time::sleep_until(ends.into()).await;
    ban(&dave, ip);
    for host in &hosts {
        wait_held(host, "shared", ip).await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn allow_operator_ban_revoke_restart_catch_up_and_backfill() {
    let s = site();
    let mut hosts: Vec<Host> = ["alice", "bob", "charlie"]
        .iter()
        .map(|n| site::host(s.dir.path(), n, &s.url, "ban", "", true))
        .collect();
    let eve = bare_publisher(s.dir.path(), "eve", &s.url);

    // An allow entry: lifts what is held in it, and nothing in it is banned while it lasts.
    ban(&eve, "198.51.100.20");
    for host in &hosts {
        wait_held(host, "shared", "198.51.100.20").await;
    }
    let allow = s.admin.order(&[
        "allow",
        "--net",
        "198.51.100.0/24",
        "--reason",
        "partner's gateways",
    ]);
    ban(&eve, "198.51.100.21");
    for host in &hosts {
        wait_skipped(host, "allowed", 1.0).await;
        assert!(
            !holds(host, "shared", "198.51.100.20"),
            "the allow lifted it"
        );
        assert!(!holds(host, "shared", "198.51.100.21"));
    }

    // An operator's ban: everywhere, with its own bantime, and no host can lift it.
    s.admin.order(&[
        "ban",
        "--ip",
        "192.0.2.99",
        "--bantime",
        "7200",
        "--reason",
        "scanner",
    ]);
    for host in &hosts {
        wait_held(host, "shared", "192.0.2.99").await;
        let bantime = ticket_bantime(host, "shared", "192.0.2.99");
        assert!(
            bantime.is_some_and(|b| (7190..=7200).contains(&b)),
            "{}: the ticket has the operator's bantime, {bantime:?}",
            host.name
        );
        assert_eq!(ticket_bantime(host, "shared", "198.51.100.99"), None);
    }
    publish(&eve, &["unban", "--jail", "sshd", "--ip", "192.0.2.99"]);
    for host in &hosts {
        wait_skipped(host, "not_held", 1.0).await;
        assert!(
            holds(host, "shared", "192.0.2.99"),
            "a host's unban cannot lift it"
        );
    }

    // A new host backfills the orders: the operator's ban is applied, the allowed one is not.
    let dave = site::host(s.dir.path(), "dave", &s.url, "ban", "", true);
    wait_held(&dave, "shared", "192.0.2.99").await;
    assert!(!holds(&dave, "shared", "198.51.100.21"));
    assert!(
        dave.subscriber
            .as_ref()
            .unwrap()
            .log_text()
            .contains("operators' orders caught up")
    );

    // Bob is down while an operator pardons: he lifts it when he is back (catch-up), and it
    // stays lifted across his restart.
    let bob_sub = hosts[1].subscriber.take().unwrap();
    assert_eq!(bob_sub.terminate(), Some(0));
    let pardon = s.admin.order(&[
        "pardon",
        "--ip",
        "192.0.2.99",
        "--reason",
        "it was our own scanner",
    ]);
    wait_for(
        WAIT,
        "192.0.2.99 lifted on the hosts that are up",
        || async {
            (!holds(&hosts[0], "shared", "192.0.2.99") && !holds(&dave, "shared", "192.0.2.99"))
                .then_some(())
        },
    )
    .await;
    assert!(holds(&hosts[1], "shared", "192.0.2.99"), "bob is down");
    hosts[1].start_subscriber();
    wait_for(WAIT, "bob lifted it after his restart", || async {
        (!holds(&hosts[1], "shared", "192.0.2.99")).then_some(())
    })
    .await;
    let standing =
        std::fs::read_to_string(hosts[1].dir.join("state/controls.json")).unwrap_or_default();
    assert!(
        standing.contains(&pardon) && standing.contains(&allow),
        "{standing}"
    );

    // Revoked: the net is banned again.
    let out = s
        .admin
        .run(&["revoke", &allow, "--reason", "gateway moved"]);
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let again = s.admin.run(&["revoke", &allow]);
    assert_eq!(
        again.status.code(),
        Some(1),
        "a revoked order cannot be revoked again"
    );
    wait_for(WAIT, "the allow gone from bob's orders", || async {
        let path = hosts[1].dir.join("state/controls.json");
        let standing = shared_f2b::standing::Standing::load(&path).unwrap();
        let ids: Vec<String> = standing
            .controls
            .iter()
            .map(|c| c.control.id.to_string())
            .collect();
        (!ids.contains(&allow)).then_some(())
    })
    .await;
    ban(&eve, "198.51.100.22");
    for host in hosts.iter().chain([&dave]) {
        wait_held(host, "shared", "198.51.100.22").await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_hosts_control_event_is_refused() {
    let s = site();
    let bob = site::host(s.dir.path(), "bob", &s.url, "ban", "", true);
    let eve = bare_publisher(s.dir.path(), "eve", &s.url);
    ban(&eve, "192.0.2.77");
    wait_held(&bob, "shared", "192.0.2.77").await;

    // The product's own tool, run with a host's config.
    let alice = Admin::new(s.dir.path(), "alice", &s.url);
    let out = alice.run(&[
        "pardon",
        "--ip",
        "192.0.2.77",
        "--reason",
        "I am alice and want my friend unbanned",
    ]);
    let err = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(1), "{err}");
    assert!(err.contains("may not publish control events"), "{err}");

    // A stock client with alice's credentials, on every control subject.
    let alice_client = client(&s.url, "alice").await;
    let order = shared_f2b::control::Control::pardon(
        "alice",
        shared_f2b::control::parse_net("192.0.2.0/24").unwrap(),
        None,
        "attack",
    )
    .unwrap();
    for subject in [
        "f2b.control.pardon.alice",
        "f2b.control.pardon.admin",
        "f2b.control.allow.alice",
    ] {
        let _ = alice_client.publish(subject, order.encode().into()).await;
    }
    alice_client.flush().await.unwrap();
    barrier(&bob, &eve, "192.0.2.78").await;
    assert!(holds(&bob, "shared", "192.0.2.77"), "nothing lifted it");
    let stored = client_stream_subjects(&s.url).await;
    assert!(
        stored.iter().all(|subject| !subject.contains(".control.")),
        "no control event stored: {stored:?}"
    );

    // The same order from the operator's user, with a stock client: stored, and it works (so
    // what stopped alice is her permissions, not the test).
    let admin = client(&s.url, "admin").await;
    let order = shared_f2b::control::Control::pardon(
        "admin",
        shared_f2b::control::parse_net("192.0.2.0/24").unwrap(),
        None,
        "the operator",
    )
    .unwrap();
    async_nats::jetstream::new(admin)
        .publish("f2b.control.pardon.admin", order.encode().into())
        .await
        .unwrap()
        .await
        .unwrap();
    wait_for(WAIT, "the operator's pardon applied", || async {
        (!holds(&bob, "shared", "192.0.2.77")).then_some(())
    })
    .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_operator_of_its_own_gives_orders_under_its_name_only() {
    let dir = tempfile::tempdir().unwrap();
    let nats = site::nats_with(dir.path(), &[], &["carol"]);
    let url = nats.url();
    let db = TestDb::mariadb();
    let _archiver = site::archiver(dir.path(), &url, &db);
    let bob = site::host(dir.path(), "bob", &url, "ban", "", true);
    let alice = bare_publisher(dir.path(), "alice", &url);
    ban(&alice, "192.0.2.88");
    wait_held(&bob, "shared", "192.0.2.88").await;

    // Carol's user, with a config naming someone else: refused.
    let posing = config(dir.path(), "admin", "carol", &url, "");
    let out = Command::new(bin("shared-f2b-admin"))
        .arg("--config")
        .arg(&posing.path)
        .args(["pardon", "--ip", "192.0.2.88", "--reason", "as admin"])
        .output()
        .unwrap();
    assert_eq!(
        out.status.code(),
        Some(1),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(holds(&bob, "shared", "192.0.2.88"));

    // As herself: the order goes through, and `list` shows it under her name.
    let carol = Admin::new(dir.path(), "carol", &url);
    let id = carol.order(&["pardon", "--ip", "192.0.2.88", "--reason", "ticket 7"]);
    wait_for(WAIT, "carol's pardon applied", || async {
        (!holds(&bob, "shared", "192.0.2.88")).then_some(())
    })
    .await;
    let list = carol.run(&["list"]);
    let text = String::from_utf8_lossy(&list.stdout);
    assert!(
        text.lines().any(|l| l.contains(&id) && l.contains("carol")),
        "{text}{}",
        String::from_utf8_lossy(&list.stderr)
    );
}

/// Every subject stored in the stream, read as the operator.
async fn client_stream_subjects(url: &str) -> Vec<String> {
    let js = async_nats::jetstream::new(client(url, "admin").await);
    let mut stream = js.get_stream(STREAM).await.unwrap();
    let last = stream.info().await.unwrap().state.last_sequence;
    let mut out = Vec::new();
    for seq in 1..=last {
        if let Ok(msg) = stream.get_raw_message(seq).await {
            out.push(msg.subject.to_string());
        }
    }
    out
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn prefixes_and_escalation_on_real_jails() {
    let s = site();
    let rules = "ipv6_prefix = 64\naggregate_count = 3\naggregate_window = \"10m\"\n\
                 [subscriber.escalation]\nreporters = 2\nwindow = \"1h\"\nbantime = \"1d\"\n\
                 repeat_factor = 2.0\n";
    let mut bob = site::host(s.dir.path(), "bob", &s.url, "ban", rules, false);
    let alice = bare_publisher(s.dir.path(), "alice", &s.url);
    let charlie = bare_publisher(s.dir.path(), "charlie", &s.url);

    // A subscriber killed while a ticket had its own bantime left the jail's bantime changed
    // (as a crash between "set bantime" and putting it back would): put back at start.
    bob.f2b
        .client(&["set", "shared", "bantime", "7777"])
        .unwrap();
    std::fs::create_dir_all(bob.dir.join("state")).unwrap();
    std::fs::write(
        bob.dir.join("state/bantime-restore.json"),
        r#"{"shared":3600}"#,
    )
    .unwrap();
    bob.start_subscriber();
    assert_eq!(
        bob.f2b
            .client(&["get", "shared", "bantime"])
            .as_deref()
            .map(str::trim),
        Some("3600")
    );
    assert!(!bob.dir.join("state/bantime-restore.json").exists());

    // An IPv6 address: its /64 is banned (Fail2Ban holds the CIDR).
    ban(&alice, "2001:db8:7:8::1");
    wait_held(&bob, "shared", "2001:db8:7:8::/64").await;

    // Three addresses of one /24 from two origins: the /24 is banned too.
    for ip in ["198.18.5.1", "198.18.5.2"] {
        ban(&alice, ip);
    }
    ban(&charlie, "198.18.5.3");
    wait_held(&bob, "shared", "198.18.5.0/24").await;
    assert!(
        bob.subscriber
            .as_ref()
            .unwrap()
            .metric("shared_f2b_prefixes_aggregated_total")
            >= 1.0
    );

    // Two origins within the hour: a day.
    ban(&alice, "192.0.2.150");
    wait_held(&bob, "shared", "192.0.2.150").await;
    assert_eq!(
        ticket_bantime(&bob, "shared", "192.0.2.150"),
        Some(3600),
        "the jail's"
    );
    ban(&charlie, "192.0.2.150");
    wait_for(WAIT, "the escalated bantime", || async {
        (ticket_bantime(&bob, "shared", "192.0.2.150") == Some(86_400)).then_some(())
    })
    .await;

    // Back after its ban ended: twice the bantime it asked for.
    ban_for(&alice, "192.0.2.160", 1);
    wait_held(&bob, "shared", "192.0.2.160").await;
    // Kept: what must pass is the 1 s ban's end by the clock (the jail holds it longer).
    tokio::time::sleep(Duration::from_millis(1500)).await;
    ban_for(&alice, "192.0.2.160", 600);
    wait_for(WAIT, "the repeat bantime", || async {
        ticket_bantime(&bob, "shared", "192.0.2.160")
            .filter(|b| (1200..1210).contains(b))
            .map(|_| ())
    })
    .await;
    let sub = bob.subscriber.as_ref().unwrap();
    assert!(sub.metric("shared_f2b_escalations_total{rule=\"reporters\"}") >= 1.0);
    assert!(sub.metric("shared_f2b_escalations_total{rule=\"repeat\"}") >= 1.0);
    assert!(sub.log_text().contains("ban escalated"));

    // A new host learns the earlier bans from the archive: the next one is a repeat there too.
    ban_for(&alice, "192.0.2.170", 1);
    wait_held(&bob, "shared", "192.0.2.170").await;
    // Kept: as above, the 1 s ban's end by the clock.
    tokio::time::sleep(Duration::from_millis(1500)).await;
    let erin = site::host(s.dir.path(), "erin", &s.url, "ban", rules, true);
    assert!(
        erin.subscriber
            .as_ref()
            .unwrap()
            .log_text()
            .contains("earlier bans read")
    );
    ban_for(&alice, "192.0.2.170", 600);
    wait_for(
        WAIT,
        "erin escalates from the archive's history",
        || async {
            ticket_bantime(&erin, "shared", "192.0.2.170")
                .filter(|b| (1200..1210).contains(b))
                .map(|_| ())
        },
    )
    .await;
}

/// Attack (red team): alice and charlie report three addresses of a /24 (aggregation bans the
/// /24 at bob) and alice one address of an IPv6 /64 (ipv6_prefix bans the /64). The operator pardons one
/// innocent address inside each. A pardon must lift it everywhere: afterwards no ticket in any
/// of bob's jails may cover the pardoned addresses.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_pardon_inside_a_prefix_ban_lifts_the_prefix() {
    let s = site();
    let rules = "ipv6_prefix = 64\naggregate_count = 3\naggregate_window = \"10m\"\n";
    let bob = site::host(s.dir.path(), "bob", &s.url, "ban", rules, true);
    let alice = bare_publisher(s.dir.path(), "alice", &s.url);
    let charlie = bare_publisher(s.dir.path(), "charlie", &s.url);

    for ip in ["198.18.7.1", "198.18.7.2"] {
        ban(&alice, ip);
    }
    ban(&charlie, "198.18.7.3");
    ban(&alice, "2001:db8:7:9::1");
    wait_held(&bob, "shared", "198.18.7.0/24").await;
    wait_held(&bob, "shared", "2001:db8:7:9::/64").await;
    assert!(!covering(&bob, "shared", "198.18.7.77").is_empty());

    s.admin.order(&[
        "pardon",
        "--ip",
        "198.18.7.77",
        "--reason",
        "innocent partner inside the aggregated /24",
    ]);
    s.admin.order(&[
        "pardon",
        "--ip",
        "2001:db8:7:9::77",
        "--reason",
        "innocent partner inside the /64",
    ]);
    wait_for(
        WAIT,
        "no ticket at bob covers the pardoned addresses",
        || async {
            let v4 = covering(&bob, "shared", "198.18.7.77");
            let v6 = covering(&bob, "shared", "2001:db8:7:9::77");
            (v4.is_empty() && v6.is_empty()).then_some(())
        },
    )
    .await;
}

/// Attack (red team): alice sends a handful of catch-up requests whose `until_seq` lies beyond the stream's
/// end. Each made the archiver's (then serial) replay loop wait for its 2 s fetch expiry; the
/// operators' `shared-f2b-admin list` (and `revoke`, which asks the archiver first) must still
/// answer within their timeout.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn replay_requests_cannot_stall_list_and_revoke() {
    let s = site();
    let eve = bare_publisher(s.dir.path(), "eve", &s.url);
    ban(&eve, "192.0.2.10");
    let allow = s
        .admin
        .order(&["allow", "--net", "198.51.100.0/24", "--reason", "partner"]);
    wait_for(WAIT, "list shows the allow before the attack", || async {
        let out = s.admin.run(&["list"]);
        (out.status.success() && String::from_utf8_lossy(&out.stdout).contains(&allow))
            .then_some(())
    })
    .await;

    let js = async_nats::jetstream::new(client(&s.url, "admin").await);
    let last = js
        .get_stream(STREAM)
        .await
        .unwrap()
        .info()
        .await
        .unwrap()
        .state
        .last_sequence;
    let alice = client(&s.url, "alice").await;
    let requests = "shared_f2b_replay_requests_total";
    let before = s.archiver.metric(requests);
    let req = serde_json::json!({
        "kind": "since", "jails": ["*"], "after": last,
        "until_seq": last + 1000, "limit": 2000
    });
    for n in 0..8 {
        alice
            .publish_with_reply(
                "f2b.replay",
                format!("_INBOX_alice.rt.{n}"),
                serde_json::to_vec(&req).unwrap().into(),
            )
            .await
            .unwrap();
    }
    alice.flush().await.unwrap();
    // The archiver took all eight (they are being answered) before the operator asks.
    wait_for(WAIT, "the archiver to take alice's 8 requests", || async {
        (s.archiver.metric(requests) >= before + 8.0).then_some(())
    })
    .await;

    let t0 = Instant::now();
    let list = s.admin.run(&["list"]);
    let list_took = t0.elapsed();
    let revoke = s.admin.run(&["revoke", &allow, "--reason", "done"]);
    assert!(
        list.status.success() && revoke.status.success(),
        "alice's 8 requests stalled the archiver: list {:?} after {list_took:?}: {}; revoke {:?}: {}",
        list.status.code(),
        String::from_utf8_lossy(&list.stderr),
        revoke.status.code(),
        String::from_utf8_lossy(&revoke.stderr)
    );
}

/// Attack (red team): alice publishes bans of an address with times in the past, each already over. Every
/// live subscriber drops them as expired (never counted, never rate-limited), but the archive
/// keeps them and a new host reads them as "earlier bans" for escalation's repeat rule. An
/// honest host's later 600 s ban of that address must not be escalated at the new host when
/// the running hosts (which saw the same events) do not escalate it.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn expired_back_dated_bans_do_not_escalate_at_new_hosts() {
    let s = site();
    let rules = "[subscriber.escalation]\nrepeat_factor = 2.0\nmax_bantime = \"7d\"\n";
    let bob = site::host(s.dir.path(), "bob", &s.url, "ban", rules, true);
    let alice = bare_publisher(s.dir.path(), "alice", &s.url);
    let charlie = bare_publisher(s.dir.path(), "charlie", &s.url);
    let ip = "203.0.113.66";
    let now = SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .unwrap()
        .as_secs();
    for k in 0..6u64 {
        let time = (now - 3600 + k * 60).to_string();
        publish(
            &alice,
            &[
                "ban",
                "--jail",
                "sshd",
                "--ip",
                ip,
                "--time",
                &time,
                "--bantime",
                "1",
            ],
        );
    }
    barrier(&bob, &charlie, "203.0.113.67").await;
    assert!(!holds(&bob, "shared", ip), "bob dropped them as expired");
    let erin = site::host(s.dir.path(), "erin", &s.url, "ban", rules, true);
    wait_for(WAIT, "erin read the history", || async {
        erin.subscriber
            .as_ref()
            .unwrap()
            .log_text()
            .contains("earlier bans read")
            .then_some(())
    })
    .await;

    publish(
        &charlie,
        &["ban", "--jail", "sshd", "--ip", ip, "--bantime", "600"],
    );
    wait_held(&bob, "shared", ip).await;
    wait_held(&erin, "shared", ip).await;
    let (at_bob, at_erin) = (
        ticket_bantime(&bob, "shared", ip),
        ticket_bantime(&erin, "shared", ip),
    );
    assert!(
        at_erin.is_some() && at_erin <= at_bob,
        "alice's expired back-dated bans escalated charlie's 600 s ban at the new host erin to \
         {at_erin:?} s; bob, who saw the same events live, holds it for the jail's {at_bob:?} s"
    );
}

/// Attack (red team): alice tries to get something onto `f2b.live.control.*` without the operator's
/// permission: as the reply subject of her own event (the stream's publish ack lands there) and
/// of a catch-up request (the archiver's answer lands there), with forged stream headers, and
/// by asking for a catch-up page answered into bob's inbox space. Nothing may be lifted.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_host_cannot_forge_a_control_event_through_replies() {
    let s = site();
    let bob = site::host(s.dir.path(), "bob", &s.url, "ban", "", true);
    let eve = bare_publisher(s.dir.path(), "eve", &s.url);
    ban(&eve, "192.0.2.77");
    wait_held(&bob, "shared", "192.0.2.77").await;

    let order = shared_f2b::control::Control::pardon(
        "admin",
        shared_f2b::control::parse_net("192.0.2.0/24").unwrap(),
        None,
        "forged",
    )
    .unwrap();
    let alice = client(&s.url, "alice").await;
    let mut headers = async_nats::HeaderMap::new();
    headers.insert("Nats-Stream", STREAM);
    headers.insert("Nats-Subject", "f2b.control.pardon.admin");
    headers.insert("Nats-Sequence", "999999");
    for reply in [
        "f2b.live.control.pardon.admin",
        "f2b.control.pardon.admin",
        "_INBOX_bob.x.y",
    ] {
        let _ = alice
            .publish_with_reply_and_headers(
                "f2b.ban.sshd.alice",
                reply.to_string(),
                headers.clone(),
                order.encode().into(),
            )
            .await;
        let req = serde_json::json!({
            "kind": "controls", "jails": ["*"], "after": 0, "limit": 2000
        });
        let _ = alice
            .publish_with_reply_and_headers(
                "f2b.replay",
                reply.to_string(),
                headers.clone(),
                serde_json::to_vec(&req).unwrap().into(),
            )
            .await;
    }
    alice.flush().await.unwrap();
    barrier(&bob, &eve, "192.0.2.78").await;
    assert!(holds(&bob, "shared", "192.0.2.77"), "nothing lifted it");
    let standing =
        shared_f2b::standing::Standing::load(&shared_f2b::standing::path(&bob.dir.join("state")))
            .unwrap();
    assert!(standing.controls.is_empty(), "{standing:?}");
}

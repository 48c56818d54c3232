//! Hosts with keys of their own, on the shipped site config as shipped (its HOSTS users come
//! from the hosts file `shared-f2b-admin host` writes): enrolment with the written files only,
//! removal that closes the host's connection and refuses its reconnect, rotation with a grace,
//! and a compromised broker (a SITE user with every right) that forges and alters events and
//! key records, with `require_signatures = true` at every host. Real nats-server, real Fail2Ban.

use shared_f2b::control::Control;
use shared_f2b::event::{Action, Event, parse_ip};
use shared_f2b::signing::Signer;
use shared_f2b_tests::db::TestDb;
use shared_f2b_tests::host::{Daemon, Host, HostSpec};
use shared_f2b_tests::nats::NatsServer;
use shared_f2b_tests::site::{self, LEGACY_HOSTS, STREAM};
use shared_f2b_tests::{HostConfig, bin, nats_server_bin, repo_root, wait_for, wait_until};
use std::path::{Path, PathBuf};
use std::process::{Command, Output};
use std::time::{Duration, Instant, SystemTime};

const WAIT: Duration = Duration::from_secs(30);

/// A site whose hosts enrol with keys: nats-server on the shipped config with an (empty) hosts
/// file beside it and charlie kept as a password user (`legacy_hosts_file`), an archiver that
/// trusts the operator's key, and the operator's `shared-f2b-admin` config.
struct KeySite {
    dir: PathBuf,
    nats: NatsServer,
    _db: TestDb,
    _archiver: Daemon,
    archiver_config: HostConfig,
    admin: PathBuf,
    _operator: String,
    enrol: PathBuf,
}

impl KeySite {
    async fn new(dir: &Path) -> KeySite {
        std::fs::copy(
            repo_root().join("deploy/hosts.conf"),
            dir.join("hosts.conf"),
        )
        .unwrap();
        let legacy = dir.join("legacy-hosts.conf");
        let charlie = LEGACY_HOSTS
            .split("\n\n")
            .find(|e| e.contains("user: charlie"))
            .unwrap();
        std::fs::write(&legacy, charlie).unwrap();
        let conf = std::fs::read_to_string(repo_root().join("deploy/nats-server.conf")).unwrap();
        let nats = NatsServer::start_with_config(dir, &conf);
        let url = nats.url();

        let (seed, operator) = site::operator_key(dir);
        let trust = format!("[trust]\noperator_keys = [{operator:?}]\n");

        let db = TestDb::sqlite(dir);
        let (archiver_config, archiver) = site::archiver_with(dir, &url, &db, "");
        append(&archiver_config.path, &trust);
        let mut archiver = archiver;
        archiver.wait_healthy("shared-f2b-archiver");

        let admin = site::config(dir, "admin", "admin", &url, "").path;
        append(
            &admin,
            &format!(
                "[trust]\noperator_seed_file = {:?}\n\n[admin]\nhosts_file = {:?}\n\
                 legacy_hosts_file = {:?}\nreload_command = [{:?}, \"--signal\", \"reload={}\"]\n",
                seed.display().to_string(),
                dir.join("hosts.conf").display().to_string(),
                legacy.display().to_string(),
                nats_server_bin(),
                nats.pid().unwrap()
            ),
        );
        KeySite {
            dir: dir.to_owned(),
            nats,
            _db: db,
            _archiver: archiver,
            archiver_config,
            admin,
            _operator: operator,
            enrol: dir.join("enrol"),
        }
    }

    fn admin(&self, args: &[&str]) -> Output {
        Command::new(bin("shared-f2b-admin"))
            .arg("--config")
            .arg(&self.admin)
            .args(args)
            .output()
            .unwrap()
    }

    fn admin_ok(&self, args: &[&str]) -> String {
        let out = self.admin(args);
        assert!(
            out.status.success(),
            "shared-f2b-admin {args:?}: {}{}",
            String::from_utf8_lossy(&out.stdout),
            String::from_utf8_lossy(&out.stderr)
        );
        String::from_utf8(out.stdout).unwrap()
    }

    /// `host add NAME` into the site's enrol dir.
    fn add(&self, name: &str) -> String {
        let out = self.enrol.display().to_string();
        self.admin_ok(&["host", "add", name, "--out", &out])
    }

    /// A host with a real Fail2Ban whose config is the file `host add` wrote, plus this
    /// machine's paths (socket, state, logs, spool).
    fn host(&self, name: &str, start: bool) -> Host {
        let mut host = Host::new(
            &self.dir,
            &HostSpec {
                name,
                nats_url: &self.nats.url(),
                prefix: site::PREFIX,
                stream: STREAM,
                apply: "ban",
                subscriber_extra: "",
                shared_jail_extra: "",
            },
        );
        let written = std::fs::read_to_string(self.enrol.join(format!("{name}.toml"))).unwrap();
        let mut doc: toml::Table = written.parse().expect("the written config is TOML");
        let dir = &host.dir;
        let table = |doc: &mut toml::Table, name: &str| -> toml::Table {
            doc.get(name)
                .and_then(|t| t.as_table())
                .cloned()
                .unwrap_or_default()
        };
        let mut subscriber = table(&mut doc, "subscriber");
        assert_eq!(
            subscriber.get("require_signatures"),
            Some(&toml::Value::Boolean(true))
        );
        for (key, value) in [
            ("fail2ban_socket", dir.join("f2b.sock")),
            ("state_dir", dir.join("state")),
            ("log_file", dir.join("shared.log")),
        ] {
            subscriber.insert(key.into(), value.display().to_string().into());
        }
        subscriber.insert("apply".into(), "ban".into());
        let mut publisher = table(&mut doc, "publisher");
        publisher.insert(
            "spool_dir".into(),
            host.config.spool_dir.display().to_string().into(),
        );
        publisher.insert("timeout".into(), "2s".into());
        doc.insert("subscriber".into(), subscriber.into());
        doc.insert("publisher".into(), publisher.into());
        std::fs::write(&host.config.path, toml::to_string(&doc).unwrap()).unwrap();
        if start {
            host.start_subscriber();
        }
        host
    }
}

fn append(path: &Path, text: &str) {
    let mut all = std::fs::read_to_string(path).unwrap();
    all.push('\n');
    all.push_str(text);
    std::fs::write(path, all).unwrap();
}

fn publish(cfg: &HostConfig, ip: &str) -> Output {
    cfg.publish(&["ban", "--jail", "sshd", "--ip", ip])
}

fn holds(host: &Host, ip: &str) -> bool {
    host.f2b.banned("shared").iter().any(|b| b == ip)
}

async fn wait_held(host: &Host, ip: &str) {
    wait_for(WAIT, &format!("{ip} banned at {}", host.name), || async {
        holds(host, ip).then_some(())
    })
    .await;
}

fn rejected(host: &Host, reason: &str) -> f64 {
    host.subscriber.as_ref().unwrap().metric(&format!(
        "shared_f2b_events_rejected_total{{reason=\"{reason}\"}}"
    ))
}

fn wait_rejected(host: &Host, reason: &str, at_least: f64) {
    wait_until(WAIT, &format!("{reason} counted at {}", host.name), || {
        rejected(host, reason) >= at_least
    });
}

/// A client logged in with an nkey seed file.
async fn nkey_client(
    url: &str,
    seed: &Path,
    inbox: &str,
) -> Result<async_nats::Client, async_nats::ConnectError> {
    let seed = std::fs::read_to_string(seed).unwrap().trim().to_owned();
    async_nats::ConnectOptions::with_nkey(seed)
        .custom_inbox_prefix(inbox)
        .max_reconnects(Some(0))
        .connect(url)
        .await
}

/// Publishes `payload` straight into the stream as a SITE user with every right (the broker's
/// own administrator, or whoever took it over).
async fn broker_publishes(url: &str, subject: &str, payload: Vec<u8>) {
    let admin = site::client(url, "admin").await;
    let js = async_nats::jetstream::new(admin);
    js.publish(subject.to_owned(), payload.into())
        .await
        .unwrap()
        .await
        .unwrap();
}

fn signed_ban(origin: &str, ip: &str, seed: &Path) -> Event {
    let mut e = Event::new(
        Action::Ban,
        origin,
        "sshd",
        parse_ip(ip).unwrap(),
        SystemTime::now(),
        600,
        3,
    )
    .unwrap();
    Signer::from_file(seed).unwrap().sign_event(&mut e);
    e
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_enrolled_host_works_with_its_files_and_removal_locks_it_out() {
    let dir = tempfile::tempdir().unwrap();
    let ks = KeySite::new(dir.path()).await;
    ks.add("bob");
    let bob = ks.host("bob", true);

    // host add → dave publishing, timed (the reload included).
    let t = Instant::now();
    let said = ks.add("dave");
    let mut dave = ks.host("dave", false);
    let out = publish(&dave.config, "198.51.100.41");
    let add_to_publish = t.elapsed();
    assert!(
        out.status.success(),
        "{said}\n{}",
        String::from_utf8_lossy(&out.stderr)
    );
    println!("host add -> dave's first ban published: {add_to_publish:?}");
    wait_held(&bob, "198.51.100.41").await;
    assert!(ks.admin_ok(&["host", "list"]).contains("dave"));
    let seed = ks.enrol.join("dave.seed");
    use std::os::unix::fs::PermissionsExt;
    let mode = std::fs::metadata(&seed).unwrap().permissions().mode() & 0o777;
    assert_eq!(mode, 0o600);
    assert!(!said.contains(&std::fs::read_to_string(&seed).unwrap().trim().to_owned()));

    // dave's subscriber works too: bob's ban reaches dave; and the password user charlie
    // (legacy_hosts_file) still publishes.
    dave.start_subscriber();
    assert!(publish(&bob.config, "198.51.100.42").status.success());
    wait_held(&dave, "198.51.100.42").await;
    let charlie = site::config(&ks.dir, "charlie", "charlie", &ks.nats.url(), "");
    assert!(publish(&charlie, "198.51.100.43").status.success());

    // dave's open connection is closed at the removal, and he cannot come back.
    let url = ks.nats.url();
    let client = nkey_client(&url, &seed, "_INBOX_dave").await.unwrap();
    let _live = client.subscribe("f2b.live.>").await.unwrap();
    let t = Instant::now();
    ks.admin_ok(&["host", "remove", "dave"]);
    let removed = t.elapsed();
    wait_until(Duration::from_secs(10), "dave's connection closed", || {
        client.connection_state() != async_nats::connection::State::Connected
    });
    println!(
        "host remove: command {removed:?}; dave's connection closed {:?} after it started",
        t.elapsed()
    );
    let again = nkey_client(&url, &seed, "_INBOX_dave").await;
    assert!(again.is_err(), "dave reconnected after his removal");
    assert!(!ks.admin_ok(&["host", "list"]).contains("dave"));
    let out = publish(&dave.config, "198.51.100.44");
    assert!(out.status.success());
    assert_eq!(dave.config.spooled(), 1, "dave's ban could not be sent");

    // Whoever still holds dave's key (a compromised broker) cannot make a host apply it.
    let forged = signed_ban("dave", "198.51.100.45", &seed);
    broker_publishes(&url, "f2b.ban.sshd.dave", forged.encode()).await;
    wait_rejected(&bob, "revoked_key", 1.0);
    assert!(!holds(&bob, "198.51.100.45"));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_compromised_broker_cannot_forge_alter_or_vouch() {
    let dir = tempfile::tempdir().unwrap();
    let ks = KeySite::new(dir.path()).await;
    ks.add("alice");
    ks.add("bob");
    let alice = ks.host("alice", true);
    let bob = ks.host("bob", true);
    let url = ks.nats.url();

    // alice's real event is applied at bob.
    assert!(publish(&alice.config, "203.0.113.10").status.success());
    wait_held(&bob, "203.0.113.10").await;

    // An event claiming alice, unsigned, straight into the stream.
    let unsigned = Event::new(
        Action::Ban,
        "alice",
        "sshd",
        parse_ip("203.0.113.11").unwrap(),
        SystemTime::now(),
        600,
        3,
    )
    .unwrap();
    broker_publishes(&url, "f2b.ban.sshd.alice", unsigned.encode()).await;
    wait_rejected(&bob, "unsigned", 1.0);

    // A replay of alice's real (signed) event with the address changed.
    let mut altered = signed_ban("alice", "203.0.113.12", &ks.enrol.join("alice.seed"));
    altered.ip = parse_ip("203.0.113.13").unwrap();
    broker_publishes(&url, "f2b.ban.sshd.alice", altered.encode()).await;
    wait_rejected(&bob, "bad_signature", 1.0);

    // A key record the broker signed itself (no configured operator key), then an event signed
    // with the key it tried to vouch for.
    let stranger = Signer::generate();
    let mallory = Signer::generate();
    let mut record = Control::key_record(
        "admin",
        "alice",
        mallory.public_key(),
        SystemTime::now(),
        None,
        "host add",
    )
    .unwrap();
    stranger.sign_control(&mut record);
    broker_publishes(&url, "f2b.control.key.admin", record.encode()).await;
    let seed = ks.dir.join("mallory.seed");
    std::fs::write(&seed, mallory.seed()).unwrap();
    let vouched = signed_ban("alice", "203.0.113.14", &seed);
    broker_publishes(&url, "f2b.ban.sshd.alice", vouched.encode()).await;
    wait_rejected(&bob, "unknown_key", 2.0);

    // alice's real events still are applied, and none of the forgeries anywhere.
    assert!(publish(&alice.config, "203.0.113.15").status.success());
    wait_held(&bob, "203.0.113.15").await;
    for ip in [
        "203.0.113.11",
        "203.0.113.12",
        "203.0.113.13",
        "203.0.113.14",
    ] {
        assert!(!holds(&bob, ip), "{ip} applied at bob");
        assert!(!holds(&alice, ip), "{ip} applied at alice");
    }

    // The archive holds them all and `verify` names what fails.
    let out = Command::new(bin("shared-f2b-archiver"))
        .arg("--config")
        .arg(&ks.archiver_config.path)
        .arg("verify")
        .output()
        .unwrap();
    let text = String::from_utf8_lossy(&out.stdout);
    assert!(!out.status.success(), "verify passed: {text}");
    assert!(text.contains("bad_signature 1"), "{text}");
    assert!(text.contains("unsigned: 1"), "{text}");
    assert!(text.contains("key records: 3"), "{text}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_rotated_key_works_until_its_grace_ends() {
    let dir = tempfile::tempdir().unwrap();
    let ks = KeySite::new(dir.path()).await;
    ks.add("alice");
    ks.add("bob");
    let alice = ks.host("alice", false);
    let bob = ks.host("bob", true);
    // alice keeps her old files (a host not yet given the new ones).
    let old = ks.dir.join("alice-old.toml");
    let old_seed = ks.dir.join("alice-old.seed");
    std::fs::copy(ks.enrol.join("alice.seed"), &old_seed).unwrap();
    let text = std::fs::read_to_string(&alice.config.path)
        .unwrap()
        .replace(
            &ks.enrol.join("alice.seed").display().to_string(),
            &old_seed.display().to_string(),
        );
    std::fs::write(&old, text).unwrap();
    let old = HostConfig {
        path: old,
        spool_dir: alice.config.spool_dir.clone(),
    };

    let t = Instant::now();
    let grace = Duration::from_secs(4);
    ks.admin_ok(&[
        "host",
        "rotate",
        "alice",
        "--grace",
        "4s",
        "--out",
        &ks.enrol.display().to_string(),
    ]);
    // Within the grace: the old key logs in and its events are applied.
    assert!(publish(&old, "192.0.2.61").status.success());
    wait_held(&bob, "192.0.2.61").await;
    assert!(t.elapsed() < grace, "the grace ran out before the check");
    // The new key works at once.
    assert!(publish(&alice.config, "192.0.2.62").status.success());
    wait_held(&bob, "192.0.2.62").await;

    // After the grace: still logged in (not pruned yet), but its events are refused.
    std::thread::sleep(grace.saturating_sub(t.elapsed()) + Duration::from_millis(500));
    assert!(publish(&old, "192.0.2.63").status.success());
    wait_rejected(&bob, "revoked_key", 1.0);
    assert!(!holds(&bob, "192.0.2.63"));
    // Nor one a broker dates back into the key's window, once the key's end is past what
    // clocks may differ by.
    let end_skew = shared_f2b::keyring::END_SKEW;
    std::thread::sleep((grace + end_skew).saturating_sub(t.elapsed()) + Duration::from_millis(500));
    let mut back = signed_ban("alice", "192.0.2.65", &old_seed);
    back.time = SystemTime::now() - end_skew - Duration::from_secs(3);
    Signer::from_file(&old_seed).unwrap().sign_event(&mut back);
    broker_publishes(&ks.nats.url(), "f2b.ban.sshd.alice", back.encode()).await;
    wait_rejected(&bob, "revoked_key", 2.0);
    // `host prune` takes its login away.
    ks.admin_ok(&["host", "prune"]);
    let refused = nkey_client(&ks.nats.url(), &old_seed, "_INBOX_alice").await;
    assert!(refused.is_err(), "the old key still logs in after prune");
    assert!(publish(&alice.config, "192.0.2.64").status.success());
    wait_held(&bob, "192.0.2.64").await;

    // A new host backfilling from the archive: the old key's ban stored after its end is
    // refused there too (the archiver says when it was stored), the rest is applied.
    ks.add("carol");
    let carol = ks.host("carol", true);
    for ip in ["192.0.2.61", "192.0.2.62", "192.0.2.64"] {
        wait_held(&carol, ip).await;
    }
    for ip in ["192.0.2.63", "192.0.2.65"] {
        assert!(
            !holds(&carol, ip),
            "{ip}, signed after the key's end, backfilled"
        );
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_sensor_only_publishes_its_bans_and_hears_nothing() {
    let dir = tempfile::tempdir().unwrap();
    let ks = KeySite::new(dir.path()).await;
    ks.add("bob");
    let bob = ks.host("bob", true);
    let said = ks.admin_ok(&[
        "host",
        "add",
        "honeypot",
        "--sensor",
        "--out",
        &ks.enrol.display().to_string(),
    ]);
    assert!(said.starts_with("sensor honeypot added"), "{said}");
    // No daemon to ask the archive for it: its config keeps no records of sent events.
    let written = std::fs::read_to_string(ks.enrol.join("honeypot.toml")).unwrap();
    let doc: toml::Table = written.parse().unwrap();
    assert_eq!(doc["publisher"]["confirm"], toml::Value::Boolean(false));
    // No subscriber: its Fail2Ban bans (its login jail), and the shipped action publishes.
    let honeypot = ks.host("honeypot", false);
    honeypot.fail_logins("198.51.100.61", 3);
    wait_held(&bob, "198.51.100.61").await;

    // With its key, a stock client: following the live subjects and asking for catch-up are
    // refused (bob's key, for comparison, hears the next ban).
    let url = ks.nats.url();
    let sensor = nkey_client(&url, &ks.enrol.join("honeypot.seed"), "_INBOX_honeypot")
        .await
        .unwrap();
    let mut heard = sensor.subscribe("f2b.live.>").await.unwrap();
    let bob_client = nkey_client(&url, &ks.enrol.join("bob.seed"), "_INBOX_bob")
        .await
        .unwrap();
    let mut bob_heard = bob_client.subscribe("f2b.live.>").await.unwrap();
    sensor.flush().await.unwrap();
    bob_client.flush().await.unwrap();
    let charlie = site::config(&ks.dir, "charlie", "charlie", &url, "");
    assert!(publish(&charlie, "198.51.100.62").status.success());
    use futures::StreamExt;
    let bob_got = tokio::time::timeout(Duration::from_secs(10), bob_heard.next()).await;
    assert!(
        matches!(bob_got, Ok(Some(_))),
        "bob's key hears the live subjects"
    );
    let got = tokio::time::timeout(Duration::from_secs(2), heard.next()).await;
    assert!(!matches!(got, Ok(Some(_))), "the sensor heard a live event");
    let asked = sensor.request("f2b.replay", "{}".into()).await;
    assert!(asked.is_err(), "the sensor was answered a catch-up request");
}

//! `shared-f2b-archiver`: every event in the database once, outages survived, replay and
//! backfill for subscribers, operator exports.

use shared_f2b::Event;
use shared_f2b::subject::event_subject;
use shared_f2b_tests::db::{TestDb, mariadb_root};
use shared_f2b_tests::host::Daemon;
use shared_f2b_tests::nats::{EventSender, StreamGuard, ban_event, unban_event, wait_archived_all};
use shared_f2b_tests::{HostConfig, bin, shared_nats, unique, wait_for};
use std::path::Path;
use std::time::{Duration, SystemTime};

const WAIT: Duration = Duration::from_secs(60);

struct Site {
    prefix: String,
    stream: String,
    _guard: StreamGuard,
}

impl Site {
    fn new() -> Site {
        let stream = unique("ARC");
        Site {
            prefix: unique("arc"),
            _guard: StreamGuard {
                url: shared_nats().into(),
                stream: stream.clone(),
            },
            stream,
        }
    }

    /// A config for `host`; `extra` adds sections.
    fn config(&self, dir: &Path, host: &str, max_age: &str, extra: &str) -> HostConfig {
        let dir = dir.join(host);
        std::fs::create_dir_all(&dir).unwrap();
        HostConfig::write_with_max_age(
            &dir,
            host,
            shared_nats(),
            &self.prefix,
            &self.stream,
            max_age,
            extra,
        )
    }

    fn archiver(&self, dir: &Path, name: &str, db: &TestDb, max_age: &str) -> (HostConfig, Daemon) {
        let cfg = self.config(
            dir,
            name,
            max_age,
            &format!("[archiver]\ndatabase_url = {:?}\n", db.url),
        );
        let log = cfg.path.with_extension("log");
        let daemon = Daemon::archiver(&cfg.path, &log);
        (cfg, daemon)
    }

    async fn sender(&self) -> EventSender {
        EventSender::connect(shared_nats(), &self.prefix, &self.stream).await
    }

    /// A subscriber in `log` mode (one line per applied ban, countable exactly).
    fn subscriber(
        &self,
        dir: &Path,
        host: &str,
        max_age: &str,
        extra: &str,
    ) -> (HostConfig, Daemon) {
        let state = dir.join(host).join("state");
        let log_file = dir.join(host).join("shared.log");
        let cfg = self.config(
            dir,
            host,
            max_age,
            &format!(
                "[subscriber]\napply = \"log\"\nstate_dir = {:?}\nlog_file = {:?}\n{extra}",
                state.display().to_string(),
                log_file.display().to_string()
            ),
        );
        let daemon = Daemon::subscriber(&cfg.path, &dir.join(host));
        (cfg, daemon)
    }
}

fn applied_lines(dir: &Path, host: &str) -> Vec<String> {
    std::fs::read_to_string(dir.join(host).join("shared.log"))
        .unwrap_or_default()
        .lines()
        .map(str::to_owned)
        .collect()
}

async fn wait_rows(db: &TestDb, n: i64) {
    wait_for(WAIT, &format!("{n} rows archived"), || async {
        let rows = db.rows().await;
        (rows >= n).then_some(rows)
    })
    .await;
}

/// Publishes the same event twice as two stream messages (no `Nats-Msg-Id`, so the stream's
/// duplicate window does not fold them): only the database can make it one row.
async fn publish_twice(site: &Site, event: &Event) {
    let client = async_nats::connect(shared_nats()).await.unwrap();
    let js = async_nats::jetstream::new(client);
    let subject = event_subject(&site.prefix, event.action, &event.jail, &event.origin).unwrap();
    for _ in 0..2 {
        js.publish(subject.clone(), event.encode().into())
            .await
            .unwrap()
            .await
            .unwrap();
    }
}

async fn every_event_once(db: TestDb) {
    let dir = tempfile::tempdir().unwrap();
    let site = Site::new();
    let (_c1, _a1) = site.archiver(dir.path(), "archiver1", &db, "1h");
    let (_c2, _a2) = site.archiver(dir.path(), "archiver2", &db, "1h");
    let send = site.sender().await;
    let mut published = Vec::new();
    for i in 0..300 {
        let event = ban_event("alice", "sshd", &format!("198.18.{}.{}", i / 250, i % 250));
        send.send(&event).await;
        published.push(event.id);
    }
    let twice = ban_event("bob", "sshd", "203.0.113.50");
    publish_twice(&site, &twice).await;
    published.push(twice.id);
    let unban = unban_event("alice", "sshd", "198.18.0.1");
    send.send(&unban).await;
    published.push(unban.id);
    wait_rows(&db, 302).await;
    // Every message acked, none awaiting an ack: no late duplicate can still come.
    wait_archived_all(shared_nats(), &site.stream, "archiver").await;
    // One row per event with two archivers and a message stored twice.
    db.assert_holds_exactly(&published).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn every_event_lands_once_in_mariadb() {
    every_event_once(TestDb::mariadb()).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn every_event_lands_once_in_sqlite() {
    let dir = tempfile::tempdir().unwrap();
    every_event_once(TestDb::sqlite(dir.path())).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_database_outage_loses_nothing() {
    let dir = tempfile::tempdir().unwrap();
    let site = Site::new();
    let db = TestDb::mariadb();
    let user = db.mariadb.clone().unwrap();
    let (_cfg, archiver) = site.archiver(dir.path(), "archiver", &db, "1h");
    let send = site.sender().await;
    let first = ban_event("alice", "sshd", "203.0.113.1");
    send.send(&first).await;
    let mut published = vec![first.id];
    wait_rows(&db, 1).await;
    assert_eq!(archiver.health().map(|h| h.0), Some(200));

    // The database goes away for the archiver: rights revoked, its connections killed.
    mariadb_root(&format!("REVOKE ALL ON {user}.* FROM '{user}'@'127.0.0.1'"));
    let kill = format!(
        "SELECT CONCAT('KILL ', id, ';') FROM information_schema.processlist WHERE user = '{user}'"
    );
    let out = std::process::Command::new("mariadb")
        .args(["-uroot", "-h127.0.0.1", "-N", "-e", &kill])
        .output()
        .unwrap();
    for stmt in String::from_utf8_lossy(&out.stdout).lines() {
        let _ = std::process::Command::new("mariadb")
            .args(["-uroot", "-h127.0.0.1", "-e", stmt])
            .output();
    }
    for i in 0..1000 {
        let event = ban_event("alice", "sshd", &format!("198.19.{}.{}", i / 250, i % 250));
        send.send(&event).await;
        published.push(event.id);
    }
    wait_for(WAIT, "the archiver to report the outage", || async {
        archiver
            .log_text()
            .contains("cannot write to the database")
            .then_some(())
    })
    .await;
    let (_, body) = wait_for(WAIT, "/healthz to say the database is away", || async {
        archiver.health().filter(|(code, _)| *code == 503)
    })
    .await;
    assert!(body.contains("database: unavailable"), "{body}");
    mariadb_root(&format!("GRANT ALL ON {user}.* TO '{user}'@'127.0.0.1'"));
    wait_rows(&db, 1001).await;
    wait_archived_all(shared_nats(), &site.stream, "archiver").await;
    db.assert_holds_exactly(&published).await;
    wait_for(WAIT, "/healthz to say the database is back", || async {
        archiver.health().filter(|(code, _)| *code == 200)
    })
    .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn malformed_messages_go_to_rejects_and_do_not_block() {
    let dir = tempfile::tempdir().unwrap();
    let site = Site::new();
    let db = TestDb::sqlite(dir.path());
    let (_cfg, _archiver) = site.archiver(dir.path(), "archiver", &db, "1h");
    let client = async_nats::connect(shared_nats()).await.unwrap();
    let js = async_nats::jetstream::new(client);
    let good = ban_event("alice", "sshd", "203.0.113.9");
    let spoofed = String::from_utf8(good.encode())
        .unwrap()
        .replace("203.0.113.9", "203.0.113.10");
    for (subject, payload) in [
        (
            format!("{}.ban.sshd.alice", site.prefix),
            "not json".to_owned(),
        ),
        (format!("{}.ban.sshd.mallory", site.prefix), spoofed),
    ] {
        js.publish(subject, payload.into())
            .await
            .unwrap()
            .await
            .unwrap();
    }
    site.sender().await.send(&good).await;
    wait_rows(&db, 1).await;
    assert_eq!(db.rejects("malformed").await, 1);
    assert_eq!(db.rejects("spoofed_origin").await, 1);
    db.assert_holds_exactly(&[good.id]).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_offline_subscriber_replays_what_the_stream_dropped() {
    let dir = tempfile::tempdir().unwrap();
    let site = Site::new();
    let db = TestDb::sqlite(dir.path());
    let max_age = "3s";
    let (_cfg, _archiver) = site.archiver(dir.path(), "archiver", &db, max_age);
    let send = site.sender().await;
    let (bob_cfg, bob) = site.subscriber(dir.path(), "bob", max_age, "");
    send.send(&ban_event("alice", "sshd", "203.0.113.1")).await;
    wait_for(WAIT, "bob applies the first ban", || async {
        (applied_lines(dir.path(), "bob").len() == 1).then_some(())
    })
    .await;
    assert_eq!(bob.terminate(), Some(0));

    let missed: Vec<String> = (0..50).map(|i| format!("198.18.7.{i}")).collect();
    for ip in &missed {
        send.send(&ban_event("charlie", "sshd", ip)).await;
    }
    send.send(&ban_event("charlie", "sshd", "203.0.113.99"))
        .await;
    send.send(&unban_event("charlie", "sshd", "203.0.113.99"))
        .await;
    wait_rows(&db, 53).await;
    // Wait until the stream has dropped them all.
    let client = async_nats::connect(shared_nats()).await.unwrap();
    let js = async_nats::jetstream::new(client);
    wait_for(WAIT, "the stream to age the events out", || async {
        let mut s = js.get_stream(&site.stream).await.ok()?;
        (s.info().await.ok()?.state.messages == 0).then_some(())
    })
    .await;

    let bob = Daemon::subscriber(&bob_cfg.path, &dir.path().join("bob"));
    send.send(&ban_event("alice", "sshd", "203.0.113.200"))
        .await;
    wait_for(
        WAIT,
        "bob applies the live ban after the replay",
        || async {
            applied_lines(dir.path(), "bob")
                .iter()
                .any(|l| l.contains("[203.0.113.200]"))
                .then_some(())
        },
    )
    .await;
    let lines = applied_lines(dir.path(), "bob");
    for ip in &missed {
        let n = lines
            .iter()
            .filter(|l| l.contains(&format!("[{ip}]")))
            .count();
        assert_eq!(n, 1, "{ip} applied once:\n{}", bob.log_text());
    }
    // 203.0.113.99 was banned and lifted while bob was away: its net effect is nothing.
    assert!(
        !lines.iter().any(|l| l.contains("[203.0.113.99]")),
        "{lines:?}"
    );
    assert_eq!(lines.len(), 1 + 50 + 1, "nothing twice:\n{lines:?}");
    assert!(bob.log_text().contains("caught up"), "{}", bob.log_text());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_new_host_backfills_exactly_the_active_bans() {
    let dir = tempfile::tempdir().unwrap();
    let site = Site::new();
    let db = TestDb::mariadb();
    let (_cfg, _archiver) = site.archiver(dir.path(), "archiver", &db, "1h");
    let send = site.sender().await;
    send.send(&ban_event("alice", "sshd", "203.0.113.1")).await; // active
    send.send(&ban_event("alice", "sshd", "203.0.113.2")).await; // lifted below
    send.send(&unban_event("alice", "sshd", "203.0.113.2"))
        .await;
    send.send(&ban_event("dave", "sshd", "203.0.113.3")).await; // the new host's own
    let mut expired = ban_event("alice", "sshd", "203.0.113.4");
    expired.time = SystemTime::now() - Duration::from_secs(7200);
    send.send(&expired).await;
    send.send(&ban_event("charlie", "nginx", "2001:db8::7"))
        .await; // active, IPv6
    wait_rows(&db, 6).await;

    let (_c, dave) = site.subscriber(dir.path(), "dave", "1h", "");
    wait_for(WAIT, "dave's backfill", || async {
        dave.log_text()
            .contains("backfill of active bans done")
            .then_some(())
    })
    .await;
    let mut got: Vec<String> = applied_lines(dir.path(), "dave")
        .iter()
        .map(|l| l.split_whitespace().nth(1).unwrap().to_owned())
        .collect();
    got.sort();
    assert_eq!(
        got,
        ["[2001:db8::7]", "[203.0.113.1]"],
        "{}",
        dave.log_text()
    );

    // The same host with include_own also gets its own active ban back.
    let dir2 = tempfile::tempdir().unwrap();
    let (_c, dave2) = site.subscriber(dir2.path(), "dave", "1h", "include_own = true\n");
    wait_for(WAIT, "dave's backfill with include_own", || async {
        dave2
            .log_text()
            .contains("backfill of active bans done")
            .then_some(())
    })
    .await;
    assert_eq!(applied_lines(dir2.path(), "dave").len(), 3);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn exports_load_in_nftables_and_history_finds_an_address() {
    let dir = tempfile::tempdir().unwrap();
    let site = Site::new();
    let db = TestDb::sqlite(dir.path());
    let (cfg, _archiver) = site.archiver(dir.path(), "archiver", &db, "1h");
    let send = site.sender().await;
    for ip in ["203.0.113.5", "2001:db8::5", "198.51.100.5"] {
        send.send(&ban_event("alice", "sshd", ip)).await;
    }
    send.send(&ban_event("bob", "sshd", "203.0.113.5")).await;
    wait_rows(&db, 4).await;
    let run = |args: &[&str]| {
        let out = std::process::Command::new(bin("shared-f2b-archiver"))
            .arg("--config")
            .arg(&cfg.path)
            .args(args)
            .output()
            .unwrap();
        assert!(
            out.status.success(),
            "{args:?}: {}",
            String::from_utf8_lossy(&out.stderr)
        );
        String::from_utf8(out.stdout).unwrap()
    };
    assert_eq!(
        run(&["export", "--format", "csv"]),
        "198.51.100.5,1\n203.0.113.5,2\n2001:db8::5,1\n",
        "active bans with their reporters"
    );
    let nft = run(&["export", "--format", "nftables"]);
    let path = dir.path().join("ruleset.nft");
    std::fs::write(&path, &nft).unwrap();
    if let Ok(check) = std::process::Command::new("nft")
        .arg("-c")
        .arg("-f")
        .arg(&path)
        .output()
    {
        assert!(
            check.status.success(),
            "nft -c rejected:\n{nft}\n{}",
            String::from_utf8_lossy(&check.stderr)
        );
    }
    let history: serde_json::Value =
        serde_json::from_str(&run(&["history", "--ip", "203.0.113.5", "--json"])).unwrap();
    assert_eq!(history.as_array().unwrap().len(), 2);
    assert!(run(&["active"]).contains("203.0.113.5"));
    assert!(run(&["stats"]).contains("alice"));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_archiver_runs_with_only_row_rights_once_an_admin_migrated() {
    let dir = tempfile::tempdir().unwrap();
    let site = Site::new();
    let db = TestDb::mariadb();
    let runtime_url = db.runtime_user_url();
    let cfg = site.config(
        dir.path(),
        "archiver",
        "1h",
        &format!("[archiver]\ndatabase_url = {runtime_url:?}\nauto_migrate = false\n"),
    );
    let run = |args: &[&str]| {
        std::process::Command::new(bin("shared-f2b-archiver"))
            .arg("--config")
            .arg(&cfg.path)
            .args(args)
            .output()
            .unwrap()
    };
    // The run-time user may not create tables...
    assert!(!run(&["migrate"]).status.success());
    // ...the admin migrates with its own URL; then the archiver works with row rights only.
    let out = run(&["migrate", "--database-url", &db.url]);
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let _archiver = Daemon::archiver(&cfg.path, &dir.path().join("archiver.log"));
    site.sender()
        .await
        .send(&ban_event("alice", "sshd", "203.0.113.40"))
        .await;
    wait_rows(&db, 1).await;
}

//! The MISP feed a MISP instance would fetch: bans archived in MariaDB by the running archiver
//! over two UTC days, one pardoned, one of an address in `[archiver] feed_allowlist`;
//! `export --format misp-feed` from the real binary; the feed read by PyMISP
//! (`tests/misp/check_feed.py`, with the Python `SHARED_F2B_PYMISP` names); the export run again
//! gives the same bytes; without `[archiver.misp]` the command says what to add.

use shared_f2b::control::{Control, ControlKind, parse_net};
use shared_f2b::subject::control_subject;
use shared_f2b_tests::db::TestDb;
use shared_f2b_tests::host::Daemon;
use shared_f2b_tests::nats::{EventSender, StreamGuard, ban_event};
use shared_f2b_tests::{HostConfig, bin, repo_root, shared_nats, unique, wait_for};
use sqlx::Row;
use std::collections::BTreeMap;
use std::path::Path;
use std::process::{Command, Output};
use std::time::{Duration, SystemTime};

const ORG_UUID: &str = "5f0c3c1e-1b2a-4c3d-9e8f-0123456789ab";

fn export(config: &Path, out: &Path) -> Output {
    Command::new(bin("shared-f2b-archiver"))
        .arg("--config")
        .arg(config)
        .args(["export", "--format", "misp-feed", "--out"])
        .arg(out)
        .output()
        .expect("shared-f2b-archiver runs")
}

fn files(dir: &Path) -> BTreeMap<String, Vec<u8>> {
    std::fs::read_dir(dir)
        .unwrap()
        .map(|e| {
            let e = e.unwrap();
            (
                e.file_name().to_string_lossy().into_owned(),
                std::fs::read(e.path()).unwrap(),
            )
        })
        .collect()
}

/// The Python with PyMISP the feed check runs on.
fn pymisp_python() -> String {
    std::env::var("SHARED_F2B_PYMISP").unwrap_or_else(|_| {
        panic!(
            "SHARED_F2B_PYMISP is not set: it names a Python that has PyMISP, which reads the \
             MISP feed as a MISP consumer does. Run scripts/test, which installs PyMISP in a \
             virtualenv and sets it, or: python3 -m venv /tmp/mispvenv && \
             /tmp/mispvenv/bin/pip install pymisp && \
             SHARED_F2B_PYMISP=/tmp/mispvenv/bin/python cargo test …"
        )
    })
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_misp_feed_from_the_archive_loads_in_pymisp() {
    let python = pymisp_python();
    let dir = tempfile::tempdir().unwrap();
    let db = TestDb::mariadb();
    let (prefix, stream) = (unique("misp"), unique("MISP"));
    let _guard = StreamGuard {
        url: shared_nats().into(),
        stream: stream.clone(),
    };
    let misp = format!(
        "[archiver.misp]\norg_name = \"Example University\"\norg_uuid = {ORG_UUID:?}\n\
         distribution = 1\ntlp = \"tlp:green\"\n"
    );
    let cfg = HostConfig::write(
        &dir.path().join("archiver"),
        "archiver",
        shared_nats(),
        &prefix,
        &stream,
        &format!(
            "[archiver]\ndatabase_url = {:?}\nfeed_allowlist = [\"203.0.113.0/24\"]\n{misp}",
            db.url
        ),
    );
    let _archiver = Daemon::archiver(&cfg.path, &cfg.path.with_extension("log"));

    // Two UTC days of bans through the stream and the running archiver, one of them pardoned,
    // one of the site's own net (never shared).
    let send = EventSender::connect(shared_nats(), &prefix, &stream).await;
    let mut yesterday = ban_event("alice", "sshd", "192.0.2.10");
    yesterday.time = SystemTime::now() - Duration::from_secs(86_400);
    let today = ban_event("bob", "sshd", "2001:db8::20");
    let mistake = ban_event("alice", "sshd", "198.51.100.30");
    let own = ban_event("bob", "sshd", "203.0.113.40");
    for event in [&yesterday, &today, &mistake, &own] {
        send.send(event).await;
    }
    let pardon = Control::pardon(
        "ops",
        parse_net("198.51.100.30").unwrap(),
        None,
        "our own scanner",
    )
    .unwrap();
    let client = async_nats::connect(shared_nats()).await.unwrap();
    let js = async_nats::jetstream::new(client);
    let subject = control_subject(&prefix, ControlKind::Pardon, "ops").unwrap();
    js.publish(subject, pardon.encode().into())
        .await
        .unwrap()
        .await
        .unwrap();
    let pool = db.pool().await;
    wait_for(
        Duration::from_secs(60),
        "4 bans and the pardon archived",
        || async {
            let n = |sql: &'static str| {
                let pool = pool.clone();
                async move {
                    sqlx::query(sql)
                        .fetch_one(&pool)
                        .await
                        .ok()
                        .map_or(0, |r| r.get::<i64, _>("n"))
                }
            };
            let events = n("SELECT COUNT(*) AS n FROM f2b_events").await;
            let controls = n("SELECT COUNT(*) AS n FROM f2b_control").await;
            (events >= 4 && controls >= 1).then_some(())
        },
    )
    .await;

    let feed = dir.path().join("feed");
    let out = export(&cfg.path, &feed);
    assert!(
        out.status.success(),
        "export: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    let summary = String::from_utf8_lossy(&out.stdout);
    assert!(
        summary.contains("2 days with 2 bans"),
        "one line saying what was written: {summary}"
    );

    // The real consumer's reading: PyMISP loads every event, the objects follow its fail2ban
    // template, and its feed_meta_generator agrees with our manifest.json and hashes.csv.
    let check = Command::new(&python)
        .arg(repo_root().join("tests/misp/check_feed.py"))
        .arg(&feed)
        .args(["--events", "2", "--objects", "2"])
        .args(["--org-name", "Example University", "--org-uuid", ORG_UUID])
        .args(["--tlp", "tlp:green"])
        .args(["--ip", "192.0.2.10", "--ip", "2001:db8::20"])
        .args([
            "--absent-ip",
            "198.51.100.30",
            "--absent-ip",
            "203.0.113.40",
        ])
        .output()
        .unwrap_or_else(|e| panic!("{python} runs: {e}"));
    assert!(
        check.status.success(),
        "check_feed.py:\n{}{}",
        String::from_utf8_lossy(&check.stdout),
        String::from_utf8_lossy(&check.stderr)
    );
    eprintln!("{}", String::from_utf8_lossy(&check.stdout).trim());

    // Run again: the feed is updated in place and nothing changed, byte for byte.
    let before = files(&feed);
    assert_eq!(before.len(), 4, "{:?}", before.keys());
    let out = export(&cfg.path, &feed);
    assert!(out.status.success());
    assert_eq!(files(&feed), before);

    // Without [archiver.misp] the command says which keys to add.
    let bare = HostConfig::write(
        &dir.path().join("bare"),
        "archiver",
        shared_nats(),
        &prefix,
        &stream,
        &format!("[archiver]\ndatabase_url = {:?}\n", db.url),
    );
    let out = export(&bare.path, &dir.path().join("nothing"));
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(!out.status.success());
    assert!(
        stderr.contains("[archiver.misp]")
            && stderr.contains("org_name")
            && stderr.contains("org_uuid"),
        "{stderr}"
    );
}

//! No host can pose as another: the shipped `deploy/nats-server.conf` on a real nats-server,
//! with every product role working inside its permissions and a spoofing host refused.

use shared_f2b::config::NatsConfig;
use shared_f2b::nats::stream_config;
use shared_f2b_tests::db::TestDb;
use shared_f2b_tests::host::Daemon;
use shared_f2b_tests::nats::{NatsServer, read_stream_as};
use shared_f2b_tests::{HostConfig, bin, repo_root, wait_for};
use std::path::Path;
use std::process::Command;
use std::time::Duration;

const WAIT: Duration = Duration::from_secs(60);

/// A config for `host` logging in as NATS `user` with the example's password and inbox.
fn config(dir: &Path, host: &str, user: &str, url: &str, extra: &str) -> HostConfig {
    let dir = dir.join(host).join(user);
    std::fs::create_dir_all(&dir).unwrap();
    let cfg = HostConfig::write(&dir, host, url, "f2b", "F2B_EVENTS", extra);
    cfg.add_nats_keys(&format!(
        "user = {user:?}\npassword = \"change-me-{user}\"\ninbox_prefix = \"_INBOX_{user}\""
    ));
    cfg
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_site_permissions_let_each_role_work_and_stop_a_spoofing_host() {
    let dir = tempfile::tempdir().unwrap();
    let conf = std::fs::read_to_string(repo_root().join("deploy/nats-server.conf")).unwrap();
    let nats = NatsServer::start_with_config(dir.path(), &conf);
    let url = nats.url();

    // The admin creates the stream; hosts may not.
    let admin = async_nats::ConnectOptions::with_user_and_password(
        "admin".into(),
        "change-me-admin".into(),
    )
    .connect(&url)
    .await
    .unwrap();
    let site = NatsConfig {
        servers: vec![url.clone()],
        stream_max_age: Duration::from_secs(3600),
        ..Default::default()
    };
    async_nats::jetstream::new(admin)
        .get_or_create_stream(stream_config(&site))
        .await
        .unwrap();

    // The archiver and bob's subscriber run under their own users.
    let db = TestDb::sqlite(dir.path());
    let arch = config(
        dir.path(),
        "archiver",
        "archiver",
        &url,
        &format!("[archiver]\ndatabase_url = {:?}\n", db.url),
    );
    let _archiver = Daemon::archiver(&arch.path, &dir.path().join("archiver.log"));
    let bob_dir = dir.path().join("bob-sub");
    let bob_sub = config(
        dir.path(),
        "bob",
        "bob",
        &url,
        &format!(
            "[subscriber]\napply = \"log\"\nlog_file = {:?}\nstate_dir = {:?}\n",
            bob_dir.join("shared.log").display().to_string(),
            bob_dir.join("state").display().to_string()
        ),
    );
    std::fs::create_dir_all(&bob_dir).unwrap();
    let _bob = Daemon::subscriber(&bob_sub.path, &bob_dir);

    // Alice publishes as herself.
    let alice = config(dir.path(), "alice", "alice", &url, "");
    let out = Command::new(bin("shared-f2b-publish"))
        .arg("--config")
        .arg(&alice.path)
        .args(["ban", "--jail", "sshd", "--ip", "203.0.113.7"])
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );

    // Bob, logged in as bob, claims to be alice: the server refuses, nothing is spooled.
    let spoof = config(dir.path(), "alice", "bob", &url, "");
    let out = Command::new(bin("shared-f2b-publish"))
        .arg("--config")
        .arg(&spoof.path)
        .args(["ban", "--jail", "sshd", "--ip", "198.51.100.66"])
        .output()
        .unwrap();
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(1), "{stderr}");
    assert!(
        stderr.contains("NATS refused") && stderr.to_lowercase().contains("permissions violation"),
        "{stderr}"
    );
    assert_eq!(spoof.spooled(), 0, "a refused event is not spooled");

    let events = read_stream_as(&url, "admin", "change-me-admin", "F2B_EVENTS").await;
    let ips: Vec<String> = events.iter().map(|(_, e)| e.ip.to_string()).collect();
    assert_eq!(
        ips,
        ["203.0.113.7"],
        "only alice's own event is on the stream"
    );

    // Bob's subscriber applied it; the archiver stored it.
    wait_for(WAIT, "bob's subscriber applies alice's ban", || async {
        let log = std::fs::read_to_string(bob_dir.join("shared.log")).unwrap_or_default();
        log.contains("[203.0.113.7] sshd alice").then_some(())
    })
    .await;
    wait_for(WAIT, "the archiver stores it", || async {
        (db.counts().await.0 == 1).then_some(())
    })
    .await;

    // A new host (charlie) backfills through the archiver's replay: requests and replies pass.
    let charlie_dir = dir.path().join("charlie-sub");
    std::fs::create_dir_all(&charlie_dir).unwrap();
    let charlie = config(
        dir.path(),
        "charlie",
        "charlie",
        &url,
        &format!(
            "[subscriber]\napply = \"log\"\nlog_file = {:?}\nstate_dir = {:?}\n",
            charlie_dir.join("shared.log").display().to_string(),
            charlie_dir.join("state").display().to_string()
        ),
    );
    let charlie_sub = Daemon::subscriber(&charlie.path, &charlie_dir);
    wait_for(WAIT, "charlie's backfill through the archiver", || async {
        charlie_sub
            .log_text()
            .contains("backfill of active bans done applied=1")
            .then_some(())
    })
    .await;
}

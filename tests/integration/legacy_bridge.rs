//! The bridge to the original's table (`[archiver.legacy]`): an old host that writes and reads
//! the table straight (tests/legacy/old_host.py put-sql / pull-sql, and a real fail2ban-server
//! banning from the pulled file) shares with a new host; nothing loops, nothing is written
//! twice after a restart.

use shared_f2b_tests::db::{TestDb, mariadb_root};
use shared_f2b_tests::host::Daemon;
use shared_f2b_tests::legacy::{LEGACY_TABLE, history, old_fail2ban};
use shared_f2b_tests::{site, wait_for};
use std::process::Command;
use std::time::Duration;

const WAIT: Duration = Duration::from_secs(30);
const OLD_HOSTNAME: &str = "oldweb.example.org";

/// The old host's script, which must succeed; what it printed.
fn old_host(args: &[&str]) -> String {
    let (ok, text) = shared_f2b_tests::legacy::old_host(args);
    assert!(ok, "{args:?}: {text}");
    text
}

fn table(name: &str, sql: &str) -> String {
    let out = Command::new("mariadb")
        .args(["-uroot", "-h127.0.0.1", "-N", "-B", name, "-e", sql])
        .output()
        .unwrap();
    String::from_utf8_lossy(&out.stdout).trim().to_owned()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_old_host_on_the_table_and_a_new_host_share_through_the_bridge() {
    let dir = tempfile::tempdir().unwrap();
    let nats = site::nats_with_hosts(dir.path(), &["oldweb"]);
    let url = nats.url();
    let old_db = TestDb::mariadb();
    let name = old_db.mariadb.clone().unwrap();
    mariadb_root(&format!("USE {name}; {LEGACY_TABLE};"));
    let db = TestDb::mariadb();
    let oldweb = site::config(dir.path(), "oldweb", "oldweb", &url, "");
    let keys = format!(
        "\n[archiver.legacy]\ndatabase_url = {:?}\npoll = \"500ms\"\n\n[archiver.legacy_api]\n\
         [[archiver.legacy_api.hosts]]\nconfig = {:?}\nhostname = {OLD_HOSTNAME:?}\n",
        old_db.url,
        oldweb.path.display().to_string()
    );
    let (cfg, archiver) = site::archiver_with(dir.path(), &url, &db, &keys);
    wait_for(WAIT, "the bridge's first round", || async {
        let log = archiver.log_text();
        (log.contains("reading the old table from its end")
            && log.contains("writing the stream's bans from here on"))
        .then_some(())
    })
    .await;
    let alice = site::host(dir.path(), "alice", &url, "ban", "", true);
    let old = old_fail2ban(dir.path());
    let database = old_db.url.trim_start_matches("mysql://").to_owned();
    let logdir = old.dir.display().to_string();

    // The old host's INSERT becomes its event; the new host applies it.
    old_host(&[
        "put-sql",
        &database,
        OLD_HOSTNAME,
        "SSH",
        "tcp",
        "ssh",
        "203.0.113.70",
        "3600",
    ]);
    wait_for(WAIT, "alice to apply the old host's row", || async {
        alice
            .shared_banned()
            .contains(&"203.0.113.70".to_owned())
            .then_some(())
    })
    .await;
    let h = history(&cfg.path, "203.0.113.70");
    assert!(h.contains(" oldweb ") && h.contains(" ssh "), "{h}");

    // The new host's ban is written into the table; the old host's pull bans it; its own
    // row is not in its pull.
    alice.fail_logins("198.51.100.80", 3);
    wait_for(WAIT, "the new host's ban in the old table", || async {
        let rows = table(
            &name,
            "SELECT hostname, ip FROM f2b WHERE ip = '198.51.100.80'",
        );
        (rows == "shared-f2b:alice\t198.51.100.80").then_some(())
    })
    .await;
    old_host(&["pull-sql", &database, OLD_HOSTNAME, "all", &logdir]);
    let pulled = std::fs::read_to_string(old.dir.join("filter-all.log")).unwrap();
    assert!(pulled.contains("[198.51.100.80] "), "{pulled}");
    assert!(!pulled.contains("203.0.113.70"), "its own: {pulled}");
    wait_for(WAIT, "the old host's Fail2Ban to ban it", || async {
        old.banned("shared-pull")
            .contains(&"198.51.100.80".to_owned())
            .then_some(())
    })
    .await;

    // Nothing loops: a few rounds later the table holds the two rows, the archive two bans.
    tokio::time::sleep(Duration::from_secs(2)).await;
    assert_eq!(table(&name, "SELECT COUNT(*) FROM f2b"), "2");
    assert_eq!(db.rows().await, 2, "{}", archiver.log_text());

    // After a restart, nothing again; the next ban goes on through.
    drop(archiver);
    let archiver = Daemon::archiver(&cfg.path, &dir.path().join("archiver-2.log"));
    alice.fail_logins("198.51.100.81", 3);
    wait_for(WAIT, "the next ban in the old table", || async {
        (table(&name, "SELECT COUNT(*) FROM f2b") == "3").then_some(())
    })
    .await;
    tokio::time::sleep(Duration::from_secs(2)).await;
    assert_eq!(table(&name, "SELECT COUNT(*) FROM f2b"), "3");
    assert_eq!(db.rows().await, 3, "{}", archiver.log_text());
    let rows = table(
        &name,
        "SELECT hostname, jail, ip, bantime FROM f2b ORDER BY id",
    );
    assert!(
        rows.contains("shared-f2b:alice\tlogin\t198.51.100.81\t3600"),
        "{rows}"
    );
}

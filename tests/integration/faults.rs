//! Faults survived with nothing lost: crashes (`kill -9`) of the subscriber and the archiver,
//! 50 publishers at once during an outage, an unwritable spool.

use shared_f2b::Event;
use shared_f2b_tests::db::TestDb;
use shared_f2b_tests::host::{Daemon, Host, HostSpec};
use shared_f2b_tests::nats::{
    NatsServer, StreamGuard, ban_event, burst, read_stream, wait_archived_all,
};
use shared_f2b_tests::{HostConfig, bin, shared_nats, unique, wait_for};
use std::process::{Command, Stdio};
use std::time::Duration;

const WAIT: Duration = Duration::from_secs(120);

fn events(origin: &str, n: usize, third: u8) -> Vec<Event> {
    (0..n)
        .map(|i| {
            ban_event(
                origin,
                "sshd",
                &format!("10.{third}.{}.{}", i / 250, i % 250),
            )
        })
        .collect()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_subscriber_killed_mid_burst_applies_everything_after_restart() {
    let dir = tempfile::tempdir().unwrap();
    let (prefix, stream) = (unique("fk"), unique("FK"));
    let _guard = StreamGuard {
        url: shared_nats().into(),
        stream: stream.clone(),
    };
    let mut bob = Host::new(
        dir.path(),
        &HostSpec {
            name: "bob",
            nats_url: shared_nats(),
            prefix: &prefix,
            stream: &stream,
            apply: "ban",
            subscriber_extra: "",
            shared_jail_extra: "",
        },
    );
    // The archiver creates the stream and is the catch-up service the restarted subscriber uses.
    let db = TestDb::sqlite(dir.path());
    let cfg = HostConfig::archiver(dir.path(), shared_nats(), &prefix, &stream, &db.url);
    let _archiver = Daemon::archiver(&cfg.path, &dir.path().join("archiver.log"));
    bob.start_subscriber();
    let evs = events("alice", 3000, 1);
    burst(shared_nats(), &prefix, &evs).await;
    let sub = bob.subscriber.take().unwrap();
    wait_for(WAIT, "the first batches applied", || async {
        sub.log_text().contains("batch applied").then_some(())
    })
    .await;
    sub.kill9();
    bob.start_subscriber();
    wait_for(WAIT, "all 3000 banned after the crash", || async {
        let banned = bob.shared_banned();
        (banned.len() >= evs.len()).then_some(())
    })
    .await;
    let banned = bob.shared_banned();
    for e in &evs {
        assert!(
            banned.contains(&e.ip.to_string()),
            "{} left unapplied",
            e.ip
        );
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_archiver_killed_mid_batch_stores_everything_once() {
    let dir = tempfile::tempdir().unwrap();
    let (prefix, stream) = (unique("fa"), unique("FA"));
    let _guard = StreamGuard {
        url: shared_nats().into(),
        stream: stream.clone(),
    };
    let db = TestDb::mariadb();
    let cfg = HostConfig::archiver(dir.path(), shared_nats(), &prefix, &stream, &db.url);
    let log = dir.path().join("archiver.log");
    // The first start creates the stream and the consumer; then the events wait on the stream.
    Daemon::archiver(&cfg.path, &log).kill9();
    let n = 20_000;
    let published = events("alice", n, 2);
    burst(shared_nats(), &prefix, &published).await;
    let archiver = Daemon::archiver(&cfg.path, &log);
    wait_for(WAIT, "some rows, not all", || async {
        let rows = db.rows().await;
        (rows > 0).then_some(rows)
    })
    .await;
    archiver.kill9();
    let rows_at_crash = db.rows().await;
    let _archiver = Daemon::archiver(&cfg.path, &log);
    wait_for(WAIT, "every event archived after the crash", || async {
        (db.rows().await >= n as i64).then_some(())
    })
    .await;
    wait_archived_all(shared_nats(), &stream, "archiver").await;
    eprintln!("crashed at {rows_at_crash} rows");
    let ids: Vec<_> = published.iter().map(|e| e.id).collect();
    db.assert_holds_exactly(&ids).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn fifty_publishers_during_an_outage_are_all_delivered_once() {
    let dir = tempfile::tempdir().unwrap();
    let mut nats = NatsServer::start_in(dir.path());
    let stream = unique("FP");
    let cfg = HostConfig::write(dir.path(), "alice", &nats.url(), &unique("fp"), &stream, "");
    nats.stop();
    let children: Vec<_> = (0..50)
        .map(|i| {
            Command::new(bin("shared-f2b-publish"))
                .arg("--config")
                .arg(&cfg.path)
                .args(["ban", "--jail", "sshd", "--ip", &format!("198.51.100.{i}")])
                .stdout(Stdio::null())
                .stderr(Stdio::null())
                .spawn()
                .unwrap()
        })
        .collect();
    for mut child in children {
        assert!(child.wait().unwrap().success());
    }
    assert_eq!(cfg.spooled(), 50);
    nats.start();
    let out = Command::new(bin("shared-f2b-publish"))
        .arg("--config")
        .arg(&cfg.path)
        .arg("flush")
        .output()
        .unwrap();
    assert_eq!(
        String::from_utf8_lossy(&out.stdout).trim(),
        "sent 50, remaining 0, set aside 0"
    );
    assert_eq!(cfg.spooled(), 0);
    let mut ips: Vec<String> = read_stream(&nats.url(), &stream)
        .await
        .iter()
        .map(|(_, e)| e.ip.to_string())
        .collect();
    ips.sort();
    ips.dedup();
    assert_eq!(ips.len(), 50);
    assert_eq!(
        read_stream(&nats.url(), &stream).await.len(),
        50,
        "once each"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_unwritable_spool_is_a_failure_fail2ban_sees() {
    let dir = tempfile::tempdir().unwrap();
    let mut nats = NatsServer::start_in(dir.path());
    let blocker = dir.path().join("not-a-dir");
    std::fs::write(&blocker, "").unwrap();
    let cfg = HostConfig::write(
        dir.path(),
        "alice",
        &nats.url(),
        &unique("fs"),
        &unique("FS"),
        "",
    );
    let text = std::fs::read_to_string(&cfg.path).unwrap();
    let spool_line = text
        .lines()
        .find(|l| l.starts_with("spool_dir"))
        .unwrap()
        .to_owned();
    let bad = format!(
        "spool_dir = {:?}",
        blocker.join("spool").display().to_string()
    );
    std::fs::write(&cfg.path, text.replace(&spool_line, &bad)).unwrap();
    nats.stop();
    let out = Command::new(bin("shared-f2b-publish"))
        .arg("--config")
        .arg(&cfg.path)
        .args(["ban", "--jail", "sshd", "--ip", "192.0.2.1"])
        .output()
        .unwrap();
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(1), "{stderr}");
    assert!(stderr.contains("could not spool it"), "{stderr}");
}

/// Unmounts a tmpfs when the test ends, pass or fail.
struct Mounted(std::path::PathBuf);

impl Drop for Mounted {
    fn drop(&mut self) {
        let _ = Command::new("umount").arg(&self.0).status();
    }
}

/// The spool on a full disk (a tiny tmpfs, filled): with NATS unreachable the action cannot
/// keep the event, so it exits 1 and says so, and leaves no temporary file behind.
#[test]
fn a_full_disk_fails_the_action_clearly_and_leaves_no_temporary_file() {
    let dir = tempfile::tempdir().unwrap();
    let unreachable = format!("nats://127.0.0.1:{}", shared_f2b_tests::free_port());
    let cfg = HostConfig::write(dir.path(), "alice", &unreachable, "ff", "FF", "");
    std::fs::create_dir_all(&cfg.spool_dir).unwrap();
    let ok = Command::new("mount")
        .args(["-t", "tmpfs", "-o", "size=64k", "tmpfs"])
        .arg(&cfg.spool_dir)
        .status()
        .expect("mount runs")
        .success();
    assert!(ok, "mounting a tmpfs needs root");
    let _mounted = Mounted(cfg.spool_dir.clone());
    // Fill it: write until the disk says no.
    {
        use std::io::Write;
        let mut filler = std::fs::File::create(cfg.spool_dir.join("filler")).unwrap();
        while filler.write_all(&[0u8; 4096]).is_ok() {}
        let _ = filler.sync_all();
    }
    let out = Command::new(bin("shared-f2b-publish"))
        .arg("--config")
        .arg(&cfg.path)
        .args(["ban", "--jail", "sshd", "--ip", "203.0.113.77"])
        .output()
        .unwrap();
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(1), "{stderr}");
    assert!(
        stderr.contains("could not spool it") && stderr.contains("No space left on device"),
        "a clear message:\n{stderr}"
    );
    // The records of sent events (`sent/`, `[publisher] confirm`) may be there, empty.
    let sent = cfg.spool_dir.join("sent");
    let sent_empty = std::fs::read_dir(&sent).map_or(true, |mut d| d.next().is_none());
    let left: Vec<String> = std::fs::read_dir(&cfg.spool_dir)
        .unwrap()
        .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
        .filter(|name| name != "filler" && !(name == "sent" && sent_empty))
        .collect();
    assert!(left.is_empty(), "nothing left in the spool: {left:?}");
}

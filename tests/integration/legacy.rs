//! Coming from the original Shared Fail2Ban: `import-legacy` reads its `f2b` table (local
//! times, free-text columns, no validation) into the archive.

use shared_f2b_tests::db::{TestDb, mariadb_root};
use shared_f2b_tests::legacy::LEGACY_TABLE;
use shared_f2b_tests::{HostConfig, bin, shared_nats, unique};
use std::path::Path;
use std::process::Output;
use std::time::Duration;

/// Rows like the original's: (hostname, created, jail, protocol, port, ip, bantime).
const ROWS: &str = "INSERT INTO f2b (hostname, created, jail, protocol, port, ip, bantime) VALUES \
    ('web1.example.org', '2024-07-01 12:00:00', 'SSH', 'tcp', 'ssh', '192.0.2.1', '900'), \
    ('web1.example.org', '2024-01-15 08:30:00', 'sshd', 'tcp', '0:65535', '192.0.2.1', '-1'), \
    (NULL, '2024-10-27 01:30:00', 'SSH', 'tcp', '22', '2001:db8::1', '3600'), \
    ('DB2.example.org', '2024-03-31 01:30:00', 'apache-auth', 'tcp', 'http,https', '198.51.100.7', NULL), \
    ('web1.example.org', '2024-07-01 12:00:01', 'SSH', 'tcp', 'ssh', '999.0.0.1', '900'), \
    ('web1.example.org', '2024-07-01 12:00:02', 'SSH', 'tcp', 'ssh', 'not-an-ip', '900'), \
    ('web1.example.org', '2024-07-01 12:00:03', 'ssh''; DROP TABLE f2b; --', 'tcp', 'ssh', '192.0.2.9', '900'), \
    ('web1.example.org', '2024-07-01 12:00:04', 'SSH', 'tcp', 'ssh', '192.0.2.10', 'forever'), \
    ('web1.example.org', NULL, 'SSH', 'tcp', 'ssh', '192.0.2.11', '900'), \
    ('web1.example.org', '2024-07-01 12:00:05', 'SSH', 'tcp', '1;DROP TABLE f2b', '192.0.2.12', '900')";

fn archiver(cfg: &HostConfig, args: &[&str]) -> Output {
    std::process::Command::new(bin("shared-f2b-archiver"))
        .arg("--config")
        .arg(&cfg.path)
        .args(args)
        .output()
        .unwrap()
}

fn ok(out: Output) -> String {
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8(out.stdout).unwrap()
}

fn config(dir: &Path, archive: &TestDb) -> HostConfig {
    HostConfig::archiver(
        dir,
        shared_nats(),
        &unique("leg"),
        &unique("LEG"),
        &archive.url,
    )
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_original_table_is_imported_in_utc_once_with_bad_rows_reported() {
    let dir = tempfile::tempdir().unwrap();
    let source = TestDb::mariadb();
    let name = source.mariadb.clone().unwrap();
    mariadb_root(&format!("USE {name}; {LEGACY_TABLE}; {ROWS};"));
    let archive = TestDb::mariadb();
    let cfg = config(dir.path(), &archive);
    let hosts = dir.path().join("hosts");
    std::fs::write(
        &hosts,
        "# legacy hostname -> host id\ndb2.example.org database-2\n",
    )
    .unwrap();
    let import = |extra: &[&str]| {
        let mut args = vec![
            "import-legacy",
            "--from",
            &source.url,
            "--timezone",
            "Europe/London",
            "--hosts",
            hosts.to_str().unwrap(),
        ];
        args.extend_from_slice(extra);
        ok(archiver(&cfg, &args))
    };

    let dry = import(&["--dry-run"]);
    assert!(dry.contains("would import: 5"), "{dry}");
    assert_eq!(archive.rows().await, 0, "a dry run writes nothing");

    let first = import(&[]);
    assert!(first.contains("rows read: 10"), "{first}");
    assert!(first.contains("imported: 5"), "{first}");
    assert!(first.contains("refused: 5"), "{first}");
    assert!(first.contains("bad_ip: 2 (ids 5, 6)"), "{first}");
    assert!(first.contains("bad_jail: 1 (ids 7)"), "{first}");
    assert!(first.contains("bad_bantime: 1 (ids 8)"), "{first}");
    assert!(first.contains("bad_created: 1 (ids 9)"), "{first}");
    assert!(
        first.contains("ambiguous local times (daylight saving): 2"),
        "{first}"
    );
    assert!(first.contains("ports or protocols not kept: 1"), "{first}");
    assert!(
        first.contains("db2.example.org -> database-2 (1 rows)"),
        "{first}"
    );
    assert!(first.contains("NULL -> unknown (1 rows)"), "{first}");
    assert!(
        first.contains("web1.example.org -> web1 (3 rows)"),
        "{first}"
    );
    assert!(
        !first.contains(":pw@"),
        "the password is not shown: {first}"
    );
    assert_eq!(archive.rows().await, 5);

    // Times in UTC: 12:00 BST and 08:30 GMT; the jail lower-cased; the ports kept.
    let history = ok(archiver(&cfg, &["history", "--ip", "192.0.2.1"]));
    let lines: Vec<&str> = history.lines().skip(1).collect();
    assert_eq!(lines.len(), 2, "{history}");
    assert!(
        lines[0].starts_with("2024-07-01T11:00:00Z ban"),
        "{history}"
    );
    assert!(
        lines[0].contains(" ssh ") && lines[0].contains(" web1 "),
        "{history}"
    );
    assert!(lines[0].ends_with("ssh/tcp"), "{history}");
    assert!(
        lines[1].starts_with("2024-01-15T08:30:00Z ban"),
        "{history}"
    );
    assert!(
        lines[1].contains(" sshd ") && lines[1].contains("-1"),
        "{history}"
    );
    assert!(lines[1].ends_with("0:65535/tcp"), "{history}");
    // History only: the permanent ban of 2024 is not a ban in force (no host applied it).
    let active = ok(archiver(&cfg, &["active"]));
    assert!(!active.contains("192.0.2.1"), "{active}");
    // 01:30 on 27 October happened twice: the earlier (BST) is taken. IPv6 is kept.
    let v6 = ok(archiver(&cfg, &["history", "--ip", "2001:db8::1"]));
    assert!(v6.contains("2024-10-27T00:30:00Z ban"), "{v6}");
    assert!(v6.contains(" unknown "), "{v6}");
    // 01:30 on 31 March never happened: the time after the gap, 02:30 BST.
    let gap = ok(archiver(&cfg, &["history", "--ip", "198.51.100.7"]));
    assert!(gap.contains("2024-03-31T01:30:00Z ban"), "{gap}");
    assert!(
        gap.contains(" database-2 ") && gap.contains(" 900 "),
        "{gap}"
    );

    // Again: nothing is imported twice.
    let second = import(&[]);
    assert!(second.contains("imported: 0"), "{second}");
    assert!(second.contains("already archived: 5"), "{second}");
    assert_eq!(archive.rows().await, 5);
    // Another host map: --replace imports again from scratch.
    std::fs::write(&hosts, "db2.example.org db-two\n").unwrap();
    let replaced = import(&["--replace"]);
    assert!(
        replaced.contains("deleted first (--replace): 5"),
        "{replaced}"
    );
    assert!(replaced.contains("imported: 5"), "{replaced}");
    assert_eq!(archive.rows().await, 5);
    let gap = ok(archiver(&cfg, &["history", "--ip", "198.51.100.7"]));
    assert!(gap.contains(" db-two "), "{gap}");
    // The table is as it was (nothing of a row is ever run).
    mariadb_root(&format!("SELECT COUNT(*) FROM {name}.f2b"));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_wrong_source_or_zone_is_a_clear_error_and_changes_nothing() {
    let dir = tempfile::tempdir().unwrap();
    let archive = TestDb::mariadb();
    let cfg = config(dir.path(), &archive);
    let zone = archiver(
        &cfg,
        &[
            "import-legacy",
            "--from",
            &archive.url,
            "--timezone",
            "Mars/Olympus",
        ],
    );
    assert!(!zone.status.success());
    let text = String::from_utf8_lossy(&zone.stderr);
    assert!(text.contains("unknown time zone Mars/Olympus"), "{text}");
    let scheme = archiver(&cfg, &["import-legacy", "--from", "postgres://db/f2b"]);
    assert!(!scheme.status.success());
    assert!(String::from_utf8_lossy(&scheme.stderr).contains("mysql://"));
    // The archive's own database has no table f2b.
    let missing = archiver(&cfg, &["import-legacy", "--from", &archive.url]);
    assert!(!missing.status.success());
    let text = String::from_utf8_lossy(&missing.stderr);
    assert!(text.contains("cannot read table f2b"), "{text}");
    assert!(!text.contains(":pw@"), "{text}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn publish_active_makes_every_host_apply_the_bans_still_running() {
    let dir = tempfile::tempdir().unwrap();
    let nats = shared_f2b_tests::site::nats_with_hosts(dir.path(), &["web1"]);
    let url = nats.url();
    let source = TestDb::mariadb();
    let name = source.mariadb.clone().unwrap();
    // Local times as the hosts wrote them: the database's NOW() is this machine's zone.
    mariadb_root(&format!(
        "USE {name}; {LEGACY_TABLE}; INSERT INTO f2b (hostname, created, jail, protocol, port, ip, bantime) VALUES \
         ('web1.example.org', NOW() - INTERVAL 10 MINUTE, 'SSH', 'tcp', 'ssh', '192.0.2.50', '3600'), \
         ('web1.example.org', NOW() - INTERVAL 2 DAY, 'SSH', 'tcp', 'ssh', '192.0.2.51', '3600'), \
         ('db2.example.org', NOW() - INTERVAL 5 MINUTE, 'SSH', 'tcp', 'ssh', '192.0.2.52', '3600');"
    ));
    let archive = TestDb::mariadb();
    let web1 = shared_f2b_tests::site::config(dir.path(), "web1", "web1", &url, "");
    let keys = format!(
        "[archiver.legacy_api]\n[[archiver.legacy_api.hosts]]\nconfig = {:?}\n",
        web1.path.display().to_string()
    );
    let (cfg, _archiver) = shared_f2b_tests::site::archiver_with(dir.path(), &url, &archive, &keys);
    let alice = shared_f2b_tests::site::host(dir.path(), "alice", &url, "ban", "", true);
    for run in 0..2 {
        let out = ok(archiver(
            &cfg,
            &["import-legacy", "--from", &source.url, "--publish-active"],
        ));
        assert!(
            out.contains("published as their hosts' (every host applies them now): 1"),
            "run {run}: {out}"
        );
        assert!(
            out.contains("no login for host db2 in [[archiver.legacy_api.hosts]]: 1"),
            "{out}"
        );
    }
    shared_f2b_tests::wait_for(
        Duration::from_secs(30),
        "alice to apply web1's running ban",
        || async {
            alice
                .shared_banned()
                .contains(&"192.0.2.50".to_owned())
                .then_some(())
        },
    )
    .await;
    let banned = alice.shared_banned();
    assert!(
        !banned.contains(&"192.0.2.51".to_owned()),
        "ended: {banned:?}"
    );
    assert!(
        !banned.contains(&"192.0.2.52".to_owned()),
        "no login: {banned:?}"
    );
    // The history row and the published ban, once each (the second run's was a duplicate).
    shared_f2b_tests::wait_for(
        Duration::from_secs(30),
        "the published ban in the archive",
        || async { (archive.rows().await == 4).then_some(()) },
    )
    .await;
    tokio::time::sleep(Duration::from_secs(1)).await;
    assert_eq!(archive.rows().await, 4);
    let active = ok(archiver(&cfg, &["active"]));
    assert!(active.contains("192.0.2.50"), "{active}");
}

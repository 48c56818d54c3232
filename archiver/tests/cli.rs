//! The command line as a user meets it (this also makes `cargo test` build the binary that the
//! workspace's integration tests run).

use std::process::Command;

const BIN: &str = env!("CARGO_BIN_EXE_shared-f2b-archiver");

#[test]
fn help_lists_the_operator_commands() {
    let out = Command::new(BIN).arg("--help").output().unwrap();
    assert!(out.status.success());
    let text = String::from_utf8_lossy(&out.stdout);
    for word in ["run", "migrate", "history", "active", "export", "stats"] {
        assert!(text.contains(word), "{word} missing from:\n{text}");
    }
}

#[test]
fn an_unknown_database_scheme_is_a_clear_error() {
    let dir = tempfile::tempdir().unwrap();
    let config = dir.path().join("c.toml");
    std::fs::write(
        &config,
        "host_id = \"a\"\n[archiver]\ndatabase_url = \"postgres://db/x\"\n",
    )
    .unwrap();
    let out = Command::new(BIN)
        .arg("--config")
        .arg(&config)
        .arg("stats")
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(1));
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(
        stderr.contains("unsupported database_url scheme \"postgres\""),
        "{stderr}"
    );
    assert!(
        !stderr.contains("db/x"),
        "the URL itself (it may hold a password) is not shown"
    );
}

#[test]
fn bad_export_arguments_are_clear_errors_and_write_nothing() {
    let dir = tempfile::tempdir().unwrap();
    let config = dir.path().join("c.toml");
    std::fs::write(
        &config,
        format!(
            "host_id = \"a\"\n[archiver]\ndatabase_url = \"sqlite://{}/a.db\"\n",
            dir.path().display()
        ),
    )
    .unwrap();
    let out_dir = dir.path().join("feed");
    let out_arg = out_dir.display().to_string();
    for (args, says) in [
        (vec!["--format", "xml"], "invalid value 'xml'"),
        (vec!["--family", "5"], "family \"5\": use 4 or 6"),
        (vec!["--name", "a;b"], "name \"a;b\""),
        (vec!["--min-reporters", "0"], "min_reporters 0"),
        (vec!["--jail", "a b"], "jail"),
        (
            vec!["--all", "--format", "nftables"],
            "--all lists every address",
        ),
        (vec!["--all", "--jail", "sshd"], "cannot be used with"),
        (
            vec!["--out", &out_arg],
            "--out and --since are for --format misp-feed",
        ),
        (
            vec!["--format", "misp-feed"],
            "--format misp-feed needs --out DIR",
        ),
        (
            vec!["--format", "misp-feed", "--out", &out_arg],
            "needs [archiver.misp]",
        ),
    ] {
        let out = Command::new(BIN)
            .arg("--config")
            .arg(&config)
            .arg("export")
            .args(&args)
            .output()
            .unwrap();
        assert!(!out.status.success(), "{args:?}");
        let stderr = String::from_utf8_lossy(&out.stderr);
        assert!(stderr.contains(says), "{args:?}: {stderr}");
        assert!(out.stdout.is_empty(), "{args:?}");
    }
    assert!(!out_dir.exists());
}

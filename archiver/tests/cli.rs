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

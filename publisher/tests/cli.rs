//! The command line as a user meets it (this also makes `cargo test` build the binary that the
//! workspace's integration tests run).

use std::process::Command;

const BIN: &str = env!("CARGO_BIN_EXE_shared-f2b-publish");

#[test]
fn help_lists_the_subcommands() {
    let out = Command::new(BIN).arg("--help").output().unwrap();
    assert!(out.status.success());
    let text = String::from_utf8_lossy(&out.stdout);
    for word in ["ban", "unban", "flush", "--config"] {
        assert!(text.contains(word), "{word} missing from:\n{text}");
    }
}

#[test]
fn a_missing_subcommand_is_a_usage_error() {
    let out = Command::new(BIN).output().unwrap();
    assert_eq!(out.status.code(), Some(2));
}

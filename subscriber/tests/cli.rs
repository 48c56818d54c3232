//! The command line as a user meets it (this also makes `cargo test` build the binary that the
//! workspace's integration tests run).

use std::process::Command;

const BIN: &str = env!("CARGO_BIN_EXE_shared-f2b-subscriber");

#[test]
fn help_names_the_config() {
    let out = Command::new(BIN).arg("--help").output().unwrap();
    assert!(out.status.success());
    assert!(String::from_utf8_lossy(&out.stdout).contains("--config"));
}

#[test]
fn an_unreadable_config_is_a_clear_error() {
    let out = Command::new(BIN)
        .args(["--config", "/nonexistent/shared-f2b.toml"])
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(2));
    assert!(String::from_utf8_lossy(&out.stderr).contains("cannot read config file"));
}

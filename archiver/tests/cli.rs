//! The command line as a user meets it (this also makes `cargo test` build the binary).

use std::process::Command;

const BIN: &str = env!("CARGO_BIN_EXE_shared-f2b-archiver");

#[test]
fn says_it_is_not_built_yet() {
    let out = Command::new(BIN).output().unwrap();
    assert_eq!(out.status.code(), Some(1));
    assert!(String::from_utf8_lossy(&out.stderr).contains("not built yet"));
}

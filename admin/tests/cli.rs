//! The command line as an operator meets it: the commands are there, and bad input is exit 2
//! with a clear message before anything is sent (the config names no reachable server).

use std::process::{Command, Output};

const BIN: &str = env!("CARGO_BIN_EXE_shared-f2b-admin");

fn run(args: &[&str]) -> Output {
    let dir = tempfile::tempdir().unwrap();
    let config = dir.path().join("c.toml");
    // Port 9 (discard): a publish would fail with exit 1, not 2.
    std::fs::write(
        &config,
        "host_id = \"ops\"\n[nats]\nservers = [\"nats://127.0.0.1:9\"]\n",
    )
    .unwrap();
    Command::new(BIN)
        .arg("--config")
        .arg(&config)
        .args(args)
        .output()
        .unwrap()
}

#[test]
fn help_lists_the_commands() {
    let out = Command::new(BIN).arg("--help").output().unwrap();
    assert!(out.status.success());
    let text = String::from_utf8_lossy(&out.stdout);
    for word in ["pardon", "allow", "revoke", "ban", "list"] {
        assert!(text.contains(word), "{word} missing from:\n{text}");
    }
}

#[test]
fn bad_input_is_exit_2_and_says_why() {
    for (args, says) in [
        (
            &["pardon", "--ip", "nope", "--reason", "x"][..],
            "not an address or net",
        ),
        (
            &["pardon", "--ip", "192.0.2.7", "--reason", ""],
            "a reason is required",
        ),
        (
            &["pardon", "--ip", "192.0.2.7", "--reason", "  "],
            "a reason is required",
        ),
        (
            &[
                "allow",
                "--net",
                "192.0.2.0/24",
                "--for",
                "soon",
                "--reason",
                "x",
            ],
            "duration",
        ),
        (
            &["ban", "--ip", "192.0.2.0/24", "--reason", "x"],
            "is a net",
        ),
        (
            &[
                "ban",
                "--ip",
                "192.0.2.1",
                "--bantime",
                "-5",
                "--reason",
                "x",
            ],
            "bantime",
        ),
        (&["revoke", "42"], "not an id"),
    ] {
        let out = run(args);
        let err = String::from_utf8_lossy(&out.stderr);
        assert_eq!(out.status.code(), Some(2), "{args:?}: {err}");
        assert!(err.contains(says), "{args:?}: {err}");
    }
}

#[test]
fn an_unreachable_server_is_exit_1() {
    let out = run(&["pardon", "--ip", "192.0.2.7", "--reason", "x"]);
    assert_eq!(
        out.status.code(),
        Some(1),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
}

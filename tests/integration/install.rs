//! `scripts/install` into a staging root: every file in place, the units pass
//! `systemd-analyze verify`, and the installed binaries and Fail2Ban files work with a real
//! fail2ban-server.

use shared_f2b_tests::fail2ban::Fail2Ban;
use shared_f2b_tests::nats::{StreamGuard, read_stream};
use shared_f2b_tests::{HostConfig, bin, repo_root, shared_nats, unique, wait_for};
use std::process::Command;
use std::time::Duration;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_install_script_puts_working_files_in_place() {
    let dir = tempfile::tempdir().unwrap();
    let root = dir.path().join("root");
    let bindir = bin("shared-f2b-publish").parent().unwrap().to_path_buf();
    let out = Command::new(repo_root().join("scripts/install"))
        .env("DESTDIR", &root)
        .env("BINDIR", &bindir)
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    for f in [
        "usr/local/bin/shared-f2b-publish",
        "usr/local/bin/shared-f2b-subscriber",
        "usr/local/bin/shared-f2b-archiver",
        "usr/local/bin/shared-f2b-admin",
        "etc/systemd/system/shared-f2b-subscriber.service",
        "etc/systemd/system/shared-f2b-archiver.service",
        "etc/fail2ban/action.d/shared-f2b.conf",
        "etc/fail2ban/filter.d/shared-f2b.conf",
        "etc/fail2ban/jail.d/shared.conf",
        "etc/shared-f2b/config.toml",
        "usr/local/share/doc/shared-f2b/README.md",
        "var/lib/shared-f2b/spool",
        "var/log/shared-f2b.log",
    ] {
        assert!(root.join(f).exists(), "{f} not installed");
    }
    let unit =
        std::fs::read_to_string(root.join("etc/systemd/system/shared-f2b-subscriber.service"))
            .unwrap();
    assert!(
        unit.contains("ExecStart=/usr/local/bin/shared-f2b-subscriber")
            && unit.contains("Type=notify")
    );

    // systemd's own check, on copies whose ExecStart points into the staging root.
    if Command::new("systemd-analyze")
        .arg("--version")
        .output()
        .is_ok()
    {
        let check = dir.path().join("verify");
        std::fs::create_dir_all(&check).unwrap();
        let mut units = Vec::new();
        for name in [
            "shared-f2b-subscriber.service",
            "shared-f2b-archiver.service",
        ] {
            let text = std::fs::read_to_string(root.join("etc/systemd/system").join(name)).unwrap();
            let text = text.replace(
                "/usr/local/bin",
                &root.join("usr/local/bin").display().to_string(),
            );
            std::fs::write(check.join(name), text).unwrap();
            units.push(check.join(name));
        }
        let out = Command::new("systemd-analyze")
            .arg("verify")
            .args(&units)
            .output()
            .unwrap();
        let said = format!(
            "{}{}",
            String::from_utf8_lossy(&out.stdout),
            String::from_utf8_lossy(&out.stderr)
        );
        assert!(
            out.status.success() && said.trim().is_empty(),
            "systemd-analyze verify: {said}"
        );
    }

    // The installed files with a real fail2ban-server: the shared jail comes from the installed
    // jail.d (its firewall action swapped for a no-op here), and a ban in a jail carrying the
    // installed action is published by the installed binary.
    let (prefix, stream) = (unique("in"), unique("IN"));
    let _guard = StreamGuard {
        url: shared_nats().into(),
        stream: stream.clone(),
    };
    let cfg = HostConfig::write(
        &dir.path().join("cfg"),
        "alice",
        shared_nats(),
        &prefix,
        &stream,
        "",
    );
    let sandbox = dir.path().join("f2b");
    std::fs::create_dir_all(&sandbox).unwrap();
    for log in ["auth.log", "shared.log"] {
        std::fs::write(sandbox.join(log), "").unwrap();
    }
    let jails = format!(
        "[DEFAULT]\nbackend = polling\n\n[shared]\nlogpath = {shared}\naction = noop\n\n\
         [login]\nenabled = true\nfilter = login\nlogpath = {auth}\nmaxretry = 2\n\
         action = shared-f2b[publisher=\"{publisher}\", config=\"{config}\"]\n",
        shared = sandbox.join("shared.log").display(),
        auth = sandbox.join("auth.log").display(),
        publisher = root.join("usr/local/bin/shared-f2b-publish").display(),
        config = cfg.path.display(),
    );
    let f2b = Fail2Ban::start_with(&sandbox, &jails, &root.join("etc/fail2ban"));
    assert!(
        f2b.client(&["status", "shared"]).is_some(),
        "the installed shared jail runs:\n{}",
        f2b.log()
    );
    f2b.append_log(
        "auth.log",
        &[
            "Failed login from 192.0.2.77".into(),
            "Failed login from 192.0.2.77".into(),
        ],
    );
    wait_for(
        Duration::from_secs(20),
        "the installed action to publish",
        || async {
            read_stream(shared_nats(), &stream)
                .await
                .into_iter()
                .find(|(_, e)| e.ip.to_string() == "192.0.2.77")
        },
    )
    .await;
}

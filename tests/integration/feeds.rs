//! The feeds on `[archiver] http_listen`: bans published through the shipped site, read back
//! with curl, and each format loaded by the consumer it is for where one runs here (nftables
//! and ipset in a network namespace of the test's own).

use shared_f2b_tests::db::TestDb;
use shared_f2b_tests::http::Got;
use shared_f2b_tests::netns::{self, Network};
use shared_f2b_tests::site::{self, Admin};
use shared_f2b_tests::{HostConfig, bin, free_port, wait_until};
use std::path::Path;
use std::process::Command;
use std::time::Duration;

const TOKEN: &str = "feed-token-0123456789abcdef";
const WAIT: Duration = Duration::from_secs(30);

/// `curl -i` on the feed at `port`, with a token unless `token` is `None`, and `args`.
fn curl(port: u16, path: &str, token: Option<&str>, args: &[&str]) -> Got {
    let mut cmd = Command::new("curl");
    cmd.args(["-sS", "-i", "--max-time", "10"]);
    if let Some(token) = token {
        cmd.arg("-H").arg(format!("Authorization: Bearer {token}"));
    }
    let out = cmd
        .args(args)
        .arg(format!("http://127.0.0.1:{port}{path}"))
        .output()
        .expect("curl runs (scripts/test installs it)");
    assert!(out.status.success(), "curl {path}: {out:?}");
    Got::parse(&out.stdout).expect("a status line and headers")
}

fn list(port: u16, query: &str) -> Vec<String> {
    let got = curl(port, &format!("/v1/blocklist?{query}"), Some(TOKEN), &[]);
    assert_eq!(got.code, 200, "{query}: {}", got.text());
    got.text().lines().map(str::to_owned).collect()
}

fn publish(cfg: &HostConfig, args: &[&str]) {
    let out = cfg.publish(args);
    assert!(out.status.success(), "publish {args:?}: {out:?}");
}

fn ban(cfg: &HostConfig, jail: &str, ip: &str, bantime: &str) {
    publish(
        cfg,
        &["ban", "--jail", jail, "--ip", ip, "--bantime", bantime],
    );
}

/// `shared-f2b-archiver export` with `args`, its standard output.
fn export(config: &Path, args: &[&str]) -> String {
    let out = Command::new(bin("shared-f2b-archiver"))
        .arg("--config")
        .arg(config)
        .arg("export")
        .args(args)
        .output()
        .unwrap();
    assert!(out.status.success(), "export {args:?}: {out:?}");
    String::from_utf8(out.stdout).unwrap()
}

/// Runs `program args` in namespace `ns` with `input` on its standard input; its output.
fn run_in(ns: &str, program: &str, args: &[&str], input: &str) -> String {
    use std::io::Write;
    let mut child = netns::command_in(Some(ns), program)
        .args(args)
        .stdin(std::process::Stdio::piped())
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::piped())
        .spawn()
        .unwrap();
    child
        .stdin
        .take()
        .unwrap()
        .write_all(input.as_bytes())
        .unwrap();
    let out = child.wait_with_output().unwrap();
    assert!(
        out.status.success(),
        "{program} {args:?}: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8(out.stdout).unwrap()
}

/// The site of the feed test: an archiver serving the feeds, hosts alice and bob, an operator.
struct Feed {
    alice: HostConfig,
    bob: HostConfig,
    admin: Admin,
    port: u16,
    archiver_cfg: HostConfig,
    _archiver: shared_f2b_tests::host::Daemon,
    _nats: shared_f2b_tests::nats::NatsServer,
    _db: TestDb,
    dir: tempfile::TempDir,
}

#[tokio::test(flavor = "multi_thread")]
async fn blocklists_reach_firewalls_zeek_and_other_sites() {
    let f = bans_hosts_and_operators_made();
    tokens_and_bad_parameters_are_refused(&f);
    filters_and_every_format_match_export(&f);
    zeek_gets_its_intel_file(&f);
    firewalls_load_the_lists_and_reload_them(&f);
    let etag = lists_carry_etags_and_gzip(&f);
    a_new_ban_changes_the_list_and_an_ended_one_leaves_it(&f, &etag);
    one_address_s_history(&f);
}

/// Bans by two hosts (one unbanned, one pardoned), addresses never listed, an operator's
/// ban; the list shows what is in force.
fn bans_hosts_and_operators_made() -> Feed {
    let dir = tempfile::tempdir().unwrap();
    let nats = site::nats(dir.path());
    let url = nats.url();
    let db = TestDb::mariadb();
    let port = free_port();
    let (archiver_cfg, _archiver) = site::archiver_with(
        dir.path(),
        &url,
        &db,
        &format!(
            "http_listen = \"127.0.0.1:{port}\"\nhttp_tokens = [\"{TOKEN}\"]\n\
             public_url = \"https://f2b.example.org\"\n\
             feed_allowlist = [\"127.0.0.0/8\", \"10.0.0.0/8\"]\n"
        ),
    );
    let f = Feed {
        alice: site::config(dir.path(), "alice", "alice", &url, ""),
        bob: site::config(dir.path(), "bob", "bob", &url, ""),
        admin: Admin::new(dir.path(), "admin", &url),
        port,
        archiver_cfg,
        _archiver,
        _nats: nats,
        _db: db,
        dir,
    };
    ban(&f.alice, "sshd", "192.0.2.10", "3600");
    ban(&f.bob, "sshd", "192.0.2.10", "7200");
    ban(&f.bob, "nginx", "2001:db8::10", "-1");
    ban(&f.alice, "sshd", "198.51.100.3", "3600");
    publish(
        &f.alice,
        &["unban", "--jail", "sshd", "--ip", "198.51.100.3"],
    );
    ban(&f.alice, "sshd", "192.0.2.99", "3600");
    // Never listed: the site's own net (feed_allowlist), addresses no firewall can drop.
    for ip in ["10.1.2.3", "0.0.0.0", "224.0.0.251", "ff02::1"] {
        ban(&f.alice, "sshd", ip, "3600");
    }
    f.admin.order(&[
        "pardon",
        "--ip",
        "192.0.2.99",
        "--reason",
        "our own scanner",
    ]);
    f.admin
        .order(&["ban", "--ip", "203.0.113.9", "--reason", "seen by the SOC"]);
    let expected = ["192.0.2.10", "203.0.113.9", "2001:db8::10"];
    wait_until(WAIT, "the blocklist to show the bans", || {
        list(f.port, "format=plain") == expected
    });

    f
}

/// Tokens: none or a wrong one is refused; a bad parameter gets a clear 400.
fn tokens_and_bad_parameters_are_refused(f: &Feed) {
    for token in [None, Some("feed-token-0123456789abcdeX")] {
        let got = curl(f.port, "/v1/blocklist", token, &[]);
        assert_eq!(got.code, 401, "{token:?}");
        assert_eq!(
            got.header("www-authenticate"),
            Some("Bearer realm=\"shared-f2b\"")
        );
        assert!(got.text().contains("bearer token"), "{}", got.text());
    }
    // A bad parameter: a clear 400.
    for (query, says) in [
        ("format=xml", "format \"xml\""),
        ("min_reporters=0", "min_reporters 0"),
        ("family=5", "family \"5\""),
        ("jail=a%3Bb", "jail"),
        ("since=1d", "unknown parameter \"since\""),
    ] {
        let got = curl(f.port, &format!("/v1/blocklist?{query}"), Some(TOKEN), &[]);
        assert_eq!(got.code, 400, "{query}");
        assert!(got.text().contains(says), "{query}: {}", got.text());
    }
}

/// Filters (an operator's ban counts as every host's; it has no jail), and every format is
/// what `export` prints.
fn filters_and_every_format_match_export(f: &Feed) {
    assert_eq!(
        list(f.port, "min_reporters=2"),
        ["192.0.2.10", "203.0.113.9"]
    );
    assert_eq!(list(f.port, "family=6"), ["2001:db8::10"]);
    assert_eq!(list(f.port, "family=4&jail=sshd"), ["192.0.2.10"]);
    assert_eq!(list(f.port, "format=csv&jail=nginx"), ["2001:db8::10,1"]);

    // Every format is what `export` prints, byte for byte.
    for format in [
        "plain", "csv", "json", "nftables", "ipset", "mikrotik", "zeek",
    ] {
        let got = curl(
            f.port,
            &format!("/v1/blocklist?format={format}"),
            Some(TOKEN),
            &[],
        );
        assert_eq!(got.code, 200);
        assert_eq!(
            got.text(),
            export(&f.archiver_cfg.path, &["--format", format]),
            "{format}"
        );
    }
    let csv = list(f.port, "format=csv");
    assert_eq!(csv, ["192.0.2.10,2", "203.0.113.9,0", "2001:db8::10,1"]);
    let json: serde_json::Value =
        serde_json::from_slice(&curl(f.port, "/v1/blocklist?format=json", Some(TOKEN), &[]).body)
            .unwrap();
    assert_eq!(json[0]["jails"], serde_json::json!(["sshd"]));
    assert_eq!(json[1]["operator"], "admin");
    // bob's permanent ban, listed for feed_max_bantime (30 days) from when it was made.
    let expires = humantime::parse_rfc3339(json[2]["expires"].as_str().unwrap()).unwrap();
    let ahead = expires
        .duration_since(std::time::SystemTime::now())
        .unwrap();
    assert!(ahead > Duration::from_secs(29 * 86_400), "{json}");
}

/// Zeek: the intel header and five tab-separated fields per line.
fn zeek_gets_its_intel_file(f: &Feed) {
    let zeek = list(f.port, "format=zeek");
    assert_eq!(
        zeek[0],
        "#fields\tindicator\tindicator_type\tmeta.source\tmeta.desc\tmeta.url"
    );
    for line in &zeek[1..] {
        let fields: Vec<&str> = line.split('\t').collect();
        assert_eq!(fields.len(), 5, "{line}");
        assert_eq!(fields[1], "Intel::ADDR");
        assert_eq!(
            fields[4],
            format!("https://f2b.example.org/v1/history?ip={}", fields[0])
        );
    }
    assert!(zeek[1].contains("banned by 2 hosts (sshd)"), "{}", zeek[1]);
}

/// nftables and ipset load what they are given, in a namespace of the test's own, and again
/// after a pardon.
fn firewalls_load_the_lists_and_reload_them(f: &Feed) {
    if netns::available() {
        let net = Network::new();
        let ns = &net.site.name;
        let nft = list(f.port, "format=nftables&name=sf2b_feed").join("\n") + "\n";
        run_in(ns, "nft", &["-c", "-f", "-"], &nft);
        run_in(ns, "nft", &["-f", "-"], &nft);
        let v4 = run_in(
            ns,
            "nft",
            &["list", "set", "inet", "sf2b_feed", "banned_v4"],
            "",
        );
        assert!(
            v4.contains("192.0.2.10") && v4.contains("203.0.113.9"),
            "{v4}"
        );
        let v6 = run_in(
            ns,
            "nft",
            &["list", "set", "inet", "sf2b_feed", "banned_v6"],
            "",
        );
        assert!(v6.contains("2001:db8::10"), "{v6}");
        let ipset = list(f.port, "format=ipset&name=sf2b-feed").join("\n") + "\n";
        run_in(ns, "ipset", &["restore"], &ipset);
        let v4 = run_in(ns, "ipset", &["list", "sf2b-feed-v4"], "");
        assert!(
            v4.contains("192.0.2.10\n") && v4.contains("203.0.113.9\n"),
            "{v4}"
        );
        let v6 = run_in(ns, "ipset", &["list", "sf2b-feed-v6"], "");
        assert!(v6.contains("2001:db8::10\n"), "{v6}");

        // Loaded again after the operator's ban was pardoned: it leaves both, nothing doubles.
        let pardon = f
            .admin
            .order(&["pardon", "--ip", "203.0.113.9", "--reason", "cleared"]);
        wait_until(WAIT, "the pardon to reach the list", || {
            !list(f.port, "").contains(&"203.0.113.9".to_owned())
        });
        let nft = list(f.port, "format=nftables&name=sf2b_feed").join("\n") + "\n";
        run_in(ns, "nft", &["-f", "-"], &nft);
        let table = run_in(ns, "nft", &["list", "table", "inet", "sf2b_feed"], "");
        assert!(
            !table.contains("203.0.113.9") && table.contains("192.0.2.10"),
            "{table}"
        );
        assert_eq!(
            table.matches("ip saddr @banned_v4 drop").count(),
            2,
            "{table}"
        );
        let ipset = list(f.port, "format=ipset&name=sf2b-feed").join("\n") + "\n";
        run_in(ns, "ipset", &["restore"], &ipset);
        let v4 = run_in(ns, "ipset", &["list", "sf2b-feed-v4"], "");
        assert!(
            !v4.contains("203.0.113.9") && v4.contains("192.0.2.10\n"),
            "{v4}"
        );
        let sets = run_in(ns, "ipset", &["list", "-n"], "");
        assert!(!sets.contains("-new"), "{sets}");
        // The pardon revoked (what it lifted stays lifted), then banned anew.
        f.admin
            .order(&["revoke", &pardon, "--reason", "ticket closed"]);
        f.admin.order(&[
            "ban",
            "--ip",
            "203.0.113.9",
            "--reason",
            "seen again by the SOC",
        ]);
        wait_until(WAIT, "the operator's new ban listed", || {
            list(f.port, "").contains(&"203.0.113.9".to_owned())
        });
    } else {
        // Still checked for syntax here.
        let nft = list(f.port, "format=nftables").join("\n") + "\n";
        let file = f.dir.path().join("feed.nft");
        std::fs::write(&file, nft).unwrap();
        let out = Command::new("nft")
            .arg("-c")
            .arg("-f")
            .arg(&file)
            .output()
            .unwrap();
        assert!(out.status.success(), "nft -c: {out:?}");
    }
}

/// ETag round trip, gzip; gives the list's tag.
fn lists_carry_etags_and_gzip(f: &Feed) -> String {
    let first = curl(f.port, "/v1/blocklist", Some(TOKEN), &[]);
    let etag = first.header("etag").expect("an ETag").to_owned();
    let again = curl(
        f.port,
        "/v1/blocklist",
        Some(TOKEN),
        &["-H", &format!("If-None-Match: {etag}")],
    );
    assert_eq!(again.code, 304);
    assert!(again.body.is_empty());
    assert_eq!(again.header("etag"), Some(etag.as_str()));
    let gz = curl(
        f.port,
        "/v1/blocklist",
        Some(TOKEN),
        &["-H", "Accept-Encoding: gzip"],
    );
    assert_eq!(gz.header("content-encoding"), Some("gzip"));
    assert_ne!(gz.header("etag"), Some(etag.as_str()));
    let mut gunzip = Command::new("gzip")
        .arg("-dc")
        .stdin(std::process::Stdio::piped())
        .stdout(std::process::Stdio::piped())
        .spawn()
        .unwrap();
    {
        use std::io::Write;
        gunzip.stdin.take().unwrap().write_all(&gz.body).unwrap();
    }
    assert_eq!(gunzip.wait_with_output().unwrap().stdout, first.body);
    let decoded = curl(f.port, "/v1/blocklist", Some(TOKEN), &["--compressed"]);
    assert_eq!(decoded.body, first.body);
    let gz_tag = gz.header("etag").unwrap().to_owned();
    let gz_again = curl(
        f.port,
        "/v1/blocklist",
        Some(TOKEN),
        &[
            "-H",
            "Accept-Encoding: gzip",
            "-H",
            &format!("If-None-Match: {gz_tag}"),
        ],
    );
    assert_eq!(gz_again.code, 304);
    etag
}

/// A new ban: a new body and tag; a ban leaves the list when it ends.
fn a_new_ban_changes_the_list_and_an_ended_one_leaves_it(f: &Feed, etag: &str) {
    ban(&f.bob, "sshd", "192.0.2.11", "3600");
    wait_until(WAIT, "the new ban on the list", || {
        list(f.port, "").contains(&"192.0.2.11".to_owned())
    });
    let changed = curl(
        f.port,
        "/v1/blocklist",
        Some(TOKEN),
        &["-H", &format!("If-None-Match: {etag}")],
    );
    assert_eq!(changed.code, 200);
    assert_ne!(changed.header("etag"), Some(etag));

    // A ban leaves the list when it ends, with nothing new archived.
    ban(&f.alice, "sshd", "192.0.2.50", "6");
    wait_until(WAIT, "the short ban on the list", || {
        list(f.port, "").contains(&"192.0.2.50".to_owned())
    });
    wait_until(WAIT, "the short ban to leave the list", || {
        !list(f.port, "").contains(&"192.0.2.50".to_owned())
    });
}

/// One address's history.
fn one_address_s_history(f: &Feed) {
    let got = curl(f.port, "/v1/history?ip=192.0.2.10", Some(TOKEN), &[]);
    assert_eq!(got.code, 200);
    let history: serde_json::Value = serde_json::from_slice(&got.body).unwrap();
    assert_eq!(history.as_array().unwrap().len(), 2, "{history}");
    assert_eq!(curl(f.port, "/v1/history?ip=x", Some(TOKEN), &[]).code, 400);
    assert_eq!(
        curl(f.port, "/v1/history?ip=192.0.2.10", None, &[]).code,
        401
    );
}

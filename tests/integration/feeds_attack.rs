//! Red team against the feeds: the archiver's read-only HTTP listener (`[archiver] http_listen`:
//! `/v1/blocklist`, `/v1/history`, bearer tokens, ETag/gzip, the in-memory snapshot and its
//! high-water mark, `feed_allowlist`) and the MISP feed (`export --format misp-feed`).
//!
//! Attackers: (a) a compromised host (alice) publishing with its own NATS credentials on the
//! shipped site config, with the product's publisher or a stock client; (b) a network client
//! without the token; (c) a token holder trying to read or change more than the feeds. Every
//! test passes when the attack fails; each collects what got through and reports all of it.

use shared_f2b::event::{Action, Event};
use shared_f2b::subject::event_subject;
use shared_f2b_tests::db::TestDb;
use shared_f2b_tests::http::{Got, request};
use shared_f2b_tests::nats::ban_event;
use shared_f2b_tests::served::{Served, TOKEN, auth, exchange, get, verdict};
use shared_f2b_tests::site::{self, Admin};
use shared_f2b_tests::{HostConfig, bin, free_port, repo_root, wait_for, wait_until};
use sqlx::Row;
use std::io::{Read, Write};
use std::net::TcpStream;
use std::path::Path;
use std::process::Command;
use std::time::{Duration, SystemTime};

const WAIT: Duration = Duration::from_secs(30);
const ORG_UUID: &str = "5f0c3c1e-1b2a-4c3d-9e8f-0123456789ab";

// ---------------------------------------------------------------------------------------------
// The site under attack ([`Served`]), with what these tests read of it.

struct Site(Served);

impl std::ops::Deref for Site {
    type Target = Served;
    fn deref(&self) -> &Served {
        &self.0
    }
}

impl Site {
    /// The site with `[archiver]` keys `keys` besides the feed's listener and token.
    fn new(keys: &str) -> Site {
        Site(Served::new(keys))
    }

    /// As [`Site::new`], with `edit` run on the archiver's config text before it starts.
    fn with(keys: &str, edit: impl FnOnce(&Path)) -> Site {
        Site(Served::with(keys, |db| db.url.clone(), edit))
    }

    /// The plain list as a token holder gets it.
    fn plain(&self, query: &str) -> Vec<String> {
        let got = get(self.port, &format!("/v1/blocklist?{query}"), &[auth()]);
        assert_eq!(got.code, 200, "{query}: {}", got.text());
        got.text().lines().map(str::to_owned).collect()
    }

    /// The list once it shows `want` (the feeds follow what is committed within 100 ms), or
    /// what it shows after `within`: `WAIT` when `want` is what must come, a few seconds when
    /// it is what must not.
    async fn plain_when(&self, query: &str, want: &[&str], within: Duration) -> Vec<String> {
        let start = std::time::Instant::now();
        loop {
            let list = self.plain(query);
            if list == want || start.elapsed() > within {
                return list;
            }
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
    }

    /// `shared-f2b-archiver export` with `args` (a fresh load of the archive).
    fn export(&self, args: &[&str]) -> String {
        let out = Command::new(bin("shared-f2b-archiver"))
            .arg("--config")
            .arg(&self.archiver_cfg.path)
            .arg("export")
            .args(args)
            .output()
            .unwrap();
        assert!(out.status.success(), "export {args:?}: {out:?}");
        String::from_utf8(out.stdout).unwrap()
    }

    /// A number from the archive (`SELECT … AS n`).
    async fn count(&self, sql: &str) -> i64 {
        let pool = self.db.pool().await;
        // The driver wants a query text that outlives the call.
        let sql: &'static str = Box::leak(sql.to_owned().into_boxed_str());
        let n = sqlx::query(sql)
            .fetch_one(&pool)
            .await
            .map(|r| r.get::<i64, _>("n"))
            .unwrap_or(0);
        pool.close().await;
        n
    }

    /// Waits until the archive holds `n` rows of `table`.
    async fn wait_rows(&self, table: &str, n: i64) {
        let sql = format!("SELECT COUNT(*) AS n FROM {table}");
        wait_for(WAIT, &format!("{n} rows in {table}"), || async {
            (self.count(&sql).await >= n).then_some(())
        })
        .await;
    }
}

fn publish(cfg: &HostConfig, args: &[&str]) {
    let out = cfg.publish(args);
    assert!(out.status.success(), "publish {args:?}: {out:?}");
}

fn ban(cfg: &HostConfig, ip: &str) {
    publish(
        cfg,
        &["ban", "--jail", "sshd", "--ip", ip, "--bantime", "3600"],
    );
}

/// What a compromised host's stock client sends: `payload` on `subject` with a `Nats-Msg-Id`;
/// the stream's ack (or the server's refusal) as text.
async fn send_raw(
    client: &async_nats::Client,
    subject: &str,
    msg_id: &str,
    payload: Vec<u8>,
) -> String {
    let mut headers = async_nats::HeaderMap::new();
    headers.insert("Nats-Msg-Id", msg_id);
    match client
        .request_with_headers(subject.to_owned(), headers, payload.into())
        .await
    {
        Ok(reply) => String::from_utf8_lossy(&reply.payload).into_owned(),
        Err(e) => format!("refused: {e}"),
    }
}

/// `event` sent by its origin's stock client, on its own subject; the ack must be a stored one.
async fn send(client: &async_nats::Client, event: &Event) {
    let subject = event_subject("f2b", event.action, &event.jail, &event.origin).unwrap();
    let ack = send_raw(client, &subject, &event.id.to_string(), event.encode()).await;
    assert!(ack.contains("\"seq\""), "{subject}: {ack}");
}

/// A ban from `origin` of `ip` in sshd, made now, for `bantime`.
fn ban_for(origin: &str, ip: &str, bantime: i64) -> Event {
    Event {
        bantime,
        ..ban_event(origin, "sshd", ip)
    }
}

fn gunzip(bytes: &[u8]) -> Vec<u8> {
    let mut child = Command::new("gzip")
        .arg("-dc")
        .stdin(std::process::Stdio::piped())
        .stdout(std::process::Stdio::piped())
        .spawn()
        .unwrap();
    child.stdin.take().unwrap().write_all(bytes).unwrap();
    child.wait_with_output().unwrap().stdout
}

// ---------------------------------------------------------------------------------------------
// (b) A network client without the token.

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn clients_without_the_token_read_nothing() {
    let site = Site::new("");
    let alice = site.host("alice");
    ban(&alice, "192.0.2.10");
    wait_until(WAIT, "the ban on the list", || {
        site.plain("") == ["192.0.2.10"]
    });
    let secret = "192.0.2.10";
    let port = site.port;
    let mut problems = Vec::new();
    let mut refused = |what: &str, got: Option<Got>| match got {
        Some(got) if got.code == 200 || got.code == 304 || got.text().contains(secret) => {
            problems.push(format!("{what}: {} {:?}", got.code, got.text()));
        }
        _ => {}
    };
    let bad_tokens: Vec<(&str, String)> = vec![
        (
            "Authorization",
            "Bearer wrong-token-0123456789abcdef".into(),
        ),
        (
            "Authorization",
            format!("Bearer {}", &TOKEN[..TOKEN.len() - 1]),
        ),
        ("Authorization", format!("Bearer {TOKEN}x")),
        ("Authorization", format!("Bearer {}", TOKEN.to_uppercase())),
        ("Authorization", format!("Bearer x{TOKEN}")),
        ("Authorization", "Bearer ".into()),
        ("Authorization", "Bearer".into()),
        ("Authorization", TOKEN.into()),
        ("Authorization", format!("Token {TOKEN}")),
        ("Authorization", format!("Basic {TOKEN}")),
        ("Authorization", "Bearer *".into()),
        ("Authorization", "Bearer \"\"".into()),
        ("X-Authorization", format!("Bearer {TOKEN}")),
        ("Proxy-Authorization", format!("Bearer {TOKEN}")),
        ("Cookie", format!("token={TOKEN}")),
        // A long header: a 431 or a 401, never the list, and the server lives on.
        ("Authorization", format!("Bearer {}", "A".repeat(200_000))),
    ];
    for (name, value) in &bad_tokens {
        let what = format!("{name}: {:.60}", value);
        refused(
            &what,
            exchange(
                port,
                &request("GET", "/v1/blocklist", &[(name, value.clone())]),
            ),
        );
    }
    // Paths, methods and query tricks without a token.
    let targets = [
        "/v1/blocklist",
        "/v1/blocklist?format=json",
        &format!("/v1/blocklist?access_token={TOKEN}"),
        &format!("/v1/blocklist?token={TOKEN}"),
        "//v1/blocklist",
        "/v1//blocklist",
        "/v1/blocklist/",
        "/V1/BLOCKLIST",
        "/v1/%62locklist",
        "/v1%2Fblocklist",
        "/v1/blocklist%3Fformat=plain",
        "/./v1/blocklist",
        "/v1/../v1/blocklist",
        "/x/../v1/blocklist",
        "/v1/blocklist;x=1",
        "/v1/blocklist#frag",
        &format!("http://127.0.0.1:{port}/v1/blocklist"),
        "*",
        "/v1/history?ip=192.0.2.10",
        "/v1/history?ip=192.0.2.10&limit=1000",
        "/metrics",
        "/healthz",
        "/v1/site/overview",
        "/v1/site/bans?q=192.0.2.10",
        "/v1/site/address?ip=192.0.2.10",
        "/v1/site/live",
        "/v1",
        "/v1/",
        &format!("/v1/blocklist?{}", "a=b&".repeat(100_000)),
    ];
    for target in targets {
        let what = format!("GET {:.80}", target);
        refused(&what, exchange(port, &request("GET", target, &[])));
    }
    for method in ["HEAD", "OPTIONS", "POST", "PUT", "DELETE", "PATCH", "TRACE"] {
        refused(
            &format!("{method} /v1/blocklist"),
            exchange(port, &request(method, "/v1/blocklist", &[])),
        );
    }
    // A conditional request without the token learns nothing either (no 304 for a guess).
    refused(
        "If-None-Match: * without a token",
        exchange(
            port,
            &request("GET", "/v1/blocklist", &[("If-None-Match", "*".into())]),
        ),
    );
    // HTTP/1.0 without Host, and many headers.
    refused(
        "HTTP/1.0 without Host",
        exchange(port, b"GET /v1/blocklist HTTP/1.0\r\n\r\n"),
    );
    let many: Vec<(&str, String)> = (0..500).map(|_| ("X-Pad", "y".repeat(100))).collect();
    refused(
        "500 headers",
        exchange(port, &request("GET", "/v1/blocklist", &many)),
    );
    // The site page itself is served to anyone: it holds no data.
    for target in ["/", "/ip/192.0.2.10", "/assets/site.js"] {
        match exchange(port, &request("GET", target, &[])) {
            Some(got) if got.code == 200 && !got.text().contains(secret) => {}
            got => problems.push(format!("GET {target}: {got:?}")),
        }
    }
    // The server still serves the token holder afterwards.
    let after = get(port, "/v1/blocklist", &[auth()]);
    if after.code != 200 || after.text() != "192.0.2.10\n" {
        problems.push(format!("the token holder after the attacks: {after:?}"));
    }
    verdict(&problems);
}

// ---------------------------------------------------------------------------------------------
// (c) A token holder reaching past the feeds.

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn token_holders_cannot_inject_or_read_past_the_feeds() {
    let site = Site::new("");
    let alice = site.host("alice");
    let bob = site.host("bob");
    ban(&alice, "192.0.2.10");
    ban(&bob, "192.0.2.11");
    wait_until(WAIT, "both bans listed", || {
        site.plain("") == ["192.0.2.10", "192.0.2.11"]
    });
    let rows_before = site.count("SELECT COUNT(*) AS n FROM f2b_events").await;
    let mut problems = Vec::new();
    let bad_requests = [
        "/v1/blocklist?jail=sshd%27%20OR%20%271%27%3D%271",
        "/v1/blocklist?jail=sshd%22%3B%20DROP%20TABLE%20f2b_events%3B--",
        "/v1/blocklist?jail=*",
        "/v1/blocklist?jail=",
        "/v1/blocklist?jail=ssh%0Ad",
        "/v1/blocklist?format=nftables&name=x%22%3B%20flush%20ruleset",
        "/v1/blocklist?format=nftables&name=a%0Aflush%20ruleset",
        "/v1/blocklist?format=mikrotik&name=x%22%5D%3B%2Fsystem%20reboot",
        "/v1/blocklist?format=ipset&name=a%20-exist%0Aflush",
        "/v1/blocklist?format=../../../../etc/passwd",
        "/v1/blocklist?format=misp-feed",
        "/v1/blocklist?format=PLAIN",
        "/v1/blocklist?format=plain&format=json",
        "/v1/blocklist?Format=json",
        "/v1/blocklist?min_reporters=-1",
        "/v1/blocklist?min_reporters=99999999999999999999999",
        "/v1/blocklist?family=4%00",
        "/v1/blocklist?family=46",
        "/v1/history",
        "/v1/history?ip=",
        "/v1/history?ip=192.0.2.10%27%20OR%20%271%27%3D%271",
        "/v1/history?ip=192.0.2.0/24",
        "/v1/history?ip=0.0.0.0/0",
        "/v1/history?ip=*",
        "/v1/history?ip=%25",
        "/v1/history?ip=192.0.2.10&ip=192.0.2.11",
        "/v1/history?ip=192.0.2.10&origin=alice",
        "/v1/history?ip=192.0.2.10&jail=sshd",
        "/v1/history?ip=192.0.2.10&since=0",
        "/v1/history?ip=192.0.2.10&limit=100000",
        "/v1/history?ip=192.0.2.10&limit=0",
        "/v1/history?ip=192.0.2.10&limit=-1",
        "/v1/history?ip=192.0.2.10&limit=1e3",
        "/v1/history?ip=192.0.2.10&limit=1%3B%20DROP%20TABLE%20f2b_events",
    ];
    for target in bad_requests {
        let got = get(site.port, target, &[auth()]);
        if got.code != 400 {
            problems.push(format!("{target}: {} {:?}", got.code, got.text()));
        }
    }
    for target in [
        "/v1/blocklist/../../../../etc/passwd",
        "/v1/history/../../../../etc/passwd",
        "/v1/../../etc/passwd",
        "/etc/passwd",
        "/v1/blocklist/..%2F..%2Fetc%2Fpasswd",
    ] {
        let got = get(site.port, target, &[auth()]);
        if got.code == 200 || got.text().contains("root:") {
            problems.push(format!("{target}: {} {:.200}", got.code, got.text()));
        }
    }
    // One address's history holds that address's events only.
    let got = get(site.port, "/v1/history?ip=::ffff:192.0.2.10", &[auth()]);
    let rows: serde_json::Value = serde_json::from_slice(&got.body).unwrap_or_default();
    let ips: Vec<&str> = rows
        .as_array()
        .into_iter()
        .flatten()
        .filter_map(|r| r["event"]["ip"].as_str())
        .collect();
    if ips != ["192.0.2.10"] {
        problems.push(format!("history of 192.0.2.10 (mapped form) gave {ips:?}"));
    }
    // Nothing above changed the archive or the lists.
    let rows_after = site.count("SELECT COUNT(*) AS n FROM f2b_events").await;
    if rows_after != rows_before {
        problems.push(format!(
            "f2b_events went from {rows_before} to {rows_after} rows"
        ));
    }
    if site.plain("") != ["192.0.2.10", "192.0.2.11"] {
        problems.push(format!("the list changed: {:?}", site.plain("")));
    }
    verdict(&problems);
}

// ---------------------------------------------------------------------------------------------
// (a) A compromised host: what it bans.

/// A host bans the firewall's own loopback, link-local (cloud metadata) and the site's nets:
/// never on a list, also when the operator set `feed_allowlist` to the site's own nets as the
/// docs/feeds.md says ("add your own networks").
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_host_cannot_list_loopback_link_local_or_the_site_s_nets() {
    let site = Site::new("feed_allowlist = [\"10.0.0.0/8\", \"2001:db8:5170::/48\"]\n");
    let alice = site::client(&site.url, "alice").await;
    let hostile = [
        "10.1.2.3",
        "::ffff:10.1.2.4",
        "2001:db8:5170::1",
        "0.0.0.0",
        "255.255.255.255",
        "224.0.0.251",
        "239.255.255.250",
        "ff02::1",
        "::",
        "127.0.0.1",
        "127.0.0.53",
        "::1",
        "169.254.169.254",
        "fe80::1",
    ];
    for ip in hostile {
        send(&alice, &ban_for("alice", ip, 3600)).await;
    }
    send(&alice, &ban_for("alice", "192.0.2.30", 3600)).await;
    wait_until(WAIT, "the genuine ban on the list", || {
        site.plain("").contains(&"192.0.2.30".to_owned())
    });
    let mut problems = Vec::new();
    for format in [
        "plain", "nftables", "ipset", "mikrotik", "zeek", "json", "csv",
    ] {
        let got = get(
            site.port,
            &format!("/v1/blocklist?format={format}"),
            &[auth()],
        );
        let text = got.text();
        for ip in hostile {
            let shown = shared_f2b::event::parse_ip(ip).unwrap().to_string();
            let listed = text
                .split(|c: char| !(c.is_ascii_hexdigit() || c == '.' || c == ':'))
                .any(|word| word == shown);
            if listed {
                problems.push(format!("format={format} lists {shown}"));
            }
        }
    }
    verdict(&problems);
}

/// The subscribers never ban the site's NATS servers; a list the firewalls load should not
/// either, whatever a host reported.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_host_cannot_list_the_site_s_nats_servers() {
    // This machine's own non-loopback address, named as a second NATS server of the site.
    let own = std::net::UdpSocket::bind("0.0.0.0:0")
        .and_then(|s| s.connect("198.51.100.1:9").map(|()| s))
        .and_then(|s| s.local_addr())
        .map(|a| a.ip())
        .expect("a route off this machine");
    assert!(!own.is_loopback(), "{own}");
    let closed = free_port();
    let site = Site::with("", |path| {
        let text = std::fs::read_to_string(path).unwrap();
        let servers = text
            .lines()
            .find(|l| l.starts_with("servers = "))
            .unwrap()
            .to_owned();
        let both = servers.replace("\"]", &format!("\", \"nats://{own}:{closed}\"]"));
        std::fs::write(path, text.replace(&servers, &both)).unwrap();
    });
    let alice = site::client(&site.url, "alice").await;
    send(&alice, &ban_for("alice", &own.to_string(), 3600)).await;
    send(&alice, &ban_for("alice", "192.0.2.31", 3600)).await;
    wait_until(WAIT, "the genuine ban on the list", || {
        site.plain("").contains(&"192.0.2.31".to_owned())
    });
    let list = site.plain("");
    verdict(
        &list
            .iter()
            .filter(|ip| **ip == own.to_string())
            .map(|ip| format!("the feed lists {ip}, a NATS server of the site: {list:?}"))
            .collect::<Vec<_>>(),
    );
}

/// A host's clock (or a hostile host) stamps a ban ten years ahead: the list does not keep it
/// longer than its bantime from now (what the subscribers do: a time more than 5 minutes ahead
/// is taken as now), and the MISP feed does not date it in the future.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_ban_stamped_years_ahead_is_not_listed_past_its_bantime() {
    let misp = format!("[archiver.misp]\norg_name = \"Example\"\norg_uuid = {ORG_UUID:?}\n");
    let site = Site::new(&misp);
    let alice = site::client(&site.url, "alice").await;
    let now = SystemTime::now();
    let mut stretched = ban_for("alice", "198.51.100.40", 600);
    stretched.time = now + Duration::from_secs(10 * 365 * 86_400);
    send(&alice, &stretched).await;
    send(&alice, &ban_for("alice", "192.0.2.32", 3600)).await;
    wait_until(WAIT, "both listed", || site.plain("").len() == 2);
    let mut problems = Vec::new();
    let got = get(site.port, "/v1/blocklist?format=json", &[auth()]);
    let items: serde_json::Value = serde_json::from_slice(&got.body).unwrap();
    let limit = now + Duration::from_secs(600 + 300 + 60);
    for item in items
        .as_array()
        .unwrap()
        .iter()
        .filter(|i| i["ip"] == "198.51.100.40")
    {
        let expires = item["expires"].as_str().unwrap_or("permanent");
        if humantime::parse_rfc3339(expires).map_or(true, |end| end > limit) {
            problems.push(format!(
                "a 600 s ban stamped 10 years ahead is listed until {expires}"
            ));
        }
    }
    let feed = site.dir.path().join("misp");
    let out = misp_export(&site.archiver_cfg.path, &feed);
    assert!(out.status.success(), "{out:?}");
    let tomorrow = humantime::format_rfc3339(now + Duration::from_secs(86_400)).to_string();
    for (_, event) in misp_events(&feed) {
        let date = event["Event"]["date"]
            .as_str()
            .unwrap_or_default()
            .to_owned();
        if date.as_str() > &tomorrow[..10] {
            problems.push(format!("the MISP feed has an event dated {date}"));
        }
    }
    verdict(&problems);
}

/// A hostile host stamps a ban on the last day the wire allows (9999-12-31) for 30 days: its
/// end lies past what RFC 3339 prints. Every format still answers, and so does `export`.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_ban_ending_after_the_year_9999_does_not_break_the_feeds() {
    let site = Site::new("");
    let alice = site::client(&site.url, "alice").await;
    let mut last_day = ban_for("alice", "198.51.100.41", 30 * 86_400);
    last_day.time = humantime::parse_rfc3339("9999-12-31T00:00:00Z").unwrap();
    send(&alice, &last_day).await;
    send(&alice, &ban_for("alice", "192.0.2.33", 3600)).await;
    wait_until(WAIT, "both listed", || site.plain("").len() == 2);
    let mut problems = Vec::new();
    // A panic in a handler drops the connection: no answer at all.
    for format in [
        "plain", "csv", "json", "nftables", "ipset", "mikrotik", "zeek",
    ] {
        match exchange(
            site.port,
            &request("GET", &format!("/v1/blocklist?format={format}"), &[auth()]),
        ) {
            Some(got) if got.code == 200 => {}
            Some(got) => problems.push(format!("format={format}: {} {}", got.code, got.text())),
            None => problems.push(format!(
                "format={format}: no answer, the connection was dropped"
            )),
        }
    }
    if let Some(panic) = site
        .archiver
        .log_text()
        .lines()
        .find(|l| l.contains("panicked"))
    {
        problems.push(format!("the archiver's log: {panic}"));
    }
    for args in [
        &["export", "--format", "json"][..],
        &["export", "--format", "zeek"],
        &["active"],
    ] {
        let out = Command::new(bin("shared-f2b-archiver"))
            .arg("--config")
            .arg(&site.archiver_cfg.path)
            .args(args)
            .output()
            .unwrap();
        if !out.status.success() {
            let stderr = String::from_utf8_lossy(&out.stderr);
            problems.push(format!(
                "{}: exit {:?}: {}",
                args.join(" "),
                out.status.code(),
                stderr
                    .lines()
                    .find(|l| l.contains("panicked") || l.contains("Error"))
                    .unwrap_or(&stderr)
            ));
        }
    }
    verdict(&problems);
}

/// Forged, spoofed, replayed and malformed events from a compromised host's stock client: none
/// changes the list; other hosts' bans stay listed.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn forged_and_replayed_events_do_not_change_the_list() {
    let site = Site::new("");
    let alice = site::client(&site.url, "alice").await;
    let bob_cfg = site.host("bob");
    let mut live = alice.subscribe("f2b.live.>").await.unwrap();
    ban(&bob_cfg, "192.0.2.50");
    wait_until(WAIT, "bob's ban listed", || {
        site.plain("") == ["192.0.2.50"]
    });
    let bob_msg = tokio::time::timeout(WAIT, futures::StreamExt::next(&mut live))
        .await
        .expect("bob's event on the live subject")
        .unwrap();
    let bob_event = Event::decode(&bob_msg.payload).unwrap();
    let mut problems = Vec::new();
    let mut acks = Vec::new();

    // 1. A payload naming bob on alice's subject; bob's own payload replayed there.
    let as_bob = ban_event("bob", "sshd", "198.51.100.60");
    acks.push(
        send_raw(
            &alice,
            "f2b.ban.sshd.alice",
            &as_bob.id.to_string(),
            as_bob.encode(),
        )
        .await,
    );
    acks.push(
        send_raw(&alice, "f2b.unban.sshd.alice", "replay-1", {
            let mut e = bob_event.clone();
            e.action = Action::Unban;
            e.encode()
        })
        .await,
    );
    // 2. Bob's subject: refused by the server.
    let unban_bob = Event {
        action: Action::Unban,
        ..ban_event("bob", "sshd", "192.0.2.50")
    };
    let refused = send_raw(&alice, "f2b.unban.sshd.bob", "x-2", unban_bob.encode()).await;
    if refused.contains("\"seq\"") {
        problems.push(format!("alice published on bob's subject: {refused}"));
    }
    // 3. Alice's own unban of bob's address: lifts nothing of bob's.
    send(
        &alice,
        &Event {
            action: Action::Unban,
            ..ban_event("alice", "sshd", "192.0.2.50")
        },
    )
    .await;
    // 4. A net, a bad jail, another schema version, a subject/payload mismatch, oversize.
    let good = ban_event("alice", "sshd", "198.51.100.61");
    let text = String::from_utf8(good.encode()).unwrap();
    for (n, payload) in [
        text.replace("198.51.100.61", "198.51.100.0/24"),
        text.replace("\"sshd\"", "\"ss hd\""),
        text.replace("\"v\":1", "\"v\":2"),
        text.replace("\"ban\"", "\"unban\""),
        text.replacen('{', &format!("{{\"pad\":\"{}\",", "x".repeat(5000)), 1),
    ]
    .into_iter()
    .enumerate()
    {
        acks.push(
            send_raw(
                &alice,
                "f2b.ban.sshd.alice",
                &format!("bad-{n}"),
                payload.into_bytes(),
            )
            .await,
        );
    }
    // 5. Alice bans, unbans, then replays her own old ban under a new message id (the stream
    //    stores it again; the archive must not take it as new).
    let old = ban_event("alice", "sshd", "198.51.100.62");
    send(&alice, &old).await;
    send(
        &alice,
        &Event {
            action: Action::Unban,
            id: uuid::Uuid::now_v7(),
            ..old.clone()
        },
    )
    .await;
    acks.push(
        send_raw(
            &alice,
            "f2b.ban.sshd.alice",
            "replayed-old-ban",
            old.encode(),
        )
        .await,
    );
    // A barrier: a genuine ban after all of it.
    send(&alice, &ban_for("alice", "192.0.2.51", 3600)).await;
    wait_until(WAIT, "the barrier ban listed", || {
        site.plain("").contains(&"192.0.2.51".to_owned())
    });
    let list = site.plain("");
    if list != ["192.0.2.50", "192.0.2.51"] {
        problems.push(format!(
            "the list after the forged events is {list:?}, not [192.0.2.50, 192.0.2.51]; acks: {acks:?}"
        ));
    }
    let rejects = site.count("SELECT COUNT(*) AS n FROM f2b_rejects").await;
    eprintln!("rejected by the archiver: {rejects}; acks: {acks:?}");
    verdict(&problems);
}

/// A host floods the site with 10,000 bans (as fast as the stream acks them): the list serves
/// them without falling over, and one host alone still cannot reach a `min_reporters=2` list.
/// Meanwhile 50 token holders ask for the biggest format and never read their answers: the
/// snapshot is not held while bodies are sent, so another client is served at once.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_flood_from_one_host_and_clients_that_never_read_are_served() {
    let site = Site::new("");
    let alice = site::client(&site.url, "alice").await;
    let bob = site.host("bob");
    ban(&bob, "192.0.2.120");
    wait_until(WAIT, "bob's ban listed", || {
        site.plain("") == ["192.0.2.120"]
    });
    const N: u32 = 10_000;
    let events: Vec<Event> = (0..N)
        .map(|i| {
            ban_for(
                "alice",
                &format!("10.{}.{}.{}", 100 + i / 65_536, (i / 256) % 256, i % 256),
                3600,
            )
        })
        .collect();
    let started = std::time::Instant::now();
    for window in events.chunks(500) {
        let alice = &alice;
        let acks = futures::future::join_all(window.iter().map(|e| async move {
            let subject = event_subject("f2b", e.action, &e.jail, &e.origin).unwrap();
            send_raw(alice, &subject, &e.id.to_string(), e.encode()).await
        }))
        .await;
        assert!(
            acks.iter().all(|a| a.contains("\"seq\"")),
            "{:?}",
            acks.first()
        );
    }
    eprintln!("{N} bans published by one host in {:?}", started.elapsed());
    site.wait_rows("f2b_events", N as i64 + 1).await;
    let mut problems = Vec::new();
    let t = std::time::Instant::now();
    let all = site.plain("");
    eprintln!("list of {} served in {:?}", all.len(), t.elapsed());
    if all.len() != N as usize + 1 {
        problems.push(format!("the list holds {} of {} bans", all.len(), N + 1));
    }
    if site.plain("min_reporters=2") != Vec::<String>::new() {
        problems.push("one host's flood reached min_reporters=2".into());
    }
    // Clients that ask and never read.
    let mut stuck = Vec::new();
    for _ in 0..50 {
        let mut c = TcpStream::connect(("127.0.0.1", site.port)).unwrap();
        c.write_all(&request("GET", "/v1/blocklist?format=mikrotik", &[auth()]))
            .unwrap();
        stuck.push(c);
    }
    ban(&bob, "192.0.2.121");
    let t = std::time::Instant::now();
    let got = exchange(
        site.port,
        &request("GET", "/v1/blocklist?min_reporters=1&family=6", &[auth()]),
    );
    let took = t.elapsed();
    eprintln!("served beside 50 clients that never read, in {took:?}");
    if got.is_none_or(|g| g.code != 200) || took > Duration::from_secs(5) {
        problems.push(format!(
            "beside 50 clients that never read: served in {took:?}"
        ));
    }
    // The list still moves on.
    wait_until(WAIT, "a new ban listed beside the stuck clients", || {
        site.plain("jail=sshd").contains(&"192.0.2.121".to_owned())
    });
    drop(stuck);
    verdict(&problems);
}

/// The archiver's resident memory, in KiB.
fn rss_kib(pid: u32) -> u64 {
    std::fs::read_to_string(format!("/proc/{pid}/status"))
        .unwrap()
        .lines()
        .find_map(|l| l.strip_prefix("VmRSS:"))
        .and_then(|v| v.trim().trim_end_matches("kB").trim().parse().ok())
        .unwrap()
}

/// A token holder asks for the same list under many names (each a rendered body kept in
/// memory, up to 64 of them, each with its gzip form): what the render cache keeps stays small
/// next to the list itself (10,000 bans here: a 700 KB MikroTik script).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn many_list_names_do_not_fill_the_archiver_s_memory() {
    let site = Site::new("");
    let alice = site::client(&site.url, "alice").await;
    const N: u32 = 10_000;
    let events: Vec<Event> = (0..N)
        .map(|i| {
            ban_for(
                "alice",
                &format!("10.{}.{}.{}", 100 + i / 65_536, (i / 256) % 256, i % 256),
                3600,
            )
        })
        .collect();
    for window in events.chunks(500) {
        futures::future::join_all(window.iter().map(|e| send(&alice, e))).await;
    }
    site.wait_rows("f2b_events", N as i64).await;
    let one = get(site.port, "/v1/blocklist?format=mikrotik", &[auth()]);
    assert_eq!(one.code, 200);
    // The site page's listing of these bans is made once (at start, or now): not per name.
    assert_eq!(get(site.port, "/v1/site/overview", &[auth()]).code, 200);
    let pid = site.archiver.pid();
    let before = rss_kib(pid);
    for i in 0..63 {
        for gzip in [false, true] {
            let mut headers = vec![auth()];
            if gzip {
                headers.push(("Accept-Encoding", "gzip".into()));
            }
            let got = get(
                site.port,
                &format!("/v1/blocklist?format=mikrotik&name=n{i}"),
                &headers,
            );
            assert_eq!(got.code, 200);
        }
    }
    let grown = rss_kib(pid).saturating_sub(before);
    eprintln!(
        "one body {} KiB; resident memory grew by {grown} KiB after 63 names",
        one.body.len() / 1024
    );
    // Unbounded, 63 names (and their gzip forms) keep ~50 MB here, ~500 MB with 100,000 bans;
    // the rendered lists kept are capped at 8 MiB (plus what allocations leave behind).
    let budget = 24 * 1024;
    verdict(
        &(grown > budget)
            .then(|| {
                format!(
                    "63 names of one {} KiB list grew the archiver by {grown} KiB (over {budget} KiB)",
                    one.body.len() / 1024
                )
            })
            .into_iter()
            .collect::<Vec<_>>(),
    );
}

// ---------------------------------------------------------------------------------------------
// Correctness under attack: stale lists.

/// Two writers commit out of stream order (the archiver writes two batches at once; a second
/// archiver; a batch redelivered after a crash): a row committed below the snapshot's
/// high-water mark must still reach the list. Here the first batch is held back by a lock on
/// its row in the database, as a slow commit would be.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_ban_committed_late_is_not_missed_by_the_list() {
    let site = Site::new("");
    let alice = site::client(&site.url, "alice").await;
    // The list is loaded once (the snapshot exists).
    send(&alice, &ban_for("alice", "192.0.2.60", 3600)).await;
    wait_until(WAIT, "the first ban listed", || {
        site.plain("") == ["192.0.2.60"]
    });

    // Hold the row of the next ban's id in an open transaction: the archiver's insert of it
    // waits for that lock.
    let late = ban_for("alice", "192.0.2.61", 3600);
    let pool = site.db.pool().await;
    let mut tx = pool.begin().await.unwrap();
    sqlx::query(
        "INSERT INTO f2b_events (event_id, origin, jail, ip, ip_text, action, event_time_ms, \
         bantime, expires_ms, failures, stream_seq, received_ms) \
         VALUES (?, 'x', 'x', ?, 'x', 'ban', 0, 0, 0, 0, 0, 0)",
    )
    .bind(late.id.as_bytes().to_vec())
    .bind(vec![0u8; 16])
    .execute(&mut *tx)
    .await
    .unwrap();
    send(&alice, &late).await;
    let name = site.db.mariadb.clone().unwrap();
    wait_until(WAIT, "the archiver's insert waiting for the lock", || {
        root_number(&format!(
            "SELECT COUNT(*) FROM information_schema.innodb_trx t JOIN \
             information_schema.processlist p ON p.id = t.trx_mysql_thread_id \
             WHERE t.trx_state = 'LOCK WAIT' AND p.db = '{name}'"
        )) >= 1
    });
    // A later ban goes through the second writer and is committed; the feeds wait for the
    // hole below it (the archiver consumer's ack floor), so they never pass the waiting one.
    send(&alice, &ban_for("alice", "192.0.2.62", 3600)).await;
    let sql62 = "SELECT COUNT(*) AS n FROM f2b_events WHERE ip_text = '192.0.2.62'";
    wait_for(WAIT, "the later ban archived", || async {
        (site.count(sql62).await == 1).then_some(())
    })
    .await;
    assert_eq!(
        site.plain_when("", &["192.0.2.60", "192.0.2.62"], Duration::from_secs(3))
            .await,
        ["192.0.2.60"]
    );
    // The slow commit completes.
    tx.rollback().await.unwrap();
    let sql = "SELECT COUNT(*) AS n FROM f2b_events WHERE ip_text = '192.0.2.61'";
    wait_for(WAIT, "the late ban archived", || async {
        (site.count(sql).await == 1).then_some(())
    })
    .await;
    pool.close().await;
    let archived = site.export(&["--format", "plain"]);
    assert!(archived.contains("192.0.2.61"), "export: {archived}");
    // The list must show it soon, not after the 10-minute reload.
    let start = std::time::Instant::now();
    let mut list = site.plain("");
    while !list.contains(&"192.0.2.61".to_owned()) && start.elapsed() < Duration::from_secs(20) {
        tokio::time::sleep(Duration::from_millis(200)).await;
        list = site.plain("");
    }
    verdict(
        &(!list.contains(&"192.0.2.61".to_owned()))
            .then(|| {
                format!(
                    "a ban archived (export lists it: {:?}) is missing from /v1/blocklist 20 s \
                     later: {list:?}",
                    archived.lines().collect::<Vec<_>>()
                )
            })
            .into_iter()
            .collect::<Vec<_>>(),
    );
}

/// The machine's MariaDB as root: the first number the query prints.
fn root_number(sql: &str) -> i64 {
    let out = Command::new("mariadb")
        .args(["-uroot", "-h127.0.0.1", "-N", "-B", "-e", sql])
        .output()
        .unwrap();
    String::from_utf8_lossy(&out.stdout)
        .trim()
        .parse()
        .unwrap_or(0)
}

/// Firewalls polling at once while bans arrive: the snapshot is brought forward, not loaded
/// afresh on every request (a full load holds the snapshot's lock: 577 ms at 100,000 bans).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn concurrent_polls_during_ingest_do_not_reload_the_snapshot_each_time() {
    let site = Site::new("");
    let alice = site::client(&site.url, "alice").await;
    send(&alice, &ban_for("alice", "192.0.2.70", 3600)).await;
    wait_until(WAIT, "the first ban listed", || {
        site.plain("") == ["192.0.2.70"]
    });
    let loads = |log: &str| log.matches("blocklist loaded from the archive").count();
    let before = loads(&site.archiver.log_text());
    let stop = std::sync::Arc::new(std::sync::atomic::AtomicBool::new(false));
    let port = site.port;
    let pollers: Vec<_> = (0..8)
        .map(|_| {
            let stop = stop.clone();
            std::thread::spawn(move || {
                let mut n = 0;
                while !stop.load(std::sync::atomic::Ordering::Relaxed) {
                    if exchange(port, &request("GET", "/v1/blocklist", &[auth()]))
                        .is_some_and(|g| g.code == 200)
                    {
                        n += 1;
                    }
                }
                n
            })
        })
        .collect();
    for i in 1..=150u32 {
        send(&alice, &ban_for("alice", &format!("198.51.100.{i}"), 3600)).await;
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    site.wait_rows("f2b_events", 151).await;
    stop.store(true, std::sync::atomic::Ordering::Relaxed);
    let served: usize = pollers.into_iter().map(|p| p.join().unwrap()).sum();
    let reloads = loads(&site.archiver.log_text()) - before;
    eprintln!("{served} requests served, {reloads} full loads of the snapshot");
    verdict(
        &(reloads > 2)
            .then(|| {
                format!(
                    "{reloads} full snapshot loads for {served} requests while 150 bans arrived \
                     (each holds the snapshot lock for a whole reload)"
                )
            })
            .into_iter()
            .collect::<Vec<_>>(),
    );
}

/// Unbans, pardons, revokes: the list follows them, an old ETag never gets a 304 for a changed
/// list, and gzip and identity tags never stand for each other.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn unbans_pardons_and_revokes_leave_no_stale_list_or_tag() {
    let site = Site::new("");
    let alice = site.host("alice");
    let bob = site.host("bob");
    let admin = Admin::new(site.dir.path(), "admin", &site.url);
    ban(&alice, "192.0.2.20");
    ban(&bob, "192.0.2.20");
    ban(&alice, "192.0.2.21");
    wait_until(WAIT, "the bans listed", || {
        site.plain("min_reporters=2") == ["192.0.2.20"] && site.plain("").len() == 2
    });
    let mut problems = Vec::new();
    let first = get(site.port, "/v1/blocklist", &[auth()]);
    let tag0 = first.header("etag").unwrap().to_owned();

    // One host's unban leaves the other's ban listed.
    publish(&alice, &["unban", "--jail", "sshd", "--ip", "192.0.2.20"]);
    site.wait_rows("f2b_events", 4).await;
    if site.plain_when("min_reporters=2", &[], WAIT).await != Vec::<String>::new()
        || site.plain("") != ["192.0.2.20", "192.0.2.21"]
    {
        problems.push(format!(
            "after alice's unban: {:?} / min_reporters=2 {:?}",
            site.plain(""),
            site.plain("min_reporters=2")
        ));
    }
    publish(&bob, &["unban", "--jail", "sshd", "--ip", "192.0.2.20"]);
    site.wait_rows("f2b_events", 5).await;
    if site.plain_when("", &["192.0.2.21"], WAIT).await != ["192.0.2.21"] {
        problems.push(format!("after both unbans: {:?}", site.plain("")));
    }
    let changed = get(
        site.port,
        "/v1/blocklist",
        &[auth(), ("If-None-Match", tag0.clone())],
    );
    if changed.code != 200 || changed.text() != "192.0.2.21\n" {
        problems.push(format!(
            "the old tag after a change: {} {:?}",
            changed.code,
            changed.text()
        ));
    }

    // A pardon lifts; its revoke leaves lifted what it lifted; a ban after the revoke is listed.
    let pardon = admin.order(&["pardon", "--ip", "192.0.2.0/24", "--reason", "mistake"]);
    site.wait_rows("f2b_control", 1).await;
    if !site.plain_when("", &[], WAIT).await.is_empty() {
        problems.push(format!("after the pardon: {:?}", site.plain("")));
    }
    admin.order(&["revoke", &pardon, "--reason", "done"]);
    site.wait_rows("f2b_control", 2).await;
    // What a wrong revoke would bring back, given a few seconds to show.
    if !site
        .plain_when("", &["192.0.2.21"], Duration::from_secs(3))
        .await
        .is_empty()
    {
        problems.push(format!("after the revoke: {:?}", site.plain("")));
    }
    ban(&alice, "192.0.2.21");
    wait_until(WAIT, "the new ban listed", || {
        site.plain("") == ["192.0.2.21"]
    });

    // Tags per representation.
    let plain = get(site.port, "/v1/blocklist", &[auth()]);
    let gz = get(
        site.port,
        "/v1/blocklist",
        &[auth(), ("Accept-Encoding", "gzip".into())],
    );
    let (plain_tag, gz_tag) = (
        plain.header("etag").unwrap().to_owned(),
        gz.header("etag").unwrap().to_owned(),
    );
    if gunzip(&gz.body) != plain.body {
        problems.push("the gzip body is not the identity body".into());
    }
    let identity_with_gz_tag = get(
        site.port,
        "/v1/blocklist",
        &[auth(), ("If-None-Match", gz_tag.clone())],
    );
    if identity_with_gz_tag.code != 200 {
        problems.push(format!(
            "the gzip tag answered an identity request with {}",
            identity_with_gz_tag.code
        ));
    }
    let gz_with_identity_tag = get(
        site.port,
        "/v1/blocklist",
        &[
            auth(),
            ("Accept-Encoding", "gzip".into()),
            ("If-None-Match", plain_tag.clone()),
        ],
    );
    if gz_with_identity_tag.code != 200 {
        problems.push(format!(
            "the identity tag answered a gzip request with {}",
            gz_with_identity_tag.code
        ));
    }
    // A tag from another filter with another body is no match either.
    let csv = get(
        site.port,
        "/v1/blocklist?format=csv",
        &[auth(), ("If-None-Match", plain_tag.clone())],
    );
    if csv.code != 200 {
        problems.push(format!(
            "the plain list's tag answered format=csv with {}",
            csv.code
        ));
    }
    // A client that refuses gzip gets no gzip, whatever else it accepts.
    for refuses in ["gzip;q=0, *", "*;q=1, gzip;q=0", "gzip;q=0, identity"] {
        let got = get(
            site.port,
            "/v1/blocklist",
            &[auth(), ("Accept-Encoding", refuses.into())],
        );
        if got.header("content-encoding") == Some("gzip") {
            problems.push(format!("Accept-Encoding: {refuses} got gzip"));
        }
    }
    verdict(&problems);
}

/// An operator's ban lifted by a pardon stays lifted after the pardon is revoked, as on every
/// subscriber ("a revoke ends it; what it lifted stays lifted").
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_operator_ban_a_pardon_lifted_stays_lifted_after_the_revoke() {
    let site = Site::new("");
    let admin = Admin::new(site.dir.path(), "admin", &site.url);
    admin.order(&["ban", "--ip", "203.0.113.80", "--reason", "scanner"]);
    wait_until(WAIT, "the operator's ban listed", || {
        site.plain("") == ["203.0.113.80"]
    });
    let pardon = admin.order(&[
        "pardon",
        "--ip",
        "203.0.113.80",
        "--reason",
        "our own scanner",
    ]);
    site.wait_rows("f2b_control", 2).await;
    assert!(
        site.plain_when("", &[], WAIT).await.is_empty(),
        "{:?}",
        site.plain("")
    );
    admin.order(&["revoke", &pardon, "--reason", "ticket closed"]);
    site.wait_rows("f2b_control", 3).await;
    // Give it every chance to show the ban again (it must not).
    let list = site
        .plain_when("", &["203.0.113.80"], Duration::from_secs(3))
        .await;
    verdict(
        &(!list.is_empty())
            .then(|| {
                format!(
                    "after ban, pardon, revoke of the pardon the list shows {list:?} again \
                     (export: {:?})",
                    site.export(&["--format", "plain"])
                )
            })
            .into_iter()
            .collect::<Vec<_>>(),
    );
}

// ---------------------------------------------------------------------------------------------
// Slow and idle connections.

/// Idle connections (no request, no byte) from a client without a token must not lock the
/// token holders out. The archiver runs with 1024 descriptors, systemd's default soft limit.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn idle_connections_cannot_lock_out_the_token_holders() {
    let site = Site::new("");
    let alice = site.host("alice");
    ban(&alice, "192.0.2.90");
    wait_until(WAIT, "the ban listed", || site.plain("") == ["192.0.2.90"]);
    let pid = site.archiver.pid().to_string();
    let out = Command::new("prlimit")
        .args(["--pid", &pid, "--nofile=1024:1024"])
        .output()
        .unwrap();
    assert!(out.status.success(), "prlimit: {out:?}");
    // An attacker opens connections and sends nothing (or half a request line).
    let mut idle = Vec::new();
    for i in 0..1100 {
        match TcpStream::connect(("127.0.0.1", site.port)) {
            Ok(mut c) => {
                if i % 2 == 0 {
                    let _ = c.write_all(b"GET /v1/block");
                }
                idle.push(c);
            }
            Err(_) => break,
        }
    }
    let mut problems = Vec::new();
    // The listener closes connections slow to send a request (10 s) or idle (30 s): are any
    // still open after 35 s? (An idle connection the server closed reads 0 bytes at once.)
    let probe_start = std::time::Instant::now();
    let open_after = |conns: &mut Vec<TcpStream>| {
        let mut open = 0;
        for c in conns.iter_mut() {
            c.set_nonblocking(true).unwrap();
            let mut b = [0u8; 1];
            if matches!(c.read(&mut b), Err(e) if e.kind() == std::io::ErrorKind::WouldBlock) {
                open += 1;
            }
        }
        open
    };
    // The token holder, meanwhile.
    let served = exchange(site.port, &request("GET", "/v1/blocklist", &[auth()]));
    if served.as_ref().is_none_or(|g| g.code != 200) {
        problems.push(format!(
            "with {} idle connections open, a token holder's request got {:?}",
            idle.len(),
            served.map(|g| g.code)
        ));
    }
    let health = site.archiver.health();
    if health.as_ref().map(|h| h.0) != Some(200) {
        problems.push(format!("meanwhile /healthz answers {health:?}"));
    }
    // And the archive: does a new ban still land?
    ban(&alice, "192.0.2.91");
    let archived = {
        let sql = "SELECT COUNT(*) AS n FROM f2b_events WHERE ip_text = '192.0.2.91'";
        let start = std::time::Instant::now();
        let mut n = 0;
        while n == 0 && start.elapsed() < Duration::from_secs(15) {
            n = site.count(sql).await;
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
        n
    };
    if archived == 0 {
        problems.push("meanwhile a new ban is not archived within 15 s".into());
    }
    // The idle timeout itself is what is tested: 35 s after the connections were made.
    tokio::time::sleep_until((probe_start + Duration::from_secs(35)).into()).await;
    let still = open_after(&mut idle);
    if still > 0 {
        problems.push(format!(
            "{still} of {} idle connections still held open by the server after 35 s",
            idle.len()
        ));
    }
    drop(idle);
    // Afterwards it serves again.
    wait_until(WAIT, "the feed serving again", || {
        exchange(site.port, &request("GET", "/v1/blocklist", &[auth()]))
            .is_some_and(|g| g.code == 200)
    });
    verdict(&problems);
}

// ---------------------------------------------------------------------------------------------
// The MISP feed.

/// Every event file of a MISP feed directory: (file name, JSON).
fn misp_events(dir: &Path) -> Vec<(String, serde_json::Value)> {
    std::fs::read_dir(dir)
        .map(|rd| {
            rd.filter_map(Result::ok)
                .filter(|e| {
                    let n = e.file_name().to_string_lossy().into_owned();
                    n.ends_with(".json") && n != "manifest.json"
                })
                .map(|e| {
                    (
                        e.file_name().to_string_lossy().into_owned(),
                        serde_json::from_slice(&std::fs::read(e.path()).unwrap()).unwrap(),
                    )
                })
                .collect()
        })
        .unwrap_or_default()
}

/// The values of relation `relation` in every object of the feed.
fn misp_values(dir: &Path, relation: &str) -> Vec<String> {
    let mut out = Vec::new();
    for (_, event) in misp_events(dir) {
        for object in event["Event"]["Object"].as_array().into_iter().flatten() {
            for attr in object["Attribute"].as_array().into_iter().flatten() {
                if attr["object_relation"] == relation {
                    out.push(attr["value"].as_str().unwrap_or_default().to_owned());
                }
            }
        }
    }
    out.sort();
    out
}

fn misp_export(config: &Path, out: &Path) -> std::process::Output {
    Command::new(bin("shared-f2b-archiver"))
        .arg("--config")
        .arg(config)
        .args(["export", "--format", "misp-feed", "--out"])
        .arg(out)
        .output()
        .unwrap()
}

/// A host's bans of the site's own nets, loopback, multicast and the like never reach the MISP
/// feed as `to_ids` indicators (docs/feeds.md: left out, as for the blocklists).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_misp_feed_leaves_out_what_no_firewall_should_drop() {
    let misp = format!("[archiver.misp]\norg_name = \"Example\"\norg_uuid = {ORG_UUID:?}\n");
    let site = Site::new(&format!(
        "feed_allowlist = [\"127.0.0.0/8\", \"::1/128\", \"169.254.0.0/16\", \"fe80::/10\", \
         \"10.0.0.0/8\"]\n{misp}"
    ));
    let alice = site::client(&site.url, "alice").await;
    let hostile = [
        "10.1.2.3",
        "127.0.0.1",
        "169.254.169.254",
        "::1",
        "0.0.0.0",
        "255.255.255.255",
        "224.0.0.251",
        "ff02::1",
    ];
    for ip in hostile {
        send(&alice, &ban_for("alice", ip, 3600)).await;
    }
    send(&alice, &ban_for("alice", "192.0.2.100", 3600)).await;
    site.wait_rows("f2b_events", hostile.len() as i64 + 1).await;
    let feed = site.dir.path().join("misp");
    let out = misp_export(&site.archiver_cfg.path, &feed);
    assert!(out.status.success(), "{out:?}");
    let ips = misp_values(&feed, "banned-ip");
    let problems: Vec<String> = ips
        .iter()
        .filter(|ip| *ip != "192.0.2.100")
        .map(|ip| format!("the MISP feed carries banned-ip {ip} (to_ids)"))
        .collect();
    verdict(&problems);
}

/// Names that reach the outputs: the origin (a host id may hold anything printable but
/// whitespace) in MISP's `sensor` and the history, an operator's name in JSON and Zeek. They
/// stay data: the JSON parses to the same name, Zeek lines keep five fields, PyMISP loads it.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn hostile_names_stay_data_in_every_output() {
    let misp = format!("[archiver.misp]\norg_name = \"Example\"\norg_uuid = {ORG_UUID:?}\n");
    // Charlie's NATS user, allowed to publish as a host with a hostile id.
    let hostile_host = "ch\"ar'lie<b>&;$(id)|`#,\\x\u{202e}";
    let dir = tempfile::tempdir().unwrap();
    let nats = site::nats_with_charlie_as(dir.path(), hostile_host);
    let url = nats.url();
    let db = TestDb::mariadb();
    let port = free_port();
    let (archiver_cfg, _archiver) = site::archiver_with(
        dir.path(),
        &url,
        &db,
        &format!(
            "http_listen = \"127.0.0.1:{port}\"\nhttp_tokens = [\"{TOKEN}\"]\n\
             public_url = \"https://f2b.example.org\"\n{misp}"
        ),
    );
    let host = site::config(dir.path(), "hostile", "charlie", &url, "");
    host.rename(hostile_host);
    publish(
        &host,
        &[
            "ban",
            "--jail",
            "sshd",
            "--ip",
            "192.0.2.110",
            "--bantime",
            "3600",
        ],
    );
    // An operator sharing the admin user names itself.
    let operator = "op\"er<a>tor'#;\\`$(x)";
    let op = site::config(dir.path(), "op", "admin", &url, "");
    op.rename(operator);
    let out = Command::new(bin("shared-f2b-admin"))
        .arg("--config")
        .arg(&op.path)
        .args(["ban", "--ip", "192.0.2.111", "--reason", "x\"y<z>"])
        .output()
        .unwrap();
    assert!(out.status.success(), "{out:?}");
    let got = |q: &str| get(port, q, &[auth()]);
    wait_until(WAIT, "both listed", || {
        got("/v1/blocklist").text() == "192.0.2.110\n192.0.2.111\n"
    });
    let mut problems = Vec::new();
    let json: serde_json::Value =
        serde_json::from_slice(&got("/v1/blocklist?format=json").body).unwrap();
    if json[1]["operator"] != operator {
        problems.push(format!("json operator: {}", json[1]["operator"]));
    }
    let zeek = got("/v1/blocklist?format=zeek").text();
    for line in zeek.lines().skip(1) {
        if line.split('\t').count() != 5 || line.starts_with('#') {
            problems.push(format!("zeek line: {line:?}"));
        }
    }
    if zeek.lines().count() != 3 {
        problems.push(format!("zeek: {zeek:?}"));
    }
    let history: serde_json::Value =
        serde_json::from_slice(&got("/v1/history?ip=192.0.2.110").body).unwrap();
    if history[0]["event"]["origin"] != hostile_host {
        problems.push(format!("history origin: {}", history[0]["event"]["origin"]));
    }
    for format in ["nftables", "ipset", "mikrotik", "plain", "csv"] {
        let text = got(&format!("/v1/blocklist?format={format}")).text();
        if text.contains("ch\"ar") || text.contains("op\"er") {
            problems.push(format!("format={format} carries a name: {text}"));
        }
    }
    let feed = dir.path().join("misp");
    let out = misp_export(&archiver_cfg.path, &feed);
    assert!(out.status.success(), "{out:?}");
    if misp_values(&feed, "sensor") != [hostile_host] {
        problems.push(format!("MISP sensor: {:?}", misp_values(&feed, "sensor")));
    }
    {
        let python = std::env::var("SHARED_F2B_PYMISP")
            .expect("SHARED_F2B_PYMISP names a python with PyMISP: run scripts/test");
        let check = Command::new(&python)
            .arg(repo_root().join("tests/misp/check_feed.py"))
            .arg(&feed)
            .args(["--events", "1", "--objects", "1", "--ip", "192.0.2.110"])
            .output()
            .unwrap();
        if !check.status.success() {
            problems.push(format!(
                "PyMISP: {}{}",
                String::from_utf8_lossy(&check.stdout),
                String::from_utf8_lossy(&check.stderr)
            ));
        }
    }
    verdict(&problems);
}

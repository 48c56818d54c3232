//! The original's HTTP API on the archiver (`[archiver.legacy_api]`): an old host, written from
//! the original's description (tests/legacy/old_host.py: its PUT and its cron pull into
//! `filter-<jail>.log`, banned from by a real fail2ban-server), shares with a new host; and the
//! attacks on the API, each refused with nothing stored.

use shared_f2b_tests::db::TestDb;
use shared_f2b_tests::legacy::{OldHost, api_keys, history, old_fail2ban, old_host, request};
use shared_f2b_tests::site;
use shared_f2b_tests::{free_port, wait_for};
use std::net::TcpStream;
use std::path::Path;
use std::time::Duration;

const WAIT: Duration = Duration::from_secs(30);
const WEB_TOKEN: &str = "0123456789abcdef0123456789abcdef";
const MAIL_TOKEN: &str = "fedcba9876543210fedcba9876543210";

/// oldweb at 127.0.0.1, oldmail at 127.0.0.2.
fn legacy_api(dir: &Path, url: &str, http: u16) -> String {
    let hosts = [
        OldHost {
            name: "oldweb",
            token: WEB_TOKEN,
            address: "127.0.0.1",
        },
        OldHost {
            name: "oldmail",
            token: MAIL_TOKEN,
            address: "127.0.0.2",
        },
    ];
    api_keys(dir, url, http, &hosts)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_old_host_and_a_new_host_share_through_the_old_api() {
    let dir = tempfile::tempdir().unwrap();
    let nats = site::nats_with_hosts(dir.path(), &["oldweb", "oldmail"]);
    let url = nats.url();
    let db = TestDb::mariadb();
    let http = free_port();
    let (cfg, _archiver) =
        site::archiver_with(dir.path(), &url, &db, &legacy_api(dir.path(), &url, http));
    let alice = site::host(dir.path(), "alice", &url, "ban", "", true);
    let old = old_fail2ban(dir.path());
    let api = format!("http://127.0.0.1:{http}/api/v1");
    let logdir = old.dir.display().to_string();

    // The old host's ban (its actionban's PUT) is applied by the new host's subscriber.
    let (ok, text) = old_host(&[
        "put",
        &api,
        WEB_TOKEN,
        "SSH",
        "tcp",
        "ssh",
        "203.0.113.50",
        "3600",
    ]);
    assert!(ok, "{text}");
    wait_for(WAIT, "alice to apply the old host's ban", || async {
        alice
            .shared_banned()
            .contains(&"203.0.113.50".to_owned())
            .then_some(())
    })
    .await;
    wait_for(WAIT, "the archive to hold it", || async {
        history(&cfg.path, "203.0.113.50")
            .contains(" oldweb ")
            .then_some(())
    })
    .await;

    // The new host's ban reaches the old host's pull and its Fail2Ban; its own ban does not.
    alice.fail_logins("198.51.100.60", 3);
    wait_for(WAIT, "the new host's ban in the archive", || async {
        history(&cfg.path, "198.51.100.60")
            .contains(" alice ")
            .then_some(())
    })
    .await;
    wait_for(WAIT, "the old host's pull to list it", || async {
        let (ok, text) = old_host(&["pull", &api, "all", &logdir]);
        assert!(ok, "{text}");
        let pulled = std::fs::read_to_string(old.dir.join("filter-all.log")).unwrap();
        pulled.contains("[198.51.100.60] ").then_some(pulled)
    })
    .await;
    let pulled = std::fs::read_to_string(old.dir.join("filter-all.log")).unwrap();
    assert!(
        !pulled.contains("203.0.113.50"),
        "its own ban is left out: {pulled}"
    );
    assert!(
        pulled.lines().all(|l| l.split(' ').count() == 4),
        "{pulled}"
    );
    wait_for(WAIT, "the old host's Fail2Ban to ban it", || async {
        old.banned("shared-pull")
            .contains(&"198.51.100.60".to_owned())
            .then_some(())
    })
    .await;
    // Any other last segment leaves out nobody; a host not asking for itself gets everything.
    let (_, all) = request(http, "127.0.0.1", "GET /api/v1/time/all/1/everyone/", b"").await;
    assert!(
        all.contains("203.0.113.50") && all.contains("198.51.100.60"),
        "{all}"
    );
    let (_, mail) = request(http, "127.0.0.2", "GET /api/v1/time/ssh/1", b"").await;
    assert!(mail.contains("\"203.0.113.50\""), "{mail}");
    let (status, counts) = request(
        http,
        "127.0.0.2",
        "GET /api/v1/count/all/1/remote?time=2",
        b"",
    )
    .await;
    assert_eq!(status, 200, "{counts}");
    let counts: serde_json::Value = serde_json::from_str(&counts).unwrap();
    assert!(
        counts
            .as_array()
            .unwrap()
            .iter()
            .any(|c| c["ip"] == "198.51.100.60" && c["count"] == 1)
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn attacks_on_the_old_api_are_refused_and_store_nothing() {
    let dir = tempfile::tempdir().unwrap();
    let nats = site::nats_with_hosts(dir.path(), &["oldweb", "oldmail"]);
    let url = nats.url();
    let db = TestDb::mariadb();
    let http = free_port();
    let (cfg, archiver) =
        site::archiver_with(dir.path(), &url, &db, &legacy_api(dir.path(), &url, http));
    wait_for(WAIT, "the old API", || async {
        TcpStream::connect(("127.0.0.1", http)).ok()
    })
    .await;
    let put = |token: &str| format!("PUT /api/v1/put\r\nX-TOKEN: {token}");
    let good = br#"{"hostname": "oldweb", "date": "2025-01-01 00:00:00.000000", "jail": "ssh", "proto": "tcp", "port": "22", "ip": "192.0.2.77", "bantime": "600"}"#;

    // A wrong token, and none.
    assert_eq!(
        request(
            http,
            "127.0.0.1",
            &put("0123456789abcdef0123456789abcdeX"),
            good
        )
        .await
        .0,
        401
    );
    assert_eq!(
        request(http, "127.0.0.1", "PUT /api/v1/put", good).await.0,
        401
    );
    // Malformed JSON, an address that is not one, a 1 MB body.
    assert_eq!(
        request(http, "127.0.0.1", &put(WEB_TOKEN), b"{\"jail\": ")
            .await
            .0,
        400
    );
    let not_ip = br#"{"jail": "ssh", "ip": "192.0.2.256", "bantime": "600"}"#;
    let (status, text) = request(http, "127.0.0.1", &put(WEB_TOKEN), not_ip).await;
    assert_eq!(status, 400, "{text}");
    let big = vec![b' '; 1 << 20];
    assert_eq!(
        request(http, "127.0.0.1", &put(WEB_TOKEN), &big).await.0,
        413
    );
    // SQL in every field.
    let sql = "x' OR '1'='1'; DROP TABLE f2b_events; --";
    for field in ["hostname", "date", "jail", "proto", "port", "ip", "bantime"] {
        let mut body: serde_json::Value = serde_json::from_slice(good).unwrap();
        body[field] = sql.into();
        let (status, text) = request(
            http,
            "127.0.0.1",
            &put(WEB_TOKEN),
            body.to_string().as_bytes(),
        )
        .await;
        if field == "hostname" || field == "date" {
            // Never read: the token says who, the arrival says when.
            assert_eq!(status, 200, "{field}: {text}");
        } else {
            assert_eq!(status, 400, "{field}: {text}");
        }
    }
    // GETs from an address that is neither a host's nor allowed; paths that are not.
    assert_eq!(
        request(http, "127.0.0.3", "GET /api/v1/time/all/1", b"")
            .await
            .0,
        403
    );
    assert_eq!(
        request(http, "127.0.0.1", "GET /api/v1/time/all/x", b"")
            .await
            .0,
        400
    );
    assert_eq!(
        request(http, "127.0.0.1", "GET /api/v1/time/a%27b/1", b"")
            .await
            .0,
        400
    );
    assert_eq!(
        request(http, "127.0.0.1", "GET /api/v1/count/all/1/x/y", b"")
            .await
            .0,
        400
    );

    // An address no host may ban; a host's token from another host's address.
    let home = br#"{"jail": "ssh", "ip": "127.0.0.1", "bantime": "600"}"#;
    let (status, text) = request(http, "127.0.0.1", &put(WEB_TOKEN), home).await;
    assert_eq!(status, 400, "{text}");
    assert_eq!(
        request(http, "127.0.0.1", &put(MAIL_TOKEN), good).await.0,
        403
    );
    // oldmail's own token from its address makes oldmail's ban, whatever the body says.
    let (status, text) = request(http, "127.0.0.2", &put(MAIL_TOKEN), good).await;
    assert_eq!((status, text.as_str()), (200, "OK"));
    wait_for(WAIT, "the archive", || async {
        let h = history(&cfg.path, "192.0.2.77");
        (h.lines().count() == 4).then_some(h)
    })
    .await;
    let h = history(&cfg.path, "192.0.2.77");
    assert_eq!(h.matches(" oldweb ").count(), 2, "{h}");
    assert_eq!(h.matches(" oldmail ").count(), 1, "{h}");
    // Nothing else was stored, and the table is whole.
    assert_eq!(db.rows().await, 3, "{}", archiver.log_text());
}

//! Intake on the shipped site config (real nats-server, MariaDB, real Fail2Ban on every host,
//! the archiver fetching its `[[archiver.intake]]` sources every second from a local HTTP
//! server, `tests/intake/serve.py`): a FireHOL-style list and a Spamhaus DROP file become bans
//! at the hosts that take intel, never of what must not be banned; what a list drops is lifted;
//! a list that turns empty or answers 500 lifts nothing; a refresh with nothing new publishes
//! nothing. A MISP static feed written by PyMISP's feed tools and a stand-in for MISP's
//! `restSearch`: the right attributes are banned, the rest are not, a removed one is lifted.
//! A host's user publishing an intel order: refused.

use shared_f2b_tests::db::TestDb;
use shared_f2b_tests::host::{Daemon, Host};
use shared_f2b_tests::site::{self, client};
use shared_f2b_tests::{free_port, repo_root, wait_for};
use sqlx::Row;
use std::path::{Path, PathBuf};
use std::process::{Child, Command};
use std::time::Duration;

const WAIT: Duration = Duration::from_secs(30);

/// `tests/intake/serve.py` serving `dir` on a port of its own; killed when dropped.
struct Source {
    dir: PathBuf,
    url: String,
    child: Child,
}

impl Source {
    fn start(dir: &Path) -> Source {
        std::fs::create_dir_all(dir).unwrap();
        let port = free_port();
        let child = Command::new("python3")
            .arg(repo_root().join("tests/intake/serve.py"))
            .arg(dir)
            .arg(port.to_string())
            .spawn()
            .unwrap();
        let url = format!("http://127.0.0.1:{port}");
        shared_f2b_tests::wait_until(Duration::from_secs(10), "the source serves", || {
            std::net::TcpStream::connect(("127.0.0.1", port)).is_ok()
        });
        Source {
            dir: dir.to_owned(),
            url,
            child,
        }
    }

    fn write(&self, name: &str, text: &str) {
        let tmp = self.dir.join(format!(".{name}.tmp"));
        std::fs::write(&tmp, text).unwrap();
        std::fs::rename(tmp, self.dir.join(name)).unwrap();
    }

    fn fail(&self, name: &str, status: Option<u16>) {
        let path = self.dir.join(format!("{name}.status"));
        match status {
            Some(s) => std::fs::write(path, s.to_string()).unwrap(),
            None => {
                let _ = std::fs::remove_file(path);
            }
        }
    }
}

impl Drop for Source {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

fn holds(host: &Host, net: &str) -> bool {
    host.f2b.banned("shared").iter().any(|b| b == net)
}

async fn wait_held(host: &Host, net: &str, held: bool) {
    wait_for(
        WAIT,
        &format!(
            "{net} {} in {}",
            if held { "banned" } else { "lifted" },
            host.name
        ),
        || async { (holds(host, net) == held).then_some(()) },
    )
    .await;
}

/// A source's fetches and failures as `f2b_intake_sources` records them.
async fn fetches(db: &TestDb, source: &str) -> (i64, i64) {
    let pool = db.pool().await;
    let row = sqlx::query("SELECT fetches, failures FROM f2b_intake_sources WHERE source = ?")
        .bind(source)
        .fetch_optional(&pool)
        .await
        .unwrap();
    pool.close().await;
    row.map_or((0, 0), |r| (r.get("fetches"), r.get("failures")))
}

/// Waits until `source` was fetched `more` times after now.
async fn rounds(db: &TestDb, source: &str, more: i64) -> (i64, i64) {
    let (start, _) = fetches(db, source).await;
    wait_for(
        WAIT,
        &format!("{more} more fetches of {source}"),
        || async {
            let f = fetches(db, source).await;
            (f.0 >= start + more).then_some(f)
        },
    )
    .await
}

/// The intel and unlist orders the archive holds from `source`.
async fn orders(db: &TestDb, source: &str) -> Vec<(String, String)> {
    let pool = db.pool().await;
    let rows = sqlx::query(
        "SELECT kind, net_text FROM f2b_control WHERE operator = ? ORDER BY stream_seq",
    )
    .bind(source)
    .fetch_all(&pool)
    .await
    .unwrap();
    pool.close().await;
    rows.iter()
        .map(|r| (r.get("kind"), r.get("net_text")))
        .collect()
}

fn intake(name: &str, kind: &str, url: &str, extra: &str) -> String {
    format!(
        "[[archiver.intake]]\nname = {name:?}\nkind = {kind:?}\nurl = {url:?}\nevery = \"1s\"\n\
         bantime = \"1h\"\n{extra}\n"
    )
}

struct Site {
    dir: tempfile::TempDir,
    url: String,
    db: TestDb,
    archiver_cfg: PathBuf,
    _nats: shared_f2b_tests::nats::NatsServer,
    _archiver: Daemon,
}

/// The shipped site with an archiver taking in `sources` (its `[archiver]` keys first).
fn site(dir: tempfile::TempDir, archiver_keys: &str, sources: &str) -> Site {
    let nats = site::nats_with_hosts(dir.path(), &["dave"]);
    let url = nats.url();
    let db = TestDb::mariadb();
    let (cfg, archiver) = site::archiver_with(
        dir.path(),
        &url,
        &db,
        &format!("{archiver_keys}\n{sources}"),
    );
    Site {
        archiver_cfg: cfg.path.clone(),
        dir,
        url,
        db,
        _nats: nats,
        _archiver: archiver,
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn lists_become_bans_where_intel_is_taken_never_over_what_must_not_be_banned() {
    let dir = tempfile::tempdir().unwrap();
    let lists = Source::start(&dir.path().join("lists"));
    lists.write(
        "firehol.netset",
        "# FireHOL-style: one address or net per line\n198.51.100.7\n203.0.113.0/24\n\
         0.0.0.0/0\n198.51.200.0/24\n127.0.0.1\n198.18.0.0/15\n10.1.2.0/24\n192.0.2.44 # trailing comment\n",
    );
    lists.write(
        "drop.txt",
        "; Spamhaus DROP List 2026/12/03 - (c) 2026 The Spamhaus Project\n\
         ; Last-Modified: Thu, 03 Dec 2026 10:00:00 GMT\n\
         203.0.114.0/24 ; SBL000001\n198.51.0.0/20 ; SBL000002\n192.168.0.0/16 ; SBL000003\n",
    );
    let sources = intake(
        "firehol",
        "list",
        &format!("{}/firehol.netset", lists.url),
        "",
    ) + &intake(
        "spamhaus-drop",
        "list",
        &format!("{}/drop.txt", lists.url),
        "max_prefix = 20",
    );
    // The site's own net: the feed allowlist; the NATS server: 127.0.0.1.
    let http: std::net::SocketAddr = format!("127.0.0.1:{}", free_port()).parse().unwrap();
    let keys = format!("feed_allowlist = [\"198.51.200.0/22\"]\nhttp_listen = \"{http}\"");
    let s = site(dir, &keys, &sources);
    let bob = site::host(s.dir.path(), "bob", &s.url, "ban", "intel = \"ban\"", true);
    let charlie = site::host(s.dir.path(), "charlie", &s.url, "ban", "", true);

    for net in [
        "198.51.100.7",
        "203.0.113.0/24",
        "192.0.2.44",
        "203.0.114.0/24",
        "198.51.0.0/20",
    ] {
        wait_held(&bob, net, true).await;
    }
    let banned = bob.f2b.banned("shared");
    for never in [
        "0.0.0.0/0",
        "198.51.200.0/24",
        "127.0.0.1",
        "198.18.0.0/15",
        "10.1.2.0/24",
        "192.168.0.0/16",
    ] {
        assert!(
            !banned.iter().any(|b| b == never),
            "{never} banned: {banned:?}"
        );
    }
    let ordered = orders(&s.db, "firehol").await;
    assert!(
        ordered.iter().all(|(_, net)| ![
            "0.0.0.0/0",
            "198.51.200.0/24",
            "127.0.0.1/32",
            "198.18.0.0/15",
            "10.1.2.0/24"
        ]
        .contains(&net.as_str())),
        "never ordered: {ordered:?}"
    );
    // charlie takes no intel (the default): nothing applied (its catch-up does not even ask
    // for intel orders; live ones are skipped as intel_off). Checked after dave caught up.

    // The feeds name the source of what only intake lists (single addresses), and leave it
    // out with intel=0; the page's overview shows the sources' fetches.
    let feed = |path: &str| {
        let (code, body) = shared_f2b_tests::host::http_get(http, path).expect("the feed answers");
        assert_eq!(code, 200, "{path}: {body}");
        serde_json::from_str::<serde_json::Value>(&body).unwrap()
    };
    let listed = wait_for(WAIT, "the feed lists 198.51.100.7", || async {
        let list = feed("/v1/blocklist?format=json");
        list.as_array()
            .unwrap()
            .iter()
            .find(|l| l["ip"] == "198.51.100.7")
            .cloned()
    })
    .await;
    assert_eq!(listed["source"], "firehol");
    assert!(listed["operator"].is_null());
    let without = feed("/v1/blocklist?format=json&intel=0");
    assert!(
        !without
            .as_array()
            .unwrap()
            .iter()
            .any(|l| l["ip"] == "198.51.100.7"),
        "{without}"
    );
    let overview = feed("/v1/site/overview");
    let intake = overview["health"]["intake"]
        .as_array()
        .expect("intake sources")
        .clone();
    assert!(
        intake
            .iter()
            .any(|x| x["source"] == "firehol" && x["entries"] == 3),
        "{intake:?}"
    );

    // A host that starts later catches up on what is listed now.
    let dave = site::host(s.dir.path(), "dave", &s.url, "ban", "intel = \"ban\"", true);
    for net in ["198.51.100.7", "203.0.113.0/24", "203.0.114.0/24"] {
        wait_held(&dave, net, true).await;
    }

    assert!(
        charlie.f2b.banned("shared").is_empty(),
        "{:?}",
        charlie.f2b.banned("shared")
    );

    // Nothing changed: rounds publish nothing.
    let before = orders(&s.db, "firehol").await.len();
    rounds(&s.db, "firehol", 3).await;
    assert_eq!(
        orders(&s.db, "firehol").await.len(),
        before,
        "a refresh publishes nothing"
    );

    // The list drops one: lifted at the next fetch, the rest stay.
    lists.write("firehol.netset", "203.0.113.0/24\n192.0.2.44\n");
    wait_held(&bob, "198.51.100.7", false).await;
    assert!(holds(&bob, "203.0.113.0/24") && holds(&bob, "192.0.2.44"));
    assert_eq!(
        orders(&s.db, "firehol")
            .await
            .last()
            .map(|(k, n)| (k.as_str(), n.as_str())),
        Some(("unlist", "198.51.100.7/32"))
    );
    // history --ip says which source listed it, and when it stopped.
    let history = shared_f2b_tests::legacy::history(&s.archiver_cfg, "198.51.100.7");
    let listed: Vec<&str> = history
        .lines()
        .filter(|l| l.contains(" firehol "))
        .filter_map(|l| {
            l.split_whitespace()
                .find(|w| *w == "intel" || *w == "unlist")
        })
        .collect();
    // Newest first: the unlist, then the intel order (again, when a round was retried or
    // renewed it).
    assert!(
        listed.len() >= 2 && listed[0] == "unlist" && listed[1..].iter().all(|w| *w == "intel"),
        "{history}"
    );

    // The list turns empty, then answers 500: counted as failures, nothing lifted.
    let count = orders(&s.db, "firehol").await.len();
    lists.write("firehol.netset", "# nothing today\n");
    let (_, failed) = rounds(&s.db, "firehol", 2).await;
    lists.fail("firehol.netset", Some(500));
    let (_, failed_more) = rounds(&s.db, "firehol", 2).await;
    assert!(
        failed >= 2 && failed_more >= failed + 2,
        "{failed} {failed_more}"
    );
    assert_eq!(
        orders(&s.db, "firehol").await.len(),
        count,
        "nothing published"
    );
    assert!(holds(&bob, "203.0.113.0/24") && holds(&bob, "192.0.2.44"));
    assert!(
        holds(&bob, "203.0.114.0/24"),
        "the other source is untouched"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_hosts_user_cannot_publish_an_intel_order() {
    let dir = tempfile::tempdir().unwrap();
    let s = site(dir, "", "");
    let bob = site::host(s.dir.path(), "bob", &s.url, "ban", "intel = \"ban\"", true);
    let alice = client(&s.url, "alice").await;
    let net = shared_f2b::control::parse_net("198.51.100.99").unwrap();
    let until = std::time::SystemTime::now() + Duration::from_secs(3600);
    for source in ["alice", "firehol"] {
        let order = shared_f2b::control::Control::intel(
            source,
            net,
            until,
            "forged by alice",
            Default::default(),
        )
        .unwrap();
        let subject = format!("f2b.control.intel.{source}");
        let _ = alice.publish(subject.clone(), order.encode().into()).await;
        // Through JetStream too: no ack comes (no import, no permission).
        let js = async_nats::jetstream::new(alice.clone());
        let acked = js.publish(subject, order.encode().into()).await;
        if let Ok(ack) = acked {
            assert!(
                tokio::time::timeout(Duration::from_secs(3), ack)
                    .await
                    .map_or(true, |r| r.is_err()),
                "the stream acknowledged alice's intel order"
            );
        }
    }
    alice.flush().await.unwrap();
    // The archiver's user may: the same order from it is stored and applied at bob.
    let archiver = client(&s.url, "archiver").await;
    let order = shared_f2b::control::Control::intel(
        "firehol",
        shared_f2b::control::parse_net("198.51.100.98").unwrap(),
        until,
        "listed by list source firehol",
        Default::default(),
    )
    .unwrap();
    async_nats::jetstream::new(archiver)
        .publish("f2b.control.intel.firehol", order.encode().into())
        .await
        .unwrap()
        .await
        .unwrap();
    wait_held(&bob, "198.51.100.98", true).await;
    assert!(
        !holds(&bob, "198.51.100.99"),
        "alice's forged order applied"
    );
    let stored: Vec<String> = orders(&s.db, "firehol")
        .await
        .into_iter()
        .map(|(_, n)| n)
        .collect();
    assert_eq!(stored, ["198.51.100.98/32"]);
    assert!(orders(&s.db, "alice").await.is_empty());
}

fn pymisp() -> String {
    std::env::var("SHARED_F2B_PYMISP")
        .expect("SHARED_F2B_PYMISP names a python with PyMISP: run scripts/test")
}

fn write_feed(dir: &Path, stage: u8) {
    let out = Command::new(pymisp())
        .arg(repo_root().join("tests/intake/write_feed.py"))
        .arg(dir)
        .arg(stage.to_string())
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_misp_feed_written_by_pymisp_is_taken_in_by_tag_and_follows_its_changes() {
    let dir = tempfile::tempdir().unwrap();
    let feed = Source::start(&dir.path().join("feed"));
    write_feed(&feed.dir, 1);
    let s = site(
        dir,
        "",
        &intake("wlcg-misp", "misp-feed", &feed.url, "tags = [\"wlcg:ban\"]"),
    );
    let bob = site::host(s.dir.path(), "bob", &s.url, "ban", "intel = \"ban\"", true);
    for ip in ["198.51.100.21", "198.51.100.22", "198.51.100.25"] {
        wait_held(&bob, ip, true).await;
    }
    // Not for detection (to_ids false), and an event without the tag.
    let banned = bob.f2b.banned("shared");
    assert!(
        !banned
            .iter()
            .any(|b| b == "198.51.100.23" || b == "198.51.100.24"),
        "{banned:?}"
    );
    // The archive names the event, the attribute and the tags.
    let pool = s.db.pool().await;
    let row = sqlx::query(
        "SELECT listing_event, listing_attribute, listing_tags FROM f2b_control \
         WHERE operator = 'wlcg-misp' AND net_text = '198.51.100.21/32'",
    )
    .fetch_one(&pool)
    .await
    .unwrap();
    pool.close().await;
    let event: String = row.get("listing_event");
    let attribute: Option<String> = row.get("listing_attribute");
    let tags: String = row.get("listing_tags");
    assert_eq!(event, "5d3b1f7e-5c3a-4a6e-9a51-0d1f0c6ca001");
    assert!(attribute.is_some());
    assert!(tags.split('\t').any(|t| t == "wlcg:ban"), "{tags:?}");

    // The event changes: the removed attribute is lifted, the rest stay.
    write_feed(&feed.dir, 2);
    wait_held(&bob, "198.51.100.22", false).await;
    assert!(holds(&bob, "198.51.100.21") && holds(&bob, "198.51.100.25"));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn misp_rest_search_is_asked_with_the_key_and_the_filters() {
    let dir = tempfile::tempdir().unwrap();
    let misp = Source::start(&dir.path().join("misp"));
    misp.write("key", "test-misp-key-0123456789\n");
    let key_file = dir.path().join("misp.key");
    std::fs::write(&key_file, "test-misp-key-0123456789\n").unwrap();
    let attribute = |ip: &str, to_ids: bool, tag: &str, n: u8| {
        serde_json::json!({
            "uuid": format!("5d3b1f7e-5c3a-4a6e-9a51-0d1f0c6cc0{n:02}"),
            "type": "ip-src", "value": ip, "to_ids": to_ids, "timestamp": "1764720000",
            "Event": {"uuid": "5d3b1f7e-5c3a-4a6e-9a51-0d1f0c6cc100", "published": true,
                      "threat_level_id": "1"},
            "Tag": [{"name": tag}]
        })
    };
    let answer = serde_json::json!({"response": {"Attribute": [
        attribute("198.51.100.31", true, "wlcg:ban", 1),
        attribute("198.51.100.32", false, "wlcg:ban", 2),
        attribute("198.51.100.33", true, "other", 3),
    ]}});
    misp.write("restsearch.json", &answer.to_string());
    // The archiver signs its orders with an intake key (not an operator's); bob takes only
    // signed orders, and that key counts at bob for intel orders only.
    let (seed, public) = site::operator_key(dir.path());
    let ops = dir.path().join("operators");
    std::fs::create_dir_all(&ops).unwrap();
    let (_, operator) = site::operator_key(&ops);
    let trust = format!(
        "[trust]\nintake_seed_file = {:?}\nintel_keys = [{public:?}]",
        seed.display().to_string()
    );
    let s = site(
        dir,
        &trust,
        &intake(
            "misp",
            "misp",
            &misp.url,
            &format!(
                "key_file = {:?}\ntags = [\"wlcg:ban\"]\nthreat_level = 2",
                key_file.display().to_string()
            ),
        ),
    );
    let signed = format!(
        "intel = \"ban\"\nrequire_signatures = true\n[trust]\nintel_keys = [{public:?}]\noperator_keys = [{operator:?}]"
    );
    let bob = site::host(s.dir.path(), "bob", &s.url, "ban", &signed, true);
    wait_held(&bob, "198.51.100.31", true).await;
    let banned = bob.f2b.banned("shared");
    assert!(
        !banned
            .iter()
            .any(|b| b == "198.51.100.32" || b == "198.51.100.33"),
        "{banned:?}"
    );
    let sent: serde_json::Value =
        serde_json::from_slice(&std::fs::read(misp.dir.join("last-request.json")).unwrap())
            .unwrap();
    assert_eq!(sent["returnFormat"], "json");
    assert_eq!(sent["to_ids"], true);
    assert_eq!(sent["tags"], serde_json::json!(["wlcg:ban"]));
    assert!(
        sent["type"]
            .as_array()
            .unwrap()
            .iter()
            .any(|t| t == "ip-dst|port")
    );

    // Every archived intel order's signature checks out again (the listing included).
    let out = Command::new(shared_f2b_tests::bin("shared-f2b-archiver"))
        .arg("--config")
        .arg(&s.archiver_cfg)
        .arg("verify")
        .output()
        .unwrap();
    let text = String::from_utf8_lossy(&out.stdout);
    assert!(
        out.status.success(),
        "verify: {text}{}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(text.contains(", unsigned: 0; key records"), "{text}");

    // Whoever holds the intake key (a compromised archiver) cannot sign anything else with
    // it: a pardon it signed is refused at bob (with an operator's key it would lift).
    let mut pardon = shared_f2b::control::Control::pardon(
        "admin",
        shared_f2b::control::parse_net("198.51.100.31").unwrap(),
        None,
        "signed with the intake key",
    )
    .unwrap();
    shared_f2b::signing::Signer::from_file(&seed)
        .unwrap()
        .sign_control(&mut pardon);
    async_nats::jetstream::new(client(&s.url, "admin").await)
        .publish("f2b.control.pardon.admin", pardon.encode().into())
        .await
        .unwrap()
        .await
        .unwrap();
    wait_for(WAIT, "bob refuses the pardon", || async {
        let refused = bob
            .subscriber
            .as_ref()
            .unwrap()
            .metric("shared_f2b_events_rejected_total{reason=\"unknown_key\"}");
        (refused >= 1.0).then_some(())
    })
    .await;
    assert!(
        holds(&bob, "198.51.100.31"),
        "the intake key's pardon lifted it"
    );

    // MISP fails: nothing lifted.
    misp.fail("restsearch.json", Some(500));
    let (_, failed) = rounds(&s.db, "misp", 2).await;
    assert!(failed >= 2);
    assert!(holds(&bob, "198.51.100.31"));
}

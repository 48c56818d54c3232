//! The MISP feed and misp-push against an SQLite archive: the files a MISP instance fetches,
//! updated in place (byte for byte the same when nothing changed, only the day that changed
//! rewritten, pardoned bans gone), and the requests a MISP instance receives (a small recording
//! server that answers as MISP's REST API does). Not tested against a live MISP.

use axum::Router;
use axum::body::Bytes;
use axum::extract::{Path as UrlPath, State};
use axum::http::{HeaderMap, StatusCode};
use axum::routing::post;
use md5::{Digest, Md5};
use shared_f2b::config::MispConfig;
use shared_f2b::control::{Control, parse_net};
use shared_f2b::event::{Action, Event, parse_ip};
use shared_f2b_archiver::db::Db;
use shared_f2b_archiver::misp::{self, Day, FeedSummary, PushSummary, Target};
use shared_f2b_archiver::store::{self, Archived, ArchivedControl};
use std::collections::{BTreeMap, HashMap};
use std::path::Path;
use std::sync::{Arc, Mutex};
use std::time::SystemTime;

fn config() -> MispConfig {
    MispConfig {
        org_name: "Example University".into(),
        org_uuid: "5f0c3c1e-1b2a-4c3d-9e8f-0123456789ab".parse().unwrap(),
        distribution: 1,
        tlp: "tlp:amber".into(),
        info: "Shared Fail2Ban bans".into(),
    }
}

fn at(text: &str) -> SystemTime {
    humantime::parse_rfc3339(text).unwrap()
}

struct Archive {
    db: Db,
    seq: u64,
    _dir: tempfile::TempDir,
}

impl Archive {
    async fn new() -> Archive {
        let dir = tempfile::tempdir().unwrap();
        let url = format!("sqlite://{}?mode=rwc", dir.path().join("a.db").display());
        let db = Db::connect(&url).await.unwrap();
        db.migrate().await.unwrap();
        Archive {
            db,
            seq: 0,
            _dir: dir,
        }
    }

    async fn event(&mut self, action: Action, origin: &str, ip: &str, time: &str) -> Event {
        let event = Event::new(
            action,
            origin,
            "sshd",
            parse_ip(ip).unwrap(),
            at(time),
            600,
            4,
        )
        .unwrap();
        self.seq += 1;
        let row = Archived {
            event: event.clone(),
            seq: self.seq,
        };
        store::insert(&self.db, &[row], &[], &[]).await.unwrap();
        event
    }

    async fn ban(&mut self, origin: &str, ip: &str, time: &str) -> Event {
        self.event(Action::Ban, origin, ip, time).await
    }

    async fn pardon(&mut self, net: &str) {
        let control = Control::pardon("ops", parse_net(net).unwrap(), None, "a partner").unwrap();
        self.seq += 1;
        let row = ArchivedControl {
            control,
            seq: self.seq,
            site: None,
        };
        store::insert(&self.db, &[], &[row], &[]).await.unwrap();
    }
}

/// Every file in the feed directory with its bytes.
fn files(dir: &Path) -> BTreeMap<String, Vec<u8>> {
    std::fs::read_dir(dir)
        .unwrap()
        .map(|e| {
            let e = e.unwrap();
            (
                e.file_name().to_string_lossy().into_owned(),
                std::fs::read(e.path()).unwrap(),
            )
        })
        .collect()
}

fn json(bytes: &[u8]) -> serde_json::Value {
    serde_json::from_slice(bytes).unwrap()
}

fn event_file(day: &str) -> String {
    format!(
        "{}.json",
        misp::event_uuid(&config(), Day::parse(day).unwrap())
    )
}

/// `check_feed.py` with PyMISP, when `SHARED_F2B_PYMISP` names a Python that has it (the
/// workspace's integration test always runs it).
fn pymisp_check(dir: &Path, args: &[&str]) {
    let Ok(python) = std::env::var("SHARED_F2B_PYMISP") else {
        return;
    };
    let script = Path::new(env!("CARGO_MANIFEST_DIR")).join("../tests/misp/check_feed.py");
    let out = std::process::Command::new(python)
        .arg(script)
        .arg(dir)
        .args(args)
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "check_feed.py: {}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
}

#[tokio::test]
async fn the_feed_is_updated_in_place_day_by_day() {
    let mut archive = Archive::new().await;
    let misp = config();
    let out = tempfile::tempdir().unwrap();
    let feed = out.path().join("feed");
    let a = archive
        .ban("alice", "192.0.2.1", "2025-03-01T10:00:00Z")
        .await;
    let b = archive
        .ban("bob", "192.0.2.2", "2025-03-01T23:59:59.5Z")
        .await;
    let c = archive
        .ban("alice", "2001:db8::3", "2025-03-02T00:00:00Z")
        .await;
    archive
        .ban("bob", "198.51.100.9", "2025-03-02T08:00:00Z")
        .await;
    archive
        .event(Action::Unban, "alice", "192.0.2.1", "2025-03-02T09:00:00Z")
        .await;
    // A mistake, pardoned: not an offence to share.
    archive.pardon("198.51.100.0/24").await;

    let s = misp::write_feed(&archive.db, &misp, &[], &feed, None)
        .await
        .unwrap();
    assert_eq!(
        s,
        FeedSummary {
            days: 2,
            written: 2,
            removed: 0,
            bans: 3,
            events: 2
        }
    );
    let first = files(&feed);
    let (day1, day2) = (event_file("2025-03-01"), event_file("2025-03-02"));
    let names: Vec<&str> = first.keys().map(String::as_str).collect();
    let mut expected = vec!["hashes.csv", "manifest.json", &day1, &day2];
    expected.sort();
    assert_eq!(names, expected);
    let e1 = json(&first[&day1]);
    let objects: Vec<&str> = e1["Event"]["Object"]
        .as_array()
        .unwrap()
        .iter()
        .map(|o| o["uuid"].as_str().unwrap())
        .collect();
    assert_eq!(objects, [a.id.to_string(), b.id.to_string()]);
    let e2 = json(&first[&day2]);
    assert_eq!(e2["Event"]["Object"].as_array().unwrap().len(), 1);
    assert_eq!(e2["Event"]["Object"][0]["uuid"], c.id.to_string());
    assert_eq!(e2["Event"]["info"], "Shared Fail2Ban bans 2025-03-02");
    let manifest = json(&first["manifest.json"]);
    assert_eq!(manifest.as_object().unwrap().len(), 2);
    let hashes = String::from_utf8(first["hashes.csv"].clone()).unwrap();
    assert!(hashes.lines().all(|l| l.len() == 32 + 1 + 36));
    pymisp_check(
        &feed,
        &[
            "--events",
            "2",
            "--objects",
            "3",
            "--absent-ip",
            "198.51.100.9",
        ],
    );

    // Nothing new: the same bytes, nothing rewritten.
    let s = misp::write_feed(&archive.db, &misp, &[], &feed, None)
        .await
        .unwrap();
    assert_eq!(s.written, 0);
    assert_eq!(files(&feed), first);

    // A new ban on the second day changes that day's file (and the index), nothing else.
    archive
        .ban("carol", "203.0.113.4", "2025-03-02T12:00:00Z")
        .await;
    let s = misp::write_feed(&archive.db, &misp, &[], &feed, None)
        .await
        .unwrap();
    assert_eq!((s.days, s.written, s.bans), (2, 1, 4));
    let second = files(&feed);
    assert_eq!(
        second.keys().collect::<Vec<_>>(),
        first.keys().collect::<Vec<_>>()
    );
    assert_eq!(second[&day1], first[&day1]);
    assert_ne!(second[&day2], first[&day2]);
    assert_eq!(
        json(&second[&day2])["Event"]["Object"]
            .as_array()
            .unwrap()
            .len(),
        2
    );

    // Only the days from --since are regenerated; the older days keep their entries, even when
    // the index has to be rebuilt from the event files.
    std::fs::remove_file(feed.join("manifest.json")).unwrap();
    let s = misp::write_feed(
        &archive.db,
        &misp,
        &[],
        &feed,
        Some(at("2025-03-02T18:00:00Z")),
    )
    .await
    .unwrap();
    assert_eq!((s.days, s.written, s.events), (1, 0, 2));
    assert_eq!(files(&feed), second);

    // A pardon after the export: the ban leaves the day's file and the day's timestamp moves
    // forward although no newer ban arrived, so MISP instances fetch the day again.
    archive.pardon("192.0.2.2").await;
    misp::write_feed(&archive.db, &misp, &[], &feed, None)
        .await
        .unwrap();
    let third = files(&feed);
    let old = json(&second[&day1]);
    let new = json(&third[&day1]);
    assert_eq!(new["Event"]["Object"].as_array().unwrap().len(), 1);
    let ts = |e: &serde_json::Value| e["Event"]["timestamp"].as_str().unwrap().parse::<u64>();
    assert!(ts(&new).unwrap() > ts(&old).unwrap());
    assert_eq!(third[&day2], second[&day2]);
    // ... and stays put on the next run.
    misp::write_feed(&archive.db, &misp, &[], &feed, None)
        .await
        .unwrap();
    assert_eq!(files(&feed), third);
    pymisp_check(
        &feed,
        &[
            "--events",
            "2",
            "--objects",
            "3",
            "--absent-ip",
            "192.0.2.2",
        ],
    );

    // A day none of whose bans is left loses its file.
    archive.pardon("192.0.2.1").await;
    let s = misp::write_feed(&archive.db, &misp, &[], &feed, None)
        .await
        .unwrap();
    assert_eq!((s.days, s.removed, s.events), (1, 1, 1));
    let fourth = files(&feed);
    assert!(!fourth.contains_key(&day1));
    assert_eq!(fourth[&day2], third[&day2]);
    let manifest = json(&fourth["manifest.json"]);
    assert_eq!(
        manifest.as_object().unwrap().keys().collect::<Vec<_>>(),
        [&day2[..36]]
    );
    assert!(!String::from_utf8_lossy(&fourth["hashes.csv"]).contains(&day1[..36]));
    pymisp_check(&feed, &["--events", "1", "--objects", "2"]);
}

/// What the mock MISP saw and holds.
#[derive(Default)]
struct Seen {
    requests: Vec<(String, HeaderMap, serde_json::Value)>,
    /// Event uuid → the timestamp of the version held.
    events: HashMap<String, u64>,
}

type Shared = Arc<Mutex<Seen>>;

fn timestamp(body: &serde_json::Value) -> u64 {
    body["Event"]["timestamp"]
        .as_str()
        .unwrap()
        .parse()
        .unwrap()
}

/// `/events/add` as MISP answers it: 404 "Event already exists" for a uuid it holds.
async fn add(State(seen): State<Shared>, headers: HeaderMap, body: Bytes) -> (StatusCode, String) {
    let body = json(&body);
    let mut seen = seen.lock().unwrap();
    seen.requests
        .push(("/events/add".into(), headers, body.clone()));
    let uuid = body["Event"]["uuid"].as_str().unwrap().to_owned();
    if seen.events.contains_key(&uuid) {
        return (
            StatusCode::NOT_FOUND,
            r#"{"name":"Event already exists, if you would like to edit it, use the url in the location header.","message":"Event already exists, if you would like to edit it, use the url in the location header.","url":"/events/add"}"#.into(),
        );
    }
    seen.events.insert(uuid, timestamp(&body));
    (StatusCode::OK, body.to_string())
}

/// `/events/edit/<uuid>` as MISP answers it: only a newer version is taken.
async fn edit(
    State(seen): State<Shared>,
    UrlPath(uuid): UrlPath<String>,
    headers: HeaderMap,
    body: Bytes,
) -> (StatusCode, String) {
    let body = json(&body);
    let mut seen = seen.lock().unwrap();
    seen.requests
        .push((format!("/events/edit/{uuid}"), headers, body.clone()));
    let held = seen.events[&uuid];
    if timestamp(&body) <= held {
        return (
            StatusCode::FORBIDDEN,
            r#"{"saved":false,"name":"Could not edit Event","message":"Could not edit Event","url":"/events/edit","errors":"Event could not be saved: Event in the request not newer than the local copy."}"#.into(),
        );
    }
    seen.events.insert(uuid, timestamp(&body));
    (StatusCode::OK, body.to_string())
}

/// A recording MISP on a free port, and a target for it whose key file is in `dir`.
async fn mock_misp(dir: &Path) -> (Shared, Target) {
    let seen: Shared = Arc::default();
    let app = Router::new()
        .route("/events/add", post(add))
        .route("/events/edit/{uuid}", post(edit))
        .with_state(seen.clone());
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let url = format!(
        "http://127.0.0.1:{}/",
        listener.local_addr().unwrap().port()
    );
    tokio::spawn(async move { axum::serve(listener, app).await.unwrap() });
    let key_file = dir.join("misp.key");
    std::fs::write(&key_file, "s3cretAPIkey0123456789\n").unwrap();
    (seen, Target::new(&url, &key_file).unwrap())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn push_adds_each_day_then_edits_only_what_changed() {
    let mut archive = Archive::new().await;
    let misp = config();
    archive
        .ban("alice", "192.0.2.1", "2025-03-01T10:00:00Z")
        .await;
    archive
        .ban("bob", "2001:db8::2", "2025-03-02T11:00:00Z")
        .await;
    archive
        .ban("bob", "198.51.100.9", "2025-03-02T12:00:00Z")
        .await;
    archive.pardon("198.51.100.9").await;

    let dir = tempfile::tempdir().unwrap();
    let (seen, target) = mock_misp(dir.path()).await;
    let since = at("2025-03-01T12:00:00Z");

    let s = misp::push(&archive.db, &misp, &[], &target, since)
        .await
        .unwrap();
    assert_eq!(
        s,
        PushSummary {
            days: 2,
            created: 2,
            updated: 0,
            unchanged: 0,
            bans: 2
        }
    );
    // The events MISP receives are the feed's, byte for byte.
    let feed = dir.path().join("feed");
    misp::write_feed(&archive.db, &misp, &[], &feed, None)
        .await
        .unwrap();
    {
        let seen = seen.lock().unwrap();
        let paths: Vec<&str> = seen.requests.iter().map(|r| r.0.as_str()).collect();
        assert_eq!(paths, ["/events/add", "/events/add"]);
        for (_, headers, body) in &seen.requests {
            assert_eq!(headers["authorization"], "s3cretAPIkey0123456789");
            assert_eq!(headers["accept"], "application/json");
            assert_eq!(headers["content-type"], "application/json");
            let uuid = body["Event"]["uuid"].as_str().unwrap();
            assert_eq!(
                body,
                &json(&std::fs::read(feed.join(format!("{uuid}.json"))).unwrap())
            );
        }
        assert_eq!(
            seen.requests[0].2["Event"]["date"], "2025-03-01",
            "the day of --since is sent whole, oldest first"
        );
        assert!(!seen.requests[1].2.to_string().contains("198.51.100.9"));
    }

    // Again with nothing new: MISP has both as they are.
    let s = misp::push(&archive.db, &misp, &[], &target, since)
        .await
        .unwrap();
    assert_eq!((s.created, s.updated, s.unchanged), (0, 0, 2));

    // A new ban on the second day: that day is edited, the first left as it is. Its arrival
    // second must be later than the version MISP holds.
    tokio::time::sleep(std::time::Duration::from_millis(1100)).await;
    archive
        .ban("carol", "203.0.113.4", "2025-03-02T13:00:00Z")
        .await;
    seen.lock().unwrap().requests.clear();
    let s = misp::push(&archive.db, &misp, &[], &target, since)
        .await
        .unwrap();
    assert_eq!((s.created, s.updated, s.unchanged, s.bans), (0, 1, 1, 3));
    let seen = seen.lock().unwrap();
    let paths: Vec<String> = seen.requests.iter().map(|r| r.0.clone()).collect();
    let day2 = misp::event_uuid(&misp, Day::parse("2025-03-02").unwrap());
    let day1 = misp::event_uuid(&misp, Day::parse("2025-03-01").unwrap());
    assert_eq!(
        paths,
        [
            "/events/add".to_owned(),
            format!("/events/edit/{day1}"),
            "/events/add".to_owned(),
            format!("/events/edit/{day2}"),
        ]
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn allowlisted_and_special_addresses_are_never_shared() {
    let mut archive = Archive::new().await;
    let misp = config();
    // The config's default allowlist (loopback, link-local) plus the site's own net.
    let mut never = shared_f2b::config::ArchiverConfig::default().feed_allowlist;
    never.push("203.0.113.0/24".parse().unwrap());
    let shared = "192.0.2.1";
    let hidden = ["127.0.0.1", "224.0.0.251", "203.0.113.7", "203.0.113.8"];
    archive.ban("alice", shared, "2025-03-01T10:00:00Z").await;
    archive.ban("bob", hidden[0], "2025-03-01T10:01:00Z").await;
    archive.ban("bob", hidden[1], "2025-03-01T10:02:00Z").await;
    archive
        .ban("carol", hidden[2], "2025-03-01T10:03:00Z")
        .await;
    // A day with only the site's own addresses has no event at all.
    archive
        .ban("carol", hidden[3], "2025-03-02T10:00:00Z")
        .await;

    let out = tempfile::tempdir().unwrap();
    let feed = out.path().join("feed");
    let s = misp::write_feed(&archive.db, &misp, &never, &feed, None)
        .await
        .unwrap();
    assert_eq!((s.days, s.bans, s.events), (1, 1, 1));
    let written = files(&feed);
    let day1 = event_file("2025-03-01");
    let names: Vec<&str> = written.keys().map(String::as_str).collect();
    let mut expected = vec!["hashes.csv", "manifest.json", &day1];
    expected.sort();
    assert_eq!(names, expected);
    let md5 = |ip: &str| -> String {
        Md5::digest(ip.as_bytes())
            .iter()
            .map(|b| format!("{b:02x}"))
            .collect()
    };
    let hashes = String::from_utf8_lossy(&written["hashes.csv"]);
    assert!(String::from_utf8_lossy(&written[&day1]).contains(shared));
    assert!(hashes.contains(&md5(shared)));
    for ip in hidden {
        for (name, bytes) in &written {
            assert!(
                !String::from_utf8_lossy(bytes).contains(ip),
                "{ip} in {name}"
            );
        }
        assert!(!hashes.contains(&md5(ip)), "{ip} in hashes.csv");
    }
    let mut args = vec!["--events", "1", "--objects", "1", "--ip", shared];
    for ip in hidden {
        args.extend(["--absent-ip", ip]);
    }
    pymisp_check(&feed, &args);

    let dir = tempfile::tempdir().unwrap();
    let (seen, target) = mock_misp(dir.path()).await;
    let s = misp::push(
        &archive.db,
        &misp,
        &never,
        &target,
        at("2025-03-01T00:00:00Z"),
    )
    .await
    .unwrap();
    assert_eq!((s.days, s.created, s.bans), (1, 1, 1));
    let seen = seen.lock().unwrap();
    assert_eq!(seen.requests.len(), 1);
    let body = seen.requests[0].2.to_string();
    assert!(body.contains(shared));
    for ip in hidden {
        assert!(!body.contains(ip), "{ip} pushed");
    }
}

#[tokio::test]
async fn push_refuses_plain_http_to_another_host_before_sending_anything() {
    let dir = tempfile::tempdir().unwrap();
    let key_file = dir.path().join("misp.key");
    std::fs::write(&key_file, "key").unwrap();
    let err = Target::new("http://misp.example.org", &key_file).unwrap_err();
    assert!(err.to_string().contains("https://"), "{err}");
}

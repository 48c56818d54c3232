//! A shipped site whose archiver serves `[archiver] http_listen` (the feeds and the site page)
//! behind a bearer token, storing into MariaDB: the fixture of the feed and site-page attack
//! tests, with the raw HTTP client they attack it with.

use crate::db::TestDb;
use crate::host::Daemon;
use crate::http::{self, Got, request};
use crate::nats::NatsServer;
use crate::{HostConfig, free_port, site, wait_until};
use std::path::Path;
use std::time::Duration;

/// The token the served archiver takes.
pub const TOKEN: &str = "served-attack-token-0123456789abcdef";
/// How long an answer is waited for before the server counts as having given none.
const ANSWER_WITHIN: Duration = Duration::from_secs(15);

/// The site and its serving archiver. Fields drop in order: the archiver before its broker,
/// the database and the directory last.
pub struct Served {
    pub archiver: Daemon,
    pub nats: NatsServer,
    pub db: TestDb,
    pub archiver_cfg: HostConfig,
    pub url: String,
    pub port: u16,
    pub dir: tempfile::TempDir,
}

impl Served {
    /// The site with `[archiver]` keys `keys` besides the listener and the token.
    pub fn new(keys: &str) -> Served {
        Served::with(keys, |db| db.url.clone(), |_| {})
    }

    /// As [`Served::new`], the archiver reaching its database at `db_url` (e.g. a proxy the
    /// test can take down), with `edit` run on its config file before it starts.
    pub fn with(
        keys: &str,
        db_url: impl FnOnce(&TestDb) -> String,
        edit: impl FnOnce(&Path),
    ) -> Served {
        let dir = tempfile::tempdir().unwrap();
        let nats = site::nats(dir.path());
        let url = nats.url();
        let db = TestDb::mariadb();
        let port = free_port();
        let archiver_cfg = site::config(
            dir.path(),
            "archiver",
            "archiver",
            &url,
            &format!(
                "[archiver]\ndatabase_url = {:?}\nhttp_listen = \"127.0.0.1:{port}\"\n\
                 http_tokens = [\"{TOKEN}\"]\n{keys}",
                db_url(&db)
            ),
        );
        edit(&archiver_cfg.path);
        let archiver = Daemon::archiver(&archiver_cfg.path, &dir.path().join("archiver.log"));
        Served {
            archiver,
            nats,
            db,
            archiver_cfg,
            url,
            port,
            dir,
        }
    }

    /// Waits until the site page's data is served (its first load done).
    pub fn wait_for_data(&self) {
        wait_until(Duration::from_secs(30), "the site page's data", || {
            exchange(self.port, &request("GET", "/v1/site/overview", &[auth()]))
                .is_some_and(|g| g.code == 200)
        });
    }

    /// A host's publisher config, logging in as itself.
    pub fn host(&self, name: &str) -> HostConfig {
        site::config(self.dir.path(), name, name, &self.url, "")
    }

    /// The JSON at `path` with the token (a 200).
    pub fn data(&self, path: &str) -> serde_json::Value {
        let got = get(self.port, path, &[auth()]);
        assert_eq!(got.code, 200, "{path}: {}", got.text());
        serde_json::from_slice(&got.body).unwrap_or_else(|e| panic!("{path}: {e}: {}", got.text()))
    }
}

/// The header that carries the token.
pub fn auth() -> (&'static str, String) {
    ("Authorization", format!("Bearer {TOKEN}"))
}

/// Sends `request` as is to `port` ([`http::exchange`]: exactly the bytes an attacker
/// chooses; curl normalises paths); `None` when the server closed without an answer, or gave
/// none within 15 s.
pub fn exchange(port: u16, request: &[u8]) -> Option<Got> {
    http::exchange(port, request, ANSWER_WITHIN)
}

/// A GET that must be answered.
pub fn get(port: u16, target: &str, headers: &[(&str, String)]) -> Got {
    exchange(port, &request("GET", target, headers))
        .unwrap_or_else(|| panic!("no answer to GET {target}"))
}

/// Fails the test with every attack that got through.
pub fn verdict(problems: &[String]) {
    assert!(
        problems.is_empty(),
        "{} attack(s) succeeded:\n  - {}",
        problems.len(),
        problems.join("\n  - ")
    );
}

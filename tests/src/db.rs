//! Test databases: a fresh MariaDB database (and user) or SQLite file per test, dropped after.

use sqlx::any::install_default_drivers;
use sqlx::{AnyPool, Row};
use std::path::Path;
use std::process::Command;

/// The machine's MariaDB, as root.
pub const MARIADB_ROOT: &str = "mysql://root@127.0.0.1:3306/test";

/// One test's database.
pub struct TestDb {
    /// What the archiver's `database_url` should say.
    pub url: String,
    /// The MariaDB database and user, if this is one.
    pub mariadb: Option<String>,
}

/// Runs SQL on the machine's MariaDB as root (test setup only).
pub fn mariadb_root(sql: &str) {
    let out = Command::new("mariadb")
        .args(["-uroot", "-h127.0.0.1", "-e", sql])
        .output()
        .expect("the mariadb client runs");
    assert!(
        out.status.success(),
        "{sql}: {}",
        String::from_utf8_lossy(&out.stderr)
    );
}

impl TestDb {
    /// A new MariaDB database with its own user (password `pw`) holding all rights on it.
    pub fn mariadb() -> TestDb {
        let name = crate::unique("f2b");
        mariadb_root(&format!(
            "CREATE DATABASE {name}; CREATE USER '{name}'@'127.0.0.1' IDENTIFIED BY 'pw'; \
             GRANT ALL ON {name}.* TO '{name}'@'127.0.0.1';"
        ));
        TestDb {
            url: format!("mysql://{name}:pw@127.0.0.1:3306/{name}"),
            mariadb: Some(name),
        }
    }

    /// A second user on this MariaDB database with only the run-time rights (SELECT, INSERT,
    /// UPDATE, DELETE); its URL.
    pub fn runtime_user_url(&self) -> String {
        let name = self.mariadb.as_ref().expect("a MariaDB test database");
        mariadb_root(&format!(
            "CREATE USER '{name}_rt'@'127.0.0.1' IDENTIFIED BY 'pw'; \
             GRANT SELECT, INSERT, UPDATE, DELETE ON {name}.* TO '{name}_rt'@'127.0.0.1';"
        ));
        format!("mysql://{name}_rt:pw@127.0.0.1:3306/{name}")
    }

    /// A new SQLite file in `dir`.
    pub fn sqlite(dir: &Path) -> TestDb {
        TestDb {
            url: format!("sqlite://{}", dir.join("archive.db").display()),
            mariadb: None,
        }
    }

    /// Connects as the archiver would.
    pub async fn pool(&self) -> AnyPool {
        install_default_drivers();
        let url = if self.mariadb.is_some() {
            self.url.clone()
        } else {
            format!("{}?mode=ro", self.url)
        };
        AnyPool::connect(&url).await.expect("test database")
    }

    /// Rows in `f2b_events`; 0 before the archiver created the table. Any other error fails
    /// the test.
    pub async fn rows(&self) -> i64 {
        let pool = self.pool().await;
        let result = sqlx::query("SELECT COUNT(*) AS n FROM f2b_events")
            .fetch_one(&pool)
            .await;
        pool.close().await;
        match result {
            Ok(row) => row.get("n"),
            Err(e) if no_table_yet(&e) => 0,
            Err(e) => panic!("the archive does not answer: {e}"),
        }
    }

    /// Checks that the archive holds each of `published` exactly once and nothing else: the
    /// event id of every row, counted.
    pub async fn assert_holds_exactly(&self, published: &[uuid::Uuid]) {
        let pool = self.pool().await;
        let rows = sqlx::query("SELECT event_id FROM f2b_events")
            .fetch_all(&pool)
            .await
            .expect("the archive answers");
        pool.close().await;
        let mut held: std::collections::HashMap<Vec<u8>, usize> = Default::default();
        for row in &rows {
            *held.entry(row.get("event_id")).or_default() += 1;
        }
        let missing = published
            .iter()
            .filter(|id| !held.contains_key(id.as_bytes().as_slice()))
            .count();
        let twice = held.values().filter(|n| **n > 1).count();
        let wanted: std::collections::HashSet<&[u8]> = published
            .iter()
            .map(|id| id.as_bytes().as_slice())
            .collect();
        let foreign = held
            .keys()
            .filter(|id| !wanted.contains(id.as_slice()))
            .count();
        assert_eq!(
            (missing, twice, foreign),
            (0, 0, 0),
            "(published events missing, events held more than once, rows of no published event) \
             among {} rows for {} published events",
            rows.len(),
            published.len()
        );
    }

    /// The event id of every archived row from `origin` (one entry per row), failing loudly.
    pub async fn event_ids_of(&self, origin: &str) -> Vec<Vec<u8>> {
        let pool = self.pool().await;
        let rows = sqlx::query("SELECT event_id FROM f2b_events WHERE origin = ?")
            .bind(origin.to_owned())
            .fetch_all(&pool)
            .await
            .expect("the archive answers");
        pool.close().await;
        rows.iter().map(|r| r.get("event_id")).collect()
    }

    /// Rows in `f2b_rejects` with this reason.
    pub async fn rejects(&self, reason: &str) -> i64 {
        let pool = self.pool().await;
        let n = sqlx::query("SELECT COUNT(*) AS n FROM f2b_rejects WHERE reason = ?")
            .bind(reason.to_owned())
            .fetch_one(&pool)
            .await
            .map(|r| r.get::<i64, _>("n"))
            .expect("the archive answers");
        pool.close().await;
        n
    }
}

impl Drop for TestDb {
    fn drop(&mut self) {
        if let Some(name) = &self.mariadb {
            mariadb_root(&format!(
                "DROP DATABASE IF EXISTS {name}; DROP USER IF EXISTS '{name}'@'127.0.0.1'; \
                 DROP USER IF EXISTS '{name}_rt'@'127.0.0.1';"
            ));
        }
    }
}

/// Whether `e` says the archive's table does not exist yet (MariaDB 1146, SQLite "no such table").
fn no_table_yet(e: &sqlx::Error) -> bool {
    let text = e.to_string();
    text.contains("doesn't exist") || text.contains("no such table")
}

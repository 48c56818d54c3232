//! The archive database: MySQL/MariaDB in production, an embedded SQLite file by default, both
//! through sqlx's `Any` driver; the schema comes from `migrations/<backend>/` via `sqlx::migrate!`.

use sqlx::any::{AnyPoolOptions, install_default_drivers};
use sqlx::migrate::Migrator;
use sqlx::{AnyPool, Executor};
use std::time::Duration;
use thiserror::Error;

static MYSQL: Migrator = sqlx::migrate!("../migrations/mysql");
static SQLITE: Migrator = sqlx::migrate!("../migrations/sqlite");

/// Which SQL dialect a database speaks.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Backend {
    MySql,
    Sqlite,
}

impl Backend {
    /// `mysql` (MySQL or MariaDB) or `sqlite`.
    pub fn name(self) -> &'static str {
        match self {
            Backend::MySql => "mysql",
            Backend::Sqlite => "sqlite",
        }
    }
}

/// Why the database could not be used.
#[derive(Debug, Error)]
pub enum DbError {
    #[error(
        "unsupported database_url scheme {0:?}: use mysql://user:password@host/db or sqlite:///path"
    )]
    Scheme(String),
    #[error("cannot create the directory of the SQLite file {path}: {source}")]
    Dir {
        path: String,
        source: std::io::Error,
    },
    #[error("cannot connect to the {backend:?} database: {source}")]
    Connect {
        backend: Backend,
        source: sqlx::Error,
    },
    #[error("database migration failed: {0}")]
    Migrate(#[from] sqlx::migrate::MigrateError),
    #[error("database error: {0}")]
    Query(#[from] sqlx::Error),
}

/// A connection pool and its dialect.
#[derive(Clone)]
pub struct Db {
    pub pool: AnyPool,
    pub backend: Backend,
}

impl Db {
    /// Connects to `url` (`mysql://…`, `mariadb://…` or `sqlite://…`); creates a missing SQLite
    /// file and its directory.
    pub async fn connect(url: &str) -> Result<Db, DbError> {
        install_default_drivers();
        let (backend, url) = if let Some(rest) = url.strip_prefix("mariadb://") {
            (Backend::MySql, format!("mysql://{rest}"))
        } else if url.starts_with("mysql://") {
            (Backend::MySql, url.to_owned())
        } else if let Some(path) = url.strip_prefix("sqlite://") {
            let file = path.split('?').next().unwrap_or_default();
            if let Some(dir) = std::path::Path::new(file).parent()
                && !dir.as_os_str().is_empty()
            {
                std::fs::create_dir_all(dir).map_err(|source| DbError::Dir {
                    path: file.to_owned(),
                    source,
                })?;
            }
            let url = if path.contains('?') {
                url.to_owned()
            } else {
                format!("{url}?mode=rwc")
            };
            (Backend::Sqlite, url)
        } else {
            let scheme = url.split("://").next().unwrap_or_default().to_owned();
            return Err(DbError::Scheme(scheme));
        };
        let mut options = AnyPoolOptions::new().acquire_timeout(Duration::from_secs(10));
        if backend == Backend::Sqlite {
            // One writer at a time is what SQLite does anyway; WAL lets readers run beside it.
            options = options.max_connections(4).after_connect(|conn, _| {
                Box::pin(async move {
                    conn.execute("PRAGMA journal_mode = WAL").await?;
                    conn.execute("PRAGMA synchronous = NORMAL").await?;
                    conn.execute("PRAGMA busy_timeout = 10000").await?;
                    Ok(())
                })
            });
        } else {
            options = options.max_connections(8);
        }
        let pool = options
            .connect(&url)
            .await
            .map_err(|source| DbError::Connect { backend, source })?;
        Ok(Db { pool, backend })
    }

    /// Whether the archive's table can be read now (for `/healthz`): the database answers and
    /// the archiver's rights are in place.
    pub async fn ping(&self) -> Result<(), DbError> {
        sqlx::query("SELECT 1 FROM f2b_events LIMIT 1")
            .execute(&self.pool)
            .await?;
        Ok(())
    }

    /// Brings the schema up to date.
    pub async fn migrate(&self) -> Result<(), DbError> {
        match self.backend {
            Backend::MySql => MYSQL.run(&self.pool).await?,
            Backend::Sqlite => SQLITE.run(&self.pool).await?,
        }
        Ok(())
    }
}

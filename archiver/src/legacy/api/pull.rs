//! `GET /api/v1/time/…` and `/count/…`: what an old host's cron pulls, from the archive.
//!
//! `time` lists the bans of the last hours from one in-memory copy of the archive's recent
//! bans per window, read again once it is a second old: the hosts' pulls (every minute, most
//! of them at the same second) cost one query between them, and each answer is the copy
//! filtered for the asking host.

use crate::db::Db;
use crate::query::{self, BanCount, RecentBan};
use serde::Serialize;
use std::collections::HashMap;
use std::sync::Arc;
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};
use tokio::sync::Mutex;

/// How old the copy of the recent bans may be.
const FRESH_FOR: Duration = Duration::from_secs(1);
/// The longest window a pull may ask for (`/time/<jail>/<hours>`, `?time=`): a year.
pub const MAX_HOURS: u64 = 24 * 366;
/// Entries in one `count` answer at most.
const MAX_COUNTS: i64 = 100_000;

/// One entry of a `time` answer, as the original's API writes it.
#[derive(Debug, Clone, Serialize, PartialEq, Eq)]
pub struct TimeEntry {
    /// Unix seconds.
    pub created: i64,
    pub ip: String,
    pub port: String,
    pub protocol: String,
}

/// One entry of a `count` answer.
#[derive(Debug, Clone, Serialize, PartialEq, Eq)]
pub struct CountEntry {
    pub count: i64,
    pub ip: String,
    pub port: String,
    pub protocol: String,
}

/// Which bans a pull asks for.
#[derive(Debug, Clone, Default)]
pub struct Pull {
    /// `None`: every jail (`all`).
    pub jail: Option<String>,
    pub hours: u64,
    /// Leave this host's bans out.
    pub exclude: Option<String>,
    /// Only hosts whose id ends with this (`?domain=`).
    pub domain: Option<String>,
}

struct Copy {
    read_at: Instant,
    bans: Arc<Vec<RecentBan>>,
}

/// The copies of the recent bans, one per window asked for.
pub struct Recent {
    db: Db,
    copies: Mutex<HashMap<u64, Copy>>,
}

impl Recent {
    pub fn new(db: Db) -> Recent {
        Recent {
            db,
            copies: Mutex::new(HashMap::new()),
        }
    }

    /// The bans of the last `hours` hours, from a copy at most [`FRESH_FOR`] old.
    async fn bans(&self, hours: u64) -> Result<Arc<Vec<RecentBan>>, sqlx::Error> {
        // One reader at a time: the pulls arriving meanwhile take what it read.
        let mut copies = self.copies.lock().await;
        if let Some(copy) = copies.get(&hours)
            && copy.read_at.elapsed() < FRESH_FOR
        {
            return Ok(copy.bans.clone());
        }
        let read_at = Instant::now();
        let since = SystemTime::now() - Duration::from_secs(hours * 3600);
        let bans = Arc::new(query::recent_bans(&self.db, since).await?);
        copies.retain(|_, c| c.read_at.elapsed() < FRESH_FOR * 60);
        copies.insert(
            hours,
            Copy {
                read_at,
                bans: bans.clone(),
            },
        );
        Ok(bans)
    }

    /// The `time` answer for `pull`.
    pub async fn time(&self, pull: &Pull) -> Result<Vec<TimeEntry>, sqlx::Error> {
        let bans = self.bans(pull.hours).await?;
        let since = SystemTime::now() - Duration::from_secs(pull.hours * 3600);
        let since_ms = since
            .duration_since(UNIX_EPOCH)
            .unwrap_or_default()
            .as_millis() as i64;
        Ok(bans
            .iter()
            .filter(|b| b.time_ms >= since_ms)
            .filter(|b| pull.jail.as_ref().is_none_or(|j| *j == b.jail))
            .filter(|b| pull.exclude.as_ref() != Some(&b.origin))
            .filter(|b| {
                pull.domain
                    .as_ref()
                    .is_none_or(|d| b.origin.ends_with(d.as_str()))
            })
            .map(|b| TimeEntry {
                created: b.time_ms.div_euclid(1000),
                ip: b.ip.clone(),
                port: b.port.clone().unwrap_or_default(),
                protocol: b.protocol.clone().unwrap_or_default(),
            })
            .collect())
    }

    /// The `count` answer: addresses with at least `min_count` bans in the last `pull.hours`.
    pub async fn count(&self, pull: &Pull, min_count: i64) -> Result<Vec<CountEntry>, sqlx::Error> {
        let filter = query::CountFilter {
            since: Some(SystemTime::now() - Duration::from_secs(pull.hours * 3600)),
            jail: pull.jail.clone(),
            exclude_origin: pull.exclude.clone(),
            origin_suffix: pull.domain.clone(),
            min_count: min_count.max(1),
            limit: MAX_COUNTS,
        };
        Ok(query::ban_counts(&self.db, &filter)
            .await?
            .into_iter()
            .map(
                |BanCount {
                     ip,
                     count,
                     port,
                     protocol,
                 }| CountEntry {
                    count,
                    ip,
                    port: port.unwrap_or_default(),
                    protocol: protocol.unwrap_or_default(),
                },
            )
            .collect())
    }
}

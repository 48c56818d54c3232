//! `GET /api/v1/time/…` and `/count/…`: what an old host's cron pulls, from the archive.
//!
//! `time` lists the bans of the last hours from one in-memory copy of the archive's recent
//! bans (of the widest window asked for lately), read again once it is a second old: the
//! hosts' pulls (every minute, most of them at the same second) cost one query between them,
//! and each answer is the copy filtered for the asking host. `count` asks the archive, one
//! request at a time. Neither lists an address no firewall should drop or the site never bans
//! ([`crate::blocklist::never_listed`]).

use crate::blocklist::never_listed;
use crate::db::Db;
use crate::query::{self, BanCount, RecentBan};
use ipnet::IpNet;
use serde::Serialize;
use std::sync::Arc;
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};
use tokio::sync::{Mutex, Semaphore};

/// How old the copy of the recent bans may be.
const FRESH_FOR: Duration = Duration::from_secs(1);
/// The longest window a `time` pull may ask for: a week (the original's cron asks for 1 hour).
pub const MAX_TIME_HOURS: u64 = 24 * 7;
/// The longest window of a `count` (`?time=`): a year.
pub const MAX_COUNT_HOURS: u64 = 24 * 366;
/// Entries in one answer at most.
const MAX_ENTRIES: usize = 500_000;
/// How long a wider window asked for once keeps the copy that wide.
const WIDE_FOR: Duration = Duration::from_secs(600);

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

/// The copy of the recent bans.
struct Copy {
    read_at: Instant,
    /// The window it holds.
    hours: u64,
    bans: Arc<Vec<RecentBan>>,
}

/// The widest window asked for lately.
struct Widest {
    hours: u64,
    asked_at: Instant,
}

/// The copy of the recent bans, and the archive behind it.
pub struct Recent {
    db: Db,
    never: Vec<IpNet>,
    copy: Mutex<Option<Copy>>,
    widest: std::sync::Mutex<Widest>,
    /// One `count` at a time: each reads the archive.
    counting: Semaphore,
}

impl Recent {
    /// `never`: the nets no answer lists ([`crate::blocklist::never_nets`]).
    pub fn new(db: Db, never: Vec<IpNet>) -> Recent {
        Recent {
            db,
            never,
            copy: Mutex::new(None),
            widest: std::sync::Mutex::new(Widest {
                hours: 1,
                asked_at: Instant::now(),
            }),
            counting: Semaphore::new(1),
        }
    }

    /// The window the copy holds for a pull of `hours`: the widest asked for in the last
    /// [`WIDE_FOR`], so that pulls of different windows share one copy.
    fn window(&self, hours: u64) -> u64 {
        let mut widest = self.widest.lock().expect("not poisoned");
        if hours >= widest.hours || widest.asked_at.elapsed() > WIDE_FOR {
            *widest = Widest {
                hours,
                asked_at: Instant::now(),
            };
        }
        widest.hours.max(hours)
    }

    /// The bans of at least the last `hours` hours, from a copy at most [`FRESH_FOR`] old.
    async fn bans(&self, hours: u64) -> Result<Arc<Vec<RecentBan>>, sqlx::Error> {
        let window = self.window(hours);
        // One reader at a time: the pulls arriving meanwhile take what it read.
        let mut copy = self.copy.lock().await;
        if let Some(c) = copy.as_ref()
            && c.read_at.elapsed() < FRESH_FOR
            && c.hours >= hours
        {
            return Ok(c.bans.clone());
        }
        let read_at = Instant::now();
        let since = SystemTime::now() - Duration::from_secs(window * 3600);
        let mut bans = query::recent_bans(&self.db, since).await?;
        bans.retain(|b| b.ip.parse().is_ok_and(|ip| !never_listed(ip, &self.never)));
        let bans = Arc::new(bans);
        *copy = Some(Copy {
            read_at,
            hours: window,
            bans: bans.clone(),
        });
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
        let _one = self.counting.acquire().await.expect("never closed");
        let filter = query::CountFilter {
            since: Some(SystemTime::now() - Duration::from_secs(pull.hours * 3600)),
            jail: pull.jail.clone(),
            exclude_origin: pull.exclude.clone(),
            origin_suffix: pull.domain.clone(),
            min_count: min_count.max(1),
            limit: MAX_ENTRIES as i64,
        };
        Ok(query::ban_counts(&self.db, &filter)
            .await?
            .into_iter()
            .filter(|c| c.ip.parse().is_ok_and(|ip| !never_listed(ip, &self.never)))
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

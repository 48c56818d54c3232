//! The bridge (`[archiver.legacy]`): keeps the original's table `f2b` and the stream in step
//! while a site moves, every `poll`.
//!
//! - **In**: rows the old hosts wrote (directly, or through the original's API) become events
//!   of those hosts, published with each host's own NATS login and key (the hosts of
//!   `[[archiver.legacy_api.hosts]]`, matched by the row's `hostname`). A row of any other
//!   hostname is skipped (and said once).
//! - **Out**: bans of the other hosts, once the archive holds them, are written into the table,
//!   so the old hosts' cron pulls (by MySQL or by the original API) receive them: a new host's
//!   under `shared-f2b:<host id>` (a `hostname` no old host has, and never read back), an old
//!   host's API ban under its own `hostname`, which its pull leaves out. Not what a subscriber
//!   would refuse to apply: a ban over on arrival, pardoned or allowed, of an address never
//!   banned here. `created` is the ban's time in the database's own zone (`FROM_UNIXTIME`, as
//!   its `NOW()`), or half an hour ago for a ban that reaches the table later than that, so the
//!   old hosts' one-hour pulls still take it.
//!
//! Every row it read or wrote is noted in the archive (`f2b_legacy_rows`): a row it wrote is
//! never read back as an old host's ban, and an event it published from a row is never written
//! back. Nothing is written twice after a restart: before a write, the table is asked for the
//! same ban written since it was made (a write whose note a crash lost is found there); a row
//! whose event the archive holds already (a publish whose note a crash lost) is noted, not
//! published again. On its first start it begins at the table's and the stream's ends: history
//! is `import-legacy`'s. The two directions run one after the other each round, each on its
//! own: one failing does not hold up the other.

use super::api::clients::Clients;
use super::api::clients::NotStored;
use super::hosts::HostMap;
use super::import;
use super::row::{Converter, LegacyRow};
use crate::blocklist::never_listed;
use crate::db::{Backend, Db};
use crate::query;
use crate::store::{self, ms};
use async_nats::jetstream::stream::Stream;
use ipnet::IpNet;
use shared_f2b::config::LegacyConfig;
use shared_f2b::event::Event;
use shared_f2b::publish::SendError;
use sqlx::mysql::MySqlPool;
use sqlx::{Any, QueryBuilder, Row};
use std::collections::HashSet;
use std::sync::Arc;
use std::time::{Duration, SystemTime};
use tokio_util::sync::CancellationToken;

/// The `hostname` prefix of the rows written for new hosts.
pub const WRITTEN_PREFIX: &str = "shared-f2b:";
/// How far back a ban that reaches the table late is dated, so a one-hour pull takes it.
const LATE_AS: Duration = Duration::from_secs(1800);
/// Rows read, or events written, per round and direction at most.
const ROUND_ROWS: i64 = 1000;
/// How far behind its cursor the bridge reads the table again: a row whose INSERT committed
/// after a later one's (auto-increment ids are handed out before the commit) is not missed.
const LOOKBACK: i64 = 200;
const IN: &str = "in";
const OUT: &str = "out";
const SKIP: &str = "skip";

/// Why the bridge could not start or go on.
#[derive(Debug, thiserror::Error)]
pub enum BridgeError {
    #[error("archiver.legacy: {0}")]
    Source(#[from] import::ImportError),
    #[error("archiver.legacy: cannot read or write the old table: {0}")]
    Old(sqlx::Error),
    #[error("archiver.legacy: cannot read or write the archive: {0}")]
    Archive(sqlx::Error),
    #[error("archiver.legacy: cannot read the archiver's consumer: {0}")]
    Consumer(#[from] crate::consumer::ConsumerError),
    #[error("archiver.legacy: row {row} not published yet: {why}")]
    Publish { row: i64, why: String },
}

/// The bridge's parts.
pub struct Bridge {
    old: MySqlPool,
    db: Db,
    clients: Arc<Clients>,
    converter: Converter,
    stream: Stream,
    consumer: String,
    /// Nets no row written may ban ([`crate::blocklist::never_nets`]).
    never: Vec<IpNet>,
    /// Hostnames of rows skipped already said in the log.
    said: std::sync::Mutex<HashSet<String>>,
}

impl Bridge {
    /// The bridge over a pool to the old database that connects when first used.
    pub fn new(
        config: &LegacyConfig,
        db: Db,
        clients: Arc<Clients>,
        stream: Stream,
        consumer: String,
        never: Vec<IpNet>,
    ) -> Result<Bridge, BridgeError> {
        let url = config.database_url.expose();
        let shown = import::redact(url);
        let old = import::connect_lazy(url, &shown)?;
        let (zone, name) = import::zone(config.timezone.as_deref())?;
        tracing::info!(old = %shown, zone = %name, "bridge to the original's table");
        Ok(Bridge {
            old,
            db,
            clients,
            converter: Converter {
                hosts: HostMap::default(),
                zone,
            },
            stream,
            consumer,
            never,
            said: Default::default(),
        })
    }

    /// Runs a round every `poll` until `shutdown`. A round that fails is logged and the next
    /// one tries again.
    pub async fn run(self, poll: Duration, shutdown: CancellationToken) -> std::io::Result<()> {
        loop {
            if let Err(e) = self.round().await {
                tracing::warn!(error = %e, "bridge round failed; trying again");
            }
            tokio::select! {
                () = shutdown.cancelled() => return Ok(()),
                () = tokio::time::sleep(poll) => {}
            }
        }
    }

    /// One round: in, then out, each on its own.
    pub async fn round(&self) -> Result<(), BridgeError> {
        let brought = self.bring_in().await;
        let sent = self.send_out().await;
        if let Err(e) = &brought {
            tracing::warn!(error = %e, "bridge: old hosts' rows not brought in this round");
        }
        brought.and(sent)
    }

    /// Rows of old hosts → their events.
    async fn bring_in(&self) -> Result<(), BridgeError> {
        let Some(after) = self.cursor(IN).await? else {
            let end: Option<i64> = sqlx::query_scalar("SELECT CAST(MAX(id) AS SIGNED) FROM f2b")
                .fetch_one(&self.old)
                .await
                .map_err(BridgeError::Old)?;
            tracing::info!(
                row = end.unwrap_or(0),
                "bridge: reading the old table from its end"
            );
            return self.set_cursor(IN, end.unwrap_or(0)).await;
        };
        let rows = import::page(&self.old, after - LOOKBACK, ROUND_ROWS)
            .await
            .map_err(BridgeError::Old)?;
        let known = self
            .noted(&rows.iter().map(|r| r.id).collect::<Vec<_>>())
            .await?;
        // Past every row read, the bridge's own included.
        let furthest = rows.last().map_or(after, |r| r.id.max(after));
        for row in rows.iter().filter(|r| !known.contains(&r.id)) {
            let Some((event, client)) = self.event_of(row) else {
                self.note(row.id, None, SKIP).await?;
                continue;
            };
            // Published before a crash took the note: noted now, not published again.
            if !store::archived_ids(&self.db, &[event.id])
                .await
                .map_err(BridgeError::Archive)?
                .is_empty()
            {
                self.note(row.id, Some(&event), IN).await?;
                continue;
            }
            // An old host's API ban the bridge wrote itself, its note lost to a crash.
            if self.archived(&event).await? {
                self.note(row.id, None, SKIP).await?;
                continue;
            }
            match client.publish(event).await {
                Ok(event) => {
                    tracing::info!(row = row.id, host = %event.origin, ip = %event.ip,
                        jail = %event.jail, "bridge: an old host's row published");
                    self.note(row.id, Some(&event), IN).await?;
                }
                // Refused for good (the host's login may not publish it): said and passed.
                Err(NotStored(SendError::Refused(why))) => {
                    tracing::warn!(row = row.id, host = %client.host_id, %why,
                        "bridge: an old host's row refused by NATS; skipped");
                    self.note(row.id, None, SKIP).await?;
                }
                // NATS away: this row and the rest wait for the next round.
                Err(e) => {
                    return Err(BridgeError::Publish {
                        row: row.id,
                        why: e.to_string(),
                    });
                }
            }
        }
        self.set_cursor(IN, furthest).await
    }

    /// The event of an old host's row, and the host; `None` (said once per hostname) for a
    /// row of no old host, or one that is not a ban.
    fn event_of(&self, row: &LegacyRow) -> Option<(Event, &super::api::clients::Client)> {
        let hostname = row.hostname.as_deref().unwrap_or("");
        if hostname.starts_with(WRITTEN_PREFIX) {
            // A new host's ban the bridge wrote (its note lost to a crash): never read back.
            return None;
        }
        let Some(client) = self.clients.by_hostname(hostname) else {
            self.say_once(
                hostname,
                "not an old host's ([[archiver.legacy_api.hosts]] hostname)",
            );
            return None;
        };
        match self.converter.convert(row) {
            Ok(mut converted) => {
                converted.event.origin = client.host_id.clone();
                Some((converted.event, client))
            }
            Err(why) => {
                tracing::warn!(row = row.id, reason = why.name(), "bridge: a row refused");
                None
            }
        }
    }

    /// Whether the archive holds this ban already, made in the same second: a ban of the old
    /// host the bridge wrote into the table itself (it came through the API) and whose note a
    /// crash lost, which must not come back as a second ban.
    async fn archived(&self, e: &Event) -> Result<bool, BridgeError> {
        let second = ms(e.time).div_euclid(1000) * 1000;
        query::has_ban(&self.db, &e.origin, e.ip, &e.jail, second, second + 1000)
            .await
            .map_err(BridgeError::Archive)
    }

    fn say_once(&self, hostname: &str, why: &str) {
        let mut said = self.said.lock().expect("not poisoned");
        if said.insert(hostname.to_owned()) {
            tracing::info!(hostname, "bridge: rows of this hostname skipped: {why}");
        }
    }

    /// Bans the archive holds (up to the consumer's ack floor) → rows of the table.
    async fn send_out(&self) -> Result<(), BridgeError> {
        let committed = crate::consumer::committed(&self.stream, &self.consumer).await? as i64;
        let Some(after) = self.cursor(OUT).await? else {
            tracing::info!(
                seq = committed,
                "bridge: writing the stream's bans from here on"
            );
            return self.set_cursor(OUT, committed).await;
        };
        if committed < after {
            tracing::warn!(
                committed,
                after,
                "bridge: the stream is behind where the bridge was (re-created?); waiting for it"
            );
            return Ok(());
        }
        let events = query::bans_after_seq(
            &self.db,
            after as u64,
            committed as u64,
            SystemTime::now(),
            ROUND_ROWS,
        )
        .await
        .map_err(BridgeError::Archive)?;
        // Past every event read, those passed over included.
        let furthest = events.last().map_or(after, |s| (s.seq as i64).max(after));
        for stored in &events {
            let e = &stored.event;
            if e.site.is_some()
                || never_listed(e.ip, &self.never)
                || e.expired_at(SystemTime::now())
                || self.came_in(e).await?
            {
                continue;
            }
            self.write_out(e).await?;
        }
        self.set_cursor(OUT, furthest).await
    }

    /// Writes the row of ban `e`, unless the table has it already; notes it.
    async fn write_out(&self, e: &Event) -> Result<(), BridgeError> {
        // An old host's API ban goes in under its own hostname: its pull leaves it out.
        let hostname = self.clients.by_host_id(&e.origin).map_or_else(
            || format!("{WRITTEN_PREFIX}{}", e.origin),
            |c| c.hostname.clone(),
        );
        let made = ms(e.time).div_euclid(1000);
        let late = ms(SystemTime::now() - LATE_AS).div_euclid(1000);
        let id = match self.same_row(&hostname, e, made - 1).await? {
            Some(id) => id,
            None => {
                let written = sqlx::query(
                    "INSERT INTO f2b (hostname, created, jail, protocol, port, ip, bantime) \
                     VALUES (?, FROM_UNIXTIME(?), ?, ?, ?, ?, ?)",
                )
                .bind(&hostname)
                .bind(made.max(late))
                .bind(&e.jail)
                .bind(e.protocol.as_deref())
                .bind(e.port.as_deref())
                .bind(e.ip.to_string())
                .bind(e.bantime.to_string())
                .execute(&self.old)
                .await;
                match written {
                    Ok(done) => done.last_insert_id() as i64,
                    // The table refuses this row (a name its columns cannot hold): said, passed.
                    Err(sqlx::Error::Database(why)) => {
                        tracing::warn!(id = %e.id, origin = %e.origin, error = %why,
                            "bridge: a ban the old table refuses; skipped");
                        return Ok(());
                    }
                    Err(other) => return Err(BridgeError::Old(other)),
                }
            }
        };
        self.note(id, Some(e), OUT).await
    }

    /// The id of a row of the table that is this ban already, written since `since` (Unix
    /// seconds): a write whose note was lost, or the old host's own row of it.
    async fn same_row(
        &self,
        hostname: &str,
        e: &Event,
        since: i64,
    ) -> Result<Option<i64>, BridgeError> {
        sqlx::query_scalar(
            "SELECT CAST(id AS SIGNED) FROM f2b WHERE hostname = ? AND ip = ? AND jail = ? \
             AND created >= FROM_UNIXTIME(?) LIMIT 1",
        )
        .bind(hostname)
        .bind(e.ip.to_string())
        .bind(&e.jail)
        .bind(since)
        .fetch_optional(&self.old)
        .await
        .map_err(BridgeError::Old)
    }

    /// Whether `e` is an event the bridge published from a row.
    async fn came_in(&self, e: &Event) -> Result<bool, BridgeError> {
        let n: i64 = sqlx::query_scalar(
            "SELECT COUNT(*) FROM f2b_legacy_rows WHERE event_id = ? AND direction = ?",
        )
        .bind(e.id.as_bytes().to_vec())
        .bind(IN)
        .fetch_one(&self.db.pool)
        .await
        .map_err(BridgeError::Archive)?;
        Ok(n > 0)
    }

    /// Which of the rows `ids` the bridge read or wrote already.
    async fn noted(&self, ids: &[i64]) -> Result<HashSet<i64>, BridgeError> {
        if ids.is_empty() {
            return Ok(HashSet::new());
        }
        let mut q: QueryBuilder<Any> =
            QueryBuilder::new("SELECT legacy_id FROM f2b_legacy_rows WHERE legacy_id IN (");
        let mut list = q.separated(", ");
        for id in ids {
            list.push_bind(*id);
        }
        q.push(")");
        let rows = q
            .build()
            .fetch_all(&self.db.pool)
            .await
            .map_err(BridgeError::Archive)?;
        rows.iter()
            .map(|r| r.try_get::<i64, _>("legacy_id"))
            .collect::<Result<_, _>>()
            .map_err(BridgeError::Archive)
    }

    async fn note(&self, id: i64, e: Option<&Event>, direction: &str) -> Result<(), BridgeError> {
        let sql = match self.db.backend {
            Backend::MySql => {
                "INSERT INTO f2b_legacy_rows (legacy_id, event_id, direction, done_ms) \
                 VALUES (?, ?, ?, ?) ON DUPLICATE KEY UPDATE legacy_id = legacy_id"
            }
            Backend::Sqlite => {
                "INSERT INTO f2b_legacy_rows (legacy_id, event_id, direction, done_ms) \
                 VALUES (?, ?, ?, ?) ON CONFLICT (legacy_id) DO NOTHING"
            }
        };
        sqlx::query(sql)
            .bind(id)
            .bind(e.map(|e| e.id.as_bytes().to_vec()))
            .bind(direction)
            .bind(ms(SystemTime::now()))
            .execute(&self.db.pool)
            .await
            .map_err(BridgeError::Archive)?;
        Ok(())
    }

    async fn cursor(&self, name: &str) -> Result<Option<i64>, BridgeError> {
        sqlx::query_scalar("SELECT value FROM f2b_legacy_cursors WHERE name = ?")
            .bind(name)
            .fetch_optional(&self.db.pool)
            .await
            .map_err(BridgeError::Archive)
    }

    async fn set_cursor(&self, name: &str, value: i64) -> Result<(), BridgeError> {
        let sql = match self.db.backend {
            Backend::MySql => {
                "INSERT INTO f2b_legacy_cursors (name, value) VALUES (?, ?) \
                 ON DUPLICATE KEY UPDATE value = VALUES(value)"
            }
            Backend::Sqlite => {
                "INSERT INTO f2b_legacy_cursors (name, value) VALUES (?, ?) \
                 ON CONFLICT (name) DO UPDATE SET value = excluded.value"
            }
        };
        sqlx::query(sql)
            .bind(name)
            .bind(value)
            .execute(&self.db.pool)
            .await
            .map_err(BridgeError::Archive)?;
        Ok(())
    }
}

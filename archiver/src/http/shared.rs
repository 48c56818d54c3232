//! What the feeds and the site page both read: the archive's database, the stream's committed
//! mark, the blocklist snapshot brought up to it, and whether the database and NATS answer.
//!
//! The mark is the archiver consumer's ack floor (every row below it is committed), asked of
//! NATS at most every [`FLOOR_EVERY`]. After the database or NATS failed to answer, requests do
//! without them for [`RETRY_AFTER`] (503 at once, or what the database holds) rather than each
//! wait for them again.

use super::error::HttpError;
use crate::blocklist::{self, Snapshot};
use crate::db::Db;
use crate::metrics::Metrics;
use async_nats::jetstream::stream::Stream;
use ipnet::IpNet;
use shared_f2b::health::Check;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};
use tokio::sync::{MappedMutexGuard, MutexGuard};

/// How often the committed stream sequence is asked of NATS (a new ban shows in the feeds
/// this much later at most).
const FLOOR_EVERY: Duration = Duration::from_millis(100);
/// After the database or NATS failed to answer, how long requests do without them.
const RETRY_AFTER: Duration = Duration::from_secs(5);
/// How long a request waits for the database or NATS to answer a probe or a question.
const WAIT_FOR_ANSWER: Duration = Duration::from_secs(1);

/// What the daemon's health checks say of the database and NATS.
#[derive(Clone)]
pub struct Parts {
    pub database: Check,
    pub nats: Arc<AtomicBool>,
}

/// When a part last failed to answer, if it did lately.
#[derive(Default)]
struct Failed(Mutex<Option<Instant>>);

impl Failed {
    /// Whether it failed less than [`RETRY_AFTER`] ago.
    fn recently(&self) -> bool {
        self.0
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .is_some_and(|at| at.elapsed() < RETRY_AFTER)
    }

    /// Records a failure now, or clears it.
    fn set(&self, failed: bool) {
        *self.0.lock().unwrap_or_else(|e| e.into_inner()) = failed.then(Instant::now);
    }
}

/// The archive as the HTTP side reads it.
pub struct Shared {
    pub db: Db,
    pub metrics: Metrics,
    pub parts: Parts,
    /// What is never listed ([`blocklist::never_nets`]).
    never: Vec<IpNet>,
    /// `feed_max_bantime`.
    max_bantime: Duration,
    stream: Stream,
    /// The archiver consumer, whose ack floor marks what is committed.
    consumer: String,
    /// When that floor was last asked for, and what it was.
    floor: tokio::sync::Mutex<Option<(Instant, u64)>>,
    snapshot: tokio::sync::Mutex<Option<Snapshot>>,
    db_failed: Failed,
    nats_failed: Failed,
}

impl Shared {
    /// Reads `db`, with the committed mark of `consumer` on `stream`; lists never what
    /// `never` covers, and a host's ban at most `max_bantime`.
    pub fn new(
        db: Db,
        stream: Stream,
        consumer: String,
        never: Vec<IpNet>,
        max_bantime: Duration,
        parts: Parts,
        metrics: Metrics,
    ) -> Shared {
        Shared {
            db,
            metrics,
            parts,
            never,
            max_bantime,
            stream,
            consumer,
            floor: tokio::sync::Mutex::new(None),
            snapshot: tokio::sync::Mutex::new(None),
            db_failed: Failed::default(),
            nats_failed: Failed::default(),
        }
    }

    /// Whether NATS is connected, as the daemon's health check says.
    pub fn nats_up(&self) -> bool {
        self.parts.nats.load(Ordering::Relaxed)
    }

    /// The stream sequence the archive is committed up to (the archiver consumer's ack floor),
    /// asked of NATS at most every [`FLOOR_EVERY`]; while NATS cannot answer, what the
    /// database holds.
    pub async fn committed(&self) -> Result<u64, HttpError> {
        let mut floor = self.floor.lock().await;
        if let Some((at, seq)) = *floor
            && at.elapsed() < FLOOR_EVERY
        {
            return Ok(seq);
        }
        let nats_up = self.nats_up();
        let asked = match nats_up && !self.nats_failed.recently() {
            true => {
                let asked = crate::consumer::committed(&self.stream, &self.consumer);
                match tokio::time::timeout(WAIT_FOR_ANSWER, asked).await {
                    Ok(Ok(seq)) => Some(seq),
                    Ok(Err(e)) => {
                        tracing::warn!(error = %e, "feeds: using what the database holds");
                        self.nats_failed.set(true);
                        None
                    }
                    Err(_) => {
                        tracing::warn!(
                            "feeds: NATS gave no answer within 1 s; using what the database holds"
                        );
                        self.nats_failed.set(true);
                        None
                    }
                }
            }
            // Not asked again while it failed lately: the window is not extended by asking.
            false => None,
        };
        let seq = match asked {
            Some(seq) => seq,
            None => {
                if !self.database_answers().await {
                    return Err(HttpError::NotYet);
                }
                blocklist::archived_seq(&self.db)
                    .await
                    .inspect_err(|_| self.db_failed.set(true))?
            }
        };
        *floor = Some((Instant::now(), seq));
        Ok(seq)
    }

    /// Whether the database answers now: not when it did not a moment ago ([`RETRY_AFTER`])
    /// or its health probe says it is away, else as it answers a probe within 1 s. A request
    /// asks before it reads, so that while the database is away none waits for the pool's
    /// timeout.
    pub async fn database_answers(&self) -> bool {
        if self.db_failed.recently() || !self.parts.database.get() {
            return false;
        }
        let answered = matches!(
            tokio::time::timeout(WAIT_FOR_ANSWER, self.db.ping()).await,
            Ok(Ok(()))
        );
        self.db_failed.set(!answered);
        answered
    }

    /// The snapshot brought up to what the archive committed (loaded afresh when it is too
    /// old or too far behind), held until the guard is dropped.
    pub async fn snapshot(&self) -> Result<MappedMutexGuard<'_, Snapshot>, HttpError> {
        // Asked before queueing for the snapshot, so a slow NATS holds up no other request.
        let upto = self.committed().await?;
        let mut guard = self.snapshot.lock().await;
        if guard.as_ref().is_some_and(|s| s.holds(upto)) {
            return Ok(MutexGuard::map(guard, |s| s.as_mut().expect("checked")));
        }
        if !self.database_answers().await {
            return Err(HttpError::NotYet);
        }
        let current = match guard.as_mut() {
            Some(snapshot) => snapshot
                .refresh(&self.db, upto)
                .await
                .inspect_err(|_| self.db_failed.set(true))?,
            None => false,
        };
        if !current {
            let started = Instant::now();
            let loaded = Snapshot::load(&self.db, &self.never, self.max_bantime, upto)
                .await
                .inspect_err(|_| self.db_failed.set(true))?;
            *guard = Some(loaded);
            tracing::info!(took = ?started.elapsed(), "blocklist loaded from the archive");
        }
        Ok(MutexGuard::map(guard, |s| {
            s.as_mut().expect("loaded above")
        }))
    }

    /// As [`Shared::snapshot`]; while the archive cannot be read, the snapshot as it was last
    /// brought forward (when there is one), so the site page can still show it and say why.
    pub async fn snapshot_or_last(&self) -> Result<MappedMutexGuard<'_, Snapshot>, HttpError> {
        match self.snapshot().await {
            Ok(snapshot) => Ok(snapshot),
            Err(e) => {
                let guard = self.snapshot.lock().await;
                MutexGuard::try_map(guard, |s| s.as_mut()).map_err(|_| e)
            }
        }
    }
}

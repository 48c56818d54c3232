//! A stream that went back, sealed. A power cut of a NATS host that had not synced its tail
//! (2.9 syncs every two minutes; 2.10+ with `sync_interval: always` syncs each write) loses what
//! the stream stored since, and the server numbers new messages from there again: sequences that
//! the archive and the hosts already used would then name other events, an unban would sort
//! before the ban it lifts, and a host would skip new events as ones it had.
//!
//! The archivers notice it (the stream's last sequence below the highest they saw, the stream
//! mark; or a message at a sequence where the archive holds another event) before they archive
//! anything the stream numbered again, and seal the stream: purge it up to [`SEAL_GAP`] past
//! anything seen, so its numbering goes on above every sequence a host can hold. Hosts then see
//! a gap and catch up from the archive, which holds what the stream lost and the archive had;
//! what the stream took after the cut and the seal removed, the publishers send again (their
//! end-to-end acknowledgement, `core/src/confirm.rs`).

use crate::db::Db;
use crate::metrics::Metrics;
use crate::{query, store};
use async_nats::jetstream::stream::Stream;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;
use tokio_util::sync::CancellationToken;

/// How far past the highest sequence seen a seal puts the stream's numbering: more than a host
/// can have seen beyond it (a cut loses at most what the stream took since its last sync, two
/// minutes on 2.9).
pub const SEAL_GAP: u64 = 10_000_000;
/// How often the stream's last sequence is compared with the mark.
const CHECK_EVERY: Duration = Duration::from_secs(2);

/// What failed while checking or sealing the stream.
#[derive(Debug, thiserror::Error)]
pub enum RewindError {
    #[error("cannot read the stream's state: {0}")]
    Stream(async_nats::Error),
    #[error("cannot purge the stream to seal it: {0}")]
    Purge(async_nats::Error),
    #[error("cannot read or raise the stream mark: {0}")]
    Database(#[from] sqlx::Error),
}

/// A delivered message as the check sees it.
#[derive(Debug, Clone, Copy)]
pub struct Delivered {
    pub seq: u64,
    /// The event's or control event's id (`None`: neither).
    pub id: Option<uuid::Uuid>,
    /// The stream's last sequence at delivery (its sequence plus what was pending after it),
    /// for a first delivery; `None` for a redelivery, whose pending count says nothing of it.
    pub stream_last: Option<u64>,
}

/// What a batch may do.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Verdict {
    /// Archive it.
    Archive,
    /// The stream went back under it and is sealed now: drop it (the seal removed it).
    Sealed,
}

/// The archiver's watch over the stream's numbering, shared by its ingest writers.
#[derive(Clone)]
pub struct Rewind(Arc<Inner>);

struct Inner {
    db: Db,
    stream: Stream,
    metrics: Metrics,
    /// The highest last sequence of the stream seen (also in `f2b_stream_mark`).
    mark: AtomicU64,
    /// The mark at start and the stream's last sequence at each first delivery since, in
    /// delivery order: what a delivery is compared with (a watch's later reading is not, as a
    /// batch may wait in hand after it).
    delivered: AtomicU64,
    /// The highest sequence archived.
    archived: AtomicU64,
    sealing: tokio::sync::Mutex<()>,
}

impl Rewind {
    /// Reads the mark and the highest archived sequence.
    pub async fn load(db: Db, stream: Stream, metrics: Metrics) -> Result<Rewind, RewindError> {
        let mark = query::stream_mark(&db).await?;
        let archived = archived_high(&db).await?;
        Ok(Rewind(Arc::new(Inner {
            db,
            stream,
            metrics,
            mark: AtomicU64::new(mark),
            delivered: AtomicU64::new(mark),
            archived: AtomicU64::new(archived),
            sealing: tokio::sync::Mutex::new(()),
        })))
    }

    /// The stream's last sequence a batch shows (its first deliveries'), at least the mark.
    pub fn stream_last(&self, batch: &[Delivered]) -> u64 {
        let seen = batch
            .iter()
            .filter_map(|d| d.stream_last)
            .max()
            .unwrap_or(0);
        seen.max(self.0.mark.load(Ordering::SeqCst))
    }

    /// Before a batch is archived, batches in delivery order: whether the stream went back
    /// under it (then sealed).
    pub async fn check(&self, batch: &[Delivered]) -> Result<Verdict, RewindError> {
        let delivered = self.0.delivered.load(Ordering::SeqCst);
        let lasts = batch.iter().filter_map(|d| d.stream_last);
        if let Some(last) = lasts.clone().min()
            && last < delivered
        {
            self.seal(last).await?;
            return Ok(Verdict::Sealed);
        }
        if let Some(last) = lasts.max() {
            self.0.delivered.fetch_max(last, Ordering::SeqCst);
        }
        let archived = self.0.archived.load(Ordering::SeqCst);
        let low: Vec<&Delivered> = batch
            .iter()
            .filter(|d| d.seq <= archived && d.id.is_some())
            .collect();
        if low.is_empty() {
            return Ok(Verdict::Archive);
        }
        // A redelivery, or the stream numbered other events again where the archive has some.
        let seqs: Vec<u64> = low.iter().map(|d| d.seq).collect();
        let held = query::ids_at(&self.0.db, &seqs).await?;
        let renumbered = low
            .iter()
            .find(|d| held.get(&d.seq).is_some_and(|id| Some(*id) != d.id));
        match renumbered {
            Some(d) => {
                tracing::warn!(
                    seq = d.seq,
                    "the stream delivered another event at a sequence \
                    the archive holds"
                );
                self.seal(d.seq.saturating_sub(1)).await?;
                Ok(Verdict::Sealed)
            }
            None => Ok(Verdict::Archive),
        }
    }

    /// After a batch committed: its sequences are archived and the mark (raised in its
    /// transaction) is `stream_last`.
    pub fn committed(&self, batch: &[Delivered], stream_last: u64) {
        if let Some(high) = batch.iter().map(|d| d.seq).max() {
            self.0.archived.fetch_max(high, Ordering::SeqCst);
        }
        self.0.mark.fetch_max(stream_last, Ordering::SeqCst);
    }

    /// Compares the stream's last sequence with the mark every [`CHECK_EVERY`] (so a stream
    /// that went back is sealed before new events come, whenever it can be), raising the mark
    /// as the stream grows.
    pub async fn watch(self, shutdown: CancellationToken) {
        loop {
            if let Err(e) = self.watch_once().await {
                tracing::debug!(error = %e, "cannot compare the stream with its mark now");
            }
            tokio::select! {
                _ = shutdown.cancelled() => return,
                _ = tokio::time::sleep(CHECK_EVERY) => {}
            }
        }
    }

    async fn watch_once(&self) -> Result<(), RewindError> {
        let last = self.last().await?;
        let mark = self.0.mark.load(Ordering::SeqCst);
        if last < mark {
            return self.seal(last).await;
        }
        if last > mark {
            store::raise_stream_mark(&self.0.db, last).await?;
            self.0.mark.fetch_max(last, Ordering::SeqCst);
        }
        Ok(())
    }

    async fn last(&self) -> Result<u64, RewindError> {
        Ok(self.state().await?.last_sequence)
    }

    async fn state(&self) -> Result<async_nats::jetstream::stream::State, RewindError> {
        Ok(self
            .0
            .stream
            .get_info()
            .await
            .map_err(|e| RewindError::Stream(e.into()))?
            .state)
    }

    /// Seals the stream, which went back to `seen` (or below): purges it so that its numbering
    /// goes on [`SEAL_GAP`] past every sequence known here or in the database (another
    /// archiver's). Nothing to do when it was sealed meanwhile.
    async fn seal(&self, seen: u64) -> Result<(), RewindError> {
        let _one = self.0.sealing.lock().await;
        let db = &self.0.db;
        let mark = query::stream_mark(db)
            .await?
            .max(self.0.mark.load(Ordering::SeqCst));
        let archived = archived_high(db)
            .await?
            .max(self.0.archived.load(Ordering::SeqCst));
        let known = mark.max(archived);
        let state = self.state().await?;
        if state.first_sequence > known {
            // Sealed already (by another archiver, or a check that raced this one).
            let sealed_at = state.first_sequence - 1;
            self.0.mark.fetch_max(sealed_at, Ordering::SeqCst);
            self.0.delivered.fetch_max(sealed_at, Ordering::SeqCst);
            return Ok(());
        }
        let next = known.max(state.last_sequence) + SEAL_GAP + 1;
        let purged = self
            .0
            .stream
            .purge()
            .sequence(next)
            .await
            .map_err(|e| RewindError::Purge(e.into()))?
            .purged;
        store::raise_stream_mark(db, next - 1).await?;
        self.0.mark.fetch_max(next - 1, Ordering::SeqCst);
        self.0.delivered.fetch_max(next - 1, Ordering::SeqCst);
        self.0.metrics.stream_seals.inc();
        tracing::error!(
            stream_last = state.last_sequence,
            seen,
            highest_known = known,
            numbering_from = next,
            purged,
            "the stream went back (a power cut of the NATS host before it synced?): sealed it, \
             so its numbering goes on past every sequence a host can hold; hosts catch up from \
             the archive and publishers send again what the stream lost"
        );
        Ok(())
    }
}

/// The highest sequence archived (events and control events).
async fn archived_high(db: &Db) -> Result<u64, sqlx::Error> {
    Ok(query::max_seq(db)
        .await?
        .max(query::max_control_seq(db).await?))
}

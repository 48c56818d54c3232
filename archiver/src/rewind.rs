//! A stream that went back, sealed. A power cut of a NATS host that had not synced its tail
//! (2.9 syncs every two minutes; 2.10+ with `sync_interval: always` syncs each write) loses what
//! the stream stored since, and the server numbers new messages from there again: sequences that
//! the archive and the hosts already used would then name other events, an unban would sort
//! before the ban it lifts, and a host would skip new events as ones it had.
//!
//! The archivers keep the stream mark ([`Mark`]: the highest sequence seen and the latest time
//! the server stored a message seen, its own clock). A message at or below the mark's sequence
//! stored after the mark's time was numbered again, and a stream whose last sequence is below
//! the mark's went back. Either way, before anything numbered again is archived, the archiver
//! seals the stream: it archives everything the stream holds — what it kept at its own
//! sequence, what it numbered again after [`SEAL_GAP`] past every sequence known, in order —
//! then purges it up to there, so its numbering goes on above every sequence a host can hold,
//! and records the seal (`f2b_stream_seals`). Hosts see a gap and catch up from the archive;
//! one whose cursor lies between the cut and the new numbering catches up from the cut
//! ([`crate::query::catchup_start`]). What the stream lost, the publishers send again (their
//! end-to-end acknowledgement, `core/src/confirm.rs`).

use crate::db::Db;
use crate::metrics::Metrics;
use crate::store::{self, Mark, ms};
use crate::{ingest, query};
use async_nats::jetstream::stream::Stream;
use futures::StreamExt;
use std::collections::HashMap;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, SystemTime};
use tokio_util::sync::CancellationToken;

/// How far past the highest sequence known a seal puts the stream's numbering: more than a host
/// can have seen beyond it (a cut loses at most what the stream took since its last sync, two
/// minutes on 2.9).
pub const SEAL_GAP: u64 = 10_000_000;
/// How often the stream's state is compared with the mark.
const CHECK_EVERY: Duration = Duration::from_secs(2);
/// Messages read at once while sealing.
const DRAIN_PAGE: usize = 5000;

/// What failed while checking or sealing the stream.
#[derive(Debug, thiserror::Error)]
pub enum RewindError {
    #[error("cannot read the stream: {0}")]
    Stream(async_nats::Error),
    #[error("cannot purge the stream to seal it: {0}")]
    Purge(async_nats::Error),
    #[error("database: {0}")]
    Database(#[from] sqlx::Error),
}

/// A delivered message as the check sees it.
#[derive(Debug, Clone, Copy)]
pub struct Delivered {
    pub seq: u64,
    /// When the server stored it (its clock, ms since the epoch).
    pub stored_ms: i64,
}

impl Delivered {
    /// The sequence and store time of a message from the stream.
    pub fn of(msg: &async_nats::jetstream::Message) -> Option<Delivered> {
        let info = msg.info().ok()?;
        Some(Delivered {
            seq: info.stream_sequence,
            stored_ms: ms(SystemTime::from(info.published)),
        })
    }
}

/// What a batch may do.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Verdict {
    /// Archive what it holds from sequence `from` on (what lies below was in hand before this
    /// archiver's last purge, and archived by that seal), raising the mark to `mark` in its
    /// transaction.
    Archive { from: u64, mark: Mark },
    /// The stream went back under it and is sealed now: it is archived with the rest, drop it.
    Sealed,
}

/// The archiver's watch over the stream's numbering, shared by its ingest and its check task.
#[derive(Clone)]
pub struct Rewind(Arc<Inner>);

struct Inner {
    db: Db,
    stream: Stream,
    prefix: String,
    metrics: Metrics,
    /// The mark as this archiver knows it (the database's at start, then what it saw).
    mark: Mutex<Mark>,
    /// Where this archiver's last seal had the numbering go on: anything delivered below it was
    /// in hand before the purge (and archived by the seal).
    resumed: AtomicU64,
    /// Held by a check and by a seal: nothing is let through while the stream is sealed.
    sealing: tokio::sync::Mutex<()>,
}

impl Rewind {
    /// Reads the mark.
    pub async fn load(
        db: Db,
        stream: Stream,
        prefix: String,
        metrics: Metrics,
    ) -> Result<Rewind, RewindError> {
        let mark = query::stream_mark(&db).await?;
        Ok(Rewind(Arc::new(Inner {
            db,
            stream,
            prefix,
            metrics,
            mark: Mutex::new(mark),
            resumed: AtomicU64::new(0),
            sealing: tokio::sync::Mutex::new(()),
        })))
    }

    fn mark(&self) -> Mark {
        *self.0.mark.lock().expect("mark lock")
    }

    fn raise(&self, to: Mark) -> Mark {
        let mut mark = self.0.mark.lock().expect("mark lock");
        *mark = mark.max(to);
        *mark
    }

    /// Before a batch is archived, batches in delivery order: whether the stream numbered any
    /// of it again (then it is sealed); otherwise the mark is raised by the batch.
    pub async fn check(&self, batch: &[Delivered]) -> Result<Verdict, RewindError> {
        let _one = self.0.sealing.lock().await;
        let mark = self.mark();
        if let Some(d) = batch
            .iter()
            .find(|d| d.seq <= mark.seq && d.stored_ms > mark.ms)
        {
            tracing::warn!(
                seq = d.seq,
                mark = mark.seq,
                "the stream delivered a message at a \
                sequence it had used, stored after every message seen there"
            );
            self.seal_locked().await?;
            return Ok(Verdict::Sealed);
        }
        let seen = batch.iter().fold(Mark::default(), |m, d| {
            m.max(Mark {
                seq: d.seq,
                ms: d.stored_ms,
            })
        });
        Ok(Verdict::Archive {
            from: self.0.resumed.load(Ordering::SeqCst),
            mark: self.raise(seen),
        })
    }

    /// Compares the stream's state with the mark every [`CHECK_EVERY`] (so a stream that went
    /// back is sealed before new messages come, whenever it can be), raising the mark as the
    /// stream grows.
    pub async fn watch(self, shutdown: CancellationToken) {
        loop {
            if let Err(e) = self.watch_once().await {
                tracing::warn!(error = %e, "cannot compare the stream with its mark now");
            }
            tokio::select! {
                _ = shutdown.cancelled() => return,
                _ = tokio::time::sleep(CHECK_EVERY) => {}
            }
        }
    }

    async fn watch_once(&self) -> Result<(), RewindError> {
        let _one = self.0.sealing.lock().await;
        let state = self.state().await?;
        let mark = self.mark();
        if state.last_sequence < mark.seq {
            tracing::warn!(
                stream_last = state.last_sequence,
                mark = mark.seq,
                "the stream's last sequence is below the highest one seen"
            );
            return self.seal_locked().await;
        }
        // It may have gone back and filled up past the mark before this look: the message at
        // the mark's sequence was then stored after the mark's time.
        if mark.seq >= state.first_sequence.max(1)
            && let Ok(there) = self.0.stream.get_raw_message(mark.seq).await
            && ms(SystemTime::from(there.time)) > mark.ms
        {
            tracing::warn!(
                seq = mark.seq,
                "the stream holds a message at the mark's sequence stored after the mark's time"
            );
            return self.seal_locked().await;
        }
        let now = Mark {
            seq: state.last_sequence,
            ms: ms(SystemTime::from(state.last_timestamp)),
        };
        if mark.max(now) != mark {
            store::raise_stream_mark(&self.0.db, now).await?;
            self.raise(now);
        }
        Ok(())
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

    /// Seals the stream (the caller holds `sealing`; across archivers, a database lock):
    /// archives what it holds (what it numbered again after [`SEAL_GAP`] past every sequence
    /// known here or in the database), records the seal, and purges the stream up to there.
    /// Nothing to do when it was sealed meanwhile (by another archiver).
    async fn seal_locked(&self) -> Result<(), RewindError> {
        let db = &self.0.db;
        let _across = SealLock::take(db).await?;
        let mark = self.raise(query::stream_mark(db).await?);
        let known = mark.seq.max(archived_high(db).await?);
        let state = self.state().await?;
        if state.first_sequence > known {
            self.raise(Mark {
                seq: state.first_sequence - 1,
                ms: mark.ms,
            });
            self.0
                .resumed
                .fetch_max(state.first_sequence, Ordering::SeqCst);
            return Ok(());
        }
        // May it purge at all? (Purging below the first sequence removes nothing.) Asked before
        // anything is archived out of place.
        self.purge(state.first_sequence.max(1)).await?;
        let base = known.max(state.last_sequence) + SEAL_GAP + 1;
        let (mut next, mut cut, mut latest) = (base, None, mark.ms);
        let (mut from, mut drained) = (state.first_sequence.max(1), 0u64);
        // Until the stream's end stands still: what comes meanwhile is archived too.
        loop {
            let now = self.state().await?;
            if from > now.last_sequence {
                break;
            }
            let messages = self.read(from, now.last_sequence).await?;
            let Some(end) = messages
                .iter()
                .filter_map(Delivered::of)
                .map(|d| d.seq)
                .max()
            else {
                if now.first_sequence > from {
                    // Gone meanwhile (its age): nothing to archive there.
                    from = now.first_sequence;
                    continue;
                }
                return Err(RewindError::Stream(
                    format!("nothing read from sequence {from} to {}", now.last_sequence).into(),
                ));
            };
            let mut renumbered: HashMap<u64, u64> = HashMap::new();
            for d in messages.iter().filter_map(Delivered::of) {
                latest = latest.max(d.stored_ms);
                if d.stored_ms > mark.ms || cut.is_some() {
                    cut.get_or_insert(d.seq - 1);
                    renumbered.insert(d.seq, next);
                    next += 1;
                }
            }
            let (mut events, mut controls, mut rejects) = ingest::sort(&self.0.prefix, &messages);
            let at = |seq: &mut u64| {
                if let Some(new) = renumbered.get(seq) {
                    *seq = *new;
                }
            };
            events.iter_mut().for_each(|e| at(&mut e.seq));
            controls.iter_mut().for_each(|c| at(&mut c.seq));
            rejects.iter_mut().for_each(|r| at(&mut r.seq));
            store::insert(db, &events, &controls, &rejects).await?;
            drained += messages.len() as u64;
            from = end + 1;
        }
        // Nothing numbered again: no host can have followed sequences the stream reused.
        if let Some(cut) = cut {
            store::record_seal(db, cut, base, next).await?;
        }
        let sealed = Mark {
            seq: next - 1,
            ms: latest,
        };
        store::raise_stream_mark(db, sealed).await?;
        let purged = self.purge(next).await?;
        self.raise(sealed);
        self.0.resumed.fetch_max(next, Ordering::SeqCst);
        self.0.metrics.stream_seals.inc();
        tracing::error!(
            kept_up_to = cut.unwrap_or(from - 1),
            highest_known = known,
            renumbered = next - base,
            numbering_from = next,
            "the stream went back (a power cut of the NATS host before it synced?): sealed it; \
             what it numbered again is archived after every sequence a host can hold, hosts catch \
             up from the archive, and publishers send again what the stream lost"
        );
        if purged > drained {
            tracing::error!(
                lost = purged - drained,
                "messages the stream took while it was sealed were purged before they were \
                 archived: hosts send theirs again, an operator's order given just then must be \
                 given again"
            );
        }
        Ok(())
    }

    /// Purges the stream below `seq`; how many messages went.
    async fn purge(&self, seq: u64) -> Result<u64, RewindError> {
        Ok(self
            .0
            .stream
            .purge()
            .sequence(seq)
            .await
            .map_err(|e| RewindError::Purge(e.into()))?
            .purged)
    }

    /// The stored messages from `from` to `last` (at most [`DRAIN_PAGE`]), through a
    /// short-lived consumer.
    async fn read(
        &self,
        from: u64,
        last: u64,
    ) -> Result<Vec<async_nats::jetstream::Message>, RewindError> {
        let want = ((last - from + 1) as usize).min(DRAIN_PAGE);
        let mut batch = crate::consumer::read_from(&self.0.stream, from, want)
            .await
            .map_err(RewindError::Stream)?;
        let mut out = Vec::with_capacity(want);
        while let Some(msg) = batch.next().await {
            let msg = msg.map_err(RewindError::Stream)?;
            let Ok(info) = msg.info() else { continue };
            let (seq, pending) = (info.stream_sequence, info.pending);
            if seq > last {
                break;
            }
            out.push(msg);
            if pending == 0 || seq == last {
                break;
            }
        }
        Ok(out)
    }
}

/// The highest sequence archived (events and control events).
async fn archived_high(db: &Db) -> Result<u64, sqlx::Error> {
    Ok(query::max_seq(db)
        .await?
        .max(query::max_control_seq(db).await?))
}

/// The database lock that keeps two archivers from sealing at once (MySQL/MariaDB `GET_LOCK`
/// on a connection of its own, released when it closes; SQLite serves one archiver; a Galera
/// cluster's lock holds on one node only, so there run the archivers against one node).
struct SealLock(Option<sqlx::AnyConnection>);

impl SealLock {
    const NAME: &str = "shared_f2b_seal";

    async fn take(db: &Db) -> Result<SealLock, RewindError> {
        if db.backend != crate::db::Backend::MySql {
            return Ok(SealLock(None));
        }
        let mut conn = db.pool.acquire().await?.detach();
        let got: Result<Option<i64>, sqlx::Error> = sqlx::query_scalar("SELECT GET_LOCK(?, 60)")
            .bind(Self::NAME)
            .fetch_one(&mut conn)
            .await;
        match got {
            Ok(Some(1)) => Ok(SealLock(Some(conn))),
            Ok(_) => Err(RewindError::Stream(
                "another archiver is sealing the stream (no lock within 60 s)".into(),
            )),
            // A server without lock functions (Galera may refuse them): one archiver seals
            // unguarded, which is safe when one archiver runs.
            Err(e) => {
                tracing::warn!(error = %e, "no database lock to seal under; sealing without");
                Ok(SealLock(None))
            }
        }
    }
}

impl Drop for SealLock {
    fn drop(&mut self) {
        // Closing the connection releases the lock.
        if let Some(conn) = self.0.take() {
            tokio::spawn(async move {
                let _ = sqlx::Connection::close(conn).await;
            });
        }
    }
}

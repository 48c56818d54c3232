//! From the stream into the database: a durable pull consumer shared by every archiver, batches
//! (events and operators' control events) inserted in one transaction, each message acked only
//! after its batch committed.
//!
//! While the database is down the batch in hand is retried (with "in progress" acks so the
//! server does not hand it to another archiver meanwhile) and the rest waits on the stream.

use crate::db::Db;
use crate::metrics::Metrics;
use crate::rewind::{Delivered, Rewind, Verdict};
use crate::store::{self, Archived, ArchivedControl, Mark, Reject};
use async_nats::jetstream::{AckKind, Message, stream::Stream};
use futures::StreamExt;
use shared_f2b::control::ControlKind;
use shared_f2b::inbound::{Received, decode_any};
use std::time::{Duration, Instant, SystemTime};
use tokio_util::sync::CancellationToken;

/// Messages taken per batch.
const BATCH: usize = 5000;
/// Batches written to the database at once.
const WRITERS: usize = 2;

/// Archives until `shutdown`; batches in hand are committed and acked first.
///
/// Up to [`WRITERS`] batches are written at once while the next ones arrive, so receiving,
/// decoding and the database overlap (each message is still acked only after its own commit).
/// Each batch is first checked, in delivery order, for a stream that went back under it
/// ([`Rewind`]).
pub async fn run(
    db: Db,
    stream: Stream,
    prefix: String,
    consumer_name: String,
    rewind: Rewind,
    metrics: Metrics,
    shutdown: CancellationToken,
) {
    let mut writers = tokio::task::JoinSet::new();
    'open: loop {
        let messages = match open(&stream, &consumer_name).await {
            Ok(m) => m,
            Err(e) => {
                tracing::warn!(consumer = %consumer_name, error = %e, "cannot consume the stream yet; retrying");
                tokio::select! {
                    _ = shutdown.cancelled() => break 'open,
                    _ = tokio::time::sleep(Duration::from_secs(1)) => continue,
                }
            }
        };
        let mut batches = messages.ready_chunks(BATCH);
        loop {
            let batch = tokio::select! {
                _ = shutdown.cancelled() => break 'open,
                batch = batches.next() => batch,
            };
            let Some(batch) = batch else { break };
            let mut broken = false;
            let mut messages = Vec::with_capacity(batch.len());
            for item in batch {
                match item {
                    Ok(m) => messages.push(m),
                    Err(e) => {
                        tracing::warn!(error = %e, "stream error; re-opening the consumer");
                        broken = true;
                    }
                }
            }
            if !messages.is_empty() {
                match admit(&rewind, messages, &shutdown).await {
                    Admit::Archive(messages, mark) => {
                        while writers.len() >= WRITERS {
                            writers.join_next().await;
                        }
                        let (db, prefix, shutdown) = (db.clone(), prefix.clone(), shutdown.clone());
                        let metrics = metrics.clone();
                        writers.spawn(async move {
                            archive(&db, &prefix, messages, mark, &metrics, &shutdown).await
                        });
                    }
                    Admit::Nothing => {}
                    Admit::Shutdown => break 'open,
                }
            }
            if broken {
                break;
            }
        }
    }
    while writers.join_next().await.is_some() {}
}

/// What a batch in hand is to become.
enum Admit {
    /// Archived, raising the mark to this.
    Archive(Vec<Message>, Mark),
    /// Nothing: the seal archived it (and the purge took it from the stream).
    Nothing,
    Shutdown,
}

/// Checks a batch against the stream mark ([`Rewind`]); leaves out what was in hand before the
/// last seal's purge, and archived by it.
async fn admit(rewind: &Rewind, mut messages: Vec<Message>, shutdown: &CancellationToken) -> Admit {
    let delivered: Vec<Delivered> = messages.iter().filter_map(Delivered::of).collect();
    match checked(rewind, &delivered, shutdown).await {
        Some(Verdict::Archive { from, mark }) => {
            messages.retain(|m| m.info().is_ok_and(|i| i.stream_sequence >= from));
            match messages.is_empty() {
                true => Admit::Nothing,
                false => Admit::Archive(messages, mark),
            }
        }
        Some(Verdict::Sealed) => Admit::Nothing,
        None => Admit::Shutdown,
    }
}

/// Tries the check a few times (the stream and the database may be coming back after the very
/// restart that rewound it); then archives as numbered, said loudly. `None`: shutdown.
async fn checked(
    rewind: &Rewind,
    delivered: &[Delivered],
    shutdown: &CancellationToken,
) -> Option<Verdict> {
    const TRIES: u32 = 5;
    for attempt in 1..=TRIES {
        let result = tokio::select! {
            _ = shutdown.cancelled() => return None,
            result = rewind.check(delivered) => result,
        };
        match result {
            Ok(done) => return Some(done),
            Err(e) if attempt == TRIES => {
                tracing::error!(error = %e, "cannot check or seal a stream that may have gone \
                    back; archiving as numbered (may the archiver's user purge the stream? \
                    docs/upgrading.md)");
            }
            Err(e) => tracing::warn!(error = %e, attempt, "cannot check the batch against the \
                stream mark yet; trying again"),
        }
        tokio::select! {
            _ = shutdown.cancelled() => return None,
            _ = tokio::time::sleep(Duration::from_secs(1)) => {}
        }
    }
    let seen = delivered.iter().fold(Mark::default(), |m, d| {
        m.max(Mark {
            seq: d.seq,
            ms: d.stored_ms,
        })
    });
    Some(Verdict::Archive {
        from: 0,
        mark: seen,
    })
}

async fn open(
    stream: &Stream,
    name: &str,
) -> Result<async_nats::jetstream::consumer::pull::Stream, async_nats::Error> {
    let consumer = stream
        .get_or_create_consumer(name, crate::consumer::config(name))
        .await?;
    Ok(consumer
        .stream()
        .max_messages_per_batch(BATCH)
        .messages()
        .await?)
}

/// What the archive keeps of a batch's messages: events, control events, what is neither.
type Sorted = (Vec<Archived>, Vec<ArchivedControl>, Vec<Reject>);

/// A batch's messages as what the archive keeps of each: events (their times clamped),
/// control events, and what is neither.
pub(crate) fn sort(prefix: &str, messages: &[Message]) -> Sorted {
    let (mut events, mut controls, mut rejects) = (Vec::new(), Vec::new(), Vec::new());
    for m in messages {
        let seq = m.info().map(|i| i.stream_sequence).unwrap_or(0);
        match decode_any(prefix, &m.subject, &m.payload) {
            Ok(Received::Event(mut event)) => {
                let claimed = event.time;
                if event.clamp_time(SystemTime::now()) {
                    tracing::warn!(origin = %event.origin, seq,
                        claimed = %crate::text::when(claimed),
                        "event stamped in the future (clock skew or a hostile host); archived as made now");
                }
                events.push(Archived { event, seq })
            }
            Ok(Received::Control(control)) => {
                // An intake round publishes thousands at once, and says so in one line.
                if matches!(control.kind, ControlKind::Intel | ControlKind::Unlist) {
                    tracing::debug!(id = %control.id, kind = control.kind.as_str(),
                        operator = %control.operator, seq, "control event");
                } else {
                    tracing::info!(id = %control.id, kind = control.kind.as_str(),
                        operator = %control.operator, seq, "control event");
                }
                let site = shared_f2b::inbound::origin_prefix(prefix, &m.subject)
                    .1
                    .map(str::to_owned);
                controls.push(ArchivedControl { control, seq, site });
            }
            Err(r) => {
                tracing::warn!(subject = ?m.subject.as_str(), seq, reason = r.reason, detail = ?r.detail,
                    "not an event nor a control event; kept in f2b_rejects");
                rejects.push(Reject {
                    seq,
                    subject: m.subject.to_string(),
                    reason: r.reason.to_owned(),
                    detail: r.detail,
                    payload: m.payload.to_vec(),
                });
            }
        }
    }
    (events, controls, rejects)
}

/// Stores one batch and acks it. When shutdown comes while the database is down, the batch is
/// left unacked and the server redelivers it.
async fn archive(
    db: &Db,
    prefix: &str,
    messages: Vec<Message>,
    mark: Mark,
    metrics: &Metrics,
    shutdown: &CancellationToken,
) {
    let started = Instant::now();
    if let Some(info) = messages.last().and_then(|m| m.info().ok()) {
        metrics.consumer_pending.set(info.pending as i64);
    }
    let (events, controls, rejects) = sort(prefix, &messages);
    let mut delay = Duration::from_millis(200);
    let mut failing = false;
    let inserted = loop {
        match store::insert_from_stream(db, &events, &controls, &rejects, mark).await {
            Ok(n) => break n,
            Err(e) => {
                metrics.db_errors.inc();
                metrics.db_up.set(0);
                if !failing {
                    tracing::error!(error = %e, pending = messages.len(),
                        "cannot write to the database; retrying, events wait on the stream");
                    failing = true;
                }
                // Keep the server from redelivering this batch to another archiver meanwhile.
                for m in &messages {
                    let _ = m.ack_with(AckKind::Progress).await;
                }
            }
        }
        tokio::select! {
            _ = shutdown.cancelled() => return,
            _ = tokio::time::sleep(delay) => {}
        }
        delay = (delay * 2).min(Duration::from_secs(5));
    };
    if failing {
        tracing::info!("database is back; archiving resumed");
    }
    metrics.db_up.set(1);
    metrics.archived.inc_by(inserted.events);
    metrics
        .duplicates
        .inc_by(events.len() as u64 - inserted.events);
    metrics.rejects.inc_by(rejects.len() as u64);
    metrics.batch_size.observe(messages.len() as f64);
    metrics
        .batch_seconds
        .observe(started.elapsed().as_secs_f64());
    for m in &messages {
        if let Err(e) = m.ack().await {
            tracing::warn!(error = %e, "ack failed; the message will be redelivered and skipped as a duplicate");
        }
    }
    tracing::info!(
        events = events.len(),
        inserted = inserted.events,
        duplicates = events.len() as u64 - inserted.events,
        controls = controls.len(),
        controls_inserted = inserted.controls,
        rejected = rejects.len(),
        took_ms = started.elapsed().as_millis() as u64,
        "batch archived"
    );
}

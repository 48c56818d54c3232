//! The catch-up service on `<prefix>.replay` (queue group, so one archiver answers each page;
//! pages are stateless, so any archiver can answer any page). `since` pages come from the stream
//! while it still holds them and from the database before that; `active` pages (a new host's
//! backfill) and `controls` pages (the operators' orders in force) from the database.
//!
//! Only inbox replies are answered (`_INBOX…`, or `_R_.…` for a request imported from the hosts'
//! account): a request whose reply subject names anything else (the JetStream API, an event
//! subject) is refused and counted, so no host can make the archiver publish on its behalf.

use crate::db::Db;
use crate::metrics::Metrics;
use crate::query;
use async_nats::jetstream::stream::Stream;
use futures::StreamExt;
use shared_f2b::control::ControlKind;
use shared_f2b::event::Event;
use shared_f2b::inbound::{Received, decode_any};
use shared_f2b::replay::{
    HeldAnswer, MAX_HELD_ASK, MAX_INTEL_PAGE, MAX_PAGE, ReplayKind, ReplayPage, ReplayRequest,
    Replayed, ReplayedControl, replay_subject,
};
use std::time::{Duration, SystemTime};
use tokio_util::sync::CancellationToken;

/// Whether the archiver may answer on `reply`: a client inbox, or a reply the server mapped
/// for a request from another account.
pub fn is_inbox(reply: &str) -> bool {
    let first = reply.split('.').next().unwrap_or_default();
    reply.contains('.') && (first == "_R_" || first.starts_with("_INBOX"))
}

/// Subscribes to the catch-up requests (before the daemon reports itself started).
pub async fn listen(
    client: &async_nats::Client,
    prefix: &str,
) -> Result<async_nats::Subscriber, async_nats::SubscribeError> {
    client
        .queue_subscribe(replay_subject(prefix), "shared-f2b-archiver".into())
        .await
}

/// Answers the requests from [`listen`] until `shutdown`.
#[allow(clippy::too_many_arguments)]
pub async fn run(
    mut requests: async_nats::Subscriber,
    db: Db,
    client: async_nats::Client,
    stream: Stream,
    prefix: String,
    consumer_name: String,
    metrics: Metrics,
    shutdown: CancellationToken,
) {
    let source = std::sync::Arc::new(Source {
        db,
        stream,
        prefix,
        consumer_name,
    });
    // Requests are answered side by side, so one slow page (or a host sending many) does not
    // hold up the others; at most ANSWERING at once, the rest wait in the subscription.
    let permits = std::sync::Arc::new(tokio::sync::Semaphore::new(ANSWERING));
    let mut answering = tokio::task::JoinSet::new();
    loop {
        let msg = tokio::select! {
            _ = shutdown.cancelled() => break,
            msg = requests.next() => msg,
            Some(done) = answering.join_next(), if !answering.is_empty() => {
                if let Err(e) = done {
                    tracing::error!(error = %e, "answering a catch-up request failed");
                }
                continue;
            }
        };
        let Some(msg) = msg else { break };
        let Some(reply) = msg.reply else { continue };
        if !is_inbox(&reply) {
            metrics.replay_refused.inc();
            tracing::warn!(reply = ?reply.as_str(), "catch-up request refused: its reply subject is not an inbox");
            continue;
        }
        metrics.replay_requests.inc();
        let permit = tokio::select! {
            _ = shutdown.cancelled() => break,
            permit = permits.clone().acquire_owned() => permit.expect("never closed"),
        };
        let (source, client) = (source.clone(), client.clone());
        answering.spawn(async move {
            let body = match serde_json::from_slice::<ReplayRequest>(&msg.payload) {
                Ok(req) if req.kind == ReplayKind::Held => {
                    serde_json::to_vec(&source.held(&req.ids).await)
                }
                Ok(req) => serde_json::to_vec(&source.answer(req).await),
                Err(e) => serde_json::to_vec(&error_page(ReplayError::BadRequest(e))),
            }
            .expect("answers serialise");
            if let Err(e) = client.publish(reply, body.into()).await {
                tracing::warn!(error = %e, "cannot send a replay page");
            }
            drop(permit);
        });
    }
    // Answers in flight get a moment to go out; then they are cut short (the clients retry).
    let finish = async { while answering.join_next().await.is_some() {} };
    if tokio::time::timeout(Duration::from_secs(2), finish)
        .await
        .is_err()
    {
        answering.shutdown().await;
    }
}

/// Catch-up requests answered at once.
const ANSWERING: usize = 8;

/// Why a replay request got an error page instead (its text is the page's `error`).
#[derive(Debug, thiserror::Error)]
enum ReplayError {
    #[error("bad replay request: {0}")]
    BadRequest(serde_json::Error),
    #[error("database error: {0}")]
    Database(#[from] sqlx::Error),
    #[error("cannot read the stream: {0}")]
    Stream(async_nats::Error),
    #[error(transparent)]
    Committed(#[from] crate::consumer::ConsumerError),
    #[error("a history request needs since_ms")]
    NoSince,
    #[error("a held request is answered apart")]
    NotAPage,
    #[error("a held request asks about {0} ids, more than {MAX_HELD_ASK}")]
    TooMany(usize),
    #[error("the stream returned nothing after sequence {after} (up to {high})")]
    NothingRead { after: u64, high: u64 },
}

fn error_page(error: ReplayError) -> ReplayPage {
    let error = error.to_string();
    tracing::warn!(%error, "replay request not answered");
    ReplayPage {
        events: Vec::new(),
        controls: Vec::new(),
        high_seq: 0,
        total: 0,
        done: true,
        next: 0,
        error: Some(error),
        restart_at: None,
    }
}

/// A page of archive rows, paged by row id (`active`, `history`).
fn rows_page(
    rows: Vec<query::Stored>,
    req: &ReplayRequest,
    limit: usize,
    high: u64,
    total: u64,
) -> ReplayPage {
    ReplayPage {
        controls: Vec::new(),
        done: rows.len() < limit,
        next: rows.last().map_or(req.after, |r| r.row_id),
        events: rows
            .into_iter()
            .map(|s| Replayed {
                seq: s.seq,
                cursor: s.row_id,
                event: s.event,
                stored: Some(s.received),
            })
            .collect(),
        high_seq: high,
        total,
        error: None,
        restart_at: None,
    }
}

/// Where pages come from.
struct Source {
    db: Db,
    stream: Stream,
    prefix: String,
    consumer_name: String,
}

impl Source {
    async fn answer(&self, req: ReplayRequest) -> ReplayPage {
        let most = if req.intel { MAX_INTEL_PAGE } else { MAX_PAGE };
        let limit = req.limit.clamp(1, most);
        let result = match req.kind {
            ReplayKind::Since => self.since(&req, limit).await,
            ReplayKind::Active => self.active(&req, limit).await,
            ReplayKind::Controls => self.controls(&req, limit).await,
            ReplayKind::History => self.history(&req, limit).await,
            ReplayKind::Held => Err(ReplayError::NotAPage),
        };
        result.unwrap_or_else(error_page)
    }

    /// Which of `ids` the archive holds, with the stream's last sequence and the consumer's ack
    /// floor: read in that order, then the database (an event the stream stored at or below
    /// `last` is, once the floor passed it, there).
    async fn held(&self, ids: &[uuid::Uuid]) -> HeldAnswer {
        let result = async {
            if ids.len() > MAX_HELD_ASK {
                return Err(ReplayError::TooMany(ids.len()));
            }
            let last = self
                .stream
                .get_info()
                .await
                .map_err(|e| ReplayError::Stream(e.into()))?
                .state
                .last_sequence;
            let floor = self.committed_seq().await?;
            if floor > last {
                tracing::warn!(
                    floor,
                    last,
                    "the archiver's consumer is past the stream's last \
                    sequence (the stream went back, a power cut?): hosts cannot tell what it lost"
                );
            }
            let held = query::held_events(&self.db, ids).await?;
            Ok(HeldAnswer {
                held,
                last,
                floor,
                error: None,
            })
        }
        .await;
        result.unwrap_or_else(|e: ReplayError| {
            tracing::warn!(error = %e, "held request not answered");
            HeldAnswer {
                error: Some(e.to_string()),
                ..HeldAnswer::default()
            }
        })
    }

    /// Where a database-served replay ends: the client's `until_seq`, never past what the
    /// archive has committed.
    async fn high(&self, req: &ReplayRequest) -> Result<u64, ReplayError> {
        let committed = self.committed_seq().await?;
        Ok(req.until_seq.map_or(committed, |seq| seq.min(committed)))
    }

    /// Everything up to the archiver consumer's ack floor is committed to the database.
    async fn committed_seq(&self) -> Result<u64, ReplayError> {
        Ok(crate::consumer::committed(&self.stream, &self.consumer_name).await?)
    }

    async fn active(&self, req: &ReplayRequest, limit: usize) -> Result<ReplayPage, ReplayError> {
        let high = self.high(req).await?;
        let exclude = req.exclude_origin.as_deref();
        let now = SystemTime::now();
        let total = if req.until_seq.is_none() {
            query::active_count(&self.db, now, &req.jails, exclude, high)
                .await
                .map_err(ReplayError::Database)?
        } else {
            0
        };
        let rows = query::active_page(&self.db, now, &req.jails, exclude, req.after, high, limit)
            .await
            .map_err(ReplayError::Database)?;
        Ok(rows_page(rows, req, limit, high, total))
    }

    /// Every ban from `since_ms` on (ended ones too), committed up to `high_seq`, paged by row
    /// id like `active`: a new host's memory of earlier bans for escalation.
    async fn history(&self, req: &ReplayRequest, limit: usize) -> Result<ReplayPage, ReplayError> {
        let since = req.since_ms.ok_or(ReplayError::NoSince)?.max(0);
        let high = self.high(req).await?;
        let since = std::time::UNIX_EPOCH + Duration::from_millis(since as u64);
        let rows = query::bans_page(&self.db, since, &req.jails, req.after, high, limit)
            .await
            .map_err(ReplayError::Database)?;
        Ok(rows_page(rows, req, limit, high, 0))
    }

    /// The control events in force now, committed up to `high_seq`, paged by row id like
    /// `active`.
    async fn controls(&self, req: &ReplayRequest, limit: usize) -> Result<ReplayPage, ReplayError> {
        let high = self.high(req).await?;
        let now = SystemTime::now();
        let total = if req.until_seq.is_none() {
            query::controls_count(&self.db, now, high, req.intel)
                .await
                .map_err(ReplayError::Database)?
        } else {
            0
        };
        let rows = query::controls_page(&self.db, now, req.after, high, limit, req.intel)
            .await
            .map_err(ReplayError::Database)?;
        Ok(ReplayPage {
            events: Vec::new(),
            done: rows.len() < limit,
            next: rows.last().map_or(req.after, |r| r.row_id),
            controls: rows
                .into_iter()
                .map(|r| ReplayedControl {
                    seq: r.seq,
                    control: r.control,
                    site: r.site,
                })
                .collect(),
            high_seq: high,
            total,
            error: None,
            restart_at: None,
        })
    }

    async fn since(&self, req: &ReplayRequest, limit: usize) -> Result<ReplayPage, ReplayError> {
        let mut stream = self.stream.clone();
        let state = stream
            .info()
            .await
            .map_err(|e| ReplayError::Stream(e.into()))?
            .state
            .clone();
        let after = req.after;
        // Never past what the stream holds, whatever the client sent (a far `until_seq` would
        // make every page wait for messages that do not exist).
        let high = req
            .until_seq
            .unwrap_or(state.last_sequence)
            .min(state.last_sequence);
        let mut page = ReplayPage {
            events: Vec::new(),
            controls: Vec::new(),
            high_seq: high,
            total: high.saturating_sub(after),
            done: true,
            next: after,
            error: None,
            restart_at: None,
        };
        // A cursor between a seal's cut and where the numbering went on may have passed
        // sequences the stream numbered again: the client is to read on from the cut.
        if req.until_seq.is_none() {
            let start = query::catchup_start(&self.db, after)
                .await
                .map_err(ReplayError::Database)?;
            if start < after {
                // A client that knows no `restart_at` sees its stream end below its cursor
                // (as for a re-created stream) and reads from the start: slow, complete.
                page.restart_at = Some(start);
                page.high_seq = start;
                page.total = 0;
                return Ok(page);
            }
        }
        // Nothing new (the periodic check of an idle host), or the stream was re-created and
        // the client is told so by a `high_seq` below its cursor.
        if after >= high {
            return Ok(page);
        }
        let wanted = |e: &Event| {
            (req.jails.iter().any(|j| j == "*") || req.jails.contains(&e.jail))
                && !(e.site.is_none() && req.exclude_origin.as_deref() == Some(e.origin.as_str()))
                && !(req.local && e.site.is_some())
        };
        let (events, controls, next) = if after + 1 >= state.first_sequence {
            self.read_stream(after, high, limit).await?
        } else {
            // The stream no longer holds the start: the database up to where the stream begins.
            // These pages carry no control events: a subscriber asks for the `controls`
            // snapshot whenever it catches up, which holds every one still in force.
            let until = high.min(state.first_sequence - 1);
            let rows = query::since_page(
                &self.db,
                &req.jails,
                req.exclude_origin.as_deref(),
                after,
                until,
                limit,
            )
            .await
            .map_err(ReplayError::Database)?;
            let next = if rows.len() < limit {
                until
            } else {
                rows.last().map_or(until, |r| r.seq)
            };
            let events = rows
                .into_iter()
                .map(|r| (r.seq, r.event, Some(r.received)))
                .collect();
            (events, Vec::new(), next)
        };
        let intel = |c: &ReplayedControl| {
            matches!(c.control.kind, ControlKind::Intel | ControlKind::Unlist)
        };
        page.controls = controls
            .into_iter()
            .filter(|c| !req.local || c.site.is_none())
            .filter(|c| req.intel || !intel(c))
            .collect();
        page.events = events
            .into_iter()
            .filter(|(_, e, _)| wanted(e))
            .map(|(seq, event, stored)| Replayed {
                seq,
                cursor: seq,
                event,
                stored,
            })
            .collect();
        page.next = next;
        page.done = next >= high;
        Ok(page)
    }

    /// Up to `limit` stored messages after `after` (and not past `high`), through a short-lived
    /// consumer; returns the events, the control events and the last sequence read.
    async fn read_stream(
        &self,
        after: u64,
        high: u64,
        limit: usize,
    ) -> Result<StreamRead, ReplayError> {
        let want = (high - after).min(limit as u64) as usize;
        let mut batch = crate::consumer::read_from(&self.stream, after + 1, want)
            .await
            .map_err(ReplayError::Stream)?;
        let (mut events, mut controls, mut next) = (Vec::with_capacity(want), Vec::new(), after);
        while let Some(msg) = batch.next().await {
            let msg = msg.map_err(ReplayError::Stream)?;
            let Ok(info) = msg.info() else { continue };
            let seq = info.stream_sequence;
            if seq > high {
                break;
            }
            next = seq;
            // What is not a valid event is in f2b_rejects, never replayed.
            match decode_any(&self.prefix, &msg.subject, &msg.payload) {
                Ok(Received::Event(event)) => {
                    events.push((seq, event, Some(SystemTime::from(info.published))))
                }
                Ok(Received::Control(control)) => controls.push(ReplayedControl {
                    seq,
                    control,
                    site: remote_site(&self.prefix, &msg.subject),
                }),
                Err(_) => {}
            }
            if info.pending == 0 {
                break;
            }
        }
        if next == after {
            // Never skip ahead on a read that returned nothing: the client retries.
            return Err(ReplayError::NothingRead { after, high });
        }
        Ok((events, controls, next))
    }
}

/// What [`Source::read_stream`] read: events and control events with their sequences, and the
/// last sequence read.
type StreamRead = (
    Vec<(u64, Event, Option<SystemTime>)>,
    Vec<ReplayedControl>,
    u64,
);

/// The site a stored subject was relayed from.
fn remote_site(prefix: &str, subject: &str) -> Option<String> {
    shared_f2b::inbound::origin_prefix(prefix, subject)
        .1
        .map(str::to_owned)
}

#[cfg(test)]
mod tests {
    use super::is_inbox;

    #[test]
    fn only_inboxes_get_answers() {
        for ok in ["_INBOX.abc.1", "_INBOX_bob.x.y", "_R_.aB9.xYz"] {
            assert!(is_inbox(ok), "{ok}");
        }
        for bad in [
            "$JS.API.STREAM.PURGE.F2B_EVENTS",
            "$JS.API.STREAM.DELETE.F2B_EVENTS",
            "f2b.ban.sshd.alice",
            "f2b.live.ban.sshd.alice",
            "_INBOX",
            "_R_",
            "x._INBOX.y",
        ] {
            assert!(!is_inbox(bad), "{bad}");
        }
    }
}

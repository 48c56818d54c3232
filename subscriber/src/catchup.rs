//! Catching up through the archiver's catch-up service (`<prefix>.replay`, request/reply): the
//! active bans for a brand-new host, and every event after the cursor when live delivery had a
//! gap (a sequence jump, a reconnect, dropped messages, a restart, the periodic check). The
//! archiver serves from the stream what it still holds and from the database what is older, up
//! to the stream's last sequence; live events after that arrive on the live subject.

use crate::follow::{Incoming, Source};
use crate::state::State;
use crate::worker::{Flow, Worker};
use shared_f2b::replay::{MAX_PAGE, ReplayKind, ReplayPage, ReplayRequest, replay_subject};
use shared_f2b::subject::event_subject;

/// What to fetch.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Plan {
    /// A new host: the bans active now, then everything after what the archive had.
    Backfill,
    /// Every event after this stream sequence.
    Since(u64),
}

/// How a catch-up ended.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Outcome {
    /// Everything up to this stream sequence is handled.
    Done(u64),
    /// The stream's last sequence is below the cursor: it was re-created.
    Reset { last: u64 },
    /// Shutdown came first.
    Stopped,
}

/// Why a catch-up could not be done now.
#[derive(Debug, thiserror::Error)]
pub enum CatchupError {
    #[error("no archiver answers on {0}")]
    NoArchiver(String),
    #[error("catch-up failed: {0}")]
    Failed(String),
    #[error("cannot record the catch-up in state_dir: {0}")]
    State(#[from] anyhow::Error),
}

/// Asks the archiver for one page.
pub async fn fetch_page(
    client: &async_nats::Client,
    prefix: &str,
    req: &ReplayRequest,
) -> Result<ReplayPage, CatchupError> {
    let subject = replay_subject(prefix);
    let body = serde_json::to_vec(req).expect("requests serialise");
    let reply = client
        .request(subject.clone(), body.into())
        .await
        .map_err(|e| {
            if e.kind() == async_nats::client::RequestErrorKind::NoResponders {
                CatchupError::NoArchiver(subject.clone())
            } else {
                CatchupError::Failed(e.to_string())
            }
        })?;
    let page: ReplayPage = serde_json::from_slice(&reply.payload)
        .map_err(|e| CatchupError::Failed(format!("unreadable page: {e}")))?;
    match page.error {
        Some(e) => Err(CatchupError::Failed(e)),
        None => Ok(page),
    }
}

/// A page's events as messages for the normal pipeline (re-encoded, so they pass the same
/// checks as live ones).
pub fn items(prefix: &str, page: &ReplayPage) -> Vec<Incoming> {
    page.events
        .iter()
        .filter_map(|r| {
            let e = &r.event;
            let subject = event_subject(prefix, e.action, &e.jail, &e.origin).ok()?;
            Some(Incoming {
                source: Source::Replay,
                seq: Some(r.seq),
                stream: None,
                subject,
                payload: e.encode().into(),
            })
        })
        .collect()
}

/// Fetches and applies every page of `plan`.
pub async fn run(
    worker: &mut Worker<'_>,
    state: &mut State,
    client: &async_nats::Client,
    plan: Plan,
) -> Result<Outcome, CatchupError> {
    let config = worker.config;
    let prefix = &config.nats.subject_prefix;
    let (kind, after) = match plan {
        Plan::Backfill => (ReplayKind::Active, 0),
        Plan::Since(after) => (ReplayKind::Since, after),
    };
    let mut req = ReplayRequest {
        kind,
        jails: config.subscriber.jails.clone(),
        exclude_origin: (!config.subscriber.include_own).then(|| config.host_id.clone()),
        after,
        until_seq: None,
        limit: MAX_PAGE,
    };
    let mut applied = 0u64;
    loop {
        let page = fetch_page(client, prefix, &req).await?;
        let first = req.until_seq.is_none();
        if first {
            if kind == ReplayKind::Since && page.high_seq < after {
                return Ok(Outcome::Reset {
                    last: page.high_seq,
                });
            }
            req.until_seq = Some(page.high_seq);
            if page.total > 0 {
                tracing::info!(
                    total = page.total,
                    up_to_seq = page.high_seq,
                    ?plan,
                    "catching up through the archiver"
                );
            }
        }
        let n = page.events.len() as u64;
        // Backfill pages hold active bans in row order: only the end says where the stream is.
        let cursor = (kind == ReplayKind::Since).then_some(page.next.max(req.after));
        if worker.handle(items(prefix, &page), cursor, state).await? == Flow::Stop {
            return Ok(Outcome::Stopped);
        }
        applied += n;
        // A page that does not move on ends the catch-up rather than asking for it again.
        let moved_on = page.next > req.after;
        req.after = page.next.max(req.after);
        if page.done || !moved_on {
            break;
        }
    }
    let high = req.until_seq.unwrap_or(after);
    if kind == ReplayKind::Active {
        if worker.handle(Vec::new(), Some(high), state).await? == Flow::Stop {
            return Ok(Outcome::Stopped);
        }
        tracing::info!(applied, up_to_seq = high, "backfill of active bans done");
    } else if applied > 0 {
        tracing::info!(applied, up_to_seq = high, "caught up");
    }
    Ok(Outcome::Done(high))
}

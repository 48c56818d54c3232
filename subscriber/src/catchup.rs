//! Catching up from the archive what the stream no longer holds: the active bans for a brand-new
//! host, or every event since the last applied one after a long downtime. Pages come from the
//! archiver over NATS (`<prefix>.replay`); the replay ends at the archive's `high_seq` and the
//! live consumers start right after it, so nothing is missed and nothing is applied twice.

use crate::follow::{Incoming, Item};
use crate::state::State;
use crate::worker::{Flow, Worker};
use anyhow::Context;
use shared_f2b::replay::{ReplayKind, ReplayPage, ReplayRequest, replay_subject};
use shared_f2b::subject::event_subject;

/// What a start needs.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Plan {
    /// The stream still holds everything after our cursors.
    Nothing,
    /// No state: fetch the bans active now.
    Backfill,
    /// The stream has dropped events after this cursor: replay them.
    Replay { after: u64 },
}

/// Decides from the state and the stream's first sequence.
pub fn plan(state: &State, keys: &[String], first_seq: u64) -> Plan {
    if !state.existed {
        return Plan::Backfill;
    }
    keys.iter()
        .filter_map(|k| state.cursor(k))
        .filter(|c| c + 1 < first_seq)
        .min()
        .map_or(Plan::Nothing, |after| Plan::Replay { after })
}

/// Why a page could not be had.
#[derive(Debug, thiserror::Error)]
pub enum CatchupError {
    #[error("no archiver answers on {0}")]
    NoArchiver(String),
    #[error("replay failed: {0}")]
    Failed(String),
}

/// The first request of a plan.
pub fn first_request(
    plan: Plan,
    jails: &[String],
    exclude_origin: Option<String>,
) -> Option<ReplayRequest> {
    let (kind, after) = match plan {
        Plan::Nothing => return None,
        Plan::Backfill => (ReplayKind::Active, 0),
        Plan::Replay { after } => (ReplayKind::Since, after),
    };
    Some(ReplayRequest {
        kind,
        jails: jails.to_vec(),
        exclude_origin,
        after,
        until_seq: None,
        limit: shared_f2b::replay::MAX_PAGE,
    })
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

/// A page's events as items for the normal pipeline (re-encoded, so they pass the same checks
/// as live ones); they advance no cursor.
pub fn items(prefix: &str, page: &ReplayPage) -> Vec<Item> {
    page.events
        .iter()
        .map(|r| {
            let e = &r.event;
            event_subject(prefix, e.action, &e.jail, &e.origin)
                .map(|subject| Incoming {
                    cursor_key: None,
                    seq: r.seq,
                    pending: 0,
                    subject,
                    payload: e.encode().into(),
                })
                .map_err(|err| format!("replayed event {}: {err}", e.id))
        })
        .collect()
}

/// Replays from the archive what the stream cannot give; false on shutdown.
pub async fn run(
    worker: &mut Worker<'_>,
    state: &mut State,
    client: &async_nats::Client,
    stream: &async_nats::jetstream::stream::Stream,
    keys: &[String],
) -> anyhow::Result<bool> {
    let config = worker.config;
    let prefix = &config.nats.subject_prefix;
    let first_seq = stream
        .clone()
        .info()
        .await
        .map(|i| i.state.first_sequence)
        .unwrap_or(0);
    let plan = plan(state, keys, first_seq);
    let exclude = (!config.subscriber.include_own).then(|| config.host_id.clone());
    let Some(mut req) = first_request(plan, &config.subscriber.jails, exclude) else {
        return Ok(true);
    };
    let what = if plan == Plan::Backfill {
        "backfill of active bans"
    } else {
        "replay from the archive"
    };
    let (mut done, mut total) = (0u64, 0u64);
    loop {
        let page = match fetch_page(client, prefix, &req).await {
            Ok(page) => page,
            Err(CatchupError::NoArchiver(subject)) => {
                tracing::warn!(%subject, "{what}: no archiver answers; catching up from the stream only");
                return Ok(true);
            }
            Err(e) => {
                tracing::warn!(error = %e, "{what} failed; catching up from the stream only");
                return Ok(true);
            }
        };
        if req.until_seq.is_none() {
            total = page.total;
            req.until_seq = Some(page.high_seq);
            tracing::info!(total, up_to_seq = page.high_seq, ?plan, "{what} starting");
        }
        let n = page.events.len() as u64;
        if let Some(last) = page.events.last() {
            req.after = last.cursor;
        }
        if matches!(
            worker.handle(items(prefix, &page), state).await?,
            Flow::Stop
        ) {
            return Ok(false);
        }
        done += n;
        tracing::info!("{what}: {done} of {total}");
        if page.done || n == 0 {
            break;
        }
    }
    let high = req.until_seq.unwrap_or(0);
    for key in keys {
        if state.cursor(key).is_none_or(|c| c < high) {
            state.advance(key, high);
        }
    }
    state
        .commit()
        .context("cannot record the catch-up in state_dir")?;
    tracing::info!(applied = done, live_from_seq = high + 1, "{what} done");
    Ok(true)
}

//! Catching up from the archive what the stream no longer holds: the active bans for a brand-new
//! host, or every event since the last applied one after a long downtime. Pages come from the
//! archiver over NATS (`<prefix>.replay`); the replay ends at the archive's `high_seq` and the
//! live consumers start right after it, so nothing is missed and nothing is applied twice.

use crate::follow::{Incoming, Item};
use crate::state::State;
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

//! Catching up through the archiver's catch-up service (`<prefix>.replay`, request/reply): the
//! active bans for a brand-new host, and every event after the cursor when live delivery had a
//! gap (a sequence jump, a reconnect, dropped messages, a restart, the periodic check). The
//! archiver serves from the stream what it still holds and from the database what is older, up
//! to the stream's last sequence; live events after that arrive on the live subject. Pages are
//! fetched in the background, so an archiver that is slow or away never holds up live events.

use super::follow::{Incoming, Source};
use shared_f2b::control::Control;
use shared_f2b::replay::{
    MAX_PAGE, ReplayKind, ReplayPage, ReplayRequest, ReplayedControl, replay_subject,
};
use shared_f2b::subject::{control_subject, event_subject};
use std::time::{Duration, SystemTime, UNIX_EPOCH};
use tokio::sync::mpsc;

/// Most earlier bans a backfill reads for escalation (memory stays bounded whatever the
/// archive holds).
const MAX_HISTORY: usize = 500_000;

/// What to fetch.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Plan {
    /// A new host: the bans active now, then everything after what the archive had.
    Backfill,
    /// Every event after this stream sequence.
    Since(u64),
}

/// What a catch-up in the background reports, in order.
#[derive(Debug)]
pub enum Fetched {
    /// One page of events; for `since`, everything up to `through` is handled once they are.
    Page {
        events: Vec<Incoming>,
        through: Option<u64>,
    },
    /// Earlier bans from the archive (escalation's repeat rule): address, time, end.
    History(Vec<(std::net::IpAddr, SystemTime, Option<SystemTime>)>),
    /// The operators' orders in force up to stream sequence `high` (before the pages).
    Controls {
        controls: Vec<ReplayedControl>,
        high: u64,
    },
    /// Everything up to this stream sequence came.
    Done { plan: Plan, high: u64, events: u64 },
    /// The stream's last sequence is below the cursor: it was re-created.
    Reset { last: u64 },
    /// The catch-up could not be done now.
    Failed(CatchupError),
}

/// Why a catch-up could not be done now.
#[derive(Debug, thiserror::Error)]
pub enum CatchupError {
    #[error("no archiver answers on {0}")]
    NoArchiver(String),
    #[error("catch-up failed: {0}")]
    Failed(String),
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

/// A page's events and control events as messages for the normal pipeline, in stream order
/// (re-encoded, so they pass the same checks as live ones).
pub fn items(prefix: &str, page: &ReplayPage) -> Vec<Incoming> {
    let mut items: Vec<Incoming> = page
        .events
        .iter()
        .filter_map(|r| {
            let e = &r.event;
            let prefix = origin_prefix(prefix, e.site.as_deref());
            let subject = event_subject(&prefix, e.action, &e.jail, &e.origin).ok()?;
            Some(Incoming {
                source: Source::Replay,
                stored: r.stored,
                seq: Some(r.seq),
                stream: None,
                subject,
                payload: e.encode().into(),
            })
        })
        .collect();
    if !page.controls.is_empty() {
        items.extend(page.controls.iter().filter_map(|c| control_item(prefix, c)));
        items.sort_by_key(|i| i.seq);
    }
    items
}

/// The prefix of the subjects of `site`'s events and records here (this site's own: `prefix`).
fn origin_prefix(prefix: &str, site: Option<&str>) -> String {
    match site {
        Some(site) => shared_f2b::federation::remote_prefix(prefix, site),
        None => prefix.to_owned(),
    }
}

/// A control event as a message for the normal pipeline.
pub fn control_item(prefix: &str, c: &ReplayedControl) -> Option<Incoming> {
    let control: &Control = &c.control;
    Some(Incoming {
        source: Source::Replay,
        stored: None,
        seq: Some(c.seq),
        stream: None,
        subject: control_subject(
            &origin_prefix(prefix, c.site.as_deref()),
            control.kind,
            &control.operator,
        )
        .ok()?,
        payload: control.encode().into(),
    })
}

/// Who asks: the request fields every page shares.
#[derive(Debug, Clone)]
pub struct Asker {
    pub client: async_nats::Client,
    pub prefix: String,
    pub jails: Vec<String>,
    pub exclude_origin: Option<String>,
    /// How far back a backfill reads earlier bans (escalation's repeat rule; `None`: not).
    pub history: Option<Duration>,
    /// Whether intel orders are asked for (`intel = "ban"`).
    pub intel: bool,
}

impl Asker {
    /// Fetches every page of `plan` in the background and sends them to `tx`, which the daemon
    /// applies between live batches: live events keep flowing while the archiver answers (or
    /// does not). The channel's capacity bounds how far the fetch runs ahead. With `history`,
    /// the earlier bans for escalation are read first (the first catch-up after a start: they
    /// live in memory only).
    pub fn spawn(
        &self,
        plan: Plan,
        history: bool,
        tx: mpsc::Sender<Fetched>,
    ) -> tokio::task::JoinHandle<()> {
        let asker = self.clone();
        tokio::spawn(async move {
            let last = match asker.fetch(plan, history, &tx).await {
                Ok(Some(done)) => done,
                Ok(None) => return,
                Err(e) => Fetched::Failed(e),
            };
            let _ = tx.send(last).await;
        })
    }

    /// Fetches the orders in force and sends them; false when the daemon went away. An archiver
    /// that cannot answer this (an older one) does not stop the catch-up: the orders then come
    /// only live and in `since` pages.
    async fn send_controls(&self, tx: &mpsc::Sender<Fetched>) -> bool {
        let mut req = ReplayRequest {
            kind: ReplayKind::Controls,
            jails: vec!["*".into()],
            exclude_origin: None,
            after: 0,
            until_seq: None,
            limit: MAX_PAGE,
            since_ms: None,
            local: false,
            intel: self.intel,
            ids: Vec::new(),
        };
        let mut controls = Vec::new();
        loop {
            match fetch_page(&self.client, &self.prefix, &req).await {
                Ok(page) => {
                    req.until_seq.get_or_insert(page.high_seq);
                    controls.extend(page.controls);
                    let moved_on = page.next > req.after;
                    req.after = page.next.max(req.after);
                    if page.done || !moved_on {
                        break;
                    }
                }
                Err(e) => {
                    tracing::warn!(error = %e, "cannot read the operators' orders in force now");
                    return !tx.is_closed();
                }
            }
        }
        let high = req.until_seq.unwrap_or(0);
        tx.send(Fetched::Controls { controls, high }).await.is_ok()
    }

    /// Reads the bans of the last `memory` from the archive for escalation's repeat rule and
    /// sends them; false when the daemon went away. Without them a new host escalates only
    /// what it sees itself.
    async fn send_history(&self, memory: Duration, tx: &mpsc::Sender<Fetched>) -> bool {
        let since = SystemTime::now() - memory;
        let mut req = ReplayRequest {
            kind: ReplayKind::History,
            jails: self.jails.clone(),
            exclude_origin: None,
            after: 0,
            until_seq: None,
            limit: MAX_PAGE,
            since_ms: Some(
                since
                    .duration_since(UNIX_EPOCH)
                    .unwrap_or_default()
                    .as_millis() as i64,
            ),
            local: false,
            intel: false,
            ids: Vec::new(),
        };
        let mut total = 0;
        loop {
            let page = match fetch_page(&self.client, &self.prefix, &req).await {
                Ok(page) => page,
                Err(e) => {
                    tracing::warn!(error = %e, "cannot read earlier bans for escalation");
                    return !tx.is_closed();
                }
            };
            req.until_seq.get_or_insert(page.high_seq);
            total += page.events.len();
            // This site's own bans: a federated site's count only through its policy, live.
            let bans = page
                .events
                .iter()
                .filter(|r| r.event.site.is_none())
                .map(|r| (r.event.ip, r.event.time, r.event.expires()))
                .collect();
            if tx.send(Fetched::History(bans)).await.is_err() {
                return false;
            }
            let moved_on = page.next > req.after;
            req.after = page.next.max(req.after);
            if page.done || !moved_on {
                break;
            }
            if total >= MAX_HISTORY {
                tracing::warn!(
                    bans = total,
                    "read no more earlier bans for escalation: the \
                    limit is reached (the newest are not counted)"
                );
                break;
            }
        }
        tracing::info!(bans = total, "earlier bans read for escalation");
        true
    }

    /// Sends the pages; the final report is returned (`None` when the daemon went away).
    /// The first request of a catch-up of `kind` after stream sequence `after`.
    fn request(&self, kind: ReplayKind, after: u64) -> ReplayRequest {
        ReplayRequest {
            kind,
            jails: self.jails.clone(),
            exclude_origin: self.exclude_origin.clone(),
            after,
            until_seq: None,
            limit: MAX_PAGE,
            since_ms: None,
            local: false,
            intel: self.intel,
            ids: Vec::new(),
        }
    }

    async fn fetch(
        &self,
        plan: Plan,
        history: bool,
        tx: &mpsc::Sender<Fetched>,
    ) -> Result<Option<Fetched>, CatchupError> {
        let (kind, after) = match plan {
            Plan::Backfill => (ReplayKind::Active, 0),
            Plan::Since(after) => (ReplayKind::Since, after),
        };
        let mut req = self.request(kind, after);
        let mut events = 0u64;
        if kind == ReplayKind::Active && !self.send_controls(tx).await {
            return Ok(None);
        }
        if history
            && let Some(memory) = self.history
            && !self.send_history(memory, tx).await
        {
            return Ok(None);
        }
        loop {
            let page = fetch_page(&self.client, &self.prefix, &req).await?;
            if let Some(cut) = page.restart_at
                && req.until_seq.is_none()
                && cut < req.after
            {
                // The stream was sealed after it went back, and this cursor may have passed
                // sequences it numbered again: read on from where what it kept ends.
                tracing::warn!(
                    cursor = req.after,
                    from = cut,
                    "the stream went back and was sealed; catching up from where it went back to"
                );
                req.after = cut;
                continue;
            }
            if req.until_seq.is_none() {
                if kind == ReplayKind::Since && page.high_seq < after {
                    return Ok(Some(Fetched::Reset {
                        last: page.high_seq,
                    }));
                }
                // Something was missed: the orders in force too (a revoke or an order may be
                // older than what the stream still holds).
                if kind == ReplayKind::Since
                    && page.high_seq > after
                    && !self.send_controls(tx).await
                {
                    return Ok(None);
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
            events += page.events.len() as u64;
            // Backfill pages hold active bans in row order: only the end says where the
            // stream is.
            let through = (kind == ReplayKind::Since).then_some(page.next.max(req.after));
            let sent = tx
                .send(Fetched::Page {
                    events: items(&self.prefix, &page),
                    through,
                })
                .await;
            if sent.is_err() {
                return Ok(None);
            }
            // A page that does not move on ends the catch-up rather than asking for it again.
            let moved_on = page.next > req.after;
            req.after = page.next.max(req.after);
            if page.done || !moved_on {
                break;
            }
        }
        Ok(Some(Fetched::Done {
            plan,
            high: req.until_seq.unwrap_or(after),
            events,
        }))
    }
}

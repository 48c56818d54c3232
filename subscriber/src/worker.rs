//! Handling one batch of events: check each, apply the admitted ones to Fail2Ban in the
//! configured mode, record the batch in the state, count everything.

use crate::apply::{Applier, ApplyError, Op};
use crate::filter::{Filter, Verdict};
use crate::follow::Item;
use crate::limits::{Admit, Limits};
use crate::metrics::Metrics;
use crate::state::State;
use anyhow::Context;
use shared_f2b::config::Config;
use shared_f2b::event::Action;
use std::collections::{BTreeMap, HashSet, VecDeque};
use std::time::{Duration, Instant, SystemTime};
use tokio_util::sync::CancellationToken;

/// How many recent event ids are remembered to drop re-published duplicates.
const RECENT_IDS: usize = 65_536;

/// Recently seen event ids (a bounded set).
#[derive(Default)]
pub(crate) struct RecentIds {
    set: HashSet<uuid::Uuid>,
    order: VecDeque<uuid::Uuid>,
}

impl RecentIds {
    /// False when `id` was seen already.
    fn insert(&mut self, id: uuid::Uuid) -> bool {
        if !self.set.insert(id) {
            return false;
        }
        self.order.push_back(id);
        if self.order.len() > RECENT_IDS
            && let Some(old) = self.order.pop_front()
        {
            self.set.remove(&old);
        }
        true
    }
}

/// What the loop does after a batch.
pub enum Flow {
    Continue,
    /// The consumers reported an error: re-create them from the state.
    Reopen,
    /// Shutdown interrupted the batch.
    Stop,
}

pub struct Worker<'a> {
    pub(crate) config: &'a Config,
    pub(crate) filter: Filter,
    pub(crate) applier: Applier,
    pub(crate) metrics: Metrics,
    /// The holdings changed since the gauges were last computed.
    pub(crate) held_changed: bool,
    pub(crate) limits: Limits,
    pub(crate) recent: RecentIds,
    pub(crate) shutdown: CancellationToken,
}

impl Worker<'_> {
    /// Applies one batch and records it. A batch interrupted by shutdown is not recorded, so it
    /// is applied again after the restart.
    pub async fn handle(&mut self, batch: Vec<Item>, state: &mut State) -> anyhow::Result<Flow> {
        let started = Instant::now();
        let now = SystemTime::now();
        let sub = &self.config.subscriber;
        let (mut bans, mut unbans) = (Vec::new(), Vec::new());
        let mut cursors = BTreeMap::new();
        let mut rejected = 0;
        let mut flow = Flow::Continue;
        for item in batch {
            let msg = match item {
                Ok(msg) => msg,
                Err(e) => {
                    tracing::warn!(error = %e, "stream error; resuming from the state");
                    flow = Flow::Reopen;
                    continue;
                }
            };
            let seq = msg.seq;
            let live = msg.cursor_key.is_some();
            if live {
                self.metrics.consumer_pending.set(msg.pending as i64);
            }
            if let Some(key) = msg.cursor_key {
                if state.cursor(&key).is_some_and(|c| seq <= c) {
                    continue;
                }
                cursors.insert(key, seq);
            }
            self.metrics.received.inc();
            match self.filter.check(&msg.subject, &msg.payload, now) {
                Verdict::Apply(event) => {
                    if !self.recent.insert(event.id) {
                        self.metrics.skip("duplicate");
                        continue;
                    }
                    let local = sub.local_jail(&event.jail).to_owned();
                    tracing::debug!(id = %event.id, origin = %event.origin, ip = %event.ip,
                        action = event.action.as_str(), jail = %local, "event");
                    if !self.limits.trusts(&event.origin) {
                        rejected += 1;
                        self.metrics.reject("untrusted_origin");
                        tracing::warn!(origin = %event.origin, ip = %event.ip, reason = "untrusted_origin",
                            "event rejected: origin not in trusted_origins");
                        continue;
                    }
                    match event.action {
                        Action::Ban => match self.limits.admit(&event, live, now) {
                            Admit::Apply(until) => {
                                state.ban(&local, event.ip, &event.origin, until);
                                bans.push((local, event));
                            }
                            Admit::Waiting => {
                                tracing::debug!(ip = %event.ip, origin = %event.origin,
                                    "waiting for more reporters");
                                self.metrics.skip("awaiting_reporters");
                            }
                            Admit::Refuse(reason) => {
                                rejected += 1;
                                self.metrics.reject(reason);
                                tracing::warn!(origin = %event.origin, ip = %event.ip, reason,
                                    "event rejected by a limit");
                            }
                        },
                        Action::Unban => {
                            if state.unban(&local, event.ip, &event.origin) {
                                unbans.push((local, event.ip));
                            } else {
                                tracing::info!(ip = %event.ip, origin = %event.origin,
                                    "unban not applied: another origin still holds the ban");
                            }
                        }
                    }
                }
                Verdict::Skip(reason) => self.metrics.skip(reason),
                Verdict::Reject { reason, detail } => {
                    rejected += 1;
                    self.metrics.reject(reason);
                    tracing::warn!(subject = %msg.subject, seq, reason, %detail, "event rejected");
                }
            }
        }
        let ops = self.applier.plan(&bans, &unbans);
        let mut applied = 0;
        for op in &ops {
            match self.execute(op).await {
                Some(n) => applied += n,
                None => return Ok(Flow::Stop),
            }
        }
        for (key, seq) in cursors {
            state.advance(&key, seq);
        }
        state
            .commit()
            .context("cannot record applied events in state_dir")?;
        if !bans.is_empty() {
            let done = SystemTime::now();
            self.metrics.last_applied_seconds.set(
                done.duration_since(std::time::UNIX_EPOCH)
                    .unwrap_or_default()
                    .as_secs_f64(),
            );
            for (_, e) in &bans {
                let latency = done.duration_since(e.time).unwrap_or_default();
                self.metrics
                    .event_latency_seconds
                    .observe(latency.as_secs_f64());
            }
        }
        // Last, so that a scrape that sees the batch applied sees its latencies too.
        self.metrics.applied.inc_by(applied as u64);
        if !bans.is_empty() || !unbans.is_empty() {
            self.held_changed = true;
        }
        if !bans.is_empty() || !unbans.is_empty() || rejected > 0 {
            tracing::info!(
                bans = bans.len(),
                unbans = unbans.len(),
                rejected,
                applied,
                held = state.holdings.len(),
                took_ms = started.elapsed().as_millis() as u64,
                "batch applied"
            );
        }
        Ok(flow)
    }

    /// Recomputes the bans-held gauges when the holdings changed (it walks every holding).
    pub fn publish_held(&mut self, state: &State) {
        if self.held_changed {
            let (by_origin, by_jail) = state.holdings.counts();
            self.metrics.set_held(&by_origin, &by_jail);
            self.held_changed = false;
        }
    }

    /// Runs an op, retrying with backoff while Fail2Ban is away; `None` if shutdown came first.
    async fn execute(&mut self, op: &Op) -> Option<usize> {
        let mut delay = Duration::from_millis(100);
        let mut warned = false;
        loop {
            let t0 = Instant::now();
            let result = self.applier.execute(op).await;
            self.metrics
                .apply_seconds
                .observe(t0.elapsed().as_secs_f64());
            match result {
                Ok(n) => {
                    if warned {
                        tracing::info!("Fail2Ban is back; applying resumed");
                    }
                    return Some(n);
                }
                Err(ApplyError::Refused(e)) => {
                    tracing::error!(error = %e, ?op, "Fail2Ban refused; check the target jail");
                    return Some(0);
                }
                Err(ApplyError::Retry(e)) => {
                    if !warned {
                        tracing::warn!(error = %e, "cannot apply now; retrying until it works");
                        warned = true;
                    }
                }
            }
            tokio::select! {
                _ = self.shutdown.cancelled() => return None,
                _ = tokio::time::sleep(delay) => {}
            }
            delay = (delay * 2).min(Duration::from_secs(5));
        }
    }
}

//! Handling one batch: ask [`Admission`] about each event, log and count each decision, fold
//! them ([`crate::batch`]), hand the result to Fail2Ban in the configured mode, record the
//! batch in the state. The decisions and the fold are pure; the I/O is here.

use crate::admission::intel::INTEL_JAIL;
use crate::admission::{Admission, Decision};
use crate::apply::{Applier, Op, PlannedBan};
use crate::batch::Folded;
use crate::intake::follow::Incoming;
use crate::metrics::Metrics;
use crate::state::State;
use shared_f2b::config::Config;
use std::time::{Duration, Instant, SystemTime};
use tokio_util::sync::CancellationToken;

/// How long the backoff may grow while the target jail is unknown (Fail2Ban starting) before
/// the op is given up as refused.
const JAIL_PATIENCE: Duration = Duration::from_secs(5);

/// Whether the batch was applied, or shutdown interrupted it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Flow {
    Continue,
    Stop,
}

/// The applied events could not be recorded in `state_dir`: the daemon stops rather than
/// apply what it could not remember.
#[derive(Debug, thiserror::Error)]
#[error("cannot record applied events in state_dir: {0}")]
pub struct NotRecorded(pub std::io::Error);

impl From<std::io::Error> for NotRecorded {
    fn from(e: std::io::Error) -> NotRecorded {
        NotRecorded(e)
    }
}

pub struct Worker<'a> {
    pub(crate) config: &'a Config,
    pub(crate) admission: Admission,
    pub(crate) applier: Applier,
    pub(crate) metrics: Metrics,
    /// The holdings changed since the gauges were last computed.
    pub(crate) held_changed: bool,
    pub(crate) shutdown: CancellationToken,
}

impl Worker<'_> {
    /// Applies one batch and records it, with `cursor` (everything of the stream up to it is
    /// handled) when given. A batch interrupted by shutdown is not recorded, so it is applied
    /// again after the restart.
    pub async fn handle(
        &mut self,
        batch: Vec<Incoming>,
        cursor: Option<u64>,
        state: &mut State,
    ) -> Result<Flow, NotRecorded> {
        let started = Instant::now();
        let now = SystemTime::now();
        let mut folded = Folded::default();
        // A key record in this batch is taken in order below; events it vouches for are then
        // verified one by one, as they were not in the keyring for the batch check.
        let verified = self.admission.verify_batch(&batch, state);
        for (msg, verified) in batch.iter().zip(verified) {
            self.metrics.received.inc();
            let decision = self.admission.decide_verified(msg, state, now, verified);
            self.observe(msg, &decision);
            folded.add(decision);
        }
        let Folded {
            bans,
            unbans,
            lifts,
            rejected,
            ..
        } = &folded;
        let ops = self.applier.plan(bans, unbans, lifts);
        if let Err(e) = self.applier.restore_bantimes().await {
            tracing::warn!(error = %e, "cannot put a jail's bantime back yet; retrying with the next batch");
        }
        let mut applied = 0;
        for op in &ops {
            match self.execute(op).await {
                Some(n) => applied += n,
                None => return Ok(Flow::Stop),
            }
        }
        if let Some(seq) = cursor {
            state.advance(&self.config.nats.stream, seq);
        }
        state.commit()?;
        if !bans.is_empty() {
            let done = SystemTime::now();
            self.metrics.last_applied_seconds.set(
                done.duration_since(std::time::UNIX_EPOCH)
                    .unwrap_or_default()
                    .as_secs_f64(),
            );
            for PlannedBan { event: e, .. } in bans {
                let latency = done.duration_since(e.time).unwrap_or_default();
                self.metrics
                    .event_latency_seconds
                    .observe(latency.as_secs_f64());
            }
        }
        // Last, so that a scrape that sees the batch applied sees its latencies too.
        self.metrics.applied.inc_by(applied as u64);
        if folded.changes() {
            self.held_changed = true;
        }
        if folded.changes() || *rejected > 0 {
            tracing::info!(
                bans = bans.len(),
                unbans = unbans.len(),
                lifts = lifts.len(),
                rejected,
                applied,
                held = state.holdings.len(),
                took_ms = started.elapsed().as_millis() as u64,
                "batch applied"
            );
        }
        Ok(Flow::Continue)
    }

    /// Logs and counts one decision: a line per event at debug, every rejection at warn with
    /// its reason, operators' orders and escalations at info.
    fn observe(&self, msg: &Incoming, decision: &Decision) {
        match decision {
            Decision::Ban {
                jail,
                event,
                target,
                bantime,
                escalated,
                aggregate,
            } => {
                tracing::debug!(id = %event.id, origin = ?event.origin, ip = %event.ip,
                    %target, jail = %jail, "ban admitted");
                if let Some(e) = escalated {
                    self.metrics.escalated(e.rule.label());
                    tracing::info!(id = %event.id, %target, %jail, rule = e.rule.label(),
                        count = e.count, bantime = e.bantime, asked = event.bantime,
                        "ban escalated");
                } else if bantime.is_some() && event.jail == INTEL_JAIL {
                    // A source's round brings thousands: counted, and in the batch's line.
                    self.metrics.order("intel");
                    tracing::debug!(id = %event.id, %target, %jail, bantime,
                        source = ?event.origin, "intel ban applied");
                } else if bantime.is_some() {
                    self.metrics.order("ban");
                    tracing::info!(id = %event.id, %target, %jail, bantime,
                        "operator's ban applied");
                }
                if let Some(net) = aggregate {
                    self.metrics.aggregated.inc();
                    tracing::info!(%net, %jail, last = %event.ip, "prefix banned: enough \
                        of its addresses were banned within aggregate_window");
                }
            }
            Decision::Unban {
                jail,
                target,
                event,
            } => {
                tracing::debug!(id = %event.id, origin = ?event.origin, %target, jail = %jail,
                    "unban admitted");
            }
            Decision::Lift { net, control, .. } => {
                // Operators' words may hold anything: escaped.
                tracing::info!(id = %control.id, kind = control.kind.as_str(), %net,
                    operator = ?control.operator, reason = ?control.reason,
                    until = ?control.until.map(humantime::format_rfc3339_seconds),
                    "operator's order: lifting everywhere here");
                self.metrics.order(control.kind.as_str());
            }
            Decision::Ended { control, ended } => {
                self.metrics.order("revoke");
                tracing::info!(id = %control.id, ended = %ended.id,
                    kind = ended.kind.as_str(), net = ?ended.net,
                    operator = ?control.operator, reason = ?control.reason,
                    "operator's order revoked");
            }
            Decision::Keyed { control } => {
                self.metrics.order("key");
                tracing::info!(id = %control.id, host = ?control.host, key = ?control.host_key,
                    until = ?control.until.map(humantime::format_rfc3339_seconds),
                    operator = ?control.operator, reason = ?control.reason,
                    "host key record taken");
            }
            Decision::Drop { reason, detail } if reason.is_rejection() => {
                self.metrics.reject(reason.label());
                // Subjects and details may hold anything a bad host put there: escaped.
                tracing::warn!(subject = ?msg.subject, seq = ?msg.seq, reason = reason.label(),
                    detail = ?detail, "event rejected");
            }
            Decision::Drop { reason, detail } => {
                self.metrics.skip(reason.label());
                tracing::debug!(subject = ?msg.subject, seq = ?msg.seq, reason = reason.label(),
                    detail = ?detail, "event not applied");
            }
        }
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
                // A Fail2Ban that is starting answers before its jails exist: give it a while.
                Err(e) if e.is_unknown_jail() && delay < JAIL_PATIENCE => {
                    tracing::debug!(error = %e, "target jail not there (yet); retrying");
                }
                Err(e) if !e.is_retry() => {
                    tracing::error!(error = %e, ?op, "Fail2Ban refused; check the target jail");
                    return Some(0);
                }
                Err(e) => {
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

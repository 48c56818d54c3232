//! In the background: the connection and spool gauges every second, the publisher's spool
//! sent whenever it holds events and NATS answers, and the events this host published
//! confirmed by the archive (or sent again).

use crate::metrics::Metrics;
use shared_f2b::confirm::{self, CONFIRM_EVERY};
use shared_f2b::publish::Sender;
use shared_f2b::spool::Spool;
use std::time::{Duration, Instant};
use tokio_util::sync::CancellationToken;

/// How often the publisher's spool is checked.
const SPOOL_EVERY: Duration = Duration::from_secs(5);

/// Where the archive is asked which published events it holds ([`shared_f2b::confirm`]).
pub struct Asking {
    pub client: async_nats::Client,
    pub prefix: String,
    /// How old a record must be before it may be sent again ([`confirm::resend_after`]).
    pub resend_after: Duration,
}

/// Every second: the connection and spool gauges; every [`SPOOL_EVERY`], the publisher's spool
/// is sent when it holds events and NATS answers; every [`CONFIRM_EVERY`], the archive is
/// asked about the events this host published (`[publisher] confirm`), and what the stream
/// lost is sent again.
pub async fn watch(
    spool: Spool,
    sender: Sender,
    asking: Asking,
    up: std::sync::Arc<std::sync::atomic::AtomicBool>,
    metrics: Metrics,
    shutdown: CancellationToken,
) {
    let mut ticks = 0u64;
    let mut unanswered = false;
    let mut tracking = confirm::Tracking::default();
    loop {
        tokio::select! {
            _ = shutdown.cancelled() => return,
            _ = tokio::time::sleep(Duration::from_secs(1)) => {}
        }
        ticks += 1;
        let connected = up.load(std::sync::atomic::Ordering::Relaxed);
        metrics.nats_connected.set(i64::from(connected));
        let depth = spool.pending().map(|p| p.len()).unwrap_or(0);
        metrics.spool_depth.set(depth as i64);
        // Not while older events wait in the spool: a resend must not overtake them.
        if connected
            && depth == 0
            && ticks.is_multiple_of(CONFIRM_EVERY.as_secs())
            && let Some(waiting) = spool.unconfirmed()
        {
            match confirm::pass(
                waiting,
                &mut tracking,
                asking.resend_after,
                &asking.client,
                &asking.prefix,
                &sender,
            )
            .await
            {
                Ok(p) => {
                    metrics.unconfirmed.set(p.waiting as i64);
                    metrics.resent.inc_by(p.resent as u64);
                    if unanswered {
                        tracing::info!(
                            waiting = p.waiting,
                            "the archive confirms published events again"
                        );
                    }
                    unanswered = false;
                }
                Err(e) => {
                    if !unanswered {
                        tracing::warn!(error = %e, dir = %waiting.dir().display(),
                            "the archive cannot confirm published events; keeping them");
                    }
                    unanswered = true;
                }
            }
        }
        if depth == 0 || !connected || !ticks.is_multiple_of(SPOOL_EVERY.as_secs()) {
            continue;
        }
        match spool
            .drain(&sender, Instant::now() + Duration::from_secs(30))
            .await
        {
            Ok(r) if r.sent > 0 || r.set_aside > 0 => tracing::info!(
                sent = r.sent,
                remaining = r.remaining,
                set_aside = r.set_aside,
                "sent the publisher's spool"
            ),
            Ok(_) => {}
            Err(e) => tracing::warn!(spool = %spool.dir().display(), error = %e,
                "cannot read the spool"),
        }
    }
}

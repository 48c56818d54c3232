//! In the background: the connection and spool gauges every second, and the publisher's spool
//! sent whenever it holds events and NATS answers.

use crate::metrics::Metrics;
use shared_f2b::publish::Sender;
use shared_f2b::spool::Spool;
use std::time::{Duration, Instant};
use tokio_util::sync::CancellationToken;

/// How often the publisher's spool is checked.
const SPOOL_EVERY: Duration = Duration::from_secs(5);

/// Every second: the connection and spool gauges; every [`SPOOL_EVERY`], the publisher's spool
/// is sent when it holds events and NATS answers.
pub async fn watch(
    spool: Spool,
    sender: Sender,
    up: std::sync::Arc<std::sync::atomic::AtomicBool>,
    metrics: Metrics,
    shutdown: CancellationToken,
) {
    let mut ticks = 0u64;
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

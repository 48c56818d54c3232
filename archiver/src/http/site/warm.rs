//! Keeps what the feeds and the page show loaded: the snapshot, the listing of it, the chart's
//! counts, and the live events the page missed, so a request seldom waits for a load (the
//! periodic reload included).

use super::Site;
use crate::http::error::HttpError;
use std::sync::Arc;
use std::time::{Duration, Instant, SystemTime};
use tokio_util::sync::CancellationToken;

/// How often the snapshot and the page's counts are brought forward.
const WARM_EVERY: Duration = Duration::from_secs(5);

/// Loads the latest events, the snapshot and the page's counts at start, then brings them
/// forward every [`WARM_EVERY`] until `shutdown`. A failure to read the archive is logged and
/// tried again: it is not this task's end.
pub async fn keep_warm(site: Arc<Site>, shutdown: CancellationToken) {
    let started = Instant::now();
    if let Err(e) = site.fill_latest().await {
        tracing::warn!(error = %e, "site page: cannot read the latest events yet");
    }
    let mut first = true;
    loop {
        match warm(&site).await {
            Ok(()) if first => {
                tracing::info!(took = ?started.elapsed(), "feeds and site page ready");
                first = false;
            }
            Ok(()) => {}
            Err(e) => tracing::warn!(error = %e, "feeds: cannot read the archive now"),
        }
        tokio::select! {
            _ = shutdown.cancelled() => return,
            _ = tokio::time::sleep(WARM_EVERY) => {}
        }
    }
}

/// One round: the snapshot and its listing, the counts, the missed live events.
async fn warm(site: &Site) -> Result<(), HttpError> {
    let shared = &site.shared;
    let snapshot = shared.snapshot().await?;
    site.warm(&snapshot);
    drop(snapshot);
    let upto = shared.committed().await?;
    site.counts(Some(upto), SystemTime::now()).await;
    site.catch_up(upto).await?;
    Ok(())
}

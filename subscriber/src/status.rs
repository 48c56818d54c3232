//! `shared-f2b-subscriber status`: what the running daemon reports on its metrics endpoint, as a
//! table.

use shared_f2b::metrics::{Sample, scrape};
use std::fmt::Write;
use std::net::SocketAddr;

type Series = Vec<Sample>;

fn value(series: &Series, name: &str) -> f64 {
    series
        .iter()
        .filter(|(n, _, _)| n == name)
        .map(|(_, _, v)| v)
        .sum()
}

fn by_label(series: &Series, name: &str) -> String {
    let parts: Vec<String> = series
        .iter()
        .filter(|(n, _, v)| n == name && *v > 0.0)
        .map(|(_, labels, v)| {
            let label = labels.first().map(|(_, l)| l.as_str()).unwrap_or("");
            format!("{label} {v}")
        })
        .collect();
    if parts.is_empty() {
        "-".into()
    } else {
        parts.join(", ")
    }
}

/// Renders the status table from a scraped page.
pub fn render(series: &Series, now_secs: f64) -> String {
    let last = value(series, "shared_f2b_last_applied_timestamp_seconds");
    let last = if last > 0.0 {
        let t = std::time::UNIX_EPOCH + std::time::Duration::from_secs_f64(last);
        format!(
            "{} ({:.0} s ago)",
            humantime::format_rfc3339_seconds(t),
            (now_secs - last).max(0.0)
        )
    } else {
        "never".into()
    };
    let mut out = String::new();
    let rows = [
        (
            "NATS",
            if value(series, "shared_f2b_nats_connected") > 0.0 {
                "connected".to_owned()
            } else {
                "DISCONNECTED".to_owned()
            },
        ),
        ("last ban applied", last),
        (
            "events received",
            value(series, "shared_f2b_events_received_total").to_string(),
        ),
        (
            "addresses applied",
            value(series, "shared_f2b_events_applied_total").to_string(),
        ),
        (
            "rejected",
            by_label(series, "shared_f2b_events_rejected_total"),
        ),
        (
            "skipped",
            by_label(series, "shared_f2b_events_skipped_total"),
        ),
        (
            "waiting on the stream",
            value(series, "shared_f2b_consumer_pending").to_string(),
        ),
        (
            "publisher spool",
            value(series, "shared_f2b_spool_depth").to_string(),
        ),
        (
            "bans held by origin",
            by_label(series, "shared_f2b_bans_held_by_origin"),
        ),
        (
            "bans held by jail",
            by_label(series, "shared_f2b_bans_held_by_jail"),
        ),
    ];
    for (k, v) in rows {
        let _ = writeln!(out, "{k:<22} {v}");
    }
    out
}

/// Why `status` could not show the daemon's state.
#[derive(Debug, thiserror::Error)]
pub enum StatusError {
    #[error("status reads the daemon's metrics: set [subscriber] metrics_listen")]
    NoMetricsListen,
    #[error("cannot reach the subscriber at {addr}: {error} (is it running?)")]
    Unreachable {
        addr: SocketAddr,
        error: std::io::Error,
    },
}

/// Prints the running daemon's status.
pub async fn run(addr: Option<SocketAddr>) -> Result<(), StatusError> {
    let addr = addr.ok_or(StatusError::NoMetricsListen)?;
    let series = scrape(addr)
        .await
        .map_err(|error| StatusError::Unreachable { addr, error })?;
    let now = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap_or_default()
        .as_secs_f64();
    print!("{}", render(&series, now));
    Ok(())
}

//! The subscriber daemon: connect, catch up, follow the stream, and hand each batch to the
//! [`Worker`] until told to stop.

use crate::apply::Applier;
use crate::catchup;
use crate::fail2ban::Fail2Ban;
use crate::filter::Filter;
use crate::follow::{Item, cursor_key, filter_subject, follow};
use crate::limits::Limits;
use crate::metrics::Metrics;
use crate::state::State;
use crate::watch::watch;
use crate::worker::{Flow, RecentIds, Worker};
use anyhow::Context;
use futures::{FutureExt, StreamExt};
use shared_f2b::config::Config;
use shared_f2b::metrics::{Readiness, notify_ready, notify_stopping};
use shared_f2b::nats;
use shared_f2b::publish::Sender;
use shared_f2b::spool::Spool;
use std::time::{Duration, Instant};
use tokio_util::sync::CancellationToken;

/// Most messages handled as one batch.
const MAX_BATCH: usize = 2048;
/// How often the bans-held gauges are recomputed (it walks every holding).
const HELD_EVERY: Duration = Duration::from_secs(5);
/// With no events for this long while the stream has newer messages, the consumers are
/// re-created.
const STALL_AFTER: Duration = Duration::from_secs(10);

/// Runs until `shutdown` is cancelled; the batch in flight is finished first.
pub async fn run(config: Config, shutdown: CancellationToken) -> anyhow::Result<()> {
    let sub = &config.subscriber;
    let mut state = State::open(&sub.state_dir)
        .with_context(|| format!("cannot use state_dir {}", sub.state_dir.display()))?;
    tracing::info!(host = %config.host_id, holdings = state.holdings.len(),
        resumed = state.existed, "subscriber starting");

    let Some((conn, stream)) =
        nats::connect_daemon(&config.nats, &config.host_id, &shutdown).await?
    else {
        return Ok(());
    };

    let (metrics, registry) = Metrics::new();
    let ready = Readiness::default();
    let http = shared_f2b::metrics::spawn_server(sub.metrics_listen, registry, &ready, &shutdown);
    let spool_task = tokio::spawn(watch(
        Spool::new(&config.publisher.spool_dir),
        Sender::new(&conn, &config.nats, Duration::from_secs(5)),
        conn.up.clone(),
        metrics.clone(),
        shutdown.clone(),
    ));

    let filters: Vec<String> = if sub.jails.iter().any(|j| j == "*") {
        vec![filter_subject(&config.nats.subject_prefix, "*")]
    } else {
        sub.jails
            .iter()
            .map(|j| filter_subject(&config.nats.subject_prefix, j))
            .collect()
    };
    tracing::info!(?filters, apply = ?sub.apply, "following");
    let mut worker = Worker {
        config: &config,
        filter: Filter {
            prefix: config.nats.subject_prefix.clone(),
            host_id: config.host_id.clone(),
            include_own: sub.include_own,
            allowlist: sub.allowlist.clone(),
        },
        applier: Applier::new(
            sub.apply,
            Fail2Ban::new(&sub.fail2ban_socket),
            sub.log_file.clone(),
        ),
        metrics: metrics.clone(),
        held_changed: true,
        limits: Limits::new(sub),
        recent: RecentIds::default(),
        shutdown: shutdown.clone(),
    };
    let keys: Vec<String> = filters
        .iter()
        .map(|f| cursor_key(&config.nats.stream, f))
        .collect();
    if !catchup::run(&mut worker, &mut state, &conn.client, &stream, &keys).await? {
        return Ok(());
    }
    // The first connect stored a permit; only later reconnects should rebuild the consumers.
    let _ = conn.connected.notified().now_or_never();
    let name = &config.nats.stream;
    let Some(mut events) = open_events(&stream, name, &filters, &state, &shutdown).await else {
        return Ok(());
    };
    ready.set(true);
    notify_ready();
    let mut held_tick = tokio::time::interval(HELD_EVERY);
    let mut stall_tick = tokio::time::interval(STALL_AFTER);
    let mut last_batch = Instant::now();
    loop {
        let batch = tokio::select! {
            _ = shutdown.cancelled() => break,
            // A restarted server has forgotten our ephemeral consumers: resume from the state.
            _ = conn.connected.notified() => None,
            _ = held_tick.tick() => {
                worker.publish_held(&state);
                continue;
            }
            _ = stall_tick.tick() => {
                if last_batch.elapsed() < STALL_AFTER || !stream_moved_on(&stream, &state, &keys).await {
                    continue;
                }
                // A consumer can lose its server (a cluster node going away) without telling
                // the client: the stream moved on and nothing came, so resume from the state.
                tracing::debug!("no events while the stream moved on; re-creating the consumers");
                None
            }
            batch = events.next() => batch,
        };
        let flow = match batch {
            Some(batch) => {
                last_batch = Instant::now();
                worker.handle(batch, &mut state).await?
            }
            None => Flow::Reopen,
        };
        match flow {
            Flow::Continue => {}
            Flow::Stop => break,
            Flow::Reopen => match open_events(&stream, name, &filters, &state, &shutdown).await {
                Some(reopened) => events = reopened,
                None => break,
            },
        }
    }
    notify_stopping();
    ready.set(false);
    worker.applier.close().await;
    let _ = spool_task.await;
    if let Some(http) = http {
        let _ = http.await;
    }
    let (by_origin, by_jail) = state.holdings.counts();
    tracing::info!(
        received = metrics.received.get(),
        applied = metrics.applied.get(),
        ?by_origin,
        ?by_jail,
        "subscriber stopped"
    );
    Ok(())
}

/// Whether the stream holds messages past every cursor (with jail filters this may be
/// messages of other jails: re-creating the consumers is then merely redundant).
async fn stream_moved_on(
    stream: &async_nats::jetstream::stream::Stream,
    state: &State,
    keys: &[String],
) -> bool {
    let mut stream = stream.clone();
    let Ok(info) = stream.info().await else {
        return false;
    };
    let applied = keys
        .iter()
        .filter_map(|k| state.cursor(k))
        .max()
        .unwrap_or(0);
    info.state.last_sequence > applied
}

type Events = futures::stream::ReadyChunks<futures::stream::BoxStream<'static, Item>>;

/// Opens the consumers at the state's cursors, retrying until it works; `None` on shutdown.
async fn open_events(
    stream: &async_nats::jetstream::stream::Stream,
    name: &str,
    filters: &[String],
    state: &State,
    shutdown: &CancellationToken,
) -> Option<Events> {
    loop {
        match follow(stream, name, filters, |k| state.cursor(k)).await {
            Ok(events) => return Some(events.ready_chunks(MAX_BATCH)),
            Err(e) => tracing::warn!(error = %e, "cannot follow the stream yet; retrying"),
        }
        tokio::select! {
            _ = shutdown.cancelled() => return None,
            _ = tokio::time::sleep(Duration::from_secs(1)) => {}
        }
    }
}

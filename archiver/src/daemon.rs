//! The archiver daemon: migrate, then archive the stream, answer replay requests and apply
//! retention until told to stop.

use crate::db::Db;
use crate::metrics::Metrics;
use crate::{consumer, ingest, serve, store};
use anyhow::Context;
use shared_f2b::Config;
use shared_f2b::metrics::{Readiness, notify_ready, notify_stopping};
use shared_f2b::nats;
use std::time::{Duration, SystemTime};
use tokio_util::sync::CancellationToken;

/// How often the retention job runs.
const RETENTION_EVERY: Duration = Duration::from_secs(3600);

/// Connects to the database, retrying while it is down; `None` on shutdown.
pub async fn connect_db(url: &str, shutdown: &CancellationToken) -> Option<Db> {
    loop {
        match Db::connect(url).await {
            Ok(db) => return Some(db),
            Err(e) => tracing::error!(error = %e, "database unavailable; retrying in 5 s"),
        }
        tokio::select! {
            _ = shutdown.cancelled() => return None,
            _ = tokio::time::sleep(Duration::from_secs(5)) => {}
        }
    }
}

/// Runs until `shutdown` is cancelled.
pub async fn run(config: Config, shutdown: CancellationToken) -> anyhow::Result<()> {
    let archiver = &config.archiver;
    let Some(db) = connect_db(archiver.database_url.expose(), &shutdown).await else {
        return Ok(());
    };
    if archiver.auto_migrate {
        db.migrate()
            .await
            .context("cannot migrate the archive schema (or set auto_migrate = false and run `shared-f2b-archiver migrate` as a user that may)")?;
    }
    let Some((conn, stream)) =
        nats::connect_daemon(&config.nats, &config.host_id, &shutdown).await?
    else {
        return Ok(());
    };
    let (metrics, registry) = Metrics::new();
    // The consumer must exist (and be as it must) before the first replay asks for its ack floor.
    stream
        .get_or_create_consumer(
            &archiver.archiver_consumer,
            consumer::config(&archiver.archiver_consumer),
        )
        .await
        .map_err(|e| {
            anyhow::anyhow!(
                "cannot create the consumer {}: {e}",
                archiver.archiver_consumer
            )
        })?;
    consumer::check(&stream, &archiver.archiver_consumer, 0, &metrics)
        .await
        .map_err(anyhow::Error::msg)?;
    tracing::info!(backend = ?db.backend, stream = %config.nats.stream,
        consumer = %archiver.archiver_consumer, "archiver running");

    let ready = Readiness::default();
    let http =
        shared_f2b::metrics::spawn_server(archiver.metrics_listen, registry, &ready, &shutdown);
    let gauges = tokio::spawn(watch_connection(
        conn.up.clone(),
        metrics.clone(),
        shutdown.clone(),
    ));
    let prefix = config.nats.subject_prefix.clone();
    let consumer = archiver.archiver_consumer.clone();
    let keeper = tokio::spawn(consumer::keep(
        stream.clone(),
        consumer.clone(),
        metrics.clone(),
        shutdown.clone(),
    ));
    let ingest = tokio::spawn(ingest::run(
        db.clone(),
        stream.clone(),
        prefix.clone(),
        consumer.clone(),
        metrics.clone(),
        shutdown.clone(),
    ));
    let serve = tokio::spawn(serve::run(
        db.clone(),
        conn.client.clone(),
        stream,
        prefix,
        consumer,
        metrics,
        shutdown.clone(),
    ));
    ready.set(true);
    notify_ready();
    let retention = archiver
        .retention
        .map(|keep| tokio::spawn(retain(db.clone(), keep, shutdown.clone())));

    let _ = ingest.await;
    let _ = keeper.await;
    serve.await?.context("replay service failed")?;
    if let Some(r) = retention {
        let _ = r.await;
    }
    notify_stopping();
    let _ = gauges.await;
    if let Some(http) = http {
        let _ = http.await;
    }
    tracing::info!("archiver stopped");
    Ok(())
}

/// Keeps the connection gauge current.
async fn watch_connection(
    up: std::sync::Arc<std::sync::atomic::AtomicBool>,
    metrics: Metrics,
    shutdown: CancellationToken,
) {
    loop {
        metrics
            .nats_connected
            .set(i64::from(up.load(std::sync::atomic::Ordering::Relaxed)));
        tokio::select! {
            _ = shutdown.cancelled() => return,
            _ = tokio::time::sleep(Duration::from_secs(1)) => {}
        }
    }
}

/// Deletes rows older than `keep`, at start and then hourly.
async fn retain(db: Db, keep: Duration, shutdown: CancellationToken) {
    loop {
        let cutoff = SystemTime::now() - keep;
        match store::delete_older_than(&db, cutoff).await {
            Ok(0) => {}
            Ok(n) => tracing::info!(deleted = n, "retention: old events deleted"),
            Err(e) => tracing::warn!(error = %e, "retention run failed; trying again later"),
        }
        tokio::select! {
            _ = shutdown.cancelled() => return,
            _ = tokio::time::sleep(RETENTION_EVERY) => {}
        }
    }
}

//! The archiver daemon: migrate, then archive the stream, answer replay requests and apply
//! retention until told to stop.

use crate::db::{Db, DbError};
use crate::legacy::api::Api;
use crate::legacy::api::clients::Clients;
use crate::legacy::bridge::Bridge;
use crate::metrics::Metrics;
use crate::rewind::Rewind;
use crate::{catchup_service, consumer, http, ingest, relay, store};
use shared_f2b::Config;
use shared_f2b::health::{self, Check, Health};
use shared_f2b::nats;
use shared_f2b::tasks::{TaskEnded, Tasks};
use shared_f2b_serve::{notify_ready, notify_stopping, spawn_server};
use std::sync::Arc;
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

/// Why the archiver stopped on its own.
#[derive(Debug, thiserror::Error)]
pub enum DaemonError {
    #[error(
        "cannot migrate the archive schema (or set auto_migrate = false and run \
         `shared-f2b-archiver migrate` as a user that may): {0}"
    )]
    Migrate(DbError),
    #[error(transparent)]
    Connect(#[from] nats::ConnectError),
    #[error("cannot create the consumer {name}: {error}")]
    CreateConsumer {
        name: String,
        error: async_nats::jetstream::stream::ConsumerError,
    },
    #[error(transparent)]
    Consumer(#[from] consumer::ConsumerError),
    #[error("cannot subscribe to catch-up requests: {0}")]
    CatchupRequests(async_nats::SubscribeError),
    #[error("cannot subscribe to the live events: {0}")]
    LiveEvents(async_nats::Error),
    #[error(transparent)]
    LegacyApi(crate::legacy::api::clients::ClientsError),
    #[error(transparent)]
    Bridge(crate::legacy::bridge::BridgeError),
    #[error("federation: {0}")]
    Federation(shared_f2b::config::Invalid),
    #[error("intake: [trust] intake_seed_file: {0}")]
    IntakeKey(shared_f2b::signing::KeyError),
    #[error("cannot read the stream mark: {0}")]
    Rewind(#[from] crate::rewind::RewindError),
    #[error(transparent)]
    PartStopped(#[from] TaskEnded),
}

/// Runs until `shutdown` is cancelled. However it ends, the epilogue runs: systemd hears
/// STOPPING and every task is joined.
pub async fn run(config: Config, shutdown: CancellationToken) -> Result<(), DaemonError> {
    // `/healthz` answers from the start: 503 (`starting`, and what is away) until running.
    let (metrics, registry) = Metrics::new();
    let health = Health::default();
    let mut tasks = Tasks::default();
    spawn_server(
        &mut tasks,
        config.archiver.metrics_listen,
        registry,
        &health,
        &shutdown,
    );
    let result = serve(&config, &shutdown, &metrics, &health, &mut tasks).await;
    shutdown.cancel();
    notify_stopping();
    tasks.join().await;
    match &result {
        Err(DaemonError::PartStopped(ended)) => {
            tracing::error!(error = %ended, "archiver stopping: a part of it stopped");
        }
        Err(_) => {}
        Ok(()) => tracing::info!("archiver stopped"),
    }
    result
}

/// Starts, spawns every part as a task of `tasks`, and waits for shutdown or a part's end.
async fn serve(
    config: &Config,
    shutdown: &CancellationToken,
    metrics: &Metrics,
    health: &Health,
    tasks: &mut Tasks,
) -> Result<(), DaemonError> {
    let database = health.check("database");
    // Until it runs, a task that dies (e.g. the listener's port is taken) ends it too.
    let started = tokio::select! {
        started = start(config, shutdown, metrics, health, &database) => started?,
        ended = tasks.ended() => return Err(ended.into()),
    };
    let Some(connected) = started else {
        return Ok(());
    };
    spawn_parts(connected, config, shutdown, metrics, &database, tasks).await?;
    health.started(true);
    notify_ready();

    tokio::select! {
        _ = shutdown.cancelled() => Ok(()),
        // Tasks end when told to stop; before that, an end is a failure.
        ended = tasks.ended() => match shutdown.is_cancelled() {
            true => Ok(()),
            false => Err(ended.into()),
        },
    }
}

/// Spawns the running archiver's parts, each a task of `tasks`: the database probe, the
/// connection gauge, the consumer keeper, ingest, the catch-up service, the HTTP side and
/// retention.
async fn spawn_parts(
    Connected { db, conn, stream }: Connected,
    config: &Config,
    shutdown: &CancellationToken,
    metrics: &Metrics,
    database: &Check,
    tasks: &mut Tasks,
) -> Result<(), DaemonError> {
    let archiver = &config.archiver;
    spawn_watchers(&db, &conn, database, metrics, tasks, shutdown);
    let prefix = config.nats.subject_prefix.clone();
    let consumer = archiver.archiver_consumer.clone();
    tasks.spawn(
        "consumer keeper",
        consumer::keep(
            stream.clone(),
            consumer.clone(),
            metrics.clone(),
            shutdown.clone(),
        ),
    );
    let rewind = Rewind::load(db.clone(), stream.clone(), prefix.clone(), metrics.clone()).await?;
    tasks.spawn("rewind watch", rewind.clone().watch(shutdown.clone()));
    tasks.spawn(
        "ingest",
        ingest::run(
            db.clone(),
            stream.clone(),
            prefix.clone(),
            consumer.clone(),
            rewind,
            metrics.clone(),
            shutdown.clone(),
        ),
    );
    let requests = catchup_service::listen(&conn.client, &prefix)
        .await
        .map_err(DaemonError::CatchupRequests)?;
    tasks.spawn(
        "catch-up service",
        catchup_service::run(
            requests,
            db.clone(),
            conn.client.clone(),
            stream.clone(),
            prefix,
            consumer,
            metrics.clone(),
            shutdown.clone(),
        ),
    );
    // The old hosts of the original Shared Fail2Ban, each logged in as itself.
    let old_hosts = match &archiver.legacy_api {
        Some(api) => Some(Arc::new(
            Clients::connect(api)
                .await
                .map_err(DaemonError::LegacyApi)?,
        )),
        None => None,
    };
    if let (Some(legacy), Some(clients)) = (&archiver.legacy, &old_hosts) {
        let bridge = Bridge::new(
            legacy,
            db.clone(),
            clients.clone(),
            stream.clone(),
            archiver.archiver_consumer.clone(),
            crate::blocklist::never_nets(config).await,
        )
        .map_err(DaemonError::Bridge)?;
        tasks.spawn("legacy bridge", bridge.run(legacy.poll, shutdown.clone()));
    }
    if let Some(addr) = archiver.http_listen {
        let live = http::site::live::subscribe(&conn.client, &config.nats.subject_prefix)
            .await
            .map_err(DaemonError::LiveEvents)?;
        let sources = http::Sources {
            db: db.clone(),
            live,
            stream: stream.clone(),
            metrics: metrics.clone(),
            parts: http::shared::Parts {
                database: database.clone(),
                nats: conn.up.clone(),
            },
        };
        let api = match &old_hosts {
            Some(clients) => Some(Arc::new(Api::new(
                clients.clone(),
                db.clone(),
                crate::blocklist::never_nets(config).await,
            ))),
            None => None,
        };
        http::spawn(tasks, addr, sources, api, config, shutdown).await;
    }
    relay::spawn(tasks, config, &db, &conn.client, shutdown).map_err(DaemonError::Federation)?;
    crate::intake::spawn(tasks, config, &db, &conn.client, shutdown)
        .await
        .map_err(DaemonError::IntakeKey)?;
    if let Some(keep) = archiver.retention {
        tasks.spawn("retention", retain(db.clone(), keep, shutdown.clone()));
    }
    Ok(())
}

/// The database probe (health) and the connection gauge.
fn spawn_watchers(
    db: &Db,
    conn: &nats::Connection,
    database: &Check,
    metrics: &Metrics,
    tasks: &mut Tasks,
    shutdown: &CancellationToken,
) {
    let pinged = db.clone();
    tasks.spawn(
        "database probe",
        health::keep_probing(
            "database",
            database.clone(),
            move || {
                let db = pinged.clone();
                async move { db.ping().await }
            },
            shutdown.clone(),
        ),
    );
    tasks.spawn(
        "connection gauge",
        watch_connection(conn.up.clone(), metrics.clone(), shutdown.clone()),
    );
}

/// What the archiver works with once started.
struct Connected {
    db: Db,
    conn: nats::Connection,
    stream: async_nats::jetstream::stream::Stream,
}

/// Connects to the database (migrating it) and NATS, and makes sure of the durable consumer;
/// `None` on shutdown meanwhile.
async fn start(
    config: &Config,
    shutdown: &CancellationToken,
    metrics: &Metrics,
    health: &Health,
    database: &Check,
) -> Result<Option<Connected>, DaemonError> {
    let archiver = &config.archiver;
    let Some(db) = connect_db(archiver.database_url.expose(), shutdown).await else {
        return Ok(None);
    };
    database.set(true);
    if archiver.auto_migrate {
        db.migrate().await.map_err(DaemonError::Migrate)?;
    }
    let Some((conn, stream)) =
        nats::connect_daemon(&config.nats, &config.host_id, shutdown).await?
    else {
        return Ok(None);
    };
    health.watch("nats", conn.up.clone());
    // The consumer must exist (and be as it must) before the first replay asks for its ack floor.
    stream
        .get_or_create_consumer(
            &archiver.archiver_consumer,
            consumer::config(&archiver.archiver_consumer),
        )
        .await
        .map_err(|error| DaemonError::CreateConsumer {
            name: archiver.archiver_consumer.clone(),
            error,
        })?;
    consumer::check(&stream, &archiver.archiver_consumer, 0, metrics).await?;
    tracing::info!(backend = ?db.backend, stream = %config.nats.stream,
        consumer = %archiver.archiver_consumer, "archiver running");
    Ok(Some(Connected { db, conn, stream }))
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

//! The archiver's read-only HTTP listener (`[archiver] http_listen`, off by default): the
//! blocklist feeds ([`feeds`]) and the site page ([`site`]), siblings that read one shared
//! view of the archive ([`shared`]) and do not know each other. The data routes of both sit
//! behind one token layer ([`auth`]); every request's parameters are read by [`params`];
//! every failure is one [`error::HttpError`]. With `[archiver.legacy_api]`, the original's API
//! ([`crate::legacy::api`]) is served beside them.

pub mod auth;
pub mod error;
pub mod feeds;
pub mod params;
pub mod shared;
pub mod site;

use crate::db::Db;
use crate::metrics::Metrics;
use async_nats::jetstream::stream::Stream;
use axum::response::Response;
use feeds::Feeds;
use shared::{Parts, Shared};
use shared_f2b::Config;
use shared_f2b::tasks::Tasks;
use site::Site;
use std::net::SocketAddr;
use std::sync::Arc;
use tokio_util::sync::CancellationToken;

/// What the listener serves from.
pub struct Sources {
    pub db: Db,
    /// The site page's subscription to the live events ([`site::live::subscribe`]).
    pub live: async_nats::Subscriber,
    pub stream: Stream,
    pub metrics: Metrics,
    /// What the site page's health panel reads.
    pub parts: Parts,
}

/// Starts the HTTP side on `addr` with the config's `[archiver]` settings, each long-running
/// part a task of its own under `tasks`: the listener (`feeds`), the page's live events
/// (`live events`) and the warm-up (`warm-up`).
pub async fn spawn(
    tasks: &mut Tasks,
    addr: SocketAddr,
    sources: Sources,
    legacy: Option<Arc<crate::legacy::api::Api>>,
    config: &Config,
    shutdown: &CancellationToken,
) {
    let archiver = &config.archiver;
    let shared = Arc::new(Shared::new(
        sources.db,
        sources.stream,
        archiver.archiver_consumer.clone(),
        crate::blocklist::never_nets(config).await,
        archiver.feed_max_bantime,
        sources.parts,
        sources.metrics,
    ));
    let feeds = Arc::new(Feeds::new(shared.clone(), archiver.public_url.clone()));
    let site = Arc::new(Site::new(shared.clone(), shutdown.clone()));
    let tokens = Arc::new(auth::Tokens::new(
        archiver.http_tokens.iter().map(|t| t.expose()),
    ));
    let data = feeds::routes(feeds)
        .merge(site::data_routes(site.clone()))
        .route_layer(axum::middleware::from_fn_with_state(tokens, auth::require));
    let counted = shared.clone();
    let mut app = site::page_routes().merge(data);
    // The old API checks its own tokens (X-TOKEN) and addresses.
    if let Some(api) = legacy {
        app = app.merge(crate::legacy::api::routes(api));
    }
    let app = app.layer(axum::middleware::map_response(move |r: Response| {
        counted.metrics.count_feed(r.status().as_u16());
        std::future::ready(r)
    }));
    tasks.spawn("feeds", serve(addr, app, shutdown.clone()));
    tasks.spawn(
        "live events",
        site.live.clone().follow(
            sources.live,
            config.nats.subject_prefix.clone(),
            config.nats.stream.clone(),
            shutdown.clone(),
        ),
    );
    tasks.spawn("warm-up", site::warm::keep_warm(site, shutdown.clone()));
}

/// Serves `app` on `addr` until `shutdown`.
async fn serve(
    addr: SocketAddr,
    app: axum::Router,
    shutdown: CancellationToken,
) -> std::io::Result<()> {
    let listener = tokio::net::TcpListener::bind(addr)
        .await
        .map_err(|e| std::io::Error::new(e.kind(), format!("cannot listen on {addr}: {e}")))?;
    tracing::info!(%addr, "serving the feeds (/v1/blocklist, /v1/history) and the site page (/)");
    shared_f2b_serve::http::serve(listener, app, shutdown).await
}

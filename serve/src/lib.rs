//! What the daemons serve over HTTP, apart from the one-shot publisher (which so builds
//! without an HTTP server): [`http`], the guarded HTTP/1 listener every listener runs on (the
//! archiver's feeds and site page too); [`spawn_server`], `/metrics` and `/healthz` on
//! `metrics_listen`; and systemd readiness ([`notify_ready`], [`notify_stopping`]).

pub mod http;

use prometheus_client::encoding::text::encode;
use prometheus_client::registry::Registry;
use shared_f2b::health::Health;
use shared_f2b::tasks::Tasks;
use std::net::SocketAddr;
use std::sync::Arc;
use tokio_util::sync::CancellationToken;

/// Runs [`serve`] as the supervised task `http` when `listen` is set.
pub fn spawn_server(
    tasks: &mut Tasks,
    listen: Option<SocketAddr>,
    registry: Arc<Registry>,
    health: &Health,
    shutdown: &CancellationToken,
) {
    if let Some(addr) = listen {
        tasks.spawn(
            "http",
            serve(addr, registry, health.clone(), shutdown.clone()),
        );
    }
}

/// Serves `/metrics` (Prometheus text) and `/healthz` (200 when started and every component
/// answers, else 503; the body names each component) on `addr` until `shutdown`.
pub async fn serve(
    addr: SocketAddr,
    registry: Arc<Registry>,
    health: Health,
    shutdown: CancellationToken,
) -> std::io::Result<()> {
    use axum::http::{StatusCode, header};
    use axum::routing::get;
    let metrics = get(move || {
        let registry = registry.clone();
        async move {
            let mut body = String::new();
            match encode(&mut body, &registry) {
                Ok(()) => (
                    StatusCode::OK,
                    [(
                        header::CONTENT_TYPE,
                        "text/plain; version=0.0.4; charset=utf-8",
                    )],
                    body,
                ),
                Err(_) => (
                    StatusCode::INTERNAL_SERVER_ERROR,
                    [(header::CONTENT_TYPE, "text/plain; charset=utf-8")],
                    "encoding failed\n".to_owned(),
                ),
            }
        }
    });
    let health = get(move || {
        let report = health.report();
        async move {
            let code = if report.healthy {
                StatusCode::OK
            } else {
                StatusCode::SERVICE_UNAVAILABLE
            };
            (code, report.text)
        }
    });
    let app = axum::Router::new()
        .route("/metrics", metrics)
        .route("/healthz", health);
    let listener = tokio::net::TcpListener::bind(addr)
        .await
        .map_err(|e| std::io::Error::new(e.kind(), format!("cannot listen on {addr}: {e}")))?;
    tracing::info!(%addr, "serving /metrics and /healthz");
    http::serve(listener, app, shutdown).await
}

/// Tells systemd (`Type=notify`) the daemon is ready; a no-op outside systemd.
pub fn notify_ready() {
    if let Err(e) = sd_notify::notify(&[sd_notify::NotifyState::Ready]) {
        tracing::warn!(error = %e, "cannot notify systemd");
    }
}

/// Tells systemd the daemon is stopping.
pub fn notify_stopping() {
    let _ = sd_notify::notify(&[sd_notify::NotifyState::Stopping]);
}

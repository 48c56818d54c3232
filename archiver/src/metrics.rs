//! What the archiver counts, exposed on `metrics_listen`.

use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::family::Family;
use prometheus_client::metrics::gauge::Gauge;
use prometheus_client::metrics::histogram::Histogram;
use prometheus_client::registry::Registry;
use shared_f2b::metrics::{Labels, label, latency_histogram, size_histogram};
use std::sync::Arc;

/// The archiver's series (all prefixed `shared_f2b_`).
#[derive(Clone)]
pub struct Metrics {
    pub archived: Counter,
    pub duplicates: Counter,
    pub rejects: Counter,
    pub batch_size: Histogram,
    pub batch_seconds: Histogram,
    pub db_errors: Counter,
    pub db_up: Gauge,
    pub consumer_pending: Gauge,
    pub nats_connected: Gauge,
    pub replay_requests: Counter,
    pub replay_refused: Counter,
    pub consumer_repairs: Counter,
    pub stream_seals: Counter,
    pub feed_requests: Family<Labels, Counter>,
}

impl Metrics {
    /// New series and the registry that exposes them.
    pub fn new() -> (Metrics, Arc<Registry>) {
        let m = Metrics {
            archived: Counter::default(),
            duplicates: Counter::default(),
            rejects: Counter::default(),
            batch_size: size_histogram(),
            batch_seconds: latency_histogram(),
            db_errors: Counter::default(),
            db_up: Gauge::default(),
            consumer_pending: Gauge::default(),
            nats_connected: Gauge::default(),
            replay_requests: Counter::default(),
            replay_refused: Counter::default(),
            consumer_repairs: Counter::default(),
            stream_seals: Counter::default(),
            feed_requests: Family::default(),
        };
        let mut r = Registry::with_prefix("shared_f2b");
        r.register("archived_events", "Events newly stored", m.archived.clone());
        r.register(
            "archive_duplicates",
            "Events already stored (same id)",
            m.duplicates.clone(),
        );
        r.register(
            "archive_rejects",
            "Messages stored in f2b_rejects",
            m.rejects.clone(),
        );
        r.register(
            "db_batch_size",
            "Messages per database batch",
            m.batch_size.clone(),
        );
        r.register(
            "db_batch_seconds",
            "Time to store and commit one batch",
            m.batch_seconds.clone(),
        );
        r.register(
            "db_errors",
            "Failed batch writes (retried)",
            m.db_errors.clone(),
        );
        r.register(
            "db_up",
            "1 while the last database write succeeded",
            m.db_up.clone(),
        );
        r.register(
            "consumer_pending",
            "Stream messages not yet delivered to the archivers",
            m.consumer_pending.clone(),
        );
        r.register(
            "nats_connected",
            "1 while connected to NATS",
            m.nats_connected.clone(),
        );
        r.register(
            "replay_requests",
            "Replay pages answered",
            m.replay_requests.clone(),
        );
        r.register(
            "replay_refused",
            "Catch-up requests not answered: their reply subject is not an inbox",
            m.replay_refused.clone(),
        );
        r.register(
            "consumer_repairs",
            "Times the archiver's durable consumer was found changed or missing and restored",
            m.consumer_repairs.clone(),
        );
        r.register(
            "stream_seals",
            "Times the stream went back (a power cut before it synced) and was sealed",
            m.stream_seals.clone(),
        );
        r.register(
            "feed_requests",
            "Requests to http_listen, by status code",
            m.feed_requests.clone(),
        );
        (m, Arc::new(r))
    }

    /// Counts a request to the feeds.
    pub fn count_feed(&self, code: u16) {
        self.feed_requests
            .get_or_create(&label("code", &code.to_string()))
            .inc();
    }
}

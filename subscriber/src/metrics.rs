//! What the subscriber counts, exposed on `metrics_listen` and read back by `status`.

use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::family::Family;
use prometheus_client::metrics::gauge::Gauge;
use prometheus_client::metrics::histogram::Histogram;
use prometheus_client::registry::Registry;
use shared_f2b::metrics::{GaugeFamily, Labels, label, latency_histogram};
use std::collections::BTreeMap;
use std::sync::Arc;
use std::sync::atomic::AtomicU64;

/// The subscriber's series (all prefixed `shared_f2b_`).
#[derive(Clone)]
pub struct Metrics {
    pub received: Counter,
    pub applied: Counter,
    pub rejected: Family<Labels, Counter>,
    pub skipped: Family<Labels, Counter>,
    pub apply_seconds: Histogram,
    pub event_latency_seconds: Histogram,
    pub spool_depth: Gauge,
    pub unconfirmed: Gauge,
    pub resent: Counter,
    pub nats_connected: Gauge,
    pub consumer_pending: Gauge,
    pub last_applied_seconds: Gauge<f64, AtomicU64>,
    pub held_by_origin: GaugeFamily,
    pub held_by_jail: GaugeFamily,
    pub escalations: Family<Labels, Counter>,
    pub aggregated: Counter,
    pub orders: Family<Labels, Counter>,
}

impl Metrics {
    /// New series and the registry that exposes them.
    pub fn new() -> (Metrics, Arc<Registry>) {
        let m = Metrics {
            received: Counter::default(),
            applied: Counter::default(),
            rejected: Family::default(),
            skipped: Family::default(),
            apply_seconds: latency_histogram(),
            event_latency_seconds: latency_histogram(),
            spool_depth: Gauge::default(),
            unconfirmed: Gauge::default(),
            resent: Counter::default(),
            nats_connected: Gauge::default(),
            consumer_pending: Gauge::default(),
            last_applied_seconds: Gauge::default(),
            held_by_origin: GaugeFamily::default(),
            held_by_jail: GaugeFamily::default(),
            escalations: Family::default(),
            aggregated: Counter::default(),
            orders: Family::default(),
        };
        let mut r = Registry::with_prefix("shared_f2b");
        r.register(
            "events_received",
            "Events read from the stream or a replay",
            m.received.clone(),
        );
        r.register(
            "events_applied",
            "Addresses handed to Fail2Ban",
            m.applied.clone(),
        );
        r.register(
            "events_rejected",
            "Events refused, by reason (rate_limited included)",
            m.rejected.clone(),
        );
        r.register(
            "events_skipped",
            "Valid events not needed here, by reason",
            m.skipped.clone(),
        );
        r.register(
            "apply_seconds",
            "Time of one Fail2Ban command",
            m.apply_seconds.clone(),
        );
        r.register(
            "event_latency_seconds",
            "Event time to applied",
            m.event_latency_seconds.clone(),
        );
        r.register(
            "spool_depth",
            "Events waiting in the publisher's spool",
            m.spool_depth.clone(),
        );
        r.register(
            "unconfirmed_events",
            "Events this host published that the archive has not confirmed yet",
            m.unconfirmed.clone(),
        );
        r.register(
            "events_resent",
            "Published events the stream lost (the archive lacked them) sent again",
            m.resent.clone(),
        );
        r.register(
            "nats_connected",
            "1 while connected to NATS",
            m.nats_connected.clone(),
        );
        r.register(
            "consumer_pending",
            "Stream messages not yet delivered to this host",
            m.consumer_pending.clone(),
        );
        r.register(
            "last_applied_timestamp_seconds",
            "When the last ban was applied",
            m.last_applied_seconds.clone(),
        );
        r.register(
            "bans_held_by_origin",
            "Remote bans held, per origin",
            m.held_by_origin.clone(),
        );
        r.register(
            "bans_held_by_jail",
            "Remote bans held, per local jail",
            m.held_by_jail.clone(),
        );
        r.register(
            "escalations",
            "Bans given a longer bantime, by rule (reporters, repeat)",
            m.escalations.clone(),
        );
        r.register(
            "prefixes_aggregated",
            "Prefixes banned because enough of their addresses were",
            m.aggregated.clone(),
        );
        r.register(
            "operator_orders",
            "Operators' control events enacted, by kind",
            m.orders.clone(),
        );
        (m, Arc::new(r))
    }

    /// Counts an escalation.
    pub fn escalated(&self, rule: &str) {
        self.escalations.get_or_create(&label("rule", rule)).inc();
    }

    /// Counts an operator's order enacted.
    pub fn order(&self, kind: &str) {
        self.orders.get_or_create(&label("kind", kind)).inc();
    }

    /// Counts a rejection.
    pub fn reject(&self, reason: &str) {
        self.rejected.get_or_create(&label("reason", reason)).inc();
    }

    /// Counts a skip.
    pub fn skip(&self, reason: &str) {
        self.skipped.get_or_create(&label("reason", reason)).inc();
    }

    /// Publishes the holdings per origin and jail.
    pub fn set_held(&self, by_origin: &BTreeMap<String, usize>, by_jail: &BTreeMap<String, usize>) {
        self.held_by_origin.clear();
        self.held_by_jail.clear();
        for (origin, n) in by_origin {
            self.held_by_origin
                .get_or_create(&label("origin", origin))
                .set(*n as i64);
        }
        for (jail, n) in by_jail {
            self.held_by_jail
                .get_or_create(&label("jail", jail))
                .set(*n as i64);
        }
    }
}

//! What `/healthz` answers: the daemon has started, and every component it depends on (NATS,
//! the database, Fail2Ban's socket) answers now. Each component is a [`Check`] that the task
//! watching it keeps current; `/healthz` reads them at each request.

use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;
use tokio_util::sync::CancellationToken;

/// How often a probe looks at its component.
pub const PROBE_EVERY: Duration = Duration::from_secs(2);

/// The daemon's health: started, and the state of each named component.
#[derive(Clone, Default)]
pub struct Health {
    started: Arc<AtomicBool>,
    checks: Arc<Mutex<Vec<Named>>>,
}

/// A component's name and its up flag.
type Named = (&'static str, Arc<AtomicBool>);

/// One component's state, kept current by whoever watches it.
#[derive(Clone)]
pub struct Check(Arc<AtomicBool>);

impl Check {
    /// Records whether the component answers.
    pub fn set(&self, up: bool) {
        self.0.store(up, Ordering::Relaxed);
    }

    /// Whether it answered last time it was looked at.
    pub fn get(&self) -> bool {
        self.0.load(Ordering::Relaxed)
    }
}

/// What `/healthz` reports.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Report {
    /// Started and every component up.
    pub healthy: bool,
    /// One line per component, and `starting` before start-up finished.
    pub text: String,
}

impl Health {
    /// A component named `name` (down until set).
    pub fn check(&self, name: &'static str) -> Check {
        self.watch(name, Arc::new(AtomicBool::new(false)))
    }

    /// A component whose state another part already keeps in `flag` (e.g. the NATS
    /// connection's `up`).
    pub fn watch(&self, name: &'static str, flag: Arc<AtomicBool>) -> Check {
        self.checks
            .lock()
            .expect("health lock")
            .push((name, flag.clone()));
        Check(flag)
    }

    /// Start-up finished (subscribed, first catch-up tried; consumers open).
    pub fn started(&self, started: bool) {
        self.started.store(started, Ordering::Relaxed);
    }

    /// Whether the daemon is started and every component is up.
    pub fn report(&self) -> Report {
        let started = self.started.load(Ordering::Relaxed);
        let mut healthy = started;
        let mut text = String::new();
        if !started {
            text.push_str("starting\n");
        }
        for (name, flag) in self.checks.lock().expect("health lock").iter() {
            let up = flag.load(Ordering::Relaxed);
            healthy &= up;
            text.push_str(name);
            text.push_str(if up { ": ok\n" } else { ": unavailable\n" });
        }
        Report { healthy, text }
    }
}

/// Failed probes in a row before a component that was up counts as away (one slow answer on a
/// busy database or Fail2Ban is not an outage).
pub const DOWN_AFTER: u32 = 2;

/// Sets `check` every [`PROBE_EVERY`] from `probe` (which should give up within that time)
/// until `shutdown`: up at the first success, away after [`DOWN_AFTER`] failures in a row (or
/// at once if it never answered); logs when it goes away and comes back.
pub async fn keep_probing<F, Fut, E>(
    name: &'static str,
    check: Check,
    mut probe: F,
    shutdown: CancellationToken,
) where
    F: FnMut() -> Fut,
    Fut: Future<Output = Result<(), E>>,
    E: std::fmt::Display,
{
    let mut failures = 0u32;
    let mut first = true;
    loop {
        let result = tokio::select! {
            _ = shutdown.cancelled() => return,
            r = tokio::time::timeout(PROBE_EVERY, probe()) => match r {
                Ok(answer) => answer.map_err(|e| e.to_string()),
                Err(_) => Err(format!("no answer within {PROBE_EVERY:?}")),
            },
        };
        let was = check.get();
        match result {
            Ok(()) => {
                failures = 0;
                check.set(true);
                if !was && !first {
                    tracing::info!(component = name, "available again");
                }
            }
            Err(e) => {
                failures += 1;
                // Said once when it goes away (or never answered); still away says nothing.
                let goes_away = if was { failures >= DOWN_AFTER } else { first };
                if goes_away {
                    check.set(false);
                    tracing::warn!(component = name, error = %e,
                        "unavailable; /healthz answers 503 until it is back");
                } else if was {
                    tracing::debug!(component = name, error = %e, "probe failed once");
                }
            }
        }
        first = false;
        tokio::select! {
            _ = shutdown.cancelled() => return,
            _ = tokio::time::sleep(PROBE_EVERY) => {}
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn healthy_only_when_started_and_every_component_is_up() {
        let health = Health::default();
        let nats = health.check("nats");
        let db = health.check("database");
        assert!(!health.report().healthy);
        health.started(true);
        nats.set(true);
        assert!(!health.report().healthy);
        db.set(true);
        let report = health.report();
        assert!(report.healthy);
        assert_eq!(report.text, "nats: ok\ndatabase: ok\n");
        db.set(false);
        assert_eq!(
            health.report(),
            Report {
                healthy: false,
                text: "nats: ok\ndatabase: unavailable\n".into()
            }
        );
    }
}

//! Limits that contain a bad (compromised or misconfigured) host: a per-origin rate limit, a cap
//! on how long a remote ban is held, an optional list of trusted origins, and an optional quorum
//! of distinct reporters before a ban is applied.

use shared_f2b::config::{ApplyMode, SubscriberConfig};
use shared_f2b::event::Event;
use std::collections::{HashMap, HashSet};
use std::net::IpAddr;
use std::time::{Duration, SystemTime};

/// What the limits say about one remote ban.
#[derive(Debug, PartialEq, Eq)]
pub enum Admit {
    /// Apply it, held until this time (`None`: permanent, only when no cap applies).
    Apply(Option<SystemTime>),
    /// Not yet: fewer distinct origins than `min_reporters` reported it (counted, debug log).
    Waiting,
    /// The origin is over its rate (warn log, counted).
    RateLimited,
}

/// A token bucket per origin: `per_minute` tokens, refilled continuously.
struct Bucket {
    tokens: f64,
    at: SystemTime,
}

/// The limits and their running state.
pub struct Limits {
    per_minute: f64,
    buckets: HashMap<String, Bucket>,
    max_bantime: Duration,
    trusted: Option<HashSet<String>>,
    min_reporters: usize,
    window: Duration,
    reports: HashMap<IpAddr, Vec<(String, SystemTime)>>,
    checks: u64,
}

impl Limits {
    /// The limits configured in `[subscriber]`.
    pub fn new(sub: &SubscriberConfig) -> Limits {
        Limits {
            per_minute: sub.max_bans_per_minute as f64,
            buckets: HashMap::new(),
            max_bantime: sub.max_bantime,
            trusted: (!sub.trusted_origins.is_empty())
                .then(|| sub.trusted_origins.iter().cloned().collect()),
            // In `attempt` mode the target jail's maxretry already is the quorum.
            min_reporters: if sub.apply == ApplyMode::Attempt {
                1
            } else {
                sub.min_reporters.max(1)
            },
            window: sub.min_reporters_window,
            reports: HashMap::new(),
            checks: 0,
        }
    }

    /// Whether `origin` may be applied at all (also for unbans).
    pub fn trusts(&self, origin: &str) -> bool {
        self.trusted.as_ref().is_none_or(|t| t.contains(origin))
    }

    /// Checks a remote unban: unbans take from the same per-origin rate as bans.
    pub fn admit_unban(&mut self, event: &Event, live: bool, now: SystemTime) -> bool {
        !live || self.take_token(&event.origin, now)
    }

    /// Checks a remote ban. `live` is false for events replayed from the archive, which are
    /// not rate-limited (a new host's backfill may hold a hundred thousand).
    pub fn admit(&mut self, event: &Event, live: bool, now: SystemTime) -> Admit {
        if live && !self.take_token(&event.origin, now) {
            return Admit::RateLimited;
        }
        if self.min_reporters > 1 && !self.quorum(event, now) {
            return Admit::Waiting;
        }
        let cap = event.time + self.max_bantime;
        Admit::Apply(Some(event.expires().map_or(cap, |end| end.min(cap))))
    }

    fn take_token(&mut self, origin: &str, now: SystemTime) -> bool {
        let per_minute = self.per_minute;
        let bucket = self.buckets.entry(origin.to_owned()).or_insert(Bucket {
            tokens: per_minute,
            at: now,
        });
        let elapsed = now
            .duration_since(bucket.at)
            .unwrap_or_default()
            .as_secs_f64();
        bucket.tokens = (bucket.tokens + elapsed * per_minute / 60.0).min(per_minute);
        bucket.at = now;
        if bucket.tokens >= 1.0 {
            bucket.tokens -= 1.0;
            true
        } else {
            false
        }
    }

    /// Records the report; true once `min_reporters` distinct origins reported the address
    /// within the window.
    fn quorum(&mut self, event: &Event, now: SystemTime) -> bool {
        self.checks += 1;
        if self.checks.is_multiple_of(10_000) {
            self.prune(now);
        }
        let window = self.window;
        let reports = self.reports.entry(event.ip).or_default();
        reports.retain(|(_, at)| now.duration_since(*at).unwrap_or_default() < window);
        if !reports.iter().any(|(o, _)| *o == event.origin) {
            reports.push((event.origin.clone(), now));
        }
        let reached = reports.len() >= self.min_reporters;
        if reached {
            self.reports.remove(&event.ip);
        }
        reached
    }

    /// Forgets reports older than the window (called now and then to bound memory).
    pub fn prune(&mut self, now: SystemTime) {
        let window = self.window;
        self.reports.retain(|_, r| {
            r.retain(|(_, at)| now.duration_since(*at).unwrap_or_default() < window);
            !r.is_empty()
        });
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use shared_f2b::event::{Action, PERMANENT, parse_ip};

    fn ev(origin: &str, ip: &str, bantime: i64) -> Event {
        Event::new(
            Action::Ban,
            origin,
            "sshd",
            parse_ip(ip).unwrap(),
            SystemTime::now(),
            bantime,
            1,
        )
        .unwrap()
    }

    fn limits(extra: &str) -> Limits {
        let config =
            shared_f2b::Config::parse(&format!("host_id = \"bob\"\n[subscriber]\n{extra}"))
                .unwrap();
        Limits::new(&config.subscriber)
    }

    #[test]
    fn an_origin_over_its_rate_is_refused_others_are_not() {
        let mut l = limits("max_bans_per_minute = 3");
        let now = SystemTime::now();
        for i in 0..3 {
            assert!(matches!(
                l.admit(&ev("mallory", &format!("192.0.2.{i}"), 600), true, now),
                Admit::Apply(_)
            ));
        }
        assert_eq!(
            l.admit(&ev("mallory", "192.0.2.9", 600), true, now),
            Admit::RateLimited
        );
        assert!(matches!(
            l.admit(&ev("alice", "192.0.2.9", 600), true, now),
            Admit::Apply(_)
        ));
        // Unbans share the rate; replayed events are not rate-limited; tokens come back.
        assert!(!l.admit_unban(&ev("mallory", "192.0.2.9", 600), true, now));
        assert!(l.admit_unban(&ev("mallory", "192.0.2.9", 600), false, now));
        assert!(matches!(
            l.admit(&ev("mallory", "192.0.2.9", 600), false, now),
            Admit::Apply(_)
        ));
        let later = now + Duration::from_secs(20);
        assert!(matches!(
            l.admit(&ev("mallory", "192.0.2.9", 600), true, later),
            Admit::Apply(_)
        ));
    }

    #[test]
    fn bantime_is_capped_and_untrusted_origins_refused() {
        let mut l = limits("max_bantime = \"1h\"\ntrusted_origins = [\"alice\"]");
        let now = SystemTime::now();
        let e = ev("alice", "192.0.2.1", PERMANENT);
        assert_eq!(
            l.admit(&e, true, now),
            Admit::Apply(Some(e.time + Duration::from_secs(3600)))
        );
        let short = ev("alice", "192.0.2.1", 60);
        assert_eq!(l.admit(&short, true, now), Admit::Apply(short.expires()));
        assert!(!l.trusts("mallory"));
        assert!(l.trusts("alice"));
    }

    #[test]
    fn min_reporters_waits_for_distinct_origins() {
        let mut l = limits("apply = \"ban\"\nmin_reporters = 2");
        let now = SystemTime::now();
        assert_eq!(
            l.admit(&ev("alice", "192.0.2.1", 600), true, now),
            Admit::Waiting
        );
        assert_eq!(
            l.admit(&ev("alice", "192.0.2.1", 600), true, now),
            Admit::Waiting,
            "same origin twice"
        );
        assert!(matches!(
            l.admit(&ev("carol", "192.0.2.1", 600), true, now),
            Admit::Apply(_)
        ));
        // Reports older than the window do not count.
        let late = now + Duration::from_secs(3600);
        assert_eq!(
            l.admit(&ev("alice", "192.0.2.2", 600), true, now),
            Admit::Waiting
        );
        assert_eq!(
            l.admit(&ev("carol", "192.0.2.2", 600), true, late),
            Admit::Waiting
        );
        l.prune(late + Duration::from_secs(3600));
        assert!(l.reports.is_empty());
    }
}

//! Deciding whether a received event may be applied here: decode, cross-check with its subject,
//! drop this host's own events and expired bans, and never ban protected addresses.

use ipnet::IpNet;
use shared_f2b::event::{Action, Event};
use shared_f2b::inbound::decode_received;
use std::net::IpAddr;
use std::time::{Duration, SystemTime};

/// How far in the future an event's time may be before it is taken as "now".
pub const MAX_SKEW: Duration = Duration::from_secs(300);

/// What to do with one received message.
#[derive(Debug)]
pub enum Verdict {
    /// A valid event for this host.
    Apply(Event),
    /// A valid event this host does not need (its own, already expired): counted, not logged.
    Skip(&'static str),
    /// Invalid, spoofed or forbidden: logged at warn and counted by reason.
    Reject {
        reason: &'static str,
        detail: String,
    },
}

/// The checks every received event goes through.
pub struct Filter {
    pub prefix: String,
    pub host_id: String,
    pub include_own: bool,
    pub allowlist: Vec<IpNet>,
}

fn reject(reason: &'static str, detail: impl Into<String>) -> Verdict {
    Verdict::Reject {
        reason,
        detail: detail.into(),
    }
}

/// Addresses no remote event may ever ban, whatever the allowlist says.
pub fn is_protected(ip: IpAddr) -> bool {
    match ip {
        IpAddr::V4(v4) => {
            v4.is_unspecified()
                || v4.is_loopback()
                || v4.is_multicast()
                || v4.is_link_local()
                || v4.is_broadcast()
        }
        IpAddr::V6(v6) => {
            v6.is_unspecified()
                || v6.is_loopback()
                || v6.is_multicast()
                || v6.is_unicast_link_local()
        }
    }
}

impl Filter {
    /// Checks one message.
    pub fn check(&self, subject: &str, payload: &[u8], now: SystemTime) -> Verdict {
        match decode_received(&self.prefix, subject, payload) {
            Ok(event) => self.check_event(event, now),
            Err(r) => reject(r.reason, r.detail),
        }
    }

    /// Checks a decoded event: own, expired, protected, allowlisted. An event stamped more than
    /// [`MAX_SKEW`] in the future is taken as made now, so a fast clock cannot stretch a ban.
    pub fn check_event(&self, mut event: Event, now: SystemTime) -> Verdict {
        if event.time > now + MAX_SKEW {
            tracing::warn!(origin = %event.origin, ip = %event.ip,
                "event stamped in the future (clock skew at its origin?); taken as made now");
            event.time = now;
        }
        if event.origin == self.host_id && !self.include_own {
            return Verdict::Skip("own");
        }
        if event.action == Action::Ban {
            if event.expired_at(now) {
                return Verdict::Skip("expired");
            }
            if is_protected(event.ip) {
                return reject("protected_address", format!("{} is never banned", event.ip));
            }
            if self.allowlist.iter().any(|net| net.contains(&event.ip)) {
                return reject("allowlisted", format!("{} is in the allowlist", event.ip));
            }
        }
        Verdict::Apply(event)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use shared_f2b::event::parse_ip;
    use shared_f2b::subject::event_subject;
    use std::time::Duration;

    fn filter() -> Filter {
        Filter {
            prefix: "f2b".into(),
            host_id: "bob".into(),
            include_own: false,
            allowlist: vec![
                "10.0.0.0/8".parse().unwrap(),
                "2001:db8:1::/48".parse().unwrap(),
            ],
        }
    }

    fn event(origin: &str, ip: &str) -> Event {
        Event::new(
            Action::Ban,
            origin,
            "sshd",
            parse_ip(ip).unwrap(),
            SystemTime::now(),
            600,
            3,
        )
        .unwrap()
    }

    fn check(subject_host: &str, e: &Event) -> Verdict {
        let subject = event_subject("f2b", e.action, &e.jail, subject_host).unwrap();
        filter().check(&subject, &e.encode(), SystemTime::now())
    }

    fn reason(v: Verdict) -> &'static str {
        match v {
            Verdict::Apply(_) => "apply",
            Verdict::Skip(r) => r,
            Verdict::Reject { reason, .. } => reason,
        }
    }

    #[test]
    fn decides_as_documented() {
        assert_eq!(
            reason(check("alice", &event("alice", "192.0.2.1"))),
            "apply"
        );
        assert_eq!(reason(check("bob", &event("bob", "192.0.2.1"))), "own");
        assert_eq!(
            reason(check("mallory", &event("alice", "192.0.2.1"))),
            "spoofed_origin"
        );
        assert_eq!(
            reason(check("alice", &event("alice", "10.1.2.3"))),
            "allowlisted"
        );
        assert_eq!(
            reason(check("alice", &event("alice", "2001:db8:1::5"))),
            "allowlisted"
        );
        assert_eq!(
            reason(check("alice", &event("alice", "2001:db8:2::5"))),
            "apply"
        );
        for ip in [
            "127.0.0.1",
            "0.0.0.0",
            "224.0.0.1",
            "169.254.1.1",
            "::1",
            "fe80::1",
            "::",
        ] {
            assert_eq!(
                reason(check("alice", &event("alice", ip))),
                "protected_address",
                "{ip}"
            );
        }
        let mut old = event("alice", "192.0.2.1");
        old.time = SystemTime::now() - Duration::from_secs(601);
        assert_eq!(reason(check("alice", &old)), "expired");
    }

    #[test]
    fn clock_skew_is_handled_as_documented() {
        let now = SystemTime::now();
        let ten_min = Duration::from_secs(600);
        let mut future = event("alice", "192.0.2.1");
        future.time = now + ten_min;
        match filter().check_event(future, now) {
            Verdict::Apply(e) => assert_eq!(e.time, now, "taken as made now"),
            other => panic!("{other:?}"),
        }
        // Ten minutes behind: a 600 s ban is already over, a one-hour ban is applied.
        let mut past = event("alice", "192.0.2.1");
        past.time = now - ten_min;
        assert_eq!(reason(filter().check_event(past.clone(), now)), "expired");
        past.bantime = 3600;
        assert_eq!(reason(filter().check_event(past, now)), "apply");
    }
}

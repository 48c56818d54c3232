//! Bans wider than one address: `ipv6_prefix` (an IPv6 attacker owns its /64, and rotates through
//! it), and aggregation (once `aggregate_count` addresses of one /24 or /48 were banned within
//! `aggregate_window`, by at least `aggregate_origins` distinct origins, the prefix is banned). Admission decides whether a prefix may be banned
//! at all (never over a protected address, a NATS server, an allowlist entry or an operator's
//! pardon or allow); this module only says which prefix.

use ipnet::IpNet;
use shared_f2b::config::SubscriberConfig;
use shared_f2b::control::host_net as host;
use std::collections::HashMap;
use std::net::IpAddr;
use std::time::{Duration, SystemTime};

/// `ip`'s prefix of length `len` (its host bits cleared).
pub fn prefix(ip: IpAddr, len: u8) -> IpNet {
    IpNet::new(ip, len).expect("checked in the config").trunc()
}

/// The prefix rules and the recent bans aggregation counts.
pub struct Prefixes {
    ipv6: Option<u8>,
    count: usize,
    origins: usize,
    window: Duration,
    v4: u8,
    v6: u8,
    /// Per prefix: the addresses banned in it lately, by whom, and when.
    recent: HashMap<IpNet, Vec<(IpAddr, String, SystemTime)>>,
    checks: u64,
}

impl Prefixes {
    /// The rules of `[subscriber]`.
    pub fn new(sub: &SubscriberConfig) -> Prefixes {
        Prefixes {
            ipv6: sub.ipv6_prefix,
            count: sub.aggregate_count,
            origins: sub.aggregate_origins,
            window: sub.aggregate_window,
            v4: sub.aggregate_ipv4_prefix,
            v6: sub.aggregate_ipv6_prefix,
            recent: HashMap::new(),
            checks: 0,
        }
    }

    /// What a ban of `ip` bans: its /`ipv6_prefix` for an IPv6 address, else the address.
    pub fn widen(&self, ip: IpAddr) -> IpNet {
        match (ip, self.ipv6) {
            (IpAddr::V6(_), Some(len)) => prefix(ip, len),
            _ => host(ip),
        }
    }

    /// Counts `origin`'s ban of `target`; returns the prefix to ban when this one completes
    /// `aggregate_count` distinct addresses (or /`ipv6_prefix` nets) within the window, reported
    /// by `aggregate_origins` distinct origins.
    pub fn aggregate(&mut self, target: IpNet, origin: &str, now: SystemTime) -> Option<IpNet> {
        if self.count < 2 {
            return None;
        }
        let len = match target.addr() {
            IpAddr::V4(_) => self.v4,
            IpAddr::V6(_) => self.v6,
        };
        if target.prefix_len() <= len {
            return None;
        }
        self.checks += 1;
        if self.checks.is_multiple_of(4096) {
            let window = self.window;
            self.recent.retain(|_, seen| {
                seen.retain(|(_, _, t)| *t + window > now);
                !seen.is_empty()
            });
        }
        let net = prefix(target.addr(), len);
        let seen = self.recent.entry(net).or_default();
        seen.retain(|(_, _, t)| *t + self.window > now);
        if !seen
            .iter()
            .any(|(ip, o, _)| *ip == target.addr() && o == origin)
        {
            seen.push((target.addr(), origin.to_owned(), now));
        }
        let mut addresses: Vec<IpAddr> = seen.iter().map(|(ip, _, _)| *ip).collect();
        addresses.sort();
        addresses.dedup();
        let mut origins: Vec<&str> = seen.iter().map(|(_, o, _)| o.as_str()).collect();
        origins.sort();
        origins.dedup();
        if addresses.len() >= self.count && origins.len() >= self.origins {
            // Counted afresh after the prefix ban: the next one needs `count` new bans.
            self.recent.remove(&net);
            return Some(net);
        }
        None
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn rules(extra: &str) -> Prefixes {
        let config = shared_f2b::Config::parse(&format!(
            "host_id = \"b\"\n[subscriber]\napply = \"ban\"\n{extra}"
        ))
        .unwrap();
        Prefixes::new(&config.subscriber)
    }

    #[test]
    fn ipv6_addresses_widen_to_their_prefix() {
        let p = rules("ipv6_prefix = 64");
        assert_eq!(
            p.widen("2001:db8:1:2:3:4:5:6".parse().unwrap()).to_string(),
            "2001:db8:1:2::/64"
        );
        assert_eq!(
            p.widen("192.0.2.1".parse().unwrap()).to_string(),
            "192.0.2.1/32"
        );
        assert_eq!(
            rules("").widen("2001:db8::1".parse().unwrap()).to_string(),
            "2001:db8::1/128"
        );
    }

    #[test]
    fn enough_addresses_of_one_prefix_within_the_window_ban_the_prefix() {
        let mut p = rules("aggregate_count = 3\naggregate_window = \"10m\"");
        let now = SystemTime::now();
        let ban = |p: &mut Prefixes, ip: &str, origin: &str, at: SystemTime| {
            p.aggregate(host(ip.parse().unwrap()), origin, at)
                .map(|n| n.to_string())
        };
        assert_eq!(ban(&mut p, "198.51.100.1", "alice", now), None);
        assert_eq!(
            ban(&mut p, "198.51.100.1", "bob", now),
            None,
            "one address counts once"
        );
        assert_eq!(ban(&mut p, "198.51.101.2", "bob", now), None, "another /24");
        let late = now + Duration::from_secs(601);
        assert_eq!(
            ban(&mut p, "198.51.100.2", "alice", late),
            None,
            "the first are too old"
        );
        assert_eq!(ban(&mut p, "198.51.100.3", "alice", late), None);
        assert_eq!(
            ban(&mut p, "198.51.100.4", "alice", late),
            None,
            "one origin alone cannot get a prefix banned"
        );
        assert_eq!(
            ban(&mut p, "198.51.100.4", "bob", late).as_deref(),
            Some("198.51.100.0/24")
        );
        assert_eq!(
            ban(&mut p, "198.51.100.5", "bob", late),
            None,
            "counted afresh"
        );
        let mut off = rules("");
        assert_eq!(
            off.aggregate(host("192.0.2.1".parse().unwrap()), "a", now),
            None
        );
    }
}

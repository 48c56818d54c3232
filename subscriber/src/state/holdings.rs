//! Which origins hold a ban on each address in each local jail, and until when, so that a remote
//! unban lifts the local ban only when no other origin still holds it.
//!
//! Kept compact, since a host may hold hundreds of thousands of remote bans: names are interned
//! as small numbers, ends are milliseconds, and the usual single holder is stored inline.

use super::names::Names;
use ipnet::IpNet;
use shared_f2b::control::overlap;
use std::collections::{BTreeMap, HashMap};
use std::time::{Duration, SystemTime, UNIX_EPOCH};

/// When a holding ends; `None` is permanent.
pub type Until = Option<SystemTime>;

/// An end in milliseconds since the epoch; [`FOREVER`] for permanent.
type EndMs = u64;
const FOREVER: EndMs = u64::MAX;

fn to_end(until: Until) -> EndMs {
    until.map_or(FOREVER, |t| {
        (t.duration_since(UNIX_EPOCH).unwrap_or_default().as_millis() as u64).min(FOREVER - 1)
    })
}

fn to_until(end: EndMs) -> Until {
    (end != FOREVER).then(|| UNIX_EPOCH + Duration::from_millis(end))
}

/// The origins holding one ban, each with its end; one holder inline, more boxed.
enum Holders {
    One([(u32, EndMs); 1]),
    Many(Box<[(u32, EndMs)]>),
}

impl Holders {
    fn as_slice(&self) -> &[(u32, EndMs)] {
        match self {
            Holders::One(one) => one,
            Holders::Many(list) => list,
        }
    }

    /// From a list (for the rare updates: a second origin, removals); `None` when empty.
    fn from_vec(mut list: Vec<(u32, EndMs)>) -> Option<Holders> {
        match list.len() {
            0 => None,
            1 => Some(Holders::One([list.pop().expect("one")])),
            _ => Some(Holders::Many(list.into_boxed_slice())),
        }
    }
}

/// What a remote unban means for the local ban.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Unbanned {
    /// The origin was the last holder: lift the local ban.
    Lift,
    /// Other origins still hold it: keep it.
    HeldByOthers,
    /// This host holds no current ban from that origin: nothing to lift.
    NotHeld,
}

/// The remote bans this host applied and still holds.
#[derive(Default)]
pub struct Holdings {
    /// Per local jail and banned address or prefix.
    bans: HashMap<(u16, IpNet), Holders>,
    /// The prefix lengths of the prefixes ever held (not single addresses).
    prefix_lens: std::collections::BTreeSet<u8>,
    jails: Names,
    origins: Names,
}

impl Holdings {
    /// Records that `origin` bans `ip` in local `jail` until `until` (the later end wins).
    pub fn ban(&mut self, jail: &str, net: impl Into<IpNet>, origin: &str, until: Until) {
        let key = (self.jails.id(jail) as u16, net.into());
        if key.1.prefix_len() != key.1.max_prefix_len() {
            self.prefix_lens.insert(key.1.prefix_len());
        }
        let origin = self.origins.id(origin);
        let end = to_end(until);
        match self.bans.get_mut(&key) {
            None => {
                self.bans.insert(key, Holders::One([(origin, end)]));
            }
            Some(Holders::One([(o, e)])) if *o == origin => *e = (*e).max(end),
            Some(holders) => {
                let mut list = holders.as_slice().to_vec();
                match list.iter_mut().find(|(o, _)| *o == origin) {
                    Some((_, e)) => *e = (*e).max(end),
                    None => list.push((origin, end)),
                }
                *holders = Holders::from_vec(list).expect("not empty");
            }
        }
    }

    /// Records `origin`'s unban and says what it means for the local ban: lifted only when
    /// `origin` itself holds it now and no other origin does. A ban this host did not apply for
    /// `origin` (a manual ban, another origin's, one whose holding ended) is never lifted.
    pub fn unban(
        &mut self,
        jail: &str,
        net: impl Into<IpNet>,
        origin: &str,
        now: SystemTime,
    ) -> Unbanned {
        let (Some(jail), Some(origin)) = (self.jails.find(jail), self.origins.find(origin)) else {
            return Unbanned::NotHeld;
        };
        let key = (jail as u16, net.into());
        let Some(holders) = self.bans.get(&key) else {
            return Unbanned::NotHeld;
        };
        let now = to_end(Some(now));
        let held = holders
            .as_slice()
            .iter()
            .any(|(o, end)| *o == origin && *end > now);
        let rest: Vec<_> = holders
            .as_slice()
            .iter()
            .copied()
            .filter(|(o, end)| *o != origin && *end > now)
            .collect();
        let others = !rest.is_empty();
        match Holders::from_vec(rest) {
            Some(rest) => {
                self.bans.insert(key, rest);
            }
            None => {
                self.bans.remove(&key);
            }
        }
        match (held, others) {
            (false, _) => Unbanned::NotHeld,
            (true, true) => Unbanned::HeldByOthers,
            (true, false) => Unbanned::Lift,
        }
    }

    /// Forgets every holding that shares an address with `net`, whoever holds it (an
    /// operator's pardon: an address in a held prefix lifts the prefix): returns what went, as
    /// (jail, address or prefix, origin).
    pub fn lift(&mut self, net: IpNet) -> Vec<(String, IpNet, String)> {
        let keys: Vec<(u16, IpNet)> = if net.prefix_len() == net.max_prefix_len() {
            // One address: the holdings of it and of the prefixes of it, looked up directly.
            let mut lens: Vec<u8> = self.prefix_lens.iter().copied().collect();
            lens.push(net.max_prefix_len());
            (0..self.jails.count() as u16)
                .flat_map(|jail| {
                    lens.iter()
                        .filter_map(move |len| IpNet::new(net.addr(), *len).ok())
                        .map(move |p| (jail, p.trunc()))
                })
                .filter(|key| self.bans.contains_key(key))
                .collect()
        } else {
            self.bans
                .keys()
                .filter(|(_, held)| overlap(held, &net))
                .copied()
                .collect()
        };
        let mut gone = Vec::new();
        for key in keys {
            if let Some(holders) = self.bans.remove(&key) {
                for (origin, _) in holders.as_slice() {
                    gone.push((
                        self.jails.name(u32::from(key.0)).to_owned(),
                        key.1,
                        self.origins.name(*origin).to_owned(),
                    ));
                }
            }
        }
        gone
    }

    /// Forgets holdings that have ended.
    pub fn prune(&mut self, now: SystemTime) {
        let now = to_end(Some(now));
        self.bans.retain(|_, holders| {
            if holders.as_slice().iter().all(|(_, end)| *end > now) {
                return true;
            }
            let rest = holders
                .as_slice()
                .iter()
                .copied()
                .filter(|(_, e)| *e > now)
                .collect();
            match Holders::from_vec(rest) {
                Some(rest) => {
                    *holders = rest;
                    true
                }
                None => false,
            }
        });
        self.bans.shrink_to_fit();
    }

    /// Number of (jail, address) bans held.
    pub fn len(&self) -> usize {
        self.bans.len()
    }

    /// Whether nothing is held.
    pub fn is_empty(&self) -> bool {
        self.bans.is_empty()
    }

    /// Every holding, for the state snapshot: (jail, address or prefix, origin, until).
    pub fn iter(&self) -> impl Iterator<Item = (&str, IpNet, &str, Until)> {
        self.bans.iter().flat_map(move |((jail, ip), holders)| {
            holders.as_slice().iter().map(move |&(origin, end)| {
                (
                    self.jails.name(u32::from(*jail)),
                    *ip,
                    self.origins.name(origin),
                    to_until(end),
                )
            })
        })
    }

    /// Bans held per origin and per jail (an address held by two origins counts for both).
    pub fn counts(&self) -> (BTreeMap<String, usize>, BTreeMap<String, usize>) {
        let (mut by_origin, mut by_jail) = (BTreeMap::new(), BTreeMap::new());
        for ((jail, _), holders) in &self.bans {
            *by_jail
                .entry(self.jails.name(u32::from(*jail)).to_owned())
                .or_default() += 1;
            for (origin, _) in holders.as_slice() {
                *by_origin
                    .entry(self.origins.name(*origin).to_owned())
                    .or_default() += 1;
            }
        }
        (by_origin, by_jail)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::net::IpAddr;
    use std::time::Duration;

    #[test]
    fn an_unban_lifts_only_when_no_other_origin_holds_the_ban() {
        let now = SystemTime::now();
        let later = Some(now + Duration::from_secs(600));
        let ip: IpAddr = "192.0.2.1".parse().unwrap();
        let mut h = Holdings::default();
        h.ban("shared", ip, "alice", later);
        h.ban("shared", ip, "charlie", later);
        assert_eq!(h.unban("shared", ip, "alice", now), Unbanned::HeldByOthers);
        assert_eq!(h.unban("shared", ip, "charlie", now), Unbanned::Lift);
        assert!(h.is_empty());
        // An expired holding by another origin does not keep the ban.
        h.ban("shared", ip, "alice", later);
        h.ban("shared", ip, "charlie", Some(now - Duration::from_secs(1)));
        assert_eq!(h.unban("shared", ip, "alice", now), Unbanned::Lift);
        // Nothing held (a manual ban, another jail, an unknown origin): never lifted.
        h.ban("shared", ip, "alice", later);
        assert_eq!(h.unban("other", ip, "alice", now), Unbanned::NotHeld);
        assert_eq!(h.unban("shared", ip, "bob", now), Unbanned::NotHeld);
        // The origin's own holding ended: not lifted either.
        h.ban("shared", ip, "dave", Some(now - Duration::from_secs(1)));
        assert_eq!(h.unban("shared", ip, "dave", now), Unbanned::NotHeld);
    }

    #[test]
    fn a_lift_takes_the_prefixes_of_an_address_and_what_a_net_covers() {
        let later = Some(SystemTime::now() + Duration::from_secs(600));
        let net = |t: &str| t.parse::<IpNet>().unwrap();
        let mut h = Holdings::default();
        h.ban("shared", net("198.18.7.0/24"), "prefix aggregate", later);
        h.ban("shared", net("198.18.7.1/32"), "alice", later);
        h.ban("shared", net("198.18.8.1/32"), "alice", later);
        h.ban("other", net("2001:db8:7:9::/64"), "alice", later);
        let gone: Vec<String> = h
            .lift(net("198.18.7.77/32"))
            .into_iter()
            .map(|(_, n, _)| n.to_string())
            .collect();
        assert_eq!(gone, ["198.18.7.0/24"], "its prefix, not its neighbour");
        assert_eq!(h.lift(net("2001:db8:7:9::77/128")).len(), 1, "any jail");
        let mut wide: Vec<String> = h
            .lift(net("198.18.0.0/16"))
            .into_iter()
            .map(|(_, n, _)| n.to_string())
            .collect();
        wide.sort();
        assert_eq!(wide, ["198.18.7.1/32", "198.18.8.1/32"]);
        assert!(h.is_empty());
    }

    #[test]
    fn permanent_wins_and_prune_forgets_the_ended() {
        let now = SystemTime::now();
        let ip: IpAddr = "2001:db8::1".parse().unwrap();
        let mut h = Holdings::default();
        h.ban("shared", ip, "alice", Some(now + Duration::from_secs(5)));
        h.ban("shared", ip, "alice", None);
        h.ban(
            "shared",
            "192.0.2.9".parse::<IpAddr>().unwrap(),
            "bob",
            Some(now - Duration::from_secs(1)),
        );
        h.prune(now);
        assert_eq!(h.len(), 1);
        assert_eq!(h.iter().next().unwrap().3, None);
        let (by_origin, by_jail) = h.counts();
        assert_eq!(by_origin["alice"], 1);
        assert_eq!(by_jail["shared"], 1);
    }
}

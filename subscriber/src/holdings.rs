//! Which origins hold a ban on each address in each local jail, and until when, so that a remote
//! unban lifts the local ban only when no other origin still holds it.

use std::collections::{BTreeMap, HashMap};
use std::net::IpAddr;
use std::sync::Arc;
use std::time::SystemTime;

/// When a holding ends; `None` is permanent.
pub type Until = Option<SystemTime>;

/// A ban held in a local jail on an address.
type Key = (Arc<str>, IpAddr);
/// The origins holding it, each until when.
type Holders = Vec<(Arc<str>, Until)>;

/// The remote bans this host applied and still holds.
#[derive(Default)]
pub struct Holdings {
    bans: HashMap<Key, Holders>,
    names: HashMap<String, Arc<str>>,
}

fn active(until: Until, now: SystemTime) -> bool {
    until.is_none_or(|end| end > now)
}

impl Holdings {
    fn intern(&mut self, name: &str) -> Arc<str> {
        if let Some(n) = self.names.get(name) {
            return n.clone();
        }
        let n: Arc<str> = Arc::from(name);
        self.names.insert(name.to_owned(), n.clone());
        n
    }

    /// Records that `origin` bans `ip` in local `jail` until `until` (the later end wins).
    pub fn ban(&mut self, jail: &str, ip: IpAddr, origin: &str, until: Until) {
        let key = (self.intern(jail), ip);
        let origin = self.intern(origin);
        let holders = self.bans.entry(key).or_default();
        match holders.iter_mut().find(|(o, _)| *o == origin) {
            Some((_, end)) => {
                *end = match (*end, until) {
                    (None, _) | (_, None) => None,
                    (Some(a), Some(b)) => Some(a.max(b)),
                }
            }
            None => holders.push((origin, until)),
        }
    }

    /// Records `origin`'s unban; true when no other origin still holds an active ban, so the
    /// local ban should be lifted.
    pub fn unban(&mut self, jail: &str, ip: IpAddr, origin: &str, now: SystemTime) -> bool {
        let Some(jail) = self.names.get(jail).cloned() else {
            return true;
        };
        let key = (jail, ip);
        let Some(holders) = self.bans.get_mut(&key) else {
            return true;
        };
        holders.retain(|(o, until)| &**o != origin && active(*until, now));
        let lift = holders.is_empty();
        if lift {
            self.bans.remove(&key);
        }
        lift
    }

    /// Forgets holdings that have ended.
    pub fn prune(&mut self, now: SystemTime) {
        self.bans.retain(|_, holders| {
            holders.retain(|(_, until)| active(*until, now));
            !holders.is_empty()
        });
    }

    /// Number of (jail, address) bans held.
    pub fn len(&self) -> usize {
        self.bans.len()
    }

    /// Whether nothing is held.
    pub fn is_empty(&self) -> bool {
        self.bans.is_empty()
    }

    /// Every holding, for the state snapshot: (jail, ip, origin, until).
    pub fn iter(&self) -> impl Iterator<Item = (&str, IpAddr, &str, Until)> {
        self.bans.iter().flat_map(|((jail, ip), holders)| {
            holders
                .iter()
                .map(move |(origin, until)| (&**jail, *ip, &**origin, *until))
        })
    }

    /// Bans held per origin and per jail (an address held by two origins counts for both).
    pub fn counts(&self) -> (BTreeMap<String, usize>, BTreeMap<String, usize>) {
        let (mut by_origin, mut by_jail) = (BTreeMap::new(), BTreeMap::new());
        for ((jail, _), holders) in &self.bans {
            *by_jail.entry(jail.to_string()).or_default() += 1;
            for (origin, _) in holders {
                *by_origin.entry(origin.to_string()).or_default() += 1;
            }
        }
        (by_origin, by_jail)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::time::Duration;

    #[test]
    fn an_unban_lifts_only_when_no_other_origin_holds_the_ban() {
        let now = SystemTime::now();
        let later = Some(now + Duration::from_secs(600));
        let ip: IpAddr = "192.0.2.1".parse().unwrap();
        let mut h = Holdings::default();
        h.ban("shared", ip, "alice", later);
        h.ban("shared", ip, "charlie", later);
        assert!(
            !h.unban("shared", ip, "alice", now),
            "charlie still holds it"
        );
        assert!(h.unban("shared", ip, "charlie", now));
        assert!(h.is_empty());
        // An expired holding by another origin does not keep the ban.
        h.ban("shared", ip, "alice", later);
        h.ban("shared", ip, "charlie", Some(now - Duration::from_secs(1)));
        assert!(h.unban("shared", ip, "alice", now));
        // Unknown holdings: lifting is harmless.
        assert!(h.unban("other", ip, "alice", now));
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
            "192.0.2.9".parse().unwrap(),
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

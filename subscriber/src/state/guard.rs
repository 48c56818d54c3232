//! Recognising events this host has already acted on, across restarts: per origin, jail and
//! address, the newest event id applied. Event ids are UUIDv7, so they order by creation time:
//! an event that is not newer than the last one applied for its key is a duplicate or a replay
//! (a re-stored old message, a catch-up overlapping live delivery) and changes nothing, and an
//! unban older than the ban it would lift is ignored.
//!
//! Bounded: an entry is kept as long as an event of its age could still matter (`keep`, the
//! subscriber's `max_bantime`); anything older is refused as expired before it gets here.

use super::names::Names;
use std::collections::HashMap;
use std::net::IpAddr;
use std::time::{Duration, SystemTime, UNIX_EPOCH};
use uuid::Uuid;

/// When an event id was made (UUIDv7 carries milliseconds since the epoch).
pub fn id_time(id: Uuid) -> Option<SystemTime> {
    let (secs, nanos) = id.get_timestamp()?.to_unix();
    UNIX_EPOCH.checked_add(Duration::new(secs, nanos))
}

/// The newest event applied per (origin, remote jail, address).
#[derive(Default)]
pub struct Guard {
    newest: HashMap<(u32, u32, IpAddr), Uuid>,
    origins: Names,
    jails: Names,
}

impl Guard {
    /// Whether `id` is newer than every event applied for this origin, jail and address.
    pub fn is_new(&self, origin: &str, jail: &str, ip: IpAddr, id: Uuid) -> bool {
        let (Some(o), Some(j)) = (self.origins.find(origin), self.jails.find(jail)) else {
            return true;
        };
        self.newest.get(&(o, j, ip)).is_none_or(|seen| id > *seen)
    }

    /// Records `id` as applied (the newer id wins).
    pub fn record(&mut self, origin: &str, jail: &str, ip: IpAddr, id: Uuid) {
        let key = (self.origins.id(origin), self.jails.id(jail), ip);
        let entry = self.newest.entry(key).or_insert(id);
        if id > *entry {
            *entry = id;
        }
    }

    /// Forgets entries whose event is older than `keep` at `now`.
    pub fn prune(&mut self, now: SystemTime, keep: Duration) {
        let Some(oldest) = now.checked_sub(keep) else {
            return;
        };
        self.newest
            .retain(|_, id| id_time(*id).is_none_or(|t| t >= oldest));
        self.newest.shrink_to_fit();
    }

    /// Number of entries.
    pub fn len(&self) -> usize {
        self.newest.len()
    }

    /// Whether nothing is recorded.
    pub fn is_empty(&self) -> bool {
        self.newest.is_empty()
    }

    /// Every entry, for the state snapshot: (origin, jail, ip, id).
    pub fn iter(&self) -> impl Iterator<Item = (&str, &str, IpAddr, Uuid)> {
        self.newest
            .iter()
            .map(|((o, j, ip), id)| (self.origins.name(*o), self.jails.name(*j), *ip, *id))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn id_at(t: SystemTime) -> Uuid {
        let d = t.duration_since(UNIX_EPOCH).unwrap();
        Uuid::new_v7(uuid::Timestamp::from_unix(
            uuid::NoContext,
            d.as_secs(),
            d.subsec_nanos(),
        ))
    }

    #[test]
    fn only_newer_events_pass_and_old_entries_are_pruned() {
        let now = SystemTime::now();
        let ip: IpAddr = "192.0.2.1".parse().unwrap();
        let (old, new) = (id_at(now - Duration::from_secs(10)), id_at(now));
        let mut g = Guard::default();
        assert!(g.is_new("alice", "sshd", ip, old));
        g.record("alice", "sshd", ip, new);
        assert!(!g.is_new("alice", "sshd", ip, new), "the same event twice");
        assert!(!g.is_new("alice", "sshd", ip, old), "an older event");
        assert!(g.is_new("bob", "sshd", ip, old), "another origin");
        assert!(g.is_new("alice", "nginx", ip, old), "another jail");
        g.record("alice", "sshd", ip, old);
        assert!(!g.is_new("alice", "sshd", ip, new), "the newer id stays");
        g.prune(now + Duration::from_secs(5), Duration::from_secs(60));
        assert_eq!(g.len(), 1);
        g.prune(now + Duration::from_secs(120), Duration::from_secs(60));
        assert!(g.is_empty());
        assert!(id_time(new).unwrap() <= now);
    }
}

//! Standing orders: the operators' control events in force (pardons, allows, operator bans),
//! as a subscriber keeps them and writes them to `<state_dir>/controls.json` after every change
//! (and the orders revoked lately to `controls-revoked.json`). The publisher on the same host
//! reads the first (a small local read, no network) so that it does not publish a ban of an
//! address an operator pardoned or allowed.

use crate::control::{Control, ControlKind, overlap};
use crate::replay::ReplayedControl;
use ipnet::IpNet;
use serde::{Deserialize, Serialize};
use std::io::Write;
use std::net::IpAddr;
use std::path::{Path, PathBuf};
use std::time::SystemTime;
use uuid::Uuid;

/// The file in a subscriber's `state_dir`.
pub const FILE: &str = "controls.json";
/// Beside it: the orders revoked lately.
const REVOKED: &str = "controls-revoked.json";

/// The file for a `state_dir`.
pub fn path(state_dir: &Path) -> PathBuf {
    state_dir.join(FILE)
}

/// What a change did to the list.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Change {
    /// A new order: enact it.
    Added,
    /// A revoke ended this order.
    Ended(Box<Control>),
    /// A revoke of nothing in force (ended, unknown, or seen before).
    Nothing,
    /// Already known (a replay, or a catch-up of what came live).
    Known,
}

/// The orders in force, each with the stream sequence it was stored at.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct Standing {
    pub controls: Vec<ReplayedControl>,
    /// Orders revoked lately (also revokes that came before their order), so that a replay of
    /// one does not bring it back; kept in their own file.
    #[serde(skip)]
    pub revoked: Vec<Uuid>,
}

/// How many revoked orders are remembered.
const REMEMBER_REVOKED: usize = 10_000;

impl Standing {
    /// Reads the orders in force from `path` (what the publisher needs); a missing file is an
    /// empty list.
    pub fn load(path: &Path) -> std::io::Result<Standing> {
        Ok(read(path)?.unwrap_or_default())
    }

    /// Reads the orders in force and the revoked ones beside them (what the subscriber needs).
    pub fn load_all(path: &Path) -> std::io::Result<Standing> {
        let mut standing = Standing::load(path)?;
        standing.revoked = read(&path.with_file_name(REVOKED))?.unwrap_or_default();
        Ok(standing)
    }

    /// Writes both files atomically (temp file, fsync, rename); the orders readable by the
    /// publisher.
    pub fn save(&self, path: &Path) -> std::io::Result<()> {
        write(&path.with_file_name(REVOKED), &self.revoked)?;
        write(path, self)
    }

    /// Remembers `id` as revoked (the oldest is forgotten beyond [`REMEMBER_REVOKED`]).
    fn remember_revoked(&mut self, id: Uuid) {
        if self.revoked.contains(&id) {
            return;
        }
        if self.revoked.len() >= REMEMBER_REVOKED {
            self.revoked.remove(0);
        }
        self.revoked.push(id);
    }

    /// Whether an order with this id is known.
    pub fn knows(&self, id: Uuid) -> bool {
        self.controls.iter().any(|c| c.control.id == id) || self.revoked.contains(&id)
    }

    /// Takes one control event into account.
    pub fn take(&mut self, seq: u64, control: &Control) -> Change {
        if self.knows(control.id) {
            return Change::Known;
        }
        match control.kind {
            ControlKind::Revoke => {
                let Some(id) = control.revokes else {
                    return Change::Nothing;
                };
                // Remembered even when the order has not come yet (a catch-up may bring the
                // revoke first): it then never comes into force.
                self.remember_revoked(id);
                match self.controls.iter().position(|c| c.control.id == id) {
                    Some(at) => Change::Ended(Box::new(self.controls.remove(at).control)),
                    None => Change::Nothing,
                }
            }
            _ => {
                self.controls.push(ReplayedControl {
                    seq,
                    control: control.clone(),
                    site: None,
                });
                Change::Added
            }
        }
    }

    /// The pardon or allow in force at `now` that covers `ip`, if any.
    pub fn shield(&self, ip: IpAddr, now: SystemTime) -> Option<&Control> {
        self.shield_net(crate::control::host_net(ip), now)
    }

    /// The pardon or allow in force at `now` that shares an address with `net`, if any.
    pub fn shield_net(&self, net: IpNet, now: SystemTime) -> Option<&Control> {
        self.controls
            .iter()
            .map(|c| &c.control)
            .find(|c| c.shields() && c.in_force_at(now) && c.net.is_some_and(|n| overlap(&n, &net)))
    }

    /// Drops what ended by itself; true when something went.
    pub fn prune(&mut self, now: SystemTime) -> bool {
        let before = self.controls.len();
        self.controls.retain(|c| c.control.in_force_at(now));
        self.controls.len() != before
    }

    /// Takes the archiver's snapshot of what is in force up to stream sequence `high`: orders
    /// stored up to `high` that it does not hold were revoked or ended meanwhile and go; what
    /// came after `high` stays. Returns the orders new to this list: the caller takes and enacts them
    /// like live ones.
    pub fn reconcile(&mut self, snapshot: Vec<ReplayedControl>, high: u64) -> Vec<ReplayedControl> {
        let in_snapshot = |id: Uuid| snapshot.iter().any(|s| s.control.id == id);
        let (keep, gone): (Vec<_>, Vec<_>) = std::mem::take(&mut self.controls)
            .into_iter()
            .partition(|c| c.seq > high || in_snapshot(c.control.id));
        self.controls = keep;
        // Revoked meanwhile, or ended: never to come back from a replay.
        for c in gone {
            self.remember_revoked(c.control.id);
        }
        snapshot
            .into_iter()
            .filter(|s| !self.knows(s.control.id))
            .collect()
    }
}

fn read<T: serde::de::DeserializeOwned>(path: &Path) -> std::io::Result<Option<T>> {
    match std::fs::read(path) {
        Ok(bytes) => serde_json::from_slice(&bytes)
            .map(Some)
            .map_err(std::io::Error::other),
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(None),
        Err(e) => Err(e),
    }
}

pub(crate) fn write<T: Serialize>(path: &Path, value: &T) -> std::io::Result<()> {
    let tmp = path.with_extension("json.tmp");
    let mut file = std::fs::File::create(&tmp)?;
    file.write_all(&serde_json::to_vec(value).map_err(std::io::Error::other)?)?;
    file.sync_all()?;
    drop(file);
    std::fs::rename(&tmp, path)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::control::parse_net;
    use std::time::Duration;

    fn pardon(net: &str, secs: Option<u64>) -> Control {
        Control::pardon(
            "admin",
            parse_net(net).unwrap(),
            secs.map(Duration::from_secs),
            "test",
        )
        .unwrap()
    }

    #[test]
    fn shields_revokes_expires_and_survives_a_file() {
        let now = SystemTime::now();
        let mut s = Standing::default();
        let p = pardon("192.0.2.0/24", Some(60));
        assert_eq!(s.take(5, &p), Change::Added);
        assert_eq!(s.take(5, &p), Change::Known);
        assert!(s.shield("192.0.2.9".parse().unwrap(), now).is_some());
        assert!(s.shield("192.0.3.9".parse().unwrap(), now).is_none());
        assert!(
            s.shield("192.0.2.9".parse().unwrap(), now + Duration::from_secs(61))
                .is_none()
        );
        let dir = tempfile::tempdir().unwrap();
        s.save(&path(dir.path())).unwrap();
        assert_eq!(Standing::load_all(&path(dir.path())).unwrap(), s);
        assert!(!s.prune(now));
        assert!(s.prune(now + Duration::from_secs(61)));
        let a = pardon("198.51.100.1", None);
        s.take(6, &a);
        let r = Control::revoke("admin", a.id, "done").unwrap();
        assert_eq!(s.take(7, &r), Change::Ended(Box::new(a.clone())));
        assert_eq!(s.take(8, &r), Change::Nothing);
        assert_eq!(
            s.take(6, &a),
            Change::Known,
            "a replay does not bring it back"
        );
        assert!(
            Standing::load(&dir.path().join("none"))
                .unwrap()
                .controls
                .is_empty()
        );
    }

    #[test]
    fn a_snapshot_replaces_what_it_covers() {
        let mut s = Standing::default();
        let (old, revoked, late) = (
            pardon("192.0.2.1", None),
            pardon("192.0.2.2", None),
            pardon("192.0.2.3", None),
        );
        s.take(1, &old);
        s.take(2, &revoked);
        s.take(9, &late);
        let missed = pardon("192.0.2.4", None);
        let snapshot = vec![
            ReplayedControl {
                seq: 1,
                control: old.clone(),
                site: None,
            },
            ReplayedControl {
                seq: 4,
                control: missed.clone(),
                site: None,
            },
        ];
        let new = s.reconcile(snapshot, 5);
        assert_eq!(new.len(), 1);
        assert_eq!(new[0].control, missed);
        let ids: Vec<_> = s.controls.iter().map(|c| c.control.id).collect();
        assert_eq!(
            ids,
            [old.id, late.id],
            "the revoked one went, the later one stays"
        );
    }
}

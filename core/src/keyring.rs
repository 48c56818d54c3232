//! The keyring: which public key belongs to which host, since when and until when, as the
//! operators said it in key records (control events of kind `key`, signed by an operator key the
//! reader trusts). A record not signed by a trusted operator key is never taken, so a broker (or
//! anyone who can publish on the control subjects) cannot add a key.
//!
//! For each key the newest record (by its time, then id) holds: `host add` says "this key is
//! alice's from now on", `host rotate` adds the new key and ends the old one after the grace,
//! `host remove` ends it now. A reader keeps the records themselves (`keyring.json` in the
//! subscriber's `state_dir`) and checks them again when it loads them.

use crate::control::{Control, ControlKind};
use crate::event::{Event, MAX_SKEW};
use crate::signing::{OperatorKeys, PublicKey, SigError, event_bytes};
use std::collections::{HashMap, HashSet};
use std::path::{Path, PathBuf};
use std::time::SystemTime;

/// How long after a key's end an event it signed may still reach the stream (clocks of the
/// operator and the receiver differ a little); then the event counts as made after the end,
/// whatever time it states.
pub const END_SKEW: std::time::Duration = std::time::Duration::from_secs(5);

/// The file in a subscriber's `state_dir`.
pub const FILE: &str = "keyring.json";

/// The file for a `state_dir`.
pub fn path(state_dir: &Path) -> PathBuf {
    state_dir.join(FILE)
}

/// The file for a federated site's host keys in a `state_dir`: `keyring-<site>.json`.
pub fn site_path(state_dir: &Path, site: &str) -> PathBuf {
    state_dir.join(format!("keyring-{site}.json"))
}

/// One host key as the newest record for it says.
#[derive(Debug, Clone)]
pub struct HostKey {
    pub host: String,
    pub key: PublicKey,
    pub since: SystemTime,
    pub until: Option<SystemTime>,
    /// The record that says so.
    pub record: Control,
}

impl HostKey {
    /// Whether an event made at `time` falls in the key's window.
    fn covers(&self, time: SystemTime) -> bool {
        time + MAX_SKEW >= self.since && self.until.is_none_or(|u| time < u)
    }
}

/// What taking a key record did.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Taken {
    /// It is now what the keyring says of its key.
    New,
    /// A record as new or newer was there already (a replay, or an older record).
    Known,
}

/// The host keys an operator vouched for.
#[derive(Debug, Clone, Default)]
pub struct Keyring {
    keys: HashMap<String, HostKey>,
    /// The hosts any record named (ended keys too): such a host signs, so an unsigned event of
    /// it is never let through leniently.
    hosts: HashSet<String>,
}

impl Keyring {
    /// Takes a key record signed by one of `operators`; anything else is refused with why.
    pub fn take(&mut self, record: &Control, operators: &OperatorKeys) -> Result<Taken, SigError> {
        operators.check(record)?;
        let (Some(host), Some(text), Some(since)) = (&record.host, &record.host_key, record.since)
        else {
            return Err(SigError::BadSignature);
        };
        if record.kind != ControlKind::Key {
            return Err(SigError::BadSignature);
        }
        // Dated ahead, a record would outrank every later one for its key (a removal too).
        if record.time > SystemTime::now() + MAX_SKEW {
            return Err(SigError::RevokedKey);
        }
        let key = PublicKey::parse(text).map_err(|_| SigError::BadSignature)?;
        if let Some(held) = self.keys.get(text) {
            let newer = (record.time, record.id) > (held.record.time, held.record.id);
            if !newer {
                return Ok(Taken::Known);
            }
        }
        self.hosts.insert(host.clone());
        self.keys.insert(
            text.clone(),
            HostKey {
                host: host.clone(),
                key,
                since,
                until: record.until,
                record: record.clone(),
            },
        );
        Ok(Taken::New)
    }

    /// Whether any record named `host` (it signs, or signed).
    pub fn knows_host(&self, host: &str) -> bool {
        self.hosts.contains(host)
    }

    /// The key an event names, if the keyring holds it.
    pub fn get(&self, key: &str) -> Option<&HostKey> {
        self.keys.get(key)
    }

    /// Every key, for `host list`-like reports.
    pub fn keys(&self) -> impl Iterator<Item = &HostKey> {
        self.keys.values()
    }

    pub fn is_empty(&self) -> bool {
        self.keys.is_empty()
    }

    pub fn len(&self) -> usize {
        self.keys.len()
    }

    /// Checks an event's signature: signed, by a key an operator vouched for as the event's
    /// origin's, valid, in force when the event was made, and still in force when it reached
    /// the stream (`stored`: now for a live event, what the archiver says for a replayed one;
    /// unknown: not checked), so a removed key cannot sign events dated back into its window.
    pub fn check(&self, event: &Event, stored: Option<SystemTime>) -> Result<(), SigError> {
        self.check_verified(event, stored, false)
    }

    /// As [`Keyring::check`]; `verified`: the signature was found to be the named key's already
    /// ([`Keyring::verify_all`]), so only the rest is checked.
    pub fn check_verified(
        &self,
        event: &Event,
        stored: Option<SystemTime>,
        verified: bool,
    ) -> Result<(), SigError> {
        let (Some(key), Some(sig)) = (&event.key, &event.sig) else {
            return Err(SigError::Unsigned);
        };
        let held = self
            .keys
            .get(key)
            .filter(|k| k.host == event.origin)
            .ok_or(SigError::UnknownKey)?;
        if !verified && !held.key.verifies(&event_bytes(event), sig) {
            return Err(SigError::BadSignature);
        }
        let still = stored.is_none_or(|t| held.until.is_none_or(|u| t < u + END_SKEW));
        if held.covers(event.time) && still {
            Ok(())
        } else {
            Err(SigError::RevokedKey)
        }
    }

    /// Which events carry a valid signature by the key they name, that key being in the
    /// keyring (its owner and window are [`Keyring::check_verified`]'s business): checked in
    /// one batch. `None` entries (not events) are `false`.
    pub fn verify_all(&self, events: &[Option<&Event>]) -> Vec<bool> {
        let mut at = Vec::new();
        let mut items = Vec::new();
        for (i, e) in events.iter().enumerate() {
            let Some(e) = e else { continue };
            let (Some(key), Some(sig)) = (&e.key, &e.sig) else {
                continue;
            };
            if let Some(held) = self.keys.get(key) {
                at.push(i);
                items.push((event_bytes(e), sig.as_str(), &held.key));
            }
        }
        let mut ok = vec![false; events.len()];
        for (i, good) in at.into_iter().zip(crate::signing::verify_all(&items)) {
            ok[i] = good;
        }
        ok
    }

    /// Reads the records kept in `path` and takes those `operators` signed (a missing file is an
    /// empty keyring).
    pub fn load(path: &Path, operators: &OperatorKeys) -> std::io::Result<Keyring> {
        let mut ring = Keyring::default();
        let records: Vec<Control> = match std::fs::read(path) {
            Ok(bytes) => serde_json::from_slice(&bytes).map_err(std::io::Error::other)?,
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => Vec::new(),
            Err(e) => return Err(e),
        };
        for record in records {
            if record.validate().is_ok() {
                let _ = ring.take(&record, operators);
            }
        }
        Ok(ring)
    }

    /// Writes the records atomically (temp file, fsync, rename).
    pub fn save(&self, path: &Path) -> std::io::Result<()> {
        let mut records: Vec<&Control> = self.keys.values().map(|k| &k.record).collect();
        records.sort_by_key(|r| (r.time, r.id));
        crate::standing::write(path, &records)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::event::{Action, parse_ip};
    use crate::signing::Signer;
    use std::time::Duration;

    fn trusted(op: &Signer) -> OperatorKeys {
        OperatorKeys::new(vec![PublicKey::parse(op.public_key()).unwrap()])
    }

    fn record(op: &Signer, host: &str, key: &Signer, until: Option<SystemTime>) -> Control {
        let mut r = Control::key_record(
            "admin",
            host,
            key.public_key(),
            SystemTime::now() - Duration::from_secs(60),
            until,
            "host add",
        )
        .unwrap();
        op.sign_control(&mut r);
        r
    }

    fn ban(host: &str, key: &Signer, at: SystemTime) -> Event {
        let mut e = Event::new(
            Action::Ban,
            host,
            "sshd",
            parse_ip("192.0.2.9").unwrap(),
            at,
            600,
            1,
        )
        .unwrap();
        key.sign_event(&mut e);
        e
    }

    #[test]
    fn events_verify_against_the_records_an_operator_signed() {
        let (op, alice, bob) = (Signer::generate(), Signer::generate(), Signer::generate());
        let ops = trusted(&op);
        let mut ring = Keyring::default();
        let now = SystemTime::now();
        assert_eq!(
            ring.check(&ban("alice", &alice, now), Some(now)),
            Err(SigError::UnknownKey)
        );
        assert_eq!(
            ring.take(&record(&op, "alice", &alice, None), &ops),
            Ok(Taken::New)
        );
        assert_eq!(ring.check(&ban("alice", &alice, now), Some(now)), Ok(()));
        // alice's key does not speak for bob.
        assert_eq!(
            ring.check(&ban("bob", &alice, now), Some(now)),
            Err(SigError::UnknownKey)
        );
        // A record signed by anyone else is not taken.
        let stranger = Signer::generate();
        assert_eq!(
            ring.take(&record(&stranger, "bob", &bob, None), &ops),
            Err(SigError::UnknownKey)
        );
        let mut unsigned = record(&op, "bob", &bob, None);
        unsigned.sig = None;
        assert_eq!(ring.take(&unsigned, &ops), Err(SigError::Unsigned));
        let mut bent = record(&op, "bob", &bob, None);
        bent.host = Some("alice".into());
        assert_eq!(ring.take(&bent, &ops), Err(SigError::BadSignature));
        assert!(ring.get(bob.public_key()).is_none());
    }

    #[test]
    fn an_ended_key_signs_nothing_after_its_end() {
        let (op, alice) = (Signer::generate(), Signer::generate());
        let ops = trusted(&op);
        let mut ring = Keyring::default();
        let now = SystemTime::now();
        let added = record(&op, "alice", &alice, None);
        ring.take(&added, &ops).unwrap();
        std::thread::sleep(Duration::from_millis(5));
        let end = now + Duration::from_secs(30);
        let ended = record(&op, "alice", &alice, Some(end));
        assert_eq!(ring.take(&ended, &ops), Ok(Taken::New));
        // The older record, replayed, changes nothing.
        assert_eq!(ring.take(&added, &ops), Ok(Taken::Known));
        assert_eq!(ring.check(&ban("alice", &alice, now), Some(now)), Ok(()));
        let later = end + Duration::from_secs(1);
        assert_eq!(
            ring.check(&ban("alice", &alice, later), None),
            Err(SigError::RevokedKey)
        );
        // Made in time but stored long after the end: refused; stored in time (or unknown): taken.
        let late = end + END_SKEW + Duration::from_secs(1);
        assert_eq!(
            ring.check(&ban("alice", &alice, now), Some(late)),
            Err(SigError::RevokedKey)
        );
        assert_eq!(ring.check(&ban("alice", &alice, now), None), Ok(()));
        assert_eq!(ring.check(&ban("alice", &alice, now), Some(now)), Ok(()));
        let mut forged = ban("alice", &alice, now);
        forged.bantime = 60;
        assert_eq!(ring.check(&forged, Some(now)), Err(SigError::BadSignature));
    }

    #[test]
    fn the_kept_records_are_checked_again_on_load() {
        let (op, alice) = (Signer::generate(), Signer::generate());
        let ops = trusted(&op);
        let mut ring = Keyring::default();
        ring.take(&record(&op, "alice", &alice, None), &ops)
            .unwrap();
        let dir = tempfile::tempdir().unwrap();
        let file = path(dir.path());
        ring.save(&file).unwrap();
        assert!(
            Keyring::load(&file, &ops)
                .unwrap()
                .get(alice.public_key())
                .is_some()
        );
        let other = trusted(&Signer::generate());
        assert!(Keyring::load(&file, &other).unwrap().is_empty());
    }
}

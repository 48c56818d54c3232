//! Signatures that make an event prove who made it: ed25519 keys in the nkeys format (the same
//! key that logs a host in to NATS), a `sig` over a canonical form of the fields, and the
//! signer's public key (`key`, the key id) beside it.
//!
//! The canonical form is a list of lines, one per field, after a line naming what it is
//! (`shared-f2b-event/1`, `shared-f2b-control/1`), so that an event's signature can never pass
//! for an order's. No field can hold a line break (names, jails and reasons are validated), and
//! times are milliseconds since the epoch, so every build writes the same bytes for the same
//! event. The signer's key is part of what is signed.
//!
//! The same key logs a host in to NATS, and a client signs whatever nonce the server sends at
//! login. A nonce is text (a JSON string, valid UTF-8), so every signed form starts with the
//! byte 0xFF, which no UTF-8 text holds: a hostile server cannot have a host sign an event (or
//! an operator a key record) by passing it off as a nonce.

use crate::control::Control;
use crate::event::Event;
use data_encoding::BASE64URL_NOPAD;
use ed25519_dalek::{Signature, Verifier, VerifyingKey};
use std::path::{Path, PathBuf};
use std::time::{SystemTime, UNIX_EPOCH};
use thiserror::Error;

/// A signature problem, with the reason label the admission module, metrics and logs use.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Error)]
pub enum SigError {
    /// No `sig` (or no `key`).
    #[error("the event is not signed")]
    Unsigned,
    /// The signature does not verify with the key it names, or is not a signature at all.
    #[error("the signature does not verify")]
    BadSignature,
    /// The key is in no key record an operator signed for this origin.
    #[error("the key is not one an operator vouched for, for this origin")]
    UnknownKey,
    /// The key was valid once, but not for this event (removed, rotated out, or not yet valid).
    #[error("the key was revoked or rotated out before this event")]
    RevokedKey,
}

impl SigError {
    /// The reason label.
    pub fn reason(self) -> &'static str {
        match self {
            SigError::Unsigned => "unsigned",
            SigError::BadSignature => "bad_signature",
            SigError::UnknownKey => "unknown_key",
            SigError::RevokedKey => "revoked_key",
        }
    }
}

/// Why a key could not be read or used.
#[derive(Debug, Error)]
pub enum KeyError {
    #[error("cannot read the seed file {path}: {source}")]
    Read {
        path: PathBuf,
        source: std::io::Error,
    },
    #[error("{path} holds no nkeys user seed (SU…): {reason}")]
    BadSeed { path: PathBuf, reason: String },
    #[error("{0:?} is not an nkeys user public key (U…, 56 characters)")]
    BadPublic(String),
}

/// Why a text is not a user seed.
#[derive(Debug, Error)]
#[error("{0}")]
struct NotASeed(String);

/// A public key as a verifier holds it: its nkeys text and the decoded point (decoding is a
/// good part of a verification's cost, so it is done once per key).
#[derive(Debug, Clone)]
pub struct PublicKey {
    pub text: String,
    key: VerifyingKey,
}

impl PublicKey {
    /// Parses an nkeys user public key (`U…`).
    pub fn parse(text: &str) -> Result<PublicKey, KeyError> {
        let bad = || KeyError::BadPublic(text.to_owned());
        if !text.starts_with('U') {
            return Err(bad());
        }
        let (_, raw) = nkeys::from_public_key(text).map_err(|_| bad())?;
        let key = VerifyingKey::from_bytes(&raw).map_err(|_| bad())?;
        Ok(PublicKey {
            text: text.to_owned(),
            key,
        })
    }

    /// Whether `sig` (base64url) is this key's signature of `message`.
    pub fn verifies(&self, message: &[u8], sig: &str) -> bool {
        parse_sig(sig).is_some_and(|sig| self.key.verify(message, &sig).is_ok())
    }
}

/// A signature as the wire carries it (base64url of 64 bytes), if it is one.
fn parse_sig(sig: &str) -> Option<Signature> {
    let bytes = BASE64URL_NOPAD.decode(sig.as_bytes()).ok()?;
    Signature::from_slice(&bytes).ok()
}

/// Which of `items` (message, base64url signature, key) verify, checked together: one ed25519
/// batch verification for all (about twice as fast per signature), and only when that fails,
/// one by one to tell which.
pub fn verify_all(items: &[(Vec<u8>, &str, &PublicKey)]) -> Vec<bool> {
    let parsed: Vec<Option<Signature>> = items.iter().map(|(_, sig, _)| parse_sig(sig)).collect();
    let whole: Vec<usize> = (0..items.len()).filter(|&i| parsed[i].is_some()).collect();
    let mut ok = vec![false; items.len()];
    if whole.len() > 1 {
        let messages: Vec<&[u8]> = whole.iter().map(|&i| items[i].0.as_slice()).collect();
        let sigs: Vec<Signature> = whole.iter().map(|&i| parsed[i].expect("kept")).collect();
        let keys: Vec<VerifyingKey> = whole.iter().map(|&i| items[i].2.key).collect();
        if ed25519_dalek::verify_batch(&messages, &sigs, &keys).is_ok() {
            for &i in &whole {
                ok[i] = true;
            }
            return ok;
        }
    }
    for &i in &whole {
        let (message, _, key) = &items[i];
        ok[i] = key.key.verify(message, &parsed[i].expect("kept")).is_ok();
    }
    ok
}

/// A private key that signs: a host's (events) or an operator's (orders, key records).
pub struct Signer {
    pair: nkeys::KeyPair,
    public: String,
}

impl std::fmt::Debug for Signer {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Signer")
            .field("public", &self.public)
            .finish_non_exhaustive()
    }
}

impl Signer {
    /// Reads an nkeys user seed (`SU…`) from `path`.
    pub fn from_file(path: &Path) -> Result<Signer, KeyError> {
        let text = std::fs::read_to_string(path).map_err(|source| KeyError::Read {
            path: path.to_owned(),
            source,
        })?;
        Signer::from_seed(text.trim()).map_err(|e| KeyError::BadSeed {
            path: path.to_owned(),
            reason: e.0,
        })
    }

    fn from_seed(seed: &str) -> Result<Signer, NotASeed> {
        if !seed.starts_with("SU") {
            return Err(NotASeed("a user seed starts with SU".into()));
        }
        let pair = nkeys::KeyPair::from_seed(seed).map_err(|e| NotASeed(e.to_string()))?;
        let public = pair.public_key();
        Ok(Signer { pair, public })
    }

    /// A new random user key pair.
    pub fn generate() -> Signer {
        let pair = nkeys::KeyPair::new_user();
        let public = pair.public_key();
        Signer { pair, public }
    }

    /// The seed (`SU…`), for writing it to a file.
    pub fn seed(&self) -> String {
        self.pair
            .seed()
            .expect("a generated or read pair has its seed")
    }

    /// The public key (`U…`), the key id.
    pub fn public_key(&self) -> &str {
        &self.public
    }

    fn sign_bytes(&self, message: &[u8]) -> String {
        let sig = self.pair.sign(message).expect("a pair with a seed signs");
        BASE64URL_NOPAD.encode(&sig)
    }

    /// Signs `event` in place (sets `key`, then `sig` over the canonical form with it).
    pub fn sign_event(&self, event: &mut Event) {
        event.key = Some(self.public.clone());
        event.sig = Some(self.sign_bytes(&event_bytes(event)));
    }

    /// Signs `control` in place.
    pub fn sign_control(&self, control: &mut Control) {
        control.key = Some(self.public.clone());
        control.sig = Some(self.sign_bytes(&control_bytes(control)));
    }
}

fn ms(t: SystemTime) -> i128 {
    match t.duration_since(UNIX_EPOCH) {
        Ok(d) => d.as_millis() as i128,
        Err(e) => -(e.duration().as_millis() as i128),
    }
}

fn opt<T: std::fmt::Display>(v: Option<T>) -> String {
    v.map_or_else(|| "-".to_owned(), |v| v.to_string())
}

/// Leads every signed form: never in UTF-8 text, so never in a login nonce.
const NOT_TEXT: u8 = 0xFF;

fn signed_form(text: String) -> Vec<u8> {
    let mut bytes = Vec::with_capacity(text.len() + 1);
    bytes.push(NOT_TEXT);
    bytes.extend_from_slice(text.as_bytes());
    bytes
}

/// The bytes an event's signature covers.
pub fn event_bytes(e: &Event) -> Vec<u8> {
    signed_form(format!(
        "shared-f2b-event/1\n{}\n{}\n{}\n{}\n{}\n{}\n{}\n{}\n{}",
        e.id,
        e.origin,
        e.jail,
        e.ip,
        e.action.as_str(),
        ms(e.time),
        e.bantime,
        e.failures,
        opt(e.key.as_deref()),
    ))
}

/// The bytes an order's signature covers.
pub fn control_bytes(c: &Control) -> Vec<u8> {
    // An intel order's listing follows (tags hold no control character, so a tab parts them);
    // every other order signs as it always did.
    let none = crate::control::Listing::default();
    let listing =
        (c.kind == crate::control::ControlKind::Intel).then(|| c.listing.as_ref().unwrap_or(&none));
    let listing = listing.map_or_else(String::new, |l| {
        format!(
            "\n{}\n{}\n{}",
            opt(l.event),
            opt(l.attribute),
            l.tags.join("\t")
        )
    });
    signed_form(
        format!(
            "shared-f2b-control/1\n{}\n{}\n{}\n{}\n{}\n{}\n{}\n{}\n{}\n{}\n{}\n{}",
            c.id,
            c.operator,
            c.kind.as_str(),
            opt(c.net),
            opt(c.revokes),
            ms(c.time),
            opt(c.until.map(ms)),
            c.reason,
            opt(c.host.as_deref()),
            opt(c.host_key.as_deref()),
            opt(c.since.map(ms)),
            opt(c.key.as_deref()),
        ) + &listing,
    )
}

/// The operator keys a host trusts (`[trust] operator_keys`).
#[derive(Debug, Clone, Default)]
pub struct OperatorKeys(Vec<PublicKey>);

impl OperatorKeys {
    pub fn new(keys: Vec<PublicKey>) -> OperatorKeys {
        OperatorKeys(keys)
    }

    pub fn is_empty(&self) -> bool {
        self.0.is_empty()
    }

    pub fn len(&self) -> usize {
        self.0.len()
    }

    /// Checks an order's signature against the trusted operator keys.
    pub fn check(&self, control: &Control) -> Result<(), SigError> {
        let (Some(key), Some(sig)) = (&control.key, &control.sig) else {
            return Err(SigError::Unsigned);
        };
        let key = self
            .0
            .iter()
            .find(|k| &k.text == key)
            .ok_or(SigError::UnknownKey)?;
        if key.verifies(&control_bytes(control), sig) {
            Ok(())
        } else {
            Err(SigError::BadSignature)
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::event::{Action, parse_ip};

    fn event() -> Event {
        Event::new(
            Action::Ban,
            "alice",
            "sshd",
            parse_ip("192.0.2.7").unwrap(),
            SystemTime::now(),
            600,
            3,
        )
        .unwrap()
    }

    #[test]
    fn a_signed_event_verifies_and_a_changed_one_does_not() {
        let signer = Signer::generate();
        let mut e = event();
        signer.sign_event(&mut e);
        let decoded = Event::decode(&e.encode()).unwrap();
        let key = PublicKey::parse(signer.public_key()).unwrap();
        assert!(key.verifies(&event_bytes(&decoded), decoded.sig.as_deref().unwrap()));
        let mut changed = decoded.clone();
        changed.ip = parse_ip("192.0.2.8").unwrap();
        assert!(!key.verifies(&event_bytes(&changed), changed.sig.as_deref().unwrap()));
        let other = PublicKey::parse(Signer::generate().public_key()).unwrap();
        assert!(!other.verifies(&event_bytes(&decoded), decoded.sig.as_deref().unwrap()));
        assert!(!key.verifies(&event_bytes(&decoded), "not base64!"));
    }

    #[test]
    fn orders_need_a_trusted_operator_key() {
        let operator = Signer::generate();
        let trusted = OperatorKeys::new(vec![PublicKey::parse(operator.public_key()).unwrap()]);
        let mut c = Control::pardon(
            "admin",
            crate::control::parse_net("192.0.2.1").unwrap(),
            None,
            "x",
        )
        .unwrap();
        assert_eq!(trusted.check(&c), Err(SigError::Unsigned));
        operator.sign_control(&mut c);
        let c = Control::decode(&c.encode()).unwrap();
        assert_eq!(trusted.check(&c), Ok(()));
        let mut forged = c.clone();
        forged.reason = "y".into();
        assert_eq!(trusted.check(&forged), Err(SigError::BadSignature));
        let mut stranger = c.clone();
        Signer::generate().sign_control(&mut stranger);
        assert_eq!(trusted.check(&stranger), Err(SigError::UnknownKey));
    }

    #[test]
    fn a_batch_tells_which_verify() {
        let signer = Signer::generate();
        let key = PublicKey::parse(signer.public_key()).unwrap();
        let mut events: Vec<Event> = (0..5).map(|_| event()).collect();
        for e in &mut events {
            signer.sign_event(e);
        }
        events[3].bantime = 1;
        let items: Vec<(Vec<u8>, &str, &PublicKey)> = events
            .iter()
            .map(|e| (event_bytes(e), e.sig.as_deref().unwrap(), &key))
            .collect();
        assert_eq!(verify_all(&items), [true, true, true, false, true]);
        let good = &items[..3];
        assert_eq!(verify_all(good), [true, true, true]);
        let garbled = [(event_bytes(&events[0]), "x", &key)];
        assert_eq!(verify_all(&garbled), [false]);
    }

    #[test]
    fn no_text_is_a_signed_form() {
        let e = event();
        assert!(std::str::from_utf8(&event_bytes(&e)).is_err());
        let c = Control::revoke("admin", e.id, "x").unwrap();
        assert!(std::str::from_utf8(&control_bytes(&c)).is_err());
    }

    #[test]
    fn seeds_and_public_keys_are_checked() {
        assert!(PublicKey::parse("Uxyz").is_err());
        let s = Signer::generate();
        assert!(PublicKey::parse(&s.seed()).is_err());
        assert!(Signer::from_seed(&s.seed()).is_ok());
        assert!(Signer::from_seed(s.public_key()).is_err());
    }
}

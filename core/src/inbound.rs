//! Reading a message off the stream: decode the payload and check it against its subject, so a
//! host can only speak for itself (the subject's host token is what NATS permissions pin).

use crate::control::Control;
use crate::event::Event;
use crate::federation::split_remote;
use crate::subject::{parse_control_subject, parse_subject};

/// Why a received message is not a usable event.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Rejection {
    /// A short, stable name for counting (`spoofed_origin`, `malformed`, …).
    pub reason: &'static str,
    /// What exactly was wrong, for the log.
    pub detail: String,
}

fn reject(reason: &'static str, detail: impl Into<String>) -> Rejection {
    Rejection {
        reason,
        detail: detail.into(),
    }
}

/// The prefix a stored subject's tokens are under, and the federated site it was relayed from:
/// `(prefix, None)` for this site's own, `("f2b.remote.a", Some("a"))` for site a's.
pub fn origin_prefix<'a>(prefix: &'a str, subject: &'a str) -> (&'a str, Option<&'a str>) {
    match split_remote(prefix, subject) {
        Some((site, inner)) => (inner, Some(site)),
        None => (prefix, None),
    }
}

/// Decodes `payload` received on `subject` and checks that origin, jail and action agree with
/// the subject's tokens. An event relayed from a federated site (`<prefix>.remote.<site>.…`)
/// gets that site; a payload naming another site, or a site on a local subject, is refused.
pub fn decode_received(prefix: &str, subject: &str, payload: &[u8]) -> Result<Event, Rejection> {
    let (prefix, site) = origin_prefix(prefix, subject);
    let parsed =
        parse_subject(prefix, subject).map_err(|e| reject("bad_subject", e.to_string()))?;
    let mut event = Event::decode(payload).map_err(|e| reject(e.reason(), e.to_string()))?;
    if event.site.is_some() && event.site.as_deref() != site {
        return Err(reject(
            "spoofed_site",
            format!(
                "payload site {:?} but received from {:?}",
                event.site,
                site.unwrap_or("this site")
            ),
        ));
    }
    event.site = site.map(str::to_owned);
    if event.origin != parsed.host {
        return Err(reject(
            "spoofed_origin",
            format!(
                "payload origin {:?} but published by {:?}",
                event.origin, parsed.host
            ),
        ));
    }
    if event.jail != parsed.jail || event.action != parsed.action {
        return Err(reject(
            "subject_mismatch",
            format!(
                "payload says {} in {:?}, subject says {} in {:?}",
                event.action.as_str(),
                event.jail,
                parsed.action.as_str(),
                parsed.jail
            ),
        ));
    }
    Ok(event)
}

/// Decodes a control event received on `subject` and checks that operator and kind agree with
/// the subject's tokens (the subject is what NATS permissions pin to operator users).
pub fn decode_control(prefix: &str, subject: &str, payload: &[u8]) -> Result<Control, Rejection> {
    let (prefix, _) = origin_prefix(prefix, subject);
    let (kind, operator) =
        parse_control_subject(prefix, subject).map_err(|e| reject("bad_subject", e.to_string()))?;
    let control = Control::decode(payload).map_err(|e| reject(e.reason(), e.to_string()))?;
    if control.operator != operator {
        return Err(reject(
            "spoofed_origin",
            format!(
                "payload operator {:?} but published by {:?}",
                control.operator, operator
            ),
        ));
    }
    if control.kind != kind {
        return Err(reject(
            "subject_mismatch",
            format!(
                "payload says {}, subject says {}",
                control.kind.as_str(),
                kind.as_str()
            ),
        ));
    }
    Ok(control)
}

/// What a message on the stream is.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Received {
    Event(Event),
    Control(Control),
}

/// Decodes any message stored on the stream: a control event on a control subject, else an
/// event (relayed ones from federated sites too: [`origin_prefix`] tells which site).
pub fn decode_any(prefix: &str, subject: &str, payload: &[u8]) -> Result<Received, Rejection> {
    if crate::subject::is_control(origin_prefix(prefix, subject).0, subject) {
        decode_control(prefix, subject, payload).map(Received::Control)
    } else {
        decode_received(prefix, subject, payload).map(Received::Event)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::event::{Action, parse_ip};
    use std::time::SystemTime;

    #[test]
    fn subject_and_payload_must_agree() {
        let e = Event::new(
            Action::Ban,
            "alice",
            "sshd",
            parse_ip("192.0.2.1").unwrap(),
            SystemTime::now(),
            600,
            1,
        )
        .unwrap();
        let p = e.encode();
        let reason = |s: &str, p: &[u8]| decode_received("f2b", s, p).err().map(|r| r.reason);
        assert_eq!(reason("f2b.ban.sshd.alice", &p), None);
        assert_eq!(reason("f2b.ban.sshd.mallory", &p), Some("spoofed_origin"));
        assert_eq!(reason("f2b.unban.sshd.alice", &p), Some("subject_mismatch"));
        assert_eq!(reason("f2b.ban.nginx.alice", &p), Some("subject_mismatch"));
        assert_eq!(reason("f2b.ban.sshd", &p), Some("bad_subject"));
        assert_eq!(reason("f2b.ban.sshd.alice", b"{nope"), Some("malformed"));
        // Relayed from site a: the subject gives the site, the payload may not name another.
        let relayed = decode_received("f2b", "f2b.remote.a.ban.sshd.alice", &p).unwrap();
        assert_eq!(relayed.site.as_deref(), Some("a"));
        assert_eq!(relayed.who(), "alice@a");
        let mut claims = e.clone();
        claims.site = Some("b".into());
        let claims = claims.encode();
        assert_eq!(
            reason("f2b.remote.a.ban.sshd.alice", &claims),
            Some("spoofed_site")
        );
        assert_eq!(reason("f2b.ban.sshd.alice", &claims), Some("spoofed_site"));
        assert_eq!(
            reason("f2b.remote.a.ban.sshd.mallory", &p),
            Some("spoofed_origin")
        );
    }

    #[test]
    fn control_subject_and_payload_must_agree() {
        let c = Control::pardon(
            "admin",
            crate::control::parse_net("192.0.2.1").unwrap(),
            None,
            "oops",
        )
        .unwrap();
        let p = c.encode();
        let reason = |s: &str| decode_any("f2b", s, &p).err().map(|r| r.reason);
        assert_eq!(reason("f2b.control.pardon.admin"), None);
        assert_eq!(reason("f2b.control.pardon.mallory"), Some("spoofed_origin"));
        assert_eq!(reason("f2b.control.allow.admin"), Some("subject_mismatch"));
        assert_eq!(reason("f2b.control.pardon"), Some("bad_subject"));
        assert_eq!(reason("f2b.ban.sshd.admin"), Some("malformed"));
    }
}

//! Reading a message off the stream: decode the payload and check it against its subject, so a
//! host can only speak for itself (the subject's host token is what NATS permissions pin).

use crate::control::Control;
use crate::event::Event;
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

/// Decodes `payload` received on `subject` and checks that origin, jail and action agree with
/// the subject's tokens.
pub fn decode_received(prefix: &str, subject: &str, payload: &[u8]) -> Result<Event, Rejection> {
    let parsed =
        parse_subject(prefix, subject).map_err(|e| reject("bad_subject", e.to_string()))?;
    let event = Event::decode(payload).map_err(|e| reject(e.reason(), e.to_string()))?;
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
/// event.
pub fn decode_any(prefix: &str, subject: &str, payload: &[u8]) -> Result<Received, Rejection> {
    if crate::subject::is_control(prefix, subject) {
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

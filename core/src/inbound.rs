//! Reading a message off the stream: decode the payload and check it against its subject, so a
//! host can only speak for itself (the subject's host token is what NATS permissions pin).

use crate::event::Event;
use crate::subject::parse_subject;

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
}

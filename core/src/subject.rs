//! Subject naming: `<prefix>.<action>.<jail>.<host>`, with jail and host encoded as one token.
//!
//! A NATS subject token may not hold `.`, `*`, `>` or whitespace, and permissions are written
//! against tokens, so every name is encoded into `[A-Za-z0-9_-]`: bytes outside that set become
//! `_XX` (uppercase hex) and `_` itself becomes `__`. The encoding is reversible and leaves the
//! common names (`sshd`, `nginx-http-auth`, `bob`) unchanged.

use crate::control::ControlKind;
use crate::event::Action;
use thiserror::Error;

/// Why a subject or token could not be understood.
#[derive(Debug, Error, PartialEq, Eq)]
pub enum SubjectError {
    #[error("empty name: a jail or host name needs at least one character")]
    EmptyName,
    #[error("malformed subject token {0:?}")]
    BadToken(String),
    #[error("subject {subject:?} is not <prefix>.ban|unban.<jail>.<host> under prefix {prefix:?}")]
    NotOurs { subject: String, prefix: String },
    #[error(
        "invalid subject_prefix {0:?}: use dot-separated tokens of letters, digits, '_' and '-'"
    )]
    BadPrefix(String),
}

fn is_plain(b: u8) -> bool {
    b.is_ascii_alphanumeric() || b == b'-'
}

/// Encodes a raw jail or host name into a single subject token.
pub fn encode_token(name: &str) -> Result<String, SubjectError> {
    if name.is_empty() {
        return Err(SubjectError::EmptyName);
    }
    let mut out = String::with_capacity(name.len());
    for &b in name.as_bytes() {
        if is_plain(b) {
            out.push(b as char);
        } else if b == b'_' {
            out.push_str("__");
        } else {
            out.push_str(&format!("_{b:02X}"));
        }
    }
    Ok(out)
}

/// Decodes a token made by [`encode_token`] back into the raw name.
pub fn decode_token(token: &str) -> Result<String, SubjectError> {
    let bad = || SubjectError::BadToken(token.to_owned());
    if token.is_empty() {
        return Err(bad());
    }
    let bytes = token.as_bytes();
    let mut out = Vec::with_capacity(bytes.len());
    let mut i = 0;
    while i < bytes.len() {
        match bytes[i] {
            b if is_plain(b) => {
                out.push(b);
                i += 1;
            }
            b'_' if bytes.get(i + 1) == Some(&b'_') => {
                out.push(b'_');
                i += 2;
            }
            b'_' => {
                let hex = token.get(i + 1..i + 3).ok_or_else(bad)?;
                // Only the uppercase form is produced; accepting others would make two
                // tokens name the same jail or host.
                if !hex
                    .bytes()
                    .all(|c| c.is_ascii_digit() || (b'A'..=b'F').contains(&c))
                {
                    return Err(bad());
                }
                let byte = u8::from_str_radix(hex, 16).map_err(|_| bad())?;
                if is_plain(byte) || byte == b'_' {
                    return Err(bad());
                }
                out.push(byte);
                i += 3;
            }
            _ => return Err(bad()),
        }
    }
    String::from_utf8(out).map_err(|_| bad())
}

/// Checks a configured subject prefix (`f2b`, `site.f2b`).
pub fn validate_prefix(prefix: &str) -> Result<(), SubjectError> {
    let ok = !prefix.is_empty()
        && prefix
            .split('.')
            .all(|t| !t.is_empty() && t.bytes().all(|b| is_plain(b) || b == b'_'));
    if ok {
        Ok(())
    } else {
        Err(SubjectError::BadPrefix(prefix.to_owned()))
    }
}

/// The subject an event is published on.
pub fn event_subject(
    prefix: &str,
    action: Action,
    jail: &str,
    host: &str,
) -> Result<String, SubjectError> {
    Ok(format!(
        "{prefix}.{}.{}.{}",
        action.as_str(),
        encode_token(jail)?,
        encode_token(host)?
    ))
}

/// The subjects the stream captures: every ban and unban, the operators' control events, and
/// what the archiver relays from federated sites (`<prefix>.remote.<site>.…`).
pub fn stream_subjects(prefix: &str) -> Vec<String> {
    vec![
        format!("{prefix}.ban.>"),
        format!("{prefix}.unban.>"),
        format!("{prefix}.control.>"),
        format!("{prefix}.remote.>"),
    ]
}

/// The subject an operator's control event is published on: `<prefix>.control.<kind>.<operator>`
/// (only operator users may publish there).
pub fn control_subject(
    prefix: &str,
    kind: ControlKind,
    operator: &str,
) -> Result<String, SubjectError> {
    Ok(format!(
        "{prefix}.control.{}.{}",
        kind.as_str(),
        encode_token(operator)?
    ))
}

/// Whether a stored subject is a control subject (whatever its tokens hold).
pub fn is_control(prefix: &str, subject: &str) -> bool {
    subject
        .strip_prefix(prefix)
        .is_some_and(|rest| rest.starts_with(".control."))
}

/// Splits a control subject into kind and raw operator name.
pub fn parse_control_subject(
    prefix: &str,
    subject: &str,
) -> Result<(ControlKind, String), SubjectError> {
    let not_ours = || SubjectError::NotOurs {
        subject: subject.to_owned(),
        prefix: prefix.to_owned(),
    };
    let rest = subject
        .strip_prefix(prefix)
        .and_then(|r| r.strip_prefix(".control."))
        .ok_or_else(not_ours)?;
    let mut parts = rest.split('.');
    let (Some(kind), Some(operator), None) = (parts.next(), parts.next(), parts.next()) else {
        return Err(not_ours());
    };
    let kind = ControlKind::parse(kind).ok_or_else(not_ours)?;
    Ok((kind, decode_token(operator)?))
}

/// The subjects every host subscribes to: the stream re-publishes each stored event on
/// `<prefix>.live.<action>.<jail>.<host>` (headers `Nats-Stream`, `Nats-Sequence`, …), so hosts
/// follow it with a plain subscription and need no JetStream API at all.
pub fn live_subjects(prefix: &str) -> String {
    format!("{prefix}.live.>")
}

/// The stream's RePublish rule: (source, destination).
pub fn republish(prefix: &str) -> (String, String) {
    (format!("{prefix}.>"), live_subjects(prefix))
}

/// The subject a live message was stored on: [`republish`] in reverse
/// (`<prefix>.live.<rest>` -> `<prefix>.<rest>`); `None` for anything else.
pub fn stored_subject(prefix: &str, live_subject: &str) -> Option<String> {
    let rest = live_subject.strip_prefix(prefix)?.strip_prefix(".live.")?;
    Some(format!("{prefix}.{rest}"))
}

/// What a received subject says about its event.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ParsedSubject {
    pub action: Action,
    pub jail: String,
    pub host: String,
}

/// Splits a received subject into action, raw jail and raw host (the origin).
pub fn parse_subject(prefix: &str, subject: &str) -> Result<ParsedSubject, SubjectError> {
    let not_ours = || SubjectError::NotOurs {
        subject: subject.to_owned(),
        prefix: prefix.to_owned(),
    };
    let rest = subject
        .strip_prefix(prefix)
        .and_then(|r| r.strip_prefix('.'))
        .ok_or_else(not_ours)?;
    let mut parts = rest.split('.');
    let (Some(action), Some(jail), Some(host), None) =
        (parts.next(), parts.next(), parts.next(), parts.next())
    else {
        return Err(not_ours());
    };
    let action = match action {
        "ban" => Action::Ban,
        "unban" => Action::Unban,
        _ => return Err(not_ours()),
    };
    Ok(ParsedSubject {
        action,
        jail: decode_token(jail)?,
        host: decode_token(host)?,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn plain_names_are_unchanged() {
        for n in ["sshd", "nginx-http-auth", "bob", "Host-01"] {
            assert_eq!(encode_token(n).unwrap(), n);
        }
    }

    #[test]
    fn hostile_names_round_trip_into_one_token() {
        for n in [
            "a.b.example.org",
            "my jail",
            "*",
            ">",
            "nginx_auth",
            "__",
            "_41",
            "ünïcödé",
            "a\0b",
            "tab\there",
        ] {
            let t = encode_token(n).unwrap();
            assert!(
                t.bytes().all(|b| is_plain(b) || b == b'_'),
                "{n:?} -> {t:?} is not one token"
            );
            assert_eq!(decode_token(&t).unwrap(), n);
        }
        assert_eq!(encode_token("a.b").unwrap(), "a_2Eb");
        assert_eq!(encode_token("x_y").unwrap(), "x__y");
    }

    #[test]
    fn non_canonical_tokens_are_refused() {
        for t in ["", "a_2e", "a_4", "a_41", "a_5F", "a.b", "a*", "_ZZ", "_FF"] {
            assert!(decode_token(t).is_err(), "{t:?} decoded");
        }
    }

    #[test]
    fn subjects_parse_back() {
        let s = event_subject("f2b", Action::Ban, "sshd", "bob.example.org").unwrap();
        assert_eq!(s, "f2b.ban.sshd.bob_2Eexample_2Eorg");
        let p = parse_subject("f2b", &s).unwrap();
        assert_eq!(p.host, "bob.example.org");
        assert_eq!(p.action, Action::Ban);
        assert!(parse_subject("f2b", "f2b.ban.sshd").is_err());
        assert!(parse_subject("f2b", "f2bx.ban.sshd.a").is_err());
        assert!(parse_subject("f2b", "f2b.kick.sshd.a").is_err());
        assert!(parse_subject("f2b", "f2b.ban.sshd.a.b").is_err());
        let c = control_subject("f2b", ControlKind::Pardon, "ops.example.org").unwrap();
        assert_eq!(c, "f2b.control.pardon.ops_2Eexample_2Eorg");
        assert!(is_control("f2b", &c) && !is_control("f2b", &s));
        let (kind, who) = parse_control_subject("f2b", &c).unwrap();
        assert_eq!(
            (kind, who.as_str()),
            (ControlKind::Pardon, "ops.example.org")
        );
        assert!(parse_control_subject("f2b", "f2b.control.nuke.admin").is_err());
        assert!(parse_control_subject("f2b", "f2b.control.ban.a.b").is_err());
        assert!(parse_subject("f2b", &c).is_err());
    }

    #[test]
    fn live_subjects_lead_back_to_the_stored_ones() {
        assert_eq!(
            stored_subject("f2b", "f2b.live.ban.sshd.alice").as_deref(),
            Some("f2b.ban.sshd.alice")
        );
        for other in [
            "f2b.ban.sshd.alice",
            "f2bx.live.ban.a.b",
            "f2b.live",
            "g.live.ban.a.b",
        ] {
            assert_eq!(stored_subject("f2b", other), None, "{other}");
        }
    }

    #[test]
    fn prefixes() {
        assert!(validate_prefix("f2b").is_ok());
        assert!(validate_prefix("site.f2b_x").is_ok());
        for p in ["", "a..b", "f2b.>", "f2b.*", "a b", ".f2b"] {
            assert!(validate_prefix(p).is_err(), "{p:?}");
        }
    }
}

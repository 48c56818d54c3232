//! `PUT /api/v1/put`: an old host's ban, as its `actionban` script sends it.

use shared_f2b::event::{self, Action, Event};
use std::time::SystemTime;

/// The body the original's client sends: every field a string. `hostname` and `date` are read
/// and not used: the token says which host it is, and the arrival is when it happened (the
/// host's local time carries no zone).
#[derive(Debug, serde::Deserialize)]
#[serde(deny_unknown_fields)]
pub struct PutBody {
    #[serde(default)]
    pub hostname: Option<String>,
    #[serde(default)]
    pub date: Option<String>,
    pub jail: String,
    #[serde(default)]
    pub proto: Option<String>,
    #[serde(default)]
    pub port: Option<String>,
    pub ip: String,
    #[serde(default)]
    pub bantime: Option<String>,
}

/// Why a PUT's body is refused (the answer's text).
#[derive(Debug, thiserror::Error)]
pub enum BadPut {
    #[error("the body is not the JSON object the original's client sends: {0}")]
    Json(String),
    #[error("ip: {0}")]
    Ip(event::EventError),
    #[error("jail: {0}")]
    Jail(event::EventError),
    #[error("bantime: seconds, or -1 for a permanent ban")]
    Bantime,
    #[error("port or proto: {0}")]
    Ports(event::EventError),
    #[error(
        "ip: {0} is never banned here (loopback, link-local, multicast, a NATS server or the allowlist)"
    )]
    Never(std::net::IpAddr),
}

/// The event of `host`'s ban described by `body`, made now.
pub fn event(host: &str, body: &[u8], now: SystemTime) -> Result<Event, BadPut> {
    let body: PutBody = serde_json::from_slice(body).map_err(|e| BadPut::Json(e.to_string()))?;
    let ip = event::parse_ip(body.ip.trim()).map_err(BadPut::Ip)?;
    let jail = body.jail.trim().to_ascii_lowercase();
    event::validate_jail(&jail).map_err(BadPut::Jail)?;
    let bantime = match body.bantime.as_deref().map(str::trim) {
        None | Some("") => super::super::row::DEFAULT_BANTIME,
        Some(text) => text
            .parse::<i64>()
            .ok()
            .filter(|b| event::validate_bantime(*b).is_ok())
            .ok_or(BadPut::Bantime)?,
    };
    let mut event =
        Event::new(Action::Ban, host, &jail, ip, now, bantime, 0).map_err(BadPut::Jail)?;
    event
        .set_ports(body.port.as_deref(), body.proto.as_deref())
        .map_err(BadPut::Ports)?;
    Ok(event)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_original_body_and_what_is_refused() {
        let now = SystemTime::now();
        let body = br#"{"hostname": "bob.example.org", "date": "2025-03-01 10:00:00.123456",
            "jail": "SSH", "proto": "tcp", "port": "ssh", "ip": "192.0.2.7", "bantime": "3600"}"#;
        let e = event("alice", body, now).unwrap();
        assert_eq!(
            (e.origin.as_str(), e.jail.as_str(), e.bantime),
            ("alice", "ssh", 3600)
        );
        assert_eq!(e.port.as_deref(), Some("ssh"));
        let bad = |body: &str| {
            event("alice", body.as_bytes(), now)
                .unwrap_err()
                .to_string()
        };
        assert!(bad("{").contains("JSON"));
        assert!(bad(r#"{"jail": "ssh", "ip": "192.0.2.300"}"#).starts_with("ip"));
        assert!(bad(r#"{"jail": "ssh'--", "ip": "192.0.2.3"}"#).starts_with("jail"));
        assert!(
            bad(r#"{"jail": "ssh", "ip": "192.0.2.3", "bantime": "1e9"}"#).starts_with("bantime")
        );
        assert!(bad(r#"{"jail": "ssh", "ip": "192.0.2.3", "port": "1;DROP"}"#).starts_with("port"));
        assert!(bad(r#"{"jail": "ssh", "ip": 3}"#).contains("JSON"));
        assert!(bad(r#"{"jail": "ssh", "ip": "192.0.2.3", "origin": "bob"}"#).contains("JSON"));
    }
}

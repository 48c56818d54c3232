//! The wire event: versioned JSON describing one ban or unban by one host.
//!
//! Everything that crosses the wire goes through [`Event::decode`] / [`Event::encode`], so the
//! checks that keep a malformed or spoofed event from banning the wrong address live here once.

use serde::{Deserialize, Serialize};
use std::net::IpAddr;
use std::time::{Duration, SystemTime, UNIX_EPOCH};
use thiserror::Error;
use uuid::Uuid;

/// The schema version this build writes and understands.
pub const SCHEMA_VERSION: u32 = 1;
/// Larger payloads are refused unread: a real event is about 250 bytes.
pub const MAX_PAYLOAD: usize = 4096;
/// Longest jail name accepted.
pub const MAX_JAIL_LEN: usize = 64;
/// Longest host id accepted (a fully qualified domain name).
pub const MAX_HOST_LEN: usize = 253;
/// Longest port text accepted (the original's `port` column).
pub const MAX_PORT_LEN: usize = 32;
/// Longest protocol text accepted (the original's `protocol` column).
pub const MAX_PROTOCOL_LEN: usize = 16;
/// Bantime that means "forever", as in Fail2Ban.
pub const PERMANENT: i64 = -1;
/// Longest bantime accepted (100 years): anything longer is an error, not a ban.
pub const MAX_BANTIME: i64 = 100 * 365 * 24 * 3600;

/// Ban or unban.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Action {
    Ban,
    Unban,
}

impl Action {
    /// The word used in subjects and payloads.
    pub fn as_str(self) -> &'static str {
        match self {
            Action::Ban => "ban",
            Action::Unban => "unban",
        }
    }
}

/// One ban or unban, as published.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Event {
    pub v: u32,
    pub id: Uuid,
    pub origin: String,
    pub jail: String,
    pub ip: IpAddr,
    pub action: Action,
    #[serde(with = "rfc3339")]
    pub time: SystemTime,
    pub bantime: i64,
    pub failures: u32,
    /// The signer's public key (nkeys `U…`), the key id; absent on unsigned events.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub key: Option<String>,
    /// The signature over [`crate::signing::event_bytes`] (base64url, no padding).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub sig: Option<String>,
    /// The federated site it came from, as the receiving site labels it (the subject it was
    /// relayed on decides, never the sender; not signed); absent: this site's own.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub site: Option<String>,
    /// The jail's port(s) as Fail2Ban names them (`ssh`, `22`, `http,https`, `0:65535`):
    /// information for people, not signed, never used to decide what is banned.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub port: Option<String>,
    /// The jail's protocol (`tcp`, `udp`, `all`): information, like `port`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub protocol: Option<String>,
}

/// Why an event or one of its fields was refused.
#[derive(Debug, Error, PartialEq, Eq)]
pub enum EventError {
    #[error("invalid IP address {0:?}: expected an IPv4 or IPv6 address without prefix or zone")]
    BadIp(String),
    #[error(
        "invalid jail name {0:?}: use 1-{MAX_JAIL_LEN} letters, digits, '_' or '-' (no dots, spaces or wildcards)"
    )]
    BadJail(String),
    #[error(
        "invalid host id {0:?}: use 1-{MAX_HOST_LEN} printable characters without whitespace or '@'"
    )]
    BadHost(String),
    #[error("invalid bantime {0}: expected 0 to {MAX_BANTIME} seconds, or -1 for permanent")]
    BadBantime(i64),
    #[error(
        "invalid port {0:?}: use 1-{MAX_PORT_LEN} letters, digits, ',', ':', '-' or '_' (e.g. ssh, 22, http,https, 0:65535)"
    )]
    BadPort(String),
    #[error(
        "invalid protocol {0:?}: use 1-{MAX_PROTOCOL_LEN} letters or digits (e.g. tcp, udp, all)"
    )]
    BadProtocol(String),
    #[error("invalid time {0}: expected seconds since the Unix epoch")]
    BadTime(String),
    #[error("payload of {0} bytes exceeds the {MAX_PAYLOAD}-byte limit")]
    Oversize(usize),
    #[error("unsupported schema version {0} (this build understands {SCHEMA_VERSION})")]
    Version(u32),
    #[error("malformed event: {0}")]
    Malformed(String),
}

impl EventError {
    /// A short, stable name for counting rejections by reason.
    pub fn reason(&self) -> &'static str {
        match self {
            EventError::BadIp(_) => "bad_ip",
            EventError::BadJail(_) => "bad_jail",
            EventError::BadHost(_) => "bad_host",
            EventError::BadBantime(_) => "bad_bantime",
            EventError::BadPort(_) => "bad_port",
            EventError::BadProtocol(_) => "bad_protocol",
            EventError::BadTime(_) => "bad_time",
            EventError::Oversize(_) => "oversize",
            EventError::Version(_) => "version",
            EventError::Malformed(_) => "malformed",
        }
    }
}

/// Parses an address as Fail2Ban hands it over, normalising `::ffff:a.b.c.d` to `a.b.c.d`.
pub fn parse_ip(text: &str) -> Result<IpAddr, EventError> {
    text.parse::<IpAddr>()
        .map(|ip| ip.to_canonical())
        .map_err(|_| EventError::BadIp(text.to_owned()))
}

/// How far ahead of the receiver's clock an event's time may be before it is taken as made
/// on arrival ([`Event::clamp_time`]).
pub const MAX_SKEW: Duration = Duration::from_secs(300);

/// Checks a jail name.
pub fn validate_jail(jail: &str) -> Result<(), EventError> {
    let ok = !jail.is_empty()
        && jail.len() <= MAX_JAIL_LEN
        && jail
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || b == b'_' || b == b'-');
    if ok {
        Ok(())
    } else {
        Err(EventError::BadJail(jail.to_owned()))
    }
}

/// Checks a host id (the origin of events).
pub fn validate_host(host: &str) -> Result<(), EventError> {
    let ok = !host.is_empty()
        && host.len() <= MAX_HOST_LEN
        && host
            .chars()
            .all(|c| !c.is_whitespace() && !c.is_control() && c != '@');
    if ok {
        Ok(())
    } else {
        Err(EventError::BadHost(host.to_owned()))
    }
}

/// Checks a port text (`ssh`, `22`, `http,https`, `0:65535`).
pub fn validate_port(port: &str) -> Result<(), EventError> {
    let ok = !port.is_empty()
        && port.len() <= MAX_PORT_LEN
        && port
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || matches!(b, b',' | b':' | b'-' | b'_'));
    if ok {
        Ok(())
    } else {
        Err(EventError::BadPort(port.to_owned()))
    }
}

/// Checks a protocol name (`tcp`, `udp`, `all`).
pub fn validate_protocol(protocol: &str) -> Result<(), EventError> {
    let ok = !protocol.is_empty()
        && protocol.len() <= MAX_PROTOCOL_LEN
        && protocol.bytes().all(|b| b.is_ascii_alphanumeric());
    if ok {
        Ok(())
    } else {
        Err(EventError::BadProtocol(protocol.to_owned()))
    }
}

/// Checks a bantime in seconds.
pub fn validate_bantime(bantime: i64) -> Result<(), EventError> {
    if (PERMANENT..=MAX_BANTIME).contains(&bantime) {
        Ok(())
    } else {
        Err(EventError::BadBantime(bantime))
    }
}

/// Parses Fail2Ban's `<time>` tag (seconds since the epoch, possibly fractional).
pub fn parse_epoch(text: &str) -> Result<SystemTime, EventError> {
    let bad = || EventError::BadTime(text.to_owned());
    let secs: f64 = text.trim().parse().map_err(|_| bad())?;
    // Up to the year 9999: anything later is an error, not a time.
    if !secs.is_finite() || !(0.0..253_402_300_800.0).contains(&secs) {
        return Err(bad());
    }
    Ok(UNIX_EPOCH + Duration::from_secs_f64(secs))
}

/// The wire carries milliseconds; an event must equal its own decoded form.
pub(crate) fn truncate_to_millis(t: SystemTime) -> SystemTime {
    match t.duration_since(UNIX_EPOCH) {
        Ok(d) => UNIX_EPOCH + Duration::from_millis(d.as_millis() as u64),
        Err(_) => t,
    }
}

impl Event {
    /// Builds a new event with a fresh time-ordered id, validating every field.
    pub fn new(
        action: Action,
        origin: &str,
        jail: &str,
        ip: IpAddr,
        time: SystemTime,
        bantime: i64,
        failures: u32,
    ) -> Result<Event, EventError> {
        let event = Event {
            v: SCHEMA_VERSION,
            id: Uuid::now_v7(),
            origin: origin.to_owned(),
            jail: jail.to_owned(),
            ip: ip.to_canonical(),
            action,
            time: truncate_to_millis(time),
            bantime,
            failures,
            key: None,
            sig: None,
            site: None,
            port: None,
            protocol: None,
        };
        event.validate()?;
        Ok(event)
    }

    /// Sets the jail's port(s) and protocol as Fail2Ban (or the original's table) gives them:
    /// whitespace dropped, the protocol lower-cased, empty text meaning "not given".
    pub fn set_ports(
        &mut self,
        port: Option<&str>,
        protocol: Option<&str>,
    ) -> Result<(), EventError> {
        let port: Option<String> = port
            .map(|p| p.chars().filter(|c| !c.is_whitespace()).collect::<String>())
            .filter(|p| !p.is_empty());
        let protocol = protocol
            .map(|p| p.trim().to_ascii_lowercase())
            .filter(|p| !p.is_empty());
        if let Some(port) = &port {
            validate_port(port)?;
        }
        if let Some(protocol) = &protocol {
            validate_protocol(protocol)?;
        }
        self.port = port;
        self.protocol = protocol;
        Ok(())
    }

    /// Checks every field; a decoded event is only used after this passed.
    pub fn validate(&self) -> Result<(), EventError> {
        if self.v != SCHEMA_VERSION {
            return Err(EventError::Version(self.v));
        }
        validate_host(&self.origin)?;
        validate_jail(&self.jail)?;
        validate_bantime(self.bantime)?;
        if let Some(port) = &self.port {
            validate_port(port)?;
        }
        if let Some(protocol) = &self.protocol {
            validate_protocol(protocol)?;
        }
        if let Some(site) = &self.site {
            crate::federation::validate_site(site)
                .map_err(|e| EventError::Malformed(e.to_string()))?;
        }
        Ok(())
    }

    /// Who made it, as logs and pages show it: `alice`, or `alice@a` for a host of a federated
    /// site.
    pub fn who(&self) -> String {
        match &self.site {
            Some(site) => crate::federation::origin_at(&self.origin, site),
            None => self.origin.clone(),
        }
    }

    /// When the ban ends, or `None` for a permanent ban (or one ending beyond what the clock
    /// can represent).
    pub fn expires(&self) -> Option<SystemTime> {
        if self.bantime == PERMANENT {
            return None;
        }
        self.time
            .checked_add(Duration::from_secs(self.bantime.max(0) as u64))
    }

    /// Takes an event stamped more than [`MAX_SKEW`] after `now` as made `now`: a fast (or
    /// hostile) clock at the origin must not stretch a ban, nor date it years ahead. Returns
    /// whether it changed the time.
    pub fn clamp_time(&mut self, now: SystemTime) -> bool {
        let late = self.time > now + MAX_SKEW;
        if late {
            self.time = truncate_to_millis(now);
        }
        late
    }

    /// Whether the ban is over at `now` (a permanent ban never is).
    pub fn expired_at(&self, now: SystemTime) -> bool {
        self.expires().is_some_and(|end| end <= now)
    }

    /// The JSON payload.
    pub fn encode(&self) -> Vec<u8> {
        serde_json::to_vec(self).expect("an event always serialises")
    }

    /// Parses and validates a payload; unknown fields are ignored.
    pub fn decode(payload: &[u8]) -> Result<Event, EventError> {
        if payload.len() > MAX_PAYLOAD {
            return Err(EventError::Oversize(payload.len()));
        }
        #[derive(Deserialize)]
        struct Version {
            v: u32,
        }
        let version: Version = serde_json::from_slice(payload)
            .map_err(|e| EventError::Malformed(format!("no schema version: {e}")))?;
        if version.v != SCHEMA_VERSION {
            return Err(EventError::Version(version.v));
        }
        let mut event: Event =
            serde_json::from_slice(payload).map_err(|e| EventError::Malformed(e.to_string()))?;
        event.ip = event.ip.to_canonical();
        // What the wire and the signature carry: milliseconds.
        event.time = truncate_to_millis(event.time);
        event.validate()?;
        Ok(event)
    }
}

/// RFC 3339 UTC timestamps with milliseconds, as `serde(with)`.
pub(crate) mod rfc3339 {
    use serde::{Deserialize, Deserializer, Serializer, de::Error};
    use std::time::SystemTime;

    pub fn serialize<S: Serializer>(t: &SystemTime, s: S) -> Result<S::Ok, S::Error> {
        s.collect_str(&humantime::format_rfc3339_millis(*t))
    }

    pub fn deserialize<'de, D: Deserializer<'de>>(d: D) -> Result<SystemTime, D::Error> {
        let text = <std::borrow::Cow<'de, str>>::deserialize(d)?;
        humantime::parse_rfc3339_weak(&text)
            .map_err(|e| D::Error::custom(format!("time {text:?}: {e}")))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn sample() -> Event {
        Event::new(
            Action::Ban,
            "alice",
            "sshd",
            parse_ip("192.0.2.7").unwrap(),
            UNIX_EPOCH + Duration::from_millis(1_700_000_000_123),
            600,
            5,
        )
        .unwrap()
    }

    #[test]
    fn round_trips_with_the_documented_fields() {
        let e = sample();
        let json: serde_json::Value = serde_json::from_slice(&e.encode()).unwrap();
        assert_eq!(json["v"], 1);
        assert_eq!(json["ip"], "192.0.2.7");
        assert_eq!(json["action"], "ban");
        assert_eq!(json["time"], "2023-11-14T22:13:20.123Z");
        assert_eq!(Event::decode(&e.encode()).unwrap(), e);
    }

    #[test]
    fn ips_are_normalised_and_checked() {
        assert_eq!(parse_ip("::ffff:10.1.2.3").unwrap().to_string(), "10.1.2.3");
        assert_eq!(
            parse_ip("2001:DB8::0:1").unwrap().to_string(),
            "2001:db8::1"
        );
        for bad in [
            "",
            "not-an-ip",
            "1.2.3",
            "1.2.3.4/24",
            "fe80::1%eth0",
            "01.2.3.4",
            "1.2.3.4 ",
            "256.1.1.1",
        ] {
            assert!(parse_ip(bad).is_err(), "{bad:?}");
        }
    }

    #[test]
    fn names_are_checked() {
        assert!(validate_jail("nginx-http_auth").is_ok());
        for bad in ["", "a.b", "my jail", "f2b.>", "*", "x".repeat(65).as_str()] {
            assert!(validate_jail(bad).is_err(), "{bad:?}");
        }
        assert!(validate_host("bob.example.org").is_ok());
        for bad in ["", "a b", "a\0b", "a\nb"] {
            assert!(validate_host(bad).is_err(), "{bad:?}");
        }
    }

    #[test]
    fn bad_payloads_are_refused_with_a_reason() {
        let good = String::from_utf8(sample().encode()).unwrap();
        let cases = [
            ("{", "malformed"),
            ("{\"v\":2}", "version"),
            (&good.replace("192.0.2.7", "999.0.0.1"), "malformed"),
            (&good.replace("\"sshd\"", "\"a.b\""), "bad_jail"),
            // The field, not any "600" (a random uuid may hold one).
            (
                &good.replace("\"bantime\":600", "\"bantime\":-5"),
                "bad_bantime",
            ),
            (
                &good.replace("\"bantime\":600", "\"bantime\":9223372036854775807"),
                "bad_bantime",
            ),
        ];
        for (payload, reason) in cases {
            let err = Event::decode(payload.as_bytes()).unwrap_err();
            assert_eq!(err.reason(), reason, "{payload}: {err}");
        }
        let big = format!("{}{}", good, " ".repeat(MAX_PAYLOAD));
        assert_eq!(
            Event::decode(big.as_bytes()).unwrap_err().reason(),
            "oversize"
        );
        let extra = good.replacen('{', "{\"future\":true,", 1);
        assert!(Event::decode(extra.as_bytes()).is_ok());
    }

    #[test]
    fn mapped_ipv6_in_a_payload_is_normalised() {
        let good = String::from_utf8(sample().encode()).unwrap();
        let mapped = good.replace("192.0.2.7", "::ffff:192.0.2.7");
        assert_eq!(
            Event::decode(mapped.as_bytes()).unwrap().ip.to_string(),
            "192.0.2.7"
        );
    }

    #[test]
    fn epochs_and_expiry() {
        assert!(parse_epoch("1700000000.25").is_ok());
        for bad in ["", "x", "-1", "inf", "NaN", "1e30"] {
            assert!(parse_epoch(bad).is_err(), "{bad:?}");
        }
        let e = sample();
        assert!(e.expired_at(SystemTime::now()));
        let forever = Event {
            bantime: PERMANENT,
            ..e
        };
        assert!(!forever.expired_at(SystemTime::now()));
    }
}

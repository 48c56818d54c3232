//! Control events: what an operator orders for the whole site, as versioned JSON on
//! `<prefix>.control.<kind>.<operator>` (only operator users may publish there).
//!
//! - `pardon`: lift the address (or every address in the net) everywhere now, and apply no
//!   remote ban of it until the pardon ends;
//! - `allow`: the same for a net meant to stay allowed (a partner's gateway, a probe); by default
//!   until revoked;
//! - `revoke`: end a pardon or allow early (names it by id);
//! - `ban`: ban one address everywhere, as if every host had reported it;
//! - `key`: a key record, vouching that a public key is a host's from `since` until `until`
//!   (see [`crate::keyring`]);
//! - `intel`: an address or net a threat-intelligence source lists (MISP, a blocklist), taken
//!   in by the archiver (`[[archiver.intake]]`) and ordered banned until `until`; its
//!   "operator" is the source's name, its [`Listing`] says where in the source it came from;
//! - `unlist`: the source no longer lists the net: lift what its `intel` orders placed.
//!
//! Like [`crate::event`], everything that crosses the wire goes through [`Control::decode`] /
//! [`Control::encode`], so the checks live here once.

use crate::event::{
    EventError, MAX_PAYLOAD, PERMANENT, SCHEMA_VERSION, validate_bantime, validate_host,
};
use ipnet::IpNet;
use serde::{Deserialize, Serialize};
use std::net::IpAddr;
use std::time::{Duration, SystemTime, UNIX_EPOCH};
use thiserror::Error;
use uuid::Uuid;

/// Longest reason accepted, in characters.
pub const MAX_REASON: usize = 256;

/// What an operator orders.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum ControlKind {
    Pardon,
    Allow,
    Revoke,
    Ban,
    Key,
    Intel,
    Unlist,
}

impl ControlKind {
    /// The word used in subjects, payloads and the archive.
    pub fn as_str(self) -> &'static str {
        match self {
            ControlKind::Pardon => "pardon",
            ControlKind::Allow => "allow",
            ControlKind::Revoke => "revoke",
            ControlKind::Ban => "ban",
            ControlKind::Key => "key",
            ControlKind::Intel => "intel",
            ControlKind::Unlist => "unlist",
        }
    }

    /// The kind a subject token or archive value names.
    pub fn parse(word: &str) -> Option<ControlKind> {
        [
            ControlKind::Pardon,
            ControlKind::Allow,
            ControlKind::Revoke,
            ControlKind::Ban,
            ControlKind::Key,
            ControlKind::Intel,
            ControlKind::Unlist,
        ]
        .into_iter()
        .find(|k| k.as_str() == word)
    }
}

/// One operator's order, as published.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Control {
    pub v: u32,
    pub id: Uuid,
    /// Who ordered it (the operator's `host_id`, pinned by the subject like an event's origin).
    pub operator: String,
    pub kind: ControlKind,
    /// The address or net it is about (pardon, allow, ban; a ban names one address).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub net: Option<IpNet>,
    /// The pardon or allow a revoke ends.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub revokes: Option<Uuid>,
    #[serde(with = "crate::event::rfc3339")]
    pub time: SystemTime,
    /// When it ends by itself; absent: never (an allow until revoked, a permanent ban).
    #[serde(default, with = "opt_rfc3339", skip_serializing_if = "Option::is_none")]
    pub until: Option<SystemTime>,
    /// Why, in the operator's words (shown in logs, `list` and the archive).
    pub reason: String,
    /// A key record: the host the key is vouched for.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub host: Option<String>,
    /// A key record: the host's public key (nkeys `U…`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub host_key: Option<String>,
    /// A key record: from when the key speaks for the host (its end is `until`).
    #[serde(default, with = "opt_rfc3339", skip_serializing_if = "Option::is_none")]
    pub since: Option<SystemTime>,
    /// The signing operator's public key, the key id.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub key: Option<String>,
    /// The signature over [`crate::signing::control_bytes`].
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub sig: Option<String>,
    /// An intel order: where in its source the entry came from.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub listing: Option<Listing>,
}

/// Where an intel order's entry came from: for MISP, the event and attribute and the tags they
/// carry (the source itself is the order's `operator`).
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct Listing {
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub event: Option<Uuid>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub attribute: Option<Uuid>,
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub tags: Vec<String>,
}

/// Most tags an intel order carries, and the longest tag.
pub const MAX_TAGS: usize = 32;
pub const MAX_TAG: usize = 128;
/// The longest an intel order's payload may be, signature included (so that a catch-up page
/// of [`crate::replay::MAX_INTEL_PAGE`] of them stays under NATS' 1 MB).
pub const MAX_INTEL_PAYLOAD: usize = 1536;
/// Room left for the key and the signature when an order is made.
const SIGNATURE_ROOM: usize = 200;

/// Why a control event was refused.
#[derive(Debug, Error, PartialEq, Eq)]
pub enum ControlError {
    #[error("a reason is required (1-{MAX_REASON} printable characters)")]
    NoReason,
    #[error("invalid reason: use 1-{MAX_REASON} printable characters (no control characters)")]
    BadReason,
    #[error("a {0} needs an address or net")]
    NoNet(&'static str),
    #[error("a ban names one address, not a net ({0})")]
    BanOfNet(IpNet),
    #[error("a revoke needs the id of the pardon or allow it ends")]
    NoRevokes,
    #[error("a {0} takes no {1}")]
    Unexpected(&'static str, &'static str),
    #[error("it ends before it starts")]
    EndsBeforeStart,
    #[error("a key record names the host its key is for")]
    NoHost,
    #[error("a key record's key {0:?} is not an nkeys user public key (U…)")]
    BadHostKey(String),
    #[error("a key record says since when its key holds")]
    NoSince,
    #[error("an intel order says when it ends")]
    NoUntil,
    #[error("at most {MAX_TAGS} tags of 1-{MAX_TAG} printable characters")]
    BadTags,
    #[error(transparent)]
    Event(#[from] EventError),
}

impl ControlError {
    /// A short, stable name for counting rejections by reason.
    pub fn reason(&self) -> &'static str {
        match self {
            ControlError::Event(e) => e.reason(),
            _ => "bad_control",
        }
    }
}

/// `net` with its host bits cleared and IPv4-mapped addresses as IPv4.
pub fn normalise(net: IpNet) -> IpNet {
    match net.addr().to_canonical() {
        IpAddr::V4(v4) if net.addr().is_ipv6() => {
            let len = net.prefix_len().saturating_sub(96);
            IpNet::new(IpAddr::V4(v4), len).expect("a shorter prefix is valid")
        }
        _ => net,
    }
    .trunc()
}

/// Parses `ADDR` or `ADDR/LEN` as an operator types it.
pub fn parse_net(text: &str) -> Result<IpNet, EventError> {
    let bad = || EventError::BadIp(text.to_owned());
    let net = match text.parse::<IpNet>() {
        Ok(net) => net,
        Err(_) => IpNet::from(text.parse::<IpAddr>().map_err(|_| bad())?),
    };
    Ok(normalise(net))
}

/// Nets that hold no global address: private, shared (CGNAT), loopback, link-local,
/// benchmarking, multicast, reserved; IPv6 unique-local, link-local, multicast, loopback and
/// unspecified. An intake source listing one of them is wrong for this site (a firewall at the
/// edge drops them; a host inside would cut itself off).
const NOT_GLOBAL: [&str; 17] = [
    "0.0.0.0/8",
    "10.0.0.0/8",
    "100.64.0.0/10",
    "127.0.0.0/8",
    "169.254.0.0/16",
    "172.16.0.0/12",
    "192.0.0.0/24",
    "192.168.0.0/16",
    "198.18.0.0/15",
    "224.0.0.0/4",
    "240.0.0.0/4",
    "::/127",
    "fc00::/7",
    "fe80::/10",
    "ff00::/8",
    "64:ff9b:1::/48",
    "100::/64",
];

/// Whether every address of `net` is global (none of [`NOT_GLOBAL`] shares one with it).
pub fn is_global_net(net: &IpNet) -> bool {
    NOT_GLOBAL
        .iter()
        .filter_map(|n| n.parse::<IpNet>().ok())
        .all(|n| !overlap(&n, net))
}

/// Whether two nets share an address.
pub fn overlap(a: &IpNet, b: &IpNet) -> bool {
    a.contains(b) || b.contains(a)
}

/// The address as one net (`/32`, `/128`).
pub fn host_net(ip: IpAddr) -> IpNet {
    IpNet::from(ip.to_canonical())
}

fn millis(t: SystemTime) -> SystemTime {
    match t.duration_since(UNIX_EPOCH) {
        Ok(d) => UNIX_EPOCH + Duration::from_millis(d.as_millis() as u64),
        Err(_) => t,
    }
}

impl Control {
    fn new(
        kind: ControlKind,
        operator: &str,
        net: Option<IpNet>,
        revokes: Option<Uuid>,
        until: Option<SystemTime>,
        reason: &str,
    ) -> Result<Control, ControlError> {
        let time = millis(SystemTime::now());
        let control = Control {
            v: SCHEMA_VERSION,
            id: Uuid::now_v7(),
            operator: operator.to_owned(),
            kind,
            net: net.map(normalise),
            revokes,
            time,
            until: until.map(millis),
            reason: reason.to_owned(),
            host: None,
            host_key: None,
            since: None,
            key: None,
            sig: None,
            listing: None,
        };
        control.validate()?;
        Ok(control)
    }

    /// A key record: `host_key` is `host`'s from `since` until `until` (never ends: `None`).
    pub fn key_record(
        operator: &str,
        host: &str,
        host_key: &str,
        since: SystemTime,
        until: Option<SystemTime>,
        reason: &str,
    ) -> Result<Control, ControlError> {
        let time = millis(SystemTime::now());
        let control = Control {
            v: SCHEMA_VERSION,
            id: Uuid::now_v7(),
            operator: operator.to_owned(),
            kind: ControlKind::Key,
            net: None,
            revokes: None,
            time,
            // A removal ends a key now: the record may be made a moment after the end it states.
            until: until.map(|u| millis(u).max(time)),
            reason: reason.to_owned(),
            host: Some(host.to_owned()),
            host_key: Some(host_key.to_owned()),
            since: Some(millis(since)),
            key: None,
            sig: None,
            listing: None,
        };
        control.validate()?;
        Ok(control)
    }

    /// Lift `net` everywhere, and apply no remote ban in it for `lasts` (`None`: until revoked).
    pub fn pardon(
        operator: &str,
        net: IpNet,
        lasts: Option<Duration>,
        reason: &str,
    ) -> Result<Control, ControlError> {
        Control::shielding(ControlKind::Pardon, operator, net, lasts, reason)
    }

    /// Never ban anything in `net` for `lasts` (`None`: until revoked); lifts what is held now.
    pub fn allow(
        operator: &str,
        net: IpNet,
        lasts: Option<Duration>,
        reason: &str,
    ) -> Result<Control, ControlError> {
        Control::shielding(ControlKind::Allow, operator, net, lasts, reason)
    }

    /// A pardon or allow of `net` for `lasts` from now (`None`: until revoked).
    fn shielding(
        kind: ControlKind,
        operator: &str,
        net: IpNet,
        lasts: Option<Duration>,
        reason: &str,
    ) -> Result<Control, ControlError> {
        let until = lasts.map(|d| SystemTime::now() + d);
        Control::new(kind, operator, Some(net), None, until, reason)
    }

    /// End the pardon or allow `id` now.
    pub fn revoke(operator: &str, id: Uuid, reason: &str) -> Result<Control, ControlError> {
        Control::new(ControlKind::Revoke, operator, None, Some(id), None, reason)
    }

    /// Ban `ip` everywhere for `bantime` seconds (-1: permanent).
    pub fn ban(
        operator: &str,
        ip: IpAddr,
        bantime: i64,
        reason: &str,
    ) -> Result<Control, ControlError> {
        validate_bantime(bantime)?;
        let until =
            (bantime != PERMANENT).then(|| SystemTime::now() + Duration::from_secs(bantime as u64));
        Control::new(
            ControlKind::Ban,
            operator,
            Some(host_net(ip)),
            None,
            until,
            reason,
        )
    }

    /// `source` lists `net` until `until` (an intel order; `listing`: where in the source).
    pub fn intel(
        source: &str,
        net: IpNet,
        until: SystemTime,
        reason: &str,
        listing: Listing,
    ) -> Result<Control, ControlError> {
        let mut control = Control::new(
            ControlKind::Intel,
            source,
            Some(net),
            None,
            Some(until),
            reason,
        )?;
        control.listing = Some(listing);
        // The tags that do not fit are left out (the last first), room kept for a signature.
        while control.encode().len() + SIGNATURE_ROOM > MAX_INTEL_PAYLOAD {
            let tags = &mut control.listing.as_mut().expect("just set").tags;
            if tags.pop().is_none() {
                break;
            }
        }
        control.validate()?;
        Ok(control)
    }

    /// `source` no longer lists `net`.
    pub fn unlist(source: &str, net: IpNet, reason: &str) -> Result<Control, ControlError> {
        Control::new(ControlKind::Unlist, source, Some(net), None, None, reason)
    }

    /// Checks every field; a decoded control event is only used after this passed.
    pub fn validate(&self) -> Result<(), ControlError> {
        if self.v != SCHEMA_VERSION {
            return Err(EventError::Version(self.v).into());
        }
        validate_host(&self.operator)?;
        if self.reason.is_empty() {
            return Err(ControlError::NoReason);
        }
        if self.reason.chars().count() > MAX_REASON || self.reason.chars().any(char::is_control) {
            return Err(ControlError::BadReason);
        }
        let kind = self.kind.as_str();
        match self.kind {
            ControlKind::Pardon | ControlKind::Allow | ControlKind::Ban => {
                let net = self.net.ok_or(ControlError::NoNet(kind))?;
                if self.kind == ControlKind::Ban && net.prefix_len() != net.max_prefix_len() {
                    return Err(ControlError::BanOfNet(net));
                }
                if self.revokes.is_some() {
                    return Err(ControlError::Unexpected(kind, "revokes"));
                }
            }
            ControlKind::Key => {
                let host = self.host.as_deref().ok_or(ControlError::NoHost)?;
                validate_host(host)?;
                let key = self.host_key.as_deref().unwrap_or_default();
                crate::signing::PublicKey::parse(key)
                    .map_err(|_| ControlError::BadHostKey(key.to_owned()))?;
                if self.since.is_none() {
                    return Err(ControlError::NoSince);
                }
                if self.net.is_some() || self.revokes.is_some() {
                    return Err(ControlError::Unexpected(kind, "net or revokes"));
                }
            }
            ControlKind::Intel | ControlKind::Unlist => {
                self.net.ok_or(ControlError::NoNet(kind))?;
                if self.revokes.is_some() {
                    return Err(ControlError::Unexpected(kind, "revokes"));
                }
                match (self.kind, self.until) {
                    (ControlKind::Intel, None) => return Err(ControlError::NoUntil),
                    (ControlKind::Unlist, Some(_)) => {
                        return Err(ControlError::Unexpected(kind, "until"));
                    }
                    _ => {}
                }
            }
            ControlKind::Revoke => {
                if self.revokes.is_none() {
                    return Err(ControlError::NoRevokes);
                }
                if self.net.is_some() {
                    return Err(ControlError::Unexpected(kind, "net"));
                }
                if self.until.is_some() {
                    return Err(ControlError::Unexpected(kind, "until"));
                }
            }
        }
        let keyish = self.host.is_some() || self.host_key.is_some() || self.since.is_some();
        if self.kind != ControlKind::Key && keyish {
            return Err(ControlError::Unexpected(kind, "host, host_key or since"));
        }
        if let Some(listing) = &self.listing {
            if self.kind != ControlKind::Intel {
                return Err(ControlError::Unexpected(kind, "listing"));
            }
            let bad_tag = |t: &String| {
                t.is_empty() || t.chars().count() > MAX_TAG || t.chars().any(char::is_control)
            };
            if listing.tags.len() > MAX_TAGS || listing.tags.iter().any(bad_tag) {
                return Err(ControlError::BadTags);
            }
        }
        if self.kind == ControlKind::Intel && self.encode().len() > MAX_INTEL_PAYLOAD {
            return Err(ControlError::BadTags);
        }
        if self.until.is_some_and(|u| u < self.time) {
            return Err(ControlError::EndsBeforeStart);
        }
        Ok(())
    }

    /// Whether it still holds at `now`: not past its `until` (a revoke has none; it acts once,
    /// when taken).
    pub fn in_force_at(&self, now: SystemTime) -> bool {
        self.until.is_none_or(|u| u > now)
    }

    /// Whether `ip` is in its net.
    pub fn covers(&self, ip: IpAddr) -> bool {
        self.net.is_some_and(|n| n.contains(&ip.to_canonical()))
    }

    /// Whether it keeps remote bans of what it covers from being applied (pardon, allow).
    pub fn shields(&self) -> bool {
        matches!(self.kind, ControlKind::Pardon | ControlKind::Allow)
    }

    /// The address of a ban.
    pub fn ban_ip(&self) -> Option<IpAddr> {
        (self.kind == ControlKind::Ban)
            .then_some(self.net)
            .flatten()
            .map(|n| n.addr())
    }

    /// The JSON payload.
    pub fn encode(&self) -> Vec<u8> {
        serde_json::to_vec(self).expect("a control event always serialises")
    }

    /// Parses and validates a payload; unknown fields are ignored.
    pub fn decode(payload: &[u8]) -> Result<Control, ControlError> {
        if payload.len() > MAX_PAYLOAD {
            return Err(EventError::Oversize(payload.len()).into());
        }
        let mut control: Control =
            serde_json::from_slice(payload).map_err(|e| EventError::Malformed(e.to_string()))?;
        control.net = control.net.map(normalise);
        // What the wire and the signature carry: milliseconds.
        control.time = millis(control.time);
        control.until = control.until.map(millis);
        control.since = control.since.map(millis);
        control.validate()?;
        Ok(control)
    }
}

/// Optional RFC 3339 times, as `serde(with)`.
pub(crate) mod opt_rfc3339 {
    use serde::{Deserialize, Deserializer, Serializer};
    use std::time::SystemTime;

    pub fn serialize<S: Serializer>(t: &Option<SystemTime>, s: S) -> Result<S::Ok, S::Error> {
        match t {
            Some(t) => crate::event::rfc3339::serialize(t, s),
            None => s.serialize_none(),
        }
    }

    pub fn deserialize<'de, D: Deserializer<'de>>(d: D) -> Result<Option<SystemTime>, D::Error> {
        #[derive(Deserialize)]
        struct Wrap(#[serde(with = "crate::event::rfc3339")] SystemTime);
        Ok(Option::<Wrap>::deserialize(d)?.map(|w| w.0))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn round_trips() {
        let p = Control::pardon(
            "admin",
            parse_net("198.51.100.7").unwrap(),
            Some(Duration::from_secs(60)),
            "partner gateway",
        )
        .unwrap();
        let json: serde_json::Value = serde_json::from_slice(&p.encode()).unwrap();
        assert_eq!(json["kind"], "pardon");
        assert_eq!(json["net"], "198.51.100.7/32");
        assert_eq!(Control::decode(&p.encode()).unwrap(), p);
        assert!(p.covers("198.51.100.7".parse().unwrap()));
        assert!(!p.covers("198.51.100.8".parse().unwrap()));
        let a =
            Control::allow("admin", parse_net("2001:db8::5/64").unwrap(), None, "probe").unwrap();
        assert_eq!(a.net.unwrap().to_string(), "2001:db8::/64");
        assert!(a.in_force_at(SystemTime::now() + Duration::from_secs(1 << 30)));
        assert!(Control::decode(&a.encode()).unwrap().until.is_none());
        let r = Control::revoke("admin", a.id, "done").unwrap();
        assert_eq!(Control::decode(&r.encode()).unwrap().revokes, Some(a.id));
        let b = Control::ban("admin", "192.0.2.1".parse().unwrap(), 600, "scanner").unwrap();
        assert_eq!(b.ban_ip(), Some("192.0.2.1".parse().unwrap()));
    }

    #[test]
    fn bad_orders_are_refused() {
        let net = parse_net("192.0.2.0/24").unwrap();
        assert_eq!(
            Control::pardon("admin", net, None, "").unwrap_err(),
            ControlError::NoReason
        );
        assert_eq!(
            Control::pardon("admin", net, None, "a\nb").unwrap_err(),
            ControlError::BadReason
        );
        assert!(Control::pardon("a b", net, None, "x").is_err());
        assert!(Control::ban("admin", "192.0.2.1".parse().unwrap(), -7, "x").is_err());
        let mut b = Control::ban("admin", "192.0.2.1".parse().unwrap(), 60, "x").unwrap();
        b.net = Some(net);
        assert_eq!(
            Control::decode(&b.encode()).unwrap_err().reason(),
            "bad_control"
        );
        assert!(parse_net("192.0.2.1/33").is_err());
        assert!(parse_net("nope").is_err());
        assert_eq!(
            parse_net("::ffff:192.0.2.1").unwrap().to_string(),
            "192.0.2.1/32"
        );
        assert_eq!(
            parse_net("192.0.2.77/24").unwrap().to_string(),
            "192.0.2.0/24"
        );
        assert_eq!(Control::decode(b"{").unwrap_err().reason(), "malformed");
    }
}

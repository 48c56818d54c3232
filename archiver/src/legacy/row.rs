//! One row of the original's `f2b` table, and the event it becomes.

use super::hosts::HostMap;
use jiff::civil::DateTime;
use jiff::tz::{AmbiguousOffset, TimeZone};
use shared_f2b::event::{self, Action, Event, SCHEMA_VERSION};
use std::time::{Duration, SystemTime, UNIX_EPOCH};
use uuid::Uuid;

/// The original's default bantime (its column default), for rows without one.
pub const DEFAULT_BANTIME: i64 = 900;

/// Names the ids of imported events: the same row always gets the same id.
const LEGACY_NAMESPACE: Uuid = Uuid::from_u128(0x5f2b_1e9a_c000_4000_8000_0000_0000_0001);

/// A row as read, every column as text (the original validated nothing).
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct LegacyRow {
    pub id: i64,
    pub hostname: Option<String>,
    /// `created` as `YYYY-MM-DD HH:MM:SS[.ffffff]`, the writing host's local time.
    pub created: Option<String>,
    pub jail: Option<String>,
    pub protocol: Option<String>,
    pub port: Option<String>,
    pub ip: Option<String>,
    pub bantime: Option<String>,
}

/// Why a row is not imported.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum Refused {
    /// Nothing usable is left of `hostname`.
    Host,
    /// `created` is missing, not a date and time, or in the future.
    Time,
    /// `jail` is missing or not a jail name.
    Jail,
    /// `ip` is not an IPv4 or IPv6 address.
    Ip,
    /// `bantime` is not a number of seconds (or -1).
    Bantime,
}

impl Refused {
    /// The reason as the report names it.
    pub fn name(self) -> &'static str {
        match self {
            Refused::Host => "bad_hostname",
            Refused::Time => "bad_created",
            Refused::Jail => "bad_jail",
            Refused::Ip => "bad_ip",
            Refused::Bantime => "bad_bantime",
        }
    }
}

/// What a row became.
#[derive(Debug, Clone)]
pub struct Converted {
    pub event: Event,
    /// The local time was in a DST fold (taken as the earlier) or gap (taken as after it).
    pub ambiguous: bool,
    /// The port or protocol was not kept (not a port or protocol name).
    pub dropped_ports: bool,
}

/// Turns rows into events: the host map and the zone `created` was written in.
pub struct Converter {
    pub hosts: HostMap,
    pub zone: TimeZone,
}

impl Converter {
    /// The event of `row`, or why it is refused.
    pub fn convert(&self, row: &LegacyRow) -> Result<Converted, Refused> {
        let origin = self
            .hosts
            .host_id(row.hostname.as_deref())
            .ok_or(Refused::Host)?;
        let (time, ambiguous) = self.utc(row.created.as_deref()).ok_or(Refused::Time)?;
        let jail = row
            .jail
            .as_deref()
            .map(|j| j.trim().to_ascii_lowercase())
            .filter(|j| event::validate_jail(j).is_ok())
            .ok_or(Refused::Jail)?;
        let ip = row
            .ip
            .as_deref()
            .and_then(|ip| event::parse_ip(ip.trim()).ok())
            .ok_or(Refused::Ip)?;
        let bantime = match row.bantime.as_deref().map(str::trim) {
            None | Some("") => DEFAULT_BANTIME,
            Some(text) => text
                .parse::<i64>()
                .ok()
                .filter(|b| event::validate_bantime(*b).is_ok())
                .ok_or(Refused::Bantime)?,
        };
        let mut event = Event {
            v: SCHEMA_VERSION,
            id: legacy_id(row, time),
            origin,
            jail,
            ip,
            action: Action::Ban,
            time: UNIX_EPOCH + Duration::from_millis(time),
            bantime,
            failures: 0,
            key: None,
            sig: None,
            site: None,
            port: None,
            protocol: None,
        };
        let dropped_ports = event
            .set_ports(row.port.as_deref(), row.protocol.as_deref())
            .is_err();
        if event.validate().is_err() {
            return Err(Refused::Host);
        }
        Ok(Converted {
            event,
            ambiguous,
            dropped_ports,
        })
    }

    /// `created` in UTC milliseconds, and whether the local time was ambiguous; `None` for a
    /// time that is not one, or in the future (beyond the clock skew events may have).
    fn utc(&self, created: Option<&str>) -> Option<(u64, bool)> {
        let local: DateTime = created?.trim().parse().ok()?;
        let ambiguous = self.zone.to_ambiguous_timestamp(local);
        let unclear = !matches!(ambiguous.offset(), AmbiguousOffset::Unambiguous { .. });
        let ms = u64::try_from(ambiguous.compatible().ok()?.as_millisecond()).ok()?;
        let latest = SystemTime::now() + event::MAX_SKEW;
        let latest = latest.duration_since(UNIX_EPOCH).ok()?.as_millis() as u64;
        (ms <= latest).then_some((ms, unclear))
    }
}

/// The event id of a row: time-ordered (UUIDv7 of `created`) and derived from the row's id and
/// its content, so a second import of the same table finds it archived already, and rows of
/// two tables with the same ids do not collide.
fn legacy_id(row: &LegacyRow, ms: u64) -> Uuid {
    let text = format!(
        "{}\n{}\n{}\n{}\n{}",
        row.id,
        row.hostname.as_deref().unwrap_or(""),
        row.created.as_deref().unwrap_or(""),
        row.ip.as_deref().unwrap_or(""),
        row.jail.as_deref().unwrap_or("")
    );
    let hash = Uuid::new_v5(&LEGACY_NAMESPACE, text.as_bytes());
    let tail: [u8; 10] = hash.as_bytes()[6..].try_into().expect("ten bytes");
    uuid::Builder::from_unix_timestamp_millis(ms, &tail).into_uuid()
}

/// The id a running ban is published under (`--publish-active`): the archived row's time
/// bits, a tail of its own, so that the stream's event is not the history's.
pub fn active_id(archived: Uuid) -> Uuid {
    let hash = Uuid::new_v5(
        &LEGACY_NAMESPACE,
        &[archived.as_bytes().as_slice(), b"active"].concat(),
    );
    let ms = archived
        .get_timestamp()
        .map(|t| {
            let (s, n) = t.to_unix();
            s * 1000 + u64::from(n) / 1_000_000
        })
        .unwrap_or(0);
    let tail: [u8; 10] = hash.as_bytes()[6..].try_into().expect("ten bytes");
    uuid::Builder::from_unix_timestamp_millis(ms, &tail).into_uuid()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn converter() -> Converter {
        Converter {
            hosts: HostMap::default(),
            zone: TimeZone::get("Europe/London").unwrap(),
        }
    }

    fn row(created: &str, ip: &str) -> LegacyRow {
        LegacyRow {
            id: 7,
            hostname: Some("web1.example.org".into()),
            created: Some(created.into()),
            jail: Some("SSH".into()),
            protocol: Some("TCP".into()),
            port: Some("http, https".into()),
            ip: Some(ip.into()),
            bantime: Some("-1".into()),
        }
    }

    #[test]
    fn a_row_becomes_a_utc_event_with_a_stable_id() {
        let c = converter();
        let summer = c.convert(&row("2024-07-01 12:00:00", "192.0.2.1")).unwrap();
        let e = &summer.event;
        assert_eq!(e.origin, "web1");
        assert_eq!(e.jail, "ssh");
        assert_eq!(e.bantime, -1);
        assert_eq!(e.port.as_deref(), Some("http,https"));
        assert_eq!(e.protocol.as_deref(), Some("tcp"));
        // 12:00 BST is 11:00 UTC.
        let ms = 1_719_831_600_000;
        assert_eq!(e.time, UNIX_EPOCH + Duration::from_millis(ms));
        assert_eq!(
            e.id,
            c.convert(&row("2024-07-01 12:00:00", "192.0.2.1"))
                .unwrap()
                .event
                .id
        );
        assert_eq!(e.id.get_version_num(), 7);
        let winter = c
            .convert(&row("2024-01-01 12:00:00.250000", "2001:db8::1"))
            .unwrap();
        assert_eq!(
            winter.event.time,
            UNIX_EPOCH + Duration::from_millis(1_704_110_400_250)
        );
        // 01:30 on 27 October 2024 happened twice in London.
        assert!(
            c.convert(&row("2024-10-27 01:30:00", "192.0.2.1"))
                .unwrap()
                .ambiguous
        );
    }

    #[test]
    fn bad_rows_are_refused_by_reason() {
        let c = converter();
        let good = row("2024-07-01 12:00:00", "192.0.2.1");
        let with = |f: &dyn Fn(&mut LegacyRow)| {
            let mut r = good.clone();
            f(&mut r);
            c.convert(&r).err()
        };
        assert_eq!(
            with(&|r| r.ip = Some("999.1.1.1".into())),
            Some(Refused::Ip)
        );
        assert_eq!(with(&|r| r.ip = None), Some(Refused::Ip));
        assert_eq!(
            with(&|r| r.created = Some("0000-00-00 00:00:00".into())),
            Some(Refused::Time)
        );
        assert_eq!(with(&|r| r.jail = Some("a b".into())), Some(Refused::Jail));
        assert_eq!(
            with(&|r| r.bantime = Some("ten".into())),
            Some(Refused::Bantime)
        );
        assert_eq!(
            with(&|r| r.bantime = Some("-5".into())),
            Some(Refused::Bantime)
        );
        assert_eq!(with(&|r| r.bantime = None), None);
        assert_eq!(
            with(&|r| r.created = Some("2999-01-01 00:00:00".into())),
            Some(Refused::Time)
        );
        let odd = with(&|r| r.port = Some("'; DROP TABLE f2b; --".into()));
        assert_eq!(odd, None);
    }
}

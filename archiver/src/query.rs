//! Reading the archive: history, active bans, replay pages, statistics. Every value is bound as
//! a placeholder; only fixed SQL fragments are pushed.

use crate::db::{Backend, Db};
use crate::store::{IMPORTED_SEQ, ip_key, ms};
use ipnet::IpNet;
use shared_f2b::control::{Control, ControlKind, Listing, parse_net};
use shared_f2b::event::{Action, Event, MAX_SKEW, SCHEMA_VERSION, parse_ip};
use sqlx::any::AnyRow;
use sqlx::{Any, QueryBuilder, Row};
use std::net::IpAddr;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

const EVENT_COLUMNS: &str = "SELECT b.id, b.event_id, b.origin, b.jail, b.ip_text, b.action, \
    b.event_time_ms, b.bantime, b.failures, b.stream_seq, b.received_ms, b.key_id, b.sig, \
    b.site, b.port, b.protocol FROM f2b_events b";

/// An archived event with where it sits.
#[derive(Debug, Clone)]
pub struct Stored {
    pub row_id: u64,
    pub seq: u64,
    pub received: SystemTime,
    pub event: Event,
}

/// The time `ms` milliseconds after the epoch (negative: the epoch).
pub fn time(ms: i64) -> SystemTime {
    UNIX_EPOCH + Duration::from_millis(ms.max(0) as u64)
}

fn decode(row: &AnyRow) -> Result<Stored, sqlx::Error> {
    let bad = |what: &str| sqlx::Error::Decode(format!("archived {what} is invalid").into());
    let id: Vec<u8> = row.try_get("event_id")?;
    let action: String = row.try_get("action")?;
    let ip: String = row.try_get("ip_text")?;
    let event = Event {
        v: SCHEMA_VERSION,
        id: uuid::Uuid::from_slice(&id).map_err(|_| bad("event id"))?,
        origin: row.try_get("origin")?,
        jail: row.try_get("jail")?,
        ip: parse_ip(&ip).map_err(|_| bad("ip"))?,
        action: match action.as_str() {
            "ban" => Action::Ban,
            "unban" => Action::Unban,
            _ => return Err(bad("action")),
        },
        time: time(row.try_get("event_time_ms")?),
        bantime: row.try_get("bantime")?,
        failures: row.try_get::<i64, _>("failures")?.clamp(0, u32::MAX as i64) as u32,
        key: row.try_get("key_id")?,
        sig: row.try_get("sig")?,
        site: row.try_get("site")?,
        port: row.try_get("port")?,
        protocol: row.try_get("protocol")?,
    };
    Ok(Stored {
        row_id: row.try_get::<i64, _>("id")? as u64,
        seq: row.try_get::<i64, _>("stream_seq")? as u64,
        received: time(row.try_get("received_ms")?),
        event,
    })
}

/// Runs an event query and decodes its rows.
async fn fetch_events(db: &Db, mut q: QueryBuilder<Any>) -> Result<Vec<Stored>, sqlx::Error> {
    let rows = q.build().fetch_all(&db.pool).await?;
    rows.iter().map(decode).collect()
}

/// Runs a `SELECT COUNT(*) AS n` query.
async fn fetch_count(db: &Db, mut q: QueryBuilder<Any>) -> Result<u64, sqlx::Error> {
    let n: i64 = q.build().fetch_one(&db.pool).await?.try_get("n")?;
    Ok(n as u64)
}

/// Which events a history query wants.
#[derive(Debug, Default, Clone)]
pub struct HistoryFilter {
    pub ip: Option<IpAddr>,
    pub jail: Option<String>,
    pub origin: Option<String>,
    pub since: Option<SystemTime>,
    pub limit: i64,
}

/// Events matching the filter, newest first.
pub async fn history(db: &Db, f: &HistoryFilter) -> Result<Vec<Stored>, sqlx::Error> {
    let mut q: QueryBuilder<Any> = QueryBuilder::new(EVENT_COLUMNS);
    q.push(" WHERE 1 = 1");
    if let Some(ip) = f.ip {
        q.push(" AND b.ip = ").push_bind(ip_key(ip));
    }
    if let Some(jail) = &f.jail {
        q.push(" AND b.jail = ").push_bind(jail.clone());
    }
    if let Some(origin) = &f.origin {
        // `alice` (this site's), or `alice@a` (federated site a's).
        match origin.split_once('@') {
            Some((host, site)) => {
                q.push(" AND b.origin = ").push_bind(host.to_owned());
                q.push(" AND b.site = ").push_bind(site.to_owned());
            }
            None => {
                q.push(" AND b.origin = ").push_bind(origin.clone());
                q.push(" AND b.site IS NULL");
            }
        }
    }
    if let Some(since) = f.since {
        q.push(" AND b.event_time_ms >= ").push_bind(ms(since));
    }
    // Imported history (sequence 0) comes after everything the stream carried, newest first.
    q.push(" ORDER BY b.stream_seq DESC, b.event_time_ms DESC LIMIT ")
        .push_bind(f.limit);
    fetch_events(db, q).await
}

/// The part of a replay query that selects jails and leaves out an origin.
fn scope(q: &mut QueryBuilder<Any>, jails: &[String], exclude_origin: Option<&str>) {
    if !jails.iter().any(|j| j == "*") {
        q.push(" AND b.jail IN (");
        let mut list = q.separated(", ");
        for jail in jails {
            list.push_bind(jail.clone());
        }
        q.push(")");
    }
    if let Some(origin) = exclude_origin {
        // The asking host is this site's: a federated site's host of that name is not it.
        q.push(" AND NOT (b.origin = ")
            .push_bind(origin.to_owned())
            .push(" AND b.site IS NULL)");
    }
}

/// A ban is active while it has not expired, its origin has not unbanned it since, and no
/// operator pardoned or allowed it since (what a pardon lifted stays lifted after it ends).
/// Imported history never is: it was not carried by the stream, and no host applied it.
fn active_conditions(q: &mut QueryBuilder<Any>, now: SystemTime, backend: Backend) {
    q.push(" AND b.stream_seq <> ").push_bind(IMPORTED_SEQ);
    q.push(" AND b.action = 'ban' AND (b.expires_ms IS NULL OR b.expires_ms > ")
        .push_bind(ms(now))
        .push(") AND NOT EXISTS (SELECT 1 FROM f2b_events u ")
        // The unban is looked up by address: told so, as statistics taken while the table was
        // nearly empty once made MariaDB scan it whole per ban (100,000 bans: 11 minutes).
        .push(match backend {
            Backend::MySql => "FORCE INDEX (ix_ip)",
            Backend::Sqlite => "INDEXED BY ix_ip",
        })
        .push(
            " WHERE u.ip = b.ip AND u.origin = b.origin AND u.jail = b.jail \
             AND (u.site = b.site OR (u.site IS NULL AND b.site IS NULL)) \
             AND u.action = 'unban' AND u.stream_seq > b.stream_seq) AND NOT ",
        );
    pardoned_since(q);
}

/// `EXISTS (…)`: an operator pardoned or allowed the ban's address after it was stored (the
/// net's range compared on the 16-byte keys, within one address family: an IPv6 net never
/// covers IPv4 addresses through their mapped form).
fn pardoned_since(q: &mut QueryBuilder<Any>) {
    q.push("EXISTS (SELECT 1 FROM f2b_control c WHERE c.kind IN (")
        .push_bind(ControlKind::Pardon.as_str())
        .push(", ")
        .push_bind(ControlKind::Allow.as_str())
        .push(
            ") AND c.stream_seq > b.stream_seq AND b.ip BETWEEN c.net_lo AND c.net_hi \
             AND (c.net_text LIKE '%:%') = (b.ip_text LIKE '%:%'))",
        );
}

/// One page of every ban (ended ones too) from `since` on, after row id `after`, up to stream
/// sequence `until_seq`, in row order (a new host's memory for escalation).
pub async fn bans_page(
    db: &Db,
    since: SystemTime,
    jails: &[String],
    after: u64,
    until_seq: u64,
    limit: usize,
) -> Result<Vec<Stored>, sqlx::Error> {
    let mut q: QueryBuilder<Any> = QueryBuilder::new(EVENT_COLUMNS);
    q.push(" WHERE b.id > ").push_bind(after as i64);
    q.push(" AND b.stream_seq <= ").push_bind(until_seq as i64);
    // Not the bans that were over when they arrived (back-dated ones no subscriber applied),
    // nor imported history.
    q.push(" AND b.stream_seq <> ").push_bind(IMPORTED_SEQ);
    q.push(" AND b.action = 'ban' AND b.event_time_ms >= ")
        .push_bind(ms(since))
        .push(" AND (b.expires_ms IS NULL OR b.expires_ms > b.received_ms) AND NOT ");
    // Nor those an operator pardoned or allowed since: mistakes, not offences.
    pardoned_since(&mut q);
    scope(&mut q, jails, None);
    q.push(" ORDER BY b.id LIMIT ").push_bind(limit as i64);
    fetch_events(db, q).await
}

/// One page of the bans active at `now` (one row per origin's ban), after row id `after`.
pub async fn active_page(
    db: &Db,
    now: SystemTime,
    jails: &[String],
    exclude_origin: Option<&str>,
    after: u64,
    until_seq: u64,
    limit: usize,
) -> Result<Vec<Stored>, sqlx::Error> {
    let mut q: QueryBuilder<Any> = QueryBuilder::new(EVENT_COLUMNS);
    q.push(" WHERE b.id > ").push_bind(after as i64);
    q.push(" AND b.stream_seq <= ").push_bind(until_seq as i64);
    active_conditions(&mut q, now, db.backend);
    scope(&mut q, jails, exclude_origin);
    q.push(" ORDER BY b.id LIMIT ").push_bind(limit as i64);
    fetch_events(db, q).await
}

/// How many active bans [`active_page`] would return in all.
pub async fn active_count(
    db: &Db,
    now: SystemTime,
    jails: &[String],
    exclude_origin: Option<&str>,
    until_seq: u64,
) -> Result<u64, sqlx::Error> {
    let mut q: QueryBuilder<Any> = QueryBuilder::new("SELECT COUNT(*) AS n FROM f2b_events b");
    q.push(" WHERE b.stream_seq <= ")
        .push_bind(until_seq as i64);
    active_conditions(&mut q, now, db.backend);
    scope(&mut q, jails, exclude_origin);
    fetch_count(db, q).await
}

/// One page of the events with stream sequence in `(after, until_seq]`, in stream order.
pub async fn since_page(
    db: &Db,
    jails: &[String],
    exclude_origin: Option<&str>,
    after: u64,
    until_seq: u64,
    limit: usize,
) -> Result<Vec<Stored>, sqlx::Error> {
    let mut q: QueryBuilder<Any> = QueryBuilder::new(EVENT_COLUMNS);
    q.push(" WHERE b.stream_seq > ").push_bind(after as i64);
    q.push(" AND b.stream_seq <= ").push_bind(until_seq as i64);
    // These pages carry no control events: a ban an operator pardoned since is left out here,
    // as from `active` (the orders still in force come in the controls snapshot).
    q.push(" AND NOT (b.action = 'ban' AND ");
    pardoned_since(&mut q);
    q.push(")");
    scope(&mut q, jails, exclude_origin);
    q.push(" ORDER BY b.stream_seq LIMIT ")
        .push_bind(limit as i64);
    fetch_events(db, q).await
}

const CONTROL_COLUMNS: &str = "SELECT c.id, c.event_id, c.operator, c.kind, c.net_text, \
    c.revokes, c.event_time_ms, c.until_ms, c.reason, c.stream_seq, c.host, c.host_key, \
    c.since_ms, c.key_id, c.sig, c.site, c.listing_event, c.listing_attribute, c.listing_tags \
    FROM f2b_control c";

/// An archived control event with where it sits.
#[derive(Debug, Clone)]
pub struct StoredControl {
    pub row_id: u64,
    pub seq: u64,
    pub control: Control,
    /// The federated site it was relayed from (`None`: this site's own).
    pub site: Option<String>,
}

fn decode_control(row: &AnyRow) -> Result<StoredControl, sqlx::Error> {
    let bad =
        |what: &str| sqlx::Error::Decode(format!("archived control {what} is invalid").into());
    let uuid = |bytes: Vec<u8>| uuid::Uuid::from_slice(&bytes).map_err(|_| bad("id"));
    let kind: String = row.try_get("kind")?;
    let net: Option<String> = row.try_get("net_text")?;
    let revokes: Option<Vec<u8>> = row.try_get("revokes")?;
    let until: Option<i64> = row.try_get("until_ms")?;
    let control = Control {
        v: SCHEMA_VERSION,
        id: uuid(row.try_get("event_id")?)?,
        operator: row.try_get("operator")?,
        kind: ControlKind::parse(&kind).ok_or_else(|| bad("kind"))?,
        net: net
            .map(|n| parse_net(&n).map_err(|_| bad("net")))
            .transpose()?,
        revokes: revokes.map(uuid).transpose()?,
        time: time(row.try_get("event_time_ms")?),
        until: until.map(time),
        reason: row.try_get("reason")?,
        host: row.try_get("host")?,
        host_key: row.try_get("host_key")?,
        since: row.try_get::<Option<i64>, _>("since_ms")?.map(time),
        key: row.try_get("key_id")?,
        sig: row.try_get("sig")?,
        listing: (kind == ControlKind::Intel.as_str())
            .then(|| listing(row))
            .transpose()?,
    };
    Ok(StoredControl {
        row_id: row.try_get::<i64, _>("id")? as u64,
        seq: row.try_get::<i64, _>("stream_seq")? as u64,
        control,
        site: row.try_get("site")?,
    })
}

/// An intel order's listing as archived (see migration 000007).
pub fn listing(row: &AnyRow) -> Result<Listing, sqlx::Error> {
    let bad = || sqlx::Error::Decode("archived listing is invalid".into());
    let uuid = |column: &str| -> Result<Option<uuid::Uuid>, sqlx::Error> {
        row.try_get::<Option<String>, _>(column)?
            .map(|t| t.parse().map_err(|_| bad()))
            .transpose()
    };
    let tags: Option<String> = row.try_get("listing_tags")?;
    Ok(Listing {
        event: uuid("listing_event")?,
        attribute: uuid("listing_attribute")?,
        tags: tags
            .filter(|t| !t.is_empty())
            .map(|t| t.split('\t').map(str::to_owned).collect())
            .unwrap_or_default(),
    })
}

/// Key records are always "in force" (see [`shared_f2b::keyring`]). Another control event is
/// in force while it is a pardon, allow or ban that has not ended, that no
/// revoke names and (a ban) that no later pardon or allow covers.
fn in_force_conditions(q: &mut QueryBuilder<Any>, now: SystemTime, until_seq: u64, intel: bool) {
    q.push(" AND c.stream_seq <= ").push_bind(until_seq as i64);
    if !intel {
        q.push(" AND c.kind <> ")
            .push_bind(ControlKind::Intel.as_str());
    }
    // Key records always: the keyring needs ended keys too, to check what they signed.
    q.push(" AND (c.kind = ")
        .push_bind(ControlKind::Key.as_str())
        .push(" OR (1 = 1");
    q.push(" AND c.kind IN (")
        .push_bind(ControlKind::Pardon.as_str())
        .push(", ")
        .push_bind(ControlKind::Allow.as_str())
        .push(", ")
        .push_bind(ControlKind::Ban.as_str())
        .push(", ")
        .push_bind(ControlKind::Intel.as_str())
        .push(") AND (c.until_ms IS NULL OR c.until_ms > ")
        .push_bind(ms(now))
        .push(") AND NOT EXISTS (SELECT 1 FROM f2b_control r WHERE r.revokes = c.event_id AND r.kind = ")
        .push_bind(ControlKind::Revoke.as_str())
        .push(")");
    // An operator's ban a later pardon or allow covers ended with it (and stays ended after
    // it, as on the hosts that lifted it).
    // An intel order ends when its source lists the net again (a renewal) or unlists it.
    q.push(" AND NOT (c.kind = ")
        .push_bind(ControlKind::Intel.as_str())
        .push(" AND EXISTS (SELECT 1 FROM f2b_control u WHERE u.kind IN (")
        .push_bind(ControlKind::Intel.as_str())
        .push(", ")
        .push_bind(ControlKind::Unlist.as_str())
        .push(
            ") AND u.operator = c.operator AND u.net_lo = c.net_lo AND u.net_hi = c.net_hi \
             AND u.site IS NULL AND c.site IS NULL AND u.stream_seq > c.stream_seq))",
        );
    q.push(" AND NOT (c.kind IN (")
        .push_bind(ControlKind::Ban.as_str())
        .push(", ")
        .push_bind(ControlKind::Intel.as_str())
        .push(") AND EXISTS (SELECT 1 FROM f2b_control p WHERE p.kind IN (")
        .push_bind(ControlKind::Pardon.as_str())
        .push(", ")
        .push_bind(ControlKind::Allow.as_str())
        .push(
            ") AND p.stream_seq > c.stream_seq AND c.net_lo <= p.net_hi AND c.net_hi >= p.net_lo \
             AND (p.net_text LIKE '%:%') = (c.net_text LIKE '%:%')))",
        );
    q.push("))");
}

/// One page of the control events in force at `now`, archived up to stream sequence
/// `until_seq`, after row id `after`, in row order.
pub async fn controls_page(
    db: &Db,
    now: SystemTime,
    after: u64,
    until_seq: u64,
    limit: usize,
    intel: bool,
) -> Result<Vec<StoredControl>, sqlx::Error> {
    let mut q: QueryBuilder<Any> = QueryBuilder::new(CONTROL_COLUMNS);
    q.push(" WHERE c.id > ").push_bind(after as i64);
    in_force_conditions(&mut q, now, until_seq, intel);
    q.push(" ORDER BY c.id LIMIT ").push_bind(limit as i64);
    let rows = q.build().fetch_all(&db.pool).await?;
    rows.iter().map(decode_control).collect()
}

/// How many control events [`controls_page`] would return in all.
pub async fn controls_count(
    db: &Db,
    now: SystemTime,
    until_seq: u64,
    intel: bool,
) -> Result<u64, sqlx::Error> {
    let mut q: QueryBuilder<Any> = QueryBuilder::new("SELECT COUNT(*) AS n FROM f2b_control c");
    q.push(" WHERE 1 = 1");
    in_force_conditions(&mut q, now, until_seq, intel);
    fetch_count(db, q).await
}

/// Every event with stream sequence in `(after, until_seq]`, in stream order, at most `limit`.
pub async fn events_between(
    db: &Db,
    after: u64,
    until_seq: u64,
    limit: usize,
) -> Result<Vec<Stored>, sqlx::Error> {
    let mut q: QueryBuilder<Any> = QueryBuilder::new(EVENT_COLUMNS);
    q.push(" WHERE b.stream_seq > ").push_bind(after as i64);
    q.push(" AND b.stream_seq <= ").push_bind(until_seq as i64);
    q.push(" ORDER BY b.stream_seq LIMIT ")
        .push_bind(limit as i64);
    fetch_events(db, q).await
}

/// The control events with stream sequence in `(after, until_seq]` (every kind), in stream
/// order, at most `limit`.
pub async fn controls_after(
    db: &Db,
    after: u64,
    until_seq: u64,
    limit: usize,
) -> Result<Vec<StoredControl>, sqlx::Error> {
    let mut q: QueryBuilder<Any> = QueryBuilder::new(CONTROL_COLUMNS);
    q.push(" WHERE c.stream_seq > ").push_bind(after as i64);
    q.push(" AND c.stream_seq <= ").push_bind(until_seq as i64);
    q.push(" ORDER BY c.stream_seq LIMIT ")
        .push_bind(limit as i64);
    let rows = q.build().fetch_all(&db.pool).await?;
    rows.iter().map(decode_control).collect()
}

/// The highest stream sequence of the archived control events.
pub async fn max_control_seq(db: &Db) -> Result<u64, sqlx::Error> {
    let n: Option<i64> = sqlx::query("SELECT MAX(stream_seq) AS n FROM f2b_control")
        .fetch_one(&db.pool)
        .await?
        .try_get("n")?;
    Ok(n.unwrap_or(0) as u64)
}

/// The highest stream sequence archived.
pub async fn max_seq(db: &Db) -> Result<u64, sqlx::Error> {
    let n: Option<i64> = sqlx::query("SELECT MAX(stream_seq) AS n FROM f2b_events")
        .fetch_one(&db.pool)
        .await?
        .try_get("n")?;
    Ok(n.unwrap_or(0) as u64)
}

/// An address with how many ban events named it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Counted {
    pub ip: IpAddr,
    pub count: u64,
}

/// Every address ever banned, with its number of ban events, in address order.
pub async fn all_banned(db: &Db) -> Result<Vec<Counted>, sqlx::Error> {
    let rows = sqlx::query(
        "SELECT MIN(ip_text) AS ip_text, COUNT(*) AS n FROM f2b_events \
         WHERE action = 'ban' GROUP BY ip ORDER BY ip",
    )
    .fetch_all(&db.pool)
    .await?;
    rows.iter()
        .map(|r| {
            let ip: String = r.try_get("ip_text")?;
            Ok(Counted {
                ip: parse_ip(&ip)
                    .map_err(|_| sqlx::Error::Decode("archived ip is invalid".into()))?,
                count: r.try_get::<i64, _>("n")? as u64,
            })
        })
        .collect()
}

/// Event counts grouped by one key.
#[derive(Debug, Clone)]
pub struct Stat {
    pub key: String,
    pub bans: u64,
    pub unbans: u64,
}

/// Events per day (UTC), per origin and per jail.
pub async fn stats(db: &Db) -> Result<(Vec<Stat>, Vec<Stat>, Vec<Stat>), sqlx::Error> {
    let group = |sql: &'static str| async move {
        let rows = sqlx::query(sql).fetch_all(&db.pool).await?;
        rows.iter()
            .map(|r| {
                Ok(Stat {
                    key: r.try_get::<String, _>("k")?,
                    bans: r.try_get::<i64, _>("bans")? as u64,
                    unbans: r.try_get::<i64, _>("unbans")? as u64,
                })
            })
            .collect::<Result<Vec<_>, sqlx::Error>>()
    };
    let day_rows = sqlx::query(
        "SELECT (event_time_ms - event_time_ms % 86400000) AS d, \
         COUNT(CASE WHEN action = 'ban' THEN 1 END) AS bans, \
         COUNT(CASE WHEN action = 'unban' THEN 1 END) AS unbans \
         FROM f2b_events GROUP BY d ORDER BY d",
    )
    .fetch_all(&db.pool)
    .await?;
    let days = day_rows
        .iter()
        .map(|r| {
            let d: i64 = r.try_get("d")?;
            let day = humantime::format_rfc3339(time(d)).to_string();
            Ok(Stat {
                key: day[..10].to_owned(),
                bans: r.try_get::<i64, _>("bans")? as u64,
                unbans: r.try_get::<i64, _>("unbans")? as u64,
            })
        })
        .collect::<Result<Vec<_>, sqlx::Error>>()?;
    let origins = group(
        "SELECT origin AS k, COUNT(CASE WHEN action = 'ban' THEN 1 END) AS bans, \
         COUNT(CASE WHEN action = 'unban' THEN 1 END) AS unbans FROM f2b_events \
         GROUP BY origin ORDER BY origin",
    )
    .await?;
    let jails = group(
        "SELECT jail AS k, COUNT(CASE WHEN action = 'ban' THEN 1 END) AS bans, \
         COUNT(CASE WHEN action = 'unban' THEN 1 END) AS unbans FROM f2b_events \
         GROUP BY jail ORDER BY jail",
    )
    .await?;
    Ok((days, origins, jails))
}

/// One page of the ban events whose event time is in `[from, to)`, in event-time then row
/// order, after the `(event time, row id)` cursor `after`, leaving out those an operator
/// pardoned or allowed since or that one shielded when they arrived (the MISP feed: mistakes,
/// not offences).
pub async fn bans_between(
    db: &Db,
    from: SystemTime,
    to: Option<SystemTime>,
    after: Option<(SystemTime, u64)>,
    limit: usize,
) -> Result<Vec<Stored>, sqlx::Error> {
    let mut q: QueryBuilder<Any> = QueryBuilder::new(EVENT_COLUMNS);
    q.push(" WHERE b.action = 'ban' AND b.event_time_ms >= ")
        .push_bind(ms(from));
    if let Some(to) = to {
        q.push(" AND b.event_time_ms < ").push_bind(ms(to));
    }
    if let Some((time, row)) = after {
        // Keyset paging on (event_time_ms, id): ix_time holds the row id too.
        q.push(" AND (b.event_time_ms > ")
            .push_bind(ms(time))
            .push(" OR (b.event_time_ms = ")
            .push_bind(ms(time))
            .push(" AND b.id > ")
            .push_bind(row as i64)
            .push("))");
    }
    // Not what a host stamped in the future (archived before ingest took such times as made
    // on arrival): a day years ahead is no indicator.
    q.push(" AND b.event_time_ms <= b.received_ms + ")
        .push_bind(MAX_SKEW.as_millis() as i64);
    q.push(" AND NOT ");
    pardoned_since(&mut q);
    // Nor those a pardon or allow in force when they arrived shielded (no host applied them).
    q.push(" AND NOT EXISTS (SELECT 1 FROM f2b_control a WHERE a.kind IN (")
        .push_bind(ControlKind::Pardon.as_str())
        .push(", ")
        .push_bind(ControlKind::Allow.as_str())
        .push(
            ") AND a.stream_seq < b.stream_seq \
             AND (a.until_ms IS NULL OR a.until_ms > b.received_ms) \
             AND b.ip BETWEEN a.net_lo AND a.net_hi \
             AND (a.net_text LIKE '%:%') = (b.ip_text LIKE '%:%') \
             AND NOT EXISTS (SELECT 1 FROM f2b_control r WHERE r.revokes = a.event_id \
             AND r.stream_seq < b.stream_seq))",
        );
    q.push(" ORDER BY b.event_time_ms, b.id LIMIT ")
        .push_bind(limit as i64);
    fetch_events(db, q).await
}

/// Ban events per jail and per `step_ms` bucket (bucket start, ms) made since `since`, up to
/// stream sequence `until_seq`: the site page's chart.
pub async fn bans_per_bucket(
    db: &Db,
    since: SystemTime,
    step_ms: i64,
    until_seq: u64,
) -> Result<Vec<(String, i64, u64)>, sqlx::Error> {
    let mut q: QueryBuilder<Any> =
        QueryBuilder::new("SELECT jail, (event_time_ms - event_time_ms % ");
    q.push_bind(step_ms);
    q.push(") AS bucket, COUNT(*) AS n FROM f2b_events WHERE action = 'ban' AND event_time_ms >= ")
        .push_bind(ms(since));
    q.push(" AND stream_seq <= ").push_bind(until_seq as i64);
    q.push(" GROUP BY jail, bucket");
    let rows = q.build().fetch_all(&db.pool).await?;
    rows.iter()
        .map(|r| {
            Ok((
                r.try_get("jail")?,
                r.try_get("bucket")?,
                r.try_get::<i64, _>("n")? as u64,
            ))
        })
        .collect()
}

/// What one host reported in one hour.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct HostHour {
    pub origin: String,
    /// The hour's start (ms).
    pub hour_ms: i64,
    pub bans: u64,
    /// When the last of its events arrived (ms).
    pub last_received_ms: i64,
}

/// Per host and hour: the events made since `since`, up to stream sequence `until_seq` (the
/// hosts that reported recently, on the site page).
pub async fn host_hours(
    db: &Db,
    since: SystemTime,
    until_seq: u64,
) -> Result<Vec<HostHour>, sqlx::Error> {
    let mut q: QueryBuilder<Any> = QueryBuilder::new(
        "SELECT origin, site, (event_time_ms - event_time_ms % 3600000) AS hour, \
         COUNT(CASE WHEN action = 'ban' THEN 1 END) AS bans, MAX(received_ms) AS last \
         FROM f2b_events WHERE event_time_ms >= ",
    );
    q.push_bind(ms(since));
    q.push(" AND stream_seq <= ").push_bind(until_seq as i64);
    q.push(" GROUP BY origin, site, hour");
    let rows = q.build().fetch_all(&db.pool).await?;
    rows.iter()
        .map(|r| {
            let origin: String = r.try_get("origin")?;
            let site: Option<String> = r.try_get("site")?;
            Ok(HostHour {
                // As the page shows it: `host@site` for a federated site's.
                origin: match site {
                    Some(site) => shared_f2b::federation::origin_at(&origin, &site),
                    None => origin,
                },
                hour_ms: r.try_get("hour")?,
                bans: r.try_get::<i64, _>("bans")? as u64,
                last_received_ms: r.try_get("last")?,
            })
        })
        .collect()
}

/// The newest `limit` control events, newest first (the site page's latest events).
pub async fn latest_controls(db: &Db, limit: usize) -> Result<Vec<StoredControl>, sqlx::Error> {
    let mut q: QueryBuilder<Any> = QueryBuilder::new(CONTROL_COLUMNS);
    q.push(" ORDER BY c.stream_seq DESC LIMIT ")
        .push_bind(limit as i64);
    let rows = q.build().fetch_all(&db.pool).await?;
    rows.iter().map(decode_control).collect()
}

/// A ban as the original Shared Fail2Ban's API lists it.
#[derive(Debug, Clone)]
pub struct RecentBan {
    pub origin: String,
    pub jail: String,
    pub ip: String,
    pub time_ms: i64,
    pub port: Option<String>,
    pub protocol: Option<String>,
}

/// This site's hosts' bans from `since` on, oldest first, as the old hosts' pulls list them:
/// not imported history, not those over when they arrived, not those an operator pardoned or
/// allowed since, and none of an address a pardon or allow in force covers now (an old host
/// has no subscriber to refuse them).
pub async fn recent_bans(db: &Db, since: SystemTime) -> Result<Vec<RecentBan>, sqlx::Error> {
    let mut q: QueryBuilder<Any> = QueryBuilder::new(
        "SELECT b.origin, b.jail, b.ip_text, b.event_time_ms, b.port, b.protocol \
         FROM f2b_events b WHERE b.action = 'ban' AND b.site IS NULL AND b.event_time_ms >= ",
    );
    q.push_bind(ms(since));
    pulled_conditions(&mut q, SystemTime::now());
    q.push(" ORDER BY b.event_time_ms");
    let rows = q.build().fetch_all(&db.pool).await?;
    rows.iter()
        .map(|r| {
            Ok(RecentBan {
                origin: r.try_get("origin")?,
                jail: r.try_get("jail")?,
                ip: r.try_get("ip_text")?,
                time_ms: r.try_get("event_time_ms")?,
                port: r.try_get("port")?,
                protocol: r.try_get("protocol")?,
            })
        })
        .collect()
}

/// What the old hosts' pulls leave out (see [`recent_bans`]).
fn pulled_conditions(q: &mut QueryBuilder<Any>, now: SystemTime) {
    q.push(" AND b.stream_seq <> ").push_bind(IMPORTED_SEQ);
    q.push(" AND (b.expires_ms IS NULL OR b.expires_ms > b.received_ms) AND NOT ");
    pardoned_since(q);
    q.push(" AND NOT EXISTS (SELECT 1 FROM f2b_control c WHERE c.kind IN (")
        .push_bind(ControlKind::Pardon.as_str())
        .push(", ")
        .push_bind(ControlKind::Allow.as_str())
        .push(") AND (c.until_ms IS NULL OR c.until_ms > ")
        .push_bind(ms(now))
        .push(") AND NOT EXISTS (SELECT 1 FROM f2b_control r WHERE r.revokes = c.event_id AND r.kind = ")
        .push_bind(ControlKind::Revoke.as_str())
        .push(
            ") AND b.ip BETWEEN c.net_lo AND c.net_hi \
             AND (c.net_text LIKE '%:%') = (b.ip_text LIKE '%:%'))",
        );
}

/// An address with how many bans it got, as the original's `count` lists it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct BanCount {
    pub ip: String,
    pub count: i64,
    pub port: Option<String>,
    pub protocol: Option<String>,
}

/// What [`ban_counts`] counts.
#[derive(Debug, Clone, Default)]
pub struct CountFilter {
    pub since: Option<SystemTime>,
    pub jail: Option<String>,
    /// Leave this host's bans out.
    pub exclude_origin: Option<String>,
    /// Only hosts whose id ends with this.
    pub origin_suffix: Option<String>,
    pub min_count: i64,
    pub limit: i64,
}

/// Addresses banned at least `min_count` times by this site's hosts, most first (ties by
/// address), leaving out what [`recent_bans`] leaves out.
pub async fn ban_counts(db: &Db, f: &CountFilter) -> Result<Vec<BanCount>, sqlx::Error> {
    let mut q: QueryBuilder<Any> = QueryBuilder::new(
        "SELECT b.ip_text, COUNT(*) AS n, MAX(b.port) AS port, MAX(b.protocol) AS protocol \
         FROM f2b_events b WHERE b.action = 'ban' AND b.site IS NULL",
    );
    if let Some(since) = f.since {
        q.push(" AND b.event_time_ms >= ").push_bind(ms(since));
    }
    if let Some(jail) = &f.jail {
        q.push(" AND b.jail = ").push_bind(jail.clone());
    }
    if let Some(origin) = &f.exclude_origin {
        q.push(" AND b.origin <> ").push_bind(origin.clone());
    }
    if let Some(suffix) = &f.origin_suffix {
        // A pattern bound as a value, its own wildcards escaped.
        let escaped: String = suffix
            .chars()
            .flat_map(|c| match c {
                '!' | '%' | '_' => vec!['!', c],
                c => vec![c],
            })
            .collect();
        q.push(" AND b.origin LIKE ")
            .push_bind(format!("%{escaped}"))
            .push(" ESCAPE '!'");
    }
    pulled_conditions(&mut q, SystemTime::now());
    q.push(" GROUP BY b.ip_text HAVING COUNT(*) >= ")
        .push_bind(f.min_count)
        .push(" ORDER BY n DESC, b.ip_text LIMIT ")
        .push_bind(f.limit);
    let rows = q.build().fetch_all(&db.pool).await?;
    rows.iter()
        .map(|r| {
            Ok(BanCount {
                ip: r.try_get("ip_text")?,
                count: r.try_get("n")?,
                port: r.try_get("port")?,
                protocol: r.try_get("protocol")?,
            })
        })
        .collect()
}

/// The bans stored after stream sequence `after` and up to `until_seq`, in stream order, at
/// most `limit`, leaving out what an old host's pull leaves out at `now` (what the bridge
/// writes into the original's table).
pub async fn bans_after_seq(
    db: &Db,
    after: u64,
    until_seq: u64,
    now: SystemTime,
    limit: i64,
) -> Result<Vec<Stored>, sqlx::Error> {
    let mut q: QueryBuilder<Any> = QueryBuilder::new(EVENT_COLUMNS);
    q.push(" WHERE b.stream_seq > ").push_bind(after as i64);
    q.push(" AND b.stream_seq <= ").push_bind(until_seq as i64);
    q.push(" AND b.action = 'ban'");
    pulled_conditions(&mut q, now);
    q.push(" ORDER BY b.stream_seq LIMIT ").push_bind(limit);
    fetch_events(db, q).await
}

/// Which of `ids` the archive holds as events.
pub async fn held_events(db: &Db, ids: &[uuid::Uuid]) -> Result<Vec<uuid::Uuid>, sqlx::Error> {
    if ids.is_empty() {
        return Ok(Vec::new());
    }
    let mut q: QueryBuilder<Any> =
        QueryBuilder::new("SELECT event_id FROM f2b_events WHERE event_id IN (");
    let mut list = q.separated(", ");
    for id in ids {
        list.push_bind(id.as_bytes().to_vec());
    }
    q.push(")");
    let rows = q.build().fetch_all(&db.pool).await?;
    rows.iter()
        .map(|r| {
            let bytes: Vec<u8> = r.try_get("event_id")?;
            uuid::Uuid::from_slice(&bytes)
                .map_err(|_| sqlx::Error::Decode("archived event id is invalid".into()))
        })
        .collect()
}

/// Whether the archive holds a ban of `ip` by this site's host `origin` in `jail` that the
/// stream carried (not imported history), made from `from_ms` to `to_ms` (exclusive).
pub async fn has_ban(
    db: &Db,
    origin: &str,
    ip: IpAddr,
    jail: &str,
    from_ms: i64,
    to_ms: i64,
) -> Result<bool, sqlx::Error> {
    let n: i64 = sqlx::query_scalar(
        "SELECT COUNT(*) FROM f2b_events WHERE ip = ? AND origin = ? AND jail = ? \
         AND action = 'ban' AND site IS NULL AND stream_seq <> ? \
         AND event_time_ms >= ? AND event_time_ms < ?",
    )
    .bind(ip_key(ip))
    .bind(origin)
    .bind(jail)
    .bind(IMPORTED_SEQ)
    .bind(from_ms)
    .bind(to_ms)
    .fetch_one(&db.pool)
    .await?;
    Ok(n > 0)
}

/// The nets operators' pardons and allows in force at `now` cover (this site's own orders).
pub async fn shields_in_force(db: &Db, now: SystemTime) -> Result<Vec<IpNet>, sqlx::Error> {
    let mut q: QueryBuilder<Any> =
        QueryBuilder::new("SELECT c.net_text FROM f2b_control c WHERE c.kind IN (");
    q.push_bind(ControlKind::Pardon.as_str())
        .push(", ")
        .push_bind(ControlKind::Allow.as_str())
        .push(") AND c.site IS NULL AND (c.until_ms IS NULL OR c.until_ms > ")
        .push_bind(ms(now))
        .push(") AND NOT EXISTS (SELECT 1 FROM f2b_control r WHERE r.revokes = c.event_id AND r.kind = ")
        .push_bind(ControlKind::Revoke.as_str())
        .push(")");
    let rows = q.build().fetch_all(&db.pool).await?;
    let mut nets = Vec::with_capacity(rows.len());
    for row in rows {
        let text: Option<String> = row.try_get("net_text")?;
        if let Some(net) = text.and_then(|t| parse_net(&t).ok()) {
            nets.push(net);
        }
    }
    Ok(nets)
}

/// The intel and unlist orders whose net holds `ip`, newest first: which intake source listed
/// it and when (`history --ip`).
pub async fn intel_about(
    db: &Db,
    ip: IpAddr,
    limit: i64,
) -> Result<Vec<StoredControl>, sqlx::Error> {
    let mut q: QueryBuilder<Any> = QueryBuilder::new(CONTROL_COLUMNS);
    q.push(" WHERE c.kind IN (")
        .push_bind(ControlKind::Intel.as_str())
        .push(", ")
        .push_bind(ControlKind::Unlist.as_str())
        .push(") AND ")
        .push_bind(ip_key(ip))
        .push(" BETWEEN c.net_lo AND c.net_hi AND (c.net_text LIKE '%:%') = ")
        .push_bind(ip.to_canonical().is_ipv6())
        .push(" ORDER BY c.stream_seq DESC LIMIT ")
        .push_bind(limit);
    let rows = q.build().fetch_all(&db.pool).await?;
    rows.iter().map(decode_control).collect()
}

/// The stream mark ([`crate::store::Mark`]).
pub async fn stream_mark(db: &Db) -> Result<crate::store::Mark, sqlx::Error> {
    let row: Option<(i64, i64)> =
        sqlx::query_as("SELECT last_seq, last_ms FROM f2b_stream_mark WHERE id = 1")
            .fetch_optional(&db.pool)
            .await?;
    Ok(
        row.map_or_else(Default::default, |(seq, ms)| crate::store::Mark {
            seq: seq.max(0) as u64,
            ms,
        }),
    )
}

/// Where a catch-up after `after` starts: at the lowest seal's cut below `after` whose
/// renumbered messages are archived above it (a cursor between them may have passed sequences
/// the stream numbered again), else at `after`.
pub async fn catchup_start(db: &Db, after: u64) -> Result<u64, sqlx::Error> {
    let cut: Option<i64> = sqlx::query(
        "SELECT MIN(cut_seq) AS cut FROM f2b_stream_seals WHERE cut_seq < ? AND base_seq > ?",
    )
    .bind(after as i64)
    .bind(after as i64)
    .fetch_one(&db.pool)
    .await?
    .try_get("cut")?;
    Ok(cut
        .and_then(|cut| u64::try_from(cut).ok())
        .map_or(after, |cut| cut.min(after)))
}

//! What the operator commands print: tables for people, JSON for machines (the lists a
//! firewall loads are [`crate::blocklist::format`]).

use crate::blocklist::Listed;
use crate::query::{Stat, Stored};
use crate::text::when;
use serde_json::json;
use std::fmt::Write;

/// `history` as a table.
pub fn history_table(rows: &[Stored]) -> String {
    let mut out = format!(
        "{:<20} {:<6} {:<39} {:<16} {:<20} {:>8} {:>8} port/protocol\n",
        "time (UTC)", "action", "ip", "jail", "origin", "bantime", "failures"
    );
    for s in rows {
        let e = &s.event;
        let _ = writeln!(
            out,
            "{:<20} {:<6} {:<39} {:<16} {:<20} {:>8} {:>8} {}",
            when(e.time),
            e.action.as_str(),
            e.ip,
            e.jail,
            e.who(),
            e.bantime,
            e.failures,
            port_protocol(e)
        );
    }
    out
}

/// `ssh/tcp`, `22`, `/udp` or `-`: what the event says of the jail's ports.
fn port_protocol(e: &shared_f2b::Event) -> String {
    match (&e.port, &e.protocol) {
        (None, None) => "-".into(),
        (port, None) => port.clone().unwrap_or_default(),
        (port, Some(protocol)) => format!("{}/{protocol}", port.as_deref().unwrap_or("")),
    }
}

/// `history --ip`'s second table: the intake sources that listed the address, and when.
pub fn listings_table(ip: std::net::IpAddr, orders: &[crate::query::StoredControl]) -> String {
    let mut out = format!(
        "listed by intake sources ({ip}):\n{:<20} {:<6} {:<20} {:<43} {:<20} listing\n",
        "time (UTC)", "order", "source", "net", "until (UTC)"
    );
    for o in orders {
        let c = &o.control;
        let listing = c.listing.as_ref().map_or_else(String::new, |l| {
            let mut parts = Vec::new();
            if let Some(e) = l.event {
                parts.push(format!("event {e}"));
            }
            if let Some(a) = l.attribute {
                parts.push(format!("attribute {a}"));
            }
            if !l.tags.is_empty() {
                parts.push(format!("tags {}", l.tags.join(",")));
            }
            parts.join(" ")
        });
        let _ = writeln!(
            out,
            "{:<20} {:<6} {:<20} {:<43} {:<20} {}",
            when(c.time),
            c.kind.as_str(),
            c.operator,
            c.net.map(|n| n.to_string()).unwrap_or_default(),
            c.until.map(when).unwrap_or_else(|| "-".into()),
            listing
        );
    }
    out
}

/// `history --json`: one object per event, with its stream sequence.
pub fn history_json(rows: &[Stored]) -> serde_json::Value {
    json!(
        rows.iter()
            .map(|s| json!({"seq": s.seq, "received": when(s.received), "event": s.event}))
            .collect::<Vec<_>>()
    )
}

/// `active` as a table.
pub fn active_table(bans: &[Listed]) -> String {
    let mut out = format!(
        "{:<39} {:>9} {:<20} jails\n",
        "ip", "reporters", "expires (UTC)"
    );
    for b in bans {
        let _ = writeln!(
            out,
            "{:<39} {:>9} {:<20} {}",
            b.ip,
            b.reporters,
            b.expires.map(when).unwrap_or_else(|| "permanent".into()),
            b.operator.as_ref().map_or_else(
                || b.jails.join(","),
                |op| format!("{} (operator {op})", b.jails.join(","))
                    .trim_start()
                    .to_owned()
            )
        );
    }
    out
}

/// `stats` as three tables.
pub fn stats_table(days: &[Stat], origins: &[Stat], jails: &[Stat]) -> String {
    let mut out = String::new();
    for (title, rows) in [("day (UTC)", days), ("origin", origins), ("jail", jails)] {
        let _ = writeln!(out, "{title:<32} {:>10} {:>10}", "bans", "unbans");
        for s in rows {
            let _ = writeln!(out, "{:<32} {:>10} {:>10}", s.key, s.bans, s.unbans);
        }
        out.push('\n');
    }
    out
}

/// `stats --json`.
pub fn stats_json(days: &[Stat], origins: &[Stat], jails: &[Stat]) -> serde_json::Value {
    let list = |rows: &[Stat]| {
        rows.iter()
            .map(|s| json!({"key": s.key, "bans": s.bans, "unbans": s.unbans}))
            .collect::<Vec<_>>()
    };
    json!({"per_day": list(days), "per_origin": list(origins), "per_jail": list(jails)})
}

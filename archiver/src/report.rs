//! What the operator commands print: tables for people, JSON for machines, and export formats a
//! firewall or another site loads directly.

use crate::query::{Counted, Stat, Stored};
use serde_json::json;
use std::collections::BTreeMap;
use std::fmt::Write;
use std::net::IpAddr;
use std::time::SystemTime;

/// An address banned now, by how many origins.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ActiveBan {
    pub ip: IpAddr,
    pub reporters: usize,
    pub jails: Vec<String>,
    /// `None`: permanent.
    pub expires: Option<SystemTime>,
}

/// Groups the active ban rows (one per origin) by address, in address order.
pub fn group_active(rows: &[Stored]) -> Vec<ActiveBan> {
    let mut by_ip: BTreeMap<IpAddr, (ActiveBan, Vec<&str>)> = BTreeMap::new();
    for s in rows {
        let e = &s.event;
        let (ban, origins) = by_ip.entry(e.ip).or_insert_with(|| {
            let first = ActiveBan {
                ip: e.ip,
                reporters: 0,
                jails: Vec::new(),
                expires: e.expires(),
            };
            (first, Vec::new())
        });
        if !origins.contains(&e.origin.as_str()) {
            origins.push(&e.origin);
            ban.reporters += 1;
        }
        if !ban.jails.contains(&e.jail) {
            ban.jails.push(e.jail.clone());
        }
        // The latest end wins; a permanent ban (None) outlasts any.
        ban.expires = match (ban.expires, e.expires()) {
            (Some(a), Some(b)) => Some(a.max(b)),
            _ => None,
        };
    }
    by_ip.into_values().map(|(ban, _)| ban).collect()
}

fn when(t: SystemTime) -> String {
    humantime::format_rfc3339_seconds(t).to_string()
}

/// `history` as a table.
pub fn history_table(rows: &[Stored]) -> String {
    let mut out = format!(
        "{:<20} {:<6} {:<39} {:<16} {:<20} {:>8} {:>8}\n",
        "time (UTC)", "action", "ip", "jail", "origin", "bantime", "failures"
    );
    for s in rows {
        let e = &s.event;
        let _ = writeln!(
            out,
            "{:<20} {:<6} {:<39} {:<16} {:<20} {:>8} {:>8}",
            when(e.time),
            e.action.as_str(),
            e.ip,
            e.jail,
            e.origin,
            e.bantime,
            e.failures
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
pub fn active_table(bans: &[ActiveBan]) -> String {
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
            b.jails.join(",")
        );
    }
    out
}

/// Export formats.
#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
pub enum Format {
    /// One address per line.
    Plain,
    /// `ip,count` lines, as the original Shared-Fail2Ban exported.
    Csv,
    /// `[{"ip": …, "count": …}]`.
    Json,
    /// An nftables table with one set per family and a drop rule (`nft -f`).
    Nftables,
    /// `ipset restore` input, one set per family.
    Ipset,
}

/// Renders addresses with counts (reporters for active bans, ban events for `--all`).
pub fn export(format: Format, list: &[Counted], name: &str) -> String {
    let (v4, v6): (Vec<&Counted>, Vec<&Counted>) = list.iter().partition(|c| c.ip.is_ipv4());
    let mut out = String::new();
    match format {
        Format::Plain => list.iter().for_each(|c| {
            let _ = writeln!(out, "{}", c.ip);
        }),
        Format::Csv => list.iter().for_each(|c| {
            let _ = writeln!(out, "{},{}", c.ip, c.count);
        }),
        Format::Json => {
            let items: Vec<_> = list
                .iter()
                .map(|c| json!({"ip": c.ip.to_string(), "count": c.count}))
                .collect();
            out = serde_json::to_string_pretty(&items).expect("serialises") + "\n";
        }
        Format::Nftables => {
            let _ = writeln!(out, "table inet {name} {{");
            for (set, kind, ips) in [
                ("banned_v4", "ipv4_addr", &v4),
                ("banned_v6", "ipv6_addr", &v6),
            ] {
                let _ = writeln!(out, "\tset {set} {{\n\t\ttype {kind}");
                if !ips.is_empty() {
                    let elements: Vec<String> = ips.iter().map(|c| c.ip.to_string()).collect();
                    let _ = writeln!(out, "\t\telements = {{ {} }}", elements.join(", "));
                }
                let _ = writeln!(out, "\t}}");
            }
            let _ = writeln!(
                out,
                "\tchain input {{\n\t\ttype filter hook input priority -10; policy accept;\n\
                 \t\tip saddr @banned_v4 drop\n\t\tip6 saddr @banned_v6 drop\n\t}}\n}}"
            );
        }
        Format::Ipset => {
            for (suffix, family, ips) in [("v4", "inet", &v4), ("v6", "inet6", &v6)] {
                let _ = writeln!(out, "create {name}-{suffix} hash:ip family {family} -exist");
                for c in ips.iter() {
                    let _ = writeln!(out, "add {name}-{suffix} {} -exist", c.ip);
                }
            }
        }
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

#[cfg(test)]
mod tests {
    use super::*;

    fn list() -> Vec<Counted> {
        ["192.0.2.1", "2001:db8::1", "198.51.100.7"]
            .iter()
            .enumerate()
            .map(|(i, ip)| Counted {
                ip: ip.parse().unwrap(),
                count: i as u64 + 1,
            })
            .collect()
    }

    #[test]
    fn plain_and_csv_round_trip() {
        let l = list();
        let plain: Vec<IpAddr> = export(Format::Plain, &l, "x")
            .lines()
            .map(|s| s.parse().unwrap())
            .collect();
        assert_eq!(plain, l.iter().map(|c| c.ip).collect::<Vec<_>>());
        let csv: Vec<Counted> = export(Format::Csv, &l, "x")
            .lines()
            .map(|line| {
                let (ip, n) = line.split_once(',').unwrap();
                Counted {
                    ip: ip.parse().unwrap(),
                    count: n.parse().unwrap(),
                }
            })
            .collect();
        assert_eq!(csv, l);
        let json: serde_json::Value = serde_json::from_str(&export(Format::Json, &l, "x")).unwrap();
        assert_eq!(json[1]["ip"], "2001:db8::1");
    }

    #[test]
    fn ipset_puts_each_family_in_its_set() {
        let text = export(Format::Ipset, &list(), "shared-f2b");
        assert!(text.contains("create shared-f2b-v4 hash:ip family inet -exist"));
        assert!(text.contains("add shared-f2b-v4 198.51.100.7 -exist"));
        assert!(text.contains("add shared-f2b-v6 2001:db8::1 -exist"));
    }
}

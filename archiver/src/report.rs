//! What the operator commands print: tables for people, JSON for machines, and export formats a
//! firewall or another site loads directly.

use crate::blocklist::Listed;
use crate::query::{Stat, Stored};
use serde_json::json;
use std::fmt::Write;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

/// A time as RFC 3339 in UTC, never past 9999-12-31T23:59:59Z (RFC 3339 has four-digit
/// years; a ban ending later is written as ending then).
pub fn when(t: SystemTime) -> String {
    let latest = UNIX_EPOCH + Duration::from_secs(253_402_300_799);
    humantime::format_rfc3339_seconds(t.min(latest)).to_string()
}

/// Bytes as lower-case hex (digests in ETags and MISP hash lists).
pub fn hex(bytes: &[u8]) -> String {
    bytes.iter().map(|b| format!("{b:02x}")).collect()
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

/// Export formats: `/v1/blocklist?format=` and `export --format`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, clap::ValueEnum)]
pub enum Format {
    /// One address per line.
    Plain,
    /// `ip,count` lines, as the original Shared-Fail2Ban exported.
    Csv,
    /// `[{"ip", "count", "jails", "operator", "expires"}]`.
    Json,
    /// An nftables table with one set per family and a drop rule (`nft -f`).
    Nftables,
    /// `ipset restore` input, one set per family.
    Ipset,
    /// A RouterOS script that replaces an address list per family (`/import`).
    Mikrotik,
    /// A Zeek intel file (`Intel::ADDR`), for `Intel::read_files`.
    Zeek,
    /// A MISP feed directory (`export --out DIR`; not a list).
    MispFeed,
}

impl Format {
    /// The word in `format=`; `None` for a word that names no list format.
    pub fn parse(word: &str) -> Option<Format> {
        use clap::ValueEnum;
        Format::from_str(word, false)
            .ok()
            .filter(|f| *f != Format::MispFeed)
    }

    /// Whether a list in it names its table, sets or address list (`name`).
    pub fn uses_name(self) -> bool {
        matches!(
            self,
            Format::Nftables | Format::Ipset | Format::Mikrotik | Format::Zeek
        )
    }

    /// The `Content-Type` it is served with.
    pub fn content_type(self) -> &'static str {
        match self {
            Format::Json | Format::MispFeed => "application/json",
            Format::Csv => "text/csv; charset=utf-8",
            _ => "text/plain; charset=utf-8",
        }
    }
}

/// What a rendered list names besides its addresses.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub struct Naming {
    /// nftables table, ipset set prefix, MikroTik address list.
    pub name: String,
    /// Where each address's history can be read (Zeek's `meta.url`).
    pub public_url: Option<String>,
}

impl Default for Naming {
    fn default() -> Naming {
        Naming {
            name: "shared-f2b".into(),
            public_url: None,
        }
    }
}

/// The size of the ipset sets (fixed: `create -exist` refuses a set made with another).
const IPSET_MAXELEM: usize = 1 << 20;

/// Whether `name` can name a table, set or address list: 1-24 letters, digits, `_` and `-`,
/// starting with a letter (nothing a firewall's parser could read as more; ipset names, with
/// `-v4-new` added, stay within its 31 characters).
pub fn check_list_name(name: &str) -> Result<(), String> {
    let ok = (1..=24).contains(&name.len())
        && name.starts_with(|c: char| c.is_ascii_alphabetic())
        && name
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || b == b'_' || b == b'-');
    if ok {
        Ok(())
    } else {
        Err(format!(
            "name {name:?}: use 1-24 letters, digits, '_' and '-', starting with a letter"
        ))
    }
}

/// Renders the list. Names and jails are checked where they enter (config, events), and
/// [`check_list_name`] before this.
pub fn export(format: Format, list: &[Listed], naming: &Naming) -> String {
    let name = &naming.name;
    let (v4, v6): (Vec<&Listed>, Vec<&Listed>) = list.iter().partition(|l| l.ip.is_ipv4());
    let mut out = String::with_capacity(list.len() * 24 + 256);
    match format {
        Format::Plain => list.iter().for_each(|l| {
            let _ = writeln!(out, "{}", l.ip);
        }),
        Format::Csv => list.iter().for_each(|l| {
            let _ = writeln!(out, "{},{}", l.ip, l.reporters);
        }),
        Format::Json => {
            let items: Vec<_> = list
                .iter()
                .map(|l| {
                    json!({
                        "ip": l.ip.to_string(),
                        "count": l.reporters,
                        "jails": l.jails,
                        "operator": l.operator,
                        "expires": l.expires.map(when),
                    })
                })
                .collect();
            out = serde_json::to_string(&items).expect("serialises") + "\n";
        }
        Format::Nftables => {
            // Replaces the table whole, atomically (`nft -f` applies a file as one
            // transaction): addresses no longer listed leave, rules are not added twice.
            let _ = writeln!(out, "table inet {name} {{}}\ndelete table inet {name}");
            let _ = writeln!(out, "table inet {name} {{");
            for (set, kind, ips) in [
                ("banned_v4", "ipv4_addr", &v4),
                ("banned_v6", "ipv6_addr", &v6),
            ] {
                let _ = writeln!(out, "\tset {set} {{\n\t\ttype {kind}");
                if !ips.is_empty() {
                    out.push_str("\t\telements = { ");
                    for (i, l) in ips.iter().enumerate() {
                        if i > 0 {
                            out.push_str(", ");
                        }
                        let _ = write!(out, "{}", l.ip);
                    }
                    out.push_str(" }\n");
                }
                let _ = writeln!(out, "\t}}");
            }
            for (chain, hook) in [("input", "input"), ("forward", "forward")] {
                let _ = writeln!(
                    out,
                    "\tchain {chain} {{\n\t\ttype filter hook {hook} priority -10; policy accept;\n\
                     \t\tip saddr @banned_v4 drop\n\t\tip6 saddr @banned_v6 drop\n\t}}"
                );
            }
            out.push_str("}\n");
        }
        Format::Ipset => {
            // Filled under a new name, then swapped in (atomic) and the old one destroyed:
            // addresses no longer listed leave.
            for (suffix, family, ips) in [("v4", "inet", &v4), ("v6", "inet6", &v6)] {
                let set = format!("{name}-{suffix}");
                let new = format!("{set}-new");
                for s in [&set, &new] {
                    let _ = writeln!(
                        out,
                        "create {s} hash:ip family {family} maxelem {IPSET_MAXELEM} -exist"
                    );
                }
                let _ = writeln!(out, "flush {new}");
                for l in ips.iter() {
                    let _ = writeln!(out, "add {new} {} -exist", l.ip);
                }
                let _ = writeln!(out, "swap {new} {set}\ndestroy {new}");
            }
        }
        Format::Mikrotik => {
            for (menu, ips, host) in [("/ip", &v4, 32), ("/ipv6", &v6, 128)] {
                let _ = writeln!(
                    out,
                    "{menu} firewall address-list remove [find list=\"{name}\"]"
                );
                for l in ips.iter() {
                    let _ = writeln!(
                        out,
                        "{menu} firewall address-list add list=\"{name}\" address={}/{host}",
                        l.ip
                    );
                }
            }
        }
        Format::Zeek => {
            out.push_str("#fields\tindicator\tindicator_type\tmeta.source\tmeta.desc\tmeta.url\n");
            for l in list {
                let url = naming.public_url.as_ref().map_or_else(
                    || "-".to_owned(),
                    |base| format!("{}/v1/history?ip={}", base.trim_end_matches('/'), l.ip),
                );
                let _ = writeln!(out, "{}\tIntel::ADDR\t{name}\t{}\t{url}", l.ip, describe(l));
            }
        }
        Format::MispFeed => unreachable!("a MISP feed is a directory: misp::write_feed"),
    }
    out
}

/// One line saying why an address is listed (no tabs: Zeek's field separator).
fn describe(l: &Listed) -> String {
    let mut parts = Vec::new();
    if l.reporters > 0 {
        let hosts = if l.reporters == 1 { "host" } else { "hosts" };
        parts.push(format!(
            "banned by {} {hosts} ({})",
            l.reporters,
            l.jails.join(",")
        ));
    }
    if let Some(op) = &l.operator {
        parts.push(format!("banned by operator {op}"));
    }
    let until = l
        .expires
        .map_or_else(|| "permanent".to_owned(), |t| format!("until {}", when(t)));
    format!("{}; {until}", parts.join("; "))
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
    use std::net::IpAddr;
    use std::time::{Duration, UNIX_EPOCH};

    fn list() -> Vec<Listed> {
        ["192.0.2.1", "2001:db8::1", "198.51.100.7"]
            .iter()
            .enumerate()
            .map(|(i, ip)| Listed {
                jails: vec!["sshd".into()],
                expires: Some(UNIX_EPOCH + Duration::from_secs(1_800_000_000)),
                ..Listed::counted(ip.parse().unwrap(), i + 1)
            })
            .collect()
    }

    fn naming() -> Naming {
        Naming {
            name: "shared-f2b".into(),
            public_url: None,
        }
    }

    #[test]
    fn plain_and_csv_round_trip() {
        let l = list();
        let plain: Vec<IpAddr> = export(Format::Plain, &l, &naming())
            .lines()
            .map(|s| s.parse().unwrap())
            .collect();
        assert_eq!(plain, l.iter().map(|c| c.ip).collect::<Vec<_>>());
        let csv: Vec<(IpAddr, usize)> = export(Format::Csv, &l, &naming())
            .lines()
            .map(|line| {
                let (ip, n) = line.split_once(',').unwrap();
                (ip.parse().unwrap(), n.parse().unwrap())
            })
            .collect();
        assert_eq!(csv[2], ("198.51.100.7".parse().unwrap(), 3));
        let json: serde_json::Value =
            serde_json::from_str(&export(Format::Json, &l, &naming())).unwrap();
        assert_eq!(json[1]["ip"], "2001:db8::1");
        assert_eq!(json[1]["expires"], "2027-01-15T08:00:00Z");
    }

    #[test]
    fn ipset_puts_each_family_in_its_set() {
        let text = export(Format::Ipset, &list(), &naming());
        assert!(text.contains("create shared-f2b-v4 hash:ip family inet maxelem 1048576 -exist"));
        assert!(text.contains("add shared-f2b-v4-new 198.51.100.7 -exist"));
        assert!(text.contains("add shared-f2b-v6-new 2001:db8::1 -exist"));
        assert!(text.contains("swap shared-f2b-v4-new shared-f2b-v4\ndestroy shared-f2b-v4-new"));
    }

    #[test]
    fn mikrotik_replaces_one_list_per_family() {
        let text = export(Format::Mikrotik, &list(), &naming());
        let lines: Vec<&str> = text.lines().collect();
        assert_eq!(
            lines[0],
            "/ip firewall address-list remove [find list=\"shared-f2b\"]"
        );
        assert!(
            lines.contains(
                &"/ip firewall address-list add list=\"shared-f2b\" address=192.0.2.1/32"
            )
        );
        assert!(lines.contains(
            &"/ipv6 firewall address-list add list=\"shared-f2b\" address=2001:db8::1/128"
        ));
    }

    #[test]
    fn zeek_lines_have_the_five_fields() {
        let mut naming = naming();
        naming.public_url = Some("https://f2b.example.org/".into());
        let text = export(Format::Zeek, &list(), &naming);
        let mut lines = text.lines();
        assert_eq!(
            lines.next().unwrap(),
            "#fields\tindicator\tindicator_type\tmeta.source\tmeta.desc\tmeta.url"
        );
        let first: Vec<&str> = lines.next().unwrap().split('\t').collect();
        assert_eq!(
            first,
            [
                "192.0.2.1",
                "Intel::ADDR",
                "shared-f2b",
                "banned by 1 host (sshd); until 2027-01-15T08:00:00Z",
                "https://f2b.example.org/v1/history?ip=192.0.2.1"
            ]
        );
    }

    #[test]
    fn times_past_the_year_9999_print_as_its_last_second() {
        let far = UNIX_EPOCH + Duration::from_secs(400_000_000_000);
        assert_eq!(when(far), "9999-12-31T23:59:59Z");
    }

    #[test]
    fn list_names_are_checked() {
        assert!(check_list_name("shared-f2b").is_ok());
        for bad in ["", "1x", "a b", "a;b", "a\"b", &"x".repeat(25)] {
            assert!(check_list_name(bad).is_err(), "{bad}");
        }
        assert_eq!(Format::parse("zeek"), Some(Format::Zeek));
        assert_eq!(Format::parse("misp-feed"), None);
        assert_eq!(Format::parse("PLAIN"), None);
    }
}

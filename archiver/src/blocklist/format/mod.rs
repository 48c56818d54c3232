//! The formats a blocklist is rendered in, one module each: what `/v1/blocklist?format=` serves
//! and `export --format` prints, byte for byte the same.

mod csv;
mod ipset;
mod json;
mod mikrotik;
mod nftables;
mod plain;
mod zeek;

use super::Listed;

/// Export formats: `/v1/blocklist?format=` and `export --format`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, clap::ValueEnum)]
pub enum Format {
    /// One address per line.
    Plain,
    /// `ip,count` lines, as the original Shared-Fail2Ban exported.
    Csv,
    /// `[{"ip", "count", "jails", "operator", "source", "expires"}]`.
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

/// A list name a firewall could read as more than a name.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("name {0:?}: use 1-24 letters, digits, '_' and '-', starting with a letter")]
pub struct BadListName(pub String);

/// Whether `name` can name a table, set or address list: 1-24 letters, digits, `_` and `-`,
/// starting with a letter (nothing a firewall's parser could read as more; ipset names, with
/// `-v4-new` added, stay within its 31 characters).
pub fn check_list_name(name: &str) -> Result<(), BadListName> {
    let ok = (1..=24).contains(&name.len())
        && name.starts_with(|c: char| c.is_ascii_alphabetic())
        && name
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || b == b'_' || b == b'-');
    ok.then_some(()).ok_or_else(|| BadListName(name.to_owned()))
}

/// Renders the list. Names and jails are checked where they enter (config, events), and
/// [`check_list_name`] before this.
pub fn render(format: Format, list: &[Listed], naming: &Naming) -> String {
    let mut out = String::with_capacity(list.len() * 24 + 256);
    match format {
        Format::Plain => plain::write(&mut out, list),
        Format::Csv => csv::write(&mut out, list),
        Format::Json => json::write(&mut out, list),
        Format::Nftables => nftables::write(&mut out, list, &naming.name),
        Format::Ipset => ipset::write(&mut out, list, &naming.name),
        Format::Mikrotik => mikrotik::write(&mut out, list, &naming.name),
        Format::Zeek => zeek::write(&mut out, list, naming),
        Format::MispFeed => unreachable!("a MISP feed is a directory: misp::write_feed"),
    }
    out
}

/// The list's IPv4 and IPv6 entries apart (the firewalls keep one set per family).
fn by_family(list: &[Listed]) -> (Vec<&Listed>, Vec<&Listed>) {
    list.iter().partition(|l| l.ip.is_ipv4())
}

#[cfg(test)]
pub(super) mod fixtures {
    use super::*;
    use std::time::{Duration, UNIX_EPOCH};

    /// Three bans, IPv4 and IPv6, by 1, 2 and 3 hosts.
    pub fn list() -> Vec<Listed> {
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

    pub fn naming() -> Naming {
        Naming::default()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

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

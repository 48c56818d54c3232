//! `[[archiver.intake]]`: the threat-intelligence sources the archiver takes in (a MISP
//! instance's REST API, a MISP static feed, a plain list of addresses and nets), each fetched
//! `every` so long and turned into intel orders (see [`crate::control`]).

use crate::config::Invalid;
use crate::event::validate_host;
use serde::Deserialize;
use std::path::PathBuf;
use std::time::Duration;

/// What a source is.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum IntakeKind {
    /// A MISP instance's REST API: `POST <url>/attributes/restSearch`.
    Misp,
    /// A MISP static feed: `manifest.json` and one `<uuid>.json` per event, by URL or directory.
    MispFeed,
    /// One address or CIDR per line, `#` and `;` comments (FireHOL, Spamhaus DROP/EDROP).
    List,
}

impl IntakeKind {
    pub fn as_str(self) -> &'static str {
        match self {
            IntakeKind::Misp => "misp",
            IntakeKind::MispFeed => "misp-feed",
            IntakeKind::List => "list",
        }
    }
}

/// One `[[archiver.intake]]` source.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct IntakeConfig {
    /// Its name: the "operator" of its orders, in subjects, logs, the page and `history`.
    pub name: String,
    pub kind: IntakeKind,
    /// `https://…` (`http://` only to localhost for `misp`, which sends a key), or for
    /// `misp-feed` and `list` a `file://` path or plain path.
    pub url: String,
    /// How often it is fetched.
    #[serde(default = "default_every", with = "humantime_serde")]
    pub every: Duration,
    /// How long an entry is banned per listing; an entry the source still lists is ordered
    /// again once half of it is gone (so a fetch that finds nothing changed publishes
    /// nothing), and one it no longer lists is unlisted everywhere.
    #[serde(default = "default_bantime", with = "humantime_serde")]
    pub bantime: Duration,
    /// The widest IPv4 net taken (wider entries are left out).
    #[serde(default = "default_max_prefix")]
    pub max_prefix: u8,
    /// The widest IPv6 net taken.
    #[serde(default = "default_max_prefix_v6")]
    pub max_prefix_v6: u8,
    /// At most this many entries are listed from it (the first ones).
    #[serde(default = "default_max_entries")]
    pub max_entries: usize,
    /// `misp`: the file holding the API key.
    #[serde(default)]
    pub key_file: Option<PathBuf>,
    /// `misp`, `misp-feed`: only attributes carrying one of these tags (on the attribute or
    /// its event); empty: any.
    #[serde(default)]
    pub tags: Vec<String>,
    /// `misp`, `misp-feed`: only attributes flagged for detection (`to_ids`).
    #[serde(default = "yes")]
    pub to_ids: bool,
    /// `misp`, `misp-feed`: only published events (`true`), only unpublished (`false`).
    #[serde(default)]
    pub published: Option<bool>,
    /// `misp`, `misp-feed`: only attributes changed within this age.
    #[serde(default, with = "humantime_serde")]
    pub last: Option<Duration>,
    /// `misp`, `misp-feed`: only events of threat level at most this (1 high … 4 undefined).
    #[serde(default)]
    pub threat_level: Option<u8>,
}

/// Whether `url` may carry a key or be trusted for what it says: `https://`, or `http://` to
/// this machine only (127.0.0.1, ::1, localhost); no user info, no spaces or control
/// characters.
pub fn secure_url(url: &str) -> bool {
    let (tls, rest) = match (url.strip_prefix("https://"), url.strip_prefix("http://")) {
        (Some(rest), _) => (true, rest),
        (None, Some(rest)) => (false, rest),
        (None, None) => return false,
    };
    let authority = rest.split(['/', '?', '#']).next().unwrap_or_default();
    if authority.is_empty()
        || authority.contains('@')
        || url.chars().any(|c| c.is_whitespace() || c.is_control())
    {
        return false;
    }
    let host = match authority.strip_prefix('[') {
        Some(v6) => v6.split(']').next().unwrap_or_default(),
        None => authority.split(':').next().unwrap_or_default(),
    };
    tls || matches!(host, "127.0.0.1" | "localhost" | "::1")
}

fn default_every() -> Duration {
    Duration::from_secs(15 * 60)
}

fn default_bantime() -> Duration {
    Duration::from_secs(24 * 3600)
}

fn default_max_prefix() -> u8 {
    24
}

fn default_max_prefix_v6() -> u8 {
    48
}

fn default_max_entries() -> usize {
    100_000
}

fn yes() -> bool {
    true
}

impl IntakeConfig {
    /// Checks one source (`names`: the names seen before it).
    pub fn check(&self, names: &[&str]) -> Result<(), Invalid> {
        let what = format!("archiver.intake {:?}", self.name);
        validate_host(&self.name).map_err(|e| Invalid::from(format!("{what}: name: {e}")))?;
        if self.name.len() > 64 || names.contains(&self.name.as_str()) {
            return Err(Invalid::from(format!(
                "{what}: names are unique and at most 64 characters"
            )));
        }
        if self.every.is_zero() || self.bantime < self.every * 2 {
            return Err(Invalid::from(format!(
                "{what}: every must be longer than 0s and bantime at least twice every"
            )));
        }
        if !(8..=32).contains(&self.max_prefix) || !(16..=128).contains(&self.max_prefix_v6) {
            return Err(Invalid::from(format!(
                "{what}: max_prefix is 8-32 and max_prefix_v6 16-128"
            )));
        }
        if self.max_entries == 0 {
            return Err(Invalid::from(format!(
                "{what}: max_entries must be above 0"
            )));
        }
        if (self.kind == IntakeKind::Misp) != self.key_file.is_some() {
            return Err(Invalid::from(format!(
                "{what}: key_file is for kind = \"misp\", which needs it"
            )));
        }
        let remote = self.url.starts_with("https://") || self.url.starts_with("http://");
        if self.kind == IntakeKind::Misp && !remote {
            return Err(Invalid::from(format!(
                "{what}: a MISP instance's url is https://… (http:// only to localhost)"
            )));
        }
        // In clear, anyone on the path could add entries (and read a MISP key).
        if remote && !secure_url(&self.url) {
            return Err(Invalid::from(format!(
                "{what}: url {:?}: use https:// (http:// only to 127.0.0.1, ::1 or localhost)",
                self.url
            )));
        }
        if self.kind == IntakeKind::List && (!self.tags.is_empty() || self.threat_level.is_some()) {
            return Err(Invalid::from(format!(
                "{what}: tags and threat_level are for MISP sources"
            )));
        }
        Ok(())
    }
}

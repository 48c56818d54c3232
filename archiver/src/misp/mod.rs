//! The archive as MISP sees it: a MISP static feed in a directory (`export --format misp-feed`)
//! and the same events sent to a MISP instance's REST API (`misp-push`).
//!
//! One MISP event per UTC day of ban events (its uuid derived from the organisation's uuid and
//! the day, so every run names a day alike), holding one `fail2ban` object per ban, in archive
//! row order. Bans an operator pardoned or allowed since are left out: mistakes, not offences;
//! so are addresses `[archiver] feed_allowlist` covers (and those no firewall can drop): the
//! site's own networks are not indicators to share.
//! `event` renders a day ([`render_event`], [`manifest_entry`], [`event_hashes`]: pure);
//! `feed` ([`write_feed`]) and `push` ([`push()`]) do the I/O, reading the archive one day at a
//! time.

mod event;
mod feed;
mod push;

pub use event::{
    TEMPLATE_UUID, TEMPLATE_VERSION, event_hashes, event_uuid, manifest_entry, newest_received,
    render_event,
};
pub use feed::{FeedSummary, write_feed};
pub use push::{PushSummary, Target, push};

use crate::blocklist::never_listed;
use crate::db::Db;
use crate::query::{self, Stored};
use ipnet::IpNet;
use std::collections::VecDeque;
use std::path::{Path, PathBuf};
use std::time::{Duration, SystemTime, UNIX_EPOCH};

/// Rows per archive query.
const PAGE: usize = 5000;
const DAY_SECS: u64 = 86_400;

/// What can go wrong writing the feed or pushing it.
#[derive(Debug, thiserror::Error)]
pub enum MispError {
    #[error("reading the archive: {0}")]
    Db(#[from] sqlx::Error),
    #[error("{}: {source}", path.display())]
    Io {
        path: PathBuf,
        source: std::io::Error,
    },
    #[error(
        "{}: not an event file of this feed ({detail}); move it out of the feed directory",
        path.display()
    )]
    BadFile { path: PathBuf, detail: String },
    #[error(
        "--url {0:?}: give the MISP instance's https:// address (http:// only to 127.0.0.1 or \
         localhost: the API key would travel in clear)"
    )]
    Url(String),
    #[error("--key-file {}: {source}", path.display())]
    KeyFile {
        path: PathBuf,
        source: std::io::Error,
    },
    #[error(
        "--key-file {}: the file is empty; put the MISP user's API key in it",
        .0.display()
    )]
    EmptyKey(PathBuf),
    #[error("{url}: {detail}")]
    Transport { url: String, detail: String },
    #[error("{url}: MISP answered {status}: {body}")]
    Refused {
        url: String,
        status: u16,
        body: String,
    },
}

fn io(path: &Path) -> impl FnOnce(std::io::Error) -> MispError + '_ {
    move |source| MispError::Io {
        path: path.to_owned(),
        source,
    }
}

/// A UTC day, as days since 1970-01-01.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct Day(pub u64);

impl Day {
    /// The day `t` falls on (UTC).
    pub fn of(t: SystemTime) -> Day {
        Day(secs(t) / DAY_SECS)
    }

    /// Its first instant.
    pub fn start(self) -> SystemTime {
        UNIX_EPOCH + Duration::from_secs(self.0 * DAY_SECS)
    }

    /// Parses `YYYY-MM-DD`.
    pub fn parse(text: &str) -> Option<Day> {
        if text.len() != 10 {
            return None;
        }
        let t = humantime::parse_rfc3339(&format!("{text}T00:00:00Z")).ok()?;
        Some(Day::of(t))
    }
}

impl std::fmt::Display for Day {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let text = humantime::format_rfc3339_seconds(self.start()).to_string();
        f.write_str(&text[..10])
    }
}

fn secs(t: SystemTime) -> u64 {
    t.duration_since(UNIX_EPOCH).unwrap_or_default().as_secs()
}

/// The archive's bans from `from` on, one UTC day at a time, without those of addresses
/// [`never_listed`] in `never` (`[archiver] feed_allowlist`).
struct Days<'a> {
    db: &'a Db,
    never: &'a [IpNet],
    from: SystemTime,
    after: Option<(SystemTime, u64)>,
    page: VecDeque<Stored>,
    exhausted: bool,
}

impl<'a> Days<'a> {
    fn new(db: &'a Db, from: SystemTime, never: &'a [IpNet]) -> Days<'a> {
        Days {
            db,
            never,
            from,
            after: None,
            page: VecDeque::new(),
            exhausted: false,
        }
    }

    /// The next day that has bans to share, with all of them.
    async fn next(&mut self) -> Result<Option<(Day, Vec<Stored>)>, sqlx::Error> {
        let mut day = None;
        let mut bans = Vec::new();
        loop {
            if self.page.is_empty() {
                if self.exhausted {
                    break;
                }
                let page = query::bans_between(self.db, self.from, None, self.after, PAGE).await?;
                self.exhausted = page.len() < PAGE;
                if let Some(last) = page.last() {
                    self.after = Some((last.event.time, last.row_id));
                }
                self.page = page.into();
                continue;
            }
            let this = Day::of(self.page[0].event.time);
            if day.is_some_and(|d| d != this) {
                break;
            }
            let ban = self.page.pop_front().expect("the page is not empty");
            if never_listed(ban.event.ip, self.never) {
                continue;
            }
            day = Some(this);
            bans.push(ban);
        }
        Ok(day.map(|d| (d, bans)))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn at(text: &str) -> SystemTime {
        humantime::parse_rfc3339(text).unwrap()
    }

    #[test]
    fn days_print_and_parse_as_utc_dates() {
        let day = Day::of(at("2026-11-25T23:59:59.999Z"));
        assert_eq!(day.to_string(), "2026-11-25");
        assert_eq!(Day::parse("2026-11-25"), Some(day));
        assert_eq!(Day::of(at("2026-11-26T00:00:00Z")).0, day.0 + 1);
        assert_eq!(day.start(), at("2026-11-25T00:00:00Z"));
        assert_eq!(Day::parse("2026-11-25T00"), None);
    }
}

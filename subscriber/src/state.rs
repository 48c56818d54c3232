//! What the subscriber has applied, kept in `state_dir` so that a restart neither loses nor
//! re-applies: the last applied stream sequence per followed subject, and the holdings.
//!
//! An append-only journal (`subscriber.journal`, one JSON line per applied batch, fdatasync'ed
//! before the batch counts as done), rewritten as a single snapshot line at start-up and when it
//! grows large. A torn last line from a crash is ignored.

use crate::holdings::{Holdings, Until};
use serde::{Deserialize, Serialize};
use std::collections::BTreeMap;
use std::fs::{self, File, OpenOptions};
use std::io::{self, BufRead, Write};
use std::net::IpAddr;
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

const JOURNAL: &str = "subscriber.journal";
/// Ended holdings are forgotten this often.
const PRUNE_EVERY: Duration = Duration::from_secs(60);
/// The journal is rewritten as a snapshot once this much was appended.
const COMPACT_BYTES: u64 = 64 << 20;

#[derive(Debug, Default, Serialize, Deserialize)]
struct Record {
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    cursors: BTreeMap<String, u64>,
    /// (local jail, ip, origin, until in ms since the epoch or null for permanent)
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    bans: Vec<(String, IpAddr, String, Option<u64>)>,
    /// (local jail, ip, origin)
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    unbans: Vec<(String, IpAddr, String)>,
}

impl Record {
    fn is_empty(&self) -> bool {
        self.cursors.is_empty() && self.bans.is_empty() && self.unbans.is_empty()
    }
}

fn to_ms(until: Until) -> Option<u64> {
    until.map(|t| t.duration_since(UNIX_EPOCH).unwrap_or_default().as_millis() as u64)
}

fn from_ms(ms: Option<u64>) -> Until {
    // A value past what the clock can hold (a damaged journal) reads as permanent, not a panic.
    ms.and_then(|ms| UNIX_EPOCH.checked_add(Duration::from_millis(ms)))
}

/// The subscriber's durable memory.
pub struct State {
    path: PathBuf,
    file: File,
    lines: usize,
    bytes: u64,
    pruned: Instant,
    pending: Record,
    /// Whether a journal existed at start-up (false on a brand-new host).
    pub existed: bool,
    /// Last applied stream sequence per followed subject filter.
    pub cursors: BTreeMap<String, u64>,
    /// The remote bans held.
    pub holdings: Holdings,
}

impl State {
    /// Loads the journal in `dir` (creating `dir`), replays it and compacts it.
    pub fn open(dir: &Path) -> io::Result<State> {
        fs::create_dir_all(dir)?;
        let path = dir.join(JOURNAL);
        let mut cursors = BTreeMap::new();
        let mut holdings = Holdings::default();
        let existed = path.exists();
        let now = SystemTime::now();
        if existed {
            let reader = io::BufReader::new(File::open(&path)?);
            for (n, line) in reader.lines().enumerate() {
                let line = line?;
                let record: Record = match serde_json::from_str(&line) {
                    Ok(r) => r,
                    Err(e) => {
                        tracing::warn!(journal = %path.display(), line = n + 1, error = %e,
                            "ignoring an unreadable journal line (torn by a crash?)");
                        continue;
                    }
                };
                cursors.extend(record.cursors);
                for (jail, ip, origin, until) in record.bans {
                    holdings.ban(&jail, ip, &origin, from_ms(until));
                }
                for (jail, ip, origin) in record.unbans {
                    holdings.unban(&jail, ip, &origin, now);
                }
            }
            holdings.prune(now);
        }
        let file = write_snapshot(&path, &cursors, &holdings)?;
        Ok(State {
            path,
            file,
            lines: 1,
            bytes: 0,
            pruned: Instant::now(),
            pending: Record::default(),
            existed,
            cursors,
            holdings,
        })
    }

    /// The cursor for a subject filter, if anything was applied from it.
    pub fn cursor(&self, filter: &str) -> Option<u64> {
        self.cursors.get(filter).copied()
    }

    /// Notes that everything up to `seq` from `filter` is handled.
    pub fn advance(&mut self, filter: &str, seq: u64) {
        self.cursors.insert(filter.to_owned(), seq);
        self.pending.cursors.insert(filter.to_owned(), seq);
    }

    /// Records a remote ban as held.
    pub fn ban(&mut self, jail: &str, ip: IpAddr, origin: &str, until: Until) {
        self.holdings.ban(jail, ip, origin, until);
        self.pending
            .bans
            .push((jail.to_owned(), ip, origin.to_owned(), to_ms(until)));
    }

    /// Records a remote unban; true when the local ban should be lifted.
    pub fn unban(&mut self, jail: &str, ip: IpAddr, origin: &str) -> bool {
        self.pending
            .unbans
            .push((jail.to_owned(), ip, origin.to_owned()));
        self.holdings.unban(jail, ip, origin, SystemTime::now())
    }

    /// Makes the pending changes durable.
    pub fn commit(&mut self) -> io::Result<()> {
        if self.pending.is_empty() {
            return Ok(());
        }
        let mut line = serde_json::to_vec(&self.pending).map_err(io::Error::other)?;
        line.push(b'\n');
        self.file.write_all(&line)?;
        self.file.sync_data()?;
        self.pending = Record::default();
        self.lines += 1;
        self.bytes += line.len() as u64;
        if self.pruned.elapsed() > PRUNE_EVERY {
            self.holdings.prune(SystemTime::now());
            self.pruned = Instant::now();
        }
        if self.lines > 10_000 || self.bytes > COMPACT_BYTES {
            self.holdings.prune(SystemTime::now());
            self.file = write_snapshot(&self.path, &self.cursors, &self.holdings)?;
            self.lines = 1;
            self.bytes = 0;
        }
        Ok(())
    }
}

/// The snapshot line, serialised straight from the holdings (no copy of every name).
#[derive(Serialize)]
struct Snapshot<'a> {
    cursors: &'a BTreeMap<String, u64>,
    bans: Bans<'a>,
}

/// The holdings as the journal's `bans` list.
struct Bans<'a>(&'a Holdings);

impl Serialize for Bans<'_> {
    fn serialize<S: serde::Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        s.collect_seq(
            self.0
                .iter()
                .map(|(jail, ip, origin, until)| (jail, ip, origin, to_ms(until))),
        )
    }
}

/// Replaces the journal with one line holding everything, atomically; returns it for appending.
fn write_snapshot(
    path: &Path,
    cursors: &BTreeMap<String, u64>,
    holdings: &Holdings,
) -> io::Result<File> {
    let tmp = path.with_extension("tmp");
    {
        let mut f = io::BufWriter::new(File::create(&tmp)?);
        let snapshot = Snapshot {
            cursors,
            bans: Bans(holdings),
        };
        serde_json::to_writer(&mut f, &snapshot).map_err(io::Error::other)?;
        f.write_all(b"\n")?;
        f.into_inner().map_err(|e| e.into_error())?.sync_all()?;
    }
    fs::rename(&tmp, path)?;
    if let Some(dir) = path.parent() {
        File::open(dir)?.sync_all()?;
    }
    OpenOptions::new().append(true).open(path)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn survives_a_restart_and_a_torn_line() {
        let dir = tempfile::tempdir().unwrap();
        let ip: IpAddr = "192.0.2.1".parse().unwrap();
        let later = Some(SystemTime::now() + Duration::from_secs(600));
        {
            let mut s = State::open(dir.path()).unwrap();
            assert!(!s.existed);
            s.ban("shared", ip, "alice", later);
            s.ban("shared", ip, "charlie", later);
            s.advance("f2b.*.*.*", 7);
            s.commit().unwrap();
            assert!(!s.unban("shared", ip, "alice"));
            s.advance("f2b.*.*.*", 8);
            s.commit().unwrap();
        }
        let mut f = OpenOptions::new()
            .append(true)
            .open(dir.path().join(JOURNAL))
            .unwrap();
        f.write_all(b"{\"cursors\":{\"f2b.*.*.*\":9").unwrap();
        drop(f);
        let mut s = State::open(dir.path()).unwrap();
        assert!(s.existed);
        assert_eq!(s.cursor("f2b.*.*.*"), Some(8));
        assert_eq!(s.holdings.len(), 1);
        assert!(
            s.unban("shared", ip, "charlie"),
            "charlie was the last holder"
        );
    }
}

//! What the subscriber has applied, kept in `state_dir` so that a restart neither loses nor
//! re-applies: the stream sequence up to which everything is handled (the cursor), the
//! holdings, and the replay guard (the newest event applied per origin, jail and address).
//!
//! An append-only journal (`subscriber.journal`, one JSON line per applied batch, fdatasync'ed
//! before the batch counts as done), rewritten as a single snapshot line at start-up and when it
//! grows large. A torn last line from a crash is ignored.

pub mod guard;
pub mod holdings;
mod names;

use guard::Guard;
use holdings::{Holdings, Unbanned, Until};
use ipnet::IpNet;
use serde::{Deserialize, Serialize};
use shared_f2b::keyring::{self, Keyring};
use shared_f2b::signing::OperatorKeys;
use shared_f2b::standing::{self, Standing};
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
    bans: Vec<(String, Target, String, Option<u64>)>,
    /// (local jail, ip, origin)
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    unbans: Vec<(String, Target, String)>,
    /// The replay guard: (origin, remote jail, ip, newest event id applied)
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    seen: Vec<(String, String, IpAddr, uuid::Uuid)>,
}

impl Record {
    fn is_empty(&self) -> bool {
        self.cursors.is_empty()
            && self.bans.is_empty()
            && self.unbans.is_empty()
            && self.seen.is_empty()
    }
}

/// A banned address or prefix in the journal: `192.0.2.1` or `2001:db8:1:2::/64` (journals
/// written before prefixes hold addresses only, and read the same).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
struct Target(IpNet);

impl Serialize for Target {
    fn serialize<S: serde::Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        s.collect_str(&crate::apply::text(&self.0))
    }
}

impl<'de> Deserialize<'de> for Target {
    fn deserialize<D: serde::Deserializer<'de>>(d: D) -> Result<Target, D::Error> {
        let text = std::borrow::Cow::<'de, str>::deserialize(d)?;
        text.parse::<IpNet>()
            .or_else(|_| text.parse::<IpAddr>().map(IpNet::from))
            .map(Target)
            .map_err(|_| serde::de::Error::custom(format!("not an address or prefix: {text:?}")))
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
    /// How long replay-guard entries are kept (the subscriber's `max_bantime`).
    keep: Duration,
    /// Whether a journal existed at start-up (false on a brand-new host).
    pub existed: bool,
    /// Per stream, the sequence up to which every event is handled.
    cursors: BTreeMap<String, u64>,
    /// The remote bans held.
    pub holdings: Holdings,
    /// The newest event applied per origin, jail and address.
    pub guard: Guard,
    /// The operators' orders in force, kept in `controls.json` beside the journal (the
    /// publisher reads it too).
    pub standing: Standing,
    standing_changed: bool,
    /// The host keys operators vouched for, kept in `keyring.json` beside the journal.
    pub keyring: Keyring,
    keyring_changed: bool,
    /// Each federated site's host keys (its operators vouched for), in `keyring-<site>.json`.
    pub site_keyrings: BTreeMap<String, Keyring>,
    site_keyrings_changed: std::collections::BTreeSet<String>,
}

impl State {
    /// Loads the journal in `dir` (creating `dir`), replays it and compacts it; replay-guard
    /// entries are kept for `keep`.
    pub fn open(dir: &Path, keep: Duration) -> io::Result<State> {
        fs::create_dir_all(dir)?;
        let path = dir.join(JOURNAL);
        let mut cursors = BTreeMap::new();
        let mut holdings = Holdings::default();
        let mut guard = Guard::default();
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
                for (jail, net, origin, until) in record.bans {
                    holdings.ban(&jail, net.0, &origin, from_ms(until));
                }
                for (jail, net, origin) in record.unbans {
                    holdings.unban(&jail, net.0, &origin, now);
                }
                for (origin, jail, ip, id) in record.seen {
                    guard.record(&origin, &jail, ip, id);
                }
            }
            holdings.prune(now);
            guard.prune(now, keep);
        }
        let file = write_snapshot(&path, &cursors, &holdings, &guard)?;
        let standing = Standing::load_all(&standing::path(dir))?;
        Ok(State {
            path,
            file,
            lines: 1,
            bytes: 0,
            pruned: Instant::now(),
            pending: Record::default(),
            keep,
            existed,
            cursors,
            holdings,
            guard,
            standing,
            standing_changed: false,
            keyring: Keyring::default(),
            keyring_changed: false,
            site_keyrings: BTreeMap::new(),
            site_keyrings_changed: Default::default(),
        })
    }

    /// The sequence up to which every event of `stream` is handled, if any was. Journals of
    /// earlier versions kept one cursor per followed filter (`<stream>:<filter>`): the lowest.
    pub fn cursor(&self, stream: &str) -> Option<u64> {
        self.cursors.get(stream).copied().or_else(|| {
            let old = format!("{stream}:");
            self.cursors
                .iter()
                .filter(|(k, _)| k.starts_with(&old))
                .map(|(_, seq)| *seq)
                .min()
        })
    }

    /// Notes that every event of `stream` up to `seq` is handled.
    pub fn advance(&mut self, stream: &str, seq: u64) {
        self.cursors.insert(stream.to_owned(), seq);
        self.pending.cursors.insert(stream.to_owned(), seq);
    }

    /// Records that an event was applied (for the replay guard).
    pub fn note(&mut self, origin: &str, jail: &str, ip: IpAddr, id: uuid::Uuid) {
        self.guard.record(origin, jail, ip, id);
        self.pending
            .seen
            .push((origin.to_owned(), jail.to_owned(), ip, id));
    }

    /// Records a remote ban as held.
    pub fn ban(&mut self, jail: &str, net: impl Into<IpNet>, origin: &str, until: Until) {
        let net = net.into();
        self.holdings.ban(jail, net, origin, until);
        self.pending.bans.push((
            jail.to_owned(),
            Target(net),
            origin.to_owned(),
            to_ms(until),
        ));
    }

    /// Records a remote unban; says whether the local ban should be lifted.
    pub fn unban(&mut self, jail: &str, net: impl Into<IpNet>, origin: &str) -> Unbanned {
        let net = net.into();
        self.pending
            .unbans
            .push((jail.to_owned(), Target(net), origin.to_owned()));
        self.holdings.unban(jail, net, origin, SystemTime::now())
    }

    /// Lifts every holding that shares an address with `net` (an operator's pardon or allow);
    /// returns the addresses and prefixes that went.
    pub fn lift(&mut self, net: IpNet) -> Vec<IpNet> {
        let gone = self.holdings.lift(net);
        let mut nets: Vec<IpNet> = gone.iter().map(|(_, n, _)| *n).collect();
        nets.sort();
        nets.dedup();
        self.pending.unbans.extend(
            gone.into_iter()
                .map(|(jail, n, origin)| (jail, Target(n), origin)),
        );
        nets
    }

    /// Reads `keyring.json`, taking the records `operators` signed.
    pub fn load_keyring(&mut self, operators: &OperatorKeys) -> io::Result<()> {
        let dir = self.path.parent().unwrap_or(Path::new("."));
        self.keyring = Keyring::load(&keyring::path(dir), operators)?;
        Ok(())
    }

    /// Reads `keyring-<site>.json`, taking the records the site's `operators` signed.
    pub fn load_site_keyring(&mut self, site: &str, operators: &OperatorKeys) -> io::Result<()> {
        let dir = self.path.parent().unwrap_or(Path::new("."));
        let ring = Keyring::load(&keyring::site_path(dir, site), operators)?;
        self.site_keyrings.insert(site.to_owned(), ring);
        Ok(())
    }

    /// The host keys of `site` (empty for a site never heard of).
    pub fn site_keyring(&mut self, site: &str) -> &mut Keyring {
        self.site_keyrings.entry(site.to_owned()).or_default()
    }

    /// `site`'s keyring changed: its file is rewritten at the next commit.
    pub fn site_keyring_changed(&mut self, site: &str) {
        self.site_keyrings_changed.insert(site.to_owned());
    }

    /// The keyring changed: `keyring.json` is rewritten at the next commit.
    pub fn keyring_changed(&mut self) {
        self.keyring_changed = true;
    }

    /// The standing orders changed: `controls.json` is rewritten at the next commit.
    pub fn standing_changed(&mut self) {
        self.standing_changed = true;
    }

    /// Drops the orders that ended by themselves; `controls.json` is rewritten if any did.
    pub fn prune_standing(&mut self, now: SystemTime) -> io::Result<()> {
        if self.standing.prune(now) {
            self.standing_changed = true;
            self.commit()?;
        }
        Ok(())
    }

    /// Writes the journal line for what changed, and `controls.json` when the orders did.
    pub fn commit(&mut self) -> io::Result<()> {
        if self.standing_changed {
            let dir = self.path.parent().unwrap_or(Path::new("."));
            self.standing.save(&standing::path(dir))?;
            self.standing_changed = false;
        }
        if self.keyring_changed {
            let dir = self.path.parent().unwrap_or(Path::new("."));
            self.keyring.save(&keyring::path(dir))?;
            self.keyring_changed = false;
        }
        for site in std::mem::take(&mut self.site_keyrings_changed) {
            let dir = self.path.parent().unwrap_or(Path::new("."));
            if let Some(ring) = self.site_keyrings.get(&site) {
                ring.save(&keyring::site_path(dir, &site))?;
            }
        }
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
            self.guard.prune(SystemTime::now(), self.keep);
            self.pruned = Instant::now();
        }
        if self.lines > 10_000 || self.bytes > COMPACT_BYTES {
            self.holdings.prune(SystemTime::now());
            self.guard.prune(SystemTime::now(), self.keep);
            self.file = write_snapshot(&self.path, &self.cursors, &self.holdings, &self.guard)?;
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
    seen: Seen<'a>,
}

/// The replay guard as the journal's `seen` list.
struct Seen<'a>(&'a Guard);

impl Serialize for Seen<'_> {
    fn serialize<S: serde::Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        s.collect_seq(self.0.iter())
    }
}

/// The holdings as the journal's `bans` list.
struct Bans<'a>(&'a Holdings);

impl Serialize for Bans<'_> {
    fn serialize<S: serde::Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        s.collect_seq(
            self.0
                .iter()
                .map(|(jail, net, origin, until)| (jail, Target(net), origin, to_ms(until))),
        )
    }
}

/// Replaces the journal with one line holding everything, atomically; returns it for appending.
fn write_snapshot(
    path: &Path,
    cursors: &BTreeMap<String, u64>,
    holdings: &Holdings,
    guard: &Guard,
) -> io::Result<File> {
    let tmp = path.with_extension("tmp");
    {
        let mut f = io::BufWriter::new(File::create(&tmp)?);
        let snapshot = Snapshot {
            cursors,
            bans: Bans(holdings),
            seen: Seen(guard),
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

    const KEEP: Duration = Duration::from_secs(3600);

    #[test]
    fn survives_a_restart_and_a_torn_line() {
        let dir = tempfile::tempdir().unwrap();
        let ip: IpAddr = "192.0.2.1".parse().unwrap();
        let id = uuid::Uuid::now_v7();
        let later = Some(SystemTime::now() + Duration::from_secs(600));
        {
            let mut s = State::open(dir.path(), KEEP).unwrap();
            assert!(!s.existed);
            s.ban("shared", ip, "alice", later);
            s.ban("shared", ip, "charlie", later);
            s.note("alice", "sshd", ip, id);
            s.advance("F2B", 7);
            s.commit().unwrap();
            assert_eq!(s.unban("shared", ip, "alice"), Unbanned::HeldByOthers);
            s.advance("F2B", 8);
            s.commit().unwrap();
        }
        let mut f = OpenOptions::new()
            .append(true)
            .open(dir.path().join(JOURNAL))
            .unwrap();
        f.write_all(b"{\"cursors\":{\"F2B\":9").unwrap();
        drop(f);
        let mut s = State::open(dir.path(), KEEP).unwrap();
        assert!(s.existed);
        assert_eq!(s.cursor("F2B"), Some(8));
        assert_eq!(s.holdings.len(), 1);
        assert!(
            !s.guard.is_new("alice", "sshd", ip, id),
            "the guard survives"
        );
        assert_eq!(
            s.unban("shared", ip, "charlie"),
            Unbanned::Lift,
            "charlie was the last holder"
        );
    }

    #[test]
    fn an_older_journal_resumes_from_its_lowest_filter_cursor() {
        let dir = tempfile::tempdir().unwrap();
        std::fs::write(
            dir.path().join(JOURNAL),
            "{\"cursors\":{\"F2B:f2b.*.sshd.*\":12,\"F2B:f2b.*.nginx.*\":9,\"OTHER:>\":3}}\n",
        )
        .unwrap();
        let s = State::open(dir.path(), KEEP).unwrap();
        assert_eq!(s.cursor("F2B"), Some(9));
        assert_eq!(s.cursor("NEW"), None);
    }
}

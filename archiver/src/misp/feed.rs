//! The MISP static feed directory: one event file per day, `manifest.json` and `hashes.csv`,
//! updated in place with atomic writes.

use super::event::{event_hashes, event_uuid, manifest_entry, newest_received, render_event};
use super::event::{number, set_timestamp};
use super::{Day, Days, MispError, io};
use crate::db::Db;
use ipnet::IpNet;
use serde_json::{Map, Value};
use shared_f2b::config::MispConfig;
use std::collections::{BTreeMap, BTreeSet};
use std::io::Write;
use std::path::{Path, PathBuf};
use std::time::{SystemTime, UNIX_EPOCH};

const MANIFEST: &str = "manifest.json";
const HASHES: &str = "hashes.csv";

use crate::text::hex;

/// A `hashes.csv` hash read back.
fn unhex(text: &str) -> Option<[u8; 16]> {
    if text.len() != 32 || !text.is_ascii() {
        return None;
    }
    let mut out = [0u8; 16];
    for (i, byte) in out.iter_mut().enumerate() {
        *byte = u8::from_str_radix(&text[2 * i..2 * i + 2], 16).ok()?;
    }
    Some(out)
}

/// Writes `bytes` to `path` through `<path>.tmp` (data synced, then renamed), so a reader (a
/// web server, MISP fetching the feed) never sees half a file.
fn write_atomic(path: &Path, bytes: &[u8]) -> Result<(), MispError> {
    let mut tmp = path.as_os_str().to_owned();
    tmp.push(".tmp");
    let tmp = PathBuf::from(tmp);
    let mut file = std::fs::File::create(&tmp).map_err(io(&tmp))?;
    file.write_all(bytes).map_err(io(&tmp))?;
    file.sync_data().map_err(io(&tmp))?;
    drop(file);
    std::fs::rename(&tmp, path).map_err(io(path))
}

/// Writes `bytes` unless the file already holds exactly them; whether it wrote.
fn write_if_changed(path: &Path, bytes: &[u8]) -> Result<bool, MispError> {
    if read_optional(path)?.as_deref() == Some(bytes) {
        return Ok(false);
    }
    write_atomic(path, bytes)?;
    Ok(true)
}

fn read_optional(path: &Path) -> Result<Option<Vec<u8>>, MispError> {
    match std::fs::read(path) {
        Ok(bytes) => Ok(Some(bytes)),
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(None),
        Err(e) => Err(io(path)(e)),
    }
}

/// The feed directory's index: each event file's manifest entry and hashes, by event uuid.
struct Index {
    dir: PathBuf,
    entries: BTreeMap<String, Value>,
    hashes: BTreeMap<String, Vec<[u8; 16]>>,
}

impl Index {
    /// Reads `manifest.json` and `hashes.csv` and makes them agree with the event files there:
    /// entries without a file go, files without an entry are read (both index files are
    /// rebuilt from the events when either is missing or unreadable).
    fn load(dir: &Path) -> Result<Index, MispError> {
        let mut files = BTreeSet::new();
        for entry in std::fs::read_dir(dir).map_err(io(dir))? {
            let entry = entry.map_err(io(dir))?;
            let name = entry.file_name().to_string_lossy().into_owned();
            if let Some(stem) = name.strip_suffix(".json")
                && name != MANIFEST
                && entry.file_type().map_err(io(dir))?.is_file()
            {
                files.insert(stem.to_owned());
            }
        }
        let mut index = Index {
            dir: dir.to_owned(),
            entries: BTreeMap::new(),
            hashes: BTreeMap::new(),
        };
        let manifest = read_optional(&dir.join(MANIFEST))?
            .and_then(|b| serde_json::from_slice::<Map<String, Value>>(&b).ok());
        let hashes =
            read_optional(&dir.join(HASHES))?.map(|b| String::from_utf8_lossy(&b).into_owned());
        if let (Some(manifest), Some(hashes)) = (manifest, hashes) {
            for (uuid, entry) in manifest {
                if files.contains(&uuid) {
                    index.hashes.insert(uuid.clone(), Vec::new());
                    index.entries.insert(uuid, entry);
                }
            }
            for line in hashes.lines() {
                if let Some((hash, uuid)) = line.split_once(',')
                    && let (Some(hash), Some(list)) = (unhex(hash), index.hashes.get_mut(uuid))
                {
                    list.push(hash);
                }
            }
            for list in index.hashes.values_mut() {
                list.sort_unstable();
                list.dedup();
            }
        }
        for uuid in files {
            if !index.entries.contains_key(&uuid) {
                let path = index.event_path(&uuid);
                let bytes = std::fs::read(&path).map_err(io(&path))?;
                let bad = |detail: String| MispError::BadFile {
                    path: path.clone(),
                    detail,
                };
                let event: Value =
                    serde_json::from_slice(&bytes).map_err(|e| bad(e.to_string()))?;
                let (inner, entry) =
                    manifest_entry(&event).ok_or_else(|| bad("no MISP event".into()))?;
                if inner != uuid {
                    return Err(bad(format!("its event uuid is {inner}")));
                }
                index.hashes.insert(uuid.clone(), event_hashes(&event));
                index.entries.insert(uuid, entry);
            }
        }
        Ok(index)
    }

    fn event_path(&self, uuid: &str) -> PathBuf {
        self.dir.join(format!("{uuid}.json"))
    }

    fn timestamp(&self, uuid: &str) -> Option<u64> {
        self.entries.get(uuid).and_then(|e| number(&e["timestamp"]))
    }

    fn set(&mut self, event: &Value) {
        if let Some((uuid, entry)) = manifest_entry(event) {
            self.hashes.insert(uuid.clone(), event_hashes(event));
            self.entries.insert(uuid, entry);
        }
    }

    fn remove(&mut self, uuid: &str) -> Result<(), MispError> {
        let path = self.event_path(uuid);
        match std::fs::remove_file(&path) {
            Ok(()) => {}
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => {}
            Err(e) => return Err(io(&path)(e)),
        }
        self.entries.remove(uuid);
        self.hashes.remove(uuid);
        Ok(())
    }

    /// Writes `manifest.json` and `hashes.csv` (each only when it changed).
    fn save(&self) -> Result<(), MispError> {
        let manifest = serde_json::to_vec(&self.entries).expect("JSON values serialise");
        write_if_changed(&self.dir.join(MANIFEST), &manifest)?;
        let mut csv = String::new();
        for (uuid, hashes) in &self.hashes {
            for hash in hashes {
                csv.push_str(&hex(hash));
                csv.push(',');
                csv.push_str(uuid);
                csv.push('\n');
            }
        }
        write_if_changed(&self.dir.join(HASHES), csv.as_bytes())?;
        // The renames (and removals) of this run survive a crash too.
        std::fs::File::open(&self.dir)
            .and_then(|d| d.sync_all())
            .map_err(io(&self.dir))
    }
}

/// What a feed run did.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct FeedSummary {
    /// Days with bans in the range written this run.
    pub days: u64,
    /// Of those, the event files that changed.
    pub written: u64,
    /// Event files removed: days in the range none of whose bans is left.
    pub removed: u64,
    /// Bans in the days written.
    pub bans: u64,
    /// Event files in the feed now.
    pub events: u64,
}

/// Writes (or updates in place) the MISP feed in `out`: the event files of every day with bans
/// from `since`'s day on (the whole archive without it), then `manifest.json` and `hashes.csv`
/// for every event file there. A day whose file already says the same is not rewritten; when a
/// day's content changed without a newer ban (a pardon), its timestamp still moves forward so
/// MISP instances fetch it again. Days in the range left without bans lose their file. Bans of
/// addresses `never` (`[archiver] feed_allowlist`) covers are left out.
pub async fn write_feed(
    db: &Db,
    misp: &MispConfig,
    never: &[IpNet],
    out: &Path,
    since: Option<SystemTime>,
) -> Result<FeedSummary, MispError> {
    std::fs::create_dir_all(out).map_err(io(out))?;
    let mut index = Index::load(out)?;
    let first = since.map(Day::of);
    let mut days = Days::new(db, first.map_or(UNIX_EPOCH, Day::start), never);
    let mut summary = FeedSummary::default();
    let mut written = BTreeSet::new();
    while let Some((day, bans)) = days.next().await? {
        let uuid = event_uuid(misp, day).to_string();
        let path = index.event_path(&uuid);
        let old = read_optional(&path)?;
        let old_ts = old.as_ref().and_then(|_| index.timestamp(&uuid));
        let newest = newest_received(&bans);
        let mut event = render_event(misp, day, &bans, newest.max(old_ts.unwrap_or(0)));
        let mut bytes = serde_json::to_vec(&event).expect("JSON values serialise");
        if old.as_deref() != Some(&bytes[..]) {
            if let Some(old_ts) = old_ts
                && newest <= old_ts
            {
                set_timestamp(&mut event, old_ts + 1);
                bytes = serde_json::to_vec(&event).expect("JSON values serialise");
            }
            write_atomic(&path, &bytes)?;
            summary.written += 1;
        }
        drop(old);
        index.set(&event);
        summary.days += 1;
        summary.bans += bans.len() as u64;
        written.insert(uuid);
        tracing::debug!(%day, bans = bans.len(), "MISP feed day");
    }
    let emptied: Vec<String> = index
        .entries
        .iter()
        .filter(|(uuid, entry)| {
            let Some(day) = entry["date"].as_str().and_then(Day::parse) else {
                return false;
            };
            first.is_none_or(|f| day >= f)
                && !written.contains(*uuid)
                && event_uuid(misp, day).to_string() == **uuid
        })
        .map(|(uuid, _)| uuid.clone())
        .collect();
    for uuid in &emptied {
        index.remove(uuid)?;
        summary.removed += 1;
    }
    index.save()?;
    summary.events = index.entries.len() as u64;
    Ok(summary)
}

//! The archive as MISP sees it: a MISP static feed in a directory (`export --format misp-feed`)
//! and the same events sent to a MISP instance's REST API (`misp-push`).
//!
//! One MISP event per UTC day of ban events (its uuid derived from the organisation's uuid and
//! the day, so every run names a day alike), holding one `fail2ban` object per ban, in archive
//! row order. Bans an operator pardoned or allowed since are left out: mistakes, not offences.
//! [`render_event`], [`manifest_entry`] and [`event_hashes`] are pure; [`write_feed`] and
//! [`push`] do the I/O, one day at a time.

use crate::db::Db;
use crate::query::{self, Stored};
use md5::{Digest, Md5};
use serde_json::{Map, Value, json};
use shared_f2b::config::MispConfig;
use std::collections::{BTreeMap, BTreeSet, VecDeque};
use std::io::{Read, Write};
use std::path::{Path, PathBuf};
use std::time::{Duration, SystemTime, UNIX_EPOCH};
use uuid::Uuid;

/// PyMISP's shipped `fail2ban` object template (misp-objects `objects/fail2ban`).
pub const TEMPLATE_UUID: &str = "32f7ded6-e774-4401-81b0-79634e82f589";
/// The version of that template the objects follow.
pub const TEMPLATE_VERSION: &str = "6";
/// MISP's threat level "low": single bans are mass scanning and brute force, not targeted.
const THREAT_LEVEL_LOW: u8 = 3;
/// MISP's analysis "completed": a day's event only grows by bans, it is never reworked.
const ANALYSIS_COMPLETED: u8 = 2;
/// Rows per archive query.
const PAGE: usize = 5000;
const DAY_SECS: u64 = 86_400;
const MANIFEST: &str = "manifest.json";
const HASHES: &str = "hashes.csv";

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

/// The day's event uuid: UUIDv5 of `shared-f2b:<YYYY-MM-DD>` in the organisation's namespace,
/// so every run (and every archiver of the same organisation) names a day alike.
pub fn event_uuid(misp: &MispConfig, day: Day) -> Uuid {
    Uuid::new_v5(&misp.org_uuid, format!("shared-f2b:{day}").as_bytes())
}

/// The newest arrival among the bans, in seconds: the event's timestamp unless an earlier
/// version of the event says otherwise.
pub fn newest_received(bans: &[Stored]) -> u64 {
    bans.iter().map(|b| secs(b.received)).max().unwrap_or(0)
}

/// The colour MISP's `tlp` taxonomy gives the tag.
fn tlp_colour(tlp: &str) -> &'static str {
    match tlp {
        "tlp:red" => "#CC0033",
        "tlp:amber" | "tlp:amber+strict" => "#FFC000",
        "tlp:green" => "#339900",
        _ => "#ffffff",
    }
}

/// RFC 3339 in UTC with `Z`; milliseconds only when there are some.
fn rfc3339(t: SystemTime) -> String {
    if t.duration_since(UNIX_EPOCH)
        .unwrap_or_default()
        .subsec_millis()
        == 0
    {
        humantime::format_rfc3339_seconds(t).to_string()
    } else {
        humantime::format_rfc3339_millis(t).to_string()
    }
}

/// One object attribute as MISP exports it; its uuid is UUIDv5 of the relation in the
/// object's namespace.
struct Attr {
    relation: &'static str,
    kind: &'static str,
    category: &'static str,
    to_ids: bool,
    disable_correlation: bool,
}

/// The template's relations this feed fills, with their types and MISP's default categories
/// (describeTypes.json: ip-src → Network activity; text, counter, datetime → Other).
const BANNED_IP: Attr = Attr {
    relation: "banned-ip",
    kind: "ip-src",
    category: "Network activity",
    to_ids: true,
    disable_correlation: false,
};
const ATTACK_TYPE: Attr = Attr {
    relation: "attack-type",
    kind: "text",
    category: "Other",
    to_ids: false,
    disable_correlation: true,
};
const FAILURES: Attr = Attr {
    relation: "failures",
    kind: "counter",
    category: "Other",
    to_ids: false,
    disable_correlation: true,
};
const SENSOR: Attr = Attr {
    relation: "sensor",
    kind: "text",
    category: "Other",
    to_ids: false,
    disable_correlation: true,
};
const PROCESSING_TIMESTAMP: Attr = Attr {
    relation: "processing-timestamp",
    kind: "datetime",
    category: "Other",
    to_ids: false,
    disable_correlation: true,
};

impl Attr {
    fn render(&self, object: &Uuid, value: String, timestamp: &str) -> Value {
        json!({
            "uuid": Uuid::new_v5(object, self.relation.as_bytes()).to_string(),
            "object_relation": self.relation,
            "type": self.kind,
            "category": self.category,
            "value": value,
            "to_ids": self.to_ids,
            "disable_correlation": self.disable_correlation,
            "distribution": "5",
            "timestamp": timestamp,
            "comment": "",
            "deleted": false,
        })
    }
}

/// One ban as a `fail2ban` object; its uuid is the archived event's id.
fn render_object(ban: &Stored) -> Value {
    let e = &ban.event;
    let timestamp = secs(ban.received).to_string();
    let comment = if e.bantime < 0 {
        "permanent ban".to_owned()
    } else {
        format!("banned for {} s", e.bantime)
    };
    json!({
        "name": "fail2ban",
        "meta-category": "network",
        "description": "Fail2ban event",
        "template_uuid": TEMPLATE_UUID,
        "template_version": TEMPLATE_VERSION,
        "uuid": e.id.to_string(),
        "timestamp": timestamp,
        "distribution": "5",
        "comment": comment,
        "deleted": false,
        "Attribute": [
            BANNED_IP.render(&e.id, e.ip.to_string(), &timestamp),
            ATTACK_TYPE.render(&e.id, e.jail.clone(), &timestamp),
            FAILURES.render(&e.id, e.failures.to_string(), &timestamp),
            SENSOR.render(&e.id, e.origin.clone(), &timestamp),
            PROCESSING_TIMESTAMP.render(&e.id, rfc3339(e.time), &timestamp),
        ],
    })
}

/// The day's event file (`{"Event": …}`, the fields of PyMISP's `MISPEvent.to_feed()` plus the
/// configured distribution), its objects in archive row order, stamped `timestamp` (seconds).
pub fn render_event(misp: &MispConfig, day: Day, bans: &[Stored], timestamp: u64) -> Value {
    let mut ordered: Vec<&Stored> = bans.iter().collect();
    ordered.sort_by_key(|b| b.row_id);
    let objects: Vec<Value> = ordered.into_iter().map(render_object).collect();
    let timestamp = timestamp.to_string();
    json!({"Event": {
        "uuid": event_uuid(misp, day).to_string(),
        "info": format!("{} {day}", misp.info),
        "date": day.to_string(),
        "threat_level_id": THREAT_LEVEL_LOW.to_string(),
        "analysis": ANALYSIS_COMPLETED.to_string(),
        "distribution": misp.distribution.to_string(),
        "published": true,
        "timestamp": timestamp,
        "publish_timestamp": timestamp,
        "extends_uuid": "",
        "protected": false,
        "Orgc": {"name": misp.org_name, "uuid": misp.org_uuid.to_string()},
        "Tag": [{
            "name": misp.tlp,
            "colour": tlp_colour(&misp.tlp),
            "local": false,
            "relationship_type": "",
        }],
        "Object": objects,
    }})
}

/// Sets an event's `timestamp` and `publish_timestamp`.
fn set_timestamp(event: &mut Value, timestamp: u64) {
    for key in ["timestamp", "publish_timestamp"] {
        event["Event"][key] = Value::String(timestamp.to_string());
    }
}

/// A number MISP may write as a string or a number.
fn number(v: &Value) -> Option<u64> {
    match v {
        Value::Number(n) => n.as_u64(),
        Value::String(s) => s.parse().ok(),
        _ => None,
    }
}

/// The event's uuid and its `manifest.json` entry, as PyMISP's `MISPEvent.manifest` makes it
/// (numbers as numbers there, unlike in the event).
pub fn manifest_entry(event: &Value) -> Option<(String, Value)> {
    let e = event.get("Event")?;
    let uuid = e.get("uuid")?.as_str()?.to_owned();
    let orgc = e.get("Orgc")?;
    let entry = json!({
        "Orgc": {"name": orgc.get("name")?, "uuid": orgc.get("uuid")?},
        "Tag": e.get("Tag").cloned().unwrap_or_else(|| json!([])),
        "info": e.get("info")?,
        "date": e.get("date")?,
        "analysis": number(e.get("analysis")?)?,
        "threat_level_id": number(e.get("threat_level_id")?)?,
        "timestamp": number(e.get("timestamp")?)?,
    });
    Some((uuid, entry))
}

/// A `datetime` value as PyMISP reads it and `str()` prints it (`2026-11-25 07:00:16+00:00`,
/// microseconds when there are some): what `feed_meta_generator` hashes.
fn python_datetime(value: &str) -> Option<String> {
    let t = humantime::parse_rfc3339(value).ok()?;
    let base = humantime::format_rfc3339_seconds(t).to_string();
    let micros = t.duration_since(UNIX_EPOCH).ok()?.subsec_micros();
    let fraction = if micros == 0 {
        String::new()
    } else {
        format!(".{micros:06}")
    };
    Some(format!("{} {}{fraction}+00:00", &base[..10], &base[11..19]))
}

/// The MD5 of every attribute value of the event, sorted and without repeats: the event's
/// lines of `hashes.csv` as PyMISP's `feed_meta_generator` computes them.
pub fn event_hashes(event: &Value) -> Vec<[u8; 16]> {
    let mut out = Vec::new();
    let e = &event["Event"];
    let loose = e["Attribute"].as_array().into_iter().flatten();
    let in_objects = e["Object"]
        .as_array()
        .into_iter()
        .flatten()
        .flat_map(|o| o["Attribute"].as_array().into_iter().flatten());
    for attr in loose.chain(in_objects) {
        let kind = attr["type"].as_str().unwrap_or_default();
        let value = match &attr["value"] {
            Value::String(s) => s.clone(),
            other => other.to_string(),
        };
        let values: Vec<String> = if kind.contains('|') || kind == "malware-sample" {
            value.split('|').map(str::to_owned).collect()
        } else if kind == "datetime" {
            vec![python_datetime(&value).unwrap_or(value)]
        } else {
            vec![value]
        };
        out.extend(
            values
                .iter()
                .map(|v| <[u8; 16]>::from(Md5::digest(v.as_bytes()))),
        );
    }
    out.sort_unstable();
    out.dedup();
    out
}

fn hex(hash: &[u8; 16]) -> String {
    hash.iter().map(|b| format!("{b:02x}")).collect()
}

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

/// The archive's bans from `from` on, one UTC day at a time.
struct Days<'a> {
    db: &'a Db,
    from: SystemTime,
    after: Option<(SystemTime, u64)>,
    page: VecDeque<Stored>,
    exhausted: bool,
}

impl<'a> Days<'a> {
    fn new(db: &'a Db, from: SystemTime) -> Days<'a> {
        Days {
            db,
            from,
            after: None,
            page: VecDeque::new(),
            exhausted: false,
        }
    }

    /// The next day that has bans, with all of them.
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
            day = Some(this);
            bans.extend(self.page.pop_front());
        }
        Ok(day.map(|d| (d, bans)))
    }
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
/// MISP instances fetch it again. Days in the range left without bans lose their file.
pub async fn write_feed(
    db: &Db,
    misp: &MispConfig,
    out: &Path,
    since: Option<SystemTime>,
) -> Result<FeedSummary, MispError> {
    std::fs::create_dir_all(out).map_err(io(out))?;
    let mut index = Index::load(out)?;
    let first = since.map(Day::of);
    let mut days = Days::new(db, first.map_or(UNIX_EPOCH, Day::start));
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

/// A MISP instance's REST API and the key to it (never shown in `Debug`).
pub struct Target {
    url: String,
    key: String,
}

impl std::fmt::Debug for Target {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Target")
            .field("url", &self.url)
            .field("key", &"<hidden>")
            .finish()
    }
}

/// Whether `url` may carry an API key: https://, or http:// to this machine only.
fn check_url(url: &str) -> Result<String, MispError> {
    let bad = || MispError::Url(url.to_owned());
    let (tls, rest) = if let Some(rest) = url.strip_prefix("https://") {
        (true, rest)
    } else if let Some(rest) = url.strip_prefix("http://") {
        (false, rest)
    } else {
        return Err(bad());
    };
    let authority = rest.split(['/', '?', '#']).next().unwrap_or_default();
    if authority.is_empty()
        || authority.contains('@')
        || url.chars().any(|c| c.is_whitespace() || c.is_control())
    {
        return Err(bad());
    }
    let host = if let Some(v6) = authority.strip_prefix('[') {
        v6.split(']').next().unwrap_or_default()
    } else {
        authority.split(':').next().unwrap_or_default()
    };
    if !tls && !matches!(host, "127.0.0.1" | "localhost" | "::1") {
        return Err(bad());
    }
    Ok(url.trim_end_matches('/').to_owned())
}

impl Target {
    /// The instance at `url` (https://, or http:// to 127.0.0.1 or localhost) with the API key
    /// held in `key_file` (surrounding whitespace trimmed).
    pub fn new(url: &str, key_file: &Path) -> Result<Target, MispError> {
        let url = check_url(url)?;
        let key = std::fs::read_to_string(key_file).map_err(|source| MispError::KeyFile {
            path: key_file.to_owned(),
            source,
        })?;
        let key = key.trim();
        if key.is_empty() {
            return Err(MispError::EmptyKey(key_file.to_owned()));
        }
        if key.chars().any(|c| c.is_whitespace() || c.is_control()) {
            return Err(MispError::KeyFile {
                path: key_file.to_owned(),
                source: std::io::Error::new(
                    std::io::ErrorKind::InvalidData,
                    "the key is one line without spaces",
                ),
            });
        }
        Ok(Target {
            url,
            key: key.to_owned(),
        })
    }
}

/// What a push did.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct PushSummary {
    /// Days with bans sent.
    pub days: u64,
    /// Events MISP did not have.
    pub created: u64,
    /// Events MISP had and took the newer version of.
    pub updated: u64,
    /// Events MISP already had as they are.
    pub unchanged: u64,
    /// Bans in the days sent.
    pub bans: u64,
}

/// What MISP did with one event.
enum Outcome {
    Created,
    Updated,
    Unchanged,
}

/// One POST; the status and the start of the answer.
fn post(
    agent: &ureq::Agent,
    target: &Target,
    url: &str,
    body: &[u8],
) -> Result<(u16, String), MispError> {
    let transport = |e: ureq::Error| MispError::Transport {
        url: url.to_owned(),
        detail: e.to_string(),
    };
    let mut response = agent
        .post(url)
        .header("Authorization", &target.key)
        .header("Accept", "application/json")
        .header("Content-Type", "application/json")
        .send(body)
        .map_err(transport)?;
    let status = response.status().as_u16();
    let mut text = Vec::new();
    // MISP answers with the whole event; the first 4 KiB say what went wrong, if anything.
    let _ = response
        .body_mut()
        .as_reader()
        .take(4096)
        .read_to_end(&mut text);
    Ok((status, String::from_utf8_lossy(&text).into_owned()))
}

/// Adds the event; if MISP has it already (it answers "Event already exists", 403 or 404 by
/// version), edits it by uuid. An edit MISP refuses as "not newer than the local copy" means
/// it holds this version already.
fn send_event(
    agent: &ureq::Agent,
    target: &Target,
    uuid: &str,
    body: &[u8],
) -> Result<Outcome, MispError> {
    let add = format!("{}/events/add", target.url);
    let (status, text) = post(agent, target, &add, body)?;
    if (200..300).contains(&status) {
        return Ok(Outcome::Created);
    }
    if !(matches!(status, 403 | 404) && text.contains("already exists")) {
        return Err(MispError::Refused {
            url: add,
            status,
            body: text,
        });
    }
    let edit = format!("{}/events/edit/{uuid}", target.url);
    let (status, text) = post(agent, target, &edit, body)?;
    if text.contains("not newer than the local copy") {
        Ok(Outcome::Unchanged)
    } else if (200..300).contains(&status) {
        Ok(Outcome::Updated)
    } else {
        Err(MispError::Refused {
            url: edit,
            status,
            body: text,
        })
    }
}

/// Sends the events of every day with bans from `since`'s day on to the MISP instance (oldest
/// first; stops at the first refusal). Untested against a live MISP: the requests follow MISP's
/// REST API (`/events/add`, then `/events/edit/<uuid>` for an event it has).
pub async fn push(
    db: &Db,
    misp: &MispConfig,
    target: &Target,
    since: SystemTime,
) -> Result<PushSummary, MispError> {
    let agent: ureq::Agent = ureq::Agent::config_builder()
        .http_status_as_error(false)
        .max_redirects(0)
        .timeout_connect(Some(Duration::from_secs(15)))
        .timeout_global(Some(Duration::from_secs(600)))
        .tls_config(
            ureq::tls::TlsConfig::builder()
                .root_certs(ureq::tls::RootCerts::PlatformVerifier)
                .build(),
        )
        .build()
        .into();
    let target = std::sync::Arc::new(Target {
        url: target.url.clone(),
        key: target.key.clone(),
    });
    let mut days = Days::new(db, Day::of(since).start());
    let mut summary = PushSummary::default();
    while let Some((day, bans)) = days.next().await? {
        let event = render_event(misp, day, &bans, newest_received(&bans));
        let body = serde_json::to_vec(&event).expect("JSON values serialise");
        let uuid = event_uuid(misp, day).to_string();
        let (agent, target) = (agent.clone(), target.clone());
        let outcome =
            tokio::task::spawn_blocking(move || send_event(&agent, &target, &uuid, &body))
                .await
                .expect("the MISP request does not panic")?;
        match outcome {
            Outcome::Created => summary.created += 1,
            Outcome::Updated => summary.updated += 1,
            Outcome::Unchanged => summary.unchanged += 1,
        }
        summary.days += 1;
        summary.bans += bans.len() as u64;
        tracing::debug!(%day, bans = bans.len(), "sent to MISP");
    }
    Ok(summary)
}

#[cfg(test)]
mod tests {
    use super::*;
    use shared_f2b::event::{Action, Event};

    fn config() -> MispConfig {
        MispConfig {
            org_name: "Example".into(),
            org_uuid: "5f0c3c1e-1b2a-4c3d-9e8f-0123456789ab".parse().unwrap(),
            distribution: 1,
            tlp: "tlp:green".into(),
            info: "Shared Fail2Ban bans".into(),
        }
    }

    fn at(text: &str) -> SystemTime {
        humantime::parse_rfc3339(text).unwrap()
    }

    fn ban(row_id: u64, ip: &str, time: &str, received: &str) -> Stored {
        let mut event = Event::new(
            Action::Ban,
            "alice",
            "sshd",
            ip.parse().unwrap(),
            at(time),
            600,
            5,
        )
        .unwrap();
        event.id = Uuid::from_u128(0x0193_0000_0000_7000_8000_0000_0000_0000 + row_id as u128);
        Stored {
            row_id,
            seq: row_id,
            received: at(received),
            event,
        }
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

    #[test]
    fn a_day_renders_as_misp_exports_it() {
        let misp = config();
        let day = Day::parse("2026-11-25").unwrap();
        let bans = [
            ban(
                7,
                "2001:db8::5",
                "2026-11-25T08:00:00.250Z",
                "2026-11-25T08:00:01Z",
            ),
            ban(
                3,
                "192.0.2.7",
                "2026-11-25T07:00:16Z",
                "2026-11-25T07:00:17Z",
            ),
        ];
        let newest = newest_received(&bans);
        assert_eq!(newest, secs(at("2026-11-25T08:00:01Z")));
        let event = render_event(&misp, day, &bans, newest);
        let e = &event["Event"];
        assert_eq!(e["uuid"], event_uuid(&misp, day).to_string());
        assert_eq!(
            event_uuid(&misp, day),
            Uuid::new_v5(&misp.org_uuid, b"shared-f2b:2026-11-25")
        );
        assert_eq!(e["info"], "Shared Fail2Ban bans 2026-11-25");
        assert_eq!(e["date"], "2026-11-25");
        assert_eq!(e["timestamp"], newest.to_string());
        assert_eq!(e["distribution"], "1");
        assert_eq!(e["Tag"][0]["name"], "tlp:green");
        assert_eq!(e["Tag"][0]["colour"], "#339900");
        assert_eq!(e["Orgc"]["uuid"], misp.org_uuid.to_string());
        // Objects in archive row order, named by the event id.
        let objects = e["Object"].as_array().unwrap();
        assert_eq!(objects[0]["uuid"], bans[1].event.id.to_string());
        assert_eq!(objects[1]["uuid"], bans[0].event.id.to_string());
        let attrs = objects[0]["Attribute"].as_array().unwrap();
        let relation = |r: &str| attrs.iter().find(|a| a["object_relation"] == r).unwrap();
        assert_eq!(relation("banned-ip")["value"], "192.0.2.7");
        assert_eq!(relation("banned-ip")["to_ids"], true);
        assert_eq!(relation("attack-type")["value"], "sshd");
        assert_eq!(relation("failures")["value"], "5");
        assert_eq!(relation("sensor")["value"], "alice");
        assert_eq!(
            relation("processing-timestamp")["value"],
            "2026-11-25T07:00:16Z"
        );
        assert_eq!(
            relation("sensor")["uuid"],
            Uuid::new_v5(&bans[1].event.id, b"sensor").to_string()
        );
        let later = &objects[1]["Attribute"][4];
        assert_eq!(later["value"], "2026-11-25T08:00:00.250Z");
        // The same bans render the same bytes.
        assert_eq!(
            serde_json::to_vec(&event).unwrap(),
            serde_json::to_vec(&render_event(&misp, day, &bans, newest)).unwrap()
        );
    }

    #[test]
    fn manifest_and_hashes_follow_pymisp() {
        let misp = config();
        let day = Day::parse("2026-11-25").unwrap();
        let bans = [ban(
            1,
            "192.0.2.7",
            "2026-11-25T07:00:16.5Z",
            "2026-11-25T07:00:17Z",
        )];
        let event = render_event(&misp, day, &bans, 1_795_590_017);
        let (uuid, entry) = manifest_entry(&event).unwrap();
        assert_eq!(uuid, event_uuid(&misp, day).to_string());
        assert_eq!(entry["timestamp"], 1_795_590_017);
        assert_eq!(entry["analysis"], 2);
        assert_eq!(entry["threat_level_id"], 3);
        assert_eq!(
            entry["Orgc"],
            json!({"name": "Example", "uuid": misp.org_uuid.to_string()})
        );
        let hashes: Vec<String> = event_hashes(&event).iter().map(hex).collect();
        let md5 = |s: &str| hex(&Md5::digest(s.as_bytes()).into());
        // PyMISP hashes a datetime as Python prints it.
        for value in [
            "192.0.2.7",
            "sshd",
            "5",
            "alice",
            "2026-11-25 07:00:16.500000+00:00",
        ] {
            assert!(hashes.contains(&md5(value)), "{value}");
        }
        assert_eq!(hashes.len(), 5);
        assert_eq!(
            python_datetime("2026-11-25T07:00:16Z").unwrap(),
            "2026-11-25 07:00:16+00:00"
        );
    }

    #[test]
    fn urls_that_would_leak_the_key_are_refused() {
        for good in [
            "https://misp.example.org",
            "https://misp.example.org:8443/",
            "http://127.0.0.1:8080",
            "http://localhost/",
            "http://[::1]:80",
        ] {
            assert!(check_url(good).is_ok(), "{good}");
        }
        assert_eq!(
            check_url("https://m.example/").unwrap(),
            "https://m.example"
        );
        for bad in [
            "http://misp.example.org",
            "http://127.0.0.1.evil.example",
            "http://localhost@evil.example",
            "ftp://misp.example.org",
            "misp.example.org",
            "https://",
        ] {
            assert!(check_url(bad).is_err(), "{bad}");
        }
    }

    #[test]
    fn key_files_are_trimmed_and_must_hold_a_key() {
        let dir = tempfile::tempdir().unwrap();
        let file = dir.path().join("key");
        std::fs::write(&file, "  abc123\n").unwrap();
        let target = Target::new("https://misp.example.org", &file).unwrap();
        assert_eq!(target.key, "abc123");
        assert!(!format!("{target:?}").contains("abc123"));
        std::fs::write(&file, " \n").unwrap();
        assert!(matches!(
            Target::new("https://misp.example.org", &file),
            Err(MispError::EmptyKey(_))
        ));
        assert!(matches!(
            Target::new("https://misp.example.org", &dir.path().join("none")),
            Err(MispError::KeyFile { .. })
        ));
    }
}

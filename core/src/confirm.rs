//! End-to-end acknowledgement: the archive (fsynced on commit) is the record that counts, not
//! the stream's ack (JetStream acknowledges before its store reaches the disk; a power cut of
//! the NATS host loses what it had not synced).
//!
//! So each event this host publishes is also written to `<spool_dir>/sent/` (before it is
//! sent: a publisher killed in between leaves it there too), and stays until the archive holds
//! it. The subscriber daemon asks the archiver every [`CONFIRM_EVERY`] which of them it holds
//! (a `held` request on the catch-up service), forgets those, and sends again those the archive
//! still lacks once its consumer's ack floor has reached the stream's last sequence of an
//! answer given after the record was sent: whatever the stream stored by then is in the
//! archive, so the stream lost them. The event id dedupes the resend in the stream (within its
//! duplicate window), the archive and the subscribers' replay guard. Bounded: at most [`MAX_UNCONFIRMED`] records, none older than [`MAX_AGE`], none sent
//! again more than [`MAX_RESENDS`] times; what goes over is dropped, oldest first, and said.

use crate::event::Event;
use crate::publish::Sender;
use crate::replay::{HeldAnswer, MAX_HELD_ASK, ReplayKind, ReplayRequest, replay_subject};
use std::collections::{HashMap, HashSet};
use std::fs;
use std::io;
use std::path::{Path, PathBuf};
use std::time::{Duration, SystemTime};

/// Where the records live, under the spool directory.
pub const SENT_DIR: &str = "sent";
/// How often the daemon asks.
pub const CONFIRM_EVERY: Duration = Duration::from_secs(10);
/// A record this young is not sent again (its one-shot publisher may still be sending it);
/// the daemon waits longer when `[publisher]` timeouts make the publisher's run longer.
pub const RESEND_AFTER: Duration = Duration::from_secs(10);
/// Most records kept; beyond, the oldest are dropped.
pub const MAX_UNCONFIRMED: usize = 100_000;
/// Records older than this are dropped (an event the archive refused is never held).
pub const MAX_AGE: Duration = Duration::from_secs(86_400);
/// How old a record must be before its sending counts as ended: the one-shot publisher's
/// longest run (connect, drain older spooled events, send its own, each bounded by `timeout`)
/// and a margin, never under [`RESEND_AFTER`].
pub fn resend_after(publisher: &crate::config::PublisherConfig) -> Duration {
    (publisher.timeout * 4 + publisher.spool_send_limit + Duration::from_secs(2)).max(RESEND_AFTER)
}

/// Times a record is sent again; one the archive still lacks after that is dropped (the
/// archive refuses it: a bad signature, a revoked key), so it is not sent forever.
pub const MAX_RESENDS: u32 = 5;
/// How long the archiver has to answer.
const ASK_TIMEOUT: Duration = Duration::from_secs(5);

/// Why a pass stopped.
#[derive(Debug, thiserror::Error)]
pub enum ConfirmError {
    #[error("reading {dir}: {source}")]
    Io { dir: PathBuf, source: io::Error },
    #[error("no archiver answered: {0}")]
    NoAnswer(String),
    #[error("the archiver could not answer: {0}")]
    Refused(String),
}

/// The events published and not yet confirmed by the archive.
#[derive(Debug, Clone)]
pub struct Unconfirmed {
    dir: PathBuf,
}

/// One waiting record.
#[derive(Debug, Clone)]
pub struct Record {
    pub id: uuid::Uuid,
    pub path: PathBuf,
    /// When it was written or last sent.
    pub sent: SystemTime,
}

impl Unconfirmed {
    /// The records of the spool in `spool_dir`.
    pub fn new(spool_dir: &Path) -> Unconfirmed {
        Unconfirmed {
            dir: spool_dir.join(SENT_DIR),
        }
    }

    pub fn dir(&self) -> &Path {
        &self.dir
    }

    /// Keeps `event` until the archive holds it: a temp file renamed into place, not fsynced
    /// (the record guards against the NATS host's power, not this host's; the one-shot
    /// publisher stays fast).
    pub fn put(&self, event: &Event) -> io::Result<()> {
        fs::create_dir_all(&self.dir)?;
        let tmp = self.dir.join(format!(".{}.tmp", event.id));
        let written =
            fs::write(&tmp, event.encode()).and_then(|()| fs::rename(&tmp, self.path(event.id)));
        if written.is_err() {
            let _ = fs::remove_file(&tmp);
        }
        written
    }

    /// Takes in a spooled entry that was just sent.
    pub fn adopt(&self, entry: &Path, id: uuid::Uuid) -> io::Result<()> {
        fs::create_dir_all(&self.dir)?;
        let path = self.path(id);
        fs::rename(entry, &path)?;
        // Its age counts from this send, not from when it was spooled.
        if let Ok(file) = fs::File::options().write(true).open(&path) {
            let _ = file.set_modified(SystemTime::now());
        }
        Ok(())
    }

    /// Forgets `id` (confirmed, or spooled instead of sent).
    pub fn remove(&self, id: uuid::Uuid) {
        let _ = fs::remove_file(self.path(id));
    }

    fn path(&self, id: uuid::Uuid) -> PathBuf {
        self.dir.join(format!("{id}.json"))
    }

    /// The records, oldest id first.
    pub fn list(&self) -> io::Result<Vec<Record>> {
        let entries = match fs::read_dir(&self.dir) {
            Ok(rd) => rd,
            Err(e) if e.kind() == io::ErrorKind::NotFound => return Ok(Vec::new()),
            Err(e) => return Err(e),
        };
        let mut out = Vec::new();
        for entry in entries.flatten() {
            let path = entry.path();
            if is_stale_temp(&entry) {
                // A publisher killed between writing its record and renaming it into place.
                let _ = fs::remove_file(&path);
                continue;
            }
            let Some(id) = path
                .file_name()
                .and_then(|n| n.to_str())
                .and_then(|n| n.strip_suffix(".json"))
                .and_then(|n| n.parse().ok())
            else {
                continue;
            };
            let sent = entry
                .metadata()
                .and_then(|m| m.modified())
                .unwrap_or(SystemTime::UNIX_EPOCH);
            out.push(Record { id, path, sent });
        }
        out.sort_by_key(|r| r.id);
        Ok(out)
    }
}

/// How old a record's temp file (`.<id>.tmp`) may get before a pass removes it: a publisher
/// renames it into place within its run, so an older one's publisher was killed.
const STALE_TEMP: Duration = Duration::from_secs(3600);

fn is_stale_temp(entry: &fs::DirEntry) -> bool {
    let name = entry.file_name();
    let name = name.to_string_lossy();
    name.starts_with('.')
        && name.ends_with(".tmp")
        && entry
            .metadata()
            .and_then(|m| m.modified())
            .is_ok_and(|t| t.elapsed().unwrap_or_default() > STALE_TEMP)
}

/// What one pass did.
#[derive(Debug, Default, Clone, PartialEq, Eq)]
pub struct Pass {
    /// Records the archive holds, now forgotten.
    pub confirmed: usize,
    /// Records the stream lost, sent again.
    pub resent: usize,
    /// Records still waiting.
    pub waiting: usize,
    /// Records dropped over [`MAX_UNCONFIRMED`] or [`MAX_AGE`].
    pub dropped: usize,
}

/// What a daemon remembers of each record between passes.
#[derive(Debug, Default)]
pub struct Tracking {
    records: HashMap<uuid::Uuid, Tracked>,
}

#[derive(Debug, Default, Clone, Copy)]
struct Tracked {
    /// The stream's last sequence in the first answer after the record was sent (and old
    /// enough that its sending had ended): the stream stored it at or below this, if at all.
    stored_by: Option<u64>,
    /// Times sent again.
    resends: u32,
}

/// Most records sent again in one pass (the rest wait for the next).
const MAX_RESENDS_PER_PASS: usize = 500;

/// Asks the archiver about every record, forgets what it holds, and sends again what the
/// stream lost: a record not held once the consumer's ack floor reached the stream's last
/// sequence of an earlier answer (`Tracked::stored_by`). `resend_after`: how old a record must
/// be before its sending counts as ended (the one-shot publisher's longest run).
pub async fn pass(
    unconfirmed: &Unconfirmed,
    tracking: &mut Tracking,
    resend_after: Duration,
    client: &async_nats::Client,
    prefix: &str,
    sender: &Sender,
) -> Result<Pass, ConfirmError> {
    let io = |source| ConfirmError::Io {
        dir: unconfirmed.dir.clone(),
        source,
    };
    // Off the async workers: at 100,000 records a listing takes a while.
    let listing = unconfirmed.clone();
    let mut records = tokio::task::spawn_blocking(move || listing.list())
        .await
        .map_err(|e| io(io::Error::other(e)))?
        .map_err(io)?;
    let mut pass = Pass::default();
    let now = SystemTime::now();
    let over = records.len().saturating_sub(MAX_UNCONFIRMED);
    records.retain(|r| {
        let old = now.duration_since(r.sent).unwrap_or_default() > MAX_AGE;
        let keep = pass.dropped >= over && !old;
        if !keep {
            pass.dropped += 1;
            let _ = fs::remove_file(&r.path);
        }
        keep
    });
    let present: HashSet<uuid::Uuid> = records.iter().map(|r| r.id).collect();
    tracking.records.retain(|id, _| present.contains(id));
    if pass.dropped > 0 {
        tracing::warn!(dropped = pass.dropped, dir = %unconfirmed.dir.display(),
            "published events the archive never confirmed, dropped (too many or too old)");
    }
    let mut sending = true;
    for chunk in records.chunks(MAX_HELD_ASK) {
        let answer = ask(client, prefix, chunk).await?;
        let held: HashSet<uuid::Uuid> = answer.held.into_iter().collect();
        // A floor past the stream's end: the stream went back; nothing can be concluded.
        let sane = answer.floor <= answer.last;
        for record in chunk {
            if held.contains(&record.id) {
                let _ = fs::remove_file(&record.path);
                tracking.records.remove(&record.id);
                pass.confirmed += 1;
                continue;
            }
            pass.waiting += 1;
            if now.duration_since(record.sent).unwrap_or_default() < resend_after {
                continue;
            }
            let tracked = tracking.records.entry(record.id).or_default();
            let Some(stored_by) = tracked.stored_by else {
                tracked.stored_by = Some(answer.last);
                continue;
            };
            if answer.last < stored_by {
                // The stream went back (a power cut): what it holds now is the new mark.
                tracked.stored_by = Some(answer.last);
                continue;
            }
            if !sane || answer.floor < stored_by || !sending {
                continue;
            }
            if tracked.resends >= MAX_RESENDS {
                tracing::warn!(id = %record.id, tries = tracked.resends,
                    "the archive still lacks a published event sent again; dropped (does it refuse it?)");
                let _ = fs::remove_file(&record.path);
                tracking.records.remove(&record.id);
                pass.waiting -= 1;
                pass.dropped += 1;
                continue;
            }
            match resend(record, sender).await {
                Resent::Sent => {
                    tracked.resends += 1;
                    // Asked about again once this send has had its answer.
                    tracked.stored_by = None;
                    pass.resent += 1;
                    sending = pass.resent < MAX_RESENDS_PER_PASS;
                }
                Resent::Gone => {
                    tracking.records.remove(&record.id);
                    pass.waiting -= 1;
                }
                Resent::Failed => sending = false,
            }
        }
    }
    if pass.resent > 0 {
        tracing::warn!(
            resent = pass.resent,
            waiting = pass.waiting,
            "the archive lacked published events the stream had taken (a power cut of the NATS \
             host?); sent them again"
        );
    }
    Ok(pass)
}

async fn ask(
    client: &async_nats::Client,
    prefix: &str,
    records: &[Record],
) -> Result<HeldAnswer, ConfirmError> {
    let request = ReplayRequest {
        kind: ReplayKind::Held,
        jails: Vec::new(),
        exclude_origin: None,
        after: 0,
        until_seq: None,
        limit: 0,
        since_ms: None,
        local: false,
        intel: false,
        ids: records.iter().map(|r| r.id).collect(),
    };
    let body = serde_json::to_vec(&request).expect("a request serialises");
    let reply = tokio::time::timeout(
        ASK_TIMEOUT,
        client.request(replay_subject(prefix), body.into()),
    )
    .await
    .map_err(|_| ConfirmError::NoAnswer(format!("nothing within {ASK_TIMEOUT:?}")))?
    .map_err(|e| ConfirmError::NoAnswer(e.to_string()))?;
    let answer: HeldAnswer = serde_json::from_slice(&reply.payload).map_err(|e| {
        ConfirmError::Refused(format!(
            "not an answer to a held request (an older archiver?): {e}"
        ))
    })?;
    match answer.error {
        Some(e) => Err(ConfirmError::Refused(e)),
        None => Ok(answer),
    }
}

/// What sending a record again did.
enum Resent {
    Sent,
    /// The record went meanwhile (confirmed, or spooled by its publisher), or was unreadable.
    Gone,
    Failed,
}

/// Sends `record` again; its write time becomes now. An unreadable record is dropped.
async fn resend(record: &Record, sender: &Sender) -> Resent {
    let bytes = match fs::read(&record.path) {
        Ok(bytes) => bytes,
        Err(e) if e.kind() == io::ErrorKind::NotFound => return Resent::Gone,
        Err(e) => {
            tracing::warn!(record = %record.path.display(), error = %e,
                "a record of a published event cannot be read; dropped");
            let _ = fs::remove_file(&record.path);
            return Resent::Gone;
        }
    };
    let event = match Event::decode(&bytes) {
        Ok(event) => event,
        Err(e) => {
            tracing::warn!(record = %record.path.display(), error = %e,
                "an unreadable record of a published event, dropped");
            let _ = fs::remove_file(&record.path);
            return Resent::Gone;
        }
    };
    match sender.resend(&event).await {
        Ok(()) => {
            tracing::debug!(id = %event.id, ip = %event.ip, jail = %event.jail,
                "a published event the archive lacks, sent again");
            if let Ok(file) = fs::File::options().write(true).open(&record.path) {
                let _ = file.set_modified(SystemTime::now());
            }
            Resent::Sent
        }
        Err(e) => {
            tracing::debug!(id = %event.id, error = %e, "sending a lost event again failed");
            Resent::Failed
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::event::{Action, parse_ip};

    fn event(n: u8) -> Event {
        Event::new(
            Action::Ban,
            "alice",
            "sshd",
            parse_ip(&format!("192.0.2.{n}")).unwrap(),
            SystemTime::now(),
            600,
            3,
        )
        .unwrap()
    }

    #[test]
    fn records_are_kept_listed_oldest_first_adopted_and_forgotten() {
        let dir = tempfile::tempdir().unwrap();
        let waiting = Unconfirmed::new(dir.path());
        assert!(waiting.list().unwrap().is_empty(), "no directory yet");
        let (a, b) = (event(1), event(2));
        waiting.put(&b).unwrap();
        // A spooled entry that was sent moves in.
        let spooled = dir.path().join(format!("{}.json", a.id));
        fs::write(&spooled, a.encode()).unwrap();
        waiting.adopt(&spooled, a.id).unwrap();
        assert!(!spooled.exists());
        let ids: Vec<_> = waiting.list().unwrap().iter().map(|r| r.id).collect();
        let mut want = vec![a.id, b.id];
        want.sort();
        assert_eq!(ids, want);
        waiting.remove(a.id);
        let left = waiting.list().unwrap();
        assert_eq!(left.len(), 1);
        assert_eq!(Event::decode(&fs::read(&left[0].path).unwrap()).unwrap(), b);
    }

    #[test]
    fn a_killed_publishers_temp_file_goes_once_an_hour_old() {
        let dir = tempfile::tempdir().unwrap();
        let waiting = Unconfirmed::new(dir.path());
        let (old, fresh) = (event(3), event(4));
        waiting.put(&event(5)).unwrap();
        let temp = |e: &Event| dir.path().join(SENT_DIR).join(format!(".{}.tmp", e.id));
        for e in [&old, &fresh] {
            fs::write(temp(e), e.encode()).unwrap();
        }
        let two_hours_ago = SystemTime::now() - Duration::from_secs(7200);
        fs::File::options()
            .write(true)
            .open(temp(&old))
            .unwrap()
            .set_modified(two_hours_ago)
            .unwrap();
        assert_eq!(
            waiting.list().unwrap().len(),
            1,
            "temp files are not records"
        );
        assert!(!temp(&old).exists(), "an hour old: gone");
        assert!(
            temp(&fresh).exists(),
            "a publisher may still be renaming it"
        );
    }
}

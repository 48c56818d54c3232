//! End-to-end acknowledgement: the archive (fsynced on commit) is the record that counts, not
//! the stream's ack (JetStream acknowledges before its store reaches the disk; a power cut of
//! the NATS host loses what it had not synced).
//!
//! So each event this host publishes is also written to `<spool_dir>/sent/` (before it is
//! sent: a publisher killed in between leaves it there too), and stays until the archive holds
//! it. The subscriber daemon asks the archiver every [`CONFIRM_EVERY`] which of them it holds
//! (a `held` request on the catch-up service), forgets those, and sends again those the archive
//! lacks although it had committed everything the stream held when asked: the stream lost
//! them. The event id dedupes the resend in the stream, the archive and the subscribers' replay
//! guard. Bounded: at most [`MAX_UNCONFIRMED`] records, none older than [`MAX_AGE`], none sent
//! again more than [`MAX_RESENDS`] times; what goes over is dropped, oldest first, and said.

use crate::event::Event;
use crate::publish::Sender;
use crate::replay::{HeldAnswer, MAX_HELD_ASK, ReplayKind, ReplayRequest, replay_subject};
use std::fs;
use std::io;
use std::path::{Path, PathBuf};
use std::time::{Duration, SystemTime};

/// Where the records live, under the spool directory.
pub const SENT_DIR: &str = "sent";
/// How often the daemon asks.
pub const CONFIRM_EVERY: Duration = Duration::from_secs(10);
/// A record this young is not sent again (its one-shot publisher may still be sending it).
pub const RESEND_AFTER: Duration = Duration::from_secs(10);
/// Most records kept; beyond, the oldest are dropped.
pub const MAX_UNCONFIRMED: usize = 100_000;
/// Records older than this are dropped (an event the archive refused is never held).
pub const MAX_AGE: Duration = Duration::from_secs(86_400);
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

    /// Takes in a spooled entry that was just sent (renamed, so it keeps its write time).
    pub fn adopt(&self, entry: &Path, id: uuid::Uuid) -> io::Result<()> {
        fs::create_dir_all(&self.dir)?;
        fs::rename(entry, self.path(id))
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

/// Asks the archiver about every record, forgets what it holds, and sends again what the
/// stream lost; `resends` counts, per record, the times it was sent again (kept by the caller
/// between passes).
pub async fn pass(
    unconfirmed: &Unconfirmed,
    resends: &mut std::collections::HashMap<uuid::Uuid, u32>,
    client: &async_nats::Client,
    prefix: &str,
    sender: &Sender,
) -> Result<Pass, ConfirmError> {
    let io = |source| ConfirmError::Io {
        dir: unconfirmed.dir.clone(),
        source,
    };
    let mut records = unconfirmed.list().map_err(io)?;
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
    let present: std::collections::HashSet<uuid::Uuid> = records.iter().map(|r| r.id).collect();
    resends.retain(|id, _| present.contains(id));
    if pass.dropped > 0 {
        tracing::warn!(dropped = pass.dropped, dir = %unconfirmed.dir.display(),
            "published events the archive never confirmed, dropped (too many or too old)");
    }
    for chunk in records.chunks(MAX_HELD_ASK) {
        let answer = ask(client, prefix, chunk).await?;
        let held: std::collections::HashSet<uuid::Uuid> = answer.held.into_iter().collect();
        for record in chunk {
            if held.contains(&record.id) {
                let _ = fs::remove_file(&record.path);
                resends.remove(&record.id);
                pass.confirmed += 1;
                continue;
            }
            let young = now.duration_since(record.sent).unwrap_or_default() < RESEND_AFTER;
            if !answer.complete || young {
                pass.waiting += 1;
                continue;
            }
            let tries = resends.entry(record.id).or_default();
            if *tries >= MAX_RESENDS {
                tracing::warn!(id = %record.id, tries = *tries,
                    "the archive still lacks a published event sent again; dropped (does it refuse it?)");
                let _ = fs::remove_file(&record.path);
                resends.remove(&record.id);
                pass.dropped += 1;
                continue;
            }
            if resend(record, sender).await {
                *tries += 1;
                pass.resent += 1;
            }
            pass.waiting += 1;
        }
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

/// Sends `record` again; its write time becomes now, so it waits [`RESEND_AFTER`] before the
/// next. A record that cannot be read is dropped.
async fn resend(record: &Record, sender: &Sender) -> bool {
    let event = match fs::read(&record.path)
        .map_err(|e| e.to_string())
        .and_then(|b| Event::decode(&b).map_err(|e| e.to_string()))
    {
        Ok(event) => event,
        Err(e) => {
            tracing::warn!(record = %record.path.display(), error = %e,
                "an unreadable record of a published event, dropped");
            let _ = fs::remove_file(&record.path);
            return false;
        }
    };
    match sender.send(&event).await {
        Ok(()) => {
            tracing::warn!(id = %event.id, ip = %event.ip, jail = %event.jail,
                "the archive lacks a published event the stream had acknowledged; sent again");
            if let Ok(file) = fs::File::options().write(true).open(&record.path) {
                let _ = file.set_modified(SystemTime::now());
            }
            true
        }
        Err(e) => {
            tracing::debug!(id = %event.id, error = %e, "sending a lost event again failed");
            false
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
}

//! The durable local spool: events that could not be sent wait here, one fsynced file each.
//!
//! File names are the events' UUIDv7 ids, so sorting names sends the oldest first. Sending holds
//! an exclusive lock on `<spool_dir>/.lock`, so two processes never send (or delete) the same
//! file twice; a file leaves the spool only after the server acked it (into `sent/`, to wait
//! for the archive, with `[publisher] confirm`).

use crate::confirm::Unconfirmed;
use crate::event::Event;
use crate::publish::{SendError, Sender};
use std::fs::{self, File, OpenOptions};
use std::io::{self, Write};
use std::path::{Path, PathBuf};
use std::time::Instant;

/// Entries that cannot be decoded are moved here, out of the way.
const CORRUPT_DIR: &str = "corrupt";
/// Entries the server refused (permissions) are moved here: retrying cannot help.
const REFUSED_DIR: &str = "refused";

/// A spool directory.
#[derive(Debug, Clone)]
pub struct Spool {
    dir: PathBuf,
    /// Where a sent entry goes to wait for the archive (`[publisher] confirm`); `None`: deleted.
    unconfirmed: Option<Unconfirmed>,
}

/// What one pass over the spool did.
#[derive(Debug, Default, Clone, PartialEq, Eq)]
pub struct DrainReport {
    pub sent: usize,
    pub remaining: usize,
    pub set_aside: usize,
    /// Another process held the lock, so this one sent nothing.
    pub busy: bool,
    /// Why sending stopped early, if it did.
    pub stopped: Option<String>,
}

/// Holds the spool's send lock until dropped.
pub struct SpoolLock(#[allow(dead_code)] File);

impl Spool {
    /// The spool in `dir` (created on first write).
    pub fn new(dir: impl Into<PathBuf>) -> Spool {
        Spool {
            dir: dir.into(),
            unconfirmed: None,
        }
    }

    /// The same spool, whose sent entries wait in `sent/` until the archive holds them
    /// ([`crate::confirm`]) when `confirm` is on.
    pub fn confirming(mut self, confirm: bool) -> Spool {
        self.unconfirmed = confirm.then(|| Unconfirmed::new(&self.dir));
        self
    }

    /// Where sent events wait for the archive, when they do.
    pub fn unconfirmed(&self) -> Option<&Unconfirmed> {
        self.unconfirmed.as_ref()
    }

    /// The spool directory.
    pub fn dir(&self) -> &Path {
        &self.dir
    }

    /// Writes `event` durably: temp file, fsync, rename, fsync of the directory.
    pub fn put(&self, event: &Event) -> io::Result<PathBuf> {
        fs::create_dir_all(&self.dir)?;
        let path = self.dir.join(format!("{}.json", event.id));
        let tmp = self.dir.join(format!(".{}.tmp", event.id));
        let written = OpenOptions::new()
            .write(true)
            .create_new(true)
            .open(&tmp)
            .and_then(|mut file| {
                file.write_all(&event.encode())?;
                file.sync_all()
            })
            .and_then(|()| fs::rename(&tmp, &path));
        if let Err(e) = written {
            // A full disk or a failed write leaves nothing half-written behind.
            let _ = fs::remove_file(&tmp);
            return Err(e);
        }
        File::open(&self.dir)?.sync_all()?;
        Ok(path)
    }

    /// The waiting entries, oldest first.
    pub fn pending(&self) -> io::Result<Vec<PathBuf>> {
        let mut entries = match fs::read_dir(&self.dir) {
            Ok(rd) => rd
                .filter_map(|e| e.ok().map(|e| e.path()))
                .filter(|p| p.extension().is_some_and(|x| x == "json"))
                .collect::<Vec<_>>(),
            Err(e) if e.kind() == io::ErrorKind::NotFound => Vec::new(),
            Err(e) => return Err(e),
        };
        entries.sort();
        Ok(entries)
    }

    /// Takes the send lock without waiting; `None` when another process holds it.
    pub fn try_lock(&self) -> io::Result<Option<SpoolLock>> {
        fs::create_dir_all(&self.dir)?;
        let file = OpenOptions::new()
            .create(true)
            .truncate(false)
            .write(true)
            .open(self.dir.join(".lock"))?;
        match file.try_lock() {
            Ok(()) => Ok(Some(SpoolLock(file))),
            Err(fs::TryLockError::WouldBlock) => Ok(None),
            Err(fs::TryLockError::Error(e)) => Err(e),
        }
    }

    /// Sends waiting entries oldest first until the spool is empty, `deadline` passes, or the
    /// server stops answering.
    pub async fn drain(&self, sender: &Sender, deadline: Instant) -> io::Result<DrainReport> {
        let mut report = DrainReport::default();
        if self.pending()?.is_empty() {
            return Ok(report);
        }
        let Some(_lock) = self.try_lock()? else {
            report.busy = true;
            report.remaining = self.pending()?.len();
            return Ok(report);
        };
        // Re-list after each pass: runs that could not take the lock add their events here.
        'passes: loop {
            let pending = self.pending()?;
            if pending.is_empty() {
                break;
            }
            for path in pending {
                if Instant::now() >= deadline {
                    report.stopped = Some("time limit reached".into());
                    break 'passes;
                }
                let event = match read_entry(&path) {
                    Ok(event) => event,
                    Err(e) => {
                        self.set_aside(&path, CORRUPT_DIR, &e.to_string())?;
                        report.set_aside += 1;
                        continue;
                    }
                };
                match sender.send(&event).await {
                    Ok(()) => {
                        match &self.unconfirmed {
                            Some(waiting) => waiting.adopt(&path, event.id)?,
                            None => fs::remove_file(&path)?,
                        }
                        report.sent += 1;
                    }
                    Err(SendError::Refused(reason)) => {
                        self.set_aside(&path, REFUSED_DIR, &reason)?;
                        report.set_aside += 1;
                    }
                    Err(e) => {
                        report.stopped = Some(e.to_string());
                        break 'passes;
                    }
                }
            }
        }
        report.remaining = self.pending()?.len();
        Ok(report)
    }

    fn set_aside(&self, path: &Path, sub: &str, reason: &str) -> io::Result<()> {
        let dir = self.dir.join(sub);
        fs::create_dir_all(&dir)?;
        let name = path.file_name().expect("spool entries have names");
        tracing::warn!(entry = %path.display(), moved_to = %dir.display(), %reason,
            "spool entry set aside");
        fs::rename(path, dir.join(name))
    }
}

/// Why a spooled entry cannot be sent: set aside, never retried.
#[derive(Debug, thiserror::Error)]
enum Unreadable {
    #[error("{0}")]
    Read(#[from] io::Error),
    #[error("{0}")]
    Decode(#[from] crate::event::EventError),
}

fn read_entry(path: &Path) -> Result<Event, Unreadable> {
    Ok(Event::decode(&fs::read(path)?)?)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::event::{Action, parse_ip};
    use std::time::SystemTime;

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
    fn entries_are_listed_oldest_first_and_survive_reading() {
        let dir = tempfile::tempdir().unwrap();
        let spool = Spool::new(dir.path().join("spool"));
        assert!(spool.pending().unwrap().is_empty());
        let events: Vec<_> = (1..=5).map(event).collect();
        for e in &events {
            spool.put(e).unwrap();
        }
        let pending = spool.pending().unwrap();
        assert_eq!(pending.len(), 5);
        for (path, e) in pending.iter().zip(&events) {
            assert_eq!(Event::decode(&fs::read(path).unwrap()).unwrap(), *e);
        }
    }

    #[test]
    fn the_lock_is_exclusive() {
        let dir = tempfile::tempdir().unwrap();
        let spool = Spool::new(dir.path());
        let held = spool.try_lock().unwrap();
        assert!(held.is_some());
        assert!(spool.try_lock().unwrap().is_none());
        drop(held);
        assert!(spool.try_lock().unwrap().is_some());
    }
}

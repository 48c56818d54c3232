//! Following live events: a plain subscription to the subject the stream re-publishes every
//! stored event on (`<prefix>.live.>`), so the server fans each event out to every host and no
//! host holds a consumer or any JetStream permission. Each message carries the stream's headers
//! (`Nats-Stream`, `Nats-Sequence`, `Nats-Subject`); [`Tracker`] notices a sequence that jumps,
//! which the daemon fills in through the archiver's catch-up service.

use async_nats::HeaderMap;
use async_nats::header::{IntoHeaderName, NATS_SEQUENCE, NATS_STREAM, NATS_SUBJECT};

/// Where a message came from.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Source {
    /// The live subject.
    Live,
    /// A catch-up page from the archiver.
    Replay,
}

/// One event to handle.
#[derive(Debug, Clone)]
pub struct Incoming {
    pub source: Source,
    /// When the stream stored it, as the archiver says for a replayed event (live: now).
    pub stored: Option<std::time::SystemTime>,
    /// Its stream sequence (live: from `Nats-Sequence`; absent when the header is).
    pub seq: Option<u64>,
    /// The stream that stored it (live: from `Nats-Stream`).
    pub stream: Option<String>,
    /// The subject it was published on (live: from `Nats-Subject`).
    pub subject: String,
    pub payload: bytes::Bytes,
}

/// The server's value of a header: the stream appends its own headers after whatever the
/// publisher sent, so a host that puts a `Nats-Sequence` on its event only adds an earlier one.
fn header(headers: Option<&HeaderMap>, name: impl IntoHeaderName) -> Option<&str> {
    headers?.get_last(name).map(|v| v.as_str())
}

impl Incoming {
    /// A message from the live subject. The subject it was stored on is read off the live
    /// subject (`<prefix>.live.<rest>` re-publishes `<prefix>.<rest>`), which no publisher can
    /// forge; a `Nats-Subject` that disagrees, or missing stream headers, leave it for admission
    /// to refuse.
    pub fn live(msg: async_nats::Message, prefix: &str) -> Incoming {
        let headers = msg.headers.as_ref();
        let stored = shared_f2b::subject::stored_subject(prefix, &msg.subject);
        let agrees = stored.is_some() && header(headers, NATS_SUBJECT) == stored.as_deref();
        Incoming {
            source: Source::Live,
            stored: None,
            seq: header(headers, NATS_SEQUENCE)
                .and_then(|s| s.parse().ok())
                .filter(|_| agrees),
            stream: header(headers, NATS_STREAM).map(str::to_owned),
            subject: stored.unwrap_or_else(|| msg.subject.to_string()),
            payload: msg.payload,
        }
    }
}

/// Subscribes to the live subject.
pub async fn live(
    client: &async_nats::Client,
    prefix: &str,
) -> Result<async_nats::Subscriber, async_nats::SubscribeError> {
    client
        .subscribe(shared_f2b::subject::live_subjects(prefix))
        .await
}

/// What a live sequence says about what this host has seen.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Seen {
    /// The next one, or later ones after a gap the daemon already knows of.
    InOrder,
    /// Already handled (or the stream was re-created: the periodic check finds out).
    Old,
    /// Sequences were skipped: catch up.
    Gap,
}

/// Stream sequences: everything up to `done` is handled; `seen` is the highest handled live.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Tracker {
    pub done: u64,
    pub seen: u64,
}

impl Tracker {
    /// Resumes at the journal's cursor.
    pub fn at(done: u64) -> Tracker {
        Tracker { done, seen: done }
    }

    /// Takes a live sequence into account.
    pub fn on_live(&mut self, seq: u64) -> Seen {
        if seq <= self.seen {
            return Seen::Old;
        }
        let next = seq == self.seen + 1;
        if next && self.done == self.seen {
            self.done = seq;
        }
        self.seen = seq;
        if next { Seen::InOrder } else { Seen::Gap }
    }

    /// A catch-up handled everything up to `high`.
    pub fn caught_up(&mut self, high: u64) {
        self.done = self.done.max(high);
        self.seen = self.seen.max(self.done);
    }

    /// Events this host knows it has not handled yet.
    pub fn missing(&self) -> u64 {
        self.seen - self.done
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn gaps_are_noticed_and_closed_by_a_catch_up() {
        let mut t = Tracker::at(10);
        assert_eq!(t.on_live(11), Seen::InOrder);
        assert_eq!(t.done, 11);
        assert_eq!(t.on_live(11), Seen::Old);
        assert_eq!(t.on_live(14), Seen::Gap);
        assert_eq!((t.done, t.seen, t.missing()), (11, 14, 3));
        assert_eq!(t.on_live(15), Seen::InOrder);
        assert_eq!(t.done, 11, "the gap stays open until caught up");
        t.caught_up(15);
        assert_eq!((t.done, t.seen), (15, 15));
        assert_eq!(t.on_live(16), Seen::InOrder);
        assert_eq!(t.done, 16);
    }
}

//! The latest events as they arrive, for the site page: one plain subscription to the live
//! subject the stream re-publishes every stored event on (`<prefix>.live.>`, as the hosts
//! follow it), fanned out in process to every open page as server-sent events. A page costs no
//! query and no NATS subscription of its own.

use super::shape;
use axum::body::{Body, Bytes};
use futures::StreamExt;
use shared_f2b::inbound::{Received, decode_any};
use std::collections::VecDeque;
use std::sync::atomic::{AtomicU64, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, SystemTime};
use tokio::sync::broadcast;
use tokio_util::sync::CancellationToken;

/// The latest events kept for a page that opens.
pub const RECENT: usize = 50;
/// Pages following at once at most: each holds a connection of the listener's 256, and the
/// feeds must keep theirs.
const MAX_FOLLOWERS: usize = 64;
/// Events buffered per page; one that falls further behind is told to load afresh.
const BUFFER: usize = 1024;
/// A comment this often keeps proxies and the listener's idle timer from closing a quiet page.
const KEEPALIVE: Duration = Duration::from_secs(10);

/// The live subscription ended before shutdown.
#[derive(Debug, thiserror::Error)]
#[error("the site page's live subscription ended")]
pub struct SubscriptionEnded;

/// One event as a page gets it.
#[derive(Debug)]
pub struct Item {
    pub seq: u64,
    pub json: serde_json::Value,
}

/// What the pages are sent.
#[derive(Debug, Clone)]
enum Update {
    Event(Arc<Item>),
    /// Events were missed: load afresh.
    Reload,
}

/// The fan-out and the latest events.
pub struct Live {
    sender: broadcast::Sender<Update>,
    recent: Mutex<VecDeque<Arc<Item>>>,
    /// The highest stream sequence seen (live or from the archive).
    last_seq: AtomicU64,
    /// Sequences skipped live (NATS was away): the first one missed and the one after them;
    /// filled in from the archive once it holds them.
    gap: Mutex<Option<(u64, u64)>>,
    /// The ids of the events shown lately: a host reusing one is shown once.
    shown: Mutex<VecDeque<uuid::Uuid>>,
    followers: AtomicUsize,
}

/// Event ids remembered to show each once.
const SHOWN: usize = 4096;

impl Live {
    pub fn new() -> Arc<Live> {
        Arc::new(Live {
            sender: broadcast::channel(BUFFER).0,
            recent: Mutex::new(VecDeque::with_capacity(RECENT + 1)),
            last_seq: AtomicU64::new(0),
            gap: Mutex::new(None),
            shown: Mutex::new(VecDeque::with_capacity(SHOWN + 1)),
            followers: AtomicUsize::new(0),
        })
    }

    /// The highest stream sequence seen.
    pub fn last_seq(&self) -> u64 {
        self.last_seq.load(Ordering::SeqCst)
    }

    /// Notes that everything up to `seq` was seen.
    pub fn seen(&self, seq: u64) {
        self.last_seq.fetch_max(seq, Ordering::SeqCst);
    }

    /// Notes `seq` received live: one beyond the next says some were missed.
    fn received(&self, seq: u64) {
        let last = self.last_seq.fetch_max(seq, Ordering::SeqCst);
        if last > 0 && seq > last + 1 {
            let mut gap = self.gap.lock().unwrap_or_else(|e| e.into_inner());
            *gap = Some(gap.map_or((last + 1, seq), |(from, _)| (from, seq)));
        }
    }

    /// Whether events before stream sequence `upto` + 1 were missed (a gap the archive now
    /// holds, or more than was seen), forgetting a gap it answers.
    pub fn missed(&self, upto: u64) -> bool {
        let mut gap = self.gap.lock().unwrap_or_else(|e| e.into_inner());
        let filled = gap.is_some_and(|(_, after)| upto + 1 >= after);
        if filled {
            *gap = None;
        }
        filled || upto > self.last_seq()
    }

    /// Whether the event with `id` was not shown yet (and now counts as shown).
    fn first_showing(&self, id: uuid::Uuid) -> bool {
        let mut shown = self.shown.lock().unwrap_or_else(|e| e.into_inner());
        if shown.contains(&id) {
            return false;
        }
        if shown.len() == SHOWN {
            shown.pop_front();
        }
        shown.push_back(id);
        true
    }

    /// Tells the pages to load afresh.
    pub fn reload(&self) {
        let _ = self.sender.send(Update::Reload);
    }

    /// Keeps `item` among the latest (in stream order, once) and sends it to the pages.
    pub fn push(&self, item: Item) {
        self.seen(item.seq);
        let item = Arc::new(item);
        {
            let mut recent = self.recent.lock().unwrap_or_else(|e| e.into_inner());
            if recent.iter().any(|r| r.seq == item.seq) {
                return;
            }
            let at = recent.partition_point(|r| r.seq < item.seq);
            recent.insert(at, item.clone());
            while recent.len() > RECENT {
                recent.pop_front();
            }
        }
        // No page open is no error.
        let _ = self.sender.send(Update::Event(item));
    }

    /// The latest events, newest first.
    pub fn recent(&self) -> Vec<serde_json::Value> {
        let recent = self.recent.lock().unwrap_or_else(|e| e.into_inner());
        recent.iter().rev().map(|r| r.json.clone()).collect()
    }

    /// Passes what `subscription` (to `<prefix>.live.>`, [`subscribe`]) receives to the pages
    /// until `shutdown`, taking only what stream `stream` stored (see [`stored`]). A
    /// subscription that ends before is this task's failure: the daemon stops and is restarted
    /// rather than serve pages that get no live events.
    pub async fn follow(
        self: Arc<Self>,
        mut subscription: async_nats::Subscriber,
        prefix: String,
        stream: String,
        shutdown: CancellationToken,
    ) -> Result<(), SubscriptionEnded> {
        loop {
            let message = tokio::select! {
                _ = shutdown.cancelled() => return Ok(()),
                m = subscription.next() => m,
            };
            let Some(message) = message else {
                return Err(SubscriptionEnded);
            };
            let Some((seq, subject)) = stored(&message, &prefix, &stream) else {
                tracing::debug!(subject = %message.subject, "site page: not a stored event; ignored");
                continue;
            };
            self.received(seq);
            let json = match decode_any(&prefix, &subject, &message.payload) {
                // A host reusing an event id: the archive keeps one, the page shows one.
                Ok(Received::Event(event)) if !self.first_showing(event.id) => continue,
                Ok(Received::Event(mut event)) => {
                    // As ingest archives it: a time far ahead counts from its arrival.
                    event.clamp_time(SystemTime::now());
                    shape::event(seq, &event)
                }
                Ok(Received::Control(control)) => shape::control(seq, &control),
                Err(_) => continue, // kept in f2b_rejects by ingest, not shown
            };
            self.push(Item { seq, json });
        }
    }

    /// The page's event stream, or `None` when [`MAX_FOLLOWERS`] follow already.
    pub fn stream(self: &Arc<Self>, shutdown: CancellationToken) -> Option<Body> {
        let taken = self.followers.fetch_add(1, Ordering::SeqCst);
        let follower = Follower(self.clone());
        if taken >= MAX_FOLLOWERS {
            return None;
        }
        let receiver = self.sender.subscribe();
        let mut keepalive = tokio::time::interval(KEEPALIVE);
        keepalive.reset(); // the first tick would come at once
        let opening = futures::stream::once(async {
            Ok::<_, std::convert::Infallible>(Bytes::from_static(b"retry: 1500\n: following\n\n"))
        });
        let state = (receiver, keepalive, shutdown, follower);
        let events = futures::stream::unfold(state, |mut state| async move {
            let (receiver, keepalive, shutdown, _) = &mut state;
            let chunk = tokio::select! {
                _ = shutdown.cancelled() => return None,
                _ = keepalive.tick() => Bytes::from_static(b": keepalive\n\n"),
                update = receiver.recv() => match update {
                    Ok(Update::Event(item)) => Bytes::from(format!(
                        "id: {}\nevent: event\ndata: {}\n\n",
                        item.seq, item.json
                    )),
                    Ok(Update::Reload) | Err(broadcast::error::RecvError::Lagged(_)) => {
                        Bytes::from_static(b"event: lagged\ndata: {}\n\n")
                    }
                    Err(broadcast::error::RecvError::Closed) => return None,
                },
            };
            Some((Ok(chunk), state))
        });
        Some(Body::from_stream(opening.chain(events)))
    }
}

/// Subscribes to the live subject, before the archiver says it runs, so no event stored from
/// then on is missed.
pub async fn subscribe(
    client: &async_nats::Client,
    prefix: &str,
) -> Result<async_nats::Subscriber, async_nats::Error> {
    let subscription = client
        .subscribe(shared_f2b::subject::live_subjects(prefix))
        .await?;
    client.flush().await?;
    Ok(subscription)
}

/// Counts a page following; uncounted when its stream is dropped.
struct Follower(Arc<Live>);

impl Drop for Follower {
    fn drop(&mut self) {
        self.0.followers.fetch_sub(1, Ordering::SeqCst);
    }
}

/// The stream sequence and stored subject of a live message, when the server re-published it
/// from `stream`: the last `Nats-Stream` is the stream (a publisher may add its own headers,
/// the server's come last), and `Nats-Subject` is the subject the live one was made from. A
/// publish ack or a replay answer sent to a live subject as reply subject carries neither.
fn stored(message: &async_nats::Message, prefix: &str, stream: &str) -> Option<(u64, String)> {
    use async_nats::header::{NATS_SEQUENCE, NATS_STREAM, NATS_SUBJECT};
    let headers = message.headers.as_ref()?;
    let last = |name| headers.get_last(name).map(|v| v.as_str());
    let subject = shared_f2b::subject::stored_subject(prefix, &message.subject)?;
    (last(NATS_STREAM) == Some(stream) && last(NATS_SUBJECT) == Some(subject.as_str()))
        .then_some(())?;
    let seq = last(NATS_SEQUENCE)?.parse().ok()?;
    Some((seq, subject))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn keeps_the_latest_in_stream_order_once() {
        let live = Live::new();
        for seq in [3, 1, 2, 3] {
            live.push(Item {
                seq,
                json: serde_json::json!({"seq": seq}),
            });
        }
        let seqs: Vec<u64> = live
            .recent()
            .iter()
            .map(|j| j["seq"].as_u64().unwrap())
            .collect();
        assert_eq!(seqs, [3, 2, 1]);
        for seq in 10..100 {
            live.push(Item {
                seq,
                json: serde_json::json!({"seq": seq}),
            });
        }
        let recent = live.recent();
        assert_eq!(recent.len(), RECENT);
        assert_eq!(recent[0]["seq"], 99);
    }

    #[test]
    fn skipped_sequences_are_missed_until_the_archive_holds_them() {
        let live = Live::new();
        live.received(1);
        live.received(2);
        assert!(!live.missed(2));
        // 3 and 4 never arrived live.
        live.received(5);
        assert!(!live.missed(3), "the archive does not hold them yet");
        assert!(live.missed(4));
        assert!(!live.missed(5), "answered once");
        // Stored after the last one seen, never received live.
        assert!(live.missed(6));
        live.seen(6);
        assert!(!live.missed(6));
    }

    #[test]
    fn an_event_id_shows_once() {
        let live = Live::new();
        let id = uuid::Uuid::from_u128(7);
        assert!(live.first_showing(id));
        assert!(!live.first_showing(id));
    }

    #[tokio::test]
    async fn followers_are_capped_and_released() {
        let live = Live::new();
        let shutdown = CancellationToken::new();
        let streams: Vec<Body> = (0..MAX_FOLLOWERS)
            .map(|_| live.stream(shutdown.clone()).expect("below the cap"))
            .collect();
        assert!(live.stream(shutdown.clone()).is_none());
        drop(streams);
        assert!(live.stream(shutdown.clone()).is_some());
    }
}

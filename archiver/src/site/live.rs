//! The latest events as they arrive, for the site page: one plain subscription to the live
//! subject the stream re-publishes every stored event on (`<prefix>.live.>`, as the hosts
//! follow it), fanned out in process to every open page as server-sent events. A page costs no
//! query and no NATS subscription of its own.

use super::shape;
use axum::body::{Body, Bytes};
use futures::StreamExt;
use shared_f2b::inbound::{Received, decode_any};
use std::collections::VecDeque;
use std::sync::atomic::{AtomicUsize, Ordering};
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

/// One event as a page gets it.
#[derive(Debug)]
pub struct Item {
    pub seq: u64,
    pub json: serde_json::Value,
}

/// The fan-out and the latest events.
pub struct Live {
    sender: broadcast::Sender<Arc<Item>>,
    recent: Mutex<VecDeque<Arc<Item>>>,
    followers: AtomicUsize,
}

impl Live {
    pub fn new() -> Arc<Live> {
        Arc::new(Live {
            sender: broadcast::channel(BUFFER).0,
            recent: Mutex::new(VecDeque::with_capacity(RECENT + 1)),
            followers: AtomicUsize::new(0),
        })
    }

    /// Keeps `item` among the latest (in stream order, once) and sends it to the pages.
    pub fn push(&self, item: Item) {
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
        let _ = self.sender.send(item);
    }

    /// The latest events, newest first.
    pub fn recent(&self) -> Vec<serde_json::Value> {
        let recent = self.recent.lock().unwrap_or_else(|e| e.into_inner());
        recent.iter().rev().map(|r| r.json.clone()).collect()
    }

    /// Passes what `subscription` (to `<prefix>.live.>`, [`subscribe`]) receives to the pages
    /// until `shutdown`, taking only what stream `stream` stored (see [`stored`]).
    pub async fn follow(
        self: Arc<Self>,
        mut subscription: async_nats::Subscriber,
        prefix: String,
        stream: String,
        shutdown: CancellationToken,
    ) {
        loop {
            let message = tokio::select! {
                _ = shutdown.cancelled() => return,
                m = subscription.next() => m,
            };
            let Some(message) = message else {
                tracing::error!(
                    "site page: the live subscription ended; pages get no live events until a restart"
                );
                return;
            };
            let Some((seq, subject)) = stored(&message, &prefix, &stream) else {
                tracing::debug!(subject = %message.subject, "site page: not a stored event; ignored");
                continue;
            };
            let json = match decode_any(&prefix, &subject, &message.payload) {
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
                item = receiver.recv() => match item {
                    Ok(item) => Bytes::from(format!(
                        "id: {}\nevent: event\ndata: {}\n\n",
                        item.seq, item.json
                    )),
                    Err(broadcast::error::RecvError::Lagged(_)) => {
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

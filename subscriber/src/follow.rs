//! Following the stream: one ordered consumer per followed jail (nats-server 2.9 allows one
//! filter subject per consumer), resumed after the last applied sequence, merged into one stream.
//!
//! Ordered consumers are ephemeral and re-created by the client after a reconnect, so hosts need
//! no durable consumer on the server; the resume point lives in the subscriber's state.

use async_nats::jetstream::{self, consumer::DeliverPolicy, consumer::pull::OrderedConfig};
use futures::stream::{self, BoxStream, StreamExt};

/// One event to handle, from the stream or from an archive replay.
#[derive(Debug, Clone)]
pub struct Incoming {
    /// The state key whose cursor this message advances (`None` for replayed events).
    pub cursor_key: Option<String>,
    pub seq: u64,
    /// Messages still waiting on the server for this consumer.
    pub pending: u64,
    pub subject: String,
    pub payload: bytes::Bytes,
}

/// A message, or why the consumer failed.
pub type Item = Result<Incoming, String>;

fn incoming(key: &str, msg: jetstream::Message) -> Incoming {
    let (seq, pending) = msg
        .info()
        .map(|i| (i.stream_sequence, i.pending))
        .unwrap_or((0, 0));
    Incoming {
        cursor_key: Some(key.to_owned()),
        seq,
        pending,
        subject: msg.subject.to_string(),
        payload: msg.payload.clone(),
    }
}

/// The subject filter for one configured jail (`*` = every jail: no filter).
pub fn filter_subject(prefix: &str, jail: &str) -> String {
    if jail == "*" {
        String::new()
    } else {
        let token = shared_f2b::subject::encode_token(jail).expect("jails are validated");
        format!("{prefix}.*.{token}.*")
    }
}

/// The state key of a filter: tied to the stream, so a new stream starts afresh.
pub fn cursor_key(stream: &str, filter: &str) -> String {
    format!("{stream}:{}", if filter.is_empty() { ">" } else { filter })
}

/// Opens the consumers; `start(key)` gives the last applied sequence for a key, if any.
pub async fn follow(
    stream: &jetstream::stream::Stream,
    stream_name: &str,
    filters: &[String],
    start: impl Fn(&str) -> Option<u64>,
) -> Result<BoxStream<'static, Item>, String> {
    let mut streams = Vec::new();
    for filter in filters {
        let key = cursor_key(stream_name, filter);
        let deliver_policy = match start(&key) {
            Some(seq) => DeliverPolicy::ByStartSequence {
                start_sequence: seq + 1,
            },
            None => DeliverPolicy::All,
        };
        let consumer = stream
            .create_consumer(OrderedConfig {
                filter_subject: filter.clone(),
                deliver_policy,
                ..Default::default()
            })
            .await
            .map_err(|e| format!("cannot follow {key}: {e}"))?;
        let messages = consumer
            .messages()
            .await
            .map_err(|e| format!("cannot follow {key}: {e}"))?;
        streams.push(
            messages
                .map(move |m| match m {
                    Ok(msg) => Ok(incoming(&key, msg)),
                    Err(e) => Err(format!("{key}: {e}")),
                })
                .boxed(),
        );
    }
    Ok(stream::select_all(streams).boxed())
}

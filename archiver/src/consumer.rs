//! The archivers' durable consumer: what it must look like, and keeping it so. It is checked at
//! start and every minute; a consumer changed behind the archiver's back (a filter that would
//! silently skip events, `headers_only`, a `max_deliver` that drops them) or deleted is
//! restored, logged and counted, resuming after the last sequence it had acked.

use crate::metrics::Metrics;
use async_nats::jetstream::consumer::{self, AckPolicy, DeliverPolicy, pull};
use async_nats::jetstream::context::ConsumerInfoErrorKind;
use async_nats::jetstream::stream::Stream;
use std::time::Duration;
use tokio_util::sync::CancellationToken;

/// What failed about the archiver's durable consumer.
#[derive(Debug, thiserror::Error)]
pub enum ConsumerError {
    #[error("cannot read the consumer {name}: {error}")]
    Read {
        name: String,
        error: async_nats::Error,
    },
    #[error("cannot delete the changed consumer {name}: {error}")]
    Delete {
        name: String,
        error: async_nats::Error,
    },
    #[error("cannot re-create the consumer {name}: {error}")]
    Create {
        name: String,
        error: async_nats::Error,
    },
}

/// How often the consumer is checked.
pub const CHECK_EVERY: Duration = Duration::from_secs(60);

/// The durable consumer the archivers share.
pub fn config(name: &str) -> pull::Config {
    pull::Config {
        durable_name: Some(name.to_owned()),
        ack_policy: AckPolicy::Explicit,
        ack_wait: Duration::from_secs(30),
        max_ack_pending: 50_000,
        ..Default::default()
    }
}

/// What differs between the consumer's config and [`config`] (empty: nothing).
pub fn differences(have: &consumer::Config, want: &pull::Config) -> Vec<&'static str> {
    let mut out = Vec::new();
    if have.filter_subject != want.filter_subject {
        out.push("filter_subject");
    }
    if have.ack_policy != want.ack_policy {
        out.push("ack_policy");
    }
    if have.max_deliver > 0 {
        out.push("max_deliver");
    }
    if have.headers_only {
        out.push("headers_only");
    }
    if have.ack_wait != want.ack_wait {
        out.push("ack_wait");
    }
    if have.max_ack_pending != want.max_ack_pending {
        out.push("max_ack_pending");
    }
    if have.deliver_subject.is_some() {
        out.push("deliver_subject");
    }
    out
}

/// The stream sequence below which everything is in the database: the durable consumer's ack
/// floor (an archiver acks a message only after its batch committed, and a duplicate or a
/// reject is acked too, so there are no holes below it).
pub async fn committed(stream: &Stream, name: &str) -> Result<u64, ConsumerError> {
    let info = stream
        .consumer_info(name)
        .await
        .map_err(|e| ConsumerError::Read {
            name: name.to_owned(),
            error: e.into(),
        })?;
    Ok(info.ack_floor.stream_sequence)
}

/// Checks the consumer once, restoring it when changed or missing; `floor` is the last ack
/// floor seen, where a re-created consumer resumes. Returns the current ack floor.
pub async fn check(
    stream: &Stream,
    name: &str,
    floor: u64,
    metrics: &Metrics,
) -> Result<u64, ConsumerError> {
    let want = config(name);
    let info = match stream.consumer_info(name).await {
        Ok(info) => info,
        Err(e) if e.kind() == ConsumerInfoErrorKind::NotFound => {
            metrics.consumer_repairs.inc();
            tracing::error!(consumer = %name, resume_after = floor,
                "the archiver consumer is gone (deleted behind our back?); re-creating it");
            recreate(stream, name, floor).await?;
            return Ok(floor);
        }
        Err(e) => {
            return Err(ConsumerError::Read {
                name: name.to_owned(),
                error: e.into(),
            });
        }
    };
    let floor = info.ack_floor.stream_sequence.max(floor);
    let changed = differences(&info.config, &want);
    if changed.is_empty() {
        return Ok(floor);
    }
    metrics.consumer_repairs.inc();
    tracing::error!(consumer = %name, ?changed,
        "the archiver consumer was changed behind our back; restoring it");
    if let Err(e) = stream.create_consumer(want).await {
        tracing::warn!(consumer = %name, error = %e, "cannot update it in place; re-creating it");
        stream
            .delete_consumer(name)
            .await
            .map_err(|e| ConsumerError::Delete {
                name: name.to_owned(),
                error: e.into(),
            })?;
        recreate(stream, name, floor).await?;
    }
    Ok(floor)
}

async fn recreate(stream: &Stream, name: &str, floor: u64) -> Result<(), ConsumerError> {
    let mut cfg = config(name);
    if floor > 0 {
        cfg.deliver_policy = DeliverPolicy::ByStartSequence {
            start_sequence: floor + 1,
        };
    }
    stream
        .create_consumer(cfg)
        .await
        .map(|_| ())
        .map_err(|e| ConsumerError::Create {
            name: name.to_owned(),
            error: e.into(),
        })
}

/// Up to `want` stored messages from `start` on, through a short-lived consumer (no acks, in
/// memory, gone 10 s after its last use): the reads outside the archivers' durable consumer.
pub async fn read_from(
    stream: &Stream,
    start: u64,
    want: usize,
) -> Result<pull::Batch, async_nats::Error> {
    let reader = stream
        .create_consumer(pull::Config {
            deliver_policy: DeliverPolicy::ByStartSequence {
                start_sequence: start,
            },
            ack_policy: AckPolicy::None,
            inactive_threshold: Duration::from_secs(10),
            memory_storage: true,
            ..Default::default()
        })
        .await?;
    Ok(reader
        .fetch()
        .max_messages(want)
        .expires(Duration::from_secs(2))
        .messages()
        .await?)
}

/// Checks the consumer every [`CHECK_EVERY`] until `shutdown`.
pub async fn keep(stream: Stream, name: String, metrics: Metrics, shutdown: CancellationToken) {
    let mut floor = 0;
    loop {
        tokio::select! {
            _ = shutdown.cancelled() => return,
            _ = tokio::time::sleep(CHECK_EVERY) => {}
        }
        match check(&stream, &name, floor, &metrics).await {
            Ok(f) => floor = f,
            Err(e) => tracing::warn!(error = %e, "cannot check the archiver consumer now"),
        }
    }
}

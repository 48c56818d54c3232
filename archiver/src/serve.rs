//! Answering replay requests on `<prefix>.replay` (queue group, so one archiver answers each
//! page; pages are stateless, so any archiver can answer any page).

use crate::db::Db;
use crate::metrics::Metrics;
use crate::query;
use async_nats::jetstream::stream::Stream;
use futures::StreamExt;
use shared_f2b::replay::{
    MAX_PAGE, ReplayKind, ReplayPage, ReplayRequest, Replayed, replay_subject,
};
use std::time::SystemTime;
use tokio_util::sync::CancellationToken;

/// Serves until `shutdown`.
pub async fn run(
    db: Db,
    client: async_nats::Client,
    stream: Stream,
    prefix: String,
    consumer_name: String,
    metrics: Metrics,
    shutdown: CancellationToken,
) -> Result<(), async_nats::SubscribeError> {
    let mut requests = client
        .queue_subscribe(replay_subject(&prefix), "shared-f2b-archiver".into())
        .await?;
    loop {
        let msg = tokio::select! {
            _ = shutdown.cancelled() => return Ok(()),
            msg = requests.next() => msg,
        };
        let Some(msg) = msg else { return Ok(()) };
        let Some(reply) = msg.reply else { continue };
        metrics.replay_requests.inc();
        let page = match serde_json::from_slice::<ReplayRequest>(&msg.payload) {
            Ok(req) => answer(&db, &stream, &consumer_name, req).await,
            Err(e) => error_page(format!("bad replay request: {e}")),
        };
        let body = serde_json::to_vec(&page).expect("pages serialise");
        if let Err(e) = client.publish(reply, body.into()).await {
            tracing::warn!(error = %e, "cannot send a replay page");
        }
    }
}

fn error_page(error: String) -> ReplayPage {
    tracing::warn!(%error, "replay request not answered");
    ReplayPage {
        events: Vec::new(),
        high_seq: 0,
        total: 0,
        done: true,
        error: Some(error),
    }
}

/// Everything up to the consumer's ack floor is committed: that is where a replay may end.
async fn committed_seq(stream: &Stream, consumer_name: &str) -> Result<u64, String> {
    let info = stream
        .consumer_info(consumer_name)
        .await
        .map_err(|e| format!("cannot read the archiver consumer: {e}"))?;
    Ok(info.ack_floor.stream_sequence)
}

async fn answer(db: &Db, stream: &Stream, consumer_name: &str, req: ReplayRequest) -> ReplayPage {
    let first = req.until_seq.is_none();
    let high = match req.until_seq {
        Some(seq) => seq,
        None => match committed_seq(stream, consumer_name).await {
            Ok(seq) => seq,
            Err(e) => return error_page(e),
        },
    };
    let limit = req.limit.clamp(1, MAX_PAGE);
    let exclude = req.exclude_origin.as_deref();
    let now = SystemTime::now();
    let result = match req.kind {
        ReplayKind::Since => {
            let total = if first {
                query::since_count(db, &req.jails, exclude, req.after, high).await
            } else {
                Ok(0)
            };
            let page = query::since_page(db, &req.jails, exclude, req.after, high, limit).await;
            total.and_then(|t| {
                page.map(|p| (t, p.into_iter().map(|s| (s.seq, s)).collect::<Vec<_>>()))
            })
        }
        ReplayKind::Active => {
            let total = if first {
                query::active_count(db, now, &req.jails, exclude, high).await
            } else {
                Ok(0)
            };
            let page =
                query::active_page(db, now, &req.jails, exclude, req.after, high, limit).await;
            total.and_then(|t| {
                page.map(|p| (t, p.into_iter().map(|s| (s.row_id, s)).collect::<Vec<_>>()))
            })
        }
    };
    match result {
        Ok((total, rows)) => ReplayPage {
            done: rows.len() < limit,
            events: rows
                .into_iter()
                .map(|(cursor, s)| Replayed {
                    seq: s.seq,
                    cursor,
                    event: s.event,
                })
                .collect(),
            high_seq: high,
            total,
            error: None,
        },
        Err(e) => error_page(format!("database error: {e}")),
    }
}

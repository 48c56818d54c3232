//! Sending one event to JetStream and waiting for its ack.
//!
//! Used by the action (`shared-f2b-publish`) and by the subscriber daemon when it sends the
//! spool, so both treat a missing stream, a timeout and a refusal the same way.

use crate::config::NatsConfig;
use crate::event::Event;
use crate::nats::{Connection, ServerErrors, jetstream, stream_config};
use crate::subject::event_subject;
use async_nats::jetstream::context::PublishErrorKind;
use async_nats::jetstream::message::PublishMessage;
use std::time::Duration;
use thiserror::Error;

/// Why an event was not stored by the server. All but [`SendError::Refused`] are worth keeping
/// in the spool and trying again.
#[derive(Debug, Error)]
pub enum SendError {
    /// The server could not be reached or did not ack in time: worth spooling and retrying.
    #[error("no ack from NATS within {0:?}")]
    NoAck(Duration),
    /// The stream is missing and these credentials may not create it: worth spooling.
    #[error(
        "stream {stream} does not exist and could not be created ({reason}); ask the NATS admin to create it"
    )]
    NoStream { stream: String, reason: String },
    /// The server refused the publish (permissions): retrying will not help.
    #[error("NATS refused the publish: {0}")]
    Refused(String),
    /// Anything else the client reported.
    #[error("publish failed: {0}")]
    Other(String),
}

/// What the stream's ack said.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Stored {
    New,
    /// Its duplicate window knew the message id.
    Duplicate,
}

/// Publishes events on their subjects and waits for each ack.
pub struct Sender {
    js: async_nats::jetstream::Context,
    nats: NatsConfig,
    server_errors: ServerErrors,
    timeout: Duration,
}

impl Sender {
    /// A sender over an open connection; every ack wait is bounded by `timeout`.
    pub fn new(conn: &Connection, nats: &NatsConfig, timeout: Duration) -> Sender {
        Sender {
            js: jetstream(conn.client.clone(), timeout),
            nats: nats.clone(),
            server_errors: conn.server_errors.clone(),
            timeout,
        }
    }

    /// Publishes `event` with its id as `Nats-Msg-Id` and waits for the ack. Creates the stream
    /// if the server says no stream takes the subject.
    pub async fn send(&self, event: &Event) -> Result<(), SendError> {
        self.send_as(event, &event.id.to_string()).await.map(|_| ())
    }

    /// Sends `event` again because the archive lacks it (`core/src/confirm.rs`): when the
    /// stream's duplicate window still remembers its id (a seal purged it, `rewind.rs` in the
    /// archiver), under `<id>.<now in ms>` instead, which the stream stores; the archive and the
    /// hosts know it by its event id all the same.
    pub async fn resend(&self, event: &Event) -> Result<(), SendError> {
        let id = event.id.to_string();
        if self.send_as(event, &id).await? == Stored::Duplicate {
            let now = std::time::SystemTime::now()
                .duration_since(std::time::UNIX_EPOCH)
                .unwrap_or_default()
                .as_millis();
            tracing::debug!(%id, "the stream remembers the id of a lost event; sent under another");
            self.send_as(event, &format!("{id}.{now}")).await?;
        }
        Ok(())
    }

    async fn send_as(&self, event: &Event, msg_id: &str) -> Result<Stored, SendError> {
        match self.send_once(event, msg_id).await {
            Err(SendError::NoStream { .. }) => {
                self.create_stream().await?;
                self.send_once(event, msg_id).await
            }
            other => other,
        }
    }

    async fn send_once(&self, event: &Event, msg_id: &str) -> Result<Stored, SendError> {
        let subject = event_subject(
            &self.nats.subject_prefix,
            event.action,
            &event.jail,
            &event.origin,
        )
        .map_err(|e| SendError::Other(e.to_string()))?;
        let publish = PublishMessage::build()
            .payload(event.encode().into())
            .message_id(msg_id);
        let result = match self.js.send_publish(subject.clone(), publish).await {
            Ok(ack) => ack.await,
            Err(e) => Err(e),
        };
        let err = match result {
            Ok(ack) if ack.duplicate => return Ok(Stored::Duplicate),
            Ok(_) => return Ok(Stored::New),
            Err(err) => err,
        };
        // A publish the server refuses is never acked: the reason only arrives as a server
        // error on the connection, so look there before calling it a timeout.
        if let Some(reason) = self.server_errors.take()
            && reason.to_lowercase().contains("permissions violation")
        {
            return Err(SendError::Refused(reason));
        }
        Err(match err.kind() {
            PublishErrorKind::StreamNotFound => SendError::NoStream {
                stream: self.nats.stream.clone(),
                reason: "no stream captures this subject".into(),
            },
            PublishErrorKind::TimedOut | PublishErrorKind::BrokenPipe => {
                SendError::NoAck(self.timeout)
            }
            _ => SendError::Other(err.to_string()),
        })
    }

    /// Creates the stream if it does not exist (no-op when it does).
    pub async fn create_stream(&self) -> Result<(), SendError> {
        self.js
            .get_or_create_stream(stream_config(&self.nats))
            .await
            .map(|_| ())
            .map_err(|e| SendError::NoStream {
                stream: self.nats.stream.clone(),
                reason: e.to_string(),
            })
    }
}

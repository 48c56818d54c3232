//! Publishing one control event on its subject and waiting for the stream's ack.
//!
//! A publish the server refuses (a host's NATS user on a control subject) is never acked: the
//! server only sends `-ERR 'Permissions Violation for Publish to "…"'` on the connection, which
//! async-nats reports through its event callback (recorded in [`ServerErrors`]). So the ack is
//! awaited while watching for that error, and a refusal is told apart from a timeout.

use async_nats::jetstream::context::PublishErrorKind;
use async_nats::jetstream::message::PublishMessage;
use shared_f2b::config::NatsConfig;
use shared_f2b::control::Control;
use shared_f2b::nats::{Connection, ServerErrors, jetstream};
use shared_f2b::subject::{SubjectError, control_subject};
use std::time::Duration;
use thiserror::Error;

/// How often the connection's server errors are looked at while the ack is awaited.
const WATCH: Duration = Duration::from_millis(20);

/// Why a control event was not stored.
#[derive(Debug, Error)]
pub enum PublishError {
    /// The server refused it (permissions); the text is the server's.
    #[error("NATS refused the publish: {0}")]
    Refused(String),
    #[error("no stream captures {subject} (is the archiver running? it creates stream {stream})")]
    NoStream { subject: String, stream: String },
    #[error("no ack from NATS within {0:?}; the order may not have been stored")]
    NoAck(Duration),
    #[error("cannot name the subject: {0}")]
    Subject(#[from] SubjectError),
    #[error("publish failed: {0}")]
    Other(String),
}

/// The stream's ack.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Stored {
    pub seq: u64,
    /// The stream had it already (same id within the duplicate window).
    pub duplicate: bool,
}

/// The server's words without the client's `nats: ` prefix.
fn server_text(error: &str) -> &str {
    error.strip_prefix("nats: ").unwrap_or(error)
}

fn is_permissions_violation(error: &str) -> bool {
    error.to_lowercase().contains("permissions violation")
}

/// Whether a refusal is about publishing (rather than, say, subscribing to the reply inbox).
pub fn refused_publish(reason: &str) -> bool {
    reason.to_lowercase().contains("for publish to")
}

/// A permissions violation the server reported on this connection, if any.
fn refusal(errors: &ServerErrors) -> Option<String> {
    errors
        .take()
        .filter(|e| is_permissions_violation(e))
        .map(|e| server_text(&e).to_owned())
}

/// Publishes `control` with its id as `Nats-Msg-Id` and waits up to `timeout` for the ack.
pub async fn publish(
    conn: &Connection,
    nats: &NatsConfig,
    control: &Control,
    timeout: Duration,
) -> Result<Stored, PublishError> {
    let subject = control_subject(&nats.subject_prefix, control.kind, &control.operator)?;
    let js = jetstream(conn.client.clone(), timeout);
    let message = PublishMessage::build()
        .payload(control.encode().into())
        .message_id(control.id.to_string());
    let sent_to = subject.clone();
    let ack = async move {
        match js.send_publish(sent_to, message).await {
            Ok(ack) => ack.await,
            Err(e) => Err(e),
        }
    };
    tokio::pin!(ack);
    let mut watch = tokio::time::interval(WATCH);
    let result = loop {
        tokio::select! {
            result = &mut ack => break result,
            _ = watch.tick() => {
                if let Some(reason) = refusal(&conn.server_errors) {
                    return Err(PublishError::Refused(reason));
                }
            }
        }
    };
    match result {
        Ok(ack) => Ok(Stored {
            seq: ack.sequence,
            duplicate: ack.duplicate,
        }),
        Err(e) => {
            if let Some(reason) = refusal(&conn.server_errors) {
                return Err(PublishError::Refused(reason));
            }
            Err(match e.kind() {
                PublishErrorKind::StreamNotFound => PublishError::NoStream {
                    subject,
                    stream: nats.stream.clone(),
                },
                PublishErrorKind::TimedOut | PublishErrorKind::BrokenPipe => {
                    PublishError::NoAck(timeout)
                }
                _ => PublishError::Other(e.to_string()),
            })
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn refusals_are_recognised() {
        let errors = ServerErrors::default();
        assert_eq!(refusal(&errors), None);
        let text = r#"nats: Permissions Violation for Publish to "f2b.control.pardon.alice""#;
        assert!(is_permissions_violation(text));
        assert_eq!(
            server_text(text),
            r#"Permissions Violation for Publish to "f2b.control.pardon.alice""#
        );
        assert!(refused_publish(server_text(text)));
        assert!(!refused_publish(
            r#"Permissions Violation for Subscription to "_INBOX.>""#
        ));
        assert!(!is_permissions_violation("nats: maximum payload exceeded"));
    }
}

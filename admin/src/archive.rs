//! Asking the archiver what is in force: the `controls` replay on `<prefix>.replay`, every page.

use async_nats::{Client, RequestErrorKind};
use shared_f2b::replay::{
    MAX_PAGE, ReplayKind, ReplayPage, ReplayRequest, ReplayedControl, replay_subject,
};
use std::time::Duration;
use thiserror::Error;

/// Why the archiver could not say.
#[derive(Debug, Error)]
pub enum ArchiveError {
    #[error("no archiver answers on {0} (is shared-f2b-archiver running?)")]
    NoArchiver(String),
    #[error("the archiver did not answer on {subject} within {timeout:?}")]
    Timeout { subject: String, timeout: Duration },
    #[error("cannot ask the archiver on {subject}: {reason}")]
    Request { subject: String, reason: String },
    #[error("the archiver could not answer: {0}")]
    Answer(String),
    #[error("the archiver's answer is not a replay page: {0}")]
    Malformed(String),
    #[error("the archiver's pages do not advance (stuck after row {0})")]
    Stuck(u64),
}

/// The request for the page after row `after` (0: the first), up to `until_seq` once known.
fn request(after: u64, until_seq: Option<u64>) -> ReplayRequest {
    ReplayRequest {
        kind: ReplayKind::Controls,
        jails: vec!["*".to_owned()],
        exclude_origin: None,
        after,
        until_seq,
        limit: MAX_PAGE,
        since_ms: None,
        local: false,
        intel: false,
        ids: Vec::new(),
    }
}

/// Every control event in force now (pardons, allows, operator bans), in archive order.
pub async fn in_force(
    client: &Client,
    prefix: &str,
    timeout: Duration,
) -> Result<Vec<ReplayedControl>, ArchiveError> {
    let subject = replay_subject(prefix);
    let mut all = Vec::new();
    let (mut after, mut until_seq) = (0, None);
    loop {
        let body = serde_json::to_vec(&request(after, until_seq)).expect("requests serialise");
        let reply = client
            .request(subject.clone(), body.into())
            .await
            .map_err(|e| match e.kind() {
                RequestErrorKind::NoResponders => ArchiveError::NoArchiver(subject.clone()),
                RequestErrorKind::TimedOut => ArchiveError::Timeout {
                    subject: subject.clone(),
                    timeout,
                },
                _ => ArchiveError::Request {
                    subject: subject.clone(),
                    reason: e.to_string(),
                },
            })?;
        let page: ReplayPage = serde_json::from_slice(&reply.payload)
            .map_err(|e| ArchiveError::Malformed(e.to_string()))?;
        if let Some(error) = page.error {
            return Err(ArchiveError::Answer(error));
        }
        all.extend(page.controls);
        if page.done {
            return Ok(all);
        }
        if page.next <= after {
            return Err(ArchiveError::Stuck(after));
        }
        after = page.next;
        until_seq = Some(page.high_seq);
    }
}

//! `misp-push`: the feed's events sent to a MISP instance's REST API.

use super::event::{event_uuid, newest_received, render_event};
use super::{Day, Days, MispError};
use crate::db::Db;
use ipnet::IpNet;
use shared_f2b::config::MispConfig;
use std::io::Read;
use std::path::Path;
use std::time::{Duration, SystemTime};

/// A MISP instance's REST API and the key to it (never shown in `Debug`).
pub struct Target {
    url: String,
    key: String,
}

impl std::fmt::Debug for Target {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Target")
            .field("url", &self.url)
            .field("key", &"<hidden>")
            .finish()
    }
}

/// Whether `url` may carry an API key: https://, or http:// to this machine only.
fn check_url(url: &str) -> Result<String, MispError> {
    if !shared_f2b::intake::secure_url(url) {
        return Err(MispError::Url(url.to_owned()));
    }
    Ok(url.trim_end_matches('/').to_owned())
}

impl Target {
    /// The instance's address (no trailing slash).
    pub fn url(&self) -> &str {
        &self.url
    }

    /// The API key, for the `Authorization` header.
    pub fn key(&self) -> &str {
        &self.key
    }

    /// The instance at `url` (https://, or http:// to 127.0.0.1 or localhost) with the API key
    /// held in `key_file` (surrounding whitespace trimmed).
    pub fn new(url: &str, key_file: &Path) -> Result<Target, MispError> {
        let url = check_url(url)?;
        let key = std::fs::read_to_string(key_file).map_err(|source| MispError::KeyFile {
            path: key_file.to_owned(),
            source,
        })?;
        let key = key.trim();
        if key.is_empty() {
            return Err(MispError::EmptyKey(key_file.to_owned()));
        }
        if key.chars().any(|c| c.is_whitespace() || c.is_control()) {
            return Err(MispError::KeyFile {
                path: key_file.to_owned(),
                source: std::io::Error::new(
                    std::io::ErrorKind::InvalidData,
                    "the key is one line without spaces",
                ),
            });
        }
        Ok(Target {
            url,
            key: key.to_owned(),
        })
    }
}

/// What a push did.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct PushSummary {
    /// Days with bans sent.
    pub days: u64,
    /// Events MISP did not have.
    pub created: u64,
    /// Events MISP had and took the newer version of.
    pub updated: u64,
    /// Events MISP already had as they are.
    pub unchanged: u64,
    /// Bans in the days sent.
    pub bans: u64,
}

/// What MISP did with one event.
enum Outcome {
    Created,
    Updated,
    Unchanged,
}

/// One POST; the status and the start of the answer.
fn post(
    agent: &ureq::Agent,
    target: &Target,
    url: &str,
    body: &[u8],
) -> Result<(u16, String), MispError> {
    let transport = |e: ureq::Error| MispError::Transport {
        url: url.to_owned(),
        detail: e.to_string(),
    };
    let mut response = agent
        .post(url)
        .header("Authorization", &target.key)
        .header("Accept", "application/json")
        .header("Content-Type", "application/json")
        .send(body)
        .map_err(transport)?;
    let status = response.status().as_u16();
    let mut text = Vec::new();
    // MISP answers with the whole event; the first 4 KiB say what went wrong, if anything.
    let _ = response
        .body_mut()
        .as_reader()
        .take(4096)
        .read_to_end(&mut text);
    Ok((status, String::from_utf8_lossy(&text).into_owned()))
}

/// Adds the event; if MISP has it already (it answers "Event already exists", 403 or 404 by
/// version), edits it by uuid. An edit MISP refuses as "not newer than the local copy" means
/// it holds this version already.
fn send_event(
    agent: &ureq::Agent,
    target: &Target,
    uuid: &str,
    body: &[u8],
) -> Result<Outcome, MispError> {
    let add = format!("{}/events/add", target.url);
    let (status, text) = post(agent, target, &add, body)?;
    if (200..300).contains(&status) {
        return Ok(Outcome::Created);
    }
    if !(matches!(status, 403 | 404) && text.contains("already exists")) {
        return Err(MispError::Refused {
            url: add,
            status,
            body: text,
        });
    }
    let edit = format!("{}/events/edit/{uuid}", target.url);
    let (status, text) = post(agent, target, &edit, body)?;
    if text.contains("not newer than the local copy") {
        Ok(Outcome::Unchanged)
    } else if (200..300).contains(&status) {
        Ok(Outcome::Updated)
    } else {
        Err(MispError::Refused {
            url: edit,
            status,
            body: text,
        })
    }
}

/// Sends the events of every day with bans from `since`'s day on to the MISP instance (oldest
/// first; stops at the first refusal). Untested against a live MISP: the requests follow MISP's
/// REST API (`/events/add`, then `/events/edit/<uuid>` for an event it has). Bans of addresses
/// `never` (`[archiver] feed_allowlist`) covers are left out, as in the feed.
pub async fn push(
    db: &Db,
    misp: &MispConfig,
    never: &[IpNet],
    target: &Target,
    since: SystemTime,
) -> Result<PushSummary, MispError> {
    let agent: ureq::Agent = ureq::Agent::config_builder()
        .http_status_as_error(false)
        .max_redirects(0)
        .timeout_connect(Some(Duration::from_secs(15)))
        .timeout_global(Some(Duration::from_secs(600)))
        .tls_config(
            ureq::tls::TlsConfig::builder()
                .root_certs(ureq::tls::RootCerts::PlatformVerifier)
                .build(),
        )
        .build()
        .into();
    let target = std::sync::Arc::new(Target {
        url: target.url.clone(),
        key: target.key.clone(),
    });
    let mut days = Days::new(db, Day::of(since).start(), never);
    let mut summary = PushSummary::default();
    while let Some((day, bans)) = days.next().await? {
        let event = render_event(misp, day, &bans, newest_received(&bans));
        let body = serde_json::to_vec(&event).expect("JSON values serialise");
        let uuid = event_uuid(misp, day).to_string();
        let (agent, target) = (agent.clone(), target.clone());
        let outcome =
            tokio::task::spawn_blocking(move || send_event(&agent, &target, &uuid, &body))
                .await
                .expect("the MISP request does not panic")?;
        match outcome {
            Outcome::Created => summary.created += 1,
            Outcome::Updated => summary.updated += 1,
            Outcome::Unchanged => summary.unchanged += 1,
        }
        summary.days += 1;
        summary.bans += bans.len() as u64;
        tracing::debug!(%day, bans = bans.len(), "sent to MISP");
    }
    Ok(summary)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn urls_that_would_leak_the_key_are_refused() {
        for good in [
            "https://misp.example.org",
            "https://misp.example.org:8443/",
            "http://127.0.0.1:8080",
            "http://localhost/",
            "http://[::1]:80",
        ] {
            assert!(check_url(good).is_ok(), "{good}");
        }
        assert_eq!(
            check_url("https://m.example/").unwrap(),
            "https://m.example"
        );
        for bad in [
            "http://misp.example.org",
            "http://127.0.0.1.evil.example",
            "http://localhost@evil.example",
            "ftp://misp.example.org",
            "misp.example.org",
            "https://",
        ] {
            assert!(check_url(bad).is_err(), "{bad}");
        }
    }

    #[test]
    fn key_files_are_trimmed_and_must_hold_a_key() {
        let dir = tempfile::tempdir().unwrap();
        let file = dir.path().join("key");
        std::fs::write(&file, "  abc123\n").unwrap();
        let target = Target::new("https://misp.example.org", &file).unwrap();
        assert_eq!(target.key, "abc123");
        assert!(!format!("{target:?}").contains("abc123"));
        std::fs::write(&file, " \n").unwrap();
        assert!(matches!(
            Target::new("https://misp.example.org", &file),
            Err(MispError::EmptyKey(_))
        ));
        assert!(matches!(
            Target::new("https://misp.example.org", &dir.path().join("none")),
            Err(MispError::KeyFile { .. })
        ));
    }
}

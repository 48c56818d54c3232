//! Getting a source's text: a file (a path or `file://`), or an HTTP(S) URL with TLS checked
//! against the system's store; for MISP, the `restSearch` request with the key. Blocking
//! (ureq): called from `spawn_blocking`.

use super::IntakeError;
use crate::misp::Target;
use serde_json::{Value, json};
use shared_f2b::intake::IntakeConfig;
use std::path::Path;
use std::time::Duration;

/// The most a source may answer (a 100,000-entry list is about 1.5 MB; a MISP answer with
/// 100,000 attributes in context some 60 MB).
const MAX_BODY: u64 = 64 * 1024 * 1024;

/// An agent: the system's root store, no redirects, bounded waits.
pub fn agent() -> ureq::Agent {
    ureq::Agent::config_builder()
        .max_redirects(0)
        .timeout_connect(Some(Duration::from_secs(15)))
        .timeout_global(Some(Duration::from_secs(300)))
        .tls_config(
            ureq::tls::TlsConfig::builder()
                .root_certs(ureq::tls::RootCerts::PlatformVerifier)
                .build(),
        )
        .build()
        .into()
}

fn is_url(location: &str) -> bool {
    location.starts_with("https://") || location.starts_with("http://")
}

/// The text at `location` (a URL, `file://PATH` or a path).
pub fn text(agent: &ureq::Agent, location: &str) -> Result<String, IntakeError> {
    if !is_url(location) {
        let path = location.strip_prefix("file://").unwrap_or(location);
        return std::fs::read_to_string(Path::new(path)).map_err(|e| IntakeError::Fetch {
            url: location.to_owned(),
            detail: e.to_string(),
        });
    }
    let failed = |e: ureq::Error| IntakeError::Fetch {
        url: location.to_owned(),
        detail: e.to_string(),
    };
    agent
        .get(location)
        .call()
        .map_err(failed)?
        .body_mut()
        .with_config()
        .limit(MAX_BODY)
        .read_to_string()
        .map_err(failed)
}

/// `location` and `name` joined as the feed's files are (`<url>/<name>` or `<dir>/<name>`).
pub fn beside(location: &str, name: &str) -> String {
    format!("{}/{name}", location.trim_end_matches('/'))
}

/// JSON at `location`.
pub fn json(agent: &ureq::Agent, location: &str) -> Result<Value, IntakeError> {
    let text = text(agent, location)?;
    serde_json::from_str(&text).map_err(|e| IntakeError::Parse {
        url: location.to_owned(),
        detail: e.to_string(),
    })
}

/// The body of a `restSearch` for `source`: the address types, and the filters MISP applies
/// itself (they are applied again to what comes back).
pub fn rest_search_body(source: &IntakeConfig) -> Value {
    let mut body = json!({
        "returnFormat": "json",
        "type": super::parse::TYPES,
        "includeEventTags": true,
        "includeContext": true,
    });
    if source.to_ids {
        body["to_ids"] = json!(true);
    }
    if !source.tags.is_empty() {
        body["tags"] = json!(source.tags);
    }
    if let Some(published) = source.published {
        body["published"] = json!(published);
    }
    if let Some(last) = source.last {
        body["last"] = json!(format!("{}m", last.as_secs().div_ceil(60)));
    }
    body
}

/// `POST <url>/attributes/restSearch` with the key from `key_file`.
pub fn rest_search(agent: &ureq::Agent, source: &IntakeConfig) -> Result<Value, IntakeError> {
    let key_file = source.key_file.as_deref().unwrap_or(Path::new(""));
    let target = Target::new(&source.url, key_file).map_err(|e| IntakeError::Fetch {
        url: source.url.clone(),
        detail: e.to_string(),
    })?;
    let url = format!("{}/attributes/restSearch", target.url());
    let failed = |e: ureq::Error| IntakeError::Fetch {
        url: url.clone(),
        detail: e.to_string(),
    };
    let text = agent
        .post(&url)
        .header("Authorization", target.key())
        .header("Accept", "application/json")
        .header("Content-Type", "application/json")
        .send(rest_search_body(source).to_string())
        .map_err(failed)?
        .body_mut()
        .with_config()
        .limit(MAX_BODY)
        .read_to_string()
        .map_err(failed)?;
    serde_json::from_str(&text).map_err(|e| IntakeError::Parse {
        url,
        detail: e.to_string(),
    })
}

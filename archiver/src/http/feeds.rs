//! The blocklist feeds for firewalls, Zeek and other sites, and an address's history:
//!
//! - `GET /v1/blocklist?format=plain|csv|json|nftables|ipset|mikrotik|zeek[&jail=J]
//!   [&min_reporters=N][&family=4|6][&name=N][&intel=0]`: the bans active now
//!   ([`crate::blocklist`]); `intel=0` leaves out what only intake sources list;
//! - `GET /v1/history?ip=ADDR[&limit=N]`: the address's archived events, newest first (JSON).
//!
//! Lists carry a strong `ETag` (a digest of the body) and answer `If-None-Match` with 304;
//! gzip when the client accepts it. A rendered list is kept until the archive moves on (the
//! committed mark, [`super::shared`]) or a ban in it ends, so a poll while nothing changed
//! costs no database query.

use super::error::HttpError;
use super::params::{self, BadParameter};
use super::shared::Shared;
use crate::blocklist::format::{self, Format, Naming, check_list_name};
use crate::blocklist::{Family, Filter};
use crate::query::{self, HistoryFilter};
use crate::text::{digest, hex};
use axum::body::Body;
use axum::extract::{Query, State};
use axum::http::{HeaderMap, HeaderValue, StatusCode, header};
use axum::response::{IntoResponse, Response};
use axum::routing::get;
use flate2::Compression;
use flate2::write::GzEncoder;
use std::collections::HashMap;
use std::io::Write;
use std::sync::{Arc, Mutex, OnceLock};
use std::time::SystemTime;

/// Rendered lists kept at most (one per format, filter and name asked for), and their bytes
/// at most (gzip included): a token holder asking for many variants cannot fill the memory.
const RENDERED_MAX: usize = 64;
const RENDERED_BYTES: usize = 8 << 20;
/// The most history rows one request returns.
const HISTORY_MAX: u64 = 1000;

/// What a list request asks for.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
struct ListRequest {
    format: Format,
    filter: Filter,
    name: String,
}

/// Parses `/v1/blocklist`'s parameters.
fn list_request(pairs: &[(String, String)]) -> Result<ListRequest, BadParameter> {
    let seen = params::parameters(
        pairs,
        &["format", "jail", "min_reporters", "family", "name", "intel"],
    )?;
    let format = match seen.get("format") {
        None => Format::Plain,
        Some(word) => Format::parse(word).ok_or_else(|| {
            BadParameter::value(
                "format",
                word,
                "use plain, csv, json, nftables, ipset, mikrotik or zeek",
            )
        })?,
    };
    let min_reporters = match seen.get("min_reporters") {
        None => 1,
        Some(n) => n
            .parse()
            .map_err(|_| BadParameter::value("min_reporters", n, "use a number from 1 to 1000"))?,
    };
    let filter = Filter {
        jail: seen.get("jail").map(|j| j.to_string()),
        min_reporters,
        family: seen.get("family").map(|f| Family::parse(f)).transpose()?,
        intel: match seen.get("intel") {
            None | Some(&"1") => true,
            Some(&"0") => false,
            Some(other) => return Err(BadParameter::value("intel", other, "use 0 or 1")),
        },
    };
    filter.check()?;
    let mut name = seen.get("name").unwrap_or(&"shared-f2b").to_string();
    check_list_name(&name)?;
    if !format.uses_name() {
        name = Naming::default().name; // one rendering whatever name was given
    }
    Ok(ListRequest {
        format,
        filter,
        name,
    })
}

/// A list as sent: kept while the snapshot is at `generation` and nothing in it ended.
struct Rendered {
    generation: u64,
    valid_until: Option<SystemTime>,
    etag: String,
    body: axum::body::Bytes,
    gzip: OnceLock<axum::body::Bytes>,
}

impl Rendered {
    fn fresh(&self, generation: u64, now: SystemTime) -> bool {
        self.generation == generation && self.valid_until.is_none_or(|end| now < end)
    }

    /// Bytes it holds, its gzip form counted before it is made (a quarter of the body).
    fn size(&self) -> usize {
        self.body.len() + self.gzip.get().map_or(self.body.len() / 4, |g| g.len())
    }

    fn gzipped(&self) -> &axum::body::Bytes {
        self.gzip.get_or_init(|| {
            let mut encoder = GzEncoder::new(Vec::new(), Compression::fast());
            encoder.write_all(&self.body).expect("writes to memory");
            encoder.finish().expect("writes to memory").into()
        })
    }
}

/// The feeds' state: the shared reading of the archive and the lists rendered from it.
pub struct Feeds {
    shared: Arc<Shared>,
    /// Where each address's history can be read (Zeek's `meta.url`).
    public_url: Option<String>,
    rendered: Mutex<HashMap<ListRequest, Arc<Rendered>>>,
}

impl Feeds {
    pub fn new(shared: Arc<Shared>, public_url: Option<String>) -> Feeds {
        Feeds {
            shared,
            public_url,
            rendered: Mutex::new(HashMap::new()),
        }
    }

    /// The list as rendered now, rendering it when the archive moved on or an entry ended.
    async fn list(&self, request: &ListRequest) -> Result<Arc<Rendered>, HttpError> {
        let snapshot = self.shared.snapshot().await?;
        let now = SystemTime::now();
        let generation = snapshot.generation();
        if let Some(kept) = self
            .rendered
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
            .get(request)
            && kept.fresh(generation, now)
        {
            return Ok(kept.clone());
        }
        let naming = Naming {
            name: request.name.clone(),
            public_url: self.public_url.clone(),
        };
        // Listing and rendering 100,000 entries takes tens of milliseconds: off the threads
        // that run ingest and the other requests.
        let (body, valid_until) = tokio::task::block_in_place(|| {
            let (list, valid_until) = snapshot.list(now, &request.filter);
            (format::render(request.format, &list, &naming), valid_until)
        });
        drop(snapshot);
        let etag = format!("\"{}\"", hex(&digest(body.as_bytes())));
        let rendered = Arc::new(Rendered {
            generation,
            valid_until,
            etag,
            // Exactly its length (the rendering grew its buffer in steps).
            body: body.into_bytes().into_boxed_slice().into(),
            gzip: OnceLock::new(),
        });
        let mut kept = self
            .rendered
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner);
        kept.retain(|_, r| r.fresh(generation, now));
        let bytes: usize = kept.values().map(|r| r.size()).sum();
        if kept.len() >= RENDERED_MAX || bytes + rendered.size() > RENDERED_BYTES {
            kept.clear();
        }
        kept.insert(request.clone(), rendered.clone());
        Ok(rendered)
    }
}

/// The feeds' routes (behind the token layer, [`super::auth`]).
pub fn routes(feeds: Arc<Feeds>) -> axum::Router {
    axum::Router::new()
        .route("/v1/blocklist", get(blocklist))
        .route("/v1/history", get(history))
        .with_state(feeds)
}

/// Whether the client takes gzip (`Accept-Encoding`): as it names `gzip`, else as it names
/// `*`; a `q=0` refuses.
fn accepts_gzip(headers: &HeaderMap) -> bool {
    let Some(accepted) = headers
        .get(header::ACCEPT_ENCODING)
        .and_then(|h| h.to_str().ok())
    else {
        return false;
    };
    let weight = |wanted: &str| {
        accepted.split(',').find_map(|item| {
            let mut parts = item.split(';').map(str::trim);
            let coding = parts.next().unwrap_or_default();
            coding.eq_ignore_ascii_case(wanted).then(|| {
                parts
                    .find_map(|p| p.strip_prefix("q=").and_then(|q| q.parse::<f32>().ok()))
                    .unwrap_or(1.0)
            })
        })
    };
    weight("gzip")
        .or_else(|| weight("*"))
        .is_some_and(|q| q > 0.0)
}

/// Whether `If-None-Match` names `etag` (or is `*`); weak tags compare by their value.
fn not_modified(headers: &HeaderMap, etag: &str) -> bool {
    headers
        .get_all(header::IF_NONE_MATCH)
        .iter()
        .filter_map(|h| h.to_str().ok())
        .flat_map(|h| h.split(','))
        .map(|tag| tag.trim().trim_start_matches("W/"))
        .any(|tag| tag == "*" || tag == etag)
}

async fn blocklist(
    State(feeds): State<Arc<Feeds>>,
    headers: HeaderMap,
    Query(pairs): Query<Vec<(String, String)>>,
) -> Result<Response, HttpError> {
    let request = list_request(&pairs)?;
    let rendered = feeds.list(&request).await?;
    let gzip = accepts_gzip(&headers);
    // One representation per encoding, each with its own strong tag.
    let etag = if gzip {
        format!("{}-gzip\"", rendered.etag.trim_end_matches('"'))
    } else {
        rendered.etag.clone()
    };
    let mut response = if not_modified(&headers, &etag) {
        StatusCode::NOT_MODIFIED.into_response()
    } else if gzip {
        let gzipped = tokio::task::block_in_place(|| rendered.gzipped().clone());
        let mut r = Body::from(gzipped).into_response();
        r.headers_mut()
            .insert(header::CONTENT_ENCODING, HeaderValue::from_static("gzip"));
        r
    } else {
        Body::from(rendered.body.clone()).into_response()
    };
    let h = response.headers_mut();
    h.insert(
        header::CONTENT_TYPE,
        HeaderValue::from_static(request.format.content_type()),
    );
    h.insert(
        header::ETAG,
        HeaderValue::from_str(&etag).expect("hex and quotes"),
    );
    h.insert(header::CACHE_CONTROL, HeaderValue::from_static("no-cache"));
    h.insert(
        header::VARY,
        HeaderValue::from_static("Accept-Encoding, Authorization"),
    );
    Ok(response)
}

async fn history(
    State(feeds): State<Arc<Feeds>>,
    Query(pairs): Query<Vec<(String, String)>>,
) -> Result<Response, HttpError> {
    let p = params::parameters(&pairs, &["ip", "limit"])?;
    let filter = HistoryFilter {
        ip: Some(params::ip(p.get("ip"))?),
        limit: params::number(p.get("limit"), "limit", 1..=HISTORY_MAX, 100)? as i64,
        ..HistoryFilter::default()
    };
    let rows = query::history(&feeds.shared.db, &filter).await?;
    let body = serde_json::to_string(&crate::report::history_json(&rows)).expect("serialises");
    Ok(([(header::CONTENT_TYPE, "application/json")], body).into_response())
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::http::params::pairs;

    #[test]
    fn parameters_are_checked() {
        let r = list_request(&pairs(&[
            ("format", "nftables"),
            ("jail", "sshd"),
            ("min_reporters", "2"),
            ("family", "6"),
        ]))
        .unwrap();
        assert_eq!(r.format, Format::Nftables);
        assert_eq!(r.filter.min_reporters, 2);
        assert_eq!(r.filter.family, Some(Family::V6));
        assert_eq!(list_request(&[]).unwrap().format, Format::Plain);
        for (bad, says) in [
            (vec![("format", "xml")], "format \"xml\""),
            (vec![("format", "misp-feed")], "format"),
            (vec![("min_reporters", "0")], "min_reporters 0"),
            (vec![("min_reporters", "x")], "min_reporters \"x\""),
            (vec![("family", "5")], "family \"5\""),
            (vec![("jail", "a b")], "jail"),
            (vec![("name", "x;y")], "name"),
            (vec![("jail", "a"), ("jail", "b")], "twice"),
            (vec![("limit", "5")], "unknown parameter \"limit\""),
        ] {
            let e = list_request(&pairs(&bad)).unwrap_err().to_string();
            assert!(e.contains(says), "{bad:?}: {e}");
        }
    }

    #[test]
    fn encodings_and_tags() {
        let mut h = HeaderMap::new();
        assert!(!accepts_gzip(&h));
        h.insert(
            header::ACCEPT_ENCODING,
            "deflate, gzip;q=0.5".parse().unwrap(),
        );
        assert!(accepts_gzip(&h));
        h.insert(header::ACCEPT_ENCODING, "gzip;q=0, br".parse().unwrap());
        assert!(!accepts_gzip(&h));
        h.insert(header::ACCEPT_ENCODING, "gzip;q=0, *".parse().unwrap());
        assert!(!accepts_gzip(&h));
        h.insert(header::ACCEPT_ENCODING, "*;q=1, gzip;q=0".parse().unwrap());
        assert!(!accepts_gzip(&h));
        h.insert(header::ACCEPT_ENCODING, "br, *".parse().unwrap());
        assert!(accepts_gzip(&h));
        h.insert(header::IF_NONE_MATCH, "\"a\", W/\"b\"".parse().unwrap());
        assert!(not_modified(&h, "\"b\""));
        assert!(!not_modified(&h, "\"c\""));
    }
}

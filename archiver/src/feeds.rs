//! The archiver's read-only HTTP listener (`[archiver] http_listen`, off by default): the
//! blocklist feeds for firewalls, Zeek and other sites, and an address's history.
//!
//! - `GET /v1/blocklist?format=plain|csv|json|nftables|ipset|mikrotik|zeek[&jail=J]
//!   [&min_reporters=N][&family=4|6][&name=N]`: the bans active now ([`crate::blocklist`]);
//! - `GET /v1/history?ip=ADDR[&limit=N]`: the address's archived events, newest first (JSON).
//!
//! With `http_tokens` set, every request needs `Authorization: Bearer <one of them>` (compared
//! in constant time). Lists carry a strong `ETag` (a digest of the body) and answer
//! `If-None-Match` with 304; gzip when the client accepts it. A rendered list is kept until the
//! archive moves on (the archiver consumer's ack floor: everything below it is committed) or a
//! ban in it ends, so a poll while nothing changed costs no database query.

use crate::blocklist::{Family, Filter, Snapshot};
use crate::db::Db;
use crate::metrics::Metrics;
use crate::query::{self, HistoryFilter};
use crate::report::{self, Format, Naming, check_list_name, hex};
use crate::site::{self, Site};
use async_nats::jetstream::stream::Stream;
use axum::body::Body;
use axum::extract::{Query, State};
use axum::http::{HeaderMap, HeaderValue, StatusCode, header};
use axum::response::{IntoResponse, Response};
use axum::routing::get;
use flate2::Compression;
use flate2::write::GzEncoder;
use ipnet::IpNet;
use md5::{Digest, Md5};
use shared_f2b::Config;
use std::collections::HashMap;
use std::io::Write;
use std::net::SocketAddr;
use std::sync::{Arc, Mutex, OnceLock};
use std::time::{Duration, Instant, SystemTime};
use thiserror::Error;
use tokio::sync::{MappedMutexGuard, MutexGuard};
use tokio_util::sync::CancellationToken;

/// Rendered lists kept at most (one per format, filter and name asked for), and their bytes
/// at most (gzip included): a token holder asking for many variants cannot fill the memory.
const RENDERED_MAX: usize = 64;
const RENDERED_BYTES: usize = 8 << 20;
/// How often the committed stream sequence is asked of NATS (a new ban shows in the feeds
/// this much later at most).
const FLOOR_EVERY: Duration = Duration::from_millis(100);
/// After the database or NATS failed to answer, how long requests do without them (503 at
/// once, or what the database holds) rather than wait for them again.
const RETRY_AFTER: Duration = Duration::from_secs(5);
/// How long a request waits for the database or NATS to answer a probe or a question.
const WAIT_FOR_ANSWER: Duration = Duration::from_secs(1);

/// Whether `flag` says a failure less than [`RETRY_AFTER`] ago.
fn recently(flag: &Mutex<Option<Instant>>) -> bool {
    flag.lock()
        .unwrap_or_else(|e| e.into_inner())
        .is_some_and(|at| at.elapsed() < RETRY_AFTER)
}

/// Records a failure now, or clears it.
fn set_failed(flag: &Mutex<Option<Instant>>, failed: bool) {
    *flag.lock().unwrap_or_else(|e| e.into_inner()) = failed.then(Instant::now);
}
/// The most history rows one request returns.
const HISTORY_MAX: i64 = 1000;

/// Why a request was not answered with its content.
#[derive(Debug, Error)]
pub enum HttpError {
    #[error("a bearer token is required (Authorization: Bearer <token>)")]
    Unauthorized,
    #[error("{0}")]
    BadRequest(String),
    #[error("the archive cannot be read now; try again later")]
    Unavailable(#[from] sqlx::Error),
    #[error("the archive could not be read a moment ago; try again later")]
    NotYet,
}

impl IntoResponse for HttpError {
    fn into_response(self) -> Response {
        let code = match &self {
            HttpError::Unauthorized => StatusCode::UNAUTHORIZED,
            HttpError::BadRequest(_) => StatusCode::BAD_REQUEST,
            HttpError::Unavailable(e) => {
                tracing::warn!(error = %e, "feed request failed: the archive cannot be read");
                StatusCode::SERVICE_UNAVAILABLE
            }
            HttpError::NotYet => StatusCode::SERVICE_UNAVAILABLE,
        };
        let mut response = (code, format!("{self}\n")).into_response();
        // It may repeat what the request said: never to be taken for anything but text.
        response.headers_mut().insert(
            header::X_CONTENT_TYPE_OPTIONS,
            HeaderValue::from_static("nosniff"),
        );
        if code == StatusCode::UNAUTHORIZED {
            response.headers_mut().insert(
                header::WWW_AUTHENTICATE,
                HeaderValue::from_static("Bearer realm=\"shared-f2b\""),
            );
        }
        response
    }
}

/// What a list request asks for.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
struct ListRequest {
    format: Format,
    filter: Filter,
    name: String,
}

/// A request's parameters by name: only the `known` ones, each at most once.
pub(crate) fn parameters<'a>(
    pairs: &'a [(String, String)],
    known: &[&str],
) -> Result<HashMap<&'a str, &'a str>, String> {
    let mut seen = HashMap::new();
    for (key, value) in pairs {
        if !known.contains(&key.as_str()) {
            return Err(if known.is_empty() {
                format!("unknown parameter {key:?}: this takes none")
            } else {
                format!("unknown parameter {key:?}: use {}", known.join(", "))
            });
        }
        if seen.insert(key.as_str(), value.as_str()).is_some() {
            return Err(format!("parameter {key:?} given twice"));
        }
    }
    Ok(seen)
}

/// Parses `/v1/blocklist`'s parameters.
fn list_request(pairs: &[(String, String)]) -> Result<ListRequest, String> {
    let seen = parameters(
        pairs,
        &["format", "jail", "min_reporters", "family", "name"],
    )?;
    let format = match seen.get("format") {
        None => Format::Plain,
        Some(word) => Format::parse(word).ok_or_else(|| {
            format!("format {word:?}: use plain, csv, json, nftables, ipset, mikrotik or zeek")
        })?,
    };
    let min_reporters = match seen.get("min_reporters") {
        None => 1,
        Some(n) => n
            .parse()
            .map_err(|_| format!("min_reporters {n:?}: use a number from 1 to 1000"))?,
    };
    let filter = Filter {
        jail: seen.get("jail").map(|j| j.to_string()),
        min_reporters,
        family: seen.get("family").map(|f| Family::parse(f)).transpose()?,
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

/// What the handlers share (the site page's too).
pub struct Feeds {
    pub(crate) db: Db,
    /// Digests of the accepted tokens (compared digest to digest: no length leaks).
    tokens: Vec<[u8; 16]>,
    public_url: Option<String>,
    /// What is never listed ([`crate::blocklist::never_nets`]).
    never: Vec<IpNet>,
    /// `feed_max_bantime`.
    max_bantime: Duration,
    stream: Stream,
    /// The archiver consumer, whose ack floor marks what is committed.
    consumer: String,
    /// When that floor was last asked for, and what it was.
    floor: tokio::sync::Mutex<Option<(Instant, u64)>>,
    snapshot: tokio::sync::Mutex<Option<Snapshot>>,
    /// When the database or NATS last failed to answer: requests meanwhile do not each wait
    /// for them again ([`RETRY_AFTER`]).
    db_failed: Mutex<Option<Instant>>,
    nats_failed: Mutex<Option<Instant>>,
    rendered: Mutex<HashMap<ListRequest, Arc<Rendered>>>,
    metrics: Metrics,
    pub(crate) site: Site,
}

fn digest(bytes: &[u8]) -> [u8; 16] {
    Md5::digest(bytes).into()
}

/// Equal in time independent of where they differ.
fn same(a: &[u8; 16], b: &[u8; 16]) -> bool {
    a.iter().zip(b).fold(0u8, |acc, (x, y)| acc | (x ^ y)) == 0
}

impl Feeds {
    pub(crate) fn authorise(&self, headers: &HeaderMap) -> Result<(), HttpError> {
        if self.tokens.is_empty() {
            return Ok(());
        }
        let given = headers
            .get(header::AUTHORIZATION)
            .and_then(|h| h.to_str().ok())
            .and_then(|h| h.split_once(' '))
            .filter(|(scheme, _)| scheme.eq_ignore_ascii_case("bearer"))
            .map(|(_, token)| token)
            .ok_or(HttpError::Unauthorized)?;
        let given = digest(given.trim().as_bytes());
        // Every token compared, so the time does not tell which one matched.
        let matched = self.tokens.iter().fold(false, |ok, t| same(t, &given) | ok);
        matched.then_some(()).ok_or(HttpError::Unauthorized)
    }

    /// The stream sequence the archive is committed up to (the archiver consumer's ack floor),
    /// asked of NATS at most every [`FLOOR_EVERY`]; while NATS cannot answer, what the
    /// database holds.
    pub(crate) async fn committed(&self) -> Result<u64, HttpError> {
        let mut floor = self.floor.lock().await;
        if let Some((at, seq)) = *floor
            && at.elapsed() < FLOOR_EVERY
        {
            return Ok(seq);
        }
        let nats_up = self
            .site
            .parts
            .nats
            .load(std::sync::atomic::Ordering::Relaxed);
        let asked = match nats_up && !recently(&self.nats_failed) {
            true => tokio::time::timeout(
                WAIT_FOR_ANSWER,
                crate::consumer::committed(&self.stream, &self.consumer),
            )
            .await
            .unwrap_or_else(|_| Err("no answer within 1 s".into())),
            false => Err("NATS is away".into()),
        };
        let seq = match asked {
            Ok(seq) => seq,
            Err(e) => {
                if nats_up {
                    tracing::warn!(error = %e, "feeds: using what the database holds");
                    set_failed(&self.nats_failed, true);
                }
                if !self.database_answers().await {
                    return Err(HttpError::NotYet);
                }
                crate::blocklist::archived_seq(&self.db)
                    .await
                    .inspect_err(|_| set_failed(&self.db_failed, true))?
            }
        };
        *floor = Some((Instant::now(), seq));
        Ok(seq)
    }

    /// Whether the database answers now: not when it did not a moment ago ([`RETRY_AFTER`])
    /// or its health probe says it is away, else as it answers a probe within 1 s. A request
    /// asks before it reads, so that while the database is away none waits for the pool's
    /// timeout.
    pub(crate) async fn database_answers(&self) -> bool {
        if recently(&self.db_failed) || !self.site.parts.database.get() {
            return false;
        }
        let answered = matches!(
            tokio::time::timeout(WAIT_FOR_ANSWER, self.db.ping()).await,
            Ok(Ok(()))
        );
        set_failed(&self.db_failed, !answered);
        answered
    }

    /// The snapshot brought up to what the archive committed (loaded afresh when it is too
    /// old or too far behind), held until the guard is dropped.
    pub(crate) async fn snapshot(&self) -> Result<MappedMutexGuard<'_, Snapshot>, HttpError> {
        // Asked before queueing for the snapshot, so a slow NATS holds up no other request.
        let upto = self.committed().await?;
        let mut guard = self.snapshot.lock().await;
        if guard.as_ref().is_some_and(|s| s.holds(upto)) {
            return Ok(MutexGuard::map(guard, |s| s.as_mut().expect("checked")));
        }
        if !self.database_answers().await {
            return Err(HttpError::NotYet);
        }
        let current = match guard.as_mut() {
            Some(snapshot) => snapshot
                .refresh(&self.db, upto)
                .await
                .inspect_err(|_| set_failed(&self.db_failed, true))?,
            None => false,
        };
        if !current {
            let started = Instant::now();
            let loaded = Snapshot::load(&self.db, &self.never, self.max_bantime, upto)
                .await
                .inspect_err(|_| set_failed(&self.db_failed, true))?;
            *guard = Some(loaded);
            tracing::info!(took = ?started.elapsed(), "blocklist loaded from the archive");
        }
        Ok(MutexGuard::map(guard, |s| {
            s.as_mut().expect("loaded above")
        }))
    }

    /// As [`Feeds::snapshot`]; while the archive cannot be read, the snapshot as it was last
    /// brought forward (when there is one), so the site page can still show it and say why.
    pub(crate) async fn snapshot_or_last(
        &self,
    ) -> Result<MappedMutexGuard<'_, Snapshot>, HttpError> {
        match self.snapshot().await {
            Ok(snapshot) => Ok(snapshot),
            Err(e) => {
                let guard = self.snapshot.lock().await;
                MutexGuard::try_map(guard, |s| s.as_mut()).map_err(|_| e)
            }
        }
    }

    /// The list as rendered now, rendering it when the archive moved on or an entry ended.
    async fn list(&self, request: &ListRequest) -> Result<Arc<Rendered>, HttpError> {
        let snapshot = self.snapshot().await?;
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
            (report::export(request.format, &list, &naming), valid_until)
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
    feeds.authorise(&headers)?;
    let request = list_request(&pairs).map_err(HttpError::BadRequest)?;
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
    headers: HeaderMap,
    Query(pairs): Query<Vec<(String, String)>>,
) -> Result<Response, HttpError> {
    feeds.authorise(&headers)?;
    let mut filter = HistoryFilter {
        limit: 100,
        ..HistoryFilter::default()
    };
    for (key, value) in &pairs {
        match key.as_str() {
            "ip" if filter.ip.is_none() => {
                filter.ip = Some(
                    shared_f2b::event::parse_ip(value)
                        .map_err(|e| HttpError::BadRequest(format!("ip {value:?}: {e}")))?,
                );
            }
            "limit" => {
                filter.limit = value
                    .parse()
                    .ok()
                    .filter(|n| (1..=HISTORY_MAX).contains(n))
                    .ok_or_else(|| {
                        HttpError::BadRequest(format!(
                            "limit {value:?}: use a number from 1 to {HISTORY_MAX}"
                        ))
                    })?;
            }
            _ => {
                return Err(HttpError::BadRequest(format!(
                    "unexpected parameter {key:?}: use ip (once) and limit"
                )));
            }
        }
    }
    if filter.ip.is_none() {
        return Err(HttpError::BadRequest("ip is required: ?ip=ADDR".into()));
    }
    let rows = query::history(&feeds.db, &filter).await?;
    let body = serde_json::to_string(&report::history_json(&rows)).expect("serialises");
    Ok(([(header::CONTENT_TYPE, "application/json")], body).into_response())
}

/// What the listener serves from.
pub struct Sources {
    pub db: Db,
    /// The site page's subscription to the live events ([`site::live::subscribe`]).
    pub live: async_nats::Subscriber,
    pub stream: Stream,
    pub metrics: Metrics,
    /// What the site page's health panel reads.
    pub parts: site::Parts,
}

/// Serves the feeds and the site page on `addr` with the config's `[archiver]` settings until
/// `shutdown`.
pub async fn serve(
    addr: SocketAddr,
    sources: Sources,
    config: Config,
    shutdown: CancellationToken,
) -> std::io::Result<()> {
    let Sources {
        db,
        live,
        stream,
        metrics,
        parts,
    } = sources;
    let archiver = &config.archiver;
    let feeds = Arc::new(Feeds {
        tokens: archiver
            .http_tokens
            .iter()
            .map(|t| digest(t.expose().as_bytes()))
            .collect(),
        public_url: archiver.public_url.clone(),
        never: crate::blocklist::never_nets(&config).await,
        max_bantime: archiver.feed_max_bantime,
        stream,
        consumer: archiver.archiver_consumer.clone(),
        floor: tokio::sync::Mutex::new(None),
        db,
        snapshot: tokio::sync::Mutex::new(None),
        db_failed: Mutex::new(None),
        nats_failed: Mutex::new(None),
        rendered: Mutex::new(HashMap::new()),
        metrics,
        site: Site::new(parts, shutdown.clone()),
    });
    let follow = feeds.site.live.clone().follow(
        live,
        config.nats.subject_prefix.clone(),
        config.nats.stream.clone(),
        shutdown.clone(),
    );
    let warm = keep_warm(feeds.clone(), shutdown.clone());
    let counted = feeds.clone();
    let app = axum::Router::new()
        .route("/v1/blocklist", get(blocklist))
        .route("/v1/history", get(history))
        .merge(site::routes())
        .with_state(feeds)
        .layer(axum::middleware::map_response(move |r: Response| {
            let counted = counted.clone();
            async move {
                counted.metrics.count_feed(r.status().as_u16());
                r
            }
        }));
    let listener = tokio::net::TcpListener::bind(addr)
        .await
        .map_err(|e| std::io::Error::new(e.kind(), format!("cannot listen on {addr}: {e}")))?;
    tracing::info!(%addr, "serving the feeds (/v1/blocklist, /v1/history) and the site page (/)");
    let served = shared_f2b::http::serve(listener, app, shutdown);
    // The live events and the warming end with the listener (at shutdown).
    let (served, (), ()) = tokio::join!(served, follow, warm);
    served
}

/// How often [`keep_warm`] brings the snapshot and the site page's counts forward.
const WARM_EVERY: Duration = Duration::from_secs(5);

/// Loads the latest events, the snapshot and the site page's counts at start, then keeps them
/// current every [`WARM_EVERY`], so that a request seldom waits for a load (the periodic
/// reload included), and fills in the live events the site page missed.
async fn keep_warm(feeds: Arc<Feeds>, shutdown: CancellationToken) {
    let started = Instant::now();
    if let Err(e) = feeds.site.fill_latest(&feeds.db).await {
        tracing::warn!(error = %e, "site page: cannot read the latest events yet");
    }
    let mut first = true;
    loop {
        let warmed = async {
            let snapshot = feeds.snapshot().await?;
            feeds.site.warm(&snapshot);
            drop(snapshot);
            let upto = feeds.committed().await?;
            feeds
                .site
                .counts(&feeds.db, Some(upto), SystemTime::now())
                .await;
            feeds.site.catch_up(&feeds.db, upto).await?;
            Ok::<_, HttpError>(())
        };
        match warmed.await {
            Ok(()) if first => {
                tracing::info!(took = ?started.elapsed(), "feeds and site page ready");
                first = false;
            }
            Ok(()) => {}
            Err(e) => tracing::warn!(error = %e, "feeds: cannot read the archive now"),
        }
        tokio::select! {
            _ = shutdown.cancelled() => return,
            _ = tokio::time::sleep(WARM_EVERY) => {}
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn pairs(q: &[(&str, &str)]) -> Vec<(String, String)> {
        q.iter()
            .map(|(k, v)| (k.to_string(), v.to_string()))
            .collect()
    }

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
            let e = list_request(&pairs(&bad)).unwrap_err();
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

    #[test]
    fn tokens_compare_by_digest() {
        let t = digest(b"0123456789abcdef");
        assert!(same(&t, &digest(b"0123456789abcdef")));
        assert!(!same(&t, &digest(b"0123456789abcdeg")));
    }
}

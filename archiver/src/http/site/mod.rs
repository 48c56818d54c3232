//! The site page on `[archiver] http_listen`: a read-only view of what is banned, by whom and
//! how it is going, for operators who would rather look than read.
//!
//! - `GET /` and `GET /ip/<addr>`: the page (HTML, script and style embedded in the binary,
//!   nothing from elsewhere; a strict Content-Security-Policy);
//! - `GET /v1/site/overview`, `/v1/site/bans`, `/v1/site/address`: what it shows, as JSON
//!   (`API.md` beside this file), answered from the blocklist snapshot the feeds keep;
//! - `GET /v1/site/live`: the latest events as server-sent events ([`live`]).
//!
//! The data needs the feeds' bearer token when `http_tokens` is set ([`super::auth`]); the
//! page itself holds no data and asks for the token. [`warm`] keeps what it shows loaded.

pub mod activity;
pub mod live;
mod shape;
mod view;
pub mod warm;

use super::error::HttpError;
use super::params::{self, BadParameter};
use super::shared::Shared;
use crate::query::{self, HistoryFilter};
use activity::Activity;
use axum::body::Body;
use axum::extract::{Query, State};
use axum::http::{HeaderValue, header};
use axum::response::{IntoResponse, Response};
use axum::routing::get;
use live::{Item, Live};
use serde_json::{Value, json};
use std::sync::Arc;
use std::time::{Duration, Instant, SystemTime};
use tokio_util::sync::CancellationToken;
use view::{Sort, Views};

/// The longest `/v1/site/bans?after=SEQ` waits for the archive to hold that event.
const AFTER_WAIT: Duration = Duration::from_secs(2);
/// Requests that wait for `after` at once at most: more are answered without waiting, so that
/// waiting requests cannot hold the listener's connections.
const AFTER_WAITERS: usize = 8;
/// The most events the address page lists.
const STORY_MAX: i64 = 1000;

/// The page's state beside the feeds'.
pub struct Site {
    shared: Arc<Shared>,
    pub live: Arc<Live>,
    views: Views,
    /// The chart's counts and the hosts reporting; `None` until first read.
    activity: tokio::sync::Mutex<Option<Activity>>,
    /// Requests waiting for the archive to hold an event (`after`) at most at once.
    waits: tokio::sync::Semaphore,
    started: SystemTime,
    shutdown: CancellationToken,
}

impl Site {
    /// Stops its live streams at `shutdown`.
    pub fn new(shared: Arc<Shared>, shutdown: CancellationToken) -> Site {
        Site {
            shared,
            live: Live::new(),
            views: Views::default(),
            activity: tokio::sync::Mutex::new(None),
            waits: tokio::sync::Semaphore::new(AFTER_WAITERS),
            started: SystemTime::now(),
            shutdown,
        }
    }

    /// Lists the active bans of `snapshot` ahead of the first page view.
    pub fn warm(&self, snapshot: &crate::blocklist::Snapshot) {
        let view = self.views.current(snapshot, SystemTime::now());
        tokio::task::block_in_place(|| view.summary());
    }

    /// The chart (`timeline`) and the hosts reporting, brought up to stream sequence `upto`
    /// (`None`: as they are). While the archive cannot be read: as last counted, or `null` and
    /// no hosts when they never were.
    pub async fn counts(&self, upto: Option<u64>, now: SystemTime) -> (Value, Value) {
        let db = &self.shared.db;
        let mut activity = self.activity.lock().await;
        if let Some(upto) = upto {
            let current = match activity.as_mut() {
                Some(a) => a.bring_forward(db, upto).await,
                None => Ok(false),
            };
            let loaded = match current {
                Ok(true) => Ok(()),
                Ok(false) => Activity::load(db, upto).await.map(|a| *activity = Some(a)),
                Err(e) => Err(e),
            };
            if let Err(e) = loaded {
                tracing::warn!(error = %e, "site page: cannot count the archive's activity now");
            }
        }
        match activity.as_mut() {
            Some(a) => {
                a.forget_old(now);
                (a.timeline(now), a.hosts(now))
            }
            None => (Value::Null, json!([])),
        }
    }

    /// Fills in what the live subscription missed (NATS was away, or the event was stored
    /// before it began) once the archive holds it: the latest events from the archive, sent to
    /// the pages too; with more missed than they hold, the pages are told to load afresh.
    pub async fn catch_up(&self, upto: u64) -> Result<(), sqlx::Error> {
        let seen = self.live.last_seq();
        if !self.live.missed(upto) {
            return Ok(());
        }
        tracing::info!(seen, upto, "site page: filling in the live events missed");
        self.fill_latest().await?;
        // More missed than the pages keep, or a gap within what they saw: load afresh.
        if upto.saturating_sub(seen) > live::RECENT as u64 || upto <= seen {
            self.live.reload();
        }
        self.live.seen(upto);
        Ok(())
    }

    /// Fills the latest events from the archive, for pages opened before anything new arrives.
    pub async fn fill_latest(&self) -> Result<(), sqlx::Error> {
        let db = &self.shared.db;
        let filter = HistoryFilter {
            limit: live::RECENT as i64,
            ..HistoryFilter::default()
        };
        for s in query::history(db, &filter).await? {
            self.live.push(Item {
                seq: s.seq,
                json: shape::event(s.seq, &s.event),
            });
        }
        for c in query::latest_controls(db, live::RECENT).await? {
            self.live.push(Item {
                seq: c.seq,
                json: shape::control(c.seq, &c.control),
            });
        }
        Ok(())
    }

    /// Waits (at most [`AFTER_WAIT`]) until the archive holds event `after`, which the page saw
    /// live — only for an event that was seen live, and a few requests at a time
    /// ([`AFTER_WAITERS`]); the others are answered at once.
    async fn wait_for(&self, after: u64) -> Result<(), HttpError> {
        let seen = after <= self.live.last_seq();
        if let Ok(_waiting) = self.waits.try_acquire()
            && seen
        {
            let started = Instant::now();
            while self.shared.committed().await? < after && started.elapsed() < AFTER_WAIT {
                tokio::time::sleep(Duration::from_millis(20)).await;
            }
        }
        Ok(())
    }
}

/// The page and its assets: served to anyone, they hold no data.
pub fn page_routes() -> axum::Router {
    axum::Router::new()
        .route("/", get(page))
        .route("/ip/{*addr}", get(page))
        .route("/assets/site.js", get(script))
        .route("/assets/site.css", get(style))
        .route("/assets/favicon.svg", get(icon))
}

/// What the page shows, as JSON (behind the token layer, [`super::auth`]).
pub fn data_routes(site: Arc<Site>) -> axum::Router {
    axum::Router::new()
        .route("/v1/site/overview", get(overview))
        .route("/v1/site/bans", get(bans))
        .route("/v1/site/address", get(address))
        .route("/v1/site/live", get(follow))
        .with_state(site)
}

/// Nothing but this origin's script and style; no framing, no forms, no inline code.
const CSP: &str = "default-src 'none'; script-src 'self'; style-src 'self'; img-src 'self' data:; \
    connect-src 'self'; base-uri 'none'; form-action 'none'; frame-ancestors 'none'";

fn asset(body: &'static [u8], content_type: &'static str) -> Response {
    let mut r = Body::from(body).into_response();
    let h = r.headers_mut();
    h.insert(header::CONTENT_TYPE, HeaderValue::from_static(content_type));
    h.insert(header::CACHE_CONTROL, HeaderValue::from_static("no-cache"));
    h.insert(
        header::CONTENT_SECURITY_POLICY,
        HeaderValue::from_static(CSP),
    );
    h.insert(
        header::X_CONTENT_TYPE_OPTIONS,
        HeaderValue::from_static("nosniff"),
    );
    h.insert(header::X_FRAME_OPTIONS, HeaderValue::from_static("DENY"));
    h.insert(
        header::REFERRER_POLICY,
        HeaderValue::from_static("no-referrer"),
    );
    r
}

async fn page() -> Response {
    asset(
        include_bytes!("assets/index.html"),
        "text/html; charset=utf-8",
    )
}

async fn script() -> Response {
    asset(
        include_bytes!("assets/site.js"),
        "text/javascript; charset=utf-8",
    )
}

async fn style() -> Response {
    asset(include_bytes!("assets/site.css"), "text/css; charset=utf-8")
}

async fn icon() -> Response {
    asset(include_bytes!("assets/favicon.svg"), "image/svg+xml")
}

/// JSON that is never cached and never sniffed as anything else.
fn data(value: serde_json::Value) -> Response {
    let mut r = (
        [(header::CONTENT_TYPE, "application/json")],
        value.to_string(),
    )
        .into_response();
    let h = r.headers_mut();
    h.insert(header::CACHE_CONTROL, HeaderValue::from_static("no-store"));
    h.insert(
        header::X_CONTENT_TYPE_OPTIONS,
        HeaderValue::from_static("nosniff"),
    );
    r
}

async fn overview(
    State(site): State<Arc<Site>>,
    Query(pairs): Query<Vec<(String, String)>>,
) -> Result<Response, HttpError> {
    params::parameters(&pairs, &[])?;
    let shared = &site.shared;
    let now = SystemTime::now();
    let view = {
        // While the database is down: what was last read, and the health panel says why.
        let snapshot = shared.snapshot_or_last().await?;
        site.views.current(&snapshot, now)
    };
    let upto = match shared.database_answers().await {
        true => shared.committed().await.ok(),
        false => None,
    };
    let (timeline, hosts) = site.counts(upto, now).await;
    let intake = match upto {
        Some(_) => crate::intake::state::sources(&shared.db)
            .await
            .unwrap_or_default(),
        None => Vec::new(),
    };
    let summary = tokio::task::block_in_place(|| view.summary());
    Ok(data(json!({
        "now": crate::store::ms(now),
        "active": view.len(),
        "by_origin": summary.by_origin,
        "by_jail": summary.by_jail,
        "top": summary.top,
        "timeline": timeline,
        "latest": site.live.recent(),
        "health": {
            "archiver": {
                "ok": true,
                "version": env!("CARGO_PKG_VERSION"),
                "started": crate::store::ms(site.started),
            },
            "database": {"ok": shared.parts.database.get(), "backend": shared.db.backend.name()},
            "nats": {"ok": shared.nats_up()},
            "hosts": hosts,
            "intake": intake,
        },
    })))
}

async fn bans(
    State(site): State<Arc<Site>>,
    Query(pairs): Query<Vec<(String, String)>>,
) -> Result<Response, HttpError> {
    let p = params::parameters(&pairs, &["q", "sort", "order", "offset", "limit", "after"])?;
    let search = view::Search::parse(p.get("q").copied().unwrap_or_default())?;
    let sort = match p.get("sort") {
        None => Sort::LastSeen,
        Some(word) => Sort::parse(word).ok_or_else(|| {
            BadParameter::value(
                "sort",
                word,
                "use ip, jails, hosts, first_seen, last_seen or expires",
            )
        })?,
    };
    let descending = match p.get("order").copied() {
        None | Some("desc") => true,
        Some("asc") => false,
        Some(word) => return Err(BadParameter::value("order", word, "use asc or desc").into()),
    };
    let offset = params::number(p.get("offset"), "offset", 0..=10_000_000, 0)? as usize;
    let limit = params::number(p.get("limit"), "limit", 1..=500, 50)? as usize;
    if p.contains_key("after") {
        let after = params::number(p.get("after"), "after", 0..=u64::MAX, 0)?;
        site.wait_for(after).await?;
    }
    let now = SystemTime::now();
    let view = {
        let snapshot = site.shared.snapshot_or_last().await?;
        site.views.current(&snapshot, now)
    };
    let page = tokio::task::block_in_place(|| view.page(&search, sort, descending, offset, limit));
    Ok(data(page))
}

async fn address(
    State(site): State<Arc<Site>>,
    Query(pairs): Query<Vec<(String, String)>>,
) -> Result<Response, HttpError> {
    let p = params::parameters(&pairs, &["ip"])?;
    let ip = params::ip(p.get("ip"))?;
    let shared = &site.shared;
    let now = SystemTime::now();
    let (view, orders) = {
        let snapshot = shared.snapshot().await?;
        let orders: Vec<serde_json::Value> = snapshot
            .orders_covering(ip, now)
            .into_iter()
            .map(|c| shape::control(0, c))
            .collect();
        (site.views.current(&snapshot, now), orders)
    };
    if !shared.database_answers().await {
        return Err(HttpError::NotYet);
    }
    let filter = HistoryFilter {
        ip: Some(ip),
        limit: STORY_MAX,
        ..HistoryFilter::default()
    };
    let events: Vec<serde_json::Value> = query::history(&shared.db, &filter)
        .await?
        .iter()
        .map(|s| shape::event(s.seq, &s.event))
        .collect();
    Ok(data(json!({
        "ip": ip.to_string(),
        "active": view.find(ip),
        "events": events,
        "orders": orders,
    })))
}

async fn follow(State(site): State<Arc<Site>>) -> Result<Response, HttpError> {
    let body = site
        .live
        .stream(site.shutdown.clone())
        .ok_or(HttpError::TooManyFollowers)?;
    let mut r = body.into_response();
    let h = r.headers_mut();
    h.insert(
        header::CONTENT_TYPE,
        HeaderValue::from_static("text/event-stream"),
    );
    h.insert(header::CACHE_CONTROL, HeaderValue::from_static("no-store"));
    // Proxies that buffer (nginx) would hold the events back.
    h.insert("x-accel-buffering", HeaderValue::from_static("no"));
    Ok(r)
}

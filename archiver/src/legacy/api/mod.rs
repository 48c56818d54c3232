//! The original Shared Fail2Ban's HTTP API, served on `http_listen` with
//! `[archiver.legacy_api]`, so that an old host only changes its API URL while a site moves:
//! `PUT /api/v1/put` ([`put`]) publishes an old host's ban into the stream as that host (the
//! token says which; the body's `hostname` is never believed), `GET /api/v1/time/…` and
//! `/count/…` ([`pull`]) answer its cron pulls from the archive, leaving out its own bans (the
//! asking host is found by its address, not by reverse DNS). Who is who: [`clients`].

pub mod clients;
pub mod pull;
pub mod put;

use crate::blocklist::never_listed;
use crate::db::Db;
use axum::Router;
use axum::body::Bytes;
use axum::extract::{ConnectInfo, DefaultBodyLimit, Path, Query, State};
use axum::http::{HeaderMap, HeaderValue, StatusCode, header};
use axum::response::{IntoResponse, Response};
use axum::routing::{get, put as put_route};
use clients::{Clients, NotStored};
use ipnet::IpNet;
use pull::{MAX_COUNT_HOURS, MAX_TIME_HOURS, Pull, Recent};
use put::BadPut;
use shared_f2b::event::{MAX_HOST_LEN, validate_jail};
use std::net::SocketAddr;
use std::sync::Arc;
use std::time::SystemTime;

/// The largest PUT body taken (the original's is about 200 bytes).
pub const MAX_BODY: usize = 4096;
/// The header an old host's token comes in.
const TOKEN_HEADER: &str = "x-token";
/// The window of a `count` without `?time=`: a day.
const DEFAULT_COUNT_HOURS: u64 = 24;

/// What the API answers from.
pub struct Api {
    clients: Arc<Clients>,
    recent: Recent,
    never: Vec<IpNet>,
}

impl Api {
    /// The API of the old hosts `clients`; `never`: the nets no answer lists and no PUT may
    /// ban ([`crate::blocklist::never_nets`]).
    pub fn new(clients: Arc<Clients>, db: Db, never: Vec<IpNet>) -> Api {
        Api {
            clients,
            recent: Recent::new(db, never.clone()),
            never,
        }
    }
}

/// The routes, paths with or without a trailing slash.
pub fn routes(api: Arc<Api>) -> Router {
    Router::new()
        .route("/api/v1/put", put_route(put_ban))
        .route("/api/v1/put/", put_route(put_ban))
        .route("/api/v1/time/{*rest}", get(time))
        .route("/api/v1/count/{*rest}", get(count))
        .layer(DefaultBodyLimit::max(MAX_BODY))
        .with_state(api)
}

/// Why a request of the old API was not answered with its content.
#[derive(Debug, thiserror::Error)]
pub enum LegacyApiError {
    #[error("no such token (X-TOKEN)")]
    Token,
    #[error("{0}")]
    Put(#[from] BadPut),
    #[error("{0}")]
    Path(String),
    #[error("not from this address")]
    Forbidden,
    #[error("the archive cannot be read now; try again later")]
    Unavailable(#[from] sqlx::Error),
    #[error("not stored; try again")]
    NotStored(#[from] NotStored),
}

impl IntoResponse for LegacyApiError {
    fn into_response(self) -> Response {
        let code = match &self {
            LegacyApiError::Token => StatusCode::UNAUTHORIZED,
            LegacyApiError::Put(_) | LegacyApiError::Path(_) => StatusCode::BAD_REQUEST,
            LegacyApiError::Forbidden => StatusCode::FORBIDDEN,
            LegacyApiError::Unavailable(e) => {
                tracing::warn!(error = %e, "old API: the archive cannot be read");
                StatusCode::SERVICE_UNAVAILABLE
            }
            LegacyApiError::NotStored(e) => {
                tracing::warn!(error = %e, "old API: a ban was not stored");
                StatusCode::SERVICE_UNAVAILABLE
            }
        };
        let mut response = (code, format!("{self}\n")).into_response();
        response.headers_mut().insert(
            header::X_CONTENT_TYPE_OPTIONS,
            HeaderValue::from_static("nosniff"),
        );
        response
    }
}

/// `PUT /api/v1/put`: the token's host's ban, published and stored before `OK`.
async fn put_ban(
    State(api): State<Arc<Api>>,
    ConnectInfo(peer): ConnectInfo<SocketAddr>,
    headers: HeaderMap,
    body: Bytes,
) -> Result<&'static str, LegacyApiError> {
    let token = headers
        .get(TOKEN_HEADER)
        .and_then(|t| t.to_str().ok())
        .unwrap_or("");
    let Some(client) = api.clients.by_token(token) else {
        tracing::warn!(%peer, "old API: a PUT with an unknown token");
        return Err(LegacyApiError::Token);
    };
    // A token copied off the wire is no use from elsewhere: a host with addresses puts from them.
    if !client.puts_from(peer.ip()) {
        tracing::warn!(%peer, host = %client.host_id, "old API: a PUT with a host's token from another address");
        return Err(LegacyApiError::Forbidden);
    }
    let event = put::event(&client.host_id, &body, SystemTime::now())?;
    if never_listed(event.ip, &api.never) {
        return Err(LegacyApiError::Put(BadPut::Never(event.ip)));
    }
    let event = client.publish(event).await?;
    tracing::info!(host = %client.host_id, jail = %event.jail, ip = %event.ip, id = %event.id,
        "old API: published a ban");
    Ok("OK")
}

/// `?domain=` and `?time=`.
#[derive(Debug, serde::Deserialize)]
struct Params {
    domain: Option<String>,
    time: Option<String>,
}

/// `GET /api/v1/time/<jail|all>/<hours>[/<remote|anything>]`.
async fn time(
    State(api): State<Arc<Api>>,
    ConnectInfo(peer): ConnectInfo<SocketAddr>,
    Path(rest): Path<String>,
    Query(params): Query<Params>,
) -> Result<Response, LegacyApiError> {
    let segments = segments(&rest, 2)?;
    let mut pull = pull(&api, peer, &segments, 2, &params)?;
    pull.hours = number(segments[1], "hours", 1, MAX_TIME_HOURS)?;
    Ok(json(&api.recent.time(&pull).await?))
}

/// `GET /api/v1/count/<jail|all>/<min_count>[/<remote|anything>]`.
async fn count(
    State(api): State<Arc<Api>>,
    ConnectInfo(peer): ConnectInfo<SocketAddr>,
    Path(rest): Path<String>,
    Query(params): Query<Params>,
) -> Result<Response, LegacyApiError> {
    let segments = segments(&rest, 2)?;
    let mut pull = pull(&api, peer, &segments, 2, &params)?;
    let min_count = number(segments[1], "min_count", 0, i64::MAX as u64)?;
    pull.hours = match &params.time {
        Some(hours) => number(hours, "time", 1, MAX_COUNT_HOURS)?,
        None => DEFAULT_COUNT_HOURS,
    };
    Ok(json(&api.recent.count(&pull, min_count as i64).await?))
}

/// The path's segments after the route's prefix: `fixed` of them, and one more at most (a
/// trailing slash is not one).
fn segments(rest: &str, fixed: usize) -> Result<Vec<&str>, LegacyApiError> {
    let rest = rest.strip_suffix('/').unwrap_or(rest);
    let segments: Vec<&str> = rest.split('/').collect();
    if segments.len() < fixed || segments.len() > fixed + 1 || segments.iter().any(|s| s.is_empty())
    {
        return Err(LegacyApiError::Path(
            "expected /<jail|all>/<number>[/remote]".into(),
        ));
    }
    Ok(segments)
}

/// The jail, the asking host to leave out and the domain of a pull; refused unless `peer`
/// may read. The segment after the `fixed` ones, absent or `remote`, leaves out the asking
/// host's own bans; any other value leaves out nobody's.
fn pull(
    api: &Api,
    peer: SocketAddr,
    segments: &[&str],
    fixed: usize,
    params: &Params,
) -> Result<Pull, LegacyApiError> {
    let addr = peer.ip();
    if !api.clients.may_read(addr) {
        tracing::warn!(%peer, "old API: a pull from an address not allowed");
        return Err(LegacyApiError::Forbidden);
    }
    let jail = match segments[0].to_ascii_lowercase() {
        all if all == "all" => None,
        jail => {
            validate_jail(&jail).map_err(|e| LegacyApiError::Path(format!("jail: {e}")))?;
            Some(jail)
        }
    };
    let leave_out_own = segments.get(fixed).is_none_or(|s| *s == "remote");
    let exclude = leave_out_own
        .then(|| api.clients.by_address(addr).map(|c| c.host_id.clone()))
        .flatten();
    let domain = match &params.domain {
        Some(d) if d.len() > MAX_HOST_LEN || d.chars().any(|c| c.is_control()) => {
            return Err(LegacyApiError::Path("domain: a host name's ending".into()));
        }
        Some(d) if d.is_empty() => None,
        other => other.clone(),
    };
    Ok(Pull {
        jail,
        hours: 1,
        exclude,
        domain,
    })
}

/// A JSON answer.
fn json<T: serde::Serialize>(body: &T) -> Response {
    let bytes = serde_json::to_vec(body).expect("plain data serialises");
    (
        [(
            header::CONTENT_TYPE,
            HeaderValue::from_static("application/json"),
        )],
        bytes,
    )
        .into_response()
}

fn number(text: &str, what: &str, min: u64, max: u64) -> Result<u64, LegacyApiError> {
    text.parse::<u64>()
        .ok()
        .filter(|n| (min..=max).contains(n))
        .ok_or_else(|| LegacyApiError::Path(format!("{what}: a whole number from {min} to {max}")))
}

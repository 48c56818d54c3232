//! `[archiver] http_tokens`: the bearer tokens the data routes of the feeds and the site page
//! take, checked in one layer in front of them (the page's shell and assets are public).

use super::error::HttpError;
use crate::text::digest;
use axum::extract::{Request, State};
use axum::http::{HeaderMap, header};
use axum::middleware::Next;
use axum::response::Response;
use std::sync::Arc;

/// The accepted tokens, as digests (compared digest to digest: no length leaks); none: every
/// request is let through.
#[derive(Debug, Default)]
pub struct Tokens(Vec<[u8; 16]>);

impl Tokens {
    pub fn new<'a>(tokens: impl IntoIterator<Item = &'a str>) -> Tokens {
        Tokens(tokens.into_iter().map(|t| digest(t.as_bytes())).collect())
    }

    /// Whether the request carries `Authorization: Bearer <one of them>`.
    pub fn check(&self, headers: &HeaderMap) -> Result<(), HttpError> {
        if self.0.is_empty() {
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
        let matched = self.0.iter().fold(false, |ok, t| same(t, &given) | ok);
        matched.then_some(()).ok_or(HttpError::Unauthorized)
    }
}

/// The layer: a request without an accepted token gets 401 and reaches no handler.
pub async fn require(
    State(tokens): State<Arc<Tokens>>,
    request: Request,
    next: Next,
) -> Result<Response, HttpError> {
    tokens.check(request.headers())?;
    Ok(next.run(request).await)
}

/// Equal in time independent of where they differ.
fn same(a: &[u8; 16], b: &[u8; 16]) -> bool {
    a.iter().zip(b).fold(0u8, |acc, (x, y)| acc | (x ^ y)) == 0
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn tokens_compare_by_digest() {
        let t = digest(b"0123456789abcdef");
        assert!(same(&t, &digest(b"0123456789abcdef")));
        assert!(!same(&t, &digest(b"0123456789abcdeg")));
    }

    #[test]
    fn bearer_of_any_token_case_insensitive_scheme() {
        let tokens = Tokens::new(["0123456789abcdef", "fedcba9876543210"]);
        let with = |value: &str| {
            let mut h = HeaderMap::new();
            h.insert(header::AUTHORIZATION, value.parse().unwrap());
            tokens.check(&h).is_ok()
        };
        assert!(with("Bearer fedcba9876543210"));
        assert!(with("bearer 0123456789abcdef"));
        assert!(!with("Bearer 0123456789abcde"));
        assert!(!with("Basic 0123456789abcdef"));
        assert!(tokens.check(&HeaderMap::new()).is_err());
        assert!(Tokens::default().check(&HeaderMap::new()).is_ok());
    }
}

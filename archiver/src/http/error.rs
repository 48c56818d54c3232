//! The one error a request of the feeds or the site page ends with, and its answer.

use super::params::BadParameter;
use axum::http::{HeaderValue, StatusCode, header};
use axum::response::{IntoResponse, Response};
use thiserror::Error;

/// Why a request was not answered with its content.
#[derive(Debug, Error)]
pub enum HttpError {
    #[error("a bearer token is required (Authorization: Bearer <token>)")]
    Unauthorized,
    #[error(transparent)]
    BadRequest(#[from] BadParameter),
    #[error("the archive cannot be read now; try again later")]
    Unavailable(#[from] sqlx::Error),
    #[error("the archive could not be read a moment ago; try again later")]
    NotYet,
    #[error("too many pages follow the live events; try again later")]
    TooManyFollowers,
}

impl IntoResponse for HttpError {
    fn into_response(self) -> Response {
        let code = match &self {
            HttpError::Unauthorized => StatusCode::UNAUTHORIZED,
            HttpError::BadRequest(_) => StatusCode::BAD_REQUEST,
            HttpError::Unavailable(e) => {
                tracing::warn!(error = %e, "HTTP request failed: the archive cannot be read");
                StatusCode::SERVICE_UNAVAILABLE
            }
            HttpError::NotYet | HttpError::TooManyFollowers => StatusCode::SERVICE_UNAVAILABLE,
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

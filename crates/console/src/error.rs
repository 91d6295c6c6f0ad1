//! Why a console route refused a request.

use axum::http::{HeaderValue, StatusCode, header};
use axum::response::{IntoResponse, Response};

/// A refused console request; the message tells the operator what to do.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum ConsoleRejection {
    /// `CRMD_API_TOKEN` is not set, so the data routes stay closed (503).
    #[error("set CRMD_API_TOKEN to enable the console's data routes")]
    TokenNotConfigured,
    /// The `Authorization: Bearer` header is missing or wrong (401).
    #[error("missing or wrong `Authorization: Bearer` token; use the value of CRMD_API_TOKEN")]
    Unauthorized,
    /// The `call` filter is not a CallSid (400).
    #[error(
        "`call` must be a Twilio CallSid such as CA0123...; got a value of {length} characters that is not one"
    )]
    InvalidCallFilter {
        /// Length of the value given (the value itself is not echoed).
        length: usize,
    },
}

impl IntoResponse for ConsoleRejection {
    fn into_response(self) -> Response {
        let status = match self {
            ConsoleRejection::TokenNotConfigured => StatusCode::SERVICE_UNAVAILABLE,
            ConsoleRejection::Unauthorized => StatusCode::UNAUTHORIZED,
            ConsoleRejection::InvalidCallFilter { .. } => StatusCode::BAD_REQUEST,
        };
        let mut response = (status, format!("{self}\n")).into_response();
        if status == StatusCode::UNAUTHORIZED {
            response
                .headers_mut()
                .insert(header::WWW_AUTHENTICATE, HeaderValue::from_static("Bearer"));
        }
        response
    }
}

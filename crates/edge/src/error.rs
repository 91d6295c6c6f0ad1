//! Errors at the edge's two boundaries: answering one request ([`RequestError`], mapped to a status
//! and a short plain-text body) and starting or running the server ([`StartupError`]).

use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};

use crate::config::ConfigError;

/// Why a request was refused. The body sent to the client is the `Display` text, which never
/// contains a secret; the log line may say more.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum RequestError {
    /// The body exceeded `MAX_BODY_BYTES`.
    #[error("request body is larger than {limit} bytes (MAX_BODY_BYTES)")]
    BodyTooLarge {
        /// The configured limit.
        limit: usize,
    },
    /// The body could not be read (client went away, broken chunked encoding).
    #[error("request body could not be read")]
    BodyUnreadable,
    /// The body is not an `application/x-www-form-urlencoded` form.
    #[error("malformed form body: {0}")]
    MalformedForm(String),
    /// A required form field is missing or empty.
    #[error("missing required field {0}")]
    MissingField(&'static str),
    /// A form field has a value that cannot be right.
    #[error("invalid {field}: {reason}")]
    InvalidField {
        /// The form field.
        field: &'static str,
        /// What is accepted.
        reason: &'static str,
    },
    /// Neither `PUBLIC_BASE_URL` nor the request's `Host` headers give a usable public URL.
    #[error("cannot tell the public URL of this request: {0} (set PUBLIC_BASE_URL)")]
    NoPublicUrl(String),
    /// `X-Twilio-Signature` missing or wrong while `TWILIO_AUTH_TOKEN` is set.
    #[error("invalid or missing X-Twilio-Signature")]
    SignatureRejected {
        /// Why, for the log line (never the token).
        reason: String,
    },
}

impl RequestError {
    /// The HTTP status this error is answered with.
    pub fn status(&self) -> StatusCode {
        match self {
            Self::BodyTooLarge { .. } => StatusCode::PAYLOAD_TOO_LARGE,
            Self::SignatureRejected { .. } => StatusCode::FORBIDDEN,
            Self::BodyUnreadable
            | Self::MalformedForm(_)
            | Self::MissingField(_)
            | Self::InvalidField { .. }
            | Self::NoPublicUrl(_) => StatusCode::BAD_REQUEST,
        }
    }
}

impl IntoResponse for RequestError {
    fn into_response(self) -> Response {
        match &self {
            Self::SignatureRejected { reason } => {
                tracing::warn!(reason = %reason, "Twilio webhook rejected with 403: {reason}");
            }
            other => tracing::info!(status = other.status().as_u16(), "request refused: {other}"),
        }
        (self.status(), format!("{self}\n")).into_response()
    }
}

/// Why the server could not start or stopped abnormally.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum StartupError {
    /// Invalid configuration: exit code 2.
    #[error("configuration error: {0}")]
    Config(#[from] ConfigError),
    /// Google credentials set but unusable: exit code 2.
    #[error("configuration error: {reason}")]
    Credentials {
        /// `GOOGLE_APPLICATION_CREDENTIALS` or `GCP_CREDENTIALS_JSON`.
        variable: &'static str,
        /// What is wrong, naming the variable (never the key).
        reason: String,
    },
    /// The database could not be opened or migrated.
    #[error(
        "database {url} unavailable: {reason} (check DATABASE_URL and that the database is reachable)"
    )]
    Database {
        /// The URL with its password redacted.
        url: String,
        /// The store's explanation.
        reason: String,
    },
    /// The listening socket could not be set up.
    #[error("cannot listen on {addr}: {source} (is PORT already in use?)")]
    Listen {
        /// The address.
        addr: String,
        /// The OS error.
        source: std::io::Error,
    },
    /// The server loop failed.
    #[error("server error: {0}")]
    Serve(std::io::Error),
}

impl StartupError {
    /// Process exit code: 2 for configuration errors, 1 otherwise.
    pub fn exit_code(&self) -> u8 {
        match self {
            Self::Config(_) | Self::Credentials { .. } => 2,
            _ => 1,
        }
    }
}

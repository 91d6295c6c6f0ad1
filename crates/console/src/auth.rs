//! The `CRMD_API_TOKEN` bearer check for the console's data routes, in constant time.
//!
//! Tokens are compared as SHA-256 digests with `subtle`, so neither the content nor the length
//! of the configured token leaks through timing. The token never appears in Debug output,
//! errors or logs.

use std::fmt;

use axum::http::HeaderMap;
use axum::http::header::AUTHORIZATION;
use sha2::{Digest, Sha256};
use subtle::ConstantTimeEq;

use crate::error::ConsoleRejection;

/// The API token (`CRMD_API_TOKEN`); kept only as its digest.
#[derive(Clone)]
pub struct ApiToken {
    digest: [u8; 32],
}

impl fmt::Debug for ApiToken {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("ApiToken(<redacted>)")
    }
}

impl ApiToken {
    /// The token operators type into the console. `None` for an empty or blank token (an empty
    /// token would open the API to anyone).
    #[must_use]
    pub fn new(token: &str) -> Option<Self> {
        let token = token.trim();
        if token.is_empty() {
            return None;
        }
        Some(ApiToken {
            digest: Sha256::digest(token.as_bytes()).into(),
        })
    }

    /// Whether `candidate` is the token, in constant time.
    #[must_use]
    pub fn matches(&self, candidate: &str) -> bool {
        let candidate: [u8; 32] = Sha256::digest(candidate.as_bytes()).into();
        self.digest.ct_eq(&candidate).into()
    }
}

/// Checks `Authorization: Bearer <token>` against the configured token.
///
/// # Errors
/// [`ConsoleRejection::TokenNotConfigured`] when no token is set (the routes stay closed);
/// [`ConsoleRejection::Unauthorized`] when the header is missing, malformed or wrong.
pub fn require_bearer(
    headers: &HeaderMap,
    token: Option<&ApiToken>,
) -> Result<(), ConsoleRejection> {
    let Some(token) = token else {
        return Err(ConsoleRejection::TokenNotConfigured);
    };
    let presented = headers
        .get(AUTHORIZATION)
        .and_then(|value| value.to_str().ok())
        .and_then(|value| {
            let (scheme, rest) = value.trim().split_once(' ')?;
            scheme.eq_ignore_ascii_case("bearer").then(|| rest.trim())
        });
    match presented {
        Some(candidate) if token.matches(candidate) => Ok(()),
        _ => Err(ConsoleRejection::Unauthorized),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use axum::http::HeaderValue;

    fn headers(value: &str) -> HeaderMap {
        let mut headers = HeaderMap::new();
        headers.insert(AUTHORIZATION, HeaderValue::from_str(value).unwrap());
        headers
    }

    #[test]
    fn bearer_must_match_exactly() {
        let token = ApiToken::new("s3cret-token").unwrap();
        assert!(require_bearer(&headers("Bearer s3cret-token"), Some(&token)).is_ok());
        assert!(require_bearer(&headers("bearer  s3cret-token "), Some(&token)).is_ok());
        for wrong in [
            "Bearer s3cret-toke",
            "Bearer s3cret-token2",
            "Basic s3cret-token",
            "s3cret-token",
            "Bearer",
        ] {
            assert!(
                matches!(
                    require_bearer(&headers(wrong), Some(&token)),
                    Err(ConsoleRejection::Unauthorized)
                ),
                "{wrong:?} accepted"
            );
        }
        assert!(matches!(
            require_bearer(&HeaderMap::new(), Some(&token)),
            Err(ConsoleRejection::Unauthorized)
        ));
    }

    #[test]
    fn no_token_configured_means_closed_and_blank_tokens_are_refused() {
        assert!(ApiToken::new("  ").is_none());
        assert!(matches!(
            require_bearer(&headers("Bearer anything"), None),
            Err(ConsoleRejection::TokenNotConfigured)
        ));
    }

    #[test]
    fn debug_never_shows_the_token() {
        let token = ApiToken::new("s3cret-token").unwrap();
        assert_eq!(format!("{token:?}"), "ApiToken(<redacted>)");
    }
}

//! Bearer-token check for `/api/*` (and any other operator route): `Authorization: Bearer
//! $CRMD_API_TOKEN`.
//!
//! - `CRMD_API_TOKEN` unset: every protected route answers `503` "set CRMD_API_TOKEN to enable the
//!   API" — the API is never open by default.
//! - Header missing, not `Bearer`, or a different token: `401` with `WWW-Authenticate: Bearer`.
//!
//! The comparison hashes both tokens with SHA-256 and compares the digests in constant time, so
//! neither the content nor the length of the configured token leaks through timing. Neither token
//! is ever logged or echoed.

use axum::extract::FromRequestParts;
use axum::http::HeaderMap;
use axum::http::header::AUTHORIZATION;
use axum::http::request::Parts;
use sha2::{Digest, Sha256};
use subtle::ConstantTimeEq;

use crate::api::ApiError;
use crate::config::Secret;
use crate::server::EdgeState;

/// Proof that the request carried the configured `CRMD_API_TOKEN`. Put it first in a handler's
/// arguments: the token is checked before the body is read.
#[derive(Debug, Clone, Copy)]
#[non_exhaustive]
pub struct ApiToken;

impl FromRequestParts<EdgeState> for ApiToken {
    type Rejection = ApiError;

    async fn from_request_parts(
        parts: &mut Parts,
        state: &EdgeState,
    ) -> Result<Self, Self::Rejection> {
        require_api_token(state.config().api_token.as_ref(), &parts.headers)?;
        Ok(ApiToken)
    }
}

/// Checks `headers` against the configured token (for routers whose state is not
/// [`EdgeState`]). `configured` is `Config::api_token`.
///
/// # Errors
/// [`ApiError::ApiDisabled`] (503) when no token is configured, [`ApiError::Unauthorized`] (401)
/// when the header is missing, malformed or wrong.
pub fn require_api_token(configured: Option<&Secret>, headers: &HeaderMap) -> Result<(), ApiError> {
    let Some(expected) = configured else {
        return Err(ApiError::ApiDisabled);
    };
    let Some(value) = headers.get(AUTHORIZATION) else {
        return Err(ApiError::Unauthorized(
            "missing Authorization header (expected `Authorization: Bearer <CRMD_API_TOKEN>`)",
        ));
    };
    let presented = value
        .to_str()
        .ok()
        .and_then(|v| {
            let (scheme, token) = v.trim().split_once(' ')?;
            scheme.eq_ignore_ascii_case("bearer").then(|| token.trim())
        })
        .ok_or(ApiError::Unauthorized(
            "Authorization header is not `Bearer <token>`",
        ))?;
    let matches: bool = Sha256::digest(presented.as_bytes())
        .ct_eq(&Sha256::digest(expected.expose().as_bytes()))
        .into();
    if matches {
        Ok(())
    } else {
        Err(ApiError::Unauthorized("invalid API token"))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn headers(authorization: &str) -> HeaderMap {
        let mut h = HeaderMap::new();
        h.insert(AUTHORIZATION, authorization.parse().unwrap());
        h
    }

    #[test]
    fn token_rules() {
        let token = Secret::new("s3cret-token");
        assert!(matches!(
            require_api_token(None, &headers("Bearer s3cret-token")),
            Err(ApiError::ApiDisabled)
        ));
        assert!(require_api_token(Some(&token), &headers("Bearer s3cret-token")).is_ok());
        assert!(require_api_token(Some(&token), &headers("bearer  s3cret-token ")).is_ok());
        for bad in [
            "Bearer s3cret-tokeN",
            "Bearer s3cret-token-longer",
            "Bearer ",
            "Basic s3cret-token",
            "s3cret-token",
        ] {
            assert!(
                matches!(
                    require_api_token(Some(&token), &headers(bad)),
                    Err(ApiError::Unauthorized(_))
                ),
                "{bad}"
            );
        }
        assert!(matches!(
            require_api_token(Some(&token), &HeaderMap::new()),
            Err(ApiError::Unauthorized(_))
        ));
    }
}

//! Service-account credentials and self-signed JWTs (RS256) for Google APIs.
//!
//! Google accepts a JWT signed by the service account's own key as a bearer token when `aud` is
//! the service URL, so no token-exchange network call is needed. Tokens last one hour and are
//! re-minted five minutes before they expire.

use std::fmt;
use std::sync::Mutex;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use base64::Engine as _;
use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use ring::rand::SystemRandom;
use ring::signature::{RSA_PKCS1_SHA256, RsaKeyPair};

use crate::error::CredentialsError;

/// Environment variable holding a path to the service-account JSON key file.
pub const APPLICATION_CREDENTIALS_VAR: &str = "GOOGLE_APPLICATION_CREDENTIALS";
/// Environment variable holding the service-account JSON itself (one line).
pub const CREDENTIALS_JSON_VAR: &str = "GCP_CREDENTIALS_JSON";

/// Lifetime of a minted token.
const TOKEN_LIFETIME: Duration = Duration::from_secs(3600);
/// A cached token is replaced when less than this remains.
const TOKEN_REFRESH_MARGIN: Duration = Duration::from_secs(300);

/// A Google service account: its e-mail and parsed RSA signing key. `Debug` redacts the key.
pub struct GoogleCredentials {
    client_email: String,
    private_key_id: Option<String>,
    key_pair: RsaKeyPair,
}

impl fmt::Debug for GoogleCredentials {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("GoogleCredentials")
            .field("client_email", &self.client_email)
            .field(
                "private_key_id",
                &self.private_key_id.as_ref().map(|_| "<redacted>"),
            )
            .field("private_key", &"<redacted>")
            .finish()
    }
}

impl GoogleCredentials {
    /// Loads credentials from the values of `GOOGLE_APPLICATION_CREDENTIALS` (a path) and
    /// `GCP_CREDENTIALS_JSON` (the JSON). Empty values count as unset. Returns `Ok(None)` when
    /// neither is set, and an error naming the variable when both are set or the one that is
    /// set is unusable.
    pub fn from_env_values(
        application_credentials_path: Option<&str>,
        credentials_json: Option<&str>,
    ) -> Result<Option<Self>, CredentialsError> {
        let path = application_credentials_path.filter(|value| !value.trim().is_empty());
        let json = credentials_json.filter(|value| !value.trim().is_empty());
        match (path, json) {
            (Some(_), Some(_)) => Err(CredentialsError::BothSet),
            (None, None) => Ok(None),
            (Some(path), None) => {
                let text = std::fs::read_to_string(path).map_err(|source| {
                    CredentialsError::Unreadable {
                        path: path.to_owned(),
                        source,
                    }
                })?;
                Self::from_json(APPLICATION_CREDENTIALS_VAR, &text).map(Some)
            }
            (None, Some(json)) => Self::from_json(CREDENTIALS_JSON_VAR, json).map(Some),
        }
    }

    /// Parses a service-account JSON key; `variable` names its source in error messages.
    pub fn from_json(variable: &'static str, json: &str) -> Result<Self, CredentialsError> {
        // Parse into a generic value first: serde_json's syntax errors carry only a position,
        // while typed deserialization errors could quote a field's (secret) content.
        let value: serde_json::Value =
            serde_json::from_str(json).map_err(|error| CredentialsError::InvalidJson {
                variable,
                detail: format!(
                    "{:?} error at line {} column {}",
                    error.classify(),
                    error.line(),
                    error.column()
                ),
            })?;
        let string_field = |field: &'static str| {
            value
                .get(field)
                .and_then(serde_json::Value::as_str)
                .filter(|text| !text.is_empty())
                .ok_or(CredentialsError::MissingField { variable, field })
        };
        let client_email = string_field("client_email")?.to_owned();
        let private_key_pem = string_field("private_key")?;
        let private_key_id = value
            .get("private_key_id")
            .and_then(serde_json::Value::as_str)
            .map(str::to_owned);
        let key_pair = parse_rsa_key(variable, private_key_pem)?;
        Ok(Self {
            client_email,
            private_key_id,
            key_pair,
        })
    }

    /// The service account's e-mail (not secret).
    pub fn client_email(&self) -> &str {
        &self.client_email
    }

    /// Mints a self-signed JWT for `audience` (the service URL), valid from `issued_at` for one
    /// hour. Pure apart from the signature's randomness; no network call.
    pub fn mint_jwt(&self, audience: &str, issued_at: SystemTime) -> Result<String, JwtError> {
        let iat = issued_at
            .duration_since(UNIX_EPOCH)
            .map_err(|_| JwtError::ClockBeforeEpoch)?
            .as_secs();
        let exp = iat + TOKEN_LIFETIME.as_secs();
        let mut header = serde_json::json!({ "alg": "RS256", "typ": "JWT" });
        if let Some(kid) = &self.private_key_id {
            header["kid"] = serde_json::Value::String(kid.clone());
        }
        let claims = serde_json::json!({
            "iss": self.client_email,
            "sub": self.client_email,
            "aud": audience,
            "iat": iat,
            "exp": exp,
        });
        let signing_input = format!(
            "{}.{}",
            URL_SAFE_NO_PAD.encode(header.to_string()),
            URL_SAFE_NO_PAD.encode(claims.to_string())
        );
        let mut signature = vec![0u8; self.key_pair.public().modulus_len()];
        self.key_pair
            .sign(
                &RSA_PKCS1_SHA256,
                &SystemRandom::new(),
                signing_input.as_bytes(),
                &mut signature,
            )
            .map_err(|_| JwtError::SigningFailed)?;
        Ok(format!(
            "{signing_input}.{}",
            URL_SAFE_NO_PAD.encode(signature)
        ))
    }

    /// The DER-encoded RSA public key (for verifying minted tokens in tests and tools).
    pub fn public_key_der(&self) -> &[u8] {
        use ring::signature::KeyPair as _;
        self.key_pair.public_key().as_ref()
    }
}

fn parse_rsa_key(variable: &'static str, pem: &str) -> Result<RsaKeyPair, CredentialsError> {
    let invalid = |problem| CredentialsError::InvalidKey { variable, problem };
    let mut reader = pem.as_bytes();
    let mut found = None;
    for item in rustls_pemfile::read_all(&mut reader) {
        match item {
            Ok(rustls_pemfile::Item::Pkcs8Key(key)) => {
                found = Some(key);
                break;
            }
            Ok(_) => {}
            Err(_) => return Err(invalid("the PEM text is malformed")),
        }
    }
    let key = found.ok_or_else(|| invalid("no `BEGIN PRIVATE KEY` (PKCS#8) block found"))?;
    RsaKeyPair::from_pkcs8(key.secret_pkcs8_der())
        .map_err(|_| invalid("the PKCS#8 block is not an RSA key ring accepts"))
}

/// Why a JWT could not be minted.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum JwtError {
    /// The system clock is set before 1970.
    #[error("the system clock is before 1970: fix the host clock")]
    ClockBeforeEpoch,
    /// `ring` refused to sign.
    #[error("RSA signing failed: the service-account key may be unusable; download a new key")]
    SigningFailed,
}

/// Mints and caches bearer tokens for one audience, re-minting before expiry.
pub(crate) struct TokenSource {
    credentials: std::sync::Arc<GoogleCredentials>,
    audience: String,
    cached: Mutex<Option<(String, SystemTime)>>,
}

impl fmt::Debug for TokenSource {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("TokenSource")
            .field("client_email", &self.credentials.client_email)
            .field("audience", &self.audience)
            .finish_non_exhaustive()
    }
}

impl TokenSource {
    pub(crate) fn new(credentials: std::sync::Arc<GoogleCredentials>, audience: String) -> Self {
        Self {
            credentials,
            audience,
            cached: Mutex::new(None),
        }
    }

    /// `Bearer <jwt>` valid for at least five more minutes at `now`.
    pub(crate) fn bearer(&self, now: SystemTime) -> Result<String, JwtError> {
        let mut cached = self
            .cached
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner);
        if let Some((token, expires_at)) = cached.as_ref() {
            let fresh = expires_at
                .duration_since(now)
                .is_ok_and(|remaining| remaining > TOKEN_REFRESH_MARGIN);
            if fresh {
                return Ok(format!("Bearer {token}"));
            }
        }
        let token = self.credentials.mint_jwt(&self.audience, now)?;
        let bearer = format!("Bearer {token}");
        *cached = Some((token, now + TOKEN_LIFETIME));
        Ok(bearer)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn fixture() -> std::sync::Arc<GoogleCredentials> {
        let path = concat!(
            env!("CARGO_MANIFEST_DIR"),
            "/tests/data/test-service-account.json"
        );
        let credentials = GoogleCredentials::from_env_values(Some(path), None)
            .unwrap()
            .unwrap();
        std::sync::Arc::new(credentials)
    }

    #[test]
    fn bearer_is_reused_while_fresh_and_reminted_five_minutes_before_expiry() {
        let tokens = TokenSource::new(fixture(), "https://texttospeech.googleapis.com/".to_owned());
        let t0 = UNIX_EPOCH + Duration::from_secs(1_800_000_000);
        let first = tokens.bearer(t0).unwrap();
        assert!(first.starts_with("Bearer ey"));
        assert_eq!(
            tokens.bearer(t0 + Duration::from_secs(54 * 60)).unwrap(),
            first
        );
        let reminted = tokens.bearer(t0 + Duration::from_secs(55 * 60)).unwrap();
        assert_ne!(
            reminted, first,
            "a token with five minutes left is replaced"
        );
        assert_eq!(
            tokens.bearer(t0 + Duration::from_secs(56 * 60)).unwrap(),
            reminted
        );
        let debug = format!("{tokens:?}");
        let token = reminted.trim_start_matches("Bearer ");
        assert!(
            !debug.contains(token),
            "tokens never appear in Debug: {debug}"
        );
    }
}

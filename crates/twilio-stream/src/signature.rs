//! `X-Twilio-Signature` checks for webhooks (form bodies and JSON bodies).
//!
//! The signed string is the full public URL Twilio requested, followed for form POSTs by every
//! parameter as `name` + `value`, sorted by name and, for a repeated name, by value. The
//! signature is `base64(HMAC-SHA1(auth_token, string))`. For JSON bodies only the URL is signed;
//! it carries `bodySHA256=<hex sha256 of the raw body>`, which must match the body.
//!
//! Like Twilio's official validators, the URL is also tried with the scheme's default port
//! added (`:443` / `:80`) when it has none, or removed when it carries it. A non-default port is
//! never removed: it is part of what Twilio signed.
//!
//! The auth token never appears in an error or a `Debug` output.

use base64::Engine as _;
use base64::engine::general_purpose::STANDARD;
use hmac::{Hmac, Mac};
use sha1::Sha1;
use sha2::{Digest, Sha256};
use subtle::ConstantTimeEq;

type HmacSha1 = Hmac<Sha1>;

/// Why a request signature was refused.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum SignatureError {
    /// No `X-Twilio-Signature` header (or an empty one).
    #[error(
        "request has no X-Twilio-Signature header; it did not come from Twilio or a proxy dropped the header"
    )]
    MissingHeader,
    /// The header does not match the URL and parameters.
    #[error(
        "X-Twilio-Signature does not match {url}; check that the public base URL (or X-Forwarded-Proto/Host) \
         is exactly the URL configured in Twilio and that the auth token belongs to this account"
    )]
    Mismatch {
        /// The URL the signature was checked against (the as-given variant).
        url: String,
    },
    /// A JSON webhook URL without `bodySHA256`.
    #[error(
        "JSON webhook URL {url} has no bodySHA256 query parameter; Twilio adds it to signed JSON requests"
    )]
    MissingBodyHash {
        /// The URL as given.
        url: String,
    },
    /// `bodySHA256` is not the SHA-256 of the received body.
    #[error(
        "bodySHA256 in the URL does not match the received body; the body was altered (or re-encoded by a proxy)"
    )]
    BodyHashMismatch,
}

/// The signature Twilio would send for a form POST to `url` with `params`
/// (for simulators and tests).
#[must_use]
pub fn sign_form(auth_token: &str, url: &str, params: &[(String, String)]) -> String {
    let mut sorted: Vec<(&str, &str)> = params
        .iter()
        .map(|(n, v)| (n.as_str(), v.as_str()))
        .collect();
    sorted.sort_unstable();
    signature_of(auth_token, url, &sorted)
}

/// The signature Twilio would send for a JSON POST to `url` (which must already carry
/// `bodySHA256`, see [`body_sha256_hex`]): only the URL is signed.
#[must_use]
pub fn sign_url(auth_token: &str, url: &str) -> String {
    signature_of(auth_token, url, &[])
}

/// Lower-case hex SHA-256 of a raw body, as Twilio puts in `bodySHA256`.
#[must_use]
pub fn body_sha256_hex(body: &[u8]) -> String {
    hex::encode(Sha256::digest(body))
}

/// Check the signature of a form-encoded webhook. `url` is the full public URL with its query
/// string (see [`crate::url::PublicBaseUrl::request_url`]); `params` are *all* received form
/// fields, in any order; `header` is the `X-Twilio-Signature` value.
///
/// # Errors
/// [`SignatureError::MissingHeader`] or [`SignatureError::Mismatch`].
pub fn validate_form(
    auth_token: &str,
    url: &str,
    params: &[(String, String)],
    header: &str,
) -> Result<(), SignatureError> {
    let header = header.trim();
    if header.is_empty() {
        return Err(SignatureError::MissingHeader);
    }
    let mut sorted: Vec<(&str, &str)> = params
        .iter()
        .map(|(n, v)| (n.as_str(), v.as_str()))
        .collect();
    sorted.sort_unstable();
    let mut matched = false;
    for candidate in url_variants(url) {
        let expected = signature_of(auth_token, &candidate, &sorted);
        matched |= bool::from(expected.as_bytes().ct_eq(header.as_bytes()));
    }
    if matched {
        Ok(())
    } else {
        Err(SignatureError::Mismatch {
            url: url.to_owned(),
        })
    }
}

/// Check the signature of a JSON webhook: the URL's `bodySHA256` must be the SHA-256 of `body`
/// and the header must sign the URL (with no parameters).
///
/// # Errors
/// [`SignatureError::MissingHeader`], [`SignatureError::MissingBodyHash`],
/// [`SignatureError::BodyHashMismatch`] or [`SignatureError::Mismatch`].
pub fn validate_json(
    auth_token: &str,
    url: &str,
    body: &[u8],
    header: &str,
) -> Result<(), SignatureError> {
    let header_trimmed = header.trim();
    if header_trimmed.is_empty() {
        return Err(SignatureError::MissingHeader);
    }
    let Some(claimed) = query_value(url, "bodySHA256") else {
        return Err(SignatureError::MissingBodyHash {
            url: url.to_owned(),
        });
    };
    let actual = body_sha256_hex(body);
    if !bool::from(
        actual
            .as_bytes()
            .ct_eq(claimed.to_ascii_lowercase().as_bytes()),
    ) {
        return Err(SignatureError::BodyHashMismatch);
    }
    validate_form(auth_token, url, &[], header_trimmed)
}

fn signature_of(auth_token: &str, url: &str, sorted_params: &[(&str, &str)]) -> String {
    // HMAC accepts keys of any length: `new_from_slice` cannot fail for `Hmac<Sha1>`.
    #[allow(clippy::expect_used)]
    let mut mac =
        HmacSha1::new_from_slice(auth_token.as_bytes()).expect("HMAC takes keys of any length");
    mac.update(url.as_bytes());
    for (name, value) in sorted_params {
        mac.update(name.as_bytes());
        mac.update(value.as_bytes());
    }
    STANDARD.encode(mac.finalize().into_bytes())
}

/// The first value of `name` in the URL's query string (raw, not percent-decoded: hex needs none).
fn query_value<'u>(url: &'u str, name: &str) -> Option<&'u str> {
    let query = url.split_once('?')?.1;
    let query = query.split_once('#').map_or(query, |(q, _)| q);
    query
        .split('&')
        .find_map(|pair| match pair.split_once('=') {
            Some((key, value)) if key == name => Some(value),
            _ => None,
        })
}

/// `url` as given, plus the same URL with the default port removed (if present) or added (if
/// no port). Other URLs (no scheme, unknown scheme) are only tried as given.
fn url_variants(url: &str) -> Vec<String> {
    let mut variants = vec![url.to_owned()];
    let Some((scheme, rest)) = url.split_once("://") else {
        return variants;
    };
    let default_port = match scheme.to_ascii_lowercase().as_str() {
        "https" | "wss" => "443",
        "http" | "ws" => "80",
        _ => return variants,
    };
    let authority_end = rest.find(['/', '?', '#']).unwrap_or(rest.len());
    let (authority, tail) = rest.split_at(authority_end);
    // Userinfo (`user@`) is kept as is; the port follows the host.
    let host_start = authority.rfind('@').map_or(0, |at| at + 1);
    let (userinfo, host_port) = authority.split_at(host_start);
    // A ':' after the closing bracket of an IPv6 literal, or any ':' in a plain host, starts the port.
    let port_colon = match host_port.rfind(']') {
        Some(bracket) => host_port[bracket..].find(':').map(|i| bracket + i),
        None => host_port.find(':'),
    };
    match port_colon {
        Some(colon) => {
            if &host_port[colon + 1..] == default_port {
                variants.push(format!(
                    "{scheme}://{userinfo}{}{tail}",
                    &host_port[..colon]
                ));
            }
        }
        None => variants.push(format!(
            "{scheme}://{userinfo}{host_port}:{default_port}{tail}"
        )),
    }
    variants
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn url_variants_add_or_remove_only_the_default_port() {
        assert_eq!(
            url_variants("https://a.com/x?y=1"),
            ["https://a.com/x?y=1", "https://a.com:443/x?y=1"]
        );
        assert_eq!(
            url_variants("https://a.com:443/x"),
            ["https://a.com:443/x", "https://a.com/x"]
        );
        assert_eq!(
            url_variants("http://a.com:80"),
            ["http://a.com:80", "http://a.com"]
        );
        assert_eq!(url_variants("http://a.com:1234/x"), ["http://a.com:1234/x"]);
        assert_eq!(
            url_variants("https://[::1]/x"),
            ["https://[::1]/x", "https://[::1]:443/x"]
        );
        assert_eq!(
            url_variants("https://[::1]:443/x"),
            ["https://[::1]:443/x", "https://[::1]/x"]
        );
        assert_eq!(url_variants("/relative"), ["/relative"]);
    }

    #[test]
    fn query_value_finds_the_named_parameter() {
        assert_eq!(
            query_value("https://a/x?foo=1&bodySHA256=ab#f", "bodySHA256"),
            Some("ab")
        );
        assert_eq!(query_value("https://a/x?foo=1", "bodySHA256"), None);
        assert_eq!(query_value("https://a/x", "foo"), None);
    }
}

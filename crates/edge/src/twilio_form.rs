//! The `TwilioForm` extractor: reads a webhook's form body within `MAX_BODY_BYTES`, rebuilds the
//! public URL Twilio requested, and checks `X-Twilio-Signature` when `TWILIO_AUTH_TOKEN` is set.
//! Every Twilio webhook route (voice and WhatsApp) takes its form through this one extractor.

use axum::body::Bytes;
use axum::extract::{FromRequest, Request};
use axum::http::HeaderMap;
use axum::http::header::CONTENT_TYPE;
use percent_encoding::percent_decode_str;
use twilio_stream::url::PublicBaseUrl;

use crate::error::RequestError;
use crate::server::EdgeState;

/// Header carrying Twilio's request signature.
pub const TWILIO_SIGNATURE_HEADER: &str = "x-twilio-signature";

/// A Twilio webhook's form, already authenticated when signature checks are on.
#[derive(Debug, Clone)]
pub struct TwilioForm {
    /// Every `name=value` pair in body order (repeated names kept), percent-decoded.
    pub pairs: Vec<(String, String)>,
    /// The public URL the signature covers (base + path + query).
    pub public_url: String,
    /// The public base URL (from `PUBLIC_BASE_URL` or the forwarded headers).
    pub public_base: PublicBaseUrl,
    /// True when the signature was checked and valid; false when checks are off.
    pub signature_verified: bool,
}

impl TwilioForm {
    /// The first value of `name`, if present and non-empty.
    pub fn get(&self, name: &str) -> Option<&str> {
        self.pairs
            .iter()
            .find(|(k, _)| k == name)
            .map(|(_, v)| v.as_str())
            .filter(|v| !v.is_empty())
    }

    /// The first value of `name`, or [`RequestError::MissingField`].
    pub fn require(&self, name: &'static str) -> Result<&str, RequestError> {
        self.get(name).ok_or(RequestError::MissingField(name))
    }
}

/// The public base URL of a request: `PUBLIC_BASE_URL` when configured, else
/// `X-Forwarded-Proto` + (`X-Forwarded-Host` or `Host`).
pub fn public_base_for(
    configured: Option<&PublicBaseUrl>,
    headers: &HeaderMap,
) -> Result<PublicBaseUrl, RequestError> {
    if let Some(base) = configured {
        return Ok(base.clone());
    }
    let first = |name: &str| {
        headers
            .get(name)
            .and_then(|v| v.to_str().ok())
            .and_then(|v| v.split(',').next())
            .map(str::trim)
            .filter(|v| !v.is_empty())
    };
    let host = first("x-forwarded-host")
        .or_else(|| first("host"))
        .ok_or_else(|| RequestError::NoPublicUrl("no Host header".to_owned()))?;
    PublicBaseUrl::from_forwarded(first("x-forwarded-proto"), host)
        .map_err(|e| RequestError::NoPublicUrl(e.to_string()))
}

/// Splits an `application/x-www-form-urlencoded` body into decoded pairs; rejects bodies that are
/// not UTF-8 or whose escapes do not decode to UTF-8.
pub fn parse_form_pairs(body: &[u8]) -> Result<Vec<(String, String)>, RequestError> {
    let text = std::str::from_utf8(body)
        .map_err(|_| RequestError::MalformedForm("body is not UTF-8".to_owned()))?;
    let decode = |raw: &str| -> Result<String, RequestError> {
        let spaced = raw.replace('+', " ");
        percent_decode_str(&spaced)
            .decode_utf8()
            .map(|s| s.into_owned())
            .map_err(|_| {
                RequestError::MalformedForm("a %-escape does not decode to UTF-8".to_owned())
            })
    };
    let mut pairs = Vec::new();
    for field in text
        .trim_end_matches(['\r', '\n'])
        .split('&')
        .filter(|f| !f.is_empty())
    {
        let (name, value) = field.split_once('=').unwrap_or((field, ""));
        if name.is_empty() {
            return Err(RequestError::MalformedForm(
                "a field has an empty name".to_owned(),
            ));
        }
        if name.chars().any(|c| c.is_control() || c == '{' || c == '"') {
            return Err(RequestError::MalformedForm("not a form body".to_owned()));
        }
        pairs.push((decode(name)?, decode(value)?));
    }
    Ok(pairs)
}

fn check_content_type(headers: &HeaderMap) -> Result<(), RequestError> {
    let Some(value) = headers.get(CONTENT_TYPE) else {
        return Ok(());
    };
    let value = value.to_str().unwrap_or_default().to_ascii_lowercase();
    if value.starts_with("application/x-www-form-urlencoded") {
        Ok(())
    } else {
        Err(RequestError::MalformedForm(format!(
            "expected Content-Type application/x-www-form-urlencoded, got {value:?}"
        )))
    }
}

impl FromRequest<EdgeState> for TwilioForm {
    type Rejection = RequestError;

    async fn from_request(req: Request, state: &EdgeState) -> Result<Self, Self::Rejection> {
        let headers = req.headers().clone();
        let path_and_query = req
            .uri()
            .path_and_query()
            .map(|pq| pq.as_str().to_owned())
            .unwrap_or_else(|| req.uri().path().to_owned());
        check_content_type(&headers)?;
        let public_base =
            public_base_for(state.config().server.public_base_url.as_ref(), &headers)?;
        let limit = state.config().server.max_body_bytes;
        let body = Bytes::from_request(req, state).await.map_err(|rejection| {
            if rejection.status() == axum::http::StatusCode::PAYLOAD_TOO_LARGE {
                RequestError::BodyTooLarge { limit }
            } else {
                RequestError::BodyUnreadable
            }
        })?;
        let pairs = parse_form_pairs(&body)?;
        let public_url = public_base.request_url(&path_and_query);
        let signature_verified = match &state.config().twilio.auth_token {
            None => false,
            Some(token) => {
                let header = headers
                    .get(TWILIO_SIGNATURE_HEADER)
                    .ok_or_else(|| RequestError::SignatureRejected {
                        reason: format!("no X-Twilio-Signature header on POST {public_url}"),
                    })?
                    .to_str()
                    .map_err(|_| RequestError::SignatureRejected {
                        reason: "X-Twilio-Signature is not ASCII".to_owned(),
                    })?;
                twilio_stream::signature::validate_form(token.expose(), &public_url, &pairs, header).map_err(
                    |e| RequestError::SignatureRejected {
                        reason: format!("{e} (signed URL {public_url}; check PUBLIC_BASE_URL matches the URL configured in Twilio)"),
                    },
                )?;
                true
            }
        };
        Ok(Self {
            pairs,
            public_url,
            public_base,
            signature_verified,
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn form_pairs_decode_plus_and_escapes_and_keep_repeats() {
        let pairs =
            parse_form_pairs(b"CallSid=CA1&From=%2B972501234567&Body=hi+there&To=a&To=b").unwrap();
        assert_eq!(
            pairs,
            [
                ("CallSid".to_owned(), "CA1".to_owned()),
                ("From".to_owned(), "+972501234567".to_owned()),
                ("Body".to_owned(), "hi there".to_owned()),
                ("To".to_owned(), "a".to_owned()),
                ("To".to_owned(), "b".to_owned()),
            ]
        );
        assert_eq!(parse_form_pairs(b"").unwrap(), []);
        assert_eq!(
            parse_form_pairs(b"Flag").unwrap(),
            [("Flag".to_owned(), String::new())]
        );
    }

    #[test]
    fn malformed_forms_are_refused() {
        assert!(matches!(
            parse_form_pairs(b"\xff\xfe=1"),
            Err(RequestError::MalformedForm(_))
        ));
        assert!(matches!(
            parse_form_pairs(b"a=%C3%28"),
            Err(RequestError::MalformedForm(_))
        ));
        assert!(matches!(
            parse_form_pairs(b"=novalue"),
            Err(RequestError::MalformedForm(_))
        ));
        assert!(matches!(
            parse_form_pairs(br#"{"CallSid":"CA1"}"#),
            Err(RequestError::MalformedForm(_))
        ));
    }

    #[test]
    fn public_base_prefers_configuration_then_forwarded_headers() {
        let mut headers = HeaderMap::new();
        headers.insert("host", "internal:8080".parse().unwrap());
        headers.insert("x-forwarded-host", "ai-crmd.replit.app".parse().unwrap());
        headers.insert("x-forwarded-proto", "https".parse().unwrap());
        let derived = public_base_for(None, &headers).unwrap();
        assert_eq!(
            derived.https("/webhook/x"),
            "https://ai-crmd.replit.app/webhook/x"
        );
        let configured = PublicBaseUrl::parse("https://example.com/").unwrap();
        let chosen = public_base_for(Some(&configured), &headers).unwrap();
        assert_eq!(chosen.https("/webhook/x"), "https://example.com/webhook/x");
        assert!(matches!(
            public_base_for(None, &HeaderMap::new()),
            Err(RequestError::NoPublicUrl(_))
        ));
    }
}

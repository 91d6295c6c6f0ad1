//! Senders of WhatsApp messages: Twilio's Messages API and a WhatsApp Web bridge over HTTP.

use std::time::Duration;

use serde::Deserialize;

/// A message ready for a provider: addresses already normalized.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct OutboundWhatsApp {
    /// Recipient in E.164 (`+…`, no `whatsapp:` prefix; each provider adds what it needs).
    pub to_e164: String,
    /// Text, 1..=1600 characters.
    pub body: String,
    /// Optional media URL.
    pub media_url: Option<String>,
}

/// The provider took the message.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ProviderAccepted {
    /// Provider message id (Twilio `sid`, `SM…`/`MM…`).
    pub provider_sid: String,
    /// Status the provider reported (`queued`, `accepted`, …), if any.
    pub status: Option<String>,
}

/// Why a provider did not take a message. Never contains credentials.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum ProviderError {
    /// The provider refused this message; sending it again will fail the same way.
    #[error("{provider} rejected the message (HTTP {http_status}{}): {message}", code_suffix(.code))]
    Rejected {
        /// `twilio` or `bridge`.
        provider: &'static str,
        /// HTTP status of the answer.
        http_status: u16,
        /// Provider error code (e.g. Twilio `21211` invalid number, `63016` outside the 24 h window).
        code: Option<String>,
        /// Provider error text.
        message: String,
    },
    /// The provider failed in a way that may pass (5xx, 429, connection refused, reset).
    #[error("{provider} unavailable{}: {message}", status_suffix(*.http_status))]
    Unavailable {
        /// `twilio` or `bridge`.
        provider: &'static str,
        /// HTTP status when there was an answer.
        http_status: Option<u16>,
        /// Provider error code when the answer carried one.
        code: Option<String>,
        /// What happened.
        message: String,
    },
    /// No answer within the attempt timeout.
    #[error("{provider} did not answer within {timeout:?}")]
    Timeout {
        /// `twilio` or `bridge`.
        provider: &'static str,
        /// The timeout that expired.
        timeout: Duration,
    },
}

fn code_suffix(code: &Option<String>) -> String {
    code.as_ref()
        .map(|c| format!(", code {c}"))
        .unwrap_or_default()
}

fn status_suffix(status: Option<u16>) -> String {
    status.map(|s| format!(" (HTTP {s})")).unwrap_or_default()
}

impl ProviderError {
    /// True when another attempt may succeed.
    #[must_use]
    pub fn is_transient(&self) -> bool {
        !matches!(self, ProviderError::Rejected { .. })
    }

    /// The provider's error code, if it gave one.
    #[must_use]
    pub fn code(&self) -> Option<&str> {
        match self {
            ProviderError::Rejected { code, .. } | ProviderError::Unavailable { code, .. } => {
                code.as_deref()
            }
            ProviderError::Timeout { .. } => None,
        }
    }
}

/// Something that can send a WhatsApp message. Implementations must not panic on bad answers;
/// the service runs them in their own task anyway, so a panic only fails that one send.
#[async_trait::async_trait]
pub trait WhatsAppProvider: Send + Sync + std::fmt::Debug {
    /// `twilio` or `bridge` (stored with each message).
    fn name(&self) -> &'static str;
    /// The sender address stored with outbound messages (e.g. `whatsapp:+14155238886`).
    fn sender_address(&self) -> String;
    /// Sends one message; one attempt, no retry (the service retries).
    async fn send(&self, msg: &OutboundWhatsApp) -> Result<ProviderAccepted, ProviderError>;
}

/// Why a provider could not be built from configuration.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum ProviderConfigError {
    /// A required setting is missing or malformed.
    #[error("{setting} {reason}")]
    Invalid {
        /// Environment variable name.
        setting: &'static str,
        /// What is wrong and how to fix it.
        reason: &'static str,
    },
    /// The HTTP client could not be built (TLS backend).
    #[error("cannot build the HTTP client: {0}")]
    Client(String),
}

/// Twilio's Messages API: `POST {api_base}/2010-04-01/Accounts/{AccountSid}/Messages.json`,
/// form-encoded, HTTP Basic `AccountSid:AuthToken`.
#[derive(Clone)]
pub struct TwilioMessagesProvider {
    client: reqwest::Client,
    messages_url: String,
    account_sid: String,
    auth_token: String,
    from: String,
    status_callback: Option<String>,
    request_timeout: Duration,
}

impl std::fmt::Debug for TwilioMessagesProvider {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("TwilioMessagesProvider")
            .field("messages_url", &self.messages_url)
            .field("account_sid", &self.account_sid)
            .field("auth_token", &"<redacted>")
            .field("from", &self.from)
            .field("status_callback", &self.status_callback)
            .finish()
    }
}

/// Settings of [`TwilioMessagesProvider`].
#[derive(Clone)]
pub struct TwilioMessagesConfig {
    /// `TWILIO_API_BASE` (default `https://api.twilio.com`), no trailing path.
    pub api_base: String,
    /// `TWILIO_ACCOUNT_SID`.
    pub account_sid: String,
    /// `TWILIO_AUTH_TOKEN` (secret: never logged).
    pub auth_token: String,
    /// `TWILIO_WHATSAPP_FROM`, `whatsapp:+…` (a bare `+…` gets the prefix).
    pub from: String,
    /// Public URL of `/webhook/whatsapp/status`, sent as `StatusCallback`.
    pub status_callback: Option<String>,
    /// Per-request timeout (the service also bounds each attempt).
    pub request_timeout: Duration,
}

impl std::fmt::Debug for TwilioMessagesConfig {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("TwilioMessagesConfig")
            .field("api_base", &self.api_base)
            .field("account_sid", &self.account_sid)
            .field("auth_token", &"<redacted>")
            .field("from", &self.from)
            .field("status_callback", &self.status_callback)
            .field("request_timeout", &self.request_timeout)
            .finish()
    }
}

/// Twilio's JSON answers (success and error share a few field names).
#[derive(Debug, Deserialize)]
struct TwilioAnswer {
    sid: Option<String>,
    status: Option<serde_json::Value>,
    code: Option<serde_json::Value>,
    message: Option<String>,
    error_code: Option<serde_json::Value>,
    error_message: Option<String>,
}

fn json_scalar_to_string(v: &serde_json::Value) -> Option<String> {
    match v {
        serde_json::Value::Null => None,
        serde_json::Value::String(s) => Some(s.clone()),
        other => Some(other.to_string()),
    }
}

impl TwilioMessagesProvider {
    /// Checks the settings and builds the HTTP client.
    pub fn new(config: TwilioMessagesConfig) -> Result<Self, ProviderConfigError> {
        let base = config.api_base.trim_end_matches('/');
        if !(base.starts_with("https://") || base.starts_with("http://")) {
            return Err(ProviderConfigError::Invalid {
                setting: "TWILIO_API_BASE",
                reason: "must be an http(s) URL such as https://api.twilio.com",
            });
        }
        let sid_ok = !config.account_sid.is_empty()
            && config.account_sid.len() <= 64
            && config
                .account_sid
                .bytes()
                .all(|b| b.is_ascii_alphanumeric());
        if !sid_ok {
            return Err(ProviderConfigError::Invalid {
                setting: "TWILIO_ACCOUNT_SID",
                reason: "must be your account sid (AC followed by 32 hex digits)",
            });
        }
        if config.auth_token.is_empty() {
            return Err(ProviderConfigError::Invalid {
                setting: "TWILIO_AUTH_TOKEN",
                reason: "is required to send WhatsApp messages through Twilio",
            });
        }
        let from = twilio_stream::phone::normalize_e164(&config.from)
            .map_err(|_| ProviderConfigError::Invalid {
                setting: "TWILIO_WHATSAPP_FROM",
                reason: "must be your WhatsApp sender, e.g. whatsapp:+14155238886",
            })?
            .whatsapp();
        let client = reqwest::Client::builder()
            .timeout(config.request_timeout)
            .build()
            .map_err(|e| ProviderConfigError::Client(e.to_string()))?;
        Ok(TwilioMessagesProvider {
            client,
            messages_url: format!(
                "{base}/2010-04-01/Accounts/{}/Messages.json",
                config.account_sid
            ),
            account_sid: config.account_sid,
            auth_token: config.auth_token,
            from,
            status_callback: config.status_callback,
            request_timeout: config.request_timeout,
        })
    }
}

#[async_trait::async_trait]
impl WhatsAppProvider for TwilioMessagesProvider {
    fn name(&self) -> &'static str {
        "twilio"
    }

    fn sender_address(&self) -> String {
        self.from.clone()
    }

    async fn send(&self, msg: &OutboundWhatsApp) -> Result<ProviderAccepted, ProviderError> {
        let to = format!("whatsapp:{}", msg.to_e164);
        let mut form: Vec<(&str, &str)> =
            vec![("To", &to), ("From", &self.from), ("Body", &msg.body)];
        if let Some(url) = &msg.media_url {
            form.push(("MediaUrl", url));
        }
        if let Some(cb) = &self.status_callback {
            form.push(("StatusCallback", cb));
        }
        let answer = self
            .client
            .post(&self.messages_url)
            .basic_auth(&self.account_sid, Some(&self.auth_token))
            .form(&form)
            .send()
            .await
            .map_err(|e| transport_error("twilio", &e, self.request_timeout))?;
        let status = answer.status().as_u16();
        let text = answer
            .text()
            .await
            .map_err(|e| transport_error("twilio", &e, self.request_timeout))?;
        let parsed: Option<TwilioAnswer> = serde_json::from_str(&text).ok();
        classify_answer(
            "twilio",
            status,
            parsed.as_ref().and_then(|a| a.sid.clone()),
            parsed
                .as_ref()
                .and_then(|a| a.status.as_ref().and_then(json_scalar_to_string)),
            parsed.as_ref().and_then(|a| {
                a.code
                    .as_ref()
                    .or(a.error_code.as_ref())
                    .and_then(json_scalar_to_string)
            }),
            parsed.and_then(|a| a.message.or(a.error_message)),
            &text,
        )
    }
}

/// Turns an HTTP answer into acceptance or a classified error.
fn classify_answer(
    provider: &'static str,
    http_status: u16,
    sid: Option<String>,
    status: Option<String>,
    code: Option<String>,
    message: Option<String>,
    raw: &str,
) -> Result<ProviderAccepted, ProviderError> {
    let message = message.unwrap_or_else(|| {
        let snippet: String = raw.chars().take(200).collect();
        if snippet.is_empty() {
            "empty answer".to_owned()
        } else {
            snippet
        }
    });
    match http_status {
        200..=299 => match sid.filter(|s| !s.is_empty()) {
            Some(provider_sid) => Ok(ProviderAccepted {
                provider_sid,
                status,
            }),
            // Accepted but unidentifiable: retrying could send twice, so fail without retry.
            None => Err(ProviderError::Rejected {
                provider,
                http_status,
                code: None,
                message: "answer carried no message sid".to_owned(),
            }),
        },
        408 | 429 | 500..=599 => Err(ProviderError::Unavailable {
            provider,
            http_status: Some(http_status),
            code,
            message,
        }),
        _ => Err(ProviderError::Rejected {
            provider,
            http_status,
            code,
            message,
        }),
    }
}

fn transport_error(
    provider: &'static str,
    err: &reqwest::Error,
    timeout: Duration,
) -> ProviderError {
    if err.is_timeout() {
        return ProviderError::Timeout { provider, timeout };
    }
    // reqwest errors name the URL, which holds no secret (Basic auth is a header).
    ProviderError::Unavailable {
        provider,
        http_status: None,
        code: None,
        message: if err.is_connect() {
            format!("cannot connect: {}", error_chain(err))
        } else {
            error_chain(err)
        },
    }
}

fn error_chain(err: &dyn std::error::Error) -> String {
    let mut text = err.to_string();
    let mut source = err.source();
    while let Some(s) = source {
        text.push_str(": ");
        text.push_str(&s.to_string());
        source = s.source();
    }
    text
}

/// A WhatsApp Web bridge (Baileys or similar) reached over HTTP:
/// `POST {bridge_url}/send` with JSON `{"to": "+E164", "body": "…", "media_url": …}`, answered
/// by `2xx {"id": "…"}`; errors as `{"error": "…", "code": …}`.
#[derive(Debug, Clone)]
pub struct BridgeProvider {
    client: reqwest::Client,
    send_url: String,
    from: String,
    request_timeout: Duration,
}

#[derive(Debug, Deserialize)]
struct BridgeAnswer {
    id: Option<String>,
    status: Option<String>,
    error: Option<String>,
    code: Option<serde_json::Value>,
}

impl BridgeProvider {
    /// `bridge_url` is `WHATSAPP_BRIDGE_URL` (e.g. `http://127.0.0.1:3001`); `from` is the
    /// bridge's own number as stored with outbound messages.
    pub fn new(
        bridge_url: &str,
        from: &str,
        request_timeout: Duration,
    ) -> Result<Self, ProviderConfigError> {
        let base = bridge_url.trim_end_matches('/');
        if !(base.starts_with("http://") || base.starts_with("https://")) {
            return Err(ProviderConfigError::Invalid {
                setting: "WHATSAPP_BRIDGE_URL",
                reason: "must be an http(s) URL such as http://127.0.0.1:3001",
            });
        }
        let client = reqwest::Client::builder()
            .timeout(request_timeout)
            .build()
            .map_err(|e| ProviderConfigError::Client(e.to_string()))?;
        Ok(BridgeProvider {
            client,
            send_url: format!("{base}/send"),
            from: from.to_owned(),
            request_timeout,
        })
    }
}

#[async_trait::async_trait]
impl WhatsAppProvider for BridgeProvider {
    fn name(&self) -> &'static str {
        "bridge"
    }

    fn sender_address(&self) -> String {
        self.from.clone()
    }

    async fn send(&self, msg: &OutboundWhatsApp) -> Result<ProviderAccepted, ProviderError> {
        let payload = serde_json::json!({
            "to": msg.to_e164,
            "body": msg.body,
            "media_url": msg.media_url,
        });
        let answer = self
            .client
            .post(&self.send_url)
            .json(&payload)
            .send()
            .await
            .map_err(|e| transport_error("bridge", &e, self.request_timeout))?;
        let status = answer.status().as_u16();
        let text = answer
            .text()
            .await
            .map_err(|e| transport_error("bridge", &e, self.request_timeout))?;
        let parsed: Option<BridgeAnswer> = serde_json::from_str(&text).ok();
        classify_answer(
            "bridge",
            status,
            parsed.as_ref().and_then(|a| a.id.clone()),
            parsed.as_ref().and_then(|a| a.status.clone()),
            parsed
                .as_ref()
                .and_then(|a| a.code.as_ref().and_then(json_scalar_to_string)),
            parsed.and_then(|a| a.error),
            &text,
        )
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn config() -> TwilioMessagesConfig {
        TwilioMessagesConfig {
            api_base: "https://api.twilio.com/".to_owned(),
            account_sid: "AC123".to_owned(),
            auth_token: "very-secret-token".to_owned(),
            from: "whatsapp:+14155238886".to_owned(),
            status_callback: None,
            request_timeout: Duration::from_secs(1),
        }
    }

    #[test]
    fn debug_never_shows_the_auth_token() {
        let provider = TwilioMessagesProvider::new(config()).unwrap();
        let text = format!("{provider:?} {:?}", config());
        assert!(!text.contains("very-secret-token"), "{text}");
        assert!(text.contains("https://api.twilio.com/2010-04-01/Accounts/AC123/Messages.json"));
    }

    #[test]
    fn bad_settings_name_the_variable() {
        let err = TwilioMessagesProvider::new(TwilioMessagesConfig {
            from: "14155238886".to_owned(),
            ..config()
        })
        .unwrap_err();
        assert!(err.to_string().starts_with("TWILIO_WHATSAPP_FROM"), "{err}");
        let err = TwilioMessagesProvider::new(TwilioMessagesConfig {
            api_base: "api.twilio.com".to_owned(),
            ..config()
        })
        .unwrap_err();
        assert!(err.to_string().starts_with("TWILIO_API_BASE"), "{err}");
        let err = TwilioMessagesProvider::new(TwilioMessagesConfig {
            auth_token: String::new(),
            ..config()
        })
        .unwrap_err();
        assert!(err.to_string().starts_with("TWILIO_AUTH_TOKEN"), "{err}");
    }

    #[test]
    fn answers_are_classified() {
        let ok = classify_answer(
            "twilio",
            201,
            Some("SM1".into()),
            Some("queued".into()),
            None,
            None,
            "",
        );
        assert_eq!(ok.unwrap().provider_sid, "SM1");
        let no_sid = classify_answer("twilio", 201, None, None, None, None, "{}").unwrap_err();
        assert!(!no_sid.is_transient());
        let e = classify_answer(
            "twilio",
            400,
            None,
            None,
            Some("21211".into()),
            Some("Invalid 'To'".into()),
            "",
        )
        .unwrap_err();
        assert!(!e.is_transient());
        assert_eq!(e.code(), Some("21211"));
        for status in [408, 429, 500, 503] {
            assert!(
                classify_answer("twilio", status, None, None, None, None, "")
                    .unwrap_err()
                    .is_transient()
            );
        }
        let e = classify_answer(
            "twilio",
            502,
            None,
            None,
            None,
            None,
            "<html>bad gateway</html>",
        )
        .unwrap_err();
        assert!(e.to_string().contains("bad gateway"), "{e}");
    }
}

//! Ending a call from our side through Twilio's REST API.

use std::fmt;
use std::time::Duration;

/// Twilio's production REST base URL.
pub const DEFAULT_TWILIO_API_BASE: &str = "https://api.twilio.com";

/// How a hang-up request ended.
#[derive(Debug, Clone, Copy, PartialEq, Eq, serde::Serialize)]
#[serde(rename_all = "snake_case")]
pub enum HangupOutcome {
    /// Twilio accepted `Status=completed`.
    Completed,
    /// Twilio answered 404: the call had already ended.
    AlreadyEnded,
}

/// Why a hang-up request failed. Never contains the auth token.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum HangupError {
    /// The CallSid cannot be put in a URL path.
    #[error(
        "cannot hang up call {call_sid:?}: not a Twilio CallSid (expected CA followed by letters/digits)"
    )]
    InvalidCallSid {
        /// The value given.
        call_sid: String,
    },
    /// Twilio refused the request.
    #[error(
        "Twilio answered HTTP {status} to the hang-up of {call_sid}: {message} (401: check TWILIO_ACCOUNT_SID / TWILIO_AUTH_TOKEN)"
    )]
    Refused {
        /// The call.
        call_sid: String,
        /// HTTP status.
        status: u16,
        /// Twilio's `message` (or the body's start).
        message: String,
    },
    /// Twilio could not be reached.
    #[error("could not reach Twilio at {api_base} to hang up {call_sid}: {detail}")]
    Transport {
        /// The call.
        call_sid: String,
        /// The configured base URL.
        api_base: String,
        /// The transport error.
        detail: String,
    },
    /// The HTTP client could not be built.
    #[error("cannot build the Twilio REST client: {detail}")]
    Client {
        /// Why.
        detail: String,
    },
}

/// A minimal Twilio REST client for `Calls/{CallSid}.json` (`Status=completed`).
/// `Debug` never shows the auth token.
#[derive(Clone)]
pub struct TwilioRest {
    client: reqwest::Client,
    api_base: String,
    account_sid: String,
    auth_token: String,
}

impl fmt::Debug for TwilioRest {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("TwilioRest")
            .field("api_base", &self.api_base)
            .field("account_sid", &self.account_sid)
            .field("auth_token", &"<redacted>")
            .finish()
    }
}

fn is_sid(value: &str) -> bool {
    value.len() >= 4 && value.chars().all(|c| c.is_ascii_alphanumeric())
}

impl TwilioRest {
    /// A client for `api_base` (e.g. [`DEFAULT_TWILIO_API_BASE`], or a stand-in's URL) with
    /// HTTP Basic `account_sid:auth_token` and a 10 s request timeout.
    pub fn new(api_base: &str, account_sid: &str, auth_token: &str) -> Result<Self, HangupError> {
        let client = reqwest::Client::builder()
            .timeout(Duration::from_secs(10))
            .build()
            .map_err(|e| HangupError::Client {
                detail: e.to_string(),
            })?;
        Ok(TwilioRest {
            client,
            api_base: api_base.trim_end_matches('/').to_string(),
            account_sid: account_sid.to_string(),
            auth_token: auth_token.to_string(),
        })
    }

    /// The account the client acts for.
    pub fn account_sid(&self) -> &str {
        &self.account_sid
    }

    /// `POST {api_base}/2010-04-01/Accounts/{AccountSid}/Calls/{call_sid}.json` with
    /// `Status=completed`. A 404 means the call already ended and is not an error.
    pub async fn hangup(&self, call_sid: &str) -> Result<HangupOutcome, HangupError> {
        if !is_sid(call_sid) {
            return Err(HangupError::InvalidCallSid {
                call_sid: call_sid.to_string(),
            });
        }
        let url = format!(
            "{}/2010-04-01/Accounts/{}/Calls/{}.json",
            self.api_base, self.account_sid, call_sid
        );
        let response = self
            .client
            .post(&url)
            .basic_auth(&self.account_sid, Some(&self.auth_token))
            .form(&[("Status", "completed")])
            .send()
            .await
            .map_err(|e| HangupError::Transport {
                call_sid: call_sid.to_string(),
                api_base: self.api_base.clone(),
                detail: e.without_url().to_string(),
            })?;
        let status = response.status();
        if status.is_success() {
            return Ok(HangupOutcome::Completed);
        }
        if status.as_u16() == 404 {
            return Ok(HangupOutcome::AlreadyEnded);
        }
        let body = response.text().await.unwrap_or_default();
        let message = serde_json::from_str::<serde_json::Value>(&body)
            .ok()
            .and_then(|v| {
                v.get("message")
                    .and_then(|m| m.as_str())
                    .map(str::to_string)
            })
            .unwrap_or_else(|| body.chars().take(200).collect());
        Err(HangupError::Refused {
            call_sid: call_sid.to_string(),
            status: status.as_u16(),
            message,
        })
    }
}

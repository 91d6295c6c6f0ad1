//! WhatsApp over HTTP: Twilio's inbound and status webhooks, the bridge's inbound webhook, and
//! `POST /api/whatsapp/send`; plus [`WhatsAppChannel`], built once from the configuration.
//!
//! The storage rules (exactly once per `MessageSid`, statuses only move forward, a send is stored
//! before it leaves and never lost) live in `crm::whatsapp`; this module parses requests, checks
//! signatures and tokens, and maps outcomes to status codes.

use std::sync::Arc;
use std::time::Duration;

use axum::Json;
use axum::body::Bytes;
use axum::extract::{FromRequest, Request, State};
use axum::http::{HeaderMap, StatusCode};
use axum::response::{IntoResponse, Response};
use crm::whatsapp::{
    BridgeInbound, BridgeProvider, BridgeSupervisor, IngestOutcome, OutboundWhatsApp,
    ProviderAccepted, ProviderConfigError, ProviderError, RestartPolicy, SendError, SendPolicy,
    SendRequest, StatusOutcome, TwilioMessagesConfig, TwilioMessagesProvider, WhatsAppError,
    WhatsAppProvider, WhatsAppService,
};
use twilio_stream::forms::{MessageStatusCallback, WhatsAppInbound};

use crate::api::ApiError;
use crate::auth::ApiToken;
use crate::config::{Config, ConfigError, WhatsAppProviderKind};
use crate::error::StartupError;
use crate::server::EdgeState;
use crate::twilio_form::TwilioForm;

/// Header Twilio repeats on every retry of one webhook event.
pub const TWILIO_IDEMPOTENCY_HEADER: &str = "i-twilio-idempotency-token";
/// Header that makes a retried `POST /api/whatsapp/send` safe.
pub const IDEMPOTENCY_KEY_HEADER: &str = "idempotency-key";

/// Per-request timeout of the HTTP client talking to the provider (each attempt is also bounded
/// by [`SendPolicy::attempt_timeout`]).
const PROVIDER_REQUEST_TIMEOUT: Duration = Duration::from_secs(10);

/// Told the final status of every `POST /api/whatsapp/send` (`sent`, `failed`, …), e.g. to
/// count sends by status in metrics.
pub type SendObserver = Arc<dyn Fn(&str) + Send + Sync>;

/// The edge's WhatsApp: the CRM service plus whether sending is configured. Cheap to clone.
#[derive(Clone)]
pub struct WhatsAppChannel {
    service: WhatsAppService,
    /// `Some(reason)` when sending is off; the reason names the variables to set.
    sending_off: Option<String>,
    on_send: Option<SendObserver>,
}

impl std::fmt::Debug for WhatsAppChannel {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("WhatsAppChannel")
            .field("service", &self.service)
            .field("sending_off", &self.sending_off)
            .field("on_send", &self.on_send.is_some())
            .finish()
    }
}

impl WhatsAppChannel {
    /// Calls `observer` with the final status of every send (after retries).
    #[must_use]
    pub fn with_send_observer(mut self, observer: SendObserver) -> Self {
        self.on_send = Some(observer);
        self
    }

    /// Builds the provider named by `WHATSAPP_PROVIDER` with the default [`SendPolicy`].
    ///
    /// Provider `twilio` without `TWILIO_ACCOUNT_SID`, `TWILIO_AUTH_TOKEN` or
    /// `TWILIO_WHATSAPP_FROM` is not an error: inbound webhooks and status callbacks still work,
    /// and `POST /api/whatsapp/send` answers `503` naming what is missing.
    ///
    /// # Errors
    /// [`StartupError::Config`] when a provider setting is unusable.
    pub fn from_config(config: &Config, store: crm::Store) -> Result<Self, StartupError> {
        Self::from_config_with_policy(config, store, SendPolicy::default())
    }

    /// [`WhatsAppChannel::from_config`] with explicit retry and timeout settings.
    ///
    /// # Errors
    /// [`StartupError::Config`] when a provider setting is unusable.
    pub fn from_config_with_policy(
        config: &Config,
        store: crm::Store,
        policy: SendPolicy,
    ) -> Result<Self, StartupError> {
        let sender = config
            .twilio
            .whatsapp_from
            .as_deref()
            .and_then(|from| twilio_stream::phone::normalize_e164(from).ok())
            .map(|e164| e164.whatsapp());
        let (provider, sending_off): (Arc<dyn WhatsAppProvider>, Option<String>) = match config
            .whatsapp
            .provider
        {
            WhatsAppProviderKind::Bridge => {
                // Config validation guarantees the URL when the provider is `bridge`.
                let url = config.whatsapp.bridge_url.as_deref().unwrap_or_default();
                let provider = BridgeProvider::new(
                    url,
                    sender.as_deref().unwrap_or("whatsapp:bridge"),
                    PROVIDER_REQUEST_TIMEOUT,
                )
                .map_err(provider_config_error)?;
                (Arc::new(provider), None)
            }
            WhatsAppProviderKind::Twilio => {
                let missing: Vec<&str> = [
                    ("TWILIO_ACCOUNT_SID", config.twilio.account_sid.is_none()),
                    ("TWILIO_AUTH_TOKEN", config.twilio.auth_token.is_none()),
                    ("TWILIO_WHATSAPP_FROM", sender.is_none()),
                ]
                .into_iter()
                .filter_map(|(name, is_missing)| is_missing.then_some(name))
                .collect();
                match (
                    &config.twilio.account_sid,
                    &config.twilio.auth_token,
                    &sender,
                ) {
                    (Some(account_sid), Some(token), Some(from)) => {
                        let status_callback = config
                            .server
                            .public_base_url
                            .as_ref()
                            .map(|base| base.https("/webhook/whatsapp/status"));
                        if status_callback.is_none() {
                            tracing::warn!(
                                "PUBLIC_BASE_URL is not set: WhatsApp sends carry no StatusCallback, so delivery statuses arrive only if a callback is configured in Twilio"
                            );
                        }
                        let provider = TwilioMessagesProvider::new(TwilioMessagesConfig {
                            api_base: config.twilio.api_base.clone(),
                            account_sid: account_sid.clone(),
                            auth_token: token.expose().to_owned(),
                            from: from.clone(),
                            status_callback,
                            request_timeout: PROVIDER_REQUEST_TIMEOUT,
                        })
                        .map_err(provider_config_error)?;
                        (Arc::new(provider), None)
                    }
                    _ => {
                        let reason = format!(
                            "WhatsApp sending is off: set {} (inbound messages are still stored)",
                            missing.join(", ")
                        );
                        tracing::warn!("{reason}");
                        (
                            Arc::new(SendingOff {
                                sender: sender.unwrap_or_default(),
                            }),
                            Some(reason),
                        )
                    }
                }
            }
        };
        Ok(Self {
            service: WhatsAppService::new(store, provider, policy),
            sending_off,
            on_send: None,
        })
    }

    /// The CRM service behind the routes.
    pub fn service(&self) -> &WhatsAppService {
        &self.service
    }

    /// True when `POST /api/whatsapp/send` can send.
    pub fn sending_enabled(&self) -> bool {
        self.sending_off.is_none()
    }
}

/// Starts supervising `WHATSAPP_BRIDGE_CMD` when it is set (must run inside the runtime). The
/// bridge runs as its own process group; its crashes are logged and it is restarted with capped
/// back-off. Call [`BridgeSupervisor::shutdown`] after the server stops.
pub fn spawn_bridge_supervisor(config: &Config) -> Option<BridgeSupervisor> {
    let command = config.whatsapp.bridge_cmd.as_deref()?;
    tracing::info!("supervising the WhatsApp bridge (WHATSAPP_BRIDGE_CMD)");
    Some(BridgeSupervisor::spawn(command, RestartPolicy::default()))
}

fn provider_config_error(e: ProviderConfigError) -> StartupError {
    let (variable, reason) = match &e {
        ProviderConfigError::Invalid { setting, reason } => (*setting, (*reason).to_owned()),
        other => ("WHATSAPP_PROVIDER", other.to_string()),
    };
    StartupError::Config(ConfigError::Invalid { variable, reason })
}

/// The provider used when Twilio sending is not configured. The send route refuses with `503`
/// before reaching it; should anything call it anyway, it refuses without a network call.
#[derive(Debug)]
struct SendingOff {
    sender: String,
}

#[async_trait::async_trait]
impl WhatsAppProvider for SendingOff {
    fn name(&self) -> &'static str {
        "twilio"
    }

    fn sender_address(&self) -> String {
        self.sender.clone()
    }

    async fn send(&self, _msg: &OutboundWhatsApp) -> Result<ProviderAccepted, ProviderError> {
        Err(ProviderError::Rejected {
            provider: "twilio",
            http_status: 0,
            code: None,
            message: "WhatsApp sending is not configured on this server".to_owned(),
        })
    }
}

// ------------------------------------------------------------------------------------ webhooks

/// A webhook answer that is not `204`: plain text, logged.
fn webhook_refusal(status: StatusCode, text: String) -> Response {
    if status.is_server_error() {
        tracing::error!(
            status = status.as_u16(),
            "WhatsApp webhook not stored: {text}"
        );
    } else {
        tracing::info!(status = status.as_u16(), "WhatsApp webhook refused: {text}");
    }
    (status, format!("{text}\n")).into_response()
}

fn whatsapp_error_response(err: &WhatsAppError) -> Response {
    let status =
        StatusCode::from_u16(err.http_status()).unwrap_or(StatusCode::INTERNAL_SERVER_ERROR);
    let text = match (err, status.as_u16()) {
        (WhatsAppError::InvalidInput { .. }, _) => err.to_string(),
        // 503 makes Twilio retry later; the idempotent store makes the retry safe.
        (_, 503) => "database unavailable; retry later".to_owned(),
        _ => "internal error; see the crmd log".to_owned(),
    };
    if !matches!(err, WhatsAppError::InvalidInput { .. }) {
        tracing::error!("WhatsApp webhook store failure: {err}");
    }
    webhook_refusal(status, text)
}

fn not_set_up_webhook() -> Response {
    webhook_refusal(
        StatusCode::SERVICE_UNAVAILABLE,
        "WhatsApp is not set up on this server (no CRM database connected)".to_owned(),
    )
}

/// `POST /webhook/whatsapp/twilio`: stores the message once per `MessageSid` (and per
/// `I-Twilio-Idempotency-Token`), upserts the sender's contact with `ProfileName`; empty `204`
/// also for a retry.
pub async fn twilio_inbound(
    State(state): State<EdgeState>,
    headers: HeaderMap,
    form: TwilioForm,
) -> Response {
    let Some(channel) = state.whatsapp() else {
        return not_set_up_webhook();
    };
    let inbound = match WhatsAppInbound::from_pairs(&form.pairs) {
        Ok(inbound) => inbound,
        Err(e) => return webhook_refusal(StatusCode::BAD_REQUEST, e.to_string()),
    };
    let token = headers
        .get(TWILIO_IDEMPOTENCY_HEADER)
        .and_then(|v| v.to_str().ok());
    match channel.service().ingest_inbound(&inbound, token).await {
        Ok(IngestOutcome::Stored(message)) => {
            tracing::info!(
                message_id = message.id,
                provider_sid = %inbound.message_sid,
                signature_verified = form.signature_verified,
                "WhatsApp inbound stored"
            );
            StatusCode::NO_CONTENT.into_response()
        }
        Ok(IngestOutcome::Duplicate) => {
            tracing::info!(provider_sid = %inbound.message_sid, "WhatsApp inbound retry: already stored, nothing changed");
            StatusCode::NO_CONTENT.into_response()
        }
        Err(e) => whatsapp_error_response(&e),
    }
}

/// `POST /webhook/whatsapp/status`: moves a message's status forward; backwards, duplicate and
/// unknown-message callbacks are logged and answered `204` too (Twilio must not retry them).
pub async fn twilio_status(State(state): State<EdgeState>, form: TwilioForm) -> Response {
    let Some(channel) = state.whatsapp() else {
        return not_set_up_webhook();
    };
    let callback = match MessageStatusCallback::from_pairs(&form.pairs) {
        Ok(callback) => callback,
        Err(e) => return webhook_refusal(StatusCode::BAD_REQUEST, e.to_string()),
    };
    let sid = callback.message_sid.as_str();
    let status = callback.message_status.as_str();
    match channel.service().apply_status(&callback).await {
        Ok(StatusOutcome::Advanced) => {
            tracing::info!(provider_sid = %sid, status, "WhatsApp status advanced");
        }
        Ok(StatusOutcome::Duplicate) => {
            tracing::info!(provider_sid = %sid, status, "WhatsApp status callback repeated; nothing changed");
        }
        Ok(StatusOutcome::IgnoredBackwards) => {
            tracing::info!(provider_sid = %sid, status, "WhatsApp status callback ignored: behind the stored status (out of order) or unknown status");
        }
        Ok(StatusOutcome::UnknownMessage) => {
            tracing::warn!(provider_sid = %sid, status, "WhatsApp status callback for a message this server never stored; ignored");
        }
        Err(e) => return whatsapp_error_response(&e),
    }
    StatusCode::NO_CONTENT.into_response()
}

/// `POST /webhook/whatsapp/bridge` (bearer `CRMD_API_TOKEN`): a message pushed by the WhatsApp
/// Web bridge, JSON [`BridgeInbound`]; stored once per bridge message id; `204`.
pub async fn bridge_inbound(
    _token: ApiToken,
    State(state): State<EdgeState>,
    request: Request,
) -> Result<StatusCode, ApiError> {
    let message: BridgeInbound = json_body(request, &state).await?;
    let channel = state.whatsapp().ok_or_else(not_set_up)?;
    match channel.service().ingest_bridge_inbound(&message).await {
        Ok(IngestOutcome::Stored(stored)) => {
            tracing::info!(message_id = stored.id, "WhatsApp bridge inbound stored");
        }
        Ok(IngestOutcome::Duplicate) => {
            tracing::info!("WhatsApp bridge inbound retry: already stored");
        }
        Err(WhatsAppError::InvalidInput { field, reason }) => {
            return Err(ApiError::bad_request(field, reason));
        }
        Err(WhatsAppError::Store(e)) => return Err(e.into()),
        Err(other) => {
            tracing::error!("WhatsApp bridge inbound failed: {other}");
            return Err(ApiError::Internal);
        }
    }
    Ok(StatusCode::NO_CONTENT)
}

// -------------------------------------------------------------------------------------- send

fn not_set_up() -> ApiError {
    ApiError::Unavailable(
        "WhatsApp is not set up on this server (no CRM database connected)".to_owned(),
    )
}

/// Reads a JSON body within `MAX_BODY_BYTES` with errors a client can act on.
async fn json_body<T: serde::de::DeserializeOwned>(
    request: Request,
    state: &EdgeState,
) -> Result<T, ApiError> {
    let limit = state.config().server.max_body_bytes;
    let body = Bytes::from_request(request, state)
        .await
        .map_err(|rejection| {
            if rejection.status() == StatusCode::PAYLOAD_TOO_LARGE {
                ApiError::BodyTooLarge { limit }
            } else {
                ApiError::bad_request("body", "the request body could not be read")
            }
        })?;
    serde_json::from_slice(&body).map_err(|e| {
        ApiError::bad_request(
            "body",
            format!("expected JSON {{\"to\": \"+E164\", \"body\": \"text\", \"media_url\"?: \"https://…\"}}: {e}"),
        )
    })
}

/// `POST /api/whatsapp/send` (bearer `CRMD_API_TOKEN`, optional `Idempotency-Key`): JSON
/// `{"to", "body", "media_url"?}`; `201` with the stored message, `400` invalid, `409` key reused
/// for another message, `502` provider failure (message stored as `failed`), `503` sending off.
pub async fn send(
    _token: ApiToken,
    State(state): State<EdgeState>,
    request: Request,
) -> Result<(StatusCode, Json<crm::Message>), ApiError> {
    let key = match request.headers().get(IDEMPOTENCY_KEY_HEADER) {
        None => None,
        Some(v) => Some(v.to_str().map(str::to_owned).map_err(|_| {
            ApiError::bad_request("Idempotency-Key", "expected visible ASCII characters")
        })?),
    };
    let send_request: SendRequest = json_body(request, &state).await?;
    let channel = state.whatsapp().ok_or_else(not_set_up)?;
    if let Some(reason) = &channel.sending_off {
        return Err(ApiError::Unavailable(reason.clone()));
    }
    let sent = channel.service().send(send_request, key.as_deref()).await;
    if let Some(observe) = &channel.on_send {
        match &sent {
            Ok(message) => observe(&message.status),
            Err(SendError::Provider { .. }) => observe("failed"),
            Err(_) => {}
        }
    }
    match sent {
        Ok(message) => Ok((StatusCode::CREATED, Json(message))),
        Err(SendError::InvalidInput { field, reason }) => Err(ApiError::bad_request(field, reason)),
        Err(e @ SendError::IdempotencyConflict { .. }) => Err(ApiError::Conflict(e.to_string())),
        Err(SendError::Provider { message, error }) => {
            Err(ApiError::ProviderFailed { message, error })
        }
        Err(SendError::Store(e)) => Err(e.into()),
        Err(other) => {
            tracing::error!("WhatsApp send failed: {other}");
            Err(ApiError::Internal)
        }
    }
}

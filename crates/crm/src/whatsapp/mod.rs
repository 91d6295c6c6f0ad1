//! WhatsApp messaging: inbound webhooks stored exactly once, status callbacks that never move
//! a message backwards, and sends that are stored before they leave and never lost.
//!
//! HTTP-agnostic: the edge crate parses requests, checks signatures and tokens, and maps
//! [`WhatsAppError::http_status`] / [`SendError::http_status`] to responses.
//!
//! Isolation: every provider call runs in its own tokio task with a per-attempt timeout, so a
//! hanging or panicking provider fails that one send (stored as `failed`) and nothing else.

mod provider;
mod supervisor;

use std::sync::Arc;
use std::time::Duration;

use serde::Deserialize;
use twilio_stream::forms::{MessageStatus, MessageStatusCallback, WhatsAppInbound};
use twilio_stream::phone::normalize_e164;

pub use provider::{
    BridgeProvider, OutboundWhatsApp, ProviderAccepted, ProviderConfigError, ProviderError,
    TwilioMessagesConfig, TwilioMessagesProvider, WhatsAppProvider,
};
pub use supervisor::{BridgeSupervisor, RestartPolicy, SupervisorStats};

use crate::model::{Message, MessageDirection, MessageMedia, now_ms};
use crate::store::{NewMessage, StatusUpdate};
use crate::{CrmError, Store};

/// Longest message body WhatsApp (through Twilio) accepts.
pub const MAX_BODY_CHARS: usize = 1600;
/// Longest idempotency key we accept.
pub const MAX_IDEMPOTENCY_KEY_LEN: usize = 255;

/// Rank stored for failure statuses: above every lifecycle rank, so nothing moves a failed
/// message (twilio-stream's rule: "never out of a failure").
const FAILURE_RANK: i64 = 100;

fn stored_rank(status: &MessageStatus) -> i64 {
    if status.is_failure() {
        FAILURE_RANK
    } else {
        i64::from(status.lifecycle_rank())
    }
}

/// Retry and timeout settings of sends.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct SendPolicy {
    /// Attempts per send, including the first (at least 1).
    pub max_attempts: u32,
    /// Wait after the first transient failure; doubles each time.
    pub initial_backoff: Duration,
    /// Longest wait between attempts.
    pub max_backoff: Duration,
    /// Bound on one provider call.
    pub attempt_timeout: Duration,
}

impl Default for SendPolicy {
    fn default() -> Self {
        SendPolicy {
            max_attempts: 3,
            initial_backoff: Duration::from_millis(250),
            max_backoff: Duration::from_secs(2),
            attempt_timeout: Duration::from_secs(10),
        }
    }
}

/// `POST /api/whatsapp/send` body.
#[derive(Debug, Clone, PartialEq, Eq, Deserialize)]
pub struct SendRequest {
    /// Recipient, E.164 (`whatsapp:` prefix, spaces and dashes tolerated).
    pub to: String,
    /// Text, 1..=1600 characters.
    pub body: String,
    /// Optional public http(s) URL of an attachment.
    #[serde(default)]
    pub media_url: Option<String>,
}

/// A message pushed by a WhatsApp Web bridge to crmd's bridge webhook.
#[derive(Debug, Clone, PartialEq, Eq, Deserialize)]
pub struct BridgeInbound {
    /// Bridge message id (unique per message; retries repeat it).
    pub id: String,
    /// Sender, E.164 or a WhatsApp JID such as `972501234567@s.whatsapp.net`.
    pub from: String,
    /// Text.
    #[serde(default)]
    pub body: String,
    /// WhatsApp profile name.
    #[serde(default)]
    pub push_name: Option<String>,
    /// Attachment URLs.
    #[serde(default)]
    pub media_urls: Vec<String>,
}

/// Result of storing an inbound message.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum IngestOutcome {
    /// First time seen: stored.
    Stored(Box<Message>),
    /// Already stored (a provider retry): nothing changed.
    Duplicate,
}

/// Result of applying a status callback.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum StatusOutcome {
    /// The message moved forward to the new status.
    Advanced,
    /// The status is behind (or beside) the stored one, or unknown: ignored.
    IgnoredBackwards,
    /// The stored status is already this one.
    Duplicate,
    /// No message with that sid is stored (not sent by this crmd, or not yet recorded).
    UnknownMessage,
}

/// Inbound webhook or status callback failure.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum WhatsAppError {
    /// The webhook carried an unusable value (answer 400).
    #[error("invalid {field}: {reason}")]
    InvalidInput {
        /// Field name (`From`, `MessageSid`, …).
        field: &'static str,
        /// Why.
        reason: String,
    },
    /// The store failed (503 when it is unavailable: the provider will retry the webhook).
    #[error(transparent)]
    Store(#[from] CrmError),
}

impl WhatsAppError {
    /// 400 for bad input, else the store error's status (503 unavailable, 500 otherwise).
    #[must_use]
    pub fn http_status(&self) -> u16 {
        match self {
            WhatsAppError::InvalidInput { .. } => 400,
            WhatsAppError::Store(e) => e.http_status(),
        }
    }
}

/// `send` failure.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum SendError {
    /// Bad request (answer 400 with this message).
    #[error("invalid {field}: {reason}")]
    InvalidInput {
        /// `to`, `body`, `media_url` or `Idempotency-Key`.
        field: &'static str,
        /// Why, in words the client can act on.
        reason: String,
    },
    /// The idempotency key was used before for a different message (answer 409).
    #[error("Idempotency-Key was already used for a different message (id {existing_id})")]
    IdempotencyConflict {
        /// The message stored under that key.
        existing_id: i64,
    },
    /// The provider refused or kept failing; the message is stored as `failed` (answer 502).
    #[error("WhatsApp provider failed: {error}")]
    Provider {
        /// The stored message (status `failed`, provider error recorded).
        message: Box<Message>,
        /// The last provider error.
        error: ProviderError,
    },
    /// The store failed before the message was stored (503/500).
    #[error(transparent)]
    Store(#[from] CrmError),
}

impl SendError {
    /// 400 / 409 / 502 / the store's status.
    #[must_use]
    pub fn http_status(&self) -> u16 {
        match self {
            SendError::InvalidInput { .. } => 400,
            SendError::IdempotencyConflict { .. } => 409,
            SendError::Provider { .. } => 502,
            SendError::Store(e) => e.http_status(),
        }
    }
}

/// The WhatsApp service: a store and a provider. Cheap to clone.
#[derive(Debug, Clone)]
pub struct WhatsAppService {
    store: Store,
    provider: Arc<dyn WhatsAppProvider>,
    policy: SendPolicy,
}

impl WhatsAppService {
    /// Builds the service.
    pub fn new(store: Store, provider: Arc<dyn WhatsAppProvider>, policy: SendPolicy) -> Self {
        WhatsAppService {
            store,
            provider,
            policy,
        }
    }

    /// The store behind the service.
    #[must_use]
    pub fn store(&self) -> &Store {
        &self.store
    }

    /// Stores a Twilio inbound message once per `MessageSid` (and per
    /// `I-Twilio-Idempotency-Token` when given); upserts the sender's contact with `ProfileName`.
    pub async fn ingest_inbound(
        &self,
        msg: &WhatsAppInbound,
        idempotency_token: Option<&str>,
    ) -> Result<IngestOutcome, WhatsAppError> {
        check_provider_sid("MessageSid", &msg.message_sid)?;
        let from = normalize_e164(&msg.from).map_err(|e| WhatsAppError::InvalidInput {
            field: "From",
            reason: e.to_string(),
        })?;
        let media: Vec<MessageMedia> = msg
            .media
            .iter()
            .map(|m| MessageMedia {
                url: m.url.clone(),
                content_type: Some(m.content_type.clone()).filter(|c| !c.is_empty()),
            })
            .collect();
        let key = idempotency_token
            .filter(|t| !t.is_empty() && t.len() <= MAX_IDEMPOTENCY_KEY_LEN)
            .map(|t| format!("twilio-webhook:{t}"));
        self.ingest(
            "twilio",
            from.as_str(),
            msg.profile_name.as_deref(),
            &msg.message_sid,
            key.as_deref(),
            &msg.from,
            &msg.to,
            &msg.body,
            &media,
        )
        .await
    }

    /// Stores a message pushed by the WhatsApp Web bridge, once per bridge message id.
    pub async fn ingest_bridge_inbound(
        &self,
        msg: &BridgeInbound,
    ) -> Result<IngestOutcome, WhatsAppError> {
        if msg.id.is_empty() || msg.id.len() > 128 {
            return Err(WhatsAppError::InvalidInput {
                field: "id",
                reason: "expected the bridge's message id (1 to 128 characters)".to_owned(),
            });
        }
        // Baileys JIDs look like `972501234567@s.whatsapp.net`.
        let raw = msg.from.split('@').next().unwrap_or("");
        let with_plus = if raw.starts_with('+') {
            raw.to_owned()
        } else {
            format!("+{raw}")
        };
        let from = normalize_e164(&with_plus).map_err(|e| WhatsAppError::InvalidInput {
            field: "from",
            reason: e.to_string(),
        })?;
        let media: Vec<MessageMedia> = msg
            .media_urls
            .iter()
            .map(|url| MessageMedia {
                url: url.clone(),
                content_type: None,
            })
            .collect();
        let sid = format!("bridge:{}", msg.id);
        let to = self.provider.sender_address();
        self.ingest(
            "bridge",
            from.as_str(),
            msg.push_name.as_deref(),
            &sid,
            None,
            &from.whatsapp(),
            &to,
            &msg.body,
            &media,
        )
        .await
    }

    #[allow(clippy::too_many_arguments)]
    async fn ingest(
        &self,
        provider: &str,
        phone: &str,
        profile_name: Option<&str>,
        provider_sid: &str,
        idempotency_key: Option<&str>,
        from_address: &str,
        to_address: &str,
        body: &str,
        media: &[MessageMedia],
    ) -> Result<IngestOutcome, WhatsAppError> {
        // A retry short-cuts before touching the contact (keeps last-seen honest).
        if self
            .store
            .find_message_by_provider_sid(provider_sid)
            .await?
            .is_some()
        {
            return Ok(IngestOutcome::Duplicate);
        }
        let at_ms = now_ms();
        let contact = self
            .store
            .upsert_contact_at(phone, profile_name, true, at_ms)
            .await?;
        let received = MessageStatus::Received;
        let inserted = self
            .store
            .insert_message(&NewMessage {
                contact_id: contact.id,
                direction: MessageDirection::Inbound,
                provider,
                provider_sid: Some(provider_sid),
                idempotency_key,
                from: from_address,
                to: to_address,
                body,
                media,
                status: received.as_str(),
                status_rank: stored_rank(&received),
                at_ms,
            })
            .await?;
        Ok(match inserted {
            Some(message) => {
                tracing::info!(
                    message_id = message.id,
                    provider_sid,
                    contact_id = contact.id,
                    "WhatsApp message received"
                );
                IngestOutcome::Stored(Box::new(message))
            }
            None => IngestOutcome::Duplicate,
        })
    }

    /// Applies a status callback: forward moves only, duplicates harmless.
    pub async fn apply_status(
        &self,
        cb: &MessageStatusCallback,
    ) -> Result<StatusOutcome, WhatsAppError> {
        check_provider_sid("MessageSid", &cb.message_sid)?;
        if matches!(cb.message_status, MessageStatus::Other(_)) {
            tracing::warn!(provider_sid = %cb.message_sid, status = cb.message_status.as_str(), "unknown WhatsApp status ignored");
            return Ok(StatusOutcome::IgnoredBackwards);
        }
        let update = self
            .store
            .apply_message_status(
                &cb.message_sid,
                cb.message_status.as_str(),
                stored_rank(&cb.message_status),
                // A failure is final once stored, but may only replace a status that is not
                // already final itself (read/delivered never become failed).
                i64::from(cb.message_status.lifecycle_rank()),
                cb.error_code.as_deref().filter(|c| !c.is_empty()),
                now_ms(),
            )
            .await?;
        let outcome = match update {
            StatusUpdate::Advanced => StatusOutcome::Advanced,
            StatusUpdate::Duplicate => StatusOutcome::Duplicate,
            StatusUpdate::IgnoredBackwards => StatusOutcome::IgnoredBackwards,
            StatusUpdate::UnknownMessage => StatusOutcome::UnknownMessage,
        };
        tracing::debug!(provider_sid = %cb.message_sid, status = cb.message_status.as_str(), ?outcome, "WhatsApp status callback");
        Ok(outcome)
    }

    /// Validates, stores as outbound/`queued`, sends through the provider (bounded retries of
    /// transient failures, each attempt bounded by a timeout, all in a separate task), then
    /// stores `sent` + provider sid or `failed` + provider error. With an idempotency key, a
    /// repeated request returns the stored outcome and sends nothing.
    pub async fn send(
        &self,
        req: SendRequest,
        idempotency_key: Option<&str>,
    ) -> Result<Message, SendError> {
        let to = normalize_e164(&req.to).map_err(|e| SendError::InvalidInput {
            field: "to",
            reason: e.to_string(),
        })?;
        let body = req.body.trim();
        if body.is_empty() {
            return Err(SendError::InvalidInput {
                field: "body",
                reason: "message body is empty".to_owned(),
            });
        }
        let chars = body.chars().count();
        if chars > MAX_BODY_CHARS {
            return Err(SendError::InvalidInput {
                field: "body",
                reason: format!(
                    "message body has {chars} characters; WhatsApp allows at most {MAX_BODY_CHARS}"
                ),
            });
        }
        let media_url = req
            .media_url
            .as_deref()
            .map(str::trim)
            .filter(|u| !u.is_empty());
        if let Some(url) = media_url
            && (!(url.starts_with("https://") || url.starts_with("http://")) || url.len() > 2048)
        {
            return Err(SendError::InvalidInput {
                field: "media_url",
                reason: "expected a public http(s) URL of at most 2048 characters".to_owned(),
            });
        }
        let key = match idempotency_key {
            None => None,
            Some(k)
                if k.is_empty()
                    || k.len() > MAX_IDEMPOTENCY_KEY_LEN
                    || !k.bytes().all(|b| (0x21..0x7f).contains(&b)) =>
            {
                return Err(SendError::InvalidInput {
                    field: "Idempotency-Key",
                    reason: format!(
                        "expected 1 to {MAX_IDEMPOTENCY_KEY_LEN} visible ASCII characters"
                    ),
                });
            }
            Some(k) => Some(format!("send:{k}")),
        };
        let to_address = to.whatsapp();
        let media: Vec<MessageMedia> = media_url
            .map(|url| MessageMedia {
                url: url.to_owned(),
                content_type: None,
            })
            .into_iter()
            .collect();

        if let Some(key) = &key
            && let Some(existing) = self.store.find_message_by_idempotency_key(key).await?
        {
            return replay(existing, &to_address, body, &media);
        }

        let at_ms = now_ms();
        let contact = self
            .store
            .upsert_contact_at(to.as_str(), None, true, at_ms)
            .await?;
        let queued = MessageStatus::Queued;
        let from_address = self.provider.sender_address();
        let inserted = self
            .store
            .insert_message(&NewMessage {
                contact_id: contact.id,
                direction: MessageDirection::Outbound,
                provider: self.provider.name(),
                provider_sid: None,
                idempotency_key: key.as_deref(),
                from: &from_address,
                to: &to_address,
                body,
                media: &media,
                status: queued.as_str(),
                status_rank: stored_rank(&queued),
                at_ms,
            })
            .await?;
        let message = match (inserted, &key) {
            (Some(m), _) => m,
            // Lost a race with a concurrent request carrying the same key.
            (None, Some(key)) => {
                let existing = self
                    .store
                    .find_message_by_idempotency_key(key)
                    .await?
                    .ok_or_else(|| {
                        CrmError::Conflict("idempotency key vanished during insert".to_owned())
                    })?;
                return replay(existing, &to_address, body, &media);
            }
            (None, None) => {
                return Err(CrmError::Conflict(
                    "message insert was refused without a key".to_owned(),
                )
                .into());
            }
        };

        let outbound = OutboundWhatsApp {
            to_e164: to.as_str().to_owned(),
            body: body.to_owned(),
            media_url: media_url.map(str::to_owned),
        };
        // The whole delivery, including storing its outcome, runs in its own task: a client
        // that disconnects cannot leave the message half-done, and a provider panic stays there.
        let task = tokio::spawn(deliver(
            self.store.clone(),
            Arc::clone(&self.provider),
            self.policy,
            message.clone(),
            outbound,
        ));
        match task.await {
            Ok(result) => result,
            Err(join_error) => {
                tracing::error!(message_id = message.id, error = %join_error, "WhatsApp send task panicked");
                let error = ProviderError::Unavailable {
                    provider: self.provider.name(),
                    http_status: None,
                    code: None,
                    message: "provider task panicked".to_owned(),
                };
                let failed = self
                    .store
                    .mark_message_failed(
                        message.id,
                        None,
                        &error.to_string(),
                        FAILURE_RANK,
                        now_ms(),
                    )
                    .await?;
                Err(SendError::Provider {
                    message: Box::new(failed),
                    error,
                })
            }
        }
    }
}

/// Answers a repeated request from what is stored under its idempotency key.
fn replay(
    existing: Message,
    to: &str,
    body: &str,
    media: &[MessageMedia],
) -> Result<Message, SendError> {
    if existing.direction != MessageDirection::Outbound
        || existing.to != to
        || existing.body != body
        || existing.media != media
    {
        return Err(SendError::IdempotencyConflict {
            existing_id: existing.id,
        });
    }
    if existing.status == MessageStatus::Failed.as_str() {
        let error = ProviderError::Rejected {
            provider: "stored",
            http_status: 0,
            code: existing.error_code.clone(),
            message: existing
                .error_message
                .clone()
                .unwrap_or_else(|| "send failed earlier".to_owned()),
        };
        return Err(SendError::Provider {
            message: Box::new(existing),
            error,
        });
    }
    Ok(existing)
}

async fn deliver(
    store: Store,
    provider: Arc<dyn WhatsAppProvider>,
    policy: SendPolicy,
    message: Message,
    outbound: OutboundWhatsApp,
) -> Result<Message, SendError> {
    let attempts = policy.max_attempts.max(1);
    let mut backoff = policy.initial_backoff;
    let mut attempt = 0;
    let last_error = loop {
        attempt += 1;
        let result =
            match tokio::time::timeout(policy.attempt_timeout, provider.send(&outbound)).await {
                Ok(result) => result,
                Err(_) => Err(ProviderError::Timeout {
                    provider: provider.name(),
                    timeout: policy.attempt_timeout,
                }),
            };
        match result {
            Ok(accepted) => {
                let sent = MessageStatus::Sent;
                let stored = store
                    .mark_message_accepted(
                        message.id,
                        &accepted.provider_sid,
                        sent.as_str(),
                        stored_rank(&sent),
                        now_ms(),
                    )
                    .await?;
                tracing::info!(message_id = message.id, provider_sid = %accepted.provider_sid, attempt, "WhatsApp message sent");
                return Ok(stored);
            }
            Err(error) if error.is_transient() && attempt < attempts => {
                tracing::warn!(message_id = message.id, attempt, %error, retry_in_ms = backoff.as_millis() as u64, "WhatsApp send failed, retrying");
                tokio::time::sleep(backoff).await;
                backoff = (backoff * 2).min(policy.max_backoff);
            }
            Err(error) => break error,
        }
    };
    tracing::error!(message_id = message.id, attempt, error = %last_error, "WhatsApp send failed; stored as failed");
    let failed = store
        .mark_message_failed(
            message.id,
            last_error.code(),
            &last_error.to_string(),
            FAILURE_RANK,
            now_ms(),
        )
        .await?;
    Err(SendError::Provider {
        message: Box::new(failed),
        error: last_error,
    })
}

fn check_provider_sid(field: &'static str, sid: &str) -> Result<(), WhatsAppError> {
    let ok = !sid.is_empty()
        && sid.len() <= 64
        && sid
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || b == b'_' || b == b'-');
    if ok {
        Ok(())
    } else {
        Err(WhatsAppError::InvalidInput {
            field,
            reason: "expected a provider message id (letters, digits, `_`, `-`; at most 64)"
                .to_owned(),
        })
    }
}

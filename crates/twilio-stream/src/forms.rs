//! Typed webhook forms (`application/x-www-form-urlencoded`), tolerant of fields Twilio adds.
//!
//! Parse the body once into pairs with [`parse_pairs`] (the signature check needs every field),
//! then build the typed form from those pairs with `from_pairs`.

use std::cmp::Ordering;
use std::fmt;

use serde::Deserialize;

use crate::phone::{E164, PhoneError, normalize_e164};

/// Why a webhook form could not be read.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum FormError {
    /// The body is not `application/x-www-form-urlencoded`.
    #[error(
        "webhook body is not a valid form ({reason}); check the webhook's content type is form-encoded"
    )]
    InvalidEncoding {
        /// What the decoder reported.
        reason: String,
    },
    /// A required field is absent.
    #[error("webhook form lacks required field {field}")]
    MissingField {
        /// Twilio's field name, e.g. `MessageSid`.
        field: &'static str,
    },
    /// A field has an unusable value.
    #[error("webhook form field {field} is invalid: {reason}")]
    InvalidField {
        /// Twilio's field name.
        field: String,
        /// What was wrong.
        reason: String,
    },
}

/// Decode a form body into its `(name, value)` pairs, in order, repeated names kept.
///
/// # Errors
/// [`FormError::InvalidEncoding`] when the body is not form-encoded UTF-8.
pub fn parse_pairs(body: &[u8]) -> Result<Vec<(String, String)>, FormError> {
    serde_urlencoded::from_bytes(body).map_err(|err| FormError::InvalidEncoding {
        reason: err.to_string(),
    })
}

fn first<'p>(pairs: &'p [(String, String)], name: &str) -> Option<&'p str> {
    pairs
        .iter()
        .find(|(n, _)| n == name)
        .map(|(_, v)| v.as_str())
}

fn optional(pairs: &[(String, String)], name: &str) -> Option<String> {
    first(pairs, name)
        .filter(|v| !v.is_empty())
        .map(str::to_owned)
}

fn required(pairs: &[(String, String)], name: &'static str) -> Result<String, FormError> {
    optional(pairs, name).ok_or(FormError::MissingField { field: name })
}

fn deserialize_pairs<T: for<'de> Deserialize<'de>>(
    pairs: &[(String, String)],
) -> Result<T, FormError> {
    // Keep the first value of each name: these forms never repeat a field, and a struct cannot
    // hold two. (Signature checks use the untouched pairs.)
    let mut unique: Vec<(&str, &str)> = Vec::with_capacity(pairs.len());
    for (name, value) in pairs {
        if !unique.iter().any(|(n, _)| n == name) {
            unique.push((name, value));
        }
    }
    let encoded =
        serde_urlencoded::to_string(&unique).map_err(|err| FormError::InvalidEncoding {
            reason: err.to_string(),
        })?;
    serde_urlencoded::from_str(&encoded).map_err(|err| FormError::InvalidEncoding {
        reason: err.to_string(),
    })
}

/// Voice webhook for an incoming call.
#[derive(Debug, Clone, PartialEq, Eq, Default, Deserialize)]
#[serde(rename_all = "PascalCase")]
pub struct IncomingCall {
    /// `CallSid`.
    #[serde(default)]
    pub call_sid: String,
    /// `AccountSid`.
    pub account_sid: Option<String>,
    /// `From`: the caller, usually E.164 (may be `anonymous` or a client id).
    pub from: Option<String>,
    /// `To`: the number called.
    pub to: Option<String>,
    /// `CallStatus`, e.g. `ringing`.
    pub call_status: Option<String>,
    /// `Direction`, e.g. `inbound`.
    pub direction: Option<String>,
    /// `CallerName` (CNAM lookups only).
    pub caller_name: Option<String>,
    /// `ForwardedFrom`.
    pub forwarded_from: Option<String>,
    /// `ParentCallSid`.
    pub parent_call_sid: Option<String>,
    /// `ApiVersion`.
    pub api_version: Option<String>,
    /// `FromCountry` (geo fields are best-effort).
    pub from_country: Option<String>,
    /// `FromCity`.
    pub from_city: Option<String>,
    /// `ToCountry`.
    pub to_country: Option<String>,
}

impl IncomingCall {
    /// Build from decoded form pairs (see [`parse_pairs`]).
    ///
    /// # Errors
    /// [`FormError`] when `CallSid` is missing.
    pub fn from_pairs(pairs: &[(String, String)]) -> Result<Self, FormError> {
        let call: Self = deserialize_pairs(pairs)?;
        if call.call_sid.is_empty() {
            return Err(FormError::MissingField { field: "CallSid" });
        }
        Ok(call)
    }

    /// The caller as E.164, when `From` is a phone number.
    ///
    /// # Errors
    /// [`PhoneError`] for a missing, anonymous or malformed `From`.
    pub fn from_e164(&self) -> Result<E164, PhoneError> {
        normalize_e164(self.from.as_deref().unwrap_or_default())
    }
}

/// `StreamEvent` of a stream status callback.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum StreamEvent {
    /// `stream-started`.
    Started,
    /// `stream-stopped`.
    Stopped,
    /// `stream-error` (see `StreamError`).
    Error,
    /// Any other value, kept as received.
    Other(String),
}

impl StreamEvent {
    /// Wire value.
    #[must_use]
    pub fn as_str(&self) -> &str {
        match self {
            Self::Started => "stream-started",
            Self::Stopped => "stream-stopped",
            Self::Error => "stream-error",
            Self::Other(other) => other,
        }
    }
}

impl From<&str> for StreamEvent {
    fn from(value: &str) -> Self {
        match value {
            "stream-started" => Self::Started,
            "stream-stopped" => Self::Stopped,
            "stream-error" => Self::Error,
            other => Self::Other(other.to_owned()),
        }
    }
}

impl<'de> Deserialize<'de> for StreamEvent {
    fn deserialize<D: serde::Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        Ok(Self::from(String::deserialize(deserializer)?.as_str()))
    }
}

/// `<Stream statusCallback>` form.
#[derive(Debug, Clone, PartialEq, Eq, Default, Deserialize)]
#[serde(rename_all = "PascalCase")]
pub struct StreamStatus {
    /// `AccountSid`.
    pub account_sid: Option<String>,
    /// `CallSid`.
    pub call_sid: Option<String>,
    /// `StreamSid`.
    pub stream_sid: Option<String>,
    /// `StreamName`.
    pub stream_name: Option<String>,
    /// `StreamEvent`.
    pub stream_event: Option<StreamEvent>,
    /// `StreamError`: description when `StreamEvent` is `stream-error`.
    pub stream_error: Option<String>,
    /// `Timestamp`, as sent.
    pub timestamp: Option<String>,
}

impl StreamStatus {
    /// Build from decoded form pairs (see [`parse_pairs`]); every field is optional.
    ///
    /// # Errors
    /// [`FormError::InvalidEncoding`] only if the pairs cannot be re-read.
    pub fn from_pairs(pairs: &[(String, String)]) -> Result<Self, FormError> {
        deserialize_pairs(pairs)
    }
}

/// One attachment of a WhatsApp message (`MediaUrl{N}` / `MediaContentType{N}`).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct MediaItem {
    /// `MediaUrl{N}` (fetching it needs the account's Basic auth).
    pub url: String,
    /// `MediaContentType{N}`, e.g. `image/jpeg`; empty when absent.
    pub content_type: String,
}

/// Inbound WhatsApp message webhook.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct WhatsAppInbound {
    /// `MessageSid`: identifies the message; store each once (Twilio retries).
    pub message_sid: String,
    /// `AccountSid`.
    pub account_sid: Option<String>,
    /// `MessagingServiceSid`.
    pub messaging_service_sid: Option<String>,
    /// `From`, `whatsapp:+…` as received.
    pub from: String,
    /// `To`, `whatsapp:+…` as received.
    pub to: String,
    /// `Body`; empty for media-only messages.
    pub body: String,
    /// `NumMedia`.
    pub num_media: u32,
    /// `NumSegments`.
    pub num_segments: Option<u32>,
    /// Attachments in `N` order.
    pub media: Vec<MediaItem>,
    /// `ProfileName`: the sender's WhatsApp display name.
    pub profile_name: Option<String>,
    /// `WaId`: the sender's WhatsApp id (digits of the number).
    pub wa_id: Option<String>,
    /// `ButtonText` (quick-reply buttons).
    pub button_text: Option<String>,
    /// `ButtonPayload`.
    pub button_payload: Option<String>,
    /// `Latitude` (location messages), as sent.
    pub latitude: Option<String>,
    /// `Longitude`, as sent.
    pub longitude: Option<String>,
    /// `Address` (location messages).
    pub address: Option<String>,
    /// `Label` (location messages).
    pub label: Option<String>,
    /// `OriginalRepliedMessageSid`: the message this one replies to.
    pub original_replied_message_sid: Option<String>,
    /// `MessageType`, e.g. `text`, `image`, `location`.
    pub message_type: Option<String>,
}

impl WhatsAppInbound {
    /// Build from decoded form pairs (see [`parse_pairs`]). `MediaUrl{N}` names are dynamic,
    /// hence pairs rather than a serde struct.
    ///
    /// # Errors
    /// [`FormError::MissingField`] without `MessageSid`, `From` or `To`;
    /// [`FormError::InvalidField`] for a non-numeric `NumMedia` / `NumSegments`.
    pub fn from_pairs(pairs: &[(String, String)]) -> Result<Self, FormError> {
        let number = |name: &'static str| -> Result<Option<u32>, FormError> {
            first(pairs, name)
                .filter(|v| !v.is_empty())
                .map(|v| {
                    v.trim()
                        .parse::<u32>()
                        .map_err(|_| FormError::InvalidField {
                            field: name.to_owned(),
                            reason: format!("{v:?} is not a non-negative integer"),
                        })
                })
                .transpose()
        };
        let mut indexed: Vec<(u32, MediaItem)> = Vec::new();
        for (name, value) in pairs {
            let Some(index) = name
                .strip_prefix("MediaUrl")
                .and_then(|n| n.parse::<u32>().ok())
            else {
                continue;
            };
            if indexed.iter().any(|(i, _)| *i == index) {
                continue;
            }
            let content_type = first(pairs, &format!("MediaContentType{index}"))
                .unwrap_or_default()
                .to_owned();
            indexed.push((
                index,
                MediaItem {
                    url: value.clone(),
                    content_type,
                },
            ));
        }
        indexed.sort_by_key(|(index, _)| *index);
        Ok(Self {
            message_sid: required(pairs, "MessageSid")?,
            account_sid: optional(pairs, "AccountSid"),
            messaging_service_sid: optional(pairs, "MessagingServiceSid"),
            from: required(pairs, "From")?,
            to: required(pairs, "To")?,
            body: first(pairs, "Body").unwrap_or_default().to_owned(),
            num_media: number("NumMedia")?.unwrap_or(0),
            num_segments: number("NumSegments")?,
            media: indexed.into_iter().map(|(_, item)| item).collect(),
            profile_name: optional(pairs, "ProfileName"),
            wa_id: optional(pairs, "WaId"),
            button_text: optional(pairs, "ButtonText"),
            button_payload: optional(pairs, "ButtonPayload"),
            latitude: optional(pairs, "Latitude"),
            longitude: optional(pairs, "Longitude"),
            address: optional(pairs, "Address"),
            label: optional(pairs, "Label"),
            original_replied_message_sid: optional(pairs, "OriginalRepliedMessageSid"),
            message_type: optional(pairs, "MessageType"),
        })
    }

    /// The sender as E.164 (`whatsapp:` stripped).
    ///
    /// # Errors
    /// [`PhoneError`] when `From` is not a phone number.
    pub fn from_e164(&self) -> Result<E164, PhoneError> {
        normalize_e164(&self.from)
    }
}

/// `MessageStatus` of a message status callback.
///
/// Ordered by lifecycle rank (then by variant, so the order is total):
/// `scheduled`/`accepted` < `queued` < `sending`/`receiving` < `sent`/`received` <
/// `delivered`/`undelivered`/`failed`/`canceled` < `read`. Use
/// [`MessageStatus::can_advance_to`] to drop callbacks that arrive late or twice.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub enum MessageStatus {
    /// `scheduled`.
    Scheduled,
    /// `accepted` (by a Messaging Service).
    Accepted,
    /// `queued`.
    Queued,
    /// `sending`.
    Sending,
    /// `receiving` (inbound).
    Receiving,
    /// `sent`: handed to the carrier / WhatsApp.
    Sent,
    /// `received` (inbound).
    Received,
    /// `delivered`.
    Delivered,
    /// `undelivered`.
    Undelivered,
    /// `failed`.
    Failed,
    /// `canceled` (a scheduled message).
    Canceled,
    /// `read` (WhatsApp read receipt).
    Read,
    /// A value this crate does not know; ranks below every known status.
    Other(String),
}

impl MessageStatus {
    /// Wire value.
    #[must_use]
    pub fn as_str(&self) -> &str {
        match self {
            Self::Scheduled => "scheduled",
            Self::Accepted => "accepted",
            Self::Queued => "queued",
            Self::Sending => "sending",
            Self::Receiving => "receiving",
            Self::Sent => "sent",
            Self::Received => "received",
            Self::Delivered => "delivered",
            Self::Undelivered => "undelivered",
            Self::Failed => "failed",
            Self::Canceled => "canceled",
            Self::Read => "read",
            Self::Other(other) => other,
        }
    }

    /// Position in the lifecycle; statuses of equal rank are alternatives, not successors.
    #[must_use]
    pub fn lifecycle_rank(&self) -> u8 {
        match self {
            Self::Other(_) => 0,
            Self::Scheduled | Self::Accepted => 1,
            Self::Queued => 2,
            Self::Sending | Self::Receiving => 3,
            Self::Sent | Self::Received => 4,
            Self::Delivered | Self::Undelivered | Self::Failed | Self::Canceled => 5,
            Self::Read => 6,
        }
    }

    /// `true` for `undelivered`, `failed` and `canceled`: nothing follows them.
    #[must_use]
    pub fn is_failure(&self) -> bool {
        matches!(self, Self::Undelivered | Self::Failed | Self::Canceled)
    }

    /// Whether a stored status may be replaced by `next`: only forward in the lifecycle, never
    /// out of a failure, never to an unknown status.
    #[must_use]
    pub fn can_advance_to(&self, next: &Self) -> bool {
        !self.is_failure() && next.lifecycle_rank() > self.lifecycle_rank()
    }

    fn variant_index(&self) -> u8 {
        match self {
            Self::Scheduled => 0,
            Self::Accepted => 1,
            Self::Queued => 2,
            Self::Sending => 3,
            Self::Receiving => 4,
            Self::Sent => 5,
            Self::Received => 6,
            Self::Delivered => 7,
            Self::Undelivered => 8,
            Self::Failed => 9,
            Self::Canceled => 10,
            Self::Read => 11,
            Self::Other(_) => 12,
        }
    }
}

impl Ord for MessageStatus {
    fn cmp(&self, other: &Self) -> Ordering {
        self.lifecycle_rank()
            .cmp(&other.lifecycle_rank())
            .then_with(|| self.variant_index().cmp(&other.variant_index()))
            .then_with(|| self.as_str().cmp(other.as_str()))
    }
}

impl PartialOrd for MessageStatus {
    fn partial_cmp(&self, other: &Self) -> Option<Ordering> {
        Some(self.cmp(other))
    }
}

impl From<&str> for MessageStatus {
    fn from(value: &str) -> Self {
        match value.trim().to_ascii_lowercase().as_str() {
            "scheduled" => Self::Scheduled,
            "accepted" => Self::Accepted,
            "queued" => Self::Queued,
            "sending" => Self::Sending,
            "receiving" => Self::Receiving,
            "sent" => Self::Sent,
            "received" => Self::Received,
            "delivered" => Self::Delivered,
            "undelivered" => Self::Undelivered,
            "failed" => Self::Failed,
            "canceled" | "cancelled" => Self::Canceled,
            "read" => Self::Read,
            _ => Self::Other(value.to_owned()),
        }
    }
}

impl fmt::Display for MessageStatus {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

impl<'de> Deserialize<'de> for MessageStatus {
    fn deserialize<D: serde::Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        Ok(Self::from(String::deserialize(deserializer)?.as_str()))
    }
}

impl serde::Serialize for MessageStatus {
    fn serialize<S: serde::Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
        serializer.serialize_str(self.as_str())
    }
}

/// Message status callback form.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct MessageStatusCallback {
    /// `MessageSid`.
    pub message_sid: String,
    /// `MessageStatus`.
    pub message_status: MessageStatus,
    /// `ErrorCode`, e.g. `63016`.
    pub error_code: Option<String>,
    /// `From`.
    pub from: Option<String>,
    /// `To`.
    pub to: Option<String>,
    /// `AccountSid`.
    pub account_sid: Option<String>,
}

impl MessageStatusCallback {
    /// Build from decoded form pairs (see [`parse_pairs`]). `SmsStatus` is used when
    /// `MessageStatus` is absent (older callbacks carry both).
    ///
    /// # Errors
    /// [`FormError::MissingField`] without `MessageSid` or a status.
    pub fn from_pairs(pairs: &[(String, String)]) -> Result<Self, FormError> {
        let status = optional(pairs, "MessageStatus")
            .or_else(|| optional(pairs, "SmsStatus"))
            .ok_or(FormError::MissingField {
                field: "MessageStatus",
            })?;
        Ok(Self {
            message_sid: optional(pairs, "MessageSid")
                .or_else(|| optional(pairs, "SmsSid"))
                .ok_or(FormError::MissingField {
                    field: "MessageSid",
                })?,
            message_status: MessageStatus::from(status.as_str()),
            error_code: optional(pairs, "ErrorCode"),
            from: optional(pairs, "From"),
            to: optional(pairs, "To"),
            account_sid: optional(pairs, "AccountSid"),
        })
    }
}

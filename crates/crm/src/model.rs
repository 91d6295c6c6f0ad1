//! Plain data types the store reads and writes. Timestamps are unix milliseconds (UTC).

use serde::{Deserialize, Serialize};

use crate::CrmError;

/// Which database a [`crate::Store`] talks to.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum Backend {
    /// Embedded single-file database (the default).
    Sqlite,
    /// Shared server database for several crmd instances.
    Postgres,
}

/// A person we talk to, keyed by an E.164 phone number.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Contact {
    /// Store id.
    pub id: i64,
    /// `+` and 8 to 15 digits.
    pub phone_e164: String,
    /// Last known name (WhatsApp profile name, caller name), if any.
    pub display_name: Option<String>,
    /// First time we saw this number.
    pub created_at_ms: i64,
    /// Latest time we saw this number (never moves backwards).
    pub last_seen_at_ms: i64,
}

/// An incoming-call webhook, as the store needs it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct NewCall {
    /// Twilio `CallSid` (unique).
    pub call_sid: String,
    /// Twilio `AccountSid`.
    pub account_sid: Option<String>,
    /// Caller number (E.164 when known; anything else is kept but links no contact).
    pub from: Option<String>,
    /// Called number.
    pub to: Option<String>,
    /// `inbound` / `outbound-api` / …
    pub direction: String,
    /// Twilio `CallStatus`.
    pub status: Option<String>,
    /// Twilio `CallerName` (CNAM), if any.
    pub caller_name: Option<String>,
    /// When the webhook arrived.
    pub at_ms: i64,
}

/// A stored call.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Call {
    /// Store id.
    pub id: i64,
    /// Twilio `CallSid`.
    pub call_sid: String,
    /// Twilio `AccountSid`.
    pub account_sid: Option<String>,
    /// Contact of the caller (when the caller number is a valid E.164 number).
    pub contact_id: Option<i64>,
    /// Caller number as received.
    pub from: Option<String>,
    /// Called number as received.
    pub to: Option<String>,
    /// `inbound` / `outbound-api` / …
    pub direction: String,
    /// Latest known call status.
    pub status: Option<String>,
    /// Twilio `CallerName`.
    pub caller_name: Option<String>,
    /// Media Streams `streamSid` once the WebSocket started.
    pub stream_sid: Option<String>,
    /// When the call row was created (webhook arrival or first stream event).
    pub started_at_ms: i64,
    /// When the media stream started.
    pub streaming_at_ms: Option<i64>,
    /// When the call ended (first end wins).
    pub ended_at_ms: Option<i64>,
    /// `ended_at_ms - started_at_ms`.
    pub duration_ms: Option<i64>,
}

/// One stream lifecycle event (status callback or WebSocket start/stop).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct StreamEventRecord {
    /// `stream-started` | `stream-stopped` | `stream-error` | `stream-ended` (free text is kept).
    pub kind: String,
    /// Media Streams `streamSid`, if known.
    pub stream_sid: Option<String>,
    /// `StreamError` text for `stream-error`.
    pub error: Option<String>,
    /// When it happened.
    pub at_ms: i64,
}

/// Who spoke a turn.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Speaker {
    /// The person on the phone.
    Caller,
    /// The AI agent.
    Agent,
}

impl Speaker {
    /// The stored spelling.
    #[must_use]
    pub fn as_str(self) -> &'static str {
        match self {
            Speaker::Caller => "caller",
            Speaker::Agent => "agent",
        }
    }

    pub(crate) fn parse(s: &str) -> Result<Self, CrmError> {
        match s {
            "caller" => Ok(Speaker::Caller),
            "agent" => Ok(Speaker::Agent),
            other => Err(CrmError::Corrupt(format!(
                "unknown speaker `{other}` in turns"
            ))),
        }
    }
}

/// A transcript turn to store. Writing the same `(call_sid, seq)` again replaces the turn
/// (so the call engine may re-submit a turn once it knows `heard_text` / `ended_at_ms`).
#[derive(Debug, Clone, PartialEq)]
pub struct NewTurn {
    /// Call this turn belongs to.
    pub call_sid: String,
    /// Order within the call, from 0 or 1, unique per call.
    pub seq: i64,
    /// Who spoke.
    pub speaker: Speaker,
    /// What was said (recognized caller text or the agent's full reply).
    pub text: String,
    /// For an interrupted agent turn: the part the caller actually heard.
    pub heard_text: Option<String>,
    /// The agent was barged in on.
    pub interrupted: bool,
    /// Start of the turn.
    pub started_at_ms: i64,
    /// End of the turn.
    pub ended_at_ms: Option<i64>,
    /// Latency breakdown (free-form JSON object from the call engine).
    pub latency_json: Option<serde_json::Value>,
}

/// A stored transcript turn.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Turn {
    /// Order within the call.
    pub seq: i64,
    /// Who spoke.
    pub speaker: Speaker,
    /// What was said.
    pub text: String,
    /// Part of an interrupted agent turn the caller heard.
    pub heard_text: Option<String>,
    /// The agent was barged in on.
    pub interrupted: bool,
    /// Start of the turn.
    pub started_at_ms: i64,
    /// End of the turn.
    pub ended_at_ms: Option<i64>,
    /// Latency breakdown.
    pub latency: Option<serde_json::Value>,
}

/// A recording file to reference from a call.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct NewRecording {
    /// Call recorded.
    pub call_sid: String,
    /// File path on the server.
    pub path: String,
    /// `opus` (Ogg Opus).
    pub codec: String,
    /// Audio duration.
    pub duration_ms: Option<i64>,
    /// File size.
    pub size_bytes: Option<i64>,
    /// When the recording was finished.
    pub at_ms: i64,
}

/// A stored recording reference.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Recording {
    /// Call recorded.
    pub call_sid: String,
    /// File path on the server.
    pub path: String,
    /// `opus` (Ogg Opus).
    pub codec: String,
    /// Audio duration.
    pub duration_ms: Option<i64>,
    /// File size.
    pub size_bytes: Option<i64>,
    /// When the recording was attached.
    pub created_at_ms: i64,
}

/// What a follow-up task asks the business to do.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum TaskKind {
    /// Read the message the caller left.
    Message,
    /// Call the caller back.
    Callback,
}

impl TaskKind {
    /// The stored spelling.
    #[must_use]
    pub fn as_str(self) -> &'static str {
        match self {
            TaskKind::Message => "message",
            TaskKind::Callback => "callback",
        }
    }

    pub(crate) fn parse(s: &str) -> Result<Self, CrmError> {
        match s {
            "message" => Ok(TaskKind::Message),
            "callback" => Ok(TaskKind::Callback),
            other => Err(CrmError::Corrupt(format!(
                "unknown task kind `{other}` in tasks"
            ))),
        }
    }
}

/// Whether a task still needs doing.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum TaskStatus {
    /// Not handled yet (every task starts open).
    Open,
    /// Handled.
    Done,
}

impl TaskStatus {
    /// The stored spelling.
    #[must_use]
    pub fn as_str(self) -> &'static str {
        match self {
            TaskStatus::Open => "open",
            TaskStatus::Done => "done",
        }
    }

    /// Parses `open` / `done` (e.g. a `?status=` query value); anything else is a 400
    /// [`CrmError::InvalidInput`].
    pub fn parse(s: &str) -> Result<Self, CrmError> {
        match s.trim() {
            "open" => Ok(TaskStatus::Open),
            "done" => Ok(TaskStatus::Done),
            other => Err(CrmError::invalid(
                "status",
                format!(
                    "expected `open` or `done`, got `{}`",
                    other.chars().take(32).collect::<String>()
                ),
            )),
        }
    }
}

/// A follow-up task to store (from a call's responder effects). Writing the same
/// `(call_sid, kind, seq)` again stores nothing new, so a retried write is harmless.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct NewTask {
    /// Call that produced the task.
    pub call_sid: String,
    /// Order of the task within its call (from 0), unique per call and kind.
    pub seq: i64,
    /// Who to get back to (E.164), when known.
    pub contact_phone: Option<String>,
    /// Message or callback.
    pub kind: TaskKind,
    /// The message, or what the caller said about the callback.
    pub text: String,
    /// When the caller would like the callback, in their words.
    pub preferred_time: Option<String>,
    /// When the task was created.
    pub at_ms: i64,
}

/// A stored follow-up task.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Task {
    /// Store id.
    pub id: i64,
    /// Call that produced the task.
    pub call_sid: String,
    /// Order of the task within its call.
    pub seq: i64,
    /// Who to get back to (E.164), when known.
    pub contact_phone: Option<String>,
    /// Message or callback.
    pub kind: TaskKind,
    /// The message, or what the caller said about the callback.
    pub text: String,
    /// When the caller would like the callback, in their words.
    pub preferred_time: Option<String>,
    /// Open or done.
    pub status: TaskStatus,
    /// When the task was created.
    pub created_at_ms: i64,
}

/// A call with everything recorded about it.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct CallDetail {
    /// The call row.
    pub call: Call,
    /// Transcript, ordered by `seq`.
    pub turns: Vec<Turn>,
    /// Stream lifecycle events, ordered by time.
    pub stream_events: Vec<StreamEventRecord>,
    /// The recording, when one was attached.
    pub recording: Option<Recording>,
}

/// Direction of a message.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum MessageDirection {
    /// From the contact to us.
    Inbound,
    /// From us to the contact.
    Outbound,
}

impl MessageDirection {
    /// The stored spelling.
    #[must_use]
    pub fn as_str(self) -> &'static str {
        match self {
            MessageDirection::Inbound => "inbound",
            MessageDirection::Outbound => "outbound",
        }
    }

    pub(crate) fn parse(s: &str) -> Result<Self, CrmError> {
        match s {
            "inbound" => Ok(MessageDirection::Inbound),
            "outbound" => Ok(MessageDirection::Outbound),
            other => Err(CrmError::Corrupt(format!(
                "unknown message direction `{other}`"
            ))),
        }
    }
}

/// A media attachment of a message.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct MessageMedia {
    /// Where the provider hosts it.
    pub url: String,
    /// MIME type, when the provider said.
    pub content_type: Option<String>,
}

/// A stored message (WhatsApp today; `channel` leaves room for others).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Message {
    /// Store id.
    pub id: i64,
    /// Contact on the other side.
    pub contact_id: i64,
    /// `whatsapp`.
    pub channel: String,
    /// In or out.
    pub direction: MessageDirection,
    /// `twilio` or `bridge`.
    pub provider: String,
    /// Provider message id (Twilio `MessageSid`), once known.
    pub provider_sid: Option<String>,
    /// Sender address as the provider spells it (`whatsapp:+…`).
    pub from: String,
    /// Recipient address as the provider spells it.
    pub to: String,
    /// Text.
    pub body: String,
    /// Attachments.
    pub media: Vec<MessageMedia>,
    /// Lifecycle status (`queued`, `sent`, `delivered`, `read`, `failed`, `received`, …).
    pub status: String,
    /// Provider error code for failed messages.
    pub error_code: Option<String>,
    /// Provider error text for failed messages.
    pub error_message: Option<String>,
    /// When stored.
    pub created_at_ms: i64,
    /// Last status change.
    pub updated_at_ms: i64,
}

/// A page request: at most `limit` items older than `cursor` (newest first).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct PageRequest {
    /// 1..=[`PageRequest::MAX_LIMIT`].
    pub limit: u32,
    /// Opaque cursor from a previous [`Page::next_cursor`].
    pub cursor: Option<i64>,
}

impl Default for PageRequest {
    fn default() -> Self {
        PageRequest {
            limit: Self::DEFAULT_LIMIT,
            cursor: None,
        }
    }
}

impl PageRequest {
    /// Items per page when the client does not say.
    pub const DEFAULT_LIMIT: u32 = 50;
    /// Largest page a client may ask for.
    pub const MAX_LIMIT: u32 = 200;

    /// Parses `?limit=` and `?cursor=` query values; bad values are a 400 [`CrmError::InvalidInput`].
    pub fn parse(limit: Option<&str>, cursor: Option<&str>) -> Result<Self, CrmError> {
        let limit = match limit {
            None => Self::DEFAULT_LIMIT,
            Some(s) => match s.trim().parse::<u32>() {
                Ok(n) if (1..=Self::MAX_LIMIT).contains(&n) => n,
                _ => {
                    return Err(CrmError::invalid(
                        "limit",
                        format!(
                            "expected an integer from 1 to {}, got `{s}`",
                            Self::MAX_LIMIT
                        ),
                    ));
                }
            },
        };
        let cursor = match cursor {
            None => None,
            Some("") => None,
            Some(s) => match s.parse::<i64>() {
                Ok(n) if n > 0 => Some(n),
                _ => {
                    return Err(CrmError::invalid(
                        "cursor",
                        "expected the next_cursor value of a previous page",
                    ));
                }
            },
        };
        Ok(PageRequest { limit, cursor })
    }

    pub(crate) fn validated(self) -> Result<Self, CrmError> {
        if self.limit == 0 || self.limit > Self::MAX_LIMIT {
            return Err(CrmError::invalid(
                "limit",
                format!("expected 1 to {}, got {}", Self::MAX_LIMIT, self.limit),
            ));
        }
        Ok(self)
    }
}

/// One page of results, newest first.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Page<T> {
    /// The items.
    pub items: Vec<T>,
    /// Pass as `cursor` to get the next (older) page; `None` on the last page.
    pub next_cursor: Option<i64>,
}

/// Filters for listing calls; all optional, combined with AND.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct CallFilter {
    /// Only calls of this contact.
    pub contact_id: Option<i64>,
    /// Only calls from this number (E.164).
    pub from: Option<String>,
    /// Only calls with this status.
    pub status: Option<String>,
    /// Only calls started at or after this time.
    pub since_ms: Option<i64>,
    /// Only calls started before this time.
    pub until_ms: Option<i64>,
}

/// True for `+` followed by 8 to 15 digits, the first non-zero (ITU-T E.164).
#[must_use]
pub fn is_e164(s: &str) -> bool {
    let Some(digits) = s.strip_prefix('+') else {
        return false;
    };
    (8..=15).contains(&digits.len())
        && digits.bytes().all(|b| b.is_ascii_digit())
        && !digits.starts_with('0')
}

pub(crate) fn now_ms() -> i64 {
    chrono::Utc::now().timestamp_millis()
}

//! Deciding what the agent says: the [`Responder`] trait and its two implementations.
//!
//! A responder turns one caller input (recognised text or a DTMF digit) plus a [`CallContext`]
//! into a [`Reply`]: a stream of reply text chunks (one sentence each, ready for TTS) and the
//! structured [`ResponderEffect`]s the session must store (a message left, a callback booked, the
//! call to end). Dropping the stream cancels the work behind it (for the LLM: the HTTP request).
//!
//! - [`ScriptedResponder`]: keyword/intent rules from a TOML script, Hebrew and English, offline.
//! - [`LlmResponder`]: an OpenAI-compatible Chat Completions client with `stream: true`.
//!
//! The fixed lines (greeting, reprompts, goodbye, apology, fallback) come from the script in both
//! cases: see [`Responder::fixed_lines`].

mod llm;
mod scripted;
mod sentence;
mod text_match;

use std::fmt;
use std::pin::Pin;

use futures::Stream;

pub use llm::{LlmConfig, LlmResponder};
pub use scripted::{Script, ScriptedResponder};
pub use sentence::SentenceSplitter;
pub use text_match::{normalize_for_matching, phrase_matches};

/// What the caller did: said something (recognised text) or pressed a key.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum CallerInput {
    /// A final transcript (voice) or a message body (WhatsApp).
    Text(String),
    /// A DTMF digit: `0`-`9`, `*`, `#`.
    Dtmf(char),
}

impl CallerInput {
    /// The input as text for history and logs (`"[DTMF 1]"` for a key press).
    pub fn as_history_text(&self) -> String {
        match self {
            CallerInput::Text(text) => text.clone(),
            CallerInput::Dtmf(digit) => format!("[DTMF {digit}]"),
        }
    }
}

/// Where the conversation happens; the responder may shape its replies accordingly.
#[derive(Debug, Clone, Copy, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Channel {
    /// A phone call (replies are spoken: short sentences, no markup).
    Voice,
    /// A WhatsApp conversation (replies are read).
    Whatsapp,
}

/// Who said a line of the conversation history.
#[derive(Debug, Clone, Copy, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum HistorySpeaker {
    /// The person calling / writing.
    Caller,
    /// Us.
    Agent,
}

/// One line of recent conversation history, oldest first in [`CallContext::history`].
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct HistoryTurn {
    /// Who said it.
    pub speaker: HistorySpeaker,
    /// What was said (for an interrupted agent turn: the part the caller actually heard).
    pub text: String,
}

/// A multi-turn intent the responder is in the middle of: the next caller input completes it.
///
/// The responder returns it in [`Reply::awaiting`]; the session keeps it and passes it back in
/// [`CallContext::awaiting`] with the next input. Responders are shared between calls and keep
/// no per-call state of their own.
#[derive(Debug, Clone, PartialEq, Eq)]
#[non_exhaustive]
pub enum AwaitedInput {
    /// We asked the caller to say their message; the next input is the message.
    MessageBody,
    /// We asked when to call back; the next input is the preferred time.
    CallbackTime,
}

/// Everything a responder may know about the call besides the input itself.
#[derive(Debug, Clone)]
pub struct CallContext {
    /// Twilio's CallSid (or a conversation id for WhatsApp), for logs.
    pub call_id: String,
    /// The caller's name from the CRM, if known.
    pub contact_name: Option<String>,
    /// The caller's number in E.164, if known.
    pub contact_phone: Option<String>,
    /// Recent turns, oldest first (the session bounds its length).
    pub history: Vec<HistoryTurn>,
    /// Voice or WhatsApp.
    pub channel: Channel,
    /// A multi-turn intent in progress, from the previous [`Reply::awaiting`].
    pub awaiting: Option<AwaitedInput>,
}

impl CallContext {
    /// A context for a voice call with no contact, no history and nothing awaited.
    pub fn voice(call_id: impl Into<String>) -> Self {
        CallContext {
            call_id: call_id.into(),
            contact_name: None,
            contact_phone: None,
            history: Vec::new(),
            channel: Channel::Voice,
            awaiting: None,
        }
    }
}

/// A structured outcome of a reply that the session stores or acts on.
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize)]
#[serde(tag = "effect", rename_all = "snake_case")]
#[non_exhaustive]
pub enum ResponderEffect {
    /// The caller left a message for the business.
    LeaveMessage {
        /// The message as recognised.
        text: String,
    },
    /// The caller asked to be called back.
    BookCallback {
        /// The number to call back (the caller's, when known).
        phone: Option<String>,
        /// When the caller said suits them, in their words ("tomorrow morning").
        preferred_time: Option<String>,
    },
    /// The conversation is over: after this reply is played, the session hangs up.
    EndCall,
}

/// The kind of answer a [`Reply`] gives; lets the session pick a TTS kind and log intent names.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ReplyMeta {
    /// The matched intent (`"opening_hours"`, `"fallback"`, `"llm"`, ...).
    pub intent: String,
    /// The text is a fixed line of a script that every caller in the same situation hears word
    /// for word (no caller name, nothing generated): its audio may be cached and shared between
    /// calls. `false` for generated text and for lines that carry the caller's name.
    pub fixed_text: bool,
}

/// A stream of reply text chunks; each item is one sentence (or a sentence-sized piece).
/// Dropping it cancels whatever produces the text.
pub type ReplyStream = Pin<Box<dyn Stream<Item = Result<String, ResponderError>> + Send + 'static>>;

/// What a responder returns for one caller input.
pub struct Reply {
    /// The reply text, sentence by sentence, as it becomes available.
    pub chunks: ReplyStream,
    /// Outcomes to store or act on; known as soon as the reply starts.
    pub effects: Vec<ResponderEffect>,
    /// A multi-turn intent the next input completes (pass back in [`CallContext::awaiting`]).
    pub awaiting: Option<AwaitedInput>,
    /// Which intent produced this reply.
    pub meta: ReplyMeta,
}

impl fmt::Debug for Reply {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Reply")
            .field("chunks", &"<stream>")
            .field("effects", &self.effects)
            .field("awaiting", &self.awaiting)
            .field("meta", &self.meta)
            .finish()
    }
}

impl Reply {
    /// A reply whose whole text is known now; split into sentences.
    pub fn from_text(text: &str, meta: ReplyMeta) -> Self {
        let sentences = SentenceSplitter::split_all(text);
        Reply {
            chunks: Box::pin(futures::stream::iter(sentences.into_iter().map(Ok))),
            effects: Vec::new(),
            awaiting: None,
            meta,
        }
    }
}

/// The fixed lines of a conversation; the turn engine and the TTS cache use them.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct FixedLines {
    /// Said once, at once, when the call starts (played from the TTS cache).
    pub greeting: String,
    /// Said when the caller stays silent; one per consecutive reprompt (last one repeats).
    pub reprompts: Vec<String>,
    /// Said before we hang up (after the goodbye intent or too many reprompts).
    pub goodbye: String,
    /// Said when TTS or the responder failed mid-turn.
    pub apology: String,
    /// Said when no rule matched or the responder timed out.
    pub fallback: String,
}

/// Caller input + context -> reply text chunks and effects. Shared by all calls (`Arc<dyn Responder>`).
pub trait Responder: Send + Sync + fmt::Debug {
    /// Start answering `input`. Must not block: slow work belongs inside the returned stream.
    fn respond(&self, input: &CallerInput, ctx: &CallContext) -> Reply;

    /// The greeting, reprompt, goodbye, apology and fallback lines.
    fn fixed_lines(&self) -> &FixedLines;
}

/// Why a reply could not be produced. Messages say what to check.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum ResponderError {
    /// The LLM endpoint sent nothing usable in time.
    #[error(
        "LLM at {endpoint} gave no {stage} within {waited_ms} ms: check LLM_BASE_URL and the provider's status, or raise the responder timeout"
    )]
    Timeout {
        /// The chat completions URL (no key).
        endpoint: String,
        /// `"response headers"`, `"first token"` or `"next chunk"`.
        stage: &'static str,
        /// How long we waited.
        waited_ms: u64,
    },
    /// The LLM endpoint answered with an HTTP error.
    #[error(
        "LLM at {endpoint} answered HTTP {status}: {body_excerpt} (401/403: check LLM_API_KEY; 404: check LLM_BASE_URL and LLM_MODEL; 429/5xx: provider overloaded)"
    )]
    HttpStatus {
        /// The chat completions URL (no key).
        endpoint: String,
        /// The status code.
        status: u16,
        /// The start of the response body (providers put the reason there).
        body_excerpt: String,
    },
    /// The connection failed or broke.
    #[error("LLM at {endpoint} could not be reached or the stream broke: {detail}")]
    Transport {
        /// The chat completions URL (no key).
        endpoint: String,
        /// The transport error.
        detail: String,
    },
    /// A streamed chunk was not the Chat Completions JSON we expect.
    #[error(
        "LLM at {endpoint} sent a malformed stream chunk ({detail}): is LLM_BASE_URL an OpenAI-compatible /v1 endpoint?"
    )]
    MalformedChunk {
        /// The chat completions URL (no key).
        endpoint: String,
        /// What was wrong, with the start of the chunk.
        detail: String,
    },
}

/// A responder's configuration could not be loaded. Messages name the file or variable to fix.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum ResponderConfigError {
    /// The script file could not be read.
    #[error("cannot read responder script {path}: {source}")]
    ScriptRead {
        /// The path given.
        path: String,
        /// The I/O error.
        #[source]
        source: std::io::Error,
    },
    /// The script is not valid TOML or misses fields.
    #[error("responder script {origin} is invalid: {detail}")]
    ScriptInvalid {
        /// The path, or `"built-in default"`.
        origin: String,
        /// What is wrong, with line/column from the TOML parser.
        detail: String,
    },
    /// A required environment value is missing or empty.
    #[error("{variable} is not set: {hint}")]
    MissingSetting {
        /// The variable name.
        variable: &'static str,
        /// What to put there.
        hint: &'static str,
    },
    /// A setting has an unusable value.
    #[error("{variable} is invalid: {detail}")]
    InvalidSetting {
        /// The variable name.
        variable: &'static str,
        /// What is wrong (never the value of a secret).
        detail: String,
    },
    /// The system prompt file could not be read.
    #[error("cannot read LLM system prompt file {path}: {source}")]
    PromptRead {
        /// The path given.
        path: String,
        /// The I/O error.
        #[source]
        source: std::io::Error,
    },
}

//! Twilio Media Streams WebSocket messages (bidirectional `<Connect><Stream>`).
//!
//! Inbound: [`parse_inbound`] turns one text frame into an [`InboundMessage`]. It is strict about
//! what the call depends on (required ids, counters, base64 audio) and tolerant about the rest:
//! unknown events become [`InboundMessage::Unknown`], unknown fields are ignored, counters are
//! accepted both as JSON strings (what Twilio sends) and as numbers.
//!
//! Order checks that need state (no `media` before `start`, one stream id per socket, payloads
//! that are a whole number of sample frames for the negotiated format) live in
//! [`StreamValidator`]; per-call audio figures in [`StreamHealth`].
//!
//! Outbound: [`media_json`], [`mark_json`], [`clear_json`] write the JSON text directly into a
//! `String` (no `serde_json::Value`), always carrying the `streamSid`; [`MediaJsonWriter`] keeps
//! the escaped `streamSid` prefix of one stream's `media` messages.

mod b64;
mod fast;
mod health;
mod outbound;
mod validator;
mod wire;

use std::collections::BTreeMap;

use bytes::Bytes;

pub use health::{StreamHealth, StreamHealthSnapshot};
pub use outbound::{
    MediaJsonWriter, clear_json, mark_json, media_json, write_clear_json, write_mark_json,
    write_media_json,
};
pub use validator::{StreamPhase, StreamValidator};

/// Sample rate of Twilio's `audio/x-mulaw` streams, in Hz.
pub const TWILIO_SAMPLE_RATE_HZ: u32 = 8_000;
/// Encoding name Twilio reports in `start.mediaFormat.encoding`.
pub const MULAW_ENCODING: &str = "audio/x-mulaw";

/// One text frame received from Twilio, typed.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum InboundMessage {
    /// First message on the socket; carries no stream id.
    Connected(Connected),
    /// Stream metadata; everything after it carries the same `streamSid`.
    Start(Start),
    /// One chunk of caller audio.
    Media(Media),
    /// A keypad digit.
    Dtmf(Dtmf),
    /// Echo of a mark we sent: all audio queued before it has played (or was cleared).
    Mark(Mark),
    /// The stream ended (call hung up or `<Stream>` stopped).
    Stop(Stop),
    /// An event name this crate does not know. The frame is otherwise ignored.
    Unknown {
        /// The `event` value as received.
        event: String,
    },
}

impl InboundMessage {
    /// The wire name of the event (`"media"`, `"start"`, ... or the unknown name).
    #[must_use]
    pub fn event_name(&self) -> &str {
        match self {
            Self::Connected(_) => "connected",
            Self::Start(_) => "start",
            Self::Media(_) => "media",
            Self::Dtmf(_) => "dtmf",
            Self::Mark(_) => "mark",
            Self::Stop(_) => "stop",
            Self::Unknown { event } => event,
        }
    }

    /// The `streamSid` the message carries (`None` for `connected` and unknown events).
    #[must_use]
    pub fn stream_sid(&self) -> Option<&str> {
        match self {
            Self::Start(m) => Some(&m.stream_sid),
            Self::Media(m) => Some(&m.stream_sid),
            Self::Dtmf(m) => Some(&m.stream_sid),
            Self::Mark(m) => Some(&m.stream_sid),
            Self::Stop(m) => Some(&m.stream_sid),
            Self::Connected(_) | Self::Unknown { .. } => None,
        }
    }

    /// The top-level `sequenceNumber`, when the message has one.
    #[must_use]
    pub fn sequence_number(&self) -> Option<u64> {
        match self {
            Self::Start(m) => m.sequence_number,
            Self::Media(m) => m.sequence_number,
            Self::Dtmf(m) => m.sequence_number,
            Self::Mark(m) => m.sequence_number,
            Self::Stop(m) => m.sequence_number,
            Self::Connected(_) | Self::Unknown { .. } => None,
        }
    }
}

/// `connected`: `{"event":"connected","protocol":"Call","version":"1.0.0"}`.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct Connected {
    /// `protocol`, `"Call"` from Twilio.
    pub protocol: Option<String>,
    /// `version`, `"1.0.0"` from Twilio.
    pub version: Option<String>,
}

/// `start`: stream metadata.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Start {
    /// Top-level `sequenceNumber` (Twilio sends `"1"`).
    pub sequence_number: Option<u64>,
    /// Top-level `streamSid` (or `start.streamSid` when the top-level one is absent).
    pub stream_sid: String,
    /// `start.accountSid`.
    pub account_sid: String,
    /// `start.callSid`.
    pub call_sid: String,
    /// `start.tracks`, e.g. `["inbound"]`; empty when absent.
    pub tracks: Vec<String>,
    /// `start.customParameters`: the `<Parameter name= value=>` pairs of the TwiML.
    pub custom_parameters: BTreeMap<String, String>,
    /// `start.mediaFormat`; the documented Twilio default when absent.
    pub media_format: MediaFormat,
}

/// `start.mediaFormat`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct MediaFormat {
    /// `encoding`, `"audio/x-mulaw"` from Twilio.
    pub encoding: String,
    /// `sampleRate` in Hz, 8000 from Twilio.
    pub sample_rate: u32,
    /// `channels`, 1 from Twilio.
    pub channels: u16,
}

impl Default for MediaFormat {
    /// What Twilio documents and sends: 8 kHz mono mu-law.
    fn default() -> Self {
        Self {
            encoding: MULAW_ENCODING.to_owned(),
            sample_rate: TWILIO_SAMPLE_RATE_HZ,
            channels: 1,
        }
    }
}

impl MediaFormat {
    /// Bytes in one sample frame (one sample for every channel), when the encoding is known:
    /// 1 per channel for mu-law / A-law, 2 per channel for 16-bit linear PCM.
    #[must_use]
    pub fn bytes_per_sample_frame(&self) -> Option<usize> {
        let per_channel: usize = match self.encoding.to_ascii_lowercase().as_str() {
            "audio/x-mulaw" | "audio/mulaw" | "audio/pcmu" | "audio/x-alaw" | "audio/alaw"
            | "audio/pcma" => 1,
            "audio/l16" | "audio/x-l16" => 2,
            _ => return None,
        };
        Some(per_channel * usize::from(self.channels.max(1)))
    }

    /// Payload bytes per millisecond of audio, when the encoding is known and the rate is a
    /// whole number of samples per millisecond (8 for Twilio's 8 kHz mono mu-law).
    #[must_use]
    pub fn bytes_per_ms(&self) -> Option<u64> {
        let frame = u64::try_from(self.bytes_per_sample_frame()?).ok()?;
        let rate = u64::from(self.sample_rate);
        (rate > 0 && rate % 1000 == 0).then(|| rate / 1000 * frame)
    }
}

/// `media`: one chunk of audio.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Media {
    /// Top-level `sequenceNumber`.
    pub sequence_number: Option<u64>,
    /// Top-level `streamSid`.
    pub stream_sid: String,
    /// `media.track` (`"inbound"` from Twilio for `<Connect>`); empty when absent.
    pub track: String,
    /// `media.chunk`: 1 for the first media frame of the track, then +1 per frame.
    pub chunk: u64,
    /// `media.timestamp`: milliseconds since the stream started.
    pub timestamp_ms: u64,
    /// `media.payload` decoded from base64: raw mu-law bytes (160 per 20 ms frame), no header.
    pub payload: Bytes,
}

/// `dtmf`: a keypad digit.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Dtmf {
    /// Top-level `sequenceNumber`.
    pub sequence_number: Option<u64>,
    /// Top-level `streamSid`.
    pub stream_sid: String,
    /// `dtmf.track` (`"inbound_track"` from Twilio); empty when absent.
    pub track: String,
    /// `dtmf.digit`: one of `0-9`, `*`, `#`, `A-D` (upper-cased).
    pub digit: char,
}

/// `mark`: echo of a mark we sent.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Mark {
    /// Top-level `sequenceNumber`.
    pub sequence_number: Option<u64>,
    /// Top-level `streamSid`.
    pub stream_sid: String,
    /// `mark.name` as we sent it.
    pub name: String,
}

/// `stop`: the stream ended.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Stop {
    /// Top-level `sequenceNumber`.
    pub sequence_number: Option<u64>,
    /// Top-level `streamSid`.
    pub stream_sid: String,
    /// `stop.accountSid`, when present.
    pub account_sid: Option<String>,
    /// `stop.callSid`.
    pub call_sid: String,
}

/// Why an inbound frame was rejected. Every variant is safe to log with the call id; the socket
/// can keep going (Twilio ignores nothing we need to answer).
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum ParseError {
    /// The frame is not a JSON object of the expected shape.
    #[error("Media Streams frame is not valid JSON ({reason}); the frame was ignored")]
    InvalidJson {
        /// serde_json's description, with line and column.
        reason: String,
    },
    /// The JSON object has no `event` string.
    #[error("Media Streams frame has no `event` field; the frame was ignored")]
    MissingEvent,
    /// A field this crate needs is absent.
    #[error("Media Streams `{event}` frame lacks required field `{field}`; the frame was ignored")]
    MissingField {
        /// Event name.
        event: &'static str,
        /// JSON path of the missing field, e.g. `media.chunk`.
        field: &'static str,
    },
    /// A field has a value this crate cannot use.
    #[error("Media Streams `{event}` frame has an invalid `{field}`: {reason}")]
    InvalidField {
        /// Event name.
        event: &'static str,
        /// JSON path of the field.
        field: &'static str,
        /// What was wrong.
        reason: String,
    },
    /// `media.payload` is not valid base64.
    #[error(
        "media frame (sequenceNumber {sequence_number:?}) has a payload that is not valid base64: {reason}"
    )]
    InvalidBase64 {
        /// Top-level `sequenceNumber` of the frame.
        sequence_number: Option<u64>,
        /// What the decoder reported.
        reason: String,
    },
    /// The decoded payload does not hold a whole number of sample frames for the stream's format.
    #[error(
        "media frame (sequenceNumber {sequence_number:?}) carries {payload_len} bytes, not a whole number of \
         {bytes_per_sample_frame}-byte sample frames for the stream's mediaFormat"
    )]
    PayloadNotWholeSamples {
        /// Top-level `sequenceNumber` of the frame.
        sequence_number: Option<u64>,
        /// Decoded payload length.
        payload_len: usize,
        /// Bytes per sample frame of the negotiated format.
        bytes_per_sample_frame: usize,
    },
    /// A `media` frame arrived before the `start` frame of the stream.
    #[error(
        "media frame (sequenceNumber {sequence_number:?}) arrived before the stream's `start`; it was dropped"
    )]
    MediaBeforeStart {
        /// Top-level `sequenceNumber` of the frame.
        sequence_number: Option<u64>,
    },
    /// A `dtmf`, `mark` or `stop` frame arrived before `start`.
    #[error("`{event}` frame arrived before the stream's `start`; it was dropped")]
    EventBeforeStart {
        /// Event name.
        event: &'static str,
    },
    /// A second `start` frame on the same socket.
    #[error("second `start` frame on one socket (stream {stream_sid}); it was ignored")]
    DuplicateStart {
        /// `streamSid` of the extra `start`.
        stream_sid: String,
    },
    /// A frame carries a `streamSid` other than the one announced in `start`.
    #[error("frame for stream {received} on the socket of stream {expected}; it was ignored")]
    StreamSidMismatch {
        /// `streamSid` from `start`.
        expected: String,
        /// `streamSid` of the frame.
        received: String,
    },
    /// A frame arrived after `stop`.
    #[error("`{event}` frame arrived after the stream's `stop`; it was ignored")]
    AfterStop {
        /// Event name.
        event: String,
    },
}

/// Parse one Media Streams text frame received from Twilio.
///
/// Stateless: it does not know whether `start` was seen. Feed the result to a
/// [`StreamValidator`] (or call [`StreamValidator::handle_text`]) for order checks.
///
/// # Errors
/// [`ParseError`] for invalid JSON, a missing `event`, missing or malformed required fields of a
/// known event, or a payload that is not valid base64. Unknown events are `Ok(Unknown)`.
pub fn parse_inbound(text: &str) -> Result<InboundMessage, ParseError> {
    wire::parse(text)
}

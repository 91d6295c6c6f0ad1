//! What a call reports: live [`CallEvent`]s, per-turn [`TurnLatency`], and the final
//! [`CallSummary`].

use serde::Serialize;

use crate::responder::ResponderEffect;
use crate::rest::HangupOutcome;

/// Per-turn latency breakdown, in milliseconds. Fields are `None` when they do not apply (a
/// greeting has no end of utterance) or were not observed (the call ended first).
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize)]
pub struct TurnLatency {
    /// Caller silence the engine waited before deciding the utterance was over.
    pub eou_ms: Option<u64>,
    /// From the end of the caller's speech to the STT final that closed it (negative lags,
    /// finals before the end of speech, count as 0).
    pub stt_final_lag_ms: Option<u64>,
    /// From the reply request to the responder's first text.
    pub responder_first_token_ms: Option<u64>,
    /// From the first synthesis request of the turn to its first audio.
    pub tts_first_byte_ms: Option<u64>,
    /// From the reply request (end of utterance) to the first frame sent to Twilio.
    pub first_frame_after_eou_ms: Option<u64>,
    /// From the end of the caller's speech to the first frame sent to Twilio.
    pub speech_end_to_first_frame_ms: Option<u64>,
    /// On Twilio's clock: from the caller's last voiced `media.timestamp` to the latest
    /// `media.timestamp` seen when the mark after our first reply frame came back.
    pub twilio_clock_ms: Option<u64>,
}

/// One agent turn as it ended.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct TurnSummary {
    /// The engine's turn number.
    pub turn: u64,
    /// `greeting`, `reply`, `reprompt`, `goodbye` or `apology`.
    pub kind: &'static str,
    /// What the caller said for a reply turn.
    pub caller_text: Option<String>,
    /// Everything the agent was to say.
    pub agent_text: String,
    /// What the caller heard, when interrupted.
    pub heard_text: Option<String>,
    /// How it ended (`played`, `interrupted`, ...).
    pub outcome: &'static str,
    /// Audio the engine handed out for the turn.
    pub audio_ms: u64,
    /// Frames actually sent to Twilio for the turn.
    pub frames_sent: u64,
    /// Bytes of audio actually sent to Twilio for the turn.
    pub bytes_sent: u64,
    /// Latency breakdown.
    pub latency: TurnLatency,
}

/// Why a call's driver returned.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
#[serde(tag = "reason", rename_all = "snake_case")]
#[non_exhaustive]
pub enum EndReason {
    /// Twilio sent `stop`.
    Stopped,
    /// The socket closed without a `stop` (the caller hung up, or the network dropped).
    SocketClosedWithoutStop,
    /// The socket failed.
    TransportFailed {
        /// The transport's description.
        detail: String,
    },
    /// We ended the call (goodbye, or no response after the reprompts).
    HungUpByAgent {
        /// `goodbye` (the caller said goodbye) or `no_response` (reprompts ran out).
        why: &'static str,
    },
}

/// What a finished call looked like, returned by [`crate::run_call`].
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct CallSummary {
    /// Twilio's CallSid, once `start` arrived.
    pub call_sid: Option<String>,
    /// Twilio's StreamSid, once `start` arrived.
    pub stream_sid: Option<String>,
    /// Why the driver returned.
    pub end_reason: EndReason,
    /// From `start` to the end, in ms (0 if there was no `start`).
    pub duration_ms: u64,
    /// Greeting turns started (1 in every call that started; never more).
    pub greetings: u32,
    /// Every agent turn, in order.
    pub turns: Vec<TurnSummary>,
    /// Effects the responder produced (messages left, callbacks booked, end of call).
    pub effects: Vec<ResponderEffect>,
    /// Caller media frames received.
    pub media_frames_in: u64,
    /// Agent media frames sent.
    pub media_frames_out: u64,
    /// Twilio `clear` messages sent (barge-ins).
    pub clears_sent: u32,
    /// STT sessions reopened by the driver after the speech client gave up.
    pub stt_reopens: u32,
    /// STT stream restarts the speech client reported (rotation, transient errors).
    pub stt_restarts: u32,
    /// Result of our REST hang-up, if we hung up.
    pub hangup: Option<Result<HangupOutcome, String>>,
    /// Inbound stream health at the end.
    pub inbound_health: Option<twilio_stream::media::StreamHealthSnapshot>,
    /// The finished recording (also queued to the CRM), when calls are recorded: the stereo
    /// mu-law WAV spool. Its Ogg Opus encoding follows on the recording pool's encoder threads
    /// (same path, `.ogg`) and replaces the spool, in the CRM and on disk.
    pub recording: Option<crm::NewRecording>,
    /// 20 ms chunks left out of the recording because its spool writer fell behind.
    pub recording_dropped_chunks: u64,
}

/// A live event for a console (`tokio::sync::broadcast`); every variant carries the CallSid.
#[derive(Debug, Clone, PartialEq, Serialize)]
#[serde(tag = "type", rename_all = "snake_case")]
#[non_exhaustive]
pub enum CallEvent {
    /// The stream started.
    CallStarted {
        /// Twilio CallSid.
        call_sid: String,
        /// Twilio StreamSid.
        stream_sid: String,
    },
    /// The turn-taking state changed.
    StateChanged {
        /// Twilio CallSid.
        call_sid: String,
        /// Previous state (`LISTENING`, `THINKING`, `SPEAKING`, `ENDED`).
        from: String,
        /// New state.
        to: String,
    },
    /// A caller transcript, partial or final.
    Transcript {
        /// Twilio CallSid.
        call_sid: String,
        /// The text.
        text: String,
        /// Final or interim.
        is_final: bool,
    },
    /// Text the agent is about to say.
    AgentText {
        /// Twilio CallSid.
        call_sid: String,
        /// The turn.
        turn: u64,
        /// `greeting`, `reply`, ...
        kind: &'static str,
        /// The sentence(s).
        text: String,
    },
    /// The caller interrupted the agent.
    BargeIn {
        /// Twilio CallSid.
        call_sid: String,
        /// The interrupted turn.
        turn: u64,
        /// From caller voice onset to `clear`.
        latency_ms: u64,
        /// What the caller heard of the turn.
        heard_text: String,
    },
    /// A reply turn's latency breakdown (when its first frame was sent).
    Latency {
        /// Twilio CallSid.
        call_sid: String,
        /// The turn.
        turn: u64,
        /// The breakdown.
        latency: TurnLatency,
    },
    /// The responder produced an effect (message left, callback booked, end of call).
    Effect {
        /// Twilio CallSid.
        call_sid: String,
        /// The effect.
        effect: ResponderEffect,
    },
    /// The call ended.
    CallEnded {
        /// Twilio CallSid.
        call_sid: String,
        /// Why.
        end_reason: EndReason,
        /// From `start`, in ms.
        duration_ms: u64,
    },
}

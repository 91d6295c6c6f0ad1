//! Turn-taking for a phone voice agent: decides when the caller has finished speaking, when the
//! agent may talk, and when the caller interrupts it.
//!
//! [`TurnEngine`] is a deterministic, sans-IO state machine (`Listening -> Thinking -> Speaking
//! -> Listening`, then `Ended`) in the style of `quinn-proto`: the driver feeds inputs with
//! `handle_*` (caller audio frames, STT partials and finals, responder text, synthesized audio,
//! Twilio mark echoes, DTMF, stream stop, timer), then drains [`TurnEngine::poll_action`] and
//! [`TurnEngine::poll_event`], then sleeps until [`TurnEngine::poll_timeout`]. It implements:
//! an adaptive energy VAD behind [`VoiceActivityDetector`]; end of utterance after `eou_ms` of
//! silence with a transcript (late finals fall back to the latest stable partial); the greeting
//! exactly once; barge-in with `Clear` after `barge_in_ms` of caller speech; playback truth from
//! echoed marks with a duration-based fallback; and loop guards (one reply in flight, empty,
//! echoed and duplicate transcripts ignored, reprompts then goodbye and hang-up).
//!
//! # Driver loop
//! ```
//! use std::time::Instant;
//! use turn::{Action, Event, TurnConfig, TurnEngine};
//!
//! let mut engine = TurnEngine::new(TurnConfig::default())?;
//! engine.handle_stream_start(Instant::now()); // on Twilio `start`
//! // After every input: drain every action, then every event, then re-arm the timer.
//! while let Some(action) = engine.poll_action() {
//!     match action {
//!         Action::Synthesize { turn, text, kind } => { /* TTS; then handle_tts_audio/_done */ }
//!         Action::Play { turn, audio } => { /* Twilio `media` messages */ }
//!         Action::SendMark { turn, name } => { /* Twilio `mark`; echo -> handle_mark */ }
//!         Action::Clear => { /* Twilio `clear` */ }
//!         Action::StartReply { turn, input } => { /* responder; chunks -> handle_reply_chunk */ }
//!         Action::CancelReply { .. } | Action::CancelSynthesis { .. } => { /* drop the task */ }
//!         Action::Hangup { reason } => { /* Twilio REST Status=completed */ }
//!     }
//! }
//! while let Some(event) = engine.poll_event() {
//!     if let Event::StateChanged { from, to, .. } = event { /* log */ }
//! }
//! let wake_at = engine.poll_timeout(); // sleep until then, then engine.handle_timeout(now)
//! # let _ = wake_at;
//! # Ok::<(), turn::ConfigError>(())
//! ```
//!
//! It deliberately does not: read a clock, sleep, spawn, do I/O, use randomness, speak any wire
//! format (Twilio JSON, gRPC) or call the responder/STT/TTS itself — those belong to the driver.

mod config;
mod engine;
mod text;
mod types;
mod vad;

pub use config::{ConfigError, TurnConfig};
pub use engine::TurnEngine;
pub use types::{
    Action, BargeInCause, CallerInput, Event, HangupReason, IgnoredInput, State, TranscriptSource,
    TurnId, TurnOutcome, UtteranceKind,
};
pub use vad::{EnergyVad, EnergyVadConfig, VoiceActivityDetector};

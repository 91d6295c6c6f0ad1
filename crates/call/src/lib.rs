//! Per-call orchestration for crmd's voice agent.
//!
//! What it does:
//! - [`responder`]: decides what the agent says. The [`Responder`] trait turns caller input plus a
//!   [`CallContext`] into a stream of reply sentences and structured effects (a message left, a
//!   callback booked, end of call). [`ScriptedResponder`] answers offline from a TOML script
//!   (Hebrew and English keyword intents, DTMF menu); [`LlmResponder`] streams from an
//!   OpenAI-compatible Chat Completions endpoint, sentence by sentence.
//! - [`run_call`]: the driver of one Twilio Media Streams call. One task, one `select!` loop
//!   around the sans-IO `turn::TurnEngine`: socket messages, STT events, responder text, TTS
//!   audio and timers go in one at a time; the engine's actions come out and are executed.
//!   Outbound audio is paced in real time with a small lead (drift-free), `clear` drops it at
//!   once, the greeting plays from the TTS cache the moment `start` arrives, the transcript is
//!   queued to the CRM turn by turn, and per-turn latency is measured (also on Twilio's clock).
//!   Messages left and callbacks booked become CRM tasks. With [`CallDeps::recordings_dir`]
//!   set, the call is recorded as it goes (caller left at Twilio's media timestamps, agent
//!   right at the Twilio-clock instant each frame plays; audio a `clear` dropped is left out)
//!   and the finished file is referenced from the call.
//! - [`TwilioRest`]: hanging up a call through Twilio's REST API (404 = already ended).
//!
//! What it deliberately does not do: speak HTTP routes or WebSocket upgrades (the edge crate
//! adapts its socket to [`WsIn`]/[`WsOut`]), decide turn-taking (the `turn` crate's engine
//! does), talk to Google's APIs directly (the `speech` crate does) or touch SQL (the `crm`
//! crate's queued writer does).

mod driver;
pub mod responder;
mod rest;
mod transport;

pub use driver::{
    CallDeps, CallEvent, CallSettings, CallSummary, EndReason, MEDIA_LATENESS_BUCKETS_US,
    MediaLateness, MediaLatenessCounts, Outgoing, Pacer, TurnLatency, TurnSummary, run_call,
};
pub use responder::{
    AwaitedInput, CallContext, CallerInput, Channel, FixedLines, HistorySpeaker, HistoryTurn,
    LlmConfig, LlmResponder, Reply, ReplyMeta, ReplyStream, Responder, ResponderConfigError,
    ResponderEffect, ResponderError, Script, ScriptedResponder, SentenceSplitter,
};
pub use rest::{DEFAULT_TWILIO_API_BASE, HangupError, HangupOutcome, TwilioRest};
pub use transport::{TransportError, WsIn, WsOut};

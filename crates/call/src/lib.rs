//! Per-call orchestration for crmd's voice agent.
//!
//! What it does:
//! - [`responder`]: decides what the agent says. The [`Responder`] trait turns caller input plus a
//!   [`CallContext`] into a stream of reply sentences and structured effects (a message left, a
//!   callback booked, end of call). [`ScriptedResponder`] answers offline from a TOML script
//!   (Hebrew and English keyword intents, DTMF menu); [`LlmResponder`] streams from an
//!   OpenAI-compatible Chat Completions endpoint, sentence by sentence.
//!
//! What it deliberately does not do: speak HTTP routes or WebSocket upgrades (the edge crate
//! does), decide turn-taking (the `turn` crate's sans-IO engine does), or talk to Google's APIs
//! directly (the `speech` crate does).

pub mod responder;

pub use responder::{
    AwaitedInput, CallContext, CallerInput, Channel, FixedLines, HistorySpeaker, HistoryTurn,
    LlmConfig, LlmResponder, Reply, ReplyMeta, ReplyStream, Responder, ResponderConfigError,
    ResponderEffect, ResponderError, Script, ScriptedResponder, SentenceSplitter,
};

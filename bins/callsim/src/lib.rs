//! callsim: be Twilio on this machine. Places calls against a crmd (or any Media Streams
//! server) the way Twilio does, measures them as a caller hears them, and runs many at once.
//!
//! What it does:
//! - [`call::run_call`]: the signed `POST /webhook/incoming_call`, the TwiML's
//!   `<Connect><Stream>` ([`twiml`]), the WebSocket upgrade offering `audio.twilio.com` (a 101
//!   without it is a hard error), `connected`/`start` with the `<Parameter>`s, real-time 20 ms
//!   mu-law frames from WAV files or generated speech-like tones ([`audio`]) with silence between
//!   utterances, DTMF, barge-ins and hang-ups from a TOML steps file ([`steps`]), mark echoes
//!   after modelled playback, `clear` honoured, `stop` at the end, stream status callbacks.
//! - [`session::CallerSession`]: the sans-IO core of one call (no clock, no socket): pacing on a
//!   fixed 20 ms grid, Twilio's playback queue, and the per-call figures (time to greeting, turn
//!   and barge-in latency, agent audio after `clear`, greetings count, protocol violations).
//! - [`load::run_load`]: N concurrent conversation loops on one runtime, pacing jitter and
//!   agent-frame jitter histograms ([`metrics`]), and CPU/RSS of the server, the speech
//!   stand-in and itself from `/proc` ([`procstat`]).
//!
//! What it deliberately does not do: speak TLS (it plays a TLS-terminating proxy in front of a
//! plain-HTTP server: `X-Forwarded-Proto: https`, `wss://` URLs mapped to `ws://` on the same
//! port), call anything but the loopback interface, or judge the agent's words (audio only).

pub mod audio;
pub mod call;
pub mod load;
pub mod metrics;
pub mod procstat;
pub mod protocol;
pub mod scrape;
pub mod session;
pub mod steps;
pub mod twiml;

//! Twilio voice and messaging protocol types for crmd, as a pure library.
//!
//! What it does:
//! - [`media`]: typed Media Streams WebSocket messages (parse inbound frames, write outbound
//!   `media` / `mark` / `clear`), a per-socket order validator and a stream-health tracker.
//! - [`url`]: the server's public base URL and the `https://` / `wss://` URLs joined onto it.
//! - [`twiml`]: the TwiML answers (`<Connect><Stream>`, `<Say>` + `<Hangup>`), fully escaped.
//!
//! What it deliberately does not do: no I/O of any kind (no sockets, HTTP, files, clocks, tokio).
//! Callers hand it text and bytes and get text and typed values back. Audio stays mu-law bytes;
//! transcoding is the `mulaw` crate's job.

pub mod media;
pub mod twiml;
pub mod url;

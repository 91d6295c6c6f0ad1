//! Twilio voice and messaging protocol types for crmd, as a pure library.
//!
//! What it does:
//! - [`media`]: typed Media Streams WebSocket messages (parse inbound frames, write outbound
//!   `media` / `mark` / `clear`), a per-socket order validator and a stream-health tracker.
//! - [`url`]: the server's public base URL and the `https://` / `wss://` URLs joined onto it.
//! - [`twiml`]: the TwiML answers (`<Connect><Stream>`, `<Say>` + `<Hangup>`), fully escaped.
//! - [`signature`]: `X-Twilio-Signature` validation (form and JSON bodies) and signing.
//! - [`forms`]: typed webhook forms (incoming call, stream status, WhatsApp inbound, message
//!   status with a lifecycle order that never moves backwards).
//! - [`phone`]: E.164 normalisation (`whatsapp:+34 600-000-000` -> `+34600000000`).
//!
//! What it deliberately does not do: no I/O of any kind (no sockets, HTTP, files, clocks, tokio)
//! and no policy (what to do with a bad frame or a failed signature is the caller's choice).
//! Callers hand it text and bytes and get text and typed values back. Audio stays mu-law bytes;
//! transcoding is the `mulaw` crate's job. Secrets passed in (the auth token) never appear in
//! errors or `Debug` output.

pub mod forms;
pub mod media;
pub mod phone;
pub mod signature;
pub mod twiml;
pub mod url;

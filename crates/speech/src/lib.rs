//! Google Cloud Speech-to-Text and Text-to-Speech over gRPC (tonic + prost).
//!
//! What it does:
//! - [`SttClient`] / [`SttStream`]: one streaming recognition session per call. Audio goes in
//!   with [`SttStream::send_audio`] (never waits on the network); partial and final transcripts
//!   come out of [`SttStream::next_event`]. A background task batches Twilio's 20 ms frames into
//!   ~100 ms requests, rotates to a fresh stream before Google's ~305 s limit, reopens after
//!   transient errors with capped back-off, replays audio sent since the last final result (so
//!   none is lost), and falls back once to the default model if the configured one is refused.
//! - [`TtsClient`]: 8 kHz mu-law synthesis (`SynthesizeSpeech`, WAV header stripped; or
//!   `StreamingSynthesize` for voices that support it), long text split at sentence ends, and a
//!   (voice, rate, text) cache so the greeting can play the instant a call starts.
//! - [`GoogleCredentials`]: service-account keys from `GOOGLE_APPLICATION_CREDENTIALS` or
//!   `GCP_CREDENTIALS_JSON`, and self-signed RS256 JWTs (no token-exchange network call).
//! - [`proto`]: the generated wire types, clients and servers; the servers let tests and tools
//!   run in-process stand-ins of Google on loopback.
//!
//! Endpoints: `https://` uses TLS (rustls, webpki roots) and requires credentials; `http://`
//! means plaintext h2c to a local stand-in or proxy, where credentials are optional.
//!
//! What it deliberately does not do: read environment variables itself (the binary passes the
//! values in), decide turn-taking, touch Twilio framing or resample audio (see `mulaw`), or log
//! key material or bearer tokens anywhere (including `Debug` and error messages).

mod channel;
mod credentials;
mod error;
pub mod proto;
mod stt;
mod stt_audio;
mod tts;

pub use credentials::{
    APPLICATION_CREDENTIALS_VAR, CREDENTIALS_JSON_VAR, GoogleCredentials, JwtError,
};
pub use error::{CredentialsError, SpeechError};
pub use stt::{
    DEFAULT_SPEECH_ENDPOINT, GOOGLE_STREAM_LIMIT, SPEECH_ENDPOINT_VAR, SttClient, SttConfig,
    SttEvent, SttStream,
};
pub use tts::{
    DEFAULT_TTS_ENDPOINT, MAX_TTS_INPUT_BYTES, TTS_ENDPOINT_VAR, TtsClient, TtsConfig,
    split_for_synthesis, voice_supports_streaming,
};

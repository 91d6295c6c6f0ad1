//! A local stand-in for Google Cloud Speech-to-Text and Text-to-Speech, over plaintext gRPC
//! (h2c), for development, demos, tests and load runs.
//!
//! What it does:
//! - `Speech/StreamingRecognize` ([`SpeechStandin`]): energy-based segmentation of the caller's
//!   audio ([`segmenter`]): speech onset -> interim results every 300 ms of speech (a growing
//!   prefix of the transcript), end of speech (300 ms of quiet) -> a final result whose text is
//!   the next line of the script, cycled per stream. Honours Google's request order: a config
//!   first, audio after; audio before the config (or a second config) is `INVALID_ARGUMENT`.
//!   Optional voice-activity events and `single_utterance`; streams end with `OUT_OF_RANGE` at
//!   the configured limit (Google: ~305 s).
//! - `TextToSpeech/SynthesizeSpeech` and `StreamingSynthesize` ([`TtsStandin`]): deterministic
//!   vowel-like tones ([`tone`]) whose length follows the text (~12 characters per second), as
//!   MULAW or LINEAR16 inside a WAV header for `SynthesizeSpeech` (as Google does) and headerless
//!   200 ms chunks when streaming.
//! - [`serve`] / [`serve_with_shutdown`] run both services on a listener, so tests in other
//!   crates start the stand-in in-process; [`StandinStats`] counts what it served.
//!
//! What it deliberately does not do: recognise words (transcripts are scripted), check
//! credentials (any or no `authorization` header is accepted), speak TLS, or model Google's
//! latency. It is cheap by construction: no task per stream, no allocation per request beyond
//! the decoded samples, and a small cache for repeated synthesis.

pub mod llm;
pub mod segmenter;
mod stt;
pub mod tone;
mod tts;

use std::future::Future;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;

use speech::proto::speech_v1::speech_server::SpeechServer;
use speech::proto::texttospeech_v1::text_to_speech_server::TextToSpeechServer;
use tokio::net::TcpListener;
use tonic::transport::Server;
use tonic::transport::server::TcpIncoming;

pub use segmenter::{SegmentEvent, SegmenterConfig, SpeechSegmenter};
pub use stt::SpeechStandin;
pub use tone::ToneVoice;
pub use tts::TtsStandin;

/// What callers "say" when no script is given (they match crmd's built-in conversation script:
/// opening hours, a callback, a message; none of them ends the call).
pub const DEFAULT_TRANSCRIPTS: [&str; 6] = [
    "What are your opening hours?",
    "מתי אתם פתוחים ביום שישי?",
    "Can you call me back please?",
    "Tomorrow morning at ten.",
    "I'd like to leave a message.",
    "Please tell Dana the delivery arrived.",
];

/// Google ends a streaming recognition after about this long.
pub const GOOGLE_STREAM_LIMIT: Duration = Duration::from_secs(305);

/// How the stand-in behaves.
#[derive(Debug, Clone, PartialEq)]
pub struct StandinOptions {
    /// Final transcripts, used in order per stream and cycled.
    pub transcripts: Vec<String>,
    /// Speech segmentation of the recognizer.
    pub segmenter: SegmenterConfig,
    /// Speed of the synthetic voice.
    pub voice: ToneVoice,
    /// Audio per recognition stream after which it ends with `OUT_OF_RANGE`.
    pub stream_limit: Duration,
    /// HTTP/2 streams allowed per connection. Google's front ends allow far fewer (about 100)
    /// per connection; the default is high so one crmd connection can carry a load run.
    pub max_concurrent_streams: u32,
}

impl Default for StandinOptions {
    fn default() -> Self {
        Self {
            transcripts: DEFAULT_TRANSCRIPTS
                .iter()
                .map(|s| (*s).to_owned())
                .collect(),
            segmenter: SegmenterConfig::default(),
            voice: ToneVoice::default(),
            stream_limit: GOOGLE_STREAM_LIMIT,
            max_concurrent_streams: 20_000,
        }
    }
}

/// Why the stand-in could not start or stopped.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum StandinError {
    /// The transcript script could not be read.
    #[error("cannot read the transcript script {path}: {source}")]
    ScriptUnreadable {
        /// The file.
        path: PathBuf,
        /// The I/O error.
        source: std::io::Error,
    },
    /// The transcript script has no non-empty line.
    #[error("the transcript script {path} has no non-empty line; put one transcript per line")]
    ScriptEmpty {
        /// The file.
        path: PathBuf,
    },
    /// The gRPC server failed.
    #[error("the speech stand-in's gRPC server failed: {0}")]
    Serve(#[from] tonic::transport::Error),
}

/// Reads a transcript script: one transcript per line; blank lines and lines starting with `#`
/// are skipped.
///
/// # Errors
/// [`StandinError::ScriptUnreadable`], [`StandinError::ScriptEmpty`].
pub fn load_transcripts(path: &Path) -> Result<Vec<String>, StandinError> {
    let text = std::fs::read_to_string(path).map_err(|source| StandinError::ScriptUnreadable {
        path: path.to_owned(),
        source,
    })?;
    let lines: Vec<String> = text
        .lines()
        .map(str::trim)
        .filter(|line| !line.is_empty() && !line.starts_with('#'))
        .map(str::to_owned)
        .collect();
    if lines.is_empty() {
        return Err(StandinError::ScriptEmpty {
            path: path.to_owned(),
        });
    }
    Ok(lines)
}

/// Counters of what the stand-in served (shared by both services).
#[derive(Debug, Default)]
pub struct StandinStats {
    /// Recognition streams opened.
    pub stt_streams_opened: AtomicU64,
    /// Recognition streams currently open.
    pub stt_streams_live: AtomicU64,
    /// Interim results sent.
    pub stt_partials: AtomicU64,
    /// Final results sent.
    pub stt_finals: AtomicU64,
    /// `SynthesizeSpeech` calls.
    pub tts_requests: AtomicU64,
    /// `StreamingSynthesize` streams.
    pub tts_streams: AtomicU64,
}

impl StandinStats {
    /// One line for logs.
    #[must_use]
    pub fn summary(&self) -> String {
        let get = |counter: &AtomicU64| counter.load(Ordering::Relaxed);
        format!(
            "stt streams live {} (opened {}), partials {}, finals {}; tts requests {}, tts streams {}",
            get(&self.stt_streams_live),
            get(&self.stt_streams_opened),
            get(&self.stt_partials),
            get(&self.stt_finals),
            get(&self.tts_requests),
            get(&self.tts_streams),
        )
    }
}

/// Serves both services on `listener` until the process ends.
///
/// # Errors
/// [`StandinError::Serve`] when the server fails.
pub async fn serve(listener: TcpListener, options: StandinOptions) -> Result<(), StandinError> {
    serve_with_shutdown(
        listener,
        options,
        Arc::new(StandinStats::default()),
        std::future::pending(),
    )
    .await
}

/// Serves both services on `listener`, counting into `stats`, until `shutdown` completes.
///
/// # Errors
/// [`StandinError::Serve`] when the server fails.
pub async fn serve_with_shutdown(
    listener: TcpListener,
    options: StandinOptions,
    stats: Arc<StandinStats>,
    shutdown: impl Future<Output = ()>,
) -> Result<(), StandinError> {
    let speech = SpeechStandin::new(&options, Arc::clone(&stats));
    let tts = TtsStandin::new(&options, stats);
    Server::builder()
        .tcp_nodelay(true)
        .max_concurrent_streams(options.max_concurrent_streams)
        .add_service(SpeechServer::new(speech))
        .add_service(TextToSpeechServer::new(tts))
        .serve_with_incoming_shutdown(TcpIncoming::from(listener), shutdown)
        .await?;
    Ok(())
}

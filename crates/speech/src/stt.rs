//! Streaming Speech-to-Text: one [`SttStream`] per call, driven by a background task.
//!
//! The task owns one gRPC `StreamingRecognize` stream at a time. It sends the configuration
//! first, then audio in ~100 ms requests; rotates to a fresh stream before Google's ~305 s limit;
//! reopens after transient errors with capped exponential back-off; and on every new stream
//! replays the audio sent since the last final result, so nothing the caller said is lost.

use std::sync::Arc;
use std::time::Duration;

use bytes::{Bytes, BytesMut};
use tokio::sync::mpsc;
use tokio::time::Instant;
use tokio_stream::StreamExt as _;
use tokio_stream::wrappers::UnboundedReceiverStream;
use tonic::Code;
use tonic::service::interceptor::InterceptedService;
use tonic::transport::Channel;

use crate::channel::{Authorizer, ConnectionPool};
use crate::credentials::GoogleCredentials;
use crate::error::SpeechError;
use crate::proto::speech_v1::recognition_config::AudioEncoding;
use crate::proto::speech_v1::streaming_recognize_request::StreamingRequest;
use crate::proto::speech_v1::{
    RecognitionConfig, SpeechContext, StreamingRecognitionConfig, StreamingRecognizeRequest,
    StreamingRecognizeResponse,
};
use crate::stt_audio::SttAudioLedger;

/// Default Speech-to-Text endpoint.
pub const DEFAULT_SPEECH_ENDPOINT: &str = "https://speech.googleapis.com";
/// Environment variable that overrides the Speech-to-Text endpoint.
pub const SPEECH_ENDPOINT_VAR: &str = "GOOGLE_SPEECH_ENDPOINT";
/// Google ends a streaming recognition at about this age with `OUT_OF_RANGE`.
pub const GOOGLE_STREAM_LIMIT: Duration = Duration::from_secs(305);
/// Largest audio request the batcher may produce (Google's limit is 25 KB per request).
const MAX_REQUEST_BYTES: u32 = 16 * 1024;
const SERVICE: &str = "Speech-to-Text";

/// Speech-to-Text settings.
#[derive(Debug, Clone, PartialEq)]
pub struct SttConfig {
    /// `https://HOST` (TLS, credentials required) or `http://HOST:PORT` (plaintext h2c).
    pub endpoint: String,
    /// BCP-47 language, `he-IL` by default.
    pub language_code: String,
    /// Other languages the caller may speak (Google allows up to three).
    pub alternative_language_codes: Vec<String>,
    /// Recognition model (e.g. `phone_call`); `None` uses Google's default. If Google refuses
    /// it with `INVALID_ARGUMENT`, the session falls back to the default model once.
    pub model: Option<String>,
    /// Ask for partial (interim) transcripts.
    pub interim_results: bool,
    /// Ask Google to punctuate.
    pub automatic_punctuation: bool,
    /// Phrases that bias recognition (names, products).
    pub phrase_hints: Vec<String>,
    /// Audio per request in milliseconds (Twilio's 20 ms frames are batched), 100 by default.
    pub batch_ms: u32,
    /// Age at which a stream is replaced by a fresh one; must stay below Google's ~305 s limit.
    pub rotate_after: Duration,
    /// At most this much unconfirmed audio is kept for replay on a new stream: 10 s = 80 KB of
    /// mu-law, longer than any utterance a caller finishes without a final. Quiet audio before
    /// the caller speaks (a listening caller gets no final) is trimmed to a 1 s lead-in, and
    /// speech followed by 3 s of quiet without a final is given up, so a call holds 8-24 KB
    /// while it listens and only grows while the caller talks.
    pub replay_limit: Duration,
    /// First reconnect delay after a transient error; doubles per consecutive failure.
    pub reconnect_backoff_initial: Duration,
    /// Cap of the reconnect delay.
    pub reconnect_backoff_max: Duration,
    /// Consecutive failed attempts after which the session reports [`SttEvent::Failed`].
    pub max_reconnect_attempts: u32,
    /// Recognition streams sharing one HTTP/2 connection before another connection is opened.
    /// Google's front ends cap the concurrent streams of a connection (100 is the usual
    /// figure); beyond the cap a new stream would wait for another call's stream to end, so
    /// the client opens connections as calls need them.
    pub streams_per_connection: usize,
}

impl Default for SttConfig {
    fn default() -> Self {
        Self {
            endpoint: DEFAULT_SPEECH_ENDPOINT.to_owned(),
            language_code: "he-IL".to_owned(),
            alternative_language_codes: Vec::new(),
            model: None,
            interim_results: true,
            automatic_punctuation: true,
            phrase_hints: Vec::new(),
            batch_ms: 100,
            rotate_after: Duration::from_secs(290),
            replay_limit: Duration::from_secs(10),
            reconnect_backoff_initial: Duration::from_millis(100),
            reconnect_backoff_max: Duration::from_secs(2),
            max_reconnect_attempts: 6,
            streams_per_connection: 100,
        }
    }
}

impl SttConfig {
    fn validate(&self) -> Result<(), SpeechError> {
        let invalid = |problem: String| Err(SpeechError::InvalidConfig { problem });
        if self.streams_per_connection == 0 {
            return invalid("STT streams_per_connection must be at least 1".to_owned());
        }
        if self.batch_ms == 0 || self.batch_ms * 8 > MAX_REQUEST_BYTES {
            return invalid(format!(
                "STT batch_ms = {} must be between 1 and {} (requests must stay under 25 KB)",
                self.batch_ms,
                MAX_REQUEST_BYTES / 8
            ));
        }
        if self.rotate_after.is_zero() || self.rotate_after >= GOOGLE_STREAM_LIMIT {
            return invalid(format!(
                "STT rotate_after = {:?} must be above zero and below Google's {:?} stream limit",
                self.rotate_after, GOOGLE_STREAM_LIMIT
            ));
        }
        if self.language_code.trim().is_empty() {
            return invalid("STT language_code is empty: set e.g. he-IL".to_owned());
        }
        Ok(())
    }
}

/// What a recognition session reports.
#[derive(Debug, Clone, PartialEq)]
pub enum SttEvent {
    /// An interim hypothesis; `stability` (0..1) estimates how likely it is to stay.
    Partial {
        /// The hypothesis.
        text: String,
        /// Google's stability estimate.
        stability: f32,
    },
    /// A final transcript. `result_end` is measured from the start of the session's audio
    /// (across stream rotations).
    Final {
        /// The transcript.
        text: String,
        /// Google's confidence (0 when not provided).
        confidence: f32,
        /// End of the recognized audio on the session timeline.
        result_end: Duration,
    },
    /// A fresh gRPC stream replaced the previous one (rotation or recovery); audio after the
    /// last final result was replayed.
    StreamRestarted {
        /// Why the stream was replaced.
        reason: String,
    },
    /// Google refused the configured model; the session continues with the default model.
    ModelFallback {
        /// The refused model name.
        refused_model: String,
    },
    /// The session gave up; no further events follow.
    Failed {
        /// Why.
        error: SpeechError,
    },
}

type GrpcSpeechService = InterceptedService<Channel, Authorizer>;

/// Bytes tonic reserves per stream for encoding requests and for decoding responses. Its
/// default, 8 KiB each, was 16 KiB per call for ~800-byte requests and results of a few
/// hundred bytes; buffers still grow for a larger message.
const STT_CODEC_BUFFER_BYTES: usize = 1024;

/// Prost encoding of `StreamingRecognize` with small per-stream buffers.
#[derive(Debug, Clone, Copy, Default)]
struct SttCodec;

impl tonic::codec::Codec for SttCodec {
    type Encode = StreamingRecognizeRequest;
    type Decode = StreamingRecognizeResponse;
    type Encoder = tonic_prost::ProstEncoder<StreamingRecognizeRequest>;
    type Decoder = tonic_prost::ProstDecoder<StreamingRecognizeResponse>;

    fn encoder(&mut self) -> Self::Encoder {
        tonic_prost::ProstEncoder::new(stt_buffer_settings())
    }

    fn decoder(&mut self) -> Self::Decoder {
        tonic_prost::ProstDecoder::new(stt_buffer_settings())
    }
}

fn stt_buffer_settings() -> tonic::codec::BufferSettings {
    // Yield threshold as tonic's default (32 KiB).
    tonic::codec::BufferSettings::new(STT_CODEC_BUFFER_BYTES, 32 * 1024)
}

/// `Speech/StreamingRecognize`, as the generated client calls it but with [`SttCodec`].
async fn streaming_recognize<S>(
    service: GrpcSpeechService,
    requests: S,
) -> Result<tonic::Response<tonic::Streaming<StreamingRecognizeResponse>>, tonic::Status>
where
    S: tokio_stream::Stream<Item = StreamingRecognizeRequest> + Send + 'static,
{
    let mut grpc = tonic::client::Grpc::new(service);
    grpc.ready()
        .await
        .map_err(|e| tonic::Status::unavailable(format!("speech channel not ready: {e}")))?;
    let path = tonic::codegen::http::uri::PathAndQuery::from_static(
        "/google.cloud.speech.v1.Speech/StreamingRecognize",
    );
    let mut request = tonic::IntoStreamingRequest::into_streaming_request(requests);
    request.extensions_mut().insert(tonic::GrpcMethod::new(
        "google.cloud.speech.v1.Speech",
        "StreamingRecognize",
    ));
    grpc.streaming(request, path, SttCodec).await
}

/// A Speech-to-Text client. Cheap to clone; connects lazily on the first stream.
#[derive(Debug, Clone)]
pub struct SttClient {
    shared: Arc<SttShared>,
}

#[derive(Debug)]
struct SttShared {
    config: SttConfig,
    /// HTTP/2 connections, each carrying up to `streams_per_connection` recognition streams;
    /// grows as calls need it.
    connections: ConnectionPool<GrpcSpeechService>,
    runtime: tokio::runtime::Handle,
}

impl SttClient {
    /// Builds a client. Must be called inside a Tokio runtime. An `https://` endpoint requires
    /// credentials; an `http://` endpoint (local stand-in) does not.
    pub fn new(
        config: SttConfig,
        credentials: Option<Arc<GoogleCredentials>>,
    ) -> Result<Self, SpeechError> {
        config.validate()?;
        let connections = ConnectionPool::new(
            "STT",
            SPEECH_ENDPOINT_VAR,
            &config.endpoint,
            credentials,
            config.streams_per_connection,
            InterceptedService::new,
        )?;
        let runtime = tokio::runtime::Handle::try_current().map_err(|_| SpeechError::NoRuntime)?;
        Ok(Self {
            shared: Arc::new(SttShared {
                config,
                connections,
                runtime,
            }),
        })
    }

    /// The configuration in use.
    pub fn config(&self) -> &SttConfig {
        &self.shared.config
    }

    /// HTTP/2 connections this client has opened so far (one per `streams_per_connection`
    /// concurrent streams at the busiest moment).
    pub fn connections(&self) -> usize {
        self.shared.connections.connection_count()
    }

    /// Starts a recognition session for `call_id` (used in log lines). The gRPC stream opens in
    /// the background immediately.
    pub fn start(&self, call_id: &str) -> SttStream {
        let (audio_tx, audio_rx) = mpsc::unbounded_channel();
        let (event_tx, events) = mpsc::unbounded_channel();
        let session = SttSession {
            shared: Arc::clone(&self.shared),
            call_id: call_id.to_owned(),
            audio_rx,
            event_tx,
        };
        let task = self.shared.runtime.spawn(session.run());
        let batch_bytes = self.shared.config.batch_ms as usize * 8;
        SttStream {
            audio_tx,
            pending: BytesMut::new(),
            pending_since: None,
            batch_bytes,
            batch_age: Duration::from_millis(u64::from(self.shared.config.batch_ms)),
            events,
            task: task.abort_handle(),
        }
    }
}

/// One call's recognition session. Dropping it (or [`SttStream::close`]) ends the session.
///
/// Audio is handed to the session task a request's worth (`batch_ms`) at a time: a call's
/// 20 ms frames wake that task ten times a second instead of fifty, and cost one allocation
/// per batch instead of one per frame.
#[derive(Debug)]
pub struct SttStream {
    audio_tx: mpsc::UnboundedSender<Bytes>,
    /// Audio not yet handed to the session task (less than one batch).
    pending: BytesMut,
    /// When the first byte of `pending` arrived.
    pending_since: Option<std::time::Instant>,
    batch_bytes: usize,
    batch_age: Duration,
    events: mpsc::UnboundedReceiver<SttEvent>,
    task: tokio::task::AbortHandle,
}

impl SttStream {
    /// Queues caller audio (8 kHz mu-law, any length). Never waits for the network: rotation,
    /// replay and reconnects run in the session task. Audio is handed over once a batch
    /// (`batch_ms`) has gathered, or with the next call once the oldest queued byte is
    /// `batch_ms` old; a source that pauses calls [`flush_audio`](Self::flush_audio). Twilio
    /// streams frames continuously (silence included), so a call never needs to. Audio sent
    /// after the session failed is discarded.
    pub fn send_audio(&mut self, mulaw: &[u8]) {
        if mulaw.is_empty() {
            return;
        }
        let now = std::time::Instant::now();
        let since = *self.pending_since.get_or_insert(now);
        if self.pending.capacity() == 0 {
            self.pending.reserve(self.batch_bytes.max(mulaw.len()));
        }
        self.pending.extend_from_slice(mulaw);
        if self.pending.len() >= self.batch_bytes || now.duration_since(since) >= self.batch_age {
            self.flush_audio();
        }
    }

    /// Hands every queued byte of audio to the session task now.
    pub fn flush_audio(&mut self) {
        self.pending_since = None;
        if self.pending.is_empty() {
            return;
        }
        // An error means the session already ended (reported as `Failed`); drop the audio.
        let _ = self.audio_tx.send(self.pending.split().freeze());
    }

    /// The next event, or `None` once the session has ended.
    pub async fn next_event(&mut self) -> Option<SttEvent> {
        self.events.recv().await
    }

    /// Ends the session and its gRPC stream.
    pub fn close(self) {}
}

impl Drop for SttStream {
    fn drop(&mut self) {
        self.task.abort();
    }
}

/// How one gRPC stream ended.
enum StreamEnd {
    /// The caller closed the session or stopped reading events.
    SessionOver,
    /// The stream reached `rotate_after`.
    Rotate,
    /// Google (or the transport) reported an error.
    Error(tonic::Status),
    /// The server closed the stream without an error.
    ServerClosed,
}

struct SttSession {
    shared: Arc<SttShared>,
    call_id: String,
    audio_rx: mpsc::UnboundedReceiver<Bytes>,
    event_tx: mpsc::UnboundedSender<SttEvent>,
}

impl SttSession {
    async fn run(mut self) {
        let config = self.shared.config.clone();
        let mut ledger =
            SttAudioLedger::new(config.batch_ms, config.replay_limit, config.rotate_after);
        let mut model = config.model.clone().filter(|model| !model.is_empty());
        let mut consecutive_failures: u32 = 0;
        let mut failing_since: Option<Instant> = None;
        loop {
            let mut got_response = false;
            let end = self
                .run_stream(&mut ledger, model.as_deref(), &mut got_response)
                .await;
            if got_response {
                consecutive_failures = 0;
                failing_since = None;
            }
            let status = match end {
                StreamEnd::SessionOver => return,
                StreamEnd::Rotate => {
                    tracing::info!(call_id = %self.call_id, "STT stream rotated before Google's stream limit");
                    if !self.emit(SttEvent::StreamRestarted {
                        reason: format!("rotated after {:?}", config.rotate_after),
                    }) {
                        return;
                    }
                    continue;
                }
                StreamEnd::ServerClosed => {
                    tonic::Status::unavailable("the server closed the stream")
                }
                StreamEnd::Error(status) => status,
            };
            if status.code() == Code::InvalidArgument
                && let Some(refused_model) = model.take()
            {
                tracing::warn!(
                    call_id = %self.call_id, model = %refused_model, message = %status.message(),
                    "STT model refused; falling back to the default model"
                );
                if !self.emit(SttEvent::ModelFallback { refused_model }) {
                    return;
                }
                continue;
            }
            if !matches!(
                status.code(),
                Code::Unavailable | Code::OutOfRange | Code::DeadlineExceeded
            ) {
                let error = SpeechError::from_status(SERVICE, &status);
                tracing::error!(call_id = %self.call_id, %error, "STT failed");
                let _ = self.emit(SttEvent::Failed { error });
                return;
            }
            consecutive_failures += 1;
            let since = *failing_since.get_or_insert_with(Instant::now);
            if consecutive_failures > config.max_reconnect_attempts {
                let error = SpeechError::GaveUp {
                    attempts: consecutive_failures - 1,
                    elapsed: since.elapsed(),
                    last: format!("{:?}: {}", status.code(), status.message()),
                };
                tracing::error!(call_id = %self.call_id, %error, "STT failed");
                let _ = self.emit(SttEvent::Failed { error });
                return;
            }
            let delay = backoff_delay(&config, consecutive_failures);
            tracing::warn!(
                call_id = %self.call_id, code = ?status.code(), message = %status.message(),
                attempt = consecutive_failures, delay_ms = delay.as_millis() as u64,
                "STT stream interrupted; reopening"
            );
            if !self.emit(SttEvent::StreamRestarted {
                reason: format!("{:?}: {}", status.code(), status.message()),
            }) {
                return;
            }
            if !self.wait_collecting_audio(&mut ledger, delay).await {
                return;
            }
        }
    }

    /// Sleeps for `delay` while still accepting caller audio. False when the session ended.
    async fn wait_collecting_audio(
        &mut self,
        ledger: &mut SttAudioLedger,
        delay: Duration,
    ) -> bool {
        let wake_at = Instant::now() + delay;
        loop {
            tokio::select! {
                () = tokio::time::sleep_until(wake_at) => return true,
                audio = self.audio_rx.recv() => match audio {
                    Some(audio) => ledger.handle_audio_bytes(Instant::now().into_std(), audio),
                    None => return false,
                },
            }
        }
    }

    /// Opens one gRPC stream and pumps audio and results until it ends.
    async fn run_stream(
        &mut self,
        ledger: &mut SttAudioLedger,
        model: Option<&str>,
        got_response: &mut bool,
    ) -> StreamEnd {
        // The channel carries the audio (`Bytes`, shared with the replay buffer) and the stream
        // wraps it into requests as tonic pulls them: a channel of whole request structs
        // cost ~10 KB of queue blocks per call.
        let (request_tx, request_rx) = mpsc::unbounded_channel::<Bytes>();
        ledger.begin_stream(Instant::now().into_std());
        // The receiver is alive until the call below consumes it, so these sends cannot fail.
        let config_request = self.config_request(model);
        drain_requests(ledger, &request_tx);
        let requests = tokio_stream::once(config_request).chain(
            UnboundedReceiverStream::new(request_rx).map(|audio| StreamingRecognizeRequest {
                streaming_request: Some(StreamingRequest::AudioContent(audio)),
            }),
        );
        // Held until this stream ends (any return below drops it).
        let (service, _lease) = self.shared.connections.checkout(&self.call_id);
        let call = streaming_recognize(service, requests);
        let mut responses = tokio::select! {
            response = call => match response {
                Ok(response) => response.into_inner(),
                Err(status) => return StreamEnd::Error(status),
            },
            // The caller going away must not wait for a slow connect.
            () = self.event_tx.closed() => return StreamEnd::SessionOver,
        };
        loop {
            let timeout = ledger.poll_timeout().map(Instant::from_std);
            tokio::select! {
                audio = self.audio_rx.recv() => match audio {
                    Some(audio) => ledger.handle_audio_bytes(Instant::now().into_std(), audio),
                    None => {
                        ledger.flush();
                        drain_requests(ledger, &request_tx);
                        return StreamEnd::SessionOver;
                    }
                },
                message = responses.message() => match message {
                    Ok(Some(response)) => {
                        *got_response = true;
                        if let Some(end) = self.handle_response(ledger, response) {
                            return end;
                        }
                    }
                    Ok(None) => return StreamEnd::ServerClosed,
                    Err(status) => return StreamEnd::Error(status),
                },
                () = sleep_until_or_forever(timeout) => {
                    let now = Instant::now().into_std();
                    if ledger.rotation_due(now) {
                        return StreamEnd::Rotate;
                    }
                    ledger.handle_timeout(now);
                }
            }
            drain_requests(ledger, &request_tx);
        }
    }

    /// Turns results into events. Returns how the stream ends if the response ends it.
    fn handle_response(
        &mut self,
        ledger: &mut SttAudioLedger,
        response: StreamingRecognizeResponse,
    ) -> Option<StreamEnd> {
        if let Some(error) = response.error.filter(|error| error.code != 0) {
            return Some(StreamEnd::Error(tonic::Status::new(
                Code::from_i32(error.code),
                error.message,
            )));
        }
        for result in response.results {
            let Some(best) = result.alternatives.into_iter().next() else {
                continue;
            };
            let event = if result.is_final {
                let stream_end = result
                    .result_end_time
                    .map(duration_from_proto)
                    .unwrap_or_default();
                let result_end = ledger.handle_final(stream_end);
                // Debug only: the call driver logs STT_FINAL at info with its call span.
                tracing::debug!(
                    call_id = %self.call_id, text = %best.transcript, confidence = best.confidence,
                    result_end_ms = result_end.as_millis() as u64, "STT_FINAL"
                );
                SttEvent::Final {
                    text: best.transcript,
                    confidence: best.confidence,
                    result_end,
                }
            } else {
                // Debug only: the call driver logs STT_PARTIAL at info with its call span.
                tracing::debug!(
                    call_id = %self.call_id, text = %best.transcript, stability = result.stability,
                    "STT_PARTIAL"
                );
                SttEvent::Partial {
                    text: best.transcript,
                    stability: result.stability,
                }
            };
            if !self.emit(event) {
                return Some(StreamEnd::SessionOver);
            }
        }
        None
    }

    fn config_request(&self, model: Option<&str>) -> StreamingRecognizeRequest {
        let config = &self.shared.config;
        let speech_contexts = if config.phrase_hints.is_empty() {
            Vec::new()
        } else {
            vec![SpeechContext {
                phrases: config.phrase_hints.clone(),
                boost: 0.0,
            }]
        };
        let recognition = RecognitionConfig {
            encoding: AudioEncoding::Mulaw as i32,
            sample_rate_hertz: 8000,
            audio_channel_count: 1,
            language_code: config.language_code.clone(),
            alternative_language_codes: config.alternative_language_codes.clone(),
            max_alternatives: 1,
            speech_contexts,
            enable_automatic_punctuation: config.automatic_punctuation,
            model: model.unwrap_or_default().to_owned(),
            ..RecognitionConfig::default()
        };
        StreamingRecognizeRequest {
            streaming_request: Some(StreamingRequest::StreamingConfig(
                StreamingRecognitionConfig {
                    config: Some(recognition),
                    single_utterance: false,
                    interim_results: config.interim_results,
                    ..StreamingRecognitionConfig::default()
                },
            )),
        }
    }

    /// Delivers an event; false when the caller stopped listening.
    fn emit(&self, event: SttEvent) -> bool {
        self.event_tx.send(event).is_ok()
    }
}

fn drain_requests(ledger: &mut SttAudioLedger, request_tx: &mpsc::UnboundedSender<Bytes>) {
    while let Some(audio) = ledger.poll_request() {
        // A closed request stream surfaces as an error on the response side; nothing to do here.
        let _ = request_tx.send(audio);
    }
}

async fn sleep_until_or_forever(deadline: Option<Instant>) {
    match deadline {
        Some(deadline) => tokio::time::sleep_until(deadline).await,
        None => std::future::pending().await,
    }
}

fn backoff_delay(config: &SttConfig, attempt: u32) -> Duration {
    let factor = 2u32.saturating_pow(attempt.saturating_sub(1).min(16));
    config
        .reconnect_backoff_initial
        .saturating_mul(factor)
        .min(config.reconnect_backoff_max)
}

fn duration_from_proto(duration: prost_types::Duration) -> Duration {
    let seconds = u64::try_from(duration.seconds).unwrap_or(0);
    let nanos = u32::try_from(duration.nanos).unwrap_or(0);
    Duration::new(seconds, nanos)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn backoff_doubles_and_is_capped() {
        let config = SttConfig::default();
        let delays: Vec<u128> = (1..=7)
            .map(|attempt| backoff_delay(&config, attempt).as_millis())
            .collect();
        assert_eq!(delays, vec![100, 200, 400, 800, 1600, 2000, 2000]);
    }

    #[test]
    fn config_validation_names_the_problem() {
        let config = SttConfig {
            rotate_after: Duration::from_secs(310),
            ..SttConfig::default()
        };
        let error = config.validate().unwrap_err().to_string();
        assert!(error.contains("rotate_after"), "{error}");
        let config = SttConfig {
            batch_ms: 5000,
            ..SttConfig::default()
        };
        assert!(config.validate().unwrap_err().to_string().contains("25 KB"));
        assert!(SttConfig::default().validate().is_ok());
    }
}

//! In-process stand-ins of Google's Speech-to-Text and Text-to-Speech services, served by tonic
//! on 127.0.0.1 from the crate's generated server traits. They record what the client sent and
//! answer according to a small script.
#![allow(dead_code, clippy::unwrap_used)]

use std::net::SocketAddr;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use speech::proto::speech_v1::speech_server::{Speech, SpeechServer};
use speech::proto::speech_v1::streaming_recognize_request::StreamingRequest;
use speech::proto::speech_v1::{
    SpeechRecognitionAlternative, StreamingRecognitionConfig, StreamingRecognitionResult,
    StreamingRecognizeRequest, StreamingRecognizeResponse,
};
use speech::proto::texttospeech_v1::text_to_speech_server::{TextToSpeech, TextToSpeechServer};
use speech::proto::texttospeech_v1::{
    StreamingSynthesizeRequest, StreamingSynthesizeResponse, SynthesizeSpeechRequest,
    SynthesizeSpeechResponse,
};
use speech::{SttEvent, SttStream};
use tokio::sync::mpsc;
use tokio_stream::wrappers::ReceiverStream;
use tonic::transport::Server;
use tonic::transport::server::TcpIncoming;
use tonic::{Code, Request, Response, Status, Streaming};

/// Upper bound for any single wait in the tests; reaching it means the test failed.
pub const BOUND: Duration = Duration::from_secs(10);

/// Serves `router` on an ephemeral loopback port and returns `http://127.0.0.1:PORT`.
async fn serve(router: tonic::transport::server::Router) -> String {
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let address: SocketAddr = listener.local_addr().unwrap();
    tokio::spawn(router.serve_with_incoming(TcpIncoming::from(listener)));
    format!("http://{address}")
}

/// Deterministic pseudo-random audio (no two 32-byte windows repeat in practice), so each
/// stream's audio can be located in what the test sent.
pub fn test_audio(len: usize) -> Vec<u8> {
    let mut state: u32 = 0x1234_5678;
    (0..len)
        .map(|_| {
            state ^= state << 13;
            state ^= state >> 17;
            state ^= state << 5;
            (state >> 24) as u8
        })
        .collect()
}

/// Next event within [`BOUND`].
pub async fn next_event(stream: &mut SttStream) -> SttEvent {
    tokio::time::timeout(BOUND, stream.next_event())
        .await
        .expect("no STT event within the bound")
        .expect("the STT session ended")
}

// ---------------------------------------------------------------------------------------------
// Speech-to-Text stand-in
// ---------------------------------------------------------------------------------------------

/// Everything one `StreamingRecognize` stream received.
#[derive(Debug, Default, Clone)]
pub struct RecordedStream {
    /// Authorization metadata, if any.
    pub authorization: Option<String>,
    /// The config of the first request (None if the first request was audio).
    pub config: Option<StreamingRecognitionConfig>,
    /// Number of requests that carried a config (must be exactly 1).
    pub config_requests: usize,
    /// Whether any config request came after audio.
    pub config_after_audio: bool,
    /// Audio request sizes in order.
    pub audio_request_sizes: Vec<usize>,
    /// All audio in order.
    pub audio: Vec<u8>,
}

/// How the stand-in answers.
#[derive(Debug, Clone, Default)]
pub struct SttScript {
    /// Emit a final result each time this many unfinalized bytes have arrived on a stream;
    /// `result_end_time` is the stream offset of the last finalized byte.
    pub final_every_bytes: Option<usize>,
    /// Emit a partial (stability 0.6) before each final.
    pub partial_before_final: bool,
    /// Fail stream number `.0` (0-based) with `.2` once it has received `.1` audio bytes
    /// (after sending any final due at that point).
    pub fail_stream: Option<(usize, usize, Code)>,
    /// Refuse configs naming this model with INVALID_ARGUMENT.
    pub refuse_model: Option<String>,
    /// Fail every stream immediately with this code.
    pub fail_every_stream: Option<Code>,
}

#[derive(Clone)]
pub struct FakeSpeech {
    script: SttScript,
    pub streams: Arc<Mutex<Vec<RecordedStream>>>,
    ended_tx: mpsc::UnboundedSender<usize>,
    ended_rx: Arc<tokio::sync::Mutex<mpsc::UnboundedReceiver<usize>>>,
}

impl FakeSpeech {
    /// Starts the stand-in; returns it (for its recordings) and its endpoint.
    pub async fn start(script: SttScript) -> (Self, String) {
        Self::start_with_stream_cap(script, None).await
    }

    /// As [`start`](Self::start), advertising at most `cap` concurrent streams per HTTP/2
    /// connection (as Google's front ends do).
    pub async fn start_with_stream_cap(script: SttScript, cap: Option<u32>) -> (Self, String) {
        let (ended_tx, ended_rx) = mpsc::unbounded_channel();
        let fake = Self {
            script,
            streams: Arc::default(),
            ended_tx,
            ended_rx: Arc::new(tokio::sync::Mutex::new(ended_rx)),
        };
        let endpoint = serve(
            Server::builder()
                .max_concurrent_streams(cap)
                .add_service(SpeechServer::new(fake.clone())),
        )
        .await;
        (fake, endpoint)
    }

    /// Index of the next stream whose request side ended (client half-close or reset).
    pub async fn next_ended_stream(&self) -> usize {
        let mut ended = self.ended_rx.lock().await;
        tokio::time::timeout(BOUND, ended.recv())
            .await
            .expect("no stream ended within the bound")
            .unwrap()
    }

    pub fn recorded(&self) -> Vec<RecordedStream> {
        self.streams.lock().unwrap().clone()
    }
}

fn final_response(transcript: String, stream_offset_bytes: usize) -> StreamingRecognizeResponse {
    let micros = (stream_offset_bytes as u64) * 1000 / 8;
    StreamingRecognizeResponse {
        results: vec![StreamingRecognitionResult {
            alternatives: vec![SpeechRecognitionAlternative {
                transcript,
                confidence: 0.9,
                words: Vec::new(),
            }],
            is_final: true,
            stability: 0.0,
            result_end_time: Some(prost_types::Duration {
                seconds: (micros / 1_000_000) as i64,
                nanos: ((micros % 1_000_000) * 1000) as i32,
            }),
            ..Default::default()
        }],
        ..Default::default()
    }
}

fn partial_response(transcript: String) -> StreamingRecognizeResponse {
    StreamingRecognizeResponse {
        results: vec![StreamingRecognitionResult {
            alternatives: vec![SpeechRecognitionAlternative {
                transcript,
                confidence: 0.0,
                words: Vec::new(),
            }],
            is_final: false,
            stability: 0.6,
            ..Default::default()
        }],
        ..Default::default()
    }
}

#[tonic::async_trait]
impl Speech for FakeSpeech {
    type StreamingRecognizeStream = ReceiverStream<Result<StreamingRecognizeResponse, Status>>;

    async fn streaming_recognize(
        &self,
        request: Request<Streaming<StreamingRecognizeRequest>>,
    ) -> Result<Response<Self::StreamingRecognizeStream>, Status> {
        let authorization = request
            .metadata()
            .get("authorization")
            .map(|value| value.to_str().unwrap().to_owned());
        let mut requests = request.into_inner();
        let index = {
            let mut streams = self.streams.lock().unwrap();
            streams.push(RecordedStream {
                authorization,
                ..Default::default()
            });
            streams.len() - 1
        };
        let (tx, rx) = mpsc::channel(64);
        let script = self.script.clone();
        let streams = Arc::clone(&self.streams);
        let ended_tx = self.ended_tx.clone();
        tokio::spawn(async move {
            // Reported when this task ends, however it ends.
            struct ReportEnd(mpsc::UnboundedSender<usize>, usize);
            impl Drop for ReportEnd {
                fn drop(&mut self) {
                    let _ = self.0.send(self.1);
                }
            }
            let _report_end = ReportEnd(ended_tx, index);
            let mut finalized = 0usize;
            let mut received = 0usize;
            let mut finals = 0usize;
            while let Ok(Some(message)) = requests.message().await {
                match message.streaming_request {
                    Some(StreamingRequest::StreamingConfig(config)) => {
                        let refused = {
                            let mut streams = streams.lock().unwrap();
                            let record = &mut streams[index];
                            record.config_requests += 1;
                            record.config_after_audio |= !record.audio.is_empty();
                            let model = config
                                .config
                                .as_ref()
                                .map(|c| c.model.clone())
                                .unwrap_or_default();
                            record.config.get_or_insert(config);
                            script.refuse_model.as_deref() == Some(model.as_str())
                        };
                        if refused {
                            let _ = tx
                                .send(Err(Status::invalid_argument(
                                    "The requested model is not supported",
                                )))
                                .await;
                            return;
                        }
                        if let Some(code) = script.fail_every_stream {
                            let _ = tx.send(Err(Status::new(code, "stand-in failure"))).await;
                            return;
                        }
                    }
                    Some(StreamingRequest::AudioContent(audio)) => {
                        received += audio.len();
                        {
                            let mut streams = streams.lock().unwrap();
                            streams[index].audio_request_sizes.push(audio.len());
                            streams[index].audio.extend_from_slice(&audio);
                        }
                        if let Some(every) = script.final_every_bytes {
                            while received - finalized >= every {
                                finalized += every;
                                finals += 1;
                                if script.partial_before_final {
                                    let _ = tx
                                        .send(Ok(partial_response(format!(
                                            "partial {index}.{finals}"
                                        ))))
                                        .await;
                                }
                                let _ = tx
                                    .send(Ok(final_response(
                                        format!("final {index}.{finals}"),
                                        finalized,
                                    )))
                                    .await;
                            }
                        }
                        if let Some((stream, after, code)) = script.fail_stream
                            && stream == index
                            && received >= after
                        {
                            let _ = tx
                                .send(Err(Status::new(code, "stand-in stream failure")))
                                .await;
                            return;
                        }
                    }
                    None => {}
                }
            }
        });
        Ok(Response::new(ReceiverStream::new(rx)))
    }
}

// ---------------------------------------------------------------------------------------------
// Text-to-Speech stand-in
// ---------------------------------------------------------------------------------------------

/// Audio the stand-in "speaks" for `text`: one mu-law byte per text byte, repeated 10 times.
pub fn spoken(text: &str) -> Vec<u8> {
    text.bytes()
        .flat_map(|byte| std::iter::repeat_n(byte, 10))
        .collect()
}

#[derive(Debug, Default)]
pub struct TtsRecord {
    pub unary_requests: Vec<SynthesizeSpeechRequest>,
    pub streaming_requests: Vec<Vec<StreamingSynthesizeRequest>>,
    pub authorizations: Vec<Option<String>>,
}

/// How the TTS stand-in answers.
#[derive(Debug, Clone, Default)]
pub struct TtsScript {
    /// Refuse `StreamingSynthesize` with INVALID_ARGUMENT (a voice without streaming support).
    pub refuse_streaming: bool,
    /// Answer `SynthesizeSpeech` with this status code.
    pub fail_unary: Option<Code>,
    /// Answer `SynthesizeSpeech` with these bytes instead of a WAV.
    pub raw_unary_audio: Option<Vec<u8>>,
    /// Streaming chunk size in bytes.
    pub streaming_chunk: usize,
    /// Send one streamed chunk, then nothing more while keeping the stream open.
    pub stall_streaming: bool,
    /// Answer `SynthesizeSpeech` only after this long (a slow synthesis).
    pub unary_delay: Option<std::time::Duration>,
}

#[derive(Clone)]
pub struct FakeTts {
    script: TtsScript,
    pub record: Arc<Mutex<TtsRecord>>,
}

impl FakeTts {
    pub async fn start(script: TtsScript) -> (Self, String) {
        Self::start_with_stream_cap(script, None).await
    }

    /// Like `start`, with at most `cap` concurrent streams per HTTP/2 connection.
    pub async fn start_with_stream_cap(script: TtsScript, cap: Option<u32>) -> (Self, String) {
        let fake = Self {
            script,
            record: Arc::default(),
        };
        let endpoint = serve(
            Server::builder()
                .max_concurrent_streams(cap)
                .add_service(TextToSpeechServer::new(fake.clone())),
        )
        .await;
        (fake, endpoint)
    }
}

#[tonic::async_trait]
impl TextToSpeech for FakeTts {
    async fn synthesize_speech(
        &self,
        request: Request<SynthesizeSpeechRequest>,
    ) -> Result<Response<SynthesizeSpeechResponse>, Status> {
        let authorization = request
            .metadata()
            .get("authorization")
            .map(|value| value.to_str().unwrap().to_owned());
        let request = request.into_inner();
        let text = match request
            .input
            .as_ref()
            .and_then(|input| input.input_source.clone())
        {
            Some(speech::proto::texttospeech_v1::synthesis_input::InputSource::Text(text)) => text,
            _ => return Err(Status::invalid_argument("text input required")),
        };
        {
            let mut record = self.record.lock().unwrap();
            record.unary_requests.push(request);
            record.authorizations.push(authorization);
        }
        if let Some(delay) = self.script.unary_delay {
            tokio::time::sleep(delay).await;
        }
        if let Some(code) = self.script.fail_unary {
            return Err(Status::new(code, "stand-in failure"));
        }
        let audio_content = match &self.script.raw_unary_audio {
            Some(raw) => raw.clone(),
            // Google returns MULAW as a WAV file; mulaw's writer adds a `fact` chunk, so the
            // samples do not start at byte 44.
            None => mulaw::wav::write_mulaw(&spoken(&text), 8000, 1),
        };
        Ok(Response::new(SynthesizeSpeechResponse { audio_content }))
    }

    type StreamingSynthesizeStream = ReceiverStream<Result<StreamingSynthesizeResponse, Status>>;

    async fn streaming_synthesize(
        &self,
        request: Request<Streaming<StreamingSynthesizeRequest>>,
    ) -> Result<Response<Self::StreamingSynthesizeStream>, Status> {
        let mut requests = request.into_inner();
        let (tx, rx) = mpsc::channel(64);
        let record = Arc::clone(&self.record);
        let script = self.script.clone();
        tokio::spawn(async move {
            let mut received = Vec::new();
            while let Ok(Some(message)) = requests.message().await {
                received.push(message.clone());
                use speech::proto::texttospeech_v1::streaming_synthesis_input::InputSource;
                use speech::proto::texttospeech_v1::streaming_synthesize_request::StreamingRequest;
                match message.streaming_request {
                    Some(StreamingRequest::StreamingConfig(_)) if script.refuse_streaming => {
                        record
                            .lock()
                            .unwrap()
                            .streaming_requests
                            .push(received.clone());
                        let _ = tx
                            .send(Err(Status::invalid_argument(
                                "This voice does not support streaming",
                            )))
                            .await;
                        return;
                    }
                    Some(StreamingRequest::Input(_)) if script.stall_streaming => {
                        let chunk = StreamingSynthesizeResponse {
                            audio_content: vec![0xFF; 160],
                        };
                        let _ = tx.send(Ok(chunk)).await;
                        // Hold the response stream open without sending anything.
                        std::future::pending::<()>().await;
                    }
                    Some(StreamingRequest::Input(input)) => {
                        if let Some(InputSource::Text(text)) = input.input_source {
                            for chunk in spoken(&text).chunks(script.streaming_chunk.max(1)) {
                                let _ = tx
                                    .send(Ok(StreamingSynthesizeResponse {
                                        audio_content: chunk.to_vec(),
                                    }))
                                    .await;
                            }
                        }
                    }
                    _ => {}
                }
            }
            record.lock().unwrap().streaming_requests.push(received);
        });
        Ok(Response::new(ReceiverStream::new(rx)))
    }
}

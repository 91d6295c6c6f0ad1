//! Real components on loopback for the call driver's end-to-end tests:
//! - Google STT / TTS stand-ins served by tonic from `speech::proto`'s generated servers. The
//!   STT stand-in segments the caller's audio by energy and hands out scripted transcripts, one
//!   per voiced segment; the TTS stand-in returns a WAV whose samples are one "signature" byte
//!   per text, so the test client can tell which sentence it is hearing.
//! - A Twilio REST stand-in (axum) that records hang-up requests.
//! - The server side: a tokio-tungstenite WebSocket adapted to `WsIn`/`WsOut` running `run_call`.
//! - A Twilio Media Streams client: `connected`, `start`, caller audio in real 20 ms frames, a
//!   real-time playout queue that echoes marks when the audio before them has played, `clear`
//!   handling like Twilio's (queued audio dropped, pending marks echoed), then `stop` or a drop.
#![allow(dead_code, clippy::unwrap_used)]

use std::collections::VecDeque;
use std::net::SocketAddr;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use base64::Engine as _;
use bytes::Bytes;
use call::{CallDeps, CallSummary, ScriptedResponder, TransportError, WsIn, WsOut};
use futures::{SinkExt, StreamExt};
use speech::proto::speech_v1::speech_server::{Speech, SpeechServer};
use speech::proto::speech_v1::streaming_recognize_request::StreamingRequest;
use speech::proto::speech_v1::{
    SpeechRecognitionAlternative, StreamingRecognitionResult, StreamingRecognizeRequest,
    StreamingRecognizeResponse,
};
use speech::proto::texttospeech_v1::text_to_speech_server::{TextToSpeech, TextToSpeechServer};
use speech::proto::texttospeech_v1::{
    StreamingSynthesizeRequest, StreamingSynthesizeResponse, SynthesizeSpeechRequest,
    SynthesizeSpeechResponse,
};
use tokio::net::TcpListener;
use tokio::sync::mpsc;
use tokio::time::Instant;
use tokio_stream::wrappers::ReceiverStream;
use tokio_tungstenite::tungstenite::Message;
use tonic::transport::Server;
use tonic::transport::server::TcpIncoming;
use tonic::{Code, Request, Response, Status, Streaming};

/// Upper bound of any wait in these tests; reaching it fails the test.
pub const BOUND: Duration = Duration::from_secs(20);
pub const CALL_SID: &str = "CA0123456789abcdef0123456789abcdef";
pub const STREAM_SID: &str = "MZ0123456789abcdef0123456789abcdef";
pub const ACCOUNT_SID: &str = "AC0123456789abcdef0123456789abcdef";
pub const CALLER: &str = "+972501234567";

// ------------------------------------------------------------------------------- audio

/// Caller speech: a 300 Hz + 900 Hz tone with deterministic noise, loud enough for any VAD.
pub fn speech_frame(index: usize) -> Vec<u8> {
    let mut seed = 0x9e37_79b9u32.wrapping_mul(index as u32 + 1);
    (0..160)
        .map(|i| {
            let t = (index * 160 + i) as f32 / 8000.0;
            seed ^= seed << 13;
            seed ^= seed >> 17;
            seed ^= seed << 5;
            let noise = (seed >> 20) as f32 / 4096.0 - 0.5;
            let s = 6000.0 * (2.0 * std::f32::consts::PI * 300.0 * t).sin()
                + 3000.0 * (2.0 * std::f32::consts::PI * 900.0 * t).sin()
                + 1500.0 * noise;
            mulaw::encode_sample(s as i16)
        })
        .collect()
}

pub fn silence_frame() -> Vec<u8> {
    vec![mulaw::SILENCE; 160]
}

fn frame_is_voiced(frame: &[u8]) -> bool {
    let sum: u64 = frame
        .iter()
        .map(|&b| u64::from(mulaw::decode_sample(b).unsigned_abs()))
        .sum();
    sum / frame.len().max(1) as u64 > 800
}

// ------------------------------------------------------------------------------- STT stand-in

#[derive(Debug, Clone, Default)]
pub struct SttScript {
    /// Transcript of the n-th voiced segment heard (across all streams).
    pub utterances: Vec<String>,
    /// After the n-th final (1-based, counted across streams), fail that stream with this code.
    pub fail_after_final: Option<(usize, Code)>,
}

#[derive(Clone)]
pub struct FakeStt {
    script: Arc<SttScript>,
    finals: Arc<Mutex<usize>>,
    pub streams: Arc<Mutex<usize>>,
}

#[tonic::async_trait]
impl Speech for FakeStt {
    type StreamingRecognizeStream = ReceiverStream<Result<StreamingRecognizeResponse, Status>>;

    async fn streaming_recognize(
        &self,
        request: Request<Streaming<StreamingRecognizeRequest>>,
    ) -> Result<Response<Self::StreamingRecognizeStream>, Status> {
        *self.streams.lock().unwrap() += 1;
        let mut requests = request.into_inner();
        let (tx, rx) = mpsc::channel(64);
        let this = self.clone();
        tokio::spawn(async move {
            let mut pending = Vec::new();
            let (mut voiced_ms, mut silent_ms, mut in_speech, mut partial_sent) =
                (0u32, 0u32, false, false);
            while let Ok(Some(request)) = requests.message().await {
                let Some(StreamingRequest::AudioContent(audio)) = request.streaming_request else {
                    continue;
                };
                pending.extend_from_slice(&audio);
                while pending.len() >= 160 {
                    let frame: Vec<u8> = pending.drain(..160).collect();
                    if frame_is_voiced(&frame) {
                        voiced_ms += 20;
                        silent_ms = 0;
                        if voiced_ms >= 60 {
                            in_speech = true;
                        }
                    } else {
                        silent_ms += 20;
                        voiced_ms = 0;
                    }
                    if in_speech && !partial_sent && voiced_ms >= 200 {
                        partial_sent = true;
                        let _ = tx.send(Ok(result("…", false, 0.2))).await;
                    }
                    if in_speech && silent_ms >= 200 {
                        in_speech = false;
                        partial_sent = false;
                        let n = {
                            let mut finals = this.finals.lock().unwrap();
                            *finals += 1;
                            *finals
                        };
                        let text = this
                            .script
                            .utterances
                            .get(n - 1)
                            .cloned()
                            .unwrap_or_default();
                        let _ = tx.send(Ok(result(&text, true, 0.0))).await;
                        if let Some((after, code)) = this.script.fail_after_final
                            && after == n
                        {
                            let _ = tx
                                .send(Err(Status::new(code, "stand-in fails this stream")))
                                .await;
                            return;
                        }
                    }
                }
            }
        });
        Ok(Response::new(ReceiverStream::new(rx)))
    }
}

fn result(text: &str, is_final: bool, stability: f32) -> StreamingRecognizeResponse {
    StreamingRecognizeResponse {
        results: vec![StreamingRecognitionResult {
            alternatives: vec![SpeechRecognitionAlternative {
                transcript: text.to_string(),
                confidence: 0.9,
                words: Vec::new(),
            }],
            is_final,
            stability,
            ..Default::default()
        }],
        ..Default::default()
    }
}

// ------------------------------------------------------------------------------- TTS stand-in

#[derive(Clone, Default)]
pub struct FakeTts {
    pub requests: Arc<Mutex<Vec<String>>>,
    /// Distinct texts in the order first synthesized; text n's audio is all byte 0x10 + n.
    pub distinct: Arc<Mutex<Vec<String>>>,
    /// Texts containing this fail with UNAVAILABLE.
    pub fail_containing: Option<String>,
}

/// Audio length the stand-in produces for `text`: 10 ms per character, 200..=2000 ms.
pub fn tts_ms(text: &str) -> usize {
    (text.trim().chars().count() * 10).clamp(200, 2000)
}

#[tonic::async_trait]
impl TextToSpeech for FakeTts {
    async fn synthesize_speech(
        &self,
        request: Request<SynthesizeSpeechRequest>,
    ) -> Result<Response<SynthesizeSpeechResponse>, Status> {
        use speech::proto::texttospeech_v1::synthesis_input::InputSource;
        let text = match request.into_inner().input.and_then(|i| i.input_source) {
            Some(InputSource::Text(text)) => text,
            _ => return Err(Status::invalid_argument("text input expected")),
        };
        self.requests.lock().unwrap().push(text.clone());
        if let Some(fail) = &self.fail_containing
            && text.contains(fail.as_str())
        {
            return Err(Status::unavailable("stand-in TTS failure"));
        }
        let signature = {
            let mut distinct = self.distinct.lock().unwrap();
            let index = match distinct.iter().position(|t| *t == text) {
                Some(index) => index,
                None => {
                    distinct.push(text.clone());
                    distinct.len() - 1
                }
            };
            assert!(
                index < 0x60,
                "too many distinct texts for one-byte signatures"
            );
            0x10 + index as u8
        };
        let samples = agent_tone(signature, tts_ms(&text) * 8);
        Ok(Response::new(SynthesizeSpeechResponse {
            audio_content: mulaw::wav::write_mulaw(&samples, 8000, 1),
        }))
    }

    type StreamingSynthesizeStream = ReceiverStream<Result<StreamingSynthesizeResponse, Status>>;

    async fn streaming_synthesize(
        &self,
        _request: Request<Streaming<StreamingSynthesizeRequest>>,
    ) -> Result<Response<Self::StreamingSynthesizeStream>, Status> {
        Err(Status::unimplemented("the stand-in voice does not stream"))
    }
}

/// The stand-in voice: a 500 Hz square wave whose positive half is the text's signature byte
/// and negative half the same byte with the mu-law sign bit set. Every 20 ms frame starts with
/// the signature byte (160 bytes = 20 half-periods of 8 bytes), so the client can still tell
/// sentences apart by a frame's first byte, and the audio is a tone a codec keeps (a constant
/// level would be DC, which Opus filters out).
pub fn agent_tone(signature: u8, len: usize) -> Vec<u8> {
    (0..len)
        .map(|i| {
            if (i / 8) % 2 == 0 {
                signature
            } else {
                signature | 0x80
            }
        })
        .collect()
}

async fn serve_grpc(router: tonic::transport::server::Router) -> String {
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let address: SocketAddr = listener.local_addr().unwrap();
    tokio::spawn(router.serve_with_incoming(TcpIncoming::from(listener)));
    format!("http://{address}")
}

// ------------------------------------------------------------------------------- Twilio REST stand-in

#[derive(Debug, Clone)]
pub struct RestRequest {
    pub path: String,
    pub body: String,
    pub authorization: Option<String>,
}

pub struct FakeTwilioRest {
    pub base: String,
    pub requests: Arc<Mutex<Vec<RestRequest>>>,
    /// Fires when a hang-up arrives (the test client then sends `stop`, like Twilio).
    pub hung_up: Arc<tokio::sync::Notify>,
}

pub async fn start_rest(status: u16) -> FakeTwilioRest {
    let requests = Arc::new(Mutex::new(Vec::new()));
    let hung_up = Arc::new(tokio::sync::Notify::new());
    let (recorded, notify) = (requests.clone(), hung_up.clone());
    let app = axum::Router::new().fallback(
        move |uri: axum::http::Uri, headers: axum::http::HeaderMap, body: String| {
            let recorded = recorded.clone();
            let notify = notify.clone();
            async move {
                recorded.lock().unwrap().push(RestRequest {
                    path: uri.path().to_string(),
                    body,
                    authorization: headers
                        .get("authorization")
                        .map(|v| v.to_str().unwrap().to_string()),
                });
                notify.notify_one();
                (
                    axum::http::StatusCode::from_u16(status).unwrap(),
                    r#"{"sid":"CA","status":"completed"}"#,
                )
            }
        },
    );
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    tokio::spawn(async move { axum::serve(listener, app).await.unwrap() });
    FakeTwilioRest {
        base: format!("http://{addr}"),
        requests,
        hung_up,
    }
}

// ------------------------------------------------------------------------------- harness

pub struct Options {
    pub stt: SttScript,
    pub tts_fail_containing: Option<String>,
    pub rest_status: u16,
    /// Replaces the built-in scripted responder.
    pub responder: Option<Arc<dyn call::Responder>>,
    /// Adjusts the driver's dependencies before the call (timings, turn config).
    pub configure: Option<fn(&mut CallDeps)>,
}

impl Default for Options {
    fn default() -> Self {
        Options {
            stt: SttScript::default(),
            tts_fail_containing: None,
            rest_status: 200,
            responder: None,
            configure: None,
        }
    }
}

/// An OpenAI-compatible endpoint that answers the headers and then never sends a token.
pub async fn start_silent_llm() -> String {
    let app = axum::Router::new().route(
        "/v1/chat/completions",
        axum::routing::post(|| async {
            axum::response::Response::builder()
                .header("content-type", "text/event-stream")
                .body(axum::body::Body::from_stream(futures::stream::pending::<
                    Result<Bytes, std::convert::Infallible>,
                >()))
                .unwrap()
        }),
    );
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    tokio::spawn(async move { axum::serve(listener, app).await.unwrap() });
    format!("http://{addr}/v1")
}

pub struct Harness {
    pub ws_url: String,
    pub store: crm::Store,
    pub writer: crm::CrmWriter,
    pub stt: FakeStt,
    pub tts: FakeTts,
    pub rest: FakeTwilioRest,
    pub deps: Arc<CallDeps>,
    pub events: tokio::sync::broadcast::Receiver<call::CallEvent>,
    pub server: tokio::task::JoinHandle<CallSummary>,
    /// Where the call is recorded (every harness call is).
    pub recordings_dir: std::path::PathBuf,
    _dir: tempfile::TempDir,
}

impl Harness {
    pub async fn start(options: Options) -> Harness {
        // `RUST_LOG=call=debug cargo test -p call --test call_e2e -- --nocapture` shows the call.
        let _ = tracing_subscriber::fmt()
            .with_env_filter(
                tracing_subscriber::EnvFilter::try_from_default_env()
                    .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new("warn")),
            )
            .with_test_writer()
            .try_init();
        let dir = tempfile::tempdir().unwrap();
        let store = crm::Store::connect(&format!("sqlite://{}/crm.sqlite", dir.path().display()))
            .await
            .unwrap();
        store.upsert_contact(CALLER, Some("Dana")).await.unwrap();
        store
            .record_incoming_call(&crm::NewCall {
                call_sid: CALL_SID.into(),
                account_sid: Some(ACCOUNT_SID.into()),
                from: Some(CALLER.into()),
                to: Some("+97231234567".into()),
                direction: "inbound".into(),
                status: Some("in-progress".into()),
                caller_name: None,
                at_ms: 1,
            })
            .await
            .unwrap();
        let (writer, _task) = crm::CrmWriter::spawn(store.clone(), 256);

        let stt = FakeStt {
            script: Arc::new(options.stt),
            finals: Arc::default(),
            streams: Arc::default(),
        };
        let stt_endpoint =
            serve_grpc(Server::builder().add_service(SpeechServer::new(stt.clone()))).await;
        let tts = FakeTts {
            requests: Arc::default(),
            distinct: Arc::default(),
            fail_containing: options.tts_fail_containing,
        };
        let tts_endpoint =
            serve_grpc(Server::builder().add_service(TextToSpeechServer::new(tts.clone()))).await;
        let rest = start_rest(options.rest_status).await;

        let stt_client = speech::SttClient::new(
            speech::SttConfig {
                endpoint: stt_endpoint,
                language_code: "en-US".into(),
                ..speech::SttConfig::default()
            },
            None,
        )
        .unwrap();
        let tts_client = speech::TtsClient::new(
            speech::TtsConfig {
                endpoint: tts_endpoint,
                voice_name: "en-US-Test-A".into(),
                language_code: "en-US".into(),
                streaming: false,
                ..speech::TtsConfig::default()
            },
            None,
        )
        .unwrap();
        let (events_tx, events) = tokio::sync::broadcast::channel(1024);
        let responder = options
            .responder
            .unwrap_or_else(|| Arc::new(ScriptedResponder::built_in().unwrap()));
        let mut deps = CallDeps::new(responder);
        deps.stt = Some(stt_client);
        deps.tts = Some(tts_client);
        deps.crm = Some(writer.clone());
        deps.store = Some(store.clone());
        deps.twilio_rest =
            Some(call::TwilioRest::new(&rest.base, ACCOUNT_SID, "test-auth-token").unwrap());
        deps.events = Some(events_tx);
        let recordings_dir = dir.path().join("recordings");
        deps.recordings_dir = Some(recordings_dir.clone());
        deps.media_lateness = Some(Arc::default());
        if let Some(configure) = options.configure {
            configure(&mut deps);
        }
        let cached = deps.warm_tts_cache().await.unwrap();
        assert!(cached >= 5, "fixed lines cached: {cached}");
        let deps = Arc::new(deps);

        let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap();
        let server_deps = deps.clone();
        let server = tokio::spawn(async move {
            let (tcp, _) = listener.accept().await.unwrap();
            // 20 ms frames are small writes: without TCP_NODELAY, Nagle holds them back.
            tcp.set_nodelay(true).unwrap();
            let ws = tokio_tungstenite::accept_async(tcp).await.unwrap();
            call::run_call(adapt(ws), server_deps).await
        });
        Harness {
            ws_url: format!("ws://{addr}/ws/twilio-media"),
            store,
            writer,
            stt,
            tts,
            rest,
            deps,
            events,
            server,
            recordings_dir,
            _dir: dir,
        }
    }

    pub fn greeting(&self) -> String {
        self.deps.responder.fixed_lines().greeting.clone()
    }

    /// The call's summary (the server task ends when the call does).
    pub async fn summary(&mut self) -> CallSummary {
        tokio::time::timeout(BOUND, &mut self.server)
            .await
            .expect("run_call did not return")
            .unwrap()
    }

    /// Names of the files in the recordings directory.
    pub fn recording_files(&self) -> Vec<String> {
        std::fs::read_dir(&self.recordings_dir)
            .unwrap()
            .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
            .collect()
    }

    /// The call's recording once its Ogg Opus encoding has replaced the WAV spool in the store
    /// (encoded after the call on the recording pool's encoder threads).
    pub async fn encoded_recording(&self) -> crm::Recording {
        tokio::time::timeout(BOUND, async {
            loop {
                self.writer.flush().await;
                if let Ok(recording) = self.store.get_recording(CALL_SID).await
                    && recording.codec == "opus"
                {
                    return recording;
                }
                tokio::time::sleep(Duration::from_millis(20)).await;
            }
        })
        .await
        .expect("the recording was not encoded in time")
    }

    /// The signature byte of `text`'s audio (it must have been synthesized).
    pub fn signature(&self, text: &str) -> u8 {
        let distinct = self.tts.distinct.lock().unwrap();
        let index = distinct
            .iter()
            .position(|t| t == text.trim())
            .unwrap_or_else(|| panic!("never synthesized: {text:?} (have {distinct:?})"));
        0x10 + index as u8
    }

    /// The signatures of those of `texts` that were synthesized.
    pub fn signatures_of(&self, texts: &[&str]) -> Vec<u8> {
        let distinct = self.tts.distinct.lock().unwrap();
        texts
            .iter()
            .filter_map(|text| distinct.iter().position(|t| t == text.trim()))
            .map(|index| 0x10 + index as u8)
            .collect()
    }

    /// Texts the TTS stand-in was asked for (including the cache warm-up).
    pub fn tts_requests(&self) -> Vec<String> {
        self.tts.requests.lock().unwrap().clone()
    }
}

/// The server side of the socket as the driver wants it.
pub fn adapt(
    ws: tokio_tungstenite::WebSocketStream<tokio::net::TcpStream>,
) -> impl futures::Stream<Item = Result<WsIn, TransportError>>
+ futures::Sink<WsOut, Error = tokio_tungstenite::tungstenite::Error>
+ Unpin
+ Send {
    ws.with(|out: WsOut| {
        futures::future::ready(Ok::<_, tokio_tungstenite::tungstenite::Error>(match out {
            WsOut::Text(text) => Message::Text(text.into()),
            WsOut::Ping(payload) => Message::Ping(payload),
            WsOut::Pong(payload) => Message::Pong(payload),
            WsOut::Close => Message::Close(None),
        }))
    })
    .map(|message| match message {
        Ok(Message::Text(text)) => Ok(WsIn::Text(text.to_string())),
        Ok(Message::Binary(bytes)) => Ok(WsIn::Binary(bytes)),
        Ok(Message::Ping(payload)) => Ok(WsIn::Ping(payload)),
        Ok(Message::Pong(payload)) => Ok(WsIn::Pong(payload)),
        Ok(Message::Close(_)) => Ok(WsIn::Close),
        Ok(Message::Frame(_)) => Ok(WsIn::Binary(Bytes::new())),
        Err(error) => Err(TransportError(error.to_string())),
    })
}

// ------------------------------------------------------------------------------- Twilio client

/// One step of what the caller does.
#[derive(Debug, Clone)]
pub enum Step {
    /// Send silence for this long.
    Silence(u64),
    /// Speak for this long.
    Speak(u64),
    /// Send silence until agent audio has arrived and finished playing.
    WaitUntilAgentDone,
    /// Send silence until a frame of audio not in `except` arrives.
    WaitForAudioOtherThan(Vec<u8>),
    /// Press a key.
    Dtmf(char),
    /// Send this text frame as is (malformed or unknown messages).
    SendRaw(String),
}

/// How the client leaves.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Leave {
    /// Send `stop`, then close.
    Stop,
    /// Drop the TCP connection without `stop` or a close frame (caller hung up).
    Drop,
    /// Keep sending silence until the REST hang-up arrives, then `stop` (what Twilio does).
    StopAfterRestHangup,
}

#[derive(Debug, Clone)]
pub struct RxFrame {
    pub at: Instant,
    pub signature: u8,
    pub len: usize,
}

#[derive(Debug, Default)]
pub struct ClientLog {
    pub start_sent_at: Option<Instant>,
    pub frames: Vec<RxFrame>,
    pub clears: Vec<Instant>,
    /// Agent audio waiting in the playout queue (sent, not yet played) when each clear came.
    pub queued_ms_at_clear: Vec<u64>,
    pub marks_echoed: Vec<String>,
    /// When each spoken segment ended (the audio start of its first silent frame).
    pub speech_ended_at: Vec<Instant>,
    pub speech_started_at: Vec<Instant>,
    pub server_closed: bool,
    pub pings: usize,
}

enum Queued {
    Audio { signature: u8, bytes: usize },
    Mark(String),
}

/// A Twilio Media Streams peer: runs `steps` in real time, then leaves.
pub async fn run_twilio_client(
    url: &str,
    steps: Vec<Step>,
    leave: Leave,
    rest_hung_up: Option<Arc<tokio::sync::Notify>>,
) -> ClientLog {
    let (ws, _) = tokio_tungstenite::connect_async_with_config(url, None, true)
        .await
        .unwrap();
    let (mut tx, mut rx) = ws.split();
    let mut log = ClientLog::default();
    let send = |value: serde_json::Value| Message::Text(value.to_string().into());
    tx.send(send(
        serde_json::json!({"event": "connected", "protocol": "Call", "version": "1.0.0"}),
    ))
    .await
    .unwrap();
    tx.send(send(serde_json::json!({
        "event": "start", "sequenceNumber": "1", "streamSid": STREAM_SID,
        "start": {"accountSid": ACCOUNT_SID, "streamSid": STREAM_SID, "callSid": CALL_SID,
                  "tracks": ["inbound"], "customParameters": {"call_sid": CALL_SID},
                  "mediaFormat": {"encoding": "audio/x-mulaw", "sampleRate": 8000, "channels": 1}}
    })))
    .await
    .unwrap();
    log.start_sent_at = Some(Instant::now());

    let mut sequence = 2u64;
    let mut chunk = 0u64;
    let mut playout: VecDeque<Queued> = VecDeque::new();
    let mut steps: VecDeque<Step> = steps.into();
    let mut step_remaining_ms: Option<u64> = None;
    let mut frames_at_step_start: Option<usize> = None;
    let mut speaking = false;
    let mut hung_up = false;
    let mut ticker = tokio::time::interval(Duration::from_millis(20));
    ticker.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Burst);
    let deadline = Instant::now() + BOUND;
    let rest_notified = async {
        match &rest_hung_up {
            Some(notify) => notify.notified().await,
            None => std::future::pending().await,
        }
    };
    tokio::pin!(rest_notified);

    loop {
        assert!(
            Instant::now() < deadline,
            "client script did not finish in time"
        );
        tokio::select! {
            _ = ticker.tick() => {
                // Play 20 ms of queued agent audio; echo marks whose audio has played.
                let mut budget = 160usize;
                loop {
                    match playout.front_mut() {
                        Some(Queued::Mark(_)) => {
                            if let Some(Queued::Mark(name)) = playout.pop_front() {
                                echo_mark(&mut tx, &mut sequence, &name, &mut log).await;
                            }
                        }
                        Some(Queued::Audio { bytes, .. }) if budget > 0 => {
                            let take = (*bytes).min(budget);
                            *bytes -= take;
                            budget -= take;
                            if *bytes == 0 {
                                playout.pop_front();
                            }
                        }
                        _ => break,
                    }
                }
                let agent_playing = playout.iter().any(|q| matches!(q, Queued::Audio { .. }));
                // Decide what the caller does in this frame.
                let mut voiced = false;
                let mut finished_steps = false;
                loop {
                    match steps.front().cloned() {
                        None => { finished_steps = true; break; }
                        Some(Step::Silence(ms)) | Some(Step::Speak(ms)) => {
                            let remaining = step_remaining_ms.get_or_insert(ms);
                            if *remaining == 0 {
                                steps.pop_front();
                                step_remaining_ms = None;
                                continue;
                            }
                            *remaining = remaining.saturating_sub(20);
                            voiced = matches!(steps.front(), Some(Step::Speak(_)));
                            break;
                        }
                        Some(Step::WaitUntilAgentDone) => {
                            // Done once audio that arrived after this step began has played.
                            let since = *frames_at_step_start.get_or_insert(log.frames.len());
                            if log.frames.len() > since && !agent_playing {
                                steps.pop_front();
                                frames_at_step_start = None;
                                continue;
                            }
                            break;
                        }
                        Some(Step::WaitForAudioOtherThan(except)) => {
                            if log.frames.iter().any(|f| !except.contains(&f.signature)) {
                                steps.pop_front();
                                continue;
                            }
                            break;
                        }
                        Some(Step::SendRaw(text)) => {
                            tx.send(Message::Text(text.into())).await.unwrap();
                            steps.pop_front();
                            continue;
                        }
                        Some(Step::Dtmf(digit)) => {
                            tx.send(send(serde_json::json!({
                                "event": "dtmf", "sequenceNumber": sequence.to_string(),
                                "streamSid": STREAM_SID, "dtmf": {"track": "inbound_track", "digit": digit.to_string()}
                            }))).await.unwrap();
                            sequence += 1;
                            steps.pop_front();
                            continue;
                        }
                    }
                }
                let now = Instant::now();
                if voiced && !speaking {
                    log.speech_started_at.push(now);
                }
                if !voiced && speaking {
                    // This frame carries the 20 ms of audio before `now`: silence began then.
                    log.speech_ended_at.push(now - Duration::from_millis(20));
                }
                speaking = voiced;
                if finished_steps {
                    match leave {
                        Leave::Stop => break,
                        Leave::Drop => {
                            // Drop both halves without a close frame.
                            drop(tx);
                            drop(rx);
                            return log;
                        }
                        Leave::StopAfterRestHangup if hung_up => break,
                        Leave::StopAfterRestHangup => {}
                    }
                }
                let frame = if voiced { speech_frame(chunk as usize) } else { silence_frame() };
                chunk += 1;
                let payload = base64::engine::general_purpose::STANDARD.encode(&frame);
                tx.send(send(serde_json::json!({
                    "event": "media", "sequenceNumber": sequence.to_string(), "streamSid": STREAM_SID,
                    "media": {"track": "inbound", "chunk": chunk.to_string(),
                              "timestamp": ((chunk - 1) * 20).to_string(), "payload": payload}
                }))).await.unwrap();
                sequence += 1;
            }
            message = rx.next() => {
                let Some(Ok(message)) = message else {
                    log.server_closed = true;
                    return log;
                };
                match message {
                    Message::Text(text) => {
                        let value: serde_json::Value = serde_json::from_str(&text).unwrap();
                        assert_eq!(value["streamSid"], STREAM_SID, "{text}");
                        match value["event"].as_str().unwrap() {
                            "media" => {
                                let audio = base64::engine::general_purpose::STANDARD
                                    .decode(value["media"]["payload"].as_str().unwrap())
                                    .unwrap();
                                assert!(!audio.starts_with(b"RIFF"), "no WAV header on the wire");
                                let signature = audio[0];
                                log.frames.push(RxFrame { at: Instant::now(), signature, len: audio.len() });
                                playout.push_back(Queued::Audio { signature, bytes: audio.len() });
                            }
                            "mark" => {
                                playout.push_back(Queued::Mark(value["mark"]["name"].as_str().unwrap().to_string()));
                            }
                            "clear" => {
                                log.clears.push(Instant::now());
                                log.queued_ms_at_clear.push(
                                    playout.iter().map(|q| match q {
                                        Queued::Audio { bytes, .. } => *bytes as u64 / 8,
                                        Queued::Mark(_) => 0,
                                    }).sum(),
                                );
                                // Twilio drops queued audio and echoes the pending marks.
                                let marks: Vec<String> = playout.drain(..).filter_map(|q| match q {
                                    Queued::Mark(name) => Some(name),
                                    Queued::Audio { .. } => None,
                                }).collect();
                                for name in marks {
                                    echo_mark(&mut tx, &mut sequence, &name, &mut log).await;
                                }
                            }
                            other => panic!("unexpected event {other}: {text}"),
                        }
                    }
                    Message::Ping(_) => log.pings += 1,
                    Message::Close(_) => {
                        log.server_closed = true;
                        return log;
                    }
                    _ => {}
                }
            }
            () = &mut rest_notified, if !hung_up => {
                hung_up = true;
            }
        }
    }
    tx.send(send(serde_json::json!({
        "event": "stop", "sequenceNumber": sequence.to_string(), "streamSid": STREAM_SID,
        "stop": {"accountSid": ACCOUNT_SID, "callSid": CALL_SID}
    })))
    .await
    .unwrap();
    // Like Twilio: close after stop, reading whatever the server still sends.
    let _ = tx.close().await;
    let drain = async { while let Some(Ok(_)) = rx.next().await {} };
    let _ = tokio::time::timeout(Duration::from_secs(2), drain).await;
    log
}

async fn echo_mark(
    tx: &mut futures::stream::SplitSink<
        tokio_tungstenite::WebSocketStream<
            tokio_tungstenite::MaybeTlsStream<tokio::net::TcpStream>,
        >,
        Message,
    >,
    sequence: &mut u64,
    name: &str,
    log: &mut ClientLog,
) {
    let message = serde_json::json!({
        "event": "mark", "sequenceNumber": sequence.to_string(), "streamSid": STREAM_SID,
        "mark": {"name": name}
    });
    *sequence += 1;
    log.marks_echoed.push(name.to_string());
    // The server may already be gone (e.g. after our stop); that is fine.
    let _ = tx.send(Message::Text(message.to_string().into())).await;
}

/// Collect the live events sent so far.
pub fn drain_events(
    rx: &mut tokio::sync::broadcast::Receiver<call::CallEvent>,
) -> Vec<call::CallEvent> {
    let mut out = Vec::new();
    while let Ok(event) = rx.try_recv() {
        out.push(event);
    }
    out
}

//! The call loop and its state.

use std::collections::{HashMap, VecDeque};
use std::fmt::Display;
use std::sync::Arc;
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use bytes::Bytes;
use futures::{Sink, SinkExt, Stream, StreamExt};
use speech::{SpeechError, SttEvent, SttStream, TtsClient};
use tokio::sync::{mpsc, oneshot};
use tokio::task::JoinHandle;
use tracing::Instrument;
use turn::{Action, Event, TurnEngine, TurnId, TurnOutcome, UtteranceKind};
use twilio_stream::media::{
    InboundMessage, MediaJsonWriter, StreamHealth, StreamValidator, clear_json, mark_json,
};

use super::deps::CallDeps;
use super::pacer::{Outgoing, Pacer};
use super::report::{CallEvent, CallSummary, EndReason, TurnLatency, TurnSummary};
use crate::responder::{
    AwaitedInput, CallContext, CallerInput, Channel, HistorySpeaker, HistoryTurn, ReplyStream,
    ResponderEffect, ResponderError,
};
use crate::rest::{HangupError, HangupOutcome};
use crate::transport::{TransportError, WsIn, WsOut};
use crm::recording::RecordingTask;

/// Suffix of the driver's own mark after the first frame of a reply (Twilio-clock latency).
const FIRST_FRAME_MARK_SUFFIX: &str = "-first";
/// Protocol problems logged per call before going quiet (the counter keeps counting).
const MAX_LOGGED_PROTOCOL_ERRORS: u32 = 5;
/// 20 ms chunks the recording queue holds before chunks are dropped (10 s of both sides).
const RECORDING_QUEUE_CHUNKS: usize = 1_000;
/// Longest wait for the recording encoder to drain and close the file at the end of a call.
const RECORDING_FINISH_TIMEOUT: Duration = Duration::from_secs(10);
/// A reply's next sentence is sent to synthesis only once less than this much audio is left to
/// play: a long reply is not held in memory whole, and sentences the caller interrupts before
/// they are needed are never synthesized (nor billed). TTS answers a sentence in well under a
/// second, so 3 s keeps playback gapless.
const SYNTH_LOOKAHEAD: Duration = Duration::from_secs(3);
/// Synthesis requests one call keeps in flight at most (the sentence playing next and the one
/// after it).
const SYNTH_MAX_RUNNING: usize = 2;
/// Longest task text stored from a call (the CRM refuses longer ones).
const MAX_TASK_TEXT_CHARS: usize = 4_000;

fn now() -> Instant {
    tokio::time::Instant::now().into_std()
}

fn wall_ms() -> i64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| i64::try_from(d.as_millis()).unwrap_or(i64::MAX))
}

fn ms(d: Duration) -> u64 {
    u64::try_from(d.as_millis()).unwrap_or(u64::MAX)
}

fn ms_between(earlier: Instant, later: Instant) -> u64 {
    ms(later.saturating_duration_since(earlier))
}

fn kind_name(kind: UtteranceKind) -> &'static str {
    match kind {
        UtteranceKind::Greeting => "greeting",
        UtteranceKind::Reply => "reply",
        UtteranceKind::Reprompt => "reprompt",
        UtteranceKind::Goodbye => "goodbye",
        UtteranceKind::Apology => "apology",
    }
}

fn outcome_name(outcome: TurnOutcome) -> &'static str {
    match outcome {
        TurnOutcome::Played => "played",
        TurnOutcome::PlayedByFallback => "played_by_fallback",
        TurnOutcome::Interrupted => "interrupted",
        TurnOutcome::Superseded => "superseded",
        TurnOutcome::Failed => "failed",
        TurnOutcome::NothingToSay => "nothing_to_say",
        TurnOutcome::Cancelled => "cancelled",
    }
}

/// Aborts a spawned task when dropped (a cancelled synthesis stops its request).
#[derive(Debug)]
struct AbortOnDrop(JoinHandle<()>);

impl Drop for AbortOnDrop {
    fn drop(&mut self) {
        self.0.abort();
    }
}

#[derive(Debug)]
enum SynthMsg {
    Audio(Bytes),
    Done,
    Failed(SpeechError),
}

/// One `Synthesize` action in flight. Jobs run concurrently (the next sentence is synthesized
/// while the current one plays) but are delivered to the engine strictly in order.
#[derive(Debug)]
struct SynthJob {
    turn: TurnId,
    rx: mpsc::UnboundedReceiver<SynthMsg>,
    _task: AbortOnDrop,
}

impl SynthJob {
    fn spawn(tts: TtsClient, turn: TurnId, text: String, use_cache: bool) -> Self {
        let (tx, rx) = mpsc::unbounded_channel();
        let task = tokio::spawn(
            async move {
                // Send errors mean the job was dropped (cancelled): nothing left to do.
                if let Some(audio) = tts.cached(&text) {
                    let _ = tx.send(SynthMsg::Audio(audio));
                    let _ = tx.send(SynthMsg::Done);
                    return;
                }
                if use_cache {
                    match tts.synthesize_cached(&text).await {
                        Ok(audio) => {
                            let _ = tx.send(SynthMsg::Audio(audio));
                            let _ = tx.send(SynthMsg::Done);
                        }
                        Err(error) => {
                            let _ = tx.send(SynthMsg::Failed(error));
                        }
                    }
                    return;
                }
                let mut chunks = std::pin::pin!(tts.synthesize_stream(&text));
                while let Some(chunk) = chunks.next().await {
                    match chunk {
                        Ok(audio) => {
                            let _ = tx.send(SynthMsg::Audio(audio));
                        }
                        Err(error) => {
                            let _ = tx.send(SynthMsg::Failed(error));
                            return;
                        }
                    }
                }
                let _ = tx.send(SynthMsg::Done);
            }
            .in_current_span(),
        );
        SynthJob {
            turn,
            rx,
            _task: AbortOnDrop(task),
        }
    }
}

/// A `Synthesize` not started yet: it waits for the audio ahead to fall under
/// [`SYNTH_LOOKAHEAD`] (see [`Session::start_due_synthesis`]).
#[derive(Debug)]
struct WaitingSynth {
    turn: TurnId,
    text: String,
    use_cache: bool,
}

/// The responder's reply being streamed.
struct ActiveReply {
    turn: TurnId,
    chunks: ReplyStream,
    /// The first text must come before this, or the fallback line is said.
    first_chunk_deadline: Option<Instant>,
}

/// Synthesis results known at once (TTS cache hit, no TTS), fed to the engine in the same
/// iteration as the `Synthesize` that asked for them.
#[derive(Debug)]
enum ImmediateTts {
    Audio(TurnId, Bytes),
    Done(TurnId),
    Failed(TurnId),
}

#[derive(Debug, Default)]
struct ContactInfo {
    phone: Option<String>,
    name: Option<String>,
}

/// What we know about one agent turn while it runs.
#[derive(Debug)]
struct TurnRecord {
    kind: Option<UtteranceKind>,
    started_at: Instant,
    started_ms: i64,
    caller_text: Option<String>,
    caller_started_ms: i64,
    effects: Vec<ResponderEffect>,
    previous_awaiting: Option<AwaitedInput>,
    agent_text: String,
    heard_text: Option<String>,
    /// The responder's reply is fixed script text
    /// ([`crate::responder::ReplyMeta::fixed_text`]): its sentences are synthesized through the
    /// shared phrase cache instead of once per call.
    reply_fixed_text: bool,
    reply_requested_at: Option<Instant>,
    speech_end_at: Option<Instant>,
    first_synth_at: Option<Instant>,
    first_frame_sent: bool,
    first_play_seen: bool,
    caller_last_voiced_twilio_ms: Option<u64>,
    frames_sent: u64,
    bytes_sent: u64,
    latency: TurnLatency,
}

impl TurnRecord {
    fn new(at: Instant) -> Self {
        TurnRecord {
            kind: None,
            started_at: at,
            started_ms: wall_ms(),
            caller_text: None,
            caller_started_ms: wall_ms(),
            effects: Vec::new(),
            previous_awaiting: None,
            agent_text: String::new(),
            heard_text: None,
            reply_fixed_text: false,
            reply_requested_at: None,
            speech_end_at: None,
            first_synth_at: None,
            first_frame_sent: false,
            first_play_seen: false,
            caller_last_voiced_twilio_ms: None,
            frames_sent: 0,
            bytes_sent: 0,
            latency: TurnLatency::default(),
        }
    }
}

#[derive(Debug)]
enum Ending {
    Running,
    /// We asked Twilio to hang up; waiting for `stop` / close until `deadline`.
    HangingUp {
        why: &'static str,
        deadline: Instant,
    },
}

struct Session {
    deps: Arc<CallDeps>,
    engine: TurnEngine,
    validator: StreamValidator,
    health: Option<StreamHealth>,
    call_sid: Option<String>,
    stream_sid: Option<String>,
    /// Outbound `media` messages for this stream (the escaped prefix is built once).
    media_writer: Option<MediaJsonWriter>,
    started_at: Option<Instant>,
    protocol_errors: u32,

    stt: Option<SttStream>,
    stt_reopen_at: Option<Instant>,
    stt_failures: u32,
    reply: Option<ActiveReply>,
    synth: VecDeque<SynthJob>,
    /// Sentences after the running jobs, in order, not yet sent to synthesis.
    synth_waiting: VecDeque<WaitingSynth>,
    /// When synthesis last made progress (a job started, audio or its end arrived): a waiting
    /// sentence starts at the latest [`Session::synth_progress_guard`] after it, whatever the
    /// audio ahead, so the engine's `response_timeout_ms` never sees synthesis stall.
    synth_progress_at: Instant,
    pacer: Pacer,
    outbox: VecDeque<WsOut>,
    immediate: VecDeque<ImmediateTts>,

    contact: ContactInfo,
    contact_rx: Option<oneshot::Receiver<ContactInfo>>,
    history: VecDeque<HistoryTurn>,
    awaiting: Option<AwaitedInput>,
    turns: HashMap<u64, TurnRecord>,
    crm_seq: i64,

    current_media: Option<(Instant, u64)>,
    /// Local instant and Twilio stream time (ms) that correspond: `start` is time 0, then
    /// each inbound frame's end at its arrival. Maps agent play times onto Twilio's clock.
    twilio_clock_anchor: Option<(Instant, u64)>,
    recording: Option<RecordingTask>,
    /// Agent frames sent to Twilio, waiting for the instant they start playing before they go
    /// into the recording (a `clear` drops the ones that never play).
    recording_agent_pending: VecDeque<(Instant, Bytes)>,
    /// Tasks (messages left, callbacks booked) submitted so far; the next task's `seq`.
    task_seq: i64,
    /// Audio bytes synthesized for the utterance now being delivered (for `TTS_LEN_ms`).
    utterance_audio_bytes: u64,
    speech_started_wall_ms: Option<i64>,
    speech_ended_at: Option<Instant>,
    last_voiced_twilio_ms: Option<u64>,
    latest_twilio_ms: u64,
    last_final_at: Option<Instant>,

    next_ping_at: Instant,
    ping_sent_at: Option<Instant>,

    ending: Ending,
    hangup_task: Option<JoinHandle<Result<HangupOutcome, HangupError>>>,
    end: Option<EndReason>,
    summary: CallSummary,
}

/// Run one call over `socket` until Twilio stops the stream, the socket closes, or we hang up.
///
/// `socket` is the Twilio Media Streams WebSocket adapted to [`WsIn`]/[`WsOut`] (the edge does
/// it for axum, tests for tokio-tungstenite). Returns what happened; CRM writes were queued on
/// [`CallDeps::crm`] (flush the writer at shutdown). Logs carry `call_sid` as a span field.
pub async fn run_call<S>(socket: S, deps: Arc<CallDeps>) -> CallSummary
where
    S: Stream<Item = Result<WsIn, TransportError>> + Sink<WsOut> + Unpin + Send,
    <S as Sink<WsOut>>::Error: Display,
{
    // At ERROR level so the span (and its call_sid) is enabled whatever the log filter is:
    // a warning logged under RUST_LOG=warn still says which call it belongs to.
    let span = tracing::error_span!(
        "call",
        call_sid = tracing::field::Empty,
        stream_sid = tracing::field::Empty
    );
    let engine = match TurnEngine::new(deps.engine_config()) {
        Ok(engine) => engine,
        Err(error) => {
            tracing::error!(parent: &span, %error, "turn configuration invalid; closing the stream");
            let mut socket = socket;
            let _ = socket.send(WsOut::Close).await;
            return CallSummary::empty(EndReason::TransportFailed {
                detail: format!("turn configuration invalid: {error}"),
            });
        }
    };
    let session = Session::new(deps, engine);
    session.run(socket, span.clone()).instrument(span).await
}

impl CallSummary {
    /// A call that ended for `end_reason` before anything happened (no `start`, no turns).
    #[must_use]
    pub fn empty(end_reason: EndReason) -> Self {
        CallSummary {
            call_sid: None,
            stream_sid: None,
            end_reason,
            duration_ms: 0,
            greetings: 0,
            turns: Vec::new(),
            effects: Vec::new(),
            media_frames_in: 0,
            media_frames_out: 0,
            clears_sent: 0,
            stt_reopens: 0,
            stt_restarts: 0,
            hangup: None,
            inbound_health: None,
            recording: None,
            recording_dropped_chunks: 0,
        }
    }
}

async fn next_stt_event(stt: &mut Option<SttStream>) -> Option<SttEvent> {
    match stt {
        Some(stream) => stream.next_event().await,
        None => std::future::pending().await,
    }
}

async fn next_reply_chunk(
    reply: &mut Option<ActiveReply>,
) -> (TurnId, Option<Result<String, ResponderError>>) {
    match reply {
        Some(active) => (active.turn, active.chunks.next().await),
        None => std::future::pending().await,
    }
}

async fn next_synth_msg(jobs: &mut VecDeque<SynthJob>) -> (TurnId, Option<SynthMsg>) {
    match jobs.front_mut() {
        Some(job) => (job.turn, job.rx.recv().await),
        None => std::future::pending().await,
    }
}

async fn contact_lookup(rx: &mut Option<oneshot::Receiver<ContactInfo>>) -> Option<ContactInfo> {
    match rx {
        Some(rx) => rx.await.ok(),
        None => std::future::pending().await,
    }
}

async fn hangup_result(
    task: &mut Option<JoinHandle<Result<HangupOutcome, HangupError>>>,
) -> Result<HangupOutcome, String> {
    match task {
        Some(task) => match task.await {
            Ok(result) => result.map_err(|e| e.to_string()),
            Err(join) => Err(format!("hang-up task failed: {join}")),
        },
        None => std::future::pending().await,
    }
}

impl Session {
    fn new(deps: Arc<CallDeps>, engine: TurnEngine) -> Self {
        let lead = deps.settings.playout_lead;
        let media_chunk = deps.settings.media_chunk;
        let media_burst = deps.settings.media_burst;
        let next_ping_at = now() + deps.settings.keepalive_interval;
        Session {
            deps,
            engine,
            validator: StreamValidator::new(),
            health: None,
            call_sid: None,
            stream_sid: None,
            media_writer: None,
            started_at: None,
            protocol_errors: 0,
            stt: None,
            stt_reopen_at: None,
            stt_failures: 0,
            reply: None,
            synth: VecDeque::new(),
            synth_waiting: VecDeque::new(),
            synth_progress_at: now(),
            pacer: Pacer::new(lead)
                .with_chunk(media_chunk)
                .with_burst(media_burst),
            outbox: VecDeque::new(),
            immediate: VecDeque::new(),
            contact: ContactInfo::default(),
            contact_rx: None,
            history: VecDeque::new(),
            awaiting: None,
            turns: HashMap::new(),
            crm_seq: 0,
            current_media: None,
            twilio_clock_anchor: None,
            recording: None,
            recording_agent_pending: VecDeque::new(),
            task_seq: 0,
            utterance_audio_bytes: 0,
            speech_started_wall_ms: None,
            speech_ended_at: None,
            last_voiced_twilio_ms: None,
            latest_twilio_ms: 0,
            last_final_at: None,
            next_ping_at,
            ping_sent_at: None,
            ending: Ending::Running,
            hangup_task: None,
            end: None,
            summary: CallSummary::empty(EndReason::SocketClosedWithoutStop),
        }
    }

    async fn run<S>(mut self, mut socket: S, span: tracing::Span) -> CallSummary
    where
        S: Stream<Item = Result<WsIn, TransportError>> + Sink<WsOut> + Unpin + Send,
        <S as Sink<WsOut>>::Error: Display,
    {
        // One timer for the whole call, moved only when the next deadline changes: a fresh
        // `sleep_until` per loop turn registered and dropped a timer-wheel entry for every
        // socket message (callgrind: timer handling was the driver's largest own cost).
        let timer = tokio::time::sleep_until(tokio::time::Instant::now());
        tokio::pin!(timer);
        let mut armed_for: Option<Instant> = None;
        while self.end.is_none() {
            let wake = self.next_wake();
            if wake != armed_for {
                if let Some(deadline) = wake {
                    timer
                        .as_mut()
                        .reset(tokio::time::Instant::from_std(deadline));
                }
                armed_for = wake;
            }
            tokio::select! {
                message = socket.next() => {
                    let at = now();
                    match message {
                        Some(Ok(message)) => self.handle_ws(at, message, &span),
                        Some(Err(error)) => self.socket_gone(at, EndReason::TransportFailed { detail: error.0 }),
                        None => self.socket_gone(at, EndReason::SocketClosedWithoutStop),
                    }
                }
                event = next_stt_event(&mut self.stt) => self.handle_stt(now(), event),
                (turn, chunk) = next_reply_chunk(&mut self.reply) => self.handle_reply(now(), turn, chunk),
                (turn, msg) = next_synth_msg(&mut self.synth) => self.handle_synth(now(), turn, msg),
                info = contact_lookup(&mut self.contact_rx) => {
                    self.contact_rx = None;
                    if let Some(info) = info {
                        tracing::info!(contact_known = info.name.is_some(), "caller contact loaded");
                        self.contact = info;
                    }
                }
                result = hangup_result(&mut self.hangup_task) => self.handle_hangup_result(now(), result),
                () = &mut timer, if armed_for.is_some() => self.handle_timers(now()),
            }
            let at = now();
            self.drain(at);
            self.pump_audio(at);
            self.start_due_synthesis(at);
            self.feed_recording(at);
            if let Err(detail) = self.flush(&mut socket).await
                && self.end.is_none()
            {
                tracing::warn!(%detail, "socket send failed");
                self.socket_gone(now(), EndReason::TransportFailed { detail });
            }
        }
        self.finish(now());
        // Politely close our side; the peer may already be gone.
        let _ = tokio::time::timeout(Duration::from_millis(500), socket.close()).await;
        self.finish_recording().await;
        self.summary
    }

    fn next_wake(&self) -> Option<Instant> {
        let at = now();
        [
            self.engine.poll_timeout(),
            self.pacer.poll_timeout(at),
            self.started_at.map(|_| self.next_ping_at),
            self.stt_reopen_at,
            self.reply.as_ref().and_then(|r| r.first_chunk_deadline),
            (!self.synth_waiting.is_empty())
                .then(|| self.synth_progress_at + self.synth_progress_guard()),
            match self.ending {
                Ending::HangingUp { deadline, .. } => Some(deadline),
                Ending::Running => None,
            },
        ]
        .into_iter()
        .flatten()
        .min()
    }

    // ------------------------------------------------------------------ socket input

    fn handle_ws(&mut self, at: Instant, message: WsIn, span: &tracing::Span) {
        match message {
            WsIn::Text(text) => self.handle_text(at, &text, span),
            WsIn::Binary(bytes) => {
                tracing::warn!(
                    len = bytes.len(),
                    "binary WebSocket frame ignored (Twilio sends text)"
                );
            }
            WsIn::Ping(payload) => {
                tracing::debug!("ping received; answering pong");
                self.outbox.push_back(WsOut::Pong(payload));
            }
            WsIn::Pong(_) => {
                let rtt_ms = self.ping_sent_at.take().map(|sent| ms_between(sent, at));
                tracing::info!(rtt_ms, "pong");
            }
            WsIn::Close => self.socket_gone(at, EndReason::SocketClosedWithoutStop),
        }
    }

    fn protocol_error(&mut self, error: &dyn Display) {
        self.protocol_errors += 1;
        if self.protocol_errors <= MAX_LOGGED_PROTOCOL_ERRORS {
            tracing::warn!(%error, count = self.protocol_errors, "Media Streams message ignored");
        }
    }

    fn handle_text(&mut self, at: Instant, text: &str, span: &tracing::Span) {
        let message = match self.validator.handle_text(text) {
            Ok(message) => message,
            Err(error) => {
                self.protocol_error(&error);
                return;
            }
        };
        if let Some(health) = self.health.as_mut() {
            health.observe_message(&message);
        }
        match message {
            InboundMessage::Connected(connected) => {
                tracing::info!(protocol = ?connected.protocol, version = ?connected.version, "WS_CONNECTED");
            }
            InboundMessage::Start(start) => self.handle_start(at, start, span),
            InboundMessage::Media(media) => {
                self.summary.media_frames_in += 1;
                let frame_ms = mulaw::duration_ms(media.payload.len());
                let frame_end_twilio_ms = media.timestamp_ms + frame_ms;
                self.latest_twilio_ms = self.latest_twilio_ms.max(frame_end_twilio_ms);
                self.current_media = Some((at, frame_end_twilio_ms));
                self.twilio_clock_anchor = Some((at, frame_end_twilio_ms));
                if let Some(recording) = self.recording.as_mut() {
                    recording.push_caller(media.timestamp_ms, &media.payload);
                }
                if let Some(stt) = &mut self.stt {
                    stt.send_audio(&media.payload);
                }
                self.engine.handle_media_frame(at, &media.payload);
            }
            InboundMessage::Dtmf(dtmf) => {
                tracing::info!(digit = %dtmf.digit, "DTMF");
                self.engine.handle_dtmf(at, dtmf.digit);
            }
            InboundMessage::Mark(mark) => {
                if let Some(turn) = mark.name.strip_suffix(FIRST_FRAME_MARK_SUFFIX) {
                    self.handle_first_frame_mark(turn);
                } else {
                    tracing::debug!(mark = %mark.name, "mark echoed");
                    self.engine.handle_mark(at, &mark.name);
                }
            }
            InboundMessage::Stop(stop) => {
                tracing::info!(call_sid = %stop.call_sid, "WS_STOP");
                self.engine.handle_stream_stop(at);
                self.end = Some(match self.ending {
                    Ending::HangingUp { why, .. } => EndReason::HungUpByAgent { why },
                    Ending::Running => EndReason::Stopped,
                });
            }
            InboundMessage::Unknown { event } => {
                tracing::debug!(%event, "unknown Media Streams event ignored");
            }
        }
    }

    fn handle_start(
        &mut self,
        at: Instant,
        start: twilio_stream::media::Start,
        span: &tracing::Span,
    ) {
        let call_sid = if start.call_sid.is_empty() {
            start
                .custom_parameters
                .get("call_sid")
                .cloned()
                .unwrap_or_default()
        } else {
            start.call_sid.clone()
        };
        span.record("call_sid", tracing::field::display(&call_sid));
        span.record("stream_sid", tracing::field::display(&start.stream_sid));
        let format = &start.media_format;
        tracing::info!(
            tracks = ?start.tracks, encoding = %format.encoding, sample_rate = format.sample_rate,
            channels = format.channels, "WS_START"
        );
        if format.bytes_per_ms() != Some(8) {
            tracing::error!(
                encoding = %format.encoding, sample_rate = format.sample_rate,
                "unexpected media format: the agent expects 8 kHz mono mu-law; audio will be wrong"
            );
        }
        self.health = Some(StreamHealth::for_format(format));
        self.started_at = Some(at);
        self.twilio_clock_anchor = Some((at, 0));
        self.start_recording(&call_sid);
        self.next_ping_at = at + self.deps.settings.keepalive_interval;
        self.call_sid = Some(call_sid.clone());
        self.stream_sid = Some(start.stream_sid.clone());
        self.media_writer = Some(MediaJsonWriter::new(&start.stream_sid));
        self.summary.call_sid = Some(call_sid.clone());
        self.summary.stream_sid = Some(start.stream_sid.clone());
        self.crm_submit(crm::WriteOp::StreamStarted {
            call_sid: call_sid.clone(),
            stream_sid: start.stream_sid.clone(),
            at_ms: wall_ms(),
        });
        self.broadcast(CallEvent::CallStarted {
            call_sid: call_sid.clone(),
            stream_sid: start.stream_sid.clone(),
        });
        self.open_stt();
        if let Some(store) = self.deps.store.clone() {
            let from_parameter = start
                .custom_parameters
                .get("from")
                .or_else(|| start.custom_parameters.get("From"))
                .cloned();
            let (tx, rx) = oneshot::channel();
            self.contact_rx = Some(rx);
            tokio::spawn(
                async move {
                    let _ = tx.send(load_contact(&store, &call_sid, from_parameter).await);
                }
                .in_current_span(),
            );
        }
        self.engine.handle_stream_start(at);
    }

    fn handle_first_frame_mark(&mut self, turn: &str) {
        let Some(id) = turn.strip_prefix('t').and_then(|n| n.parse::<u64>().ok()) else {
            return;
        };
        let latest = self.latest_twilio_ms;
        if let Some(record) = self.turns.get_mut(&id)
            && let Some(voiced) = record.caller_last_voiced_twilio_ms
        {
            let twilio_ms = latest.saturating_sub(voiced);
            record.latency.twilio_clock_ms = Some(twilio_ms);
            tracing::info!(
                turn = id,
                twilio_clock_ms = twilio_ms,
                "reply heard (Twilio clock)"
            );
        }
    }

    fn socket_gone(&mut self, at: Instant, reason: EndReason) {
        if self.end.is_some() {
            return;
        }
        self.engine.handle_stream_stop(at);
        self.end = Some(match (&self.ending, reason) {
            (Ending::HangingUp { why, .. }, _) => EndReason::HungUpByAgent { why },
            (Ending::Running, reason) => reason,
        });
    }

    // ------------------------------------------------------------------ backend input

    fn open_stt(&mut self) {
        let (Some(client), Some(call_sid)) = (&self.deps.stt, &self.call_sid) else {
            return;
        };
        self.stt = Some(client.start(call_sid));
        self.stt_reopen_at = None;
    }

    fn handle_stt(&mut self, at: Instant, event: Option<SttEvent>) {
        match event {
            Some(SttEvent::Partial { text, stability }) => {
                self.stt_failures = 0;
                tracing::info!(%text, stability, "STT_PARTIAL");
                self.broadcast_transcript(&text, false);
                self.engine.handle_stt_partial(at, &text, stability);
            }
            Some(SttEvent::Final {
                text, confidence, ..
            }) => {
                self.stt_failures = 0;
                self.last_final_at = Some(at);
                tracing::info!(%text, confidence, "STT_FINAL");
                self.broadcast_transcript(&text, true);
                self.engine.handle_stt_final(at, &text);
            }
            Some(SttEvent::StreamRestarted { reason }) => {
                self.summary.stt_restarts += 1;
                tracing::info!(%reason, "STT stream restarted");
            }
            Some(SttEvent::ModelFallback { refused_model }) => {
                tracing::warn!(%refused_model, "STT model refused; using the default model");
            }
            Some(SttEvent::Failed { error }) => self.stt_lost(at, &error.to_string()),
            None => self.stt_lost(at, "the STT session ended"),
        }
    }

    /// The speech client gave up: drop the session and reopen after a back-off, keeping the call.
    fn stt_lost(&mut self, at: Instant, why: &str) {
        self.stt = None;
        self.stt_failures += 1;
        let settings = &self.deps.settings;
        let factor = 2u32.saturating_pow(self.stt_failures.saturating_sub(1).min(16));
        let delay = settings
            .stt_reopen_initial
            .saturating_mul(factor)
            .min(settings.stt_reopen_max);
        tracing::warn!(error = %why, delay_ms = ms(delay), "STT session failed; reopening without dropping the call");
        self.stt_reopen_at = Some(at + delay);
    }

    fn handle_reply(
        &mut self,
        at: Instant,
        turn: TurnId,
        chunk: Option<Result<String, ResponderError>>,
    ) {
        match chunk {
            Some(Ok(text)) => {
                if let Some(active) = self.reply.as_mut() {
                    active.first_chunk_deadline = None;
                }
                if let Some(record) = self.turns.get_mut(&turn.0)
                    && record.latency.responder_first_token_ms.is_none()
                    && let Some(requested) = record.reply_requested_at
                {
                    record.latency.responder_first_token_ms = Some(ms_between(requested, at));
                }
                // Each responder item is a whole sentence (trimmed): end it with a line break so
                // the engine sends it to synthesis now and never glues it to the next one.
                self.engine
                    .handle_reply_chunk(at, turn, &format!("{}\n", text.trim_end()));
            }
            Some(Err(error)) => {
                tracing::warn!(%error, %turn, "responder failed");
                self.reply = None;
                self.engine.handle_reply_failed(at, turn);
            }
            None => {
                self.reply = None;
                self.engine.handle_reply_done(at, turn);
            }
        }
    }

    fn handle_synth(&mut self, at: Instant, turn: TurnId, msg: Option<SynthMsg>) {
        self.synth_progress_at = at;
        match msg {
            Some(SynthMsg::Audio(audio)) => {
                self.utterance_audio_bytes += audio.len() as u64;
                self.engine.handle_tts_audio(at, turn, audio);
            }
            Some(SynthMsg::Done) => {
                self.synth.pop_front();
                self.utterance_synthesized(turn);
                self.engine.handle_tts_done(at, turn);
            }
            Some(SynthMsg::Failed(error)) => {
                self.synth.pop_front();
                self.utterance_audio_bytes = 0;
                tracing::warn!(%error, %turn, "TTS failed");
                self.engine.handle_tts_failed(at, turn);
            }
            None => {
                self.synth.pop_front();
                self.utterance_audio_bytes = 0;
                tracing::warn!(%turn, "TTS task ended without a result");
                self.engine.handle_tts_failed(at, turn);
            }
        }
    }

    fn handle_hangup_result(&mut self, at: Instant, result: Result<HangupOutcome, String>) {
        self.hangup_task = None;
        match &result {
            Ok(outcome) => tracing::info!(?outcome, "REST hang-up done; waiting for Twilio's stop"),
            Err(error) => {
                tracing::error!(%error, "REST hang-up failed; closing the stream instead");
                self.close_after_hangup(at);
            }
        }
        self.summary.hangup = Some(result);
    }

    fn close_after_hangup(&mut self, at: Instant) {
        let why = match self.ending {
            Ending::HangingUp { why, .. } => why,
            Ending::Running => "goodbye",
        };
        self.outbox.push_back(WsOut::Close);
        self.engine.handle_stream_stop(at);
        self.end = Some(EndReason::HungUpByAgent { why });
    }

    fn handle_timers(&mut self, at: Instant) {
        if self.engine.poll_timeout().is_some_and(|due| due <= at) {
            self.engine.handle_timeout(at);
        }
        if self.started_at.is_some() && self.next_ping_at <= at {
            tracing::debug!("ping");
            self.outbox
                .push_back(WsOut::Ping(Bytes::from_static(b"crmd")));
            self.ping_sent_at = Some(at);
            while self.next_ping_at <= at {
                self.next_ping_at += self.deps.settings.keepalive_interval;
            }
        }
        if self.stt_reopen_at.is_some_and(|due| due <= at) {
            self.summary.stt_reopens += 1;
            tracing::info!("reopening STT");
            self.open_stt();
        }
        if let Some(active) = &self.reply
            && active.first_chunk_deadline.is_some_and(|due| due <= at)
        {
            let turn = active.turn;
            tracing::warn!(
                %turn, timeout_ms = ms(self.deps.settings.responder_timeout),
                "responder gave no text in time; saying the fallback line"
            );
            self.reply = None;
            let fallback = self.deps.responder.fixed_lines().fallback.clone();
            self.engine
                .handle_reply_chunk(at, turn, &format!("{}\n", fallback.trim_end()));
            self.engine.handle_reply_done(at, turn);
        }
        if let Ending::HangingUp { deadline, .. } = self.ending
            && deadline <= at
        {
            tracing::warn!("Twilio did not stop the stream after the hang-up; closing the socket");
            self.close_after_hangup(at);
        }
    }

    // ------------------------------------------------------------------ engine output

    /// Feed pending immediate inputs and apply every action and event until the engine is quiet.
    fn drain(&mut self, at: Instant) {
        loop {
            let mut progressed = false;
            while let Some(action) = self.engine.poll_action() {
                progressed = true;
                self.apply_action(at, action);
            }
            while let Some(event) = self.engine.poll_event() {
                progressed = true;
                self.on_event(at, event);
            }
            if let Some(input) = self.immediate.pop_front() {
                progressed = true;
                match input {
                    ImmediateTts::Audio(turn, audio) => {
                        self.utterance_audio_bytes += audio.len() as u64;
                        self.engine.handle_tts_audio(at, turn, audio);
                    }
                    ImmediateTts::Done(turn) => {
                        self.utterance_synthesized(turn);
                        self.engine.handle_tts_done(at, turn);
                    }
                    ImmediateTts::Failed(turn) => {
                        self.utterance_audio_bytes = 0;
                        self.engine.handle_tts_failed(at, turn);
                    }
                }
            }
            if !progressed {
                break;
            }
        }
    }

    fn record(&mut self, turn: TurnId, at: Instant) -> &mut TurnRecord {
        self.turns
            .entry(turn.0)
            .or_insert_with(|| TurnRecord::new(at))
    }

    fn apply_action(&mut self, at: Instant, action: Action) {
        match action {
            Action::StartReply { turn, input } => self.start_reply(at, turn, input),
            Action::CancelReply { turn } => {
                if self.reply.as_ref().is_some_and(|r| r.turn == turn) {
                    tracing::info!(%turn, "reply cancelled");
                    self.reply = None;
                }
            }
            Action::Synthesize { turn, text, kind } => self.synthesize(at, turn, text, kind),
            Action::CancelSynthesis { turn } => {
                // The engine runs one agent turn at a time, so every job belongs to `turn`
                // (or to an older, already stale one): drop them all, aborting their requests.
                tracing::debug!(%turn, jobs = self.synth.len(), waiting = self.synth_waiting.len(), "synthesis cancelled");
                self.synth.clear();
                self.synth_waiting.clear();
                self.utterance_audio_bytes = 0;
                self.immediate
                    .retain(|input| !matches!(input, ImmediateTts::Audio(t, _) | ImmediateTts::Done(t) | ImmediateTts::Failed(t) if *t == turn));
            }
            Action::Play { turn, audio } => {
                tracing::debug!(%turn, audio_ms = mulaw::duration_ms(audio.len()), "play");
                self.pacer.push_audio(turn, &audio);
                let record = self.record(turn, at);
                let first_play = !record.first_play_seen;
                record.first_play_seen = true;
                if record.latency.tts_first_byte_ms.is_none()
                    && let Some(requested) = record.first_synth_at
                {
                    record.latency.tts_first_byte_ms = Some(ms_between(requested, at));
                }
                let measure_on_twilio_clock = record.caller_last_voiced_twilio_ms.is_some();
                if first_play && measure_on_twilio_clock {
                    self.pacer.insert_mark_after_first_frame(
                        turn,
                        format!("{turn}{FIRST_FRAME_MARK_SUFFIX}"),
                    );
                }
            }
            Action::SendMark { turn, name } => self.pacer.push_mark(turn, name),
            Action::Clear => {
                let dropped = self.pacer.clear();
                // Twilio drops what it has not played yet: keep it out of the recording.
                self.recording_agent_pending
                    .retain(|(plays_at, _)| *plays_at <= at);
                self.summary.clears_sent += 1;
                if let Some(stream_sid) = &self.stream_sid {
                    self.outbox.push_back(WsOut::Text(clear_json(stream_sid)));
                }
                tracing::info!(dropped_frames = dropped, "CLEAR sent (barge-in)");
            }
            Action::Hangup { reason } => {
                tracing::info!(?reason, "engine asks to hang up");
                self.begin_hangup(at, "no_response");
            }
        }
    }

    fn start_reply(&mut self, at: Instant, turn: TurnId, input: turn::CallerInput) {
        let input = match input {
            turn::CallerInput::Speech { text } => CallerInput::Text(text),
            turn::CallerInput::Dtmf { digits } => match digits.chars().last() {
                Some(digit) => CallerInput::Dtmf(digit),
                None => CallerInput::Text(String::new()),
            },
        };
        let previous_awaiting = self.awaiting.take();
        let ctx = CallContext {
            call_id: self.call_sid.clone().unwrap_or_default(),
            contact_name: self.contact.name.clone(),
            contact_phone: self.contact.phone.clone(),
            history: self.history.iter().cloned().collect(),
            channel: Channel::Voice,
            awaiting: previous_awaiting.clone(),
        };
        let reply = self.deps.responder.respond(&input, &ctx);
        tracing::info!(%turn, intent = %reply.meta.intent, caller = %input.as_history_text(), "reply started");
        self.awaiting = reply.awaiting.clone();
        let speech_end_at = self.speech_ended_at;
        let voiced = self.last_voiced_twilio_ms;
        let speech_started_ms = self.speech_started_wall_ms;
        let record = self.record(turn, at);
        record.kind = Some(UtteranceKind::Reply);
        record.caller_text = Some(input.as_history_text());
        record.effects = reply.effects;
        record.previous_awaiting = previous_awaiting;
        record.reply_requested_at = Some(at);
        record.reply_fixed_text = reply.meta.fixed_text;
        if matches!(input, CallerInput::Text(_)) {
            record.speech_end_at = speech_end_at;
            record.caller_last_voiced_twilio_ms = voiced;
            if let Some(started_ms) = speech_started_ms {
                record.caller_started_ms = started_ms;
            }
        }
        self.reply = Some(ActiveReply {
            turn,
            chunks: reply.chunks,
            first_chunk_deadline: Some(at + self.deps.settings.responder_timeout),
        });
    }

    fn synthesize(&mut self, at: Instant, turn: TurnId, text: String, kind: UtteranceKind) {
        let call_sid = self.call_sid.clone().unwrap_or_default();
        self.broadcast(CallEvent::AgentText {
            call_sid,
            turn: turn.0,
            kind: kind_name(kind),
            text: text.clone(),
        });
        let record = self.record(turn, at);
        record.kind.get_or_insert(kind);
        record.first_synth_at.get_or_insert(at);
        // Fixed lines (greeting, reprompts, ...) and fixed script replies recur across calls:
        // one synthesis serves them all, and every call plays the same shared audio.
        let use_cache = kind != UtteranceKind::Reply || record.reply_fixed_text;
        if !record.agent_text.is_empty() {
            record.agent_text.push(' ');
        }
        record.agent_text.push_str(text.trim());
        tracing::info!(%turn, kind = kind_name(kind), %text, "synthesize");
        let Some(tts) = self.deps.tts.clone() else {
            tracing::warn!(%turn, "no TTS configured; the turn cannot be spoken");
            self.immediate.push_back(ImmediateTts::Failed(turn));
            return;
        };
        // Jobs deliver in order, so a cached line can skip the queue only when it is empty.
        if self.synth.is_empty()
            && self.synth_waiting.is_empty()
            && let Some(audio) = tts.cached(&text)
        {
            tracing::debug!(%turn, "synthesis served from the TTS cache");
            self.immediate.push_back(ImmediateTts::Audio(turn, audio));
            self.immediate.push_back(ImmediateTts::Done(turn));
            return;
        }
        self.synth_waiting.push_back(WaitingSynth {
            turn,
            text,
            use_cache,
        });
        self.start_due_synthesis(at);
    }

    /// A quarter of the engine's `response_timeout_ms`: the longest a waiting sentence waits
    /// after synthesis last made progress.
    fn synth_progress_guard(&self) -> Duration {
        Duration::from_millis(u64::from(self.deps.turn_config.response_timeout_ms / 4))
    }

    /// Starts waiting sentences, in order, while fewer than [`SYNTH_MAX_RUNNING`] run and less
    /// than [`SYNTH_LOOKAHEAD`] of audio is left to play (or synthesis has made no progress for
    /// the guard interval).
    fn start_due_synthesis(&mut self, at: Instant) {
        if self.synth_waiting.is_empty() {
            return;
        }
        let Some(tts) = self.deps.tts.clone() else {
            return;
        };
        while self.synth.len() < SYNTH_MAX_RUNNING {
            let stalled = at >= self.synth_progress_at + self.synth_progress_guard();
            if !stalled && self.pacer.audio_ahead(at) >= SYNTH_LOOKAHEAD {
                break;
            }
            let Some(next) = self.synth_waiting.pop_front() else {
                break;
            };
            self.synth_progress_at = at;
            self.synth.push_back(SynthJob::spawn(
                tts.clone(),
                next.turn,
                next.text,
                next.use_cache,
            ));
        }
    }

    fn on_event(&mut self, at: Instant, event: Event) {
        match event {
            Event::StateChanged { from, to, .. } => {
                tracing::info!(from = %from, to = %to, "state");
                let call_sid = self.call_sid.clone().unwrap_or_default();
                self.broadcast(CallEvent::StateChanged {
                    call_sid,
                    from: from.to_string(),
                    to: to.to_string(),
                });
            }
            Event::CallerSpeechStarted { at: started } => {
                let ago = i64::try_from(ms_between(started, at)).unwrap_or(0);
                self.speech_started_wall_ms = Some(wall_ms() - ago);
                tracing::debug!("caller speech started");
            }
            Event::CallerSpeechEnded { at: ended } => {
                self.speech_ended_at = Some(ended);
                if let Some((frame_at, frame_end_ms)) = self.current_media {
                    let back = ms_between(ended, frame_at);
                    self.last_voiced_twilio_ms = Some(frame_end_ms.saturating_sub(back));
                }
                tracing::debug!("caller speech ended");
            }
            Event::EndOfUtterance {
                turn,
                text,
                silence_ms,
                source,
            } => {
                tracing::info!(%turn, %text, silence_ms, ?source, "end of utterance");
                let lag = match (source, self.last_final_at, self.speech_ended_at) {
                    (turn::TranscriptSource::Final, Some(final_at), Some(ended)) => {
                        Some(ms_between(ended, final_at))
                    }
                    _ => None,
                };
                let record = self.record(turn, at);
                record.latency.eou_ms = Some(silence_ms);
                record.latency.stt_final_lag_ms = lag;
            }
            Event::TurnStarted { turn, kind } => {
                if kind == UtteranceKind::Greeting {
                    self.summary.greetings += 1;
                }
                let record = self.record(turn, at);
                record.kind = Some(kind);
                record.started_at = at;
                tracing::info!(%turn, kind = kind_name(kind), "turn started");
            }
            Event::TurnEnded {
                turn,
                kind,
                outcome,
                audio_ms,
                heard_ms,
            } => self.turn_ended(at, turn, kind, outcome, audio_ms, heard_ms),
            Event::BargeIn {
                turn,
                cause,
                latency_ms,
                heard_text,
                heard_ms,
            } => {
                tracing::info!(%turn, ?cause, latency_ms, heard_ms, %heard_text, "BARGE_IN");
                let call_sid = self.call_sid.clone().unwrap_or_default();
                self.broadcast(CallEvent::BargeIn {
                    call_sid,
                    turn: turn.0,
                    latency_ms,
                    heard_text: heard_text.clone(),
                });
                self.record(turn, at).heard_text = Some(heard_text);
            }
            Event::CallerInput { turn, input } => tracing::debug!(%turn, ?input, "caller input"),
            Event::Reprompt { turn, count } => tracing::info!(%turn, count, "reprompt"),
            Event::InputIgnored { reason, .. } => tracing::debug!(?reason, "input ignored"),
            other => tracing::debug!(?other, "turn event"),
        }
    }

    fn turn_ended(
        &mut self,
        at: Instant,
        turn: TurnId,
        kind: UtteranceKind,
        outcome: TurnOutcome,
        audio_ms: u64,
        heard_ms: u64,
    ) {
        let record = self
            .turns
            .remove(&turn.0)
            .unwrap_or_else(|| TurnRecord::new(at));
        tracing::info!(
            %turn, kind = kind_name(kind), outcome = outcome_name(outcome), audio_ms, heard_ms,
            MEDIA_TX_frames = record.frames_sent, MEDIA_TX_bytes = record.bytes_sent, "MEDIA_TX"
        );
        let call_sid = self.call_sid.clone().unwrap_or_default();
        if outcome == TurnOutcome::Superseded {
            // The caller kept talking; the input is answered again with the new words.
            self.awaiting = record.previous_awaiting;
            return;
        }
        let interrupted = outcome == TurnOutcome::Interrupted;
        let heard_text = if interrupted {
            Some(record.heard_text.clone().unwrap_or_default())
        } else {
            None
        };
        let mut end_call = false;
        for effect in &record.effects {
            match effect {
                ResponderEffect::EndCall => end_call = true,
                other => {
                    tracing::info!(effect = ?other, "responder effect");
                    self.summary.effects.push(other.clone());
                    self.submit_task(other, record.caller_text.as_deref());
                    self.broadcast(CallEvent::Effect {
                        call_sid: call_sid.clone(),
                        effect: other.clone(),
                    });
                }
            }
        }
        if let Some(caller_text) = &record.caller_text {
            self.push_history(HistorySpeaker::Caller, caller_text.clone());
            self.append_turn(crm::NewTurn {
                call_sid: call_sid.clone(),
                seq: 0,
                speaker: crm::Speaker::Caller,
                text: caller_text.clone(),
                heard_text: None,
                interrupted: false,
                started_at_ms: record.caller_started_ms,
                ended_at_ms: None,
                latency_json: None,
            });
        }
        if !record.agent_text.is_empty() {
            let said = heard_text
                .clone()
                .unwrap_or_else(|| record.agent_text.clone());
            if !said.is_empty() {
                self.push_history(HistorySpeaker::Agent, said);
            }
            let latency_json = serde_json::to_value(&record.latency).ok();
            self.append_turn(crm::NewTurn {
                call_sid: call_sid.clone(),
                seq: 0,
                speaker: crm::Speaker::Agent,
                text: record.agent_text.clone(),
                heard_text: heard_text.clone(),
                interrupted,
                started_at_ms: record.started_ms,
                ended_at_ms: Some(wall_ms()),
                latency_json,
            });
        }
        self.summary.turns.push(TurnSummary {
            turn: turn.0,
            kind: kind_name(kind),
            caller_text: record.caller_text.clone(),
            agent_text: record.agent_text.clone(),
            heard_text,
            outcome: outcome_name(outcome),
            audio_ms,
            frames_sent: record.frames_sent,
            bytes_sent: record.bytes_sent,
            latency: record.latency.clone(),
        });
        if end_call && matches!(outcome, TurnOutcome::Played | TurnOutcome::PlayedByFallback) {
            self.begin_hangup(at, "goodbye");
        }
    }

    /// Queues a responder effect as a CRM follow-up task. `seq` counts the call's tasks, so a
    /// writer retry of the same task is stored once.
    fn submit_task(&mut self, effect: &ResponderEffect, caller_text: Option<&str>) {
        let Some(call_sid) = self.call_sid.clone() else {
            return;
        };
        let known_phone = |phone: Option<&String>| phone.filter(|p| crm::is_e164(p)).cloned();
        let (kind, text, phone, preferred_time) = match effect {
            ResponderEffect::LeaveMessage { text } => (
                crm::TaskKind::Message,
                text.clone(),
                known_phone(self.contact.phone.as_ref()),
                None,
            ),
            ResponderEffect::BookCallback {
                phone,
                preferred_time,
            } => (
                crm::TaskKind::Callback,
                caller_text.unwrap_or_default().to_owned(),
                known_phone(phone.as_ref()).or_else(|| known_phone(self.contact.phone.as_ref())),
                preferred_time.clone(),
            ),
            // Not a follow-up (and new effects are not tasks until someone decides they are).
            _ => return,
        };
        let seq = self.task_seq;
        self.task_seq += 1;
        tracing::info!(task_seq = seq, kind = kind.as_str(), "CRM task queued");
        self.crm_submit(crm::WriteOp::Task(crm::NewTask {
            call_sid,
            seq,
            contact_phone: phone,
            kind,
            text: text.chars().take(MAX_TASK_TEXT_CHARS).collect(),
            preferred_time: preferred_time.map(|t| t.chars().take(200).collect()),
            at_ms: wall_ms(),
        }));
    }

    /// One `Synthesize` finished delivering audio: its length, once per utterance, with the
    /// call id (the speech crate logs its own copy at debug level only).
    fn utterance_synthesized(&mut self, turn: TurnId) {
        let bytes = std::mem::take(&mut self.utterance_audio_bytes);
        let audio_ms = mulaw::duration_ms(usize::try_from(bytes).unwrap_or(usize::MAX));
        tracing::info!(%turn, TTS_LEN_ms = audio_ms, "TTS_LEN_ms");
    }

    fn push_history(&mut self, speaker: HistorySpeaker, text: String) {
        self.history.push_back(HistoryTurn { speaker, text });
        while self.history.len() > self.deps.settings.history_turns {
            self.history.pop_front();
        }
    }

    fn append_turn(&mut self, mut turn: crm::NewTurn) {
        turn.seq = self.crm_seq;
        self.crm_seq += 1;
        self.crm_submit(crm::WriteOp::AppendTurn(turn));
    }

    fn begin_hangup(&mut self, at: Instant, why: &'static str) {
        if matches!(self.ending, Ending::HangingUp { .. }) || self.end.is_some() {
            return;
        }
        // No further turns: the engine stops (a no-op when it already ended itself), and
        // nothing the caller says now needs transcribing.
        self.engine.handle_stream_stop(at);
        self.stt = None;
        self.stt_reopen_at = None;
        self.ending = Ending::HangingUp {
            why,
            deadline: at + self.deps.settings.hangup_grace,
        };
        match (&self.deps.twilio_rest, &self.call_sid) {
            (Some(rest), Some(call_sid)) => {
                tracing::info!(why, "hanging up through Twilio's REST API");
                let rest = rest.clone();
                let call_sid = call_sid.clone();
                self.hangup_task = Some(tokio::spawn(
                    async move { rest.hangup(&call_sid).await }.in_current_span(),
                ));
            }
            _ => {
                tracing::info!(
                    why,
                    "no Twilio REST client; ending the call by closing the stream"
                );
                self.close_after_hangup(at);
            }
        }
    }

    // ------------------------------------------------------------------ output

    fn pump_audio(&mut self, at: Instant) {
        // Taken for the loop (and put back below) so nothing is cloned per call of this.
        let Some(writer) = self.media_writer.take() else {
            return;
        };
        while let Some(item) = self.pacer.poll_send(at) {
            match item {
                Outgoing::Media { turn, payload } => {
                    self.outbox.push_back(WsOut::Text(writer.to_json(&payload)));
                    // Counted in 20 ms frames whatever the message size (MEDIA_OUT_CHUNK_MS).
                    let frames = payload.len().div_ceil(mulaw::FRAME_BYTES) as u64;
                    self.summary.media_frames_out += frames;
                    if self.recording.is_some() {
                        let plays_at = self.pacer.last_frame_plays_at().unwrap_or(at);
                        self.recording_agent_pending
                            .push_back((plays_at, payload.clone()));
                    }
                    let Some(record) = self.turns.get_mut(&turn.0) else {
                        continue;
                    };
                    record.frames_sent += frames;
                    record.bytes_sent += payload.len() as u64;
                    if !record.first_frame_sent {
                        record.first_frame_sent = true;
                        self.first_frame_sent(at, turn);
                    }
                }
                Outgoing::Mark { name, .. } => {
                    if let Some(stream_sid) = &self.stream_sid {
                        self.outbox
                            .push_back(WsOut::Text(mark_json(stream_sid, &name)));
                    }
                }
            }
        }
        if let Some(lateness) = self.pacer.take_lateness()
            && let Some(stats) = &self.deps.media_lateness
        {
            stats.record(lateness);
        }
        self.media_writer = Some(writer);
    }

    fn first_frame_sent(&mut self, at: Instant, turn: TurnId) {
        let call_sid = self.call_sid.clone().unwrap_or_default();
        let Some(record) = self.turns.get_mut(&turn.0) else {
            return;
        };
        if let Some(requested) = record.reply_requested_at {
            record.latency.first_frame_after_eou_ms = Some(ms_between(requested, at));
        }
        if let Some(ended) = record.speech_end_at {
            record.latency.speech_end_to_first_frame_ms = Some(ms_between(ended, at));
        }
        let started = ms_between(record.started_at, at);
        let latency = record.latency.clone();
        let kind = record.kind.map_or("unknown", kind_name);
        tracing::info!(
            %turn, kind, since_turn_start_ms = started,
            eou_ms = latency.eou_ms, stt_final_lag_ms = latency.stt_final_lag_ms,
            responder_first_token_ms = latency.responder_first_token_ms,
            tts_first_byte_ms = latency.tts_first_byte_ms,
            first_frame_after_eou_ms = latency.first_frame_after_eou_ms,
            speech_end_to_first_frame_ms = latency.speech_end_to_first_frame_ms,
            "first frame sent"
        );
        if record.reply_requested_at.is_some() {
            self.broadcast(CallEvent::Latency {
                call_sid,
                turn: turn.0,
                latency,
            });
        }
    }

    async fn flush<S>(&mut self, socket: &mut S) -> Result<(), String>
    where
        S: Sink<WsOut> + Unpin,
        <S as Sink<WsOut>>::Error: Display,
    {
        if self.outbox.is_empty() {
            return Ok(());
        }
        while let Some(message) = self.outbox.pop_front() {
            if message == WsOut::Close {
                self.outbox.clear();
                return socket.send(WsOut::Close).await.map_err(|e| e.to_string());
            }
            socket.feed(message).await.map_err(|e| e.to_string())?;
        }
        socket.flush().await.map_err(|e| e.to_string())
    }

    fn finish(&mut self, at: Instant) {
        self.engine.handle_stream_stop(at);
        self.drain(at);
        self.feed_recording(at);
        self.stt = None;
        self.synth.clear();
        self.synth_waiting.clear();
        self.reply = None;
        let end_reason = self
            .end
            .clone()
            .unwrap_or(EndReason::SocketClosedWithoutStop);
        self.summary.end_reason = end_reason.clone();
        self.summary.duration_ms = self.started_at.map_or(0, |s| ms_between(s, at));
        self.summary.inbound_health = self.health.as_ref().map(StreamHealth::snapshot);
        let Some(call_sid) = self.call_sid.clone() else {
            tracing::info!(?end_reason, "socket ended before any start message");
            return;
        };
        let ended_ms = wall_ms();
        let (status, error) = match &end_reason {
            EndReason::Stopped => ("completed", None),
            EndReason::HungUpByAgent { .. } => ("completed", None),
            EndReason::SocketClosedWithoutStop => (
                "completed",
                Some("socket closed without a stop message".to_string()),
            ),
            // A reset socket is how a dropped call often looks: the call still completed.
            EndReason::TransportFailed { detail } => ("completed", Some(detail.clone())),
        };
        self.crm_submit(crm::WriteOp::StreamEvent {
            call_sid: call_sid.clone(),
            event: crm::StreamEventRecord {
                kind: "stream-ended".to_string(),
                stream_sid: self.stream_sid.clone(),
                error,
                at_ms: ended_ms,
            },
        });
        self.crm_submit(crm::WriteOp::CallEnded {
            call_sid: call_sid.clone(),
            at_ms: ended_ms,
            status: status.to_string(),
        });
        tracing::info!(
            ?end_reason,
            duration_ms = self.summary.duration_ms,
            turns = self.summary.turns.len(),
            media_in = self.summary.media_frames_in,
            media_out = self.summary.media_frames_out,
            clears = self.summary.clears_sent,
            "call ended"
        );
        self.broadcast(CallEvent::CallEnded {
            call_sid,
            end_reason,
            duration_ms: self.summary.duration_ms,
        });
    }

    // ------------------------------------------------------------------ recording

    fn start_recording(&mut self, call_sid: &str) {
        let Some(dir) = &self.deps.recordings_dir else {
            return;
        };
        match RecordingTask::start(dir, call_sid, RECORDING_QUEUE_CHUNKS) {
            Ok(task) => {
                tracing::info!(dir = %dir.display(), "recording the call");
                self.recording = Some(task);
            }
            Err(error) => {
                tracing::error!(%error, dir = %dir.display(), "cannot record this call; it goes on unrecorded (check RECORDINGS_DIR)");
            }
        }
    }

    /// Where `instant` falls on Twilio's stream clock (ms since `start`), from the latest
    /// inbound frame: its end timestamp corresponds to its arrival.
    fn twilio_ms_at(&self, instant: Instant) -> u64 {
        let Some((anchor_at, anchor_ms)) = self.twilio_clock_anchor else {
            return 0;
        };
        if instant >= anchor_at {
            anchor_ms.saturating_add(ms(instant - anchor_at))
        } else {
            anchor_ms.saturating_sub(ms(anchor_at - instant))
        }
    }

    /// Moves agent frames whose play time has come into the recording.
    fn feed_recording(&mut self, at: Instant) {
        if self.recording.is_none() {
            self.recording_agent_pending.clear();
            return;
        }
        while let Some((plays_at, _)) = self.recording_agent_pending.front() {
            if *plays_at > at {
                break;
            }
            let plays_at = *plays_at;
            let twilio_ms = self.twilio_ms_at(plays_at);
            if let (Some((_, payload)), Some(recording)) = (
                self.recording_agent_pending.pop_front(),
                self.recording.as_mut(),
            ) {
                recording.push_agent(twilio_ms, &payload);
            }
        }
    }

    /// Closes the recording file and queues its reference to the call.
    async fn finish_recording(&mut self) {
        let Some(recording) = self.recording.take() else {
            return;
        };
        // Frames still waiting to play when the call ended were never heard.
        self.recording_agent_pending.clear();
        let dropped = recording.stats().dropped_chunks;
        self.summary.recording_dropped_chunks = dropped;
        match tokio::time::timeout(RECORDING_FINISH_TIMEOUT, recording.finish(wall_ms())).await {
            Ok(Ok(finished)) => {
                tracing::info!(
                    path = %finished.path, duration_ms = finished.duration_ms,
                    size_bytes = finished.size_bytes, dropped_chunks = dropped,
                    "call recording finished"
                );
                self.crm_submit(crm::WriteOp::Recording(finished.clone()));
                if self.deps.recording_format == crm::recording::RecordingFormat::Opus {
                    self.encode_recording_later(finished.clone());
                }
                self.summary.recording = Some(finished);
            }
            Ok(Err(error)) => {
                tracing::error!(%error, "call recording could not be finished; the call has no recording");
            }
            Err(_) => {
                tracing::error!(
                    timeout_ms = ms(RECORDING_FINISH_TIMEOUT),
                    "call recording did not finish in time; the call has no recording"
                );
            }
        }
    }

    /// Queues the finished spool for encoding to Ogg Opus after the call. With a CRM, the
    /// encoded file replaces the spool's reference (and the spool is deleted once it has);
    /// without one, the Ogg file replaces the spool on disk. If either step fails the spool
    /// stays: it is a complete, playable WAV.
    fn encode_recording_later(&self, spool: crm::NewRecording) {
        let done =
            crm::recording::replace_spool_when_encoded(self.deps.crm.clone(), spool.path.clone());
        let queued =
            crm::recording::RecordingPool::shared().and_then(|pool| pool.encode_later(spool, done));
        if let Err(error) = queued {
            tracing::error!(%error, "call recording not queued for encoding; the call keeps its WAV spool");
        }
    }

    fn crm_submit(&self, op: crm::WriteOp) {
        if let Some(writer) = &self.deps.crm
            && let Err(error) = writer.submit(op)
        {
            tracing::error!(%error, "CRM write not queued");
        }
    }

    fn broadcast(&self, event: CallEvent) {
        if let Some(events) = &self.deps.events {
            // No subscriber is fine: the console may not be open.
            let _ = events.send(event);
        }
    }

    fn broadcast_transcript(&self, text: &str, is_final: bool) {
        let call_sid = self.call_sid.clone().unwrap_or_default();
        self.broadcast(CallEvent::Transcript {
            call_sid,
            text: text.to_string(),
            is_final,
        });
    }
}

async fn load_contact(
    store: &crm::Store,
    call_sid: &str,
    from_parameter: Option<String>,
) -> ContactInfo {
    let phone = match from_parameter {
        Some(from) => Some(from),
        None => match store.get_call(call_sid).await {
            Ok(call) => call.from,
            Err(error) => {
                tracing::info!(%error, "no call row for the caller's number");
                None
            }
        },
    };
    let name = match &phone {
        Some(phone) => match store.find_contact_by_phone(phone).await {
            Ok(contact) => contact.and_then(|c| c.display_name),
            Err(error) => {
                tracing::warn!(%error, "contact lookup failed");
                None
            }
        },
        None => None,
    };
    ContactInfo { phone, name }
}

//! Wires the call session (`crates/call`) into the edge: builds the shared [`CallDeps`] from the
//! configuration and adapts axum's WebSocket to the driver's transport.
//!
//! Which handler answers `/ws/twilio-media`:
//! - **live**: Google STT and TTS are reachable — either credentials are configured, or both
//!   endpoints are plaintext `http://` (a local speech proxy or stand-in, where credentials are
//!   optional). Calls get the full agent.
//! - **offline fallback**: otherwise. Calls hear the short pre-recorded message shipped in the
//!   binary and are hung up cleanly — never silence.

use std::sync::Arc;
use std::time::Duration;

use axum::extract::ws::{Message, WebSocket};
use call::{
    CallDeps, CallEvent, LlmConfig, LlmResponder, Responder, Script, ScriptedResponder,
    TransportError, TwilioRest, WsIn, WsOut,
};
use edge::config::ResponderKind;
use edge::{
    Config, ConfigError, MediaStreamContext, MediaStreamHandler, OfflineFallbackHandler,
    StartupError,
};
use futures::future::BoxFuture;
use futures::{SinkExt, StreamExt};
use speech::{GoogleCredentials, SttClient, SttConfig, TtsClient, TtsConfig};
use tokio::sync::broadcast;
use tokio::task::JoinHandle;
use turn::TurnConfig;

/// Capacity of the CRM write queue shared by all calls. Room is only allocated while used (the
/// queue grows in blocks), so a large capacity costs nothing until a burst needs it: 2,000 calls
/// ending in the same second on a saturated machine queued more than 8,192 writes.
const CRM_QUEUE_CAPACITY: usize = 65_536;
/// New calls are refused (busy) while the CRM write queue is fuller than this share of its
/// capacity: the calls already running keep room for what they still have to store.
const CRM_QUEUE_ADMISSION_LIMIT_PERCENT: usize = 50;
/// How often the runtime's timer lateness is measured.
const RUNTIME_LAG_PERIOD: Duration = Duration::from_millis(100);
/// Capacity of the live call-event broadcast (a console that lags further drops events).
const EVENTS_CAPACITY: usize = 4096;

/// How calls are answered.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum CallMode {
    /// The full agent: STT, turn-taking, responder, TTS.
    Live,
    /// The pre-recorded "unavailable" message, then a clean hang-up.
    OfflineFallback,
}

/// Everything the binary needs to answer calls and shut down cleanly.
pub struct CallWiring {
    /// The handler given to the edge for `/ws/twilio-media`.
    pub handler: Arc<dyn MediaStreamHandler>,
    /// Live or offline fallback.
    pub mode: CallMode,
    /// The queued CRM writer (flushed at shutdown, before the database closes).
    pub writer: crm::CrmWriter,
    /// The writer task.
    pub writer_task: JoinHandle<()>,
    /// Live call events (for the console and metrics).
    pub events: broadcast::Sender<CallEvent>,
    /// The shared call dependencies (None in offline-fallback mode).
    pub deps: Option<Arc<CallDeps>>,
    /// How late the runtime runs timers (for admission control and `/metrics`).
    pub runtime_lag: Arc<edge::admission::RuntimeLag>,
    /// The live console, events and metrics (fed by `events`).
    pub console: console::Console,
}

impl std::fmt::Debug for CallWiring {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("CallWiring")
            .field("mode", &self.mode)
            .field("writer_depth", &self.writer.depth())
            .field("deps", &self.deps)
            .finish_non_exhaustive()
    }
}

/// Reports an overload, so new calls get a busy signal ([`edge::Admission::set_overload_probe`]):
/// - while the runtime runs its timers more than `lag_limit` (`OVERLOAD_LAG_MS`, 10 ms by
///   default) late on average: the machine is saturated and every call's audio is that late
///   already. Measured on 2 cores (`docs/PERFORMANCE.md`): about 0.5 ms up to 1,000 calls, 7 ms
///   at 1,600, 30-100 ms past 1,800;
/// - while the CRM write queue of `writer` is more than half full: past that, taking more calls
///   risks refusing their writes (`QUEUE FULL`).
#[must_use]
pub fn overload_probe(
    writer: &crm::CrmWriter,
    runtime_lag: &Arc<edge::admission::RuntimeLag>,
    lag_limit: Option<Duration>,
) -> edge::OverloadProbe {
    let writer = writer.clone();
    let runtime_lag = Arc::clone(runtime_lag);
    Arc::new(move || {
        let lag = runtime_lag.smoothed();
        if let Some(limit) = lag_limit
            && lag > limit
        {
            return Some(format!(
                "the machine is saturated: timers run {} ms late on average (limit {} ms)",
                lag.as_millis(),
                limit.as_millis()
            ));
        }
        let (depth, capacity) = (writer.depth(), writer.capacity());
        (depth * 100 > capacity * CRM_QUEUE_ADMISSION_LIMIT_PERCENT).then(|| {
            format!(
                "the CRM write queue holds {depth} of {capacity} writes (over {CRM_QUEUE_ADMISSION_LIMIT_PERCENT} %)"
            )
        })
    })
}

/// Builds the call handler from the configuration. Must run inside the Tokio runtime.
pub fn build(
    config: &Config,
    store: &crm::Store,
    google_credentials: Option<Arc<GoogleCredentials>>,
) -> Result<CallWiring, StartupError> {
    let (writer, writer_task) = crm::CrmWriter::spawn(store.clone(), CRM_QUEUE_CAPACITY);
    let (events, _) = broadcast::channel(EVENTS_CAPACITY);
    let depth_writer = writer.clone();
    let runtime_lag = edge::admission::spawn_runtime_lag_monitor(RUNTIME_LAG_PERIOD);
    let lag_reader = Arc::clone(&runtime_lag);
    // Written by every call, read by `/metrics` (stays empty in offline-fallback mode, where no
    // audio is paced).
    let media_lateness = Arc::new(call::MediaLateness::default());
    let (console, _console_task) = console::Console::spawn(
        &events,
        console::ConsoleOptions {
            api_token: config
                .api_token
                .as_ref()
                .and_then(|token| console::ApiToken::new(token.expose())),
            db_queue_depth: Some(Arc::new(move || depth_writer.depth())),
            // Zero until a recording is queued (the pool starts with the first recorded call).
            recordings_pending_encode: config.recordings_dir.as_ref().map(|_| {
                Arc::new(|| {
                    crm::recording::RecordingPool::shared_if_started()
                        .map_or(0, crm::recording::RecordingPool::pending_encodes)
                }) as console::DepthProbe
            }),
            runtime_lag_us: Some(Arc::new(move || {
                usize::try_from(lag_reader.smoothed().as_micros()).unwrap_or(usize::MAX)
            })),
            media_out_lateness: Some(Arc::clone(&media_lateness)),
            ..console::ConsoleOptions::default()
        },
    );

    let speech = &config.speech;
    if google_credentials.is_none() && !speech.plaintext_endpoints() {
        tracing::warn!(
            "speech: no Google credentials (GOOGLE_APPLICATION_CREDENTIALS or GCP_CREDENTIALS_JSON), calls will get the offline fallback"
        );
        return Ok(CallWiring {
            handler: Arc::new(OfflineFallbackHandler::default()),
            mode: CallMode::OfflineFallback,
            writer,
            writer_task,
            events,
            deps: None,
            runtime_lag,
            console,
        });
    }

    let responder = build_responder(config)?;
    let stt = SttClient::new(
        SttConfig {
            endpoint: speech.speech_endpoint.clone(),
            language_code: speech.stt_language.clone(),
            alternative_language_codes: speech.stt_alt_languages.clone(),
            model: speech.stt_model.clone(),
            phrase_hints: speech.stt_phrase_hints.clone(),
            streams_per_connection: speech.stt_streams_per_connection,
            ..SttConfig::default()
        },
        google_credentials.clone(),
    )
    .map_err(|e| invalid("GOOGLE_SPEECH_ENDPOINT", e.to_string()))?;
    let tts = TtsClient::new(
        TtsConfig {
            endpoint: speech.tts_endpoint.clone(),
            voice_name: speech.tts_voice.clone(),
            language_code: speech.tts_language.clone(),
            speaking_rate: speech.tts_speaking_rate,
            streaming: speech.tts_streaming,
            streams_per_connection: speech.tts_streams_per_connection,
            ..TtsConfig::default()
        },
        google_credentials,
    )
    .map_err(|e| invalid("GOOGLE_TTS_ENDPOINT", e.to_string()))?;

    let twilio = &config.twilio;
    let twilio_rest = match (&twilio.account_sid, &twilio.auth_token) {
        (Some(sid), Some(token)) => Some(
            TwilioRest::new(&twilio.api_base, sid, token.expose())
                .map_err(|e| invalid("TWILIO_API_BASE", e.to_string()))?,
        ),
        _ => {
            tracing::warn!(
                "TWILIO_ACCOUNT_SID/TWILIO_AUTH_TOKEN not both set: calls we end are ended by closing the media stream instead of Twilio's REST API"
            );
            None
        }
    };

    let turn = &config.turn;
    let turn_config = TurnConfig {
        eou_ms: turn.eou_ms,
        speech_start_ms: turn.speech_start_ms,
        barge_in_ms: turn.barge_in_ms,
        idle_ms: turn.idle_ms,
        max_reprompts: turn.max_reprompts,
        protect_greeting: turn.protect_greeting,
        ..TurnConfig::default()
    };
    let mut deps = CallDeps::new(responder);
    deps.stt = Some(stt);
    deps.tts = Some(tts);
    deps.crm = Some(writer.clone());
    deps.store = Some(store.clone());
    deps.twilio_rest = twilio_rest;
    deps.turn_config = turn_config;
    deps.events = Some(events.clone());
    deps.settings.responder_timeout = config.responder.llm_timeout;
    deps.settings.media_chunk = Duration::from_millis(u64::from(config.turn.media_out_chunk_ms));
    deps.settings.media_burst = Duration::from_millis(u64::from(config.turn.media_out_burst_ms));
    // Stored with each call and read back by the API, possibly after a restart from another
    // working directory: keep the absolute path.
    deps.recordings_dir = config.recordings_dir.as_deref().map(|dir| {
        std::path::absolute(dir).unwrap_or_else(|error| {
            tracing::warn!(dir = %dir.display(), %error, "RECORDINGS_DIR kept relative");
            dir.to_path_buf()
        })
    });
    // Reject bad timings now (exit 2), not on the first call.
    deps.engine_config()
        .validate()
        .map_err(|e| invalid("EOU_MS", e.to_string()))?;
    deps.recording_format = config.recording_format;
    deps.media_lateness = Some(media_lateness);
    if let Some(dir) = deps.recordings_dir.clone() {
        finish_leftover_recordings(dir, writer.clone(), config.recording_format);
    }
    let deps = Arc::new(deps);

    // Synthesize the greeting and fixed lines in the background: start-up is not delayed by
    // the network, and a call arriving first synthesizes on demand.
    let warm = Arc::clone(&deps);
    tokio::spawn(async move {
        match warm.warm_tts_cache().await {
            Ok(lines) => tracing::info!(lines, "TTS cache warmed: the greeting plays at once"),
            Err(error) => tracing::warn!(
                %error,
                "TTS cache warm-up failed: the first call synthesizes its greeting on demand"
            ),
        }
    });

    Ok(CallWiring {
        handler: Arc::new(LiveCallHandler {
            deps: Arc::clone(&deps),
            console: console.clone(),
        }),
        mode: CallMode::Live,
        writer,
        writer_task,
        events,
        deps: Some(deps),
        runtime_lag,
        console,
    })
}

fn build_responder(config: &Config) -> Result<Arc<dyn Responder>, StartupError> {
    let settings = &config.responder;
    let script = match &settings.script_path {
        Some(path) => Script::load(path).map_err(|e| invalid("RESPONDER_SCRIPT", e.to_string()))?,
        None => Script::built_in().map_err(|e| invalid("RESPONDER_SCRIPT", e.to_string()))?,
    };
    match settings.kind {
        ResponderKind::Scripted => Ok(Arc::new(ScriptedResponder::new(script))),
        ResponderKind::Llm => {
            let path = settings
                .llm_system_prompt_file
                .as_ref()
                .map(|p| p.to_string_lossy().into_owned());
            let llm = LlmConfig::from_env_values(
                settings.llm_base_url.as_deref(),
                settings.llm_api_key.as_ref().map(|k| k.expose()),
                settings.llm_model.as_deref(),
                path.as_deref(),
            )
            .map_err(|e| invalid("LLM_BASE_URL", e.to_string()))?
            .ok_or_else(|| invalid("LLM_BASE_URL", "RESPONDER=llm needs LLM_BASE_URL".into()))?;
            // The script still provides the greeting, reprompts, goodbye and apology lines.
            let responder = LlmResponder::new(llm, script.fixed_lines().clone())
                .map_err(|e| invalid("LLM_BASE_URL", e.to_string()))?;
            Ok(Arc::new(responder))
        }
    }
}

fn invalid(variable: &'static str, reason: String) -> StartupError {
    StartupError::Config(ConfigError::Invalid { variable, reason })
}

/// Runs one call through [`call::run_call`] on the upgraded socket.
#[derive(Debug)]
struct LiveCallHandler {
    deps: Arc<CallDeps>,
    console: console::Console,
}

impl MediaStreamHandler for LiveCallHandler {
    fn handle(&self, socket: WebSocket, ctx: MediaStreamContext) -> BoxFuture<'static, ()> {
        let deps = Arc::clone(&self.deps);
        let console = self.console.clone();
        Box::pin(async move {
            let started = tokio::time::Instant::now();
            let summary = call::run_call(adapt(socket), deps).await;
            console.observe_call_summary(&summary);
            tracing::info!(
                request_id = %ctx.request_id,
                call_sid = summary.call_sid.as_deref().unwrap_or("-"),
                end_reason = ?summary.end_reason,
                greetings = summary.greetings,
                turns = summary.turns.len(),
                wall_ms = u64::try_from(started.elapsed().as_millis()).unwrap_or(u64::MAX),
                "call session finished"
            );
        })
    }
}

/// axum's WebSocket as the driver's `Stream<WsIn> + Sink<WsOut>`.
fn adapt(
    socket: WebSocket,
) -> impl futures::Stream<Item = Result<WsIn, TransportError>>
+ futures::Sink<WsOut, Error = axum::Error>
+ Unpin
+ Send {
    socket
        .map(|message| match message {
            Ok(Message::Text(text)) => Ok(WsIn::Text(text.as_str().to_owned())),
            Ok(Message::Binary(bytes)) => Ok(WsIn::Binary(bytes)),
            Ok(Message::Ping(bytes)) => Ok(WsIn::Ping(bytes)),
            Ok(Message::Pong(bytes)) => Ok(WsIn::Pong(bytes)),
            Ok(Message::Close(_)) => Ok(WsIn::Close),
            Err(error) => Err(TransportError(error.to_string())),
        })
        .with(|out: WsOut| {
            futures::future::ready(Ok::<_, axum::Error>(match out {
                WsOut::Text(text) => Message::Text(text.into()),
                WsOut::Ping(bytes) => Message::Ping(bytes),
                WsOut::Pong(bytes) => Message::Pong(bytes),
                WsOut::Close => Message::Close(None),
            }))
        })
}

/// What a previous run left in the recordings directory:
/// - the spools of calls a crash cut short (`.wav.part`, no longer locked by a live process)
///   are finished and attached to their calls, which never got to do it, and those calls are
///   marked ended at their last recorded audio;
/// - with Opus recordings, the WAV spools it left unencoded (it stopped before its encoders
///   were done, or crashed) are queued for encoding: each then replaces its spool in the CRM,
///   as after a call.
fn finish_leftover_recordings(
    dir: std::path::PathBuf,
    writer: crm::CrmWriter,
    format: crm::recording::RecordingFormat,
) {
    let started = std::time::SystemTime::now();
    tokio::task::spawn_blocking(move || {
        let recovered = match crm::recording::recover_cut_spools(&dir) {
            Ok(recovered) => recovered,
            Err(error) => {
                tracing::error!(%error, "could not look for recordings of calls cut by a crash");
                Vec::new()
            }
        };
        if !recovered.is_empty() {
            tracing::info!(
                count = recovered.len(),
                dir = %dir.display(),
                "finished the recordings of calls a crash cut short"
            );
        }
        for spool in &recovered {
            if let Err(error) = writer.submit(crm::WriteOp::Recording(spool.clone())) {
                tracing::error!(call_sid = %spool.call_sid, %error,
                    "recording of a call cut by a crash not attached; its WAV stays on disk");
            }
            // Its socket died with the process, so nothing else will end it: it ended with its
            // last recorded audio (the first end stored wins, so a real one is never replaced).
            let ended = crm::WriteOp::CallEnded {
                call_sid: spool.call_sid.clone(),
                at_ms: spool.at_ms,
                status: "completed".to_owned(),
            };
            if let Err(error) = writer.submit(ended) {
                tracing::error!(call_sid = %spool.call_sid, %error,
                    "a call cut by a crash could not be marked ended");
            }
        }
        if format != crm::recording::RecordingFormat::Opus {
            return;
        }
        let mut spools = match crm::recording::pending_spools(&dir, started) {
            Ok(spools) => spools,
            Err(error) => {
                tracing::error!(%error, "could not look for unencoded call recordings");
                return;
            }
        };
        // Finishing wrote their headers just now, so the listing (spools finished before this
        // start) does not hold them.
        for spool in recovered {
            if !spools.iter().any(|s| s.path == spool.path) {
                spools.push(spool);
            }
        }
        if spools.is_empty() {
            return;
        }
        let pool = match crm::recording::RecordingPool::shared() {
            Ok(pool) => pool,
            Err(error) => {
                tracing::error!(%error, "unencoded call recordings stay WAV");
                return;
            }
        };
        tracing::info!(
            count = spools.len(),
            dir = %dir.display(),
            "encoding call recordings a previous run left as WAV"
        );
        for spool in spools {
            let done = crm::recording::replace_spool_when_encoded(
                Some(writer.clone()),
                spool.path.clone(),
            );
            if let Err(error) = pool.encode_later(spool, done) {
                tracing::error!(%error, "unencoded call recordings stay WAV");
                return;
            }
        }
    });
}

/// At shutdown, after the calls have ended: lets the recording encoders finish (within
/// `limit`) so their results reach the CRM before it closes. What is left stays WAV, referenced
/// and playable, and is encoded at the next start.
pub async fn finish_recordings(limit: Duration) {
    let Some(pool) = crm::recording::RecordingPool::shared_if_started() else {
        return;
    };
    let pending = pool.pending_encodes();
    if pending == 0 {
        return;
    }
    let left = pool.wait_for_encodes(limit).await;
    if left > 0 {
        tracing::warn!(
            left,
            "call recordings still encoding at shutdown stay WAV until the next start"
        );
    } else {
        tracing::info!(encoded = pending, "pending call recordings encoded");
    }
}

/// Waits until every queued CRM write is stored (bounded: a database that stays down does not
/// hold the shutdown forever).
pub async fn flush_crm(writer: &crm::CrmWriter, limit: Duration) {
    let depth = writer.depth();
    if tokio::time::timeout(limit, writer.flush()).await.is_err() {
        tracing::error!(
            pending = writer.depth(),
            "CRM writes still pending after {}s at shutdown: the database is unreachable",
            limit.as_secs()
        );
    } else if depth > 0 {
        tracing::info!(flushed = depth, "CRM write queue flushed");
    }
}

#[cfg(test)]
mod tests {
    use std::sync::Arc;
    use std::time::Duration;

    use super::overload_probe;

    #[tokio::test(flavor = "current_thread")]
    async fn the_overload_probe_reports_a_crm_queue_more_than_half_full() {
        let store = crm::Store::connect("sqlite::memory:").await.unwrap();
        let (writer, _task) = crm::CrmWriter::spawn(store, 8);
        let lag = Arc::new(edge::admission::RuntimeLag::default());
        let probe = overload_probe(&writer, &lag, Some(Duration::from_millis(10)));
        assert_eq!(probe(), None);
        // On this single-threaded runtime the writer runs only when the test awaits, so the
        // operations stay queued.
        let end = |n: usize| crm::WriteOp::CallEnded {
            call_sid: format!("CA_PROBE_{n}"),
            at_ms: 0,
            status: "completed".to_owned(),
        };
        for n in 0..4 {
            writer.submit(end(n)).unwrap();
        }
        assert_eq!(probe(), None, "half full is still fine");
        writer.submit(end(4)).unwrap();
        assert_eq!(
            probe().as_deref(),
            Some("the CRM write queue holds 5 of 8 writes (over 50 %)")
        );
        writer.flush().await;
        assert_eq!(probe(), None);
        // A saturated runtime.
        lag.record(Duration::from_secs(2));
        assert_eq!(probe(), None, "one stall is not an overload");
        for _ in 0..40 {
            lag.record(Duration::from_millis(30));
        }
        assert!(
            probe().is_some_and(
                |reason| reason.contains("timers run 29 ms late on average (limit 10 ms)")
            ),
            "{:?}",
            probe()
        );
        // OVERLOAD_LAG_MS=0: only the queue counts.
        assert_eq!(overload_probe(&writer, &lag, None)(), None);
    }
}

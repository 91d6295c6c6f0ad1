//! The real `crmd` binary in live mode, end to end: Google's STT and TTS are the in-process
//! speech stand-in over plaintext gRPC, Twilio is `callsim` (signed webhook, TwiML, WebSocket
//! offering `audio.twilio.com`, real-time 20 ms frames, mark echoes, `stop`). Proves the wiring in
//! `bins/crmd`: the call session answers (greeting once, a reply after the caller's turn), the
//! console's `/metrics` is mounted and protected, the transcript is readable through `/api`, and
//! SIGTERM flushes the queued CRM writes (turns, recording) before the database closes.
#![allow(clippy::unwrap_used)]

use std::io::{BufRead, BufReader};
use std::process::{Child, Command, Stdio};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use callsim::audio::{CallerClip, silence_payload_base64};
use callsim::call::{CallOptions, Target, call_plan, http_client, new_identity, run_call};
use callsim::load::{LoadOptions, run_load};
use callsim::session::Ending;
use callsim::steps::Step;
use speech_standin::{StandinOptions, ToneVoice};

const BIN: &str = env!("CARGO_BIN_EXE_crmd");
const API_TOKEN: &str = "e2e-api-token-0123456789";
const AUTH_TOKEN: &str = "e2e-twilio-auth-token-0123456789";
const QUESTION: &str = "What are your opening hours?";

/// The child process, killed if the test fails before its graceful shutdown.
struct Crmd {
    child: Child,
    lines: Arc<Mutex<Vec<String>>>,
    port: u16,
}

impl Drop for Crmd {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

impl Crmd {
    fn log(&self) -> String {
        self.lines.lock().unwrap().join("\n")
    }

    /// Waits (bounded) until a log line contains `needle`.
    async fn wait_for_line(&self, needle: &str, limit: Duration) {
        let deadline = tokio::time::Instant::now() + limit;
        while !self
            .lines
            .lock()
            .unwrap()
            .iter()
            .any(|l| l.contains(needle))
        {
            assert!(
                tokio::time::Instant::now() < deadline,
                "no log line containing {needle:?} within {limit:?}; log:\n{}",
                self.log()
            );
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
    }
}

fn start_crmd(
    dir: &tempfile::TempDir,
    speech_addr: std::net::SocketAddr,
    extra_env: &[(&str, String)],
) -> Crmd {
    let speech = format!("http://{speech_addr}");
    let mut child = Command::new(BIN)
        .env_clear()
        .envs(extra_env.iter().map(|(name, value)| (*name, value)))
        .current_dir(dir.path())
        .env("PATH", std::env::var("PATH").unwrap_or_default())
        .env("PORT", "0")
        .env("DEPLOY_ID", "e2e-live")
        .env(
            "DATABASE_URL",
            format!("sqlite://{}/crmd.sqlite", dir.path().display()),
        )
        // Relative to the working directory (the temp dir): crmd stores it made absolute.
        .env("RECORDINGS_DIR", "recordings")
        .env("GOOGLE_SPEECH_ENDPOINT", &speech)
        .env("GOOGLE_TTS_ENDPOINT", &speech)
        .env("CRMD_API_TOKEN", API_TOKEN)
        .env("TWILIO_AUTH_TOKEN", AUTH_TOKEN)
        .env("RUST_LOG", "info")
        .stdout(Stdio::piped())
        .stderr(Stdio::inherit())
        .spawn()
        .unwrap();
    let stdout = child.stdout.take().unwrap();
    let lines = Arc::new(Mutex::new(Vec::new()));
    let (port_tx, port_rx) = std::sync::mpsc::channel();
    let sink = Arc::clone(&lines);
    std::thread::spawn(move || {
        for line in BufReader::new(stdout).lines().map_while(Result::ok) {
            if let Some(rest) = line.split("Listening at: http://0.0.0.0:").nth(1) {
                let port: u16 = rest.trim().parse().unwrap_or(0);
                let _ = port_tx.send(port);
            }
            sink.lock().unwrap().push(line);
        }
    });
    let port = port_rx
        .recv_timeout(Duration::from_secs(30))
        .expect("crmd logged no `Listening at:` line within 30 s");
    Crmd { child, lines, port }
}

/// Google, played by the in-process stand-in: scripted finals for [`QUESTION`], a fast
/// synthetic voice (short clips). Returns its address.
async fn start_speech_standin() -> std::net::SocketAddr {
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let speech_addr = listener.local_addr().unwrap();
    tokio::spawn(speech_standin::serve(
        listener,
        StandinOptions {
            transcripts: vec![QUESTION.to_owned()],
            voice: ToneVoice {
                chars_per_second: 60.0,
            },
            ..StandinOptions::default()
        },
    ));
    speech_addr
}

/// Waits until crmd runs live calls with its fixed lines synthesized.
async fn wait_until_live(crmd: &Crmd) {
    crmd.wait_for_line("call handler ready mode=Live", Duration::from_secs(10))
        .await;
    crmd.wait_for_line("TTS cache warmed", Duration::from_secs(20))
        .await;
}

/// Twilio, played by callsim: listen to the greeting, ask [`QUESTION`], listen to the answer,
/// hang up.
async fn ask_the_question(crmd: &Crmd) -> callsim::session::CallReport {
    let mut options =
        CallOptions::new(Target::parse(&format!("http://127.0.0.1:{}", crmd.port)).unwrap());
    options.auth_token = Some(AUTH_TOKEN.to_owned());
    let plan = Arc::new(call_plan(vec![
        Step::Listen(Duration::from_secs(15)),
        Step::Say(Arc::new(CallerClip::tone(QUESTION))),
        Step::Listen(Duration::from_secs(15)),
    ]));
    run_call(
        &http_client(),
        &options,
        plan,
        new_identity(),
        silence_payload_base64().into(),
    )
    .await
    .unwrap()
    .report
}

/// SIGTERM, then waits (bounded) for the exit; returns its status and the whole log.
async fn stop_gracefully(mut crmd: Crmd) -> (std::process::ExitStatus, String) {
    let status = Command::new("kill")
        .args(["-TERM", &crmd.child.id().to_string()])
        .status()
        .unwrap();
    assert!(status.success());
    let deadline = std::time::Instant::now() + Duration::from_secs(30);
    loop {
        if let Some(status) = crmd.child.try_wait().unwrap() {
            // The reader thread has the last lines once stdout closes; give it a moment.
            tokio::time::sleep(Duration::from_millis(50)).await;
            return (status, crmd.log());
        }
        assert!(
            std::time::Instant::now() < deadline,
            "crmd did not exit after SIGTERM:\n{}",
            crmd.log()
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_live_call_through_the_binary_is_answered_recorded_and_stored() {
    let speech_addr = start_speech_standin().await;
    let dir = tempfile::tempdir().unwrap();
    let crmd = start_crmd(&dir, speech_addr, &[]);
    wait_until_live(&crmd).await;
    let report = ask_the_question(&crmd).await;
    assert_eq!(
        report.protocol_errors, 0,
        "{:?}",
        report.protocol_error_samples
    );
    assert_eq!(report.callback_errors, 0);
    assert_eq!(report.ended_by, Ending::Stopped, "{report:?}");
    assert_eq!(report.greetings, 1, "the greeting is said exactly once");
    assert_eq!(report.turn_latencies_ms.len(), 1, "{report:?}");
    assert_eq!(report.utterances_without_reply, 0);
    // The reply waits for the end-of-utterance window (EOU_MS=500 by default).
    assert!(report.turn_latencies_ms[0] >= 450.0, "{report:?}");
    let call_sid = report.call_sid.clone();

    // The console's metrics are mounted under the edge's layers and need the API token.
    let client = reqwest::Client::builder().no_proxy().build().unwrap();
    let base = format!("http://127.0.0.1:{}", crmd.port);
    let unauthorized = client.get(format!("{base}/metrics")).send().await.unwrap();
    assert_eq!(unauthorized.status(), 401);
    assert!(unauthorized.headers().contains_key("x-app-signature"));
    let metrics = client
        .get(format!("{base}/metrics"))
        .bearer_auth(API_TOKEN)
        .send()
        .await
        .unwrap()
        .text()
        .await
        .unwrap();
    assert!(metrics.contains("crmd_calls_total 1"), "{metrics}");
    // Recording is on (RECORDINGS_DIR): the encoders' backlog is a gauge (0 or 1 by now).
    assert!(
        metrics.contains("# TYPE crmd_recordings_pending_encode gauge"),
        "{metrics}"
    );
    assert!(
        metrics.contains("crmd_turns_total{kind=\"greeting\"} 1"),
        "{metrics}"
    );
    // The call timed its own paced sends (the greeting and the reply outlast the first burst).
    let paced_sends: u64 = metrics
        .lines()
        .find_map(|line| line.strip_prefix("crmd_media_out_lateness_seconds_count "))
        .and_then(|count| count.parse().ok())
        .unwrap_or_else(|| panic!("no media lateness count in {metrics}"));
    assert!(paced_sends > 0, "{metrics}");

    // Every call-path log line carries the call id.
    crmd.wait_for_line("call session finished", Duration::from_secs(10))
        .await;
    let log = crmd.log();
    for marker in ["WS_START", "STT_FINAL", "TTS_LEN_ms", "MEDIA_TX"] {
        assert!(
            log.lines()
                .any(|l| l.contains(marker) && l.contains(&call_sid)),
            "no {marker} line with {call_sid}:\n{log}"
        );
    }

    // SIGTERM: graceful exit 0, after the queued CRM writes are flushed.
    let (exit, log) = stop_gracefully(crmd).await;
    assert_eq!(exit.code(), Some(0), "{log}");

    // Reopen the database: the call, its transcript and its recording are all there.
    let store = crm::Store::connect(&format!("sqlite://{}/crmd.sqlite", dir.path().display()))
        .await
        .unwrap();
    let detail = store.get_call_with_turns(&call_sid).await.unwrap();
    assert_eq!(
        detail.call.status.as_deref(),
        Some("completed"),
        "{detail:?}"
    );
    let caller_turns: Vec<_> = detail
        .turns
        .iter()
        .filter(|t| t.speaker == crm::Speaker::Caller)
        .collect();
    assert_eq!(caller_turns.len(), 1, "{detail:?}");
    assert_eq!(caller_turns[0].text, QUESTION);
    let agent_turns = detail
        .turns
        .iter()
        .filter(|t| t.speaker == crm::Speaker::Agent)
        .count();
    assert_eq!(agent_turns, 2, "greeting + answer: {detail:?}");
    let recording = detail.recording.expect("the call is recorded");
    let path = std::path::Path::new(&recording.path);
    assert!(
        path.is_absolute(),
        "the stored recording path survives a restart from another directory: {path:?}"
    );
    assert!(path.starts_with(dir.path().canonicalize().unwrap()) || path.starts_with(dir.path()));
    // Encoded to Ogg Opus after the call, before the graceful exit; the WAV spool is gone.
    assert_eq!(recording.codec, "opus", "{recording:?}");
    let bytes = std::fs::read(path).unwrap();
    assert_eq!(&bytes[..4], b"OggS");
    assert!(!path.with_extension("wav").exists());
    store.close().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn recordings_a_stopped_or_crashed_server_left_are_finished_and_encoded_at_the_next_start() {
    let speech_addr = start_speech_standin().await;
    let dir = tempfile::tempdir().unwrap();
    // What a previous run left: a call whose recording is still its WAV spool, and a call a
    // crash cut short (its spool never finished, never attached).
    let db_url = format!("sqlite://{}/crmd.sqlite", dir.path().display());
    let store = crm::Store::connect(&db_url).await.unwrap();
    for call_sid in ["CA_LEFT_AS_WAV", "CA_CUT_BY_CRASH"] {
        store
            .record_incoming_call(&crm::NewCall {
                call_sid: call_sid.into(),
                account_sid: None,
                from: Some("+972501234567".into()),
                to: Some("+97231234567".into()),
                direction: "inbound".into(),
                status: Some("completed".into()),
                caller_name: None,
                at_ms: 1_000,
            })
            .await
            .unwrap();
    }
    let recordings = dir.path().join("recordings");
    let record_two_seconds = |call_sid: &str| {
        let mut recorder = crm::recording::CallRecorder::create(&recordings, call_sid).unwrap();
        for frame in 0..100u64 {
            let tone: Vec<u8> = (0..160)
                .map(|i| if (i / 10) % 2 == 0 { 0x20 } else { 0xA0 })
                .collect();
            recorder.push_caller(frame * 20, &tone).unwrap();
            recorder.push_agent(frame * 20, &tone).unwrap();
        }
        recorder
    };
    let spool = record_two_seconds("CA_LEFT_AS_WAV").finish(2_000).unwrap();
    store.attach_recording(&spool).await.unwrap();
    // Dropped unfinished: its file is closed (the lock goes) as when the process dies.
    drop(record_two_seconds("CA_CUT_BY_CRASH"));
    let cut_part = recordings.join("CA_CUT_BY_CRASH.wav.part");
    assert!(cut_part.exists());
    store.close().await;

    let crmd = start_crmd(&dir, speech_addr, &[]);
    crmd.wait_for_line(
        "finished the recordings of calls a crash cut short",
        Duration::from_secs(30),
    )
    .await;
    let store = crm::Store::connect(&db_url).await.unwrap();
    let both_encoded = async {
        loop {
            let mut codecs = Vec::new();
            for call_sid in ["CA_LEFT_AS_WAV", "CA_CUT_BY_CRASH"] {
                codecs.push(store.get_recording(call_sid).await.map(|r| r.codec));
            }
            if codecs.iter().all(|c| c.as_deref().ok() == Some("opus")) {
                break;
            }
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
    };
    tokio::time::timeout(Duration::from_secs(30), both_encoded)
        .await
        .expect("both recordings encoded");
    store.close().await;
    let (exit, log) = stop_gracefully(crmd).await;
    assert_eq!(exit.code(), Some(0), "{log}");
    assert!(
        log.contains("encoding call recordings a previous run left as WAV"),
        "{log}"
    );

    let store = crm::Store::connect(&db_url).await.unwrap();
    let recording = store.get_recording("CA_LEFT_AS_WAV").await.unwrap();
    assert_eq!(recording.codec, "opus", "{recording:?}");
    assert_eq!(recording.duration_ms, Some(2_000));
    assert_eq!(&std::fs::read(&recording.path).unwrap()[..4], b"OggS");
    assert!(
        !std::path::Path::new(&spool.path).exists(),
        "the spool is replaced"
    );
    // The cut call: the audio written before the crash (both sides flushed to the file) is
    // its recording now.
    let cut = store.get_recording("CA_CUT_BY_CRASH").await.unwrap();
    assert_eq!(&std::fs::read(&cut.path).unwrap()[..4], b"OggS");
    assert_eq!(cut.duration_ms, Some(2_000), "{cut:?}");
    assert!(!cut_part.exists());
    assert!(!recordings.join("CA_CUT_BY_CRASH.wav").exists());
    let cut_call = store.get_call("CA_CUT_BY_CRASH").await.unwrap();
    assert!(
        cut_call
            .ended_at_ms
            .is_some_and(|at| (cut.created_at_ms - at).abs() < 5_000),
        "the cut call is ended at its last recorded audio: {cut_call:?}"
    );
    assert!(
        store
            .get_call("CA_LEFT_AS_WAV")
            .await
            .unwrap()
            .ended_at_ms
            .is_none(),
        "only calls a crash cut short are ended by the start"
    );
    store.close().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_llm_responder_answers_a_live_call_through_the_binary() {
    // Google and an OpenAI-compatible model, both played by the stand-in.
    let speech_addr = start_speech_standin().await;
    let llm_listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let llm_addr = llm_listener.local_addr().unwrap();
    let llm_stats = Arc::new(speech_standin::llm::LlmStats::default());
    tokio::spawn(speech_standin::llm::serve_llm(
        llm_listener,
        speech_standin::llm::LlmStandinOptions {
            first_token: Duration::from_millis(50),
            ..speech_standin::llm::LlmStandinOptions::default()
        },
        Arc::clone(&llm_stats),
    ));

    let dir = tempfile::tempdir().unwrap();
    let crmd = start_crmd(
        &dir,
        speech_addr,
        &[
            ("RESPONDER", "llm".to_owned()),
            ("LLM_BASE_URL", format!("http://{llm_addr}/v1")),
            ("LLM_MODEL", "standin".to_owned()),
        ],
    );
    wait_until_live(&crmd).await;
    let report = ask_the_question(&crmd).await;
    assert_eq!(report.ended_by, Ending::Stopped, "{report:?}");
    assert_eq!(report.greetings, 1, "{report:?}");
    assert_eq!(report.turn_latencies_ms.len(), 1, "{report:?}");
    assert_eq!(report.utterances_without_reply, 0, "{report:?}");
    assert_eq!(
        llm_stats
            .completions
            .load(std::sync::atomic::Ordering::Relaxed),
        1,
        "one caller turn, one completion"
    );
    crmd.wait_for_line("call session finished", Duration::from_secs(10))
        .await;

    // The model's words, not a scripted line, are what the caller heard and the CRM keeps.
    let (exit, log) = stop_gracefully(crmd).await;
    assert_eq!(exit.code(), Some(0), "{log}");
    let store = crm::Store::connect(&format!("sqlite://{}/crmd.sqlite", dir.path().display()))
        .await
        .unwrap();
    let detail = store.get_call_with_turns(&report.call_sid).await.unwrap();
    let agent_texts: Vec<&str> = detail
        .turns
        .iter()
        .filter(|t| t.speaker == crm::Speaker::Agent)
        .map(|t| t.text.as_str())
        .collect();
    assert_eq!(agent_texts.len(), 2, "greeting + answer: {detail:?}");
    assert_eq!(
        agent_texts[1],
        speech_standin::llm::CANNED_REPLIES[0],
        "{detail:?}"
    );
    store.close().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_load_run_reads_the_servers_own_send_lateness_from_its_metrics() {
    let speech_addr = start_speech_standin().await;
    let dir = tempfile::tempdir().unwrap();
    let crmd = start_crmd(&dir, speech_addr, &[]);
    wait_until_live(&crmd).await;
    let mut call =
        CallOptions::new(Target::parse(&format!("http://127.0.0.1:{}", crmd.port)).unwrap());
    call.auth_token = Some(AUTH_TOKEN.to_owned());
    let report = run_load(LoadOptions {
        call,
        calls: 4,
        ramp: Duration::from_secs(1),
        duration: Duration::from_secs(8),
        server_pid: Some(crmd.child.id()),
        standin_pid: None,
        clips: vec![Arc::new(CallerClip::tone(QUESTION))],
        barge_in_every: 0,
        sample_every: Duration::from_millis(200),
        // Four calls, each for the whole run: a redial would count as a fifth connection.
        redial: false,
        call_length: None,
        api_token: Some(API_TOKEN.to_owned()),
    })
    .await;
    assert_eq!(report.calls_connected, 4, "{report:?}");
    // Greetings and replies were paced through the steady window; crmd timed its own writes
    // and callsim read them from /metrics (no figure is asserted: this is a shared test box).
    let lateness = report.server_send_lateness.expect("read from /metrics");
    assert!(lateness.sends > 0, "{lateness:?}");
    assert!(
        lateness.p50_ms.is_some() && lateness.p99_ms.is_some(),
        "{lateness:?}"
    );
    assert!(report.server_backlog.samples > 0, "{report:?}");
    let (exit, log) = stop_gracefully(crmd).await;
    assert_eq!(exit.code(), Some(0), "{log}");
}

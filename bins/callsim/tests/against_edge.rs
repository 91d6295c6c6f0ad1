//! `callsim call` and `callsim load` logic against crmd's real edge (router, signature checks,
//! WebSocket upgrade, SQLite store), started in-process on 127.0.0.1 with the offline fallback
//! handler playing a short clip; plus a server that forgets the subprotocol.
#![allow(clippy::unwrap_used)]

use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use callsim::audio::{CallerClip, silence_payload_base64};
use callsim::call::{
    CallError, CallOptions, Target, call_plan, connect_media_stream, http_client, new_identity,
    run_call,
};
use callsim::load::{LoadOptions, run_load};
use callsim::session::Ending;
use callsim::steps::Step;
use edge::{BuildInfo, Config, EdgeState, FallbackPacing, OfflineFallbackHandler};

const AUTH_TOKEN: &str = "test-auth-token-0123456789";
/// Length of the clip the test server plays.
const CLIP_MS: u64 = 600;

struct Server {
    addr: SocketAddr,
    _shutdown: tokio::sync::oneshot::Sender<()>,
    _dir: tempfile::TempDir,
}

async fn start_edge() -> Server {
    start_edge_with(&[]).await
}

async fn start_edge_with(extra: &[(&str, &str)]) -> Server {
    let dir = tempfile::tempdir().unwrap();
    let mut vars = vec![
        (
            "DATABASE_URL".to_owned(),
            format!("sqlite://{}/crmd.sqlite", dir.path().display()),
        ),
        ("TWILIO_AUTH_TOKEN".to_owned(), AUTH_TOKEN.to_owned()),
    ];
    vars.extend(extra.iter().map(|(k, v)| (k.to_string(), v.to_string())));
    let prepared = edge::prepare(Config::from_vars(vars).unwrap())
        .await
        .unwrap();
    // A 600 ms tone as the "apology", paced in real time like the production fallback.
    let clip: &'static [u8] = Box::leak(
        mulaw::encode(
            &speech_standin::tone::synthesize(
                "sorry, we are closed",
                8_000,
                1.0,
                Default::default(),
            )[..4_800],
        )
        .into_boxed_slice(),
    );
    let handler = OfflineFallbackHandler::new(clip, FallbackPacing::default());
    let build = BuildInfo {
        version: "0.1.0".to_owned(),
        git_commit: "0".repeat(40),
        build_time: "2026-11-24T06:00:00Z".to_owned(),
        entry_point: "callsim test".to_owned(),
    };
    let state = EdgeState::new(
        prepared.config,
        build,
        Some(prepared.store),
        Arc::new(handler),
    );
    let listener = edge::bind("127.0.0.1:0".parse().unwrap()).await.unwrap();
    let addr = listener.local_addr().unwrap();
    let (tx, rx) = tokio::sync::oneshot::channel::<()>();
    tokio::spawn(edge::serve(listener, state, async move {
        let _ = rx.await;
    }));
    Server {
        addr,
        _shutdown: tx,
        _dir: dir,
    }
}

/// A 2 s load run against `server`: `calls` calls started over `ramp`, one clip, no barge-in,
/// redialing; the tests change what they are about.
fn small_load(server: &Server, calls: u32, ramp: Duration) -> LoadOptions {
    LoadOptions {
        call: options(server),
        calls,
        ramp,
        duration: Duration::from_secs(2),
        server_pid: None,
        standin_pid: None,
        clips: vec![Arc::new(CallerClip::tone("hello there"))],
        barge_in_every: 0,
        sample_every: Duration::from_millis(200),
        redial: true,
        call_length: None,
        api_token: None,
    }
}

fn options(server: &Server) -> CallOptions {
    let mut options = CallOptions::new(Target::parse(&format!("http://{}", server.addr)).unwrap());
    options.auth_token = Some(AUTH_TOKEN.to_owned());
    options.record_agent_audio = true;
    options
}

#[tokio::test]
async fn a_signed_call_gets_the_greeting_echoes_the_mark_and_sees_the_server_hang_up() {
    let server = start_edge().await;
    let clip = Arc::new(CallerClip::tone("hello"));
    let plan = Arc::new(call_plan(vec![
        Step::Listen(Duration::from_secs(3)),
        Step::Say(clip),
        Step::Listen(Duration::from_secs(3)),
    ]));
    let outcome = run_call(
        &http_client(),
        &options(&server),
        plan,
        new_identity(),
        silence_payload_base64().into(),
    )
    .await
    .unwrap();
    let report = outcome.report;
    assert_eq!(
        report.protocol_errors, 0,
        "{:?}",
        report.protocol_error_samples
    );
    assert_eq!(report.callback_errors, 0);
    // The fallback plays its clip, waits for the mark echo, then closes the socket.
    assert_eq!(report.ended_by, Ending::ServerClosed);
    assert_eq!(report.greetings, 1);
    assert!(report.time_to_greeting_ms.unwrap() < 1_000.0);
    assert_eq!(report.agent_audio_ms, CLIP_MS);
    assert_eq!(report.agent_media_messages, CLIP_MS / 20);
    assert_eq!((report.marks_received, report.marks_echoed), (1, 1));
    // (Playback underruns are not asserted: they measure the machine's scheduling delays,
    // and a build running on the same two cores can stall a read by more than the 80 ms lead.)
    assert_eq!(report.frames_dropped, 0);
    assert!(report.frames_sent >= CLIP_MS / 20, "{}", report.frames_sent);
    let audio = outcome.agent_audio.unwrap();
    assert!(audio.len() >= CLIP_MS as usize * 8, "{}", audio.len());
}

#[tokio::test]
async fn a_wrong_auth_token_is_refused_by_the_webhook() {
    let server = start_edge().await;
    let mut options = options(&server);
    options.auth_token = Some("not-the-token".to_owned());
    let plan = Arc::new(call_plan(vec![Step::Wait(Duration::from_millis(100))]));
    let error = run_call(
        &http_client(),
        &options,
        plan,
        new_identity(),
        silence_payload_base64().into(),
    )
    .await
    .unwrap_err();
    assert!(
        matches!(error, CallError::WebhookStatus { status: 403, .. }),
        "{error}"
    );
}

#[tokio::test]
async fn a_101_without_the_subprotocol_fails_loudly() {
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    tokio::spawn(async move {
        let (tcp, _) = listener.accept().await.unwrap();
        // Accepts the upgrade without echoing Sec-WebSocket-Protocol.
        let _socket = tokio_tungstenite::accept_async(tcp).await;
    });
    let error = connect_media_stream(
        &format!("ws://{addr}/ws/twilio-media"),
        "wss://example.com/ws/twilio-media",
        None,
        Duration::from_secs(5),
    )
    .await
    .unwrap_err();
    assert!(
        matches!(error, CallError::SubprotocolNotEchoed { .. }),
        "{error}"
    );
    assert!(error.to_string().contains("audio.twilio.com"));
}

#[tokio::test]
async fn a_small_load_run_with_redial_aggregates_every_call() {
    let server = start_edge().await;
    let report = run_load(LoadOptions {
        server_pid: Some(std::process::id()),
        barge_in_every: 2,
        ..small_load(&server, 4, Duration::from_millis(400))
    })
    .await;
    assert_eq!(report.calls_requested, 4);
    // The server hangs up after its 600 ms clip; with redial every slot places new calls
    // until less than a second of the 2.4 s run is left.
    assert!(report.calls_placed >= 8, "{}", report.calls_placed);
    assert_eq!(
        report.calls_connected, report.calls_placed,
        "{:?}",
        report.setup_errors
    );
    assert_eq!(report.calls_closed_by_server, report.calls_placed);
    assert_eq!(report.calls_without_greeting, 0);
    assert_eq!(report.greeting.count, u64::from(report.calls_placed));
    assert_eq!(report.webhook.count, u64::from(report.calls_placed));
    assert!(report.webhook.p50_ms.is_some_and(|ms| ms > 0.0));
    assert_eq!(report.protocol_errors, 0);
    assert_eq!(report.ws_errors, 0);
    assert!(report.pacing.count > 4 * 25);
    assert!(report.peak_live_calls >= 1);
    let server_usage = report.server.unwrap();
    assert!(server_usage.rss_peak_kib > 0);
}

#[tokio::test]
async fn calls_of_a_set_length_hang_up_and_redial_all_through_the_run() {
    let server = start_edge().await;
    let report = run_load(LoadOptions {
        // Shorter than the server's 600 ms clip: the simulator hangs up first, every time.
        call_length: Some(Duration::from_millis(300)),
        ..small_load(&server, 2, Duration::from_millis(200))
    })
    .await;
    assert!(report.calls_placed >= 6, "{}", report.calls_placed);
    assert_eq!(report.calls_closed_by_server, 0, "{report:?}");
    assert_eq!(
        report.calls_connected, report.calls_placed,
        "{:?}",
        report.setup_errors
    );
    assert_eq!(report.protocol_errors, 0);
}

#[tokio::test]
async fn calls_a_full_server_refuses_are_counted_as_refused_not_as_failures() {
    let server = start_edge_with(&[("MAX_CALLS", "1")]).await;
    let report = run_load(LoadOptions {
        redial: false,
        ..small_load(&server, 3, Duration::from_millis(100))
    })
    .await;
    // The first call holds the only place for its 600 ms clip; the two placed 33 and 66 ms
    // later hear a busy signal.
    assert_eq!(report.calls_placed, 3);
    assert_eq!(report.calls_connected, 1, "{:?}", report.setup_errors);
    assert_eq!(report.calls_refused, 2);
    assert!(report.setup_errors.is_empty(), "{:?}", report.setup_errors);
}

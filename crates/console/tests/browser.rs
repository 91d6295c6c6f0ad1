//! End to end in a real browser: a real call (`call::run_call` over a WebSocket pair, the speech
//! stand-in over gRPC, the built-in scripted responder) feeds the console, served over HTTP on
//! 127.0.0.1; headless Chromium, driven over the DevTools protocol, signs in with the token,
//! and the caller's transcript and the agent's reply must appear in the page while the call is
//! still going. A screenshot is kept at `target/test-artifacts/console.png`.
//!
//! Without a Chromium binary (`/usr/bin/chromium`, or `CRMD_CHROMIUM`) the test prints
//! "skipped: chromium not installed" and passes.
#![allow(clippy::unwrap_used)]

use std::path::{Path, PathBuf};
use std::process::Stdio;
use std::sync::Arc;
use std::time::Duration;

use base64::Engine as _;
use bytes::Bytes;
use call::{CallDeps, CallEvent, CallSummary, ScriptedResponder, TransportError, WsIn, WsOut};
use console::{ApiToken, Console, ConsoleOptions};
use futures::{SinkExt, StreamExt};
use serde_json::{Value, json};
use speech_standin::{StandinOptions, ToneVoice};
use tokio::io::{AsyncBufReadExt, BufReader};
use tokio::net::TcpListener;
use tokio::sync::{broadcast, oneshot};
use tokio_tungstenite::tungstenite::Message;

const TOKEN: &str = "browser-test-token";
const CALL_SID: &str = "CA0123456789abcdef0123456789abcdef";
const STREAM_SID: &str = "MZ0123456789abcdef0123456789abcdef";
const CALLER_LINE: &str = "What are your opening hours?";
const AGENT_REPLY_START: &str = "We're open Sunday to Thursday";
/// Upper bound of any single wait; reaching it fails the test.
const BOUND: Duration = Duration::from_secs(30);

fn chromium_binary() -> Option<PathBuf> {
    if let Ok(path) = std::env::var("CRMD_CHROMIUM") {
        return Some(PathBuf::from(path)).filter(|p| p.exists());
    }
    ["/usr/bin/chromium", "/usr/bin/chromium-browser"]
        .iter()
        .map(PathBuf::from)
        .find(|p| p.exists())
}

fn artifacts_dir() -> PathBuf {
    let target = std::env::var_os("CARGO_TARGET_DIR")
        .map(PathBuf::from)
        .unwrap_or_else(|| Path::new(env!("CARGO_MANIFEST_DIR")).join("../../target"));
    target.join("test-artifacts")
}

// ------------------------------------------------------------------------- the call side

/// The server side of the socket as the driver wants it.
fn adapt(
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

/// Speech stand-in, call dependencies with the live-event broadcast, and a Media Streams
/// WebSocket endpoint that runs one call. Returns the endpoint URL and the call's result.
async fn start_call_server(
    events: broadcast::Sender<CallEvent>,
) -> (String, tokio::task::JoinHandle<CallSummary>) {
    let speech_listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let speech_endpoint = format!("http://{}", speech_listener.local_addr().unwrap());
    tokio::spawn(speech_standin::serve(
        speech_listener,
        StandinOptions {
            transcripts: vec![CALLER_LINE.to_owned()],
            ..StandinOptions::default()
        },
    ));
    let stt = speech::SttClient::new(
        speech::SttConfig {
            endpoint: speech_endpoint.clone(),
            language_code: "he-IL".into(),
            ..speech::SttConfig::default()
        },
        None,
    )
    .unwrap();
    let tts = speech::TtsClient::new(
        speech::TtsConfig {
            endpoint: speech_endpoint,
            voice_name: "he-IL-Standard-A".into(),
            language_code: "he-IL".into(),
            streaming: false,
            ..speech::TtsConfig::default()
        },
        None,
    )
    .unwrap();
    let mut deps = CallDeps::new(Arc::new(ScriptedResponder::built_in().unwrap()));
    deps.stt = Some(stt);
    deps.tts = Some(tts);
    deps.events = Some(events);
    deps.warm_tts_cache().await.unwrap();
    let deps = Arc::new(deps);

    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let url = format!("ws://{}/ws/twilio-media", listener.local_addr().unwrap());
    let server = tokio::spawn(async move {
        let (tcp, _) = listener.accept().await.unwrap();
        tcp.set_nodelay(true).unwrap();
        let ws = tokio_tungstenite::accept_async(tcp).await.unwrap();
        call::run_call(adapt(ws), deps).await
    });
    (url, server)
}

/// A Twilio Media Streams peer: `connected`, `start`, one second of silence, the caller's line
/// as speech-like tones in real-time 20 ms frames, then silence (echoing marks at once) until
/// `hang_up` fires, then `stop`.
async fn run_caller(url: String, hang_up: oneshot::Receiver<()>) {
    let (ws, _) = tokio_tungstenite::connect_async(url.as_str())
        .await
        .unwrap();
    let (mut tx, mut rx) = ws.split();
    let text = |value: Value| Message::Text(value.to_string().into());
    tx.send(text(
        json!({"event": "connected", "protocol": "Call", "version": "1.0.0"}),
    ))
    .await
    .unwrap();
    tx.send(text(json!({
        "event": "start", "sequenceNumber": "1", "streamSid": STREAM_SID,
        "start": {"accountSid": "AC0123456789abcdef0123456789abcdef", "streamSid": STREAM_SID,
                  "callSid": CALL_SID, "tracks": ["inbound"],
                  "customParameters": {"from": "+972501234567"},
                  "mediaFormat": {"encoding": "audio/x-mulaw", "sampleRate": 8000, "channels": 1}}
    })))
    .await
    .unwrap();
    let speech = mulaw::encode(&speech_standin::tone::synthesize(
        CALLER_LINE,
        8_000,
        1.0,
        ToneVoice::default(),
    ));
    let mut audio: Vec<u8> = vec![mulaw::SILENCE; 8_000];
    audio.extend_from_slice(&speech);
    let silence = vec![mulaw::SILENCE; 160];
    let mut ticker = tokio::time::interval(Duration::from_millis(20));
    let mut sequence = 2u64;
    let mut chunk = 0usize;
    tokio::pin!(hang_up);
    loop {
        tokio::select! {
            _ = ticker.tick() => {
                let frame = audio.get(chunk * 160..(chunk + 1) * 160).unwrap_or(&silence);
                chunk += 1;
                let payload = base64::engine::general_purpose::STANDARD.encode(frame);
                tx.send(text(json!({
                    "event": "media", "sequenceNumber": sequence.to_string(), "streamSid": STREAM_SID,
                    "media": {"track": "inbound", "chunk": chunk.to_string(),
                              "timestamp": ((chunk - 1) * 20).to_string(), "payload": payload}
                }))).await.unwrap();
                sequence += 1;
            }
            message = rx.next() => {
                let Some(Ok(message)) = message else { return };
                if let Message::Text(body) = message {
                    let value: Value = serde_json::from_str(&body).unwrap();
                    if value["event"] == "mark" {
                        tx.send(text(json!({
                            "event": "mark", "sequenceNumber": sequence.to_string(),
                            "streamSid": STREAM_SID, "mark": value["mark"].clone()
                        }))).await.unwrap();
                        sequence += 1;
                    }
                }
            }
            _ = &mut hang_up => break,
        }
    }
    tx.send(text(json!({
        "event": "stop", "sequenceNumber": sequence.to_string(), "streamSid": STREAM_SID,
        "stop": {"accountSid": "AC0123456789abcdef0123456789abcdef", "callSid": CALL_SID}
    })))
    .await
    .unwrap();
    let _ = tx.close().await;
}

// ------------------------------------------------------------------------- DevTools client

/// Headless Chromium and one flat-mode DevTools session on a page.
struct Browser {
    child: tokio::process::Child,
    socket: tokio_tungstenite::WebSocketStream<
        tokio_tungstenite::MaybeTlsStream<tokio::net::TcpStream>,
    >,
    session: String,
    next_id: u64,
    _profile: tempfile::TempDir,
}

impl Browser {
    async fn launch(binary: &Path) -> Browser {
        let profile = tempfile::tempdir().unwrap();
        let mut child = tokio::process::Command::new(binary)
            .args([
                "--headless=new",
                "--no-sandbox",
                "--disable-gpu",
                "--no-first-run",
                "--no-default-browser-check",
                "--disable-background-networking",
                "--disable-component-update",
                "--disable-sync",
                "--disable-dev-shm-usage",
                "--window-size=1280,900",
                "--lang=en-US",
                "--remote-debugging-port=0",
            ])
            .arg(format!("--user-data-dir={}", profile.path().display()))
            .arg("about:blank")
            .env("TZ", "Asia/Jerusalem")
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::piped())
            .kill_on_drop(true)
            .spawn()
            .unwrap();
        // Chromium announces its DevTools endpoint on stderr; reading that line waits for
        // exactly the moment it listens. (It also writes the port to
        // <profile>/DevToolsActivePort, but not necessarily before the line: reading the file
        // would need a sleep-and-retry loop.)
        let mut stderr = BufReader::new(child.stderr.take().unwrap()).lines();
        let browser_url = tokio::time::timeout(BOUND, async {
            while let Some(line) = stderr.next_line().await.unwrap() {
                if let Some(url) = line.strip_prefix("DevTools listening on ") {
                    return url.trim().to_owned();
                }
            }
            panic!("chromium exited without a DevTools endpoint");
        })
        .await
        .expect("chromium did not start in time");
        // Keep draining stderr so chromium never blocks on a full pipe.
        tokio::spawn(async move { while let Ok(Some(_)) = stderr.next_line().await {} });

        let (socket, _) = tokio_tungstenite::connect_async(browser_url.as_str())
            .await
            .unwrap();
        let mut browser = Browser {
            child,
            socket,
            session: String::new(),
            next_id: 0,
            _profile: profile,
        };
        let target = browser
            .send(None, "Target.createTarget", json!({"url": "about:blank"}))
            .await;
        let attached = browser
            .send(
                None,
                "Target.attachToTarget",
                json!({"targetId": target["targetId"], "flatten": true}),
            )
            .await;
        browser.session = attached["sessionId"].as_str().unwrap().to_owned();
        browser.command("Page.enable", json!({})).await;
        browser.command("Runtime.enable", json!({})).await;
        browser
    }

    /// Sends one command and returns its result (events in between are skipped).
    async fn send(&mut self, session: Option<&str>, method: &str, params: Value) -> Value {
        self.next_id += 1;
        let id = self.next_id;
        let mut request = json!({"id": id, "method": method, "params": params});
        if let Some(session) = session {
            request["sessionId"] = json!(session);
        }
        self.socket
            .send(Message::Text(request.to_string().into()))
            .await
            .unwrap();
        let reply = tokio::time::timeout(BOUND, async {
            loop {
                let message = self.socket.next().await.unwrap().unwrap();
                let Message::Text(text) = message else {
                    continue;
                };
                let value: Value = serde_json::from_str(&text).unwrap();
                if value["id"] == id {
                    return value;
                }
            }
        })
        .await
        .unwrap_or_else(|_| panic!("no DevTools reply to {method}"));
        assert!(reply.get("error").is_none(), "{method} failed: {reply}");
        reply["result"].clone()
    }

    async fn command(&mut self, method: &str, params: Value) -> Value {
        let session = self.session.clone();
        self.send(Some(&session), method, params).await
    }

    /// Evaluates `expression` in the page and returns its value (promises are awaited).
    async fn evaluate(&mut self, expression: &str) -> Value {
        let result = self
            .command(
                "Runtime.evaluate",
                json!({"expression": expression, "awaitPromise": true, "returnByValue": true}),
            )
            .await;
        assert!(
            result.get("exceptionDetails").is_none(),
            "page threw: {result}"
        );
        result["result"]["value"].clone()
    }

    /// Waits until `condition` (a JS expression) is truthy in the page and returns its value.
    /// The polling runs inside the page, checked every animation frame-ish 50 ms; the whole
    /// wait is bounded by [`BOUND`].
    async fn wait_for(&mut self, what: &str, condition: &str) -> Value {
        let expression = format!(
            "new Promise((resolve) => {{ const check = () => {{ let v = null; \
             try {{ v = ({condition}); }} catch (_) {{ v = null; }} \
             if (v) resolve(v); else setTimeout(check, 50); }}; check(); }})"
        );
        match tokio::time::timeout(BOUND, self.evaluate(&expression)).await {
            Ok(value) => value,
            Err(_) => {
                let body = self.evaluate("document.body.innerText").await;
                panic!("timed out waiting for {what}; the page shows:\n{body}");
            }
        }
    }

    async fn screenshot(&mut self, path: &Path) {
        let shot = self
            .command(
                "Page.captureScreenshot",
                json!({"format": "png", "captureBeyondViewport": false}),
            )
            .await;
        let png = base64::engine::general_purpose::STANDARD
            .decode(shot["data"].as_str().unwrap())
            .unwrap();
        assert!(png.starts_with(b"\x89PNG"), "not a PNG");
        std::fs::create_dir_all(path.parent().unwrap()).unwrap();
        std::fs::write(path, png).unwrap();
    }

    async fn close(mut self) {
        let _ = self.send(None, "Browser.close", json!({})).await;
        let _ = tokio::time::timeout(BOUND, self.child.wait()).await;
    }
}

// ------------------------------------------------------------------------- the test

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_console_shows_a_real_call_live_in_chromium() {
    let Some(chromium) = chromium_binary() else {
        println!("skipped: chromium not installed");
        return;
    };

    let (events, _) = broadcast::channel(1024);
    let (console, _registry) = Console::spawn(
        &events,
        ConsoleOptions {
            api_token: ApiToken::new(TOKEN),
            ..ConsoleOptions::default()
        },
    );
    let http = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let console_url = format!("http://{}/console", http.local_addr().unwrap());
    let router = console.router();
    tokio::spawn(async move { axum::serve(http, router).await.unwrap() });
    let (call_url, call_server) = start_call_server(events.clone()).await;

    let mut browser = Browser::launch(&chromium).await;
    browser
        .command("Page.navigate", json!({"url": console_url}))
        .await;
    // First visit: no token stored, the sign-in form shows.
    browser
        .wait_for(
            "the sign-in form",
            "document.body.dataset.stream === 'login' && !document.getElementById('login').hidden",
        )
        .await;
    browser
        .evaluate(&format!(
            "document.getElementById('token-input').value = '{TOKEN}'; \
             document.getElementById('token-form').requestSubmit(); true"
        ))
        .await;
    browser
        .wait_for(
            "the event stream to open",
            "document.body.dataset.stream === 'open'",
        )
        .await;
    assert_eq!(
        browser
            .evaluate("localStorage.getItem('crmd.apiToken')")
            .await,
        TOKEN,
        "the token is kept in the browser"
    );
    assert_eq!(console.metrics().sse_clients(), 1);

    // Record every caller partial the page shows (they are replaced by the final).
    browser
        .evaluate(
            "window.seenPartials = []; new MutationObserver(() => { \
             for (const n of document.querySelectorAll('#live-calls .line-partial .text')) \
             window.seenPartials.push({ text: n.textContent, color: getComputedStyle(n).color }); \
             }).observe(document.getElementById('live-calls'), \
             { subtree: true, childList: true, characterData: true }); true",
        )
        .await;

    // Now the call: everything the page shows next arrives live.
    let (hang_up, hang_up_rx) = oneshot::channel();
    let caller = tokio::spawn(run_caller(call_url, hang_up_rx));

    let caller_line = browser
        .wait_for(
            "the caller's final transcript",
            &format!(
                "Array.from(document.querySelectorAll('#live-calls .line-caller .text'))\
                 .map((n) => n.textContent).find((t) => t === {CALLER_LINE:?})"
            ),
        )
        .await;
    assert_eq!(caller_line, CALLER_LINE);
    // Partials showed in grey while the caller spoke, and the final replaced them.
    let partials = browser.evaluate("window.seenPartials").await;
    let partials = partials.as_array().unwrap();
    assert!(!partials.is_empty(), "no partial transcript was shown");
    for partial in partials {
        assert!(
            CALLER_LINE.starts_with(partial["text"].as_str().unwrap().trim_end_matches('…')),
            "{partial}"
        );
        assert_eq!(partial["color"], "rgb(156, 163, 175)", "partials are grey");
    }
    assert_eq!(
        browser
            .evaluate("document.querySelectorAll('#live-calls .line-partial').length")
            .await,
        0
    );
    let agent_line = browser
        .wait_for(
            "the agent's reply",
            &format!(
                "Array.from(document.querySelectorAll('#live-calls .line-agent .text'))\
                 .map((n) => n.textContent).find((t) => t.startsWith({AGENT_REPLY_START:?}))"
            ),
        )
        .await;
    assert!(agent_line.as_str().unwrap().starts_with(AGENT_REPLY_START));
    // The reply's latency breakdown follows its first audio frame.
    let latency = browser
        .wait_for(
            "the reply's latency line",
            "Array.from(document.querySelectorAll('#live-calls .line-latency .text'))\
             .map((n) => n.textContent).find((t) => t.includes('EoU'))",
        )
        .await;
    assert!(
        latency.as_str().unwrap().contains("first frame"),
        "{latency}"
    );
    // The Hebrew greeting came first, rendered with automatic direction.
    let greeting = browser
        .wait_for(
            "the greeting line",
            "(() => { const n = document.querySelector('#live-calls .line-agent .text'); \
             return n && { text: n.textContent, dir: n.dir, direction: getComputedStyle(n).direction }; })()",
        )
        .await;
    assert!(
        greeting["text"].as_str().unwrap().starts_with("שלום"),
        "{greeting}"
    );
    assert_eq!(greeting["dir"], "auto");
    assert_eq!(greeting["direction"], "rtl", "Hebrew renders right to left");
    // Still live: the call is in progress and shown with its CallSid and a state.
    let card = browser
        .evaluate(
            "(() => { const c = document.querySelector('#live-calls .call'); \
             return { sid: c.dataset.sid, state: c.querySelector('.state').textContent, \
             count: document.getElementById('live-count').textContent }; })()",
        )
        .await;
    assert_eq!(card["sid"], CALL_SID);
    assert_eq!(card["count"], "1");
    assert!(
        ["LISTENING", "THINKING", "SPEAKING"].contains(&card["state"].as_str().unwrap()),
        "{card}"
    );
    assert!(!call_server.is_finished(), "the call is still going");

    let screenshot = artifacts_dir().join("console.png");
    browser.screenshot(&screenshot).await;
    println!("screenshot: {}", screenshot.display());

    // Hang up: the page marks the call ended.
    hang_up.send(()).unwrap();
    tokio::time::timeout(BOUND, caller).await.unwrap().unwrap();
    let summary = tokio::time::timeout(BOUND, call_server)
        .await
        .unwrap()
        .unwrap();
    assert_eq!(summary.call_sid.as_deref(), Some(CALL_SID));
    browser
        .wait_for(
            "the call to show as ended",
            "document.querySelector('#live-calls .state.ENDED')",
        )
        .await;
    assert_eq!(console.live_call_count(), 0);
    assert!(console.metrics().turns("reply") >= 1);
    browser.close().await;
}

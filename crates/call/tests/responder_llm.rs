//! The LLM responder against a local OpenAI-compatible stand-in (axum on 127.0.0.1:0) that
//! streams Server-Sent Events the way Chat Completions does.
#![allow(clippy::unwrap_used)]

use std::convert::Infallible;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use axum::Router;
use axum::body::Body;
use axum::extract::State;
use axum::http::{HeaderMap, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::routing::post;
use bytes::Bytes;
use call::responder::{
    CallContext, CallerInput, FixedLines, HistorySpeaker, HistoryTurn, LlmConfig, LlmResponder,
    Responder, ResponderError,
};
use futures::StreamExt;
use tokio::sync::{mpsc, oneshot};

/// How the stand-in answers one request.
#[derive(Clone)]
enum Behaviour {
    /// Send these raw body pieces (SSE text), each after `gap`.
    Stream { pieces: Vec<String>, gap: Duration },
    /// Answer the headers, then never send a byte.
    SilentBody,
    /// An HTTP error with this body.
    Status(u16, String),
    /// Send the pieces, then hold the body open until the client goes away; report that.
    HoldOpen { pieces: Vec<String> },
}

struct StandIn {
    behaviour: Behaviour,
    requests: Mutex<Vec<(HeaderMap, serde_json::Value)>>,
    client_gone: Mutex<Option<oneshot::Sender<()>>>,
}

/// Fires when the response body is dropped (hyper drops it when the client disconnects).
struct DropSignal(Option<oneshot::Sender<()>>);
impl Drop for DropSignal {
    fn drop(&mut self) {
        if let Some(tx) = self.0.take() {
            let _ = tx.send(());
        }
    }
}

async fn completions(
    State(state): State<Arc<StandIn>>,
    headers: HeaderMap,
    body: String,
) -> Response {
    let json: serde_json::Value = serde_json::from_str(&body).unwrap();
    state.requests.lock().unwrap().push((headers, json));
    let sse = |body: Body| {
        Response::builder()
            .header("content-type", "text/event-stream")
            .body(body)
            .unwrap()
    };
    match state.behaviour.clone() {
        Behaviour::Stream { pieces, gap } => {
            let stream = futures::stream::iter(pieces).then(move |piece| async move {
                tokio::time::sleep(gap).await;
                Ok::<_, Infallible>(Bytes::from(piece))
            });
            sse(Body::from_stream(stream))
        }
        Behaviour::SilentBody => sse(Body::from_stream(futures::stream::pending::<
            Result<Bytes, Infallible>,
        >())),
        Behaviour::Status(code, text) => {
            (StatusCode::from_u16(code).unwrap(), text).into_response()
        }
        Behaviour::HoldOpen { pieces } => {
            let signal = DropSignal(state.client_gone.lock().unwrap().take());
            let (tx, rx) = mpsc::channel::<Result<Bytes, Infallible>>(16);
            for piece in pieces {
                tx.try_send(Ok(Bytes::from(piece))).unwrap();
            }
            // Keep the sender alive inside the stream so the body never ends on its own.
            let stream =
                futures::stream::unfold((rx, tx, signal), |(mut rx, tx, signal)| async move {
                    rx.recv().await.map(|item| (item, (rx, tx, signal)))
                });
            sse(Body::from_stream(stream))
        }
    }
}

struct Server {
    base_url: String,
    state: Arc<StandIn>,
}

async fn start(behaviour: Behaviour) -> (Server, oneshot::Receiver<()>) {
    let (gone_tx, gone_rx) = oneshot::channel();
    let state = Arc::new(StandIn {
        behaviour,
        requests: Mutex::new(Vec::new()),
        client_gone: Mutex::new(Some(gone_tx)),
    });
    let app = Router::new()
        .route("/v1/chat/completions", post(completions))
        .with_state(state.clone());
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    tokio::spawn(async move { axum::serve(listener, app).await.unwrap() });
    (
        Server {
            base_url: format!("http://{addr}/v1/"),
            state,
        },
        gone_rx,
    )
}

fn lines() -> FixedLines {
    FixedLines {
        greeting: "Hello".into(),
        reprompts: vec!["Still there?".into()],
        goodbye: "Bye".into(),
        apology: "Sorry".into(),
        fallback: "Pardon?".into(),
    }
}

fn delta(text: &str) -> String {
    format!(
        "data: {}\n\n",
        serde_json::json!({"id": "c1", "object": "chat.completion.chunk",
            "choices": [{"index": 0, "delta": {"content": text}, "finish_reason": null}]})
    )
}

fn responder(server: &Server, first_token: Duration) -> LlmResponder {
    let mut config = LlmConfig::new(
        &server.base_url,
        Some("sk-test-secret".into()),
        "test-model",
    );
    config.first_token_timeout = first_token;
    config.chunk_timeout = Duration::from_secs(5);
    LlmResponder::new(config, lines()).unwrap()
}

fn context() -> CallContext {
    let mut ctx = CallContext::voice("CA-llm");
    ctx.contact_name = Some("Dana".into());
    ctx.contact_phone = Some("+972501234567".into());
    ctx.history = vec![
        HistoryTurn {
            speaker: HistorySpeaker::Agent,
            text: "Hello, how can I help?".into(),
        },
        HistoryTurn {
            speaker: HistorySpeaker::Caller,
            text: "Are you open?".into(),
        },
        HistoryTurn {
            speaker: HistorySpeaker::Agent,
            text: "Yes, until six.".into(),
        },
    ];
    ctx
}

#[tokio::test]
async fn streamed_deltas_come_out_sentence_by_sentence_with_context_in_the_request() {
    // Pieces split inside words, inside a decimal and inside an SSE line.
    let mut body = String::from(": keep-alive comment\r\n\r\n");
    body.push_str(&format!(
        "data: {}\n\n",
        serde_json::json!({"choices": [{"index": 0, "delta": {"role": "assistant"}}]})
    ));
    for piece in [
        "Sure Dana",
        "! It costs 3",
        ".5 shekels. ",
        "See you tomo",
        "rrow.",
    ] {
        body.push_str(&delta(piece));
    }
    body.push_str("data: [DONE]\n\n");
    // Deliver the body in 13-byte network pieces, so SSE lines are split too (ASCII only).
    assert!(body.is_ascii());
    let pieces: Vec<String> = body
        .as_bytes()
        .chunks(13)
        .map(|c| String::from_utf8(c.to_vec()).unwrap())
        .collect();
    let (server, _gone) = start(Behaviour::Stream {
        pieces,
        gap: Duration::from_millis(5),
    })
    .await;
    let r = responder(&server, Duration::from_secs(5));

    let reply = r.respond(&CallerInput::Text("How much is it?".into()), &context());
    assert_eq!(reply.meta.intent, "llm");
    assert!(
        !reply.meta.fixed_text,
        "generated text is never shared through the TTS cache"
    );
    let sentences: Vec<String> = reply.chunks.map(|c| c.unwrap()).collect().await;
    assert_eq!(
        sentences,
        vec!["Sure Dana!", "It costs 3.5 shekels.", "See you tomorrow."]
    );

    let requests = server.state.requests.lock().unwrap();
    let (headers, json) = &requests[0];
    assert_eq!(headers["authorization"], "Bearer sk-test-secret");
    assert_eq!(json["model"], "test-model");
    assert_eq!(json["stream"], true);
    let messages = json["messages"].as_array().unwrap();
    assert_eq!(messages[0]["role"], "system");
    let system = messages[0]["content"].as_str().unwrap();
    assert!(
        system.contains("Dana") && system.contains("+972501234567"),
        "{system}"
    );
    let roles: Vec<&str> = messages
        .iter()
        .map(|m| m["role"].as_str().unwrap())
        .collect();
    assert_eq!(
        roles,
        vec!["system", "assistant", "user", "assistant", "user"]
    );
    assert_eq!(messages[4]["content"], "How much is it?");
}

#[tokio::test]
async fn hebrew_reply_without_done_marker_still_completes() {
    let pieces = vec![
        delta("שלום דנה! אנחנו פתוחים עד 18.30"),
        delta(" היום. להתראות"),
    ];
    let (server, _gone) = start(Behaviour::Stream {
        pieces,
        gap: Duration::from_millis(1),
    })
    .await;
    let r = responder(&server, Duration::from_secs(5));
    let reply = r.respond(&CallerInput::Dtmf('1'), &CallContext::voice("CA-he"));
    let sentences: Vec<String> = reply.chunks.map(|c| c.unwrap()).collect().await;
    assert_eq!(
        sentences,
        vec!["שלום דנה!", "אנחנו פתוחים עד 18.30 היום.", "להתראות"]
    );
    let requests = server.state.requests.lock().unwrap();
    let last = requests[0].1["messages"]
        .as_array()
        .unwrap()
        .last()
        .cloned()
        .unwrap();
    assert_eq!(last["content"], "(The caller pressed the key 1.)");
}

#[tokio::test]
async fn slow_first_token_times_out() {
    let (server, _gone) = start(Behaviour::SilentBody).await;
    let r = responder(&server, Duration::from_millis(300));
    let mut chunks = r
        .respond(&CallerInput::Text("hello".into()), &context())
        .chunks;
    let started = std::time::Instant::now();
    let first = chunks.next().await.unwrap();
    let waited = started.elapsed();
    match first {
        Err(ResponderError::Timeout {
            stage, waited_ms, ..
        }) => {
            assert_eq!(stage, "first token");
            assert_eq!(waited_ms, 300);
        }
        other => panic!("expected a first-token timeout, got {other:?}"),
    }
    assert!(waited >= Duration::from_millis(300), "{waited:?}");
    assert!(
        chunks.next().await.is_none(),
        "the stream ends after an error"
    );
}

#[tokio::test]
async fn http_500_is_reported_with_the_provider_body_and_no_key() {
    let (server, _gone) = start(Behaviour::Status(
        500,
        r#"{"error":{"message":"upstream overloaded"}}"#.into(),
    ))
    .await;
    let r = responder(&server, Duration::from_secs(5));
    let mut chunks = r
        .respond(&CallerInput::Text("hi".into()), &context())
        .chunks;
    let err = chunks.next().await.unwrap().unwrap_err();
    assert!(
        matches!(err, ResponderError::HttpStatus { status: 500, .. }),
        "{err:?}"
    );
    let message = err.to_string();
    assert!(message.contains("upstream overloaded"), "{message}");
    assert!(!message.contains("sk-test-secret"));
    assert!(!format!("{:?}", r.config()).contains("sk-test-secret"));
    assert!(chunks.next().await.is_none());
}

#[tokio::test]
async fn malformed_chunk_fails_after_the_good_sentences() {
    let pieces = vec![
        delta("First sentence. "),
        delta("Second"),
        "data: {\"choices\": [{\"delta\": {\"content\": \n\n".to_string(),
    ];
    let (server, _gone) = start(Behaviour::Stream {
        pieces,
        gap: Duration::from_millis(1),
    })
    .await;
    let r = responder(&server, Duration::from_secs(5));
    let items: Vec<_> = r
        .respond(&CallerInput::Text("hi".into()), &context())
        .chunks
        .collect()
        .await;
    assert_eq!(items.len(), 2, "{items:?}");
    assert_eq!(items[0].as_ref().unwrap(), "First sentence.");
    assert!(
        matches!(&items[1], Err(ResponderError::MalformedChunk { .. })),
        "{items:?}"
    );
}

#[tokio::test]
async fn dropping_the_reply_closes_the_request() {
    let (server, gone) = start(Behaviour::HoldOpen {
        pieces: vec![delta("One sentence. "), delta("And then")],
    })
    .await;
    let r = responder(&server, Duration::from_secs(5));
    let mut chunks = r
        .respond(&CallerInput::Text("hi".into()), &context())
        .chunks;
    assert_eq!(chunks.next().await.unwrap().unwrap(), "One sentence.");
    drop(chunks); // barge-in
    tokio::time::timeout(Duration::from_secs(5), gone)
        .await
        .expect("the stand-in saw the client go away")
        .unwrap();
}

#[test]
fn config_from_env_values() {
    assert!(
        LlmConfig::from_env_values(None, None, None, None)
            .unwrap()
            .is_none()
    );
    let err = LlmConfig::from_env_values(Some("https://api.example/v1"), Some("k"), None, None)
        .unwrap_err();
    assert!(err.to_string().contains("LLM_MODEL"), "{err}");
    let err = LlmConfig::from_env_values(Some("not a url"), None, Some("m"), None).unwrap_err();
    assert!(err.to_string().contains("LLM_BASE_URL"), "{err}");

    let dir = tempfile::tempdir().unwrap();
    let prompt = dir.path().join("prompt.txt");
    std::fs::write(&prompt, "You are a bakery assistant.").unwrap();
    let config = LlmConfig::from_env_values(
        Some("https://api.example/v1/"),
        Some("secret-key"),
        Some("m"),
        Some(prompt.to_str().unwrap()),
    )
    .unwrap()
    .unwrap();
    assert_eq!(config.endpoint(), "https://api.example/v1/chat/completions");
    assert_eq!(config.system_prompt, "You are a bakery assistant.");
    assert!(!format!("{config:?}").contains("secret-key"));
    let err = LlmConfig::from_env_values(
        Some("https://api.example/v1"),
        None,
        Some("m"),
        Some("/nonexistent/prompt.txt"),
    )
    .unwrap_err();
    assert!(err.to_string().contains("/nonexistent/prompt.txt"), "{err}");
}

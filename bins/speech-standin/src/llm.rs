//! An OpenAI-compatible Chat Completions stand-in (`POST {base}/chat/completions` with
//! `stream: true`), so `RESPONDER=llm` can be developed, demonstrated and loaded offline.
//!
//! It answers every request with one of a few canned receptionist replies (cycled per
//! request, so consecutive replies differ like generated text does), streamed as Server-Sent
//! Events in small pieces: the first after `first_token`, the rest `chunk_every` apart, then
//! `data: [DONE]`. It does not read the conversation beyond checking the request's shape.

use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;

use axum::Router;
use axum::body::{Body, Bytes};
use axum::extract::State;
use axum::http::{StatusCode, header};
use axum::response::{IntoResponse, Response};
use axum::routing::post;
use futures::StreamExt;
use serde_json::{Value, json};
use tokio::net::TcpListener;

/// Replies the stand-in streams, in turn.
pub const CANNED_REPLIES: [&str; 3] = [
    "Thanks for calling. We're open Sunday to Thursday from eight to six, and on Friday until one. Is there anything else I can help with?",
    "Of course, someone from our team can call you back. When would be a good time for you?",
    "Got it, I've written that down and passed it on. Anything else I can do for you today?",
];

/// How the LLM stand-in streams.
#[derive(Debug, Clone)]
pub struct LlmStandinOptions {
    /// Delay before the first piece (a real model's time to first token).
    pub first_token: Duration,
    /// Delay between pieces.
    pub chunk_every: Duration,
    /// Words per streamed piece.
    pub words_per_chunk: usize,
}

impl Default for LlmStandinOptions {
    fn default() -> Self {
        LlmStandinOptions {
            first_token: Duration::from_millis(300),
            chunk_every: Duration::from_millis(40),
            words_per_chunk: 3,
        }
    }
}

/// Counters of the LLM stand-in.
#[derive(Debug, Default)]
pub struct LlmStats {
    /// Completions streamed.
    pub completions: AtomicU64,
    /// Requests refused as malformed.
    pub refused: AtomicU64,
}

struct LlmState {
    options: LlmStandinOptions,
    stats: Arc<LlmStats>,
}

/// The routes: `POST /chat/completions` and `POST /v1/chat/completions`.
pub fn router(options: LlmStandinOptions, stats: Arc<LlmStats>) -> Router {
    let state = Arc::new(LlmState { options, stats });
    Router::new()
        .route("/chat/completions", post(complete))
        .route("/v1/chat/completions", post(complete))
        .with_state(state)
}

/// Serves the Chat Completions stand-in on `listener` until the process ends.
///
/// # Errors
/// The I/O error that stopped the server.
pub async fn serve_llm(
    listener: TcpListener,
    options: LlmStandinOptions,
    stats: Arc<LlmStats>,
) -> std::io::Result<()> {
    axum::serve(listener, router(options, stats)).await
}

fn refuse(state: &LlmState, status: StatusCode, message: &str) -> Response {
    state.stats.refused.fetch_add(1, Ordering::Relaxed);
    let body = json!({"error": {"message": message, "type": "invalid_request_error"}});
    (
        status,
        [(header::CONTENT_TYPE, "application/json")],
        body.to_string(),
    )
        .into_response()
}

async fn complete(State(state): State<Arc<LlmState>>, body: Bytes) -> Response {
    let Ok(request) = serde_json::from_slice::<Value>(&body) else {
        return refuse(&state, StatusCode::BAD_REQUEST, "the body is not JSON");
    };
    let has_messages = request
        .get("messages")
        .and_then(Value::as_array)
        .is_some_and(|messages| !messages.is_empty());
    if !has_messages {
        return refuse(
            &state,
            StatusCode::BAD_REQUEST,
            "`messages` must be a non-empty array",
        );
    }
    if request.get("stream").and_then(Value::as_bool) != Some(true) {
        return refuse(
            &state,
            StatusCode::BAD_REQUEST,
            "this stand-in only streams: send \"stream\": true",
        );
    }
    let n = state.stats.completions.fetch_add(1, Ordering::Relaxed);
    let reply = CANNED_REPLIES[(n % CANNED_REPLIES.len() as u64) as usize];
    let events = sse_events(reply, state.options.words_per_chunk);
    let first = state.options.first_token;
    let every = state.options.chunk_every;
    let stream = futures::stream::iter(events.into_iter().enumerate()).then(
        move |(index, event)| async move {
            tokio::time::sleep(if index == 0 { first } else { every }).await;
            Ok::<_, std::convert::Infallible>(event)
        },
    );
    (
        [
            (header::CONTENT_TYPE, "text/event-stream"),
            (header::CACHE_CONTROL, "no-cache"),
        ],
        Body::from_stream(stream),
    )
        .into_response()
}

/// The SSE events of one streamed reply: `words_per_chunk` words per `delta`, then `[DONE]`.
#[must_use]
pub fn sse_events(reply: &str, words_per_chunk: usize) -> Vec<String> {
    let words: Vec<&str> = reply.split_inclusive(' ').collect();
    let mut events: Vec<String> = words
        .chunks(words_per_chunk.max(1))
        .map(|piece| {
            let chunk = json!({
                "object": "chat.completion.chunk",
                "choices": [{"index": 0, "delta": {"content": piece.concat()}, "finish_reason": null}],
            });
            format!("data: {chunk}\n\n")
        })
        .collect();
    events.push("data: [DONE]\n\n".to_owned());
    events
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_events_carry_the_whole_reply_in_order_then_done() {
        let events = sse_events(CANNED_REPLIES[1], 3);
        assert_eq!(events.last().map(String::as_str), Some("data: [DONE]\n\n"));
        let text: String = events[..events.len() - 1]
            .iter()
            .map(|event| {
                let data = event
                    .strip_prefix("data: ")
                    .and_then(|rest| rest.strip_suffix("\n\n"))
                    .unwrap_or_default();
                let chunk: Value = serde_json::from_str(data).unwrap_or_default();
                chunk
                    .pointer("/choices/0/delta/content")
                    .and_then(Value::as_str)
                    .unwrap_or_default()
                    .to_owned()
            })
            .collect();
        assert_eq!(text, CANNED_REPLIES[1]);
        assert!(events.len() > 5, "streamed in pieces: {}", events.len());
    }
}

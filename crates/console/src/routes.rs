//! The console's HTTP routes: the page and its assets, `/api/events` (Server-Sent Events),
//! `/api/console/live` (the snapshot as JSON) and `/metrics`.

use std::convert::Infallible;
use std::sync::Arc;
use std::time::Duration;

use axum::Router;
use axum::extract::{Query, State};
use axum::http::{HeaderMap, HeaderValue, header};
use axum::response::sse::{Event, KeepAlive, Sse};
use axum::response::{IntoResponse, Response};
use axum::routing::get;
use futures::{Stream, StreamExt, stream};
use serde::Deserialize;
use tokio::sync::broadcast;

use crate::auth::require_bearer;
use crate::error::ConsoleRejection;
use crate::hub::{Console, PublishedEvent};

const PAGE_HTML: &str = include_str!("../assets/console.html");
const PAGE_JS: &str = include_str!("../assets/console.js");
const PAGE_CSS: &str = include_str!("../assets/console.css");

/// The page loads only its own script, style and (authorised, fetched) recordings.
const CONTENT_SECURITY_POLICY: &str = "default-src 'self'; script-src 'self'; style-src 'self'; \
     media-src 'self' blob:; img-src 'self' data:; connect-src 'self'; frame-ancestors 'none'; \
     base-uri 'none'; form-action 'none'";

/// SSE comment sent when nothing else was, so proxies keep the stream open.
const KEEP_ALIVE_INTERVAL: Duration = Duration::from_secs(15);

impl Console {
    /// The console's routes, to merge into the server's router:
    /// - `GET /console` (+ `/console/app.js`, `/console/app.css`): the page. It holds no data:
    ///   everything it shows comes from the token-protected API, so it is served to anyone.
    /// - `GET /api/events[?call=CA…]`: Server-Sent Events. First `event: snapshot`
    ///   (`{"seq","calls":[LiveCall…]}`), then `event: call` per call event
    ///   (`{"seq","at_ms","event":{"type":…}}`), `event: dropped` (`{"dropped":n}`) when the
    ///   browser read too slowly and lost events (reconnect for a fresh snapshot).
    /// - `GET /api/console/live[?call=CA…]`: the snapshot as JSON.
    /// - `GET /metrics`: Prometheus text exposition.
    ///
    /// All but the page require `Authorization: Bearer $CRMD_API_TOKEN` (503 when it is unset).
    pub fn router(&self) -> Router {
        debug_assert_eq!(
            ROUTE_PATHS.len(),
            7,
            "keep ROUTE_PATHS in step with router()"
        );
        Router::new()
            .route("/console", get(page))
            .route("/console/", get(page))
            .route("/console/app.js", get(script))
            .route("/console/app.css", get(style))
            .route("/api/events", get(events))
            .route("/api/console/live", get(live))
            .route("/metrics", get(metrics))
            .with_state(self.clone())
    }
}

/// Every path [`Console::router`] serves, for servers that mount the router path by path under
/// their own layers (`Router::route_service`).
pub const ROUTE_PATHS: [&str; 7] = [
    "/console",
    "/console/",
    "/console/app.js",
    "/console/app.css",
    "/api/events",
    "/api/console/live",
    "/metrics",
];

fn asset(content_type: &'static str, body: &'static str) -> Response {
    (
        [
            (header::CONTENT_TYPE, HeaderValue::from_static(content_type)),
            (header::CACHE_CONTROL, HeaderValue::from_static("no-cache")),
            (
                header::CONTENT_SECURITY_POLICY,
                HeaderValue::from_static(CONTENT_SECURITY_POLICY),
            ),
            (
                header::X_CONTENT_TYPE_OPTIONS,
                HeaderValue::from_static("nosniff"),
            ),
            (
                header::REFERRER_POLICY,
                HeaderValue::from_static("no-referrer"),
            ),
        ],
        body,
    )
        .into_response()
}

async fn page() -> Response {
    asset("text/html; charset=utf-8", PAGE_HTML)
}

async fn script() -> Response {
    asset("text/javascript; charset=utf-8", PAGE_JS)
}

async fn style() -> Response {
    asset("text/css; charset=utf-8", PAGE_CSS)
}

#[derive(Debug, Deserialize)]
struct CallFilter {
    call: Option<String>,
}

impl CallFilter {
    /// The CallSid to filter on; CallSids are ASCII letters and digits (Twilio: `CA` + 32 hex).
    fn validated(self) -> Result<Option<String>, ConsoleRejection> {
        match self.call {
            None => Ok(None),
            Some(call) if call.is_empty() => Ok(None),
            Some(call) if call.len() <= 64 && call.bytes().all(|b| b.is_ascii_alphanumeric()) => {
                Ok(Some(call))
            }
            Some(call) => Err(ConsoleRejection::InvalidCallFilter {
                length: call.chars().count(),
            }),
        }
    }
}

async fn live(
    State(console): State<Console>,
    headers: HeaderMap,
    Query(filter): Query<CallFilter>,
) -> Result<Response, ConsoleRejection> {
    require_bearer(&headers, console.api_token())?;
    let call = filter.validated()?;
    let (calls, seq, _) = console.subscribe(call.as_deref());
    Ok(axum::Json(serde_json::json!({ "seq": seq, "calls": calls })).into_response())
}

async fn metrics(
    State(console): State<Console>,
    headers: HeaderMap,
) -> Result<Response, ConsoleRejection> {
    require_bearer(&headers, console.api_token())?;
    Ok((
        [(
            header::CONTENT_TYPE,
            HeaderValue::from_static("text/plain; version=0.0.4; charset=utf-8"),
        )],
        console.render_metrics(),
    )
        .into_response())
}

/// Keeps `crmd_console_sse_clients` right however the stream ends.
struct ClientGuard(Console);

impl ClientGuard {
    fn new(console: Console) -> Self {
        console.metrics().sse_client_connected();
        ClientGuard(console)
    }
}

impl Drop for ClientGuard {
    fn drop(&mut self) {
        self.0.metrics().sse_client_gone();
    }
}

struct Subscription {
    receiver: broadcast::Receiver<Arc<PublishedEvent>>,
    call: Option<String>,
    guard: ClientGuard,
}

async fn events(
    State(console): State<Console>,
    headers: HeaderMap,
    Query(filter): Query<CallFilter>,
) -> Result<Sse<impl Stream<Item = Result<Event, Infallible>>>, ConsoleRejection> {
    require_bearer(&headers, console.api_token())?;
    let call = filter.validated()?;
    let (calls, seq, receiver) = console.subscribe(call.as_deref());
    let snapshot = Event::default()
        .event("snapshot")
        .id(seq.to_string())
        .json_data(serde_json::json!({ "seq": seq, "calls": calls }))
        .unwrap_or_else(|_| Event::default().event("snapshot").data("{}"));
    let subscription = Subscription {
        receiver,
        call,
        guard: ClientGuard::new(console),
    };
    let live = stream::unfold(subscription, |mut subscription| async move {
        loop {
            match subscription.receiver.recv().await {
                Ok(published) => {
                    if subscription
                        .call
                        .as_ref()
                        .is_some_and(|call| *call != published.call_sid)
                    {
                        continue;
                    }
                    let event = Event::default()
                        .event("call")
                        .id(published.seq.to_string())
                        .data(published.json.as_str());
                    return Some((Ok(event), subscription));
                }
                Err(broadcast::error::RecvError::Lagged(dropped)) => {
                    // This browser fell `dropped` events behind: they are gone for it only.
                    subscription.guard.0.metrics().observe_sse_dropped(dropped);
                    let event = Event::default()
                        .event("dropped")
                        .data(format!(r#"{{"dropped":{dropped}}}"#));
                    return Some((Ok(event), subscription));
                }
                Err(broadcast::error::RecvError::Closed) => return None,
            }
        }
    });
    let body = stream::once(async move { Ok(snapshot) }).chain(live);
    Ok(Sse::new(body).keep_alive(KeepAlive::new().interval(KEEP_ALIVE_INTERVAL)))
}

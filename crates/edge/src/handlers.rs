//! Request handlers: health, version, the Twilio voice webhooks and the Media Streams upgrade.

use std::net::SocketAddr;
use std::time::Duration;

use axum::Json;
use axum::extract::ws::WebSocketUpgrade;
use axum::extract::{ConnectInfo, State};
use axum::http::header::CONTENT_TYPE;
use axum::http::{HeaderMap, StatusCode};
use axum::response::{IntoResponse, Response};
use serde::Serialize;
use tracing::Instrument;

use crate::admission::Verdict;
use crate::error::RequestError;
use crate::media::{MediaStreamContext, TWILIO_SUBPROTOCOL};
use crate::server::EdgeState;
use crate::twilio_form::TwilioForm;

/// How long a webhook waits for its CRM write before answering Twilio anyway (the write goes on).
const CRM_WRITE_WAIT: Duration = Duration::from_secs(3);

/// How long a webhook's CRM write keeps being retried while the database is unavailable.
const CRM_RETRY_FOR: Duration = Duration::from_secs(300);

/// First pause before retrying a CRM write; it doubles up to [`CRM_RETRY_MAX_PAUSE`].
const CRM_RETRY_FIRST_PAUSE: Duration = Duration::from_millis(250);

/// Longest pause between two tries of a CRM write.
const CRM_RETRY_MAX_PAUSE: Duration = Duration::from_secs(10);

/// `GET /`: 200 and a pointer to the useful endpoints (platforms that health-check `/` pass too).
pub async fn root() -> &'static str {
    "crmd: see /healthz, /readyz and /version\n"
}

/// `GET /healthz`: liveness only, no database round trip.
pub async fn healthz() -> &'static str {
    "ok"
}

#[derive(Debug, Serialize)]
struct Readiness {
    ready: bool,
    database: String,
    speech: String,
    twilio_signatures: bool,
    live_calls: usize,
}

/// `GET /readyz`: 200 when the database answers, 503 otherwise; says what is missing.
pub async fn readyz(State(state): State<EdgeState>) -> Response {
    let database = match state.store() {
        None => Err("not configured".to_owned()),
        Some(store) => match tokio::time::timeout(Duration::from_secs(2), store.ping()).await {
            Ok(Ok(())) => Ok(()),
            Ok(Err(e)) => Err(e.to_string()),
            Err(_) => Err("no answer within 2 s".to_owned()),
        },
    };
    let speech = if state.config().speech.has_credentials() {
        "configured".to_owned()
    } else if state.config().speech.plaintext_endpoints() {
        "plaintext endpoints (no credentials needed)".to_owned()
    } else {
        "missing: set GOOGLE_APPLICATION_CREDENTIALS or GCP_CREDENTIALS_JSON (calls get the offline fallback)".to_owned()
    };
    let body = Readiness {
        ready: database.is_ok(),
        database: match &database {
            Ok(()) => "ok".to_owned(),
            Err(e) => format!("unavailable: {e}"),
        },
        speech,
        twilio_signatures: state.config().twilio.auth_token.is_some(),
        live_calls: state.sessions().live(),
    };
    let status = if body.ready {
        StatusCode::OK
    } else {
        StatusCode::SERVICE_UNAVAILABLE
    };
    (status, Json(body)).into_response()
}

#[derive(Debug, Serialize)]
struct VersionBody<'a> {
    service: &'static str,
    version: &'a str,
    git_commit: &'a str,
    build_time: &'a str,
    marker: String,
    deploy_id: Option<&'a str>,
    started_at: String,
    uptime_s: i64,
}

/// `GET /version`: which build answers. Never contains configuration values other than `DEPLOY_ID`.
pub async fn version(State(state): State<EdgeState>) -> Json<serde_json::Value> {
    let build = state.build();
    let body = VersionBody {
        service: "crmd",
        version: &build.version,
        git_commit: &build.git_commit,
        build_time: &build.build_time,
        marker: build.marker(),
        deploy_id: state.config().server.deploy_id.as_deref(),
        started_at: state
            .started_at()
            .to_rfc3339_opts(chrono::SecondsFormat::Secs, true),
        uptime_s: (chrono::Utc::now() - state.started_at()).num_seconds(),
    };
    // Serializing a struct of strings and integers cannot fail; fall back to null regardless.
    Json(serde_json::to_value(body).unwrap_or_default())
}

/// Fallback for unknown paths: `404` with a short plain body.
pub async fn not_found() -> (StatusCode, &'static str) {
    (StatusCode::NOT_FOUND, "not found\n")
}

/// When Twilio says a callback's event happened (`Timestamp`), so a callback Twilio sends again
/// carries the same time and is stored once (events are unique by call, kind and time). Read
/// as RFC 3339 or RFC 2822 (both appear in Twilio's callbacks) or Unix seconds/milliseconds;
/// the receipt time when absent or unreadable.
fn twilio_event_time_ms(form: &TwilioForm) -> i64 {
    form.get("Timestamp")
        .and_then(parse_twilio_time_ms)
        .unwrap_or_else(now_ms)
}

fn parse_twilio_time_ms(value: &str) -> Option<i64> {
    let value = value.trim();
    if let Ok(number) = value.parse::<i64>() {
        // Seconds until the year 5138, milliseconds after.
        return (number > 0).then(|| {
            if number < 100_000_000_000 {
                number.saturating_mul(1000)
            } else {
                number
            }
        });
    }
    chrono::DateTime::parse_from_rfc3339(value)
        .or_else(|_| chrono::DateTime::parse_from_rfc2822(value))
        .ok()
        .map(|t| t.timestamp_millis())
}

fn now_ms() -> i64 {
    chrono::Utc::now().timestamp_millis()
}

fn checked_call_sid(form: &TwilioForm) -> Result<String, RequestError> {
    let sid = form.require("CallSid")?;
    let ok = sid.len() <= 64
        && sid
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || b == b'_' || b == b'-');
    if !ok {
        return Err(RequestError::InvalidField {
            field: "CallSid",
            reason: "expected 1 to 64 letters, digits, `_` or `-`",
        });
    }
    Ok(sid.to_owned())
}

/// Runs a CRM write off the request task and waits for it at most [`CRM_WRITE_WAIT`]; a slow or
/// failing database never costs Twilio its answer. A write that fails because the database is
/// unavailable (locked, restarting, unreachable) is tried again in the background, with a
/// growing pause, for up to [`CRM_RETRY_FOR`]: a short outage does not lose the call or its
/// caller's number. Every outcome is logged with the call id.
async fn crm_write<F, Fut>(what: &'static str, call_sid: &str, mut write: F)
where
    F: FnMut() -> Fut + Send + 'static,
    Fut: std::future::Future<Output = Result<(), crm::CrmError>> + Send + 'static,
{
    let sid = call_sid.to_owned();
    let task = tokio::spawn(
        async move {
            let started = tokio::time::Instant::now();
            let mut pause = CRM_RETRY_FIRST_PAUSE;
            let mut attempts = 1u32;
            loop {
                match write().await {
                    Ok(()) => {
                        if attempts > 1 {
                            tracing::info!(call_sid = %sid, attempts, "CRM: {what} stored after retries");
                        }
                        return;
                    }
                    Err(e) if e.is_transient() && started.elapsed() + pause <= CRM_RETRY_FOR => {
                        tracing::warn!(
                            call_sid = %sid, attempts, retry_in_ms = pause.as_millis() as u64,
                            "CRM: {what} not stored yet, database unavailable: {e}"
                        );
                        tokio::time::sleep(pause).await;
                        pause = (pause * 2).min(CRM_RETRY_MAX_PAUSE);
                        attempts += 1;
                    }
                    Err(e) => {
                        tracing::error!(call_sid = %sid, attempts, "CRM: {what} not stored: {e}");
                        return;
                    }
                }
            }
        }
        .in_current_span(),
    );
    match tokio::time::timeout(CRM_WRITE_WAIT, task).await {
        Ok(Ok(())) => {}
        Ok(Err(join)) => tracing::error!(call_sid, "CRM: {what} task failed: {join}"),
        Err(_) => tracing::warn!(
            call_sid,
            "CRM: {what} still running after {CRM_WRITE_WAIT:?}; answering Twilio, it goes on in the background"
        ),
    }
}

/// `POST /webhook/incoming_call`: TwiML that connects the call to `/ws/twilio-media`; records the
/// call and the caller's contact.
pub async fn incoming_call(
    State(state): State<EdgeState>,
    form: TwilioForm,
) -> Result<Response, RequestError> {
    let call_sid = checked_call_sid(&form)?;
    let span = tracing::info_span!("incoming_call", call_sid = %call_sid);
    async move {
        let verdict = state
            .admission()
            .decide(state.sessions().live(), std::time::Instant::now());
        let (twiml, status) = match &verdict {
            Verdict::Admit => {
                tracing::info!(
                    from = form.get("From").unwrap_or("?"),
                    signature_verified = form.signature_verified,
                    stream_url = %form.public_base.wss("/ws/twilio-media"),
                    "incoming call: answering with <Connect><Stream>"
                );
                let twiml = twilio_stream::twiml::connect_stream(&form.public_base, &call_sid);
                (twiml, form.get("CallStatus").map(str::to_owned))
            }
            Verdict::Busy(reason) => {
                tracing::warn!(
                    from = form.get("From").unwrap_or("?"),
                    %reason,
                    refused_total = state.admission().refused_total(),
                    "incoming call refused with a busy signal: the server is at capacity"
                );
                (twilio_stream::twiml::reject_busy(), Some("busy".to_owned()))
            }
        };
        if let Some(store) = state.store().cloned() {
            // Twilio sends E.164 (`+972…`); the store links a contact only to a valid E.164
            // number and keeps anything else (e.g. `anonymous`) as received.
            let from = form.get("From").map(str::to_owned);
            let call = crm::NewCall {
                call_sid: call_sid.clone(),
                account_sid: form.get("AccountSid").map(str::to_owned),
                from,
                to: form.get("To").map(str::to_owned),
                direction: form.get("Direction").unwrap_or("inbound").to_owned(),
                status,
                caller_name: form.get("CallerName").map(str::to_owned),
                at_ms: now_ms(),
            };
            crm_write("incoming call", &call_sid, move || {
                let (store, call) = (store.clone(), call.clone());
                async move { store.record_incoming_call(&call).await.map(|_| ()) }
            })
            .await;
        }
        Ok(([(CONTENT_TYPE, "text/xml; charset=utf-8")], twiml).into_response())
    }
    .instrument(span)
    .await
}

/// `POST /webhook/stream_status`: records the stream event on the call; empty `204`.
pub async fn stream_status(
    State(state): State<EdgeState>,
    form: TwilioForm,
) -> Result<StatusCode, RequestError> {
    let call_sid = checked_call_sid(&form)?;
    // Twilio sends StreamEvent; older notes and manual checks use Status.
    let kind = form
        .get("StreamEvent")
        .or_else(|| form.get("Status"))
        .unwrap_or("unknown")
        .to_owned();
    let event = crm::StreamEventRecord {
        kind,
        stream_sid: form.get("StreamSid").map(str::to_owned),
        error: form.get("StreamError").map(str::to_owned),
        at_ms: twilio_event_time_ms(&form),
    };
    let span = tracing::info_span!("stream_status", call_sid = %call_sid);
    async move {
        tracing::info!(
            event = %event.kind,
            stream_sid = event.stream_sid.as_deref().unwrap_or("?"),
            error = event.error.as_deref().unwrap_or(""),
            "stream status"
        );
        if let Some(store) = state.store().cloned() {
            let sid = call_sid.clone();
            crm_write("stream event", &call_sid, move || {
                let (store, sid, event) = (store.clone(), sid.clone(), event.clone());
                async move { store.record_stream_event(&sid, &event).await }
            })
            .await;
        }
        Ok(StatusCode::NO_CONTENT)
    }
    .instrument(span)
    .await
}

/// `POST /webhook/stream_ended` (the `<Connect action>`): the stream is over and no more TwiML
/// follows, so Twilio ends the call. Records both; empty `204`.
pub async fn stream_ended(
    State(state): State<EdgeState>,
    form: TwilioForm,
) -> Result<StatusCode, RequestError> {
    let call_sid = checked_call_sid(&form)?;
    let span = tracing::info_span!("stream_ended", call_sid = %call_sid);
    async move {
        tracing::info!(
            call_status = form.get("CallStatus").unwrap_or("?"),
            "stream ended; call ends"
        );
        if let Some(store) = state.store().cloned() {
            let sid = call_sid.clone();
            let at_ms = now_ms();
            crm_write("stream end", &call_sid, move || {
                let (store, sid) = (store.clone(), sid.clone());
                async move {
                    let event = crm::StreamEventRecord {
                        kind: "stream-ended".to_owned(),
                        stream_sid: None,
                        error: None,
                        at_ms,
                    };
                    // Once per call: a retried action request adds no second row.
                    store.record_stream_event_once(&sid, &event).await?;
                    store.mark_call_ended(&sid, at_ms, "completed").await
                }
            })
            .await;
        }
        Ok(StatusCode::NO_CONTENT)
    }
    .instrument(span)
    .await
}

/// Read buffer of a media WebSocket (see `media_stream_upgrade`).
const MEDIA_READ_BUFFER_BYTES: usize = 1024;

/// `GET /ws/twilio-media`: upgrades (echoing `audio.twilio.com` when offered, accepting a client
/// that offers none) and hands the socket to the configured [`crate::MediaStreamHandler`].
pub async fn media_stream_upgrade(
    State(state): State<EdgeState>,
    ConnectInfo(remote_addr): ConnectInfo<SocketAddr>,
    headers: HeaderMap,
    ws: WebSocketUpgrade,
) -> Response {
    // Twilio's messages are a few hundred bytes; 1 MiB bounds what any client can make us buffer.
    // tungstenite zero-fills the free part of its read buffer (up to `read_buffer_size`) before
    // every socket read: at the 128 KiB default that memset was 84 % of crmd's instructions per
    // call (callgrind, one call) and 128 KiB of RSS per call; at 4 KiB it was still 12 %. 1 KiB
    // holds two or three media messages (about 350 bytes each, and a live call has one waiting
    // at a time); a larger frame grows the buffer as needed.
    let ws = ws
        .read_buffer_size(MEDIA_READ_BUFFER_BYTES)
        .protocols([TWILIO_SUBPROTOCOL])
        .max_message_size(1 << 20)
        .max_frame_size(1 << 20);
    let offered_subprotocol = ws.selected_protocol().is_some();
    let request_id = headers
        .get("x-request-id")
        .and_then(|v| v.to_str().ok())
        .unwrap_or("-")
        .to_owned();
    tracing::info!(
        remote = %remote_addr,
        offered_subprotocol,
        twilio_signature_present = headers.contains_key(crate::twilio_form::TWILIO_SIGNATURE_HEADER),
        "media stream upgrade: 101{}",
        if offered_subprotocol { " with Sec-WebSocket-Protocol: audio.twilio.com" } else { " (no subprotocol offered)" }
    );
    let ctx = MediaStreamContext {
        remote_addr: Some(remote_addr),
        offered_subprotocol,
        request_id,
        shutdown: state.sessions().shutdown_token(),
    };
    let handler = state.media_handler();
    let sessions = state.sessions().clone();
    ws.on_failed_upgrade(|e| tracing::warn!("media stream upgrade failed: {e}"))
        .on_upgrade(move |socket| {
            // The call answered longest ago hands its place to this stream.
            state.admission().stream_opened();
            sessions.spawn(handler.handle(socket, ctx));
            std::future::ready(())
        })
}

#[cfg(test)]
mod tests {
    use super::parse_twilio_time_ms;

    #[test]
    fn twilio_timestamps_are_read_in_every_form_seen() {
        let at = 1_765_000_000_000; // 2025-12-06T05:46:40Z
        assert_eq!(parse_twilio_time_ms("2025-12-06T05:46:40Z"), Some(at));
        assert_eq!(
            parse_twilio_time_ms("2025-12-06T05:46:40.250Z"),
            Some(at + 250)
        );
        assert_eq!(
            parse_twilio_time_ms("Sat, 06 Dec 2025 05:46:40 +0000"),
            Some(at)
        );
        assert_eq!(parse_twilio_time_ms("1765000000"), Some(at));
        assert_eq!(parse_twilio_time_ms("1765000000000"), Some(at));
        for unreadable in ["", "x", "-5", "0", "yesterday"] {
            assert_eq!(parse_twilio_time_ms(unreadable), None, "{unreadable}");
        }
    }
}

//! The async driver of one simulated call: the signed incoming-call webhook, the TwiML, the
//! Media Streams WebSocket (offering `audio.twilio.com`), the [`CallerSession`] run loop and
//! the stream status callbacks Twilio would send.

use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use futures::{SinkExt, StreamExt};
use tokio_tungstenite::tungstenite::Message;
use tokio_tungstenite::tungstenite::client::IntoClientRequest;
use tokio_tungstenite::tungstenite::error::{Error as WsError, ProtocolError, SubProtocolError};
use tokio_tungstenite::tungstenite::http::HeaderValue;
use tokio_tungstenite::tungstenite::protocol::WebSocketConfig;

use crate::session::{CallIdentity, CallPlan, CallReport, CallerSession, Ending, Outbound};
use crate::twiml::{ConnectStream, TwimlError, parse_connect_stream};

/// The subprotocol Twilio offers on the upgrade.
pub const TWILIO_SUBPROTOCOL: &str = "audio.twilio.com";
/// Path of crmd's incoming-call webhook.
pub const INCOMING_CALL_PATH: &str = "/webhook/incoming_call";
/// How long the caller waits for the server's close frame after its own.
const CLOSE_WAIT: Duration = Duration::from_secs(2);
/// Read and write buffer of the simulator's WebSocket (a few agent messages).
const WS_BUFFER_BYTES: usize = 8 * 1024;
/// Beyond the plan's duration, a call is cut off after this much more time.
const CALL_SLACK: Duration = Duration::from_secs(30);

/// Where calls go: an `http://` server on the loopback interface.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Target {
    authority: String,
}

impl Target {
    /// Parses `http://127.0.0.1:PORT` (also `localhost` or `[::1]`); anything not on this
    /// machine is refused, so a load run can never hit a real deployment.
    ///
    /// # Errors
    /// [`CallError::TargetNotLocal`] or [`CallError::InvalidTarget`].
    pub fn parse(url: &str) -> Result<Self, CallError> {
        let invalid = |reason: &str| CallError::InvalidTarget {
            url: url.to_owned(),
            reason: reason.to_owned(),
        };
        let rest = url
            .strip_prefix("http://")
            .ok_or_else(|| invalid("use http://HOST:PORT (the simulator speaks plain HTTP and ws://, as behind a TLS-terminating proxy)"))?;
        let authority = rest.split('/').next().unwrap_or_default();
        if authority.is_empty() || authority.contains('@') {
            return Err(invalid("no host"));
        }
        let host = match authority.rsplit_once(':') {
            Some((host, port)) if !host.ends_with(':') && port.parse::<u16>().is_ok() => host,
            Some(_) if authority.starts_with('[') && authority.ends_with(']') => authority,
            Some(_) => return Err(invalid("the port is not a number")),
            None => authority,
        };
        let local = matches!(host, "127.0.0.1" | "localhost" | "[::1]")
            || host
                .parse::<std::net::Ipv4Addr>()
                .is_ok_and(|ip| ip.is_loopback());
        if !local {
            return Err(CallError::TargetNotLocal {
                url: url.to_owned(),
            });
        }
        Ok(Self {
            authority: authority.to_owned(),
        })
    }

    /// `host:port`.
    #[must_use]
    pub fn authority(&self) -> &str {
        &self.authority
    }

    /// `http://host:port{path}`.
    #[must_use]
    pub fn http_url(&self, path: &str) -> String {
        format!("http://{}{path}", self.authority)
    }

    /// The URL the simulator actually connects to for a public URL from the TwiML: same path,
    /// this target's authority, plain `http`/`ws` (the TLS-terminating proxy is simulated).
    #[must_use]
    pub fn local_equivalent(&self, public_url: &str) -> String {
        let (scheme, rest) = public_url
            .split_once("://")
            .unwrap_or(("https", public_url));
        let path = rest.find('/').map_or("/", |at| &rest[at..]);
        let local_scheme = if scheme.starts_with("ws") {
            "ws"
        } else {
            "http"
        };
        format!("{local_scheme}://{}{path}", self.authority)
    }
}

/// Settings shared by every call of a run.
#[derive(Clone)]
pub struct CallOptions {
    /// The server.
    pub target: Target,
    /// Twilio auth token: webhooks are signed with it when set.
    pub auth_token: Option<String>,
    /// The server's `PUBLIC_BASE_URL`, when it has one: webhooks are signed for this URL.
    /// Otherwise `https://HOST:PORT` is signed and `X-Forwarded-Proto: https` sent, as a
    /// TLS-terminating proxy would.
    pub public_base_url: Option<String>,
    /// Caller number (`From`).
    pub from: String,
    /// Called number (`To`).
    pub to: String,
    /// Send the stream status callbacks and the `<Connect action>` request, as Twilio does.
    pub callbacks: bool,
    /// Keep the agent's audio for a WAV.
    pub record_agent_audio: bool,
    /// Bound for the webhook and the WebSocket handshake.
    pub connect_timeout: Duration,
}

impl std::fmt::Debug for CallOptions {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("CallOptions")
            .field("target", &self.target)
            .field(
                "auth_token",
                &self.auth_token.as_ref().map(|_| "<redacted>"),
            )
            .field("public_base_url", &self.public_base_url)
            .field("from", &self.from)
            .field("to", &self.to)
            .field("callbacks", &self.callbacks)
            .field("record_agent_audio", &self.record_agent_audio)
            .finish()
    }
}

impl CallOptions {
    /// Defaults for `target`: unsigned, Israeli test numbers, callbacks on, no recording.
    #[must_use]
    pub fn new(target: Target) -> Self {
        Self {
            target,
            auth_token: None,
            public_base_url: None,
            from: "+972501234567".to_owned(),
            to: "+97235550100".to_owned(),
            callbacks: true,
            record_agent_audio: false,
            connect_timeout: Duration::from_secs(10),
        }
    }

    /// The public URL Twilio would request for `path`.
    fn public_url(&self, path: &str) -> String {
        match &self.public_base_url {
            Some(base) => format!("{}{path}", base.trim_end_matches('/')),
            None => format!("https://{}{path}", self.target.authority),
        }
    }
}

/// Why a call could not be placed.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum CallError {
    /// The URL is not `http://HOST:PORT`.
    #[error("--url {url:?} is not usable: {reason}")]
    InvalidTarget {
        /// The URL.
        url: String,
        /// What is wrong.
        reason: String,
    },
    /// The URL is not on this machine.
    #[error(
        "--url {url:?} is not on this machine; callsim only calls 127.0.0.1, [::1] or localhost"
    )]
    TargetNotLocal {
        /// The URL.
        url: String,
    },
    /// The webhook request failed.
    #[error("POST {url} failed: {reason}")]
    Webhook {
        /// The URL.
        url: String,
        /// What failed.
        reason: String,
    },
    /// The webhook answered with an error status.
    #[error("POST {url} answered {status}: {body}")]
    WebhookStatus {
        /// The URL.
        url: String,
        /// HTTP status.
        status: u16,
        /// Start of the body.
        body: String,
    },
    /// The answer is not usable TwiML.
    #[error("the incoming-call webhook's answer: {0}")]
    Twiml(#[from] TwimlError),
    /// The WebSocket handshake failed.
    #[error("WebSocket upgrade at {url} failed: {reason}")]
    WebSocket {
        /// The URL.
        url: String,
        /// What failed.
        reason: String,
    },
    /// The 101 did not carry `Sec-WebSocket-Protocol: audio.twilio.com`.
    #[error(
        "the WebSocket 101 at {url} does not echo `Sec-WebSocket-Protocol: audio.twilio.com` \
         (got {got:?}); Twilio treats that as a failed handshake and the call is lost: echo the \
         offered subprotocol"
    )]
    SubprotocolNotEchoed {
        /// The URL.
        url: String,
        /// What the 101 carried.
        got: Option<String>,
    },
}

/// The HTTP client for webhooks: no proxy (targets are loopback only), no Nagle delay.
#[must_use]
pub fn http_client() -> reqwest::Client {
    reqwest::Client::builder()
        .no_proxy()
        .tcp_nodelay(true)
        .pool_max_idle_per_host(64)
        .build()
        .unwrap_or_default()
}

static SID_COUNTER: AtomicU64 = AtomicU64::new(0);

/// A Twilio-shaped id: `prefix` + 32 lowercase hex digits, unique within the process.
#[must_use]
pub fn new_sid(prefix: &str) -> String {
    let nanos = SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| d.as_nanos() as u64);
    let counter = SID_COUNTER.fetch_add(1, Ordering::Relaxed);
    let mix = |mut z: u64| {
        z = (z ^ (z >> 30)).wrapping_mul(0xbf58_476d_1ce4_e5b9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94d0_49bb_1331_11eb);
        z ^ (z >> 31)
    };
    let high = mix(nanos ^ u64::from(std::process::id()).rotate_left(32));
    format!("{prefix}{high:016x}{:016x}", mix(high ^ counter) ^ counter)
}

/// New ids for one call.
#[must_use]
pub fn new_identity() -> CallIdentity {
    CallIdentity {
        account_sid: format!("AC{:032x}", 0xca11_5100_u64),
        call_sid: new_sid("CA"),
        stream_sid: new_sid("MZ"),
    }
}

fn excerpt(text: &str) -> String {
    let mut short: String = text.chars().take(200).collect();
    if short.len() < text.len() {
        short.push('…');
    }
    short
}

/// Posts a form signed as Twilio signs it.
async fn post_signed(
    client: &reqwest::Client,
    options: &CallOptions,
    local_url: &str,
    public_url: &str,
    params: &[(String, String)],
    timeout: Duration,
) -> Result<(u16, String), String> {
    let mut request = client
        .post(local_url)
        .header("X-Forwarded-Proto", "https")
        .header("I-Twilio-Idempotency-Token", new_sid(""))
        .form(params)
        .timeout(timeout);
    if let Some(token) = &options.auth_token {
        request = request.header(
            "X-Twilio-Signature",
            twilio_stream::signature::sign_form(token, public_url, params),
        );
    }
    let response = request.send().await.map_err(|e| e.to_string())?;
    let status = response.status().as_u16();
    let body = response.text().await.map_err(|e| e.to_string())?;
    Ok((status, body))
}

fn pairs(items: &[(&str, &str)]) -> Vec<(String, String)> {
    items
        .iter()
        .map(|(k, v)| ((*k).to_owned(), (*v).to_owned()))
        .collect()
}

/// Places the incoming-call webhook and reads the `<Connect><Stream>` answer.
///
/// # Errors
/// [`CallError::Webhook`], [`CallError::WebhookStatus`], [`CallError::Twiml`].
pub async fn request_twiml(
    client: &reqwest::Client,
    options: &CallOptions,
    identity: &CallIdentity,
) -> Result<ConnectStream, CallError> {
    let local_url = options.target.http_url(INCOMING_CALL_PATH);
    let public_url = options.public_url(INCOMING_CALL_PATH);
    let params = pairs(&[
        ("AccountSid", &identity.account_sid),
        ("ApiVersion", "2010-04-01"),
        ("CallSid", &identity.call_sid),
        ("CallStatus", "ringing"),
        ("Called", &options.to),
        ("Caller", &options.from),
        ("CallerCountry", "IL"),
        ("Direction", "inbound"),
        ("From", &options.from),
        ("FromCountry", "IL"),
        ("To", &options.to),
        ("ToCountry", "IL"),
    ]);
    let (status, body) = post_signed(
        client,
        options,
        &local_url,
        &public_url,
        &params,
        options.connect_timeout,
    )
    .await
    .map_err(|reason| CallError::Webhook {
        url: local_url.clone(),
        reason,
    })?;
    if status != 200 {
        return Err(CallError::WebhookStatus {
            url: local_url,
            status,
            body: excerpt(&body),
        });
    }
    Ok(parse_connect_stream(&body)?)
}

type WsStream =
    tokio_tungstenite::WebSocketStream<tokio_tungstenite::MaybeTlsStream<tokio::net::TcpStream>>;

/// Opens the Media Streams WebSocket at `ws_url`, offering `audio.twilio.com` (and sending a
/// `X-Twilio-Signature` for `public_url` when signing), and insists the 101 echoes it.
///
/// # Errors
/// [`CallError::WebSocket`], [`CallError::SubprotocolNotEchoed`].
pub async fn connect_media_stream(
    ws_url: &str,
    public_url: &str,
    auth_token: Option<&str>,
    timeout: Duration,
) -> Result<WsStream, CallError> {
    let failed = |reason: String| CallError::WebSocket {
        url: ws_url.to_owned(),
        reason,
    };
    let mut request = ws_url
        .into_client_request()
        .map_err(|e| failed(e.to_string()))?;
    request.headers_mut().insert(
        "Sec-WebSocket-Protocol",
        HeaderValue::from_static(TWILIO_SUBPROTOCOL),
    );
    if let Some(token) = auth_token
        && let Ok(value) =
            HeaderValue::from_str(&twilio_stream::signature::sign_url(token, public_url))
    {
        request.headers_mut().insert("X-Twilio-Signature", value);
    }
    // Media Streams messages are ~300 bytes: small buffers keep a load run's memory per call low
    // (tungstenite's default reserves 128 KiB for reading per socket).
    let config = WebSocketConfig::default()
        .read_buffer_size(WS_BUFFER_BYTES)
        .write_buffer_size(WS_BUFFER_BYTES);
    let connect = tokio_tungstenite::connect_async_with_config(request, Some(config), true);
    let (socket, response) = match tokio::time::timeout(timeout, connect).await {
        Err(_) => return Err(failed(format!("no 101 within {timeout:?}"))),
        Ok(Err(WsError::Protocol(ProtocolError::SecWebSocketSubProtocolError(
            SubProtocolError::NoSubProtocol,
        )))) => {
            return Err(CallError::SubprotocolNotEchoed {
                url: ws_url.to_owned(),
                got: None,
            });
        }
        Ok(Err(WsError::Protocol(ProtocolError::SecWebSocketSubProtocolError(other)))) => {
            return Err(CallError::SubprotocolNotEchoed {
                url: ws_url.to_owned(),
                got: Some(other.to_string()),
            });
        }
        Ok(Err(WsError::Http(response))) => {
            return Err(failed(format!(
                "answered {} instead of 101 (Twilio error 31920)",
                response.status()
            )));
        }
        Ok(Err(e)) => return Err(failed(e.to_string())),
        Ok(Ok(pair)) => pair,
    };
    let echoed = response
        .headers()
        .get("Sec-WebSocket-Protocol")
        .and_then(|v| v.to_str().ok())
        .map(str::to_owned);
    if echoed.as_deref() != Some(TWILIO_SUBPROTOCOL) {
        return Err(CallError::SubprotocolNotEchoed {
            url: ws_url.to_owned(),
            got: echoed,
        });
    }
    Ok(socket)
}

/// The outcome of one call: its report and, when recording, the agent's audio.
#[derive(Debug)]
pub struct CallOutcome {
    /// The report.
    pub report: CallReport,
    /// Agent audio (8 kHz mu-law) as the caller heard it.
    pub agent_audio: Option<Vec<u8>>,
}

fn now_timestamp() -> String {
    let secs = SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| d.as_secs());
    secs.to_string()
}

fn spawn_callback(
    client: &reqwest::Client,
    options: &CallOptions,
    public_url: &str,
    params: Vec<(String, String)>,
    errors: &Arc<AtomicU64>,
) -> tokio::task::JoinHandle<()> {
    let client = client.clone();
    let options = options.clone();
    let public_url = public_url.to_owned();
    let local_url = options.target.local_equivalent(&public_url);
    let errors = Arc::clone(errors);
    tokio::spawn(async move {
        match post_signed(
            &client,
            &options,
            &local_url,
            &public_url,
            &params,
            Duration::from_secs(5),
        )
        .await
        {
            Ok((status, _)) if (200..300).contains(&status) => {}
            Ok((status, body)) => {
                errors.fetch_add(1, Ordering::Relaxed);
                tracing::warn!("POST {local_url} answered {status}: {}", excerpt(&body));
            }
            Err(reason) => {
                errors.fetch_add(1, Ordering::Relaxed);
                tracing::warn!("POST {local_url} failed: {reason}");
            }
        }
    })
}

fn stream_status_params(
    identity: &CallIdentity,
    connect: &ConnectStream,
    event: &str,
) -> Vec<(String, String)> {
    let name = connect.stream_name.clone().unwrap_or_default();
    pairs(&[
        ("AccountSid", &identity.account_sid),
        ("CallSid", &identity.call_sid),
        ("StreamSid", &identity.stream_sid),
        ("StreamName", &name),
        ("StreamEvent", event),
        ("Timestamp", &now_timestamp()),
    ])
}

/// Places one call and runs `plan` to its end.
///
/// # Errors
/// [`CallError`] when the call could not be set up (webhook, TwiML or handshake). Failures after
/// the handshake end the call and are in the report (`ended_by`, `protocol_errors`).
pub async fn run_call(
    client: &reqwest::Client,
    options: &CallOptions,
    plan: Arc<CallPlan>,
    identity: CallIdentity,
    silence_base64: Arc<str>,
) -> Result<CallOutcome, CallError> {
    let webhook_started = Instant::now();
    let connect = request_twiml(client, options, &identity).await?;
    let webhook_ms = webhook_started.elapsed().as_secs_f64() * 1e3;
    let mut setup_violations = Vec::new();
    if !connect.stream_url.starts_with("wss://") {
        setup_violations.push(format!(
            "<Stream url={:?}> is not wss://; Twilio refuses it (31922)",
            connect.stream_url
        ));
    }
    if connect.stream_url.contains('?') {
        setup_violations.push(format!(
            "<Stream url={:?}> carries a query string; Twilio drops it: use <Parameter>",
            connect.stream_url
        ));
    }
    let ws_url = options.target.local_equivalent(&connect.stream_url);
    let ws_started = Instant::now();
    let socket = connect_media_stream(
        &ws_url,
        &connect.stream_url,
        options.auth_token.as_deref(),
        options.connect_timeout,
    )
    .await?;
    let ws_connect_ms = ws_started.elapsed().as_secs_f64() * 1e3;

    let callback_errors = Arc::new(AtomicU64::new(0));
    let mut callbacks = Vec::new();
    let mut session = CallerSession::new(
        Arc::clone(&plan),
        identity.clone(),
        connect.parameters.clone(),
        silence_base64,
        options.record_agent_audio,
    );
    // One socket, not split halves: reads happen inside the `select!` and writes after it, so
    // no lock is needed between them.
    let mut socket = socket;
    session.handle_connected(Instant::now());
    if options.callbacks
        && let Some(url) = &connect.status_callback
    {
        callbacks.push(spawn_callback(
            client,
            options,
            url,
            stream_status_params(&identity, &connect, "stream-started"),
            &callback_errors,
        ));
    }
    let hard_deadline = tokio::time::Instant::now() + plan.max_duration + CALL_SLACK;
    let mut close_sent = false;
    // One timer for the whole call, reset to the next wake-up, instead of two new timers per
    // loop turn (the next frame and the hard deadline).
    let timer = tokio::time::sleep_until(hard_deadline);
    tokio::pin!(timer);
    loop {
        let mut aborted = false;
        let mut wrote = false;
        while let Some(outbound) = session.poll_transmit(Instant::now()) {
            let sent = match outbound {
                Outbound::Text(text) => {
                    wrote = true;
                    socket.feed(Message::text(text)).await
                }
                Outbound::Close => {
                    close_sent = true;
                    socket.send(Message::Close(None)).await
                }
                Outbound::Abort => {
                    aborted = true;
                    break;
                }
            };
            if let Err(e) = sent {
                session.handle_socket_error(Instant::now(), e.to_string());
            }
        }
        if wrote && let Err(e) = socket.flush().await {
            session.handle_socket_error(Instant::now(), e.to_string());
        }
        if aborted || session.is_finished() {
            break;
        }
        let wake = session.poll_timeout().map_or(hard_deadline, |at| {
            tokio::time::Instant::from_std(at).min(hard_deadline)
        });
        if timer.deadline() != wake {
            timer.as_mut().reset(wake);
        }
        tokio::select! {
            biased;
            () = &mut timer => {
                if tokio::time::Instant::now() >= hard_deadline {
                    session.handle_socket_error(Instant::now(), "the call exceeded its time bound".to_owned());
                }
            }
            message = socket.next() => {
                let now = Instant::now();
                match message {
                    Some(Ok(Message::Text(text))) => session.handle_agent_text(now, text.as_str()),
                    Some(Ok(Message::Binary(data))) => session.handle_agent_binary(data.len()),
                    Some(Ok(Message::Close(_))) | None => session.handle_server_closed(now),
                    Some(Ok(_)) => {}
                    Some(Err(e)) => session.handle_socket_error(now, e.to_string()),
                }
            }
        }
    }
    let ended_at = Instant::now();
    if close_sent {
        // Read until the server's close (bounded), so the server sees an orderly end.
        let _ = tokio::time::timeout(CLOSE_WAIT, async {
            while let Some(Ok(message)) = socket.next().await {
                if matches!(message, Message::Close(_)) {
                    break;
                }
            }
        })
        .await;
    }
    // Dropping both halves closes the TCP connection (without a close frame after an abort).
    drop(socket);

    if options.callbacks {
        if let Some(url) = &connect.status_callback {
            callbacks.push(spawn_callback(
                client,
                options,
                url,
                stream_status_params(&identity, &connect, "stream-stopped"),
                &callback_errors,
            ));
        }
        if matches!(session.ending(), Some(Ending::ServerClosed))
            && let Some(action) = &connect.action
        {
            let params = pairs(&[
                ("AccountSid", &identity.account_sid),
                ("ApiVersion", "2010-04-01"),
                ("CallSid", &identity.call_sid),
                ("CallStatus", "in-progress"),
                ("Direction", "inbound"),
                ("From", &options.from),
                ("To", &options.to),
            ]);
            callbacks.push(spawn_callback(
                client,
                options,
                action,
                params,
                &callback_errors,
            ));
        }
    }
    for callback in callbacks {
        let _ = callback.await;
    }
    let mut report = session.report(ended_at);
    report.webhook_ms = Some(webhook_ms);
    report.ws_connect_ms = Some(ws_connect_ms);
    report.callback_errors =
        u32::try_from(callback_errors.load(Ordering::Relaxed)).unwrap_or(u32::MAX);
    report.protocol_errors += u32::try_from(setup_violations.len()).unwrap_or(0);
    let mut samples = setup_violations;
    samples.append(&mut report.protocol_error_samples);
    report.protocol_error_samples = samples;
    Ok(CallOutcome {
        report,
        agent_audio: session.take_recording(),
    })
}

/// A caller plan for `callsim call`.
#[must_use]
pub fn call_plan(steps: Vec<crate::steps::Step>) -> CallPlan {
    let total: Duration = steps
        .iter()
        .map(|step| match step {
            crate::steps::Step::Say(clip) => Duration::from_millis(clip.duration_ms()),
            crate::steps::Step::Wait(d) | crate::steps::Step::Listen(d) => *d,
            crate::steps::Step::Dtmf(digits) => {
                Duration::from_millis(100 * digits.len() as u64 + 20)
            }
            crate::steps::Step::Interrupt { clip, .. } => {
                crate::steps::INTERRUPT_WAIT_LIMIT + Duration::from_millis(clip.duration_ms())
            }
            crate::steps::Step::HangUpWithoutStop => Duration::ZERO,
        })
        .sum();
    CallPlan {
        steps,
        loop_from: None,
        max_duration: total + Duration::from_secs(1),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn only_loopback_http_targets_are_accepted() {
        assert_eq!(
            Target::parse("http://127.0.0.1:8080").unwrap().authority(),
            "127.0.0.1:8080"
        );
        assert_eq!(
            Target::parse("http://localhost:1/x").unwrap().authority(),
            "localhost:1"
        );
        assert_eq!(
            Target::parse("http://[::1]:9").unwrap().authority(),
            "[::1]:9"
        );
        assert_eq!(
            Target::parse("http://127.9.9.9").unwrap().authority(),
            "127.9.9.9"
        );
        assert!(matches!(
            Target::parse("http://example.com:8080"),
            Err(CallError::TargetNotLocal { .. })
        ));
        assert!(matches!(
            Target::parse("http://10.0.0.1"),
            Err(CallError::TargetNotLocal { .. })
        ));
        assert!(matches!(
            Target::parse("https://127.0.0.1"),
            Err(CallError::InvalidTarget { .. })
        ));
        assert!(matches!(
            Target::parse("http://127.0.0.1:port"),
            Err(CallError::InvalidTarget { .. })
        ));
        assert!(matches!(
            Target::parse("http://user@127.0.0.1"),
            Err(CallError::InvalidTarget { .. })
        ));
    }

    #[test]
    fn public_urls_map_to_the_target_like_a_tls_proxy() {
        let target = Target::parse("http://127.0.0.1:8080").unwrap();
        assert_eq!(
            target.local_equivalent("wss://ai-crmd.example/ws/twilio-media"),
            "ws://127.0.0.1:8080/ws/twilio-media"
        );
        assert_eq!(
            target.local_equivalent("https://ai-crmd.example/webhook/stream_status"),
            "http://127.0.0.1:8080/webhook/stream_status"
        );
        let mut options = CallOptions::new(target);
        assert_eq!(
            options.public_url(INCOMING_CALL_PATH),
            "https://127.0.0.1:8080/webhook/incoming_call"
        );
        options.public_base_url = Some("https://crmd.example.com/".to_owned());
        assert_eq!(
            options.public_url(INCOMING_CALL_PATH),
            "https://crmd.example.com/webhook/incoming_call"
        );
        options.auth_token = Some("secret-token".to_owned());
        assert!(!format!("{options:?}").contains("secret-token"));
    }

    #[test]
    fn sids_look_like_twilios_and_do_not_repeat() {
        let a = new_sid("CA");
        let b = new_sid("CA");
        assert_eq!(a.len(), 34);
        assert!(a.starts_with("CA") && a[2..].bytes().all(|c| c.is_ascii_hexdigit()));
        assert_ne!(a, b);
        assert_eq!(new_identity().account_sid.len(), 34);
    }
}

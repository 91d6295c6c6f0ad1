//! Shared state, the router with its layers, start-up preparation and the serve loop with
//! graceful shutdown.

use std::fmt;
use std::future::Future;
use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use axum::Router;
use axum::extract::DefaultBodyLimit;
use axum::http::{HeaderName, HeaderValue, Request, Response, StatusCode};
use axum::routing::{get, post};
use chrono::{DateTime, Utc};
use futures::future::BoxFuture;
use tokio::net::TcpListener;
use tokio_util::sync::CancellationToken;
use tower::ServiceBuilder;
use tower_http::catch_panic::CatchPanicLayer;
use tower_http::request_id::{MakeRequestUuid, PropagateRequestIdLayer, SetRequestIdLayer};
use tower_http::set_header::SetResponseHeaderLayer;
use tower_http::trace::TraceLayer;

use crate::admission::Admission;
use crate::build_info::BuildInfo;
use crate::config::{Config, redact_database_url};
use crate::error::StartupError;
use crate::media::{MediaStreamHandler, SessionTracker};
use crate::whatsapp_routes::{self, WhatsAppChannel};
use crate::{api, handlers};

/// Response header naming the build on every response.
pub const APP_SIGNATURE_HEADER: &str = "x-app-signature";

/// Everything a request handler may need. Cheap to clone.
#[derive(Clone)]
pub struct EdgeState {
    inner: Arc<Inner>,
}

struct Inner {
    config: Arc<Config>,
    build: BuildInfo,
    app_signature: HeaderValue,
    started_at: DateTime<Utc>,
    store: Option<crm::Store>,
    media_handler: Arc<dyn MediaStreamHandler>,
    sessions: SessionTracker,
    admission: Admission,
    /// Runs once at shutdown, after live calls drained and before the database closes
    /// (flushes queued CRM writes).
    before_close: std::sync::Mutex<Option<BoxFuture<'static, ()>>>,
    /// Serves the WhatsApp routes once set (they answer `503` before).
    whatsapp: std::sync::OnceLock<WhatsAppChannel>,
}

impl fmt::Debug for EdgeState {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("EdgeState")
            .field("config", &self.inner.config)
            .field("build", &self.inner.build)
            .field("started_at", &self.inner.started_at)
            .field("store", &self.inner.store.as_ref().map(|s| s.backend()))
            .field("live_sessions", &self.inner.sessions.live())
            .field(
                "whatsapp_sending",
                &self.whatsapp().map(WhatsAppChannel::sending_enabled),
            )
            .finish_non_exhaustive()
    }
}

impl EdgeState {
    /// State for the router. `store` is `None` only in tests that do not need the CRM.
    pub fn new(
        config: Arc<Config>,
        build: BuildInfo,
        store: Option<crm::Store>,
        media_handler: Arc<dyn MediaStreamHandler>,
    ) -> Self {
        let app_signature = build.app_signature(config.server.deploy_id.as_deref());
        let admission = Admission::new(config.server.max_calls);
        Self {
            inner: Arc::new(Inner {
                config,
                build,
                app_signature,
                started_at: Utc::now(),
                store,
                media_handler,
                sessions: SessionTracker::new(),
                admission,
                before_close: std::sync::Mutex::new(None),
                whatsapp: std::sync::OnceLock::new(),
            }),
        }
    }

    /// Serves the WhatsApp webhooks and `POST /api/whatsapp/send` through `whatsapp` (until it
    /// is set they answer `503`). Set it once, while building the state; a second call is
    /// ignored with a warning.
    pub fn set_whatsapp(&self, whatsapp: WhatsAppChannel) {
        if self.inner.whatsapp.set(whatsapp).is_err() {
            tracing::warn!("the WhatsApp channel was already set; the second one is ignored");
        }
    }

    /// The WhatsApp channel, once [`EdgeState::set_whatsapp`] was called.
    pub fn whatsapp(&self) -> Option<&WhatsAppChannel> {
        self.inner.whatsapp.get()
    }

    /// Work to run once at shutdown after live calls have drained and before the database
    /// closes, e.g. flushing a queue of CRM writes. A later call replaces an earlier hook.
    pub fn set_before_close(&self, hook: BoxFuture<'static, ()>) {
        if let Ok(mut slot) = self.inner.before_close.lock() {
            *slot = Some(hook);
        }
    }

    /// The validated configuration.
    pub fn config(&self) -> &Config {
        &self.inner.config
    }

    /// The running build.
    pub fn build(&self) -> &BuildInfo {
        &self.inner.build
    }

    /// The `X-App-Signature` value.
    pub fn app_signature(&self) -> &HeaderValue {
        &self.inner.app_signature
    }

    /// When this process's state was built.
    pub fn started_at(&self) -> DateTime<Utc> {
        self.inner.started_at
    }

    /// The CRM store, when one is connected.
    pub fn store(&self) -> Option<&crm::Store> {
        self.inner.store.as_ref()
    }

    /// The handler that receives upgraded Media Streams sockets.
    pub fn media_handler(&self) -> Arc<dyn MediaStreamHandler> {
        Arc::clone(&self.inner.media_handler)
    }

    /// Live Media Streams sessions.
    pub fn sessions(&self) -> &SessionTracker {
        &self.inner.sessions
    }

    /// Whether new calls are answered (`MAX_CALLS`, the binary's overload probe).
    pub fn admission(&self) -> &Admission {
        &self.inner.admission
    }
}

/// The routes without layers or state (voice webhooks, WebSocket, WhatsApp webhooks and send,
/// the `/api/*` read API), for composing more routes before [`with_layers`] adds the layers.
pub fn routes() -> Router<EdgeState> {
    Router::new()
        .route("/", get(handlers::root))
        .route("/healthz", get(handlers::healthz))
        .route("/readyz", get(handlers::readyz))
        .route("/version", get(handlers::version))
        .route("/webhook/incoming_call", post(handlers::incoming_call))
        .route("/webhook/stream_status", post(handlers::stream_status))
        .route("/webhook/stream_ended", post(handlers::stream_ended))
        .route("/ws/twilio-media", get(handlers::media_stream_upgrade))
        .route(
            "/webhook/whatsapp/twilio",
            post(whatsapp_routes::twilio_inbound),
        )
        .route(
            "/webhook/whatsapp/status",
            post(whatsapp_routes::twilio_status),
        )
        .route(
            "/webhook/whatsapp/bridge",
            post(whatsapp_routes::bridge_inbound),
        )
        .route("/api/whatsapp/send", post(whatsapp_routes::send))
        .route("/api/contacts", get(api::list_contacts))
        .route("/api/contacts/{id}", get(api::get_contact))
        .route("/api/calls", get(api::list_calls))
        .route("/api/calls/{call_sid}", get(api::get_call))
        .route("/api/calls/{call_sid}/recording", get(api::get_recording))
        .route("/api/messages", get(api::list_messages))
        .route("/api/tasks", get(api::list_tasks))
        .route("/api/tasks/{id}/done", post(api::mark_task_done))
        .fallback(handlers::not_found)
}

/// The complete application: [`routes`] plus body limit, request ids, tracing, panic catching and
/// `X-App-Signature` on every response (errors, 404 and the WebSocket 101 included).
pub fn router(state: EdgeState) -> Router {
    with_layers(routes(), state)
}

/// Adds the edge's layers and state to `routes` (which may include routes beyond [`routes()`]).
pub fn with_layers(routes: Router<EdgeState>, state: EdgeState) -> Router {
    let request_id = HeaderName::from_static("x-request-id");
    let layers = ServiceBuilder::new()
        .layer(SetRequestIdLayer::new(request_id.clone(), MakeRequestUuid))
        .layer(PropagateRequestIdLayer::new(request_id))
        .layer(SetResponseHeaderLayer::overriding(
            HeaderName::from_static(APP_SIGNATURE_HEADER),
            state.app_signature().clone(),
        ))
        .layer(
            TraceLayer::new_for_http()
                .make_span_with(|req: &Request<_>| {
                    let request_id = req
                        .headers()
                        .get("x-request-id")
                        .and_then(|v| v.to_str().ok())
                        .unwrap_or("-");
                    tracing::info_span!("request", method = %req.method(), path = %req.uri().path(), request_id)
                })
                .on_request(())
                .on_response(|res: &Response<_>, latency: Duration, _span: &tracing::Span| {
                    tracing::debug!(status = res.status().as_u16(), latency_us = latency.as_micros() as u64, "response");
                }),
        )
        .layer(CatchPanicLayer::custom(|_panic: Box<dyn std::any::Any + Send>| {
            tracing::error!("a request handler panicked; answered 500");
            (StatusCode::INTERNAL_SERVER_ERROR, "internal error\n").into_response_boxed()
        }))
        .layer(DefaultBodyLimit::max(state.config().server.max_body_bytes));
    routes.layer(layers).with_state(state)
}

trait IntoBoxedResponse {
    fn into_response_boxed(self) -> Response<axum::body::Body>;
}

impl<T: axum::response::IntoResponse> IntoBoxedResponse for T {
    fn into_response_boxed(self) -> Response<axum::body::Body> {
        self.into_response()
    }
}

/// What start-up prepared from the configuration.
#[derive(Debug)]
pub struct Prepared {
    /// The configuration, shared.
    pub config: Arc<Config>,
    /// The connected (and migrated) CRM store.
    pub store: crm::Store,
    /// Google credentials, when configured and valid.
    pub google_credentials: Option<Arc<speech::GoogleCredentials>>,
}

/// Validates the Google credentials and connects the database. Configuration problems map to
/// exit code 2 ([`StartupError::exit_code`]).
pub async fn prepare(config: Config) -> Result<Prepared, StartupError> {
    let speech = &config.speech;
    let path = speech
        .application_credentials_path
        .as_ref()
        .map(|p| p.to_string_lossy().into_owned());
    let google_credentials = speech::GoogleCredentials::from_env_values(
        path.as_deref(),
        speech.credentials_json.as_ref().map(|s| s.expose()),
    )
    .map_err(|e| {
        let variable = if speech.application_credentials_path.is_some() {
            "GOOGLE_APPLICATION_CREDENTIALS"
        } else {
            "GCP_CREDENTIALS_JSON"
        };
        let reason = e.to_string();
        let reason = if reason.contains(variable) {
            reason
        } else {
            format!("{variable}: {reason}")
        };
        StartupError::Credentials { variable, reason }
    })?
    .map(Arc::new);
    let url = config.database_url.expose();
    let store = crm::Store::connect(url)
        .await
        .map_err(|e| StartupError::Database {
            url: redact_database_url(url),
            reason: e.to_string(),
        })?;
    Ok(Prepared {
        config: Arc::new(config),
        store,
        google_credentials,
    })
}

/// Binds `0.0.0.0:$PORT` (or another address, for tests).
pub async fn bind(addr: SocketAddr) -> Result<TcpListener, StartupError> {
    TcpListener::bind(addr)
        .await
        .map_err(|source| StartupError::Listen {
            addr: addr.to_string(),
            source,
        })
}

/// How a graceful shutdown went.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ShutdownReport {
    /// Media Streams sessions started over the server's life.
    pub sessions_started: u64,
    /// Sessions still running when the grace period ran out (ended by process exit).
    pub sessions_cut_off: usize,
}

/// Serves `router(state)` on `listener` until `shutdown` completes, then: stops accepting, lets
/// live calls finish within `SHUTDOWN_GRACE_S`, closes (flushes) the database and returns.
///
/// Logs, in this order: `Listening at: http://ADDR`, `Health endpoints registered`, the
/// one-line configuration summary, and a warning when Twilio signature checks are off.
pub async fn serve(
    listener: TcpListener,
    state: EdgeState,
    shutdown: impl Future<Output = ()> + Send + 'static,
) -> Result<ShutdownReport, StartupError> {
    serve_router(listener, router(state.clone()), state, shutdown).await
}

/// [`serve`] with a router the caller built (e.g. [`with_layers`] over extra routes).
pub async fn serve_router(
    listener: TcpListener,
    app: Router,
    state: EdgeState,
    shutdown: impl Future<Output = ()> + Send + 'static,
) -> Result<ShutdownReport, StartupError> {
    let addr = listener.local_addr().map_err(StartupError::Serve)?;
    tracing::info!("Listening at: http://{addr}");
    tracing::info!("Health endpoints registered: GET /healthz, GET /readyz, GET /version, GET /");
    tracing::info!("{}", state.config().summary_line());
    if state.config().twilio.auth_token.is_none() {
        tracing::warn!(
            "TWILIO_AUTH_TOKEN is not set: Twilio webhook signatures are NOT checked; set it in production"
        );
    }

    let stop_accepting = CancellationToken::new();
    // Media frames are small and paced every 20 ms: Nagle's algorithm would hold a frame back
    // until the previous one is acknowledged (tens of ms), bunching audio and undoing the pacing.
    let listener = axum::serve::ListenerExt::tap_io(listener, |tcp| {
        if let Err(error) = tcp.set_nodelay(true) {
            tracing::debug!(%error, "TCP_NODELAY could not be set on an accepted socket");
        }
    });
    let server = axum::serve(
        listener,
        app.into_make_service_with_connect_info::<SocketAddr>(),
    )
    .with_graceful_shutdown(stop_accepting.clone().cancelled_owned());
    let mut server = tokio::spawn(async move { server.await });

    tokio::select! {
        () = shutdown => {}
        finished = &mut server => {
            // The accept loop only ends on its own after an I/O error.
            return match finished {
                Ok(Err(e)) => Err(StartupError::Serve(e)),
                Ok(Ok(())) => Err(StartupError::Serve(std::io::Error::other("server stopped unexpectedly"))),
                Err(join) => Err(StartupError::Serve(std::io::Error::other(join.to_string()))),
            };
        }
    }

    let grace = state.config().server.shutdown_grace;
    let deadline = tokio::time::Instant::now() + grace;
    tracing::info!(
        live_calls = state.sessions().live(),
        "shutdown requested: no longer accepting connections; live calls may finish within {}s",
        grace.as_secs()
    );
    stop_accepting.cancel();
    let sessions_cut_off = state.sessions().drain(grace).await;
    if sessions_cut_off > 0 {
        tracing::warn!(
            sessions_cut_off,
            "grace period over: {sessions_cut_off} call(s) still live are cut off"
        );
    }
    if tokio::time::timeout_at(deadline, &mut server)
        .await
        .is_err()
    {
        tracing::warn!("grace period over: closing remaining HTTP connections");
        server.abort();
    }
    let before_close = state
        .inner
        .before_close
        .lock()
        .ok()
        .and_then(|mut slot| slot.take());
    if let Some(hook) = before_close {
        hook.await;
    }
    if let Some(store) = state.store() {
        store.close().await;
        tracing::info!("database closed");
    }
    let report = ShutdownReport {
        sessions_started: state.sessions().started_total(),
        sessions_cut_off,
    };
    tracing::info!(?report, "shutdown complete");
    Ok(report)
}

/// Completes on SIGTERM or SIGINT (Ctrl-C). The handlers are registered when this function is
/// called (not when the future is first polled), so a signal that arrives while the server is
/// still logging its start-up lines is not lost. Call it inside the runtime, before [`serve`].
pub fn shutdown_signal() -> impl Future<Output = ()> + Send + 'static {
    #[cfg(unix)]
    {
        use tokio::signal::unix::{SignalKind, signal};
        let terminate = signal(SignalKind::terminate());
        let interrupt = signal(SignalKind::interrupt());
        async move {
            match (terminate, interrupt) {
                (Ok(mut terminate), Ok(mut interrupt)) => tokio::select! {
                    _ = terminate.recv() => tracing::info!("SIGTERM received"),
                    _ = interrupt.recv() => tracing::info!("SIGINT received"),
                },
                (Err(e), _) | (_, Err(e)) => {
                    tracing::error!(
                        "cannot listen for SIGTERM/SIGINT ({e}); falling back to Ctrl-C only"
                    );
                    let _ = tokio::signal::ctrl_c().await;
                }
            }
        }
    }
    #[cfg(not(unix))]
    {
        async move {
            let _ = tokio::signal::ctrl_c().await;
            tracing::info!("Ctrl-C received");
        }
    }
}

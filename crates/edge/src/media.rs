//! The hand-off of an upgraded `/ws/twilio-media` WebSocket to whatever runs the call.
//!
//! The router owns the upgrade (subprotocol echo, request id, session tracking); a
//! [`MediaStreamHandler`] owns the socket afterwards. Today that is the [`crate::offline`]
//! fallback; the call session plugs in through the same trait.

use std::net::SocketAddr;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};

use axum::extract::ws::WebSocket;
use futures::future::BoxFuture;
use tokio_util::sync::CancellationToken;
use tokio_util::task::TaskTracker;

/// The Media Streams subprotocol Twilio offers on the upgrade.
pub const TWILIO_SUBPROTOCOL: &str = "audio.twilio.com";

/// Runs one upgraded Media Streams WebSocket until the call ends.
///
/// The returned future is spawned on the session tracker: the server waits for it (up to
/// `SHUTDOWN_GRACE_S`) on shutdown, and [`MediaStreamContext::shutdown`] fires when shutdown begins
/// so the handler can wind the call down politely.
pub trait MediaStreamHandler: Send + Sync + 'static {
    /// Takes over `socket`; the future completes when the call is over and the socket closed.
    fn handle(&self, socket: WebSocket, ctx: MediaStreamContext) -> BoxFuture<'static, ()>;
}

/// What the edge knows about an upgraded Media Streams connection.
#[derive(Debug, Clone)]
pub struct MediaStreamContext {
    /// Peer address of the TCP connection (a proxy's address when behind one).
    pub remote_addr: Option<SocketAddr>,
    /// True when the client offered `audio.twilio.com` (and the 101 echoed it).
    pub offered_subprotocol: bool,
    /// The upgrade request's `x-request-id`.
    pub request_id: String,
    /// Cancelled when the server begins a graceful shutdown.
    pub shutdown: CancellationToken,
}

/// Counts and tracks live Media Streams sessions for graceful shutdown.
#[derive(Debug, Clone, Default)]
pub struct SessionTracker {
    tasks: TaskTracker,
    shutdown: CancellationToken,
    started: Arc<AtomicU64>,
}

impl SessionTracker {
    /// A tracker with no sessions.
    pub fn new() -> Self {
        Self::default()
    }

    /// Spawns a session; it counts as live until its future completes.
    pub fn spawn(&self, session: BoxFuture<'static, ()>) {
        self.started.fetch_add(1, Ordering::Relaxed);
        self.tasks.spawn(session);
    }

    /// Sessions currently running.
    pub fn live(&self) -> usize {
        self.tasks.len()
    }

    /// Sessions started since the server began.
    pub fn started_total(&self) -> u64 {
        self.started.load(Ordering::Relaxed)
    }

    /// The token handed to every session as [`MediaStreamContext::shutdown`].
    pub fn shutdown_token(&self) -> CancellationToken {
        self.shutdown.clone()
    }

    /// Signals shutdown to every session and waits until all have ended or `grace` has passed.
    /// Returns how many sessions were still running when the wait ended.
    pub async fn drain(&self, grace: std::time::Duration) -> usize {
        self.shutdown.cancel();
        self.tasks.close();
        let _ = tokio::time::timeout(grace, self.tasks.wait()).await;
        self.tasks.len()
    }
}

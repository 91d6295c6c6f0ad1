//! Graceful shutdown of the in-process server: live calls are told and allowed to finish within
//! the grace period, new connections are refused, the database is closed; calls that ignore the
//! signal are cut off when the grace period ends.
#![allow(clippy::unwrap_used)]

mod common;

use std::sync::Arc;
use std::time::Duration;

use axum::extract::ws::{Message, WebSocket};
use common::TestServer;
use edge::{MediaStreamContext, MediaStreamHandler};
use futures::StreamExt;
use futures::future::BoxFuture;
use tokio_tungstenite::tungstenite;

/// Greets, then on shutdown says goodbye and closes (what a call session should do).
struct PoliteSession;

impl MediaStreamHandler for PoliteSession {
    fn handle(&self, mut socket: WebSocket, ctx: MediaStreamContext) -> BoxFuture<'static, ()> {
        Box::pin(async move {
            let _ = socket
                .send(Message::text(format!(
                    "hello subprotocol={}",
                    ctx.offered_subprotocol
                )))
                .await;
            ctx.shutdown.cancelled().await;
            let _ = socket.send(Message::text("bye")).await;
            let _ = socket.send(Message::Close(None)).await;
        })
    }
}

/// Ignores the shutdown signal and keeps the socket until the peer leaves.
struct StubbornSession;

impl MediaStreamHandler for StubbornSession {
    fn handle(&self, mut socket: WebSocket, _ctx: MediaStreamContext) -> BoxFuture<'static, ()> {
        Box::pin(async move {
            let _ = socket.send(Message::text("hello")).await;
            while let Some(Ok(_)) = socket.recv().await {}
        })
    }
}

async fn text(
    client: &mut (impl StreamExt<Item = Result<tungstenite::Message, tungstenite::Error>> + Unpin),
) -> Option<String> {
    match tokio::time::timeout(Duration::from_secs(5), client.next())
        .await
        .unwrap()
    {
        Some(Ok(tungstenite::Message::Text(t))) => Some(t.to_string()),
        _ => None,
    }
}

#[tokio::test]
async fn live_calls_finish_within_the_grace_period_and_the_database_is_closed() {
    let server =
        TestServer::start_with(&[("SHUTDOWN_GRACE_S", "5")], Arc::new(PoliteSession)).await;
    let addr = server.addr;
    let store = server.store.clone();
    let mut request = tungstenite::client::IntoClientRequest::into_client_request(
        server.ws_url("/ws/twilio-media"),
    )
    .unwrap();
    request.headers_mut().insert(
        "sec-websocket-protocol",
        "audio.twilio.com".parse().unwrap(),
    );
    let (mut client, _) = tokio_tungstenite::connect_async(request).await.unwrap();
    assert_eq!(
        text(&mut client).await.as_deref(),
        Some("hello subprotocol=true")
    );
    assert_eq!(server.state.sessions().live(), 1);

    let shutdown = tokio::spawn(server.shut_down());
    assert_eq!(text(&mut client).await.as_deref(), Some("bye"));
    let report = tokio::time::timeout(Duration::from_secs(5), shutdown)
        .await
        .unwrap()
        .unwrap();
    assert_eq!(report.sessions_started, 1);
    assert_eq!(report.sessions_cut_off, 0);
    assert!(
        store.ping().await.is_err(),
        "database closed after shutdown"
    );
    assert!(
        tokio::net::TcpStream::connect(addr).await.is_err(),
        "listener closed"
    );
}

#[tokio::test]
async fn calls_ignoring_shutdown_are_cut_off_after_the_grace_period() {
    let server =
        TestServer::start_with(&[("SHUTDOWN_GRACE_S", "0")], Arc::new(StubbornSession)).await;
    let (mut client, _) = tokio_tungstenite::connect_async(server.ws_url("/ws/twilio-media"))
        .await
        .unwrap();
    assert_eq!(text(&mut client).await.as_deref(), Some("hello"));
    let report = tokio::time::timeout(Duration::from_secs(5), server.shut_down())
        .await
        .unwrap();
    assert_eq!(report.sessions_started, 1);
    assert_eq!(report.sessions_cut_off, 1);
}

#[tokio::test]
async fn idle_keep_alive_connections_do_not_hold_shutdown() {
    let server = TestServer::start(&[("SHUTDOWN_GRACE_S", "10")]).await;
    let http = common::client();
    // A pooled keep-alive connection stays open after this request.
    assert_eq!(
        http.get(server.url("/healthz"))
            .send()
            .await
            .unwrap()
            .status(),
        200
    );
    let report = tokio::time::timeout(Duration::from_secs(5), server.shut_down())
        .await
        .unwrap();
    assert_eq!(report.sessions_cut_off, 0);
}

//! The WebSocket as the driver sees it: plain messages, independent of axum or tungstenite.
//!
//! The edge adapts `axum::extract::ws::WebSocket` (and tests adapt `tokio-tungstenite`) to a
//! `Stream<Item = Result<WsIn, TransportError>> + Sink<WsOut>`; see [`crate::run_call`].

use bytes::Bytes;

/// A message received on the Twilio Media Streams socket.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum WsIn {
    /// A text frame (every Twilio message is one JSON text frame).
    Text(String),
    /// A binary frame (Twilio never sends one; logged and ignored).
    Binary(Bytes),
    /// A ping; the driver answers it with a pong (an extra pong from the adapter is harmless).
    Ping(Bytes),
    /// A pong answering our keep-alive ping.
    Pong(Bytes),
    /// The peer closed the socket.
    Close,
}

/// A message to send on the socket.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum WsOut {
    /// A text frame (media, mark, clear JSON).
    Text(String),
    /// A keep-alive ping.
    Ping(Bytes),
    /// The answer to a ping.
    Pong(Bytes),
    /// Close the socket.
    Close,
}

/// The socket failed (reset, protocol error). The message is the transport's own description.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("WebSocket transport error: {0}")]
pub struct TransportError(pub String);

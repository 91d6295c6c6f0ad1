//! The call id is on every call-related log line of the offline fallback.
//!
//! Its own test binary on purpose: tracing caches per-callsite interest process-wide, so a
//! thread-local capture subscriber only sees every event when no other test shares the process.
#![allow(clippy::unwrap_used)]

mod common;

use std::sync::Arc;
use std::time::Duration;

use common::TestServer;
use edge::{FallbackPacing, OFFLINE_FALLBACK_CLIP, OfflineFallbackHandler};
use futures::{SinkExt, StreamExt};
use tokio_tungstenite::tungstenite::Message;
use tokio_tungstenite::tungstenite::client::IntoClientRequest;

const CONNECTED: &str = r#"{"event":"connected","protocol":"Call","version":"1.0.0"}"#;
const START: &str = r#"{"event":"start","sequenceNumber":"1","streamSid":"MZ_LOGS","start":{"accountSid":"AC00000000000000000000000000000000","streamSid":"MZ_LOGS","callSid":"CA_LOGCHECK","tracks":["inbound"],"customParameters":{},"mediaFormat":{"encoding":"audio/x-mulaw","sampleRate":8000,"channels":1}}}"#;

/// Collects formatted log lines in memory.
#[derive(Clone, Default)]
struct LogBuffer(Arc<std::sync::Mutex<Vec<u8>>>);

impl std::io::Write for LogBuffer {
    fn write(&mut self, buf: &[u8]) -> std::io::Result<usize> {
        self.0.lock().unwrap().extend_from_slice(buf);
        Ok(buf.len())
    }
    fn flush(&mut self) -> std::io::Result<()> {
        Ok(())
    }
}

#[tokio::test(flavor = "current_thread")]
async fn every_fallback_log_line_after_start_carries_the_call_id() {
    let logs = LogBuffer::default();
    let writer = logs.clone();
    let subscriber = tracing_subscriber::fmt()
        .with_ansi(false)
        .with_max_level(tracing::Level::DEBUG)
        .with_writer(move || writer.clone())
        .finish();
    let _guard = tracing::subscriber::set_default(subscriber);

    let pacing = FallbackPacing {
        frame_interval: Duration::from_millis(1),
        lead_frames: 4,
        start_timeout: Duration::from_secs(5),
        mark_margin: Duration::from_millis(200),
    };
    let handler = OfflineFallbackHandler::new(OFFLINE_FALLBACK_CLIP, pacing);
    let server = TestServer::start_with(&[], Arc::new(handler)).await;
    let request = server
        .ws_url("/ws/twilio-media")
        .into_client_request()
        .unwrap();
    let (mut client, _) = tokio_tungstenite::connect_async(request).await.unwrap();
    client.send(Message::text(CONNECTED)).await.unwrap();
    client.send(Message::text(START)).await.unwrap();
    // Read until the server closes (the mark is not echoed: the fallback hangs up after the margin).
    while let Some(Ok(message)) = tokio::time::timeout(Duration::from_secs(10), client.next())
        .await
        .unwrap()
    {
        if message.is_close() {
            break;
        }
    }
    server.shut_down().await;

    let text = String::from_utf8(logs.0.lock().unwrap().clone()).unwrap();
    let call_lines: Vec<&str> = text
        .lines()
        .skip_while(|l| !l.contains("WS_START"))
        .filter(|l| l.contains("edge::offline"))
        .collect();
    assert!(
        call_lines.len() >= 4,
        "WS_START, TTS_LEN_ms, MEDIA_TX, finished: {text}"
    );
    for line in &call_lines {
        assert!(
            line.contains("call_sid=CA_LOGCHECK"),
            "line without the call id: {line}"
        );
    }
    assert!(call_lines.iter().any(|l| l.contains("TTS_LEN_ms")));
    assert!(call_lines.iter().any(|l| l.contains("MEDIA_TX")));
}

//! `/ws/twilio-media` with a real tokio-tungstenite client: subprotocol echo with and without the
//! offer, and the offline fallback playing its clip then closing.
#![allow(clippy::unwrap_used)]

mod common;

use std::sync::Arc;
use std::time::Duration;

use common::TestServer;
use edge::{FallbackPacing, OFFLINE_FALLBACK_CLIP, OfflineFallbackHandler};
use futures::{SinkExt, StreamExt};
use tokio_tungstenite::tungstenite::Message;
use tokio_tungstenite::tungstenite::client::IntoClientRequest;
use tokio_tungstenite::{MaybeTlsStream, WebSocketStream};

type Client = WebSocketStream<MaybeTlsStream<tokio::net::TcpStream>>;

/// Fast pacing so the whole clip plays in well under a second; same code path as production.
fn fast_pacing() -> FallbackPacing {
    FallbackPacing {
        frame_interval: Duration::from_millis(1),
        lead_frames: 4,
        start_timeout: Duration::from_secs(5),
        mark_margin: Duration::from_millis(300),
    }
}

async fn fast_server() -> TestServer {
    TestServer::start_with(
        &[],
        Arc::new(OfflineFallbackHandler::new(
            OFFLINE_FALLBACK_CLIP,
            fast_pacing(),
        )),
    )
    .await
}

async fn connect(
    server: &TestServer,
    offer: bool,
) -> (
    Client,
    tokio_tungstenite::tungstenite::http::Response<Option<Vec<u8>>>,
) {
    let mut request = server
        .ws_url("/ws/twilio-media")
        .into_client_request()
        .unwrap();
    if offer {
        request.headers_mut().insert(
            "sec-websocket-protocol",
            "audio.twilio.com".parse().unwrap(),
        );
    }
    tokio::time::timeout(
        Duration::from_secs(5),
        tokio_tungstenite::connect_async(request),
    )
    .await
    .unwrap()
    .unwrap()
}

const CONNECTED: &str = r#"{"event":"connected","protocol":"Call","version":"1.0.0"}"#;

fn start_json(stream_sid: &str, call_sid: &str) -> String {
    format!(
        r#"{{"event":"start","sequenceNumber":"1","streamSid":"{stream_sid}","start":{{"accountSid":"AC00000000000000000000000000000000","streamSid":"{stream_sid}","callSid":"{call_sid}","tracks":["inbound"],"customParameters":{{"call_sid":"{call_sid}"}},"mediaFormat":{{"encoding":"audio/x-mulaw","sampleRate":8000,"channels":1}}}}}}"#
    )
}

fn mark_echo(stream_sid: &str, name: &str) -> String {
    format!(
        r#"{{"event":"mark","sequenceNumber":"9","streamSid":"{stream_sid}","mark":{{"name":"{name}"}}}}"#
    )
}

/// Outbound messages as Twilio would see them.
#[derive(Debug, PartialEq)]
enum Outbound {
    Media {
        stream_sid: String,
        payload: Vec<u8>,
    },
    Mark {
        stream_sid: String,
        name: String,
    },
    Close,
}

async fn next_outbound(client: &mut Client) -> Outbound {
    loop {
        let msg = tokio::time::timeout(Duration::from_secs(5), client.next())
            .await
            .unwrap();
        match msg {
            None | Some(Ok(Message::Close(_))) => return Outbound::Close,
            Some(Ok(Message::Text(text))) => {
                let v: serde_json::Value = serde_json::from_str(text.as_str()).unwrap();
                let stream_sid = v["streamSid"].as_str().unwrap().to_owned();
                return match v["event"].as_str().unwrap() {
                    "media" => {
                        use base64::Engine;
                        let payload = base64::engine::general_purpose::STANDARD
                            .decode(v["media"]["payload"].as_str().unwrap())
                            .unwrap();
                        Outbound::Media {
                            stream_sid,
                            payload,
                        }
                    }
                    "mark" => Outbound::Mark {
                        stream_sid,
                        name: v["mark"]["name"].as_str().unwrap().to_owned(),
                    },
                    other => panic!("unexpected outbound event {other}"),
                };
            }
            Some(Ok(Message::Ping(_) | Message::Pong(_))) => {}
            Some(other) => panic!("unexpected frame {other:?}"),
        }
    }
}

#[tokio::test]
async fn offered_subprotocol_is_echoed_in_the_101() {
    let server = fast_server().await;
    let (mut client, response) = connect(&server, true).await;
    assert_eq!(response.status(), 101);
    assert_eq!(
        response.headers()["sec-websocket-protocol"],
        "audio.twilio.com"
    );
    assert!(response.headers().contains_key("x-app-signature"));
    client.close(None).await.unwrap();
    server.shut_down().await;
}

#[tokio::test]
async fn a_client_offering_no_subprotocol_is_accepted_without_one() {
    let server = fast_server().await;
    let (mut client, response) = connect(&server, false).await;
    assert_eq!(response.status(), 101);
    assert!(!response.headers().contains_key("sec-websocket-protocol"));
    client.close(None).await.unwrap();
    server.shut_down().await;
}

#[tokio::test]
async fn offline_fallback_plays_the_clip_waits_for_the_mark_then_closes() {
    let server = fast_server().await;
    let (mut client, _) = connect(&server, true).await;
    client.send(Message::text(CONNECTED)).await.unwrap();
    client
        .send(Message::text(start_json("MZ_FALLBACK", "CA_FALLBACK")))
        .await
        .unwrap();

    let mut audio = Vec::new();
    let mark_name = loop {
        match next_outbound(&mut client).await {
            Outbound::Media {
                stream_sid,
                payload,
            } => {
                assert_eq!(stream_sid, "MZ_FALLBACK");
                assert_eq!(payload.len(), mulaw::FRAME_BYTES, "20 ms frames");
                audio.extend(payload);
            }
            Outbound::Mark { stream_sid, name } => {
                assert_eq!(stream_sid, "MZ_FALLBACK");
                break name;
            }
            Outbound::Close => panic!("closed before the mark"),
        }
    };
    // Every byte of the clip was sent, in order, padded with silence to whole frames.
    assert_eq!(audio.len(), OFFLINE_FALLBACK_CLIP.len().div_ceil(160) * 160);
    assert_eq!(&audio[..OFFLINE_FALLBACK_CLIP.len()], OFFLINE_FALLBACK_CLIP);
    assert!(
        audio[OFFLINE_FALLBACK_CLIP.len()..]
            .iter()
            .all(|&b| b == mulaw::SILENCE)
    );
    // Not silence: the clip has real speech energy.
    let loud = mulaw::decode(&audio)
        .iter()
        .filter(|s| s.unsigned_abs() > 2000)
        .count();
    assert!(loud > 8000, "only {loud} loud samples");

    client
        .send(Message::text(mark_echo("MZ_FALLBACK", &mark_name)))
        .await
        .unwrap();
    assert_eq!(next_outbound(&mut client).await, Outbound::Close);
    server.shut_down().await;
}

#[tokio::test]
async fn offline_fallback_hangs_up_even_when_the_mark_is_never_echoed() {
    let server = fast_server().await;
    let (mut client, _) = connect(&server, true).await;
    client.send(Message::text(CONNECTED)).await.unwrap();
    client
        .send(Message::text(start_json("MZ_NOECHO", "CA_NOECHO")))
        .await
        .unwrap();
    let mut frames = 0;
    let mut saw_mark = false;
    loop {
        match next_outbound(&mut client).await {
            Outbound::Media { .. } => frames += 1,
            Outbound::Mark { .. } => saw_mark = true,
            Outbound::Close => break,
        }
    }
    assert!(saw_mark);
    assert_eq!(frames, OFFLINE_FALLBACK_CLIP.len().div_ceil(160));
    server.shut_down().await;
}

#[tokio::test]
async fn caller_hanging_up_mid_clip_ends_the_session() {
    let slow = FallbackPacing {
        frame_interval: Duration::from_millis(20),
        ..fast_pacing()
    };
    let server = TestServer::start_with(
        &[],
        Arc::new(OfflineFallbackHandler::new(OFFLINE_FALLBACK_CLIP, slow)),
    )
    .await;
    let (mut client, _) = connect(&server, true).await;
    client
        .send(Message::text(start_json("MZ_HANGUP", "CA_HANGUP")))
        .await
        .unwrap();
    for _ in 0..3 {
        assert!(matches!(
            next_outbound(&mut client).await,
            Outbound::Media { .. }
        ));
    }
    client
        .send(Message::text(
            r#"{"event":"stop","sequenceNumber":"5","streamSid":"MZ_HANGUP","stop":{"accountSid":"AC1","callSid":"CA_HANGUP"}}"#,
        ))
        .await
        .unwrap();
    // The session ends long before the 12 s clip would have: shutdown finds nothing live.
    let report = tokio::time::timeout(Duration::from_secs(3), server.shut_down())
        .await
        .unwrap();
    assert_eq!(report.sessions_started, 1);
    assert_eq!(report.sessions_cut_off, 0);
}

#[tokio::test]
async fn a_socket_that_never_sends_start_is_closed() {
    let pacing = FallbackPacing {
        start_timeout: Duration::from_millis(200),
        ..fast_pacing()
    };
    let server = TestServer::start_with(
        &[],
        Arc::new(OfflineFallbackHandler::new(OFFLINE_FALLBACK_CLIP, pacing)),
    )
    .await;
    let (mut client, _) = connect(&server, true).await;
    client.send(Message::text(CONNECTED)).await.unwrap();
    client.send(Message::text("not json at all")).await.unwrap();
    assert_eq!(next_outbound(&mut client).await, Outbound::Close);
    server.shut_down().await;
}

#[test]
fn production_pacing_is_real_time_and_the_clip_is_short_headerless_mulaw() {
    let pacing = FallbackPacing::default();
    assert_eq!(pacing.frame_interval, Duration::from_millis(20));
    assert!(pacing.lead_frames <= 5, "lead stays around 100 ms");
    let ms = mulaw::duration_ms(OFFLINE_FALLBACK_CLIP.len());
    assert!((3_000..=15_000).contains(&ms), "clip is {ms} ms");
    assert_ne!(&OFFLINE_FALLBACK_CLIP[..4], b"RIFF", "no WAV header");
}

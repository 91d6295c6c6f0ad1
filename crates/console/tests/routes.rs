//! The console's routes over real HTTP on 127.0.0.1: the bearer check, `/metrics`, the event
//! stream (snapshot first, then each event once, the `call` filter) and a browser that reads
//! too slowly losing events without holding anything up.
#![allow(clippy::unwrap_used)]

use std::time::Duration;

use call::{CallEvent, EndReason, TurnLatency};
use console::{ApiToken, Console, ConsoleOptions};
use futures::StreamExt;
use tokio::net::TcpListener;

const TOKEN: &str = "console-test-token";
const BOUND: Duration = Duration::from_secs(10);
const SID_A: &str = "CA0000000000000000000000000000000a";
const SID_B: &str = "CA0000000000000000000000000000000b";

async fn serve(console: &Console) -> String {
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let address = listener.local_addr().unwrap();
    let router = console.router();
    tokio::spawn(async move { axum::serve(listener, router).await.unwrap() });
    format!("http://{address}")
}

fn client() -> reqwest::Client {
    reqwest::Client::builder().no_proxy().build().unwrap()
}

fn console_with_token(buffer: usize) -> Console {
    Console::new(ConsoleOptions {
        api_token: ApiToken::new(TOKEN),
        db_queue_depth: Some(std::sync::Arc::new(|| 3)),
        per_browser_buffer: buffer,
        ..ConsoleOptions::default()
    })
}

fn started(sid: &str) -> CallEvent {
    CallEvent::CallStarted {
        call_sid: sid.into(),
        stream_sid: format!("MZ{sid}"),
    }
}

fn said(sid: &str, text: &str) -> CallEvent {
    CallEvent::Transcript {
        call_sid: sid.into(),
        text: text.into(),
        is_final: true,
    }
}

/// An SSE response body read message by message.
struct EventReader {
    body: futures::stream::BoxStream<'static, reqwest::Result<bytes::Bytes>>,
    buffer: String,
}

impl EventReader {
    async fn open(base: &str, query: &str) -> EventReader {
        let response = client()
            .get(format!("{base}/api/events{query}"))
            .bearer_auth(TOKEN)
            .send()
            .await
            .unwrap();
        assert_eq!(response.status(), 200);
        assert_eq!(
            response.headers()["content-type"].to_str().unwrap(),
            "text/event-stream"
        );
        EventReader {
            body: response.bytes_stream().boxed(),
            buffer: String::new(),
        }
    }

    /// The next message as (event name, data), keep-alive comments skipped.
    async fn next(&mut self) -> (String, serde_json::Value) {
        loop {
            if let Some(end) = self.buffer.find("\n\n") {
                let block: String = self.buffer.drain(..end + 2).collect();
                let mut name = String::from("message");
                let mut data = String::new();
                for line in block.lines() {
                    if let Some(value) = line.strip_prefix("event:") {
                        name = value.trim().to_owned();
                    } else if let Some(value) = line.strip_prefix("data:") {
                        data.push_str(value.trim_start());
                    }
                }
                if data.is_empty() {
                    continue;
                }
                return (name, serde_json::from_str(&data).unwrap());
            }
            let chunk = tokio::time::timeout(BOUND, self.body.next())
                .await
                .expect("no SSE message in time")
                .expect("event stream ended")
                .unwrap();
            self.buffer.push_str(std::str::from_utf8(&chunk).unwrap());
        }
    }
}

#[tokio::test]
async fn data_routes_need_the_bearer_token_and_stay_closed_without_one() {
    let open = console_with_token(16);
    let base = serve(&open).await;
    for path in ["/api/events", "/api/console/live", "/metrics"] {
        let missing = client().get(format!("{base}{path}")).send().await.unwrap();
        assert_eq!(missing.status(), 401, "{path}");
        assert_eq!(missing.headers()["www-authenticate"], "Bearer");
        let wrong = client()
            .get(format!("{base}{path}"))
            .bearer_auth("not-the-token")
            .send()
            .await
            .unwrap();
        assert_eq!(wrong.status(), 401, "{path}");
        let body = wrong.text().await.unwrap();
        assert!(body.contains("CRMD_API_TOKEN"), "{body}");
        assert!(!body.contains(TOKEN));
    }
    // The token is not accepted in the query string.
    let query = client()
        .get(format!("{base}/api/console/live?token={TOKEN}"))
        .send()
        .await
        .unwrap();
    assert_eq!(query.status(), 401);

    let closed = Console::new(ConsoleOptions::default());
    let closed_base = serve(&closed).await;
    let response = client()
        .get(format!("{closed_base}/metrics"))
        .bearer_auth(TOKEN)
        .send()
        .await
        .unwrap();
    assert_eq!(response.status(), 503);
    assert!(
        response
            .text()
            .await
            .unwrap()
            .contains("set CRMD_API_TOKEN")
    );

    // The page itself holds no data and is served to anyone, with a strict CSP.
    let page = client()
        .get(format!("{closed_base}/console"))
        .send()
        .await
        .unwrap();
    assert_eq!(page.status(), 200);
    let csp = page.headers()["content-security-policy"].to_str().unwrap();
    assert!(csp.contains("script-src 'self'"), "{csp}");
    assert!(page.text().await.unwrap().contains("/console/app.js"));
    let script = client()
        .get(format!("{closed_base}/console/app.js"))
        .send()
        .await
        .unwrap();
    assert!(
        script.headers()["content-type"]
            .to_str()
            .unwrap()
            .starts_with("text/javascript")
    );
}

#[tokio::test]
async fn metrics_are_prometheus_text_fed_by_events() {
    let console = console_with_token(16);
    let base = serve(&console).await;
    console.handle_call_event(&started(SID_A));
    console.handle_call_event(&CallEvent::AgentText {
        call_sid: SID_A.into(),
        turn: 1,
        kind: "greeting",
        text: "Hello.".into(),
    });
    console.handle_call_event(&CallEvent::BargeIn {
        call_sid: SID_A.into(),
        turn: 1,
        latency_ms: 210,
        heard_text: "Hel".into(),
    });
    console.handle_call_event(&CallEvent::Latency {
        call_sid: SID_A.into(),
        turn: 2,
        latency: TurnLatency {
            eou_ms: Some(500),
            ..TurnLatency::default()
        },
    });
    console.observe_whatsapp_send("sent");
    let response = client()
        .get(format!("{base}/metrics"))
        .bearer_auth(TOKEN)
        .send()
        .await
        .unwrap();
    assert_eq!(response.status(), 200);
    assert_eq!(
        response.headers()["content-type"],
        "text/plain; version=0.0.4; charset=utf-8"
    );
    let text = response.text().await.unwrap();
    for expected in [
        "crmd_calls_active 1\n",
        "crmd_calls_total 1\n",
        "crmd_barge_ins_total 1\n",
        "crmd_turns_total{kind=\"greeting\"} 1\n",
        "crmd_whatsapp_sends_total{status=\"sent\"} 1\n",
        "crmd_db_queue_depth 3\n",
        "crmd_barge_in_latency_seconds_bucket{le=\"0.2\"} 0\n",
        "crmd_barge_in_latency_seconds_bucket{le=\"0.3\"} 1\n",
        "crmd_turn_stage_latency_seconds_count{stage=\"eou\"} 1\n",
        "# TYPE crmd_turn_stage_latency_seconds histogram\n",
    ] {
        assert!(text.contains(expected), "missing {expected:?} in\n{text}");
    }
}

#[tokio::test]
async fn a_late_browser_gets_the_snapshot_then_each_event_once_and_can_follow_one_call() {
    let console = console_with_token(64);
    let base = serve(&console).await;
    console.handle_call_event(&started(SID_A));
    console.handle_call_event(&said(SID_A, "מתי אתם פתוחים?"));
    console.handle_call_event(&started(SID_B));

    let mut all = EventReader::open(&base, "").await;
    let mut only_b = EventReader::open(&base, &format!("?call={SID_B}")).await;

    let (name, snapshot) = all.next().await;
    assert_eq!(name, "snapshot");
    assert_eq!(snapshot["seq"], 3);
    let calls = snapshot["calls"].as_array().unwrap();
    assert_eq!(calls.len(), 2);
    assert_eq!(calls[0]["call_sid"], SID_A);
    assert_eq!(calls[0]["lines"][0]["text"], "מתי אתם פתוחים?");
    assert_eq!(calls[0]["lines"][0]["speaker"], "caller");

    let (name, snapshot_b) = only_b.next().await;
    assert_eq!(name, "snapshot");
    assert_eq!(snapshot_b["calls"].as_array().unwrap().len(), 1);
    assert_eq!(snapshot_b["calls"][0]["call_sid"], SID_B);

    console.handle_call_event(&said(SID_A, "first"));
    console.handle_call_event(&said(SID_B, "second"));
    console.handle_call_event(&CallEvent::CallEnded {
        call_sid: SID_A.into(),
        end_reason: EndReason::Stopped,
        duration_ms: 1_000,
    });

    let mut seen = Vec::new();
    for _ in 0..3 {
        let (name, data) = all.next().await;
        assert_eq!(name, "call");
        seen.push((
            data["seq"].as_u64().unwrap(),
            data["event"]["type"].as_str().unwrap().to_owned(),
            data["event"]["call_sid"].as_str().unwrap().to_owned(),
        ));
        assert!(data["at_ms"].as_u64().unwrap() > 1_600_000_000_000);
    }
    assert_eq!(
        seen,
        vec![
            (4, "transcript".into(), SID_A.into()),
            (5, "transcript".into(), SID_B.into()),
            (6, "call_ended".into(), SID_A.into()),
        ]
    );
    let (name, data) = only_b.next().await;
    assert_eq!(name, "call");
    assert_eq!(data["seq"], 5);
    assert_eq!(data["event"]["text"], "second");

    let live: serde_json::Value = client()
        .get(format!("{base}/api/console/live"))
        .bearer_auth(TOKEN)
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    assert_eq!(live["calls"].as_array().unwrap().len(), 1, "A ended");
    assert_eq!(console.metrics().sse_clients(), 2);

    let bad = client()
        .get(format!("{base}/api/events?call=CA%22%3E%3Cscript%3E"))
        .bearer_auth(TOKEN)
        .send()
        .await
        .unwrap();
    assert_eq!(bad.status(), 400);
    assert!(!bad.text().await.unwrap().contains("script"));
}

/// Current-thread runtime: the 100 events below are published with no await in between, so
/// the browser's stream cannot read any of them before its buffer of 4 overflows.
#[tokio::test(flavor = "current_thread")]
async fn a_slow_browser_loses_events_counted_and_never_blocks_the_publisher() {
    let console = console_with_token(4);
    let base = serve(&console).await;
    console.handle_call_event(&started(SID_A));
    let mut reader = EventReader::open(&base, "").await;
    assert_eq!(reader.next().await.0, "snapshot");

    // Publishing is synchronous and returns although the browser reads nothing meanwhile.
    for n in 0..100 {
        console.handle_call_event(&said(SID_A, &format!("line {n}")));
    }

    let (name, data) = reader.next().await;
    assert_eq!(name, "dropped");
    assert_eq!(data["dropped"], 96);
    let mut texts = Vec::new();
    for _ in 0..4 {
        let (name, data) = reader.next().await;
        assert_eq!(name, "call");
        texts.push(data["event"]["text"].as_str().unwrap().to_owned());
    }
    assert_eq!(texts, ["line 96", "line 97", "line 98", "line 99"]);
    assert_eq!(console.metrics().sse_events_dropped(), 96);
    // The registry itself saw everything.
    assert_eq!(console.live_calls(Some(SID_A))[0].lines.len(), 100);

    let metrics = client()
        .get(format!("{base}/metrics"))
        .bearer_auth(TOKEN)
        .send()
        .await
        .unwrap()
        .text()
        .await
        .unwrap();
    assert!(metrics.contains("crmd_console_sse_events_dropped_total 96\n"));
    assert!(metrics.contains("crmd_console_sse_clients 1\n"));
    drop(reader);
}

//! Twilio voice webhooks against the real server: TwiML shape, CRM rows, bad input, body limit,
//! and X-Twilio-Signature on and off.
#![allow(clippy::unwrap_used)]

mod common;

use common::{TestServer, client};
use twilio_stream::signature::sign_form;

const TOKEN: &str = "test-auth-token-0123456789";
const FORM: &str = "application/x-www-form-urlencoded";

fn pairs(form: &[(&str, &str)]) -> Vec<(String, String)> {
    form.iter()
        .map(|(k, v)| (k.to_string(), v.to_string()))
        .collect()
}

fn encode(form: &[(&str, &str)]) -> String {
    form.iter()
        .map(|(k, v)| format!("{}={}", k, v.replace('+', "%2B").replace(' ', "+")))
        .collect::<Vec<_>>()
        .join("&")
}

const CALL: &[(&str, &str)] = &[
    ("CallSid", "CA_TEST_0001"),
    ("AccountSid", "AC00000000000000000000000000000000"),
    ("From", "+972501234567"),
    ("To", "+97231234567"),
    ("CallStatus", "ringing"),
    ("Direction", "inbound"),
    ("CallerName", "Dana"),
];

#[tokio::test]
async fn incoming_call_returns_connect_stream_twiml_and_records_the_call() {
    let server = TestServer::start(&[("PUBLIC_BASE_URL", "https://ai-crmd.replit.app/")]).await;
    let res = client()
        .post(server.url("/webhook/incoming_call"))
        .header("content-type", FORM)
        .body(encode(CALL))
        .send()
        .await
        .unwrap();
    assert_eq!(res.status(), 200);
    assert!(
        res.headers()["content-type"]
            .to_str()
            .unwrap()
            .starts_with("text/xml")
    );
    assert!(res.headers().contains_key("x-app-signature"));
    let twiml = res.text().await.unwrap();
    assert!(
        twiml.contains(r#"<Connect action="https://ai-crmd.replit.app/webhook/stream_ended""#),
        "{twiml}"
    );
    assert!(
        twiml.contains(r#"<Stream url="wss://ai-crmd.replit.app/ws/twilio-media""#),
        "{twiml}"
    );
    assert!(
        twiml.contains(r#"statusCallback="https://ai-crmd.replit.app/webhook/stream_status""#),
        "{twiml}"
    );
    assert!(
        twiml.contains(r#"<Parameter name="call_sid" value="CA_TEST_0001"/>"#),
        "{twiml}"
    );
    assert!(
        !twiml
            .replace("https://", "")
            .replace("wss://", "")
            .contains("//"),
        "double slash: {twiml}"
    );

    let call = server.store.get_call("CA_TEST_0001").await.unwrap();
    assert_eq!(call.from.as_deref(), Some("+972501234567"));
    assert_eq!(call.caller_name.as_deref(), Some("Dana"));
    assert!(call.contact_id.is_some(), "contact linked");
    let contact = server
        .store
        .find_contact_by_phone("+972501234567")
        .await
        .unwrap()
        .unwrap();
    assert_eq!(contact.display_name.as_deref(), Some("Dana"));

    // A retried webhook is answered the same and stored once.
    let again = client()
        .post(server.url("/webhook/incoming_call"))
        .header("content-type", FORM)
        .body(encode(CALL))
        .send()
        .await
        .unwrap();
    assert_eq!(again.status(), 200);
    assert_eq!(
        server.store.get_call("CA_TEST_0001").await.unwrap().id,
        call.id
    );
    server.shut_down().await;
}

#[tokio::test]
async fn a_call_arriving_while_the_database_is_locked_is_answered_and_stored_later() {
    use sqlx::Connection;
    let server = TestServer::start(&[]).await;
    // Another writer holds the database longer than the store's 5 s busy timeout, so the
    // first write fails with SQLITE_BUSY and has to be tried again.
    let mut locker = sqlx::SqliteConnection::connect(&server.db_url())
        .await
        .unwrap();
    sqlx::query("BEGIN EXCLUSIVE")
        .execute(&mut locker)
        .await
        .unwrap();
    let asked = std::time::Instant::now();
    let res = client()
        .post(server.url("/webhook/incoming_call"))
        .header("content-type", FORM)
        .body(encode(CALL))
        .send()
        .await
        .unwrap();
    assert_eq!(res.status(), 200);
    assert!(res.text().await.unwrap().contains("<Connect"));
    assert!(
        asked.elapsed() < std::time::Duration::from_secs(5),
        "Twilio is answered without waiting for the database"
    );
    tokio::time::sleep(std::time::Duration::from_secs(6)).await;
    assert!(
        server.store.get_call("CA_TEST_0001").await.is_err(),
        "nothing could be written while the lock was held"
    );
    sqlx::query("COMMIT").execute(&mut locker).await.unwrap();
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(20);
    let call = loop {
        if let Ok(call) = server.store.get_call("CA_TEST_0001").await {
            break call;
        }
        assert!(
            std::time::Instant::now() < deadline,
            "the call was never stored"
        );
        tokio::time::sleep(std::time::Duration::from_millis(100)).await;
    };
    assert_eq!(call.from.as_deref(), Some("+972501234567"));
    assert!(call.contact_id.is_some(), "the caller's contact is linked");
    server.shut_down().await;
}

#[tokio::test]
async fn without_public_base_url_the_forwarded_host_is_used() {
    let server = TestServer::start(&[]).await;
    let twiml = client()
        .post(server.url("/webhook/incoming_call"))
        .header("x-forwarded-proto", "https")
        .header("x-forwarded-host", "ai-crmd.replit.app")
        .body("CallSid=CA_TEST")
        .send()
        .await
        .unwrap()
        .text()
        .await
        .unwrap();
    assert!(
        twiml.contains(r#"<Stream url="wss://ai-crmd.replit.app/ws/twilio-media""#),
        "{twiml}"
    );
    assert!(
        twiml.contains(r#"action="https://ai-crmd.replit.app/webhook/stream_ended""#),
        "{twiml}"
    );
    server.shut_down().await;
}

/// POSTs a form body to `path` (unsigned: these servers check no signature).
async fn post(
    http: &reqwest::Client,
    server: &TestServer,
    path: &str,
    body: &str,
) -> reqwest::Response {
    http.post(server.url(path))
        .body(body.to_owned())
        .send()
        .await
        .unwrap()
}

#[tokio::test]
async fn stream_status_and_stream_ended_answer_204_and_record_events() {
    let server = TestServer::start(&[("PUBLIC_BASE_URL", "https://ai-crmd.replit.app")]).await;
    let http = client();
    let res = http
        .post(server.url("/webhook/incoming_call"))
        .body("CallSid=CA_TEST&From=%2B972501234567")
        .send()
        .await
        .unwrap();
    assert_eq!(res.status(), 200);
    // The user's manual check, verbatim.
    let res = http
        .post(server.url("/webhook/stream_status"))
        .header("content-type", FORM)
        .body("CallSid=CA_TEST&StreamSid=MZ_TEST&Status=connected")
        .send()
        .await
        .unwrap();
    assert_eq!(res.status(), 204);
    assert!(res.headers().contains_key("x-app-signature"));
    assert!(res.text().await.unwrap().is_empty());
    let res = post(
        &http,
        &server,
        "/webhook/stream_status",
        "CallSid=CA_TEST&StreamSid=MZ_TEST&StreamEvent=stream-error&StreamError=Handshake+failed&Timestamp=x",
    )
    .await;
    assert_eq!(res.status(), 204);
    let res = post(
        &http,
        &server,
        "/webhook/stream_ended",
        "CallSid=CA_TEST&CallStatus=in-progress",
    )
    .await;
    assert_eq!(res.status(), 204);
    assert!(res.text().await.unwrap().is_empty());

    let detail = server.store.get_call_with_turns("CA_TEST").await.unwrap();
    let kinds: Vec<&str> = detail
        .stream_events
        .iter()
        .map(|e| e.kind.as_str())
        .collect();
    assert!(kinds.contains(&"connected"), "{kinds:?}");
    assert!(kinds.contains(&"stream-error"), "{kinds:?}");
    assert!(kinds.contains(&"stream-ended"), "{kinds:?}");
    let error = detail
        .stream_events
        .iter()
        .find(|e| e.kind == "stream-error")
        .unwrap();
    assert_eq!(error.error.as_deref(), Some("Handshake failed"));
    assert_eq!(error.stream_sid.as_deref(), Some("MZ_TEST"));
    assert!(
        detail.call.ended_at_ms.is_some(),
        "stream end ends the call"
    );
    server.shut_down().await;
}

/// Twilio sends a webhook again when it gets no timely answer: a status callback carries the
/// same `Timestamp`, so it is stored once; the `<Connect action>` happens once per call.
#[tokio::test]
async fn callbacks_twilio_sends_again_are_stored_once() {
    let server = TestServer::start(&[]).await;
    let http = client();
    for _ in 0..2 {
        let status = "CallSid=CA_RETRY&StreamSid=MZ_RETRY&StreamEvent=stream-stopped&Timestamp=2026-12-06T05%3A30%3A00.125Z";
        let res = post(&http, &server, "/webhook/stream_status", status).await;
        assert_eq!(res.status(), 204);
        let ended = "CallSid=CA_RETRY&CallStatus=in-progress";
        let res = post(&http, &server, "/webhook/stream_ended", ended).await;
        assert_eq!(res.status(), 204);
        // The retry comes later, with a later receipt time.
        tokio::time::sleep(std::time::Duration::from_millis(5)).await;
    }
    let detail = server.store.get_call_with_turns("CA_RETRY").await.unwrap();
    let events: Vec<(&str, i64)> = detail
        .stream_events
        .iter()
        .map(|e| (e.kind.as_str(), e.at_ms))
        .collect();
    assert_eq!(events.len(), 2, "{events:?}");
    assert!(
        events.contains(&("stream-stopped", 1_796_535_000_125)),
        "Twilio's time is kept: {events:?}"
    );
    assert!(events.iter().any(|(kind, _)| *kind == "stream-ended"));
    server.shut_down().await;
}

#[tokio::test]
async fn bad_input_gets_400_with_a_short_plain_message() {
    let server = TestServer::start(&[]).await;
    let http = client();
    let cases: &[(&str, &[u8], Option<&str>, &str)] = &[
        (
            "/webhook/incoming_call",
            b"From=%2B972501234567",
            None,
            "missing required field CallSid",
        ),
        (
            "/webhook/incoming_call",
            b"CallSid=",
            None,
            "missing required field CallSid",
        ),
        (
            "/webhook/incoming_call",
            b"CallSid=CA%3Cx%3E",
            None,
            "invalid CallSid",
        ),
        (
            "/webhook/incoming_call",
            b"CallSid=\xff\xfe",
            None,
            "malformed form body",
        ),
        (
            "/webhook/incoming_call",
            b"CallSid=%C3%28",
            None,
            "malformed form body",
        ),
        (
            "/webhook/incoming_call",
            br#"{"CallSid":"CA1"}"#,
            Some("application/json"),
            "malformed form body",
        ),
        (
            "/webhook/incoming_call",
            br#"{"CallSid":"CA1"}"#,
            None,
            "malformed form body",
        ),
        (
            "/webhook/stream_status",
            b"StreamSid=MZ1",
            None,
            "missing required field CallSid",
        ),
        (
            "/webhook/stream_ended",
            b"",
            None,
            "missing required field CallSid",
        ),
    ];
    for (path, body, content_type, expected) in cases {
        let mut req = http.post(server.url(path)).body(body.to_vec());
        if let Some(ct) = content_type {
            req = req.header("content-type", *ct);
        }
        let res = req.send().await.unwrap();
        assert_eq!(
            res.status(),
            400,
            "{path} {:?}",
            String::from_utf8_lossy(body)
        );
        assert!(res.headers().contains_key("x-app-signature"));
        let text = res.text().await.unwrap();
        assert!(text.starts_with(expected), "{path}: {text:?}");
        assert!(text.len() < 200, "{text}");
    }
    server.shut_down().await;
}

#[tokio::test]
async fn bodies_over_the_limit_get_413() {
    let server = TestServer::start(&[("MAX_BODY_BYTES", "4096")]).await;
    let http = client();
    let big = format!("CallSid=CA1&Junk={}", "x".repeat(5000));
    let res = http
        .post(server.url("/webhook/incoming_call"))
        .body(big.clone())
        .send()
        .await
        .unwrap();
    assert_eq!(res.status(), 413);
    assert!(res.headers().contains_key("x-app-signature"));
    assert!(res.text().await.unwrap().contains("MAX_BODY_BYTES"));
    // Chunked (no Content-Length) is cut off at the limit too.
    let stream = futures::stream::iter((0..20).map(|_| Ok::<_, std::io::Error>(vec![b'x'; 1024])));
    let res = http
        .post(server.url("/webhook/stream_status"))
        .body(reqwest::Body::wrap_stream(stream))
        .send()
        .await
        .unwrap();
    assert_eq!(res.status(), 413);
    // Just under the limit is fine.
    let ok = format!("CallSid=CA1&Junk={}", "x".repeat(3000));
    let res = http
        .post(server.url("/webhook/incoming_call"))
        .body(ok)
        .send()
        .await
        .unwrap();
    assert_eq!(res.status(), 200);
    server.shut_down().await;
}

#[tokio::test]
async fn signatures_are_required_when_the_auth_token_is_set() {
    let base = "https://ai-crmd.replit.app";
    let server =
        TestServer::start(&[("TWILIO_AUTH_TOKEN", TOKEN), ("PUBLIC_BASE_URL", base)]).await;
    let http = client();
    let form = pairs(CALL);
    let url = format!("{base}/webhook/incoming_call");
    let good = sign_form(TOKEN, &url, &form);

    let res = http
        .post(server.url("/webhook/incoming_call"))
        .header("x-twilio-signature", &good)
        .body(encode(CALL))
        .send()
        .await
        .unwrap();
    assert_eq!(res.status(), 200);

    // Missing, wrong, signed for another URL, signed with another token, body tampered with.
    let tampered = encode(CALL).replace("Dana", "Eve");
    let attempts: Vec<(Option<String>, String)> = vec![
        (None, encode(CALL)),
        (Some("bm90IGEgc2lnbmF0dXJl".to_owned()), encode(CALL)),
        (
            Some(sign_form(
                TOKEN,
                &format!("{base}/webhook/stream_status"),
                &form,
            )),
            encode(CALL),
        ),
        (Some(sign_form("another-token", &url, &form)), encode(CALL)),
        (Some(good.clone()), tampered),
    ];
    for (signature, body) in attempts {
        let mut req = http.post(server.url("/webhook/incoming_call")).body(body);
        if let Some(sig) = &signature {
            req = req.header("x-twilio-signature", sig);
        }
        let res = req.send().await.unwrap();
        assert_eq!(res.status(), 403, "signature {signature:?}");
        assert!(res.headers().contains_key("x-app-signature"));
        let text = res.text().await.unwrap();
        assert!(!text.contains(TOKEN));
    }

    // Status callbacks and the action URL are checked too.
    for path in ["/webhook/stream_status", "/webhook/stream_ended"] {
        let form = [
            ("CallSid", "CA_TEST_0001"),
            ("StreamEvent", "stream-started"),
        ];
        let res = http
            .post(server.url(path))
            .body(encode(&form))
            .send()
            .await
            .unwrap();
        assert_eq!(res.status(), 403, "{path} unsigned");
        let sig = sign_form(TOKEN, &format!("{base}{path}"), &pairs(&form));
        let res = http
            .post(server.url(path))
            .header("x-twilio-signature", sig)
            .body(encode(&form))
            .send()
            .await
            .unwrap();
        assert_eq!(res.status(), 204, "{path} signed");
    }
    server.shut_down().await;
}

#[tokio::test]
async fn signature_covers_the_forwarded_public_url_and_query() {
    let server = TestServer::start(&[("TWILIO_AUTH_TOKEN", TOKEN)]).await;
    let form = [("CallSid", "CA_FWD")];
    let public = "https://ai-crmd.replit.app/webhook/incoming_call?tenant=7";
    let sig = sign_form(TOKEN, public, &pairs(&form));
    let res = client()
        .post(server.url("/webhook/incoming_call?tenant=7"))
        .header("x-forwarded-proto", "https")
        .header("x-forwarded-host", "ai-crmd.replit.app")
        .header("x-twilio-signature", sig)
        .body(encode(&form))
        .send()
        .await
        .unwrap();
    assert_eq!(res.status(), 200);
    server.shut_down().await;
}

#[tokio::test]
async fn signature_checks_off_without_a_token() {
    let server = TestServer::start(&[]).await;
    let res = client()
        .post(server.url("/webhook/incoming_call"))
        .header("x-twilio-signature", "garbage")
        .body("CallSid=CA_OFF")
        .send()
        .await
        .unwrap();
    assert_eq!(res.status(), 200);
    server.shut_down().await;
}

async fn post_incoming_call(server: &TestServer, call_sid: &str) -> String {
    let mut form = CALL.to_vec();
    form[0] = ("CallSid", call_sid);
    let res = client()
        .post(server.url("/webhook/incoming_call"))
        .header("content-type", FORM)
        .body(encode(&form))
        .send()
        .await
        .unwrap();
    assert_eq!(res.status(), 200);
    res.text().await.unwrap()
}

const BUSY: &str = r#"<Response><Reject reason="busy"/></Response>"#;

#[tokio::test]
async fn calls_over_max_calls_are_refused_busy_and_recorded() {
    let server = TestServer::start(&[("MAX_CALLS", "1")]).await;
    let first = post_incoming_call(&server, "CA_CAP_1").await;
    assert!(first.contains("<Connect"), "{first}");
    // The first call's stream has not opened yet, but its place is taken.
    let second = post_incoming_call(&server, "CA_CAP_2").await;
    assert!(second.ends_with(BUSY), "{second}");
    let refused = server.store.get_call("CA_CAP_2").await.unwrap();
    assert_eq!(refused.status.as_deref(), Some("busy"));
    assert_eq!(refused.from.as_deref(), Some("+972501234567"));
    assert_eq!(
        server
            .store
            .get_call("CA_CAP_1")
            .await
            .unwrap()
            .status
            .as_deref(),
        Some("ringing")
    );

    // The first call's stream opens (the place passes to it) and ends: room again.
    let (mut socket, _) = tokio_tungstenite::connect_async(server.ws_url("/ws/twilio-media"))
        .await
        .unwrap();
    let deadline = tokio::time::Instant::now() + std::time::Duration::from_secs(5);
    while server.state.sessions().live() == 0 {
        assert!(
            tokio::time::Instant::now() < deadline,
            "the stream never started"
        );
        tokio::time::sleep(std::time::Duration::from_millis(5)).await;
    }
    assert!(
        post_incoming_call(&server, "CA_CAP_3")
            .await
            .ends_with(BUSY)
    );
    socket.close(None).await.unwrap();
    while server.state.sessions().live() > 0 {
        assert!(
            tokio::time::Instant::now() < deadline,
            "the stream never ended"
        );
        tokio::time::sleep(std::time::Duration::from_millis(5)).await;
    }
    let fourth = post_incoming_call(&server, "CA_CAP_4").await;
    assert!(fourth.contains("<Connect"), "{fourth}");
    assert_eq!(server.state.admission().refused_total(), 2);
    server.shut_down().await;
}

#[tokio::test]
async fn calls_are_refused_busy_while_the_overload_probe_says_so() {
    let server = TestServer::start(&[]).await;
    let overloaded = std::sync::Arc::new(std::sync::atomic::AtomicBool::new(true));
    let flag = std::sync::Arc::clone(&overloaded);
    server
        .state
        .admission()
        .set_overload_probe(std::sync::Arc::new(move || {
            flag.load(std::sync::atomic::Ordering::Relaxed)
                .then(|| "the CRM write queue holds 5000 of 8192 writes".to_owned())
        }));
    assert!(
        post_incoming_call(&server, "CA_OVER_1")
            .await
            .ends_with(BUSY)
    );
    assert_eq!(
        server
            .store
            .get_call("CA_OVER_1")
            .await
            .unwrap()
            .status
            .as_deref(),
        Some("busy")
    );
    overloaded.store(false, std::sync::atomic::Ordering::Relaxed);
    assert!(
        post_incoming_call(&server, "CA_OVER_2")
            .await
            .contains("<Connect")
    );
    server.shut_down().await;
}

//! WhatsApp service against a real store and an axum stand-in for Twilio's Messages API (and
//! for a WhatsApp Web bridge) on 127.0.0.1 that fails on demand.
#![allow(clippy::unwrap_used)]

mod common;

use std::collections::VecDeque;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use axum::extract::State;
use axum::http::{HeaderMap, StatusCode};
use axum::routing::post;
use axum::{Json, Router};
use base64::Engine as _;
use common::TestDb;
use crm::whatsapp::{
    BridgeInbound, BridgeProvider, IngestOutcome, OutboundWhatsApp, ProviderAccepted,
    ProviderError, SendError, SendPolicy, SendRequest, StatusOutcome, TwilioMessagesConfig,
    TwilioMessagesProvider, WhatsAppProvider, WhatsAppService,
};
use crm::{MessageDirection, PageRequest};
use twilio_stream::forms::{MessageStatusCallback, WhatsAppInbound};

const ACCOUNT_SID: &str = "AC0123456789abcdef0123456789abcdef";
const AUTH_TOKEN: &str = "auth-token-never-logged";
const TO: &str = "+972501234567";

/// What the stand-in answers to the next request.
#[derive(Debug, Clone)]
enum Reply {
    Accept,
    Status(u16, serde_json::Value),
    /// Never answer (the client must time out).
    Hang,
}

#[derive(Debug, Clone)]
struct Recorded {
    path: String,
    authorization: Option<String>,
    body: Vec<u8>,
}

#[derive(Debug, Clone, Default)]
struct StandIn {
    script: Arc<Mutex<VecDeque<Reply>>>,
    requests: Arc<Mutex<Vec<Recorded>>>,
}

impl StandIn {
    fn script(&self, replies: impl IntoIterator<Item = Reply>) {
        self.script.lock().unwrap().extend(replies);
    }
    fn requests(&self) -> Vec<Recorded> {
        self.requests.lock().unwrap().clone()
    }
    fn form(&self, index: usize) -> Vec<(String, String)> {
        twilio_stream::forms::parse_pairs(&self.requests()[index].body).unwrap()
    }
}

async fn messages_endpoint(
    State(state): State<StandIn>,
    uri: axum::http::Uri,
    headers: HeaderMap,
    body: axum::body::Bytes,
) -> (StatusCode, Json<serde_json::Value>) {
    let n = {
        let mut requests = state.requests.lock().unwrap();
        requests.push(Recorded {
            path: uri.path().to_owned(),
            authorization: headers
                .get("authorization")
                .map(|v| v.to_str().unwrap().to_owned()),
            body: body.to_vec(),
        });
        requests.len()
    };
    let reply = state
        .script
        .lock()
        .unwrap()
        .pop_front()
        .unwrap_or(Reply::Accept);
    match reply {
        Reply::Accept => (
            StatusCode::CREATED,
            Json(serde_json::json!({
                "sid": format!("SM{n:032}"), "status": "queued", "error_code": null, "error_message": null,
                "direction": "outbound-api", "date_created": "Tue, 24 Nov 2026 06:00:00 +0000"
            })),
        ),
        Reply::Status(code, json) => (StatusCode::from_u16(code).unwrap(), Json(json)),
        Reply::Hang => std::future::pending().await,
    }
}

/// Starts the stand-in on 127.0.0.1:0 and returns its base URL.
async fn start_stand_in(state: StandIn) -> String {
    let app = Router::new()
        .route(
            "/2010-04-01/Accounts/{sid}/Messages.json",
            post(messages_endpoint),
        )
        .route("/send", post(messages_endpoint))
        .with_state(state);
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    tokio::spawn(async move { axum::serve(listener, app).await.unwrap() });
    format!("http://{addr}")
}

fn fast_policy() -> SendPolicy {
    SendPolicy {
        max_attempts: 3,
        initial_backoff: Duration::from_millis(1),
        max_backoff: Duration::from_millis(5),
        attempt_timeout: Duration::from_secs(5),
    }
}

fn twilio(api_base: &str) -> Arc<dyn WhatsAppProvider> {
    Arc::new(
        TwilioMessagesProvider::new(TwilioMessagesConfig {
            api_base: api_base.to_owned(),
            account_sid: ACCOUNT_SID.to_owned(),
            auth_token: AUTH_TOKEN.to_owned(),
            from: "whatsapp:+14155238886".to_owned(),
            status_callback: Some("https://crmd.example/webhook/whatsapp/status".to_owned()),
            request_timeout: Duration::from_secs(5),
        })
        .unwrap(),
    )
}

async fn service(db: &TestDb, policy: SendPolicy) -> (WhatsAppService, StandIn) {
    let stand_in = StandIn::default();
    let base = start_stand_in(stand_in.clone()).await;
    (
        WhatsAppService::new(db.store.clone(), twilio(&base), policy),
        stand_in,
    )
}

fn send_request(body: &str) -> SendRequest {
    SendRequest {
        to: TO.to_owned(),
        body: body.to_owned(),
        media_url: None,
    }
}

fn pairs(fields: &[(&str, &str)]) -> Vec<(String, String)> {
    fields
        .iter()
        .map(|(k, v)| ((*k).to_owned(), (*v).to_owned()))
        .collect()
}

fn status_callback(sid: &str, status: &str) -> MessageStatusCallback {
    MessageStatusCallback::from_pairs(&pairs(&[
        ("MessageSid", sid),
        ("MessageStatus", status),
        ("AccountSid", ACCOUNT_SID),
    ]))
    .unwrap()
}

async fn send_is_stored_as_sent_with_provider_sid(db: &TestDb) {
    let (wa, stand_in) = service(db, fast_policy()).await;
    let mut req = send_request("Your appointment is confirmed");
    req.to = "whatsapp:+972 50-123-4567".to_owned();
    req.media_url = Some("https://example.com/map.png".to_owned());
    let msg = wa.send(req, None).await.unwrap();
    assert_eq!(msg.status, "sent");
    assert_eq!(msg.direction, MessageDirection::Outbound);
    assert_eq!(
        msg.provider_sid.as_deref(),
        Some("SM00000000000000000000000000000001")
    );
    assert_eq!(msg.to, "whatsapp:+972501234567");
    assert_eq!(msg.from, "whatsapp:+14155238886");

    let requests = stand_in.requests();
    assert_eq!(requests.len(), 1);
    assert_eq!(
        requests[0].path,
        format!("/2010-04-01/Accounts/{ACCOUNT_SID}/Messages.json")
    );
    let basic =
        base64::engine::general_purpose::STANDARD.encode(format!("{ACCOUNT_SID}:{AUTH_TOKEN}"));
    assert_eq!(
        requests[0].authorization.as_deref(),
        Some(format!("Basic {basic}").as_str())
    );
    let form = stand_in.form(0);
    let field = |name: &str| {
        form.iter()
            .find(|(k, _)| k == name)
            .map(|(_, v)| v.as_str())
    };
    assert_eq!(field("To"), Some("whatsapp:+972501234567"));
    assert_eq!(field("From"), Some("whatsapp:+14155238886"));
    assert_eq!(field("Body"), Some("Your appointment is confirmed"));
    assert_eq!(field("MediaUrl"), Some("https://example.com/map.png"));
    assert_eq!(
        field("StatusCallback"),
        Some("https://crmd.example/webhook/whatsapp/status")
    );

    let listed = db
        .store
        .list_messages(TO, PageRequest::default())
        .await
        .unwrap();
    assert_eq!(listed.items, vec![msg]);
    // `?contact=+972…` unencoded arrives as " 972…"; `whatsapp:` and separators are tolerated.
    for spelled in [
        " 972501234567",
        "whatsapp:+972501234567",
        "+972 50-123-4567",
    ] {
        let again = db
            .store
            .list_messages(spelled, PageRequest::default())
            .await
            .unwrap();
        assert_eq!(again.items.len(), 1, "{spelled:?}");
    }
    for bad in ["abc", "0501234567", ""] {
        let err = db
            .store
            .list_messages(bad, PageRequest::default())
            .await
            .unwrap_err();
        assert_eq!(err.http_status(), 400, "{bad:?}");
    }
}

async fn transient_failures_are_retried_then_sent(db: &TestDb) {
    let (wa, stand_in) = service(db, fast_policy()).await;
    stand_in.script([
        Reply::Status(
            500,
            serde_json::json!({"code": 20500, "message": "Internal Server Error", "status": 500}),
        ),
        Reply::Status(503, serde_json::json!({"message": "Service Unavailable"})),
    ]);
    let msg = wa.send(send_request("hello"), None).await.unwrap();
    assert_eq!(msg.status, "sent");
    assert_eq!(stand_in.requests().len(), 3);
    assert_eq!(msg.error_code, None);
}

async fn final_failure_is_stored_failed_and_is_502(db: &TestDb) {
    let (wa, stand_in) = service(db, fast_policy()).await;
    let busy = Reply::Status(
        503,
        serde_json::json!({"code": 20503, "message": "Service Unavailable", "status": 503}),
    );
    stand_in.script([busy.clone(), busy.clone(), busy]);
    let err = wa
        .send(send_request("still there?"), None)
        .await
        .unwrap_err();
    assert_eq!(err.http_status(), 502);
    assert_eq!(stand_in.requests().len(), 3, "bounded retries");
    let SendError::Provider { message, error } = err else {
        panic!("expected Provider")
    };
    assert_eq!(message.status, "failed");
    assert_eq!(message.error_code.as_deref(), Some("20503"));
    assert!(error.to_string().contains("Service Unavailable"), "{error}");

    // A 400 with Twilio's error JSON is final at once: no retry.
    stand_in.script([Reply::Status(
        400,
        serde_json::json!({"code": 63016, "message": "Failed to send freeform message because you are outside the allowed window.",
                           "more_info": "https://www.twilio.com/docs/errors/63016", "status": 400}),
    )]);
    let err = wa
        .send(send_request("outside window"), None)
        .await
        .unwrap_err();
    assert_eq!(stand_in.requests().len(), 4);
    let SendError::Provider { message, .. } = err else {
        panic!("expected Provider")
    };
    assert_eq!(message.error_code.as_deref(), Some("63016"));
    assert!(
        message
            .error_message
            .as_deref()
            .unwrap()
            .contains("outside the allowed window")
    );

    // Never lost: both failures are listed.
    let listed = db
        .store
        .list_messages(TO, PageRequest::default())
        .await
        .unwrap();
    let statuses: Vec<&str> = listed.items.iter().map(|m| m.status.as_str()).collect();
    assert_eq!(statuses, ["failed", "failed"]);
}

async fn provider_down_and_hanging_provider_fail_cleanly(db: &TestDb) {
    // Down: a port nothing listens on.
    let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let dead = format!("http://{}", listener.local_addr().unwrap());
    drop(listener);
    let wa = WhatsAppService::new(db.store.clone(), twilio(&dead), fast_policy());
    let err = wa.send(send_request("anyone?"), None).await.unwrap_err();
    assert_eq!(err.http_status(), 502);
    let SendError::Provider { message, error } = err else {
        panic!()
    };
    assert!(error.is_transient());
    assert!(error.to_string().contains("cannot connect"), "{error}");
    assert!(!error.to_string().contains(AUTH_TOKEN));
    assert_eq!(message.status, "failed");

    // Hanging: each attempt is cut by the timeout.
    let policy = SendPolicy {
        max_attempts: 2,
        attempt_timeout: Duration::from_millis(200),
        ..fast_policy()
    };
    let (wa, stand_in) = service(db, policy).await;
    stand_in.script([Reply::Hang, Reply::Hang]);
    let err = wa.send(send_request("slow"), None).await.unwrap_err();
    let SendError::Provider { error, .. } = err else {
        panic!()
    };
    assert!(matches!(error, ProviderError::Timeout { .. }), "{error}");
    assert_eq!(stand_in.requests().len(), 2);
}

async fn bad_input_is_400_and_sends_nothing(db: &TestDb) {
    let (wa, stand_in) = service(db, fast_policy()).await;
    let cases = [
        SendRequest {
            to: "0501234567".to_owned(),
            ..send_request("hi")
        },
        SendRequest {
            to: "+97250abc".to_owned(),
            ..send_request("hi")
        },
        SendRequest {
            to: String::new(),
            ..send_request("hi")
        },
        send_request("   "),
        send_request(&"x".repeat(1601)),
        SendRequest {
            media_url: Some("ftp://x/y".to_owned()),
            ..send_request("hi")
        },
    ];
    for req in cases {
        let err = wa.send(req.clone(), None).await.unwrap_err();
        assert_eq!(err.http_status(), 400, "{req:?}: {err}");
    }
    let err = wa
        .send(send_request("hi"), Some("has space"))
        .await
        .unwrap_err();
    assert_eq!(err.http_status(), 400);
    assert!(stand_in.requests().is_empty());
    assert!(
        db.store.find_contact_by_phone(TO).await.unwrap().is_none(),
        "nothing stored"
    );
    // 1600 characters (multi-byte) is the limit, inclusive.
    let msg = wa
        .send(send_request(&"ש".repeat(1600)), None)
        .await
        .unwrap();
    assert_eq!(msg.body.chars().count(), 1600);
}

async fn idempotency_key_makes_retries_safe(db: &TestDb) {
    let (wa, stand_in) = service(db, fast_policy()).await;
    let first = wa.send(send_request("once"), Some("req-42")).await.unwrap();
    let again = wa.send(send_request("once"), Some("req-42")).await.unwrap();
    assert_eq!(first, again);
    assert_eq!(
        stand_in.requests().len(),
        1,
        "a retried request sends nothing"
    );
    let err = wa
        .send(send_request("different"), Some("req-42"))
        .await
        .unwrap_err();
    assert_eq!(err.http_status(), 409);

    stand_in.script([Reply::Status(
        400,
        serde_json::json!({"code": 21211, "message": "Invalid 'To' Phone Number"}),
    )]);
    let err = wa
        .send(send_request("to fail"), Some("req-43"))
        .await
        .unwrap_err();
    assert_eq!(err.http_status(), 502);
    let err = wa
        .send(send_request("to fail"), Some("req-43"))
        .await
        .unwrap_err();
    assert_eq!(err.http_status(), 502, "the stored failure is replayed");
    assert_eq!(stand_in.requests().len(), 2);
    // Concurrent duplicates: exactly one provider call.
    let (a, b) = tokio::join!(
        wa.send(send_request("race"), Some("req-44")),
        wa.send(send_request("race"), Some("req-44"))
    );
    assert_eq!(a.unwrap().id, b.unwrap().id);
    assert_eq!(stand_in.requests().len(), 3);
}

async fn inbound_is_stored_exactly_once(db: &TestDb) {
    let (wa, _) = service(db, fast_policy()).await;
    let form = pairs(&[
        ("MessageSid", "SM11111111111111111111111111111111"),
        ("AccountSid", ACCOUNT_SID),
        ("From", "whatsapp:+972501234567"),
        ("To", "whatsapp:+14155238886"),
        ("Body", "שלום, I'd like to book"),
        ("NumMedia", "1"),
        ("MediaUrl0", "https://api.twilio.com/media/ME1"),
        ("MediaContentType0", "image/jpeg"),
        ("ProfileName", "Dana"),
        ("WaId", "972501234567"),
    ]);
    let inbound = WhatsAppInbound::from_pairs(&form).unwrap();
    let IngestOutcome::Stored(msg) = wa.ingest_inbound(&inbound, Some("idem-1")).await.unwrap()
    else {
        panic!("first delivery must be stored")
    };
    assert_eq!(msg.direction, MessageDirection::Inbound);
    assert_eq!(msg.status, "received");
    assert_eq!(msg.media[0].content_type.as_deref(), Some("image/jpeg"));
    // Twilio retries: same sid, same token — and same sid with a fresh token.
    assert_eq!(
        wa.ingest_inbound(&inbound, Some("idem-1")).await.unwrap(),
        IngestOutcome::Duplicate
    );
    assert_eq!(
        wa.ingest_inbound(&inbound, Some("idem-2")).await.unwrap(),
        IngestOutcome::Duplicate
    );
    assert_eq!(
        wa.ingest_inbound(&inbound, None).await.unwrap(),
        IngestOutcome::Duplicate
    );
    let contact = db.store.find_contact_by_phone(TO).await.unwrap().unwrap();
    assert_eq!(contact.display_name.as_deref(), Some("Dana"));
    assert_eq!(
        db.store
            .list_messages(TO, PageRequest::default())
            .await
            .unwrap()
            .items
            .len(),
        1
    );

    let mut bad = inbound.clone();
    bad.from = "whatsapp:not-a-number".to_owned();
    bad.message_sid = "SM2".to_owned();
    assert_eq!(
        wa.ingest_inbound(&bad, None)
            .await
            .unwrap_err()
            .http_status(),
        400
    );
    bad.from = inbound.from.clone();
    bad.message_sid = "SM 2; --".to_owned();
    assert_eq!(
        wa.ingest_inbound(&bad, None)
            .await
            .unwrap_err()
            .http_status(),
        400
    );
    assert_eq!(
        db.store
            .list_messages("+14155550000", PageRequest::default())
            .await
            .unwrap_err()
            .http_status(),
        404
    );
}

async fn status_never_moves_backwards(db: &TestDb) {
    let (wa, _) = service(db, fast_policy()).await;
    let msg = wa.send(send_request("track me"), None).await.unwrap();
    let sid = msg.provider_sid.clone().unwrap();
    let apply = |status: &'static str| {
        let wa = wa.clone();
        let sid = sid.clone();
        async move {
            wa.apply_status(&status_callback(&sid, status))
                .await
                .unwrap()
        }
    };
    assert_eq!(
        apply("queued").await,
        StatusOutcome::IgnoredBackwards,
        "late queued after sent"
    );
    assert_eq!(apply("sent").await, StatusOutcome::Duplicate);
    assert_eq!(apply("delivered").await, StatusOutcome::Advanced);
    assert_eq!(
        apply("sent").await,
        StatusOutcome::IgnoredBackwards,
        "delivered -> sent is ignored"
    );
    assert_eq!(apply("delivered").await, StatusOutcome::Duplicate);
    assert_eq!(apply("read").await, StatusOutcome::Advanced);
    assert_eq!(apply("failed").await, StatusOutcome::IgnoredBackwards);
    assert_eq!(
        apply("no-such-status").await,
        StatusOutcome::IgnoredBackwards
    );
    let stored = db
        .store
        .find_message_by_provider_sid(&sid)
        .await
        .unwrap()
        .unwrap();
    assert_eq!(stored.status, "read");

    // A failure is final: a later "delivered" does not resurrect it.
    let other = wa.send(send_request("second"), None).await.unwrap();
    let other_sid = other.provider_sid.unwrap();
    let cb = MessageStatusCallback::from_pairs(&pairs(&[
        ("MessageSid", &other_sid),
        ("MessageStatus", "undelivered"),
        ("ErrorCode", "63024"),
    ]))
    .unwrap();
    assert_eq!(wa.apply_status(&cb).await.unwrap(), StatusOutcome::Advanced);
    assert_eq!(
        wa.apply_status(&status_callback(&other_sid, "delivered"))
            .await
            .unwrap(),
        StatusOutcome::IgnoredBackwards
    );
    let stored = db
        .store
        .find_message_by_provider_sid(&other_sid)
        .await
        .unwrap()
        .unwrap();
    assert_eq!(
        (stored.status.as_str(), stored.error_code.as_deref()),
        ("undelivered", Some("63024"))
    );

    assert_eq!(
        wa.apply_status(&status_callback(
            "SM99999999999999999999999999999999",
            "delivered"
        ))
        .await
        .unwrap(),
        StatusOutcome::UnknownMessage
    );
}

async fn restart_loses_no_message(db: &TestDb) {
    let (wa, stand_in) = service(db, fast_policy()).await;
    wa.send(send_request("before restart"), Some("k1"))
        .await
        .unwrap();
    let inbound = WhatsAppInbound::from_pairs(&pairs(&[
        ("MessageSid", "SM22222222222222222222222222222222"),
        ("From", "whatsapp:+972501234567"),
        ("To", "whatsapp:+14155238886"),
        ("Body", "reply"),
    ]))
    .unwrap();
    wa.ingest_inbound(&inbound, None).await.unwrap();
    db.store.close().await;

    let store = db.reopen().await;
    let base = start_stand_in(stand_in.clone()).await;
    let wa = WhatsAppService::new(store.clone(), twilio(&base), fast_policy());
    assert_eq!(
        wa.ingest_inbound(&inbound, None).await.unwrap(),
        IngestOutcome::Duplicate
    );
    wa.send(send_request("before restart"), Some("k1"))
        .await
        .unwrap();
    assert_eq!(
        stand_in.requests().len(),
        1,
        "the idempotency key survives the restart"
    );
    let listed = store
        .list_messages(TO, PageRequest::default())
        .await
        .unwrap();
    let bodies: Vec<&str> = listed.items.iter().map(|m| m.body.as_str()).collect();
    assert_eq!(bodies, ["reply", "before restart"]);
    store.close().await;
}

/// A provider that panics: the panic stays in the send task.
#[derive(Debug)]
struct PanickingProvider;

#[async_trait::async_trait]
impl WhatsAppProvider for PanickingProvider {
    fn name(&self) -> &'static str {
        "twilio"
    }
    fn sender_address(&self) -> String {
        "whatsapp:+14155238886".to_owned()
    }
    async fn send(&self, _msg: &OutboundWhatsApp) -> Result<ProviderAccepted, ProviderError> {
        panic!("provider bug (deliberate, test)");
    }
}

async fn provider_panic_fails_one_send_only(db: &TestDb) {
    let wa = WhatsAppService::new(db.store.clone(), Arc::new(PanickingProvider), fast_policy());
    let err = wa.send(send_request("boom"), None).await.unwrap_err();
    assert_eq!(err.http_status(), 502);
    let SendError::Provider { message, .. } = err else {
        panic!()
    };
    assert_eq!(message.status, "failed");
    // The store and the runtime are fine.
    db.store.ping().await.unwrap();
    assert_eq!(
        db.store
            .list_messages(TO, PageRequest::default())
            .await
            .unwrap()
            .items
            .len(),
        1
    );
}

async fn bridge_provider_sends_and_ingests(db: &TestDb) {
    let stand_in = StandIn::default();
    let base = start_stand_in(stand_in.clone()).await;
    stand_in.script([
        Reply::Status(503, serde_json::json!({"error": "connection closed (428)"})),
        Reply::Status(
            200,
            serde_json::json!({"id": "3EB0C767D26A1B2C", "status": "sent"}),
        ),
    ]);
    let bridge =
        BridgeProvider::new(&base, "whatsapp:+14155238886", Duration::from_secs(5)).unwrap();
    let wa = WhatsAppService::new(db.store.clone(), Arc::new(bridge), fast_policy());
    let msg = wa.send(send_request("via bridge"), None).await.unwrap();
    assert_eq!(
        (msg.provider.as_str(), msg.provider_sid.as_deref()),
        ("bridge", Some("3EB0C767D26A1B2C"))
    );
    let sent: serde_json::Value = serde_json::from_slice(&stand_in.requests()[1].body).unwrap();
    assert_eq!(sent["to"], TO);
    assert_eq!(sent["body"], "via bridge");

    let inbound: BridgeInbound = serde_json::from_value(serde_json::json!({
        "id": "ABCD1234", "from": "972501234567@s.whatsapp.net", "body": "hi from web", "push_name": "Dana W"
    }))
    .unwrap();
    assert!(matches!(
        wa.ingest_bridge_inbound(&inbound).await.unwrap(),
        IngestOutcome::Stored(_)
    ));
    assert_eq!(
        wa.ingest_bridge_inbound(&inbound).await.unwrap(),
        IngestOutcome::Duplicate
    );
    let contact = db.store.find_contact_by_phone(TO).await.unwrap().unwrap();
    assert_eq!(contact.display_name.as_deref(), Some("Dana W"));
}

on_both_backends!(
    send_is_stored_as_sent_with_provider_sid,
    transient_failures_are_retried_then_sent,
    final_failure_is_stored_failed_and_is_502,
    provider_down_and_hanging_provider_fail_cleanly,
    bad_input_is_400_and_sends_nothing,
    idempotency_key_makes_retries_safe,
    inbound_is_stored_exactly_once,
    status_never_moves_backwards,
    restart_loses_no_message,
    provider_panic_fails_one_send_only,
    bridge_provider_sends_and_ingests,
);

//! WhatsApp over HTTP against the real edge, a real SQLite file and a Twilio Messages stand-in on
//! loopback: signed/unsigned inbound webhooks stored exactly once, out-of-order and duplicate
//! status callbacks, sends with validation, bearer token, provider retries and failures,
//! `Idempotency-Key` replay, and a server restart in the middle.
#![allow(clippy::unwrap_used)]

mod api_support;

use api_support::{
    ACCOUNT_SID, API_TOKEN, AUTH_TOKEN, Edge, FORM, PUBLIC_BASE, Reply, TestDatabase,
    TwilioStandIn, WHATSAPP_FROM, as_refs, client, encode, fast_policy, pairs,
};
use base64::Engine as _;
use crm::PageRequest;
use twilio_stream::signature::sign_form;

const CONTACT: &str = "+972501234567";

fn inbound_form<'a>(sid: &'a str, body: &'a str) -> Vec<(&'a str, &'a str)> {
    vec![
        ("MessageSid", sid),
        ("AccountSid", ACCOUNT_SID),
        ("From", "whatsapp:+972501234567"),
        ("To", WHATSAPP_FROM),
        ("Body", body),
        ("NumMedia", "1"),
        ("MediaUrl0", "https://api.twilio.com/media/ME1"),
        ("MediaContentType0", "image/jpeg"),
        ("ProfileName", "Dana Levi"),
        ("WaId", "972501234567"),
    ]
}

/// POSTs a form webhook signed the way Twilio signs it for `PUBLIC_BASE + path`.
async fn post_signed(
    edge: &Edge,
    path: &str,
    form: &[(&str, &str)],
    idempotency_token: Option<&str>,
) -> reqwest::Response {
    let signature = sign_form(AUTH_TOKEN, &format!("{PUBLIC_BASE}{path}"), &pairs(form));
    let mut request = client()
        .post(edge.url(path))
        .header("content-type", FORM)
        .header("x-twilio-signature", signature)
        .body(encode(form));
    if let Some(token) = idempotency_token {
        request = request.header("i-twilio-idempotency-token", token);
    }
    request.send().await.unwrap()
}

async fn send(
    edge: &Edge,
    token: Option<&str>,
    key: Option<&str>,
    json: serde_json::Value,
) -> (u16, serde_json::Value) {
    let mut request = client().post(edge.url("/api/whatsapp/send")).json(&json);
    if let Some(token) = token {
        request = request.bearer_auth(token);
    }
    if let Some(key) = key {
        request = request.header("idempotency-key", key);
    }
    let response = request.send().await.unwrap();
    let status = response.status().as_u16();
    let body = response.json().await.unwrap_or(serde_json::Value::Null);
    (status, body)
}

async fn messages(edge: &Edge) -> Vec<crm::Message> {
    edge.store
        .list_messages(CONTACT, PageRequest::default())
        .await
        .unwrap()
        .items
}

async fn signed_inbound_is_stored_exactly_once_and_unsigned_is_refused(data: &TestDatabase) {
    let twilio = TwilioStandIn::start().await;
    let vars = twilio.vars();
    let edge = Edge::start(data, &as_refs(&vars), fast_policy()).await;
    let form = inbound_form("SM_IN_0001", "Hi, can I move my appointment?");

    let res = post_signed(&edge, "/webhook/whatsapp/twilio", &form, Some("idem-1")).await;
    assert_eq!(res.status(), 204);
    assert!(res.text().await.unwrap().is_empty());
    // Twilio retries the same event (same token) and, separately, the same MessageSid.
    let res = post_signed(&edge, "/webhook/whatsapp/twilio", &form, Some("idem-1")).await;
    assert_eq!(res.status(), 204);
    let res = post_signed(&edge, "/webhook/whatsapp/twilio", &form, Some("idem-2")).await;
    assert_eq!(res.status(), 204);
    let res = post_signed(&edge, "/webhook/whatsapp/twilio", &form, None).await;
    assert_eq!(res.status(), 204);

    let stored = messages(&edge).await;
    assert_eq!(stored.len(), 1, "{stored:?}");
    let m = &stored[0];
    assert_eq!(m.direction, crm::MessageDirection::Inbound);
    assert_eq!(m.status, "received");
    assert_eq!(m.provider_sid.as_deref(), Some("SM_IN_0001"));
    assert_eq!(m.body, "Hi, can I move my appointment?");
    assert_eq!(m.media.len(), 1);
    assert_eq!(m.media[0].content_type.as_deref(), Some("image/jpeg"));
    let contact = edge
        .store
        .find_contact_by_phone(CONTACT)
        .await
        .unwrap()
        .unwrap();
    assert_eq!(contact.display_name.as_deref(), Some("Dana Levi"));

    // No signature, or a signature over different content: 403, nothing stored.
    let other = inbound_form("SM_IN_0002", "forged");
    let res = client()
        .post(edge.url("/webhook/whatsapp/twilio"))
        .header("content-type", FORM)
        .body(encode(&other))
        .send()
        .await
        .unwrap();
    assert_eq!(res.status(), 403);
    let signature = sign_form(
        AUTH_TOKEN,
        &format!("{PUBLIC_BASE}/webhook/whatsapp/twilio"),
        &pairs(&inbound_form("SM_IN_0002", "original")),
    );
    let res = client()
        .post(edge.url("/webhook/whatsapp/twilio"))
        .header("content-type", FORM)
        .header("x-twilio-signature", signature)
        .body(encode(&other))
        .send()
        .await
        .unwrap();
    assert_eq!(res.status(), 403);
    assert_eq!(messages(&edge).await.len(), 1);

    // Signed but unusable: 400 with a reason.
    let bad_from = vec![
        ("MessageSid", "SM_IN_0003"),
        ("From", "whatsapp:abc"),
        ("To", WHATSAPP_FROM),
    ];
    let res = post_signed(&edge, "/webhook/whatsapp/twilio", &bad_from, None).await;
    assert_eq!(res.status(), 400);
    assert!(res.text().await.unwrap().contains("From"));
    let no_sid = vec![("From", "whatsapp:+972501234567"), ("To", WHATSAPP_FROM)];
    let res = post_signed(&edge, "/webhook/whatsapp/twilio", &no_sid, None).await;
    assert_eq!(res.status(), 400);
    assert!(res.text().await.unwrap().contains("MessageSid"));
    edge.shut_down().await;
}

async fn unsigned_inbound_is_accepted_when_signature_checks_are_off(data: &TestDatabase) {
    let edge = Edge::start(data, &[], fast_policy()).await;
    let form = inbound_form("SM_IN_0100", "no token configured");
    for _ in 0..2 {
        let res = client()
            .post(edge.url("/webhook/whatsapp/twilio"))
            .header("content-type", FORM)
            .body(encode(&form))
            .send()
            .await
            .unwrap();
        assert_eq!(res.status(), 204);
    }
    assert_eq!(messages(&edge).await.len(), 1);
    // Sending is off without the Twilio settings: 503 naming them (the API token is unset
    // too, which is checked first).
    let (status, body) = send(
        &edge,
        Some(API_TOKEN),
        None,
        serde_json::json!({"to": CONTACT, "body": "x"}),
    )
    .await;
    assert_eq!(status, 503);
    assert_eq!(body["message"], "set CRMD_API_TOKEN to enable the API");
    edge.shut_down().await;
}

async fn sending_off_without_twilio_settings_says_what_to_set(data: &TestDatabase) {
    let edge = Edge::start(data, &[("CRMD_API_TOKEN", API_TOKEN)], fast_policy()).await;
    assert!(!edge.state.whatsapp().unwrap().sending_enabled());
    let (status, body) = send(
        &edge,
        Some(API_TOKEN),
        None,
        serde_json::json!({"to": CONTACT, "body": "x"}),
    )
    .await;
    assert_eq!(status, 503, "{body}");
    let message = body["message"].as_str().unwrap();
    for name in [
        "TWILIO_ACCOUNT_SID",
        "TWILIO_AUTH_TOKEN",
        "TWILIO_WHATSAPP_FROM",
    ] {
        assert!(message.contains(name), "{message}");
    }
    assert!(messages_or_none(&edge).await.is_empty(), "nothing stored");
    edge.shut_down().await;
}

async fn messages_or_none(edge: &Edge) -> Vec<crm::Message> {
    match edge
        .store
        .list_messages(CONTACT, PageRequest::default())
        .await
    {
        Ok(page) => page.items,
        Err(e) => {
            assert_eq!(e.http_status(), 404, "{e}");
            Vec::new()
        }
    }
}

async fn send_validates_authenticates_sends_and_tracks_statuses(data: &TestDatabase) {
    let twilio = TwilioStandIn::start().await;
    let vars = twilio.vars();
    let edge = Edge::start(data, &as_refs(&vars), fast_policy()).await;
    let ok_body = serde_json::json!({"to": CONTACT, "body": "Your appointment is confirmed"});

    // Token first: nothing is parsed, stored or sent without it.
    let (status, body) = send(&edge, None, None, ok_body.clone()).await;
    assert_eq!(status, 401);
    assert_eq!(body["error"], "unauthorized");
    let (status, _) = send(&edge, Some("wrong-token"), None, ok_body.clone()).await;
    assert_eq!(status, 401);
    let res = client()
        .post(edge.url("/api/whatsapp/send"))
        .json(&ok_body)
        .send()
        .await
        .unwrap();
    assert_eq!(res.headers()["www-authenticate"], "Bearer realm=\"crmd\"");

    // Validation: 400 with the field named; nothing sent.
    for (json, field) in [
        (serde_json::json!({"to": "0501234567", "body": "x"}), "to"),
        (serde_json::json!({"to": "hello", "body": "x"}), "to"),
        (serde_json::json!({"to": CONTACT, "body": "   "}), "body"),
        (
            serde_json::json!({"to": CONTACT, "body": "x".repeat(1601)}),
            "body",
        ),
        (
            serde_json::json!({"to": CONTACT, "body": "x", "media_url": "ftp://x"}),
            "media_url",
        ),
        (serde_json::json!({"body": "x"}), "body"),
        (serde_json::json!("not an object"), "body"),
    ] {
        let (status, body) = send(&edge, Some(API_TOKEN), None, json.clone()).await;
        assert_eq!(status, 400, "{json} -> {body}");
        assert_eq!(body["error"], "bad_request");
        assert!(
            body["message"]
                .as_str()
                .unwrap()
                .starts_with(&format!("invalid {field}")),
            "{json} -> {body}"
        );
    }
    let res = client()
        .post(edge.url("/api/whatsapp/send"))
        .bearer_auth(API_TOKEN)
        .header("content-type", "application/json")
        .body("{\"to\": ")
        .send()
        .await
        .unwrap();
    assert_eq!(res.status(), 400);
    assert!(twilio.requests().is_empty());

    // 1600 characters is the limit, inclusive.
    let (status, body) = send(
        &edge,
        Some(API_TOKEN),
        None,
        serde_json::json!({"to": "whatsapp:+972 50-123-4567", "body": "ש".repeat(1600)}),
    )
    .await;
    assert_eq!(status, 201, "{body}");
    assert_eq!(body["status"], "sent");

    // A normal send: 201 with the stored message; Twilio saw Basic auth and the right form.
    let (status, body) = send(&edge, Some(API_TOKEN), None, ok_body.clone()).await;
    assert_eq!(status, 201, "{body}");
    let sent: crm::Message = serde_json::from_value(body).unwrap();
    assert_eq!(sent.status, "sent");
    assert_eq!(sent.direction, crm::MessageDirection::Outbound);
    assert_eq!(sent.to, "whatsapp:+972501234567");
    assert_eq!(sent.from, WHATSAPP_FROM);
    let provider_sid = sent.provider_sid.clone().unwrap();
    let requests = twilio.requests();
    assert_eq!(requests.len(), 2);
    let last = &requests[1];
    assert_eq!(
        last.path,
        format!("/2010-04-01/Accounts/{ACCOUNT_SID}/Messages.json")
    );
    let basic =
        base64::engine::general_purpose::STANDARD.encode(format!("{ACCOUNT_SID}:{AUTH_TOKEN}"));
    assert_eq!(
        last.authorization.as_deref(),
        Some(format!("Basic {basic}").as_str())
    );
    assert_eq!(last.field("To"), Some("whatsapp:+972501234567"));
    assert_eq!(last.field("From"), Some(WHATSAPP_FROM));
    assert_eq!(last.field("Body"), Some("Your appointment is confirmed"));
    assert_eq!(
        last.field("StatusCallback"),
        Some(format!("{PUBLIC_BASE}/webhook/whatsapp/status").as_str())
    );

    // Status callbacks: forward moves only; duplicates, backwards and unknown are 204 too.
    let status_of = |status: &'static str, sid: &str| -> Vec<(&'static str, String)> {
        vec![
            ("MessageSid", sid.to_owned()),
            ("MessageStatus", status.to_owned()),
            ("AccountSid", ACCOUNT_SID.to_owned()),
            ("From", WHATSAPP_FROM.to_owned()),
            ("To", "whatsapp:+972501234567".to_owned()),
        ]
    };
    let stored_status = |edge: &Edge, sid: String| {
        let store = edge.store.clone();
        async move {
            store
                .find_message_by_provider_sid(&sid)
                .await
                .unwrap()
                .unwrap()
                .status
        }
    };
    for (status, expected) in [
        ("delivered", "delivered"),
        ("delivered", "delivered"),
        ("sent", "delivered"),
        ("queued", "delivered"),
        ("read", "read"),
        ("delivered", "read"),
        ("failed", "read"),
    ] {
        let form = status_of(status, &provider_sid);
        let form: Vec<(&str, &str)> = form.iter().map(|(k, v)| (*k, v.as_str())).collect();
        let res = post_signed(&edge, "/webhook/whatsapp/status", &form, None).await;
        assert_eq!(res.status(), 204, "{status}");
        assert_eq!(
            stored_status(&edge, provider_sid.clone()).await,
            expected,
            "after {status}"
        );
    }
    let unknown = status_of("delivered", "SM_NEVER_SENT");
    let unknown: Vec<(&str, &str)> = unknown.iter().map(|(k, v)| (*k, v.as_str())).collect();
    let res = post_signed(&edge, "/webhook/whatsapp/status", &unknown, None).await;
    assert_eq!(res.status(), 204);
    let res = post_signed(
        &edge,
        "/webhook/whatsapp/status",
        &[("MessageStatus", "sent")],
        None,
    )
    .await;
    assert_eq!(res.status(), 400);
    // Unsigned status callbacks are refused like every Twilio webhook.
    let res = client()
        .post(edge.url("/webhook/whatsapp/status"))
        .header("content-type", FORM)
        .body(encode(&[
            ("MessageSid", provider_sid.as_str()),
            ("MessageStatus", "undelivered"),
        ]))
        .send()
        .await
        .unwrap();
    assert_eq!(res.status(), 403);
    assert_eq!(stored_status(&edge, provider_sid.clone()).await, "read");
    edge.shut_down().await;
}

async fn provider_failures_are_retried_stored_and_answered_502(data: &TestDatabase) {
    let twilio = TwilioStandIn::start().await;
    let vars = twilio.vars();
    let edge = Edge::start(data, &as_refs(&vars), fast_policy()).await;

    // 5xx then success: one message, sent, after two provider requests.
    twilio.script([Reply::Status(
        500,
        serde_json::json!({"code": 20500, "message": "Internal Server Error", "status": 500}),
    )]);
    let (status, body) = send(
        &edge,
        Some(API_TOKEN),
        None,
        serde_json::json!({"to": CONTACT, "body": "retry me"}),
    )
    .await;
    assert_eq!(status, 201, "{body}");
    assert_eq!(body["status"], "sent");
    assert_eq!(twilio.requests().len(), 2);

    // Rejected by Twilio (invalid number): no retry, 502 carrying Twilio's code and message.
    twilio.script([Reply::Status(
        400,
        serde_json::json!({"code": 21211, "message": "The 'To' number is not a valid phone number.",
                           "more_info": "https://www.twilio.com/docs/errors/21211", "status": 400}),
    )]);
    let (status, body) = send(
        &edge,
        Some(API_TOKEN),
        None,
        serde_json::json!({"to": CONTACT, "body": "rejected"}),
    )
    .await;
    assert_eq!(status, 502, "{body}");
    assert_eq!(body["error"], "provider_failed");
    assert_eq!(body["provider_error"]["code"], "21211");
    assert_eq!(body["provider_error"]["transient"], false);
    assert!(
        body["message"]
            .as_str()
            .unwrap()
            .contains("not a valid phone number"),
        "{body}"
    );
    assert_eq!(body["message_record"]["status"], "failed");
    assert_eq!(body["message_record"]["error_code"], "21211");
    assert_eq!(twilio.requests().len(), 3);

    // Twilio keeps failing: bounded attempts, then 502; the message is stored as failed.
    let busy = Reply::Status(
        503,
        serde_json::json!({"code": 20503, "message": "Service Unavailable"}),
    );
    twilio.script([busy.clone(), busy.clone(), busy]);
    let (status, body) = send(
        &edge,
        Some(API_TOKEN),
        None,
        serde_json::json!({"to": CONTACT, "body": "busy"}),
    )
    .await;
    assert_eq!(status, 502, "{body}");
    assert_eq!(body["provider_error"]["transient"], true);
    assert_eq!(twilio.requests().len(), 6);

    let statuses: Vec<String> = messages(&edge)
        .await
        .into_iter()
        .map(|m| m.status)
        .collect();
    assert_eq!(statuses, ["failed", "failed", "sent"], "nothing lost");
    let text = serde_json::to_string(&body).unwrap();
    assert!(!text.contains(AUTH_TOKEN), "secret leaked: {text}");
    edge.shut_down().await;
}

async fn provider_down_is_502_and_the_message_is_kept(data: &TestDatabase) {
    let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let dead = format!("http://{}", listener.local_addr().unwrap());
    drop(listener);
    let vars = [
        ("TWILIO_API_BASE", dead.as_str()),
        ("TWILIO_ACCOUNT_SID", ACCOUNT_SID),
        ("TWILIO_AUTH_TOKEN", AUTH_TOKEN),
        ("TWILIO_WHATSAPP_FROM", WHATSAPP_FROM),
        ("CRMD_API_TOKEN", API_TOKEN),
    ];
    let edge = Edge::start(data, &vars, fast_policy()).await;
    let (status, body) = send(
        &edge,
        Some(API_TOKEN),
        None,
        serde_json::json!({"to": CONTACT, "body": "anyone there?"}),
    )
    .await;
    assert_eq!(status, 502, "{body}");
    assert!(
        body["message"].as_str().unwrap().contains("cannot connect"),
        "{body}"
    );
    let stored = messages(&edge).await;
    assert_eq!(stored.len(), 1);
    assert_eq!(stored[0].status, "failed");
    assert_eq!(stored[0].body, "anyone there?");
    // The server is fine afterwards.
    let res = client().get(edge.url("/healthz")).send().await.unwrap();
    assert_eq!(res.status(), 200);
    edge.shut_down().await;
}

async fn idempotency_key_replays_survive_a_restart(data: &TestDatabase) {
    let twilio = TwilioStandIn::start().await;
    let vars = twilio.vars();
    let edge = Edge::start(data, &as_refs(&vars), fast_policy()).await;
    let request = serde_json::json!({"to": CONTACT, "body": "Reminder: tomorrow 10:00"});

    let (status, first) = send(&edge, Some(API_TOKEN), Some("order-42"), request.clone()).await;
    assert_eq!(status, 201, "{first}");
    let (status, again) = send(&edge, Some(API_TOKEN), Some("order-42"), request.clone()).await;
    assert_eq!(status, 201);
    assert_eq!(again["id"], first["id"]);
    assert_eq!(twilio.requests().len(), 1, "a replay sends nothing");
    // Same key, different message: 409.
    let (status, body) = send(
        &edge,
        Some(API_TOKEN),
        Some("order-42"),
        serde_json::json!({"to": CONTACT, "body": "something else"}),
    )
    .await;
    assert_eq!(status, 409, "{body}");
    assert_eq!(body["error"], "conflict");
    let (status, _) = send(
        &edge,
        Some(API_TOKEN),
        Some("bad key with spaces"),
        request.clone(),
    )
    .await;
    assert_eq!(status, 400);

    // An inbound message arrives, then the server restarts on the same database file.
    let inbound = inbound_form("SM_IN_0200", "thanks!");
    let res = post_signed(&edge, "/webhook/whatsapp/twilio", &inbound, Some("evt-200")).await;
    assert_eq!(res.status(), 204);
    edge.shut_down().await;

    let edge = Edge::start(data, &as_refs(&vars), fast_policy()).await;
    // Twilio retries the webhook after the restart: still stored once.
    let res = post_signed(&edge, "/webhook/whatsapp/twilio", &inbound, Some("evt-200")).await;
    assert_eq!(res.status(), 204);
    // The client retries its send after the restart: the stored message, nothing sent.
    let (status, replay) = send(&edge, Some(API_TOKEN), Some("order-42"), request).await;
    assert_eq!(status, 201, "{replay}");
    assert_eq!(replay["id"], first["id"]);
    assert_eq!(twilio.requests().len(), 1);

    let stored = messages(&edge).await;
    let summary: Vec<(String, String)> = stored
        .iter()
        .map(|m| (m.direction.as_str().to_owned(), m.body.clone()))
        .collect();
    assert_eq!(
        summary,
        [
            ("inbound".to_owned(), "thanks!".to_owned()),
            ("outbound".to_owned(), "Reminder: tomorrow 10:00".to_owned()),
        ]
    );
    // And the read API serves the same list.
    let res = client()
        .get(edge.url("/api/messages?contact=%2B972501234567"))
        .bearer_auth(API_TOKEN)
        .send()
        .await
        .unwrap();
    assert_eq!(res.status(), 200);
    let page: crm::Page<crm::Message> = res.json().await.unwrap();
    assert_eq!(page.items, stored);
    edge.shut_down().await;
}

async fn bridge_webhook_needs_the_api_token_and_stores_once(data: &TestDatabase) {
    let edge = Edge::start(
        data,
        &[
            ("CRMD_API_TOKEN", API_TOKEN),
            ("WHATSAPP_PROVIDER", "bridge"),
            ("WHATSAPP_BRIDGE_URL", "http://127.0.0.1:9"),
        ],
        fast_policy(),
    )
    .await;
    let message = serde_json::json!({
        "id": "3EB0C7A1", "from": "972501234567@s.whatsapp.net", "body": "from the bridge",
        "push_name": "Dana"
    });
    let res = client()
        .post(edge.url("/webhook/whatsapp/bridge"))
        .json(&message)
        .send()
        .await
        .unwrap();
    assert_eq!(res.status(), 401);
    for _ in 0..2 {
        let res = client()
            .post(edge.url("/webhook/whatsapp/bridge"))
            .bearer_auth(API_TOKEN)
            .json(&message)
            .send()
            .await
            .unwrap();
        assert_eq!(res.status(), 204);
    }
    let stored = messages(&edge).await;
    assert_eq!(stored.len(), 1);
    assert_eq!(stored[0].provider, "bridge");
    assert_eq!(stored[0].body, "from the bridge");
    let res = client()
        .post(edge.url("/webhook/whatsapp/bridge"))
        .bearer_auth(API_TOKEN)
        .json(&serde_json::json!({"id": "X", "from": "not-a-number"}))
        .send()
        .await
        .unwrap();
    assert_eq!(res.status(), 400);
    edge.shut_down().await;
}

async fn hanging_provider_is_cut_by_the_attempt_timeout(data: &TestDatabase) {
    let twilio = TwilioStandIn::start().await;
    let vars = twilio.vars();
    let policy = crm::whatsapp::SendPolicy {
        max_attempts: 2,
        attempt_timeout: std::time::Duration::from_millis(150),
        ..fast_policy()
    };
    let edge = Edge::start(data, &as_refs(&vars), policy).await;
    twilio.script([Reply::Hang, Reply::Hang]);
    let (status, body) = send(
        &edge,
        Some(API_TOKEN),
        None,
        serde_json::json!({"to": CONTACT, "body": "hello?"}),
    )
    .await;
    assert_eq!(status, 502, "{body}");
    assert!(
        body["message"].as_str().unwrap().contains("did not answer"),
        "{body}"
    );
    assert_eq!(
        twilio.requests().len(),
        2,
        "each attempt timed out, then gave up"
    );
    assert_eq!(messages(&edge).await[0].status, "failed");
    edge.shut_down().await;
}

async fn concurrent_retries_with_one_key_send_once(data: &TestDatabase) {
    let twilio = TwilioStandIn::start().await;
    let vars = twilio.vars();
    let edge = Edge::start(data, &as_refs(&vars), fast_policy()).await;
    let request = serde_json::json!({"to": CONTACT, "body": "only once"});
    let sends = (0..4).map(|_| send(&edge, Some(API_TOKEN), Some("same-key"), request.clone()));
    let answers = futures::future::join_all(sends).await;
    let ids: Vec<&serde_json::Value> = answers.iter().map(|(_, body)| &body["id"]).collect();
    for (status, body) in &answers {
        assert_eq!(*status, 201, "{body}");
    }
    assert!(ids.iter().all(|id| *id == ids[0]), "{answers:?}");
    assert_eq!(twilio.requests().len(), 1);
    assert_eq!(messages(&edge).await.len(), 1);
    edge.shut_down().await;
}

async fn oversized_send_body_is_413(data: &TestDatabase) {
    let twilio = TwilioStandIn::start().await;
    let mut vars = twilio.vars();
    vars.push(("MAX_BODY_BYTES", "2048".to_owned()));
    let edge = Edge::start(data, &as_refs(&vars), fast_policy()).await;
    let (status, body) = send(
        &edge,
        Some(API_TOKEN),
        None,
        serde_json::json!({"to": CONTACT, "body": "x".repeat(4000)}),
    )
    .await;
    assert_eq!(status, 413, "{body}");
    assert_eq!(body["error"], "body_too_large");
    assert!(twilio.requests().is_empty());
    edge.shut_down().await;
}

on_both_backends!(
    signed_inbound_is_stored_exactly_once_and_unsigned_is_refused,
    unsigned_inbound_is_accepted_when_signature_checks_are_off,
    sending_off_without_twilio_settings_says_what_to_set,
    send_validates_authenticates_sends_and_tracks_statuses,
    provider_failures_are_retried_stored_and_answered_502,
    provider_down_is_502_and_the_message_is_kept,
    idempotency_key_replays_survive_a_restart,
    bridge_webhook_needs_the_api_token_and_stores_once,
    hanging_provider_is_cut_by_the_attempt_timeout,
    concurrent_retries_with_one_key_send_once,
    oversized_send_body_is_413,
);

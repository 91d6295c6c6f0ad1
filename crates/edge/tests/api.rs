//! The CRM read API against the real edge and a real SQLite file: bearer token (503 when unset,
//! 401 when wrong), pagination with `cursor`/`before`, call filters, a call with its transcript,
//! messages of a contact, the Ogg Opus recording streamed from its file, follow-up tasks listed
//! by status and marked done, and clear 4xx answers for bad ids and filters.
#![allow(clippy::unwrap_used)]

mod api_support;

use api_support::{API_TOKEN, Edge, TestDatabase, client, fast_policy};
use crm::{NewCall, NewTask, NewTurn, Speaker, TaskKind};
use serde_json::Value;

async fn get(edge: &Edge, path: &str) -> (u16, Value) {
    let res = client()
        .get(edge.url(path))
        .bearer_auth(API_TOKEN)
        .send()
        .await
        .unwrap();
    let status = res.status().as_u16();
    let body = res.json().await.unwrap_or(Value::Null);
    (status, body)
}

async fn api_edge(data: &TestDatabase) -> Edge {
    Edge::start(data, &[("CRMD_API_TOKEN", API_TOKEN)], fast_policy()).await
}

fn new_call(sid: &str, from: &str, status: &str, at_ms: i64) -> NewCall {
    NewCall {
        call_sid: sid.to_owned(),
        account_sid: None,
        from: Some(from.to_owned()),
        to: Some("+97231234567".to_owned()),
        direction: "inbound".to_owned(),
        status: Some(status.to_owned()),
        caller_name: None,
        at_ms,
    }
}

async fn the_api_is_never_open_and_checks_the_bearer_token(data: &TestDatabase) {
    let closed = Edge::start(data, &[], fast_policy()).await;
    for path in [
        "/api/contacts",
        "/api/contacts/1",
        "/api/calls",
        "/api/calls/CA1",
        "/api/calls/CA1/recording",
        "/api/messages?contact=%2B972501234567",
        "/api/tasks",
    ] {
        let res = client().get(closed.url(path)).send().await.unwrap();
        assert_eq!(res.status(), 503, "{path}");
        let body: Value = res.json().await.unwrap();
        assert_eq!(
            body["message"], "set CRMD_API_TOKEN to enable the API",
            "{path}"
        );
    }
    closed.shut_down().await;

    let edge = api_edge(data).await;
    let res = client()
        .get(edge.url("/api/contacts"))
        .send()
        .await
        .unwrap();
    assert_eq!(res.status(), 401);
    assert!(res.headers().contains_key("www-authenticate"));
    assert!(
        res.headers().contains_key("x-app-signature"),
        "edge layers apply"
    );
    for header in [
        "Bearer wrong".to_owned(),
        format!("Basic {API_TOKEN}"),
        API_TOKEN.to_owned(),
        format!("Bearer {API_TOKEN}x"),
    ] {
        let res = client()
            .get(edge.url("/api/contacts"))
            .header("authorization", header.as_str())
            .send()
            .await
            .unwrap();
        assert_eq!(res.status(), 401, "{header}");
        let text = res.text().await.unwrap();
        assert!(!text.contains(API_TOKEN), "token echoed: {text}");
    }
    let (status, body) = get(&edge, "/api/contacts").await;
    assert_eq!(status, 200, "{body}");
    assert_eq!(body, serde_json::json!({"items": [], "next_cursor": null}));
    edge.shut_down().await;
}

async fn contacts_page_with_cursor_and_before_and_refuse_bad_input(data: &TestDatabase) {
    let edge = api_edge(data).await;
    let mut ids = Vec::new();
    for n in 1..=5 {
        let contact = edge
            .store
            .upsert_contact(&format!("+97250123456{n}"), Some(&format!("Contact {n}")))
            .await
            .unwrap();
        ids.push(contact.id);
    }
    let (status, page1) = get(&edge, "/api/contacts?limit=2").await;
    assert_eq!(status, 200);
    let names = |page: &Value| -> Vec<String> {
        page["items"]
            .as_array()
            .unwrap()
            .iter()
            .map(|c| c["display_name"].as_str().unwrap().to_owned())
            .collect()
    };
    assert_eq!(names(&page1), ["Contact 5", "Contact 4"]);
    let cursor = page1["next_cursor"].as_i64().unwrap();
    let (_, page2) = get(&edge, &format!("/api/contacts?limit=2&cursor={cursor}")).await;
    assert_eq!(names(&page2), ["Contact 3", "Contact 2"]);
    let cursor = page2["next_cursor"].as_i64().unwrap();
    let (_, page3) = get(&edge, &format!("/api/contacts?limit=2&before={cursor}")).await;
    assert_eq!(names(&page3), ["Contact 1"]);
    assert_eq!(page3["next_cursor"], Value::Null);

    let (status, one) = get(&edge, &format!("/api/contacts/{}", ids[2])).await;
    assert_eq!(status, 200);
    assert_eq!(one["phone_e164"], "+972501234563");
    assert_eq!(one["display_name"], "Contact 3");

    for (path, status, needle) in [
        ("/api/contacts/999999", 404, "contact 999999 not found"),
        ("/api/contacts/abc", 400, "invalid contact id"),
        ("/api/contacts/0", 400, "invalid contact id"),
        ("/api/contacts/-3", 400, "invalid contact id"),
        ("/api/contacts?limit=0", 400, "invalid limit"),
        ("/api/contacts?limit=201", 400, "invalid limit"),
        ("/api/contacts?limit=ten", 400, "invalid limit"),
        ("/api/contacts?cursor=abc", 400, "invalid cursor"),
        ("/api/contacts?cursor=1&before=2", 400, "invalid cursor"),
        ("/api/contacts?limit=1&limit=2", 400, "given more than once"),
        ("/api/contacts?sort=name", 400, "unknown parameter `sort`"),
    ] {
        let (got, body) = get(&edge, path).await;
        assert_eq!(got, status, "{path}: {body}");
        let message = body["message"].as_str().unwrap();
        assert!(message.contains(needle), "{path}: {message}");
        assert_eq!(
            body["error"],
            if status == 404 {
                "not_found"
            } else {
                "bad_request"
            }
        );
    }
    edge.shut_down().await;
}

async fn calls_filter_and_page_and_show_their_transcript(data: &TestDatabase) {
    let edge = api_edge(data).await;
    let store = &edge.store;
    // 2023-11-14T22:13:20Z = 1_700_000_000_000 ms.
    let t0 = 1_700_000_000_000;
    store
        .record_incoming_call(&new_call("CA_A", "+972501234567", "ringing", t0))
        .await
        .unwrap();
    store
        .record_incoming_call(&new_call("CA_B", "+972501234567", "ringing", t0 + 60_000))
        .await
        .unwrap();
    store
        .record_incoming_call(&new_call("CA_C", "+14155550100", "ringing", t0 + 120_000))
        .await
        .unwrap();
    store
        .mark_call_ended("CA_A", t0 + 30_000, "completed")
        .await
        .unwrap();
    for (seq, speaker, text, heard) in [
        (0, Speaker::Agent, "שלום, במה אפשר לעזור?", None),
        (1, Speaker::Caller, "I want to book for tomorrow", None),
        (
            2,
            Speaker::Agent,
            "Sure, at ten or at twelve?",
            Some("Sure, at ten"),
        ),
    ] {
        store
            .append_turn(&NewTurn {
                call_sid: "CA_A".to_owned(),
                seq,
                speaker,
                text: text.to_owned(),
                heard_text: heard.map(str::to_owned),
                interrupted: heard.is_some(),
                started_at_ms: t0 + seq * 1000,
                ended_at_ms: Some(t0 + seq * 1000 + 900),
                latency_json: None,
            })
            .await
            .unwrap();
    }

    let sids = |page: &Value| -> Vec<String> {
        page["items"]
            .as_array()
            .unwrap()
            .iter()
            .map(|c| c["call_sid"].as_str().unwrap().to_owned())
            .collect()
    };
    let (status, all) = get(&edge, "/api/calls").await;
    assert_eq!(status, 200, "{all}");
    assert_eq!(sids(&all), ["CA_C", "CA_B", "CA_A"]);
    let (_, page) = get(&edge, "/api/calls?limit=2").await;
    assert_eq!(sids(&page), ["CA_C", "CA_B"]);
    let cursor = page["next_cursor"].as_i64().unwrap();
    let (_, page) = get(&edge, &format!("/api/calls?limit=2&before={cursor}")).await;
    assert_eq!(sids(&page), ["CA_A"]);

    // `from` as %2B-encoded, as a literal `+` (decoded to a space) and without the plus.
    for from in ["%2B972501234567", "+972501234567", "972501234567"] {
        let (status, page) = get(&edge, &format!("/api/calls?from={from}")).await;
        assert_eq!(status, 200, "{from}: {page}");
        assert_eq!(sids(&page), ["CA_B", "CA_A"], "{from}");
    }
    let (_, page) = get(&edge, "/api/calls?status=completed").await;
    assert_eq!(sids(&page), ["CA_A"]);
    let contact_id = all["items"][2]["contact_id"].as_i64().unwrap();
    let (_, page) = get(&edge, &format!("/api/calls?contact_id={contact_id}")).await;
    assert_eq!(sids(&page), ["CA_B", "CA_A"]);
    let since = t0 + 60_000;
    let (_, page) = get(&edge, &format!("/api/calls?since={since}")).await;
    assert_eq!(sids(&page), ["CA_C", "CA_B"]);
    let (_, page) = get(
        &edge,
        "/api/calls?since=2023-11-14T22:14:20Z&until=2023-11-14T22:15:20Z",
    )
    .await;
    assert_eq!(sids(&page), ["CA_B"]);
    let (_, page) = get(&edge, "/api/calls?until=2023-11-15T00:14:21%2B02:00").await;
    assert_eq!(sids(&page), ["CA_B", "CA_A"]);

    for (path, needle) in [
        ("/api/calls?since=yesterday", "invalid since"),
        ("/api/calls?since=2000&until=1000", "invalid since"),
        ("/api/calls?from=hello", "invalid from"),
        ("/api/calls?contact_id=x", "invalid contact_id"),
        ("/api/calls?stauts=completed", "unknown parameter `stauts`"),
        (
            "/api/calls?status=0123456789012345678901234567890123",
            "invalid status",
        ),
    ] {
        let (status, body) = get(&edge, path).await;
        assert_eq!(status, 400, "{path}: {body}");
        assert!(
            body["message"].as_str().unwrap().contains(needle),
            "{path}: {body}"
        );
    }

    let (status, detail) = get(&edge, "/api/calls/CA_A").await;
    assert_eq!(status, 200, "{detail}");
    assert_eq!(detail["call"]["status"], "completed");
    assert_eq!(detail["call"]["duration_ms"], 30_000);
    let turns = detail["turns"].as_array().unwrap();
    assert_eq!(turns.len(), 3);
    assert_eq!(turns[0]["speaker"], "agent");
    assert_eq!(turns[0]["text"], "שלום, במה אפשר לעזור?");
    assert_eq!(turns[1]["speaker"], "caller");
    assert_eq!(turns[2]["heard_text"], "Sure, at ten");
    assert_eq!(turns[2]["interrupted"], true);
    assert_eq!(detail["recording"], Value::Null);

    let (status, body) = get(&edge, "/api/calls/CA_NOPE").await;
    assert_eq!(status, 404, "{body}");
    assert_eq!(body["message"], "call CA_NOPE not found");
    let (status, body) = get(&edge, "/api/calls/CA%20A%3B").await;
    assert_eq!(status, 400, "{body}");
    assert!(
        body["message"]
            .as_str()
            .unwrap()
            .starts_with("invalid call_sid")
    );
    edge.shut_down().await;
}

async fn messages_of_a_contact_need_a_valid_known_number(data: &TestDatabase) {
    let edge = api_edge(data).await;
    // One inbound message through the real webhook (signature checks are off here).
    let res = client()
        .post(edge.url("/webhook/whatsapp/twilio"))
        .header("content-type", api_support::FORM)
        .body(api_support::encode(&[
            ("MessageSid", "SM_API_1"),
            ("From", "whatsapp:+972501234567"),
            ("To", "whatsapp:+14155238886"),
            ("Body", "hello"),
        ]))
        .send()
        .await
        .unwrap();
    assert_eq!(res.status(), 204);
    for contact in [
        "%2B972501234567",
        "+972501234567",
        "whatsapp:%2B972501234567",
    ] {
        let (status, page) = get(&edge, &format!("/api/messages?contact={contact}")).await;
        assert_eq!(status, 200, "{contact}: {page}");
        let items = page["items"].as_array().unwrap();
        assert_eq!(items.len(), 1);
        assert_eq!(items[0]["direction"], "inbound");
        assert_eq!(items[0]["status"], "received");
        assert_eq!(items[0]["body"], "hello");
        assert_eq!(items[0]["provider_sid"], "SM_API_1");
        assert!(items[0]["created_at_ms"].as_i64().unwrap() > 0);
    }
    for (path, status, needle) in [
        ("/api/messages", 400, "invalid contact"),
        ("/api/messages?contact=abc", 400, "invalid contact"),
        ("/api/messages?contact=%2B14155550199", 404, "not found"),
        (
            "/api/messages?contact=%2B972501234567&limit=500",
            400,
            "invalid limit",
        ),
    ] {
        let (got, body) = get(&edge, path).await;
        assert_eq!(got, status, "{path}: {body}");
        assert!(
            body["message"].as_str().unwrap().contains(needle),
            "{path}: {body}"
        );
    }
    edge.shut_down().await;
}

async fn recording_is_streamed_from_its_file_as_wav_then_as_ogg(data: &TestDatabase) {
    let edge = api_edge(data).await;
    edge.store
        .record_incoming_call(&new_call("CA_REC", "+972501234567", "in-progress", 1_000))
        .await
        .unwrap();
    // A real recording: two seconds of caller and agent audio spooled to a WAV on disk...
    let dir = data.path().join("recordings");
    let mut recorder = crm::recording::CallRecorder::create(&dir, "CA_REC").unwrap();
    let tone: Vec<u8> = (0..160u32).map(|i| (i * 7 % 256) as u8).collect();
    for frame in 0..100u64 {
        recorder.push_caller(frame * 20, &tone).unwrap();
        recorder.push_agent(frame * 20, &tone).unwrap();
    }
    let spool = recorder.finish(2_000).unwrap();
    edge.store.attach_recording(&spool).await.unwrap();
    // ...which plays at once, as a WAV, until its encoding replaces it.
    let body = get_recording_as(&edge, "audio/wav", "CA_REC.wav").await;
    assert_eq!(body, std::fs::read(&spool.path).unwrap());
    let (info, _) = mulaw::wav::parse(&body).unwrap();
    assert_eq!(info.channels, 2);

    let recording = crm::recording::encode_spool(&spool).unwrap();
    let on_disk = std::fs::read(&recording.path).unwrap();
    edge.store.attach_recording(&recording).await.unwrap();

    let body = get_recording_as(&edge, "audio/ogg", "CA_REC.ogg").await;
    assert!(body.starts_with(b"OggS"));
    assert_eq!(body, on_disk);

    // Seeking: a byte range is answered 206 with Content-Range; HEAD gives the size only.
    let res = client()
        .get(edge.url("/api/calls/CA_REC/recording"))
        .bearer_auth(API_TOKEN)
        .header("range", "bytes=0-3")
        .send()
        .await
        .unwrap();
    assert_eq!(res.status(), 206);
    assert_eq!(
        res.headers()["content-range"],
        format!("bytes 0-3/{}", on_disk.len()).as_str()
    );
    assert_eq!(res.headers()["content-type"], "audio/ogg");
    assert_eq!(res.bytes().await.unwrap().as_ref(), b"OggS");
    let res = client()
        .head(edge.url("/api/calls/CA_REC/recording"))
        .bearer_auth(API_TOKEN)
        .send()
        .await
        .unwrap();
    assert_eq!(res.status(), 200);
    assert_eq!(
        res.headers()["content-length"],
        on_disk.len().to_string().as_str()
    );
    assert!(res.bytes().await.unwrap().is_empty());
    let res = client()
        .get(edge.url("/api/calls/CA_REC/recording"))
        .send()
        .await
        .unwrap();
    assert_eq!(res.status(), 401, "the file needs the token too");

    let (status, detail) = get(&edge, "/api/calls/CA_REC").await;
    assert_eq!(status, 200);
    assert_eq!(detail["recording"]["codec"], "opus");

    // No recording attached, unknown call, and a referenced file that vanished: 404s.
    edge.store
        .record_incoming_call(&new_call("CA_NOREC", "+972501234567", "completed", 2_000))
        .await
        .unwrap();
    let (status, body) = get(&edge, "/api/calls/CA_NOREC/recording").await;
    assert_eq!(status, 404, "{body}");
    let (status, _) = get(&edge, "/api/calls/CA_UNKNOWN/recording").await;
    assert_eq!(status, 404);
    std::fs::remove_file(&recording.path).unwrap();
    let (status, body) = get(&edge, "/api/calls/CA_REC/recording").await;
    assert_eq!(status, 404, "{body}");
    let message = body["message"].as_str().unwrap();
    assert!(message.contains("file is missing"), "{message}");
    assert!(
        !message.contains(&recording.path),
        "server path leaked: {message}"
    );
    edge.shut_down().await;
}

/// `GET /api/calls/CA_REC/recording`: answered 200 with the whole file as `media_type`, named
/// `file_name`, its `Content-Length` the body's; returns the body.
async fn get_recording_as(edge: &Edge, media_type: &str, file_name: &str) -> Vec<u8> {
    let res = client()
        .get(edge.url("/api/calls/CA_REC/recording"))
        .bearer_auth(API_TOKEN)
        .send()
        .await
        .unwrap();
    assert_eq!(res.status(), 200);
    assert_eq!(res.headers()["content-type"], media_type);
    assert_eq!(
        res.headers()["content-disposition"],
        format!("inline; filename=\"{file_name}\"").as_str()
    );
    let length = res.headers()["content-length"].to_str().unwrap().to_owned();
    let body = res.bytes().await.unwrap().to_vec();
    assert_eq!(length, body.len().to_string());
    body
}

async fn post(edge: &Edge, path: &str) -> (u16, Value) {
    let res = client()
        .post(edge.url(path))
        .bearer_auth(API_TOKEN)
        .send()
        .await
        .unwrap();
    let status = res.status().as_u16();
    (status, res.json().await.unwrap_or(Value::Null))
}

async fn tasks_are_listed_by_status_and_marked_done(data: &TestDatabase) {
    let edge = api_edge(data).await;
    edge.store
        .record_incoming_call(&new_call("CA_TASKS", "+972501234567", "completed", 1_000))
        .await
        .unwrap();
    let mut ids = Vec::new();
    for (seq, kind, text) in [
        (0, TaskKind::Message, "the boiler is leaking"),
        (1, TaskKind::Message, "bring the invoice"),
        (0, TaskKind::Callback, "call me back about the quote"),
    ] {
        let task = edge
            .store
            .record_task(&NewTask {
                call_sid: "CA_TASKS".to_owned(),
                seq,
                contact_phone: Some("+972501234567".to_owned()),
                kind,
                text: text.to_owned(),
                preferred_time: (kind == TaskKind::Callback).then(|| "after 5pm".to_owned()),
                at_ms: 2_000 + seq,
            })
            .await
            .unwrap()
            .unwrap();
        ids.push(task.id);
    }
    let texts = |page: &Value| -> Vec<String> {
        page["items"]
            .as_array()
            .unwrap()
            .iter()
            .map(|t| t["text"].as_str().unwrap().to_owned())
            .collect()
    };

    // Newest first, paged with the cursor like every list.
    let (status, page1) = get(&edge, "/api/tasks?status=open&limit=2").await;
    assert_eq!(status, 200, "{page1}");
    assert_eq!(
        texts(&page1),
        ["call me back about the quote", "bring the invoice"]
    );
    assert_eq!(page1["items"][0]["kind"], "callback");
    assert_eq!(page1["items"][0]["preferred_time"], "after 5pm");
    assert_eq!(page1["items"][0]["status"], "open");
    assert_eq!(page1["items"][0]["call_sid"], "CA_TASKS");
    let cursor = page1["next_cursor"].as_i64().unwrap();
    let (_, page2) = get(&edge, &format!("/api/tasks?status=open&cursor={cursor}")).await;
    assert_eq!(texts(&page2), ["the boiler is leaking"]);
    assert_eq!(page2["next_cursor"], Value::Null);

    // Done moves a task from the open list to the done list; repeating it changes nothing.
    for _ in 0..2 {
        let (status, done) = post(&edge, &format!("/api/tasks/{}/done", ids[0])).await;
        assert_eq!(status, 200, "{done}");
        assert_eq!(done["id"], ids[0]);
        assert_eq!(done["status"], "done");
        assert_eq!(done["text"], "the boiler is leaking");
    }
    let (_, open) = get(&edge, "/api/tasks?status=open").await;
    assert_eq!(
        texts(&open),
        ["call me back about the quote", "bring the invoice"]
    );
    let (_, done) = get(&edge, "/api/tasks?status=done").await;
    assert_eq!(texts(&done), ["the boiler is leaking"]);
    let (_, all) = get(&edge, "/api/tasks").await;
    assert_eq!(all["items"].as_array().unwrap().len(), 3);

    // The token is needed to change a task too, and bad input is a clear 4xx.
    let res = client()
        .post(edge.url(&format!("/api/tasks/{}/done", ids[1])))
        .send()
        .await
        .unwrap();
    assert_eq!(res.status(), 401);
    let (_, open) = get(&edge, "/api/tasks?status=open").await;
    assert_eq!(open["items"].as_array().unwrap().len(), 2, "unchanged");
    for (path, status, needle) in [
        ("/api/tasks?status=closed", 400, "invalid status"),
        ("/api/tasks?stauts=open", 400, "unknown parameter `stauts`"),
        ("/api/tasks?limit=0", 400, "invalid limit"),
    ] {
        let (got, body) = get(&edge, path).await;
        assert_eq!(got, status, "{path}: {body}");
        let message = body["message"].as_str().unwrap();
        assert!(message.contains(needle), "{path}: {message}");
    }
    for (path, status, needle) in [
        ("/api/tasks/999999/done", 404, "task 999999 not found"),
        ("/api/tasks/abc/done", 400, "invalid task id"),
        ("/api/tasks/0/done", 400, "invalid task id"),
    ] {
        let (got, body) = post(&edge, path).await;
        assert_eq!(got, status, "{path}: {body}");
        let message = body["message"].as_str().unwrap();
        assert!(message.contains(needle), "{path}: {message}");
    }
    edge.shut_down().await;
}

on_both_backends!(
    the_api_is_never_open_and_checks_the_bearer_token,
    contacts_page_with_cursor_and_before_and_refuse_bad_input,
    calls_filter_and_page_and_show_their_transcript,
    messages_of_a_contact_need_a_valid_known_number,
    recording_is_streamed_from_its_file_as_wav_then_as_ogg,
    tasks_are_listed_by_status_and_marked_done,
);

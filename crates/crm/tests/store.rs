//! Store behaviour on a real SQLite file and a real PostgreSQL database.
#![allow(clippy::unwrap_used)]

mod common;

use common::TestDb;
use crm::{
    CallFilter, CrmError, NewCall, NewRecording, NewTurn, PageRequest, Speaker, StreamEventRecord,
};

fn incoming(call_sid: &str, from: &str, at_ms: i64) -> NewCall {
    NewCall {
        call_sid: call_sid.to_owned(),
        account_sid: Some("AC0123".to_owned()),
        from: Some(from.to_owned()),
        to: Some("+18005551212".to_owned()),
        direction: "inbound".to_owned(),
        status: Some("ringing".to_owned()),
        caller_name: Some("CNAM NAME".to_owned()),
        at_ms,
    }
}

fn turn(call_sid: &str, seq: i64, speaker: Speaker, text: &str) -> NewTurn {
    NewTurn {
        call_sid: call_sid.to_owned(),
        seq,
        speaker,
        text: text.to_owned(),
        heard_text: None,
        interrupted: false,
        started_at_ms: 1_000 * seq,
        ended_at_ms: Some(1_000 * seq + 500),
        latency_json: None,
    }
}

async fn contacts_upsert_keeps_one_row_per_number(db: &TestDb) {
    let s = &db.store;
    let first = s
        .upsert_contact("+972501234567", Some("Dana"))
        .await
        .unwrap();
    let again = s.upsert_contact("+972501234567", None).await.unwrap();
    assert_eq!(first.id, again.id);
    assert_eq!(
        again.display_name.as_deref(),
        Some("Dana"),
        "None keeps the stored name"
    );
    assert!(again.last_seen_at_ms >= first.last_seen_at_ms);
    let renamed = s
        .upsert_contact("+972501234567", Some("Dana K"))
        .await
        .unwrap();
    assert_eq!(renamed.display_name.as_deref(), Some("Dana K"));
    assert_eq!(
        s.find_contact_by_phone("+972501234567")
            .await
            .unwrap()
            .unwrap()
            .id,
        first.id
    );
    assert!(
        s.find_contact_by_phone("+14155550000")
            .await
            .unwrap()
            .is_none()
    );
    assert_eq!(s.get_contact(first.id).await.unwrap(), renamed);

    for bad in [
        "",
        "972501234567",
        "+0501234567",
        "+12ab345678",
        "+1234567",
        "+1234567890123456",
    ] {
        let err = s.upsert_contact(bad, None).await.unwrap_err();
        assert_eq!(err.http_status(), 400, "{bad:?}: {err}");
    }
    let err = s.get_contact(first.id + 1000).await.unwrap_err();
    assert!(matches!(err, CrmError::NotFound { .. }));
    assert_eq!(err.http_status(), 404);
}

async fn incoming_call_is_idempotent_and_links_contact(db: &TestDb) {
    let s = &db.store;
    let call = s
        .record_incoming_call(&incoming("CA01", "+972501234567", 10_000))
        .await
        .unwrap();
    let retry = s
        .record_incoming_call(&incoming("CA01", "+972501234567", 10_050))
        .await
        .unwrap();
    assert_eq!(call.id, retry.id);
    assert_eq!(
        retry.started_at_ms, 10_000,
        "a retried webhook keeps the first arrival time"
    );
    let contact = s
        .find_contact_by_phone("+972501234567")
        .await
        .unwrap()
        .unwrap();
    assert_eq!(call.contact_id, Some(contact.id));
    assert_eq!(contact.display_name.as_deref(), Some("CNAM NAME"));
    // A caller name never overwrites a name the contact already has.
    s.upsert_contact("+972501234567", Some("Real Name"))
        .await
        .unwrap();
    s.record_incoming_call(&incoming("CA02", "+972501234567", 20_000))
        .await
        .unwrap();
    let contact = s
        .find_contact_by_phone("+972501234567")
        .await
        .unwrap()
        .unwrap();
    assert_eq!(contact.display_name.as_deref(), Some("Real Name"));

    // Anonymous caller: stored, linked to no contact.
    let anon = s
        .record_incoming_call(&incoming("CA03", "anonymous", 30_000))
        .await
        .unwrap();
    assert_eq!(anon.contact_id, None);
    assert_eq!(anon.from.as_deref(), Some("anonymous"));

    for bad in ["", "CA 01", "CA01;DROP TABLE calls", &"C".repeat(65)] {
        let err = s
            .record_incoming_call(&incoming(bad, "+972501234567", 1))
            .await
            .unwrap_err();
        assert_eq!(err.http_status(), 400, "{bad:?}");
    }
}

async fn stream_before_webhook_then_end_first_wins(db: &TestDb) {
    let s = &db.store;
    // The WebSocket start can land before the webhook row (simulators, races).
    s.mark_call_streaming("CA10", "MZ10", 5_000).await.unwrap();
    let call = s
        .record_incoming_call(&incoming("CA10", "+14155550100", 4_900))
        .await
        .unwrap();
    assert_eq!(call.stream_sid.as_deref(), Some("MZ10"));
    assert_eq!(call.streaming_at_ms, Some(5_000));
    assert_eq!(call.direction, "inbound");
    assert_eq!(call.started_at_ms, 4_900);
    s.mark_call_streaming("CA10", "MZ10", 5_500).await.unwrap();
    s.mark_call_ended("CA10", 65_000, "completed")
        .await
        .unwrap();
    s.mark_call_ended("CA10", 70_000, "failed").await.unwrap();
    // A late webhook retry must not reopen the call.
    s.record_incoming_call(&incoming("CA10", "+14155550100", 4_900))
        .await
        .unwrap();
    let call = s.get_call("CA10").await.unwrap();
    assert_eq!(call.streaming_at_ms, Some(5_000));
    assert_eq!(call.ended_at_ms, Some(65_000));
    assert_eq!(call.status.as_deref(), Some("completed"));
    assert_eq!(call.duration_ms, Some(60_100));

    // End without any earlier row still records the call.
    s.mark_call_ended("CA11", 1_000, "completed").await.unwrap();
    let lone = s.get_call("CA11").await.unwrap();
    assert_eq!(
        (lone.direction.as_str(), lone.duration_ms),
        ("unknown", Some(0))
    );
}

async fn turns_and_events_are_idempotent_and_ordered(db: &TestDb) {
    let s = &db.store;
    s.record_incoming_call(&incoming("CA20", "+14155550101", 0))
        .await
        .unwrap();
    s.append_turn(&turn("CA20", 2, Speaker::Caller, "I need an appointment"))
        .await
        .unwrap();
    s.append_turn(&turn("CA20", 1, Speaker::Agent, "Hello, how can I help?"))
        .await
        .unwrap();
    s.append_turn(&turn("CA20", 1, Speaker::Agent, "Hello, how can I help?"))
        .await
        .unwrap();
    let mut interrupted = turn(
        "CA20",
        3,
        Speaker::Agent,
        "Sure, we have Monday at nine or Tuesday",
    );
    s.append_turn(&interrupted).await.unwrap();
    // Re-submitted once the barge-in is known: replaces, does not duplicate.
    interrupted.heard_text = Some("Sure, we have Monday".to_owned());
    interrupted.interrupted = true;
    interrupted.latency_json =
        Some(serde_json::json!({"stt_final_ms": 120, "tts_first_byte_ms": 310}));
    s.append_turn(&interrupted).await.unwrap();
    let bad = NewTurn {
        seq: -1,
        ..turn("CA20", 0, Speaker::Caller, "x")
    };
    assert_eq!(s.append_turn(&bad).await.unwrap_err().http_status(), 400);

    let started = StreamEventRecord {
        kind: "stream-started".to_owned(),
        stream_sid: Some("MZ20".to_owned()),
        error: None,
        at_ms: 100,
    };
    s.record_stream_event("CA20", &started).await.unwrap();
    s.record_stream_event("CA20", &started).await.unwrap();
    let stopped = StreamEventRecord {
        kind: "stream-stopped".to_owned(),
        at_ms: 9_000,
        ..started.clone()
    };
    s.record_stream_event("CA20", &stopped).await.unwrap();
    // Once-per-call events: a second one (a retried `<Connect action>`, later) is not stored.
    let ended = StreamEventRecord {
        kind: "stream-ended".to_owned(),
        stream_sid: None,
        at_ms: 9_100,
        ..started.clone()
    };
    s.record_stream_event_once("CA20", &ended).await.unwrap();
    let retried = StreamEventRecord {
        at_ms: 9_800,
        ..ended.clone()
    };
    s.record_stream_event_once("CA20", &retried).await.unwrap();
    assert_eq!(
        s.record_stream_event_once("not a sid", &ended)
            .await
            .unwrap_err()
            .http_status(),
        400
    );

    let detail = s.get_call_with_turns("CA20").await.unwrap();
    let seqs: Vec<i64> = detail.turns.iter().map(|t| t.seq).collect();
    assert_eq!(seqs, vec![1, 2, 3]);
    assert_eq!(detail.turns[0].speaker, Speaker::Agent);
    let last = &detail.turns[2];
    assert!(last.interrupted);
    assert_eq!(last.heard_text.as_deref(), Some("Sure, we have Monday"));
    assert_eq!(last.latency.as_ref().unwrap()["tts_first_byte_ms"], 310);
    assert_eq!(detail.stream_events, vec![started, stopped, ended]);
    assert!(detail.recording.is_none());

    let err = s.get_call_with_turns("CA_MISSING").await.unwrap_err();
    assert_eq!(err.http_status(), 404);
    assert_eq!(
        s.get_call_with_turns("not a sid")
            .await
            .unwrap_err()
            .http_status(),
        400
    );
}

async fn recordings_attach_and_replace(db: &TestDb) {
    let s = &db.store;
    assert_eq!(
        s.get_recording("CA30").await.unwrap_err().http_status(),
        404
    );
    let rec = NewRecording {
        call_sid: "CA30".to_owned(),
        path: "/var/lib/crmd/recordings/CA30.ogg".to_owned(),
        codec: "opus".to_owned(),
        duration_ms: Some(61_000),
        size_bytes: Some(123_456),
        at_ms: 70_000,
    };
    s.attach_recording(&rec).await.unwrap();
    s.attach_recording(&NewRecording {
        duration_ms: Some(62_000),
        ..rec.clone()
    })
    .await
    .unwrap();
    let stored = s.get_recording("CA30").await.unwrap();
    assert_eq!(stored.path, rec.path);
    assert_eq!(stored.duration_ms, Some(62_000));
    assert_eq!(stored.codec, "opus");
}

async fn pagination_and_filters(db: &TestDb) {
    let s = &db.store;
    for i in 0..5 {
        let phone = format!("+1415555020{i}");
        s.upsert_contact(&phone, None).await.unwrap();
        let mut call = incoming(&format!("CA4{i}"), &phone, 1_000 * i);
        call.status = Some(if i % 2 == 0 { "completed" } else { "busy" }.to_owned());
        s.record_incoming_call(&call).await.unwrap();
    }
    let page1 = s
        .list_contacts(PageRequest {
            limit: 2,
            cursor: None,
        })
        .await
        .unwrap();
    assert_eq!(page1.items.len(), 2);
    assert_eq!(page1.items[0].phone_e164, "+14155550204", "newest first");
    let page2 = s
        .list_contacts(PageRequest {
            limit: 2,
            cursor: page1.next_cursor,
        })
        .await
        .unwrap();
    let page3 = s
        .list_contacts(PageRequest {
            limit: 2,
            cursor: page2.next_cursor,
        })
        .await
        .unwrap();
    assert_eq!(page3.items.len(), 1);
    assert_eq!(page3.next_cursor, None);
    let mut all: Vec<_> = [page1.items, page2.items, page3.items]
        .concat()
        .into_iter()
        .map(|c| c.id)
        .collect();
    all.dedup();
    assert_eq!(all.len(), 5, "pages neither overlap nor skip");

    let completed = CallFilter {
        status: Some("completed".to_owned()),
        ..CallFilter::default()
    };
    let calls = s
        .list_calls(&completed, PageRequest::default())
        .await
        .unwrap();
    assert_eq!(
        calls
            .items
            .iter()
            .map(|c| c.call_sid.as_str())
            .collect::<Vec<_>>(),
        ["CA44", "CA42", "CA40"]
    );
    let window = CallFilter {
        since_ms: Some(1_000),
        until_ms: Some(3_000),
        ..CallFilter::default()
    };
    let calls = s.list_calls(&window, PageRequest::default()).await.unwrap();
    assert_eq!(calls.items.len(), 2);
    let contact = s
        .find_contact_by_phone("+14155550203")
        .await
        .unwrap()
        .unwrap();
    let by_contact = CallFilter {
        contact_id: Some(contact.id),
        ..CallFilter::default()
    };
    assert_eq!(
        s.list_calls(&by_contact, PageRequest::default())
            .await
            .unwrap()
            .items[0]
            .call_sid,
        "CA43"
    );
    let by_from = CallFilter {
        from: Some("+14155550203".to_owned()),
        ..CallFilter::default()
    };
    assert_eq!(
        s.list_calls(&by_from, PageRequest::default())
            .await
            .unwrap()
            .items
            .len(),
        1
    );

    let backwards = CallFilter {
        since_ms: Some(5),
        until_ms: Some(1),
        ..CallFilter::default()
    };
    assert_eq!(
        s.list_calls(&backwards, PageRequest::default())
            .await
            .unwrap_err()
            .http_status(),
        400
    );
    let bad_from = CallFilter {
        from: Some("0501234567".to_owned()),
        ..CallFilter::default()
    };
    assert_eq!(
        s.list_calls(&bad_from, PageRequest::default())
            .await
            .unwrap_err()
            .http_status(),
        400
    );
    let too_big = PageRequest {
        limit: 10_000,
        cursor: None,
    };
    assert_eq!(
        s.list_contacts(too_big).await.unwrap_err().http_status(),
        400
    );
}

async fn restart_keeps_everything(db: &TestDb) {
    let s = &db.store;
    s.record_incoming_call(&incoming("CA50", "+14155550300", 1))
        .await
        .unwrap();
    s.append_turn(&turn("CA50", 1, Speaker::Agent, "hi"))
        .await
        .unwrap();
    s.close().await;
    assert!(s.ping().await.is_err(), "a closed store refuses work");
    let reopened = db.reopen().await; // runs migrations again: must be a no-op
    reopened.ping().await.unwrap();
    let detail = reopened.get_call_with_turns("CA50").await.unwrap();
    assert_eq!(detail.turns.len(), 1);
    assert_eq!(detail.call.from.as_deref(), Some("+14155550300"));
    reopened.close().await;
}

on_both_backends!(
    contacts_upsert_keeps_one_row_per_number,
    incoming_call_is_idempotent_and_links_contact,
    stream_before_webhook_then_end_first_wins,
    turns_and_events_are_idempotent_and_ordered,
    recordings_attach_and_replace,
    pagination_and_filters,
    restart_keeps_everything,
);

#[test]
fn page_request_parse_rejects_bad_query_values() {
    assert_eq!(
        PageRequest::parse(None, None).unwrap(),
        PageRequest::default()
    );
    let p = PageRequest::parse(Some("10"), Some("42")).unwrap();
    assert_eq!((p.limit, p.cursor), (10, Some(42)));
    for (limit, cursor) in [
        (Some("0"), None),
        (Some("201"), None),
        (Some("ten"), None),
        (None, Some("-3")),
        (None, Some("abc")),
    ] {
        let err = PageRequest::parse(limit, cursor).unwrap_err();
        assert_eq!(err.http_status(), 400, "{limit:?} {cursor:?}");
    }
}

#[tokio::test]
async fn unsupported_database_url_is_refused_without_leaking_it() {
    let err = crm::Store::connect("mysql://root:s3cret@db/crm")
        .await
        .unwrap_err();
    assert!(!err.to_string().contains("s3cret"));
    assert!(err.to_string().contains("DATABASE_URL"));
}

#[tokio::test]
async fn unreachable_postgres_is_unavailable_503() {
    let opts = crm::StoreOptions {
        acquire_timeout: std::time::Duration::from_millis(500),
        ..Default::default()
    };
    // Port 1 on loopback: nothing listens, the connection is refused at once.
    let err = crm::Store::connect_with("postgres://u:pw@127.0.0.1:1/db", opts)
        .await
        .unwrap_err();
    assert_eq!(err.http_status(), 503, "{err}");
    assert!(!err.to_string().contains("pw@"), "{err}");
}

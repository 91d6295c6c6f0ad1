//! Follow-up tasks (messages left, callbacks booked) on a real SQLite file and a real
//! PostgreSQL database: stored once however often a write is retried, listed by status.
#![allow(clippy::unwrap_used)]

mod common;

use std::time::Duration;

use common::TestDb;
use crm::{CrmWriter, NewTask, PageRequest, RetryPolicy, TaskKind, TaskStatus, WriteOp};

fn message(call_sid: &str, seq: i64, text: &str) -> NewTask {
    NewTask {
        call_sid: call_sid.to_owned(),
        seq,
        contact_phone: Some("+972501234567".to_owned()),
        kind: TaskKind::Message,
        text: text.to_owned(),
        preferred_time: None,
        at_ms: 1_000 + seq,
    }
}

fn callback(call_sid: &str, seq: i64, when: Option<&str>) -> NewTask {
    NewTask {
        call_sid: call_sid.to_owned(),
        seq,
        contact_phone: Some("+14155550100".to_owned()),
        kind: TaskKind::Callback,
        text: "please call me back".to_owned(),
        preferred_time: when.map(str::to_owned),
        at_ms: 2_000 + seq,
    }
}

fn page(limit: u32) -> PageRequest {
    PageRequest {
        limit,
        cursor: None,
    }
}

async fn tasks_are_stored_once_and_listed_newest_first(db: &TestDb) {
    let s = &db.store;
    let stored = s
        .record_task(&message("CA1", 0, "the boiler is leaking"))
        .await
        .unwrap()
        .unwrap();
    assert_eq!(stored.status, TaskStatus::Open);
    assert_eq!(stored.kind, TaskKind::Message);
    assert_eq!(stored.text, "the boiler is leaking");
    assert_eq!(stored.contact_phone.as_deref(), Some("+972501234567"));
    assert_eq!(stored.created_at_ms, 1_000);

    // A retried write of the same (call, kind, seq) stores nothing new, even with other text.
    assert!(
        s.record_task(&message("CA1", 0, "the boiler is leaking"))
            .await
            .unwrap()
            .is_none()
    );
    assert!(
        s.record_task(&message("CA1", 0, "changed on retry"))
            .await
            .unwrap()
            .is_none()
    );
    // Same seq but another kind, or another call, is a different task.
    let cb = s
        .record_task(&callback("CA1", 0, Some("tomorrow morning")))
        .await
        .unwrap()
        .unwrap();
    assert_eq!(cb.preferred_time.as_deref(), Some("tomorrow morning"));
    s.record_task(&message("CA2", 0, "hello"))
        .await
        .unwrap()
        .unwrap();

    let all = s.list_tasks(page(10), None).await.unwrap();
    let texts: Vec<(&str, TaskKind)> = all
        .items
        .iter()
        .map(|t| (t.call_sid.as_str(), t.kind))
        .collect();
    assert_eq!(
        texts,
        vec![
            ("CA2", TaskKind::Message),
            ("CA1", TaskKind::Callback),
            ("CA1", TaskKind::Message)
        ]
    );
    assert_eq!(
        all.items[2].text, "the boiler is leaking",
        "first write kept"
    );
    assert_eq!(all.next_cursor, None);
}

async fn status_filter_and_pagination(db: &TestDb) {
    let s = &db.store;
    let mut ids = Vec::new();
    for seq in 0..5 {
        ids.push(
            s.record_task(&message("CA9", seq, &format!("message {seq}")))
                .await
                .unwrap()
                .unwrap()
                .id,
        );
    }
    let done = s.set_task_status(ids[1], TaskStatus::Done).await.unwrap();
    assert_eq!(done.status, TaskStatus::Done);
    assert_eq!(done.text, "message 1");
    // Setting it again is harmless.
    s.set_task_status(ids[1], TaskStatus::Done).await.unwrap();
    s.set_task_status(ids[3], TaskStatus::Done).await.unwrap();

    let open = s
        .list_tasks(page(10), Some(TaskStatus::Open))
        .await
        .unwrap();
    let open_texts: Vec<&str> = open.items.iter().map(|t| t.text.as_str()).collect();
    assert_eq!(open_texts, vec!["message 4", "message 2", "message 0"]);
    let done = s
        .list_tasks(page(10), Some(TaskStatus::Done))
        .await
        .unwrap();
    let done_texts: Vec<&str> = done.items.iter().map(|t| t.text.as_str()).collect();
    assert_eq!(done_texts, vec!["message 3", "message 1"]);

    // Pages of two over the open tasks.
    let first = s.list_tasks(page(2), Some(TaskStatus::Open)).await.unwrap();
    assert_eq!(first.items.len(), 2);
    let cursor = first.next_cursor.unwrap();
    let second = s
        .list_tasks(
            PageRequest {
                limit: 2,
                cursor: Some(cursor),
            },
            Some(TaskStatus::Open),
        )
        .await
        .unwrap();
    assert_eq!(second.items.len(), 1);
    assert_eq!(second.items[0].text, "message 0");
    assert_eq!(second.next_cursor, None);

    let missing = s
        .set_task_status(999_999, TaskStatus::Done)
        .await
        .unwrap_err();
    assert_eq!(missing.http_status(), 404, "{missing}");
}

async fn bad_tasks_are_refused(db: &TestDb) {
    let s = &db.store;
    let mut bad_phone = message("CA3", 0, "x");
    bad_phone.contact_phone = Some("0501234567".to_owned());
    assert_eq!(
        s.record_task(&bad_phone).await.unwrap_err().http_status(),
        400
    );
    let bad_sid = message("CA 3; DROP TABLE tasks", 0, "x");
    assert_eq!(
        s.record_task(&bad_sid).await.unwrap_err().http_status(),
        400
    );
    let negative = message("CA3", -1, "x");
    assert_eq!(
        s.record_task(&negative).await.unwrap_err().http_status(),
        400
    );
    let long = message("CA3", 0, &"a".repeat(4_001));
    assert_eq!(s.record_task(&long).await.unwrap_err().http_status(), 400);
    assert!(s.list_tasks(page(10), None).await.unwrap().items.is_empty());
}

async fn writer_task_ops_survive_retries_and_restart(db: &TestDb) {
    let (writer, task) = CrmWriter::spawn_with(
        db.store.clone(),
        16,
        RetryPolicy {
            initial_backoff: Duration::from_millis(1),
            max_backoff: Duration::from_millis(5),
        },
    );
    // The same op submitted twice (what a retry after an ambiguous failure looks like).
    for _ in 0..2 {
        writer
            .submit(WriteOp::Task(callback("CA7", 0, Some("after 5"))))
            .unwrap();
    }
    writer
        .submit(WriteOp::Task(message("CA7", 1, "leave it at the door")))
        .unwrap();
    tokio::time::timeout(Duration::from_secs(10), writer.flush())
        .await
        .unwrap();
    let stats = writer.stats();
    assert_eq!(stats.written, 3);
    assert_eq!(stats.rejected, 0);
    drop(writer);
    task.await.unwrap();

    // A "restart": a second store on the same database sees both tasks, once each.
    let reopened = db.reopen().await;
    let tasks = reopened.list_tasks(page(10), None).await.unwrap();
    let kinds: Vec<(TaskKind, Option<&str>)> = tasks
        .items
        .iter()
        .map(|t| (t.kind, t.preferred_time.as_deref()))
        .collect();
    assert_eq!(
        kinds,
        vec![
            (TaskKind::Message, None),
            (TaskKind::Callback, Some("after 5"))
        ]
    );
    reopened.close().await;
}

on_both_backends!(
    tasks_are_stored_once_and_listed_newest_first,
    status_filter_and_pagination,
    bad_tasks_are_refused,
    writer_task_ops_survive_retries_and_restart,
);

#[test]
fn task_status_parses_query_values() {
    assert_eq!(TaskStatus::parse("open").unwrap(), TaskStatus::Open);
    assert_eq!(TaskStatus::parse(" done ").unwrap(), TaskStatus::Done);
    let err = TaskStatus::parse("closed").unwrap_err();
    assert_eq!(err.http_status(), 400);
    assert!(err.to_string().contains("`open` or `done`"), "{err}");
}

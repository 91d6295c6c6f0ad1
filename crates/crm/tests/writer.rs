//! The write queue: ordered, never blocks the submitter, retries through an outage, drains at
//! shutdown, and a restart finds every row.
#![allow(clippy::unwrap_used)]

mod common;

use std::time::Duration;

use common::TestDb;
use crm::{
    CrmWriter, NewCall, NewRecording, NewTurn, RetryPolicy, Speaker, StreamEventRecord,
    SubmitError, WriteOp,
};
use sqlx::Connection;

const GUARD: Duration = Duration::from_secs(20);

fn turn_op(call_sid: &str, seq: i64) -> WriteOp {
    WriteOp::AppendTurn(NewTurn {
        call_sid: call_sid.to_owned(),
        seq,
        speaker: if seq % 2 == 0 {
            Speaker::Caller
        } else {
            Speaker::Agent
        },
        text: format!("turn {seq}"),
        heard_text: None,
        interrupted: false,
        started_at_ms: seq * 100,
        ended_at_ms: None,
        latency_json: None,
    })
}

/// The sequence numbers of a call's stored turns, in order.
async fn turn_seqs(store: &crm::Store, call_sid: &str) -> Vec<i64> {
    let detail = store.get_call_with_turns(call_sid).await.unwrap();
    detail.turns.iter().map(|t| t.seq).collect()
}

fn call_ops(call_sid: &str) -> Vec<WriteOp> {
    let mut ops = vec![
        WriteOp::IncomingCall(NewCall {
            call_sid: call_sid.to_owned(),
            account_sid: None,
            from: Some("+14155550999".to_owned()),
            to: None,
            direction: "inbound".to_owned(),
            status: Some("in-progress".to_owned()),
            caller_name: None,
            at_ms: 0,
        }),
        WriteOp::StreamStarted {
            call_sid: call_sid.to_owned(),
            stream_sid: "MZ1".to_owned(),
            at_ms: 10,
        },
        WriteOp::StreamEvent {
            call_sid: call_sid.to_owned(),
            event: StreamEventRecord {
                kind: "stream-started".to_owned(),
                stream_sid: Some("MZ1".to_owned()),
                error: None,
                at_ms: 11,
            },
        },
    ];
    ops.extend((1..=20).map(|seq| turn_op(call_sid, seq)));
    ops.push(WriteOp::CallEnded {
        call_sid: call_sid.to_owned(),
        at_ms: 30_000,
        status: "completed".to_owned(),
    });
    ops.push(WriteOp::Recording(NewRecording {
        call_sid: call_sid.to_owned(),
        path: "rec.ogg".to_owned(),
        codec: "opus".to_owned(),
        duration_ms: Some(29_990),
        size_bytes: None,
        at_ms: 30_001,
    }));
    ops
}

async fn queued_writes_drain_at_shutdown_and_survive_restart(db: &TestDb) {
    let (writer, task) = CrmWriter::spawn(db.store.clone(), 64);
    for op in call_ops("CA60") {
        writer.submit(op).unwrap();
    }
    // A row the database refuses for good is counted and skipped; later rows still land.
    writer.submit(turn_op("not a sid", 1)).unwrap();
    writer.submit(turn_op("CA60", 21)).unwrap();
    // Shutdown without an explicit flush: dropping the last handle drains the queue.
    let stats = writer.watch_stats();
    drop(writer);
    tokio::time::timeout(GUARD, task).await.unwrap().unwrap();
    let stats = *stats.borrow();
    assert_eq!(
        (stats.written, stats.rejected, stats.processed),
        (26, 1, 27)
    );

    db.store.close().await;
    let store = db.reopen().await;
    let detail = store.get_call_with_turns("CA60").await.unwrap();
    assert_eq!(detail.turns.len(), 21);
    assert_eq!(detail.call.stream_sid.as_deref(), Some("MZ1"));
    assert_eq!(detail.call.ended_at_ms, Some(30_000));
    assert_eq!(detail.stream_events.len(), 1);
    assert_eq!(detail.recording.unwrap().duration_ms, Some(29_990));
    store.close().await;
}

async fn flush_waits_for_everything_submitted(db: &TestDb) {
    let (writer, _task) = CrmWriter::spawn(db.store.clone(), 8);
    for seq in 1..=8 {
        writer.submit(turn_op("CA61", seq)).unwrap();
    }
    tokio::time::timeout(GUARD, writer.flush()).await.unwrap();
    assert_eq!(writer.depth(), 0);
    assert_eq!(
        db.store
            .get_call_with_turns("CA61")
            .await
            .unwrap_err()
            .http_status(),
        404,
        "turns alone create no call"
    );
    writer
        .submit(WriteOp::CallEnded {
            call_sid: "CA61".to_owned(),
            at_ms: 9,
            status: "completed".to_owned(),
        })
        .unwrap();
    tokio::time::timeout(GUARD, writer.flush()).await.unwrap();
    assert_eq!(
        db.store
            .get_call_with_turns("CA61")
            .await
            .unwrap()
            .turns
            .len(),
        8
    );
}

/// Makes the database itself refuse turns whose text is `poison` (a trigger), the way a
/// constraint would: the error comes from inside the transaction, not from the store's checks.
async fn refuse_poison_turns(db: &TestDb) {
    let statements: &[&str] = match db.store.backend() {
        crm::Backend::Sqlite => &["CREATE TRIGGER refuse_poison BEFORE INSERT ON turns \
             WHEN NEW.text = 'poison' BEGIN SELECT RAISE(ABORT, 'poison row'); END"],
        crm::Backend::Postgres => &[
            "CREATE FUNCTION refuse_poison() RETURNS trigger LANGUAGE plpgsql AS $$ \
             BEGIN IF NEW.text = 'poison' THEN \
             RAISE EXCEPTION 'poison row' USING ERRCODE = 'check_violation'; END IF; \
             RETURN NEW; END $$",
            "CREATE TRIGGER refuse_poison BEFORE INSERT ON turns \
             FOR EACH ROW EXECUTE FUNCTION refuse_poison()",
        ],
    };
    let mut conn = sqlx::AnyConnection::connect(&db.url).await.unwrap();
    for sql in statements {
        sqlx::query(sql).execute(&mut conn).await.unwrap();
    }
    conn.close().await.unwrap();
}

/// Operations that queue up while the writer is busy go into one transaction. A row the
/// database refuses inside it rolls the transaction back, and the writer then writes the
/// operations one by one: only the refused row is lost, and order is kept.
async fn a_backlog_is_written_in_one_transaction(db: &TestDb) {
    sqlx::any::install_default_drivers();
    refuse_poison_turns(db).await;
    // #[tokio::test] runs on one thread: the writer task first runs at the first await, so
    // everything submitted before it is one backlog.
    let (writer, task) = CrmWriter::spawn(db.store.clone(), 64);
    let ops = call_ops("CA62");
    let n = ops.len() as u64;
    for op in ops {
        writer.submit(op).unwrap();
    }
    tokio::time::timeout(GUARD, writer.flush()).await.unwrap();
    let s = writer.stats();
    assert_eq!((s.written, s.batches, s.rejected), (n, 1, 0));

    let mut poison = turn_op("CA63", 2);
    let WriteOp::AppendTurn(t) = &mut poison else {
        unreachable!()
    };
    t.text = "poison".to_owned();
    let backlog = [
        turn_op("CA63", 1),
        poison,
        turn_op("CA63", 3),
        WriteOp::CallEnded {
            call_sid: "CA63".to_owned(),
            at_ms: 4,
            status: "completed".to_owned(),
        },
    ];
    for op in backlog {
        writer.submit(op).unwrap();
    }
    tokio::time::timeout(GUARD, writer.flush()).await.unwrap();
    let s = writer.stats();
    assert_eq!(
        (s.written, s.batches, s.rejected, s.processed),
        (n + 3, 1, 1, n + 4),
        "the failed batch was rolled back and written one by one"
    );
    assert_eq!(turn_seqs(&db.store, "CA63").await, vec![1, 3]);
    let detail = db.store.get_call_with_turns("CA62").await.unwrap();
    assert_eq!(detail.turns.len(), 20);
    assert_eq!(detail.call.ended_at_ms, Some(30_000));
    drop(writer);
    tokio::time::timeout(GUARD, task).await.unwrap().unwrap();
}

on_both_backends!(
    queued_writes_drain_at_shutdown_and_survive_restart,
    flush_waits_for_everything_submitted,
    a_backlog_is_written_in_one_transaction
);

/// A real outage: another connection holds SQLite's write lock. The writer keeps retrying the
/// head op, the submitter is never blocked, a full queue hands ops back, and once the lock is
/// released everything queued is written.
#[tokio::test]
async fn outage_is_retried_and_full_queue_hands_op_back() {
    let dir = tempfile::tempdir().unwrap();
    let url = format!("sqlite://{}/crmd.sqlite", dir.path().display());
    let opts = crm::StoreOptions {
        sqlite_busy_timeout: Duration::from_millis(20),
        ..Default::default()
    };
    let store = crm::Store::connect_with(&url, opts).await.unwrap();
    let retry = RetryPolicy {
        initial_backoff: Duration::from_millis(5),
        max_backoff: Duration::from_millis(40),
    };
    let (writer, task) = CrmWriter::spawn_with(store.clone(), 2, retry);
    let mut stats = writer.watch_stats();

    let mut locker = sqlx::SqliteConnection::connect(&url).await.unwrap();
    sqlx::query("BEGIN EXCLUSIVE")
        .execute(&mut locker)
        .await
        .unwrap();

    writer.submit(turn_op("CA70", 1)).unwrap();
    tokio::time::timeout(GUARD, stats.wait_for(|s| s.failed_attempts >= 2))
        .await
        .unwrap()
        .unwrap();
    // The head op is being retried; the queue (capacity 2) takes two more, then refuses.
    writer.submit(turn_op("CA70", 2)).unwrap();
    writer.submit(turn_op("CA70", 3)).unwrap();
    let refused = writer.submit(turn_op("CA70", 4)).unwrap_err();
    let SubmitError::QueueFull {
        capacity,
        op,
        call_sid,
        ..
    } = refused
    else {
        panic!("expected QueueFull")
    };
    assert_eq!((capacity, call_sid.as_str()), (2, "CA70"));
    assert_eq!(
        *op,
        turn_op("CA70", 4),
        "the refused op is handed back intact"
    );
    assert_eq!(writer.depth(), 3);
    assert_eq!(writer.stats().written, 0);

    sqlx::query("COMMIT").execute(&mut locker).await.unwrap();
    locker.close().await.unwrap();
    tokio::time::timeout(GUARD, writer.flush()).await.unwrap();
    let s = writer.stats();
    assert_eq!(
        (s.written, s.rejected, s.queue_full, writer.depth()),
        (3, 0, 1, 0)
    );
    assert!(s.failed_attempts >= 2);
    drop(writer);
    tokio::time::timeout(GUARD, task).await.unwrap().unwrap();

    store.mark_call_ended("CA70", 5, "completed").await.unwrap();
    assert_eq!(turn_seqs(&store, "CA70").await, vec![1, 2, 3]);
}

#[tokio::test]
async fn sqlite_runs_in_wal_mode() {
    let db = common::sqlite().await;
    let mut conn = sqlx::SqliteConnection::connect(&db.url).await.unwrap();
    let (mode,): (String,) = sqlx::query_as("PRAGMA journal_mode")
        .fetch_one(&mut conn)
        .await
        .unwrap();
    assert_eq!(mode, "wal");
    conn.close().await.unwrap();
    db.finish().await;
}

/// An in-memory database has one connection: the writer must hand it back after each write,
/// or every other use of the store would wait for it.
#[tokio::test]
async fn an_in_memory_store_stays_usable_beside_the_writer() {
    let store = crm::Store::connect("sqlite::memory:").await.unwrap();
    let (writer, task) = CrmWriter::spawn(store.clone(), 64);
    for op in call_ops("CA64") {
        writer.submit(op).unwrap();
    }
    tokio::time::timeout(GUARD, writer.flush()).await.unwrap();
    let detail = tokio::time::timeout(GUARD, store.get_call_with_turns("CA64"))
        .await
        .expect("the store's only connection is free again")
        .unwrap();
    assert_eq!(detail.turns.len(), 20);
    drop(writer);
    tokio::time::timeout(GUARD, task).await.unwrap().unwrap();
}

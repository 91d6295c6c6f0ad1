//! What the call path pays for CRM writes, and how fast the writer drains them.
//!
//! - `writer_submit`: one `CrmWriter::submit` (what the audio loop pays per turn).
//! - `sqlite_append_turn`: one `Store::append_turn` on a SQLite file (WAL, synchronous=NORMAL).
//! - `writer_drain_1000_turns`: submit 1000 turns and flush them into SQLite.
//! - `writer_drain_50_calls`: the write mix of 50 whole calls (webhook row, stream start and
//!   events, 12 turns, end, recording, encoded recording: 19 operations each) submitted at once
//!   and flushed, as when the writer falls behind a burst of call endings.
//!
//! Names say "sqlite" but `CRMD_BENCH_DATABASE_URL=postgres://…` runs the same on Postgres.
#![allow(clippy::unwrap_used)]

use std::time::{Duration, Instant};

use criterion::{Criterion, criterion_group, criterion_main};
use crm::{CrmWriter, NewCall, NewRecording, NewTurn, Speaker, Store, StreamEventRecord, WriteOp};

fn turn(seq: i64) -> NewTurn {
    NewTurn {
        call_sid: "CA_BENCH".to_owned(),
        seq,
        speaker: Speaker::Caller,
        text: "I would like to book an appointment for next Tuesday morning, please".to_owned(),
        heard_text: None,
        interrupted: false,
        started_at_ms: seq * 1000,
        ended_at_ms: Some(seq * 1000 + 900),
        latency_json: Some(serde_json::json!({"stt_final_ms": 140, "llm_first_token_ms": 420})),
    }
}

/// The operations one call queues, in the order the call path submits them.
fn call_ops(call_sid: &str, spool: &std::path::Path) -> Vec<WriteOp> {
    let sid = call_sid.to_owned();
    let event = |kind: &str, at_ms: i64| WriteOp::StreamEvent {
        call_sid: sid.clone(),
        event: StreamEventRecord {
            kind: kind.to_owned(),
            stream_sid: Some("MZ_BENCH".to_owned()),
            error: None,
            at_ms,
        },
    };
    let mut ops = vec![
        WriteOp::IncomingCall(NewCall {
            call_sid: sid.clone(),
            account_sid: Some("AC_BENCH".to_owned()),
            from: Some("+14155550123".to_owned()),
            to: Some("+14155550100".to_owned()),
            direction: "inbound".to_owned(),
            status: Some("in-progress".to_owned()),
            caller_name: None,
            at_ms: 0,
        }),
        WriteOp::StreamStarted {
            call_sid: sid.clone(),
            stream_sid: "MZ_BENCH".to_owned(),
            at_ms: 10,
        },
        event("stream-started", 11),
    ];
    ops.extend((0..12).map(|seq| {
        let mut t = turn(seq);
        t.call_sid = sid.clone();
        t.speaker = if seq % 2 == 0 {
            Speaker::Agent
        } else {
            Speaker::Caller
        };
        WriteOp::AppendTurn(t)
    }));
    ops.push(event("stream-stopped", 15_000));
    ops.push(WriteOp::CallEnded {
        call_sid: sid.clone(),
        at_ms: 15_001,
        status: "completed".to_owned(),
    });
    let recording = |path: &std::path::Path, codec: &str| NewRecording {
        call_sid: sid.clone(),
        path: path.display().to_string(),
        codec: codec.to_owned(),
        duration_ms: Some(15_000),
        size_bytes: Some(240_044),
        at_ms: 15_002,
    };
    ops.push(WriteOp::Recording(recording(spool, "pcm_mulaw")));
    ops.push(WriteOp::RecordingEncoded {
        recording: recording(&spool.with_extension("ogg"), "opus"),
        // A path that does not exist: deleting it fails, which the writer only logs.
        replaces: spool.display().to_string(),
    });
    ops
}

fn benches(c: &mut Criterion) {
    let rt = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .unwrap();
    let dir = tempfile::tempdir().unwrap();
    // CRMD_BENCH_DATABASE_URL points the bench at another database (e.g. a scratch Postgres db).
    let url = std::env::var("CRMD_BENCH_DATABASE_URL")
        .unwrap_or_else(|_| format!("sqlite://{}/bench.sqlite", dir.path().display()));
    let store = rt.block_on(Store::connect(&url)).unwrap();

    let mut seq = 0_i64;
    c.bench_function("sqlite_append_turn", |b| {
        b.iter(|| {
            seq += 1;
            rt.block_on(store.append_turn(&turn(seq))).unwrap();
        });
    });

    c.bench_function("writer_submit", |b| {
        b.iter_custom(|iters| {
            // A queue big enough for the whole batch: we time submit alone, then drain untimed.
            let (writer, task) =
                rt.block_on(async { CrmWriter::spawn(store.clone(), iters as usize + 1) });
            let ops: Vec<WriteOp> = (0..iters as i64)
                .map(|i| WriteOp::AppendTurn(turn(seq + i + 1)))
                .collect();
            seq += iters as i64;
            let start = Instant::now();
            for op in ops {
                writer.submit(op).unwrap();
            }
            let elapsed = start.elapsed();
            drop(writer);
            rt.block_on(task).unwrap();
            elapsed
        });
    });

    let mut group = c.benchmark_group("writer_drain");
    group
        .sample_size(10)
        .measurement_time(Duration::from_secs(10));
    group.bench_function("writer_drain_1000_turns", |b| {
        b.iter(|| {
            rt.block_on(async {
                let (writer, _task) = CrmWriter::spawn(store.clone(), 1000);
                for _ in 0..1000 {
                    seq += 1;
                    writer.submit(WriteOp::AppendTurn(turn(seq))).unwrap();
                }
                writer.flush().await;
            });
        });
    });
    let spool = dir.path().join("no-such-spool.wav");
    let mut calls = 0_u64;
    group.bench_function("writer_drain_50_calls", |b| {
        b.iter(|| {
            let ops: Vec<WriteOp> = (0..50)
                .flat_map(|_| {
                    calls += 1;
                    call_ops(&format!("CA_BENCH_{calls}"), &spool)
                })
                .collect();
            rt.block_on(async {
                let (writer, _task) = CrmWriter::spawn(store.clone(), ops.len());
                for op in ops {
                    writer.submit(op).unwrap();
                }
                writer.flush().await;
            });
        });
    });
    group.finish();
}

criterion_group!(crm_benches, benches);
criterion_main!(crm_benches);

//! What the call path pays for CRM writes, and how fast the writer drains them.
//!
//! - `writer_submit`: one `CrmWriter::submit` (what the audio loop pays per turn).
//! - `sqlite_append_turn`: one `Store::append_turn` on a SQLite file (WAL, synchronous=NORMAL).
//! - `writer_drain_1000_turns`: submit 1000 turns and flush them into SQLite.
//!
//! Names say "sqlite" but `CRMD_BENCH_DATABASE_URL=postgres://…` runs the same on Postgres.
#![allow(clippy::unwrap_used)]

use std::time::{Duration, Instant};

use criterion::{Criterion, criterion_group, criterion_main};
use crm::{CrmWriter, NewTurn, Speaker, Store, WriteOp};

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
    group.finish();
}

criterion_group!(crm_benches, benches);
criterion_main!(crm_benches);

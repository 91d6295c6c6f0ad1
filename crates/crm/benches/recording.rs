//! What recording costs per call: encoding one second of a call into stereo Ogg Opus in a real
//! file with `CallRecorder`. The figure divided by 1 s is the share of one core a live call's
//! recording takes.
//! - `one_second_of_call_to_stereo_ogg_opus`: both sides talk all the time (50 caller + 50 agent
//!   frames of 20 ms tones): the worst case.
//! - `one_second_of_conversation_to_stereo_ogg_opus`: turn-taking on real speech (the offline
//!   fallback clip): the caller talks 3 s, both sides are digital silence for 0.6 s, the agent
//!   talks 5 s, 0.6 s of silence, and so on; one iteration is the next second of that call.
//! - `task_push_20ms_frame`: what the call's audio loop pays per frame handed to a
//!   `RecordingTask` (copy into the batch, one non-blocking send per batch), with the encoder
//!   thread running alongside.
//!
//! Run: cargo bench -p crm --bench recording
#![allow(clippy::unwrap_used)]

use std::hint::black_box;
use std::time::{Duration, Instant};

use criterion::{Criterion, Throughput, criterion_group, criterion_main};
use crm::recording::{CallRecorder, RecordingPool};

/// Real speech, 8 kHz mu-law (espeak-ng, English and Hebrew, with its own pauses).
const SPEECH: &[u8] = include_bytes!("../../edge/assets/offline-fallback.ulaw");
/// Length of the simulated conversation the second bench loops over.
const CONVERSATION_SECONDS: usize = 60;

/// A 20 ms frame of a 440 Hz tone (caller) or a 700 Hz tone (agent), frame `index` of the call.
fn tone_frame(index: u64, hz: f32) -> Vec<u8> {
    (0..160u64)
        .map(|i| {
            let t = (index * 160 + i) as f32 / 8000.0;
            mulaw::encode_sample((8000.0 * (2.0 * std::f32::consts::PI * hz * t).sin()) as i16)
        })
        .collect()
}

/// `(caller, agent)` mu-law of a turn-taking conversation: each turn is a stretch of the speech
/// clip on one side while the other side is digital silence (0xFF), then 0.6 s of silence on both.
fn conversation() -> (Vec<u8>, Vec<u8>) {
    let samples = CONVERSATION_SECONDS * 8000;
    let (mut caller, mut agent) = (vec![0xFF; samples], vec![0xFF; samples]);
    let (mut at, mut turn) = (0, 0);
    while at < samples {
        let (side, len) = if turn % 2 == 0 {
            (&mut caller, 24_000)
        } else {
            (&mut agent, 40_000)
        };
        for i in 0..len.min(samples - at) {
            side[at + i] = SPEECH[(at + i + turn * 7_919) % SPEECH.len()];
        }
        at += len + 4_800;
        turn += 1;
    }
    (caller, agent)
}

fn recording(c: &mut Criterion) {
    let dir = tempfile::tempdir().unwrap();
    let mut group = c.benchmark_group("recording");
    group.throughput(Throughput::Elements(1));

    let caller: Vec<Vec<u8>> = (0..50).map(|i| tone_frame(i, 440.0)).collect();
    let agent: Vec<Vec<u8>> = (0..50).map(|i| tone_frame(i, 700.0)).collect();
    let mut recorder = CallRecorder::create(dir.path(), "CA_BENCH").unwrap();
    let mut second = 0u64;
    group.bench_function("one_second_of_call_to_stereo_ogg_opus", |b| {
        b.iter(|| {
            let base_ms = second * 1000;
            for (k, (c, a)) in caller.iter().zip(&agent).enumerate() {
                let at = base_ms + k as u64 * 20;
                recorder.push_caller(at, c).unwrap();
                recorder.push_agent(at, a).unwrap();
            }
            second += 1;
            black_box(recorder.duration_ms())
        });
    });
    drop(recorder);

    let (caller, agent) = conversation();
    let mut recorder = CallRecorder::create(dir.path(), "CA_BENCH_CONVERSATION").unwrap();
    let mut second = 0u64;
    group.bench_function("one_second_of_conversation_to_stereo_ogg_opus", |b| {
        b.iter(|| {
            let offset = (second as usize % CONVERSATION_SECONDS) * 8000;
            let frames = caller[offset..offset + 8000]
                .chunks_exact(160)
                .zip(agent[offset..offset + 8000].chunks_exact(160));
            for (k, (c, a)) in frames.enumerate() {
                let at = second * 1000 + k as u64 * 20;
                recorder.push_caller(at, c).unwrap();
                recorder.push_agent(at, a).unwrap();
            }
            second += 1;
            black_box(recorder.duration_ms())
        });
    });
    drop(recorder);
    group.finish();
}

fn task_push(c: &mut Criterion) {
    let dir = tempfile::tempdir().unwrap();
    let runtime = tokio::runtime::Builder::new_current_thread()
        .build()
        .unwrap();
    let pool = RecordingPool::new(1).unwrap();
    // Silence keeps the encoder thread (replaying its silent packet) from falling behind.
    let frame = [0xFF_u8; 160];
    let mut calls = 0;
    let mut group = c.benchmark_group("recording");
    group.throughput(Throughput::Elements(1));
    group.bench_function("task_push_20ms_frame", |b| {
        b.iter_custom(|iters| {
            let mut pushing = Duration::ZERO;
            let mut left = iters;
            while left > 0 {
                // Rounds far below the worker's backlog bound, so nothing is ever dropped.
                let round = left.min(10_000);
                let mut task = pool
                    .start(dir.path(), &format!("CA_PUSH{calls}"), 1_000_000)
                    .unwrap();
                calls += 1;
                let start = Instant::now();
                for k in 0..round {
                    let at = k / 2 * 20;
                    if k % 2 == 0 {
                        task.push_caller(at, black_box(&frame));
                    } else {
                        task.push_agent(at, black_box(&frame));
                    }
                }
                pushing += start.elapsed();
                assert_eq!(task.stats().dropped_chunks, 0);
                runtime.block_on(task.finish(0)).unwrap();
                left -= round;
            }
            pushing
        });
    });
    group.finish();
}

criterion_group!(benches, recording, task_push);
criterion_main!(benches);

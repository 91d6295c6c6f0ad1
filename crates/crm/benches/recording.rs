//! What recording costs per call, in two parts. During the call `CallRecorder` spools both sides
//! into a stereo mu-law WAV in a real file; after it `encode_spool` encodes that file to Ogg Opus.
//! A figure divided by 1 s of call is the share of one core that part takes.
//! - `one_second_of_call_spooled_to_wav`: both sides talk all the time (50 caller + 50 agent
//!   frames of 20 ms tones): the worst case.
//! - `one_second_of_conversation_spooled_to_wav`: turn-taking on real speech (the offline
//!   fallback clip): the caller talks 3 s, both sides are digital silence for 0.6 s, the agent
//!   talks 5 s, 0.6 s of silence, and so on; one iteration is the next second of that call.
//! - `sixty_seconds_of_{call,conversation}_encoded_from_the_spool`: the same audio, 60 s of it
//!   spooled, encoded to an Ogg Opus file per iteration (divide by 60 for one second).
//! - `task_push_20ms_frame`: what the call's audio loop pays per frame handed to a
//!   `RecordingTask` (copy into the batch, one non-blocking send per batch), with the spool
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

/// Spools `seconds` of a call (`frame(k)` gives frame `k`'s caller and agent audio) with
/// `CallRecorder`, 50 frames a second, from second `first`.
fn spool_seconds<'a>(
    recorder: &mut CallRecorder,
    first: u64,
    seconds: u64,
    frame: impl Fn(u64) -> (&'a [u8], &'a [u8]),
) {
    for second in first..first + seconds {
        for k in 0..50 {
            let (c, a) = frame(second * 50 + k);
            let at = second * 1000 + k * 20;
            recorder.push_caller(at, c).unwrap();
            recorder.push_agent(at, a).unwrap();
        }
    }
}

fn recording(c: &mut Criterion) {
    let dir = tempfile::tempdir().unwrap();
    let mut group = c.benchmark_group("recording");
    group.throughput(Throughput::Elements(1));

    // During the call: the spool (what a live call's recording costs its spool thread).
    let caller: Vec<Vec<u8>> = (0..50).map(|i| tone_frame(i, 440.0)).collect();
    let agent: Vec<Vec<u8>> = (0..50).map(|i| tone_frame(i, 700.0)).collect();
    let tones = |k: u64| -> (&[u8], &[u8]) {
        let k = (k % 50) as usize;
        (&caller[k], &agent[k])
    };
    let mut recorder = CallRecorder::create(dir.path(), "CA_BENCH").unwrap();
    let mut second = 0u64;
    group.bench_function("one_second_of_call_spooled_to_wav", |b| {
        b.iter(|| {
            spool_seconds(&mut recorder, second, 1, tones);
            second += 1;
            black_box(recorder.duration_ms())
        });
    });
    drop(recorder);

    let (conv_caller, conv_agent) = conversation();
    let talk = |k: u64| -> (&[u8], &[u8]) {
        let at = (k as usize % (CONVERSATION_SECONDS * 50)) * 160;
        (&conv_caller[at..at + 160], &conv_agent[at..at + 160])
    };
    let mut recorder = CallRecorder::create(dir.path(), "CA_BENCH_CONVERSATION").unwrap();
    let mut second = 0u64;
    group.bench_function("one_second_of_conversation_spooled_to_wav", |b| {
        b.iter(|| {
            spool_seconds(&mut recorder, second, 1, talk);
            second += 1;
            black_box(recorder.duration_ms())
        });
    });
    drop(recorder);

    // After the call: encoding a finished 60 s spool file to an Ogg Opus file (`encode_spool`,
    // real files). One element is one second of call: criterion's time per iteration divided
    // by 60 is what encoding one second of a call costs its encoder thread.
    group.throughput(Throughput::Elements(CONVERSATION_SECONDS as u64));
    let mut spools = Vec::new();
    for name in [
        "sixty_seconds_of_call_encoded_from_the_spool",
        "sixty_seconds_of_conversation_encoded_from_the_spool",
    ] {
        let mut recorder = CallRecorder::create(dir.path(), name).unwrap();
        if spools.is_empty() {
            spool_seconds(&mut recorder, 0, CONVERSATION_SECONDS as u64, tones);
        } else {
            spool_seconds(&mut recorder, 0, CONVERSATION_SECONDS as u64, talk);
        }
        spools.push((name, recorder.finish(0).unwrap()));
    }
    for (name, spool) in &spools {
        group.bench_function(*name, |b| {
            b.iter(|| black_box(crm::recording::encode_spool(spool).unwrap().size_bytes));
        });
    }
    group.finish();
}

fn task_push(c: &mut Criterion) {
    let dir = tempfile::tempdir().unwrap();
    let runtime = tokio::runtime::Builder::new_current_thread()
        .build()
        .unwrap();
    let pool = RecordingPool::new(1).unwrap();
    // The spool thread writes alongside; nothing is encoded on this path.
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

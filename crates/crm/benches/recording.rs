//! What recording costs per call: encoding one second of a call (50 caller + 50 agent frames of
//! 20 ms mu-law) into stereo Ogg Opus in a real file with `CallRecorder`. The figure divided by
//! 1 s is the share of one core a live call's recording takes.
//! Run: cargo bench -p crm --bench recording
#![allow(clippy::unwrap_used)]

use std::hint::black_box;

use criterion::{Criterion, Throughput, criterion_group, criterion_main};
use crm::recording::CallRecorder;

/// A 20 ms frame of a 440 Hz tone (caller) or a 700 Hz tone (agent), frame `index` of the call.
fn tone_frame(index: u64, hz: f32) -> Vec<u8> {
    (0..160u64)
        .map(|i| {
            let t = (index * 160 + i) as f32 / 8000.0;
            mulaw::encode_sample((8000.0 * (2.0 * std::f32::consts::PI * hz * t).sin()) as i16)
        })
        .collect()
}

fn recording(c: &mut Criterion) {
    let dir = tempfile::tempdir().unwrap();
    let caller: Vec<Vec<u8>> = (0..50).map(|i| tone_frame(i, 440.0)).collect();
    let agent: Vec<Vec<u8>> = (0..50).map(|i| tone_frame(i, 700.0)).collect();
    let mut recorder = CallRecorder::create(dir.path(), "CA_BENCH").unwrap();
    let mut second = 0u64;
    let mut group = c.benchmark_group("recording");
    group.throughput(Throughput::Elements(1));
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
    group.finish();
    drop(recorder);
}

criterion_group!(benches, recording);
criterion_main!(benches);

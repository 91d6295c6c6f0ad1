//! Cost of one caller frame: `handle_media_frame` plus draining actions and events, the work the
//! call driver does 50 times a second per call. Three situations: a quiet line while listening,
//! a caller talking (2 s bursts with pauses) while listening, and the agent speaking with
//! barge-in armed. The virtual clock stays put so timers never move the engine out of the
//! measured state; the per-frame work (VAD, voice tracking, deadline checks, drain) is the same.
#![allow(clippy::unwrap_used)]

use std::hint::black_box;
use std::time::{Duration, Instant};

use bytes::Bytes;
use criterion::{Criterion, criterion_group, criterion_main};
use turn::{TurnConfig, TurnEngine, TurnId};

const FRAMES: usize = 512;

fn frames(speech: bool) -> Vec<[u8; 160]> {
    let mut seed = 0x1234_5678u32;
    let mut phase = 0f32;
    (0..FRAMES)
        .map(|index| {
            let mut frame = [0u8; 160];
            for byte in &mut frame {
                seed = seed.wrapping_mul(1_664_525).wrapping_add(1_013_904_223);
                let hiss = ((seed >> 16) as i32 % 81) - 40;
                phase += 2.0 * std::f32::consts::PI * 200.0 / 8000.0;
                let talking = speech && index % 50 < 40;
                let voice = if talking {
                    (phase.sin() * 2500.0) as i32
                } else {
                    0
                };
                *byte = mulaw::encode_sample((voice + hiss) as i16);
            }
            frame
        })
        .collect()
}

fn drain(engine: &mut TurnEngine) {
    while let Some(action) = engine.poll_action() {
        black_box(action);
    }
    while let Some(event) = engine.poll_event() {
        black_box(event);
    }
    black_box(engine.poll_timeout());
}

/// Runs `iters` frames through `engine`, one `handle_media_frame` + drain each.
fn run(engine: &mut TurnEngine, frames: &[[u8; 160]], clock: Instant, iters: u64) -> Duration {
    let start = Instant::now();
    for i in 0..iters {
        engine.handle_media_frame(clock, black_box(&frames[i as usize % FRAMES]));
        drain(engine);
    }
    start.elapsed()
}

fn bench(c: &mut Criterion) {
    let quiet = frames(false);
    let speech = frames(true);
    let mut group = c.benchmark_group("handle_media_frame+drain");

    group.bench_function("listening, quiet line", |b| {
        let config = TurnConfig {
            greeting_text: String::new(),
            idle_ms: 120_000,
            ..TurnConfig::default()
        };
        let mut engine = TurnEngine::new(config).unwrap();
        let clock = Instant::now();
        engine.handle_stream_start(clock);
        b.iter_custom(|iters| run(&mut engine, &quiet, clock, iters));
    });

    group.bench_function("listening, caller speaking", |b| {
        let config = TurnConfig {
            greeting_text: String::new(),
            ..TurnConfig::default()
        };
        let mut engine = TurnEngine::new(config).unwrap();
        let clock = Instant::now();
        engine.handle_stream_start(clock);
        run(&mut engine, &quiet, clock, 100);
        b.iter_custom(|iters| run(&mut engine, &speech, clock, iters));
    });

    group.bench_function("speaking, quiet line (barge-in armed)", |b| {
        let config = TurnConfig {
            protect_greeting: false,
            ..TurnConfig::default()
        };
        let mut engine = TurnEngine::new(config).unwrap();
        let clock = Instant::now();
        engine.handle_stream_start(clock);
        engine.handle_tts_audio(clock, TurnId(1), Bytes::from(vec![0xFFu8; 8 * 60_000]));
        engine.handle_tts_done(clock, TurnId(1));
        drain(&mut engine);
        b.iter_custom(|iters| run(&mut engine, &quiet, clock, iters));
    });
    group.finish();
}

criterion_group!(benches, bench);
criterion_main!(benches);

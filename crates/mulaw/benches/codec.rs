//! Criterion benches for the hot paths: mu-law decode/encode throughput and the framer.
//! Run: cargo bench -p mulaw --bench codec
#![allow(clippy::unwrap_used)]

use std::hint::black_box;

use criterion::{BenchmarkId, Criterion, Throughput, criterion_group, criterion_main};
use mulaw::{FRAME_BYTES, Framer};

/// Deterministic pseudo-random bytes (xorshift), so every run measures the same input.
fn pseudo_random_bytes(len: usize) -> Vec<u8> {
    let mut state = 0x9E37_79B9_7F4A_7C15_u64;
    (0..len)
        .map(|_| {
            state ^= state << 13;
            state ^= state >> 7;
            state ^= state << 17;
            (state >> 32) as u8
        })
        .collect()
}

fn codec(c: &mut Criterion) {
    let mut group = c.benchmark_group("codec");
    for len in [FRAME_BYTES, 1 << 20] {
        let mulaw_bytes = pseudo_random_bytes(len);
        let pcm = mulaw::decode(&mulaw_bytes);
        let mut decoded = vec![0_i16; len];
        let mut encoded = vec![0_u8; len];
        group.throughput(Throughput::Elements(len as u64));
        group.bench_with_input(
            BenchmarkId::new("decode_into", len),
            &mulaw_bytes,
            |b, input| {
                b.iter(|| mulaw::decode_into(black_box(input), &mut decoded).unwrap());
            },
        );
        group.bench_with_input(BenchmarkId::new("encode_into", len), &pcm, |b, input| {
            b.iter(|| mulaw::encode_into(black_box(input), &mut encoded).unwrap());
        });
        group.bench_with_input(
            BenchmarkId::new("decode_vec", len),
            &mulaw_bytes,
            |b, input| {
                b.iter(|| mulaw::decode(black_box(input)));
            },
        );
        group.bench_with_input(BenchmarkId::new("encode_vec", len), &pcm, |b, input| {
            b.iter(|| mulaw::encode(black_box(input)));
        });
    }
    group.finish();
}

fn framer(c: &mut Criterion) {
    // A 1.7 s TTS answer arriving in uneven network-sized chunks, framed and drained.
    let answer = pseudo_random_bytes(13_600);
    let chunk_sizes = [1_371, 3, 640, 2_048, 7, 999];
    let mut group = c.benchmark_group("framer");
    group.throughput(Throughput::Bytes(answer.len() as u64));
    group.bench_function("push_pop_flush_1.7s_answer", |b| {
        let mut framer = Framer::new();
        b.iter(|| {
            let mut rest = answer.as_slice();
            let mut frames = 0_usize;
            for size in chunk_sizes.iter().cycle() {
                if rest.is_empty() {
                    break;
                }
                let take = (*size).min(rest.len());
                framer.push(black_box(&rest[..take]));
                rest = &rest[take..];
                while let Some(frame) = framer.pop_frame() {
                    black_box(frame);
                    frames += 1;
                }
            }
            frames += usize::from(framer.flush().is_some());
            assert_eq!(frames, 85);
        });
    });
    group.finish();
}

fn resample(c: &mut Criterion) {
    let input: Vec<i16> = mulaw::decode(&pseudo_random_bytes(8000));
    let mut group = c.benchmark_group("resample_1s");
    for (from, to) in [(8000, 48_000), (8000, 16_000), (24_000, 8000)] {
        let source: Vec<i16> = input.iter().cycle().take(from as usize).copied().collect();
        group.throughput(Throughput::Elements(source.len() as u64));
        let mut resampler = mulaw::resample::Resampler::new(from, to).unwrap();
        let mut out = Vec::with_capacity(to as usize + 64);
        group.bench_function(format!("{from}_to_{to}"), |b| {
            b.iter(|| {
                out.clear();
                resampler.process(black_box(&source), &mut out);
            });
        });
    }
    group.finish();
}

criterion_group!(benches, codec, framer, resample);
criterion_main!(benches);

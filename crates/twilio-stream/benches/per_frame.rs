#![allow(clippy::unwrap_used)]
//! Per-frame costs on the media hot path (50 frames a second per call, each way).

use std::hint::black_box;

use criterion::{Criterion, Throughput, criterion_group, criterion_main};
use twilio_stream::media::{
    InboundMessage, MediaJsonWriter, StreamHealth, StreamValidator, media_json, parse_inbound,
    write_media_json,
};
use twilio_stream::signature::{sign_form, validate_form};

fn fixture(name: &str) -> String {
    std::fs::read_to_string(format!("{}/tests/data/{name}", env!("CARGO_MANIFEST_DIR"))).unwrap()
}

fn inbound(c: &mut Criterion) {
    let session = fixture("call_session.jsonl");
    let lines: Vec<&str> = session.lines().collect();
    let (start, media) = (lines[1], lines[2]);
    let mut group = c.benchmark_group("inbound");
    group.throughput(Throughput::Elements(1));
    group.bench_function("parse_inbound/media_20ms", |b| {
        b.iter(|| parse_inbound(black_box(media)).unwrap())
    });
    group.bench_function("validator+health/media_20ms", |b| {
        let mut validator = StreamValidator::new();
        validator.handle_text(start).unwrap();
        let mut health = StreamHealth::new();
        b.iter(|| {
            let message = validator.handle_text(black_box(media)).unwrap();
            health.observe_message(&message);
            message
        });
    });
    let InboundMessage::Media(frame) = parse_inbound(media).unwrap() else {
        unreachable!("fixture is media")
    };
    group.bench_function("health_observe", |b| {
        let mut health = StreamHealth::new();
        let mut frame = frame.clone();
        b.iter(|| {
            frame.chunk += 1;
            frame.timestamp_ms += 20;
            health.observe(black_box(&frame));
        });
    });
    group.finish();
}

fn outbound(c: &mut Criterion) {
    let frame_20ms = std::fs::read(format!(
        "{}/tests/data/frame_tone_440hz.ulaw",
        env!("CARGO_MANIFEST_DIR")
    ))
    .unwrap();
    let one_second: Vec<u8> = frame_20ms.iter().copied().cycle().take(8000).collect();
    let stream_sid = "MZ18ad3ab5a668481ce02b83e7395059f0";
    let mut group = c.benchmark_group("outbound");
    group.throughput(Throughput::Elements(1));
    group.bench_function("media_json/20ms", |b| {
        b.iter(|| media_json(black_box(stream_sid), black_box(&frame_20ms)))
    });
    group.bench_function("write_media_json/20ms_reused_buffer", |b| {
        let mut buffer = String::with_capacity(512);
        b.iter(|| {
            buffer.clear();
            write_media_json(&mut buffer, black_box(stream_sid), black_box(&frame_20ms));
            buffer.len()
        });
    });
    let writer = MediaJsonWriter::new(stream_sid);
    group.bench_function("media_json_writer/20ms_reused_buffer", |b| {
        let mut buffer = String::with_capacity(512);
        b.iter(|| {
            buffer.clear();
            writer.write(&mut buffer, black_box(&frame_20ms));
            buffer.len()
        });
    });
    group.bench_function("media_json_writer/20ms_new_string", |b| {
        b.iter(|| writer.to_json(black_box(&frame_20ms)))
    });
    group.bench_function("media_json/1s", |b| {
        b.iter(|| media_json(black_box(stream_sid), black_box(&one_second)))
    });
    group.finish();
}

fn signature(c: &mut Criterion) {
    let body = fixture("incoming_call.form");
    let pairs = twilio_stream::forms::parse_pairs(body.trim_end().as_bytes()).unwrap();
    let url = "https://voice.example.com/webhook/voice";
    let header = sign_form("0123456789abcdef0123456789abcdef", url, &pairs);
    c.bench_function("signature/validate_form_21_fields", |b| {
        b.iter(|| {
            validate_form(
                "0123456789abcdef0123456789abcdef",
                black_box(url),
                black_box(&pairs),
                &header,
            )
            .unwrap()
        })
    });
}

criterion_group!(benches, inbound, outbound, signature);
criterion_main!(benches);

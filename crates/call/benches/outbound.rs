//! Criterion benches for the per-call hot paths that are this crate's own: pacing one outbound
//! frame into Twilio JSON, and splitting streamed LLM text into sentences.
//! Run: cargo bench -p call --bench outbound
#![allow(clippy::unwrap_used)]

use std::hint::black_box;
use std::time::{Duration, Instant};

use bytes::Bytes;
use call::{Outgoing, Pacer, SentenceSplitter};
use criterion::{Criterion, Throughput, criterion_group, criterion_main};
use turn::TurnId;

/// One outbound frame: the pacer releases it and it becomes a Twilio `media` message.
fn pacer_frame(c: &mut Criterion) {
    let stream_sid = "MZ0123456789abcdef0123456789abcdef";
    let audio = Bytes::from(vec![0x55u8; 160 * 3000]); // 60 s of audio
    let mut group = c.benchmark_group("outbound");
    group.throughput(Throughput::Elements(1));
    group.bench_function("pacer_poll_send_and_media_json_per_frame", |b| {
        let start = Instant::now();
        let mut pacer = Pacer::new(Duration::from_millis(80));
        let mut now = start;
        b.iter(|| {
            if pacer.is_empty() {
                pacer.push_audio(TurnId(1), &audio);
            }
            now += Duration::from_millis(20);
            let mut out = 0usize;
            while let Some(item) = pacer.poll_send(now) {
                if let Outgoing::Media { payload, .. } = item {
                    out += twilio_stream::media::media_json(stream_sid, &payload).len();
                }
            }
            black_box(out)
        });
    });
    group.finish();
}

/// Streamed completion text in 4-character tokens, Hebrew and English.
fn sentence_splitter(c: &mut Criterion) {
    let text = "שלום דנה! אנחנו פתוחים בימים ראשון עד חמישי, משמונה בבוקר עד שש בערב. \
                We're open Sunday to Thursday from 8 a.m. to 6 p.m., and it costs 3.5 shekels. \
                Dr. Cohen will call you back tomorrow. Anything else?"
        .repeat(4);
    let chars: Vec<char> = text.chars().collect();
    let tokens: Vec<String> = chars.chunks(4).map(|c| c.iter().collect()).collect();
    let mut group = c.benchmark_group("responder");
    group.throughput(Throughput::Bytes(text.len() as u64));
    group.bench_function("sentence_splitter_streamed_reply", |b| {
        b.iter(|| {
            let mut splitter = SentenceSplitter::new();
            let mut sentences = 0usize;
            for token in &tokens {
                sentences += splitter.push(token).len();
            }
            sentences += splitter.finish().len();
            black_box(sentences)
        });
    });
    group.finish();
}

criterion_group!(benches, pacer_frame, sentence_splitter);
criterion_main!(benches);

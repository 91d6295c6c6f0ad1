//! What the console costs the call path: folding and publishing one call event (the registry
//! task's work per event, with 0 or 100 browsers subscribed), and rendering `/metrics`.
//!
//! `cargo bench -p console --bench console`
#![allow(clippy::unwrap_used)]

use call::{CallEvent, TurnLatency};
use console::{Console, ConsoleOptions};
use criterion::{Criterion, criterion_group, criterion_main};

const SID: &str = "CA0123456789abcdef0123456789abcdef";

fn transcript(n: u64) -> CallEvent {
    CallEvent::Transcript {
        call_sid: SID.into(),
        text: format!("מתי אתם פתוחים ביום שישי? line {n}"),
        is_final: n.is_multiple_of(4),
    }
}

fn publish(c: &mut Criterion) {
    let runtime = tokio::runtime::Builder::new_current_thread()
        .build()
        .unwrap();
    let _guard = runtime.enter();
    for browsers in [0usize, 100] {
        let console = Console::new(ConsoleOptions::default());
        console.handle_call_event(&CallEvent::CallStarted {
            call_sid: SID.into(),
            stream_sid: "MZ0".into(),
        });
        // Subscribers that never read: the worst case, every buffer full and overwriting.
        let receivers: Vec<_> = (0..browsers).map(|_| console.subscribe(None)).collect();
        let mut n = 0u64;
        c.bench_function(
            &format!("handle_call_event/transcript/{browsers}_browsers"),
            |b| {
                b.iter(|| {
                    n += 1;
                    console.handle_call_event(&transcript(n));
                });
            },
        );
        drop(receivers);
    }
}

fn render_metrics(c: &mut Criterion) {
    let console = Console::new(ConsoleOptions::default());
    for turn in 0..1000 {
        console.handle_call_event(&CallEvent::Latency {
            call_sid: SID.into(),
            turn,
            latency: TurnLatency {
                eou_ms: Some(500 + turn % 100),
                stt_final_lag_ms: Some(turn % 300),
                responder_first_token_ms: Some(40),
                tts_first_byte_ms: Some(120),
                first_frame_after_eou_ms: Some(300),
                speech_end_to_first_frame_ms: Some(800),
                twilio_clock_ms: Some(850),
            },
        });
    }
    c.bench_function("render_metrics", |b| b.iter(|| console.render_metrics()));
}

criterion_group!(benches, publish, render_metrics);
criterion_main!(benches);

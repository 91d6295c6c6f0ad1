//! The call's speech log lines come once, from the driver, with the call id: `STT_FINAL`,
//! `STT_PARTIAL` and `TTS_LEN_ms` at info level carry `call_sid`; the speech crate's own copies
//! (which cannot know the call) are debug only; `TTS_LEN_ms` is logged once per utterance.
//!
//! Its own test binary on purpose: tracing caches per-callsite interest process-wide, so a
//! thread-local capture subscriber only sees every event when no other test shares the
//! process. A current-thread runtime keeps every task of the call on the capturing thread.
#![allow(clippy::unwrap_used)]

mod common;

use std::sync::Arc;

use common::*;

const OPENING_HOURS_1: &str = "We're open Sunday to Thursday from 8 in the morning to 6 in the evening, and on Friday until 1 in the afternoon.";

/// Collects formatted log lines in memory.
#[derive(Clone, Default)]
struct LogBuffer(Arc<std::sync::Mutex<Vec<u8>>>);

impl std::io::Write for LogBuffer {
    fn write(&mut self, buf: &[u8]) -> std::io::Result<usize> {
        self.0.lock().unwrap().extend_from_slice(buf);
        Ok(buf.len())
    }
    fn flush(&mut self) -> std::io::Result<()> {
        Ok(())
    }
}

#[tokio::test(flavor = "current_thread")]
async fn speech_lines_are_logged_once_at_info_with_the_call_id() {
    let logs = LogBuffer::default();
    let writer = logs.clone();
    let subscriber = tracing_subscriber::fmt()
        .with_ansi(false)
        .with_max_level(tracing::Level::DEBUG)
        .with_writer(move || writer.clone())
        .finish();
    let _guard = tracing::subscriber::set_default(subscriber);

    let mut h = Harness::start(Options {
        stt: SttScript {
            utterances: vec!["What are your opening hours?".into()],
            ..SttScript::default()
        },
        ..Options::default()
    })
    .await;
    let greeting_sig = h.signature(&h.greeting());
    run_twilio_client(
        &h.ws_url,
        vec![
            Step::WaitUntilAgentDone,
            Step::Speak(800),
            Step::WaitForAudioOtherThan(vec![greeting_sig]),
            Step::WaitUntilAgentDone,
            Step::Silence(100),
        ],
        Leave::Stop,
        None,
    )
    .await;
    let summary = h.summary().await;
    let utterances: Vec<&str> = summary
        .turns
        .iter()
        .map(|t| t.agent_text.as_str())
        .collect();
    assert!(utterances[1].starts_with(OPENING_HOURS_1), "{utterances:?}");

    let text = String::from_utf8(logs.0.lock().unwrap().clone()).unwrap();
    let lines_with = |level: &str, message: &str| -> Vec<&str> {
        text.lines()
            .filter(|l| l.contains(level) && l.contains(message))
            .collect()
    };
    let call_field = format!("call_sid={CALL_SID}");
    // One TTS_LEN_ms per synthesized utterance: the greeting and the reply's two sentences.
    let tts_len = lines_with(" INFO ", "TTS_LEN_ms");
    assert_eq!(tts_len.len(), 3, "{tts_len:#?}");
    let finals = lines_with(" INFO ", "STT_FINAL");
    assert_eq!(finals.len(), 1, "{finals:#?}");
    let partials = lines_with(" INFO ", "STT_PARTIAL");
    for line in tts_len.iter().chain(&finals).chain(&partials) {
        assert!(line.contains(&call_field), "no call id: {line}");
    }
    // The greeting's length is the cached clip's (the stand-in voice: 10 ms per character).
    let greeting_ms = tts_ms(&h.greeting());
    assert!(
        tts_len[0].contains(&format!("TTS_LEN_ms={greeting_ms}")),
        "{}",
        tts_len[0]
    );
    // The speech crate's copies exist, at debug level (the cache warm-up logged one per line).
    assert!(!lines_with("DEBUG", "TTS_LEN_ms").is_empty());
    assert!(!lines_with("DEBUG", "STT_FINAL").is_empty());
}

//! Fuzz the Media Streams inbound parser, the order validator and the health tracker.
//!
//! Invariants checked besides "never panics":
//! - a parsed `media` payload survives a round trip through the outbound writer;
//! - a message accepted by the parser is either accepted or rejected by the validator with a
//!   typed error, and the health tracker accepts anything.
#![no_main]

use libfuzzer_sys::fuzz_target;
use twilio_stream::media::{InboundMessage, StreamHealth, StreamValidator, media_json, parse_inbound};

const START: &str = r#"{"event":"start","sequenceNumber":"1","streamSid":"MZ1","start":{"accountSid":"AC1","callSid":"CA1","mediaFormat":{"encoding":"audio/x-mulaw","sampleRate":8000,"channels":1}}}"#;

fuzz_target!(|data: &[u8]| {
    let Ok(text) = std::str::from_utf8(data) else { return };
    let mut validator = StreamValidator::new();
    let mut health = StreamHealth::new();
    // Twice: once on a fresh socket, once after `start`, so both phases see the input.
    for prepared in [false, true] {
        if prepared {
            let _ = validator.handle_text(START);
        }
        match validator.handle_text(text) {
            Ok(message) => health.observe_message(&message),
            Err(err) => {
                let _ = err.to_string();
            }
        }
    }
    if let Ok(InboundMessage::Media(media)) = parse_inbound(text) {
        let outbound = media_json(&media.stream_sid, &media.payload);
        let echoed = outbound.replacen(r#""media":{"#, r#""media":{"chunk":"1","timestamp":"0","#, 1);
        match parse_inbound(&echoed) {
            Ok(InboundMessage::Media(again)) => {
                assert_eq!(again.payload, media.payload);
                assert_eq!(again.stream_sid, media.stream_sid);
            }
            other => panic!("outbound media did not re-parse: {other:?}"),
        }
    }
    let _ = health.snapshot();
});

//! Fuzz the Media Streams inbound parser, the order validator and the health tracker.
//!
//! Invariants checked besides "never panics":
//! - a parsed `media` payload survives a round trip through the outbound writers (the free
//!   function and `MediaJsonWriter` write the same text);
//! - a message accepted by the parser is either accepted or rejected by the validator with a
//!   typed error, and the health tracker accepts anything;
//! - differential: the `media` fast path agrees with the serde path. An extra unknown member
//!   makes the fast path decline while the serde path ignores it, so parsing the text with one
//!   prepended must give the same message (or an error of the same kind).
#![no_main]

use libfuzzer_sys::fuzz_target;
use twilio_stream::media::{
    InboundMessage, MediaJsonWriter, StreamHealth, StreamValidator, media_json, parse_inbound,
};

const JSON_WHITESPACE: [char; 4] = [' ', '\t', '\n', '\r'];

/// `text` with an unknown member first in its top-level object, when it starts like a
/// non-empty object.
fn with_unknown_member(text: &str) -> Option<String> {
    let rest = text.trim_start_matches(JSON_WHITESPACE).strip_prefix('{')?;
    if rest.trim_start_matches(JSON_WHITESPACE).starts_with('}') {
        return None;
    }
    Some(format!("{{\"differential\":0,{rest}"))
}

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
    let parsed = parse_inbound(text);
    if let Some(reference_text) = with_unknown_member(text) {
        match (&parsed, parse_inbound(&reference_text)) {
            (Ok(fast), Ok(reference)) => assert_eq!(fast, &reference, "{text}"),
            (Err(fast), Err(reference)) => assert_eq!(
                std::mem::discriminant(fast),
                std::mem::discriminant(&reference),
                "{text}: {fast} / {reference}"
            ),
            (fast, reference) => panic!("{text}: {fast:?} but {reference:?} with an unknown member"),
        }
    }
    if let Ok(InboundMessage::Media(media)) = parsed {
        let outbound = media_json(&media.stream_sid, &media.payload);
        assert_eq!(outbound, MediaJsonWriter::new(&media.stream_sid).to_json(&media.payload));
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

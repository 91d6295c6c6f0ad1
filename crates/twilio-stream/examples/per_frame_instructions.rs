//! A fixed number of per-frame operations, for instruction counts under callgrind.
//!
//! ```sh
//! cargo build --release -p twilio-stream --example per_frame_instructions
//! valgrind --tool=callgrind target/release/examples/per_frame_instructions parse 10000
//! valgrind --tool=callgrind target/release/examples/per_frame_instructions parse 0
//! ```
//!
//! The difference of the two totals divided by the count is the cost of one operation. Modes:
//! `parse` (`parse_inbound` of a 20 ms `media` frame), `validate`
//! (`StreamValidator::handle_text` of it after `start`), `write` (`write_media_json` of 160 bytes
//! into a reused buffer), `media_json` (a new `String` each time), `writer` and `writer_json`
//! (the same through a `MediaJsonWriter` built once).

use std::hint::black_box;
use std::process::ExitCode;

use twilio_stream::media::{
    InboundMessage, MediaJsonWriter, StreamValidator, media_json, parse_inbound, write_media_json,
};

const START: &str = r#"{"event":"start","sequenceNumber":"1","start":{"accountSid":"AC7a3f2e9b51c04d6f8e0d1b2c3a4f5e6d","streamSid":"MZ18ad3ab5a668481ce02b83e7395059f0","callSid":"CA362f17ff2a5e41e4ee1fbb3ebaf6a6d5","tracks":["inbound"],"mediaFormat":{"encoding":"audio/x-mulaw","sampleRate":8000,"channels":1},"customParameters":{}},"streamSid":"MZ18ad3ab5a668481ce02b83e7395059f0"}"#;
const MEDIA: &str = r#"{"event":"media","sequenceNumber":"2","media":{"track":"inbound","chunk":"1","timestamp":"0","payload":"/7mrpKCgpKq36DssJSAgIyo2XL2tpaGgo6m01D8tJiEgIigyTsKupqGgoqiwykYvJyIgIicvRsqwqKKgoaauwk4yKCIgISYtP9S0qaOgoaWtvVw2KiMgICUsO+i3qqSgoKSruf85KyQgICQqN2i7rKWgoKOqttw9LSUhICMpNFS/raahoKKoss5CLiYhICIoMErGr6eioKKnr8ZKMCgiIA=="},"streamSid":"MZ18ad3ab5a668481ce02b83e7395059f0"}"#;
const STREAM_SID: &str = "MZ18ad3ab5a668481ce02b83e7395059f0";

fn main() -> ExitCode {
    let mut args = std::env::args().skip(1);
    let mode = args.next().unwrap_or_default();
    let Some(count) = args.next().and_then(|n| n.parse::<u64>().ok()) else {
        eprintln!(
            "usage: per_frame_instructions parse|validate|write|media_json|writer|writer_json COUNT"
        );
        return ExitCode::from(2);
    };
    let frame: Vec<u8> = (0..160u8).map(|i| i.wrapping_mul(37)).collect();
    let mut checksum = 0usize;
    match mode.as_str() {
        "parse" => {
            for _ in 0..count {
                match parse_inbound(black_box(MEDIA)) {
                    Ok(InboundMessage::Media(media)) => checksum += media.payload.len(),
                    other => {
                        eprintln!("unexpected parse result: {other:?}");
                        return ExitCode::FAILURE;
                    }
                }
            }
        }
        "validate" => {
            let mut validator = StreamValidator::new();
            if let Err(err) = validator.handle_text(START) {
                eprintln!("start rejected: {err}");
                return ExitCode::FAILURE;
            }
            for _ in 0..count {
                match validator.handle_text(black_box(MEDIA)) {
                    Ok(InboundMessage::Media(media)) => checksum += media.payload.len(),
                    other => {
                        eprintln!("unexpected validator result: {other:?}");
                        return ExitCode::FAILURE;
                    }
                }
            }
        }
        "write" => {
            let mut buffer = String::with_capacity(512);
            for _ in 0..count {
                buffer.clear();
                write_media_json(&mut buffer, black_box(STREAM_SID), black_box(&frame));
                checksum += black_box(&buffer).len();
            }
        }
        "media_json" => {
            for _ in 0..count {
                checksum += black_box(media_json(black_box(STREAM_SID), black_box(&frame))).len();
            }
        }
        "writer" => {
            let writer = MediaJsonWriter::new(STREAM_SID);
            let mut buffer = String::with_capacity(512);
            for _ in 0..count {
                buffer.clear();
                black_box(&writer).write(&mut buffer, black_box(&frame));
                checksum += black_box(&buffer).len();
            }
        }
        "writer_json" => {
            let writer = MediaJsonWriter::new(STREAM_SID);
            for _ in 0..count {
                checksum += black_box(black_box(&writer).to_json(black_box(&frame))).len();
            }
        }
        _ => {
            eprintln!("unknown mode {mode:?}");
            return ExitCode::from(2);
        }
    }
    println!("{mode} x{count}: checksum {checksum}");
    ExitCode::SUCCESS
}

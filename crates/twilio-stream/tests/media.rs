#![allow(clippy::unwrap_used)]
//! Media Streams messages: recorded-shape fixtures, tolerance, typed errors, outbound JSON.

use std::path::PathBuf;

use twilio_stream::media::{
    InboundMessage, MediaFormat, ParseError, StreamPhase, StreamValidator, clear_json, mark_json,
    media_json, parse_inbound,
};

fn data(name: &str) -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR"))
        .join("tests/data")
        .join(name)
}

fn session_lines() -> Vec<String> {
    std::fs::read_to_string(data("call_session.jsonl"))
        .unwrap()
        .lines()
        .map(str::to_owned)
        .collect()
}

#[test]
fn a_recorded_session_parses_in_order_with_every_field() {
    let tone = std::fs::read(data("frame_tone_440hz.ulaw")).unwrap();
    let messages: Vec<InboundMessage> = session_lines()
        .iter()
        .map(|l| parse_inbound(l).unwrap())
        .collect();
    let names: Vec<&str> = messages.iter().map(InboundMessage::event_name).collect();
    assert_eq!(
        names,
        [
            "connected",
            "start",
            "media",
            "media",
            "media",
            "dtmf",
            "mark",
            "stop"
        ]
    );

    let InboundMessage::Connected(connected) = &messages[0] else {
        panic!("not connected")
    };
    assert_eq!(connected.protocol.as_deref(), Some("Call"));
    assert_eq!(connected.version.as_deref(), Some("1.0.0"));

    let InboundMessage::Start(start) = &messages[1] else {
        panic!("not start")
    };
    assert_eq!(start.sequence_number, Some(1));
    assert_eq!(start.stream_sid, "MZ18ad3ab5a668481ce02b83e7395059f0");
    assert_eq!(start.call_sid, "CA362f17ff2a5e41e4ee1fbb3ebaf6a6d5");
    assert_eq!(start.account_sid, "AC7a3f2e9b51c04d6f8e0d1b2c3a4f5e6d");
    assert_eq!(start.tracks, ["inbound"]);
    assert_eq!(
        start.custom_parameters.get("call_sid").map(String::as_str),
        Some(start.call_sid.as_str())
    );
    assert_eq!(start.media_format, MediaFormat::default());
    assert_eq!(start.media_format.bytes_per_ms(), Some(8));

    let InboundMessage::Media(media) = &messages[2] else {
        panic!("not media")
    };
    assert_eq!(
        (media.sequence_number, media.chunk, media.timestamp_ms),
        (Some(2), 1, 0)
    );
    assert_eq!(media.track, "inbound");
    assert_eq!(media.payload.len(), 160);
    assert_eq!(&media.payload[..], &tone[..]);
    let InboundMessage::Media(third) = &messages[4] else {
        panic!("not media")
    };
    assert_eq!((third.chunk, third.timestamp_ms), (3, 40));

    let InboundMessage::Dtmf(dtmf) = &messages[5] else {
        panic!("not dtmf")
    };
    assert_eq!((dtmf.digit, dtmf.track.as_str()), ('1', "inbound_track"));
    let InboundMessage::Mark(mark) = &messages[6] else {
        panic!("not mark")
    };
    assert_eq!(mark.name, "utterance-1");
    let InboundMessage::Stop(stop) = &messages[7] else {
        panic!("not stop")
    };
    assert_eq!(stop.call_sid, "CA362f17ff2a5e41e4ee1fbb3ebaf6a6d5");
    assert_eq!(stop.sequence_number, Some(7));
    assert!(
        messages[1..]
            .iter()
            .all(|m| m.stream_sid() == Some("MZ18ad3ab5a668481ce02b83e7395059f0"))
    );
}

#[test]
fn pretty_printed_fixtures_parse_like_compact_ones() {
    let pretty =
        parse_inbound(&std::fs::read_to_string(data("media_frame.json")).unwrap()).unwrap();
    let compact = parse_inbound(&session_lines()[2]).unwrap();
    assert_eq!(pretty, compact);
    let start = parse_inbound(&std::fs::read_to_string(data("start.json")).unwrap()).unwrap();
    assert_eq!(start, parse_inbound(&session_lines()[1]).unwrap());
}

#[test]
fn counters_are_accepted_as_numbers_as_well_as_strings() {
    let text = r#"{"event":"media","sequenceNumber":7,"streamSid":"MZ1",
        "media":{"track":"inbound","chunk":5,"timestamp":80.0,"payload":"//8="}}"#;
    let InboundMessage::Media(media) = parse_inbound(text).unwrap() else {
        panic!("not media")
    };
    assert_eq!(
        (media.sequence_number, media.chunk, media.timestamp_ms),
        (Some(7), 5, 80)
    );
    assert_eq!(&media.payload[..], &[0xff, 0xff]);
    let start = r#"{"event":"start","sequenceNumber":"1","streamSid":"MZ1","start":{"accountSid":"AC1","callSid":"CA1",
        "mediaFormat":{"encoding":"audio/x-mulaw","sampleRate":"8000","channels":"1"}}}"#;
    let InboundMessage::Start(start) = parse_inbound(start).unwrap() else {
        panic!("not start")
    };
    assert_eq!(start.media_format.sample_rate, 8000);
}

#[test]
fn unknown_events_and_extra_fields_are_tolerated() {
    let unknown =
        parse_inbound(r#"{"event":"transcription","media":42,"whatever":{"a":[1,2]}}"#).unwrap();
    assert_eq!(
        unknown,
        InboundMessage::Unknown {
            event: "transcription".to_owned()
        }
    );
    let extra = r#"{"event":"mark","sequenceNumber":"9","streamSid":"MZ1","mark":{"name":"m","extra":true},"future":null}"#;
    let InboundMessage::Mark(mark) = parse_inbound(extra).unwrap() else {
        panic!("not mark")
    };
    assert_eq!(mark.name, "m");
    // streamSid only inside `start` (older peers) is accepted.
    let start =
        r#"{"event":"start","start":{"streamSid":"MZ2","accountSid":"AC1","callSid":"CA1"}}"#;
    assert_eq!(parse_inbound(start).unwrap().stream_sid(), Some("MZ2"));
}

#[test]
fn escaped_json_strings_in_the_payload_are_decoded() {
    // "\/" is a legal JSON escape for "/"; the payload can then not be borrowed but must still decode.
    let text = r#"{"event":"media","streamSid":"MZ1","media":{"chunk":"1","timestamp":"0","payload":"\/\/8="}}"#;
    let InboundMessage::Media(media) = parse_inbound(text).unwrap() else {
        panic!("not media")
    };
    assert_eq!(&media.payload[..], &[0xff, 0xff]);
}

#[test]
fn malformed_frames_are_typed_errors() {
    type IsExpected = fn(&ParseError) -> bool;
    let cases: [(&str, IsExpected); 9] = [
        ("not json", |e| matches!(e, ParseError::InvalidJson { .. })),
        ("[1,2]", |e| matches!(e, ParseError::InvalidJson { .. })),
        (r#"{"streamSid":"MZ1"}"#, |e| {
            matches!(e, ParseError::MissingEvent)
        }),
        (
            r#"{"event":"media","streamSid":"MZ1","media":{"chunk":"1","timestamp":"0","payload":"***"}}"#,
            |e| matches!(e, ParseError::InvalidBase64 { .. }),
        ),
        (
            r#"{"event":"media","streamSid":"MZ1","media":{"chunk":"1","payload":"AA=="}}"#,
            |e| {
                matches!(
                    e,
                    ParseError::MissingField {
                        field: "media.timestamp",
                        ..
                    }
                )
            },
        ),
        (
            r#"{"event":"media","streamSid":"MZ1","media":{"chunk":"-1","timestamp":"0","payload":"AA=="}}"#,
            |e| matches!(e, ParseError::InvalidJson { .. }),
        ),
        (r#"{"event":"stop","streamSid":"MZ1","stop":{}}"#, |e| {
            matches!(
                e,
                ParseError::MissingField {
                    field: "stop.callSid",
                    ..
                }
            )
        }),
        (
            r#"{"event":"dtmf","streamSid":"MZ1","dtmf":{"digit":"12"}}"#,
            |e| {
                matches!(
                    e,
                    ParseError::InvalidField {
                        field: "dtmf.digit",
                        ..
                    }
                )
            },
        ),
        (
            r#"{"event":"start","streamSid":"MZ1","start":{"accountSid":"AC1","callSid":"CA1","mediaFormat":{"channels":0}}}"#,
            |e| {
                matches!(
                    e,
                    ParseError::InvalidField {
                        field: "start.mediaFormat.channels",
                        ..
                    }
                )
            },
        ),
    ];
    for (text, expected) in cases {
        let err = parse_inbound(text).unwrap_err();
        assert!(expected(&err), "{text}: unexpected {err:?}");
        assert!(!err.to_string().is_empty());
    }
}

#[test]
fn validator_rejects_media_before_start_and_follows_the_stream() {
    let lines = session_lines();
    let mut validator = StreamValidator::new();
    let err = validator.handle_text(&lines[2]).unwrap_err();
    assert_eq!(
        err,
        ParseError::MediaBeforeStart {
            sequence_number: Some(2)
        }
    );
    assert!(err.to_string().contains("before the stream's `start`"));
    assert_eq!(validator.phase(), StreamPhase::AwaitingStart);

    for line in &lines[..7] {
        validator.handle_text(line).unwrap();
    }
    assert_eq!(validator.phase(), StreamPhase::Streaming);
    assert_eq!(
        validator.stream_sid(),
        Some("MZ18ad3ab5a668481ce02b83e7395059f0")
    );
    assert!(matches!(
        validator.handle_text(&lines[1]),
        Err(ParseError::DuplicateStart { .. })
    ));
    let foreign = lines[2].replace("MZ18ad3ab5a668481ce02b83e7395059f0", "MZother");
    assert!(matches!(
        validator.handle_text(&foreign),
        Err(ParseError::StreamSidMismatch { .. })
    ));
    validator.handle_text(&lines[7]).unwrap();
    assert_eq!(validator.phase(), StreamPhase::Stopped);
    assert!(matches!(
        validator.handle_text(&lines[2]),
        Err(ParseError::AfterStop { .. })
    ));
}

#[test]
fn validator_rejects_payloads_that_split_a_sample_frame() {
    let mut validator = StreamValidator::new();
    let stereo = r#"{"event":"start","streamSid":"MZ1","start":{"accountSid":"AC1","callSid":"CA1",
        "mediaFormat":{"encoding":"audio/x-mulaw","sampleRate":8000,"channels":2}}}"#;
    validator.handle_text(stereo).unwrap();
    let odd = r#"{"event":"media","streamSid":"MZ1","media":{"chunk":"1","timestamp":"0","payload":"AAAA"}}"#;
    let err = validator.handle_text(odd).unwrap_err();
    assert!(matches!(
        err,
        ParseError::PayloadNotWholeSamples {
            payload_len: 3,
            bytes_per_sample_frame: 2,
            ..
        }
    ));
    let even = r#"{"event":"media","streamSid":"MZ1","media":{"chunk":"1","timestamp":"0","payload":"AAAAAA=="}}"#;
    validator.handle_text(even).unwrap();
}

#[test]
fn outbound_messages_are_exact_json_and_round_trip() {
    let tone = std::fs::read(data("frame_tone_440hz.ulaw")).unwrap();
    let text = media_json("MZ1", &tone);
    let value: serde_json::Value = serde_json::from_str(&text).unwrap();
    assert_eq!(value["event"], "media");
    assert_eq!(value["streamSid"], "MZ1");
    let reparsed = parse_inbound(&format!(
        r#"{{"event":"media","streamSid":"MZ1","media":{{"chunk":"1","timestamp":"0","payload":{}}}}}"#,
        value["media"]["payload"]
    ))
    .unwrap();
    let InboundMessage::Media(media) = reparsed else {
        panic!("not media")
    };
    assert_eq!(&media.payload[..], &tone[..]);

    assert_eq!(
        mark_json("MZ1", "utt-1"),
        r#"{"event":"mark","streamSid":"MZ1","mark":{"name":"utt-1"}}"#
    );
    assert_eq!(clear_json("MZ1"), r#"{"event":"clear","streamSid":"MZ1"}"#);
    assert_eq!(
        media_json("MZ1", &[]),
        r#"{"event":"media","streamSid":"MZ1","media":{"payload":""}}"#
    );
}

#[test]
fn outbound_strings_are_json_escaped() {
    let name = "quote\" back\\ nl\n tab\t bell\u{7} é";
    let text = mark_json("MZ\"1", name);
    let value: serde_json::Value = serde_json::from_str(&text).unwrap();
    assert_eq!(value["mark"]["name"], name);
    assert_eq!(value["streamSid"], "MZ\"1");
}

mod properties {
    use proptest::prelude::*;
    use twilio_stream::media::{InboundMessage, clear_json, mark_json, media_json, parse_inbound};

    proptest! {
        #[test]
        fn outbound_json_round_trips_any_ids_and_audio(
            stream_sid in any::<String>(),
            name in any::<String>(),
            audio in proptest::collection::vec(any::<u8>(), 0..400),
        ) {
            let mark: serde_json::Value = serde_json::from_str(&mark_json(&stream_sid, &name)).unwrap();
            prop_assert_eq!(mark["streamSid"].as_str(), Some(stream_sid.as_str()));
            prop_assert_eq!(mark["mark"]["name"].as_str(), Some(name.as_str()));
            let clear: serde_json::Value = serde_json::from_str(&clear_json(&stream_sid)).unwrap();
            prop_assert_eq!(clear["event"].as_str(), Some("clear"));

            let media = media_json(&stream_sid, &audio);
            let inbound = media.replacen(r#""media":{"#, r#""media":{"chunk":"1","timestamp":"0","#, 1);
            match parse_inbound(&inbound) {
                Ok(InboundMessage::Media(parsed)) => {
                    prop_assert_eq!(&parsed.payload[..], &audio[..]);
                    prop_assert_eq!(parsed.stream_sid, stream_sid);
                }
                other => prop_assert!(false, "did not re-parse: {:?}", other),
            }
        }

        #[test]
        fn arbitrary_text_never_panics(text in any::<String>()) {
            let _ = parse_inbound(&text);
        }

        #[test]
        fn arbitrary_json_objects_never_panic(
            event in "(media|start|stop|dtmf|mark|[a-z]{1,8})",
            field in "(media|start|stop|dtmf|mark|streamSid)",
            value in prop_oneof![Just("1".to_owned()), Just("\"x\"".to_owned()), Just("{}".to_owned()), Just("null".to_owned()),
                                  Just(r#"{"chunk":"1","timestamp":"2","payload":"AA"}"#.to_owned())],
        ) {
            let text = format!(r#"{{"event":"{event}","streamSid":"MZ1","{field}":{value}}}"#);
            let _ = parse_inbound(&text);
        }
    }
}

#![allow(clippy::unwrap_used)]
//! Stream-health figures from synthetic but protocol-shaped frame sequences.

use bytes::Bytes;
use twilio_stream::media::{InboundMessage, Media, MediaFormat, StreamHealth, parse_inbound};

const FRAME_BYTES: usize = 160;

fn frame(chunk: u64, timestamp_ms: u64) -> Media {
    Media {
        sequence_number: Some(chunk + 1),
        stream_sid: "MZ1".to_owned(),
        track: "inbound".to_owned(),
        chunk,
        timestamp_ms,
        payload: Bytes::from(vec![0xff; FRAME_BYTES]),
    }
}

#[test]
fn a_clean_stream_has_no_gaps_and_no_drift() {
    let mut health = StreamHealth::new();
    for chunk in 1..=500 {
        health.observe(&frame(chunk, (chunk - 1) * 20));
    }
    let snapshot = health.snapshot();
    assert_eq!(snapshot.frames, 500);
    assert_eq!(snapshot.audio_ms, 10_000);
    assert_eq!(snapshot.payload_bytes, 500 * 160);
    assert_eq!(
        (
            snapshot.gaps,
            snapshot.missing_chunks,
            snapshot.duplicates,
            snapshot.out_of_order
        ),
        (0, 0, 0, 0)
    );
    assert_eq!(
        (snapshot.timestamp_drift_ms, snapshot.max_timestamp_drift_ms),
        (0, 0)
    );
    assert_eq!(
        (snapshot.last_chunk, snapshot.last_timestamp_ms),
        (Some(500), Some(9_980))
    );
}

#[test]
fn lost_frames_show_as_gaps_and_positive_drift() {
    let mut health = StreamHealth::new();
    for chunk in (1..=100).filter(|c| !(40..45).contains(c)) {
        health.observe(&frame(chunk, (chunk - 1) * 20));
    }
    let snapshot = health.snapshot();
    assert_eq!((snapshot.gaps, snapshot.missing_chunks), (1, 5));
    // Five 20 ms frames never arrived: timestamps run 100 ms ahead of the audio received.
    assert_eq!(snapshot.timestamp_drift_ms, 100);
    assert_eq!(snapshot.max_timestamp_drift_ms, 100);
}

#[test]
fn duplicates_and_late_frames_are_told_apart() {
    let mut health = StreamHealth::new();
    for chunk in [1, 2, 4, 5, 3, 5, 2, 6] {
        health.observe(&frame(chunk, (chunk - 1) * 20));
    }
    let snapshot = health.snapshot();
    assert_eq!(snapshot.frames, 8);
    assert_eq!(snapshot.duplicates, 2);
    assert_eq!(snapshot.out_of_order, 1);
    assert_eq!(
        (snapshot.gaps, snapshot.missing_chunks),
        (1, 0),
        "the late chunk 3 filled the gap"
    );
    assert_eq!(snapshot.audio_ms, 6 * 20);
    // A chunk far behind the window cannot be told apart and counts as out of order.
    for chunk in 7..=300 {
        health.observe(&frame(chunk, (chunk - 1) * 20));
    }
    health.observe(&frame(10, 180));
    assert_eq!(health.snapshot().out_of_order, 2);
    assert_eq!(health.snapshot().timestamp_drift_ms, 0);
}

#[test]
fn timestamps_behind_the_audio_give_negative_drift() {
    let mut health = StreamHealth::new();
    for chunk in 1..=10 {
        // A peer that stamps 10 ms per 20 ms frame.
        health.observe(&frame(chunk, (chunk - 1) * 10));
    }
    let snapshot = health.snapshot();
    assert_eq!(snapshot.timestamp_drift_ms, -90);
    assert_eq!(snapshot.max_timestamp_drift_ms, 90);
}

#[test]
fn sequence_numbers_are_followed_across_all_events() {
    let session = std::fs::read_to_string(concat!(
        env!("CARGO_MANIFEST_DIR"),
        "/tests/data/call_session.jsonl"
    ))
    .unwrap();
    let mut health = StreamHealth::for_format(&MediaFormat::default());
    let messages: Vec<InboundMessage> =
        session.lines().map(|l| parse_inbound(l).unwrap()).collect();
    for message in &messages {
        health.observe_message(message);
    }
    // Mark and dtmf interleave with media: no false sequence gaps.
    let snapshot = health.snapshot();
    assert_eq!(
        (snapshot.sequence_gaps, snapshot.sequence_regressions),
        (0, 0)
    );
    assert_eq!(snapshot.frames, 3);
    health.observe_sequence_number(12);
    health.observe_sequence_number(11);
    let snapshot = health.snapshot();
    assert_eq!(
        (snapshot.sequence_gaps, snapshot.sequence_regressions),
        (4, 1)
    );
    let json = serde_json::to_value(snapshot).unwrap();
    assert_eq!(json["sequence_gaps"], 4);
    assert_eq!(json["max_timestamp_drift_ms"], 0);
}

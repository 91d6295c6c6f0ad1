//! The framer turns arbitrary chunks into exact 20 ms frames without losing, duplicating or
//! reordering a byte.
#![allow(clippy::unwrap_used)]

use mulaw::{FRAME_BYTES, Framer, SILENCE};
use proptest::prelude::*;

/// Pushes `chunks` one by one, draining after each push as a driver would, then flushes.
fn frames_for(chunks: &[Vec<u8>]) -> Vec<[u8; FRAME_BYTES]> {
    let mut framer = Framer::new();
    let mut frames = Vec::new();
    for chunk in chunks {
        framer.push(chunk);
        while let Some(frame) = framer.pop_frame() {
            frames.push(frame);
        }
        assert!(
            framer.pending_len() < FRAME_BYTES,
            "driver drained every whole frame"
        );
    }
    frames.extend(framer.flush());
    assert_eq!(framer.pending_len(), 0);
    assert_eq!(framer.flush(), None, "a second flush has nothing left");
    frames
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 256, .. ProptestConfig::default() })]

    #[test]
    fn concatenated_frames_equal_the_input_padded_with_silence(
        chunks in prop::collection::vec(prop::collection::vec(any::<u8>(), 0..700), 0..40)
    ) {
        let input: Vec<u8> = chunks.concat();
        let frames = frames_for(&chunks);
        prop_assert_eq!(frames.len(), mulaw::frames_needed(input.len()));
        let output: Vec<u8> = frames.concat();
        let mut expected = input.clone();
        expected.resize(frames.len() * FRAME_BYTES, SILENCE);
        prop_assert_eq!(output, expected);
    }
}

#[test]
fn a_1_7_second_tts_answer_in_3_byte_chunks_yields_85_frames() {
    let answer: Vec<u8> = (0..13_600).map(|i| (i % 251) as u8).collect();
    assert_eq!(mulaw::duration_ms(answer.len()), 1_700);
    let chunks: Vec<Vec<u8>> = answer.chunks(3).map(<[u8]>::to_vec).collect();
    let frames = frames_for(&chunks);
    assert_eq!(frames.len(), 85);
    assert_eq!(
        frames.concat(),
        answer,
        "an exact multiple of 160 needs no padding"
    );
}

#[test]
fn flush_pads_a_partial_frame_with_mu_law_silence() {
    let mut framer = Framer::new();
    framer.push(&[1, 2, 3]);
    assert_eq!(framer.pop_frame(), None);
    assert_eq!(framer.pending_len(), 3);
    let frame = framer.flush().unwrap();
    assert_eq!(&frame[..3], &[1, 2, 3]);
    assert!(frame[3..].iter().all(|&byte| byte == SILENCE));
    assert_eq!(framer.flush(), None);
}

#[test]
fn flush_never_drops_whole_frames_that_were_not_popped() {
    let mut framer = Framer::new();
    framer.push(&[9; FRAME_BYTES + 1]);
    assert_eq!(framer.frames_ready(), 1);
    assert_eq!(framer.flush(), Some([9; FRAME_BYTES]));
    let last = framer.flush().unwrap();
    assert_eq!(last[0], 9);
    assert_eq!(last[1], SILENCE);
}

#[test]
fn clear_drops_queued_audio_for_barge_in() {
    let mut framer = Framer::new();
    framer.push(&[5; 1_000]);
    assert!(framer.pop_frame().is_some());
    framer.clear();
    assert_eq!(framer.pending_len(), 0);
    assert_eq!(framer.pop_frame(), None);
    assert_eq!(framer.flush(), None);
    framer.push(&[6; FRAME_BYTES]);
    assert_eq!(framer.pop_frame(), Some([6; FRAME_BYTES]));
}

#[test]
fn a_long_stream_does_not_grow_the_buffer_without_bound() {
    // 10 minutes of 20 ms chunks with a 7-byte lag: the buffer keeps being compacted.
    let mut framer = Framer::new();
    framer.push(&[0; 7]);
    let mut frames = 0_usize;
    for i in 0..30_000_u32 {
        framer.push(&[(i % 200) as u8; FRAME_BYTES]);
        while framer.pop_frame().is_some() {
            frames += 1;
        }
        assert_eq!(framer.pending_len(), 7);
    }
    assert_eq!(frames, 30_000);
}

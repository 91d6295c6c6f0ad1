//! Configuration validation (operator-facing messages) and a replacement voice activity
//! detector driven through the PCM input.
#![allow(clippy::unwrap_used)]

mod support;

use support::{Clock, drain};
use turn::{
    Action, ConfigError, Event, State, TurnConfig, TurnEngine, TurnId, VoiceActivityDetector,
};

#[test]
fn default_config_is_valid() {
    TurnConfig::default().validate().unwrap();
}

#[test]
fn out_of_range_end_of_utterance_is_rejected_with_the_allowed_range() {
    for eou_ms in [299, 601, 0] {
        let config = TurnConfig {
            eou_ms,
            ..TurnConfig::default()
        };
        let error = TurnEngine::new(config).unwrap_err();
        assert!(matches!(
            error,
            ConfigError::OutOfRange {
                field: "eou_ms",
                ..
            }
        ));
        let message = error.to_string();
        assert!(
            message.contains("`eou_ms`") && message.contains("300..=600"),
            "{message}"
        );
    }
    for eou_ms in [300, 450, 600] {
        let config = TurnConfig {
            eou_ms,
            ..TurnConfig::default()
        };
        TurnEngine::new(config).unwrap();
    }
}

#[test]
fn inconsistent_or_empty_settings_are_rejected() {
    let barge_before_speech = TurnConfig {
        speech_start_ms: 200,
        barge_in_ms: 150,
        ..TurnConfig::default()
    };
    assert!(matches!(
        barge_before_speech.validate(),
        Err(ConfigError::BargeInBeforeSpeechStart { .. })
    ));

    let no_goodbye = TurnConfig {
        goodbye_text: "  ".to_owned(),
        ..TurnConfig::default()
    };
    assert_eq!(
        no_goodbye.validate(),
        Err(ConfigError::EmptyText {
            field: "goodbye_text"
        })
    );

    let no_reprompts = TurnConfig {
        reprompt_texts: Vec::new(),
        ..TurnConfig::default()
    };
    assert!(no_reprompts.validate().is_err());
    let no_reprompts_needed = TurnConfig {
        reprompt_texts: Vec::new(),
        max_reprompts: 0,
        ..TurnConfig::default()
    };
    no_reprompts_needed.validate().unwrap();

    let mut bad_vad = TurnConfig::default();
    bad_vad.vad.threshold_db = 1.0;
    let message = bad_vad.validate().unwrap_err().to_string();
    assert!(message.contains("vad.threshold_db"), "{message}");

    let bad_stability = TurnConfig {
        stable_partial_min: 1.5,
        ..TurnConfig::default()
    };
    assert!(bad_stability.validate().is_err());
}

/// A different detector: voice is any frame whose peak exceeds a fixed level.
#[derive(Debug)]
struct PeakVad {
    level: u16,
    frames_seen: usize,
}

impl VoiceActivityDetector for PeakVad {
    fn is_voiced_mulaw(&mut self, frame: &[u8]) -> bool {
        self.frames_seen += 1;
        frame
            .iter()
            .any(|&b| mulaw::decode_sample(b).unsigned_abs() > self.level)
    }

    fn is_voiced_pcm(&mut self, samples: &[i16]) -> bool {
        self.frames_seen += 1;
        samples.iter().any(|s| s.unsigned_abs() > self.level)
    }
}

#[test]
fn a_replacement_detector_drives_barge_in_from_pcm_frames() {
    let clock = Clock::default();
    let vad = PeakVad {
        level: 5000,
        frames_seen: 0,
    };
    let mut engine = TurnEngine::with_vad(TurnConfig::default(), vad).unwrap();
    engine.handle_stream_start(clock.at(0));
    engine.handle_tts_audio(
        clock.at(100),
        TurnId(1),
        bytes::Bytes::from(vec![0xFF; 16_000]),
    );
    drain(&mut engine);
    assert_eq!(engine.state(), State::Speaking);

    let quiet = [300i16; 160];
    let loud: Vec<i16> = (0..160)
        .map(|i| if i % 2 == 0 { 9000 } else { -9000 })
        .collect();
    let mut t = 100;
    for _ in 0..5 {
        t += 20;
        engine.handle_pcm_frame(clock.at(t), &quiet);
    }
    assert!(drain(&mut engine).0.is_empty());
    let mut cleared_at = None;
    for _ in 0..10 {
        t += 20;
        engine.handle_pcm_frame(clock.at(t), &loud);
        let (actions, events) = drain(&mut engine);
        if actions.contains(&Action::Clear) {
            cleared_at = Some(t);
            assert!(events.iter().any(|e| matches!(
                e,
                Event::BargeIn {
                    latency_ms: 160,
                    ..
                }
            )));
            break;
        }
    }
    // 8 loud frames = 160 ms >= barge_in_ms (150).
    assert_eq!(cleared_at, Some(100 + 5 * 20 + 8 * 20));
    assert_eq!(engine.state(), State::Listening);
}

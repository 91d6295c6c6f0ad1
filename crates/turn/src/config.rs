//! Engine configuration and its validation.

use crate::vad::EnergyVadConfig;

/// Timings (milliseconds) and scripted texts for one call. Build it from the responder script
/// and environment, then pass it to [`crate::TurnEngine::new`], which validates it.
#[derive(Debug, Clone, PartialEq)]
pub struct TurnConfig {
    /// Caller silence required before replying (300..=600, default 500).
    pub eou_ms: u32,
    /// Voiced audio required before the caller counts as speaking (20..=1000, default 100).
    pub speech_start_ms: u32,
    /// Unvoiced audio that ends the caller's speech (20..=`eou_ms`, default 100). The
    /// end-of-utterance silence is counted from the start of this unvoiced run, so it is part
    /// of `eou_ms`.
    pub speech_end_ms: u32,
    /// Voiced audio that interrupts the agent while it speaks (40..=2000, default 150; at least
    /// `speech_start_ms`).
    pub barge_in_ms: u32,
    /// How long after `eou_ms` to wait for a late STT final before answering from the latest
    /// partial (0..=3000, default 400).
    pub final_grace_ms: u32,
    /// Partial-result stability (0.0..=1.0, default 0.8) at which a partial counts as stable.
    pub stable_partial_min: f32,
    /// Caller silence in `Listening` before a reprompt (1000..=120000, default 8000).
    pub idle_ms: u32,
    /// Reprompts before the goodbye and hang-up (0..=10, default 2).
    pub max_reprompts: u32,
    /// When true the greeting cannot be interrupted.
    pub protect_greeting: bool,
    /// Extra wait after the estimated end of playback for the final mark echo before treating
    /// the turn as played (0..=10000, default 1000).
    pub mark_fallback_margin_ms: u32,
    /// Longest wait for the responder or synthesis to make progress (a chunk, audio, done)
    /// before the turn is abandoned (500..=60000, default 10000).
    pub response_timeout_ms: u32,
    /// Spoken once when the stream starts. Empty: no greeting.
    pub greeting_text: String,
    /// Reprompt texts; the n-th reprompt uses entry n (the last entry repeats). Must not be
    /// empty when `max_reprompts > 0`.
    pub reprompt_texts: Vec<String>,
    /// Said before hanging up after the reprompts ran out. Must not be empty.
    pub goodbye_text: String,
    /// Said when a reply fails before any of its audio played. Must not be empty.
    pub apology_text: String,
    /// Settings of the default energy VAD (ignored with a custom detector).
    pub vad: EnergyVadConfig,
}

impl Default for TurnConfig {
    fn default() -> Self {
        TurnConfig {
            eou_ms: 500,
            speech_start_ms: 100,
            speech_end_ms: 100,
            barge_in_ms: 150,
            final_grace_ms: 400,
            stable_partial_min: 0.8,
            idle_ms: 8000,
            max_reprompts: 2,
            protect_greeting: false,
            mark_fallback_margin_ms: 1000,
            response_timeout_ms: 10_000,
            greeting_text: "Hello, thanks for calling. How can I help you?".to_owned(),
            reprompt_texts: vec![
                "Are you still there?".to_owned(),
                "I can't hear you. Are you still on the line?".to_owned(),
            ],
            goodbye_text: "I'll hang up now. Goodbye.".to_owned(),
            apology_text: "Sorry, I had a problem answering. Could you say that again?".to_owned(),
            vad: EnergyVadConfig::default(),
        }
    }
}

/// A [`TurnConfig`] value that cannot work.
#[derive(Debug, Clone, PartialEq, thiserror::Error)]
#[non_exhaustive]
pub enum ConfigError {
    /// A timing or count outside its allowed range.
    #[error(
        "turn config `{field}` = {value} is outside the allowed range {min}..={max}; set it within that range"
    )]
    OutOfRange {
        /// The field's name.
        field: &'static str,
        /// The rejected value.
        value: f64,
        /// Smallest allowed value.
        min: f64,
        /// Largest allowed value.
        max: f64,
    },
    /// Barge-in would trigger before the caller even counts as speaking.
    #[error(
        "turn config `barge_in_ms` ({barge_in_ms}) is shorter than `speech_start_ms` ({speech_start_ms}); make barge_in_ms at least speech_start_ms"
    )]
    BargeInBeforeSpeechStart {
        /// The configured barge-in time.
        barge_in_ms: u32,
        /// The configured speech-start time.
        speech_start_ms: u32,
    },
    /// A scripted text the engine may need to speak is empty.
    #[error("turn config `{field}` is empty; give the text the agent should say")]
    EmptyText {
        /// The field's name.
        field: &'static str,
    },
}

impl TurnConfig {
    /// Checks every range and required text.
    ///
    /// # Errors
    /// The first problem found, naming the field.
    pub fn validate(&self) -> Result<(), ConfigError> {
        let ranges: [(&'static str, u32, u32, u32); 9] = [
            ("eou_ms", self.eou_ms, 300, 600),
            ("speech_start_ms", self.speech_start_ms, 20, 1000),
            ("speech_end_ms", self.speech_end_ms, 20, 1000),
            ("barge_in_ms", self.barge_in_ms, 40, 2000),
            ("final_grace_ms", self.final_grace_ms, 0, 3000),
            ("idle_ms", self.idle_ms, 1000, 120_000),
            ("max_reprompts", self.max_reprompts, 0, 10),
            (
                "mark_fallback_margin_ms",
                self.mark_fallback_margin_ms,
                0,
                10_000,
            ),
            ("response_timeout_ms", self.response_timeout_ms, 500, 60_000),
        ];
        for (field, value, min, max) in ranges {
            if !(min..=max).contains(&value) {
                return Err(ConfigError::OutOfRange {
                    field,
                    value: f64::from(value),
                    min: f64::from(min),
                    max: f64::from(max),
                });
            }
        }
        if !(0.0..=1.0).contains(&self.stable_partial_min) {
            return Err(ConfigError::OutOfRange {
                field: "stable_partial_min",
                value: f64::from(self.stable_partial_min),
                min: 0.0,
                max: 1.0,
            });
        }
        if self.speech_end_ms > self.eou_ms {
            return Err(ConfigError::OutOfRange {
                field: "speech_end_ms",
                value: f64::from(self.speech_end_ms),
                min: 20.0,
                max: f64::from(self.eou_ms),
            });
        }
        if self.barge_in_ms < self.speech_start_ms {
            return Err(ConfigError::BargeInBeforeSpeechStart {
                barge_in_ms: self.barge_in_ms,
                speech_start_ms: self.speech_start_ms,
            });
        }
        if self.max_reprompts > 0
            && (self.reprompt_texts.is_empty()
                || self.reprompt_texts.iter().any(|t| t.trim().is_empty()))
        {
            return Err(ConfigError::EmptyText {
                field: "reprompt_texts",
            });
        }
        if self.goodbye_text.trim().is_empty() {
            return Err(ConfigError::EmptyText {
                field: "goodbye_text",
            });
        }
        if self.apology_text.trim().is_empty() {
            return Err(ConfigError::EmptyText {
                field: "apology_text",
            });
        }
        self.vad.validate()
    }
}

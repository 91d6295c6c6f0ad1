//! Energy-based speech segmentation: the sans-IO core of the Speech-to-Text stand-in.
//!
//! Audio goes in with [`SpeechSegmenter::handle_audio`] (16-bit samples, any chunking); events
//! come out of [`SpeechSegmenter::poll_event`]. Drain every event after each call. Time is the
//! audio itself (samples received), so the result is identical however the audio is chunked
//! and however fast it arrives.
//!
//! The audio is cut into 20 ms windows. A window is *voiced* when its mean absolute amplitude is
//! at least [`SegmenterConfig::voiced_threshold`]. Speech begins after
//! [`SegmenterConfig::onset_windows`] voiced windows in a row (the onset is dated to the first of
//! them), produces a partial every [`SegmenterConfig::partial_every`] of speech, and ends once
//! [`SegmenterConfig::end_silence`] of unvoiced audio follows the last voiced window.

use std::time::Duration;

/// Tuning of the segmentation.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct SegmenterConfig {
    /// Mean absolute amplitude (0..32768) at or above which a 20 ms window counts as voiced.
    /// 500 is about -36 dBFS: line noise stays below, speech at normal level is well above.
    pub voiced_threshold: u32,
    /// Consecutive voiced windows that make an onset (3 = 60 ms; a click is not speech).
    pub onset_windows: u32,
    /// Unvoiced audio after the last voiced window that ends the utterance.
    pub end_silence: Duration,
    /// Speech between two partial transcripts.
    pub partial_every: Duration,
}

impl Default for SegmenterConfig {
    fn default() -> Self {
        Self {
            voiced_threshold: 500,
            onset_windows: 3,
            end_silence: Duration::from_millis(300),
            partial_every: Duration::from_millis(300),
        }
    }
}

/// What the segmenter noticed. Offsets are measured from the first sample of the stream.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum SegmentEvent {
    /// Speech started at `at` (start of the first voiced window of the onset).
    SpeechBegin {
        /// Offset of the onset.
        at: Duration,
    },
    /// Speech is going on: `voiced_so_far` of it since the onset.
    Partial {
        /// Duration from the onset to the end of the latest window.
        voiced_so_far: Duration,
    },
    /// The utterance ended: the last voiced window ended at `speech_end`.
    SpeechEnd {
        /// Offset of the onset.
        began: Duration,
        /// Offset of the end of the last voiced window.
        speech_end: Duration,
    },
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Phase {
    /// No speech; `voiced_run` voiced windows in a row so far.
    Quiet { voiced_run: u32 },
    /// Inside an utterance.
    Speaking {
        began_window: u64,
        last_voiced_window: u64,
        next_partial_window: u64,
    },
}

/// Energy-based segmentation of one audio stream.
#[derive(Debug, Clone)]
pub struct SpeechSegmenter {
    config: SegmenterConfig,
    window_samples: usize,
    sample_rate_hz: u32,
    /// Sum of absolute amplitudes of the window being filled.
    window_sum: u64,
    window_filled: usize,
    /// Index of the window being filled.
    window_index: u64,
    phase: Phase,
    events: std::collections::VecDeque<SegmentEvent>,
}

impl SpeechSegmenter {
    /// A segmenter for mono audio at `sample_rate_hz` (at least 50 Hz; 8000 for Twilio).
    #[must_use]
    pub fn new(config: SegmenterConfig, sample_rate_hz: u32) -> Self {
        let sample_rate_hz = sample_rate_hz.max(50);
        Self {
            config,
            window_samples: (sample_rate_hz / 50) as usize,
            sample_rate_hz,
            window_sum: 0,
            window_filled: 0,
            window_index: 0,
            phase: Phase::Quiet { voiced_run: 0 },
            events: std::collections::VecDeque::new(),
        }
    }

    /// Audio received so far, as a duration.
    #[must_use]
    pub fn audio_received(&self) -> Duration {
        self.window_offset(self.window_index)
            + Duration::from_micros(
                self.window_filled as u64 * 1_000_000 / u64::from(self.sample_rate_hz),
            )
    }

    /// True while an utterance is in progress.
    #[must_use]
    pub fn is_speaking(&self) -> bool {
        matches!(self.phase, Phase::Speaking { .. })
    }

    /// Feeds samples; queue events for [`Self::poll_event`].
    pub fn handle_audio(&mut self, samples: &[i16]) {
        for &sample in samples {
            self.window_sum += u64::from(sample.unsigned_abs());
            self.window_filled += 1;
            if self.window_filled == self.window_samples {
                let mean = self.window_sum / self.window_samples as u64;
                self.handle_window(mean >= u64::from(self.config.voiced_threshold));
                self.window_sum = 0;
                self.window_filled = 0;
                self.window_index += 1;
            }
        }
    }

    /// Ends the stream: an utterance in progress ends at its last voiced window.
    pub fn handle_end_of_audio(&mut self) {
        if let Phase::Speaking {
            began_window,
            last_voiced_window,
            ..
        } = self.phase
        {
            self.events.push_back(SegmentEvent::SpeechEnd {
                began: self.window_offset(began_window),
                speech_end: self.window_offset(last_voiced_window + 1),
            });
            self.phase = Phase::Quiet { voiced_run: 0 };
        }
    }

    /// The next event, oldest first.
    #[must_use]
    pub fn poll_event(&mut self) -> Option<SegmentEvent> {
        self.events.pop_front()
    }

    fn window_offset(&self, window: u64) -> Duration {
        Duration::from_millis(window * 20)
    }

    fn windows_in(&self, duration: Duration) -> u64 {
        (duration.as_millis() as u64).div_ceil(20).max(1)
    }

    fn handle_window(&mut self, voiced: bool) {
        let index = self.window_index;
        match self.phase {
            Phase::Quiet { voiced_run } => {
                let voiced_run = if voiced { voiced_run + 1 } else { 0 };
                if voiced_run >= self.config.onset_windows.max(1) {
                    let began_window = index + 1 - u64::from(voiced_run);
                    self.events.push_back(SegmentEvent::SpeechBegin {
                        at: self.window_offset(began_window),
                    });
                    self.phase = Phase::Speaking {
                        began_window,
                        last_voiced_window: index,
                        next_partial_window: began_window
                            + self.windows_in(self.config.partial_every),
                    };
                } else {
                    self.phase = Phase::Quiet { voiced_run };
                }
            }
            Phase::Speaking {
                began_window,
                last_voiced_window,
                next_partial_window,
            } => {
                let last_voiced_window = if voiced { index } else { last_voiced_window };
                let silent_windows = index - last_voiced_window;
                if silent_windows >= self.windows_in(self.config.end_silence) {
                    self.events.push_back(SegmentEvent::SpeechEnd {
                        began: self.window_offset(began_window),
                        speech_end: self.window_offset(last_voiced_window + 1),
                    });
                    self.phase = Phase::Quiet { voiced_run: 0 };
                    return;
                }
                let mut next_partial_window = next_partial_window;
                if index + 1 >= next_partial_window {
                    if silent_windows == 0 {
                        self.events.push_back(SegmentEvent::Partial {
                            voiced_so_far: self.window_offset(index + 1 - began_window),
                        });
                    }
                    next_partial_window = index + 1 + self.windows_in(self.config.partial_every);
                }
                self.phase = Phase::Speaking {
                    began_window,
                    last_voiced_window,
                    next_partial_window,
                };
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn tone(ms: u64, amplitude: i16) -> Vec<i16> {
        (0..ms * 8)
            .map(|n| if n % 2 == 0 { amplitude } else { -amplitude })
            .collect()
    }

    fn drain(segmenter: &mut SpeechSegmenter) -> Vec<SegmentEvent> {
        std::iter::from_fn(|| segmenter.poll_event()).collect()
    }

    #[test]
    fn one_utterance_gives_begin_partials_and_end_with_exact_offsets() {
        let mut segmenter = SpeechSegmenter::new(SegmenterConfig::default(), 8000);
        segmenter.handle_audio(&tone(200, 0));
        segmenter.handle_audio(&tone(700, 4000));
        segmenter.handle_audio(&tone(400, 10));
        let events = drain(&mut segmenter);
        assert_eq!(
            events,
            vec![
                SegmentEvent::SpeechBegin {
                    at: Duration::from_millis(200)
                },
                SegmentEvent::Partial {
                    voiced_so_far: Duration::from_millis(300)
                },
                SegmentEvent::Partial {
                    voiced_so_far: Duration::from_millis(600)
                },
                SegmentEvent::SpeechEnd {
                    began: Duration::from_millis(200),
                    speech_end: Duration::from_millis(900)
                },
            ]
        );
        assert!(!segmenter.is_speaking());
        assert_eq!(segmenter.audio_received(), Duration::from_millis(1300));
    }

    #[test]
    fn chunking_does_not_change_the_result() {
        let mut audio = tone(100, 0);
        audio.extend(tone(500, 3000));
        audio.extend(tone(500, 0));
        let mut whole = SpeechSegmenter::new(SegmenterConfig::default(), 8000);
        whole.handle_audio(&audio);
        let mut pieces = SpeechSegmenter::new(SegmenterConfig::default(), 8000);
        for chunk in audio.chunks(37) {
            pieces.handle_audio(chunk);
        }
        assert_eq!(drain(&mut whole), drain(&mut pieces));
    }

    #[test]
    fn clicks_and_quiet_noise_are_not_speech() {
        let mut segmenter = SpeechSegmenter::new(SegmenterConfig::default(), 8000);
        for _ in 0..10 {
            segmenter.handle_audio(&tone(40, 8000));
            segmenter.handle_audio(&tone(200, 100));
        }
        assert_eq!(drain(&mut segmenter), vec![]);
    }

    #[test]
    fn end_of_audio_closes_an_open_utterance() {
        let mut segmenter = SpeechSegmenter::new(SegmenterConfig::default(), 8000);
        segmenter.handle_audio(&tone(100, 3000));
        segmenter.handle_end_of_audio();
        let events = drain(&mut segmenter);
        assert_eq!(
            events.last(),
            Some(&SegmentEvent::SpeechEnd {
                began: Duration::ZERO,
                speech_end: Duration::from_millis(100)
            })
        );
    }
}

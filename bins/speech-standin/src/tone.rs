//! Deterministic speech-like audio for the Text-to-Speech stand-in.
//!
//! Every word becomes a vowel-like tone (a fundamental between 110 and 230 Hz chosen from the
//! word's bytes, plus its 2nd and 3rd harmonics, with 10 ms fades), every space or punctuation
//! mark a short pause. Each character lasts `1 / chars_per_second` seconds (scaled by the
//! speaking rate), so the audio's length follows the text's length, like real speech. The same
//! text always gives the same samples.

use std::f32::consts::TAU;

/// Characters spoken per second at speaking rate 1.0.
pub const DEFAULT_CHARS_PER_SECOND: f32 = 12.0;
/// Peak amplitude of the generated audio (about -12 dBFS): clearly voiced for any VAD.
const PEAK_AMPLITUDE: f32 = 8_000.0;
/// Shortest audio produced for a non-empty text.
const MIN_DURATION_MS: u32 = 200;
const FADE_MS: u32 = 10;

/// Synthesis parameters.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct ToneVoice {
    /// Characters per second at speaking rate 1.0.
    pub chars_per_second: f32,
}

impl Default for ToneVoice {
    fn default() -> Self {
        Self {
            chars_per_second: DEFAULT_CHARS_PER_SECOND,
        }
    }
}

/// One stretch of the output: a tone at `pitch_hz` or a pause (`pitch_hz == 0`).
#[derive(Debug, Clone, Copy, PartialEq)]
struct Segment {
    pitch_hz: f32,
    chars: u32,
}

fn segments(text: &str) -> Vec<Segment> {
    let mut out: Vec<Segment> = Vec::new();
    let mut word_hash: u32 = 0x811c_9dc5;
    let mut word_chars = 0u32;
    let flush_word = |out: &mut Vec<Segment>, hash: &mut u32, chars: &mut u32| {
        if *chars > 0 {
            out.push(Segment {
                pitch_hz: 110.0 + (*hash % 121) as f32,
                chars: *chars,
            });
        }
        *hash = 0x811c_9dc5;
        *chars = 0;
    };
    for c in text.chars() {
        if c.is_alphanumeric() {
            let mut buf = [0u8; 4];
            for byte in c.encode_utf8(&mut buf).bytes() {
                word_hash = (word_hash ^ u32::from(byte)).wrapping_mul(0x0100_0193);
            }
            word_chars += 1;
        } else if !c.is_control() {
            flush_word(&mut out, &mut word_hash, &mut word_chars);
            match out.last_mut() {
                Some(last) if last.pitch_hz == 0.0 => last.chars += 1,
                _ => out.push(Segment {
                    pitch_hz: 0.0,
                    chars: 1,
                }),
            }
        }
    }
    flush_word(&mut out, &mut word_hash, &mut word_chars);
    out
}

/// Samples (mono, 16-bit) for `text` at `sample_rate_hz` and `speaking_rate` (1.0 = normal; 0
/// or out-of-range values are treated as 1.0, as Google does for 0).
#[must_use]
pub fn synthesize(
    text: &str,
    sample_rate_hz: u32,
    speaking_rate: f64,
    voice: ToneVoice,
) -> Vec<i16> {
    let rate = if (0.25..=4.0).contains(&speaking_rate) {
        speaking_rate as f32
    } else {
        1.0
    };
    let chars_per_second = if voice.chars_per_second > 0.0 {
        voice.chars_per_second
    } else {
        DEFAULT_CHARS_PER_SECOND
    };
    let samples_per_char = (sample_rate_hz as f32 / (chars_per_second * rate)).max(1.0);
    let fade = (sample_rate_hz * FADE_MS / 1000).max(1) as usize;
    let segments = segments(text);
    if segments.is_empty() {
        return Vec::new();
    }
    let mut out = Vec::new();
    for segment in &segments {
        let len = (segment.chars as f32 * samples_per_char) as usize;
        if segment.pitch_hz == 0.0 {
            out.resize(out.len() + len, 0);
            continue;
        }
        let step = TAU * segment.pitch_hz / sample_rate_hz as f32;
        for n in 0..len {
            let phase = step * n as f32;
            let value = phase.sin() + 0.5 * (2.0 * phase).sin() + 0.25 * (3.0 * phase).sin();
            let edge = n.min(len - 1 - n);
            let envelope = if edge < fade {
                edge as f32 / fade as f32
            } else {
                1.0
            };
            out.push((value / 1.75 * PEAK_AMPLITUDE * envelope) as i16);
        }
    }
    let min_len = (sample_rate_hz * MIN_DURATION_MS / 1000) as usize;
    if out.len() < min_len {
        out.resize(min_len, 0);
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn length_scales_with_text_and_rate() {
        let short = synthesize("hello there", 8000, 1.0, ToneVoice::default());
        let long = synthesize(
            "hello there, how can I help you today?",
            8000,
            1.0,
            ToneVoice::default(),
        );
        // 11 chars at 12 chars/s = 916 ms; 38 chars = 3166 ms (integer truncation per segment).
        assert!((7_300..=7_340).contains(&short.len()), "{}", short.len());
        assert!((25_300..=25_340).contains(&long.len()), "{}", long.len());
        let fast = synthesize("hello there", 8000, 2.0, ToneVoice::default());
        assert!((3_640..=3_680).contains(&fast.len()), "{}", fast.len());
    }

    #[test]
    fn output_is_deterministic_voiced_and_bounded() {
        let a = synthesize("שלום, מה שלומך?", 8000, 1.0, ToneVoice::default());
        let b = synthesize("שלום, מה שלומך?", 8000, 1.0, ToneVoice::default());
        assert_eq!(a, b);
        let mean_abs: f64 =
            a.iter().map(|s| f64::from(s.unsigned_abs())).sum::<f64>() / a.len() as f64;
        assert!(mean_abs > 1_500.0, "{mean_abs}");
        assert!(a.iter().all(|s| s.unsigned_abs() <= 8_000));
    }

    #[test]
    fn empty_or_blank_text_is_silent_or_empty() {
        assert!(synthesize("", 8000, 1.0, ToneVoice::default()).is_empty());
        let pause = synthesize(" . ", 8000, 1.0, ToneVoice::default());
        assert!(pause.iter().all(|s| *s == 0));
        // Three pause characters: 3 x 666 samples.
        assert_eq!(pause.len(), 2000);
    }
}

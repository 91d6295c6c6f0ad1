//! Voice activity detection on 20 ms frames of caller audio.

use std::fmt;

use crate::config::ConfigError;

/// Decides, frame by frame, whether the caller is making voice. The engine calls it once per
/// caller frame, in order. Replace the default [`EnergyVad`] with
/// [`crate::TurnEngine::with_vad`].
pub trait VoiceActivityDetector: fmt::Debug {
    /// Classifies one frame of headerless 8 kHz G.711 mu-law (Twilio sends 160 bytes = 20 ms).
    fn is_voiced_mulaw(&mut self, frame: &[u8]) -> bool;
    /// Classifies one frame of 8 kHz 16-bit linear PCM samples.
    fn is_voiced_pcm(&mut self, samples: &[i16]) -> bool;
}

/// Settings of [`EnergyVad`].
#[derive(Debug, Clone, PartialEq)]
pub struct EnergyVadConfig {
    /// How far above the tracked noise floor a frame's energy must be to count as voice
    /// (3.0..=30.0 dB, default 10).
    pub threshold_db: f32,
    /// Absolute minimum RMS (in 16-bit sample units) of a voiced frame, so a digitally silent
    /// or near-silent line never counts as voice (1.0..=8000.0, default 150, about -47 dBFS).
    pub min_speech_rms: f32,
    /// Window over which the noise floor is the quietest frame (500..=20000 ms, default 5000).
    /// Speech has pauses well inside this window, so the floor follows the line, not the voice.
    pub noise_window_ms: u32,
}

impl Default for EnergyVadConfig {
    fn default() -> Self {
        EnergyVadConfig {
            threshold_db: 10.0,
            min_speech_rms: 150.0,
            noise_window_ms: 5000,
        }
    }
}

impl EnergyVadConfig {
    pub(crate) fn validate(&self) -> Result<(), ConfigError> {
        let checks = [
            ("vad.threshold_db", self.threshold_db, 3.0, 30.0),
            ("vad.min_speech_rms", self.min_speech_rms, 1.0, 8000.0),
            (
                "vad.noise_window_ms",
                self.noise_window_ms as f32,
                500.0,
                20_000.0,
            ),
        ];
        for (field, value, min, max) in checks {
            if !(min..=max).contains(&value) {
                return Err(ConfigError::OutOfRange {
                    field,
                    value: f64::from(value),
                    min: f64::from(min),
                    max: f64::from(max),
                });
            }
        }
        Ok(())
    }
}

/// Number of blocks the noise window is divided into.
const NOISE_BLOCKS: usize = 10;
/// Frames assumed per second when sizing the noise blocks (20 ms frames).
const FRAMES_PER_SECOND: u32 = 50;
/// The floor never goes below this mean-square energy (RMS 4): even a clean digital line has
/// some noise, and a zero floor would make any click "voice" were it not for `min_speech_rms`.
const FLOOR_MIN_ENERGY: f32 = 16.0;

/// Adaptive energy detector: a frame is voiced when its mean-square energy is `threshold_db`
/// above the noise floor and above `min_speech_rms`. The noise floor is the quietest frame of
/// the last `noise_window_ms` (minimum statistics over ring blocks), so it tracks the line's
/// noise — phone lines are never digitally silent — and rises within one window when the line
/// gets noisier. Cost: one table lookup and add per sample.
pub struct EnergyVad {
    squares: [u32; 256],
    ratio: f32,
    min_energy: f32,
    block_frames: u32,
    frames_in_block: u32,
    block_min: f32,
    blocks: [f32; NOISE_BLOCKS],
    next_block: usize,
    window_min: f32,
}

impl fmt::Debug for EnergyVad {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("EnergyVad")
            .field("noise_floor_rms", &self.noise_floor_energy().sqrt())
            .field("threshold_ratio", &self.ratio)
            .field("min_energy", &self.min_energy)
            .finish_non_exhaustive()
    }
}

impl EnergyVad {
    /// Builds the detector. The config is checked by [`crate::TurnConfig::validate`]; values
    /// out of range are clamped here.
    #[must_use]
    pub fn new(config: &EnergyVadConfig) -> Self {
        let mut squares = [0u32; 256];
        for (code, square) in squares.iter_mut().enumerate() {
            // `code` ranges over 0..256, so the cast to u8 is lossless.
            let sample = i32::from(mulaw::decode_sample(code as u8));
            // |sample| <= 32_124, so the square fits in u32.
            *square = sample.unsigned_abs() * sample.unsigned_abs();
        }
        let threshold_db = config.threshold_db.clamp(3.0, 30.0);
        let min_rms = config.min_speech_rms.clamp(1.0, 8000.0);
        let window_frames = config.noise_window_ms.clamp(500, 20_000) * FRAMES_PER_SECOND / 1000;
        EnergyVad {
            squares,
            ratio: 10f32.powf(threshold_db / 10.0),
            min_energy: min_rms * min_rms,
            block_frames: (window_frames / NOISE_BLOCKS as u32).max(1),
            frames_in_block: 0,
            block_min: f32::INFINITY,
            blocks: [f32::INFINITY; NOISE_BLOCKS],
            next_block: 0,
            window_min: f32::INFINITY,
        }
    }

    /// The current noise floor as mean-square energy (infinite before the first frame).
    #[must_use]
    pub fn noise_floor_energy(&self) -> f32 {
        self.window_min.min(self.block_min)
    }

    fn classify_energy(&mut self, energy: f32) -> bool {
        let floor = self.noise_floor_energy().max(FLOOR_MIN_ENERGY);
        let voiced = energy >= self.min_energy && energy > floor * self.ratio;
        self.block_min = self.block_min.min(energy);
        self.frames_in_block += 1;
        if self.frames_in_block >= self.block_frames {
            self.blocks[self.next_block] = self.block_min;
            self.next_block = (self.next_block + 1) % NOISE_BLOCKS;
            self.window_min = self.blocks.iter().copied().fold(f32::INFINITY, f32::min);
            self.block_min = f32::INFINITY;
            self.frames_in_block = 0;
        }
        voiced
    }
}

impl VoiceActivityDetector for EnergyVad {
    fn is_voiced_mulaw(&mut self, frame: &[u8]) -> bool {
        if frame.is_empty() {
            return false;
        }
        let sum: u64 = frame
            .iter()
            .map(|&code| u64::from(self.squares[usize::from(code)]))
            .sum();
        self.classify_energy(sum as f32 / frame.len() as f32)
    }

    fn is_voiced_pcm(&mut self, samples: &[i16]) -> bool {
        if samples.is_empty() {
            return false;
        }
        let sum: u64 = samples
            .iter()
            .map(|&s| {
                let magnitude = u64::from(s.unsigned_abs());
                magnitude * magnitude
            })
            .sum();
        self.classify_energy(sum as f32 / samples.len() as f32)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn tone(amplitude: f32, phase: &mut f32) -> Vec<i16> {
        (0..160)
            .map(|_| {
                *phase += 2.0 * std::f32::consts::PI * 300.0 / 8000.0;
                (phase.sin() * amplitude) as i16
            })
            .collect()
    }

    fn hiss(amplitude: i32, state: &mut u32) -> Vec<i16> {
        (0..160)
            .map(|_| {
                *state = state.wrapping_mul(1_664_525).wrapping_add(1_013_904_223);
                ((*state >> 16) as i32 % (2 * amplitude + 1) - amplitude) as i16
            })
            .collect()
    }

    #[test]
    fn speech_over_line_noise_is_voiced_and_noise_is_not() {
        let mut vad = EnergyVad::new(&EnergyVadConfig::default());
        let (mut seed, mut phase) = (7u32, 0f32);
        for _ in 0..50 {
            let frame = mulaw::encode(&hiss(60, &mut seed));
            assert!(!vad.is_voiced_mulaw(&frame));
        }
        for _ in 0..20 {
            let frame = mulaw::encode(&tone(3000.0, &mut phase));
            assert!(vad.is_voiced_mulaw(&frame));
        }
        assert!(!vad.is_voiced_mulaw(&mulaw::encode(&hiss(60, &mut seed))));
    }

    #[test]
    fn floor_follows_a_line_that_gets_noisier() {
        let mut vad = EnergyVad::new(&EnergyVadConfig::default());
        let mut seed = 3u32;
        for _ in 0..50 {
            vad.is_voiced_pcm(&hiss(30, &mut seed));
        }
        // A much noisier line is first taken for voice, then becomes the floor within one window.
        let loud: Vec<bool> = (0..400)
            .map(|_| vad.is_voiced_pcm(&hiss(1500, &mut seed)))
            .collect();
        assert!(loud[0]);
        assert!(loud[300..].iter().all(|voiced| !voiced));
    }

    #[test]
    fn digital_silence_is_never_voiced() {
        let mut vad = EnergyVad::new(&EnergyVadConfig::default());
        for _ in 0..100 {
            assert!(!vad.is_voiced_mulaw(&[mulaw::SILENCE; 160]));
        }
        // A quiet click above the floor but below min_speech_rms is not voice either.
        assert!(!vad.is_voiced_pcm(&[100; 160]));
    }
}

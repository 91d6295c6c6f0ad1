//! The caller's audio: WAV files converted to Twilio's 8 kHz mono mu-law in 20 ms frames, or
//! generated speech-like tones, pre-encoded to base64 once so a load run never re-encodes.

use std::path::Path;

use base64::Engine as _;
use base64::engine::general_purpose::STANDARD;
use mulaw::wav::WavFormat;

/// Mean absolute amplitude (0..32768) at or above which a 20 ms frame counts as voiced; the
/// same threshold the speech stand-in segments with.
pub const VOICED_THRESHOLD: u32 = 500;

/// Why a caller clip could not be prepared.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum AudioError {
    /// The file could not be read.
    #[error("cannot read the caller audio {path}: {source}")]
    Unreadable {
        /// The file.
        path: String,
        /// The I/O error.
        source: std::io::Error,
    },
    /// Not a WAV file the codec can parse.
    #[error("{path} is not a usable WAV file: {source}")]
    NotWav {
        /// The file.
        path: String,
        /// The parser's error.
        source: mulaw::Error,
    },
    /// A WAV encoding or rate this tool does not convert.
    #[error(
        "{path} is {format}; callsim converts 16-bit PCM or mu-law at 8, 16, 24 or 48 kHz. \
         Convert it first, e.g. `sox {path} -r 8000 -c 1 -e mu-law caller.wav`"
    )]
    Unsupported {
        /// The file.
        path: String,
        /// What the file holds.
        format: String,
    },
    /// No audio in the file.
    #[error("{path} holds no audio samples")]
    Empty {
        /// The file.
        path: String,
    },
}

/// One caller utterance (or any stretch of caller audio), ready to stream.
#[derive(Clone)]
pub struct CallerClip {
    name: String,
    frames: Vec<[u8; mulaw::FRAME_BYTES]>,
    voiced: Vec<bool>,
    payloads_base64: Vec<String>,
}

impl std::fmt::Debug for CallerClip {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("CallerClip")
            .field("name", &self.name)
            .field("frames", &self.frames.len())
            .field("voiced_frames", &self.voiced.iter().filter(|v| **v).count())
            .finish()
    }
}

impl CallerClip {
    /// A clip from raw 8 kHz mu-law (the last frame padded with silence).
    #[must_use]
    pub fn from_mulaw(name: &str, mulaw_bytes: &[u8]) -> Self {
        let mut framer = mulaw::Framer::new();
        framer.push(mulaw_bytes);
        let mut frames: Vec<[u8; mulaw::FRAME_BYTES]> =
            std::iter::from_fn(|| framer.pop_frame()).collect();
        frames.extend(framer.flush());
        let voiced = frames.iter().map(|frame| is_voiced(frame)).collect();
        let payloads_base64 = frames.iter().map(|frame| STANDARD.encode(frame)).collect();
        Self {
            name: name.to_owned(),
            frames,
            voiced,
            payloads_base64,
        }
    }

    /// A clip from 8 kHz mono 16-bit samples.
    #[must_use]
    pub fn from_samples(name: &str, samples: &[i16]) -> Self {
        Self::from_mulaw(name, &mulaw::encode(samples))
    }

    /// Speech-like audio for `text` (the speech stand-in's deterministic tone voice, ~12
    /// characters per second), so no recording is needed.
    #[must_use]
    pub fn tone(text: &str) -> Self {
        let samples = speech_standin::tone::synthesize(
            text,
            mulaw::SAMPLE_RATE_HZ,
            1.0,
            speech_standin::ToneVoice::default(),
        );
        Self::from_samples(&format!("tone:{text}"), &samples)
    }

    /// Reads and converts a WAV file (16-bit PCM or mu-law, mono or multi-channel, 8/16/24/48
    /// kHz) to 8 kHz mono mu-law.
    ///
    /// # Errors
    /// [`AudioError`] naming the file and what to do.
    pub fn from_wav_file(path: &Path) -> Result<Self, AudioError> {
        let shown = path.display().to_string();
        let bytes = std::fs::read(path).map_err(|source| AudioError::Unreadable {
            path: shown.clone(),
            source,
        })?;
        Self::from_wav_bytes(&shown, &bytes)
    }

    /// Converts WAV bytes (see [`Self::from_wav_file`]); `name` is used in messages.
    ///
    /// # Errors
    /// [`AudioError`].
    pub fn from_wav_bytes(name: &str, bytes: &[u8]) -> Result<Self, AudioError> {
        let (info, data) = mulaw::wav::parse(bytes).map_err(|source| AudioError::NotWav {
            path: name.to_owned(),
            source,
        })?;
        let interleaved = match info.format {
            WavFormat::MuLaw => mulaw::decode(data),
            // An odd trailing byte of a truncated file is dropped.
            WavFormat::Pcm16 => {
                mulaw::pcm16le_to_samples(&data[..data.len() & !1]).map_err(|source| {
                    AudioError::NotWav {
                        path: name.to_owned(),
                        source,
                    }
                })?
            }
            _ => {
                return Err(AudioError::Unsupported {
                    path: name.to_owned(),
                    format: info.to_string(),
                });
            }
        };
        let channels = usize::from(info.channels.max(1));
        let mono: Vec<i16> = interleaved
            .chunks_exact(channels)
            .map(|frame| {
                let sum: i32 = frame.iter().map(|s| i32::from(*s)).sum();
                // The mean of i16 values fits in i16.
                (sum / channels as i32) as i16
            })
            .collect();
        if mono.is_empty() {
            return Err(AudioError::Empty {
                path: name.to_owned(),
            });
        }
        let samples = if info.sample_rate == mulaw::SAMPLE_RATE_HZ {
            mono
        } else {
            let mut resampler =
                mulaw::resample::Resampler::new(info.sample_rate, mulaw::SAMPLE_RATE_HZ).map_err(
                    |_| AudioError::Unsupported {
                        path: name.to_owned(),
                        format: info.to_string(),
                    },
                )?;
            let mut out = Vec::with_capacity(mono.len());
            resampler.process(&mono, &mut out);
            // Flush the filter's delay line with silence so the tail is not cut.
            let tail = vec![0i16; resampler.delay_input_samples() * 2];
            resampler.process(&tail, &mut out);
            out
        };
        Ok(Self::from_samples(name, &samples))
    }

    /// The clip's name (file path or `tone:TEXT`).
    #[must_use]
    pub fn name(&self) -> &str {
        &self.name
    }

    /// Number of 20 ms frames.
    #[must_use]
    pub fn len(&self) -> usize {
        self.frames.len()
    }

    /// True for a clip without frames.
    #[must_use]
    pub fn is_empty(&self) -> bool {
        self.frames.is_empty()
    }

    /// Duration in milliseconds.
    #[must_use]
    pub fn duration_ms(&self) -> u64 {
        self.frames.len() as u64 * u64::from(mulaw::FRAME_MS)
    }

    /// Frame `index`'s base64 payload and whether it is voiced.
    #[must_use]
    pub fn frame(&self, index: usize) -> Option<(&str, bool)> {
        Some((
            self.payloads_base64.get(index)?.as_str(),
            *self.voiced.get(index)?,
        ))
    }

    /// Frame `index`'s raw mu-law bytes.
    #[must_use]
    pub fn frame_bytes(&self, index: usize) -> Option<&[u8; mulaw::FRAME_BYTES]> {
        self.frames.get(index)
    }
}

/// True when a mu-law frame's mean absolute amplitude reaches [`VOICED_THRESHOLD`].
#[must_use]
pub fn is_voiced(frame: &[u8]) -> bool {
    if frame.is_empty() {
        return false;
    }
    let sum: u64 = frame
        .iter()
        .map(|&byte| u64::from(mulaw::decode_sample(byte).unsigned_abs()))
        .sum();
    sum / frame.len() as u64 >= u64::from(VOICED_THRESHOLD)
}

/// The base64 of one frame of mu-law silence.
#[must_use]
pub fn silence_payload_base64() -> String {
    STANDARD.encode([mulaw::SILENCE; mulaw::FRAME_BYTES])
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn tone_clip_is_voiced_and_sized_by_text() {
        let clip = CallerClip::tone("What are your opening hours?");
        // 28 characters at 12 per second = 2.33 s = 117 frames (last one padded).
        assert_eq!(clip.len(), 117);
        let voiced = (0..clip.len())
            .filter(|i| clip.frame(*i).unwrap().1)
            .count();
        assert!(voiced > 80, "{voiced}");
        assert!(!is_voiced(&[mulaw::SILENCE; 160]));
    }

    #[test]
    fn wav_at_16khz_stereo_pcm_is_converted() {
        let tone = speech_standin::tone::synthesize("hello there", 16_000, 1.0, Default::default());
        let stereo: Vec<i16> = tone.iter().flat_map(|s| [*s, *s]).collect();
        let wav = mulaw::wav::write_pcm16(&stereo, 16_000, 2);
        let clip = CallerClip::from_wav_bytes("t.wav", &wav).unwrap();
        // 14_664 samples at 16 kHz = 916 ms, plus the flushed filter tail: 46..48 frames.
        assert!((46..=48).contains(&clip.len()), "{}", clip.len());
        let mulaw_wav = mulaw::wav::write_mulaw(&mulaw::encode(&tone[..8000]), 8000, 1);
        assert_eq!(
            CallerClip::from_wav_bytes("m.wav", &mulaw_wav)
                .unwrap()
                .len(),
            50
        );
    }

    #[test]
    fn unsupported_rates_and_garbage_are_explained() {
        let wav = mulaw::wav::write_pcm16(&[0; 100], 11_025, 1);
        let error = CallerClip::from_wav_bytes("odd.wav", &wav).unwrap_err();
        assert!(error.to_string().contains("sox odd.wav"), "{error}");
        assert!(matches!(
            CallerClip::from_wav_bytes("x", b"nope"),
            Err(AudioError::NotWav { .. })
        ));
    }
}

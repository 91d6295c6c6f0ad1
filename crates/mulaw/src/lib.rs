//! Telephony audio primitives for crmd: G.711 mu-law, 20 ms framing, WAV, resampling, Opus.
//!
//! What it does:
//! - [`decode`]/[`encode`] (and the allocation-free [`decode_into`]/[`encode_into`]): mu-law <->
//!   16-bit PCM, bit-exact with CPython's `audioop` (golden vectors in `tests/data/`).
//! - [`Framer`]: arbitrary chunks in, exact 20 ms / 160-byte frames out, silence-padded flush;
//!   [`duration_ms`] is the single place that turns mu-law byte counts into milliseconds.
//! - [`wav`]: RIFF/WAVE parsing that walks chunks to find `data` (TTS answers arrive with a
//!   header that must never reach Twilio) and minimal WAV writers.
//! - [`resample`]: band-limited streaming resampling between 8, 16, 24 and 48 kHz.
//! - [`opus`]: 20 ms Opus frame encoder/decoder (libopus via `audiopus`); [`ogg`]: a streaming
//!   Ogg Opus writer, a stereo call recorder (caller left, agent right) and the encoder of a
//!   spooled recording; [`stereo`]: the two sides of a call on one timeline, and the
//!   stereo mu-law WAV spool that records a call without encoding it.
//!
//! What it deliberately does not do: no async, no networking, no clocks, no files — the only I/O
//! is the caller-supplied [`std::io::Write`]/[`std::io::Read`] of the Ogg and WAV streams. It knows nothing about
//! Twilio, WebSockets or base64; those live in `twilio-stream` above it. All bad input (odd PCM
//! byte counts, truncated or non-mu-law WAV, unsupported rates) is a typed [`Error`], never a
//! panic.

mod codec;
mod error;
mod framer;
pub mod ogg;
pub mod opus;
pub mod resample;
pub mod stereo;
pub mod wav;

pub use codec::{
    decode, decode_into, decode_sample, encode, encode_into, encode_sample, pcm16le_to_samples,
    samples_to_pcm16le,
};
pub use error::Error;
pub use framer::Framer;

/// Sample rate of Twilio Media Streams audio (G.711 mu-law).
pub const SAMPLE_RATE_HZ: u32 = 8000;
/// Duration of one outbound media frame.
pub const FRAME_MS: u32 = 20;
/// Bytes in one 20 ms mu-law frame at 8 kHz mono (one byte per sample).
pub const FRAME_BYTES: usize = (SAMPLE_RATE_HZ * FRAME_MS / 1000) as usize;
/// The mu-law code for digital silence (decodes to 0).
pub const SILENCE: u8 = 0xFF;

const BYTES_PER_MS: u64 = SAMPLE_RATE_HZ as u64 / 1000;

/// Playback duration of `mulaw_bytes` bytes of 8 kHz mono mu-law, in whole milliseconds
/// (rounded down; 8 bytes per ms). This is the one place for `TTS_LEN_ms` math.
#[must_use]
pub fn duration_ms(mulaw_bytes: usize) -> u64 {
    mulaw_bytes as u64 / BYTES_PER_MS
}

/// Number of 20 ms frames a [`Framer`] emits for `mulaw_bytes` bytes, counting the padded
/// last frame.
#[must_use]
pub fn frames_needed(mulaw_bytes: usize) -> usize {
    mulaw_bytes.div_ceil(FRAME_BYTES)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn frame_constants_agree() {
        assert_eq!(FRAME_BYTES, 160);
        assert_eq!(duration_ms(FRAME_BYTES), u64::from(FRAME_MS));
        assert_eq!(duration_ms(13_600), 1_700);
        assert_eq!(duration_ms(7), 0);
        assert_eq!(frames_needed(0), 0);
        assert_eq!(frames_needed(161), 2);
    }
}

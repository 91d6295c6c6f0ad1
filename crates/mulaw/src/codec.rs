//! G.711 mu-law <-> 16-bit linear PCM, bit-exact with CPython's `audioop.ulaw2lin` /
//! `audioop.lin2ulaw` (the classic Sun/CCITT reference implementation).
//!
//! Single samples and encoding are table driven (tables computed at compile time from the
//! reference algorithm: no start-up cost, no hand-copied constants). Batch decoding evaluates
//! the same formula branch-free so it vectorises, with the SIMD level chosen at run time.

use std::sync::LazyLock;

use crate::Error;

const BIAS: i16 = 0x84;
/// Magnitude clip of the 14-bit encoder input (8159 = 0x1FDF).
const CLIP_14BIT: i16 = 8159;
const SEGMENT_ENDS_14BIT: [i16; 8] = [0x3F, 0x7F, 0xFF, 0x1FF, 0x3FF, 0x7FF, 0xFFF, 0x1FFF];

/// Reference decoder: one mu-law byte to a 16-bit sample.
const fn reference_decode(byte: u8) -> i16 {
    let inverted = !byte;
    let mut magnitude = (((inverted & 0x0F) as i16) << 3) + BIAS;
    magnitude <<= (inverted & 0x70) >> 4;
    if inverted & 0x80 != 0 {
        BIAS - magnitude
    } else {
        magnitude - BIAS
    }
}

/// Reference encoder on the 14-bit two's complement value `sample >> 2`, exactly as
/// CPython's `st_14linear2ulaw` (note: the sign is taken *after* the arithmetic shift, so
/// e.g. -1 and -4 encode as the negative zero-ish code 0x7F, not 0xFF).
const fn reference_encode_14bit(pcm14: i16) -> u8 {
    let (mut magnitude, mask) = if pcm14 < 0 {
        (-pcm14, 0x7F_u8)
    } else {
        (pcm14, 0xFF_u8)
    };
    if magnitude > CLIP_14BIT {
        magnitude = CLIP_14BIT;
    }
    magnitude += BIAS >> 2;
    let mut segment = 0;
    while segment < 8 && magnitude > SEGMENT_ENDS_14BIT[segment] {
        segment += 1;
    }
    if segment >= 8 {
        return 0x7F ^ mask;
    }
    let code = ((segment as u8) << 4) | ((magnitude >> (segment + 1)) as u8 & 0x0F);
    code ^ mask
}

static DECODE_TABLE: [i16; 256] = {
    let mut table = [0_i16; 256];
    let mut byte = 0;
    while byte < 256 {
        table[byte] = reference_decode(byte as u8);
        byte += 1;
    }
    table
};

/// The reference decoder restated branch-free on 16-bit values (a per-lane variable shift
/// instead of a table lookup), so the batch loops vectorise: with AVX-512BW that is 32 samples
/// per instruction. Bit-exact with [`reference_decode`] (tested over all 256 codes).
#[inline(always)]
fn decode_branch_free(byte: u8) -> i16 {
    let inverted = u16::from(!byte);
    let magnitude = (((inverted & 0x0F) << 3) + BIAS as u16) << ((inverted >> 4) & 0x07);
    let biased = magnitude as i16 - BIAS;
    let sign_mask = ((inverted >> 7) as i16).wrapping_neg(); // 0 or -1
    (biased ^ sign_mask).wrapping_sub(sign_mask)
}

/// CPU features (AVX-512 / AVX2 / baseline) probed once per process; [`pulp`] compiles the
/// loops below once per feature level and picks the best one at run time, without `unsafe`
/// in this crate.
static SIMD_LEVEL: LazyLock<pulp::Arch> = LazyLock::new(pulp::Arch::new);

struct DecodeIntoSlice<'a> {
    src: &'a [u8],
    dst: &'a mut [i16],
}

impl pulp::WithSimd for DecodeIntoSlice<'_> {
    type Output = ();

    #[inline(always)]
    fn with_simd<S: pulp::Simd>(self, _simd: S) {
        for (out, &byte) in self.dst.iter_mut().zip(self.src) {
            *out = decode_branch_free(byte);
        }
    }
}

struct DecodeToVec<'a> {
    src: &'a [u8],
    out: &'a mut Vec<i16>,
}

impl pulp::WithSimd for DecodeToVec<'_> {
    type Output = ();

    #[inline(always)]
    fn with_simd<S: pulp::Simd>(self, _simd: S) {
        self.out
            .extend(self.src.iter().map(|&byte| decode_branch_free(byte)));
    }
}

/// Indexed by the 14-bit two's complement value `(sample >> 2) & 0x3FFF` (16 KiB, fits L1).
static ENCODE_TABLE: [u8; 1 << 14] = {
    let mut table = [0_u8; 1 << 14];
    let mut index = 0;
    while index < (1 << 14) {
        // Sign-extend the 14-bit index back to i16.
        let pcm14 = ((index as i16) << 2) >> 2;
        table[index] = reference_encode_14bit(pcm14);
        index += 1;
    }
    table
};

#[inline(always)]
fn encode_table_index(sample: i16) -> usize {
    ((sample >> 2) as u16 & 0x3FFF) as usize
}

/// Decodes one mu-law byte to a 16-bit linear sample.
#[inline]
#[must_use]
pub fn decode_sample(byte: u8) -> i16 {
    DECODE_TABLE[byte as usize]
}

/// Encodes one 16-bit linear sample to mu-law.
#[inline]
#[must_use]
pub fn encode_sample(sample: i16) -> u8 {
    // The index is masked to 14 bits, so it is always within the 16,384-entry table.
    ENCODE_TABLE[encode_table_index(sample)]
}

/// Decodes `src` into `dst`, which must have exactly `src.len()` slots.
///
/// # Errors
/// [`Error::LengthMismatch`] if the lengths differ (nothing is written).
pub fn decode_into(src: &[u8], dst: &mut [i16]) -> Result<(), Error> {
    if src.len() != dst.len() {
        return Err(Error::LengthMismatch {
            input_len: src.len(),
            output_len: dst.len(),
        });
    }
    SIMD_LEVEL.dispatch(DecodeIntoSlice { src, dst });
    Ok(())
}

/// Encodes `src` into `dst`, which must have exactly `src.len()` slots.
///
/// # Errors
/// [`Error::LengthMismatch`] if the lengths differ (nothing is written).
pub fn encode_into(src: &[i16], dst: &mut [u8]) -> Result<(), Error> {
    if src.len() != dst.len() {
        return Err(Error::LengthMismatch {
            input_len: src.len(),
            output_len: dst.len(),
        });
    }
    for (out, &sample) in dst.iter_mut().zip(src) {
        *out = ENCODE_TABLE[encode_table_index(sample)];
    }
    Ok(())
}

/// Decodes a whole buffer into a new vector.
#[must_use]
pub fn decode(src: &[u8]) -> Vec<i16> {
    let mut out = Vec::with_capacity(src.len());
    SIMD_LEVEL.dispatch(DecodeToVec { src, out: &mut out });
    out
}

/// Encodes a whole buffer into a new vector.
#[must_use]
pub fn encode(src: &[i16]) -> Vec<u8> {
    src.iter()
        .map(|&sample| ENCODE_TABLE[encode_table_index(sample)])
        .collect()
}

/// Interprets raw little-endian 16-bit PCM bytes (e.g. a LINEAR16 TTS answer) as samples.
///
/// # Errors
/// [`Error::OddPcmByteCount`] if `bytes.len()` is odd.
pub fn pcm16le_to_samples(bytes: &[u8]) -> Result<Vec<i16>, Error> {
    if !bytes.len().is_multiple_of(2) {
        return Err(Error::OddPcmByteCount {
            byte_len: bytes.len(),
        });
    }
    Ok(bytes
        .chunks_exact(2)
        .map(|pair| i16::from_le_bytes([pair[0], pair[1]]))
        .collect())
}

/// Serialises samples as little-endian 16-bit PCM bytes.
#[must_use]
pub fn samples_to_pcm16le(samples: &[i16]) -> Vec<u8> {
    samples
        .iter()
        .flat_map(|sample| sample.to_le_bytes())
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Every code at every position of buffers long and short enough to exercise vector bodies
    /// and scalar tails, decoded at the given SIMD level.
    fn check_batch_decode_at(level: impl pulp::Simd, level_name: &str) {
        let pattern: Vec<u8> = (0..=255_u8).chain((0..=255_u8).rev()).collect();
        for offset in [0, 1, 3, 7, 31, 63] {
            for len in [0, 1, 15, 31, 32, 33, 64, 127, 257, 511] {
                let src: Vec<u8> = pattern
                    .iter()
                    .cycle()
                    .skip(offset)
                    .take(len)
                    .copied()
                    .collect();
                let mut dst = vec![0_i16; len];
                level.vectorize(DecodeIntoSlice {
                    src: &src,
                    dst: &mut dst,
                });
                let mut appended = vec![7_i16];
                level.vectorize(DecodeToVec {
                    src: &src,
                    out: &mut appended,
                });
                for (index, &byte) in src.iter().enumerate() {
                    let want = reference_decode(byte);
                    assert_eq!(dst[index], want, "{level_name} decode_into {byte:#04x}");
                    assert_eq!(appended[index + 1], want, "{level_name} decode {byte:#04x}");
                }
            }
        }
    }

    #[test]
    fn branch_free_batch_decode_is_bit_exact_at_every_simd_level() {
        for byte in 0..=255_u8 {
            assert_eq!(decode_branch_free(byte), reference_decode(byte));
        }
        check_batch_decode_at(pulp::Scalar::new(), "scalar");
        #[cfg(target_arch = "x86_64")]
        {
            match pulp::x86::V3::try_new() {
                Some(v3) => check_batch_decode_at(v3, "AVX2"),
                None => println!("CPU lacks AVX2: that level was not exercised"),
            }
            match pulp::x86::V4::try_new() {
                Some(v4) => check_batch_decode_at(v4, "AVX-512"),
                None => println!("CPU lacks AVX-512: that level was not exercised"),
            }
        }
    }

    #[test]
    fn silence_byte_decodes_to_zero_and_zero_encodes_to_silence() {
        assert_eq!(decode_sample(crate::SILENCE), 0);
        assert_eq!(encode_sample(0), crate::SILENCE);
    }

    #[test]
    fn extremes_round_trip_to_the_largest_codes() {
        assert_eq!(decode_sample(0x00), -32124);
        assert_eq!(decode_sample(0x80), 32124);
        assert_eq!(encode_sample(i16::MAX), 0x80);
        assert_eq!(encode_sample(i16::MIN), 0x00);
    }
}

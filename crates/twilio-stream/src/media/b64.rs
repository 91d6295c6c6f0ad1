//! Table-driven standard-alphabet base64 for the per-frame hot paths.
//!
//! - [`encode_into`] appends the padded encoding of a byte slice to a `String` (two output
//!   characters per table lookup), byte-identical to `base64::engine::general_purpose::STANDARD`.
//! - [`decode_until_quote`] decodes a JSON string's base64 content in place of scanning it: it
//!   stops at the first byte outside the alphabet and accepts only what the `base64` crate's
//!   padding-indifferent decoder (see `wire::PAYLOAD_BASE64`) accepts, with the same output.
//!   Anything else (an escape, `=` in the middle, a lone trailing symbol, non-zero trailing bits,
//!   non-canonical padding) makes it return `None` so the caller can fall back to the reference
//!   path and report exactly the same error as before.

use base64::Engine as _;
use base64::engine::general_purpose::STANDARD;

/// The standard base64 alphabet (RFC 4648 section 4).
const ALPHABET: &[u8; 64] = b"ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789+/";

/// Marker bit of an invalid entry in the decode tables (outside the 24 value bits).
const INVALID: u32 = 1 << 31;

/// Two output characters for every 12-bit input value, in memory order when stored
/// little-endian (the first character in the low byte).
static ENCODE_PAIRS: [u16; 4096] = {
    let mut table = [0u16; 4096];
    let mut index = 0;
    while index < 4096 {
        let first = ALPHABET[index >> 6] as u16;
        let second = ALPHABET[index & 63] as u16;
        table[index] = first | (second << 8);
        index += 1;
    }
    table
};

/// `DECODE[k][c]`: the 6-bit value of character `c` shifted to position `k` of a 4-character
/// group (`k = 0` is the most significant), or [`INVALID`] when `c` is not in the alphabet.
static DECODE: [[u32; 256]; 4] = {
    let mut table = [[INVALID; 256]; 4];
    let mut value = 0;
    while value < 64 {
        let c = ALPHABET[value] as usize;
        let v = value as u32;
        table[0][c] = v << 18;
        table[1][c] = v << 12;
        table[2][c] = v << 6;
        table[3][c] = v;
        value += 1;
    }
    table
};

/// Input bytes encoded per stack chunk (a multiple of 3 and of 12, so only the last chunk pads;
/// 192 bytes covers a 20 ms frame in one chunk).
const ENCODE_CHUNK_IN: usize = 192;
/// Output characters per full stack chunk.
const ENCODE_CHUNK_OUT: usize = ENCODE_CHUNK_IN / 3 * 4;

/// Length of the padded standard encoding of `len` bytes.
pub(crate) const fn encoded_len(len: usize) -> usize {
    len.div_ceil(3) * 4
}

/// Append the padded standard base64 encoding of `input` to `out`.
pub(crate) fn encode_into(out: &mut String, input: &[u8]) {
    out.reserve(encoded_len(input.len()));
    let mut buffer = [0u8; ENCODE_CHUNK_OUT];
    for chunk in input.chunks(ENCODE_CHUNK_IN) {
        let written = encode_chunk(chunk, &mut buffer);
        match buffer.get(..written).map(std::str::from_utf8) {
            Some(Ok(text)) => out.push_str(text),
            // Unreachable: the buffer only ever holds alphabet characters. Stay correct anyway.
            _ => STANDARD.encode_string(chunk, out),
        }
    }
}

/// The eight characters of the six bytes in the high 48 bits of `word`, as a little-endian
/// word.
fn encode_six(word: u64) -> u64 {
    let pair = |index: u64| u64::from(ENCODE_PAIRS[(index & 0xfff) as usize]);
    pair(word >> 52)
        | (pair(word >> 40) << 16)
        | (pair(word >> 28) << 32)
        | (pair(word >> 16) << 48)
}

/// Encode one chunk (at most [`ENCODE_CHUNK_IN`] bytes) into `buffer`; returns the characters
/// written.
fn encode_chunk(input: &[u8], buffer: &mut [u8; ENCODE_CHUNK_OUT]) -> usize {
    let mut read = 0;
    let mut written = 0;
    // Twelve input bytes -> sixteen characters, from two overlapping 8-byte loads.
    while let (Some(window), Some(slot)) = (
        input.get(read..).and_then(<[u8]>::first_chunk::<14>),
        buffer
            .get_mut(written..)
            .and_then(<[u8]>::first_chunk_mut::<16>),
    ) {
        let (Some(first), Some(second)) = (window.first_chunk::<8>(), window.last_chunk::<8>())
        else {
            break;
        };
        let (low, high) = slot.split_at_mut(8);
        low.copy_from_slice(&encode_six(u64::from_be_bytes(*first)).to_le_bytes());
        high.copy_from_slice(&encode_six(u64::from_be_bytes(*second)).to_le_bytes());
        read += 12;
        written += 16;
    }
    // Six input bytes -> eight characters while eight bytes can be loaded.
    while let (Some(window), Some(slot)) = (
        input.get(read..).and_then(<[u8]>::first_chunk::<8>),
        buffer
            .get_mut(written..)
            .and_then(<[u8]>::first_chunk_mut::<8>),
    ) {
        *slot = encode_six(u64::from_be_bytes(*window)).to_le_bytes();
        read += 6;
        written += 8;
    }
    // Whole 3-byte groups left.
    while let (Some(group), Some(slot)) = (
        input.get(read..).and_then(<[u8]>::first_chunk::<3>),
        buffer
            .get_mut(written..)
            .and_then(<[u8]>::first_chunk_mut::<4>),
    ) {
        let value = (u32::from(group[0]) << 16) | (u32::from(group[1]) << 8) | u32::from(group[2]);
        let chars = u32::from(ENCODE_PAIRS[(value >> 12) as usize])
            | (u32::from(ENCODE_PAIRS[(value & 0xfff) as usize]) << 16);
        *slot = chars.to_le_bytes();
        read += 3;
        written += 4;
    }
    // One or two trailing bytes, padded with `=`.
    let tail: Option<[u8; 4]> = match input.get(read..) {
        Some(&[a]) => Some([
            ALPHABET[usize::from(a >> 2)],
            ALPHABET[usize::from((a & 0x03) << 4)],
            b'=',
            b'=',
        ]),
        Some(&[a, b]) => Some([
            ALPHABET[usize::from(a >> 2)],
            ALPHABET[usize::from(((a & 0x03) << 4) | (b >> 4))],
            ALPHABET[usize::from((b & 0x0f) << 2)],
            b'=',
        ]),
        _ => None,
    };
    if let Some(chars) = tail
        && let Some(slot) = buffer.get_mut(written..written + 4)
    {
        slot.copy_from_slice(&chars);
        written += 4;
    }
    written
}

/// Decode the base64 text starting at `text[start]` up to the closing `"` of its JSON string,
/// into `out`.
///
/// Returns the index just past the closing quote and the number of bytes written, or `None`
/// when the content is not plain, canonical base64 followed by `"` (see the module docs), or
/// when `out` is too small. `out` needs 3 bytes of slack beyond the decoded length: bytes are
/// stored in whole words and the excess is overwritten or ignored.
pub(crate) fn decode_until_quote(
    text: &[u8],
    start: usize,
    out: &mut [u8],
) -> Option<(usize, usize)> {
    let [d0, d1, d2, d3] = &DECODE;
    let quad = |q: &[u8; 4]| {
        d0[usize::from(q[0])]
            | d1[usize::from(q[1])]
            | d2[usize::from(q[2])]
            | d3[usize::from(q[3])]
    };
    let mut read = start;
    let mut written = 0;
    // Sixteen characters -> twelve bytes (stored as two overlapping words) while all sixteen
    // are in the alphabet.
    while let (Some(window), Some(slot)) = (
        text.get(read..).and_then(<[u8]>::first_chunk::<16>),
        out.get_mut(written..)
            .and_then(<[u8]>::first_chunk_mut::<14>),
    ) {
        let [a, b, c, d, e, f, g, h, i, j, k, l, m, n, o, p] = *window;
        let (first, second) = (quad(&[a, b, c, d]), quad(&[e, f, g, h]));
        let (third, fourth) = (quad(&[i, j, k, l]), quad(&[m, n, o, p]));
        if (first | second | third | fourth) & INVALID != 0 {
            break;
        }
        let low = ((u64::from(first) << 40) | (u64::from(second) << 16)).to_be_bytes();
        let high = ((u64::from(third) << 40) | (u64::from(fourth) << 16)).to_be_bytes();
        // The second word overwrites the two unused bytes of the first.
        let (front, _) = slot.split_at_mut(8);
        front.copy_from_slice(&low);
        let (_, back) = slot.split_at_mut(6);
        back.copy_from_slice(&high);
        read += 16;
        written += 12;
    }
    // Then four characters at a time.
    while let Some(group) = text.get(read..).and_then(<[u8]>::first_chunk::<4>) {
        let value = quad(group);
        if value & INVALID != 0 {
            break;
        }
        *out.get_mut(written..)?.first_chunk_mut::<4>()? = (value << 8).to_be_bytes();
        read += 4;
        written += 3;
    }
    // Then the closing quote, or a last group of 2 or 3 symbols (one or two bytes) with its
    // canonical padding or none. The bits past the last byte must be zero.
    let valid = |value: u32| value & INVALID == 0;
    let (value, bytes, rest) = match text.get(read..)? {
        [b'"', ..] => return Some((read + 1, written)),
        [a, b, rest @ ..] => {
            let value = d0[usize::from(*a)] | d1[usize::from(*b)];
            match rest {
                [b'=', b'=', b'"', ..] => (value, 1, 4),
                [b'"', ..] => (value, 1, 2),
                [c, tail @ ..] if valid(d2[usize::from(*c)]) => {
                    let value = value | d2[usize::from(*c)];
                    match tail {
                        [b'=', b'"', ..] => (value, 2, 4),
                        [b'"', ..] => (value, 2, 3),
                        _ => return None,
                    }
                }
                _ => return None,
            }
        }
        _ => return None,
    };
    let unused_bits = if bytes == 1 { 0x00_ffff } else { 0x00_00ff };
    if !valid(value) || value & unused_bits != 0 {
        return None;
    }
    *out.get_mut(written..)?.first_chunk_mut::<4>()? = (value << 8).to_be_bytes();
    Some((read + rest + 1, written + bytes))
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]

    use base64::Engine as _;
    use base64::engine::general_purpose::STANDARD;
    use proptest::prelude::*;

    use super::{decode_until_quote, encode_into};
    use crate::media::wire::PAYLOAD_BASE64;

    fn decode(content: &str) -> Option<Vec<u8>> {
        let text = format!("{content}\"}}");
        let mut out = vec![0u8; content.len() + 8];
        let (end, len) = decode_until_quote(text.as_bytes(), 0, &mut out)?;
        assert_eq!(
            end,
            content.len() + 1,
            "{content:?}: end past the closing quote"
        );
        out.truncate(len);
        Some(out)
    }

    #[test]
    fn decodes_like_the_base64_crate_on_edge_cases() {
        for content in [
            "",
            "AA==",
            "AA",
            "AAA=",
            "AAA",
            "AAAA",
            "//8=",
            "//8",
            "/w==",
            "/w",
            "+/+/",
            "AAAAAAAA",
            "AAAAAAAAAA==",
            "QUJDREVGR0g=",
            "QUJDREVGR0hJ",
        ] {
            assert_eq!(
                decode(content),
                Some(PAYLOAD_BASE64.decode(content).unwrap()),
                "{content:?}"
            );
        }
    }

    #[test]
    fn declines_what_the_reference_rejects_or_might_report_differently() {
        for content in [
            "A",
            "AAAAA",
            "AB==",
            "AAB=",
            "A===",
            "AA=",
            "AA===",
            "AAAA=",
            "AAAA==",
            "=AAA",
            "AA=A",
            "AA\\/",
            "AA\n",
            "***",
            "AAAA AAAA",
            "AAAAAAAAA",
            "AAAAAAA=A",
        ] {
            assert_eq!(decode(content), None, "{content:?}");
        }
        // Unterminated: no closing quote.
        let mut out = [0u8; 32];
        assert_eq!(decode_until_quote(b"AAAA", 0, &mut out), None);
        assert_eq!(decode_until_quote(b"AAAAAAAAAAAA", 0, &mut out), None);
        // Output too small.
        assert_eq!(decode_until_quote(b"AAAAAAAA\"", 0, &mut [0u8; 4]), None);
    }

    proptest! {
        #[test]
        fn encode_matches_the_base64_crate(bytes in proptest::collection::vec(any::<u8>(), 0..1200)) {
            let mut out = String::from("prefix:");
            encode_into(&mut out, &bytes);
            prop_assert_eq!(&out[7..], STANDARD.encode(&bytes));
        }

        #[test]
        fn decode_round_trips_padded_and_unpadded(bytes in proptest::collection::vec(any::<u8>(), 0..700)) {
            let padded = STANDARD.encode(&bytes);
            prop_assert_eq!(decode(&padded), Some(bytes.clone()));
            let unpadded = padded.trim_end_matches('=');
            prop_assert_eq!(decode(unpadded), Some(bytes));
        }

        #[test]
        fn decode_agrees_with_the_base64_crate_whenever_it_accepts(
            content in "[A-Za-z0-9+/=\\\\ \"]{0,40}",
        ) {
            // Up to the first quote, as a JSON string would end there.
            let content = content.split('"').next().unwrap_or_default();
            if let Some(decoded) = decode(content) {
                prop_assert_eq!(Some(decoded), PAYLOAD_BASE64.decode(content).ok(), "{:?}", content);
            }
        }
    }
}

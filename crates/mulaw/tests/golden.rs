//! Bit-exactness against CPython 3.11 `audioop` over every possible input.
//! Vectors: `tests/data/generate_golden.py` (see its docstring for the layout).
#![allow(clippy::unwrap_used)]

use std::path::PathBuf;

fn data_file(name: &str) -> Vec<u8> {
    let path = PathBuf::from(env!("CARGO_MANIFEST_DIR"))
        .join("tests/data")
        .join(name);
    std::fs::read(&path).unwrap_or_else(|error| panic!("reading {}: {error}", path.display()))
}

#[test]
fn decode_matches_audioop_for_all_256_bytes() {
    let golden = data_file("ulaw_decode_all.i16le");
    assert_eq!(golden.len(), 512);
    let expected: Vec<i16> = golden
        .chunks_exact(2)
        .map(|pair| i16::from_le_bytes([pair[0], pair[1]]))
        .collect();
    let every_byte: Vec<u8> = (0..=255).collect();

    for (byte, &want) in every_byte.iter().zip(&expected) {
        assert_eq!(
            mulaw::decode_sample(*byte),
            want,
            "decode_sample({byte:#04x})"
        );
    }
    assert_eq!(mulaw::decode(&every_byte), expected);
    let mut out = vec![0_i16; 256];
    mulaw::decode_into(&every_byte, &mut out).unwrap();
    assert_eq!(out, expected);
}

#[test]
fn encode_matches_audioop_for_all_65536_samples() {
    let expected = data_file("ulaw_encode_all.u8");
    assert_eq!(expected.len(), 65_536);
    let every_sample: Vec<i16> = (i16::MIN..=i16::MAX).collect();

    let mismatches: Vec<(i16, u8, u8)> = every_sample
        .iter()
        .zip(&expected)
        .map(|(&sample, &want)| (sample, mulaw::encode_sample(sample), want))
        .filter(|(_, got, want)| got != want)
        .collect();
    assert!(
        mismatches.is_empty(),
        "{} mismatches, first: {:?}",
        mismatches.len(),
        &mismatches[..mismatches.len().min(5)]
    );
    assert_eq!(mulaw::encode(&every_sample), expected);
    let mut out = vec![0_u8; every_sample.len()];
    mulaw::encode_into(&every_sample, &mut out).unwrap();
    assert_eq!(out, expected);
}

#[test]
fn the_negative_small_samples_that_naive_encoders_get_wrong_encode_like_audioop() {
    // audioop shifts to 14 bits *before* taking the magnitude (arithmetic shift floors), so -1
    // becomes 14-bit -1 and encodes to 0x7E; encoders that negate first get 0x7F here.
    let expected = data_file("ulaw_encode_all.u8");
    for sample in [-1_i16, -2, -3, -4, -5, -8, -100, -32768] {
        let index = (i32::from(sample) + 32768) as usize;
        assert_eq!(
            mulaw::encode_sample(sample),
            expected[index],
            "encode_sample({sample})"
        );
    }
    assert_eq!(mulaw::encode_sample(-1), 0x7E);
    assert_eq!(mulaw::encode_sample(0), 0xFF);
}

#[test]
fn decode_then_encode_is_identity_on_every_code_except_negative_zero() {
    for byte in 0..=255_u8 {
        let round_trip = mulaw::encode_sample(mulaw::decode_sample(byte));
        // 0x7F decodes to 0, which encodes as positive zero 0xFF.
        let want = if byte == 0x7F { 0xFF } else { byte };
        assert_eq!(round_trip, want, "byte {byte:#04x}");
    }
}

#[test]
fn batch_apis_reject_mismatched_lengths_without_writing() {
    let mut short = [7_i16; 3];
    let error = mulaw::decode_into(&[0xFF; 4], &mut short).unwrap_err();
    assert!(matches!(
        error,
        mulaw::Error::LengthMismatch {
            input_len: 4,
            output_len: 3
        }
    ));
    assert_eq!(short, [7; 3]);
    let mut long = [9_u8; 5];
    let error = mulaw::encode_into(&[0; 4], &mut long).unwrap_err();
    assert!(matches!(
        error,
        mulaw::Error::LengthMismatch {
            input_len: 4,
            output_len: 5
        }
    ));
    assert_eq!(long, [9; 5]);
    assert!(error.to_string().contains("size the output slice"));
}

#[test]
fn pcm16le_bytes_convert_and_odd_counts_are_rejected() {
    let samples = [0_i16, 1, -1, i16::MAX, i16::MIN, 0x1234];
    let bytes = mulaw::samples_to_pcm16le(&samples);
    assert_eq!(&bytes[..4], &[0, 0, 1, 0]);
    assert_eq!(mulaw::pcm16le_to_samples(&bytes).unwrap(), samples);
    let error = mulaw::pcm16le_to_samples(&bytes[..5]).unwrap_err();
    assert!(matches!(
        error,
        mulaw::Error::OddPcmByteCount { byte_len: 5 }
    ));
    assert!(mulaw::pcm16le_to_samples(&[]).unwrap().is_empty());
}

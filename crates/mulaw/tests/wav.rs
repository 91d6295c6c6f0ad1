//! WAV parsing walks chunks, rejects truncation and wrong formats with typed errors.
#![allow(clippy::unwrap_used)]

use mulaw::Error;
use mulaw::wav::{self, WavFormat, WavInfo};

fn chunk(id: &[u8; 4], body: &[u8]) -> Vec<u8> {
    let mut out = id.to_vec();
    out.extend_from_slice(&(body.len() as u32).to_le_bytes());
    out.extend_from_slice(body);
    if body.len() % 2 == 1 {
        out.push(0);
    }
    out
}

fn fmt_body(tag: u16, channels: u16, rate: u32, bits: u16) -> Vec<u8> {
    let block_align = channels * bits / 8;
    let mut body = Vec::new();
    body.extend_from_slice(&tag.to_le_bytes());
    body.extend_from_slice(&channels.to_le_bytes());
    body.extend_from_slice(&rate.to_le_bytes());
    body.extend_from_slice(&(rate * u32::from(block_align)).to_le_bytes());
    body.extend_from_slice(&block_align.to_le_bytes());
    body.extend_from_slice(&bits.to_le_bytes());
    body
}

fn riff(chunks: &[Vec<u8>]) -> Vec<u8> {
    let body: Vec<u8> = chunks.concat();
    let mut out = b"RIFF".to_vec();
    out.extend_from_slice(&(4 + body.len() as u32).to_le_bytes());
    out.extend_from_slice(b"WAVE");
    out.extend_from_slice(&body);
    out
}

const MULAW_8K_MONO: WavInfo = WavInfo {
    format: WavFormat::MuLaw,
    sample_rate: 8000,
    channels: 1,
    bits_per_sample: 8,
};

#[test]
fn finds_data_after_list_and_fact_chunks_and_odd_sized_padding() {
    let payload: Vec<u8> = (0..=200).collect();
    let mut fmt = fmt_body(7, 1, 8000, 8);
    fmt.extend_from_slice(&0_u16.to_le_bytes()); // cbSize: an 18-byte fmt chunk
    let file = riff(&[
        chunk(b"LIST", b"INFOISFT\x05\x00\x00\x00Lavf\x00"), // odd-sized body, then a pad byte
        chunk(b"fmt ", &fmt),
        chunk(b"fact", &201_u32.to_le_bytes()),
        chunk(b"data", &payload),
    ]);
    assert_ne!(
        file.len() - payload.len(),
        44 + 1,
        "not the classic 44-byte layout"
    );
    let (info, data) = wav::parse(&file).unwrap();
    assert_eq!(info, MULAW_8K_MONO);
    assert_eq!(data, payload.as_slice());
    assert_eq!(
        wav::mulaw_8k_mono_payload(&file).unwrap(),
        payload.as_slice()
    );
}

#[test]
fn writers_round_trip_through_the_parser() {
    let mulaw_samples: Vec<u8> = (0..161).map(|i| i as u8).collect();
    let file = wav::write_mulaw(&mulaw_samples, 8000, 1);
    assert_eq!(
        wav::mulaw_8k_mono_payload(&file).unwrap(),
        mulaw_samples.as_slice()
    );

    let pcm: Vec<i16> = (0..480).map(|i| (i * 37 - 9000) as i16).collect();
    let file = wav::write_pcm16(&pcm, 24_000, 2);
    let (info, data) = wav::parse(&file).unwrap();
    assert_eq!(
        info,
        WavInfo {
            format: WavFormat::Pcm16,
            sample_rate: 24_000,
            channels: 2,
            bits_per_sample: 16
        }
    );
    assert_eq!(mulaw::pcm16le_to_samples(data).unwrap(), pcm);
}

#[test]
fn wave_format_extensible_resolves_to_its_sub_format() {
    let mut fmt = fmt_body(0xFFFE, 1, 16_000, 16);
    fmt.extend_from_slice(&22_u16.to_le_bytes()); // cbSize
    fmt.extend_from_slice(&16_u16.to_le_bytes()); // valid bits
    fmt.extend_from_slice(&4_u32.to_le_bytes()); // channel mask
    fmt.extend_from_slice(&1_u16.to_le_bytes()); // sub-format GUID starts with the PCM tag
    fmt.extend_from_slice(&[
        0x00, 0x00, 0x00, 0x00, 0x10, 0x00, 0x80, 0x00, 0x00, 0xAA, 0x00, 0x38, 0x9B, 0x71,
    ]);
    let file = riff(&[chunk(b"fmt ", &fmt), chunk(b"data", &[1, 0, 2, 0])]);
    let (info, _) = wav::parse(&file).unwrap();
    assert_eq!(info.format, WavFormat::Pcm16);
    assert_eq!(info.sample_rate, 16_000);
}

#[test]
fn truncated_files_are_typed_errors_at_every_cut() {
    let file = wav::write_mulaw(&[0x55; 400], 8000, 1);
    let data_header_end = file.len() - 400;
    for cut in 0..data_header_end {
        let error = wav::parse(&file[..cut]).unwrap_err();
        assert!(
            matches!(
                error,
                Error::WavTruncated { .. } | Error::WavMissingChunk { .. }
            ),
            "cut at {cut}: {error:?}"
        );
    }
    // Cut inside the data chunk: it announces 400 bytes that are not there.
    let error = wav::parse(&file[..file.len() - 1]).unwrap_err();
    assert!(matches!(
        error,
        Error::WavTruncated {
            what: "`data` chunk",
            needed: 400,
            ..
        }
    ));
    assert!(error.to_string().contains("truncated"), "{error}");
}

#[test]
fn streaming_data_size_means_to_the_end_of_the_file() {
    let mut file = wav::write_mulaw(&[1, 2, 3, 4], 8000, 1);
    let data_size_at = file.len() - 4 - 4;
    file[data_size_at..data_size_at + 4].copy_from_slice(&u32::MAX.to_le_bytes());
    file.extend_from_slice(&[5, 6]);
    assert_eq!(
        wav::mulaw_8k_mono_payload(&file).unwrap(),
        &[1, 2, 3, 4, 5, 6]
    );
}

#[test]
fn non_mulaw_wav_is_rejected_when_mulaw_was_asked_for() {
    let cases = [
        (
            wav::write_pcm16(&[0; 80], 8000, 1),
            "16-bit PCM 8000 Hz mono",
        ),
        (
            wav::write_mulaw(&[0; 80], 16_000, 1),
            "mu-law 16000 Hz mono",
        ),
        (wav::write_mulaw(&[0; 80], 8000, 2), "mu-law 8000 Hz stereo"),
        (
            riff(&[
                chunk(b"fmt ", &fmt_body(6, 1, 8000, 8)),
                chunk(b"data", &[0; 8]),
            ]),
            "A-law 8000 Hz mono",
        ),
        (
            riff(&[
                chunk(b"fmt ", &fmt_body(1, 1, 8000, 8)),
                chunk(b"data", &[0; 8]),
            ]),
            "8-bit PCM 8000 Hz mono",
        ),
    ];
    for (file, described) in cases {
        let error = wav::mulaw_8k_mono_payload(&file).unwrap_err();
        let Error::WavFormatMismatch { found, .. } = &error else {
            panic!("expected a format mismatch for {described}, got {error:?}");
        };
        assert_eq!(found, described);
        assert!(
            error.to_string().contains("MULAW"),
            "operator hint: {error}"
        );
    }
}

#[test]
fn malformed_headers_are_typed_errors() {
    assert!(matches!(
        wav::parse(b"RIFX\0\0\0\0WAVE").unwrap_err(),
        Error::NotWav { .. }
    ));
    assert!(matches!(
        wav::parse(b"RIFF\0\0\0\0AVI ").unwrap_err(),
        Error::NotWav { .. }
    ));
    let no_fmt = riff(&[chunk(b"data", &[0; 4])]);
    assert!(matches!(
        wav::parse(&no_fmt).unwrap_err(),
        Error::WavMissingChunk { chunk: "fmt " }
    ));
    let no_data = riff(&[chunk(b"fmt ", &fmt_body(7, 1, 8000, 8))]);
    assert!(matches!(
        wav::parse(&no_data).unwrap_err(),
        Error::WavMissingChunk { chunk: "data" }
    ));
    let short_fmt = riff(&[chunk(b"fmt ", &[7, 0, 1, 0]), chunk(b"data", &[])]);
    assert!(matches!(
        wav::parse(&short_fmt).unwrap_err(),
        Error::WavBadFormatChunk { .. }
    ));
    let zero_channels = riff(&[
        chunk(b"fmt ", &fmt_body(7, 0, 8000, 8)),
        chunk(b"data", &[]),
    ]);
    assert!(matches!(
        wav::parse(&zero_channels).unwrap_err(),
        Error::WavBadFormatChunk { .. }
    ));
    let huge_chunk = {
        let mut file = riff(&[chunk(b"LIST", &[0; 4])]);
        file[16..20].copy_from_slice(&u32::MAX.to_le_bytes());
        file
    };
    assert!(matches!(
        wav::parse(&huge_chunk).unwrap_err(),
        Error::WavTruncated { .. }
    ));
}

#[test]
fn arbitrary_bytes_never_panic() {
    // A deterministic xorshift stream of garbage, some of it with a valid RIFF prefix.
    let mut state = 0x2545_F491_4F6C_DD1D_u64;
    for round in 0..2_000 {
        let len = round % 97;
        let mut bytes: Vec<u8> = (0..len)
            .map(|_| {
                state ^= state << 13;
                state ^= state >> 7;
                state ^= state << 17;
                state as u8
            })
            .collect();
        if round % 2 == 0 && len >= 12 {
            bytes[..4].copy_from_slice(b"RIFF");
            bytes[8..12].copy_from_slice(b"WAVE");
        }
        // Either a typed error or a data slice that lies inside the input.
        if let Ok((_, data)) = wav::parse(&bytes) {
            let start = data.as_ptr() as usize - bytes.as_ptr() as usize;
            assert!(start + data.len() <= bytes.len());
        }
        if let Ok(data) = wav::mulaw_8k_mono_payload(&bytes) {
            assert!(data.len() < bytes.len());
        }
    }
}

/// A WAV whose writer stopped mid-file (the process died: no `finish`, lengths unknown, a
/// last stereo frame cut after one byte) is taken up again and finished with the real lengths.
#[test]
fn an_unfinished_wav_is_resumed_and_finished() {
    let audio: Vec<u8> = (0..320_u32).map(|i| (i % 251) as u8).collect();
    let mut disk = std::io::Cursor::new(Vec::new());
    {
        // Never finished, as on disk when the process died.
        let mut writer = wav::MulawWavWriter::new(&mut disk, 8000, 2).unwrap();
        writer.write(&audio).unwrap();
        writer.write(&[0x7f]).unwrap(); // half of the next stereo sample
    }
    let on_disk = disk.into_inner();
    let (info, declared) = wav::read_header(&mut on_disk.as_slice()).unwrap();
    assert_eq!(declared, None, "an unfinished file declares no length");

    let resumed = wav::MulawWavWriter::resume(std::io::Cursor::new(on_disk)).unwrap();
    assert_eq!(
        resumed.data_bytes(),
        320,
        "the cut sample frame is not counted"
    );
    let bytes = resumed.finish().unwrap().into_inner();
    let (parsed, data) = wav::parse(&bytes).unwrap();
    assert_eq!(parsed, info);
    assert_eq!(data, audio.as_slice());
    assert_eq!(
        wav::read_header(&mut bytes.as_slice()).unwrap().1,
        Some(320)
    );
}

/// Only mu-law can be resumed: a PCM file is refused with a typed error.
#[test]
fn resuming_a_pcm_wav_is_refused() {
    let pcm = wav::write_pcm16(&[0; 160], 8000, 1);
    let err = wav::MulawWavWriter::resume(std::io::Cursor::new(pcm)).unwrap_err();
    assert!(matches!(err, Error::WavFormatMismatch { .. }), "{err}");
}

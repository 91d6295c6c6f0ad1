//! RIFF/WAVE parsing and minimal writers.
//!
//! [`parse`] walks the chunk list to find `fmt ` and `data` (it never assumes the classic
//! 44-byte header: Google TTS, `sox` and friends add `LIST`, `fact` or odd-sized chunks).
//! Use [`mulaw_8k_mono_payload`] before sending TTS audio to Twilio: header bytes in an
//! outbound media payload are a protocol error and an audible click.

use std::fmt;

use crate::Error;

const WAVE_FORMAT_PCM: u16 = 0x0001;
const WAVE_FORMAT_ALAW: u16 = 0x0006;
const WAVE_FORMAT_MULAW: u16 = 0x0007;
const WAVE_FORMAT_EXTENSIBLE: u16 = 0xFFFE;
/// Streaming writers that do not know the final length put this in the `data` size field.
const UNKNOWN_DATA_SIZE: u32 = u32::MAX;

/// Sample encoding declared by the `fmt ` chunk (`WAVE_FORMAT_EXTENSIBLE` is resolved to its
/// sub-format).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum WavFormat {
    /// G.711 mu-law (format tag 7).
    MuLaw,
    /// Linear PCM, 16 bits per sample (format tag 1).
    Pcm16,
    /// G.711 A-law (format tag 6).
    ALaw,
    /// Anything else, with its format tag (linear PCM at a depth other than 16 bits is
    /// `Other(1)`; see [`WavInfo::bits_per_sample`]).
    Other(u16),
}

/// What a WAV file's `fmt ` chunk says.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub struct WavInfo {
    /// Sample encoding.
    pub format: WavFormat,
    /// Samples per second per channel.
    pub sample_rate: u32,
    /// Interleaved channels.
    pub channels: u16,
    /// Bits per sample as declared.
    pub bits_per_sample: u16,
}

impl fmt::Display for WavInfo {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self.format {
            WavFormat::MuLaw => f.write_str("mu-law")?,
            WavFormat::ALaw => f.write_str("A-law")?,
            WavFormat::Pcm16 => f.write_str("16-bit PCM")?,
            WavFormat::Other(WAVE_FORMAT_PCM) => write!(f, "{}-bit PCM", self.bits_per_sample)?,
            WavFormat::Other(tag) => write!(f, "format tag {tag:#06x}")?,
        }
        let layout = match self.channels {
            1 => "mono".to_owned(),
            2 => "stereo".to_owned(),
            n => format!("{n} channels"),
        };
        write!(f, " {} Hz {layout}", self.sample_rate)
    }
}

fn read_bytes<'a>(
    bytes: &'a [u8],
    offset: usize,
    len: usize,
    what: &'static str,
) -> Result<&'a [u8], Error> {
    offset
        .checked_add(len)
        .and_then(|end| bytes.get(offset..end))
        .ok_or(Error::WavTruncated {
            what,
            needed: len,
            offset,
            available: bytes.len(),
        })
}

fn u16_at(bytes: &[u8], offset: usize) -> u16 {
    u16::from_le_bytes([bytes[offset], bytes[offset + 1]])
}

fn u32_at(bytes: &[u8], offset: usize) -> u32 {
    u32::from_le_bytes([
        bytes[offset],
        bytes[offset + 1],
        bytes[offset + 2],
        bytes[offset + 3],
    ])
}

fn parse_format_chunk(body: &[u8]) -> Result<WavInfo, Error> {
    if body.len() < 16 {
        return Err(Error::WavBadFormatChunk {
            reason: "shorter than the 16 mandatory bytes",
        });
    }
    // Indexing below stays within the 16 bytes checked above (or the 40 checked for
    // WAVE_FORMAT_EXTENSIBLE).
    let mut tag = u16_at(body, 0);
    let channels = u16_at(body, 2);
    let sample_rate = u32_at(body, 4);
    let bits_per_sample = u16_at(body, 14);
    if tag == WAVE_FORMAT_EXTENSIBLE {
        if body.len() < 40 {
            return Err(Error::WavBadFormatChunk {
                reason: "WAVE_FORMAT_EXTENSIBLE without its 24-byte extension",
            });
        }
        // The sub-format GUID starts with the classic format tag.
        tag = u16_at(body, 24);
    }
    if channels == 0 {
        return Err(Error::WavBadFormatChunk {
            reason: "zero channels",
        });
    }
    if sample_rate == 0 {
        return Err(Error::WavBadFormatChunk {
            reason: "zero sample rate",
        });
    }
    let format = match (tag, bits_per_sample) {
        (WAVE_FORMAT_MULAW, _) => WavFormat::MuLaw,
        (WAVE_FORMAT_ALAW, _) => WavFormat::ALaw,
        (WAVE_FORMAT_PCM, 16) => WavFormat::Pcm16,
        (other, _) => WavFormat::Other(other),
    };
    Ok(WavInfo {
        format,
        sample_rate,
        channels,
        bits_per_sample,
    })
}

/// Parses a RIFF/WAVE file and returns its format and the bytes of its `data` chunk.
///
/// Chunks are walked in order (with RIFF's pad byte after odd-sized chunks); unknown chunks
/// such as `LIST` or `fact` are skipped. A `data` size of `0xFFFFFFFF` (streaming writers)
/// means "to the end of the file". The RIFF size field is not trusted.
///
/// # Errors
/// [`Error::NotWav`], [`Error::WavTruncated`] (a chunk announces more bytes than exist),
/// [`Error::WavMissingChunk`], [`Error::WavBadFormatChunk`].
pub fn parse(bytes: &[u8]) -> Result<(WavInfo, &[u8]), Error> {
    let header = read_bytes(bytes, 0, 12, "RIFF header")?;
    if &header[0..4] != b"RIFF" {
        return Err(Error::NotWav {
            reason: "does not start with `RIFF`",
        });
    }
    if &header[8..12] != b"WAVE" {
        return Err(Error::NotWav {
            reason: "RIFF form type is not `WAVE`",
        });
    }
    let mut info = None;
    let mut offset = 12;
    while offset < bytes.len() {
        let chunk_header = read_bytes(bytes, offset, 8, "chunk header")?;
        let id = &chunk_header[0..4];
        let declared_len = u32_at(chunk_header, 4);
        let body_offset = offset + 8;
        if id == b"data" {
            let info = info.ok_or(Error::WavMissingChunk { chunk: "fmt " })?;
            let data = if declared_len == UNKNOWN_DATA_SIZE {
                &bytes[body_offset..]
            } else {
                read_bytes(bytes, body_offset, declared_len as usize, "`data` chunk")?
            };
            return Ok((info, data));
        }
        let body = read_bytes(bytes, body_offset, declared_len as usize, "chunk body")?;
        if id == b"fmt " {
            info = Some(parse_format_chunk(body)?);
        }
        // Chunks are word aligned: odd-sized bodies are followed by one pad byte.
        offset = body_offset + body.len() + body.len() % 2;
    }
    Err(Error::WavMissingChunk {
        chunk: if info.is_some() { "data" } else { "fmt " },
    })
}

/// The mu-law samples of an 8 kHz mono mu-law WAV, header stripped: ready for Twilio.
///
/// # Errors
/// Everything [`parse`] returns, plus [`Error::WavFormatMismatch`] if the file is valid but
/// not 8 kHz mono 8-bit mu-law.
pub fn mulaw_8k_mono_payload(bytes: &[u8]) -> Result<&[u8], Error> {
    let (info, data) = parse(bytes)?;
    let wanted = WavInfo {
        format: WavFormat::MuLaw,
        sample_rate: crate::SAMPLE_RATE_HZ,
        channels: 1,
        bits_per_sample: 8,
    };
    if info != wanted {
        return Err(Error::WavFormatMismatch {
            expected: "mu-law 8000 Hz mono (8 bits per sample)",
            found: info.to_string(),
        });
    }
    Ok(data)
}

fn write_wav(
    format_tag: u16,
    bits_per_sample: u16,
    sample_rate: u32,
    channels: u16,
    data: &[u8],
) -> Vec<u8> {
    // Header fields saturate instead of overflowing for absurd channel counts or > 4 GiB data.
    let block_align =
        u16::try_from(u32::from(channels) * u32::from(bits_per_sample) / 8).unwrap_or(u16::MAX);
    let byte_rate = sample_rate.saturating_mul(u32::from(block_align));
    let is_pcm = format_tag == WAVE_FORMAT_PCM;
    // Non-PCM formats carry a 2-byte cbSize and a `fact` chunk (sample frames per channel).
    let fmt_len: u32 = if is_pcm { 16 } else { 18 };
    let fact_len: u32 = if is_pcm { 0 } else { 12 };
    let data_len = u32::try_from(data.len()).unwrap_or(u32::MAX);
    let pad = data.len() % 2;
    let riff_len = (4 + (8 + fmt_len) + fact_len + 8 + pad as u32).saturating_add(data_len);
    let mut out = Vec::with_capacity(8 + 4 + 26 + 12 + 8 + data.len() + pad);
    out.extend_from_slice(b"RIFF");
    out.extend_from_slice(&riff_len.to_le_bytes());
    out.extend_from_slice(b"WAVE");
    out.extend_from_slice(b"fmt ");
    out.extend_from_slice(&fmt_len.to_le_bytes());
    out.extend_from_slice(&format_tag.to_le_bytes());
    out.extend_from_slice(&channels.to_le_bytes());
    out.extend_from_slice(&sample_rate.to_le_bytes());
    out.extend_from_slice(&byte_rate.to_le_bytes());
    out.extend_from_slice(&block_align.to_le_bytes());
    out.extend_from_slice(&bits_per_sample.to_le_bytes());
    if !is_pcm {
        out.extend_from_slice(&0_u16.to_le_bytes());
        out.extend_from_slice(b"fact");
        out.extend_from_slice(&4_u32.to_le_bytes());
        let frames = data_len / u32::from(block_align.max(1));
        out.extend_from_slice(&frames.to_le_bytes());
    }
    out.extend_from_slice(b"data");
    out.extend_from_slice(&data_len.to_le_bytes());
    out.extend_from_slice(data);
    if pad == 1 {
        out.push(0);
    }
    out
}

/// A mu-law WAV file holding `samples` (interleaved if `channels > 1`).
#[must_use]
pub fn write_mulaw(samples: &[u8], sample_rate: u32, channels: u16) -> Vec<u8> {
    write_wav(WAVE_FORMAT_MULAW, 8, sample_rate, channels, samples)
}

/// A 16-bit PCM WAV file holding `samples` (interleaved if `channels > 1`).
#[must_use]
pub fn write_pcm16(samples: &[i16], sample_rate: u32, channels: u16) -> Vec<u8> {
    write_wav(
        WAVE_FORMAT_PCM,
        16,
        sample_rate,
        channels,
        &crate::samples_to_pcm16le(samples),
    )
}

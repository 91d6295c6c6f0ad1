//! RIFF/WAVE parsing and minimal writers.
//!
//! [`parse`] walks the chunk list to find `fmt ` and `data` (it never assumes the classic
//! 44-byte header: Google TTS, `sox` and friends add `LIST`, `fact` or odd-sized chunks).
//! Use [`mulaw_8k_mono_payload`] before sending TTS audio to Twilio: header bytes in an
//! outbound media payload are a protocol error and an audible click.

use std::fmt;
use std::io::{Read, Seek, SeekFrom, Write};

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

/// Checks the 12 bytes that open a RIFF/WAVE file.
fn parse_riff_start(header: &[u8]) -> Result<(), Error> {
    if header.get(0..4) != Some(b"RIFF".as_slice()) {
        return Err(Error::NotWav {
            reason: "does not start with `RIFF`",
        });
    }
    if header.get(8..12) != Some(b"WAVE".as_slice()) {
        return Err(Error::NotWav {
            reason: "RIFF form type is not `WAVE`",
        });
    }
    Ok(())
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
    parse_riff_start(read_bytes(bytes, 0, 12, "RIFF header")?)?;
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

/// The RIFF header up to and including the `data` chunk's size field, for `data_len` bytes of
/// audio (`UNKNOWN_DATA_SIZE` while streaming).
fn header(
    format_tag: u16,
    bits_per_sample: u16,
    sample_rate: u32,
    channels: u16,
    data_len: u32,
) -> Vec<u8> {
    // Header fields saturate instead of overflowing for absurd channel counts or > 4 GiB data.
    let block_align =
        u16::try_from(u32::from(channels) * u32::from(bits_per_sample) / 8).unwrap_or(u16::MAX);
    let byte_rate = sample_rate.saturating_mul(u32::from(block_align));
    let is_pcm = format_tag == WAVE_FORMAT_PCM;
    // Non-PCM formats carry a 2-byte cbSize and a `fact` chunk (sample frames per channel).
    let fmt_len: u32 = if is_pcm { 16 } else { 18 };
    let fact_len: u32 = if is_pcm { 0 } else { 12 };
    let pad = data_len % 2;
    let riff_len = (4 + (8 + fmt_len) + fact_len + 8 + pad).saturating_add(data_len);
    let mut out = Vec::with_capacity(12 + 26 + 12 + 8);
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
        let frames = if data_len == UNKNOWN_DATA_SIZE {
            0
        } else {
            data_len / u32::from(block_align.max(1))
        };
        out.extend_from_slice(&frames.to_le_bytes());
    }
    out.extend_from_slice(b"data");
    out.extend_from_slice(&data_len.to_le_bytes());
    out
}

fn write_wav(
    format_tag: u16,
    bits_per_sample: u16,
    sample_rate: u32,
    channels: u16,
    data: &[u8],
) -> Vec<u8> {
    let data_len = u32::try_from(data.len()).unwrap_or(u32::MAX - 1);
    let mut out = header(format_tag, bits_per_sample, sample_rate, channels, data_len);
    out.reserve_exact(data.len() + 1);
    out.extend_from_slice(data);
    if data.len() % 2 == 1 {
        out.push(0);
    }
    out
}

/// Writes a mu-law WAV to a file-like sink as the audio arrives.
///
/// The header goes out first with the `data` length unknown (`0xFFFFFFFF`, which [`parse`],
/// `sox` and `ffmpeg` read as "to the end of the file"), so a file cut short still plays;
/// [`MulawWavWriter::finish`] seeks back and writes the real lengths. Data past 4 GiB keeps
/// the unknown length.
pub struct MulawWavWriter<W: Write + Seek> {
    sink: W,
    sample_rate: u32,
    channels: u16,
    data_bytes: u64,
}

impl<W: Write + Seek> std::fmt::Debug for MulawWavWriter<W> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("MulawWavWriter")
            .field("sample_rate", &self.sample_rate)
            .field("channels", &self.channels)
            .field("data_bytes", &self.data_bytes)
            .finish_non_exhaustive()
    }
}

impl<W: Write + Seek> MulawWavWriter<W> {
    /// Writes the header (length unknown) to `sink`.
    ///
    /// # Errors
    /// [`Error::Io`].
    pub fn new(mut sink: W, sample_rate: u32, channels: u16) -> Result<Self, Error> {
        sink.write_all(&header(
            WAVE_FORMAT_MULAW,
            8,
            sample_rate,
            channels,
            UNKNOWN_DATA_SIZE,
        ))?;
        Ok(Self {
            sink,
            sample_rate,
            channels,
            data_bytes: 0,
        })
    }

    /// Appends mu-law samples (interleaved when stereo).
    ///
    /// # Errors
    /// [`Error::Io`].
    pub fn write(&mut self, mulaw: &[u8]) -> Result<(), Error> {
        self.sink.write_all(mulaw)?;
        self.data_bytes += mulaw.len() as u64;
        Ok(())
    }

    /// Audio bytes written so far.
    #[must_use]
    pub fn data_bytes(&self) -> u64 {
        self.data_bytes
    }

    /// Pads an odd-sized `data` chunk, writes the real lengths into the header and returns
    /// the sink (positioned at the end of the file, flushed).
    ///
    /// # Errors
    /// [`Error::Io`].
    pub fn finish(mut self) -> Result<W, Error> {
        if self.data_bytes % 2 == 1 {
            self.sink.write_all(&[0])?;
        }
        let end = self.sink.stream_position()?;
        let data_len = u32::try_from(self.data_bytes)
            .ok()
            .filter(|&len| len < UNKNOWN_DATA_SIZE)
            .unwrap_or(UNKNOWN_DATA_SIZE);
        self.sink.seek(SeekFrom::Start(0))?;
        self.sink.write_all(&header(
            WAVE_FORMAT_MULAW,
            8,
            self.sample_rate,
            self.channels,
            data_len,
        ))?;
        self.sink.seek(SeekFrom::Start(end))?;
        self.sink.flush()?;
        Ok(self.sink)
    }
}

impl<W: Read + Write + Seek> MulawWavWriter<W> {
    /// Takes up a mu-law WAV a writer started but never finished (its process stopped mid-file):
    /// the audio already in it is kept, later [`MulawWavWriter::write`]s append to it, and
    /// [`MulawWavWriter::finish`] writes the real lengths. A last partial sample frame (a write
    /// cut short) is dropped from the count, so a stereo file stays aligned.
    ///
    /// # Errors
    /// [`Error::WavFormatMismatch`] for anything but 8-bit mu-law, the header errors of
    /// [`read_header`], [`Error::Io`].
    pub fn resume(mut sink: W) -> Result<Self, Error> {
        sink.seek(SeekFrom::Start(0))?;
        let (info, _declared) = read_header(&mut sink)?;
        if info.format != WavFormat::MuLaw || info.bits_per_sample != 8 || info.channels == 0 {
            return Err(Error::WavFormatMismatch {
                expected: "8-bit mu-law",
                found: info.to_string(),
            });
        }
        let data_start = sink.stream_position()?;
        let end = sink.seek(SeekFrom::End(0))?;
        let written = end.saturating_sub(data_start);
        let data_bytes = written - written % u64::from(info.channels);
        sink.seek(SeekFrom::Start(data_start + data_bytes))?;
        Ok(Self {
            sink,
            sample_rate: info.sample_rate,
            channels: info.channels,
            data_bytes,
        })
    }
}

/// Reads a WAV header from a stream, up to the start of the `data` chunk's bytes: the format,
/// and the declared `data` length (`None` when unknown, meaning "to the end"). Chunks before
/// `data` are skipped as [`parse`] does; the stream is left at the first audio byte.
///
/// # Errors
/// [`Error::NotWav`], [`Error::WavTruncated`] (the stream ends inside the header),
/// [`Error::WavMissingChunk`], [`Error::WavBadFormatChunk`], [`Error::Io`].
pub fn read_header<R: Read>(reader: &mut R) -> Result<(WavInfo, Option<u32>), Error> {
    /// Longest chunk before `data` read into memory (`fmt ` is 16-40 bytes; `LIST` a few KB).
    const MAX_CHUNK_BEFORE_DATA: u32 = 1 << 20;
    let mut offset = 0;
    let mut riff = [0_u8; 12];
    read_exact_or_truncated(reader, &mut riff, &mut offset, "RIFF header")?;
    // The same checks as `parse`, on the first 12 bytes.
    parse_riff_start(&riff)?;
    let mut info = None;
    loop {
        let mut chunk_header = [0_u8; 8];
        if let Err(Error::WavTruncated { .. }) =
            read_exact_or_truncated(reader, &mut chunk_header, &mut offset, "chunk header")
        {
            return Err(Error::WavMissingChunk {
                chunk: if info.is_some() { "data" } else { "fmt " },
            });
        }
        let declared_len = u32_at(&chunk_header, 4);
        if &chunk_header[0..4] == b"data" {
            let info = info.ok_or(Error::WavMissingChunk { chunk: "fmt " })?;
            let len = (declared_len != UNKNOWN_DATA_SIZE).then_some(declared_len);
            return Ok((info, len));
        }
        if declared_len > MAX_CHUNK_BEFORE_DATA {
            return Err(Error::WavBadFormatChunk {
                reason: "a chunk before `data` is larger than 1 MiB",
            });
        }
        let padded = declared_len as usize + declared_len as usize % 2;
        let mut body = vec![0_u8; padded];
        read_exact_or_truncated(reader, &mut body, &mut offset, "chunk body")?;
        if &chunk_header[0..4] == b"fmt " {
            info = Some(parse_format_chunk(&body[..declared_len as usize])?);
        }
    }
}

/// Fills `buf` from `reader` at stream position `*offset` (advanced by what was read).
fn read_exact_or_truncated<R: Read>(
    reader: &mut R,
    buf: &mut [u8],
    offset: &mut usize,
    what: &'static str,
) -> Result<(), Error> {
    let start = *offset;
    let got = read_full(reader, buf)?;
    *offset += got;
    if got < buf.len() {
        return Err(Error::WavTruncated {
            what,
            needed: buf.len(),
            offset: start,
            available: start + got,
        });
    }
    Ok(())
}

/// Reads until `buf` is full or the input ends; returns the bytes read.
pub(crate) fn read_full<R: Read + ?Sized>(reader: &mut R, buf: &mut [u8]) -> Result<usize, Error> {
    let mut filled = 0;
    while filled < buf.len() {
        match reader.read(&mut buf[filled..]) {
            Ok(0) => break,
            Ok(n) => filled += n,
            Err(e) if e.kind() == std::io::ErrorKind::Interrupted => {}
            Err(e) => return Err(Error::Io(e)),
        }
    }
    Ok(filled)
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

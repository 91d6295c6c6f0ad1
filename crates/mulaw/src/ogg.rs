//! A streaming Ogg Opus writer (RFC 3533 pages, RFC 7845 Opus mapping) and a stereo call
//! recorder built on it.
//!
//! Pages are written to the sink as they fill (about one second of audio each), so a long
//! call is never held in memory. The output plays in browsers and passes `opusinfo`.

use std::io::{Read, Write};

use crate::opus::{OpusApplication, OpusFrameEncoder};
use crate::stereo::{STEREO_FRAME_BYTES, Side, StereoTimeline};
use crate::{Error, SAMPLE_RATE_HZ};

/// Granule positions of Ogg Opus always count 48 kHz samples, whatever the input rate.
const GRANULE_RATE_HZ: u64 = 48_000;
const GRANULE_PER_FRAME: u64 = GRANULE_RATE_HZ * crate::FRAME_MS as u64 / 1000;
/// Audio pages are flushed after this many 20 ms packets (one second).
const PACKETS_PER_PAGE: usize = 50;
/// An Ogg page has at most 255 lacing values.
const MAX_SEGMENTS_PER_PAGE: usize = 255;
/// Bytes of an Ogg page header before its segment table.
const PAGE_HEADER_BYTES: usize = 27;
/// Lacing values one packet can need: libopus packets are at most 4000 bytes, 4000 / 255 + 1.
const MAX_LACING_PER_PACKET: usize = 16;
/// Fixed stream serial number ("crmd"): files hold a single logical stream, and a fixed value
/// keeps the writer deterministic (no randomness in this crate).
const STREAM_SERIAL: u32 = 0x6372_6d64;
const VENDOR: &str = concat!("crmd mulaw ", env!("CARGO_PKG_VERSION"), " (libopus)");

const HEADER_BEGIN_OF_STREAM: u8 = 0x02;
const HEADER_END_OF_STREAM: u8 = 0x04;

/// CRC-32 as Ogg defines it: polynomial 0x04C11DB7, no reflection, initial value 0, no final
/// XOR.
static OGG_CRC_TABLE: [u32; 256] = {
    let mut table = [0_u32; 256];
    let mut index = 0;
    while index < 256 {
        let mut crc = (index as u32) << 24;
        let mut bit = 0;
        while bit < 8 {
            crc = if crc & 0x8000_0000 != 0 {
                (crc << 1) ^ 0x04C1_1DB7
            } else {
                crc << 1
            };
            bit += 1;
        }
        table[index] = crc;
        index += 1;
    }
    table
};

/// The Ogg page checksum of `page` (computed with its CRC field zeroed).
#[must_use]
pub fn ogg_crc32(page: &[u8]) -> u32 {
    ogg_crc32_update(0, page)
}

/// Continues an Ogg CRC over `bytes`: `ogg_crc32_update(ogg_crc32(a), b)` is the CRC of `a`
/// followed by `b`, so a page's header and body need not be copied into one buffer.
fn ogg_crc32_update(crc: u32, bytes: &[u8]) -> u32 {
    bytes.iter().fold(crc, |crc, &byte| {
        (crc << 8) ^ OGG_CRC_TABLE[((crc >> 24) as u8 ^ byte) as usize]
    })
}

/// Writes 20 ms frames of interleaved PCM as an Ogg Opus stream to `W`.
///
/// [`OggOpusWriter::new`] writes the `OpusHead` and `OpusTags` pages immediately; each
/// [`OggOpusWriter::write_frame`] encodes one packet and writes a page whenever one fills;
/// [`OggOpusWriter::finish`] pads the encoder delay, writes the last page with the
/// end-of-stream flag and an end-trimmed granule position, flushes and returns the sink.
/// Dropping the writer without `finish` leaves a file without its last second and EOS page.
pub struct OggOpusWriter<W: Write> {
    sink: W,
    encoder: OpusFrameEncoder,
    channels: u16,
    pre_skip: u64,
    page_sequence: u32,
    /// Granule position after the last packet added (48 kHz samples incl. pre-skip).
    granule_position: u64,
    input_frames: u64,
    page_lacing: Vec<u8>,
    page_body: Vec<u8>,
    page_packets: usize,
}

impl<W: Write> std::fmt::Debug for OggOpusWriter<W> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("OggOpusWriter")
            .field("encoder", &self.encoder)
            .field("pre_skip", &self.pre_skip)
            .field("page_sequence", &self.page_sequence)
            .field("granule_position", &self.granule_position)
            .field("input_frames", &self.input_frames)
            .finish_non_exhaustive()
    }
}

impl<W: Write> OggOpusWriter<W> {
    /// Starts a stream for `channels` (1 or 2) channels of PCM at `input_rate_hz`
    /// (8/16/24/48 kHz) and writes the two header pages to `sink`.
    ///
    /// # Errors
    /// [`Error::UnsupportedOpusConfig`], [`Error::Opus`], or [`Error::Io`] from the sink.
    pub fn new(sink: W, channels: u16, input_rate_hz: u32) -> Result<Self, Error> {
        Self::with_encoder(sink, OpusFrameEncoder::new(input_rate_hz, channels)?)
    }

    /// Starts a stream with an encoder already configured (bitrate, complexity); its rate
    /// and channel count describe the stream. Writes the two header pages to `sink`.
    ///
    /// # Errors
    /// [`Error::Opus`], or [`Error::Io`] from the sink.
    pub fn with_encoder(sink: W, encoder: OpusFrameEncoder) -> Result<Self, Error> {
        let channels = encoder.channels();
        let input_rate_hz = encoder.sample_rate_hz();
        let pre_skip =
            u64::from(encoder.lookahead_samples()?) * GRANULE_RATE_HZ / u64::from(input_rate_hz);
        let mut writer = Self {
            sink,
            encoder,
            channels,
            pre_skip,
            page_sequence: 0,
            granule_position: 0,
            input_frames: 0,
            page_lacing: Vec::with_capacity(MAX_SEGMENTS_PER_PAGE),
            page_body: Vec::new(),
            page_packets: 0,
        };
        let head = writer.opus_head(input_rate_hz);
        writer.add_packet(&head);
        writer.write_page(HEADER_BEGIN_OF_STREAM, 0)?;
        let tags = opus_tags();
        writer.add_packet(&tags);
        writer.write_page(0, 0)?;
        Ok(writer)
    }

    /// Interleaved samples one [`OggOpusWriter::write_frame`] call takes.
    #[must_use]
    pub fn frame_samples(&self) -> usize {
        self.encoder.frame_samples()
    }

    /// Audio written so far, in milliseconds.
    #[must_use]
    pub fn duration_ms(&self) -> u64 {
        self.input_frames * u64::from(crate::FRAME_MS)
    }

    /// Frames whose packet was a replayed silent packet rather than a libopus encode
    /// ([`OpusFrameEncoder::set_reuse_steady_silence`]).
    #[must_use]
    pub fn reused_silent_frames(&self) -> u64 {
        self.encoder.reused_silent_frames()
    }

    /// Encodes one 20 ms frame of interleaved PCM into the stream.
    ///
    /// # Errors
    /// [`Error::OpusFrameLength`] if the slice is not exactly one frame, [`Error::Opus`],
    /// [`Error::Io`].
    pub fn write_frame(&mut self, interleaved_pcm_20ms: &[i16]) -> Result<(), Error> {
        self.encode_and_queue(interleaved_pcm_20ms)?;
        self.input_frames += 1;
        if self.page_packets >= PACKETS_PER_PAGE {
            self.write_page(0, self.granule_position)?;
        }
        Ok(())
    }

    /// Ends the stream: encodes silence to flush the encoder's look-ahead, writes the final
    /// page (EOS flag, granule position trimmed to exactly the audio written), flushes and
    /// returns the sink.
    ///
    /// # Errors
    /// [`Error::Opus`], [`Error::Io`].
    pub fn finish(mut self) -> Result<W, Error> {
        let end_granule = self.pre_skip + self.input_frames * GRANULE_PER_FRAME;
        let silence = vec![0_i16; self.frame_samples()];
        while self.granule_position < end_granule || self.page_packets == 0 {
            self.encode_and_queue(&silence)?;
        }
        self.write_page(HEADER_END_OF_STREAM, end_granule)?;
        self.sink.flush()?;
        Ok(self.sink)
    }

    fn encode_and_queue(&mut self, interleaved_pcm: &[i16]) -> Result<(), Error> {
        if self.page_lacing.len() + MAX_LACING_PER_PACKET > MAX_SEGMENTS_PER_PAGE {
            self.write_page(0, self.granule_position)?;
        }
        let packet = self.encoder.encode_frame(interleaved_pcm)?;
        append_packet(&mut self.page_lacing, &mut self.page_body, packet);
        self.page_packets += 1;
        self.granule_position += GRANULE_PER_FRAME;
        Ok(())
    }

    fn add_packet(&mut self, packet: &[u8]) {
        append_packet(&mut self.page_lacing, &mut self.page_body, packet);
        self.page_packets += 1;
    }

    fn opus_head(&self, input_rate_hz: u32) -> Vec<u8> {
        let mut head = Vec::with_capacity(19);
        head.extend_from_slice(b"OpusHead");
        head.push(1); // version
        head.push(self.channels as u8);
        // pre_skip is libopus' lookahead (a few ms), far below u16::MAX.
        head.extend_from_slice(&(self.pre_skip.min(u64::from(u16::MAX)) as u16).to_le_bytes());
        head.extend_from_slice(&input_rate_hz.to_le_bytes());
        head.extend_from_slice(&0_i16.to_le_bytes()); // output gain
        head.push(0); // channel mapping family 0: mono or stereo, no mapping table
        head
    }

    /// Writes the page of the packets added since the last one: its header from a stack
    /// buffer, then the body in place (no copy of the page into a buffer of its own).
    fn write_page(&mut self, header_type: u8, granule_position: u64) -> Result<(), Error> {
        let mut header = [0_u8; PAGE_HEADER_BYTES + MAX_SEGMENTS_PER_PAGE];
        header[..4].copy_from_slice(b"OggS");
        header[4] = 0; // stream structure version
        header[5] = header_type;
        header[6..14].copy_from_slice(&granule_position.to_le_bytes());
        header[14..18].copy_from_slice(&STREAM_SERIAL.to_le_bytes());
        header[18..22].copy_from_slice(&self.page_sequence.to_le_bytes());
        // header[22..26]: the CRC, computed with these bytes zero and filled in below.
        let segments = self.page_lacing.len().min(MAX_SEGMENTS_PER_PAGE);
        header[26] = segments as u8; // at most 255 by construction
        let header_len = PAGE_HEADER_BYTES + segments;
        header[PAGE_HEADER_BYTES..header_len].copy_from_slice(&self.page_lacing[..segments]);
        let crc = ogg_crc32_update(ogg_crc32(&header[..header_len]), &self.page_body);
        header[22..26].copy_from_slice(&crc.to_le_bytes());
        write_all_two(&mut self.sink, &header[..header_len], &self.page_body)?;
        self.page_sequence += 1;
        self.page_lacing.clear();
        self.page_body.clear();
        self.page_packets = 0;
        Ok(())
    }
}

/// Writes `first` then `second`, in one vectored write when the sink takes both (a page is one
/// system call on an unbuffered file), finishing with plain writes after a partial one.
fn write_all_two<W: Write>(sink: &mut W, first: &[u8], second: &[u8]) -> std::io::Result<()> {
    let written = loop {
        let slices = [std::io::IoSlice::new(first), std::io::IoSlice::new(second)];
        match sink.write_vectored(&slices) {
            Ok(written) => break written,
            Err(e) if e.kind() == std::io::ErrorKind::Interrupted => {}
            Err(e) => return Err(e),
        }
    };
    if written < first.len() {
        sink.write_all(&first[written..])?;
        sink.write_all(second)
    } else {
        sink.write_all(second.get(written - first.len()..).unwrap_or_default())
    }
}

fn append_packet(lacing: &mut Vec<u8>, body: &mut Vec<u8>, packet: &[u8]) {
    lacing.extend(std::iter::repeat_n(255, packet.len() / 255));
    lacing.push((packet.len() % 255) as u8);
    body.extend_from_slice(packet);
}

fn opus_tags() -> Vec<u8> {
    let mut tags = Vec::with_capacity(8 + 4 + VENDOR.len() + 4);
    tags.extend_from_slice(b"OpusTags");
    tags.extend_from_slice(&(VENDOR.len() as u32).to_le_bytes());
    tags.extend_from_slice(VENDOR.as_bytes());
    tags.extend_from_slice(&0_u32.to_le_bytes()); // no user comments
    tags
}

/// libopus application of call recordings: CELT only. For 8 kHz stereo at complexity 0 it
/// costs about 0.7-0.8 ms of CPU per second of call whatever is said, against 1.8-2.2 ms for
/// SILK ([`OpusApplication::Voip`]) at complexity 1 when both sides talk and 1.2 ms when
/// mostly one does (back-to-back runs on the project's 2-core machine).
pub const RECORDING_OPUS_APPLICATION: OpusApplication = OpusApplication::RestrictedLowDelay;
/// libopus complexity of call recordings: 0. Complexity 1 costs CELT about 55 % more CPU
/// and at telephone bandwidth codes speech no better (signal-to-noise ratio equal on tones,
/// 0.6-1.4 dB lower on speech).
pub const RECORDING_OPUS_COMPLEXITY: u8 = 0;
/// Bitrate of call recordings, both channels together: 40 kbit/s, about 18 MB per hour (less
/// when the call is silent). Not lower: below about 39.5 kbit/s at complexity 0 libopus
/// narrows the stereo image of CELT frames, mixing each side into the other (14 % of the other
/// channel's amplitude at 24 kbit/s, 3 % at 32 kbit/s).
pub const RECORDING_OPUS_BITRATE_BPS: i32 = 40_000;

pub use crate::stereo::{DEFAULT_MAX_SKEW_MS, MAX_TIMESTAMP_LEAD_MS};

/// The Opus encoder of call recordings: stereo 8 kHz with the `RECORDING_OPUS_*` settings.
///
/// # Errors
/// [`Error::Opus`] if libopus refuses a setting.
pub fn recording_encoder() -> Result<OpusFrameEncoder, Error> {
    let mut encoder =
        OpusFrameEncoder::with_application(SAMPLE_RATE_HZ, 2, RECORDING_OPUS_APPLICATION)?;
    encoder.set_complexity(RECORDING_OPUS_COMPLEXITY)?;
    encoder.set_bitrate_bps(RECORDING_OPUS_BITRATE_BPS)?;
    // Between turns both sides are often digital silence: those frames cost no encoding.
    encoder.set_reuse_steady_silence(true);
    Ok(encoder)
}

/// Decodes one interleaved stereo mu-law frame into `pcm` and encodes it into `writer`.
fn write_mulaw_frame<W: Write>(
    writer: &mut OggOpusWriter<W>,
    pcm: &mut [i16],
    interleaved_mulaw: &[u8],
) -> Result<(), Error> {
    for (slot, &byte) in pcm.iter_mut().zip(interleaved_mulaw) {
        *slot = crate::decode_sample(byte);
    }
    writer.write_frame(pcm)
}

/// Records a phone call as a stereo 8 kHz Ogg Opus file: caller on the left channel, agent on
/// the right, placed on a [`StereoTimeline`] (timestamps, gaps as silence, bounded skew) and
/// encoded frame by frame as the timeline releases them.
pub struct StereoCallRecorder<W: Write> {
    writer: OggOpusWriter<W>,
    timeline: StereoTimeline,
    pcm: Vec<i16>,
}

impl<W: Write> std::fmt::Debug for StereoCallRecorder<W> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("StereoCallRecorder")
            .field("writer", &self.writer)
            .field("timeline", &self.timeline)
            .finish_non_exhaustive()
    }
}

impl<W: Write> StereoCallRecorder<W> {
    /// Starts a recording into `sink` with [`DEFAULT_MAX_SKEW_MS`].
    ///
    /// # Errors
    /// [`Error::Opus`] or [`Error::Io`] while writing the headers.
    pub fn new(sink: W) -> Result<Self, Error> {
        Self::with_max_skew_ms(sink, DEFAULT_MAX_SKEW_MS)
    }

    /// Starts a recording that lets one side run at most `max_skew_ms` ahead of the other.
    ///
    /// # Errors
    /// [`Error::Opus`] or [`Error::Io`] while writing the headers.
    pub fn with_max_skew_ms(sink: W, max_skew_ms: u64) -> Result<Self, Error> {
        Ok(Self {
            writer: OggOpusWriter::with_encoder(sink, recording_encoder()?)?,
            timeline: StereoTimeline::new(max_skew_ms),
            pcm: vec![0; STEREO_FRAME_BYTES],
        })
    }

    /// Adds caller audio (8 kHz mu-law) that started `timestamp_ms` after the call began.
    ///
    /// # Errors
    /// [`Error::RecordingTimestampTooFarAhead`], [`Error::Opus`], [`Error::Io`].
    pub fn push_caller(&mut self, timestamp_ms: u64, mulaw: &[u8]) -> Result<(), Error> {
        self.push(Side::Caller, timestamp_ms, mulaw)
    }

    /// Adds agent audio (8 kHz mu-law) that started playing `timestamp_ms` after the call began.
    ///
    /// # Errors
    /// [`Error::RecordingTimestampTooFarAhead`], [`Error::Opus`], [`Error::Io`].
    pub fn push_agent(&mut self, timestamp_ms: u64, mulaw: &[u8]) -> Result<(), Error> {
        self.push(Side::Agent, timestamp_ms, mulaw)
    }

    fn push(&mut self, side: Side, timestamp_ms: u64, mulaw: &[u8]) -> Result<(), Error> {
        let (writer, pcm) = (&mut self.writer, &mut self.pcm);
        self.timeline.push(side, timestamp_ms, mulaw, |frame| {
            write_mulaw_frame(writer, pcm, frame)
        })
    }

    /// Length of the recording so far (audio received on either side), in milliseconds.
    #[must_use]
    pub fn duration_ms(&self) -> u64 {
        self.timeline.duration_ms()
    }

    /// 20 ms frames written so far that were digital silence on both sides and cost no
    /// encoding (a replayed silent packet, see [`OpusFrameEncoder::set_reuse_steady_silence`]).
    #[must_use]
    pub fn reused_silent_frames(&self) -> u64 {
        self.writer.reused_silent_frames()
    }

    /// Writes out everything buffered (the shorter side padded with silence, the last frame
    /// padded to 20 ms), finishes the Ogg stream and returns the sink.
    ///
    /// # Errors
    /// [`Error::Opus`], [`Error::Io`].
    pub fn finish(mut self) -> Result<W, Error> {
        let (writer, pcm) = (&mut self.writer, &mut self.pcm);
        self.timeline
            .flush(|frame| write_mulaw_frame(writer, pcm, frame))?;
        self.writer.finish()
    }
}

/// Encodes a stereo 8 kHz mu-law WAV (as [`crate::stereo::StereoWavRecorder`] writes it) into
/// an Ogg Opus stream with the call recorder's settings, reading it in 20 ms frames: the result
/// is byte for byte what [`StereoCallRecorder`] would have written live from the same audio.
/// A `data` chunk of unknown length (a spool cut short) is read to the end of the input; a
/// last partial frame is padded with silence. Returns the sink and the audio's length in ms.
///
/// # Errors
/// [`Error::WavFormatMismatch`] for anything but 8 kHz stereo 8-bit mu-law, the header errors
/// of [`crate::wav::read_header`], [`Error::Opus`], [`Error::Io`].
pub fn encode_stereo_mulaw_wav<R: Read, W: Write>(mut wav: R, sink: W) -> Result<(W, u64), Error> {
    let (info, data_len) = crate::wav::read_header(&mut wav)?;
    let wanted = crate::wav::WavInfo {
        format: crate::wav::WavFormat::MuLaw,
        sample_rate: SAMPLE_RATE_HZ,
        channels: 2,
        bits_per_sample: 8,
    };
    if info != wanted {
        return Err(Error::WavFormatMismatch {
            expected: "mu-law 8000 Hz stereo (8 bits per sample)",
            found: info.to_string(),
        });
    }
    // An unknown length means "to the end of the input".
    let mut data = wav.take(data_len.map_or(u64::MAX, u64::from));
    let mut writer = OggOpusWriter::with_encoder(sink, recording_encoder()?)?;
    let mut pcm = vec![0_i16; STEREO_FRAME_BYTES];
    let mut frame = vec![0_u8; STEREO_FRAME_BYTES];
    loop {
        let filled = crate::wav::read_full(&mut data, &mut frame)?;
        if filled == 0 {
            break;
        }
        frame[filled..].fill(crate::SILENCE);
        write_mulaw_frame(&mut writer, &mut pcm, &frame)?;
        if filled < frame.len() {
            break;
        }
    }
    let duration_ms = writer.duration_ms();
    Ok((writer.finish()?, duration_ms))
}

//! 20 ms Opus frames via libopus (`audiopus`).

use audiopus::coder::{Decoder, Encoder};
use audiopus::packet::Packet;
use audiopus::{Application, Bitrate, Channels, MutSignals, SampleRate};

use crate::{Error, FRAME_MS};

/// Rates Opus encodes/decodes natively (12 kHz is legal for libopus but unused here).
pub const SUPPORTED_RATES_HZ: [u32; 4] = [8000, 16000, 24000, 48000];
/// Largest packet one 20 ms frame can become: a single-frame (code 0) packet is a TOC byte and
/// at most 1275 bytes of frame (RFC 6716, 3.2.1), so the 4000 bytes the RFC suggests for any
/// packet would leave 2.7 KB of every encoder (one per recorded call) unused.
const MAX_PACKET_BYTES: usize = 1 + 1275;
/// Longest frame a packet can decode to: 120 ms.
const MAX_FRAME_MS: usize = 120;
/// Identical packets libopus must have produced for consecutive all-zero frames before
/// [`OpusFrameEncoder::set_reuse_steady_silence`] replays the packet instead of encoding.
const STEADY_SILENT_PACKETS: u32 = 3;
/// TOC configurations 16..=31 are CELT-only packets (RFC 6716 section 3.1).
const FIRST_CELT_CONFIG: u8 = 16;

/// What libopus tunes an encoder for (its `OPUS_APPLICATION_*` setting), which decides the
/// coding mode it may use.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[non_exhaustive]
pub enum OpusApplication {
    /// Speech first: at telephone rates libopus uses SILK (linear prediction). Its cost
    /// follows the signal (a silent stereo side is cheap) and it is the most bit-efficient
    /// for speech. [`OpusFrameEncoder::new`] uses it.
    Voip,
    /// Fidelity first: for 8 kHz input at 24 kbit/s or more libopus picks CELT (MDCT) here
    /// too, with its music heuristics on top.
    Audio,
    /// CELT only, the smallest delay (2.5 ms look-ahead). Its cost per second hardly depends
    /// on the signal: for 8 kHz stereo at complexity 0 it is 40 % of SILK's at complexity 1
    /// when both channels carry speech, 60 % when only one does.
    RestrictedLowDelay,
}

impl From<OpusApplication> for Application {
    fn from(application: OpusApplication) -> Self {
        match application {
            OpusApplication::Voip => Application::Voip,
            OpusApplication::Audio => Application::Audio,
            OpusApplication::RestrictedLowDelay => Application::LowDelay,
        }
    }
}

fn opus_config(sample_rate_hz: u32, channels: u16) -> Result<(SampleRate, Channels), Error> {
    let unsupported = Error::UnsupportedOpusConfig {
        sample_rate_hz,
        channels,
    };
    let rate = match sample_rate_hz {
        8000 => SampleRate::Hz8000,
        16000 => SampleRate::Hz16000,
        24000 => SampleRate::Hz24000,
        48000 => SampleRate::Hz48000,
        _ => return Err(unsupported),
    };
    let layout = match channels {
        1 => Channels::Mono,
        2 => Channels::Stereo,
        _ => return Err(unsupported),
    };
    Ok((rate, layout))
}

/// Interleaved samples in one 20 ms frame at `sample_rate_hz` with `channels` channels.
#[must_use]
pub fn frame_samples(sample_rate_hz: u32, channels: u16) -> usize {
    (sample_rate_hz * FRAME_MS / 1000) as usize * usize::from(channels)
}

/// Encodes exactly-20 ms frames of interleaved 16-bit PCM to Opus packets.
pub struct OpusFrameEncoder {
    encoder: Encoder,
    sample_rate_hz: u32,
    channels: u16,
    application: OpusApplication,
    packet: Vec<u8>,
    steady_silence: SteadySilence,
}

/// Replays libopus' packet for digital silence once it has stopped changing
/// ([`OpusFrameEncoder::set_reuse_steady_silence`]).
#[derive(Debug, Default)]
struct SteadySilence {
    enabled: bool,
    /// The packet libopus produced for the latest all-zero frame of the current silent run.
    packet: Vec<u8>,
    /// Consecutive all-zero frames, up to the latest, that produced exactly `packet`.
    identical: u32,
    /// Frames answered with `packet` without running libopus.
    reused: u64,
}

impl std::fmt::Debug for OpusFrameEncoder {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("OpusFrameEncoder")
            .field("sample_rate_hz", &self.sample_rate_hz)
            .field("channels", &self.channels)
            .field("application", &self.application)
            .field("reused_silent_frames", &self.steady_silence.reused)
            .finish_non_exhaustive()
    }
}

impl OpusFrameEncoder {
    /// An encoder for `sample_rate_hz` (8/16/24/48 kHz) and 1 or 2 channels, tuned for
    /// speech ([`OpusApplication::Voip`]).
    ///
    /// # Errors
    /// [`Error::UnsupportedOpusConfig`], or [`Error::Opus`] if libopus refuses to initialise.
    pub fn new(sample_rate_hz: u32, channels: u16) -> Result<Self, Error> {
        Self::with_application(sample_rate_hz, channels, OpusApplication::Voip)
    }

    /// An encoder for `sample_rate_hz` (8/16/24/48 kHz) and 1 or 2 channels, tuned for
    /// `application`.
    ///
    /// # Errors
    /// [`Error::UnsupportedOpusConfig`], or [`Error::Opus`] if libopus refuses to initialise.
    pub fn with_application(
        sample_rate_hz: u32,
        channels: u16,
        application: OpusApplication,
    ) -> Result<Self, Error> {
        let (rate, layout) = opus_config(sample_rate_hz, channels)?;
        let encoder =
            Encoder::new(rate, layout, application.into()).map_err(|source| Error::Opus {
                operation: "create an encoder",
                source,
            })?;
        Ok(Self {
            encoder,
            sample_rate_hz,
            channels,
            application,
            packet: vec![0; MAX_PACKET_BYTES],
            steady_silence: SteadySilence::default(),
        })
    }

    /// The application the encoder was created for.
    #[must_use]
    pub fn application(&self) -> OpusApplication {
        self.application
    }

    /// When enabled, a frame that is entirely digital silence (every sample 0) is answered
    /// with the packet libopus produced for the previous silent frames, without running
    /// libopus, once libopus has produced that same CELT-only packet for 3 consecutive silent
    /// frames.
    ///
    /// That is libopus' own fixed point: CELT codes steady digital silence as a constant
    /// "silence" packet (3 bytes in VBR) and resets its decoder-side state (band energies,
    /// overlap) the same way for each, so the decoder receives exactly the bytes a full
    /// encode would have sent. Only the encoder's internal adaptation (rate control, DC
    /// filter) is not advanced over the skipped frames, so the first packet after the silence
    /// may differ from a full encode's while decoding equally well. SILK packets (which
    /// carry noise-excitation state from frame to frame) are never replayed, so with
    /// [`OpusApplication::Voip`] at telephone rates nothing is skipped. Off by default.
    pub fn set_reuse_steady_silence(&mut self, enabled: bool) {
        self.steady_silence = SteadySilence {
            enabled,
            ..SteadySilence::default()
        };
    }

    /// Frames answered with a replayed silent packet instead of running libopus
    /// ([`OpusFrameEncoder::set_reuse_steady_silence`]).
    #[must_use]
    pub fn reused_silent_frames(&self) -> u64 {
        self.steady_silence.reused
    }

    /// Sets the target bitrate in bits per second (libopus accepts 500..=512000).
    ///
    /// # Errors
    /// [`Error::Opus`] if libopus rejects the value.
    pub fn set_bitrate_bps(&mut self, bits_per_second: i32) -> Result<(), Error> {
        self.encoder
            .set_bitrate(Bitrate::BitsPerSecond(bits_per_second))
            .map_err(|source| Error::Opus {
                operation: "set the bitrate",
                source,
            })
    }

    /// Sets libopus' complexity, 0 (cheapest) to 10 (its default, best quality per bit).
    /// For 8 kHz telephone audio 0-3 costs a fraction of the CPU for a difference that
    /// is hard to hear at voice bitrates.
    ///
    /// # Errors
    /// [`Error::Opus`] if libopus rejects the value (above 10).
    pub fn set_complexity(&mut self, complexity: u8) -> Result<(), Error> {
        self.encoder
            .set_complexity(complexity)
            .map_err(|source| Error::Opus {
                operation: "set the complexity",
                source,
            })
    }

    /// Input sample rate.
    #[must_use]
    pub fn sample_rate_hz(&self) -> u32 {
        self.sample_rate_hz
    }

    /// Input channel count.
    #[must_use]
    pub fn channels(&self) -> u16 {
        self.channels
    }

    /// Interleaved samples [`OpusFrameEncoder::encode_frame`] expects.
    #[must_use]
    pub fn frame_samples(&self) -> usize {
        frame_samples(self.sample_rate_hz, self.channels)
    }

    /// The encoder's algorithmic delay in samples per channel at the input rate (what a
    /// decoder must discard at the start: Ogg Opus "pre-skip" after scaling to 48 kHz).
    ///
    /// # Errors
    /// [`Error::Opus`] if libopus cannot report it.
    pub fn lookahead_samples(&self) -> Result<u32, Error> {
        self.encoder.lookahead().map_err(|source| Error::Opus {
            operation: "query the lookahead",
            source,
        })
    }

    /// Encodes one 20 ms frame of interleaved PCM; the returned packet borrows an internal
    /// buffer (no allocation per frame).
    ///
    /// # Errors
    /// [`Error::OpusFrameLength`] unless `interleaved_pcm` is exactly one frame;
    /// [`Error::Opus`] if libopus fails.
    pub fn encode_frame(&mut self, interleaved_pcm: &[i16]) -> Result<&[u8], Error> {
        let expected = self.frame_samples();
        if interleaved_pcm.len() != expected {
            return Err(Error::OpusFrameLength {
                expected,
                got: interleaved_pcm.len(),
            });
        }
        let silent = self.steady_silence.enabled && interleaved_pcm.iter().all(|&s| s == 0);
        if silent && self.steady_silence.identical >= STEADY_SILENT_PACKETS {
            self.steady_silence.reused += 1;
            return Ok(&self.steady_silence.packet);
        }
        let written = self
            .encoder
            .encode(interleaved_pcm, &mut self.packet)
            .map_err(|source| Error::Opus {
                operation: "encode a frame",
                source,
            })?;
        let packet = &self.packet[..written.min(self.packet.len())];
        let celt_only = packet
            .first()
            .is_some_and(|toc| toc >> 3 >= FIRST_CELT_CONFIG);
        let steady = &mut self.steady_silence;
        if !(silent && celt_only) {
            steady.identical = 0;
        } else if steady.identical > 0 && steady.packet == packet {
            steady.identical += 1;
        } else {
            steady.packet.clear();
            steady.packet.extend_from_slice(packet);
            steady.identical = 1;
        }
        Ok(packet)
    }
}

/// Decodes Opus packets to interleaved 16-bit PCM at a chosen rate and channel count.
pub struct OpusFrameDecoder {
    decoder: Decoder,
    sample_rate_hz: u32,
    channels: u16,
    pcm: Vec<i16>,
}

impl std::fmt::Debug for OpusFrameDecoder {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("OpusFrameDecoder")
            .field("sample_rate_hz", &self.sample_rate_hz)
            .field("channels", &self.channels)
            .finish_non_exhaustive()
    }
}

impl OpusFrameDecoder {
    /// A decoder producing `sample_rate_hz` (8/16/24/48 kHz) with 1 or 2 channels.
    ///
    /// # Errors
    /// [`Error::UnsupportedOpusConfig`], or [`Error::Opus`] if libopus refuses to initialise.
    pub fn new(sample_rate_hz: u32, channels: u16) -> Result<Self, Error> {
        let (rate, layout) = opus_config(sample_rate_hz, channels)?;
        let decoder = Decoder::new(rate, layout).map_err(|source| Error::Opus {
            operation: "create a decoder",
            source,
        })?;
        let capacity = sample_rate_hz as usize * MAX_FRAME_MS / 1000 * usize::from(channels);
        Ok(Self {
            decoder,
            sample_rate_hz,
            channels,
            pcm: vec![0; capacity],
        })
    }

    /// Output sample rate.
    #[must_use]
    pub fn sample_rate_hz(&self) -> u32 {
        self.sample_rate_hz
    }

    /// Output channel count.
    #[must_use]
    pub fn channels(&self) -> u16 {
        self.channels
    }

    /// Decodes one packet to interleaved PCM (borrowing an internal buffer).
    ///
    /// # Errors
    /// [`Error::Opus`] for an empty or corrupt packet.
    pub fn decode_frame(&mut self, packet: &[u8]) -> Result<&[i16], Error> {
        let packet = Packet::try_from(packet).map_err(|source| Error::Opus {
            operation: "accept the packet",
            source,
        })?;
        self.decode(Some(packet))
    }

    /// Packet-loss concealment: synthesises one 20 ms frame in place of a lost packet.
    ///
    /// # Errors
    /// [`Error::Opus`] if libopus fails.
    pub fn conceal_lost_frame(&mut self) -> Result<&[i16], Error> {
        self.decode(None)
    }

    fn decode(&mut self, packet: Option<Packet<'_>>) -> Result<&[i16], Error> {
        let frame_len = if packet.is_none() {
            frame_samples(self.sample_rate_hz, self.channels)
        } else {
            self.pcm.len()
        };
        let output =
            MutSignals::try_from(&mut self.pcm[..frame_len]).map_err(|source| Error::Opus {
                operation: "size the output",
                source,
            })?;
        let per_channel = self
            .decoder
            .decode(packet, output, false)
            .map_err(|source| Error::Opus {
                operation: "decode a packet",
                source,
            })?;
        let samples = (per_channel * usize::from(self.channels)).min(self.pcm.len());
        Ok(&self.pcm[..samples])
    }
}

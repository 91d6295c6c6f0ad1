//! Two-sided call audio on one timeline: caller and agent chunks placed at their timestamps
//! and handed out as interleaved 20 ms stereo frames (caller left, agent right).
//!
//! [`StereoTimeline`] is the sans-IO core shared by the call recorders: the Ogg Opus one
//! ([`crate::ogg::StereoCallRecorder`]) and the mu-law WAV spool ([`StereoWavRecorder`]),
//! which writes the frames as they are (no encoding on the live path).

use std::io::{Seek, Write};

use crate::wav::MulawWavWriter;
use crate::{Error, FRAME_BYTES, SAMPLE_RATE_HZ, SILENCE};

/// Default bound on how far one side of the call may run ahead of the other before the lagging
/// side is filled with silence and written out.
pub const DEFAULT_MAX_SKEW_MS: u64 = 10_000;
/// A timestamp more than this far beyond all audio received so far is rejected as bogus
/// (filling the gap would mean writing that much silence).
pub const MAX_TIMESTAMP_LEAD_MS: u64 = 10 * 60 * 1000;
/// Bytes of one interleaved stereo mu-law frame (20 ms of both sides).
pub const STEREO_FRAME_BYTES: usize = 2 * FRAME_BYTES;
const SAMPLES_PER_MS: u64 = SAMPLE_RATE_HZ as u64 / 1000;

/// Which side of the call a chunk belongs to.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Side {
    /// The caller: the left channel.
    Caller,
    /// The agent: the right channel.
    Agent,
}

/// Places each side's mu-law audio at its millisecond timestamp (since the start of the call)
/// and releases interleaved stereo frames once both sides have covered them, or once one side
/// runs more than the maximum skew ahead (the other side's missing part is then silence).
///
/// Gaps are silence. Audio whose timestamp falls before the end of that side's previous audio
/// is appended right after it (no overlap, nothing dropped). Memory is bounded by the skew
/// window, not the call length.
pub struct StereoTimeline {
    /// Mu-law samples of each side from the first sample not yet released onwards.
    caller: Vec<u8>,
    agent: Vec<u8>,
    /// Sample index (8 kHz) of the first sample not yet released; a multiple of 160.
    released_samples: u64,
    max_skew_samples: u64,
    /// One interleaved frame, handed to the sink.
    frame: Vec<u8>,
}

impl std::fmt::Debug for StereoTimeline {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("StereoTimeline")
            .field("buffered_caller_samples", &self.caller.len())
            .field("buffered_agent_samples", &self.agent.len())
            .field("released_samples", &self.released_samples)
            .field("max_skew_samples", &self.max_skew_samples)
            .finish()
    }
}

impl StereoTimeline {
    /// A timeline that lets one side run at most `max_skew_ms` ahead of the other.
    #[must_use]
    pub fn new(max_skew_ms: u64) -> StereoTimeline {
        StereoTimeline {
            caller: Vec::new(),
            agent: Vec::new(),
            released_samples: 0,
            max_skew_samples: max_skew_ms.saturating_mul(SAMPLES_PER_MS),
            frame: Vec::new(),
        }
    }

    /// Length of the timeline so far (audio received on either side), in milliseconds.
    #[must_use]
    pub fn duration_ms(&self) -> u64 {
        self.furthest_end() / SAMPLES_PER_MS
    }

    /// Adds `side`'s mu-law audio at `timestamp_ms` and hands every frame that became ready to
    /// `sink` (320 bytes: caller and agent samples alternating).
    ///
    /// # Errors
    /// [`Error::RecordingTimestampTooFarAhead`]; any error of `sink` (the audio stays added).
    pub fn push(
        &mut self,
        side: Side,
        timestamp_ms: u64,
        mulaw: &[u8],
        sink: impl FnMut(&[u8]) -> Result<(), Error>,
    ) -> Result<(), Error> {
        let furthest_end_ms = self.furthest_end() / SAMPLES_PER_MS;
        if timestamp_ms > furthest_end_ms.saturating_add(MAX_TIMESTAMP_LEAD_MS) {
            return Err(Error::RecordingTimestampTooFarAhead {
                timestamp_ms,
                recorded_until_ms: furthest_end_ms,
            });
        }
        let position = timestamp_ms * SAMPLES_PER_MS;
        let end = self.track_end(side);
        let room = self.max_skew_samples.saturating_add(4 * FRAME_BYTES as u64);
        let track = match side {
            Side::Caller => &mut self.caller,
            Side::Agent => &mut self.agent,
        };
        if track.capacity() == 0 {
            // Room for the skew window and a few chunks, so the buffer does not double past it.
            track.reserve_exact(usize::try_from(room).unwrap_or(usize::MAX).min(1 << 20));
        }
        if position > end {
            let gap = usize::try_from(position - end).unwrap_or(usize::MAX);
            track.resize(track.len().saturating_add(gap), SILENCE);
        }
        track.extend_from_slice(mulaw);

        let both_covered = self
            .track_end(Side::Caller)
            .min(self.track_end(Side::Agent));
        let skew_bound = self.furthest_end().saturating_sub(self.max_skew_samples);
        self.release_until(both_covered.max(skew_bound), sink)
    }

    /// Hands out everything still held: the shorter side padded with silence, the last frame
    /// padded to 20 ms.
    ///
    /// # Errors
    /// Any error of `sink`.
    pub fn flush(&mut self, sink: impl FnMut(&[u8]) -> Result<(), Error>) -> Result<(), Error> {
        let end = self.furthest_end().next_multiple_of(FRAME_BYTES as u64);
        self.release_until(end, sink)
    }

    fn track_end(&self, side: Side) -> u64 {
        let track = match side {
            Side::Caller => &self.caller,
            Side::Agent => &self.agent,
        };
        self.released_samples + track.len() as u64
    }

    fn furthest_end(&self) -> u64 {
        self.track_end(Side::Caller)
            .max(self.track_end(Side::Agent))
    }

    /// Hands out every whole frame that ends at or before sample index `until`.
    fn release_until(
        &mut self,
        until: u64,
        mut sink: impl FnMut(&[u8]) -> Result<(), Error>,
    ) -> Result<(), Error> {
        let frame_len = FRAME_BYTES as u64;
        let mut consumed = 0_usize;
        let mut result = Ok(());
        if self.released_samples + frame_len <= until && self.frame.is_empty() {
            self.frame.resize(STEREO_FRAME_BYTES, SILENCE);
        }
        while self.released_samples + frame_len <= until {
            for (index, slot) in self.frame.chunks_exact_mut(2).enumerate() {
                let at = consumed + index;
                slot[0] = self.caller.get(at).copied().unwrap_or(SILENCE);
                slot[1] = self.agent.get(at).copied().unwrap_or(SILENCE);
            }
            self.released_samples += frame_len;
            consumed += FRAME_BYTES;
            result = sink(&self.frame);
            if result.is_err() {
                break;
            }
        }
        for track in [&mut self.caller, &mut self.agent] {
            let drop = consumed.min(track.len());
            track.drain(..drop);
        }
        result
    }
}

/// Records a phone call as a stereo 8 kHz mu-law WAV (caller left, agent right), written as
/// the call goes: no encoding, one byte per sample per side (16 KB per second of call).
///
/// The header declares an unknown length until [`StereoWavRecorder::finish`] patches the real
/// one, so a file cut short by a crash still plays to its last frame.
pub struct StereoWavRecorder<W: Write + Seek> {
    timeline: StereoTimeline,
    writer: MulawWavWriter<W>,
}

impl<W: Write + Seek> std::fmt::Debug for StereoWavRecorder<W> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("StereoWavRecorder")
            .field("timeline", &self.timeline)
            .field("written_bytes", &self.writer.data_bytes())
            .finish_non_exhaustive()
    }
}

impl<W: Write + Seek> StereoWavRecorder<W> {
    /// Starts a recording into `sink` (its header is written at once) that lets one side run
    /// at most `max_skew_ms` ahead of the other.
    ///
    /// # Errors
    /// [`Error::Io`] while writing the header.
    pub fn new(sink: W, max_skew_ms: u64) -> Result<Self, Error> {
        Ok(Self {
            timeline: StereoTimeline::new(max_skew_ms),
            writer: MulawWavWriter::new(sink, SAMPLE_RATE_HZ, 2)?,
        })
    }

    /// Adds caller audio (8 kHz mu-law) that started `timestamp_ms` after the call began.
    ///
    /// # Errors
    /// [`Error::RecordingTimestampTooFarAhead`], [`Error::Io`].
    pub fn push_caller(&mut self, timestamp_ms: u64, mulaw: &[u8]) -> Result<(), Error> {
        let writer = &mut self.writer;
        self.timeline
            .push(Side::Caller, timestamp_ms, mulaw, |frame| {
                writer.write(frame)
            })
    }

    /// Adds agent audio (8 kHz mu-law) that started playing `timestamp_ms` after the call began.
    ///
    /// # Errors
    /// [`Error::RecordingTimestampTooFarAhead`], [`Error::Io`].
    pub fn push_agent(&mut self, timestamp_ms: u64, mulaw: &[u8]) -> Result<(), Error> {
        let writer = &mut self.writer;
        self.timeline
            .push(Side::Agent, timestamp_ms, mulaw, |frame| {
                writer.write(frame)
            })
    }

    /// Length of the recording so far (audio received on either side), in milliseconds.
    #[must_use]
    pub fn duration_ms(&self) -> u64 {
        self.timeline.duration_ms()
    }

    /// Writes out everything buffered, patches the header with the real length and returns
    /// the sink.
    ///
    /// # Errors
    /// [`Error::Io`].
    pub fn finish(mut self) -> Result<W, Error> {
        let writer = &mut self.writer;
        self.timeline.flush(|frame| writer.write(frame))?;
        self.writer.finish()
    }
}

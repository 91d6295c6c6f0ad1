//! Cuts an arbitrary stream of mu-law chunks into exact 20 ms frames.

use crate::{FRAME_BYTES, SILENCE};

/// Once this many consumed bytes sit at the front of the buffer (and they are at least half of
/// it), they are dropped so the buffer does not grow with the length of the call.
const COMPACT_AFTER_BYTES: usize = 16 * FRAME_BYTES;

/// Accepts mu-law chunks of any length (a 1.7 s TTS answer, 3 odd bytes) and yields exact
/// 20 ms frames of [`FRAME_BYTES`] bytes, in order, with no byte lost or duplicated.
///
/// Driver contract: after every [`Framer::push`], drain [`Framer::pop_frame`] until it returns
/// `None`; at the end of an utterance call [`Framer::flush`] once to get the last, padded frame.
/// On barge-in, [`Framer::clear`] drops everything not yet sent.
#[derive(Debug, Clone, Default)]
pub struct Framer {
    buffer: Vec<u8>,
    read_offset: usize,
}

impl Framer {
    /// An empty framer.
    #[must_use]
    pub fn new() -> Self {
        Self::default()
    }

    /// Appends a chunk of mu-law bytes.
    pub fn push(&mut self, chunk: &[u8]) {
        if self.read_offset == self.buffer.len() {
            self.buffer.clear();
            self.read_offset = 0;
        } else if self.read_offset >= COMPACT_AFTER_BYTES
            && self.read_offset * 2 >= self.buffer.len()
        {
            self.buffer.drain(..self.read_offset);
            self.read_offset = 0;
        }
        self.buffer.extend_from_slice(chunk);
    }

    /// The next complete 20 ms frame, if one is buffered.
    #[must_use]
    pub fn pop_frame(&mut self) -> Option<[u8; FRAME_BYTES]> {
        let end = self.read_offset + FRAME_BYTES;
        let frame: [u8; FRAME_BYTES] = self.buffer.get(self.read_offset..end)?.try_into().ok()?;
        self.read_offset = end;
        Some(frame)
    }

    /// The remaining partial frame padded with mu-law silence ([`SILENCE`]), or `None` if
    /// nothing is pending. Call after draining [`Framer::pop_frame`]; if whole frames are still
    /// buffered, this returns the next one unpadded instead (so no audio is ever dropped).
    #[must_use]
    pub fn flush(&mut self) -> Option<[u8; FRAME_BYTES]> {
        if let Some(frame) = self.pop_frame() {
            return Some(frame);
        }
        let rest = self
            .buffer
            .get(self.read_offset..)
            .filter(|rest| !rest.is_empty())?;
        let mut frame = [SILENCE; FRAME_BYTES];
        frame[..rest.len()].copy_from_slice(rest);
        self.clear();
        Some(frame)
    }

    /// Bytes buffered and not yet returned.
    #[must_use]
    pub fn pending_len(&self) -> usize {
        self.buffer.len() - self.read_offset
    }

    /// Whole frames ready to pop.
    #[must_use]
    pub fn frames_ready(&self) -> usize {
        self.pending_len() / FRAME_BYTES
    }

    /// Drops everything buffered (e.g. the rest of a TTS answer on barge-in).
    pub fn clear(&mut self) {
        self.buffer.clear();
        self.read_offset = 0;
    }
}

//! Per-call stream health figures: chunk gaps, duplicates, late chunks, timestamp drift.

use super::{InboundMessage, Media, MediaFormat};

/// How many recent chunk numbers are remembered to tell a duplicate from a late chunk.
const CHUNK_WINDOW: u64 = 128;

/// Payload bytes per millisecond when the format does not say: 8 kHz mono mu-law.
const DEFAULT_BYTES_PER_MS: u64 = 8;

/// Accumulates figures about one inbound track. Sans-IO and allocation-free: call
/// [`StreamHealth::observe`] for every `media` frame of the track (or
/// [`StreamHealth::observe_message`] for every message, which also follows `sequenceNumber`),
/// and [`StreamHealth::snapshot`] whenever the figures are wanted.
///
/// Drift compares `media.timestamp` with the audio actually received: a frame's expected
/// timestamp is the first frame's timestamp plus the duration of all payload received before it.
/// A positive drift means the clock ran ahead of the audio (frames lost upstream, e.g. Twilio
/// warning 31930); a negative one means audio arrived faster than its timestamps.
#[derive(Debug, Clone)]
pub struct StreamHealth {
    bytes_per_ms: u64,
    frames: u64,
    payload_bytes: u64,
    highest_chunk: Option<u64>,
    /// Bit `i` set = chunk `highest_chunk - i` was seen.
    recent_chunks: u128,
    gaps: u64,
    missing_chunks: u64,
    duplicates: u64,
    out_of_order: u64,
    first_timestamp_ms: Option<u64>,
    last_timestamp_ms: Option<u64>,
    timestamp_drift_ms: i64,
    max_timestamp_drift_ms: u64,
    last_sequence_number: Option<u64>,
    sequence_gaps: u64,
    sequence_regressions: u64,
}

/// A copy of the figures of a [`StreamHealth`] at one moment.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, serde::Serialize)]
#[non_exhaustive]
pub struct StreamHealthSnapshot {
    /// `media` frames observed, duplicates included.
    pub frames: u64,
    /// Decoded payload bytes of the frames that were not duplicates.
    pub payload_bytes: u64,
    /// Duration of that payload, in milliseconds.
    pub audio_ms: u64,
    /// Times the chunk number jumped forward by more than one.
    pub gaps: u64,
    /// Chunk numbers skipped by those jumps and not filled in later.
    pub missing_chunks: u64,
    /// Frames whose chunk number had already been seen.
    pub duplicates: u64,
    /// Frames older than the highest chunk seen that were not duplicates (late arrivals), plus
    /// frames too old (more than 128 chunks back) to tell.
    pub out_of_order: u64,
    /// Highest `media.chunk` seen.
    pub last_chunk: Option<u64>,
    /// `media.timestamp` of the frame with the highest chunk.
    pub last_timestamp_ms: Option<u64>,
    /// Drift of the latest in-order frame, in ms (positive: timestamps ahead of received audio).
    pub timestamp_drift_ms: i64,
    /// Largest absolute drift seen, in ms.
    pub max_timestamp_drift_ms: u64,
    /// `sequenceNumber` values skipped (only counted through [`StreamHealth::observe_message`]
    /// or [`StreamHealth::observe_sequence_number`]).
    pub sequence_gaps: u64,
    /// `sequenceNumber` values that did not increase.
    pub sequence_regressions: u64,
}

impl Default for StreamHealth {
    fn default() -> Self {
        Self::with_bytes_per_ms(DEFAULT_BYTES_PER_MS)
    }
}

impl StreamHealth {
    /// A tracker for Twilio's 8 kHz mono mu-law (8 payload bytes per ms).
    #[must_use]
    pub fn new() -> Self {
        Self::default()
    }

    /// A tracker for the format announced in `start` (falls back to 8 bytes/ms when the format
    /// has no whole number of bytes per millisecond).
    #[must_use]
    pub fn for_format(format: &MediaFormat) -> Self {
        Self::with_bytes_per_ms(format.bytes_per_ms().unwrap_or(DEFAULT_BYTES_PER_MS))
    }

    fn with_bytes_per_ms(bytes_per_ms: u64) -> Self {
        Self {
            bytes_per_ms: bytes_per_ms.max(1),
            frames: 0,
            payload_bytes: 0,
            highest_chunk: None,
            recent_chunks: 0,
            gaps: 0,
            missing_chunks: 0,
            duplicates: 0,
            out_of_order: 0,
            first_timestamp_ms: None,
            last_timestamp_ms: None,
            timestamp_drift_ms: 0,
            max_timestamp_drift_ms: 0,
            last_sequence_number: None,
            sequence_gaps: 0,
            sequence_regressions: 0,
        }
    }

    /// Follow every message of the socket: `sequenceNumber` for all of them, and
    /// [`StreamHealth::observe`] for `media`.
    pub fn observe_message(&mut self, message: &InboundMessage) {
        if let Some(sequence_number) = message.sequence_number() {
            self.observe_sequence_number(sequence_number);
        }
        if let InboundMessage::Media(media) = message {
            self.observe(media);
        }
    }

    /// Follow the socket-wide `sequenceNumber` (it counts every message, not only `media`, so
    /// feed it from every message or not at all).
    pub fn observe_sequence_number(&mut self, sequence_number: u64) {
        match self.last_sequence_number {
            Some(last) if sequence_number <= last => self.sequence_regressions += 1,
            Some(last) => {
                self.sequence_gaps += sequence_number - last - 1;
                self.last_sequence_number = Some(sequence_number);
            }
            None => self.last_sequence_number = Some(sequence_number),
        }
    }

    /// Account for one `media` frame of the tracked track.
    pub fn observe(&mut self, media: &Media) {
        self.frames += 1;
        let chunk = media.chunk;
        let Some(highest) = self.highest_chunk else {
            self.highest_chunk = Some(chunk);
            self.recent_chunks = 1;
            self.first_timestamp_ms = Some(media.timestamp_ms);
            self.last_timestamp_ms = Some(media.timestamp_ms);
            self.add_payload(media.payload.len());
            return;
        };
        if chunk > highest {
            let ahead = chunk - highest;
            if ahead > 1 {
                self.gaps += 1;
                self.missing_chunks += ahead - 1;
            }
            self.recent_chunks = if ahead >= CHUNK_WINDOW {
                1
            } else {
                (self.recent_chunks << ahead) | 1
            };
            self.highest_chunk = Some(chunk);
            self.last_timestamp_ms = Some(media.timestamp_ms);
            self.record_drift(media.timestamp_ms);
            self.add_payload(media.payload.len());
            return;
        }
        let behind = highest - chunk;
        if behind < CHUNK_WINDOW {
            let bit = 1u128 << behind;
            if self.recent_chunks & bit != 0 {
                self.duplicates += 1;
                return;
            }
            self.recent_chunks |= bit;
            self.missing_chunks = self.missing_chunks.saturating_sub(1);
        }
        self.out_of_order += 1;
        self.add_payload(media.payload.len());
    }

    fn add_payload(&mut self, len: usize) {
        self.payload_bytes = self
            .payload_bytes
            .saturating_add(u64::try_from(len).unwrap_or(u64::MAX));
    }

    /// Drift of an in-order frame, before its own payload is counted.
    fn record_drift(&mut self, timestamp_ms: u64) {
        let first = self.first_timestamp_ms.unwrap_or(timestamp_ms);
        let expected = i128::from(first) + i128::from(self.payload_bytes / self.bytes_per_ms);
        let drift = i128::from(timestamp_ms) - expected;
        self.timestamp_drift_ms =
            i64::try_from(drift).unwrap_or(if drift < 0 { i64::MIN } else { i64::MAX });
        self.max_timestamp_drift_ms = self
            .max_timestamp_drift_ms
            .max(self.timestamp_drift_ms.unsigned_abs());
    }

    /// The figures so far.
    #[must_use]
    pub fn snapshot(&self) -> StreamHealthSnapshot {
        StreamHealthSnapshot {
            frames: self.frames,
            payload_bytes: self.payload_bytes,
            audio_ms: self.payload_bytes / self.bytes_per_ms,
            gaps: self.gaps,
            missing_chunks: self.missing_chunks,
            duplicates: self.duplicates,
            out_of_order: self.out_of_order,
            last_chunk: self.highest_chunk,
            last_timestamp_ms: self.last_timestamp_ms,
            timestamp_drift_ms: self.timestamp_drift_ms,
            max_timestamp_drift_ms: self.max_timestamp_drift_ms,
            sequence_gaps: self.sequence_gaps,
            sequence_regressions: self.sequence_regressions,
        }
    }
}

//! Sans-IO bookkeeping for one Speech-to-Text session: batching, the replay buffer and the
//! rotation deadline. No clock, socket or task of its own: the driver in [`crate::stt`] feeds
//! inputs (`handle_*`) with the current time and drains requests with `poll_request` after every
//! input, then sleeps until `poll_timeout` and calls `handle_timeout`.
//!
//! Offsets are counted in bytes of 8 kHz mu-law (8 bytes per millisecond). Each gRPC stream has
//! its own timeline starting at 0 (Google's `result_end_time` is relative to the stream); the
//! session timeline spans all streams of one call.

use std::collections::VecDeque;
use std::time::{Duration, Instant};

use bytes::Bytes;

/// Bytes of 8 kHz mu-law audio per millisecond.
pub(crate) const MULAW_BYTES_PER_MS: u64 = 8;

pub(crate) fn bytes_to_duration(bytes: u64) -> Duration {
    Duration::from_micros(bytes * 1000 / MULAW_BYTES_PER_MS)
}

fn duration_to_bytes(duration: Duration) -> u64 {
    u64::try_from(duration.as_micros() * u128::from(MULAW_BYTES_PER_MS) / 1000).unwrap_or(u64::MAX)
}

/// Batching, replay and rotation state of one STT session.
#[derive(Debug)]
pub(crate) struct SttAudioLedger {
    batch_bytes: usize,
    batch_interval: Duration,
    replay_limit_bytes: usize,
    rotate_after: Duration,
    /// Audio received but not yet sent (less than one batch).
    pending: Vec<u8>,
    pending_since: Option<Instant>,
    /// Audio sent on the current stream after the last final result.
    unconfirmed: VecDeque<u8>,
    /// Stream-timeline offset of `unconfirmed[0]`.
    unconfirmed_stream_offset: u64,
    /// Session-timeline offset of the current stream's first byte.
    stream_base: u64,
    stream_opened_at: Option<Instant>,
    outgoing: VecDeque<Bytes>,
}

impl SttAudioLedger {
    pub(crate) fn new(batch_ms: u32, replay_limit: Duration, rotate_after: Duration) -> Self {
        let batch_bytes = usize::try_from(u64::from(batch_ms) * MULAW_BYTES_PER_MS)
            .unwrap_or(usize::MAX)
            .max(1);
        let replay_limit_bytes =
            usize::try_from(duration_to_bytes(replay_limit)).unwrap_or(usize::MAX);
        Self {
            batch_bytes,
            batch_interval: Duration::from_millis(u64::from(batch_ms)),
            replay_limit_bytes,
            rotate_after,
            pending: Vec::with_capacity(batch_bytes),
            pending_since: None,
            unconfirmed: VecDeque::new(),
            unconfirmed_stream_offset: 0,
            stream_base: 0,
            stream_opened_at: None,
            outgoing: VecDeque::new(),
        }
    }

    /// A new gRPC stream starts at `now`: requests not yet taken are discarded and the audio
    /// sent after the last final result is queued again (as the start of the new stream).
    pub(crate) fn begin_stream(&mut self, now: Instant) {
        self.stream_base += self.unconfirmed_stream_offset;
        self.unconfirmed_stream_offset = 0;
        self.outgoing.clear();
        let replay: Vec<u8> = self.unconfirmed.iter().copied().collect();
        for chunk in replay.chunks(self.batch_bytes) {
            self.outgoing.push_back(Bytes::copy_from_slice(chunk));
        }
        self.stream_opened_at = Some(now);
    }

    /// Caller audio arrived at `now`.
    pub(crate) fn handle_audio(&mut self, now: Instant, mulaw: &[u8]) {
        if mulaw.is_empty() {
            return;
        }
        if self.pending.is_empty() {
            self.pending_since = Some(now);
        }
        self.pending.extend_from_slice(mulaw);
        while self.pending.len() >= self.batch_bytes {
            let rest = self.pending.split_off(self.batch_bytes);
            let batch = std::mem::replace(&mut self.pending, rest);
            self.send(batch);
        }
        if self.pending.is_empty() {
            self.pending_since = None;
        }
    }

    /// A final result ending at `result_end` (stream timeline) arrived: the audio up to there
    /// never needs replaying. Returns the end on the session timeline.
    pub(crate) fn handle_final(&mut self, result_end: Duration) -> Duration {
        let confirmed = duration_to_bytes(result_end);
        if confirmed > self.unconfirmed_stream_offset {
            let drop_len = usize::try_from(confirmed - self.unconfirmed_stream_offset)
                .unwrap_or(usize::MAX)
                .min(self.unconfirmed.len());
            self.unconfirmed.drain(..drop_len);
            self.unconfirmed_stream_offset += drop_len as u64;
        }
        bytes_to_duration(self.stream_base) + result_end
    }

    /// Sends a partial batch whose batching interval has elapsed.
    pub(crate) fn handle_timeout(&mut self, now: Instant) {
        if self
            .pending_since
            .is_some_and(|since| now >= since + self.batch_interval)
        {
            self.flush();
        }
    }

    /// Sends whatever is pending now (used when the caller closes the stream).
    pub(crate) fn flush(&mut self) {
        self.pending_since = None;
        if !self.pending.is_empty() {
            let batch = std::mem::take(&mut self.pending);
            self.send(batch);
        }
    }

    /// The next audio request for the current stream.
    #[must_use]
    pub(crate) fn poll_request(&mut self) -> Option<Bytes> {
        self.outgoing.pop_front()
    }

    /// When `handle_timeout` (or a rotation) is next due.
    #[must_use]
    pub(crate) fn poll_timeout(&self) -> Option<Instant> {
        let flush_at = self.pending_since.map(|since| since + self.batch_interval);
        let rotate_at = self
            .stream_opened_at
            .map(|opened| opened + self.rotate_after);
        match (flush_at, rotate_at) {
            (Some(a), Some(b)) => Some(a.min(b)),
            (a, b) => a.or(b),
        }
    }

    /// Whether the current stream has reached its rotation age at `now`.
    #[must_use]
    pub(crate) fn rotation_due(&self, now: Instant) -> bool {
        self.stream_opened_at
            .is_some_and(|opened| now >= opened + self.rotate_after)
    }

    /// Bytes currently held for replay.
    #[cfg(test)]
    pub(crate) fn replay_len(&self) -> usize {
        self.unconfirmed.len()
    }

    fn send(&mut self, batch: Vec<u8>) {
        self.unconfirmed.extend(batch.iter().copied());
        let excess = self
            .unconfirmed
            .len()
            .saturating_sub(self.replay_limit_bytes);
        if excess > 0 {
            self.unconfirmed.drain(..excess);
            self.unconfirmed_stream_offset += excess as u64;
        }
        self.outgoing.push_back(Bytes::from(batch));
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn drain(ledger: &mut SttAudioLedger) -> Vec<Bytes> {
        std::iter::from_fn(|| ledger.poll_request()).collect()
    }

    #[test]
    fn twenty_ms_frames_are_batched_into_100_ms_requests() {
        let t0 = Instant::now();
        let mut ledger =
            SttAudioLedger::new(100, Duration::from_secs(30), Duration::from_secs(290));
        ledger.begin_stream(t0);
        for i in 0..12u8 {
            ledger.handle_audio(t0 + Duration::from_millis(20 * u64::from(i)), &[i; 160]);
        }
        let sent = drain(&mut ledger);
        assert_eq!(
            sent.iter().map(Bytes::len).collect::<Vec<_>>(),
            vec![800, 800]
        );
        assert_eq!(&sent[1][..160], &[5u8; 160]);
        // The remaining 320 bytes go out once 100 ms have passed since the first of them.
        let due = ledger.poll_timeout().unwrap();
        assert_eq!(due, t0 + Duration::from_millis(200 + 100));
        ledger.handle_timeout(due - Duration::from_millis(1));
        assert!(ledger.poll_request().is_none());
        ledger.handle_timeout(due);
        assert_eq!(
            drain(&mut ledger)
                .iter()
                .map(Bytes::len)
                .collect::<Vec<_>>(),
            vec![320]
        );
    }

    #[test]
    fn new_stream_replays_audio_after_the_last_final_and_shifts_timings() {
        let t0 = Instant::now();
        let mut ledger = SttAudioLedger::new(100, Duration::from_secs(30), Duration::from_secs(1));
        ledger.begin_stream(t0);
        let audio: Vec<u8> = (0..2400u32).map(|i| (i / 8) as u8).collect(); // 300 ms
        ledger.handle_audio(t0, &audio);
        assert_eq!(drain(&mut ledger).len(), 3);
        // Google finalized the first 120 ms of this stream.
        assert_eq!(
            ledger.handle_final(Duration::from_millis(120)),
            Duration::from_millis(120)
        );
        assert_eq!(ledger.replay_len(), 2400 - 960);
        assert!(ledger.rotation_due(t0 + Duration::from_secs(1)));
        ledger.begin_stream(t0 + Duration::from_secs(1));
        let replayed: Vec<u8> = drain(&mut ledger).concat();
        assert_eq!(replayed, audio[960..]);
        // A final 100 ms into the new stream is 220 ms into the session.
        assert_eq!(
            ledger.handle_final(Duration::from_millis(100)),
            Duration::from_millis(220)
        );
        assert!(!ledger.rotation_due(t0 + Duration::from_millis(1500)));
    }

    #[test]
    fn replay_buffer_keeps_only_the_most_recent_audio() {
        let t0 = Instant::now();
        let mut ledger =
            SttAudioLedger::new(100, Duration::from_millis(200), Duration::from_secs(290));
        ledger.begin_stream(t0);
        ledger.handle_audio(t0, &[1u8; 8000]); // one second without any final
        let _ = drain(&mut ledger);
        assert_eq!(ledger.replay_len(), 1600);
        ledger.begin_stream(t0);
        assert_eq!(drain(&mut ledger).concat().len(), 1600);
        // The dropped 800 ms still count on the session timeline.
        assert_eq!(
            ledger.handle_final(Duration::from_millis(200)),
            Duration::from_millis(1000)
        );
    }
}

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

/// Quiet audio kept in front of the replay buffer: 1 s of lead-in before what the caller said.
const QUIET_LEAD_IN_BYTES: usize = 8_000;

/// Quiet after the caller's last speech beyond which that speech is no longer kept for replay
/// (3 s: Google ends an utterance well within that).
const QUIET_GIVE_UP_BYTES: usize = 24_000;

/// Mean absolute level (linear 16-bit) below which a request counts as quiet: about -44 dBFS,
/// under any speech and above digital silence and ordinary line hiss.
const QUIET_MEAN_ABS: u32 = 200;

/// Whether a request's audio is quiet enough to drop from the front of the replay buffer.
fn is_quiet(mulaw: &[u8]) -> bool {
    if mulaw.is_empty() {
        return true;
    }
    // Every fourth sample is plenty for a level over 100 ms, and a quarter of the cost: this
    // runs on every request of every call (callgrind: 7 k instructions per request before).
    let (total, count) = mulaw
        .iter()
        .step_by(4)
        .fold((0u32, 0u32), |(total, count), &byte| {
            (
                total + u32::from(mulaw::decode_sample(byte).unsigned_abs()),
                count + 1,
            )
        });
    total / count.max(1) <= QUIET_MEAN_ABS
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
    /// Audio sent on the current stream after the last final result: the very requests sent
    /// (shared, not copied), oldest first; the first may have been trimmed at its front.
    unconfirmed: VecDeque<Bytes>,
    /// Bytes in `unconfirmed`.
    unconfirmed_len: usize,
    /// Bytes at the front of `unconfirmed` that are quiet (before anything the caller said).
    quiet_prefix_len: usize,
    /// Bytes at the end of `unconfirmed` that are quiet (since the caller last spoke).
    quiet_tail_len: usize,
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
            unconfirmed_len: 0,
            quiet_prefix_len: 0,
            quiet_tail_len: 0,
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
        self.outgoing.extend(self.unconfirmed.iter().cloned());
        self.stream_opened_at = Some(now);
    }

    /// Caller audio arrived at `now`. A whole batch arriving on its own (what
    /// [`crate::SttStream`] hands over) is sent as it is, without a copy.
    pub(crate) fn handle_audio_bytes(&mut self, now: Instant, mulaw: Bytes) {
        if self.pending.is_empty() && mulaw.len() == self.batch_bytes {
            self.send(mulaw);
        } else {
            self.handle_audio(now, &mulaw);
        }
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
            self.send(Bytes::from(batch));
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
            let drop_len =
                usize::try_from(confirmed - self.unconfirmed_stream_offset).unwrap_or(usize::MAX);
            self.drop_front(drop_len);
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
            self.send(Bytes::from(batch));
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
        self.unconfirmed_len
    }

    fn send(&mut self, batch: Bytes) {
        let quiet = is_quiet(&batch);
        if quiet && self.quiet_prefix_len == self.unconfirmed_len {
            self.quiet_prefix_len += batch.len();
        }
        self.quiet_tail_len = if quiet {
            self.quiet_tail_len + batch.len()
        } else {
            0
        };
        self.unconfirmed_len += batch.len();
        self.unconfirmed.push_back(batch.clone());
        self.outgoing.push_back(batch);
        let excess = self.unconfirmed_len.saturating_sub(self.replay_limit_bytes);
        self.drop_front(excess);
        // Quiet audio at the front (the caller listening while the agent talks, which gets no
        // final) need not be replayed beyond a short lead-in: without this trim every call
        // would hold the whole replay limit of mostly silence.
        if self.quiet_prefix_len > QUIET_LEAD_IN_BYTES {
            self.drop_front(self.quiet_prefix_len - QUIET_LEAD_IN_BYTES);
        }
        // Speech that a long quiet followed without a final (its end cut off by a final that
        // stopped short, or noise Google ignored) gets no final any more: keep the lead-in.
        if self.quiet_tail_len > QUIET_GIVE_UP_BYTES {
            self.drop_front(self.unconfirmed_len - QUIET_LEAD_IN_BYTES);
        }
    }

    /// Forgets the oldest `len` bytes of the replay buffer (they stay counted on the timeline).
    fn drop_front(&mut self, len: usize) {
        let mut left = len.min(self.unconfirmed_len);
        if left == 0 {
            // Called on every request with nothing to drop: no rescan of the front.
            return;
        }
        self.unconfirmed_len -= left;
        // Cutting past the quiet prefix (a final, or the replay limit) leaves a new front
        // whose quietness is measured below.
        let past_quiet_prefix = left >= self.quiet_prefix_len;
        self.quiet_prefix_len = self.quiet_prefix_len.saturating_sub(left);
        self.quiet_tail_len = self.quiet_tail_len.min(self.unconfirmed_len);
        self.unconfirmed_stream_offset += left as u64;
        while left > 0 {
            let Some(head) = self.unconfirmed.front_mut() else {
                break;
            };
            if head.len() <= left {
                left -= head.len();
                self.unconfirmed.pop_front();
            } else {
                let _ = head.split_to(left);
                left = 0;
            }
        }
        if past_quiet_prefix {
            self.quiet_prefix_len = 0;
            for request in &self.unconfirmed {
                if !is_quiet(request) {
                    break;
                }
                self.quiet_prefix_len += request.len();
            }
        }
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

    #[test]
    fn quiet_audio_before_speech_is_not_kept_for_replay_beyond_a_lead_in() {
        let t0 = Instant::now();
        let mut ledger =
            SttAudioLedger::new(100, Duration::from_secs(10), Duration::from_secs(290));
        ledger.begin_stream(t0);
        // Five seconds of the caller listening (digital silence), no final result.
        for _ in 0..50 {
            ledger.handle_audio_bytes(t0, Bytes::from(vec![mulaw::SILENCE; 800]));
        }
        assert_eq!(ledger.replay_len(), QUIET_LEAD_IN_BYTES);
        // Then 300 ms of speech: kept in full, with the one-second lead-in before it.
        let speech: Vec<u8> = (0..2400u32).map(|i| (i % 64) as u8).collect();
        assert!(!is_quiet(&speech));
        ledger.handle_audio(t0, &speech);
        let _ = drain(&mut ledger);
        assert_eq!(ledger.replay_len(), QUIET_LEAD_IN_BYTES + 2400);
        // The replay starts 4 s into the session: the trimmed silence still counts on the
        // timeline, so a final 1.3 s into the new stream is 5.3 s into the session.
        ledger.begin_stream(t0);
        let replayed: Vec<u8> = drain(&mut ledger).concat();
        assert_eq!(&replayed[QUIET_LEAD_IN_BYTES..], &speech[..]);
        assert_eq!(
            ledger.handle_final(Duration::from_millis(1300)),
            Duration::from_millis(5300)
        );
        assert_eq!(ledger.replay_len(), 0);
        // After a final the caller listens again: that silence is trimmed the same way.
        ledger.handle_audio(t0, &speech[..800]);
        assert_eq!(
            ledger.handle_final(Duration::from_millis(1350)),
            Duration::from_millis(5350)
        );
        for _ in 0..50 {
            ledger.handle_audio_bytes(t0, Bytes::from(vec![mulaw::SILENCE; 800]));
        }
        assert_eq!(ledger.replay_len(), QUIET_LEAD_IN_BYTES);
    }

    #[test]
    fn whole_batches_are_sent_and_kept_without_copies() {
        let t0 = Instant::now();
        let mut ledger =
            SttAudioLedger::new(100, Duration::from_secs(10), Duration::from_secs(290));
        ledger.begin_stream(t0);
        let batch = Bytes::from(vec![7u8; 800]);
        ledger.handle_audio_bytes(t0, batch.clone());
        let sent = drain(&mut ledger);
        assert_eq!(sent.len(), 1);
        assert_eq!(
            sent[0].as_ptr(),
            batch.as_ptr(),
            "the request is the batch itself"
        );
        // A final in the middle of a request trims the replay inside that request.
        assert_eq!(
            ledger.handle_final(Duration::from_millis(40)),
            Duration::from_millis(40)
        );
        assert_eq!(ledger.replay_len(), 480);
        ledger.begin_stream(t0);
        assert_eq!(drain(&mut ledger).concat(), vec![7u8; 480]);
    }
}

//! Real-time pacing of outbound audio: a small lead at Twilio, drift-free over a long call.

use std::collections::VecDeque;
use std::time::{Duration, Instant};

use bytes::Bytes;
use turn::TurnId;

/// Bytes in one 20 ms frame of 8 kHz mu-law.
const FRAME_BYTES: usize = mulaw::FRAME_BYTES;

/// About one second of audio: the piece size an unshared clip is split into when queued.
const SEGMENT_BYTES: usize = 8_000;

/// Duration of `bytes` of 8 kHz mu-law (125 µs per byte), exact.
fn mulaw_span(bytes: u64) -> Duration {
    Duration::from_micros(bytes.saturating_mul(125))
}

/// Something queued for the socket, in order.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Outgoing {
    /// Agent audio: as returned by [`Pacer::poll_send`], one message (the chunk size, 20 ms
    /// by default; the last of a clip may be shorter); while queued, the rest of a clip.
    Media {
        /// The agent turn it belongs to.
        turn: TurnId,
        /// Headerless mu-law.
        payload: Bytes,
    },
    /// A Twilio mark, sent once every frame queued before it has been sent.
    Mark {
        /// The agent turn it belongs to.
        turn: TurnId,
        /// The mark's name.
        name: String,
    },
}

/// Queues agent audio and releases it frame by frame in real time.
///
/// Frame `k` of a contiguous run is due at `t0 + offset_k - lead`, where `offset_k` is the
/// audio duration queued before it (exact, from the byte count) and `t0` the moment the run
/// began. Schedules are computed from `t0`, never by adding "20 ms" to the previous send, so
/// the clock does not drift however long the call is, and Twilio never holds much more than
/// `lead` of our audio: a `clear` silences us within about `lead`. When the queue runs dry and
/// Twilio has played everything (`now` past the run's end), the next audio starts a new run.
/// Marks go out as soon as every frame before them has been sent.
///
/// With a burst ([`with_burst`](Self::with_burst)), the frames falling due within the burst
/// after the first one go out together with it: still one message per frame, but one socket
/// write and one timer wake-up per burst instead of per frame. No frame leaves later than
/// without a burst; Twilio then holds between `lead` and `lead + burst` of our audio, all of
/// which a `clear` drops. Sans-IO: the driver asks
/// [`poll_send`](Self::poll_send) after every input and sleeps until
/// [`poll_timeout`](Self::poll_timeout).
#[derive(Debug)]
pub struct Pacer {
    /// Whole clips and marks in order; a clip is cut into messages only as they fall due, so
    /// the queue holds one entry per clip, not one per 20 ms frame.
    queue: VecDeque<Outgoing>,
    lead: Duration,
    /// Bytes of audio per [`Outgoing::Media`] (a whole number of 20 ms frames).
    chunk_bytes: usize,
    /// Messages due before `now + burst` go out with the one due at `now`.
    burst: Duration,
    /// End of the burst being sent: messages due before it go out at once.
    burst_until: Option<Instant>,
    run: Option<Run>,
    last_frame_plays_at: Option<Instant>,
    /// When the message at the front falls due, as `poll_send` last told the driver (it
    /// returned `None` for it): the wake-up the driver owes the pacer.
    waiting_for: Option<Instant>,
    /// How late the latest awaited message left (see [`Pacer::take_lateness`]).
    lateness: Option<Duration>,
}

#[derive(Debug, Clone, Copy)]
struct Run {
    t0: Instant,
    sent_bytes: u64,
}

impl Run {
    fn due(&self, lead: Duration) -> Instant {
        let at = self.t0 + mulaw_span(self.sent_bytes);
        at.checked_sub(lead).unwrap_or(at)
    }

    fn playout_end(&self) -> Instant {
        self.t0 + mulaw_span(self.sent_bytes)
    }
}

impl Pacer {
    /// A pacer that keeps about `lead` of audio queued at Twilio (60-100 ms recommended).
    pub fn new(lead: Duration) -> Self {
        Pacer {
            queue: VecDeque::new(),
            lead,
            chunk_bytes: FRAME_BYTES,
            burst: Duration::ZERO,
            burst_until: None,
            run: None,
            last_frame_plays_at: None,
            waiting_for: None,
            lateness: None,
        }
    }

    /// Send `chunk` of audio per message instead of 20 ms (rounded to whole 20 ms frames, at
    /// least one). Each message is still due `lead` before its first sample plays, so Twilio
    /// holds between `lead` and `lead + chunk` of our audio.
    #[must_use]
    pub fn with_chunk(mut self, chunk: Duration) -> Self {
        let frames = (chunk.as_millis() / u128::from(mulaw::FRAME_MS)).max(1);
        self.chunk_bytes = usize::try_from(frames).map_or(FRAME_BYTES, |f| f * FRAME_BYTES);
        self
    }

    /// Send the messages falling due within `burst` of the first one together with it (a
    /// whole number of 20 ms frames is sensible: 100 ms means one write per 100 ms; zero or one
    /// message's worth means every message on its own deadline, the default).
    #[must_use]
    pub fn with_burst(mut self, burst: Duration) -> Self {
        self.burst = burst;
        self
    }

    /// Queue `audio` of `turn`; it goes out in messages of the chunk size (20 ms unless
    /// [`with_chunk`](Self::with_chunk) said otherwise; a clip's last may be shorter). No copy.
    ///
    /// A long clip that nothing else holds (a reply just synthesized for this call) is copied
    /// into separate pieces of about a second, so what has been sent is freed as the call goes
    /// instead of the whole reply staying allocated until its last frame; a shared clip (the
    /// phrase cache's greeting, held once for every call) is only sliced.
    pub fn push_audio(&mut self, turn: TurnId, audio: &Bytes) {
        if audio.is_empty() {
            return;
        }
        let piece_bytes = SEGMENT_BYTES.div_ceil(self.chunk_bytes) * self.chunk_bytes;
        if audio.len() > piece_bytes && audio.is_unique() {
            for piece in audio.chunks(piece_bytes) {
                self.queue.push_back(Outgoing::Media {
                    turn,
                    payload: Bytes::copy_from_slice(piece),
                });
            }
        } else {
            self.queue.push_back(Outgoing::Media {
                turn,
                payload: audio.clone(),
            });
        }
    }

    /// Queue a mark after everything queued so far.
    pub fn push_mark(&mut self, turn: TurnId, name: String) {
        self.queue.push_back(Outgoing::Mark { turn, name });
    }

    /// Insert a mark right after the first queued frame of `turn` that is still waiting.
    /// Returns false when no frame of `turn` is queued.
    pub fn insert_mark_after_first_frame(&mut self, turn: TurnId, name: String) -> bool {
        let position = self
            .queue
            .iter()
            .position(|item| matches!(item, Outgoing::Media { turn: t, .. } if *t == turn));
        let Some(index) = position else {
            return false;
        };
        // Cut the clip after its first message so the mark can sit right behind it.
        let chunk_bytes = self.chunk_bytes;
        let rest = match &mut self.queue[index] {
            Outgoing::Media { payload, .. } if payload.len() > chunk_bytes => {
                Some(payload.split_off(chunk_bytes))
            }
            _ => None,
        };
        self.queue.insert(index + 1, Outgoing::Mark { turn, name });
        if let Some(rest) = rest {
            self.queue.insert(
                index + 2,
                Outgoing::Media {
                    turn,
                    payload: rest,
                },
            );
        }
        true
    }

    /// Drop everything queued (Twilio `clear`); returns how many frames were dropped. The next
    /// audio starts a new run.
    pub fn clear(&mut self) -> usize {
        let frames = self
            .queue
            .iter()
            .map(|item| match item {
                Outgoing::Media { payload, .. } => payload.len().div_ceil(FRAME_BYTES),
                Outgoing::Mark { .. } => 0,
            })
            .sum();
        self.queue.clear();
        self.run = None;
        self.burst_until = None;
        self.waiting_for = None;
        frames
    }

    /// The next item due at `now`, if any. Call until it returns `None`.
    pub fn poll_send(&mut self, now: Instant) -> Option<Outgoing> {
        match self.queue.front()? {
            Outgoing::Mark { .. } => self.queue.pop_front(),
            Outgoing::Media { payload, .. } => {
                let len = payload.len().min(self.chunk_bytes) as u64;
                let run = match self.run {
                    Some(run) if run.playout_end() >= now => run,
                    // Idle (or Twilio has played everything): a new run starts now.
                    _ => Run {
                        t0: now,
                        sent_bytes: 0,
                    },
                };
                let due = run.due(self.lead);
                if due <= now {
                    if self.burst_until.is_none_or(|until| until <= now) {
                        self.burst_until = Some(now + self.burst);
                    }
                } else if !self.in_burst(due) {
                    self.run = Some(run);
                    self.waiting_for = Some(due);
                    return None;
                }
                if let Some(awaited) = self.waiting_for.take() {
                    self.lateness = Some(now.saturating_duration_since(awaited));
                }
                self.last_frame_plays_at = Some(run.playout_end());
                self.run = Some(Run {
                    t0: run.t0,
                    sent_bytes: run.sent_bytes + len,
                });
                self.take_message()
            }
        }
    }

    /// How late the driver released the latest message it had to wait for: the time between
    /// the deadline [`poll_send`](Self::poll_send) left it waiting for (what
    /// [`poll_timeout`](Self::poll_timeout) said) and the `now` it was finally sent at. Only
    /// messages the driver was told to wait for are timed: not one sent as soon as it was
    /// queued (the start of a reply, audio that came late from synthesis) and not the rest of
    /// a burst. `None` when no such message left since the last call; taking resets it.
    ///
    /// This is the server's own share of the outbound jitter a caller hears: the async
    /// runtime's lateness in waking the call, plus the time to reach this call.
    pub fn take_lateness(&mut self) -> Option<Duration> {
        self.lateness.take()
    }

    /// Whether a message due at `due` belongs to the burst being sent.
    fn in_burst(&self, due: Instant) -> bool {
        self.burst_until.is_some_and(|until| due < until)
    }

    /// Removes the next message from the front: a whole clip if it fits in one message, else
    /// its first chunk (the rest stays queued, sharing the same buffer).
    fn take_message(&mut self) -> Option<Outgoing> {
        match self.queue.front_mut()? {
            Outgoing::Media { turn, payload } if payload.len() > self.chunk_bytes => {
                Some(Outgoing::Media {
                    turn: *turn,
                    payload: payload.split_to(self.chunk_bytes),
                })
            }
            _ => self.queue.pop_front(),
        }
    }

    /// When the next queued item becomes due (`now` if it already is); `None` when nothing is
    /// queued.
    pub fn poll_timeout(&self, now: Instant) -> Option<Instant> {
        match (self.queue.front()?, self.run) {
            (Outgoing::Media { .. }, Some(run)) if run.playout_end() >= now => {
                let due = run.due(self.lead);
                Some(if self.in_burst(due) {
                    now
                } else {
                    due.max(now)
                })
            }
            _ => Some(now),
        }
    }

    /// How long until Twilio will have played everything queued here and sent so far: the
    /// audio still queued plus what was sent and has not played yet (zero when idle).
    pub fn audio_ahead(&self, now: Instant) -> Duration {
        let queued: u64 = self
            .queue
            .iter()
            .map(|item| match item {
                Outgoing::Media { payload, .. } => payload.len() as u64,
                Outgoing::Mark { .. } => 0,
            })
            .sum();
        let sent_unplayed = self
            .playout_end()
            .map_or(Duration::ZERO, |end| end.saturating_duration_since(now));
        sent_unplayed + mulaw_span(queued)
    }

    /// Whether anything is queued.
    pub fn is_empty(&self) -> bool {
        self.queue.is_empty()
    }

    /// When Twilio starts playing the media frame most recently returned by
    /// [`poll_send`](Self::poll_send): its run's start plus the audio sent before it in the run
    /// (so later than the send by up to the lead). `None` before the first frame.
    pub fn last_frame_plays_at(&self) -> Option<Instant> {
        self.last_frame_plays_at
    }

    /// When Twilio will have played everything sent so far (`None` when idle).
    pub fn playout_end(&self) -> Option<Instant> {
        self.run.map(|run| run.playout_end())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn audio(ms: usize) -> Bytes {
        Bytes::from(vec![0x55u8; ms * 8])
    }

    #[test]
    fn audio_ahead_counts_queued_and_sent_but_unplayed_audio() {
        let t0 = Instant::now();
        let mut p = Pacer::new(Duration::from_millis(80));
        assert_eq!(p.audio_ahead(t0), Duration::ZERO);
        p.push_audio(TurnId(1), &audio(1_000));
        p.push_mark(TurnId(1), "m".into());
        assert_eq!(p.audio_ahead(t0), Duration::from_millis(1_000));
        // Everything due within the 80 ms lead goes out at t0: five frames, still unplayed.
        while p.poll_send(t0).is_some() {}
        assert_eq!(p.audio_ahead(t0), Duration::from_millis(1_000));
        // Driven every 20 ms for 500 ms: half has played, whatever was sent meanwhile.
        let later = t0 + Duration::from_millis(500);
        for tick in 1..=25 {
            while p.poll_send(t0 + Duration::from_millis(20 * tick)).is_some() {}
        }
        assert_eq!(p.audio_ahead(later), Duration::from_millis(500));
        // A stall (nothing polled for seconds) leaves the unsent rest ahead; it starts a new run.
        let stalled = t0 + Duration::from_secs(5);
        while p.poll_send(stalled).is_some() {}
        assert_eq!(p.audio_ahead(stalled), Duration::from_millis(400));
        let mut end = stalled;
        for _ in 0..20 {
            end += Duration::from_millis(20);
            while p.poll_send(end).is_some() {}
        }
        assert!(p.is_empty());
        assert_eq!(p.audio_ahead(end), Duration::ZERO);
    }

    /// Drive the pacer at exactly its own deadlines and return the send times of media frames.
    fn send_times(p: &mut Pacer, start: Instant, limit: usize) -> Vec<Duration> {
        let mut now = start;
        let mut out = Vec::new();
        while out.len() < limit {
            while let Some(item) = p.poll_send(now) {
                if matches!(item, Outgoing::Media { .. }) {
                    out.push(now - start);
                }
            }
            match p.poll_timeout(now) {
                Some(next) if next > now => now = next,
                Some(_) => {}
                None => break,
            }
        }
        out
    }

    #[test]
    fn lead_is_sent_at_once_then_one_frame_per_20ms() {
        let mut p = Pacer::new(Duration::from_millis(80));
        p.push_audio(TurnId(1), &audio(200));
        let times = send_times(&mut p, Instant::now(), 100);
        assert_eq!(times.len(), 10);
        // Frames at offsets 0..=80 ms are due at once; then frame k at k*20 - 80 ms.
        let ms: Vec<u128> = times.iter().map(Duration::as_millis).collect();
        assert_eq!(ms, vec![0, 0, 0, 0, 0, 20, 40, 60, 80, 100]);
    }

    #[test]
    fn chunked_messages_carry_whole_frames_and_keep_the_schedule() {
        let mut p = Pacer::new(Duration::from_millis(80)).with_chunk(Duration::from_millis(100));
        p.push_audio(TurnId(1), &audio(250));
        let start = Instant::now();
        let mut now = start;
        let mut sent = Vec::new();
        while sent.len() < 3 {
            while let Some(Outgoing::Media { payload, .. }) = p.poll_send(now) {
                sent.push(((now - start).as_millis(), payload.len()));
            }
            match p.poll_timeout(now) {
                Some(next) if next > now => now = next,
                _ => break,
            }
        }
        // 100 ms messages (the last one shorter), each due 80 ms before it starts playing.
        assert_eq!(sent, vec![(0, 800), (20, 800), (120, 400)]);
        // A chunk that is not a whole number of frames is rounded down to one.
        let mut odd = Pacer::new(Duration::ZERO).with_chunk(Duration::from_millis(50));
        odd.push_audio(TurnId(2), &audio(100));
        let Some(Outgoing::Media { payload, .. }) = odd.poll_send(start) else {
            panic!("the first message is due at once");
        };
        assert_eq!(payload.len(), 2 * FRAME_BYTES);
    }

    #[test]
    fn a_burst_sends_the_frames_due_within_it_at_once_and_none_later_than_without() {
        let start = Instant::now();
        let lead = Duration::from_millis(80);
        let mut plain = Pacer::new(lead);
        let mut burst = Pacer::new(lead).with_burst(Duration::from_millis(100));
        plain.push_audio(TurnId(1), &audio(500));
        burst.push_audio(TurnId(1), &audio(500));
        let plain_times = send_times(&mut plain, start, 100);
        let times = send_times(&mut burst, start, 100);
        let ms: Vec<u128> = times.iter().map(Duration::as_millis).collect();
        // At 0: the 80 ms lead plus everything due within 100 ms (frames at 0..=160 ms);
        // then every 100 ms the five frames falling due in it, one message each.
        let mut expected = vec![0; 9];
        for at in [100, 200, 300] {
            expected.extend([at; 5]);
        }
        expected.push(400);
        assert_eq!(ms, expected);
        assert_eq!(times.len(), plain_times.len());
        for (with, without) in times.iter().zip(&plain_times) {
            assert!(
                with <= without,
                "a frame left later in a burst: {with:?} > {without:?}"
            );
            assert!(*without - *with < Duration::from_millis(100));
        }
        // Twilio never holds more than lead + burst of audio.
        let mut p = Pacer::new(lead).with_burst(Duration::from_millis(100));
        p.push_audio(TurnId(2), &audio(2_000));
        let mut now = start;
        let mut wakes = 0;
        while let Some(next) = p.poll_timeout(now) {
            now = next.max(now);
            while p.poll_send(now).is_some() {}
            wakes += 1;
            let held = p.playout_end().unwrap().saturating_duration_since(now);
            assert!(
                held <= Duration::from_millis(180),
                "{held:?} queued at Twilio"
            );
        }
        // 2 s of audio in 20 wake-ups (one per 100 ms), not 100.
        assert_eq!(wakes, 20);
    }

    #[test]
    fn clear_ends_the_burst() {
        let start = Instant::now();
        let mut p = Pacer::new(Duration::ZERO).with_burst(Duration::from_millis(100));
        p.push_audio(TurnId(1), &audio(1_000));
        let mut first = 0;
        while p.poll_send(start).is_some() {
            first += 1;
        }
        assert_eq!(first, 5);
        assert_eq!(p.clear(), 45);
        // New audio 10 ms later starts a new run and a new burst from that moment.
        let later = start + Duration::from_millis(10);
        p.push_audio(TurnId(2), &audio(1_000));
        let mut second = 0;
        while p.poll_send(later).is_some() {
            second += 1;
        }
        assert_eq!(second, 5);
        assert_eq!(
            p.poll_timeout(later),
            Some(later + Duration::from_millis(100))
        );
    }

    #[test]
    fn an_hour_of_audio_does_not_drift() {
        let mut p = Pacer::new(Duration::from_millis(80));
        let frames = 3600 * 50;
        p.push_audio(TurnId(1), &audio(frames * 20));
        // Serve the pacer late by a varying jitter: the schedule must stay anchored at t0.
        let start = Instant::now();
        let mut now = start;
        let mut sent = 0usize;
        let mut last_send = Duration::ZERO;
        let mut jitter = 0u64;
        while sent < frames {
            while let Some(item) = p.poll_send(now) {
                assert!(matches!(item, Outgoing::Media { .. }));
                sent += 1;
                last_send = now - start;
            }
            if let Some(next) = p.poll_timeout(now) {
                jitter = (jitter * 7 + 3) % 5; // 0..4 ms late, deterministic
                now = next.max(now) + Duration::from_millis(jitter);
            }
        }
        let expected_last = Duration::from_millis((frames as u64 - 1) * 20 - 80);
        let error = last_send.abs_diff(expected_last);
        assert!(
            error <= Duration::from_millis(5),
            "last frame sent at {last_send:?}, schedule says {expected_last:?}"
        );
    }

    #[test]
    fn a_long_clip_is_one_queue_entry_cut_as_it_is_sent() {
        let mut p = Pacer::new(Duration::from_millis(80));
        let shared = audio(60_000); // a one-minute clip the phrase cache also holds
        let cache = shared.clone();
        p.push_audio(TurnId(1), &shared);
        p.push_mark(TurnId(1), "t1-0".into());
        assert_eq!(p.queue.len(), 2, "one clip and one mark, not 3,000 frames");
        assert!(
            matches!(&p.queue[0], Outgoing::Media { payload, .. } if payload.as_ptr() == cache.as_ptr()),
            "a shared clip is sliced, not copied"
        );
        let start = Instant::now();
        let mut sent = 0;
        while let Some(item) = p.poll_send(start) {
            assert!(
                matches!(&item, Outgoing::Media { payload, .. } if payload.len() == FRAME_BYTES)
            );
            sent += 1;
        }
        assert_eq!(sent, 5, "the lead's worth of frames");
        assert_eq!(
            p.clear(),
            3_000 - 5,
            "clear counts the frames left in the clip"
        );

        // A reply only this call holds is queued as one-second pieces of its own.
        let mut p = Pacer::new(Duration::from_millis(80));
        let reply = audio(2_500);
        p.push_audio(TurnId(2), &reply);
        drop(reply);
        let pieces: Vec<usize> = p
            .queue
            .iter()
            .map(|item| match item {
                Outgoing::Media { payload, .. } => payload.len(),
                Outgoing::Mark { .. } => 0,
            })
            .collect();
        assert_eq!(pieces, vec![8_000, 8_000, 4_000]);
    }

    #[test]
    fn marks_follow_their_audio_and_clear_drops_everything() {
        let mut p = Pacer::new(Duration::from_millis(60));
        let t = TurnId(3);
        p.push_audio(t, &audio(100));
        p.push_mark(t, "t3-0".into());
        assert!(p.insert_mark_after_first_frame(t, "t3-first".into()));
        let start = Instant::now();
        let mut items = Vec::new();
        while let Some(item) = p.poll_send(start) {
            items.push(item);
        }
        // 60 ms lead: frames at offsets 0, 20, 40, 60 due now; the first-frame mark after frame 1.
        assert!(matches!(&items[1], Outgoing::Mark { name, .. } if name == "t3-first"));
        assert_eq!(items.len(), 5);
        assert_eq!(p.clear(), 1, "one frame was still waiting");
        assert!(p.is_empty());
        assert!(p.poll_send(start + Duration::from_secs(1)).is_none());
    }

    #[test]
    fn each_frame_plays_at_its_run_start_plus_the_audio_before_it() {
        let mut p = Pacer::new(Duration::from_millis(80));
        let start = Instant::now();
        assert_eq!(p.last_frame_plays_at(), None);
        p.push_audio(TurnId(1), &audio(200));
        let mut now = start;
        let mut plays = Vec::new();
        while plays.len() < 10 {
            while let Some(item) = p.poll_send(now) {
                assert!(matches!(item, Outgoing::Media { .. }));
                let at = p.last_frame_plays_at().unwrap();
                plays.push((now - start, at - start));
            }
            match p.poll_timeout(now) {
                Some(next) => now = next.max(now + Duration::from_millis(1)),
                None => break,
            }
        }
        assert_eq!(plays.len(), 10);
        for (k, (sent, plays_at)) in plays.iter().enumerate() {
            assert_eq!(*plays_at, Duration::from_millis(20 * k as u64), "frame {k}");
            assert!(sent <= plays_at, "frame {k} sent after it should play");
            assert!(
                *plays_at - *sent <= Duration::from_millis(81),
                "frame {k} lead"
            );
        }
    }

    #[test]
    fn a_gap_after_playout_starts_a_new_run() {
        let mut p = Pacer::new(Duration::from_millis(80));
        let start = Instant::now();
        p.push_audio(TurnId(1), &audio(40));
        assert_eq!(send_times(&mut p, start, 10).len(), 2);
        // Twilio finishes at start + 40 ms; new audio at +1 s starts fresh with its lead.
        let later = start + Duration::from_secs(1);
        p.push_audio(TurnId(2), &audio(200));
        let times = send_times(&mut p, later, 100);
        let ms: Vec<u128> = times.iter().map(Duration::as_millis).collect();
        assert_eq!(ms, vec![0, 0, 0, 0, 0, 20, 40, 60, 80, 100]);
    }

    /// Sends everything due at `now`; returns how many media messages left.
    fn send_due(p: &mut Pacer, now: Instant) -> usize {
        let mut sent = 0;
        while let Some(item) = p.poll_send(now) {
            sent += usize::from(matches!(item, Outgoing::Media { .. }));
        }
        sent
    }

    #[test]
    fn lateness_is_timed_from_the_deadline_the_driver_was_given() {
        let ms = Duration::from_millis;
        let mut p = Pacer::new(ms(80));
        let start = Instant::now();
        p.push_audio(TurnId(1), &audio(1_000));
        // The lead leaves as soon as it is queued: nothing was awaited, nothing is timed.
        assert_eq!(send_due(&mut p, start), 5);
        assert_eq!(p.take_lateness(), None);
        // Woken exactly at the next deadline: on time.
        let due = p.poll_timeout(start).unwrap();
        assert_eq!(due, start + ms(20));
        assert_eq!(send_due(&mut p, due), 1);
        assert_eq!(p.take_lateness(), Some(Duration::ZERO));
        assert_eq!(p.take_lateness(), None, "taking resets it");
        // An early wake-up sends nothing and times nothing; one 7 ms late is 7 ms late.
        let due = p.poll_timeout(due).unwrap();
        assert_eq!(send_due(&mut p, due - ms(3)), 0);
        assert_eq!(p.take_lateness(), None);
        assert_eq!(send_due(&mut p, due + ms(7)), 1);
        assert_eq!(p.take_lateness(), Some(ms(7)));
        // After a clear, the next reply's start is not late, however long the wait was.
        let due = p.poll_timeout(due + ms(7)).unwrap();
        assert!(send_due(&mut p, due - ms(1)) == 0 && p.clear() > 0);
        p.push_audio(TurnId(2), &audio(100));
        assert_eq!(send_due(&mut p, due + ms(500)), 5);
        assert_eq!(p.take_lateness(), None);
    }

    #[test]
    fn audio_late_from_synthesis_and_the_rest_of_a_burst_are_not_timed() {
        let ms = Duration::from_millis;
        let mut p = Pacer::new(ms(80)).with_burst(ms(100));
        let start = Instant::now();
        p.push_audio(TurnId(1), &audio(100));
        assert_eq!(send_due(&mut p, start), 5);
        assert_eq!(p.take_lateness(), None);
        // The queue ran dry while Twilio still plays: the next sentence comes 30 ms after it
        // was due and leaves at once. The pacer never asked to be woken for it.
        let first_due = start + ms(20);
        p.push_audio(TurnId(1), &audio(300));
        let arrived = first_due + ms(30);
        // Two of its messages are due by now and two more fall in the burst that began at
        // `start`: all four leave at once.
        assert_eq!(send_due(&mut p, arrived), 4);
        assert_eq!(p.take_lateness(), None);
        // The next burst is awaited: woken 2 ms late, its first message is 2 ms late and the
        // five falling due within the 100 ms after the wake-up ride with it, not timed.
        let due = p.poll_timeout(arrived).unwrap();
        assert_eq!(due, start + ms(100));
        assert_eq!(send_due(&mut p, due + ms(2)), 6);
        assert_eq!(p.take_lateness(), Some(ms(2)));
    }
}

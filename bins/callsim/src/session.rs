//! The simulated Twilio side of one call, as a sans-IO state machine.
//!
//! [`CallerSession`] never reads a clock or touches a socket. The driver calls
//! [`CallerSession::handle_connected`] once the WebSocket is open, feeds every server message to
//! [`CallerSession::handle_agent_text`] with the time it arrived, and after every input and at
//! every [`CallerSession::poll_timeout`] drains [`CallerSession::poll_transmit`] until it returns
//! `None`. The session paces caller frames on a fixed 20 ms grid from `start` (frame k is due at
//! `start + k * 20 ms`; lateness is measured against that grid), models Twilio's playback queue
//! for the agent's audio (marks are echoed when the audio before them has played; `clear` drops
//! the queue and echoes pending marks), and measures the call as a caller hears it.

use std::collections::{BTreeMap, VecDeque};
use std::sync::Arc;
use std::time::{Duration, Instant};

use serde::Serialize;

use crate::audio::CallerClip;
use crate::metrics::{Histogram, Summary};
use crate::protocol::{self, AgentMessage, ProtocolViolation};
use crate::steps::{INTERRUPT_WAIT_LIMIT, Step};

const FRAME: Duration = Duration::from_millis(mulaw::FRAME_MS as u64);
/// Unvoiced frames after which the caller's utterance counts as ended (300 ms).
const UTTERANCE_END_FRAMES: u32 = 15;
/// Agent audio that starts this long after the queue ran dry begins a new reply.
const NEW_REPLY_GAP: Duration = Duration::from_millis(500);
/// Agent messages arriving within this of the previous one came in one delivery (one socket
/// write of the server, like one longer message): only the first of them is timed.
const SAME_DELIVERY: Duration = Duration::from_millis(2);
/// A listen step ends once the agent's audio has played out and nothing arrived for this long.
const LISTEN_QUIET: Duration = Duration::from_millis(600);
/// After the interrupting utterance ends, the server has this long to send `clear`.
const CLEAR_GRACE: Duration = Duration::from_secs(1);
/// A frame sent this late counts as late.
const LATE_FRAME: Duration = FRAME;
/// Beyond this lateness the simulator skips frames (counted as dropped) to get back on the grid,
/// as Twilio drops inbound audio under congestion (31930).
const RESYNC_AFTER: Duration = Duration::from_secs(1);
/// Digits of one `dtmf` step are this many frames apart.
const DTMF_GAP_FRAMES: u32 = 5;
/// Violations kept verbatim in the report.
const VIOLATION_SAMPLES: usize = 10;

/// What the caller does during the call.
#[derive(Debug, Clone)]
pub struct CallPlan {
    /// The steps, in order.
    pub steps: Vec<Step>,
    /// After the last step, continue at this step index (a conversation loop) instead of
    /// ending; the call then ends at `max_duration`.
    pub loop_from: Option<usize>,
    /// The caller sends `stop` this long after `start` at the latest.
    pub max_duration: Duration,
}

/// The ids Twilio would assign.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct CallIdentity {
    /// `AC…`.
    pub account_sid: String,
    /// `CA…`.
    pub call_sid: String,
    /// `MZ…`.
    pub stream_sid: String,
}

/// What the driver must do next.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Outbound {
    /// Send this text frame.
    Text(String),
    /// Close the socket politely (after `stop`).
    Close,
    /// Drop the connection without `stop` or a close frame (a lost line).
    Abort,
}

/// How the call ended.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum Ending {
    /// The caller sent `stop` (end of the steps or of the load run).
    Stopped,
    /// The caller dropped the line without `stop`.
    HungUpWithoutStop,
    /// The server closed the socket first.
    ServerClosed,
    /// The socket failed.
    SocketError(String),
}

/// Counters and distributions of one call, as a caller hears it.
#[derive(Debug, Clone, Default)]
pub struct CallMetrics {
    /// `start` -> first agent audio.
    pub time_to_greeting: Option<Duration>,
    /// Agent replies that began before the caller first spoke (1 is right; 2+ is a repeated
    /// greeting).
    pub greetings: u32,
    /// Caller's last voiced frame -> first agent audio of the reply.
    pub turn_latency: Histogram,
    /// Caller utterances followed by another utterance (or the end) without any reply.
    pub utterances_without_reply: u32,
    /// Caller onset over playing agent audio -> `clear`.
    pub barge_in_latency: Histogram,
    /// Onsets over playing agent audio that got no `clear` within 1 s of the utterance's end.
    pub barge_ins_missed: u32,
    /// `clear` messages when the caller had not barged in.
    pub clears_without_barge_in: u32,
    /// Agent audio received after a `clear` while the caller was still talking, in ms.
    pub agent_audio_after_clear_ms: u64,
    /// Agent audio received, in ms.
    pub agent_audio_ms: u64,
    /// Agent audio dropped from the queue by `clear`, in ms.
    pub agent_audio_cleared_ms: u64,
    /// Agent `media` messages.
    pub agent_media_messages: u64,
    /// Agent replies (runs of audio separated by > 500 ms of silence).
    pub agent_replies: u32,
    /// Agent audio that arrived after the queue ran dry in the middle of a reply (audible gap).
    pub playback_underruns: u32,
    /// Lateness of agent frames against the reply's real-time schedule.
    pub agent_frame_jitter: Histogram,
    /// Marks received / echoed.
    pub marks_received: u32,
    /// Marks echoed back.
    pub marks_echoed: u32,
    /// `clear` messages.
    pub clears: u32,
    /// Caller onsets.
    pub caller_utterances: u32,
    /// Caller frames sent.
    pub frames_sent: u64,
    /// Caller frames sent more than 20 ms after their slot.
    pub frames_late: u64,
    /// Caller frames skipped to get back on the grid after falling > 1 s behind.
    pub frames_dropped: u64,
    /// Lateness of each caller frame against its 20 ms slot.
    pub pacing: Histogram,
    /// `dtmf` messages sent.
    pub dtmf_sent: u32,
    /// Protocol violations by the server.
    pub protocol_errors: u32,
    /// The first few violations, verbatim.
    pub protocol_error_samples: Vec<String>,
}

/// One call's report (`--json` prints it as is).
#[derive(Debug, Clone, Serialize)]
pub struct CallReport {
    /// Call id.
    pub call_sid: String,
    /// Stream id.
    pub stream_sid: String,
    /// How it ended.
    pub ended_by: Ending,
    /// `start` -> end.
    pub duration_ms: f64,
    /// Webhook round trip.
    pub webhook_ms: Option<f64>,
    /// WebSocket handshake time.
    pub ws_connect_ms: Option<f64>,
    /// `start` -> first agent audio.
    pub time_to_greeting_ms: Option<f64>,
    /// Agent replies before the caller first spoke.
    pub greetings: u32,
    /// Caller's last voiced frame -> first agent audio of the reply.
    pub turn_latency: Summary,
    /// Every turn latency, in order, in ms.
    pub turn_latencies_ms: Vec<f64>,
    /// Utterances with no reply.
    pub utterances_without_reply: u32,
    /// Caller onset over agent audio -> `clear`.
    pub barge_in_latency: Summary,
    /// Every barge-in latency, in order, in ms.
    pub barge_in_latencies_ms: Vec<f64>,
    /// Barge-ins without `clear`.
    pub barge_ins_missed: u32,
    /// `clear` without a barge-in.
    pub clears_without_barge_in: u32,
    /// Agent audio after `clear` while the caller was talking.
    pub agent_audio_after_clear_ms: u64,
    /// Agent audio received.
    pub agent_audio_ms: u64,
    /// Agent audio dropped by `clear`.
    pub agent_audio_cleared_ms: u64,
    /// Agent media messages.
    pub agent_media_messages: u64,
    /// Agent replies.
    pub agent_replies: u32,
    /// Audible gaps inside replies.
    pub playback_underruns: u32,
    /// Agent frame lateness against the reply's real-time schedule.
    pub agent_frame_jitter: Summary,
    /// Marks received.
    pub marks_received: u32,
    /// Marks echoed.
    pub marks_echoed: u32,
    /// `clear` messages.
    pub clears: u32,
    /// Caller utterances (onsets).
    pub caller_utterances: u32,
    /// DTMF digits sent.
    pub dtmf_sent: u32,
    /// Caller frames sent.
    pub frames_sent: u64,
    /// Caller frames more than 20 ms late.
    pub frames_late: u64,
    /// Caller frames skipped after falling behind.
    pub frames_dropped: u64,
    /// Caller frame pacing lateness.
    pub pacing: Summary,
    /// Protocol violations by the server.
    pub protocol_errors: u32,
    /// The first few violations.
    pub protocol_error_samples: Vec<String>,
    /// Status-callback / action requests that failed.
    pub callback_errors: u32,
    #[serde(skip)]
    /// Raw distributions, for merging in load runs.
    pub histograms: CallHistograms,
}

/// The mergeable distributions of a call.
#[derive(Debug, Clone, Default)]
pub struct CallHistograms {
    /// Caller frame pacing lateness.
    pub pacing: Histogram,
    /// Agent frame jitter.
    pub agent_frame_jitter: Histogram,
    /// Turn latency.
    pub turn_latency: Histogram,
    /// Barge-in latency.
    pub barge_in_latency: Histogram,
}

#[derive(Debug)]
enum StepState {
    /// Entering `step_index`.
    Begin,
    Say {
        clip: Arc<CallerClip>,
        position: usize,
    },
    Silence {
        frames_left: u64,
    },
    Listen {
        frames_left: u64,
        epoch_at_start: u64,
    },
    Interrupt {
        after: Duration,
        clip: Arc<CallerClip>,
        frames_left: u64,
    },
    Dtmf {
        digits: Vec<char>,
        next: usize,
        wait_frames: u32,
    },
}

/// The Twilio side of one call (see the module docs for the driving rules).
#[derive(Debug)]
pub struct CallerSession {
    plan: Arc<CallPlan>,
    identity: CallIdentity,
    parameters: BTreeMap<String, String>,
    silence_base64: Arc<str>,

    started_at: Option<Instant>,
    deadline: Option<Instant>,
    ended_at: Option<Instant>,
    sequence: u64,
    chunk: u64,
    next_frame_due: Option<Instant>,
    outbox: VecDeque<Outbound>,
    ending: Option<Ending>,

    step_index: usize,
    step: StepState,

    // The caller's voice, as sent.
    speaking: bool,
    last_frame_voiced: bool,
    unvoiced_run: u32,
    first_onset: Option<Instant>,
    turn_candidate: Option<Instant>,
    barge_in_onset: Option<Instant>,
    barge_in_deadline: Option<Instant>,
    stale_after_clear: bool,

    // Twilio's playback queue for the agent's audio.
    queue_end: Option<Instant>,
    reply_play_start: Option<Instant>,
    /// (arrival of the reply's first frame, audio ms before this frame, smallest deviation).
    reply_schedule: Option<(Instant, u64, i128)>,
    last_agent_arrival: Option<Instant>,
    agent_epoch: u64,
    pending_marks: VecDeque<(String, Instant)>,
    recording: Option<(Vec<u8>, Instant)>,

    metrics: CallMetrics,
    turn_latencies: Vec<Duration>,
    barge_in_latencies: Vec<Duration>,
}

fn frames_in(duration: Duration) -> u64 {
    (duration.as_millis() / FRAME.as_millis()) as u64
}

fn audio_ms(bytes: usize) -> u64 {
    mulaw::duration_ms(bytes)
}

impl CallerSession {
    /// A session for `identity`, sending `parameters` in `start.customParameters`. With
    /// `record_agent_audio`, the agent's audio is kept on the playback timeline for
    /// [`Self::take_recording`].
    #[must_use]
    pub fn new(
        plan: Arc<CallPlan>,
        identity: CallIdentity,
        parameters: BTreeMap<String, String>,
        silence_base64: Arc<str>,
        record_agent_audio: bool,
    ) -> Self {
        Self {
            plan,
            identity,
            parameters,
            silence_base64,
            started_at: None,
            deadline: None,
            ended_at: None,
            sequence: 0,
            chunk: 0,
            next_frame_due: None,
            outbox: VecDeque::new(),
            ending: None,
            step_index: 0,
            step: StepState::Begin,
            speaking: false,
            last_frame_voiced: false,
            unvoiced_run: 0,
            first_onset: None,
            turn_candidate: None,
            barge_in_onset: None,
            barge_in_deadline: None,
            stale_after_clear: false,
            queue_end: None,
            reply_play_start: None,
            reply_schedule: None,
            last_agent_arrival: None,
            agent_epoch: 0,
            pending_marks: VecDeque::new(),
            recording: record_agent_audio.then(|| (Vec::new(), Instant::now())),
            metrics: CallMetrics::default(),
            turn_latencies: Vec::new(),
            barge_in_latencies: Vec::new(),
        }
    }

    /// The WebSocket is open: queue `connected` and `start`; caller frames start now.
    pub fn handle_connected(&mut self, now: Instant) {
        if self.started_at.is_some() {
            return;
        }
        self.started_at = Some(now);
        self.deadline = Some(now + self.plan.max_duration);
        self.next_frame_due = Some(now);
        if let Some((_, until)) = self.recording.as_mut() {
            *until = now;
        }
        self.outbox
            .push_back(Outbound::Text(protocol::connected_json()));
        self.sequence = 1;
        self.outbox.push_back(Outbound::Text(protocol::start_json(
            self.sequence,
            &self.identity.account_sid,
            &self.identity.call_sid,
            &self.identity.stream_sid,
            &self.parameters,
        )));
    }

    /// One text frame from the server, received at `now`.
    pub fn handle_agent_text(&mut self, now: Instant, text: &str) {
        match protocol::parse_agent_message(text, &self.identity.stream_sid) {
            Ok((message, warning)) => {
                if let Some(warning) = warning {
                    self.record_violation(&warning);
                }
                match message {
                    AgentMessage::Media { payload } => self.handle_agent_audio(now, &payload),
                    AgentMessage::Mark { name } => {
                        self.metrics.marks_received += 1;
                        let due = self.queue_end.map_or(now, |end| end.max(now));
                        self.pending_marks.push_back((name, due));
                    }
                    AgentMessage::Clear => self.handle_clear(now),
                }
            }
            Err(violation) => self.record_violation(&violation),
        }
    }

    /// A binary frame from the server (never valid in this protocol).
    pub fn handle_agent_binary(&mut self, len: usize) {
        self.record_violation(&ProtocolViolation::BinaryFrame { len });
    }

    /// The server closed the socket (or it ended) at `now`.
    pub fn handle_server_closed(&mut self, now: Instant) {
        if self.ending.is_none() {
            self.ending = Some(Ending::ServerClosed);
            self.ended_at = Some(now);
            self.next_frame_due = None;
        }
    }

    /// The socket failed at `now`.
    pub fn handle_socket_error(&mut self, now: Instant, reason: String) {
        if self.ending.is_none() {
            self.ending = Some(Ending::SocketError(reason));
            self.ended_at = Some(now);
            self.next_frame_due = None;
        }
    }

    /// True once nothing more will be sent.
    #[must_use]
    pub fn is_finished(&self) -> bool {
        self.ending.is_some() && self.outbox.is_empty()
    }

    /// How the call ended, once it has.
    #[must_use]
    pub fn ending(&self) -> Option<&Ending> {
        self.ending.as_ref()
    }

    /// When the driver must call [`Self::poll_transmit`] next (`None`: only after an input).
    /// Meaningful once [`Self::poll_transmit`] has been drained to `None`.
    #[must_use]
    pub fn poll_timeout(&self) -> Option<Instant> {
        [
            self.next_frame_due,
            self.pending_marks.front().map(|(_, due)| *due),
            self.barge_in_deadline,
        ]
        .into_iter()
        .flatten()
        .min()
    }

    /// The next thing to send at `now`; call until `None`.
    pub fn poll_transmit(&mut self, now: Instant) -> Option<Outbound> {
        if self.ending.is_none() {
            if let Some(deadline) = self.barge_in_deadline
                && now >= deadline
            {
                self.metrics.barge_ins_missed += 1;
                self.barge_in_onset = None;
                self.barge_in_deadline = None;
            }
            while let Some((_, due)) = self.pending_marks.front() {
                if *due > now {
                    break;
                }
                if let Some((name, _)) = self.pending_marks.pop_front() {
                    self.echo_mark(&name);
                }
            }
            if let Some(due) = self.next_frame_due
                && now >= due
                && self.outbox.is_empty()
            {
                let mut due = due;
                let lateness = now - due;
                if lateness > RESYNC_AFTER {
                    let skipped = frames_in(lateness);
                    self.metrics.frames_dropped += skipped;
                    due += FRAME * u32::try_from(skipped).unwrap_or(u32::MAX);
                }
                self.metrics
                    .pacing
                    .record(now.saturating_duration_since(due));
                if now.saturating_duration_since(due) > LATE_FRAME {
                    self.metrics.frames_late += 1;
                }
                self.next_frame_due = Some(due + FRAME);
                self.tick(now);
            }
        }
        self.outbox.pop_front()
    }

    /// The agent's audio as the caller heard it (silence where nothing played; audio dropped
    /// by `clear` removed), when recording was asked for.
    pub fn take_recording(&mut self) -> Option<Vec<u8>> {
        self.recording.take().map(|(audio, _)| audio)
    }

    /// The report; `now` closes the call's duration if it has not ended.
    #[must_use]
    pub fn report(&self, now: Instant) -> CallReport {
        let m = &self.metrics;
        let ms = |d: Duration| d.as_secs_f64() * 1e3;
        let end = self.ended_at.unwrap_or(now);
        CallReport {
            call_sid: self.identity.call_sid.clone(),
            stream_sid: self.identity.stream_sid.clone(),
            ended_by: self
                .ending
                .clone()
                .unwrap_or(Ending::SocketError("the call did not end".to_owned())),
            duration_ms: self
                .started_at
                .map_or(0.0, |start| ms(end.saturating_duration_since(start))),
            webhook_ms: None,
            ws_connect_ms: None,
            time_to_greeting_ms: m.time_to_greeting.map(ms),
            greetings: m.greetings,
            turn_latency: m.turn_latency.summary(),
            turn_latencies_ms: self.turn_latencies.iter().map(|d| ms(*d)).collect(),
            utterances_without_reply: m.utterances_without_reply
                + u32::from(self.turn_candidate.is_some()),
            barge_in_latency: m.barge_in_latency.summary(),
            barge_in_latencies_ms: self.barge_in_latencies.iter().map(|d| ms(*d)).collect(),
            barge_ins_missed: m.barge_ins_missed + u32::from(self.barge_in_onset.is_some()),
            clears_without_barge_in: m.clears_without_barge_in,
            agent_audio_after_clear_ms: m.agent_audio_after_clear_ms,
            agent_audio_ms: m.agent_audio_ms,
            agent_audio_cleared_ms: m.agent_audio_cleared_ms,
            agent_media_messages: m.agent_media_messages,
            agent_replies: m.agent_replies,
            playback_underruns: m.playback_underruns,
            agent_frame_jitter: m.agent_frame_jitter.summary(),
            marks_received: m.marks_received,
            marks_echoed: m.marks_echoed,
            clears: m.clears,
            caller_utterances: m.caller_utterances,
            dtmf_sent: m.dtmf_sent,
            frames_sent: m.frames_sent,
            frames_late: m.frames_late,
            frames_dropped: m.frames_dropped,
            pacing: m.pacing.summary(),
            protocol_errors: m.protocol_errors,
            protocol_error_samples: m.protocol_error_samples.clone(),
            callback_errors: 0,
            histograms: CallHistograms {
                pacing: m.pacing.clone(),
                agent_frame_jitter: m.agent_frame_jitter.clone(),
                turn_latency: m.turn_latency.clone(),
                barge_in_latency: m.barge_in_latency.clone(),
            },
        }
    }

    fn record_violation(&mut self, violation: &ProtocolViolation) {
        self.metrics.protocol_errors += 1;
        if self.metrics.protocol_error_samples.len() < VIOLATION_SAMPLES {
            self.metrics
                .protocol_error_samples
                .push(violation.to_string());
        }
    }

    fn next_sequence(&mut self) -> u64 {
        self.sequence += 1;
        self.sequence
    }

    fn echo_mark(&mut self, name: &str) {
        let sequence = self.next_sequence();
        self.outbox
            .push_back(Outbound::Text(protocol::mark_echo_json(
                sequence,
                &self.identity.stream_sid,
                name,
            )));
        self.metrics.marks_echoed += 1;
    }

    fn finish(&mut self, now: Instant, ending: Ending) {
        match ending {
            Ending::Stopped => {
                let sequence = self.next_sequence();
                self.outbox.push_back(Outbound::Text(protocol::stop_json(
                    sequence,
                    &self.identity.stream_sid,
                    &self.identity.account_sid,
                    &self.identity.call_sid,
                )));
                self.outbox.push_back(Outbound::Close);
            }
            _ => self.outbox.push_back(Outbound::Abort),
        }
        self.ending = Some(ending);
        self.ended_at = Some(now);
        self.next_frame_due = None;
    }

    fn agent_audible(&self, now: Instant) -> bool {
        self.queue_end.is_some_and(|end| end > now)
    }

    /// One 20 ms slot: run the steps until one produces a frame (or the call ends).
    fn tick(&mut self, now: Instant) {
        if self.deadline.is_some_and(|deadline| now >= deadline) {
            self.finish(now, Ending::Stopped);
            return;
        }
        // Each pass either emits a frame, ends the call or moves to the next step; a plan of
        // steps that produce no frame (e.g. only zero-length waits) is cut off after one lap.
        for _ in 0..(self.plan.steps.len() * 2 + 2) {
            match &mut self.step {
                StepState::Begin => {
                    if !self.enter_step(now) {
                        return;
                    }
                }
                StepState::Say { clip, position } => {
                    let clip = Arc::clone(clip);
                    let index = *position;
                    *position += 1;
                    match clip.frame(index) {
                        Some((payload, voiced)) => {
                            self.emit_frame(now, payload, voiced);
                            return;
                        }
                        None => self.advance(),
                    }
                }
                StepState::Silence { frames_left } => {
                    if *frames_left == 0 {
                        self.advance();
                    } else {
                        *frames_left -= 1;
                        self.emit_silence(now);
                        return;
                    }
                }
                StepState::Listen {
                    frames_left,
                    epoch_at_start,
                } => {
                    let heard = self.agent_epoch != *epoch_at_start;
                    let played_out = self.queue_end.is_none_or(|end| now >= end + LISTEN_QUIET)
                        && self
                            .last_agent_arrival
                            .is_none_or(|at| now >= at + LISTEN_QUIET);
                    if *frames_left == 0 || (heard && played_out) {
                        self.advance();
                    } else {
                        *frames_left -= 1;
                        self.emit_silence(now);
                        return;
                    }
                }
                StepState::Interrupt {
                    after,
                    clip,
                    frames_left,
                } => {
                    let played = self
                        .reply_play_start
                        .filter(|_| self.queue_end.is_some_and(|end| end > now))
                        .map(|start| now.saturating_duration_since(start));
                    if *frames_left == 0 || played.is_some_and(|played| played >= *after) {
                        self.step = StepState::Say {
                            clip: Arc::clone(clip),
                            position: 0,
                        };
                    } else {
                        *frames_left -= 1;
                        self.emit_silence(now);
                        return;
                    }
                }
                StepState::Dtmf {
                    digits,
                    next,
                    wait_frames,
                } => {
                    if *wait_frames > 0 {
                        *wait_frames -= 1;
                        self.emit_silence(now);
                        return;
                    }
                    match digits.get(*next).copied() {
                        Some(digit) => {
                            *next += 1;
                            *wait_frames = DTMF_GAP_FRAMES;
                            let sequence = self.next_sequence();
                            self.outbox.push_back(Outbound::Text(protocol::dtmf_json(
                                sequence,
                                &self.identity.stream_sid,
                                digit,
                            )));
                            self.metrics.dtmf_sent += 1;
                            self.emit_silence(now);
                            return;
                        }
                        None => self.advance(),
                    }
                }
            }
        }
        self.emit_silence(now);
    }

    /// Sets up the step at `step_index`; false when the call ended instead.
    fn enter_step(&mut self, now: Instant) -> bool {
        let plan = Arc::clone(&self.plan);
        let step = match plan.steps.get(self.step_index) {
            Some(step) => step,
            None => match plan.loop_from.filter(|from| *from < plan.steps.len()) {
                Some(from) => {
                    self.step_index = from;
                    return true;
                }
                None => {
                    self.finish(now, Ending::Stopped);
                    return false;
                }
            },
        };
        self.step = match step {
            Step::Say(clip) => StepState::Say {
                clip: Arc::clone(clip),
                position: 0,
            },
            Step::Wait(duration) => StepState::Silence {
                frames_left: frames_in(*duration),
            },
            Step::Listen(duration) => StepState::Listen {
                frames_left: frames_in(*duration),
                epoch_at_start: self.agent_epoch,
            },
            Step::Dtmf(digits) => StepState::Dtmf {
                digits: digits.chars().collect(),
                next: 0,
                wait_frames: 0,
            },
            Step::Interrupt { after, clip } => StepState::Interrupt {
                after: *after,
                clip: Arc::clone(clip),
                frames_left: frames_in(INTERRUPT_WAIT_LIMIT),
            },
            Step::HangUpWithoutStop => {
                self.finish(now, Ending::HungUpWithoutStop);
                return false;
            }
        };
        true
    }

    fn advance(&mut self) {
        self.step_index += 1;
        self.step = StepState::Begin;
    }

    fn emit_silence(&mut self, now: Instant) {
        let silence = Arc::clone(&self.silence_base64);
        self.emit_frame(now, &silence, false);
    }

    fn emit_frame(&mut self, now: Instant, payload_base64: &str, voiced: bool) {
        let sequence = self.next_sequence();
        self.chunk += 1;
        let timestamp_ms = (self.chunk - 1) * u64::from(mulaw::FRAME_MS);
        let mut text = String::with_capacity(payload_base64.len() + 160);
        protocol::write_media_json(
            &mut text,
            sequence,
            &self.identity.stream_sid,
            self.chunk,
            timestamp_ms,
            payload_base64,
        );
        self.outbox.push_back(Outbound::Text(text));
        self.metrics.frames_sent += 1;
        self.last_frame_voiced = voiced;
        if voiced {
            if !self.speaking {
                self.handle_caller_onset(now);
            }
            self.speaking = true;
            self.unvoiced_run = 0;
            self.turn_candidate = Some(now);
        } else if self.speaking {
            self.unvoiced_run += 1;
            if self.unvoiced_run >= UTTERANCE_END_FRAMES {
                self.speaking = false;
                self.stale_after_clear = false;
                if self.barge_in_onset.is_some() && self.barge_in_deadline.is_none() {
                    self.barge_in_deadline = Some(now + CLEAR_GRACE);
                }
            }
        }
    }

    fn handle_caller_onset(&mut self, now: Instant) {
        self.metrics.caller_utterances += 1;
        self.first_onset.get_or_insert(now);
        if self.turn_candidate.take().is_some() {
            self.metrics.utterances_without_reply += 1;
        }
        if self.agent_audible(now) && self.barge_in_onset.is_none() {
            self.barge_in_onset = Some(now);
            self.barge_in_deadline = None;
        }
        self.stale_after_clear = false;
    }

    fn handle_agent_audio(&mut self, now: Instant, payload: &[u8]) {
        let duration_ms = audio_ms(payload.len());
        let duration = Duration::from_millis(duration_ms);
        self.metrics.agent_media_messages += 1;
        self.metrics.agent_audio_ms += duration_ms;
        self.agent_epoch += 1;
        if self.metrics.time_to_greeting.is_none()
            && let Some(start) = self.started_at
        {
            self.metrics.time_to_greeting = Some(now.saturating_duration_since(start));
        }
        let drained = self.queue_end.is_none_or(|end| end <= now);
        if drained
            && !self.last_frame_voiced
            && let Some(last_voiced) = self.turn_candidate.take()
        {
            let latency = now.saturating_duration_since(last_voiced);
            self.metrics.turn_latency.record(latency);
            self.turn_latencies.push(latency);
        }
        let new_reply = self.queue_end.is_none_or(|end| now > end + NEW_REPLY_GAP);
        if new_reply {
            self.metrics.agent_replies += 1;
            if self.first_onset.is_none() {
                self.metrics.greetings += 1;
            }
            self.reply_play_start = Some(now);
            self.reply_schedule = Some((now, 0, 0));
        } else if drained {
            self.metrics.playback_underruns += 1;
        }
        let same_delivery = !new_reply
            && self
                .last_agent_arrival
                .is_some_and(|last| now.saturating_duration_since(last) < SAME_DELIVERY);
        if let Some((anchor, audio_before_ms, min_deviation)) = self.reply_schedule.as_mut() {
            // Deviation of this delivery from real time since the reply's first frame; the
            // smallest deviation so far is the sender's lead, so lateness is measured from it.
            // Messages that came with the previous one (a burst the server wrote at once) are
            // part of its delivery, as the rest of one long message would be: not timed.
            let elapsed_us = now.saturating_duration_since(*anchor).as_micros() as i128;
            let deviation = elapsed_us - i128::from(*audio_before_ms) * 1000;
            if !same_delivery {
                if *audio_before_ms > 0 {
                    let lateness = (deviation - *min_deviation).max(0);
                    self.metrics
                        .agent_frame_jitter
                        .record(Duration::from_micros(lateness as u64));
                }
                *min_deviation = (*min_deviation).min(deviation);
            }
            *audio_before_ms += duration_ms;
        }
        if self.stale_after_clear {
            self.metrics.agent_audio_after_clear_ms += duration_ms;
        }
        if self.reply_play_start.is_none() {
            self.reply_play_start = Some(now);
        }
        let play_from = self.queue_end.map_or(now, |end| end.max(now));
        if let Some((audio, recorded_until)) = self.recording.as_mut() {
            let gap = play_from.saturating_duration_since(*recorded_until);
            let gap_bytes = (gap.as_millis() as usize) * 8;
            audio.resize(audio.len() + gap_bytes, mulaw::SILENCE);
            audio.extend_from_slice(payload);
            *recorded_until = play_from + duration;
        }
        self.queue_end = Some(play_from + duration);
        self.last_agent_arrival = Some(now);
    }

    fn handle_clear(&mut self, now: Instant) {
        self.metrics.clears += 1;
        match self.barge_in_onset.take() {
            Some(onset) => {
                let latency = now.saturating_duration_since(onset);
                self.metrics.barge_in_latency.record(latency);
                self.barge_in_latencies.push(latency);
                self.barge_in_deadline = None;
                self.stale_after_clear = self.speaking;
            }
            None => self.metrics.clears_without_barge_in += 1,
        }
        if let Some(end) = self.queue_end
            && end > now
        {
            let dropped = end - now;
            self.metrics.agent_audio_cleared_ms += dropped.as_millis() as u64;
            if let Some((audio, recorded_until)) = self.recording.as_mut() {
                let bytes = (dropped.as_millis() as usize) * 8;
                audio.truncate(audio.len().saturating_sub(bytes));
                *recorded_until = now;
            }
            self.queue_end = Some(now);
        }
        self.reply_play_start = None;
        self.reply_schedule = None;
        // Twilio echoes pending marks when the queue is cleared.
        while let Some((name, _)) = self.pending_marks.pop_front() {
            self.echo_mark(&name);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn ms(n: u64) -> Duration {
        Duration::from_millis(n)
    }

    fn identity() -> CallIdentity {
        CallIdentity {
            account_sid: "AC1".to_owned(),
            call_sid: "CA1".to_owned(),
            stream_sid: "MZ1".to_owned(),
        }
    }

    fn session(steps: Vec<Step>, record: bool) -> CallerSession {
        let plan = CallPlan {
            steps,
            loop_from: None,
            max_duration: Duration::from_secs(60),
        };
        CallerSession::new(
            Arc::new(plan),
            identity(),
            BTreeMap::from([("call_sid".to_owned(), "CA1".to_owned())]),
            crate::audio::silence_payload_base64().into(),
            record,
        )
    }

    /// Everything sent at `now`.
    fn drain(session: &mut CallerSession, now: Instant) -> Vec<Outbound> {
        std::iter::from_fn(|| session.poll_transmit(now)).collect()
    }

    /// Runs the session on time until `until`, waking exactly at every `poll_timeout`.
    fn run_until(session: &mut CallerSession, until: Instant) -> Vec<(Instant, Outbound)> {
        let mut sent = Vec::new();
        for _ in 0..100_000 {
            let Some(wake) = session.poll_timeout() else {
                break;
            };
            if wake > until {
                break;
            }
            for out in drain(session, wake) {
                sent.push((wake, out));
            }
        }
        sent
    }

    fn agent_media(frames: usize) -> String {
        twilio_stream::media::media_json("MZ1", &vec![0x55; frames * 160])
    }

    fn events(sent: &[(Instant, Outbound)]) -> Vec<String> {
        sent.iter()
            .map(|(_, out)| match out {
                Outbound::Text(text) => {
                    serde_json::from_str::<serde_json::Value>(text).unwrap()["event"]
                        .as_str()
                        .unwrap()
                        .to_owned()
                }
                Outbound::Close => "<close>".to_owned(),
                Outbound::Abort => "<abort>".to_owned(),
            })
            .collect()
    }

    #[test]
    fn greeting_mark_echo_turn_latency_and_stop() {
        let clip = Arc::new(CallerClip::tone("hello there"));
        let clip_frames = clip.len() as u64;
        let mut s = session(
            vec![
                Step::Listen(ms(3000)),
                Step::Say(Arc::clone(&clip)),
                Step::Listen(ms(3000)),
            ],
            true,
        );
        let t0 = Instant::now();
        s.handle_connected(t0);
        let first = drain(&mut s, t0);
        assert_eq!(
            events(&first.into_iter().map(|o| (t0, o)).collect::<Vec<_>>()),
            ["connected", "start", "media"]
        );
        // Greeting: 500 ms of audio at +50 ms, then a mark.
        let _ = run_until(&mut s, t0 + ms(49));
        s.handle_agent_text(t0 + ms(50), &agent_media(25));
        s.handle_agent_text(
            t0 + ms(50),
            &twilio_stream::media::mark_json("MZ1", "greeting"),
        );
        let sent = run_until(&mut s, t0 + ms(1_000));
        let echo = sent
            .iter()
            .find(|(_, out)| matches!(out, Outbound::Text(t) if t.contains("\"mark\"")))
            .unwrap();
        assert_eq!(
            echo.0,
            t0 + ms(550),
            "mark echoed when the greeting has played"
        );
        // The listen step ends 600 ms after playback (t0 + 1150 ms): the clip starts at the
        // first frame slot from then on, and the reply comes 300 ms after its last voiced frame.
        let sent = run_until(&mut s, t0 + ms(1_160 + clip_frames * 20));
        let last_voiced = sent
            .iter()
            .filter(|(_, out)| matches!(out, Outbound::Text(t) if !t.contains(&crate::audio::silence_payload_base64()) && t.contains("\"media\"")))
            .map(|(at, _)| *at)
            .max()
            .unwrap();
        let _ = run_until(&mut s, last_voiced + ms(299));
        s.handle_agent_text(last_voiced + ms(300), &agent_media(10));
        let sent = run_until(&mut s, last_voiced + ms(5_000));
        assert_eq!(events(&sent).last().unwrap(), "<close>");
        assert_eq!(events(&sent)[events(&sent).len() - 2], "stop");
        let report = s.report(last_voiced + ms(5_000));
        assert_eq!(report.ended_by, Ending::Stopped);
        assert_eq!(report.time_to_greeting_ms, Some(50.0));
        assert_eq!(report.greetings, 1);
        assert_eq!(report.turn_latencies_ms, vec![300.0]);
        assert_eq!(report.utterances_without_reply, 0);
        assert_eq!((report.marks_received, report.marks_echoed), (1, 1));
        assert_eq!(report.agent_audio_ms, 700);
        assert_eq!(report.agent_replies, 2);
        assert_eq!(report.playback_underruns, 0);
        assert_eq!((report.frames_late, report.frames_dropped), (0, 0));
        assert_eq!(report.protocol_errors, 0);
        assert_eq!(report.pacing.max_ms, Some(0.0));
        // The recording holds both replies on the playback timeline.
        let audio = s.take_recording().unwrap();
        assert_eq!(audio.iter().filter(|b| **b == 0x55).count(), 700 * 8);
    }

    #[test]
    fn barge_in_is_timed_to_clear_and_late_audio_is_counted() {
        let clip = Arc::new(CallerClip::tone("wait a moment please"));
        let mut s = session(
            vec![
                Step::Interrupt {
                    after: ms(400),
                    clip: Arc::clone(&clip),
                },
                Step::Listen(ms(1000)),
            ],
            true,
        );
        let t0 = Instant::now();
        s.handle_connected(t0);
        let _ = drain(&mut s, t0);
        // A 5 s reply arrives at once, with a mark after it.
        s.handle_agent_text(t0 + ms(10), &agent_media(250));
        s.handle_agent_text(
            t0 + ms(10),
            &twilio_stream::media::mark_json("MZ1", "reply"),
        );
        // The caller barges in once 400 ms have played (slot at t0 + 420 ms).
        let _ = run_until(&mut s, t0 + ms(419));
        let _ = run_until(&mut s, t0 + ms(560));
        // clear 140 ms after the onset; the pending mark is echoed at once.
        s.handle_agent_text(t0 + ms(560), &twilio_stream::media::clear_json("MZ1"));
        let sent = drain(&mut s, t0 + ms(560));
        assert!(
            matches!(&sent[0], Outbound::Text(t) if t.contains("\"mark\"") && t.contains("reply"))
        );
        // Stale audio while the caller still talks.
        s.handle_agent_text(t0 + ms(600), &agent_media(5));
        let _ = run_until(&mut s, t0 + ms(10_000));
        let report = s.report(t0 + ms(10_000));
        assert_eq!(report.barge_in_latencies_ms, vec![140.0]);
        assert_eq!(report.barge_ins_missed, 0);
        assert_eq!(report.agent_audio_after_clear_ms, 100);
        assert_eq!(report.agent_audio_cleared_ms, 5_000 - 550);
        assert_eq!(report.clears, 1);
        // 550 ms played before the clear, then the 100 ms of stale audio.
        let audio = s.take_recording().unwrap();
        assert_eq!(audio.iter().filter(|b| **b == 0x55).count(), 650 * 8);
    }

    #[test]
    fn agent_jitter_times_each_delivery_so_a_burst_is_timed_once() {
        let mut s = session(vec![Step::Listen(ms(5_000))], false);
        let t0 = Instant::now();
        s.handle_connected(t0);
        let _ = drain(&mut s, t0);
        let burst = |s: &mut CallerSession, at: Instant, frames: usize| {
            for _ in 0..frames {
                s.handle_agent_text(at, &agent_media(1));
            }
        };
        // A reply written in bursts of 20 ms messages: 180 ms at once, then 100 ms every
        // 100 ms, always 80 ms ahead of playback.
        burst(&mut s, t0 + ms(10), 9);
        for k in 1..=3 {
            burst(&mut s, t0 + ms(10 + 100 * k), 5);
        }
        let report = s.report(t0 + ms(400));
        assert_eq!(
            report.agent_frame_jitter.count, 3,
            "one timing per delivery"
        );
        assert_eq!(report.agent_frame_jitter.max_ms, Some(0.0));
        // The next burst comes 30 ms late: 30 ms of lateness, once.
        burst(&mut s, t0 + ms(10 + 400 + 30), 5);
        let report = s.report(t0 + ms(500));
        assert_eq!(report.agent_frame_jitter.count, 4);
        assert_eq!(report.agent_frame_jitter.max_ms, Some(30.0));
        assert_eq!(report.playback_underruns, 0);
    }

    #[test]
    fn late_polls_count_late_and_dropped_frames() {
        let mut s = session(vec![Step::Wait(ms(5_000))], false);
        let t0 = Instant::now();
        s.handle_connected(t0);
        let _ = drain(&mut s, t0);
        let _ = drain(&mut s, t0 + ms(20 + 30));
        let report = s.report(t0);
        assert_eq!(report.frames_late, 1);
        // That poll also caught up the t0 + 40 ms slot (10 ms late: not "late"). Now 1.48 s
        // behind the t0 + 60 ms slot: the simulator skips 74 slots and sends the current one.
        let _ = drain(&mut s, t0 + ms(40 + 1_500));
        let report = s.report(t0);
        assert_eq!(report.frames_late, 1);
        assert_eq!(report.frames_dropped, 74);
        assert_eq!(report.frames_sent, 4);
    }

    #[test]
    fn dtmf_digits_are_spaced_then_the_line_drops_without_stop() {
        let mut s = session(
            vec![Step::Dtmf("1#".to_owned()), Step::HangUpWithoutStop],
            false,
        );
        let t0 = Instant::now();
        s.handle_connected(t0);
        let mut sent: Vec<(Instant, Outbound)> =
            drain(&mut s, t0).into_iter().map(|o| (t0, o)).collect();
        sent.extend(run_until(&mut s, t0 + ms(1_000)));
        let names = events(&sent);
        let dtmf_at: Vec<Instant> = sent
            .iter()
            .zip(&names)
            .filter(|(_, name)| *name == "dtmf")
            .map(|((at, _), _)| *at)
            .collect();
        assert_eq!(dtmf_at, vec![t0, t0 + ms(120)]);
        assert_eq!(names.last().unwrap(), "<abort>");
        assert!(!names.contains(&"stop".to_owned()));
        assert_eq!(s.ending(), Some(&Ending::HungUpWithoutStop));
        assert!(s.is_finished());
    }

    #[test]
    fn server_violations_are_counted_and_sampled() {
        let mut s = session(vec![Step::Wait(ms(100))], false);
        let t0 = Instant::now();
        s.handle_connected(t0);
        s.handle_agent_text(t0, "not json");
        s.handle_agent_text(t0, &twilio_stream::media::media_json("MZ9", &[1]));
        s.handle_agent_binary(3);
        let report = s.report(t0);
        assert_eq!(report.protocol_errors, 3);
        assert!(report.protocol_error_samples[1].contains("MZ9"));
    }
}

//! The turn-taking state machine.

use std::collections::VecDeque;
use std::time::{Duration, Instant};

use bytes::Bytes;

use crate::config::{ConfigError, TurnConfig};
use crate::text::{append_words, normalize, sentence_end, sentences};
use crate::types::{
    Action, BargeInCause, CallerInput, Event, HangupReason, IgnoredInput, State, TranscriptSource,
    TurnId, TurnOutcome, UtteranceKind,
};
use crate::vad::{EnergyVad, VoiceActivityDetector};

/// Unvoiced audio shorter than this inside a voiced run does not break the run (a stop
/// consonant or one lost frame must not reset barge-in or speech-start counting).
const VOICED_GAP_TOLERANCE_MS: u32 = 20;
/// How many recent agent sentences are remembered for the echo check.
const AGENT_SENTENCES_KEPT: usize = 16;
/// An echo shorter than this many words must match a whole agent sentence; a longer one may be
/// any part of what the agent said.
const ECHO_MIN_WORDS_FOR_PART: usize = 4;
/// A reply buffer longer than this without a sentence end is sent to synthesis up to its last
/// space, so a responder that never punctuates cannot hold the caller in silence.
const MAX_UNPUNCTUATED_BYTES: usize = 240;
/// How long after answering from a partial the closing STT final is expected.
const CONSUMED_PARTIAL_TTL_MS: u32 = 5000;

fn after(t: Instant, ms: u32) -> Instant {
    // Adding at most a couple of minutes to a real Instant cannot overflow; fall back to `t`.
    t.checked_add(Duration::from_millis(u64::from(ms)))
        .unwrap_or(t)
}

fn before(t: Instant, ms: u32) -> Instant {
    t.checked_sub(Duration::from_millis(u64::from(ms)))
        .unwrap_or(t)
}

fn millis_between(earlier: Instant, later: Instant) -> u64 {
    u64::try_from(later.saturating_duration_since(earlier).as_millis()).unwrap_or(u64::MAX)
}

/// Duration of `bytes` of 8 kHz mu-law, exact to the sample (125 µs each).
fn mulaw_duration(bytes: usize) -> Duration {
    Duration::from_micros(bytes as u64 * 125)
}

fn is_dtmf_digit(digit: char) -> bool {
    matches!(digit, '0'..='9' | '*' | '#' | 'A'..='D')
}

/// Voice state derived from the VAD's per-frame decisions.
#[derive(Debug, Default)]
struct VoiceTracker {
    /// True between speech onset (`speech_start_ms` voiced) and offset (`speech_end_ms` unvoiced).
    speaking: bool,
    voiced_ms: u32,
    voiced_since: Option<Instant>,
    unvoiced_ms: u32,
    unvoiced_since: Option<Instant>,
}

/// What the caller has said since the last reply started.
#[derive(Debug, Default)]
struct CallerUtterance {
    finals: String,
    partial: Option<String>,
    stable_partial: Option<String>,
    /// When the caller went quiet (speech offset) or, without detected speech, when text came.
    silence_since: Option<Instant>,
}

impl CallerUtterance {
    fn has_text(&self) -> bool {
        !self.finals.is_empty() || self.partial.is_some()
    }

    fn clear(&mut self) {
        *self = CallerUtterance::default();
    }

    fn text_for_answer(&self) -> (String, TranscriptSource) {
        let mut text = self.finals.clone();
        let source = match (&self.partial, &self.stable_partial) {
            (None, _) => TranscriptSource::Final,
            (Some(_), Some(stable)) => {
                append_words(&mut text, stable);
                TranscriptSource::StablePartial
            }
            (Some(latest), None) => {
                append_words(&mut text, latest);
                TranscriptSource::LatestPartial
            }
        };
        (text, source)
    }
}

#[derive(Debug)]
struct Segment {
    text: String,
    /// Audio offset (ms into the turn) where this segment's audio ends, once synthesis is done.
    end_ms: Option<u64>,
}

/// One agent turn in progress.
#[derive(Debug)]
struct AgentTurn {
    id: TurnId,
    kind: UtteranceKind,
    input: Option<CallerInput>,
    last_answered_before: Option<String>,
    reply_open: bool,
    text_buffer: String,
    segments: Vec<Segment>,
    synth_outstanding: u32,
    audio_bytes: usize,
    marks: Vec<(String, u64)>,
    heard_ms: u64,
    final_mark: Option<String>,
    final_mark_sent_at: Option<Instant>,
    playback_end: Option<Instant>,
    started_at: Instant,
    last_progress: Instant,
}

impl AgentTurn {
    fn audio_ms(&self) -> u64 {
        mulaw::duration_ms(self.audio_bytes)
    }

    fn generating(&self) -> bool {
        self.reply_open || self.synth_outstanding > 0
    }

    fn heard_text(&self) -> String {
        let mut text = String::new();
        for segment in &self.segments {
            if segment.end_ms.is_some_and(|end| end <= self.heard_ms) {
                append_words(&mut text, &segment.text);
            }
        }
        text
    }

    fn fallback_deadline(&self, margin_ms: u32) -> Option<Instant> {
        let sent_at = self.final_mark_sent_at?;
        let playback_end = self.playback_end.map_or(sent_at, |end| end.max(sent_at));
        Some(after(playback_end, margin_ms))
    }
}

/// The sans-IO turn-taking engine for one call.
///
/// # Driving it
/// Feed one input with a `handle_*` method, then drain [`poll_action`](Self::poll_action) and
/// [`poll_event`](Self::poll_event) until both return `None`, then sleep until
/// [`poll_timeout`](Self::poll_timeout) (or the next input) and call
/// [`handle_timeout`](Self::handle_timeout) when it is reached. Every input takes `now`; the
/// engine never reads a clock, so a test can drive it on a virtual one. `now` should not go
/// backwards; if it does, durations saturate at zero.
///
/// # Guarantees
/// - At most one agent turn — so at most one reply — is in flight; a reply starts only in
///   `Listening`. Turn ids increase; inputs for any other turn are dropped.
/// - The greeting is synthesized at most once per engine, at the first stream start.
/// - `Clear` is emitted only while `Speaking`.
/// - Every `TurnStarted` event is followed by one `TurnEnded`; no turn waits forever (the
///   responder and synthesis have `response_timeout_ms`, playback has the mark fallback).
/// - After `Ended` (stream stop or hang-up) no input produces any action or event.
#[derive(Debug)]
pub struct TurnEngine<V = EnergyVad> {
    config: TurnConfig,
    vad: V,
    state: State,
    started: bool,
    greeting_started: bool,
    last_turn: u64,
    agent: Option<AgentTurn>,
    voice: VoiceTracker,
    utterance: CallerUtterance,
    listening_since: Option<Instant>,
    last_caller_activity: Option<Instant>,
    reprompts: u32,
    last_answered: Option<String>,
    agent_sentences: VecDeque<String>,
    greeting_sentences: Vec<String>,
    pending_dtmf: String,
    /// The partial an answer was built from (normalised) and when: the STT final closing that
    /// segment must not be answered again. Forgotten after `CONSUMED_PARTIAL_TTL_MS` in case
    /// the STT never sends that final.
    consumed_partial: Option<(String, Instant)>,
    actions: VecDeque<Action>,
    events: VecDeque<Event>,
}

impl TurnEngine<EnergyVad> {
    /// Builds an engine with the default adaptive energy VAD.
    ///
    /// # Errors
    /// [`ConfigError`] when a timing is out of range or a required text is empty.
    pub fn new(config: TurnConfig) -> Result<Self, ConfigError> {
        config.validate()?;
        let vad = EnergyVad::new(&config.vad);
        Ok(Self::build(config, vad))
    }
}

impl<V: VoiceActivityDetector> TurnEngine<V> {
    /// Builds an engine with a custom voice activity detector.
    ///
    /// # Errors
    /// [`ConfigError`] when a timing is out of range or a required text is empty.
    pub fn with_vad(config: TurnConfig, vad: V) -> Result<Self, ConfigError> {
        config.validate()?;
        Ok(Self::build(config, vad))
    }

    fn build(config: TurnConfig, vad: V) -> Self {
        let mut greeting_sentences: Vec<String> = sentences(&config.greeting_text)
            .iter()
            .map(|s| normalize(s))
            .filter(|s| !s.is_empty())
            .collect();
        let whole = normalize(&config.greeting_text);
        if !whole.is_empty() {
            greeting_sentences.push(whole);
        }
        TurnEngine {
            config,
            vad,
            state: State::Listening,
            started: false,
            greeting_started: false,
            last_turn: 0,
            agent: None,
            voice: VoiceTracker::default(),
            utterance: CallerUtterance::default(),
            listening_since: None,
            last_caller_activity: None,
            reprompts: 0,
            last_answered: None,
            agent_sentences: VecDeque::new(),
            greeting_sentences,
            pending_dtmf: String::new(),
            consumed_partial: None,
            actions: VecDeque::new(),
            events: VecDeque::new(),
        }
    }

    // ----------------------------------------------------------------- outputs

    /// The next action for the driver, in order. Drain after every input.
    #[must_use]
    pub fn poll_action(&mut self) -> Option<Action> {
        self.actions.pop_front()
    }

    /// The next event for logs and metrics, in order. Drain after every input.
    #[must_use]
    pub fn poll_event(&mut self) -> Option<Event> {
        self.events.pop_front()
    }

    /// When the driver must call [`handle_timeout`](Self::handle_timeout) if no other input
    /// comes first. `None`: no timer is running (before start, or `Ended`).
    #[must_use]
    pub fn poll_timeout(&self) -> Option<Instant> {
        if self.state == State::Ended || !self.started {
            return None;
        }
        if let Some(agent) = &self.agent {
            if agent.generating() {
                return Some(after(agent.last_progress, self.config.response_timeout_ms));
            }
            return agent.fallback_deadline(self.config.mark_fallback_margin_ms);
        }
        match (self.eou_due(), self.idle_due()) {
            (Some(eou), _) => Some(eou),
            (None, idle) => idle,
        }
    }

    /// The current state.
    #[must_use]
    pub fn state(&self) -> State {
        self.state
    }

    /// The agent turn in progress, if any.
    #[must_use]
    pub fn current_turn(&self) -> Option<(TurnId, UtteranceKind)> {
        self.agent.as_ref().map(|agent| (agent.id, agent.kind))
    }

    /// The validated configuration.
    #[must_use]
    pub fn config(&self) -> &TurnConfig {
        &self.config
    }

    // ----------------------------------------------------------------- inputs

    /// The Twilio `start` message arrived: speaks the greeting (once per engine). A repeated
    /// start is ignored.
    pub fn handle_stream_start(&mut self, now: Instant) {
        if self.state == State::Ended {
            return;
        }
        if self.started {
            self.ignore(now, IgnoredInput::RepeatedStart);
            return;
        }
        self.started = true;
        self.listening_since = Some(now);
        if !self.greeting_started && !self.config.greeting_text.trim().is_empty() {
            self.greeting_started = true;
            let text = self.config.greeting_text.clone();
            self.start_scripted(now, UtteranceKind::Greeting, text);
        }
    }

    /// One frame of caller audio, headerless 8 kHz mu-law (20 ms = 160 bytes); `now` is when
    /// the frame arrived (its end). Drives the VAD, end of utterance and barge-in.
    pub fn handle_media_frame(&mut self, now: Instant, mulaw_frame: &[u8]) {
        if !self.accepts(now) || mulaw_frame.is_empty() {
            return;
        }
        let voiced = self.vad.is_voiced_mulaw(mulaw_frame);
        self.on_frame(now, voiced, frame_ms(mulaw_frame.len()));
    }

    /// One frame of caller audio as 8 kHz 16-bit linear samples (20 ms = 160 samples).
    pub fn handle_pcm_frame(&mut self, now: Instant, samples: &[i16]) {
        if !self.accepts(now) || samples.is_empty() {
            return;
        }
        let voiced = self.vad.is_voiced_pcm(samples);
        self.on_frame(now, voiced, frame_ms(samples.len()));
    }

    /// An interim STT result. `stability` is Google's 0.0..=1.0 estimate that it will not change.
    pub fn handle_stt_partial(&mut self, now: Instant, text: &str, stability: f32) {
        if !self.accepts(now) {
            return;
        }
        let closing_answered_segment = self
            .consumed_partial
            .as_ref()
            .is_some_and(|(_, at)| now < after(*at, CONSUMED_PARTIAL_TTL_MS));
        if closing_answered_segment || normalize(text).is_empty() || self.state == State::Speaking {
            return;
        }
        let text = text.trim().to_owned();
        if stability >= self.config.stable_partial_min {
            self.utterance.stable_partial = Some(text.clone());
        }
        self.utterance.partial = Some(text);
        self.note_text_arrival(now);
        self.drive(now);
    }

    /// A final STT result: one finished segment of the caller's speech.
    pub fn handle_stt_final(&mut self, now: Instant, text: &str) {
        if !self.accepts(now) {
            return;
        }
        let mut text = text.trim().to_owned();
        if let Some((consumed, _)) = self
            .consumed_partial
            .take()
            .filter(|(_, at)| now < after(*at, CONSUMED_PARTIAL_TTL_MS))
        {
            // This final closes the segment already answered from its partial; keep only words
            // the caller added after that partial.
            match words_after_prefix(&text, &consumed) {
                Some(rest) if !normalize(&rest).is_empty() => text = rest,
                _ => {
                    self.ignore(now, IgnoredInput::AlreadyAnswered);
                    self.drive(now);
                    return;
                }
            }
        }
        let normalized = normalize(&text);
        let rejection = if normalized.is_empty() {
            Some(IgnoredInput::EmptyTranscript)
        } else if self.is_echo(&normalized) {
            Some(IgnoredInput::EchoOfAgent)
        } else if self.state == State::Speaking {
            Some(IgnoredInput::WhileAgentSpeaking)
        } else if self.reply_not_yet_audible()
            && self.last_answered.as_deref() == Some(normalized.as_str())
        {
            Some(IgnoredInput::DuplicateCallerText)
        } else {
            None
        };
        match rejection {
            Some(reason) => {
                // A final closes its segment: the partials that led to it go with it, and so
                // does the silence clock they may have started.
                self.utterance.partial = None;
                self.utterance.stable_partial = None;
                if !self.utterance.has_text() {
                    self.utterance.silence_since = None;
                }
                self.ignore(now, reason);
            }
            None => {
                if self.reply_not_yet_audible() {
                    self.supersede(now, false);
                }
                self.add_final(now, &text);
            }
        }
        self.drive(now);
    }

    /// A piece of the responder's reply text for `turn` (any size; sentences are sent to
    /// synthesis as soon as they are complete).
    pub fn handle_reply_chunk(&mut self, now: Instant, turn: TurnId, chunk: &str) {
        if !self.accepts(now) {
            return;
        }
        let Some(agent) = self.open_reply_mut(turn) else {
            self.ignore(now, IgnoredInput::StaleTurn(turn));
            return;
        };
        agent.text_buffer.push_str(chunk);
        agent.last_progress = now;
        while let Some(end) = self
            .agent
            .as_ref()
            .and_then(|a| sentence_end(&a.text_buffer))
        {
            let sentence: String = match self.agent.as_mut() {
                Some(agent) => agent.text_buffer.drain(..end).collect(),
                None => break,
            };
            self.speak_reply_sentence(now, &sentence);
        }
        let overlong = self.agent.as_mut().and_then(|agent| {
            if agent.text_buffer.len() <= MAX_UNPUNCTUATED_BYTES {
                return None;
            }
            let cut = agent.text_buffer.rfind(char::is_whitespace)?;
            Some(agent.text_buffer.drain(..cut).collect::<String>())
        });
        if let Some(piece) = overlong {
            self.speak_reply_sentence(now, &piece);
        }
        self.drive(now);
    }

    /// The responder finished the reply of `turn`.
    pub fn handle_reply_done(&mut self, now: Instant, turn: TurnId) {
        if !self.accepts(now) {
            return;
        }
        let Some(agent) = self.open_reply_mut(turn) else {
            self.ignore(now, IgnoredInput::StaleTurn(turn));
            return;
        };
        agent.reply_open = false;
        agent.last_progress = now;
        let rest = std::mem::take(&mut agent.text_buffer);
        for sentence in sentences(&rest) {
            self.speak_reply_sentence(now, &sentence);
        }
        self.maybe_finish(now);
        self.drive(now);
    }

    /// The responder failed on `turn`. Before any audio played this speaks the apology;
    /// otherwise the turn ends after what was already synthesized.
    pub fn handle_reply_failed(&mut self, now: Instant, turn: TurnId) {
        if !self.accepts(now) {
            return;
        }
        let Some(agent) = self.open_reply_mut(turn) else {
            self.ignore(now, IgnoredInput::StaleTurn(turn));
            return;
        };
        agent.reply_open = false;
        agent.text_buffer.clear();
        agent.last_progress = now;
        if agent.audio_bytes == 0 {
            self.abandon_turn(now);
        } else {
            self.maybe_finish(now);
        }
        self.drive(now);
    }

    /// Synthesized speech for `turn`: headerless 8 kHz mu-law, any length. Emits `Play` and a
    /// `SendMark` after it.
    pub fn handle_tts_audio(&mut self, now: Instant, turn: TurnId, audio: Bytes) {
        if !self.accepts(now) {
            return;
        }
        let Some(agent) = self.synthesizing_mut(turn) else {
            self.ignore(now, IgnoredInput::StaleTurn(turn));
            return;
        };
        agent.last_progress = now;
        if audio.is_empty() {
            return;
        }
        let first_audio = agent.audio_bytes == 0;
        agent.audio_bytes += audio.len();
        let start = agent.playback_end.map_or(now, |end| end.max(now));
        agent.playback_end = Some(
            start
                .checked_add(mulaw_duration(audio.len()))
                .unwrap_or(start),
        );
        let name = format!("{}-{}", agent.id, agent.marks.len());
        agent.marks.push((name.clone(), agent.audio_ms()));
        let id = agent.id;
        self.actions.push_back(Action::Play { turn: id, audio });
        self.actions.push_back(Action::SendMark { turn: id, name });
        if first_audio {
            self.utterance.partial = None;
            self.utterance.stable_partial = None;
            self.set_state(now, State::Speaking);
        }
        self.drive(now);
    }

    /// The synthesis of the oldest unfinished `Synthesize` of `turn` completed.
    pub fn handle_tts_done(&mut self, now: Instant, turn: TurnId) {
        if !self.accepts(now) {
            return;
        }
        let Some(agent) = self.synthesizing_mut(turn) else {
            self.ignore(now, IgnoredInput::StaleTurn(turn));
            return;
        };
        agent.synth_outstanding -= 1;
        agent.last_progress = now;
        let audio_ms = agent.audio_ms();
        if let Some(segment) = agent.segments.iter_mut().find(|s| s.end_ms.is_none()) {
            segment.end_ms = Some(audio_ms);
        }
        self.maybe_finish(now);
        self.drive(now);
    }

    /// The synthesis of the oldest unfinished `Synthesize` of `turn` failed. Before any audio
    /// played the turn is abandoned (a reply gets the apology); otherwise it ends after the
    /// audio already sent.
    pub fn handle_tts_failed(&mut self, now: Instant, turn: TurnId) {
        if !self.accepts(now) {
            return;
        }
        let Some(agent) = self.synthesizing_mut(turn) else {
            self.ignore(now, IgnoredInput::StaleTurn(turn));
            return;
        };
        agent.synth_outstanding -= 1;
        agent.last_progress = now;
        if let Some(index) = agent.segments.iter().position(|s| s.end_ms.is_none()) {
            agent.segments.remove(index);
        }
        if agent.audio_bytes == 0 {
            self.abandon_turn(now);
        } else {
            self.stop_generating();
            self.maybe_finish(now);
        }
        self.drive(now);
    }

    /// Twilio echoed the mark `name`: the audio before it has played.
    pub fn handle_mark(&mut self, now: Instant, name: &str) {
        if !self.accepts(now) {
            return;
        }
        let Some(agent) = self.agent.as_mut() else {
            self.ignore(now, IgnoredInput::UnknownMark(name.to_owned()));
            return;
        };
        let Some(&(_, audio_ms)) = agent.marks.iter().find(|(mark, _)| mark == name) else {
            self.ignore(now, IgnoredInput::UnknownMark(name.to_owned()));
            return;
        };
        agent.heard_ms = agent.heard_ms.max(audio_ms);
        if agent.final_mark.as_deref() == Some(name) {
            self.end_turn(now, TurnOutcome::Played);
            self.resume_listening(now);
        }
        self.drive(now);
    }

    /// A keypad digit. Delivered to the responder as caller input; interrupts an interruptible
    /// agent turn, otherwise waits until the turn ends.
    pub fn handle_dtmf(&mut self, now: Instant, digit: char) {
        if !self.accepts(now) {
            return;
        }
        if !is_dtmf_digit(digit) {
            self.ignore(now, IgnoredInput::InvalidDigit(digit));
            return;
        }
        self.reprompts = 0;
        self.last_caller_activity = Some(now);
        self.pending_dtmf.push(digit);
        match self.state {
            State::Listening => self.resume_listening(now),
            State::Thinking if self.reply_not_yet_audible() => {
                self.supersede(now, true);
                self.resume_listening(now);
            }
            State::Speaking if self.agent_interruptible() => {
                self.barge_in(now, BargeInCause::Dtmf, 0);
                self.resume_listening(now);
            }
            _ => {}
        }
        self.drive(now);
    }

    /// The Twilio `stop` message arrived (or the socket closed): cancels the turn in progress
    /// and ends the engine. Does not emit `Hangup` — the stream is already gone.
    pub fn handle_stream_stop(&mut self, now: Instant) {
        if self.state == State::Ended {
            return;
        }
        if self.agent.is_some() {
            self.cancel_generation();
            self.end_turn(now, TurnOutcome::Cancelled);
        }
        self.set_state(now, State::Ended);
    }

    /// The time from [`poll_timeout`](Self::poll_timeout) was reached (calling it early or
    /// late is harmless).
    pub fn handle_timeout(&mut self, now: Instant) {
        if self.state == State::Ended || !self.started {
            return;
        }
        self.drive(now);
    }

    // ----------------------------------------------------------------- internals

    /// False (after noting why) when inputs must be ignored.
    fn accepts(&mut self, now: Instant) -> bool {
        if self.state == State::Ended {
            return false;
        }
        if !self.started {
            self.ignore(now, IgnoredInput::BeforeStart);
            return false;
        }
        true
    }

    fn ignore(&mut self, at: Instant, reason: IgnoredInput) {
        self.events.push_back(Event::InputIgnored { reason, at });
    }

    fn set_state(&mut self, now: Instant, to: State) {
        if self.state != to {
            self.events.push_back(Event::StateChanged {
                from: self.state,
                to,
                at: now,
            });
            self.state = to;
        }
    }

    fn on_frame(&mut self, now: Instant, voiced: bool, frame_ms: u32) {
        let frame_start = before(now, frame_ms);
        let voice = &mut self.voice;
        if voiced {
            if voice.voiced_since.is_none() {
                voice.voiced_since = Some(frame_start);
                voice.voiced_ms = 0;
            }
            voice.voiced_ms = voice.voiced_ms.saturating_add(frame_ms);
            voice.unvoiced_ms = 0;
            voice.unvoiced_since = None;
            if !voice.speaking && voice.voiced_ms >= self.config.speech_start_ms {
                voice.speaking = true;
                let at = voice.voiced_since.unwrap_or(frame_start);
                self.events.push_back(Event::CallerSpeechStarted { at });
                self.utterance.silence_since = None;
                self.reprompts = 0;
                self.last_caller_activity = Some(now);
            }
        } else {
            if voice.unvoiced_since.is_none() {
                voice.unvoiced_since = Some(frame_start);
            }
            voice.unvoiced_ms = voice.unvoiced_ms.saturating_add(frame_ms);
            if voice.unvoiced_ms > VOICED_GAP_TOLERANCE_MS {
                voice.voiced_ms = 0;
                voice.voiced_since = None;
            }
            if voice.speaking && voice.unvoiced_ms >= self.config.speech_end_ms {
                voice.speaking = false;
                let at = voice.unvoiced_since.unwrap_or(frame_start);
                self.events.push_back(Event::CallerSpeechEnded { at });
                self.utterance.silence_since = Some(at);
                self.last_caller_activity = Some(at);
            }
        }
        if self.voice.speaking {
            self.last_caller_activity = Some(now);
        }
        let sustained = self.voice.voiced_ms >= self.config.barge_in_ms;
        if sustained && self.state == State::Speaking && self.agent_interruptible() {
            let latency = self
                .voice
                .voiced_since
                .map_or(0, |since| millis_between(since, now));
            self.barge_in(now, BargeInCause::Speech, latency);
        } else if sustained && self.reply_not_yet_audible() {
            let started_at = self.agent.as_ref().map(|a| a.started_at);
            if self.voice.voiced_since >= started_at {
                self.supersede(now, false);
            }
        }
        self.drive(now);
    }

    fn note_text_arrival(&mut self, now: Instant) {
        if !self.voice.speaking && self.utterance.silence_since.is_none() {
            self.utterance.silence_since = Some(now);
        }
        self.reprompts = 0;
        self.last_caller_activity = Some(now);
    }

    fn add_final(&mut self, now: Instant, text: &str) {
        append_words(&mut self.utterance.finals, text);
        self.utterance.partial = None;
        self.utterance.stable_partial = None;
        self.note_text_arrival(now);
    }

    fn is_echo(&self, normalized: &str) -> bool {
        let words = normalized.split(' ').count();
        self.agent_sentences.iter().any(|sentence| {
            sentence == normalized
                || (words >= ECHO_MIN_WORDS_FOR_PART && sentence.contains(normalized))
        }) || (words >= ECHO_MIN_WORDS_FOR_PART
            && self
                .agent_sentences
                .iter()
                .map(String::as_str)
                .collect::<Vec<_>>()
                .join(" ")
                .contains(normalized))
    }

    /// A reply turn exists and none of its audio has been sent.
    fn reply_not_yet_audible(&self) -> bool {
        self.agent
            .as_ref()
            .is_some_and(|a| a.kind == UtteranceKind::Reply && a.audio_bytes == 0)
    }

    fn agent_interruptible(&self) -> bool {
        self.agent.as_ref().is_some_and(|agent| match agent.kind {
            UtteranceKind::Reply | UtteranceKind::Reprompt | UtteranceKind::Apology => true,
            UtteranceKind::Greeting => !self.config.protect_greeting,
            UtteranceKind::Goodbye => false,
        })
    }

    fn open_reply_mut(&mut self, turn: TurnId) -> Option<&mut AgentTurn> {
        self.agent
            .as_mut()
            .filter(|a| a.id == turn && a.kind == UtteranceKind::Reply && a.reply_open)
    }

    fn synthesizing_mut(&mut self, turn: TurnId) -> Option<&mut AgentTurn> {
        self.agent
            .as_mut()
            .filter(|a| a.id == turn && a.synth_outstanding > 0)
    }

    fn new_turn(
        &mut self,
        now: Instant,
        kind: UtteranceKind,
        input: Option<CallerInput>,
    ) -> TurnId {
        self.last_turn += 1;
        let id = TurnId(self.last_turn);
        self.events.push_back(Event::TurnStarted { turn: id, kind });
        self.agent = Some(AgentTurn {
            id,
            kind,
            input,
            last_answered_before: self.last_answered.clone(),
            reply_open: false,
            text_buffer: String::new(),
            segments: Vec::new(),
            synth_outstanding: 0,
            audio_bytes: 0,
            marks: Vec::new(),
            heard_ms: 0,
            final_mark: None,
            final_mark_sent_at: None,
            playback_end: None,
            started_at: now,
            last_progress: now,
        });
        id
    }

    fn start_scripted(&mut self, now: Instant, kind: UtteranceKind, text: String) -> TurnId {
        let id = self.new_turn(now, kind, None);
        self.synthesize(&text, kind);
        self.set_state(now, State::Thinking);
        id
    }

    fn start_reply(
        &mut self,
        now: Instant,
        input: CallerInput,
        end_of_utterance: Option<(u64, TranscriptSource)>,
    ) {
        let turn = self.new_turn(now, UtteranceKind::Reply, Some(input.clone()));
        if let Some(agent) = self.agent.as_mut() {
            agent.reply_open = true;
        }
        if let (Some((silence_ms, source)), CallerInput::Speech { text }) =
            (end_of_utterance, &input)
        {
            self.events.push_back(Event::EndOfUtterance {
                turn,
                text: text.clone(),
                silence_ms,
                source,
            });
        }
        self.events.push_back(Event::CallerInput {
            turn,
            input: input.clone(),
        });
        self.actions.push_back(Action::StartReply { turn, input });
        self.set_state(now, State::Thinking);
    }

    fn synthesize(&mut self, text: &str, kind: UtteranceKind) {
        let Some(agent) = self.agent.as_mut() else {
            return;
        };
        agent.synth_outstanding += 1;
        agent.segments.push(Segment {
            text: text.to_owned(),
            end_ms: None,
        });
        let turn = agent.id;
        for sentence in sentences(text) {
            let normalized = normalize(&sentence);
            if !normalized.is_empty() {
                if self.agent_sentences.len() == AGENT_SENTENCES_KEPT {
                    self.agent_sentences.pop_front();
                }
                self.agent_sentences.push_back(normalized);
            }
        }
        self.actions.push_back(Action::Synthesize {
            turn,
            text: text.to_owned(),
            kind,
        });
    }

    fn speak_reply_sentence(&mut self, now: Instant, sentence: &str) {
        let sentence = sentence.trim();
        let normalized = normalize(sentence);
        if normalized.is_empty() {
            return;
        }
        if self.greeting_sentences.contains(&normalized) {
            self.ignore(now, IgnoredInput::RepeatedGreeting);
            return;
        }
        self.synthesize(sentence, UtteranceKind::Reply);
    }

    /// Emits the cancels for whatever of the current turn is still being generated.
    fn cancel_generation(&mut self) {
        let Some(agent) = self.agent.as_mut() else {
            return;
        };
        if agent.reply_open {
            self.actions
                .push_back(Action::CancelReply { turn: agent.id });
        }
        if agent.synth_outstanding > 0 {
            self.actions
                .push_back(Action::CancelSynthesis { turn: agent.id });
        }
    }

    /// Cancels generation and forgets the unsynthesized rest, keeping the audio already sent.
    fn stop_generating(&mut self) {
        self.cancel_generation();
        if let Some(agent) = self.agent.as_mut() {
            agent.reply_open = false;
            agent.synth_outstanding = 0;
            agent.text_buffer.clear();
            agent.segments.retain(|s| s.end_ms.is_some());
        }
    }

    /// Once nothing more is being generated: ends a silent turn, or sends the final mark.
    fn maybe_finish(&mut self, now: Instant) {
        let Some(agent) = self.agent.as_mut() else {
            return;
        };
        if agent.generating() || agent.final_mark.is_some() {
            return;
        }
        if agent.audio_bytes == 0 {
            self.end_turn(now, TurnOutcome::NothingToSay);
            self.resume_listening(now);
            return;
        }
        let name = format!("{}-end", agent.id);
        agent.marks.push((name.clone(), agent.audio_ms()));
        agent.final_mark = Some(name.clone());
        agent.final_mark_sent_at = Some(now);
        let turn = agent.id;
        self.actions.push_back(Action::SendMark { turn, name });
    }

    /// The current turn failed or stalled before any audio: cancel it; a reply gets the apology.
    fn abandon_turn(&mut self, now: Instant) {
        self.cancel_generation();
        let kind = self.end_turn(now, TurnOutcome::Failed);
        if kind == Some(UtteranceKind::Reply) && self.pending_dtmf.is_empty() {
            let text = self.config.apology_text.clone();
            self.start_scripted(now, UtteranceKind::Apology, text);
        } else {
            self.resume_listening(now);
        }
    }

    /// Ends the current turn (event, hang-up after the goodbye) and returns its kind. The
    /// caller decides what comes next (`resume_listening`, apology).
    fn end_turn(&mut self, now: Instant, outcome: TurnOutcome) -> Option<UtteranceKind> {
        let agent = self.agent.take()?;
        self.events.push_back(Event::TurnEnded {
            turn: agent.id,
            kind: agent.kind,
            outcome,
            audio_ms: agent.audio_ms(),
            heard_ms: agent.heard_ms,
        });
        if agent.kind == UtteranceKind::Goodbye && outcome != TurnOutcome::Cancelled {
            self.actions.push_back(Action::Hangup {
                reason: HangupReason::NoResponse,
            });
            self.set_state(now, State::Ended);
        } else if outcome != TurnOutcome::Cancelled {
            self.set_state(now, State::Listening);
            self.listening_since = Some(now);
        }
        Some(agent.kind)
    }

    /// In `Listening` with no turn: answers pending DTMF digits at once.
    fn resume_listening(&mut self, now: Instant) {
        if self.state != State::Listening || self.agent.is_some() || self.pending_dtmf.is_empty() {
            return;
        }
        let digits = std::mem::take(&mut self.pending_dtmf);
        self.utterance.clear();
        self.consumed_partial = None;
        self.start_reply(now, CallerInput::Dtmf { digits }, None);
    }

    fn barge_in(&mut self, now: Instant, cause: BargeInCause, latency_ms: u64) {
        self.actions.push_back(Action::Clear);
        self.cancel_generation();
        if let Some(agent) = self.agent.as_ref() {
            self.events.push_back(Event::BargeIn {
                turn: agent.id,
                cause,
                latency_ms,
                heard_text: agent.heard_text(),
                heard_ms: agent.heard_ms,
            });
        }
        self.end_turn(now, TurnOutcome::Interrupted);
    }

    /// The caller added speech (or digits) before the reply became audible: cancel the reply
    /// and put its input back so it is answered together with what comes next.
    fn supersede(&mut self, now: Instant, by_dtmf: bool) {
        self.cancel_generation();
        let (input, last_answered_before) = match self.agent.as_mut() {
            Some(agent) => (agent.input.take(), agent.last_answered_before.take()),
            None => return,
        };
        self.end_turn(now, TurnOutcome::Superseded);
        self.last_answered = last_answered_before;
        match input {
            Some(CallerInput::Speech { text }) => {
                let mut merged = text;
                append_words(&mut merged, &self.utterance.finals);
                self.utterance.finals = merged;
            }
            Some(CallerInput::Dtmf { digits }) if by_dtmf => {
                self.pending_dtmf.insert_str(0, &digits);
            }
            _ => {}
        }
    }

    fn eou_due(&self) -> Option<Instant> {
        if self.state != State::Listening
            || self.agent.is_some()
            || self.voice.speaking
            || !self.utterance.has_text()
        {
            return None;
        }
        let ready = after(self.utterance.silence_since?, self.config.eou_ms);
        if self.utterance.partial.is_some() {
            Some(after(ready, self.config.final_grace_ms))
        } else {
            Some(ready)
        }
    }

    /// Idle runs whenever no end of utterance is pending — also while the VAD still believes
    /// the caller is speaking (every voiced frame refreshes `last_caller_activity`, so this only
    /// matters when caller audio stops arriving mid-speech: the engine must not wait forever).
    fn idle_due(&self) -> Option<Instant> {
        if self.state != State::Listening || self.agent.is_some() || self.eou_due().is_some() {
            return None;
        }
        let since = match (self.listening_since, self.last_caller_activity) {
            (Some(a), Some(b)) => a.max(b),
            (a, b) => a.or(b)?,
        };
        Some(after(since, self.config.idle_ms))
    }

    /// Acts on every deadline that `now` has reached.
    fn drive(&mut self, now: Instant) {
        if self.state == State::Ended {
            return;
        }
        if let Some(agent) = &self.agent {
            if agent.generating() {
                if now >= after(agent.last_progress, self.config.response_timeout_ms) {
                    if agent.audio_bytes == 0 {
                        self.abandon_turn(now);
                    } else {
                        self.stop_generating();
                        self.maybe_finish(now);
                    }
                }
            } else if agent
                .fallback_deadline(self.config.mark_fallback_margin_ms)
                .is_some_and(|deadline| now >= deadline)
            {
                self.end_turn(now, TurnOutcome::PlayedByFallback);
                self.resume_listening(now);
            }
        }
        if self.eou_due().is_some_and(|due| now >= due) {
            self.answer_utterance(now);
        } else if self.idle_due().is_some_and(|due| now >= due) {
            self.utterance.clear();
            if self.reprompts < self.config.max_reprompts {
                self.reprompts += 1;
                let index = (self.reprompts as usize - 1).min(self.config.reprompt_texts.len() - 1);
                let text = self.config.reprompt_texts[index].clone();
                let turn = self.start_scripted(now, UtteranceKind::Reprompt, text);
                self.last_answered = None;
                self.events.push_back(Event::Reprompt {
                    turn,
                    count: self.reprompts,
                });
            } else {
                let text = self.config.goodbye_text.clone();
                self.start_scripted(now, UtteranceKind::Goodbye, text);
            }
        }
    }

    fn answer_utterance(&mut self, now: Instant) {
        let (text, source) = self.utterance.text_for_answer();
        let silence_ms = self
            .utterance
            .silence_since
            .map_or(0, |since| millis_between(since, now));
        let consumed = match source {
            TranscriptSource::Final => None,
            TranscriptSource::StablePartial => self.utterance.stable_partial.as_deref(),
            TranscriptSource::LatestPartial => self.utterance.partial.as_deref(),
        }
        .map(|partial| (normalize(partial), now));
        self.utterance.clear();
        let normalized = normalize(&text);
        if normalized.is_empty() {
            return;
        }
        if self.is_echo(&normalized) {
            self.ignore(now, IgnoredInput::EchoOfAgent);
            return;
        }
        if self.last_answered.as_deref() == Some(normalized.as_str()) {
            self.ignore(now, IgnoredInput::DuplicateCallerText);
            return;
        }
        self.consumed_partial = consumed;
        self.last_answered = Some(normalized);
        self.start_reply(
            now,
            CallerInput::Speech { text },
            Some((silence_ms, source)),
        );
    }
}

fn frame_ms(samples: usize) -> u32 {
    u32::try_from(mulaw::duration_ms(samples))
        .unwrap_or(u32::MAX)
        .max(1)
}

/// The words of `text` after the words that normalise to `prefix`, or `None` when `text` does
/// not start with them.
fn words_after_prefix(text: &str, prefix: &str) -> Option<String> {
    let prefix_words: Vec<&str> = prefix.split(' ').filter(|w| !w.is_empty()).collect();
    let mut matched = 0;
    let mut rest = Vec::new();
    for word in text.split_whitespace() {
        let normalized = normalize(word);
        if matched < prefix_words.len() {
            if normalized.is_empty() {
                continue;
            }
            // A word like "don't" normalises to two words; compare word by word.
            for part in normalized.split(' ') {
                if prefix_words.get(matched) != Some(&part) {
                    return None;
                }
                matched += 1;
            }
        } else {
            rest.push(word);
        }
    }
    (matched >= prefix_words.len()).then(|| rest.join(" "))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn words_after_prefix_keeps_the_added_words() {
        assert_eq!(
            words_after_prefix("What are your hours, on Saturday?", "what are your hours"),
            Some("on Saturday?".to_owned())
        );
        assert_eq!(
            words_after_prefix("What are your hours", "what are your hours"),
            Some(String::new())
        );
        assert_eq!(words_after_prefix("When do you open", "what are"), None);
    }
}

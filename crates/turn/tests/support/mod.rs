//! Shared test helpers: a virtual clock, deterministic caller audio and readable renderings of
//! actions and events.
#![allow(dead_code)]

use std::time::{Duration, Instant};

use turn::{Action, CallerInput, Event, TurnEngine};

/// 20 ms of 8 kHz audio.
pub const FRAME_SAMPLES: usize = 160;

/// Deterministic caller audio: voice-like tones and low line hiss, as G.711 mu-law.
#[derive(Debug)]
pub struct CallerAudio {
    phase: f32,
    seed: u32,
}

impl Default for CallerAudio {
    fn default() -> Self {
        CallerAudio {
            phase: 0.0,
            seed: 0x2545_f491,
        }
    }
}

impl CallerAudio {
    fn hiss_sample(&mut self, amplitude: i32) -> i32 {
        self.seed = self
            .seed
            .wrapping_mul(1_664_525)
            .wrapping_add(1_013_904_223);
        ((self.seed >> 16) as i32) % (2 * amplitude + 1) - amplitude
    }

    /// One frame of "speech": two tones (200 Hz and 630 Hz) over the line hiss, about -22 dBFS.
    pub fn speech_frame(&mut self) -> Vec<u8> {
        let samples: Vec<i16> = (0..FRAME_SAMPLES)
            .map(|_| {
                self.phase += 2.0 * std::f32::consts::PI / 8000.0;
                let voice =
                    1800.0 * (200.0 * self.phase).sin() + 1200.0 * (630.0 * self.phase).sin();
                (voice as i32 + self.hiss_sample(40)) as i16
            })
            .collect();
        mulaw::encode(&samples)
    }

    /// One frame of an open phone line with nobody talking (hiss of about -60 dBFS).
    pub fn silence_frame(&mut self) -> Vec<u8> {
        let samples: Vec<i16> = (0..FRAME_SAMPLES)
            .map(|_| self.hiss_sample(40) as i16)
            .collect();
        mulaw::encode(&samples)
    }
}

/// Virtual clock: milliseconds since an arbitrary base.
#[derive(Debug, Clone, Copy)]
pub struct Clock {
    base: Instant,
}

impl Default for Clock {
    fn default() -> Self {
        Clock {
            base: Instant::now(),
        }
    }
}

impl Clock {
    pub fn at(&self, ms: u64) -> Instant {
        self.base + Duration::from_millis(ms)
    }

    pub fn ms(&self, t: Instant) -> u64 {
        t.saturating_duration_since(self.base).as_millis() as u64
    }
}

/// Drains every pending action and event.
pub fn drain<V: turn::VoiceActivityDetector>(
    engine: &mut TurnEngine<V>,
) -> (Vec<Action>, Vec<Event>) {
    let mut actions = Vec::new();
    while let Some(action) = engine.poll_action() {
        actions.push(action);
    }
    let mut events = Vec::new();
    while let Some(event) = engine.poll_event() {
        events.push(event);
    }
    (actions, events)
}

/// Fires every timer due at or before `until`, each at its own deadline; returns what came out.
pub fn run_timers_until<V: turn::VoiceActivityDetector>(
    engine: &mut TurnEngine<V>,
    until: Instant,
) -> (Vec<Action>, Vec<Event>) {
    let (mut actions, mut events) = (Vec::new(), Vec::new());
    // Bounded: each firing moves the engine forward; 1000 firings would be a bug.
    for _ in 0..1000 {
        match engine.poll_timeout() {
            Some(deadline) if deadline <= until => {
                engine.handle_timeout(deadline);
                let (a, e) = drain(engine);
                actions.extend(a);
                events.extend(e);
            }
            _ => return (actions, events),
        }
    }
    panic!("timers kept firing: the engine is looping");
}

/// `Play t2 1500ms`, `StartReply t2 speech "hi"`, ... — the form scenario files use.
pub fn describe_action(action: &Action) -> String {
    match action {
        Action::StartReply { turn, input } => match input {
            CallerInput::Speech { text } => format!("StartReply {turn} speech {text:?}"),
            CallerInput::Dtmf { digits } => format!("StartReply {turn} dtmf {digits:?}"),
        },
        Action::CancelReply { turn } => format!("CancelReply {turn}"),
        Action::Synthesize { turn, text, kind } => format!("Synthesize {turn} {kind:?} {text:?}"),
        Action::CancelSynthesis { turn } => format!("CancelSynthesis {turn}"),
        Action::Play { turn, audio } => {
            format!("Play {turn} {}ms", mulaw::duration_ms(audio.len()))
        }
        Action::SendMark { turn, name } => format!("SendMark {turn} {name}"),
        Action::Clear => "Clear".to_owned(),
        Action::Hangup { reason } => format!("Hangup {reason:?}"),
    }
}

/// `BargeIn t2 Speech latency=160ms ...`, with instants shown as `@ms` on `clock`.
pub fn describe_event(event: &Event, clock: &Clock) -> String {
    match event {
        Event::StateChanged { from, to, at } => format!("State {from}->{to} @{}", clock.ms(*at)),
        Event::CallerSpeechStarted { at } => format!("SpeechStarted @{}", clock.ms(*at)),
        Event::CallerSpeechEnded { at } => format!("SpeechEnded @{}", clock.ms(*at)),
        Event::EndOfUtterance {
            turn,
            text,
            silence_ms,
            source,
        } => {
            format!("EndOfUtterance {turn} silence={silence_ms}ms source={source:?} text={text:?}")
        }
        Event::TurnStarted { turn, kind } => format!("TurnStarted {turn} {kind:?}"),
        Event::TurnEnded {
            turn,
            kind,
            outcome,
            audio_ms,
            heard_ms,
        } => format!("TurnEnded {turn} {kind:?} {outcome:?} audio={audio_ms}ms heard={heard_ms}ms"),
        Event::BargeIn {
            turn,
            cause,
            latency_ms,
            heard_text,
            heard_ms,
        } => format!(
            "BargeIn {turn} {cause:?} latency={latency_ms}ms heard={heard_ms}ms heard_text={heard_text:?}"
        ),
        Event::CallerInput { turn, input } => format!("CallerInput {turn} {input:?}"),
        Event::Reprompt { turn, count } => format!("Reprompt {turn} count={count}"),
        Event::InputIgnored { reason, at } => format!("Ignored {reason:?} @{}", clock.ms(*at)),
        other => format!("{other:?}"),
    }
}

//! Property tests: random interleavings of caller audio, transcripts, responder and synthesis
//! results, marks, digits, timers and stops — valid or out of order, for current or stale
//! turns — must never break the engine's guarantees.
#![allow(clippy::unwrap_used)]

mod support;

use std::collections::{BTreeMap, BTreeSet};
use std::time::Instant;

use bytes::Bytes;
use proptest::prelude::*;
use support::{CallerAudio, Clock};
use turn::{Action, Event, State, TurnConfig, TurnEngine, TurnId, UtteranceKind};

const FINALS: &[&str] = &[
    "",
    "...",
    "What are your hours?",
    "what are your hours",
    "Hello, thanks for calling.",
    "We are open nine to five.",
    "Yes",
    "Book a table for two",
];
const CHUNKS: &[&str] = &[
    "We are open nine to five. ",
    "Hello, thanks for calling. ",
    "How can I help you?",
    "Sure",
    "",
    " ok. ",
];

#[derive(Debug, Clone)]
enum Target {
    Current,
    Previous,
    Fixed(u64),
}

#[derive(Debug, Clone)]
enum Op {
    Frames { speech: bool, count: u8 },
    Partial { text: usize, stability: f32 },
    Final { text: usize },
    ReplyChunk { target: Target, text: usize },
    ReplyDone { target: Target },
    ReplyFailed { target: Target },
    TtsAudio { target: Target, ms: u16 },
    TtsDone { target: Target },
    TtsFailed { target: Target },
    EchoMark { pick: usize },
    EchoLastMark,
    BogusMark,
    Dtmf { digit: char },
    Start,
    Stop,
    Wait,
}

fn target() -> impl Strategy<Value = Target> {
    prop_oneof![
        6 => Just(Target::Current),
        1 => Just(Target::Previous),
        1 => (0u64..6).prop_map(Target::Fixed),
    ]
}

fn op() -> impl Strategy<Value = Op> {
    prop_oneof![
        6 => (any::<bool>(), 1u8..25).prop_map(|(speech, count)| Op::Frames { speech, count }),
        2 => (0..FINALS.len(), 0.0f32..1.0).prop_map(|(text, stability)| Op::Partial { text, stability }),
        3 => (0..FINALS.len()).prop_map(|text| Op::Final { text }),
        4 => (target(), 0..CHUNKS.len()).prop_map(|(target, text)| Op::ReplyChunk { target, text }),
        2 => target().prop_map(|target| Op::ReplyDone { target }),
        1 => target().prop_map(|target| Op::ReplyFailed { target }),
        4 => (target(), 20u16..2500).prop_map(|(target, ms)| Op::TtsAudio { target, ms }),
        2 => target().prop_map(|target| Op::TtsDone { target }),
        1 => target().prop_map(|target| Op::TtsFailed { target }),
        2 => any::<usize>().prop_map(|pick| Op::EchoMark { pick }),
        3 => Just(Op::EchoLastMark),
        1 => Just(Op::BogusMark),
        1 => prop::sample::select(vec!['1', '5', '#', '*', 'q']).prop_map(|digit| Op::Dtmf { digit }),
        1 => Just(Op::Start),
        1 => Just(Op::Wait),
        // Rare, so most sequences get deep into a call before it ends.
        1 => (0u8..8).prop_filter_map("rare stop", |n| (n == 0).then_some(Op::Stop)),
    ]
}

/// Drives the engine like the call driver would and checks every guarantee on every output.
struct Harness {
    engine: TurnEngine,
    clock: Clock,
    now_ms: u64,
    audio: CallerAudio,
    greetings: usize,
    reply_in_flight: Option<TurnId>,
    previous_turn: Option<TurnId>,
    sent_marks: Vec<String>,
    started: BTreeMap<u64, UtteranceKind>,
    ended: BTreeSet<u64>,
    ended_state_seen: bool,
}

impl Harness {
    fn new(config: TurnConfig) -> Self {
        Harness {
            engine: TurnEngine::new(config).unwrap(),
            clock: Clock::default(),
            now_ms: 0,
            audio: CallerAudio::default(),
            greetings: 0,
            reply_in_flight: None,
            previous_turn: None,
            sent_marks: Vec::new(),
            started: BTreeMap::new(),
            ended: BTreeSet::new(),
            ended_state_seen: false,
        }
    }

    fn now(&self) -> Instant {
        self.clock.at(self.now_ms)
    }

    /// Feeds one input, then drains and checks everything it produced.
    fn input(&mut self, label: &str, feed: impl FnOnce(&mut TurnEngine, Instant)) {
        let state_before = self.engine.state();
        let now = self.now();
        feed(&mut self.engine, now);
        let mut actions = Vec::new();
        while let Some(action) = self.engine.poll_action() {
            actions.push(action);
        }
        let mut events = Vec::new();
        while let Some(event) = self.engine.poll_event() {
            events.push(event);
        }
        if state_before == State::Ended {
            assert!(
                actions.is_empty() && events.is_empty(),
                "{label} after Ended produced {actions:?} {events:?}"
            );
        }
        for action in &actions {
            match action {
                Action::Synthesize {
                    kind: UtteranceKind::Greeting,
                    ..
                } => {
                    self.greetings += 1;
                    assert!(self.greetings <= 1, "a second greeting");
                }
                Action::StartReply { turn, .. } => {
                    assert_eq!(
                        self.reply_in_flight, None,
                        "{label}: StartReply {turn} while another reply is in flight"
                    );
                    self.reply_in_flight = Some(*turn);
                }
                Action::CancelReply { turn } => {
                    assert_eq!(
                        self.reply_in_flight,
                        Some(*turn),
                        "cancel of a reply not in flight"
                    );
                    self.reply_in_flight = None;
                }
                Action::Clear => {
                    assert_eq!(
                        state_before,
                        State::Speaking,
                        "{label}: Clear while not speaking"
                    );
                }
                Action::SendMark { name, .. } => self.sent_marks.push(name.clone()),
                _ => {}
            }
        }
        for event in &events {
            match event {
                Event::TurnStarted { turn, kind } => {
                    assert!(
                        self.started.insert(turn.0, *kind).is_none(),
                        "turn id reused"
                    );
                    let newest = self.started.keys().next_back().copied();
                    assert_eq!(newest, Some(turn.0), "turn ids must increase");
                }
                Event::TurnEnded { turn, kind, .. } => {
                    assert_eq!(
                        self.started.get(&turn.0),
                        Some(kind),
                        "end of a turn never started"
                    );
                    assert!(self.ended.insert(turn.0), "turn {turn} ended twice");
                    self.previous_turn = Some(*turn);
                }
                _ => {}
            }
        }
        let open_turns = self.started.len() - self.ended.len();
        assert!(open_turns <= 1, "{open_turns} agent turns at once");
        if self.ended_state_seen {
            assert_eq!(self.engine.state(), State::Ended, "left Ended");
        }
        self.ended_state_seen |= self.engine.state() == State::Ended;
    }

    /// Moves the clock to `ms`, firing each due timer at its deadline.
    fn advance_to(&mut self, ms: u64) {
        for _ in 0..1000 {
            match self.engine.poll_timeout() {
                Some(deadline) if deadline <= self.clock.at(ms) => {
                    self.now_ms = self.clock.ms(deadline).max(self.now_ms);
                    self.input("timeout", |e, now| e.handle_timeout(now));
                }
                _ => {
                    self.now_ms = ms;
                    return;
                }
            }
        }
        panic!("timers kept firing at one instant");
    }

    fn resolve(&self, target: &Target) -> TurnId {
        match target {
            Target::Current => self.engine.current_turn().map_or(TurnId(0), |(id, _)| id),
            Target::Previous => self.previous_turn.unwrap_or(TurnId(0)),
            Target::Fixed(n) => TurnId(*n),
        }
    }

    /// The test plays the responder: a done/failed for the reply in flight ends it.
    fn responder_finished(&mut self, turn: TurnId) {
        if self.reply_in_flight == Some(turn) {
            self.reply_in_flight = None;
        }
    }

    fn apply(&mut self, op: &Op) {
        match op {
            Op::Frames { speech, count } => {
                for _ in 0..*count {
                    let ms = self.now_ms + 20;
                    self.advance_to(ms);
                    let frame = if *speech {
                        self.audio.speech_frame()
                    } else {
                        self.audio.silence_frame()
                    };
                    self.input("frame", |e, now| e.handle_media_frame(now, &frame));
                }
            }
            Op::Partial { text, stability } => {
                self.input("partial", |e, now| {
                    e.handle_stt_partial(now, FINALS[*text], *stability)
                });
            }
            Op::Final { text } => {
                self.input("final", |e, now| e.handle_stt_final(now, FINALS[*text]))
            }
            Op::ReplyChunk { target, text } => {
                let turn = self.resolve(target);
                self.input("reply chunk", |e, now| {
                    e.handle_reply_chunk(now, turn, CHUNKS[*text])
                });
            }
            Op::ReplyDone { target } => {
                let turn = self.resolve(target);
                self.responder_finished(turn);
                self.input("reply done", |e, now| e.handle_reply_done(now, turn));
            }
            Op::ReplyFailed { target } => {
                let turn = self.resolve(target);
                self.responder_finished(turn);
                self.input("reply failed", |e, now| e.handle_reply_failed(now, turn));
            }
            Op::TtsAudio { target, ms } => {
                let turn = self.resolve(target);
                let audio = Bytes::from(vec![0x7Fu8; usize::from(*ms) * 8]);
                self.input("tts audio", |e, now| e.handle_tts_audio(now, turn, audio));
            }
            Op::TtsDone { target } => {
                let turn = self.resolve(target);
                self.input("tts done", |e, now| e.handle_tts_done(now, turn));
            }
            Op::TtsFailed { target } => {
                let turn = self.resolve(target);
                self.input("tts failed", |e, now| e.handle_tts_failed(now, turn));
            }
            Op::EchoMark { pick } => {
                if !self.sent_marks.is_empty() {
                    let name = self.sent_marks[pick % self.sent_marks.len()].clone();
                    self.input("mark", |e, now| e.handle_mark(now, &name));
                }
            }
            Op::EchoLastMark => {
                if let Some(name) = self.sent_marks.last().cloned() {
                    self.input("mark", |e, now| e.handle_mark(now, &name));
                }
            }
            Op::BogusMark => self.input("mark", |e, now| e.handle_mark(now, "no-such-mark")),
            Op::Dtmf { digit } => self.input("dtmf", |e, now| e.handle_dtmf(now, *digit)),
            Op::Start => self.input("start", |e, now| e.handle_stream_start(now)),
            Op::Stop => self.input("stop", |e, now| e.handle_stream_stop(now)),
            Op::Wait => {}
        }
    }
}

fn config(protect_greeting: bool, max_reprompts: u32) -> TurnConfig {
    TurnConfig {
        protect_greeting,
        max_reprompts,
        idle_ms: 3000,
        response_timeout_ms: 4000,
        ..TurnConfig::default()
    }
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 500, ..ProptestConfig::default() })]

    #[test]
    fn guarantees_hold_for_any_input_sequence(
        protect_greeting in any::<bool>(),
        max_reprompts in 0u32..3,
        ops in prop::collection::vec((prop_oneof![3 => 0u64..300, 1 => 0u64..3000], op()), 1..80),
    ) {
        let mut harness = Harness::new(config(protect_greeting, max_reprompts));
        harness.input("start", |e, now| e.handle_stream_start(now));
        for (delay_ms, op) in &ops {
            let ms = harness.now_ms + delay_ms;
            harness.advance_to(ms);
            harness.apply(op);
        }

        // Then the driver only follows the engine's timers (nobody answers anything): every
        // turn must still end and the call must end by itself — reprompts, goodbye, hang-up.
        for _ in 0..100 {
            match harness.engine.poll_timeout() {
                Some(deadline) => {
                    let ms = harness.clock.ms(deadline).max(harness.now_ms);
                    harness.advance_to(ms);
                }
                None => break,
            }
        }
        prop_assert_eq!(harness.engine.state(), State::Ended, "the call never ended on its own");
        prop_assert_eq!(harness.engine.poll_timeout(), None);
        let unended: Vec<_> = harness.started.keys().filter(|id| !harness.ended.contains(id)).collect();
        prop_assert!(unended.is_empty(), "turns never ended: {:?}", unended);
        prop_assert_eq!(harness.reply_in_flight, None, "a reply was never finished nor cancelled");

        // Nothing after Ended.
        let ms = harness.now_ms + 100;
        harness.advance_to(ms);
        harness.apply(&Op::Frames { speech: true, count: 10 });
        harness.apply(&Op::Final { text: 2 });
        harness.apply(&Op::Start);
        harness.apply(&Op::Dtmf { digit: '1' });
    }
}

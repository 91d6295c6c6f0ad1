//! Data-driven scenarios: each file in `tests/data/scenarios/` is a table of timed inputs and the
//! exact actions each must produce. Timers the engine asks for are fired at their deadlines as
//! the virtual clock moves, and their actions count towards the step that moved the clock past
//! them. A failing step prints the scenario, the step, its input, and expected vs. actual.
#![allow(clippy::unwrap_used)]

mod support;

use std::fmt::Write as _;
use std::path::{Path, PathBuf};

use bytes::Bytes;
use serde::Deserialize;
use support::{CallerAudio, Clock, describe_action, describe_event, drain, run_timers_until};
use turn::{TurnConfig, TurnEngine, TurnId};

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct Scenario {
    about: String,
    #[serde(default)]
    config: ConfigOverrides,
    steps: Vec<Step>,
}

/// The settings a scenario may change; everything else is `TurnConfig::default()`.
#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
struct ConfigOverrides {
    eou_ms: Option<u32>,
    barge_in_ms: Option<u32>,
    final_grace_ms: Option<u32>,
    idle_ms: Option<u32>,
    max_reprompts: Option<u32>,
    protect_greeting: Option<bool>,
    mark_fallback_margin_ms: Option<u32>,
    response_timeout_ms: Option<u32>,
    greeting_text: Option<String>,
}

impl ConfigOverrides {
    fn apply(&self) -> TurnConfig {
        let mut config = TurnConfig::default();
        macro_rules! set {
            ($($field:ident),*) => {$(if let Some(value) = self.$field.clone() { config.$field = value; })*};
        }
        set!(
            eou_ms,
            barge_in_ms,
            final_grace_ms,
            idle_ms,
            max_reprompts,
            protect_greeting,
            mark_fallback_margin_ms,
            response_timeout_ms,
            greeting_text
        );
        config
    }
}

#[derive(Debug, Deserialize)]
struct Step {
    /// Virtual time of the input, in ms. Audio inputs send their first 20 ms frame at `at + 20`.
    at: u64,
    #[serde(flatten)]
    input: Input,
    /// Every action the step produces, in order (`[]` = none).
    expect: Vec<String>,
    /// Each entry must be the beginning of one event the step produces.
    #[serde(default)]
    events: Vec<String>,
    /// The state after the step: LISTENING, THINKING, SPEAKING or ENDED.
    #[serde(default)]
    state: Option<String>,
}

#[derive(Debug, Deserialize)]
#[serde(tag = "do", rename_all = "snake_case")]
enum Input {
    StreamStart,
    StreamStop,
    /// Caller speech for `ms` (20 ms frames).
    Speech {
        ms: u64,
    },
    /// Open line, nobody talking, for `ms` (20 ms frames).
    Silence {
        ms: u64,
    },
    Partial {
        text: String,
        stability: f32,
    },
    Final {
        text: String,
    },
    ReplyChunk {
        turn: u64,
        text: String,
    },
    ReplyDone {
        turn: u64,
    },
    ReplyFailed {
        turn: u64,
    },
    /// `ms` of synthesized audio for `turn`.
    TtsAudio {
        turn: u64,
        ms: u64,
    },
    TtsDone {
        turn: u64,
    },
    TtsFailed {
        turn: u64,
    },
    Mark {
        name: String,
    },
    Dtmf {
        digit: char,
    },
    /// Only lets time pass to `at`, firing timers.
    Wait,
}

struct Runner {
    engine: TurnEngine,
    clock: Clock,
    audio: CallerAudio,
    now_ms: u64,
    actions: Vec<String>,
    events: Vec<String>,
}

impl Runner {
    fn advance_to(&mut self, ms: u64) {
        let (actions, events) = run_timers_until(&mut self.engine, self.clock.at(ms));
        self.record(actions, events);
        self.now_ms = ms;
    }

    fn record(&mut self, actions: Vec<turn::Action>, events: Vec<turn::Event>) {
        self.actions.extend(actions.iter().map(describe_action));
        self.events
            .extend(events.iter().map(|e| describe_event(e, &self.clock)));
    }

    fn drain(&mut self) {
        let (actions, events) = drain(&mut self.engine);
        self.record(actions, events);
    }

    fn frames(&mut self, start: u64, ms: u64, speech: bool) {
        for i in 1..=ms / 20 {
            let t = start + 20 * i;
            self.advance_to(t);
            let frame = if speech {
                self.audio.speech_frame()
            } else {
                self.audio.silence_frame()
            };
            self.engine.handle_media_frame(self.clock.at(t), &frame);
            self.drain();
        }
    }

    fn apply(&mut self, at: u64, input: &Input) {
        match input {
            Input::Speech { ms } => return self.frames(at, *ms, true),
            Input::Silence { ms } => return self.frames(at, *ms, false),
            _ => {}
        }
        self.advance_to(at);
        let now = self.clock.at(at);
        let e = &mut self.engine;
        match input {
            Input::StreamStart => e.handle_stream_start(now),
            Input::StreamStop => e.handle_stream_stop(now),
            Input::Partial { text, stability } => e.handle_stt_partial(now, text, *stability),
            Input::Final { text } => e.handle_stt_final(now, text),
            Input::ReplyChunk { turn, text } => e.handle_reply_chunk(now, TurnId(*turn), text),
            Input::ReplyDone { turn } => e.handle_reply_done(now, TurnId(*turn)),
            Input::ReplyFailed { turn } => e.handle_reply_failed(now, TurnId(*turn)),
            Input::TtsAudio { turn, ms } => {
                let audio = Bytes::from(vec![mulaw::SILENCE; (*ms * 8) as usize]);
                e.handle_tts_audio(now, TurnId(*turn), audio);
            }
            Input::TtsDone { turn } => e.handle_tts_done(now, TurnId(*turn)),
            Input::TtsFailed { turn } => e.handle_tts_failed(now, TurnId(*turn)),
            Input::Mark { name } => e.handle_mark(now, name),
            Input::Dtmf { digit } => e.handle_dtmf(now, *digit),
            Input::Wait | Input::Speech { .. } | Input::Silence { .. } => {}
        }
        self.drain();
    }
}

/// Runs one scenario; returns a readable report of every failing step.
fn run_scenario(path: &Path) -> Result<usize, String> {
    let text = std::fs::read_to_string(path).map_err(|e| format!("cannot read: {e}"))?;
    let scenario: Scenario =
        serde_json::from_str(&text).map_err(|e| format!("invalid scenario JSON: {e}"))?;
    let engine = TurnEngine::new(scenario.config.apply()).map_err(|e| e.to_string())?;
    let mut runner = Runner {
        engine,
        clock: Clock::default(),
        audio: CallerAudio::default(),
        now_ms: 0,
        actions: Vec::new(),
        events: Vec::new(),
    };
    let mut report = String::new();
    for (index, step) in scenario.steps.iter().enumerate() {
        if step.at < runner.now_ms {
            return Err(format!(
                "step {index} goes back in time (at {} < now {})",
                step.at, runner.now_ms
            ));
        }
        runner.actions.clear();
        runner.events.clear();
        runner.apply(step.at, &step.input);
        let state = runner.engine.state().to_string();
        let missing_events: Vec<&String> = step
            .events
            .iter()
            .filter(|want| {
                !runner
                    .events
                    .iter()
                    .any(|got| got.starts_with(want.as_str()))
            })
            .collect();
        let state_wrong = step.state.as_ref().is_some_and(|want| *want != state);
        if runner.actions != step.expect || !missing_events.is_empty() || state_wrong {
            let _ = writeln!(
                report,
                "  step {index} at {} ms, input {:?}\n    expected actions: {:#?}\n    actual actions:   {:#?}",
                step.at, step.input, step.expect, runner.actions
            );
            if !missing_events.is_empty() {
                let _ = writeln!(report, "    missing events:   {missing_events:#?}");
            }
            if state_wrong {
                let _ = writeln!(
                    report,
                    "    expected state {:?}, actual {state}",
                    step.state
                );
            }
            let _ = writeln!(report, "    events of the step: {:#?}", runner.events);
        }
    }
    if report.is_empty() {
        Ok(scenario.steps.len())
    } else {
        Err(format!("({})\n{report}", scenario.about))
    }
}

fn scenario_files() -> Vec<PathBuf> {
    let dir = Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/data/scenarios");
    let mut files: Vec<PathBuf> = std::fs::read_dir(&dir)
        .unwrap()
        .map(|entry| entry.unwrap().path())
        .filter(|path| path.extension().is_some_and(|ext| ext == "json"))
        .collect();
    files.sort();
    files
}

#[test]
fn every_scenario_table_produces_exactly_the_expected_actions() {
    let files = scenario_files();
    assert!(
        files.len() >= 10,
        "scenario files missing: found {}",
        files.len()
    );
    let mut failures = String::new();
    for path in &files {
        let name = path.file_stem().unwrap().to_string_lossy().into_owned();
        match run_scenario(path) {
            Ok(steps) => println!("scenario {name}: ok ({steps} steps)"),
            Err(report) => {
                let _ = writeln!(failures, "scenario {name} FAILED {report}");
            }
        }
    }
    assert!(failures.is_empty(), "\n{failures}");
}

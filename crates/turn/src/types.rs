//! The plain Rust values the engine takes and gives: turn ids, states, actions and events.

use std::fmt;
use std::time::Instant;

use bytes::Bytes;

/// Identifies one agent turn (greeting, reply, reprompt, goodbye or apology). Ids increase
/// monotonically within a call, starting at 1; inputs tagged with any id other than the current
/// turn's are stale and dropped.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct TurnId(pub u64);

impl fmt::Display for TurnId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "t{}", self.0)
    }
}

/// Where the conversation is. `Listening -> Thinking -> Speaking -> Listening`, and `Ended` for
/// good once the stream stops or the engine hangs up.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum State {
    /// No agent turn in progress; the caller has the floor.
    Listening,
    /// An agent turn started (reply requested or text sent to synthesis) but none of its audio
    /// has been sent yet.
    Thinking,
    /// Audio of the current agent turn has been sent to Twilio and has not finished playing.
    Speaking,
    /// The stream stopped or the engine hung up. Every input is ignored from now on.
    Ended,
}

impl fmt::Display for State {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            State::Listening => "LISTENING",
            State::Thinking => "THINKING",
            State::Speaking => "SPEAKING",
            State::Ended => "ENDED",
        })
    }
}

/// What an agent turn says.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum UtteranceKind {
    /// The self-introduction, spoken once when the stream starts.
    Greeting,
    /// The responder's answer to caller input.
    Reply,
    /// "Are you still there?" after `idle_ms` of silence.
    Reprompt,
    /// Said before hanging up after the reprompts ran out.
    Goodbye,
    /// Said when the responder or synthesis failed before any reply audio played.
    Apology,
}

/// Why the engine asks the driver to hang up.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
#[non_exhaustive]
pub enum HangupReason {
    /// The caller stayed silent through every reprompt; the goodbye has been spoken.
    NoResponse,
}

/// What the caller gave us, delivered to the responder.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub enum CallerInput {
    /// A transcribed utterance.
    Speech {
        /// The caller's words as transcribed (several STT results joined by spaces).
        text: String,
    },
    /// Keypad digits (`0-9`, `*`, `#`, `A-D`), in the order pressed.
    Dtmf {
        /// The digits pressed since the last reply started.
        digits: String,
    },
}

/// An instruction for the driver. Execute them in the order they are polled.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Action {
    /// Ask the responder for a reply. Answer with [`crate::TurnEngine::handle_reply_chunk`]
    /// (any number), then exactly one of `handle_reply_done` / `handle_reply_failed`.
    StartReply {
        /// The reply's turn.
        turn: TurnId,
        /// What the caller said or typed.
        input: CallerInput,
    },
    /// Stop generating the reply of `turn`; later chunks for it are dropped.
    CancelReply {
        /// The abandoned turn.
        turn: TurnId,
    },
    /// Synthesize `text`. Answer with `handle_tts_audio` (any number of headerless 8 kHz mu-law
    /// chunks) then exactly one `handle_tts_done` or `handle_tts_failed`. Several `Synthesize`
    /// for one turn must be answered in the order they were polled.
    Synthesize {
        /// The turn the speech belongs to.
        turn: TurnId,
        /// The sentence(s) to speak.
        text: String,
        /// Which kind of utterance this is (a driver may hold cached audio for scripted kinds).
        kind: UtteranceKind,
    },
    /// Stop every synthesis of `turn`; later audio for it is dropped.
    CancelSynthesis {
        /// The abandoned turn.
        turn: TurnId,
    },
    /// Send this headerless 8 kHz mu-law audio to Twilio (in 20 ms frames or larger messages).
    Play {
        /// The turn the audio belongs to.
        turn: TurnId,
        /// The audio.
        audio: Bytes,
    },
    /// Send a Twilio `mark` named `name` after the audio already sent; report its echo with
    /// `handle_mark`.
    SendMark {
        /// The turn the mark belongs to.
        turn: TurnId,
        /// The mark's name, unique within the call.
        name: String,
    },
    /// Send a Twilio `clear`: drop every queued agent audio now.
    Clear,
    /// End the call (Twilio REST `Status=completed`). The engine is `Ended` afterwards.
    Hangup {
        /// Why.
        reason: HangupReason,
    },
}

/// Which transcript an end of utterance used.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum TranscriptSource {
    /// Only STT final results.
    Final,
    /// The final was late: the latest partial whose stability reached `stable_partial_min`.
    StablePartial,
    /// The final was late and no partial was stable: the latest partial.
    LatestPartial,
}

/// How an agent turn ended.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum TurnOutcome {
    /// All audio played: Twilio echoed the mark that follows it.
    Played,
    /// All audio was sent but the final mark never came back: ended after the audio's duration
    /// plus `mark_fallback_margin_ms`.
    PlayedByFallback,
    /// The caller interrupted (speech or DTMF); `Clear` was sent.
    Interrupted,
    /// The caller kept talking (or typed) before any audio of this reply played; the reply was
    /// cancelled and the caller's text will be answered together with the new words.
    Superseded,
    /// The responder or the synthesis failed or stalled before any audio played.
    Failed,
    /// The reply produced no speakable text (empty or only a repeat of the greeting).
    NothingToSay,
    /// The stream stopped.
    Cancelled,
}

/// What the barge-in reacted to.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum BargeInCause {
    /// Caller speech sustained for `barge_in_ms`.
    Speech,
    /// A keypad digit.
    Dtmf,
}

/// Why an input changed nothing.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
#[non_exhaustive]
pub enum IgnoredInput {
    /// Input before `handle_stream_start`.
    BeforeStart,
    /// A second stream start (the greeting is not repeated).
    RepeatedStart,
    /// A final that is empty or punctuation only.
    EmptyTranscript,
    /// A final that repeats what the agent just said (speakerphone echo).
    EchoOfAgent,
    /// The same caller text as the last answered one.
    DuplicateCallerText,
    /// A transcript that arrived while the agent was speaking and did not interrupt it.
    WhileAgentSpeaking,
    /// The STT final closing a segment that was already answered from its partial.
    AlreadyAnswered,
    /// A reply sentence equal to (part of) the greeting.
    RepeatedGreeting,
    /// A digit outside `0-9 * # A-D`.
    InvalidDigit(char),
    /// A reply, audio or mark for a turn that is not the current one (or no longer expects it).
    StaleTurn(TurnId),
    /// A mark echo that names no mark of the current turn.
    UnknownMark(String),
}

/// Something that happened, for logs and metrics. Events never require a reaction.
#[derive(Debug, Clone, PartialEq)]
#[non_exhaustive]
pub enum Event {
    /// The engine moved between states.
    StateChanged {
        /// Previous state.
        from: State,
        /// New state.
        to: State,
        /// When.
        at: Instant,
    },
    /// The VAD heard `speech_start_ms` of voice.
    CallerSpeechStarted {
        /// When the voice began (start of the first voiced frame).
        at: Instant,
    },
    /// The VAD heard silence after speech.
    CallerSpeechEnded {
        /// When the silence began.
        at: Instant,
    },
    /// The caller finished speaking; a reply was requested.
    EndOfUtterance {
        /// The reply's turn.
        turn: TurnId,
        /// What will be answered.
        text: String,
        /// Silence between the end of speech and this decision.
        silence_ms: u64,
        /// Which transcript was used.
        source: TranscriptSource,
    },
    /// An agent turn began.
    TurnStarted {
        /// Its id.
        turn: TurnId,
        /// What it says.
        kind: UtteranceKind,
    },
    /// An agent turn ended. Every `TurnStarted` is followed by exactly one `TurnEnded`.
    TurnEnded {
        /// Its id.
        turn: TurnId,
        /// What it said.
        kind: UtteranceKind,
        /// How it ended.
        outcome: TurnOutcome,
        /// Audio sent for the turn.
        audio_ms: u64,
        /// Audio confirmed played by echoed marks.
        heard_ms: u64,
    },
    /// The caller interrupted the agent; `Clear` was sent.
    BargeIn {
        /// The interrupted turn.
        turn: TurnId,
        /// What interrupted.
        cause: BargeInCause,
        /// From the start of the caller's voice to the `Clear` (0 for DTMF).
        latency_ms: u64,
        /// The sentences the caller heard in full, by echoed marks.
        heard_text: String,
        /// Audio confirmed played by echoed marks.
        heard_ms: u64,
    },
    /// Caller input was handed to the responder.
    CallerInput {
        /// The reply's turn.
        turn: TurnId,
        /// The input.
        input: CallerInput,
    },
    /// The caller was silent for `idle_ms`; a reprompt is being spoken.
    Reprompt {
        /// The reprompt's turn.
        turn: TurnId,
        /// 1 for the first reprompt since the caller last spoke.
        count: u32,
    },
    /// An input was ignored.
    InputIgnored {
        /// Why.
        reason: IgnoredInput,
        /// When.
        at: Instant,
    },
}

//! The live-call registry core: folds [`CallEvent`]s into a snapshot of the calls in progress,
//! so a browser that opens the console mid-call sees them at once. Sans-IO: the caller passes
//! the wall-clock time (unix ms) with every input; nothing here reads a clock or a channel.

use std::collections::{BTreeMap, VecDeque};

use call::{CallEvent, TurnLatency};
use serde::Serialize;

/// Transcript lines kept per live call (older lines are in the CRM once the turn is stored).
pub const TRANSCRIPT_LINES_KEPT: usize = 200;

/// Who a transcript line belongs to.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum LineSpeaker {
    /// The caller (a final STT result).
    Caller,
    /// The agent (text it was about to say).
    Agent,
    /// A barge-in marker: the caller interrupted the agent.
    BargeIn,
}

/// One line of a live call's transcript.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct TranscriptLine {
    /// Who.
    pub speaker: LineSpeaker,
    /// The text (for a barge-in: what the caller heard of the interrupted turn).
    pub text: String,
    /// The agent turn it belongs to (agent lines and barge-ins).
    pub turn: Option<u64>,
    /// When the console saw it, unix ms.
    pub at_ms: u64,
}

/// A call in progress as the console shows it.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct LiveCall {
    /// Twilio CallSid.
    pub call_sid: String,
    /// Twilio StreamSid.
    pub stream_sid: Option<String>,
    /// Turn-taking state (`LISTENING`, `THINKING`, `SPEAKING`), `UNKNOWN` before the first change.
    pub state: String,
    /// When the stream started (or the console first heard of the call), unix ms.
    pub started_at_ms: u64,
    /// When the console last heard anything of the call, unix ms (stream health at a glance).
    pub last_event_at_ms: u64,
    /// Agent turns started.
    pub turns: u64,
    /// Barge-ins.
    pub barge_ins: u64,
    /// The caller's current partial transcript (cleared by the final).
    pub partial: Option<String>,
    /// The latest reply turn's latency breakdown.
    pub last_latency: Option<TurnLatency>,
    /// Recent transcript lines, oldest first (at most [`TRANSCRIPT_LINES_KEPT`]).
    pub lines: VecDeque<TranscriptLine>,
}

impl LiveCall {
    fn new(call_sid: &str, now_ms: u64) -> Self {
        LiveCall {
            call_sid: call_sid.to_owned(),
            stream_sid: None,
            state: "UNKNOWN".to_owned(),
            started_at_ms: now_ms,
            last_event_at_ms: now_ms,
            turns: 0,
            barge_ins: 0,
            partial: None,
            last_latency: None,
            lines: VecDeque::new(),
        }
    }

    fn push_line(&mut self, line: TranscriptLine) {
        if self.lines.len() == TRANSCRIPT_LINES_KEPT {
            self.lines.pop_front();
        }
        self.lines.push_back(line);
    }
}

/// What a folded event meant for the counters (the metrics are fed from this).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct EventEffect {
    /// The event opened a new agent turn of this kind (`greeting`, `reply`, ...).
    pub new_turn_kind: Option<&'static str>,
    /// The event belongs to a call already ended from its summary
    /// ([`LiveCalls::due_summary_ends`]): not to be counted or shown again.
    pub stale: bool,
}

/// How long a call ended from its summary is remembered, so its late events are recognised.
const ENDED_MEMORY_MS: u64 = 60_000;
/// How long a call's summary waits for the call's own `CallEnded` before it ends the call in
/// the live view: the events still queued for the console (the call's last lines) come first.
pub const SUMMARY_END_GRACE_MS: u64 = 5_000;

/// The registry's state: calls in progress by CallSid.
#[derive(Debug, Default)]
pub struct LiveCalls {
    calls: BTreeMap<String, LiveCall>,
    /// Highest agent turn number seen per call (a turn's sentences arrive as several events).
    last_turn: BTreeMap<String, u64>,
    /// Ends known from a call's summary, waiting for the call's own `CallEnded`: when noted,
    /// and the end to show if it does not come.
    summary_ends: BTreeMap<String, (u64, CallEvent)>,
    /// Calls ended from their summary, and when: their late events are ignored.
    ended_by_summary: BTreeMap<String, u64>,
}

impl LiveCalls {
    /// An empty registry.
    #[must_use]
    pub fn new() -> Self {
        Self::default()
    }

    /// Folds one event in. Events without a CallSid (sent before `start`) are ignored.
    pub fn handle_event(&mut self, event: &CallEvent, now_ms: u64) -> EventEffect {
        let mut effect = EventEffect::default();
        let Some(call_sid) = event_call_sid(event).filter(|sid| !sid.is_empty()) else {
            return effect;
        };
        if self.ended_by_summary.contains_key(call_sid) {
            // Its end is already shown; its own `CallEnded` closes the matter.
            if let CallEvent::CallEnded { .. } = event {
                self.ended_by_summary.remove(call_sid);
            }
            effect.stale = true;
            return effect;
        }
        if let CallEvent::CallEnded { .. } = event {
            self.summary_ends.remove(call_sid);
            self.calls.remove(call_sid);
            self.last_turn.remove(call_sid);
            return effect;
        }
        let call = self
            .calls
            .entry(call_sid.to_owned())
            .or_insert_with(|| LiveCall::new(call_sid, now_ms));
        call.last_event_at_ms = now_ms;
        match event {
            CallEvent::CallStarted { stream_sid, .. } => {
                call.stream_sid = Some(stream_sid.clone());
                call.started_at_ms = now_ms;
            }
            CallEvent::StateChanged { to, .. } => call.state.clone_from(to),
            CallEvent::Transcript { text, is_final, .. } => {
                if *is_final {
                    call.partial = None;
                    if !text.trim().is_empty() {
                        call.push_line(TranscriptLine {
                            speaker: LineSpeaker::Caller,
                            text: text.clone(),
                            turn: None,
                            at_ms: now_ms,
                        });
                    }
                } else {
                    call.partial = Some(text.clone());
                }
            }
            CallEvent::AgentText {
                turn, kind, text, ..
            } => {
                let last = self.last_turn.entry(call_sid.to_owned()).or_insert(0);
                if *turn > *last || call.turns == 0 {
                    *last = (*turn).max(*last);
                    call.turns += 1;
                    effect.new_turn_kind = Some(kind);
                }
                call.push_line(TranscriptLine {
                    speaker: LineSpeaker::Agent,
                    text: text.clone(),
                    turn: Some(*turn),
                    at_ms: now_ms,
                });
            }
            CallEvent::BargeIn {
                turn, heard_text, ..
            } => {
                call.barge_ins += 1;
                call.push_line(TranscriptLine {
                    speaker: LineSpeaker::BargeIn,
                    text: heard_text.clone(),
                    turn: Some(*turn),
                    at_ms: now_ms,
                });
            }
            CallEvent::Latency { latency, .. } => call.last_latency = Some(latency.clone()),
            // Effects are shown live from the event stream; nothing to keep.
            _ => {}
        }
        effect
    }

    /// Notes `end` (a `CallEnded` built from the summary the call's driver returned) for a call
    /// still shown as live. If the call's own `CallEnded` has not come through
    /// [`SUMMARY_END_GRACE_MS`] later (it was lost while the registry lagged behind the
    /// broadcast), [`due_summary_ends`](Self::due_summary_ends) ends the call with it.
    pub fn note_summary_end(&mut self, end: CallEvent, now_ms: u64) {
        let CallEvent::CallEnded { call_sid, .. } = &end else {
            return;
        };
        if self.calls.contains_key(call_sid) {
            self.summary_ends.insert(call_sid.clone(), (now_ms, end));
        }
    }

    /// Ends the calls whose summary's end has waited [`SUMMARY_END_GRACE_MS`] for their own
    /// `CallEnded`, and returns those ends to be shown and counted. Their late events, if any,
    /// are ignored from then on.
    pub fn due_summary_ends(&mut self, now_ms: u64) -> Vec<CallEvent> {
        let (due, waiting): (BTreeMap<_, _>, BTreeMap<_, _>) =
            std::mem::take(&mut self.summary_ends)
                .into_iter()
                .partition(|(_, (at_ms, _))| now_ms.saturating_sub(*at_ms) >= SUMMARY_END_GRACE_MS);
        self.summary_ends = waiting;
        due.into_iter()
            .filter_map(|(sid, (_, end))| {
                self.calls.remove(&sid)?;
                self.last_turn.remove(&sid);
                self.ended_by_summary.insert(sid, now_ms);
                Some(end)
            })
            .collect()
    }

    /// Forgets calls not heard of for `stale_after_ms` (their `CallEnded` was lost, e.g. the
    /// registry lagged behind the broadcast). Returns how many were dropped.
    pub fn handle_tick(&mut self, now_ms: u64, stale_after_ms: u64) -> usize {
        self.ended_by_summary
            .retain(|_, at_ms| now_ms.saturating_sub(*at_ms) < ENDED_MEMORY_MS);
        let before = self.calls.len();
        self.calls
            .retain(|_, call| now_ms.saturating_sub(call.last_event_at_ms) < stale_after_ms);
        let calls = &self.calls;
        self.last_turn.retain(|sid, _| calls.contains_key(sid));
        before - self.calls.len()
    }

    /// Calls in progress.
    #[must_use]
    pub fn len(&self) -> usize {
        self.calls.len()
    }

    /// No call in progress.
    #[must_use]
    pub fn is_empty(&self) -> bool {
        self.calls.is_empty()
    }

    /// The calls in progress (all, or only `call_sid`), oldest CallSid order.
    #[must_use]
    pub fn snapshot(&self, call_sid: Option<&str>) -> Vec<LiveCall> {
        match call_sid {
            Some(sid) => self.calls.get(sid).cloned().into_iter().collect(),
            None => self.calls.values().cloned().collect(),
        }
    }
}

/// The CallSid every event carries.
#[must_use]
pub fn event_call_sid(event: &CallEvent) -> Option<&str> {
    match event {
        CallEvent::CallStarted { call_sid, .. }
        | CallEvent::StateChanged { call_sid, .. }
        | CallEvent::Transcript { call_sid, .. }
        | CallEvent::AgentText { call_sid, .. }
        | CallEvent::BargeIn { call_sid, .. }
        | CallEvent::Latency { call_sid, .. }
        | CallEvent::Effect { call_sid, .. }
        | CallEvent::CallEnded { call_sid, .. } => Some(call_sid),
        _ => None,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const SID: &str = "CA00000000000000000000000000000001";

    fn started() -> CallEvent {
        CallEvent::CallStarted {
            call_sid: SID.into(),
            stream_sid: "MZ1".into(),
        }
    }

    fn agent(turn: u64, kind: &'static str, text: &str) -> CallEvent {
        CallEvent::AgentText {
            call_sid: SID.into(),
            turn,
            kind,
            text: text.into(),
        }
    }

    #[test]
    fn a_call_is_live_from_start_to_end_with_its_transcript() {
        let mut live = LiveCalls::new();
        live.handle_event(&started(), 1_000);
        live.handle_event(
            &CallEvent::StateChanged {
                call_sid: SID.into(),
                from: "LISTENING".into(),
                to: "SPEAKING".into(),
            },
            1_010,
        );
        let first = live.handle_event(&agent(1, "greeting", "Hello."), 1_020);
        let second_sentence = live.handle_event(&agent(1, "greeting", "How can I help?"), 1_030);
        live.handle_event(
            &CallEvent::Transcript {
                call_sid: SID.into(),
                text: "what are".into(),
                is_final: false,
            },
            2_000,
        );
        assert_eq!(live.snapshot(None)[0].partial.as_deref(), Some("what are"));
        live.handle_event(
            &CallEvent::Transcript {
                call_sid: SID.into(),
                text: "What are your hours?".into(),
                is_final: true,
            },
            2_500,
        );
        let reply = live.handle_event(&agent(2, "reply", "We open at nine."), 2_900);

        assert_eq!(first.new_turn_kind, Some("greeting"));
        assert_eq!(
            second_sentence.new_turn_kind, None,
            "same turn, next sentence"
        );
        assert_eq!(reply.new_turn_kind, Some("reply"));
        let snapshot = live.snapshot(Some(SID));
        assert_eq!(snapshot.len(), 1);
        let call = &snapshot[0];
        assert_eq!(call.state, "SPEAKING");
        assert_eq!(call.stream_sid.as_deref(), Some("MZ1"));
        assert_eq!(call.started_at_ms, 1_000);
        assert_eq!(call.last_event_at_ms, 2_900);
        assert_eq!(call.turns, 2);
        assert_eq!(call.partial, None, "the final replaced the partial");
        let texts: Vec<(LineSpeaker, &str)> = call
            .lines
            .iter()
            .map(|l| (l.speaker, l.text.as_str()))
            .collect();
        assert_eq!(
            texts,
            vec![
                (LineSpeaker::Agent, "Hello."),
                (LineSpeaker::Agent, "How can I help?"),
                (LineSpeaker::Caller, "What are your hours?"),
                (LineSpeaker::Agent, "We open at nine."),
            ]
        );

        live.handle_event(
            &CallEvent::CallEnded {
                call_sid: SID.into(),
                end_reason: call::EndReason::Stopped,
                duration_ms: 2_000,
            },
            3_000,
        );
        assert!(live.is_empty());
        assert!(live.snapshot(Some(SID)).is_empty());
    }

    fn ended(duration_ms: u64) -> CallEvent {
        CallEvent::CallEnded {
            call_sid: SID.into(),
            end_reason: call::EndReason::Stopped,
            duration_ms,
        }
    }

    #[test]
    fn a_summary_ends_a_call_whose_own_end_never_comes_after_a_grace_period() {
        let mut live = LiveCalls::new();
        let _ = live.handle_event(&started(), 1);
        live.note_summary_end(ended(5), 10);
        // The call's last lines, still on their way to the console, are shown as usual.
        let late = CallEvent::Transcript {
            call_sid: SID.into(),
            text: "last words".into(),
            is_final: true,
        };
        assert!(!live.handle_event(&late, 20).stale);
        assert!(
            live.due_summary_ends(10 + SUMMARY_END_GRACE_MS - 1)
                .is_empty()
        );
        assert_eq!(live.len(), 1);
        // Its own end never came: the summary's end is shown, once.
        let at = 10 + SUMMARY_END_GRACE_MS;
        assert_eq!(live.due_summary_ends(at), vec![ended(5)]);
        assert!(live.is_empty());
        assert!(live.due_summary_ends(at + 1).is_empty());
        // Events arriving after that do not bring it back; its own end closes the matter.
        assert!(live.handle_event(&late, at + 2).stale);
        assert!(live.is_empty());
        assert!(live.handle_event(&ended(5), at + 3).stale);
        assert!(!live.handle_event(&started(), at + 4).stale);
        assert_eq!(live.len(), 1);
        // Calls ended that way are remembered for a minute only.
        live.note_summary_end(ended(6), at + 5);
        assert_eq!(
            live.due_summary_ends(at + 5 + SUMMARY_END_GRACE_MS).len(),
            1
        );
        let _ = live.handle_tick(at + 5 + SUMMARY_END_GRACE_MS + ENDED_MEMORY_MS, u64::MAX);
        assert!(
            !live
                .handle_event(&late, at + 6 + SUMMARY_END_GRACE_MS + ENDED_MEMORY_MS)
                .stale
        );
    }

    #[test]
    fn a_call_whose_own_end_comes_through_is_ended_once() {
        let mut live = LiveCalls::new();
        let _ = live.handle_event(&started(), 1);
        live.note_summary_end(ended(5), 2);
        assert!(
            !live.handle_event(&ended(5), 3).stale,
            "the call's own end is shown"
        );
        assert!(live.is_empty());
        assert!(live.due_summary_ends(2 + SUMMARY_END_GRACE_MS).is_empty());
        // A summary of a call not shown is not kept.
        live.note_summary_end(ended(5), 4);
        assert!(live.due_summary_ends(4 + SUMMARY_END_GRACE_MS).is_empty());
    }

    #[test]
    fn barge_ins_are_counted_and_marked() {
        let mut live = LiveCalls::new();
        live.handle_event(&started(), 0);
        live.handle_event(
            &CallEvent::BargeIn {
                call_sid: SID.into(),
                turn: 1,
                latency_ms: 180,
                heard_text: "Hello, you've".into(),
            },
            10,
        );
        let call = &live.snapshot(None)[0];
        assert_eq!(call.barge_ins, 1);
        assert_eq!(call.lines[0].speaker, LineSpeaker::BargeIn);
        assert_eq!(call.lines[0].turn, Some(1));
    }

    #[test]
    fn transcript_is_bounded_and_stale_calls_are_forgotten() {
        let mut live = LiveCalls::new();
        live.handle_event(&started(), 0);
        for turn in 1..=(TRANSCRIPT_LINES_KEPT as u64 + 5) {
            live.handle_event(&agent(turn, "reply", &format!("line {turn}")), turn);
        }
        let call = &live.snapshot(None)[0];
        assert_eq!(call.lines.len(), TRANSCRIPT_LINES_KEPT);
        assert_eq!(call.lines[0].text, "line 6", "the oldest lines went first");
        let last = TRANSCRIPT_LINES_KEPT as u64 + 5;
        assert_eq!(live.handle_tick(last + 999, 1_000), 0, "heard of recently");
        assert_eq!(live.handle_tick(last + 1_000, 1_000), 1);
        assert!(live.is_empty());
    }

    #[test]
    fn events_before_start_carry_no_call_and_are_ignored() {
        let mut live = LiveCalls::new();
        live.handle_event(
            &CallEvent::StateChanged {
                call_sid: String::new(),
                from: "LISTENING".into(),
                to: "SPEAKING".into(),
            },
            5,
        );
        assert!(live.is_empty());
    }
}

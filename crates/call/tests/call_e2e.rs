//! End-to-end calls: a real WebSocket pair on 127.0.0.1 (tokio-tungstenite server adapted to
//! `WsIn`/`WsOut` running `run_call`), a Twilio client sending real 20 ms frames and echoing
//! marks as its playout queue plays, tonic stand-ins for Google STT/TTS, the built-in scripted
//! responder, a real SQLite CRM in a tempdir and a Twilio REST stand-in. Real time throughout
//! (the gRPC and HTTP stacks keep their own timers), with every wait bounded.
#![allow(clippy::unwrap_used)]

mod common;

use std::sync::Arc;
use std::time::Duration;

use call::{CallEvent, EndReason, HangupOutcome, MEDIA_LATENESS_BUCKETS_US, ResponderEffect};
use common::*;

const OPENING_HOURS_1: &str = "We're open Sunday to Thursday from 8 in the morning to 6 in the evening, and on Friday until 1 in the afternoon.";
const OPENING_HOURS_2: &str = "Anything else I can help with?";

fn frames_with(log: &ClientLog, signature: u8) -> usize {
    log.frames
        .iter()
        .filter(|f| f.signature == signature)
        .count()
}

fn frames_for_ms(ms: usize) -> usize {
    (ms * 8).div_ceil(160)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn greeting_plays_once_from_cache_and_the_reply_waits_for_end_of_utterance() {
    let mut h = Harness::start(Options {
        stt: SttScript {
            utterances: vec!["What are your opening hours?".into()],
            ..SttScript::default()
        },
        ..Options::default()
    })
    .await;
    let greeting = h.greeting();
    let greeting_sig = h.signature(&greeting);
    let log = run_twilio_client(
        &h.ws_url,
        vec![
            Step::WaitUntilAgentDone,
            Step::Speak(800),
            Step::WaitForAudioOtherThan(vec![greeting_sig]),
            Step::WaitUntilAgentDone,
            Step::Silence(200),
        ],
        Leave::Stop,
        None,
    )
    .await;
    let summary = h.summary().await;

    // Greeting: exactly once, whole, from the cache (the stand-in saw only the warm-up).
    assert_eq!(summary.greetings, 1);
    assert_eq!(
        frames_with(&log, greeting_sig),
        frames_for_ms(tts_ms(&greeting))
    );
    let greeting_requests = h.tts_requests().iter().filter(|t| **t == greeting).count();
    assert_eq!(
        greeting_requests, 1,
        "only the warm-up synthesized the greeting"
    );
    let first_greeting = log
        .frames
        .iter()
        .find(|f| f.signature == greeting_sig)
        .unwrap();
    let greeting_delay = first_greeting.at - log.start_sent_at.unwrap();
    println!("FIGURE start -> first greeting frame at the client: {greeting_delay:?}");

    // The reply comes only after the end-of-utterance window (500 ms) after the caller stopped.
    let reply_sigs = [h.signature(OPENING_HOURS_1), h.signature(OPENING_HOURS_2)];
    let first_reply = log
        .frames
        .iter()
        .find(|f| f.signature != greeting_sig)
        .unwrap();
    assert!(
        reply_sigs.contains(&first_reply.signature),
        "{first_reply:?} {reply_sigs:?} greeting {greeting_sig} tts {:?}",
        h.tts_requests()
    );
    let speech_end = log.speech_ended_at[0];
    let gap = first_reply.at - speech_end;
    assert!(
        gap >= Duration::from_millis(490),
        "reply {gap:?} after the caller stopped"
    );
    println!("FIGURE caller speech end -> first reply frame at the client: {gap:?}");
    assert_eq!(
        frames_with(&log, reply_sigs[0]),
        frames_for_ms(tts_ms(OPENING_HOURS_1))
    );
    assert_eq!(
        frames_with(&log, reply_sigs[1]),
        frames_for_ms(tts_ms(OPENING_HOURS_2))
    );

    assert_eq!(summary.end_reason, EndReason::Stopped);
    let kinds: Vec<(&str, &str)> = summary.turns.iter().map(|t| (t.kind, t.outcome)).collect();
    assert_eq!(kinds, vec![("greeting", "played"), ("reply", "played")]);
    let reply = &summary.turns[1];
    assert_eq!(
        reply.caller_text.as_deref(),
        Some("What are your opening hours?")
    );
    let latency = &reply.latency;
    println!("FIGURE reply latency breakdown: {latency:?}");
    assert!(latency.eou_ms.unwrap() >= 500, "{latency:?}");
    assert!(latency.responder_first_token_ms.is_some(), "{latency:?}");
    assert!(latency.tts_first_byte_ms.is_some(), "{latency:?}");
    assert!(latency.first_frame_after_eou_ms.is_some(), "{latency:?}");
    // On Twilio's clock (20 ms media timestamps, mark echoed on the client's 20 ms playout tick).
    assert!(latency.twilio_clock_ms.unwrap() >= 480, "{latency:?}");
    assert!(
        log.marks_echoed.iter().any(|m| m == "t2-end"),
        "{:?}",
        log.marks_echoed
    );

    let events = drain_events(&mut h.events);
    assert!(matches!(
        events.first(),
        Some(CallEvent::CallStarted { .. })
    ));
    assert!(
        events
            .iter()
            .any(|e| matches!(e, CallEvent::Transcript { is_final: true, .. }))
    );
    assert!(
        events
            .iter()
            .any(|e| matches!(e, CallEvent::Latency { turn: 2, .. }))
    );
    assert!(matches!(events.last(), Some(CallEvent::CallEnded { .. })));
    let json = serde_json::to_string(&events).unwrap();
    assert!(json.contains("\"type\":\"state_changed\""), "{json}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_fixed_script_reply_is_synthesized_once_and_replayed_from_the_phrase_cache() {
    // Two questions with the same scripted answer (the opening-hours line has no `{name}`): the
    // second answer plays in full without asking TTS again.
    let mut h = Harness::start(Options {
        stt: SttScript {
            utterances: vec![
                "What are your opening hours?".into(),
                "When are you open?".into(),
            ],
            ..SttScript::default()
        },
        ..Options::default()
    })
    .await;
    let greeting_sig = h.signature(&h.greeting());
    let log = run_twilio_client(
        &h.ws_url,
        vec![
            Step::WaitUntilAgentDone,
            Step::Speak(800),
            Step::WaitForAudioOtherThan(vec![greeting_sig]),
            Step::WaitUntilAgentDone,
            Step::Speak(800),
            Step::Silence(700),
            Step::WaitUntilAgentDone,
            Step::Silence(200),
        ],
        Leave::Stop,
        None,
    )
    .await;
    let summary = h.summary().await;
    let kinds: Vec<(&str, &str)> = summary.turns.iter().map(|t| (t.kind, t.outcome)).collect();
    assert_eq!(
        kinds,
        vec![
            ("greeting", "played"),
            ("reply", "played"),
            ("reply", "played")
        ]
    );
    let requests = h.tts_requests();
    for sentence in [OPENING_HOURS_1, OPENING_HOURS_2] {
        assert_eq!(
            requests.iter().filter(|t| t.as_str() == sentence).count(),
            1,
            "{sentence:?} synthesized once: {requests:?}"
        );
        assert_eq!(
            frames_with(&log, h.signature(sentence)),
            2 * frames_for_ms(tts_ms(sentence)),
            "{sentence:?} played whole in both replies"
        );
    }
}

/// Generated-looking sentences of 150 characters: 1.5 s of stand-in audio each.
fn long_sentences(count: usize) -> Vec<String> {
    (1..=count)
        .map(|n| {
            let mut sentence = format!("Sentence {n} of a long generated answer");
            while sentence.len() < 149 {
                sentence.push_str(" and more");
            }
            sentence.truncate(149);
            sentence.push('.');
            sentence
        })
        .collect()
}

/// Answers everything with one long reply that is not fixed script text (like an LLM's).
#[derive(Debug)]
struct LongReplyResponder {
    sentences: Vec<String>,
    lines: call::responder::FixedLines,
}

impl LongReplyResponder {
    fn new(sentences: Vec<String>) -> Self {
        let built_in = call::ScriptedResponder::built_in().unwrap();
        LongReplyResponder {
            sentences,
            lines: call::Responder::fixed_lines(&built_in).clone(),
        }
    }
}

impl call::Responder for LongReplyResponder {
    fn respond(
        &self,
        _input: &call::responder::CallerInput,
        _ctx: &call::responder::CallContext,
    ) -> call::responder::Reply {
        call::responder::Reply::from_text(
            &self.sentences.join(" "),
            call::ReplyMeta {
                intent: "long".into(),
                fixed_text: false,
            },
        )
    }

    fn fixed_lines(&self) -> &call::responder::FixedLines {
        &self.lines
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_long_reply_is_synthesized_just_ahead_of_playback_and_plays_without_gaps() {
    let sentences = long_sentences(4);
    let mut h = Harness::start(Options {
        stt: SttScript {
            utterances: vec!["Tell me everything.".into()],
            ..SttScript::default()
        },
        responder: Some(Arc::new(LongReplyResponder::new(sentences.clone()))),
        ..Options::default()
    })
    .await;
    let greeting_sig = h.signature(&h.greeting());
    let log = run_twilio_client(
        &h.ws_url,
        vec![
            Step::WaitUntilAgentDone,
            Step::Speak(800),
            Step::WaitForAudioOtherThan(vec![greeting_sig]),
            Step::WaitUntilAgentDone,
            Step::Silence(200),
        ],
        Leave::Stop,
        None,
    )
    .await;
    let summary = h.summary().await;
    let kinds: Vec<(&str, &str)> = summary.turns.iter().map(|t| (t.kind, t.outcome)).collect();
    assert_eq!(kinds, vec![("greeting", "played"), ("reply", "played")]);
    // Every sentence synthesized once and played whole, in order.
    let requests = h.tts_requests();
    let mut first_frame_of = Vec::new();
    for sentence in &sentences {
        assert_eq!(
            requests.iter().filter(|t| *t == sentence).count(),
            1,
            "{requests:?}"
        );
        let signature = h.signature(sentence);
        assert_eq!(frames_with(&log, signature), frames_for_ms(1_500));
        first_frame_of.push(log.frames.iter().position(|f| f.signature == signature));
    }
    assert!(
        first_frame_of.windows(2).all(|w| w[0] < w[1]),
        "{first_frame_of:?}"
    );
    // No gap in the 6 s of reply audio: deferred synthesis was always ready in time (a sentence
    // started late would leave a hole of up to the 2.5 s progress guard). Frames arrive paced in
    // real time; 250 ms covers the scheduling jitter of a busy test machine.
    let reply_sigs = h.signatures_of(&sentences.iter().map(String::as_str).collect::<Vec<_>>());
    let reply_frames: Vec<_> = log
        .frames
        .iter()
        .filter(|f| reply_sigs.contains(&f.signature))
        .collect();
    let widest = reply_frames
        .windows(2)
        .map(|w| w[1].at - w[0].at)
        .max()
        .unwrap();
    assert!(widest <= Duration::from_millis(250), "gap of {widest:?}");
    // The server timed its own sends: one observation per 100 ms burst it waited for (the
    // first burst of each reply leaves at once and is not timed), none later than that gap.
    let lateness = h.deps.media_lateness.as_ref().unwrap().counts();
    let bursts = frames_for_ms(6_000) / 5;
    assert!(
        lateness.count >= bursts as u64 - 5 && lateness.count <= bursts as u64 * 2,
        "{lateness:?}"
    );
    let last_within_250ms = MEDIA_LATENESS_BUCKETS_US
        .iter()
        .position(|bound| *bound == 250_000)
        .unwrap();
    assert!(
        lateness.buckets[last_within_250ms + 1..]
            .iter()
            .all(|n| *n == 0),
        "{lateness:?}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sentences_an_interrupting_caller_never_reaches_are_never_synthesized() {
    let sentences = long_sentences(8);
    let mut h = Harness::start(Options {
        stt: SttScript {
            utterances: vec!["Tell me everything.".into(), "Stop, thanks.".into()],
            ..SttScript::default()
        },
        responder: Some(Arc::new(LongReplyResponder::new(sentences.clone()))),
        ..Options::default()
    })
    .await;
    let greeting_sig = h.signature(&h.greeting());
    let log = run_twilio_client(
        &h.ws_url,
        vec![
            Step::WaitUntilAgentDone,
            Step::Speak(800),
            Step::WaitForAudioOtherThan(vec![greeting_sig]),
            Step::Silence(300),
            Step::Speak(600),
            Step::Silence(1_000),
        ],
        Leave::Stop,
        None,
    )
    .await;
    let summary = h.summary().await;
    assert_eq!(log.clears.len(), 1, "one barge-in");
    assert_eq!(summary.turns[1].outcome, "interrupted");
    // A 12 s reply interrupted in its first second: only the sentences within the 3 s
    // synthesis look-ahead (and the one after) were ever requested; the rest cost nothing.
    let requests = h.tts_requests();
    let requested: Vec<usize> = sentences
        .iter()
        .enumerate()
        .filter(|(_, s)| requests.contains(s))
        .map(|(n, _)| n + 1)
        .collect();
    assert!(
        requested.len() <= 4 && requested.first() == Some(&1),
        "sentences synthesized: {requested:?}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn barge_in_clears_at_once_and_no_more_audio_of_that_turn_is_sent() {
    let mut h = Harness::start(Options {
        stt: SttScript {
            utterances: vec!["What are your opening hours?".into(), "Thanks".into()],
            ..SttScript::default()
        },
        ..Options::default()
    })
    .await;
    let greeting_sig = h.signature(&h.greeting());
    let log = run_twilio_client(
        &h.ws_url,
        vec![
            Step::WaitUntilAgentDone,
            Step::Speak(800),
            Step::WaitForAudioOtherThan(vec![greeting_sig]),
            Step::Silence(400),
            Step::Speak(600),
            Step::WaitUntilAgentDone,
            Step::Silence(200),
        ],
        Leave::Stop,
        None,
    )
    .await;
    let summary = h.summary().await;

    assert_eq!(log.clears.len(), 1, "one barge-in, one clear");
    let clear_at = log.clears[0];
    let interrupted = h.signatures_of(&[OPENING_HOURS_1, OPENING_HOURS_2]);
    assert!(!interrupted.is_empty());
    let after_clear: Vec<_> = log
        .frames
        .iter()
        .filter(|f| f.at > clear_at && interrupted.contains(&f.signature))
        .collect();
    assert!(
        after_clear.is_empty(),
        "audio of the interrupted turn after clear: {after_clear:?}"
    );

    // Pacing: at the clear, the client ("Twilio") held only about the 80 ms lead of our audio
    // (unpaced, the whole 1.4 s reply would have been queued). The margin covers scheduling
    // jitter of this real-time test on a busy machine.
    let queued_ms = log.queued_ms_at_clear[0];
    println!("FIGURE agent audio queued at the client when the clear arrived: {queued_ms} ms");
    assert!(
        queued_ms <= 80 + 20 + 100,
        "{queued_ms} ms queued ahead of playback"
    );

    let turns: Vec<(&str, &str)> = summary.turns.iter().map(|t| (t.kind, t.outcome)).collect();
    assert_eq!(
        turns[..2],
        [("greeting", "played"), ("reply", "interrupted")]
    );
    assert_eq!(summary.clears_sent, 1);
    // The caller's barge-in words were answered (the fallback line: "Thanks" matches no intent).
    let fallback = h.deps.responder.fixed_lines().fallback.clone();
    assert!(
        h.tts_requests()
            .iter()
            .any(|t| fallback.starts_with(t.as_str()))
    );
    assert!(
        drain_events(&mut h.events)
            .iter()
            .any(|e| matches!(e, CallEvent::BargeIn { turn: 2, .. }))
    );

    h.writer.flush().await;
    let detail = h.store.get_call_with_turns(CALL_SID).await.unwrap();
    let agent_reply = detail
        .turns
        .iter()
        .find(|t| t.speaker == crm::Speaker::Agent && t.text.starts_with("We're open"))
        .unwrap();
    assert!(agent_reply.interrupted);
    assert!(agent_reply.heard_text.is_some());

    // The recording stops the interrupted reply where the caller stopped hearing it: audio
    // the clear dropped (sent ahead within the lead, never played) is not in the file.
    let recording = h.encoded_recording().await;
    let recording = decode_recording(&std::fs::read(&recording.path).unwrap());
    let agent_sounding = recording.frames_where(|_, right| right > 1000.0);
    let clear_ms = (clear_at - log.start_sent_at.unwrap()).as_millis() as u64;
    let last_before_clear = agent_sounding
        .iter()
        .copied()
        .filter(|&at| at <= clear_ms + 100)
        .max()
        .unwrap();
    let next_after_clear = agent_sounding
        .iter()
        .copied()
        .find(|&at| at > last_before_clear + 20);
    println!(
        "FIGURE recording: interrupted reply ends at {last_before_clear} ms, clear at {clear_ms} ms, next agent audio at {next_after_clear:?} ms"
    );
    assert!(
        clear_ms.saturating_sub(last_before_clear) <= 100,
        "the reply sounded until {last_before_clear} ms in the file, the clear came at {clear_ms} ms"
    );
    // About 80 ms of audio was queued ahead at the clear: none of it may sound in the file
    // (one frame of slack for the two clocks' offset).
    let dropped_but_recorded: Vec<u64> = agent_sounding
        .iter()
        .copied()
        .filter(|&at| at > clear_ms + 50 && at <= clear_ms + 400)
        .collect();
    assert!(
        dropped_but_recorded.is_empty(),
        "agent audio after the clear at {clear_ms} ms is in the recording: {dropped_but_recorded:?}"
    );
    // Next agent audio is the answer to the barge-in words: after they ended plus the
    // end-of-utterance wait, not the rest of the interrupted reply.
    let barge_in_words_ended =
        (log.speech_ended_at[1] - log.start_sent_at.unwrap()).as_millis() as u64;
    if let Some(next) = next_after_clear {
        assert!(
            next >= barge_in_words_ended + 400,
            "agent audio at {next} ms, before the answer to words that ended at {barge_in_words_ended} ms"
        );
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_transcript_and_the_left_message_are_stored_in_the_crm() {
    let mut h = Harness::start(Options {
        stt: SttScript {
            utterances: vec![
                "I want to leave a message".into(),
                "The boiler in flat 3 is leaking".into(),
            ],
            ..SttScript::default()
        },
        ..Options::default()
    })
    .await;
    run_twilio_client(
        &h.ws_url,
        vec![
            Step::WaitUntilAgentDone,
            Step::Speak(700),
            Step::WaitUntilAgentDone,
            Step::Speak(900),
            Step::WaitUntilAgentDone,
            Step::Silence(100),
        ],
        Leave::Stop,
        None,
    )
    .await;
    let summary = h.summary().await;
    assert_eq!(
        summary.effects,
        vec![ResponderEffect::LeaveMessage {
            text: "The boiler in flat 3 is leaking".into()
        }]
    );

    h.writer.flush().await;
    let detail = h.store.get_call_with_turns(CALL_SID).await.unwrap();
    let rows: Vec<(crm::Speaker, &str)> = detail
        .turns
        .iter()
        .map(|t| (t.speaker, t.text.as_str()))
        .collect();
    assert_eq!(rows.len(), 5, "{rows:?}");
    assert_eq!(rows[0], (crm::Speaker::Agent, h.greeting().as_str()));
    assert_eq!(rows[1], (crm::Speaker::Caller, "I want to leave a message"));
    assert_eq!(
        rows[2],
        (crm::Speaker::Agent, "Sure, please say your message now.")
    );
    assert_eq!(
        rows[3],
        (crm::Speaker::Caller, "The boiler in flat 3 is leaking")
    );
    assert!(
        rows[4]
            .1
            .starts_with("Thank you, your message has been saved"),
        "{rows:?}"
    );
    let seqs: Vec<i64> = detail.turns.iter().map(|t| t.seq).collect();
    assert_eq!(seqs, vec![0, 1, 2, 3, 4]);
    // The message is a CRM task, linked to the call and the caller's number.
    let tasks = h
        .store
        .list_tasks(crm::PageRequest::default(), Some(crm::TaskStatus::Open))
        .await
        .unwrap();
    assert_eq!(tasks.items.len(), 1, "{:?}", tasks.items);
    let task = &tasks.items[0];
    assert_eq!(task.kind, crm::TaskKind::Message);
    assert_eq!(task.text, "The boiler in flat 3 is leaking");
    assert_eq!(task.call_sid, CALL_SID);
    assert_eq!(task.contact_phone.as_deref(), Some(CALLER));
    assert_eq!(task.seq, 0);
    assert!(
        detail.turns[3].latency.is_none(),
        "effects live in tasks now"
    );
    assert!(
        detail.turns[4].latency.as_ref().unwrap()["eou_ms"]
            .as_u64()
            .unwrap()
            >= 500
    );
    assert!(detail.call.ended_at_ms.is_some());
    assert_eq!(detail.call.stream_sid.as_deref(), Some(STREAM_SID));
    assert!(
        drain_events(&mut h.events)
            .iter()
            .any(|e| matches!(e, CallEvent::Effect { .. }))
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_stt_stream_failure_mid_call_is_reopened_and_the_call_goes_on() {
    let mut h = Harness::start(Options {
        stt: SttScript {
            utterances: vec![
                "What are your opening hours?".into(),
                "I want to leave a message".into(),
            ],
            // INTERNAL is not retried by the speech client: it reports Failed and the driver
            // must open a new session itself.
            fail_after_final: Some((1, tonic::Code::Internal)),
        },
        ..Options::default()
    })
    .await;
    run_twilio_client(
        &h.ws_url,
        vec![
            Step::WaitUntilAgentDone,
            Step::Speak(700),
            Step::WaitUntilAgentDone,
            Step::Silence(300),
            Step::Speak(700),
            Step::WaitUntilAgentDone,
            Step::Silence(100),
        ],
        Leave::Stop,
        None,
    )
    .await;
    let summary = h.summary().await;
    assert!(summary.stt_reopens >= 1, "{summary:?}");
    assert!(*h.stt.streams.lock().unwrap() >= 2);
    let answered: Vec<&str> = summary
        .turns
        .iter()
        .filter_map(|t| t.caller_text.as_deref())
        .collect();
    assert_eq!(
        answered,
        vec!["What are your opening hours?", "I want to leave a message"]
    );
    assert_eq!(summary.end_reason, EndReason::Stopped);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_caller_hanging_up_without_stop_ends_the_call_cleanly_and_it_is_recorded() {
    let mut h = Harness::start(Options {
        stt: SttScript {
            utterances: vec!["What are your opening hours?".into()],
            ..SttScript::default()
        },
        ..Options::default()
    })
    .await;
    let greeting_sig = h.signature(&h.greeting());
    let log = run_twilio_client(
        &h.ws_url,
        vec![
            Step::WaitUntilAgentDone,
            Step::Speak(700),
            Step::WaitForAudioOtherThan(vec![greeting_sig]),
            Step::Silence(200),
        ],
        Leave::Drop,
        None,
    )
    .await;
    assert!(!log.frames.is_empty());
    let summary = h.summary().await;
    assert!(
        matches!(
            summary.end_reason,
            EndReason::SocketClosedWithoutStop | EndReason::TransportFailed { .. }
        ),
        "{:?}",
        summary.end_reason
    );
    let last = summary.turns.last().unwrap();
    assert_eq!((last.kind, last.outcome), ("reply", "cancelled"));

    h.writer.flush().await;
    let detail = h.store.get_call_with_turns(CALL_SID).await.unwrap();
    assert!(
        detail.call.ended_at_ms.is_some(),
        "the call has its end time"
    );
    assert_eq!(detail.call.status.as_deref(), Some("completed"));
    let ended = detail
        .stream_events
        .iter()
        .find(|e| e.kind == "stream-ended")
        .unwrap();
    assert!(
        ended.error.is_some(),
        "the missing stop is noted: {ended:?}"
    );
    assert!(
        detail
            .turns
            .iter()
            .any(|t| t.speaker == crm::Speaker::Caller && t.text == "What are your opening hours?")
    );
    // The audio up to the hang-up is recorded and referenced too.
    assert!(
        detail.recording.is_some(),
        "a recording for a call without stop"
    );
    let recording = h.encoded_recording().await;
    let decoded = decode_recording(&std::fs::read(&recording.path).unwrap());
    assert!(
        decoded.duration_ms.abs_diff(summary.duration_ms) <= 250,
        "recording {} ms, call {} ms",
        decoded.duration_ms,
        summary.duration_ms
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn goodbye_is_played_then_the_call_is_hung_up_through_twilio_rest() {
    let mut h = Harness::start(Options {
        stt: SttScript {
            utterances: vec!["Goodbye".into()],
            ..SttScript::default()
        },
        ..Options::default()
    })
    .await;
    let hung_up = h.rest.hung_up.clone();
    let log = run_twilio_client(
        &h.ws_url,
        vec![Step::WaitUntilAgentDone, Step::Speak(600)],
        Leave::StopAfterRestHangup,
        Some(hung_up),
    )
    .await;
    let summary = h.summary().await;
    assert_eq!(
        summary.end_reason,
        EndReason::HungUpByAgent { why: "goodbye" }
    );
    assert_eq!(summary.hangup, Some(Ok(HangupOutcome::Completed)));
    let requests = h.rest.requests.lock().unwrap().clone();
    assert_eq!(requests.len(), 1);
    assert_eq!(
        requests[0].path,
        format!("/2010-04-01/Accounts/{ACCOUNT_SID}/Calls/{CALL_SID}.json")
    );
    assert_eq!(requests[0].body, "Status=completed");
    assert!(
        requests[0]
            .authorization
            .as_deref()
            .unwrap()
            .starts_with("Basic ")
    );
    // The goodbye was heard in full before the hang-up.
    let goodbye = "Thank you for calling, goodbye!";
    assert_eq!(
        frames_with(&log, h.signature(goodbye)),
        frames_for_ms(tts_ms(goodbye))
    );
    let last = summary.turns.last().unwrap();
    assert_eq!((last.kind, last.outcome), ("reply", "played"));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_tts_failure_plays_the_cached_apology() {
    let mut h = Harness::start(Options {
        stt: SttScript {
            utterances: vec!["What are your opening hours?".into()],
            ..SttScript::default()
        },
        tts_fail_containing: Some("We're open".into()),
        ..Options::default()
    })
    .await;
    let apology = h.deps.responder.fixed_lines().apology.clone();
    let log = run_twilio_client(
        &h.ws_url,
        vec![
            Step::WaitUntilAgentDone,
            Step::Speak(700),
            Step::WaitUntilAgentDone,
            Step::Silence(100),
        ],
        Leave::Stop,
        None,
    )
    .await;
    let summary = h.summary().await;
    assert_eq!(
        frames_with(&log, h.signature(&apology)),
        frames_for_ms(tts_ms(&apology))
    );
    let kinds: Vec<(&str, &str)> = summary.turns.iter().map(|t| (t.kind, t.outcome)).collect();
    assert_eq!(
        kinds,
        vec![
            ("greeting", "played"),
            ("reply", "failed"),
            ("apology", "played")
        ]
    );
}

#[tokio::test]
async fn rest_hangup_of_an_ended_call_is_not_an_error_and_refusals_are_explained() {
    let gone = start_rest(404).await;
    let rest = call::TwilioRest::new(&gone.base, ACCOUNT_SID, "secret-token-123").unwrap();
    assert_eq!(
        rest.hangup(CALL_SID).await.unwrap(),
        HangupOutcome::AlreadyEnded
    );
    assert!(!format!("{rest:?}").contains("secret-token-123"));

    let refused = start_rest(401).await;
    let rest = call::TwilioRest::new(&refused.base, ACCOUNT_SID, "secret-token-123").unwrap();
    let error = rest.hangup(CALL_SID).await.unwrap_err();
    let message = error.to_string();
    assert!(
        message.contains("401") && message.contains("TWILIO_AUTH_TOKEN"),
        "{message}"
    );
    assert!(!message.contains("secret-token-123"));
    assert!(matches!(
        rest.hangup("../../etc").await,
        Err(call::HangupError::InvalidCallSid { .. })
    ));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_dtmf_key_is_answered_like_speech_and_bad_frames_do_not_end_the_call() {
    let mut h = Harness::start(Options {
        configure: Some(|deps| deps.settings.keepalive_interval = Duration::from_millis(300)),
        ..Options::default()
    })
    .await;
    let log = run_twilio_client(
        &h.ws_url,
        vec![
            Step::WaitUntilAgentDone,
            Step::SendRaw("{not json".into()),
            Step::SendRaw(r#"{"event":"something-new","streamSid":"MZ0123456789abcdef0123456789abcdef"}"#.into()),
            Step::SendRaw(r#"{"event":"media","sequenceNumber":"9","streamSid":"MZother","media":{"track":"inbound","chunk":"1","timestamp":"0","payload":"//8="}}"#.into()),
            Step::Dtmf('1'),
            Step::WaitUntilAgentDone,
            Step::Silence(100),
        ],
        Leave::Stop,
        None,
    )
    .await;
    let summary = h.summary().await;
    assert_eq!(summary.end_reason, EndReason::Stopped);
    assert!(log.pings >= 2, "keep-alive pings: {}", log.pings);
    let reply = &summary.turns[1];
    assert_eq!(reply.caller_text.as_deref(), Some("[DTMF 1]"));
    assert!(reply.agent_text.starts_with("אנחנו פתוחים"), "{reply:?}");
    assert_eq!(reply.outcome, "played");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_responder_that_stays_silent_gets_the_fallback_line() {
    let base_url = start_silent_llm().await;
    use call::Responder as _;
    let script = call::ScriptedResponder::built_in().unwrap();
    let mut config = call::LlmConfig::new(base_url, None, "test-model");
    config.first_token_timeout = Duration::from_secs(10);
    let llm = call::LlmResponder::new(config, script.fixed_lines().clone()).unwrap();
    let mut h = Harness::start(Options {
        stt: SttScript {
            utterances: vec!["Hello, is anyone there?".into()],
            ..SttScript::default()
        },
        responder: Some(std::sync::Arc::new(llm)),
        configure: Some(|deps| deps.settings.responder_timeout = Duration::from_millis(300)),
        ..Options::default()
    })
    .await;
    let log = run_twilio_client(
        &h.ws_url,
        vec![
            Step::WaitUntilAgentDone,
            Step::Speak(700),
            Step::WaitUntilAgentDone,
            Step::Silence(100),
        ],
        Leave::Stop,
        None,
    )
    .await;
    let summary = h.summary().await;
    let fallback = h.deps.responder.fixed_lines().fallback.clone();
    let reply = &summary.turns[1];
    assert_eq!(reply.agent_text, fallback);
    assert_eq!(reply.outcome, "played");
    assert!(reply.latency.first_frame_after_eou_ms.unwrap() >= 300);
    let requests = h.tts_requests();
    for sentence in call::SentenceSplitter::split_all(&fallback) {
        assert_eq!(
            frames_with(&log, h.signature(&sentence)),
            frames_for_ms(tts_ms(&sentence)),
            "{sentence}"
        );
        assert_eq!(
            requests.iter().filter(|t| **t == sentence).count(),
            1,
            "only the warm-up synthesized {sentence:?}: the call played it from the cache"
        );
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_silent_caller_is_reprompted_then_hung_up_on() {
    let mut h = Harness::start(Options {
        configure: Some(|deps| {
            deps.turn_config.idle_ms = 1000;
            deps.turn_config.max_reprompts = 2;
        }),
        ..Options::default()
    })
    .await;
    let hung_up = h.rest.hung_up.clone();
    run_twilio_client(
        &h.ws_url,
        Vec::new(),
        Leave::StopAfterRestHangup,
        Some(hung_up),
    )
    .await;
    let summary = h.summary().await;
    let kinds: Vec<(&str, &str)> = summary.turns.iter().map(|t| (t.kind, t.outcome)).collect();
    assert_eq!(
        kinds,
        vec![
            ("greeting", "played"),
            ("reprompt", "played"),
            ("reprompt", "played"),
            ("goodbye", "played")
        ]
    );
    assert_eq!(
        summary.end_reason,
        EndReason::HungUpByAgent { why: "no_response" }
    );
    assert_eq!(h.rest.requests.lock().unwrap().len(), 1);
}

/// The Ogg pages of a file: checks each page's capture pattern and CRC, and returns the
/// packets of its (single) logical stream and the last page's granule position.
fn ogg_packets(file: &[u8]) -> (Vec<Vec<u8>>, u64) {
    let mut packets = Vec::new();
    let mut partial = Vec::new();
    let mut position = 0;
    let mut granule = 0;
    while position < file.len() {
        assert_eq!(
            &file[position..position + 4],
            b"OggS",
            "page at byte {position}"
        );
        granule = u64::from_le_bytes(file[position + 6..position + 14].try_into().unwrap());
        let segments = file[position + 26] as usize;
        let lacing = &file[position + 27..position + 27 + segments];
        let body_len: usize = lacing.iter().map(|&l| l as usize).sum();
        let end = position + 27 + segments + body_len;
        let mut page = file[position..end].to_vec();
        let stored_crc = u32::from_le_bytes(page[22..26].try_into().unwrap());
        page[22..26].fill(0);
        assert_eq!(
            mulaw::ogg::ogg_crc32(&page),
            stored_crc,
            "page CRC at byte {position}"
        );
        let mut body = position + 27 + segments;
        for &lace in lacing {
            partial.extend_from_slice(&file[body..body + lace as usize]);
            body += lace as usize;
            if lace < 255 {
                packets.push(std::mem::take(&mut partial));
            }
        }
        position = end;
    }
    (packets, granule)
}

fn rms(samples: impl Iterator<Item = i16>) -> f64 {
    let (sum, n) = samples.fold((0f64, 0usize), |(sum, n), s| {
        (sum + f64::from(s) * f64::from(s), n + 1)
    });
    (sum / n.max(1) as f64).sqrt()
}

/// A recording decoded back to PCM: its length and each 20 ms frame's (left, right) RMS.
struct DecodedRecording {
    duration_ms: u64,
    frame_rms: Vec<(f64, f64)>,
}

impl DecodedRecording {
    /// Start times (ms into the file) of the frames whose (left, right) RMS pass `test`.
    fn frames_where(&self, test: impl Fn(f64, f64) -> bool) -> Vec<u64> {
        self.frame_rms
            .iter()
            .enumerate()
            .filter(|(_, (left, right))| test(*left, *right))
            .map(|(index, _)| index as u64 * 20)
            .collect()
    }
}

/// Checks the file is stereo Ogg Opus and decodes it with the mulaw crate's Opus decoder.
fn decode_recording(file: &[u8]) -> DecodedRecording {
    let (packets, granule) = ogg_packets(file);
    assert_eq!(&packets[0][..8], b"OpusHead");
    assert_eq!(packets[0][9], 2, "channel count");
    let pre_skip = u64::from(u16::from_le_bytes([packets[0][10], packets[0][11]]));
    assert_eq!(&packets[1][..8], b"OpusTags");
    let mut decoder = mulaw::opus::OpusFrameDecoder::new(8000, 2).unwrap();
    let mut pcm: Vec<i16> = Vec::new();
    for packet in &packets[2..] {
        pcm.extend_from_slice(decoder.decode_frame(packet).unwrap());
    }
    // Pre-skip counts 48 kHz samples; at 8 kHz it is a sixth, times two channels.
    let skip = (pre_skip / 6) as usize * 2;
    let frame_rms = pcm[skip.min(pcm.len())..]
        .chunks_exact(320)
        .map(|frame| {
            (
                rms(frame.iter().step_by(2).copied()),
                rms(frame.iter().skip(1).step_by(2).copied()),
            )
        })
        .collect();
    DecodedRecording {
        duration_ms: (granule - pre_skip) / 48,
        frame_rms,
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_call_is_recorded_as_stereo_ogg_opus_caller_left_agent_right_on_twilio_time() {
    let mut h = Harness::start(Options {
        stt: SttScript {
            utterances: vec!["What are your opening hours?".into()],
            ..SttScript::default()
        },
        ..Options::default()
    })
    .await;
    let greeting_ms = tts_ms(&h.greeting()) as u64;
    let log = run_twilio_client(
        &h.ws_url,
        vec![
            Step::WaitUntilAgentDone,
            Step::Silence(300),
            Step::Speak(800),
            Step::WaitUntilAgentDone,
            Step::Silence(300),
        ],
        Leave::Stop,
        None,
    )
    .await;
    let summary = h.summary().await;
    let start = log.start_sent_at.unwrap();
    let greeting_sig = h.signature(&h.greeting());
    let reply_ms = (tts_ms(OPENING_HOURS_1) + tts_ms(OPENING_HOURS_2)) as u64;

    // The call ends with a complete WAV spool (no partial file left behind), referenced
    // from the call at once.
    let spool = summary.recording.clone().expect("the call was recorded");
    assert_eq!(summary.recording_dropped_chunks, 0);
    let spool_path = h.recordings_dir.join(format!("{CALL_SID}.wav"));
    assert_eq!(spool.path, spool_path.display().to_string());
    assert_eq!(spool.codec, "pcm_mulaw");
    assert!(
        !h.recordings_dir
            .join(format!("{CALL_SID}.wav.part"))
            .exists()
    );
    // After the call, the Ogg Opus encoding replaces it: in the store, then on disk.
    let stored = h.encoded_recording().await;
    let expected_path = h.recordings_dir.join(format!("{CALL_SID}.ogg"));
    assert_eq!(stored.path, expected_path.display().to_string());
    assert_eq!(
        h.recording_files(),
        [format!("{CALL_SID}.ogg")],
        "the spool is deleted once replaced, and no part file is left"
    );
    let file = std::fs::read(&expected_path).unwrap();
    assert_eq!(stored.size_bytes, Some(file.len() as i64));
    assert_eq!(stored.duration_ms, spool.duration_ms);
    let detail = h.store.get_call_with_turns(CALL_SID).await.unwrap();
    assert_eq!(
        detail.recording.as_ref().map(|r| &r.path),
        Some(&stored.path)
    );

    // Ogg Opus, two channels, as long as the call.
    let recording = decode_recording(&file);
    let file_ms = recording.duration_ms;
    let stored_ms = stored.duration_ms.unwrap() as u64;
    assert!(
        file_ms.abs_diff(stored_ms) <= 20,
        "file {file_ms} ms, row {stored_ms} ms"
    );
    println!(
        "FIGURE recording {file_ms} ms for a call of {} ms",
        summary.duration_ms
    );
    assert!(
        file_ms.abs_diff(summary.duration_ms) <= 250,
        "recording {file_ms} ms, call {} ms",
        summary.duration_ms
    );
    let caller_frames = recording.frames_where(|left, right| left > 1000.0 && right < left / 8.0);
    let agent_frames = recording.frames_where(|left, right| right > 1000.0 && left < right / 8.0);
    println!(
        "FIGURE recording: {} caller frames from {:?} ms, {} agent frames from {:?} ms",
        caller_frames.len(),
        caller_frames.first(),
        agent_frames.len(),
        agent_frames.first()
    );

    // Caller: 800 ms of tone, on the left, where the client's timestamps put it.
    let spoke_at_ms = (log.speech_started_at[0] - start).as_millis() as u64;
    assert!(
        caller_frames.len().abs_diff(40) <= 3,
        "caller frames: {caller_frames:?}"
    );
    assert!(
        caller_frames[0].abs_diff(spoke_at_ms) <= 60,
        "caller speech at {} ms in the file, the client spoke at {spoke_at_ms} ms",
        caller_frames[0]
    );
    // Agent: the greeting at once, then the reply where the client started playing it.
    let agent_expected = ((greeting_ms + reply_ms) / 20) as usize;
    assert!(
        agent_frames.len().abs_diff(agent_expected) <= agent_expected / 10,
        "agent frames {} vs {agent_expected} expected",
        agent_frames.len()
    );
    assert!(agent_frames[0] <= 60, "greeting at {} ms", agent_frames[0]);
    let reply_heard_ms = log
        .frames
        .iter()
        .find(|f| f.signature != greeting_sig)
        .map(|f| (f.at - start).as_millis() as u64)
        .unwrap();
    let reply_in_file_ms = *agent_frames.iter().find(|&&at| at > spoke_at_ms).unwrap();
    println!(
        "FIGURE reply placed at {reply_in_file_ms} ms, client received it at {reply_heard_ms} ms"
    );
    assert!(
        reply_in_file_ms.abs_diff(reply_heard_ms) <= 100,
        "reply at {reply_in_file_ms} ms in the file, the client got it at {reply_heard_ms} ms"
    );
    // Nobody talks over anybody in this call: no frame is both.
    assert!(caller_frames.iter().all(|at| !agent_frames.contains(at)));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn with_recording_format_wav_the_spool_is_the_recording_and_nothing_is_encoded() {
    let mut h = Harness::start(Options {
        configure: Some(|deps| deps.recording_format = crm::recording::RecordingFormat::Wav),
        ..Options::default()
    })
    .await;
    run_twilio_client(
        &h.ws_url,
        vec![Step::WaitUntilAgentDone, Step::Silence(200)],
        Leave::Stop,
        None,
    )
    .await;
    let summary = h.summary().await;
    let spool = summary.recording.expect("the call was recorded");
    h.writer.flush().await;
    // Whatever the shared pool had queued (other tests' calls) is done: nothing of ours was.
    if let Some(pool) = crm::recording::RecordingPool::shared_if_started() {
        pool.wait_for_encodes(BOUND).await;
    }
    h.writer.flush().await;
    let stored = h.store.get_recording(CALL_SID).await.unwrap();
    assert_eq!(
        (stored.codec.as_str(), &stored.path),
        ("pcm_mulaw", &spool.path)
    );
    let wav = std::fs::read(&stored.path).unwrap();
    let (info, data) = mulaw::wav::parse(&wav).unwrap();
    assert_eq!((info.channels, info.sample_rate), (2, 8000));
    assert!(
        data.iter().skip(1).step_by(2).any(|&b| b != 0xFF),
        "the greeting is on the agent's channel"
    );
    assert_eq!(
        h.recording_files(),
        [format!("{CALL_SID}.wav")],
        "no Ogg, no partial file"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_booked_callback_becomes_an_open_crm_task_for_the_callers_number() {
    let mut h = Harness::start(Options {
        stt: SttScript {
            utterances: vec!["Please call me back".into(), "Tomorrow after 5".into()],
            ..SttScript::default()
        },
        ..Options::default()
    })
    .await;
    run_twilio_client(
        &h.ws_url,
        vec![
            Step::WaitUntilAgentDone,
            Step::Speak(700),
            Step::WaitUntilAgentDone,
            Step::Speak(700),
            Step::WaitUntilAgentDone,
            Step::Silence(100),
        ],
        Leave::Stop,
        None,
    )
    .await;
    let summary = h.summary().await;
    assert_eq!(
        summary.effects,
        vec![ResponderEffect::BookCallback {
            phone: Some(CALLER.into()),
            preferred_time: Some("Tomorrow after 5".into()),
        }]
    );
    h.writer.flush().await;
    let tasks = h
        .store
        .list_tasks(crm::PageRequest::default(), None)
        .await
        .unwrap();
    assert_eq!(tasks.items.len(), 1, "{:?}", tasks.items);
    let task = &tasks.items[0];
    assert_eq!(task.kind, crm::TaskKind::Callback);
    assert_eq!(task.status, crm::TaskStatus::Open);
    assert_eq!(task.call_sid, CALL_SID);
    assert_eq!(task.contact_phone.as_deref(), Some(CALLER));
    assert_eq!(task.preferred_time.as_deref(), Some("Tomorrow after 5"));
    assert_eq!(task.text, "Tomorrow after 5", "the caller's words");
}

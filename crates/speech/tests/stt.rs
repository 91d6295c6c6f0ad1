//! Speech-to-Text client against an in-process tonic stand-in of Google on loopback.
#![allow(clippy::unwrap_used)]

mod common;

use std::time::Duration;

use common::{FakeSpeech, RecordedStream, SttScript, next_event, test_audio};
use speech::proto::speech_v1::recognition_config::AudioEncoding;
use speech::{SpeechError, SttClient, SttConfig, SttEvent};
use tonic::Code;

fn config(endpoint: String) -> SttConfig {
    SttConfig {
        endpoint,
        phrase_hints: vec!["קרמד".to_owned(), "Twilio".to_owned()],
        alternative_language_codes: vec!["en-US".to_owned()],
        ..SttConfig::default()
    }
}

/// Waits for events until a final ending at `end`, returning every event seen.
async fn events_until_final_at(stream: &mut speech::SttStream, end: Duration) -> Vec<SttEvent> {
    let mut events = Vec::new();
    for _ in 0..1000 {
        let event = next_event(stream).await;
        let done = matches!(&event, SttEvent::Final { result_end, .. } if *result_end >= end);
        if let SttEvent::Failed { error } = &event {
            panic!("session failed: {error}");
        }
        events.push(event);
        if done {
            return events;
        }
    }
    panic!("no final at {end:?} within 1000 events: {events:?}");
}

/// Every stream's audio is a contiguous slice of what was sent, and together the streams cover
/// all of it without a gap. Returns each stream's start offset.
fn assert_streams_cover(sent: &[u8], streams: &[RecordedStream]) -> Vec<usize> {
    let mut covered_to = 0usize;
    let mut starts = Vec::new();
    for (index, stream) in streams.iter().enumerate() {
        assert_eq!(
            stream.config_requests, 1,
            "stream {index} must carry exactly one config"
        );
        assert!(
            !stream.config_after_audio,
            "stream {index}: config must come first"
        );
        assert!(
            stream.config.is_some(),
            "stream {index}: first request must be the config"
        );
        if stream.audio.is_empty() {
            continue;
        }
        let probe = &stream.audio[..stream.audio.len().min(32)];
        let start = sent
            .windows(probe.len())
            .position(|window| window == probe)
            .unwrap();
        assert_eq!(
            &sent[start..start + stream.audio.len()],
            &stream.audio[..],
            "stream {index} audio differs"
        );
        assert!(
            start <= covered_to,
            "audio {covered_to}..{start} was lost before stream {index}"
        );
        covered_to = covered_to.max(start + stream.audio.len());
        starts.push(start);
    }
    assert_eq!(
        covered_to,
        sent.len(),
        "the end of the audio never reached the service"
    );
    starts
}

#[tokio::test]
async fn config_goes_first_then_audio_in_100_ms_batches_and_results_come_back() {
    let script = SttScript {
        final_every_bytes: Some(8000),
        partial_before_final: true,
        ..SttScript::default()
    };
    let (fake, endpoint) = FakeSpeech::start(script).await;
    let client = SttClient::new(config(endpoint), None).unwrap();
    let mut stream = client.start("CA_order");

    let sent = test_audio(8000); // one second of Twilio's 20 ms frames
    for frame in sent.chunks(160) {
        stream.send_audio(frame);
    }
    stream.flush_audio();
    let partial = next_event(&mut stream).await;
    assert_eq!(
        partial,
        SttEvent::Partial {
            text: "partial 0.1".to_owned(),
            stability: 0.6
        }
    );
    let final_event = next_event(&mut stream).await;
    assert_eq!(
        final_event,
        SttEvent::Final {
            text: "final 0.1".to_owned(),
            confidence: 0.9,
            result_end: Duration::from_secs(1)
        }
    );

    let streams = fake.recorded();
    assert_eq!(streams.len(), 1);
    let recorded = &streams[0];
    assert_eq!(
        recorded.audio_request_sizes,
        vec![800; 10],
        "20 ms frames must be batched into 100 ms"
    );
    assert_eq!(recorded.audio, sent);
    assert!(
        recorded.authorization.is_none(),
        "no credentials, no authorization header"
    );
    let streaming = recorded.config.as_ref().unwrap();
    assert!(streaming.interim_results);
    assert!(!streaming.single_utterance);
    let recognition = streaming.config.as_ref().unwrap();
    assert_eq!(recognition.encoding, AudioEncoding::Mulaw as i32);
    assert_eq!(recognition.encoding, 3);
    assert_eq!(recognition.sample_rate_hertz, 8000);
    assert_eq!(recognition.language_code, "he-IL");
    assert_eq!(recognition.alternative_language_codes, vec!["en-US"]);
    assert!(recognition.enable_automatic_punctuation);
    assert_eq!(recognition.model, "");
    assert_eq!(recognition.speech_contexts.len(), 1);
    assert_eq!(
        recognition.speech_contexts[0].phrases,
        vec!["קרמד", "Twilio"]
    );
    assert_streams_cover(&sent, &streams);
}

#[tokio::test]
async fn a_partial_batch_is_sent_once_the_batch_interval_passes() {
    let script = SttScript {
        final_every_bytes: Some(480),
        ..SttScript::default()
    };
    let (fake, endpoint) = FakeSpeech::start(script).await;
    let client = SttClient::new(config(endpoint), None).unwrap();
    let mut stream = client.start("CA_tail");
    let sent = test_audio(480); // three frames: less than one 100 ms batch
    for frame in sent.chunks(160) {
        stream.send_audio(frame);
    }
    stream.flush_audio();
    let event = next_event(&mut stream).await;
    assert!(
        matches!(event, SttEvent::Final { result_end, .. } if result_end == Duration::from_millis(60))
    );
    assert_eq!(fake.recorded()[0].audio_request_sizes, vec![480]);
}

#[tokio::test]
async fn queued_audio_older_than_a_batch_goes_out_with_the_next_frame() {
    let script = SttScript {
        final_every_bytes: Some(320),
        ..SttScript::default()
    };
    let (fake, endpoint) = FakeSpeech::start(script).await;
    let client = SttClient::new(config(endpoint), None).unwrap();
    let mut stream = client.start("CA_stale");
    let sent = test_audio(320);
    stream.send_audio(&sent[..160]);
    // No flush: the first frame waits on our side until the next one finds it a batch old.
    tokio::time::sleep(Duration::from_millis(150)).await;
    assert!(
        fake.recorded()
            .first()
            .is_none_or(|stream| stream.audio_request_sizes.is_empty()),
        "less than a batch stays queued while no more audio comes"
    );
    stream.send_audio(&sent[160..]);
    let event = next_event(&mut stream).await;
    assert!(
        matches!(event, SttEvent::Final { result_end, .. } if result_end == Duration::from_millis(40))
    );
    assert_eq!(fake.recorded()[0].audio_request_sizes, vec![320]);
}

#[tokio::test]
async fn calls_beyond_a_connections_stream_cap_get_another_connection() {
    let script = SttScript {
        final_every_bytes: Some(800),
        ..SttScript::default()
    };
    // The server takes two streams per connection, like Google's front ends take about 100.
    let (fake, endpoint) = FakeSpeech::start_with_stream_cap(script, Some(2)).await;
    let stt_config = SttConfig {
        streams_per_connection: 2,
        ..config(endpoint)
    };
    let client = SttClient::new(stt_config, None).unwrap();
    let mut calls: Vec<_> = (0..5).map(|i| client.start(&format!("CA_{i}"))).collect();
    for call in &mut calls {
        call.send_audio(&test_audio(800));
    }
    // Every call is recognized at once: none waits for another call's stream to end.
    for call in &mut calls {
        let event = next_event(call).await;
        assert!(
            matches!(event, SttEvent::Final { result_end, .. } if result_end == Duration::from_millis(100)),
            "{event:?}"
        );
    }
    assert_eq!(fake.recorded().len(), 5);
    assert_eq!(client.connections(), 3, "five streams, two per connection");
    // Streams that end give their place back: new calls reuse the open connections.
    calls.truncate(1);
    tokio::time::sleep(Duration::from_millis(100)).await;
    let mut later = client.start("CA_later");
    later.send_audio(&test_audio(800));
    assert!(matches!(
        next_event(&mut later).await,
        SttEvent::Final { .. }
    ));
    assert_eq!(client.connections(), 3);
}

#[tokio::test]
async fn streams_rotate_before_the_limit_without_losing_audio() {
    let script = SttScript {
        final_every_bytes: Some(1600),
        ..SttScript::default()
    };
    let (fake, endpoint) = FakeSpeech::start(script).await;
    let stt_config = SttConfig {
        rotate_after: Duration::from_millis(300),
        ..config(endpoint)
    };
    let client = SttClient::new(stt_config, None).unwrap();
    let mut stream = client.start("CA_rotate");

    // 1.2 s of audio at real-time pace (Twilio sends a frame every 20 ms).
    let sent = test_audio(9600);
    let mut pace = tokio::time::interval(Duration::from_millis(20));
    for frame in sent.chunks(160) {
        pace.tick().await;
        stream.send_audio(frame);
    }
    let events = events_until_final_at(&mut stream, Duration::from_millis(1200)).await;

    let restarts = events
        .iter()
        .filter(|event| matches!(event, SttEvent::StreamRestarted { .. }))
        .count();
    assert!(
        restarts >= 2,
        "expected rotations every 300 ms over 1.2 s, saw {restarts}: {events:?}"
    );
    let mut previous_end = Duration::ZERO;
    for event in &events {
        if let SttEvent::Final { result_end, .. } = event {
            assert!(
                *result_end >= previous_end,
                "session timings went backwards: {events:?}"
            );
            assert_eq!(
                result_end.as_millis() % 200,
                0,
                "finals fall on 200 ms boundaries: {events:?}"
            );
            previous_end = *result_end;
        }
    }
    let streams = fake.recorded();
    assert!(streams.len() > restarts, "each rotation opens a new stream");
    let starts = assert_streams_cover(&sent, &streams);
    // Each new stream starts with the audio after the last final, i.e. on a final boundary.
    assert!(
        starts.iter().all(|start| start % 1600 == 0),
        "replay must start at a final: {starts:?}"
    );
}

#[tokio::test]
async fn unavailable_mid_stream_reopens_and_replays_unconfirmed_audio() {
    let script = SttScript {
        final_every_bytes: Some(1600),
        fail_stream: Some((0, 2400, Code::Unavailable)),
        ..SttScript::default()
    };
    let (fake, endpoint) = FakeSpeech::start(script).await;
    let client = SttClient::new(config(endpoint), None).unwrap();
    let mut stream = client.start("CA_unavailable");
    let sent = test_audio(6400);
    for frame in sent.chunks(160) {
        stream.send_audio(frame);
    }
    stream.flush_audio();
    let events = events_until_final_at(&mut stream, Duration::from_millis(800)).await;
    assert!(
        events.iter().any(|event| matches!(event, SttEvent::StreamRestarted { reason } if reason.contains("Unavailable"))),
        "{events:?}"
    );
    let finals: Vec<Duration> = events
        .iter()
        .filter_map(|event| match event {
            SttEvent::Final { result_end, .. } => Some(*result_end),
            _ => None,
        })
        .collect();
    assert_eq!(
        finals,
        (1..=4)
            .map(|i| Duration::from_millis(200 * i))
            .collect::<Vec<_>>()
    );
    let streams = fake.recorded();
    assert_eq!(streams.len(), 2);
    let starts = assert_streams_cover(&sent, &streams);
    assert_eq!(
        starts,
        vec![0, 1600],
        "the second stream replays from the last final"
    );
}

#[tokio::test]
async fn a_refused_model_falls_back_to_the_default_model_once() {
    let script = SttScript {
        final_every_bytes: Some(1600),
        refuse_model: Some("phone_call_he".to_owned()),
        ..SttScript::default()
    };
    let (fake, endpoint) = FakeSpeech::start(script).await;
    let stt_config = SttConfig {
        model: Some("phone_call_he".to_owned()),
        ..config(endpoint)
    };
    let client = SttClient::new(stt_config, None).unwrap();
    let mut stream = client.start("CA_model");
    let sent = test_audio(1600);
    for frame in sent.chunks(160) {
        stream.send_audio(frame);
    }
    stream.flush_audio();
    assert_eq!(
        next_event(&mut stream).await,
        SttEvent::ModelFallback {
            refused_model: "phone_call_he".to_owned()
        }
    );
    let events = events_until_final_at(&mut stream, Duration::from_millis(200)).await;
    assert_eq!(events.len(), 1, "{events:?}");
    let streams = fake.recorded();
    assert_eq!(streams.len(), 2);
    let model = |stream: &RecordedStream| {
        stream
            .config
            .as_ref()
            .unwrap()
            .config
            .as_ref()
            .unwrap()
            .model
            .clone()
    };
    assert_eq!(model(&streams[0]), "phone_call_he");
    assert_eq!(model(&streams[1]), "");
    assert_eq!(
        streams[1].audio, sent,
        "audio sent to the refused stream is replayed"
    );
}

#[tokio::test]
async fn an_invalid_argument_without_a_model_to_drop_fails_the_session() {
    let script = SttScript {
        fail_every_stream: Some(Code::InvalidArgument),
        ..SttScript::default()
    };
    let (_fake, endpoint) = FakeSpeech::start(script).await;
    let client = SttClient::new(config(endpoint), None).unwrap();
    let mut stream = client.start("CA_invalid");
    match next_event(&mut stream).await {
        SttEvent::Failed {
            error: SpeechError::Rejected { code, .. },
        } => assert_eq!(code, "InvalidArgument"),
        other => panic!("expected a rejection, got {other:?}"),
    }
    assert!(
        stream.next_event().await.is_none(),
        "no events after Failed"
    );
}

#[tokio::test]
async fn persistent_unavailability_gives_up_after_the_configured_attempts() {
    let script = SttScript {
        fail_every_stream: Some(Code::Unavailable),
        ..SttScript::default()
    };
    let (fake, endpoint) = FakeSpeech::start(script).await;
    let stt_config = SttConfig {
        max_reconnect_attempts: 3,
        reconnect_backoff_initial: Duration::from_millis(5),
        reconnect_backoff_max: Duration::from_millis(20),
        ..config(endpoint)
    };
    let client = SttClient::new(stt_config, None).unwrap();
    let mut stream = client.start("CA_down");
    let mut restarts = 0;
    loop {
        match next_event(&mut stream).await {
            SttEvent::StreamRestarted { .. } => restarts += 1,
            SttEvent::Failed { error } => {
                assert!(
                    matches!(error, SpeechError::GaveUp { attempts: 3, .. }),
                    "{error:?}"
                );
                assert!(error.to_string().contains("Unavailable"), "{error}");
                break;
            }
            other => panic!("unexpected {other:?}"),
        }
    }
    assert_eq!(restarts, 3);
    assert_eq!(
        fake.recorded().len(),
        4,
        "first attempt plus three reconnects"
    );
}

#[tokio::test]
async fn closing_a_session_ends_its_grpc_stream_and_no_other() {
    let script = SttScript {
        final_every_bytes: Some(800),
        ..SttScript::default()
    };
    let (fake, endpoint) = FakeSpeech::start(script).await;
    let client = SttClient::new(config(endpoint), None).unwrap();
    let mut closing = client.start("CA_close");
    closing.send_audio(&test_audio(800));
    closing.flush_audio();
    events_until_final_at(&mut closing, Duration::from_millis(100)).await;
    let mut staying = client.start("CA_stay");
    staying.send_audio(&test_audio(800));
    staying.flush_audio();
    events_until_final_at(&mut staying, Duration::from_millis(100)).await;
    assert_eq!(fake.recorded().len(), 2);

    closing.close();
    assert_eq!(
        fake.next_ended_stream().await,
        0,
        "the closed session's stream ends"
    );
    // The other session is unaffected and keeps recognizing.
    staying.send_audio(&test_audio(800));
    staying.flush_audio();
    let event = next_event(&mut staying).await;
    assert!(
        matches!(event, SttEvent::Final { result_end, .. } if result_end == Duration::from_millis(200))
    );
    drop(staying);
    assert_eq!(
        fake.next_ended_stream().await,
        1,
        "dropping a session ends its stream too"
    );
}

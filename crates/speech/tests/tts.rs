//! Text-to-Speech client against an in-process tonic stand-in of Google on loopback.
#![allow(clippy::unwrap_used)]

mod common;

use std::time::Duration;

use common::{FakeTts, TtsScript, spoken};
use futures::StreamExt;
use speech::proto::texttospeech_v1::streaming_synthesize_request::StreamingRequest;
use speech::proto::texttospeech_v1::synthesis_input::InputSource;
use speech::{MAX_TTS_INPUT_BYTES, SpeechError, TtsClient, TtsConfig};
use tonic::Code;

fn config(endpoint: String) -> TtsConfig {
    TtsConfig {
        endpoint,
        ..TtsConfig::default()
    }
}

#[tokio::test]
async fn synthesize_requests_mulaw_8k_and_strips_the_wav_header() {
    let (fake, endpoint) = FakeTts::start(TtsScript::default()).await;
    let client = TtsClient::new(
        TtsConfig {
            speaking_rate: 1.25,
            ..config(endpoint)
        },
        None,
    )
    .unwrap();
    let audio = client.synthesize("שלום! איך אפשר לעזור?").await.unwrap();
    assert_eq!(
        &audio[..],
        &spoken("שלום! איך אפשר לעזור?")[..],
        "only the data chunk's samples remain"
    );
    assert!(!audio.starts_with(b"RIFF"));

    let record = fake.record.lock().unwrap();
    assert_eq!(record.unary_requests.len(), 1);
    let request = &record.unary_requests[0];
    let audio_config = request.audio_config.as_ref().unwrap();
    assert_eq!(audio_config.audio_encoding, 5, "TTS MULAW is 5 on the wire");
    assert_eq!(audio_config.sample_rate_hertz, 8000);
    assert_eq!(audio_config.speaking_rate, 1.25);
    let voice = request.voice.as_ref().unwrap();
    assert_eq!(voice.name, "he-IL-Wavenet-A");
    assert_eq!(voice.language_code, "he-IL");
}

#[tokio::test]
async fn text_over_5000_bytes_is_split_at_sentences_and_the_audio_concatenated() {
    let (fake, endpoint) = FakeTts::start(TtsScript::default()).await;
    let client = TtsClient::new(config(endpoint), None).unwrap();
    let text = "זהו משפט ארוך למדי שחוזר על עצמו. ".repeat(250); // ~15 KB of Hebrew
    let audio = client.synthesize(&text).await.unwrap();

    let record = fake.record.lock().unwrap();
    let texts: Vec<String> = record
        .unary_requests
        .iter()
        .map(|request| {
            match request
                .input
                .as_ref()
                .unwrap()
                .input_source
                .clone()
                .unwrap()
            {
                InputSource::Text(text) => text,
                other => panic!("unexpected input {other:?}"),
            }
        })
        .collect();
    assert!(texts.len() >= 3, "{} requests", texts.len());
    assert!(
        texts
            .iter()
            .all(|piece| piece.len() <= MAX_TTS_INPUT_BYTES && piece.ends_with('.'))
    );
    assert_eq!(texts.join(" "), text.trim());
    let expected: Vec<u8> = texts.iter().flat_map(|piece| spoken(piece)).collect();
    assert_eq!(&audio[..], &expected[..]);
}

#[tokio::test]
async fn cached_synthesis_calls_the_service_once_per_voice_rate_and_text() {
    let (fake, endpoint) = FakeTts::start(TtsScript::default()).await;
    let client = TtsClient::new(config(endpoint.clone()), None).unwrap();
    let greeting = "שלום, הגעתם למוקד. במה אפשר לעזור?";
    assert_eq!(
        client.cached(greeting),
        None,
        "nothing is cached before the first synthesis"
    );
    let first = client.synthesize_cached(greeting).await.unwrap();
    let clone = client.clone();
    let second = clone.synthesize_cached(greeting).await.unwrap();
    assert_eq!(first, second);
    assert_eq!(
        client.cached(greeting),
        Some(first.clone()),
        "clones share the cache"
    );
    assert_eq!(
        fake.record.lock().unwrap().unary_requests.len(),
        1,
        "the second call is a cache hit"
    );

    // Another speaking rate is another cache entry.
    let faster = TtsClient::new(
        TtsConfig {
            speaking_rate: 1.5,
            ..config(endpoint)
        },
        None,
    )
    .unwrap();
    assert_eq!(faster.cached(greeting), None);
    faster.synthesize_cached(greeting).await.unwrap();
    assert_eq!(fake.record.lock().unwrap().unary_requests.len(), 2);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn requests_beyond_a_connections_stream_cap_get_another_connection() {
    // The server takes two streams per connection, like Google's front ends take about 100.
    let (fake, endpoint) = FakeTts::start_with_stream_cap(
        TtsScript {
            unary_delay: Some(Duration::from_millis(400)),
            ..TtsScript::default()
        },
        Some(2),
    )
    .await;
    let client = TtsClient::new(
        TtsConfig {
            streams_per_connection: 2,
            ..config(endpoint)
        },
        None,
    )
    .unwrap();
    let started = std::time::Instant::now();
    let requests: Vec<_> = (0..5)
        .map(|n| {
            let client = client.clone();
            tokio::spawn(async move { client.synthesize(&format!("Sentence number {n}.")).await })
        })
        .collect();
    for (n, request) in requests.into_iter().enumerate() {
        let audio = request.await.unwrap().unwrap();
        assert_eq!(
            audio.as_ref(),
            spoken(&format!("Sentence number {n}.")).as_slice()
        );
    }
    // All five at once: none waited for another's 400 ms (queued behind a cap of two on one
    // connection they would take three rounds, 1.2 s).
    let took = started.elapsed();
    assert!(took < Duration::from_millis(1_000), "took {took:?}");
    assert_eq!(fake.record.lock().unwrap().unary_requests.len(), 5);
    assert_eq!(client.connections(), 3, "five requests, two per connection");
    // Finished requests give their place back: later ones reuse the open connections.
    client.synthesize("One more.").await.unwrap();
    assert_eq!(client.connections(), 3);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn concurrent_misses_for_one_phrase_share_one_request() {
    let (fake, endpoint) = FakeTts::start(TtsScript {
        unary_delay: Some(Duration::from_millis(200)),
        ..TtsScript::default()
    })
    .await;
    let client = TtsClient::new(config(endpoint), None).unwrap();
    let line = "We're open Sunday to Thursday from 8 to 6.";
    let calls: Vec<_> = (0..20)
        .map(|_| {
            let client = client.clone();
            tokio::spawn(async move { client.synthesize_cached(line).await })
        })
        .collect();
    let mut answers = Vec::new();
    for call in calls {
        answers.push(call.await.unwrap().unwrap());
    }
    assert!(answers.iter().all(|audio| audio == &answers[0]));
    assert_eq!(answers[0].as_ref(), spoken(line).as_slice());
    assert_eq!(
        fake.record.lock().unwrap().unary_requests.len(),
        1,
        "twenty simultaneous misses, one synthesis"
    );
    assert_eq!(client.cached(line), Some(answers[0].clone()));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_cancelled_shared_request_leaves_the_waiters_to_synthesize_on_their_own() {
    let (fake, endpoint) = FakeTts::start(TtsScript {
        unary_delay: Some(Duration::from_millis(300)),
        ..TtsScript::default()
    })
    .await;
    let client = TtsClient::new(config(endpoint), None).unwrap();
    let line = "Anything else I can help with?";
    let first = {
        let client = client.clone();
        tokio::spawn(async move { client.synthesize_cached(line).await })
    };
    tokio::time::sleep(Duration::from_millis(50)).await;
    let waiter = {
        let client = client.clone();
        tokio::spawn(async move { client.synthesize_cached(line).await })
    };
    tokio::time::sleep(Duration::from_millis(50)).await;
    // The call that asked first hangs up (its synthesis job is aborted).
    first.abort();
    let audio = tokio::time::timeout(Duration::from_secs(5), waiter)
        .await
        .expect("the waiter is not left hanging")
        .unwrap()
        .unwrap();
    assert_eq!(audio.as_ref(), spoken(line).as_slice());
    assert_eq!(fake.record.lock().unwrap().unary_requests.len(), 2);
    assert_eq!(client.cached(line), Some(audio));
}

#[tokio::test]
async fn streaming_synthesis_yields_headerless_chunks_in_order() {
    let script = TtsScript {
        streaming_chunk: 64,
        ..TtsScript::default()
    };
    let (fake, endpoint) = FakeTts::start(script).await;
    let tts_config = TtsConfig {
        voice_name: "he-IL-Chirp3-HD-Aoede".to_owned(),
        streaming: true,
        speaking_rate: 0.9,
        ..config(endpoint)
    };
    let client = TtsClient::new(tts_config, None).unwrap();
    let text = "תודה שהתקשרתם. נציג יחזור אליכם בהקדם.";
    let chunks: Vec<bytes::Bytes> = client
        .synthesize_stream(text)
        .map(Result::unwrap)
        .collect()
        .await;
    assert!(chunks.len() > 1, "audio arrives in several chunks");
    assert!(
        chunks
            .iter()
            .all(|chunk| chunk.len() <= 64 && !chunk.is_empty())
    );
    assert_eq!(chunks.concat(), spoken(text));

    let record = fake.record.lock().unwrap();
    let requests = &record.streaming_requests[0];
    match requests[0].streaming_request.as_ref().unwrap() {
        StreamingRequest::StreamingConfig(config) => {
            let audio = config.streaming_audio_config.as_ref().unwrap();
            assert_eq!(audio.audio_encoding, 5);
            assert_eq!(audio.sample_rate_hertz, 8000);
            assert_eq!(audio.speaking_rate, 0.9);
            assert_eq!(config.voice.as_ref().unwrap().name, "he-IL-Chirp3-HD-Aoede");
        }
        other => panic!("the first request must be the config, got {other:?}"),
    }
    assert!(
        requests[1..]
            .iter()
            .all(|request| matches!(request.streaming_request, Some(StreamingRequest::Input(_))))
    );
    assert!(record.unary_requests.is_empty());
}

#[tokio::test]
async fn a_stalled_synthesis_stream_ends_with_an_error_instead_of_hanging() {
    let script = TtsScript {
        stall_streaming: true,
        ..TtsScript::default()
    };
    let (_fake, endpoint) = FakeTts::start(script).await;
    let tts_config = TtsConfig {
        streaming: true,
        request_timeout: std::time::Duration::from_millis(200),
        ..config(endpoint)
    };
    let client = TtsClient::new(tts_config, None).unwrap();
    let mut chunks = Box::pin(client.synthesize_stream("שלום"));
    assert_eq!(&chunks.next().await.unwrap().unwrap()[..], &[0xFF; 160][..]);
    let error = chunks.next().await.unwrap().unwrap_err();
    assert!(error.to_string().contains("DeadlineExceeded"), "{error}");
    assert!(chunks.next().await.is_none(), "nothing follows the error");
}

#[tokio::test]
async fn a_voice_refused_for_streaming_falls_back_to_one_shot_synthesis() {
    let script = TtsScript {
        refuse_streaming: true,
        streaming_chunk: 64,
        ..TtsScript::default()
    };
    let (fake, endpoint) = FakeTts::start(script).await;
    let client = TtsClient::new(
        TtsConfig {
            streaming: true,
            ..config(endpoint)
        },
        None,
    )
    .unwrap();
    let chunks: Vec<_> = client.synthesize_stream("רגע אחד בבקשה.").collect().await;
    assert_eq!(chunks.len(), 1);
    assert_eq!(
        &chunks[0].as_ref().unwrap()[..],
        &spoken("רגע אחד בבקשה.")[..]
    );
    let record = fake.record.lock().unwrap();
    assert_eq!(record.streaming_requests.len(), 1);
    assert_eq!(record.unary_requests.len(), 1);
}

#[tokio::test]
async fn service_errors_become_operator_messages() {
    let script = TtsScript {
        fail_unary: Some(Code::PermissionDenied),
        ..TtsScript::default()
    };
    let (_fake, endpoint) = FakeTts::start(script).await;
    let client = TtsClient::new(config(endpoint), None).unwrap();
    let error = client.synthesize("שלום").await.unwrap_err();
    assert!(
        matches!(error, SpeechError::Unauthorized { .. }),
        "{error:?}"
    );
    assert!(error.to_string().contains("service account"), "{error}");

    let script = TtsScript {
        raw_unary_audio: Some(b"not a wav file".to_vec()),
        ..TtsScript::default()
    };
    let (_fake, endpoint) = FakeTts::start(script).await;
    let client = TtsClient::new(config(endpoint), None).unwrap();
    let error = client.synthesize("שלום").await.unwrap_err();
    assert!(matches!(error, SpeechError::BadAudio { .. }), "{error:?}");

    let pcm_wav = mulaw::wav::write_pcm16(&[0i16; 80], 16000, 1);
    let script = TtsScript {
        raw_unary_audio: Some(pcm_wav),
        ..TtsScript::default()
    };
    let (_fake, endpoint) = FakeTts::start(script).await;
    let client = TtsClient::new(config(endpoint), None).unwrap();
    let error = client.synthesize("שלום").await.unwrap_err();
    assert!(error.to_string().contains("MULAW at 8000 Hz"), "{error}");

    assert_eq!(
        client.synthesize("   ").await.unwrap_err(),
        SpeechError::EmptyText
    );
}

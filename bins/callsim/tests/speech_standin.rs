//! The speech stand-in, started in-process, answers crmd's own speech clients over real gRPC on
//! 127.0.0.1: STT partials and a scripted final for a spoken utterance, TTS as a WAV (stripped
//! by the client) and as headerless streamed chunks, and Google's request-order errors.
#![allow(clippy::unwrap_used)]

use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use futures::StreamExt;
use speech::proto::speech_v1::StreamingRecognizeRequest;
use speech::proto::speech_v1::speech_client::SpeechClient;
use speech::proto::speech_v1::streaming_recognize_request::StreamingRequest;
use speech::proto::texttospeech_v1::synthesis_input::InputSource;
use speech::proto::texttospeech_v1::text_to_speech_client::TextToSpeechClient;
use speech::proto::texttospeech_v1::{
    AudioConfig, AudioEncoding, SynthesisInput, SynthesizeSpeechRequest,
};
use speech::{SttClient, SttConfig, SttEvent, TtsClient, TtsConfig};
use speech_standin::{StandinOptions, StandinStats};

/// Upper bound of any wait; reaching it fails the test.
const BOUND: Duration = Duration::from_secs(10);

async fn start_standin(options: StandinOptions) -> (String, Arc<StandinStats>) {
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let address: SocketAddr = listener.local_addr().unwrap();
    let stats = Arc::new(StandinStats::default());
    tokio::spawn(speech_standin::serve_with_shutdown(
        listener,
        options,
        Arc::clone(&stats),
        std::future::pending(),
    ));
    (format!("http://{address}"), stats)
}

fn utterance_audio(text: &str) -> Vec<u8> {
    let mut samples = vec![0i16; 2_400]; // 300 ms of silence
    samples.extend(speech_standin::tone::synthesize(
        text,
        8_000,
        1.0,
        Default::default(),
    ));
    samples.extend(vec![0i16; 4_800]); // 600 ms of silence
    mulaw::encode(&samples)
}

#[tokio::test]
async fn stt_gives_partials_then_the_scripted_final() {
    let options = StandinOptions {
        transcripts: vec!["first line".to_owned(), "second line".to_owned()],
        ..StandinOptions::default()
    };
    let (endpoint, stats) = start_standin(options).await;
    let client = SttClient::new(
        SttConfig {
            endpoint,
            ..SttConfig::default()
        },
        None,
    )
    .unwrap();
    let mut stream = client.start("CAtest");
    let audio = utterance_audio("What are your opening hours?");
    for frame in audio.chunks(160) {
        stream.send_audio(frame);
    }
    stream.flush_audio();
    let mut partials = Vec::new();
    let final_event = loop {
        match tokio::time::timeout(BOUND, stream.next_event())
            .await
            .unwrap()
            .unwrap()
        {
            SttEvent::Partial { text, stability } => {
                assert!((stability - 0.6).abs() < 1e-6);
                partials.push(text);
            }
            SttEvent::Final {
                text,
                confidence,
                result_end,
            } => break (text, confidence, result_end),
            other => panic!("unexpected event {other:?}"),
        }
    };
    // Speech runs from 300 ms to about 2.6 s: partials every 300 ms of speech, each a longer
    // prefix of the line, then the final with the first scripted line.
    assert!(partials.len() >= 5, "{partials:?}");
    assert_eq!(partials[0], "first");
    assert_eq!(partials.last().unwrap(), "first line");
    assert_eq!(final_event.0, "first line");
    assert!((final_event.1 - 0.92).abs() < 1e-6);
    assert!(
        (Duration::from_millis(2_300)..=Duration::from_millis(2_700)).contains(&final_event.2),
        "{:?}",
        final_event.2
    );
    // The next utterance on the same stream gets the next line.
    for frame in utterance_audio("Thanks").chunks(160) {
        stream.send_audio(frame);
    }
    stream.flush_audio();
    let second = loop {
        if let SttEvent::Final { text, .. } = tokio::time::timeout(BOUND, stream.next_event())
            .await
            .unwrap()
            .unwrap()
        {
            break text;
        }
    };
    assert_eq!(second, "second line");
    assert!(stats.summary().contains("finals 2"), "{}", stats.summary());
}

#[tokio::test]
async fn stt_refuses_audio_before_the_config() {
    let (endpoint, _) = start_standin(StandinOptions::default()).await;
    let mut client = SpeechClient::connect(endpoint).await.unwrap();
    let requests = futures::stream::iter([StreamingRecognizeRequest {
        streaming_request: Some(StreamingRequest::AudioContent(vec![0xFF; 160].into())),
    }]);
    let status = match client.streaming_recognize(requests).await {
        Err(status) => status,
        Ok(response) => {
            let mut responses = response.into_inner();
            tokio::time::timeout(BOUND, responses.message())
                .await
                .unwrap()
                .unwrap_err()
        }
    };
    assert_eq!(status.code(), tonic::Code::InvalidArgument);
    assert!(
        status.message().contains("first StreamingRecognizeRequest"),
        "{}",
        status.message()
    );
}

#[tokio::test]
async fn tts_returns_a_wav_like_google_and_streams_headerless_chunks() {
    let (endpoint, _) = start_standin(StandinOptions::default()).await;

    // Raw: SynthesizeSpeech with MULAW answers with an 8 kHz mono mu-law WAV.
    let mut raw = TextToSpeechClient::connect(endpoint.clone()).await.unwrap();
    let response = raw
        .synthesize_speech(SynthesizeSpeechRequest {
            input: Some(SynthesisInput {
                input_source: Some(InputSource::Text("hello there".to_owned())),
                prompt: None,
            }),
            voice: None,
            audio_config: Some(AudioConfig {
                audio_encoding: AudioEncoding::Mulaw as i32,
                sample_rate_hertz: 8_000,
                ..AudioConfig::default()
            }),
        })
        .await
        .unwrap()
        .into_inner();
    let payload = mulaw::wav::mulaw_8k_mono_payload(&response.audio_content).unwrap();
    // 11 characters at 12 per second.
    assert_eq!(payload.len(), 7_332);

    // crmd's client strips the header; the audio length follows the text.
    let one_shot = TtsClient::new(
        TtsConfig {
            endpoint: endpoint.clone(),
            streaming: false,
            ..TtsConfig::default()
        },
        None,
    )
    .unwrap();
    let short = one_shot.synthesize("hello there").await.unwrap();
    assert_eq!(&short[..], payload);
    assert!(!short.starts_with(b"RIFF"));
    let long = one_shot
        .synthesize("hello there, how can I help you today?")
        .await
        .unwrap();
    assert!(long.len() > 3 * short.len());

    let streaming = TtsClient::new(
        TtsConfig {
            endpoint,
            streaming: true,
            voice_name: "he-IL-Chirp3-HD-Aoede".to_owned(),
            ..TtsConfig::default()
        },
        None,
    )
    .unwrap();
    let chunks: Vec<bytes::Bytes> = tokio::time::timeout(
        BOUND,
        streaming
            .synthesize_stream("hello there")
            .map(Result::unwrap)
            .collect(),
    )
    .await
    .unwrap();
    let sizes: Vec<usize> = chunks.iter().map(bytes::Bytes::len).collect();
    assert_eq!(sizes, vec![1_600, 1_600, 1_600, 1_600, 932]);
    assert_eq!(chunks.concat(), payload);
}

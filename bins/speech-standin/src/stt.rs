//! `google.cloud.speech.v1.Speech/StreamingRecognize` stand-in.
//!
//! One [`RecognizeSession`] per stream, driven without a task of its own: the response stream
//! pulls the next request only when the previous one's results have been handed to tonic, so
//! an idle stream costs one parked future and a few hundred bytes.

use std::collections::VecDeque;
use std::pin::Pin;
use std::sync::Arc;
use std::sync::atomic::Ordering;
use std::time::Duration;

use futures::Stream;
use speech::proto::speech_v1::recognition_config::AudioEncoding;
use speech::proto::speech_v1::speech_server::Speech;
use speech::proto::speech_v1::streaming_recognize_request::StreamingRequest;
use speech::proto::speech_v1::streaming_recognize_response::SpeechEventType;
use speech::proto::speech_v1::{
    SpeechRecognitionAlternative, StreamingRecognitionConfig, StreamingRecognitionResult,
    StreamingRecognizeRequest, StreamingRecognizeResponse,
};
use tonic::{Request, Response, Status, Streaming};

use crate::segmenter::{SegmentEvent, SegmenterConfig, SpeechSegmenter};
use crate::{StandinOptions, StandinStats};

/// Interim transcripts reveal about one word per this much speech.
const SPEECH_PER_WORD: Duration = Duration::from_millis(350);
const PARTIAL_STABILITY: f32 = 0.6;
const FINAL_CONFIDENCE: f32 = 0.92;

/// The Speech-to-Text service. Cheap to clone.
#[derive(Debug, Clone)]
pub struct SpeechStandin {
    transcripts: Arc<[String]>,
    segmenter: SegmenterConfig,
    stream_limit: Duration,
    stats: Arc<StandinStats>,
}

impl SpeechStandin {
    /// The service, configured from `options`, counting into `stats`.
    #[must_use]
    pub fn new(options: &StandinOptions, stats: Arc<StandinStats>) -> Self {
        Self {
            transcripts: options.transcripts.clone().into(),
            segmenter: options.segmenter,
            stream_limit: options.stream_limit,
            stats,
        }
    }
}

type ResponseStream =
    Pin<Box<dyn Stream<Item = Result<StreamingRecognizeResponse, Status>> + Send + 'static>>;

#[tonic::async_trait]
impl Speech for SpeechStandin {
    type StreamingRecognizeStream = ResponseStream;

    async fn streaming_recognize(
        &self,
        request: Request<Streaming<StreamingRecognizeRequest>>,
    ) -> Result<Response<Self::StreamingRecognizeStream>, Status> {
        self.stats
            .stt_streams_opened
            .fetch_add(1, Ordering::Relaxed);
        self.stats.stt_streams_live.fetch_add(1, Ordering::Relaxed);
        let state = StreamState {
            requests: request.into_inner(),
            session: None,
            service: self.clone(),
            pending: VecDeque::new(),
            finished: false,
            _live: LiveGuard(Arc::clone(&self.stats)),
        };
        let responses = futures::stream::unfold(state, |mut state| async move {
            loop {
                if let Some(item) = state.pending.pop_front() {
                    return Some((item, state));
                }
                if state.finished {
                    return None;
                }
                match state.requests.message().await {
                    Ok(Some(request)) => state.handle_request(request),
                    Ok(None) => {
                        if let Some(session) = state.session.as_mut() {
                            session.segmenter.handle_end_of_audio();
                            session.drain(&mut state.pending, &state.service.stats);
                        }
                        state.finished = true;
                    }
                    // The client went away (cancelled or reset): nothing left to answer.
                    Err(_) => return None,
                }
            }
        });
        Ok(Response::new(Box::pin(responses)))
    }
}

/// Decrements the live-stream gauge when the response stream is dropped.
#[derive(Debug)]
struct LiveGuard(Arc<StandinStats>);

impl Drop for LiveGuard {
    fn drop(&mut self) {
        self.0.stt_streams_live.fetch_sub(1, Ordering::Relaxed);
    }
}

struct StreamState {
    requests: Streaming<StreamingRecognizeRequest>,
    session: Option<RecognizeSession>,
    service: SpeechStandin,
    pending: VecDeque<Result<StreamingRecognizeResponse, Status>>,
    finished: bool,
    _live: LiveGuard,
}

impl StreamState {
    fn fail(&mut self, status: Status) {
        self.pending.push_back(Err(status));
        self.finished = true;
    }

    fn handle_request(&mut self, request: StreamingRecognizeRequest) {
        match (request.streaming_request, self.session.as_mut()) {
            (Some(StreamingRequest::StreamingConfig(config)), None) => {
                match RecognizeSession::new(config, &self.service) {
                    Ok(session) => self.session = Some(session),
                    Err(status) => self.fail(status),
                }
            }
            (Some(StreamingRequest::StreamingConfig(_)), Some(_)) => {
                self.fail(Status::invalid_argument(
                    "streaming_config may only be sent in the first StreamingRecognizeRequest; \
                     later requests must carry audio_content only",
                ))
            }
            (Some(StreamingRequest::AudioContent(_)), None) => {
                self.fail(Status::invalid_argument(
                    "the first StreamingRecognizeRequest must carry streaming_config, but it \
                     carried audio_content: send the configuration before any audio",
                ));
            }
            (Some(StreamingRequest::AudioContent(audio)), Some(session)) => {
                session.handle_audio(&audio);
                session.drain(&mut self.pending, &self.service.stats);
                if session.finished {
                    self.finished = true;
                } else if session.segmenter.audio_received() > self.service.stream_limit {
                    let limit = self.service.stream_limit.as_secs();
                    self.fail(Status::out_of_range(format!(
                        "Exceeded maximum allowed stream duration of {limit} seconds."
                    )));
                }
            }
            (None, _) => self.fail(Status::invalid_argument(
                "StreamingRecognizeRequest carries neither streaming_config nor audio_content",
            )),
        }
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum InputEncoding {
    Mulaw,
    Linear16,
}

struct RecognizeSession {
    segmenter: SpeechSegmenter,
    encoding: InputEncoding,
    interim_results: bool,
    voice_activity_events: bool,
    single_utterance: bool,
    language_code: String,
    transcripts: Arc<[String]>,
    utterances: usize,
    samples: Vec<i16>,
    /// Odd byte left over from a LINEAR16 request.
    carry: Option<u8>,
    finished: bool,
}

impl RecognizeSession {
    fn new(config: StreamingRecognitionConfig, service: &SpeechStandin) -> Result<Self, Status> {
        let recognition = config.config.ok_or_else(|| {
            Status::invalid_argument("streaming_config.config (RecognitionConfig) is required")
        })?;
        let encoding = match AudioEncoding::try_from(recognition.encoding) {
            Ok(AudioEncoding::Mulaw) => InputEncoding::Mulaw,
            Ok(AudioEncoding::Linear16) => InputEncoding::Linear16,
            _ => {
                return Err(Status::invalid_argument(format!(
                    "this stand-in recognizes MULAW (3) or LINEAR16 (1) audio only; the config \
                     asked for encoding {}",
                    recognition.encoding
                )));
            }
        };
        let sample_rate = u32::try_from(recognition.sample_rate_hertz)
            .ok()
            .filter(|rate| (8_000..=48_000).contains(rate))
            .ok_or_else(|| {
                Status::invalid_argument(format!(
                    "sample_rate_hertz must be between 8000 and 48000 for raw audio, got {}",
                    recognition.sample_rate_hertz
                ))
            })?;
        if recognition.audio_channel_count > 1 {
            return Err(Status::invalid_argument(
                "this stand-in recognizes mono audio only (audio_channel_count 0 or 1)",
            ));
        }
        if recognition.language_code.trim().is_empty() {
            return Err(Status::invalid_argument(
                "RecognitionConfig.language_code is required (e.g. he-IL)",
            ));
        }
        Ok(Self {
            segmenter: SpeechSegmenter::new(service.segmenter, sample_rate),
            encoding,
            interim_results: config.interim_results,
            voice_activity_events: config.enable_voice_activity_events,
            single_utterance: config.single_utterance,
            language_code: recognition.language_code.to_ascii_lowercase(),
            transcripts: Arc::clone(&service.transcripts),
            utterances: 0,
            samples: Vec::new(),
            carry: None,
            finished: false,
        })
    }

    fn handle_audio(&mut self, audio: &[u8]) {
        self.samples.clear();
        match self.encoding {
            InputEncoding::Mulaw => self
                .samples
                .extend(audio.iter().map(|&byte| mulaw::decode_sample(byte))),
            InputEncoding::Linear16 => {
                let mut bytes = audio.iter().copied();
                if let Some(low) = self.carry.take() {
                    match bytes.next() {
                        Some(high) => self.samples.push(i16::from_le_bytes([low, high])),
                        None => self.carry = Some(low),
                    }
                }
                loop {
                    match (bytes.next(), bytes.next()) {
                        (Some(low), Some(high)) => {
                            self.samples.push(i16::from_le_bytes([low, high]));
                        }
                        (Some(low), None) => {
                            self.carry = Some(low);
                            break;
                        }
                        _ => break,
                    }
                }
            }
        }
        self.segmenter.handle_audio(&self.samples);
    }

    fn transcript(&self) -> &str {
        if self.transcripts.is_empty() {
            return "";
        }
        &self.transcripts[self.utterances % self.transcripts.len()]
    }

    fn drain(
        &mut self,
        pending: &mut VecDeque<Result<StreamingRecognizeResponse, Status>>,
        stats: &StandinStats,
    ) {
        while let Some(event) = self.segmenter.poll_event() {
            if self.finished {
                continue;
            }
            match event {
                SegmentEvent::SpeechBegin { at } => {
                    if self.voice_activity_events {
                        pending
                            .push_back(Ok(speech_event(SpeechEventType::SpeechActivityBegin, at)));
                    }
                }
                SegmentEvent::Partial { voiced_so_far } => {
                    if self.interim_results {
                        let words_spoken = (voiced_so_far.as_millis() / SPEECH_PER_WORD.as_millis())
                            .max(1) as usize;
                        let text = partial_text(self.transcript(), words_spoken);
                        pending.push_back(Ok(self.result(text, false, voiced_so_far)));
                        stats.stt_partials.fetch_add(1, Ordering::Relaxed);
                    }
                }
                SegmentEvent::SpeechEnd { speech_end, .. } => {
                    if self.voice_activity_events {
                        pending.push_back(Ok(speech_event(
                            SpeechEventType::SpeechActivityEnd,
                            speech_end,
                        )));
                    }
                    if self.single_utterance {
                        pending.push_back(Ok(speech_event(
                            SpeechEventType::EndOfSingleUtterance,
                            speech_end,
                        )));
                    }
                    let text = self.transcript().to_owned();
                    pending.push_back(Ok(self.result(text, true, speech_end)));
                    stats.stt_finals.fetch_add(1, Ordering::Relaxed);
                    self.utterances += 1;
                    if self.single_utterance {
                        self.finished = true;
                    }
                }
            }
        }
    }

    fn result(
        &self,
        transcript: String,
        is_final: bool,
        end: Duration,
    ) -> StreamingRecognizeResponse {
        StreamingRecognizeResponse {
            results: vec![StreamingRecognitionResult {
                alternatives: vec![SpeechRecognitionAlternative {
                    transcript,
                    confidence: if is_final { FINAL_CONFIDENCE } else { 0.0 },
                    words: Vec::new(),
                }],
                is_final,
                stability: if is_final { 0.0 } else { PARTIAL_STABILITY },
                result_end_time: Some(proto_duration(end)),
                channel_tag: 0,
                language_code: self.language_code.clone(),
            }],
            ..StreamingRecognizeResponse::default()
        }
    }
}

/// The first `words` words of `line` (the whole line when it has fewer).
fn partial_text(line: &str, words: usize) -> String {
    line.split_whitespace()
        .take(words)
        .collect::<Vec<_>>()
        .join(" ")
}

fn speech_event(kind: SpeechEventType, at: Duration) -> StreamingRecognizeResponse {
    StreamingRecognizeResponse {
        speech_event_type: kind as i32,
        speech_event_time: Some(proto_duration(at)),
        ..StreamingRecognizeResponse::default()
    }
}

fn proto_duration(duration: Duration) -> prost_types::Duration {
    prost_types::Duration {
        seconds: i64::try_from(duration.as_secs()).unwrap_or(i64::MAX),
        // Always below 1e9, so it fits.
        nanos: i32::try_from(duration.subsec_nanos()).unwrap_or(0),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn partials_reveal_words_in_order() {
        assert_eq!(partial_text("What are your opening hours?", 2), "What are");
        assert_eq!(
            partial_text("What are your opening hours?", 9),
            "What are your opening hours?"
        );
        assert_eq!(partial_text("", 3), "");
    }

    #[test]
    fn durations_convert_to_proto() {
        let d = proto_duration(Duration::from_millis(1_250));
        assert_eq!((d.seconds, d.nanos), (1, 250_000_000));
    }
}

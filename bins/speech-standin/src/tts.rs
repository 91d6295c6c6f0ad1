//! `google.cloud.texttospeech.v1.TextToSpeech` stand-in: `SynthesizeSpeech` (audio inside a WAV
//! header, as Google returns MULAW and LINEAR16) and `StreamingSynthesize` (headerless chunks).

use std::collections::{HashMap, VecDeque};
use std::pin::Pin;
use std::sync::atomic::Ordering;
use std::sync::{Arc, Mutex};

use futures::Stream;
use speech::proto::texttospeech_v1::streaming_synthesis_input::InputSource as StreamingInputSource;
use speech::proto::texttospeech_v1::streaming_synthesize_request::StreamingRequest;
use speech::proto::texttospeech_v1::synthesis_input::InputSource;
use speech::proto::texttospeech_v1::text_to_speech_server::TextToSpeech;
use speech::proto::texttospeech_v1::{
    AudioEncoding, StreamingSynthesizeRequest, StreamingSynthesizeResponse,
    SynthesizeSpeechRequest, SynthesizeSpeechResponse,
};
use tonic::{Request, Response, Status, Streaming};

use crate::tone::{ToneVoice, synthesize};
use crate::{StandinOptions, StandinStats};

/// Google's limit on one request's input.
const MAX_INPUT_BYTES: usize = 5_000;
/// Streamed audio goes out in chunks of this many milliseconds.
const STREAM_CHUNK_MS: usize = 200;
/// Synthesized clips kept for repeated texts (greetings, reprompts).
const CACHE_ENTRIES: usize = 256;
/// Output rate when the request leaves `sample_rate_hertz` at 0 for LINEAR16/PCM.
const DEFAULT_LINEAR_RATE_HZ: u32 = 24_000;

#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
enum OutputEncoding {
    Mulaw,
    Linear16,
}

#[derive(Debug, Clone, PartialEq, Eq, Hash)]
struct CacheKey {
    text: String,
    encoding: OutputEncoding,
    sample_rate_hz: u32,
    speaking_rate_bits: u64,
    with_header: bool,
}

/// The Text-to-Speech service. Cheap to clone.
#[derive(Debug, Clone)]
pub struct TtsStandin {
    voice: ToneVoice,
    stats: Arc<StandinStats>,
    cache: Arc<Mutex<HashMap<CacheKey, Arc<Vec<u8>>>>>,
}

impl TtsStandin {
    /// The service, configured from `options`, counting into `stats`.
    #[must_use]
    pub fn new(options: &StandinOptions, stats: Arc<StandinStats>) -> Self {
        Self {
            voice: options.voice,
            stats,
            cache: Arc::default(),
        }
    }

    /// Encoded audio for `text`, from the cache when the same request was seen.
    fn render(&self, key: CacheKey, speaking_rate: f64) -> Arc<Vec<u8>> {
        if let Ok(cache) = self.cache.lock()
            && let Some(hit) = cache.get(&key)
        {
            return Arc::clone(hit);
        }
        let samples = synthesize(&key.text, key.sample_rate_hz, speaking_rate, self.voice);
        let audio = match (key.encoding, key.with_header) {
            (OutputEncoding::Mulaw, true) => {
                mulaw::wav::write_mulaw(&mulaw::encode(&samples), key.sample_rate_hz, 1)
            }
            (OutputEncoding::Mulaw, false) => mulaw::encode(&samples),
            (OutputEncoding::Linear16, true) => {
                mulaw::wav::write_pcm16(&samples, key.sample_rate_hz, 1)
            }
            (OutputEncoding::Linear16, false) => mulaw::samples_to_pcm16le(&samples),
        };
        let audio = Arc::new(audio);
        if let Ok(mut cache) = self.cache.lock() {
            if cache.len() >= CACHE_ENTRIES {
                cache.clear();
            }
            cache.insert(key, Arc::clone(&audio));
        }
        audio
    }
}

fn output_encoding(encoding: i32, sample_rate_hertz: i32) -> Result<(OutputEncoding, u32), Status> {
    let encoding = match AudioEncoding::try_from(encoding) {
        Ok(AudioEncoding::Mulaw) => OutputEncoding::Mulaw,
        Ok(AudioEncoding::Linear16 | AudioEncoding::Pcm) => OutputEncoding::Linear16,
        _ => {
            return Err(Status::invalid_argument(format!(
                "this stand-in produces MULAW (5), LINEAR16 (1) or PCM (7) only; the request \
                 asked for audio_encoding {encoding}"
            )));
        }
    };
    let rate = match sample_rate_hertz {
        0 if encoding == OutputEncoding::Mulaw => mulaw::SAMPLE_RATE_HZ,
        0 => DEFAULT_LINEAR_RATE_HZ,
        rate => u32::try_from(rate)
            .ok()
            .filter(|rate| (8_000..=48_000).contains(rate))
            .ok_or_else(|| {
                Status::invalid_argument(format!(
                    "sample_rate_hertz must be 0 (default) or between 8000 and 48000, got {rate}"
                ))
            })?,
    };
    Ok((encoding, rate))
}

/// Removes SSML tags, keeping the text between them.
fn strip_tags(ssml: &str) -> String {
    let mut out = String::with_capacity(ssml.len());
    let mut in_tag = false;
    for c in ssml.chars() {
        match c {
            '<' => in_tag = true,
            '>' if in_tag => in_tag = false,
            c if !in_tag => out.push(c),
            _ => {}
        }
    }
    out
}

fn checked_text(text: String) -> Result<String, Status> {
    if text.len() > MAX_INPUT_BYTES {
        return Err(Status::invalid_argument(format!(
            "input is {} bytes; the limit is {MAX_INPUT_BYTES} bytes per request",
            text.len()
        )));
    }
    if text.trim().is_empty() {
        return Err(Status::invalid_argument(
            "input text is empty: set input.text, input.ssml or input.markup",
        ));
    }
    Ok(text)
}

type StreamingResponses =
    Pin<Box<dyn Stream<Item = Result<StreamingSynthesizeResponse, Status>> + Send + 'static>>;

#[tonic::async_trait]
impl TextToSpeech for TtsStandin {
    async fn synthesize_speech(
        &self,
        request: Request<SynthesizeSpeechRequest>,
    ) -> Result<Response<SynthesizeSpeechResponse>, Status> {
        self.stats.tts_requests.fetch_add(1, Ordering::Relaxed);
        let request = request.into_inner();
        let text = match request.input.and_then(|input| input.input_source) {
            Some(InputSource::Text(text) | InputSource::Markup(text)) => text,
            Some(InputSource::Ssml(ssml)) => strip_tags(&ssml),
            None => String::new(),
        };
        let text = checked_text(text)?;
        let config = request.audio_config.ok_or_else(|| {
            Status::invalid_argument("audio_config is required (set audio_encoding, e.g. MULAW)")
        })?;
        let (encoding, sample_rate_hz) =
            output_encoding(config.audio_encoding, config.sample_rate_hertz)?;
        let key = CacheKey {
            text,
            encoding,
            sample_rate_hz,
            speaking_rate_bits: config.speaking_rate.to_bits(),
            with_header: true,
        };
        let audio = self.render(key, config.speaking_rate);
        Ok(Response::new(SynthesizeSpeechResponse {
            audio_content: audio.as_ref().clone(),
        }))
    }

    type StreamingSynthesizeStream = StreamingResponses;

    async fn streaming_synthesize(
        &self,
        request: Request<Streaming<StreamingSynthesizeRequest>>,
    ) -> Result<Response<Self::StreamingSynthesizeStream>, Status> {
        self.stats.tts_streams.fetch_add(1, Ordering::Relaxed);
        let state = StreamingState {
            requests: request.into_inner(),
            service: self.clone(),
            format: None,
            pending: VecDeque::new(),
            finished: false,
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
                    Ok(None) => state.finished = true,
                    Err(_) => return None,
                }
            }
        });
        Ok(Response::new(Box::pin(responses)))
    }
}

struct StreamingState {
    requests: Streaming<StreamingSynthesizeRequest>,
    service: TtsStandin,
    /// (encoding, sample rate, speaking rate) once the config arrived.
    format: Option<(OutputEncoding, u32, f64)>,
    pending: VecDeque<Result<StreamingSynthesizeResponse, Status>>,
    finished: bool,
}

impl StreamingState {
    fn fail(&mut self, status: Status) {
        self.pending.push_back(Err(status));
        self.finished = true;
    }

    fn handle_request(&mut self, request: StreamingSynthesizeRequest) {
        match (request.streaming_request, self.format) {
            (Some(StreamingRequest::StreamingConfig(config)), None) => {
                let audio = config.streaming_audio_config.unwrap_or_default();
                let encoding = if audio.audio_encoding == 0 {
                    AudioEncoding::Pcm as i32
                } else {
                    audio.audio_encoding
                };
                match output_encoding(encoding, audio.sample_rate_hertz) {
                    Ok((encoding, rate)) => {
                        self.format = Some((encoding, rate, audio.speaking_rate));
                    }
                    Err(status) => self.fail(status),
                }
            }
            (Some(StreamingRequest::StreamingConfig(_)), Some(_)) => {
                self.fail(Status::invalid_argument(
                    "streaming_config may only be sent in the first StreamingSynthesizeRequest",
                ))
            }
            (Some(StreamingRequest::Input(_)), None) => self.fail(Status::invalid_argument(
                "the first StreamingSynthesizeRequest must carry streaming_config, but it \
                 carried input: send the configuration before any text",
            )),
            (Some(StreamingRequest::Input(input)), Some((encoding, sample_rate_hz, rate))) => {
                let text = match input.input_source {
                    Some(StreamingInputSource::Text(text) | StreamingInputSource::Markup(text)) => {
                        text
                    }
                    None => String::new(),
                };
                let text = match checked_text(text) {
                    Ok(text) => text,
                    Err(status) => return self.fail(status),
                };
                let key = CacheKey {
                    text,
                    encoding,
                    sample_rate_hz,
                    speaking_rate_bits: rate.to_bits(),
                    with_header: false,
                };
                let audio = self.service.render(key, rate);
                let bytes_per_sample = match encoding {
                    OutputEncoding::Mulaw => 1,
                    OutputEncoding::Linear16 => 2,
                };
                let chunk = sample_rate_hz as usize * bytes_per_sample * STREAM_CHUNK_MS / 1000;
                for piece in audio.chunks(chunk.max(1)) {
                    self.pending.push_back(Ok(StreamingSynthesizeResponse {
                        audio_content: piece.to_vec(),
                    }));
                }
            }
            (None, _) => self.fail(Status::invalid_argument(
                "StreamingSynthesizeRequest carries neither streaming_config nor input",
            )),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ssml_tags_are_removed() {
        assert_eq!(
            strip_tags("<speak>Hello <break time=\"1s\"/>there</speak>"),
            "Hello there"
        );
    }

    #[test]
    fn encodings_and_rates_are_checked() {
        assert_eq!(
            output_encoding(AudioEncoding::Mulaw as i32, 0).unwrap(),
            (OutputEncoding::Mulaw, 8_000)
        );
        assert_eq!(
            output_encoding(AudioEncoding::Linear16 as i32, 16_000).unwrap(),
            (OutputEncoding::Linear16, 16_000)
        );
        assert_eq!(
            output_encoding(AudioEncoding::Mp3 as i32, 0)
                .unwrap_err()
                .code(),
            tonic::Code::InvalidArgument
        );
        assert!(output_encoding(AudioEncoding::Mulaw as i32, 100).is_err());
    }
}

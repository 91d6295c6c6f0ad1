//! Text-to-Speech: 8 kHz mu-law audio for Twilio, one-shot (`SynthesizeSpeech`) or streamed
//! (`StreamingSynthesize`), with a cache for the greeting and frequent phrases.

use std::collections::{HashMap, VecDeque};
use std::sync::{Arc, Mutex, PoisonError};
use std::time::Duration;

use bytes::{Bytes, BytesMut};
use futures::stream::{self, BoxStream, Stream, StreamExt};
use tokio::sync::watch;
use tonic::Code;
use tonic::service::interceptor::InterceptedService;
use tonic::transport::Channel;

use crate::channel::{Authorizer, ConnectionPool};
use crate::credentials::GoogleCredentials;
use crate::error::SpeechError;
use crate::proto::texttospeech_v1::streaming_synthesis_input::InputSource as StreamingInputSource;
use crate::proto::texttospeech_v1::streaming_synthesize_request::StreamingRequest;
use crate::proto::texttospeech_v1::synthesis_input::InputSource;
use crate::proto::texttospeech_v1::text_to_speech_client::TextToSpeechClient;
use crate::proto::texttospeech_v1::{
    AudioConfig, AudioEncoding, StreamingAudioConfig, StreamingSynthesisInput,
    StreamingSynthesizeConfig, StreamingSynthesizeRequest, SynthesisInput, SynthesizeSpeechRequest,
    VoiceSelectionParams,
};
use crate::stt_audio::bytes_to_duration;

/// Default Text-to-Speech endpoint.
pub const DEFAULT_TTS_ENDPOINT: &str = "https://texttospeech.googleapis.com";
/// Environment variable that overrides the Text-to-Speech endpoint.
pub const TTS_ENDPOINT_VAR: &str = "GOOGLE_TTS_ENDPOINT";
/// Google's limit on the input of one synthesis request, in bytes.
pub const MAX_TTS_INPUT_BYTES: usize = 5000;
const SERVICE: &str = "Text-to-Speech";
const SAMPLE_RATE_HZ: i32 = 8000;

/// Text-to-Speech settings.
#[derive(Debug, Clone, PartialEq)]
pub struct TtsConfig {
    /// `https://HOST` (TLS, credentials required) or `http://HOST:PORT` (plaintext h2c).
    pub endpoint: String,
    /// Voice name, e.g. `he-IL-Wavenet-A`.
    pub voice_name: String,
    /// BCP-47 language of the voice, e.g. `he-IL`.
    pub language_code: String,
    /// 1.0 is normal speed (Google accepts 0.25..=4.0).
    pub speaking_rate: f64,
    /// Use `StreamingSynthesize` in [`TtsClient::synthesize_stream`] (only some voices, e.g.
    /// Chirp 3 HD, support it; see [`voice_supports_streaming`]). If the service refuses the
    /// streaming call before any audio, the client falls back to one-shot synthesis.
    pub streaming: bool,
    /// Number of (voice, rate, text) entries the cache keeps besides the pinned ones (see
    /// [`TtsClient::synthesize_pinned`]); the oldest is evicted first.
    pub cache_capacity: usize,
    /// Deadline of one synthesis request, and the longest wait for the next streamed chunk.
    pub request_timeout: Duration,
    /// Synthesis requests in flight on one HTTP/2 connection before the client opens another
    /// (Google's front ends cap concurrent streams per connection, usually at 100; past the cap
    /// a request would wait for another to end).
    pub streams_per_connection: usize,
}

impl Default for TtsConfig {
    fn default() -> Self {
        let voice_name = "he-IL-Wavenet-A".to_owned();
        Self {
            endpoint: DEFAULT_TTS_ENDPOINT.to_owned(),
            streaming: voice_supports_streaming(&voice_name),
            voice_name,
            language_code: "he-IL".to_owned(),
            speaking_rate: 1.0,
            cache_capacity: 64,
            request_timeout: Duration::from_secs(10),
            streams_per_connection: 100,
        }
    }
}

/// Whether Google's `StreamingSynthesize` accepts this voice (Chirp 3 HD voices).
pub fn voice_supports_streaming(voice_name: &str) -> bool {
    voice_name.contains("Chirp3-HD") || voice_name.contains("Chirp-HD")
}

type GrpcTtsClient = TextToSpeechClient<InterceptedService<Channel, Authorizer>>;

/// A Text-to-Speech client. Cheap to clone; clones share the cache and the connection.
#[derive(Debug, Clone)]
pub struct TtsClient {
    shared: Arc<TtsShared>,
}

#[derive(Debug)]
struct TtsShared {
    config: TtsConfig,
    connections: ConnectionPool<GrpcTtsClient>,
    cache: Mutex<PhraseCache>,
    /// Cache misses being synthesized, by key: a second caller of
    /// [`TtsClient::synthesize_cached`] for the same phrase waits for the first one's audio
    /// instead of sending its own request (a burst of calls reaching the same scripted line
    /// costs one synthesis, not one per call).
    in_flight: Mutex<HashMap<CacheKey, watch::Receiver<Option<Bytes>>>>,
}

impl TtsClient {
    /// Builds a client. Must be called inside a Tokio runtime. An `https://` endpoint requires
    /// credentials; an `http://` endpoint (local stand-in) does not.
    pub fn new(
        config: TtsConfig,
        credentials: Option<Arc<GoogleCredentials>>,
    ) -> Result<Self, SpeechError> {
        if !(0.25..=4.0).contains(&config.speaking_rate) {
            return Err(SpeechError::InvalidConfig {
                problem: format!(
                    "TTS speaking_rate = {} must be between 0.25 and 4.0",
                    config.speaking_rate
                ),
            });
        }
        if config.streams_per_connection == 0 {
            return Err(SpeechError::InvalidConfig {
                problem: "TTS streams_per_connection must be at least 1".to_owned(),
            });
        }
        let connections = ConnectionPool::new(
            "TTS",
            TTS_ENDPOINT_VAR,
            &config.endpoint,
            credentials,
            config.streams_per_connection,
            TextToSpeechClient::with_interceptor,
        )?;
        let cache = Mutex::new(PhraseCache::new(config.cache_capacity));
        Ok(Self {
            shared: Arc::new(TtsShared {
                config,
                connections,
                cache,
                in_flight: Mutex::default(),
            }),
        })
    }

    /// The configuration in use.
    pub fn config(&self) -> &TtsConfig {
        &self.shared.config
    }

    /// HTTP/2 connections this client has opened so far (one per `streams_per_connection`
    /// requests in flight at the busiest moment).
    pub fn connections(&self) -> usize {
        self.shared.connections.connection_count()
    }

    /// Synthesizes `text` with `SynthesizeSpeech` and returns headerless 8 kHz mu-law. Text over
    /// 5000 bytes is split at sentence boundaries and the pieces' audio concatenated.
    pub async fn synthesize(&self, text: &str) -> Result<Bytes, SpeechError> {
        let pieces = split_for_synthesis(text, MAX_TTS_INPUT_BYTES);
        if pieces.is_empty() {
            return Err(SpeechError::EmptyText);
        }
        let mut audio = BytesMut::new();
        for piece in pieces {
            audio.extend_from_slice(&self.synthesize_piece(piece).await?);
        }
        let audio = audio.freeze();
        // Debug only: the call driver logs TTS_LEN_ms at info, once per utterance, with its
        // call span (this client does not know which call it serves).
        tracing::debug!(
            TTS_LEN_ms = bytes_to_duration(audio.len() as u64).as_millis() as u64,
            voice = %self.shared.config.voice_name, "TTS_LEN_ms"
        );
        Ok(audio)
    }

    async fn synthesize_piece(&self, text: &str) -> Result<Bytes, SpeechError> {
        let config = &self.shared.config;
        let mut request = tonic::Request::new(SynthesizeSpeechRequest {
            input: Some(SynthesisInput {
                input_source: Some(InputSource::Text(text.to_owned())),
                prompt: None,
            }),
            voice: Some(self.voice()),
            audio_config: Some(AudioConfig {
                audio_encoding: AudioEncoding::Mulaw as i32,
                speaking_rate: config.speaking_rate,
                sample_rate_hertz: SAMPLE_RATE_HZ,
                ..AudioConfig::default()
            }),
        });
        request.set_timeout(config.request_timeout);
        // Held until the answer is in.
        let (mut client, _lease) = self.shared.connections.checkout("tts");
        let response = client
            .synthesize_speech(request)
            .await
            .map_err(|status| SpeechError::from_status(SERVICE, &status))?
            .into_inner();
        strip_wav_header(&response.audio_content)
    }

    /// Synthesizes `text` as a stream of headerless 8 kHz mu-law chunks, so playback can start
    /// before synthesis ends. Uses `StreamingSynthesize` when [`TtsConfig::streaming`] is set
    /// (falling back to one-shot synthesis if the service refuses it before any audio), and
    /// otherwise yields the whole one-shot result as a single chunk.
    pub fn synthesize_stream(
        &self,
        text: &str,
    ) -> impl Stream<Item = Result<Bytes, SpeechError>> + Send + 'static {
        let client = self.clone();
        let text = text.to_owned();
        stream::once(async move {
            if client.shared.config.streaming {
                client.open_streaming(text).await
            } else {
                stream::once(async move { client.synthesize(&text).await }).boxed()
            }
        })
        .flatten()
    }

    async fn open_streaming(self, text: String) -> BoxStream<'static, Result<Bytes, SpeechError>> {
        let pieces: Vec<String> = split_for_synthesis(&text, MAX_TTS_INPUT_BYTES)
            .into_iter()
            .map(str::to_owned)
            .collect();
        if pieces.is_empty() {
            return stream::once(async { Err(SpeechError::EmptyText) }).boxed();
        }
        let config = &self.shared.config;
        let mut requests = vec![StreamingSynthesizeRequest {
            streaming_request: Some(StreamingRequest::StreamingConfig(
                StreamingSynthesizeConfig {
                    voice: Some(self.voice()),
                    streaming_audio_config: Some(StreamingAudioConfig {
                        audio_encoding: AudioEncoding::Mulaw as i32,
                        sample_rate_hertz: SAMPLE_RATE_HZ,
                        speaking_rate: config.speaking_rate,
                    }),
                },
            )),
        }];
        requests.extend(pieces.into_iter().map(|piece| StreamingSynthesizeRequest {
            streaming_request: Some(StreamingRequest::Input(StreamingSynthesisInput {
                input_source: Some(StreamingInputSource::Text(piece)),
                prompt: None,
            })),
        }));
        // Held until the response stream ends (it travels in the stream's state below).
        let (mut grpc, lease) = self.shared.connections.checkout("tts");
        let mut responses = match grpc.streaming_synthesize(stream::iter(requests)).await {
            Ok(response) => response.into_inner(),
            Err(status) => return self.refused_streaming(status, text),
        };
        // Wait for the first chunk: a voice without streaming support is refused here, and the
        // one-shot fallback is only safe before any audio has been handed out.
        let stall_limit = config.request_timeout;
        let first = match next_message_within(&mut responses, stall_limit).await {
            Ok(Some(first)) => headerless(first.audio_content),
            Ok(None) => {
                return stream::once(async {
                    Err(SpeechError::BadAudio {
                        problem: "the stream ended without audio".to_owned(),
                    })
                })
                .boxed();
            }
            Err(status) => return self.refused_streaming(status, text),
        };
        let first_len = first.as_ref().map_or(0, Bytes::len);
        let rest = stream::unfold(
            Some((responses, first_len, lease)),
            move |state| async move {
                let (mut responses, total, lease) = state?;
                match next_message_within(&mut responses, stall_limit).await {
                    Ok(Some(response)) => {
                        let chunk = headerless(response.audio_content);
                        let total = total + chunk.as_ref().map_or(0, Bytes::len);
                        Some((chunk, Some((responses, total, lease))))
                    }
                    Ok(None) => {
                        tracing::debug!(
                            TTS_LEN_ms = bytes_to_duration(total as u64).as_millis() as u64,
                            streaming = true,
                            "TTS_LEN_ms"
                        );
                        None
                    }
                    Err(status) => Some((Err(SpeechError::from_status(SERVICE, &status)), None)),
                }
            },
        );
        stream::once(async move { first })
            .chain(rest)
            .filter(|chunk| std::future::ready(!matches!(chunk, Ok(audio) if audio.is_empty())))
            .boxed()
    }

    /// Handles an error before the first streamed chunk: falls back to one-shot synthesis when
    /// the voice does not support streaming, otherwise reports the error.
    fn refused_streaming(
        self,
        status: tonic::Status,
        text: String,
    ) -> BoxStream<'static, Result<Bytes, SpeechError>> {
        if matches!(status.code(), Code::InvalidArgument | Code::Unimplemented) {
            tracing::warn!(
                voice = %self.shared.config.voice_name, code = ?status.code(), message = %status.message(),
                "TTS streaming refused; using one-shot synthesis"
            );
            stream::once(async move { self.synthesize(&text).await }).boxed()
        } else {
            stream::once(async move { Err(SpeechError::from_status(SERVICE, &status)) }).boxed()
        }
    }

    /// Like [`TtsClient::synthesize`], but serves and fills the (voice, rate, text) cache.
    /// Concurrent misses for the same phrase share one request: the first caller synthesizes,
    /// the others wait for its audio. If that request fails or is cancelled, each waiting caller
    /// sends its own (so one failure is not handed to everyone).
    pub async fn synthesize_cached(&self, text: &str) -> Result<Bytes, SpeechError> {
        if let Some(audio) = self.cached(text) {
            return Ok(audio);
        }
        let key = self.cache_key(text);
        let joined = {
            let mut in_flight = self
                .shared
                .in_flight
                .lock()
                .unwrap_or_else(PoisonError::into_inner);
            match in_flight.get(&key) {
                Some(pending) => Ok(pending.clone()),
                // Synthesized and cached since the check above (by a request that has ended).
                None if let Some(audio) = self.cached(text) => return Ok(audio),
                None => {
                    let (done, pending) = watch::channel(None);
                    in_flight.insert(key.clone(), pending);
                    Err(done)
                }
            }
        };
        let mut pending = match joined {
            Ok(pending) => pending,
            Err(done) => {
                let leader = InFlight {
                    shared: &self.shared,
                    key,
                    done,
                };
                return self.lead_synthesis(text, leader).await;
            }
        };
        if let Ok(audio) = pending.wait_for(Option::is_some).await
            && let Some(audio) = audio.as_ref()
        {
            return Ok(audio.clone());
        }
        // The shared request failed or was cancelled: try on our own.
        let audio = self.synthesize(text).await?;
        self.insert_cached(text, audio.clone(), false);
        Ok(audio)
    }

    async fn lead_synthesis(&self, text: &str, leader: InFlight<'_>) -> Result<Bytes, SpeechError> {
        let audio = self.synthesize(text).await?;
        // Cached before the in-flight entry goes (when `leader` drops), so a caller arriving in
        // between finds one or the other.
        self.insert_cached(text, audio.clone(), false);
        leader.done.send_replace(Some(audio.clone()));
        Ok(audio)
    }

    fn insert_cached(&self, text: &str, audio: Bytes, pinned: bool) {
        self.shared
            .cache
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .insert(self.cache_key(text), audio, pinned);
    }

    /// Like [`TtsClient::synthesize_cached`], but the entry is pinned: never evicted, however
    /// many other phrases pass through the cache. For the lines every call needs at once (the
    /// greeting above all), so that a stream of other cached phrases cannot push them out and
    /// make a caller wait for synthesis.
    pub async fn synthesize_pinned(&self, text: &str) -> Result<Bytes, SpeechError> {
        let audio = self.synthesize_cached(text).await?;
        self.insert_cached(text, audio.clone(), true);
        Ok(audio)
    }

    /// Cached audio for `text` with this client's voice and rate, without any network call.
    pub fn cached(&self, text: &str) -> Option<Bytes> {
        self.shared
            .cache
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .get(&self.cache_key(text))
    }

    fn cache_key(&self, text: &str) -> CacheKey {
        let config = &self.shared.config;
        CacheKey {
            voice: config.voice_name.clone(),
            speaking_rate_bits: config.speaking_rate.to_bits(),
            text: text.trim().to_owned(),
        }
    }

    fn voice(&self) -> VoiceSelectionParams {
        let config = &self.shared.config;
        VoiceSelectionParams {
            language_code: config.language_code.clone(),
            name: config.voice_name.clone(),
            ..VoiceSelectionParams::default()
        }
    }
}

/// The next streamed response, or DEADLINE_EXCEEDED when none arrives within `limit`.
async fn next_message_within<T>(
    responses: &mut tonic::Streaming<T>,
    limit: Duration,
) -> Result<Option<T>, tonic::Status> {
    match tokio::time::timeout(limit, responses.message()).await {
        Ok(result) => result,
        Err(_) => Err(tonic::Status::deadline_exceeded(format!(
            "no streamed audio within {limit:?}"
        ))),
    }
}

/// Streamed chunks are headerless; strip a WAV header defensively if one appears anyway.
fn headerless(audio: Vec<u8>) -> Result<Bytes, SpeechError> {
    if audio.starts_with(b"RIFF") {
        strip_wav_header(&audio)
    } else {
        Ok(Bytes::from(audio))
    }
}

/// The mu-law samples of Google's 8 kHz mono mu-law WAV (found via the `data` chunk).
fn strip_wav_header(wav: &[u8]) -> Result<Bytes, SpeechError> {
    mulaw::wav::mulaw_8k_mono_payload(wav)
        .map(Bytes::copy_from_slice)
        .map_err(|error| SpeechError::BadAudio {
            problem: error.to_string(),
        })
}

/// Splits `text` into pieces of at most `max_bytes` UTF-8 bytes, preferring sentence ends
/// (`.`, `!`, `?`, `…`, newline), then whitespace, and only then any character boundary.
/// Pieces are trimmed; empty pieces are dropped.
pub fn split_for_synthesis(text: &str, max_bytes: usize) -> Vec<&str> {
    let max_bytes = max_bytes.max(4); // room for any single UTF-8 character
    let mut pieces = Vec::new();
    let mut rest = text.trim();
    while rest.len() > max_bytes {
        let mut limit = max_bytes;
        while !rest.is_char_boundary(limit) {
            limit -= 1;
        }
        let window = &rest[..limit];
        let sentence_end = window
            .char_indices()
            .filter(|&(index, ch)| {
                matches!(ch, '.' | '!' | '?' | '…' | '\n')
                    && rest[index + ch.len_utf8()..].starts_with(char::is_whitespace)
            })
            .map(|(index, ch)| index + ch.len_utf8())
            .next_back();
        let cut = sentence_end
            .or_else(|| window.rfind(char::is_whitespace).filter(|&index| index > 0))
            .unwrap_or(limit);
        let (piece, tail) = rest.split_at(cut);
        let piece = piece.trim();
        if !piece.is_empty() {
            pieces.push(piece);
        }
        rest = tail.trim_start();
    }
    if !rest.is_empty() {
        pieces.push(rest);
    }
    pieces
}

#[derive(Debug, Clone, PartialEq, Eq, Hash)]
struct CacheKey {
    voice: String,
    speaking_rate_bits: u64,
    text: String,
}

/// One cache miss being synthesized; dropping it (done, failed or cancelled) removes the
/// in-flight entry, which wakes every waiter (with the audio, or to try on its own).
struct InFlight<'a> {
    shared: &'a TtsShared,
    key: CacheKey,
    done: watch::Sender<Option<Bytes>>,
}

impl Drop for InFlight<'_> {
    fn drop(&mut self) {
        let mut in_flight = self
            .shared
            .in_flight
            .lock()
            .unwrap_or_else(PoisonError::into_inner);
        // Only the leader inserts its key's entry, and a new leader only comes once the entry
        // is gone: the entry under `key` is this one.
        in_flight.remove(&self.key);
    }
}

/// Bounded (voice, rate, text) -> audio map; evicts the oldest unpinned insertion when full.
#[derive(Debug)]
struct PhraseCache {
    /// How many unpinned entries are kept.
    capacity: usize,
    entries: HashMap<CacheKey, CacheEntry>,
    /// Unpinned keys, oldest first (eviction order).
    insertion_order: VecDeque<CacheKey>,
}

#[derive(Debug)]
struct CacheEntry {
    audio: Bytes,
    pinned: bool,
}

impl PhraseCache {
    fn new(capacity: usize) -> Self {
        Self {
            capacity,
            entries: HashMap::new(),
            insertion_order: VecDeque::new(),
        }
    }

    fn get(&self, key: &CacheKey) -> Option<Bytes> {
        self.entries.get(key).map(|entry| entry.audio.clone())
    }

    /// Stores `audio` under `key`. A pinned entry stays until the client is dropped; an
    /// unpinned one counts against `capacity` (oldest evicted first). Pinning an existing
    /// entry takes it out of the eviction order; an unpinned insert never unpins.
    fn insert(&mut self, key: CacheKey, audio: Bytes, pinned: bool) {
        if let Some(entry) = self.entries.get_mut(&key) {
            entry.audio = audio;
            if pinned && !entry.pinned {
                entry.pinned = true;
                self.insertion_order.retain(|k| k != &key);
            }
            return;
        }
        if !pinned && self.capacity == 0 {
            return;
        }
        if !pinned {
            self.insertion_order.push_back(key.clone());
        }
        self.entries.insert(key, CacheEntry { audio, pinned });
        while self.insertion_order.len() > self.capacity {
            match self.insertion_order.pop_front() {
                Some(oldest) => {
                    self.entries.remove(&oldest);
                }
                None => break,
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn short_text_is_one_piece() {
        assert_eq!(
            split_for_synthesis("  שלום, מה שלומך?  ", 5000),
            vec!["שלום, מה שלומך?"]
        );
        assert!(split_for_synthesis("   ", 5000).is_empty());
    }

    #[test]
    fn long_text_splits_at_sentence_ends_within_the_limit() {
        let sentence = "זה משפט בעברית שאורכו בינוני. ";
        let text = sentence.repeat(400);
        let pieces = split_for_synthesis(&text, MAX_TTS_INPUT_BYTES);
        assert!(pieces.len() > 1);
        for piece in &pieces {
            assert!(piece.len() <= MAX_TTS_INPUT_BYTES, "{} bytes", piece.len());
            assert!(
                piece.ends_with('.'),
                "piece does not end at a sentence: {piece:?}"
            );
        }
        let rejoined: String = pieces.join(" ");
        assert_eq!(rejoined, text.trim());
    }

    #[test]
    fn text_without_sentences_splits_at_words_then_characters() {
        let words = "מילה ".repeat(3000);
        for piece in split_for_synthesis(&words, 100) {
            assert!(piece.len() <= 100);
            assert!(!piece.starts_with(' ') && !piece.ends_with(' '));
        }
        let unbroken = "א".repeat(3000); // 2 bytes per character, no spaces
        let pieces = split_for_synthesis(&unbroken, 101);
        assert!(pieces.iter().all(|piece| piece.len() <= 101));
        assert_eq!(pieces.concat(), unbroken);
    }

    fn cache_key_for(text: &str) -> CacheKey {
        CacheKey {
            voice: "v".into(),
            speaking_rate_bits: 1.0f64.to_bits(),
            text: text.into(),
        }
    }

    #[test]
    fn cache_evicts_the_oldest_entry() {
        let key = cache_key_for;
        let mut cache = PhraseCache::new(2);
        cache.insert(key("a"), Bytes::from_static(b"1"), false);
        cache.insert(key("b"), Bytes::from_static(b"2"), false);
        cache.insert(key("a"), Bytes::from_static(b"3"), false);
        cache.insert(key("c"), Bytes::from_static(b"4"), false);
        assert_eq!(cache.get(&key("a")), None);
        assert_eq!(cache.get(&key("b")), Some(Bytes::from_static(b"2")));
        assert_eq!(cache.get(&key("c")), Some(Bytes::from_static(b"4")));
    }

    #[test]
    fn pinned_entries_survive_any_number_of_other_phrases() {
        let key = cache_key_for;
        let mut cache = PhraseCache::new(2);
        cache.insert(key("greeting"), Bytes::from_static(b"g"), true);
        cache.insert(key("reply"), Bytes::from_static(b"r"), false);
        // Pinning an entry that is already cached takes it out of the eviction order.
        cache.insert(key("reply"), Bytes::from_static(b"r"), true);
        // An unpinned insert of a pinned phrase does not unpin it.
        cache.insert(key("greeting"), Bytes::from_static(b"g"), false);
        for n in 0..100 {
            cache.insert(key(&format!("other {n}")), Bytes::from_static(b"o"), false);
        }
        assert_eq!(cache.get(&key("greeting")), Some(Bytes::from_static(b"g")));
        assert_eq!(cache.get(&key("reply")), Some(Bytes::from_static(b"r")));
        assert_eq!(cache.get(&key("other 97")), None);
        assert_eq!(cache.get(&key("other 98")), Some(Bytes::from_static(b"o")));
        assert_eq!(cache.get(&key("other 99")), Some(Bytes::from_static(b"o")));
        assert_eq!(
            cache.entries.len(),
            4,
            "two pinned plus the capacity of two"
        );
    }

    #[test]
    fn streaming_support_follows_the_voice_family() {
        assert!(voice_supports_streaming("he-IL-Chirp3-HD-Aoede"));
        assert!(!voice_supports_streaming("he-IL-Wavenet-A"));
        assert!(!TtsConfig::default().streaming);
    }
}

//! The LLM responder: OpenAI-compatible Chat Completions with `stream: true`.

use std::collections::VecDeque;
use std::fmt;
use std::path::Path;
use std::pin::Pin;
use std::time::Duration;

use bytes::Bytes;
use futures::{Stream, StreamExt};
use serde_json::{Value, json};
use tokio::time::Instant;

use super::{
    CallContext, CallerInput, Channel, FixedLines, HistorySpeaker, Reply, ReplyMeta, Responder,
    ResponderConfigError, ResponderError, SentenceSplitter,
};

/// Used when no system prompt file is given.
pub const DEFAULT_SYSTEM_PROMPT: &str = "You are the friendly phone receptionist of a small business. \
Answer briefly in the caller's language (Hebrew or English), in one to three short spoken sentences, \
without lists, markdown or emoji. You can tell the opening hours (Sunday to Thursday 8:00-18:00, \
Friday 8:00-13:00), offer a callback, or take a message.";

/// Settings for [`LlmResponder`]. `Debug` never shows the API key.
#[derive(Clone)]
pub struct LlmConfig {
    /// Base URL up to and including the API version, e.g. `https://api.openai.com/v1` (`LLM_BASE_URL`).
    pub base_url: String,
    /// Bearer token (`LLM_API_KEY`); `None` for local servers that need none.
    pub api_key: Option<String>,
    /// Model name (`LLM_MODEL`).
    pub model: String,
    /// The system prompt (from the file named by `LLM_SYSTEM_PROMPT_FILE`, or the built-in one).
    pub system_prompt: String,
    /// Longest wait from sending the request to the first reply token.
    pub first_token_timeout: Duration,
    /// Longest wait between two streamed chunks once text flows.
    pub chunk_timeout: Duration,
    /// How many recent history turns go into the request.
    pub history_turns: usize,
    /// `max_tokens` for the completion (keeps spoken replies short).
    pub max_tokens: Option<u32>,
    /// `temperature`, when set.
    pub temperature: Option<f32>,
}

impl fmt::Debug for LlmConfig {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("LlmConfig")
            .field("base_url", &self.base_url)
            .field("api_key", &self.api_key.as_ref().map(|_| "<redacted>"))
            .field("model", &self.model)
            .field("system_prompt_chars", &self.system_prompt.chars().count())
            .field("first_token_timeout", &self.first_token_timeout)
            .field("chunk_timeout", &self.chunk_timeout)
            .field("history_turns", &self.history_turns)
            .field("max_tokens", &self.max_tokens)
            .field("temperature", &self.temperature)
            .finish()
    }
}

impl LlmConfig {
    /// A config with default timeouts (4 s to first token, 5 s between chunks) and 12 history turns.
    pub fn new(
        base_url: impl Into<String>,
        api_key: Option<String>,
        model: impl Into<String>,
    ) -> Self {
        LlmConfig {
            base_url: base_url.into(),
            api_key,
            model: model.into(),
            system_prompt: DEFAULT_SYSTEM_PROMPT.to_string(),
            first_token_timeout: Duration::from_secs(4),
            chunk_timeout: Duration::from_secs(5),
            history_turns: 12,
            max_tokens: Some(200),
            temperature: None,
        }
    }

    /// Build from the values of `LLM_BASE_URL`, `LLM_API_KEY`, `LLM_MODEL` and
    /// `LLM_SYSTEM_PROMPT_FILE`. `Ok(None)` when `LLM_BASE_URL` is unset or empty (use the
    /// scripted responder); an error when it is set but the rest is unusable.
    pub fn from_env_values(
        base_url: Option<&str>,
        api_key: Option<&str>,
        model: Option<&str>,
        system_prompt_path: Option<&str>,
    ) -> Result<Option<Self>, ResponderConfigError> {
        let Some(base_url) = base_url.map(str::trim).filter(|s| !s.is_empty()) else {
            return Ok(None);
        };
        let parsed =
            reqwest::Url::parse(base_url).map_err(|e| ResponderConfigError::InvalidSetting {
                variable: "LLM_BASE_URL",
                detail: format!("{e}: expected e.g. https://api.openai.com/v1"),
            })?;
        if !matches!(parsed.scheme(), "http" | "https") || parsed.query().is_some() {
            return Err(ResponderConfigError::InvalidSetting {
                variable: "LLM_BASE_URL",
                detail:
                    "must be an http(s) URL without a query string, e.g. https://api.openai.com/v1"
                        .to_string(),
            });
        }
        let Some(model) = model.map(str::trim).filter(|s| !s.is_empty()) else {
            return Err(ResponderConfigError::MissingSetting {
                variable: "LLM_MODEL",
                hint: "the model name to request, e.g. gpt-4o-mini (required when LLM_BASE_URL is set)",
            });
        };
        let api_key = api_key
            .map(str::trim)
            .filter(|s| !s.is_empty())
            .map(str::to_string);
        let mut config = LlmConfig::new(base_url, api_key, model);
        if let Some(path) = system_prompt_path.map(str::trim).filter(|s| !s.is_empty()) {
            let prompt = std::fs::read_to_string(Path::new(path)).map_err(|source| {
                ResponderConfigError::PromptRead {
                    path: path.to_string(),
                    source,
                }
            })?;
            if prompt.trim().is_empty() {
                return Err(ResponderConfigError::InvalidSetting {
                    variable: "LLM_SYSTEM_PROMPT_FILE",
                    detail: format!("{path} is empty"),
                });
            }
            config.system_prompt = prompt;
        }
        Ok(Some(config))
    }

    /// `{base_url}/chat/completions`.
    pub fn endpoint(&self) -> String {
        format!("{}/chat/completions", self.base_url.trim_end_matches('/'))
    }
}

/// Streams replies from an OpenAI-compatible Chat Completions endpoint, sentence by sentence.
///
/// The request carries the system prompt, the caller's name/number and channel, the recent
/// history (caller -> `user`, agent -> `assistant`) and the new input. Text is yielded as soon as
/// a sentence is complete. Dropping the stream drops the HTTP response, which closes the request.
/// No effects are produced (the LLM has no tools); fixed lines come from the given script lines.
#[derive(Debug, Clone)]
pub struct LlmResponder {
    config: LlmConfig,
    endpoint: String,
    client: reqwest::Client,
    lines: FixedLines,
}

impl LlmResponder {
    /// A responder with its own HTTP client; `lines` are the greeting/reprompt/... lines.
    pub fn new(config: LlmConfig, lines: FixedLines) -> Result<Self, ResponderConfigError> {
        let client = reqwest::Client::builder()
            .connect_timeout(config.first_token_timeout)
            .build()
            .map_err(|e| ResponderConfigError::InvalidSetting {
                variable: "LLM_BASE_URL",
                detail: format!("cannot build an HTTP client: {e}"),
            })?;
        Ok(LlmResponder {
            endpoint: config.endpoint(),
            config,
            client,
            lines,
        })
    }

    /// The settings in use.
    pub fn config(&self) -> &LlmConfig {
        &self.config
    }

    fn request_body(&self, input: &CallerInput, ctx: &CallContext) -> Value {
        let mut system = self.config.system_prompt.trim().to_string();
        system.push_str("\n\nCall context: ");
        system.push_str(match ctx.channel {
            Channel::Voice => {
                "a phone call; your reply is spoken, so use short plain sentences without markup."
            }
            Channel::Whatsapp => "a WhatsApp chat; your reply is read as a short message.",
        });
        match ctx.contact_name.as_deref().map(str::trim) {
            Some(name) if !name.is_empty() => {
                system.push_str(&format!(" The caller's name is {name}."));
            }
            _ => system.push_str(" The caller's name is not known."),
        }
        if let Some(phone) = &ctx.contact_phone {
            system.push_str(&format!(" Their number is {phone}."));
        }
        let mut messages = vec![json!({"role": "system", "content": system})];
        let skip = ctx.history.len().saturating_sub(self.config.history_turns);
        for turn in ctx.history.iter().skip(skip) {
            let role = match turn.speaker {
                HistorySpeaker::Caller => "user",
                HistorySpeaker::Agent => "assistant",
            };
            messages.push(json!({"role": role, "content": turn.text}));
        }
        let content = match input {
            CallerInput::Text(text) => text.clone(),
            CallerInput::Dtmf(digit) => format!("(The caller pressed the key {digit}.)"),
        };
        messages.push(json!({"role": "user", "content": content}));
        let mut body = json!({
            "model": self.config.model,
            "stream": true,
            "messages": messages,
        });
        if let Some(max_tokens) = self.config.max_tokens {
            body["max_tokens"] = json!(max_tokens);
        }
        if let Some(temperature) = self.config.temperature {
            body["temperature"] = json!(temperature);
        }
        body
    }
}

impl Responder for LlmResponder {
    fn respond(&self, input: &CallerInput, ctx: &CallContext) -> Reply {
        let mut request = self
            .client
            .post(&self.endpoint)
            .json(&self.request_body(input, ctx));
        if let Some(key) = &self.config.api_key {
            request = request.bearer_auth(key);
        }
        tracing::debug!(call_sid = %ctx.call_id, model = %self.config.model, "LLM request");
        let state = SseState {
            request: Some(request),
            endpoint: self.endpoint.clone(),
            body: None,
            line_buffer: Vec::new(),
            splitter: SentenceSplitter::new(),
            ready: VecDeque::new(),
            finished: false,
            got_token: false,
            first_token_deadline: Instant::now() + self.config.first_token_timeout,
            first_token_timeout: self.config.first_token_timeout,
            chunk_timeout: self.config.chunk_timeout,
        };
        Reply {
            chunks: Box::pin(futures::stream::unfold(state, SseState::next_item)),
            effects: Vec::new(),
            awaiting: None,
            meta: ReplyMeta {
                intent: "llm".to_string(),
                fixed_text: false,
            },
        }
    }

    fn fixed_lines(&self) -> &FixedLines {
        &self.lines
    }
}

type ByteStream = Pin<Box<dyn Stream<Item = reqwest::Result<Bytes>> + Send>>;

/// The state of one streamed completion, driven by `futures::stream::unfold`.
struct SseState {
    request: Option<reqwest::RequestBuilder>,
    endpoint: String,
    body: Option<ByteStream>,
    line_buffer: Vec<u8>,
    splitter: SentenceSplitter,
    ready: VecDeque<String>,
    finished: bool,
    got_token: bool,
    first_token_deadline: Instant,
    first_token_timeout: Duration,
    chunk_timeout: Duration,
}

/// What one SSE line meant.
enum LineOutcome {
    Continue,
    Done,
}

impl SseState {
    async fn next_item(mut self) -> Option<(Result<String, ResponderError>, SseState)> {
        match self.advance().await {
            Ok(Some(text)) => Some((Ok(text), self)),
            Ok(None) => None,
            Err(error) => {
                self.finished = true;
                self.ready.clear();
                Some((Err(error), self))
            }
        }
    }

    fn timeout_error(&self, stage: &'static str, waited: Duration) -> ResponderError {
        ResponderError::Timeout {
            endpoint: self.endpoint.clone(),
            stage,
            waited_ms: u64::try_from(waited.as_millis()).unwrap_or(u64::MAX),
        }
    }

    async fn advance(&mut self) -> Result<Option<String>, ResponderError> {
        loop {
            if let Some(sentence) = self.ready.pop_front() {
                return Ok(Some(sentence));
            }
            if self.finished {
                return Ok(None);
            }
            if self.body.is_none() {
                self.open().await?;
            }
            let (wait, stage) = if self.got_token {
                (self.chunk_timeout, "next chunk")
            } else {
                (
                    self.first_token_deadline
                        .saturating_duration_since(Instant::now()),
                    "first token",
                )
            };
            let Some(body) = self.body.as_mut() else {
                return Ok(None);
            };
            let next = match tokio::time::timeout(wait, body.next()).await {
                Ok(next) => next,
                Err(_) => {
                    let waited = if self.got_token {
                        self.chunk_timeout
                    } else {
                        self.first_token_timeout
                    };
                    return Err(self.timeout_error(stage, waited));
                }
            };
            match next {
                None => {
                    // The server closed the body without `[DONE]`: keep what we have.
                    if !self.line_buffer.is_empty() {
                        let line = std::mem::take(&mut self.line_buffer);
                        self.handle_line(&line)?;
                    }
                    self.finish_text();
                }
                Some(Err(e)) => {
                    return Err(ResponderError::Transport {
                        endpoint: self.endpoint.clone(),
                        detail: e.to_string(),
                    });
                }
                Some(Ok(bytes)) => {
                    self.line_buffer.extend_from_slice(&bytes);
                    while let Some(pos) = self.line_buffer.iter().position(|&b| b == b'\n') {
                        let line: Vec<u8> = self.line_buffer.drain(..=pos).collect();
                        if let LineOutcome::Done = self.handle_line(&line)? {
                            self.finish_text();
                            break;
                        }
                    }
                }
            }
        }
    }

    /// Send the request; wait for the response headers within the first-token budget.
    async fn open(&mut self) -> Result<(), ResponderError> {
        let Some(request) = self.request.take() else {
            self.finished = true;
            return Ok(());
        };
        let wait = self
            .first_token_deadline
            .saturating_duration_since(Instant::now());
        let response = match tokio::time::timeout(wait, request.send()).await {
            Err(_) => return Err(self.timeout_error("response headers", self.first_token_timeout)),
            Ok(Err(e)) => {
                return Err(ResponderError::Transport {
                    endpoint: self.endpoint.clone(),
                    detail: e.to_string(),
                });
            }
            Ok(Ok(response)) => response,
        };
        let status = response.status();
        if !status.is_success() {
            let body = tokio::time::timeout(Duration::from_secs(2), response.text())
                .await
                .ok()
                .and_then(Result::ok)
                .unwrap_or_default();
            return Err(ResponderError::HttpStatus {
                endpoint: self.endpoint.clone(),
                status: status.as_u16(),
                body_excerpt: excerpt(&body),
            });
        }
        self.body = Some(Box::pin(response.bytes_stream()));
        Ok(())
    }

    fn finish_text(&mut self) {
        self.ready.extend(self.splitter.finish());
        self.finished = true;
    }

    fn handle_line(&mut self, raw: &[u8]) -> Result<LineOutcome, ResponderError> {
        let endpoint = self.endpoint.clone();
        let malformed = |detail: String| ResponderError::MalformedChunk {
            endpoint: endpoint.clone(),
            detail,
        };
        let line = std::str::from_utf8(raw)
            .map_err(|_| malformed("stream line is not UTF-8".to_string()))?
            .trim_end_matches(['\r', '\n']);
        // SSE: blank lines separate events; ':' starts a comment; only `data:` carries JSON.
        let Some(data) = line.strip_prefix("data:") else {
            return Ok(LineOutcome::Continue);
        };
        let data = data.trim();
        if data == "[DONE]" {
            return Ok(LineOutcome::Done);
        }
        if data.is_empty() {
            return Ok(LineOutcome::Continue);
        }
        let chunk: Value = serde_json::from_str(data)
            .map_err(|e| malformed(format!("{e} in {:?}", excerpt(data))))?;
        if let Some(error) = chunk.get("error") {
            return Err(malformed(format!(
                "provider error {}",
                excerpt(&error.to_string())
            )));
        }
        let Some(choices) = chunk.get("choices").and_then(Value::as_array) else {
            return Err(malformed(format!(
                "no `choices` array in {:?}",
                excerpt(data)
            )));
        };
        for choice in choices {
            match choice.pointer("/delta/content") {
                None | Some(Value::Null) => {}
                Some(Value::String(text)) => {
                    if !text.is_empty() {
                        self.got_token = true;
                        let sentences = self.splitter.push(text);
                        self.ready.extend(sentences);
                    }
                }
                Some(other) => {
                    return Err(malformed(format!(
                        "`delta.content` is not a string: {}",
                        excerpt(&other.to_string())
                    )));
                }
            }
        }
        Ok(LineOutcome::Continue)
    }
}

/// The first 200 characters, for error messages.
fn excerpt(text: &str) -> String {
    let mut out: String = text.chars().take(200).collect();
    if text.chars().count() > 200 {
        out.push('…');
    }
    out
}

//! Typed, validated configuration built from `(name, value)` pairs.
//!
//! [`Config::from_vars`] never reads the process environment itself: the binary collects the pairs
//! (process environment over an optional `.env` file, see [`collect_vars`]) and tests pass their own
//! list. Every invalid value is a [`ConfigError`] naming the variable; the binary exits with code 2.
//! An empty value counts as unset (the usual `.env` idiom `NAME=`).

use std::collections::BTreeMap;
use std::fmt;
use std::net::{Ipv4Addr, SocketAddr};
use std::path::{Path, PathBuf};
use std::time::Duration;

use twilio_stream::url::PublicBaseUrl;

/// A configuration value that must never be printed: `Debug` and `Display` show `<redacted>`.
#[derive(Clone, PartialEq, Eq)]
pub struct Secret(String);

impl Secret {
    /// Wraps a secret value.
    pub fn new(value: impl Into<String>) -> Self {
        Self(value.into())
    }

    /// The secret itself, for the one place that needs it (HMAC key, `Authorization` header).
    pub fn expose(&self) -> &str {
        &self.0
    }
}

impl fmt::Debug for Secret {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("Secret(<redacted>)")
    }
}

impl fmt::Display for Secret {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("<redacted>")
    }
}

/// A configuration value was invalid; the message names the variable and says what is accepted.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum ConfigError {
    /// One variable has a value that cannot be used.
    #[error("{variable}: {reason}")]
    Invalid {
        /// The environment variable at fault.
        variable: &'static str,
        /// What is wrong and what is accepted (never contains a secret value).
        reason: String,
    },
    /// The `.env` file exists but cannot be read or parsed.
    #[error(
        ".env file {path}: {reason} (fix or remove the file; process environment variables still apply)"
    )]
    DotEnv {
        /// The file that failed.
        path: PathBuf,
        /// The parser's explanation.
        reason: String,
    },
}

impl ConfigError {
    fn invalid(variable: &'static str, reason: impl Into<String>) -> Self {
        Self::Invalid {
            variable,
            reason: reason.into(),
        }
    }

    /// The variable at fault, when the error is about one variable.
    pub fn variable(&self) -> Option<&'static str> {
        match self {
            Self::Invalid { variable, .. } => Some(variable),
            Self::DotEnv { .. } => None,
        }
    }
}

/// Log output format (`LOG_FORMAT`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum LogFormat {
    /// Human-readable lines (default).
    Text,
    /// One JSON object per line.
    Json,
}

/// Which responder answers the caller (`RESPONDER`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ResponderKind {
    /// The built-in or file-based script; works offline (default).
    Scripted,
    /// An OpenAI-compatible chat-completions endpoint.
    Llm,
}

/// How WhatsApp messages are sent (`WHATSAPP_PROVIDER`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum WhatsAppProviderKind {
    /// Twilio's Messages API (default).
    Twilio,
    /// A separate WhatsApp Web bridge process reached over HTTP.
    Bridge,
}

/// HTTP server settings.
#[derive(Debug, Clone)]
pub struct ServerSettings {
    /// `PORT` (default 8080; `0` = an ephemeral port). crmd binds `0.0.0.0:$PORT`.
    pub port: u16,
    /// `PUBLIC_BASE_URL`: when unset, derived per request from `X-Forwarded-Proto` + `Host`.
    pub public_base_url: Option<PublicBaseUrl>,
    /// `DEPLOY_ID`: shown by `/version` and in `X-App-Signature`.
    pub deploy_id: Option<String>,
    /// `MAX_BODY_BYTES` (default 64 KiB): larger request bodies get `413`.
    pub max_body_bytes: usize,
    /// `SHUTDOWN_GRACE_S` (default 20): how long live calls may run on after SIGTERM.
    pub shutdown_grace: Duration,
    /// `MAX_CALLS` (unset: no cap): concurrent calls answered; the next ones are refused with a
    /// busy signal (`<Reject reason="busy"/>`, not billed) and recorded as `busy`.
    pub max_calls: Option<usize>,
    /// `OVERLOAD_LAG_MS` (default 10; `0` turns the check off): new calls are refused the same
    /// way while the async runtime runs its timers later than this on average (the machine is
    /// saturated and every call's audio is late already).
    pub overload_lag: Option<Duration>,
    /// `LOG_FORMAT` (`text` | `json`).
    pub log_format: LogFormat,
    /// `RUST_LOG` filter directives (default `info`); validated by the binary.
    pub log_filter: String,
}

impl ServerSettings {
    /// `0.0.0.0:$PORT`.
    pub fn bind_addr(&self) -> SocketAddr {
        SocketAddr::from((Ipv4Addr::UNSPECIFIED, self.port))
    }
}

/// Twilio account settings.
#[derive(Debug, Clone)]
pub struct TwilioSettings {
    /// `TWILIO_ACCOUNT_SID` (`AC…`).
    pub account_sid: Option<String>,
    /// `TWILIO_AUTH_TOKEN`: when set, every Twilio webhook must carry a valid `X-Twilio-Signature`.
    pub auth_token: Option<Secret>,
    /// `TWILIO_API_BASE` (default `https://api.twilio.com`), without a trailing slash.
    pub api_base: String,
    /// `TWILIO_WHATSAPP_FROM` (`whatsapp:+E164` or `+E164`).
    pub whatsapp_from: Option<String>,
}

/// Google speech settings (the speech crate turns these into its client configs).
#[derive(Debug, Clone)]
pub struct SpeechSettings {
    /// `GOOGLE_APPLICATION_CREDENTIALS`: path of a service-account JSON file.
    pub application_credentials_path: Option<PathBuf>,
    /// `GCP_CREDENTIALS_JSON`: the whole service-account JSON on one line.
    pub credentials_json: Option<Secret>,
    /// `GOOGLE_SPEECH_ENDPOINT` (default `https://speech.googleapis.com`).
    pub speech_endpoint: String,
    /// `GOOGLE_TTS_ENDPOINT` (default `https://texttospeech.googleapis.com`).
    pub tts_endpoint: String,
    /// `STT_LANGUAGE` (default `he-IL`).
    pub stt_language: String,
    /// `STT_ALT_LANGUAGES` (comma list, default empty).
    pub stt_alt_languages: Vec<String>,
    /// `STT_MODEL` (Google's default when unset).
    pub stt_model: Option<String>,
    /// `STT_PHRASE_HINTS` (comma list).
    pub stt_phrase_hints: Vec<String>,
    /// `STT_STREAMS_PER_CONNECTION` (default 100, 1..=1000): concurrent recognition streams on
    /// one HTTP/2 connection to Google before another connection is opened.
    pub stt_streams_per_connection: usize,
    /// `TTS_VOICE` (default `he-IL-Wavenet-A`).
    pub tts_voice: String,
    /// `TTS_LANGUAGE` (default: the voice's language, e.g. `he-IL`).
    pub tts_language: String,
    /// `TTS_SPEAKING_RATE` (default 1.0, 0.25..=4.0).
    pub tts_speaking_rate: f64,
    /// `TTS_STREAMING` (default false).
    pub tts_streaming: bool,
    /// `TTS_STREAMS_PER_CONNECTION` (default 100, 1..=1000): synthesis requests in flight on
    /// one HTTP/2 connection to Google before another connection is opened.
    pub tts_streams_per_connection: usize,
}

impl SpeechSettings {
    /// True when one of the two credential variables is set.
    pub fn has_credentials(&self) -> bool {
        self.application_credentials_path.is_some() || self.credentials_json.is_some()
    }

    /// True when both speech endpoints are plaintext `http://` (a local speech proxy or
    /// stand-in), where credentials are optional.
    pub fn plaintext_endpoints(&self) -> bool {
        self.speech_endpoint.starts_with("http://") && self.tts_endpoint.starts_with("http://")
    }

    /// True when calls get the live agent rather than the offline fallback.
    pub fn live_calls(&self) -> bool {
        self.has_credentials() || self.plaintext_endpoints()
    }
}

/// Turn-taking timings.
#[derive(Debug, Clone)]
pub struct TurnSettings {
    /// `EOU_MS` (default 500, 300..=600): silence that ends the caller's utterance.
    pub eou_ms: u32,
    /// `SPEECH_START_MS` (default 100): voiced audio needed to count as speech.
    pub speech_start_ms: u32,
    /// `BARGE_IN_MS` (default 150): caller speech that interrupts the agent.
    pub barge_in_ms: u32,
    /// `IDLE_MS` (default 8000): silence before a reprompt.
    pub idle_ms: u32,
    /// `MAX_REPROMPTS` (default 2): reprompts before saying goodbye.
    pub max_reprompts: u32,
    /// `PROTECT_GREETING` (default false): the greeting cannot be interrupted.
    pub protect_greeting: bool,
    /// `MEDIA_OUT_CHUNK_MS` (default 20, a multiple of 20 up to 200): agent audio per outbound
    /// `media` message. 20 ms is what Twilio sends us; 60-100 ms cuts the server's socket
    /// writes (and Twilio's reads) 3-5x per call at no cost in barge-in latency (`clear`
    /// drops whatever Twilio has queued).
    pub media_out_chunk_ms: u32,
    /// `MEDIA_OUT_BURST_MS` (default 100, a multiple of 20 up to 200): agent audio written to
    /// the socket at once. The messages due within it leave together (each still
    /// `MEDIA_OUT_CHUNK_MS` long): one socket write and one wake-up per burst instead of per
    /// message. 20 writes every message on its own deadline.
    pub media_out_burst_ms: u32,
}

/// Responder settings.
#[derive(Debug, Clone)]
pub struct ResponderSettings {
    /// `RESPONDER` (`scripted` | `llm`, default scripted).
    pub kind: ResponderKind,
    /// `RESPONDER_SCRIPT`: a script file replacing the built-in one.
    pub script_path: Option<PathBuf>,
    /// `LLM_BASE_URL` (required when `RESPONDER=llm`).
    pub llm_base_url: Option<String>,
    /// `LLM_API_KEY`.
    pub llm_api_key: Option<Secret>,
    /// `LLM_MODEL` (required when `RESPONDER=llm`).
    pub llm_model: Option<String>,
    /// `LLM_SYSTEM_PROMPT_FILE`.
    pub llm_system_prompt_file: Option<PathBuf>,
    /// `LLM_TIMEOUT_MS` (default 10000).
    pub llm_timeout: Duration,
}

/// WhatsApp settings.
#[derive(Debug, Clone)]
pub struct WhatsAppSettings {
    /// `WHATSAPP_PROVIDER` (`twilio` | `bridge`, default twilio).
    pub provider: WhatsAppProviderKind,
    /// `WHATSAPP_BRIDGE_URL` (required when the provider is `bridge`).
    pub bridge_url: Option<String>,
    /// `WHATSAPP_BRIDGE_CMD`: a command crmd supervises as the bridge process.
    pub bridge_cmd: Option<String>,
}

/// The whole validated configuration. `Debug` never shows a secret.
#[derive(Debug, Clone)]
pub struct Config {
    /// HTTP server.
    pub server: ServerSettings,
    /// `DATABASE_URL` (default `sqlite://data/crmd.sqlite`).
    pub database_url: Secret,
    /// `RECORDINGS_DIR` (default `data/recordings`): where each call is recorded (spooled as
    /// `<CallSid>.wav`, then `<CallSid>.ogg` by default). `None` when the variable is set to an empty value: calls are not recorded.
    pub recordings_dir: Option<PathBuf>,
    /// `RECORDING_FORMAT` (`opus`, the default, or `wav`): what a call's WAV spool becomes
    /// after the call, encoded to `<CallSid>.ogg` or kept as it is.
    pub recording_format: crm::recording::RecordingFormat,
    /// `CRMD_API_TOKEN`: bearer token for `/api/*`.
    pub api_token: Option<Secret>,
    /// Twilio.
    pub twilio: TwilioSettings,
    /// Google speech.
    pub speech: SpeechSettings,
    /// Turn-taking.
    pub turn: TurnSettings,
    /// Responder.
    pub responder: ResponderSettings,
    /// WhatsApp.
    pub whatsapp: WhatsAppSettings,
}

/// Default `DATABASE_URL`.
pub const DEFAULT_DATABASE_URL: &str = "sqlite://data/crmd.sqlite";
/// Default `RECORDINGS_DIR`.
pub const DEFAULT_RECORDINGS_DIR: &str = "data/recordings";
/// Default `MAX_BODY_BYTES` (64 KiB; Twilio's largest webhook forms are a few KiB).
pub const DEFAULT_MAX_BODY_BYTES: usize = 64 * 1024;

/// Collects the variables the binary should see: those of `dotenv_path` (when the file exists)
/// overridden by `process_vars`. A missing file is not an error.
pub fn collect_vars(
    dotenv_path: &Path,
    process_vars: impl IntoIterator<Item = (String, String)>,
) -> Result<Vec<(String, String)>, ConfigError> {
    let mut merged = BTreeMap::new();
    if dotenv_path.exists() {
        let dotenv_error = |e: dotenvy::Error| ConfigError::DotEnv {
            path: dotenv_path.to_path_buf(),
            reason: describe_dotenv_error(&e),
        };
        for item in dotenvy::from_path_iter(dotenv_path).map_err(dotenv_error)? {
            let (key, value) = item.map_err(dotenv_error)?;
            merged.insert(key, value);
        }
    }
    merged.extend(process_vars);
    Ok(merged.into_iter().collect())
}

/// dotenvy's parse errors quote the whole offending line, which may hold a secret value: name only
/// the variable.
fn describe_dotenv_error(e: &dotenvy::Error) -> String {
    match e {
        dotenvy::Error::LineParse(line, column) => {
            let name: String = line
                .split('=')
                .next()
                .unwrap_or_default()
                .trim()
                .trim_start_matches("export ")
                .chars()
                .filter(|c| c.is_ascii_alphanumeric() || *c == '_')
                .take(64)
                .collect();
            format!("the line for {name} cannot be parsed (near character {column}; check quotes)")
        }
        other => other.to_string(),
    }
}

struct Vars(BTreeMap<String, String>);

impl Vars {
    fn get(&self, name: &str) -> Option<&str> {
        self.0.get(name).map(|v| v.trim()).filter(|v| !v.is_empty())
    }

    fn string(&self, name: &str) -> Option<String> {
        self.get(name).map(str::to_owned)
    }

    fn string_or(&self, name: &str, default: &str) -> String {
        self.get(name).unwrap_or(default).to_owned()
    }

    fn secret(&self, name: &str) -> Option<Secret> {
        self.get(name).map(Secret::new)
    }

    fn number<T>(
        &self,
        name: &'static str,
        default: T,
        range: std::ops::RangeInclusive<T>,
    ) -> Result<T, ConfigError>
    where
        T: std::str::FromStr + PartialOrd + fmt::Display + Copy,
    {
        let Some(raw) = self.get(name) else {
            return Ok(default);
        };
        let value: T = raw.parse().map_err(|_| {
            ConfigError::invalid(
                name,
                format!(
                    "{raw:?} is not a number (expected {}..={})",
                    range.start(),
                    range.end()
                ),
            )
        })?;
        if !range.contains(&value) {
            return Err(ConfigError::invalid(
                name,
                format!(
                    "{value} is out of range (expected {}..={})",
                    range.start(),
                    range.end()
                ),
            ));
        }
        Ok(value)
    }

    fn boolean(&self, name: &'static str, default: bool) -> Result<bool, ConfigError> {
        let Some(raw) = self.get(name) else {
            return Ok(default);
        };
        match raw.to_ascii_lowercase().as_str() {
            "1" | "true" | "yes" | "on" => Ok(true),
            "0" | "false" | "no" | "off" => Ok(false),
            _ => Err(ConfigError::invalid(
                name,
                format!("{raw:?} is not a boolean (use true or false)"),
            )),
        }
    }

    fn list(&self, name: &str) -> Vec<String> {
        self.get(name)
            .map(|raw| {
                raw.split(',')
                    .map(str::trim)
                    .filter(|s| !s.is_empty())
                    .map(str::to_owned)
                    .collect()
            })
            .unwrap_or_default()
    }

    fn http_url(&self, name: &'static str) -> Result<Option<String>, ConfigError> {
        let Some(raw) = self.get(name) else {
            return Ok(None);
        };
        validate_http_url(name, raw)?;
        Ok(Some(raw.trim_end_matches('/').to_owned()))
    }

    fn existing_file(&self, name: &'static str) -> Result<Option<PathBuf>, ConfigError> {
        let Some(raw) = self.get(name) else {
            return Ok(None);
        };
        let path = PathBuf::from(raw);
        if !path.is_file() {
            return Err(ConfigError::invalid(
                name,
                format!("{} does not exist or is not a file", path.display()),
            ));
        }
        Ok(Some(path))
    }
}

fn validate_http_url(name: &'static str, raw: &str) -> Result<(), ConfigError> {
    let rest = raw
        .strip_prefix("https://")
        .or_else(|| raw.strip_prefix("http://"))
        .ok_or_else(|| {
            ConfigError::invalid(name, format!("{raw:?} must start with https:// or http://"))
        })?;
    let host = rest.split(['/', '?', '#']).next().unwrap_or_default();
    if host.is_empty() || host.contains(char::is_whitespace) {
        return Err(ConfigError::invalid(name, format!("{raw:?} has no host")));
    }
    Ok(())
}

fn validate_language_tag(name: &'static str, tag: &str) -> Result<(), ConfigError> {
    let ok = !tag.is_empty()
        && tag.len() <= 35
        && tag
            .split('-')
            .all(|part| !part.is_empty() && part.chars().all(|c| c.is_ascii_alphanumeric()));
    if ok {
        Ok(())
    } else {
        Err(ConfigError::invalid(
            name,
            format!("{tag:?} is not a BCP-47 language code like he-IL"),
        ))
    }
}

impl Config {
    /// Builds and validates the configuration from `(name, value)` pairs; unknown names are ignored.
    pub fn from_vars(
        vars: impl IntoIterator<Item = (String, String)>,
    ) -> Result<Self, ConfigError> {
        let vars = Vars(vars.into_iter().collect());
        Ok(Self {
            server: server_settings(&vars)?,
            database_url: database_url(&vars)?,
            recordings_dir: recordings_dir(&vars),
            recording_format: recording_format(&vars)?,
            api_token: vars.secret("CRMD_API_TOKEN"),
            twilio: twilio_settings(&vars)?,
            speech: speech_settings(&vars)?,
            turn: turn_settings(&vars)?,
            responder: responder_settings(&vars)?,
            whatsapp: whatsapp_settings(&vars)?,
        })
    }

    /// One line describing the configuration, secrets redacted, naming the parts that are off.
    pub fn summary_line(&self) -> String {
        let s = &self.server;
        let mut parts = vec![
            format!("port={}", s.port),
            format!(
                "public_base_url={}",
                s.public_base_url
                    .as_ref()
                    .map(|u| u.https("/"))
                    .unwrap_or_else(|| "(from X-Forwarded-Proto/Host)".to_owned())
            ),
            format!("deploy_id={}", s.deploy_id.as_deref().unwrap_or("(unset)")),
            format!(
                "database={}",
                redact_database_url(self.database_url.expose())
            ),
            match &self.recordings_dir {
                Some(dir) => format!(
                    "recordings={} ({})",
                    dir.display(),
                    self.recording_format.as_str()
                ),
                None => "recordings=OFF (RECORDINGS_DIR is empty)".to_owned(),
            },
            format!("max_body_bytes={}", s.max_body_bytes),
            format!("shutdown_grace_s={}", s.shutdown_grace.as_secs()),
        ];
        parts.push(match &self.twilio.auth_token {
            Some(_) => "twilio_signatures=on (TWILIO_AUTH_TOKEN redacted)".to_owned(),
            None => "twilio_signatures=OFF (no TWILIO_AUTH_TOKEN)".to_owned(),
        });
        parts.push(format!("twilio_api_base={}", self.twilio.api_base));
        let sp = &self.speech;
        parts.push(if sp.has_credentials() {
            format!(
                "speech: stt={} tts={} ({})",
                sp.stt_language,
                sp.tts_voice,
                if sp.application_credentials_path.is_some() {
                    "GOOGLE_APPLICATION_CREDENTIALS"
                } else {
                    "GCP_CREDENTIALS_JSON redacted"
                }
            )
        } else if sp.plaintext_endpoints() {
            format!(
                "speech: stt={} tts={} (plaintext endpoints {} and {}, no credentials)",
                sp.stt_language, sp.tts_voice, sp.speech_endpoint, sp.tts_endpoint
            )
        } else {
            "speech: no Google credentials, calls will get the offline fallback".to_owned()
        });
        let t = &self.turn;
        parts.push(format!(
            "turn: eou_ms={} barge_in_ms={} idle_ms={} max_reprompts={}",
            t.eou_ms, t.barge_in_ms, t.idle_ms, t.max_reprompts
        ));
        parts.push(match self.responder.kind {
            ResponderKind::Scripted => format!(
                "responder=scripted ({})",
                self.responder
                    .script_path
                    .as_ref()
                    .map(|p| p.display().to_string())
                    .unwrap_or_else(|| "built-in script".to_owned())
            ),
            ResponderKind::Llm => format!(
                "responder=llm model={} base={}",
                self.responder.llm_model.as_deref().unwrap_or("?"),
                self.responder.llm_base_url.as_deref().unwrap_or("?")
            ),
        });
        parts.push(match self.whatsapp.provider {
            WhatsAppProviderKind::Twilio => format!(
                "whatsapp=twilio from={}",
                self.twilio
                    .whatsapp_from
                    .as_deref()
                    .unwrap_or("(unset: sending off)")
            ),
            WhatsAppProviderKind::Bridge => format!(
                "whatsapp=bridge url={}",
                self.whatsapp.bridge_url.as_deref().unwrap_or("?")
            ),
        });
        parts.push(
            if self.api_token.is_some() {
                "api=/api/* bearer token set (redacted)"
            } else {
                "api=/api/* OFF (no CRMD_API_TOKEN)"
            }
            .to_owned(),
        );
        format!("configuration: {}", parts.join(" | "))
    }
}

/// Replaces the password of a `scheme://user:password@host/…` URL with `***`.
pub fn redact_database_url(url: &str) -> String {
    let Some((scheme, rest)) = url.split_once("://") else {
        return url.to_owned();
    };
    let authority_end = rest.find('/').unwrap_or(rest.len());
    let (authority, tail) = rest.split_at(authority_end);
    match authority.rsplit_once('@') {
        Some((userinfo, host)) => {
            let user = userinfo.split(':').next().unwrap_or_default();
            if userinfo.contains(':') {
                format!("{scheme}://{user}:***@{host}{tail}")
            } else {
                format!("{scheme}://{user}@{host}{tail}")
            }
        }
        None => url.to_owned(),
    }
}

fn server_settings(vars: &Vars) -> Result<ServerSettings, ConfigError> {
    let port = vars.number("PORT", 8080u16, 0..=u16::MAX)?;
    let public_base_url = match vars.get("PUBLIC_BASE_URL") {
        Some(raw) => Some(PublicBaseUrl::parse(raw).map_err(|e| {
            ConfigError::invalid(
                "PUBLIC_BASE_URL",
                format!("{raw:?}: {e} (expected e.g. https://ai-crmd.replit.app)"),
            )
        })?),
        None => None,
    };
    let deploy_id = vars.string("DEPLOY_ID");
    if let Some(id) = &deploy_id
        && (id.len() > 128 || !id.chars().all(|c| c.is_ascii_graphic()))
    {
        return Err(ConfigError::invalid(
            "DEPLOY_ID",
            "must be at most 128 visible ASCII characters without spaces (it goes into a response header)",
        ));
    }
    let max_body_bytes = vars.number(
        "MAX_BODY_BYTES",
        DEFAULT_MAX_BODY_BYTES,
        1024..=16 * 1024 * 1024,
    )?;
    let grace_s = vars.number("SHUTDOWN_GRACE_S", 20u64, 0..=3600)?;
    let log_format = match vars
        .get("LOG_FORMAT")
        .map(str::to_ascii_lowercase)
        .as_deref()
    {
        None | Some("text") => LogFormat::Text,
        Some("json") => LogFormat::Json,
        Some(other) => {
            return Err(ConfigError::invalid(
                "LOG_FORMAT",
                format!("{other:?} is not supported (use text or json)"),
            ));
        }
    };
    Ok(ServerSettings {
        port,
        public_base_url,
        deploy_id,
        max_body_bytes,
        shutdown_grace: Duration::from_secs(grace_s),
        max_calls: match vars.get("MAX_CALLS") {
            Some(_) => Some(vars.number("MAX_CALLS", 0usize, 1..=1_000_000)?),
            None => None,
        },
        overload_lag: match vars.number("OVERLOAD_LAG_MS", 10u64, 0..=10_000)? {
            0 => None,
            ms => Some(Duration::from_millis(ms)),
        },
        log_format,
        log_filter: vars.string_or("RUST_LOG", "info"),
    })
}

fn database_url(vars: &Vars) -> Result<Secret, ConfigError> {
    let url = vars.string_or("DATABASE_URL", DEFAULT_DATABASE_URL);
    let supported = ["sqlite:", "postgres://", "postgresql://"];
    if !supported.iter().any(|p| url.starts_with(p)) {
        return Err(ConfigError::invalid(
            "DATABASE_URL",
            format!(
                "{} is not supported (use sqlite://PATH or postgres://USER:PASSWORD@HOST/DB)",
                redact_database_url(&url)
            ),
        ));
    }
    Ok(Secret::new(url))
}

/// Unlike other variables, an empty `RECORDINGS_DIR` is not "unset": it turns recording off.
fn recordings_dir(vars: &Vars) -> Option<PathBuf> {
    match vars.0.get("RECORDINGS_DIR").map(|v| v.trim()) {
        None => Some(PathBuf::from(DEFAULT_RECORDINGS_DIR)),
        Some("") => None,
        Some(dir) => Some(PathBuf::from(dir)),
    }
}

fn recording_format(vars: &Vars) -> Result<crm::recording::RecordingFormat, ConfigError> {
    match vars.string("RECORDING_FORMAT") {
        None => Ok(crm::recording::RecordingFormat::default()),
        Some(value) => crm::recording::RecordingFormat::parse(&value).ok_or_else(|| {
            ConfigError::invalid(
                "RECORDING_FORMAT",
                "must be `opus` (encode each call's recording after it) or `wav` (keep the stereo mu-law WAV)",
            )
        }),
    }
}

fn twilio_settings(vars: &Vars) -> Result<TwilioSettings, ConfigError> {
    let account_sid = vars.string("TWILIO_ACCOUNT_SID");
    if let Some(sid) = &account_sid
        && !(sid.starts_with("AC")
            && sid.len() == 34
            && sid.chars().all(|c| c.is_ascii_alphanumeric()))
    {
        return Err(ConfigError::invalid(
            "TWILIO_ACCOUNT_SID",
            "must be AC followed by 32 hex characters (Twilio console, Account Info)",
        ));
    }
    let api_base = vars
        .http_url("TWILIO_API_BASE")?
        .unwrap_or_else(|| "https://api.twilio.com".to_owned());
    let whatsapp_from = vars.string("TWILIO_WHATSAPP_FROM");
    if let Some(from) = &whatsapp_from {
        let number = from.strip_prefix("whatsapp:").unwrap_or(from);
        let digits = number.strip_prefix('+').unwrap_or_default();
        if digits.len() < 6 || digits.len() > 15 || !digits.chars().all(|c| c.is_ascii_digit()) {
            return Err(ConfigError::invalid(
                "TWILIO_WHATSAPP_FROM",
                format!("{from:?} must be an E.164 number like whatsapp:+14155238886"),
            ));
        }
    }
    Ok(TwilioSettings {
        account_sid,
        auth_token: vars.secret("TWILIO_AUTH_TOKEN"),
        api_base,
        whatsapp_from,
    })
}

fn speech_settings(vars: &Vars) -> Result<SpeechSettings, ConfigError> {
    let application_credentials_path = vars
        .string("GOOGLE_APPLICATION_CREDENTIALS")
        .map(PathBuf::from);
    let credentials_json = vars.secret("GCP_CREDENTIALS_JSON");
    if application_credentials_path.is_some() && credentials_json.is_some() {
        return Err(ConfigError::invalid(
            "GCP_CREDENTIALS_JSON",
            "both GOOGLE_APPLICATION_CREDENTIALS and GCP_CREDENTIALS_JSON are set; set exactly one",
        ));
    }
    let stt_language = vars.string_or("STT_LANGUAGE", "he-IL");
    validate_language_tag("STT_LANGUAGE", &stt_language)?;
    let stt_alt_languages = vars.list("STT_ALT_LANGUAGES");
    for tag in &stt_alt_languages {
        validate_language_tag("STT_ALT_LANGUAGES", tag)?;
    }
    if stt_alt_languages.len() > 3 {
        return Err(ConfigError::invalid(
            "STT_ALT_LANGUAGES",
            "Google accepts at most 3 alternative languages",
        ));
    }
    let tts_voice = vars.string_or("TTS_VOICE", "he-IL-Wavenet-A");
    let voice_language: String = tts_voice
        .splitn(3, '-')
        .take(2)
        .collect::<Vec<_>>()
        .join("-");
    let tts_language = vars.string("TTS_LANGUAGE").unwrap_or(voice_language);
    validate_language_tag("TTS_LANGUAGE", &tts_language)
        .map_err(|_| ConfigError::invalid("TTS_LANGUAGE", format!("{tts_language:?} is not a language code like he-IL (set TTS_LANGUAGE or use a voice name like he-IL-Wavenet-A)")))?;
    Ok(SpeechSettings {
        application_credentials_path,
        credentials_json,
        speech_endpoint: vars
            .http_url("GOOGLE_SPEECH_ENDPOINT")?
            .unwrap_or_else(|| "https://speech.googleapis.com".to_owned()),
        tts_endpoint: vars
            .http_url("GOOGLE_TTS_ENDPOINT")?
            .unwrap_or_else(|| "https://texttospeech.googleapis.com".to_owned()),
        stt_language,
        stt_alt_languages,
        stt_model: vars.string("STT_MODEL"),
        stt_phrase_hints: vars.list("STT_PHRASE_HINTS"),
        stt_streams_per_connection: vars.number(
            "STT_STREAMS_PER_CONNECTION",
            100usize,
            1..=1000,
        )?,
        tts_voice,
        tts_language,
        tts_speaking_rate: vars.number("TTS_SPEAKING_RATE", 1.0f64, 0.25..=4.0)?,
        tts_streaming: vars.boolean("TTS_STREAMING", false)?,
        tts_streams_per_connection: vars.number(
            "TTS_STREAMS_PER_CONNECTION",
            100usize,
            1..=1000,
        )?,
    })
}

fn turn_settings(vars: &Vars) -> Result<TurnSettings, ConfigError> {
    Ok(TurnSettings {
        eou_ms: vars.number("EOU_MS", 500u32, 300..=600)?,
        speech_start_ms: vars.number("SPEECH_START_MS", 100u32, 20..=1000)?,
        barge_in_ms: vars.number("BARGE_IN_MS", 150u32, 40..=2000)?,
        idle_ms: vars.number("IDLE_MS", 8000u32, 1000..=120_000)?,
        max_reprompts: vars.number("MAX_REPROMPTS", 2u32, 0..=10)?,
        protect_greeting: vars.boolean("PROTECT_GREETING", false)?,
        media_out_chunk_ms: whole_frames_ms(vars, "MEDIA_OUT_CHUNK_MS", 20)?,
        media_out_burst_ms: whole_frames_ms(vars, "MEDIA_OUT_BURST_MS", 100)?,
    })
}

/// A duration of agent audio in milliseconds: whole 20 ms frames, 20 to 200.
fn whole_frames_ms(vars: &Vars, name: &'static str, default: u32) -> Result<u32, ConfigError> {
    let ms = vars.number(name, default, 20..=200)?;
    if ms % 20 != 0 {
        return Err(ConfigError::invalid(
            name,
            format!("{ms} must be a multiple of 20 (whole 20 ms frames)"),
        ));
    }
    Ok(ms)
}

fn responder_settings(vars: &Vars) -> Result<ResponderSettings, ConfigError> {
    let kind = match vars
        .get("RESPONDER")
        .map(str::to_ascii_lowercase)
        .as_deref()
    {
        None | Some("scripted") => ResponderKind::Scripted,
        Some("llm") => ResponderKind::Llm,
        Some(other) => {
            return Err(ConfigError::invalid(
                "RESPONDER",
                format!("{other:?} is not supported (use scripted or llm)"),
            ));
        }
    };
    let llm_base_url = vars.http_url("LLM_BASE_URL")?;
    let llm_model = vars.string("LLM_MODEL");
    if kind == ResponderKind::Llm {
        if llm_base_url.is_none() {
            return Err(ConfigError::invalid(
                "LLM_BASE_URL",
                "required when RESPONDER=llm (an OpenAI-compatible base URL, e.g. https://api.openai.com/v1)",
            ));
        }
        if llm_model.is_none() {
            return Err(ConfigError::invalid(
                "LLM_MODEL",
                "required when RESPONDER=llm",
            ));
        }
    }
    let timeout_ms = vars.number("LLM_TIMEOUT_MS", 10_000u64, 100..=300_000)?;
    Ok(ResponderSettings {
        kind,
        script_path: vars.existing_file("RESPONDER_SCRIPT")?,
        llm_base_url,
        llm_api_key: vars.secret("LLM_API_KEY"),
        llm_model,
        llm_system_prompt_file: vars.existing_file("LLM_SYSTEM_PROMPT_FILE")?,
        llm_timeout: Duration::from_millis(timeout_ms),
    })
}

fn whatsapp_settings(vars: &Vars) -> Result<WhatsAppSettings, ConfigError> {
    let provider = match vars
        .get("WHATSAPP_PROVIDER")
        .map(str::to_ascii_lowercase)
        .as_deref()
    {
        None | Some("twilio") => WhatsAppProviderKind::Twilio,
        Some("bridge") => WhatsAppProviderKind::Bridge,
        Some(other) => {
            return Err(ConfigError::invalid(
                "WHATSAPP_PROVIDER",
                format!("{other:?} is not supported (use twilio or bridge)"),
            ));
        }
    };
    let bridge_url = vars.http_url("WHATSAPP_BRIDGE_URL")?;
    if provider == WhatsAppProviderKind::Bridge && bridge_url.is_none() {
        return Err(ConfigError::invalid(
            "WHATSAPP_BRIDGE_URL",
            "required when WHATSAPP_PROVIDER=bridge (e.g. http://127.0.0.1:3001)",
        ));
    }
    Ok(WhatsAppSettings {
        provider,
        bridge_url,
        bridge_cmd: vars.string("WHATSAPP_BRIDGE_CMD"),
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn vars(pairs: &[(&str, &str)]) -> Vec<(String, String)> {
        pairs
            .iter()
            .map(|(k, v)| (k.to_string(), v.to_string()))
            .collect()
    }

    fn error_variable(pairs: &[(&str, &str)]) -> &'static str {
        Config::from_vars(vars(pairs))
            .unwrap_err()
            .variable()
            .unwrap()
    }

    #[test]
    fn defaults_match_the_documented_table() {
        let c = Config::from_vars(Vec::new()).unwrap();
        assert_eq!(c.server.port, 8080);
        assert_eq!(c.server.bind_addr().to_string(), "0.0.0.0:8080");
        assert_eq!(c.database_url.expose(), DEFAULT_DATABASE_URL);
        assert_eq!(
            c.recordings_dir.as_deref(),
            Some(Path::new(DEFAULT_RECORDINGS_DIR))
        );
        assert_eq!(c.server.max_body_bytes, 65_536);
        assert_eq!(c.server.shutdown_grace, Duration::from_secs(20));
        assert_eq!(c.server.log_format, LogFormat::Text);
        assert_eq!(c.twilio.api_base, "https://api.twilio.com");
        assert_eq!(c.speech.stt_language, "he-IL");
        assert_eq!(c.speech.tts_voice, "he-IL-Wavenet-A");
        assert_eq!(c.speech.tts_language, "he-IL");
        assert_eq!(c.turn.eou_ms, 500);
        assert_eq!(c.turn.speech_start_ms, 100);
        assert_eq!(c.turn.barge_in_ms, 150);
        assert_eq!(c.turn.idle_ms, 8000);
        assert_eq!(c.turn.max_reprompts, 2);
        assert!(!c.turn.protect_greeting);
        assert_eq!(c.responder.kind, ResponderKind::Scripted);
        assert_eq!(c.whatsapp.provider, WhatsAppProviderKind::Twilio);
        assert!(!c.speech.has_credentials());
    }

    #[test]
    fn empty_values_count_as_unset() {
        let c =
            Config::from_vars(vars(&[("PORT", ""), ("DEPLOY_ID", "  "), ("EOU_MS", "")])).unwrap();
        assert_eq!(c.server.port, 8080);
        assert_eq!(c.server.deploy_id, None);
        assert_eq!(c.turn.eou_ms, 500);
        assert_eq!(c.turn.media_out_chunk_ms, 20);
        assert_eq!(c.turn.media_out_burst_ms, 100);
        assert_eq!(c.server.max_calls, None);
        assert_eq!(c.server.overload_lag, Some(Duration::from_millis(10)));
        let capped =
            Config::from_vars(vars(&[("MAX_CALLS", "500"), ("OVERLOAD_LAG_MS", "0")])).unwrap();
        assert_eq!(capped.server.max_calls, Some(500));
        assert_eq!(capped.server.overload_lag, None);
        let chunked = Config::from_vars(vars(&[
            ("MEDIA_OUT_CHUNK_MS", "100"),
            ("MEDIA_OUT_BURST_MS", "20"),
        ]))
        .unwrap();
        assert_eq!(chunked.turn.media_out_chunk_ms, 100);
        assert_eq!(chunked.turn.media_out_burst_ms, 20);
    }

    #[test]
    fn invalid_values_name_their_variable() {
        assert_eq!(error_variable(&[("PORT", "http")]), "PORT");
        assert_eq!(error_variable(&[("PORT", "70000")]), "PORT");
        assert_eq!(error_variable(&[("EOU_MS", "299")]), "EOU_MS");
        assert_eq!(error_variable(&[("EOU_MS", "601")]), "EOU_MS");
        assert_eq!(
            error_variable(&[("MEDIA_OUT_CHUNK_MS", "50")]),
            "MEDIA_OUT_CHUNK_MS"
        );
        assert_eq!(
            error_variable(&[("MEDIA_OUT_CHUNK_MS", "220")]),
            "MEDIA_OUT_CHUNK_MS"
        );
        assert_eq!(
            error_variable(&[("MEDIA_OUT_BURST_MS", "90")]),
            "MEDIA_OUT_BURST_MS"
        );
        assert_eq!(
            error_variable(&[("MEDIA_OUT_BURST_MS", "0")]),
            "MEDIA_OUT_BURST_MS"
        );
        assert_eq!(error_variable(&[("MAX_CALLS", "0")]), "MAX_CALLS");
        assert_eq!(error_variable(&[("MAX_CALLS", "many")]), "MAX_CALLS");
        assert_eq!(error_variable(&[("LOG_FORMAT", "xml")]), "LOG_FORMAT");
        assert_eq!(
            error_variable(&[("DATABASE_URL", "mysql://x")]),
            "DATABASE_URL"
        );
        assert_eq!(
            error_variable(&[("PUBLIC_BASE_URL", "ftp://x")]),
            "PUBLIC_BASE_URL"
        );
        assert_eq!(error_variable(&[("DEPLOY_ID", "has space")]), "DEPLOY_ID");
        assert_eq!(
            error_variable(&[("TWILIO_ACCOUNT_SID", "XY123")]),
            "TWILIO_ACCOUNT_SID"
        );
        assert_eq!(
            error_variable(&[("TWILIO_API_BASE", "localhost:1")]),
            "TWILIO_API_BASE"
        );
        assert_eq!(
            error_variable(&[("PROTECT_GREETING", "maybe")]),
            "PROTECT_GREETING"
        );
        assert_eq!(
            error_variable(&[("TTS_SPEAKING_RATE", "9")]),
            "TTS_SPEAKING_RATE"
        );
        assert_eq!(error_variable(&[("RESPONDER", "gpt")]), "RESPONDER");
        assert_eq!(error_variable(&[("RESPONDER", "llm")]), "LLM_BASE_URL");
        assert_eq!(
            error_variable(&[("RESPONDER", "llm"), ("LLM_BASE_URL", "http://127.0.0.1:9")]),
            "LLM_MODEL"
        );
        assert_eq!(
            error_variable(&[("RESPONDER_SCRIPT", "/nonexistent/x.toml")]),
            "RESPONDER_SCRIPT"
        );
        assert_eq!(
            error_variable(&[("WHATSAPP_PROVIDER", "bridge")]),
            "WHATSAPP_BRIDGE_URL"
        );
        assert_eq!(
            error_variable(&[("MAX_BODY_BYTES", "10")]),
            "MAX_BODY_BYTES"
        );
        assert_eq!(
            error_variable(&[("STT_ALT_LANGUAGES", "en-US,??")]),
            "STT_ALT_LANGUAGES"
        );
        assert_eq!(
            error_variable(&[
                ("GOOGLE_APPLICATION_CREDENTIALS", "/a.json"),
                ("GCP_CREDENTIALS_JSON", "{}")
            ]),
            "GCP_CREDENTIALS_JSON"
        );
    }

    #[test]
    fn secrets_never_appear_in_debug_or_summary() {
        let c = Config::from_vars(vars(&[
            ("TWILIO_AUTH_TOKEN", "tok-SECRET-1"),
            ("CRMD_API_TOKEN", "api-SECRET-2"),
            ("GCP_CREDENTIALS_JSON", "{\"private_key\":\"pk-SECRET-3\"}"),
            ("LLM_API_KEY", "llm-SECRET-4"),
            (
                "DATABASE_URL",
                "postgres://crmd:pw-SECRET-5@db.example:5432/crmd",
            ),
        ]))
        .unwrap();
        let debug = format!("{c:?}");
        let summary = c.summary_line();
        for text in [&debug, &summary] {
            assert!(!text.contains("SECRET"), "secret leaked: {text}");
        }
        assert!(
            summary.contains("postgres://crmd:***@db.example:5432/crmd"),
            "{summary}"
        );
        assert!(summary.contains("twilio_signatures=on"), "{summary}");
    }

    #[test]
    fn summary_says_which_optional_parts_are_off() {
        let summary = Config::from_vars(Vec::new()).unwrap().summary_line();
        assert!(
            summary.contains("speech: no Google credentials, calls will get the offline fallback"),
            "{summary}"
        );
        assert!(summary.contains("twilio_signatures=OFF"), "{summary}");
        assert!(!summary.contains('\n'));
    }

    #[test]
    fn recordings_dir_default_custom_and_empty_means_off() {
        let c = Config::from_vars(vars(&[("RECORDINGS_DIR", " /var/lib/crmd/rec ")])).unwrap();
        assert_eq!(
            c.recordings_dir.as_deref(),
            Some(Path::new("/var/lib/crmd/rec"))
        );
        assert!(c.summary_line().contains("recordings=/var/lib/crmd/rec"));
        let off = Config::from_vars(vars(&[("RECORDINGS_DIR", "")])).unwrap();
        assert_eq!(off.recordings_dir, None);
        assert!(
            off.summary_line()
                .contains("recordings=OFF (RECORDINGS_DIR is empty)"),
            "{}",
            off.summary_line()
        );
        let default = Config::from_vars(Vec::new()).unwrap().summary_line();
        assert!(default.contains("recordings=data/recordings"), "{default}");
        // From a .env file too: `RECORDINGS_DIR=` turns recording off.
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join(".env");
        std::fs::write(&path, "RECORDINGS_DIR=\n").unwrap();
        let merged = collect_vars(&path, Vec::new()).unwrap();
        assert_eq!(Config::from_vars(merged).unwrap().recordings_dir, None);
    }

    #[test]
    fn recording_format_is_opus_by_default_wav_on_request_and_typos_are_refused() {
        use crm::recording::RecordingFormat;
        let default = Config::from_vars(Vec::new()).unwrap();
        assert_eq!(default.recording_format, RecordingFormat::Opus);
        assert!(
            default
                .summary_line()
                .contains("recordings=data/recordings (opus)")
        );
        for (value, format) in [
            ("wav", RecordingFormat::Wav),
            (" OPUS ", RecordingFormat::Opus),
        ] {
            let c = Config::from_vars(vars(&[("RECORDING_FORMAT", value)])).unwrap();
            assert_eq!(c.recording_format, format, "{value:?}");
        }
        let wav = Config::from_vars(vars(&[("RECORDING_FORMAT", "wav")])).unwrap();
        assert!(wav.summary_line().contains("(wav)"));
        let err = Config::from_vars(vars(&[("RECORDING_FORMAT", "mp3")])).unwrap_err();
        assert!(err.to_string().contains("RECORDING_FORMAT"), "{err}");
        assert!(err.to_string().contains("`wav`"), "{err}");
    }

    #[test]
    fn lists_and_languages_parse() {
        let c = Config::from_vars(vars(&[
            ("STT_ALT_LANGUAGES", "en-US, ar-IL,"),
            ("STT_PHRASE_HINTS", "שלום, booking"),
            ("TTS_VOICE", "en-US-Neural2-C"),
            ("PUBLIC_BASE_URL", "https://ai-crmd.replit.app/"),
            ("TTS_STREAMING", "yes"),
        ]))
        .unwrap();
        assert_eq!(c.speech.stt_alt_languages, ["en-US", "ar-IL"]);
        assert_eq!(c.speech.stt_phrase_hints, ["שלום", "booking"]);
        assert_eq!(c.speech.tts_language, "en-US");
        assert!(c.speech.tts_streaming);
        let base = c.server.public_base_url.unwrap();
        assert_eq!(
            base.https("/webhook/stream_ended"),
            "https://ai-crmd.replit.app/webhook/stream_ended"
        );
    }

    #[test]
    fn dotenv_file_is_overridden_by_process_values() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join(".env");
        std::fs::write(&path, "PORT=9000\nDEPLOY_ID=from-file\n# comment\n").unwrap();
        let merged = collect_vars(&path, vars(&[("DEPLOY_ID", "from-process")])).unwrap();
        let c = Config::from_vars(merged).unwrap();
        assert_eq!(c.server.port, 9000);
        assert_eq!(c.server.deploy_id.as_deref(), Some("from-process"));
        let missing = collect_vars(&dir.path().join("absent.env"), Vec::new()).unwrap();
        assert!(missing.is_empty());
        let broken = dir.path().join("broken.env");
        std::fs::write(&broken, "PORT=9000\nTWILIO_AUTH_TOKEN=\"tok-SECRET\n").unwrap();
        let err = collect_vars(&broken, Vec::new()).unwrap_err().to_string();
        assert!(err.contains("TWILIO_AUTH_TOKEN"), "{err}");
        assert!(!err.contains("SECRET"), "secret leaked: {err}");
    }

    #[test]
    fn the_shipped_env_example_is_valid_and_lists_every_variable() {
        let path = Path::new(env!("CARGO_MANIFEST_DIR")).join("../../.env.example");
        let vars = collect_vars(&path, Vec::new()).unwrap();
        let c = Config::from_vars(vars.clone()).unwrap();
        assert_eq!(c.server.port, 8080);
        let source = include_str!("config.rs")
            .split("#[cfg(test)]")
            .next()
            .unwrap();
        // Every variable this module reads (a quoted upper-case name) appears in .env.example.
        let names: std::collections::BTreeSet<&str> = source
            .split('"')
            .filter(|s| s.len() > 3 && s.chars().all(|c| c.is_ascii_uppercase() || c == '_'))
            .filter(|s| s.contains('_') || *s == "PORT" || *s == "RESPONDER")
            .collect();
        let listed: std::collections::BTreeSet<&str> =
            vars.iter().map(|(k, _)| k.as_str()).collect();
        let missing: Vec<_> = names.iter().filter(|n| !listed.contains(*n)).collect();
        assert!(missing.is_empty(), ".env.example lacks {missing:?}");
    }

    #[test]
    fn database_url_redaction() {
        assert_eq!(
            redact_database_url("sqlite://data/crmd.sqlite"),
            "sqlite://data/crmd.sqlite"
        );
        assert_eq!(
            redact_database_url("postgres://u:p@h/db"),
            "postgres://u:***@h/db"
        );
        assert_eq!(
            redact_database_url("postgres://u@h/db"),
            "postgres://u@h/db"
        );
    }
}

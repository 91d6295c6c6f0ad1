//! Errors at the `speech` crate boundary. Messages tell an operator what to do and never contain
//! key material or bearer tokens.

use std::time::Duration;

/// Why Google credentials could not be loaded. Every message names the environment variable
/// involved; none contains key material.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum CredentialsError {
    /// Both credential variables were set.
    #[error(
        "both GOOGLE_APPLICATION_CREDENTIALS and GCP_CREDENTIALS_JSON are set: unset one of them"
    )]
    BothSet,
    /// The file named by `GOOGLE_APPLICATION_CREDENTIALS` could not be read.
    #[error("GOOGLE_APPLICATION_CREDENTIALS points at {path}, which cannot be read: {source}")]
    Unreadable {
        /// The path that was tried.
        path: String,
        /// The I/O error.
        #[source]
        source: std::io::Error,
    },
    /// The credentials are not a JSON object.
    #[error(
        "{variable} is not valid JSON ({detail}): paste the service-account key file unchanged"
    )]
    InvalidJson {
        /// `GOOGLE_APPLICATION_CREDENTIALS` or `GCP_CREDENTIALS_JSON`.
        variable: &'static str,
        /// Position and kind of the syntax error (never the content).
        detail: String,
    },
    /// A required field is missing or not a string.
    #[error(
        "{variable} has no `{field}` string field: use a service-account key file (\"type\": \"service_account\")"
    )]
    MissingField {
        /// `GOOGLE_APPLICATION_CREDENTIALS` or `GCP_CREDENTIALS_JSON`.
        variable: &'static str,
        /// The missing field, e.g. `private_key` or `client_email`.
        field: &'static str,
    },
    /// `private_key` is not a PEM PKCS#8 RSA key that `ring` accepts.
    #[error(
        "{variable}: `private_key` is not a usable PEM PKCS#8 RSA key ({problem}): download a new key for the service account"
    )]
    InvalidKey {
        /// `GOOGLE_APPLICATION_CREDENTIALS` or `GCP_CREDENTIALS_JSON`.
        variable: &'static str,
        /// What is wrong with the key (never the key itself).
        problem: &'static str,
    },
}

/// Errors from the Speech-to-Text and Text-to-Speech clients.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum SpeechError {
    /// The configured endpoint is not an `http://` or `https://` URL.
    #[error(
        "{variable} = {endpoint:?} is not a usable URL ({problem}): use https://HOST (TLS) or http://HOST:PORT (plaintext h2c)"
    )]
    InvalidEndpoint {
        /// `GOOGLE_SPEECH_ENDPOINT` or `GOOGLE_TTS_ENDPOINT`.
        variable: &'static str,
        /// The configured value.
        endpoint: String,
        /// What is wrong with it.
        problem: String,
    },
    /// An `https://` endpoint was configured without credentials.
    #[error(
        "{endpoint} needs Google credentials: set GOOGLE_APPLICATION_CREDENTIALS or GCP_CREDENTIALS_JSON (or use an http:// endpoint for a local stand-in)"
    )]
    MissingCredentials {
        /// The endpoint that needs them.
        endpoint: String,
    },
    /// A setting is out of range.
    #[error("invalid speech configuration: {problem}")]
    InvalidConfig {
        /// Which setting and why.
        problem: String,
    },
    /// The client was built outside a Tokio runtime.
    #[error("speech clients must be created inside a Tokio runtime")]
    NoRuntime,
    /// Google refused the credentials (UNAUTHENTICATED / PERMISSION_DENIED).
    #[error(
        "{service} refused the credentials ({code}: {message}): check the service account has the Cloud Speech/TTS roles and the API is enabled"
    )]
    Unauthorized {
        /// `Speech-to-Text` or `Text-to-Speech`.
        service: &'static str,
        /// gRPC status code name.
        code: String,
        /// Google's message.
        message: String,
    },
    /// The request was rejected as invalid (INVALID_ARGUMENT and similar).
    #[error(
        "{service} rejected the request ({code}: {message}): check the voice, language and model settings"
    )]
    Rejected {
        /// `Speech-to-Text` or `Text-to-Speech`.
        service: &'static str,
        /// gRPC status code name.
        code: String,
        /// Google's message.
        message: String,
    },
    /// The service could not be reached or failed; retrying later may help.
    #[error("{service} is unavailable ({code}: {message}): check network access to the endpoint")]
    Unavailable {
        /// `Speech-to-Text` or `Text-to-Speech`.
        service: &'static str,
        /// gRPC status code name.
        code: String,
        /// Google's message.
        message: String,
    },
    /// Speech-to-Text kept failing after the configured number of reconnects.
    #[error(
        "Speech-to-Text gave up after {attempts} reconnect attempts over {elapsed:?}; last error: {last}"
    )]
    GaveUp {
        /// Consecutive failed attempts.
        attempts: u32,
        /// Time spent retrying.
        elapsed: Duration,
        /// The last error seen.
        last: String,
    },
    /// Text-to-Speech returned audio that is not 8 kHz mono mu-law WAV.
    #[error(
        "Text-to-Speech returned unusable audio ({problem}): the voice must support MULAW at 8000 Hz"
    )]
    BadAudio {
        /// What is wrong with it.
        problem: String,
    },
    /// The text to synthesize is empty.
    #[error("nothing to synthesize: the text is empty")]
    EmptyText,
}

impl SpeechError {
    /// Classifies a gRPC status from `service` into an operator-facing error.
    pub(crate) fn from_status(service: &'static str, status: &tonic::Status) -> Self {
        use tonic::Code;
        let code = format!("{:?}", status.code());
        let message = status.message().to_owned();
        match status.code() {
            Code::Unauthenticated | Code::PermissionDenied => Self::Unauthorized {
                service,
                code,
                message,
            },
            Code::InvalidArgument
            | Code::FailedPrecondition
            | Code::NotFound
            | Code::OutOfRange => Self::Rejected {
                service,
                code,
                message,
            },
            _ => Self::Unavailable {
                service,
                code,
                message,
            },
        }
    }
}

//! The CRM read API (`GET /api/*`, bearer `CRMD_API_TOKEN`) and [`ApiError`], the JSON error
//! answer shared by every `/api/*` route.
//!
//! Lists are pages, newest first: `{"items": [...], "next_cursor": 123 | null}`; pass
//! `next_cursor` back as `cursor` (or its alias `before`) for the next, older page. `limit` is
//! 1..=200 (default 50). Unknown query parameters are refused with `400` so a typo
//! (`?stauts=completed`) never silently returns everything.

use axum::Json;
use axum::body::Body;
use axum::extract::{Path, RawQuery, Request, State};
use axum::http::header::{CACHE_CONTROL, CONTENT_DISPOSITION, CONTENT_TYPE};
use axum::http::{HeaderValue, StatusCode};
use axum::response::{IntoResponse, Response};
use crm::{CallFilter, CrmError, PageRequest};
use serde::Serialize;
use tower::ServiceExt as _;
use tower_http::services::ServeFile;

use crate::auth::ApiToken;
use crate::server::EdgeState;
use crate::twilio_form::parse_form_pairs;

/// Why an `/api/*` request was refused. Answered as JSON
/// `{"error": "<kind>", "message": "<what to do>"}` (plus `"message_record"` and
/// `"provider_error"` for [`ApiError::ProviderFailed`]). Messages never contain a secret, SQL or
/// a file path on the server.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum ApiError {
    /// `CRMD_API_TOKEN` is not configured: 503.
    #[error("set CRMD_API_TOKEN to enable the API")]
    ApiDisabled,
    /// Missing or wrong bearer token: 401.
    #[error("{0}")]
    Unauthorized(&'static str),
    /// A parameter, path segment or body field is unusable: 400.
    #[error("invalid {field}: {reason}")]
    BadRequest {
        /// Which input (`limit`, `contact`, `to`, `body`, …).
        field: String,
        /// What is accepted.
        reason: String,
    },
    /// The body is larger than `MAX_BODY_BYTES`: 413.
    #[error("request body is larger than {limit} bytes (MAX_BODY_BYTES)")]
    BodyTooLarge {
        /// The configured limit.
        limit: usize,
    },
    /// The thing asked for does not exist: 404.
    #[error("{0}")]
    NotFound(String),
    /// The request conflicts with what is stored (an `Idempotency-Key` reused for another
    /// message): 409.
    #[error("{0}")]
    Conflict(String),
    /// The WhatsApp provider refused or kept failing; the message is stored as `failed`: 502.
    #[error("WhatsApp provider failed: {error}")]
    ProviderFailed {
        /// The stored message (status `failed`, provider error recorded).
        message: Box<crm::Message>,
        /// The provider's error.
        error: crm::whatsapp::ProviderError,
    },
    /// A part this route needs is not configured or not reachable right now (database down,
    /// WhatsApp sending off): 503. The text says what to set or check.
    #[error("{0}")]
    Unavailable(String),
    /// Anything else: 500 (details in the server log only).
    #[error("internal error; see the crmd log")]
    Internal,
}

impl ApiError {
    /// The HTTP status of this error.
    pub fn status(&self) -> StatusCode {
        match self {
            Self::ApiDisabled | Self::Unavailable(_) => StatusCode::SERVICE_UNAVAILABLE,
            Self::Unauthorized(_) => StatusCode::UNAUTHORIZED,
            Self::BadRequest { .. } => StatusCode::BAD_REQUEST,
            Self::BodyTooLarge { .. } => StatusCode::PAYLOAD_TOO_LARGE,
            Self::NotFound(_) => StatusCode::NOT_FOUND,
            Self::Conflict(_) => StatusCode::CONFLICT,
            Self::ProviderFailed { .. } => StatusCode::BAD_GATEWAY,
            Self::Internal => StatusCode::INTERNAL_SERVER_ERROR,
        }
    }

    /// Short machine-readable kind (`"error"` field of the JSON answer).
    pub fn kind(&self) -> &'static str {
        match self {
            Self::ApiDisabled => "api_disabled",
            Self::Unauthorized(_) => "unauthorized",
            Self::BadRequest { .. } => "bad_request",
            Self::BodyTooLarge { .. } => "body_too_large",
            Self::NotFound(_) => "not_found",
            Self::Conflict(_) => "conflict",
            Self::ProviderFailed { .. } => "provider_failed",
            Self::Unavailable(_) => "unavailable",
            Self::Internal => "internal",
        }
    }

    pub(crate) fn bad_request(field: impl Into<String>, reason: impl Into<String>) -> Self {
        Self::BadRequest {
            field: field.into(),
            reason: reason.into(),
        }
    }
}

impl From<CrmError> for ApiError {
    fn from(err: CrmError) -> Self {
        match err {
            CrmError::InvalidInput { field, reason } => Self::bad_request(field, reason),
            CrmError::NotFound { .. } => Self::NotFound(err.to_string()),
            CrmError::Conflict(text) => Self::Conflict(text),
            other if other.http_status() == 503 => {
                tracing::warn!("API request failed, database unavailable: {other}");
                Self::Unavailable(
                    "database unavailable; retry later (the operator should check DATABASE_URL)"
                        .to_owned(),
                )
            }
            other => {
                tracing::error!("API request failed: {other}");
                Self::Internal
            }
        }
    }
}

#[derive(Serialize)]
struct ErrorBody<'a> {
    error: &'static str,
    message: String,
    #[serde(skip_serializing_if = "Option::is_none")]
    provider_error: Option<ProviderErrorBody<'a>>,
    #[serde(skip_serializing_if = "Option::is_none")]
    message_record: Option<&'a crm::Message>,
}

#[derive(Serialize)]
struct ProviderErrorBody<'a> {
    code: Option<&'a str>,
    message: String,
    transient: bool,
}

impl IntoResponse for ApiError {
    fn into_response(self) -> Response {
        let status = self.status();
        if status.is_client_error() {
            tracing::info!(status = status.as_u16(), "API request refused: {self}");
        }
        let (provider_error, message_record) = match &self {
            Self::ProviderFailed { message, error } => (
                Some(ProviderErrorBody {
                    code: error.code(),
                    message: error.to_string(),
                    transient: error.is_transient(),
                }),
                Some(message.as_ref()),
            ),
            _ => (None, None),
        };
        let body = ErrorBody {
            error: self.kind(),
            message: self.to_string(),
            provider_error,
            message_record,
        };
        let mut response = (status, Json(body)).into_response();
        if status == StatusCode::UNAUTHORIZED {
            response.headers_mut().insert(
                axum::http::header::WWW_AUTHENTICATE,
                HeaderValue::from_static("Bearer realm=\"crmd\""),
            );
        }
        response
    }
}

/// Decoded query parameters with the check that only known names were used.
#[derive(Debug)]
struct QueryParams(Vec<(String, String)>);

impl QueryParams {
    fn parse(raw: Option<&str>, accepted: &[&str]) -> Result<Self, ApiError> {
        let pairs = parse_form_pairs(raw.unwrap_or_default().as_bytes())
            .map_err(|e| ApiError::bad_request("query string", e.to_string()))?;
        for (name, _) in &pairs {
            if !accepted.contains(&name.as_str()) {
                return Err(ApiError::bad_request(
                    "query string",
                    format!(
                        "unknown parameter `{}` (accepted: {})",
                        name.chars().take(40).collect::<String>(),
                        accepted.join(", ")
                    ),
                ));
            }
        }
        for name in accepted {
            if pairs.iter().filter(|(n, _)| n == name).count() > 1 {
                return Err(ApiError::bad_request(
                    *name,
                    "given more than once".to_owned(),
                ));
            }
        }
        Ok(Self(pairs))
    }

    fn get(&self, name: &str) -> Option<&str> {
        self.0
            .iter()
            .find(|(n, _)| n == name)
            .map(|(_, v)| v.trim())
            .filter(|v| !v.is_empty())
    }

    /// `limit` and `cursor` (alias `before`).
    fn page(&self) -> Result<PageRequest, ApiError> {
        let cursor = match (self.get("cursor"), self.get("before")) {
            (Some(a), Some(b)) if a != b => {
                return Err(ApiError::bad_request(
                    "cursor",
                    "`cursor` and `before` are the same parameter; give one",
                ));
            }
            (a, b) => a.or(b),
        };
        Ok(PageRequest::parse(self.get("limit"), cursor)?)
    }
}

const PAGE_PARAMS: [&str; 3] = ["limit", "cursor", "before"];

fn accepted(extra: &[&'static str]) -> Vec<&'static str> {
    PAGE_PARAMS.iter().chain(extra).copied().collect()
}

fn store(state: &EdgeState) -> Result<&crm::Store, ApiError> {
    state.store().ok_or_else(|| {
        ApiError::Unavailable("no CRM database is connected to this server".to_owned())
    })
}

/// A phone number from a query string, where form decoding turns a literal `+` into a space.
fn query_phone(field: &str, raw: &str) -> Result<String, ApiError> {
    let restored = if raw.starts_with(|c: char| c.is_ascii_digit() && c != '0') {
        format!("+{raw}")
    } else {
        raw.to_owned()
    };
    twilio_stream::phone::normalize_e164(&restored)
        .map(|p| p.as_str().to_owned())
        .map_err(|e| {
            ApiError::bad_request(field, format!("{e} (expected E.164, e.g. %2B972501234567)"))
        })
}

/// `since` / `until`: unix milliseconds or an RFC 3339 time (`2026-11-24T06:00:00Z`).
fn query_time(field: &str, raw: &str) -> Result<i64, ApiError> {
    if let Ok(ms) = raw.parse::<i64>() {
        return Ok(ms);
    }
    // A `+01:00` offset arrives as ` 01:00` after form decoding.
    let repaired = match raw.rsplit_once(' ') {
        Some((head, tail)) if tail.len() == 5 && tail.as_bytes()[2] == b':' => {
            format!("{head}+{tail}")
        }
        _ => raw.to_owned(),
    };
    chrono::DateTime::parse_from_rfc3339(&repaired)
        .map(|t| t.timestamp_millis())
        .map_err(|_| {
            ApiError::bad_request(
                field,
                "expected unix milliseconds or an RFC 3339 time such as 2026-11-24T06:00:00Z",
            )
        })
}

fn positive_id(field: &str, raw: &str) -> Result<i64, ApiError> {
    match raw.trim().parse::<i64>() {
        Ok(id) if id > 0 => Ok(id),
        _ => Err(ApiError::bad_request(
            field,
            format!(
                "expected a positive integer id, got `{}`",
                raw.chars().take(40).collect::<String>()
            ),
        )),
    }
}

/// `GET /api/contacts?limit=&cursor=`: contacts, newest first.
pub async fn list_contacts(
    _token: ApiToken,
    State(state): State<EdgeState>,
    RawQuery(query): RawQuery,
) -> Result<Json<crm::Page<crm::Contact>>, ApiError> {
    let params = QueryParams::parse(query.as_deref(), &accepted(&[]))?;
    let page = params.page()?;
    Ok(Json(store(&state)?.list_contacts(page).await?))
}

/// `GET /api/contacts/{id}`.
pub async fn get_contact(
    _token: ApiToken,
    State(state): State<EdgeState>,
    Path(id): Path<String>,
) -> Result<Json<crm::Contact>, ApiError> {
    let id = positive_id("contact id", &id)?;
    Ok(Json(store(&state)?.get_contact(id).await?))
}

/// `GET /api/calls?contact_id=&from=&status=&since=&until=&limit=&cursor=`: calls, newest first.
pub async fn list_calls(
    _token: ApiToken,
    State(state): State<EdgeState>,
    RawQuery(query): RawQuery,
) -> Result<Json<crm::Page<crm::Call>>, ApiError> {
    let params = QueryParams::parse(
        query.as_deref(),
        &accepted(&["contact_id", "from", "status", "since", "until"]),
    )?;
    let page = params.page()?;
    let filter = CallFilter {
        contact_id: params
            .get("contact_id")
            .map(|v| positive_id("contact_id", v))
            .transpose()?,
        from: params
            .get("from")
            .map(|v| query_phone("from", v))
            .transpose()?,
        status: params.get("status").map(str::to_owned),
        since_ms: params
            .get("since")
            .map(|v| query_time("since", v))
            .transpose()?,
        until_ms: params
            .get("until")
            .map(|v| query_time("until", v))
            .transpose()?,
    };
    Ok(Json(store(&state)?.list_calls(&filter, page).await?))
}

/// `GET /api/calls/{call_sid}`: the call with its transcript turns, stream events and recording.
pub async fn get_call(
    _token: ApiToken,
    State(state): State<EdgeState>,
    Path(call_sid): Path<String>,
) -> Result<Json<crm::CallDetail>, ApiError> {
    Ok(Json(store(&state)?.get_call_with_turns(&call_sid).await?))
}

/// `GET /api/messages?contact=+E164&limit=&cursor=`: the messages exchanged with a contact.
pub async fn list_messages(
    _token: ApiToken,
    State(state): State<EdgeState>,
    RawQuery(query): RawQuery,
) -> Result<Json<crm::Page<crm::Message>>, ApiError> {
    let params = QueryParams::parse(query.as_deref(), &accepted(&["contact"]))?;
    let page = params.page()?;
    let contact = params.get("contact").ok_or_else(|| {
        ApiError::bad_request(
            "contact",
            "required: the contact's number, e.g. ?contact=%2B972501234567",
        )
    })?;
    let phone = query_phone("contact", contact)?;
    Ok(Json(store(&state)?.list_messages(&phone, page).await?))
}

/// `GET /api/tasks?status=open|done&limit=&cursor=`: follow-up tasks from calls (messages left,
/// callbacks booked), newest first; every status when `status` is absent.
pub async fn list_tasks(
    _token: ApiToken,
    State(state): State<EdgeState>,
    RawQuery(query): RawQuery,
) -> Result<Json<crm::Page<crm::Task>>, ApiError> {
    let params = QueryParams::parse(query.as_deref(), &accepted(&["status"]))?;
    let page = params.page()?;
    let status = params
        .get("status")
        .map(crm::TaskStatus::parse)
        .transpose()?;
    Ok(Json(store(&state)?.list_tasks(page, status).await?))
}

/// `POST /api/tasks/{id}/done`: marks a task handled and answers the updated task. Repeating
/// it is harmless (the task stays done).
pub async fn mark_task_done(
    _token: ApiToken,
    State(state): State<EdgeState>,
    Path(id): Path<String>,
) -> Result<Json<crm::Task>, ApiError> {
    let id = positive_id("task id", &id)?;
    Ok(Json(
        store(&state)?
            .set_task_status(id, crm::TaskStatus::Done)
            .await?,
    ))
}

/// `GET /api/calls/{call_sid}/recording`: the call's recording streamed from disk, with
/// `Range` (seeking in an `<audio>` element), `HEAD` and `If-Modified-Since` support: Ogg Opus
/// (`audio/ogg`), or, in the moments after the call before it is encoded, its stereo mu-law
/// WAV spool (`audio/wav`).
pub async fn get_recording(
    _token: ApiToken,
    State(state): State<EdgeState>,
    Path(call_sid): Path<String>,
    request: Request,
) -> Result<Response, ApiError> {
    let store = store(&state)?;
    let mut recording = store.get_recording(&call_sid).await?;
    let mut file = tokio::fs::metadata(&recording.path).await;
    // A spool is deleted right after its encoded file replaces it in the store: one gone
    // between the two reads means the reference has moved, so read it again.
    if recording.codec == crm::recording::RECORDING_SPOOL_CODEC
        && matches!(&file, Err(e) if e.kind() == std::io::ErrorKind::NotFound)
    {
        recording = store.get_recording(&call_sid).await?;
        file = tokio::fs::metadata(&recording.path).await;
    }
    match file {
        Ok(meta) if meta.is_file() => {}
        outcome => {
            // The path is logged for the operator, never sent to the client.
            let problem = match &outcome {
                Ok(_) => "not a regular file".to_owned(),
                Err(e) => e.to_string(),
            };
            tracing::error!(call_sid = %recording.call_sid, path = %recording.path, "recording file cannot be served: {problem}");
            return Err(match outcome {
                Err(e) if e.kind() != std::io::ErrorKind::NotFound => ApiError::Internal,
                _ => ApiError::NotFound(format!(
                    "the recording of call {} is referenced but its file is missing on the server",
                    recording.call_sid
                )),
            });
        }
    }
    let response = match ServeFile::new(&recording.path).oneshot(request).await {
        Ok(response) => response,
        Err(never) => match never {},
    };
    let mut response = response.map(Body::new);
    let headers = response.headers_mut();
    let (media_type, extension) = if recording.codec == crm::recording::RECORDING_SPOOL_CODEC {
        ("audio/wav", "wav")
    } else {
        ("audio/ogg", "ogg")
    };
    // Served by the stored codec whatever the file name says; 416 and 304 answers keep their own.
    if headers.contains_key(CONTENT_TYPE) {
        headers.insert(CONTENT_TYPE, HeaderValue::from_static(media_type));
    }
    // The file changes when the encoded recording replaces the spool: always revalidate.
    headers.insert(CACHE_CONTROL, HeaderValue::from_static("private, no-cache"));
    // The call sid was validated by the store (letters, digits, `_`, `-`): a valid header value.
    if let Ok(disposition) = HeaderValue::from_str(&format!(
        "inline; filename=\"{}.{extension}\"",
        recording.call_sid
    )) {
        headers.insert(CONTENT_DISPOSITION, disposition);
    }
    Ok(response)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn query_parsing_rules() {
        let p = QueryParams::parse(Some("limit=2&before=9"), &accepted(&[])).unwrap();
        assert_eq!(
            p.page().unwrap(),
            PageRequest {
                limit: 2,
                cursor: Some(9)
            }
        );
        assert!(QueryParams::parse(Some("stauts=x"), &accepted(&["status"])).is_err());
        assert!(QueryParams::parse(Some("limit=1&limit=2"), &accepted(&[])).is_err());
        let p = QueryParams::parse(Some("cursor=3&before=4"), &accepted(&[])).unwrap();
        assert!(p.page().is_err());
        assert!(
            QueryParams::parse(Some("limit=0"), &accepted(&[]))
                .unwrap()
                .page()
                .is_err()
        );
    }

    #[test]
    fn phones_and_times_from_query_strings() {
        assert_eq!(
            query_phone("from", "972501234567").unwrap(),
            "+972501234567"
        );
        assert_eq!(
            query_phone("from", "+972501234567").unwrap(),
            "+972501234567"
        );
        assert!(query_phone("from", "abc").is_err());
        assert_eq!(
            query_time("since", "1700000000000").unwrap(),
            1_700_000_000_000
        );
        assert_eq!(
            query_time("since", "2023-11-14T22:13:20Z").unwrap(),
            1_700_000_000_000
        );
        assert_eq!(
            query_time("since", "2023-11-14T23:13:20 01:00").unwrap(),
            1_700_000_000_000
        );
        assert!(query_time("since", "yesterday").is_err());
        assert!(positive_id("id", "0").is_err());
        assert!(positive_id("id", "x").is_err());
        assert_eq!(positive_id("id", "7").unwrap(), 7);
    }
}

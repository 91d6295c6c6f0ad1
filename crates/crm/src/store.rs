//! [`Store`]: the CRM database (SQLite or PostgreSQL through one set of portable queries).
//!
//! Every query is plain SQL with `$N` binds that both SQLite and PostgreSQL accept, run through
//! sqlx's `Any` driver. Writes that can be retried (webhook retries, writer-task retries) are
//! single `INSERT … ON CONFLICT` statements, so a retry never duplicates a row and never needs a
//! read-then-write transaction (which SQLite could refuse with `SQLITE_BUSY`).

use std::path::Path;
use std::time::Duration;

use sqlx::any::{AnyPoolOptions, AnyRow};
use sqlx::migrate::Migrator;
use sqlx::pool::PoolConnection;
use sqlx::{Any, AnyConnection, AnyPool, Row};

use crate::CrmError;
use crate::model::{
    Backend, Call, CallDetail, CallFilter, Contact, Message, MessageDirection, MessageMedia,
    NewCall, NewRecording, NewTask, NewTurn, Page, PageRequest, Recording, Speaker,
    StreamEventRecord, Task, TaskKind, TaskStatus, Turn, is_e164, now_ms,
};

static SQLITE_MIGRATIONS: Migrator = sqlx::migrate!("./migrations/sqlite");
static POSTGRES_MIGRATIONS: Migrator = sqlx::migrate!("./migrations/postgres");

const CONTACT_COLUMNS: &str = "id, phone_e164, display_name, created_at_ms, last_seen_at_ms";
const CALL_COLUMNS: &str = "id, call_sid, account_sid, contact_id, from_number, to_number, \
     direction, status, caller_name, stream_sid, started_at_ms, streaming_at_ms, ended_at_ms, duration_ms";
const MESSAGE_COLUMNS: &str = "id, contact_id, channel, direction, provider, provider_sid, \
     from_address, to_address, body, media_json, status, error_code, error_message, created_at_ms, updated_at_ms";
const TURN_COLUMNS: &str =
    "seq, speaker, text, heard_text, interrupted, started_at_ms, ended_at_ms, latency_json";
const RECORDING_COLUMNS: &str = "call_sid, path, codec, duration_ms, size_bytes, created_at_ms";
const TASK_COLUMNS: &str =
    "id, call_sid, seq, contact_phone, kind, text, preferred_time, status, created_at_ms";
/// Longest task text stored (a message left by voice is far shorter).
const MAX_TASK_TEXT_CHARS: usize = 4_000;

/// Most turns returned for one call (a call of several hours stays far below this).
const MAX_TURNS_PER_CALL: i64 = 10_000;
/// Most stream events returned for one call.
const MAX_STREAM_EVENTS_PER_CALL: i64 = 1_000;

/// Pool and driver settings. [`Store::connect`] uses the defaults.
#[derive(Debug, Clone)]
pub struct StoreOptions {
    /// Pool size (SQLite in-memory databases always use 1).
    pub max_connections: u32,
    /// How long an operation waits for a free connection before failing as unavailable.
    pub acquire_timeout: Duration,
    /// SQLite only: how long a statement waits on a locked database before failing as busy.
    pub sqlite_busy_timeout: Duration,
}

impl Default for StoreOptions {
    fn default() -> Self {
        StoreOptions {
            max_connections: 8,
            acquire_timeout: Duration::from_secs(5),
            sqlite_busy_timeout: Duration::from_secs(5),
        }
    }
}

/// The CRM database. Cheap to clone (a connection pool).
#[derive(Clone)]
pub struct Store {
    pool: AnyPool,
    backend: Backend,
}

impl std::fmt::Debug for Store {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        // Never print the URL: it may carry a password.
        f.debug_struct("Store")
            .field("backend", &self.backend)
            .field("pool_size", &self.pool.size())
            .field("closed", &self.pool.is_closed())
            .finish()
    }
}

/// What [`Store::apply_message_status`] did.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum StatusUpdate {
    Advanced,
    Duplicate,
    IgnoredBackwards,
    UnknownMessage,
}

/// A message to insert.
#[derive(Debug, Clone)]
pub(crate) struct NewMessage<'a> {
    pub contact_id: i64,
    pub direction: MessageDirection,
    pub provider: &'a str,
    pub provider_sid: Option<&'a str>,
    pub idempotency_key: Option<&'a str>,
    pub from: &'a str,
    pub to: &'a str,
    pub body: &'a str,
    pub media: &'a [MessageMedia],
    pub status: &'a str,
    pub status_rank: i64,
    pub at_ms: i64,
}

/// A value bound into a dynamically built query.
enum Bind {
    Int(i64),
    Text(String),
}

impl Store {
    /// Opens `database_url` (`sqlite://data/crmd.sqlite`, `sqlite::memory:`, `postgres://…`),
    /// creating the SQLite file and its directory when missing, switching SQLite to WAL, and
    /// running the embedded migrations.
    pub async fn connect(database_url: &str) -> Result<Store, CrmError> {
        Self::connect_with(database_url, StoreOptions::default()).await
    }

    /// [`Store::connect`] with explicit pool settings.
    pub async fn connect_with(
        database_url: &str,
        options: StoreOptions,
    ) -> Result<Store, CrmError> {
        sqlx::any::install_default_drivers();
        let backend = backend_of(database_url)?;
        let (url, max_connections) = match backend {
            Backend::Sqlite => prepare_sqlite_url(database_url, options.max_connections)?,
            Backend::Postgres => (database_url.to_owned(), options.max_connections),
        };
        let busy_ms = i64::try_from(options.sqlite_busy_timeout.as_millis()).unwrap_or(i64::MAX);
        let pool = AnyPoolOptions::new()
            .max_connections(max_connections.max(1))
            .acquire_timeout(options.acquire_timeout)
            // A SQLite connection is a local file that cannot go stale: no ping (a round trip
            // to its worker thread) before every use. Postgres keeps it, to skip connections
            // a server restart broke.
            .test_before_acquire(backend == Backend::Postgres)
            .after_connect(move |conn, _meta| {
                Box::pin(async move {
                    if backend == Backend::Sqlite {
                        // WAL lets readers (the API) run while the writer task writes.
                        sqlx::query("PRAGMA journal_mode = WAL")
                            .execute(&mut *conn)
                            .await?;
                        sqlx::query("PRAGMA synchronous = NORMAL")
                            .execute(&mut *conn)
                            .await?;
                        sqlx::query("PRAGMA foreign_keys = ON")
                            .execute(&mut *conn)
                            .await?;
                        sqlx::query(&format!("PRAGMA busy_timeout = {busy_ms}"))
                            .execute(&mut *conn)
                            .await?;
                    }
                    Ok(())
                })
            })
            .connect(&url)
            .await
            .map_err(CrmError::Unavailable)?;
        let migrator = match backend {
            Backend::Sqlite => &SQLITE_MIGRATIONS,
            Backend::Postgres => &POSTGRES_MIGRATIONS,
        };
        migrator.run(&pool).await.map_err(CrmError::Migration)?;
        tracing::info!(backend = ?backend, "CRM store ready (migrations applied)");
        Ok(Store { pool, backend })
    }

    /// Checks the database answers (for `/healthz`-style probes).
    pub async fn ping(&self) -> Result<(), CrmError> {
        sqlx::query("SELECT 1").execute(&self.pool).await?;
        Ok(())
    }

    /// Where a write runs: a pool connection taken when its first statement runs.
    pub(crate) fn conn(&self) -> Conn<'_> {
        Conn::Pool(&self.pool, None)
    }

    /// A connection of the pool kept by the caller (the CRM writer keeps one, so it never
    /// waits behind webhooks for a free connection).
    pub(crate) async fn dedicated_connection(&self) -> Result<PoolConnection<Any>, CrmError> {
        Ok(self.pool.acquire().await?)
    }

    /// Whether a caller may keep a connection for itself: not when the pool has only one (an
    /// in-memory SQLite database), which everyone else would then wait for.
    pub(crate) fn can_dedicate_a_connection(&self) -> bool {
        self.pool.options().get_max_connections() > 1
    }

    /// Which database this store talks to.
    #[must_use]
    pub fn backend(&self) -> Backend {
        self.backend
    }

    /// Closes every connection; later operations fail. Waits for checked-out connections.
    pub async fn close(&self) {
        self.pool.close().await;
    }

    // ----------------------------------------------------------------------------- contacts

    /// Creates the contact for `phone_e164` or refreshes its last-seen time; a given
    /// `display_name` replaces the stored one, `None` keeps it.
    pub async fn upsert_contact(
        &self,
        phone_e164: &str,
        display_name: Option<&str>,
    ) -> Result<Contact, CrmError> {
        self.upsert_contact_at(phone_e164, display_name, true, now_ms())
            .await
    }

    pub(crate) async fn upsert_contact_at(
        &self,
        phone_e164: &str,
        display_name: Option<&str>,
        replace_name: bool,
        at_ms: i64,
    ) -> Result<Contact, CrmError> {
        upsert_contact_on(
            &mut self.conn(),
            phone_e164,
            display_name,
            replace_name,
            at_ms,
        )
        .await
    }

    /// The contact with this number, if any.
    pub async fn find_contact_by_phone(
        &self,
        phone_e164: &str,
    ) -> Result<Option<Contact>, CrmError> {
        check_phone(phone_e164)?;
        let sql = format!("SELECT {CONTACT_COLUMNS} FROM contacts WHERE phone_e164 = $1");
        let row = sqlx::query(&sql)
            .bind(phone_e164)
            .fetch_optional(&self.pool)
            .await?;
        row.as_ref().map(contact_from_row).transpose()
    }

    /// The contact with this id, or [`CrmError::NotFound`].
    pub async fn get_contact(&self, id: i64) -> Result<Contact, CrmError> {
        let sql = format!("SELECT {CONTACT_COLUMNS} FROM contacts WHERE id = $1");
        let row = sqlx::query(&sql)
            .bind(id)
            .fetch_optional(&self.pool)
            .await?;
        match row {
            Some(row) => contact_from_row(&row),
            None => Err(CrmError::NotFound {
                what: "contact",
                id: id.to_string(),
            }),
        }
    }

    /// Contacts, newest first.
    pub async fn list_contacts(&self, page: PageRequest) -> Result<Page<Contact>, CrmError> {
        let page = page.validated()?;
        self.fetch_page(
            "contacts",
            CONTACT_COLUMNS,
            page,
            Vec::new(),
            Vec::new(),
            contact_from_row,
            |c| c.id,
        )
        .await
    }

    // -------------------------------------------------------------------------------- calls

    /// Stores an incoming-call webhook. Idempotent by `call_sid`: a retried webhook returns the
    /// same row; a row already created by a stream event is completed, not duplicated. A valid
    /// E.164 `from` is linked to its contact (created when new).
    pub async fn record_incoming_call(&self, call: &NewCall) -> Result<Call, CrmError> {
        record_incoming_call_on(&mut self.conn(), call).await
    }

    /// Stores a stream lifecycle event; the same `(call_sid, kind, at_ms)` twice is stored once.
    pub async fn record_stream_event(
        &self,
        call_sid: &str,
        ev: &StreamEventRecord,
    ) -> Result<(), CrmError> {
        record_stream_event_on(&mut self.conn(), call_sid, ev).await
    }

    /// Stores a stream event unless the call already has one of its kind: for events that
    /// happen once per call (`stream-ended`, from the `<Connect action>` request), which a
    /// webhook Twilio sends again would otherwise store a second time, at its new receipt time.
    pub async fn record_stream_event_once(
        &self,
        call_sid: &str,
        ev: &StreamEventRecord,
    ) -> Result<(), CrmError> {
        // SQLite needs the WHERE to read `ON CONFLICT` as the upsert clause, not a join.
        let sql = "INSERT INTO call_stream_events (call_sid, kind, stream_sid, error, at_ms) \
             SELECT $1, $2, $3, $4, $5 WHERE NOT EXISTS \
                 (SELECT 1 FROM call_stream_events WHERE call_sid = $1 AND kind = $2) \
             ON CONFLICT (call_sid, kind, at_ms) DO NOTHING";
        insert_stream_event(&mut self.conn(), sql, call_sid, ev).await
    }

    /// Notes that the media stream started (creates a minimal call row when the webhook row is
    /// missing). The first start time is kept.
    pub async fn mark_call_streaming(
        &self,
        call_sid: &str,
        stream_sid: &str,
        at_ms: i64,
    ) -> Result<(), CrmError> {
        mark_call_streaming_on(&mut self.conn(), call_sid, stream_sid, at_ms).await
    }

    /// Notes that the call ended with `status`; the first end wins (a repeat changes nothing).
    pub async fn mark_call_ended(
        &self,
        call_sid: &str,
        at_ms: i64,
        status: &str,
    ) -> Result<(), CrmError> {
        mark_call_ended_on(&mut self.conn(), call_sid, at_ms, status).await
    }

    /// Stores a transcript turn; writing the same `(call_sid, seq)` again replaces it.
    pub async fn append_turn(&self, turn: &NewTurn) -> Result<(), CrmError> {
        append_turn_on(&mut self.conn(), turn).await
    }

    /// References a recording file from a call (replaces an earlier reference).
    pub async fn attach_recording(&self, rec: &NewRecording) -> Result<(), CrmError> {
        attach_recording_on(&mut self.conn(), rec).await
    }

    // -------------------------------------------------------------------------------- tasks

    /// Stores a follow-up task as `open`. Idempotent by `(call_sid, kind, seq)`: a repeat
    /// (writer retry) changes nothing and returns `None`; a new task returns the stored row.
    pub async fn record_task(&self, task: &NewTask) -> Result<Option<Task>, CrmError> {
        record_task_on(&mut self.conn(), task).await
    }

    /// Tasks, newest first; only those with `status` when given.
    pub async fn list_tasks(
        &self,
        page: PageRequest,
        status: Option<TaskStatus>,
    ) -> Result<Page<Task>, CrmError> {
        let page = page.validated()?;
        let mut binds = Vec::new();
        let mut conditions = Vec::new();
        if let Some(status) = status {
            binds.push(Bind::Text(status.as_str().to_owned()));
            conditions.push(format!("status = ${}", binds.len()));
        }
        self.fetch_page(
            "tasks",
            TASK_COLUMNS,
            page,
            conditions,
            binds,
            task_from_row,
            |t| t.id,
        )
        .await
    }

    /// Moves task `id` to `status` (setting the status it already has is harmless) and returns
    /// it, or [`CrmError::NotFound`].
    pub async fn set_task_status(&self, id: i64, status: TaskStatus) -> Result<Task, CrmError> {
        let sql = format!("UPDATE tasks SET status = $1 WHERE id = $2 RETURNING {TASK_COLUMNS}");
        let row = sqlx::query(&sql)
            .bind(status.as_str())
            .bind(id)
            .fetch_optional(&self.pool)
            .await?;
        match row {
            Some(row) => task_from_row(&row),
            None => Err(CrmError::NotFound {
                what: "task",
                id: id.to_string(),
            }),
        }
    }

    /// The call row alone, or [`CrmError::NotFound`].
    pub async fn get_call(&self, call_sid: &str) -> Result<Call, CrmError> {
        check_sid("call_sid", call_sid)?;
        let sql = format!("SELECT {CALL_COLUMNS} FROM calls WHERE call_sid = $1");
        match sqlx::query(&sql)
            .bind(call_sid)
            .fetch_optional(&self.pool)
            .await?
        {
            Some(row) => call_from_row(&row),
            None => Err(CrmError::NotFound {
                what: "call",
                id: call_sid.to_owned(),
            }),
        }
    }

    /// A call with its transcript (ordered by `seq`), stream events and recording.
    pub async fn get_call_with_turns(&self, call_sid: &str) -> Result<CallDetail, CrmError> {
        let call = self.get_call(call_sid).await?;
        let sql =
            format!("SELECT {TURN_COLUMNS} FROM turns WHERE call_sid = $1 ORDER BY seq LIMIT $2");
        let turns = sqlx::query(&sql)
            .bind(call_sid)
            .bind(MAX_TURNS_PER_CALL)
            .fetch_all(&self.pool)
            .await?
            .iter()
            .map(turn_from_row)
            .collect::<Result<Vec<_>, _>>()?;
        let stream_events = sqlx::query(
            "SELECT kind, stream_sid, error, at_ms FROM call_stream_events WHERE call_sid = $1 \
             ORDER BY at_ms, id LIMIT $2",
        )
        .bind(call_sid)
        .bind(MAX_STREAM_EVENTS_PER_CALL)
        .fetch_all(&self.pool)
        .await?
        .iter()
        .map(|row| {
            Ok(StreamEventRecord {
                kind: row.try_get("kind")?,
                stream_sid: row.try_get("stream_sid")?,
                error: row.try_get("error")?,
                at_ms: row.try_get("at_ms")?,
            })
        })
        .collect::<Result<Vec<_>, sqlx::Error>>()?;
        let recording = self.find_recording(call_sid).await?;
        Ok(CallDetail {
            call,
            turns,
            stream_events,
            recording,
        })
    }

    /// Calls matching `filter`, newest first.
    pub async fn list_calls(
        &self,
        filter: &CallFilter,
        page: PageRequest,
    ) -> Result<Page<Call>, CrmError> {
        let page = page.validated()?;
        let mut binds = Vec::new();
        let mut conditions = Vec::new();
        let mut push = |column_test: &str, bind: Bind| {
            binds.push(bind);
            conditions.push(format!("{column_test} ${}", binds.len()));
        };
        if let Some(contact_id) = filter.contact_id {
            push("contact_id =", Bind::Int(contact_id));
        }
        if let Some(from) = &filter.from {
            check_phone(from)?;
            push("from_number =", Bind::Text(from.clone()));
        }
        if let Some(status) = &filter.status {
            if status.is_empty() || status.len() > 32 {
                return Err(CrmError::invalid(
                    "status",
                    "expected a call status such as `completed`",
                ));
            }
            push("status =", Bind::Text(status.clone()));
        }
        if let Some(since) = filter.since_ms {
            push("started_at_ms >=", Bind::Int(since));
        }
        if let Some(until) = filter.until_ms {
            push("started_at_ms <", Bind::Int(until));
        }
        if let (Some(since), Some(until)) = (filter.since_ms, filter.until_ms)
            && since > until
        {
            return Err(CrmError::invalid("since", "`since` is after `until`"));
        }
        self.fetch_page(
            "calls",
            CALL_COLUMNS,
            page,
            conditions,
            binds,
            call_from_row,
            |c| c.id,
        )
        .await
    }

    /// The recording of a call, or [`CrmError::NotFound`].
    pub async fn get_recording(&self, call_sid: &str) -> Result<Recording, CrmError> {
        check_sid("call_sid", call_sid)?;
        self.find_recording(call_sid)
            .await?
            .ok_or_else(|| CrmError::NotFound {
                what: "recording of call",
                id: call_sid.to_owned(),
            })
    }

    async fn find_recording(&self, call_sid: &str) -> Result<Option<Recording>, CrmError> {
        let sql = format!("SELECT {RECORDING_COLUMNS} FROM recordings WHERE call_sid = $1");
        let row = sqlx::query(&sql)
            .bind(call_sid)
            .fetch_optional(&self.pool)
            .await?;
        row.map(|row| {
            Ok(Recording {
                call_sid: row.try_get("call_sid")?,
                path: row.try_get("path")?,
                codec: row.try_get("codec")?,
                duration_ms: row.try_get("duration_ms")?,
                size_bytes: row.try_get("size_bytes")?,
                created_at_ms: row.try_get("created_at_ms")?,
            })
        })
        .transpose()
        .map_err(|e: sqlx::Error| CrmError::from(e))
    }

    // ----------------------------------------------------------------------------- messages

    /// Messages exchanged with the contact `phone`, newest first. Unknown contact: 404.
    ///
    /// `phone` usually comes from a query string, so it is normalized leniently: `whatsapp:`,
    /// spaces and dashes are dropped, and a `+` that form-decoding turned into a space is restored.
    pub async fn list_messages(
        &self,
        phone: &str,
        page: PageRequest,
    ) -> Result<Page<Message>, CrmError> {
        let page = page.validated()?;
        let trimmed = phone.trim();
        let restored = if trimmed.starts_with(|c: char| c.is_ascii_digit() && c != '0') {
            format!("+{trimmed}")
        } else {
            trimmed.to_owned()
        };
        let phone_e164 = twilio_stream::phone::normalize_e164(&restored)
            .map_err(|e| CrmError::invalid("contact", e.to_string()))?;
        let contact = self
            .find_contact_by_phone(phone_e164.as_str())
            .await?
            .ok_or_else(|| CrmError::NotFound {
                what: "contact",
                id: phone_e164.as_str().to_owned(),
            })?;
        self.fetch_page(
            "messages",
            MESSAGE_COLUMNS,
            page,
            vec!["contact_id = $1".to_owned()],
            vec![Bind::Int(contact.id)],
            message_from_row,
            |m| m.id,
        )
        .await
    }

    /// The message with this provider sid, if stored.
    pub async fn find_message_by_provider_sid(
        &self,
        provider_sid: &str,
    ) -> Result<Option<Message>, CrmError> {
        let sql = format!("SELECT {MESSAGE_COLUMNS} FROM messages WHERE provider_sid = $1");
        let row = sqlx::query(&sql)
            .bind(provider_sid)
            .fetch_optional(&self.pool)
            .await?;
        row.as_ref().map(message_from_row).transpose()
    }

    pub(crate) async fn find_message_by_idempotency_key(
        &self,
        key: &str,
    ) -> Result<Option<Message>, CrmError> {
        let sql = format!("SELECT {MESSAGE_COLUMNS} FROM messages WHERE idempotency_key = $1");
        let row = sqlx::query(&sql)
            .bind(key)
            .fetch_optional(&self.pool)
            .await?;
        row.as_ref().map(message_from_row).transpose()
    }

    /// Inserts a message; `None` when its provider sid or idempotency key is already stored.
    pub(crate) async fn insert_message(
        &self,
        msg: &NewMessage<'_>,
    ) -> Result<Option<Message>, CrmError> {
        let media = serde_json::to_string(msg.media)
            .map_err(|e| CrmError::Corrupt(format!("cannot encode media list: {e}")))?;
        let sql = format!(
            "INSERT INTO messages (contact_id, channel, direction, provider, provider_sid, idempotency_key, \
                 from_address, to_address, body, media_json, status, status_rank, created_at_ms, updated_at_ms) \
             VALUES ($1, 'whatsapp', $2, $3, $4, $5, $6, $7, $8, $9, $10, $11, $12, $12) \
             ON CONFLICT DO NOTHING RETURNING {MESSAGE_COLUMNS}"
        );
        let row = sqlx::query(&sql)
            .bind(msg.contact_id)
            .bind(msg.direction.as_str())
            .bind(msg.provider)
            .bind(msg.provider_sid)
            .bind(msg.idempotency_key)
            .bind(msg.from)
            .bind(msg.to)
            .bind(msg.body)
            .bind(media)
            .bind(msg.status)
            .bind(msg.status_rank)
            .bind(msg.at_ms)
            .fetch_optional(&self.pool)
            .await?;
        row.as_ref().map(message_from_row).transpose()
    }

    /// Records that the provider accepted message `id` under `provider_sid`. The status only
    /// moves forward (a delivery callback that raced ahead is kept).
    pub(crate) async fn mark_message_accepted(
        &self,
        id: i64,
        provider_sid: &str,
        status: &str,
        status_rank: i64,
        at_ms: i64,
    ) -> Result<Message, CrmError> {
        let sql = format!(
            "UPDATE messages SET provider_sid = $1, \
                 status = CASE WHEN status_rank < $3 THEN $2 ELSE status END, \
                 status_rank = CASE WHEN status_rank < $3 THEN $3 ELSE status_rank END, \
                 error_code = NULL, error_message = NULL, updated_at_ms = $4 \
             WHERE id = $5 RETURNING {MESSAGE_COLUMNS}"
        );
        let row = sqlx::query(&sql)
            .bind(provider_sid)
            .bind(status)
            .bind(status_rank)
            .bind(at_ms)
            .bind(id)
            .fetch_one(&self.pool)
            .await?;
        message_from_row(&row)
    }

    /// Records the final failure of message `id`.
    pub(crate) async fn mark_message_failed(
        &self,
        id: i64,
        error_code: Option<&str>,
        error_message: &str,
        status_rank: i64,
        at_ms: i64,
    ) -> Result<Message, CrmError> {
        let sql = format!(
            "UPDATE messages SET status = 'failed', status_rank = $1, error_code = $2, error_message = $3, \
                 updated_at_ms = $4 WHERE id = $5 RETURNING {MESSAGE_COLUMNS}"
        );
        let row = sqlx::query(&sql)
            .bind(status_rank)
            .bind(error_code)
            .bind(error_message)
            .bind(at_ms)
            .bind(id)
            .fetch_one(&self.pool)
            .await?;
        message_from_row(&row)
    }

    /// Moves the message `provider_sid` to `status` (stored with `status_rank`) only if the
    /// stored rank is below `advance_below_rank`; one statement, so concurrent callbacks
    /// cannot move a message backwards.
    pub(crate) async fn apply_message_status(
        &self,
        provider_sid: &str,
        status: &str,
        status_rank: i64,
        advance_below_rank: i64,
        error_code: Option<&str>,
        at_ms: i64,
    ) -> Result<StatusUpdate, CrmError> {
        let updated = sqlx::query(
            "UPDATE messages SET status = $1, status_rank = $2, error_code = COALESCE($3, error_code), \
                 updated_at_ms = $4 WHERE provider_sid = $5 AND status_rank < $6",
        )
        .bind(status)
        .bind(status_rank)
        .bind(error_code)
        .bind(at_ms)
        .bind(provider_sid)
        .bind(advance_below_rank)
        .execute(&self.pool)
        .await?;
        if updated.rows_affected() > 0 {
            return Ok(StatusUpdate::Advanced);
        }
        let row = sqlx::query("SELECT status FROM messages WHERE provider_sid = $1")
            .bind(provider_sid)
            .fetch_optional(&self.pool)
            .await?;
        Ok(match row {
            None => StatusUpdate::UnknownMessage,
            Some(row) => {
                let stored: String = row.try_get("status")?;
                if stored == status {
                    StatusUpdate::Duplicate
                } else {
                    StatusUpdate::IgnoredBackwards
                }
            }
        })
    }

    // ------------------------------------------------------------------------------ helpers

    /// One page of `table`, newest first: `conditions` (with their `binds`, numbered `$1…` in
    /// push order) plus the page's cursor, one extra row fetched to know whether a next page
    /// exists, each row mapped by `from_row`.
    #[allow(clippy::too_many_arguments)]
    async fn fetch_page<T>(
        &self,
        table: &str,
        columns: &str,
        page: PageRequest,
        mut conditions: Vec<String>,
        mut binds: Vec<Bind>,
        from_row: fn(&AnyRow) -> Result<T, CrmError>,
        id_of: fn(&T) -> i64,
    ) -> Result<Page<T>, CrmError> {
        let limit = page.limit;
        if let Some(cursor) = page.cursor {
            binds.push(Bind::Int(cursor));
            conditions.push(format!("id < ${}", binds.len()));
        }
        let where_clause = if conditions.is_empty() {
            String::new()
        } else {
            format!("WHERE {}", conditions.join(" AND "))
        };
        // One extra row tells whether there is a next page.
        binds.push(Bind::Int(i64::from(limit) + 1));
        let sql = format!(
            "SELECT {columns} FROM {table} {where_clause} ORDER BY id DESC LIMIT ${}",
            binds.len()
        );
        let mut query = sqlx::query(&sql);
        for bind in binds {
            query = match bind {
                Bind::Int(v) => query.bind(v),
                Bind::Text(v) => query.bind(v),
            };
        }
        let rows = query.fetch_all(&self.pool).await?;
        let items = rows.iter().map(from_row).collect::<Result<Vec<_>, _>>()?;
        Ok(make_page(items, limit, id_of))
    }
}

fn make_page<T>(mut items: Vec<T>, limit: u32, id_of: impl Fn(&T) -> i64) -> Page<T> {
    let limit = limit as usize;
    let next_cursor = if items.len() > limit {
        items.truncate(limit);
        items.last().map(id_of)
    } else {
        None
    };
    Page { items, next_cursor }
}

fn backend_of(database_url: &str) -> Result<Backend, CrmError> {
    let scheme = database_url.split(':').next().unwrap_or("");
    match scheme {
        "sqlite" => Ok(Backend::Sqlite),
        "postgres" | "postgresql" => Ok(Backend::Postgres),
        other => Err(CrmError::UnsupportedDatabaseUrl {
            scheme: other.chars().take(16).collect(),
        }),
    }
}

/// Creates the database directory and makes sure the file is created (`mode=rwc`).
fn prepare_sqlite_url(database_url: &str, max_connections: u32) -> Result<(String, u32), CrmError> {
    let rest = database_url
        .strip_prefix("sqlite://")
        .or_else(|| database_url.strip_prefix("sqlite:"))
        .unwrap_or("");
    let (path, query) = match rest.split_once('?') {
        Some((p, q)) => (p, Some(q)),
        None => (rest, None),
    };
    if path.is_empty() || path == ":memory:" {
        // Each in-memory connection is its own database: keep a single connection.
        return Ok((database_url.to_owned(), 1));
    }
    if let Some(dir) = Path::new(path).parent()
        && !dir.as_os_str().is_empty()
    {
        std::fs::create_dir_all(dir).map_err(|source| CrmError::CreateDatabaseDir {
            dir: dir.display().to_string(),
            source,
        })?;
    }
    let has_mode = query.is_some_and(|q| q.split('&').any(|kv| kv.starts_with("mode=")));
    let url = match (query, has_mode) {
        (_, true) => database_url.to_owned(),
        (Some(_), false) => format!("{database_url}&mode=rwc"),
        (None, false) => format!("{database_url}?mode=rwc"),
    };
    Ok((url, max_connections))
}

// ---------------------------------------------- writes on one connection (or transaction)

/// Where a write runs: the pool, taking a connection only when the first statement runs (after
/// the input checks, so bad input is refused even while the database is down), or a
/// connection the caller holds, e.g. the writer's transaction.
pub(crate) enum Conn<'a> {
    /// Take a connection from the pool on first use and keep it for the rest of the write.
    Pool(&'a AnyPool, Option<PoolConnection<Any>>),
    /// A connection (or transaction) held by the caller.
    Held(&'a mut AnyConnection),
}

impl Conn<'_> {
    async fn get(&mut self) -> Result<&mut AnyConnection, CrmError> {
        match self {
            Conn::Held(conn) => Ok(&mut **conn),
            Conn::Pool(pool, slot) => {
                let conn = match slot.take() {
                    Some(conn) => conn,
                    None => pool.acquire().await?,
                };
                Ok(&mut **slot.insert(conn))
            }
        }
    }
}

/// [`Store::upsert_contact`] through `conn`.
pub(crate) async fn upsert_contact_on(
    conn: &mut Conn<'_>,
    phone_e164: &str,
    display_name: Option<&str>,
    replace_name: bool,
    at_ms: i64,
) -> Result<Contact, CrmError> {
    check_phone(phone_e164)?;
    let display_name = display_name.map(str::trim).filter(|n| !n.is_empty());
    let name_rule = if replace_name {
        "COALESCE(excluded.display_name, contacts.display_name)"
    } else {
        "COALESCE(contacts.display_name, excluded.display_name)"
    };
    let sql = format!(
        "INSERT INTO contacts (phone_e164, display_name, created_at_ms, last_seen_at_ms) \
             VALUES ($1, $2, $3, $3) \
             ON CONFLICT (phone_e164) DO UPDATE SET display_name = {name_rule}, \
             last_seen_at_ms = CASE WHEN excluded.last_seen_at_ms > contacts.last_seen_at_ms \
                 THEN excluded.last_seen_at_ms ELSE contacts.last_seen_at_ms END \
             RETURNING {CONTACT_COLUMNS}"
    );
    let conn = conn.get().await?;
    let row = sqlx::query(&sql)
        .bind(phone_e164)
        .bind(display_name)
        .bind(at_ms)
        .fetch_one(&mut *conn)
        .await?;
    contact_from_row(&row)
}

/// [`Store::record_incoming_call`] through `conn`.
pub(crate) async fn record_incoming_call_on(
    conn: &mut Conn<'_>,
    call: &NewCall,
) -> Result<Call, CrmError> {
    check_sid("call_sid", &call.call_sid)?;
    let contact_id = match call.from.as_deref() {
        Some(from) if is_e164(from) => Some(
            upsert_contact_on(conn, from, call.caller_name.as_deref(), false, call.at_ms)
                .await?
                .id,
        ),
        _ => None,
    };
    let direction = if call.direction.trim().is_empty() {
        "inbound"
    } else {
        call.direction.as_str()
    };
    let sql = format!(
        "INSERT INTO calls (call_sid, account_sid, contact_id, from_number, to_number, direction, \
                 status, caller_name, started_at_ms) \
             VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9) \
             ON CONFLICT (call_sid) DO UPDATE SET \
                 account_sid = COALESCE(calls.account_sid, excluded.account_sid), \
                 contact_id = COALESCE(calls.contact_id, excluded.contact_id), \
                 from_number = COALESCE(calls.from_number, excluded.from_number), \
                 to_number = COALESCE(calls.to_number, excluded.to_number), \
                 direction = CASE WHEN calls.direction = 'unknown' THEN excluded.direction ELSE calls.direction END, \
                 status = CASE WHEN calls.ended_at_ms IS NULL THEN COALESCE(excluded.status, calls.status) \
                     ELSE calls.status END, \
                 caller_name = COALESCE(calls.caller_name, excluded.caller_name), \
                 started_at_ms = CASE WHEN excluded.started_at_ms < calls.started_at_ms \
                     THEN excluded.started_at_ms ELSE calls.started_at_ms END \
             RETURNING {CALL_COLUMNS}"
    );
    let conn = conn.get().await?;
    let row = sqlx::query(&sql)
        .bind(&call.call_sid)
        .bind(call.account_sid.as_deref())
        .bind(contact_id)
        .bind(call.from.as_deref())
        .bind(call.to.as_deref())
        .bind(direction)
        .bind(call.status.as_deref())
        .bind(call.caller_name.as_deref())
        .bind(call.at_ms)
        .fetch_one(&mut *conn)
        .await?;
    call_from_row(&row)
}

/// [`Store::record_stream_event`] through `conn`.
pub(crate) async fn record_stream_event_on(
    conn: &mut Conn<'_>,
    call_sid: &str,
    ev: &StreamEventRecord,
) -> Result<(), CrmError> {
    let sql = "INSERT INTO call_stream_events (call_sid, kind, stream_sid, error, at_ms) \
             VALUES ($1, $2, $3, $4, $5) ON CONFLICT (call_sid, kind, at_ms) DO NOTHING";
    insert_stream_event(conn, sql, call_sid, ev).await
}

/// Runs `sql`, an insert of one stream event binding call sid, kind, stream sid, error and time
/// as `$1`..`$5`, after checking the event.
async fn insert_stream_event(
    conn: &mut Conn<'_>,
    sql: &'static str,
    call_sid: &str,
    ev: &StreamEventRecord,
) -> Result<(), CrmError> {
    check_sid("call_sid", call_sid)?;
    if ev.kind.trim().is_empty() {
        return Err(CrmError::invalid("kind", "stream event kind is empty"));
    }
    let conn = conn.get().await?;
    sqlx::query(sql)
        .bind(call_sid)
        .bind(ev.kind.as_str())
        .bind(ev.stream_sid.as_deref())
        .bind(ev.error.as_deref())
        .bind(ev.at_ms)
        .execute(&mut *conn)
        .await?;
    Ok(())
}

/// [`Store::mark_call_streaming`] through `conn`.
pub(crate) async fn mark_call_streaming_on(
    conn: &mut Conn<'_>,
    call_sid: &str,
    stream_sid: &str,
    at_ms: i64,
) -> Result<(), CrmError> {
    check_sid("call_sid", call_sid)?;
    check_sid("stream_sid", stream_sid)?;
    let conn = conn.get().await?;
    sqlx::query(
        "INSERT INTO calls (call_sid, direction, stream_sid, started_at_ms, streaming_at_ms) \
             VALUES ($1, 'unknown', $2, $3, $3) \
             ON CONFLICT (call_sid) DO UPDATE SET stream_sid = excluded.stream_sid, \
                 streaming_at_ms = COALESCE(calls.streaming_at_ms, excluded.streaming_at_ms)",
    )
    .bind(call_sid)
    .bind(stream_sid)
    .bind(at_ms)
    .execute(&mut *conn)
    .await?;
    Ok(())
}

/// [`Store::mark_call_ended`] through `conn`.
pub(crate) async fn mark_call_ended_on(
    conn: &mut Conn<'_>,
    call_sid: &str,
    at_ms: i64,
    status: &str,
) -> Result<(), CrmError> {
    check_sid("call_sid", call_sid)?;
    let conn = conn.get().await?;
    sqlx::query(
            "INSERT INTO calls (call_sid, direction, status, started_at_ms, ended_at_ms, duration_ms) \
             VALUES ($1, 'unknown', $2, $3, $3, 0) \
             ON CONFLICT (call_sid) DO UPDATE SET \
                 status = CASE WHEN calls.ended_at_ms IS NULL THEN excluded.status ELSE calls.status END, \
                 ended_at_ms = COALESCE(calls.ended_at_ms, excluded.ended_at_ms), \
                 duration_ms = COALESCE(calls.duration_ms, CASE WHEN excluded.ended_at_ms > calls.started_at_ms \
                     THEN excluded.ended_at_ms - calls.started_at_ms ELSE 0 END)",
        )
        .bind(call_sid)
        .bind(status)
        .bind(at_ms)
        .execute(&mut *conn)
        .await?;
    Ok(())
}

/// [`Store::append_turn`] through `conn`.
pub(crate) async fn append_turn_on(conn: &mut Conn<'_>, turn: &NewTurn) -> Result<(), CrmError> {
    check_sid("call_sid", &turn.call_sid)?;
    if turn.seq < 0 {
        return Err(CrmError::invalid("seq", "turn sequence numbers start at 0"));
    }
    let latency = turn.latency_json.as_ref().map(serde_json::Value::to_string);
    let conn = conn.get().await?;
    sqlx::query(
            "INSERT INTO turns (call_sid, seq, speaker, text, heard_text, interrupted, started_at_ms, \
                 ended_at_ms, latency_json) \
             VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9) \
             ON CONFLICT (call_sid, seq) DO UPDATE SET speaker = excluded.speaker, text = excluded.text, \
                 heard_text = excluded.heard_text, interrupted = excluded.interrupted, \
                 started_at_ms = excluded.started_at_ms, ended_at_ms = excluded.ended_at_ms, \
                 latency_json = excluded.latency_json",
        )
        .bind(&turn.call_sid)
        .bind(turn.seq)
        .bind(turn.speaker.as_str())
        .bind(&turn.text)
        .bind(turn.heard_text.as_deref())
        .bind(i64::from(turn.interrupted))
        .bind(turn.started_at_ms)
        .bind(turn.ended_at_ms)
        .bind(latency)
        .execute(&mut *conn)
        .await?;
    Ok(())
}

/// [`Store::attach_recording`] through `conn`.
pub(crate) async fn attach_recording_on(
    conn: &mut Conn<'_>,
    rec: &NewRecording,
) -> Result<(), CrmError> {
    check_sid("call_sid", &rec.call_sid)?;
    if rec.path.is_empty() {
        return Err(CrmError::invalid("path", "recording path is empty"));
    }
    let conn = conn.get().await?;
    sqlx::query(
        "INSERT INTO recordings (call_sid, path, codec, duration_ms, size_bytes, created_at_ms) \
             VALUES ($1, $2, $3, $4, $5, $6) \
             ON CONFLICT (call_sid) DO UPDATE SET path = excluded.path, codec = excluded.codec, \
                 duration_ms = excluded.duration_ms, size_bytes = excluded.size_bytes, \
                 created_at_ms = excluded.created_at_ms",
    )
    .bind(&rec.call_sid)
    .bind(&rec.path)
    .bind(&rec.codec)
    .bind(rec.duration_ms)
    .bind(rec.size_bytes)
    .bind(rec.at_ms)
    .execute(&mut *conn)
    .await?;
    Ok(())
}

/// [`Store::record_task`] through `conn`.
pub(crate) async fn record_task_on(
    conn: &mut Conn<'_>,
    task: &NewTask,
) -> Result<Option<Task>, CrmError> {
    check_sid("call_sid", &task.call_sid)?;
    if task.seq < 0 {
        return Err(CrmError::invalid("seq", "task sequence numbers start at 0"));
    }
    if let Some(phone) = &task.contact_phone {
        check_phone(phone)?;
    }
    if task.text.chars().count() > MAX_TASK_TEXT_CHARS {
        return Err(CrmError::invalid(
            "text",
            format!("task text is longer than {MAX_TASK_TEXT_CHARS} characters"),
        ));
    }
    let sql = format!(
        "INSERT INTO tasks (call_sid, seq, contact_phone, kind, text, preferred_time, status, created_at_ms) \
             VALUES ($1, $2, $3, $4, $5, $6, 'open', $7) \
             ON CONFLICT (call_sid, kind, seq) DO NOTHING RETURNING {TASK_COLUMNS}"
    );
    let conn = conn.get().await?;
    let row = sqlx::query(&sql)
        .bind(&task.call_sid)
        .bind(task.seq)
        .bind(task.contact_phone.as_deref())
        .bind(task.kind.as_str())
        .bind(&task.text)
        .bind(task.preferred_time.as_deref())
        .bind(task.at_ms)
        .fetch_optional(&mut *conn)
        .await?;
    row.as_ref().map(task_from_row).transpose()
}

fn check_phone(phone: &str) -> Result<(), CrmError> {
    if is_e164(phone) {
        Ok(())
    } else {
        Err(CrmError::invalid(
            "phone",
            format!(
                "expected an E.164 number such as +972501234567, got `{}`",
                phone.chars().take(40).collect::<String>()
            ),
        ))
    }
}

pub(crate) fn check_sid(field: &'static str, sid: &str) -> Result<(), CrmError> {
    let ok = !sid.is_empty()
        && sid.len() <= 64
        && sid
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || b == b'_' || b == b'-');
    if ok {
        Ok(())
    } else {
        Err(CrmError::invalid(
            field,
            "expected 1 to 64 letters, digits, `_` or `-` (e.g. CA0123…)",
        ))
    }
}

fn contact_from_row(row: &AnyRow) -> Result<Contact, CrmError> {
    Ok(Contact {
        id: row.try_get("id")?,
        phone_e164: row.try_get("phone_e164")?,
        display_name: row.try_get("display_name")?,
        created_at_ms: row.try_get("created_at_ms")?,
        last_seen_at_ms: row.try_get("last_seen_at_ms")?,
    })
}

fn call_from_row(row: &AnyRow) -> Result<Call, CrmError> {
    Ok(Call {
        id: row.try_get("id")?,
        call_sid: row.try_get("call_sid")?,
        account_sid: row.try_get("account_sid")?,
        contact_id: row.try_get("contact_id")?,
        from: row.try_get("from_number")?,
        to: row.try_get("to_number")?,
        direction: row.try_get("direction")?,
        status: row.try_get("status")?,
        caller_name: row.try_get("caller_name")?,
        stream_sid: row.try_get("stream_sid")?,
        started_at_ms: row.try_get("started_at_ms")?,
        streaming_at_ms: row.try_get("streaming_at_ms")?,
        ended_at_ms: row.try_get("ended_at_ms")?,
        duration_ms: row.try_get("duration_ms")?,
    })
}

fn turn_from_row(row: &AnyRow) -> Result<Turn, CrmError> {
    let speaker: String = row.try_get("speaker")?;
    let interrupted: i64 = row.try_get("interrupted")?;
    let latency: Option<String> = row.try_get("latency_json")?;
    let latency = latency
        .map(|s| serde_json::from_str(&s))
        .transpose()
        .map_err(|e| CrmError::Corrupt(format!("turns.latency_json is not JSON: {e}")))?;
    Ok(Turn {
        seq: row.try_get("seq")?,
        speaker: Speaker::parse(&speaker)?,
        text: row.try_get("text")?,
        heard_text: row.try_get("heard_text")?,
        interrupted: interrupted != 0,
        started_at_ms: row.try_get("started_at_ms")?,
        ended_at_ms: row.try_get("ended_at_ms")?,
        latency,
    })
}

fn task_from_row(row: &AnyRow) -> Result<Task, CrmError> {
    let kind: String = row.try_get("kind")?;
    let status: String = row.try_get("status")?;
    Ok(Task {
        id: row.try_get("id")?,
        call_sid: row.try_get("call_sid")?,
        seq: row.try_get("seq")?,
        contact_phone: row.try_get("contact_phone")?,
        kind: TaskKind::parse(&kind)?,
        text: row.try_get("text")?,
        preferred_time: row.try_get("preferred_time")?,
        status: TaskStatus::parse(&status)
            .map_err(|_| CrmError::Corrupt(format!("unknown task status `{status}` in tasks")))?,
        created_at_ms: row.try_get("created_at_ms")?,
    })
}

fn message_from_row(row: &AnyRow) -> Result<Message, CrmError> {
    let direction: String = row.try_get("direction")?;
    let media: String = row.try_get("media_json")?;
    let media = serde_json::from_str(&media)
        .map_err(|e| CrmError::Corrupt(format!("messages.media_json is not a media list: {e}")))?;
    Ok(Message {
        id: row.try_get("id")?,
        contact_id: row.try_get("contact_id")?,
        channel: row.try_get("channel")?,
        direction: MessageDirection::parse(&direction)?,
        provider: row.try_get("provider")?,
        provider_sid: row.try_get("provider_sid")?,
        from: row.try_get("from_address")?,
        to: row.try_get("to_address")?,
        body: row.try_get("body")?,
        media,
        status: row.try_get("status")?,
        error_code: row.try_get("error_code")?,
        error_message: row.try_get("error_message")?,
        created_at_ms: row.try_get("created_at_ms")?,
        updated_at_ms: row.try_get("updated_at_ms")?,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn sqlite_url_gets_create_mode_and_directory() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("nested/deeper/crmd.sqlite");
        let url = format!("sqlite://{}", path.display());
        let (prepared, n) = prepare_sqlite_url(&url, 4).unwrap();
        assert_eq!(prepared, format!("{url}?mode=rwc"));
        assert_eq!(n, 4);
        assert!(path.parent().unwrap().is_dir());
        let (prepared, _) = prepare_sqlite_url(&format!("{url}?mode=ro"), 4).unwrap();
        assert!(prepared.ends_with("?mode=ro"));
        let (_, n) = prepare_sqlite_url("sqlite::memory:", 4).unwrap();
        assert_eq!(n, 1);
    }

    #[test]
    fn unsupported_scheme_names_scheme_only() {
        let err = backend_of("mysql://root:hunter2@db/crm").unwrap_err();
        let text = err.to_string();
        assert!(text.contains("`mysql`"), "{text}");
        assert!(!text.contains("hunter2"), "{text}");
    }

    #[test]
    fn page_cut_sets_cursor_to_last_item() {
        let page = make_page(vec![9, 8, 7], 2, |v| *v);
        assert_eq!(page.items, vec![9, 8]);
        assert_eq!(page.next_cursor, Some(8));
        let page = make_page(vec![9, 8], 2, |v| *v);
        assert_eq!(page.next_cursor, None);
    }
}

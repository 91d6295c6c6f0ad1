//! The store's error type and how each variant maps to an HTTP status.

/// What went wrong in a store operation.
///
/// Messages are written for the operator reading the log; none of them contains the database
/// URL (it may carry a password) or any other secret.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum CrmError {
    /// `DATABASE_URL` is neither `sqlite:` nor `postgres:`/`postgresql:`.
    #[error(
        "DATABASE_URL has an unsupported scheme `{scheme}`: use sqlite://path/to/file.sqlite or postgres://user:pass@host/db"
    )]
    UnsupportedDatabaseUrl {
        /// The scheme that was found (never the whole URL: it may hold a password).
        scheme: String,
    },
    /// The SQLite database directory could not be created.
    #[error(
        "cannot create the SQLite database directory {dir}: {source}; check DATABASE_URL and permissions"
    )]
    CreateDatabaseDir {
        /// The directory we tried to create.
        dir: String,
        /// The OS error.
        #[source]
        source: std::io::Error,
    },
    /// The database cannot be reached right now (connection refused, pool timed out, busy).
    /// Retrying later may succeed.
    #[error(
        "database unavailable ({0}); check that the database in DATABASE_URL is up and reachable"
    )]
    Unavailable(#[source] sqlx::Error),
    /// The embedded migrations could not be applied.
    #[error(
        "database migration failed ({0}); the schema was left as it was, fix the database and restart"
    )]
    Migration(#[source] sqlx::migrate::MigrateError),
    /// The caller passed a value the store refuses.
    #[error("invalid {field}: {reason}")]
    InvalidInput {
        /// Which input (e.g. `phone`, `limit`, `cursor`).
        field: &'static str,
        /// Why it was refused, in words a client can act on.
        reason: String,
    },
    /// The thing asked for does not exist.
    #[error("{what} {id} not found")]
    NotFound {
        /// What kind of thing (`contact`, `call`, `recording`).
        what: &'static str,
        /// The id that was asked for.
        id: String,
    },
    /// The request conflicts with what is stored (e.g. an idempotency key reused for another request).
    #[error("conflict: {0}")]
    Conflict(String),
    /// The database answered with an error that retrying will not fix (constraint, bad SQL, decode).
    #[error("database error: {0}")]
    Database(#[source] sqlx::Error),
    /// A stored value could not be understood (e.g. corrupt JSON column).
    #[error("stored data is corrupt: {0}")]
    Corrupt(String),
    /// Filesystem error (recordings).
    #[error("recording file error at {path}: {source}")]
    RecordingIo {
        /// The file concerned.
        path: String,
        /// The OS error.
        #[source]
        source: std::io::Error,
    },
    /// The recording's audio could not be written or encoded (bad timestamps, libopus, not a
    /// stereo mu-law spool).
    #[error("recording encoder failed: {0}")]
    RecordingEncode(String),
}

impl CrmError {
    /// The HTTP status an API layer should answer with: 400 bad input, 404 missing, 409 conflict,
    /// 503 store unavailable, 500 for everything else.
    #[must_use]
    pub fn http_status(&self) -> u16 {
        match self {
            CrmError::InvalidInput { .. } => 400,
            CrmError::NotFound { .. } => 404,
            CrmError::Conflict(_) => 409,
            CrmError::Unavailable(_) | CrmError::Migration(_) => 503,
            _ => 500,
        }
    }

    /// True when retrying the same operation later can succeed (the writer task retries these).
    #[must_use]
    pub fn is_transient(&self) -> bool {
        matches!(self, CrmError::Unavailable(_))
    }

    pub(crate) fn invalid(field: &'static str, reason: impl Into<String>) -> Self {
        CrmError::InvalidInput {
            field,
            reason: reason.into(),
        }
    }
}

impl From<sqlx::Error> for CrmError {
    fn from(err: sqlx::Error) -> Self {
        if is_transient_sqlx(&err) {
            CrmError::Unavailable(err)
        } else {
            CrmError::Database(err)
        }
    }
}

/// Classifies a driver error: connection trouble, pool exhaustion, SQLite busy/locked and
/// Postgres connection/resource/serialization SQLSTATE classes are transient.
fn is_transient_sqlx(err: &sqlx::Error) -> bool {
    match err {
        sqlx::Error::Io(_)
        | sqlx::Error::Tls(_)
        | sqlx::Error::Protocol(_)
        | sqlx::Error::PoolTimedOut
        | sqlx::Error::WorkerCrashed => true,
        sqlx::Error::Database(db) => {
            let code = db.code();
            let code = code.as_deref().unwrap_or("");
            // SQLite: 5 SQLITE_BUSY, 6 SQLITE_LOCKED, 261/517 extended BUSY codes, 10 IOERR.
            matches!(code, "5" | "6" | "261" | "517" | "10")
                // Postgres SQLSTATE: 08 connection exception, 53 insufficient resources,
                // 57P01..57P03 shutdown/cannot connect now, 40001 serialization, 40P01 deadlock.
                || code.starts_with("08")
                || code.starts_with("53")
                || matches!(code, "57P01" | "57P02" | "57P03" | "40001" | "40P01")
        }
        _ => false,
    }
}

//! Shared by the WhatsApp and read-API tests: the real edge on 127.0.0.1:0 over a real SQLite
//! file (reopenable for "restart" tests), wired exactly like the binary wires it
//! (`WhatsAppChannel::from_config_with_policy` + `EdgeState::set_whatsapp`), and an axum
//! stand-in for Twilio's Messages API that fails on demand. Each test body runs on SQLite and,
//! with `CRMD_TEST_POSTGRES_URL` set, on a fresh PostgreSQL database ([`on_both_backends!`]).
#![allow(clippy::unwrap_used, dead_code)]

use std::collections::VecDeque;
use std::net::SocketAddr;
use std::path::Path;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use axum::extract::State;
use axum::http::{HeaderMap, StatusCode};
use axum::routing::post;
use axum::{Json, Router};
use crm::whatsapp::SendPolicy;
use edge::{BuildInfo, Config, EdgeState, OfflineFallbackHandler, ShutdownReport, WhatsAppChannel};
use tokio::sync::oneshot;
use tokio::task::JoinHandle;

pub const API_TOKEN: &str = "api-token-for-tests-0123456789";
pub const AUTH_TOKEN: &str = "twilio-auth-token-for-tests-01";
pub const ACCOUNT_SID: &str = "AC0123456789abcdef0123456789abcdef";
pub const WHATSAPP_FROM: &str = "whatsapp:+14155238886";
pub const PUBLIC_BASE: &str = "https://crmd.example.test";
pub const FORM: &str = "application/x-www-form-urlencoded";

/// Retries without real waiting worth mentioning; each attempt bounded at 2 s.
pub fn fast_policy() -> SendPolicy {
    SendPolicy {
        max_attempts: 3,
        initial_backoff: Duration::from_millis(1),
        max_backoff: Duration::from_millis(5),
        attempt_timeout: Duration::from_secs(2),
    }
}

/// Environment variable naming a PostgreSQL server for the Postgres half of each test
/// (`./dev test` sets it); each test gets its own fresh database there.
pub const POSTGRES_ENV: &str = "CRMD_TEST_POSTGRES_URL";

/// The database of one test (a SQLite file or a fresh PostgreSQL database) plus a temporary
/// directory for files (recordings). Outlives server restarts.
pub struct TestDatabase {
    dir: tempfile::TempDir,
    url: String,
    postgres: Option<(String, String)>,
}

impl TestDatabase {
    pub fn sqlite() -> Self {
        let dir = tempfile::tempdir().unwrap();
        let url = format!("sqlite://{}/data/crmd.sqlite", dir.path().display());
        Self {
            dir,
            url,
            postgres: None,
        }
    }

    /// A fresh database on the server of `CRMD_TEST_POSTGRES_URL`, or `None` after printing
    /// (visibly, even for a passing test) why the Postgres half is skipped.
    pub async fn postgres(test_name: &str) -> Option<Self> {
        let Ok(admin_url) = std::env::var(POSTGRES_ENV) else {
            use std::io::Write as _;
            let _ = writeln!(
                std::io::stderr(),
                "skipped: {test_name} on PostgreSQL: {POSTGRES_ENV} is not set (./dev test sets it)"
            );
            return None;
        };
        let name = format!("crmd_edge_test_{}", uuid::Uuid::new_v4().simple());
        let admin = sqlx::PgPool::connect(&admin_url).await.unwrap();
        sqlx::query(&format!("CREATE DATABASE {name}"))
            .execute(&admin)
            .await
            .unwrap();
        admin.close().await;
        let (server, _) = admin_url.rsplit_once('/').unwrap();
        Some(Self {
            dir: tempfile::tempdir().unwrap(),
            url: format!("{server}/{name}"),
            postgres: Some((admin_url, name)),
        })
    }

    pub fn database_url(&self) -> String {
        self.url.clone()
    }

    pub fn path(&self) -> &Path {
        self.dir.path()
    }

    /// Drops the Postgres database (servers using it must be shut down first).
    pub async fn finish(mut self) {
        if let Some((admin_url, name)) = self.postgres.take() {
            let admin = sqlx::PgPool::connect(&admin_url).await.unwrap();
            sqlx::query(&format!("DROP DATABASE IF EXISTS {name} WITH (FORCE)"))
                .execute(&admin)
                .await
                .unwrap();
            admin.close().await;
        }
    }
}

/// Runs each `async fn body(db: &TestDatabase)` once on SQLite and once on PostgreSQL.
#[macro_export]
macro_rules! on_both_backends {
    ($($body:ident),+ $(,)?) => {
        $(
            mod $body {
                #[tokio::test]
                async fn sqlite() {
                    let db = $crate::api_support::TestDatabase::sqlite();
                    super::$body(&db).await;
                    db.finish().await;
                }

                #[tokio::test]
                async fn postgres() {
                    let Some(db) =
                        $crate::api_support::TestDatabase::postgres(stringify!($body)).await
                    else {
                        return;
                    };
                    super::$body(&db).await;
                    db.finish().await;
                }
            }
        )+
    };
}

pub struct Edge {
    pub addr: SocketAddr,
    pub state: EdgeState,
    pub store: crm::Store,
    shutdown: Option<oneshot::Sender<()>>,
    task: Option<JoinHandle<Result<ShutdownReport, edge::StartupError>>>,
}

impl Edge {
    /// The full edge with `vars` (plus `DATABASE_URL` of `data`), served on 127.0.0.1:0.
    pub async fn start(data: &TestDatabase, vars: &[(&str, &str)], policy: SendPolicy) -> Self {
        let mut pairs: Vec<(String, String)> =
            vec![("DATABASE_URL".to_owned(), data.database_url())];
        pairs.extend(vars.iter().map(|(k, v)| (k.to_string(), v.to_string())));
        let config = Config::from_vars(pairs).unwrap();
        let prepared = edge::prepare(config).await.unwrap();
        let store = prepared.store.clone();
        let whatsapp =
            WhatsAppChannel::from_config_with_policy(&prepared.config, store.clone(), policy)
                .unwrap();
        let state = EdgeState::new(
            prepared.config,
            BuildInfo {
                version: "0.1.0".to_owned(),
                git_commit: "0123456789abcdef0123456789abcdef01234567".to_owned(),
                build_time: "2026-11-24T06:00:00Z".to_owned(),
                entry_point: "edge api test".to_owned(),
            },
            Some(prepared.store),
            Arc::new(OfflineFallbackHandler::default()),
        );
        state.set_whatsapp(whatsapp);
        let listener = edge::bind("127.0.0.1:0".parse().unwrap()).await.unwrap();
        let addr = listener.local_addr().unwrap();
        let (tx, rx) = oneshot::channel::<()>();
        let task = tokio::spawn(edge::serve(listener, state.clone(), async move {
            let _ = rx.await;
        }));
        Self {
            addr,
            state,
            store,
            shutdown: Some(tx),
            task: Some(task),
        }
    }

    pub fn url(&self, path: &str) -> String {
        format!("http://{}{}", self.addr, path)
    }

    /// Graceful shutdown: stops accepting, closes the database, waits for `serve` to return.
    pub async fn shut_down(mut self) {
        let _ = self.shutdown.take().unwrap().send(());
        self.task.take().unwrap().await.unwrap().unwrap();
    }
}

pub fn client() -> reqwest::Client {
    reqwest::Client::builder().no_proxy().build().unwrap()
}

pub fn pairs(form: &[(&str, &str)]) -> Vec<(String, String)> {
    form.iter()
        .map(|(k, v)| (k.to_string(), v.to_string()))
        .collect()
}

pub fn encode(form: &[(&str, &str)]) -> String {
    let escape = |s: &str| {
        s.replace('%', "%25")
            .replace('+', "%2B")
            .replace('&', "%26")
            .replace('=', "%3D")
            .replace(' ', "+")
    };
    form.iter()
        .map(|(k, v)| format!("{}={}", escape(k), escape(v)))
        .collect::<Vec<_>>()
        .join("&")
}

/// What the stand-in answers to the next request.
#[derive(Debug, Clone)]
pub enum Reply {
    Accept,
    Status(u16, serde_json::Value),
    /// Never answer (crmd's per-attempt timeout must cut it).
    Hang,
}

#[derive(Debug, Clone)]
pub struct Recorded {
    pub path: String,
    pub authorization: Option<String>,
    pub form: Vec<(String, String)>,
}

impl Recorded {
    pub fn field(&self, name: &str) -> Option<&str> {
        self.form
            .iter()
            .find(|(k, _)| k == name)
            .map(|(_, v)| v.as_str())
    }
}

/// Twilio's Messages API on loopback: answers from a script (default: accept with `SM<n>`).
#[derive(Debug, Clone, Default)]
pub struct TwilioStandIn {
    script: Arc<Mutex<VecDeque<Reply>>>,
    requests: Arc<Mutex<Vec<Recorded>>>,
    pub base_url: String,
}

impl TwilioStandIn {
    pub async fn start() -> Self {
        let mut stand_in = Self::default();
        let app = Router::new()
            .route(
                "/2010-04-01/Accounts/{sid}/Messages.json",
                post(messages_endpoint),
            )
            .with_state(stand_in.clone());
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        stand_in.base_url = format!("http://{}", listener.local_addr().unwrap());
        tokio::spawn(async move { axum::serve(listener, app).await.unwrap() });
        stand_in
    }

    pub fn script(&self, replies: impl IntoIterator<Item = Reply>) {
        self.script.lock().unwrap().extend(replies);
    }

    pub fn requests(&self) -> Vec<Recorded> {
        self.requests.lock().unwrap().clone()
    }

    /// Variables pointing crmd's Twilio provider at this stand-in.
    pub fn vars(&self) -> Vec<(&'static str, String)> {
        vec![
            ("TWILIO_API_BASE", self.base_url.clone()),
            ("TWILIO_ACCOUNT_SID", ACCOUNT_SID.to_owned()),
            ("TWILIO_AUTH_TOKEN", AUTH_TOKEN.to_owned()),
            ("TWILIO_WHATSAPP_FROM", WHATSAPP_FROM.to_owned()),
            ("PUBLIC_BASE_URL", PUBLIC_BASE.to_owned()),
            ("CRMD_API_TOKEN", API_TOKEN.to_owned()),
        ]
    }
}

async fn messages_endpoint(
    State(state): State<TwilioStandIn>,
    uri: axum::http::Uri,
    headers: HeaderMap,
    body: axum::body::Bytes,
) -> (StatusCode, Json<serde_json::Value>) {
    let n = {
        let mut requests = state.requests.lock().unwrap();
        requests.push(Recorded {
            path: uri.path().to_owned(),
            authorization: headers
                .get("authorization")
                .map(|v| v.to_str().unwrap().to_owned()),
            form: twilio_stream::forms::parse_pairs(&body).unwrap(),
        });
        requests.len()
    };
    let reply = state
        .script
        .lock()
        .unwrap()
        .pop_front()
        .unwrap_or(Reply::Accept);
    match reply {
        Reply::Accept => (
            StatusCode::CREATED,
            Json(serde_json::json!({
                "sid": format!("SM{n:032}"), "status": "queued", "error_code": null,
                "error_message": null, "direction": "outbound-api",
                "date_created": "Tue, 24 Nov 2026 06:00:00 +0000"
            })),
        ),
        Reply::Status(code, json) => (StatusCode::from_u16(code).unwrap(), Json(json)),
        Reply::Hang => std::future::pending().await,
    }
}

/// Borrowed view of owned `(name, value)` variables.
pub fn as_refs<'a>(vars: &'a [(&'static str, String)]) -> Vec<(&'static str, &'a str)> {
    vars.iter().map(|(k, v)| (*k, v.as_str())).collect()
}

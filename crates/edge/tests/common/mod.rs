//! Starts the real edge on 127.0.0.1:0 with a real SQLite store in a temporary directory.
#![allow(clippy::unwrap_used, dead_code)]

use std::net::SocketAddr;
use std::sync::Arc;

use edge::{
    BuildInfo, Config, EdgeState, MediaStreamHandler, OfflineFallbackHandler, ShutdownReport,
};
use tokio::sync::oneshot;
use tokio::task::JoinHandle;

pub const TEST_COMMIT: &str = "0123456789abcdef0123456789abcdef01234567";

pub fn build_info() -> BuildInfo {
    BuildInfo {
        version: "0.1.0".to_owned(),
        git_commit: TEST_COMMIT.to_owned(),
        build_time: "2026-11-24T06:00:00Z".to_owned(),
        entry_point: "edge integration test".to_owned(),
    }
}

pub struct TestServer {
    pub addr: SocketAddr,
    pub state: EdgeState,
    pub store: crm::Store,
    shutdown: Option<oneshot::Sender<()>>,
    task: Option<JoinHandle<Result<ShutdownReport, edge::StartupError>>>,
    _dir: tempfile::TempDir,
}

impl TestServer {
    pub async fn start(vars: &[(&str, &str)]) -> Self {
        Self::start_with(vars, Arc::new(OfflineFallbackHandler::default())).await
    }

    pub async fn start_with(vars: &[(&str, &str)], media: Arc<dyn MediaStreamHandler>) -> Self {
        Self::start_full(vars, media, edge::routes()).await
    }

    /// Serves `routes` (the edge's routes plus extra ones) with the edge's layers.
    pub async fn start_full(
        vars: &[(&str, &str)],
        media: Arc<dyn MediaStreamHandler>,
        routes: axum::Router<EdgeState>,
    ) -> Self {
        let dir = tempfile::tempdir().unwrap();
        let db = format!("sqlite://{}/crmd.sqlite", dir.path().display());
        let mut pairs: Vec<(String, String)> = vec![("DATABASE_URL".to_owned(), db)];
        pairs.extend(vars.iter().map(|(k, v)| (k.to_string(), v.to_string())));
        let config = Config::from_vars(pairs).unwrap();
        let prepared = edge::prepare(config).await.unwrap();
        let store = prepared.store.clone();
        let state = EdgeState::new(prepared.config, build_info(), Some(prepared.store), media);
        let listener = edge::bind("127.0.0.1:0".parse().unwrap()).await.unwrap();
        let addr = listener.local_addr().unwrap();
        let (tx, rx) = oneshot::channel::<()>();
        let app = edge::with_layers(routes, state.clone());
        let task = tokio::spawn(edge::serve_router(
            listener,
            app,
            state.clone(),
            async move {
                let _ = rx.await;
            },
        ));
        Self {
            addr,
            state,
            store,
            shutdown: Some(tx),
            task: Some(task),
            _dir: dir,
        }
    }

    /// The SQLite database the server writes to.
    pub fn db_url(&self) -> String {
        format!("sqlite://{}/crmd.sqlite", self._dir.path().display())
    }

    pub fn url(&self, path: &str) -> String {
        format!("http://{}{}", self.addr, path)
    }

    pub fn ws_url(&self, path: &str) -> String {
        format!("ws://{}{}", self.addr, path)
    }

    /// Triggers the graceful shutdown and waits for `serve` to return.
    pub async fn shut_down(mut self) -> ShutdownReport {
        let _ = self.shutdown.take().unwrap().send(());
        self.task.take().unwrap().await.unwrap().unwrap()
    }
}

pub fn client() -> reqwest::Client {
    reqwest::Client::builder().no_proxy().build().unwrap()
}

//! Test harness: the same test body runs against a fresh SQLite file and a fresh PostgreSQL
//! database (when `CRMD_TEST_POSTGRES_URL` is set; otherwise the Postgres half prints
//! "skipped: …" and returns).
#![allow(dead_code, clippy::unwrap_used)]

use crm::Store;

pub const POSTGRES_ENV: &str = "CRMD_TEST_POSTGRES_URL";

/// A fresh database and the store connected to it.
pub struct TestDb {
    pub store: Store,
    pub url: String,
    _dir: Option<tempfile::TempDir>,
    postgres: Option<PostgresDatabase>,
}

impl TestDb {
    /// Connects a second store to the same database (a "server restart").
    pub async fn reopen(&self) -> Store {
        Store::connect(&self.url).await.unwrap()
    }

    pub async fn finish(mut self) {
        self.store.close().await;
        if let Some(pg) = self.postgres.take() {
            pg.drop_now().await;
        }
    }
}

pub async fn sqlite() -> TestDb {
    let dir = tempfile::tempdir().unwrap();
    // A nested directory proves the store creates it on first start.
    let url = format!("sqlite://{}/data/crmd.sqlite", dir.path().display());
    let store = Store::connect(&url).await.unwrap();
    TestDb {
        store,
        url,
        _dir: Some(dir),
        postgres: None,
    }
}

/// A fresh Postgres database, or `None` (after printing why) when no server is configured.
pub async fn postgres(test_name: &str) -> Option<TestDb> {
    let Ok(admin_url) = std::env::var(POSTGRES_ENV) else {
        // Written to the stderr handle, not with eprintln!: libtest captures the print macros
        // of passing tests, and a skip must be visible in a normal `cargo test` run.
        use std::io::Write as _;
        let _ = writeln!(
            std::io::stderr(),
            "skipped: {test_name} on PostgreSQL: {POSTGRES_ENV} is not set (./dev test sets it)"
        );
        return None;
    };
    let name = format!("crmd_test_{}", uuid::Uuid::new_v4().simple());
    let admin = sqlx::PgPool::connect(&admin_url).await.unwrap();
    sqlx::query(&format!("CREATE DATABASE {name}"))
        .execute(&admin)
        .await
        .unwrap();
    admin.close().await;
    let mut url = url::Url::parse(&admin_url).unwrap();
    url.set_path(&name);
    let url = url.to_string();
    let store = Store::connect(&url).await.unwrap();
    Some(TestDb {
        store,
        url,
        _dir: None,
        postgres: Some(PostgresDatabase {
            admin_url,
            name,
            dropped: false,
        }),
    })
}

struct PostgresDatabase {
    admin_url: String,
    name: String,
    dropped: bool,
}

impl PostgresDatabase {
    async fn drop_now(mut self) {
        drop_database(&self.admin_url, &self.name).await;
        self.dropped = true;
    }
}

async fn drop_database(admin_url: &str, name: &str) {
    let admin = sqlx::PgPool::connect(admin_url).await.unwrap();
    sqlx::query(&format!("DROP DATABASE IF EXISTS {name} WITH (FORCE)"))
        .execute(&admin)
        .await
        .unwrap();
    admin.close().await;
}

impl Drop for PostgresDatabase {
    fn drop(&mut self) {
        if self.dropped {
            return;
        }
        // The test panicked before `finish`: drop the database from a helper thread with its
        // own runtime (we may be inside a runtime that is unwinding).
        let (url, name) = (self.admin_url.clone(), self.name.clone());
        let _ = std::thread::spawn(move || {
            let rt = tokio::runtime::Builder::new_current_thread()
                .enable_all()
                .build()
                .unwrap();
            rt.block_on(drop_database(&url, &name));
        })
        .join();
    }
}

/// Runs `async fn body(db: &TestDb)` once on SQLite and once on PostgreSQL.
#[macro_export]
macro_rules! on_both_backends {
    ($($body:ident),+ $(,)?) => {
        $(
            mod $body {
                #[tokio::test]
                async fn sqlite() {
                    let db = $crate::common::sqlite().await;
                    super::$body(&db).await;
                    db.finish().await;
                }

                #[tokio::test]
                async fn postgres() {
                    let Some(db) = $crate::common::postgres(stringify!($body)).await else {
                        return;
                    };
                    super::$body(&db).await;
                    db.finish().await;
                }
            }
        )+
    };
}

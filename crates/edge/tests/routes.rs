//! Health, readiness, version, 404 and the X-App-Signature header, against the real server.
#![allow(clippy::unwrap_used)]

mod common;

use common::{TEST_COMMIT, TestServer, client};

const SECRETS: &[(&str, &str)] = &[
    ("TWILIO_AUTH_TOKEN", "twilio-token-SECRET"),
    ("CRMD_API_TOKEN", "api-token-SECRET"),
    ("LLM_API_KEY", "llm-key-SECRET"),
    ("DEPLOY_ID", "deploy-2026-11-24-a"),
];

fn expected_signature() -> String {
    format!(
        "crmd/0.1.0 commit={} deploy=deploy-2026-11-24-a",
        &TEST_COMMIT[..12]
    )
}

#[tokio::test]
async fn healthz_answers_ok_with_the_build_signature() {
    let server = TestServer::start(SECRETS).await;
    let res = client().get(server.url("/healthz")).send().await.unwrap();
    assert_eq!(res.status(), 200);
    assert_eq!(
        res.headers()["x-app-signature"],
        expected_signature().as_str()
    );
    assert!(res.headers().contains_key("x-request-id"));
    assert_eq!(res.text().await.unwrap(), "ok");
    server.shut_down().await;
}

#[tokio::test]
async fn version_names_the_build_and_deploy_and_never_a_secret() {
    let server = TestServer::start(SECRETS).await;
    let res = client().get(server.url("/version")).send().await.unwrap();
    assert_eq!(res.status(), 200);
    assert_eq!(
        res.headers()["x-app-signature"],
        expected_signature().as_str()
    );
    let text = res.text().await.unwrap();
    assert!(!text.contains("SECRET"), "secret in /version: {text}");
    let json: serde_json::Value = serde_json::from_str(&text).unwrap();
    assert_eq!(json["deploy_id"], "deploy-2026-11-24-a");
    assert_eq!(json["version"], "0.1.0");
    assert_eq!(json["git_commit"], TEST_COMMIT);
    assert_eq!(json["build_time"], "2026-11-24T06:00:00Z");
    assert_eq!(json["marker"], "0.1.0+0123456789ab.20261124T060000Z");
    let started = json["started_at"].as_str().unwrap();
    assert!(
        chrono::DateTime::parse_from_rfc3339(started).is_ok(),
        "{started}"
    );
    server.shut_down().await;
}

#[tokio::test]
async fn readyz_checks_the_database_and_names_missing_speech() {
    let server = TestServer::start(&[]).await;
    let res = client().get(server.url("/readyz")).send().await.unwrap();
    assert_eq!(res.status(), 200);
    let json: serde_json::Value = res.json().await.unwrap();
    assert_eq!(json["ready"], true);
    assert_eq!(json["database"], "ok");
    assert!(
        json["speech"].as_str().unwrap().starts_with("missing"),
        "{json}"
    );
    // Once the database is closed, readiness says so with 503.
    server.store.close().await;
    let res = client().get(server.url("/readyz")).send().await.unwrap();
    assert_eq!(res.status(), 503);
    assert!(
        res.headers()["x-app-signature"]
            .to_str()
            .unwrap()
            .starts_with("crmd/0.1.0")
    );
    let json: serde_json::Value = res.json().await.unwrap();
    assert!(
        json["database"]
            .as_str()
            .unwrap()
            .starts_with("unavailable"),
        "{json}"
    );
    server.shut_down().await;
}

#[tokio::test]
async fn unknown_paths_and_wrong_methods_still_carry_the_signature() {
    let server = TestServer::start(SECRETS).await;
    let res = client().get(server.url("/nope")).send().await.unwrap();
    assert_eq!(res.status(), 404);
    assert_eq!(
        res.headers()["x-app-signature"],
        expected_signature().as_str()
    );
    let res = client().post(server.url("/healthz")).send().await.unwrap();
    assert_eq!(res.status(), 405);
    assert_eq!(
        res.headers()["x-app-signature"],
        expected_signature().as_str()
    );
    let res = client()
        .get(server.url("/webhook/incoming_call"))
        .send()
        .await
        .unwrap();
    assert_eq!(res.status(), 405);
    server.shut_down().await;
}

#[tokio::test]
async fn root_answers_200_for_platforms_that_health_check_slash() {
    let server = TestServer::start(&[]).await;
    let res = client().get(server.url("/")).send().await.unwrap();
    assert_eq!(res.status(), 200);
    assert!(res.text().await.unwrap().contains("/healthz"));
    server.shut_down().await;
}

#[tokio::test]
async fn deploy_id_unset_is_visible() {
    let server = TestServer::start(&[]).await;
    let res = client().get(server.url("/version")).send().await.unwrap();
    assert!(
        res.headers()["x-app-signature"]
            .to_str()
            .unwrap()
            .ends_with("deploy=unset")
    );
    let json: serde_json::Value = res.json().await.unwrap();
    assert!(json["deploy_id"].is_null());
    server.shut_down().await;
}

#[tokio::test]
async fn a_panicking_handler_answers_500_and_the_server_keeps_serving() {
    use axum::routing::get;
    async fn boom() -> &'static str {
        panic!("handler bug")
    }
    let routes = edge::routes().route("/boom", get(boom));
    let server = TestServer::start_full(
        SECRETS,
        std::sync::Arc::new(edge::OfflineFallbackHandler::default()),
        routes,
    )
    .await;
    let res = client().get(server.url("/boom")).send().await.unwrap();
    assert_eq!(res.status(), 500);
    assert_eq!(
        res.headers()["x-app-signature"],
        expected_signature().as_str()
    );
    assert_eq!(res.text().await.unwrap(), "internal error\n");
    let res = client().get(server.url("/healthz")).send().await.unwrap();
    assert_eq!(res.status(), 200);
    server.shut_down().await;
}

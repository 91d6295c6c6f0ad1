//! Credential loading, JWT minting and the bearer header, with a throwaway test key
//! (tests/data/test-service-account.json, see tests/data/README.md).
#![allow(clippy::unwrap_used)]

mod common;

use std::sync::Arc;
use std::time::{Duration, UNIX_EPOCH};

use base64::Engine as _;
use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use common::{FakeTts, TtsScript};
use speech::{
    CredentialsError, GoogleCredentials, SpeechError, SttClient, SttConfig, TtsClient, TtsConfig,
};

const FIXTURE_PATH: &str = concat!(
    env!("CARGO_MANIFEST_DIR"),
    "/tests/data/test-service-account.json"
);

fn fixture_json() -> String {
    std::fs::read_to_string(FIXTURE_PATH).unwrap()
}

fn fixture_value() -> serde_json::Value {
    serde_json::from_str(&fixture_json()).unwrap()
}

/// The base64 body of the fixture's private key, to check it never leaks.
fn key_fragment() -> String {
    let pem = fixture_value()["private_key"].as_str().unwrap().to_owned();
    pem.lines().nth(5).unwrap().to_owned()
}

fn assert_no_key_material(text: &str) {
    assert!(!text.contains("PRIVATE KEY"), "key material leaked: {text}");
    assert!(
        !text.contains(&key_fragment()),
        "key material leaked: {text}"
    );
}

#[test]
fn neither_variable_set_means_no_credentials() {
    assert!(
        GoogleCredentials::from_env_values(None, None)
            .unwrap()
            .is_none()
    );
    assert!(
        GoogleCredentials::from_env_values(Some(""), Some("  "))
            .unwrap()
            .is_none()
    );
}

#[test]
fn loads_from_a_file_path_or_from_inline_json_and_redacts_debug() {
    let from_file = GoogleCredentials::from_env_values(Some(FIXTURE_PATH), None)
        .unwrap()
        .unwrap();
    let from_json = GoogleCredentials::from_env_values(None, Some(&fixture_json()))
        .unwrap()
        .unwrap();
    assert_eq!(from_file.client_email(), from_json.client_email());
    assert_eq!(from_file.public_key_der(), from_json.public_key_der());
    let debug = format!("{from_file:?}");
    assert!(debug.contains("crmd-test-fixture@"), "{debug}");
    assert!(debug.contains("<redacted>"), "{debug}");
    assert_no_key_material(&debug);
}

#[test]
fn both_variables_set_is_refused_naming_both() {
    let error =
        GoogleCredentials::from_env_values(Some(FIXTURE_PATH), Some(&fixture_json())).unwrap_err();
    let message = error.to_string();
    assert!(
        message.contains("GOOGLE_APPLICATION_CREDENTIALS")
            && message.contains("GCP_CREDENTIALS_JSON")
    );
}

#[test]
fn an_unreadable_file_names_the_variable_and_the_path() {
    let dir = tempfile::tempdir().unwrap();
    let missing = dir.path().join("missing.json");
    let error =
        GoogleCredentials::from_env_values(Some(missing.to_str().unwrap()), None).unwrap_err();
    assert!(matches!(error, CredentialsError::Unreadable { .. }));
    let message = error.to_string();
    assert!(
        message.contains("GOOGLE_APPLICATION_CREDENTIALS") && message.contains("missing.json"),
        "{message}"
    );
}

#[test]
fn invalid_json_names_the_variable_without_echoing_the_content() {
    let mut broken = fixture_json();
    broken.truncate(broken.len() / 2); // cut inside the private key
    let error = GoogleCredentials::from_env_values(None, Some(&broken)).unwrap_err();
    let message = error.to_string();
    assert!(
        message.starts_with("GCP_CREDENTIALS_JSON is not valid JSON"),
        "{message}"
    );
    assert_no_key_material(&message);

    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("key.json");
    std::fs::write(&path, "{ not json").unwrap();
    let error = GoogleCredentials::from_env_values(Some(path.to_str().unwrap()), None).unwrap_err();
    assert!(
        error
            .to_string()
            .starts_with("GOOGLE_APPLICATION_CREDENTIALS is not valid JSON"),
        "{error}"
    );
}

#[test]
fn missing_fields_are_named() {
    for field in ["client_email", "private_key"] {
        let mut value = fixture_value();
        value.as_object_mut().unwrap().remove(field);
        let error = GoogleCredentials::from_env_values(None, Some(&value.to_string())).unwrap_err();
        assert!(
            matches!(&error, CredentialsError::MissingField { variable: "GCP_CREDENTIALS_JSON", field: f } if *f == field),
            "{error:?}"
        );
        assert!(error.to_string().contains(&format!("`{field}`")), "{error}");
        assert_no_key_material(&error.to_string());
    }
}

#[test]
fn a_key_that_does_not_parse_is_refused_without_leaking_it() {
    let mut value = fixture_value();
    let pem = value["private_key"].as_str().unwrap().to_owned();
    // Corrupt the DER inside a well-formed PEM block.
    let corrupted = pem.replacen(&key_fragment(), &"A".repeat(key_fragment().len()), 1);
    value["private_key"] = serde_json::Value::String(corrupted);
    let error = GoogleCredentials::from_env_values(None, Some(&value.to_string())).unwrap_err();
    assert!(
        matches!(error, CredentialsError::InvalidKey { .. }),
        "{error:?}"
    );
    assert!(
        error.to_string().contains("GCP_CREDENTIALS_JSON"),
        "{error}"
    );
    assert_no_key_material(&error.to_string());

    value["private_key"] = serde_json::Value::String("not a pem at all".to_owned());
    let error = GoogleCredentials::from_env_values(None, Some(&value.to_string())).unwrap_err();
    assert!(
        matches!(error, CredentialsError::InvalidKey { .. }),
        "{error:?}"
    );
}

/// Splits a JWT and verifies its RS256 signature with the credentials' public key.
fn verify_jwt(
    token: &str,
    credentials: &GoogleCredentials,
) -> (serde_json::Value, serde_json::Value) {
    let parts: Vec<&str> = token.split('.').collect();
    assert_eq!(parts.len(), 3);
    let signed = format!("{}.{}", parts[0], parts[1]);
    let signature = URL_SAFE_NO_PAD.decode(parts[2]).unwrap();
    let public_key = ring::signature::UnparsedPublicKey::new(
        &ring::signature::RSA_PKCS1_2048_8192_SHA256,
        credentials.public_key_der(),
    );
    public_key
        .verify(signed.as_bytes(), &signature)
        .expect("signature must verify");
    let header = serde_json::from_slice(&URL_SAFE_NO_PAD.decode(parts[0]).unwrap()).unwrap();
    let claims = serde_json::from_slice(&URL_SAFE_NO_PAD.decode(parts[1]).unwrap()).unwrap();
    (header, claims)
}

#[test]
fn minted_jwt_is_rs256_signed_for_the_service_with_a_one_hour_lifetime() {
    let credentials = GoogleCredentials::from_env_values(Some(FIXTURE_PATH), None)
        .unwrap()
        .unwrap();
    let issued_at = UNIX_EPOCH + Duration::from_secs(1_800_000_000);
    let token = credentials
        .mint_jwt("https://speech.googleapis.com/", issued_at)
        .unwrap();
    let (header, claims) = verify_jwt(&token, &credentials);
    assert_eq!(header["alg"], "RS256");
    assert_eq!(header["typ"], "JWT");
    assert_eq!(header["kid"], fixture_value()["private_key_id"]);
    assert_eq!(claims["iss"], credentials.client_email());
    assert_eq!(claims["sub"], credentials.client_email());
    assert_eq!(claims["aud"], "https://speech.googleapis.com/");
    assert_eq!(claims["iat"], 1_800_000_000u64);
    assert_eq!(claims["exp"], 1_800_003_600u64);
}

#[tokio::test]
async fn requests_carry_a_bearer_jwt_for_the_endpoint_and_reuse_it() {
    let (fake, endpoint) = FakeTts::start(TtsScript::default()).await;
    let credentials = Arc::new(
        GoogleCredentials::from_env_values(Some(FIXTURE_PATH), None)
            .unwrap()
            .unwrap(),
    );
    let client = TtsClient::new(
        TtsConfig {
            endpoint: endpoint.clone(),
            ..TtsConfig::default()
        },
        Some(credentials.clone()),
    )
    .unwrap();
    client.synthesize("אחת").await.unwrap();
    client.synthesize("שתיים").await.unwrap();
    let record = fake.record.lock().unwrap();
    let headers: Vec<&str> = record
        .authorizations
        .iter()
        .map(|header| header.as_deref().unwrap())
        .collect();
    assert_eq!(headers.len(), 2);
    assert_eq!(
        headers[0], headers[1],
        "a fresh token is reused, not re-minted per request"
    );
    let token = headers[0].strip_prefix("Bearer ").unwrap();
    let (_, claims) = verify_jwt(token, &credentials);
    assert_eq!(claims["aud"], format!("{endpoint}/"));
}

#[tokio::test]
async fn https_endpoints_require_credentials_and_bad_endpoints_are_named() {
    let error = SttClient::new(SttConfig::default(), None).unwrap_err();
    assert!(matches!(error, SpeechError::MissingCredentials { .. }));
    assert!(
        error.to_string().contains("GOOGLE_APPLICATION_CREDENTIALS"),
        "{error}"
    );
    let error = TtsClient::new(TtsConfig::default(), None).unwrap_err();
    assert!(matches!(error, SpeechError::MissingCredentials { .. }));

    let credentials = Arc::new(
        GoogleCredentials::from_env_values(Some(FIXTURE_PATH), None)
            .unwrap()
            .unwrap(),
    );
    assert!(
        SttClient::new(SttConfig::default(), Some(credentials.clone())).is_ok(),
        "TLS client builds lazily"
    );
    assert!(TtsClient::new(TtsConfig::default(), Some(credentials)).is_ok());

    let config = SttConfig {
        endpoint: "ftp://speech.example".to_owned(),
        ..SttConfig::default()
    };
    let error = SttClient::new(config, None).unwrap_err();
    assert!(
        error.to_string().starts_with("GOOGLE_SPEECH_ENDPOINT"),
        "{error}"
    );
    let config = TtsConfig {
        endpoint: "not a url".to_owned(),
        ..TtsConfig::default()
    };
    let error = TtsClient::new(config, None).unwrap_err();
    assert!(
        error.to_string().starts_with("GOOGLE_TTS_ENDPOINT"),
        "{error}"
    );
}

#[test]
fn building_a_client_outside_a_runtime_is_an_error_not_a_panic() {
    let config = SttConfig {
        endpoint: "http://127.0.0.1:9".to_owned(),
        ..SttConfig::default()
    };
    assert_eq!(
        SttClient::new(config, None).unwrap_err(),
        SpeechError::NoRuntime
    );
}

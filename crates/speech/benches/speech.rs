//! Hot paths of the speech crate that run on the call path without the network:
//! minting a self-signed JWT (done in the request interceptor when the cached token is stale)
//! and splitting long replies for Text-to-Speech.
#![allow(clippy::unwrap_used, missing_docs)]

use std::time::SystemTime;

use criterion::{Criterion, criterion_group, criterion_main};
use speech::{GoogleCredentials, MAX_TTS_INPUT_BYTES, split_for_synthesis};

const FIXTURE_PATH: &str = concat!(
    env!("CARGO_MANIFEST_DIR"),
    "/tests/data/test-service-account.json"
);

fn mint_jwt(c: &mut Criterion) {
    let credentials = GoogleCredentials::from_env_values(Some(FIXTURE_PATH), None)
        .unwrap()
        .unwrap();
    c.bench_function("mint_jwt_rs256_2048", |b| {
        b.iter(|| {
            credentials
                .mint_jwt("https://speech.googleapis.com/", SystemTime::now())
                .unwrap()
        })
    });
}

fn split_long_reply(c: &mut Criterion) {
    let text = "זהו משפט ארוך למדי שחוזר על עצמו. ".repeat(500); // ~30 KB
    c.bench_function("split_for_synthesis_30kb", |b| {
        b.iter(|| split_for_synthesis(std::hint::black_box(&text), MAX_TTS_INPUT_BYTES).len())
    });
}

criterion_group!(benches, mint_jwt, split_long_reply);
criterion_main!(benches);

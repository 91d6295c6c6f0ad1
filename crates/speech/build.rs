//! Compiles the Google Speech/TTS protos in `proto/` with protox (pure Rust, no system `protoc`)
//! and generates prost messages plus tonic clients and servers.

use std::path::PathBuf;

const SERVICE_PROTOS: [&str; 2] = [
    "google/cloud/speech/v1/cloud_speech.proto",
    "google/cloud/texttospeech/v1/cloud_tts.proto",
];
const RPC_STATUS_PROTO: &str = "google/rpc/status.proto";

fn main() -> Result<(), Box<dyn std::error::Error>> {
    let manifest_dir = PathBuf::from(std::env::var("CARGO_MANIFEST_DIR")?);
    let proto_root = manifest_dir.join("../../proto");
    for file in SERVICE_PROTOS.iter().chain([&RPC_STATUS_PROTO]) {
        println!("cargo:rerun-if-changed={}", proto_root.join(file).display());
    }
    // protox bundles google/protobuf/*.proto (Duration, Any, BoolValue); prost maps those to
    // `prost_types` / Rust primitives by default.
    let service_descriptors = protox::compile(SERVICE_PROTOS, [&proto_root])?;
    // Kept for the wire-number test, which checks every field against Google's table.
    let out_dir = PathBuf::from(std::env::var("OUT_DIR")?);
    std::fs::write(
        out_dir.join("speech_descriptors.bin"),
        prost::Message::encode_to_vec(&service_descriptors),
    )?;
    tonic_prost_build::configure()
        .build_server(true)
        .build_client(true)
        // The generated modules are flattened under `crate::proto`, so the reference to
        // `google.rpc.Status` must be spelled absolutely instead of prost's `super::super::...`;
        // an extern path is not generated here, hence the second pass below.
        .extern_path(".google.rpc", "crate::proto::rpc")
        // Caller audio goes out as the `Bytes` the replay buffer already holds (no copy).
        .bytes(".google.cloud.speech.v1.StreamingRecognizeRequest.audio_content")
        .compile_fds(service_descriptors)?;
    let status_descriptors = protox::compile([RPC_STATUS_PROTO], [&proto_root])?;
    tonic_prost_build::configure()
        .build_server(false)
        .build_client(false)
        .compile_fds(status_descriptors)?;
    Ok(())
}

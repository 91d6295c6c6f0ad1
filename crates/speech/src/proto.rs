//! Generated protobuf types, tonic clients and tonic servers (see `proto/` at the workspace root).
//!
//! Field numbers follow Google's published definitions exactly; the `.proto` files list the
//! fields crmd leaves out so the numbers are never reused.

/// `google.cloud.speech.v1`: `Speech/StreamingRecognize` with `speech_client` and `speech_server`.
#[allow(clippy::all, missing_docs, rust_2018_idioms)]
pub mod speech_v1 {
    include!(concat!(env!("OUT_DIR"), "/google.cloud.speech.v1.rs"));
}

/// `google.cloud.texttospeech.v1`: `SynthesizeSpeech` and `StreamingSynthesize` with
/// `text_to_speech_client` and `text_to_speech_server`.
#[allow(clippy::all, missing_docs, rust_2018_idioms)]
pub mod texttospeech_v1 {
    include!(concat!(env!("OUT_DIR"), "/google.cloud.texttospeech.v1.rs"));
}

/// `google.rpc`: the `Status` error model carried inside responses.
#[allow(clippy::all, missing_docs, rust_2018_idioms)]
pub mod rpc {
    include!(concat!(env!("OUT_DIR"), "/google.rpc.rs"));
}

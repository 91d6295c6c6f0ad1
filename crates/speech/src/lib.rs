//! Google Cloud Speech-to-Text and Text-to-Speech over gRPC (tonic + prost).
//!
//! `proto` holds the generated wire types, clients and servers for the subset of
//! `google.cloud.speech.v1`, `google.cloud.texttospeech.v1` and `google.rpc` that crmd uses.
//! The servers are generated so tests and simulators can run in-process stand-ins of Google.

pub mod proto;

//! crmd's composition root as a library: everything `main.rs` wires, callable from tests and
//! tools so that they can start a complete server in-process.
//!
//! It builds on the library crates and adds no logic of its own beyond choosing which parts run
//! (live calls or the offline fallback) from the validated configuration.

pub mod calls;

//! mulaw (skeleton)

//! speech (skeleton)

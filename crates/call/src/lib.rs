//! call (skeleton)

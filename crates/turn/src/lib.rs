//! turn (skeleton)

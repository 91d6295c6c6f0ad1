//! edge (skeleton)

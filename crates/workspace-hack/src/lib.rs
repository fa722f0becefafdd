//! Feature unification for the workspace; no code.
//!
//! Cargo resolves a dependency's features from the packages a command
//! selects, so `cargo run -p trainer` and `cargo run -p sampler` used to
//! build tch, torch-sys and `tensor` with different features of their shared
//! dependencies, and each compiled them again. This crate's manifest turns on
//! the union of those features; `tensor` depends on it, so every build of the
//! workspace resolves the same features and reuses the same artifacts.
//! `cargo xtask tidy` checks that this stays true.

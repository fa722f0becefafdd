//! Empty: it only makes Cargo resolve this crate's `[build-dependencies]`
//! (host-side features; see `Cargo.toml`).

fn main() {}

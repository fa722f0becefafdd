// Shared by the build scripts that link libtorch, through `include!` (so no
// inner attributes or doc comments here): `libtorch_link.rs`, used by every
// crate, and `crates/tensor/build.rs`, which also compiles the c10d shim.
// See `libtorch_link.rs` for what and why.

use std::env;
use std::path::{Path, PathBuf};

/// The libtorch root (holding `lib/` and `include/`) named by `LIBTORCH_LIB`
/// or `LIBTORCH`, as torch-sys reads them.
#[allow(dead_code)]
fn libtorch_root() -> Option<PathBuf> {
    if let Ok(lib) = env::var("LIBTORCH_LIB") {
        return Some(PathBuf::from(lib));
    }
    Some(PathBuf::from(env::var("LIBTORCH").ok()?))
}

/// Adds the rpath to libtorch's `lib/` and keeps `libtorch_cuda.so` linked;
/// returns the canonical `lib/` folder, or `None` (with a warning) when
/// libtorch is not set up.
fn link_libtorch() -> Option<PathBuf> {
    println!("cargo:rerun-if-env-changed=LIBTORCH");
    println!("cargo:rerun-if-env-changed=LIBTORCH_LIB");
    let os = env::var("CARGO_CFG_TARGET_OS").unwrap_or_default();
    if os != "linux" && os != "macos" {
        return None;
    }
    let Some(root) = libtorch_root() else {
        println!("cargo:warning=LIBTORCH is not set; run `cargo xtask setup`");
        return None;
    };
    let lib = root.join("lib");
    // Rebuild when `.libtorch` is pointed somewhere else.
    println!("cargo:rerun-if-changed={}", lib.display());
    let Ok(lib) = lib.canonicalize() else {
        println!(
            "cargo:warning=libtorch not found at {}; run `cargo xtask setup`",
            lib.display()
        );
        return None;
    };
    println!("cargo:rustc-link-arg=-Wl,-rpath,{}", lib.display());
    let cuda = Path::new(&lib).join("libtorch_cuda.so");
    if os == "linux" && cuda.exists() {
        println!(
            "cargo:rustc-link-arg=-Wl,--no-as-needed,{},--as-needed",
            cuda.display()
        );
    }
    Some(lib)
}

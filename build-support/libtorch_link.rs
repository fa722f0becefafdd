//! Build script shared by every crate that links libtorch.
//!
//! torch-sys tells the linker *what* to link but not *where to find it at run
//! time*, and on Linux the default `--as-needed` drops `libtorch_cuda.so`
//! because no symbol of it is referenced directly: CUDA then reads as
//! unavailable on a GPU machine. This script, used as `build = ...` by each
//! crate, fixes both for all of the crate's binaries, tests and examples:
//!
//! - an rpath to the resolved libtorch `lib/` folder, so that the binaries in
//!   `target/` run from any directory without `LD_LIBRARY_PATH`;
//! - `libtorch_cuda.so` linked with `--no-as-needed` when libtorch has it.
//!
//! `cargo xtask doctor` checks the result on the built `lmzh` binary.

use std::env;
use std::path::{Path, PathBuf};

fn libtorch_lib_dir() -> Option<PathBuf> {
    if let Ok(lib) = env::var("LIBTORCH_LIB") {
        return Some(PathBuf::from(lib).join("lib"));
    }
    let root = PathBuf::from(env::var("LIBTORCH").ok()?);
    Some(root.join("lib"))
}

fn main() {
    println!("cargo:rerun-if-env-changed=LIBTORCH");
    println!("cargo:rerun-if-env-changed=LIBTORCH_LIB");
    let os = env::var("CARGO_CFG_TARGET_OS").unwrap_or_default();
    if os != "linux" && os != "macos" {
        return;
    }
    let Some(lib) = libtorch_lib_dir() else {
        println!("cargo:warning=LIBTORCH is not set; run `cargo xtask setup`");
        return;
    };
    // Rebuild when `.libtorch` is pointed somewhere else.
    println!("cargo:rerun-if-changed={}", lib.display());
    let Ok(lib) = lib.canonicalize() else {
        println!(
            "cargo:warning=libtorch not found at {}; run `cargo xtask setup`",
            lib.display()
        );
        return;
    };
    println!("cargo:rustc-link-arg=-Wl,-rpath,{}", lib.display());
    let cuda = Path::new(&lib).join("libtorch_cuda.so");
    if os == "linux" && cuda.exists() {
        println!(
            "cargo:rustc-link-arg=-Wl,--no-as-needed,{},--as-needed",
            cuda.display()
        );
    }
}

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

include!("libtorch_common.rs");

fn main() {
    link_libtorch();
}

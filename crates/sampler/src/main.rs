//! The `sampler` binary. Not implemented yet: it says so and exits non-zero
//! rather than pretending to work.

fn main() -> std::process::ExitCode {
    eprintln!(
        "error: the sampler is not implemented yet in this version of LMZH; \
         `cargo xtask doctor` checks the installation meanwhile"
    );
    std::process::ExitCode::from(2)
}

//! The log output of the LMZH binaries (`trainer`, `sampler`, `lmzh`), set
//! up in one place (libraries only emit `tracing` events).
//!
//! - Quiet by default: warnings and errors only; `-v` adds info, `-vv`
//!   debug, `-vvv` trace. `RUST_LOG` (an `EnvFilter`), when set, wins.
//! - Lines go to stderr, so stdout keeps only what a command prints as its
//!   result.
//! - Colour only when stderr is a terminal and `NO_COLOR` is unset: logs
//!   piped to a file, `tee` or CI carry no escape codes.

use std::io::IsTerminal;

use tracing_subscriber::EnvFilter;

/// The level filter for `verbose` (the count of `-v` flags).
pub fn level(verbose: u8) -> &'static str {
    match verbose {
        0 => "warn",
        1 => "info",
        2 => "debug",
        _ => "trace",
    }
}

/// True when log lines may carry colour: stderr is a terminal and
/// `NO_COLOR` is unset or empty (<https://no-color.org>).
pub fn colour() -> bool {
    std::io::stderr().is_terminal() && std::env::var_os("NO_COLOR").is_none_or(|v| v.is_empty())
}

/// Installs the global subscriber of a binary (once; later calls do
/// nothing): `RUST_LOG` if set, else [`level`]`(verbose)`, to stderr,
/// coloured only as [`colour`] says.
pub fn init(verbose: u8) {
    let filter =
        EnvFilter::try_from_default_env().unwrap_or_else(|_| EnvFilter::new(level(verbose)));
    let _ = tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_ansi(colour())
        .with_writer(std::io::stderr)
        .try_init();
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn each_v_shows_more() {
        assert_eq!(
            (0..4).map(level).collect::<Vec<_>>(),
            ["warn", "info", "debug", "trace"]
        );
        assert_eq!(level(9), "trace");
    }
}

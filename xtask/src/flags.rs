//! The small flag parser of every command: `--help`, `-h` and `help`
//! anywhere print the command's usage; a flag that needs a value says so; an
//! unknown flag or argument is an error that shows the usage.

use std::str::FromStr;

use anyhow::{anyhow, Error, Result};

/// What a command line asks for: run with these options, or print a usage.
#[derive(Debug, Clone, PartialEq)]
pub enum Parsed<T> {
    Run(T),
    Help(&'static str),
}

impl<T> Parsed<T> {
    pub fn map<U>(self, f: impl FnOnce(T) -> U) -> Parsed<U> {
        match self {
            Parsed::Run(t) => Parsed::Run(f(t)),
            Parsed::Help(u) => Parsed::Help(u),
        }
    }
}

/// `--help`, `-h` or `help`.
pub fn is_help(arg: &str) -> bool {
    matches!(arg, "--help" | "-h" | "help")
}

/// The arguments of one command (`cargo xtask bench sample ...`), read in
/// order.
#[derive(Debug)]
pub struct Flags<'a> {
    command: &'static str,
    usage: &'static str,
    args: &'a [String],
    pos: usize,
}

impl<'a> Flags<'a> {
    pub fn new(command: &'static str, usage: &'static str, args: &'a [String]) -> Self {
        Flags {
            command,
            usage,
            args,
            pos: 0,
        }
    }

    /// Whether the command line asks for the usage: `--help` or `-h`
    /// anywhere, or `help` first.
    pub fn wants_help(&self) -> bool {
        self.args.iter().any(|a| a == "--help" || a == "-h")
            || self.args.first().is_some_and(|a| a == "help")
    }

    /// [`Parsed::Help`] with this command's usage.
    pub fn help<T>(&self) -> Parsed<T> {
        Parsed::Help(self.usage)
    }

    /// The next argument.
    pub fn next(&mut self) -> Option<&'a str> {
        let arg = self.args.get(self.pos)?;
        self.pos += 1;
        Some(arg)
    }

    /// The value after `flag`.
    pub fn value(&mut self, flag: &str) -> Result<&'a str> {
        self.next()
            .ok_or_else(|| self.error(&format!("{flag} needs a value")))
    }

    /// The value after `flag`, parsed.
    pub fn parse<T: FromStr>(&mut self, flag: &str) -> Result<T> {
        let v = self.value(flag)?;
        v.parse()
            .map_err(|_| self.error(&format!("{flag} {v:?} is not a valid value")))
    }

    /// An error for an argument this command does not take.
    pub fn unknown(&self, arg: &str) -> Error {
        let what = if arg.starts_with('-') {
            "unknown flag"
        } else {
            "unexpected argument"
        };
        self.error(&format!("{what} {arg:?}"))
    }

    /// `message` for this command, followed by its usage.
    pub fn error(&self, message: &str) -> Error {
        let space = if self.command.is_empty() { "" } else { " " };
        anyhow!(
            "`cargo xtask{space}{}`: {message}\n\n{}",
            self.command,
            self.usage
        )
    }
}

/// A command without flags: its usage, or nothing to parse.
pub fn none(command: &'static str, usage: &'static str, args: &[String]) -> Result<Parsed<()>> {
    let mut f = Flags::new(command, usage, args);
    if f.wants_help() {
        return Ok(f.help());
    }
    match f.next() {
        Some(arg) => Err(f.unknown(arg)),
        None => Ok(Parsed::Run(())),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn args(s: &str) -> Vec<String> {
        s.split_whitespace().map(String::from).collect()
    }

    #[test]
    fn help_in_any_spelling_wins_and_errors_show_the_usage() {
        for a in ["--help", "-h", "help", "--x --help", "-h --x"] {
            assert_eq!(
                none("tidy", "USAGE", &args(a)).unwrap(),
                Parsed::Help("USAGE")
            );
        }
        // `help` only counts first: elsewhere it is an argument.
        let err = none("tidy", "USAGE", &args("x help"))
            .unwrap_err()
            .to_string();
        assert!(err.contains("unexpected argument \"x\""), "{err}");
        let err = none("tidy", "USAGE", &args("--x")).unwrap_err().to_string();
        assert!(
            err.contains("`cargo xtask tidy`: unknown flag \"--x\"") && err.ends_with("USAGE"),
            "{err}"
        );
        assert_eq!(none("tidy", "USAGE", &[]).unwrap(), Parsed::Run(()));
    }

    #[test]
    fn values_are_required_and_parsed() {
        let a = args("--rounds 3 --rounds x --rounds");
        let mut f = Flags::new("bench", "USAGE", &a);
        assert_eq!(f.next(), Some("--rounds"));
        assert_eq!(f.parse::<usize>("--rounds").unwrap(), 3);
        f.next();
        let err = f.parse::<usize>("--rounds").unwrap_err().to_string();
        assert!(err.contains("--rounds \"x\" is not a valid value"), "{err}");
        f.next();
        let err = f.value("--rounds").unwrap_err().to_string();
        assert!(err.contains("--rounds needs a value"), "{err}");
    }
}

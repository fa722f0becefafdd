//! What [`Trainer::run`](crate::Trainer::run) reports as it goes: a
//! [`Progress`] is told the step, the latest numbers ([`Status`]: loss,
//! rate, FD) and the end. `()` shows nothing; [`Lines`] prints a plain line
//! now and then (for logs, CI, `nohup`, `| tee`); with the `cli` feature,
//! [`Bar`] is a terminal progress bar with rate and ETA.

use std::fmt;
use std::io::Write;
use std::time::{Duration, Instant};

/// Receives the training loop's progress (all methods do nothing by default).
pub trait Progress {
    /// The loop starts at step `step` of `total`.
    fn start(&mut self, _step: u64, _total: u64) {}
    /// `step` steps are done.
    fn position(&mut self, _step: u64) {}
    /// New numbers: after a metrics line, or an evaluation.
    fn status(&mut self, _status: &Status) {}
    /// The loop ended, normally (`ok`) or on an error.
    fn finish(&mut self, _ok: bool) {}
}

/// Shows nothing.
impl Progress for () {}

/// The latest numbers of a run; displayed as
/// `loss 0.0812  47 img/s  FD-DIGITS 41.23 (step 500)`.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct Status {
    /// Mean loss since the previous metrics line.
    pub loss: Option<f64>,
    /// Training images per second, all processes together.
    pub images_per_second: Option<f64>,
    /// The last evaluation, once one has run.
    pub fd: Option<Fd>,
}

/// The Frechet distance of one evaluation.
#[derive(Debug, Clone, PartialEq)]
pub struct Fd {
    /// The feature net's label, as in `FD-DIGITS`.
    pub label: String,
    pub value: f64,
    /// The step it was measured at.
    pub step: u64,
}

impl fmt::Display for Status {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let mut parts = Vec::new();
        if let Some(loss) = self.loss {
            parts.push(format!("loss {loss:.4}"));
        }
        if let Some(rate) = self.images_per_second {
            parts.push(format!("{rate:.0} img/s"));
        }
        if let Some(fd) = &self.fd {
            parts.push(fd.to_string());
        }
        f.write_str(&parts.join("  "))
    }
}

/// `FD-DIGITS 41.230 (step 500)`.
impl fmt::Display for Fd {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(
            f,
            "FD-{} {:.3} (step {})",
            self.label, self.value, self.step
        )
    }
}

/// Plain progress lines for output that is not a terminal: one every
/// `interval` (30 s from [`Lines::stderr`]) or every tenth of the run,
/// whichever comes first, and one at the end:
///
/// ```text
/// step 300/1000 (30%)  loss 0.0812  47 img/s  elapsed 3m12s  ETA 7m28s  FD-DIGITS 41.230 (step 250)
/// ```
///
/// No colour or cursor codes, one line at a time.
#[derive(Debug)]
pub struct Lines<W: Write> {
    out: W,
    interval: Duration,
    total: u64,
    first_step: u64,
    step: u64,
    started: Instant,
    last_line: Instant,
    /// The step of the last line printed.
    printed: Option<u64>,
    status: Status,
}

impl Lines<std::io::Stderr> {
    /// Lines on stderr, one every 30 s or tenth of the run.
    pub fn stderr() -> Self {
        Lines::new(std::io::stderr(), Duration::from_secs(30))
    }
}

impl<W: Write> Lines<W> {
    /// Lines to `out`, one every `interval` or tenth of the run.
    pub fn new(out: W, interval: Duration) -> Self {
        let now = Instant::now();
        Lines {
            out,
            interval,
            total: 0,
            first_step: 0,
            step: 0,
            started: now,
            last_line: now,
            printed: None,
            status: Status::default(),
        }
    }

    /// The writer, e.g. to read back what was printed.
    pub fn into_inner(self) -> W {
        self.out
    }

    /// Steps per tenth of the run (at least one).
    fn chunk(&self) -> u64 {
        (self.total.saturating_sub(self.first_step) / 10).max(1)
    }

    /// The line for the current step.
    pub fn line(&self) -> String {
        let mut line = format!("step {}/{}", self.step, self.total);
        if self.total > 0 {
            let pct = 100.0 * self.step as f64 / self.total as f64;
            line.push_str(&format!(" ({pct:.0}%)"));
        }
        if let Some(loss) = self.status.loss {
            line.push_str(&format!("  loss {loss:.4}"));
        }
        if let Some(rate) = self.status.images_per_second {
            line.push_str(&format!("  {rate:.0} img/s"));
        }
        let elapsed = self.started.elapsed();
        line.push_str(&format!("  elapsed {}", duration(elapsed)));
        let done = self.step.saturating_sub(self.first_step);
        let left = self.total.saturating_sub(self.step);
        if left == 0 {
            line.push_str("  done");
        } else if done > 0 {
            let eta = elapsed.mul_f64(left as f64 / done as f64);
            line.push_str(&format!("  ETA {}", duration(eta)));
        } else {
            line.push_str("  ETA ?");
        }
        if let Some(fd) = &self.status.fd {
            line.push_str(&format!("  {fd}"));
        }
        line
    }

    fn print(&mut self) {
        let line = self.line();
        // A progress line that cannot be written is no reason to stop training.
        let _ = writeln!(self.out, "{line}").and_then(|()| self.out.flush());
        self.printed = Some(self.step);
        self.last_line = Instant::now();
    }
}

impl<W: Write> Progress for Lines<W> {
    fn start(&mut self, step: u64, total: u64) {
        self.total = total;
        self.first_step = step;
        self.step = step;
        self.started = Instant::now();
        self.last_line = self.started;
    }
    fn position(&mut self, step: u64) {
        self.step = step;
        let next_tenth = self
            .printed
            .map_or(self.first_step, |p| p - p % self.chunk())
            + self.chunk();
        if step >= next_tenth || self.last_line.elapsed() >= self.interval {
            self.print();
        }
    }
    fn status(&mut self, status: &Status) {
        self.status = status.clone();
    }
    fn finish(&mut self, _ok: bool) {
        if self.printed != Some(self.step) {
            self.print();
        }
    }
}

/// `42s`, `3m05s`, `2h07m`.
fn duration(d: Duration) -> String {
    let s = d.as_secs();
    if s < 60 {
        format!("{s}s")
    } else if s < 3600 {
        format!("{}m{:02}s", s / 60, s % 60)
    } else {
        format!("{}h{:02}m", s / 3600, s % 3600 / 60)
    }
}

/// A terminal progress bar: steps, status line, elapsed time and ETA.
#[cfg(feature = "cli")]
#[derive(Debug)]
pub struct Bar(indicatif::ProgressBar);

#[cfg(feature = "cli")]
impl Bar {
    pub fn new() -> Self {
        let bar = indicatif::ProgressBar::new(0);
        bar.set_style(
            indicatif::ProgressStyle::with_template(
                "{bar:30} {pos}/{len} steps  {msg}  [{elapsed} < {eta}]",
            )
            .expect("valid template"),
        );
        Bar(bar)
    }
}

#[cfg(feature = "cli")]
impl Default for Bar {
    fn default() -> Self {
        Bar::new()
    }
}

#[cfg(feature = "cli")]
impl Progress for Bar {
    fn start(&mut self, step: u64, total: u64) {
        self.0.set_length(total);
        self.0.set_position(step);
        self.0.reset_elapsed();
        self.0.reset_eta();
    }
    fn position(&mut self, step: u64) {
        self.0.set_position(step);
    }
    fn status(&mut self, status: &Status) {
        self.0.set_message(status.to_string());
    }
    fn finish(&mut self, ok: bool) {
        if ok {
            self.0.finish_and_clear();
        } else {
            self.0.abandon();
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn printed(lines: Lines<Vec<u8>>) -> Vec<String> {
        String::from_utf8(lines.into_inner())
            .unwrap()
            .lines()
            .map(str::to_string)
            .collect()
    }

    #[test]
    fn a_line_every_tenth_and_at_the_end() {
        let mut p = Lines::new(Vec::new(), Duration::from_secs(3600));
        p.start(0, 100);
        for step in 1..=95 {
            p.status(&Status {
                loss: Some(1.0 / step as f64),
                images_per_second: Some(50.0),
                fd: (step >= 50).then(|| Fd {
                    label: "DIGITS".into(),
                    value: 12.5,
                    step: 50,
                }),
            });
            p.position(step);
        }
        p.finish(false);
        let lines = printed(p);
        let steps: Vec<&str> = lines
            .iter()
            .map(|l| l.split_whitespace().nth(1).unwrap())
            .collect();
        assert_eq!(
            steps,
            [
                "10/100", "20/100", "30/100", "40/100", "50/100", "60/100", "70/100", "80/100",
                "90/100", "95/100"
            ]
        );
        assert!(lines[0].starts_with("step 10/100 (10%)  loss 0.1000  50 img/s  elapsed "));
        assert!(
            lines[0].contains("  ETA ") && !lines[0].contains("FD"),
            "{}",
            lines[0]
        );
        assert!(
            lines[4].ends_with("FD-DIGITS 12.500 (step 50)"),
            "{}",
            lines[4]
        );
        assert!(lines.iter().all(|l| !l.contains('\x1b')));
    }

    #[test]
    fn a_resumed_run_counts_its_tenths_and_eta_from_its_start() {
        let mut p = Lines::new(Vec::new(), Duration::from_secs(3600));
        p.start(500, 1000);
        for step in 501..=1000 {
            p.position(step);
        }
        p.finish(true);
        let lines = printed(p);
        assert_eq!(lines.len(), 10, "{lines:?}");
        assert!(
            lines[0].starts_with("step 550/1000 (55%)  elapsed "),
            "{}",
            lines[0]
        );
        assert!(lines[9].starts_with("step 1000/1000 (100%)") && lines[9].ends_with("done"));
    }

    #[test]
    fn the_interval_prints_between_tenths() {
        let mut p = Lines::new(Vec::new(), Duration::ZERO);
        p.start(0, 1000);
        p.position(1);
        p.position(2);
        p.finish(true);
        assert_eq!(printed(p).len(), 2, "the end was already printed");
    }

    #[test]
    fn durations_read_short() {
        assert_eq!(duration(Duration::from_secs(42)), "42s");
        assert_eq!(duration(Duration::from_secs(185)), "3m05s");
        assert_eq!(duration(Duration::from_secs(7620)), "2h07m");
    }
}

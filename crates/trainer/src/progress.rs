//! What [`Trainer::run`](crate::Trainer::run) reports as it goes: a
//! [`Progress`] is told the step, a status line (loss, rate, FD) and the end.
//! `()` shows nothing; with the `cli` feature, [`Bar`] is a terminal
//! progress bar with rate and ETA.

/// Receives the training loop's progress (all methods do nothing by default).
pub trait Progress {
    /// The loop starts at step `step` of `total`.
    fn start(&mut self, _step: u64, _total: u64) {}
    /// `step` steps are done.
    fn position(&mut self, _step: u64) {}
    /// A new status line, e.g. `loss 0.1234  52 img/s`.
    fn message(&mut self, _message: &str) {}
    /// The loop ended, normally (`ok`) or on an error.
    fn finish(&mut self, _ok: bool) {}
}

/// Shows nothing.
impl Progress for () {}

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
    fn message(&mut self, message: &str) {
        self.0.set_message(message.to_string());
    }
    fn finish(&mut self, ok: bool) {
        if ok {
            self.0.finish_and_clear();
        } else {
            self.0.abandon();
        }
    }
}

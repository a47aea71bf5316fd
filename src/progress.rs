//! Progress reporting whose return value can cancel: one path for the terminal bar, the studio
//! and tests, so cancel works the same everywhere.

/// Receives progress; returning `false` asks the job to stop (it then ends with `Error::Cancelled`).
pub trait Progress: Send {
    /// `stage` names the current step ("decode", "encode crf 32", ...); `done` of `total` units.
    fn step(&mut self, stage: &str, done: u64, total: u64) -> bool;
}

/// Ignores progress and never cancels.
#[derive(Debug, Default, Clone, Copy)]
pub struct NoProgress;

impl Progress for NoProgress {
    fn step(&mut self, _stage: &str, _done: u64, _total: u64) -> bool {
        true
    }
}

impl<F: FnMut(&str, u64, u64) -> bool + Send> Progress for F {
    fn step(&mut self, stage: &str, done: u64, total: u64) -> bool {
        self(stage, done, total)
    }
}

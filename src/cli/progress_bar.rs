//! A small terminal progress bar on stderr (the CLI's implementation of [`Progress`]).

use std::io::{IsTerminal, Write};
use std::time::Instant;

use crate::progress::Progress;

/// Draws `stage [#####.....] done/total ETA` on one stderr line; silent when stderr is not a
/// terminal (logs and tests stay clean) or when `quiet` is set.
pub struct Bar {
    start: Instant,
    last_draw: Option<Instant>,
    enabled: bool,
    drew: bool,
}

impl Bar {
    pub fn new(quiet: bool) -> Self {
        Bar {
            start: Instant::now(),
            last_draw: None,
            enabled: !quiet && std::io::stderr().is_terminal(),
            drew: false,
        }
    }

    /// Clears the bar line (call before printing results).
    pub fn finish(&mut self) {
        if self.drew {
            eprint!("\r\x1b[2K");
            let _ = std::io::stderr().flush();
            self.drew = false;
        }
    }
}

impl Drop for Bar {
    fn drop(&mut self) {
        self.finish();
    }
}

impl Progress for Bar {
    fn step(&mut self, stage: &str, done: u64, total: u64) -> bool {
        if !self.enabled {
            return true;
        }
        let now = Instant::now();
        if self
            .last_draw
            .is_some_and(|t| now.duration_since(t).as_millis() < 100 && done < total)
        {
            return true;
        }
        self.last_draw = Some(now);
        let frac = if total > 0 {
            done as f64 / total as f64
        } else {
            0.0
        };
        let width = 24;
        let filled = ((frac * width as f64).round() as usize).min(width);
        let elapsed = self.start.elapsed().as_secs_f64();
        let eta = if frac > 0.0 && frac < 1.0 {
            format!(" ETA {:.0}s", elapsed / frac - elapsed)
        } else {
            String::new()
        };
        eprint!(
            "\r\x1b[2K{stage:<20} [{}{}] {done}/{total}{eta}",
            "#".repeat(filled),
            ".".repeat(width - filled)
        );
        let _ = std::io::stderr().flush();
        self.drew = true;
        true
    }
}

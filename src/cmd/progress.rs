//! Progress of long work (`infer`, `bag process`, `eval`, `synth`): a bar on a terminal;
//! where the output is a log file or a pipe (CI, `nohup`, a launch file) the bar is not
//! drawn, and a plain line says how far the work is every [`LINE_EVERY`] instead, so a
//! slow run (MC mode on a CPU) is never silent for long.

use std::sync::Mutex;
use std::time::{Duration, Instant};

use indicatif::{ProgressBar, ProgressStyle};

/// How often the plain line is written when no bar is drawn.
pub const LINE_EVERY: Duration = Duration::from_secs(30);

pub struct Progress {
    bar: ProgressBar,
    /// What is counted ("images", "frames"), for the plain line.
    unit: &'static str,
    /// When the last plain line was written (or the work started) and its position.
    last_line: Mutex<(Instant, u64)>,
}

impl Progress {
    /// `len` things to do (0 when not known yet: see [`Progress::set_length`]); `prefix`
    /// goes before the bar ("test: ").
    pub fn new(len: u64, unit: &'static str, prefix: &str) -> Self {
        let bar = ProgressBar::new(len);
        bar.set_style(
            ProgressStyle::with_template(&format!(
                "{prefix}{{bar:40}} {{pos}}/{{len}} {unit}, {{per_sec}}, ETA {{eta}} {{msg}}"
            ))
            .expect("valid template"),
        );
        Progress {
            bar,
            unit,
            last_line: Mutex::new((Instant::now(), 0)),
        }
    }

    /// One more done.
    pub fn inc(&self) {
        self.bar.inc(1);
        self.line_if_due();
    }

    /// `position` done of `len`.
    pub fn set(&self, position: u64, len: u64) {
        self.bar.set_length(len);
        self.bar.set_position(position);
        self.line_if_due();
    }

    /// Shown after the bar (the image in the work).
    pub fn set_message(&self, message: String) {
        self.bar.set_message(message);
    }

    /// Runs `f` (a log line) with the bar out of the way.
    pub fn suspend<R>(&self, f: impl FnOnce() -> R) -> R {
        self.bar.suspend(f)
    }

    pub fn finish_and_clear(&self) {
        self.bar.finish_and_clear();
    }

    fn line_if_due(&self) {
        if !self.bar.is_hidden() {
            return;
        }
        let mut last = self.last_line.lock().unwrap_or_else(|e| e.into_inner());
        let since = last.0.elapsed();
        if since < LINE_EVERY {
            return;
        }
        let position = self.bar.position();
        eprintln!(
            "{}",
            line(
                position,
                self.bar.length(),
                self.unit,
                position - last.1,
                since
            )
        );
        *last = (Instant::now(), position);
    }
}

/// "12/40 images, 0.40 images/s over the last 30 s, about 70 s left".
fn line(position: u64, len: Option<u64>, unit: &str, recent: u64, since: Duration) -> String {
    let rate = recent as f64 / since.as_secs_f64().max(1e-9);
    let len = len.filter(|&n| n > 0);
    let mut text = match len {
        Some(n) => format!("{position}/{n} {unit}"),
        None => format!("{position} {unit}"),
    };
    text += &format!(
        ", {rate:.2} {unit}/s over the last {:.0} s",
        since.as_secs_f64()
    );
    if let Some(left) = len
        .and_then(|n| n.checked_sub(position))
        .filter(|_| rate > 0.0)
    {
        text += &format!(", about {:.0} s left", left as f64 / rate);
    }
    text
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_plain_line_says_how_far_how_fast_and_how_long_still() {
        let s = Duration::from_secs;
        assert_eq!(
            line(12, Some(40), "images", 12, s(30)),
            "12/40 images, 0.40 images/s over the last 30 s, about 70 s left"
        );
        // Nothing done lately: no estimate rather than an infinite one.
        assert_eq!(
            line(3, Some(9), "frames", 0, s(31)),
            "3/9 frames, 0.00 frames/s over the last 31 s"
        );
        // Length not known.
        assert_eq!(
            line(5, Some(0), "frames", 5, s(30)),
            "5 frames, 0.17 frames/s over the last 30 s"
        );
    }
}

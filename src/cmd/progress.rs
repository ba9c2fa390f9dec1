//! Progress of long work (`infer`, `bag process`, `eval`, `synth`): a bar on a terminal;
//! where the output is a log file or a pipe (CI, `nohup`, a launch file) the bar is not
//! drawn, and a plain line on stderr says how far the work is every [`LINE_EVERY`]
//! instead, also while one slow item is in the work (MC mode on a CPU), so a run is never
//! silent for long.

use std::sync::mpsc::{self, RecvTimeoutError, Sender};
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

use indicatif::{ProgressBar, ProgressStyle};

/// How often the plain line is written when no bar is drawn.
pub const LINE_EVERY: Duration = Duration::from_secs(30);

pub struct Progress {
    bar: ProgressBar,
    /// Writes the plain lines where no bar is drawn; stopped by dropping the sender.
    ticker: Option<(Sender<()>, JoinHandle<()>)>,
}

impl Progress {
    /// `len` things to do (0 when not known yet: see [`Progress::set`]) called `unit`
    /// ("images"); `prefix` goes before the bar ("test: ").
    pub fn new(len: u64, unit: &'static str, prefix: &str) -> Self {
        let bar = ProgressBar::new(len);
        bar.set_style(
            ProgressStyle::with_template(&format!(
                "{prefix}{{bar:40}} {{pos}}/{{len}} {unit}, {{per_sec}}, ETA {{eta}} {{msg}}"
            ))
            .expect("valid template"),
        );
        let ticker = bar.is_hidden().then(|| {
            let (stop, stopped) = mpsc::channel::<()>();
            let bar = bar.clone();
            let thread = std::thread::spawn(move || {
                let (mut since, mut at) = (Instant::now(), 0);
                while let Err(RecvTimeoutError::Timeout) = stopped.recv_timeout(LINE_EVERY) {
                    let position = bar.position();
                    let recent = position.saturating_sub(at);
                    eprintln!(
                        "{}",
                        line(position, bar.length(), unit, recent, since.elapsed())
                    );
                    (since, at) = (Instant::now(), position);
                }
            });
            (stop, thread)
        });
        Progress { bar, ticker }
    }

    /// One more done.
    pub fn inc(&self) {
        self.bar.inc(1);
    }

    /// `position` done of `len`.
    pub fn set(&self, position: u64, len: u64) {
        self.bar.set_length(len);
        self.bar.set_position(position);
    }

    /// Shown after the bar (the image in the work).
    pub fn set_message(&self, message: String) {
        self.bar.set_message(message);
    }

    /// Runs `f` (a log line) with the bar out of the way.
    pub fn suspend<R>(&self, f: impl FnOnce() -> R) -> R {
        self.bar.suspend(f)
    }

    /// The work is over: the bar is cleared and the plain lines stop (as when dropped).
    pub fn finish_and_clear(self) {}
}

impl Drop for Progress {
    fn drop(&mut self) {
        self.bar.finish_and_clear();
        if let Some((stop, thread)) = self.ticker.take() {
            drop(stop);
            thread.join().ok();
        }
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
        // Nothing done lately (one slow item in the work): no estimate rather than an
        // infinite one.
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

//! What the node reports on `/diagnostics` about once a second: input and output rates,
//! latency percentiles (image stamp to publish), dropped and skipped frames, publish
//! failures, the last error, and a level (OK, WARN, ERROR) from what happened since the
//! last report and the bounds in the params file.
//!
//! Time is passed in by the caller (monotonic `Instant`s for rates, milliseconds for
//! latencies), so the aggregation is tested without clocks or ROS.

use std::collections::VecDeque;
use std::time::{Duration, Instant};

use super::slot::SlotCounts;
use crate::config::DiagnosticsParams;

/// diagnostic_msgs/DiagnosticStatus levels.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
pub enum Level {
    Ok = 0,
    Warn = 1,
    Error = 2,
}

/// diagnostic_msgs/DiagnosticStatus contents.
#[derive(Debug, Clone, PartialEq)]
pub struct DiagnosticStatus {
    pub level: Level,
    pub name: String,
    pub message: String,
    pub hardware_id: String,
    pub values: Vec<(String, String)>,
}

/// Static facts shown with every report.
#[derive(Debug, Clone, PartialEq)]
pub struct NodeInfo {
    /// Fully qualified node name; the status name is `<node>: inference`.
    pub node_name: String,
    /// Compute device, e.g. `cuda:0`; also the hardware id.
    pub device: String,
}

/// Rolling statistics over the last [`Monitor::WINDOW`].
#[derive(Debug)]
pub struct Monitor {
    inputs: VecDeque<Instant>,
    /// Publish times and latencies (`None` while the ROS clock is not running yet).
    outputs: VecDeque<(Instant, Option<f64>)>,
    skipped: u64,
    errors: u64,
    publish_failures: u64,
    /// Outputs of frames stamped ahead of the node's clock (no latency recorded).
    stamps_ahead: u64,
    last_error: Option<String>,
    last_skip: Option<String>,
    last_publish_failure: Option<String>,
    errors_at_last_report: u64,
    skipped_at_last_report: u64,
    publish_failures_at_last_report: u64,
    outputs_at_last_report: u64,
    outputs_total: u64,
    slot_at_last_report: SlotCounts,
}

impl Default for Monitor {
    fn default() -> Self {
        Self::new()
    }
}

impl Monitor {
    /// Rates and latency percentiles cover this much recent time.
    pub const WINDOW: Duration = Duration::from_secs(5);

    pub fn new() -> Self {
        Monitor {
            inputs: VecDeque::new(),
            outputs: VecDeque::new(),
            skipped: 0,
            errors: 0,
            publish_failures: 0,
            stamps_ahead: 0,
            last_error: None,
            last_skip: None,
            last_publish_failure: None,
            errors_at_last_report: 0,
            skipped_at_last_report: 0,
            publish_failures_at_last_report: 0,
            outputs_at_last_report: 0,
            outputs_total: 0,
            slot_at_last_report: SlotCounts::default(),
        }
    }

    /// A camera message arrived.
    pub fn on_input(&mut self, now: Instant) {
        self.inputs.push_back(now);
        self.trim(now);
    }

    /// Outputs of a frame were published `latency_ms` after the image's stamp (`None` when
    /// the ROS clock cannot tell yet, e.g. sim time before the first /clock message). A
    /// negative latency (the stamp is ahead of the node's clock: clocks disagree) is
    /// counted, not used in the percentiles.
    pub fn on_output(&mut self, now: Instant, latency_ms: Option<f64>) {
        let latency_ms = match latency_ms {
            Some(ms) if ms < 0.0 => {
                self.stamps_ahead += 1;
                None
            }
            other => other,
        };
        self.outputs.push_back((now, latency_ms));
        self.outputs_total += 1;
        self.trim(now);
    }

    /// A message was skipped as bad input (unknown encoding, corrupt data).
    pub fn on_skip(&mut self, reason: &str) {
        self.skipped += 1;
        self.last_error = Some(reason.to_owned());
        self.last_skip = Some(reason.to_owned());
    }

    /// Publishing an output message failed.
    pub fn on_publish_failure(&mut self, reason: &str) {
        self.publish_failures += 1;
        self.last_error = Some(reason.to_owned());
        self.last_publish_failure = Some(reason.to_owned());
    }

    /// Inference or publishing failed for a frame.
    pub fn on_error(&mut self, reason: &str) {
        self.errors += 1;
        self.last_error = Some(reason.to_owned());
    }

    fn trim(&mut self, now: Instant) {
        let old = |t: &Instant| now.saturating_duration_since(*t) > Self::WINDOW;
        while self.inputs.front().is_some_and(old) {
            self.inputs.pop_front();
        }
        while self.outputs.front().is_some_and(|(t, _)| old(t)) {
            self.outputs.pop_front();
        }
    }

    /// The status for this moment. `extra` (mode, samples, ...) is listed after the
    /// statistics; `slot` gives the keep-latest counters.
    pub fn report(
        &mut self,
        now: Instant,
        info: &NodeInfo,
        extra: &[(&str, String)],
        slot: SlotCounts,
        bounds: &DiagnosticsParams,
    ) -> DiagnosticStatus {
        self.trim(now);
        let window_s = Self::WINDOW.as_secs_f64();
        let input_hz = self.inputs.len() as f64 / window_s;
        let output_hz = self.outputs.len() as f64 / window_s;
        let mut latencies: Vec<f64> = self.outputs.iter().filter_map(|(_, l)| *l).collect();
        latencies.sort_by(f64::total_cmp);
        let p50 = percentile(&latencies, 0.50);
        let p95 = percentile(&latencies, 0.95);

        let received = slot.received - self.slot_at_last_report.received;
        let dropped = slot.dropped - self.slot_at_last_report.dropped;
        let drop_fraction = if received > 0 {
            dropped as f64 / received as f64
        } else {
            0.0
        };
        let new_errors = self.errors - self.errors_at_last_report;
        let new_skips = self.skipped - self.skipped_at_last_report;
        let new_publish_failures = self.publish_failures - self.publish_failures_at_last_report;
        let new_outputs = self.outputs_total - self.outputs_at_last_report;
        self.slot_at_last_report = slot;
        self.errors_at_last_report = self.errors;
        self.skipped_at_last_report = self.skipped;
        self.publish_failures_at_last_report = self.publish_failures;
        self.outputs_at_last_report = self.outputs_total;
        let reason = |r: &Option<String>| r.clone().unwrap_or_else(|| "unknown".to_owned());

        let mut problems = Vec::new();
        let mut level = Level::Ok;
        if new_errors > 0 && new_outputs == 0 {
            level = Level::Error;
            problems.push(format!(
                "inference failing: {}",
                self.last_error.as_deref().unwrap_or("unknown error")
            ));
        } else if new_errors > 0 {
            level = Level::Warn;
            problems.push(format!("{new_errors} frame(s) failed"));
        }
        if new_skips > 0 && new_outputs == 0 && new_errors == 0 {
            level = Level::Error;
            problems.push(format!(
                "every frame skipped as bad input: {}",
                reason(&self.last_skip)
            ));
        } else if new_skips > 0 {
            level = level.max(Level::Warn);
            problems.push(format!(
                "{new_skips} frame(s) skipped as bad input: {}",
                reason(&self.last_skip)
            ));
        }
        if new_publish_failures > 0 {
            level = level.max(Level::Warn);
            problems.push(format!(
                "{new_publish_failures} publish failure(s): {}",
                reason(&self.last_publish_failure)
            ));
        }
        if drop_fraction > bounds.drop_warn_fraction {
            level = level.max(Level::Warn);
            problems.push(format!(
                "dropping {:.0} % of frames (inference slower than the camera)",
                drop_fraction * 100.0
            ));
        }
        if let Some(p95) = p95.filter(|&p| p > bounds.latency_warn_ms) {
            level = level.max(Level::Warn);
            problems.push(format!(
                "latency p95 {p95:.0} ms above {:.0} ms",
                bounds.latency_warn_ms
            ));
        }
        let message = if problems.is_empty() {
            if self.inputs.is_empty() {
                "waiting for images".to_owned()
            } else {
                "running".to_owned()
            }
        } else {
            problems.join("; ")
        };

        let ms = |v: Option<f64>| v.map_or("n/a".to_owned(), |v| format!("{v:.1}"));
        let mut values = vec![
            ("device".to_owned(), info.device.clone()),
            ("input rate (Hz)".to_owned(), format!("{input_hz:.2}")),
            ("output rate (Hz)".to_owned(), format!("{output_hz:.2}")),
            ("latency p50 (ms)".to_owned(), ms(p50)),
            ("latency p95 (ms)".to_owned(), ms(p95)),
            ("frames received".to_owned(), slot.received.to_string()),
            (
                "frames dropped (keep-latest)".to_owned(),
                slot.dropped.to_string(),
            ),
            (
                "frames skipped (bad input)".to_owned(),
                self.skipped.to_string(),
            ),
            ("frames failed".to_owned(), self.errors.to_string()),
            (
                "publish failures".to_owned(),
                self.publish_failures.to_string(),
            ),
            (
                "frames stamped ahead of the node clock".to_owned(),
                self.stamps_ahead.to_string(),
            ),
            (
                "last error".to_owned(),
                self.last_error.clone().unwrap_or_default(),
            ),
        ];
        values.extend(extra.iter().map(|(k, v)| (k.to_string(), v.clone())));
        DiagnosticStatus {
            level,
            name: format!("{}: inference", info.node_name.trim_start_matches('/')),
            message,
            hardware_id: info.device.clone(),
            values,
        }
    }
}

/// Nearest-rank percentile of sorted values.
fn percentile(sorted: &[f64], q: f64) -> Option<f64> {
    if sorted.is_empty() {
        return None;
    }
    let rank = ((q * sorted.len() as f64).ceil() as usize).clamp(1, sorted.len());
    Some(sorted[rank - 1])
}

#[cfg(test)]
mod tests {
    use super::*;

    fn info() -> NodeInfo {
        NodeInfo {
            node_name: "/robot/bayes_perception".into(),
            device: "cuda:0".into(),
        }
    }

    fn value<'a>(s: &'a DiagnosticStatus, key: &str) -> &'a str {
        &s.values.iter().find(|(k, _)| k == key).unwrap().1
    }

    #[test]
    fn rates_and_latency_percentiles_over_the_window() {
        let t0 = Instant::now();
        let mut m = Monitor::new();
        // 10 Hz input for 5 s, outputs for every other frame with latencies 1..=25 ms.
        for i in 0..50u64 {
            let t = t0 + Duration::from_millis(100 * i);
            m.on_input(t);
            if i % 2 == 0 {
                m.on_output(t, Some((i / 2 + 1) as f64));
            }
        }
        let now = t0 + Duration::from_millis(4950);
        let s = m.report(
            now,
            &info(),
            &[("mode", "mc".into())],
            SlotCounts {
                received: 50,
                dropped: 25,
            },
            &DiagnosticsParams {
                drop_warn_fraction: 0.6,
                ..Default::default()
            },
        );
        assert_eq!(value(&s, "input rate (Hz)"), "10.00");
        assert_eq!(value(&s, "output rate (Hz)"), "5.00");
        assert_eq!(value(&s, "latency p50 (ms)"), "13.0");
        assert_eq!(value(&s, "latency p95 (ms)"), "24.0");
        assert_eq!(value(&s, "frames dropped (keep-latest)"), "25");
        assert_eq!(value(&s, "mode"), "mc");
        assert_eq!(s.level, Level::Ok, "{}", s.message);
        assert_eq!(s.name, "robot/bayes_perception: inference");
        assert_eq!(s.hardware_id, "cuda:0");
        // Ten seconds later with no traffic the window is empty.
        let s = m.report(
            now + Duration::from_secs(10),
            &info(),
            &[],
            SlotCounts {
                received: 50,
                dropped: 25,
            },
            &DiagnosticsParams::default(),
        );
        assert_eq!(value(&s, "input rate (Hz)"), "0.00");
        assert_eq!(value(&s, "latency p95 (ms)"), "n/a");
        assert_eq!(s.message, "waiting for images");
    }

    #[test]
    fn warns_on_drops_and_latency_and_errors_when_every_frame_fails() {
        let t0 = Instant::now();
        let bounds = DiagnosticsParams {
            latency_warn_ms: 100.0,
            drop_warn_fraction: 0.5,
        };
        let mut m = Monitor::new();
        m.on_input(t0);
        m.on_output(t0, Some(250.0));
        m.on_output(t0, None);
        let s = m.report(
            t0,
            &info(),
            &[],
            SlotCounts {
                received: 10,
                dropped: 8,
            },
            &bounds,
        );
        assert_eq!(s.level, Level::Warn);
        assert!(
            s.message.contains("dropping 80 %") && s.message.contains("latency p95 250 ms"),
            "{}",
            s.message
        );
        // The drop fraction is per report period: no new drops, no drop warning.
        let later = t0 + Duration::from_secs(6);
        m.on_input(later);
        m.on_output(later, Some(20.0));
        let s = m.report(
            later,
            &info(),
            &[],
            SlotCounts {
                received: 11,
                dropped: 8,
            },
            &bounds,
        );
        assert_eq!(s.level, Level::Ok, "{}", s.message);
        // Failures without any output: ERROR with the reason; a bad message is a skip.
        m.on_skip("unsupported encoding `nv12`");
        m.on_error("inference failed: CUDA out of memory");
        let s = m.report(
            later + Duration::from_secs(1),
            &info(),
            &[],
            SlotCounts {
                received: 12,
                dropped: 8,
            },
            &bounds,
        );
        assert_eq!(s.level, Level::Error);
        assert!(s.message.contains("CUDA out of memory"), "{}", s.message);
        assert_eq!(value(&s, "frames skipped (bad input)"), "1");
        assert_eq!(
            value(&s, "last error"),
            "inference failed: CUDA out of memory"
        );
    }

    #[test]
    fn percentile_nearest_rank() {
        assert_eq!(percentile(&[], 0.5), None);
        assert_eq!(percentile(&[7.0], 0.95), Some(7.0));
        let v: Vec<f64> = (1..=100).map(f64::from).collect();
        assert_eq!(percentile(&v, 0.5), Some(50.0));
        assert_eq!(percentile(&v, 0.95), Some(95.0));
    }
}

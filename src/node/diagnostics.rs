//! What the node reports on `/diagnostics` about once a second: input and output rates,
//! latency percentiles (image stamp to publish), dropped and skipped frames, publish
//! failures, the camera's and camera_info's state, and a level (OK, WARN, ERROR) from
//! what happened in the last few seconds and the bounds in the params file.
//!
//! Time is passed in by the caller (monotonic `Instant`s for rates, milliseconds for
//! latencies), so the aggregation is tested without clocks or ROS.

use std::collections::VecDeque;
use std::time::{Duration, Instant};

use super::slot::SlotCounts;
use crate::config::{DiagnosticsParams, Mode, Reliability};
use crate::stats::quantile;

/// diagnostic_msgs/DiagnosticStatus levels.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
pub enum Level {
    Ok = 0,
    Warn = 1,
    Error = 2,
}

/// What the status warns above: `diagnostics.*` for the node's mode.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Bounds {
    /// p95 latency, ms.
    pub latency_warn_ms: f64,
    /// Share of the frames received that were dropped; 1.0: not checked.
    pub drop_warn_fraction: f64,
}

impl Bounds {
    /// `drop_warn_fraction` below 0 ([`DiagnosticsParams::DROP_WARN_BY_MODE`]) is 0.5 in
    /// aleatoric and moments mode, and not checked in mc mode.
    pub fn new(params: &DiagnosticsParams, mode: Mode) -> Self {
        let drop_warn_fraction = match (params.drop_warn_fraction, mode) {
            (f, _) if f >= 0.0 => f,
            (_, Mode::Mc) => 1.0,
            (_, Mode::Aleatoric | Mode::Moments) => 0.5,
        };
        Bounds {
            latency_warn_ms: params.latency_warn_ms,
            drop_warn_fraction,
        }
    }
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
    /// The camera_info topic as resolved (namespace and remapping applied).
    pub camera_info_topic: String,
}

/// One kind of event: how many in all, their times within the window, the last reason.
#[derive(Debug, Default)]
struct Events {
    total: u64,
    recent: VecDeque<Instant>,
    /// The latest event, also once it has left the window.
    last: Option<Instant>,
    last_reason: Option<String>,
}

impl Events {
    fn record(&mut self, now: Instant, reason: Option<&str>) {
        self.total += 1;
        self.recent.push_back(now);
        self.last = Some(now);
        if let Some(reason) = reason {
            self.last_reason = Some(reason.to_owned());
        }
    }

    fn trim(&mut self, now: Instant) {
        while self
            .recent
            .front()
            .is_some_and(|t| now.saturating_duration_since(*t) > Monitor::WINDOW)
        {
            self.recent.pop_front();
        }
    }

    fn in_window(&self) -> usize {
        self.recent.len()
    }

    fn reason(&self) -> &str {
        self.last_reason.as_deref().unwrap_or("unknown")
    }
}

/// Events per second from their times in the window, oldest first: from the mean interval
/// between them, so a 1 Hz camera reads 1 Hz whether 5 or 6 of its frames fall in the
/// window (counting them over the window's length gave 0.8-1.2 Hz under jitter). Once the
/// time since the last event exceeds that interval, the excess counts as a longer last
/// interval, so the rate falls as soon as a camera stops, not only once its frames have
/// left the window. Fewer than two events: their count over the window.
fn rate_hz(
    mut times: impl ExactSizeIterator<Item = Instant> + DoubleEndedIterator,
    now: Instant,
) -> f64 {
    let count = times.len();
    let Some(first) = times.next() else {
        return 0.0;
    };
    let last = times.next_back().unwrap_or(first);
    let intervals = count - 1;
    let span = last.saturating_duration_since(first).as_secs_f64();
    if intervals == 0 || span <= 0.0 {
        return count as f64 / Monitor::WINDOW.as_secs_f64();
    }
    let mean = span / intervals as f64;
    let overdue = (now.saturating_duration_since(last).as_secs_f64() - mean).max(0.0);
    intervals as f64 / (span + overdue)
}

/// Rolling statistics over the last [`Monitor::WINDOW`]; the level is decided on that
/// window too, so a slow camera's frames do not flip it between reports.
#[derive(Debug, Default)]
pub struct Monitor {
    inputs: Events,
    /// Publish times and latencies (`None` while the ROS clock is not running yet).
    outputs: VecDeque<(Instant, Option<f64>)>,
    /// Frames skipped as bad input.
    skips: Events,
    /// Frames the engine failed on, or none of whose outputs could be published.
    failures: Events,
    /// Output messages that could not be published.
    publish_failures: Events,
    /// Outputs of frames stamped ahead of the node's clock (no latency recorded).
    stamps_ahead: u64,
    /// Those stamped more than [`Monitor::AHEAD_WARN_MS`] ahead.
    far_ahead: Events,
    last_error: Option<String>,
    /// The keep-latest counters at each report of the window, oldest first.
    slot_history: VecDeque<(Instant, SlotCounts)>,
    /// The camera topic's and the camera_info topic's publishers, as the node last looked
    /// them up.
    camera_publishers: Option<TopicPublishers>,
    camera_info_publishers: Option<TopicPublishers>,
    /// When camera_info's publishers were last looked up.
    camera_info_looked_up: Option<Instant>,
    /// camera_info messages received.
    camera_infos: u64,
    /// Nodes of this node's name and namespace in the ROS graph, itself included, as last
    /// looked up, and since when there have been more than one.
    namesakes: usize,
    namesakes_since: Option<Instant>,
    /// The count last logged (0: none).
    namesakes_logged: usize,
    /// Frames whose point cloud or depth/camera_info was asked for (subscribed) and could
    /// not be made because no camera_info had arrived (the first such frame not counted).
    frames_without_camera_info: Events,
    /// Point clouds asked for that the camera_info could not give (uncalibrated, a lens
    /// model that cannot be undone), with the latest reason.
    clouds_refused: Events,
    first_frame_without_camera_info_seen: bool,
    /// The time between the last two camera frames.
    input_gap: Option<Duration>,
    /// When the frame now in the engine went in (None: the engine is idle).
    engine_busy_since: Option<Instant>,
    /// How long the engine took on its last frames (at most [`Monitor::ENGINE_TIMES`]).
    engine_times: VecDeque<Duration>,
    /// The first report.
    started: Option<Instant>,
}

/// The topics the node subscribes to whose publishers it looks up.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Subscribed {
    Camera,
    CameraInfo,
}

/// The publishers of a topic the node subscribes to (the camera's or camera_info's), as
/// the ROS graph shows them, with the reliability the node asks for.
#[derive(Debug, Clone, PartialEq)]
pub struct TopicPublishers {
    /// The resolved topic name (namespace and remapping applied).
    pub topic: String,
    pub reliable: usize,
    pub best_effort: usize,
    /// `qos.input_reliability` of the subscription.
    pub subscription: Reliability,
}

impl TopicPublishers {
    /// Publishers the subscription cannot receive from: best-effort ones, for a reliable
    /// subscription (DDS finds the QoS incompatible and delivers nothing).
    pub fn incompatible(&self) -> usize {
        match self.subscription {
            Reliability::Reliable => self.best_effort,
            Reliability::BestEffort => 0,
        }
    }

    /// Publishers the subscription can receive from.
    pub fn receivable(&self) -> usize {
        self.reliable + self.best_effort - self.incompatible()
    }

    /// Why messages from some of these publishers cannot arrive, if they cannot.
    pub fn problem(&self) -> Option<String> {
        (self.incompatible() > 0).then(|| {
            format!(
                "{} publisher(s) on {} offer best effort only, and qos.input_reliability \
                 reliable receives nothing from them (set it to best_effort)",
                self.incompatible(),
                self.topic
            )
        })
    }

    fn describe(&self) -> String {
        format!(
            "{} on {} ({} reliable, {} best effort)",
            self.reliable + self.best_effort,
            self.topic,
            self.reliable,
            self.best_effort
        )
    }
}

impl Monitor {
    /// Rates, latency percentiles and the level cover this much recent time.
    pub const WINDOW: Duration = Duration::from_secs(5);

    /// Frames stamped further ahead of the node's clock than this make the level WARN.
    /// Less is normal: a replayed bag's `/clock` ticks at 40 Hz (25 ms steps), and the
    /// clocks of two machines under NTP differ by a few milliseconds.
    pub const AHEAD_WARN_MS: f64 = 100.0;

    /// Latencies beyond this (an hour) are stamps from another clock, said so.
    pub const STAMPS_BEHIND_MS: f64 = 3_600_000.0;

    /// A camera topic without a publisher is a WARN only once the node has been up this
    /// long (a camera driver starting beside it, DDS discovering it).
    pub const START_GRACE: Duration = Self::WINDOW;

    /// More than one node of this name in the graph is a WARN only once it has lasted this
    /// long: DDS lists a killed node's endpoints until its lease (Fast DDS: 20 s) runs
    /// out, and a respawned node would otherwise see its dead predecessor.
    pub const NAMESAKE_GRACE: Duration = Duration::from_secs(30);

    /// The longest a slow camera may stay silent before it counts as stopped.
    pub const STALE_MAX: Duration = Duration::from_secs(60);

    /// The engine's last frames whose times say how long a frame may take.
    pub const ENGINE_TIMES: usize = 16;

    /// A frame in the engine counts as stalled once it has taken this many times the
    /// longest of the last [`Monitor::ENGINE_TIMES`], and at least [`Monitor::STALL_MIN`].
    pub const STALL_FACTOR: u32 = 5;
    pub const STALL_MIN: Duration = Duration::from_secs(10);

    /// The first frame (nothing to compare it with: its time includes libtorch's set-up)
    /// is a WARN once it has taken this long.
    pub const FIRST_FRAME_SLOW: Duration = Duration::from_secs(60);

    pub fn new() -> Self {
        Self::default()
    }

    /// A camera message arrived.
    pub fn on_input(&mut self, now: Instant) {
        if let Some(last) = self.inputs.last {
            self.input_gap = Some(now.saturating_duration_since(last));
        }
        self.inputs.record(now, None);
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
                if ms < -Self::AHEAD_WARN_MS {
                    self.far_ahead.record(now, None);
                }
                None
            }
            other => other,
        };
        self.outputs.push_back((now, latency_ms));
        self.trim(now);
    }

    /// The node's clock changed (`use_sim_time` set while it runs): the latencies measured
    /// on the other clock, and the frames found far ahead of it, are forgotten (the
    /// outputs still count for the rates).
    pub fn clock_changed(&mut self) {
        for (_, latency) in &mut self.outputs {
            *latency = None;
        }
        self.far_ahead.recent.clear();
    }

    /// The publishers of the camera or the camera_info topic as the node looked them up
    /// at `now`; returns the problem they pose when it is new (to be logged once, not
    /// every second).
    pub fn on_publishers(
        &mut self,
        topic: Subscribed,
        publishers: TopicPublishers,
        now: Instant,
    ) -> Option<String> {
        let problem = publishers.problem();
        let kept = match topic {
            Subscribed::Camera => &mut self.camera_publishers,
            Subscribed::CameraInfo => {
                self.camera_info_looked_up = Some(now);
                &mut self.camera_info_publishers
            }
        };
        let before = kept.replace(publishers).and_then(|c| c.problem());
        problem.filter(|p| before.as_ref() != Some(p))
    }

    /// How many nodes of this node's name and namespace (`node`, fully qualified) the
    /// ROS graph shows, itself included; returns the problem they pose when it has just
    /// lasted [`Monitor::NAMESAKE_GRACE`] (to be logged once).
    pub fn on_namesakes(&mut self, count: usize, node: &str, now: Instant) -> Option<String> {
        self.namesakes = count;
        if count <= 1 {
            self.namesakes_since = None;
            self.namesakes_logged = 0;
            return None;
        }
        self.namesakes_since.get_or_insert(now);
        let problem = self.namesakes_problem(now, node)?;
        (std::mem::replace(&mut self.namesakes_logged, count) != count).then_some(problem)
    }

    fn namesakes_problem(&self, now: Instant, node: &str) -> Option<String> {
        let since = self.namesakes_since?;
        (now.saturating_duration_since(since) >= Self::NAMESAKE_GRACE).then(|| {
            format!(
                "{} nodes are named {node}: each processes every frame and they answer the \
                 same parameter calls (give each its own namespace)",
                self.namesakes
            )
        })
    }

    /// After how long without a frame the camera counts as stopped: three of its last
    /// intervals, at least the window and at most [`Monitor::STALE_MAX`].
    fn stale_after(&self) -> Duration {
        (self.input_gap.unwrap_or_default() * 3).clamp(Self::WINDOW, Self::STALE_MAX)
    }

    /// The worker handed a frame to the engine.
    pub fn on_engine_start(&mut self, now: Instant) {
        self.engine_busy_since = Some(now);
    }

    /// The engine is done with its frame: `ran` when the frame went through the network
    /// (whatever came of it), not when it was refused before (bad input), whose time is
    /// not kept.
    pub fn on_engine_end(&mut self, now: Instant, ran: bool) {
        if let Some(since) = self.engine_busy_since.take().filter(|_| ran) {
            if self.engine_times.len() == Self::ENGINE_TIMES {
                self.engine_times.pop_front();
            }
            self.engine_times
                .push_back(now.saturating_duration_since(since));
        }
    }

    /// The engine's settings changed (mode, samples): frames take another time now, so
    /// the next is judged as a first frame.
    pub fn on_engine_changed(&mut self) {
        self.engine_times.clear();
    }

    /// The frame in the engine, when it has run long enough to be a problem: its level
    /// and why. A hung device (a GPU fault, a driver stuck in a call) shows here, where
    /// the other figures only show frames dropped.
    fn engine_stall(&self, now: Instant) -> Option<(Level, String)> {
        let busy = now.saturating_duration_since(self.engine_busy_since?);
        match self.engine_times.iter().max() {
            Some(longest) => {
                let limit = (*longest * Self::STALL_FACTOR).max(Self::STALL_MIN);
                (busy > limit).then(|| {
                    (
                        Level::Error,
                        format!(
                            "inference stalled? the frame in the engine has run for {:.0} s, \
                             where each of the last {} took at most {:.2} s",
                            busy.as_secs_f64(),
                            self.engine_times.len(),
                            longest.as_secs_f64()
                        ),
                    )
                })
            }
            None => (busy > Self::FIRST_FRAME_SLOW).then(|| {
                (
                    Level::Warn,
                    format!(
                        "the first frame has been in the engine for {:.0} s (a large model \
                         in mc mode on a CPU, or inference stalled?)",
                        busy.as_secs_f64()
                    ),
                )
            }),
        }
    }

    /// A camera_info message arrived.
    pub fn on_camera_info(&mut self) {
        self.camera_infos += 1;
    }

    /// A frame's point cloud or depth/camera_info was asked for but not made: no
    /// camera_info has arrived. The first such frame is not counted (its camera_info may be
    /// a moment behind it); returns whether this one was, for the log.
    pub fn on_frame_without_camera_info(&mut self, now: Instant) -> bool {
        if !std::mem::replace(&mut self.first_frame_without_camera_info_seen, true) {
            return false;
        }
        self.frames_without_camera_info.record(now, None);
        self.trim(now);
        true
    }

    /// A frame's point cloud was asked for but the camera_info could not give one.
    pub fn on_cloud_refused(&mut self, now: Instant, reason: &str) {
        self.clouds_refused.record(now, Some(reason));
        self.trim(now);
    }

    /// A message was skipped as bad input (unknown encoding, corrupt data).
    pub fn on_skip(&mut self, now: Instant, reason: &str) {
        self.skips.record(now, Some(reason));
        self.last_error = Some(reason.to_owned());
        self.trim(now);
    }

    /// An output message could not be published.
    pub fn on_publish_failure(&mut self, now: Instant, reason: &str) {
        self.publish_failures.record(now, Some(reason));
        self.last_error = Some(reason.to_owned());
        self.trim(now);
    }

    /// A frame produced nothing: inference failed, or none of its outputs was published.
    pub fn on_error(&mut self, now: Instant, reason: &str) {
        self.failures.record(now, Some(reason));
        self.last_error = Some(reason.to_owned());
        self.trim(now);
    }

    fn trim(&mut self, now: Instant) {
        for events in [
            &mut self.inputs,
            &mut self.skips,
            &mut self.failures,
            &mut self.publish_failures,
            &mut self.far_ahead,
            &mut self.frames_without_camera_info,
            &mut self.clouds_refused,
        ] {
            events.trim(now);
        }
        while self
            .outputs
            .front()
            .is_some_and(|(t, _)| now.saturating_duration_since(*t) > Self::WINDOW)
        {
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
        bounds: Bounds,
    ) -> DiagnosticStatus {
        self.trim(now);
        let input_hz = rate_hz(self.inputs.recent.iter().copied(), now);
        let output_hz = rate_hz(self.outputs.iter().map(|(t, _)| *t), now);
        let latencies: Vec<f64> = self.outputs.iter().filter_map(|(_, l)| *l).collect();
        let p50 = quantile(&latencies, 0.50);
        let p95 = quantile(&latencies, 0.95);

        // Drops over the window: the share of the frames received since the last report
        // at or before its start (one report period held a single frame of a slow camera:
        // 0 or 100 %).
        while self
            .slot_history
            .get(1)
            .is_some_and(|(t, _)| now.saturating_duration_since(*t) >= Self::WINDOW)
        {
            self.slot_history.pop_front();
        }
        let base = self
            .slot_history
            .front()
            .map_or_else(SlotCounts::default, |(_, c)| *c);
        self.slot_history.push_back((now, slot));
        let received = slot.received - base.received;
        let dropped = slot.dropped - base.dropped;
        let drop_fraction = if received > 0 {
            dropped as f64 / received as f64
        } else {
            0.0
        };

        let (outputs, skips, failures, unpublished) = (
            self.outputs.len(),
            self.skips.in_window(),
            self.failures.in_window(),
            self.publish_failures.in_window(),
        );
        let window = format!("in the last {} s", Self::WINDOW.as_secs());
        let mut problems = Vec::new();
        let mut level = Level::Ok;
        if let Some((stall_level, problem)) = self.engine_stall(now) {
            level = stall_level;
            problems.push(problem);
        }
        if failures > 0 && outputs == 0 {
            level = level.max(Level::Error);
            problems.push(format!("every frame failing: {}", self.failures.reason()));
        } else if failures > 0 {
            level = level.max(Level::Warn);
            problems.push(format!(
                "{failures} frame(s) failed {window}: {}",
                self.failures.reason()
            ));
        }
        if skips > 0 && outputs == 0 && failures == 0 {
            level = level.max(Level::Error);
            problems.push(format!(
                "every frame skipped as bad input: {}",
                self.skips.reason()
            ));
        } else if skips > 0 {
            level = level.max(Level::Warn);
            problems.push(format!(
                "{skips} frame(s) skipped as bad input {window}: {}",
                self.skips.reason()
            ));
        }
        if unpublished > 0 {
            level = level.max(Level::Warn);
            problems.push(format!(
                "{unpublished} publish failure(s) {window}: {}",
                self.publish_failures.reason()
            ));
        }
        if drop_fraction > bounds.drop_warn_fraction {
            level = level.max(Level::Warn);
            problems.push(format!(
                "dropping {:.0} % of frames {window} (inference slower than the camera)",
                drop_fraction * 100.0
            ));
        }
        let ahead = self.far_ahead.in_window();
        if ahead > 0 {
            level = level.max(Level::Warn);
            problems.push(format!(
                "{ahead} frame(s) stamped more than {:.0} ms ahead of the node's clock \
                 {window} (the camera's and the node's clocks disagree: synchronise them, or \
                 give both the same use_sim_time); no latency measured for them",
                Self::AHEAD_WARN_MS
            ));
        }
        if let Some(p95) = p95.filter(|&p| p > bounds.latency_warn_ms) {
            level = level.max(Level::Warn);
            // Hours behind is no inference time: the stamps are not the node's clock's.
            let hint = match p95 > Self::STAMPS_BEHIND_MS {
                true => {
                    " (the images are stamped hours behind the node's clock: zero stamps, \
                     or a bag replayed without use_sim_time and --clock? `ros2 param set \
                     <node> use_sim_time true` switches it to /clock)"
                }
                false => "",
            };
            problems.push(format!(
                "latency p95 {p95:.0} ms above {:.0} ms{hint}",
                bounds.latency_warn_ms
            ));
        }
        let without_info = self.frames_without_camera_info.in_window();
        if without_info > 0 {
            level = level.max(Level::Warn);
            // What the graph showed of camera_info's publishers since the latest of these
            // frames says where to look.
            let looked_up = self
                .camera_info_publishers
                .as_ref()
                .filter(|_| self.camera_info_looked_up >= self.frames_without_camera_info.last);
            let why = match looked_up {
                _ if self.camera_infos > 0 => "one has arrived since".to_owned(),
                Some(p) if p.reliable + p.best_effort == 0 => {
                    "nothing publishes on it: check its remapping".to_owned()
                }
                Some(p) if p.receivable() > 0 => format!(
                    "{} publisher(s) on it, nothing received from them: drivers publish it \
                     with each image, and one sent before the node subscribed is not sent \
                     again",
                    p.receivable()
                ),
                // What to do about it is a problem of its own.
                Some(_) => "its publishers' QoS does not match qos.input_reliability".to_owned(),
                None => "check its remapping".to_owned(),
            };
            problems.push(format!(
                "{without_info} frame(s) without a point cloud or depth/camera_info {window}: \
                 no camera_info received on {} ({why})",
                info.camera_info_topic
            ));
        }
        let refused = self.clouds_refused.in_window();
        if refused > 0 {
            level = level.max(Level::Warn);
            problems.push(format!(
                "{refused} point cloud(s) not built {window}: {}",
                self.clouds_refused.reason()
            ));
        }
        if let Some(problem) = self.namesakes_problem(now, &info.node_name) {
            level = level.max(Level::Warn);
            problems.push(problem);
        }
        for publishers in [&self.camera_publishers, &self.camera_info_publishers] {
            if let Some(problem) = publishers.as_ref().and_then(TopicPublishers::problem) {
                level = level.max(Level::Warn);
                problems.push(problem);
            }
        }
        // No camera frame in the window: a wait, which is a problem (WARN) when frames
        // came and stopped (none for the window or three of the camera's last intervals,
        // whichever is longer: a slow camera is not a dead one), or when, past the start,
        // nothing publishes on the camera topic.
        let up_for = now.saturating_duration_since(*self.started.get_or_insert(now));
        let waiting = self.inputs.in_window() == 0;
        if waiting {
            let mut wait = Vec::new();
            let stale_after = self.stale_after();
            if let Some(since) = self
                .inputs
                .last
                .map(|last| now.saturating_duration_since(last))
                .filter(|since| *since > stale_after)
            {
                wait.push(format!(
                    "none for {:.0} s (the camera stopped?)",
                    since.as_secs_f64()
                ));
            }
            if let Some(c) = self
                .camera_publishers
                .as_ref()
                .filter(|c| c.reliable + c.best_effort == 0 && up_for >= Self::START_GRACE)
            {
                wait.push(format!("no publisher on {}", c.topic));
            }
            if !wait.is_empty() {
                level = level.max(Level::Warn);
                problems.insert(0, format!("waiting for images: {}", wait.join("; ")));
            }
        }
        let message = if !problems.is_empty() {
            problems.join("; ")
        } else if waiting {
            "waiting for images".to_owned()
        } else {
            "running".to_owned()
        };

        let ms = |v: Option<f64>| v.map_or("n/a".to_owned(), |v| format!("{v:.1}"));
        let describe = |publishers: &Option<TopicPublishers>| {
            publishers
                .as_ref()
                .map_or("n/a".to_owned(), TopicPublishers::describe)
        };
        let mut values = vec![
            ("device".to_owned(), info.device.clone()),
            (
                "camera publishers".to_owned(),
                describe(&self.camera_publishers),
            ),
            (
                "camera_info".to_owned(),
                format!(
                    "{} received on {}",
                    match self.camera_infos {
                        0 => "none".to_owned(),
                        n => n.to_string(),
                    },
                    info.camera_info_topic
                ),
            ),
            (
                "camera_info publishers".to_owned(),
                describe(&self.camera_info_publishers),
            ),
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
                self.skips.total.to_string(),
            ),
            ("frames failed".to_owned(), self.failures.total.to_string()),
            (
                "frame in the engine for (s)".to_owned(),
                self.engine_busy_since.map_or("none".to_owned(), |since| {
                    format!("{:.1}", now.saturating_duration_since(since).as_secs_f64())
                }),
            ),
            (
                "publish failures".to_owned(),
                self.publish_failures.total.to_string(),
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

#[cfg(test)]
mod tests {
    use super::*;

    fn info() -> NodeInfo {
        NodeInfo {
            node_name: "/robot/bayes_perception".into(),
            device: "cuda:0".into(),
            camera_info_topic: "/robot/camera/camera_info".into(),
        }
    }

    /// The params file's bounds in aleatoric mode.
    fn defaults() -> Bounds {
        Bounds::new(&DiagnosticsParams::default(), Mode::Aleatoric)
    }

    #[test]
    fn by_default_drops_warn_in_the_modes_meant_to_keep_up_only() {
        let by_mode = DiagnosticsParams::default();
        assert_eq!(
            by_mode.drop_warn_fraction,
            DiagnosticsParams::DROP_WARN_BY_MODE
        );
        // A 30 Hz camera, one frame in ten processed.
        let t0 = Instant::now();
        let slot = SlotCounts {
            received: 300,
            dropped: 270,
        };
        let status = |mode, params: &DiagnosticsParams| {
            let mut m = Monitor::new();
            m.report(t0, &info(), &[], SlotCounts::default(), defaults());
            for i in 0..150u64 {
                let t = t0 + Duration::from_millis(33 * i);
                m.on_input(t);
                if i % 10 == 0 {
                    m.on_output(t, Some(50.0));
                }
            }
            let now = t0 + Duration::from_millis(33 * 150);
            m.report(now, &info(), &[], slot, Bounds::new(params, mode))
        };
        for mode in [Mode::Aleatoric, Mode::Moments] {
            let s = status(mode, &by_mode);
            assert_eq!(s.level, Level::Warn, "{mode}");
            assert_eq!(
                s.message,
                "dropping 90 % of frames in the last 5 s (inference slower than the camera)"
            );
        }
        let s = status(Mode::Mc, &by_mode);
        assert_eq!((s.level, s.message.as_str()), (Level::Ok, "running"));
        // A fraction given is a fraction in every mode.
        let given = DiagnosticsParams {
            drop_warn_fraction: 0.5,
            ..by_mode
        };
        assert_eq!(status(Mode::Mc, &given).level, Level::Warn);
        let never = DiagnosticsParams {
            drop_warn_fraction: 1.0,
            ..given
        };
        assert_eq!(status(Mode::Aleatoric, &never).level, Level::Ok);
        // Any value below 0 is by mode (the descriptor's range is -1.0..1.0).
        let by_mode_too = DiagnosticsParams {
            drop_warn_fraction: -0.25,
            ..given
        };
        assert_eq!(status(Mode::Mc, &by_mode_too).level, Level::Ok);
        assert_eq!(status(Mode::Aleatoric, &by_mode_too).level, Level::Warn);
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
            Bounds {
                drop_warn_fraction: 0.6,
                ..defaults()
            },
        );
        assert_eq!(value(&s, "input rate (Hz)"), "10.00");
        assert_eq!(value(&s, "output rate (Hz)"), "5.00");
        assert_eq!(value(&s, "latency p50 (ms)"), "13.0");
        assert_eq!(value(&s, "latency p95 (ms)"), "23.8");
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
            defaults(),
        );
        assert_eq!(value(&s, "input rate (Hz)"), "0.00");
        assert_eq!(value(&s, "latency p95 (ms)"), "n/a");
        // A camera that stopped is a WARN, unlike one not started yet (below).
        assert_eq!(
            (s.level, s.message.as_str()),
            (
                Level::Warn,
                "waiting for images: none for 10 s (the camera stopped?)"
            )
        );
    }

    /// `use_sim_time` set while the node runs: what was measured on the wall clock against
    /// a bag's stamps (days of latency, or frames far ahead) is forgotten at the switch.
    #[test]
    fn a_clock_switch_forgets_the_latencies_of_the_old_clock() {
        let t0 = Instant::now();
        let mut m = Monitor::new();
        for i in 0..20u64 {
            let t = t0 + Duration::from_millis(100 * i);
            m.on_input(t);
            m.on_output(t, Some(if i % 2 == 0 { 9e7 } else { -5e6 }));
        }
        let counts = SlotCounts {
            received: 20,
            dropped: 0,
        };
        let now = t0 + Duration::from_millis(2000);
        let s = m.report(now, &info(), &[], counts, defaults());
        assert_eq!(value(&s, "latency p50 (ms)"), "90000000.0");
        assert_eq!(s.level, Level::Warn, "{}", s.message);
        assert!(
            s.message.contains("ahead of the node's clock"),
            "{}",
            s.message
        );

        m.clock_changed();
        let s = m.report(now, &info(), &[], counts, defaults());
        assert_eq!(value(&s, "latency p50 (ms)"), "n/a");
        assert_eq!((s.level, s.message.as_str()), (Level::Ok, "running"));
        assert_eq!(value(&s, "output rate (Hz)"), "10.00");
        // Measured on the new clock from then on.
        m.on_output(now, Some(12.0));
        let s = m.report(now, &info(), &[], counts, defaults());
        assert_eq!(value(&s, "latency p95 (ms)"), "12.0");
    }

    /// A frame that stays in the engine far longer than the frames before it is an ERROR
    /// (a hung device), said with its time; the first frame, with nothing to compare it
    /// with, a WARN after a minute.
    #[test]
    fn a_frame_stuck_in_the_engine_is_an_error() {
        let t0 = Instant::now();
        let at = |ms: u64| t0 + Duration::from_millis(ms);
        let report = |m: &mut Monitor, now: Instant| {
            m.report(
                now,
                &info(),
                &[],
                SlotCounts::default(),
                Bounds {
                    drop_warn_fraction: 1.0,
                    ..defaults()
                },
            )
        };
        let mut m = Monitor::new();
        m.on_engine_start(at(0));
        let s = report(&mut m, at(59_000));
        assert_eq!(value(&s, "frame in the engine for (s)"), "59.0");
        assert!(!s.message.contains("engine"), "{}", s.message);
        let s = report(&mut m, at(61_000));
        assert_eq!(s.level, Level::Warn, "{}", s.message);
        assert!(s
            .message
            .contains("the first frame has been in the engine for 61 s"));
        // Frames of 0.5 s to 1.5 s, with a 10 Hz camera beside them.
        let mut t = 61_000;
        for k in 0..20u64 {
            m.on_input(at(t));
            m.on_engine_end(at(t + 500 + 1000 * (k % 2)), true);
            m.on_output(at(t + 500 + 1000 * (k % 2)), Some(5.0));
            t += 2000;
            m.on_engine_start(at(t));
        }
        assert_eq!(m.engine_times.len(), Monitor::ENGINE_TIMES);
        // Stuck: past 5 x 1.5 s, and past 10 s, while frames keep coming.
        for k in 0..120 {
            m.on_input(at(t + 100 * k));
        }
        let s = report(&mut m, at(t + 5_000));
        assert_eq!(s.level, Level::Ok, "{}", s.message);
        let s = report(&mut m, at(t + 9_000));
        assert_eq!(s.level, Level::Ok, "{}", s.message);
        let s = report(&mut m, at(t + 11_000));
        assert_eq!(s.level, Level::Error, "{}", s.message);
        assert!(
            s.message.starts_with(
                "inference stalled? the frame in the engine has run for 11 s, where each of \
                 the last 16 took at most 1.50 s"
            ),
            "{}",
            s.message
        );
        m.on_engine_end(at(t + 12_000), true);
        let s = report(&mut m, at(t + 12_000));
        assert_eq!(value(&s, "frame in the engine for (s)"), "none");
        assert!(!s.message.contains("stalled"), "{}", s.message);
        // Bad input's instant refusals do not shorten the limit; a change of the engine's
        // settings (mc with more samples: slower frames) starts it over as a first frame.
        let t = t + 12_000;
        for k in 0..20 {
            m.on_engine_start(at(t + k));
            m.on_engine_end(at(t + k), false);
        }
        assert_eq!(m.engine_times.len(), Monitor::ENGINE_TIMES);
        assert_eq!(
            m.engine_times.iter().min(),
            Some(&Duration::from_millis(500))
        );
        m.on_engine_changed();
        m.on_engine_start(at(t + 100));
        let s = report(&mut m, at(t + 30_000));
        assert!(!s.message.contains("engine"), "{}", s.message);
        assert_eq!(value(&s, "frame in the engine for (s)"), "29.9");
    }

    /// The camera's publishers: none makes the wait a WARN that says so; best-effort ones
    /// under a reliable subscription (which receives nothing from them) make it WARN.
    #[test]
    fn camera_publishers_explain_a_wait_and_an_incompatible_qos_warns() {
        let t0 = Instant::now();
        let mut m = Monitor::new();
        let report = |m: &mut Monitor, at: Duration| {
            m.report(t0 + at, &info(), &[], SlotCounts::default(), defaults())
        };
        let zero = Duration::ZERO;
        assert_eq!(report(&mut m, zero).message, "waiting for images");
        assert_eq!(value(&report(&mut m, zero), "camera publishers"), "n/a");
        let camera = |reliable, best_effort, subscription| TopicPublishers {
            topic: "/cam/image_raw".into(),
            reliable,
            best_effort,
            subscription,
        };
        assert_eq!(
            m.on_publishers(
                Subscribed::Camera,
                camera(0, 0, Reliability::BestEffort),
                t0
            ),
            None
        );
        // Just started: a camera driver may be starting beside the node.
        let s = report(&mut m, zero);
        assert_eq!(
            (s.level, s.message.as_str()),
            (Level::Ok, "waiting for images")
        );
        let s = report(&mut m, Monitor::START_GRACE);
        assert_eq!(
            (s.level, s.message.as_str()),
            (
                Level::Warn,
                "waiting for images: no publisher on /cam/image_raw"
            )
        );
        assert_eq!(
            m.on_publishers(
                Subscribed::Camera,
                camera(0, 1, Reliability::BestEffort),
                t0
            ),
            None
        );
        let s = report(&mut m, Monitor::START_GRACE);
        assert_eq!(
            (s.level, s.message.as_str()),
            (Level::Ok, "waiting for images")
        );
        assert_eq!(
            value(&s, "camera publishers"),
            "1 on /cam/image_raw (0 reliable, 1 best effort)"
        );
        // New: to be logged once; the same again: not.
        let new = m.on_publishers(Subscribed::Camera, camera(1, 1, Reliability::Reliable), t0);
        assert!(new.is_some_and(|p| p.starts_with("1 publisher(s) on /cam/image_raw")));
        assert_eq!(
            m.on_publishers(Subscribed::Camera, camera(1, 1, Reliability::Reliable), t0),
            None
        );
        let s = report(&mut m, Monitor::START_GRACE);
        assert_eq!(s.level, Level::Warn);
        assert!(
            s.message
                .starts_with("1 publisher(s) on /cam/image_raw offer best effort only"),
            "{}",
            s.message
        );
        assert_eq!(
            m.on_publishers(Subscribed::Camera, camera(2, 0, Reliability::Reliable), t0),
            None
        );
        assert_eq!(report(&mut m, Monitor::START_GRACE).level, Level::Ok);
    }

    /// A cloud without camera_info says what the graph showed of camera_info's publishers
    /// since; best-effort ones under a reliable subscription WARN, cloud or not.
    #[test]
    fn camera_info_publishers_explain_a_missing_cloud_and_an_incompatible_qos_warns() {
        let t0 = Instant::now();
        let after = t0 + Duration::from_millis(500);
        let mut m = Monitor::new();
        let report =
            |m: &mut Monitor| m.report(after, &info(), &[], SlotCounts::default(), defaults());
        let publishers = |reliable, best_effort, subscription| TopicPublishers {
            topic: "/robot/camera/camera_info".into(),
            reliable,
            best_effort,
            subscription,
        };
        assert_eq!(value(&report(&mut m), "camera_info publishers"), "n/a");
        // Looked up before the clouds: that lookup does not explain them.
        m.on_publishers(
            Subscribed::CameraInfo,
            publishers(0, 0, Reliability::BestEffort),
            t0 - Duration::from_secs(1),
        );
        // The first frame without camera_info is not counted; the second is.
        assert!(!m.on_frame_without_camera_info(t0));
        assert!(m.on_frame_without_camera_info(t0));
        let cloudless = |m: &mut Monitor| -> String {
            let s = report(m);
            assert_eq!(s.level, Level::Warn, "{}", s.message);
            s.message
        };
        let not_built = "1 frame(s) without a point cloud or depth/camera_info in the last 5 s: \
                         no camera_info received on /robot/camera/camera_info";
        let tail = ")";
        assert_eq!(
            cloudless(&mut m),
            format!("{not_built} (check its remapping{tail}")
        );
        let look_up =
            |m: &mut Monitor, p: TopicPublishers| m.on_publishers(Subscribed::CameraInfo, p, after);
        assert_eq!(
            look_up(&mut m, publishers(0, 0, Reliability::BestEffort)),
            None
        );
        assert_eq!(
            cloudless(&mut m),
            format!("{not_built} (nothing publishes on it: check its remapping{tail}")
        );
        assert_eq!(
            value(&report(&mut m), "camera_info publishers"),
            "0 on /robot/camera/camera_info (0 reliable, 0 best effort)"
        );
        look_up(&mut m, publishers(1, 0, Reliability::Reliable));
        assert_eq!(
            cloudless(&mut m),
            format!(
                "{not_built} (1 publisher(s) on it, nothing received from them: drivers \
                 publish it with each image, and one sent before the node subscribed is not \
                 sent again{tail}"
            )
        );
        // Only a best-effort one under a reliable subscription: the cloud says so, and
        // the QoS problem says what to do (logged once).
        let new = look_up(&mut m, publishers(0, 1, Reliability::Reliable));
        let problem = "1 publisher(s) on /robot/camera/camera_info offer best effort only, \
                       and qos.input_reliability reliable receives nothing from them (set it \
                       to best_effort)";
        assert_eq!(new.as_deref(), Some(problem));
        assert_eq!(
            look_up(&mut m, publishers(0, 1, Reliability::Reliable)),
            None
        );
        assert_eq!(
            cloudless(&mut m),
            format!(
                "{not_built} (its publishers' QoS does not match qos.input_reliability{tail}; \
                 {problem}"
            )
        );
        // Once the cloud events have left the window, the QoS problem alone.
        let s = m.report(
            t0 + Monitor::WINDOW * 2,
            &info(),
            &[],
            SlotCounts::default(),
            defaults(),
        );
        assert_eq!(s.level, Level::Warn);
        assert!(s.message.contains(problem), "{}", s.message);
        assert!(!s.message.contains("not built"), "{}", s.message);
        // The camera's publishers are kept apart from camera_info's.
        assert_eq!(value(&s, "camera publishers"), "n/a");
        // A camera_info that arrives while the clouds are in the window: said so.
        look_up(&mut m, publishers(1, 0, Reliability::Reliable));
        assert!(m.on_frame_without_camera_info(after));
        m.on_camera_info();
        assert_eq!(
            cloudless(&mut m),
            format!("{not_built} (one has arrived since{tail}")
        );
    }

    /// A 1 Hz camera whose frames come 40 ms early or late, reported every second: each
    /// report reads 1 Hz (counting the frames over the window read 0.8 or 1.2 Hz, as 4 or
    /// 6 of them fell in it), and the rate falls as soon as the camera's next frame is
    /// overdue.
    #[test]
    fn the_rate_of_a_slow_jittery_camera_is_steady_and_falls_when_it_stops() {
        let t0 = Instant::now();
        let mut m = Monitor::new();
        let input_hz = |m: &mut Monitor, at: Duration| -> f64 {
            let s = m.report(t0 + at, &info(), &[], SlotCounts::default(), defaults());
            value(&s, "input rate (Hz)").parse().unwrap()
        };
        let frame =
            |i: u64| Duration::from_millis(i * 1000 + if i.is_multiple_of(2) { 40 } else { 0 });
        let mut next = 0;
        for k in 1..=20u64 {
            let report = Duration::from_millis(k * 1000 + 20);
            while frame(next) <= report {
                m.on_input(t0 + frame(next));
                m.on_output(t0 + frame(next), Some(1.0));
                next += 1;
            }
            let hz = input_hz(&mut m, report);
            if k >= 2 {
                assert!((0.95..=1.05).contains(&hz), "{hz} Hz at report {k}");
            }
        }
        // The camera stopped after its last frame: not news before its next frame is due.
        let stopped = frame(next - 1);
        assert!(input_hz(&mut m, stopped + Duration::from_millis(950)) >= 0.95);
        let hz = input_hz(&mut m, stopped + Duration::from_millis(2500));
        assert!(hz < 0.7, "{hz} Hz");
        assert_eq!(input_hz(&mut m, stopped + Duration::from_secs(6)), 0.0);
    }

    /// A 1 Hz camera with every other frame dropped, reported every second: each report
    /// says about half, not 0 and 100 % in turn.
    #[test]
    fn the_drop_share_of_a_slow_camera_is_steady() {
        let t0 = Instant::now();
        let bounds = Bounds {
            latency_warn_ms: 1e9,
            drop_warn_fraction: 0.3,
        };
        let mut m = Monitor::new();
        for i in 1..=20u64 {
            let now = t0 + Duration::from_secs(i);
            m.on_input(now);
            m.on_output(now, Some(1.0));
            let slot = SlotCounts {
                received: i,
                dropped: i / 2,
            };
            let s = m.report(now, &info(), &[], slot, bounds);
            if i >= 6 {
                let percent: f64 = s
                    .message
                    .strip_prefix("dropping ")
                    .and_then(|m| m.split(' ').next())
                    .and_then(|p| p.parse().ok())
                    .unwrap_or_else(|| panic!("{}", s.message));
                assert!((40.0..=60.0).contains(&percent), "{}", s.message);
            }
        }
    }

    #[test]
    fn a_namesake_in_the_graph_warns_and_is_logged_once() {
        let t0 = Instant::now();
        let mut m = Monitor::new();
        let node = "/robot/bayes_perception";
        assert_eq!(m.on_namesakes(1, node, t0), None);
        // A killed namesake stays in the graph a while: not a problem at first.
        assert_eq!(m.on_namesakes(2, node, t0), None);
        let t0 = t0 + Monitor::NAMESAKE_GRACE;
        let new = m.on_namesakes(2, node, t0);
        assert!(
            new.as_deref()
                .is_some_and(|p| p.starts_with("2 nodes are named /robot/bayes_perception")),
            "{new:?}"
        );
        assert_eq!(m.on_namesakes(2, node, t0), None, "logged once");
        // A third one is news again.
        assert!(m
            .on_namesakes(3, node, t0)
            .is_some_and(|p| p.starts_with("3 nodes")));
        m.on_namesakes(2, node, t0);
        m.on_input(t0);
        let s = m.report(t0, &info(), &[], SlotCounts::default(), defaults());
        assert_eq!(s.level, Level::Warn);
        assert_eq!(s.message, new.unwrap());
        m.on_namesakes(1, node, t0);
        let s = m.report(t0, &info(), &[], SlotCounts::default(), defaults());
        assert_eq!((s.level, s.message.as_str()), (Level::Ok, "running"));
    }

    #[test]
    fn warns_on_drops_and_latency_and_errors_when_every_frame_fails() {
        let t0 = Instant::now();
        let bounds = Bounds {
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
            bounds,
        );
        assert_eq!(s.level, Level::Warn);
        assert!(
            s.message.contains("dropping 80 %") && s.message.contains("latency p95 250 ms"),
            "{}",
            s.message
        );
        assert!(!s.message.contains("hours behind"), "{}", s.message);
        // Stamped 0 (or by another clock): said so.
        let mut zero = Monitor::new();
        zero.on_input(t0);
        zero.on_output(t0, Some(1.7e12));
        let s = zero.report(t0, &info(), &[], SlotCounts::default(), bounds);
        assert!(
            s.message.contains(
                "latency p95 1700000000000 ms above 100 ms (the images are \
                 stamped hours behind the node's clock"
            ),
            "{}",
            s.message
        );
        // The drop fraction is over the window: once the drops have left it, no warning.
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
            bounds,
        );
        assert_eq!(s.level, Level::Ok, "{}", s.message);
        // Failures without any output in the window: ERROR with the reason; a bad message
        // is a skip.
        let much_later = later + Duration::from_secs(6);
        m.on_skip(much_later, "unsupported encoding `nv12`");
        m.on_error(much_later, "inference failed: CUDA out of memory");
        let s = m.report(
            much_later,
            &info(),
            &[],
            SlotCounts {
                received: 12,
                dropped: 8,
            },
            bounds,
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
    fn skips_warn_while_frames_come_through_and_are_an_error_when_none_do() {
        let t0 = Instant::now();
        let slot = SlotCounts {
            received: 3,
            dropped: 0,
        };
        let bounds = defaults();
        let mut m = Monitor::new();
        m.on_input(t0);
        m.on_skip(t0, "unsupported encoding `nv12`");
        m.on_output(t0, Some(5.0));
        let s = m.report(t0, &info(), &[], slot, bounds);
        assert_eq!(s.level, Level::Warn);
        assert_eq!(
            s.message,
            "1 frame(s) skipped as bad input in the last 5 s: unsupported encoding `nv12`"
        );
        // Six seconds later, only a skip in the window (a camera slower than the window
        // is long still reads ERROR between its frames).
        let t1 = t0 + Duration::from_secs(6);
        m.on_input(t1);
        m.on_skip(t1, "malformed rgb8 image: step 200 is shorter than a row");
        for at in [t1, t1 + Duration::from_secs(3)] {
            let s = m.report(at, &info(), &[], slot, bounds);
            assert_eq!(s.level, Level::Error);
            assert!(
                s.message
                    .starts_with("every frame skipped as bad input: malformed rgb8"),
                "{}",
                s.message
            );
            assert_eq!(value(&s, "frames skipped (bad input)"), "2");
        }
        // Nothing in the window: the counts stay; a camera of 6 s intervals is not
        // missed before three of them have passed, then it is the news.
        let s = m.report(t1 + Duration::from_secs(6), &info(), &[], slot, bounds);
        assert_eq!(
            (s.level, s.message.as_str()),
            (Level::Ok, "waiting for images")
        );
        let s = m.report(t1 + Duration::from_secs(19), &info(), &[], slot, bounds);
        assert_eq!(
            (s.level, s.message.as_str()),
            (
                Level::Warn,
                "waiting for images: none for 19 s (the camera stopped?)"
            )
        );
        // A frame after a 10-minute outage, then silence again: missed after a minute at
        // most, however long the last interval.
        let t2 = t1 + Duration::from_secs(600);
        m.on_input(t2);
        let s = m.report(t2 + Monitor::STALE_MAX, &info(), &[], slot, bounds);
        assert_eq!(s.level, Level::Ok, "{}", s.message);
        let s = m.report(t2 + Duration::from_secs(61), &info(), &[], slot, bounds);
        assert_eq!(s.level, Level::Warn, "{}", s.message);
        m.on_input(t2 + Duration::from_secs(50));
        m.on_input(t2 + Duration::from_secs(100));
        let at = t2 + Duration::from_secs(100) + Monitor::STALE_MAX;
        assert_eq!(m.report(at, &info(), &[], slot, bounds).level, Level::Ok);
        let at = at + Duration::from_secs(1);
        assert_eq!(m.report(at, &info(), &[], slot, bounds).level, Level::Warn);
        assert_eq!(value(&s, "frames skipped (bad input)"), "2");
    }
}

//! The node's inference side, without ROS: take the newest camera frame, pick up
//! parameter changes between frames, run the frame through the engine, hand the outputs to
//! a [`Sink`] and count what happened for `/diagnostics`. The engine and the building of
//! the output messages run on two threads, one frame apart ([`Worker::run`]).
//!
//! The r2r layer implements [`Sink`] with its publishers and the node's ROS clock; the
//! tests use a plain one. Bad input and failures never stop the loop: they are counted,
//! logged at most every few seconds per kind, and the next frame is processed.

use std::sync::{Mutex, MutexGuard};
use std::time::{Duration, Instant};

use super::diagnostics::{Bounds, DiagnosticStatus, Monitor, NodeInfo};
use super::params::LiveParams;
use super::slot::LatestSlot;
use super::throttle::Throttle;
use crate::config::{ColormapParams, Mode, Params};
use crate::engine::{Engine, EngineConfig};
use crate::log_once::LogOnce;
use crate::msg::encoding::DecodeError;
use crate::msg::outputs::{compress_twins, compressed_topic_name, OutputTopic, POINTS_TOPIC};
use crate::msg::{CameraInfo, CompressedImage, Image, PointCloud2, Time};
use crate::pipeline::{
    frame_outputs, overlapped, predict_frame, CameraFrame, FrameError, PredictedFrame,
};
use crate::points::CloudOptions;

/// How often a log line of one kind (an encoding, a topic, ...) may repeat.
pub const LOG_PERIOD: Duration = Duration::from_secs(5);

/// Where outputs go: publishers and the ROS clock in the node.
pub trait Sink {
    /// Whether `topic` is worth publishing (the node skips colour twins nobody subscribes to).
    fn wants(&self, topic: OutputTopic) -> bool;
    fn publish_image(&mut self, topic: OutputTopic, image: Image) -> Result<(), String>;
    /// Whether someone subscribes to `topic`'s compressed twin (`TOPIC/compressed`,
    /// [`crate::msg::outputs::compress`]); false where none is advertised
    /// (`output.compressed: false`).
    fn wants_compressed(&self, topic: OutputTopic) -> bool;
    fn publish_compressed(
        &mut self,
        topic: OutputTopic,
        image: CompressedImage,
    ) -> Result<(), String>;
    /// `depth/camera_info`.
    fn publish_camera_info(&mut self, info: CameraInfo) -> Result<(), String>;
    /// Whether someone subscribes to `depth/camera_info` (depth_image_proc, say).
    fn wants_camera_info(&self) -> bool;
    /// Whether the point cloud is worth building (someone subscribes to `points`).
    fn wants_points(&self) -> bool;
    /// `points`.
    fn publish_points(&mut self, cloud: PointCloud2) -> Result<(), String>;
    /// Now on the node's ROS clock (simulated under `use_sim_time`); `None` while that
    /// clock does not run yet (sim time before the first /clock message).
    fn now(&self) -> Option<Time>;
}

/// State the subscriptions, the parameter services, the diagnostics timer and the
/// inference thread share.
#[derive(Debug)]
pub struct NodeState {
    pub params: LiveParams,
    /// The newest camera frame (keep-latest).
    pub slot: LatestSlot<CameraFrame>,
    pub monitor: Mutex<Monitor>,
    /// The camera's latest camera_info.
    pub camera_info: Mutex<Option<CameraInfo>>,
}

fn lock<T>(m: &Mutex<T>) -> MutexGuard<'_, T> {
    m.lock().unwrap_or_else(|e| e.into_inner())
}

impl NodeState {
    pub fn new(params: LiveParams) -> Self {
        NodeState {
            params,
            slot: LatestSlot::new(),
            monitor: Mutex::new(Monitor::new()),
            camera_info: Mutex::new(None),
        }
    }

    /// A camera message arrived: it becomes the newest frame.
    pub fn on_frame(&self, frame: CameraFrame) {
        lock(&self.monitor).on_input(Instant::now());
        self.slot.put(frame);
    }

    pub fn on_camera_info(&self, info: CameraInfo) {
        lock(&self.monitor).on_camera_info();
        *lock(&self.camera_info) = Some(info);
    }

    /// The `/diagnostics` status for this moment.
    pub fn diagnostics(&self, info: &NodeInfo) -> DiagnosticStatus {
        let params = self.params.params();
        // Forward passes per frame: T in mc mode, one (of values or of moments) otherwise.
        let passes = match params.mode {
            Mode::Mc => params.mc.samples,
            Mode::Aleatoric | Mode::Moments => 1,
        };
        let extra = [
            ("mode", params.mode.to_string()),
            ("passes per frame", passes.to_string()),
            ("precision", params.precision.to_string()),
            ("channels last", params.channels_last.to_string()),
            ("model", params.model.clone()),
        ];
        lock(&self.monitor).report(
            Instant::now(),
            info,
            &extra,
            self.slot.counts(),
            Bounds::new(&params.diagnostics, params.mode),
        )
    }
}

/// Closes the slot when dropped by a panic's unwinding.
struct CloseOnPanic<'a>(&'a LatestSlot<CameraFrame>);

impl Drop for CloseOnPanic<'_> {
    fn drop(&mut self) {
        if std::thread::panicking() {
            self.0.close();
        }
    }
}

/// Milliseconds from `stamp` to `now` (negative when the stamp is ahead of the clock).
pub fn latency_ms(now: Option<Time>, stamp: Time) -> Option<f64> {
    now.map(|now| (now.as_nanos() - stamp.as_nanos()) as f64 / 1e6)
}

/// The inference side of the node, in two stages: `Inference` (decode, parameter
/// changes, the engine) and `Publishing` (the output messages built and handed to the
/// [`Sink`]). [`Worker::run`] runs them on two threads, one frame apart
/// ([`overlapped`]): while a frame's messages are built and published, the next frame is
/// already on the device.
#[derive(Debug)]
pub struct Worker {
    inference: Inference,
    publishing: Publishing,
}

/// The first stage: the engine and the parameters it runs with.
#[derive(Debug)]
struct Inference {
    engine: Engine,
    params: Params,
    /// Version of `params` in [`LiveParams`]; `None` before the first frame.
    version: Option<u64>,
    /// For frames skipped as bad input, by what was wrong (keys from the messages).
    input_throttle: Throttle,
    /// For inference failures.
    throttle: Throttle,
}

/// The second stage: the palette and its own log throttle.
#[derive(Debug)]
struct Publishing {
    palette: Vec<[u8; 3]>,
    throttle: Throttle,
    /// The doubts about the frames' frame_id and camera_info logged so far (each once).
    doubts: LogOnce,
}

/// What the first stage hands the second: a predicted frame and the output parameters in
/// effect when it was predicted.
struct Predicted {
    frame: PredictedFrame,
    colormap: ColormapParams,
    /// The point cloud's filter, where `points.enabled`.
    points: Option<CloudOptions>,
    /// `output.jpeg_quality`.
    jpeg_quality: u8,
}

impl Worker {
    pub fn new(engine: Engine) -> Self {
        let palette = engine.model().spec.palette();
        Worker {
            inference: Inference {
                engine,
                params: Params::default(),
                version: None,
                input_throttle: Throttle::new(LOG_PERIOD),
                throttle: Throttle::new(LOG_PERIOD),
            },
            publishing: Publishing {
                palette,
                throttle: Throttle::new(LOG_PERIOD),
                doubts: LogOnce::new(),
            },
        }
    }

    pub fn engine(&self) -> &Engine {
        &self.inference.engine
    }

    /// Processes frames until the slot is closed and empty; the outputs of the last frame
    /// are published before it returns.
    pub fn run(self, state: &NodeState, sink: &mut (impl Sink + Send)) {
        let Worker {
            mut inference,
            mut publishing,
        } = self;
        let frames = std::iter::from_fn(|| loop {
            match state.slot.take(Duration::from_millis(200)) {
                Some(frame) => return Some(frame),
                None if state.slot.is_closed() => return None,
                None => {}
            }
        });
        overlapped(
            frames,
            |frame| inference.predict(frame, state),
            |predicted| {
                // A panic while publishing closes the slot, so that this thread stops
                // waiting for frames and ends (raising the panic: the node stops with the
                // reason) rather than find the output thread gone at the next frame, which
                // may never come.
                let _closes = CloseOnPanic(&state.slot);
                publishing.publish(predicted, state, sink)
            },
        );
    }

    /// One frame start to finish on this thread: applies parameter changes made since the
    /// last frame, processes it and publishes its outputs, or counts it as skipped or
    /// failed.
    pub fn handle(&mut self, frame: CameraFrame, state: &NodeState, sink: &mut impl Sink) {
        if let Some(predicted) = self.inference.predict(frame, state) {
            self.publishing.publish(predicted, state, sink);
        }
    }
}

impl Inference {
    /// Applies parameter changes and runs the engine on `frame`; a frame that cannot be
    /// decoded is counted as skipped, one the engine fails on as failed.
    fn predict(&mut self, frame: CameraFrame, state: &NodeState) -> Option<Predicted> {
        self.refresh_params(state);
        lock(&state.monitor).on_engine_start(Instant::now());
        let predicted = predict_frame(&self.engine, &frame);
        // A frame that did not decode never reached the network: its time says nothing
        // of how long the network takes.
        let ran = !matches!(predicted, Err(FrameError::BadInput(_)));
        lock(&state.monitor).on_engine_end(Instant::now(), ran);
        match predicted {
            Ok(frame) => Some(Predicted {
                frame,
                colormap: self.params.colormap.clone(),
                points: self
                    .params
                    .points
                    .enabled
                    .then(|| CloudOptions::from_params(&self.params.points)),
                // (Checked to be 1..=100 with the parameters.)
                jpeg_quality: self.params.output.jpeg_quality.clamp(1, 100) as u8,
            }),
            Err(FrameError::BadInput(e)) => {
                lock(&state.monitor).on_skip(Instant::now(), &e.to_string());
                let kind = match &e {
                    DecodeError::UnsupportedEncoding(encoding) => format!("encoding {encoding}"),
                    DecodeError::Malformed { encoding, .. } => format!("malformed {encoding}"),
                    DecodeError::Compressed { format, .. } => format!("compressed {format}"),
                };
                if self.input_throttle.allow(&kind, Instant::now()) {
                    log::warn!("skipping frame: {e}");
                }
                None
            }
            Err(FrameError::Inference(e)) => {
                lock(&state.monitor).on_error(Instant::now(), &e.to_string());
                if self.throttle.allow("inference", Instant::now()) {
                    match e {
                        // It says "inference failed: ..." itself.
                        crate::Error::Inference(_) => log::error!("{e}"),
                        e => log::error!("inference failed: {e}"),
                    }
                }
                None
            }
        }
    }

    /// Live parameter changes take effect between frames.
    fn refresh_params(&mut self, state: &NodeState) {
        let (version, params) = state.params.snapshot();
        if self.version == Some(version) {
            return;
        }
        self.version = Some(version);
        // What a frame's time depends on (not colours, seeds, ranges).
        let cost = |c: &EngineConfig| {
            (
                c.mode,
                c.mc_samples,
                c.mc_batch_size,
                c.mc_max_gpu_memory_mb,
                c.noise_samples,
                c.moments_head_samples,
                c.moments_rules,
                c.cpu_threads,
            )
        };
        let before = cost(self.engine.config());
        match EngineConfig::from_params(&params).and_then(|c| self.engine.set_config(c)) {
            Ok(()) => {
                // Another mode or sample count takes another time per frame: the frames
                // before say nothing of it.
                if cost(self.engine.config()) != before {
                    lock(&state.monitor).on_engine_changed();
                }
                self.params = params;
            }
            Err(e) => log::error!("keeping the previous parameters: the engine refused them: {e}"),
        }
    }
}

impl Publishing {
    /// Builds the frame's messages for the topics the sink wants and publishes them;
    /// counts the frame as published (with its latency) unless nothing could be.
    fn publish(&mut self, predicted: Predicted, state: &NodeState, sink: &mut impl Sink) {
        let camera_info = lock(&state.camera_info).clone();
        let frame = &predicted.frame;
        let (width, height) = frame.rgb.dimensions();
        for doubt in CameraInfo::doubts(camera_info.as_ref(), &frame.header, width, height) {
            self.doubts.warn(&doubt);
        }
        let points = predicted.points.filter(|_| sink.wants_points());
        // Who subscribes, asked once a frame: the images built are those published.
        let raw_wanted: Vec<OutputTopic> = (OutputTopic::ALL.into_iter())
            .filter(|&topic| sink.wants(topic))
            .collect();
        let twins_wanted: Vec<OutputTopic> = (OutputTopic::ALL.into_iter())
            .filter(|&topic| topic.has_compressed_twin() && sink.wants_compressed(topic))
            .collect();
        let outputs = frame_outputs(
            &predicted.frame,
            &self.palette,
            &predicted.colormap,
            camera_info.as_ref(),
            points,
            |topic| raw_wanted.contains(&topic) || twins_wanted.contains(&topic),
        );
        // Outputs a subscriber waits for that need the camera's calibration.
        let info_wanted = outputs.points_without_camera_info
            || (sink.wants_camera_info()
                && camera_info.is_none()
                && predicted.frame.prediction.depth.is_some());
        let without_info =
            info_wanted && lock(&state.monitor).on_frame_without_camera_info(Instant::now());
        if without_info && self.throttle.allow("camera_info", Instant::now()) {
            log::warn!(
                "no point cloud or depth/camera_info: no camera_info has arrived (is \
                 camera_info remapped to the camera's?)"
            );
        }
        let mut published = 0;
        let mut failure = None;
        // The raw images go out first; the compressed twins (encoding a JPEG takes longer
        // than building its image) after them, from copies where both are wanted.
        let mut raw = Vec::new();
        let mut twin_sources: Vec<(OutputTopic, Image)> = Vec::new();
        for (topic, image) in outputs.images {
            match (raw_wanted.contains(&topic), twins_wanted.contains(&topic)) {
                (true, true) => {
                    twin_sources.push((topic, image.clone()));
                    raw.push((topic, image));
                }
                (true, false) => raw.push((topic, image)),
                (false, true) => twin_sources.push((topic, image)),
                (false, false) => {}
            }
        }
        for (topic, image) in raw {
            match sink.publish_image(topic, image) {
                Ok(()) => published += 1,
                Err(e) => failure = Some(self.publish_failed(topic.name(), &e, state)),
            }
        }
        for (topic, twin) in compress_twins(&twin_sources, predicted.jpeg_quality) {
            match twin.and_then(|twin| sink.publish_compressed(topic, twin)) {
                Ok(()) => published += 1,
                Err(e) => {
                    let name = compressed_topic_name(topic);
                    failure = Some(self.publish_failed(&name, &e, state));
                }
            }
        }
        if let Some(info) = outputs.camera_info {
            if let Err(e) = sink.publish_camera_info(info) {
                let topic = crate::msg::outputs::DEPTH_CAMERA_INFO_TOPIC;
                failure = Some(self.publish_failed(topic, &e, state));
            }
        }
        if let Some(cloud) = outputs.points {
            if let Err(e) = sink.publish_points(cloud) {
                failure = Some(self.publish_failed(POINTS_TOPIC, &e, state));
            }
        }
        if let Some(e) = outputs.points_error {
            if self.throttle.allow(POINTS_TOPIC, Instant::now()) {
                log::warn!("no point cloud: {e}");
            }
            lock(&state.monitor).on_cloud_refused(Instant::now(), &e);
        }
        match failure {
            Some(reason) if published == 0 => {
                lock(&state.monitor)
                    .on_error(Instant::now(), &format!("nothing published: {reason}"));
            }
            _ => {
                // Measured under the monitor's lock, which a clock switch (use_sim_time)
                // holds: no latency on the old clock comes after it.
                let mut monitor = lock(&state.monitor);
                let latency = latency_ms(sink.now(), predicted.frame.header.stamp);
                monitor.on_output(Instant::now(), latency);
            }
        }
    }

    /// Counts and (throttled) logs a failed publish; returns the reason.
    fn publish_failed(&mut self, topic: &str, error: &str, state: &NodeState) -> String {
        let reason = format!("publishing {topic}: {error}");
        lock(&state.monitor).on_publish_failure(Instant::now(), &reason);
        if self.throttle.allow(topic, Instant::now()) {
            log::error!("{reason}");
        }
        reason
    }
}

//! `bayes_perception_node`: the ROS 2 node (r2r 0.9.7).
//!
//! This file only wires: parameters, topics, QoS, threads and message conversion. Pixel
//! decoding, output messages, parameter rules, the keep-latest slot and diagnostics live in
//! the library (`msg`, `node`, `engine`) and are tested without ROS.
//!
//! Threads: a spin thread owns rcl (`spin_once` in a loop); tokio tasks move each camera
//! message into the keep-latest slot (so r2r's 10-message channel never fills) and publish
//! `/diagnostics` once a second; one inference thread takes the newest frame, runs the
//! engine and publishes the outputs with the input's header.

use std::collections::HashMap;
use std::process::ExitCode;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::{Duration, Instant};

use anyhow::Context as _;
use bayes_perception::config::{Mode, Params, Reliability, Transport};
use bayes_perception::device::device_name;
use bayes_perception::engine::{Engine, EngineConfig};
use bayes_perception::msg::encoding::{decode_compressed, decode_image, DecodeError};
use bayes_perception::msg::outputs::{build_outputs, OutputTopic, DEPTH_CAMERA_INFO_TOPIC};
use bayes_perception::msg::{self, Header, Time};
use bayes_perception::node::diagnostics::{DiagnosticStatus, Monitor, NodeInfo};
use bayes_perception::node::params::{self as node_params, ParamValue};
use bayes_perception::node::slot::LatestSlot;
use bayes_perception::node::throttle::Throttle;
use futures::StreamExt;
use r2r::diagnostic_msgs::msg as diagnostic;
use r2r::sensor_msgs::msg as sensor;
use r2r::std_msgs::msg as std_msgs;
use r2r::{ParameterValue, QosProfile};

const NODE_NAME: &str = "bayes_perception";

// `use_sim_time` (bag replay) needs r2r built with rosgraph_msgs: fail the build, not the
// replay, when IDL_PACKAGE_FILTER leaves it out. (r2r's doc-only bindings, used to check
// this file without ROS, do not carry that flag.)
#[cfg(not(feature = "ros-doc-only"))]
r2r::assert_compiled_with_use_sim_time_support!();

fn main() -> ExitCode {
    bayes_perception::enable_huge_page_allocations();
    let runtime = match tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
    {
        Ok(runtime) => runtime,
        Err(e) => {
            eprintln!("[{NODE_NAME}] cannot start the tokio runtime: {e}");
            return ExitCode::FAILURE;
        }
    };
    match runtime.block_on(run()) {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            // One clear line through ROS logging, no backtrace.
            ros_log(NODE_NAME, r2r::LogSeverity::Fatal, &format!("{e:#}"));
            ExitCode::FAILURE
        }
    }
}

/// A camera message waiting for inference (decoded only when taken).
enum Input {
    Raw(msg::Image),
    Compressed(msg::CompressedImage),
}

/// Image and camera_info publishers of the current output QoS; replaced (and the old ones
/// destroyed) when `qos.output_reliability` changes.
#[derive(Clone)]
struct Publishers {
    images: HashMap<OutputTopic, r2r::Publisher<sensor::Image>>,
    camera_info: Option<r2r::Publisher<sensor::CameraInfo>>,
}

/// Work that needs `&mut Node`, run by the spin thread between `spin_once` calls: the spin
/// thread owns the node, so nothing else ever waits for it.
type NodeJob = Box<dyn FnOnce(&mut r2r::Node) + Send>;

/// State shared by the spin thread, the tokio tasks and the inference thread.
struct Shared {
    params: Mutex<Params>,
    /// Bumped on every accepted parameter change; the inference thread reloads on change.
    params_version: AtomicU64,
    slot: LatestSlot<Input>,
    monitor: Mutex<Monitor>,
    camera_info: Mutex<Option<sensor::CameraInfo>>,
    /// Mutexes, not RwLocks: r2r publishers are Send but not Sync.
    publishers: Mutex<Publishers>,
    diagnostics: Mutex<r2r::Publisher<diagnostic::DiagnosticArray>>,
    subscriptions: Mutex<Vec<tokio::task::JoinHandle<()>>>,
    clock: Arc<Mutex<r2r::Clock>>,
    logger: String,
    runtime: tokio::runtime::Handle,
    shutdown: AtomicBool,
}

fn lock<T>(m: &Mutex<T>) -> MutexGuard<'_, T> {
    m.lock().unwrap_or_else(|e| e.into_inner())
}

async fn run() -> anyhow::Result<()> {
    let ctx = r2r::Context::create().context("cannot initialise ROS 2")?;
    let mut node = r2r::Node::create(ctx, NODE_NAME, "").context("cannot create the node")?;
    let logger = node.logger().to_owned();
    log::set_boxed_logger(Box::new(RosLog {
        logger: logger.clone(),
    }))
    .ok();
    log::set_max_level(log::LevelFilter::Info);

    let params = start_up_params(&node)?;
    if params.model.is_empty() {
        anyhow::bail!(
            "parameter `model` is empty: set it to a model directory (launch argument model:=DIR)"
        );
    }
    let engine = Engine::load(params.model.as_ref(), EngineConfig::from_params(&params)?)
        .with_context(|| format!("cannot start with model {}", params.model))?;
    let spec = engine.model().spec.clone();
    let palette = spec.palette();
    let device = device_name(engine.device());
    ros_log(
        &logger,
        r2r::LogSeverity::Info,
        &format!(
            "model {} ({}), device {device}, mode {}, samples {}",
            params.model, spec.name, params.mode, params.mc.samples
        ),
    );

    let topics = OutputTopic::advertised(
        spec.tasks.semantic.is_some(),
        spec.tasks.depth.is_some(),
        spec.tasks.depth.as_ref().is_some_and(|d| d.aleatoric),
    );
    let publishers = create_publishers(&mut node, &topics, params.qos.output_reliability)?;
    let diagnostics = node
        .create_publisher::<diagnostic::DiagnosticArray>("/diagnostics", QosProfile::default())
        .context("cannot advertise /diagnostics")?;
    let shared = Arc::new(Shared {
        params: Mutex::new(params.clone()),
        params_version: AtomicU64::new(0),
        slot: LatestSlot::new(),
        monitor: Mutex::new(Monitor::new()),
        camera_info: Mutex::new(None),
        publishers: Mutex::new(publishers),
        diagnostics: Mutex::new(diagnostics),
        subscriptions: Mutex::new(Vec::new()),
        clock: node.get_ros_clock(),
        logger: logger.clone(),
        runtime: tokio::runtime::Handle::current(),
        shutdown: AtomicBool::new(false),
    });

    let (param_handler, mut param_events) = node
        .make_derived_parameter_handler(Arc::new(Mutex::new(LiveParams {
            shared: shared.clone(),
        })))
        .context("cannot create the parameter services")?;
    tokio::spawn(param_handler);
    replace_subscriptions(&mut node, &shared, &params)?;

    // rcl needs spin_once called continuously; this thread owns the node from now on and
    // runs the node jobs sent to it between spins.
    let (jobs, job_queue) = std::sync::mpsc::channel::<NodeJob>();
    let spinner = {
        let shared = shared.clone();
        std::thread::spawn(move || {
            while !shared.shutdown.load(Ordering::Relaxed) {
                node.spin_once(Duration::from_millis(20));
                while let Ok(job) = job_queue.try_recv() {
                    job(&mut node);
                }
            }
        })
    };

    let mut inference = {
        let shared = shared.clone();
        tokio::task::spawn_blocking(move || inference_loop(shared, engine, palette))
    };

    // Diagnostics about once a second.
    {
        let shared = shared.clone();
        let info = NodeInfo {
            node_name: format!("/{}", logger.replace('.', "/")),
            device,
        };
        tokio::spawn(async move {
            let mut interval = tokio::time::interval(Duration::from_secs(1));
            loop {
                interval.tick().await;
                publish_diagnostics(&shared, &info);
            }
        });
    }

    // Until Ctrl-C: apply QoS changes (they need the node, so they go to the spin thread).
    let outcome = loop {
        tokio::select! {
            _ = tokio::signal::ctrl_c() => break Ok(()),
            finished = &mut inference => {
                break Err(anyhow::anyhow!("the inference thread stopped: {}", match finished {
                    Err(e) if e.is_panic() => "it panicked".to_owned(),
                    Err(e) => e.to_string(),
                    Ok(()) => "unexpectedly".to_owned(),
                }));
            }
            event = param_events.next() => {
                let Some((name, _value)) = event else {
                    break Err(anyhow::anyhow!("the parameter services stopped"));
                };
                ros_log(&logger, r2r::LogSeverity::Info, &format!("parameter {name} changed"));
                let current = lock(&shared.params).clone();
                let job: Option<NodeJob> = match name.as_str() {
                    "qos.output_reliability" => {
                        let (shared, topics) = (shared.clone(), topics.clone());
                        Some(Box::new(move |node: &mut r2r::Node| {
                            match create_publishers(node, &topics, current.qos.output_reliability) {
                                Ok(new) => {
                                    let old = std::mem::replace(&mut *lock(&shared.publishers), new);
                                    old.images.into_values().for_each(|p| node.destroy_publisher(p));
                                    old.camera_info.into_iter().for_each(|p| node.destroy_publisher(p));
                                }
                                Err(e) => ros_log(&shared.logger, r2r::LogSeverity::Error, &format!("{e:#}")),
                            }
                        }))
                    }
                    "qos.input_reliability" => {
                        let shared = shared.clone();
                        Some(Box::new(move |node: &mut r2r::Node| {
                            if let Err(e) = replace_subscriptions(node, &shared, &current) {
                                ros_log(&shared.logger, r2r::LogSeverity::Error, &format!("{e:#}"));
                            }
                        }))
                    }
                    _ => None,
                };
                if let Some(job) = job {
                    jobs.send(job).ok();
                }
            }
        }
    };

    shared.shutdown.store(true, Ordering::Relaxed);
    shared.slot.close();
    if !inference.is_finished() {
        inference.await.ok();
    }
    spinner.join().ok();
    outcome
}

/// The node's parameters from what rcl read (params file, launch, `-p`).
fn start_up_params(node: &r2r::Node) -> anyhow::Result<Params> {
    let values: Vec<(String, ParameterValue)> = lock(&node.params)
        .iter()
        .map(|(k, v)| (k.clone(), v.value.clone()))
        .collect();
    let converted = values
        .iter()
        .map(|(name, value)| {
            from_ros_value(value)
                .map(|v| (name.as_str(), v))
                .ok_or_else(|| anyhow::anyhow!("parameter `{name}`: unsupported type {value:?}"))
        })
        .collect::<anyhow::Result<Vec<_>>>()?;
    node_params::from_ros(converted).map_err(|e| anyhow::anyhow!("bad parameters: {e}"))
}

fn input_qos(reliability: Reliability) -> QosProfile {
    match reliability {
        Reliability::BestEffort => QosProfile::sensor_data(),
        Reliability::Reliable => QosProfile::sensor_data().reliable(),
    }
}

fn output_qos(reliability: Reliability) -> QosProfile {
    match reliability {
        Reliability::Reliable => QosProfile::default(),
        Reliability::BestEffort => QosProfile::default().best_effort(),
    }
}

fn create_publishers(
    node: &mut r2r::Node,
    topics: &[OutputTopic],
    reliability: Reliability,
) -> anyhow::Result<Publishers> {
    let qos = output_qos(reliability);
    let mut images = HashMap::new();
    for &topic in topics {
        let publisher = node
            .create_publisher::<sensor::Image>(topic.name(), qos.clone())
            .with_context(|| format!("cannot advertise {}", topic.name()))?;
        images.insert(topic, publisher);
    }
    let camera_info = if topics.contains(&OutputTopic::Depth) {
        Some(node.create_publisher::<sensor::CameraInfo>(DEPTH_CAMERA_INFO_TOPIC, qos.clone())?)
    } else {
        None
    };
    Ok(Publishers {
        images,
        camera_info,
    })
}

/// (Re)subscribes to the camera (raw or compressed) and camera_info with the params' input
/// QoS. The old subscription tasks are stopped first: dropping their streams is how r2r
/// subscriptions end. Each task moves messages into the shared state as fast as they come,
/// so r2r's 10-message channel never fills.
fn replace_subscriptions(
    node: &mut r2r::Node,
    shared: &Arc<Shared>,
    params: &Params,
) -> anyhow::Result<()> {
    let mut tasks = lock(&shared.subscriptions);
    tasks.drain(..).for_each(|task| task.abort());
    let qos = input_qos(params.qos.input_reliability);
    match params.input.transport {
        Transport::Raw => {
            let mut stream = node
                .subscribe::<sensor::Image>("image", qos.clone())
                .context("cannot subscribe to image")?;
            let shared2 = shared.clone();
            tasks.push(shared.runtime.spawn(async move {
                while let Some(image) = stream.next().await {
                    lock(&shared2.monitor).on_input(Instant::now());
                    shared2.slot.put(Input::Raw(image_from_ros(image)));
                }
            }));
        }
        Transport::Compressed => {
            let mut stream = node
                .subscribe::<sensor::CompressedImage>("image/compressed", qos.clone())
                .context("cannot subscribe to image/compressed")?;
            let shared2 = shared.clone();
            tasks.push(shared.runtime.spawn(async move {
                while let Some(image) = stream.next().await {
                    lock(&shared2.monitor).on_input(Instant::now());
                    shared2.slot.put(Input::Compressed(msg::CompressedImage {
                        header: header_from_ros(&image.header),
                        format: image.format,
                        data: image.data,
                    }));
                }
            }));
        }
    }
    let mut info_stream = node
        .subscribe::<sensor::CameraInfo>("camera_info", qos)
        .context("cannot subscribe to camera_info")?;
    let shared2 = shared.clone();
    tasks.push(shared.runtime.spawn(async move {
        while let Some(info) = info_stream.next().await {
            *lock(&shared2.camera_info) = Some(info);
        }
    }));
    Ok(())
}

fn inference_loop(shared: Arc<Shared>, mut engine: Engine, palette: Vec<[u8; 3]>) {
    let logger = shared.logger.clone();
    let mut throttle = Throttle::new(Duration::from_secs(5));
    let mut version = u64::MAX;
    let mut params = Params::default();
    loop {
        let Some(input) = shared.slot.take(Duration::from_millis(200)) else {
            if shared.slot.is_closed() {
                return;
            }
            continue;
        };
        // Live parameter changes take effect between frames.
        let current = shared.params_version.load(Ordering::SeqCst);
        if current != version {
            params = lock(&shared.params).clone();
            version = current;
            if let Err(e) =
                EngineConfig::from_params(&params).and_then(|cfg| engine.set_config(cfg))
            {
                ros_log(
                    &logger,
                    r2r::LogSeverity::Error,
                    &format!("keeping the previous engine settings: {e}"),
                );
            }
        }
        let (header, decoded) = match &input {
            Input::Raw(image) => (&image.header, decode_image(image)),
            Input::Compressed(image) => (&image.header, decode_compressed(image)),
        };
        let rgb = match decoded {
            Ok(rgb) => rgb,
            Err(e) => {
                lock(&shared.monitor).on_skip(&e.to_string());
                let key = match &e {
                    DecodeError::UnsupportedEncoding(encoding) => encoding.clone(),
                    _ => "malformed".to_owned(),
                };
                if throttle.allow(&key, Instant::now()) {
                    ros_log(
                        &logger,
                        r2r::LogSeverity::Warn,
                        &format!("skipping frame: {e}"),
                    );
                }
                continue;
            }
        };
        let prediction = match engine.predict(&rgb) {
            Ok(prediction) => prediction,
            Err(e) => {
                lock(&shared.monitor).on_error(&e.to_string());
                if throttle.allow("inference", Instant::now()) {
                    ros_log(&logger, r2r::LogSeverity::Error, &format!("{e}"));
                }
                continue;
            }
        };
        // A copy, so the lock is not held while rendering (publishers are cheap handles).
        let publishers = lock(&shared.publishers).clone();
        // Colour twins nobody subscribes to are not rendered.
        let wanted = |topic: OutputTopic| {
            publishers.images.get(&topic).is_some_and(|p| {
                !topic.is_color()
                    || p.get_inter_process_subscription_count()
                        .map_or(true, |n| n > 0)
            })
        };
        for (topic, image) in build_outputs(&prediction, header, &palette, &params.colormap, wanted)
        {
            if let Err(e) = publishers.images[&topic].publish(&image_to_ros(image)) {
                ros_log(
                    &logger,
                    r2r::LogSeverity::Error,
                    &format!("publishing {}: {e}", topic.name()),
                );
            }
        }
        if prediction.depth.is_some() {
            let info = lock(&shared.camera_info).clone();
            if let (Some(publisher), Some(mut info)) = (&publishers.camera_info, info) {
                info.header = header_to_ros(header);
                if let Err(e) = publisher.publish(&info) {
                    ros_log(
                        &logger,
                        r2r::LogSeverity::Error,
                        &format!("publishing {DEPTH_CAMERA_INFO_TOPIC}: {e}"),
                    );
                }
            }
        }
        let latency_ms =
            ros_now(&shared).map(|now| (now.as_nanos() - header.stamp.as_nanos()) as f64 / 1e6);
        lock(&shared.monitor).on_output(Instant::now(), latency_ms);
    }
}

fn publish_diagnostics(shared: &Shared, info: &NodeInfo) {
    let params = lock(&shared.params).clone();
    let extra = [
        ("mode", params.mode.to_string()),
        (
            "mc samples",
            if params.mode == Mode::Mc {
                params.mc.samples.to_string()
            } else {
                "1".into()
            },
        ),
        ("model", params.model.clone()),
    ];
    let status = lock(&shared.monitor).report(
        Instant::now(),
        info,
        &extra,
        shared.slot.counts(),
        &params.diagnostics,
    );
    let stamp = ros_now(shared).unwrap_or_default();
    let array = diagnostic::DiagnosticArray {
        header: header_to_ros(&Header {
            stamp,
            frame_id: String::new(),
        }),
        status: vec![status_to_ros(status)],
    };
    if let Err(e) = lock(&shared.diagnostics).publish(&array) {
        ros_log(
            &shared.logger,
            r2r::LogSeverity::Error,
            &format!("publishing /diagnostics: {e}"),
        );
    }
}

/// Now on the node's ROS clock (simulated time under `use_sim_time`); `None` until the
/// clock runs (sim time reads 0 before the first /clock message).
fn ros_now(shared: &Shared) -> Option<Time> {
    let now = lock(&shared.clock).get_now().ok()?;
    (!now.is_zero()).then(|| Time::from_nanos(now.as_nanos() as i64))
}

/// Parameters as r2r sees them: declared from [`Params`], every set validated by the
/// library's rules, the reason returned to `ros2 param set` on refusal.
struct LiveParams {
    shared: Arc<Shared>,
}

impl LiveParams {
    fn validated(&self, name: &str, value: &ParameterValue) -> r2r::Result<Params> {
        let refuse = |msg: String| r2r::Error::ParameterValueConv {
            name: name.to_owned(),
            msg,
        };
        let value =
            from_ros_value(value).ok_or_else(|| refuse(format!("unsupported type {value:?}")))?;
        node_params::check_runtime_change(name).map_err(refuse)?;
        node_params::apply(&lock(&self.shared.params), name, &value).map_err(refuse)
    }
}

impl r2r::RosParams for LiveParams {
    fn register_parameters(
        &mut self,
        _prefix: &str,
        _param: Option<r2r::Parameter>,
        params: &mut indexmap::IndexMap<String, r2r::Parameter>,
    ) -> r2r::Result<()> {
        for (name, value) in node_params::declared(&lock(&self.shared.params)) {
            params.insert(name, r2r::Parameter::new(to_ros_value(&value)));
        }
        Ok(())
    }

    fn get_parameter(&mut self, param_name: &str) -> r2r::Result<ParameterValue> {
        node_params::declared(&lock(&self.shared.params))
            .into_iter()
            .find(|(name, _)| name == param_name)
            .map(|(_, value)| to_ros_value(&value))
            .ok_or_else(|| r2r::Error::InvalidParameterName {
                name: param_name.to_owned(),
            })
    }

    fn set_parameter(&mut self, param_name: &str, param_val: &ParameterValue) -> r2r::Result<()> {
        let updated = self.validated(param_name, param_val)?;
        *lock(&self.shared.params) = updated;
        // The inference thread picks the change up before its next frame.
        self.shared.params_version.fetch_add(1, Ordering::SeqCst);
        Ok(())
    }

    fn check_parameter(&self, param_name: &str, param_val: &ParameterValue) -> r2r::Result<()> {
        self.validated(param_name, param_val).map(|_| ())
    }
}

/// Logs through rcl. r2r turns the message into a C string and panics on a NUL byte, so
/// those are escaped first.
fn ros_log(logger: &str, severity: r2r::LogSeverity, message: &str) {
    r2r::log(
        &message.replace('\0', "\\0"),
        logger,
        file!(),
        line!(),
        severity,
    );
}

/// Forwards the library's `log` records to ROS logging.
struct RosLog {
    logger: String,
}

impl log::Log for RosLog {
    fn enabled(&self, metadata: &log::Metadata) -> bool {
        metadata.level() <= log::Level::Info
    }

    fn log(&self, record: &log::Record) {
        if !self.enabled(record.metadata()) {
            return;
        }
        let severity = match record.level() {
            log::Level::Error => r2r::LogSeverity::Error,
            log::Level::Warn => r2r::LogSeverity::Warn,
            log::Level::Info => r2r::LogSeverity::Info,
            log::Level::Debug | log::Level::Trace => r2r::LogSeverity::Debug,
        };
        ros_log(&self.logger, severity, &record.args().to_string());
    }

    fn flush(&self) {}
}

fn from_ros_value(value: &ParameterValue) -> Option<ParamValue> {
    match value {
        ParameterValue::Bool(b) => Some(ParamValue::Bool(*b)),
        ParameterValue::Integer(i) => Some(ParamValue::Integer(*i)),
        ParameterValue::Double(d) => Some(ParamValue::Double(*d)),
        ParameterValue::String(s) => Some(ParamValue::String(s.clone())),
        _ => None,
    }
}

fn to_ros_value(value: &ParamValue) -> ParameterValue {
    match value {
        ParamValue::Bool(b) => ParameterValue::Bool(*b),
        ParamValue::Integer(i) => ParameterValue::Integer(*i),
        ParamValue::Double(d) => ParameterValue::Double(*d),
        ParamValue::String(s) => ParameterValue::String(s.clone()),
    }
}

fn header_from_ros(header: &std_msgs::Header) -> Header {
    Header {
        stamp: Time {
            sec: header.stamp.sec,
            nanosec: header.stamp.nanosec,
        },
        frame_id: header.frame_id.clone(),
    }
}

fn header_to_ros(header: &Header) -> std_msgs::Header {
    std_msgs::Header {
        stamp: r2r::builtin_interfaces::msg::Time {
            sec: header.stamp.sec,
            nanosec: header.stamp.nanosec,
        },
        frame_id: header.frame_id.clone(),
    }
}

fn image_from_ros(image: sensor::Image) -> msg::Image {
    msg::Image {
        header: header_from_ros(&image.header),
        height: image.height,
        width: image.width,
        encoding: image.encoding,
        is_bigendian: image.is_bigendian,
        step: image.step,
        data: image.data,
    }
}

fn image_to_ros(image: msg::Image) -> sensor::Image {
    sensor::Image {
        header: header_to_ros(&image.header),
        height: image.height,
        width: image.width,
        encoding: image.encoding,
        is_bigendian: image.is_bigendian,
        step: image.step,
        data: image.data,
    }
}

fn status_to_ros(status: DiagnosticStatus) -> diagnostic::DiagnosticStatus {
    diagnostic::DiagnosticStatus {
        level: status.level as u8,
        name: status.name,
        message: status.message,
        hardware_id: status.hardware_id,
        values: status
            .values
            .into_iter()
            .map(|(key, value)| diagnostic::KeyValue { key, value })
            .collect(),
    }
}

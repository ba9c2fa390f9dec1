//! `bayes_perception_node`: the ROS 2 node (r2r 0.9.7).
//!
//! The binary only wires r2r to the library: this file creates topics and threads and
//! applies QoS changes, `services.rs` answers the parameter services, `convert.rs` converts
//! messages. What the node does with a frame, its parameter rules, keep-latest and
//! diagnostics live in `bayes_perception::node` and `bayes_perception::pipeline`, tested
//! without ROS (and all of it end to end by `tests/ros/`).
//!
//! Threads: a spin thread owns the node (`spin_once` in a loop, plus jobs that need
//! `&mut Node`); tokio tasks move camera messages into the keep-latest slot, serve the
//! parameter services and publish `/diagnostics` once a second; the inference thread runs
//! [`Worker::run`].

mod arguments;
mod convert;
mod services;

use std::collections::HashMap;
use std::process::ExitCode;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex, MutexGuard, OnceLock};
use std::time::{Duration, Instant};

use anyhow::Context as _;
use bayes_perception::config::{Mode, Reliability, Transport};
use bayes_perception::device::device_name;
use bayes_perception::engine::{Engine, EngineConfig};
use bayes_perception::error::one_line;
use bayes_perception::msg::outputs::{
    compressed_topic_name, OutputTopic, DEPTH_CAMERA_INFO_TOPIC, POINTS_TOPIC,
};
use bayes_perception::msg::{self, Header, Time};
use bayes_perception::node::diagnostics::{NodeInfo, Subscribed, TopicPublishers};
use bayes_perception::node::params::{Entry, LiveParams, ParamServer, ParamValue};
use bayes_perception::node::worker::{NodeState, Sink, Worker};
use bayes_perception::pipeline::CameraFrame;
use convert::{
    camera_info_from_ros, camera_info_to_ros, compressed_image_to_ros, header_from_ros,
    header_to_ros, image_from_ros, image_to_ros, param_from_r2r, point_cloud_to_ros, status_to_ros,
};
use futures::{Stream, StreamExt};
use r2r::diagnostic_msgs::msg as diagnostic;
use r2r::rcl_interfaces::msg as rcl_msg;
use r2r::sensor_msgs::msg as sensor;
use r2r::QosProfile;
use services::{publish_parameter_event, serve_parameters};

const NODE_NAME: &str = "bayes_perception";
/// How long shut-down waits for a frame in flight before leaving without it.
const SHUTDOWN_GRACE: Duration = Duration::from_secs(3);

/// How long the node stays up after its last publish before it destroys its publishers,
/// while anyone subscribes to them: DDS sends large messages (images) in fragments, and a
/// fragment lost on the way is sent again only when the subscriber asks after the
/// publisher's next heartbeat (every 3 s with Fast DDS's defaults), and a resend can be
/// lost too; a publisher destroyed before then leaves reliable subscribers without some
/// topics of the frame finished at shutdown. In the e2e test (240x320 frames): no wait
/// lost topics in 3 of 3 shutdowns, 1 s in 2 of 4, 3.5 s (one heartbeat) in 1 of 4, 6.5 s
/// (two) in none of 5. r2r has no `rcl_publisher_wait_for_all_acked` to wait for exactly
/// that.
const DELIVERY_LINGER: Duration = Duration::from_millis(6500);

// `use_sim_time` (bag replay) needs r2r built with rosgraph_msgs: fail the build, not the
// replay, when IDL_PACKAGE_FILTER leaves it out.
r2r::assert_compiled_with_use_sim_time_support!();

/// `--help`: how the node is started (it takes no options of its own: everything is a ROS
/// parameter or remapping after `--ros-args`).
const USAGE: &str = "\
bayes_perception_node: semantic labels, metric depth and separate aleatoric and epistemic
uncertainty images from a ROS 2 camera topic (Bayesian FC-DenseNet, MC dropout).

Usage:
  ros2 launch bayes_perception perception.launch.py model:=DIR [image:=TOPIC]
      [camera_info:=TOPIC] [params_file:=FILE] [mode:=aleatoric|moments|mc] [rviz:=true]
  bayes_perception_node --ros-args --params-file FILE [-p model:=DIR]
      [-r image:=TOPIC] [-r camera_info:=TOPIC] [-r __ns:=/NAMESPACE]

Parameters come from the params file (config/params.yaml lists every one; `model`, the
model directory, is required); all but model, device, precision, channels_last,
cpu_threads and input.transport can be changed while it runs (ros2 param set).
Subscribes to `image` (or `image/compressed`) and `camera_info`; publishes semantic/*,
depth, depth/camera_info, uncertainty/*, points and /diagnostics. README.md: \"ROS 2 node\".

Options (before --ros-args): -h, --help  this text; -V, --version  the version.";

fn main() -> ExitCode {
    // Our own options end where ROS's begin.
    // (Not std::env::args, which panics on an argument that is not UTF-8.)
    let own: Vec<String> = std::env::args_os()
        .skip(1)
        .map(|a| a.to_string_lossy().into_owned())
        .take_while(|a| a != "--ros-args")
        .collect();
    if own.iter().any(|a| a == "-h" || a == "--help") {
        println!("{USAGE}");
        return ExitCode::SUCCESS;
    }
    if own.iter().any(|a| a == "-V" || a == "--version") {
        println!(
            "bayes_perception_node {} (libtorch {})",
            env!("CARGO_PKG_VERSION"),
            bayes_perception::LIBTORCH_VERSION
        );
        return ExitCode::SUCCESS;
    }
    // Anything else before --ros-args is a ROS argument given too early (`--params-file
    // FILE` without `--ros-args`), which rcl would never see: said, not ignored.
    if let Some(arg) = own.first() {
        eprintln!(
            "[{NODE_NAME}] unknown argument `{arg}`: ROS arguments go after --ros-args \
             (bayes_perception_node --ros-args --params-file FILE ...); see --help"
        );
        return ExitCode::from(2);
    }
    bayes_perception::configure_allocations();
    let _fail_points = bayes_perception::fail_points_from_env();
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
    let outcome = runtime.block_on(run());
    // Blocking work (none is left after a clean shut-down) must not hold up the exit.
    runtime.shutdown_timeout(Duration::from_millis(100));
    match outcome {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            // One clear line on stderr (rcutils logs there), no backtrace, under the node's
            // logger once there is one (`rear.bayes_perception`: which camera's node).
            let logger = STARTED_LOGGER.get().map_or(NODE_NAME, String::as_str);
            ros_log(logger, r2r::LogSeverity::Fatal, &one_line(&*e));
            ExitCode::FAILURE
        }
    }
}

/// The node's logger name (namespace included), once the node exists.
static STARTED_LOGGER: OnceLock<String> = OnceLock::new();

/// Image, camera_info and point cloud publishers of the current output QoS; replaced (and
/// the old ones destroyed) when `qos.output_reliability` changes.
#[derive(Clone)]
struct Publishers {
    images: HashMap<OutputTopic, r2r::Publisher<sensor::Image>>,
    /// The compressed twins (`TOPIC/compressed`) where `output.compressed`.
    compressed: HashMap<OutputTopic, r2r::Publisher<sensor::CompressedImage>>,
    camera_info: Option<r2r::Publisher<sensor::CameraInfo>>,
    points: Option<r2r::Publisher<sensor::PointCloud2>>,
    /// Their QoS (which `qos.output_reliability` reads only while a change of it has
    /// succeeded).
    reliability: Reliability,
}

impl Publishers {
    /// Whether any output has a subscriber in another process.
    fn subscribed(&self) -> bool {
        self.images.values().any(has_subscribers)
            || self.compressed.values().any(has_subscribers)
            || self.camera_info.iter().any(has_subscribers)
            || self.points.iter().any(has_subscribers)
    }

    /// Takes the publishers off the graph (the node owns them: dropping a handle does not).
    fn destroy(self, node: &mut r2r::Node) {
        self.images
            .into_values()
            .for_each(|p| node.destroy_publisher(p));
        self.compressed
            .into_values()
            .for_each(|p| node.destroy_publisher(p));
        self.camera_info
            .into_iter()
            .for_each(|p| node.destroy_publisher(p));
        self.points
            .into_iter()
            .for_each(|p| node.destroy_publisher(p));
    }
}

/// Whether `publisher` has a subscriber in another process (or the count is unknown).
fn has_subscribers<T: r2r::WrappedTypesupport + 'static>(publisher: &r2r::Publisher<T>) -> bool {
    publisher
        .get_inter_process_subscription_count()
        .map_or(true, |n| n > 0)
}

/// Work that needs `&mut Node`, run by the spin thread between `spin_once` calls: the spin
/// thread owns the node, so nothing else ever waits for it.
type NodeJob = Box<dyn FnOnce(&mut r2r::Node) + Send>;

/// The library's node state plus what only the r2r layer holds.
struct Glue {
    state: NodeState,
    /// Mutexes, not RwLocks: r2r publishers are Send but not Sync.
    publishers: Mutex<Publishers>,
    subscriptions: Mutex<Vec<tokio::task::JoinHandle<()>>>,
    /// The subscriptions' QoS (which `qos.input_reliability` reads only while a change of
    /// it has succeeded).
    input_reliability: Mutex<Reliability>,
    clock: Arc<Mutex<r2r::Clock>>,
    /// Whether the clock follows /clock (`use_sim_time` in effect; a switch that failed
    /// left it off).
    sim_time: AtomicBool,
    logger: String,
    runtime: tokio::runtime::Handle,
    /// When a message was last published (see [`DELIVERY_LINGER`]).
    last_publish: Mutex<Option<Instant>>,
}

impl Glue {
    /// `published` (a publish's result), noting when it succeeded.
    fn published(&self, published: Result<(), r2r::Error>) -> Result<(), String> {
        published.map_err(|e| e.to_string())?;
        *lock(&self.last_publish) = Some(Instant::now());
        Ok(())
    }

    /// Returns once [`DELIVERY_LINGER`] has passed since the last publish, or no output has
    /// a subscriber any more (looked at every 100 ms); at once for best-effort outputs,
    /// which DDS never resends (those in use: a change that failed left the old ones).
    async fn linger_for_delivery(&self) {
        if lock(&self.publishers).reliability == Reliability::BestEffort {
            return;
        }
        let Some(last) = *lock(&self.last_publish) else {
            return;
        };
        while last.elapsed() < DELIVERY_LINGER && lock(&self.publishers).subscribed() {
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
    }
}

fn lock<T>(m: &Mutex<T>) -> MutexGuard<'_, T> {
    m.lock().unwrap_or_else(|e| e.into_inner())
}

async fn run() -> anyhow::Result<()> {
    // Signals are ours from the start: one during start-up ends the node once it is up.
    use tokio::signal::unix::{signal, SignalKind};
    let mut interrupt = signal(SignalKind::interrupt()).context("cannot handle SIGINT")?;
    let mut terminate = signal(SignalKind::terminate()).context("cannot handle SIGTERM")?;
    let ctx = create_context()?;
    let mut node = r2r::Node::create(ctx, NODE_NAME, "").context("cannot create the node")?;
    let logger = node.logger().to_owned();
    STARTED_LOGGER.set(logger.clone()).ok();
    open_rosout(&mut node);
    log::set_boxed_logger(Box::new(RosLog {
        logger: logger.clone(),
    }))
    .ok();
    log::set_max_level(log::LevelFilter::Info);

    // The command line as rcl reads it: the node's parameters and, below, its topic names.
    let namespace = node.namespace()?;
    let ros_args = arguments::RosArguments::from_process_arguments(&node.name()?, &namespace);
    // Everything that can refuse to start does so before any topic is advertised.
    let server = start_up_params(&node, ros_args.as_ref())?;
    let params = server.params().clone();
    if params.model.is_empty() {
        anyhow::bail!(
            "parameter `model` is empty: set it to a model directory (launch argument model:=DIR)"
        );
    }
    let use_sim_time = server.get("use_sim_time") == Some(ParamValue::Bool(true));
    let engine = Engine::load(params.model.as_ref(), EngineConfig::from_params(&params)?)
        .context("cannot start: the model does not load")?;
    let spec = engine.model().spec.clone();
    let device = device_name(engine.device());
    ros_log(
        &logger,
        r2r::LogSeverity::Info,
        &format!(
            "model {} ({}), device {device}, precision {}, mode {}{}",
            params.model,
            spec.name,
            params.precision,
            params.mode,
            match params.mode {
                Mode::Mc => format!(" ({} samples)", params.mc.samples),
                Mode::Aleatoric | Mode::Moments => String::new(),
            }
        ),
    );

    if use_sim_time {
        node.get_time_source()
            .enable_sim_time(&mut node)
            .context("cannot subscribe to /clock for use_sim_time")?;
    }
    let topics = OutputTopic::advertised(
        spec.tasks.semantic.is_some(),
        spec.tasks.depth.is_some(),
        spec.tasks.depth.as_ref().is_some_and(|d| d.aleatoric),
    );
    let publishers = create_publishers(
        &mut node,
        &topics,
        params.qos.output_reliability,
        params.output.compressed,
    )?;
    let advertised = publishers.images.len()
        + usize::from(publishers.camera_info.is_some())
        + usize::from(publishers.points.is_some());
    let twins = match publishers.compressed.len() {
        0 => String::new(),
        n => format!(" (and {n} compressed twins)"),
    };
    let diagnostics = node
        .create_publisher::<diagnostic::DiagnosticArray>("/diagnostics", QosProfile::default())
        .context("cannot advertise /diagnostics")?;
    // As rclcpp nodes do, for tools that follow parameter changes (rqt_reconfigure, ...).
    let parameter_events = node
        .create_publisher::<rcl_msg::ParameterEvent>(
            "/parameter_events",
            QosProfile::default().keep_last(1000),
        )
        .context("cannot advertise /parameter_events")?;
    let fqn = node.fully_qualified_name()?;
    let glue = Arc::new(Glue {
        state: NodeState::new(LiveParams::new(server)),
        publishers: Mutex::new(publishers),
        subscriptions: Mutex::new(Vec::new()),
        input_reliability: Mutex::new(params.qos.input_reliability),
        clock: node.get_ros_clock(),
        logger: logger.clone(),
        runtime: tokio::runtime::Handle::current(),
        last_publish: Mutex::new(None),
        sim_time: AtomicBool::new(use_sim_time),
    });
    let mut param_changes = serve_parameters(&mut node, &glue)?;
    replace_subscriptions(
        &mut node,
        &glue,
        params.input.transport,
        params.qos.input_reliability,
    )?;
    let camera = match params.input.transport {
        Transport::Raw => "image",
        Transport::Compressed => "image/compressed",
    };
    // The names as remapped, where the camera's publishers are looked up.
    let resolve = |name: &str| match &ros_args {
        Some(ros_args) => ros_args.resolve(name),
        // Without the rules (rcl could not parse the arguments again): the namespace only.
        None => arguments::expand(&namespace, name),
    };
    let camera_topic = resolve(camera);
    let camera_info_topic = resolve("camera_info");
    ros_log(
        &logger,
        r2r::LogSeverity::Info,
        &format!(
            "ready: subscribed to {camera_topic} and {camera_info_topic}, publishing {advertised} output \
             topics{twins} and /diagnostics"
        ),
    );
    if let Some(doubt) = params.points.doubt_for_topic(&camera_topic) {
        ros_log(&logger, r2r::LogSeverity::Warn, &doubt);
    }

    // rcl needs spin_once called continuously; this thread owns the node from now on.
    // Without it nothing arrives (frames, parameter requests): `spin_done` drops when it
    // ends, also by a panic, and the node stops with an error rather than run deaf.
    let (jobs, job_queue) = std::sync::mpsc::channel::<NodeJob>();
    let stop_spinning = Arc::new(AtomicBool::new(false));
    let (spin_done, mut spinning_done) = tokio::sync::oneshot::channel::<()>();
    let spinner = {
        let stop = stop_spinning.clone();
        std::thread::Builder::new()
            .name("spin".into())
            .spawn(move || {
                let _done = spin_done;
                while !stop.load(Ordering::Relaxed) {
                    fail::fail_point!("node::spin");
                    node.spin_once(Duration::from_millis(20));
                    while let Ok(job) = job_queue.try_recv() {
                        job(&mut node);
                    }
                }
            })
            .context("cannot start the spin thread")?
    };

    // The inference thread; `done` drops when it ends, also by a panic.
    let (done, mut inference_done) = tokio::sync::oneshot::channel::<()>();
    let inference = {
        let glue = glue.clone();
        let worker = Worker::new(engine);
        std::thread::Builder::new()
            .name("inference".into())
            .spawn(move || {
                let _done = done;
                worker.run(&glue.state, &mut RosSink { glue: &glue });
            })
            .context("cannot start the inference thread")?
    };

    // Diagnostics once a second, until the node shuts down.
    let diagnostics_task = {
        let glue = glue.clone();
        // camera_info matters only to a depth model (depth/camera_info, points).
        let mut subscribed = vec![(Subscribed::Camera, camera_topic.clone())];
        if topics.contains(&OutputTopic::Depth) {
            subscribed.push((Subscribed::CameraInfo, camera_info_topic.clone()));
        }
        let info = NodeInfo {
            node_name: format!("/{}", logger.replace('.', "/")),
            device,
            camera_info_topic,
        };
        let jobs = jobs.clone();
        // One lookup queued at a time, however slow the spin thread is.
        let lookup_pending = Arc::new(AtomicBool::new(false));
        tokio::spawn(async move {
            let mut interval = tokio::time::interval(Duration::from_secs(1));
            loop {
                interval.tick().await;
                // The graph (publishers, namesakes) for the next report (it is the node's).
                if !lookup_pending.swap(true, Ordering::SeqCst) {
                    let job = graph_job(&glue, &subscribed, &info.node_name, &lookup_pending);
                    jobs.send(job).ok();
                }
                let array = diagnostic::DiagnosticArray {
                    header: header_to_ros(&Header {
                        stamp: ros_now(&glue.clock).unwrap_or_default(),
                        frame_id: String::new(),
                    }),
                    status: vec![status_to_ros(glue.state.diagnostics(&info))],
                };
                if let Err(e) = diagnostics.publish(&array) {
                    ros_log(
                        &glue.logger,
                        r2r::LogSeverity::Error,
                        &format!("publishing /diagnostics: {e}"),
                    );
                }
            }
        })
    };

    let outcome = loop {
        tokio::select! {
            _ = interrupt.recv() => break Ok(()),
            _ = terminate.recv() => break Ok(()),
            _ = &mut inference_done => break Err(anyhow::anyhow!("the inference thread stopped unexpectedly")),
            _ = &mut spinning_done => break Err(anyhow::anyhow!("the spin thread stopped unexpectedly (nothing would arrive: frames, camera_info, parameter requests)")),
            changed = param_changes.recv() => {
                // (The sender lives in the parameters, as long as the node.)
                let Some(changed) = changed else {
                    break Err(anyhow::anyhow!("the parameter announcements stopped"));
                };
                publish_parameter_event(&glue, &parameter_events, &fqn, &changed);
                if let Some((_, ParamValue::Bool(sim_time))) = changed.iter().find(|(n, _)| n == "use_sim_time") {
                    jobs.send(clock_job(&glue, *sim_time)).ok();
                }
                let changed: Vec<String> = changed.into_iter().map(|(name, _)| name).collect();
                ros_log(&logger, r2r::LogSeverity::Info, &format!("parameters changed: {}", changed.join(", ")));
                if let Some(job) = qos_job(&glue, &topics, &changed) {
                    jobs.send(job).ok();
                }
                // As at start-up: points.rectified switched off for a rectified-looking topic.
                if changed.iter().any(|n| n == "points.rectified" || n == "points.enabled") {
                    if let Some(doubt) = glue.state.params.params().points.doubt_for_topic(&camera_topic) {
                        ros_log(&logger, r2r::LogSeverity::Warn, &doubt);
                    }
                }
            }
        }
    };

    // No new frames: the inference thread finishes the one in hand, if any. Diagnostics
    // stop too (with the camera unsubscribed they would report it stopped).
    lock(&glue.subscriptions)
        .drain(..)
        .for_each(|task| task.abort());
    diagnostics_task.abort();
    glue.state.slot.close();
    // A second SIGINT or SIGTERM (a second Ctrl-C, ros2 launch escalating) cuts the waits
    // below short. Not polled again once it has completed.
    let again = async {
        tokio::select! {
            _ = interrupt.recv() => {}
            _ = terminate.recv() => {}
        }
    };
    tokio::pin!(again);
    let mut hurried = false;
    let deadline = Instant::now() + SHUTDOWN_GRACE;
    while !inference.is_finished() && Instant::now() < deadline {
        tokio::select! {
            _ = &mut again => {
                hurried = true;
                break;
            }
            _ = tokio::time::sleep(Duration::from_millis(10)) => {}
        }
    }
    if !inference.is_finished() {
        // A frame still in libtorch (a long MC frame on a CPU): leave without it, and
        // without waiting for deliveries (it could publish part of its topics meanwhile).
        // _exit skips destructors that would run under that thread's feet.
        let why = if hurried {
            "a second signal".to_owned()
        } else {
            format!("{SHUTDOWN_GRACE:?}")
        };
        ros_log(
            &logger,
            r2r::LogSeverity::Warn,
            &format!("a frame is still being processed after {why}; exiting without it"),
        );
        if let Err(e) = &outcome {
            ros_log(&logger, r2r::LogSeverity::Fatal, &one_line(&**e));
        }
        unsafe { libc::_exit(if outcome.is_ok() { 0 } else { 1 }) };
    }
    if inference.join().is_err() {
        ros_log(
            &logger,
            r2r::LogSeverity::Error,
            "the inference thread panicked",
        );
    }
    // The last frame's messages reach reliable subscribers before the publishers go.
    if !hurried {
        tokio::select! {
            _ = &mut again => ros_log(
                &logger,
                r2r::LogSeverity::Info,
                "a second signal: leaving without waiting for subscribers to receive the last messages",
            ),
            _ = glue.linger_for_delivery() => {}
        }
    }
    stop_spinning.store(true, Ordering::Relaxed);
    if spinner.join().is_err() {
        ros_log(&logger, r2r::LogSeverity::Error, "the spin thread panicked");
    }
    outcome
}

/// The rcl context from the process arguments (`--ros-args`). r2r panics instead of
/// returning an error when rcl rejects them (a params file that is not valid YAML, say):
/// that panic becomes the error, without a backtrace.
fn create_context() -> anyhow::Result<r2r::Context> {
    let hook = std::panic::take_hook();
    std::panic::set_hook(Box::new(|_| {}));
    let created = std::panic::catch_unwind(r2r::Context::create);
    std::panic::set_hook(hook);
    match created {
        Ok(context) => context.context("cannot initialise ROS 2"),
        Err(panic) => {
            let reason = panic
                .downcast_ref::<String>()
                .cloned()
                .or_else(|| panic.downcast_ref::<&str>().map(|s| s.to_string()))
                .unwrap_or_else(|| "unknown error".into());
            anyhow::bail!("cannot initialise ROS 2: {reason}")
        }
    }
}

/// The node's parameters from what rcl read (params file, launch, `-p`), the params-file
/// entries chosen as rclcpp does; r2r's own choice only where rcl could not parse the
/// arguments again.
fn start_up_params(
    node: &r2r::Node,
    ros_args: Option<&arguments::RosArguments>,
) -> anyhow::Result<ParamServer> {
    let overrides = match ros_args {
        Some(ros_args) => ros_args.param_overrides(&node.fully_qualified_name()?),
        None => None,
    };
    let values: Vec<(String, ParamValue, Entry)> = overrides.unwrap_or_else(|| {
        log::warn!(
            "rcl could not read the parameter overrides again: params-file entries are \
             chosen by r2r's rule (a bare `{NODE_NAME}:` entry applies in every namespace, \
             no wildcard but /**), and every unknown name is refused"
        );
        lock(&node.params)
            .iter()
            .map(|(name, p)| (name.clone(), param_from_r2r(&p.value), Entry::ThisNode))
            .collect()
    });
    let server = ParamServer::from_entries(
        values
            .iter()
            .map(|(n, v, entry)| (n.as_str(), v.clone(), *entry)),
    )
    .map_err(|e| anyhow::anyhow!("bad parameters: {e}"))?;
    for warning in server.ignored_warnings() {
        log::warn!("{warning}");
    }
    Ok(server)
}

/// Looks up, in the ROS graph, the publishers of the camera and camera_info topics
/// (`subscribed`, as resolved), for `/diagnostics` (a publisher of an incompatible QoS
/// delivers nothing and says so only on its own side), and the other nodes named `node`
/// (this node's fully qualified name).
fn graph_job(
    glue: &Arc<Glue>,
    subscribed: &[(Subscribed, String)],
    node: &str,
    pending: &Arc<AtomicBool>,
) -> NodeJob {
    let (glue, pending) = (glue.clone(), pending.clone());
    let (subscribed, fqn) = (subscribed.to_vec(), node.to_owned());
    Box::new(move |node: &mut r2r::Node| {
        pending.store(false, Ordering::SeqCst);
        let mut new_problems = Vec::new();
        // The subscriptions in use (a change that failed left the old ones).
        let subscription = *lock(&glue.input_reliability);
        for (kind, topic) in subscribed {
            let Ok(publishers) = node.get_publishers_info_by_topic(&topic, false) else {
                continue;
            };
            let best_effort = publishers
                .iter()
                .filter(|p| {
                    matches!(
                        p.qos_profile.reliability,
                        r2r::qos::ReliabilityPolicy::BestEffort
                    )
                })
                .count();
            let publishers = TopicPublishers {
                topic,
                reliable: publishers.len() - best_effort,
                best_effort,
                subscription,
            };
            new_problems.push(lock(&glue.state.monitor).on_publishers(
                kind,
                publishers,
                std::time::Instant::now(),
            ));
        }
        // Every node of ours publishes /diagnostics.
        if let Ok(publishers) = node.get_publishers_info_by_topic("/diagnostics", false) {
            let namesakes = publishers
                .iter()
                .filter(|p| arguments::expand(&p.node_namespace, &p.node_name) == fqn)
                .count();
            new_problems.push(lock(&glue.state.monitor).on_namesakes(
                namesakes,
                &fqn,
                std::time::Instant::now(),
            ));
        }
        for problem in new_problems.into_iter().flatten() {
            ros_log(&glue.logger, r2r::LogSeverity::Warn, &problem);
        }
    })
}

/// Moves the node's clock to `/clock` (`use_sim_time` set true while it runs) or back to
/// the system clock, as rclcpp does. Latencies measured on the old clock are forgotten,
/// under the monitor's lock, which the inference thread holds while it measures one. Should
/// `/clock` not be subscribed, the node stays on the system clock and the parameter is set
/// back to false (so a later true tries again).
fn clock_job(glue: &Arc<Glue>, sim_time: bool) -> NodeJob {
    let glue = glue.clone();
    Box::new(move |node: &mut r2r::Node| {
        // Already so: a false that sets back a failed switch, say.
        if glue.sim_time.load(Ordering::SeqCst) == sim_time {
            return;
        }
        let mut monitor = lock(&glue.state.monitor);
        let time_source = node.get_time_source();
        let message = if sim_time {
            match time_source.enable_sim_time(node) {
                Ok(()) => "use_sim_time: the node's clock follows /clock from now on".to_owned(),
                Err(e) => {
                    // r2r marks sim time on before it subscribes: marked off again.
                    time_source.disable_sim_time();
                    drop(monitor);
                    ros_log(
                        &glue.logger,
                        r2r::LogSeverity::Error,
                        &format!(
                            "use_sim_time: cannot subscribe to /clock ({e}); the node stays on \
                             the system clock and use_sim_time is set back to false"
                        ),
                    );
                    let back = [("use_sim_time".to_owned(), ParamValue::Bool(false))];
                    glue.state.params.set_atomically(&back).ok();
                    return;
                }
            }
        } else {
            time_source.disable_sim_time();
            "use_sim_time: the node's clock is the system clock again".to_owned()
        };
        glue.sim_time.store(sim_time, Ordering::SeqCst);
        monitor.clock_changed();
        drop(monitor);
        ros_log(&glue.logger, r2r::LogSeverity::Info, &message);
    })
}

/// The QoS change a set of changed parameters needs, run by the spin thread.
fn qos_job(glue: &Arc<Glue>, topics: &[OutputTopic], changed: &[String]) -> Option<NodeJob> {
    let params = glue.state.params.params();
    let outputs = changed.iter().any(|n| n == "qos.output_reliability");
    let inputs = changed.iter().any(|n| n == "qos.input_reliability");
    if !(outputs || inputs) {
        return None;
    }
    let (glue, topics) = (glue.clone(), topics.to_vec());
    Some(Box::new(move |node: &mut r2r::Node| {
        // A change that fails leaves the old publishers or subscriptions in use, said so.
        let not_applied = |parameter: &str, kept: &str, wanted: Reliability, e: anyhow::Error| {
            let wanted = reliability_name(wanted);
            ros_log(
                &glue.logger,
                r2r::LogSeverity::Error,
                &format!(
                    "{parameter}: the {kept} keep their QoS ({wanted} not applied): {}",
                    one_line(&*e)
                ),
            );
        };
        if outputs {
            let wanted = params.qos.output_reliability;
            match create_publishers(node, &topics, wanted, params.output.compressed) {
                Ok(new) => {
                    let old = std::mem::replace(&mut *lock(&glue.publishers), new);
                    old.destroy(node);
                }
                Err(e) => not_applied("qos.output_reliability", "outputs", wanted, e),
            }
        }
        if inputs {
            let wanted = params.qos.input_reliability;
            if let Err(e) = replace_subscriptions(node, &glue, params.input.transport, wanted) {
                not_applied("qos.input_reliability", "subscriptions", wanted, e);
            }
        }
    }))
}

/// As the parameter says it.
fn reliability_name(reliability: Reliability) -> &'static str {
    match reliability {
        Reliability::BestEffort => "best_effort",
        Reliability::Reliable => "reliable",
    }
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
    compressed: bool,
) -> anyhow::Result<Publishers> {
    let qos = output_qos(reliability);
    let mut created = Publishers {
        images: HashMap::new(),
        compressed: HashMap::new(),
        camera_info: None,
        points: None,
        reliability,
    };
    let create = |node: &mut r2r::Node, created: &mut Publishers| -> anyhow::Result<()> {
        let advertise = |name: &str| format!("cannot advertise {name}");
        for &topic in topics {
            // Fault injection (tests): advertising fails from the Nth image topic on.
            fail::fail_point!("node::advertise", |_| Err(anyhow::anyhow!(
                "{}: fail point node::advertise",
                advertise(topic.name())
            )));
            let publisher = node
                .create_publisher::<sensor::Image>(topic.name(), qos.clone())
                .with_context(|| advertise(topic.name()))?;
            created.images.insert(topic, publisher);
            if compressed && topic.has_compressed_twin() {
                let name = compressed_topic_name(topic);
                let publisher = node
                    .create_publisher::<sensor::CompressedImage>(&name, qos.clone())
                    .with_context(|| advertise(&name))?;
                created.compressed.insert(topic, publisher);
            }
        }
        if topics.contains(&OutputTopic::Depth) {
            created.camera_info = Some(
                node.create_publisher(DEPTH_CAMERA_INFO_TOPIC, qos.clone())
                    .with_context(|| advertise(DEPTH_CAMERA_INFO_TOPIC))?,
            );
            created.points = Some(
                node.create_publisher(POINTS_TOPIC, qos.clone())
                    .with_context(|| advertise(POINTS_TOPIC))?,
            );
        }
        Ok(())
    };
    match create(node, &mut created) {
        Ok(()) => Ok(created),
        Err(e) => {
            // None of a set that failed half-way stays advertised beside the one in use.
            created.destroy(node);
            Err(e)
        }
    }
}

/// (Re)subscribes to the camera (raw or compressed) and camera_info. The new
/// subscriptions are made first and the old tasks stopped only once both are (dropping
/// their streams is how r2r subscriptions end), so a failure leaves the node on the old
/// ones. Each task hands messages to the library as fast as they come, so r2r's
/// 10-message channel never fills.
fn replace_subscriptions(
    node: &mut r2r::Node,
    glue: &Arc<Glue>,
    transport: Transport,
    reliability: Reliability,
) -> anyhow::Result<()> {
    let qos = input_qos(reliability);
    let camera: Box<dyn Stream<Item = CameraFrame> + Send + Unpin> = match transport {
        Transport::Raw => Box::new(
            node.subscribe::<sensor::Image>("image", qos.clone())
                .context("cannot subscribe to image")?
                .map(|m| CameraFrame::Raw(image_from_ros(m))),
        ),
        Transport::Compressed => Box::new(
            node.subscribe::<sensor::CompressedImage>("image/compressed", qos.clone())
                .context("cannot subscribe to image/compressed")?
                .map(|m| {
                    CameraFrame::Compressed(msg::CompressedImage {
                        header: header_from_ros(&m.header),
                        format: m.format,
                        data: m.data,
                    })
                }),
        ),
    };
    // Fault injection (tests): subscribing to camera_info fails.
    fail::fail_point!("node::subscribe_camera_info", |_| Err(anyhow::anyhow!(
        "cannot subscribe to camera_info: fail point node::subscribe_camera_info"
    )));
    let mut info_stream = node
        .subscribe::<sensor::CameraInfo>("camera_info", qos)
        .context("cannot subscribe to camera_info")?;
    let mut tasks = lock(&glue.subscriptions);
    tasks.drain(..).for_each(|task| task.abort());
    let camera_glue = glue.clone();
    tasks.push(glue.runtime.spawn(async move {
        let mut camera = camera;
        while let Some(frame) = camera.next().await {
            camera_glue.state.on_frame(frame);
        }
    }));
    let info_glue = glue.clone();
    tasks.push(glue.runtime.spawn(async move {
        while let Some(info) = info_stream.next().await {
            info_glue.state.on_camera_info(camera_info_from_ros(info));
        }
    }));
    *lock(&glue.input_reliability) = reliability;
    Ok(())
}

/// Publishers and the ROS clock, for the inference thread.
struct RosSink<'a> {
    glue: &'a Glue,
}

impl Sink for RosSink<'_> {
    fn wants(&self, topic: OutputTopic) -> bool {
        lock(&self.glue.publishers)
            .images
            .get(&topic)
            .is_some_and(|p| !topic.is_color() || has_subscribers(p))
    }

    // Publishing holds the publishers' lock, so a QoS change never destroys a publisher
    // in use: it swaps them under the lock and destroys the old ones after.
    fn publish_image(&mut self, topic: OutputTopic, image: msg::Image) -> Result<(), String> {
        let message = image_to_ros(image);
        let publishers = lock(&self.glue.publishers);
        let publisher = publishers.images.get(&topic).ok_or("not advertised")?;
        self.glue.published(publisher.publish(&message))
    }

    fn wants_compressed(&self, topic: OutputTopic) -> bool {
        lock(&self.glue.publishers)
            .compressed
            .get(&topic)
            .is_some_and(has_subscribers)
    }

    fn publish_compressed(
        &mut self,
        topic: OutputTopic,
        image: msg::CompressedImage,
    ) -> Result<(), String> {
        let message = compressed_image_to_ros(image);
        let publishers = lock(&self.glue.publishers);
        let publisher = publishers.compressed.get(&topic).ok_or("not advertised")?;
        self.glue.published(publisher.publish(&message))
    }

    fn publish_camera_info(&mut self, info: msg::CameraInfo) -> Result<(), String> {
        let message = camera_info_to_ros(info);
        let publishers = lock(&self.glue.publishers);
        let publisher = publishers.camera_info.as_ref().ok_or("not advertised")?;
        self.glue.published(publisher.publish(&message))
    }

    fn wants_camera_info(&self) -> bool {
        lock(&self.glue.publishers)
            .camera_info
            .as_ref()
            .is_some_and(has_subscribers)
    }

    fn wants_points(&self) -> bool {
        lock(&self.glue.publishers)
            .points
            .as_ref()
            .is_some_and(has_subscribers)
    }

    fn publish_points(&mut self, cloud: msg::PointCloud2) -> Result<(), String> {
        let message = point_cloud_to_ros(cloud);
        let publishers = lock(&self.glue.publishers);
        let publisher = publishers.points.as_ref().ok_or("not advertised")?;
        self.glue.published(publisher.publish(&message))
    }

    fn now(&self) -> Option<Time> {
        ros_now(&self.glue.clock)
    }
}

/// Now on the node's ROS clock (simulated time under `use_sim_time`); `None` until the
/// clock runs (sim time reads 0 before the first /clock message).
fn ros_now(clock: &Mutex<r2r::Clock>) -> Option<Time> {
    let now = lock(clock).get_now().ok()?;
    (!now.is_zero()).then(|| Time::from_nanos(now.as_nanos() as i64))
}

/// Logs through rcl. r2r turns the message into a C string and panics on a NUL byte, so
/// those are escaped first. Lines rcutils prints (at or above the logger's level,
/// `--log-level`) go to `/rosout` too.
fn ros_log(logger: &str, severity: r2r::LogSeverity, message: &str) {
    let message = message.replace('\0', "\\0");
    // rcutils' severities are rcl_interfaces/Log's levels.
    let level = match severity {
        r2r::LogSeverity::Debug | r2r::LogSeverity::Unset => rcl_msg::Log::DEBUG as u8,
        r2r::LogSeverity::Info => rcl_msg::Log::INFO as u8,
        r2r::LogSeverity::Warn => rcl_msg::Log::WARN as u8,
        r2r::LogSeverity::Error => rcl_msg::Log::ERROR as u8,
        r2r::LogSeverity::Fatal => rcl_msg::Log::FATAL as u8,
    };
    r2r::log(&message, logger, file!(), line!(), severity);
    if let Some(rosout) = ROSOUT.get() {
        publish_rosout(rosout, logger, level, message);
    }
}

thread_local! {
    /// Set while this thread publishes a log line: r2r logs a failed publish through the
    /// `log` crate, which comes back here, and must not publish (or lock) again.
    static PUBLISHING_LOG: std::cell::Cell<bool> = const { std::cell::Cell::new(false) };
}

unsafe extern "C" {
    /// rcutils (linked through rcl): whether the logger prints this severity.
    fn rcutils_logging_logger_is_enabled_for(
        name: *const std::ffi::c_char,
        severity: std::ffi::c_int,
    ) -> bool;
}

fn publish_rosout(
    rosout: &Mutex<r2r::Publisher<rcl_msg::Log>>,
    logger: &str,
    level: u8,
    msg: String,
) {
    if PUBLISHING_LOG.with(|p| p.replace(true)) {
        return;
    }
    let enabled = std::ffi::CString::new(logger).is_ok_and(|name| {
        // SAFETY: a NUL-terminated name; rcutils only reads it (logging is initialised:
        // r2r::log ran first).
        unsafe { rcutils_logging_logger_is_enabled_for(name.as_ptr(), level.into()) }
    });
    if enabled {
        let since_epoch = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .unwrap_or_default();
        let entry = rcl_msg::Log {
            stamp: r2r::builtin_interfaces::msg::Time {
                sec: since_epoch.as_secs() as i32,
                nanosec: since_epoch.subsec_nanos(),
            },
            level,
            name: logger.to_owned(),
            msg,
            file: file!().to_owned(),
            function: String::new(),
            line: line!(),
        };
        // A log line that cannot reach /rosout (shutting down) still went to stderr.
        lock(rosout).publish(&entry).ok();
    }
    PUBLISHING_LOG.with(|p| p.set(false));
}

/// The node's `/rosout` publisher. rcl of Iron and later leaves creating it to the client
/// library (rclcpp, rclpy) and r2r makes none, so without it the node's log would reach
/// only stderr, not rqt_console or a recorded `/rosout`. Where rcl made one itself
/// (Humble), that one is used. rcl's rosout QoS: reliable, transient local, the last
/// 1000 kept for 10 s.
static ROSOUT: std::sync::OnceLock<Mutex<r2r::Publisher<rcl_msg::Log>>> =
    std::sync::OnceLock::new();

fn open_rosout(node: &mut r2r::Node) {
    // A publisher rcl created with the node is in the local graph at once.
    let (name, namespace) = (
        node.name().unwrap_or_default(),
        node.namespace().unwrap_or_default(),
    );
    let rcl_made_one = node
        .get_publishers_info_by_topic("/rosout", false)
        .is_ok_and(|publishers| {
            publishers
                .iter()
                .any(|p| p.node_name == name && p.node_namespace == namespace)
        });
    if rcl_made_one {
        return;
    }
    let mut qos = QosProfile::default()
        .keep_last(1000)
        .reliable()
        .transient_local();
    qos.lifespan = Duration::from_secs(10);
    match node.create_publisher::<rcl_msg::Log>("/rosout", qos) {
        Ok(publisher) => {
            ROSOUT.set(Mutex::new(publisher)).ok();
        }
        Err(e) => ros_log(
            node.logger(),
            r2r::LogSeverity::Warn,
            &format!("cannot publish the log on /rosout ({e}); it goes to stderr only"),
        ),
    }
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

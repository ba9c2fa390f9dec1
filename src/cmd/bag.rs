//! `bayes_perception bag process|info|sample`: rosbag2 files in and out, no ROS needed.
//!
//! `process` reads a camera bag, copies the camera topics (and their camera_info, and the
//! topics `--copy` names, as recorded) byte for byte, runs the engine on every frame and writes the node's output topics under each
//! camera's namespace with the input's header and log time, so the result plays back like
//! a recording of the live node. Frames are predicted on one thread and their messages
//! built and written on a second, while the next frame is in the network. It writes to a
//! temporary directory and renames it at the end; Ctrl-C finishes the frames in hand and
//! closes a valid bag of what was done.

use std::collections::{BTreeMap, BTreeSet, HashMap, HashSet, VecDeque};
use std::ops::ControlFlow;
use std::path::{Path, PathBuf};
use std::process::ExitCode;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::Instant;

use super::progress::Progress;
use anyhow::{bail, Context};
use bayes_perception::bag::cdr::CdrMessage;
use bayes_perception::bag::labelled::is_ground_truth_topic;
use bayes_perception::bag::read::{combined_damage, damage_met_before, BagEvent};
use bayes_perception::bag::{
    qos, storage_file_number, BagError, BagInfo, BagMessage, BagReader, BagWriter, Recorded,
    TopicInfo,
};
use bayes_perception::config::{ColormapParams, Params};
use bayes_perception::device::device_name;
use bayes_perception::error::is_transient_io;
use bayes_perception::log_once::LogOnce;
use bayes_perception::msg::encoding::shown;
use bayes_perception::msg::outputs::{OutputTopic, DEPTH_CAMERA_INFO_TOPIC, POINTS_TOPIC};
use bayes_perception::msg::{CameraInfo, CompressedImage, Header, Image, Time};
use bayes_perception::output::write_file;
use bayes_perception::pipeline::{self, CameraFrame, PredictedFrame};
use bayes_perception::points::CloudOptions;
use bayes_perception::{Engine, EngineConfig};

use super::staged::StagedDir;

use crate::cli::{BagInfoArgs, BagProcessArgs, BagSampleArgs};

const IMAGE: &str = "sensor_msgs/msg/Image";
const COMPRESSED: &str = "sensor_msgs/msg/CompressedImage";
const CAMERA_INFO: &str = "sensor_msgs/msg/CameraInfo";
const POINT_CLOUD2: &str = "sensor_msgs/msg/PointCloud2";
const TF_MESSAGE: &str = "tf2_msgs/msg/TFMessage";

/// The namespace a node processing `topic` would live in: the topic's parent, after
/// dropping image_transport's `/compressed` suffix (`/cam/image_raw/compressed` -> `/cam`).
pub fn camera_namespace(topic: &str, type_name: &str) -> String {
    let base = if type_name == COMPRESSED {
        topic.strip_suffix("/compressed").unwrap_or(topic)
    } else {
        topic
    };
    match base.rfind('/') {
        Some(i) => base[..i].to_owned(),
        None => String::new(),
    }
}

/// Per camera topic bookkeeping.
#[derive(Debug, Default)]
struct CameraState {
    namespace: String,
    /// Where its camera_info is read from.
    camera_info_topic: String,
    read: u64,
}

#[derive(Debug, Default)]
struct Tally {
    cameras: BTreeMap<String, CameraState>,
    /// Skipped frames by reason.
    skipped: BTreeMap<String, u64>,
    not_sampled: u64,
    /// camera_info messages that could not be decoded (not used; copied unless their data
    /// is damaged).
    bad_camera_info: u64,
    /// Frames the engine failed on (valid input: out of memory, a libtorch error), by
    /// reason, and whether any of the failures may pass on another try.
    failed: BTreeMap<String, u64>,
    failed_transient: bool,
    other_messages: u64,
    /// Messages of the topics --copy names whose data could not be read (not copied), by
    /// reason, and those outside --start/--duration (not latched before it, or after it).
    not_copied: BTreeMap<String, u64>,
    copies_outside_window: u64,
    /// Camera frames before `--start` or after `--duration` (camera_info messages there
    /// are left out too, not counted).
    outside_window: u64,
}

/// Damage met while reading, with the log times around the part of the bag it lost: the
/// latest read before it (none: nothing was read before) and the first read after it
/// (none: nothing came after).
struct LostSpan {
    error: BagError,
    after: Option<u64>,
    until: Option<u64>,
}

impl LostSpan {
    /// Whether the lost part may hold messages logged in `[start, end]`.
    fn may_hold(&self, start: u64, end: u64) -> bool {
        self.after.is_none_or(|a| a <= end) && self.until.is_none_or(|u| u >= start)
    }
}

/// `bag process`; with `--json`, a run that stops with an error (before or while writing
/// the output) still writes its report: `status` "error" ("retry" where the exit code is
/// 75: a full disk, say), the exit code and the message.
pub fn process(args: BagProcessArgs) -> anyhow::Result<ExitCode> {
    let (json, input, output) = (args.json.clone(), args.input.clone(), args.output.clone());
    if let Some(path) = &json {
        super::check_report_path(path, Some(&output))?;
    }
    let result = run_process(args);
    if let (Err(e), Some(path)) = (&result, json) {
        let mut fields = serde_json::Map::new();
        fields.insert("input".into(), input.display().to_string().into());
        fields.insert("output".into(), output.display().to_string().into());
        super::write_error_report(&path, fields, e);
    }
    result
}

fn run_process(args: BagProcessArgs) -> anyhow::Result<ExitCode> {
    if args.every == 0 {
        super::usage!("--every must be at least 1");
    }
    if !(args.start.is_finite() && args.start >= 0.0)
        || args.duration.is_some_and(|d| !(d.is_finite() && d >= 0.0))
    {
        super::usage!("--start and --duration must be numbers >= 0 (seconds)");
    }
    let patterns = copy_patterns(&args)?;
    let (params, model_dir) = super::params_and_model(&args.run)?;
    super::warn_unused_overrides(&args.run.overrides, params.mode);
    let reader = BagReader::open(&args.input)?;
    let info = reader.info()?;

    let available: Vec<_> = info
        .topics
        .iter()
        .filter(|t| t.type_name == IMAGE || t.type_name == COMPRESSED)
        .collect();
    let raw_namespaces: Vec<String> = available
        .iter()
        .filter(|t| t.type_name == IMAGE)
        .map(|t| camera_namespace(&t.name, &t.type_name))
        .collect();
    let selected: Vec<_> = if args.topics.is_empty() {
        // A camera recorded both raw and compressed is one camera: use the raw stream, as
        // the node does with `input.transport: raw`.
        available
            .iter()
            .copied()
            .filter(|t| {
                if is_ground_truth_topic(&t.name) {
                    println!(
                        "{} is ground truth of a labelled bag, not a camera; not processed",
                        t.name
                    );
                    return false;
                }
                let twin = t.type_name == COMPRESSED
                    && raw_namespaces.contains(&camera_namespace(&t.name, &t.type_name));
                if twin {
                    println!(
                        "{} is the compressed twin of a raw camera topic; not processed (pick it with --topic)",
                        t.name
                    );
                }
                !twin
            })
            .collect()
    } else {
        args.topics
            .iter()
            .map(|wanted| {
                available.iter().copied().find(|t| &t.name == wanted).ok_or_else(|| {
                    let names: Vec<_> = available.iter().map(|t| t.name.as_str()).collect();
                    anyhow::anyhow!("--topic {wanted} is not a camera topic of this bag (camera topics: {names:?})")
                })
            })
            .collect::<anyhow::Result<_>>()?
    };
    if selected.is_empty() {
        if let Some(damage) = &info.damage {
            bail!("input damaged before any camera frame: {damage}");
        }
        bail!(
            "{} has no sensor_msgs/Image or CompressedImage topic",
            args.input.display()
        );
    }
    let mut namespaces: Vec<String> = selected
        .iter()
        .map(|t| camera_namespace(&t.name, &t.type_name))
        .collect();
    namespaces.sort();
    if let Some(pair) = namespaces.windows(2).find(|w| w[0] == w[1]) {
        bail!(
            "two selected camera topics share the namespace `{}`, so their outputs would mix; pick one with --topic",
            pair[0]
        );
    }
    let mut tally = Tally::default();
    for t in &selected {
        tally.cameras.insert(
            t.name.clone(),
            CameraState {
                namespace: camera_namespace(&t.name, &t.type_name),
                ..Default::default()
            },
        );
    }
    let info_topics = camera_info_topics(&args.camera_infos, &args.topics, &selected, &info)?;
    for camera in tally.cameras.values_mut() {
        if let Some((topic, _)) = info_topics.iter().find(|(_, ns)| **ns == camera.namespace) {
            camera.camera_info_topic = topic.clone();
        }
    }

    // An input topic named like an output would mix two streams in one channel.
    let output_names: HashSet<String> = tally
        .cameras
        .values()
        .flat_map(|camera| {
            OutputTopic::ALL
                .iter()
                .map(|t| t.name())
                .chain([DEPTH_CAMERA_INFO_TOPIC, POINTS_TOPIC])
                .map(|name| format!("{}/{name}", camera.namespace))
        })
        .collect();
    if let Some(clash) = tally
        .cameras
        .keys()
        .chain(info_topics.keys())
        .find(|t| output_names.contains(*t) && info.topics.iter().any(|i| &i.name == *t))
    {
        bail!("input topic {clash} has the name of an output topic; pick other camera topics with --topic");
    }
    let copy = topics_to_copy(&args, &patterns, &info, &tally, &info_topics, &output_names)?;

    // The output keeps the camera topics only: replacing the input with it (--force), a
    // directory holding it or one of its files, would lose the rest of the recording.
    if let Some(file) = input_file_under(&args.input, &info, &args.output) {
        bail!(
            "{} is the input bag, holds it or is part of it ({}): the output keeps only the \
             camera topics, their camera_info, the outputs and the topics copied, so the rest \
             of the recording would be lost (and all of it with a run cut short); write to \
             another OUTPUT",
            args.output.display(),
            file.display()
        );
    }
    // Known when the metadata or the file's summary gives the bag's span (0: not given).
    let bag_seconds = info.duration_ns as f64 / 1e9;
    if info.duration_ns > 0 && args.start > bag_seconds && info.damage.is_none() {
        bail!(
            "--start {} s is past the end of the bag ({bag_seconds:.3} s long): there is \
             nothing to process",
            args.start
        );
    }
    if std::fs::symlink_metadata(&args.output).is_ok() && !args.force {
        bail!(
            "{} exists; pass --force to replace it",
            args.output.display()
        );
    }
    // What killed runs to this OUTPUT had done is kept beside it; then their temporary
    // directories go, and this run's is written under a temporary name, removed on any
    // early return.
    salvage_killed_runs(&args.output, &args.input)?;
    let staged = StagedDir::new(&args.output)?;

    // Profiled, so the summary can say how much time the network itself takes.
    let engine_config = EngineConfig {
        profile: true,
        ..EngineConfig::from_params(&params)?
    };
    let engine = Engine::load(&model_dir, engine_config)?;
    let palette = engine.model().spec.palette();
    // A depth model needs each camera's camera_info (depth/camera_info, points).
    if engine.model().spec.tasks.depth.is_some() {
        let in_bag = camera_info_topics_in(&info);
        for (camera, state) in &tally.cameras {
            let topic = &state.camera_info_topic;
            if !in_bag.contains(&topic.as_str()) {
                log::warn!(
                    "{camera} has no camera_info: the bag has no {topic}, so its frames get no \
                     depth/camera_info and no point cloud (the bag's camera_info topics: \
                     {in_bag:?}; pair one with --camera-info)"
                );
            }
        }
    }
    let interrupted = super::interrupt::graceful();

    let total_frames: u64 = selected.iter().map(|t| t.message_count).sum();
    let progress = Progress::new(total_frames, "frames", "");
    // Float-to-int casts saturate, so huge values give an empty window, never a wrap.
    // Rounded to the nanosecond: a --start written to nine decimals (as the salvage
    // suggests one) is that nanosecond exactly.
    let window_start = info
        .start_ns
        .saturating_add((args.start * 1e9).round() as u64);
    let window_end = args.duration.map_or(u64::MAX, |d| {
        window_start.saturating_add((d * 1e9).round() as u64)
    });
    let mut writer = BagWriter::create_named(staged.path(), staged.name())?;
    writer.set_max_file_bytes((args.max_bag_size > 0).then_some(args.max_bag_size));
    let provenance = provenance(&args, &params, &engine, &model_dir)?;
    writer.set_metadata(PROVENANCE, provenance.clone())?;
    let mark = RunMark {
        input: std::path::absolute(&args.input)?,
        input_start_ns: info.start_ns,
        window_end_ns: args.duration.is_some().then_some(window_end),
        every: args.every,
        provenance,
        selection: selection(&args),
    };
    let mark_path = staged.path().join(RUN_MARK);
    write_file(&mark_path, serde_yaml::to_string(&mark)?.as_bytes())?;
    // Each camera's latest camera_info by log time, and that time (one read later but
    // logged earlier, in an input out of log-time order, does not replace it).
    let mut latest_info: HashMap<String, (u64, CameraInfo)> = HashMap::new();
    let doubts = LogOnce::new();
    let mut written = Written::default();
    let points = params
        .points
        .enabled
        .then(|| CloudOptions::from_params(&params.points));
    for topic in tally.cameras.keys() {
        if let Some(doubt) = params.points.doubt_for_topic(topic) {
            log::warn!("{doubt}");
        }
    }
    // Set by the writing thread when it stops (a write failed): reading stops at the next
    // message, not only at the next hand-over (which may be a whole MC frame away).
    let writer_stopped = AtomicBool::new(false);
    // Damage met, with the log times around what it lost, and the latest log time read.
    let mut damage: Vec<LostSpan> = Vec::new();
    let mut latest_read: Option<u64> = None;
    let started = Instant::now();

    // This thread reads and runs the engine; a second one builds the output messages and
    // writes everything (the input copies too, so the output keeps the input's order)
    // while the next frame is in the network.
    let mut copies = Copies::default();
    let read_result = pipeline::overlapped_with(
        WRITE_QUEUE,
        |hand_over| {
            let read = reader.read_events(|event| {
                let m = match event {
                    BagEvent::Message(m) => m,
                    BagEvent::Damage(error) => {
                        damage.push(LostSpan {
                            error,
                            after: latest_read,
                            until: None,
                        });
                        return ControlFlow::Continue(());
                    }
                };
                // (Not from a message logged before what was read before the damage: log
                // times out of storage order bound nothing.)
                for lost in damage.iter_mut().rev().take_while(|d| d.until.is_none()) {
                    if lost.after.is_none_or(|a| m.log_time >= a) {
                        lost.until = Some(m.log_time);
                    }
                }
                latest_read = Some(latest_read.map_or(m.log_time, |t| t.max(m.log_time)));
                if interrupted.load(Ordering::SeqCst) || writer_stopped.load(Ordering::SeqCst) {
                    return ControlFlow::Break(());
                }
                // The window begins: the latched messages held from before it go first.
                if m.log_time >= window_start && !copies.begin_window(window_start, hand_over) {
                    return ControlFlow::Break(());
                }
                let in_window = m.log_time >= window_start && m.log_time <= window_end;
                if let Some(camera) = tally.cameras.get_mut(m.topic) {
                    progress.inc();
                    if !in_window {
                        tally.outside_window += 1;
                        return ControlFlow::Continue(());
                    }
                    // A message whose data is damaged (compressed data that does not
                    // decompress) is not copied; the frame is skipped. A processed frame's
                    // copy goes to the writer with its outputs (one chunk: a run killed
                    // meanwhile leaves both or neither), any other frame's at once.
                    let mut copy = m.unreadable.is_none().then(|| Copied::of(m, false));
                    camera.read += 1;
                    if (camera.read - 1) % args.every != 0 {
                        tally.not_sampled += 1;
                        return match copy.is_none_or(|c| copies.push(c, hand_over)) {
                            true => ControlFlow::Continue(()),
                            false => ControlFlow::Break(()),
                        };
                    }
                    let predicted = match m.unreadable {
                        Some(reason) => Err(FrameError::Skip(reason.to_owned())),
                        None => predict(&engine, m),
                    };
                    match predicted {
                        Ok(frame) => {
                            let camera_info =
                                latest_info.get(&camera.namespace).map(|(_, i)| i.clone());
                            // As the node: each doubt about the frame_id or the
                            // calibration said once.
                            let (width, height) = frame.rgb.dimensions();
                            let header = &frame.header;
                            for doubt in
                                CameraInfo::doubts(camera_info.as_ref(), header, width, height)
                            {
                                let doubt = format!("{}: {doubt}", m.topic);
                                if doubts.is_new(&doubt) {
                                    progress.suspend(|| log::warn!("{doubt}"));
                                }
                            }
                            let output = Output::Frame(Box::new(PendingFrame {
                                input: copy.take(),
                                topic: m.topic.to_owned(),
                                camera_info,
                                camera_info_topic: camera.camera_info_topic.clone(),
                                namespace: camera.namespace.clone(),
                                log_time: m.log_time,
                                frame,
                            }));
                            // The copies read before it go first.
                            if !copies.flush(hand_over) || !hand_over(output) {
                                return ControlFlow::Break(());
                            }
                        }
                        Err(FrameError::Skip(reason)) => {
                            progress.suspend(|| {
                                log::warn!("{} at {} ns: skipped: {reason}", m.topic, m.log_time)
                            });
                            *tally.skipped.entry(reason_key(&reason)).or_default() += 1;
                        }
                        Err(FrameError::Failed { reason, transient }) => {
                            progress.suspend(|| {
                                log::error!("{} at {} ns: failed: {reason}", m.topic, m.log_time)
                            });
                            *tally.failed.entry(reason_key(&reason)).or_default() += 1;
                            tally.failed_transient |= transient;
                        }
                    }
                    // A frame skipped or failed: its copy alone.
                    if let Some(copy) = copy {
                        if !copies.push(copy, hand_over) {
                            return ControlFlow::Break(());
                        }
                    }
                } else if let Some(namespace) = info_topics
                    .get(m.topic)
                    .filter(|_| m.type_name == CAMERA_INFO)
                {
                    // (A topic named like a camera_info but of another type is another
                    // topic, copied only as --copy asks.)
                    // Before the window: the latest one is the calibration of the window's
                    // first frames (a camera_info recorded once, say); copied only where
                    // the topic is latched, as other latched topics.
                    if m.log_time > window_end {
                        return ControlFlow::Continue(());
                    }
                    if m.unreadable.is_none() {
                        let stopped = match in_window {
                            true => !copies.push(Copied::of(m, false), hand_over),
                            false => {
                                copies.hold_if_latched(m, false, hand_over) == Kept::WriterStopped
                            }
                        };
                        if stopped {
                            return ControlFlow::Break(());
                        }
                    }
                    let decoded = match m.unreadable {
                        Some(reason) => Err(reason.to_owned()),
                        None => CameraInfo::from_cdr(m.data).map_err(|e| e.to_string()),
                    };
                    match decoded {
                        Ok(info) => {
                            let newer = latest_info
                                .get(namespace)
                                .is_none_or(|(t, _)| m.log_time >= *t);
                            if newer {
                                latest_info.insert(namespace.clone(), (m.log_time, info));
                            }
                        }
                        Err(_) if !in_window => {}
                        Err(e) => {
                            tally.bad_camera_info += 1;
                            log::warn!(
                                "{} at {} ns: camera_info not decodable: {e}",
                                m.topic,
                                m.log_time
                            );
                        }
                    }
                } else if copy.contains(m.topic) {
                    // A latched topic's messages before the window too (`/tf_static`, a
                    // map, published once at the start): the window's frames need them.
                    if m.log_time > window_end {
                        tally.copies_outside_window += 1;
                        return ControlFlow::Continue(());
                    }
                    if let Some(reason) = m.unreadable {
                        *tally.not_copied.entry(reason_key(reason)).or_default() += 1;
                        return ControlFlow::Continue(());
                    }
                    // (Asked for every message of the topic, to say at once a doubt about
                    // its QoS.)
                    copies.latched_history(m);
                    let kept = match in_window {
                        true => match copies.push(Copied::of(m, true), hand_over) {
                            true => Kept::Yes,
                            false => Kept::WriterStopped,
                        },
                        false => copies.hold_if_latched(m, true, hand_over),
                    };
                    match kept {
                        Kept::Yes => {}
                        Kept::No => tally.copies_outside_window += 1,
                        Kept::WriterStopped => return ControlFlow::Break(()),
                    }
                } else {
                    tally.other_messages += 1;
                }
                ControlFlow::Continue(())
            });
            // What was read before reading ended (the end, Ctrl-C, damage).
            copies.flush(hand_over);
            tally.copies_outside_window += copies.left_out();
            read
        },
        |output| match written.write(&mut writer, output, &palette, &params.colormap, points) {
            Ok(()) => ControlFlow::Continue(()),
            Err(e) => {
                written.error = Some(e.into());
                writer_stopped.store(true, Ordering::SeqCst);
                ControlFlow::Break(())
            }
        },
    );
    progress.finish_and_clear();
    let elapsed = started.elapsed();
    // Damage whose lost part lies wholly outside --start/--duration lost no frame of the
    // window: said, but the run is not `damaged` for it.
    let (damage, outside): (Vec<LostSpan>, Vec<LostSpan>) = damage
        .into_iter()
        .partition(|d| d.may_hold(window_start, window_end));
    let outside: Vec<String> = outside.into_iter().map(|d| d.error.to_string()).collect();
    let damage: Vec<BagError> = damage.into_iter().map(|d| d.error).collect();
    let read_result = match read_result {
        Err(e) => Err(damage_met_before(e, &damage)),
        Ok(()) => combined_damage(damage).map_or(Ok(()), Err),
    };

    if let Some(e) = written.error.take() {
        return Err(e.context("writing the output bag failed; nothing was kept"));
    }
    let summary = writer.finish()?;
    // Read once: a signal after this point changes neither what is kept nor what is said.
    let interrupted = interrupted.load(Ordering::SeqCst);
    // A run cut short by something other than its input (Ctrl-C, the system failing to
    // read the bag) does not replace a larger earlier output (--force).
    let cut_short =
        interrupted || matches!(&read_result, Err(e) if !matches!(e, BagError::Corrupt { .. }));
    // Compared without the topics this run copies (--copy): their messages, of a busy
    // topic, can outnumber the frames and outputs.
    let earlier_messages = cut_short
        .then(|| BagReader::open(&args.output).and_then(|r| r.info()).ok())
        .flatten()
        .map(|info| {
            messages_besides(
                info.topics.iter().map(|t| (&t.name, t.message_count)),
                &copy,
            )
        });
    let this_run = messages_besides(
        summary.topics.iter().map(|(name, (_, n))| (name, *n)),
        &copy,
    );
    let kept_earlier = keeps_earlier(cut_short, earlier_messages, this_run);
    if kept_earlier {
        drop(staged);
    } else {
        // The mark stays until the bag is in place: a run killed before that leaves a
        // marked bag, which the next run salvages (whole), not an unmarked directory it
        // would take for a killed run's scratch and remove. In place, the mark is no part
        // of the bag (one left by a kill just now is harmless there).
        // Fault injection (tests): the process killed between the bag's end and its rename.
        fail::fail_point!("bag::install", |_| std::process::abort());
        staged.install(args.force)?;
        let mark = args.output.join(RUN_MARK);
        if let Err(e) = std::fs::remove_file(&mark) {
            log::warn!("cannot remove {} (no part of the bag): {e}", mark.display());
        }
    }

    let processed: u64 = written.processed.values().sum();
    let read: u64 = tally.cameras.values().map(|c| c.read).sum();
    println!(
        "{read} camera frame(s) read, {processed} processed ({} on {}, {}, mode {}), {} skipped, {} not sampled (--every {})",
        engine.model().spec.name,
        device_name(engine.device()),
        params.precision,
        params.mode,
        tally.skipped.values().sum::<u64>(),
        tally.not_sampled,
        args.every
    );
    if tally.bad_camera_info > 0 {
        println!(
            "  {} camera_info message(s) not decodable (not used for depth/camera_info; copied \
             unless their data is damaged)",
            tally.bad_camera_info
        );
    }
    if let (n @ 1.., Some(reason)) = &written.no_points {
        println!("  {n} frame(s) without a point cloud: {reason}");
    }
    if tally.outside_window > 0 {
        println!(
            "  {} camera frame(s) outside --start/--duration were left out",
            tally.outside_window
        );
        if read == 0 && read_result.is_ok() && !interrupted {
            log::warn!(
                "no camera frame lies in --start/--duration (see `bag info` for the bag's \
                 start and duration): the output holds no camera frames"
            );
        }
    }
    for e in &outside {
        println!(
            "  input damaged outside --start/--duration (no frame of the window was lost \
             to it; a camera_info or latched message in the lost part could not reach the \
             window): {e}"
        );
    }
    for (reason, count) in &tally.skipped {
        println!("  skipped {count}: {reason}");
    }
    for (reason, count) in &tally.failed {
        println!("  failed {count}: {reason}");
    }
    for (topic, camera) in &tally.cameras {
        let ns = if camera.namespace.is_empty() {
            "/"
        } else {
            camera.namespace.as_str()
        };
        let done = written.processed.get(topic).copied().unwrap_or(0);
        let outputs = if done > 0 {
            format!("outputs under {ns}")
        } else {
            "no outputs".to_owned()
        };
        println!(
            "  {topic}: {} read, {done} processed, {outputs}",
            camera.read
        );
    }
    if processed > 0 {
        let wall_ms = elapsed.as_secs_f64() * 1e3;
        println!(
            "  {:.2} frames/s: {:.0} ms per frame overall, {:.0} ms of it in the network's forward passes; \
             {:.1} % of the time outside the network (decode, encode, bag I/O)",
            processed as f64 / elapsed.as_secs_f64(),
            wall_ms / processed as f64,
            written.forward_ms / processed as f64,
            100.0 * (1.0 - written.forward_ms / wall_ms)
        );
    }
    if processed == 0 && read > 0 && read_result.is_ok() && !interrupted {
        log::warn!(
            "no frame was processed: every camera frame read was skipped or failed (reasons \
             above); the output holds the input copies only"
        );
    }
    if !written.copied.is_empty() {
        println!(
            "  {} message(s) of {} other topic(s) copied ({})",
            written.copied.values().sum::<u64>(),
            written.copied.len(),
            copy_flags(&args)
        );
    }
    if tally.copies_outside_window > 0 {
        println!(
            "  {} message(s) of copied topics outside --start/--duration were left out",
            tally.copies_outside_window
        );
    }
    for (reason, count) in &tally.not_copied {
        println!("  {count} message(s) of copied topics not copied: {reason}");
    }
    if tally.other_messages > 0 {
        let excluding = !args.exclude_regex.is_empty();
        let hint = match (args.copy_all, !args.copy_regex.is_empty()) {
            (true, _) if !excluding => "named like an output, or without a type: see above",
            (true, _) | (_, true) => {
                "not matched by --copy-regex, left out by --exclude-regex, named like an \
                 output, or without a type: see above"
            }
            (false, false) => "--copy TOPIC, --copy-regex or --copy-all copies them",
        };
        println!(
            "  {} message(s) of other topics not copied ({hint})",
            tally.other_messages
        );
    }
    let size = if kept_earlier {
        println!(
            "{} left as it was: the earlier output there holds {} messages, this run stopped \
             short with {}, which were not kept in its place (topics --copy names not counted)",
            args.output.display(),
            earlier_messages.unwrap_or_default(),
            this_run
        );
        0
    } else {
        let size = dir_size(&args.output);
        let files = match summary.files.len() {
            1 => String::new(),
            n => format!(" in {n} storage files"),
        };
        println!(
            "wrote {} ({} messages, {} topics, {:.1} MiB{files})",
            args.output.display(),
            summary.message_count,
            summary.topics.len(),
            size as f64 / (1024.0 * 1024.0)
        );
        size
    };
    let outcome = if kept_earlier {
        "nothing of this run was kept"
    } else {
        "the output holds the frames done so far"
    };

    let (status, code) = if interrupted {
        println!("interrupted: {outcome}");
        ("interrupted", super::interrupt::EXIT_INTERRUPTED)
    } else if let Err(e @ BagError::Corrupt { .. }) = &read_result {
        println!("input damaged: {e}");
        println!("the output holds every frame read: all but the rest of each damaged file");
        ("damaged", 1)
    } else if let Err(e) = &read_result {
        // Not the bag's data: the system could not read it, or $TMPDIR could not hold a
        // decompressed file (full: worth another try).
        println!("reading stopped: {e}");
        if !kept_earlier {
            println!("the output holds every frame read before that point");
        }
        match e {
            BagError::Io { source, .. } if is_transient_io(source) => ("retry", 75),
            _ => ("read failed", 1),
        }
    } else if tally.failed_transient {
        println!(
            "some frames failed for lack of memory: another try (with more free memory) may succeed"
        );
        ("retry", 75)
    } else if !tally.failed.is_empty() {
        ("frames failed", 1)
    } else {
        ("ok", 0)
    };
    if let Some(path) = &args.json {
        let report = serde_json::json!({
            "input": args.input.display().to_string(),
            "output": args.output.display().to_string(),
            "status": status,
            "exit_code": code,
            "camera_frames_read": read,
            "processed": processed,
            "skipped": tally.skipped,
            "failed": tally.failed,
            "not_sampled": tally.not_sampled,
            "copied": written.copied,
            "not_copied": tally.not_copied,
            "copies_outside_window": tally.copies_outside_window,
            "other_messages_not_copied": tally.other_messages,
            "outside_window": tally.outside_window,
            "frames_without_points": written.no_points.0,
            "no_points_reason": written.no_points.1,
            "damage": match &read_result {
                Err(e @ BagError::Corrupt { .. }) => Some(e.to_string()),
                _ => None,
            },
            "damage_outside_window": outside,
            "read_error": match &read_result {
                Err(BagError::Corrupt { .. }) | Ok(()) => None,
                Err(e) => Some(e.to_string()),
            },
            "seconds": elapsed.as_secs_f64(),
            "forward_ms_per_frame": (processed > 0).then(|| written.forward_ms / processed as f64),
            "kept_earlier_output": kept_earlier,
            "output_messages": if kept_earlier { 0 } else { summary.message_count },
            "output_bytes": size,
            "model": engine.model().spec.name,
            "mode": params.mode.to_string(),
            "device": device_name(engine.device()),
        });
        write_file(path, serde_json::to_string_pretty(&report)?.as_bytes())?;
    }
    Ok(ExitCode::from(code))
}

/// A file of the input bag (its storage files, and a directory's metadata.yaml) that
/// `output` is or holds, if any: what replacing `output` would delete. `output` is taken as
/// its parent resolved plus its own name, as it is replaced (a symlink there is replaced,
/// not what it points to).
fn input_file_under(input: &Path, bag: &BagInfo, output: &Path) -> Option<PathBuf> {
    let output = match (output.parent(), output.file_name()) {
        (Some(parent), Some(name)) => {
            let parent = if parent.as_os_str().is_empty() {
                Path::new(".")
            } else {
                parent
            };
            parent.canonicalize().ok()?.join(name)
        }
        _ => output.canonicalize().ok()?,
    };
    let metadata = input.is_dir().then(|| input.join("metadata.yaml"));
    bag.files
        .iter()
        .chain(metadata.as_ref())
        .filter_map(|f| f.canonicalize().ok())
        .find(|f| f.starts_with(&output))
}

/// The bag's sensor_msgs/CameraInfo topics.
fn camera_info_topics_in(bag: &BagInfo) -> Vec<&str> {
    bag.topics
        .iter()
        .filter(|t| t.type_name == CAMERA_INFO)
        .map(|t| t.name.as_str())
        .collect()
}

/// Each camera's camera_info topic, with the camera's namespace: `--camera-info` paired
/// with the cameras in the order of `--topic`, or else `camera_info` in each camera's
/// namespace.
fn camera_info_topics(
    given: &[String],
    topics: &[String],
    selected: &[&TopicInfo],
    bag: &BagInfo,
) -> anyhow::Result<HashMap<String, String>> {
    let namespace = |t: &TopicInfo| camera_namespace(&t.name, &t.type_name);
    if given.is_empty() {
        return Ok(selected
            .iter()
            .map(|t| (format!("{}/camera_info", namespace(t)), namespace(t)))
            .collect());
    }
    if given.len() != selected.len() || (topics.is_empty() && selected.len() > 1) {
        super::usage!(
            "--camera-info pairs with the cameras in the order of --topic: {} given for {} \
             camera topic(s){}",
            given.len(),
            selected.len(),
            if topics.is_empty() {
                " found in the bag (name them with --topic)"
            } else {
                ""
            }
        );
    }
    let in_bag = camera_info_topics_in(bag);
    let mut pairs = HashMap::new();
    for (topic, camera) in given.iter().zip(selected) {
        if !in_bag.contains(&topic.as_str()) {
            let file = [".yaml", ".yml"].iter().any(|e| topic.ends_with(e));
            bail!(
                "--camera-info {topic} is not a sensor_msgs/CameraInfo topic of this bag (its \
                 camera_info topics: {in_bag:?}){}",
                if file {
                    "; bag process takes a topic of the bag here, not a calibration file"
                } else {
                    ""
                }
            );
        }
        if pairs.insert(topic.clone(), namespace(camera)).is_some() {
            bail!("--camera-info {topic} is given for two cameras");
        }
    }
    Ok(pairs)
}

/// `--copy-regex` and `--exclude-regex`, compiled.
struct CopyPatterns {
    wanted: Vec<regex::Regex>,
    excluded: Vec<regex::Regex>,
}

/// Compiles `--copy-regex` and `--exclude-regex`: one that does not parse, or an exclusion
/// with nothing to exclude from, is a usage error.
fn copy_patterns(args: &BagProcessArgs) -> anyhow::Result<CopyPatterns> {
    let compile = |flag: &str, sources: &[String]| -> anyhow::Result<Vec<regex::Regex>> {
        let mut compiled = Vec::new();
        for r in sources {
            match regex::Regex::new(r) {
                Ok(regex) => compiled.push(regex),
                Err(e) => super::usage!("{flag} {r}: {e}"),
            }
        }
        Ok(compiled)
    };
    let patterns = CopyPatterns {
        wanted: compile("--copy-regex", &args.copy_regex)?,
        excluded: compile("--exclude-regex", &args.exclude_regex)?,
    };
    if !patterns.excluded.is_empty() && !args.copy_all && patterns.wanted.is_empty() {
        super::usage!(
            "--exclude-regex leaves topics out of --copy-all or --copy-regex: give one of them"
        );
    }
    Ok(patterns)
}

/// The topics `bag process` copies besides the cameras and their camera_info: those
/// `--copy` names (each must be in the bag, none named like an output), and those
/// `--copy-all` (every topic) or `--copy-regex` choose whose messages are not processed
/// or copied already, less those `--exclude-regex` matches and those named like an output
/// or without a type (said).
fn topics_to_copy(
    args: &BagProcessArgs,
    patterns: &CopyPatterns,
    bag: &BagInfo,
    tally: &Tally,
    info_topics: &HashMap<String, String>,
    output_names: &HashSet<String>,
) -> anyhow::Result<BTreeSet<String>> {
    let clash = |topic: &str| {
        format!("{topic} has the name of an output topic of this run, which writes its own")
    };
    // Copied already: the cameras processed and their camera_info.
    let handled = |t: &TopicInfo| {
        tally.cameras.contains_key(&t.name)
            || (info_topics.contains_key(&t.name) && t.type_name == CAMERA_INFO)
    };
    // An MCAP channel without a schema has no type to copy it as.
    let untyped =
        |topic: &str| format!("{topic} has no message type (an MCAP channel without a schema)");
    let mut copy = BTreeSet::new();
    for topic in &args.copy {
        let Some(t) = bag.topics.iter().find(|t| &t.name == topic) else {
            let names: Vec<&str> = bag.topics.iter().map(|t| t.name.as_str()).collect();
            bail!("--copy {topic} is not a topic of this bag (its topics: {names:?})");
        };
        if output_names.contains(topic) {
            bail!("--copy {}", clash(topic));
        }
        if t.type_name.is_empty() {
            bail!("--copy {}", untyped(topic));
        }
        if handled(t) {
            println!(
                "--copy {topic}: processed or a camera's camera_info, so in the output already"
            );
            continue;
        }
        copy.insert(topic.clone());
    }
    // By pattern: --copy-all or --copy-regex, less --exclude-regex.
    let CopyPatterns { wanted, excluded } = patterns;
    if !args.copy_all && wanted.is_empty() {
        return Ok(copy);
    }
    let left_out = |name: &str| excluded.iter().any(|r| r.is_match(name));
    for r in wanted {
        let mut candidates = bag
            .topics
            .iter()
            .filter(|t| !handled(t) && !left_out(&t.name));
        if !candidates.any(|t| r.is_match(&t.name)) {
            println!(
                "--copy-regex {r} matches no topic to copy in this bag (none but those \
                 processed, their camera_info, or those --exclude-regex leaves out)"
            );
        }
    }
    let chosen =
        |name: &str| (args.copy_all || wanted.iter().any(|r| r.is_match(name))) && !left_out(name);
    for t in bag.topics.iter().filter(|t| !handled(t) && chosen(&t.name)) {
        if copy.contains(&t.name) {
            continue;
        } else if output_names.contains(&t.name) {
            println!("{}; not copied", clash(&t.name));
        } else if t.type_name.is_empty() {
            println!("{}; not copied", untyped(&t.name));
        } else {
            copy.insert(t.name.clone());
        }
    }
    if !copy.is_empty() {
        let names: Vec<&str> = copy.iter().map(String::as_str).collect();
        println!(
            "copying {} other topic(s): {}",
            copy.len(),
            names.join(", ")
        );
    }
    Ok(copy)
}

/// The messages of a bag's topics but those of `copied` (the topics a run copies with
/// --copy): what two bags are compared by ([`keeps_earlier`]).
fn messages_besides<'a>(
    topics: impl Iterator<Item = (&'a String, u64)>,
    copied: &BTreeSet<String>,
) -> u64 {
    topics
        .filter(|(name, _)| !copied.contains(*name))
        .map(|(_, n)| n)
        .sum()
}

/// Whether a run's output stays out of place of an earlier one (`--force`): only a run cut
/// short (interrupted, the bag unreadable for a system reason) whose output holds fewer
/// messages than a readable earlier output (both without the topics the run copies with
/// --copy, [`messages_besides`]). A run through its whole input replaces it, and
/// so does a longer cut-short one (the earlier one may itself be an interrupted run's).
fn keeps_earlier(cut_short: bool, earlier_messages: Option<u64>, this_run: u64) -> bool {
    cut_short && earlier_messages.is_some_and(|earlier| earlier > this_run)
}

/// Hand-overs in a row before the reading thread waits for the writing one: a frame being
/// written, and behind it the copies read after it, the next frame (with its input copy),
/// and so on (per camera: more cameras share it).
const WRITE_QUEUE: usize = 4;

/// What the reading thread hands the writing one, in the input's order.
enum Output {
    /// Input messages copied byte for byte (camera frames not processed, camera_info, the
    /// topics --copy names), read since the last hand-over.
    Copies(Vec<Copied>),
    /// A predicted camera frame.
    Frame(Box<PendingFrame>),
}

/// Copies gathered are handed over once they hold this many bytes or messages, or before
/// the next frame: a copy alone would take a place in the writer's queue, so a busy topic
/// (an IMU at 400 Hz beside a 10 Hz camera) would stall the reading thread behind the frame
/// being written.
const COPY_BATCH_BYTES: usize = 1 << 20;
const COPY_BATCH_MESSAGES: usize = 1024;

/// The input copies on their way to the writer, in the input's order: gathered between
/// frames and handed over together; a latched topic's messages logged before the window
/// held until it begins.
#[derive(Default)]
struct Copies {
    batch: Vec<Copied>,
    batch_bytes: usize,
    /// Latched messages from before the window, per topic the last as many as a
    /// subscriber joining at its start would receive; none once it has begun.
    held: BTreeMap<String, VecDeque<Copied>>,
    /// The window's start, once a message at or after it has been read.
    window_begun: Option<u64>,
    /// Per topic: whether it is latched, and how many messages a late subscriber gets.
    latched: HashMap<String, Option<usize>>,
    /// Messages of topics --copy names that were held and superseded (a later one of the
    /// topic took their place).
    superseded: u64,
    /// Per latched topic, the latest log time of its messages from before the window
    /// that were written (at the window's start).
    released: HashMap<String, u64>,
}

/// The most messages held from before the window for one latched topic (the last of
/// them): a `/tf_static` republished at 10 Hz over an hour's --start (36 000) would
/// otherwise be held, and written, whole.
const MAX_HELD: usize = 10_000;

impl Copies {
    /// How many of the topic's messages a subscriber joining late receives, where it is
    /// latched ([`qos::latched_history`]). Every message of a latched tf topic: each of
    /// tf's static broadcasters (one a node, joining the recording at any time, and
    /// publishing again on each new transform) latches what it sent, and listeners merge
    /// them, where the recorded profiles count only the broadcasters there when recording
    /// began. A `/tf_static` recorded without QoS profiles is taken as latched too, and said
    /// once: replayed, it is offered with the player's default (volatile) QoS, which tf
    /// listeners do not take.
    fn latched_history(&mut self, m: &BagMessage) -> Option<usize> {
        if let Some(&history) = self.latched.get(m.topic) {
            return history;
        }
        let profiles = &m.recorded.offered_qos_profiles;
        let mut history = qos::latched_history(profiles);
        if history.is_some() && m.type_name == TF_MESSAGE {
            history = Some(usize::MAX);
        }
        if history.is_none() && profiles.trim().is_empty() && m.topic.ends_with("/tf_static") {
            log::warn!(
                "{} was recorded without QoS profiles: taken as latched here, but `ros2 bag \
                 play` offers it volatile, which tf listeners (transient_local) do not take; \
                 play it with --qos-profile-overrides-path",
                m.topic
            );
            history = Some(usize::MAX);
        }
        self.latched.insert(m.topic.to_owned(), history);
        history
    }

    /// A message logged before the window (`extra`: of a topic --copy names): held, where
    /// its topic is latched, until the window begins; read after it began (an input not in
    /// log-time order), copied at once, logged at the window's start. What became of it
    /// ([`Kept`]).
    fn hold_if_latched(
        &mut self,
        m: &BagMessage,
        extra: bool,
        hand_over: &mut dyn FnMut(Output) -> bool,
    ) -> Kept {
        let Some(history) = self.latched_history(m) else {
            return Kept::No;
        };
        let mut copy = Copied::of(m, extra);
        if let Some(start) = self.window_begun {
            // Older than one written already, it would replace that on replay (the player
            // latches the last): superseded, but for tf, whose broadcasts each add their
            // own frames (listeners merge them).
            let newest = self.released.get(m.topic).copied();
            if m.type_name != TF_MESSAGE && newest.is_some_and(|newest| m.log_time < newest) {
                self.superseded += u64::from(extra);
                return Kept::Yes;
            }
            self.release(&copy);
            copy.log_time = start;
            return match self.push(copy, hand_over) {
                true => Kept::Yes,
                false => Kept::WriterStopped,
            };
        }
        // In log-time order (the input's may not be), the oldest superseded first.
        let held = self.held.entry(m.topic.to_owned()).or_default();
        let at = held.partition_point(|c| c.log_time <= copy.log_time);
        held.insert(at, copy);
        while held.len() > history.min(MAX_HELD) {
            if held.pop_front().is_some_and(|c| c.extra) {
                self.superseded += 1;
            }
        }
        Kept::Yes
    }

    /// Notes a latched message from before the window as written.
    fn release(&mut self, copy: &Copied) {
        let newest = self
            .released
            .entry(copy.topic.clone())
            .or_insert(copy.log_time);
        *newest = (*newest).max(copy.log_time);
    }

    /// Messages of topics --copy names held from before the window and not written: those
    /// superseded, and those still held where the window never began.
    fn left_out(&self) -> u64 {
        let held = self.held.values().flatten().filter(|c| c.extra).count();
        self.superseded + held as u64
    }

    /// At the first message of the window: the held messages go first, in the order they
    /// were logged, each logged at the window's start (when a recorder started then would
    /// have received them). False: the writer has stopped.
    fn begin_window(&mut self, start: u64, hand_over: &mut dyn FnMut(Output) -> bool) -> bool {
        if self.window_begun.is_some() {
            return true;
        }
        self.window_begun = Some(start);
        let mut held: Vec<Copied> = std::mem::take(&mut self.held)
            .into_values()
            .flatten()
            .collect();
        held.sort_by_key(|c| c.log_time);
        for mut copy in held {
            self.release(&copy);
            copy.log_time = start;
            if !self.push(copy, hand_over) {
                return false;
            }
        }
        true
    }

    /// Adds a copy, handing the batch over when it is full. False: the writer has stopped.
    fn push(&mut self, copy: Copied, hand_over: &mut dyn FnMut(Output) -> bool) -> bool {
        self.batch_bytes += copy.data.len();
        self.batch.push(copy);
        if self.batch_bytes >= COPY_BATCH_BYTES || self.batch.len() >= COPY_BATCH_MESSAGES {
            return self.flush(hand_over);
        }
        true
    }

    /// Hands the copies gathered over. False: the writer has stopped.
    fn flush(&mut self, hand_over: &mut dyn FnMut(Output) -> bool) -> bool {
        if self.batch.is_empty() {
            return true;
        }
        self.batch_bytes = 0;
        hand_over(Output::Copies(std::mem::take(&mut self.batch)))
    }
}

/// What became of a message given to [`Copies::hold_if_latched`].
#[derive(PartialEq)]
enum Kept {
    /// Held, copied, or counted as superseded.
    Yes,
    /// Not latched: left out.
    No,
    WriterStopped,
}

/// An input message as it is copied into the output: bytes, times, and its topic as
/// recorded ([`BagWriter::copy`]).
struct Copied {
    topic: String,
    type_name: String,
    log_time: u64,
    publish_time: u64,
    data: Vec<u8>,
    recorded: Arc<Recorded>,
    /// Of a topic --copy names (counted per topic as written).
    extra: bool,
}

impl Copied {
    /// `m` as it is copied (`extra`: of a topic --copy names).
    fn of(m: &BagMessage, extra: bool) -> Self {
        Copied {
            topic: m.topic.to_owned(),
            type_name: m.type_name.to_owned(),
            log_time: m.log_time,
            publish_time: m.publish_time,
            data: m.data.to_vec(),
            recorded: m.recorded.clone(),
            extra,
        }
    }

    fn write(&self, writer: &mut BagWriter) -> Result<(), BagError> {
        writer.copy(&BagMessage {
            topic: &self.topic,
            type_name: &self.type_name,
            log_time: self.log_time,
            publish_time: self.publish_time,
            data: &self.data,
            recorded: &self.recorded,
            unreadable: None,
        })
    }
}

/// A predicted camera frame, whose output messages go under `namespace` at the input's
/// log time, after the copy of the input message (none when its data could not be read).
struct PendingFrame {
    input: Option<Copied>,
    topic: String,
    namespace: String,
    log_time: u64,
    frame: PredictedFrame,
    /// The camera's latest camera_info when the frame was read, and its topic.
    camera_info: Option<CameraInfo>,
    camera_info_topic: String,
}

/// The writing thread's part of the tally (the reading thread keeps [`Tally`]).
#[derive(Default)]
struct Written {
    /// Frames whose outputs were written, per camera topic.
    processed: HashMap<String, u64>,
    /// Time inside the network's forward passes of those frames, milliseconds.
    forward_ms: f64,
    /// Frames whose point cloud could not be built, and the first reason.
    no_points: (u64, Option<String>),
    /// Messages of the topics --copy names written, per topic.
    copied: BTreeMap<String, u64>,
    /// Why the output could not be written (the run stops).
    error: Option<anyhow::Error>,
}

impl Written {
    /// Writes an input copy, or builds a frame's output messages and writes them.
    fn write(
        &mut self,
        writer: &mut BagWriter,
        output: Output,
        palette: &[[u8; 3]],
        colormap: &ColormapParams,
        points: Option<CloudOptions>,
    ) -> Result<(), BagError> {
        let PendingFrame {
            input,
            topic,
            namespace,
            log_time,
            frame,
            camera_info,
            camera_info_topic,
        } = match output {
            Output::Copies(copies) => {
                for copied in copies {
                    copied.write(writer)?;
                    if copied.extra {
                        *self.copied.entry(copied.topic).or_default() += 1;
                    }
                }
                return Ok(());
            }
            Output::Frame(frame) => *frame,
        };
        // The input and all its outputs in one chunk (end_group below).
        writer.hold_chunk();
        if let Some(copied) = input {
            copied.write(writer)?;
        }
        let outputs = pipeline::frame_outputs(
            &frame,
            palette,
            colormap,
            camera_info.as_ref(),
            points,
            |_| true,
        );
        for (output, image) in outputs.images {
            writer.write(
                &format!("{namespace}/{}", output.name()),
                IMAGE,
                log_time,
                &image.to_cdr(),
            )?;
        }
        if let Some(info) = outputs.camera_info {
            writer.write(
                &format!("{namespace}/{DEPTH_CAMERA_INFO_TOPIC}"),
                CAMERA_INFO,
                log_time,
                &info.to_cdr(),
            )?;
        }
        if let Some(cloud) = outputs.points {
            writer.write(
                &format!("{namespace}/{POINTS_TOPIC}"),
                POINT_CLOUD2,
                log_time,
                &cloud.to_cdr(),
            )?;
        }
        let no_camera_info = outputs
            .points_without_camera_info
            .then(|| format!("no camera_info on {camera_info_topic} before the frame"));
        if let Some(reason) = outputs.points_error.or(no_camera_info) {
            self.no_points.0 += 1;
            self.no_points.1.get_or_insert(reason);
        }
        self.forward_ms += outputs.forward_ms;
        *self.processed.entry(topic).or_default() += 1;
        // A frame's input and outputs go into one chunk, which ends after about 1 MiB or a
        // second after the last: a run killed later leaves them whole for the next run to
        // salvage, one killed meanwhile none of the chunk's frames (the next run processes
        // them).
        writer.end_group()
    }
}

/// The options that chose the topics copied, for the summary (`--copy, --copy-regex`).
fn copy_flags(args: &BagProcessArgs) -> String {
    let used = [
        ("--copy", !args.copy.is_empty()),
        ("--copy-regex", !args.copy_regex.is_empty()),
        ("--copy-all", args.copy_all),
        ("--exclude-regex", !args.exclude_regex.is_empty()),
    ];
    let flags: Vec<&str> = used.iter().filter(|u| u.1).map(|u| u.0).collect();
    flags.join(", ")
}

/// The options of a `bag process` run that choose what it processes and copies, as
/// arguments.
fn selection(args: &BagProcessArgs) -> Vec<String> {
    let pairs = [
        ("--topic", &args.topics),
        ("--camera-info", &args.camera_infos),
        ("--copy", &args.copy),
        ("--copy-regex", &args.copy_regex),
        ("--exclude-regex", &args.exclude_regex),
    ];
    let mut options: Vec<String> = pairs
        .iter()
        .flat_map(|(flag, values)| values.iter().flat_map(|v| [flag.to_string(), v.clone()]))
        .collect();
    if args.copy_all {
        options.push("--copy-all".into());
    }
    options
}

/// The name of the MCAP metadata record, in each storage file of `bag process`'s output,
/// that says how the bag was made ([`provenance`]).
const PROVENANCE: &str = "bayes_perception";

/// How `bag process` makes its output, for the bag to say: the binary, the command line,
/// the input and the model (absolute paths), the device and every parameter in effect (as
/// a params file's `ros__parameters` block), so that a processed bag found later tells
/// what produced its outputs. No time or host: the same command from the same directory
/// writes the same bag.
fn provenance(
    args: &BagProcessArgs,
    params: &Params,
    engine: &Engine,
    model_dir: &Path,
) -> anyhow::Result<BTreeMap<String, String>> {
    let absolute = |p: &Path| std::path::absolute(p).unwrap_or_else(|_| p.to_owned());
    let command = super::command_line(1);
    // The model as the run found it (--model, or the params file's, relative to it).
    let model = absolute(model_dir).display().to_string();
    let params = Params {
        model: model.clone(),
        ..params.clone()
    };
    Ok(BTreeMap::from([
        (
            "version".to_owned(),
            format!(
                "bayes_perception {} (libtorch {})",
                env!("CARGO_PKG_VERSION"),
                bayes_perception::LIBTORCH_VERSION
            ),
        ),
        ("command".to_owned(), command.join(" ")),
        (
            "input".to_owned(),
            absolute(&args.input).display().to_string(),
        ),
        ("model".to_owned(), model),
        ("model_name".to_owned(), engine.model().spec.name.clone()),
        ("device".to_owned(), device_name(engine.device())),
        ("params".to_owned(), serde_yaml::to_string(&params)?),
    ]))
}

/// A `bag process` run's mark in its temporary directory, removed once the bag is installed:
/// which input it read, so that what it wrote can be salvaged with where it got to if it is
/// killed (a finished bag not yet installed too: whole).
const RUN_MARK: &str = "bag_process_run.yaml";

#[derive(Debug, Clone, PartialEq, serde::Serialize, serde::Deserialize)]
struct RunMark {
    /// The input bag, as an absolute path.
    input: PathBuf,
    /// Its first log time (ns since the epoch; 0: unknown).
    input_start_ns: u64,
    /// The last log time of the run's --start/--duration window; none without --duration
    /// (so in marks of versions before it).
    #[serde(default)]
    window_end_ns: Option<u64>,
    /// The run's --every.
    #[serde(default = "one")]
    every: u64,
    /// How its output is made ([`provenance`]), for the salvaged bag to say too.
    #[serde(default)]
    provenance: BTreeMap<String, String>,
    /// Its options choosing what is processed and copied (`--topic`, `--camera-info`,
    /// `--copy`, `--copy-regex`, `--copy-all`, `--exclude-regex`), for the rest to choose
    /// the same.
    #[serde(default)]
    selection: Vec<String>,
}

fn one() -> u64 {
    1
}

impl RunMark {
    /// The options that process the rest of the killed run's window, from the messages
    /// logged at `next_ns` on (the salvage kept those logged before): its topics and
    /// copies, `--start`, the `--duration` that ends where the window ended, and
    /// `--every`.
    fn rest(&self, next_ns: u64) -> String {
        let seconds = |ns: u64| format!("{}.{:09}", ns / 1_000_000_000, ns % 1_000_000_000);
        // --start S takes messages logged at or after the input's start + S.
        let mut options = format!(
            "--start {}",
            seconds(next_ns.saturating_sub(self.input_start_ns))
        );
        // The window holds messages logged at its end: --duration 0 is the one nanosecond.
        if let Some(end) = self.window_end_ns {
            options += &format!(" --duration {}", seconds(end.saturating_sub(next_ns)));
        }
        if self.every > 1 {
            options += &format!(" --every {}", self.every);
        }
        for option in &self.selection {
            options += &format!(" {}", super::shell_quoted(option));
        }
        options
    }
}

/// What runs of this host that were killed (SIGKILL, out of memory) had written towards
/// `output` (the current run reads `input`): each one's whole frames copied into a complete
/// bag `OUTPUT.salvaged` (`-2`, `-3`, .. when taken or being written) and its temporary directory removed,
/// said with how far into its input it got and, for the same input, the options that
/// process the rest ([`RunMark::rest`]). A failure to salvage stops the run, which would otherwise remove
/// the killed run's files; a killed run whose storage files cannot be copied without a
/// gap (one before the last damaged) is kept whole as `OUTPUT.unsalvaged` (`-2`, ..),
/// said, and the run goes on. Temporary directories without [`RUN_MARK`] (not `bag
/// process`'s, or of a version before it) are left to [`StagedDir::new`].
fn salvage_killed_runs(output: &Path, input: &Path) -> anyhow::Result<()> {
    let Some(name) = output.file_name().map(|n| n.to_string_lossy().into_owned()) else {
        return Ok(());
    };
    for partial in super::staged::killed_partials(output) {
        let Some(mark) = std::fs::read_to_string(partial.join(RUN_MARK))
            .ok()
            .and_then(|text| serde_yaml::from_str::<RunMark>(&text).ok())
        else {
            continue;
        };
        let files = storage_files(&partial);
        if files.is_empty() {
            continue;
        }
        let finished = partial.join("metadata.yaml").is_file();
        let parent = partial.parent().unwrap_or(Path::new("."));
        // `NAME.KIND`, else `NAME.KIND-2`, ..: not one a live run is writing either (`bag
        // process ... OUT.salvaged`).
        let free_name = |kind: &str| {
            (1..=1000)
                .map(|k| match k {
                    1 => parent.join(format!("{name}.{kind}")),
                    k => parent.join(format!("{name}.{kind}-{k}")),
                })
                .find(|path| !super::staged::taken(path))
                .with_context(|| {
                    format!(
                        "no free name for what a killed run wrote in {} ({name}.{kind} to \
                         {name}.{kind}-1000 are taken)",
                        partial.display()
                    )
                })
        };
        let target = free_name("salvaged")?;
        let salvaged = salvage(&files, &target, finished, &mark.provenance);
        let (messages, next_ns, in_order) = match salvaged.with_context(|| {
            format!(
                "could not keep what a killed run wrote in {}; make room for a copy of it, or \
                 remove it to go on without it",
                partial.display()
            )
        })? {
            Salvaged::Copied {
                messages,
                next_ns,
                in_order,
            } => (messages, next_ns, in_order),
            Salvaged::Damaged(why) => {
                // Not from the kill: kept whole under a name of its own for a person to
                // look at, out of the way of the runs after this one.
                let aside = free_name("unsalvaged")?;
                match super::staged::rename_no_replace(&partial, &aside) {
                    // Another run to OUTPUT set it aside first.
                    Err(e) if e.kind() == std::io::ErrorKind::NotFound => continue,
                    result => result.with_context(|| {
                        format!("cannot move {} to {}", partial.display(), aside.display())
                    })?,
                }
                // The damaged file where it is now.
                let why = why.replace(&partial.display().to_string(), &aside.display().to_string());
                log::warn!(
                    "what a killed run wrote towards {} from {} was not copied: {why}; its \
                     files are kept as {}",
                    output.display(),
                    mark.input.display(),
                    aside.display()
                );
                continue;
            }
        };
        // Kept (or nothing to keep): the killed run's directory goes now, so that a run
        // killed after this point does not salvage it twice.
        std::fs::remove_dir_all(&partial)
            .with_context(|| format!("cannot remove {}", partial.display()))?;
        if messages == 0 {
            // Killed before a chunk was whole, or with only its first frame's time written.
            log::warn!(
                "a killed run towards {} from {} had written nothing whole to keep; its \
                 temporary directory {} is removed",
                output.display(),
                mark.input.display(),
                partial.display()
            );
            continue;
        }
        let started = mark.input_start_ns;
        let same_input = std::path::absolute(input).is_ok_and(|p| p == mark.input);
        let (up_to, go_on) = match next_ns {
            // metadata.yaml is written when the bag is finished: the run was killed only on
            // its way to putting it in place, and nothing is left to process.
            None => (
                String::new(),
                "; the run had finished it: nothing is left to process".to_owned(),
            ),
            Some(next) => {
                let into_ms = (next.saturating_sub(started) / 1_000_000) as f64 / 1e3;
                let go_on = match (started > 0 && same_input, in_order) {
                    (true, true) => format!("; `{}` processes the rest", mark.rest(next)),
                    // Messages logged before `next` may still have been to come.
                    (true, false) => "; its messages are not in log-time order (nor, then, \
                                      are the input's), so no --start takes exactly the rest: \
                                      process the input whole"
                        .to_owned(),
                    (false, _) => String::new(),
                };
                (
                    format!(
                        ", those logged before {into_ms:.3} s into it (its last frame's go to \
                         the rest)"
                    ),
                    go_on,
                )
            }
        };
        log::warn!(
            "a killed run had written towards {} from {}: {messages} message(s){up_to} kept \
             as {}, a complete bag{go_on}",
            output.display(),
            mark.input.display(),
            target.display()
        );
    }
    Ok(())
}

/// The MCAP storage files of a run's directory in the order they were written
/// (`NAME_0.mcap`, `NAME_1.mcap`, .. by the number, not as text: `_10` after `_9`).
fn storage_files(dir: &Path) -> Vec<PathBuf> {
    let Ok(entries) = std::fs::read_dir(dir) else {
        return Vec::new();
    };
    let mut files: Vec<(u64, PathBuf)> = entries
        .flatten()
        .map(|e| e.path())
        .filter(|p| p.extension().is_some_and(|e| e == "mcap"))
        .map(|p| (storage_file_number(&p).unwrap_or(u64::MAX), p))
        .collect();
    files.sort();
    files.into_iter().map(|(_, p)| p).collect()
}

/// What [`salvage`] did.
enum Salvaged {
    /// This many messages copied; of a run cut short, all but those logged at its latest
    /// log time, `next_ns`, where the rest begins; `in_order` when the run wrote its
    /// messages in log-time order (as it reads an input stored in that order), without
    /// which no time divides what it did from the rest.
    Copied {
        messages: u64,
        next_ns: Option<u64>,
        in_order: bool,
    },
    /// Nothing copied: a storage file before the last is damaged (not by the kill: each
    /// file was finished before the next was begun), so a copy would have a gap.
    Damaged(String),
}

/// Copies the readable messages of a killed run's MCAP files (in order) into a new bag at
/// `target` (staged: a kill meanwhile leaves no half bag there): all of a `finished` bag's;
/// of a run cut short, those logged before its latest log time. The messages logged then
/// (its last frame, another camera's of the same time, a camera_info) can be in a chunk
/// the kill cut short while others of that time are in an earlier one: the rest begins at
/// that time, so none is in neither bag. Nothing is left at `target` when there is
/// nothing to copy, copying fails or a file is damaged.
fn salvage(
    files: &[PathBuf],
    target: &Path,
    finished: bool,
    provenance: &BTreeMap<String, String>,
) -> anyhow::Result<Salvaged> {
    // Numbered from 0 without a gap, or one is missing (a power loss before the directory
    // was synced, a person): a copy would have a gap.
    if let Some(k) = (0..files.len()).find(|&k| storage_file_number(&files[k]) != Some(k as u64)) {
        return Ok(Salvaged::Damaged(format!(
            "its storage file numbered {k} is missing ({} found)",
            files.len()
        )));
    }
    let (mut next_ns, mut in_order) = (None, true);
    if !finished {
        let (latest, in_order) = (&mut next_ns, &mut in_order);
        let read = read_killed_run(files, false, |m| {
            *in_order &= latest.is_none_or(|t| m.log_time >= t);
            *latest = Some(latest.map_or(m.log_time, |t: u64| t.max(m.log_time)));
            Ok(())
        })?;
        if let Err(why) = read {
            return Ok(Salvaged::Damaged(why));
        }
    }
    let staged = StagedDir::new(target)?;
    let mut writer = BagWriter::create_named(staged.path(), staged.name())?;
    // How the killed run made its output (a mark of a version before it has none), and
    // what of it this is.
    if !provenance.is_empty() {
        let what = match next_ns {
            Some(next) => format!(
                "what a killed run had written: its messages logged before {next} ns since \
                 the epoch"
            ),
            None => "a killed run's finished bag, whole".to_owned(),
        };
        let mut entries = provenance.clone();
        entries.insert("salvaged".to_owned(), what);
        writer.set_metadata(PROVENANCE, entries)?;
    }
    let mut messages = 0u64;
    let read = read_killed_run(files, true, |m| {
        if next_ns.is_some_and(|next| m.log_time >= next) {
            return Ok(());
        }
        writer.copy(m)?;
        messages += 1;
        Ok(())
    })?;
    if let Err(why) = read {
        return Ok(Salvaged::Damaged(why));
    }
    writer.finish()?;
    if messages > 0 {
        staged.install(false)?;
    }
    Ok(Salvaged::Copied {
        messages,
        next_ns,
        in_order,
    })
}

/// Calls `each` with every readable message of a killed run's MCAP files in order: to the
/// end of each, or of the last up to where the kill cut it (`announce`: each file said in
/// the log). `Ok(Err(why))`: a file before the last is damaged (a copy would have a gap);
/// `Err`: `each` failed, or a file could not be read.
fn read_killed_run(
    files: &[PathBuf],
    announce: bool,
    mut each: impl FnMut(&BagMessage) -> Result<(), BagError>,
) -> anyhow::Result<Result<(), String>> {
    for (k, mcap) in files.iter().enumerate() {
        if announce {
            log::info!("reading what a killed run wrote in {}", mcap.display());
        }
        let reader = BagReader::open(mcap)?;
        let mut failed = None;
        let read = reader.read(|m| {
            if m.unreadable.is_some() {
                return ControlFlow::Continue(());
            }
            match each(m) {
                Ok(()) => ControlFlow::Continue(()),
                Err(e) => {
                    failed = Some(e);
                    ControlFlow::Break(())
                }
            }
        });
        // The killed run's last file ends mid-record, or before its summary: read up to
        // there.
        match (failed, read) {
            (Some(e), _) => return Err(e.into()),
            (None, Ok(())) => {}
            (None, Err(e @ (BagError::Corrupt { .. } | BagError::Io { .. })))
                if k + 1 < files.len() =>
            {
                let later = files.len() - 1 - k;
                return Ok(Err(format!("{e}, with {later} storage file(s) after it")));
            }
            (None, Err(BagError::Corrupt { .. })) => {}
            (None, Err(e)) => return Err(e.into()),
        }
    }
    Ok(Ok(()))
}

enum FrameError {
    /// Bad input frame: counted and skipped.
    Skip(String),
    /// The engine failed on a valid frame: counted; `transient` when another try may pass
    /// (out of memory).
    Failed { reason: String, transient: bool },
}

/// Decodes a camera message and runs the engine on it.
fn predict(engine: &Engine, m: &BagMessage) -> Result<PredictedFrame, FrameError> {
    let skip = |e: &dyn std::fmt::Display| FrameError::Skip(e.to_string());
    let frame = if m.type_name == COMPRESSED {
        CameraFrame::Compressed(CompressedImage::from_cdr(m.data).map_err(|e| skip(&e))?)
    } else {
        CameraFrame::Raw(Image::from_cdr(m.data).map_err(|e| skip(&e))?)
    };
    pipeline::predict_frame(engine, &frame).map_err(|e| match e {
        pipeline::FrameError::BadInput(e) => skip(&e),
        pipeline::FrameError::Inference(e) => FrameError::Failed {
            reason: e.to_string(),
            transient: e.is_transient(),
        },
    })
}

/// Groups skip reasons for the summary: "unsupported encoding `nv12`" stays whole, the
/// per-frame details of other reasons (byte counts, offsets) are cut at the first colon.
fn reason_key(reason: &str) -> String {
    if reason.starts_with("unsupported encoding") {
        return reason.to_owned();
    }
    reason.split(": ").next().unwrap_or(reason).to_owned()
}

fn dir_size(dir: &Path) -> u64 {
    std::fs::read_dir(dir)
        .map(|entries| {
            entries
                .filter_map(|e| e.ok()?.metadata().ok())
                .map(|m| m.len())
                .sum()
        })
        .unwrap_or(0)
}

pub fn info(args: BagInfoArgs) -> anyhow::Result<ExitCode> {
    let reader = BagReader::open(&args.path)?;
    let info = reader.info()?;
    let seconds = |ns: u64| ns as f64 / 1e9;
    let files: Vec<String> = info
        .files
        .iter()
        .map(|f| {
            f.file_name()
                .map_or(String::new(), |n| n.to_string_lossy().into_owned())
        })
        .collect();
    println!("Files:             {}", files.join(", "));
    println!("Bag size:          {}", file_size(info.size_bytes));
    println!("Storage id:        {}", info.storage.identifier());
    println!("Compression:       {}", reader.compression().describe());
    println!("Duration:          {:.3}s", seconds(info.duration_ns));
    println!(
        "Start:             {:.3} (s since epoch)",
        seconds(info.start_ns)
    );
    println!(
        "End:               {:.3} (s since epoch)",
        seconds(info.start_ns.saturating_add(info.duration_ns))
    );
    println!("Messages:          {}", info.message_count);
    if let Some(damage) = &info.damage {
        println!("Damaged:           {damage}");
    }
    // How the bag was made, where `bag process` says it: multi-line values (the
    // parameters) indented under their key. Other writers' records by name and keys only
    // (their values can be long), as text that cannot garble the terminal.
    for record in reader.metadata_records() {
        if record.name != PROVENANCE {
            let keys: Vec<String> = record.entries.keys().map(|k| shown(k)).collect();
            println!(
                "Metadata:          {} (keys: {})",
                shown(&record.name),
                shown(&keys.join(", "))
            );
            continue;
        }
        println!("Metadata:          {}", record.name);
        for (key, value) in &record.entries {
            match value.contains('\n') {
                true => {
                    println!("                     {key}:");
                    for line in value.lines() {
                        println!("                       {line}");
                    }
                }
                false => println!("                     {key}: {value}"),
            }
        }
    }
    let width = info.topics.iter().map(|t| t.name.len()).max().unwrap_or(0);
    for (i, t) in info.topics.iter().enumerate() {
        let label = if i == 0 {
            "Topic information: "
        } else {
            "                   "
        };
        // As `ros2 bag info` shows a topic, and the QoS its publishers offered, which `ros2
        // bag play` offers again (a latched /tf_static is transient_local).
        let qos = bayes_perception::bag::qos::summary(&t.offered_qos_profiles)
            .map_or_else(String::new, |qos| format!(" | QoS: {qos}"));
        println!(
            "{label}Topic: {:width$} | Type: {} | Count: {} | Serialization Format: cdr{qos}",
            t.name, t.type_name, t.message_count
        );
    }
    Ok(if info.damage.is_some() {
        ExitCode::FAILURE
    } else {
        ExitCode::SUCCESS
    })
}

pub fn sample(args: BagSampleArgs) -> anyhow::Result<ExitCode> {
    if args.frames == 0
        || args.width == 0
        || args.height == 0
        || args.fps.is_nan()
        || args.fps <= 0.0
    {
        super::usage!("--frames, --width, --height and --fps must be positive");
    }
    let channels = match args.encoding.as_str() {
        "rgb8" | "bgr8" => 3,
        "rgba8" | "bgra8" => 4,
        "mono8" => 1,
        other => super::usage!("--encoding {other} is not one of rgb8, bgr8, rgba8, bgra8, mono8"),
    };
    let namespace = camera_namespace(&args.topic, IMAGE);
    if std::fs::symlink_metadata(&args.output).is_ok() {
        bail!("{} exists; choose another OUTPUT", args.output.display());
    }
    // Written under a temporary name and renamed when whole: a run stopped partway leaves
    // no bag without metadata.yaml at OUTPUT.
    let staged = StagedDir::new(&args.output)?;
    let mut writer = BagWriter::create_named(staged.path(), staged.name())?;
    let t0: i64 = 1_700_000_000_000_000_000;
    for i in 0..args.frames {
        let stamp_ns = t0 + (i as f64 * 1e9 / args.fps) as i64;
        let header = Header {
            stamp: Time::from_nanos(stamp_ns),
            frame_id: "camera_optical_frame".into(),
        };
        let log_time = stamp_ns as u64;
        // camera_info before its image, so a consumer has it when the image arrives.
        let info = CameraInfo::pinhole(
            header.clone(),
            args.width,
            args.height,
            args.width as f64 * 0.8,
            args.width as f64 / 2.0,
            args.height as f64 / 2.0,
        );
        writer.write(
            &format!("{namespace}/camera_info"),
            CAMERA_INFO,
            log_time,
            &info.to_cdr(),
        )?;
        let rgb = test_pattern(args.width, args.height, i);
        if args.compressed {
            let mut jpeg = Vec::new();
            rgb.write_to(
                &mut std::io::Cursor::new(&mut jpeg),
                image::ImageFormat::Jpeg,
            )?;
            let msg = CompressedImage {
                header: header.clone(),
                format: "rgb8; jpeg compressed bgr8".into(),
                data: jpeg,
            };
            writer.write(
                &format!("{}/compressed", args.topic),
                COMPRESSED,
                log_time,
                &msg.to_cdr(),
            )?;
        } else {
            let data: Vec<u8> = rgb
                .pixels()
                .flat_map(|p| {
                    let [r, g, b] = p.0;
                    match args.encoding.as_str() {
                        "rgb8" => vec![r, g, b],
                        "bgr8" => vec![b, g, r],
                        "rgba8" => vec![r, g, b, 255],
                        "bgra8" => vec![b, g, r, 255],
                        _ => {
                            vec![((r as u32 * 299 + g as u32 * 587 + b as u32 * 114) / 1000) as u8]
                        }
                    }
                })
                .collect();
            let msg = Image {
                header: header.clone(),
                height: args.height,
                width: args.width,
                encoding: args.encoding.clone(),
                is_bigendian: 0,
                step: args.width * channels,
                data,
            };
            writer.write(&args.topic, IMAGE, log_time, &msg.to_cdr())?;
        }
    }
    let summary = writer.finish()?;
    staged.install(false)?;
    println!(
        "wrote {} ({} frame(s) of {}x{} {}, {} messages)",
        args.output.display(),
        args.frames,
        args.width,
        args.height,
        if args.compressed {
            "JPEG"
        } else {
            args.encoding.as_str()
        },
        summary.message_count
    );
    Ok(ExitCode::SUCCESS)
}

/// A size as `ros2 bag info` writes it: bytes whole, larger sizes in KiB, MiB, GiB or TiB
/// with one decimal.
fn file_size(bytes: u64) -> String {
    const UNITS: [&str; 5] = ["B", "KiB", "MiB", "GiB", "TiB"];
    let mut size = bytes as f64;
    let mut unit = 0;
    while size >= 1024.0 && unit < UNITS.len() - 1 {
        size /= 1024.0;
        unit += 1;
    }
    match unit {
        0 => format!("{bytes} B"),
        _ => format!("{size:.1} {}", UNITS[unit]),
    }
}

/// A synthetic street-like test pattern: sky gradient, road, and a box moving across.
fn test_pattern(width: u32, height: u32, frame: u32) -> image::RgbImage {
    let horizon = height / 2;
    let box_x = (frame * 7) % width.max(1);
    image::RgbImage::from_fn(width, height, |x, y| {
        let in_box = x >= box_x && x < box_x + width / 6 && y > horizon && y < horizon + height / 5;
        if in_box {
            image::Rgb([200, 40, 40])
        } else if y < horizon {
            let t = y as f32 / horizon.max(1) as f32;
            image::Rgb([(90.0 + 80.0 * t) as u8, (140.0 + 60.0 * t) as u8, 230])
        } else {
            let lane = (x as i32 - width as i32 / 2).abs() < 3 && (y / 8) % 2 == 0;
            if lane {
                image::Rgb([240, 240, 240])
            } else {
                image::Rgb([70, 70, 75])
            }
        }
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn sizes_as_ros2_bag_info_writes_them() {
        let sizes = [0, 1023, 1024, 28_184, 5 << 20, 3 << 30, 1 << 50];
        let shown: Vec<String> = sizes.into_iter().map(file_size).collect();
        assert_eq!(
            shown,
            [
                "0 B",
                "1023 B",
                "1.0 KiB",
                "27.5 KiB",
                "5.0 MiB",
                "3.0 GiB",
                "1024.0 TiB"
            ]
        );
    }

    /// The latched messages from before the window: held in log-time order (the input's
    /// may differ), the last as many as the history (tf: all, up to MAX_HELD), written at
    /// the window's start; one read after it began copied then if newer than those
    /// written (tf: whatever its time); the rest counted as left out.
    #[test]
    fn latched_messages_from_before_the_window() {
        let latched = Arc::new(Recorded {
            definition: None,
            offered_qos_profiles: "- durability: 1\n  depth: 1".into(),
        });
        let message = |topic: &'static str, type_name: &'static str, log_time: u64| Copied {
            topic: topic.into(),
            type_name: type_name.into(),
            log_time,
            publish_time: log_time,
            data: vec![log_time as u8],
            recorded: latched.clone(),
            extra: true,
        };
        let mut written: Vec<(String, u64, u64)> = Vec::new();
        let mut hand_over = |output: Output| {
            if let Output::Copies(copies) = output {
                written.extend(
                    copies
                        .into_iter()
                        .map(|c| (c.topic, c.log_time, c.publish_time)),
                );
            }
            true
        };
        let mut copies = Copies::default();
        let offer = |copies: &mut Copies, c: &Copied, hand_over: &mut dyn FnMut(Output) -> bool| {
            let m = BagMessage {
                topic: &c.topic,
                type_name: &c.type_name,
                log_time: c.log_time,
                publish_time: c.publish_time,
                data: &c.data,
                recorded: &c.recorded,
                unreadable: None,
            };
            copies.hold_if_latched(&m, true, hand_over)
        };
        const MAP: &str = "nav_msgs/msg/OccupancyGrid";
        // Depth 1, read out of order: the later one (5) is kept, 3 superseded.
        for t in [5, 3] {
            assert!(offer(&mut copies, &message("/map", MAP, t), &mut hand_over) == Kept::Yes);
        }
        // tf: all of them.
        for t in [2, 4, 1] {
            offer(
                &mut copies,
                &message("/tf_static", TF_MESSAGE, t),
                &mut hand_over,
            );
        }
        assert!(copies.begin_window(100, &mut hand_over));
        copies.flush(&mut hand_over);
        // Read after the window began: an older map superseded, a newer one copied; an
        // older tf broadcast copied.
        for (topic, type_name, t) in [
            ("/map", MAP, 4),
            ("/map", MAP, 7),
            ("/tf_static", TF_MESSAGE, 0),
        ] {
            offer(&mut copies, &message(topic, type_name, t), &mut hand_over);
        }
        copies.flush(&mut hand_over);
        let expected = [
            ("/tf_static", 100, 1),
            ("/tf_static", 100, 2),
            ("/tf_static", 100, 4),
            ("/map", 100, 5),
            ("/map", 100, 7),
            ("/tf_static", 100, 0),
        ]
        .map(|(topic, log, publish)| (topic.to_owned(), log, publish));
        assert_eq!(written, expected);
        assert_eq!(
            copies.left_out(),
            2,
            "the map at 3, and the one at 4 read late"
        );
        // At most MAX_HELD of a topic held; the rest counted.
        let mut many = Copies::default();
        for t in 0..MAX_HELD as u64 + 3 {
            offer(
                &mut many,
                &message("/tf_static", TF_MESSAGE, t),
                &mut |_| true,
            );
        }
        assert_eq!(many.held["/tf_static"].len(), MAX_HELD);
        assert_eq!(
            many.left_out(),
            MAX_HELD as u64 + 3,
            "none written: the window never began"
        );
    }

    #[test]
    fn only_a_cut_short_run_with_less_than_a_readable_earlier_output_leaves_it() {
        assert!(keeps_earlier(true, Some(100), 40));
        assert!(!keeps_earlier(true, Some(40), 100), "the longer one wins");
        assert!(!keeps_earlier(true, Some(40), 40));
        assert!(
            !keeps_earlier(true, None, 40),
            "no earlier bag, or unreadable"
        );
        assert!(
            !keeps_earlier(false, Some(100), 40),
            "a whole run replaces it"
        );
    }

    /// The topics a run copies are left out of the comparison (a busy one would outweigh
    /// the frames); every other topic counts.
    #[test]
    fn bags_are_compared_without_the_topics_copied() {
        let topics = [
            ("/cam/semantic/labels", 7),
            ("/cam/image_raw", 9),
            ("/tf", 500),
            ("/imu", 4000),
        ]
        .map(|(name, n)| (name.to_owned(), n));
        let copied = BTreeSet::from(["/tf".to_owned(), "/imu".to_owned()]);
        let count = |copied| messages_besides(topics.iter().map(|(t, n)| (t, *n)), copied);
        assert_eq!(count(&copied), 16);
        assert_eq!(count(&BTreeSet::new()), 4516);
    }

    #[test]
    fn a_killed_runs_rest_keeps_its_window_and_every() {
        let mark = RunMark {
            input: PathBuf::from("/in"),
            input_start_ns: 5_000_000_000,
            window_end_ns: None,
            every: 1,
            provenance: BTreeMap::new(),
            selection: Vec::new(),
        };
        // From the input's start to the messages not kept, to the nanosecond.
        assert_eq!(mark.rest(7_250_000_001), "--start 2.250000001");
        // The window ends where it ended (--duration 0: the messages logged at its end
        // only), and --every is kept.
        let mark = RunMark {
            window_end_ns: Some(9_000_000_000),
            every: 3,
            ..mark
        };
        assert_eq!(
            mark.rest(7_250_000_001),
            "--start 2.250000001 --duration 1.749999999 --every 3"
        );
        assert_eq!(
            mark.rest(9_000_000_000),
            "--start 4.000000000 --duration 0.000000000 --every 3"
        );
        // Its topics and copies too, quoted for a shell.
        let mark = RunMark {
            selection: [
                "--topic",
                "/cam/image_raw",
                "--copy",
                "/odd name",
                "--copy-regex",
                "^/(tf|imu)$",
                "--exclude-regex",
                "-it's",
            ]
            .map(String::from)
            .to_vec(),
            ..mark
        };
        assert_eq!(
            mark.rest(9_000_000_000),
            "--start 4.000000000 --duration 0.000000000 --every 3 --topic /cam/image_raw \
             --copy '/odd name' --copy-regex '^/(tf|imu)$' --exclude-regex '-it'\\''s'"
        );
        // A mark of a version before the window was recorded reads as a whole run's.
        let old: RunMark =
            serde_yaml::from_str("input: /in\ninput_start_ns: 5000000000\n").unwrap();
        assert_eq!(
            (
                old.window_end_ns,
                old.every,
                old.provenance.len(),
                old.selection.len()
            ),
            (None, 1, 0, 0)
        );
        assert_eq!(old.rest(99_000_000_000), "--start 94.000000000");
    }

    #[test]
    fn camera_namespaces() {
        assert_eq!(camera_namespace("/camera/image_raw", IMAGE), "/camera");
        assert_eq!(
            camera_namespace("/camera/image_raw/compressed", COMPRESSED),
            "/camera"
        );
        assert_eq!(
            camera_namespace("/robot/front/image", IMAGE),
            "/robot/front"
        );
        assert_eq!(camera_namespace("/image", IMAGE), "");
        assert_eq!(camera_namespace("/image/compressed", COMPRESSED), "");
    }

    #[test]
    fn skip_reasons_group() {
        assert_eq!(
            reason_key("unsupported encoding `nv12`"),
            "unsupported encoding `nv12`"
        );
        assert_eq!(
            reason_key("malformed rgb8 image: 23 data bytes, 4x2 with step 12 needs 24"),
            "malformed rgb8 image"
        );
    }
}

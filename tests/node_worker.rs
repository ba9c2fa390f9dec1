//! The node's inference side without ROS: the worker with a plain sink. Malformed frames
//! first, then a valid one; publish failures; live parameter changes between frames;
//! keep-latest; what `/diagnostics` says about each.

mod common;

use std::collections::HashSet;
use std::time::Duration;

use bayes_perception::camera::PinholeCamera;
use bayes_perception::config::Mode;
use bayes_perception::engine::{Engine, EngineConfig};
use bayes_perception::msg::outputs::OutputTopic;
use bayes_perception::msg::{CameraInfo, CompressedImage, Header, Image, PointCloud2, Time};
use bayes_perception::node::diagnostics::{DiagnosticStatus, Level, NodeInfo};
use bayes_perception::node::params::{LiveParams, ParamServer, ParamValue};
use bayes_perception::node::worker::{latency_ms, NodeState, Sink, Worker};
use bayes_perception::pipeline::CameraFrame;

/// Records what the worker publishes; can be told to fail a topic and to show a clock.
#[derive(Default)]
struct TestSink {
    images: Vec<(OutputTopic, Image)>,
    camera_infos: Vec<CameraInfo>,
    clouds: Vec<PointCloud2>,
    /// Nobody subscribes to `points`.
    no_points_subscriber: bool,
    /// Someone subscribes to `depth/camera_info`.
    camera_info_subscriber: bool,
    failing: HashSet<OutputTopic>,
    unwanted: HashSet<OutputTopic>,
    /// Compressed twins someone subscribes to, and those published.
    compressed_wanted: HashSet<OutputTopic>,
    compressed: Vec<(OutputTopic, CompressedImage)>,
    clock: Option<Time>,
}

impl Sink for TestSink {
    fn wants(&self, topic: OutputTopic) -> bool {
        !self.unwanted.contains(&topic)
    }

    fn publish_image(&mut self, topic: OutputTopic, image: Image) -> Result<(), String> {
        if self.failing.contains(&topic) {
            return Err("publisher is gone".into());
        }
        self.images.push((topic, image));
        Ok(())
    }

    fn wants_compressed(&self, topic: OutputTopic) -> bool {
        self.compressed_wanted.contains(&topic)
    }

    fn publish_compressed(
        &mut self,
        topic: OutputTopic,
        image: CompressedImage,
    ) -> Result<(), String> {
        if self.failing.contains(&topic) {
            return Err("publisher is gone".into());
        }
        self.compressed.push((topic, image));
        Ok(())
    }

    fn publish_camera_info(&mut self, info: CameraInfo) -> Result<(), String> {
        self.camera_infos.push(info);
        Ok(())
    }

    fn wants_camera_info(&self) -> bool {
        self.camera_info_subscriber
    }

    fn wants_points(&self) -> bool {
        !self.no_points_subscriber
    }

    fn publish_points(&mut self, cloud: PointCloud2) -> Result<(), String> {
        self.clouds.push(cloud);
        Ok(())
    }

    fn now(&self) -> Option<Time> {
        self.clock
    }
}

impl TestSink {
    fn topics_of(&self, stamp: Time) -> Vec<OutputTopic> {
        self.images
            .iter()
            .filter(|(_, m)| m.header.stamp == stamp)
            .map(|(t, _)| *t)
            .collect()
    }
}

fn state(values: &[(&str, ParamValue)]) -> NodeState {
    let mut all = vec![
        ("model", ParamValue::String("tiny".into())),
        ("seed", ParamValue::Integer(3)),
    ];
    all.extend(values.iter().cloned());
    NodeState::new(LiveParams::new(ParamServer::from_ros(all).unwrap()))
}

fn worker(state: &NodeState) -> Worker {
    let cfg = EngineConfig::from_params(&state.params.params()).unwrap();
    Worker::new(Engine::new(common::tiny_model(4, true), cfg).unwrap())
}

fn header(sec: i32) -> Header {
    Header {
        stamp: Time { sec, nanosec: 5 },
        frame_id: "camera_optical".into(),
    }
}

fn rgb8(sec: i32, width: u32, height: u32) -> CameraFrame {
    CameraFrame::Raw(Image {
        header: header(sec),
        height,
        width,
        encoding: "rgb8".into(),
        is_bigendian: 0,
        step: width * 3,
        data: common::pattern(width, height).into_raw(),
    })
}

fn report(state: &NodeState) -> DiagnosticStatus {
    state.diagnostics(&NodeInfo {
        node_name: "/cam/bayes_perception".into(),
        device: "cpu".into(),
        camera_info_topic: "/cam/camera_info".into(),
    })
}

fn value<'a>(s: &'a DiagnosticStatus, key: &str) -> &'a str {
    &s.values.iter().find(|(k, _)| k == key).unwrap().1
}

const ALEATORIC: [OutputTopic; 8] = [
    OutputTopic::SemanticLabels,
    OutputTopic::SemanticColor,
    OutputTopic::SemanticConfidence,
    OutputTopic::Depth,
    OutputTopic::SemanticAleatoric,
    OutputTopic::SemanticAleatoricColor,
    OutputTopic::DepthAleatoric,
    OutputTopic::DepthAleatoricColor,
];

#[test]
fn bad_frames_are_counted_skips_and_the_next_good_frame_comes_through() {
    let _rng = common::rng_lock();
    let state = state(&[]);
    let mut worker = worker(&state);
    let mut sink = TestSink::default();
    let raw = |encoding: &str, width, height, step, len: usize| {
        CameraFrame::Raw(Image {
            header: header(1),
            height,
            width,
            encoding: encoding.into(),
            is_bigendian: 0,
            step,
            data: vec![7; len],
        })
    };
    let bad = [
        ("step too small", raw("rgb8", 8, 4, 20, 80)),
        ("shorter than height x step", raw("rgb8", 8, 4, 24, 95)),
        ("unknown encoding", raw("nv12", 8, 4, 8, 48)),
        ("0x0", raw("rgb8", 0, 0, 0, 0)),
        ("huge header", raw("rgb8", 20_000, 20_000, 60_000, 10)),
        (
            "corrupt JPEG",
            CameraFrame::Compressed(CompressedImage {
                header: header(1),
                format: "jpeg".into(),
                data: vec![0xff, 0xd8, 0xff, 0xe0, 1, 2, 3],
            }),
        ),
    ];
    for (i, (what, frame)) in bad.into_iter().enumerate() {
        worker.handle(frame, &state, &mut sink);
        assert!(sink.images.is_empty(), "{what} produced outputs");
        let s = report(&state);
        assert_eq!(s.level, Level::Error, "{what}: {}", s.message);
        assert!(s.message.contains("every frame skipped"), "{}", s.message);
        assert_eq!(value(&s, "frames skipped (bad input)"), (i + 1).to_string());
        assert!(!value(&s, "last error").is_empty(), "{what}: no reason");
    }
    assert!(value(&report(&state), "last error").contains("undecodable compressed image"));

    worker.handle(rgb8(2, 40, 30), &state, &mut sink);
    assert_eq!(sink.topics_of(Time { sec: 2, nanosec: 5 }), ALEATORIC);
    // Frames come through again: the recent skips only warn.
    let s = report(&state);
    assert_eq!(s.level, Level::Warn, "{}", s.message);
    assert!(
        s.message
            .starts_with("6 frame(s) skipped as bad input in the last 5 s"),
        "{}",
        s.message
    );
}

/// The WARN of one frame (the second) whose cloud or depth/camera_info waited for a
/// camera_info that never came, naming the topic.
fn assert_waits_for_camera_info(s: &DiagnosticStatus) {
    assert_eq!(s.level, Level::Warn, "{}", s.message);
    assert!(
        s.message.contains(
            "1 frame(s) without a point cloud or depth/camera_info in the last 5 s: no \
             camera_info received on /cam/camera_info"
        ),
        "{}",
        s.message
    );
}

#[test]
fn outputs_carry_the_frame_header_and_camera_info_follows_depth() {
    let _rng = common::rng_lock();
    let state = state(&[]);
    let mut worker = worker(&state);
    let mut sink = TestSink::default();
    worker.handle(rgb8(2, 40, 30), &state, &mut sink);
    assert!(sink.camera_infos.is_empty(), "no camera_info known yet");
    assert!(sink.clouds.is_empty());
    // The first frame's camera_info may be a moment behind it: no warning yet.
    assert_eq!(report(&state).level, Level::Ok);
    worker.handle(rgb8(3, 40, 30), &state, &mut sink);
    assert!(sink.camera_infos.is_empty() && sink.clouds.is_empty());
    // The cloud asked for and not built says why, naming the topic (a wrong remapping of
    // camera_info shows there); the images went out.
    let s = report(&state);
    assert_waits_for_camera_info(&s);
    assert_eq!(
        value(&s, "camera_info"),
        "none received on /cam/camera_info"
    );
    assert!(!sink.images.is_empty());
    state.on_camera_info(CameraInfo {
        header: header(0),
        width: 40,
        height: 30,
        k: [50.0, 0.0, 20.0, 0.0, 50.0, 15.0, 0.0, 0.0, 1.0],
        ..CameraInfo::default()
    });
    worker.handle(rgb8(4, 40, 30), &state, &mut sink);
    for (topic, image) in &sink.images {
        assert!(
            [header(2), header(3), header(4)].contains(&image.header),
            "{topic:?}"
        );
        assert_eq!((image.width, image.height), (40, 30), "{topic:?}");
    }
    assert_eq!(sink.camera_infos.len(), 1);
    assert_eq!(sink.camera_infos[0].header, header(4));
    assert_eq!(sink.camera_infos[0].k[0], 50.0);
    // The point cloud follows the camera_info too, with the frame's header: at the
    // default stride 2, at most 20 x 15 points (those with valid depth).
    assert_eq!(sink.clouds.len(), 1);
    let cloud = &sink.clouds[0];
    assert_eq!(cloud.header, header(4));
    assert!(cloud.width > 0 && cloud.width <= 20 * 15, "{}", cloud.width);
    assert_eq!(cloud.data.len(), (cloud.width * cloud.point_step) as usize);
    assert_eq!(
        value(&report(&state), "camera_info"),
        "1 received on /cam/camera_info"
    );
    // A camera_info of twice the resolution (a resized image stream) is republished at
    // the depth image's size, K scaled with it.
    state.on_camera_info(CameraInfo {
        header: header(0),
        width: 80,
        height: 60,
        k: [100.0, 0.0, 39.5, 0.0, 100.0, 29.5, 0.0, 0.0, 1.0],
        ..CameraInfo::default()
    });
    worker.handle(rgb8(5, 40, 30), &state, &mut sink);
    let info = sink.camera_infos.last().unwrap();
    assert_eq!((info.width, info.height), (40, 30));
    assert_eq!(info.k, [50.0, 0.0, 19.5, 0.0, 50.0, 14.5, 0.0, 0.0, 1.0]);
}

#[test]
fn without_camera_info_only_a_wanted_point_cloud_or_depth_camera_info_makes_a_warning() {
    let _rng = common::rng_lock();
    let state = state(&[]);
    let mut worker = worker(&state);
    let mut sink = TestSink {
        no_points_subscriber: true,
        ..TestSink::default()
    };
    worker.handle(rgb8(1, 40, 30), &state, &mut sink);
    let s = report(&state);
    assert_eq!(s.level, Level::Ok, "{}", s.message);
    assert_eq!(value(&s, "frames failed"), "0");
    assert_eq!(
        value(&s, "camera_info"),
        "none received on /cam/camera_info"
    );
    // A subscriber to `points` but the cloud disabled: nothing asked for, still OK.
    sink.no_points_subscriber = false;
    state
        .params
        .set_atomically(&[("points.enabled".into(), ParamValue::Bool(false))])
        .unwrap();
    worker.handle(rgb8(2, 40, 30), &state, &mut sink);
    assert_eq!(report(&state).level, Level::Ok);
    // A subscriber to depth/camera_info (depth_image_proc) waits for it: a warning from
    // the second such frame on.
    sink.camera_info_subscriber = true;
    for stamp in [3, 4] {
        worker.handle(rgb8(stamp, 40, 30), &state, &mut sink);
    }
    assert!(sink.camera_infos.is_empty());
    let s = report(&state);
    assert_waits_for_camera_info(&s);
}

#[test]
fn the_point_cloud_is_built_only_when_enabled_and_subscribed_and_a_bad_camera_info_costs_only_the_cloud(
) {
    let _rng = common::rng_lock();
    let state = state(&[("points.stride", ParamValue::Integer(1))]);
    let mut worker = worker(&state);
    let info = |k: [f64; 9]| CameraInfo {
        header: header(0),
        width: 40,
        height: 30,
        k,
        ..CameraInfo::default()
    };
    state.on_camera_info(info([50.0, 0.0, 20.0, 0.0, 50.0, 15.0, 0.0, 0.0, 1.0]));
    let mut sink = TestSink {
        no_points_subscriber: true,
        ..TestSink::default()
    };
    worker.handle(rgb8(1, 40, 30), &state, &mut sink);
    assert!(sink.clouds.is_empty(), "nobody subscribes: not built");
    sink.no_points_subscriber = false;
    worker.handle(rgb8(2, 40, 30), &state, &mut sink);
    assert_eq!(sink.clouds.len(), 1);
    assert!(sink.clouds[0].width <= 40 * 30);
    state
        .params
        .set_atomically(&[("points.enabled".into(), ParamValue::Bool(false))])
        .unwrap();
    worker.handle(rgb8(3, 40, 30), &state, &mut sink);
    assert_eq!(sink.clouds.len(), 1, "disabled: not built");
    state
        .params
        .set_atomically(&[("points.enabled".into(), ParamValue::Bool(true))])
        .unwrap();
    // An uncalibrated camera (K all zeros): every image still goes out, no cloud, and the
    // frame is not counted as failed; /diagnostics WARNs with the reason (a subscriber
    // waits for clouds that do not come).
    state.on_camera_info(info([0.0; 9]));
    let before = sink.images.len();
    worker.handle(rgb8(4, 40, 30), &state, &mut sink);
    assert_eq!(sink.clouds.len(), 1);
    assert!(sink.images.len() > before);
    let s = report(&state);
    assert_eq!(value(&s, "frames failed"), "0");
    assert_eq!(s.level, Level::Warn, "{}", s.message);
    assert!(
        s.message
            .contains("1 point cloud(s) not built in the last 5 s: camera_info K has no positive focal lengths"),
        "{}",
        s.message
    );
    // Such a driver's camera_info often has no size either: depth/camera_info gets the
    // depth image's.
    state.on_camera_info(CameraInfo {
        header: header(0),
        ..CameraInfo::default()
    });
    let infos = sink.camera_infos.len();
    worker.handle(rgb8(5, 40, 30), &state, &mut sink);
    let last = sink.camera_infos.last().unwrap();
    assert_eq!(
        (sink.camera_infos.len(), last.width, last.height),
        (infos + 1, 40, 30)
    );
    // A calibration with Inf in it is not passed on (outputs hold no Inf); the images are.
    state.on_camera_info(info([
        f64::INFINITY,
        0.0,
        20.0,
        0.0,
        50.0,
        15.0,
        0.0,
        0.0,
        1.0,
    ]));
    let before = sink.images.len();
    worker.handle(rgb8(6, 40, 30), &state, &mut sink);
    assert_eq!(
        sink.camera_infos.len(),
        infos + 1,
        "no camera_info with Inf"
    );
    assert!(sink.images.len() > before);
}

/// The cloud's camera: K with the lens distortion undone for raw images, P for rectified
/// ones (`points.rectified`, changed live); each point where the camera puts its pixel of
/// the published depth image.
#[test]
fn the_cloud_undoes_the_lens_distortion_of_raw_images_and_uses_p_for_rectified_ones() {
    let _rng = common::rng_lock();
    let state = state(&[("points.stride", ParamValue::Integer(1))]);
    let mut worker = worker(&state);
    let info = CameraInfo {
        header: header(0),
        width: 40,
        height: 30,
        distortion_model: "plumb_bob".into(),
        d: vec![-0.3, 0.1, 0.002, -0.001, 0.0],
        k: [50.0, 0.0, 19.5, 0.0, 50.0, 14.5, 0.0, 0.0, 1.0],
        p: [
            42.0, 0.0, 20.0, 0.0, 0.0, 41.0, 15.0, 0.0, 0.0, 0.0, 1.0, 0.0,
        ],
        ..CameraInfo::default()
    };
    state.on_camera_info(info.clone());
    let mut sink = TestSink::default();
    for (sec, rectified) in [(1, false), (2, true)] {
        state
            .params
            .set_atomically(&[("points.rectified".into(), ParamValue::Bool(rectified))])
            .unwrap();
        worker.handle(rgb8(sec, 40, 30), &state, &mut sink);
        let cloud = sink.clouds.last().unwrap();
        let depth = &sink
            .images
            .iter()
            .rfind(|(t, _)| *t == OutputTopic::Depth)
            .unwrap()
            .1;
        assert_eq!(depth.encoding, "32FC1");
        let camera = PinholeCamera::for_image(&info, 40, 30, rectified).unwrap();
        let mut expected = Vec::new();
        for (i, z) in depth.data.chunks(4).enumerate() {
            let z = f32::from_le_bytes(z.try_into().unwrap());
            if z.is_finite() && z > 0.0 {
                let p = camera
                    .back_project((i % 40) as f64, (i / 40) as f64, z as f64)
                    .unwrap();
                expected.push([p.x as f32, p.y as f32, z]);
            }
        }
        assert!(expected.len() > 100, "{} points", expected.len());
        let got: Vec<[f32; 3]> = cloud
            .data
            .chunks(cloud.point_step as usize)
            .map(|p| {
                std::array::from_fn(|j| f32::from_le_bytes(p[4 * j..4 * j + 4].try_into().unwrap()))
            })
            .collect();
        assert_eq!(got.len(), expected.len());
        for (g, e) in got.iter().zip(&expected) {
            assert!(
                (0..3).all(|j| (g[j] - e[j]).abs() <= 1e-5 * (1.0 + e[j].abs())),
                "rectified {rectified}: {g:?} against {e:?}"
            );
        }
    }
    // The two cameras differ: the check above could tell one from the other. Compared as
    // x / z of the first point (the ray), which does not shrink with the random model's
    // depth there (a depth of millimetres made the points' x differ by less than 1e-3).
    let ray = |cloud: &PointCloud2| {
        let float = |j: usize| f32::from_le_bytes(cloud.data[4 * j..4 * j + 4].try_into().unwrap());
        float(0) / float(2)
    };
    assert!((ray(&sink.clouds[0]) - ray(&sink.clouds[1])).abs() > 1e-3);
}

#[test]
fn parameter_changes_take_effect_at_the_next_frame() {
    let _rng = common::rng_lock();
    let state = state(&[]);
    let mut worker = worker(&state);
    let mut sink = TestSink::default();
    worker.handle(rgb8(1, 32, 32), &state, &mut sink);
    assert_eq!(sink.topics_of(Time { sec: 1, nanosec: 5 }), ALEATORIC);

    let changed = state
        .params
        .set_atomically(&[
            ("mode".into(), ParamValue::String("mc".into())),
            ("mc.samples".into(), ParamValue::Integer(3)),
        ])
        .unwrap();
    assert_eq!(changed, ["mode", "mc.samples"]);
    worker.handle(rgb8(2, 32, 32), &state, &mut sink);
    assert_eq!(worker.engine().config().mode, Mode::Mc);
    assert_eq!(worker.engine().config().mc_samples, 3);
    let mc = sink.topics_of(Time { sec: 2, nanosec: 5 });
    assert_eq!(mc.len(), 12, "{mc:?}");
    assert_eq!(value(&report(&state), "passes per frame"), "3");

    // A colour range change shows in the next frame's colour twin: with a tiny maximum
    // every pixel of the semantic aleatoric colour image is the top of the colormap.
    state
        .params
        .set_atomically(&[(
            "colormap.semantic_aleatoric_max_nats".into(),
            ParamValue::Double(1e-6),
        )])
        .unwrap();
    worker.handle(rgb8(3, 32, 32), &state, &mut sink);
    let color = sink
        .images
        .iter()
        .find(|(t, m)| *t == OutputTopic::SemanticAleatoricColor && m.header.stamp.sec == 3)
        .unwrap();
    let first = &color.1.data[..3];
    assert!(color.1.data.chunks(3).all(|px| px == first));

    state
        .params
        .set_each(&[("mode".into(), ParamValue::String("aleatoric".into()))]);
    worker.handle(rgb8(4, 32, 32), &state, &mut sink);
    assert_eq!(sink.topics_of(Time { sec: 4, nanosec: 5 }), ALEATORIC);
}

#[test]
fn unwanted_colour_twins_are_not_rendered_and_publish_failures_are_counted() {
    let _rng = common::rng_lock();
    let state = state(&[]);
    let mut worker = worker(&state);
    let mut sink = TestSink {
        unwanted: [OutputTopic::SemanticColor].into(),
        failing: [OutputTopic::Depth].into(),
        ..TestSink::default()
    };
    worker.handle(rgb8(1, 32, 32), &state, &mut sink);
    let topics = sink.topics_of(Time { sec: 1, nanosec: 5 });
    assert!(!topics.contains(&OutputTopic::SemanticColor));
    assert!(!topics.contains(&OutputTopic::Depth));
    assert!(topics.contains(&OutputTopic::SemanticLabels));
    let s = report(&state);
    assert_eq!(s.level, Level::Warn, "{}", s.message);
    assert!(
        s.message
            .contains("1 publish failure(s) in the last 5 s: publishing depth: publisher is gone"),
        "{}",
        s.message
    );
    assert_eq!(value(&s, "publish failures"), "1");
    // A frame none of whose outputs could be published counts as failed.
    sink.failing = OutputTopic::ALL.into();
    worker.handle(rgb8(2, 32, 32), &state, &mut sink);
    let s = report(&state);
    assert_eq!(value(&s, "frames failed"), "1");
    assert_eq!(value(&s, "publish failures"), "8");
    assert_eq!(s.level, Level::Warn, "frame 1 came out: {}", s.message);
    assert!(
        s.message
            .contains("1 frame(s) failed in the last 5 s: nothing published: publishing"),
        "{}",
        s.message
    );
}

/// image_transport's compressed twins: made only for those subscribed (a colour image
/// whose raw topic nobody takes is rendered for its twin alone), with the frame's header,
/// decodable to the raw message (labels exactly), and at the JPEG quality set at runtime.
#[test]
fn compressed_twins_are_made_for_their_subscribers_only() {
    let _rng = common::rng_lock();
    let state = state(&[]);
    let mut worker = worker(&state);
    let mut sink = TestSink {
        unwanted: [OutputTopic::SemanticColor].into(),
        compressed_wanted: [
            OutputTopic::SemanticLabels,
            OutputTopic::SemanticColor,
            // No twin: a float image.
            OutputTopic::Depth,
        ]
        .into(),
        ..TestSink::default()
    };
    worker.handle(rgb8(1, 32, 32), &state, &mut sink);
    let stamp = Time { sec: 1, nanosec: 5 };
    assert!(!sink.topics_of(stamp).contains(&OutputTopic::SemanticColor));
    let twins: Vec<OutputTopic> = sink.compressed.iter().map(|(t, _)| *t).collect();
    assert_eq!(
        twins,
        [OutputTopic::SemanticLabels, OutputTopic::SemanticColor]
    );
    let (_, labels) = &sink.compressed[0];
    assert_eq!(labels.header, header(1));
    assert_eq!(labels.format, "mono8; png compressed ");
    let raw = sink
        .images
        .iter()
        .find(|(t, _)| *t == OutputTopic::SemanticLabels)
        .unwrap();
    let decoded = image::load_from_memory(&labels.data).unwrap().into_luma8();
    assert_eq!(decoded.into_raw(), raw.1.data);
    let (_, color) = &sink.compressed[1];
    assert_eq!(color.format, "rgb8; jpeg compressed bgr8");
    let decoded = bayes_perception::msg::encoding::decode_compressed(color).unwrap();
    assert_eq!(decoded.dimensions(), (32, 32));
    let default_size = color.data.len();
    assert_eq!(value(&report(&state), "frames failed"), "0");

    // The JPEG quality is live; out of its range it is refused.
    let set = |quality| {
        state
            .params
            .set_atomically(&[("output.jpeg_quality".into(), ParamValue::Integer(quality))])
    };
    let e = set(0).unwrap_err();
    assert!(e.contains("0 is out of range 1..=100"), "{e}");
    set(5).unwrap();
    worker.handle(rgb8(2, 32, 32), &state, &mut sink);
    let (_, coarse) = sink.compressed.last().unwrap();
    assert_eq!(coarse.header, header(2));
    assert!(
        coarse.data.len() < default_size,
        "{} {default_size}",
        coarse.data.len()
    );
    // Nobody subscribed: nothing compressed.
    sink.compressed_wanted.clear();
    worker.handle(rgb8(3, 32, 32), &state, &mut sink);
    assert_eq!(sink.compressed.len(), 4);

    // A frame whose only wanted output is a twin has it made; one whose twin cannot be
    // published is a failed frame with the twin's name.
    sink.unwanted = OutputTopic::ALL.into();
    sink.compressed_wanted = [OutputTopic::SemanticColor].into();
    worker.handle(rgb8(4, 32, 32), &state, &mut sink);
    assert!(sink.topics_of(Time { sec: 4, nanosec: 5 }).is_empty());
    assert_eq!(sink.compressed.last().unwrap().1.header, header(4));
    sink.failing = [OutputTopic::SemanticColor].into();
    worker.handle(rgb8(5, 32, 32), &state, &mut sink);
    let s = report(&state);
    assert_eq!(value(&s, "frames failed"), "1");
    assert!(
        s.message
            .contains("nothing published: publishing semantic/color/compressed: publisher is gone"),
        "{}",
        s.message
    );
}

#[test]
fn latency_comes_from_the_sink_clock_and_stamps_ahead_of_it_are_counted() {
    let _rng = common::rng_lock();
    assert_eq!(latency_ms(None, Time::default()), None);
    assert_eq!(
        latency_ms(
            Some(Time {
                sec: 10,
                nanosec: 0
            }),
            Time {
                sec: 9,
                nanosec: 500_000_000
            }
        ),
        Some(500.0)
    );
    let state = state(&[]);
    let mut worker = worker(&state);
    let mut sink = TestSink {
        clock: Some(Time {
            sec: 2,
            nanosec: 5 + 250_000_000,
        }),
        // No camera_info here: a wanted cloud would make its own warning.
        no_points_subscriber: true,
        ..TestSink::default()
    };
    worker.handle(rgb8(2, 32, 32), &state, &mut sink);
    let s = report(&state);
    assert_eq!(value(&s, "latency p50 (ms)"), "250.0");
    // A frame stamped after the node's now: no negative latency, counted instead; a few
    // milliseconds ahead (a replayed clock's 25 ms ticks) is no warning.
    sink.clock = Some(Time {
        sec: 8,
        nanosec: 990_000_005,
    });
    worker.handle(rgb8(9, 32, 32), &state, &mut sink);
    let s = report(&state);
    assert_eq!(value(&s, "latency p95 (ms)"), "250.0");
    assert_eq!(value(&s, "frames stamped ahead of the node clock"), "1");
    assert_eq!(s.level, Level::Ok, "{}", s.message);
    // Seconds ahead: the clocks disagree, WARN.
    sink.clock = Some(Time { sec: 2, nanosec: 0 });
    worker.handle(rgb8(10, 32, 32), &state, &mut sink);
    let s = report(&state);
    assert_eq!(value(&s, "frames stamped ahead of the node clock"), "2");
    assert_eq!(s.level, Level::Warn, "{}", s.message);
    assert!(
        s.message
            .starts_with("1 frame(s) stamped more than 100 ms ahead of the node's clock"),
        "{}",
        s.message
    );
}

/// Publishes into a shared list, so a test can watch a worker running on another thread;
/// or panics (a bug in building the messages, say).
struct SharedSink {
    published: std::sync::Arc<std::sync::Mutex<Vec<Time>>>,
    panics: bool,
}

fn shared(published: &std::sync::Arc<std::sync::Mutex<Vec<Time>>>) -> SharedSink {
    SharedSink {
        published: published.clone(),
        panics: false,
    }
}

impl Sink for SharedSink {
    fn wants(&self, _: OutputTopic) -> bool {
        true
    }

    fn publish_image(&mut self, topic: OutputTopic, image: Image) -> Result<(), String> {
        assert!(!self.panics, "publishing panicked");
        if topic == OutputTopic::Depth {
            self.published.lock().unwrap().push(image.header.stamp);
        }
        Ok(())
    }

    fn wants_compressed(&self, _: OutputTopic) -> bool {
        false
    }

    fn publish_compressed(&mut self, _: OutputTopic, _: CompressedImage) -> Result<(), String> {
        Ok(())
    }

    fn publish_camera_info(&mut self, _: CameraInfo) -> Result<(), String> {
        Ok(())
    }

    fn wants_camera_info(&self) -> bool {
        false
    }

    fn wants_points(&self) -> bool {
        false
    }

    fn publish_points(&mut self, _: PointCloud2) -> Result<(), String> {
        Ok(())
    }

    fn now(&self) -> Option<Time> {
        None
    }
}

#[test]
fn the_run_loop_takes_the_newest_frame_and_ends_when_closed() {
    let _rng = common::rng_lock();
    let state = std::sync::Arc::new(state(&[]));
    let worker = worker(&state);
    for sec in 1..=5 {
        state.on_frame(rgb8(sec, 32, 32));
    }
    let published = std::sync::Arc::new(std::sync::Mutex::new(Vec::new()));
    let runner = {
        let (state, mut sink) = (state.clone(), shared(&published));
        std::thread::spawn(move || worker.run(&state, &mut sink))
    };
    let deadline = std::time::Instant::now() + Duration::from_secs(60);
    while published.lock().unwrap().is_empty() {
        assert!(std::time::Instant::now() < deadline, "no output");
        std::thread::sleep(Duration::from_millis(10));
    }
    // Closing ends the loop; a frame that arrives after it is not processed.
    state.slot.close();
    state.on_frame(rgb8(6, 32, 32));
    while !runner.is_finished() {
        assert!(std::time::Instant::now() < deadline, "run did not end");
        std::thread::sleep(Duration::from_millis(10));
    }
    runner.join().unwrap();
    let stamps: Vec<i32> = published.lock().unwrap().iter().map(|t| t.sec).collect();
    assert_eq!(stamps, [5], "only the newest frame is processed");
    let s = report(&state);
    assert_eq!(value(&s, "frames received"), "5");
    assert_eq!(value(&s, "frames dropped (keep-latest)"), "4");
}

/// A panic on the output thread ends the run loop (with the panic) without another frame:
/// the node stops with the reason instead of waiting for a frame that may never come to
/// find its output thread gone.
#[test]
fn a_panic_while_publishing_ends_the_run_loop_without_another_frame() {
    let _rng = common::rng_lock();
    let state = std::sync::Arc::new(state(&[]));
    let worker = worker(&state);
    state.on_frame(rgb8(1, 32, 32));
    let runner = {
        let state = state.clone();
        let mut sink = SharedSink {
            panics: true,
            ..shared(&Default::default())
        };
        std::thread::spawn(move || worker.run(&state, &mut sink))
    };
    let deadline = std::time::Instant::now() + Duration::from_secs(60);
    while !runner.is_finished() {
        assert!(
            std::time::Instant::now() < deadline,
            "the run loop still waits for frames"
        );
        std::thread::sleep(Duration::from_millis(10));
    }
    assert!(runner.join().is_err(), "the panic is raised");
    assert!(state.slot.is_closed());
}

/// The run loop builds and publishes a frame's messages on a second thread while the next
/// frame is inferred; when the slot closes, the outputs of the frame in flight are
/// published before `run` returns (nothing is lost at shutdown), and a skipped frame
/// between two good ones is counted without holding them up.
#[test]
fn the_run_loop_publishes_the_frame_in_flight_before_it_returns() {
    let _rng = common::rng_lock();
    let state = state(&[]);
    let worker = worker(&state);
    let published = std::sync::Arc::new(std::sync::Mutex::new(Vec::new()));
    let mut sink = shared(&published);
    let mut bad = rgb8(2, 32, 32);
    if let CameraFrame::Raw(image) = &mut bad {
        image.data.truncate(10);
    }
    std::thread::scope(|scope| {
        let runner = scope.spawn(|| worker.run(&state, &mut sink));
        let wait_for = |n: usize| {
            let deadline = std::time::Instant::now() + Duration::from_secs(60);
            while published.lock().unwrap().len() < n {
                assert!(std::time::Instant::now() < deadline, "no output");
                std::thread::sleep(Duration::from_millis(5));
            }
        };
        state.on_frame(rgb8(1, 32, 32));
        wait_for(1);
        state.on_frame(bad);
        // The bad frame is taken and skipped before the next one arrives.
        let deadline = std::time::Instant::now() + Duration::from_secs(60);
        while value(&report(&state), "frames skipped (bad input)") != "1" {
            assert!(std::time::Instant::now() < deadline, "not skipped");
            std::thread::sleep(Duration::from_millis(5));
        }
        state.on_frame(rgb8(3, 32, 32));
        // Closed once frame 3 is in hand (a frame still waiting would be dropped).
        let deadline = std::time::Instant::now() + Duration::from_secs(60);
        while state.slot.has_frame() {
            assert!(std::time::Instant::now() < deadline, "not taken");
            std::thread::sleep(Duration::from_millis(1));
        }
        state.slot.close();
        runner.join().unwrap();
    });
    let stamps: Vec<i32> = published.lock().unwrap().iter().map(|t| t.sec).collect();
    assert_eq!(stamps, [1, 3]);
    let s = report(&state);
    assert_eq!(value(&s, "frames received"), "3");
    assert_eq!(value(&s, "frames dropped (keep-latest)"), "0");
}

/// A frame on which libtorch throws (injected at the forward pass, feature `failpoints`):
/// counted as a failed frame with libtorch's own message, and the next frame is processed.
#[cfg(feature = "failpoints")]
#[test]
fn a_libtorch_error_is_a_counted_failure_and_the_next_frame_is_processed() {
    let _rng = common::rng_lock();
    // Only 13x7 frames fail, so tests running beside this one are not disturbed.
    fail::cfg("engine::forward", "return(13x7)").unwrap();
    let state = state(&[]);
    let mut worker = worker(&state);
    let mut sink = TestSink::default();
    worker.handle(rgb8(1, 13, 7), &state, &mut sink);
    assert!(sink.images.is_empty());
    let s = report(&state);
    assert_eq!(value(&s, "frames failed"), "1");
    assert_eq!(s.level, Level::Error, "{}", s.message);
    assert!(
        value(&s, "last error").contains("shape '[3]' is invalid for input of size 2"),
        "{}",
        value(&s, "last error")
    );

    worker.handle(rgb8(2, 40, 30), &state, &mut sink);
    assert_eq!(sink.topics_of(Time { sec: 2, nanosec: 5 }), ALEATORIC);
    assert_eq!(value(&report(&state), "frames failed"), "1");
    fail::remove("engine::forward");
}

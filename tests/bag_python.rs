//! `bag process` checked by independent implementations: input bags are written by the
//! Python `rosbags` package (MCAP and SQLite3; raw and compressed images; several
//! encodings), and the output is read back with `rosbags` and with `mcap` +
//! `mcap-ros2-support` decoding through the schemas embedded in the file.
//!
//! The Python packages come from `make setup` (BAYES_PERCEPTION_PYTHON, set by `make
//! test`). Without them these tests say so and return, so a bare `cargo test` still runs.

mod common;

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::process::Command;

use serde_json::Value;

fn python() -> Option<PathBuf> {
    let candidate = std::env::var_os("BAYES_PERCEPTION_PYTHON")
        .map(PathBuf::from)
        .or_else(|| {
            let home = std::env::var_os("HOME")?;
            Some(Path::new(&home).join(".cache/bayes_perception/venv/bin/python"))
        })?;
    let ok = Command::new(&candidate)
        .args(["-c", "import rosbags, mcap_ros2"])
        .status()
        .is_ok_and(|s| s.success());
    if ok {
        Some(candidate)
    } else {
        eprintln!("SKIPPED: no Python with rosbags and mcap-ros2-support (run `make test`, which installs them)");
        None
    }
}

/// Writes the input bags. Arguments: output dir, a JPEG file, a PNG file.
const MAKE_BAGS: &str = r#"
import sys
from pathlib import Path
import numpy as np
from rosbags.rosbag2 import Writer, StoragePlugin, CompressionFormat, CompressionMode
from rosbags.typesys import Stores, get_typestore

out, jpeg, png = Path(sys.argv[1]), Path(sys.argv[2]).read_bytes(), Path(sys.argv[3]).read_bytes()
ts = get_typestore(Stores.ROS2_HUMBLE)
T = ts.types
Time, Header = T['builtin_interfaces/msg/Time'], T['std_msgs/msg/Header']
Image, Compressed = T['sensor_msgs/msg/Image'], T['sensor_msgs/msg/CompressedImage']
Info, Roi = T['sensor_msgs/msg/CameraInfo'], T['sensor_msgs/msg/RegionOfInterest']
String = T['std_msgs/msg/String']

def header(i, frame):
    return Header(stamp=Time(sec=100 + i, nanosec=1000 * i + 7), frame_id=frame)

def image(i, frame, w, h, encoding, bpp, pad, big=0):
    step = w * bpp + pad
    data = np.frombuffer(bytes((x * 7 + i) % 256 for x in range(step * h)), dtype=np.uint8)
    return Image(header=header(i, frame), height=h, width=w, encoding=encoding, is_bigendian=big, step=step, data=data)

def info(i, frame, w, h):
    return Info(header=header(i, frame), height=h, width=w, distortion_model='plumb_bob',
                d=np.zeros(5), k=np.eye(3).flatten(), r=np.eye(3).flatten(), p=np.zeros(12),
                binning_x=0, binning_y=0, roi=Roi(x_offset=0, y_offset=0, height=0, width=0, do_rectify=False))

def write(path, plugin, streams, compression=None):
    w = Writer(path, version=8, storage_plugin=plugin)
    if compression:
        w.set_compression(compression, CompressionFormat.ZSTD)
    with w:
        conns = {}
        for topic, msgtype, msgs in streams:
            conns[topic] = w.add_connection(topic, msgtype, typestore=ts)
        # Messages without a header at 100.5 s.
        stamp = lambda m: (int(m.header.stamp.sec) * 10**9 + int(m.header.stamp.nanosec)
                           if hasattr(m, 'header') else 100_500_000_000)
        events = sorted((stamp(m), k, topic, m) for topic, _, msgs in streams for k, m in enumerate(msgs))
        for t, _, topic, m in events:
            w.write(conns[topic], t, ts.serialize_cdr(m, m.__msgtype__))

mcap_streams = [
    ('/front/camera_info', Info.__msgtype__, [info(i, 'front', 40, 30) for i in range(3)]),
    ('/front/image_raw', Image.__msgtype__, [image(i, 'front', 40, 30, 'rgb8', 3, 8) for i in range(3)]),
    ('/rear/image_raw/compressed', Compressed.__msgtype__,
     [Compressed(header=header(i, 'rear'), format='rgb8; jpeg compressed bgr8', data=np.frombuffer(jpeg, dtype=np.uint8)) for i in range(2)]),
    ('/side/image', Image.__msgtype__, [image(i, 'side', 17, 9, 'yuv422_yuy2', 2, 2) for i in range(2)]
                                       + [image(5, 'side', 4, 4, 'nv12', 1, 0)]),
    # Named as /side/image's camera_info, but another type: another topic.
    ('/side/camera_info', String.__msgtype__, [String(data='not a calibration')]),
]
sqlite_streams = [
    ('/camera/image_raw', Image.__msgtype__, [image(i, 'cam', 21, 13, 'mono16', 2, 6, big=1) for i in range(3)]
                                             + [image(4, 'cam', 20, 10, 'bayer_rggb8', 1, 0)]),
    ('/camera/image_raw/compressed', Compressed.__msgtype__,
     [Compressed(header=header(i, 'cam'), format='png', data=np.frombuffer(png, dtype=np.uint8)) for i in range(2)]),
]
for name, plugin, streams in [('mcap', StoragePlugin.MCAP, mcap_streams),
                              ('sqlite', StoragePlugin.SQLITE3, sqlite_streams)]:
    write(out / f'in_{name}', plugin, streams)
    # rosbag2's bag-level compression: each storage file, or each message, zstd.
    write(out / f'in_{name}_file', plugin, streams, CompressionMode.FILE)
    write(out / f'in_{name}_message', plugin, streams, CompressionMode.MESSAGE)
"#;

/// Reads a bag with both independent readers and prints one JSON object:
/// {"rosbags": {topic: {type, count, stamps, sizes, encodings, sha}}, "mcap": {...}}.
const READ_BAG: &str = r#"
import sys, json, hashlib
from pathlib import Path
from rosbags.rosbag2 import Reader
from rosbags.typesys import Stores, get_typestore

path = Path(sys.argv[1])
ts = get_typestore(Stores.ROS2_HUMBLE)

def record(out, topic, msgtype, msg, raw):
    t = out.setdefault(topic, {'type': msgtype, 'count': 0, 'stamps': [], 'sizes': [], 'encodings': [], 'sha': []})
    t['count'] += 1
    h = getattr(msg, 'header', None)
    t['stamps'].append([int(h.stamp.sec), int(h.stamp.nanosec)] if h is not None else None)
    t['sizes'].append([int(getattr(msg, 'width', 0)), int(getattr(msg, 'height', 0))])
    t['encodings'].append(str(getattr(msg, 'encoding', getattr(msg, 'format', ''))))
    if raw is not None:
        t['sha'].append(hashlib.sha256(bytes(raw)).hexdigest())
    if msgtype.endswith('PointCloud2'):
        t.setdefault('clouds', []).append({
            'fields': [[str(f.name), int(f.offset), int(f.datatype), int(f.count)] for f in msg.fields],
            'height': int(msg.height), 'width': int(msg.width), 'point_step': int(msg.point_step),
            'row_step': int(msg.row_step), 'data_len': len(bytes(msg.data)), 'is_dense': bool(msg.is_dense),
            'is_bigendian': bool(msg.is_bigendian), 'frame_id': str(msg.header.frame_id)})
    if getattr(msg, 'encoding', None) == '32FC1':
        import numpy as np
        values = np.frombuffer(bytes(msg.data), dtype='<f4')
        t.setdefault('inf', 0)
        t['inf'] += int(np.isinf(values).sum())

result = {'rosbags': {}}
with Reader(path) as reader:
    for conn, _, raw in reader.messages():
        record(result['rosbags'], conn.topic, conn.msgtype, ts.deserialize_cdr(raw, conn.msgtype), raw)

# Every storage file, in the order metadata.yaml lists them (a split bag has several).
from ruamel.yaml import YAML  # rosbags' own YAML library
meta = path / 'metadata.yaml'
mcaps = ([path / p for p in YAML(typ='safe').load(meta.read_text())['rosbag2_bagfile_information']['relative_file_paths']]
         if meta.exists() else sorted(path.glob('*.mcap')))
result['files'] = len(mcaps)
if mcaps and all(p.suffix == '.mcap' for p in mcaps):
    from mcap.reader import make_reader
    from mcap_ros2.decoder import DecoderFactory
    result['mcap'] = {}
    # Each file's metadata records: {name: {key: value}}.
    result['metadata'] = []
    for mcap_path in mcaps:
        with open(mcap_path, 'rb') as f:
            reader = make_reader(f, decoder_factories=[DecoderFactory()])
            result['metadata'].append({m.name: dict(m.metadata) for m in reader.iter_metadata()})
            for schema, channel, message, decoded in reader.iter_decoded_messages():
                assert channel.message_encoding == 'cdr' and schema.encoding == 'ros2msg', (channel, schema)
                record(result['mcap'], channel.topic, schema.name, decoded, message.data)
print(json.dumps(result))
"#;

struct Fixture {
    dir: tempfile::TempDir,
    python: PathBuf,
}

impl Fixture {
    fn new() -> Option<Self> {
        let python = python()?;
        let dir = tempfile::tempdir().unwrap();
        common::tiny_model(4, true)
            .save(&dir.path().join("model"))
            .unwrap();
        let img = common::pattern(24, 16);
        img.save(dir.path().join("frame.jpg")).unwrap();
        img.save(dir.path().join("frame.png")).unwrap();
        let f = Fixture { dir, python };
        f.py(
            MAKE_BAGS,
            &[f.path(""), f.path("frame.jpg"), f.path("frame.png")],
        );
        Some(f)
    }

    fn path(&self, rel: &str) -> PathBuf {
        self.dir.path().join(rel)
    }

    fn py(&self, script: &str, args: &[PathBuf]) -> String {
        let script_path = self.path("script.py");
        std::fs::write(&script_path, script).unwrap();
        let out = Command::new(&self.python)
            .arg(&script_path)
            .args(args)
            .output()
            .unwrap();
        assert!(
            out.status.success(),
            "python failed: {}",
            String::from_utf8_lossy(&out.stderr)
        );
        String::from_utf8(out.stdout).unwrap()
    }

    fn read(&self, bag: &str) -> Value {
        serde_json::from_str(&self.py(READ_BAG, &[self.path(bag)])).unwrap()
    }

    fn process(&self, input: &str, output: &str, extra: &[&str]) -> (i32, String) {
        let out = Command::new(env!("CARGO_BIN_EXE_bayes_perception"))
            .args(["bag", "process"])
            .arg(self.path(input))
            .arg(self.path(output))
            .arg("--model")
            .arg(self.path("model"))
            .args(["--device", "cpu"])
            .args(extra)
            .env("RUST_BACKTRACE", "0")
            .output()
            .unwrap();
        let text = format!(
            "{}{}",
            String::from_utf8_lossy(&out.stdout),
            String::from_utf8_lossy(&out.stderr)
        );
        (out.status.code().unwrap_or(-1), text)
    }
}

const OUTPUTS_ALEATORIC: [(&str, &str); 10] = [
    ("semantic/labels", "mono8"),
    ("semantic/color", "rgb8"),
    ("semantic/confidence", "32FC1"),
    ("depth", "32FC1"),
    ("uncertainty/semantic/aleatoric", "32FC1"),
    ("uncertainty/semantic/aleatoric/color", "rgb8"),
    ("uncertainty/depth/aleatoric", "32FC1"),
    ("uncertainty/depth/aleatoric/color", "rgb8"),
    ("uncertainty/semantic/epistemic", "32FC1"),
    ("uncertainty/depth/epistemic", "32FC1"),
];

/// Checks one camera's outputs against its input topic, in one reader's view.
fn check_camera(
    input: &BTreeMap<String, Value>,
    output: &BTreeMap<String, Value>,
    camera: &str,
    ns: &str,
    mc: bool,
    reader: &str,
) {
    let cam = &input[camera];
    // Passthrough: same type, same bytes, same order.
    assert_eq!(output[camera]["type"], cam["type"], "{reader} {camera}");
    assert_eq!(
        output[camera]["sha"], cam["sha"],
        "{reader} {camera}: passthrough not byte for byte"
    );
    // Frames the decoder accepts: everything but the nv12 one.
    let good: Vec<usize> = (0..cam["count"].as_u64().unwrap() as usize)
        .filter(|&i| cam["encodings"][i] != "nv12")
        .collect();
    for (suffix, encoding) in OUTPUTS_ALEATORIC {
        let topic = format!("{ns}/{suffix}");
        if suffix.contains("epistemic") && !mc {
            assert!(
                !output.contains_key(&topic),
                "{reader}: {topic} written in aleatoric mode"
            );
            continue;
        }
        let out = output
            .get(&topic)
            .unwrap_or_else(|| panic!("{reader}: {topic} missing; have {:?}", output.keys()));
        assert_eq!(out["type"], "sensor_msgs/msg/Image", "{reader} {topic}");
        assert_eq!(
            out["count"].as_u64().unwrap() as usize,
            good.len(),
            "{reader} {topic}"
        );
        for (k, &i) in good.iter().enumerate() {
            assert_eq!(
                out["stamps"][k], cam["stamps"][i],
                "{reader} {topic}: header stamp not the input's"
            );
            let size = if cam["type"] == "sensor_msgs/msg/CompressedImage" {
                serde_json::json!([24, 16])
            } else {
                cam["sizes"][i].clone()
            };
            assert_eq!(
                out["sizes"][k], size,
                "{reader} {topic}: not at input resolution"
            );
            assert_eq!(out["encodings"][k], encoding, "{reader} {topic}");
        }
        if encoding == "32FC1" {
            assert_eq!(out["inf"], 0, "{reader} {topic} has Inf");
        }
    }
}

fn as_map(v: &Value) -> BTreeMap<String, Value> {
    v.as_object()
        .unwrap()
        .iter()
        .map(|(k, v)| (k.clone(), v.clone()))
        .collect()
}

/// How the tests run `bag process` on in_mcap: MC mode, seeded.
const IN_MCAP_RUN: [&str; 6] = ["--mode", "mc", "--samples", "2", "--seed", "3"];

#[test]
fn mcap_input_from_rosbags_processes_and_output_decodes_in_both_readers() {
    let Some(f) = Fixture::new() else { return };
    let (code, text) = f.process("in_mcap", "out_mcap", &IN_MCAP_RUN);
    assert_eq!(code, 0, "{text}");
    assert!(
        text.contains("skipped 1: unsupported encoding `nv12`"),
        "{text}"
    );
    // /side/camera_info is a String: not a calibration, not copied (it stopped the run).
    assert!(
        text.contains("1 message(s) of other topics not copied"),
        "{text}"
    );
    let input = as_map(&f.read("in_mcap")["rosbags"]);
    let result = f.read("out_mcap");
    assert_eq!(result["files"], 1);
    check_in_mcap_outputs(&input, &result);
}

/// The same run with its output split into storage files of 20 kB (`--max-bag-size`):
/// several files, listed in metadata.yaml, which both readers read as one bag with the
/// same outputs.
#[test]
fn a_split_output_reads_as_one_bag_in_both_readers() {
    let Some(f) = Fixture::new() else { return };
    let split = [&IN_MCAP_RUN[..], &["--max-bag-size", "20000"]].concat();
    let (code, text) = f.process("in_mcap", "out_split", &split);
    assert_eq!(code, 0, "{text}");
    let result = f.read("out_split");
    let files = result["files"].as_u64().unwrap();
    assert!(files >= 3, "{files} storage files");
    assert!(
        text.contains(&format!("in {files} storage files)")),
        "{text}"
    );
    check_in_mcap_outputs(&as_map(&f.read("in_mcap")["rosbags"]), &result);
    // Every storage file says how the bag was made (the same record: mcap reads it), as
    // our reader reads it; its parameters are a params file that gives the run's again.
    let metadata = result["metadata"].as_array().unwrap();
    assert_eq!(metadata.len() as u64, files);
    let record = &metadata[0]["bayes_perception"];
    for (k, file) in metadata.iter().enumerate() {
        assert_eq!(&file["bayes_perception"], record, "{metadata:?}");
        // And rosbag2's own, saying the metadata version (5) by which to read the file.
        let serialized = file["rosbag2"]["serialized_metadata"].as_str().unwrap();
        let serialized: serde_yaml::Value = serde_yaml::from_str(serialized).unwrap();
        assert_eq!(
            serialized["version"],
            serde_yaml::Value::from(5),
            "file {k}"
        );
    }
    let ours = bayes_perception::bag::BagReader::open(&f.path("out_split"))
        .unwrap()
        .metadata_records();
    assert_eq!(ours.len(), 2);
    assert_eq!(ours[0].name, "bayes_perception");
    assert_eq!(serde_json::to_value(&ours[0].entries).unwrap(), *record);
    let absolute = |rel: &str| std::path::absolute(f.path(rel)).unwrap();
    assert_eq!(record["input"], absolute("in_mcap").display().to_string());
    assert_eq!(record["model"], absolute("model").display().to_string());
    assert_eq!(record["device"], "cpu");
    assert!(record["command"]
        .as_str()
        .unwrap()
        .ends_with("--mode mc --samples 2 --seed 3 --max-bag-size 20000"));
    let block: String = record["params"]
        .as_str()
        .unwrap()
        .lines()
        .map(|line| format!("    {line}\n"))
        .collect();
    let params = bayes_perception::config::Params::from_yaml(
        &format!("/**:\n  ros__parameters:\n{block}"),
        "the bag's params",
        "/bayes_perception",
    )
    .unwrap();
    assert_eq!(
        (params.mode, params.mc.samples, params.seed, params.model),
        (
            bayes_perception::config::Mode::Mc,
            2,
            3,
            absolute("model").display().to_string()
        )
    );
    // `bag info` shows it, the parameters indented under their key.
    let info = Command::new(env!("CARGO_BIN_EXE_bayes_perception"))
        .args(["bag", "info"])
        .arg(f.path("out_split"))
        .output()
        .unwrap();
    let text = String::from_utf8_lossy(&info.stdout);
    assert!(
        text.contains("Metadata:          bayes_perception\n")
            && text.contains("\n                     device: cpu\n")
            && text.contains("\n                     params:\n")
            && text.contains("\n                       mode: mc\n"),
        "{text}"
    );
}

/// Checks the outputs of `bag process` on in_mcap (MC mode), as both readers read them.
fn check_in_mcap_outputs(input: &BTreeMap<String, Value>, result: &Value) {
    for reader in ["rosbags", "mcap"] {
        let output = as_map(&result[reader]);
        check_camera(input, &output, "/front/image_raw", "/front", true, reader);
        check_camera(
            input,
            &output,
            "/rear/image_raw/compressed",
            "/rear",
            true,
            reader,
        );
        check_camera(input, &output, "/side/image", "/side", true, reader);
        // camera_info passes through, and depth/camera_info carries each image's header.
        assert_eq!(
            output["/front/camera_info"]["sha"],
            input["/front/camera_info"]["sha"]
        );
        assert_eq!(
            output["/front/depth/camera_info"]["stamps"],
            input["/front/image_raw"]["stamps"]
        );
        assert_eq!(
            output["/front/depth/camera_info"]["sizes"][0],
            serde_json::json!([40, 30])
        );
        // The point cloud: with each image's header where a camera_info is known, the
        // documented layout, every byte accounted for; none for cameras without one.
        let points = &output["/front/points"];
        assert_eq!(points["type"], "sensor_msgs/msg/PointCloud2", "{reader}");
        assert_eq!(
            points["stamps"], input["/front/image_raw"]["stamps"],
            "{reader}"
        );
        for cloud in points["clouds"].as_array().unwrap() {
            let fields: Vec<(String, u64, u64)> = cloud["fields"]
                .as_array()
                .unwrap()
                .iter()
                .map(|f| {
                    assert_eq!(f[3], 1, "{reader}: count");
                    (
                        f[0].as_str().unwrap().to_owned(),
                        f[1].as_u64().unwrap(),
                        f[2].as_u64().unwrap(),
                    )
                })
                .collect();
            let expected: Vec<(String, u64, u64)> = [
                ("x", 0, 7),
                ("y", 4, 7),
                ("z", 8, 7),
                ("rgb", 12, 7),
                ("label", 16, 4),
                ("semantic_aleatoric", 20, 7),
                ("semantic_epistemic", 24, 7),
                ("depth_aleatoric", 28, 7),
                ("depth_epistemic", 32, 7),
            ]
            .iter()
            .map(|&(n, o, d)| (n.to_owned(), o, d))
            .collect();
            assert_eq!(fields, expected, "{reader}");
            let width = cloud["width"].as_u64().unwrap();
            assert!(
                width > 0 && width <= 20 * 15,
                "{reader}: {width} points at stride 2"
            );
            assert_eq!(cloud["height"], 1);
            assert_eq!(cloud["point_step"], 36);
            assert_eq!(cloud["row_step"].as_u64().unwrap(), 36 * width);
            assert_eq!(cloud["data_len"].as_u64().unwrap(), 36 * width);
            assert_eq!(
                (cloud["is_dense"].as_bool(), cloud["is_bigendian"].as_bool()),
                (Some(true), Some(false))
            );
            assert_eq!(cloud["frame_id"], "front");
        }
        assert!(!output.contains_key("/rear/points") && !output.contains_key("/side/points"));
        assert!(!output.contains_key("/side/camera_info"), "{reader}");
    }
    assert_eq!(
        result["rosbags"], result["mcap"],
        "the two readers disagree"
    );
}

#[test]
fn sqlite_input_with_every_option() {
    let Some(f) = Fixture::new() else { return };
    // Raw and compressed streams of one camera: the raw one is processed by default...
    let (code, text) = f.process("in_sqlite", "out_sqlite", &[]);
    assert_eq!(code, 0, "{text}");
    assert!(
        text.contains("/camera/image_raw/compressed is the compressed twin"),
        "{text}"
    );
    let input = as_map(&f.read("in_sqlite")["rosbags"]);
    let result = f.read("out_sqlite");
    for reader in ["rosbags", "mcap"] {
        let output = as_map(&result[reader]);
        check_camera(
            &input,
            &output,
            "/camera/image_raw",
            "/camera",
            false,
            reader,
        );
        assert!(!output.contains_key("/camera/image_raw/compressed"));
    }
    // ...the compressed one on request; both at once would mix their outputs.
    let (code, text) = f.process(
        "in_sqlite",
        "out_png",
        &["--topic", "/camera/image_raw/compressed"],
    );
    assert_eq!(code, 0, "{text}");
    let result = f.read("out_png");
    for reader in ["rosbags", "mcap"] {
        let output = as_map(&result[reader]);
        check_camera(
            &input,
            &output,
            "/camera/image_raw/compressed",
            "/camera",
            false,
            reader,
        );
    }
    let both = [
        "--topic",
        "/camera/image_raw",
        "--topic",
        "/camera/image_raw/compressed",
    ];
    let (code, text) = f.process("in_sqlite", "both", &both);
    assert_eq!(code, 1);
    assert!(text.contains("share the namespace `/camera`"), "{text}");
    // --topic, --every and --start/--duration select frames; the others are not processed.
    let (code, text) = f.process(
        "in_sqlite",
        "picked",
        &[
            "--topic",
            "/camera/image_raw",
            "--every",
            "2",
            "--start",
            "1",
            "--duration",
            "1.5",
        ],
    );
    assert_eq!(code, 0, "{text}");
    let picked = as_map(&f.read("picked")["rosbags"]);
    // Frames at t = 101 and 102 s are inside [101, 102.5]; every 2nd of them is processed.
    assert_eq!(picked["/camera/image_raw"]["count"], 2, "{text}");
    assert_eq!(picked["/camera/semantic/labels"]["count"], 1, "{text}");
    assert_eq!(
        picked["/camera/semantic/labels"]["stamps"][0],
        serde_json::json!([101, 1007])
    );
    assert!(!picked.contains_key("/camera/image_raw/compressed"));

    // The window's counts are of camera frames, not of the camera_info beside them: of
    // /front's 3 frames (t = 100, 101, 102 s, each with a camera_info) one is in
    // [101, 101.5].
    let window = [
        "--topic",
        "/front/image_raw",
        "--start",
        "1",
        "--duration",
        "0.5",
    ];
    let (code, text) = f.process("in_mcap", "window", &window);
    assert_eq!(code, 0, "{text}");
    assert!(
        text.contains("1 camera frame(s) read, 1 processed"),
        "{text}"
    );
    assert!(text.contains("  2 camera frame(s) outside"), "{text}");
    let windowed = as_map(&f.read("window")["rosbags"]);
    assert_eq!(windowed["/front/camera_info"]["count"], 1, "{text}");
    // A window past the end: refused before anything is written.
    let (code, text) = f.process("in_mcap", "past_end", &["--start", "100"]);
    assert_eq!(code, 1, "{text}");
    assert!(
        text.contains("--start 100 s is past the end of the bag (5.000 s long)"),
        "{text}"
    );
    assert!(!f.path("past_end").exists());
    // A window between two frames: an empty output, and a warning that says so.
    let (code, text) = f.process(
        "in_mcap",
        "between_frames",
        &["--start", "0.2", "--duration", "0.1"],
    );
    assert_eq!(code, 0, "{text}");
    assert!(
        text.contains("no camera frame lies in --start/--duration"),
        "{text}"
    );
}

#[test]
fn damaged_inputs_and_existing_outputs() {
    let Some(f) = Fixture::new() else { return };
    // Existing output: refused without --force, replaced with it.
    std::fs::create_dir(f.path("taken")).unwrap();
    let (code, text) = f.process("in_mcap", "taken", &[]);
    assert_eq!(code, 1, "{text}");
    assert!(text.contains("exists; pass --force"), "{text}");
    let (code, text) = f.process("in_mcap", "taken", &["--force"]);
    assert_eq!(code, 0, "{text}");
    assert!(f.path("taken/metadata.yaml").is_file() && f.path("taken/taken_0.mcap").is_file());

    // Missing metadata.yaml.
    std::fs::create_dir(f.path("nometa")).unwrap();
    let (code, text) = f.process("nometa", "o1", &[]);
    assert_eq!(code, 1);
    assert!(text.contains("no metadata.yaml"), "{text}");
    assert!(!f.path("o1").exists());

    // Truncated MCAP: what was readable is processed, the error says where reading
    // stopped, the exit code is non-zero and the output is still a valid bag.
    let mcap = std::fs::read_dir(f.path("in_mcap"))
        .unwrap()
        .map(|e| e.unwrap().path())
        .find(|p| p.extension().is_some_and(|e| e == "mcap"))
        .unwrap();
    let bytes = std::fs::read(&mcap).unwrap();
    std::fs::write(f.path("cut.mcap"), &bytes[..bytes.len() * 3 / 4]).unwrap();
    let (code, text) = f.process("cut.mcap", "from_cut", &[]);
    assert_eq!(code, 1, "{text}");
    assert!(
        text.contains("input damaged") && text.contains("reading stopped after"),
        "{text}"
    );
    let salvaged = f.read("from_cut");
    assert!(
        salvaged["rosbags"].as_object().is_some(),
        "output of a damaged input must be a readable bag"
    );
    assert_eq!(salvaged["rosbags"], salvaged["mcap"]);
    // No temporary directory is left behind by any of the runs.
    let leftovers: Vec<_> = std::fs::read_dir(f.path(""))
        .unwrap()
        .filter_map(|e| e.ok())
        .filter(|e| e.file_name().to_string_lossy().contains(".partial-"))
        .collect();
    assert!(leftovers.is_empty(), "{leftovers:?}");
}

#[test]
fn sample_bag_is_readable_by_rosbags_and_bag_info_matches() {
    let Some(f) = Fixture::new() else { return };
    for (name, extra) in [
        ("sample_raw", vec![]),
        ("sample_jpeg", vec!["--compressed"]),
    ] {
        let out = Command::new(env!("CARGO_BIN_EXE_bayes_perception"))
            .args(["bag", "sample"])
            .arg(f.path(name))
            .args(["--frames", "4", "--width", "48", "--height", "32"])
            .args(&extra)
            .output()
            .unwrap();
        assert!(
            out.status.success(),
            "{}",
            String::from_utf8_lossy(&out.stderr)
        );
        let read = f.read(name);
        let topics = as_map(&read["rosbags"]);
        assert_eq!(topics["/camera/camera_info"]["count"], 4);
        let image_topic = if extra.is_empty() {
            "/camera/image_raw"
        } else {
            "/camera/image_raw/compressed"
        };
        assert_eq!(topics[image_topic]["count"], 4);
        let info = Command::new(env!("CARGO_BIN_EXE_bayes_perception"))
            .args(["bag", "info"])
            .arg(f.path(name))
            .output()
            .unwrap();
        let text = String::from_utf8_lossy(&info.stdout);
        assert!(
            text.contains("Messages:          8")
                && text.contains(image_topic)
                && text.contains("Count: 4"),
            "{text}"
        );
    }
}

/// Bags rosbag2 compressed (zstd per file or per message, as `ros2 bag record
/// --compression-mode file|message` writes them; here written by rosbags) read message for
/// message like their uncompressed twins, process to the same outputs, and a compressed
/// file cut short is read up to the cut.
#[test]
fn compressed_bags_read_and_process_like_their_uncompressed_twins() {
    use bayes_perception::bag::read::{BagError, BagReader, Compression};
    let Some(f) = Fixture::new() else { return };
    let all = common::read_messages;
    for storage in ["mcap", "sqlite"] {
        let (plain, result) = all(&f.path(&format!("in_{storage}")));
        result.unwrap();
        assert!(plain.len() > 5);
        for (mode, compression) in [
            ("file", Compression::File),
            ("message", Compression::Message),
        ] {
            let bag = f.path(&format!("in_{storage}_{mode}"));
            assert_eq!(BagReader::open(&bag).unwrap().compression(), compression);
            let (messages, result) = all(&bag);
            result.unwrap();
            assert!(messages == plain, "{storage} {mode}: not the same messages");
            // Its storage file alone, without metadata.yaml to say how it was compressed.
            let file = std::fs::read_dir(&bag)
                .unwrap()
                .map(|e| e.unwrap().path())
                .find(|p| p.file_name().is_some_and(|n| n != "metadata.yaml"))
                .unwrap();
            assert_eq!(BagReader::open(&file).unwrap().compression(), compression);
            let (messages, result) = all(&file);
            result.unwrap();
            assert!(
                messages == plain,
                "{}: not the same messages",
                file.display()
            );
        }
        let plain_file = std::fs::read_dir(f.path(&format!("in_{storage}")))
            .unwrap()
            .map(|e| e.unwrap().path())
            .find(|p| p.file_name().is_some_and(|n| n != "metadata.yaml"))
            .unwrap();
        assert_eq!(
            BagReader::open(&plain_file).unwrap().compression(),
            Compression::None
        );
    }
    let info = Command::new(env!("CARGO_BIN_EXE_bayes_perception"))
        .args(["bag", "info"])
        .arg(f.path("in_mcap_file"))
        .output()
        .unwrap();
    let text = String::from_utf8_lossy(&info.stdout);
    assert!(text.contains("Compression:       zstd, per file"), "{text}");

    // The same outputs from the compressed bags (seeded: the semantic aleatoric
    // uncertainty samples logit noise); the temporary file goes away.
    let tmp = f.path("tmp");
    std::fs::create_dir(&tmp).unwrap();
    let process = |input: &str, output: &str| {
        let out = Command::new(env!("CARGO_BIN_EXE_bayes_perception"))
            .args(["bag", "process"])
            .arg(f.path(input))
            .arg(f.path(output))
            .arg("--model")
            .arg(f.path("model"))
            .args(["--device", "cpu", "--seed", "3"])
            // One libtorch thread: with several, CPU kernels on a loaded machine (other
            // tests run beside this one) may differ in the last bits between runs.
            .env("OMP_NUM_THREADS", "1")
            .env("TMPDIR", &tmp)
            .output()
            .unwrap();
        let text = String::from_utf8_lossy(&out.stdout).into_owned()
            + &String::from_utf8_lossy(&out.stderr);
        assert!(out.status.success(), "{input}: {text}");
    };
    for (plain, compressed) in [
        ("in_mcap", "in_mcap_file"),
        ("in_sqlite", "in_sqlite_message"),
    ] {
        if !f.path(&format!("out_{plain}")).exists() {
            process(plain, &format!("out_{plain}"));
        }
        process(compressed, &format!("out_{compressed}"));
        let (a, b) = (
            f.read(&format!("out_{plain}")),
            f.read(&format!("out_{compressed}")),
        );
        let topics = as_map(&a["rosbags"]);
        assert!(topics.len() > 3);
        for (topic, value) in topics {
            assert_eq!(
                value["sha"], b["rosbags"][&topic]["sha"],
                "{compressed}: {topic}"
            );
        }
    }
    assert_eq!(
        std::fs::read_dir(&tmp).unwrap().count(),
        0,
        "temporary files left"
    );

    // A compressed file cut short: the messages before the cut, then damage. Noise
    // images, so that the file spans several zstd blocks (128 KiB) and a cut at 2/3 leaves
    // whole messages before it.
    f.py(
        r#"
import sys
from pathlib import Path
import numpy as np
from rosbags.rosbag2 import Writer, StoragePlugin, CompressionFormat, CompressionMode
from rosbags.typesys import Stores, get_typestore
ts = get_typestore(Stores.ROS2_HUMBLE)
T = ts.types
rng = np.random.default_rng(7)
frames = [rng.integers(0, 256, 64 * 48 * 3, dtype=np.uint8) for _ in range(40)]
for name, mode in [('noise_plain', None), ('noise_file', CompressionMode.FILE)]:
    w = Writer(Path(sys.argv[1]) / name, version=8, storage_plugin=StoragePlugin.MCAP)
    if mode:
        w.set_compression(mode, CompressionFormat.ZSTD)
    with w:
        c = w.add_connection('/cam/image_raw', T['sensor_msgs/msg/Image'].__msgtype__, typestore=ts)
        for i, data in enumerate(frames):
            h = T['std_msgs/msg/Header'](stamp=T['builtin_interfaces/msg/Time'](sec=i, nanosec=0), frame_id='cam')
            m = T['sensor_msgs/msg/Image'](header=h, height=48, width=64, encoding='rgb8', is_bigendian=0, step=192, data=data)
            w.write(c, i * 10**9, ts.serialize_cdr(m, m.__msgtype__))
"#,
        &[f.path("")],
    );
    let zstd = std::fs::read_dir(f.path("noise_file"))
        .unwrap()
        .map(|e| e.unwrap().path())
        .find(|p| p.to_string_lossy().ends_with(".mcap.zstd"))
        .unwrap();
    let bytes = std::fs::read(&zstd).unwrap();
    assert!(bytes.len() > 2 * 128 * 1024, "{} bytes", bytes.len());
    let cut = f.path("cut.mcap.zstd");
    std::fs::write(&cut, &bytes[..bytes.len() * 2 / 3]).unwrap();
    let (plain, result) = all(&f.path("noise_plain"));
    result.unwrap();
    assert_eq!(plain.len(), 40);
    let (messages, result) = all(&cut);
    assert!(
        !messages.is_empty() && messages.len() < plain.len(),
        "{} of {} messages before the cut",
        messages.len(),
        plain.len()
    );
    assert!(messages[..] == plain[..messages.len()]);
    match result {
        Err(BagError::Corrupt {
            path,
            messages_read,
            message,
        }) => {
            assert_eq!(path, cut);
            assert_eq!(messages_read as usize, messages.len());
            assert!(message.contains("decompressing"), "{message}");
        }
        other => panic!("expected damage, got {other:?}"),
    }
}

/// Writes bags with a camera and other sensors' topics, as `ros2 bag record -a` would:
/// MCAP with metadata version 9 (QoS policies by name) and SQLite with version 8 (by
/// number), each with message definitions. `/tf_static` is latched (transient_local) and
/// published once at the start; `/tf` and `/imu` are not. Argument: output dir.
const MAKE_TF_BAGS: &str = r#"
import sys
from pathlib import Path
import numpy as np
from rosbags.rosbag2 import Writer, StoragePlugin
from rosbags.interfaces import Qos, QosDurability, QosHistory, QosLiveliness, QosReliability, QosTime
from rosbags.typesys import Stores, get_typestore

out = Path(sys.argv[1])
ts = get_typestore(Stores.ROS2_HUMBLE)
T = ts.types
Time, Header = T['builtin_interfaces/msg/Time'], T['std_msgs/msg/Header']
Vector3, Quaternion = T['geometry_msgs/msg/Vector3'], T['geometry_msgs/msg/Quaternion']
Transform, Stamped = T['geometry_msgs/msg/Transform'], T['geometry_msgs/msg/TransformStamped']
TF, Imu, Image = T['tf2_msgs/msg/TFMessage'], T['sensor_msgs/msg/Imu'], T['sensor_msgs/msg/Image']
String = T['std_msgs/msg/String']

NS = 10**9
def header(t, frame):
    return Header(stamp=Time(sec=t // NS, nanosec=t % NS), frame_id=frame)

def tf(t, parent, child, x):
    return TF(transforms=[Stamped(header=header(t, parent), child_frame_id=child,
              transform=Transform(translation=Vector3(x=x, y=0.0, z=1.5),
                                  rotation=Quaternion(x=0.0, y=0.0, z=0.0, w=1.0)))])

def image(t):
    w, h = 24, 16
    data = np.frombuffer(bytes((x * 5 + t // NS) % 256 for x in range(w * h * 3)), dtype=np.uint8)
    return Image(header=header(t, 'camera'), height=h, width=w, encoding='rgb8', is_bigendian=0, step=w * 3, data=data)

def imu(t):
    return Imu(header=header(t, 'imu'), orientation=Quaternion(x=0.0, y=0.0, z=0.0, w=1.0),
               orientation_covariance=np.zeros(9), angular_velocity=Vector3(x=0.0, y=0.0, z=0.1),
               angular_velocity_covariance=np.zeros(9), linear_acceleration=Vector3(x=0.0, y=0.0, z=9.8),
               linear_acceleration_covariance=np.zeros(9))

def qos(durability, reliability):
    forever = QosTime(sec=2147483647, nsec=4294967295)
    return [Qos(QosHistory.KEEP_LAST, 1, reliability, durability, forever, forever,
                QosLiveliness.AUTOMATIC, forever, False)]

latched = qos(QosDurability.TRANSIENT_LOCAL, QosReliability.RELIABLE) * 2
volatile = qos(QosDurability.VOLATILE, QosReliability.BEST_EFFORT)
S = 100 * NS
# Two latched broadcasters of /tf_static, the second sending twice (each of tf's
# broadcasts latched: listeners merge them); a latched robot description published twice
# (a late subscriber gets its publisher's depth, 1: the second).
messages = [(S, '/tf_static', tf(S, 'base_link', 'imu', 0.5)),
            (S + 1, '/tf_static', tf(S, 'base_link', 'camera', 0.1)),
            (S + 2, '/tf_static', tf(S, 'base_link', 'camera', 0.3)),
            (S + 3, '/robot_description', String(data='<robot name="v1"/>')),
            (S + 4, '/robot_description', String(data='<robot name="v2"/>')),
            # Named like an output of the camera's.
            (S + 5, '/cam/depth', String(data='not a depth image'))]
for k in range(3):
    t = S + k * NS
    messages += [(t + NS // 10, '/cam/image_raw', image(t + NS // 10)),
                 (t + 2 * NS // 10, '/tf', tf(t + 2 * NS // 10, 'odom', 'base_link', float(k))),
                 (t + 3 * NS // 10, '/imu', imu(t + 3 * NS // 10))]
topics = {'/tf_static': (TF, latched), '/tf': (TF, volatile), '/imu': (Imu, volatile),
          '/cam/image_raw': (Image, volatile), '/cam/depth': (String, volatile),
          '/robot_description': (String, latched[:1])}
for name, plugin, version in [('tf_mcap', StoragePlugin.MCAP, 9), ('tf_sqlite', StoragePlugin.SQLITE3, 8)]:
    w = Writer(out / name, version=version, storage_plugin=plugin)
    with w:
        conns = {topic: w.add_connection(topic, msgtype.__msgtype__, typestore=ts, offered_qos_profiles=q)
                 for topic, (msgtype, q) in topics.items()}
        for t, topic, m in messages:
            w.write(conns[topic], t, ts.serialize_cdr(m, m.__msgtype__))
"#;

/// Reads what a copy keeps of each topic, with rosbags (a bag directory) and, for MCAP
/// storage, `mcap` decoding every message through the schema in the file. Prints JSON:
/// {"topics": {topic: {type, times, sha, msgdef, durability}}, "decoded": {topic: n},
/// "tf": [[child, x], ..] as decoded by mcap}.
const READ_COPIES: &str = r#"
import sys, json, hashlib
from pathlib import Path
from rosbags.rosbag2 import Reader

path = Path(sys.argv[1])
sha = lambda b: hashlib.sha256(bytes(b)).hexdigest()
result = {'topics': {}, 'decoded': {}, 'tf': []}
with Reader(path) as reader:
    for conn in reader.connections:
        result['topics'][conn.topic] = {
            'type': conn.msgtype, 'times': [], 'sha': [],
            'msgdef': sha(conn.msgdef.data.encode()) if conn.msgdef.data else '',
            'durability': [q.durability.name.lower() for q in conn.ext.offered_qos_profiles]}
    for conn, t, raw in reader.messages():
        result['topics'][conn.topic]['times'].append(t)
        result['topics'][conn.topic]['sha'].append(sha(raw))
mcaps = sorted(path.glob('*.mcap'))
if mcaps:
    from mcap.reader import make_reader
    from mcap_ros2.decoder import DecoderFactory
    for mcap_path in mcaps:
        with open(mcap_path, 'rb') as f:
            for schema, channel, message, decoded in make_reader(f, decoder_factories=[DecoderFactory()]).iter_decoded_messages():
                result['decoded'][channel.topic] = result['decoded'].get(channel.topic, 0) + 1
                if channel.topic in ('/tf', '/tf_static'):
                    for tr in decoded.transforms:
                        result['tf'].append([tr.child_frame_id, tr.transform.translation.x])
print(json.dumps(result))
"#;

/// `--copy` keeps other topics as they were recorded, from MCAP (QoS by name) and SQLite
/// (by number) inputs: the messages' bytes and log times, the message definitions (so
/// `mcap` decodes `/tf` without ROS) and the offered QoS (`/tf_static` stays latched, so
/// `ros2 bag play` offers it to RViz's tf listener). With --start, the latched messages from
/// before the window that a subscriber joining then would receive are copied at the
/// window's start: all of `/tf_static`'s (tf's broadcasts each latched), the last of
/// `/robot_description` (one publisher of depth 1); `/tf` only inside the window, every
/// message of it with --every. `/imu`, not named, is counted and left out. --copy-all copies every topic but one named like an output (said); --copy-regex and
/// --exclude-regex choose by pattern; --copy of a topic not in the bag, or of an output's
/// name, a regex that does not parse, an exclusion from nothing are refused.
#[test]
fn copied_topics_keep_their_bytes_definitions_and_qos() {
    let Some(f) = Fixture::new() else { return };
    f.py(MAKE_TF_BAGS, &[f.path("")]);
    let read =
        |bag: &str| -> Value { serde_json::from_str(&f.py(READ_COPIES, &[f.path(bag)])).unwrap() };
    const S: u64 = 100_000_000_000;
    const SECOND: u64 = 1_000_000_000;
    for input in ["tf_mcap", "tf_sqlite"] {
        let output = format!("{input}_out");
        let (code, text) = f.process(
            input,
            &output,
            &[
                "--copy",
                "/tf",
                "--copy",
                "/tf_static",
                "--copy",
                "/robot_description",
                "--start",
                "1",
                "--every",
                "2",
            ],
        );
        assert_eq!(code, 0, "{input}: {text}");
        assert!(
            text.contains("6 message(s) of 3 other topic(s) copied (--copy)"),
            "{input}: {text}"
        );
        // /tf's first, and the first robot description (superseded).
        assert!(
            text.contains("2 message(s) of copied topics outside --start/--duration"),
            "{input}: {text}"
        );
        assert!(
            text.contains("4 message(s) of other topics not copied"),
            "{input}: {text}"
        );
        let before = read(input);
        let after = read(&output);
        let (inp, out) = (&before["topics"], &after["topics"]);
        // /tf_static's three, logged at the window's start; the second robot
        // description; /tf's messages in [101 s, end], both though --every 2 processes
        // one frame of the two.
        let tf_static = &out["/tf_static"];
        assert_eq!(
            tf_static["times"],
            serde_json::json!([S + SECOND, S + SECOND, S + SECOND]),
            "{input}"
        );
        assert_eq!(tf_static["sha"], inp["/tf_static"]["sha"], "{input}");
        let description = &out["/robot_description"];
        assert_eq!(description["times"], serde_json::json!([S + SECOND]));
        assert_eq!(description["sha"][0], inp["/robot_description"]["sha"][1]);
        assert_eq!(
            description["durability"],
            serde_json::json!(["transient_local"])
        );
        assert_eq!(
            tf_static["durability"],
            serde_json::json!(["transient_local", "transient_local"]),
            "{input}: /tf_static no longer latched"
        );
        let tf_times: Vec<u64> = [1, 2].iter().map(|k| S + k * SECOND + SECOND / 5).collect();
        assert_eq!(out["/tf"]["times"], serde_json::json!(tf_times), "{input}");
        assert_eq!(
            out["/tf"]["sha"].as_array().unwrap()[..],
            inp["/tf"]["sha"].as_array().unwrap()[1..],
            "{input}: /tf not byte for byte"
        );
        assert_eq!(out["/tf"]["durability"], serde_json::json!(["volatile"]));
        for topic in ["/tf", "/tf_static"] {
            assert_eq!(out[topic]["type"], "tf2_msgs/msg/TFMessage", "{input}");
            assert_ne!(
                inp[topic]["msgdef"], "",
                "{input}: the input has a definition"
            );
            assert_eq!(
                out[topic]["msgdef"], inp[topic]["msgdef"],
                "{input} {topic}: message definition not copied"
            );
        }
        assert!(out.get("/imu").is_none(), "{input}: /imu copied unasked");
        // `mcap` decodes the copies through the copied definitions.
        assert_eq!(after["decoded"]["/tf"], 2, "{input}");
        assert_eq!(after["decoded"]["/tf_static"], 3, "{input}");
        assert_eq!(
            after["tf"],
            serde_json::json!([
                ["imu", 0.5],
                ["camera", 0.1],
                ["camera", 0.3],
                ["base_link", 1.0],
                ["base_link", 2.0]
            ]),
            "{input}"
        );
        // The camera: every second frame of the window processed, both copied.
        assert_eq!(
            out["/cam/semantic/labels"]["times"]
                .as_array()
                .unwrap()
                .len(),
            1
        );
        assert_eq!(out["/cam/image_raw"]["times"].as_array().unwrap().len(), 2);
    }
    // `bag info` shows the QoS recorded: from metadata.yaml (version 9 by name, 8 by
    // number), an MCAP file's summary and a SQLite file's topics table alone, and the
    // copies' (which keep it); a topic recorded without any (the outputs) shows none.
    let info_lines = |bag: &Path| -> Vec<String> {
        let out = Command::new(env!("CARGO_BIN_EXE_bayes_perception"))
            .args(["bag", "info"])
            .arg(bag)
            .output()
            .unwrap();
        assert!(out.status.success(), "{}", bag.display());
        String::from_utf8_lossy(&out.stdout)
            .lines()
            .map(str::to_owned)
            .collect()
    };
    let topic_line = |lines: &[String], topic: &str| -> String {
        let name = format!("Topic: {topic} ");
        lines
            .iter()
            .find(|line| line.contains(&name))
            .unwrap_or_else(|| panic!("{topic} not in {lines:?}"))
            .clone()
    };
    let storage_file = |bag: &str| -> PathBuf {
        std::fs::read_dir(f.path(bag))
            .unwrap()
            .map(|e| e.unwrap().path())
            .find(|p| p.file_name().is_some_and(|n| n != "metadata.yaml"))
            .unwrap()
    };
    for input in ["tf_mcap", "tf_sqlite"] {
        for (bag, copy) in [
            (f.path(input), false),
            (storage_file(input), false),
            (f.path(&format!("{input}_out")), true),
        ] {
            let lines = info_lines(&bag);
            let line = |topic| topic_line(&lines, topic);
            let shown = bag.display();
            assert!(
                line("/tf_static").ends_with(
                    "| Count: 3 | Serialization Format: cdr | QoS: reliable, transient_local, \
                     keep_last 1 (2 publishers)"
                ),
                "{shown}: {lines:?}"
            );
            assert!(
                line("/tf").ends_with("| QoS: best_effort, volatile, keep_last 1"),
                "{shown}: {lines:?}"
            );
            if copy {
                assert!(
                    line("/cam/semantic/labels").ends_with("| Serialization Format: cdr"),
                    "{shown}: {lines:?}"
                );
            } else {
                assert!(
                    line("/imu").ends_with(
                        "| Count: 3 | Serialization Format: cdr | QoS: \
                         best_effort, volatile, keep_last 1"
                    ),
                    "{shown}: {lines:?}"
                );
            }
        }
    }

    // --copy-all: every message of the others (no window), but the one named like an
    // output.
    let (code, text) = f.process("tf_mcap", "all", &["--copy-all"]);
    assert_eq!(code, 0, "{text}");
    assert!(
        text.contains("/cam/depth has the name of an output topic of this run, which writes its own; not copied")
            && text.contains("copying 4 other topic(s): /imu, /robot_description, /tf, /tf_static"),
        "{text}"
    );
    let all = read("all");
    let input = read("tf_mcap");
    for topic in ["/tf", "/tf_static", "/imu", "/robot_description"] {
        assert_eq!(
            all["topics"][topic]["sha"], input["topics"][topic]["sha"],
            "{topic}"
        );
    }
    assert_ne!(all["topics"]["/cam/depth"]["type"], "std_msgs/msg/String");
    assert!(
        text.contains("1 message(s) of other topics not copied (named like an output"),
        "{text}"
    );
    // By pattern: --copy-regex (anywhere in the name), --exclude-regex out of it or out
    // of --copy-all; --copy names a topic whatever they exclude.
    for (name, flags, copied) in [
        (
            "regex",
            &["--copy-regex", "^/tf", "--copy-regex", "imu"][..],
            &["/imu", "/tf", "/tf_static"][..],
        ),
        (
            "excluded",
            &["--copy-all", "--exclude-regex", "^/(imu|robot_)"][..],
            &["/tf", "/tf_static"][..],
        ),
        (
            "named",
            &[
                "--copy",
                "/imu",
                "--copy-regex",
                "tf",
                "--exclude-regex",
                "static|imu",
            ][..],
            &["/imu", "/tf"][..],
        ),
        (
            "all_but",
            &[
                "--copy-all",
                "--exclude-regex",
                "^/(imu|robot_)",
                "--copy",
                "/imu",
            ][..],
            &["/imu", "/tf", "/tf_static"][..],
        ),
    ] {
        let (code, text) = f.process("tf_mcap", name, flags);
        assert_eq!(code, 0, "{name}: {text}");
        let listed = format!(
            "copying {} other topic(s): {}",
            copied.len(),
            copied.join(", ")
        );
        assert!(text.contains(&listed), "{name}: {text}");
        let out = read(name);
        for topic in ["/tf", "/tf_static", "/imu", "/robot_description"] {
            assert_eq!(
                out["topics"].get(topic).is_some(),
                copied.contains(&topic),
                "{name}: {topic}"
            );
        }
    }
    // One that matches no topic to copy (none, or only the camera processed) is said.
    for regex in ["^/gps", "image_raw"] {
        let (code, text) = f.process("tf_mcap", "nothing", &["--copy-regex", regex]);
        assert_eq!(code, 0, "{text}");
        let said = format!("--copy-regex {regex} matches no topic to copy in this bag");
        assert!(text.contains(&said), "{text}");
        std::fs::remove_dir_all(f.path("nothing")).unwrap();
    }
    // Usage errors, before anything is read or written.
    for (flags, why) in [
        (
            &["--copy-regex", "(/tf"][..],
            "--copy-regex (/tf: regex parse error",
        ),
        (
            &["--exclude-regex", "imu"][..],
            "--exclude-regex leaves topics out of --copy-all or --copy-regex",
        ),
        (
            &["--copy-all", "--copy-regex", "imu"][..],
            "'--copy-all' cannot be used with '--copy-regex <REGEX>'",
        ),
    ] {
        let (code, text) = f.process("tf_mcap", "refused", flags);
        assert_eq!(code, 2, "{text}");
        assert!(text.contains(why), "{text}");
        assert!(!f.path("refused").exists());
    }
    for (copy, why) in [
        ("/gps", "--copy /gps is not a topic of this bag"),
        (
            "/cam/depth",
            "--copy /cam/depth has the name of an output topic",
        ),
    ] {
        let (code, text) = f.process("tf_mcap", "refused", &["--copy", copy]);
        assert_eq!(code, 1, "{text}");
        assert!(text.contains(why), "{text}");
        assert!(!f.path("refused").exists());
    }
}

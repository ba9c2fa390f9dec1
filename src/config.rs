//! The parameters file: one YAML file shared by the CLI and the ROS node.
//!
//! It has the ROS 2 params-file shape (`/**:` or a node name, then `ros__parameters:`,
//! then the keys), so `ros2 launch` can pass it to the node unchanged and the CLI reads the
//! same `ros__parameters` block. Unknown keys and out-of-range values are errors naming
//! the dotted key, except another node's keys in an entry for every node
//! ([`is_other_nodes_key`]), which are passed over with a warning. Integers are i64 and
//! reals f64, the ROS parameter types.

use std::path::Path;

use serde::{Deserialize, Serialize};

use crate::device::DeviceRequest;
use crate::error::{Error, Result};
use crate::text_file::{read_limited, MAX_CONFIG_BYTES};

/// The node's name.
pub const NODE_NAME: &str = "bayes_perception";

/// The node whose params-file entries the CLI reads unless told another (`--node`): the
/// node in the root namespace, as the launch file starts it without `namespace:=`.
pub const ROOT_NODE: &str = "/bayes_perception";

/// Parameters the ROS client library itself sets (both bools): the node hands them to it
/// (`use_sim_time` also while it runs), the CLI has no use for them; a params file may hold
/// them.
pub const ROS_RESERVED: &[&str] = &["use_sim_time", "start_type_description_service"];

/// Why a client-library parameter ([`ROS_RESERVED`]) given as a `type_name` is refused, as
/// rclcpp refuses it (`use_sim_time: "true"` would leave the node on the wall clock); the
/// parameter's name goes before it.
pub fn reserved_type_error(type_name: &str) -> String {
    format!("has type bool, not {type_name} (write true or false, unquoted)")
}

/// Words ROS's params-file parser (YAML 1.1) reads as booleans, unquoted, beside true and
/// false; YAML 1.2, which the CLI reads, takes them for strings.
const YAML11_BOOLS: &[&str] = &[
    "y", "Y", "yes", "Yes", "YES", "on", "On", "ON", "n", "N", "no", "No", "NO", "off", "Off",
    "OFF",
];

/// The hint for a string where a bool belongs, if it is one of [`YAML11_BOOLS`].
fn yaml11_bool_hint(value: &serde_yaml::Value) -> Option<String> {
    let word = value.as_str().filter(|w| YAML11_BOOLS.contains(w))?;
    Some(format!(
        "unquoted, `{word}` is a bool to ROS (YAML 1.1) but a string to this CLI (YAML 1.2): \
         write true or false, which both read alike"
    ))
}

/// The prefix of rclcpp's QoS override parameters (`qos_overrides./image.subscription.
/// reliability`), which this package does not read: the `qos.*` parameters set its QoS.
pub const QOS_OVERRIDES: &str = "qos_overrides";

/// Whether a params-file entry named `pattern` applies to the node `node` (fully
/// qualified, `/front/bayes_perception`), by the rule rclcpp and rclpy apply: the leading
/// `/` is implied, `*` stands for one name segment and `**` for any number of them, so
/// `/**` is every node, `/front/*` every node in `/front`, and `bayes_perception` only the
/// one in the root namespace.
pub fn node_name_matches(pattern: &str, node: &str) -> bool {
    fn matches(pattern: &[&str], name: &[&str]) -> bool {
        match pattern.split_first() {
            None => name.is_empty(),
            Some((&"**", rest)) => (0..=name.len()).any(|skip| matches(rest, &name[skip..])),
            Some((&"*", rest)) => !name.is_empty() && matches(rest, &name[1..]),
            Some((segment, rest)) => name.first() == Some(segment) && matches(rest, &name[1..]),
        }
    }
    fn segments(name: &str) -> Vec<&str> {
        let mut segments: Vec<&str> = name.strip_prefix('/').unwrap_or(name).split('/').collect();
        // `**/**` is `**` (and would make the matching exponential).
        segments.dedup_by(|a, b| *a == "**" && *b == "**");
        segments
    }
    matches(&segments(pattern), &segments(node))
}

/// Whether a params-file entry named `pattern` is for any node rather than one by name:
/// its last segment is a wildcard (`/**`, `/front/*`).
pub fn entry_is_for_any_node(pattern: &str) -> bool {
    matches!(pattern.rsplit('/').next(), Some("*" | "**"))
}

/// Every parameter's dotted name (`mode`, `mc.samples`), in the order of [`Params`].
pub fn parameter_names() -> &'static [String] {
    static NAMES: std::sync::OnceLock<Vec<String>> = std::sync::OnceLock::new();
    NAMES.get_or_init(|| {
        let defaults = serde_yaml::to_value(Params::default()).expect("Params serialise to YAML");
        let mut names = Vec::new();
        leaf_names("", &defaults, &mut names);
        names
    })
}

/// The dotted names of the values in `value`, named `prefix` (an empty mapping is a value).
fn leaf_names(prefix: &str, value: &serde_yaml::Value, out: &mut Vec<String>) {
    match value {
        serde_yaml::Value::Mapping(map) if !map.is_empty() => {
            for (key, value) in map {
                let key = key_name(key);
                let name = if prefix.is_empty() {
                    key
                } else {
                    format!("{prefix}.{key}")
                };
                leaf_names(&name, value, out);
            }
        }
        _ => out.push(prefix.to_owned()),
    }
}

/// A YAML key as a name: a string as it is, another scalar (`1`, `true`) as YAML writes
/// it, which is how rcl names the parameter.
fn key_name(key: &serde_yaml::Value) -> String {
    match key {
        serde_yaml::Value::String(s) => s.clone(),
        other => serde_yaml::to_string(other)
            .unwrap_or_default()
            .trim()
            .to_owned(),
    }
}

/// The parameter `name` most likely misspells (`mdoe`: `mode`; `mc.sample`:
/// `mc.samples`), if one is near enough: at most 2 edits, or a quarter of its length.
pub fn nearest_parameter(name: &str) -> Option<&'static str> {
    parameter_names()
        .iter()
        .map(|known| (strsim::levenshtein(name, known), known.as_str()))
        .min()
        .filter(|(edits, _)| *edits <= 2.max(name.len() / 4))
        .map(|(_, known)| known)
}

/// Whether `name`, not a parameter of this node, is taken for another node's when an
/// entry for any node gives it (see [`entry_is_for_any_node`]): one params file may set
/// the camera driver's `camera_name` under `/**` for every node, and rclcpp passes over
/// the overrides a node does not declare. It is not when it could be meant for this node:
/// a name of ours, the client library's (or one misspelt: `qos_override`), one under a
/// first segment of ours (`mc.sample`), one ending as one of ours does (`samples`,
/// `transport`: a key of ours without its group), or a near misspelling of one
/// ([`nearest_parameter`]: `mdoe`). Those are errors.
pub fn is_other_nodes_key(name: &str) -> bool {
    let first = name.split('.').next().unwrap_or(name);
    let last = name.rsplit('.').next().unwrap_or(name);
    let ours = parameter_names().iter().any(|known| {
        known.split('.').next() == Some(first) || known.rsplit('.').next() == Some(last)
    });
    // The client library's own names, and their misspellings (`qos_override`).
    let client_library = ROS_RESERVED
        .iter()
        .chain([&QOS_OVERRIDES])
        .any(|known| strsim::levenshtein(first, known) <= 2.max(first.len() / 4));
    !ours && !client_library && nearest_parameter(name).is_none()
}

/// The warning for the keys passed over as other nodes' ([`is_other_nodes_key`]), None
/// when there are none.
pub fn other_nodes_keys_warning(names: &[String]) -> Option<String> {
    let (first, rest) = names.split_first()?;
    let more = match rest.len() {
        0 => String::new(),
        1 => format!(" and `{}`", rest[0]),
        n => format!(", `{}` and {} more", rest[0], n - 1),
    };
    Some(format!(
        "`{first}`{more} passed over: not parameters of {NODE_NAME}, taken for another \
         node's, as an entry for any node gave them (`/**`, `/front/*`); a key that may be \
         a misspelt one of ours is refused there, and any unknown key in an entry naming \
         this node"
    ))
}

/// Real-time (one deterministic pass), sampling-free epistemic (one pass of moments) or
/// full Monte Carlo dropout sampling.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Mode {
    /// One pass, dropout off: aleatoric uncertainty only.
    Aleatoric,
    /// One pass of means and variances through the dropout network (experimental):
    /// aleatoric and approximate epistemic uncertainty.
    Moments,
    /// `mc.samples` stochastic passes: aleatoric and epistemic uncertainty.
    Mc,
}

impl Mode {
    /// Whether the mode gives epistemic uncertainty.
    pub fn epistemic(self) -> bool {
        self != Mode::Aleatoric
    }
}

impl std::str::FromStr for Mode {
    type Err = String;

    fn from_str(s: &str) -> Result<Self, String> {
        match s {
            "aleatoric" => Ok(Mode::Aleatoric),
            "moments" => Ok(Mode::Moments),
            "mc" => Ok(Mode::Mc),
            _ => Err(format!(
                "`{s}` is not a mode; expected aleatoric, moments or mc"
            )),
        }
    }
}

impl std::fmt::Display for Mode {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(match self {
            Mode::Aleatoric => "aleatoric",
            Mode::Moments => "moments",
            Mode::Mc => "mc",
        })
    }
}

/// The number format of the network's weights and activations during inference. The
/// uncertainty math after the network (softmax averages, entropies, variances) always
/// runs in fp32.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Precision {
    Fp32,
    Fp16,
    Bf16,
}

impl Precision {
    /// The libtorch element type of weights and activations.
    pub fn kind(self) -> tch::Kind {
        match self {
            Precision::Fp32 => tch::Kind::Float,
            Precision::Fp16 => tch::Kind::Half,
            Precision::Bf16 => tch::Kind::BFloat16,
        }
    }
}

impl std::str::FromStr for Precision {
    type Err = String;

    fn from_str(s: &str) -> Result<Self, String> {
        match s {
            "fp32" => Ok(Precision::Fp32),
            "fp16" => Ok(Precision::Fp16),
            "bf16" => Ok(Precision::Bf16),
            _ => Err(format!(
                "`{s}` is not a precision; expected fp32, fp16 or bf16"
            )),
        }
    }
}

impl std::fmt::Display for Precision {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(match self {
            Precision::Fp32 => "fp32",
            Precision::Fp16 => "fp16",
            Precision::Bf16 => "bf16",
        })
    }
}

/// Every parameter, with the defaults of `config/params.yaml`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct Params {
    /// Model directory (model.yaml + model.safetensors); empty = given on the command line.
    pub model: String,
    /// `aleatoric`, `moments` or `mc`.
    pub mode: Mode,
    /// `auto`, `cpu`, `cuda` or `cuda:N`.
    pub device: String,
    /// `fp32`, `fp16` or `bf16`: the network's number format (read at start-up).
    pub precision: Precision,
    /// Run the network channels-last (NHWC in memory; read at start-up): the layout of
    /// cuDNN's fastest half-precision convolutions. Same outputs up to rounding.
    pub channels_last: bool,
    /// Random seed for dropout masks and logit noise; -1 = not seeded. When set, every
    /// frame is sampled from this seed (same frame in, same outputs out).
    pub seed: i64,
    /// libtorch intra-op CPU threads; 0 = libtorch's default (one per physical core).
    pub cpu_threads: i64,
    /// Logit-noise draws per frame (shared by its MC samples) for the semantic aleatoric
    /// uncertainty (0 = none).
    pub noise_samples: i64,
    pub mc: McParams,
    pub moments: MomentsParams,
    pub points: PointsParams,
    pub colormap: ColormapParams,
    /// ROS node only: which camera topic to subscribe to.
    pub input: InputParams,
    /// ROS node only: image_transport's compressed twins of the 8-bit outputs.
    pub output: OutputParams,
    /// ROS node only: quality of service of subscriptions and publications.
    pub qos: QosParams,
    /// ROS node only: when `/diagnostics` reports WARN.
    pub diagnostics: DiagnosticsParams,
}

/// `raw` subscribes to `image` (sensor_msgs/Image), `compressed` to `image/compressed`
/// (sensor_msgs/CompressedImage, JPEG or PNG).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Transport {
    Raw,
    Compressed,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct InputParams {
    pub transport: Transport,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct OutputParams {
    /// Advertise `TOPIC/compressed` (sensor_msgs/CompressedImage, as image_transport's
    /// compressed plugin names and fills it) beside each 8-bit output: the labels as PNG,
    /// the colour images as JPEG; encoded only while someone subscribes (read at start-up).
    pub compressed: bool,
    /// JPEG quality of the colour images' compressed twins, 1..=100.
    pub jpeg_quality: i64,
}

impl Default for OutputParams {
    fn default() -> Self {
        OutputParams {
            compressed: true,
            jpeg_quality: 80,
        }
    }
}

/// ROS 2 QoS reliability.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Reliability {
    BestEffort,
    Reliable,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct QosParams {
    /// Camera subscriptions; best_effort (sensor data QoS) receives from any publisher.
    pub input_reliability: Reliability,
    /// Published outputs; reliable (system default) is received by both kinds of subscriber.
    pub output_reliability: Reliability,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct DiagnosticsParams {
    /// WARN when the p95 latency (image stamp to publish) exceeds this, milliseconds.
    pub latency_warn_ms: f64,
    /// WARN when more than this fraction of incoming frames is dropped (0..1); -1: by mode
    /// ([`DiagnosticsParams::DROP_WARN_BY_MODE`]).
    pub drop_warn_fraction: f64,
}

impl DiagnosticsParams {
    /// `drop_warn_fraction` -1 (any value below 0): 0.5 in aleatoric and moments mode,
    /// which are meant to keep up with the camera; not checked in mc mode, whose T passes a
    /// frame are meant to run slower than the camera (the node keeps the newest frame), so
    /// that dropping frames is how it works there rather than a fault.
    pub const DROP_WARN_BY_MODE: f64 = -1.0;
}

impl Default for InputParams {
    fn default() -> Self {
        InputParams {
            transport: Transport::Raw,
        }
    }
}

impl Default for QosParams {
    fn default() -> Self {
        QosParams {
            input_reliability: Reliability::BestEffort,
            output_reliability: Reliability::Reliable,
        }
    }
}

impl Default for DiagnosticsParams {
    fn default() -> Self {
        DiagnosticsParams {
            latency_warn_ms: 1000.0,
            drop_warn_fraction: DiagnosticsParams::DROP_WARN_BY_MODE,
        }
    }
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct McParams {
    /// T, the number of stochastic forward passes in mc mode (at least 2).
    pub samples: i64,
    /// Passes run together as one batch; -1 = per device (CPU 1; CUDA up to 16, as many
    /// as fit the free memory and `max_gpu_memory_mb`).
    pub batch_size: i64,
    /// With `batch_size` -1 on CUDA: keep this process's tensors under this many MiB
    /// (0 = only the device's free memory limits the chunk).
    pub max_gpu_memory_mb: i64,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct MomentsParams {
    /// Draws of the semantic heads' outputs from their propagated joint Gaussian per
    /// frame in moments mode (2..10000): no network passes.
    pub head_samples: i64,
    /// How ReLUs and max-pools transform a Gaussian: `closed_form` or `linearized`.
    pub rules: crate::moments::Rules,
}

/// The uncertainty point cloud (node topic `points`, `bag process`, `infer --points`).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct PointsParams {
    /// Build the cloud (depth models, once a camera_info is known).
    pub enabled: bool,
    /// Every Nth pixel in x and in y becomes a point (1 = every pixel).
    pub stride: i64,
    /// Leave out points farther than this from the camera, metres; 0 = no limit.
    pub max_range_m: f64,
    /// Leave out points whose depth epistemic std exceeds this, metres; 0 = no gate (and
    /// none without an epistemic image, in aleatoric mode).
    pub max_depth_epistemic_m: f64,
    /// The camera images are rectified (image_proc's `image_rect`): camera_info's P is
    /// their camera, without distortion. Otherwise (raw images) K, with the lens
    /// distortion of D undone.
    pub rectified: bool,
}

/// Fixed ranges of the false-colour images, so colours compare across frames.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct ColormapParams {
    /// Depth colour range, metres.
    pub depth_min_m: f64,
    pub depth_max_m: f64,
    /// Upper end of the semantic aleatoric (expected entropy) range, nats; lower end 0.
    pub semantic_aleatoric_max_nats: f64,
    /// Upper end of the semantic epistemic (mutual information) range, nats.
    pub semantic_epistemic_max_nats: f64,
    /// Upper end of the depth aleatoric std range, metres.
    pub depth_aleatoric_max_m: f64,
    /// Upper end of the depth epistemic std range, metres.
    pub depth_epistemic_max_m: f64,
}

impl Default for Params {
    fn default() -> Self {
        Params {
            model: String::new(),
            mode: Mode::Aleatoric,
            device: "auto".into(),
            precision: Precision::Fp32,
            channels_last: false,
            seed: -1,
            cpu_threads: 0,
            noise_samples: 10,
            mc: McParams::default(),
            moments: MomentsParams::default(),
            points: PointsParams::default(),
            colormap: ColormapParams::default(),
            input: InputParams::default(),
            output: OutputParams::default(),
            qos: QosParams::default(),
            diagnostics: DiagnosticsParams::default(),
        }
    }
}

impl Default for McParams {
    fn default() -> Self {
        McParams {
            samples: 50,
            batch_size: -1,
            max_gpu_memory_mb: 0,
        }
    }
}

impl Default for MomentsParams {
    fn default() -> Self {
        MomentsParams {
            head_samples: 20,
            rules: crate::moments::Rules::ClosedForm,
        }
    }
}

impl PointsParams {
    /// Why the cloud of images from `topic` (as remapped) may come out wrong, if it may:
    /// a topic named as image_proc names rectified images (`image_rect`,
    /// `image_rect_color`, ..._rect) while `rectified` is false, so the lens distortion
    /// that camera_info still describes would be undone a second time.
    pub fn doubt_for_topic(&self, topic: &str) -> Option<String> {
        let rectified_name = topic.split('/').any(|segment| {
            segment.starts_with("image_rect")
                || segment.ends_with("_rect")
                || segment.contains("_rect_")
        });
        (self.enabled && !self.rectified && rectified_name).then(|| {
            format!(
                "the camera topic {topic} is named like rectified images but points.rectified \
                 is false: the point cloud undoes camera_info's lens distortion, which \
                 rectified images no longer have; set points.rectified: true if they are"
            )
        })
    }
}

impl Default for PointsParams {
    fn default() -> Self {
        PointsParams {
            enabled: true,
            stride: 2,
            max_range_m: 0.0,
            max_depth_epistemic_m: 0.0,
            rectified: false,
        }
    }
}

impl Default for ColormapParams {
    fn default() -> Self {
        ColormapParams {
            depth_min_m: 0.0,
            depth_max_m: 50.0,
            semantic_aleatoric_max_nats: 1.0,
            semantic_epistemic_max_nats: 0.3,
            depth_aleatoric_max_m: 5.0,
            depth_epistemic_max_m: 2.0,
        }
    }
}

/// A params file's node entries in file order, nested namespaces joined as rcl joins them
/// (`front:` → `bayes_perception:` → `ros__parameters:` is the entry
/// `front/bayes_perception`). A mapping whose values are all mappings and that has no
/// `ros__parameters` is a namespace level.
fn node_entries<'a>(
    nodes: &'a serde_yaml::Mapping,
    prefix: &str,
    out: &mut Vec<(String, &'a serde_yaml::Value)>,
) {
    for (key, value) in nodes {
        let key = key.as_str().unwrap_or_default();
        let name = if prefix.is_empty() || prefix.ends_with('/') {
            format!("{prefix}{key}")
        } else {
            format!("{prefix}/{key}")
        };
        match value {
            serde_yaml::Value::Mapping(inner)
                if !inner.is_empty()
                    && !inner.contains_key("ros__parameters")
                    && inner.values().all(serde_yaml::Value::is_mapping) =>
            {
                node_entries(inner, &name, out)
            }
            _ => out.push((name, value)),
        }
    }
}

impl Params {
    /// Reads a params file and validates it, with the entries for `node` (see
    /// [`Params::from_yaml`]).
    pub fn load(path: &Path, node: &str) -> Result<Self> {
        let text = read_limited(path, MAX_CONFIG_BYTES).map_err(|e| Error::io(path, e))?;
        Self::from_yaml(&text, &path.display().to_string(), node)
    }

    /// Parses params-file text; `origin` names it in errors. The entries that apply to the
    /// node `node` (fully qualified; [`node_name_matches`]: `/**`, its own name, wildcards)
    /// are merged in file order, as rclcpp does; nested namespace levels are joined as rcl
    /// joins them. Reading the root node's entries, those for a node of its name in other
    /// namespaces (a params file for two cameras' nodes) are named in a warning.
    pub fn from_yaml(text: &str, origin: &str, node: &str) -> Result<Self> {
        let doc: serde_yaml::Value = serde_yaml::from_str(text)
            .map_err(|e| Error::config(origin, "(file)", e.to_string()))?;
        let serde_yaml::Value::Mapping(nodes) = doc else {
            return Err(Error::config(
                origin,
                "(file)",
                "expected a mapping `/**:` -> `ros__parameters:` -> keys",
            ));
        };
        let mut merged = serde_yaml::Mapping::new();
        let mut found = false;
        // Entries that could be for a node of this name in another namespace, named in a
        // warning when the root node's entries are read (the CLI without --node).
        let mut others = Vec::new();
        let node_name = node.rsplit('/').next().unwrap_or(node);
        let mut entries = Vec::new();
        node_entries(&nodes, "", &mut entries);
        // Keys an entry for any node gives that are another node's (is_other_nodes_key).
        let mut passed_over: Vec<String> = Vec::new();
        for (name, entry) in &entries {
            let name = name.as_str();
            // rcl refuses a file with an entry without parameters (a misspelt
            // `ros__parameters`), whichever node it names: so does the CLI.
            let params = entry.get("ros__parameters").ok_or_else(|| {
                // A misspelt block is read as one more level of node names.
                let last = name.rsplit('/').next().unwrap_or(name);
                let hint = if last.to_ascii_lowercase().contains("param") {
                    format!(" (`{last}`: did you mean `ros__parameters`, with two underscores?)")
                } else {
                    String::new()
                };
                Error::config(
                    origin,
                    name,
                    format!("has no `ros__parameters:` block{hint}"),
                )
            })?;
            if !node_name_matches(name, node) {
                let last = name.rsplit('/').next();
                if node == ROOT_NODE
                    && (last == Some(node_name) || matches!(last, Some("*" | "**")))
                {
                    others.push(name);
                }
                continue;
            }
            let serde_yaml::Value::Mapping(params) = params else {
                return Err(Error::config(
                    origin,
                    format!("{name}.ros__parameters"),
                    "must be a mapping of keys",
                ));
            };
            let both = |key: String| {
                Error::config(
                    origin,
                    key,
                    "is both a value and a group of keys (`mc: 5` and `mc.samples: 8`), which the \
                     node refuses",
                )
            };
            // Another node's keys go before the nesting, which would check them too.
            let mut params = params.clone();
            if entry_is_for_any_node(name) {
                for key in take_other_nodes_keys(&mut params) {
                    if !passed_over.contains(&key) {
                        passed_over.push(key);
                    }
                }
            }
            let params = dotted_names_nested(&params).map_err(both)?;
            merge(&mut merged, &params).map_err(both)?;
            found = true;
        }
        let choose = || {
            format!(
                "the entries for {} are for nodes in other namespaces (--node picks one)",
                others.join(", ")
            )
        };
        if !found {
            let mut message = format!(
                "no entry with `ros__parameters:` for the node {node} (`/**:` or `{node}:`)"
            );
            if !others.is_empty() {
                message = format!("{message}; {}", choose());
            }
            return Err(Error::config(origin, "(file)", message));
        }
        if !others.is_empty() {
            log::warn!("{origin}: read the entries for {node}; {}", choose());
        }
        if let Some(warning) = other_nodes_keys_warning(&passed_over) {
            log::warn!("{origin}: {warning}");
        }
        take_client_library_keys(&mut merged, origin)?;
        let defaults = serde_yaml::to_value(Params::default()).expect("Params serialise to YAML");
        check_ros_types(&merged, &defaults, "", origin)?;
        let params: Params = serde_path_to_error::deserialize(serde_yaml::Value::Mapping(merged))
            .map_err(|e| Error::deserialize(origin, e))?;
        params.validate(origin)?;
        Ok(params)
    }

    /// Checks ranges ([`integer_range`], [`float_range`] and the rules of the others); the
    /// error names the key and the allowed values.
    pub fn validate(&self, origin: &str) -> Result<()> {
        let err = |key: &str, message: String| Err(Error::config(origin, key, message));
        self.device_request()
            .map_err(|m| Error::config(origin, "device", m))?;
        if self.seed < -1 {
            return err(
                "seed",
                format!(
                    "{} is not allowed; use -1 (not seeded) or a seed >= 0",
                    self.seed
                ),
            );
        }
        if self.mode == Mode::Mc && self.mc.samples < 2 {
            return err(
                "mc.samples",
                format!(
                    "{} is too small: mc mode needs at least 2 samples",
                    self.mc.samples
                ),
            );
        }
        for (key, value) in [
            ("noise_samples", self.noise_samples),
            ("mc.samples", self.mc.samples),
            ("moments.head_samples", self.moments.head_samples),
            ("points.stride", self.points.stride),
            ("cpu_threads", self.cpu_threads),
            ("output.jpeg_quality", self.output.jpeg_quality),
        ] {
            let (lo, hi) = integer_range(key).expect("a range for each of these keys");
            if !(lo..=hi).contains(&value) {
                return err(key, format!("{value} is out of range {lo}..={hi}"));
            }
        }
        for (key, value) in [
            ("points.max_range_m", self.points.max_range_m),
            (
                "points.max_depth_epistemic_m",
                self.points.max_depth_epistemic_m,
            ),
        ] {
            if !(value.is_finite() && value >= 0.0) {
                return err(
                    key,
                    format!("{value} must be 0 (off) or a positive number of metres"),
                );
            }
        }
        if self.mc.max_gpu_memory_mb < 0 {
            return err(
                "mc.max_gpu_memory_mb",
                format!(
                    "{} is not allowed; use 0 (no limit but the free memory) or a number of MiB",
                    self.mc.max_gpu_memory_mb
                ),
            );
        }
        if self.mc.batch_size == 0 || self.mc.batch_size < -1 {
            return err(
                "mc.batch_size",
                format!(
                    "{} is not allowed; use -1 (per device) or >= 1",
                    self.mc.batch_size
                ),
            );
        }
        let c = &self.colormap;
        for (key, value) in [
            ("colormap.depth_min_m", c.depth_min_m),
            ("colormap.depth_max_m", c.depth_max_m),
        ] {
            if !value.is_finite() {
                return err(key, format!("{value} is not a finite number of metres"));
            }
        }
        // Either may be the one set wrong: the message names both.
        if c.depth_min_m >= c.depth_max_m {
            return err(
                "colormap.depth_min_m",
                format!(
                    "{} must be below colormap.depth_max_m ({}): the depth range needs min < max",
                    c.depth_min_m, c.depth_max_m
                ),
            );
        }
        for (key, value) in [
            (
                "colormap.semantic_aleatoric_max_nats",
                c.semantic_aleatoric_max_nats,
            ),
            (
                "colormap.semantic_epistemic_max_nats",
                c.semantic_epistemic_max_nats,
            ),
            ("colormap.depth_aleatoric_max_m", c.depth_aleatoric_max_m),
            ("colormap.depth_epistemic_max_m", c.depth_epistemic_max_m),
        ] {
            if !(value.is_finite() && value > 0.0) {
                return err(key, format!("{value} must be a positive number"));
            }
        }
        let d = &self.diagnostics;
        if !(d.latency_warn_ms.is_finite() && d.latency_warn_ms > 0.0) {
            return err(
                "diagnostics.latency_warn_ms",
                format!("{} must be a positive number of ms", d.latency_warn_ms),
            );
        }
        let key = "diagnostics.drop_warn_fraction";
        let (lo, hi) = float_range(key).expect("a range for the key");
        if !(lo..=hi).contains(&d.drop_warn_fraction) {
            return err(
                key,
                format!(
                    "{} is outside {lo:.1}..={hi:.1} (below 0: by mode)",
                    d.drop_warn_fraction
                ),
            );
        }
        Ok(())
    }

    pub fn device_request(&self) -> Result<DeviceRequest, String> {
        self.device.parse()
    }

    /// Seed as an option (`None` for -1).
    pub fn seed(&self) -> Option<u64> {
        u64::try_from(self.seed).ok()
    }
}

/// Removes what a params file may hold for the ROS client library rather than for this
/// package, so the file that starts the node also serves the CLI: [`ROS_RESERVED`]
/// (refused, as by the node, unless a bool) and rclcpp's `qos_overrides`.
fn take_client_library_keys(merged: &mut serde_yaml::Mapping, origin: &str) -> Result<()> {
    for &name in ROS_RESERVED {
        match merged.remove(name) {
            None | Some(serde_yaml::Value::Bool(_)) => {}
            Some(other) => {
                let message = yaml11_bool_hint(&other).unwrap_or_else(|| {
                    reserved_type_error(match other {
                        serde_yaml::Value::Number(n) if n.is_f64() => "double",
                        serde_yaml::Value::Number(_) => "integer",
                        serde_yaml::Value::String(_) => "string",
                        serde_yaml::Value::Sequence(_) => "array",
                        serde_yaml::Value::Null => "value that is not set",
                        _ => "mapping",
                    })
                });
                return Err(Error::config(origin, name, message));
            }
        }
    }
    // As the node: parameters named qos_overrides.* (a mapping here); a bare
    // `qos_overrides: 5` is an unknown key to both.
    if merged
        .get(QOS_OVERRIDES)
        .is_some_and(serde_yaml::Value::is_mapping)
    {
        merged.remove(QOS_OVERRIDES);
    }
    Ok(())
}

/// Removes from a `ros__parameters` block (nested) the keys that are another node's
/// ([`is_other_nodes_key`]), and returns their dotted names. A key is removed with all
/// under it, and only when every value under it is another node's.
fn take_other_nodes_keys(params: &mut serde_yaml::Mapping) -> Vec<String> {
    let mut taken = Vec::new();
    params.retain(|key, value| {
        let mut names = Vec::new();
        leaf_names(&key_name(key), value, &mut names);
        let theirs = names.iter().all(|name| is_other_nodes_key(name));
        if theirs {
            taken.extend(names);
        }
        !theirs
    });
    taken
}

/// A `ros__parameters` block with its dotted names (`mc.samples: 8`, which rcl reads as the
/// parameter mc.samples) nested as the other form (`mc:` → `samples: 8`), in file order.
fn dotted_names_nested(
    params: &serde_yaml::Mapping,
) -> std::result::Result<serde_yaml::Mapping, String> {
    let mut nested = serde_yaml::Mapping::new();
    for (key, value) in params {
        let value = match value {
            serde_yaml::Value::Mapping(inner) => serde_yaml::Value::Mapping(
                dotted_names_nested(inner)
                    .map_err(|inner| format!("{}.{inner}", key.as_str().unwrap_or("?")))?,
            ),
            other => other.clone(),
        };
        let entry = match key.as_str().filter(|k| k.contains('.')) {
            Some(dotted) => dotted.rsplit('.').fold(value, |inner, part| {
                let mut level = serde_yaml::Mapping::new();
                level.insert(part.into(), inner);
                serde_yaml::Value::Mapping(level)
            }),
            None => {
                let mut level = serde_yaml::Mapping::new();
                level.insert(key.clone(), value);
                serde_yaml::Value::Mapping(level)
            }
        };
        if let serde_yaml::Value::Mapping(entry) = entry {
            merge(&mut nested, &entry)?;
        }
    }
    Ok(nested)
}

/// How to write a real parameter so that ROS reads it as one.
pub const REAL_HINT: &str = "write reals with a decimal point, e.g. 1.0";

/// Refuses an integer where the parameter is a real (`80` for `80.0`), as the ROS node
/// must (rcl reads `80` as an integer parameter, and a parameter keeps its type): a params
/// file the CLI accepts also starts the node. A bool written as ROS's YAML 1.1 allows
/// (`yes`, `on`) gets a hint.
fn check_ros_types(
    given: &serde_yaml::Mapping,
    defaults: &serde_yaml::Value,
    prefix: &str,
    origin: &str,
) -> Result<()> {
    for (key, value) in given {
        let Some(key) = key.as_str() else {
            continue;
        };
        let name = if prefix.is_empty() {
            key.to_owned()
        } else {
            format!("{prefix}.{key}")
        };
        let default = &defaults[key];
        match value {
            serde_yaml::Value::Mapping(inner) => check_ros_types(inner, default, &name, origin)?,
            serde_yaml::Value::Number(n)
                if !n.is_f64() && matches!(default, serde_yaml::Value::Number(d) if d.is_f64()) =>
            {
                return Err(Error::config(
                    origin,
                    name,
                    format!("is a real, not the integer {n} ({REAL_HINT}; the ROS node refuses an integer here)"),
                ));
            }
            _ if default.is_bool() => {
                if let Some(hint) = yaml11_bool_hint(value) {
                    return Err(Error::config(origin, name, hint));
                }
            }
            _ => {}
        }
    }
    Ok(())
}

/// Deep-merges `src` into `dst` (later entries override earlier ones key by key). A key
/// that is a value in one and a group of keys in the other (`mc: 5`, `mc.samples: 8`) is
/// refused, with its dotted name: rcl passes both on as parameters, which the node refuses.
fn merge(
    dst: &mut serde_yaml::Mapping,
    src: &serde_yaml::Mapping,
) -> std::result::Result<(), String> {
    for (key, value) in src {
        match (dst.get_mut(key), value) {
            (Some(serde_yaml::Value::Mapping(d)), serde_yaml::Value::Mapping(s)) => {
                merge(d, s).map_err(|inner| format!("{}.{inner}", key.as_str().unwrap_or("?")))?
            }
            (Some(serde_yaml::Value::Mapping(_)), _) | (Some(_), serde_yaml::Value::Mapping(_)) => {
                return Err(key.as_str().unwrap_or("?").to_owned());
            }
            _ => {
                dst.insert(key.clone(), value.clone());
            }
        }
    }
    Ok(())
}

/// The whole-number parameters with a closed range (inclusive), as [`Params::validate`]
/// checks them and the node describes them (`ros2 param describe`, rqt_reconfigure's
/// sliders). Others have rules a range cannot say (`mc.batch_size`: -1 or >= 1) or no
/// upper bound.
const INTEGER_RANGES: &[(&str, i64, i64)] = &[
    ("noise_samples", 0, 1000),
    ("mc.samples", 1, 10_000),
    ("moments.head_samples", 2, 10_000),
    ("points.stride", 1, 64),
    ("cpu_threads", 0, MAX_CPU_THREADS as i64),
    ("output.jpeg_quality", 1, 100),
];

/// The most libtorch CPU threads asked for (`cpu_threads`, `bench --threads`): libtorch
/// takes an i32 and refuses 0 and below with a panic.
pub const MAX_CPU_THREADS: usize = 1024;

/// The real parameters with a closed range (inclusive); see [`INTEGER_RANGES`].
const FLOAT_RANGES: &[(&str, f64, f64)] = &[("diagnostics.drop_warn_fraction", -1.0, 1.0)];

/// The closed range of a whole-number parameter, if it has one.
pub fn integer_range(name: &str) -> Option<(i64, i64)> {
    INTEGER_RANGES
        .iter()
        .find(|(key, ..)| *key == name)
        .map(|&(_, lo, hi)| (lo, hi))
}

/// The closed range of a real parameter, if it has one.
pub fn float_range(name: &str) -> Option<(f64, f64)> {
    FLOAT_RANGES
        .iter()
        .find(|(key, ..)| *key == name)
        .map(|&(_, lo, hi)| (lo, hi))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn parse(body: &str) -> Result<Params> {
        Params::from_yaml(
            &format!("/**:\n  ros__parameters:\n{body}"),
            "test.yaml",
            ROOT_NODE,
        )
    }

    fn error_of(body: &str) -> String {
        parse(body).unwrap_err().to_string()
    }

    #[test]
    fn an_integer_for_a_real_is_refused_as_the_node_refuses_it() {
        let e = error_of("    colormap:\n      depth_max_m: 80\n");
        assert!(
            e.contains("colormap.depth_max_m") && e.contains("80") && e.contains(REAL_HINT),
            "{e}"
        );
        let p =
            parse("    colormap:\n      depth_max_m: 80.0\n    mc:\n      samples: 12\n").unwrap();
        assert_eq!((p.colormap.depth_max_m, p.mc.samples), (80.0, 12));
    }

    #[test]
    fn a_node_params_file_with_client_library_keys_serves_the_cli() {
        let p = parse(
            "    use_sim_time: true\n    start_type_description_service: false\n    \
             qos_overrides:\n      /image:\n        subscription:\n          \
             reliability: reliable\n    \
             qos_overrides./camera_info.subscription.depth: 5\n    mode: mc\n",
        )
        .unwrap();
        assert_eq!(p.mode, Mode::Mc);
        let e = error_of("    use_sim_time: \"true\"\n");
        assert!(
            e.ends_with(
                "`use_sim_time`: has type bool, not string (write true or false, unquoted)"
            ),
            "{e}"
        );
        let e = error_of("    start_type_description_service: 1\n");
        assert!(e.contains("has type bool, not integer"), "{e}");
        // Only the client library's own names are passed over, and qos_overrides only as
        // the parameters it names (the node refuses a bare `qos_overrides: 5` too).
        let e = error_of("    qos_override:\n      x: 1\n");
        assert!(e.contains("unknown field `qos_override`"), "{e}");
        let e = error_of("    qos_overrides: 5\n");
        assert!(e.contains("unknown field `qos_overrides`"), "{e}");
    }

    /// rcl reads `mc.samples: 8` as the parameter mc.samples, as the nested form; a later
    /// entry of either form overrides an earlier one.
    #[test]
    fn dotted_names_are_the_nested_ones() {
        let p =
            parse("    mc:\n      samples: 3\n      batch_size: 2\n    mc.samples: 8\n").unwrap();
        assert_eq!((p.mc.samples, p.mc.batch_size), (8, 2));
        let p = parse("    mc.samples: 8\n    mc:\n      samples: 3\n").unwrap();
        assert_eq!(p.mc.samples, 3);
        let p = parse("    colormap.depth_max_m: 80.0\n").unwrap();
        assert_eq!(p.colormap.depth_max_m, 80.0);
        let e = error_of("    colormap.depth_max_m: 80\n");
        assert!(
            e.contains("colormap.depth_max_m") && e.contains(REAL_HINT),
            "{e}"
        );
        for body in [
            "    mc: 5\n    mc.samples: 8\n",
            "    mc.samples: 8\n    mc: 5\n",
            "    qos_overrides: 5\n    qos_overrides./x.y: z\n",
        ] {
            let e = error_of(body);
            assert!(
                e.contains("is both a value and a group of keys"),
                "{body}: {e}"
            );
        }
        let e = error_of("    mc.sampels: 8\n");
        assert!(e.contains("mc.sampels"), "{e}");
    }

    /// ROS (YAML 1.1) reads an unquoted `yes` or `on` as true; this CLI (YAML 1.2) as a
    /// string: refused with the reason, not "expected true or false" alone.
    #[test]
    fn yaml_1_1_bools_get_a_hint() {
        for body in [
            "    channels_last: yes\n",
            "    points:\n      enabled: On\n",
            "    use_sim_time: on\n",
        ] {
            let e = error_of(body);
            assert!(
                e.contains("is a bool to ROS (YAML 1.1) but a string to this CLI"),
                "{e}"
            );
        }
        assert!(parse("    channels_last: True\n").unwrap().channels_last);
    }

    #[test]
    fn shipped_params_file_equals_defaults() {
        let path = Path::new(env!("CARGO_MANIFEST_DIR")).join("config/params.yaml");
        assert_eq!(Params::load(&path, ROOT_NODE).unwrap(), Params::default());
    }

    #[test]
    fn nested_keys_and_node_entries_merge() {
        let text = "/**:\n  ros__parameters:\n    mode: mc\n    mc:\n      samples: 8\n\
                    /robot/bayes_perception:\n  ros__parameters:\n    mc:\n      batch_size: 4\n\
                    other_node:\n  ros__parameters:\n    unrelated: 1\n";
        let p = Params::from_yaml(text, "t", "/robot/bayes_perception").unwrap();
        assert_eq!(p.mode, Mode::Mc);
        assert_eq!(
            p.mc,
            McParams {
                samples: 8,
                batch_size: 4,
                max_gpu_memory_mb: 0
            }
        );
        assert_eq!(p.device, "auto");
    }

    #[test]
    fn unknown_key_is_named() {
        let e = error_of("    mcsamples: 3\n");
        assert!(
            e.contains("`mcsamples`") && e.contains("expected one of") && e.contains("`mode`"),
            "{e}"
        );
        let e = error_of("    mc:\n      sample: 3\n");
        assert!(
            e.contains("`mc.sample`")
                && e.contains("expected one of `samples`, `batch_size`, `max_gpu_memory_mb`"),
            "{e}"
        );
    }

    #[test]
    fn bad_values_name_key_and_allowed_values() {
        let cases = [
            ("    mode: fast\n", "mode", "aleatoric"),
            (
                "    device: gpu\n",
                "device",
                "expected auto, cpu, cuda or cuda:N",
            ),
            (
                "    mode: mc\n    mc:\n      samples: 1\n",
                "mc.samples",
                "at least 2",
            ),
            (
                "    mc:\n      batch_size: 0\n",
                "mc.batch_size",
                "-1 (per device) or >= 1",
            ),
            (
                "    mc:\n      max_gpu_memory_mb: -512\n",
                "mc.max_gpu_memory_mb",
                "0 (no limit but the free memory)",
            ),
            ("    noise_samples: -3\n", "noise_samples", "0..=1000"),
            (
                "    moments:\n      head_samples: 1\n",
                "moments.head_samples",
                "2..=10000",
            ),
            ("    points:\n      stride: 0\n", "points.stride", "1..=64"),
            (
                "    points:\n      max_range_m: -1.0\n",
                "points.max_range_m",
                "0 (off)",
            ),
            ("    seed: -7\n", "seed", "-1"),
            ("    cpu_threads: -2\n", "cpu_threads", "0..=1024"),
            ("    cpu_threads: 4294967296\n", "cpu_threads", "0..=1024"),
            (
                "    colormap:\n      depth_max_m: -1.0\n",
                "colormap.depth_min_m",
                "must be below colormap.depth_max_m (-1)",
            ),
            (
                "    colormap:\n      depth_min_m: .nan\n",
                "colormap.depth_min_m",
                "not a finite number",
            ),
            (
                "    colormap:\n      depth_epistemic_max_m: 0.0\n",
                "colormap.depth_epistemic_max_m",
                "positive",
            ),
            (
                "    mc:\n      samples: ten\n",
                "mc.samples",
                "invalid type",
            ),
            (
                "    diagnostics:\n      drop_warn_fraction: -1.5\n",
                "diagnostics.drop_warn_fraction",
                "outside -1.0..=1.0 (below 0: by mode)",
            ),
            (
                "    diagnostics:\n      drop_warn_fraction: 1.5\n",
                "diagnostics.drop_warn_fraction",
                "outside -1.0..=1.0 (below 0: by mode)",
            ),
        ];
        for (body, key, allowed) in cases {
            let e = error_of(body);
            assert!(e.contains(key) && e.contains(allowed), "for {body:?}: {e}");
            assert!(e.starts_with("test.yaml"), "{e}");
        }
    }

    #[test]
    fn aleatoric_mode_accepts_one_sample() {
        assert_eq!(parse("    mc:\n      samples: 1\n").unwrap().mc.samples, 1);
    }

    #[test]
    fn entries_apply_to_nodes_as_in_rclcpp() {
        let front = "/front/bayes_perception";
        for pattern in [
            "/**",
            "**",
            "/front/bayes_perception",
            "front/bayes_perception",
            "/front/*",
            "/front/**",
            "/**/bayes_perception",
            "/*/bayes_perception",
            "/*/*",
        ] {
            assert!(node_name_matches(pattern, front), "{pattern}");
        }
        for pattern in [
            "bayes_perception",
            "/bayes_perception",
            "/rear/bayes_perception",
            "/*",
            "/front",
            "/front/*/*",
            "/front/bayes",
            "/*/*/*",
        ] {
            assert!(!node_name_matches(pattern, front), "{pattern}");
        }
        for pattern in [
            "/**",
            "bayes_perception",
            "/bayes_perception",
            "/*",
            "/**/*",
        ] {
            assert!(node_name_matches(pattern, ROOT_NODE), "{pattern}");
        }
        assert!(!node_name_matches("/*/bayes_perception", ROOT_NODE));
    }

    #[test]
    fn a_file_for_two_cameras_gives_each_node_its_entries() {
        let text = "/**:\n  ros__parameters:\n    mc:\n      samples: 8\n\
                    /front/bayes_perception:\n  ros__parameters:\n    mode: mc\n\
                    /rear/*:\n  ros__parameters:\n    mode: moments\n";
        let front = Params::from_yaml(text, "t", "/front/bayes_perception").unwrap();
        assert_eq!((front.mode, front.mc.samples), (Mode::Mc, 8));
        let rear = Params::from_yaml(text, "t", "/rear/bayes_perception").unwrap();
        assert_eq!((rear.mode, rear.mc.samples), (Mode::Moments, 8));
        let root = Params::from_yaml(text, "t", ROOT_NODE).unwrap();
        assert_eq!((root.mode, root.mc.samples), (Mode::Aleatoric, 8));
        // Namespaces as nested levels, as rcl reads them.
        let nested = "/**:\n  ros__parameters:\n    mc:\n      samples: 8\n\
                      front:\n  bayes_perception:\n    ros__parameters:\n      mode: mc\n";
        let front = Params::from_yaml(nested, "t", "/front/bayes_perception").unwrap();
        assert_eq!((front.mode, front.mc.samples), (Mode::Mc, 8));
        // A misspelt block is an error (rcl refuses the file), also in another node's entry.
        let misspelt = "/**:\n  ros__parameters:\n    mode: mc\n\
                        /front/bayes_perception:\n  ros_parameters:\n    mode: mc\n";
        let e = Params::from_yaml(misspelt, "t", ROOT_NODE)
            .unwrap_err()
            .to_string();
        assert!(
            e.contains(
                "`/front/bayes_perception/ros_parameters`: has no `ros__parameters:` block \
                 (`ros_parameters`: did you mean `ros__parameters`, with two underscores?)"
            ),
            "{e}"
        );
        // Without `/**`, the root node has no entry: the error names the others.
        let text = "/front/bayes_perception:\n  ros__parameters:\n    mode: mc\n\
                    rear/bayes_perception:\n  ros__parameters:\n    mode: mc\n";
        let e = Params::from_yaml(text, "t", ROOT_NODE)
            .unwrap_err()
            .to_string();
        assert!(
            e.contains("no entry with `ros__parameters:` for the node /bayes_perception")
                && e.contains("/front/bayes_perception, rear/bayes_perception")
                && e.contains("--node"),
            "{e}"
        );
    }

    #[test]
    fn another_nodes_keys_in_an_entry_for_every_node_are_passed_over() {
        // A camera driver's keys beside ours under `/**` (rclcpp passes over the overrides
        // a node does not declare): read, and taken out of the block.
        // Nested or dotted, a value and a group at once (rcl takes both), a key that is no
        // string (rcl names it `1`).
        let shared = "/**:\n  ros__parameters:\n    mode: mc\n    camera_name: front\n\
                      \x20   image_width: 640\n    camera:\n      fps: 30.0\n\
                      \x20   lens: 5\n    lens.k1: 0.1\n    1: one\n";
        let p = Params::from_yaml(shared, "t", ROOT_NODE).unwrap();
        assert_eq!(p.mode, Mode::Mc);
        let doc: serde_yaml::Value = serde_yaml::from_str(shared).unwrap();
        let mut block = doc["/**"]["ros__parameters"].as_mapping().unwrap().clone();
        assert_eq!(
            take_other_nodes_keys(&mut block),
            [
                "camera_name",
                "image_width",
                "camera.fps",
                "lens",
                "lens.k1",
                "1"
            ]
        );
        assert_eq!(block.keys().collect::<Vec<_>>(), ["mode"]);
        let warning = other_nodes_keys_warning(&["camera_name".into(), "camera.fps".into()]);
        assert!(
            warning
                .unwrap()
                .starts_with("`camera_name` and `camera.fps` passed over: not parameters of"),
            "one warning names them"
        );
        assert_eq!(other_nodes_keys_warning(&[]), None);
        // `/front/*` is an entry for any node in /front.
        let front = "/front/*:\n  ros__parameters:\n    camera_name: front\n";
        assert!(Params::from_yaml(front, "t", "/front/bayes_perception").is_ok());
        // What may be meant for this node is refused there too: a name of ours misspelt,
        // one under a group of ours, the client library's with a wrong type.
        for (key, named) in [
            ("mdoe: mc", "mdoe"),
            ("mc_samples: 3", "mc_samples"),
            ("mc:\n      sample: 3", "mc.sample"),
            ("points.foo: 1", "points.foo"),
            ("samples: 20", "samples"),
            ("transport: compressed", "transport"),
            ("speed: 1.0", "speed"),
            ("qos_overrides: 5", "qos_overrides"),
            ("use_sim_time: 1", "use_sim_time"),
            ("qos_override:\n      x: 1", "qos_override"),
        ] {
            let text = format!("/**:\n  ros__parameters:\n    {key}\n");
            let e = Params::from_yaml(&text, "t", ROOT_NODE)
                .unwrap_err()
                .to_string();
            assert!(e.contains(&format!("`{named}`")), "{key}: {e}");
        }
        // An entry that names this node takes no key it does not know.
        for entry in ["/**/bayes_perception", "bayes_perception"] {
            let text = format!("{entry}:\n  ros__parameters:\n    camera_name: front\n");
            let e = Params::from_yaml(&text, "t", ROOT_NODE)
                .unwrap_err()
                .to_string();
            assert!(e.contains("`camera_name`"), "{entry}: {e}");
        }
    }

    #[test]
    fn file_shape_errors() {
        let e = Params::from_yaml("mode: mc\n", "f.yaml", ROOT_NODE)
            .unwrap_err()
            .to_string();
        assert!(e.contains("ros__parameters"), "{e}");
        let e = Params::from_yaml("/**:\n  mode: mc\n", "f.yaml", ROOT_NODE)
            .unwrap_err()
            .to_string();
        assert!(e.contains("no `ros__parameters:` block"), "{e}");
        let e = Params::from_yaml("[1, 2]", "f.yaml", ROOT_NODE)
            .unwrap_err()
            .to_string();
        assert!(e.contains("expected a mapping"), "{e}");
    }

    /// image_proc's rectified topics with `points.rectified: false` are doubted; raw ones,
    /// names that only contain "rect" elsewhere, and a cloud set up for them are not.
    #[test]
    fn a_rectified_topic_name_with_raw_points_is_doubted() {
        let raw = PointsParams::default();
        for topic in [
            "/cam/image_rect",
            "/cam/image_rect_color/compressed",
            "/stereo/left/image_rect_raw",
            "/front/color_rect",
        ] {
            let doubt = raw.doubt_for_topic(topic);
            assert!(
                doubt.as_deref().is_some_and(|d| d.contains(topic)),
                "{topic}: {doubt:?}"
            );
        }
        for topic in [
            "/cam/image_raw",
            "/direct/image_raw",
            "/cam/rectangle/image",
        ] {
            assert_eq!(raw.doubt_for_topic(topic), None, "{topic}");
        }
        let rectified = PointsParams {
            rectified: true,
            ..PointsParams::default()
        };
        let disabled = PointsParams {
            enabled: false,
            ..PointsParams::default()
        };
        assert_eq!(rectified.doubt_for_topic("/cam/image_rect"), None);
        assert_eq!(disabled.doubt_for_topic("/cam/image_rect"), None);
    }
}

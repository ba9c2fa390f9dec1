//! Every command and flag of the `bayes_perception` binary; the doc comments are the help.

use std::path::PathBuf;

use clap::{Args, Parser, Subcommand};

use bayes_perception::config::{Mode, Precision};

/// Bayesian semantic segmentation and depth with separate aleatoric and epistemic
/// uncertainty (FC-DenseNet + MC dropout).
#[derive(Debug, Parser)]
#[command(name = "bayes_perception", version, long_version = crate::cmd::doctor::LONG_VERSION)]
pub struct Cli {
    /// More log output (-v info, -vv debug); RUST_LOG overrides.
    #[arg(short, long, global = true, action = clap::ArgAction::Count)]
    pub verbose: u8,
    #[command(subcommand)]
    pub command: Command,
}

#[derive(Debug, Subcommand)]
pub enum Command {
    /// Run a model on images and write labels, depth and uncertainty images.
    Infer(InferArgs),
    /// Measure speed and memory of a random-weight model on synthetic frames.
    Bench(BenchArgs),
    /// Print the libtorch version, CUDA/cuDNN availability and thread count.
    Doctor,
    /// Work on rosbag2 files (MCAP or SQLite3) without ROS.
    #[command(subcommand)]
    Bag(BagCommand),
    /// Model directories.
    #[command(subcommand)]
    Model(ModelCommand),
    /// Render synthetic street scenes with exact labels and depth (CamVid layout + depth).
    Synth(SynthArgs),
    /// Train a model with the paper's losses (see config/train.yaml).
    Train(TrainArgs),
    /// Accuracy and uncertainty quality of a model on a labelled split (CamVid layout).
    Eval(Box<EvalArgs>),
}

#[derive(Debug, Args)]
#[command(group(
    clap::ArgGroup::new("input")
        .required(true)
        .args(["data", "bag", "merge", "merge_list"])
))]
pub struct EvalArgs {
    #[command(flatten)]
    pub run: RunArgs,
    /// Dataset root in the CamVid layout (SPLIT/, SPLITannot/, optional SPLITdepth/,
    /// SPLITnoise/, SPLITood/).
    #[arg(long, conflicts_with = "bag")]
    pub data: Option<PathBuf>,
    /// A labelled bag instead of --data: camera frames with their ground truth as
    /// NS/ground_truth/{labels, depth, noise_mask, ood_mask} topics (see the README; `synth
    /// --bag` writes such bags).
    #[arg(long, conflicts_with = "compare")]
    pub bag: Option<PathBuf>,
    /// The camera topic of --bag, where it has several labelled cameras.
    #[arg(long, requires = "bag")]
    pub topic: Option<String>,
    #[arg(long, default_value = "test")]
    pub split: String,
    /// Evaluate at most this many images (0 = all).
    #[arg(long, default_value_t = 0)]
    pub max_images: usize,
    /// Also write the report as JSON (not with --compare, which writes compare.json in
    /// --out).
    #[arg(long, conflicts_with = "compare")]
    pub json: Option<PathBuf>,
    /// Write the whole report into this directory: report.json, report.md, a CSV and a
    /// PNG chart per curve, and contact sheets.
    #[arg(long)]
    pub out: Option<PathBuf>,
    /// Contact sheets of the first N frames in the --out report.
    #[arg(long, default_value_t = 3)]
    pub sheets: usize,
    /// The paper's comparison: the model and --baseline, each in aleatoric and mc mode,
    /// on --split and --ood-split; one table (compare.md) plus a report per set-up in
    /// --out.
    #[arg(long, requires_all = ["baseline", "out"])]
    pub compare: bool,
    /// The homoscedastic baseline model of --compare (trained with
    /// `loss.homoscedastic: true`).
    #[arg(long)]
    pub baseline: Option<PathBuf>,
    /// The OOD split of --compare (skipped if the data has none).
    #[arg(long, default_value = "ood")]
    pub ood_split: String,
    /// Also run MC dropout with T samples on every frame and report how closely this
    /// mode's maps follow it (Spearman rank correlation per map): the validation of
    /// `--mode moments`.
    #[arg(long, value_name = "T", conflicts_with = "compare")]
    pub agreement_with_mc: Option<i64>,
    /// Also write the evaluation's mergeable state (counts and histograms) to FILE, for
    /// `--merge` (evaluations of parts of the data, on one machine or many).
    #[arg(long, value_name = "FILE", conflicts_with_all = ["compare", "merge", "merge_list"])]
    pub state: Option<PathBuf>,
    /// Run no model: merge these state files (`--state`) of disjoint parts of the data into
    /// one report, the same as one evaluation of all of them (printed, `--json`, `--out`).
    #[arg(long, value_name = "STATE", num_args = 1.., conflicts_with_all = ["compare", "agreement_with_mc"])]
    pub merge: Vec<PathBuf>,
    /// `--merge` with the state files listed in FILE, one path per line (for more than a
    /// command line holds: a fleet's thousands of bags); relative paths are taken from the
    /// current directory, as on the command line.
    #[arg(long, value_name = "FILE", conflicts_with_all = ["compare", "agreement_with_mc"])]
    pub merge_list: Option<PathBuf>,
    /// Score depth only where the ground truth is nearer than this many metres (farther
    /// pixels count as having no depth), e.g. 70 for Make3D as the paper evaluates it.
    #[arg(long, value_name = "METRES", conflicts_with_all = ["merge", "merge_list"], value_parser = positive_metres)]
    pub max_depth: Option<f32>,
}

/// A positive, finite distance in metres.
fn positive_metres(text: &str) -> Result<f32, String> {
    match text.parse::<f32>() {
        Ok(m) if m.is_finite() && m > 0.0 => Ok(m),
        Ok(_) => Err("expected a positive number of metres".into()),
        Err(e) => Err(e.to_string()),
    }
}

#[derive(Debug, Args)]
pub struct TrainArgs {
    /// Training config (YAML, see config/train.yaml).
    #[arg(long)]
    pub config: PathBuf,
    /// auto, cpu, cuda or cuda:N; overrides `training.device`.
    #[arg(long)]
    pub device: Option<String>,
    /// Overrides `training.epochs`.
    #[arg(long)]
    pub epochs: Option<usize>,
    /// Continue from the run directory's last/ checkpoint.
    #[arg(long)]
    pub resume: bool,
}

#[derive(Debug, Args)]
pub struct SynthArgs {
    /// Output directory (the dataset root).
    #[arg(long)]
    pub out: PathBuf,
    /// Number of scenes.
    #[arg(long)]
    pub count: u32,
    /// Seed; the same seed and split give the same scenes.
    #[arg(long, default_value_t = 0)]
    pub seed: u64,
    /// Split name: writes SPLIT/, SPLITannot/, SPLITdepth/, SPLITnoise/ (and SPLITood/).
    #[arg(long, default_value = "train")]
    pub split: String,
    /// Out-of-distribution scenes: add objects never seen in normal scenes (masked in SPLITood/).
    #[arg(long)]
    pub ood: bool,
    /// Write one labelled bag (MCAP, 10 frames/s) at --out instead of the CamVid layout:
    /// /camera/image_raw (rgb8), /camera/camera_info and the ground truth under
    /// /camera/ground_truth/ (labels, depth, noise_mask and with --ood ood_mask), for
    /// `eval --bag`.
    #[arg(long)]
    pub bag: bool,
    #[arg(long, default_value_t = 480)]
    pub width: u32,
    #[arg(long, default_value_t = 360)]
    pub height: u32,
    /// Standard deviation range LO,HI (8-bit grey levels) of the sensor-noise patches
    /// (aleatoric test regions, masked in SPLITnoise/); each patch draws from it.
    #[arg(
        long,
        value_name = "LO,HI",
        value_delimiter = ',',
        default_value = "60,130"
    )]
    pub noise_sigma: Vec<f32>,
}

#[derive(Debug, Subcommand)]
pub enum BagCommand {
    /// Run the model on every camera frame of a bag and write a bag with all node outputs.
    Process(Box<BagProcessArgs>),
    /// Topics, types, counts and duration of a bag, like `ros2 bag info`.
    Info(BagInfoArgs),
    /// Write a small synthetic camera bag (test pattern) for trying the tools.
    Sample(BagSampleArgs),
}

#[derive(Debug, Args)]
pub struct BagProcessArgs {
    /// Input: a rosbag2 directory (metadata.yaml + files) or a single .mcap / .db3 file.
    pub input: PathBuf,
    /// Output rosbag2 directory (MCAP storage); must not exist unless --force.
    pub output: PathBuf,
    #[command(flatten)]
    pub run: RunArgs,
    /// Camera topic to process (repeatable); default: every Image and CompressedImage topic.
    #[arg(long = "topic")]
    pub topics: Vec<String>,
    /// The camera_info topic of each camera, in the order of --topic (repeatable; with one
    /// camera, its camera_info); default: `camera_info` beside each camera topic
    /// (`/cam/image_raw` -> `/cam/camera_info`).
    #[arg(long = "camera-info", value_name = "TOPIC")]
    pub camera_infos: Vec<String>,
    /// Also copy this topic, of any type, unchanged (repeatable): `/tf` and `/tf_static`
    /// for RViz, other sensors for a replay with the rest of the stack. Its messages in
    /// --start/--duration are copied (all of them: --every samples camera frames only), and
    /// of a latched topic (recorded with durability transient_local: `/tf_static`) those
    /// before the window too.
    #[arg(long = "copy", value_name = "TOPIC")]
    pub copy: Vec<String>,
    /// Copy every topic that is not processed, as --copy does (a topic named like one of
    /// the outputs is not copied: said). With --exclude-regex, --copy brings back a topic
    /// it leaves out.
    #[arg(long, conflicts_with = "copy_regex")]
    pub copy_all: bool,
    /// Also copy, as --copy does, every topic whose name this regular expression matches
    /// (anywhere in the name, as grep: anchor it with ^ and $; repeatable). Those copied
    /// are listed at the start.
    #[arg(long = "copy-regex", value_name = "REGEX", allow_hyphen_values = true)]
    pub copy_regex: Vec<String>,
    /// Leave out of --copy-all and --copy-regex the topics this regular expression matches
    /// (repeatable; topics --copy names are copied still).
    #[arg(
        long = "exclude-regex",
        value_name = "REGEX",
        allow_hyphen_values = true
    )]
    pub exclude_regex: Vec<String>,
    /// Skip this many seconds from the start of the bag.
    #[arg(long, default_value_t = 0.0, allow_negative_numbers = true)]
    pub start: f64,
    /// Only this many seconds (from --start; the window holds messages logged at its end,
    /// so 0 takes those logged at --start exactly).
    #[arg(long, allow_negative_numbers = true)]
    pub duration: Option<f64>,
    /// Process every N-th frame of each camera topic (all frames are still copied).
    #[arg(long, default_value_t = 1)]
    pub every: u64,
    /// Replace OUTPUT if it exists.
    #[arg(long)]
    pub force: bool,
    /// Begin a new storage file (`OUTPUT_1.mcap`, ..) once one holds this many bytes, as
    /// `ros2 bag record --max-bag-size` does; 0: one file, however large. Files end between
    /// frames, so one can pass it by about a frame's outputs (or 1 MiB of copies of frames
    /// not processed). The default, 4 GiB, also bounds the writer's memory on long runs (it
    /// keeps an index entry per chunk until its file is finished; with a limit, a file also
    /// ends after 16 384 chunks).
    #[arg(long, value_name = "BYTES", default_value_t = bayes_perception::bag::DEFAULT_MAX_FILE_BYTES)]
    pub max_bag_size: u64,
    /// Also write a summary of the run as JSON: status (ok, damaged, interrupted, frames
    /// failed, read failed, retry, error), exit code, frames read/processed/skipped/failed
    /// by reason, timing, output size.
    #[arg(long, value_name = "FILE")]
    pub json: Option<PathBuf>,
}

#[derive(Debug, Args)]
pub struct BagInfoArgs {
    /// A rosbag2 directory or a single .mcap / .db3 file.
    pub path: PathBuf,
}

#[derive(Debug, Args)]
pub struct BagSampleArgs {
    /// Output rosbag2 directory (MCAP storage); must not exist.
    pub output: PathBuf,
    /// Frames to write.
    #[arg(long, default_value_t = 30)]
    pub frames: u32,
    #[arg(long, default_value_t = 360)]
    pub height: u32,
    #[arg(long, default_value_t = 480)]
    pub width: u32,
    /// Frames per second (spacing of the stamps).
    #[arg(long, default_value_t = 10.0)]
    pub fps: f64,
    /// Raw image encoding: rgb8, bgr8, rgba8, bgra8 or mono8.
    #[arg(long, default_value = "bgr8")]
    pub encoding: String,
    /// Write JPEG CompressedImage (colour) on `<topic>/compressed` instead of raw images;
    /// not with --encoding.
    #[arg(long, conflicts_with = "encoding")]
    pub compressed: bool,
    /// Camera image topic (camera_info goes next to it).
    #[arg(long, default_value = "/camera/image_raw")]
    pub topic: String,
}

#[derive(Debug, Subcommand)]
pub enum ModelCommand {
    /// Write a model directory with random weights (for trying the pipeline and timing;
    /// its outputs mean nothing).
    Init(ModelInitArgs),
    /// Load the params (file and overrides) and the model as a run would, and say what
    /// would run; nothing is processed (settings checked before a launch or a fleet run).
    Check(RunArgs),
}

#[derive(Debug, Args)]
pub struct ModelInitArgs {
    /// Output directory (created).
    #[arg(long)]
    pub out: PathBuf,
    /// Network preset: fcdensenet56, fcdensenet67 or fcdensenet103.
    #[arg(long, default_value = "fcdensenet56")]
    pub arch: String,
    /// Semantic classes (0 = no semantic head).
    #[arg(long, default_value_t = 11)]
    pub classes: usize,
    /// Leave out the depth head.
    #[arg(long)]
    pub no_depth: bool,
    /// Native input height and width.
    #[arg(long, default_value_t = 360)]
    pub height: i64,
    #[arg(long, default_value_t = 480)]
    pub width: i64,
    /// Seed for the random weights.
    #[arg(long, default_value_t = 0)]
    pub seed: i64,
}

/// The model and parameters a command runs the engine with.
#[derive(Debug, Args)]
pub struct RunArgs {
    /// Model directory (model.yaml + model.safetensors); defaults to the params file's `model`.
    #[arg(long)]
    pub model: Option<PathBuf>,
    /// Params file (ROS 2 format, see config/params.yaml); defaults apply without one.
    #[arg(long)]
    pub config: Option<PathBuf>,
    /// Read the params file's entries for this node, as ROS would give them to it (`/**`,
    /// its name, wildcards), e.g. /front/bayes_perception for one camera's node.
    #[arg(long, default_value = bayes_perception::config::ROOT_NODE, requires = "config")]
    pub node: String,
    #[command(flatten)]
    pub overrides: Overrides,
}

/// Settings that override the params file for one run.
#[derive(Debug, Default, Args)]
pub struct Overrides {
    /// aleatoric (one pass), moments (one pass of means and variances, approximate
    /// epistemic) or mc (MC dropout sampling); overrides `mode`.
    #[arg(long)]
    pub mode: Option<Mode>,
    /// auto, cpu, cuda or cuda:N; overrides `device`.
    #[arg(long)]
    pub device: Option<String>,
    /// fp32, fp16 or bf16 (the network's number format); overrides `precision`.
    #[arg(long)]
    pub precision: Option<Precision>,
    /// Run the network channels-last (`--channels-last`, or `--channels-last=false`);
    /// overrides `channels_last`.
    #[arg(long, num_args = 0..=1, require_equals = true, default_missing_value = "true")]
    pub channels_last: Option<bool>,
    /// MC samples T; overrides `mc.samples`.
    #[arg(long)]
    pub samples: Option<i64>,
    /// Head draws in moments mode; overrides `moments.head_samples`.
    #[arg(long)]
    pub head_samples: Option<i64>,
    /// closed_form or linearized (moments mode); overrides `moments.rules`.
    #[arg(long)]
    pub rules: Option<bayes_perception::moments::Rules>,
    /// MC passes per batched forward (-1 = per device); overrides `mc.batch_size`.
    #[arg(long, allow_negative_numbers = true)]
    pub batch_size: Option<i64>,
    /// Seed for dropout masks and logit noise (-1 = unseeded); overrides `seed`.
    #[arg(long, allow_negative_numbers = true)]
    pub seed: Option<i64>,
}

#[derive(Debug, Args)]
pub struct InferArgs {
    #[command(flatten)]
    pub run: RunArgs,
    /// Output directory; each input gets a subdirectory named after it.
    #[arg(long)]
    pub out: PathBuf,
    /// Append a colour bar with the value range under each false-colour PNG.
    #[arg(long)]
    pub colorbar: bool,
    /// Also write contact_sheet.png: input, labels, depth, confidence and the four
    /// uncertainty images.
    #[arg(long)]
    pub contact_sheet: bool,
    /// Also write points.ply: the uncertainty point cloud (binary PLY: x y z, colour,
    /// label, the four uncertainties) from the depth and --camera-info, with the params
    /// file's `points.*` settings.
    #[arg(long, requires = "camera_info")]
    pub points: bool,
    /// The camera's calibration file (ROS camera_calibration YAML: image_width,
    /// image_height, camera_matrix, optionally distortion_model, distortion_coefficients
    /// and projection_matrix) for --points; scaled to each image's size. Its lens
    /// distortion is undone unless the params file sets `points.rectified: true`.
    #[arg(long, value_name = "FILE")]
    pub camera_info: Option<PathBuf>,
    /// Images (PNG, JPEG, TIFF, BMP, WebP, PNM, GIF) or directories of them.
    #[arg(required = true)]
    pub inputs: Vec<PathBuf>,
}

#[derive(Debug, Args)]
pub struct BenchArgs {
    /// Network preset: fcdensenet56, fcdensenet67 or fcdensenet103.
    #[arg(long, default_value = "fcdensenet56")]
    pub arch: String,
    /// Frame height in pixels, also the random model's native size (padded inside to a
    /// multiple of 32, as any input is).
    #[arg(long, default_value_t = 360)]
    pub height: i64,
    /// Frame width in pixels (padded inside like the height).
    #[arg(long, default_value_t = 480)]
    pub width: i64,
    /// aleatoric, moments or mc.
    #[arg(long, default_value = "aleatoric")]
    pub mode: Mode,
    /// MC samples T (mc mode).
    #[arg(long, default_value_t = 50)]
    pub samples: usize,
    /// Draws of the semantic head's propagated distribution (moments mode).
    #[arg(long, default_value_t = 20)]
    pub head_samples: usize,
    /// closed_form or linearized: how ReLUs and max-pools transform a Gaussian (moments
    /// mode).
    #[arg(long, default_value = "closed_form")]
    pub rules: bayes_perception::moments::Rules,
    /// MC passes per batched forward; default per device.
    #[arg(long)]
    pub batch_size: Option<usize>,
    /// Without --batch-size on CUDA: MC chunks sized to keep the tensors under this many
    /// MiB (0 = the device's free memory).
    #[arg(long, default_value_t = 0)]
    pub max_gpu_memory_mb: u64,
    /// Logit-noise draws per frame (shared by its MC samples).
    #[arg(long, default_value_t = 10)]
    pub noise_samples: usize,
    /// Semantic classes of the random model (0 = no semantic head).
    #[arg(long, default_value_t = 11)]
    pub classes: usize,
    /// Leave out the depth head.
    #[arg(long)]
    pub no_depth: bool,
    /// auto, cpu, cuda or cuda:N.
    #[arg(long, default_value = "auto")]
    pub device: String,
    /// fp32, fp16 or bf16: the network's number format.
    #[arg(long, default_value = "fp32")]
    pub precision: Precision,
    /// Run the network channels-last (NHWC in memory).
    #[arg(long)]
    pub channels_last: bool,
    /// Experimental, CUDA only: run the deterministic pass (aleatoric mode) as a captured
    /// CUDA graph.
    #[arg(long)]
    pub cuda_graphs: bool,
    /// CUDA: copy the outputs to pageable host memory instead of the page-locked buffer
    /// (to measure what pinning gains).
    #[arg(long)]
    pub pageable_download: bool,
    /// CUDA: leave cuDNN's search for the fastest algorithm of each shape off (on by
    /// default, as in the node; to measure what it gains).
    #[arg(long)]
    pub no_cudnn_benchmark: bool,
    /// Experimental: colour the false-colour messages (uncertainty images, labels) on the
    /// device and bring them to the host with the other outputs, instead of colouring on
    /// the host (the same bytes).
    #[arg(long)]
    pub device_colors: bool,
    /// Also encode every compressed twin of the node's outputs (`TOPIC/compressed`: labels
    /// as PNG, colour images as JPEG of quality 80, the node's default) in the host outputs,
    /// as the node does while each has a subscriber.
    #[arg(long)]
    pub compressed_twins: bool,
    /// Also time the frames with the network of one and the output messages of the
    /// previous one on two threads at once, as the node runs them (reported as
    /// overlapped frames/s).
    #[arg(long)]
    pub overlap: bool,
    /// libtorch CPU threads, 0..=1024 (0 = libtorch default).
    #[arg(long, default_value_t = 0)]
    pub threads: usize,
    /// Timed frames.
    #[arg(long, default_value_t = 10)]
    pub frames: usize,
    /// Untimed frames first (allocator and kernel warm-up).
    #[arg(long, default_value_t = 1)]
    pub warmup: usize,
    /// Stride of the point cloud built (and timed) from every frame (depth models).
    #[arg(long, default_value_t = 1)]
    pub points_stride: u32,
    /// Camera calibration file (YAML, as ROS's camera calibration writes it) for the
    /// timed point cloud, scaled to the frame: its K and lens distortion (raw images)
    /// instead of a pinhole of focal length 0.8 x width.
    #[arg(long)]
    pub camera_info: Option<PathBuf>,
    /// Print one JSON object instead of text.
    #[arg(long)]
    pub json: bool,
}

#[cfg(test)]
mod tests {
    use super::*;
    use bayes_perception::synth::SceneConfig;

    #[test]
    fn synth_noise_default_is_the_scenes_default() {
        let cli = Cli::try_parse_from(["bayes_perception", "synth", "--out", "x", "--count", "1"])
            .unwrap();
        let Command::Synth(args) = cli.command else {
            unreachable!("parsed as synth")
        };
        let (lo, hi) = SceneConfig::NOISE_SIGMA;
        assert_eq!(args.noise_sigma, [lo, hi]);
    }

    fn parse(args: &[&str]) -> Result<Cli, clap::Error> {
        Cli::try_parse_from(["bayes_perception"].iter().chain(args))
    }

    /// `--channels-last` takes a value only after `=`: the word after it is an input.
    #[test]
    fn channels_last_does_not_take_the_next_word() {
        let infer = |args: &[&str]| match parse(args).unwrap().command {
            Command::Infer(a) => (a.run.overrides.channels_last, a.inputs),
            _ => unreachable!("parsed as infer"),
        };
        let base = ["infer", "--model", "m", "--out", "o"];
        let with = |extra: &[&str]| infer(&[&base[..], extra].concat());
        assert_eq!(
            with(&["--channels-last", "a.png"]),
            (Some(true), vec!["a.png".into()])
        );
        assert_eq!(
            with(&["--channels-last=false", "a.png"]),
            (Some(false), vec!["a.png".into()])
        );
        assert_eq!(with(&["a.png"]), (None, vec!["a.png".into()]));
    }

    /// eval needs one input: --data, --bag or --merge, and takes only one of them.
    #[test]
    fn eval_takes_exactly_one_input() {
        let eval = |extra: &[&str]| parse(&[&["eval", "--model", "m"][..], extra].concat());
        let err = eval(&[]).unwrap_err().to_string();
        assert!(
            err.contains("--data <DATA>|--bag <BAG>|--merge <STATE>"),
            "{err}"
        );
        assert!(eval(&["--data", "d"]).is_ok());
        assert!(eval(&["--bag", "b"]).is_ok());
        assert!(eval(&["--merge", "a.json", "b.json"]).is_ok());
        assert!(eval(&["--merge-list", "states.txt"]).is_ok());
        for both in [
            &["--data", "d", "--bag", "b"][..],
            &["--merge", "a.json", "--data", "d"],
            &["--bag", "b", "--merge", "a.json"],
            &["--merge", "a.json", "--merge-list", "states.txt"],
            &["--merge-list", "states.txt", "--state", "s.json"],
            &["--merge-list", "states.txt", "--max-depth", "70"],
        ] {
            assert!(eval(both).is_err(), "{both:?}");
        }
    }
}

//! The training loop: a YAML config in, model directories out (`best/` and `last/` in the
//! engine's format), with a per-epoch validation summary appended to `metrics.csv`.
//!
//! Losses: the logit-noise semantic loss and the heteroscedastic depth loss of Kendall &
//! Gal; weight decay is the prior. RMSProp or Adam with exponential decay per epoch,
//! random crops and flips, early stopping on validation mean IoU (or depth rel for
//! depth-only models), a checkpoint on interruption, and an exact resume from `last/`
//! (the optimiser's state is saved with it, and each batch draws from its own seed).

use std::collections::BTreeMap;
use std::io::Write;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::Instant;

use rand::seq::SliceRandom;
use rand::{RngCore, SeedableRng};
use rand_chacha::ChaCha8Rng;
use serde::{Deserialize, Serialize};
use tch::{Device, Kind, Tensor};

use super::data::{make_batch, Augment, Dataset};
use super::examples::{decoded_bytes, hold, memory_available, Examples, InMemory};
use super::loss::{cross_entropy, depth_l1, depth_loss, median_frequency_weights, semantic_loss};
use super::metrics::{Confusion, DepthErrors};
use super::optim::{Optimizer, Rule};
use crate::device::{device_name, DeviceRequest};
use crate::engine::pad_to_multiple;
use crate::error::{Error, Result};
use crate::model::{
    Architecture, DepthTask, InputSpec, Likelihood, Model, ModelSpec, Pass, SemanticTask, Tasks,
    FORMAT_VERSION,
};
use crate::text_file::{read_limited, MAX_CONFIG_BYTES};

/// `train.yaml`; see config/train.yaml for every key with comments.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct TrainConfig {
    pub data: DataConfig,
    pub model: ModelConfig,
    #[serde(default)]
    pub loss: LossConfig,
    #[serde(default)]
    pub optimizer: OptimizerSettings,
    pub training: TrainingSettings,
    pub output: OutputConfig,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct DataConfig {
    /// `camvid`, `nyuv2` or `generic`.
    pub layout: String,
    /// Dataset root (camvid, nyuv2) or the layout YAML (generic); relative to the config.
    pub root: PathBuf,
    #[serde(default = "default_train_split")]
    pub train_split: String,
    #[serde(default = "default_val_split")]
    pub val_split: String,
    /// Validate on at most this many images (0 = all).
    #[serde(default)]
    pub val_max_images: usize,
    /// Hold the decoded examples in memory (`auto`: when both splits take at most half the
    /// memory available), or read them from disk for each batch (`never`).
    #[serde(default)]
    pub in_memory: InMemory,
}

fn default_train_split() -> String {
    "train".into()
}

fn default_val_split() -> String {
    "val".into()
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ModelConfig {
    pub name: String,
    /// Preset or custom shape, as in model.yaml.
    pub architecture: Architecture,
    /// `semantic`, `depth` or both (each needs matching data).
    pub tasks: Vec<String>,
    #[serde(default = "default_likelihood")]
    pub likelihood: Likelihood,
    /// Metres per unit of the depth head (see model.yaml `unit_m`); ~ a typical depth.
    #[serde(default = "default_depth_unit")]
    pub depth_unit_m: f64,
}

fn default_depth_unit() -> f64 {
    1.0
}

fn default_likelihood() -> Likelihood {
    Likelihood::Gaussian
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct LossConfig {
    /// Logit-noise draws in the semantic loss.
    pub noise_samples: usize,
    /// `none` or `median_frequency`.
    pub class_weights: String,
    /// Weight of the depth loss against the semantic loss.
    pub depth_weight: f64,
    /// The paper's baseline: plain cross-entropy and L1, variance heads untrained (the
    /// model then reports no learned aleatoric uncertainty).
    pub homoscedastic: bool,
}

impl Default for LossConfig {
    fn default() -> Self {
        LossConfig {
            noise_samples: 10,
            class_weights: "none".into(),
            depth_weight: 1.0,
            homoscedastic: false,
        }
    }
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct OptimizerSettings {
    /// `rmsprop` or `adam`.
    pub kind: String,
    pub lr: f64,
    /// Learning rate factor per epoch.
    pub lr_decay: f64,
    /// L2 weight decay (the prior).
    pub weight_decay: f64,
}

impl Default for OptimizerSettings {
    fn default() -> Self {
        OptimizerSettings {
            kind: "rmsprop".into(),
            lr: 1e-3,
            lr_decay: 0.995,
            weight_decay: 1e-4,
        }
    }
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct TrainingSettings {
    pub epochs: usize,
    pub batch_size: usize,
    /// Random crop [height, width]; [0, 0] trains on full frames (fine-tuning).
    #[serde(default = "default_crop")]
    pub crop: [u32; 2],
    #[serde(default = "default_true")]
    pub flip: bool,
    #[serde(default)]
    pub color_jitter: f64,
    /// Stop after this many epochs without a better validation score (0 = never).
    #[serde(default)]
    pub early_stopping: usize,
    /// Stop after this many minutes of training, every resumed part counted (0 = no limit).
    #[serde(default)]
    pub max_minutes: f64,
    /// Train with weights and activations channels-last (NHWC in memory); the saved model
    /// is the same either way. On the 2-core development VM's CPU 1.2-1.5x faster.
    #[serde(default)]
    pub channels_last: bool,
    #[serde(default)]
    pub seed: u64,
    #[serde(default = "default_device")]
    pub device: String,
}

fn default_crop() -> [u32; 2] {
    [224, 224]
}

fn default_true() -> bool {
    true
}

fn default_device() -> String {
    "auto".into()
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct OutputConfig {
    /// Run directory: best/, last/, metrics.csv (relative to the config file).
    pub dir: PathBuf,
    /// Continue from dir/last if it exists.
    #[serde(default)]
    pub resume: bool,
}

/// Where training stands; saved next to the `last/` checkpoint, with the optimiser's state
/// in `optimizer.safetensors`. With both, a resumed run takes the very steps the
/// uninterrupted run would have (each batch draws from its own seed, [`batch_rng`]).
#[derive(Debug, Clone, Default, Serialize, Deserialize)]
struct TrainState {
    /// Epochs completed.
    epoch: usize,
    best_score: Option<f64>,
    epochs_since_best: usize,
    /// Batches of the next epoch already trained (a checkpoint taken mid-epoch), and the
    /// sum and count of their finite losses.
    #[serde(default)]
    batches_done: usize,
    #[serde(default)]
    loss_sum: f64,
    #[serde(default)]
    loss_count: usize,
    /// Batches of the next epoch whose loss was not finite (not stepped).
    #[serde(default)]
    nonfinite_batches: usize,
    /// Batches not stepped since the last one that was (the loss or its gradients not
    /// finite): an epoch that ends among them is not saved, resumed or not.
    #[serde(default)]
    trailing_nonfinite: usize,
    /// Optimiser steps taken; `optimizer.safetensors` of another count is not this state.
    #[serde(default)]
    steps: u64,
    /// Training time so far, of every part of the run (metrics.csv and
    /// `training.max_minutes` count it).
    #[serde(default)]
    seconds: f64,
    /// Batch size, seed and number of training images: what orders the batches.
    #[serde(default)]
    batching: (usize, u64, usize),
}

/// Batches in a row whose loss is not finite after which a run stops: the model is not
/// coming back.
const MAX_NONFINITE_IN_A_ROW: usize = 20;

/// Why a run stopped.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Stop {
    /// `training.epochs` done.
    Epochs,
    /// `training.early_stopping` epochs without a better validation score.
    EarlyStopping,
    /// `training.max_minutes` of training, every resumed part counted.
    TimeLimit,
    /// Asked to stop (Ctrl-C, SIGTERM); `last/` holds where it stood.
    Interrupted,
}

/// The name of the optimiser state file next to a checkpoint.
const OPTIMIZER_FILE: &str = "optimizer.safetensors";

/// The random draws of one batch: its crops, flips and colour jitter, and (through the
/// libtorch seed drawn first) its dropout masks and logit noise. A batch's draws depend on
/// the seed, the epoch and its index alone, so a run resumed at any batch repeats none and
/// skips none.
fn batch_rng(seed: u64, epoch: usize, batch: usize) -> ChaCha8Rng {
    let mut key = [0u8; 32];
    key[..8].copy_from_slice(&seed.to_le_bytes());
    key[8..16].copy_from_slice(&(epoch as u64).to_le_bytes());
    key[16..24].copy_from_slice(&(batch as u64).to_le_bytes());
    let mut rng = ChaCha8Rng::from_seed(key);
    tch::manual_seed((rng.next_u64() >> 1) as i64);
    rng
}

/// One epoch's validation figures.
#[derive(Debug, Clone, Default, Serialize, Deserialize)]
pub struct Validation {
    pub mean_iou: Option<f64>,
    pub pixel_accuracy: Option<f64>,
    pub depth_rel: Option<f64>,
    pub depth_rms: Option<f64>,
}

impl Validation {
    /// Higher is better: mean IoU when the model segments, else −depth rel.
    fn score(&self) -> f64 {
        self.mean_iou
            .unwrap_or_else(|| -self.depth_rel.unwrap_or(f64::INFINITY))
    }
}

/// What the caller sees as training goes (progress bars in the CLI).
pub trait Progress {
    /// Called once the data is loaded, before the first epoch.
    fn started(&mut self, summary: &str);
    /// `done` of the `batches` were trained before a resume.
    fn epoch_started(&mut self, epoch: usize, batches: usize, done: usize);
    /// One batch: its loss (NaN for a batch not stepped, its loss or gradients not finite),
    /// and how many images it took in how many seconds.
    fn batch_done(&mut self, loss: f64, images: usize, seconds: f64);
    fn epoch_done(&mut self, epoch: usize, train_loss: f64, validation: &Validation, lr: f64);
}

impl TrainConfig {
    /// Reads the YAML; relative paths become relative to the file.
    pub fn load(path: &Path) -> Result<Self> {
        let text = read_limited(path, MAX_CONFIG_BYTES).map_err(|e| Error::io(path, e))?;
        let origin = path.display().to_string();
        let mut cfg: TrainConfig =
            serde_path_to_error::deserialize(serde_yaml::Deserializer::from_str(&text))
                .map_err(|e| Error::deserialize(&origin, e))?;
        let base = path.parent().unwrap_or(Path::new("."));
        cfg.data.root = base.join(&cfg.data.root);
        cfg.output.dir = base.join(&cfg.output.dir);
        cfg.validate(&origin)?;
        Ok(cfg)
    }

    fn validate(&self, origin: &str) -> Result<()> {
        let err = |key: &str, m: String| Err(Error::config(origin, key, m));
        if !(self.model.depth_unit_m.is_finite() && self.model.depth_unit_m > 0.0) {
            return err(
                "model.depth_unit_m",
                format!(
                    "{} must be a positive number of metres",
                    self.model.depth_unit_m
                ),
            );
        }
        if !["camvid", "nyuv2", "generic"].contains(&self.data.layout.as_str()) {
            return err(
                "data.layout",
                format!("`{}`; expected camvid, nyuv2 or generic", self.data.layout),
            );
        }
        if self.model.tasks.is_empty()
            || self
                .model
                .tasks
                .iter()
                .any(|t| t != "semantic" && t != "depth")
        {
            return err(
                "model.tasks",
                format!("{:?}; expected semantic, depth or both", self.model.tasks),
            );
        }
        self.model
            .architecture
            .resolve()
            .map_err(|m| Error::config(origin, "model.architecture", m))?;
        let [height, width] = self.training.crop;
        if (height == 0) != (width == 0) {
            return err(
                "training.crop",
                format!(
                    "[{height}, {width}]: both sides positive ([height, width]), or [0, 0] for \
                     full frames"
                ),
            );
        }
        if !["none", "median_frequency"].contains(&self.loss.class_weights.as_str()) {
            return err(
                "loss.class_weights",
                format!(
                    "`{}`; expected none or median_frequency",
                    self.loss.class_weights
                ),
            );
        }
        // Without logit noise the semantic variance head gets no gradient, yet the model
        // would say it has one: inference would add noise of its random start. With one
        // draw the loss is the expectation of a convex function of the noisy logits, least
        // without noise: every pixel's variance is trained towards 0. Only the log-mean of
        // two draws or more rewards noise on a wrong pixel.
        if self.loss.noise_samples < 2
            && !self.loss.homoscedastic
            && self.model.tasks.iter().any(|t| t == "semantic")
        {
            return err(
                "loss.noise_samples",
                format!(
                    "{} trains no semantic aleatoric uncertainty (with one draw the loss is \
                     least without noise); at least 2 (10 is the default), or \
                     loss.homoscedastic: true for the baseline without variance heads",
                    self.loss.noise_samples
                ),
            );
        }
        // A task whose loss counts for nothing would be saved as trained.
        let has_depth = self.model.tasks.iter().any(|t| t == "depth");
        if has_depth && self.loss.depth_weight == 0.0 {
            return err(
                "loss.depth_weight",
                "0 trains the depth heads on nothing, yet the model would have a depth task; \
                 a weight > 0 (1 is the default), or tasks without depth"
                    .into(),
            );
        }
        if self.loss.class_weights == "median_frequency"
            && !self.model.tasks.iter().any(|t| t == "semantic")
        {
            return err(
                "loss.class_weights",
                "median_frequency weighs the semantic loss, and the model has no semantic task"
                    .into(),
            );
        }
        if !["rmsprop", "adam"].contains(&self.optimizer.kind.as_str()) {
            return err(
                "optimizer.kind",
                format!("`{}`; expected rmsprop or adam", self.optimizer.kind),
            );
        }
        let lr_ok = self.optimizer.lr.is_finite() && self.optimizer.lr > 0.0;
        let decay_ok = self.optimizer.lr_decay > 0.0 && self.optimizer.lr_decay <= 1.0;
        if !(lr_ok && decay_ok) {
            return err(
                "optimizer.lr",
                "lr must be > 0 and lr_decay in (0, 1]".into(),
            );
        }
        // NaN fails every comparison: each of these is refused unless it is in range.
        let checks: [(&str, f64, bool, &str); 4] = [
            (
                "optimizer.weight_decay",
                self.optimizer.weight_decay,
                (0.0..f64::INFINITY).contains(&self.optimizer.weight_decay),
                "a number >= 0",
            ),
            (
                "loss.depth_weight",
                self.loss.depth_weight,
                (0.0..f64::INFINITY).contains(&self.loss.depth_weight),
                "a number >= 0",
            ),
            (
                "training.color_jitter",
                self.training.color_jitter,
                (0.0..1.0).contains(&self.training.color_jitter),
                "in [0, 1) (1 or more makes a contrast factor of 0 or below)",
            ),
            (
                "training.max_minutes",
                self.training.max_minutes,
                (0.0..f64::INFINITY).contains(&self.training.max_minutes),
                "a number of minutes >= 0 (0: no limit)",
            ),
        ];
        for (key, value, ok, expected) in checks {
            if !ok {
                return err(key, format!("{value}: expected {expected}"));
            }
        }
        if self.training.epochs == 0 {
            return err("training.epochs", "must be at least 1".into());
        }
        if self.training.batch_size == 0 {
            return err("training.batch_size", "must be at least 1".into());
        }
        self.training
            .device
            .parse::<DeviceRequest>()
            .map_err(|m| Error::config(origin, "training.device", m))?;
        Ok(())
    }

    fn dataset(&self, split: &str) -> Result<Dataset> {
        match self.data.layout.as_str() {
            "camvid" => Dataset::camvid(&self.data.root, split),
            "nyuv2" => Dataset::nyuv2(&self.data.root, split),
            _ => Dataset::generic(&self.data.root, split),
        }
    }
}

/// Reads both splits' examples (validation: at most `val_max_images`), held in memory or
/// not as `data.in_memory` and the memory available say; with them, what the start-up
/// line says of it (nothing when they are held).
fn read_examples(
    cfg: &TrainConfig,
    train_set: Dataset,
    val_set: Dataset,
) -> Result<(Examples, Examples, String)> {
    let val_count = match cfg.data.val_max_images {
        0 => val_set.len(),
        limit => val_set.len().min(limit),
    };
    let bytes = decoded_bytes(&train_set, train_set.len())? + decoded_bytes(&val_set, val_count)?;
    let available = memory_available();
    let held = hold(cfg.data.in_memory, bytes, available);
    let gb = |bytes: u64| bytes as f64 / 1e9;
    let memory = available.map_or_else(
        || "the memory available is unknown".to_owned(),
        |a| format!("{:.1} GB available", gb(a)),
    );
    let note = match (held, cfg.data.in_memory) {
        (true, _) => String::new(),
        (false, InMemory::Auto) => format!(
            "; images read from disk for each batch: {:.2} GB decoded, more than half the \
             {memory} (data.in_memory: always holds them anyway)",
            gb(bytes)
        ),
        (false, _) => format!(
            "; images read from disk for each batch (data.in_memory: never; {:.2} GB \
             decoded, {memory})",
            gb(bytes)
        ),
    };
    log::info!(
        "{} training and {val_count} validation images, {:.2} GB decoded, {memory}: {}",
        train_set.len(),
        gb(bytes),
        if held {
            "held in memory"
        } else {
            "read from disk for each batch"
        }
    );
    let count = train_set.len();
    let train = Examples::read(train_set, count, held)?;
    let val = Examples::read(val_set, val_count, held)?;
    Ok((train, val, note))
}

/// The error for an example that was read at the start and cannot be read now, at
/// `when` (`epoch 3, batch 7`), with what `last/` holds.
fn data_changed(run_dir: &Path, when: &str, e: Error) -> Error {
    let kept = match run_dir.join("last/model.yaml").is_file() {
        true => "last/ holds the last checkpoint saved: --resume continues from it",
        false => "no checkpoint was saved yet",
    };
    Error::Training(format!(
        "{when}: {e} (read without trouble at the start: changed since?); {kept}"
    ))
}

/// Where a training run wrote its checkpoints.
#[derive(Debug, Clone)]
pub struct Trained {
    pub run_dir: PathBuf,
    /// Whether `run_dir/best/` holds a model of this run (or of the run it resumed): false
    /// when it stopped before its first validation.
    pub has_best: bool,
    pub stopped: Stop,
    /// The last epoch, when it ended among batches whose loss was not finite and so was
    /// not saved (last/ holds an earlier checkpoint, if any).
    pub unsaved_epoch: Option<usize>,
}

/// Trains as configured; returns where. `interrupted` stops after the current batch with a
/// checkpoint that `output.resume` continues exactly.
pub fn train(
    cfg: &TrainConfig,
    command: &str,
    interrupted: &AtomicBool,
    progress: &mut dyn Progress,
) -> Result<Trained> {
    let device = cfg
        .training
        .device
        .parse::<DeviceRequest>()
        .map_err(Error::Device)?
        .resolve()?;
    let train_set = cfg.dataset(&cfg.data.train_split)?;
    let val_set = cfg.dataset(&cfg.data.val_split)?;
    let want_semantic = cfg.model.tasks.iter().any(|t| t == "semantic");
    let want_depth = cfg.model.tasks.iter().any(|t| t == "depth");
    if want_semantic && !train_set.has_labels() {
        return Err(Error::config(
            "train config",
            "model.tasks",
            "semantic needs label files in the training split",
        ));
    }
    if want_depth && !train_set.has_depth() {
        return Err(Error::config(
            "train config",
            "model.tasks",
            "depth needs depth files in the training split",
        ));
    }
    // Validation scores every epoch and picks best/: without the ground truth of a task
    // it could not (a depth-only model would keep its first epoch as the best).
    for (wanted, has, what) in [
        (
            want_semantic,
            val_set.has_labels(),
            "semantic needs label files",
        ),
        (want_depth, val_set.has_depth(), "depth needs depth files"),
    ] {
        if wanted && !has {
            return Err(Error::config(
                "train config",
                "data.val_split",
                format!(
                    "{what} in the validation split `{}` too (each epoch is validated on \
                     them and best/ chosen by them)",
                    cfg.data.val_split
                ),
            ));
        }
    }
    let run_dir = cfg.output.dir.clone();
    // A checkpoint a kill left half-replaced is completed first (nothing to do for a new
    // run directory). An earlier run's checkpoint is continued only when asked: starting
    // afresh would overwrite its best/, last/ and metrics.csv.
    // An existing run directory is locked before anything in it is touched; a new one
    // when it is made, once the config and data have passed their checks (a refused run
    // leaves no directory behind).
    let mut lock = match run_dir.is_dir() {
        true => Some(RunLock::take(&run_dir)?),
        false => None,
    };
    let last_dir = match lock {
        Some(_) => last_checkpoint(&run_dir)?,
        None => run_dir.join("last"),
    };
    let has_checkpoint = last_dir.join("model.yaml").is_file();
    if has_checkpoint && !cfg.output.resume {
        return Err(Error::config(
            "train config",
            "output.dir",
            format!(
                "{} holds an earlier run (last/); pass --resume (or set output.resume: true) \
                 to continue it, or choose another output.dir",
                run_dir.display()
            ),
        ));
    }
    let results = earlier_results(&run_dir);
    if !has_checkpoint && !results.is_empty() {
        return Err(Error::config(
            "train config",
            "output.dir",
            format!(
                "{} holds an earlier run's results ({}) but no last/ checkpoint to continue \
                 it from; choose another output.dir or move them away",
                run_dir.display(),
                results.join(", ")
            ),
        ));
    }
    let (train_examples, val_examples, reading) = read_examples(cfg, train_set.clone(), val_set)?;
    let sizes = &train_examples.sizes;
    let (native_w, native_h) = sizes[0];
    // The model's input size, to which the engine resizes every frame, is the first
    // training image's: images of other sizes are trained on, but inference will not see
    // frames at their scale.
    let other_sizes: Vec<usize> = (0..sizes.len())
        .filter(|&i| sizes[i] != (native_w, native_h))
        .collect();
    if let Some(&odd) = other_sizes.first() {
        let (w, h) = sizes[odd];
        log::warn!(
            "{} of {} training images are not {native_w}x{native_h}, the first one's ({}), \
             which becomes the model's input size (inference resizes every frame to it): {} \
             is {w}x{h}, say; train on one resolution, or resize the data to it",
            other_sizes.len(),
            sizes.len(),
            train_set.files[0].image.display(),
            train_set.files[odd].image.display()
        );
    }
    let void_id = train_set.void_id();

    if lock.is_none() {
        lock = Some(RunLock::take(&run_dir)?);
    }
    let _lock = lock;
    let resumed = cfg.output.resume && has_checkpoint;
    // What this config makes: the model a new run starts, and the one a resumed run's
    // checkpoint must be (a resumed run cannot change it: its weights have that shape).
    let arch_cfg = cfg
        .model
        .architecture
        .resolve()
        .map_err(|m| Error::model(&run_dir, m))?;
    let configured = ModelSpec {
        format_version: FORMAT_VERSION,
        name: cfg.model.name.clone(),
        architecture: Architecture::from_config(
            cfg.model.architecture.preset.as_deref(),
            &arch_cfg,
        ),
        tasks: Tasks {
            semantic: want_semantic.then(|| SemanticTask {
                classes: train_set.classes.clone(),
                aleatoric: !cfg.loss.homoscedastic,
            }),
            depth: want_depth.then_some(DepthTask {
                likelihood: cfg.model.likelihood,
                aleatoric: !cfg.loss.homoscedastic,
                unit_m: cfg.model.depth_unit_m,
            }),
        },
        input: InputSpec {
            height: native_h as i64,
            width: native_w as i64,
            ..InputSpec::default()
        },
        provenance: BTreeMap::new(),
    };
    let config_value =
        serde_yaml::to_value(cfg).map_err(|e| Error::model(&run_dir, e.to_string()))?;
    // The epoch of a best/ one newer than last/'s state (a run killed between saving the
    // two): the epoch redone after the resume is the best one.
    let mut redone_best = None;
    let (mut model, mut state) = if resumed {
        let mut model = Model::load(&last_dir, device)?;
        let changed = model_changes(&model.spec, &configured);
        if !changed.is_empty() {
            return Err(Error::config(
                "train config",
                "model",
                format!(
                    "the model it describes is not the one {} holds ({}): a resumed run \
                     keeps its model; resume with the settings that started it, or train \
                     into another output.dir",
                    last_dir.display(),
                    changed.join("; ")
                ),
            ));
        }
        let state_path = last_dir.join("train_state.yaml");
        let text =
            read_limited(&state_path, MAX_CONFIG_BYTES).map_err(|e| Error::io(&state_path, e))?;
        let mut state: TrainState =
            serde_yaml::from_str(&text).map_err(|e| Error::model(&state_path, e.to_string()))?;
        // best/ is what the user gets: the score to beat is its own (a run killed between
        // saving best/ and last/ left a best/ newer than last/'s state says, and the
        // epoch it is will be redone: the epochs since the best count from it).
        if let Some((score, epoch)) = best_model_score(&run_dir) {
            state.best_score = Some(score);
            redone_best = epoch.filter(|&epoch| epoch == state.epoch + 1);
        }
        // The epochs from here on are this command's, with this config's training
        // settings: recorded as such below, the earlier commands kept.
        let provenance = &mut model.spec.provenance;
        if let Some(earlier) = provenance.remove("command") {
            let mut commands = match provenance.remove("earlier_commands") {
                Some(serde_yaml::Value::Sequence(list)) => list,
                _ => Vec::new(),
            };
            commands.push(earlier);
            provenance.insert("earlier_commands".into(), commands.into());
        }
        (model, state)
    } else {
        tch::manual_seed(cfg.training.seed as i64);
        (Model::new(configured, device)?, TrainState::default())
    };
    let provenance = &mut model.spec.provenance;
    provenance.insert("command".into(), command.into());
    provenance.insert("config".into(), config_value);
    provenance.insert("seed".into(), cfg.training.seed.into());
    provenance.insert(
        "training_images".into(),
        (train_examples.len() as u64).into(),
    );
    if cfg.training.channels_last {
        model.use_channels_last();
    }
    let size_multiple = model
        .spec
        .arch()
        .map_err(|m| Error::model(&run_dir, m))?
        .size_multiple();

    let class_weights =
        (want_semantic && cfg.loss.class_weights == "median_frequency").then(|| {
            let pixels = (train_examples.class_pixels.as_ref()).expect("semantic data has labels");
            let weights = median_frequency_weights(&pixels.labelled, &pixels.in_images_with);
            Tensor::from_slice(&weights).to_device(device)
        });

    let o = &cfg.optimizer;
    let lr_at = |epoch: usize| o.lr * o.lr_decay.powi(epoch as i32);
    let rule = Rule::from_kind(&o.kind).ok_or_else(|| {
        Error::config(
            "train config",
            "optimizer.kind",
            format!("`{}`; expected rmsprop or adam", o.kind),
        )
    })?;
    let mut optimizer = Optimizer::new(rule, &model.vs, lr_at(state.epoch), o.weight_decay);
    // What orders an epoch's batches: a checkpoint taken mid-epoch under other values
    // cannot say which batches are done.
    let batching = (
        cfg.training.batch_size,
        cfg.training.seed,
        train_examples.len(),
    );
    // A resumed run continues the optimiser where it stopped; a checkpoint without its
    // state (one written before the state was saved, or for another optimiser) restarts
    // the optimiser, and says so.
    let batches_per_epoch = train_examples.len().div_ceil(cfg.training.batch_size);
    let mut resumed_note = String::new();
    if cfg.output.resume && !resumed {
        resumed_note = format!(
            "; nothing to resume in {} (no last/ checkpoint): a new run",
            run_dir.display()
        );
    }
    if resumed {
        if state.batches_done > 0 && state.batching != batching {
            resumed_note = format!(
                "; resumed at epoch {} from its first batch (batch size, seed or training \
                 images changed since the checkpoint, taken at batch {}: {:?} -> \
                 {batching:?}), ",
                state.epoch + 1,
                state.batches_done + 1,
                state.batching
            );
            (state.batches_done, state.loss_sum, state.loss_count) = (0, 0.0, 0);
        } else if state.batches_done >= batches_per_epoch {
            // Stopped after the epoch's last batch, before its validation.
            resumed_note = format!(
                "; resumed at epoch {}, its batches done, at its validation, ",
                state.epoch + 1
            );
        } else {
            resumed_note = format!(
                "; resumed at epoch {}, batch {}, ",
                state.epoch + 1,
                state.batches_done + 1
            );
        }
        let path = last_dir.join(OPTIMIZER_FILE);
        resumed_note += &if !path.is_file() {
            format!(
                "WITHOUT optimiser state (no {}): the optimiser starts afresh",
                path.display()
            )
        } else {
            match optimizer.load(&path, state.steps) {
                Ok(()) => "optimiser state restored".into(),
                Err(e) => format!("WITHOUT optimiser state ({e}): the optimiser starts afresh"),
            }
        };
    }
    state.batching = batching;
    // A crop larger than the smallest training image is cut to it on that side, for every
    // image: the crops of a batch must share a size.
    let crop = (cfg.training.crop != [0, 0]).then(|| {
        let [height, width] = cfg.training.crop;
        let fitted = (
            sizes
                .iter()
                .map(|s| s.1)
                .min()
                .map_or(height, |h| height.min(h)),
            sizes
                .iter()
                .map(|s| s.0)
                .min()
                .map_or(width, |w| width.min(w)),
        );
        if fitted != (height, width) {
            log::warn!(
                "training.crop {height}x{width} (height x width) is larger than the smallest \
                 training images: crops of {}x{} are taken",
                fitted.0,
                fitted.1
            );
        }
        fitted
    });
    // Full frames are batched as they are: a batch's images must share a size.
    if crop.is_none() && cfg.training.batch_size > 1 {
        if let Some(odd) = (0..sizes.len()).find(|&i| sizes[i] != sizes[0]) {
            let ((w0, h0), (w, h)) = (sizes[0], sizes[odd]);
            return Err(Error::config(
                "train config",
                "training.crop",
                format!(
                    "[0, 0] (full frames) with batch_size {} needs training images of one \
                     size: {} is {w}x{h}, {} is {w0}x{h0}; set a crop or batch_size: 1",
                    cfg.training.batch_size,
                    train_set.files[odd].image.display(),
                    train_set.files[0].image.display()
                ),
            ));
        }
    }
    let augment = Augment {
        crop,
        flip: cfg.training.flip,
        color_jitter: cfg.training.color_jitter as f32,
    };
    progress.started(&format!(
        "training {} ({} parameters) on {}: {} training and {} validation images, \
         {} batches of {} per epoch{reading}{resumed_note}",
        model.spec.name,
        model.num_parameters(),
        device_name(device),
        train_examples.len(),
        val_examples.len(),
        batches_per_epoch,
        cfg.training.batch_size,
    ));
    let started = Instant::now();
    let seconds_before = state.seconds;
    let csv_path = run_dir.join("metrics.csv");
    if resumed && csv_path.is_file() {
        keep_rows_up_to(&csv_path, state.epoch)?;
    } else {
        std::fs::write(&csv_path, "epoch,train_loss,val_mean_iou,val_pixel_accuracy,val_depth_rel,val_depth_rms,lr,seconds\n")
            .map_err(|e| Error::io(&csv_path, e))?;
    }

    // training.max_minutes (0: none) against the run's training time so far, in seconds.
    let past_time_limit =
        |seconds: f64| cfg.training.max_minutes > 0.0 && seconds > cfg.training.max_minutes * 60.0;
    // Batches whose loss was not finite, in a row across epochs (a resume, perhaps with a
    // lower learning rate, starts again).
    let mut nonfinite_in_a_row = 0;
    // The last epoch this command ended, when it was not saved.
    let mut unsaved_epoch = None;
    // The model's buffers (BatchNorm's running statistics): what a forward pass changes
    // besides the gradients.
    let buffers: Vec<Tensor> = model
        .vs
        .variables()
        .into_values()
        .filter(|v| !v.requires_grad())
        .collect();
    // Every stopping rule is checked before an epoch too, so a resumed run stops where the
    // run it continues would have.
    let stopped = loop {
        if cfg.training.early_stopping > 0 && state.epochs_since_best >= cfg.training.early_stopping
        {
            break Stop::EarlyStopping;
        }
        if past_time_limit(state.seconds) {
            break Stop::TimeLimit;
        }
        if state.epoch >= cfg.training.epochs {
            break Stop::Epochs;
        }
        let epoch = state.epoch;
        let lr = lr_at(epoch);
        optimizer.set_lr(lr);
        let mut order: Vec<usize> = (0..train_examples.len()).collect();
        order.shuffle(&mut ChaCha8Rng::seed_from_u64(
            cfg.training.seed.wrapping_add(epoch as u64 * 7919),
        ));
        let batches: Vec<&[usize]> = order.chunks(cfg.training.batch_size).collect();
        progress.epoch_started(epoch + 1, batches.len(), state.batches_done);
        let to_do = batches.iter().skip(state.batches_done);
        let mut examples = train_examples.batches(to_do.map(|ids| ids.to_vec()).collect());
        for index in state.batches_done..batches.len() {
            let t = Instant::now();
            let mut rng = batch_rng(cfg.training.seed, epoch, index);
            let read = examples.next().expect("the examples of each batch");
            let read = read.map_err(|e| {
                data_changed(
                    &run_dir,
                    &format!("epoch {}, batch {}", epoch + 1, index + 1),
                    e,
                )
            })?;
            let samples: Vec<&_> = read.iter().map(|s| &**s).collect();
            let batch = make_batch(
                &samples,
                &model.spec.input,
                augment,
                void_id,
                &mut rng,
                device,
            );
            let images = pad_to_multiple(&batch.images, size_multiple);
            let (h, w) = (batch.images.size()[2], batch.images.size()[3]);
            // BatchNorm's running statistics move in the forward pass itself: kept, to be
            // put back if this batch's loss is not finite.
            let saved_buffers: Vec<Tensor> = buffers.iter().map(Tensor::copy).collect();
            let out = model.net.forward(&images, Pass::Train);
            let crop = |x: Tensor| x.narrow(2, 0, h).narrow(3, 0, w);
            let mut loss = Tensor::zeros([], (Kind::Float, device));
            let homoscedastic = cfg.loss.homoscedastic;
            let depth_unit = model.spec.tasks.depth.as_ref().map_or(1.0, |d| d.unit_m);
            if let (Some((logits, s)), Some(labels)) = (out.semantic, &batch.labels) {
                let (logits, s) = (crop(logits), crop(s));
                loss += if homoscedastic {
                    cross_entropy(&logits, labels, void_id, class_weights.as_ref())
                } else {
                    semantic_loss(
                        &logits,
                        &s,
                        labels,
                        void_id,
                        class_weights.as_ref(),
                        cfg.loss.noise_samples,
                    )
                };
            }
            if let (Some((mean, s)), Some(depth)) = (out.depth, &batch.depth) {
                let (mean, s) = (crop(mean), crop(s));
                let depth = &(depth / depth_unit);
                let depth_term = if homoscedastic {
                    depth_l1(&mean, depth)
                } else {
                    depth_loss(&mean, &s, depth, cfg.model.likelihood)
                };
                loss += depth_term * cfg.loss.depth_weight;
            }
            // A loss that is not finite (a learning rate too high, an outlier) would make
            // the gradients, the optimiser's moments and so every weight NaN for good: the
            // batch is not stepped, and a run that keeps producing them stops.
            // The same for a finite loss whose gradients are not (an overflow in the
            // backward pass).
            if nan_injected(index + 1) {
                loss *= f64::NAN;
            }
            let value = loss.double_value(&[]);
            let stepped = value.is_finite() && optimizer.backward_step(&loss);
            if stepped {
                state.loss_sum += value;
                state.loss_count += 1;
                nonfinite_in_a_row = 0;
                state.trailing_nonfinite = 0;
            } else {
                tch::no_grad(|| {
                    for (buffer, saved) in buffers.iter().zip(&saved_buffers) {
                        buffer.shallow_clone().copy_(saved);
                    }
                });
                state.nonfinite_batches += 1;
                state.trailing_nonfinite += 1;
                nonfinite_in_a_row += 1;
                log::warn!(
                    "epoch {}, batch {}: the loss {}; the batch is not stepped",
                    epoch + 1,
                    index + 1,
                    match value.is_finite() {
                        true => "has gradients that are not finite".to_owned(),
                        false => format!("is {value}"),
                    }
                );
                if nonfinite_in_a_row >= MAX_NONFINITE_IN_A_ROW {
                    // Epochs that ended among such batches were not saved.
                    let kept = match run_dir.join("last/model.yaml").is_file() {
                        true => "last/ holds the last checkpoint saved".to_owned(),
                        false => format!(
                            "no checkpoint was saved (remove {} before starting again)",
                            run_dir.display()
                        ),
                    };
                    return Err(Error::Training(format!(
                        "the loss or its gradients were not finite in {MAX_NONFINITE_IN_A_ROW} \
                         batches in a row (epoch {}, batch {}): lower optimizer.lr, or check \
                         the data; {kept}",
                        epoch + 1,
                        index + 1
                    )));
                }
            }
            state.batches_done = index + 1;
            let reported = if stepped { value } else { f64::NAN };
            progress.batch_done(reported, samples.len(), t.elapsed().as_secs_f64());
            // training.max_minutes is kept to the batch, not to the end of an epoch (one
            // epoch can take half an hour on a CPU).
            let out_of_time = past_time_limit(seconds_before + started.elapsed().as_secs_f64());
            let interrupt = interrupted.load(Ordering::SeqCst);
            if interrupt || out_of_time {
                // Mid-epoch weights: the last completed epoch's figures no longer apply.
                let provenance = &mut model.spec.provenance;
                provenance.remove("validation");
                provenance.insert("interrupted_in_epoch".into(), (epoch + 1).into());
                state.seconds = seconds_before + started.elapsed().as_secs_f64();
                save_checkpoint(&model, &optimizer, &run_dir, &mut state)?;
                return Ok(Trained {
                    run_dir,
                    has_best: state.best_score.is_some(),
                    stopped: if interrupt {
                        Stop::Interrupted
                    } else {
                        Stop::TimeLimit
                    },
                    unsaved_epoch: None,
                });
            }
        }
        let validation = validate(&model, &val_examples, size_multiple, void_id, device).map_err(
            |e| match e {
                // A validation image that cannot be read any more.
                e @ (Error::Image { .. } | Error::Io { .. }) => {
                    data_changed(&run_dir, &format!("epoch {}, validation", epoch + 1), e)
                }
                e => e,
            },
        )?;
        // No finite loss in the whole epoch: NaN, not a mean of nothing (0).
        let train_loss = match state.loss_count {
            0 => f64::NAN,
            n => state.loss_sum / n as f64,
        };
        if state.nonfinite_batches > 0 {
            log::warn!(
                "epoch {}: {} batch(es) with a loss that was not finite were not stepped",
                epoch + 1,
                state.nonfinite_batches
            );
        }
        state.epoch += 1;
        (state.batches_done, state.loss_sum, state.loss_count) = (0, 0.0, 0);
        state.nonfinite_batches = 0;
        state.seconds = seconds_before + started.elapsed().as_secs_f64();
        // Each checkpoint says which epoch it is and how it validated.
        let provenance = &mut model.spec.provenance;
        provenance.remove("interrupted_in_epoch");
        provenance.insert("epoch".into(), state.epoch.into());
        provenance.insert(
            "validation".into(),
            serde_yaml::to_value(&validation).map_err(|e| Error::model(&run_dir, e.to_string()))?,
        );
        let score = validation.score();
        // An epoch that ended among batches whose loss was not finite may end with weights
        // a step blew up (finite but huge): not saved, so that last/ and best/ keep the
        // weights from before (a run that goes on saves its next epoch as usual).
        // It counts as an epoch without a better score.
        let suspect = state.trailing_nonfinite > 0;
        if suspect {
            log::warn!(
                "epoch {}: ended among {} batch(es) whose loss was not finite; its weights \
                 are not saved (last/ and best/ keep the earlier ones)",
                state.epoch,
                state.trailing_nonfinite
            );
            state.epochs_since_best += 1;
            unsaved_epoch = Some(state.epoch);
        } else if state.best_score.is_none_or(|best| score > best) {
            state.best_score = Some(score);
            state.epochs_since_best = 0;
            replace_dir(&run_dir, "best", |tmp| model.save(tmp))?;
        } else if redone_best == Some(state.epoch) {
            // This epoch, redone, is the one best/ holds: as good as it, not better.
            state.epochs_since_best = 0;
        } else {
            state.epochs_since_best += 1;
        }
        // The row first: a run killed before its checkpoint lands redoes the epoch, and
        // the resume drops the row (keep_rows_up_to).
        let fmt = |v: Option<f64>| v.map_or(String::new(), |v| format!("{v:.5}"));
        let line = format!(
            "{},{train_loss:.5},{},{},{},{},{lr:.6},{:.1}\n",
            state.epoch,
            fmt(validation.mean_iou),
            fmt(validation.pixel_accuracy),
            fmt(validation.depth_rel),
            fmt(validation.depth_rms),
            state.seconds
        );
        std::fs::OpenOptions::new()
            .append(true)
            .open(&csv_path)
            .and_then(|mut f| f.write_all(line.as_bytes()))
            .map_err(|e| Error::io(&csv_path, e))?;
        if !suspect {
            save_checkpoint(&model, &optimizer, &run_dir, &mut state)?;
            unsaved_epoch = None;
        }
        progress.epoch_done(state.epoch, train_loss, &validation, lr);
        if interrupted.load(Ordering::SeqCst) {
            break Stop::Interrupted;
        }
    };
    Ok(Trained {
        run_dir,
        has_best: state.best_score.is_some(),
        stopped,
        unsaved_epoch,
    })
}

/// Drops the rows of `metrics.csv` after epoch `epoch`: written by a run killed before the
/// checkpoint of that epoch landed, they are trained again. A row cut short by the kill
/// (no line end: its epoch may be cut too, `1` of `12`) goes as well.
fn keep_rows_up_to(csv_path: &Path, epoch: usize) -> Result<()> {
    let text = std::fs::read_to_string(csv_path).map_err(|e| Error::io(csv_path, e))?;
    let mut lines = text.split_inclusive('\n');
    // The header whatever it ends with; rows only whole.
    let header = lines.next().unwrap_or_default();
    let rows = lines.filter(|l| l.ends_with('\n'));
    let kept: Vec<&str> = std::iter::once(header)
        .chain(rows.filter(|line| {
            line.split(',')
                .next()
                .and_then(|e| e.parse::<usize>().ok())
                .is_some_and(|e| e <= epoch)
        }))
        .map(|line| line.trim_end_matches(['\r', '\n']))
        .collect();
    // Rewritten when rows go or the file does not end a line (the next row would join it).
    if kept.len() < text.lines().count() || !text.ends_with('\n') {
        let tmp = csv_path.with_extension("csv.tmp");
        std::fs::write(&tmp, kept.join("\n") + "\n").map_err(|e| Error::io(&tmp, e))?;
        std::fs::rename(&tmp, csv_path).map_err(|e| Error::io(csv_path, e))?;
    }
    Ok(())
}

/// What an earlier run left besides `last/` that a new run would overwrite: `best/` and
/// `metrics.csv`, once they hold more than the first epoch. A run killed in or right after
/// its first epoch (before its first `last/` landed) leaves only that epoch's row and
/// `best/`, which a new run redoes: it is not refused.
fn earlier_results(run_dir: &Path) -> Vec<&'static str> {
    let best_epoch = read_limited(&run_dir.join("best").join("model.yaml"), MAX_CONFIG_BYTES)
        .ok()
        .and_then(|text| serde_yaml::from_str::<serde_yaml::Value>(&text).ok())
        .and_then(|spec| spec["provenance"]["epoch"].as_u64());
    let rows = std::fs::File::open(run_dir.join("metrics.csv")).map_or(0, |file| {
        use std::io::BufRead;
        std::io::BufReader::new(file)
            .lines()
            .skip(1)
            .take(2)
            .filter(|l| l.as_ref().is_ok_and(|l| !l.trim().is_empty()))
            .count()
    });
    let mut found = Vec::new();
    if best_epoch.is_some_and(|e| e > 1) {
        found.push("best/");
    }
    if rows > 1 {
        found.push("metrics.csv");
    }
    found
}

/// The run's `last/` checkpoint directory, after undoing what a killed save left: a save
/// writes `last.tmp/` whole, moves `last/` to `last.old/`, `last.tmp/` to `last/`, then
/// removes `last.old/` ([`save_checkpoint`]). So `last.tmp/` is never complete until
/// renamed, and `last.old/` without `last/` is the last complete checkpoint.
fn last_checkpoint(run_dir: &Path) -> Result<PathBuf> {
    recover_dir(run_dir, "best")?;
    recover_dir(run_dir, "last")
}

/// Fail point `train::loss` (`return(N)`, builds with the `failpoints` feature): the loss
/// of each epoch's batch N (from 1) is made NaN, as an outlier in the data makes it.
#[cfg_attr(not(feature = "failpoints"), allow(unused_variables))]
fn nan_injected(batch: usize) -> bool {
    fail::fail_point!("train::loss", |n: Option<String>| {
        n.and_then(|n| n.parse::<usize>().ok()) == Some(batch)
    });
    false
}

/// `run_dir` held by this process while it trains (an exclusive lock on `RUN/.lock`, which
/// the system drops when the process ends, killed or not): a second `train` on the same
/// directory would take the first one's half-written checkpoint for a killed run's and
/// remove it, and two would overwrite each other's. The lock file stays (removing it
/// would let a process that opened it just before lock a file no one else sees).
struct RunLock {
    _file: std::fs::File,
}

impl RunLock {
    const FILE: &str = ".lock";

    /// Creates `run_dir` (durably, in its parent) if it is not there, and locks it.
    fn take(run_dir: &Path) -> Result<Self> {
        if !run_dir.is_dir() {
            std::fs::create_dir_all(run_dir).map_err(|e| Error::io(run_dir, e))?;
            if let Some(parent) = run_dir.parent().filter(|p| !p.as_os_str().is_empty()) {
                sync_path(parent)?;
            }
        }
        let path = run_dir.join(Self::FILE);
        let file = std::fs::OpenOptions::new()
            .create(true)
            .truncate(false)
            .write(true)
            .open(&path)
            .map_err(|e| Error::io(&path, e))?;
        match file.try_lock() {
            Ok(()) => Ok(RunLock { _file: file }),
            // Worth another try once the other run has ended (exit 75): it resumes from
            // the checkpoint that run leaves.
            Err(std::fs::TryLockError::WouldBlock) => Err(Error::io(
                &path,
                std::io::Error::new(
                    std::io::ErrorKind::WouldBlock,
                    format!(
                        "output.dir {} is in use by another `train` (it holds this lock); \
                         wait for it to end (then --resume continues from its checkpoint), \
                         or choose another output.dir",
                        run_dir.display()
                    ),
                ),
            )),
            Err(std::fs::TryLockError::Error(e)) => Err(Error::io(&path, e)),
        }
    }
}

/// `run_dir/NAME` as [`replace_dir`] leaves it whatever the moment it was killed: the old
/// one put back where the new one had not yet taken its place, leftovers removed.
fn recover_dir(run_dir: &Path, name: &str) -> Result<PathBuf> {
    let (dir, tmp, old) = replaced_paths(run_dir, name);
    if !dir.exists() && old.join("model.yaml").is_file() {
        std::fs::rename(&old, &dir).map_err(|e| Error::io(&dir, e))?;
    }
    for stale in [tmp, old] {
        if stale.exists() {
            std::fs::remove_dir_all(&stale).map_err(|e| Error::io(&stale, e))?;
        }
    }
    Ok(dir)
}

/// Replaces the directory `run_dir/NAME` whole with what `fill` writes into a fresh one
/// (`NAME.tmp`): the old one moves to `NAME.old`, the new one into place, the old one
/// goes. A kill at any point leaves one whole model ([`recover_dir`]), never new weights
/// beside an old model.yaml.
fn replace_dir(run_dir: &Path, name: &str, fill: impl FnOnce(&Path) -> Result<()>) -> Result<()> {
    let (dir, tmp, old) = replaced_paths(run_dir, name);
    if tmp.exists() {
        std::fs::remove_dir_all(&tmp).map_err(|e| Error::io(&tmp, e))?;
    }
    fill(&tmp)?;
    // On disk before the renames: a power loss (not only a kill) must not find the new
    // directory's names without its data, with the old one gone.
    sync_dir(&tmp)?;
    if dir.exists() {
        std::fs::rename(&dir, &old).map_err(|e| Error::io(&old, e))?;
    }
    std::fs::rename(&tmp, &dir).map_err(|e| Error::io(&dir, e))?;
    sync_path(run_dir)?;
    if old.exists() {
        std::fs::remove_dir_all(&old).map_err(|e| Error::io(&old, e))?;
    }
    Ok(())
}

/// Flushes the files directly in `dir`, then `dir` itself (its entries), to the disk.
fn sync_dir(dir: &Path) -> Result<()> {
    for entry in std::fs::read_dir(dir).map_err(|e| Error::io(dir, e))? {
        let path = entry.map_err(|e| Error::io(dir, e))?.path();
        if path.is_file() {
            sync_path(&path)?;
        }
    }
    sync_path(dir)
}

/// Flushes a file or a directory's entries to the disk.
fn sync_path(path: &Path) -> Result<()> {
    crate::output::sync_path(path).map_err(|e| Error::io(path, e))
}

fn replaced_paths(run_dir: &Path, name: &str) -> (PathBuf, PathBuf, PathBuf) {
    (
        run_dir.join(name),
        run_dir.join(format!("{name}.tmp")),
        run_dir.join(format!("{name}.old")),
    )
}

/// The validation score of the model in `run_dir/best/` and its epoch, as its model.yaml
/// records them.
fn best_model_score(run_dir: &Path) -> Option<(f64, Option<usize>)> {
    let spec = crate::model::ModelSpec::load(&run_dir.join("best")).ok()?;
    let validation = spec.provenance.get("validation")?.clone();
    let epoch = spec
        .provenance
        .get("epoch")
        .and_then(|e| e.as_u64())
        .map(|e| e as usize);
    Some((
        serde_yaml::from_value::<Validation>(validation)
            .ok()?
            .score(),
        epoch,
    ))
}

/// How the model `configured` differs from the checkpoint's `saved` (name, architecture,
/// tasks, input size), as `key: config's value, checkpoint's value`; empty if it does not.
fn model_changes(saved: &ModelSpec, configured: &ModelSpec) -> Vec<String> {
    let as_yaml = |spec: &ModelSpec| {
        let mut value = serde_yaml::to_value(ModelSpec {
            provenance: BTreeMap::new(),
            ..spec.clone()
        })
        .expect("specs serialise");
        // Which name the preset goes by is not the model: its shape is.
        if let Some(arch) = value
            .get_mut("architecture")
            .and_then(|a| a.as_mapping_mut())
        {
            arch.remove("preset");
        }
        value
    };
    let mut changes = Vec::new();
    yaml_differences(&as_yaml(configured), &as_yaml(saved), "", &mut changes);
    changes
}

/// The leaves where `a` and `b` differ, as `path: a's value, b's value`.
fn yaml_differences(
    a: &serde_yaml::Value,
    b: &serde_yaml::Value,
    path: &str,
    out: &mut Vec<String>,
) {
    use serde_yaml::Value;
    match (a, b) {
        (Value::Mapping(ma), Value::Mapping(mb)) => {
            let keys = ma.keys().chain(mb.keys().filter(|k| !ma.contains_key(*k)));
            for key in keys {
                let name = key
                    .as_str()
                    .map_or_else(|| format!("{key:?}"), str::to_owned);
                let path = if path.is_empty() {
                    name
                } else {
                    format!("{path}.{name}")
                };
                let none = Value::Null;
                yaml_differences(
                    ma.get(key).unwrap_or(&none),
                    mb.get(key).unwrap_or(&none),
                    &path,
                    out,
                );
            }
        }
        _ if a != b => {
            let show = |v: &Value| {
                serde_yaml::to_string(v)
                    .map(|t| t.trim().replace('\n', " "))
                    .unwrap_or_default()
            };
            out.push(format!(
                "{path}: {} in the config, {} in the checkpoint",
                show(a),
                show(b)
            ));
        }
        _ => {}
    }
}

/// Replaces `last/` whole with the model, the optimiser's state and where training stands,
/// so that a kill at any moment leaves one complete checkpoint ([`last_checkpoint`]).
fn save_checkpoint(
    model: &Model,
    optimizer: &Optimizer,
    run_dir: &Path,
    state: &mut TrainState,
) -> Result<()> {
    replace_dir(run_dir, "last", |tmp| {
        model.save(tmp)?;
        optimizer.save(&tmp.join(OPTIMIZER_FILE))?;
        state.steps = optimizer.steps();
        let path = tmp.join("train_state.yaml");
        let yaml = serde_yaml::to_string(state).map_err(|e| Error::model(tmp, e.to_string()))?;
        std::fs::write(&path, yaml).map_err(|e| Error::io(&path, e))
    })
}

/// Full-frame evaluation with dropout off: labels are the argmax of the logits.
pub fn validate(
    model: &Model,
    examples: &Examples,
    size_multiple: i64,
    void_id: i64,
    device: Device,
) -> Result<Validation> {
    let _guard = tch::no_grad_guard();
    let mut confusion = Confusion::new(void_id.max(0) as usize);
    let mut depth_errors = DepthErrors::default();
    let no_augment = Augment {
        crop: None,
        flip: false,
        color_jitter: 0.0,
    };
    let mut rng = ChaCha8Rng::seed_from_u64(0);
    let one_by_one = (0..examples.len()).map(|i| vec![i]).collect();
    for read in examples.batches(one_by_one) {
        let read = read?;
        let batch = make_batch(
            &[&*read[0]],
            &model.spec.input,
            no_augment,
            void_id,
            &mut rng,
            device,
        );
        let (h, w) = (batch.images.size()[2], batch.images.size()[3]);
        let out = model
            .net
            .forward(&pad_to_multiple(&batch.images, size_multiple), Pass::Eval);
        let crop = |x: Tensor| x.narrow(2, 0, h).narrow(3, 0, w);
        if let (Some((logits, _)), Some(labels)) = (out.semantic, &batch.labels) {
            let predicted = Vec::<i64>::try_from(
                &crop(logits)
                    .argmax(1, false)
                    .view(-1)
                    .to_device(Device::Cpu),
            )?;
            let truth = Vec::<i64>::try_from(&labels.view(-1).to_device(Device::Cpu))?;
            confusion.add(&truth, &predicted);
        }
        if let (Some((mean, _)), Some(depth)) = (out.depth, &batch.depth) {
            let unit = model.spec.tasks.depth.as_ref().map_or(1.0, |d| d.unit_m);
            let predicted = Vec::<f32>::try_from(
                &(crop(mean) * unit)
                    .to_kind(Kind::Float)
                    .view(-1)
                    .to_device(Device::Cpu),
            )?;
            let truth = Vec::<f32>::try_from(&depth.view(-1).to_device(Device::Cpu))?;
            depth_errors.add(&truth, &predicted);
        }
    }
    let semantic = model.spec.tasks.semantic.is_some();
    let depth = model.spec.tasks.depth.is_some() && depth_errors.count() > 0;
    Ok(Validation {
        mean_iou: semantic.then(|| confusion.mean_iou()),
        pixel_accuracy: semantic.then(|| confusion.pixel_accuracy()),
        depth_rel: depth.then(|| depth_errors.rel()),
        depth_rms: depth.then(|| depth_errors.rms()),
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn only_results_beyond_the_first_epoch_count_as_an_earlier_run() {
        let run = tempfile::tempdir().unwrap();
        let header = "epoch,train_loss\n";
        let csv = run.path().join("metrics.csv");
        let best = run.path().join("best");
        std::fs::create_dir(&best).unwrap();
        assert!(earlier_results(run.path()).is_empty());
        // What a run killed before its first last/ landed leaves: redone, not refused.
        std::fs::write(&csv, format!("{header}1,0.5\n")).unwrap();
        std::fs::write(best.join("model.yaml"), "provenance:\n  epoch: 1\n").unwrap();
        assert!(earlier_results(run.path()).is_empty());
        std::fs::write(&csv, format!("{header}1,0.5\n2,0.4\n")).unwrap();
        assert_eq!(earlier_results(run.path()), ["metrics.csv"]);
        std::fs::write(best.join("model.yaml"), "provenance:\n  epoch: 2\n").unwrap();
        assert_eq!(earlier_results(run.path()), ["best/", "metrics.csv"]);
        std::fs::remove_file(&csv).unwrap();
        assert_eq!(earlier_results(run.path()), ["best/"]);
    }

    /// last/ and best/ alike (replace_dir, recover_dir).
    #[test]
    fn a_killed_save_leaves_one_complete_checkpoint() {
        for name in ["last", "best"] {
            let run = tempfile::tempdir().unwrap();
            let (dir, tmp, old) = replaced_paths(run.path(), name);
            let checkpoint = |dir: &Path, tag: &str| {
                std::fs::create_dir_all(dir).unwrap();
                std::fs::write(dir.join("model.yaml"), tag).unwrap();
            };
            let tag = |dir: &Path| std::fs::read_to_string(dir.join("model.yaml")).unwrap();
            // Killed while writing NAME.tmp/: NAME/ stands, the half-written copy goes.
            checkpoint(&dir, "1");
            checkpoint(&tmp, "2 (half)");
            last_checkpoint(run.path()).unwrap();
            assert_eq!(tag(&dir), "1", "{name}");
            assert!(!tmp.exists());
            // Killed between the two renames: NAME.old/ is the checkpoint.
            std::fs::rename(&dir, &old).unwrap();
            checkpoint(&tmp, "2");
            last_checkpoint(run.path()).unwrap();
            assert_eq!(tag(&dir), "1", "{name}");
            assert!(!tmp.exists() && !old.exists());
            // Killed before NAME.old/ was removed: NAME/ is the new one.
            checkpoint(&old, "1");
            std::fs::write(dir.join("model.yaml"), "2").unwrap();
            last_checkpoint(run.path()).unwrap();
            assert_eq!(tag(&dir), "2", "{name}");
            assert!(!old.exists());
            // A whole replacement.
            replace_dir(run.path(), name, |tmp| {
                checkpoint(tmp, "3");
                Ok(())
            })
            .unwrap();
            assert_eq!(tag(&dir), "3", "{name}");
            assert!(!tmp.exists() && !old.exists());
        }
    }

    #[test]
    fn a_value_of_the_wrong_type_names_its_key_once() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("train.yaml");
        std::fs::write(&path, "training:\n  batch_size: two\n").unwrap();
        let message = TrainConfig::load(&path).unwrap_err().to_string();
        assert_eq!(
            message.matches("training.batch_size").count(),
            1,
            "{message}"
        );
        assert!(
            message.contains("invalid type: string \"two\""),
            "{message}"
        );
    }

    #[test]
    fn a_crop_with_one_side_zero_is_refused() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("train.yaml");
        let documented = include_str!("../../config/train.yaml");
        assert_eq!(documented.matches("crop: [160, 160]").count(), 1);
        let with_crop = |crop: &str| {
            std::fs::write(&path, documented.replace("crop: [160, 160]", crop)).unwrap();
            TrainConfig::load(&path)
        };
        let message = with_crop("crop: [0, 80]").unwrap_err().to_string();
        assert!(
            message.contains("training.crop")
                && message.contains("[0, 80]: both sides positive ([height, width]), or [0, 0]"),
            "{message}"
        );
        assert_eq!(with_crop("crop: [0, 0]").unwrap().training.crop, [0, 0]);
    }

    #[test]
    fn rows_of_epochs_trained_again_are_dropped() {
        let dir = tempfile::tempdir().unwrap();
        let csv = dir.path().join("metrics.csv");
        let rows = "epoch,train_loss\n1,0.5\n2,0.4\n3,0.3\n";
        std::fs::write(&csv, rows).unwrap();
        keep_rows_up_to(&csv, 3).unwrap();
        assert_eq!(std::fs::read_to_string(&csv).unwrap(), rows);
        keep_rows_up_to(&csv, 1).unwrap();
        assert_eq!(
            std::fs::read_to_string(&csv).unwrap(),
            "epoch,train_loss\n1,0.5\n"
        );
        // A row cut short by a kill: `1` of epoch 12's row.
        for cut in ["1", "12,0.2"] {
            std::fs::write(&csv, format!("epoch,train_loss\n1,0.5\n{cut}")).unwrap();
            keep_rows_up_to(&csv, 1).unwrap();
            assert_eq!(
                std::fs::read_to_string(&csv).unwrap(),
                "epoch,train_loss\n1,0.5\n",
                "{cut:?}"
            );
        }
        // A header cut from its line end stays, and gets one.
        std::fs::write(&csv, "epoch,train_loss").unwrap();
        keep_rows_up_to(&csv, 1).unwrap();
        assert_eq!(std::fs::read_to_string(&csv).unwrap(), "epoch,train_loss\n");
    }
}

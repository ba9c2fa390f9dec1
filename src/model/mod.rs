//! Model directories: `model.yaml` (what the network is and how to feed it) next to
//! `model.safetensors` (the weights, BatchNorm running statistics included).
//!
//! Loading checks the weights against the architecture tensor by tensor, so a wrong file
//! is reported by name (missing tensor, unexpected tensor, wrong shape, class count).

pub mod fc_densenet;

use std::collections::{BTreeMap, HashMap};
use std::path::{Path, PathBuf};

use serde::{Deserialize, Serialize};
use tch::{nn, Device, Tensor};

use crate::error::{Error, Result};
use crate::text_file::{read_limited, MAX_CONFIG_BYTES};
pub use fc_densenet::{Config as ArchConfig, FcDenseNet, HeadOutputs, Heads, Pass, PRESETS};

/// File names inside a model directory.
pub const SPEC_FILE: &str = "model.yaml";
pub const WEIGHTS_FILE: &str = "model.safetensors";

/// The most weights (and BatchNorm statistics) a model may have: 2.5e8, 1 GB in f32,
/// 25x FC-DenseNet103. A model.yaml that names more is refused before anything is
/// allocated.
pub const MAX_STORED_VALUES: f64 = 2.5e8;
/// The model file format this build reads and writes.
pub const FORMAT_VERSION: u32 = 1;

/// The contents of `model.yaml`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ModelSpec {
    pub format_version: u32,
    /// A short human name.
    pub name: String,
    pub architecture: Architecture,
    pub tasks: Tasks,
    pub input: InputSpec,
    /// How the weights were made (command, seed, data, epochs...); free-form.
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    pub provenance: BTreeMap<String, serde_yaml::Value>,
}

/// The architecture as written in `model.yaml`: a preset name, explicit fields, or both
/// (explicit fields must then agree with the preset). Saved models write both.
#[derive(Debug, Clone, PartialEq, Default, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Architecture {
    /// `fcdensenet56`, `fcdensenet67`, `fcdensenet103` or `custom`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub preset: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub first_conv_channels: Option<i64>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub growth_rate: Option<i64>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub down_blocks: Option<Vec<i64>>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub bottleneck_layers: Option<i64>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub up_blocks: Option<Vec<i64>>,
    /// Dropout p; 0.2 when absent.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub dropout: Option<f64>,
}

impl Architecture {
    /// A fully written-out architecture, labelled with `preset` ("custom" if none).
    pub fn from_config(preset: Option<&str>, cfg: &ArchConfig) -> Self {
        Architecture {
            preset: Some(preset.unwrap_or("custom").to_owned()),
            first_conv_channels: Some(cfg.first_conv_channels),
            growth_rate: Some(cfg.growth_rate),
            down_blocks: Some(cfg.down_blocks.clone()),
            bottleneck_layers: Some(cfg.bottleneck_layers),
            up_blocks: Some(cfg.up_blocks.clone()),
            dropout: Some(cfg.dropout),
        }
    }

    /// Resolves preset and fields into one network shape; the error names the field.
    pub fn resolve(&self) -> Result<ArchConfig, String> {
        let base = match self.preset.as_deref() {
            None | Some("custom") => None,
            Some(name) => Some(ArchConfig::preset(name).ok_or_else(|| {
                format!(
                    "unknown preset `{name}`; expected one of {}, or custom",
                    PRESETS.join(", ")
                )
            })?),
        };
        fn pick<T: Clone + PartialEq + std::fmt::Debug>(
            field: &str,
            explicit: &Option<T>,
            preset: Option<&T>,
        ) -> Result<T, String> {
            match (explicit, preset) {
                (Some(value), Some(p)) if value != p => Err(format!(
                    "architecture.{field} = {value:?} contradicts the preset ({p:?}); \
                     use preset: custom for a custom shape"
                )),
                (Some(value), _) => Ok(value.clone()),
                (None, Some(p)) => Ok(p.clone()),
                (None, None) => Err(format!(
                    "architecture.{field} is missing (needed without a preset)"
                )),
            }
        }
        let b = base.as_ref();
        let cfg = ArchConfig {
            first_conv_channels: pick(
                "first_conv_channels",
                &self.first_conv_channels,
                b.map(|c| &c.first_conv_channels),
            )?,
            growth_rate: pick("growth_rate", &self.growth_rate, b.map(|c| &c.growth_rate))?,
            down_blocks: pick("down_blocks", &self.down_blocks, b.map(|c| &c.down_blocks))?,
            bottleneck_layers: pick(
                "bottleneck_layers",
                &self.bottleneck_layers,
                b.map(|c| &c.bottleneck_layers),
            )?,
            up_blocks: pick("up_blocks", &self.up_blocks, b.map(|c| &c.up_blocks))?,
            // Dropout is a training choice, not part of the preset's shape.
            dropout: self.dropout.unwrap_or(0.2),
        };
        cfg.validate().map_err(|e| format!("architecture: {e}"))?;
        Ok(cfg)
    }
}

#[derive(Debug, Clone, PartialEq, Default, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Tasks {
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub semantic: Option<SemanticTask>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub depth: Option<DepthTask>,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct SemanticTask {
    /// Class names and display colours, in class-id order.
    pub classes: Vec<ClassInfo>,
    /// Whether the logit log-variance head was trained (false for a homoscedastic
    /// baseline: the engine then ignores it and uses no logit noise).
    #[serde(default = "yes", skip_serializing_if = "is_true")]
    pub aleatoric: bool,
}

fn yes() -> bool {
    true
}

fn is_true(b: &bool) -> bool {
    *b
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ClassInfo {
    pub name: String,
    /// RGB display colour.
    pub color: [u8; 3],
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct DepthTask {
    pub likelihood: Likelihood,
    /// Whether the log-variance head was trained (false for a homoscedastic baseline: no
    /// depth aleatoric image).
    #[serde(default = "yes", skip_serializing_if = "is_true")]
    pub aleatoric: bool,
    /// Metres per unit of the depth head's output: the head works in these units (targets
    /// are divided by it in training, predictions multiplied by it), which keeps residuals
    /// near 1 so the learned variance does not swamp the mean's gradient early on.
    #[serde(default = "one", skip_serializing_if = "is_one")]
    pub unit_m: f64,
}

fn one() -> f64 {
    1.0
}

fn is_one(v: &f64) -> bool {
    *v == 1.0
}

/// The depth head's likelihood, which fixes what its `s` output means.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Likelihood {
    /// s = log σ²; aleatoric variance σ² = exp(s).
    Gaussian,
    /// s = log σ̂, σ̂ the standard deviation (Laplace scale σ̂/√2); aleatoric variance
    /// σ̂² = exp(2s).
    Laplace,
}

/// How images are fed to the network.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct InputSpec {
    /// Native input height and width in pixels; every image is resized to this, then
    /// padded to multiples of the network's size multiple (32 for the presets).
    pub height: i64,
    pub width: i64,
    /// Per-channel (RGB) mean and std applied to pixel values scaled to [0, 1].
    pub mean: [f32; 3],
    pub std: [f32; 3],
}

impl Default for InputSpec {
    fn default() -> Self {
        // ImageNet statistics, the usual choice for road scenes.
        InputSpec {
            height: 360,
            width: 480,
            mean: [0.485, 0.456, 0.406],
            std: [0.229, 0.224, 0.225],
        }
    }
}

impl ModelSpec {
    /// Reads and checks `DIR/model.yaml`.
    pub fn load(dir: &Path) -> Result<Self> {
        let path = dir.join(SPEC_FILE);
        let text = read_limited(&path, MAX_CONFIG_BYTES).map_err(|e| Error::io(&path, e))?;
        Self::from_yaml(&text, &path)
    }

    /// Parses and checks model.yaml text; `origin` names it in errors.
    pub fn from_yaml(text: &str, origin: &Path) -> Result<Self> {
        let spec: ModelSpec =
            serde_yaml::from_str(text).map_err(|e| Error::model(origin, e.to_string()))?;
        spec.validate()
            .map_err(|message| Error::model(origin, message))?;
        Ok(spec)
    }

    /// The resolved network shape.
    pub fn arch(&self) -> Result<ArchConfig, String> {
        self.architecture.resolve()
    }

    pub fn heads(&self) -> Heads {
        Heads {
            semantic_classes: self.tasks.semantic.as_ref().map(|s| s.classes.len() as i64),
            depth: self.tasks.depth.is_some(),
        }
    }

    /// One display colour per class (empty without a semantic task).
    pub fn palette(&self) -> Vec<[u8; 3]> {
        self.tasks
            .semantic
            .as_ref()
            .map(|s| s.classes.iter().map(|c| c.color).collect())
            .unwrap_or_default()
    }

    pub fn num_classes(&self) -> usize {
        self.tasks.semantic.as_ref().map_or(0, |s| s.classes.len())
    }

    /// Whether the semantic and the depth task have a trained variance head (`None` for a
    /// task the model lacks).
    pub fn variance_heads(&self) -> (Option<bool>, Option<bool>) {
        (
            self.tasks.semantic.as_ref().map(|t| t.aleatoric),
            self.tasks.depth.as_ref().map(|t| t.aleatoric),
        )
    }

    /// No task has a trained variance head: a homoscedastic model (the paper's baseline).
    pub fn is_homoscedastic(&self) -> bool {
        let (semantic, depth) = self.variance_heads();
        !matches!(semantic, Some(true)) && !matches!(depth, Some(true))
    }

    /// Checks everything that does not need the weights.
    pub fn validate(&self) -> Result<(), String> {
        if self.format_version != FORMAT_VERSION {
            return Err(format!(
                "format_version {} is not supported (this build reads {FORMAT_VERSION})",
                self.format_version
            ));
        }
        let arch = self.arch()?;
        if self.tasks.semantic.is_none() && self.tasks.depth.is_none() {
            return Err("tasks: a model needs semantic, depth or both".into());
        }
        if let Some(semantic) = &self.tasks.semantic {
            if semantic.classes.len() < 2 {
                return Err("tasks.semantic.classes: at least 2 classes are needed".into());
            }
            if semantic.classes.len() > u16::MAX as usize + 1 {
                return Err("tasks.semantic.classes: at most 65536 classes".into());
            }
        }
        if let Some(depth) = &self.tasks.depth {
            if !(depth.unit_m.is_finite() && depth.unit_m > 0.0) {
                return Err(format!(
                    "tasks.depth.unit_m must be a positive number of metres, got {}",
                    depth.unit_m
                ));
            }
        }
        let InputSpec {
            height,
            width,
            mean,
            std,
        } = &self.input;
        if *height < 1 || *width < 1 || *height > 16384 || *width > 16384 {
            return Err(format!(
                "input: native size {height}x{width} must be 1..=16384 pixels per side"
            ));
        }
        if std.iter().any(|s| !s.is_finite() || *s <= 0.0) {
            return Err(format!(
                "input.std must be positive and finite, got {std:?}"
            ));
        }
        if mean.iter().any(|m| !m.is_finite()) {
            return Err(format!("input.mean must be finite, got {mean:?}"));
        }
        // Checked from the shape, before a model file can make us allocate it.
        let values = arch.stored_values(self.heads());
        if values > MAX_STORED_VALUES {
            return Err(format!(
                "the architecture needs about {values:.2e} weights, more than the \
                 {MAX_STORED_VALUES:.0e} this build loads (FC-DenseNet103 has 9.4e6)"
            ));
        }
        Ok(())
    }
}

/// A model in memory: its description, its network and the weights on a device.
pub struct Model {
    pub spec: ModelSpec,
    pub net: FcDenseNet,
    pub vs: nn::VarStore,
}

impl std::fmt::Debug for Model {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Model")
            .field("spec", &self.spec)
            .finish_non_exhaustive()
    }
}

impl Model {
    /// A model with freshly initialised (random) weights.
    pub fn new(spec: ModelSpec, device: Device) -> Result<Self> {
        spec.validate().map_err(|m| Error::model(SPEC_FILE, m))?;
        let arch = spec.arch().map_err(|m| Error::model(SPEC_FILE, m))?;
        let vs = nn::VarStore::new(device);
        let net = FcDenseNet::new(&vs.root(), &arch, spec.heads());
        Ok(Model { spec, net, vs })
    }

    /// Loads `DIR/model.yaml` and `DIR/model.safetensors` onto `device`.
    pub fn load(dir: &Path, device: Device) -> Result<Self> {
        if !dir.is_dir() {
            return Err(Error::model(
                dir,
                "not a directory (expected model.yaml and model.safetensors)",
            ));
        }
        let spec = ModelSpec::load(dir)?;
        let mut model = Model::new(spec, device)?;
        model.load_weights(&dir.join(WEIGHTS_FILE))?;
        Ok(model)
    }

    fn load_weights(&mut self, path: &Path) -> Result<()> {
        if !path.is_file() {
            return Err(Error::model(path, "weights file missing"));
        }
        let stored: HashMap<String, Tensor> = Tensor::read_safetensors(path)
            .map_err(|e| Error::model(path, format!("cannot read safetensors: {e}")))?
            .into_iter()
            .collect();
        let variables = self.vs.variables();
        let mut names: Vec<&String> = variables.keys().collect();
        names.sort();
        for name in names {
            let var = &variables[name];
            let Some(value) = stored.get(name) else {
                return Err(Error::model(path, format!("tensor `{name}` is missing (model.yaml's architecture or tasks do not match the weights)")));
            };
            if value.size() != var.size() {
                return Err(Error::model(
                    path,
                    self.shape_mismatch(name, &value.size(), &var.size()),
                ));
            }
        }
        if let Some(extra) = stored.keys().filter(|k| !variables.contains_key(*k)).min() {
            return Err(Error::model(
                path,
                format!("unexpected tensor `{extra}` (model.yaml's architecture or tasks do not match the weights)"),
            ));
        }
        let _guard = tch::no_grad_guard();
        for (name, mut var) in variables {
            var.f_copy_(&stored[&name].to_kind(var.kind()))?;
        }
        Ok(())
    }

    fn shape_mismatch(&self, name: &str, stored: &[i64], expected: &[i64]) -> String {
        if name.starts_with("heads.semantic.") {
            format!(
                "class count mismatch: model.yaml lists {} classes but `{name}` is {stored:?} \
                 (holds {} classes)",
                expected[0], stored[0]
            )
        } else {
            format!("tensor `{name}` has shape {stored:?}, the architecture needs {expected:?}")
        }
    }

    /// Writes `DIR/model.yaml` and `DIR/model.safetensors`, creating DIR. Each file is
    /// written under a temporary name and renamed, so a crash never leaves a torn file.
    pub fn save(&self, dir: &Path) -> Result<()> {
        std::fs::create_dir_all(dir).map_err(|e| Error::io(dir, e))?;
        let weights_tmp = dir.join(format!("{WEIGHTS_FILE}.tmp.safetensors"));
        // In the usual layout whatever the model runs in (safetensors holds contiguous data).
        let mut named: Vec<(String, Tensor)> = {
            let _guard = tch::no_grad_guard();
            self.vs
                .variables()
                .into_iter()
                .map(|(name, t)| (name, t.contiguous()))
                .collect()
        };
        named.sort_by(|a, b| a.0.cmp(&b.0));
        Tensor::write_safetensors(&named, &weights_tmp)?;
        rename(&weights_tmp, &dir.join(WEIGHTS_FILE))?;
        let yaml =
            serde_yaml::to_string(&self.spec).map_err(|e| Error::model(dir, e.to_string()))?;
        let spec_tmp = dir.join(format!("{SPEC_FILE}.tmp"));
        std::fs::write(&spec_tmp, yaml).map_err(|e| Error::io(&spec_tmp, e))?;
        rename(&spec_tmp, &dir.join(SPEC_FILE))
    }

    /// Inference in channels-last layout (NHWC in memory): every convolution weight is laid
    /// out that way and the network carries its activations so (see
    /// `FcDenseNet::set_channels_last`). Same outputs up to rounding; whether it is faster
    /// depends on the device and precision (BENCHMARKS.md).
    pub fn use_channels_last(&mut self) {
        let _guard = tch::no_grad_guard();
        for (_, mut var) in self.vs.variables() {
            if var.dim() == 4 {
                var.set_data(&fc_densenet::to_channels_last(&var));
            }
        }
        self.net.set_channels_last(true);
    }

    /// The number of trainable parameters.
    pub fn num_parameters(&self) -> i64 {
        self.vs
            .trainable_variables()
            .iter()
            .map(|t| t.numel() as i64)
            .sum()
    }
}

fn rename(from: &Path, to: &Path) -> Result<()> {
    std::fs::rename(from, to).map_err(|e| Error::io(PathBuf::from(to), e))
}

/// A spec for a model with random weights: the preset's shape, `classes` semantic classes
/// (0 = no semantic head), a depth head if asked, at the given native size.
pub fn random_spec(
    arch: ArchConfig,
    preset: Option<&str>,
    classes: usize,
    depth: bool,
    height: i64,
    width: i64,
) -> ModelSpec {
    let semantic = (classes > 0).then(|| SemanticTask {
        classes: (0..classes)
            .map(|i| ClassInfo {
                name: format!("class{i}"),
                color: crate::colormap::distinct_color(i),
            })
            .collect(),
        aleatoric: true,
    });
    ModelSpec {
        format_version: FORMAT_VERSION,
        name: "random".into(),
        architecture: Architecture::from_config(preset, &arch),
        tasks: Tasks {
            semantic,
            depth: depth.then_some(DepthTask {
                likelihood: Likelihood::Gaussian,
                aleatoric: true,
                unit_m: 1.0,
            }),
        },
        input: InputSpec {
            height,
            width,
            ..InputSpec::default()
        },
        provenance: BTreeMap::from([("weights".into(), "random initialisation".into())]),
    }
}

/// The SHA-256 of a model directory's spec and weights (hex): two directories with the same
/// fingerprint hold the same model, wherever they are (eval states compare it before
/// merging).
pub fn fingerprint(dir: &Path) -> Result<String> {
    use sha2::Digest;
    let mut hash = sha2::Sha256::new();
    for name in [SPEC_FILE, WEIGHTS_FILE] {
        let path = dir.join(name);
        let mut file = std::fs::File::open(&path).map_err(|e| Error::io(&path, e))?;
        hash.update(name.as_bytes());
        std::io::copy(&mut file, &mut hash).map_err(|e| Error::io(&path, e))?;
    }
    Ok(format!("{:x}", hash.finalize()))
}

//! Evaluation of accuracy and uncertainty quality on a labelled split, with the engine
//! exactly as deployed (its mode, samples and resize policy). For semantic segmentation
//! and depth, and for each uncertainty (aleatoric, epistemic in mc and moments mode, and
//! total:
//! predictive entropy H[p̄] = aleatoric + epistemic, depth std √(aleatoric² + epistemic²)):
//!
//! - accuracy: mean IoU and pixel accuracy; depth rel, rms, log10, δ1..3;
//! - calibration: the semantic reliability diagram (confidence = p̄ of the label, 10 bins),
//!   ECE and the paper's calibration MSE, the NLL of the true class; for depth, coverage of
//!   the ±1σ and ±2σ intervals and of central intervals at 10..90 % against what the
//!   likelihood expects, and the NLL, with σ the total std;
//! - error detection: AUROC and average precision of each uncertainty for wrong pixels
//!   (misclassified; depth off by a factor 1.25 or more, the complement of δ1);
//! - precision (semantic) and RMS (depth) when keeping only the X % least uncertain pixels
//!   (the paper's curves): a useful uncertainty makes precision fall and RMS rise as
//!   uncertain pixels are added back;
//! - with noise masks (SPLITnoise/, from `synth`): each uncertainty on the noise patches
//!   over its value on clean pixels of the same frames;
//! - with OOD masks (SPLITood/): AUROC of each uncertainty for OOD pixels, and its mean on
//!   them over the mean on in-distribution pixels of the same frames.
//!
//! Depth uncertainty is scored only where ground-truth depth exists: where there is none
//! (sky) the variance head was never trained.

pub mod agreement;
pub mod compare;
pub mod files;
pub mod plot;
pub mod quality;

use std::ops::ControlFlow;
use std::path::{Path, PathBuf};

use serde::{Deserialize, Serialize};

use crate::engine::{Engine, Prediction};
use crate::error::{Error, Result};
use crate::train::data::Dataset;
use crate::train::metrics::{abs_rel, has_depth, scored_depth, Confusion, DepthErrors};
use quality::{Coverage, DepthCalibration, Ranking, Reliability, ReliabilityBin, INTERVAL_LEVELS};

/// Recall levels of the uncertainty curves: fraction of pixels kept, least uncertain first.
pub const RECALLS: [f64; 10] = [0.1, 0.2, 0.3, 0.4, 0.5, 0.6, 0.7, 0.8, 0.9, 1.0];

/// The uncertainties scored, in this order everywhere.
pub const UNCERTAINTIES: [&str; 3] = ["aleatoric", "epistemic", "total"];

/// A figure for people: `digits` decimals, or `n/a` where there is none.
pub fn format_value(v: Option<f64>, digits: usize) -> String {
    v.map_or("n/a".to_owned(), |v| format!("{v:.digits$}"))
}

/// A ratio for people (`2.35x`), or `n/a`.
pub fn format_ratio(v: Option<f64>) -> String {
    v.map_or("n/a".to_owned(), |v| format!("{v:.2}x"))
}

/// Rounding slack of [`UncertaintyQuality::kept_monotone`], relative.
pub const MONOTONE_SLACK: f64 = 1e-4;

/// A depth prediction is wrong when it is off by this factor or more (fails δ1).
pub const DEPTH_ERROR_FACTOR: f64 = 1.25;

/// How well one uncertainty does its jobs.
#[derive(Debug, Clone, Serialize)]
pub struct UncertaintyQuality {
    /// aleatoric, epistemic or total.
    pub uncertainty: String,
    /// AUROC and average precision for flagging wrong pixels.
    pub error_auroc: Option<f64>,
    pub error_average_precision: Option<f64>,
    /// AUROC for flagging OOD pixels (frames with an OOD mask).
    pub ood_auroc: Option<f64>,
    /// Precision (semantic) or RMS in metres (depth) of the least uncertain pixels, at
    /// each of [`RECALLS`].
    pub kept: Option<Vec<f64>>,
    /// Whether `kept` only gets worse as more uncertain pixels are added: precision never
    /// rises, RMS never falls, from one recall to the next (to within [`MONOTONE_SLACK`]).
    pub kept_monotone: Option<bool>,
    /// Mean on noise-patch pixels / mean on clean pixels of the same frames.
    pub noise_ratio: Option<f64>,
    /// Mean on OOD pixels / mean on in-distribution pixels of the same frames.
    pub ood_ratio: Option<f64>,
}

#[derive(Debug, Clone, Serialize)]
pub struct SemanticReport {
    pub mean_iou: f64,
    pub pixel_accuracy: f64,
    /// Mean −log p̄(true class) over labelled pixels, nats.
    pub nll: Option<f64>,
    pub ece: Option<f64>,
    pub calibration_mse: Option<f64>,
    pub reliability: Vec<ReliabilityBin>,
    pub uncertainties: Vec<UncertaintyQuality>,
    /// Pixel accuracy on the noise patches and on clean pixels of the same frames: what
    /// the noise costs (aleatoric uncertainty should follow the errors).
    pub noise_patch_accuracy: Option<[f64; 2]>,
}

#[derive(Debug, Clone, Serialize)]
pub struct DepthReport {
    pub rel: f64,
    pub rms: f64,
    pub log10: f64,
    pub deltas: [f64; 3],
    /// Mean negative log-likelihood under the predictive distribution (nats, density in
    /// 1/m); no value without any predicted std.
    pub nll: Option<f64>,
    /// Coverage of ±1σ and ±2σ.
    pub coverage: Vec<Coverage>,
    /// Coverage of the central 10 %, 20 %, .., 90 % intervals.
    pub calibration_curve: Vec<Coverage>,
    pub uncertainties: Vec<UncertaintyQuality>,
    /// Depth rel on the noise patches and on clean pixels of the same frames.
    pub noise_patch_rel: Option<[f64; 2]>,
    /// Pixels left out of the NLL and the coverage: their predicted std was 0 or not
    /// finite (a model sure to the last bit, or broken).
    pub pixels_without_std: u64,
}

#[derive(Debug, Clone, Serialize)]
pub struct Report {
    pub images: usize,
    pub mode: String,
    pub samples: usize,
    /// Mean time of one prediction (image in, all images out), milliseconds.
    pub ms_per_frame: f64,
    pub semantic: Option<SemanticReport>,
    pub depth: Option<DepthReport>,
    /// Depth scored only where the ground truth is nearer than this (metres).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub max_depth_m: Option<f32>,
    /// The engine's other settings that shape the figures (precision, logit-noise draws;
    /// moments: head samples, rules); absent for states of earlier versions.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub setup: Option<String>,
    /// Frames of the input not in the figures (absent when every frame is).
    #[serde(default, skip_serializing_if = "LeftOut::is_empty")]
    pub left_out: LeftOut,
    /// With `eval --agreement-with-mc T`: how closely the maps follow MC dropout's...
    #[serde(skip_serializing_if = "Option::is_none")]
    pub agreement: Option<agreement::AgreementReport>,
    /// ...and the evaluation of MC dropout itself on the same frames.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub reference: Option<Box<Report>>,
}

impl Report {
    /// "depth", with the cap when there is one: "depth (ground truth < 70 m)".
    pub fn depth_title(&self) -> String {
        match self.max_depth_m {
            Some(m) => format!("depth (ground truth < {m} m)"),
            None => "depth".into(),
        }
    }

    /// "N image(s), mode M (T sample(s); the engine's other settings)": what the figures
    /// are of, as the terminal and report.md begin.
    pub fn what(&self) -> String {
        let setup = self
            .setup
            .as_ref()
            .map_or(String::new(), |s| format!("; {s}"));
        format!(
            "{} image(s), mode {} ({} sample(s){setup})",
            self.images, self.mode, self.samples
        )
    }
}

/// Mean of values inside and outside a mask.
#[derive(Debug, Default, Clone, Copy, PartialEq, Serialize, Deserialize)]
struct MaskedMeans {
    inside: (f64, u64),
    outside: (f64, u64),
}

impl MaskedMeans {
    fn add(&mut self, values: &[f32], mask: &[bool]) {
        for (&v, &m) in values.iter().zip(mask) {
            self.add_value(v, m);
        }
    }

    /// One value, inside or outside the mask; a non-finite value is not counted.
    fn add_value(&mut self, v: f32, inside: bool) {
        if !v.is_finite() {
            return;
        }
        let slot = if inside {
            &mut self.inside
        } else {
            &mut self.outside
        };
        slot.0 += v as f64;
        slot.1 += 1;
    }

    fn merge(&mut self, other: &MaskedMeans) {
        self.inside.0 += other.inside.0;
        self.inside.1 += other.inside.1;
        self.outside.0 += other.outside.0;
        self.outside.1 += other.outside.1;
    }

    fn means(&self) -> Option<[f64; 2]> {
        (self.inside.1 > 0 && self.outside.1 > 0).then(|| {
            [
                self.inside.0 / self.inside.1 as f64,
                self.outside.0 / self.outside.1 as f64,
            ]
        })
    }

    fn ratio(&self) -> Option<f64> {
        (self.inside.1 > 0 && self.outside.1 > 0 && self.outside.0 > 0.0).then(|| {
            (self.inside.0 / self.inside.1 as f64) / (self.outside.0 / self.outside.1 as f64)
        })
    }
}

/// Per uncertainty kind: error and OOD rankings and the noise/OOD masked means.
#[derive(Debug, Default, Clone, PartialEq, Serialize, Deserialize)]
pub struct TaskQuality {
    pub error: [Ranking; 3],
    pub ood: [Ranking; 3],
    noise: [MaskedMeans; 3],
    ood_means: [MaskedMeans; 3],
}

impl TaskQuality {
    /// Pixel `k`'s uncertainties (by [`UNCERTAINTIES`]) against the frame's noise and OOD
    /// masks.
    fn add_masked(
        &mut self,
        u: &[Option<f32>; 3],
        k: usize,
        noise: Option<&[bool]>,
        ood: Option<&[bool]>,
    ) {
        for (kind, value) in u.iter().enumerate() {
            let Some(v) = *value else {
                continue;
            };
            if let Some(mask) = noise {
                self.noise[kind].add_value(v, mask[k]);
            }
            if let Some(mask) = ood {
                self.ood[kind].add(v, mask[k], 0.0);
                self.ood_means[kind].add_value(v, mask[k]);
            }
        }
    }

    fn merge(&mut self, other: &TaskQuality) {
        for k in 0..3 {
            self.error[k].merge(&other.error[k]);
            self.ood[k].merge(&other.ood[k]);
            self.noise[k].merge(&other.noise[k]);
            self.ood_means[k].merge(&other.ood_means[k]);
        }
    }

    /// `higher_is_better`: of the kept score (precision yes, RMS no).
    fn report(
        &self,
        present: [bool; 3],
        higher_is_better: bool,
        kept: impl Fn(&Ranking) -> Option<Vec<f64>>,
    ) -> Vec<UncertaintyQuality> {
        (0..3)
            .filter(|&k| present[k])
            .map(|k| UncertaintyQuality {
                uncertainty: UNCERTAINTIES[k].to_owned(),
                error_auroc: self.error[k].auroc(),
                error_average_precision: self.error[k].average_precision(),
                ood_auroc: self.ood[k].auroc(),
                kept: kept(&self.error[k]),
                kept_monotone: kept(&self.error[k]).map(|v| {
                    v.windows(2).all(|w| {
                        let slack = MONOTONE_SLACK * w[0].abs().max(1e-12);
                        match higher_is_better {
                            true => w[1] <= w[0] + slack,
                            false => w[1] >= w[0] - slack,
                        }
                    })
                }),
                noise_ratio: self.noise[k].ratio(),
                ood_ratio: self.ood_means[k].ratio(),
            })
            .collect()
    }
}

/// Everything gathered over the frames; [`Evaluation::report`] summarises it. Its state
/// serialises (`eval --state`) and merges ([`Evaluation::merge`]): the evaluations of
/// disjoint sets of frames merge into the evaluation of all of them, counts exactly, sums
/// up to float rounding.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Evaluation {
    pub images: usize,
    pub mode: String,
    pub samples: usize,
    time_ms: f64,
    classes: usize,
    confusion: Confusion,
    pub reliability: Reliability,
    nll: (f64, u64),
    /// Which of [`UNCERTAINTIES`] the semantic and depth outputs have.
    pub semantic_present: [bool; 3],
    pub depth_present: [bool; 3],
    pub semantic: TaskQuality,
    pub depth: TaskQuality,
    depth_errors: DepthErrors,
    pub depth_calibration: Option<DepthCalibration>,
    noise_accuracy: MaskedMeans,
    noise_rel: MaskedMeans,
    /// Frames of the input that are not in it (states saved before it existed have none).
    #[serde(default)]
    pub left_out: LeftOut,
    /// A key of each frame evaluated ([`frame_key`]): `eval --merge` refuses parts that
    /// share frames, which would count twice (states saved before it existed have none).
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub frame_keys: Vec<u64>,
    /// Depth scored only where the ground truth is nearer than this (metres; `eval
    /// --max-depth`); none: everywhere it exists.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub max_depth_m: Option<f32>,
    /// The engine's settings that shape the figures besides mode and samples (precision,
    /// logit-noise draws; moments: head samples, rules): merged states must agree (states
    /// of earlier versions have none).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub setup: Option<String>,
}

/// The engine's settings, besides mode and samples, that change what it predicts:
/// precision, logit-noise draws, and in moments mode the head samples and rules.
fn setup_of(config: &crate::engine::EngineConfig) -> String {
    let mut setup = format!(
        "{}, {} logit-noise draw(s)",
        config.precision, config.noise_samples
    );
    if config.mode == crate::config::Mode::Moments {
        // "joint": the head outputs drawn together (2026-12-07); states of the earlier
        // per-logit draws, which lack it, do not merge with these.
        setup += &format!(
            ", {} joint head sample(s), {} rules",
            config.moments_head_samples, config.moments_rules
        );
    }
    setup
}

/// What of an evaluation's input is not in its figures: frames skipped for bad input
/// (an unreadable image or ground truth), by reason, and inputs whose reading stopped at
/// damage (a truncated bag). The figures are those of the frames evaluated.
#[derive(Debug, Default, Clone, PartialEq, Serialize, Deserialize)]
pub struct LeftOut {
    pub skipped: std::collections::BTreeMap<String, u64>,
    /// One entry per damaged storage file: where reading of it stopped and why.
    pub damage: Vec<String>,
}

impl LeftOut {
    pub fn is_empty(&self) -> bool {
        self.skipped.is_empty() && self.damage.is_empty()
    }

    pub fn skip(&mut self, reason: impl Into<String>) {
        *self.skipped.entry(reason.into()).or_default() += 1;
    }

    pub fn merge(&mut self, other: &LeftOut) {
        for (reason, n) in &other.skipped {
            *self.skipped.entry(reason.clone()).or_default() += n;
        }
        self.damage.extend(other.damage.iter().cloned());
    }

    /// One line per reason and damaged input, for the terminal and report.md.
    pub fn lines(&self) -> Vec<String> {
        let skipped = self.skipped.values().sum::<u64>();
        let mut lines = Vec::new();
        if skipped > 0 {
            // Bad input (an unreadable image or ground truth) or a frame the damage cut
            // apart: the reasons say which.
            lines.push(format!("{skipped} frame(s) left out:"));
            lines.extend(self.skipped.iter().map(|(r, n)| format!("  {n} x {r}")));
        }
        lines.extend(self.damage.iter().map(|d| {
            format!("input damaged: {d} (no frame after it in that file is in the figures)")
        }));
        lines
    }
}

impl Evaluation {
    /// An empty evaluation of `engine`'s predictions, depth scored nearer than
    /// `max_depth_m` (metres) only.
    fn new(engine: &Engine, max_depth_m: Option<f32>) -> Self {
        let spec = &engine.model().spec;
        let classes = spec.num_classes();
        let config = engine.config();
        Evaluation {
            images: 0,
            mode: config.mode.to_string(),
            samples: if config.mode == crate::config::Mode::Mc {
                config.mc_samples
            } else {
                1
            },
            time_ms: 0.0,
            classes,
            confusion: Confusion::new(classes),
            reliability: Reliability::default(),
            nll: (0.0, 0),
            semantic_present: [false; 3],
            depth_present: [false; 3],
            semantic: TaskQuality::default(),
            depth: TaskQuality::default(),
            depth_errors: DepthErrors::default(),
            depth_calibration: spec
                .tasks
                .depth
                .as_ref()
                .map(|d| DepthCalibration::new(d.likelihood)),
            noise_accuracy: MaskedMeans::default(),
            noise_rel: MaskedMeans::default(),
            left_out: LeftOut::default(),
            frame_keys: Vec::new(),
            max_depth_m,
            setup: Some(setup_of(config)),
        }
    }

    /// Adds the evaluation of other frames by the same set-up (mode, samples, classes,
    /// tasks, depth cap and [`Evaluation::setup`] must agree; the reason is the error
    /// otherwise).
    pub fn merge(&mut self, other: &Evaluation) -> std::result::Result<(), String> {
        if (&other.mode, other.samples, other.classes) != (&self.mode, self.samples, self.classes) {
            return Err(format!(
                "mode {} with {} sample(s) and {} classes against mode {} with {} and {}",
                other.mode, other.samples, other.classes, self.mode, self.samples, self.classes
            ));
        }
        match (&other.depth_calibration, &self.depth_calibration) {
            (Some(theirs), Some(ours)) if theirs.likelihood != ours.likelihood => {
                return Err(format!(
                    "a {:?} depth likelihood against a {:?} one",
                    theirs.likelihood, ours.likelihood
                ));
            }
            (Some(_), None) | (None, Some(_)) => {
                return Err("one has depth, the other not".into());
            }
            _ => {}
        }
        if other.max_depth_m != self.max_depth_m {
            let cap =
                |m: Option<f32>| m.map_or("no depth cap".into(), |m| format!("depth < {m} m"));
            return Err(format!(
                "{} against {}",
                cap(other.max_depth_m),
                cap(self.max_depth_m)
            ));
        }
        if let (Some(theirs), Some(ours)) = (&other.setup, &self.setup) {
            if theirs != ours {
                return Err(format!("{theirs} against {ours}"));
            }
        }
        self.setup = self.setup.take().or_else(|| other.setup.clone());
        self.frame_keys.extend_from_slice(&other.frame_keys);
        self.images += other.images;
        self.time_ms += other.time_ms;
        self.left_out.merge(&other.left_out);
        self.confusion.merge(&other.confusion)?;
        self.reliability.merge(&other.reliability);
        self.nll.0 += other.nll.0;
        self.nll.1 += other.nll.1;
        for k in 0..3 {
            self.semantic_present[k] |= other.semantic_present[k];
            self.depth_present[k] |= other.depth_present[k];
        }
        self.semantic.merge(&other.semantic);
        self.depth.merge(&other.depth);
        self.depth_errors.merge(&other.depth_errors);
        if let (Some(a), Some(b)) = (self.depth_calibration.as_mut(), &other.depth_calibration) {
            a.merge(b);
        }
        self.noise_accuracy.merge(&other.noise_accuracy);
        self.noise_rel.merge(&other.noise_rel);
        Ok(())
    }

    /// Whether its histograms and matrix have the sizes this version's code indexes (a
    /// state read from a file is checked before it is merged or reported).
    fn check_shapes(&self) -> std::result::Result<(), String> {
        if !self.confusion.is_square_of(self.classes) {
            return Err(format!(
                "the confusion matrix is not {0}x{0} ({0} classes)",
                self.classes
            ));
        }
        let rankings = [&self.semantic, &self.depth]
            .into_iter()
            .flat_map(|t| t.error.iter().chain(&t.ood));
        for ranking in rankings {
            if !ranking.has_bins() {
                return Err("an uncertainty histogram has not every bin".into());
            }
        }
        if self
            .depth_calibration
            .as_ref()
            .is_some_and(|c| !c.has_bins())
        {
            return Err("the depth calibration histogram has not every bin".into());
        }
        Ok(())
    }

    pub fn report(&self) -> Report {
        let semantic = (self.classes > 0 && self.labelled_pixels() > 0).then(|| SemanticReport {
            mean_iou: self.confusion.mean_iou(),
            pixel_accuracy: self.confusion.pixel_accuracy(),
            nll: (self.nll.1 > 0).then(|| self.nll.0 / self.nll.1 as f64),
            ece: self.reliability.ece(),
            calibration_mse: self.reliability.calibration_mse(),
            reliability: self.reliability.bins(),
            uncertainties: self
                .semantic
                .report(self.semantic_present, true, |r| r.kept_means(&RECALLS)),
            noise_patch_accuracy: self.noise_accuracy.means(),
        });
        let depth = (self.depth_errors.count() > 0).then(|| {
            let cal = self.depth_calibration.as_ref();
            DepthReport {
                rel: self.depth_errors.rel(),
                rms: self.depth_errors.rms(),
                log10: self.depth_errors.log10(),
                deltas: self.depth_errors.deltas(),
                nll: cal.and_then(DepthCalibration::nll),
                coverage: [1.0, 2.0]
                    .iter()
                    .filter_map(|&k| cal.and_then(|c| c.coverage(k)))
                    .collect(),
                calibration_curve: cal
                    .and_then(|c| c.curve(&INTERVAL_LEVELS))
                    .unwrap_or_default(),
                uncertainties: self.depth.report(self.depth_present, false, |r| {
                    r.kept_means(&RECALLS)
                        .map(|v| v.into_iter().map(f64::sqrt).collect())
                }),
                noise_patch_rel: self.noise_rel.means(),
                pixels_without_std: cal.map_or(0, |c| c.without_sigma),
            }
        });
        Report {
            images: self.images,
            mode: self.mode.clone(),
            samples: self.samples,
            ms_per_frame: if self.images > 0 {
                self.time_ms / self.images as f64
            } else {
                0.0
            },
            semantic,
            depth,
            max_depth_m: self.max_depth_m,
            setup: self.setup.clone(),
            left_out: self.left_out.clone(),
            agreement: None,
            reference: None,
        }
    }

    /// Labelled (non-void) pixels seen: each went into one reliability bin.
    fn labelled_pixels(&self) -> u64 {
        self.reliability.count.iter().sum()
    }

    /// Adds one frame's prediction against its ground truth and masks.
    fn add(
        &mut self,
        p: &Prediction,
        labels: Option<&[i64]>,
        depth: Option<&[f32]>,
        noise: Option<&[bool]>,
        ood: Option<&[bool]>,
    ) {
        self.images += 1;
        self.time_ms += p.timing.total_ms;
        if let (Some(s), Some(truth)) = (&p.semantic, labels) {
            let (w, h) = s.labels.dimensions();
            let predicted: Vec<i64> = (0..h)
                .flat_map(|y| (0..w).map(move |x| (x, y)))
                .map(|(x, y)| s.labels.get(x, y) as i64)
                .collect();
            self.confusion.add(truth, &predicted);
            let aleatoric = s.aleatoric_entropy.as_raw();
            let epistemic = s.epistemic_mutual_information.as_ref().map(|m| m.as_raw());
            self.semantic_present = [true, epistemic.is_some(), true];
            let pixels = truth.len();
            let uncertainty = |k: usize| -> [Option<f32>; 3] {
                let e = epistemic.map(|m| m[k]);
                [Some(aleatoric[k]), e, Some(aleatoric[k] + e.unwrap_or(0.0))]
            };
            // 1/0 per labelled pixel; NaN for void, which is not scored.
            let correct: Vec<f32> = truth
                .iter()
                .zip(&predicted)
                .map(|(&t, &pr)| match t >= 0 && t < self.classes as i64 {
                    true => (t == pr) as u8 as f32,
                    false => f32::NAN,
                })
                .collect();
            for k in 0..pixels {
                let u = uncertainty(k);
                if !correct[k].is_nan() {
                    let right = correct[k] == 1.0;
                    self.reliability.add(s.confidence.as_raw()[k], right);
                    for (kind, value) in u.iter().enumerate() {
                        if let Some(v) = value {
                            self.semantic.error[kind].add(*v, !right, correct[k] as f64);
                        }
                    }
                    // A NaN probability (a broken model) is left out, as the reliability
                    // and the rankings leave a NaN out.
                    let p_true = s
                        .probabilities
                        .as_ref()
                        .map(|probs| probs[truth[k] as usize * pixels + k] as f64)
                        .filter(|p| !p.is_nan());
                    if let Some(p_true) = p_true {
                        self.nll.0 -= p_true.max(1e-12).ln();
                        self.nll.1 += 1;
                    }
                }
                self.semantic.add_masked(&u, k, noise, ood);
            }
            if let Some(mask) = noise {
                self.noise_accuracy.add(&correct, mask);
            }
        }
        if let (Some(d), Some(truth)) = (&p.depth, depth) {
            self.depth_errors.add(truth, d.depth_m.as_raw());
            let predicted = d.depth_m.as_raw();
            let aleatoric = d.aleatoric_std_m.as_ref().map(|a| a.as_raw());
            let epistemic = d.epistemic_std_m.as_ref().map(|e| e.as_raw());
            self.depth_present = [
                aleatoric.is_some(),
                epistemic.is_some(),
                aleatoric.is_some() || epistemic.is_some(),
            ];
            let uncertainty = |k: usize| -> [Option<f32>; 3] {
                let (a, e) = (aleatoric.map(|a| a[k]), epistemic.map(|e| e[k]));
                // (hypot: squares of tiny or huge stds under- or overflow f32.)
                let total =
                    (a.is_some() || e.is_some()).then(|| a.unwrap_or(0.0).hypot(e.unwrap_or(0.0)));
                [a, e, total]
            };
            for (k, (&y, &pr)) in truth.iter().zip(predicted).enumerate() {
                if !has_depth(y) {
                    continue;
                }
                let u = uncertainty(k);
                // Scored like the depth errors: no predicted depth counts as 1 mm.
                let pr = scored_depth(pr as f64);
                let factor = (y as f64 / pr).max(pr / y as f64);
                let sq = (y as f64 - pr).powi(2);
                for (kind, value) in u.iter().enumerate() {
                    if let Some(v) = value {
                        self.depth.error[kind].add(*v, factor >= DEPTH_ERROR_FACTOR, sq);
                    }
                }
                if let (Some(cal), Some(sigma)) = (self.depth_calibration.as_mut(), u[2]) {
                    cal.add(y, pr as f32, sigma);
                }
                // Depth uncertainty where depth exists: elsewhere (sky) the variance head
                // was never trained.
                self.depth.add_masked(&u, k, noise, ood);
            }
            if let Some(mask) = noise {
                let rel: Vec<f32> = truth
                    .iter()
                    .zip(predicted)
                    .map(|(&y, &pr)| match has_depth(y) {
                        true => abs_rel(y as f64, pr as f64) as f32,
                        false => f32::NAN, // no depth (sky): not scored
                    })
                    .collect();
                self.noise_rel.add(&rel, mask);
            }
        }
    }
}

/// A split's SPLIT{kind}/ folder of masks (noise, ood), found by stem like labels.
struct MaskFolder {
    kind: &'static str,
    dir: PathBuf,
    by_stem: std::collections::HashMap<std::ffi::OsString, PathBuf>,
}

impl MaskFolder {
    /// `None` where the split has no such folder.
    fn open(root: &Path, split: &str, kind: &'static str) -> Result<Option<Self>> {
        let dir = root.join(format!("{split}{kind}"));
        if !dir.is_dir() {
            return Ok(None);
        }
        let by_stem = crate::train::data::images_by_stem(&dir)?;
        // Nonzero is in: a lossy format's ringing around a mask's edges would be too.
        let lossy = by_stem.values().find(|p| {
            p.extension()
                .is_some_and(|e| e.eq_ignore_ascii_case("jpg") || e.eq_ignore_ascii_case("jpeg"))
        });
        if let Some(example) = lossy {
            log::warn!(
                "{} holds JPEG masks ({}, say): every nonzero pixel counts as in, the \
                 compression's ringing around the edges too; save masks losslessly (PNG)",
                dir.display(),
                example.display()
            );
        }
        Ok(Some(MaskFolder { kind, dir, by_stem }))
    }

    /// The mask of `image`; one that is missing, cannot be read or has another size than
    /// the image is an error naming the file (the frame is left out: without its mask it
    /// would count as a frame without noise or OOD pixels and change the figures unseen).
    fn mask(&self, image: &Path, size: (u32, u32)) -> Result<Vec<bool>> {
        let kind = self.kind;
        let path = self
            .by_stem
            .get(image.file_stem().unwrap_or_default())
            .ok_or_else(|| Error::Dataset {
                path: image.to_owned(),
                message: format!(
                    "no {kind} mask of the same name in {} (a split with one needs one for \
                     every image)",
                    self.dir.display()
                ),
            })?;
        let img = crate::output::open_image(path)?;
        if (img.width(), img.height()) != size {
            return Err(Error::Image {
                path: path.clone(),
                message: format!(
                    "{kind} mask is {}x{}, the image {}x{}",
                    img.width(),
                    img.height(),
                    size.0,
                    size.1
                ),
            });
        }
        Ok(mask_pixels(img))
    }
}

/// A mask image's pixels as in or out: nonzero is in, as in a labelled bag's masks (a
/// mask of 0/1 values is as good as one of 0/255); a pixel with any nonzero channel of a
/// colour mask is in.
fn mask_pixels(img: image::DynamicImage) -> Vec<bool> {
    use image::DynamicImage as D;
    match img {
        D::ImageLuma8(m) => m.into_raw().into_iter().map(|v| v != 0).collect(),
        D::ImageLuma16(m) => m.into_raw().into_iter().map(|v| v != 0).collect(),
        other => other
            .to_rgba16()
            .pixels()
            .map(|p| p.0[..3].iter().any(|&c| c != 0))
            .collect(),
    }
}

/// What `eval --state` writes: an evaluation's mergeable state with where it came from.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct EvaluationState {
    /// Always [`STATE_FORMAT`].
    pub format: String,
    /// The model directory and the data (root and split, or bag) evaluated.
    pub model: String,
    pub data: String,
    /// The model's [`crate::model::fingerprint`] (states of earlier versions have none).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub model_sha256: Option<String>,
    pub evaluation: Evaluation,
}

/// The `format` of an evaluation state file.
pub const STATE_FORMAT: &str = "bayes_perception eval state 1";

impl EvaluationState {
    /// `model_sha256` as taken before the model loaded (its files may change while the
    /// evaluation runs).
    pub fn new(evaluation: Evaluation, model: &Path, data: String, model_sha256: String) -> Self {
        EvaluationState {
            format: STATE_FORMAT.into(),
            model: model.display().to_string(),
            data,
            model_sha256: Some(model_sha256),
            evaluation,
        }
    }

    /// Reads a state file written by `eval --state` (size-limited: the histograms of one
    /// state take a few MB).
    pub fn load(path: &Path) -> Result<Self> {
        let text =
            crate::text_file::read_limited(path, 256 << 20).map_err(|e| Error::io(path, e))?;
        let state: EvaluationState = serde_json::from_str(&text).map_err(|e| {
            Error::config(
                path.display().to_string(),
                "(file)",
                format!("not an eval state: {e}"),
            )
        })?;
        if state.format != STATE_FORMAT {
            return Err(Error::config(
                path.display().to_string(),
                "format",
                format!("`{}`; expected `{STATE_FORMAT}`", state.format),
            ));
        }
        if let Err(what) = state.evaluation.check_shapes() {
            return Err(Error::config(
                path.display().to_string(),
                "evaluation",
                format!("{what} (a file cut short or edited?)"),
            ));
        }
        Ok(state)
    }

    pub fn save(&self, path: &Path) -> Result<()> {
        let text = serde_json::to_string(self).expect("states serialise");
        crate::output::write_file(path, text.as_bytes())
    }
}

/// Evaluates engines on the same frames of a CamVid-layout split (labels, optional depth,
/// noise and OOD masks; one loaded image each, e.g. a mode against its reference) of at
/// most `max_images` images (0 = all), depth scored nearer than `max_depth_m` metres only
/// (see [`Evaluator::new`]). Engines should keep class probabilities
/// ([`crate::EngineConfig::keep_probabilities`]) for the semantic NLL. `on_frame(k, i, n,
/// image, predictions)` sees each frame after its predictions (in engine order): the
/// `k`-th evaluated, image `i` of `n` (progress, contact sheets); it may stop the
/// evaluation there (`Break`: the frames so far are evaluated). Frames whose files
/// cannot be read are skipped and counted ([`Evaluation::left_out`]).
pub fn evaluate_together(
    engines: &[&Engine],
    root: &Path,
    split: &str,
    max_images: usize,
    max_depth_m: Option<f32>,
    mut on_frame: impl FnMut(
        usize,
        usize,
        usize,
        &image::RgbImage,
        &[Prediction],
    ) -> Result<ControlFlow<()>>,
) -> Result<Vec<Evaluation>> {
    let dataset = Dataset::camvid(root, split)?;
    let masks = [
        MaskFolder::open(root, split, "noise")?,
        MaskFolder::open(root, split, "ood")?,
    ];
    for engine in engines {
        let classes = engine.model().spec.num_classes();
        if classes > 0 && dataset.void_id() as usize != classes {
            return Err(Error::model(
                root,
                format!(
                    "the model has {classes} classes, the data {}",
                    dataset.void_id()
                ),
            ));
        }
    }
    let mut evaluator = Evaluator::new(engines, max_depth_m);
    let n = if max_images == 0 {
        dataset.len()
    } else {
        dataset.len().min(max_images)
    };
    let mut left_out = LeftOut::default();
    let mut evaluated = 0;
    for i in 0..n {
        // A frame whose image or ground truth cannot be read is skipped and counted; a
        // failure another try may not meet (out of file handles) stops the evaluation.
        let frame = match load_frame(&dataset, &masks, i) {
            Ok(frame) => frame,
            Err(e) if !e.is_transient() => {
                let reason = crate::error::one_line(&e);
                log::warn!("skipped: {reason}");
                left_out.skip(reason);
                continue;
            }
            Err(e) => return Err(e),
        };
        let predictions = evaluator.add(&frame)?;
        let flow = on_frame(evaluated, i, n, &frame.rgb, &predictions)?;
        evaluated += 1;
        if flow.is_break() {
            break;
        }
    }
    let mut evaluations = evaluator.finish();
    for evaluation in &mut evaluations {
        evaluation.left_out = left_out.clone();
    }
    Ok(evaluations)
}

/// Frame `i` of a CamVid-layout split with its ground truth and masks.
fn load_frame(
    dataset: &Dataset,
    masks: &[Option<MaskFolder>; 2],
    i: usize,
) -> Result<LabelledFrame> {
    let sample = dataset.load(i)?;
    let image_path = &dataset.files[i].image;
    let size = sample.rgb.dimensions();
    let mask = |folder: &Option<MaskFolder>| {
        folder
            .as_ref()
            .map(|f| f.mask(image_path, size))
            .transpose()
    };
    Ok(LabelledFrame {
        id: image_path
            .file_name()
            .map_or_else(String::new, |n| n.to_string_lossy().into_owned()),
        noise: mask(&masks[0])?,
        ood: mask(&masks[1])?,
        rgb: sample.rgb,
        labels: sample
            .labels
            .map(|l| l.into_iter().map(i64::from).collect()),
        depth: sample.depth,
    })
}

/// One camera frame with its ground truth, wherever it is stored (a dataset on disk, a
/// labelled bag). Every per-pixel vector is row-major at the image's size.
#[derive(Debug, Clone)]
pub struct LabelledFrame {
    /// Where the frame comes from, within its source: the image's file name, or the camera
    /// topic and stamp (part of [`frame_key`]).
    pub id: String,
    pub rgb: image::RgbImage,
    /// Class ids; at or above the model's class count = void. `None`: no labels.
    pub labels: Option<Vec<i64>>,
    /// Metres; NaN or 0 = no depth. `None`: no depth ground truth.
    pub depth: Option<Vec<f32>>,
    /// Pixels under a sensor-noise patch / on an out-of-distribution object.
    pub noise: Option<Vec<bool>>,
    pub ood: Option<Vec<bool>>,
}

/// What identifies a frame among evaluations to be merged: the first 8 bytes of the
/// SHA-256 of its id (file name, or camera topic and stamp), size and pixels. The same
/// frame evaluated twice (a state merged twice, a copy of a shard or a bag, overlapping
/// `--max-images` parts) has the same key wherever it lies; frames of equal pixels from
/// different sources (a camera's black start-up frames in two bags) do not, and two
/// different frames share one with odds of about 1 in 2^64 per pair.
pub fn frame_key(id: &str, rgb: &image::RgbImage) -> u64 {
    use sha2::Digest;
    let mut hash = sha2::Sha256::new();
    hash.update((id.len() as u64).to_le_bytes());
    hash.update(id.as_bytes());
    hash.update(rgb.width().to_le_bytes());
    hash.update(rgb.height().to_le_bytes());
    hash.update(rgb.as_raw());
    let digest = hash.finalize();
    u64::from_le_bytes(digest[..8].try_into().expect("32 bytes"))
}

/// Runs engines on labelled frames as they come and gathers one [`Evaluation`] each.
pub struct Evaluator<'a> {
    engines: Vec<&'a Engine>,
    evaluations: Vec<Evaluation>,
    max_depth_m: Option<f32>,
    warmed_up: bool,
}

impl<'a> Evaluator<'a> {
    /// Depth is scored where the ground truth is nearer than `max_depth_m` metres (all of
    /// it: `None`); farther pixels count as having no depth, like the sky.
    pub fn new(engines: &[&'a Engine], max_depth_m: Option<f32>) -> Self {
        Evaluator {
            engines: engines.to_vec(),
            evaluations: engines
                .iter()
                .map(|e| Evaluation::new(e, max_depth_m))
                .collect(),
            max_depth_m,
            warmed_up: false,
        }
    }

    /// Predicts `frame` with every engine and scores the predictions; returns them in
    /// engine order. The first frame is predicted once more before, untimed, so that ms
    /// per frame leaves out what only the first frame pays (libtorch's lazy set-up,
    /// cuDNN's algorithm search, sizing the MC chunk to GPU memory); seeded frames are
    /// sampled from the seed each, so it changes no result.
    pub fn add(&mut self, frame: &LabelledFrame) -> Result<Vec<Prediction>> {
        if !self.warmed_up {
            for engine in &self.engines {
                engine.predict(&frame.rgb)?;
            }
            self.warmed_up = true;
        }
        let mut predictions = Vec::with_capacity(self.engines.len());
        let key = frame_key(&frame.id, &frame.rgb);
        let depth = frame
            .depth
            .as_deref()
            .map(|d| capped_depth(d, self.max_depth_m));
        for (engine, evaluation) in self.engines.iter().zip(&mut self.evaluations) {
            let p = engine.predict(&frame.rgb)?;
            evaluation.frame_keys.push(key);
            evaluation.add(
                &p,
                frame.labels.as_deref(),
                depth.as_deref(),
                frame.noise.as_deref(),
                frame.ood.as_deref(),
            );
            predictions.push(p);
        }
        Ok(predictions)
    }

    pub fn finish(self) -> Vec<Evaluation> {
        self.evaluations
    }
}

/// Ground-truth depth with the values at or beyond `max_depth_m` as no depth (NaN).
fn capped_depth(depth: &[f32], max_depth_m: Option<f32>) -> std::borrow::Cow<'_, [f32]> {
    match max_depth_m {
        Some(cap) => depth
            .iter()
            .map(|&d| if d >= cap { f32::NAN } else { d })
            .collect(),
        None => depth.into(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn kept_curves_are_checked_for_monotony_in_the_right_direction() {
        let mut q = TaskQuality::default();
        // Aleatoric: wrong pixels are the most uncertain (precision falls);
        // epistemic: wrong pixels the least uncertain (precision rises).
        for i in 0..100 {
            let wrong = i >= 80;
            q.error[0].add(0.01 * (i + 1) as f32, wrong, (!wrong) as u8 as f64);
            q.error[1].add(0.01 * (100 - i) as f32, wrong, (!wrong) as u8 as f64);
        }
        let kept = |r: &Ranking| r.kept_means(&RECALLS);
        let semantic = q.report([true, true, false], true, kept);
        assert_eq!(semantic[0].kept_monotone, Some(true));
        assert_eq!(semantic[1].kept_monotone, Some(false));
        // Read as RMS (lower is better) the verdicts swap.
        let depth = q.report([true, true, false], false, kept);
        assert_eq!(depth[0].kept_monotone, Some(false));
        assert_eq!(depth[1].kept_monotone, Some(true));
    }

    #[test]
    fn masked_ratio() {
        let mut m = MaskedMeans::default();
        m.add(
            &[4.0, 4.0, 1.0, 1.0, f32::NAN],
            &[true, true, false, false, true],
        );
        assert_eq!(m.ratio(), Some(4.0));
        assert_eq!(m.means(), Some([4.0, 1.0]));
        assert_eq!(MaskedMeans::default().ratio(), None);
    }

    #[test]
    fn masks_pair_with_images_by_stem_and_a_missing_one_is_an_error() {
        let root = tempfile::tempdir().unwrap();
        assert!(MaskFolder::open(root.path(), "test", "noise")
            .unwrap()
            .is_none());
        std::fs::create_dir(root.path().join("testnoise")).unwrap();
        image::GrayImage::from_raw(2, 1, vec![0, 255])
            .unwrap()
            .save(root.path().join("testnoise/0001.png"))
            .unwrap();
        let masks = MaskFolder::open(root.path(), "test", "noise")
            .unwrap()
            .unwrap();
        let image = root.path().join("test/0001.jpg");
        assert_eq!(masks.mask(&image, (2, 1)).unwrap(), [false, true]);
        let e = masks.mask(&image, (3, 1)).unwrap_err().to_string();
        assert!(e.contains("noise mask is 2x1"), "{e}");
        let e = masks
            .mask(&root.path().join("test/0002.jpg"), (2, 1))
            .unwrap_err()
            .to_string();
        assert!(e.contains("0002.jpg") && e.contains("no noise mask"), "{e}");
        // Nonzero is in whatever the scale or format: 0/1, 16-bit, colour.
        let save = |name: &str, img: image::DynamicImage| {
            img.save(root.path().join("testnoise").join(name)).unwrap();
        };
        save(
            "0003.png",
            image::GrayImage::from_raw(3, 1, vec![0, 1, 2])
                .unwrap()
                .into(),
        );
        save(
            "0004.png",
            image::ImageBuffer::<image::Luma<u16>, _>::from_raw(3, 1, vec![0, 1, 65535])
                .unwrap()
                .into(),
        );
        save(
            "0005.png",
            image::RgbImage::from_raw(3, 1, vec![0, 0, 0, 0, 0, 1, 255, 255, 255])
                .unwrap()
                .into(),
        );
        let masks = MaskFolder::open(root.path(), "test", "noise")
            .unwrap()
            .unwrap();
        for stem in ["0003", "0004", "0005"] {
            let image = root.path().join(format!("test/{stem}.jpg"));
            assert_eq!(
                masks.mask(&image, (3, 1)).unwrap(),
                [false, true, true],
                "{stem}"
            );
        }
    }

    #[test]
    fn frame_keys_tell_sources_apart_and_find_the_same_frame() {
        let black = image::RgbImage::new(4, 3);
        let mut other = black.clone();
        other.put_pixel(1, 1, image::Rgb([0, 0, 1]));
        let key = frame_key("/cam@10.000000000", &black);
        assert_eq!(key, frame_key("/cam@10.000000000", &black.clone()));
        assert_ne!(key, frame_key("/cam@11.000000000", &black), "another stamp");
        assert_ne!(key, frame_key("/cam@10.000000000", &other), "other pixels");
        assert_ne!(
            frame_key("a", &image::RgbImage::new(12, 1)),
            frame_key("a", &image::RgbImage::new(4, 3)),
            "same bytes, other size"
        );
    }
}

//! Evaluation of accuracy and uncertainty quality on a labelled split, with the engine
//! exactly as deployed (its mode, samples and resize policy):
//!
//! - segmentation mean IoU and pixel accuracy; depth rel, rms, log10, δ1..3;
//! - precision (semantic) and RMS (depth) when keeping only the X % least uncertain
//!   pixels, for aleatoric and epistemic uncertainty (the paper's curves): a useful
//!   uncertainty makes precision fall and RMS rise as uncertain pixels are added back;
//! - with noise masks (SPLITnoise/, from `synth`): aleatoric uncertainty on the noise
//!   patches over its value on clean pixels of the same frames;
//! - with OOD masks (SPLITood/): epistemic uncertainty on out-of-distribution pixels over
//!   its value on in-distribution pixels of the same frames.

use std::path::Path;

use serde::Serialize;

use crate::engine::Engine;
use crate::error::{Error, Result};
use crate::train::data::Dataset;
use crate::train::metrics::{abs_rel, has_depth, Confusion, DepthErrors};

/// Recall levels of the uncertainty curves: fraction of pixels kept, least uncertain first.
pub const RECALLS: [f64; 10] = [0.1, 0.2, 0.3, 0.4, 0.5, 0.6, 0.7, 0.8, 0.9, 1.0];

/// Keeps at most this many pixels per curve (every k-th pixel beyond it).
const MAX_CURVE_PIXELS: usize = 4_000_000;

#[derive(Debug, Clone, Default, Serialize)]
pub struct Report {
    pub images: usize,
    pub mode: String,
    pub samples: usize,
    pub mean_iou: Option<f64>,
    pub pixel_accuracy: Option<f64>,
    pub depth_rel: Option<f64>,
    pub depth_rms: Option<f64>,
    pub depth_log10: Option<f64>,
    pub depth_deltas: Option<[f64; 3]>,
    /// Precision at each of [`RECALLS`], pixels sorted by semantic aleatoric uncertainty.
    pub precision_by_aleatoric: Option<Vec<f64>>,
    pub precision_by_epistemic: Option<Vec<f64>>,
    /// Depth RMS (m) at each of [`RECALLS`], pixels sorted by depth uncertainty.
    pub depth_rms_by_aleatoric: Option<Vec<f64>>,
    pub depth_rms_by_epistemic: Option<Vec<f64>>,
    /// Mean uncertainty on masked pixels / mean on unmasked pixels of the same frames (for
    /// depth, pixels with ground-truth depth only).
    pub semantic_aleatoric_noise_ratio: Option<f64>,
    pub depth_aleatoric_noise_ratio: Option<f64>,
    /// Pixel accuracy on the noise patches and on clean pixels of the same frames: how
    /// much the noise actually costs (aleatoric uncertainty should follow the errors).
    pub noise_patch_accuracy: Option<[f64; 2]>,
    /// Depth rel on the noise patches and on clean pixels of the same frames.
    pub noise_patch_depth_rel: Option<[f64; 2]>,
    pub semantic_epistemic_ood_ratio: Option<f64>,
    pub depth_epistemic_ood_ratio: Option<f64>,
}

/// Mean of values inside and outside a mask.
#[derive(Debug, Default, Clone, Copy)]
struct MaskedMeans {
    inside: (f64, u64),
    outside: (f64, u64),
}

impl MaskedMeans {
    fn add(&mut self, values: &[f32], mask: &[bool]) {
        for (&v, &m) in values.iter().zip(mask) {
            if !v.is_finite() {
                continue;
            }
            let slot = if m {
                &mut self.inside
            } else {
                &mut self.outside
            };
            slot.0 += v as f64;
            slot.1 += 1;
        }
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

/// (uncertainty, score) pairs for a curve: score is 1/0 correctness or a squared error.
#[derive(Debug, Default)]
struct Curve {
    points: Vec<(f32, f32)>,
    stride: usize,
    seen: usize,
}

impl Curve {
    fn add(&mut self, uncertainty: f32, score: f32) {
        self.seen += 1;
        if self.stride == 0 {
            self.stride = 1;
        }
        if self.seen % self.stride == 0 && uncertainty.is_finite() {
            self.points.push((uncertainty, score));
            if self.points.len() > MAX_CURVE_PIXELS {
                // Thin out to every other point and keep sampling at half the rate.
                let kept: Vec<_> = self.points.iter().step_by(2).copied().collect();
                self.points = kept;
                self.stride *= 2;
            }
        }
    }

    /// Mean score of the least uncertain fraction r of the pixels, for each recall.
    fn means(mut self) -> Option<Vec<f64>> {
        if self.points.is_empty() {
            return None;
        }
        self.points.sort_by(|a, b| a.0.total_cmp(&b.0));
        let n = self.points.len();
        let mut prefix = Vec::with_capacity(n + 1);
        prefix.push(0.0f64);
        for (_, s) in &self.points {
            prefix.push(prefix.last().unwrap() + *s as f64);
        }
        Some(
            RECALLS
                .iter()
                .map(|r| {
                    let k = ((r * n as f64).round() as usize).clamp(1, n);
                    prefix[k] / k as f64
                })
                .collect(),
        )
    }
}

/// The SPLIT{kind}/ mask of `image` (`None` if the split has none for it); a mask that
/// cannot be read or has another size than the image is an error naming the file.
fn mask_for(
    root: &Path,
    split: &str,
    kind: &str,
    image: &Path,
    size: (u32, u32),
) -> Result<Option<Vec<bool>>> {
    let Some(name) = image.file_name() else {
        return Ok(None);
    };
    let path = root.join(format!("{split}{kind}")).join(name);
    if !path.is_file() {
        return Ok(None);
    }
    let img = image::open(&path)
        .map_err(|e| Error::Image {
            path: path.clone(),
            message: format!("cannot read the {kind} mask: {e}"),
        })?
        .to_luma8();
    if img.dimensions() != size {
        return Err(Error::Image {
            path,
            message: format!(
                "{kind} mask is {}x{}, the image {}x{}",
                img.width(),
                img.height(),
                size.0,
                size.1
            ),
        });
    }
    Ok(Some(img.into_raw().into_iter().map(|v| v > 127).collect()))
}

/// Evaluates `engine` on a CamVid-layout split (labels, optional depth, noise and OOD
/// masks) of at most `max_images` images (0 = all).
pub fn evaluate(
    engine: &Engine,
    root: &Path,
    split: &str,
    max_images: usize,
    mut on_image: impl FnMut(usize, usize),
) -> Result<Report> {
    let dataset = Dataset::camvid(root, split)?;
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
    let n = if max_images == 0 {
        dataset.len()
    } else {
        dataset.len().min(max_images)
    };
    let mut confusion = Confusion::new(classes);
    let mut depth_errors = DepthErrors::default();
    let (mut prec_ale, mut prec_epi, mut rms_ale, mut rms_epi) = (
        Curve::default(),
        Curve::default(),
        Curve::default(),
        Curve::default(),
    );
    let (mut sem_noise, mut depth_noise, mut sem_ood, mut depth_ood, mut noise_acc, mut noise_rel) = (
        MaskedMeans::default(),
        MaskedMeans::default(),
        MaskedMeans::default(),
        MaskedMeans::default(),
        MaskedMeans::default(),
        MaskedMeans::default(),
    );
    for i in 0..n {
        on_image(i, n);
        let sample = dataset.load(i)?;
        let image_path = &dataset.files[i].image;
        let p = engine.predict(&sample.rgb)?;
        let size = sample.rgb.dimensions();
        let noise = mask_for(root, split, "noise", image_path, size)?;
        let ood = mask_for(root, split, "ood", image_path, size)?;
        if let (Some(s), Some(truth)) = (&p.semantic, &sample.labels) {
            let (w, h) = s.labels.dimensions();
            let predicted: Vec<i64> = (0..h)
                .flat_map(|y| (0..w).map(move |x| (x, y)))
                .map(|(x, y)| s.labels.get(x, y) as i64)
                .collect();
            confusion.add(truth, &predicted);
            // 1/0 per labelled pixel; NaN for void, which is not scored.
            let correct: Vec<f32> = truth
                .iter()
                .zip(&predicted)
                .map(|(&t, &pr)| match t < classes as i64 {
                    true => (t == pr) as u8 as f32,
                    false => f32::NAN,
                })
                .collect();
            for (k, &c) in correct.iter().enumerate() {
                if !c.is_nan() {
                    prec_ale.add(s.aleatoric_entropy.as_raw()[k], c);
                    if let Some(mi) = &s.epistemic_mutual_information {
                        prec_epi.add(mi.as_raw()[k], c);
                    }
                }
            }
            if let Some(mask) = &noise {
                sem_noise.add(s.aleatoric_entropy.as_raw(), mask);
                noise_acc.add(&correct, mask);
            }
            if let (Some(mask), Some(mi)) = (&ood, &s.epistemic_mutual_information) {
                sem_ood.add(mi.as_raw(), mask);
            }
        }
        if let (Some(d), Some(truth)) = (&p.depth, &sample.depth) {
            depth_errors.add(truth, d.depth_m.as_raw());
            for (k, (&y, &pr)) in truth.iter().zip(d.depth_m.as_raw()).enumerate() {
                if has_depth(y) && pr.is_finite() {
                    let sq = (y - pr).powi(2);
                    if let Some(a) = &d.aleatoric_std_m {
                        rms_ale.add(a.as_raw()[k], sq);
                    }
                    if let Some(e) = &d.epistemic_std_m {
                        rms_epi.add(e.as_raw()[k], sq);
                    }
                }
            }
            // Depth uncertainty is compared where depth exists: on pixels without ground
            // truth (sky) the variance head was never trained.
            let where_depth = |values: &[f32]| -> Vec<f32> {
                values
                    .iter()
                    .zip(truth)
                    .map(|(&v, &y)| if has_depth(y) { v } else { f32::NAN })
                    .collect()
            };
            if let (Some(mask), Some(a)) = (&noise, &d.aleatoric_std_m) {
                depth_noise.add(&where_depth(a.as_raw()), mask);
            }
            if let Some(mask) = &noise {
                let rel: Vec<f32> = truth
                    .iter()
                    .zip(d.depth_m.as_raw())
                    .map(|(&y, &pr)| match has_depth(y) {
                        true => abs_rel(y as f64, pr as f64) as f32,
                        false => f32::NAN, // no depth (sky): not scored
                    })
                    .collect();
                noise_rel.add(&rel, mask);
            }
            if let (Some(mask), Some(e)) = (&ood, &d.epistemic_std_m) {
                depth_ood.add(&where_depth(e.as_raw()), mask);
            }
        }
    }
    let has_depth = depth_errors.count() > 0;
    let sqrt_all = |v: Option<Vec<f64>>| v.map(|v| v.into_iter().map(f64::sqrt).collect());
    Ok(Report {
        images: n,
        mode: engine.config().mode.to_string(),
        samples: if engine.config().mode == crate::config::Mode::Mc {
            engine.config().mc_samples
        } else {
            1
        },
        mean_iou: (classes > 0).then(|| confusion.mean_iou()),
        pixel_accuracy: (classes > 0).then(|| confusion.pixel_accuracy()),
        depth_rel: has_depth.then(|| depth_errors.rel()),
        depth_rms: has_depth.then(|| depth_errors.rms()),
        depth_log10: has_depth.then(|| depth_errors.log10()),
        depth_deltas: has_depth.then(|| depth_errors.deltas()),
        precision_by_aleatoric: prec_ale.means(),
        precision_by_epistemic: prec_epi.means(),
        depth_rms_by_aleatoric: sqrt_all(rms_ale.means()),
        depth_rms_by_epistemic: sqrt_all(rms_epi.means()),
        semantic_aleatoric_noise_ratio: sem_noise.ratio(),
        depth_aleatoric_noise_ratio: depth_noise.ratio(),
        noise_patch_accuracy: noise_acc.means(),
        noise_patch_depth_rel: noise_rel.means(),
        semantic_epistemic_ood_ratio: sem_ood.ratio(),
        depth_epistemic_ood_ratio: depth_ood.ratio(),
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn curve_means_sort_by_uncertainty() {
        let mut c = Curve::default();
        // Ten pixels: the five least uncertain are correct, the rest wrong.
        for i in 0..10 {
            c.add(i as f32, if i < 5 { 1.0 } else { 0.0 });
        }
        let m = c.means().unwrap();
        assert_eq!(m[0], 1.0); // 10 %: 1 pixel, correct
        assert_eq!(m[4], 1.0); // 50 %
        assert!((m[9] - 0.5).abs() < 1e-12); // all
        assert!(m.windows(2).all(|w| w[1] <= w[0]));
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
}

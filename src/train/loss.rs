//! The training losses of Kendall & Gal (2017) that make aleatoric uncertainty learnable,
//! and the homoscedastic baselines they are compared with. Pure tensor functions.
//!
//! - Depth, Gaussian (s = log σ²):  mean over valid pixels of ½ exp(−s) (y − ŷ)² + ½ s.
//! - Depth, Laplace (s = log σ̂, σ̂ the std, scale σ̂/√2): mean over valid pixels of
//!   √2 exp(−s) |y − ŷ| + s.
//! - Semantic, logit noise:         −log (1/T) Σ_t softmax_c(f + σ ⊙ ε_t), σ = exp(s/2),
//!   computed with log-sum-exp, void pixels ignored, optional per-class weights.
//!
//! Depth targets are invalid where they are NaN or not positive; such pixels are excluded.

use tch::{Kind, Tensor};

use crate::model::Likelihood;
use crate::uncertainty::LOG_VARIANCE_CLAMP;

fn clamp_s(s: &Tensor) -> Tensor {
    s.clamp(LOG_VARIANCE_CLAMP.0, LOG_VARIANCE_CLAMP.1)
}

/// Valid depth targets: finite and positive. `[B, H, W]` bool.
pub fn valid_depth(target: &Tensor) -> Tensor {
    target.isfinite().logical_and(&target.gt(0.0))
}

/// Mean of `per_pixel` over `mask` (0 when the mask is empty, with a zero gradient).
fn masked_mean(per_pixel: &Tensor, mask: &Tensor) -> Tensor {
    let mask = mask.to_kind(per_pixel.kind());
    let count = mask.sum(Kind::Float).clamp_min(1.0);
    (per_pixel * &mask).sum(Kind::Float) / count
}

/// Heteroscedastic depth loss. `mean`, `s`: `[B, 1, H, W]`; `target`: `[B, H, W]` metres.
pub fn depth_loss(mean: &Tensor, s: &Tensor, target: &Tensor, likelihood: Likelihood) -> Tensor {
    let mask = valid_depth(target);
    // Invalid targets are replaced before the arithmetic so NaN never reaches a gradient.
    let target = target.where_self(&mask, &target.zeros_like());
    let (mean, s) = (mean.squeeze_dim(1), clamp_s(&s.squeeze_dim(1)));
    let per_pixel = match likelihood {
        Likelihood::Gaussian => (-&s).exp() * (&target - &mean).square() * 0.5 + &s * 0.5,
        Likelihood::Laplace => {
            (-&s).exp() * (&target - &mean).abs() * std::f64::consts::SQRT_2 + &s
        }
    };
    masked_mean(&per_pixel, &mask)
}

/// Homoscedastic depth baseline: mean absolute error over valid pixels.
pub fn depth_l1(mean: &Tensor, target: &Tensor) -> Tensor {
    let mask = valid_depth(target);
    let target = target.where_self(&mask, &target.zeros_like());
    masked_mean(&(&target - mean.squeeze_dim(1)).abs(), &mask)
}

/// Per-pixel weights: the class weight of each labelled pixel, 0 on void. `[B, H, W]`.
fn pixel_weights(labels: &Tensor, void_label: i64, class_weights: Option<&Tensor>) -> Tensor {
    let valid = labels.ne(void_label);
    let safe = labels.where_self(&valid, &labels.zeros_like());
    let weights = match class_weights {
        Some(w) => w
            .to_device(labels.device())
            .to_kind(Kind::Float)
            .index_select(0, &safe.flatten(0, -1))
            .view_as(labels),
        None => Tensor::ones_like(labels).to_kind(Kind::Float),
    };
    weights * valid.to_kind(Kind::Float)
}

fn weighted_mean(per_pixel: &Tensor, weights: &Tensor) -> Tensor {
    (per_pixel * weights).sum(Kind::Float) / weights.sum(Kind::Float).clamp_min(1e-12)
}

/// The logit-noise MC loss. `logits`, `s`: `[B, C, H, W]`; `labels`: `[B, H, W]` int64
/// with `void_label` ignored; `class_weights`: `[C]`.
pub fn semantic_loss(
    logits: &Tensor,
    s: &Tensor,
    labels: &Tensor,
    void_label: i64,
    class_weights: Option<&Tensor>,
    noise_samples: usize,
) -> Tensor {
    let weights = pixel_weights(labels, void_label, class_weights);
    let safe = labels
        .where_self(&labels.ne(void_label), &labels.zeros_like())
        .unsqueeze(1);
    let sigma = (clamp_s(s) * 0.5).exp();
    let t = noise_samples.max(1);
    // log p_t(c) for each noise draw t: [T, B, H, W].
    let log_probs: Vec<Tensor> = (0..t)
        .map(|_| {
            let noisy = if noise_samples == 0 {
                logits.shallow_clone()
            } else {
                logits + &sigma * logits.randn_like()
            };
            noisy
                .log_softmax(1, Kind::Float)
                .gather(1, &safe, false)
                .squeeze_dim(1)
        })
        .collect();
    // −log (1/T) Σ_t p_t(c) = −(logsumexp_t log p_t(c) − log T).
    let per_pixel = -(Tensor::stack(&log_probs, 0).logsumexp([0], false) - (t as f64).ln());
    weighted_mean(&per_pixel, &weights)
}

/// Homoscedastic semantic baseline: (weighted) cross-entropy, void ignored.
pub fn cross_entropy(
    logits: &Tensor,
    labels: &Tensor,
    void_label: i64,
    class_weights: Option<&Tensor>,
) -> Tensor {
    let weights = pixel_weights(labels, void_label, class_weights);
    let safe = labels
        .where_self(&labels.ne(void_label), &labels.zeros_like())
        .unsqueeze(1);
    let per_pixel = -logits
        .log_softmax(1, Kind::Float)
        .gather(1, &safe, false)
        .squeeze_dim(1);
    weighted_mean(&per_pixel, &weights)
}

/// Median frequency balancing (Eigen & Fergus): weight_c = median_freq / freq_c, where
/// freq_c is the pixel count of class c over the pixel count of the images containing c.
/// Classes never seen get weight 0. `counts[c]` and `image_pixels[c]` are per class.
pub fn median_frequency_weights(counts: &[u64], image_pixels: &[u64]) -> Vec<f32> {
    let freqs: Vec<Option<f64>> = counts
        .iter()
        .zip(image_pixels)
        .map(|(&n, &p)| (n > 0 && p > 0).then(|| n as f64 / p as f64))
        .collect();
    let mut seen: Vec<f64> = freqs.iter().flatten().copied().collect();
    if seen.is_empty() {
        return vec![0.0; counts.len()];
    }
    seen.sort_by(f64::total_cmp);
    let median = if seen.len() % 2 == 1 {
        seen[seen.len() / 2]
    } else {
        (seen[seen.len() / 2 - 1] + seen[seen.len() / 2]) / 2.0
    };
    freqs
        .iter()
        .map(|f| f.map_or(0.0, |f| (median / f) as f32))
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::test_support::torch_rng_lock;
    use tch::Device;

    fn t(values: &[f32], shape: &[i64]) -> Tensor {
        Tensor::from_slice(values).view(shape)
    }

    fn value(x: &Tensor) -> f64 {
        x.double_value(&[])
    }

    #[test]
    fn gaussian_depth_loss_by_hand() {
        // ŷ = 1, y = 3, s = ln 2: ½·½·4 + ½ ln 2 = 1 + 0.34657.
        let l = depth_loss(
            &t(&[1.0], &[1, 1, 1, 1]),
            &t(&[2f32.ln()], &[1, 1, 1, 1]),
            &t(&[3.0], &[1, 1, 1]),
            Likelihood::Gaussian,
        );
        assert!(
            (value(&l) - (1.0 + 0.5 * 2f64.ln())).abs() < 1e-5,
            "{}",
            value(&l)
        );
    }

    #[test]
    fn laplace_depth_loss_by_hand_and_invalid_pixels_excluded() {
        // Pixels: (ŷ 1, y 3, s 0) -> √2·2; (ŷ 2, y 2.5, s ln 0.5) -> √2·2·0.5 + ln 0.5;
        // a NaN target and a zero target do not count.
        let mean = t(&[1.0, 2.0, 5.0, 5.0], &[1, 1, 2, 2]);
        let s = t(&[0.0, 0.5f32.ln(), 9.0, 9.0], &[1, 1, 2, 2]);
        let target = t(&[3.0, 2.5, f32::NAN, 0.0], &[1, 2, 2]);
        let l = depth_loss(&mean, &s, &target, Likelihood::Laplace);
        let expected = (2f64.sqrt() * 2.0 + (2f64.sqrt() * 1.0 + 0.5f64.ln())) / 2.0;
        assert!(
            (value(&l) - expected).abs() < 1e-5,
            "{} vs {expected}",
            value(&l)
        );
        assert!((value(&depth_l1(&mean, &target)) - 1.25).abs() < 1e-6);
        // All invalid: zero, and no NaN.
        let none = depth_loss(
            &mean,
            &s,
            &t(&[f32::NAN; 4], &[1, 2, 2]),
            Likelihood::Gaussian,
        );
        assert_eq!(value(&none), 0.0);
    }

    #[test]
    fn semantic_loss_without_noise_is_cross_entropy() {
        // Logits (1, 2), label 1: −log 0.7311 = 0.3133; σ ≈ 0 (s = −20).
        let logits = t(&[1.0, 2.0], &[1, 2, 1, 1]);
        let s = t(&[-20.0, -20.0], &[1, 2, 1, 1]);
        let labels = Tensor::from_slice(&[1i64]).view([1, 1, 1]);
        let l = semantic_loss(&logits, &s, &labels, 11, None, 5);
        assert!((value(&l) - 0.313_262).abs() < 1e-4, "{}", value(&l));
        assert!((value(&cross_entropy(&logits, &labels, 11, None)) - 0.313_262).abs() < 1e-5);
    }

    #[test]
    fn semantic_loss_with_noise_matches_the_worked_example() {
        let _lock = torch_rng_lock();
        tch::manual_seed(11);
        // Noise of variance 0.5 on logits (1, 2): E[softmax_2] ≈ 0.70, so the loss of
        // label 1 is ≈ −ln 0.70 = 0.357. 4096 pixels x 200 draws: tight estimate.
        let n = 64;
        let logits = t(&[1.0, 2.0], &[1, 2, 1, 1]).repeat([1, 1, n, n]);
        let s = Tensor::full([1, 2, n, n], 0.5f64.ln(), (Kind::Float, Device::Cpu));
        let labels = Tensor::ones([1, n, n], (Kind::Int64, Device::Cpu));
        let l = value(&semantic_loss(&logits, &s, &labels, 11, None, 200));
        assert!((l - (-(0.6998f64).ln())).abs() < 0.01, "loss {l}");
        // The noise raises the loss of a confident correct pixel: 0.357 > 0.313.
        assert!(l > 0.33);
    }

    #[test]
    fn void_is_ignored_and_class_weights_apply() {
        // Channel-major: pixel 0 has logits (2, 1), pixel 1 (0, 0.5), pixel 2 (0, 0).
        let logits = t(&[2.0, 0.0, 0.0, 1.0, 0.5, 0.0], &[1, 2, 1, 3]);
        let labels = Tensor::from_slice(&[0i64, 1, 11]).view([1, 1, 3]);
        let ce0 = (1.0 + (-1f64).exp()).ln();
        let ce1 = (1.0 + (-0.5f64).exp()).ln();
        let plain = value(&cross_entropy(&logits, &labels, 11, None));
        assert!((plain - (ce0 + ce1) / 2.0).abs() < 1e-5);
        let w = Tensor::from_slice(&[1.0f32, 3.0]);
        let weighted = value(&cross_entropy(&logits, &labels, 11, Some(&w)));
        assert!((weighted - (ce0 + 3.0 * ce1) / 4.0).abs() < 1e-5);
        let s = Tensor::full([1, 2, 1, 3], -20.0, (Kind::Float, Device::Cpu));
        assert!(
            (value(&semantic_loss(&logits, &s, &labels, 11, Some(&w), 3)) - weighted).abs() < 1e-4
        );
    }

    #[test]
    fn gradient_reaches_the_variance_heads() {
        let _lock = torch_rng_lock();
        tch::manual_seed(2);
        let logits = Tensor::randn([1, 3, 4, 4], (Kind::Float, Device::Cpu));
        let s = Tensor::zeros([1, 3, 4, 4], (Kind::Float, Device::Cpu)).set_requires_grad(true);
        let labels = Tensor::randint(3, [1, 4, 4], (Kind::Int64, Device::Cpu));
        semantic_loss(&logits, &s, &labels, 11, None, 10).backward();
        assert!(value(&s.grad().abs().sum(Kind::Float)) > 0.0);
        let mean = Tensor::randn([1, 1, 4, 4], (Kind::Float, Device::Cpu));
        let ds = Tensor::zeros([1, 1, 4, 4], (Kind::Float, Device::Cpu)).set_requires_grad(true);
        let target = Tensor::rand([1, 4, 4], (Kind::Float, Device::Cpu)) + 1.0;
        depth_loss(&mean, &ds, &target, Likelihood::Gaussian).backward();
        assert!(value(&ds.grad().abs().sum(Kind::Float)) > 0.0);
    }

    /// Fits the log-variance head's s for one pixel by gradient descent on `depth_loss`
    /// over `noise` (targets around a fixed prediction of 0) and returns the std the engine
    /// reports for that s.
    fn fitted_std(noise: &Tensor, likelihood: Likelihood) -> f64 {
        let n = noise.size()[0];
        let mean = Tensor::zeros([1, 1, 1, n], (Kind::Float, Device::Cpu));
        // Targets must be positive to count as valid depth: shift both by 100 m.
        let target = (noise + 100.0).view([1, 1, n]);
        let mean = mean + 100.0;
        let mut s = Tensor::zeros([1], (Kind::Float, Device::Cpu)).set_requires_grad(true);
        for _ in 0..300 {
            let per_pixel_s = s.view([1, 1, 1, 1]).expand([1, 1, 1, n], false);
            let loss = depth_loss(&mean, &per_pixel_s, &target, likelihood);
            let grad = Tensor::run_backward(&[loss], &[&s], false, false).remove(0);
            tch::no_grad(|| {
                let _ = s.f_sub_(&(grad * 0.5)).expect("in-place step");
            });
        }
        let s = s.detach();
        crate::uncertainty::depth_aleatoric_variance(&s, likelihood)
            .sqrt()
            .double_value(&[0])
    }

    #[test]
    fn the_reported_depth_std_is_the_std_the_loss_was_trained_on() {
        let _lock = torch_rng_lock();
        tch::manual_seed(21);
        let n = 200_000;
        // Laplace noise of scale b = 0.7 (std b√2 ≈ 0.99) as the difference of two
        // exponentials; Gaussian noise of std 1.3.
        let b = 0.7;
        let exp = |t: Tensor| -(Tensor::ones_like(&t) - t).log();
        let uniform = || Tensor::rand([n], (Kind::Float, Device::Cpu));
        let laplace = (exp(uniform()) - exp(uniform())) * b;
        let std = fitted_std(&laplace, Likelihood::Laplace);
        let truth = b * std::f64::consts::SQRT_2;
        assert!(
            (std / truth - 1.0).abs() < 0.05,
            "Laplace: reported std {std}, true std {truth}"
        );
        let gauss = Tensor::randn([n], (Kind::Float, Device::Cpu)) * 1.3;
        let std = fitted_std(&gauss, Likelihood::Gaussian);
        assert!(
            (std / 1.3 - 1.0).abs() < 0.05,
            "Gaussian: reported std {std}, true std 1.3"
        );
    }

    #[test]
    fn median_frequency_balancing() {
        // freq = 10/100, 30/100, 60/100 -> median 0.3 -> weights 3, 1, 0.5; unseen -> 0.
        let w = median_frequency_weights(&[10, 30, 60, 0], &[100, 100, 100, 0]);
        assert_eq!(w, vec![3.0, 1.0, 0.5, 0.0]);
    }
}

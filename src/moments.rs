//! Sampling-free epistemic uncertainty: the mean and variance of every activation of a
//! dropout network pushed through it in one pass, after Postels et al., "Sampling-free
//! Epistemic Uncertainty Estimation Using Approximated Variance Propagation" (ICCV 2019,
//! arXiv 1908.00598). `mode: moments` runs the *trained* MC-dropout network this way
//! instead of T stochastic passes.
//!
//! Every activation is an independent Gaussian N(mean, var): the units of a layer are
//! assumed uncorrelated (the approximation's central assumption; dropout masks are
//! independent per unit, but a convolution mixes units, so their outputs do correlate).
//! Dropout, BatchNorm, convolutions and concatenation are exact for such inputs. The two
//! nonlinear layers have two sets of [`Rules`]: closed-form moments (the rectified
//! Gaussian; Clark's (1961) maximum applied pairwise in the max-pool), or first-order
//! linearisation (mean through the layer as if deterministic, variance through its slope:
//! Postels et al.'s cheaper choice). The tests check every rule against Monte Carlo of
//! that layer alone.
//!
//! Pure tensor functions: no I/O, no model loading, no device choice. The network's
//! layer order lives in `model::fc_densenet` (`FcDenseNet::forward_moments`), which calls
//! these rules layer by layer.

use crate::model::fc_densenet::{is_channels_last, to_channels_last};
use tch::{nn, Tensor};

/// Below this standard deviation an activation counts as deterministic (activations are
/// O(1) after BatchNorm; the value is representable in fp16 too).
const MIN_STD: f64 = 1e-6;

/// |mean / std| beyond which a ReLU input counts as always positive (identity) or always
/// negative (zero). At 5 the neglected mass is Φ(−5) ≈ 3e-7; nearer to 0 the closed forms
/// are evaluated, which in f32 lose too much to cancellation beyond about 5.
const RELU_ALPHA_LIMIT: f64 = 5.0;

/// 1 / sqrt(2π), the standard normal density at 0.
const INV_SQRT_2PI: f64 = 0.398_942_280_401_432_7;

/// How the nonlinear layers (ReLU, max-pool) transform a Gaussian.
#[derive(Debug, Clone, Copy, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Rules {
    /// The exact first two moments of a rectified Gaussian, and Clark's moment-matched
    /// maximum: closer to Monte Carlo, about 20 tensor operations per ReLU.
    ClosedForm,
    /// First order: ReLU passes the mean's relu and the variance where the mean is
    /// positive; the max-pool takes the unit with the largest mean with its variance. The
    /// means are those of the deterministic pass; a few operations per layer.
    Linearized,
}

impl std::str::FromStr for Rules {
    type Err = String;

    fn from_str(s: &str) -> Result<Self, String> {
        match s {
            "closed_form" => Ok(Rules::ClosedForm),
            "linearized" => Ok(Rules::Linearized),
            _ => Err(format!(
                "`{s}` is not a rule set; expected closed_form or linearized"
            )),
        }
    }
}

impl std::fmt::Display for Rules {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(match self {
            Rules::ClosedForm => "closed_form",
            Rules::Linearized => "linearized",
        })
    }
}

/// Means and variances of a layer's activations, both of the same shape.
#[derive(Debug)]
pub struct Gaussian {
    pub mean: Tensor,
    pub var: Tensor,
}

impl Gaussian {
    /// A deterministic activation (variance 0), such as the network input.
    pub fn deterministic(mean: Tensor) -> Self {
        let var = mean.zeros_like();
        Gaussian { mean, var }
    }

    /// Concatenation along `dim` (channels): independent units stay independent.
    pub fn cat(parts: &[&Gaussian], dim: i64) -> Self {
        let means: Vec<&Tensor> = parts.iter().map(|g| &g.mean).collect();
        let vars: Vec<&Tensor> = parts.iter().map(|g| &g.var).collect();
        Gaussian {
            mean: Tensor::cat(&means, dim),
            var: Tensor::cat(&vars, dim),
        }
    }

    /// The standard deviation, sqrt(var).
    pub fn std(&self) -> Tensor {
        self.var.clamp_min(0.0).sqrt()
    }

    fn map(&self, f: impl Fn(&Tensor) -> Tensor) -> Self {
        Gaussian {
            mean: f(&self.mean),
            var: f(&self.var),
        }
    }

    /// Another handle on the same tensors (no copy).
    pub fn shallow_clone(&self) -> Self {
        self.map(Tensor::shallow_clone)
    }

    /// `narrow` on mean and variance alike.
    pub fn narrow(&self, dim: i64, start: i64, length: i64) -> Self {
        self.map(|t| t.narrow(dim, start, length))
    }
}

/// Inverted dropout with rate `p` (kept units scaled by 1/(1 − p)), a fresh mask per
/// unit: the mean is kept, E\[y²\] = E\[x²\] / (1 − p), so var' = (var + p·mean²) / (1 − p).
pub fn dropout(x: &Gaussian, p: f64) -> Gaussian {
    let keep = 1.0 - p;
    let mut var = x.mean.square();
    var *= p / keep;
    var += &x.var / keep;
    Gaussian {
        mean: x.mean.shallow_clone(),
        var,
    }
}

/// BatchNorm with running statistics (inference): per channel the affine map
/// y = a·x + b with a = γ / sqrt(running_var + eps), so var' = a²·var.
pub fn batch_norm_eval(x: &Gaussian, bn: &nn::BatchNorm, eps: f64) -> Gaussian {
    let mut scale = (&bn.running_var + eps).rsqrt();
    if let Some(gamma) = &bn.ws {
        scale *= gamma;
    }
    let channels = scale.size()[0];
    let scale = scale.view([1, channels, 1, 1]).to_kind(x.var.kind());
    // a·(a·var), not a²·var: in fp16, a² of a channel with a tiny running variance
    // overflows to inf, and inf·0 would make a deterministic unit's variance NaN.
    Gaussian {
        mean: x.mean.apply_t(bn, false),
        var: &x.var * &scale * &scale,
    }
}

/// The closed-form moments of a rectified Gaussian, max(0, X) with X ~ N(μ, σ²):
/// with α = μ/σ, E = μΦ(α) + σφ(α) and Var = σ²[Φ(α) + α·F − F²], F = αΦ(α) + φ(α).
///
/// α is clamped to ±5, where the unit is as good as always on (E → μ, Var → σ²) or off
/// (E → 0, Var → at most 2e-8·σ²; Φ(−5) ≈ 3e-7) and where the f32 closed forms would
/// start to cancel; a deterministic unit (σ = 0) gets relu(μ) to within 3e-7 of μ (or of
/// 0, absolutely 4e-7 at μ = 0), and variance 0. Written with in-place operations: this rule runs on every channel of every dense layer's input and is most
/// of the cost of a moments pass.
pub fn relu(x: &Gaussian) -> Gaussian {
    // A variance rounded below 0 (convolution algorithms that transform the input can do
    // it) is 0, not a NaN standard deviation.
    let mut std = x.var.clamp_min(0.0);
    let _ = std.sqrt_();
    let _ = std.clamp_min_(MIN_STD);
    let mut alpha = &x.mean / &std;
    let _ = alpha.clamp_(-RELU_ALPHA_LIMIT, RELU_ALPHA_LIMIT);
    // Φ(α) = erfc(−α/√2) / 2 (erfc keeps the small values on the negative side exact);
    // φ(α) = exp(−α²/2) / √(2π).
    let mut cdf = &alpha * -std::f64::consts::FRAC_1_SQRT_2;
    let _ = cdf.erfc_();
    cdf *= 0.5;
    let mut pdf = alpha.square();
    pdf *= -0.5;
    let _ = pdf.exp_();
    pdf *= INV_SQRT_2PI;
    let mut mean = &std * &pdf;
    let _ = mean.addcmul_(&x.mean, &cdf);
    // Far on the negative side μΦ + σφ rounds to a tiny negative number.
    let _ = mean.clamp_min_(0.0);
    let first = pdf.addcmul(&alpha, &cdf);
    let mut spread = alpha - &first;
    spread *= &first;
    spread += &cdf;
    let mut var = spread * &x.var;
    let _ = var.clamp_min_(0.0);
    Gaussian { mean, var }
}

/// First-order ReLU: relu(μ), and the variance where μ > 0 (the slope there is 1).
pub fn relu_linearized(x: &Gaussian) -> Gaussian {
    Gaussian {
        mean: x.mean.relu(),
        var: &x.var * x.mean.gt(0.0),
    }
}

/// The ReLU of `rules`.
pub fn relu_with(x: &Gaussian, rules: Rules) -> Gaussian {
    match rules {
        Rules::ClosedForm => relu(x),
        Rules::Linearized => relu_linearized(x),
    }
}

/// A convolution with stride 1 and `padding` (the module's): the mean goes through the
/// weights and bias, the variance through the squared weights (a sum of independent terms).
pub fn conv2d(x: &Gaussian, conv: &nn::Conv2D, padding: i64) -> Gaussian {
    Gaussian {
        mean: x.mean.apply(conv),
        var: x.var.conv2d(
            &conv.ws.square(),
            None::<Tensor>,
            [1, 1],
            [padding, padding],
            [1, 1],
            1,
        ),
    }
}

/// Geometry of a transposed convolution (the module keeps its own private).
#[derive(Debug, Clone, Copy)]
pub struct TransposedGeometry {
    pub stride: i64,
    pub padding: i64,
    pub output_padding: i64,
}

/// A transposed convolution: like [`conv2d`], mean through the weights, variance through
/// their squares.
pub fn conv_transpose2d(
    x: &Gaussian,
    conv: &nn::ConvTranspose2D,
    geometry: TransposedGeometry,
) -> Gaussian {
    let TransposedGeometry {
        stride,
        padding,
        output_padding,
    } = geometry;
    Gaussian {
        mean: x.mean.apply(conv),
        var: x.var.conv_transpose2d(
            &conv.ws.square(),
            None::<Tensor>,
            [stride, stride],
            [padding, padding],
            [output_padding, output_padding],
            1,
            [1, 1],
        ),
    }
}

/// Clark's (1961) first two moments of max(A, B) for independent Gaussians A and B, which
/// are exact for two: with θ² = var_A + var_B and α = (μ_A − μ_B)/θ,
/// E = μ_A Φ(α) + μ_B Φ(−α) + θφ(α),
/// E\[max²\] = (μ_A² + var_A)Φ(α) + (μ_B² + var_B)Φ(−α) + (μ_A + μ_B)θφ(α).
/// Evaluated relative to the larger mean so that the variance does not cancel in f32.
pub fn gaussian_max(a: &Gaussian, b: &Gaussian) -> Gaussian {
    // The floor on the standard deviation, not the variance: MIN_STD² is 0 in fp16.
    let theta = (&a.var + &b.var).clamp_min(0.0).sqrt().clamp_min(MIN_STD);
    let shift = a.mean.maximum(&b.mean);
    let (mean_a, mean_b) = (&a.mean - &shift, &b.mean - &shift);
    // Bounded so that fp16 cannot make an infinity (φ(±30) is 0 already).
    let alpha = ((&mean_a - &mean_b) / &theta).clamp(-30.0, 30.0);
    let cdf_a = alpha.special_ndtr();
    let cdf_b = (-&alpha).special_ndtr();
    let theta_pdf = &theta * (alpha.square() * -0.5).exp() * INV_SQRT_2PI;
    let mean = &mean_a * &cdf_a + &mean_b * &cdf_b + &theta_pdf;
    let second = (mean_a.square() + &a.var) * &cdf_a
        + (mean_b.square() + &b.var) * &cdf_b
        + (&mean_a + &mean_b) * &theta_pdf;
    Gaussian {
        var: (second - mean.square()).clamp_min(0.0),
        mean: mean + shift,
    }
}

/// 2x2 max-pool with stride 2 on `[B, C, H, W]` (H and W even): the maximum of the four
/// units of each window as max(max(a, b), max(c, d)) with [`gaussian_max`], each pairwise
/// maximum taken as Gaussian again (the approximation).
pub fn max_pool2x2(x: &Gaussian) -> Gaussian {
    let corner = |dy: i64, dx: i64| x.map(|t| t.slice(2, dy, None, 2).slice(3, dx, None, 2));
    let top = gaussian_max(&corner(0, 0), &corner(0, 1));
    let bottom = gaussian_max(&corner(1, 0), &corner(1, 1));
    gaussian_max(&top, &bottom)
}

/// First-order 2x2 max-pool (stride 2): the unit with the largest mean, with its variance.
pub fn max_pool2x2_linearized(x: &Gaussian) -> Gaussian {
    let (mean, indices) = x
        .mean
        .max_pool2d_with_indices([2, 2], [2, 2], [0, 0], [1, 1], false);
    let size = mean.size();
    let var = x
        .var
        .flatten(2, 3)
        .gather(2, &indices.flatten(2, 3), false)
        .view(size.as_slice());
    // gather returns the usual layout: the variance follows the mean's (channels-last).
    let var = if is_channels_last(&mean) {
        to_channels_last(&var)
    } else {
        var
    };
    Gaussian { mean, var }
}

/// The 2x2 max-pool of `rules`.
pub fn max_pool2x2_with(x: &Gaussian, rules: Rules) -> Gaussian {
    match rules {
        Rules::ClosedForm => max_pool2x2(x),
        Rules::Linearized => max_pool2x2_linearized(x),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::test_support::torch_rng_lock;
    use tch::{nn::Module, Device, Kind};

    /// Monte Carlo draws per unit in the per-layer checks (standard error of a variance
    /// estimate ≈ sqrt(2 / N) ≈ 0.3 % for Gaussian outputs).
    const DRAWS: i64 = 200_000;

    /// The allowance of the exact rules beyond sampling error: float rounding.
    const EXACT: (f64, f64) = (0.002, 0.002);

    /// Inputs N(mean, var) per unit of `[1, C, H, W]` with varied means and variances.
    fn inputs(shape: [i64; 4], seed: i64) -> Gaussian {
        tch::manual_seed(seed);
        let opts = (Kind::Float, Device::Cpu);
        Gaussian {
            mean: Tensor::randn(shape, opts) * 1.5,
            var: Tensor::rand(shape, opts) * 2.0 + 0.05,
        }
    }

    /// DRAWS independent samples of every unit of `[1, C, H, W]`: `[DRAWS, C, H, W]`.
    fn draws(x: &Gaussian) -> Tensor {
        let size = x.mean.size();
        let noise = Tensor::randn(
            [DRAWS, size[1], size[2], size[3]],
            (Kind::Float, x.mean.device()),
        );
        x.mean.to_kind(Kind::Float) + x.std().to_kind(Kind::Float) * noise
    }

    /// The rule's moments against the sample mean and variance over dimension 0. A rule
    /// passes where it is within 5 standard errors of the Monte Carlo estimate plus its
    /// own stated approximation error: `mean_rel` standard deviations in the mean, `var_rel`
    /// of the variance (0.2 % for the exact rules, for float rounding). Standard errors: sqrt(var / N) for the mean,
    /// sqrt((m4 − var²) / N) for the variance, so rare tails are judged fairly.
    fn assert_matches(samples: &Tensor, rule: &Gaussian, (mean_rel, var_rel): (f64, f64)) {
        let samples = samples.to_kind(Kind::Double);
        let n = samples.size()[0] as f64;
        let mc_mean = samples.mean_dim(0, true, Kind::Double);
        let centred = &samples - &mc_mean;
        let mc_var = centred.square().mean_dim(0, true, Kind::Double);
        let m4 = centred.pow_tensor_scalar(4).mean_dim(0, true, Kind::Double);
        let mean_se = (&mc_var / n).sqrt();
        let var_se = ((m4 - mc_var.square()).clamp_min(0.0) / n).sqrt();
        let excess = |rule: &Tensor, mc: &Tensor, se: &Tensor, scale: &Tensor, rel: f64| {
            // How far beyond the allowance the rule is, in units of the allowance (with
            // 1e-6 of the value itself for f32 rounding where there is no spread, and 1e-7
            // for the ReLU's variance beyond α < −5, at most 2e-8·σ²).
            let allowance = se * 5.0 + scale * rel + mc.abs() * 1e-6 + 1e-7;
            ((rule.to_kind(Kind::Double) - mc).abs() / allowance)
                .max()
                .double_value(&[])
        };
        let mean_excess = excess(&rule.mean, &mc_mean, &mean_se, &mc_var.sqrt(), mean_rel);
        let var_excess = excess(&rule.var, &mc_var, &var_se, &mc_var, var_rel);
        assert!(
            mean_excess <= 1.0,
            "mean off by {mean_excess} x the allowance (5 SE + {mean_rel} std)"
        );
        assert!(
            var_excess <= 1.0,
            "variance off by {var_excess} x the allowance (5 SE + {var_rel} relative)"
        );
    }

    #[test]
    fn dropout_rule_matches_monte_carlo() {
        let _lock = torch_rng_lock();
        let x = inputs([1, 3, 4, 4], 1);
        let samples = draws(&x).dropout(0.2, true);
        assert_matches(&samples, &dropout(&x, 0.2), EXACT);
    }

    #[test]
    fn relu_rule_matches_monte_carlo_including_far_tails_and_deterministic_units() {
        let _lock = torch_rng_lock();
        let x = inputs([1, 4, 4, 4], 2);
        // Units far on either side (|α| > 5) and deterministic ones (var 0).
        let _ = x.mean.get(0).get(0).fill_(8.0);
        let _ = x.var.get(0).get(0).fill_(0.5);
        let _ = x.mean.get(0).get(1).fill_(-8.0);
        let _ = x.var.get(0).get(1).fill_(0.5);
        let _ = x.var.get(0).get(2).get(0).fill_(0.0);
        let samples = draws(&x).relu();
        assert_matches(&samples, &relu(&x), EXACT);
        // Deterministic units: relu(mean) to within 3e-7 of mean, variance 0.
        let det = relu(&x);
        let row = x.mean.get(0).get(2).get(0);
        let worst = ((det.mean.get(0).get(2).get(0) - row.relu()).abs() / (row.abs() + 1e-6))
            .max()
            .double_value(&[]);
        assert!(worst < 1e-6, "deterministic units off by {worst} relative");
        assert!(det.var.get(0).get(2).get(0).max().double_value(&[]) < 1e-10);
    }

    #[test]
    fn linearized_rules_are_first_order_and_exact_where_units_are_clearly_on_or_off() {
        let _lock = torch_rng_lock();
        let x = inputs([1, 3, 4, 4], 6);
        let lin = relu_linearized(&x);
        // The mean is relu(μ), the variance passes where μ > 0.
        assert_eq!(lin.mean, x.mean.relu());
        let on = x.mean.gt(0.0);
        assert_eq!(lin.var, &x.var * &on);
        // Far from the kink (|μ| > 5σ) it agrees with the closed form.
        let far = Gaussian {
            mean: Tensor::from_slice(&[10.0f32, -10.0]).view([1, 2, 1, 1]),
            var: Tensor::from_slice(&[1.0f32, 1.0]).view([1, 2, 1, 1]),
        };
        let (a, b) = (relu_linearized(&far), relu(&far));
        assert!((&a.mean - &b.mean).abs().max().double_value(&[]) < 1e-5);
        assert!((&a.var - &b.var).abs().max().double_value(&[]) < 1e-5);
        // Max-pool: the unit with the largest mean, with its own variance.
        let window = Gaussian {
            mean: Tensor::from_slice(&[1.0f32, 7.0, 3.0, 2.0]).view([1, 1, 2, 2]),
            var: Tensor::from_slice(&[0.1f32, 0.7, 0.3, 0.2]).view([1, 1, 2, 2]),
        };
        let pooled = max_pool2x2_linearized(&window);
        assert_eq!(pooled.mean.double_value(&[0, 0, 0, 0]), 7.0);
        assert!((pooled.var.double_value(&[0, 0, 0, 0]) - 0.7).abs() < 1e-6);
        let pooled = max_pool2x2_linearized(&x);
        assert_eq!(pooled.mean, x.mean.max_pool2d_default(2));
    }

    #[test]
    fn batch_norm_rule_matches_the_module_and_monte_carlo() {
        let _lock = torch_rng_lock();
        let vs = nn::VarStore::new(Device::Cpu);
        let mut bn = nn::batch_norm2d(vs.root(), 3, Default::default());
        let set = |t: &mut Tensor, values: &[f32]| {
            tch::no_grad(|| t.copy_(&Tensor::from_slice(values)));
        };
        set(&mut bn.running_mean, &[0.5, -1.0, 2.0]);
        set(&mut bn.running_var, &[0.25, 4.0, 1.0]);
        set(bn.ws.as_mut().unwrap(), &[1.5, -0.5, 2.0]);
        set(bn.bs.as_mut().unwrap(), &[0.1, 0.2, -0.3]);
        let x = inputs([1, 3, 3, 3], 3);
        let eps = nn::BatchNormConfig::default().eps;
        let samples = tch::no_grad(|| draws(&x).apply_t(&bn, false));
        assert_matches(&samples, &batch_norm_eval(&x, &bn, eps), EXACT);
    }

    /// Rounding's edge cases: a variance just below 0 is a deterministic unit for ReLU,
    /// not NaN; in fp16, a channel whose γ²/running_var overflows keeps its deterministic
    /// units' variance 0, not NaN.
    #[test]
    fn rounding_edge_cases_give_no_nan() {
        let x = Gaussian {
            mean: Tensor::from_slice(&[1.0f32, -1.0]).view([1, 2, 1, 1]),
            var: Tensor::from_slice(&[-1e-9f32, -1e-9]).view([1, 2, 1, 1]),
        };
        let y = relu(&x);
        assert!((y.mean.double_value(&[0, 0, 0, 0]) - 1.0).abs() < 1e-6);
        assert!(y.mean.double_value(&[0, 1, 0, 0]).abs() < 1e-6);
        assert_eq!(y.var.isnan().sum(Kind::Int64).int64_value(&[]), 0);

        // γ / sqrt(running_var + eps) = 20 / sqrt(1e-3 + 1e-5) ≈ 629: its square is past
        // fp16's 65504.
        let mut vs = nn::VarStore::new(Device::Cpu);
        let mut bn = nn::batch_norm2d(vs.root(), 1, Default::default());
        tch::no_grad(|| {
            bn.running_var.copy_(&Tensor::from_slice(&[1e-3f32]));
            bn.ws
                .as_mut()
                .unwrap()
                .copy_(&Tensor::from_slice(&[20.0f32]));
        });
        vs.half();
        let eps = nn::BatchNormConfig::default().eps;
        let x = Gaussian {
            mean: Tensor::zeros([1, 1, 2, 1], (Kind::Half, Device::Cpu)),
            // (1e-6 is a subnormal in fp16, 1.3 % off.)
            var: Tensor::from_slice(&[0.0f32, 1e-6])
                .view([1, 1, 2, 1])
                .to_kind(Kind::Half),
        };
        let y = batch_norm_eval(&x, &bn, eps);
        assert_eq!(y.var.double_value(&[0, 0, 0, 0]), 0.0);
        let second = y.var.double_value(&[0, 0, 1, 0]);
        assert!(
            (second / (1e-6 * 629.0f64.powi(2)) - 1.0).abs() < 0.03,
            "{second}"
        );
    }

    #[test]
    fn conv_rules_match_monte_carlo() {
        let _lock = torch_rng_lock();
        let vs = nn::VarStore::new(Device::Cpu);
        let padded = nn::ConvConfig {
            padding: 1,
            ..Default::default()
        };
        let conv = nn::conv2d(vs.root() / "c", 3, 2, 3, padded);
        let geometry = TransposedGeometry {
            stride: 2,
            padding: 1,
            output_padding: 1,
        };
        let up = nn::conv_transpose2d(
            vs.root() / "t",
            3,
            2,
            3,
            nn::ConvTransposeConfig {
                stride: geometry.stride,
                padding: geometry.padding,
                output_padding: geometry.output_padding,
                ..Default::default()
            },
        );
        let x = inputs([1, 3, 4, 4], 4);
        let samples = tch::no_grad(|| draws(&x));
        let rule = tch::no_grad(|| conv2d(&x, &conv, 1));
        assert_matches(&tch::no_grad(|| conv.forward(&samples)), &rule, EXACT);
        let rule = tch::no_grad(|| conv_transpose2d(&x, &up, geometry));
        assert_eq!(rule.mean.size(), [1, 2, 8, 8]);
        assert_matches(&tch::no_grad(|| up.forward(&samples)), &rule, EXACT);
    }

    #[test]
    fn maximum_of_two_is_exact_and_of_a_window_close() {
        let _lock = torch_rng_lock();
        let x = inputs([1, 3, 4, 4], 5);
        let samples = draws(&x);
        // Two units: Clark's moments are exact.
        let a = x.narrow(1, 0, 1);
        let b = x.narrow(1, 1, 1);
        let pair = samples.narrow(1, 0, 1).maximum(&samples.narrow(1, 1, 1));
        assert_matches(&pair, &gaussian_max(&a, &b), EXACT);
        // A 2x2 window: the pairwise approximation. Measured on these inputs (seeds 5-7):
        // means within 0.04 std; variances 0-27 % too small (5 % on average): a pairwise
        // maximum is skewed, and taking it as Gaussian loses some of the spread.
        let pooled = samples.max_pool2d_default(2);
        assert_matches(&pooled, &max_pool2x2(&x), (0.05, 0.30));
        // Far-apart or deterministic inputs: the larger one, exactly.
        let big = Gaussian {
            mean: Tensor::from_slice(&[100.0f32]).view([1, 1, 1, 1]),
            var: Tensor::from_slice(&[0.0f32]).view([1, 1, 1, 1]),
        };
        let small = Gaussian::deterministic(Tensor::from_slice(&[3.0f32]).view([1, 1, 1, 1]));
        let m = gaussian_max(&big, &small);
        assert!((m.mean.double_value(&[0, 0, 0, 0]) - 100.0).abs() < 1e-4);
        assert!(m.var.double_value(&[0, 0, 0, 0]).abs() < 1e-8);
    }
}

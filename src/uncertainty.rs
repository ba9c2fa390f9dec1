//! The uncertainty math of Kendall & Gal (2017) as pure tensor functions: no I/O, no model,
//! no device choice. The engine feeds head outputs in; definitions are those of
//! `shared/docs/method.md` ("What is reported per pixel").
//!
//! MC samples arrive in chunks (a batch of stochastic passes at a time), so the reductions
//! are running sums that never hold all T samples at once.

use rand::{Rng, SeedableRng};
use rand_chacha::ChaCha8Rng;
use tch::{Kind, Tensor};

use crate::model::Likelihood;

/// Bounds for a predicted log variance s before exponentiating, so that no output can
/// overflow to Inf (exp(20) ≈ 4.9e8).
pub const LOG_VARIANCE_CLAMP: (f64, f64) = (-20.0, 20.0);

/// Probabilities below this are treated as this in p log p (0 log 0 = 0 in the limit).
const PROB_FLOOR: f64 = 1e-12;

/// The logit-noise draws ε_1..ε_S ~ N(0, I) of one frame, shared by every sample of the
/// frame (every chunk of MC passes, every head draw of moments mode): see
/// [`noise_averaged_softmax`]. Not held in memory (S x C x H x W numbers: 7.6 GB at
/// S = 1000 for 11 classes at 360x480) but drawn again for each chunk, one `[1, C, H, W]`
/// draw at a time, from libtorch's generator seeded with the frame's seed.
#[derive(Debug)]
pub struct LogitNoise {
    samples: usize,
    /// The seeds: the frame's draws', then for each chunk the one libtorch's generator
    /// continues from after them. From this stream (ChaCha, 64-bit seed) rather than from
    /// libtorch's generator itself, whose CPU generator keeps 32 bits of a seed: seeding
    /// it from its own draws would run in a cycle of some 10^4 to 10^5 frames.
    seeds: ChaCha8Rng,
    frame_seed: i64,
}

impl LogitNoise {
    /// `samples` draws S (0: no noise, the plain softmax), from `seed` (a fixed seed for
    /// reproducible frames, a random one otherwise).
    pub fn new(samples: usize, seed: u64) -> Self {
        let mut seeds = ChaCha8Rng::seed_from_u64(seed);
        let frame_seed = seeds.gen();
        LogitNoise {
            samples,
            seeds,
            frame_seed,
        }
    }
}

/// Seeds libtorch's generator with its seed when dropped, also when a panic (a libtorch
/// error: out of memory) unwinds past it.
struct SeedOnDrop(i64);

impl Drop for SeedOnDrop {
    fn drop(&mut self) {
        tch::manual_seed(self.0);
    }
}

/// Softmax over classes averaged over S draws of Gaussian logit noise:
/// p = (1/S) Σ_s softmax(f + σ ⊙ ε_s), σ = exp(s / 2), ε_s from `noise`.
///
/// `logits` and `log_variance` are `[B, C, H, W]`; the result is `[B, C, H, W]`. Without
/// noise (S = 0) the plain softmax. The B samples get the same draws, and so does every
/// later call with the same `noise` (common random numbers): each sample's average is as
/// unbiased as with draws of its own, and the samples differ by their logits alone. With
/// draws of their own, the error of each S-draw average would add to the spread between
/// the samples and be reported as epistemic uncertainty: T identical samples would show a
/// mutual information of ~0.02 to 0.15 nats (σ² of 1 to 4, S = 10) instead of 0.
///
/// The draws come from libtorch's generator seeded with the frame's seed; afterwards it is
/// seeded with the next seed of `noise`, so the draws after it (the next chunk's dropout
/// masks) are new ones.
pub fn noise_averaged_softmax(
    logits: &Tensor,
    log_variance: &Tensor,
    noise: &mut LogitNoise,
) -> Tensor {
    let logits = logits.contiguous();
    if noise.samples == 0 {
        return logits.softmax(1, Kind::Float);
    }
    let _resume = SeedOnDrop(noise.seeds.gen());
    tch::manual_seed(noise.frame_seed);
    // The loop below runs S times over B x C x H x W values, the largest cost after the
    // network in mc mode. So: contiguous NCHW inputs once (softmax would otherwise copy a
    // channels-last or cropped input on every draw), f + σ ⊙ ε written into one buffer
    // (one fused pass for the sum), the softmax into a second buffer, and no allocation
    // per draw (on the CPU a fresh tensor of this size is fresh pages, faulted in on first
    // touch).
    let sigma = (log_variance.clamp(LOG_VARIANCE_CLAMP.0, LOG_VARIANCE_CLAMP.1) * 0.5)
        .exp()
        .contiguous();
    let mut one = logits.size();
    one[0] = 1;
    let mut epsilon = Tensor::empty(one.as_slice(), (logits.kind(), logits.device()));
    let noisy = logits.empty_like();
    let probs = Tensor::empty(logits.size(), (Kind::Float, logits.device()));
    let mut sum = Tensor::empty(logits.size(), (Kind::Float, logits.device()));
    for draw in 0..noise.samples {
        let _ = epsilon.normal_(0.0, 1.0);
        // noisy = f + σ ⊙ ε_s, ε_s broadcast over the B samples.
        let _ = logits.addcmul_out(&noisy, &sigma, &epsilon);
        if draw == 0 {
            let _ = noisy.softmax_int_out(&sum, 1, Kind::Float);
        } else {
            let _ = noisy.softmax_int_out(&probs, 1, Kind::Float);
            sum += &probs;
        }
    }
    sum /= noise.samples as f64;
    sum
}

/// Entropy in nats over dimension 1: `[B, C, H, W]` probabilities -> `[B, H, W]`.
pub fn entropy(probs: &Tensor) -> Tensor {
    -(probs * probs.clamp_min(PROB_FLOOR).log()).sum_dim_intlist(1, false, Kind::Float)
}

/// Running sums over MC samples of semantic class probabilities.
#[derive(Debug)]
pub struct SemanticMoments {
    /// Σ_t p_t, `[C, H, W]`.
    prob_sum: Option<Tensor>,
    /// Σ_t H[p_t], `[H, W]` (nats).
    entropy_sum: Option<Tensor>,
    count: i64,
}

/// Per-pixel semantic outputs at network resolution.
#[derive(Debug)]
pub struct SemanticUncertainty {
    /// p̄ = (1/T) Σ_t p_t, `[C, H, W]`.
    pub mean_probs: Tensor,
    /// H[p̄] in nats, `[H, W]`.
    pub total_entropy: Tensor,
    /// Expected entropy (1/T) Σ_t H\[p_t\] in nats, `[H, W]`.
    pub aleatoric: Tensor,
    /// Mutual information H\[p̄\] − (1/T) Σ_t H\[p_t\] in nats, `[H, W]`; `None` for T = 1.
    pub epistemic: Option<Tensor>,
}

impl Default for SemanticMoments {
    fn default() -> Self {
        Self::new()
    }
}

impl SemanticMoments {
    pub fn new() -> Self {
        SemanticMoments {
            prob_sum: None,
            entropy_sum: None,
            count: 0,
        }
    }

    /// Adds a chunk of MC samples: probabilities `[B, C, H, W]` (each already averaged
    /// over logit noise).
    pub fn add(&mut self, probs: &Tensor) {
        let chunk_prob_sum = probs.sum_dim_intlist(0, false, Kind::Float);
        let chunk_entropy_sum = entropy(probs).sum_dim_intlist(0, false, Kind::Float);
        accumulate(&mut self.prob_sum, chunk_prob_sum);
        accumulate(&mut self.entropy_sum, chunk_entropy_sum);
        self.count += probs.size()[0];
    }

    /// The reductions over all samples added. Panics if none were added.
    pub fn finish(self) -> SemanticUncertainty {
        let t = self.count as f64;
        let mean_probs = self
            .prob_sum
            .expect("SemanticMoments::finish without samples")
            / t;
        let aleatoric = self.entropy_sum.expect("entropy sum exists with prob sum") / t;
        let total_entropy = entropy(&mean_probs.unsqueeze(0)).squeeze_dim(0);
        // H[p̄] ≥ mean H[p_t] by concavity; rounding can dip below 0 by ~1e-7.
        let epistemic = (self.count > 1).then(|| (&total_entropy - &aleatoric).clamp_min(0.0));
        SemanticUncertainty {
            mean_probs,
            total_entropy,
            aleatoric,
            epistemic,
        }
    }
}

/// The aleatoric variance (m²) of one depth sample from the head's s.
pub fn depth_aleatoric_variance(s: &Tensor, likelihood: Likelihood) -> Tensor {
    let s = s.clamp(LOG_VARIANCE_CLAMP.0, LOG_VARIANCE_CLAMP.1);
    match likelihood {
        Likelihood::Gaussian => s.exp(),
        // s = log σ̂ with σ̂ the Laplace distribution's standard deviation (scale σ̂/√2):
        // the loss √2 exp(−s)|y − ŷ| + s is minimised at exactly that σ̂.
        Likelihood::Laplace => (s * 2.0).exp(),
    }
}

/// The expected aleatoric variance (m²) when the head's s is itself uncertain,
/// s ~ N(`s_mean`, `s_var`) (moments mode): E[exp(k·s)] = exp(k·μ + k²·v/2), with k = 1 for
/// the Gaussian likelihood (σ² = exp(s)) and k = 2 for the Laplace one (σ̂² = exp(2s)).
pub fn expected_depth_aleatoric_variance(
    s_mean: &Tensor,
    s_var: &Tensor,
    likelihood: Likelihood,
) -> Tensor {
    let k = match likelihood {
        Likelihood::Gaussian => 1.0,
        Likelihood::Laplace => 2.0,
    };
    // exp(k·(μ + k·v/2)): the plain variance of the s that has the same expectation.
    depth_aleatoric_variance(&(s_mean + s_var * (k / 2.0)), likelihood)
}

/// Running sums over MC samples of depth means and aleatoric variances.
///
/// A sample may itself be a distribution over the mean (moments mode: the mean with its
/// propagated variance); by the law of total variance its variance adds to the spread of
/// the means. The epistemic variance is accumulated relative to the first sample (shifted
/// data), so that E\[d²\] − E\[d\]² does not lose the small variance of large depths to f32
/// rounding.
#[derive(Debug, Default)]
pub struct DepthMoments {
    shift: Option<Tensor>,
    /// Σ_t (ŷ_t − shift), Σ_t ((ŷ_t − shift)² + v_t), Σ_t σ̂²_t; each `[H, W]` (v_t: the
    /// variance of sample t's mean, 0 for an MC sample).
    diff_sum: Option<Tensor>,
    diff_sq_sum: Option<Tensor>,
    variance_sum: Option<Tensor>,
    count: i64,
    /// Whether a sample carried a variance of its mean.
    spread_given: bool,
}

/// Per-pixel depth outputs at network resolution, all `[H, W]`.
#[derive(Debug)]
pub struct DepthUncertainty {
    /// ŷ = (1/T) Σ_t ŷ_t, metres.
    pub mean: Tensor,
    /// sqrt((1/T) Σ_t σ̂²_t), metres.
    pub aleatoric_std: Tensor,
    /// sqrt of the (population) variance of ŷ_t over t, metres (with the variances of
    /// Gaussian samples added); `None` for one MC-free sample.
    pub epistemic_std: Option<Tensor>,
}

impl DepthMoments {
    pub fn new() -> Self {
        Self::default()
    }

    /// Adds a chunk of samples: means `[B, H, W]` (metres) and aleatoric variances
    /// `[B, H, W]` (m²).
    pub fn add(&mut self, means: &Tensor, aleatoric_variances: &Tensor) {
        let shift = self
            .shift
            .get_or_insert_with(|| means.get(0).detach().copy());
        let diff = means - &*shift;
        accumulate(
            &mut self.diff_sum,
            diff.sum_dim_intlist(0, false, Kind::Float),
        );
        accumulate(
            &mut self.diff_sq_sum,
            diff.square().sum_dim_intlist(0, false, Kind::Float),
        );
        accumulate(
            &mut self.variance_sum,
            aleatoric_variances.sum_dim_intlist(0, false, Kind::Float),
        );
        self.count += means.size()[0];
    }

    /// Adds samples whose means are themselves Gaussian: means and their variances
    /// `[B, H, W]` (m, m²), aleatoric variances `[B, H, W]` (m²). One such sample gives an
    /// epistemic std, sqrt of its mean's variance.
    pub fn add_gaussian(
        &mut self,
        means: &Tensor,
        mean_variances: &Tensor,
        aleatoric_variances: &Tensor,
    ) {
        self.add(means, aleatoric_variances);
        accumulate(
            &mut self.diff_sq_sum,
            mean_variances.sum_dim_intlist(0, false, Kind::Float),
        );
        self.spread_given = true;
    }

    /// The reductions over all samples added. Panics if none were added.
    pub fn finish(self) -> DepthUncertainty {
        let t = self.count as f64;
        let shift = self.shift.expect("DepthMoments::finish without samples");
        let mean_diff = self.diff_sum.expect("sums exist with shift") / t;
        let aleatoric_std = (self.variance_sum.expect("sums exist with shift") / t).sqrt();
        let epistemic_std = (self.count > 1 || self.spread_given).then(|| {
            let mean_sq_diff = self.diff_sq_sum.as_ref().expect("sums exist with shift") / t;
            (mean_sq_diff - mean_diff.square()).clamp_min(0.0).sqrt()
        });
        DepthUncertainty {
            mean: shift + mean_diff,
            aleatoric_std,
            epistemic_std,
        }
    }
}

fn accumulate(sum: &mut Option<Tensor>, value: Tensor) {
    match sum {
        Some(total) => *total += value,
        None => *sum = Some(value),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::test_support::torch_rng_lock;

    fn close(a: &Tensor, b: &Tensor, tol: f64) -> bool {
        let diff = (a - b).abs().max().double_value(&[]);
        diff <= tol
    }

    #[test]
    fn worked_example_plain_softmax() {
        // Logits (1, 2) give softmax (26.9 %, 73.1 %).
        let logits = Tensor::from_slice(&[1.0f32, 2.0]).view([1, 2, 1, 1]);
        let p = noise_averaged_softmax(&logits, &logits.zeros_like(), &mut LogitNoise::new(0, 0));
        let p1 = p.double_value(&[0, 0, 0, 0]);
        assert!((p1 - 0.268_941).abs() < 1e-5, "p1 = {p1}");
    }

    /// E[σ(d)] for d ~ N(mu, var) by a fine Riemann sum: the exact noise-averaged
    /// probability of the larger class when each of two logits gets noise of variance v
    /// (then d = x2 − x1 has variance 2v).
    fn expected_sigmoid(mu: f64, var: f64) -> f64 {
        let sd = var.sqrt();
        let n = 20_000;
        let (lo, hi) = (mu - 10.0 * sd, mu + 10.0 * sd);
        let h = (hi - lo) / n as f64;
        (0..n)
            .map(|i| {
                let d = lo + (i as f64 + 0.5) * h;
                let pdf = (-(d - mu).powi(2) / (2.0 * var)).exp()
                    / (2.0 * std::f64::consts::PI * var).sqrt();
                pdf / (1.0 + (-d).exp()) * h
            })
            .sum()
    }

    #[test]
    fn worked_example_noise_flattens_towards_30_70() {
        let _lock = torch_rng_lock();
        tch::manual_seed(7);
        // 4096 pixels with logits (1, 2) and log variance log(0.5); 50 noise draws each.
        let pixels = 64;
        let logits = Tensor::from_slice(&[1.0f32, 2.0])
            .view([1, 2, 1, 1])
            .repeat([1, 1, pixels, pixels]);
        let log_var = Tensor::full(
            [1, 2, pixels, pixels],
            0.5f64.ln(),
            (Kind::Float, tch::Device::Cpu),
        );
        let p = noise_averaged_softmax(&logits, &log_var, &mut LogitNoise::new(50, 7));
        let exact_p2 = expected_sigmoid(1.0, 1.0);
        assert!(
            (exact_p2 - 0.70).abs() < 0.005,
            "exact noise-averaged p2 = {exact_p2}"
        );
        let p2 = p.get(0).get(1);
        // Averaged over pixels the MC estimate is within 0.005 of the exact expectation
        // (its standard error is ~0.0005); every pixel's 50-draw estimate within 0.15.
        let mean_p2 = p2.mean(Kind::Double).double_value(&[]);
        assert!(
            (mean_p2 - exact_p2).abs() < 0.005,
            "mean p2 = {mean_p2}, exact {exact_p2}"
        );
        let worst = (&p2 - exact_p2).abs().max().double_value(&[]);
        assert!(worst < 0.15, "worst pixel deviates by {worst}");
        // Probabilities still sum to 1 per pixel.
        assert!(close(
            &p.sum_dim_intlist(1, false, Kind::Float),
            &Tensor::ones([1, pixels, pixels], (Kind::Float, tch::Device::Cpu)),
            1e-5
        ));
    }

    #[test]
    fn a_frames_samples_share_its_noise_draws_so_identical_samples_agree() {
        let _lock = torch_rng_lock();
        tch::manual_seed(8);
        let one = Tensor::randn([1, 3, 4, 4], (Kind::Float, tch::Device::Cpu));
        let (logits, log_var) = (
            one.repeat([5, 1, 1, 1]),
            one.zeros_like().repeat([5, 1, 1, 1]),
        );
        let spread = |p: &Tensor, q: &Tensor| (p - q).abs().max().double_value(&[]);
        // Five identical samples in one chunk, then two more chunks of the same frame.
        let mut frame = LogitNoise::new(4, 8);
        let chunk = noise_averaged_softmax(&logits, &log_var, &mut frame);
        assert!(
            spread(&chunk, &chunk.get(0)) < 1e-6,
            "identical samples of a chunk stay identical"
        );
        for later in [
            noise_averaged_softmax(&logits, &log_var, &mut frame),
            noise_averaged_softmax(
                &logits.narrow(0, 0, 2),
                &log_var.narrow(0, 0, 2),
                &mut frame,
            ),
        ] {
            assert!(
                spread(&later.get(0), &chunk.get(0)) < 1e-6,
                "later chunks too"
            );
        }
        // Draws of their own (another frame's) would separate them: the error of a
        // 4-draw average, which would read as disagreement between samples.
        let other = noise_averaged_softmax(&logits, &log_var, &mut LogitNoise::new(4, 9));
        assert!(spread(&other, &chunk) > 0.01);
        for p in [&chunk, &other] {
            let sums = p.sum_dim_intlist(1, false, Kind::Float);
            assert!(close(&sums, &sums.ones_like(), 1e-5));
        }
    }

    /// libtorch's generator goes on with new draws after each chunk's noise (the next
    /// chunk's dropout masks), not from where the frame's draws leave it, and is seeded
    /// again when the noise averaging fails part-way.
    #[test]
    fn the_generator_goes_on_with_new_draws_after_the_noise() {
        let _lock = torch_rng_lock();
        tch::manual_seed(11);
        let logits = Tensor::randn([2, 3, 4, 4], (Kind::Float, tch::Device::Cpu));
        let mut frame = LogitNoise::new(4, 12);
        let after = |frame: &mut LogitNoise| {
            let _ = noise_averaged_softmax(&logits, &logits.zeros_like(), frame);
            Tensor::rand([16], (Kind::Float, tch::Device::Cpu))
        };
        let (first, second) = (after(&mut frame), after(&mut frame));
        assert!(
            !close(&first, &second, 0.0),
            "the same draws after each chunk"
        );
        // A log variance of another shape fails in the loop, after the frame's seed.
        let failed = crate::panic_guard::catch_quietly(|| {
            noise_averaged_softmax(
                &logits,
                &Tensor::zeros([5], (Kind::Float, tch::Device::Cpu)),
                &mut frame,
            )
        });
        assert!(failed.is_err());
        let third = Tensor::rand([16], (Kind::Float, tch::Device::Cpu));
        for earlier in [&first, &second] {
            assert!(!close(&third, earlier, 0.0));
        }
        tch::manual_seed(LogitNoise::new(4, 12).frame_seed);
        let _ = Tensor::randn([1, 3, 4, 4], (Kind::Float, tch::Device::Cpu));
        let from_frame_seed = Tensor::rand([16], (Kind::Float, tch::Device::Cpu));
        assert!(
            !close(&third, &from_frame_seed, 0.0),
            "left on the frame's seed"
        );
    }

    /// The head outputs arrive cropped from the padded size and, with `channels_last`, in
    /// NHWC strides: the same seeded draws give the same probabilities as from contiguous
    /// copies, and the result is the usual contiguous `[B, C, H, W]`.
    #[test]
    fn noise_averaging_does_not_depend_on_the_input_layout() {
        let _lock = torch_rng_lock();
        tch::manual_seed(9);
        let padded = Tensor::randn([3, 5, 8, 6], (Kind::Float, tch::Device::Cpu));
        let log_var = Tensor::randn([3, 5, 8, 6], (Kind::Float, tch::Device::Cpu));
        // Cropped (rows 0..7 of 8) and channels-last: neither contiguous nor NCHW.
        let nhwc = |t: &Tensor| t.permute([0, 2, 3, 1]).contiguous().permute([0, 3, 1, 2]);
        let (logits, s) = (
            nhwc(&padded).narrow(2, 0, 7),
            nhwc(&log_var).narrow(2, 0, 7),
        );
        assert!(!logits.is_contiguous());
        let run = |l: &Tensor, s: &Tensor| {
            tch::manual_seed(10);
            noise_averaged_softmax(l, s, &mut LogitNoise::new(3, 10))
        };
        let strided = run(&logits, &s);
        let contiguous = run(&logits.contiguous(), &s.contiguous());
        assert_eq!(strided.size(), [3, 5, 7, 6]);
        assert!(strided.is_contiguous());
        assert!(close(&strided, &contiguous, 0.0));
    }

    #[test]
    fn entropy_of_known_distributions() {
        let probs = Tensor::from_slice(&[0.5f32, 0.5, 1.0, 0.0]).view([2, 2, 1, 1]);
        let h = entropy(&probs);
        assert!((h.double_value(&[0, 0, 0]) - std::f64::consts::LN_2).abs() < 1e-6);
        assert_eq!(h.double_value(&[1, 0, 0]), 0.0);
    }

    fn random_probs(shape: [i64; 4]) -> Tensor {
        (Tensor::randn(shape, (Kind::Float, tch::Device::Cpu)) * 3.0).softmax(1, Kind::Float)
    }

    #[test]
    fn mutual_information_is_zero_when_samples_agree() {
        let _lock = torch_rng_lock();
        tch::manual_seed(1);
        let p = random_probs([1, 5, 4, 6]);
        let mut moments = SemanticMoments::new();
        moments.add(&p.repeat([3, 1, 1, 1]));
        moments.add(&p.repeat([2, 1, 1, 1]));
        let out = moments.finish();
        let mi = out.epistemic.unwrap();
        assert!(mi.abs().max().double_value(&[]) < 1e-5);
        assert!(close(&out.aleatoric, &entropy(&p).squeeze_dim(0), 1e-5));
    }

    #[test]
    fn mutual_information_positive_when_samples_disagree_and_sums_to_total() {
        let _lock = torch_rng_lock();
        tch::manual_seed(2);
        let samples = random_probs([6, 4, 3, 5]);
        let mut moments = SemanticMoments::new();
        moments.add(&samples.narrow(0, 0, 4));
        moments.add(&samples.narrow(0, 4, 2));
        let out = moments.finish();
        let mi = out.epistemic.as_ref().unwrap();
        assert!(
            mi.min().double_value(&[]) > 0.0,
            "MI must be > 0 where samples disagree"
        );
        // aleatoric + epistemic = total entropy H[p̄].
        assert!(close(&(&out.aleatoric + mi), &out.total_entropy, 1e-5));
        // And everything against a direct computation over all samples at once.
        let mean = samples.mean_dim(0, false, Kind::Float);
        assert!(close(&out.mean_probs, &mean, 1e-6));
        let expected_total = entropy(&mean.unsqueeze(0)).squeeze_dim(0);
        assert!(close(&out.total_entropy, &expected_total, 1e-5));
        let expected_aleatoric = entropy(&samples).mean_dim(0, false, Kind::Float);
        assert!(close(&out.aleatoric, &expected_aleatoric, 1e-5));
    }

    #[test]
    fn single_sample_has_no_epistemic() {
        let mut moments = SemanticMoments::new();
        moments.add(&Tensor::from_slice(&[0.2f32, 0.8]).view([1, 2, 1, 1]));
        assert!(moments.finish().epistemic.is_none());
        let mut depth = DepthMoments::new();
        depth.add(
            &Tensor::from_slice(&[3.0f32]).view([1, 1, 1]),
            &Tensor::from_slice(&[0.25f32]).view([1, 1, 1]),
        );
        let out = depth.finish();
        assert!(out.epistemic_std.is_none());
        assert!((out.aleatoric_std.double_value(&[0, 0]) - 0.5).abs() < 1e-6);
    }

    #[test]
    fn depth_epistemic_is_sample_std_of_means() {
        let _lock = torch_rng_lock();
        tch::manual_seed(3);
        // Large depths with small spread: the case where naive E[y²] − E[y]² fails in f32.
        let means = Tensor::randn([7, 3, 4], (Kind::Float, tch::Device::Cpu)) * 0.05 + 80.0;
        let variances = Tensor::rand([7, 3, 4], (Kind::Float, tch::Device::Cpu));
        let mut moments = DepthMoments::new();
        moments.add(&means.narrow(0, 0, 3), &variances.narrow(0, 0, 3));
        moments.add(&means.narrow(0, 3, 4), &variances.narrow(0, 3, 4));
        let out = moments.finish();
        let means64 = means.to_kind(Kind::Double);
        let expected_var = means64.var_dim(0, false, false);
        let got_var = out.epistemic_std.unwrap().to_kind(Kind::Double).square();
        let rel = ((&got_var - &expected_var).abs() / &expected_var)
            .max()
            .double_value(&[]);
        assert!(rel < 1e-2, "relative error of epistemic variance {rel}");
        assert!(close(
            &out.mean,
            &means.mean_dim(0, false, Kind::Float),
            1e-4
        ));
        let expected_aleatoric = variances.mean_dim(0, false, Kind::Float).sqrt();
        assert!(close(&out.aleatoric_std, &expected_aleatoric, 1e-6));
    }

    #[test]
    fn gaussian_depth_samples_add_their_variance_to_the_spread() {
        let t = |v: &[f32]| Tensor::from_slice(v).view([v.len() as i64, 1, 1]);
        // One Gaussian sample: the epistemic std is its own std.
        let mut one = DepthMoments::new();
        one.add_gaussian(&t(&[20.0]), &t(&[0.09]), &t(&[4.0]));
        let out = one.finish();
        assert!((out.epistemic_std.unwrap().double_value(&[0, 0]) - 0.3).abs() < 1e-5);
        assert!((out.aleatoric_std.double_value(&[0, 0]) - 2.0).abs() < 1e-6);
        // Two: law of total variance, mean of the variances plus variance of the means.
        let mut two = DepthMoments::new();
        two.add_gaussian(&t(&[10.0, 12.0]), &t(&[1.0, 3.0]), &t(&[0.0, 0.0]));
        let std = two.finish().epistemic_std.unwrap().double_value(&[0, 0]);
        assert!((std - (2.0f64 + 1.0).sqrt()).abs() < 1e-5, "{std}");
    }

    #[test]
    fn expected_aleatoric_variance_of_an_uncertain_s_is_the_log_normal_mean() {
        let _lock = torch_rng_lock();
        tch::manual_seed(4);
        let (mu, var) = (0.3f64, 0.49f64);
        let s = Tensor::randn([400_000], (Kind::Double, tch::Device::Cpu)) * var.sqrt() + mu;
        for likelihood in [Likelihood::Gaussian, Likelihood::Laplace] {
            let sampled = depth_aleatoric_variance(&s, likelihood)
                .mean(Kind::Double)
                .double_value(&[]);
            let closed = expected_depth_aleatoric_variance(
                &Tensor::from_slice(&[mu]),
                &Tensor::from_slice(&[var]),
                likelihood,
            )
            .double_value(&[0]);
            assert!(
                (closed / sampled - 1.0).abs() < 0.01,
                "{likelihood:?}: closed form {closed}, sampled {sampled}"
            );
        }
    }

    #[test]
    fn depth_aleatoric_variance_per_likelihood() {
        let s = Tensor::from_slice(&[0.0f32, 2.0f32.ln()]);
        let gauss = depth_aleatoric_variance(&s, Likelihood::Gaussian);
        assert!(close(&gauss, &Tensor::from_slice(&[1.0f32, 2.0]), 1e-6));
        // Laplace: s = log σ̂ (the std), variance σ̂².
        let laplace = depth_aleatoric_variance(&s, Likelihood::Laplace);
        assert!(close(&laplace, &Tensor::from_slice(&[1.0f32, 4.0]), 1e-5));
        // Huge s is clamped: finite.
        let big = depth_aleatoric_variance(&Tensor::from_slice(&[1e6f32]), Likelihood::Laplace);
        assert!(big.isfinite().all().int64_value(&[]) == 1);
    }
}

//! Uncertainty-quality accumulators: per-pixel values go in frame by frame, summary
//! figures and curves come out. Each is a set of counts over fixed bins, so two runs over
//! different frames merge exactly by adding their counts (one report from many bags).
//!
//! - [`Ranking`]: an uncertainty against a binary outcome (wrong pixel, OOD pixel) and a
//!   score (correct 1/0, squared depth error): ROC, AUROC, average precision, and the
//!   mean score of the least uncertain fraction of pixels (the paper's precision/RMS by
//!   uncertainty percentile).
//! - [`Reliability`]: semantic confidence against accuracy in 10 bins: the reliability
//!   diagram, expected calibration error and the paper's calibration MSE.
//! - [`DepthCalibration`]: depth errors standardised by the predicted std: coverage of
//!   ±kσ intervals against what the likelihood expects, and the negative log-likelihood.

use serde::{Deserialize, Serialize};

use crate::model::Likelihood;

/// Bins of [`Ranking`] between [`RANK_MIN`] and [`RANK_MAX`], log-spaced (0.62 % wide);
/// values below the range share bin 0, values above it the last bin.
pub const RANK_BINS: usize = 4096;
pub const RANK_MIN: f64 = 1e-7;
pub const RANK_MAX: f64 = 1e4;

/// The [`Ranking`] bin of an uncertainty value (`None` for NaN).
fn rank_bin(value: f32) -> Option<usize> {
    let v = value as f64;
    if v.is_nan() {
        return None;
    }
    if v < RANK_MIN {
        return Some(0);
    }
    if v >= RANK_MAX {
        return Some(RANK_BINS + 1);
    }
    let t = (v / RANK_MIN).ln() / (RANK_MAX / RANK_MIN).ln();
    Some(1 + ((t * RANK_BINS as f64) as usize).min(RANK_BINS - 1))
}

/// The lower edge of a [`Ranking`] bin (0 for bin 0).
pub fn rank_bin_lower_edge(bin: usize) -> f64 {
    match bin {
        0 => 0.0,
        b => RANK_MIN * (RANK_MAX / RANK_MIN).powf((b - 1) as f64 / RANK_BINS as f64),
    }
}

/// An uncertainty against a binary outcome and a score, binned by uncertainty.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Ranking {
    /// Pixels per bin.
    pub count: Vec<u64>,
    /// Pixels with the outcome (wrong, OOD) per bin.
    pub positive: Vec<u64>,
    /// Sum of the score per bin.
    pub score: Vec<f64>,
}

impl Ranking {
    /// Whether it has every bin (a state read from a file may not).
    pub fn has_bins(&self) -> bool {
        [self.count.len(), self.positive.len(), self.score.len()] == [RANK_BINS + 2; 3]
    }
}

impl Default for Ranking {
    fn default() -> Self {
        Ranking {
            count: vec![0; RANK_BINS + 2],
            positive: vec![0; RANK_BINS + 2],
            score: vec![0.0; RANK_BINS + 2],
        }
    }
}

impl Ranking {
    /// Adds one pixel; a NaN uncertainty is not counted.
    pub fn add(&mut self, uncertainty: f32, positive: bool, score: f64) {
        if let Some(b) = rank_bin(uncertainty) {
            self.count[b] += 1;
            self.positive[b] += positive as u64;
            self.score[b] += score;
        }
    }

    pub fn merge(&mut self, other: &Ranking) {
        for b in 0..self.count.len() {
            self.count[b] += other.count[b];
            self.positive[b] += other.positive[b];
            self.score[b] += other.score[b];
        }
    }

    pub fn pixels(&self) -> u64 {
        self.count.iter().sum()
    }

    pub fn positives(&self) -> u64 {
        self.positive.iter().sum()
    }

    /// ROC points (false positive rate, true positive rate) for thresholds at the bin
    /// edges, from the most uncertain bin down: a pixel above the threshold is flagged.
    /// `None` unless both outcomes occur.
    pub fn roc(&self) -> Option<Vec<(f64, f64)>> {
        let (p, n) = (self.positives(), self.pixels() - self.positives());
        if p == 0 || n == 0 {
            return None;
        }
        let mut points = vec![(0.0, 0.0)];
        let (mut tp, mut fp) = (0u64, 0u64);
        for b in (0..self.count.len()).rev() {
            if self.count[b] == 0 {
                continue;
            }
            tp += self.positive[b];
            fp += self.count[b] - self.positive[b];
            points.push((fp as f64 / n as f64, tp as f64 / p as f64));
        }
        Some(points)
    }

    /// Area under the ROC curve: the probability that a random positive pixel is more
    /// uncertain than a random negative one, ties (same bin) counting half.
    pub fn auroc(&self) -> Option<f64> {
        let roc = self.roc()?;
        Some(
            roc.windows(2)
                .map(|w| (w[1].0 - w[0].0) * (w[1].1 + w[0].1) / 2.0)
                .sum(),
        )
    }

    /// Average precision of flagging positives by uncertainty (area under the
    /// precision-recall curve, step-wise; pixels of one bin enter together).
    pub fn average_precision(&self) -> Option<f64> {
        let p = self.positives();
        if p == 0 || self.pixels() == p {
            return None;
        }
        let (mut tp, mut flagged, mut ap) = (0u64, 0u64, 0.0);
        for b in (0..self.count.len()).rev() {
            if self.positive[b] == 0 {
                flagged += self.count[b];
                continue;
            }
            tp += self.positive[b];
            flagged += self.count[b];
            ap += (self.positive[b] as f64 / p as f64) * (tp as f64 / flagged as f64);
        }
        Some(ap)
    }

    /// The mean score of the least uncertain fraction r of the pixels, for each r; the
    /// bin at the cut contributes pro rata.
    pub fn kept_means(&self, fractions: &[f64]) -> Option<Vec<f64>> {
        let n = self.pixels();
        if n == 0 {
            return None;
        }
        Some(
            fractions
                .iter()
                .map(|r| {
                    let want = (r * n as f64).max(1.0);
                    let (mut kept, mut score) = (0.0, 0.0);
                    for b in 0..self.count.len() {
                        let c = self.count[b] as f64;
                        if c == 0.0 {
                            continue;
                        }
                        let take = c.min(want - kept);
                        score += self.score[b] * take / c;
                        kept += take;
                        if kept >= want {
                            break;
                        }
                    }
                    score / kept
                })
                .collect(),
        )
    }

    /// Counts of negative and positive pixels in `groups` coarser bins (consecutive
    /// [`RANK_BINS`] bins merged; bin 0 and the overflow bin go to the first and last), with
    /// each group's lower edge (0 for the first, which holds every value below [`RANK_MIN`],
    /// 0 included): the histograms of the OOD plots.
    pub fn histogram(&self, groups: usize) -> Vec<(f64, u64, u64)> {
        let per = RANK_BINS.div_ceil(groups);
        let mut out: Vec<(f64, u64, u64)> = (0..groups)
            .map(|g| match g {
                0 => (0.0, 0, 0),
                g => (rank_bin_lower_edge(1 + g * per), 0, 0),
            })
            .collect();
        for b in 0..self.count.len() {
            let g = (b.saturating_sub(1) / per).min(groups - 1);
            out[g].1 += self.count[b] - self.positive[b];
            out[g].2 += self.positive[b];
        }
        out
    }
}

/// Number of confidence bins of the reliability diagram.
pub const RELIABILITY_BINS: usize = 10;

/// Semantic confidence against accuracy in [`RELIABILITY_BINS`] equal-width bins.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct Reliability {
    pub count: [u64; RELIABILITY_BINS],
    pub confidence_sum: [f64; RELIABILITY_BINS],
    pub correct: [u64; RELIABILITY_BINS],
}

/// One bar of a reliability diagram.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct ReliabilityBin {
    pub lower: f64,
    pub upper: f64,
    pub pixels: u64,
    /// Mean confidence of the bin's pixels.
    pub confidence: f64,
    /// Fraction of them labelled correctly.
    pub accuracy: f64,
}

impl Reliability {
    pub fn add(&mut self, confidence: f32, correct: bool) {
        if !confidence.is_finite() {
            return;
        }
        let c = confidence.clamp(0.0, 1.0) as f64;
        let b = ((c * RELIABILITY_BINS as f64) as usize).min(RELIABILITY_BINS - 1);
        self.count[b] += 1;
        self.confidence_sum[b] += c;
        self.correct[b] += correct as u64;
    }

    pub fn merge(&mut self, other: &Reliability) {
        for b in 0..RELIABILITY_BINS {
            self.count[b] += other.count[b];
            self.confidence_sum[b] += other.confidence_sum[b];
            self.correct[b] += other.correct[b];
        }
    }

    /// The non-empty bins.
    pub fn bins(&self) -> Vec<ReliabilityBin> {
        (0..RELIABILITY_BINS)
            .filter(|&b| self.count[b] > 0)
            .map(|b| ReliabilityBin {
                lower: b as f64 / RELIABILITY_BINS as f64,
                upper: (b + 1) as f64 / RELIABILITY_BINS as f64,
                pixels: self.count[b],
                confidence: self.confidence_sum[b] / self.count[b] as f64,
                accuracy: self.correct[b] as f64 / self.count[b] as f64,
            })
            .collect()
    }

    /// Expected calibration error: Σ_b (n_b / N) |accuracy_b − confidence_b|.
    pub fn ece(&self) -> Option<f64> {
        let n: u64 = self.count.iter().sum();
        (n > 0).then(|| {
            self.bins()
                .iter()
                .map(|b| b.pixels as f64 / n as f64 * (b.accuracy - b.confidence).abs())
                .sum()
        })
    }

    /// The paper's calibration MSE: the mean over the non-empty bins of
    /// (accuracy_b − confidence_b)².
    pub fn calibration_mse(&self) -> Option<f64> {
        let bins = self.bins();
        (!bins.is_empty()).then(|| {
            bins.iter()
                .map(|b| (b.accuracy - b.confidence).powi(2))
                .sum::<f64>()
                / bins.len() as f64
        })
    }
}

/// Bins of |y − ŷ| / σ in [`DepthCalibration`]: width 0.01 up to 10σ, then overflow.
const Z_BINS: usize = 1000;
const Z_MAX: f64 = 10.0;

/// Central interval levels of the depth calibration curve.
pub const INTERVAL_LEVELS: [f64; 9] = [0.1, 0.2, 0.3, 0.4, 0.5, 0.6, 0.7, 0.8, 0.9];

/// Depth errors standardised by the predicted standard deviation σ (total: aleatoric and
/// epistemic added in quadrature), under the depth head's likelihood.
///
/// The predictive distribution is taken as the likelihood's shape with mean ŷ and std σ:
/// in mc mode it is really a mixture of T such distributions, which this moment-matches.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct DepthCalibration {
    pub likelihood: Likelihood,
    pub pixels: u64,
    /// Pixels with depth and a prediction whose σ is 0 or not finite: no likelihood to
    /// score them under, so left out of the NLL and the coverage, and counted (states of
    /// earlier versions have none).
    #[serde(default)]
    pub without_sigma: u64,
    /// Σ −log p(y) in nats (p a density in 1/m).
    pub nll_sum: f64,
    /// Pixels per |z| bin, |z| = |y − ŷ| / σ.
    pub z_count: Vec<u64>,
}

/// One point of the depth calibration curve.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct Coverage {
    /// Central interval, in σ.
    pub half_width_sigma: f64,
    /// Fraction of pixels the likelihood expects inside it.
    pub expected: f64,
    /// Fraction inside it.
    pub observed: f64,
}

impl DepthCalibration {
    pub fn new(likelihood: Likelihood) -> Self {
        DepthCalibration {
            likelihood,
            pixels: 0,
            without_sigma: 0,
            nll_sum: 0.0,
            z_count: vec![0; Z_BINS + 1],
        }
    }

    /// Adds a pixel with truth `y`, prediction `mean` and std `sigma` (metres). A pixel
    /// with a non-finite value is not counted; one whose σ alone is 0 or not finite is
    /// counted in [`DepthCalibration::without_sigma`].
    pub fn add(&mut self, y: f32, mean: f32, sigma: f32) {
        let (y, mean, sigma) = (y as f64, mean as f64, sigma as f64);
        if !(y.is_finite() && mean.is_finite()) {
            return;
        }
        if !(sigma.is_finite() && sigma > 0.0) {
            self.without_sigma += 1;
            return;
        }
        let z = (y - mean).abs() / sigma;
        self.pixels += 1;
        self.nll_sum += match self.likelihood {
            Likelihood::Gaussian => {
                0.5 * (2.0 * std::f64::consts::PI * sigma * sigma).ln() + 0.5 * z * z
            }
            // Laplace with std σ has scale b = σ/√2: −log p = log 2b + |y − ŷ|/b.
            Likelihood::Laplace => {
                (std::f64::consts::SQRT_2 * sigma).ln() + std::f64::consts::SQRT_2 * z
            }
        };
        let b = ((z / Z_MAX * Z_BINS as f64) as usize).min(Z_BINS);
        self.z_count[b] += 1;
    }

    /// Whether it has every bin (a state read from a file may not).
    pub fn has_bins(&self) -> bool {
        self.z_count.len() == Z_BINS + 1
    }

    pub fn merge(&mut self, other: &DepthCalibration) {
        self.pixels += other.pixels;
        self.without_sigma += other.without_sigma;
        self.nll_sum += other.nll_sum;
        for (a, b) in self.z_count.iter_mut().zip(&other.z_count) {
            *a += b;
        }
    }

    /// Mean negative log-likelihood, nats.
    pub fn nll(&self) -> Option<f64> {
        (self.pixels > 0).then(|| self.nll_sum / self.pixels as f64)
    }

    /// The fraction of |z| ≤ k the likelihood expects.
    pub fn expected_inside(&self, k: f64) -> f64 {
        match self.likelihood {
            Likelihood::Gaussian => libm::erf(k / std::f64::consts::SQRT_2),
            Likelihood::Laplace => 1.0 - (-std::f64::consts::SQRT_2 * k).exp(),
        }
    }

    /// The observed fraction of |z| ≤ k (linear within a bin).
    pub fn observed_inside(&self, k: f64) -> Option<f64> {
        if self.pixels == 0 {
            return None;
        }
        let position = (k / Z_MAX * Z_BINS as f64).clamp(0.0, Z_BINS as f64);
        let full = position.floor() as usize;
        let mut inside: f64 = self.z_count[..full].iter().sum::<u64>() as f64;
        if full < Z_BINS {
            inside += self.z_count[full] as f64 * (position - full as f64);
        }
        Some(inside / self.pixels as f64)
    }

    /// Coverage of the ±kσ interval.
    pub fn coverage(&self, k: f64) -> Option<Coverage> {
        Some(Coverage {
            half_width_sigma: k,
            expected: self.expected_inside(k),
            observed: self.observed_inside(k)?,
        })
    }

    /// Coverage of the central intervals the likelihood gives each of `levels` (the
    /// depth reliability curve: calibrated means observed = expected).
    pub fn curve(&self, levels: &[f64]) -> Option<Vec<Coverage>> {
        levels
            .iter()
            .map(|&level| {
                // expected_inside is increasing in k: bisection for the level.
                let (mut lo, mut hi) = (0.0, Z_MAX);
                for _ in 0..60 {
                    let mid = (lo + hi) / 2.0;
                    if self.expected_inside(mid) < level {
                        lo = mid;
                    } else {
                        hi = mid;
                    }
                }
                self.coverage((lo + hi) / 2.0)
            })
            .collect()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn bins_are_ordered_and_cover_the_range() {
        assert_eq!(rank_bin(0.0), Some(0));
        assert_eq!(rank_bin(f32::NAN), None);
        assert_eq!(rank_bin(1e9), Some(RANK_BINS + 1));
        let mut last = 0;
        for v in [1e-7f32, 1e-5, 0.001, 0.01, 0.5, 0.51, 2.0, 100.0, 9999.0] {
            let b = rank_bin(v).unwrap();
            assert!(b > last, "{v} in bin {b}, not after {last}");
            assert!(rank_bin_lower_edge(b) <= v as f64 * (1.0 + 1e-6));
            assert!(rank_bin_lower_edge(b + 1) > v as f64);
            last = b;
        }
    }

    #[test]
    fn auroc_and_average_precision_of_known_rankings() {
        // Perfect separation: all positives more uncertain than all negatives.
        let mut r = Ranking::default();
        for i in 0..50 {
            r.add(0.01 + i as f32 * 1e-3, false, 1.0);
            r.add(1.0 + i as f32 * 0.01, true, 0.0);
        }
        assert!((r.auroc().unwrap() - 1.0).abs() < 1e-12);
        assert!((r.average_precision().unwrap() - 1.0).abs() < 1e-12);
        // Inverted: 0.
        let mut inv = Ranking::default();
        for i in 0..50 {
            inv.add(1.0 + i as f32 * 0.01, false, 1.0);
            inv.add(0.01, true, 0.0);
        }
        assert!(inv.auroc().unwrap().abs() < 1e-12);
        // All in one bin: ties count half, precision is the base rate.
        let mut tie = Ranking::default();
        for i in 0..40 {
            tie.add(0.3, i % 4 == 0, 0.0);
        }
        assert!((tie.auroc().unwrap() - 0.5).abs() < 1e-12);
        assert!((tie.average_precision().unwrap() - 0.25).abs() < 1e-12);
        // One outcome only: undefined.
        let mut one = Ranking::default();
        one.add(0.2, false, 1.0);
        assert_eq!(one.auroc(), None);
        assert_eq!(one.average_precision(), None);
    }

    #[test]
    fn auroc_matches_the_pairwise_definition() {
        // Interleaved values: AUROC = P(u_pos > u_neg) counted over all pairs.
        let pos = [0.05f32, 0.2, 0.3, 0.8, 2.0];
        let neg = [0.01f32, 0.1, 0.25, 0.4, 0.5, 0.6, 3.0];
        let mut r = Ranking::default();
        pos.iter().for_each(|&u| r.add(u, true, 0.0));
        neg.iter().for_each(|&u| r.add(u, false, 1.0));
        let pairs = pos
            .iter()
            .flat_map(|p| neg.iter().map(move |n| (p > n) as u32 as f64))
            .sum::<f64>()
            / (pos.len() * neg.len()) as f64;
        assert!(
            (r.auroc().unwrap() - pairs).abs() < 1e-12,
            "{:?} vs {pairs}",
            r.auroc()
        );
        // Average precision by hand: ranked by uncertainty descending the outcomes are
        // n(3.0) p(2.0) p(0.8) n n n p(0.3) n(0.25) p(0.2) n(0.1) p(0.05) n(0.01).
        let ap = (1.0 / 2.0 + 2.0 / 3.0 + 3.0 / 7.0 + 4.0 / 9.0 + 5.0 / 11.0) / 5.0;
        assert!((r.average_precision().unwrap() - ap).abs() < 1e-12);
    }

    #[test]
    fn kept_means_keep_the_least_uncertain_first_and_merge_adds() {
        let mut a = Ranking::default();
        let mut b = Ranking::default();
        // Ten pixels: the five least uncertain correct, the rest wrong; split over two.
        for i in 0..10 {
            let r = if i % 2 == 0 { &mut a } else { &mut b };
            r.add(0.01 * (i + 1) as f32, i >= 5, if i < 5 { 1.0 } else { 0.0 });
        }
        a.merge(&b);
        let m = a.kept_means(&[0.1, 0.5, 0.7, 1.0]).unwrap();
        assert_eq!(m[0], 1.0);
        assert_eq!(m[1], 1.0);
        assert!((m[2] - 5.0 / 7.0).abs() < 1e-12);
        assert!((m[3] - 0.5).abs() < 1e-12);
        assert_eq!(a.pixels(), 10);
        assert_eq!(a.positives(), 5);
        assert_eq!(Ranking::default().kept_means(&[0.5]), None);
        let h = a.histogram(8);
        assert_eq!(h.iter().map(|g| g.1 + g.2).sum::<u64>(), 10);
        assert_eq!(h.iter().map(|g| g.2).sum::<u64>(), 5);
        // The first group holds everything below RANK_MIN too: its edge is 0.
        assert_eq!(h[0].0, 0.0);
        assert!(h[1].0 > RANK_MIN && h.windows(2).all(|w| w[0].0 < w[1].0));
    }

    #[test]
    fn reliability_ece_and_calibration_mse() {
        let mut r = Reliability::default();
        // Bin 9: confidence 0.95, 80 % correct; bin 5: confidence 0.55, 55 % correct.
        for i in 0..100 {
            r.add(0.95, i < 80);
        }
        for i in 0..100 {
            r.add(0.55, i < 55);
        }
        let bins = r.bins();
        assert_eq!(bins.len(), 2);
        assert!((bins[1].confidence - 0.95).abs() < 1e-6 && (bins[1].accuracy - 0.8).abs() < 1e-12);
        assert!((r.ece().unwrap() - 0.5 * 0.15).abs() < 1e-6);
        assert!((r.calibration_mse().unwrap() - 0.15f64.powi(2) / 2.0).abs() < 1e-6);
        // Confidence 1.0 is in the top bin.
        r.add(1.0, true);
        assert_eq!(r.count[9], 101);
    }

    /// A deterministic stand-in for random draws: the quantiles of a distribution at
    /// (i + 0.5)/n, which a calibrated σ must cover at the expected rates.
    #[test]
    fn calibrated_gaussian_and_laplace_errors_give_the_expected_coverage_and_nll() {
        let n = 100_000;
        let sigma = 2.0f64;
        let mut g = DepthCalibration::new(Likelihood::Gaussian);
        let mut l = DepthCalibration::new(Likelihood::Laplace);
        for i in 0..n {
            let u = (i as f64 + 0.5) / n as f64; // uniform in (0, 1)
                                                 // Gaussian quantile by bisection on erf.
            let (mut lo, mut hi) = (-10.0, 10.0);
            for _ in 0..80 {
                let mid = (lo + hi) / 2.0;
                if 0.5 * (1.0 + libm::erf(mid / std::f64::consts::SQRT_2)) < u {
                    lo = mid;
                } else {
                    hi = mid;
                }
            }
            g.add((10.0 + sigma * lo) as f32, 10.0, sigma as f32);
            // Laplace with std σ: scale b = σ/√2.
            let b = sigma / std::f64::consts::SQRT_2;
            let x = if u < 0.5 {
                b * (2.0 * u).ln()
            } else {
                -b * (2.0 - 2.0 * u).ln()
            };
            l.add((10.0 + x) as f32, 10.0, sigma as f32);
        }
        for (cal, one, two) in [(&g, 0.6827, 0.9545), (&l, 0.7569, 0.9409)] {
            let c1 = cal.coverage(1.0).unwrap();
            let c2 = cal.coverage(2.0).unwrap();
            assert!((c1.expected - one).abs() < 1e-3 && (c2.expected - two).abs() < 1e-3);
            assert!((c1.observed - c1.expected).abs() < 2e-3, "{c1:?}");
            assert!((c2.observed - c2.expected).abs() < 2e-3, "{c2:?}");
            for point in cal.curve(&INTERVAL_LEVELS).unwrap() {
                assert!((point.observed - point.expected).abs() < 3e-3, "{point:?}");
            }
        }
        // Entropy of N(0, σ²) = ½ ln(2πeσ²); of a Laplace with std σ = 1 + ln(2b).
        let gauss_h = 0.5 * (2.0 * std::f64::consts::PI * std::f64::consts::E * sigma * sigma).ln();
        assert!(
            (g.nll().unwrap() - gauss_h).abs() < 1e-3,
            "{:?} vs {gauss_h}",
            g.nll()
        );
        let laplace_h = 1.0 + (std::f64::consts::SQRT_2 * sigma).ln();
        assert!(
            (l.nll().unwrap() - laplace_h).abs() < 1e-3,
            "{:?} vs {laplace_h}",
            l.nll()
        );
        // Overconfident σ (half the true one): covers far less than expected.
        let mut over = DepthCalibration::new(Likelihood::Gaussian);
        for i in 0..1000 {
            let e = (i as f64 / 1000.0 - 0.5) * 4.0; // errors in [-2, 2)
            over.add((10.0 + e) as f32, 10.0, 0.5);
        }
        assert!(over.coverage(1.0).unwrap().observed < 0.3);
        // A std of 0 or NaN: left out of NLL and coverage, and counted; no depth at all:
        // not counted.
        let before = (over.pixels, over.nll());
        over.add(11.0, 10.0, 0.0);
        over.add(11.0, 10.0, f32::NAN);
        over.add(f32::NAN, 10.0, 0.0);
        assert_eq!((over.pixels, over.nll()), before);
        assert_eq!(over.without_sigma, 2);
        let mut merged = over.clone();
        merged.merge(&over);
        assert_eq!(merged.without_sigma, 4);
    }
}

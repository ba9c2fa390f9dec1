//! How closely one mode's per-pixel maps follow another's on the same frames: the
//! validation of the sampling-free `moments` mode against MC dropout (`eval
//! --agreement-with-mc T`). Per map, the Spearman rank correlation over the pixels of all
//! frames pooled, and per frame (mean and worst). Pure: predictions in, figures out.

use rand::{Rng, SeedableRng};
use rand_chacha::ChaCha8Rng;
use serde::Serialize;

use crate::colormap::FloatImage;
use crate::engine::Prediction;

/// Pixels of one frame that enter the pooled correlation at most (a fixed stride thins
/// larger frames, so that each frame weighs about the same).
const POOLED_PIXELS_PER_FRAME: usize = 50_000;

/// Pixel pairs of a map pooled at most: beyond it a uniform sample of those offered is
/// kept (reservoir sampling), so memory stays bounded on evaluations of any length (2 M
/// pairs: 16 MB a map, and 64 MB more while ranking them).
const POOLED_PIXELS: usize = 2_000_000;

/// Finds one map in a prediction, if it has it.
type MapOf = fn(&Prediction) -> Option<&FloatImage>;

/// The maps compared, in report order, with how to find each in a prediction.
const MAPS: [(&str, MapOf); 6] = [
    ("semantic epistemic (MI)", |p| {
        p.semantic
            .as_ref()
            .and_then(|s| s.epistemic_mutual_information.as_ref())
    }),
    ("semantic aleatoric (expected entropy)", |p| {
        p.semantic.as_ref().map(|s| &s.aleatoric_entropy)
    }),
    ("confidence", |p| p.semantic.as_ref().map(|s| &s.confidence)),
    ("depth epistemic std", |p| {
        p.depth.as_ref().and_then(|d| d.epistemic_std_m.as_ref())
    }),
    ("depth aleatoric std", |p| {
        p.depth.as_ref().and_then(|d| d.aleatoric_std_m.as_ref())
    }),
    ("depth", |p| p.depth.as_ref().map(|d| &d.depth_m)),
];

/// The stride that thins `pixels` (in raster order, rows of `width`) to about
/// [`POOLED_PIXELS_PER_FRAME`]: one without a factor in common with the width, so that
/// every column is sampled (a stride of 4 on a 480-wide map takes every 4th column only,
/// one phase of any pattern that repeats across columns).
fn pool_stride(pixels: usize, width: usize) -> usize {
    let mut stride = pixels.div_ceil(POOLED_PIXELS_PER_FRAME).max(1);
    while stride > 1 && width > 0 && gcd(stride, width) != 1 {
        stride += 1;
    }
    stride
}

fn gcd(a: usize, b: usize) -> usize {
    if b == 0 {
        a
    } else {
        gcd(b, a % b)
    }
}

#[derive(Debug, Clone)]
struct MapAgreement {
    pooled: (Vec<f32>, Vec<f32>),
    /// Pairs offered to the pool so far.
    offered: u64,
    /// The reservoir's draws (a fixed seed: the same frames give the same figures).
    rng: ChaCha8Rng,
    per_frame: Vec<f64>,
}

impl MapAgreement {
    fn new() -> Self {
        MapAgreement {
            pooled: (Vec::new(), Vec::new()),
            offered: 0,
            rng: ChaCha8Rng::seed_from_u64(0),
            per_frame: Vec::new(),
        }
    }

    /// Offers a pair to the pool, keeping a uniform sample of at most `capacity`.
    fn pool(&mut self, x: f32, y: f32, capacity: usize) {
        let offered = self.offered;
        self.offered += 1;
        if self.pooled.0.len() < capacity {
            self.pooled.0.push(x);
            self.pooled.1.push(y);
        } else if let Ok(at) = usize::try_from(self.rng.gen_range(0..=offered)) {
            if at < capacity {
                (self.pooled.0[at], self.pooled.1[at]) = (x, y);
            }
        }
    }
}

/// Per-map rank agreement between predictions and reference predictions of the same frames.
#[derive(Debug, Clone)]
pub struct Agreement {
    /// What the predictions are compared against, e.g. "mc, T = 50".
    pub reference: String,
    maps: Vec<MapAgreement>,
}

/// One map's figures.
#[derive(Debug, Clone, Serialize)]
pub struct MapAgreementReport {
    pub map: String,
    /// Spearman's ρ over the (thinned, sampled) pixels of all frames.
    pub spearman_pooled: f64,
    /// Mean and minimum of the per-frame ρ (none when no frame has one: a constant map).
    pub spearman_frame_mean: Option<f64>,
    pub spearman_frame_min: Option<f64>,
    /// Frames with a per-frame ρ.
    pub frames: usize,
    /// Pixel pairs the pooled ρ is over, of `offered_pixels` offered to the pool.
    pub pooled_pixels: usize,
    pub offered_pixels: u64,
}

#[derive(Debug, Clone, Serialize)]
pub struct AgreementReport {
    pub reference: String,
    pub maps: Vec<MapAgreementReport>,
}

impl Agreement {
    pub fn new(reference: impl Into<String>) -> Self {
        Agreement {
            reference: reference.into(),
            maps: vec![MapAgreement::new(); MAPS.len()],
        }
    }

    /// Adds one frame: every map both predictions have, over the pixels finite in both.
    pub fn add(&mut self, prediction: &Prediction, reference: &Prediction) {
        for ((_, get), slot) in MAPS.iter().zip(&mut self.maps) {
            let (Some(a), Some(b)) = (get(prediction), get(reference)) else {
                continue;
            };
            let width = a.width() as usize;
            let (xs, ys): (Vec<f32>, Vec<f32>) = a
                .iter()
                .zip(b.iter())
                .filter(|(x, y)| x.is_finite() && y.is_finite())
                .map(|(x, y)| (*x, *y))
                .unzip();
            if let Some(rho) = spearman(&xs, &ys) {
                slot.per_frame.push(rho);
            }
            // Thinned in raster order, before the pixels not finite in both are left out,
            // so that the stride's columns are the image's.
            let stride = pool_stride(a.len(), width);
            let thinned = a.iter().zip(b.iter()).step_by(stride);
            for (&x, &y) in thinned.filter(|(x, y)| x.is_finite() && y.is_finite()) {
                slot.pool(x, y, POOLED_PIXELS);
            }
        }
    }

    /// The figures of every map that had pixels to compare.
    pub fn report(&self) -> AgreementReport {
        let maps = MAPS
            .iter()
            .zip(&self.maps)
            .filter_map(|((name, _), slot)| {
                let pooled = spearman(&slot.pooled.0, &slot.pooled.1)?;
                let frames = slot.per_frame.len();
                Some(MapAgreementReport {
                    map: (*name).to_owned(),
                    spearman_pooled: pooled,
                    spearman_frame_mean: (frames > 0)
                        .then(|| slot.per_frame.iter().sum::<f64>() / frames as f64),
                    spearman_frame_min: slot.per_frame.iter().copied().reduce(f64::min),
                    frames,
                    pooled_pixels: slot.pooled.0.len(),
                    offered_pixels: slot.offered,
                })
            })
            .collect();
        AgreementReport {
            reference: self.reference.clone(),
            maps,
        }
    }
}

/// Ranks from 1, ties sharing the mean of their ranks.
fn ranks(values: &[f32]) -> Vec<f64> {
    let mut order: Vec<usize> = (0..values.len()).collect();
    order.sort_by(|&a, &b| values[a].total_cmp(&values[b]));
    let mut ranks = vec![0.0; values.len()];
    let mut start = 0;
    while start < order.len() {
        let mut end = start + 1;
        while end < order.len() && values[order[end]] == values[order[start]] {
            end += 1;
        }
        // Positions start..end (0-based) share the mean rank (start + 1 + end) / 2.
        let rank = (start + 1 + end) as f64 / 2.0;
        for &i in &order[start..end] {
            ranks[i] = rank;
        }
        start = end;
    }
    ranks
}

/// Spearman's rank correlation (Pearson's on ranks, ties averaged); `None` with fewer than
/// two values or when either side is constant.
pub fn spearman(x: &[f32], y: &[f32]) -> Option<f64> {
    assert_eq!(x.len(), y.len(), "paired values");
    if x.len() < 2 {
        return None;
    }
    let (rx, ry) = (ranks(x), ranks(y));
    let n = x.len() as f64;
    let mean = (n + 1.0) / 2.0;
    let (mut sxy, mut sxx, mut syy) = (0.0, 0.0, 0.0);
    for (a, b) in rx.iter().zip(&ry) {
        let (da, db) = (a - mean, b - mean);
        sxy += da * db;
        sxx += da * da;
        syy += db * db;
    }
    (sxx > 0.0 && syy > 0.0).then(|| sxy / (sxx * syy).sqrt())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_thinning_stride_samples_every_column() {
        for (w, h) in [(480, 360), (640, 480), (1280, 720), (240, 180), (100, 1000)] {
            let pixels = w * h;
            let stride = pool_stride(pixels, w);
            let columns: std::collections::HashSet<usize> =
                (0..pixels).step_by(stride).map(|k| k % w).collect();
            assert_eq!(columns.len(), w, "{w}x{h}: stride {stride}");
            assert!(
                pixels / stride <= POOLED_PIXELS_PER_FRAME + w,
                "{w}x{h}: {stride}"
            );
        }
        assert_eq!(pool_stride(480 * 360, 480), 7);
        assert_eq!(pool_stride(1000, 0), 1);
    }

    #[test]
    fn the_pool_keeps_a_uniform_sample_of_bounded_size() {
        let mut map = MapAgreement::new();
        for i in 0..10_000 {
            map.pool(i as f32, -(i as f32), 1000);
        }
        assert_eq!((map.pooled.0.len(), map.offered), (1000, 10_000));
        // Pairs stay pairs, and the sample spreads over all that was offered: its mean is
        // the stream's (4999.5) within a few standard errors (2887 / sqrt(1000) = 91).
        assert!(map
            .pooled
            .0
            .iter()
            .zip(&map.pooled.1)
            .all(|(x, y)| *x == -*y));
        let mean = map.pooled.0.iter().map(|&x| x as f64).sum::<f64>() / 1000.0;
        assert!((mean - 4999.5).abs() < 400.0, "{mean}");
        assert!(map.pooled.0.iter().any(|&x| x >= 9000.0));
        // Under the capacity everything is kept, in order.
        let mut small = MapAgreement::new();
        (0..5).for_each(|i| small.pool(i as f32, 0.0, 1000));
        assert_eq!(small.pooled.0, [0.0, 1.0, 2.0, 3.0, 4.0]);
    }

    #[test]
    fn spearman_of_known_orderings() {
        // Any increasing map: 1; reversed: −1.
        let x = [1.0f32, 2.0, 3.0, 4.0, 5.0];
        let y = [0.1f32, 10.0, 11.0, 500.0, 501.0];
        assert!((spearman(&x, &y).unwrap() - 1.0).abs() < 1e-12);
        let reversed: Vec<f32> = y.iter().rev().copied().collect();
        assert!((spearman(&x, &reversed).unwrap() + 1.0).abs() < 1e-12);
        // By hand: ranks (1, 2, 3, 4) and (2, 1, 4, 3): d² sums to 4, ρ = 1 − 6·4/(4·15) = 0.6.
        let rho = spearman(&[1.0, 2.0, 3.0, 4.0], &[20.0, 10.0, 40.0, 30.0]).unwrap();
        assert!((rho - 0.6).abs() < 1e-12, "{rho}");
        // Ties share their mean rank: (1, 2.5, 2.5, 4) against (1, 2, 3, 4).
        assert_eq!(ranks(&[0.0, 5.0, 5.0, 9.0]), [1.0, 2.5, 2.5, 4.0]);
        let rho = spearman(&[0.0, 5.0, 5.0, 9.0], &[1.0, 2.0, 3.0, 4.0]).unwrap();
        assert!((rho - 0.9486832980505138).abs() < 1e-12, "{rho}");
        // A constant side has no correlation.
        assert!(spearman(&[1.0, 1.0, 1.0], &[1.0, 2.0, 3.0]).is_none());
    }
}

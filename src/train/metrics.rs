//! Accuracy metrics of the papers: per-class IoU, mean IoU and global pixel accuracy (void
//! ignored); depth rel, rms, log10 and δ thresholds over valid pixels.

/// A confusion matrix over `classes` classes; labels at or above `classes` are void.
#[derive(Debug, Clone, PartialEq, serde::Serialize, serde::Deserialize)]
pub struct Confusion {
    classes: usize,
    /// counts[truth * classes + predicted]
    counts: Vec<u64>,
}

impl Confusion {
    pub fn new(classes: usize) -> Self {
        Confusion {
            classes,
            counts: vec![0; classes * classes],
        }
    }

    /// Adds pixels: ground truth and prediction, same length.
    pub fn add(&mut self, truth: &[i64], predicted: &[i64]) {
        for (&t, &p) in truth.iter().zip(predicted) {
            if t >= 0 && (t as usize) < self.classes && p >= 0 && (p as usize) < self.classes {
                self.counts[t as usize * self.classes + p as usize] += 1;
            }
        }
    }

    /// Whether it is a whole `classes` x `classes` matrix (a state read from a file may not
    /// be).
    pub fn is_square_of(&self, classes: usize) -> bool {
        self.classes == classes && self.counts.len() == classes * classes
    }

    /// Adds another matrix over the same classes (the same frames counted once either way).
    pub fn merge(&mut self, other: &Confusion) -> Result<(), String> {
        if other.classes != self.classes {
            return Err(format!(
                "{} classes against {}",
                other.classes, self.classes
            ));
        }
        for (a, b) in self.counts.iter_mut().zip(&other.counts) {
            *a += b;
        }
        Ok(())
    }

    /// IoU per class; `None` for classes absent from both truth and prediction.
    pub fn iou(&self) -> Vec<Option<f64>> {
        let c = self.classes;
        (0..c)
            .map(|k| {
                let tp = self.counts[k * c + k];
                let truth: u64 = (0..c).map(|p| self.counts[k * c + p]).sum();
                let predicted: u64 = (0..c).map(|t| self.counts[t * c + k]).sum();
                let union = truth + predicted - tp;
                (union > 0).then(|| tp as f64 / union as f64)
            })
            .collect()
    }

    /// Mean IoU over the classes that occur.
    pub fn mean_iou(&self) -> f64 {
        let ious: Vec<f64> = self.iou().into_iter().flatten().collect();
        if ious.is_empty() {
            0.0
        } else {
            ious.iter().sum::<f64>() / ious.len() as f64
        }
    }

    /// Fraction of labelled pixels predicted correctly.
    pub fn pixel_accuracy(&self) -> f64 {
        let total: u64 = self.counts.iter().sum();
        let correct: u64 = (0..self.classes)
            .map(|k| self.counts[k * self.classes + k])
            .sum();
        if total == 0 {
            0.0
        } else {
            correct as f64 / total as f64
        }
    }
}

/// Whether a ground-truth depth value is valid (finite and positive; 0 or NaN = no depth).
pub fn has_depth(truth: f32) -> bool {
    truth.is_finite() && truth > 0.0
}

/// A predicted depth as scored: floored at 1 mm, so that no depth (NaN, ≤ 0) counts as
/// 1 mm rather than being left out of the errors, and capped at 1000 km, so that an
/// infinite one (a half-precision head overflowing) counts as very wrong rather than making
/// every error figure infinite (reported as no value).
pub fn scored_depth(predicted: f64) -> f64 {
    if predicted.is_nan() {
        1e-3
    } else {
        predicted.clamp(1e-3, 1e6)
    }
}

/// |y − ŷ| / y, with the prediction floored at 1 mm.
pub fn abs_rel(truth: f64, predicted: f64) -> f64 {
    (truth - scored_depth(predicted)).abs() / truth
}

/// Running depth error sums over valid pixels (finite, positive ground truth).
#[derive(Debug, Clone, Default, PartialEq, serde::Serialize, serde::Deserialize)]
pub struct DepthErrors {
    count: u64,
    abs_rel: f64,
    squared: f64,
    log10: f64,
    delta: [u64; 3],
}

impl DepthErrors {
    pub fn add(&mut self, truth: &[f32], predicted: &[f32]) {
        for (&y, &p) in truth.iter().zip(predicted) {
            if !has_depth(y) {
                continue;
            }
            let (y, p) = (y as f64, scored_depth(p as f64));
            self.count += 1;
            self.abs_rel += abs_rel(y, p);
            self.squared += (y - p).powi(2);
            self.log10 += (y.log10() - p.log10()).abs();
            let ratio = (y / p).max(p / y);
            for (k, d) in self.delta.iter_mut().enumerate() {
                if ratio < 1.25f64.powi(k as i32 + 1) {
                    *d += 1;
                }
            }
        }
    }

    pub fn count(&self) -> u64 {
        self.count
    }

    /// Adds the sums of other pixels.
    pub fn merge(&mut self, other: &DepthErrors) {
        self.count += other.count;
        self.abs_rel += other.abs_rel;
        self.squared += other.squared;
        self.log10 += other.log10;
        for (a, b) in self.delta.iter_mut().zip(other.delta) {
            *a += b;
        }
    }

    /// mean |y − ŷ| / y
    pub fn rel(&self) -> f64 {
        self.abs_rel / self.count.max(1) as f64
    }

    /// sqrt(mean (y − ŷ)²), metres
    pub fn rms(&self) -> f64 {
        (self.squared / self.count.max(1) as f64).sqrt()
    }

    pub fn log10(&self) -> f64 {
        self.log10 / self.count.max(1) as f64
    }

    /// Fractions with max(y/ŷ, ŷ/y) below 1.25, 1.25², 1.25³.
    pub fn deltas(&self) -> [f64; 3] {
        self.delta.map(|d| d as f64 / self.count.max(1) as f64)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn predicted_depths_are_scored_between_1_mm_and_1000_km() {
        let scored = [f64::NAN, -1.0, 0.0, 2.5, f64::INFINITY].map(scored_depth);
        assert_eq!(scored, [1e-3, 1e-3, 1e-3, 2.5, 1e6]);
        let mut errors = DepthErrors::default();
        errors.add(&[10.0, 10.0], &[10.0, f32::INFINITY]);
        assert!(errors.rel().is_finite() && errors.rms().is_finite() && errors.log10() > 0.0);
    }

    #[test]
    fn iou_and_accuracy_by_hand() {
        // truth:     0 0 1 1 2(void when 2 classes)
        // predicted: 0 1 1 1 0
        let mut m = Confusion::new(2);
        m.add(&[0, 0, 1, 1, 2], &[0, 1, 1, 1, 0]);
        // class 0: tp 1, truth 2, pred 1 -> 1/2; class 1: tp 2, truth 2, pred 3 -> 2/3.
        let iou = m.iou();
        assert!(
            (iou[0].unwrap() - 0.5).abs() < 1e-12 && (iou[1].unwrap() - 2.0 / 3.0).abs() < 1e-12
        );
        assert!((m.mean_iou() - (0.5 + 2.0 / 3.0) / 2.0).abs() < 1e-12);
        assert!((m.pixel_accuracy() - 0.75).abs() < 1e-12);
        assert_eq!(Confusion::new(3).iou(), vec![None, None, None]);
    }

    #[test]
    fn depth_errors_by_hand() {
        let mut e = DepthErrors::default();
        e.add(&[2.0, 4.0, f32::NAN, 0.0], &[1.0, 4.0, 9.0, 9.0]);
        assert_eq!(e.count(), 2);
        assert!((e.rel() - 0.25).abs() < 1e-12);
        assert!((e.rms() - (0.5f64).sqrt()).abs() < 1e-12);
        assert!((e.log10() - 2f64.log10() / 2.0).abs() < 1e-12);
        assert_eq!(e.deltas(), [0.5, 0.5, 0.5]);
    }
}

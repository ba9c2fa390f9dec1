//! Summary statistics shared by `bench` and the node's diagnostics.

/// The `q` quantile (0..=1) of `values` (any order), interpolated linearly between the two
/// nearest ranks as numpy's default: the median of an even count is the mean of the middle
/// two. `None` for no values.
pub fn quantile(values: &[f64], q: f64) -> Option<f64> {
    if values.is_empty() {
        return None;
    }
    let mut sorted = values.to_vec();
    sorted.sort_by(f64::total_cmp);
    let at = q.clamp(0.0, 1.0) * (sorted.len() - 1) as f64;
    let (lo, hi) = (at.floor() as usize, at.ceil() as usize);
    // At a rank (or between equal values) the value itself: inf - inf would make NaN.
    if sorted[lo] == sorted[hi] || lo == hi {
        return Some(sorted[lo]);
    }
    Some(sorted[lo] + (sorted[hi] - sorted[lo]) * (at - lo as f64))
}

#[cfg(test)]
mod tests {
    use super::quantile;

    #[test]
    fn interpolates_between_ranks() {
        assert_eq!(quantile(&[], 0.5), None);
        assert_eq!(quantile(&[7.0], 0.95), Some(7.0));
        assert_eq!(quantile(&[f64::INFINITY], 0.5), Some(f64::INFINITY));
        assert_eq!(quantile(&[1.0, f64::INFINITY], 1.0), Some(f64::INFINITY));
        assert_eq!(quantile(&[1.0, f64::INFINITY, 2.0], 0.5), Some(2.0));
        assert_eq!(quantile(&[55.2, 51.9], 0.5), Some(53.55));
        assert_eq!(quantile(&[3.0, 1.0, 2.0], 0.5), Some(2.0));
        let v: Vec<f64> = (0..=100).map(f64::from).collect();
        assert_eq!(quantile(&v, 0.95), Some(95.0));
        assert!((quantile(&[0.0, 10.0], 0.95).unwrap() - 9.5).abs() < 1e-12);
        // numpy.percentile([1..=25], 95) = 23.8
        let v: Vec<f64> = (1..=25).map(f64::from).collect();
        assert!((quantile(&v, 0.95).unwrap() - 23.8).abs() < 1e-12);
    }
}

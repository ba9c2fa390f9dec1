//! The camera model of a sensor_msgs/CameraInfo turned around: pixel to ray, for the point
//! cloud. Pinhole (K, or P for rectified images) with the lens distortion (D) of ROS's
//! three models, defined as image_geometry and OpenCV define them: `plumb_bob` and
//! `rational_polynomial` (OpenCV's radial-tangential model) and `equidistant` (OpenCV's
//! fisheye model). Undoing a distortion has no closed form; it is solved per pixel by
//! Newton's method, and the rays of an image's pixels are kept for the next frame of the
//! same camera. No I/O but one log line for a camera whose pixels have no ray.

use std::sync::{Arc, Mutex};

use nalgebra::{Matrix2, Matrix3, Point3, Vector2, Vector3};
use rayon::prelude::*;

use crate::log_once::LogOnce;
use crate::msg::CameraInfo;

/// Lens distortion in normalized image coordinates (x/z, y/z), as sensor_msgs'
/// distortion_models name it, with the extent over which it can be undone.
#[derive(Debug, Clone, PartialEq)]
pub struct Distortion {
    lens: Lens,
    /// Where the lens stops mapping rays one to one: the radius r = |(x, y)| of the ray
    /// (x, y, 1) for the radial-tangential model, the angle θ for the equidistant one,
    /// below which the radial mapping rises (beyond it a barrel polynomial folds back
    /// and the same coordinates come from two rays, or three).
    limit: f64,
}

#[derive(Debug, Clone, PartialEq)]
enum Lens {
    /// No distortion: a rectified image, or all coefficients zero.
    None,
    /// `plumb_bob` (k1 k2 p1 p2 k3) and `rational_polynomial` (k1 k2 p1 p2 k3 k4 k5 k6):
    /// radial factor (1 + k1 r² + k2 r⁴ + k3 r⁶) / (1 + k4 r² + k5 r⁴ + k6 r⁶), tangential
    /// p1, p2.
    RadialTangential { k: [f64; 6], p: [f64; 2] },
    /// `equidistant` (k1 k2 k3 k4): θd = θ (1 + k1 θ² + k2 θ⁴ + k3 θ⁶ + k4 θ⁸), θ the
    /// angle of the ray from the optical axis.
    Equidistant { k: [f64; 4] },
}

/// Newton iterations at most, and the residual (normalized coordinates, about 1e-7 px at
/// a focal length of 1000 px; relative to the coordinates beyond 1) below which a
/// solution counts.
const MAX_ITERATIONS: usize = 50;
const TOLERANCE: f64 = 1e-10;

/// The radial-tangential model's rays are looked at out to this radius (84° from the
/// optical axis), in steps of [`LIMIT_STEP`], for where the mapping stops rising.
const MAX_RADIUS: f64 = 10.0;
const LIMIT_STEP: f64 = 1e-3;

impl Distortion {
    /// No distortion.
    pub fn none() -> Self {
        Distortion {
            lens: Lens::None,
            limit: f64::INFINITY,
        }
    }

    /// Whether this is no distortion.
    pub fn is_none(&self) -> bool {
        self.lens == Lens::None
    }

    /// The distortion of a camera_info's `distortion_model` and D. No coefficients are no
    /// distortion, and so are all-zero ones except for `equidistant`, whose k1..k4 = 0 is
    /// still a fisheye (θd = θ, an f-theta lens, as OpenCV's fisheye model has it;
    /// image_geometry takes it as no distortion, and so rectifies nothing). `plumb_bob` and
    /// `rational_polynomial` take OpenCV's order k1 k2 p1 p2 [k3 [k4 k5 k6]] (4, 5 or 8
    /// values; 12 or 14 only if the thin-prism and tilt terms beyond the 8th are zero).
    pub fn from_camera_info(model: &str, d: &[f64]) -> Result<Self, String> {
        let zero = d.iter().all(|c| *c == 0.0);
        if d.is_empty() || (zero && model != "equidistant") {
            return Ok(Self::none());
        }
        if zero {
            // An f-theta lens, however many zeros a driver wrote.
            let lens = Lens::Equidistant { k: [0.0; 4] };
            let limit = lens.limit();
            return Ok(Distortion { lens, limit });
        }
        if d.iter().any(|c| !c.is_finite()) {
            return Err(format!("camera_info D has a non-finite coefficient: {d:?}"));
        }
        let lens = match model {
            "plumb_bob" | "rational_polynomial" => {
                let supported = match d.len() {
                    4 | 5 | 8 => true,
                    12 | 14 => d[8..].iter().all(|c| *c == 0.0),
                    _ => false,
                };
                if !supported {
                    return Err(format!(
                        "camera_info D of {model} must have 4, 5 or 8 coefficients (k1 k2 \
                         p1 p2 k3 k4 k5 k6), or 12 or 14 with the thin-prism and tilt terms \
                         beyond the 8th zero (those terms are not supported), not {}: {d:?}",
                        d.len()
                    ));
                }
                let at = |i: usize| d.get(i).copied().unwrap_or(0.0);
                Lens::RadialTangential {
                    k: [at(0), at(1), at(4), at(5), at(6), at(7)],
                    p: [at(2), at(3)],
                }
            }
            "equidistant" => {
                let k: [f64; 4] = d.try_into().map_err(|_| {
                    format!(
                        "camera_info D of equidistant must have 4 coefficients (k1 k2 k3 k4), \
                         not {}: {d:?}",
                        d.len()
                    )
                })?;
                Lens::Equidistant { k }
            }
            "" => {
                return Err(format!(
                    "camera_info has distortion coefficients but no distortion_model: {d:?} \
                     (plumb_bob, rational_polynomial or equidistant?)"
                ))
            }
            other => {
                return Err(format!(
                    "camera_info distortion model `{other}` is not supported (plumb_bob, \
                     rational_polynomial, equidistant); rectify the images and set \
                     points.rectified: true"
                ))
            }
        };
        let limit = lens.limit();
        Ok(Distortion { lens, limit })
    }

    /// Where the lens puts the ray (x, y, 1): its distorted normalized coordinates.
    pub fn distort(&self, ray: Vector2<f64>) -> Vector2<f64> {
        match &self.lens {
            Lens::None => ray,
            Lens::RadialTangential { k, p } => radial_tangential(k, p, ray).0,
            Lens::Equidistant { k } => {
                let r = ray.norm();
                if r == 0.0 {
                    return ray;
                }
                let theta = r.atan();
                ray * (equidistant_theta(k, theta).0 / r)
            }
        }
    }

    /// The ray (x, y, 1) the lens put at distorted normalized coordinates `distorted`, or
    /// `None` where the model has none: beyond the lens's limit (where its polynomial
    /// folds back, so the coordinates have no ray or more than one) or, for the
    /// equidistant model, at 90° or more from the optical axis. Near the limit a ray may
    /// be missed, never a wrong one given.
    pub fn undistort(&self, distorted: Vector2<f64>) -> Option<Vector2<f64>> {
        match &self.lens {
            Lens::None => Some(distorted),
            Lens::RadialTangential { k, p } => {
                // Start from the radial part's own inverse: on [0, limit] r·R(r²) rises,
                // so bisection finds the radius; Newton from the distorted coordinates
                // themselves could overshoot past the fold of a strong lens and lose a
                // pixel that has a ray.
                let d = distorted.norm();
                if d == 0.0 {
                    return Some(distorted);
                }
                // A start to 1e-7 of the limit: Newton's steps below end it.
                let r = rising_root(|r| r * radial_factor(k, r * r).0, d, self.limit, 24);
                let mut ray = distorted * (r / d);
                let (mut at, mut jacobian) = radial_tangential(k, p, ray);
                let mut error = (at - distorted).norm();
                // Relative far out: coordinates of 1e6 (a strong lens near 84°) carry no
                // more than ~1e-10 of f64's precision.
                let tolerance = TOLERANCE * d.max(1.0);
                for _ in 0..MAX_ITERATIONS {
                    if error < tolerance {
                        // Before the fold, where the tangential terms do not fold the
                        // image over either.
                        let unique = ray.norm() < self.limit && jacobian.determinant() > 0.0;
                        return unique.then_some(ray);
                    }
                    // Newton's step, halved until it lowers the error without crossing
                    // the fold; the point taken keeps its distortion and Jacobian.
                    let step = jacobian.try_inverse()? * (at - distorted);
                    let mut scale = 1.0;
                    loop {
                        let next = ray - step * scale;
                        let (next_at, next_jacobian) = radial_tangential(k, p, next);
                        let next_error = (next_at - distorted).norm();
                        if next.norm() < self.limit && next_error < error {
                            (ray, at, jacobian, error) = (next, next_at, next_jacobian, next_error);
                            break;
                        }
                        scale *= 0.5;
                        if scale < 1e-12 {
                            return None;
                        }
                    }
                }
                None
            }
            Lens::Equidistant { k } => {
                let theta_d = distorted.norm();
                if theta_d == 0.0 {
                    return Some(distorted);
                }
                // θd(θ) rises on [0, limit]: bisection, as for the radial start above.
                let end = self.limit.min(std::f64::consts::FRAC_PI_2);
                let theta = rising_root(|t| equidistant_theta(k, t).0, theta_d, end, 200);
                let (at, slope) = equidistant_theta(k, theta);
                let unique = (at - theta_d).abs() < TOLERANCE
                    && (0.0..self.limit).contains(&theta)
                    && theta < std::f64::consts::FRAC_PI_2
                    && slope > 0.0;
                unique.then(|| distorted * (theta.tan() / theta_d))
            }
        }
    }
}

impl Distortion {
    /// Where the lens's radial mapping folds back, as an angle from the optical axis in
    /// degrees, if it does within the angles looked at.
    fn fold_degrees(&self) -> Option<f64> {
        match self.lens {
            Lens::None => None,
            Lens::RadialTangential { .. } => {
                (self.limit < MAX_RADIUS).then(|| self.limit.atan().to_degrees())
            }
            Lens::Equidistant { .. } => {
                (self.limit < std::f64::consts::FRAC_PI_2).then(|| self.limit.to_degrees())
            }
        }
    }
}

impl Lens {
    /// The first radius (angle) at which the radial mapping stops rising, found in steps
    /// of [`LIMIT_STEP`] (the last step before it is the limit); [`MAX_RADIUS`] or 90° if
    /// it rises throughout.
    fn limit(&self) -> f64 {
        let (end, rising): (f64, &dyn Fn(f64) -> bool) = match self {
            Lens::None => return f64::INFINITY,
            // The radial part alone: r·R(r²) and its slope R + 2r²·R'.
            Lens::RadialTangential { k, .. } => (MAX_RADIUS, &|r: f64| {
                let (radial, radial_slope) = radial_factor(k, r * r);
                radial > 0.0 && radial + 2.0 * r * r * radial_slope > 0.0
            }),
            Lens::Equidistant { k } => (std::f64::consts::FRAC_PI_2, &|theta: f64| {
                equidistant_theta(k, theta).1 > 0.0
            }),
        };
        let steps = (end / LIMIT_STEP) as usize;
        (1..=steps)
            .map(|i| i as f64 * LIMIT_STEP)
            .find(|at| !rising(*at))
            .map_or(end, |at| at - LIMIT_STEP)
    }
}

/// The x in [0, end] where `f`, rising on that interval, reaches `target`, by up to
/// `halvings` bisection steps (about 60 reach the last bit); `end` when `f(end)` stays
/// below it.
fn rising_root(f: impl Fn(f64) -> f64, target: f64, end: f64, halvings: usize) -> f64 {
    let (mut low, mut high) = (0.0, end);
    // Not above the target (or NaN): no crossing to find.
    if f(high).partial_cmp(&target) != Some(std::cmp::Ordering::Greater) {
        return high;
    }
    for _ in 0..halvings {
        let mid = 0.5 * (low + high);
        if mid <= low || mid >= high {
            break;
        }
        if f(mid) < target {
            low = mid;
        } else {
            high = mid;
        }
    }
    0.5 * (low + high)
}

/// The radial factor R(r²) = (1 + k1 r² + k2 r⁴ + k3 r⁶) / (1 + k4 r² + k5 r⁴ + k6 r⁶)
/// and dR/d(r²).
fn radial_factor(k: &[f64; 6], r2: f64) -> (f64, f64) {
    let num = 1.0 + r2 * (k[0] + r2 * (k[1] + r2 * k[2]));
    let den = 1.0 + r2 * (k[3] + r2 * (k[4] + r2 * k[5]));
    let num_slope = k[0] + r2 * (2.0 * k[1] + 3.0 * r2 * k[2]);
    let den_slope = k[3] + r2 * (2.0 * k[4] + 3.0 * r2 * k[5]);
    (num / den, (num_slope * den - num * den_slope) / (den * den))
}

/// OpenCV's radial-tangential distortion of `ray` and its Jacobian.
fn radial_tangential(
    k: &[f64; 6],
    p: &[f64; 2],
    ray: Vector2<f64>,
) -> (Vector2<f64>, Matrix2<f64>) {
    let (x, y) = (ray.x, ray.y);
    let r2 = x * x + y * y;
    let (radial, radial_slope) = radial_factor(k, r2);
    let [p1, p2] = *p;
    let distorted = Vector2::new(
        x * radial + 2.0 * p1 * x * y + p2 * (r2 + 2.0 * x * x),
        y * radial + p1 * (r2 + 2.0 * y * y) + 2.0 * p2 * x * y,
    );
    let cross = 2.0 * x * y * radial_slope + 2.0 * p1 * x + 2.0 * p2 * y;
    let jacobian = Matrix2::new(
        radial + 2.0 * x * x * radial_slope + 2.0 * p1 * y + 6.0 * p2 * x,
        cross,
        cross,
        radial + 2.0 * y * y * radial_slope + 6.0 * p1 * y + 2.0 * p2 * x,
    );
    (distorted, jacobian)
}

/// The equidistant model's distorted angle θd of θ, and dθd/dθ.
fn equidistant_theta(k: &[f64; 4], theta: f64) -> (f64, f64) {
    let t2 = theta * theta;
    let poly = 1.0 + t2 * (k[0] + t2 * (k[1] + t2 * (k[2] + t2 * k[3])));
    let slope = 1.0 + t2 * (3.0 * k[0] + t2 * (5.0 * k[1] + t2 * (7.0 * k[2] + t2 * 9.0 * k[3])));
    (theta * poly, slope)
}

/// A camera's pixel-to-ray model: K (or a rectified image's P) and the lens distortion.
#[derive(Debug, Clone, PartialEq)]
pub struct PinholeCamera {
    k: Matrix3<f64>,
    k_inv: Matrix3<f64>,
    distortion: Distortion,
}

impl PinholeCamera {
    /// The camera of K (row-major, as in sensor_msgs/CameraInfo), without distortion.
    /// Refused: a K with no positive finite focal lengths or that cannot be inverted.
    pub fn from_k(k: &[f64; 9]) -> Result<Self, String> {
        let k = Matrix3::from_row_slice(k);
        let (fx, fy) = (k[(0, 0)], k[(1, 1)]);
        if !(fx.is_finite() && fy.is_finite() && fx > 0.0 && fy > 0.0) {
            return Err(format!(
                "camera_info K has no positive focal lengths (fx {fx}, fy {fy}); is the camera calibrated?"
            ));
        }
        if k.iter().any(|v| !v.is_finite()) || k.row(2) != Vector3::new(0.0, 0.0, 1.0).transpose() {
            return Err(format!(
                "camera_info K is not a pinhole matrix (last row must be 0 0 1): {:?}",
                k.as_slice()
            ));
        }
        let k_inv = k
            .try_inverse()
            .ok_or_else(|| "camera_info K cannot be inverted".to_owned())?;
        Ok(PinholeCamera {
            k,
            k_inv,
            distortion: Distortion::none(),
        })
    }

    /// This camera with a lens distortion.
    pub fn with_distortion(self, distortion: Distortion) -> Self {
        PinholeCamera { distortion, ..self }
    }

    /// The camera for an image of `width` x `height` from a camera_info: its binning and
    /// region of interest applied (as image_geometry does), then scaled to the image when
    /// that has another resolution (same field of view; pixel centres mapped as the resize
    /// maps them). A camera_info of size 0x0 is taken as the image's own.
    ///
    /// Raw images (`rectified` false): K and the distortion of D. Rectified images (from
    /// image_proc): P's first three columns, no distortion (image_geometry's rectified
    /// camera), or K where P has no positive focal lengths (a camera_info without P).
    pub fn for_image(
        info: &CameraInfo,
        width: u32,
        height: u32,
        rectified: bool,
    ) -> Result<Self, String> {
        let info = info.unbinned().scaled_to(width, height)?;
        if rectified {
            let p = &info.p;
            let k_of_p = [p[0], p[1], p[2], p[4], p[5], p[6], p[8], p[9], p[10]];
            if p[0] > 0.0 && p[5] > 0.0 {
                return Self::from_k(&k_of_p).map_err(|e| e.replacen(" K ", " P ", 1));
            }
            return Self::from_k(&info.k);
        }
        let distortion = Distortion::from_camera_info(&info.distortion_model, &info.d)?;
        Ok(Self::from_k(&info.k)?.with_distortion(distortion))
    }

    /// The intrinsic matrix in use.
    pub fn k(&self) -> &Matrix3<f64> {
        &self.k
    }

    /// The lens distortion in use.
    pub fn distortion(&self) -> &Distortion {
        &self.distortion
    }

    /// The ray (x, y, 1) seen at pixel (u, v), pixel centres at integer coordinates as in
    /// ROS and OpenCV; `None` where the lens model has none (see
    /// [`Distortion::undistort`]).
    pub fn ray(&self, u: f64, v: f64) -> Option<Vector2<f64>> {
        let distorted = self.k_inv * Vector3::new(u, v, 1.0);
        self.distortion.undistort(distorted.xy())
    }

    /// The point at depth `z` (metres along the optical axis) seen at pixel (u, v).
    pub fn back_project(&self, u: f64, v: f64, z: f64) -> Option<Point3<f64>> {
        self.ray(u, v).map(|r| Point3::new(r.x * z, r.y * z, z))
    }

    /// The pixel (u, v) where the point `p` (camera optical frame, z > 0) is seen.
    pub fn project(&self, p: &Point3<f64>) -> Vector2<f64> {
        let distorted = self.distortion.distort(Vector2::new(p.x / p.z, p.y / p.z));
        (self.k * distorted.push(1.0)).xy()
    }
}

/// The rays (x, y of the ray (x, y, 1)) of the pixels (i·stride, j·stride) of a `width` x
/// `height` image, row by row; NaN where the lens model has none.
#[derive(Debug)]
pub struct RayGrid {
    pub columns: usize,
    pub rows: usize,
    pub rays: Vec<[f32; 2]>,
    /// Pixels without a ray (NaN).
    pub without_ray: usize,
}

/// Ray grids of the cameras seen last, most recent first: undoing a distortion for every
/// pixel of a frame costs more than building its cloud, and a camera's rays change only
/// with its calibration, the image size or the stride.
pub struct RayGridCache {
    grids: Mutex<Vec<(RayGridKey, Arc<RayGrid>)>>,
    kept: usize,
    /// The notes about pixels without a ray logged so far (a camera_info that changes
    /// every frame does not log every frame).
    noted: LogOnce,
}

#[derive(Debug, PartialEq)]
struct RayGridKey {
    camera: PinholeCamera,
    width: u32,
    height: u32,
    stride: u32,
}

/// The process's grids: room for the cameras of a `bag process` of a bag with several
/// (a ninth camera evicts the grid used longest ago, to be built again when it returns).
static RAY_GRIDS: RayGridCache = RayGridCache::new(8);

impl RayGridCache {
    /// A cache that keeps the grids of the last `kept` cameras, sizes and strides.
    pub const fn new(kept: usize) -> Self {
        RayGridCache {
            grids: Mutex::new(Vec::new()),
            kept,
            noted: LogOnce::new(),
        }
    }

    /// The rays of `camera`'s pixels on the stride grid of a `width` x `height` image,
    /// computed when not kept.
    pub fn get(
        &self,
        camera: &PinholeCamera,
        width: u32,
        height: u32,
        stride: u32,
    ) -> Arc<RayGrid> {
        let key = RayGridKey {
            camera: camera.clone(),
            width,
            height,
            stride: stride.max(1),
        };
        let mut grids = self.grids.lock().unwrap_or_else(|e| e.into_inner());
        if let Some(i) = grids.iter().position(|(k, _)| *k == key) {
            let entry = grids.remove(i);
            let grid = entry.1.clone();
            grids.insert(0, entry);
            return grid;
        }
        // Computed outside the lock: another thread's camera need not wait for this one.
        drop(grids);
        let grid = Arc::new(camera.compute_ray_grid(width, height, key.stride));
        // Its pixels without points are not lost silently.
        if let Some(note) = camera.no_ray_note(&grid, width, height) {
            self.noted.warn(&note);
        }
        let mut grids = self.grids.lock().unwrap_or_else(|e| e.into_inner());
        grids.retain(|(k, _)| *k != key);
        grids.insert(0, (key, grid.clone()));
        grids.truncate(self.kept);
        grid
    }
}

impl PinholeCamera {
    /// The rays of the pixels on the stride grid of a `width` x `height` image, from the
    /// process's [`RayGridCache`].
    pub fn ray_grid(&self, width: u32, height: u32, stride: u32) -> Arc<RayGrid> {
        RAY_GRIDS.get(self, width, height, stride)
    }

    fn compute_ray_grid(&self, width: u32, height: u32, stride: u32) -> RayGrid {
        let stride = stride as usize;
        let columns = (width as usize).div_ceil(stride);
        let rows = (height as usize).div_ceil(stride);
        let mut rays = vec![[f32::NAN; 2]; columns * rows];
        if columns > 0 {
            rays.par_chunks_mut(columns)
                .enumerate()
                .for_each(|(row, out)| {
                    let v = (row * stride) as f64;
                    for (column, ray) in out.iter_mut().enumerate() {
                        if let Some(r) = self.ray((column * stride) as f64, v) {
                            *ray = [r.x as f32, r.y as f32];
                        }
                    }
                });
        }
        let without_ray = rays.iter().filter(|r| r[0].is_nan()).count();
        RayGrid {
            columns,
            rows,
            rays,
            without_ray,
        }
    }

    /// What a grid's pixels without a ray mean for the user, if it has any: they get no
    /// points, and why.
    fn no_ray_note(&self, grid: &RayGrid, width: u32, height: u32) -> Option<String> {
        if grid.without_ray == 0 {
            return None;
        }
        let why = match (&self.distortion.lens, self.distortion.fold_degrees()) {
            (_, Some(degrees)) => format!(
                "its lens distortion folds back {degrees:.0} degrees from the optical axis, \
                 and pixels beyond have no single ray (does the calibration cover the \
                 image's edges?)"
            ),
            (Lens::Equidistant { .. }, None) => "they lie 90 degrees or more from the optical \
                axis (a lens wider than 180 degrees), where a depth along the axis gives no \
                point"
                .to_owned(),
            _ => "the lens model cannot undo their distortion".to_owned(),
        };
        Some(format!(
            "{:.1} % of the pixels of the {width}x{height} camera (fx {:.0} px) get no points: \
             {why}",
            100.0 * grid.without_ray as f64 / grid.rays.len() as f64,
            self.k[(0, 0)]
        ))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const K: [f64; 9] = [500.0, 0.0, 320.0, 0.0, 400.0, 240.0, 0.0, 0.0, 1.0];

    #[test]
    fn back_projection_of_chosen_pixels_by_hand() {
        let camera = PinholeCamera::from_k(&K).unwrap();
        // x = (u − cx)·z/fx, y = (v − cy)·z/fy.
        let p = camera.back_project(420.0, 140.0, 10.0).unwrap();
        assert!((p.x - 2.0).abs() < 1e-12 && (p.y + 2.5).abs() < 1e-12 && p.z == 10.0);
        // The principal point lies on the optical axis.
        let p = camera.back_project(320.0, 240.0, 7.0).unwrap();
        assert!(p.x.abs() < 1e-12 && p.y.abs() < 1e-12 && (p.z - 7.0).abs() < 1e-12);
        // With skew s: x = (u − cx − s·(v − cy)/fy)·z/fx.
        let mut skewed = K;
        skewed[1] = 50.0;
        let p = PinholeCamera::from_k(&skewed)
            .unwrap()
            .back_project(420.0, 140.0, 10.0)
            .unwrap();
        assert!((p.x - 2.25).abs() < 1e-12, "{p}");
    }

    #[test]
    fn unusable_camera_infos_are_refused_with_a_reason() {
        let e = PinholeCamera::from_k(&[0.0; 9]).unwrap_err();
        assert!(e.contains("no positive focal lengths"), "{e}");
        let mut bad = K;
        bad[8] = 0.0;
        assert!(PinholeCamera::from_k(&bad)
            .unwrap_err()
            .contains("last row must be 0 0 1"));
        let refused = |model: &str, d: &[f64]| Distortion::from_camera_info(model, d).unwrap_err();
        assert!(refused("kannala_brandt", &[0.1, 0.0, 0.0, 0.0]).contains("not supported"));
        assert!(refused("", &[0.1, 0.0, 0.0, 0.0]).contains("no distortion_model"));
        let mut prism = vec![0.0; 14];
        prism[9] = 0.01;
        assert!(refused("rational_polynomial", &prism).contains("beyond the 8th zero"));
        assert!(refused("plumb_bob", &[0.1, 0.0, 0.0]).contains("4, 5 or 8"));
        assert!(refused("rational_polynomial", &[0.1; 12]).contains("4, 5 or 8"));
        assert!(refused("plumb_bob", &[0.1; 6]).contains("4, 5 or 8"));
        assert!(refused("equidistant", &[0.1; 5]).contains("4 coefficients"));
        assert!(refused("plumb_bob", &[f64::NAN, 0.0, 0.0, 0.0, 0.0]).contains("non-finite"));
        // All zeros is no distortion, whatever the model says, but for equidistant (an
        // f-theta fisheye, tested with the lens rules).
        for (model, d) in [
            ("", &[][..]),
            ("kannala_brandt", &[0.0; 4]),
            ("plumb_bob", &[0.0; 5]),
        ] {
            assert!(Distortion::from_camera_info(model, d).unwrap().is_none());
        }
        // OpenCV's order: k1 k2 p1 p2 k3 k4 k5 k6; trailing zeros (12 values) taken.
        let mut d = vec![1.0, 2.0, 3.0, 4.0, 5.0, 6.0, 7.0, 8.0];
        d.extend([0.0; 4]);
        assert_eq!(
            Distortion::from_camera_info("rational_polynomial", &d)
                .unwrap()
                .lens,
            Lens::RadialTangential {
                k: [1.0, 2.0, 5.0, 6.0, 7.0, 8.0],
                p: [3.0, 4.0]
            }
        );
    }

    /// Distortions of real lenses: undistort(distort(ray)) is the ray across the image.
    #[test]
    fn undistortion_inverts_distortion() {
        let lenses = [
            Distortion::from_camera_info("plumb_bob", &[-0.28, 0.07, 1e-3, -5e-4, 0.0]).unwrap(),
            Distortion::from_camera_info(
                "rational_polynomial",
                &[2.1, 0.6, 2e-4, -3e-4, 0.02, 2.4, 1.1, 0.1],
            )
            .unwrap(),
            Distortion::from_camera_info("equidistant", &[-0.01, 0.05, -0.06, 0.02]).unwrap(),
        ];
        for lens in &lenses {
            for i in -8..=8 {
                for j in -6..=6 {
                    let ray = Vector2::new(i as f64 * 0.08, j as f64 * 0.08);
                    let back = lens.undistort(lens.distort(ray));
                    assert!(
                        back.is_some_and(|b| (b - ray).norm() < 1e-9),
                        "{lens:?}: {ray} came back as {back:?}"
                    );
                }
            }
        }
    }

    /// Lens `index` of a family of random lenses (plumb_bob, rational_polynomial and
    /// equidistant in turn), its coefficients drawn from `rng`.
    fn random_lens(rng: &mut impl rand::Rng, index: usize) -> Distortion {
        let mut coefficient = |scale: f64| rng.gen_range(-scale..scale);
        match index % 3 {
            0 => Distortion::from_camera_info(
                "plumb_bob",
                &[
                    coefficient(1.0),
                    coefficient(1.0),
                    coefficient(0.05),
                    coefficient(0.05),
                    coefficient(1.0),
                ],
            ),
            1 => Distortion::from_camera_info(
                "rational_polynomial",
                &[
                    coefficient(3.0),
                    coefficient(3.0),
                    coefficient(0.05),
                    coefficient(0.05),
                    coefficient(1.0),
                    coefficient(3.0),
                    coefficient(3.0),
                    coefficient(1.0),
                ],
            ),
            _ => Distortion::from_camera_info(
                "equidistant",
                &[
                    coefficient(0.5),
                    coefficient(0.5),
                    coefficient(0.5),
                    coefficient(0.5),
                ],
            ),
        }
        .unwrap()
    }

    /// Whatever the coefficients, a ray that undistortion finds is one the lens puts at the
    /// given coordinates: where it cannot be sure it gives none, never a wrong one.
    #[test]
    fn every_ray_found_for_a_random_lens_is_distorted_back_onto_its_coordinates() {
        use rand::{Rng, SeedableRng};
        let mut rng = rand::rngs::StdRng::seed_from_u64(11);
        let (mut found, mut none) = (0, 0);
        for lens in 0..300 {
            let distortion = random_lens(&mut rng, lens);
            for _ in 0..50 {
                let at = Vector2::new(rng.gen_range(-2.0..2.0), rng.gen_range(-2.0..2.0));
                match distortion.undistort(at) {
                    Some(ray) => {
                        found += 1;
                        let back = distortion.distort(ray);
                        assert!(
                            (back - at).norm() < 1e-8,
                            "{distortion:?}: {at} -> {ray} -> {back}"
                        );
                    }
                    None => none += 1,
                }
            }
        }
        // Most coordinates of such lenses have a ray; some lie beyond their folds.
        assert!(found > 5000 && none > 0, "{found} found, {none} none");
    }

    /// A ray before the fold (where the lens maps one to one) is found again from where
    /// the lens puts it, also for strong lenses on which Newton's method from the
    /// distorted coordinates overshoots past the fold (10 % of such rays were lost).
    #[test]
    fn every_ray_before_the_fold_is_found_again() {
        use rand::{Rng, SeedableRng};
        // A strong rational lens, fx = fy = 150 on 640x480: pixel (16, 0) has a ray 55°
        // off axis, its fold at 70°.
        let strong = Distortion::from_camera_info(
            "rational_polynomial",
            &[0.975, 0.042, -0.001, 0.001, 0.041, 0.949, -0.289, 0.032],
        )
        .unwrap();
        let camera = PinholeCamera::from_k(&[150.0, 0.0, 319.5, 0.0, 150.0, 239.5, 0.0, 0.0, 1.0])
            .unwrap()
            .with_distortion(strong.clone());
        let ray = camera.ray(16.0, 0.0).expect("a ray before the fold");
        assert!((ray - Vector2::new(-1.135, -0.894)).norm() < 2e-3, "{ray}");
        assert!(
            (strong.distort(ray)
                - camera.k_inv.fixed_view::<2, 3>(0, 0) * Vector3::new(16.0, 0.0, 1.0))
            .norm()
                < 1e-9
        );
        let mut rng = rand::rngs::StdRng::seed_from_u64(5);
        let (mut checked, mut lost) = (0, 0);
        for lens in 0..300 {
            let distortion = random_lens(&mut rng, lens);
            let reach = match distortion.lens {
                Lens::Equidistant { .. } => distortion.limit.min(1.5).tan(),
                _ => distortion.limit,
            };
            for _ in 0..50 {
                let angle = rng.gen_range(0.0..std::f64::consts::TAU);
                let ray = Vector2::new(angle.cos(), angle.sin()) * rng.gen_range(0.0..0.98) * reach;
                // Where the tangential terms fold the image over, no ray is unique.
                if let Lens::RadialTangential { k, p } = &distortion.lens {
                    if radial_tangential(k, p, ray).1.determinant() <= 0.0 {
                        continue;
                    }
                }
                checked += 1;
                let at = distortion.distort(ray);
                match distortion.undistort(at) {
                    Some(found) => assert!(
                        (distortion.distort(found) - at).norm() < 1e-8 * at.norm().max(1.0),
                        "{distortion:?}: {ray} -> {at} -> {found}"
                    ),
                    None => lost += 1,
                }
            }
        }
        assert!(checked > 10_000, "{checked}");
        assert_eq!(lost, 0, "{lost} of {checked} rays before the fold lost");
    }

    /// A barrel distortion folds over beyond the radius where r·(1 + k1 r²) peaks: those
    /// distorted coordinates have no ray (or two); a fisheye has none at 90° and beyond.
    #[test]
    fn coordinates_the_lens_cannot_produce_have_no_ray() {
        let barrel =
            Distortion::from_camera_info("plumb_bob", &[-0.5, 0.0, 0.0, 0.0, 0.0]).unwrap();
        // r (1 − 0.5 r²) peaks at r = sqrt(2/3), distorted radius 0.544.
        assert!((barrel.limit - (2.0f64 / 3.0).sqrt()).abs() < 2e-3);
        assert!(barrel.undistort(Vector2::new(0.5, 0.0)).is_some());
        assert_eq!(barrel.undistort(Vector2::new(0.6, 0.0)), None);
        // r (1 − 0.5 r² + 0.1 r⁴) rises to 0.6 at r = 1, falls to 0.566 at r = √2, then
        // rises again: 0.62 is seen beyond the fold only (at r = 1.64), 0.59 before it
        // (r = 0.87) and beyond (r = 1.24, 1.53).
        let folding =
            Distortion::from_camera_info("plumb_bob", &[-0.5, 0.1, 0.0, 0.0, 0.0]).unwrap();
        assert!((folding.limit - 1.0).abs() < 2e-3);
        assert_eq!(folding.undistort(Vector2::new(0.62, 0.0)), None);
        assert_eq!(folding.undistort(Vector2::new(0.0, 0.9)), None);
        let ray = folding.undistort(Vector2::new(0.59, 0.0)).unwrap();
        assert!(
            ray.x < 1.0 && (folding.distort(ray).x - 0.59).abs() < 1e-9,
            "{ray}"
        );
        let fisheye = Distortion {
            lens: Lens::Equidistant { k: [0.0; 4] },
            limit: Lens::Equidistant { k: [0.0; 4] }.limit(),
        };
        let ray = fisheye.undistort(Vector2::new(1.0, 0.0)).unwrap();
        assert!((ray.x - 1.0f64.tan()).abs() < 1e-9);
        assert_eq!(fisheye.undistort(Vector2::new(1.6, 0.0)), None);
        // So is a camera_info's equidistant model with D all zero (an f-theta lens), where
        // the other models' zeros are no distortion.
        assert_eq!(
            Distortion::from_camera_info("equidistant", &[0.0; 4]).unwrap(),
            fisheye
        );
        for model in ["plumb_bob", "rational_polynomial", ""] {
            assert!(Distortion::from_camera_info(model, &[0.0; 5])
                .unwrap()
                .is_none());
        }
        assert!(Distortion::from_camera_info("equidistant", &[])
            .unwrap()
            .is_none());
        assert_eq!(
            Distortion::from_camera_info("equidistant", &[0.0; 5]).unwrap(),
            fisheye
        );
    }

    /// Pixels without a ray where no fold is to blame: a fisheye's beyond 90 degrees.
    #[test]
    fn a_fisheye_wider_than_180_degrees_is_not_blamed_on_its_calibration() {
        let k = [100.0, 0.0, 320.0, 0.0, 100.0, 240.0, 0.0, 0.0, 1.0];
        let fisheye = PinholeCamera::from_k(&k).unwrap().with_distortion(
            Distortion::from_camera_info("equidistant", &[0.01, 0.0, 0.0, 0.0]).unwrap(),
        );
        assert_eq!(fisheye.distortion().fold_degrees(), None);
        let grid = RayGridCache::new(1).get(&fisheye, 640, 480, 4);
        assert!(grid.without_ray > 0);
        let note = fisheye.no_ray_note(&grid, 640, 480).unwrap();
        assert!(
            note.ends_with(
                "get no points: they lie 90 degrees or more from the optical axis (a lens \
                 wider than 180 degrees), where a depth along the axis gives no point"
            ),
            "{note}"
        );
    }

    #[test]
    fn rectified_images_use_p_and_no_distortion() {
        let info = CameraInfo {
            width: 640,
            height: 480,
            k: K,
            distortion_model: "plumb_bob".into(),
            d: vec![-0.28, 0.07, 0.0, 0.0, 0.0],
            p: [
                450.0, 0.0, 300.0, 0.0, 0.0, 450.0, 230.0, 0.0, 0.0, 0.0, 1.0, 0.0,
            ],
            ..CameraInfo::default()
        };
        let raw = PinholeCamera::for_image(&info, 640, 480, false).unwrap();
        assert_eq!(raw.k(), &Matrix3::from_row_slice(&K));
        assert!(matches!(
            raw.distortion().lens,
            Lens::RadialTangential { .. }
        ));
        let rectified = PinholeCamera::for_image(&info, 640, 480, true).unwrap();
        assert!(rectified.distortion().is_none());
        let p = rectified.back_project(390.0, 230.0, 5.0).unwrap();
        assert!((p.x - 1.0).abs() < 1e-12 && p.y.abs() < 1e-12, "{p}");
        // Without a P: K.
        let no_p = CameraInfo {
            p: [0.0; 12],
            ..info
        };
        let k = PinholeCamera::for_image(&no_p, 640, 480, true).unwrap();
        assert_eq!(k.k(), &Matrix3::from_row_slice(&K));
    }

    #[test]
    fn a_camera_info_of_another_resolution_is_scaled_to_the_image() {
        let info = CameraInfo {
            width: 640,
            height: 480,
            k: K,
            ..CameraInfo::default()
        };
        let camera = PinholeCamera::for_image(&info, 320, 240, false).unwrap();
        let k = camera.k();
        assert_eq!((k[(0, 0)], k[(1, 1)]), (250.0, 200.0));
        // Centres: (320 + 0.5)·0.5 − 0.5 = 159.75.
        assert_eq!((k[(0, 2)], k[(1, 2)]), (159.75, 119.75));
        // The same ray for the same spot of the scene: pixel (420, 140) at full size is
        // (209.75, 69.75) at half size.
        let full = PinholeCamera::from_k(&K)
            .unwrap()
            .back_project(420.0, 140.0, 10.0)
            .unwrap();
        let half = camera.back_project(209.75, 69.75, 10.0).unwrap();
        assert!((full - half).norm() < 1e-9);
        // An unset size (0x0) is the image's own.
        let unset = CameraInfo {
            k: K,
            ..CameraInfo::default()
        };
        assert_eq!(
            PinholeCamera::for_image(&unset, 320, 240, false)
                .unwrap()
                .k()[(0, 0)],
            500.0
        );
        // Another aspect ratio (a crop) has no camera, raw or rectified.
        for rectified in [false, true] {
            let e = PinholeCamera::for_image(&info, 320, 320, rectified).unwrap_err();
            assert!(e.contains("another aspect ratio"), "{e}");
        }
    }

    /// The grid holds each grid pixel's ray (f32), NaN where there is none, and is built
    /// once per camera, size and stride while it is among the last ones used.
    #[test]
    fn the_ray_grid_is_every_strided_pixels_ray_and_is_kept() {
        let camera = PinholeCamera::from_k(&K).unwrap().with_distortion(
            Distortion::from_camera_info("plumb_bob", &[-0.5, 0.0, 0.0, 0.0, 0.0]).unwrap(),
        );
        let cache = RayGridCache::new(2);
        let grid = cache.get(&camera, 640, 480, 3);
        assert_eq!(
            (grid.columns, grid.rows, grid.rays.len()),
            (214, 160, 214 * 160)
        );
        let mut missing = 0;
        for (j, row) in grid.rays.chunks(grid.columns).enumerate() {
            for (i, ray) in row.iter().enumerate() {
                match camera.ray((3 * i) as f64, (3 * j) as f64) {
                    Some(r) => {
                        assert!(
                            (ray[0] as f64 - r.x).abs() < 1e-6
                                && (ray[1] as f64 - r.y).abs() < 1e-6
                        )
                    }
                    None => {
                        assert!(ray[0].is_nan() && ray[1].is_nan());
                        missing += 1;
                    }
                }
            }
        }
        // The corners of this strong barrel lens lie beyond its fold (39 degrees), and the
        // log says so when the grid is built.
        assert!(missing > 0 && missing < grid.rays.len() / 2, "{missing}");
        assert_eq!(grid.without_ray, missing);
        let note = camera.no_ray_note(&grid, 640, 480).unwrap();
        assert_eq!(
            note,
            format!(
                "{:.1} % of the pixels of the 640x480 camera (fx 500 px) get no points: its \
                 lens distortion folds back 39 degrees from the optical axis, and pixels \
                 beyond have no single ray (does the calibration cover the image's edges?)",
                100.0 * missing as f64 / 34240.0
            )
        );
        // Logged when the grid was built, once.
        assert!(!cache.noted.is_new(&note));
        assert!(Arc::ptr_eq(&grid, &cache.get(&camera, 640, 480, 3)), "kept");
        // Kept while among the two used last.
        let pinhole = PinholeCamera::from_k(&K).unwrap();
        let other = cache.get(&pinhole, 640, 480, 3);
        assert_eq!(other.without_ray, 0);
        assert_eq!(pinhole.no_ray_note(&other, 640, 480), None);
        assert!(
            Arc::ptr_eq(&grid, &cache.get(&camera, 640, 480, 3)),
            "used last"
        );
        cache.get(&camera, 640, 480, 2);
        assert!(
            Arc::ptr_eq(&grid, &cache.get(&camera, 640, 480, 3)),
            "used last again"
        );
        assert!(
            !Arc::ptr_eq(&other, &cache.get(&pinhole, 640, 480, 3)),
            "evicted"
        );
        cache.get(&camera, 640, 480, 2);
        let again = cache.get(&camera, 640, 480, 3);
        assert!(!Arc::ptr_eq(&grid, &again), "evicted by the two used since");
        let bits =
            |g: &RayGrid| -> Vec<[u32; 2]> { g.rays.iter().map(|r| r.map(f32::to_bits)).collect() };
        assert_eq!(bits(&grid), bits(&again));
    }
}

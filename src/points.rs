//! The uncertainty point cloud: every (strided) pixel with valid depth back-projected into
//! the camera optical frame (REP 103: x right, y down, z forward) with its colour, label
//! and both uncertainties, as a planner or RViz takes it.
//!
//! The camera is the frame's camera_info: K and the lens distortion D for raw images, P
//! for rectified ones ([`crate::camera`]). Pixel (u, v) is centred at (u, v) in K's
//! coordinates, as in ROS and OpenCV. Pure functions: prediction and camera in, points
//! out; the node, `bag process` and `infer` serialise them.

use image::RgbImage;

use crate::camera::PinholeCamera;
use crate::config::PointsParams;
use crate::engine::{LabelImage, Prediction};
use crate::msg::{CameraInfo, Header, PointCloud2, PointField};

/// Bytes per point: x, y, z, rgb (float32), label (uint16, 2 bytes padding), then the four
/// uncertainties (float32).
pub const POINT_STEP: u32 = 36;

/// Label of points from a model without a semantic head.
pub const NO_LABEL: u16 = u16::MAX;

/// A camera calibration file as ROS writes it (camera_calibration_parsers' YAML:
/// `image_width`, `image_height`, `camera_matrix: {rows: 3, cols: 3, data: [...]}`, and
/// optionally `distortion_model` (plumb_bob where it is absent and D is not all zero),
/// `distortion_coefficients` (1xN or Nx1), `rectification_matrix` (3x3) and
/// `projection_matrix` (3x4)), as a CameraInfo.
pub fn camera_info_from_calibration(path: &std::path::Path) -> crate::Result<CameraInfo> {
    use crate::text_file::{read_limited, MAX_CONFIG_BYTES};
    #[derive(serde::Deserialize)]
    struct Matrix {
        rows: usize,
        cols: usize,
        data: Vec<f64>,
    }
    #[derive(serde::Deserialize)]
    struct Calibration {
        image_width: u32,
        image_height: u32,
        camera_matrix: Matrix,
        distortion_model: Option<String>,
        distortion_coefficients: Option<Matrix>,
        rectification_matrix: Option<Matrix>,
        projection_matrix: Option<Matrix>,
    }
    let origin = path.display().to_string();
    let text = read_limited(path, MAX_CONFIG_BYTES).map_err(|e| crate::Error::io(path, e))?;
    let calibration: Calibration = serde_yaml::from_str(&text)
        .map_err(|e| crate::Error::config(&origin, "(file)", e.to_string()))?;
    // A matrix of the file as `rows` x `cols` values, row by row.
    let matrix = |m: &Matrix, key: &str, rows: usize, cols: usize| -> crate::Result<Vec<f64>> {
        if (m.rows, m.cols, m.data.len()) == (rows, cols, rows * cols) {
            Ok(m.data.clone())
        } else {
            Err(crate::Error::config(
                &origin,
                key,
                format!(
                    "must be {rows}x{cols} with {} values, not {}x{} with {}",
                    rows * cols,
                    m.rows,
                    m.cols,
                    m.data.len()
                ),
            ))
        }
    };
    let k: [f64; 9] = matrix(&calibration.camera_matrix, "camera_matrix", 3, 3)?
        .try_into()
        .expect("9 values");
    PinholeCamera::from_k(&k).map_err(|e| crate::Error::config(&origin, "camera_matrix", e))?;
    let defaults = CameraInfo::default();
    let r: [f64; 9] = match &calibration.rectification_matrix {
        Some(m) => matrix(m, "rectification_matrix", 3, 3)?
            .try_into()
            .expect("9 values"),
        None => defaults.r,
    };
    let p: [f64; 12] = match &calibration.projection_matrix {
        Some(m) => matrix(m, "projection_matrix", 3, 4)?
            .try_into()
            .expect("12 values"),
        None => defaults.p,
    };
    // A row or a column, as camera_calibration_parsers reads it.
    let d = match &calibration.distortion_coefficients {
        Some(m) if m.cols == 1 && m.rows != 1 => {
            matrix(m, "distortion_coefficients", m.data.len(), 1)?
        }
        Some(m) => matrix(m, "distortion_coefficients", 1, m.data.len())?,
        None => Vec::new(),
    };
    // Files from before the key was written are plumb_bob (as camera_calibration_parsers
    // reads them).
    let distortion_model = match calibration.distortion_model {
        Some(model) => model,
        None if d.iter().any(|c| *c != 0.0) => {
            log::warn!(
                "{origin}: no distortion_model; its distortion_coefficients are taken as \
                 plumb_bob (k1 k2 p1 p2 k3), as camera_calibration_parsers takes them"
            );
            "plumb_bob".to_owned()
        }
        None => String::new(),
    };
    let info = CameraInfo {
        width: calibration.image_width,
        height: calibration.image_height,
        distortion_model,
        d,
        k,
        r,
        p,
        ..defaults
    };
    Ok(info)
}

/// How pixels become points, and which.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct CloudOptions {
    /// Every Nth pixel in x and in y (1 = all).
    pub stride: u32,
    /// Points farther than this from the camera (Euclidean, metres) are left out; 0 = no
    /// limit.
    pub max_range_m: f32,
    /// Points whose depth epistemic std exceeds this (metres) are left out; 0 = no gate.
    /// Without an epistemic image (aleatoric mode) the gate does not apply.
    pub max_depth_epistemic_m: f32,
    /// The camera images are rectified: camera_info's P, no distortion (otherwise K and
    /// D, see [`PinholeCamera::for_image`]).
    pub rectified: bool,
}

impl CloudOptions {
    pub fn from_params(p: &PointsParams) -> Self {
        CloudOptions {
            stride: p.stride.max(1) as u32,
            max_range_m: p.max_range_m as f32,
            max_depth_epistemic_m: p.max_depth_epistemic_m as f32,
            rectified: p.rectified,
        }
    }
}

/// The fields of every cloud this project writes, in order (sensor_msgs/PointField
/// datatypes: 7 = FLOAT32, 4 = UINT16).
pub fn fields() -> Vec<PointField> {
    let field = |name: &str, offset: u32, datatype: u8| PointField {
        name: name.into(),
        offset,
        datatype,
        count: 1,
    };
    vec![
        field("x", 0, PointField::FLOAT32),
        field("y", 4, PointField::FLOAT32),
        field("z", 8, PointField::FLOAT32),
        field("rgb", 12, PointField::FLOAT32),
        field("label", 16, PointField::UINT16),
        field("semantic_aleatoric", 20, PointField::FLOAT32),
        field("semantic_epistemic", 24, PointField::FLOAT32),
        field("depth_aleatoric", 28, PointField::FLOAT32),
        field("depth_epistemic", 32, PointField::FLOAT32),
    ]
}

/// One point with everything it carries.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct CloudPoint {
    /// Metres, camera optical frame.
    pub xyz: [f32; 3],
    /// The camera image's colour.
    pub rgb: [u8; 3],
    /// Class id; [`NO_LABEL`] without a semantic head.
    pub label: u16,
    /// nats; NaN where the prediction has no such image (epistemic in aleatoric mode).
    pub semantic_aleatoric: f32,
    pub semantic_epistemic: f32,
    /// metres (std); NaN where the prediction has no such image.
    pub depth_aleatoric: f32,
    pub depth_epistemic: f32,
}

/// The points of one prediction: pixels on the stride grid with finite positive depth
/// that pass the options' filters, row by row. `rgb` is the camera image the prediction
/// was made from (same size). `None` for a model without depth.
pub fn points(
    prediction: &Prediction,
    rgb: &RgbImage,
    camera: &PinholeCamera,
    options: CloudOptions,
) -> Option<Vec<CloudPoint>> {
    let mut out = Vec::new();
    visit_points(prediction, rgb, camera, options, |p| out.push(*p)).then_some(out)
}

/// Calls `f` with each point of [`points`], in the same order, without collecting them;
/// false (and no call) for a model without depth.
fn visit_points(
    prediction: &Prediction,
    rgb: &RgbImage,
    camera: &PinholeCamera,
    options: CloudOptions,
    mut f: impl FnMut(&CloudPoint),
) -> bool {
    let Some(depth) = prediction.depth.as_ref() else {
        return false;
    };
    let (w, h) = (prediction.width as usize, prediction.height as usize);
    assert_eq!(
        rgb.dimensions(),
        (prediction.width, prediction.height),
        "image and prediction sizes"
    );
    // Every image as a plain row-major slice (None where the prediction has no such image).
    fn raw(img: Option<&crate::colormap::FloatImage>) -> Option<&[f32]> {
        img.map(|i| i.as_raw().as_slice())
    }
    let semantic = prediction.semantic.as_ref();
    let semantic_aleatoric = raw(semantic.map(|s| &s.aleatoric_entropy));
    let semantic_epistemic = raw(semantic.and_then(|s| s.epistemic_mutual_information.as_ref()));
    let (labels_u8, labels_u16) = match semantic.map(|s| &s.labels) {
        Some(LabelImage::U8(l)) => (Some(l.as_raw().as_slice()), None),
        Some(LabelImage::U16(l)) => (None, Some(l.as_raw().as_slice())),
        None => (None, None),
    };
    let depth_m = depth.depth_m.as_raw().as_slice();
    let depth_aleatoric = raw(depth.aleatoric_std_m.as_ref());
    let depth_epistemic = raw(depth.epistemic_std_m.as_ref());
    let at = |img: Option<&[f32]>, i: usize| img.map_or(f32::NAN, |v| v[i]);
    let colours = rgb.as_raw().as_slice();
    let stride = options.stride.max(1) as usize;
    let max_range_sq = options.max_range_m * options.max_range_m;
    let grid = camera.ray_grid(prediction.width, prediction.height, options.stride);
    for (v, rays) in (0..h)
        .step_by(stride)
        .zip(grid.rays.chunks(grid.columns.max(1)))
    {
        for (u, &[ray_x, ray_y]) in (0..w).step_by(stride).zip(rays) {
            let i = v * w + u;
            let z = depth_m[i];
            // A pixel without depth, or without a ray (NaN: beyond what the lens model
            // can undo).
            if !(z.is_finite() && z > 0.0 && ray_x.is_finite()) {
                continue;
            }
            let depth_epistemic = at(depth_epistemic, i);
            // A NaN std (none in aleatoric mode) is not above the limit; in mc mode the
            // engine's variances are finite.
            if options.max_depth_epistemic_m > 0.0
                && depth_epistemic > options.max_depth_epistemic_m
            {
                continue;
            }
            let xyz = [ray_x * z, ray_y * z, z];
            // A finite but absurd depth (1e38 m) times a wide ray overflows: the cloud
            // says it is dense (no NaN or Inf point), so such a point is left out.
            if !(xyz[0].is_finite() && xyz[1].is_finite()) {
                continue;
            }
            if options.max_range_m > 0.0 && xyz[0] * xyz[0] + xyz[1] * xyz[1] + z * z > max_range_sq
            {
                continue;
            }
            let label = match (labels_u8, labels_u16) {
                (Some(l), _) => l[i] as u16,
                (_, Some(l)) => l[i],
                _ => NO_LABEL,
            };
            f(&CloudPoint {
                xyz,
                rgb: [colours[3 * i], colours[3 * i + 1], colours[3 * i + 2]],
                label,
                semantic_aleatoric: at(semantic_aleatoric, i),
                semantic_epistemic: at(semantic_epistemic, i),
                depth_aleatoric: at(depth_aleatoric, i),
                depth_epistemic,
            });
        }
    }
    true
}

/// RViz's packed colour: 0x00RRGGBB in the bits of a float32.
pub fn packed_rgb([r, g, b]: [u8; 3]) -> f32 {
    f32::from_bits(((r as u32) << 16) | ((g as u32) << 8) | b as u32)
}

/// The points as an unorganised sensor_msgs/PointCloud2 (height 1, little-endian,
/// `is_dense`: no invalid points) with `header`.
pub fn to_point_cloud2(points: &[CloudPoint], header: &Header) -> PointCloud2 {
    let mut data = Vec::with_capacity(points.len() * POINT_STEP as usize);
    for p in points {
        data.extend_from_slice(&encode(p));
    }
    cloud_message(data, header)
}

/// One point as the [`fields`] lay it out, little-endian.
fn encode(p: &CloudPoint) -> [u8; POINT_STEP as usize] {
    let mut bytes = [0u8; POINT_STEP as usize];
    let floats = [
        (0, p.xyz[0]),
        (4, p.xyz[1]),
        (8, p.xyz[2]),
        (12, packed_rgb(p.rgb)),
        (20, p.semantic_aleatoric),
        (24, p.semantic_epistemic),
        (28, p.depth_aleatoric),
        (32, p.depth_epistemic),
    ];
    for (offset, v) in floats {
        bytes[offset..offset + 4].copy_from_slice(&v.to_le_bytes());
    }
    bytes[16..18].copy_from_slice(&p.label.to_le_bytes());
    bytes
}

/// The PointCloud2 of encoded points.
fn cloud_message(data: Vec<u8>, header: &Header) -> PointCloud2 {
    let width = (data.len() / POINT_STEP as usize) as u32;
    PointCloud2 {
        header: header.clone(),
        height: 1,
        width,
        fields: fields(),
        is_bigendian: false,
        point_step: POINT_STEP,
        row_step: POINT_STEP * width,
        data,
        is_dense: true,
    }
}

/// The cloud of one frame, or why there is none: the model has no depth, or the
/// camera_info is unusable.
pub fn frame_cloud(
    prediction: &Prediction,
    rgb: &RgbImage,
    info: &CameraInfo,
    options: CloudOptions,
    header: &Header,
) -> Result<Option<PointCloud2>, String> {
    // A model without depth has no cloud, whatever its camera_info.
    if prediction.depth.is_none() {
        return Ok(None);
    }
    let camera =
        PinholeCamera::for_image(info, prediction.width, prediction.height, options.rectified)?;
    // Encoded as they are found: no list of points in between.
    let (w, h) = (prediction.width as usize, prediction.height as usize);
    let stride = options.stride.max(1) as usize;
    let mut data =
        Vec::with_capacity(w.div_ceil(stride) * h.div_ceil(stride) * POINT_STEP as usize);
    let has_depth = visit_points(prediction, rgb, &camera, options, |p| {
        data.extend_from_slice(&encode(p))
    });
    Ok(has_depth.then(|| cloud_message(data, header)))
}

/// The points as a binary little-endian PLY: x, y, z (float), red, green, blue (uchar),
/// label (ushort), then the four uncertainties (float), one vertex per point.
pub fn to_ply(points: &[CloudPoint], comment: &str) -> Vec<u8> {
    // A PLY header is ASCII lines: other characters of the comment (a file name) escaped.
    let comment: String = comment
        .chars()
        .map(|c| match c {
            ' '..='~' => c.to_string(),
            c => c.escape_unicode().to_string(),
        })
        .collect();
    let mut out = format!(
        "ply\nformat binary_little_endian 1.0\ncomment {comment}\n\
         comment frame: camera optical (x right, y down, z forward), metres\n\
         element vertex {}\nproperty float x\nproperty float y\nproperty float z\n\
         property uchar red\nproperty uchar green\nproperty uchar blue\n\
         property ushort label\nproperty float semantic_aleatoric\n\
         property float semantic_epistemic\nproperty float depth_aleatoric\n\
         property float depth_epistemic\nend_header\n",
        points.len()
    )
    .into_bytes();
    for p in points {
        for v in p.xyz {
            out.extend_from_slice(&v.to_le_bytes());
        }
        out.extend_from_slice(&p.rgb);
        out.extend_from_slice(&p.label.to_le_bytes());
        for v in [
            p.semantic_aleatoric,
            p.semantic_epistemic,
            p.depth_aleatoric,
            p.depth_epistemic,
        ] {
            out.extend_from_slice(&v.to_le_bytes());
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::colormap::FloatImage;
    use crate::config::Mode;
    use crate::engine::{DepthPrediction, LabelImage, SemanticPrediction, Timing};
    use image::{ImageBuffer, Luma};

    /// camera_calibration_parsers' YAML, as `cameracalibrator` writes it: K, D, R and P.
    #[test]
    fn a_calibration_file_gives_k_d_r_and_p() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("front.yaml");
        std::fs::write(
            &path,
            "image_width: 640\nimage_height: 480\ncamera_name: front\n\
             camera_matrix: {rows: 3, cols: 3, data: [520, 0, 318.5, 0, 515, 242.25, 0, 0, 1]}\n\
             distortion_model: plumb_bob\n\
             distortion_coefficients: {rows: 1, cols: 5, data: [-0.28, 0.07, 0.001, -0.0005, 0]}\n\
             rectification_matrix: {rows: 3, cols: 3, data: [1, 0, 0, 0, 1, 0, 0, 0, 1]}\n\
             projection_matrix: {rows: 3, cols: 4, data: [450, 0, 300, 0, 0, 448, 240, 0, 0, 0, 1, 0]}\n",
        )
        .unwrap();
        let info = camera_info_from_calibration(&path).unwrap();
        assert_eq!((info.width, info.height), (640, 480));
        assert_eq!(
            info.k,
            [520.0, 0.0, 318.5, 0.0, 515.0, 242.25, 0.0, 0.0, 1.0]
        );
        assert_eq!(
            (info.distortion_model.as_str(), info.d.len()),
            ("plumb_bob", 5)
        );
        assert_eq!(info.r, [1.0, 0.0, 0.0, 0.0, 1.0, 0.0, 0.0, 0.0, 1.0]);
        assert_eq!(info.p[0..3], [450.0, 0.0, 300.0]);
        // A P of another shape is refused with its key.
        let text = std::fs::read_to_string(&path)
            .unwrap()
            .replace("rows: 3, cols: 4", "rows: 4, cols: 3");
        std::fs::write(&path, text).unwrap();
        let e = camera_info_from_calibration(&path).unwrap_err().to_string();
        assert!(e.contains("projection_matrix") && e.contains("3x4"), "{e}");
        // As is a D whose shape does not hold its values.
        let text = std::fs::read_to_string(&path)
            .unwrap()
            .replace("rows: 1, cols: 5", "rows: 1, cols: 4")
            .replace("rows: 4, cols: 3", "rows: 3, cols: 4");
        std::fs::write(&path, &text).unwrap();
        let e = camera_info_from_calibration(&path).unwrap_err().to_string();
        assert!(e.contains("distortion_coefficients"), "{e}");
        // A column of D is read as camera_calibration_parsers reads it.
        std::fs::write(&path, text.replace("rows: 1, cols: 4", "rows: 5, cols: 1")).unwrap();
        let info = camera_info_from_calibration(&path).unwrap();
        assert_eq!(info.d, [-0.28, 0.07, 0.001, -0.0005, 0.0]);
    }

    /// A file without `distortion_model` (as older calibrators wrote them): plumb_bob, as
    /// camera_calibration_parsers reads it; without coefficients, no distortion.
    #[test]
    fn a_calibration_file_without_a_distortion_model_is_plumb_bob() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("old.yaml");
        let k = "camera_matrix: {rows: 3, cols: 3, data: [520, 0, 320, 0, 520, 240, 0, 0, 1]}\n";
        std::fs::write(
            &path,
            format!(
                "image_width: 640\nimage_height: 480\n{k}\
                 distortion_coefficients: {{rows: 1, cols: 5, data: [-0.28, 0.07, 0, 0, 0]}}\n"
            ),
        )
        .unwrap();
        let info = camera_info_from_calibration(&path).unwrap();
        assert_eq!(info.distortion_model, "plumb_bob");
        let camera = PinholeCamera::for_image(&info, 640, 480, false).unwrap();
        assert!(!camera.distortion().is_none());
        std::fs::write(&path, format!("image_width: 640\nimage_height: 480\n{k}")).unwrap();
        let info = camera_info_from_calibration(&path).unwrap();
        let camera = PinholeCamera::for_image(&info, 640, 480, false).unwrap();
        assert!(camera.distortion().is_none());
    }

    /// A model without depth has no cloud, and so no complaint about its camera_info.
    #[test]
    fn a_model_without_depth_has_no_cloud_whatever_its_camera_info() {
        let mut semantic_only = prediction(4.0, true);
        semantic_only.depth = None;
        let rgb = RgbImage::new(4, 3);
        let uncalibrated = CameraInfo {
            width: 4,
            height: 3,
            k: [0.0; 9],
            ..CameraInfo::default()
        };
        let header = Header::default();
        assert!(matches!(
            frame_cloud(&semantic_only, &rgb, &uncalibrated, all(), &header),
            Ok(None)
        ));
        // With depth the same camera_info is refused, with the reason.
        let e =
            frame_cloud(&prediction(4.0, true), &rgb, &uncalibrated, all(), &header).unwrap_err();
        assert!(e.contains("focal"), "{e}");
    }

    /// A 4x3 prediction at depth `d` m everywhere but pixel (1, 0) (invalid), with labels
    /// x + y, and epistemic images only when `epistemic`.
    fn prediction(d: f32, epistemic: bool) -> Prediction {
        let (w, h) = (4, 3);
        let f = |v: f32| FloatImage::from_pixel(w, h, Luma([v]));
        let mut depth = f(d);
        depth.put_pixel(1, 0, Luma([f32::NAN]));
        let mut depth_epistemic = f(0.1);
        depth_epistemic.put_pixel(3, 2, Luma([0.9]));
        Prediction {
            width: w,
            height: h,
            mode: if epistemic { Mode::Mc } else { Mode::Aleatoric },
            samples: 1,
            semantic: Some(SemanticPrediction {
                labels: LabelImage::U8(ImageBuffer::from_fn(w, h, |x, y| Luma([(x + y) as u8]))),
                confidence: f(0.9),
                aleatoric_entropy: f(0.25),
                epistemic_mutual_information: epistemic.then(|| f(0.05)),
                probabilities: None,
            }),
            depth: Some(DepthPrediction {
                depth_m: depth,
                aleatoric_std_m: Some(f(0.5)),
                epistemic_std_m: epistemic.then_some(depth_epistemic),
            }),
            device_colors: None,
            timing: Timing::default(),
        }
    }

    fn all() -> CloudOptions {
        CloudOptions {
            stride: 1,
            max_range_m: 0.0,
            max_depth_epistemic_m: 0.0,
            rectified: false,
        }
    }

    #[test]
    fn invalid_depth_is_left_out_and_every_field_comes_from_its_pixel() {
        let camera = PinholeCamera::from_k(&[2.0, 0.0, 1.5, 0.0, 2.0, 1.0, 0.0, 0.0, 1.0]).unwrap();
        let rgb = RgbImage::from_fn(4, 3, |x, y| image::Rgb([x as u8 * 10, y as u8 * 10, 7]));
        let pts = points(&prediction(4.0, true), &rgb, &camera, all()).unwrap();
        assert_eq!(pts.len(), 11, "12 pixels, one without depth");
        // The frame's message encodes the same points as it finds them.
        let info = CameraInfo {
            k: *camera
                .k()
                .transpose()
                .as_slice()
                .first_chunk::<9>()
                .unwrap(),
            ..CameraInfo::default()
        };
        let header = Header::default();
        let cloud = frame_cloud(&prediction(4.0, true), &rgb, &info, all(), &header)
            .unwrap()
            .unwrap();
        assert_eq!(cloud, to_point_cloud2(&pts, &header));
        // Pixel (3, 2): x = (3 − 1.5)·4/2 = 3, y = (2 − 1)·4/2 = 2.
        let last = pts.last().unwrap();
        assert_eq!(last.xyz, [3.0, 2.0, 4.0]);
        assert_eq!((last.rgb, last.label), ([30, 20, 7], 5));
        assert_eq!(
            (
                last.semantic_aleatoric,
                last.semantic_epistemic,
                last.depth_aleatoric,
                last.depth_epistemic
            ),
            (0.25, 0.05, 0.5, 0.9)
        );
        // Aleatoric mode: the epistemic fields are NaN; the gate does not apply.
        let gated = CloudOptions {
            max_depth_epistemic_m: 0.5,
            ..all()
        };
        let pts = points(&prediction(4.0, false), &rgb, &camera, gated).unwrap();
        assert_eq!(pts.len(), 11);
        assert!(pts
            .iter()
            .all(|p| p.semantic_epistemic.is_nan() && p.depth_epistemic.is_nan()));
        // An absurd finite depth (3e38 m) overflows x = 1.5 · z on columns 0 and 3 of a
        // camera with fx = 1: those points are left out, no Inf in a dense cloud.
        let wide = PinholeCamera::from_k(&[1.0, 0.0, 1.5, 0.0, 1.0, 1.0, 0.0, 0.0, 1.0]).unwrap();
        let pts = points(&prediction(3e38, true), &rgb, &wide, all()).unwrap();
        assert_eq!(pts.len(), 5, "11 with depth, 6 of them overflowing");
        assert!(pts.iter().all(|p| p.xyz.iter().all(|v| v.is_finite())));
    }

    #[test]
    fn stride_range_and_epistemic_gate_select_points() {
        let camera = PinholeCamera::from_k(&[2.0, 0.0, 1.5, 0.0, 2.0, 1.0, 0.0, 0.0, 1.0]).unwrap();
        let rgb = RgbImage::new(4, 3);
        let p = prediction(4.0, true);
        // Stride 2: pixels (0, 0), (2, 0), (0, 2), (2, 2).
        let strided = points(&p, &rgb, &camera, CloudOptions { stride: 2, ..all() }).unwrap();
        let xs: Vec<[f32; 3]> = strided.iter().map(|p| p.xyz).collect();
        assert_eq!(
            xs,
            [
                [-3.0, -2.0, 4.0],
                [1.0, -2.0, 4.0],
                [-3.0, 2.0, 4.0],
                [1.0, 2.0, 4.0]
            ]
        );
        // The gate drops pixel (3, 2), whose depth epistemic std is 0.9 m.
        let gate = CloudOptions {
            max_depth_epistemic_m: 0.5,
            ..all()
        };
        assert_eq!(points(&p, &rgb, &camera, gate).unwrap().len(), 10);
        // Range: pixels (1, 1) and (2, 1) give (∓1, 0, 4), sqrt(17) = 4.12 m away; every
        // other pixel is at least sqrt(1 + 4 + 16) = 4.58 m away.
        let near = CloudOptions {
            max_range_m: 4.2,
            ..all()
        };
        let kept = points(&p, &rgb, &camera, near).unwrap();
        assert_eq!(kept.len(), 2);
        assert!(kept
            .iter()
            .all(|p| (p.xyz[0].powi(2) + p.xyz[1].powi(2) + p.xyz[2].powi(2)).sqrt() <= 4.2));
        // No depth head, no cloud.
        let mut no_depth = p.clone();
        no_depth.depth = None;
        assert!(points(&no_depth, &rgb, &camera, all()).is_none());
    }

    #[test]
    fn point_cloud2_layout_and_ply_header() {
        let pts = [CloudPoint {
            xyz: [1.0, -2.0, 3.0],
            rgb: [255, 128, 1],
            label: 7,
            semantic_aleatoric: 0.5,
            semantic_epistemic: f32::NAN,
            depth_aleatoric: 0.25,
            depth_epistemic: f32::NAN,
        }; 3];
        let header = Header {
            frame_id: "cam".into(),
            ..Header::default()
        };
        let cloud = to_point_cloud2(&pts, &header);
        assert_eq!(
            (cloud.height, cloud.width, cloud.point_step, cloud.row_step),
            (1, 3, 36, 108)
        );
        assert_eq!(cloud.data.len(), 108);
        let names: Vec<&str> = cloud.fields.iter().map(|f| f.name.as_str()).collect();
        assert_eq!(
            names,
            [
                "x",
                "y",
                "z",
                "rgb",
                "label",
                "semantic_aleatoric",
                "semantic_epistemic",
                "depth_aleatoric",
                "depth_epistemic"
            ]
        );
        // Every field fits in the point without overlapping the next.
        for pair in cloud.fields.windows(2) {
            let size = if pair[0].datatype == PointField::UINT16 {
                2
            } else {
                4
            };
            assert!(pair[0].offset + size <= pair[1].offset);
        }
        let point = &cloud.data[36..72];
        let f32_at = |o: usize| f32::from_le_bytes(point[o..o + 4].try_into().unwrap());
        assert_eq!((f32_at(0), f32_at(4), f32_at(8)), (1.0, -2.0, 3.0));
        assert_eq!(f32_at(12).to_bits(), 0x00FF_8001, "packed rgb");
        assert_eq!(u16::from_le_bytes([point[16], point[17]]), 7);
        assert_eq!(f32_at(20), 0.5);
        assert!(f32_at(24).is_nan());
        let ply = to_ply(&pts, "test");
        let text = String::from_utf8_lossy(&ply);
        assert!(text.starts_with("ply\nformat binary_little_endian 1.0\n"));
        assert!(text.contains("element vertex 3\n") && text.contains("property ushort label\n"));
        let body = ply.len() - (text.find("end_header\n").unwrap() + "end_header\n".len());
        assert_eq!(
            body,
            3 * (12 + 3 + 2 + 16),
            "one vertex per point, no padding"
        );
        // A file name of any characters stays one ASCII comment line.
        let ply = to_ply(&pts, "café\nx");
        let end = ply.windows(11).position(|w| w == b"end_header\n").unwrap();
        let header = std::str::from_utf8(&ply[..end]).unwrap();
        assert!(header.is_ascii(), "{header}");
        assert!(header.contains("comment caf\\u{e9}\\u{a}x\n"), "{header}");
        assert_eq!(
            header.lines().filter(|l| l.starts_with("comment")).count(),
            2
        );
    }
}

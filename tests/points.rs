//! The point cloud against geometry known exactly: a synthetic scene's ground-truth depth
//! back-projected with the camera it was rendered with puts the road on the ground plane,
//! the camera's height below the optical centre (REP 103: y down); lens distortion undone
//! as OpenCV applies and undoes it (fixture and its generator in tests/data/distortion).

use bayes_perception::camera::{Distortion, PinholeCamera};
use bayes_perception::colormap::FloatImage;
use bayes_perception::config::Mode;
use bayes_perception::engine::{DepthPrediction, Prediction, Timing};
use bayes_perception::msg::CameraInfo;
use bayes_perception::points::{points, CloudOptions};
use bayes_perception::synth::{render, SceneConfig, ROAD};

#[test]
fn ground_truth_depth_puts_the_road_on_the_ground_plane() {
    let cfg = SceneConfig {
        width: 240,
        height: 180,
        ood: false,
        noise_sigma: SceneConfig::NOISE_SIGMA,
    };
    for index in 0..3 {
        let scene = render(5, index, cfg);
        let c = scene.camera;
        // The renderer's pixel centres are at u + 0.5; ROS's K has them at u.
        let info = CameraInfo {
            width: 240,
            height: 180,
            k: [
                c.focal_px,
                0.0,
                c.cx - 0.5,
                0.0,
                c.focal_px,
                c.cy - 0.5,
                0.0,
                0.0,
                1.0,
            ],
            ..CameraInfo::default()
        };
        let camera = PinholeCamera::for_image(&info, 240, 180, false).unwrap();
        let prediction = Prediction {
            width: 240,
            height: 180,
            mode: Mode::Aleatoric,
            samples: 1,
            semantic: None,
            depth: Some(DepthPrediction {
                depth_m: scene.depth_m.clone(),
                aleatoric_std_m: None,
                epistemic_std_m: None,
            }),
            device_colors: None,
            timing: Timing::default(),
        };
        let filter = CloudOptions {
            stride: 1,
            max_range_m: 0.0,
            max_depth_epistemic_m: 0.0,
            rectified: false,
        };
        let cloud = points(&prediction, &scene.rgb, &camera, filter).unwrap();
        // Row by row over the pixels with depth: match each point to its pixel's label.
        let with_depth: Vec<(u32, u32)> = (0..180)
            .flat_map(|y| (0..240).map(move |x| (x, y)))
            .filter(|&(x, y)| scene.depth_m.get_pixel(x, y).0[0] > 0.0)
            .collect();
        assert_eq!(
            cloud.len(),
            with_depth.len(),
            "one point per pixel with depth"
        );
        let mut road = 0;
        for (p, &(x, y)) in cloud.iter().zip(&with_depth) {
            assert_eq!(p.rgb, scene.rgb.get_pixel(x, y).0);
            if scene.labels.get_pixel(x, y).0[0] == ROAD {
                road += 1;
                assert!(
                    (p.xyz[1] as f64 - c.height_m).abs() < 1e-4 * p.xyz[2] as f64,
                    "scene {index}, pixel ({x}, {y}): y {} m, the camera is {} m high",
                    p.xyz[1],
                    c.height_m
                );
            }
        }
        assert!(road > 1000, "scene {index} shows road ({road} pixels)");
    }
}

#[derive(serde::Deserialize)]
struct OpenCvProjections {
    width: u32,
    height: u32,
    stride: u32,
    cases: Vec<Lens>,
}

#[derive(serde::Deserialize)]
struct Lens {
    model: String,
    d: Vec<f64>,
    k: [f64; 9],
    points: Vec<[f64; 3]>,
    pixels: Vec<[f64; 2]>,
    /// The rays (x, y of (x, y, 1)) of the pixels on the stride grid, row by row; null
    /// where there is none (beyond 90 degrees through the fisheye).
    grid_rays: Vec<Option<[f64; 2]>>,
}

fn opencv_projections() -> OpenCvProjections {
    let path = concat!(
        env!("CARGO_MANIFEST_DIR"),
        "/tests/data/distortion/opencv_projections.json"
    );
    serde_json::from_str(&std::fs::read_to_string(path).unwrap()).unwrap()
}

fn camera(lens: &Lens) -> PinholeCamera {
    PinholeCamera::from_k(&lens.k)
        .unwrap()
        .with_distortion(Distortion::from_camera_info(&lens.model, &lens.d).unwrap())
}

/// Points OpenCV projected through a webcam lens (plumb_bob), a wide lens
/// (rational_polynomial) and a fisheye (equidistant): each pixel with the point's depth
/// gives the point back, and our projection gives OpenCV's pixel.
#[test]
fn lens_distortion_is_undone_as_opencv_projects_it() {
    let fixture = opencv_projections();
    assert_eq!(fixture.cases.len(), 3);
    for lens in &fixture.cases {
        let camera = camera(lens);
        assert!(
            lens.points.len() > 200,
            "{}: {} points",
            lens.model,
            lens.points.len()
        );
        for (p, [u, v]) in lens.points.iter().zip(&lens.pixels) {
            let point = nalgebra::Point3::new(p[0], p[1], p[2]);
            let back = camera
                .back_project(*u, *v, p[2])
                .unwrap_or_else(|| panic!("{}: no ray at ({u}, {v})", lens.model));
            assert!(
                (back - point).norm() < 1e-6 * p[2],
                "{}: pixel ({u}, {v}) gave {back}, OpenCV projected {point}",
                lens.model
            );
            let pixel = camera.project(&point);
            assert!(
                (pixel.x - u).abs() < 1e-6 && (pixel.y - v).abs() < 1e-6,
                "{}: {point} projected to {pixel}, OpenCV to ({u}, {v})",
                lens.model
            );
        }
    }
}

/// The cloud of a depth image from a distorted camera: every grid pixel's point lies on
/// the ray OpenCV finds for the pixel, at the pixel's depth. Where OpenCV finds none (its
/// fisheye undistortion clamps the distorted angle to 90 degrees, and this fisheye's
/// corners lie beyond: rays at 85-90 degrees), the point's ray must project back onto
/// its pixel through the lens (our projection is OpenCV's, test above).
#[test]
fn a_distorted_cameras_cloud_follows_opencvs_rays() {
    let fixture = opencv_projections();
    let (w, h) = (fixture.width, fixture.height);
    let z = 2.5f32;
    let prediction = Prediction {
        width: w,
        height: h,
        mode: Mode::Aleatoric,
        samples: 1,
        semantic: None,
        depth: Some(DepthPrediction {
            depth_m: FloatImage::from_pixel(w, h, image::Luma([z])),
            aleatoric_std_m: None,
            epistemic_std_m: None,
        }),
        device_colors: None,
        timing: Timing::default(),
    };
    let rgb = image::RgbImage::new(w, h);
    let options = CloudOptions {
        stride: fixture.stride,
        max_range_m: 0.0,
        max_depth_epistemic_m: 0.0,
        rectified: false,
    };
    for lens in &fixture.cases {
        let camera = camera(lens);
        let cloud = points(&prediction, &rgb, &camera, options).unwrap();
        let columns = w.div_ceil(fixture.stride) as usize;
        let mut beyond_opencv = 0;
        let expected: Vec<[f64; 2]> = (lens.grid_rays.iter().enumerate())
            .filter_map(|(i, ray)| {
                let pixel = nalgebra::Vector2::new(
                    ((i % columns) as u32 * fixture.stride) as f64,
                    ((i / columns) as u32 * fixture.stride) as f64,
                );
                ray.or_else(|| {
                    let ray = camera.ray(pixel.x, pixel.y)?;
                    let back = camera.project(&nalgebra::Point3::new(ray.x, ray.y, 1.0));
                    assert!(
                        (back - pixel).norm() < 1e-6,
                        "{}: {pixel} gave {ray}, projected to {back}",
                        lens.model
                    );
                    beyond_opencv += 1;
                    Some([ray.x, ray.y])
                })
            })
            .collect();
        if lens.model == "equidistant" {
            assert!(beyond_opencv > 0, "the fisheye's corners");
        }
        assert_eq!(
            cloud.len(),
            expected.len(),
            "{}: one point per ray",
            lens.model
        );
        for (p, [x, y]) in cloud.iter().zip(&expected) {
            let (ex, ey) = (x * z as f64, y * z as f64);
            assert!(
                (p.xyz[0] as f64 - ex).abs() < 1e-5 * (1.0 + ex.abs())
                    && (p.xyz[1] as f64 - ey).abs() < 1e-5 * (1.0 + ey.abs())
                    && p.xyz[2] == z,
                "{}: {:?} against ({ex}, {ey}, {z})",
                lens.model,
                p.xyz
            );
        }
    }
}

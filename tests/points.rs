//! The point cloud against geometry known exactly: a synthetic scene's ground-truth depth
//! back-projected with the camera it was rendered with puts the road on the ground plane,
//! the camera's height below the optical centre (REP 103: y down).

use bayes_perception::config::Mode;
use bayes_perception::engine::{DepthPrediction, Prediction, Timing};
use bayes_perception::msg::CameraInfo;
use bayes_perception::points::{points, CloudFilter, PinholeCamera};
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
        let camera = PinholeCamera::for_image(&info, 240, 180).unwrap();
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
        let filter = CloudFilter {
            stride: 1,
            max_range_m: 0.0,
            max_depth_epistemic_m: 0.0,
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

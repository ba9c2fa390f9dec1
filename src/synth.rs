//! Synthetic street scenes with exact CamVid labels and exact metric depth, rendered from a
//! pinhole camera over a flat ground plane, deterministic for a seed.
//!
//! A scene: sky, road with lane marks, pavements, building facades at several depths,
//! poles with signs, trees, cars, pedestrians and fences, under varied lighting. Phenomena
//! the two uncertainties should catch are put in on purpose:
//! - aleatoric: sensor-noise patches (recorded in a mask), motion blur, dark and dusk
//!   frames, thin structures and boundaries, far depth;
//! - epistemic: with `ood`, objects of shapes, textures and colours the normal scenes never
//!   contain (recorded in a mask; labelled void, since no class fits them).
//!
//! Depth is the distance along the optical axis (REP 118); sky has none (NaN).

use image::{GrayImage, Luma, Rgb, RgbImage};
use rand::{Rng, SeedableRng};
use rand_chacha::ChaCha8Rng;

use crate::colormap::FloatImage;

/// CamVid's 11 classes in id order, with the SegNet tutorial palette; id 11 is void.
pub const CAMVID_CLASSES: [(&str, [u8; 3]); 11] = [
    ("Sky", [128, 128, 128]),
    ("Building", [128, 0, 0]),
    ("Pole", [192, 192, 128]),
    ("Road", [128, 64, 128]),
    ("Pavement", [60, 40, 222]),
    ("Tree", [128, 128, 0]),
    ("SignSymbol", [192, 128, 128]),
    ("Fence", [64, 64, 128]),
    ("Car", [64, 0, 128]),
    ("Pedestrian", [64, 64, 0]),
    ("Bicyclist", [0, 128, 192]),
];
pub const SKY: u8 = 0;
pub const BUILDING: u8 = 1;
pub const POLE: u8 = 2;
pub const ROAD: u8 = 3;
pub const PAVEMENT: u8 = 4;
pub const TREE: u8 = 5;
pub const SIGN: u8 = 6;
pub const FENCE: u8 = 7;
pub const CAR: u8 = 8;
pub const PEDESTRIAN: u8 = 9;
pub const VOID: u8 = 11;

/// The pinhole camera a scene was rendered with (pixels and metres).
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Camera {
    pub focal_px: f64,
    pub cx: f64,
    /// Image row of the horizon.
    pub cy: f64,
    /// Height of the camera above the ground plane, metres.
    pub height_m: f64,
}

impl Camera {
    /// Depth of the ground plane seen at image row `v` (below the horizon).
    pub fn ground_depth(&self, v: f64) -> Option<f64> {
        (v > self.cy).then(|| self.focal_px * self.height_m / (v - self.cy))
    }
}

/// One rendered scene.
#[derive(Debug, Clone)]
pub struct Scene {
    pub rgb: RgbImage,
    /// Class ids 0..10, 11 = void.
    pub labels: GrayImage,
    /// Metres along the optical axis; NaN where there is no surface (sky).
    pub depth_m: FloatImage,
    /// 255 where a sensor-noise patch was added.
    pub noise_mask: GrayImage,
    /// 255 on out-of-distribution objects (only in `ood` scenes).
    pub ood_mask: GrayImage,
    pub camera: Camera,
}

/// What to render.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct SceneConfig {
    pub width: u32,
    pub height: u32,
    /// Add out-of-distribution objects.
    pub ood: bool,
    /// Range of the standard deviation (in 8-bit grey levels) of the sensor-noise
    /// patches; each patch draws its own value from it.
    pub noise_sigma: (f32, f32),
}

impl SceneConfig {
    /// The default noise-patch strength: standard deviation 60 to 130 grey levels, strong
    /// enough that a patch hides most of what is under it (at 35 to 70 a network sees
    /// through the noise on these flat surfaces, so there is little to be uncertain about).
    pub const NOISE_SIGMA: (f32, f32) = (60.0, 130.0);
}

/// The per-pixel buffers objects are painted into, nearest surface wins.
struct Canvas {
    width: u32,
    height: u32,
    color: Vec<[f32; 3]>,
    label: Vec<u8>,
    depth: Vec<f64>,
    ood: Vec<bool>,
}

impl Canvas {
    fn paint(&mut self, u: i64, v: i64, depth: f64, label: u8, color: [f32; 3]) {
        if u < 0 || v < 0 || u >= self.width as i64 || v >= self.height as i64 {
            return;
        }
        let i = v as usize * self.width as usize + u as usize;
        if depth < self.depth[i] {
            self.depth[i] = depth;
            self.label[i] = label;
            self.color[i] = color;
            self.ood[i] = false;
        }
    }
}

fn jitter(rng: &mut ChaCha8Rng, c: [u8; 3], amount: f32) -> [f32; 3] {
    c.map(|v| (v as f32 + rng.gen_range(-amount..=amount)).clamp(0.0, 255.0))
}

/// Renders scene `index` of the stream seeded by `seed`: same inputs, same scene.
pub fn render(seed: u64, index: u64, cfg: SceneConfig) -> Scene {
    let mut rng = ChaCha8Rng::seed_from_u64(seed.wrapping_mul(0x9E37_79B9_7F4A_7C15) ^ index);
    let (w, h) = (cfg.width, cfg.height);
    let camera = Camera {
        focal_px: w as f64 * rng.gen_range(0.75..0.95),
        cx: w as f64 / 2.0 + rng.gen_range(-0.03..0.03) * w as f64,
        cy: h as f64 * rng.gen_range(0.40..0.50),
        height_m: rng.gen_range(1.3..1.7),
    };
    let n = (w * h) as usize;
    let mut canvas = Canvas {
        width: w,
        height: h,
        color: vec![[0.0; 3]; n],
        label: vec![SKY; n],
        depth: vec![f64::INFINITY; n],
        ood: vec![false; n],
    };

    // Sky: a vertical gradient; no depth.
    let sky_top = jitter(&mut rng, [90, 140, 210], 25.0);
    let sky_low = jitter(&mut rng, [190, 210, 230], 20.0);
    for v in 0..h {
        let t = (v as f32 / camera.cy.max(1.0) as f32).min(1.0);
        let c = [0, 1, 2].map(|k| sky_top[k] * (1.0 - t) + sky_low[k] * t);
        for u in 0..w {
            canvas.color[(v * w + u) as usize] = c;
        }
    }

    // Ground: road with lane marks, pavements either side.
    let road_half = rng.gen_range(3.0..6.0);
    let pavement = rng.gen_range(1.5..3.5);
    let road_color = jitter(&mut rng, [80, 80, 85], 12.0);
    let pave_color = jitter(&mut rng, [150, 140, 130], 20.0);
    let dash = rng.gen_range(2.0..4.0);
    for v in 0..h {
        let Some(z) = camera.ground_depth(v as f64 + 0.5) else {
            continue;
        };
        for u in 0..w {
            let x = (u as f64 + 0.5 - camera.cx) * z / camera.focal_px;
            let (label, color) = if x.abs() < road_half {
                let lane = x.abs() < 0.08 && (z / dash).floor() as i64 % 2 == 0;
                (
                    ROAD,
                    if lane {
                        [235.0, 235.0, 225.0]
                    } else {
                        road_color
                    },
                )
            } else {
                (PAVEMENT, pave_color)
            };
            canvas.paint(u as i64, v as i64, z, label, color);
        }
    }

    // Building facades: planes parallel to the road at the far edge of the pavements,
    // split into buildings of different heights and colours, with windows.
    let facade_x = road_half + pavement;
    for side in [-1.0f64, 1.0] {
        let mut z = rng.gen_range(2.0..8.0);
        while z < 120.0 {
            let length = rng.gen_range(8.0..25.0);
            let height = rng.gen_range(5.0..22.0);
            let base = jitter(&mut rng, [150, 110, 90], 40.0);
            let gap = if rng.gen_bool(0.3) {
                rng.gen_range(2.0..6.0)
            } else {
                0.0
            };
            for u in 0..w {
                let du = (u as f64 + 0.5 - camera.cx) * side;
                if du <= 0.0 {
                    continue;
                }
                let depth = camera.focal_px * facade_x / du;
                if depth < z || depth > z + length {
                    continue;
                }
                let v_ground = camera.cy + camera.focal_px * camera.height_m / depth;
                let v_top = camera.cy + camera.focal_px * (camera.height_m - height) / depth;
                for v in v_top.max(0.0) as i64..v_ground.min(h as f64) as i64 {
                    let y_up =
                        camera.height_m - (v as f64 + 0.5 - camera.cy) * depth / camera.focal_px;
                    let window = (depth - z) % 3.0 < 1.4
                        && y_up % 3.2 > 1.2
                        && y_up % 3.2 < 2.6
                        && y_up > 1.0;
                    let color = if window {
                        [base[0] * 0.35, base[1] * 0.4, base[2] * 0.55]
                    } else {
                        base
                    };
                    canvas.paint(u as i64, v, depth, BUILDING, color);
                }
            }
            z += length + gap;
        }
    }

    // Objects on the ground, each a set of fronto-parallel shapes at one depth.
    let mut objects: Vec<Object> = Vec::new();
    for _ in 0..rng.gen_range(2..7) {
        let lane = if rng.gen_bool(0.5) { -1.0 } else { 1.0 } * road_half * rng.gen_range(0.2..0.7);
        let depth = rng.gen_range(6.0..70.0);
        objects.push(Object::car(&mut rng, lane, depth));
    }
    for _ in 0..rng.gen_range(0..5) {
        let x =
            if rng.gen_bool(0.5) { -1.0 } else { 1.0 } * (road_half + rng.gen_range(0.3..pavement));
        let depth = rng.gen_range(4.0..40.0);
        objects.push(Object::pedestrian(&mut rng, x, depth));
    }
    for side in [-1.0, 1.0] {
        let mut z = rng.gen_range(4.0..12.0);
        while z < 80.0 {
            let x = side * (road_half + 0.4);
            if rng.gen_bool(0.5) {
                objects.push(Object::pole(&mut rng, x, z));
            } else {
                objects.push(Object::tree(
                    &mut rng,
                    side * (road_half + pavement * 0.6),
                    z,
                ));
            }
            z += rng.gen_range(8.0..20.0);
        }
        if rng.gen_bool(0.4) {
            let depth = rng.gen_range(5.0..30.0);
            objects.push(Object::fence(&mut rng, side * (facade_x - 0.3), depth));
        }
    }
    if cfg.ood {
        for _ in 0..rng.gen_range(1..4) {
            let x = rng.gen_range(-road_half..road_half);
            let depth = rng.gen_range(6.0..30.0);
            objects.push(Object::out_of_distribution(&mut rng, x, depth));
        }
    }
    objects.sort_by(|a, b| b.depth.total_cmp(&a.depth));
    for object in &objects {
        object.draw(&mut canvas, &camera);
    }

    // Lighting, blur, noise.
    let mut brightness = rng.gen_range(0.7..1.2f32);
    let dark = rng.gen_bool(0.1);
    if dark {
        brightness *= 0.3;
    }
    let dusk = rng.gen_bool(0.2);
    let tint = if dusk {
        [1.1, 0.85, 0.7]
    } else {
        [1.0, 1.0, 1.0]
    };
    let mut rgb = RgbImage::new(w, h);
    for (i, c) in canvas.color.iter().enumerate() {
        let noisy = [0, 1, 2].map(|k| {
            (c[k] * brightness * tint[k] + gaussian(&mut rng) * 2.0).clamp(0.0, 255.0) as u8
        });
        rgb.put_pixel(i as u32 % w, i as u32 / w, Rgb(noisy));
    }
    if rng.gen_bool(0.15) {
        rgb = image::imageops::blur(&rgb, rng.gen_range(1.0..2.5));
    }
    let mut noise_mask = GrayImage::new(w, h);
    for _ in 0..rng.gen_range(0..4) {
        let (pw, ph) = (
            rng.gen_range(w / 12..w / 4).max(1),
            rng.gen_range(h / 12..h / 4).max(1),
        );
        let (x0, y0) = (
            rng.gen_range(0..w - pw.min(w - 1)),
            rng.gen_range(0..h - ph.min(h - 1)),
        );
        let (lo, hi) = cfg.noise_sigma;
        // One draw either way, so the strength changes nothing else in the scene.
        let sigma = if lo < hi {
            rng.gen_range(lo..hi)
        } else {
            let _ = rng.gen::<f32>();
            lo
        };
        for y in y0..(y0 + ph).min(h) {
            for x in x0..(x0 + pw).min(w) {
                let p = rgb.get_pixel_mut(x, y);
                p.0 =
                    p.0.map(|v| (v as f32 + gaussian(&mut rng) * sigma).clamp(0.0, 255.0) as u8);
                noise_mask.put_pixel(x, y, Luma([255]));
            }
        }
    }

    let labels = GrayImage::from_fn(w, h, |u, v| {
        let i = (v * w + u) as usize;
        Luma([if canvas.ood[i] { VOID } else { canvas.label[i] }])
    });
    let depth_m = FloatImage::from_fn(w, h, |u, v| {
        let d = canvas.depth[(v * w + u) as usize];
        Luma([if d.is_finite() { d as f32 } else { f32::NAN }])
    });
    let ood_mask = GrayImage::from_fn(w, h, |u, v| {
        Luma([if canvas.ood[(v * w + u) as usize] {
            255
        } else {
            0
        }])
    });
    Scene {
        rgb,
        labels,
        depth_m,
        noise_mask,
        ood_mask,
        camera,
    }
}

/// Standard normal sample (Box-Muller).
fn gaussian(rng: &mut ChaCha8Rng) -> f32 {
    let (a, b): (f32, f32) = (rng.gen_range(f32::EPSILON..1.0), rng.gen());
    (-2.0 * a.ln()).sqrt() * (std::f32::consts::TAU * b).cos()
}

/// A shape on an object, in metres relative to the object's ground point (x right, y up).
#[derive(Debug, Clone)]
enum Shape {
    Rect { x0: f64, x1: f64, y0: f64, y1: f64 },
    Ellipse { cx: f64, cy: f64, rx: f64, ry: f64 },
}

#[derive(Debug, Clone)]
struct Part {
    shape: Shape,
    label: u8,
    color: [f32; 3],
    /// Checkerboard of two colours (period in metres) for textures.
    checker: Option<([f32; 3], f64)>,
}

#[derive(Debug, Clone)]
struct Object {
    x: f64,
    depth: f64,
    parts: Vec<Part>,
    ood: bool,
}

impl Object {
    fn part(shape: Shape, label: u8, color: [f32; 3]) -> Part {
        Part {
            shape,
            label,
            color,
            checker: None,
        }
    }

    fn car(rng: &mut ChaCha8Rng, x: f64, depth: f64) -> Self {
        let width = rng.gen_range(1.6..2.0);
        const PAINTS: [[u8; 3]; 5] = [
            [180, 30, 30],
            [30, 60, 160],
            [200, 200, 200],
            [40, 40, 40],
            [220, 180, 40],
        ];
        let paint = PAINTS[rng.gen_range(0..PAINTS.len())];
        let body = jitter(rng, paint, 20.0);
        let hw = width / 2.0;
        let parts = vec![
            Self::part(
                Shape::Rect {
                    x0: -hw,
                    x1: hw,
                    y0: 0.25,
                    y1: 1.0,
                },
                CAR,
                body,
            ),
            Self::part(
                Shape::Rect {
                    x0: -hw * 0.8,
                    x1: hw * 0.8,
                    y0: 1.0,
                    y1: 1.5,
                },
                CAR,
                [60.0, 70.0, 90.0],
            ),
            Self::part(
                Shape::Ellipse {
                    cx: -hw * 0.7,
                    cy: 0.3,
                    rx: 0.3,
                    ry: 0.3,
                },
                CAR,
                [20.0, 20.0, 20.0],
            ),
            Self::part(
                Shape::Ellipse {
                    cx: hw * 0.7,
                    cy: 0.3,
                    rx: 0.3,
                    ry: 0.3,
                },
                CAR,
                [20.0, 20.0, 20.0],
            ),
        ];
        Object {
            x,
            depth,
            parts,
            ood: false,
        }
    }

    fn pedestrian(rng: &mut ChaCha8Rng, x: f64, depth: f64) -> Self {
        let height = rng.gen_range(1.5..1.9);
        let clothes = jitter(rng, [70, 60, 110], 50.0);
        let parts = vec![
            Self::part(
                Shape::Rect {
                    x0: -0.22,
                    x1: 0.22,
                    y0: 0.0,
                    y1: height * 0.82,
                },
                PEDESTRIAN,
                clothes,
            ),
            Self::part(
                Shape::Ellipse {
                    cx: 0.0,
                    cy: height * 0.9,
                    rx: 0.12,
                    ry: 0.12,
                },
                PEDESTRIAN,
                [210.0, 170.0, 140.0],
            ),
        ];
        Object {
            x,
            depth,
            parts,
            ood: false,
        }
    }

    fn pole(rng: &mut ChaCha8Rng, x: f64, depth: f64) -> Self {
        let height = rng.gen_range(3.0..6.0);
        let mut parts = vec![Self::part(
            Shape::Rect {
                x0: -0.06,
                x1: 0.06,
                y0: 0.0,
                y1: height,
            },
            POLE,
            [110.0, 110.0, 105.0],
        )];
        if rng.gen_bool(0.5) {
            let color = [[200, 30, 30], [30, 80, 200], [230, 200, 40]][rng.gen_range(0..3)]
                .map(|c| c as f32);
            parts.push(Self::part(
                Shape::Rect {
                    x0: -0.35,
                    x1: 0.35,
                    y0: height - 0.8,
                    y1: height - 0.1,
                },
                SIGN,
                color,
            ));
        }
        Object {
            x,
            depth,
            parts,
            ood: false,
        }
    }

    fn tree(rng: &mut ChaCha8Rng, x: f64, depth: f64) -> Self {
        let height = rng.gen_range(3.0..7.0);
        let green = jitter(rng, [60, 120, 50], 25.0);
        let parts = vec![
            Self::part(
                Shape::Rect {
                    x0: -0.15,
                    x1: 0.15,
                    y0: 0.0,
                    y1: height * 0.5,
                },
                TREE,
                [90.0, 65.0, 40.0],
            ),
            Self::part(
                Shape::Ellipse {
                    cx: 0.0,
                    cy: height * 0.65,
                    rx: height * 0.3,
                    ry: height * 0.35,
                },
                TREE,
                green,
            ),
        ];
        Object {
            x,
            depth,
            parts,
            ood: false,
        }
    }

    fn fence(rng: &mut ChaCha8Rng, x: f64, depth: f64) -> Self {
        let length = rng.gen_range(3.0..8.0);
        let mut part = Self::part(
            Shape::Rect {
                x0: -length / 2.0,
                x1: length / 2.0,
                y0: 0.0,
                y1: 1.1,
            },
            FENCE,
            [120.0, 100.0, 80.0],
        );
        part.checker = Some(([80.0, 65.0, 50.0], 0.25));
        Object {
            x,
            depth,
            parts: vec![part],
            ood: false,
        }
    }

    /// Shapes and colours the normal scenes never contain: saturated magenta / cyan / lime
    /// checkerboards on diamonds and discs.
    fn out_of_distribution(rng: &mut ChaCha8Rng, x: f64, depth: f64) -> Self {
        let size = rng.gen_range(0.8..2.5);
        let palette = [
            [255.0, 0.0, 255.0],
            [0.0, 255.0, 255.0],
            [180.0, 255.0, 0.0],
        ];
        let (a, b) = (palette[rng.gen_range(0..3)], palette[rng.gen_range(0..3)]);
        let mut parts = vec![Part {
            shape: Shape::Ellipse {
                cx: 0.0,
                cy: size,
                rx: size,
                ry: size,
            },
            label: VOID,
            color: a,
            checker: Some((b, size / 4.0)),
        }];
        if rng.gen_bool(0.5) {
            parts.push(Part {
                shape: Shape::Rect {
                    x0: -size * 0.2,
                    x1: size * 0.2,
                    y0: 0.0,
                    y1: size * 2.6,
                },
                label: VOID,
                color: b,
                checker: Some((a, size / 8.0)),
            });
        }
        Object {
            x,
            depth,
            parts,
            ood: true,
        }
    }

    fn draw(&self, canvas: &mut Canvas, camera: &Camera) {
        let to_u = |x: f64| camera.cx + camera.focal_px * (self.x + x) / self.depth;
        let to_v = |y: f64| camera.cy + camera.focal_px * (camera.height_m - y) / self.depth;
        let from_u = |u: f64| (u - camera.cx) * self.depth / camera.focal_px - self.x;
        let from_v = |v: f64| camera.height_m - (v - camera.cy) * self.depth / camera.focal_px;
        for part in &self.parts {
            let (x0, x1, y0, y1) = match part.shape {
                Shape::Rect { x0, x1, y0, y1 } => (x0, x1, y0, y1),
                Shape::Ellipse { cx, cy, rx, ry } => (cx - rx, cx + rx, cy - ry, cy + ry),
            };
            // Thin structures stay at least one pixel wide.
            let (u0, u1) = (
                to_u(x0).floor() as i64,
                (to_u(x1).ceil() as i64).max(to_u(x0).floor() as i64 + 1),
            );
            let (v0, v1) = (to_v(y1).floor() as i64, to_v(y0).ceil() as i64);
            for v in v0.max(0)..v1.min(canvas.height as i64) {
                for u in u0.max(0)..u1.min(canvas.width as i64) {
                    let (x, y) = (from_u(u as f64 + 0.5), from_v(v as f64 + 0.5));
                    let inside = match part.shape {
                        Shape::Rect { .. } => true,
                        Shape::Ellipse { cx, cy, rx, ry } => {
                            ((x - cx) / rx).powi(2) + ((y - cy) / ry).powi(2) <= 1.0
                        }
                    };
                    if !inside {
                        continue;
                    }
                    let color = match part.checker {
                        Some((other, period))
                            if ((x / period).floor() + (y / period).floor()) as i64 % 2 != 0 =>
                        {
                            other
                        }
                        _ => part.color,
                    };
                    let before = canvas.depth[(v as usize) * canvas.width as usize + u as usize];
                    canvas.paint(u, v, self.depth, part.label, color);
                    if self.ood && self.depth < before {
                        canvas.ood[(v as usize) * canvas.width as usize + u as usize] = true;
                    }
                }
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const CFG: SceneConfig = SceneConfig {
        width: 160,
        height: 120,
        ood: false,
        noise_sigma: SceneConfig::NOISE_SIGMA,
    };

    #[test]
    fn deterministic_for_a_seed_and_different_across_seeds() {
        let a = render(7, 3, CFG);
        let b = render(7, 3, CFG);
        assert_eq!(a.rgb, b.rgb);
        assert_eq!(a.labels, b.labels);
        assert!(a
            .depth_m
            .iter()
            .zip(b.depth_m.iter())
            .all(|(x, y)| x.to_bits() == y.to_bits()));
        assert_ne!(render(8, 3, CFG).rgb, a.rgb);
        assert_ne!(render(7, 4, CFG).rgb, a.rgb);
    }

    #[test]
    fn noise_strength_changes_only_the_noise_patches() {
        let strong = SceneConfig {
            noise_sigma: (150.0, 150.0),
            ..CFG
        };
        let mut patched_frames = 0;
        for index in 0..6 {
            let (a, b) = (render(2, index, CFG), render(2, index, strong));
            assert_eq!(a.labels, b.labels);
            assert_eq!(a.noise_mask, b.noise_mask);
            let mut differ_inside = 0;
            for ((pa, pb), m) in a
                .rgb
                .pixels()
                .zip(b.rgb.pixels())
                .zip(a.noise_mask.pixels())
            {
                match m.0[0] {
                    0 => assert_eq!(pa, pb, "a clean pixel changed"),
                    _ => differ_inside += (pa != pb) as usize,
                }
            }
            if a.noise_mask.pixels().any(|m| m.0[0] > 0) {
                patched_frames += 1;
                assert!(differ_inside > 0, "scene {index}: patches unchanged");
            }
        }
        assert!(patched_frames > 0, "no scene had a noise patch");
    }

    #[test]
    fn road_depth_follows_the_camera_model_and_labels_agree_with_depth() {
        for index in 0..5 {
            let scene = render(1, index, CFG);
            let mut road_pixels = 0;
            for (u, v, label) in scene.labels.enumerate_pixels() {
                let d = scene.depth_m.get_pixel(u, v).0[0];
                match label.0[0] {
                    SKY => assert!(d.is_nan(), "sky with depth at ({u}, {v})"),
                    l => {
                        assert!(l <= VOID, "label {l}");
                        assert!(
                            d.is_finite() && d > 0.0,
                            "label {l} without depth at ({u}, {v})"
                        );
                    }
                }
                if label.0[0] == ROAD {
                    // Road is ground: its depth is the ground plane's at that row, unless
                    // an object stands nearer (then it would not be labelled road).
                    let expected = scene.camera.ground_depth(v as f64 + 0.5).unwrap() as f32;
                    assert!(
                        (d - expected).abs() <= 1e-3 * expected,
                        "road depth {d} vs {expected} at row {v}"
                    );
                    road_pixels += 1;
                }
            }
            assert!(
                road_pixels > 100,
                "scene {index} has {road_pixels} road pixels"
            );
            // Every class of the main scene layout appears somewhere.
            let present: std::collections::HashSet<u8> =
                scene.labels.pixels().map(|p| p.0[0]).collect();
            for class in [SKY, ROAD, PAVEMENT] {
                assert!(
                    present.contains(&class),
                    "scene {index} lacks class {class}"
                );
            }
            assert!(
                scene.ood_mask.pixels().all(|p| p.0[0] == 0),
                "OOD pixels in a normal scene"
            );
        }
    }

    #[test]
    fn ood_scenes_mark_their_novel_objects_as_void_and_in_the_mask() {
        let cfg = SceneConfig { ood: true, ..CFG };
        let mut ood_pixels = 0;
        for index in 0..5 {
            let scene = render(2, index, cfg);
            for (u, v, m) in scene.ood_mask.enumerate_pixels() {
                if m.0[0] == 255 {
                    ood_pixels += 1;
                    assert_eq!(scene.labels.get_pixel(u, v).0[0], VOID);
                    assert!(scene.depth_m.get_pixel(u, v).0[0].is_finite());
                }
            }
        }
        assert!(ood_pixels > 200, "{ood_pixels} OOD pixels in 5 scenes");
    }
}

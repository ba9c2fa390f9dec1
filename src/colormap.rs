//! False colour for float images and class palettes, with optional colour bars.
//!
//! Fixed colormaps and fixed ranges (from the params file), never per-image normalisation,
//! so the same value has the same colour in every frame:
//! - depth: `turbo` (near = blue, far = red), range `colormap.depth_min_m..depth_max_m`;
//! - uncertainties: `inferno` (black = certain, yellow = uncertain), range 0..max.
//!
//! Values are clamped to the range; NaN (invalid depth) is drawn black.

use image::{ImageBuffer, Luma, Rgb, RgbImage};

use crate::config::ColormapParams;

pub type FloatImage = ImageBuffer<Luma<f32>, Vec<f32>>;

/// A named colormap.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Colormap {
    Turbo,
    Inferno,
}

/// Entries of a colormap's lookup table: steps of 1/4095 over [0, 1], finer than 8-bit
/// colour resolves (neighbouring entries differ by at most one level per channel).
const LUT_SIZE: usize = 4096;

impl Colormap {
    fn gradient(self) -> colorous::Gradient {
        match self {
            Colormap::Turbo => colorous::TURBO,
            Colormap::Inferno => colorous::INFERNO,
        }
    }

    /// The colormap sampled at `LUT_SIZE` evenly spaced points, built once, and black
    /// after them (entry `LUT_SIZE`, the colour of NaN). Colouring a pixel is then a table
    /// look-up instead of a spline evaluation in f64 (the node colours several full images
    /// per frame).
    fn table(self) -> &'static [[u8; 3]; LUT_SIZE + 1] {
        static TURBO: std::sync::OnceLock<Box<[[u8; 3]; LUT_SIZE + 1]>> =
            std::sync::OnceLock::new();
        static INFERNO: std::sync::OnceLock<Box<[[u8; 3]; LUT_SIZE + 1]>> =
            std::sync::OnceLock::new();
        let cell = match self {
            Colormap::Turbo => &TURBO,
            Colormap::Inferno => &INFERNO,
        };
        cell.get_or_init(|| {
            let gradient = self.gradient();
            let mut table = Box::new([[0u8; 3]; LUT_SIZE + 1]);
            for (i, entry) in table.iter_mut().take(LUT_SIZE).enumerate() {
                let c = gradient.eval_continuous(i as f64 / (LUT_SIZE - 1) as f64);
                *entry = [c.r, c.g, c.b];
            }
            table
        })
    }

    /// The colour of `t` in [0, 1] (clamped; NaN counts as 0).
    pub fn at(self, t: f64) -> Rgb<u8> {
        Rgb(self.table()[lut_index(t)])
    }
}

/// The table entry nearest to `t` (clamped to [0, 1]; NaN → 0).
fn lut_index(t: f64) -> usize {
    let t = if t.is_nan() { 0.0 } else { t.clamp(0.0, 1.0) };
    // Rounds to nearest (t >= 0) without `f64::round`, a libm call.
    (t * (LUT_SIZE - 1) as f64 + 0.5) as usize
}

/// What a false-colour image shows: colormap, value range and unit.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct ColorScale {
    pub colormap: Colormap,
    pub min: f64,
    pub max: f64,
    pub unit: &'static str,
}

impl ColorScale {
    pub fn depth(c: &ColormapParams) -> Self {
        ColorScale {
            colormap: Colormap::Turbo,
            min: c.depth_min_m,
            max: c.depth_max_m,
            unit: "m",
        }
    }

    pub fn uncertainty(max: f64, unit: &'static str) -> Self {
        ColorScale {
            colormap: Colormap::Inferno,
            min: 0.0,
            max,
            unit,
        }
    }

    /// The range of the per-class confidence (probability of the label).
    pub fn confidence() -> Self {
        ColorScale {
            colormap: Colormap::Inferno,
            min: 0.0,
            max: 1.0,
            unit: "",
        }
    }

    pub fn color(&self, value: f32) -> Rgb<u8> {
        let (min, scale) = self.index_scale();
        Rgb(self.colormap.table()[table_index(value, min, scale)])
    }

    /// The whole image in false colour: [`ColorScale::color`] of each pixel, in one pass
    /// over the raw values.
    pub fn colorize(&self, image: &FloatImage) -> RgbImage {
        let (table, (min, scale)) = (self.colormap.table(), self.index_scale());
        let mut data = Vec::with_capacity(image.as_raw().len() * 3);
        data.extend(
            image
                .as_raw()
                .iter()
                .flat_map(|&v| table[table_index(v, min, scale)]),
        );
        RgbImage::from_raw(image.width(), image.height(), data).expect("3 bytes per pixel")
    }

    /// `(min, scale)` such that `(value - min) * scale + 0.5`, truncated, is the table
    /// entry nearest to `value`'s place in the range (before clamping).
    fn index_scale(&self) -> (f32, f32) {
        (
            self.min as f32,
            ((LUT_SIZE - 1) as f64 / (self.max - self.min)) as f32,
        )
    }
}

/// The table entry of `value` (see [`ColorScale::index_scale`]): clamped to the range,
/// `LUT_SIZE` (black) for NaN. In f32 and without a branch on the value's range: colouring
/// is about 1.5x faster than in f64, and a value within a few 1e-7 of the range from the
/// boundary between two neighbouring entries may get the other one (a colour within one
/// level). `value - min` first, so a range far from 0 (depth 100-100.5 m) loses nothing
/// to cancellation.
#[inline]
fn table_index(value: f32, min: f32, scale: f32) -> usize {
    // Through u16 (the table has 4097 entries): a float to 16-bit conversion is one
    // instruction, to usize several.
    let i = ((value - min) * scale + 0.5).clamp(0.5, LUT_SIZE as f32 - 0.5) as u16 as usize;
    if value.is_nan() {
        LUT_SIZE
    } else {
        i
    }
}

/// False colour made where the outputs are, on a libtorch device (`bench
/// --device-colors`): the same table entries as [`ColorScale::colorize`] and
/// [`colorize_labels`] give on the host, byte for byte (the index is computed with the
/// same f32 operations, one per tensor operation, so nothing is fused differently), in one
/// gather over every plane. The tables (both colormaps and the model's palette, 25 kB) go
/// to the device once.
#[derive(Debug)]
pub struct DeviceColoring {
    /// `[2 * (LUT_SIZE + 1) + palette, 3]` u8: turbo, inferno, then the class colours.
    table: tch::Tensor,
    palette_len: i64,
}

/// Where each table starts in [`DeviceColoring`]'s table.
const TURBO_BASE: i64 = 0;
const INFERNO_BASE: i64 = LUT_SIZE as i64 + 1;
const PALETTE_BASE: i64 = 2 * (LUT_SIZE as i64 + 1);

impl DeviceColoring {
    pub fn new(palette: &[[u8; 3]], device: tch::Device) -> Self {
        let mut bytes: Vec<u8> = Vec::with_capacity((PALETTE_BASE as usize + palette.len()) * 3);
        for colormap in [Colormap::Turbo, Colormap::Inferno] {
            bytes.extend(colormap.table().iter().flatten());
        }
        bytes.extend(palette.iter().flatten());
        let rows = bytes.len() as i64 / 3;
        DeviceColoring {
            table: tch::Tensor::from_slice(&bytes)
                .view([rows, 3])
                .to_device(device),
            palette_len: palette.len() as i64,
        }
    }

    /// `planes` (`[H, W]` fp32 each, with their scales) and `labels` (`[H, W]` class ids,
    /// any integer kind) coloured: `[N, H, W, 3]` u8, the planes first, then the labels
    /// (ids outside the palette black).
    pub fn colorize(
        &self,
        planes: &[(tch::Tensor, ColorScale)],
        labels: Option<&tch::Tensor>,
    ) -> tch::Tensor {
        use tch::Kind;
        let mut indices: Vec<tch::Tensor> = planes
            .iter()
            .map(|(plane, scale)| {
                let (min, step) = scale.index_scale();
                let base = match scale.colormap {
                    Colormap::Turbo => TURBO_BASE,
                    Colormap::Inferno => INFERNO_BASE,
                };
                // As `table_index`: ((value - min) * scale + 0.5), clamped and truncated,
                // NaN to the black entry after the table; one f32 operation at a time.
                let at = (plane.to_kind(Kind::Float) - f64::from(min)) * f64::from(step) + 0.5;
                at.clamp(0.5, LUT_SIZE as f64 - 0.5)
                    .nan_to_num(Some(LUT_SIZE as f64), None, None)
                    .to_kind(Kind::Int64)
                    + base
            })
            .collect();
        if let Some(labels) = labels {
            let ids = labels.to_kind(Kind::Int64);
            let known = ids.ge(0).logical_and(&ids.lt(self.palette_len));
            // The black entry after the turbo table for ids without a colour.
            indices.push((ids + PALETTE_BASE).where_scalarother(&known, LUT_SIZE as i64));
        }
        let indices = tch::Tensor::stack(&indices, 0);
        let shape = indices.size();
        self.table
            .index_select(0, &indices.view(-1))
            .view([shape[0], shape[1], shape[2], 3])
    }
}

/// Label ids (row-major, `width * height` of them) to colours; ids outside the palette are
/// drawn black.
pub fn colorize_labels(
    width: u32,
    height: u32,
    ids: impl Iterator<Item = usize>,
    palette: &[[u8; 3]],
) -> RgbImage {
    let mut data = vec![0u8; width as usize * height as usize * 3];
    for (rgb, id) in data.chunks_exact_mut(3).zip(ids) {
        rgb.copy_from_slice(palette.get(id).unwrap_or(&[0, 0, 0]));
    }
    RgbImage::from_raw(width, height, data).expect("one label per pixel")
}

/// A well-spread colour for class `i` (golden-ratio hue steps), for models without a
/// palette of their own.
pub fn distinct_color(i: usize) -> [u8; 3] {
    let hue = (i as f64 * 0.618_033_988_75).fract();
    let c = colorous::SINEBOW.eval_continuous(hue);
    [c.r, c.g, c.b]
}

/// Height in pixels of the bar appended by [`with_colorbar`].
const BAR_HEIGHT: u32 = 12;
const TEXT_ROW: u32 = 10;

/// The image with a colour bar below it: the gradient from `min` to `max`, and the two
/// ends labelled with their values and unit.
pub fn with_colorbar(image: &RgbImage, scale: &ColorScale) -> RgbImage {
    let (w, h) = image.dimensions();
    let mut out = RgbImage::from_pixel(w, h + BAR_HEIGHT + TEXT_ROW + 2, Rgb([255, 255, 255]));
    image::imageops::replace(&mut out, image, 0, 0);
    for x in 0..w {
        let t = if w > 1 {
            x as f64 / (w - 1) as f64
        } else {
            0.0
        };
        let color = scale.colormap.at(t);
        for y in h + 1..h + 1 + BAR_HEIGHT {
            out.put_pixel(x, y, color);
        }
    }
    let text_y = h + 2 + BAR_HEIGHT;
    let low = format!("{}{}", format_value(scale.min), scale.unit);
    let high = format!("{}{}", format_value(scale.max), scale.unit);
    draw_text(&mut out, &low, 1, text_y);
    let high_x = w.saturating_sub(8 * high.len() as u32 + 1);
    draw_text(&mut out, &high, high_x, text_y);
    out
}

/// A bar's end value to three significant digits, trailing zeros dropped (0.125, 0.004,
/// 2, 80): a range of a few thousandths is not labelled 0 to 0.
fn format_value(v: f64) -> String {
    if v == 0.0 || !v.is_finite() {
        return format!("{v}");
    }
    let digits = (2 - v.abs().log10().floor() as i64).clamp(0, 12) as usize;
    let s = format!("{v:.digits$}");
    if s.contains('.') {
        s.trim_end_matches('0').trim_end_matches('.').to_owned()
    } else {
        s
    }
}

/// Draws ASCII text in black with the 8x8 bitmap font; clipped at the image edge.
pub fn draw_text(image: &mut RgbImage, text: &str, x0: u32, y0: u32) {
    use font8x8::UnicodeFonts;
    for (i, ch) in text.chars().enumerate() {
        let Some(glyph) = font8x8::BASIC_FONTS.get(ch) else {
            continue;
        };
        for (row, bits) in glyph.iter().enumerate() {
            for col in 0..8 {
                if bits & (1 << col) != 0 {
                    let (x, y) = (x0 + i as u32 * 8 + col, y0 + row as u32);
                    if x < image.width() && y < image.height() {
                        image.put_pixel(x, y, Rgb([0, 0, 0]));
                    }
                }
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_lookup_table_follows_the_colormap_within_one_level() {
        for colormap in [Colormap::Turbo, Colormap::Inferno] {
            let exact = |t: f64| {
                let c = colormap.gradient().eval_continuous(t);
                [c.r, c.g, c.b]
            };
            assert_eq!(colormap.at(0.0).0, exact(0.0));
            assert_eq!(colormap.at(1.0).0, exact(1.0));
            for i in 0..=10_000 {
                let t = i as f64 / 10_000.0;
                let (got, want) = (colormap.at(t).0, exact(t));
                for c in 0..3 {
                    assert!(
                        (got[c] as i32 - want[c] as i32).abs() <= 1,
                        "{colormap:?} at {t}: {got:?} against {want:?}"
                    );
                }
            }
        }
    }

    #[test]
    fn colorize_gives_each_pixel_its_color() {
        let scale = ColorScale::uncertainty(2.0, "nats");
        let values = [
            0.0,
            0.3,
            1.0,
            1.999,
            2.0,
            5.0,
            -1.0,
            f32::NAN,
            f32::INFINITY,
        ];
        let image = FloatImage::from_raw(3, 3, values.to_vec()).unwrap();
        let colored = scale.colorize(&image);
        for (i, &v) in values.iter().enumerate() {
            let (x, y) = (i as u32 % 3, i as u32 / 3);
            assert_eq!(*colored.get_pixel(x, y), scale.color(v), "value {v}");
        }
        assert_eq!(*colored.get_pixel(1, 2), Rgb([0, 0, 0]), "NaN is black");
    }

    /// The f32 index is the nearest table entry (in exact arithmetic) for values across and
    /// beyond the range, except within a hair of a boundary between two entries, where it
    /// may be the neighbour; ends clamp, NaN is the black entry.
    #[test]
    fn table_index_is_the_nearest_entry() {
        for (min, max) in [(0.0, 1.0), (0.0, 0.3), (0.5, 80.0), (100.0, 100.5)] {
            let scale = ColorScale {
                colormap: Colormap::Turbo,
                min,
                max,
                unit: "",
            };
            let (lo, k) = scale.index_scale();
            for i in -1000..=101_000 {
                let v = (min + (max - min) * i as f64 / 100_000.0) as f32;
                let exact = ((v as f64 - min) / (max - min)).clamp(0.0, 1.0) * 4095.0;
                let got = table_index(v, lo, k);
                let nearest = (exact + 0.5).floor() as usize;
                let at_boundary = (exact - exact.floor() - 0.5).abs() < 1e-3;
                assert!(
                    got == nearest || (at_boundary && got.abs_diff(nearest) == 1),
                    "{v} in {min}..{max}: entry {got}, nearest {nearest} ({exact})"
                );
            }
            assert_eq!(table_index(f32::NAN, lo, k), LUT_SIZE);
            assert_eq!(table_index(f32::INFINITY, lo, k), LUT_SIZE - 1);
            assert_eq!(table_index(f32::NEG_INFINITY, lo, k), 0);
        }
        assert_eq!(Colormap::Inferno.table()[LUT_SIZE], [0, 0, 0]);
    }

    /// The device colouring (here on the CPU) gives every pixel the host's colour, byte
    /// for byte, across and beyond each range, at entry boundaries, for NaN and infinities,
    /// and class ids in and outside the palette.
    #[test]
    fn device_coloring_equals_the_host_byte_for_byte() {
        let scales = [
            ColorScale::uncertainty(2.0, "nats"),
            ColorScale::uncertainty(0.3, "m"),
            ColorScale::depth(&ColormapParams::default()),
            ColorScale {
                colormap: Colormap::Turbo,
                min: 100.0,
                max: 100.5,
                unit: "m",
            },
        ];
        let (w, h) = (257u32, 41u32);
        let planes: Vec<(tch::Tensor, ColorScale)> = scales
            .iter()
            .enumerate()
            .map(|(k, scale)| {
                let span = (scale.max - scale.min) as f32;
                let mut values: Vec<f32> = (0..w * h)
                    .map(|i| {
                        // A sweep from below to above the range, dense enough to hit entry
                        // boundaries, with a different phase per plane.
                        let t = ((i as f32 * 0.618_034 + k as f32 * 0.1) % 1.0) * 1.2 - 0.1;
                        scale.min as f32 + span * t
                    })
                    .collect();
                // Exact entry boundaries (halfway between two entries) and specials.
                for (j, e) in (0..4095).step_by(97).enumerate() {
                    values[j] = scale.min as f32 + span * (e as f32 + 0.5) / 4095.0;
                }
                values[100] = f32::NAN;
                values[101] = f32::INFINITY;
                values[102] = f32::NEG_INFINITY;
                values[103] = scale.min as f32;
                values[104] = scale.max as f32;
                let image = FloatImage::from_raw(w, h, values).unwrap();
                let tensor = tch::Tensor::from_slice(image.as_raw()).view([h as i64, w as i64]);
                (tensor, *scale)
            })
            .collect();
        let palette = [[10, 20, 30], [40, 50, 60], [70, 80, 90]];
        let ids: Vec<u8> = (0..w * h).map(|i| (i % 5) as u8).collect();
        let labels = tch::Tensor::from_slice(&ids).view([h as i64, w as i64]);
        let coloring = DeviceColoring::new(&palette, tch::Device::Cpu);
        let colored = coloring.colorize(&planes, Some(&labels));
        assert_eq!(colored.size(), [5, h as i64, w as i64, 3]);
        let bytes = |k: i64| Vec::<u8>::try_from(colored.get(k).contiguous().view(-1)).unwrap();
        for (k, (tensor, scale)) in planes.iter().enumerate() {
            let values = Vec::<f32>::try_from(tensor.view(-1)).unwrap();
            let host = scale.colorize(&FloatImage::from_raw(w, h, values).unwrap());
            assert!(
                bytes(k as i64) == host.into_raw(),
                "plane {k} ({scale:?}) differs from the host's colours"
            );
        }
        let host = colorize_labels(w, h, ids.iter().map(|&i| i as usize), &palette);
        assert_eq!(bytes(4), host.into_raw(), "label colours");
    }

    #[test]
    fn fixed_range_clamps_and_nan_is_black() {
        let scale = ColorScale::uncertainty(2.0, "nats");
        assert_eq!(scale.color(0.0), scale.color(-5.0));
        assert_eq!(scale.color(2.0), scale.color(100.0));
        assert_ne!(scale.color(0.0), scale.color(2.0));
        assert_eq!(scale.color(f32::NAN), Rgb([0, 0, 0]));
        // Inferno starts black and ends light yellow.
        let top = scale.color(2.0).0;
        assert!(top[0] > 200 && top[1] > 200, "{top:?}");
    }

    #[test]
    fn bar_values_keep_three_significant_digits() {
        let cases = [
            (0.0, "0"),
            (2.0, "2"),
            (80.0, "80"),
            (150.0, "150"),
            (0.3, "0.3"),
            (0.125, "0.125"),
            (0.004, "0.004"),
            (0.0001, "0.0001"),
            (12.345, "12.3"),
            (1.5, "1.5"),
        ];
        for (v, text) in cases {
            assert_eq!(format_value(v), text, "{v}");
        }
    }

    #[test]
    fn colorbar_adds_rows_and_labels() {
        let img = RgbImage::from_pixel(100, 20, Rgb([10, 20, 30]));
        let scale = ColorScale::depth(&ColormapParams::default());
        let out = with_colorbar(&img, &scale);
        assert_eq!(out.dimensions(), (100, 20 + BAR_HEIGHT + TEXT_ROW + 2));
        assert_eq!(out.get_pixel(5, 5), &Rgb([10, 20, 30]));
        assert_eq!(out.get_pixel(0, 21), &Colormap::Turbo.at(0.0));
        assert_eq!(out.get_pixel(99, 21), &Colormap::Turbo.at(1.0));
        let text_rows =
            (20 + BAR_HEIGHT + 2..out.height()).flat_map(|y| (0..100).map(move |x| (x, y)));
        let black = text_rows
            .filter(|&(x, y)| out.get_pixel(x, y) == &Rgb([0, 0, 0]))
            .count();
        assert!(black > 20, "labels drawn ({black} black pixels)");
        assert_eq!(format_value(50.0), "50");
        assert_eq!(format_value(0.25), "0.25");
    }

    #[test]
    fn distinct_colors_differ() {
        let colors: Vec<_> = (0..12).map(distinct_color).collect();
        for i in 0..12 {
            for j in i + 1..12 {
                assert_ne!(colors[i], colors[j]);
            }
        }
    }
}

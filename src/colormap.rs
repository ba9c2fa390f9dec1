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

impl Colormap {
    fn gradient(self) -> colorous::Gradient {
        match self {
            Colormap::Turbo => colorous::TURBO,
            Colormap::Inferno => colorous::INFERNO,
        }
    }

    /// The colour of `t` in [0, 1] (clamped).
    pub fn at(self, t: f64) -> Rgb<u8> {
        let c = self.gradient().eval_continuous(t.clamp(0.0, 1.0));
        Rgb([c.r, c.g, c.b])
    }
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
        if value.is_nan() {
            return Rgb([0, 0, 0]);
        }
        self.colormap
            .at((value as f64 - self.min) / (self.max - self.min))
    }

    pub fn colorize(&self, image: &FloatImage) -> RgbImage {
        RgbImage::from_fn(image.width(), image.height(), |x, y| {
            self.color(image.get_pixel(x, y).0[0])
        })
    }
}

/// Label ids to colours; ids outside the palette are drawn black.
pub fn colorize_labels<F: Fn(u32, u32) -> usize>(
    width: u32,
    height: u32,
    label_at: F,
    palette: &[[u8; 3]],
) -> RgbImage {
    RgbImage::from_fn(width, height, |x, y| {
        Rgb(palette.get(label_at(x, y)).copied().unwrap_or([0, 0, 0]))
    })
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

fn format_value(v: f64) -> String {
    let s = format!("{v:.2}");
    s.trim_end_matches('0').trim_end_matches('.').to_owned()
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

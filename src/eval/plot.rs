//! PNG charts of the eval report with plotters: one kind of chart (lines, optionally with
//! point markers, over fixed axes) is enough for every figure — reliability diagrams, ROC
//! curves, precision/RMS by kept fraction, and uncertainty histograms drawn as steps.
//! Text uses the bundled DejaVu Sans, so charts look the same on every machine.

use std::path::Path;
use std::sync::Once;

use plotters::prelude::*;
use plotters::style::{register_font, FontStyle};

use crate::error::{Error, Result};

const FONT: &str = "sans-serif";
const SIZE: (u32, u32) = (720, 540);

/// The colours of successive series (Okabe-Ito, readable with colour blindness).
const COLORS: [RGBColor; 6] = [
    RGBColor(0, 114, 178),
    RGBColor(213, 94, 0),
    RGBColor(0, 158, 115),
    RGBColor(204, 121, 167),
    RGBColor(230, 159, 0),
    RGBColor(86, 180, 233),
];

fn register() {
    static ONCE: Once = Once::new();
    ONCE.call_once(|| {
        let font = include_bytes!("../../assets/fonts/DejaVuSans.ttf");
        if register_font(FONT, FontStyle::Normal, font).is_err() {
            panic!("the bundled font assets/fonts/DejaVuSans.ttf does not parse");
        }
    });
}

/// One line of a chart.
#[derive(Debug, Clone)]
pub struct Series {
    pub name: String,
    pub points: Vec<(f64, f64)>,
    /// Draw a marker at every point (few points, e.g. reliability bins).
    pub markers: bool,
}

impl Series {
    pub fn new(name: impl Into<String>, points: Vec<(f64, f64)>) -> Self {
        Series {
            name: name.into(),
            points,
            markers: false,
        }
    }

    pub fn with_markers(mut self) -> Self {
        self.markers = true;
        self
    }
}

/// Axes and labels of a chart. Ranges are fixed by the caller, so that the same chart of
/// two runs can be compared by eye.
#[derive(Debug, Clone)]
pub struct Chart {
    pub title: String,
    pub x_label: String,
    pub y_label: String,
    pub x: (f64, f64),
    pub y: (f64, f64),
    /// Logarithmic x axis (x must be > 0).
    pub log_x: bool,
    /// Draw the line y = x (perfect calibration, chance ROC) in grey.
    pub diagonal: bool,
    /// Where the legend goes (a corner the curves leave free).
    pub legend: Corner,
}

/// A corner of the plotting area.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Corner {
    UpperLeft,
    LowerLeft,
    LowerRight,
}

fn plot_error(path: &Path, e: impl std::fmt::Display) -> Error {
    Error::Image {
        path: path.to_owned(),
        message: format!("cannot draw the chart: {e}"),
    }
}

/// Draws `series` on `chart` into a PNG at `path`.
pub fn line_chart(path: &Path, chart: &Chart, series: &[Series]) -> Result<()> {
    register();
    let mut pixels = vec![0u8; SIZE.0 as usize * SIZE.1 as usize * 3];
    draw_chart(path, &mut pixels, chart, series)?;
    let image = image::RgbImage::from_raw(SIZE.0, SIZE.1, pixels).expect("the chart's size");
    crate::output::save_png(path, &image)
}

/// Draws the chart into an RGB buffer of [`SIZE`] (errors name `path`).
fn draw_chart(path: &Path, pixels: &mut [u8], chart: &Chart, series: &[Series]) -> Result<()> {
    let root = BitMapBackend::with_buffer(pixels, SIZE).into_drawing_area();
    root.fill(&WHITE).map_err(|e| plot_error(path, e))?;
    let err = |e| plot_error(path, e);
    let mut builder = ChartBuilder::on(&root);
    builder
        .caption(&chart.title, (FONT, 22))
        .margin(16)
        .x_label_area_size(48)
        .y_label_area_size(64);
    if chart.log_x {
        let mut ctx = builder
            .build_cartesian_2d((chart.x.0..chart.x.1).log_scale(), chart.y.0..chart.y.1)
            .map_err(err)?;
        ctx.configure_mesh()
            .x_desc(&chart.x_label)
            .y_desc(&chart.y_label)
            .label_style((FONT, 15))
            .x_label_formatter(&|v| format!("{v:.0e}"))
            .draw()
            .map_err(err)?;
        draw_series(&mut ctx, chart, series).map_err(err)?;
    } else {
        let mut ctx = builder
            .build_cartesian_2d(chart.x.0..chart.x.1, chart.y.0..chart.y.1)
            .map_err(err)?;
        ctx.configure_mesh()
            .x_desc(&chart.x_label)
            .y_desc(&chart.y_label)
            .label_style((FONT, 15))
            .draw()
            .map_err(err)?;
        draw_series(&mut ctx, chart, series).map_err(err)?;
    }
    root.present().map_err(|e| plot_error(path, e))?;
    Ok(())
}

type Ctx<'a, X> =
    ChartContext<'a, BitMapBackend<'a>, Cartesian2d<X, plotters::coord::types::RangedCoordf64>>;

fn draw_series<'a, X>(
    ctx: &mut Ctx<'a, X>,
    chart: &Chart,
    series: &[Series],
) -> std::result::Result<(), DrawingAreaErrorKind<<BitMapBackend<'a> as DrawingBackend>::ErrorType>>
where
    X: Ranged<ValueType = f64>,
{
    if chart.diagonal {
        let lo = chart.x.0.max(chart.y.0);
        let hi = chart.x.1.min(chart.y.1);
        ctx.draw_series(LineSeries::new(
            vec![(lo, lo), (hi, hi)],
            ShapeStyle::from(&RGBColor(160, 160, 160)).stroke_width(1),
        ))?;
    }
    let clip = |(x, y): (f64, f64)| (x.clamp(chart.x.0, chart.x.1), y.clamp(chart.y.0, chart.y.1));
    for (i, s) in series.iter().enumerate() {
        let color = COLORS[i % COLORS.len()];
        let points: Vec<(f64, f64)> = s
            .points
            .iter()
            .copied()
            .filter(|(x, y)| x.is_finite() && y.is_finite() && (!chart.log_x || *x > 0.0))
            .map(clip)
            .collect();
        ctx.draw_series(LineSeries::new(
            points.clone(),
            ShapeStyle::from(&color).stroke_width(2),
        ))?
        .label(&s.name)
        .legend(move |(x, y)| {
            PathElement::new(
                vec![(x, y), (x + 20, y)],
                ShapeStyle::from(&color).stroke_width(2),
            )
        });
        if s.markers {
            ctx.draw_series(
                points
                    .iter()
                    .map(|&p| Circle::new(p, 4, ShapeStyle::from(&color).filled())),
            )?;
        }
    }
    if !series.is_empty() {
        ctx.configure_series_labels()
            .background_style(WHITE.mix(0.85))
            .border_style(BLACK)
            .label_font((FONT, 15))
            .position(match chart.legend {
                Corner::UpperLeft => SeriesLabelPosition::UpperLeft,
                Corner::LowerLeft => SeriesLabelPosition::LowerLeft,
                Corner::LowerRight => SeriesLabelPosition::LowerRight,
            })
            .draw()?;
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn charts_are_pngs_of_the_chart_size_with_ink_in_the_series_colour() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("chart.png");
        let chart = Chart {
            title: "test".into(),
            x_label: "x".into(),
            y_label: "y".into(),
            x: (0.0, 1.0),
            y: (0.0, 1.0),
            log_x: false,
            diagonal: true,
            legend: Corner::LowerRight,
        };
        line_chart(
            &path,
            &chart,
            &[Series::new("a", vec![(0.0, 0.2), (1.0, 0.9)]).with_markers()],
        )
        .unwrap();
        let img = image::open(&path).unwrap().to_rgb8();
        assert_eq!(img.dimensions(), SIZE);
        let first = COLORS[0];
        assert!(img.pixels().any(|p| p.0 == [first.0, first.1, first.2]));
        // Log axis with a point at 0 (dropped, not a panic).
        let log = Chart {
            log_x: true,
            x: (1e-6, 10.0),
            ..chart
        };
        line_chart(
            &path,
            &log,
            &[Series::new("b", vec![(0.0, 0.1), (1e-3, 0.5), (1.0, 0.2)])],
        )
        .unwrap();
    }
}

//! The node's output topics and their messages, built from a [`Prediction`].
//!
//! Every output is at the input's resolution and carries the input's exact header (stamp
//! and frame_id), so outputs line up with the camera image in RViz, message_filters and
//! bag evaluation. Float images are `32FC1` (no Inf; NaN only for invalid depth, REP 118);
//! labels are `mono8` (`16UC1` above 256 classes); colour twins are `rgb8`.

use image::RgbImage;
use rayon::prelude::*;

use super::{CompressedImage, Header, Image};
use crate::colormap::{ColorScale, FloatImage};
use crate::config::ColormapParams;
use crate::engine::{LabelImage, Prediction};
use crate::output::{float_images, label_colors, FloatKind};

/// One published image topic, named relative to the node's namespace.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum OutputTopic {
    SemanticLabels,
    SemanticColor,
    SemanticConfidence,
    Depth,
    SemanticAleatoric,
    SemanticAleatoricColor,
    SemanticEpistemic,
    SemanticEpistemicColor,
    DepthAleatoric,
    DepthAleatoricColor,
    DepthEpistemic,
    DepthEpistemicColor,
}

/// The camera_info republished next to `depth` (same header as the image).
pub const DEPTH_CAMERA_INFO_TOPIC: &str = "depth/camera_info";

/// The uncertainty point cloud (sensor_msgs/PointCloud2, see [`crate::points`]).
pub const POINTS_TOPIC: &str = "points";

impl OutputTopic {
    pub const ALL: [OutputTopic; 12] = [
        OutputTopic::SemanticLabels,
        OutputTopic::SemanticColor,
        OutputTopic::SemanticConfidence,
        OutputTopic::Depth,
        OutputTopic::SemanticAleatoric,
        OutputTopic::SemanticAleatoricColor,
        OutputTopic::SemanticEpistemic,
        OutputTopic::SemanticEpistemicColor,
        OutputTopic::DepthAleatoric,
        OutputTopic::DepthAleatoricColor,
        OutputTopic::DepthEpistemic,
        OutputTopic::DepthEpistemicColor,
    ];

    /// Topic name relative to the node namespace.
    pub fn name(self) -> &'static str {
        use OutputTopic::*;
        match self {
            SemanticLabels => "semantic/labels",
            SemanticColor => "semantic/color",
            SemanticConfidence => "semantic/confidence",
            Depth => "depth",
            SemanticAleatoric => "uncertainty/semantic/aleatoric",
            SemanticAleatoricColor => "uncertainty/semantic/aleatoric/color",
            SemanticEpistemic => "uncertainty/semantic/epistemic",
            SemanticEpistemicColor => "uncertainty/semantic/epistemic/color",
            DepthAleatoric => "uncertainty/depth/aleatoric",
            DepthAleatoricColor => "uncertainty/depth/aleatoric/color",
            DepthEpistemic => "uncertainty/depth/epistemic",
            DepthEpistemicColor => "uncertainty/depth/epistemic/color",
        }
    }

    /// Whether the topic has image_transport's compressed twin, `TOPIC/compressed`
    /// ([`compress`]): the 8-bit and 16-bit images (labels, colour), not the float ones,
    /// which image_transport's compressed plugin cannot encode (it advertises a twin for
    /// them and logs an error at each message).
    pub fn has_compressed_twin(self) -> bool {
        self == OutputTopic::SemanticLabels || self.is_color()
    }

    /// Whether the topic belongs to the semantic task (else depth).
    pub fn is_semantic(self) -> bool {
        use OutputTopic::*;
        matches!(
            self,
            SemanticLabels
                | SemanticColor
                | SemanticConfidence
                | SemanticAleatoric
                | SemanticAleatoricColor
                | SemanticEpistemic
                | SemanticEpistemicColor
        )
    }

    /// Whether messages appear only in mc and moments mode.
    pub fn is_epistemic(self) -> bool {
        use OutputTopic::*;
        matches!(
            self,
            SemanticEpistemic | SemanticEpistemicColor | DepthEpistemic | DepthEpistemicColor
        )
    }

    /// Whether this is an rgb8 false-colour rendering (worth skipping without subscribers).
    pub fn is_color(self) -> bool {
        use OutputTopic::*;
        matches!(
            self,
            SemanticColor
                | SemanticAleatoricColor
                | SemanticEpistemicColor
                | DepthAleatoricColor
                | DepthEpistemicColor
        )
    }

    /// The topics a model with these tasks advertises (epistemic ones included: they carry
    /// messages whenever the mode is mc, which can change at runtime). A depth model
    /// without a trained variance head has no depth aleatoric topics.
    pub fn advertised(semantic: bool, depth: bool, depth_aleatoric: bool) -> Vec<OutputTopic> {
        let aleatoric_depth = [
            OutputTopic::DepthAleatoric,
            OutputTopic::DepthAleatoricColor,
        ];
        Self::ALL
            .into_iter()
            .filter(|t| if t.is_semantic() { semantic } else { depth })
            .filter(|t| depth_aleatoric || !aleatoric_depth.contains(t))
            .collect()
    }
}

/// The topic of a float image and of its false-colour twin (if it has one).
fn float_topics(kind: FloatKind) -> (OutputTopic, Option<OutputTopic>) {
    use OutputTopic::*;
    match kind {
        FloatKind::Confidence => (SemanticConfidence, None),
        FloatKind::SemanticAleatoric => (SemanticAleatoric, Some(SemanticAleatoricColor)),
        FloatKind::SemanticEpistemic => (SemanticEpistemic, Some(SemanticEpistemicColor)),
        FloatKind::Depth => (Depth, None),
        FloatKind::DepthAleatoric => (DepthAleatoric, Some(DepthAleatoricColor)),
        FloatKind::DepthEpistemic => (DepthEpistemic, Some(DepthEpistemicColor)),
    }
}

/// Whether the node publishes a false-colour twin of this float image.
pub fn has_color_message(kind: FloatKind) -> bool {
    float_topics(kind).1.is_some()
}

/// Builds the output messages of one prediction, for the topics `wanted` accepts (the
/// node passes "has subscribers" for colour twins, the bag writer accepts all), in
/// [`OutputTopic`] order. Each image is built as its own task on rayon's thread pool:
/// colouring and packing a dozen full-size images is the largest host cost of a frame
/// on a GPU (BENCHMARKS.md), and they are independent.
pub fn build_outputs(
    prediction: &Prediction,
    header: &Header,
    palette: &[[u8; 3]],
    ranges: &ColormapParams,
    wanted: impl Fn(OutputTopic) -> bool,
) -> Vec<(OutputTopic, Image)> {
    enum Job<'a> {
        Float(&'a FloatImage),
        Color(&'a FloatImage, ColorScale, Option<&'a RgbImage>),
        Labels(&'a LabelImage),
        LabelColors(&'a LabelImage, Option<&'a RgbImage>),
    }
    // Colour images the engine made on the device, if it did, with these ranges.
    let device_colors = prediction
        .device_colors
        .as_ref()
        .filter(|c| c.ranges == *ranges);
    let mut jobs = Vec::new();
    for (kind, image, scale) in float_images(prediction, ranges) {
        let (topic, color) = float_topics(kind);
        if wanted(topic) {
            jobs.push((topic, Job::Float(image)));
        }
        if let Some(color) = color.filter(|&c| wanted(c)) {
            let made = device_colors.and_then(|c| c.get(kind));
            jobs.push((color, Job::Color(image, scale, made)));
        }
    }
    if let Some(semantic) = &prediction.semantic {
        if wanted(OutputTopic::SemanticLabels) {
            jobs.push((OutputTopic::SemanticLabels, Job::Labels(&semantic.labels)));
        }
        if wanted(OutputTopic::SemanticColor) {
            let made = device_colors.and_then(|c| c.labels.as_ref());
            jobs.push((
                OutputTopic::SemanticColor,
                Job::LabelColors(&semantic.labels, made),
            ));
        }
    }
    jobs.sort_by_key(|(topic, _)| *topic);
    jobs.into_par_iter()
        .map(|(topic, job)| {
            let message = match job {
                Job::Float(image) => float_message(header, image),
                Job::Color(_, _, Some(made)) | Job::LabelColors(_, Some(made)) => {
                    rgb_message(header, made.clone())
                }
                Job::Color(image, scale, None) => rgb_message(header, scale.colorize(image)),
                Job::Labels(labels) => label_message(header, labels),
                Job::LabelColors(labels, None) => {
                    rgb_message(header, label_colors(labels, palette))
                }
            };
            (topic, message)
        })
        .collect()
}

/// `32FC1` in the host's byte order (flagged in `is_bigendian`).
pub fn float_message(header: &Header, image: &FloatImage) -> Image {
    Image {
        header: header.clone(),
        height: image.height(),
        width: image.width(),
        encoding: "32FC1".into(),
        is_bigendian: cfg!(target_endian = "big") as u8,
        step: image.width() * 4,
        data: bytemuck::cast_slice::<f32, u8>(image.as_raw()).to_vec(),
    }
}

/// `rgb8`, the image's pixels moved into the message.
pub fn rgb_message(header: &Header, image: RgbImage) -> Image {
    Image {
        header: header.clone(),
        height: image.height(),
        width: image.width(),
        encoding: "rgb8".into(),
        is_bigendian: 0,
        step: image.width() * 3,
        data: image.into_raw(),
    }
}

/// `mono8` class ids, or `16UC1` (host byte order) above 256 classes.
pub fn label_message(header: &Header, labels: &LabelImage) -> Image {
    let (width, height) = labels.dimensions();
    let (encoding, step, data, is_bigendian) = match labels {
        LabelImage::U8(img) => ("mono8", width, img.as_raw().clone(), 0),
        LabelImage::U16(img) => (
            "16UC1",
            width * 2,
            bytemuck::cast_slice::<u16, u8>(img.as_raw()).to_vec(),
            cfg!(target_endian = "big") as u8,
        ),
    };
    Image {
        header: header.clone(),
        height,
        width,
        encoding: encoding.into(),
        is_bigendian,
        step,
        data,
    }
}

/// The name of `topic`'s compressed twin, relative to the node namespace.
pub fn compressed_topic_name(topic: OutputTopic) -> String {
    format!("{}/compressed", topic.name())
}

/// The compressed twins of those of `images` whose topic has one, each encoded as its own
/// task on rayon's thread pool, in the order of `images`.
pub fn compress_twins(
    images: &[(OutputTopic, Image)],
    jpeg_quality: u8,
) -> Vec<(OutputTopic, Result<CompressedImage, String>)> {
    images
        .par_iter()
        .filter(|(topic, _)| topic.has_compressed_twin())
        .map(|(topic, image)| (*topic, compress(image, jpeg_quality)))
        .collect()
}

/// The compressed twin of an output image (`TOPIC/compressed`) as image_transport's
/// compressed plugin fills it: `rgb8` as JPEG of `jpeg_quality` (1..=100), `mono8` and
/// `16UC1` (labels) as lossless PNG. `format` is the plugin's: the image's encoding and
/// the compression, with the decoded colour order for colour images (`rgb8; jpeg
/// compressed bgr8`: decoded with OpenCV, as image_transport does, the pixels come out
/// bgr8), so image_transport's subscribers, RViz and rqt_image_view decode it. Other
/// encodings are refused.
pub fn compress(image: &Image, jpeg_quality: u8) -> Result<CompressedImage, String> {
    use image::codecs::png::{CompressionType, FilterType, PngEncoder};
    use image::{ExtendedColorType, ImageEncoder};

    let (width, height) = (image.width, image.height);
    let (bytes_per_pixel, color, format) = match image.encoding.as_str() {
        "rgb8" => (3, ExtendedColorType::Rgb8, "rgb8; jpeg compressed bgr8"),
        "mono8" => (1, ExtendedColorType::L8, "mono8; png compressed "),
        "16UC1" => (2, ExtendedColorType::L16, "16UC1; png compressed "),
        other => return Err(format!("no compressed twin for encoding {other}")),
    };
    let row = width as usize * bytes_per_pixel;
    let step = image.step as usize;
    if step < row || image.data.len() < step * height.saturating_sub(1) as usize + row {
        return Err(format!(
            "{} bytes for a {width}x{height} {} image of step {step}",
            image.data.len(),
            image.encoding
        ));
    }
    // The rows without padding; 16-bit samples in the host's order, as the encoder takes them.
    let mut pixels: Vec<u8> = (0..height as usize)
        .flat_map(|y| &image.data[y * step..y * step + row])
        .copied()
        .collect();
    if bytes_per_pixel == 2 && (image.is_bigendian != 0) != cfg!(target_endian = "big") {
        pixels
            .chunks_exact_mut(2)
            .for_each(|sample| sample.swap(0, 1));
    }
    let mut data = Vec::new();
    let written = match color {
        ExtendedColorType::Rgb8 => {
            // JPEG sizes are 16-bit.
            let (Ok(w), Ok(h)) = (u16::try_from(width), u16::try_from(height)) else {
                return Err(format!("{width}x{height} is too large for a JPEG"));
            };
            jpeg_encoder::Encoder::new(&mut data, jpeg_quality.clamp(1, 100))
                .encode(&pixels, w, h, jpeg_encoder::ColorType::Rgb)
                .map_err(|e| e.to_string())
        }
        _ => PngEncoder::new_with_quality(&mut data, CompressionType::Fast, FilterType::Adaptive)
            .write_image(&pixels, width, height, color)
            .map_err(|e| e.to_string()),
    };
    written.map_err(|e| format!("encoding {}: {e}", image.encoding))?;
    Ok(CompressedImage {
        header: image.header.clone(),
        format: format.to_owned(),
        data,
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::config::Mode;
    use crate::engine::{DepthPrediction, SemanticPrediction, Timing};
    use crate::msg::Time;
    use image::{ImageBuffer, Luma};

    fn prediction(mc: bool, labels: LabelImage) -> Prediction {
        let (w, h) = labels.dimensions();
        let f = |v: f32| FloatImage::from_pixel(w, h, Luma([v]));
        let mut depth = f(12.5);
        depth.put_pixel(1, 0, Luma([f32::NAN]));
        Prediction {
            width: w,
            height: h,
            mode: if mc { Mode::Mc } else { Mode::Aleatoric },
            samples: if mc { 4 } else { 1 },
            semantic: Some(SemanticPrediction {
                labels,
                confidence: f(0.75),
                aleatoric_entropy: f(0.5),
                epistemic_mutual_information: mc.then(|| f(0.1)),
                probabilities: None,
            }),
            depth: Some(DepthPrediction {
                depth_m: depth,
                aleatoric_std_m: Some(f(1.0)),
                epistemic_std_m: mc.then(|| f(0.2)),
            }),
            device_colors: None,
            timing: Timing::default(),
        }
    }

    fn header() -> Header {
        Header {
            stamp: Time {
                sec: 1_700_000_123,
                nanosec: 456,
            },
            frame_id: "camera_optical".into(),
        }
    }

    #[test]
    fn every_topic_in_mc_mode_with_input_header_size_and_encoding() {
        let labels = LabelImage::U8(ImageBuffer::from_fn(5, 3, |x, _| Luma([x as u8 % 2])));
        let p = prediction(true, labels);
        let out = build_outputs(
            &p,
            &header(),
            &[[1, 2, 3], [4, 5, 6]],
            &ColormapParams::default(),
            |_| true,
        );
        let topics: Vec<_> = out.iter().map(|(t, _)| *t).collect();
        assert_eq!(topics, OutputTopic::ALL.to_vec());
        for (topic, msg) in &out {
            assert_eq!(msg.header, header(), "{topic:?}");
            assert_eq!((msg.width, msg.height), (5, 3), "{topic:?}");
            let bpp = match msg.encoding.as_str() {
                "32FC1" => 4,
                "rgb8" => 3,
                "mono8" => 1,
                other => panic!("unexpected encoding {other}"),
            };
            assert_eq!(msg.step, 5 * bpp, "{topic:?}");
            assert_eq!(
                msg.data.len(),
                (msg.step * msg.height) as usize,
                "{topic:?}"
            );
            assert_eq!(msg.encoding == "rgb8", topic.is_color(), "{topic:?}");
        }
        let find = |t: OutputTopic| &out.iter().find(|(x, _)| *x == t).unwrap().1;
        // Depth keeps NaN for the invalid pixel and the value elsewhere, little-endian here.
        let depth = find(OutputTopic::Depth);
        let value = |i: usize| f32::from_ne_bytes(depth.data[4 * i..4 * i + 4].try_into().unwrap());
        assert_eq!(value(0), 12.5);
        assert!(value(1).is_nan());
        assert_eq!(depth.is_bigendian, cfg!(target_endian = "big") as u8);
        // Label colours come from the palette.
        assert_eq!(
            &find(OutputTopic::SemanticColor).data[0..6],
            &[1, 2, 3, 4, 5, 6]
        );
        assert_eq!(find(OutputTopic::SemanticLabels).data[0..2], [0, 1]);
    }

    #[test]
    fn aleatoric_mode_has_no_epistemic_messages_and_unwanted_topics_are_skipped() {
        let labels = LabelImage::U8(ImageBuffer::new(2, 2));
        let p = prediction(false, labels);
        let out = build_outputs(
            &p,
            &header(),
            &[[0, 0, 0]],
            &ColormapParams::default(),
            |t| !t.is_color(),
        );
        assert!(out.iter().all(|(t, _)| !t.is_epistemic() && !t.is_color()));
        assert_eq!(out.len(), 5);
    }

    #[test]
    fn many_classes_give_16uc1_labels() {
        let labels = LabelImage::U16(ImageBuffer::from_fn(3, 2, |x, y| {
            Luma([300 + x as u16 + 10 * y as u16])
        }));
        let msg = label_message(&header(), &labels);
        assert_eq!(
            (msg.encoding.as_str(), msg.step, msg.data.len()),
            ("16UC1", 6, 12)
        );
        assert_eq!(u16::from_ne_bytes([msg.data[2], msg.data[3]]), 301);
    }

    #[test]
    fn advertised_topics_follow_the_tasks() {
        assert_eq!(OutputTopic::advertised(true, true, true).len(), 12);
        assert_eq!(OutputTopic::advertised(true, true, false).len(), 10);
        let semantic = OutputTopic::advertised(true, false, true);
        assert!(semantic.iter().all(|t| t.is_semantic()) && semantic.len() == 7);
        let depth = OutputTopic::advertised(false, true, true);
        assert!(depth.iter().all(|t| !t.is_semantic()) && depth.len() == 5);
        // Names are relative (no leading slash) and unique.
        let names: std::collections::HashSet<_> =
            OutputTopic::ALL.iter().map(|t| t.name()).collect();
        assert_eq!(names.len(), 12);
        assert!(names.iter().all(|n| !n.starts_with('/')));
    }

    /// A raw message of `encoding` from `rows`, each padded to `step`.
    fn padded(encoding: &str, width: u32, rows: &[Vec<u8>], step: u32, big: u8) -> Image {
        let data = rows
            .iter()
            .flat_map(|r| {
                let mut r = r.clone();
                r.resize(step as usize, 0xEE);
                r
            })
            .collect();
        Image {
            header: header(),
            height: rows.len() as u32,
            width,
            encoding: encoding.into(),
            is_bigendian: big,
            step,
            data,
        }
    }

    /// Labels come back exactly (PNG), 16-bit ones in either byte order and above 255;
    /// padding at the ends of rows is left out.
    #[test]
    fn compressed_labels_are_lossless_png() {
        let rows: Vec<Vec<u8>> = (0..5u8)
            .map(|y| (0..7u8).map(|x| x * 3 + y).collect())
            .collect();
        for step in [7, 9] {
            let c = compress(&padded("mono8", 7, &rows, step, 0), 80).unwrap();
            assert_eq!(c.format, "mono8; png compressed ");
            assert_eq!(c.header, header());
            assert!(c.data.starts_with(b"\x89PNG"));
            let back = image::load_from_memory(&c.data).unwrap().into_luma8();
            assert_eq!(back.dimensions(), (7, 5));
            assert_eq!(back.into_raw(), rows.concat(), "step {step}");
        }
        let values: Vec<Vec<u16>> = (0..3u16)
            .map(|y| (0..4u16).map(|x| 300 * x + y).collect())
            .collect();
        for big in [0u8, 1] {
            let rows: Vec<Vec<u8>> = values
                .iter()
                .map(|r| {
                    r.iter()
                        .flat_map(|v| {
                            if big == 1 {
                                v.to_be_bytes()
                            } else {
                                v.to_le_bytes()
                            }
                        })
                        .collect()
                })
                .collect();
            let c = compress(&padded("16UC1", 4, &rows, 10, big), 80).unwrap();
            assert_eq!(c.format, "16UC1; png compressed ");
            let back = image::load_from_memory(&c.data).unwrap().into_luma16();
            assert_eq!(back.into_raw(), values.concat(), "big endian {big}");
        }
    }

    /// Colour images as JPEG of the quality asked for: close to the original, decoded by
    /// the node's own compressed input too; a higher quality is closer and larger.
    #[test]
    fn compressed_colour_images_are_jpeg_of_the_quality_asked() {
        let (w, h) = (32u32, 24u32);
        let rgb = RgbImage::from_fn(w, h, |x, y| {
            image::Rgb([(x * 8) as u8, (y * 10) as u8, ((x + y) * 4) as u8])
        });
        let message = rgb_message(&header(), rgb.clone());
        let error = |quality: u8| {
            let c = compress(&message, quality).unwrap();
            assert_eq!(c.format, "rgb8; jpeg compressed bgr8");
            let back = crate::msg::encoding::decode_compressed(&c).unwrap();
            assert_eq!(back.dimensions(), (w, h));
            let diff: f64 = back
                .as_raw()
                .iter()
                .zip(rgb.as_raw())
                .map(|(a, b)| (*a as f64 - *b as f64).abs())
                .sum::<f64>()
                / (w * h * 3) as f64;
            (diff, c.data.len())
        };
        let (fine, fine_size) = error(95);
        let (coarse, coarse_size) = error(10);
        assert!(fine < 3.0, "mean error {fine} at quality 95");
        assert!(
            coarse > fine && coarse_size < fine_size,
            "{coarse} {coarse_size}"
        );
    }

    #[test]
    fn only_eight_and_sixteen_bit_outputs_have_compressed_twins() {
        let twins: Vec<&str> = OutputTopic::ALL
            .into_iter()
            .filter(|t| t.has_compressed_twin())
            .map(|t| t.name())
            .collect();
        assert_eq!(
            twins,
            [
                "semantic/labels",
                "semantic/color",
                "uncertainty/semantic/aleatoric/color",
                "uncertainty/semantic/epistemic/color",
                "uncertainty/depth/aleatoric/color",
                "uncertainty/depth/epistemic/color"
            ]
        );
        let float = float_message(&header(), &FloatImage::new(4, 3));
        assert_eq!(
            compress(&float, 80).unwrap_err(),
            "no compressed twin for encoding 32FC1"
        );
        let wide = rgb_message(&header(), RgbImage::new(70_000, 1));
        assert_eq!(
            compress(&wide, 80).unwrap_err(),
            "70000x1 is too large for a JPEG"
        );
        let mut short = padded("mono8", 4, &[vec![1; 4], vec![2; 4]], 4, 0);
        short.data.pop();
        assert!(compress(&short, 80)
            .unwrap_err()
            .contains("7 bytes for a 4x2 mono8"));
    }
}

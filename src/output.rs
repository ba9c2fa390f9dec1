//! Writing a prediction to files: PNG for people (colour labels, false colour), 16/8-bit
//! PNG for class ids, and 32-bit float TIFF for the exact values.
//!
//! Files in the output directory of one image (`*` only in mc and moments mode):
//!
//! | file                         | content                                           |
//! |------------------------------|---------------------------------------------------|
//! | labels.png                   | class ids (8-bit grey, 16-bit above 256 classes)  |
//! | labels_color.png             | model palette                                     |
//! | confidence.tiff / _color.png | p̄ of the label, 0..1                              |
//! | semantic_aleatoric.tiff/.png | expected entropy, nats                            |
//! | semantic_epistemic.tiff/.png*| mutual information, nats                          |
//! | depth.tiff / depth_color.png | metres, NaN where invalid                         |
//! | depth_aleatoric.tiff/.png    | std, metres                                       |
//! | depth_epistemic.tiff/.png*   | std, metres                                       |
//! | contact_sheet.png (option)   | all of the above side by side, titled             |

use std::fs::File;
use std::io::{Cursor, ErrorKind, Write};
use std::path::{Path, PathBuf};

use image::{EncodableLayout, ImageBuffer, ImageFormat, PixelWithColorType, RgbImage};

use crate::colormap::{colorize_labels, with_colorbar, ColorScale, FloatImage};
use crate::config::ColormapParams;
use crate::engine::{LabelImage, Prediction};
use crate::error::{Error, Result};
use crate::msg::encoding::{decode_capped, Undecoded};

/// Flushes a file, or a directory's entries, to the disk (opened read-only, which Linux
/// allows). A filesystem that cannot sync a directory (some FUSE and network mounts say
/// EINVAL) is taken as having nothing to flush for it.
pub fn sync_path(path: &Path) -> std::io::Result<()> {
    let file = File::open(path)?;
    match file.sync_all() {
        Err(e)
            if matches!(e.kind(), ErrorKind::InvalidInput | ErrorKind::Unsupported)
                && file.metadata().is_ok_and(|m| m.is_dir()) =>
        {
            Ok(())
        }
        other => other,
    }
}

/// Writes a file whole and makes it durable: every failure (a full disk on the last block
/// included) is an error, never lost in a buffer dropped unflushed, and a directory renamed
/// into place afterwards holds the data after a power loss. A new file or a regular one is
/// written to a temporary file beside it, renamed over `path` once synced (with the old
/// file's permissions): a process killed meanwhile leaves the file as it was (a report, a
/// state), never cut short. Anything else (`/dev/stdout`, a pipe, a symbolic link), and a
/// file in a directory this process cannot create files in, is written in place.
pub fn write_file(path: &Path, bytes: &[u8]) -> Result<()> {
    let existing = match std::fs::symlink_metadata(path) {
        Ok(meta) if meta.file_type().is_file() => Some(meta),
        Ok(_) => return write_in_place(path, bytes),
        Err(e) if e.kind() == ErrorKind::NotFound => None,
        Err(e) => return Err(Error::io(path, e)),
    };
    let parent = path
        .parent()
        .filter(|p| !p.as_os_str().is_empty())
        .unwrap_or(Path::new("."));
    // `.NAME.XXXXXX.tmp`: one a kill left behind says whose it was (NAME cut to at most 64
    // bytes, whole characters, so that a name near the file system's limit still fits).
    let mut name = path
        .file_name()
        .map(|n| n.to_string_lossy().into_owned())
        .unwrap_or_default();
    let mut cut = name.len().min(64);
    while !name.is_char_boundary(cut) {
        cut -= 1;
    }
    name.truncate(cut);
    let prefix = format!(".{name}.");
    let mut builder = tempfile::Builder::new();
    builder.prefix(&prefix).suffix(".tmp");
    #[cfg(unix)]
    {
        // As File::create makes files (the umask applies), not tempfile's owner-only.
        use std::os::unix::fs::PermissionsExt;
        builder.permissions(std::fs::Permissions::from_mode(0o666));
    }
    let mut file = match builder.tempfile_in(parent) {
        Ok(file) => file,
        // A writable file in a directory that is not: as before, in place.
        Err(e) if e.kind() == ErrorKind::PermissionDenied && existing.is_some() => {
            return write_in_place(path, bytes)
        }
        Err(e) => return Err(Error::io(path, e)),
    };
    if let Some(meta) = &existing {
        file.as_file()
            .set_permissions(meta.permissions())
            .map_err(|e| Error::io(path, e))?;
    }
    file.write_all(bytes)
        .and_then(|()| file.as_file().sync_all())
        .map_err(|e| Error::io(path, e))?;
    file.persist(path).map_err(|e| Error::io(path, e.error))?;
    // The rename made durable; best effort, as for staged directories.
    sync_path(parent).ok();
    Ok(())
}

/// [`write_file`] into the file itself (truncated, then written and synced).
fn write_in_place(path: &Path, bytes: &[u8]) -> Result<()> {
    let mut file = File::create(path).map_err(|e| Error::io(path, e))?;
    file.write_all(bytes)
        .and_then(|()| file.sync_all())
        .map_err(|e| Error::io(path, e))
}

/// Writes an image as PNG (encoded in memory, then [`write_file`]).
pub fn save_png<P>(path: &Path, image: &ImageBuffer<P, Vec<P::Subpixel>>) -> Result<()>
where
    P: PixelWithColorType,
    [P::Subpixel]: EncodableLayout,
{
    let mut png = Cursor::new(Vec::new());
    image
        .write_to(&mut png, ImageFormat::Png)
        .map_err(|e| Error::Image {
            path: path.into(),
            message: e.to_string(),
        })?;
    write_file(path, png.get_ref())
}

/// Writes a single-channel 32-bit float TIFF (readable by OpenCV, PIL, tifffile, GDAL).
pub fn write_float_tiff(path: &Path, image: &FloatImage) -> Result<()> {
    let mut tiff = Cursor::new(Vec::new());
    tiff::encoder::TiffEncoder::new(&mut tiff)
        .and_then(|mut encoder| {
            encoder.write_image::<tiff::encoder::colortype::Gray32Float>(
                image.width(),
                image.height(),
                image.as_raw(),
            )
        })
        .map_err(|e| Error::Image {
            path: path.into(),
            message: e.to_string(),
        })?;
    write_file(path, tiff.get_ref())
}

/// The largest image file read, in pixels (100 megapixels: 12288x8192 and then some).
/// Every image is resized to the model's input anyway; a larger one is refused from its
/// header, before decoding, with its size, rather than by the decoder's memory cap.
pub const MAX_IMAGE_PIXELS: u64 = 100_000_000;

/// What a decoder may allocate for an image of [`MAX_IMAGE_PIXELS`]: 16-bit RGBA, 8
/// bytes a pixel, and room for its working buffers (the image crate's default, 512 MiB,
/// refuses 14000x14000 RGB with "Memory limit exceeded", which reads like a lack of
/// memory).
const MAX_DECODE_BYTES: u64 = 1 << 30;

/// Reads an image file of any format the image crate decodes, recognised by its content
/// (a JPEG named .png still opens). Failures to read the file are [`Error::Io`] (so that
/// running out of file handles is told apart from a corrupt file), the rest
/// [`Error::Image`]; an image of more than [`MAX_IMAGE_PIXELS`] is refused with its size.
pub fn open_image(path: &Path) -> Result<image::DynamicImage> {
    open(path, false)
}

/// A photo as viewers show it: [`open_image`], then turned as its EXIF orientation says
/// (a phone's portrait JPEG is stored sideways).
pub fn open_photo(path: &Path) -> Result<image::DynamicImage> {
    open(path, true)
}

fn open(path: &Path, oriented: bool) -> Result<image::DynamicImage> {
    let as_error = |e: image::ImageError| match e {
        image::ImageError::IoError(e) => Error::io(path, e),
        e => Error::Image {
            path: path.into(),
            message: e.to_string(),
        },
    };
    let mut reader = image::ImageReader::open(path)
        .map_err(|e| Error::io(path, e))?
        .with_guessed_format()
        .map_err(|e| Error::io(path, e))?;
    let mut limits = image::Limits::default();
    limits.max_alloc = Some(MAX_DECODE_BYTES);
    reader.limits(limits);
    decode_capped(reader, MAX_IMAGE_PIXELS, oriented).map_err(|e| match e {
        Undecoded::TooLarge { width, height } => Error::Image {
            path: path.into(),
            message: format!(
                "{width}x{height} is {:.0} megapixels, above the limit of {} for one image \
                 (it is resized to the model's input anyway): scale it down first",
                (u64::from(width) * u64::from(height)) as f64 / 1e6,
                MAX_IMAGE_PIXELS / 1_000_000
            ),
        },
        Undecoded::Image(e) => as_error(e),
    })
}

/// Reads a single-channel 32-bit float TIFF written by [`write_float_tiff`].
pub fn read_float_tiff(path: &Path) -> Result<FloatImage> {
    let err = |message: String| Error::Image {
        path: path.into(),
        message,
    };
    let file = File::open(path).map_err(|e| Error::io(path, e))?;
    let mut decoder = tiff::decoder::Decoder::new(std::io::BufReader::new(file))
        .map_err(|e| err(e.to_string()))?;
    let (width, height) = decoder.dimensions().map_err(|e| err(e.to_string()))?;
    match decoder.read_image().map_err(|e| err(e.to_string()))? {
        tiff::decoder::DecodingResult::F32(data) => FloatImage::from_raw(width, height, data)
            .ok_or_else(|| err("pixel count does not match the size".into())),
        _ => Err(err("not a 32-bit float TIFF".into())),
    }
}

/// The float images of a prediction.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum FloatKind {
    Confidence,
    SemanticAleatoric,
    SemanticEpistemic,
    Depth,
    DepthAleatoric,
    DepthEpistemic,
}

impl FloatKind {
    pub const ALL: [FloatKind; 6] = [
        FloatKind::Confidence,
        FloatKind::SemanticAleatoric,
        FloatKind::SemanticEpistemic,
        FloatKind::Depth,
        FloatKind::DepthAleatoric,
        FloatKind::DepthEpistemic,
    ];

    /// The fixed colour scale of this image's false colour.
    pub fn color_scale(self, ranges: &ColormapParams) -> ColorScale {
        match self {
            FloatKind::Confidence => ColorScale::confidence(),
            FloatKind::SemanticAleatoric => {
                ColorScale::uncertainty(ranges.semantic_aleatoric_max_nats, "nats")
            }
            FloatKind::SemanticEpistemic => {
                ColorScale::uncertainty(ranges.semantic_epistemic_max_nats, "nats")
            }
            FloatKind::Depth => ColorScale::depth(ranges),
            FloatKind::DepthAleatoric => ColorScale::uncertainty(ranges.depth_aleatoric_max_m, "m"),
            FloatKind::DepthEpistemic => ColorScale::uncertainty(ranges.depth_epistemic_max_m, "m"),
        }
    }

    /// File name stem used by `infer` (`<stem>.tiff`, `<stem>_color.png`).
    pub fn file_stem(self) -> &'static str {
        match self {
            FloatKind::Confidence => "confidence",
            FloatKind::SemanticAleatoric => "semantic_aleatoric",
            FloatKind::SemanticEpistemic => "semantic_epistemic",
            FloatKind::Depth => "depth",
            FloatKind::DepthAleatoric => "depth_aleatoric",
            FloatKind::DepthEpistemic => "depth_epistemic",
        }
    }
}

/// Every float image the prediction has, with the fixed colour scale of its false-colour
/// rendering. Epistemic images appear only in mc and moments modes.
pub fn float_images<'a>(
    p: &'a Prediction,
    ranges: &ColormapParams,
) -> Vec<(FloatKind, &'a FloatImage, ColorScale)> {
    let mut out: Vec<(FloatKind, &FloatImage)> = Vec::new();
    if let Some(s) = &p.semantic {
        out.push((FloatKind::Confidence, &s.confidence));
        out.push((FloatKind::SemanticAleatoric, &s.aleatoric_entropy));
        if let Some(mi) = &s.epistemic_mutual_information {
            out.push((FloatKind::SemanticEpistemic, mi));
        }
    }
    if let Some(d) = &p.depth {
        out.push((FloatKind::Depth, &d.depth_m));
        if let Some(std) = &d.aleatoric_std_m {
            out.push((FloatKind::DepthAleatoric, std));
        }
        if let Some(std) = &d.epistemic_std_m {
            out.push((FloatKind::DepthEpistemic, std));
        }
    }
    out.into_iter()
        .map(|(kind, image)| (kind, image, kind.color_scale(ranges)))
        .collect()
}

/// The label image in the model's class colours.
pub fn label_colors(labels: &LabelImage, palette: &[[u8; 3]]) -> RgbImage {
    let (w, h) = labels.dimensions();
    match labels {
        LabelImage::U8(img) => {
            colorize_labels(w, h, img.as_raw().iter().map(|&v| v as usize), palette)
        }
        LabelImage::U16(img) => {
            colorize_labels(w, h, img.as_raw().iter().map(|&v| v as usize), palette)
        }
    }
}

const LABELS_FILE: &str = "labels.png";
const LABELS_COLOR_FILE: &str = "labels_color.png";

/// Whether [`write_prediction`] writes files of this name (in some mode).
pub fn is_prediction_file(name: &str) -> bool {
    [LABELS_FILE, LABELS_COLOR_FILE].contains(&name)
        || FloatKind::ALL.iter().any(|kind| {
            let stem = kind.file_stem();
            name == format!("{stem}.tiff") || name == format!("{stem}_color.png")
        })
}

/// Writes every output image of `prediction` into `dir` (created if needed) and returns
/// the paths written. `palette` gives one colour per class.
pub fn write_prediction(
    dir: &Path,
    prediction: &Prediction,
    palette: &[[u8; 3]],
    ranges: &ColormapParams,
    colorbar: bool,
) -> Result<Vec<PathBuf>> {
    std::fs::create_dir_all(dir).map_err(|e| Error::io(dir, e))?;
    let mut written = Vec::new();
    for (kind, image, scale) in float_images(prediction, ranges) {
        let tiff = dir.join(format!("{}.tiff", kind.file_stem()));
        write_float_tiff(&tiff, image)?;
        let png = dir.join(format!("{}_color.png", kind.file_stem()));
        let colored = scale.colorize(image);
        let colored = if colorbar {
            with_colorbar(&colored, &scale)
        } else {
            colored
        };
        save_png(&png, &colored)?;
        written.extend([tiff, png]);
    }
    if let Some(semantic) = &prediction.semantic {
        let raw = dir.join(LABELS_FILE);
        match &semantic.labels {
            LabelImage::U8(img) => save_png(&raw, img)?,
            LabelImage::U16(img) => save_png(&raw, img)?,
        }
        let color_path = dir.join(LABELS_COLOR_FILE);
        let colored = label_colors(&semantic.labels, palette);
        save_png(&color_path, &colored)?;
        written.extend([raw, color_path]);
    }
    Ok(written)
}

/// One picture of a prediction for a person: the input, the colour labels and depth, and
/// the four uncertainty images (with colour bars), each titled. Tiles a mode lacks
/// (epistemic in aleatoric mode) say so instead of showing zeros.
pub fn contact_sheet(
    input: &RgbImage,
    prediction: &Prediction,
    palette: &[[u8; 3]],
    ranges: &ColormapParams,
) -> RgbImage {
    let (w, h) = input.dimensions();
    // Wide frames are shrunk to 480 px; narrow ones enlarged by a whole factor, pixel for
    // pixel, until the longest title and the colour bars' labels fit (208 px); no tile is
    // taller than 960 px (a tall strip is enlarged less, or shrunk, and then drawn on a
    // white tile of 208 px so its labels still fit).
    const MIN_TILE_WIDTH: u32 = 208;
    const MAX_TILE_HEIGHT: u32 = 960;
    let (w, h) = (w.max(1), h.max(1));
    // Sizes in u64: a strip millions of pixels tall times the enlargement overflows u32.
    let (w64, h64, max_h) = (w as u64, h as u64, MAX_TILE_HEIGHT as u64);
    let (mut tw, mut th) = if w > 480 {
        (480, (h64 * 480 / w64).max(1))
    } else if w < MIN_TILE_WIDTH {
        let k = MIN_TILE_WIDTH.div_ceil(w) as u64;
        (w64 * k, h64 * k)
    } else {
        (w64, h64)
    };
    if th > max_h {
        (tw, th) = if h64 <= max_h {
            let k = max_h / h64;
            (w64 * k, h64 * k)
        } else {
            ((w64 * max_h / h64).max(1), max_h)
        };
    }
    // Both at most 480 x 960 now.
    let (tw, th) = (tw as u32, th as u32);
    let cell_w = tw.max(MIN_TILE_WIDTH);
    let filter = if tw > w {
        image::imageops::FilterType::Nearest
    } else {
        image::imageops::FilterType::Triangle
    };
    let fit = |img: &RgbImage| {
        let resized = image::imageops::resize(img, tw, th, filter);
        if tw == cell_w {
            return resized;
        }
        let mut tile = RgbImage::from_pixel(cell_w, th, image::Rgb([255, 255, 255]));
        image::imageops::replace(&mut tile, &resized, 0, 0);
        tile
    };
    let floats = float_images(prediction, ranges);
    let find = |kind: FloatKind| floats.iter().find(|(k, _, _)| *k == kind);
    let float_tile = |kind: FloatKind| {
        find(kind).map(|(_, image, scale)| with_colorbar(&fit(&scale.colorize(image)), scale))
    };
    let labels = prediction
        .semantic
        .as_ref()
        .map(|s| fit(&label_colors(&s.labels, palette)));
    let tiles: Vec<(&str, Option<RgbImage>)> = vec![
        ("input", Some(fit(input))),
        ("labels", labels),
        ("depth (m)", float_tile(FloatKind::Depth)),
        ("confidence", float_tile(FloatKind::Confidence)),
        (
            "semantic aleatoric (nats)",
            float_tile(FloatKind::SemanticAleatoric),
        ),
        (
            "semantic epistemic (nats)",
            float_tile(FloatKind::SemanticEpistemic),
        ),
        (
            "depth aleatoric std (m)",
            float_tile(FloatKind::DepthAleatoric),
        ),
        (
            "depth epistemic std (m)",
            float_tile(FloatKind::DepthEpistemic),
        ),
    ];
    const TITLE: u32 = 12;
    const GAP: u32 = 4;
    let cell_h = tiles
        .iter()
        .filter_map(|(_, t)| t.as_ref())
        .map(|t| t.height())
        .max()
        .unwrap_or(th)
        + TITLE;
    let (cols, rows) = (4u32, 2u32);
    let mut sheet = RgbImage::from_pixel(
        cols * (cell_w + GAP) + GAP,
        rows * (cell_h + GAP) + GAP,
        image::Rgb([255, 255, 255]),
    );
    for (i, (title, tile)) in tiles.iter().enumerate() {
        let (x, y) = (
            GAP + (i as u32 % cols) * (cell_w + GAP),
            GAP + (i as u32 / cols) * (cell_h + GAP),
        );
        crate::colormap::draw_text(&mut sheet, title, x, y + 2);
        match tile {
            Some(tile) => image::imageops::replace(&mut sheet, tile, x as i64, (y + TITLE) as i64),
            None => {
                // A task the model has, without its epistemic image: the mode's doing.
                let task_present = match title.starts_with("depth") {
                    true => prediction.depth.is_some(),
                    false => prediction.semantic.is_some(),
                };
                let note = if title.contains("epistemic") && task_present {
                    "mc or moments mode"
                } else {
                    "not in this model"
                };
                let blank = RgbImage::from_pixel(cell_w, th, image::Rgb([230, 230, 230]));
                image::imageops::replace(&mut sheet, &blank, x as i64, (y + TITLE) as i64);
                crate::colormap::draw_text(&mut sheet, note, x + 4, y + TITLE + th / 2);
            }
        }
    }
    sheet
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Written through a temporary file: the old contents stay until the new ones are
    /// whole, nothing is left beside it, and the mode is File::create's (umask), not
    /// owner-only.
    #[test]
    fn files_are_replaced_whole_with_the_usual_mode() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("report.json");
        write_file(&path, b"old").unwrap();
        write_file(&path, b"new").unwrap();
        assert_eq!(std::fs::read(&path).unwrap(), b"new");
        let names: Vec<_> = std::fs::read_dir(dir.path())
            .unwrap()
            .map(|e| e.unwrap().file_name())
            .collect();
        assert_eq!(names, ["report.json"]);
        // Names at the file system's limit (255 bytes), of one-byte and of four-byte
        // characters: the temporary file's name still fits.
        for long in ["n".repeat(255), "🦀".repeat(63)] {
            let long = dir.path().join(long);
            write_file(&long, b"x").unwrap();
            write_file(&long, b"y").unwrap();
            assert_eq!(std::fs::read(&long).unwrap(), b"y");
            std::fs::remove_file(&long).unwrap();
        }
        #[cfg(unix)]
        {
            use std::os::unix::fs::PermissionsExt;
            let plain = dir.path().join("plain");
            std::fs::File::create(&plain).unwrap();
            let mode = |p: &Path| std::fs::metadata(p).unwrap().permissions().mode() & 0o777;
            assert_eq!(mode(&path), mode(&plain));
            // A file replaced keeps its own mode.
            std::fs::set_permissions(&path, std::fs::Permissions::from_mode(0o600)).unwrap();
            write_file(&path, b"newer").unwrap();
            assert_eq!(mode(&path), 0o600);
            std::fs::remove_file(&plain).unwrap();
        }
        // A directory that is not there: the error names the file.
        let e = write_file(&dir.path().join("no/such.json"), b"x").unwrap_err();
        assert!(e.to_string().contains("no/such.json"), "{e}");
        // A symbolic link is written through, not replaced by a file.
        #[cfg(unix)]
        {
            let link = dir.path().join("link.json");
            std::os::unix::fs::symlink(&path, &link).unwrap();
            write_file(&link, b"through").unwrap();
            assert!(std::fs::symlink_metadata(&link)
                .unwrap()
                .file_type()
                .is_symlink());
            assert_eq!(std::fs::read(&path).unwrap(), b"through");
        }
    }

    #[test]
    fn float_tiff_round_trips_exactly_including_nan() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("x.tiff");
        let img = FloatImage::from_fn(7, 5, |x, y| {
            image::Luma([if x == 3 {
                f32::NAN
            } else {
                x as f32 * 0.1 + y as f32 * 1e-7
            }])
        });
        write_float_tiff(&path, &img).unwrap();
        let back = read_float_tiff(&path).unwrap();
        assert_eq!(back.dimensions(), (7, 5));
        for (a, b) in img.pixels().zip(back.pixels()) {
            assert_eq!(a.0[0].to_bits(), b.0[0].to_bits());
        }
    }

    /// An image above the pixel limit is refused from its header, saying its size; one
    /// below it opens.
    #[test]
    fn a_huge_image_is_refused_by_its_size_before_decoding() {
        let dir = tempfile::tempdir().unwrap();
        let huge = dir.path().join("huge.ppm");
        std::fs::write(&huge, b"P6\n20000 12000\n255\n\x00\x00\x00").unwrap();
        let e = open_image(&huge).unwrap_err().to_string();
        assert!(
            e.contains("20000x12000 is 240 megapixels, above the limit of 100"),
            "{e}"
        );
        let small = dir.path().join("small.ppm");
        std::fs::write(&small, b"P6\n2 1\n255\n\x01\x02\x03\x04\x05\x06").unwrap();
        let image = open_image(&small).unwrap().to_rgb8();
        assert_eq!(image.as_raw(), &[1, 2, 3, 4, 5, 6]);
    }

    /// A JPEG whose EXIF says "rotate 90°" (a phone held upright) opens turned as viewers
    /// show it with open_photo, as stored with open_image (datasets: labels are of the
    /// stored pixels).
    #[test]
    fn a_photo_is_turned_as_its_exif_orientation_says() {
        let dir = tempfile::tempdir().unwrap();
        let img = image::RgbImage::from_fn(32, 16, |x, _| {
            image::Rgb(if x < 16 { [250, 0, 0] } else { [0, 0, 250] })
        });
        let mut jpeg = Vec::new();
        img.write_to(
            &mut std::io::Cursor::new(&mut jpeg),
            image::ImageFormat::Jpeg,
        )
        .unwrap();
        // APP1 with a little-endian TIFF header and one IFD entry: Orientation (0x0112),
        // SHORT, 1 value: 6 (rotate 90° clockwise to display).
        let mut exif = b"Exif\0\0II\x2a\0\x08\0\0\0\x01\0".to_vec();
        exif.extend_from_slice(&[0x12, 0x01, 3, 0, 1, 0, 0, 0, 6, 0, 0, 0, 0, 0, 0, 0]);
        let mut file = jpeg[..2].to_vec();
        file.extend_from_slice(&[0xFF, 0xE1]);
        file.extend_from_slice(&(exif.len() as u16 + 2).to_be_bytes());
        file.extend_from_slice(&exif);
        file.extend_from_slice(&jpeg[2..]);
        let path = dir.path().join("portrait.jpg");
        std::fs::write(&path, file).unwrap();
        let stored = open_image(&path).unwrap().to_rgb8();
        assert_eq!(stored.dimensions(), (32, 16));
        let shown = open_photo(&path).unwrap().to_rgb8();
        assert_eq!(shown.dimensions(), (16, 32));
        // Turned clockwise: the stored left (red) half is now the top.
        let [r, _, b] = shown.get_pixel(8, 4).0;
        assert!(r > 200 && b < 50, "{:?}", shown.get_pixel(8, 4));
        let [r, _, b] = shown.get_pixel(8, 28).0;
        assert!(b > 200 && r < 50, "{:?}", shown.get_pixel(8, 28));
    }

    /// A full disk is an error even for a file smaller than a write buffer (one dropped
    /// unflushed would lose it): /dev/full fails every write with ENOSPC. (A device is
    /// written in place, never replaced by a file.)
    #[test]
    fn a_full_disk_is_reported_for_every_small_file() {
        let full = Path::new("/dev/full");
        if cfg!(not(target_os = "linux")) && !full.exists() {
            return;
        }
        let is_full = |r: Result<()>| match r {
            Err(Error::Io { source, .. }) => source.kind() == std::io::ErrorKind::StorageFull,
            _ => false,
        };
        assert!(is_full(save_png(full, &RgbImage::new(2, 2))));
        assert!(is_full(write_float_tiff(full, &FloatImage::new(2, 2))));
        assert!(is_full(write_file(full, b"ply")));
        assert!(!std::fs::metadata(full).unwrap().is_file());
    }
}

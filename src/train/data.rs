//! Training data: dataset layouts on disk, loading with clear errors, and augmented batches.
//!
//! Layouts (labels are single-channel PNG; depth is a 16-bit PNG scaled by `depth_scale`
//! metres per unit with 0 = no depth, or a 32-bit float TIFF in metres):
//! - `camvid`: ROOT/SPLIT/*.png images, ROOT/SPLITannot/ ids 0..10 with 11 = void, and
//!   optionally ROOT/SPLITdepth/ in millimetres (what `bayes_perception synth` writes);
//! - `nyuv2`: ROOT/SPLIT/image/, ROOT/SPLIT/label/ (40 classes as 1..40, 0 = unlabelled)
//!   and ROOT/SPLIT/depth/ (millimetres);
//! - `generic`: directories, classes and scales given in a YAML file ([`GenericLayout`]).
//!
//! Class ids inside training run 0..C-1 with C meaning void.

use std::collections::HashMap;
use std::ffi::OsString;
use std::path::{Path, PathBuf};

use image::RgbImage;
use rand::Rng;
use rand_chacha::ChaCha8Rng;
use serde::Deserialize;
use tch::{Device, Kind, Tensor};

use crate::error::{Error, Result};
use crate::model::{ClassInfo, InputSpec};
use crate::output::open_image;
use crate::text_file::{read_limited, MAX_CONFIG_BYTES};

/// A layout described in YAML, for datasets that are neither CamVid nor NYUv2.
#[derive(Debug, Clone, PartialEq, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct GenericLayout {
    /// Directories relative to the YAML file (or absolute); `{split}` is replaced.
    pub image_dir: String,
    #[serde(default)]
    pub label_dir: Option<String>,
    #[serde(default)]
    pub depth_dir: Option<String>,
    /// Class names and colours in id order (empty when there are no labels).
    #[serde(default)]
    pub classes: Vec<ClassInfo>,
    /// Stored label value that means void (unlabelled).
    #[serde(default = "default_void")]
    pub void_label: i64,
    /// Subtracted from stored labels to get class ids (1 when classes start at 1).
    #[serde(default)]
    pub label_offset: i64,
    /// Metres per unit of 16-bit depth PNGs.
    #[serde(default = "default_depth_scale")]
    pub depth_scale: f64,
}

fn default_void() -> i64 {
    255
}

fn default_depth_scale() -> f64 {
    0.001
}

/// The label folders already warned about (ids outside the classes).
static UNKNOWN_LABELS: crate::log_once::LogOnce = crate::log_once::LogOnce::new();

/// How stored labels map to training class ids.
#[derive(Debug, Clone, Copy, PartialEq)]
struct LabelMap {
    classes: i64,
    void_label: i64,
    offset: i64,
}

impl LabelMap {
    /// Whether a stored label is the void label or one of the classes (what `map` does not
    /// turn into void).
    fn knows(&self, stored: i64) -> bool {
        stored == self.void_label || self.map(stored) != self.classes
    }

    /// Says (once per folder) when labels read from `path` hold ids that are neither a
    /// class nor the void label (raw 32-class CamVid for the 11-class layout, a `classes`
    /// list too short): they count as void, which leaves those pixels out of the loss and
    /// the metrics, and that should not go unsaid.
    fn warn_of_unknown(&self, path: &Path, stored: &[i64]) {
        let mut unknown = stored.iter().filter(|&&v| !self.knows(v));
        let Some(example) = unknown.next() else {
            return;
        };
        let folder = path.parent().unwrap_or(path);
        if UNKNOWN_LABELS.is_new(&folder.display().to_string()) {
            log::warn!(
                "{}: {} of {} pixels hold label ids that are neither one of the {} classes nor \
                 the void label {} (e.g. {example}); they count as void: check the dataset's \
                 classes and void_label (said once per folder)",
                path.display(),
                1 + unknown.count(),
                stored.len(),
                self.classes,
                self.void_label,
            );
        }
    }

    fn map(&self, stored: i64) -> i64 {
        if stored == self.void_label {
            return self.classes;
        }
        let id = stored - self.offset;
        if (0..self.classes).contains(&id) {
            id
        } else {
            self.classes
        }
    }
}

/// The files of one example.
#[derive(Debug, Clone, PartialEq)]
pub struct SampleFiles {
    pub image: PathBuf,
    pub label: Option<PathBuf>,
    pub depth: Option<PathBuf>,
}

/// A split of a dataset on disk.
#[derive(Debug, Clone)]
pub struct Dataset {
    pub files: Vec<SampleFiles>,
    pub classes: Vec<ClassInfo>,
    labels: LabelMap,
    depth_scale: f64,
}

/// One loaded example: labels as class ids (C = void), depth in metres (NaN = none).
/// Training may hold every example in memory, so labels are 16-bit (a quarter of int64's
/// 8 bytes a pixel: 0.5 instead of 2 GB for NYUv2's training split); batches widen them.
#[derive(Debug, Clone)]
pub struct Sample {
    pub rgb: RgbImage,
    pub labels: Option<Vec<i16>>,
    pub depth: Option<Vec<f32>>,
}

/// CamVid's classes with the SegNet palette.
pub fn camvid_classes() -> Vec<ClassInfo> {
    crate::synth::CAMVID_CLASSES
        .iter()
        .map(|(name, color)| ClassInfo {
            name: (*name).into(),
            color: *color,
        })
        .collect()
}

/// NYUv2's 40 classes (names as class1..class40; colours spread).
pub fn nyuv2_classes() -> Vec<ClassInfo> {
    (1..=40)
        .map(|i| ClassInfo {
            name: format!("class{i}"),
            color: crate::colormap::distinct_color(i - 1),
        })
        .collect()
}

fn list_images(dir: &Path) -> Result<Vec<PathBuf>> {
    let entries = std::fs::read_dir(dir).map_err(|e| Error::io(dir, e))?;
    let mut files: Vec<PathBuf> = entries
        .filter_map(|e| e.ok().map(|e| e.path()))
        .filter(|p| p.is_file() && image::ImageFormat::from_path(p).is_ok())
        .collect();
    files.sort();
    Ok(files)
}

/// The image files of `dir` by stem (file name without extension), as images are paired
/// with their labels, depth and masks; two files of one stem (`0001.png`, `0001.tif`) are
/// an error, not a silent pick.
pub(crate) fn images_by_stem(dir: &Path) -> Result<HashMap<OsString, PathBuf>> {
    by_stem(list_images(dir)?)
}

/// `files` by stem; two of one stem are an error ([`images_by_stem`]).
fn by_stem(files: Vec<PathBuf>) -> Result<HashMap<OsString, PathBuf>> {
    let mut by_stem = HashMap::new();
    for file in files {
        let stem = file.file_stem().unwrap_or_default().to_owned();
        if let Some(other) = by_stem.insert(stem, file.clone()) {
            return Err(Error::Dataset {
                path: file,
                message: format!("has the same name as {} (which one?)", other.display()),
            });
        }
    }
    Ok(by_stem)
}

/// Pairs every image with the file of the same stem in `dir`; both sides must match.
fn pair(images: &[PathBuf], dir: &Path, what: &str) -> Result<Vec<PathBuf>> {
    let mut others = images_by_stem(dir)?;
    let mut paired = Vec::with_capacity(images.len());
    for image in images {
        let found = others
            .remove(image.file_stem().unwrap_or_default())
            .ok_or_else(|| Error::Dataset {
                path: image.clone(),
                message: format!(
                    "no {what} file of the same name in {} (every image needs one)",
                    dir.display()
                ),
            })?;
        paired.push(found);
    }
    if let Some(extra) = others.into_values().min() {
        return Err(Error::Dataset {
            path: extra,
            message: format!(
                "a {what} file without an image of the same name in {}",
                images[0].parent().unwrap_or(Path::new(".")).display()
            ),
        });
    }
    Ok(paired)
}

impl Dataset {
    fn assemble(
        image_dir: &Path,
        label_dir: Option<PathBuf>,
        depth_dir: Option<PathBuf>,
        classes: Vec<ClassInfo>,
        labels: LabelMap,
        depth_scale: f64,
    ) -> Result<Self> {
        if labels.classes > i64::from(i16::MAX) {
            return Err(Error::Dataset {
                path: image_dir.into(),
                message: format!(
                    "{} classes: at most {} are supported",
                    labels.classes,
                    i16::MAX
                ),
            });
        }
        let images = list_images(image_dir)?;
        if images.is_empty() {
            return Err(Error::Dataset {
                path: image_dir.into(),
                message: "no images (PNG, JPEG, TIFF...) in this folder".into(),
            });
        }
        // Labels, depth and masks are found by stem: one image per stem.
        by_stem(images.clone())?;
        let label_files = label_dir.map(|d| pair(&images, &d, "label")).transpose()?;
        let depth_files = depth_dir.map(|d| pair(&images, &d, "depth")).transpose()?;
        let files = images
            .into_iter()
            .enumerate()
            .map(|(i, image)| SampleFiles {
                image,
                label: label_files.as_ref().map(|l| l[i].clone()),
                depth: depth_files.as_ref().map(|d| d[i].clone()),
            })
            .collect();
        Ok(Dataset {
            files,
            classes,
            labels,
            depth_scale,
        })
    }

    /// ROOT/SPLIT, ROOT/SPLITannot, and ROOT/SPLITdepth when it exists.
    pub fn camvid(root: &Path, split: &str) -> Result<Self> {
        let depth = root.join(format!("{split}depth"));
        let classes = camvid_classes();
        let map = LabelMap {
            classes: 11,
            void_label: 11,
            offset: 0,
        };
        Self::assemble(
            &root.join(split),
            Some(root.join(format!("{split}annot"))),
            depth.is_dir().then_some(depth),
            classes,
            map,
            0.001,
        )
    }

    /// ROOT/SPLIT/{image,label,depth}.
    pub fn nyuv2(root: &Path, split: &str) -> Result<Self> {
        let base = root.join(split);
        let map = LabelMap {
            classes: 40,
            void_label: 0,
            offset: 1,
        };
        let depth = base.join("depth");
        Self::assemble(
            &base.join("image"),
            Some(base.join("label")),
            depth.is_dir().then_some(depth),
            nyuv2_classes(),
            map,
            0.001,
        )
    }

    /// The layout of a YAML file ([`GenericLayout`]).
    pub fn generic(layout_file: &Path, split: &str) -> Result<Self> {
        let text =
            read_limited(layout_file, MAX_CONFIG_BYTES).map_err(|e| Error::io(layout_file, e))?;
        let layout: GenericLayout = serde_yaml::from_str(&text).map_err(|e| {
            Error::config(layout_file.display().to_string(), "(layout)", e.to_string())
        })?;
        let base = layout_file.parent().unwrap_or(Path::new("."));
        let dir = |d: &str| base.join(d.replace("{split}", split));
        let map = LabelMap {
            classes: layout.classes.len() as i64,
            void_label: layout.void_label,
            offset: layout.label_offset,
        };
        Self::assemble(
            &dir(&layout.image_dir),
            layout.label_dir.as_deref().map(dir),
            layout.depth_dir.as_deref().map(dir),
            layout.classes,
            map,
            layout.depth_scale,
        )
    }

    pub fn len(&self) -> usize {
        self.files.len()
    }

    pub fn is_empty(&self) -> bool {
        self.files.is_empty()
    }

    pub fn has_labels(&self) -> bool {
        self.files.first().is_some_and(|f| f.label.is_some())
    }

    pub fn has_depth(&self) -> bool {
        self.files.first().is_some_and(|f| f.depth.is_some())
    }

    /// The void class id (= number of classes).
    pub fn void_id(&self) -> i64 {
        self.labels.classes
    }

    /// Loads example `i`, checking that its files agree in size.
    pub fn load(&self, i: usize) -> Result<Sample> {
        let files = &self.files[i];
        let err = |path: &Path, message: String| Error::Image {
            path: path.into(),
            message,
        };
        let rgb = open_image(&files.image)?.to_rgb8();
        let size = rgb.dimensions();
        let check = |path: &Path, dims: (u32, u32)| {
            if dims == size {
                Ok(())
            } else {
                Err(err(
                    path,
                    format!(
                        "is {}x{} but its image {} is {}x{}",
                        dims.0,
                        dims.1,
                        files.image.display(),
                        size.0,
                        size.1
                    ),
                ))
            }
        };
        let labels = match &files.label {
            Some(path) => {
                let img = open_image(path)?;
                check(path, (img.width(), img.height()))?;
                let stored: Vec<i64> = match img {
                    image::DynamicImage::ImageLuma8(g) => {
                        g.into_raw().into_iter().map(i64::from).collect()
                    }
                    image::DynamicImage::ImageLuma16(g) => {
                        g.into_raw().into_iter().map(i64::from).collect()
                    }
                    _ => {
                        return Err(err(
                            path,
                            "labels must be a single-channel 8- or 16-bit PNG".into(),
                        ))
                    }
                };
                self.labels.warn_of_unknown(path, &stored);
                // map gives 0..=classes, and assemble allows at most i16::MAX classes.
                Some(
                    stored
                        .into_iter()
                        .map(|v| self.labels.map(v) as i16)
                        .collect(),
                )
            }
            None => None,
        };
        let depth = match &files.depth {
            Some(path) if path.extension().is_some_and(|e| e == "tiff" || e == "tif") => {
                let img = crate::output::read_float_tiff(path)?;
                check(path, img.dimensions())?;
                Some(
                    img.into_raw()
                        .into_iter()
                        .map(|d| {
                            if d.is_finite() && d > 0.0 {
                                d
                            } else {
                                f32::NAN
                            }
                        })
                        .collect(),
                )
            }
            Some(path) => {
                let img = open_image(path)?;
                check(path, (img.width(), img.height()))?;
                let image::DynamicImage::ImageLuma16(g) = img else {
                    return Err(err(path, "depth PNGs must be 16-bit single-channel".into()));
                };
                let scale = self.depth_scale as f32;
                Some(
                    g.into_raw()
                        .into_iter()
                        .map(|v| if v == 0 { f32::NAN } else { v as f32 * scale })
                        .collect(),
                )
            }
            None => None,
        };
        Ok(Sample { rgb, labels, depth })
    }
}

/// Augmentation settings.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Augment {
    /// Random crop (height, width); `None` keeps full frames.
    pub crop: Option<(u32, u32)>,
    pub flip: bool,
    /// Brightness and contrast jitter amplitude (0 = off), e.g. 0.1 for ±10 %.
    pub color_jitter: f32,
}

/// A batch on `device`: normalised images `[B, 3, H, W]`, labels `[B, H, W]` (int64,
/// void = C) and depth `[B, H, W]` (metres, NaN = none) when the data has them.
pub struct Batch {
    pub images: Tensor,
    pub labels: Option<Tensor>,
    pub depth: Option<Tensor>,
}

/// Crops, flips and jitters each sample, then stacks them. All samples must share a size
/// when there is no crop.
pub fn make_batch(
    samples: &[&Sample],
    input: &InputSpec,
    augment: Augment,
    void_id: i64,
    rng: &mut ChaCha8Rng,
    device: Device,
) -> Batch {
    let mut images = Vec::new();
    let mut labels = Vec::new();
    let mut depths = Vec::new();
    for s in samples {
        let (w, h) = s.rgb.dimensions();
        let (ch, cw) = augment
            .crop
            .map_or((h, w), |(ch, cw)| (ch.min(h), cw.min(w)));
        let (y0, x0) = (
            rng.gen_range(0..=h - ch) as i64,
            rng.gen_range(0..=w - cw) as i64,
        );
        let flip = augment.flip && rng.gen_bool(0.5);
        let crop = |t: Tensor| {
            let t = t.narrow(-2, y0, ch as i64).narrow(-1, x0, cw as i64);
            if flip {
                t.flip([-1])
            } else {
                t
            }
        };
        let rgb = Tensor::from_slice(s.rgb.as_raw())
            .view([h as i64, w as i64, 3])
            .permute([2, 0, 1])
            .to_kind(Kind::Float)
            / 255.0;
        let mut rgb = crop(rgb);
        if augment.color_jitter > 0.0 {
            let j = augment.color_jitter as f64;
            let (brightness, contrast) = (rng.gen_range(-j..=j), 1.0 + rng.gen_range(-j..=j));
            let mean = rgb.mean(Kind::Float);
            rgb = ((rgb - &mean) * contrast + mean + brightness).clamp(0.0, 1.0);
        }
        images.push(rgb);
        if let Some(l) = &s.labels {
            labels
                .push(crop(Tensor::from_slice(l).view([h as i64, w as i64])).to_kind(Kind::Int64));
        } else {
            labels.push(Tensor::full(
                [ch as i64, cw as i64],
                void_id,
                (Kind::Int64, Device::Cpu),
            ));
        }
        if let Some(d) = &s.depth {
            depths.push(crop(Tensor::from_slice(d).view([h as i64, w as i64])));
        }
    }
    let mean = Tensor::from_slice(&input.mean).view([1, 3, 1, 1]);
    let std = Tensor::from_slice(&input.std).view([1, 3, 1, 1]);
    let images = ((Tensor::stack(&images, 0) - mean) / std).to_device(device);
    let has_labels = samples.iter().any(|s| s.labels.is_some());
    Batch {
        images,
        labels: has_labels.then(|| Tensor::stack(&labels, 0).to_device(device)),
        depth: (depths.len() == samples.len() && !depths.is_empty())
            .then(|| Tensor::stack(&depths, 0).to_device(device)),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use image::{GrayImage, ImageBuffer, Luma, Rgb};
    use rand::SeedableRng;

    fn write_camvid(root: &Path, names: &[&str], size: (u32, u32)) {
        for d in ["train", "trainannot", "traindepth"] {
            std::fs::create_dir_all(root.join(d)).unwrap();
        }
        for n in names {
            RgbImage::from_pixel(size.0, size.1, Rgb([10, 20, 30]))
                .save(root.join("train").join(format!("{n}.png")))
                .unwrap();
            GrayImage::from_fn(size.0, size.1, |x, _| Luma([if x == 0 { 11 } else { 3 }]))
                .save(root.join("trainannot").join(format!("{n}.png")))
                .unwrap();
            ImageBuffer::<Luma<u16>, Vec<u16>>::from_fn(size.0, size.1, |x, _| {
                Luma([if x == 1 { 0 } else { 2500 }])
            })
            .save(root.join("traindepth").join(format!("{n}.png")))
            .unwrap();
        }
    }

    #[test]
    fn camvid_layout_loads_labels_void_and_millimetre_depth() {
        let tmp = tempfile::tempdir().unwrap();
        write_camvid(tmp.path(), &["a", "b"], (6, 4));
        let ds = Dataset::camvid(tmp.path(), "train").unwrap();
        assert_eq!(
            (ds.len(), ds.has_labels(), ds.has_depth(), ds.void_id()),
            (2, true, true, 11)
        );
        let s = ds.load(0).unwrap();
        let labels = s.labels.unwrap();
        assert_eq!((labels[0], labels[1]), (11, 3));
        // What counts as known: the classes 0..10 and the void label 11, nothing else.
        let map = ds.labels;
        assert!((0..=11).all(|v| map.knows(v)));
        assert!(!map.knows(12) && !map.knows(31) && !map.knows(-1));
        assert_eq!(map.map(31), 11);
        let depth = s.depth.unwrap();
        assert!(depth[1].is_nan() && (depth[0] - 2.5).abs() < 1e-6);
    }

    #[test]
    fn mismatched_files_and_sizes_are_named() {
        let tmp = tempfile::tempdir().unwrap();
        write_camvid(tmp.path(), &["a", "b"], (6, 4));
        std::fs::remove_file(tmp.path().join("trainannot/b.png")).unwrap();
        let e = Dataset::camvid(tmp.path(), "train")
            .unwrap_err()
            .to_string();
        assert!(e.contains("b.png") && e.contains("no label file"), "{e}");
        write_camvid(tmp.path(), &["b"], (6, 4));
        GrayImage::new(3, 3)
            .save(tmp.path().join("trainannot/c.png"))
            .unwrap();
        let e = Dataset::camvid(tmp.path(), "train")
            .unwrap_err()
            .to_string();
        assert!(e.contains("c.png") && e.contains("without an image"), "{e}");
        std::fs::remove_file(tmp.path().join("trainannot/c.png")).unwrap();
        GrayImage::new(5, 4)
            .save(tmp.path().join("trainannot/b.png"))
            .unwrap();
        let e = Dataset::camvid(tmp.path(), "train")
            .unwrap()
            .load(1)
            .unwrap_err()
            .to_string();
        assert!(e.contains("is 5x4 but its image"), "{e}");
        assert!(Dataset::camvid(&tmp.path().join("nope"), "train").is_err());
        // Two files of one stem: which one is meant is not guessed.
        GrayImage::new(6, 4)
            .save(tmp.path().join("trainannot/b.png"))
            .unwrap();
        GrayImage::new(6, 4)
            .save(tmp.path().join("trainannot/b.tif"))
            .unwrap();
        let e = Dataset::camvid(tmp.path(), "train")
            .unwrap_err()
            .to_string();
        assert!(
            e.contains("b.") && e.contains("has the same name as"),
            "{e}"
        );
        std::fs::remove_file(tmp.path().join("trainannot/b.tif")).unwrap();
        RgbImage::new(6, 4)
            .save(tmp.path().join("train/b.jpg"))
            .unwrap();
        let e = Dataset::camvid(tmp.path(), "train")
            .unwrap_err()
            .to_string();
        assert!(e.contains("has the same name as"), "{e}");
    }

    #[test]
    fn nyuv2_and_generic_layouts_map_labels() {
        let tmp = tempfile::tempdir().unwrap();
        let base = tmp.path().join("test");
        for d in ["image", "label", "depth"] {
            std::fs::create_dir_all(base.join(d)).unwrap();
        }
        RgbImage::new(3, 1).save(base.join("image/x.png")).unwrap();
        GrayImage::from_raw(3, 1, vec![0, 1, 40])
            .unwrap()
            .save(base.join("label/x.png"))
            .unwrap();
        ImageBuffer::<Luma<u16>, Vec<u16>>::from_raw(3, 1, vec![1000, 0, 65535])
            .unwrap()
            .save(base.join("depth/x.png"))
            .unwrap();
        let s = Dataset::nyuv2(tmp.path(), "test").unwrap().load(0).unwrap();
        assert_eq!(s.labels.unwrap(), vec![40, 0, 39]);
        let yaml = "image_dir: test/image\nlabel_dir: test/label\nclasses:\n  - {name: a, color: [1, 2, 3]}\n  - {name: b, color: [4, 5, 6]}\nvoid_label: 40\ndepth_scale: 0.01\ndepth_dir: '{split}/depth'\n";
        std::fs::write(tmp.path().join("layout.yaml"), yaml).unwrap();
        let ds = Dataset::generic(&tmp.path().join("layout.yaml"), "test").unwrap();
        let s = ds.load(0).unwrap();
        assert_eq!(s.labels.unwrap(), vec![0, 1, 2]);
        assert!((s.depth.unwrap()[0] - 10.0).abs() < 1e-5);
        // Labels are held 16-bit: more classes than that holds are refused.
        let many = "  - {name: c, color: [0, 0, 0]}\n".repeat(i16::MAX as usize + 1);
        let yaml = format!("image_dir: test/image\nlabel_dir: test/label\nclasses:\n{many}");
        std::fs::write(tmp.path().join("many.yaml"), yaml).unwrap();
        let e = Dataset::generic(&tmp.path().join("many.yaml"), "test").unwrap_err();
        assert!(e.to_string().contains("32768 classes"), "{e}");
        std::fs::write(tmp.path().join("bad.yaml"), "image_dir: x\nlabels: y\n").unwrap();
        assert!(Dataset::generic(&tmp.path().join("bad.yaml"), "test")
            .unwrap_err()
            .to_string()
            .contains("labels"));
    }

    #[test]
    fn batches_crop_flip_and_keep_labels_aligned() {
        let rgb = RgbImage::from_fn(8, 6, |x, y| Rgb([x as u8 * 30, y as u8 * 40, 0]));
        let labels: Vec<i16> = (0..48).map(|i| (i % 8) as i16 % 3).collect();
        let sample = Sample {
            rgb,
            labels: Some(labels),
            depth: Some(vec![1.5; 48]),
        };
        let input = InputSpec {
            height: 6,
            width: 8,
            mean: [0.0; 3],
            std: [1.0; 3],
        };
        let mut rng = ChaCha8Rng::seed_from_u64(1);
        let augment = Augment {
            crop: Some((4, 5)),
            flip: true,
            color_jitter: 0.0,
        };
        for _ in 0..10 {
            let b = make_batch(
                &[&sample, &sample],
                &input,
                augment,
                3,
                &mut rng,
                Device::Cpu,
            );
            assert_eq!(b.images.size(), [2, 3, 4, 5]);
            let labels = b.labels.unwrap();
            assert_eq!((labels.size(), labels.kind()), (vec![2, 4, 5], Kind::Int64));
            // The red channel encodes the column, the label too: they must agree after
            // cropping and flipping.
            let col = (b.images.get(0).get(0) * 255.0 / 30.0)
                .round()
                .to_kind(Kind::Int64);
            assert!(labels.get(0).equal(&col.remainder(3)));
            assert_eq!(b.depth.unwrap().size(), [2, 4, 5]);
        }
    }
}

//! The examples a training run reads: decoded once at the start and held in memory, or,
//! for data larger than the memory allows, read again for each batch by a thread that
//! keeps the next batches ready while the network trains on this one.
//!
//! Either way every example is decoded once at the start: a file that cannot be read
//! stops the run before it trains, and what the run needs of all of them (image sizes,
//! class frequencies) is gathered then.

use std::borrow::Cow;
use std::path::Path;
use std::sync::mpsc::{sync_channel, Receiver};
use std::thread::JoinHandle;

use rayon::prelude::*;
use serde::{Deserialize, Serialize};

use super::data::{Dataset, Sample};
use crate::error::{Error, Result};

/// `data.in_memory`: whether the decoded examples are held in memory.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum InMemory {
    /// Held when they take at most half the memory available at the start.
    #[default]
    Auto,
    Always,
    /// Read from disk for each batch.
    Never,
}

/// Batches read ahead of the one being trained on (each waits decoded in memory).
const READ_AHEAD: usize = 2;

/// Bytes an example takes decoded, per pixel: 3 for the image, 2 for labels (16-bit
/// class ids), 4 for depth (f32).
fn bytes_per_pixel(dataset: &Dataset) -> u64 {
    3 + if dataset.has_labels() { 2 } else { 0 } + if dataset.has_depth() { 4 } else { 0 }
}

/// The size of the first `count` examples of `dataset` decoded, from their images'
/// headers (nothing is decoded).
pub fn decoded_bytes(dataset: &Dataset, count: usize) -> Result<u64> {
    let per_pixel = bytes_per_pixel(dataset);
    dataset.files[..count]
        .par_iter()
        .map(|files| {
            let (w, h) = image_size(&files.image)?;
            Ok(u64::from(w)
                .saturating_mul(u64::from(h))
                .saturating_mul(per_pixel))
        })
        .try_reduce(|| 0, |a, b| Ok(a.saturating_add(b)))
}

/// An image's width and height from its header.
fn image_size(path: &Path) -> Result<(u32, u32)> {
    image::ImageReader::open(path)
        .map_err(|e| Error::io(path, e))?
        .with_guessed_format()
        .map_err(|e| Error::io(path, e))?
        .into_dimensions()
        .map_err(|e| Error::Image {
            path: path.into(),
            message: e.to_string(),
        })
}

/// The memory available for new work, in bytes: what the kernel says is
/// (`MemAvailable`), or less where this process's control group is limited below it (a
/// container's memory limit, which MemAvailable does not show).
pub fn memory_available() -> Option<u64> {
    let text = std::fs::read_to_string("/proc/meminfo").ok()?;
    let line = text.lines().find(|l| l.starts_with("MemAvailable:"))?;
    let kib: u64 = line.split_whitespace().nth(1)?.parse().ok()?;
    let host = kib.saturating_mul(1024);
    Some(cgroup_memory_left().map_or(host, |left| left.min(host)))
}

/// What this process's control group may still take: its limit less its use (cgroup v2
/// `memory.max` and `memory.current`, v1 `memory.limit_in_bytes` and
/// `memory.usage_in_bytes`); None where no limit can be read.
fn cgroup_memory_left() -> Option<u64> {
    let cgroups = std::fs::read_to_string("/proc/self/cgroup").ok()?;
    let v2 = cgroups.lines().find_map(|l| l.strip_prefix("0::"));
    let v1 = (cgroups.lines()).find_map(|l| l.split_once(":memory:").map(|(_, path)| path));
    let v2 = v2.map(|p| ("/sys/fs/cgroup", p, "memory.max", "memory.current"));
    let v1 = v1.map(|p| {
        let names = ("memory.limit_in_bytes", "memory.usage_in_bytes");
        ("/sys/fs/cgroup/memory", p, names.0, names.1)
    });
    // (A hybrid system has both lines; its memory controller is v1's.)
    v2.into_iter()
        .chain(v1)
        .find_map(|(root, path, limit, usage)| {
            // The group's own directory, or the mount's root where a container shows its
            // group as the root.
            let relative = path.trim().trim_start_matches('/');
            [
                Path::new(root).join(relative),
                Path::new(root).to_path_buf(),
            ]
            .into_iter()
            .find_map(|dir| {
                let read = |name: &str| -> Option<u64> {
                    // v2 writes "max" for no limit: no number, so no limit read.
                    std::fs::read_to_string(dir.join(name))
                        .ok()?
                        .trim()
                        .parse()
                        .ok()
                };
                Some(read(limit)?.saturating_sub(read(usage)?))
            })
        })
}

/// Whether examples of `bytes` decoded are held, by the setting and the memory
/// `available` (`Auto` holds them when that is unknown, and when they take at most half
/// of it: the network, the optimiser and libtorch need the rest).
pub fn hold(setting: InMemory, bytes: u64, available: Option<u64>) -> bool {
    match setting {
        InMemory::Always => true,
        InMemory::Never => false,
        InMemory::Auto => available.is_none_or(|available| bytes <= available / 2),
    }
}

/// Per class, the labelled pixels, and the pixels of the images in which the class
/// appears: what median frequency balancing (Eigen and Fergus) weighs classes by.
#[derive(Debug, Clone, PartialEq, Default)]
pub struct ClassPixels {
    pub labelled: Vec<u64>,
    pub in_images_with: Vec<u64>,
}

impl ClassPixels {
    fn new(classes: usize) -> Self {
        ClassPixels {
            labelled: vec![0; classes],
            in_images_with: vec![0; classes],
        }
    }

    /// Adds one image's [`image_classes`].
    fn add(&mut self, (present, pixels): &(Vec<(usize, u64)>, u64)) {
        for &(class, n) in present {
            self.labelled[class] += n;
            self.in_images_with[class] += pixels;
        }
    }
}

/// The classes an image's labels hold (class ids below `classes`; the others are void),
/// each with its pixel count, and the image's pixel count.
fn image_classes(labels: &[i16], classes: usize) -> (Vec<(usize, u64)>, u64) {
    let mut here = vec![0u64; classes];
    for &l in labels {
        if let Some(count) = usize::try_from(l).ok().and_then(|l| here.get_mut(l)) {
            *count += 1;
        }
    }
    let present = here.into_iter().enumerate().filter(|&(_, n)| n > 0);
    (present.collect(), labels.len() as u64)
}

/// The examples of one split, checked, with what the run needs to know of them.
pub struct Examples {
    dataset: Dataset,
    /// The decoded examples, when held.
    held: Option<Vec<Sample>>,
    /// Each example's image size (width, height).
    pub sizes: Vec<(u32, u32)>,
    /// Class frequencies, when the split has labels.
    pub class_pixels: Option<ClassPixels>,
}

impl Examples {
    /// Decodes the first `count` examples of `dataset` (several at a time), checking each,
    /// and holds them when `held`.
    /// The error of a file that cannot be read is the first one's in the split's order.
    pub fn read(dataset: Dataset, count: usize, held: bool) -> Result<Self> {
        let classes = usize::try_from(dataset.void_id()).unwrap_or(0);
        type Read = (Option<Sample>, (u32, u32), Option<(Vec<(usize, u64)>, u64)>);
        let read: Vec<Result<Read>> = (0..count)
            .into_par_iter()
            .map(|i| {
                let sample = dataset.load(i)?;
                let size = sample.rgb.dimensions();
                let present = (sample.labels.as_ref()).map(|l| image_classes(l, classes));
                Ok((held.then_some(sample), size, present))
            })
            .collect();
        let mut samples = Vec::with_capacity(if held { count } else { 0 });
        let mut sizes = Vec::with_capacity(count);
        let mut class_pixels = dataset.has_labels().then(|| ClassPixels::new(classes));
        for read in read {
            let (sample, size, present) = read?;
            samples.extend(sample);
            sizes.push(size);
            if let (Some(total), Some(present)) = (class_pixels.as_mut(), present) {
                total.add(&present);
            }
        }
        Ok(Examples {
            dataset,
            held: held.then_some(samples),
            sizes,
            class_pixels,
        })
    }

    pub fn len(&self) -> usize {
        self.sizes.len()
    }

    pub fn is_empty(&self) -> bool {
        self.sizes.is_empty()
    }

    /// Whether the examples are held in memory.
    pub fn held(&self) -> bool {
        self.held.is_some()
    }

    /// The examples of each of `batches` (indices), in order: the held ones, or read on a
    /// thread two batches ahead, the examples of a batch decoded at once on rayon's
    /// threads (a GPU would wait on one thread decoding large images). A file that cannot
    /// be read any more, or is another size than at the start, ends the batches with its
    /// error (the first of the batch's in its order).
    pub fn batches(&self, batches: Vec<Vec<usize>>) -> Batches<'_> {
        match &self.held {
            Some(held) => Batches {
                held: Some(held),
                order: batches.into_iter(),
                reader: None,
            },
            None => {
                let (sender, receiver) = sync_channel(READ_AHEAD);
                let dataset = self.dataset.clone();
                let sizes = self.sizes.clone();
                // A file changed since the start into another size would break the crops
                // fitted to the sizes then.
                let load = move |i: usize| {
                    let sample = dataset.load(i)?;
                    let ((w, h), (w0, h0)) = (sample.rgb.dimensions(), sizes[i]);
                    if (w, h) != (w0, h0) {
                        return Err(Error::Image {
                            path: dataset.files[i].image.clone(),
                            message: format!("is {w}x{h} now, {w0}x{h0} at the start"),
                        });
                    }
                    Ok(sample)
                };
                let thread = std::thread::Builder::new()
                    .name("training-data".into())
                    .spawn(move || {
                        for ids in batches {
                            let read: Vec<Result<Sample>> =
                                ids.par_iter().map(|&i| load(i)).collect();
                            let read: Result<Vec<Sample>> = read.into_iter().collect();
                            let failed = read.is_err();
                            // The trainer stopped taking them (finished, interrupted).
                            if sender.send(read).is_err() || failed {
                                return;
                            }
                        }
                    })
                    .expect("a thread for reading training data");
                Batches {
                    held: None,
                    order: Vec::new().into_iter(),
                    reader: Some((receiver, thread)),
                }
            }
        }
    }
}

/// The examples of a run of batches ([`Examples::batches`]).
pub struct Batches<'a> {
    held: Option<&'a [Sample]>,
    order: std::vec::IntoIter<Vec<usize>>,
    reader: Option<Reader>,
}

/// The reading thread of [`Batches`] and what it hands over.
type Reader = (Receiver<Result<Vec<Sample>>>, JoinHandle<()>);

impl<'a> Iterator for Batches<'a> {
    type Item = Result<Vec<Cow<'a, Sample>>>;

    fn next(&mut self) -> Option<Self::Item> {
        if let Some(held) = self.held {
            let ids = self.order.next()?;
            return Some(Ok(ids.iter().map(|&i| Cow::Borrowed(&held[i])).collect()));
        }
        let (receiver, _) = self.reader.as_ref()?;
        match receiver.recv() {
            Ok(read) => Some(read.map(|samples| samples.into_iter().map(Cow::Owned).collect())),
            // Every batch sent, or the thread ended without its error (a panic).
            Err(_) => {
                let (_, thread) = self.reader.take()?;
                thread.join().err().map(|panic| {
                    let reason = (panic.downcast_ref::<String>().cloned())
                        .or_else(|| panic.downcast_ref::<&str>().map(|s| s.to_string()))
                        .unwrap_or_default();
                    Err(Error::Training(format!(
                        "the thread reading the training data stopped unexpectedly: {reason}"
                    )))
                })
            }
        }
    }
}

impl Drop for Batches<'_> {
    fn drop(&mut self) {
        // Unblocks the thread (its next send fails), then waits for it: it is at most
        // one batch's reading away from noticing.
        if let Some((receiver, thread)) = self.reader.take() {
            drop(receiver);
            let _ = thread.join();
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn auto_holds_what_takes_at_most_half_the_memory() {
        let gib = 1u64 << 30;
        assert!(hold(InMemory::Auto, 2 * gib, Some(4 * gib)));
        assert!(!hold(InMemory::Auto, 2 * gib + 1, Some(4 * gib)));
        assert!(hold(InMemory::Auto, 100 * gib, None));
        assert!(hold(InMemory::Always, 100 * gib, Some(gib)));
        assert!(!hold(InMemory::Never, 1, Some(100 * gib)));
    }

    #[test]
    fn class_pixels_count_labelled_pixels_and_images_with_the_class() {
        let mut both = ClassPixels::new(3);
        let a = image_classes(&[0, 0, 1, 3, 3, 3, -1], 3); // 3 and -1 are void
        assert_eq!(a, (vec![(0, 2), (1, 1)], 7));
        both.add(&a);
        both.add(&image_classes(&[1, 1, 2, 2], 3));
        assert_eq!(both.labelled, [2, 3, 2]);
        assert_eq!(both.in_images_with, [7, 11, 4]);
    }

    #[test]
    #[cfg(target_os = "linux")]
    fn the_memory_available_is_read() {
        // Linux always has /proc/meminfo with MemAvailable (since 3.14).
        let available = memory_available().expect("MemAvailable in /proc/meminfo");
        assert!(available > 0);
        if let Some(left) = cgroup_memory_left() {
            assert!(available <= left);
        }
    }
}

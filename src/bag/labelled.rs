//! Labelled bags: camera frames with their ground truth as topics of the same bag, the
//! form in which a fleet's evaluation data (labelled drives, simulation) is kept and
//! evaluated bag by bag (`eval --bag`, the Ray driver).
//!
//! Next to a camera topic `NS/...` (sensor_msgs/Image or CompressedImage), ground truth is
//! sensor_msgs/Image under `NS/ground_truth/`, each message with the camera frame's exact
//! header stamp:
//!
//! | topic | encoding | content |
//! |---|---|---|
//! | `labels` | mono8 or 16UC1 | class id per pixel; ids at or above the model's classes are void |
//! | `depth` | 32FC1 | metres; NaN or 0 = no depth |
//! | `noise_mask`, `ood_mask` | mono8 | nonzero on sensor-noise patches / out-of-distribution objects |
//!
//! Each topic is optional; a frame is evaluated once its image and every ground-truth topic
//! the bag has for its camera have arrived (in any order). Nothing here runs a model.

use std::collections::{BTreeMap, BTreeSet};
use std::ops::ControlFlow;

use super::cdr::CdrMessage;
use super::read::{combined_damage, damage_met_before, BagError, BagEvent, BagMessage, BagReader};
use crate::eval::{LabelledFrame, LeftOut};
use crate::msg::encoding::{decode_compressed, decode_image, shown, Rows};
use crate::msg::{CompressedImage, Image};

/// Ground-truth topics, relative to the camera's namespace.
pub const LABELS_TOPIC: &str = "ground_truth/labels";
pub const DEPTH_TOPIC: &str = "ground_truth/depth";
pub const NOISE_MASK_TOPIC: &str = "ground_truth/noise_mask";
pub const OOD_MASK_TOPIC: &str = "ground_truth/ood_mask";

/// Whether a topic is ground truth of a labelled bag (`.../ground_truth/labels` and the
/// others above), not a camera.
pub fn is_ground_truth_topic(name: &str) -> bool {
    [LABELS_TOPIC, DEPTH_TOPIC, NOISE_MASK_TOPIC, OOD_MASK_TOPIC]
        .iter()
        .any(|t| {
            name.strip_suffix(t)
                .is_some_and(|ns| ns.is_empty() || ns.ends_with('/'))
        })
}

const IMAGE: &str = "sensor_msgs/msg/Image";
const COMPRESSED: &str = "sensor_msgs/msg/CompressedImage";

/// Frames waiting for their other parts at most; beyond it the oldest is given up.
const MAX_PENDING: usize = 64;

/// What a labelled bag held, beyond the frames handed on.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct LabelledTally {
    /// Camera frames read, and handed on with their ground truth.
    pub frames: u64,
    pub evaluated: u64,
    /// Frames left out, by reason (undecodable image or ground truth, a part that never
    /// came, sizes that disagree, a part lost to damage), and where reading stopped in
    /// each damaged storage file (truncated or corrupt); damage in a bag of which no frame
    /// was handed on, and every other read error (I/O), is the error instead.
    pub left_out: LeftOut,
}

/// The camera and ground-truth topics of a labelled bag.
#[derive(Debug, Clone, PartialEq)]
pub struct LabelledTopics {
    pub camera: String,
    /// The ground-truth topics present, full names, in [`LABELS_TOPIC`]... order.
    pub labels: Option<String>,
    pub depth: Option<String>,
    pub noise: Option<String>,
    pub ood: Option<String>,
}

impl LabelledTopics {
    /// The camera (`camera`, or the one camera topic with ground truth next to it) and
    /// its ground-truth topics, from the bag's topic list.
    pub fn find(reader: &BagReader, camera: Option<&str>) -> Result<Self, BagError> {
        let info = reader.info()?;
        let has = |name: &str| info.topics.iter().any(|t| t.name == name);
        let ground_truth = |camera: &str| {
            let ns = namespace(camera);
            let topic = |rel: &str| {
                let name = format!("{ns}/{rel}");
                has(&name).then_some(name)
            };
            LabelledTopics {
                camera: camera.to_owned(),
                labels: topic(LABELS_TOPIC),
                depth: topic(DEPTH_TOPIC),
                noise: topic(NOISE_MASK_TOPIC),
                ood: topic(OOD_MASK_TOPIC),
            }
        };
        let invalid = |message: String| BagError::Invalid {
            path: reader.path().to_owned(),
            message,
        };
        let topics = match camera {
            Some(name) => {
                if !has(name) {
                    return Err(invalid(format!("no topic {name}")));
                }
                ground_truth(name)
            }
            None => {
                let cameras: Vec<LabelledTopics> = info
                    .topics
                    .iter()
                    .filter(|t| {
                        (t.type_name == IMAGE || t.type_name == COMPRESSED)
                            && !t.name.contains("/ground_truth/")
                    })
                    .map(|t| ground_truth(&t.name))
                    .filter(|g| g.labels.is_some() || g.depth.is_some())
                    .collect();
                match cameras.as_slice() {
                    [one] => one.clone(),
                    [] => {
                        return Err(invalid(format!(
                            "no camera topic with {LABELS_TOPIC} or {DEPTH_TOPIC} next to it"
                        )))
                    }
                    many => {
                        let names: Vec<&str> = many.iter().map(|g| g.camera.as_str()).collect();
                        return Err(invalid(format!(
                            "several labelled cameras ({}); pick one with --topic",
                            names.join(", ")
                        )));
                    }
                }
            }
        };
        if topics.labels.is_none() && topics.depth.is_none() {
            return Err(invalid(format!(
                "{} has no {LABELS_TOPIC} or {DEPTH_TOPIC} next to it",
                topics.camera
            )));
        }
        Ok(topics)
    }
}

/// The namespace of a camera topic: `/cam/image_raw` -> `/cam`.
fn namespace(topic: &str) -> &str {
    topic.rfind('/').map_or("", |i| &topic[..i])
}

/// One frame's parts as they arrive.
#[derive(Default)]
struct Partial {
    rgb: Option<image::RgbImage>,
    labels: Option<Vec<i64>>,
    depth: Option<Vec<f32>>,
    noise: Option<Vec<bool>>,
    ood: Option<Vec<bool>>,
    size: Option<(u32, u32)>,
}

/// Reads a labelled bag and hands each complete frame to `visit`, which may stop early
/// with `ControlFlow::Break`. An error of `visit` stops reading and is returned. Damage
/// loses the rest of its storage file and reading goes on with the next one; it is in the
/// tally, or returned where no frame was evaluated at all.
pub fn read_labelled_frames<E: From<BagError>>(
    reader: &BagReader,
    topics: &LabelledTopics,
    mut visit: impl FnMut(LabelledFrame) -> Result<ControlFlow<()>, E>,
) -> Result<LabelledTally, E> {
    let mut tally = LabelledTally::default();
    let mut pending: BTreeMap<(i32, u32), Partial> = BTreeMap::new();
    let mut failure: Option<E> = None;
    // `visit` asked to stop: frames whose parts may still have come are not left out.
    let mut stopped = false;
    // The latest stamp read of each part: a frame missing a part whose latest stamp read
    // is not past its own may have lost that part to damage.
    let mut last_read: BTreeMap<Part, (i32, u32)> = BTreeMap::new();
    let mut lost = Lost::default();
    // Damage met (reading goes on with the bag's next file), and where each lost the rest
    // of its file.
    let mut damage: Vec<BagError> = Vec::new();
    let mut gaps: Vec<Gap> = Vec::new();
    let read = reader.read_events(|event| {
        let m = match event {
            BagEvent::Message(m) => m,
            BagEvent::Damage(e) => {
                damage.push(e);
                gaps.push(Gap {
                    before: last_read.clone(),
                    after: BTreeMap::new(),
                });
                return ControlFlow::Continue(());
            }
        };
        let part = match classify(topics, m) {
            Some(part) => part,
            None => return ControlFlow::Continue(()),
        };
        if part == Part::Camera {
            tally.frames += 1;
        }
        let decoded = match m.unreadable {
            Some(reason) => Err((None, reason.to_owned())),
            None => decode_part(part, m),
        };
        let decoded = match decoded {
            Ok(decoded) => decoded,
            Err((Some(stamp), reason)) => {
                if !lost.drops(stamp, part, topics) {
                    let partial = pending.remove(&stamp);
                    lost.refuse(stamp, part, partial, reason, topics, &mut tally.left_out);
                }
                return ControlFlow::Continue(());
            }
            Err((None, reason)) => {
                lost.unplaced.entry(part).or_default().push(reason);
                return ControlFlow::Continue(());
            }
        };
        let stamp = decoded.stamp;
        if lost.drops(stamp, part, topics) {
            return ControlFlow::Continue(());
        }
        let last = last_read.entry(part).or_insert(stamp);
        *last = (*last).max(stamp);
        for gap in &mut gaps {
            gap.after.entry(part).or_insert(stamp);
        }
        let entry = pending.entry(stamp).or_default();
        if let Err(reason) = entry.put(decoded) {
            let partial = pending.remove(&stamp);
            lost.refuse(stamp, part, partial, reason, topics, &mut tally.left_out);
            return ControlFlow::Continue(());
        }
        if entry.complete(topics) {
            let id = format!("{}@{}.{:09}", topics.camera, stamp.0, stamp.1);
            let frame = pending.remove(&stamp).expect("present").into_frame(id);
            tally.evaluated += 1;
            match visit(frame) {
                Ok(ControlFlow::Continue(())) => {}
                Ok(ControlFlow::Break(())) => {
                    stopped = true;
                    return ControlFlow::Break(());
                }
                Err(e) => {
                    failure = Some(e);
                    return ControlFlow::Break(());
                }
            }
        }
        while pending.len() > MAX_PENDING {
            let (stamp, partial) = pending.pop_first().expect("more than MAX_PENDING");
            let reason = if partial.lost_to_damage(stamp, topics, &gaps) {
                LOST_TO_DAMAGE
            } else {
                "a part of the frame never came (more than 64 frames apart)"
            };
            lost.leave_out(&partial, topics, reason, &mut tally.left_out);
        }
        ControlFlow::Continue(())
    });
    if let Some(e) = failure {
        return Err(e);
    }
    if let Err(e) = read {
        return Err(E::from(damage_met_before(e, &damage)));
    }
    if tally.evaluated == 0 {
        if let Some(e) = combined_damage(damage) {
            return Err(E::from(e));
        }
    } else {
        tally
            .left_out
            .damage
            .extend(damage.iter().map(|e| e.to_string()));
    }
    for (stamp, partial) in pending {
        if stopped && partial.cut(stamp, topics, &last_read) {
            // Not done when the visitor stopped: not left out either.
            continue;
        }
        let otherwise = if partial.lost_to_damage(stamp, topics, &gaps) {
            // Its other parts may have been in a damaged file's lost rest: the damage's
            // loss, not bad input.
            LOST_TO_DAMAGE
        } else if partial.rgb.is_some() {
            "ground truth missing"
        } else {
            "ground truth without its camera frame"
        };
        lost.leave_out(&partial, topics, otherwise, &mut tally.left_out);
    }
    lost.finish(topics, &mut tally.left_out);
    Ok(tally)
}

/// Why a frame whose missing parts may have been in a damaged file's lost rest is left out.
const LOST_TO_DAMAGE: &str = "incomplete where reading stopped at the damage";

/// Where damage lost the rest of a storage file, by part: the latest stamp read before
/// it, and the first read after it (none: that part has not come again).
struct Gap {
    before: BTreeMap<Part, (i32, u32)>,
    after: BTreeMap<Part, (i32, u32)>,
}

impl Gap {
    /// Whether the `part` of the frame at `stamp` may have been in the lost rest: its
    /// stamp lies between those read around the damage.
    fn may_have_lost(&self, part: Part, stamp: (i32, u32)) -> bool {
        self.before.get(&part).is_none_or(|&b| stamp >= b)
            && self.after.get(&part).is_none_or(|&a| stamp <= a)
    }
}

/// The parts that could not be read, kept so that a frame left out counts once however
/// many of its parts are lost.
#[derive(Default)]
struct Lost {
    /// Frames left out (and counted) by stamp, with the parts of them read so far: their
    /// other parts are dropped uncounted, until a part of a kind already read starts a
    /// later frame of the same stamp (bags that reuse stamps). At most [`MAX_PENDING`].
    refused: BTreeMap<(i32, u32), BTreeSet<Part>>,
    /// Reasons of parts lost before their stamp was known (the message or its header not
    /// readable), by part: each explains one frame left without that part; those none
    /// explains count at the end, one frame for one lost part of each kind.
    unplaced: BTreeMap<Part, Vec<String>>,
}

impl Lost {
    /// Counts a frame left out for `reason` at its part `part`, with what it had read
    /// before (`partial`).
    fn refuse(
        &mut self,
        stamp: (i32, u32),
        part: Part,
        partial: Option<Partial>,
        reason: String,
        topics: &LabelledTopics,
        left_out: &mut LeftOut,
    ) {
        left_out.skip(reason);
        let mut read = partial.map_or_else(BTreeSet::new, |p| p.present(topics));
        read.insert(part);
        self.refused.insert(stamp, read);
        while self.refused.len() > MAX_PENDING {
            let (_, read) = self.refused.pop_first().expect("more than MAX_PENDING");
            self.absorb(&read, topics);
        }
    }

    /// Whether a part of frame `stamp` belongs to a frame left out already (and is
    /// dropped); a part of a kind that frame read already belongs to a later frame.
    fn drops(&mut self, stamp: (i32, u32), part: Part, topics: &LabelledTopics) -> bool {
        let Some(read) = self.refused.get_mut(&stamp) else {
            return false;
        };
        if read.contains(&part) {
            let read = self.refused.remove(&stamp).expect("present");
            self.absorb(&read, topics);
            return false;
        }
        read.insert(part);
        if wanted(topics).all(|p| read.contains(&p)) {
            self.refused.remove(&stamp);
        }
        true
    }

    /// Takes one lost part of each of the kinds `parts` (those of one frame): the reason
    /// of the first, if any was lost.
    fn take(&mut self, parts: impl IntoIterator<Item = Part>) -> Option<String> {
        let mut reason = None;
        for part in parts {
            if let Some(lost) = self.unplaced.get_mut(&part).and_then(Vec::pop) {
                reason.get_or_insert(lost);
            }
        }
        reason
    }

    /// A frame left out that reads no more parts takes one lost part of each kind it did
    /// not read: those were likely its own, counted with it.
    fn absorb(&mut self, read: &BTreeSet<Part>, topics: &LabelledTopics) {
        self.take(wanted(topics).filter(|p| !read.contains(p)));
    }

    /// After reading: the lost parts no frame accounts for, one frame for one lost part of
    /// each kind (a frame whose every part was lost counts once).
    fn finish(mut self, topics: &LabelledTopics, left_out: &mut LeftOut) {
        for read in std::mem::take(&mut self.refused).into_values() {
            self.absorb(&read, topics);
        }
        while let Some(reason) = self.take(wanted(topics)) {
            left_out.skip(reason);
        }
    }

    /// Leaves out a frame that stays incomplete: for the reason of a lost part it misses
    /// (taking one lost part of each kind it misses), else `otherwise`.
    fn leave_out(
        &mut self,
        partial: &Partial,
        topics: &LabelledTopics,
        otherwise: &str,
        left_out: &mut LeftOut,
    ) {
        let reason = self.take(partial.missing(topics));
        left_out.skip(reason.unwrap_or_else(|| otherwise.to_owned()));
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
enum Part {
    Camera,
    Labels,
    Depth,
    Noise,
    Ood,
}

/// The parts a frame of `topics` has: its image and each ground-truth topic the bag has.
fn wanted(topics: &LabelledTopics) -> impl Iterator<Item = Part> + '_ {
    [
        (Part::Camera, true),
        (Part::Labels, topics.labels.is_some()),
        (Part::Depth, topics.depth.is_some()),
        (Part::Noise, topics.noise.is_some()),
        (Part::Ood, topics.ood.is_some()),
    ]
    .into_iter()
    .filter_map(|(part, wanted)| wanted.then_some(part))
}

fn classify(topics: &LabelledTopics, m: &BagMessage) -> Option<Part> {
    let is = |t: &Option<String>| t.as_deref() == Some(m.topic);
    if m.topic == topics.camera {
        Some(Part::Camera)
    } else if is(&topics.labels) {
        Some(Part::Labels)
    } else if is(&topics.depth) {
        Some(Part::Depth)
    } else if is(&topics.noise) {
        Some(Part::Noise)
    } else if is(&topics.ood) {
        Some(Part::Ood)
    } else {
        None
    }
}

enum Value {
    Rgb(image::RgbImage),
    Labels(Vec<i64>),
    Depth(Vec<f32>),
    Mask(Part, Vec<bool>),
}

struct Decoded {
    stamp: (i32, u32),
    size: (u32, u32),
    value: Value,
}

/// A part's message decoded; the reason (for the tally) when it cannot be, with the frame's
/// stamp where its header could be read.
fn decode_part(part: Part, m: &BagMessage) -> Result<Decoded, (Option<(i32, u32)>, String)> {
    let what = match part {
        Part::Camera => "camera frame",
        Part::Labels => "ground-truth labels",
        Part::Depth => "ground-truth depth",
        Part::Noise | Part::Ood => "ground-truth mask",
    };
    let bad = |e: &dyn std::fmt::Display| format!("{what} not decodable: {e}");
    let stamp_of = |h: &crate::msg::Header| (h.stamp.sec, h.stamp.nanosec);
    if part == Part::Camera {
        let (stamp, rgb) = if m.type_name == COMPRESSED {
            let msg = CompressedImage::from_cdr(m.data).map_err(|e| (None, bad(&e)))?;
            let stamp = stamp_of(&msg.header);
            (
                stamp,
                decode_compressed(&msg).map_err(|e| (Some(stamp), bad(&e)))?,
            )
        } else {
            let msg = Image::from_cdr(m.data).map_err(|e| (None, bad(&e)))?;
            let stamp = stamp_of(&msg.header);
            (
                stamp,
                decode_image(&msg).map_err(|e| (Some(stamp), bad(&e)))?,
            )
        };
        return Ok(Decoded {
            stamp,
            size: rgb.dimensions(),
            value: Value::Rgb(rgb),
        });
    }
    let msg = Image::from_cdr(m.data).map_err(|e| (None, bad(&e)))?;
    let stamp = stamp_of(&msg.header);
    Ok(Decoded {
        stamp,
        size: (msg.width, msg.height),
        value: ground_truth_value(part, what, &msg).map_err(|reason| (Some(stamp), reason))?,
    })
}

/// The pixels of a ground-truth image (`what` names it in the reason it cannot be read).
fn ground_truth_value(part: Part, what: &str, msg: &Image) -> Result<Value, String> {
    let h = msg.height as usize;
    let row_bytes = |bytes_per_pixel: usize| -> Result<Vec<&[u8]>, String> {
        let rows = Rows::of(msg, bytes_per_pixel)
            .map_err(|e| format!("{what}: {} {e}", shown(&msg.encoding)))?;
        Ok((0..h).map(|y| rows.row(y)).collect())
    };
    let value = match (part, msg.encoding.as_str()) {
        // 8UC1 is OpenCV's name for mono8.
        (Part::Labels, "mono8" | "8UC1") => Value::Labels(
            row_bytes(1)?
                .iter()
                .flat_map(|r| r.iter().map(|&v| v as i64))
                .collect(),
        ),
        (Part::Labels, "16UC1") => Value::Labels(
            row_bytes(2)?
                .iter()
                .flat_map(|r| {
                    r.chunks_exact(2).map(|b| {
                        let b = [b[0], b[1]];
                        (if msg.is_bigendian != 0 {
                            u16::from_be_bytes(b)
                        } else {
                            u16::from_le_bytes(b)
                        }) as i64
                    })
                })
                .collect(),
        ),
        (Part::Depth, "32FC1") => Value::Depth(
            row_bytes(4)?
                .iter()
                .flat_map(|r| {
                    r.chunks_exact(4).map(|b| {
                        let b = [b[0], b[1], b[2], b[3]];
                        if msg.is_bigendian != 0 {
                            f32::from_be_bytes(b)
                        } else {
                            f32::from_le_bytes(b)
                        }
                    })
                })
                .collect(),
        ),
        (Part::Noise | Part::Ood, "mono8" | "8UC1") => Value::Mask(
            part,
            row_bytes(1)?
                .iter()
                .flat_map(|r| r.iter().map(|&v| v != 0))
                .collect(),
        ),
        (_, encoding) => {
            return Err(format!(
                "{what}: encoding {} is not accepted",
                shown(encoding)
            ));
        }
    };
    Ok(value)
}

impl Partial {
    /// Adds a part; parts of one stamp must agree in size.
    fn put(&mut self, d: Decoded) -> Result<(), String> {
        if let Some(size) = self.size {
            if size != d.size {
                return Err(format!(
                    "parts of one frame disagree in size ({}x{} and {}x{})",
                    size.0, size.1, d.size.0, d.size.1
                ));
            }
        }
        self.size = Some(d.size);
        match d.value {
            Value::Rgb(rgb) => self.rgb = Some(rgb),
            Value::Labels(l) => self.labels = Some(l),
            Value::Depth(v) => self.depth = Some(v),
            Value::Mask(Part::Noise, m) => self.noise = Some(m),
            Value::Mask(_, m) => self.ood = Some(m),
        }
        Ok(())
    }

    fn complete(&self, topics: &LabelledTopics) -> bool {
        wanted(topics).all(|p| self.has(p))
    }

    /// The parts `topics` want that have not come.
    fn missing(&self, topics: &LabelledTopics) -> Vec<Part> {
        wanted(topics).filter(|&p| !self.has(p)).collect()
    }

    /// Whether a part this frame (at `stamp`) misses may still have come after where
    /// reading is: no message of that part later than `stamp` has been read.
    fn cut(
        &self,
        stamp: (i32, u32),
        topics: &LabelledTopics,
        last_read: &BTreeMap<Part, (i32, u32)>,
    ) -> bool {
        self.missing(topics)
            .iter()
            .any(|part| last_read.get(part).is_none_or(|&last| stamp >= last))
    }

    /// Whether a part this frame (at `stamp`) misses may have been lost to damage.
    fn lost_to_damage(&self, stamp: (i32, u32), topics: &LabelledTopics, gaps: &[Gap]) -> bool {
        self.missing(topics)
            .into_iter()
            .any(|part| gaps.iter().any(|gap| gap.may_have_lost(part, stamp)))
    }

    /// The parts that have come.
    fn present(&self, topics: &LabelledTopics) -> BTreeSet<Part> {
        wanted(topics).filter(|&p| self.has(p)).collect()
    }

    fn has(&self, part: Part) -> bool {
        match part {
            Part::Camera => self.rgb.is_some(),
            Part::Labels => self.labels.is_some(),
            Part::Depth => self.depth.is_some(),
            Part::Noise => self.noise.is_some(),
            Part::Ood => self.ood.is_some(),
        }
    }

    fn into_frame(self, id: String) -> LabelledFrame {
        LabelledFrame {
            id,
            rgb: self.rgb.expect("complete"),
            labels: self.labels,
            depth: self.depth,
            noise: self.noise,
            ood: self.ood,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::is_ground_truth_topic;

    #[test]
    fn ground_truth_topics_are_told_from_cameras() {
        for gt in [
            "/camera/ground_truth/labels",
            "/front/left/ground_truth/depth",
            "/cam/ground_truth/noise_mask",
            "ground_truth/ood_mask",
        ] {
            assert!(is_ground_truth_topic(gt), "{gt}");
        }
        for camera in [
            "/camera/image_raw",
            "/camera/ground_truth",
            "/camera/my_ground_truth/labels",
            "/camera/ground_truth/labels/compressed",
            "/camera/semantic/labels",
        ] {
            assert!(!is_ground_truth_topic(camera), "{camera}");
        }
    }
}

//! One camera frame's path through the engine, without ROS: a camera message in, the
//! node's output messages out, each with the frame's exact header.
//!
//! The ROS node and `bag process` both call [`predict_frame`] and then [`frame_outputs`],
//! the second on another thread while the next frame is predicted ([`overlapped`],
//! [`overlapped_with`]), so a bag processed offline holds the same messages the live node
//! publishes. Nothing here publishes, writes or logs; callers count and report the errors.

use std::ops::ControlFlow;

use image::RgbImage;

use crate::config::ColormapParams;
use crate::engine::{Engine, Prediction};
use crate::msg::encoding::{decode_compressed, decode_image, DecodeError};
use crate::msg::outputs::{build_outputs, OutputTopic};
use crate::msg::{CameraInfo, CompressedImage, Header, Image, PointCloud2};
use crate::points::{frame_cloud, CloudOptions};

/// A camera message as it arrived (decoded only when processed, so a frame that is
/// replaced before its turn costs nothing).
#[derive(Debug, Clone, PartialEq)]
pub enum CameraFrame {
    Raw(Image),
    Compressed(CompressedImage),
}

impl CameraFrame {
    pub fn header(&self) -> &Header {
        match self {
            CameraFrame::Raw(image) => &image.header,
            CameraFrame::Compressed(image) => &image.header,
        }
    }

    /// The frame as RGB; a typed error for unsupported encodings and malformed data.
    pub fn decode(&self) -> Result<RgbImage, DecodeError> {
        match self {
            CameraFrame::Raw(image) => decode_image(image),
            CameraFrame::Compressed(image) => decode_compressed(image),
        }
    }
}

/// The messages one frame produces.
#[derive(Debug, Clone, PartialEq)]
pub struct FrameOutputs {
    /// Output images in [`OutputTopic`] order, all with the frame's header.
    pub images: Vec<(OutputTopic, Image)>,
    /// The camera_info to republish on `depth/camera_info` with the frame's header (depth
    /// models, once a camera_info is known).
    pub camera_info: Option<CameraInfo>,
    /// The uncertainty point cloud, with the frame's header (when asked for, for depth
    /// models, once a camera_info is known)...
    pub points: Option<PointCloud2>,
    /// ...or why a cloud that was asked for could not be built (an unusable camera_info).
    pub points_error: Option<String>,
    /// A cloud was asked for a depth model's frame, but no camera_info is known yet.
    pub points_without_camera_info: bool,
    /// Time in the network's forward passes, milliseconds.
    pub forward_ms: f64,
}

/// Why a frame produced no outputs.
#[derive(Debug, thiserror::Error)]
pub enum FrameError {
    /// Bad input (unsupported encoding, malformed or undecodable data): a counted skip.
    #[error(transparent)]
    BadInput(#[from] DecodeError),
    /// The engine failed on a valid image (e.g. CUDA out of memory).
    #[error("{0}")]
    Inference(#[from] crate::Error),
}

/// A decoded frame and the engine's prediction for it: the part of a frame that runs on
/// the device.
#[derive(Debug, Clone)]
pub struct PredictedFrame {
    pub header: Header,
    pub rgb: RgbImage,
    pub prediction: Prediction,
}

/// Decodes `frame` and runs the engine on it.
pub fn predict_frame(engine: &Engine, frame: &CameraFrame) -> Result<PredictedFrame, FrameError> {
    let rgb = frame.decode()?;
    let prediction = engine.predict(&rgb)?;
    Ok(PredictedFrame {
        header: frame.header().clone(),
        rgb,
        prediction,
    })
}

/// Builds the output messages of a predicted frame for the topics `wanted` accepts, each
/// with the frame's header: the second half of a frame, all on the host.
/// `camera_info` (the camera's latest) is returned with that header too when the model
/// predicts depth, and with `points` the point cloud is built from it.
pub fn frame_outputs(
    frame: &PredictedFrame,
    palette: &[[u8; 3]],
    colormap: &ColormapParams,
    camera_info: Option<&CameraInfo>,
    points: Option<CloudOptions>,
    wanted: impl Fn(OutputTopic) -> bool,
) -> FrameOutputs {
    let PredictedFrame {
        header,
        rgb,
        prediction,
    } = frame;
    let images = build_outputs(prediction, header, palette, colormap, wanted);
    let points_without_camera_info =
        points.is_some() && camera_info.is_none() && prediction.depth.is_some();
    let (points, points_error) = match (points, camera_info) {
        (Some(filter), Some(info)) => match frame_cloud(prediction, rgb, info, filter, header) {
            Ok(cloud) => (cloud, None),
            Err(e) => (None, Some(e)),
        },
        _ => (None, None),
    };
    // The depth image's calibration (at the camera image's size): a camera_info of another
    // resolution is scaled to it, as for the cloud (one of another aspect ratio is not).
    // One with a non-finite number (Inf, NaN) is not passed on: outputs never hold them.
    let camera_info = camera_info
        .filter(|_| prediction.depth.is_some())
        .and_then(|info| info.for_image(prediction.width, prediction.height).ok())
        .map(|info| CameraInfo {
            header: header.clone(),
            ..info
        })
        .filter(CameraInfo::is_finite);
    FrameOutputs {
        images,
        camera_info,
        points,
        points_error,
        points_without_camera_info,
        forward_ms: prediction
            .timing
            .forward_ms()
            .unwrap_or(prediction.timing.total_ms),
    }
}

/// Runs `first` on each of `items` on this thread and `second` on each of its results on a
/// second thread, in order, so that `second(n)` overlaps `first(n + 1)`: one frame's
/// messages are built and published while the next frame is on the device. `first`
/// hands a result over only when `second` is ready to take it (no queue builds up, and at
/// most one result waits). Returns once `items` has ended and `second` has finished with
/// every result; stops taking items if `second`'s thread has ended (a panic there is
/// raised here after the join).
pub fn overlapped<T, R: Send>(
    items: impl IntoIterator<Item = T>,
    mut first: impl FnMut(T) -> Option<R>,
    mut second: impl FnMut(R) + Send,
) {
    overlapped_with(
        0,
        |hand_over| {
            for item in items {
                if let Some(result) = first(item) {
                    if !hand_over(result) {
                        break;
                    }
                }
            }
        },
        |result| {
            second(result);
            ControlFlow::Continue(())
        },
    );
}

/// [`overlapped`] for a first stage that is not a loop over items (a bag reader's
/// callback): `produce` runs on this thread and hands each result over with the function
/// it is given, and `second` takes them in order on a second thread. Up to `queue` results
/// wait for `second` (0: each hand-over waits until `second` takes it); the hand-over
/// returns false once `second` has stopped: after it returned `Break` (a write failed),
/// or panicked. Results still queued when `second` stops are dropped unprocessed (up to
/// `queue` of them, accepted by hand-overs that returned true). Returns what `produce`
/// returns, once `second` has finished with every result handed over; a panic in
/// `second` is raised here after the join.
pub fn overlapped_with<R: Send, P>(
    queue: usize,
    produce: impl FnOnce(&mut dyn FnMut(R) -> bool) -> P,
    mut second: impl FnMut(R) -> ControlFlow<()> + Send,
) -> P {
    let (hand_over, results) = std::sync::mpsc::sync_channel::<R>(queue);
    std::thread::scope(|scope| {
        std::thread::Builder::new()
            .name("outputs".into())
            .spawn_scoped(scope, move || {
                for result in results {
                    if second(result).is_break() {
                        break;
                    }
                }
            })
            .expect("cannot start the output thread");
        let produced = produce(&mut |result| hand_over.send(result).is_ok());
        // Closing the channel ends the output thread's loop; the scope joins it.
        drop(hand_over);
        produced
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::sync::mpsc;
    use std::time::Duration;

    #[test]
    fn every_result_reaches_the_second_stage_in_order_before_it_returns() {
        let mut seen = Vec::new();
        let mut first_calls = 0;
        overlapped(
            0..20,
            |n| {
                first_calls += 1;
                // Odd items give no result (a skipped frame): nothing is handed over.
                (n % 2 == 0).then_some(n * 10)
            },
            |r| seen.push(r),
        );
        assert_eq!(first_calls, 20);
        assert_eq!(seen, (0..20).step_by(2).map(|n| n * 10).collect::<Vec<_>>());
    }

    /// The second stage of item 0 is still running when the first stage starts item 1: it
    /// waits for that start (were the stages run one after the other it would time out).
    #[test]
    fn the_second_stage_overlaps_the_next_first_stage() {
        let (started, starts) = mpsc::channel();
        let mut saw_next_start = None;
        let saw = &mut saw_next_start;
        overlapped(
            0..3,
            |n| {
                started.send(n).unwrap();
                Some(n)
            },
            move |r| {
                if r == 0 {
                    let next =
                        std::iter::from_fn(|| starts.recv_timeout(Duration::from_secs(20)).ok())
                            .find(|&n| n == 1);
                    *saw = Some(next.is_some());
                }
            },
        );
        assert_eq!(saw_next_start, Some(true));
    }

    /// With a queue the first stage runs ahead of a busy second stage by that many
    /// results; when the second stage stops (a write failed) the hand-overs fail, the first
    /// stage ends, and what it returns comes back.
    #[test]
    fn a_queue_lets_the_first_stage_run_ahead_and_a_stop_ends_the_hand_overs() {
        let (release, gate) = mpsc::channel::<()>();
        let mut seen = Vec::new();
        let mut released_in_time = None;
        let (seen_ref, released_ref) = (&mut seen, &mut released_in_time);
        let handed = overlapped_with(
            3,
            |hand_over| {
                // 0 is taken by the (then blocked) second stage, 1-3 wait in the queue:
                // none of these hand-overs waits for the second stage.
                for n in 0..4 {
                    assert!(hand_over(n));
                }
                release.send(()).unwrap();
                let mut handed = 4;
                while hand_over(handed) {
                    handed += 1;
                }
                handed
            },
            move |n| {
                if n == 0 {
                    *released_ref = Some(gate.recv_timeout(Duration::from_secs(20)).is_ok());
                }
                seen_ref.push(n);
                if n == 5 {
                    ControlFlow::Break(())
                } else {
                    ControlFlow::Continue(())
                }
            },
        );
        assert_eq!(released_in_time, Some(true));
        assert_eq!(seen, (0..=5).collect::<Vec<_>>());
        // Hand-overs failed once the second stage had stopped; at most the queue's worth
        // were accepted after item 5.
        assert!((6..=6 + 3).contains(&handed), "{handed}");
    }

    /// A panic in the second stage ends the loop (no more items are taken) and is raised
    /// to the caller.
    #[test]
    fn a_panic_in_the_second_stage_stops_the_first_and_reaches_the_caller() {
        let mut first_calls = 0;
        let result = std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| {
            overlapped(
                0..1000,
                |n| {
                    first_calls += 1;
                    Some(n)
                },
                |r| assert!(r < 2, "stage two fails on {r}"),
            )
        }));
        assert!(result.is_err());
        // Items 0-2 handed over, at most one more computed before the hand-over failed.
        assert!(first_calls <= 4, "{first_calls}");
    }
}

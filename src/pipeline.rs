//! One camera frame's path through the engine, without ROS: a camera message in, the
//! node's output messages out, each with the frame's exact header.
//!
//! The ROS node and `bag process` both call [`process_frame`], so a bag processed offline
//! holds the same messages the live node publishes. Nothing here publishes, writes or
//! logs; callers count and report the errors.

use image::RgbImage;

use crate::config::ColormapParams;
use crate::engine::Engine;
use crate::msg::encoding::{decode_compressed, decode_image, DecodeError};
use crate::msg::outputs::{build_outputs, OutputTopic};
use crate::msg::{CameraInfo, CompressedImage, Header, Image, PointCloud2};
use crate::points::{frame_cloud, CloudFilter};

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

/// Decodes `frame`, runs the engine and builds the output messages for the topics
/// `wanted` accepts, each with the frame's header; `camera_info` (the camera's latest) is
/// returned with that header too when the model predicts depth, and with `points` the
/// point cloud is built from it.
pub fn process_frame(
    engine: &Engine,
    frame: &CameraFrame,
    palette: &[[u8; 3]],
    colormap: &ColormapParams,
    camera_info: Option<&CameraInfo>,
    points: Option<CloudFilter>,
    wanted: impl Fn(OutputTopic) -> bool,
) -> Result<FrameOutputs, FrameError> {
    let rgb = frame.decode()?;
    let prediction = engine.predict(&rgb)?;
    let header = frame.header();
    let images = build_outputs(&prediction, header, palette, colormap, wanted);
    let (points, points_error) = match (points, camera_info) {
        (Some(filter), Some(info)) => match frame_cloud(&prediction, &rgb, info, filter, header) {
            Ok(cloud) => (cloud, None),
            Err(e) => (None, Some(e)),
        },
        _ => (None, None),
    };
    let camera_info = camera_info
        .filter(|_| prediction.depth.is_some())
        .map(|info| CameraInfo {
            header: header.clone(),
            ..info.clone()
        });
    Ok(FrameOutputs {
        images,
        camera_info,
        points,
        points_error,
        forward_ms: prediction
            .timing
            .forward_ms()
            .unwrap_or(prediction.timing.total_ms),
    })
}

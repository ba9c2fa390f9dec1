//! ROS 2 message contents as plain Rust types, with no ROS dependency.
//!
//! The node's r2r layer converts these to and from r2r's generated types field by field;
//! the rosbag tools serialise them. Everything about pixels (decoding camera encodings,
//! building output images) works on these types and is tested without ROS.

pub mod encoding;
pub mod outputs;

/// builtin_interfaces/Time.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct Time {
    pub sec: i32,
    pub nanosec: u32,
}

impl Time {
    /// Nanoseconds since the epoch (negative before it).
    pub fn as_nanos(&self) -> i64 {
        self.sec as i64 * 1_000_000_000 + self.nanosec as i64
    }

    pub fn from_nanos(nanos: i64) -> Self {
        Time {
            sec: nanos.div_euclid(1_000_000_000) as i32,
            nanosec: nanos.rem_euclid(1_000_000_000) as u32,
        }
    }
}

/// std_msgs/Header.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Header {
    pub stamp: Time,
    pub frame_id: String,
}

/// sensor_msgs/Image.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Image {
    pub header: Header,
    pub height: u32,
    pub width: u32,
    /// sensor_msgs/image_encodings name, e.g. `rgb8`, `32FC1`.
    pub encoding: String,
    pub is_bigendian: u8,
    /// Row length in bytes, padding included.
    pub step: u32,
    pub data: Vec<u8>,
}

/// sensor_msgs/CompressedImage.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct CompressedImage {
    pub header: Header,
    /// e.g. `jpeg`, `png`, `rgb8; jpeg compressed bgr8`.
    pub format: String,
    pub data: Vec<u8>,
}

/// sensor_msgs/RegionOfInterest.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct RegionOfInterest {
    pub x_offset: u32,
    pub y_offset: u32,
    pub height: u32,
    pub width: u32,
    pub do_rectify: bool,
}

/// sensor_msgs/CameraInfo.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct CameraInfo {
    pub header: Header,
    pub height: u32,
    pub width: u32,
    pub distortion_model: String,
    pub d: Vec<f64>,
    pub k: [f64; 9],
    pub r: [f64; 9],
    pub p: [f64; 12],
    pub binning_x: u32,
    pub binning_y: u32,
    pub roi: RegionOfInterest,
}

impl CameraInfo {
    /// An undistorted pinhole camera (plumb_bob with zero coefficients, identity R): focal
    /// length `focal_px` in both axes and principal point (`cx`, `cy`) in ROS's pixel
    /// convention (centre of the top-left pixel at 0, 0), in K and in P.
    pub fn pinhole(
        header: Header,
        width: u32,
        height: u32,
        focal_px: f64,
        cx: f64,
        cy: f64,
    ) -> Self {
        let f = focal_px;
        CameraInfo {
            header,
            height,
            width,
            distortion_model: "plumb_bob".into(),
            d: vec![0.0; 5],
            k: [f, 0.0, cx, 0.0, f, cy, 0.0, 0.0, 1.0],
            r: [1.0, 0.0, 0.0, 0.0, 1.0, 0.0, 0.0, 0.0, 1.0],
            p: [f, 0.0, cx, 0.0, 0.0, f, cy, 0.0, 0.0, 0.0, 1.0, 0.0],
            ..CameraInfo::default()
        }
    }

    /// The calibration of this camera's images at `width` x `height`, as a consumer of
    /// the two (image_geometry, RViz) reads it. A camera_info whose binning and region of
    /// interest already give that size is returned as it is (they apply it themselves);
    /// otherwise (a resized stream) binning and ROI are applied and K and P scaled to the
    /// size ([`CameraInfo::unbinned`], then scaled).
    /// A camera_info without a size (an uncalibrated driver's, all zeros) gets the image's,
    /// its matrices as they are. Images of another aspect ratio are refused with the
    /// reason ([`CameraInfo::scaled_to`]).
    pub fn for_image(&self, width: u32, height: u32) -> Result<CameraInfo, String> {
        let plain = self.unbinned();
        if (plain.width, plain.height) == (width, height) {
            Ok(self.clone())
        } else if plain.width == 0 || plain.height == 0 {
            Ok(CameraInfo {
                width,
                height,
                ..plain
            })
        } else {
            plain.scaled_to(width, height)
        }
    }

    /// Why this camera_info may not be the calibration of images `width` x `height` with
    /// the frame `frame_id` (another camera's frame), and why it cannot be (another aspect
    /// ratio, see [`CameraInfo::scaled_to`]), if either. Empty frame ids and sizes are not
    /// compared.
    pub fn doubt_for(&self, frame_id: &str, width: u32, height: u32) -> Option<String> {
        let doubt = (!self.header.frame_id.is_empty()
            && !frame_id.is_empty()
            && self.header.frame_id != frame_id)
            .then(|| {
                format!(
                    "camera_info may be another camera's: its frame_id `{}` is not the \
                     images' `{frame_id}`",
                    self.header.frame_id
                )
            });
        let refused = self.unbinned().scaled_to(width, height).err();
        let said: Vec<String> = doubt.into_iter().chain(refused).collect();
        (!said.is_empty()).then(|| said.join("; "))
    }

    /// What may be wrong with where the outputs of a frame `width` x `height` with `header`
    /// go, with this camera_info (if one has arrived): an empty frame_id, which the outputs
    /// carry too, so that nothing (RViz, tf) can place them; and [`CameraInfo::doubt_for`].
    /// The node and `bag process` say each once.
    pub fn doubts(
        camera_info: Option<&CameraInfo>,
        header: &Header,
        width: u32,
        height: u32,
    ) -> Vec<String> {
        let unplaced = header.frame_id.is_empty().then(|| {
            "the images have an empty frame_id, and so have the outputs: RViz and tf cannot \
             place them (set the camera driver's frame_id)"
                .to_owned()
        });
        let calibration =
            camera_info.and_then(|info| info.doubt_for(&header.frame_id, width, height));
        unplaced.into_iter().chain(calibration).collect()
    }

    /// Whether every number of the calibration (D, K, R, P) is finite.
    pub fn is_finite(&self) -> bool {
        self.d
            .iter()
            .chain(&self.k)
            .chain(&self.r)
            .chain(&self.p)
            .all(|v| v.is_finite())
    }

    /// This calibration for the images the camera sends with its binning and region of
    /// interest applied, as image_geometry applies them (K and P: focal lengths divided by
    /// the binning, principal point moved by the ROI's offset, then divided), with neither
    /// left: size `roi / binning`. Unchanged without binning and ROI (or without a size).
    /// P too is moved by the raw ROI (not REP 104's rectified ROI), as image_geometry's
    /// `PinholeCameraModel` does and as image_proc's rectify crops its output: pixel u of
    /// its `image_rect` is pixel u + x_offset of the full rectified image.
    pub fn unbinned(&self) -> CameraInfo {
        let (bx, by) = (self.binning_x.max(1), self.binning_y.max(1));
        let roi = &self.roi;
        let full_roi = roi.width == 0 || roi.height == 0;
        if (bx, by) == (1, 1) && full_roi {
            return self.clone();
        }
        let (x0, y0, w, h) = if full_roi {
            (0, 0, self.width, self.height)
        } else {
            (roi.x_offset, roi.y_offset, roi.width, roi.height)
        };
        let mut info = self.clone();
        // A row with no focal length (an uncalibrated camera's zeros) is left as it is, as
        // in scaled_to: it has no principal point to move.
        for (m, cols) in [(&mut info.k[..], 3), (&mut info.p[..], 4)] {
            let (fx, fy) = (bx as f64, by as f64);
            if m[0] != 0.0 {
                m[0] /= fx;
                m[1] /= fx;
                m[2] = (m[2] - x0 as f64) / fx;
                if cols == 4 {
                    m[3] /= fx;
                }
            }
            if m[cols + 1] != 0.0 {
                m[cols + 1] /= fy;
                m[cols + 2] = (m[cols + 2] - y0 as f64) / fy;
                if cols == 4 {
                    m[7] /= fy;
                }
            }
        }
        info.width = w / bx;
        info.height = h / by;
        info.binning_x = 0;
        info.binning_y = 0;
        info.roi = RegionOfInterest::default();
        info
    }

    /// This calibration (without binning or ROI) for the same camera's images resized to
    /// `width` x `height`: K's and P's first two rows scaled per axis, pixel centres kept
    /// at integer coordinates on both sides (u' + 0.5 = (u + 0.5)·s). Unchanged at its own
    /// size, or without one (width or height 0). Images of another aspect ratio (more
    /// than [`ASPECT_TOLERANCE`] apart) are refused with the reason: a crop or another
    /// camera mode, which no scaling of K describes.
    pub fn scaled_to(&self, width: u32, height: u32) -> Result<CameraInfo, String> {
        if (self.width, self.height) == (width, height)
            || self.width == 0
            || self.height == 0
            || width == 0
            || height == 0
        {
            return Ok(self.clone());
        }
        let (sx, sy) = (
            width as f64 / self.width as f64,
            height as f64 / self.height as f64,
        );
        if (sx / sy - 1.0).abs() > ASPECT_TOLERANCE {
            return Err(format!(
                "camera_info is {}x{} and the images {width}x{height}, another aspect ratio (a \
                 crop or another camera mode, which scaling K cannot follow): no point cloud \
                 and no depth/camera_info; use the calibration of the images as they are \
                 (image_proc's resize and crop_decimate publish it)",
                self.width, self.height
            ));
        }
        // Row `r` of a matrix with `cols` columns: focal and skew scale, the principal
        // point moves with the centres, a translation (P's Tx, Ty) scales. A row whose
        // focal length is 0 (a matrix never set: an uncalibrated driver's zeros) stays.
        let scale_row = |m: &mut [f64], cols: usize, r: usize, s: f64| {
            let row = &mut m[r * cols..(r + 1) * cols];
            if row[r] == 0.0 {
                return;
            }
            row[0] *= s;
            row[1] *= s;
            row[2] = (row[2] + 0.5) * s - 0.5;
            if cols == 4 {
                row[3] *= s;
            }
        };
        let mut info = self.clone();
        scale_row(&mut info.k, 3, 0, sx);
        scale_row(&mut info.k, 3, 1, sy);
        scale_row(&mut info.p, 4, 0, sx);
        scale_row(&mut info.p, 4, 1, sy);
        info.width = width;
        info.height = height;
        Ok(info)
    }
}

/// How far apart (relative) the aspect ratios of a camera_info and its images may be for
/// the images to count as the camera_info's view resized: rounding a resized size to whole
/// pixels moves the ratio by less above about 90 pixels (640x480 to 213x160: 0.16 %).
pub const ASPECT_TOLERANCE: f64 = 0.01;

/// sensor_msgs/PointField.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct PointField {
    pub name: String,
    /// Byte offset in the point.
    pub offset: u32,
    /// One of the datatype constants.
    pub datatype: u8,
    /// Elements in the field.
    pub count: u32,
}

impl PointField {
    pub const UINT16: u8 = 4;
    pub const FLOAT32: u8 = 7;
}

/// sensor_msgs/PointCloud2.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct PointCloud2 {
    pub header: Header,
    /// 1 for an unorganised cloud.
    pub height: u32,
    pub width: u32,
    pub fields: Vec<PointField>,
    pub is_bigendian: bool,
    /// Bytes per point and per row.
    pub point_step: u32,
    pub row_step: u32,
    pub data: Vec<u8>,
    /// No invalid (NaN) points.
    pub is_dense: bool,
}

#[cfg(test)]
mod tests {
    #[test]
    fn a_camera_info_of_another_frame_or_aspect_ratio_is_doubted() {
        let mut info =
            super::CameraInfo::pinhole(Default::default(), 640, 360, 500.0, 319.5, 179.5);
        info.header.frame_id = "front_optical".into();
        // Its own camera, resized: no doubt; no frame id on either side: not compared.
        assert_eq!(info.doubt_for("front_optical", 320, 180), None);
        assert_eq!(info.doubt_for("", 320, 180), None);
        let doubt = info.doubt_for("rear_optical", 240, 180).unwrap();
        assert!(
            doubt.starts_with("camera_info may be another camera's: its frame_id `front_optical` is not the images' `rear_optical`; camera_info is 640x360 and the images 240x180, another aspect ratio"),
            "{doubt}"
        );
        // An uncalibrated driver's camera_info without a size: nothing to compare.
        let blank = super::CameraInfo::default();
        assert_eq!(blank.doubt_for("x", 240, 180), None);
    }

    #[test]
    fn a_frame_without_frame_id_is_doubted_with_or_without_camera_info() {
        use super::{CameraInfo, Header};
        let unplaced = Header::default();
        let placed = Header {
            frame_id: "front_optical".into(),
            ..Header::default()
        };
        let doubts = CameraInfo::doubts(None, &unplaced, 320, 180);
        assert_eq!(doubts.len(), 1);
        assert!(doubts[0].contains("empty frame_id"), "{doubts:?}");
        assert!(CameraInfo::doubts(None, &placed, 320, 180).is_empty());
        let mut info = CameraInfo::pinhole(Default::default(), 640, 360, 500.0, 319.5, 179.5);
        info.header.frame_id = "rear_optical".into();
        let doubts = CameraInfo::doubts(Some(&info), &placed, 320, 180);
        assert_eq!(
            doubts,
            vec![info.doubt_for("front_optical", 320, 180).unwrap()]
        );
        // Both: an empty frame_id is not compared with camera_info's, the size is.
        let doubts = CameraInfo::doubts(Some(&info), &unplaced, 240, 180);
        assert_eq!(doubts.len(), 2, "{doubts:?}");
        assert!(doubts[1].contains("another aspect ratio"), "{doubts:?}");
    }

    #[test]
    fn a_camera_info_scales_to_a_resized_image() {
        let mut info =
            super::CameraInfo::pinhole(Default::default(), 640, 480, 500.0, 319.5, 239.5);
        info.p[3] = -50.0; // Tx of a right stereo camera: -fx * baseline
        let half = info.for_image(320, 240).unwrap();
        assert_eq!((half.width, half.height), (320, 240));
        assert_eq!(
            half.k,
            [250.0, 0.0, 159.5, 0.0, 250.0, 119.5, 0.0, 0.0, 1.0]
        );
        assert_eq!(
            half.p,
            [250.0, 0.0, 159.5, -25.0, 0.0, 250.0, 119.5, 0.0, 0.0, 0.0, 1.0, 0.0]
        );
        assert_eq!((half.d.clone(), half.r), (info.d.clone(), info.r));
        assert_eq!(info.for_image(640, 480).unwrap(), info);
        let no_size = super::CameraInfo {
            width: 0,
            ..info.clone()
        };
        // Without a size (an uncalibrated driver's zeros): the image's size, matrices kept.
        let sized = no_size.for_image(320, 240).unwrap();
        assert_eq!((sized.width, sized.height), (320, 240));
        assert_eq!((sized.k, sized.p), (no_size.k, no_size.p));
        assert!(sized.is_finite());
        // A 4:3 crop of a 16:9 camera_info is not a resize: scaling K per axis would make
        // fx 450 where the crop has 600 (points 33 % off), so it is refused.
        let wide = super::CameraInfo::pinhole(Default::default(), 1280, 720, 900.0, 639.5, 359.5);
        let e = wide.for_image(640, 480).unwrap_err();
        assert!(
            e.starts_with("camera_info is 1280x720 and the images 640x480, another aspect"),
            "{e}"
        );
        // Rounding a resize to whole pixels is not another aspect ratio.
        assert_eq!(info.for_image(213, 160).unwrap().width, 213);
        // Matrices never set (an uncalibrated driver's zeros) stay zero when scaled.
        let mut uncalibrated = super::CameraInfo::default();
        (uncalibrated.width, uncalibrated.height) = (640, 480);
        let scaled = uncalibrated.for_image(320, 240).unwrap();
        assert_eq!((scaled.k, scaled.p), ([0.0; 9], [0.0; 12]));
        let mut inf = info.clone();
        inf.k[0] = f64::INFINITY;
        assert!(!inf.is_finite());
    }

    /// Binning and ROI as image_geometry reads them: a camera_info that already describes
    /// the image passes as it is; resized further, they are applied first, then scaled.
    #[test]
    fn binning_and_roi_are_applied_before_scaling_and_kept_where_they_fit() {
        let mut info =
            super::CameraInfo::pinhole(Default::default(), 640, 480, 500.0, 320.0, 240.0);
        info.binning_x = 2;
        info.binning_y = 2;
        info.roi = super::RegionOfInterest {
            x_offset: 64,
            y_offset: 48,
            width: 320,
            height: 240,
            do_rectify: false,
        };
        // roi / binning = 160 x 120: the image it describes.
        assert_eq!(info.for_image(160, 120).unwrap(), info);
        let plain = info.unbinned();
        assert_eq!((plain.width, plain.height, plain.binning_x), (160, 120, 0));
        assert_eq!(
            plain.k,
            [250.0, 0.0, 128.0, 0.0, 250.0, 96.0, 0.0, 0.0, 1.0]
        );
        assert_eq!(plain.roi, super::RegionOfInterest::default());
        // The binned, cropped stream resized to 80 x 60.
        let small = info.for_image(80, 60).unwrap();
        assert_eq!((small.width, small.height, small.binning_x), (80, 60, 0));
        assert_eq!(
            small.k,
            [125.0, 0.0, 63.75, 0.0, 125.0, 47.75, 0.0, 0.0, 1.0]
        );
        // An uncalibrated camera's zeros stay zeros (no principal point to move).
        let mut uncalibrated = info.clone();
        uncalibrated.k = [0.0; 9];
        uncalibrated.p = [0.0; 12];
        let plain = uncalibrated.unbinned();
        assert_eq!((plain.k, plain.p), ([0.0; 9], [0.0; 12]));
    }

    use super::*;

    #[test]
    fn time_nanos_round_trip() {
        for t in [
            Time { sec: 0, nanosec: 0 },
            Time {
                sec: 1_700_000_000,
                nanosec: 999_999_999,
            },
            Time {
                sec: -2,
                nanosec: 5,
            },
        ] {
            assert_eq!(Time::from_nanos(t.as_nanos()), t);
        }
    }
}

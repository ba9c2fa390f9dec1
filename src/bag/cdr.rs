//! CDR (de)serialisation of the ROS 2 messages the bag tools read and write, as rmw /
//! rosbag2 store them: a 4-byte encapsulation header (`00 01 00 00` little-endian, `00 00 00
//! 00` big-endian), then the fields in order, each primitive aligned to its size relative to
//! the end of that header; strings are a u32 length (NUL included), the bytes and a NUL;
//! sequences a u32 count and the elements; fixed arrays just the elements.
//!
//! Reading checks every length against the bytes left, so a corrupt message is an error.

use super::super::msg::{
    CameraInfo, CompressedImage, Header, Image, PointCloud2, PointField, RegionOfInterest, Time,
};

/// A message that cannot be decoded.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("CDR: {0}")]
pub struct CdrError(pub String);

type Result<T> = std::result::Result<T, CdrError>;

const HEADER_LE: [u8; 4] = [0x00, 0x01, 0x00, 0x00];

/// Serialises into little-endian CDR.
pub struct CdrWriter {
    buf: Vec<u8>,
}

impl Default for CdrWriter {
    fn default() -> Self {
        Self::new()
    }
}

impl CdrWriter {
    pub fn new() -> Self {
        CdrWriter {
            buf: HEADER_LE.to_vec(),
        }
    }

    pub fn into_bytes(self) -> Vec<u8> {
        self.buf
    }

    fn align(&mut self, n: usize) {
        let offset = (self.buf.len() - 4) % n;
        if offset != 0 {
            self.buf.resize(self.buf.len() + n - offset, 0);
        }
    }

    pub fn u8(&mut self, v: u8) {
        self.buf.push(v);
    }

    pub fn u32(&mut self, v: u32) {
        self.align(4);
        self.buf.extend_from_slice(&v.to_le_bytes());
    }

    pub fn i32(&mut self, v: i32) {
        self.align(4);
        self.buf.extend_from_slice(&v.to_le_bytes());
    }

    pub fn f64(&mut self, v: f64) {
        self.align(8);
        self.buf.extend_from_slice(&v.to_le_bytes());
    }

    pub fn string(&mut self, s: &str) {
        self.u32(s.len() as u32 + 1);
        self.buf.extend_from_slice(s.as_bytes());
        self.buf.push(0);
    }

    pub fn bytes(&mut self, data: &[u8]) {
        self.u32(data.len() as u32);
        self.buf.extend_from_slice(data);
    }

    pub fn f64_seq(&mut self, values: &[f64]) {
        self.u32(values.len() as u32);
        values.iter().for_each(|&v| self.f64(v));
    }
}

/// Deserialises CDR of either byte order.
pub struct CdrReader<'a> {
    data: &'a [u8],
    pos: usize,
    little_endian: bool,
}

impl<'a> CdrReader<'a> {
    pub fn new(data: &'a [u8]) -> Result<Self> {
        let little_endian = match data {
            [0x00, 0x01, _, _, ..] => true,
            [0x00, 0x00, _, _, ..] => false,
            _ => {
                return Err(CdrError(
                    "missing or unknown CDR encapsulation header".into(),
                ))
            }
        };
        Ok(CdrReader {
            data,
            pos: 4,
            little_endian,
        })
    }

    fn take(&mut self, n: usize, what: &str) -> Result<&'a [u8]> {
        let end = self
            .pos
            .checked_add(n)
            .filter(|&e| e <= self.data.len())
            .ok_or_else(|| {
                CdrError(format!(
                    "{what}: needs {n} bytes at offset {}, message has {}",
                    self.pos,
                    self.data.len()
                ))
            })?;
        let slice = &self.data[self.pos..end];
        self.pos = end;
        Ok(slice)
    }

    fn align(&mut self, n: usize) {
        let offset = (self.pos - 4) % n;
        if offset != 0 {
            self.pos += n - offset;
        }
    }

    fn array<const N: usize>(&mut self, what: &str) -> Result<[u8; N]> {
        self.align(N);
        let mut bytes: [u8; N] = self.take(N, what)?.try_into().expect("took N bytes");
        if !self.little_endian {
            bytes.reverse();
        }
        Ok(bytes)
    }

    pub fn u8(&mut self, what: &str) -> Result<u8> {
        Ok(self.take(1, what)?[0])
    }

    pub fn u32(&mut self, what: &str) -> Result<u32> {
        Ok(u32::from_le_bytes(self.array(what)?))
    }

    pub fn i32(&mut self, what: &str) -> Result<i32> {
        Ok(i32::from_le_bytes(self.array(what)?))
    }

    pub fn f64(&mut self, what: &str) -> Result<f64> {
        Ok(f64::from_le_bytes(self.array(what)?))
    }

    pub fn string(&mut self, what: &str) -> Result<String> {
        let len = self.u32(what)? as usize;
        let bytes = self.take(len, what)?;
        let text = bytes.strip_suffix(&[0]).unwrap_or(bytes);
        String::from_utf8(text.to_vec()).map_err(|_| CdrError(format!("{what}: not UTF-8")))
    }

    pub fn bytes(&mut self, what: &str) -> Result<Vec<u8>> {
        let len = self.u32(what)? as usize;
        Ok(self.take(len, what)?.to_vec())
    }

    pub fn f64_seq(&mut self, what: &str) -> Result<Vec<f64>> {
        let len = self.u32(what)? as usize;
        if len > self.data.len() {
            return Err(CdrError(format!("{what}: {len} elements cannot fit")));
        }
        (0..len).map(|_| self.f64(what)).collect()
    }

    fn f64_array<const N: usize>(&mut self, what: &str) -> Result<[f64; N]> {
        let mut out = [0.0; N];
        for v in &mut out {
            *v = self.f64(what)?;
        }
        Ok(out)
    }
}

/// A ROS 2 message type with a CDR form and a `ros2msg` definition.
pub trait CdrMessage: Sized {
    /// The ROS type name, e.g. `sensor_msgs/msg/Image`.
    const TYPE_NAME: &'static str;
    fn write(&self, w: &mut CdrWriter);
    fn read(r: &mut CdrReader) -> Result<Self>;

    fn to_cdr(&self) -> Vec<u8> {
        let mut w = CdrWriter::new();
        self.write(&mut w);
        w.into_bytes()
    }

    fn from_cdr(data: &[u8]) -> Result<Self> {
        Self::read(&mut CdrReader::new(data)?)
    }
}

fn write_header(w: &mut CdrWriter, h: &Header) {
    w.i32(h.stamp.sec);
    w.u32(h.stamp.nanosec);
    w.string(&h.frame_id);
}

fn read_header(r: &mut CdrReader) -> Result<Header> {
    let sec = r.i32("header.stamp.sec")?;
    let nanosec = r.u32("header.stamp.nanosec")?;
    Ok(Header {
        stamp: Time { sec, nanosec },
        frame_id: r.string("header.frame_id")?,
    })
}

impl CdrMessage for Image {
    const TYPE_NAME: &'static str = "sensor_msgs/msg/Image";

    fn write(&self, w: &mut CdrWriter) {
        write_header(w, &self.header);
        w.u32(self.height);
        w.u32(self.width);
        w.string(&self.encoding);
        w.u8(self.is_bigendian);
        w.u32(self.step);
        w.bytes(&self.data);
    }

    fn read(r: &mut CdrReader) -> Result<Self> {
        Ok(Image {
            header: read_header(r)?,
            height: r.u32("height")?,
            width: r.u32("width")?,
            encoding: r.string("encoding")?,
            is_bigendian: r.u8("is_bigendian")?,
            step: r.u32("step")?,
            data: r.bytes("data")?,
        })
    }
}

impl CdrMessage for CompressedImage {
    const TYPE_NAME: &'static str = "sensor_msgs/msg/CompressedImage";

    fn write(&self, w: &mut CdrWriter) {
        write_header(w, &self.header);
        w.string(&self.format);
        w.bytes(&self.data);
    }

    fn read(r: &mut CdrReader) -> Result<Self> {
        Ok(CompressedImage {
            header: read_header(r)?,
            format: r.string("format")?,
            data: r.bytes("data")?,
        })
    }
}

impl CdrMessage for CameraInfo {
    const TYPE_NAME: &'static str = "sensor_msgs/msg/CameraInfo";

    fn write(&self, w: &mut CdrWriter) {
        write_header(w, &self.header);
        w.u32(self.height);
        w.u32(self.width);
        w.string(&self.distortion_model);
        w.f64_seq(&self.d);
        self.k
            .iter()
            .chain(&self.r)
            .chain(&self.p)
            .for_each(|&v| w.f64(v));
        w.u32(self.binning_x);
        w.u32(self.binning_y);
        w.u32(self.roi.x_offset);
        w.u32(self.roi.y_offset);
        w.u32(self.roi.height);
        w.u32(self.roi.width);
        w.u8(self.roi.do_rectify as u8);
    }

    fn read(r: &mut CdrReader) -> Result<Self> {
        Ok(CameraInfo {
            header: read_header(r)?,
            height: r.u32("height")?,
            width: r.u32("width")?,
            distortion_model: r.string("distortion_model")?,
            d: r.f64_seq("d")?,
            k: r.f64_array("k")?,
            r: r.f64_array("r")?,
            p: r.f64_array("p")?,
            binning_x: r.u32("binning_x")?,
            binning_y: r.u32("binning_y")?,
            roi: RegionOfInterest {
                x_offset: r.u32("roi.x_offset")?,
                y_offset: r.u32("roi.y_offset")?,
                height: r.u32("roi.height")?,
                width: r.u32("roi.width")?,
                do_rectify: r.u8("roi.do_rectify")? != 0,
            },
        })
    }
}

impl CdrMessage for PointCloud2 {
    const TYPE_NAME: &'static str = "sensor_msgs/msg/PointCloud2";

    fn write(&self, w: &mut CdrWriter) {
        write_header(w, &self.header);
        w.u32(self.height);
        w.u32(self.width);
        w.u32(self.fields.len() as u32);
        for f in &self.fields {
            w.string(&f.name);
            w.u32(f.offset);
            w.u8(f.datatype);
            w.u32(f.count);
        }
        w.u8(self.is_bigendian as u8);
        w.u32(self.point_step);
        w.u32(self.row_step);
        w.bytes(&self.data);
        w.u8(self.is_dense as u8);
    }

    fn read(r: &mut CdrReader) -> Result<Self> {
        let header = read_header(r)?;
        let height = r.u32("height")?;
        let width = r.u32("width")?;
        let count = r.u32("fields")? as usize;
        // A field takes at least 13 bytes: a count claiming more cannot fit.
        if count > r.data.len() / 13 {
            return Err(CdrError(format!("fields: {count} elements cannot fit")));
        }
        let fields = (0..count)
            .map(|_| {
                Ok(PointField {
                    name: r.string("fields.name")?,
                    offset: r.u32("fields.offset")?,
                    datatype: r.u8("fields.datatype")?,
                    count: r.u32("fields.count")?,
                })
            })
            .collect::<Result<Vec<_>>>()?;
        Ok(PointCloud2 {
            header,
            height,
            width,
            fields,
            is_bigendian: r.u8("is_bigendian")? != 0,
            point_step: r.u32("point_step")?,
            row_step: r.u32("row_step")?,
            data: r.bytes("data")?,
            is_dense: r.u8("is_dense")? != 0,
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn header(frame_id: &str) -> Header {
        Header {
            stamp: Time {
                sec: 0x0102_0304,
                nanosec: 0x0A0B_0C0D,
            },
            frame_id: frame_id.into(),
        }
    }

    #[test]
    fn image_bytes_are_exact_with_alignment_padding() {
        // frame_id "cam" (odd length): after it the u32 height needs 3 bytes of padding...
        let image = Image {
            header: header("cam"),
            height: 1,
            width: 2,
            encoding: "mono8".into(),
            is_bigendian: 0,
            step: 2,
            data: vec![7, 9],
        };
        let bytes = image.to_cdr();
        #[rustfmt::skip]
        let expected: Vec<u8> = vec![
            0x00, 0x01, 0x00, 0x00,             // encapsulation: CDR little-endian
            0x04, 0x03, 0x02, 0x01,             // stamp.sec
            0x0D, 0x0C, 0x0B, 0x0A,             // stamp.nanosec
            0x04, 0x00, 0x00, 0x00,             // frame_id length incl. NUL
            b'c', b'a', b'm', 0x00,             // "cam\0"
            0x01, 0x00, 0x00, 0x00,             // height
            0x02, 0x00, 0x00, 0x00,             // width
            0x06, 0x00, 0x00, 0x00,             // encoding length
            b'm', b'o', b'n', b'o', b'8', 0x00, // "mono8\0"
            0x00,                               // is_bigendian
            0x00,                               // padding to 4 for step
            0x02, 0x00, 0x00, 0x00,             // step
            0x02, 0x00, 0x00, 0x00,             // data length
            0x07, 0x09,                         // data
        ];
        assert_eq!(bytes, expected);
        assert_eq!(Image::from_cdr(&bytes).unwrap(), image);
    }

    #[test]
    fn point_clouds_round_trip_and_a_field_count_that_cannot_fit_is_an_error() {
        let cloud = PointCloud2 {
            header: header("cam"),
            height: 1,
            width: 2,
            fields: crate::points::fields(),
            is_bigendian: false,
            point_step: 36,
            row_step: 72,
            data: (0..72).collect(),
            is_dense: true,
        };
        let bytes = cloud.to_cdr();
        assert_eq!(PointCloud2::from_cdr(&bytes).unwrap(), cloud);
        // The fields count sits after the header (4 + 8 + 8 bytes of "cam") and two u32.
        let mut huge = bytes.clone();
        huge[28..32].copy_from_slice(&u32::MAX.to_le_bytes());
        let e = PointCloud2::from_cdr(&huge).unwrap_err().to_string();
        assert!(e.contains("fields") && e.contains("cannot fit"), "{e}");
    }

    #[test]
    fn odd_lengths_round_trip() {
        for frame_id in ["", "a", "ab", "abc", "camera_optical_frame"] {
            for data_len in [0usize, 1, 3, 5, 8] {
                let image = Image {
                    header: header(frame_id),
                    height: 1,
                    width: data_len as u32,
                    encoding: "mono8".into(),
                    is_bigendian: 1,
                    step: data_len as u32,
                    data: (0..data_len as u8).collect(),
                };
                assert_eq!(Image::from_cdr(&image.to_cdr()).unwrap(), image);
                let compressed = CompressedImage {
                    header: header(frame_id),
                    format: "png".into(),
                    data: image.data.clone(),
                };
                assert_eq!(
                    CompressedImage::from_cdr(&compressed.to_cdr()).unwrap(),
                    compressed
                );
            }
        }
    }

    #[test]
    fn camera_info_aligns_doubles_to_eight() {
        let info = CameraInfo {
            header: header("ab"),
            height: 480,
            width: 640,
            distortion_model: "plumb_bob".into(),
            d: vec![0.1, -0.2, 0.0, 0.0, 0.3],
            k: [500.0, 0.0, 320.0, 0.0, 500.0, 240.0, 0.0, 0.0, 1.0],
            r: [1.0, 0.0, 0.0, 0.0, 1.0, 0.0, 0.0, 0.0, 1.0],
            p: [
                500.0, 0.0, 320.0, 0.0, 0.0, 500.0, 240.0, 0.0, 0.0, 0.0, 1.0, 0.0,
            ],
            binning_x: 1,
            binning_y: 2,
            roi: RegionOfInterest {
                x_offset: 1,
                y_offset: 2,
                height: 3,
                width: 4,
                do_rectify: true,
            },
        };
        let bytes = info.to_cdr();
        assert_eq!(CameraInfo::from_cdr(&bytes).unwrap(), info);
        // Payload offsets: stamp 0..8, frame_id 8..15, height 16, width 20, distortion_model
        // 24..38, d count 40..44, then d[0] aligned to 48 (file offset 52 after the header).
        assert_eq!(&bytes[52..60], &0.1f64.to_le_bytes());
    }

    #[test]
    fn big_endian_messages_read() {
        let mut bytes = vec![0x00, 0x00, 0x00, 0x00];
        bytes.extend_from_slice(&5i32.to_be_bytes());
        bytes.extend_from_slice(&6u32.to_be_bytes());
        bytes.extend_from_slice(&1u32.to_be_bytes());
        bytes.push(0);
        bytes.extend_from_slice(&[0, 0, 0]);
        bytes.extend_from_slice(&4u32.to_be_bytes());
        bytes.extend_from_slice(b"png\0");
        bytes.extend_from_slice(&2u32.to_be_bytes());
        bytes.extend_from_slice(&[1, 2]);
        let msg = CompressedImage::from_cdr(&bytes).unwrap();
        assert_eq!(msg.header.stamp, Time { sec: 5, nanosec: 6 });
        assert_eq!(
            (msg.format.as_str(), msg.data.as_slice()),
            ("png", &[1u8, 2][..])
        );
    }

    #[test]
    fn truncated_and_garbage_messages_are_errors() {
        let bytes = Image {
            header: header("cam"),
            data: vec![1; 10],
            ..Default::default()
        }
        .to_cdr();
        for cut in [0, 3, 4, 10, 20, bytes.len() - 1] {
            assert!(Image::from_cdr(&bytes[..cut]).is_err(), "cut at {cut}");
        }
        let mut huge = bytes.clone();
        let len_at = bytes.len() - 14;
        huge[len_at..len_at + 4].copy_from_slice(&u32::MAX.to_le_bytes());
        assert!(Image::from_cdr(&huge).is_err());
        assert!(Image::from_cdr(&[0x12, 0x34, 0, 0, 1, 2]).is_err());
    }
}

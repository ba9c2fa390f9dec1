//! Camera images in, RGB out: one explicit decoder per sensor_msgs encoding, plus
//! CompressedImage (JPEG/PNG).
//!
//! Sizes and steps are checked before any pixel is read, so a malformed message is a typed
//! error, never a panic. 16-bit data honours `is_bigendian` and is scaled to 8 bits by
//! 255/65535, rounded (as cv_bridge converts 16-bit to 8-bit images); YUV 4:2:2 uses the
//! BT.601 video-range matrix (as OpenCV's `COLOR_YUV2RGB_UYVY`/`_YUYV`); Bayer mosaics are
//! demosaiced bilinearly. OpenCV's channel-type names, which drivers built on OpenCV
//! publish for plain images, are read in OpenCV's channel order: `8UC1` as `mono8`, `8UC3`
//! as `bgr8` and `8UC4` as `bgra8` (cv_bridge passes such images through uninterpreted and
//! refuses to convert them; OpenCV code then treats them as BGR).

use image::{Rgb, RgbImage};

use super::{CompressedImage, Image};

/// Why a camera image could not be turned into RGB.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum DecodeError {
    #[error("unsupported encoding `{0}`")]
    UnsupportedEncoding(String),
    #[error("malformed {encoding} image: {message}")]
    Malformed { encoding: String, message: String },
    #[error("undecodable compressed image (format `{format}`): {message}")]
    Compressed { format: String, message: String },
}

/// A string of the message (its encoding or format) as errors quote it: at most 64
/// characters, control characters escaped (a hostile one would otherwise go whole into
/// every log line and diagnostics message).
pub fn shown(text: &str) -> String {
    let mut out: String = text.chars().take(64).flat_map(char::escape_debug).collect();
    if text.chars().nth(64).is_some() {
        out.push_str("...");
    }
    out
}

/// The encodings [`decode_image`] accepts, for documentation and messages.
pub const SUPPORTED_ENCODINGS: &[&str] = &[
    "rgb8",
    "bgr8",
    "rgba8",
    "bgra8",
    "mono8",
    "8UC1",
    "8UC3",
    "8UC4",
    "mono16",
    "rgb16",
    "bgr16",
    "rgba16",
    "bgra16",
    "yuv422",
    "uyvy",
    "yuv422_yuy2",
    "yuyv",
    "bayer_rggb8",
    "bayer_bggr8",
    "bayer_gbrg8",
    "bayer_grbg8",
    "bayer_rggb16",
    "bayer_bggr16",
    "bayer_gbrg16",
    "bayer_grbg16",
];

/// Channel order of packed RGB-like encodings.
#[derive(Debug, Clone, Copy)]
enum Order {
    Rgb,
    Bgr,
}

/// What one encoding is made of.
#[derive(Debug, Clone, Copy)]
enum Layout {
    /// `channels` interleaved samples of `depth` bytes; channel order for colour.
    Packed {
        channels: usize,
        depth: usize,
        order: Order,
    },
    /// 4:2:2 chroma-subsampled, 2 bytes per pixel; `uyvy` or else `yuyv` byte order.
    Yuv422 { uyvy: bool },
    /// Bayer mosaic: colour (0 R, 1 G, 2 B) of the 2x2 cell at (row % 2, col % 2).
    Bayer { cell: [[usize; 2]; 2], depth: usize },
}

impl Layout {
    fn of(encoding: &str) -> Option<Layout> {
        use Order::*;
        let packed = |channels, depth, order| {
            Some(Layout::Packed {
                channels,
                depth,
                order,
            })
        };
        const RGGB: [[usize; 2]; 2] = [[0, 1], [1, 2]];
        const BGGR: [[usize; 2]; 2] = [[2, 1], [1, 0]];
        const GBRG: [[usize; 2]; 2] = [[1, 2], [0, 1]];
        const GRBG: [[usize; 2]; 2] = [[1, 0], [2, 1]];
        match encoding {
            "rgb8" => packed(3, 1, Rgb),
            "bgr8" | "8UC3" => packed(3, 1, Bgr),
            "rgba8" => packed(4, 1, Rgb),
            "bgra8" | "8UC4" => packed(4, 1, Bgr),
            "mono8" | "8UC1" => packed(1, 1, Rgb),
            "mono16" => packed(1, 2, Rgb),
            "rgb16" => packed(3, 2, Rgb),
            "bgr16" => packed(3, 2, Bgr),
            "rgba16" => packed(4, 2, Rgb),
            "bgra16" => packed(4, 2, Bgr),
            "yuv422" | "uyvy" => Some(Layout::Yuv422 { uyvy: true }),
            "yuv422_yuy2" | "yuyv" => Some(Layout::Yuv422 { uyvy: false }),
            "bayer_rggb8" => Some(Layout::Bayer {
                cell: RGGB,
                depth: 1,
            }),
            "bayer_bggr8" => Some(Layout::Bayer {
                cell: BGGR,
                depth: 1,
            }),
            "bayer_gbrg8" => Some(Layout::Bayer {
                cell: GBRG,
                depth: 1,
            }),
            "bayer_grbg8" => Some(Layout::Bayer {
                cell: GRBG,
                depth: 1,
            }),
            "bayer_rggb16" => Some(Layout::Bayer {
                cell: RGGB,
                depth: 2,
            }),
            "bayer_bggr16" => Some(Layout::Bayer {
                cell: BGGR,
                depth: 2,
            }),
            "bayer_gbrg16" => Some(Layout::Bayer {
                cell: GBRG,
                depth: 2,
            }),
            "bayer_grbg16" => Some(Layout::Bayer {
                cell: GRBG,
                depth: 2,
            }),
            _ => None,
        }
    }

    /// Bytes that one pixel occupies in a row (4:2:2: two pixels share four bytes).
    fn bytes_per_pixel(&self) -> usize {
        match *self {
            Layout::Packed {
                channels, depth, ..
            } => channels * depth,
            Layout::Yuv422 { .. } => 2,
            Layout::Bayer { depth, .. } => depth,
        }
    }
}

/// Decodes a sensor_msgs/Image into 8-bit RGB.
pub fn decode_image(msg: &Image) -> Result<RgbImage, DecodeError> {
    let layout = Layout::of(&msg.encoding)
        .ok_or_else(|| DecodeError::UnsupportedEncoding(shown(&msg.encoding)))?;
    let malformed = |message: String| DecodeError::Malformed {
        encoding: shown(&msg.encoding),
        message,
    };
    let (width, height) = (msg.width as usize, msg.height as usize);
    // An empty size is refused there too.
    let rows = Rows::of(msg, layout.bytes_per_pixel()).map_err(malformed)?;
    // Every output image is made at the input's size (about 43 bytes a pixel in all).
    if u64::from(msg.width) * u64::from(msg.height) > MAX_FRAME_PIXELS {
        return Err(malformed(too_large(msg.width, msg.height)));
    }
    Ok(match layout {
        Layout::Packed {
            channels,
            depth,
            order,
        } => decode_packed(&rows, width, height, channels, depth, order),
        Layout::Yuv422 { uyvy } => decode_yuv422(&rows, width, height, uyvy),
        Layout::Bayer { cell, depth } => decode_bayer(&rows, width, height, cell, depth),
    })
}

/// Decodes a sensor_msgs/CompressedImage (JPEG or PNG, recognised by content) to RGB.
pub fn decode_compressed(msg: &CompressedImage) -> Result<RgbImage, DecodeError> {
    let err = |message: String| DecodeError::Compressed {
        format: shown(&msg.format),
        message,
    };
    if msg.format.contains("compressedDepth") {
        return Err(DecodeError::UnsupportedEncoding(shown(&msg.format)));
    }
    // image_transport's format is `ENCODING; jpeg compressed bgr8` (or `; png compressed`):
    // colour encodings are compressed as colour, any other as it is (a Bayer mosaic as a
    // grey image of the mosaic, depth as 16-bit grey). Plain `jpeg` / `png`: colour or grey.
    let encoding = msg
        .format
        .split_once(';')
        .map(|(encoding, _)| encoding.trim())
        .filter(|e| !e.is_empty());
    // One we do not know is decoded by content, as before, unless it names a data type
    // that is no camera image (OpenCV's 16UC1, 32FC1, ...).
    let named = encoding.and_then(|e| {
        [e.to_owned(), e.to_ascii_lowercase()]
            .into_iter()
            .find_map(|name| Layout::of(&name).map(|layout| (name, layout)))
    });
    if let Some(encoding) = encoding.filter(|e| named.is_none() && is_opencv_type(e)) {
        return Err(DecodeError::UnsupportedEncoding(shown(encoding)));
    }
    let format = image::guess_format(&msg.data).map_err(|e| err(e.to_string()))?;
    if !matches!(format, image::ImageFormat::Jpeg | image::ImageFormat::Png) {
        return Err(err(format!("{format:?} data; expected JPEG or PNG")));
    }
    // The header's size first: a kilobyte of JPEG can claim 100 megapixels, which decode
    // (allocation and all) for seconds (fuzzing finding 4).
    let reader = image::ImageReader::with_format(std::io::Cursor::new(&msg.data), format);
    // As the camera sent it (a calibration is of the sensor's orientation).
    let image = match decode_capped(reader, MAX_FRAME_PIXELS, false) {
        Ok(image) => image,
        Err(Undecoded::TooLarge { width, height }) => return Err(err(too_large(width, height))),
        Err(Undecoded::Image(e)) => return Err(err(e.to_string())),
    };
    match named {
        // The mosaic, decompressed, is demosaiced as a raw one would be (a colour image
        // under a Bayer name was demosaiced before it was compressed).
        Some((encoding, Layout::Bayer { depth, .. })) if image.color().channel_count() == 1 => {
            let (width, height) = (image.width(), image.height());
            let data = match depth {
                1 => image.into_luma8().into_raw(),
                _ => image
                    .into_luma16()
                    .into_raw()
                    .into_iter()
                    .flat_map(u16::to_le_bytes)
                    .collect(),
            };
            decode_image(&Image {
                encoding,
                width,
                height,
                step: width * depth as u32,
                is_bigendian: 0,
                data,
                ..Default::default()
            })
        }
        _ => Ok(image.to_rgb8()),
    }
}

/// Whether `encoding` is an OpenCV data type name (`16UC1`, `32FC1`, `8SC3`): depth and
/// other measurements, unless [`Layout::of`] reads it as a camera image (8UC1/3/4).
fn is_opencv_type(encoding: &str) -> bool {
    let digits = encoding.trim_start_matches(|c: char| c.is_ascii_digit());
    let bits = encoding.len() - digits.len();
    let mut rest = digits.chars();
    bits > 0
        && matches!(rest.next(), Some('U' | 'S' | 'F'))
        && rest.next() == Some('C')
        && rest.as_str().chars().all(|c| c.is_ascii_digit())
}

/// Why [`decode_capped`] gave no image.
#[derive(Debug)]
pub enum Undecoded {
    /// The header says more than the pixels allowed.
    TooLarge {
        width: u32,
        height: u32,
    },
    Image(image::ImageError),
}

/// Decodes from `reader` (its format and limits set) once its header says the image has at
/// most `max_pixels` pixels: one decoder reads the header and then the pixels, so the data
/// is read once and a huge image is refused before anything is allocated for it.
/// With `oriented`, the image is turned as its EXIF orientation says (as viewers show
/// it); else it is left as stored.
pub fn decode_capped<R: std::io::BufRead + std::io::Seek>(
    reader: image::ImageReader<R>,
    max_pixels: u64,
    oriented: bool,
) -> Result<image::DynamicImage, Undecoded> {
    let mut decoder = reader.into_decoder().map_err(Undecoded::Image)?;
    let (width, height) = image::ImageDecoder::dimensions(&decoder);
    if u64::from(width) * u64::from(height) > max_pixels {
        return Err(Undecoded::TooLarge { width, height });
    }
    // Unreadable EXIF is no reason to refuse the pixels: left as stored.
    let orientation = oriented
        .then(|| image::ImageDecoder::orientation(&mut decoder).ok())
        .flatten();
    let mut image = image::DynamicImage::from_decoder(decoder).map_err(Undecoded::Image)?;
    if let Some(orientation) = orientation {
        image.apply_orientation(orientation);
    }
    Ok(image)
}

/// Why a frame above [`MAX_FRAME_PIXELS`] is refused.
fn too_large(width: u32, height: u32) -> String {
    format!("{width}x{height} is above the limit of {MAX_FRAME_PIXELS} pixels for a camera frame")
}

/// The largest camera frame decoded, raw or compressed, in pixels (8192x6103; cameras on
/// robots stay far below, and a bigger one is damage or an attack: a compressed one is
/// refused before decoding).
pub const MAX_FRAME_PIXELS: u64 = 50_000_000;

/// The pixel rows of a raw image, checked against its data: `row_bytes` bytes each (the
/// pixels, without padding), `step` apart.
pub struct Rows<'a> {
    data: &'a [u8],
    step: usize,
    row_bytes: usize,
    big_endian: bool,
}

impl<'a> Rows<'a> {
    /// The rows of `msg` when each pixel takes `bytes_per_pixel` bytes; an error when it
    /// has no pixels (a width of 0 with any height passes every length check), a row's
    /// size overflows (a 32-bit target's usize), its step is shorter than a row or its data
    /// shorter than its height of rows.
    pub fn of(msg: &'a Image, bytes_per_pixel: usize) -> Result<Self, String> {
        let (width, height, step) = (msg.width, msg.height as usize, msg.step as usize);
        if width == 0 || height == 0 {
            return Err(format!("empty size {width}x{height}"));
        }
        let row_bytes = (width as usize)
            .checked_mul(bytes_per_pixel)
            .ok_or_else(|| format!("a row of {width} pixels overflows the address space"))?;
        if step < row_bytes {
            return Err(format!(
                "step {step} is shorter than a row of {width} pixels ({row_bytes} bytes)"
            ));
        }
        // The last row need not carry its padding.
        let needed = match height {
            0 => Some(0),
            _ => step
                .checked_mul(height - 1)
                .and_then(|n| n.checked_add(row_bytes)),
        };
        if needed.is_none_or(|n| msg.data.len() < n) {
            return Err(format!(
                "{} data bytes, {width}x{height} with step {step} needs {}",
                msg.data.len(),
                needed.map_or("more".to_owned(), |n| n.to_string())
            ));
        }
        Ok(Rows {
            data: &msg.data,
            step,
            row_bytes,
            big_endian: msg.is_bigendian != 0,
        })
    }

    /// Row `y` (below the image's height).
    pub fn row(&self, y: usize) -> &'a [u8] {
        &self.data[y * self.step..y * self.step + self.row_bytes]
    }

    /// Sample `i` of a row as 8 bits; 16-bit samples scaled by 255/65535, rounded.
    fn sample(&self, row: &[u8], i: usize, depth: usize) -> u8 {
        match depth {
            1 => row[i],
            _ => {
                let (hi, lo) = if self.big_endian {
                    (row[2 * i], row[2 * i + 1])
                } else {
                    (row[2 * i + 1], row[2 * i])
                };
                let v = u16::from_be_bytes([hi, lo]) as u32;
                ((v * 255 + 32767) / 65535) as u8
            }
        }
    }
}

fn decode_packed(
    rows: &Rows,
    width: usize,
    height: usize,
    channels: usize,
    depth: usize,
    order: Order,
) -> RgbImage {
    let mut out = RgbImage::new(width as u32, height as u32);
    for y in 0..height {
        let row = rows.row(y);
        for x in 0..width {
            let s = |c: usize| rows.sample(row, x * channels + c, depth);
            let pixel = match (channels, order) {
                (1, _) => [s(0); 3],
                (_, Order::Rgb) => [s(0), s(1), s(2)],
                (_, Order::Bgr) => [s(2), s(1), s(0)],
            };
            out.put_pixel(x as u32, y as u32, Rgb(pixel));
        }
    }
    out
}

fn decode_yuv422(rows: &Rows, width: usize, height: usize, uyvy: bool) -> RgbImage {
    let (y_offset, u_offset, v_offset) = if uyvy { (1, 0, 2) } else { (0, 1, 3) };
    let mut out = RgbImage::new(width as u32, height as u32);
    for y in 0..height {
        let row = rows.row(y);
        for x in 0..width {
            let base = (x / 2) * 4;
            let luma = row[base + (x % 2) * 2 + y_offset];
            // An odd width leaves the last pixel without its pair's V (and, for yuyv, U):
            // borrow the previous pair's chroma, or grey when there is none.
            let chroma = |offset: usize| -> u8 {
                if base + offset < row.len() {
                    row[base + offset]
                } else if base >= 4 {
                    row[base - 4 + offset]
                } else {
                    128
                }
            };
            out.put_pixel(
                x as u32,
                y as u32,
                Rgb(yuv_to_rgb(luma, chroma(u_offset), chroma(v_offset))),
            );
        }
    }
    out
}

/// BT.601 video range (Y 16..235), as OpenCV converts 4:2:2 camera data.
fn yuv_to_rgb(y: u8, u: u8, v: u8) -> [u8; 3] {
    let c = 1.164 * (y as f32 - 16.0);
    let (d, e) = (u as f32 - 128.0, v as f32 - 128.0);
    let clamp = |value: f32| value.round().clamp(0.0, 255.0) as u8;
    [
        clamp(c + 1.596 * e),
        clamp(c - 0.392 * d - 0.813 * e),
        clamp(c + 2.017 * d),
    ]
}

/// Bilinear demosaic: a pixel keeps the colour its sensor site measured, and each other
/// channel is the mean of the samples of that colour in its 3x3 neighbourhood, which is
/// bilinear interpolation inside the image and stays defined at borders and odd sizes.
fn decode_bayer(
    rows: &Rows,
    width: usize,
    height: usize,
    cell: [[usize; 2]; 2],
    depth: usize,
) -> RgbImage {
    // One flat plane (a row of its own for each of a million 1-pixel rows would cost a
    // heap block per input byte).
    let plane: Vec<u8> = (0..height)
        .flat_map(|y| (0..width).map(move |x| rows.sample(rows.row(y), x, depth)))
        .collect();
    let sample = |y: usize, x: usize| plane[y * width + x];
    let mut out = RgbImage::new(width as u32, height as u32);
    for y in 0..height {
        for x in 0..width {
            let mut sum = [0u32; 3];
            let mut count = [0u32; 3];
            for ny in y.saturating_sub(1)..(y + 2).min(height) {
                for nx in x.saturating_sub(1)..(x + 2).min(width) {
                    let colour = cell[ny % 2][nx % 2];
                    sum[colour] += sample(ny, nx) as u32;
                    count[colour] += 1;
                }
            }
            // A 1-pixel-wide or -high image can lack a colour entirely: use grey.
            let channel = |c: usize| {
                if c == cell[y % 2][x % 2] {
                    return sample(y, x);
                }
                (sum[c] + count[c] / 2)
                    .checked_div(count[c])
                    .map_or(sample(y, x), |mean| mean as u8)
            };
            out.put_pixel(
                x as u32,
                y as u32,
                Rgb([channel(0), channel(1), channel(2)]),
            );
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    /// An Image message with rows padded by `pad` bytes of 0xEE (which must never show).
    fn msg(
        encoding: &str,
        width: u32,
        height: u32,
        row_bytes: usize,
        pad: usize,
        pixels: &[u8],
    ) -> Image {
        let step = row_bytes + pad;
        let mut data = Vec::new();
        for row in pixels.chunks(row_bytes) {
            data.extend_from_slice(row);
            data.extend(std::iter::repeat_n(0xEE, pad));
        }
        Image {
            encoding: encoding.into(),
            width,
            height,
            step: step as u32,
            data,
            ..Default::default()
        }
    }

    fn pixels(img: &RgbImage) -> Vec<[u8; 3]> {
        img.pixels().map(|p| p.0).collect()
    }

    #[test]
    fn packed_8bit_encodings_with_padded_steps_and_odd_sizes() {
        // 3x1 image: red, green, blue; 5 bytes of padding per row.
        let rgb = [255, 0, 0, 0, 255, 0, 0, 0, 255];
        let expect = vec![[255, 0, 0], [0, 255, 0], [0, 0, 255]];
        assert_eq!(
            pixels(&decode_image(&msg("rgb8", 3, 1, 9, 5, &rgb)).unwrap()),
            expect
        );
        let bgr = [0, 0, 255, 0, 255, 0, 255, 0, 0];
        assert_eq!(
            pixels(&decode_image(&msg("bgr8", 3, 1, 9, 5, &bgr)).unwrap()),
            expect
        );
        let rgba = [255, 0, 0, 9, 0, 255, 0, 9, 0, 0, 255, 9];
        assert_eq!(
            pixels(&decode_image(&msg("rgba8", 3, 1, 12, 3, &rgba)).unwrap()),
            expect
        );
        let bgra = [0, 0, 255, 9, 0, 255, 0, 9, 255, 0, 0, 9];
        assert_eq!(
            pixels(&decode_image(&msg("bgra8", 3, 1, 12, 1, &bgra)).unwrap()),
            expect
        );
        // mono8 3x3 with 1 byte padding: grey replicated.
        let mono: Vec<u8> = (0..9).map(|i| i * 20).collect();
        let img = decode_image(&msg("mono8", 3, 3, 3, 1, &mono)).unwrap();
        assert_eq!(img.get_pixel(2, 1).0, [100, 100, 100]);
        assert_eq!(img.dimensions(), (3, 3));
    }

    #[test]
    fn sixteen_bit_honours_endianness_and_scales_as_cv_bridge() {
        // 0x1234 = 4660 -> 4660 * 255 / 65535 = 18.13 -> 18.
        let le = msg("mono16", 1, 1, 2, 2, &[0x34, 0x12]);
        assert_eq!(decode_image(&le).unwrap().get_pixel(0, 0).0, [18; 3]);
        let mut be = msg("mono16", 1, 1, 2, 0, &[0x12, 0x34]);
        be.is_bigendian = 1;
        assert_eq!(decode_image(&be).unwrap().get_pixel(0, 0).0, [18; 3]);
        // bgr16 big-endian: B=0x0100 (0.996), G=0x8000 (127.502), R=0xFFFF (255).
        let mut bgr16 = msg("bgr16", 1, 1, 6, 2, &[0x01, 0x00, 0x80, 0x00, 0xFF, 0xFF]);
        bgr16.is_bigendian = 1;
        assert_eq!(
            decode_image(&bgr16).unwrap().get_pixel(0, 0).0,
            [255, 128, 1]
        );
        // Rounded, not the high byte: 0x01FF (1.99) -> 2, 0x00FF (0.99) -> 1, 0x00 -> 0.
        let rgba16 = msg("rgba16", 1, 1, 8, 0, &[0xFF, 0x01, 0xFF, 0x00, 0, 0, 0, 0]);
        assert_eq!(decode_image(&rgba16).unwrap().get_pixel(0, 0).0, [2, 1, 0]);
        // Every 8-bit level times 257 (its 16-bit twin) comes back exactly.
        let ramp: Vec<u8> = (0..=255u16).flat_map(|v| (v * 257).to_le_bytes()).collect();
        let img = decode_image(&msg("mono16", 256, 1, 512, 0, &ramp)).unwrap();
        assert!(img.pixels().enumerate().all(|(i, p)| p.0 == [i as u8; 3]));
    }

    #[test]
    fn opencv_channel_types_read_in_opencv_order() {
        let bgr = [0, 0, 255, 0, 255, 0, 255, 0, 0];
        let expect = vec![[255, 0, 0], [0, 255, 0], [0, 0, 255]];
        assert_eq!(
            pixels(&decode_image(&msg("8UC3", 3, 1, 9, 0, &bgr)).unwrap()),
            expect
        );
        let bgra = [0, 0, 255, 9, 0, 255, 0, 9, 255, 0, 0, 9];
        assert_eq!(
            pixels(&decode_image(&msg("8UC4", 3, 1, 12, 0, &bgra)).unwrap()),
            expect
        );
        assert_eq!(
            pixels(&decode_image(&msg("8UC1", 2, 1, 2, 1, &[7, 9])).unwrap()),
            vec![[7; 3], [9; 3]]
        );
        // A depth image (16UC1, 32FC1) is no camera image: refused, not shown as grey.
        for encoding in ["16UC1", "32FC1"] {
            assert_eq!(
                decode_image(&msg(encoding, 1, 1, 4, 0, &[0; 4])).unwrap_err(),
                DecodeError::UnsupportedEncoding(encoding.into())
            );
        }
    }

    #[test]
    fn yuv422_both_byte_orders_and_odd_width() {
        // Grey (Y=126, U=V=128) and white (Y=235) and black (Y=16).
        let uyvy = [128, 126, 128, 235, 128, 16, 128, 16];
        let img = decode_image(&msg("yuv422", 4, 1, 8, 4, &uyvy)).unwrap();
        assert_eq!(
            pixels(&img),
            vec![[128, 128, 128], [255, 255, 255], [0, 0, 0], [0, 0, 0]]
        );
        let yuyv = [126, 128, 235, 128];
        let img = decode_image(&msg("yuv422_yuy2", 2, 1, 4, 0, &yuyv)).unwrap();
        assert_eq!(pixels(&img), vec![[128, 128, 128], [255, 255, 255]]);
        // Pure red in BT.601 video range: Y=81, U=90, V=240.
        let red = decode_image(&msg("uyvy", 2, 1, 4, 0, &[90, 81, 240, 81])).unwrap();
        let [r, g, b] = red.get_pixel(0, 0).0;
        assert!(r > 250 && g < 5 && b < 5, "{:?}", [r, g, b]);
        // Odd width 3: 6 bytes per row, the last pixel borrows the previous chroma.
        let odd = decode_image(&msg(
            "yuyv",
            3,
            2,
            6,
            2,
            &[81, 90, 81, 240, 81, 90, 81, 90, 81, 240, 81, 90],
        ))
        .unwrap();
        assert_eq!(odd.dimensions(), (3, 2));
        assert_eq!(odd.get_pixel(2, 1), odd.get_pixel(0, 1));
    }

    #[test]
    fn bayer_patterns_demosaic_flat_colours_exactly() {
        // A flat scene of R=200, G=100, B=50 seen through each pattern must decode to it.
        let colour = [200u8, 100, 50];
        for (encoding, cell) in [
            ("bayer_rggb8", [[0, 1], [1, 2]]),
            ("bayer_bggr8", [[2, 1], [1, 0]]),
            ("bayer_gbrg8", [[1, 2], [0, 1]]),
            ("bayer_grbg8", [[1, 0], [2, 1]]),
        ] {
            let (w, h) = (5usize, 3usize);
            let raw: Vec<u8> = (0..h)
                .flat_map(|y| (0..w).map(move |x| colour[cell[y % 2][x % 2]]))
                .collect();
            let img = decode_image(&msg(encoding, w as u32, h as u32, w, 3, &raw)).unwrap();
            assert!(
                img.pixels().all(|p| p.0 == colour),
                "{encoding}: {:?}",
                pixels(&img)
            );
            // The 16-bit twin (little-endian) gives the same.
            let raw16: Vec<u8> = raw.iter().flat_map(|&v| [0x7F, v]).collect();
            let enc16 = encoding.replace('8', "16");
            let img16 = decode_image(&msg(&enc16, w as u32, h as u32, 2 * w, 1, &raw16)).unwrap();
            assert!(img16.pixels().all(|p| p.0 == colour), "{enc16}");
        }
    }

    #[test]
    fn bayer_pixels_keep_the_colour_their_site_measured() {
        // RGGB 6x6, dark but for one green site at (row 2, col 3): that pixel keeps 255 (a
        // mean over the five greens of its 3x3 window gave 51) and lends its green to the
        // red and blue sites beside it (a quarter of it, bilinearly).
        let (w, h) = (6usize, 6usize);
        let mut raw = vec![0u8; w * h];
        raw[2 * w + 3] = 255;
        let img = decode_image(&msg("bayer_rggb8", w as u32, h as u32, w, 0, &raw)).unwrap();
        assert_eq!(img.get_pixel(3, 2).0, [0, 255, 0]);
        assert_eq!(img.get_pixel(2, 2).0, [0, 64, 0], "red site");
        assert_eq!(img.get_pixel(3, 3).0, [0, 64, 0], "blue site");
        // A green site diagonal to it.
        assert_eq!(img.get_pixel(4, 3).0, [0, 0, 0]);
        // A vertical edge in every colour (0 left of column 3, 200 from it): every green
        // site keeps its own sample (the five-green mean blurred them into a zipper), and
        // the columns away from the edge stay flat.
        let edge: Vec<u8> = (0..h)
            .flat_map(|_| (0..w).map(|x| if x >= 3 { 200 } else { 0 }))
            .collect();
        let img = decode_image(&msg("bayer_rggb8", w as u32, h as u32, w, 0, &edge)).unwrap();
        for (x, y) in (0..w).flat_map(|x| (0..h).map(move |y| (x, y))) {
            let green = img.get_pixel(x as u32, y as u32).0[1];
            if (x + y) % 2 == 1 {
                assert_eq!(green, edge[y * w + x], "green site ({x}, {y})");
            }
            if x <= 1 || x >= 4 {
                assert_eq!(img.get_pixel(x as u32, y as u32).0, [edge[y * w + x]; 3]);
            }
        }
    }

    #[test]
    fn malformed_messages_are_errors_not_panics() {
        let e = decode_image(&msg("rgb8", 4, 2, 12, 0, &[0; 23])).unwrap_err();
        assert!(matches!(e, DecodeError::Malformed { .. }), "{e}");
        assert!(e.to_string().contains("23 data bytes"), "{e}");
        let mut short_step = msg("rgb8", 4, 1, 12, 0, &[0; 12]);
        short_step.step = 11;
        assert!(decode_image(&short_step)
            .unwrap_err()
            .to_string()
            .contains("step 11"));
        let empty = Image {
            encoding: "mono8".into(),
            ..Default::default()
        };
        assert!(decode_image(&empty)
            .unwrap_err()
            .to_string()
            .contains("empty size"));
        // No pixels in 4 billion rows needs no data: refused before anything is made per
        // row (a ground-truth image of this shape made eval collect 68 GB of row slices).
        let tall = Image {
            encoding: "mono8".into(),
            height: u32::MAX,
            ..Default::default()
        };
        let e = Rows::of(&tall, 1).err().unwrap();
        assert_eq!(e, "empty size 0x4294967295");
        let e = decode_image(&msg("nv12", 2, 2, 2, 0, &[0; 6])).unwrap_err();
        assert_eq!(e, DecodeError::UnsupportedEncoding("nv12".into()));
        // A last row without its padding is accepted.
        let mut no_last_pad = msg("mono8", 2, 2, 2, 2, &[1, 2, 3, 4]);
        no_last_pad.data.truncate(6);
        assert_eq!(
            decode_image(&no_last_pad).unwrap().get_pixel(1, 1).0,
            [4; 3]
        );
        // The largest sizes a header can claim: refused by length, nothing allocated.
        for encoding in ["mono8", "bayer_rggb8"] {
            let huge = Image {
                encoding: encoding.into(),
                width: u32::MAX,
                height: u32::MAX,
                step: u32::MAX,
                data: vec![0; 10],
                ..Default::default()
            };
            let e = decode_image(&huge).unwrap_err().to_string();
            assert!(e.contains("10 data bytes"), "{encoding}: {e}");
        }
    }

    /// Encodes `img` as `encoding` (a packed one) the way a camera driver would, with
    /// `pad` bytes of row padding and the given byte order for 16-bit samples.
    fn encode_packed(img: &RgbImage, encoding: &str, pad: usize, big_endian: bool) -> Image {
        let Some(Layout::Packed {
            channels,
            depth,
            order,
        }) = Layout::of(encoding)
        else {
            panic!("{encoding}")
        };
        let mut data = Vec::new();
        for y in 0..img.height() {
            for x in 0..img.width() {
                let [r, g, b] = img.get_pixel(x, y).0;
                let samples: Vec<u8> = match (channels, order) {
                    (1, _) => vec![r],
                    (3, Order::Rgb) => vec![r, g, b],
                    (3, Order::Bgr) => vec![b, g, r],
                    (_, Order::Rgb) => vec![r, g, b, 255],
                    (_, Order::Bgr) => vec![b, g, r, 255],
                };
                for v in samples {
                    // 16-bit: the 8-bit value scaled to the 16-bit range, plus a little noise
                    // that rounds away.
                    let wide = v as u16 * 257 + (v < 200) as u16 * 90;
                    match (depth, big_endian) {
                        (1, _) => data.push(v),
                        (_, true) => data.extend(wide.to_be_bytes()),
                        (_, false) => data.extend(wide.to_le_bytes()),
                    }
                }
            }
            data.extend(std::iter::repeat_n(0xEE, pad));
        }
        let row_bytes = img.width() as usize * channels * depth;
        Image {
            encoding: encoding.into(),
            width: img.width(),
            height: img.height(),
            step: (row_bytes + pad) as u32,
            is_bigendian: big_endian as u8,
            data,
            ..Default::default()
        }
    }

    #[test]
    fn every_packed_encoding_round_trips_with_padding_odd_sizes_and_both_byte_orders() {
        let img = RgbImage::from_fn(5, 3, |x, y| {
            Rgb([x as u8 * 50 + 1, y as u8 * 70 + 2, (x * y) as u8 * 9 + 3])
        });
        let grey = RgbImage::from_fn(5, 3, |x, y| Rgb([img.get_pixel(x, y).0[0]; 3]));
        for encoding in [
            "rgb8", "bgr8", "rgba8", "bgra8", "mono8", "rgb16", "bgr16", "rgba16", "bgra16",
            "mono16",
        ] {
            for (pad, big_endian) in [(0, false), (3, false), (7, true), (1, true)] {
                let msg = encode_packed(&img, encoding, pad, big_endian);
                let decoded = decode_image(&msg).unwrap_or_else(|e| panic!("{encoding}: {e}"));
                let expected = if encoding.starts_with("mono") {
                    &grey
                } else {
                    &img
                };
                assert_eq!(
                    &decoded, expected,
                    "{encoding} pad {pad} big-endian {big_endian}"
                );
            }
        }
    }

    #[test]
    fn every_listed_encoding_is_supported() {
        for encoding in SUPPORTED_ENCODINGS {
            assert!(Layout::of(encoding).is_some(), "{encoding}");
        }
    }

    #[test]
    fn compressed_png_and_jpeg_decode_and_garbage_is_an_error() {
        let img = RgbImage::from_fn(8, 6, |x, y| Rgb([x as u8 * 30, y as u8 * 40, 77]));
        let mut png = Vec::new();
        img.write_to(&mut std::io::Cursor::new(&mut png), image::ImageFormat::Png)
            .unwrap();
        let msg = CompressedImage {
            format: "png".into(),
            data: png,
            ..Default::default()
        };
        assert_eq!(decode_compressed(&msg).unwrap(), img);
        let mut jpeg = Vec::new();
        img.write_to(
            &mut std::io::Cursor::new(&mut jpeg),
            image::ImageFormat::Jpeg,
        )
        .unwrap();
        let msg = CompressedImage {
            format: "rgb8; jpeg compressed bgr8".into(),
            data: jpeg,
            ..Default::default()
        };
        let decoded = decode_compressed(&msg).unwrap();
        assert_eq!(decoded.dimensions(), (8, 6));
        let diff = decoded
            .pixels()
            .zip(img.pixels())
            .map(|(a, b)| (a.0[2] as i32 - b.0[2] as i32).abs())
            .max()
            .unwrap();
        assert!(
            diff < 20,
            "JPEG blue channel off by {diff}: channels swapped?"
        );
        let garbage = CompressedImage {
            format: "jpeg".into(),
            data: vec![0xFF, 0xD8, 0xFF, 1, 2, 3],
            ..Default::default()
        };
        assert!(matches!(
            decode_compressed(&garbage),
            Err(DecodeError::Compressed { .. })
        ));
        let depth = CompressedImage {
            format: "16UC1; compressedDepth".into(),
            data: vec![1, 2],
            ..Default::default()
        };
        assert!(matches!(
            decode_compressed(&depth),
            Err(DecodeError::UnsupportedEncoding(_))
        ));
    }

    fn crc32(bytes: &[u8]) -> u32 {
        let mut crc = !0u32;
        for &b in bytes {
            crc ^= b as u32;
            for _ in 0..8 {
                crc = if crc & 1 == 1 {
                    (crc >> 1) ^ 0xEDB8_8320
                } else {
                    crc >> 1
                };
            }
        }
        !crc
    }

    fn png_chunk(kind: &[u8; 4], body: &[u8]) -> Vec<u8> {
        let mut out = (body.len() as u32).to_be_bytes().to_vec();
        let start = out.len();
        out.extend_from_slice(kind);
        out.extend_from_slice(body);
        let crc = crc32(&out[start..]);
        out.extend_from_slice(&crc.to_be_bytes());
        out
    }

    /// A 913-byte JPEG (from fuzzing) whose header says 2048x52992 (108 megapixels) took
    /// 3.6 s to decode into 325 MB; it is refused from its header at once.
    #[test]
    fn a_compressed_frame_above_the_pixel_limit_is_refused_from_its_header() {
        let msg = CompressedImage {
            format: "jpeg".into(),
            data: include_bytes!("../../tests/data/fuzz/compressed_jpeg_108_megapixels.jpg")
                .to_vec(),
            ..Default::default()
        };
        match decode_compressed(&msg) {
            Err(DecodeError::Compressed { message, .. }) => assert!(
                message.contains("2048x52992") && message.contains("limit of 50000000 pixels"),
                "{message}"
            ),
            other => panic!("{other:?}"),
        }
    }

    /// Compressed frames that claim a huge size in their header (a 60000x60000 PNG, a
    /// 65500x65500 JPEG: ~11-13 GB decoded) are refused before anything is allocated.
    #[test]
    fn compressed_frames_claiming_huge_sizes_are_refused_before_allocating() {
        let mut ihdr = Vec::new();
        ihdr.extend_from_slice(&60_000u32.to_be_bytes());
        ihdr.extend_from_slice(&60_000u32.to_be_bytes());
        ihdr.extend_from_slice(&[8, 2, 0, 0, 0]); // 8-bit RGB
        let mut png = b"\x89PNG\r\n\x1a\n".to_vec();
        png.extend(png_chunk(b"IHDR", &ihdr));
        png.extend(png_chunk(
            b"IDAT",
            &[0x78, 0x9c, 0x03, 0x00, 0x00, 0x00, 0x00, 0x01],
        ));
        png.extend(png_chunk(b"IEND", &[]));
        // A real 8x6 JPEG whose frame header (SOF0) is edited to say 65500x65500.
        let mut jpeg = include_bytes!("../../fuzz/seeds/tiny.jpg").to_vec();
        let sof = jpeg
            .windows(2)
            .position(|w| w == [0xFF, 0xC0])
            .expect("baseline JPEG");
        jpeg[sof + 5..sof + 9].copy_from_slice(&[0xFF, 0xDC, 0xFF, 0xDC]);
        for (format, data) in [("png", png), ("jpeg", jpeg)] {
            let msg = CompressedImage {
                format: format.into(),
                data,
                ..Default::default()
            };
            match decode_compressed(&msg) {
                Err(DecodeError::Compressed { message, .. }) => {
                    // The pixel limit, not a later failure on missing data.
                    assert!(message.contains("limit"), "{format}: {message}")
                }
                other => panic!("{format}: {other:?}"),
            }
        }
    }

    /// image_transport compresses a Bayer mosaic as a grey image of it and says so in the
    /// format's encoding: demosaiced as the raw one is. A depth encoding there is no camera
    /// image; a colour or grey one, or none, decodes as before.
    #[test]
    fn the_compressed_formats_encoding_is_honoured() {
        let colour = [200u8, 100, 50];
        let cell = [[0, 1], [1, 2]];
        let (w, h) = (6u32, 4u32);
        let mosaic = image::GrayImage::from_fn(w, h, |x, y| {
            image::Luma([colour[cell[y as usize % 2][x as usize % 2]]])
        });
        let png = |img: image::DynamicImage| {
            let mut out = Vec::new();
            img.write_to(&mut std::io::Cursor::new(&mut out), image::ImageFormat::Png)
                .unwrap();
            out
        };
        let compressed = |format: &str, data: Vec<u8>| CompressedImage {
            format: format.into(),
            data,
            ..Default::default()
        };
        let raw = decode_image(&msg("bayer_rggb8", w, h, w as usize, 0, mosaic.as_raw())).unwrap();
        let decoded = decode_compressed(&compressed(
            "bayer_rggb8; png compressed ",
            png(mosaic.clone().into()),
        ))
        .unwrap();
        assert_eq!(decoded, raw);
        assert!(decoded.pixels().all(|p| p.0 == colour));
        // 16-bit mosaic: the same after scaling.
        let mosaic16 = image::ImageBuffer::<image::Luma<u16>, _>::from_fn(w, h, |x, y| {
            image::Luma([mosaic.get_pixel(x, y).0[0] as u16 * 257])
        });
        let decoded = decode_compressed(&compressed(
            "bayer_rggb16; png compressed ",
            png(mosaic16.into()),
        ))
        .unwrap();
        assert_eq!(decoded, raw);
        // A colour image under a Bayer name (demosaiced before it was compressed) is taken
        // as it is.
        let colour_png = png(image::RgbImage::from_pixel(2, 2, Rgb(colour)).into());
        let decoded = decode_compressed(&compressed(
            "bayer_rggb8; png compressed bgr8",
            colour_png.clone(),
        ))
        .unwrap();
        assert!(decoded.pixels().all(|p| p.0 == colour));
        // An encoding not known is decoded by content, as without one; upper case is read.
        for format in ["BGR8; jpeg compressed bgr8", "weird; png", "; png"] {
            let decoded = decode_compressed(&compressed(format, colour_png.clone())).unwrap();
            assert!(decoded.pixels().all(|p| p.0 == colour), "{format}");
        }
        let decoded = decode_compressed(&compressed(
            "BAYER_RGGB8; png compressed ",
            png(mosaic.clone().into()),
        ))
        .unwrap();
        assert_eq!(decoded, raw);
        // Without the prefix, the same PNG is a grey picture of the mosaic.
        let grey = decode_compressed(&compressed("png", png(mosaic.clone().into()))).unwrap();
        assert_eq!(grey.get_pixel(0, 0).0, [200; 3]);
        let grey =
            decode_compressed(&compressed("mono8; png compressed ", png(mosaic.into()))).unwrap();
        assert_eq!(grey.get_pixel(1, 0).0, [100; 3]);
        // A depth stream compressed as 16-bit PNG is refused, as raw 16UC1 is.
        let depth = image::ImageBuffer::<image::Luma<u16>, _>::from_pixel(2, 2, image::Luma([900]));
        for encoding in ["16UC1", "32FC1", "16SC1"] {
            assert_eq!(
                decode_compressed(&compressed(
                    &format!("{encoding}; png compressed "),
                    png(depth.clone().into())
                )),
                Err(DecodeError::UnsupportedEncoding(encoding.into()))
            );
        }
        assert!(is_opencv_type("8UC1") && !is_opencv_type("UC1") && !is_opencv_type("16UCx"));
    }

    /// A raw frame above the pixel limit is refused before any output is made at its size;
    /// a hostile encoding string is quoted short and escaped.
    #[test]
    fn huge_raw_frames_and_hostile_strings_are_bounded() {
        let image = Image {
            encoding: "mono8".into(),
            width: 50_000_001,
            height: 1,
            step: 50_000_001,
            data: vec![0; 50_000_001],
            ..Default::default()
        };
        match decode_image(&image) {
            Err(DecodeError::Malformed { message, .. }) => {
                assert!(message.contains("limit of 50000000 pixels"), "{message}")
            }
            other => panic!("{other:?}"),
        }
        let image = Image {
            encoding: format!("line\n\u{1b}[31m{}", "x".repeat(10_000)),
            width: 1,
            height: 1,
            step: 1,
            data: vec![0],
            ..Default::default()
        };
        let e = decode_image(&image).unwrap_err().to_string();
        assert!(
            e.len() < 120 && !e.contains('\n') && !e.contains('\u{1b}') && e.ends_with("...`"),
            "{e}"
        );
    }
}

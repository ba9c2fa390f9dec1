//! sensor_msgs/Image decoding: any encoding name, size, step, byte order and data.
#![no_main]

use bayes_perception::msg::encoding::{decode_image, SUPPORTED_ENCODINGS};
use bayes_perception::msg::Image;
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    if data.len() < 14 {
        return;
    }
    let u32_at = |i: usize| u32::from_le_bytes(data[i..i + 4].try_into().unwrap());
    // Small sizes most of the time (so real decoding runs), any size otherwise.
    let (mut width, mut height, mut step) = (u32_at(0), u32_at(4), u32_at(8));
    if data[12] & 0x80 == 0 {
        width %= 64;
        height %= 64;
        step %= 512;
    }
    let pick = data[13] as usize;
    let (encoding, rest) = if pick < SUPPORTED_ENCODINGS.len() * 4 {
        (SUPPORTED_ENCODINGS[pick % SUPPORTED_ENCODINGS.len()].to_owned(), &data[14..])
    } else {
        // An arbitrary encoding name: up to 16 bytes of the input.
        let n = (pick % 17).min(data.len() - 14);
        (String::from_utf8_lossy(&data[14..14 + n]).into_owned(), &data[14 + n..])
    };
    let msg = Image {
        header: Default::default(),
        height,
        width,
        encoding,
        is_bigendian: data[12] & 1,
        step,
        data: rest.to_vec(),
    };
    let _ = decode_image(&msg);
});

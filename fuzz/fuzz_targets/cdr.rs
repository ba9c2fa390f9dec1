//! CDR decoding of every message type the bag reader understands, from the same bytes.
#![no_main]

use bayes_perception::bag::cdr::CdrMessage;
use bayes_perception::msg::{CameraInfo, CompressedImage, Image};
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    let _ = Image::from_cdr(data);
    let _ = CompressedImage::from_cdr(data);
    let _ = CameraInfo::from_cdr(data);
});

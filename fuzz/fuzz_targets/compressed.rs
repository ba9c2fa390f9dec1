//! sensor_msgs/CompressedImage decoding (JPEG, PNG, anything else refused).
#![no_main]

use bayes_perception::msg::encoding::decode_compressed;
use bayes_perception::msg::CompressedImage;
use libfuzzer_sys::fuzz_target;

const FORMATS: [&str; 4] = ["jpeg", "png", "rgb8; jpeg compressed bgr8", "16UC1; compressedDepth"];

fuzz_target!(|data: &[u8]| {
    let Some((&first, rest)) = data.split_first() else {
        return;
    };
    let msg = CompressedImage {
        header: Default::default(),
        format: FORMATS[first as usize % FORMATS.len()].to_owned(),
        data: rest.to_vec(),
    };
    let _ = decode_compressed(&msg);
});

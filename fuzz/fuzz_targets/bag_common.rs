//! Shared by the bag targets: the bytes as a bag file on disk (a per-process file in the
//! temporary directory, overwritten each run), read the way `bag process` reads it.

use std::ops::ControlFlow;

use bayes_perception::bag::cdr::CdrMessage;
use bayes_perception::bag::read::BagReader;
use bayes_perception::msg::encoding::{decode_compressed, decode_image};
use bayes_perception::msg::{CameraInfo, CompressedImage, Image};

pub fn read_bag_file(data: &[u8], name: &str) {
    let dir = std::env::temp_dir().join(format!("bayes-fuzz-{}", std::process::id()));
    std::fs::create_dir_all(&dir).expect("temporary directory");
    let path = dir.join(name);
    std::fs::write(&path, data).expect("write the bag file");
    let Ok(reader) = BagReader::open(&path) else {
        return;
    };
    let _ = reader.info();
    let _ = reader.read(|message| {
        if let Ok(image) = Image::from_cdr(&message.data) {
            let _ = decode_image(&image);
        }
        if let Ok(image) = CompressedImage::from_cdr(&message.data) {
            let _ = decode_compressed(&image);
        }
        let _ = CameraInfo::from_cdr(&message.data);
        ControlFlow::Continue(())
    });
}

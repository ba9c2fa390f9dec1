//! The ROS 2 params file, parsed and validated as the node and the CLI do.
#![no_main]

use bayes_perception::config::{Params, ROOT_NODE};
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    if let Ok(text) = std::str::from_utf8(data) {
        if let Ok(params) = Params::from_yaml(text, "fuzz", ROOT_NODE) {
            let _ = params.validate("fuzz");
            let _ = params.device_request();
        }
    }
});

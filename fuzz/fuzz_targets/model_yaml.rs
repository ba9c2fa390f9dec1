//! model.yaml, parsed and checked; a valid one also builds its network shape.
#![no_main]

use bayes_perception::model::ModelSpec;
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    if let Ok(text) = std::str::from_utf8(data) {
        if let Ok(spec) = ModelSpec::from_yaml(text, std::path::Path::new("fuzz/model.yaml")) {
            let _ = spec.arch();
            let _ = spec.heads();
            let _ = spec.palette();
        }
    }
});

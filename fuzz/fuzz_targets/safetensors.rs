//! model.safetensors: the bytes as the weights of a small fixed model, loaded as
//! `Model::load` loads a model directory (names, shapes and dtypes checked). The model's
//! own valid weights are the seed: scripts/fuzz.sh copies them from the model directory
//! this target writes on its first run (BAYES_FUZZ_MODEL_DIR, default in the temporary
//! directory).
#![no_main]

use bayes_perception::model::{random_spec, ArchConfig, Model};
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    let dir = std::env::var_os("BAYES_FUZZ_MODEL_DIR")
        .map(std::path::PathBuf::from)
        .unwrap_or_else(|| std::env::temp_dir().join(format!("bayes-fuzz-model-{}", std::process::id())));
    if !dir.join("model.yaml").is_file() {
        let arch = ArchConfig {
            first_conv_channels: 4,
            growth_rate: 2,
            down_blocks: vec![1],
            bottleneck_layers: 1,
            up_blocks: vec![1],
            dropout: 0.2,
        };
        Model::new(random_spec(arch, None, 3, true, 8, 8), tch::Device::Cpu)
            .expect("model")
            .save(&dir)
            .expect("save");
        std::fs::copy(dir.join("model.safetensors"), dir.join("valid.safetensors"))
            .expect("keep the valid weights");
    }
    std::fs::write(dir.join("model.safetensors"), data).expect("write weights");
    let _ = Model::load(&dir, tch::Device::Cpu);
});

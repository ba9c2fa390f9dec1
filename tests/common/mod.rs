//! Helpers shared by the integration tests: tiny models and images, so the suite runs in
//! seconds on a CPU.
#![allow(dead_code)]

use std::sync::{Mutex, MutexGuard};

use bayes_perception::model::{random_spec, ArchConfig, Model, ModelSpec};
use tch::Device;

/// A 2-level FC-DenseNet small enough for debug-build tests (native input 32x32).
pub fn tiny_arch() -> ArchConfig {
    ArchConfig {
        first_conv_channels: 8,
        growth_rate: 4,
        down_blocks: vec![2, 2],
        bottleneck_layers: 2,
        up_blocks: vec![2, 2],
        dropout: 0.2,
    }
}

pub fn tiny_spec(classes: usize, depth: bool) -> ModelSpec {
    random_spec(tiny_arch(), None, classes, depth, 32, 32)
}

pub fn tiny_model(classes: usize, depth: bool) -> Model {
    Model::new(tiny_spec(classes, depth), Device::Cpu).unwrap()
}

/// A smooth test pattern with some texture.
pub fn pattern(width: u32, height: u32) -> image::RgbImage {
    image::RgbImage::from_fn(width, height, |x, y| {
        image::Rgb([
            (x * 255 / width.max(1)) as u8,
            (y * 255 / height.max(1)) as u8,
            ((x * 7 + y * 13) % 256) as u8,
        ])
    })
}

/// libtorch's random generator is process-global: tests in one binary that seed it and
/// draw take this lock so they do not interleave, and so does any test of such a binary
/// that builds a model in-process (`Model::new`, `tiny_model`, `Engine::load`: the
/// initial weights are drawn from it before a load overwrites them).
pub fn rng_lock() -> MutexGuard<'static, ()> {
    static LOCK: Mutex<()> = Mutex::new(());
    LOCK.lock().unwrap_or_else(|e| e.into_inner())
}

/// The `bayes_perception` binary of this build, with no inherited log or backtrace
/// settings (so its output is what a user sees).
pub fn bin() -> std::process::Command {
    let mut cmd = std::process::Command::new(env!("CARGO_BIN_EXE_bayes_perception"));
    cmd.env_remove("RUST_LOG").env("RUST_BACKTRACE", "0");
    cmd
}

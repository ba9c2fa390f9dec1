//! bayes_perception: Bayesian semantic segmentation and depth with separate aleatoric and
//! epistemic uncertainty (FC-DenseNet with Monte Carlo dropout, after Kendall & Gal 2017).
//!
//! - [`model`]: the network and model directories (model.yaml + model.safetensors);
//! - [`uncertainty`]: the per-pixel uncertainty math as pure tensor functions;
//! - [`moments`]: sampling-free epistemic uncertainty, means and variances propagated
//!   through the dropout network layer by layer (`mode: moments`);
//! - [`points`]: the uncertainty point cloud (camera model, back-projection, PointCloud2
//!   and PLY);
//! - [`engine`]: one image in, labels, depth and uncertainty images out;
//! - [`pipeline`]: one camera message in, the node's output messages out (node and bags);
//! - [`config`]: the params file shared with the ROS node;
//! - [`colormap`], [`output`]: false colour and the files `infer` writes;
//! - [`msg`], [`node`]: ROS message contents, camera encodings and the node's logic, all
//!   without ROS (the r2r glue is `src/bin/bayes_perception_node/`);
//! - [`bag`]: rosbag2 files (CDR, MCAP, SQLite3) without ROS;
//! - [`train`], [`synth`], [`eval`]: losses, data, training loop, synthetic scenes and
//!   evaluation of accuracy and uncertainty quality;
//! - [`text_file`]: size-limited reading of the YAML files that come from outside;
//!   [`panic_guard`]: panics of libtorch (tch) and mcap on bad input turned into errors.

pub mod bag;
pub mod colormap;
pub mod config;
pub mod cuda_graph;
pub mod device;
pub mod engine;
pub mod error;
pub mod eval;
pub mod model;
pub mod moments;
pub mod msg;
pub mod node;
pub mod output;
pub mod panic_guard;
pub mod pipeline;
pub mod points;
pub mod synth;
pub mod text_file;
pub mod train;
pub mod uncertainty;

pub use engine::{Engine, EngineConfig, Prediction};
pub use error::{Error, Result};

/// The libtorch version this binary was built against (from build.rs).
pub const LIBTORCH_VERSION: &str = env!("BAYES_LIBTORCH_VERSION");
/// The libtorch library directory baked into the binary's rpath (from build.rs).
pub const LIBTORCH_LIB_DIR: &str = env!("BAYES_LIBTORCH_LIB_DIR");

/// Lets libtorch's CPU allocator back large tensors (>= 2 MB) with transparent huge pages,
/// unless the user set `THP_MEM_ALLOC_ENABLE` themselves. FC-DenseNet's feature maps are
/// hundreds of MB; with 4 KB pages most CPU time went to page faults (BENCHMARKS.md:
/// about 30 % faster frames on CPU). libtorch reads the variable once, at its first
/// allocation, so call this at the very start of `main`, before any other thread exists.
pub fn enable_huge_page_allocations() {
    if std::env::var_os("THP_MEM_ALLOC_ENABLE").is_none() {
        std::env::set_var("THP_MEM_ALLOC_ENABLE", "1");
    }
}

/// Configures the fail points named in `FAILPOINTS` (builds with the `failpoints` feature,
/// for the tests; see `engine::forward`). Keep the returned guard alive while the process
/// runs. Without the feature it does nothing.
pub fn fail_points_from_env() -> fail::FailScenario<'static> {
    fail::FailScenario::setup()
}

#[cfg(test)]
pub(crate) mod test_support {
    use std::sync::{Mutex, MutexGuard};

    /// libtorch's random generator is global; tests that seed it and then draw take this
    /// lock so parallel tests do not interleave their draws.
    pub fn torch_rng_lock() -> MutexGuard<'static, ()> {
        static LOCK: Mutex<()> = Mutex::new(());
        LOCK.lock().unwrap_or_else(|e| e.into_inner())
    }
}

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
pub mod camera;
pub mod colormap;
pub mod config;
pub mod cuda_graph;
pub mod device;
pub mod engine;
pub mod error;
pub mod eval;
pub mod log_once;
pub mod model;
pub mod moments;
pub mod msg;
pub mod node;
pub mod output;
pub mod panic_guard;
pub mod pipeline;
pub mod points;
pub mod process;
pub mod stats;
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

/// Sets up how the process allocates memory; call it at the very start of `main`, before
/// any other thread exists (libtorch reads its variable once, at its first allocation).
/// Each is left alone where the user set it.
///
/// - libtorch's CPU allocator backs large tensors (>= 2 MB) with transparent huge pages
///   (unless `THP_MEM_ALLOC_ENABLE` is set). FC-DenseNet's feature maps are hundreds of MB;
///   with 4 KB pages most CPU time went to page faults (BENCHMARKS.md: about 30 % faster
///   frames on CPU).
/// - glibc keeps up to 64 MiB of freed memory at each heap's top for reuse and serves blocks below 32 MiB from
///   it (unless glibc's malloc is tuned by a `MALLOC_*` variable or `glibc.malloc.*` in
///   `GLIBC_TUNABLES`; see [`keep_freed_memory`]).
pub fn configure_allocations() {
    if std::env::var_os("THP_MEM_ALLOC_ENABLE").is_none() {
        std::env::set_var("THP_MEM_ALLOC_ENABLE", "1");
    }
    if !malloc_tuned_by_user(std::env::vars_os()) {
        keep_freed_memory();
    }
}

/// Whether the environment tunes glibc's malloc (then [`configure_allocations`] leaves it
/// as the user set it).
fn malloc_tuned_by_user(
    vars: impl IntoIterator<Item = (std::ffi::OsString, std::ffi::OsString)>,
) -> bool {
    vars.into_iter().any(|(name, value)| {
        let name = name.to_string_lossy();
        name.starts_with("MALLOC_")
            || (name == "GLIBC_TUNABLES" && value.to_string_lossy().contains("glibc.malloc."))
    })
}

/// Makes glibc keep freed memory for the next frame: blocks below 32 MiB (glibc's largest
/// threshold on 64-bit) come from its heaps instead of mappings of their own, and up to
/// 64 MiB free at a heap's top stays mapped. By default glibc raises both thresholds only
/// as far as the largest block freed so far. A process that has freed nothing much larger
/// than a frame's buffers (bench on a GPU: its weights are created on the device) then
/// gives each frame's output buffers back to the kernel and faults them in again, as
/// zeroed pages, on the next frame: about half the time of building a frame's
/// messages on the CPU (BENCHMARKS.md, "host outputs"). Returns whether glibc took both
/// settings (false on other C libraries, which keep their own behaviour).
pub fn keep_freed_memory() -> bool {
    #[cfg(all(target_os = "linux", target_env = "gnu"))]
    {
        // glibc's largest mmap threshold: 32 MiB on 64-bit, 512 KiB on 32-bit.
        let mmap_threshold: libc::c_int = if cfg!(target_pointer_width = "64") {
            32 << 20
        } else {
            512 << 10
        };
        // SAFETY: mallopt only sets glibc's allocation parameters; the values are within
        // glibc's limits (it rejects others and returns 0).
        let (mmap, trim) = unsafe {
            (
                libc::mallopt(libc::M_MMAP_THRESHOLD, mmap_threshold),
                libc::mallopt(libc::M_TRIM_THRESHOLD, 2 * mmap_threshold),
            )
        };
        mmap == 1 && trim == 1
    }
    #[cfg(not(all(target_os = "linux", target_env = "gnu")))]
    false
}

/// Configures the fail points named in `FAILPOINTS` (builds with the `failpoints` feature,
/// for the tests; see `engine::forward`). Keep the returned guard alive while the process
/// runs. Without the feature it does nothing.
pub fn fail_points_from_env() -> fail::FailScenario<'static> {
    fail::FailScenario::setup()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn malloc_settings_of_the_user_are_kept() {
        let env = |pairs: &[(&str, &str)]| -> Vec<(std::ffi::OsString, std::ffi::OsString)> {
            pairs.iter().map(|(k, v)| (k.into(), v.into())).collect()
        };
        assert!(!malloc_tuned_by_user(env(&[
            ("PATH", "/bin"),
            ("MALLOC", "x")
        ])));
        assert!(!malloc_tuned_by_user(env(&[(
            "GLIBC_TUNABLES",
            "glibc.rtld.nns=2"
        )])));
        assert!(malloc_tuned_by_user(env(&[("MALLOC_ARENA_MAX", "2")])));
        assert!(malloc_tuned_by_user(env(&[(
            "MALLOC_TRIM_THRESHOLD_",
            "0"
        )])));
        assert!(malloc_tuned_by_user(env(&[(
            "GLIBC_TUNABLES",
            "glibc.rtld.nns=2:glibc.malloc.mmap_threshold=65536"
        )])));
    }
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

//! `bayes_perception doctor`: what libtorch and which devices this binary sees.

use std::process::ExitCode;

use bayes_perception::device::cuda_library_loaded;
use bayes_perception::{LIBTORCH_LIB_DIR, LIBTORCH_VERSION};
use tch::Cuda;

/// `--version` detail: the crate and the libtorch it was built against.
pub const LONG_VERSION: &str = concat!(
    env!("CARGO_PKG_VERSION"),
    " (libtorch ",
    env!("BAYES_LIBTORCH_VERSION"),
    ", ",
    env!("BAYES_LIBTORCH_LIB_DIR"),
    ")"
);

pub fn run() -> anyhow::Result<ExitCode> {
    let cuda = Cuda::is_available();
    let yes_no = |b: bool| if b { "yes" } else { "no" };
    println!("bayes_perception {}", env!("CARGO_PKG_VERSION"));
    println!("libtorch version:   {LIBTORCH_VERSION}");
    println!("libtorch directory: {LIBTORCH_LIB_DIR}");
    println!(
        "libtorch_cuda:      {}",
        if cuda_library_loaded() {
            "loaded"
        } else {
            "not loaded (CPU-only libtorch or build)"
        }
    );
    println!("CUDA available:     {}", yes_no(cuda));
    println!(
        "CUDA devices:       {}",
        if cuda { Cuda::device_count() } else { 0 }
    );
    let cudnn = cuda && Cuda::cudnn_is_available();
    if cudnn {
        println!(
            "cuDNN available:    yes (version {})",
            tch::utils::version_cudnn()
        );
    } else {
        println!("cuDNN available:    no");
    }
    println!(
        "CPU threads:        {} (libtorch intra-op)",
        tch::get_num_threads()
    );
    println!(
        "MKL-DNN / OpenMP:   {} / {}",
        yes_no(tch::utils::has_mkldnn()),
        yes_no(tch::utils::has_openmp())
    );
    Ok(ExitCode::SUCCESS)
}

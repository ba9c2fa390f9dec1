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
    println!("libtorch version:   {LIBTORCH_VERSION} (built against)");
    println!("libtorch directory: {LIBTORCH_LIB_DIR} (built against)");
    // LD_LIBRARY_PATH wins over the build's run path: the libtorch this process mapped is
    // the one that runs, and another one than the build's is worth a warning.
    match loaded_libtorch_dir() {
        // (A build that did not know its libtorch's directory has nothing to compare.)
        Some(dir)
            if LIBTORCH_LIB_DIR == "unknown"
                || std::fs::canonicalize(&dir).ok()
                    == std::fs::canonicalize(LIBTORCH_LIB_DIR).ok() =>
        {
            println!("libtorch loaded:    {}", dir.display())
        }
        Some(dir) => {
            println!("libtorch loaded:    {}", dir.display());
            log::warn!(
                "the libtorch loaded ({}) is not the one built against ({LIBTORCH_LIB_DIR}): \
                 LD_LIBRARY_PATH or the system's library path chose it; a libtorch of another \
                 version may crash or fail to run",
                dir.display()
            );
        }
        None => println!(
            "libtorch loaded:    (no libtorch_cpu shared library in /proc/self/maps: linked \
             statically, or /proc unreadable)"
        ),
    }
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

/// The directory of the libtorch_cpu library this process mapped, from /proc/self/maps.
fn loaded_libtorch_dir() -> Option<std::path::PathBuf> {
    let maps = std::fs::read_to_string("/proc/self/maps").ok()?;
    maps.lines()
        // The path is the sixth field, after padding, and may hold spaces.
        .filter_map(|line| line.splitn(6, ' ').nth(5).map(str::trim_start))
        .find(|path| {
            std::path::Path::new(path)
                .file_name()
                .is_some_and(|n| n.to_string_lossy().starts_with("libtorch_cpu.so"))
        })
        .and_then(|path| std::path::Path::new(path).parent().map(|p| p.to_owned()))
}

//! Link set-up for libtorch that torch-sys does not do for us (see shared toolchain notes):
//!
//! - an rpath to the libtorch the binary was built against, so it runs without
//!   LD_LIBRARY_PATH (torch-sys passes the path only to its own C++ helper);
//! - libtorch_cuda kept in the link when it exists: with the default `--as-needed` the
//!   linker drops it (nothing references it by symbol) and CUDA reads as unavailable on a
//!   GPU machine. Kept, the same binary still runs on a CPU-only machine.
//!
//! - `csrc/cuda_memory.cpp`, the caching allocator's memory statistics (tch has none),
//!   compiled against that libtorch's headers; where that fails the crate builds without
//!   them (`bp_cuda_memory` unset) and reports no GPU peak memory.
//!
//! The libtorch location follows torch-sys: `LIBTORCH` (a user's own libtorch, e.g. on a
//! Jetson) or, with `LIBTORCH_USE_PYTORCH`, the torch package of the first `python3` on PATH.
//! The version and library directory are baked in for `bayes_perception doctor`.

use std::env;
use std::path::{Path, PathBuf};
use std::process::Command;

fn main() {
    println!("cargo:rerun-if-changed=build.rs");
    println!("cargo:rerun-if-changed=csrc/cuda_memory.cpp");
    println!("cargo:rerun-if-changed=csrc/cuda_graph.cpp");
    println!("cargo:rerun-if-env-changed=CUDA_HOME");
    println!("cargo:rerun-if-env-changed=LIBTORCH_CXX11_ABI");
    println!("cargo:rustc-check-cfg=cfg(bp_cuda_memory)");
    println!("cargo:rustc-check-cfg=cfg(bp_cuda_graph)");
    println!("cargo:rerun-if-env-changed=LIBTORCH");
    println!("cargo:rerun-if-env-changed=LIBTORCH_USE_PYTORCH");

    let Some((lib_dir, version)) = locate_libtorch() else {
        println!(
            "cargo:warning=libtorch not located (set LIBTORCH, or LIBTORCH_USE_PYTORCH=1 with \
             torch installed; `make setup` does the latter); the binary will need LD_LIBRARY_PATH"
        );
        println!("cargo:rustc-env=BAYES_LIBTORCH_LIB_DIR=unknown");
        println!("cargo:rustc-env=BAYES_LIBTORCH_VERSION=unknown");
        return;
    };

    println!(
        "cargo:rustc-env=BAYES_LIBTORCH_LIB_DIR={}",
        lib_dir.display()
    );
    println!("cargo:rustc-env=BAYES_LIBTORCH_VERSION={version}");
    println!("cargo:rustc-link-search=native={}", lib_dir.display());
    println!("cargo:rustc-link-arg=-Wl,-rpath,{}", lib_dir.display());
    if lib_dir.join("libtorch_cuda.so").exists() {
        println!("cargo:rustc-link-arg=-Wl,--no-as-needed");
        println!("cargo:rustc-link-arg=-ltorch_cuda");
        println!("cargo:rustc-link-arg=-Wl,--as-needed");
    }
    compile_cuda_memory_shim(&lib_dir);
    compile_cuda_graph_shim(&lib_dir);
}

/// Builds csrc/cuda_graph.cpp (CUDA graphs, src/cuda_graph.rs) where libtorch has CUDA:
/// libc10_cuda next to libtorch, ATen's CUDA headers, and the CUDA runtime headers (from
/// CUDA_HOME, a CUDA toolkit in /usr/local/cuda, or the `nvidia` packages beside a PyTorch
/// wheel; the wheels lack `crt/`, which Triton's bundled CUDA headers supply). Elsewhere
/// the crate builds without it and CUDA graphs are refused with a clear error.
fn compile_cuda_graph_shim(lib_dir: &Path) {
    let include = lib_dir.with_file_name("include");
    if !lib_dir.join("libc10_cuda.so").exists() || !include.join("ATen/cuda/CUDAGraph.h").exists() {
        return;
    }
    // site-packages, when libtorch is a PyTorch wheel's (site-packages/torch/lib).
    let site_packages = lib_dir.parent().and_then(Path::parent);
    // CUDA_HOME if set, then the wheel's own CUDA headers (the version libtorch was built
    // with), then a system toolkit.
    let mut candidates: Vec<PathBuf> = env::var_os("CUDA_HOME")
        .map(|home| PathBuf::from(home).join("include"))
        .into_iter()
        .collect();
    let mut fallbacks = vec![PathBuf::from("/usr/local/cuda/include")];
    if let Some(site) = site_packages {
        if let Ok(entries) = std::fs::read_dir(site.join("nvidia")) {
            let mut found: Vec<PathBuf> = entries
                .flatten()
                .map(|e| e.path().join("include"))
                .collect();
            found.sort();
            candidates.extend(found);
            candidates.push(site.join("nvidia/cuda_runtime/include"));
        }
        fallbacks.push(site.join("triton/backends/nvidia/include"));
    }
    candidates.extend(fallbacks);
    let runtime = candidates
        .iter()
        .find(|dir| dir.join("cuda_runtime_api.h").exists());
    let crt = candidates
        .iter()
        .find(|dir| dir.join("crt/host_config.h").exists());
    let (Some(runtime), Some(crt)) = (runtime, crt) else {
        println!(
            "cargo:warning=CUDA graphs left out: libtorch has CUDA but the CUDA runtime headers \
             were not found (set CUDA_HOME)"
        );
        return;
    };
    let abi = env::var("LIBTORCH_CXX11_ABI").unwrap_or_else(|_| "1".to_owned());
    let mut build = cc::Build::new();
    build
        .cpp(true)
        .file("csrc/cuda_graph.cpp")
        .include(&include)
        .include(include.join("torch/csrc/api/include"))
        .include(runtime)
        .flag("-std=c++17")
        .flag(format!("-D_GLIBCXX_USE_CXX11_ABI={abi}"))
        .warnings(false);
    if crt != runtime {
        // After every other directory: only what the runtime's own directory lacks.
        build.flag("-idirafter").flag(crt.display().to_string());
    }
    match build.try_compile("bp_cuda_graph") {
        Ok(()) => {
            println!("cargo:rustc-link-lib=c10_cuda");
            println!("cargo:rustc-cfg=bp_cuda_graph");
        }
        Err(e) => {
            println!("cargo:warning=CUDA graphs left out (csrc/cuda_graph.cpp did not build: {e})")
        }
    }
}

/// Builds csrc/cuda_memory.cpp against libtorch's headers (next to its lib directory, as
/// in the PyTorch wheels and the C++ libtorch zips).
fn compile_cuda_memory_shim(lib_dir: &Path) {
    let include = lib_dir.with_file_name("include");
    // Like torch-sys: the PyTorch wheels use the C++11 ABI, LIBTORCH_CXX11_ABI=0 for others.
    let abi = env::var("LIBTORCH_CXX11_ABI").unwrap_or_else(|_| "1".to_owned());
    let built = cc::Build::new()
        .cpp(true)
        .file("csrc/cuda_memory.cpp")
        .include(&include)
        .include(include.join("torch/csrc/api/include"))
        .flag("-std=c++17")
        .flag(format!("-D_GLIBCXX_USE_CXX11_ABI={abi}"))
        .warnings(false)
        .try_compile("bp_cuda_memory");
    match built {
        Ok(()) => {
            println!("cargo:rustc-link-lib=c10");
            println!("cargo:rustc-cfg=bp_cuda_memory");
        }
        Err(e) => println!(
            "cargo:warning=GPU memory statistics left out (csrc/cuda_memory.cpp did not build: {e})"
        ),
    }
}

/// The libtorch library directory and version string, if they can be found.
fn locate_libtorch() -> Option<(PathBuf, String)> {
    if let Ok(root) = env::var("LIBTORCH") {
        let root = PathBuf::from(root);
        let version = read_build_version(&root).unwrap_or_else(|| "unknown".to_owned());
        return Some((root.join("lib"), version));
    }
    if env::var_os("LIBTORCH_USE_PYTORCH").is_some() {
        let output = Command::new("python3")
            .args([
                "-c",
                "import os, torch; print(torch.__version__); \
                 print(os.path.join(os.path.dirname(torch.__file__), 'lib'))",
            ])
            .output()
            .ok()?;
        if !output.status.success() {
            return None;
        }
        let text = String::from_utf8(output.stdout).ok()?;
        let mut lines = text.lines().filter(|l| !l.trim().is_empty());
        let version = lines.next()?.trim().to_owned();
        let lib_dir = PathBuf::from(lines.next()?.trim());
        return Some((lib_dir, version));
    }
    None
}

fn read_build_version(root: &Path) -> Option<String> {
    let text = std::fs::read_to_string(root.join("build-version")).ok()?;
    Some(text.trim().to_owned())
}

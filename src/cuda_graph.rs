//! CUDA graphs for the network's forward pass (experimental; `bench --cuda-graphs`): the
//! engine captures its deterministic pass (aleatoric mode) once, then each forward is a
//! copy into the captured input, one graph launch, and a copy of the head outputs. A
//! single pass of FC-DenseNet103 is hundreds of small kernels, so on a fast GPU the
//! launches, not the arithmetic, bound it. MC and moments passes are not captured.
//!
//! The C++ side is csrc/cuda_graph.cpp (torch.cuda.graph's protocol over
//! at::cuda::CUDAGraph), built only against a libtorch with CUDA (`bp_cuda_graph`). The
//! memory of the captured activations stays with the graph (a private pool) as long as
//! the graph lives. A capture that fails partway leaves libtorch's CUDA generator in
//! capture mode: the caller must not use CUDA random numbers in that process again.

use tch::Tensor;

use crate::error::{Error, Result};

/// Whether this build can capture CUDA graphs (compiled against libtorch with CUDA).
pub const AVAILABLE: bool = cfg!(bp_cuda_graph);

#[cfg(bp_cuda_graph)]
mod ffi {
    use std::ffi::{c_char, c_int, c_void};
    extern "C" {
        pub fn bp_graph_last_error() -> *const c_char;
        pub fn bp_graph_new() -> *mut c_void;
        pub fn bp_graph_free(graph: *mut c_void);
        pub fn bp_graph_side_stream_begin(device: c_int) -> c_int;
        pub fn bp_graph_side_stream_end(device: c_int) -> c_int;
        pub fn bp_graph_capture_begin(graph: *mut c_void) -> c_int;
        pub fn bp_graph_capture_end(graph: *mut c_void) -> c_int;
        pub fn bp_graph_replay(graph: *mut c_void) -> c_int;
    }
}

/// A forward pass captured as a CUDA graph, with the tensors it reads and writes.
pub struct CapturedForward {
    #[cfg(bp_cuda_graph)]
    graph: *mut std::ffi::c_void,
    /// The captured input: every run copies its input here.
    input: Tensor,
    /// The captured outputs, overwritten by every replay.
    #[cfg_attr(not(bp_cuda_graph), allow(dead_code))]
    outputs: Vec<Tensor>,
}

// SAFETY: libtorch's CUDAGraph has no thread affinity (replay uses the calling thread's
// current stream), and its tensors are Send. Not Sync: `run` writes the captured input
// and outputs, so one graph must not run on two threads at once (the engine keeps it in a
// Mutex).
unsafe impl Send for CapturedForward {}

impl std::fmt::Debug for CapturedForward {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("CapturedForward")
            .field("input", &self.input.size())
            .field("outputs", &self.outputs.len())
            .finish_non_exhaustive()
    }
}

#[cfg(bp_cuda_graph)]
fn check(code: std::ffi::c_int, what: &str) -> Result<()> {
    if code == 0 {
        return Ok(());
    }
    // SAFETY: the shim returns a pointer to its thread-local, NUL-terminated message.
    let message = unsafe { std::ffi::CStr::from_ptr(ffi::bp_graph_last_error()) };
    Err(Error::Inference(format!(
        "CUDA graph {what}: {}",
        message.to_string_lossy()
    )))
}

impl CapturedForward {
    /// Captures `forward` on an input shaped like `example` (on CUDA device `device`):
    /// `warmup` eager runs on a side stream first (cuDNN's algorithm search and libtorch's
    /// lazy set-up must not happen inside the capture), then the capture.
    #[cfg(bp_cuda_graph)]
    pub fn capture(
        device: usize,
        example: &Tensor,
        warmup: usize,
        forward: impl Fn(&Tensor) -> Vec<Tensor>,
    ) -> Result<Self> {
        let device = device as std::ffi::c_int;
        let input = example.copy();
        // SAFETY (all calls below): plain C calls into the shim; each reports failure by
        // its return value.
        check(
            unsafe { ffi::bp_graph_side_stream_begin(device) },
            "side stream",
        )?;
        let captured = crate::engine::guarded(|| {
            for _ in 0..warmup {
                drop(forward(&input));
            }
            let graph = unsafe { ffi::bp_graph_new() };
            if graph.is_null() {
                check(1, "creation")?;
            }
            let mut this = CapturedForward {
                graph,
                input: input.shallow_clone(),
                outputs: Vec::new(),
            };
            check(unsafe { ffi::bp_graph_capture_begin(graph) }, "capture")?;
            // A failure inside the capture must still end it (the stream would stay in
            // capture mode); the graph is then dropped, but libtorch's generator stays
            // in capture mode (see the module's documentation).
            let outputs = crate::engine::guarded(|| Ok(forward(&this.input)));
            let ended = check(unsafe { ffi::bp_graph_capture_end(graph) }, "capture end");
            this.outputs = outputs?;
            ended?;
            Ok(this)
        });
        let restored = check(
            unsafe { ffi::bp_graph_side_stream_end(device) },
            "side stream",
        );
        let captured = captured?;
        restored?;
        Ok(captured)
    }

    /// Without CUDA graph support in this build: an error saying so.
    #[cfg(not(bp_cuda_graph))]
    pub fn capture(
        _device: usize,
        _example: &Tensor,
        _warmup: usize,
        _forward: impl Fn(&Tensor) -> Vec<Tensor>,
    ) -> Result<Self> {
        Err(unavailable())
    }

    /// Whether `input` has the shape and type this graph was captured for.
    pub fn fits(&self, input: &Tensor) -> bool {
        input.size() == self.input.size() && input.kind() == self.input.kind()
    }

    /// Runs the captured forward on `input` (shaped as captured): its outputs, copied out
    /// of the graph's buffers (the next replay overwrites those).
    pub fn run(&self, input: &Tensor) -> Result<Vec<Tensor>> {
        #[cfg(bp_cuda_graph)]
        {
            self.input.shallow_clone().copy_(input);
            // SAFETY: a graph captured by `capture`, alive while `self` is.
            check(unsafe { ffi::bp_graph_replay(self.graph) }, "replay")?;
            Ok(self.outputs.iter().map(Tensor::copy).collect())
        }
        #[cfg(not(bp_cuda_graph))]
        {
            let _ = input;
            Err(unavailable())
        }
    }
}

impl Drop for CapturedForward {
    fn drop(&mut self) {
        #[cfg(bp_cuda_graph)]
        // SAFETY: the graph was created by bp_graph_new and is freed once.
        unsafe {
            ffi::bp_graph_free(self.graph)
        };
    }
}

/// The error of a CUDA-graph request this build cannot serve.
pub fn unavailable() -> Error {
    Error::Inference(
        "CUDA graphs are not in this build (it needs a libtorch with CUDA and its headers at \
         build time)"
            .into(),
    )
}

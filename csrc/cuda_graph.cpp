// CUDA graphs for the network's forward pass, which tch does not expose: a thin C API over
// at::cuda::CUDAGraph (the C++ side of torch.cuda.graph). Compiled by build.rs only against
// a libtorch with CUDA (its headers and libc10_cuda); used by src/cuda_graph.rs.
//
// The capture protocol is torch.cuda.graph's: warm-up and capture run on a side stream
// (capture on the default stream is not allowed), the caller's work between
// bp_graph_capture_begin and bp_graph_capture_end is recorded, and replay runs on the
// current (default) stream. The capture's device is made the current one for the capture
// (capture_begin takes the current device's stream and generator) and the previous one is
// restored after. capture_begin registers that device's default generator with the graph,
// so a replay that drew random numbers would draw fresh ones from the generator's current
// seed and offset (the engine captures only the deterministic pass). Every libtorch
// exception becomes a non-zero return, its message kept for bp_graph_last_error.
#include <ATen/cuda/CUDAGraph.h>
#include <c10/cuda/CUDAFunctions.h>
#include <c10/cuda/CUDAStream.h>

#include <exception>
#include <string>

namespace {

thread_local std::string last_error;
// The current device before bp_graph_side_stream_begin, restored by _end.
thread_local c10::DeviceIndex previous_device = -1;

template <typename F>
int guarded(F&& f) {
  try {
    f();
    return 0;
  } catch (const std::exception& e) {
    last_error = e.what();
  } catch (...) {
    last_error = "unknown C++ exception";
  }
  return 1;
}

}  // namespace

extern "C" const char* bp_graph_last_error() { return last_error.c_str(); }

extern "C" void* bp_graph_new() {
  at::cuda::CUDAGraph* graph = nullptr;
  guarded([&] { graph = new at::cuda::CUDAGraph(); });
  return graph;
}

extern "C" void bp_graph_free(void* graph) {
  guarded([&] { delete static_cast<at::cuda::CUDAGraph*>(graph); });
}

// Makes `device` the current device, waits for it, then makes a pooled side stream
// current on it.
extern "C" int bp_graph_side_stream_begin(int device) {
  return guarded([&] {
    const auto index = static_cast<c10::DeviceIndex>(device);
    previous_device = c10::cuda::current_device();
    c10::cuda::set_device(index);
    c10::cuda::device_synchronize();
    c10::cuda::setCurrentCUDAStream(c10::cuda::getStreamFromPool(false, index));
  });
}

// Waits for the side stream's work, makes the default stream current again, and restores
// the previous current device.
extern "C" int bp_graph_side_stream_end(int device) {
  return guarded([&] {
    const auto index = static_cast<c10::DeviceIndex>(device);
    c10::cuda::getCurrentCUDAStream(index).synchronize();
    c10::cuda::setCurrentCUDAStream(c10::cuda::getDefaultCUDAStream(index));
    if (previous_device >= 0) {
      c10::cuda::set_device(previous_device);
    }
  });
}

extern "C" int bp_graph_capture_begin(void* graph) {
  return guarded([&] { static_cast<at::cuda::CUDAGraph*>(graph)->capture_begin(); });
}

extern "C" int bp_graph_capture_end(void* graph) {
  return guarded([&] { static_cast<at::cuda::CUDAGraph*>(graph)->capture_end(); });
}

extern "C" int bp_graph_replay(void* graph) {
  return guarded([&] { static_cast<at::cuda::CUDAGraph*>(graph)->replay(); });
}

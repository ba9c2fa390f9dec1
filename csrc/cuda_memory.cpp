// GPU memory statistics of libtorch's caching allocator, which tch does not expose: the
// equivalent of torch.cuda.memory_allocated / max_memory_allocated / memory_reserved /
// max_memory_reserved and reset_peak_memory_stats. Compiled by build.rs against the
// libtorch the crate links; used by src/device.rs. Every libtorch exception (no CUDA, a
// bad device index) becomes a non-zero return.
#include <ATen/DeviceAccelerator.h>

#include <cstdint>

extern "C" int bp_cuda_memory_stats(int device, int64_t* out) {
  try {
    const auto stats =
        at::accelerator::getDeviceStats(static_cast<c10::DeviceIndex>(device));
    const auto all = static_cast<size_t>(c10::CachingDeviceAllocator::StatType::AGGREGATE);
    out[0] = stats.allocated_bytes[all].current;
    out[1] = stats.allocated_bytes[all].peak;
    out[2] = stats.reserved_bytes[all].current;
    out[3] = stats.reserved_bytes[all].peak;
    return 0;
  } catch (...) {
    return 1;
  }
}

extern "C" int bp_cuda_reset_peak_memory(int device) {
  try {
    at::accelerator::resetPeakStats(static_cast<c10::DeviceIndex>(device));
    return 0;
  } catch (...) {
    return 1;
  }
}

// The device's free and total memory as the driver sees it (cudaMemGetInfo; what
// torch.cuda.mem_get_info returns). Memory libtorch's allocator has cached but not handed
// out counts as used here.
extern "C" int bp_cuda_memory_info(int device, int64_t* out) {
  try {
    const auto info = at::accelerator::getMemoryInfo(static_cast<c10::DeviceIndex>(device));
    out[0] = static_cast<int64_t>(info.first);
    out[1] = static_cast<int64_t>(info.second);
    return 0;
  } catch (...) {
    return 1;
  }
}

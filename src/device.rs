//! Choosing the compute device: `cpu`, `cuda`, `cuda:N` or `auto`.

use std::fmt;
use std::str::FromStr;

use tch::{Cuda, Device};

use crate::error::{Error, Result};

/// A device as the user asks for it, before checking what the machine has.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum DeviceRequest {
    /// The first CUDA device if there is one, else the CPU (with a warning).
    Auto,
    Cpu,
    /// A CUDA device by index (`cuda` = `cuda:0`).
    Cuda(usize),
}

impl FromStr for DeviceRequest {
    type Err = String;

    fn from_str(s: &str) -> Result<Self, String> {
        match s {
            "auto" => Ok(DeviceRequest::Auto),
            "cpu" => Ok(DeviceRequest::Cpu),
            "cuda" => Ok(DeviceRequest::Cuda(0)),
            _ => s
                .strip_prefix("cuda:")
                .and_then(|n| n.parse().ok())
                .map(DeviceRequest::Cuda)
                .ok_or_else(|| {
                    format!("`{s}` is not a device; expected auto, cpu, cuda or cuda:N")
                }),
        }
    }
}

impl fmt::Display for DeviceRequest {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            DeviceRequest::Auto => f.write_str("auto"),
            DeviceRequest::Cpu => f.write_str("cpu"),
            DeviceRequest::Cuda(i) => write!(f, "cuda:{i}"),
        }
    }
}

impl DeviceRequest {
    /// The device to run on. `auto` without CUDA falls back to the CPU and logs a warning;
    /// an explicit CUDA request without CUDA is an error.
    pub fn resolve(self) -> Result<Device> {
        let count = if Cuda::is_available() {
            Cuda::device_count() as usize
        } else {
            0
        };
        match self {
            DeviceRequest::Cpu => Ok(Device::Cpu),
            DeviceRequest::Auto if count > 0 => Ok(Device::Cuda(0)),
            DeviceRequest::Auto => {
                log::warn!("device auto: no CUDA device available, running on the CPU");
                Ok(Device::Cpu)
            }
            DeviceRequest::Cuda(_) if count == 0 => Err(Error::Device(format!(
                "`{self}` requested but CUDA is not available (libtorch CUDA library loaded: {}; \
                 CUDA devices visible: 0). Use device: cpu or auto.",
                if cuda_library_loaded() { "yes" } else { "no" }
            ))),
            DeviceRequest::Cuda(i) if i >= count => Err(Error::Device(format!(
                "`{self}` requested but only {count} CUDA device(s) are visible (cuda:0..cuda:{})",
                count - 1
            ))),
            DeviceRequest::Cuda(i) => Ok(Device::Cuda(i)),
        }
    }
}

/// Whether libtorch's CUDA library is loaded into this process (it is when the binary was
/// built against a CUDA-enabled libtorch). Without it CUDA can never be available.
pub fn cuda_library_loaded() -> bool {
    std::fs::read_to_string("/proc/self/maps").is_ok_and(|maps| maps.contains("libtorch_cuda.so"))
}

/// A short name for a resolved device (`cpu`, `cuda:0`).
pub fn device_name(device: Device) -> String {
    match device {
        Device::Cuda(i) => format!("cuda:{i}"),
        Device::Cpu => "cpu".into(),
        other => format!("{other:?}").to_lowercase(),
    }
}

/// Where a timing was taken, for reports: the device, the CPU's model and libtorch's
/// thread count, and whether the build is optimised (a debug build's host work is slower).
pub fn machine_summary(device: Device) -> String {
    let cpu = std::fs::read_to_string("/proc/cpuinfo")
        .ok()
        .and_then(|info| {
            info.lines()
                .filter_map(|line| line.split_once(':'))
                .find(|(key, _)| key.trim() == "model name")
                .map(|(_, model)| model.trim().to_owned())
        });
    format!(
        "{} on {} ({} libtorch threads), {} build",
        device_name(device),
        cpu.as_deref().unwrap_or("an unknown CPU"),
        tch::get_num_threads(),
        if cfg!(debug_assertions) {
            "debug"
        } else {
            "release"
        }
    )
}

/// libtorch's CUDA caching allocator on one device, MiB: what this process's tensors hold
/// now and at most since the last [`reset_cuda_peak_memory`] (torch.cuda.memory_allocated
/// and max_memory_allocated), and what the allocator keeps from the driver (reserved).
#[derive(Debug, Clone, Copy, PartialEq, serde::Serialize)]
pub struct CudaMemory {
    pub allocated_mib: f64,
    pub peak_allocated_mib: f64,
    pub reserved_mib: f64,
    pub peak_reserved_mib: f64,
}

#[cfg(bp_cuda_memory)]
extern "C" {
    fn bp_cuda_memory_stats(device: i32, out: *mut i64) -> i32;
    fn bp_cuda_reset_peak_memory(device: i32) -> i32;
    fn bp_cuda_memory_info(device: i32, out: *mut i64) -> i32;
}

/// The caching allocator's statistics for CUDA device `index`; `None` without CUDA, or
/// where the crate was built without csrc/cuda_memory.cpp.
pub fn cuda_memory(index: usize) -> Option<CudaMemory> {
    #[cfg(bp_cuda_memory)]
    {
        let mut out = [0i64; 4];
        // SAFETY: the shim writes exactly four values into `out` and returns 0, or
        // returns non-zero (every libtorch exception caught) and writes nothing.
        if unsafe { bp_cuda_memory_stats(index as i32, out.as_mut_ptr()) } != 0 {
            return None;
        }
        let mib = |bytes: i64| bytes as f64 / (1024.0 * 1024.0);
        Some(CudaMemory {
            allocated_mib: mib(out[0]),
            peak_allocated_mib: mib(out[1]),
            reserved_mib: mib(out[2]),
            peak_reserved_mib: mib(out[3]),
        })
    }
    #[cfg(not(bp_cuda_memory))]
    {
        let _ = index;
        None
    }
}

/// The driver's view of CUDA device `index`: (free, total) MiB (torch.cuda.mem_get_info;
/// memory libtorch's allocator keeps cached counts as used); `None` without CUDA.
pub fn cuda_free_memory(index: usize) -> Option<(f64, f64)> {
    #[cfg(bp_cuda_memory)]
    {
        let mut out = [0i64; 2];
        // SAFETY: the shim writes exactly two values into `out` and returns 0, or returns
        // non-zero (every libtorch exception caught) and writes nothing.
        if unsafe { bp_cuda_memory_info(index as i32, out.as_mut_ptr()) } != 0 {
            return None;
        }
        let mib = |bytes: i64| bytes as f64 / (1024.0 * 1024.0);
        Some((mib(out[0]), mib(out[1])))
    }
    #[cfg(not(bp_cuda_memory))]
    {
        let _ = index;
        None
    }
}

/// Starts a new peak for [`cuda_memory`]; false where that is not possible.
pub fn reset_cuda_peak_memory(index: usize) -> bool {
    #[cfg(bp_cuda_memory)]
    {
        // SAFETY: no arguments besides the index; exceptions are caught in the shim.
        unsafe { bp_cuda_reset_peak_memory(index as i32) == 0 }
    }
    #[cfg(not(bp_cuda_memory))]
    {
        let _ = index;
        false
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn cuda_memory_statistics_are_none_without_a_gpu_and_consistent_with_one() {
        if !Cuda::is_available() {
            assert_eq!(cuda_memory(0), None);
            assert!(!reset_cuda_peak_memory(0));
            assert_eq!(cuda_free_memory(0), None);
            return;
        }
        let (free, total) = cuda_free_memory(0).expect("memory info on a CUDA device");
        assert!(free > 0.0 && free <= total, "free {free} of {total} MiB");
        // On a GPU machine: a 64 MiB tensor shows in allocated and peak.
        assert!(reset_cuda_peak_memory(0));
        let before = cuda_memory(0).expect("statistics on a CUDA device");
        let t = tch::Tensor::zeros([16 << 20], (tch::Kind::Float, Device::Cuda(0)));
        let with = cuda_memory(0).unwrap();
        assert!(
            with.allocated_mib - before.allocated_mib >= 63.9,
            "{before:?} {with:?}"
        );
        drop(t);
        let after = cuda_memory(0).unwrap();
        assert!(after.peak_allocated_mib >= with.allocated_mib, "{after:?}");
        assert!(
            after.peak_reserved_mib >= after.peak_allocated_mib,
            "{after:?}"
        );
    }

    #[test]
    fn parses_every_form_and_rejects_others() {
        assert_eq!("auto".parse(), Ok(DeviceRequest::Auto));
        assert_eq!("cpu".parse(), Ok(DeviceRequest::Cpu));
        assert_eq!("cuda".parse(), Ok(DeviceRequest::Cuda(0)));
        assert_eq!("cuda:3".parse(), Ok(DeviceRequest::Cuda(3)));
        for bad in ["gpu", "cuda:", "cuda:x", "CPU", ""] {
            let err = bad.parse::<DeviceRequest>().unwrap_err();
            assert!(err.contains("expected auto, cpu, cuda or cuda:N"), "{err}");
        }
        assert_eq!(DeviceRequest::Cuda(2).to_string(), "cuda:2");
    }

    #[test]
    fn cpu_and_auto_resolve_and_missing_cuda_is_an_error() {
        assert_eq!(DeviceRequest::Cpu.resolve().unwrap(), Device::Cpu);
        let auto = DeviceRequest::Auto.resolve().unwrap();
        if Cuda::is_available() {
            assert_eq!(auto, Device::Cuda(0));
        } else {
            assert_eq!(auto, Device::Cpu);
            let err = DeviceRequest::Cuda(0).resolve().unwrap_err().to_string();
            assert!(err.contains("CUDA is not available"), "{err}");
        }
    }
}

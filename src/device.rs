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

#[cfg(test)]
mod tests {
    use super::*;

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

//! Device selection: `auto | cpu | cuda | cuda:N`.
//!
//! `auto` picks the first CUDA device when one is usable and the CPU
//! otherwise; asking for CUDA explicitly on a machine without it is an error
//! that says why, never a silent fallback.

use std::fmt;
use std::str::FromStr;

use tch::Device;

use crate::{runtime, Error, Result};

/// A device as a user names it on the command line or in a config file.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum DeviceSpec {
    /// CUDA device 0 when available, else the CPU.
    #[default]
    Auto,
    /// The CPU.
    Cpu,
    /// A CUDA device; `None` means device 0.
    Cuda(Option<usize>),
}

impl FromStr for DeviceSpec {
    type Err = Error;

    fn from_str(s: &str) -> Result<Self> {
        let lower = s.trim().to_ascii_lowercase();
        match lower.as_str() {
            "auto" => Ok(DeviceSpec::Auto),
            "cpu" => Ok(DeviceSpec::Cpu),
            "cuda" | "gpu" => Ok(DeviceSpec::Cuda(None)),
            other => other
                .strip_prefix("cuda:")
                .and_then(|n| n.parse::<usize>().ok())
                .map(|n| DeviceSpec::Cuda(Some(n)))
                .ok_or_else(|| Error::InvalidDevice {
                    spec: s.to_string(),
                }),
        }
    }
}

impl fmt::Display for DeviceSpec {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            DeviceSpec::Auto => f.write_str("auto"),
            DeviceSpec::Cpu => f.write_str("cpu"),
            DeviceSpec::Cuda(None) => f.write_str("cuda"),
            DeviceSpec::Cuda(Some(n)) => write!(f, "cuda:{n}"),
        }
    }
}

impl serde::Serialize for DeviceSpec {
    fn serialize<S: serde::Serializer>(&self, s: S) -> std::result::Result<S::Ok, S::Error> {
        s.collect_str(self)
    }
}

impl<'de> serde::Deserialize<'de> for DeviceSpec {
    fn deserialize<D: serde::Deserializer<'de>>(d: D) -> std::result::Result<Self, D::Error> {
        let s = String::deserialize(d)?;
        s.parse().map_err(serde::de::Error::custom)
    }
}

impl DeviceSpec {
    /// Resolves the spec to a libtorch device, checking that it exists.
    pub fn resolve(self) -> Result<Device> {
        match self {
            DeviceSpec::Cpu => Ok(Device::Cpu),
            DeviceSpec::Auto => {
                let device = if tch::Cuda::is_available() {
                    Device::Cuda(0)
                } else {
                    Device::Cpu
                };
                tracing::debug!(?device, "auto device");
                Ok(device)
            }
            DeviceSpec::Cuda(index) => {
                let index = index.unwrap_or(0);
                if !tch::Cuda::is_available() {
                    return Err(Error::CudaUnavailable {
                        spec: self.to_string(),
                        reason: cuda_unavailable_reason(),
                    });
                }
                let count = usize::try_from(tch::Cuda::device_count()).unwrap_or(0);
                if index >= count {
                    return Err(Error::CudaIndexOutOfRange { index, count });
                }
                Ok(Device::Cuda(index))
            }
        }
    }
}

fn cuda_unavailable_reason() -> String {
    let info = runtime::RuntimeInfo::collect();
    match (info.libtorch_has_cuda_lib, info.libtorch_cuda_loaded) {
        (false, _) => format!(
            "this libtorch ({}) is a CPU-only build",
            info.libtorch_dir
                .as_deref()
                .map(|p| p.display().to_string())
                .unwrap_or_default()
        ),
        (true, false) => "libtorch_cuda is not loaded into this process (linked with \
                          --as-needed?); run `cargo xtask doctor`"
            .to_string(),
        (true, true) => {
            "no CUDA device is visible (no driver, or CUDA_VISIBLE_DEVICES is empty)".to_string()
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_and_prints_every_form() {
        for (text, spec) in [
            ("auto", DeviceSpec::Auto),
            ("cpu", DeviceSpec::Cpu),
            ("cuda", DeviceSpec::Cuda(None)),
            ("cuda:1", DeviceSpec::Cuda(Some(1))),
        ] {
            assert_eq!(text.parse::<DeviceSpec>().unwrap(), spec);
            assert_eq!(spec.to_string(), text);
        }
        assert_eq!(
            "CUDA:0".parse::<DeviceSpec>().unwrap(),
            DeviceSpec::Cuda(Some(0))
        );
    }

    #[test]
    fn rejects_unknown_names_with_the_name() {
        for bad in ["tpu", "cuda:", "cuda:x", "cuda:-1", ""] {
            let err = bad.parse::<DeviceSpec>().unwrap_err().to_string();
            assert!(err.contains(&format!("{bad:?}")), "{err}");
            assert!(err.contains("cuda:N"), "{err}");
        }
    }

    #[test]
    fn cpu_always_resolves() {
        assert_eq!(DeviceSpec::Cpu.resolve().unwrap(), Device::Cpu);
    }

    #[test]
    fn explicit_cuda_without_cuda_is_a_clear_error() {
        if tch::Cuda::is_available() {
            return; // nothing to check on a GPU machine
        }
        let err = DeviceSpec::Cuda(Some(0)).resolve().unwrap_err().to_string();
        assert!(
            err.starts_with("device cuda:0 requested but CUDA is not available"),
            "{err}"
        );
        assert_eq!(DeviceSpec::Auto.resolve().unwrap(), Device::Cpu);
    }
}

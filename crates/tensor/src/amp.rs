//! Mixed precision: autocast regions on any device, CPU included.
//!
//! Inside [`autocast`], libtorch runs the matrix-multiply ops (convolutions,
//! linear layers, `bmm`, attention) in the 16-bit type and keeps the rest
//! (norm statistics, softmax accumulation, reductions, the loss) in f32, as
//! `torch.autocast` does; parameters stay f32 (the master weights), their
//! 16-bit copies are cached for the region. tch reaches only CUDA's autocast
//! state, so the CPU's goes through a small C++ shim (`csrc/amp_shim.cpp`).
//!
//! 16-bit arithmetic is fast only where the hardware has it: every CUDA GPU
//! since Ampere for bf16 (Volta for f16), and on x86 CPUs AVX512-BF16 or AMX.
//! Elsewhere libtorch emulates it, one to two orders of magnitude slower than
//! f32; [`cpu_support`] tells which, and the trainer and sampler warn.

use std::fmt;
use std::str::FromStr;

use tch::{Device, Kind};

use crate::{Error, Result};

/// The precision a forward (and backward) pass computes in.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, serde::Serialize, serde::Deserialize)]
#[serde(try_from = "String", into = "String")]
pub enum Precision {
    /// Plain f32 everywhere.
    #[default]
    Fp32,
    /// bf16 autocast: f32's range with 8 bits of mantissa; no loss scaling.
    Bf16,
    /// f16 autocast: more mantissa, less range (training may need loss
    /// scaling; the trainer skips steps whose gradients overflow).
    Fp16,
}

impl Precision {
    /// The names accepted by [`FromStr`]; `no` (accelerate's spelling) is
    /// also read as `fp32`.
    pub const NAMES: &'static [&'static str] = &["fp32", "bf16", "fp16"];

    /// The 16-bit kind autocast casts to, if any.
    pub fn autocast_kind(self) -> Option<Kind> {
        match self {
            Precision::Fp32 => None,
            Precision::Bf16 => Some(Kind::BFloat16),
            Precision::Fp16 => Some(Kind::Half),
        }
    }

    /// Whether this build can run autocast regions on `device`.
    pub fn is_available(self, device: Device) -> bool {
        match self {
            Precision::Fp32 => true,
            _ => cfg!(lmzh_amp) && matches!(device, Device::Cpu | Device::Cuda(_)),
        }
    }
}

impl fmt::Display for Precision {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            Precision::Fp32 => "fp32",
            Precision::Bf16 => "bf16",
            Precision::Fp16 => "fp16",
        })
    }
}

impl FromStr for Precision {
    type Err = Error;

    fn from_str(s: &str) -> Result<Self> {
        match s.trim().to_ascii_lowercase().as_str() {
            "fp32" | "f32" | "float32" | "no" => Ok(Precision::Fp32),
            "bf16" | "bfloat16" => Ok(Precision::Bf16),
            "fp16" | "f16" | "float16" | "half" => Ok(Precision::Fp16),
            _ => Err(Error::InvalidPrecision { name: s.into() }),
        }
    }
}

impl TryFrom<String> for Precision {
    type Error = Error;
    fn try_from(s: String) -> Result<Self> {
        s.parse()
    }
}

impl From<Precision> for String {
    fn from(p: Precision) -> String {
        p.to_string()
    }
}

/// Runs `f` with autocast on `device` in `precision` (`Fp32`: just runs it).
/// Regions nest; the previous state comes back when `f` returns or panics.
pub fn autocast<T>(device: Device, precision: Precision, f: impl FnOnce() -> T) -> Result<T> {
    let Some(kind) = precision.autocast_kind() else {
        return Ok(f());
    };
    let _guard = Guard::enter(device, kind, precision)?;
    Ok(f())
}

/// Fails when this build cannot run `precision` on `device`, and warns
/// (tracing) when the CPU would emulate it, many times slower than f32.
pub fn check(precision: Precision, device: Device) -> Result<()> {
    if precision == Precision::Fp32 {
        return Ok(());
    }
    autocast(device, precision, || ())?;
    if device == Device::Cpu && cpu_support(precision) == CpuSupport::Emulated {
        tracing::warn!(
            "{precision} on this CPU is emulated (no AVX512-BF16/FP16 or AMX): expect it to \
             be many times slower than fp32"
        );
    }
    Ok(())
}

/// Whether autocast is on for `device`'s type in this thread.
pub fn is_enabled(device: Device) -> bool {
    #[cfg(lmzh_amp)]
    {
        device_code(device).is_some_and(|d| unsafe { ffi::lmzh_autocast_is_enabled(d) } == 1)
    }
    #[cfg(not(lmzh_amp))]
    {
        let _ = device;
        false
    }
}

/// How this CPU does 16-bit arithmetic.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum CpuSupport {
    /// In hardware (the named instruction set extension).
    Native(&'static str),
    /// Emulated in software: far slower than f32.
    Emulated,
    /// Not known on this platform.
    Unknown,
}

/// Whether this CPU computes `precision` in hardware (Linux x86: the flags
/// of `/proc/cpuinfo`). f32 is always native.
pub fn cpu_support(precision: Precision) -> CpuSupport {
    let wanted: &[(&str, &'static str)] = match precision {
        Precision::Fp32 => return CpuSupport::Native("f32"),
        Precision::Bf16 => &[("amx_bf16", "AMX-BF16"), ("avx512_bf16", "AVX512-BF16")],
        Precision::Fp16 => &[("amx_fp16", "AMX-FP16"), ("avx512_fp16", "AVX512-FP16")],
    };
    let Ok(info) = std::fs::read_to_string("/proc/cpuinfo") else {
        return CpuSupport::Unknown;
    };
    let Some(flags) = info.lines().find(|l| l.starts_with("flags")) else {
        return CpuSupport::Unknown;
    };
    let flags: Vec<&str> = flags.split_whitespace().collect();
    wanted
        .iter()
        .find(|(flag, _)| flags.contains(flag))
        .map_or(CpuSupport::Emulated, |(_, name)| CpuSupport::Native(name))
}

/// c10's `ScalarType` code of a 16-bit kind.
#[cfg(lmzh_amp)]
fn scalar_type(kind: Kind) -> i32 {
    match kind {
        Kind::Half => 5,
        _ => 15, // BFloat16
    }
}

fn device_code(device: Device) -> Option<i32> {
    match device {
        Device::Cpu => Some(0),
        Device::Cuda(_) => Some(1),
        _ => None,
    }
}

/// An open autocast region; leaving it restores the previous state.
struct Guard {
    #[cfg_attr(not(lmzh_amp), allow(dead_code))]
    device: i32,
    #[cfg_attr(not(lmzh_amp), allow(dead_code))]
    prev: (i32, i32),
}

impl Guard {
    fn enter(device: Device, kind: Kind, precision: Precision) -> Result<Self> {
        let unavailable = |reason: &str| Error::AutocastUnavailable {
            precision: precision.to_string(),
            device: format!("{device:?}"),
            reason: reason.into(),
        };
        let code = device_code(device).ok_or_else(|| unavailable("only cpu and cuda"))?;
        #[cfg(lmzh_amp)]
        {
            let (mut enabled, mut dtype) = (0, 0);
            // SAFETY: plain ints in and out; the shim catches every exception.
            let rc = unsafe {
                ffi::lmzh_autocast_enter(code, scalar_type(kind), &mut enabled, &mut dtype)
            };
            if rc != 0 {
                return Err(unavailable("libtorch refused the autocast state"));
            }
            Ok(Guard {
                device: code,
                prev: (enabled, dtype),
            })
        }
        #[cfg(not(lmzh_amp))]
        {
            let _ = (code, kind);
            Err(unavailable(
                "this build has no autocast shim (libtorch headers were not found)",
            ))
        }
    }
}

impl Drop for Guard {
    fn drop(&mut self) {
        #[cfg(lmzh_amp)]
        // SAFETY: as in `enter`.
        unsafe {
            ffi::lmzh_autocast_exit(self.device, self.prev.0, self.prev.1);
        }
    }
}

#[cfg(lmzh_amp)]
mod ffi {
    use std::ffi::c_int;
    extern "C" {
        pub fn lmzh_autocast_enter(
            device: c_int,
            dtype: c_int,
            prev_enabled: *mut c_int,
            prev_dtype: *mut c_int,
        ) -> c_int;
        pub fn lmzh_autocast_exit(device: c_int, prev_enabled: c_int, prev_dtype: c_int) -> c_int;
        pub fn lmzh_autocast_is_enabled(device: c_int) -> c_int;
    }
}

#[cfg(all(test, lmzh_amp))]
mod tests {
    use super::*;
    use tch::Tensor;

    #[test]
    fn matmul_runs_in_bf16_inside_and_f32_outside() {
        let a = Tensor::randn([4, 8], (Kind::Float, Device::Cpu));
        let b = Tensor::randn([8, 3], (Kind::Float, Device::Cpu));
        let inside = autocast(Device::Cpu, Precision::Bf16, || {
            assert!(is_enabled(Device::Cpu));
            a.matmul(&b)
        })
        .unwrap();
        assert_eq!(inside.kind(), Kind::BFloat16);
        assert!(!is_enabled(Device::Cpu));
        let outside = a.matmul(&b);
        assert_eq!(outside.kind(), Kind::Float);
        // Same product up to bf16 rounding of the inputs and output.
        let err = (inside.to_kind(Kind::Float) - &outside).abs().max();
        let scale = outside.abs().max();
        assert!(err.double_value(&[]) <= 0.02 * scale.double_value(&[]) + 1e-3);
    }

    #[test]
    fn regions_nest_and_restore() {
        let a = Tensor::ones([2, 2], (Kind::Float, Device::Cpu));
        autocast(Device::Cpu, Precision::Bf16, || {
            let inner = autocast(Device::Cpu, Precision::Fp16, || a.mm(&a)).unwrap();
            assert_eq!(inner.kind(), Kind::Half);
            // Back to the outer region's dtype.
            assert_eq!(a.mm(&a).kind(), Kind::BFloat16);
        })
        .unwrap();
        assert_eq!(a.mm(&a).kind(), Kind::Float);
    }

    #[test]
    fn fp32_is_a_plain_call_and_names_parse() {
        assert_eq!(autocast(Device::Cpu, Precision::Fp32, || 3).unwrap(), 3);
        assert_eq!("no".parse::<Precision>().unwrap(), Precision::Fp32);
        assert_eq!("BF16".parse::<Precision>().unwrap(), Precision::Bf16);
        let err = "int8".parse::<Precision>().unwrap_err().to_string();
        assert!(err.contains("int8") && err.contains("bf16"), "{err}");
    }
}

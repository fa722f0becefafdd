//! What libtorch this process actually runs on.
//!
//! Used by `lmzh doctor` (and through it `cargo xtask doctor`) and by the
//! device errors: the libtorch folder and version come from the shared
//! library that is mapped into this process, so they tell the truth even when
//! several libtorch installs exist on a machine.

use std::ffi::{c_char, c_int, CStr};
use std::path::{Path, PathBuf};

use serde::Serialize;

/// A snapshot of the libtorch runtime of this process.
#[derive(Debug, Clone, Serialize)]
pub struct RuntimeInfo {
    /// The libtorch root (the folder holding `lib/`), from the mapped `libtorch_cpu`.
    pub libtorch_dir: Option<PathBuf>,
    /// Its version (`2.11.0+cu130`), from `build-version` or the wheel's `version.py`.
    pub libtorch_version: Option<String>,
    /// The libtorch version that this build of tch was written for.
    pub tch_expects: &'static str,
    /// Intra-op CPU threads libtorch uses.
    pub cpu_threads: i32,
    pub has_mkl: bool,
    pub has_mkldnn: bool,
    pub has_openmp: bool,
    /// `lib/libtorch_cuda.so` exists next to `libtorch_cpu`.
    pub libtorch_has_cuda_lib: bool,
    /// `libtorch_cuda` is mapped into this process (the linker kept it).
    pub libtorch_cuda_loaded: bool,
    pub cuda_available: bool,
    pub cuda_device_count: i64,
    pub cuda_device_names: Vec<String>,
    pub cudnn_available: bool,
    /// cuDNN version as libtorch reports it (e.g. 91002), when available.
    pub cudnn_version: Option<i64>,
}

/// The libtorch version tch 0.24 binds.
pub const TCH_LIBTORCH_VERSION: &str = "2.11.0";

impl RuntimeInfo {
    /// Collects the snapshot. Cheap apart from CUDA initialisation.
    pub fn collect() -> Self {
        let maps = std::fs::read_to_string("/proc/self/maps").unwrap_or_default();
        // Touch libtorch so it is certainly mapped before reading the maps.
        let cpu_threads = tch::get_num_threads();
        let maps = if maps.contains("libtorch_cpu") {
            maps
        } else {
            std::fs::read_to_string("/proc/self/maps").unwrap_or_default()
        };
        let libtorch_dir = mapped_library(&maps, "libtorch_cpu")
            .and_then(|lib| lib.parent().and_then(Path::parent).map(Path::to_path_buf));
        let libtorch_version = libtorch_dir.as_deref().and_then(libtorch_version);
        let libtorch_has_cuda_lib = libtorch_dir
            .as_deref()
            .is_some_and(|d| d.join("lib/libtorch_cuda.so").exists());
        let libtorch_cuda_loaded = mapped_library(&maps, "libtorch_cuda").is_some();
        let cuda_available = tch::Cuda::is_available();
        let cuda_device_count = if cuda_available {
            tch::Cuda::device_count()
        } else {
            0
        };
        let cuda_device_names = (0..cuda_device_count)
            .map(|i| cuda_device_name(i).unwrap_or_else(|| format!("cuda:{i}")))
            .collect();
        let cudnn_available = cuda_available && tch::Cuda::cudnn_is_available();
        let cudnn_version = cudnn_available.then(tch::utils::version_cudnn);
        RuntimeInfo {
            libtorch_dir,
            libtorch_version,
            tch_expects: TCH_LIBTORCH_VERSION,
            cpu_threads,
            has_mkl: tch::utils::has_mkl(),
            has_mkldnn: tch::utils::has_mkldnn(),
            has_openmp: tch::utils::has_openmp(),
            libtorch_has_cuda_lib,
            libtorch_cuda_loaded,
            cuda_available,
            cuda_device_count,
            cuda_device_names,
            cudnn_available,
            cudnn_version,
        }
    }

    /// Whether the running libtorch is the version tch was written for.
    pub fn version_matches(&self) -> bool {
        self.libtorch_version
            .as_deref()
            .is_some_and(|v| v.split('+').next() == Some(TCH_LIBTORCH_VERSION))
    }
}

/// Path of the first mapped shared object whose file name starts with `stem`.
fn mapped_library(maps: &str, stem: &str) -> Option<PathBuf> {
    maps.lines()
        .filter_map(|line| line.split_whitespace().nth(5))
        .map(Path::new)
        .find(|p| {
            p.file_name()
                .and_then(|n| n.to_str())
                .is_some_and(|n| n.starts_with(stem) && n.contains(".so"))
        })
        .map(Path::to_path_buf)
}

/// Reads the version of a libtorch root: `build-version` (libtorch zips, and
/// written by `cargo xtask setup`) or `version.py` (the PyPI wheel).
pub fn libtorch_version(root: &Path) -> Option<String> {
    if let Ok(v) = std::fs::read_to_string(root.join("build-version")) {
        return Some(v.trim().to_string());
    }
    let py = std::fs::read_to_string(root.join("version.py")).ok()?;
    py.lines().find_map(|line| {
        let rest = line.strip_prefix("__version__")?;
        let value = rest.split_once('=')?.1.trim();
        let value = value.split('#').next()?.trim();
        let value = value.split(':').next_back()?.trim();
        Some(value.trim_matches(|c| c == '\'' || c == '"').to_string())
    })
}

/// The device name through the CUDA runtime that libtorch_cuda has loaded.
fn cuda_device_name(index: i64) -> Option<String> {
    type GetProps = unsafe extern "C" fn(*mut u8, c_int) -> c_int;
    // `cudaDeviceProp` starts with `char name[256]`; the buffer is far larger
    // than the struct of any CUDA version.
    let mut buf = vec![0u8; 16 * 1024];
    for symbol in [c"cudaGetDeviceProperties_v2", c"cudaGetDeviceProperties"] {
        // SAFETY: dlsym with RTLD_DEFAULT only looks a symbol up.
        let f = unsafe { libc::dlsym(libc::RTLD_DEFAULT, symbol.as_ptr()) };
        if f.is_null() {
            continue;
        }
        // SAFETY: the symbol has this signature in every CUDA runtime since
        // 12.0, and `buf` is larger than `cudaDeviceProp`.
        let rc = unsafe {
            let f: GetProps = std::mem::transmute::<*mut libc::c_void, GetProps>(f);
            f(buf.as_mut_ptr(), index as c_int)
        };
        if rc == 0 {
            // SAFETY: CUDA writes a NUL-terminated name into the first 256 bytes.
            let name = unsafe { CStr::from_ptr(buf.as_ptr() as *const c_char) };
            return Some(name.to_string_lossy().into_owned());
        }
    }
    None
}

/// Sets glibc's allocator up for tensor work; every LMZH binary calls it
/// first thing in `main`.
///
/// libtorch allocates each CPU tensor with `posix_memalign`. With glibc's
/// defaults, blocks above a few MiB (activations and their gradients) are
/// fresh `mmap`s that go back to the kernel on free, so every training step
/// page-faults its whole working set in again, zero-filled: a quarter of a
/// step's time on a 2-core machine. This keeps blocks up to 32 MiB (the
/// largest glibc allows) in the heap and stops it trimming the heap top,
/// so a step reuses the last step's pages. Peak memory is unchanged; the
/// resident size stays near the peak instead of falling between steps.
///
/// A `MALLOC_MMAP_THRESHOLD_`, `MALLOC_TRIM_THRESHOLD_` or `MALLOC_TOP_PAD_`
/// in the environment wins over the setting it names. Other platforms: no-op.
pub fn tune_allocator() {
    #[cfg(all(target_os = "linux", target_env = "gnu"))]
    {
        let set = |env: &str, param: c_int, value: c_int| {
            if std::env::var_os(env).is_none() {
                // SAFETY: mallopt only changes allocator parameters.
                unsafe { libc::mallopt(param, value) };
            }
        };
        set("MALLOC_MMAP_THRESHOLD_", libc::M_MMAP_THRESHOLD, 32 << 20);
        set("MALLOC_TRIM_THRESHOLD_", libc::M_TRIM_THRESHOLD, c_int::MAX);
        set("MALLOC_TOP_PAD_", libc::M_TOP_PAD, 64 << 20);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn finds_libtorch_of_this_process() {
        let info = RuntimeInfo::collect();
        let dir = info.libtorch_dir.as_ref().expect("libtorch_cpu is mapped");
        assert!(dir.join("lib").is_dir(), "{}", dir.display());
        assert!(info.cpu_threads >= 1);
        assert!(info.version_matches(), "{:?}", info.libtorch_version);
    }

    #[test]
    fn reads_wheel_version_file() {
        let dir = tempfile::tempdir().unwrap();
        std::fs::write(
            dir.path().join("version.py"),
            "from typing import Optional\n__version__: str = '2.11.0+cu130'\ngit_version = 'x'\n",
        )
        .unwrap();
        assert_eq!(
            libtorch_version(dir.path()).as_deref(),
            Some("2.11.0+cu130")
        );
        std::fs::write(dir.path().join("build-version"), "2.11.0+cpu\n").unwrap();
        assert_eq!(libtorch_version(dir.path()).as_deref(), Some("2.11.0+cpu"));
    }

    #[test]
    fn parses_proc_maps_lines() {
        let maps = "7f00-7f01 r-xp 00000000 fd:01 42 /opt/t/lib/libtorch_cpu.so\n\
                    7f02-7f03 r-xp 00000000 fd:01 43 /opt/t/lib/libc10.so\n";
        assert_eq!(
            mapped_library(maps, "libtorch_cpu"),
            Some(PathBuf::from("/opt/t/lib/libtorch_cpu.so"))
        );
        assert_eq!(mapped_library(maps, "libtorch_cuda"), None);
    }
}

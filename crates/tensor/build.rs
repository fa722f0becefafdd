//! Build script of the `tensor` crate: what every crate's
//! `build-support/libtorch_link.rs` does (rpath, `libtorch_cuda.so` kept
//! linked), plus the c10d shim (`csrc/`), compiled with `cc` against the
//! same libtorch headers and flags that torch-sys compiles its own C++ with.
//!
//! - Autocast (`csrc/amp_shim.cpp`): whenever libtorch's headers are found;
//!   sets `cfg(lmzh_amp)`. tch reaches only CUDA's autocast state; this one
//!   sets any device type's (CPU included).
//! - Gloo (`csrc/c10d_shim.cpp`): always, when libtorch is found; sets
//!   `cfg(lmzh_c10d)`. Without it, `tensor::distributed` reports at run time
//!   that the build has no c10d.
//! - NCCL (`csrc/c10d_nccl.cpp`): only when libtorch has `libtorch_cuda.so`
//!   and the CUDA toolkit headers (`CUDA_HOME`, `CUDA_PATH` or
//!   `/usr/local/cuda`) and `nccl.h` (`NCCL_INCLUDE_DIR`, the wheel's
//!   `nvidia/nccl/include`, or the toolkit's) are found, and `LMZH_NO_NCCL`
//!   is unset. If that file fails to compile, the build goes on Gloo-only
//!   with a warning.

include!("../../build-support/libtorch_common.rs");

fn main() {
    println!("cargo::rustc-check-cfg=cfg(lmzh_c10d)");
    println!("cargo::rustc-check-cfg=cfg(lmzh_amp)");
    for f in [
        "csrc/amp_shim.cpp",
        "csrc/c10d_shim.h",
        "csrc/c10d_shim.cpp",
        "csrc/c10d_nccl.cpp",
        "csrc/gloo_stub",
    ] {
        println!("cargo:rerun-if-changed={f}");
    }
    for v in [
        "LIBTORCH_INCLUDE",
        "LIBTORCH_CXX11_ABI",
        "CUDA_HOME",
        "CUDA_PATH",
        "NCCL_INCLUDE_DIR",
        "LMZH_NO_NCCL",
    ] {
        println!("cargo:rerun-if-env-changed={v}");
    }
    let Some(lib) = link_libtorch() else {
        return;
    };
    if env::var("CARGO_CFG_TARGET_OS").as_deref() != Ok("linux") {
        // The shim is only built and tested on Linux.
        return;
    }
    let root = match env::var("LIBTORCH_INCLUDE") {
        Ok(dir) => PathBuf::from(dir),
        Err(_) => lib.parent().map(Path::to_path_buf).unwrap_or_default(),
    };
    let includes = [
        root.join("include"),
        root.join("include/torch/csrc/api/include"),
    ];
    let abi = env::var("LIBTORCH_CXX11_ABI").unwrap_or_else(|_| "1".to_string());
    let base = || {
        let mut b = cc::Build::new();
        b.cpp(true)
            .pic(true)
            .warnings(false)
            .includes(&includes)
            .flag("-std=c++17")
            .flag(format!("-D_GLIBCXX_USE_CXX11_ABI={abi}"))
            .flag("-DGLOG_USE_GLOG_EXPORT");
        b
    };
    if includes[0].join("ATen/autocast_mode.h").is_file() {
        base().file("csrc/amp_shim.cpp").compile("lmzh_amp");
        println!("cargo:rustc-cfg=lmzh_amp");
    }
    if !includes[0]
        .join("torch/csrc/distributed/c10d/TCPStore.hpp")
        .is_file()
    {
        println!(
            "cargo:warning=libtorch at {} has no c10d headers; tensor::distributed is disabled",
            root.display()
        );
        return;
    }
    let mut have_nccl = false;
    if let Some(dirs) = nccl_includes(&lib) {
        let mut b = base();
        b.includes(&dirs)
            .define("USE_C10D_NCCL", None)
            .file("csrc/c10d_nccl.cpp")
            .cargo_metadata(false);
        match b.try_compile("lmzh_c10d_nccl") {
            Ok(()) => have_nccl = true,
            Err(e) => println!(
                "cargo:warning=the NCCL part of the c10d shim did not compile ({e}); \
                 building with Gloo only"
            ),
        }
    }

    let mut b = base();
    b.include("csrc/gloo_stub")
        .define("USE_C10D_GLOO", None)
        .file("csrc/c10d_shim.cpp");
    if have_nccl {
        b.define("LMZH_HAVE_NCCL", None);
    }
    b.compile("lmzh_c10d");
    if have_nccl {
        // After the shim, which refers to it.
        let out = env::var("OUT_DIR").expect("OUT_DIR");
        println!("cargo:rustc-link-search=native={out}");
        println!("cargo:rustc-link-lib=static=lmzh_c10d_nccl");
    }
    println!("cargo:rustc-cfg=lmzh_c10d");
}

/// Include folders for the NCCL half of the shim, when everything it needs
/// is there.
fn nccl_includes(lib: &Path) -> Option<Vec<PathBuf>> {
    if env::var_os("LMZH_NO_NCCL").is_some() || !lib.join("libtorch_cuda.so").is_file() {
        return None;
    }
    // A full toolkit: the wheel's nvidia/cu*/include lacks crt/ and libcu++.
    let cuda = ["CUDA_HOME", "CUDA_PATH"]
        .iter()
        .filter_map(|v| env::var_os(v).map(PathBuf::from))
        .chain([PathBuf::from("/usr/local/cuda")])
        .map(|p| p.join("include"))
        .find(|inc| {
            inc.join("cuda_runtime.h").is_file() && inc.join("crt/host_config.h").is_file()
        })?;
    // torch/lib -> torch -> site-packages/nvidia/nccl/include for the wheel.
    let wheel_nccl = lib
        .parent()
        .and_then(Path::parent)
        .map(|site| site.join("nvidia/nccl/include"));
    let nccl = env::var_os("NCCL_INCLUDE_DIR")
        .map(PathBuf::from)
        .into_iter()
        .chain(wheel_nccl)
        .chain([cuda.clone(), PathBuf::from("/usr/include")])
        .find(|inc| inc.join("nccl.h").is_file())?;
    Some(vec![nccl, cuda])
}

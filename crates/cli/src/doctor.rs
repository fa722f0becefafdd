//! `lmzh doctor`: what libtorch this binary really runs on.

use std::process::ExitCode;

use tensor::runtime::RuntimeInfo;

/// Flags of `lmzh doctor`.
#[derive(Debug, clap::Args)]
pub struct Args {
    /// Print the report as one JSON object (read by `cargo xtask doctor`).
    #[arg(long)]
    pub json: bool,
}

/// Problems that make the installation unusable, each with a one-line fix.
pub fn problems(info: &RuntimeInfo) -> Vec<String> {
    let mut out = Vec::new();
    if !info.version_matches() {
        out.push(format!(
            "libtorch {} does not match the {} that tch expects; fix: run `cargo xtask setup`",
            info.libtorch_version
                .as_deref()
                .unwrap_or("of unknown version"),
            info.tch_expects
        ));
    }
    if info.libtorch_has_cuda_lib && !info.libtorch_cuda_loaded {
        out.push(
            "libtorch_cuda.so exists but was dropped by the linker (--as-needed), so CUDA reads \
             unavailable; fix: `cargo clean -p tensor && cargo build` with the workspace's build \
             scripts"
                .to_string(),
        );
    }
    out
}

pub fn run(args: &Args) -> anyhow::Result<ExitCode> {
    let info = RuntimeInfo::collect();
    let problems = problems(&info);
    if args.json {
        let mut value = serde_json::to_value(&info)?;
        value["problems"] = serde_json::to_value(&problems)?;
        println!("{}", serde_json::to_string_pretty(&value)?);
    } else {
        print_report(&info);
        for p in &problems {
            println!("PROBLEM: {p}");
        }
        if problems.is_empty() {
            println!("ok");
        }
    }
    Ok(if problems.is_empty() {
        ExitCode::SUCCESS
    } else {
        ExitCode::FAILURE
    })
}

fn yes(b: bool) -> &'static str {
    if b {
        "yes"
    } else {
        "no"
    }
}

fn print_report(info: &RuntimeInfo) {
    let dir = info.libtorch_dir.as_ref().map(|p| p.display().to_string());
    println!(
        "libtorch path      {}",
        dir.as_deref().unwrap_or("(not found)")
    );
    println!(
        "libtorch version   {} (tch expects {})",
        info.libtorch_version.as_deref().unwrap_or("unknown"),
        info.tch_expects
    );
    println!(
        "CPU threads        {} (MKL {}, oneDNN {}, OpenMP {})",
        info.cpu_threads,
        yes(info.has_mkl),
        yes(info.has_mkldnn),
        yes(info.has_openmp)
    );
    println!(
        "libtorch_cuda      {} in libtorch, {} into this process",
        if info.libtorch_has_cuda_lib {
            "present"
        } else {
            "absent (CPU-only build)"
        },
        if info.libtorch_cuda_loaded {
            "loaded"
        } else {
            "not loaded"
        }
    );
    if info.cuda_available {
        println!(
            "CUDA               available, {} device(s)",
            info.cuda_device_count
        );
        for (i, name) in info.cuda_device_names.iter().enumerate() {
            println!("  cuda:{i}           {name}");
        }
        match info.cudnn_version {
            Some(v) => println!("cuDNN              available, version {v}"),
            None => println!("cuDNN              not available"),
        }
    } else {
        println!("CUDA               not available: CPU only");
    }
}

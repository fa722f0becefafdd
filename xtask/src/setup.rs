//! `cargo xtask setup`: the pinned libtorch, once per machine.
//!
//! libtorch comes from the PyPI wheel `torch==2.11.0` (it carries the
//! headers and shared libraries tch needs), installed with
//! `pip install --target` into a versioned cache folder outside the checkout:
//! `$LMZH_CACHE_DIR/libtorch/torch-2.11.0`, where `LMZH_CACHE_DIR` defaults to
//! `$XDG_CACHE_HOME/lmzh` or `~/.cache/lmzh`. The workspace links to it through
//! the git-ignored `.libtorch`, which `.cargo/config.toml` hands to torch-sys
//! as `LIBTORCH`. A fresh clone on the same machine reuses the cache.
//!
//! Safety against interruption: pip installs into `torch-2.11.0.partial`,
//! which is verified, marked complete and only then renamed to its final name;
//! a leftover partial folder is deleted and the install starts over. A lock
//! file keeps two setups on one machine from racing.
//!
//! A user who has libtorch 2.11 already sets `LIBTORCH` to it: setup checks
//! its version and links `.libtorch` there instead of downloading.

use std::env;
use std::fs::{self, File};
use std::path::{Path, PathBuf};
use std::process::Command;

use anyhow::{bail, Context, Result};

/// The libtorch version that `tch = "=0.24.0"` binds.
pub const TORCH_VERSION: &str = "2.11.0";
/// The tch / torch-sys version pinned in the workspace manifest.
pub const TCH_VERSION: &str = "0.24.0";
/// Written into a finished install; its presence is what "installed" means.
const MARKER: &str = ".lmzh-complete";

/// The per-machine cache folder.
pub fn cache_dir() -> PathBuf {
    if let Some(dir) = env::var_os("LMZH_CACHE_DIR").filter(|d| !d.is_empty()) {
        return PathBuf::from(dir);
    }
    let base = env::var_os("XDG_CACHE_HOME")
        .filter(|d| !d.is_empty())
        .map(PathBuf::from)
        .or_else(|| env::var_os("HOME").map(|h| PathBuf::from(h).join(".cache")))
        .unwrap_or_else(|| env::temp_dir().join("cache"));
    base.join("lmzh")
}

/// The workspace's link to the libtorch in use.
pub fn link_path() -> PathBuf {
    crate::workspace_root().join(".libtorch")
}

/// The version of a libtorch root: `build-version` or the wheel's `version.py`.
pub fn libtorch_version(root: &Path) -> Option<String> {
    if let Ok(v) = fs::read_to_string(root.join("build-version")) {
        return Some(v.trim().to_string());
    }
    let py = fs::read_to_string(root.join("version.py")).ok()?;
    py.lines().find_map(|line| {
        let value = line.strip_prefix("__version__")?.split_once('=')?.1;
        Some(
            value
                .trim()
                .trim_matches(|c| c == '\'' || c == '"')
                .to_string(),
        )
    })
}

/// Checks that `root` is a usable libtorch of the pinned version.
pub fn verify(root: &Path) -> Result<String> {
    let lib = root.join("lib");
    if !lib.join("libtorch_cpu.so").exists() && !lib.join("libtorch_cpu.dylib").exists() {
        bail!(
            "{}: no lib/libtorch_cpu shared library; not a libtorch folder",
            root.display()
        );
    }
    if !root
        .join("include/torch/csrc/api/include/torch/torch.h")
        .exists()
    {
        bail!(
            "{}: no include/torch/csrc/api/include/torch/torch.h; not a libtorch folder",
            root.display()
        );
    }
    let version = libtorch_version(root).with_context(|| {
        format!(
            "{}: neither build-version nor version.py tells the libtorch version",
            root.display()
        )
    })?;
    if version.split('+').next() != Some(TORCH_VERSION) {
        bail!(
            "{}: libtorch {version}, but tch {TCH_VERSION} needs {TORCH_VERSION}; \
             unset LIBTORCH to let setup install {TORCH_VERSION}",
            root.display()
        );
    }
    Ok(version)
}

/// A `LIBTORCH` the user set themselves (not the workspace default that
/// `.cargo/config.toml` injects).
fn user_libtorch() -> Option<PathBuf> {
    let value = PathBuf::from(env::var_os("LIBTORCH").filter(|v| !v.is_empty())?);
    let link = link_path();
    let same = value == link || value.canonicalize().ok() == link.canonicalize().ok();
    (!same).then_some(value)
}

/// Ensures the pinned libtorch is installed and linked; returns its root.
pub fn run(force: bool) -> Result<PathBuf> {
    let root = if let Some(user) = user_libtorch() {
        let version = verify(&user).context("LIBTORCH is set but unusable")?;
        println!("setup: using LIBTORCH={} ({version})", user.display());
        user
    } else {
        install_cached(force)?
    };
    link(&root)?;
    Ok(root)
}

fn install_cached(force: bool) -> Result<PathBuf> {
    let store = cache_dir().join("libtorch");
    install_into(&store, force, |target| {
        pip_install_target(target, &[&format!("torch=={TORCH_VERSION}")])
    })
}

/// Installs the pinned libtorch under `store` with `installer` (which fills
/// the folder it is given), unless a finished install is there already.
/// Returns the libtorch root (`<store>/torch-X/torch`).
fn install_into(
    store: &Path,
    force: bool,
    installer: impl FnOnce(&Path) -> Result<()>,
) -> Result<PathBuf> {
    let final_dir = store.join(format!("torch-{TORCH_VERSION}"));
    let what = format!("torch=={TORCH_VERSION} (about 4.6 GB, once per machine)");
    install_atomically(&final_dir, force, &what, |partial| {
        installer(partial)?;
        let version = verify(&partial.join("torch"))?;
        // torch-sys checks `build-version` when it exists: give it one.
        fs::write(partial.join("torch/build-version"), format!("{version}\n"))?;
        println!("setup: libtorch {version} installed");
        Ok(())
    })?;
    Ok(final_dir.join("torch"))
}

/// Fills `final_dir` exactly once per machine: `fill` works in
/// `<final_dir>.partial` (removed first if an earlier run left it), which is
/// marked complete and renamed into place only when `fill` succeeds. A lock
/// file beside it serialises concurrent runs. A no-op when `final_dir` is
/// complete, unless `force`.
pub fn install_atomically(
    final_dir: &Path,
    force: bool,
    what: &str,
    fill: impl FnOnce(&Path) -> Result<()>,
) -> Result<()> {
    if !force && final_dir.join(MARKER).exists() {
        return Ok(());
    }
    let store = final_dir.parent().context("install folder has no parent")?;
    let name = final_dir
        .file_name()
        .context("install folder has no name")?
        .to_string_lossy();
    fs::create_dir_all(store).with_context(|| format!("creating {}", store.display()))?;
    let lock_path = store.join(format!(".{name}.lock"));
    let lock =
        File::create(&lock_path).with_context(|| format!("creating {}", lock_path.display()))?;
    lock.lock()
        .with_context(|| format!("locking {}", lock_path.display()))?;
    // Another run may have finished while we waited for the lock.
    if !force && final_dir.join(MARKER).exists() {
        return Ok(());
    }
    let partial = store.join(format!("{name}.partial"));
    if partial.exists() {
        println!(
            "setup: removing an unfinished install at {}",
            partial.display()
        );
        fs::remove_dir_all(&partial).with_context(|| format!("removing {}", partial.display()))?;
    }
    println!("setup: installing {what} into {}", final_dir.display());
    fill(&partial)?;
    fs::write(partial.join(MARKER), "complete\n")?;
    if final_dir.exists() {
        fs::remove_dir_all(final_dir)
            .with_context(|| format!("removing {}", final_dir.display()))?;
    }
    fs::rename(&partial, final_dir)
        .with_context(|| format!("renaming {} to {}", partial.display(), final_dir.display()))?;
    Ok(())
}

/// `python -m pip install --target DIR ARGS...`, with the interpreter from
/// `LMZH_PYTHON` (default `python3`). pip reads its usual `PIP_*` variables,
/// so a mirror or proxy works as for any pip install.
pub fn pip_install_target(target: &Path, args: &[&str]) -> Result<()> {
    let python = python();
    let status = Command::new(&python)
        .args([
            "-m",
            "pip",
            "install",
            "--no-warn-script-location",
            "--disable-pip-version-check",
        ])
        .arg("--target")
        .arg(target)
        .args(args)
        .status()
        .with_context(|| {
            format!("running `{python} -m pip`; install Python 3 with pip, or set LMZH_PYTHON")
        })?;
    if !status.success() {
        bail!(
            "`{python} -m pip install {}` failed ({status}); nothing was installed",
            args.join(" ")
        );
    }
    Ok(())
}

/// The Python interpreter used for pip and the reference scripts.
pub fn python() -> String {
    env::var("LMZH_PYTHON").unwrap_or_else(|_| "python3".to_string())
}

/// Points `.libtorch` at `root`, atomically (a new link renamed over the old).
fn link(root: &Path) -> Result<()> {
    let link = link_path();
    let root = root
        .canonicalize()
        .with_context(|| format!("resolving {}", root.display()))?;
    if fs::read_link(&link).ok().as_deref() == Some(root.as_path()) {
        return Ok(());
    }
    let tmp = link.with_file_name(format!(".libtorch.tmp-{}", std::process::id()));
    let _ = fs::remove_file(&tmp);
    #[cfg(unix)]
    std::os::unix::fs::symlink(&root, &tmp)
        .with_context(|| format!("linking {} -> {}", tmp.display(), root.display()))?;
    #[cfg(not(unix))]
    bail!("linking libtorch needs a Unix system; set LIBTORCH yourself");
    fs::rename(&tmp, &link).with_context(|| format!("replacing {}", link.display()))?;
    println!("setup: {} -> {}", link.display(), root.display());
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A fake installer that lays out a libtorch of `version`.
    fn fake(version: &'static str) -> impl FnOnce(&Path) -> Result<()> {
        move |dir: &Path| {
            let torch = dir.join("torch");
            fs::create_dir_all(torch.join("lib"))?;
            fs::create_dir_all(torch.join("include/torch/csrc/api/include/torch"))?;
            fs::write(torch.join("lib/libtorch_cpu.so"), b"")?;
            fs::write(
                torch.join("include/torch/csrc/api/include/torch/torch.h"),
                b"",
            )?;
            fs::write(
                torch.join("version.py"),
                format!("__version__ = '{version}'\n"),
            )?;
            Ok(())
        }
    }

    fn never(_: &Path) -> Result<()> {
        panic!("the installer must not run when the cache is complete")
    }

    #[test]
    fn installs_once_then_is_a_no_op() {
        let store = tempfile::tempdir().unwrap();
        let root = install_into(store.path(), false, fake("2.11.0+cu130")).unwrap();
        assert_eq!(root, store.path().join("torch-2.11.0/torch"));
        assert_eq!(
            fs::read_to_string(root.join("build-version")).unwrap(),
            "2.11.0+cu130\n"
        );
        assert!(!store.path().join("torch-2.11.0.partial").exists());
        assert_eq!(install_into(store.path(), false, never).unwrap(), root);
    }

    #[test]
    fn interrupted_install_is_never_used_and_is_redone() {
        let store = tempfile::tempdir().unwrap();
        let err = install_into(store.path(), false, |dir: &Path| {
            fs::create_dir_all(dir.join("torch/lib"))?;
            bail!("connection reset")
        })
        .unwrap_err();
        assert!(err.to_string().contains("connection reset"));
        assert!(!store.path().join("torch-2.11.0").exists());
        // a final folder without the marker (say, copied by hand) is not trusted either
        fs::create_dir_all(store.path().join("torch-2.11.0/torch")).unwrap();
        let root = install_into(store.path(), false, fake("2.11.0")).unwrap();
        assert!(root.join("lib/libtorch_cpu.so").exists());
        assert!(!store.path().join("torch-2.11.0.partial").exists());
    }

    #[test]
    fn wrong_version_is_rejected_and_not_installed() {
        let store = tempfile::tempdir().unwrap();
        let err = install_into(store.path(), false, fake("2.10.0+cpu")).unwrap_err();
        assert!(
            format!("{err:#}").contains("libtorch 2.10.0+cpu, but tch 0.24.0 needs 2.11.0"),
            "{err:#}"
        );
        assert!(!store.path().join("torch-2.11.0").exists());
    }

    #[test]
    fn reads_version_from_wheel_and_zip_layouts() {
        let dir = tempfile::tempdir().unwrap();
        fs::write(
            dir.path().join("version.py"),
            "__version__ = '2.11.0+cu130'\n",
        )
        .unwrap();
        assert_eq!(
            libtorch_version(dir.path()).as_deref(),
            Some("2.11.0+cu130")
        );
        fs::write(dir.path().join("build-version"), "2.11.0+cpu\n").unwrap();
        assert_eq!(libtorch_version(dir.path()).as_deref(), Some("2.11.0+cpu"));
    }
}

//! Atomic file writes: every checkpoint, tensor file and image the toolkit
//! writes goes to a temporary file in the destination folder first and is
//! renamed over the destination only once complete, so a crash or a kill
//! mid-write never leaves a truncated file behind.
//!
//! A process killed mid-write (`kill -9`, a power cut) does leave its
//! temporary file, `.NAME.tmp-PID-N`; [`remove_stale_temps`] removes those
//! whose writer is gone.

use std::fs::{self, File};
use std::io::{self, BufWriter, Write};
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicU64, Ordering};

use crate::{Error, Result};

/// Writes `path` atomically: `write` fills a buffered temporary file in the
/// same folder, which is flushed, synced and renamed onto `path`. On error the
/// temporary file is removed and `path` is left as it was.
pub fn write_atomic<F>(path: &Path, write: F) -> Result<()>
where
    F: FnOnce(&mut BufWriter<File>) -> io::Result<()>,
{
    let tmp = temp_path(path);
    let result = (|| {
        let mut w = BufWriter::new(File::create(&tmp)?);
        write(&mut w)?;
        let file = w.into_inner().map_err(io::IntoInnerError::into_error)?;
        file.sync_all()?;
        fs::rename(&tmp, path)?;
        if let Some(dir) = path.parent().filter(|d| !d.as_os_str().is_empty()) {
            // Persist the rename itself; not every filesystem allows this.
            let _ = File::open(dir).and_then(|d| d.sync_all());
        }
        Ok(())
    })();
    result.map_err(|e| {
        let _ = fs::remove_file(&tmp);
        Error::io(path, e)
    })
}

/// Writes bytes to `path` atomically.
pub fn write_bytes_atomic(path: &Path, bytes: &[u8]) -> Result<()> {
    write_atomic(path, |w| w.write_all(bytes))
}

/// A temporary path next to `path`, unique within this machine:
/// `.NAME.tmp-PID-N`, with the writer's process id.
pub fn temp_path(path: &Path) -> PathBuf {
    static COUNTER: AtomicU64 = AtomicU64::new(0);
    let n = COUNTER.fetch_add(1, Ordering::Relaxed);
    let name = path
        .file_name()
        .map(|n| n.to_string_lossy().into_owned())
        .unwrap_or_default();
    path.with_file_name(format!(".{name}.tmp-{}-{n}", std::process::id()))
}

/// Removes the temporary files of [`write_atomic`] in `dir` (not its
/// subfolders) whose writing process no longer runs, and returns them. The
/// files of a live process (this one included) are kept, and so is every
/// file where that cannot be told (other systems than Linux and Unix). A
/// folder that cannot be read has nothing removed.
pub fn remove_stale_temps(dir: &Path) -> Vec<PathBuf> {
    let Ok(entries) = fs::read_dir(dir) else {
        return Vec::new();
    };
    let mut removed = Vec::new();
    for path in entries.filter_map(|e| e.ok().map(|e| e.path())) {
        let Some(pid) = path
            .file_name()
            .and_then(|n| n.to_str())
            .and_then(temp_writer)
        else {
            continue;
        };
        if process_is_gone(pid) && path.is_file() {
            match fs::remove_file(&path) {
                Ok(()) => removed.push(path),
                Err(e) => tracing::warn!(
                    "could not remove a leftover temporary file: {}",
                    crate::io_error::describe(&path, &e)
                ),
            }
        }
    }
    removed.sort();
    removed
}

/// The writer's process id of a [`temp_path`] file name
/// (`.NAME.tmp-PID-N`), or `None` for any other name.
fn temp_writer(name: &str) -> Option<u32> {
    let rest = name.strip_prefix('.')?;
    let (_, tail) = rest.rsplit_once(".tmp-")?;
    let (pid, n) = tail.split_once('-')?;
    let digits = |s: &str| !s.is_empty() && s.bytes().all(|b| b.is_ascii_digit());
    if !digits(pid) || !digits(n) {
        return None;
    }
    pid.parse().ok()
}

/// True only when process `pid` certainly does not run on this machine.
fn process_is_gone(pid: u32) -> bool {
    if pid == std::process::id() {
        return false;
    }
    #[cfg(target_os = "linux")]
    {
        if Path::new("/proc/self").exists() {
            return !Path::new("/proc").join(pid.to_string()).exists();
        }
    }
    #[cfg(unix)]
    {
        let Ok(pid) = libc::pid_t::try_from(pid) else {
            return false;
        };
        if pid <= 0 {
            return false;
        }
        // Signal 0 checks that the process exists without signalling it;
        // EPERM means it exists but belongs to someone else.
        // SAFETY: kill with signal 0 has no effect besides the check.
        let alive = unsafe { libc::kill(pid, 0) } == 0
            || io::Error::last_os_error().raw_os_error() != Some(libc::ESRCH);
        !alive
    }
    #[cfg(not(unix))]
    {
        let _ = pid;
        false
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn replaces_whole_file_and_leaves_no_temp() {
        let dir = tempfile::tempdir().unwrap();
        let p = dir.path().join("a.bin");
        write_bytes_atomic(&p, b"first").unwrap();
        write_bytes_atomic(&p, b"second").unwrap();
        assert_eq!(fs::read(&p).unwrap(), b"second");
        assert_eq!(fs::read_dir(dir.path()).unwrap().count(), 1);
    }

    #[test]
    fn failed_write_keeps_previous_content() {
        let dir = tempfile::tempdir().unwrap();
        let p = dir.path().join("a.bin");
        write_bytes_atomic(&p, b"good").unwrap();
        let err = write_atomic(&p, |w| {
            w.write_all(b"partial")?;
            Err(io::Error::other("disk on fire"))
        })
        .unwrap_err();
        assert!(err.to_string().contains("a.bin") && err.to_string().contains("disk on fire"));
        assert_eq!(fs::read(&p).unwrap(), b"good");
        assert_eq!(fs::read_dir(dir.path()).unwrap().count(), 1);
    }

    #[test]
    fn missing_folder_is_an_error_naming_the_path() {
        let err = write_bytes_atomic(Path::new("/nonexistent-dir/x.bin"), b"x").unwrap_err();
        assert!(err.to_string().contains("/nonexistent-dir/x.bin"), "{err}");
    }

    #[test]
    fn temp_names_are_recognised() {
        let p = temp_path(Path::new("/x/step-000012.safetensors"));
        let name = p.file_name().unwrap().to_str().unwrap();
        assert_eq!(temp_writer(name), Some(std::process::id()));
        assert_eq!(temp_writer(".a.png.tmp-42-7"), Some(42));
        for other in [
            "a.png",
            ".a.png",
            "a.png.tmp-42-7",
            ".a.tmp-x-1",
            ".a.tmp-42-",
            ".a.tmp-42",
        ] {
            assert_eq!(temp_writer(other), None, "{other}");
        }
    }

    #[test]
    fn stale_temps_of_dead_writers_are_removed_and_live_ones_kept() {
        let dir = tempfile::tempdir().unwrap();
        // A process id that certainly belonged to a process that has ended.
        let mut child = std::process::Command::new("true").spawn().unwrap();
        let dead = child.id();
        child.wait().unwrap();
        let live = std::process::id();
        let stale = dir
            .path()
            .join(format!(".step-000010.safetensors.tmp-{dead}-0"));
        let busy = dir
            .path()
            .join(format!(".step-000020.safetensors.tmp-{live}-3"));
        let keep = dir.path().join("step-000005.safetensors");
        for p in [&stale, &busy, &keep] {
            fs::write(p, b"x").unwrap();
        }
        assert_eq!(remove_stale_temps(dir.path()), std::slice::from_ref(&stale));
        assert!(!stale.exists());
        assert!(busy.exists(), "a live writer's file is never touched");
        assert!(keep.exists());
        assert!(remove_stale_temps(&dir.path().join("missing")).is_empty());
    }
}

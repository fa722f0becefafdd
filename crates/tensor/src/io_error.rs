//! I/O errors in words a person expects: `no such file: runs/x/model.bin`,
//! `permission denied: out/grid.png`, rather than the operating system's
//! `No such file or directory (os error 2)` or Rust's `entity not found`.
//!
//! Every crate's `Error::Io` variant displays through [`describe`], so the
//! wording is the same whichever crate fails.

use std::io::{self, ErrorKind};
use std::path::Path;

/// What `error` means for `path`, as one line naming the path: a known
/// kind as `WHAT: PATH` (`no such file: PATH`), an error with a message of
/// its own as `PATH: MESSAGE`, anything else as `PATH: the OS's text`.
pub fn describe(path: &Path, error: &io::Error) -> String {
    let p = path.display();
    if let Some(inner) = error.get_ref() {
        // Made with its own message (`io::Error::new(kind, "...")`).
        return format!("{p}: {inner}");
    }
    let what = match error.kind() {
        // A name with an extension is most likely meant as a file.
        ErrorKind::NotFound if path.extension().is_some() => "no such file",
        ErrorKind::NotFound => "no such file or folder",
        ErrorKind::PermissionDenied => "permission denied",
        ErrorKind::AlreadyExists => "already exists",
        ErrorKind::IsADirectory => "a folder, not a file",
        ErrorKind::NotADirectory => "not a folder (a part of the path is a file)",
        ErrorKind::DirectoryNotEmpty => "folder not empty",
        ErrorKind::StorageFull => "no space left on the device",
        ErrorKind::ReadOnlyFilesystem => "read-only file system",
        ErrorKind::FileTooLarge => "file too large",
        ErrorKind::InvalidFilename => "invalid file name",
        ErrorKind::UnexpectedEof => "the file ends early (truncated?)",
        _ => return format!("{p}: {}", os_text(error)),
    };
    format!("{what}: {p}")
}

/// The error's own text without the ` (os error N)` suffix, lower-cased
/// at the start: `connection refused`.
fn os_text(error: &io::Error) -> String {
    let text = error.to_string();
    let text = match text.rfind(" (os error ") {
        Some(i) if text.ends_with(')') => text[..i].to_string(),
        _ => text,
    };
    let mut chars = text.chars();
    match chars.next() {
        Some(c) => c.to_lowercase().chain(chars).collect(),
        None => text,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn os(path: &Path) -> io::Error {
        std::fs::read(path).unwrap_err()
    }

    #[test]
    fn common_kinds_read_as_words_with_the_path() {
        let dir = tempfile::tempdir().unwrap();
        let missing = dir.path().join("missing.safetensors");
        let text = describe(&missing, &os(&missing));
        assert_eq!(text, format!("no such file: {}", missing.display()));
        // made from a bare kind: the same words, not "entity not found"
        let text = describe(Path::new("a.bin"), &ErrorKind::NotFound.into());
        assert_eq!(text, "no such file: a.bin");
        let text = describe(Path::new("runs/old"), &ErrorKind::NotFound.into());
        assert_eq!(text, "no such file or folder: runs/old");
        let text = describe(Path::new("a.bin"), &ErrorKind::PermissionDenied.into());
        assert_eq!(text, "permission denied: a.bin");
        let text = describe(dir.path(), &os(dir.path()));
        assert_eq!(
            text,
            format!("a folder, not a file: {}", dir.path().display())
        );
    }

    #[test]
    fn own_messages_are_kept_and_os_codes_dropped() {
        let e = io::Error::new(ErrorKind::InvalidData, "bad magic number");
        assert_eq!(describe(Path::new("x.idx"), &e), "x.idx: bad magic number");
        let e = io::Error::from_raw_os_error(libc::ECONNREFUSED);
        let text = describe(Path::new("x"), &e);
        assert!(!text.contains("os error"), "{text}");
        assert!(
            text.starts_with("x: ") && text.contains("refused"),
            "{text}"
        );
    }
}

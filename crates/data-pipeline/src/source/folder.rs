//! Image folders: every PNG, JPEG, BMP, TIFF or WebP below a root, found
//! recursively. When the root has subfolders, their names (sorted) are the
//! class labels: `root/cat/*.png` is class `cat`.

use std::path::{Path, PathBuf};

use crate::{Error, Result};

const EXTENSIONS: [&str; 7] = ["png", "jpg", "jpeg", "bmp", "tif", "tiff", "webp"];

/// The files of a folder source, with labels when the root has subfolders.
#[derive(Debug)]
pub struct Listing {
    pub files: Vec<PathBuf>,
    pub labels: Option<Vec<i64>>,
    pub class_names: Vec<String>,
}

fn is_image(path: &Path) -> bool {
    path.extension()
        .and_then(|e| e.to_str())
        .is_some_and(|e| EXTENSIONS.contains(&e.to_ascii_lowercase().as_str()))
}

fn is_hidden(path: &Path) -> bool {
    path.file_name()
        .and_then(|n| n.to_str())
        .is_some_and(|n| n.starts_with('.'))
}

/// The entries of `dir`, sorted, without hidden ones (names starting with `.`).
pub(crate) fn entries(dir: &Path) -> Result<Vec<PathBuf>> {
    let mut out = Vec::new();
    for entry in std::fs::read_dir(dir).map_err(|e| Error::io(dir, e))? {
        let path = entry.map_err(|e| Error::io(dir, e))?.path();
        if !is_hidden(&path) {
            out.push(path);
        }
    }
    out.sort();
    Ok(out)
}

/// All image files below `dir`, sorted, recursively.
fn images_below(dir: &Path, out: &mut Vec<PathBuf>) -> Result<()> {
    for path in entries(dir)? {
        if path.is_dir() {
            images_below(&path, out)?;
        } else if is_image(&path) {
            out.push(path);
        }
    }
    Ok(())
}

/// Lists an image folder.
pub fn list(root: &Path) -> Result<Listing> {
    if !root.is_dir() {
        let error = if root.exists() {
            std::io::Error::new(std::io::ErrorKind::NotADirectory, "not a folder")
        } else {
            std::io::ErrorKind::NotFound.into()
        };
        return Err(Error::io(root, error));
    }
    let top = entries(root)?;
    let subdirs: Vec<&PathBuf> = top.iter().filter(|p| p.is_dir()).collect();
    let root_images: Vec<&PathBuf> = top.iter().filter(|p| p.is_file() && is_image(p)).collect();
    if subdirs.is_empty() {
        let files: Vec<PathBuf> = root_images.into_iter().cloned().collect();
        if files.is_empty() {
            return Err(Error::EmptyFolder {
                path: root.to_path_buf(),
            });
        }
        return Ok(Listing {
            files,
            labels: None,
            class_names: Vec::new(),
        });
    }
    if let Some(first) = root_images.first() {
        return Err(Error::MixedLayout {
            path: (*first).clone(),
        });
    }
    let mut files = Vec::new();
    let mut labels = Vec::new();
    let mut class_names = Vec::new();
    for (label, dir) in subdirs.iter().enumerate() {
        let mut found = Vec::new();
        images_below(dir, &mut found)?;
        if found.is_empty() {
            return Err(Error::EmptyLabelFolder {
                path: (*dir).clone(),
            });
        }
        labels.extend(std::iter::repeat_n(label as i64, found.len()));
        files.extend(found);
        class_names.push(
            dir.file_name()
                .map(|n| n.to_string_lossy().into_owned())
                .unwrap_or_default(),
        );
    }
    Ok(Listing {
        files,
        labels: Some(labels),
        class_names,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn touch(p: &Path) {
        std::fs::create_dir_all(p.parent().unwrap()).unwrap();
        std::fs::write(p, b"").unwrap();
    }

    #[test]
    fn labels_come_from_sorted_first_level_folders() {
        let d = tempfile::tempdir().unwrap();
        touch(&d.path().join("dog/a.png"));
        touch(&d.path().join("cat/deep/nested/b.JPG"));
        touch(&d.path().join("cat/c.webp"));
        touch(&d.path().join("cat/notes.txt"));
        touch(&d.path().join(".hidden/x.png"));
        let l = list(d.path()).unwrap();
        assert_eq!(l.class_names, ["cat", "dog"]);
        let names: Vec<String> = l
            .files
            .iter()
            .map(|p| p.strip_prefix(d.path()).unwrap().display().to_string())
            .collect();
        assert_eq!(names, ["cat/c.webp", "cat/deep/nested/b.JPG", "dog/a.png"]);
        assert_eq!(l.labels.unwrap(), [0, 0, 1]);
    }

    #[test]
    fn flat_folder_is_unlabelled() {
        let d = tempfile::tempdir().unwrap();
        touch(&d.path().join("b.png"));
        touch(&d.path().join("a.tiff"));
        let l = list(d.path()).unwrap();
        assert!(l.labels.is_none());
        assert_eq!(l.files.len(), 2);
    }

    #[test]
    fn layout_errors_name_the_folder() {
        let d = tempfile::tempdir().unwrap();
        let err = list(d.path()).unwrap_err().to_string();
        assert!(err.contains("no images found"), "{err}");

        touch(&d.path().join("cat/a.png"));
        std::fs::create_dir_all(d.path().join("empty_class")).unwrap();
        let err = list(d.path()).unwrap_err().to_string();
        assert!(
            err.contains("empty_class") && err.contains("label folder"),
            "{err}"
        );

        std::fs::remove_dir(d.path().join("empty_class")).unwrap();
        touch(&d.path().join("stray.png"));
        let err = list(d.path()).unwrap_err().to_string();
        assert!(err.contains("stray.png"), "{err}");

        let err = list(&d.path().join("nope")).unwrap_err().to_string();
        assert!(err.contains("nope"), "{err}");
    }
}

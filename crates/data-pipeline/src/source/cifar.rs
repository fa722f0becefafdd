//! CIFAR-10 binary batches (`data_batch_1.bin` ... `data_batch_5.bin`,
//! `test_batch.bin`): records of one label byte and 3x32x32 pixel bytes,
//! channel-planar (all red, then green, then blue).

use std::path::{Path, PathBuf};

use crate::{Error, Result};

const SIDE: usize = 32;
const RECORD: usize = 1 + 3 * SIDE * SIDE;

/// The class names, in label order, as `batches.meta.txt` lists them.
pub const CLASS_NAMES: [&str; 10] = [
    "airplane",
    "automobile",
    "bird",
    "cat",
    "deer",
    "dog",
    "frog",
    "horse",
    "ship",
    "truck",
];

/// Which batches to read.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Split {
    Train,
    Test,
}

/// The batch files of a split inside a `cifar-10-batches-bin` folder.
pub fn batch_files(dir: &Path, split: Split) -> Vec<PathBuf> {
    match split {
        Split::Train => (1..=5)
            .map(|i| dir.join(format!("data_batch_{i}.bin")))
            .collect(),
        Split::Test => vec![dir.join("test_batch.bin")],
    }
}

/// Reads batch files into interleaved HWC RGB pixels and labels.
pub fn read(files: &[PathBuf]) -> Result<(Vec<u8>, Vec<i64>)> {
    let mut pixels = Vec::new();
    let mut labels = Vec::new();
    for path in files {
        let bytes = std::fs::read(path).map_err(|e| Error::io(path, e))?;
        if bytes.is_empty() || bytes.len() % RECORD != 0 {
            return Err(Error::Format {
                path: path.clone(),
                format: "CIFAR-10 binary",
                reason: format!(
                    "{} bytes is not a whole number of {RECORD}-byte records",
                    bytes.len()
                ),
            });
        }
        for record in bytes.chunks_exact(RECORD) {
            let label = record[0];
            if label > 9 {
                return Err(Error::Format {
                    path: path.clone(),
                    format: "CIFAR-10 binary",
                    reason: format!("label {label} outside 0..=9"),
                });
            }
            labels.push(i64::from(label));
            let planes = &record[1..];
            for p in 0..SIDE * SIDE {
                for c in 0..3 {
                    pixels.push(planes[c * SIDE * SIDE + p]);
                }
            }
        }
    }
    Ok((pixels, labels))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn converts_planar_records_to_interleaved_pixels() {
        let dir = tempfile::tempdir().unwrap();
        let mut record = vec![7u8];
        for c in 0..3u8 {
            record.extend(std::iter::repeat_n(10 * (c + 1), SIDE * SIDE));
        }
        let file = dir.path().join("test_batch.bin");
        std::fs::write(&file, [record.clone(), record].concat()).unwrap();
        let (pixels, labels) = read(&[file]).unwrap();
        assert_eq!(labels, [7, 7]);
        assert_eq!(pixels.len(), 2 * 3 * SIDE * SIDE);
        assert_eq!(&pixels[..6], &[10, 20, 30, 10, 20, 30]);
    }

    #[test]
    fn truncated_batch_is_a_clear_error() {
        let dir = tempfile::tempdir().unwrap();
        let file = dir.path().join("data_batch_1.bin");
        std::fs::write(&file, vec![0u8; RECORD + 5]).unwrap();
        let err = read(&[file]).unwrap_err().to_string();
        assert!(
            err.contains("data_batch_1.bin") && err.contains("3073-byte records"),
            "{err}"
        );
        let err = read(&[dir.path().join("missing.bin")])
            .unwrap_err()
            .to_string();
        assert!(err.contains("missing.bin"), "{err}");
    }
}

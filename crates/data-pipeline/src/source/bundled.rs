//! The bundled default set: 5,000 MNIST digits (500 per class), 28x28 grey,
//! compiled into the binary so that training works from any folder with no
//! download. Source and licence: `assets/README.md`; rebuilt by
//! `scripts/make_default_dataset.py`.

use std::path::Path;

use super::idx::{self, IdxArray};
use crate::Result;

const IMAGES: &[u8] = include_bytes!("../../../../assets/digits/images-idx3-ubyte.gz");
const LABELS: &[u8] = include_bytes!("../../../../assets/digits/labels-idx1-ubyte.gz");

/// The bundled digits as IDX arrays (images `[5000, 28, 28]`, labels `[5000]`).
pub fn digits() -> Result<(IdxArray, IdxArray)> {
    let path = Path::new("assets/digits/images-idx3-ubyte.gz");
    let images = idx::parse(path, &idx::gunzip_if_needed(path, IMAGES.to_vec())?)?;
    let path = Path::new("assets/digits/labels-idx1-ubyte.gz");
    let labels = idx::parse(path, &idx::gunzip_if_needed(path, LABELS.to_vec())?)?;
    Ok((images, labels))
}

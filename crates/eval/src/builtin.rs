//! The feature nets bundled with the toolkit (`assets/feature-nets/`),
//! compiled in so that `lmzh eval` needs no file and no download.

use data_pipeline::source::SourceSpec;

/// Names of the bundled nets, as `--feature-net` takes them.
pub const NAMES: [&str; 2] = ["fmnist", "digits"];

/// The bundled digits net (`lmzh eval train-features --data digits`).
const DIGITS: &[u8] = include_bytes!("../../../assets/feature-nets/digits.safetensors");

/// The safetensors bytes of a bundled net.
pub fn bytes(name: &str) -> Option<&'static [u8]> {
    match name {
        "digits" => Some(DIGITS),
        _ => None,
    }
}

/// The bundled net made for a data source: `fmnist` for Fashion-MNIST,
/// `digits` for the bundled digits and MNIST.
pub fn for_source(spec: &SourceSpec) -> Option<&'static str> {
    match spec {
        SourceSpec::FashionMnist(_) => Some("fmnist"),
        SourceSpec::Digits | SourceSpec::Mnist(_) => Some("digits"),
        _ => None,
    }
}

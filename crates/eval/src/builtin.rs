//! The feature nets bundled with the toolkit (`assets/feature-nets/`),
//! compiled in so that `lmzh eval` needs no file and no download.

use data_pipeline::source::SourceSpec;

/// Names of the bundled nets, as `--feature-net` takes them.
pub const NAMES: [&str; 2] = ["fmnist", "digits"];

/// The bundled Fashion-MNIST net (`lmzh eval train-features --data fashion-mnist`).
const FMNIST: &[u8] = include_bytes!("../../../assets/feature-nets/fmnist.safetensors");

/// The bundled digits net (`lmzh eval train-features --data digits`).
const DIGITS: &[u8] = include_bytes!("../../../assets/feature-nets/digits.safetensors");

/// The safetensors bytes of a bundled net.
pub fn bytes(name: &str) -> Option<&'static [u8]> {
    match name {
        "fmnist" => Some(FMNIST),
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

#[cfg(test)]
mod tests {
    use super::*;
    use crate::feature_net::FeatureNet;
    use data_pipeline::source::Split;
    use std::path::Path;
    use tch::Device;

    #[test]
    fn every_bundled_net_loads_with_its_record() {
        for (name, label, min_accuracy) in [("fmnist", "FMNIST", 0.9), ("digits", "DIGITS", 0.97)] {
            let net =
                FeatureNet::from_bytes(bytes(name).unwrap(), Path::new(name), Device::Cpu).unwrap();
            let info = net.info();
            assert_eq!(info.name, label);
            assert!(info.test_accuracy.unwrap() >= min_accuracy, "{info:?}");
            assert!(info.command.starts_with("lmzh eval train-features") || name == "digits");
        }
        assert!(bytes("inception").is_none());
    }

    #[test]
    fn sources_map_to_their_nets() {
        assert_eq!(
            for_source(&SourceSpec::FashionMnist(Split::Test)),
            Some("fmnist")
        );
        assert_eq!(for_source(&SourceSpec::Digits), Some("digits"));
        assert_eq!(for_source(&SourceSpec::Folder("x".into())), None);
    }
}

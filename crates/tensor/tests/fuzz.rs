//! Hostile bytes into the safetensors loader (weights, checkpoints,
//! reference statistics all go through it): errors, never a panic, an abort
//! or an allocation the file does not hold. `LMZH_FUZZ_CASES` sets the
//! number of inputs (see `tests/fuzz_harness.rs`; `cargo xtask fuzz`).

#[path = "../../../tests/fuzz_harness.rs"]
mod harness;

use std::path::Path;

use tch::{Device, Kind, Tensor};
use tensor::safetensors::{load_bytes_with_metadata, save, Metadata};

#[global_allocator]
static ALLOC: harness::CappedAlloc = harness::CappedAlloc;

fn file_of(tensors: &[(&str, Tensor)], meta: Option<&Metadata>) -> Vec<u8> {
    let dir = harness::scratch_dir();
    let path = dir.path().join("seed.safetensors");
    let refs: Vec<(&str, &Tensor)> = tensors.iter().map(|(n, t)| (*n, t)).collect();
    save(&path, &refs, meta).unwrap();
    std::fs::read(&path).unwrap()
}

fn seeds() -> Vec<Vec<u8>> {
    let f = (Kind::Float, Device::Cpu);
    let meta = Metadata::from([
        ("format".to_string(), "lmzh-train-checkpoint-v1".to_string()),
        ("step".to_string(), "12".to_string()),
    ]);
    vec![
        file_of(&[("w", Tensor::arange(6, f).view([2, 3]))], None),
        file_of(
            &[
                ("a.weight", Tensor::ones([2, 1, 3, 3], f)),
                ("b", Tensor::from_slice(&[1i64, -2])),
                ("h", Tensor::ones([3], f).to_kind(Kind::Half)),
                ("bf", Tensor::ones([2], f).to_kind(Kind::BFloat16)),
                ("u", Tensor::from_slice(&[0u8, 255])),
                ("flag", Tensor::from_slice(&[true, false])),
                ("scalar", Tensor::from(1.5f64)),
                ("empty", Tensor::zeros([0, 3], f)),
            ],
            Some(&meta),
        ),
        file_of(&[], Some(&meta)),
    ]
}

#[test]
fn safetensors_loader_survives_hostile_bytes() {
    let name = Path::new("fuzz.safetensors");
    harness::fuzz("safetensors", &seeds(), |bytes| {
        match load_bytes_with_metadata(bytes, name, Device::Cpu) {
            Ok((tensors, _)) => {
                for t in tensors.values() {
                    // Touch every element: the sizes must be real.
                    let _ = t
                        .f_to_kind(Kind::Double)
                        .and_then(|d| d.f_sum(Kind::Double));
                }
                true
            }
            Err(e) => {
                assert!(e.to_string().contains("fuzz.safetensors"), "{e}");
                false
            }
        }
    });
}

/// A header that claims a tensor of 1 TB (and one whose dimensions overflow)
/// over 8 bytes of data: an error naming the file, and no allocation for it
/// (the capped allocator aborts on any allocation over 1 GiB).
#[test]
fn a_header_claiming_a_terabyte_allocates_nothing() {
    let cases = [
        r#"{"x":{"dtype":"F32","shape":[274877906944],"data_offsets":[0,1099511627776]}}"#,
        r#"{"x":{"dtype":"F32","shape":[274877906944],"data_offsets":[0,8]}}"#,
        r#"{"x":{"dtype":"U8","shape":[4294967296,4294967296,4294967296],"data_offsets":[0,8]}}"#,
        r#"{"x":{"dtype":"U8","shape":[9223372036854775809,0],"data_offsets":[0,0]}}"#,
    ];
    for header in cases {
        let mut bytes = (header.len() as u64).to_le_bytes().to_vec();
        bytes.extend_from_slice(header.as_bytes());
        bytes.extend_from_slice(&[0u8; 8]);
        let err = load_bytes_with_metadata(&bytes, Path::new("huge.safetensors"), Device::Cpu);
        let err = err.expect_err(header).to_string();
        assert!(err.contains("huge.safetensors"), "{err}");
    }
    // A header length of 2^64 - 1 over a short file.
    let mut bytes = u64::MAX.to_le_bytes().to_vec();
    bytes.extend_from_slice(b"{}");
    assert!(load_bytes_with_metadata(&bytes, Path::new("huge.safetensors"), Device::Cpu).is_err());
}

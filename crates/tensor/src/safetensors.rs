//! Named tensors in the safetensors format, exactly: names, shapes, dtypes and
//! bytes survive a round trip unchanged, and files are written atomically.
//!
//! This is the format of diffusers' `diffusion_pytorch_model.safetensors` and
//! of LMZH checkpoints. The optional string metadata of the format is exposed
//! too (checkpoints keep their step and config there).

use std::borrow::Cow;
use std::collections::{BTreeMap, HashMap};
use std::path::Path;

use safetensors::tensor::{Dtype, SafeTensors, View};
use tch::{Device, Kind, Tensor};

use crate::{fs, Error, Result};

/// Tensors by name, in name order.
pub type NamedTensors = BTreeMap<String, Tensor>;

/// String metadata stored in a safetensors header.
pub type Metadata = HashMap<String, String>;

struct HostTensor {
    dtype: Dtype,
    shape: Vec<usize>,
    data: Vec<u8>,
}

impl View for &HostTensor {
    fn dtype(&self) -> Dtype {
        self.dtype
    }
    fn shape(&self) -> &[usize] {
        &self.shape
    }
    fn data(&self) -> Cow<'_, [u8]> {
        Cow::Borrowed(&self.data)
    }
    fn data_len(&self) -> usize {
        self.data.len()
    }
}

fn to_st_dtype(kind: Kind) -> Option<Dtype> {
    Some(match kind {
        Kind::Bool => Dtype::BOOL,
        Kind::Uint8 => Dtype::U8,
        Kind::Int8 => Dtype::I8,
        Kind::Int16 => Dtype::I16,
        Kind::Int => Dtype::I32,
        Kind::Int64 => Dtype::I64,
        Kind::Half => Dtype::F16,
        Kind::BFloat16 => Dtype::BF16,
        Kind::Float => Dtype::F32,
        Kind::Double => Dtype::F64,
        Kind::Float8e4m3fn => Dtype::F8_E4M3,
        Kind::Float8e5m2 => Dtype::F8_E5M2,
        _ => return None,
    })
}

fn to_kind(dtype: Dtype) -> Option<Kind> {
    Some(match dtype {
        Dtype::BOOL => Kind::Bool,
        Dtype::U8 => Kind::Uint8,
        Dtype::I8 => Kind::Int8,
        Dtype::I16 => Kind::Int16,
        Dtype::I32 => Kind::Int,
        Dtype::I64 => Kind::Int64,
        Dtype::F16 => Kind::Half,
        Dtype::BF16 => Kind::BFloat16,
        Dtype::F32 => Kind::Float,
        Dtype::F64 => Kind::Double,
        Dtype::F8_E4M3 => Kind::Float8e4m3fn,
        Dtype::F8_E5M2 => Kind::Float8e5m2,
        _ => return None,
    })
}

fn to_host(path: &Path, name: &str, t: &Tensor) -> Result<HostTensor> {
    let kind = t.f_kind()?;
    let dtype = to_st_dtype(kind).ok_or_else(|| Error::UnsupportedTensorDType {
        path: path.to_path_buf(),
        name: name.to_string(),
        dtype: format!("{kind:?}"),
    })?;
    let t = t.f_to_device(Device::Cpu)?.f_contiguous()?;
    let numel = t.numel();
    let mut data = vec![0u8; numel * kind.elt_size_in_bytes()];
    if numel > 0 {
        t.f_copy_data_u8(&mut data, numel)?;
    }
    let shape = t.size().iter().map(|&d| d as usize).collect();
    Ok(HostTensor { dtype, shape, data })
}

/// Saves named tensors (any device) to `path`, atomically, with optional metadata.
pub fn save<S: AsRef<str>>(
    path: impl AsRef<Path>,
    tensors: &[(S, &Tensor)],
    metadata: Option<&Metadata>,
) -> Result<()> {
    let path = path.as_ref();
    let host = tensors
        .iter()
        .map(|(n, t)| Ok((n.as_ref().to_string(), to_host(path, n.as_ref(), t)?)))
        .collect::<Result<Vec<_>>>()?;
    let bytes =
        safetensors::tensor::serialize(host.iter().map(|(n, h)| (n, h)), &metadata.cloned())
            .map_err(|e| Error::SafeTensors {
                path: path.to_path_buf(),
                reason: e.to_string(),
            })?;
    fs::write_bytes_atomic(path, &bytes)
}

/// Loads every tensor of `path` onto `device`.
pub fn load(path: impl AsRef<Path>, device: Device) -> Result<NamedTensors> {
    Ok(load_with_metadata(path, device)?.0)
}

/// Loads every tensor of `path` onto `device`, with the file's metadata.
pub fn load_with_metadata(
    path: impl AsRef<Path>,
    device: Device,
) -> Result<(NamedTensors, Metadata)> {
    let path = path.as_ref();
    let bytes = std::fs::read(path).map_err(|e| Error::io(path, e))?;
    load_bytes_with_metadata(&bytes, path, device)
}

/// Loads every tensor of a safetensors file held in memory (e.g. compiled in
/// with `include_bytes!`); `path` names it in errors.
pub fn load_bytes_with_metadata(
    bytes: &[u8],
    path: &Path,
    device: Device,
) -> Result<(NamedTensors, Metadata)> {
    let bad = |e: safetensors::SafeTensorError| Error::SafeTensors {
        path: path.to_path_buf(),
        reason: e.to_string(),
    };
    let (_, header) = SafeTensors::read_metadata(bytes).map_err(bad)?;
    let metadata = header.metadata().clone().unwrap_or_default();
    let st = SafeTensors::deserialize(bytes).map_err(bad)?;
    let mut out = NamedTensors::new();
    for (name, view) in st.tensors() {
        let kind = to_kind(view.dtype()).ok_or_else(|| Error::UnsupportedTensorDType {
            path: path.to_path_buf(),
            name: name.clone(),
            dtype: format!("{:?}", view.dtype()),
        })?;
        let shape: Vec<i64> = view.shape().iter().map(|&d| d as i64).collect();
        let t = Tensor::f_from_data_size(view.data(), &shape, kind)?.f_to_device(device)?;
        out.insert(name, t);
    }
    Ok((out, metadata))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn bytes_of(t: &Tensor) -> Vec<u8> {
        let mut v = vec![0u8; t.numel() * t.kind().elt_size_in_bytes()];
        t.contiguous().copy_data_u8(&mut v, t.numel());
        v
    }

    #[test]
    fn round_trip_keeps_names_shapes_dtypes_and_bits() {
        crate::seed::seed_everything(0);
        let opts = (Kind::Float, Device::Cpu);
        let tensors = vec![
            (
                "down_blocks.0.resnets.0.conv1.weight",
                Tensor::randn([8, 3, 3, 3], opts),
            ),
            ("f64", Tensor::randn([5], (Kind::Double, Device::Cpu))),
            ("bf16", Tensor::randn([2, 3], opts).to_kind(Kind::BFloat16)),
            ("f16", Tensor::randn([3, 2], opts).to_kind(Kind::Half)),
            ("step", Tensor::from_slice(&[123_456_789_012_i64])),
            ("i32", Tensor::from_slice(&[-5_i32, 7])),
            ("u8", Tensor::from_slice(&[0_u8, 255])),
            ("bool", Tensor::from_slice(&[true, false, true])),
            ("scalar", Tensor::from(2.5_f32)),
            ("empty", Tensor::zeros([0, 4], opts)),
            // a non-contiguous view must be saved by value
            ("transposed", Tensor::randn([3, 4], opts).tr()),
        ];
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("t.safetensors");
        let refs: Vec<(&str, &Tensor)> = tensors.iter().map(|(n, t)| (*n, t)).collect();
        let meta = Metadata::from([("step".to_string(), "12".to_string())]);
        save(&path, &refs, Some(&meta)).unwrap();
        let (loaded, loaded_meta) = load_with_metadata(&path, Device::Cpu).unwrap();
        assert_eq!(loaded_meta, meta);
        assert_eq!(loaded.len(), tensors.len());
        for (name, t) in &tensors {
            let l = &loaded[*name];
            assert_eq!(l.size(), t.size(), "{name}");
            assert_eq!(l.kind(), t.kind(), "{name}");
            assert_eq!(bytes_of(l), bytes_of(t), "{name}");
        }
    }

    #[test]
    fn missing_and_corrupt_files_name_the_path() {
        let dir = tempfile::tempdir().unwrap();
        let missing = dir.path().join("missing.safetensors");
        let err = load(&missing, Device::Cpu).unwrap_err().to_string();
        assert!(err.contains("missing.safetensors"), "{err}");

        let corrupt = dir.path().join("corrupt.safetensors");
        std::fs::write(
            &corrupt,
            b"\x10\x00\x00\x00\x00\x00\x00\x00{not json at all",
        )
        .unwrap();
        let err = load(&corrupt, Device::Cpu).unwrap_err().to_string();
        assert!(
            err.contains("corrupt.safetensors") && err.contains("not a valid"),
            "{err}"
        );

        // truncated: a valid header whose data is cut short
        let good = dir.path().join("good.safetensors");
        save(
            &good,
            &[("x", &Tensor::ones([64], (Kind::Float, Device::Cpu)))],
            None,
        )
        .unwrap();
        let bytes = std::fs::read(&good).unwrap();
        let truncated = dir.path().join("truncated.safetensors");
        std::fs::write(&truncated, &bytes[..bytes.len() - 10]).unwrap();
        let err = load(&truncated, Device::Cpu).unwrap_err().to_string();
        assert!(err.contains("truncated.safetensors"), "{err}");
    }
}

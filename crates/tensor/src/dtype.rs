//! The floating-point types the toolkit computes in.

use std::fmt;
use std::str::FromStr;

use tch::Kind;

use crate::{Error, Result};

/// A floating-point dtype as users name it (`f32`, `bf16`, ...).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum DType {
    #[default]
    F32,
    F64,
    BF16,
    F16,
}

impl DType {
    /// The libtorch kind of this dtype.
    pub fn kind(self) -> Kind {
        match self {
            DType::F32 => Kind::Float,
            DType::F64 => Kind::Double,
            DType::BF16 => Kind::BFloat16,
            DType::F16 => Kind::Half,
        }
    }

    /// Bytes per element.
    pub fn size_in_bytes(self) -> usize {
        match self {
            DType::F64 => 8,
            DType::F32 => 4,
            DType::BF16 | DType::F16 => 2,
        }
    }

    /// Whether this is a reduced-precision (16-bit) type.
    pub fn is_half(self) -> bool {
        matches!(self, DType::BF16 | DType::F16)
    }
}

impl FromStr for DType {
    type Err = Error;

    fn from_str(s: &str) -> Result<Self> {
        match s.trim().to_ascii_lowercase().as_str() {
            "f32" | "fp32" | "float32" | "float" => Ok(DType::F32),
            "f64" | "fp64" | "float64" | "double" => Ok(DType::F64),
            "bf16" | "bfloat16" => Ok(DType::BF16),
            "f16" | "fp16" | "float16" | "half" => Ok(DType::F16),
            _ => Err(Error::InvalidDType {
                name: s.to_string(),
            }),
        }
    }
}

impl fmt::Display for DType {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            DType::F32 => "f32",
            DType::F64 => "f64",
            DType::BF16 => "bf16",
            DType::F16 => "f16",
        })
    }
}

impl TryFrom<Kind> for DType {
    type Error = Error;

    fn try_from(kind: Kind) -> Result<Self> {
        match kind {
            Kind::Float => Ok(DType::F32),
            Kind::Double => Ok(DType::F64),
            Kind::BFloat16 => Ok(DType::BF16),
            Kind::Half => Ok(DType::F16),
            other => Err(Error::InvalidDType {
                name: format!("{other:?}"),
            }),
        }
    }
}

impl serde::Serialize for DType {
    fn serialize<S: serde::Serializer>(&self, s: S) -> std::result::Result<S::Ok, S::Error> {
        s.collect_str(self)
    }
}

impl<'de> serde::Deserialize<'de> for DType {
    fn deserialize<D: serde::Deserializer<'de>>(d: D) -> std::result::Result<Self, D::Error> {
        let s = String::deserialize(d)?;
        s.parse().map_err(serde::de::Error::custom)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn names_round_trip_and_match_kinds() {
        for d in [DType::F32, DType::F64, DType::BF16, DType::F16] {
            assert_eq!(d.to_string().parse::<DType>().unwrap(), d);
            assert_eq!(DType::try_from(d.kind()).unwrap(), d);
            assert_eq!(d.kind().elt_size_in_bytes(), d.size_in_bytes());
        }
        let err = "int3".parse::<DType>().unwrap_err().to_string();
        assert!(err.contains("\"int3\"") && err.contains("bf16"), "{err}");
    }
}

//! Activation functions by their diffusers names (`get_activation`).

use tch::Tensor;

/// An activation of diffusers' `get_activation`: the `act_fn` of the ResNet
/// blocks. (The time-embedding MLP and the output head always use SiLU, as
/// in diffusers.)
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Activation {
    /// `silu` / `swish`: `x * sigmoid(x)`.
    Silu,
    /// `mish`: `x * tanh(softplus(x))`.
    Mish,
    /// `gelu`: exact (erf) GELU.
    Gelu,
    /// `relu`.
    Relu,
}

impl Activation {
    /// The names [`Activation::from_name`] accepts.
    pub const SUPPORTED: &'static str =
        "supported: \"silu\", \"swish\", \"mish\", \"gelu\", \"relu\"";

    /// The activation of a diffusers `act_fn` name (case-insensitive, as there).
    pub fn from_name(name: &str) -> Option<Self> {
        Some(match name.to_ascii_lowercase().as_str() {
            "silu" | "swish" => Activation::Silu,
            "mish" => Activation::Mish,
            "gelu" => Activation::Gelu,
            "relu" => Activation::Relu,
            _ => return None,
        })
    }

    /// Applies the activation.
    pub fn forward(self, xs: &Tensor) -> Tensor {
        match self {
            Activation::Silu => xs.silu(),
            Activation::Mish => xs.mish(),
            Activation::Gelu => xs.gelu("none"),
            Activation::Relu => xs.relu(),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn names_and_values() {
        let x = Tensor::from_slice(&[-1.0f64, 0.0, 2.0]);
        let silu = Activation::from_name("SWISH").unwrap().forward(&x);
        let expected = &x * x.sigmoid();
        assert!(silu.allclose(&expected, 1e-12, 1e-12, false));
        assert_eq!(Activation::from_name("tanh"), None);
        let relu = Activation::Relu.forward(&x);
        assert_eq!(Vec::<f64>::try_from(relu).unwrap(), [0.0, 0.0, 2.0]);
    }
}

//! The activations of `CLIPMLP`, by their transformers names (`ACT2FN`).

use tch::Tensor;

/// The `hidden_act` of a CLIP text config.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Activation {
    /// `quick_gelu`: `x * sigmoid(1.702 x)` (OpenAI CLIP, Stable Diffusion 1.x).
    QuickGelu,
    /// `gelu`: exact (erf) GELU (OpenCLIP, Stable Diffusion 2.x).
    Gelu,
}

impl Activation {
    /// The names [`Activation::from_name`] accepts.
    pub const SUPPORTED: &'static str = "supported: \"quick_gelu\", \"gelu\"";

    /// The activation of a transformers `hidden_act` name.
    pub fn from_name(name: &str) -> Option<Self> {
        Some(match name {
            "quick_gelu" => Activation::QuickGelu,
            "gelu" => Activation::Gelu,
            _ => return None,
        })
    }

    /// Applies the activation.
    pub fn forward(self, xs: &Tensor) -> Tensor {
        match self {
            Activation::QuickGelu => xs * (xs * 1.702).sigmoid(),
            Activation::Gelu => xs.gelu("none"),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn values_match_the_formulas() {
        let x = Tensor::from_slice(&[-2.0f64, -0.5, 0.0, 1.0, 3.0]);
        let quick = Activation::QuickGelu.forward(&x);
        let gelu = Activation::Gelu.forward(&x);
        for (i, v) in [-2.0f64, -0.5, 0.0, 1.0, 3.0].into_iter().enumerate() {
            let q = v / (1.0 + (-1.702 * v).exp());
            assert!((quick.double_value(&[i as i64]) - q).abs() < 1e-12);
            // GELU(1) = 0.8413447460685429, GELU(-0.5) = -0.15426876936299347
            let g = gelu.double_value(&[i as i64]);
            match i {
                1 => assert!((g + 0.154_268_769_362_993_47).abs() < 1e-12),
                3 => assert!((g - 0.841_344_746_068_542_9).abs() < 1e-12),
                _ => {}
            }
        }
        assert_eq!(Activation::from_name("gelu_new"), None);
    }
}

//! Timestep embeddings: diffusers' `Timesteps` (sinusoidal, DDPM's
//! positional encoding), `GaussianFourierProjection` (random Fourier
//! features of `log sigma`, score-SDE) and `TimestepEmbedding` (the MLP
//! that maps either to the width the ResNet blocks take).

use tch::{nn, Kind, Tensor};

use crate::activations::Activation;
use crate::layers;

/// Kind the featurisation is computed in: f32 as in diffusers, f64 for an
/// f64 model.
fn feature_kind(model_kind: Kind) -> Kind {
    if model_kind == Kind::Double {
        Kind::Double
    } else {
        Kind::Float
    }
}

/// diffusers' `get_timestep_embedding`: `[N] -> [N, dim]` sinusoidal features
/// with frequencies `exp(-ln(max_period) * i / (dim/2 - shift))`, `sin` then
/// `cos` (swapped with `flip_sin_to_cos`), zero-padded to an odd `dim`.
pub fn get_timestep_embedding(
    timesteps: &Tensor,
    dim: i64,
    flip_sin_to_cos: bool,
    downscale_freq_shift: f64,
    scale: f64,
    max_period: f64,
    kind: Kind,
) -> Tensor {
    let half = dim / 2;
    let exponent = Tensor::arange(half, (kind, timesteps.device())) * (-(max_period.ln()));
    let exponent = exponent / (half as f64 - downscale_freq_shift);
    let freqs = exponent.exp();
    let args = timesteps.to_kind(kind).unsqueeze(1) * freqs.unsqueeze(0);
    let args = args * scale;
    let emb = if flip_sin_to_cos {
        Tensor::cat(&[args.cos(), args.sin()], -1)
    } else {
        Tensor::cat(&[args.sin(), args.cos()], -1)
    };
    if dim % 2 == 1 {
        emb.constant_pad_nd([0, 1, 0, 0])
    } else {
        emb
    }
}

/// diffusers' `Timesteps`: a parameter-free sinusoidal featurisation.
#[derive(Debug)]
pub struct Timesteps {
    pub num_channels: i64,
    pub flip_sin_to_cos: bool,
    pub downscale_freq_shift: f64,
}

impl Timesteps {
    pub fn new(num_channels: i64, flip_sin_to_cos: bool, downscale_freq_shift: f64) -> Self {
        Timesteps {
            num_channels,
            flip_sin_to_cos,
            downscale_freq_shift,
        }
    }

    /// `[N]` timesteps (any numeric kind) to `[N, num_channels]` features.
    pub fn forward(&self, timesteps: &Tensor, model_kind: Kind) -> Tensor {
        get_timestep_embedding(
            timesteps,
            self.num_channels,
            self.flip_sin_to_cos,
            self.downscale_freq_shift,
            1.0,
            10000.0,
            feature_kind(model_kind),
        )
    }
}

/// diffusers' `GaussianFourierProjection` (`log=True`, `flip_sin_to_cos=False`):
/// `[sin(2 pi log(t) w), cos(2 pi log(t) w)]` with fixed random `w`
/// (variable `weight`, not trained).
#[derive(Debug)]
pub struct GaussianFourierProjection {
    pub weight: Tensor,
}

impl GaussianFourierProjection {
    /// `embedding_size` frequencies drawn from `N(0, scale^2)` (diffusers
    /// uses `scale = 16` in `UNet2DModel`).
    pub fn new(vs: nn::Path<'_>, embedding_size: i64, scale: f64) -> Self {
        let w = Tensor::randn([embedding_size], (vs.kind(), vs.device())) * scale;
        let weight = vs.add("weight", w, false);
        GaussianFourierProjection { weight }
    }

    /// `[N]` noise levels to `[N, 2 * embedding_size]` features.
    /// Computed in f32 (f64 for an f64 model) like diffusers, whatever the
    /// kind of the weights.
    pub fn forward(&self, timesteps: &Tensor) -> Tensor {
        let kind = feature_kind(self.weight.kind());
        let x = timesteps.to_kind(kind).log();
        let proj =
            x.unsqueeze(1) * self.weight.to_kind(kind).unsqueeze(0) * 2.0 * std::f64::consts::PI;
        Tensor::cat(&[proj.sin(), proj.cos()], -1)
    }
}

/// The featurisation of timesteps (`time_proj`).
#[derive(Debug)]
pub enum TimeProjection {
    Positional(Timesteps),
    Fourier(GaussianFourierProjection),
}

impl TimeProjection {
    /// `[N]` timesteps to `[N, features]` in `model_kind`.
    pub fn forward(&self, timesteps: &Tensor, model_kind: Kind) -> Tensor {
        match self {
            TimeProjection::Positional(t) => t.forward(timesteps, model_kind),
            TimeProjection::Fourier(f) => f.forward(timesteps),
        }
        .to_kind(model_kind)
    }
}

/// diffusers' `TimestepEmbedding`: `linear_2(act(linear_1(x)))`, SiLU by
/// default.
#[derive(Debug)]
pub struct TimestepEmbedding {
    pub linear_1: nn::Linear,
    pub linear_2: nn::Linear,
    pub act: Activation,
}

impl TimestepEmbedding {
    pub fn new(vs: nn::Path<'_>, in_channels: i64, time_embed_dim: i64) -> Self {
        Self::with_activation(vs, in_channels, time_embed_dim, Activation::Silu)
    }

    /// With the activation `act` (the `act_fn` of a `UNet2DConditionModel`).
    pub fn with_activation(
        vs: nn::Path<'_>,
        in_channels: i64,
        time_embed_dim: i64,
        act: Activation,
    ) -> Self {
        TimestepEmbedding {
            linear_1: layers::linear(&vs / "linear_1", in_channels, time_embed_dim),
            linear_2: layers::linear(&vs / "linear_2", time_embed_dim, time_embed_dim),
            act,
        }
    }

    pub fn forward(&self, xs: &Tensor) -> Tensor {
        use nn::Module;
        self.linear_2
            .forward(&self.act.forward(&self.linear_1.forward(xs)))
    }

    /// FLOPs for `n` embeddings.
    pub fn flops(&self, n: i64) -> u64 {
        layers::linear_flops(&self.linear_1, n) + layers::linear_flops(&self.linear_2, n)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn sinusoidal_matches_the_formula() {
        let t = Tensor::from_slice(&[0i64, 10, 999]);
        let emb = get_timestep_embedding(&t, 6, false, 1.0, 1.0, 10000.0, Kind::Double);
        assert_eq!(emb.size(), [3, 6]);
        // freqs: exp(-ln(1e4) * i / (3 - 1)) = 1, 1e-2, 1e-4
        let expected = [10f64.sin(), 0.1f64.sin(), 0.001f64.sin()];
        for (i, e) in expected.iter().enumerate() {
            assert!((emb.double_value(&[1, i as i64]) - e).abs() < 1e-12);
        }
        assert!((emb.double_value(&[1, 3]) - 10f64.cos()).abs() < 1e-12);
        // t = 0: sin 0 = 0, cos 0 = 1; flipped puts cos first
        let flipped = get_timestep_embedding(&t, 6, true, 0.0, 1.0, 10000.0, Kind::Float);
        assert_eq!(flipped.double_value(&[0, 0]), 1.0);
        assert_eq!(flipped.double_value(&[0, 3]), 0.0);
        let odd = get_timestep_embedding(&t, 7, true, 0.0, 1.0, 10000.0, Kind::Float);
        assert_eq!(odd.size(), [3, 7]);
        assert_eq!(odd.double_value(&[2, 6]), 0.0);
    }
}

//! The PyTorch layers the blocks are made of, initialised as PyTorch
//! initialises them, and their FLOP counts.
//!
//! PyTorch's `Conv2d` and `Linear` draw weights and biases from
//! `U(-1/sqrt(fan_in), 1/sqrt(fan_in))` (Kaiming-uniform with `a = sqrt(5)`);
//! tch's default is a wider Kaiming-uniform for ReLU. A model created here is
//! therefore initialised like a freshly constructed diffusers `UNet2DModel`.
//!
//! FLOPs count one multiply-add as 2 FLOPs and include only convolutions,
//! linear layers and the two attention matmuls; biases, norms, activations,
//! softmax, additions and resampling are not counted (the convention of
//! `torch.utils.flop_counter.FlopCounterMode`).

use tch::nn::{self, Init};

fn fan_in_uniform(fan_in: i64) -> Init {
    let bound = 1.0 / (fan_in as f64).sqrt();
    Init::Uniform {
        lo: -bound,
        up: bound,
    }
}

/// `nn.Conv2d(cin, cout, k, stride, padding)` with bias.
pub fn conv2d(
    vs: nn::Path<'_>,
    cin: i64,
    cout: i64,
    k: i64,
    stride: i64,
    padding: i64,
) -> nn::Conv2D {
    let init = fan_in_uniform(cin * k * k);
    nn::conv2d(
        vs,
        cin,
        cout,
        k,
        nn::ConvConfig {
            stride,
            padding,
            ws_init: init,
            bs_init: init,
            ..Default::default()
        },
    )
}

/// `nn.Linear(cin, cout)` with bias.
pub fn linear(vs: nn::Path<'_>, cin: i64, cout: i64) -> nn::Linear {
    let init = fan_in_uniform(cin);
    nn::linear(
        vs,
        cin,
        cout,
        nn::LinearConfig {
            ws_init: init,
            bs_init: Some(init),
            bias: true,
        },
    )
}

/// `nn.Linear(cin, cout, bias=False)`.
pub fn linear_no_bias(vs: nn::Path<'_>, cin: i64, cout: i64) -> nn::Linear {
    nn::linear(
        vs,
        cin,
        cout,
        nn::LinearConfig {
            ws_init: fan_in_uniform(cin),
            bs_init: None,
            bias: false,
        },
    )
}

/// `nn.LayerNorm(dim, eps)` with weight and bias.
pub fn layer_norm(vs: nn::Path<'_>, dim: i64, eps: f64) -> nn::LayerNorm {
    nn::layer_norm(
        vs,
        vec![dim],
        nn::LayerNormConfig {
            eps,
            ..Default::default()
        },
    )
}

/// `nn.GroupNorm(groups, channels, eps, affine=True)`.
pub fn group_norm(vs: nn::Path<'_>, groups: i64, channels: i64, eps: f64) -> nn::GroupNorm {
    nn::group_norm(
        vs,
        groups,
        channels,
        nn::GroupNormConfig {
            eps,
            ..Default::default()
        },
    )
}

/// FLOPs of a conv producing an `h_out x w_out` map, per sample.
pub fn conv_flops(conv: &nn::Conv2D, h_out: i64, w_out: i64) -> u64 {
    2 * conv.ws.numel() as u64 * (h_out * w_out) as u64
}

/// FLOPs of a linear layer applied to `tokens` vectors.
pub fn linear_flops(lin: &nn::Linear, tokens: i64) -> u64 {
    2 * lin.ws.numel() as u64 * tokens as u64
}

/// Output side of a `k x k`, stride-`s` conv with `pad` on both ends.
pub fn conv_out_side(side: i64, k: i64, s: i64, pad_before: i64, pad_after: i64) -> i64 {
    (side + pad_before + pad_after - k) / s + 1
}

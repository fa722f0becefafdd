//! The PyTorch layers the blocks are made of, initialised as transformers
//! initialises CLIP's.

use tch::nn;

/// `nn.Linear(cin, cout)` with weights from `N(0, std^2)` and zero bias,
/// as transformers initialises CLIP's projections.
pub fn linear(vs: nn::Path<'_>, cin: i64, cout: i64, std: f64) -> nn::Linear {
    nn::linear(
        vs,
        cin,
        cout,
        nn::LinearConfig {
            ws_init: nn::Init::Randn {
                mean: 0.0,
                stdev: std,
            },
            bs_init: Some(nn::Init::Const(0.0)),
            bias: true,
        },
    )
}

/// `nn.LayerNorm(hidden, eps)`: weight 1, bias 0.
pub fn layer_norm(vs: nn::Path<'_>, hidden: i64, eps: f64) -> nn::LayerNorm {
    nn::layer_norm(
        vs,
        vec![hidden],
        nn::LayerNormConfig {
            eps,
            ..Default::default()
        },
    )
}

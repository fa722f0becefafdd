//! Training works through every block: the backward pass reaches every
//! trainable weight with finite gradients, and on the tiny preset in f64 the
//! gradients agree with central finite differences.

mod common;

use common::case_dir;
use tch::{Device, Kind, Tensor};
use unet::config::ClassEmbedding;
use unet::{UNet, UNetConfig};

fn inputs(config: &UNetConfig, kind: Kind) -> (Tensor, Tensor, Option<Tensor>) {
    let n = 2;
    let (h, w) = config.sample_hw().unwrap();
    let opts = (kind, Device::Cpu);
    let x = Tensor::randn([n, config.in_channels, h, w], opts);
    let t = if config.time_embedding_type == "fourier" {
        Tensor::from_slice(&[0.3f64, 4.0]).to_kind(kind)
    } else {
        Tensor::from_slice(&[17i64, 640])
    };
    let labels = match config.class_embedding().unwrap() {
        None => None,
        Some(ClassEmbedding::Table(_)) => Some(Tensor::from_slice(&[1i64, 2])),
        Some(ClassEmbedding::Timestep) => Some(Tensor::from_slice(&[3.0f64, 6.0]).to_kind(kind)),
        Some(ClassEmbedding::Identity) => Some(Tensor::randn([n, config.time_embed_dim()], opts)),
    };
    (x, t, labels)
}

#[test]
fn backward_reaches_every_weight_of_every_block_type() {
    tensor::seed::seed_everything(11);
    let mut configs = vec![("tiny".to_string(), UNetConfig::tiny())];
    for case in common::CASES {
        configs.push((
            case.to_string(),
            UNetConfig::from_file(case_dir(case).join("config.json")).unwrap(),
        ));
    }
    for (name, config) in configs {
        let unet = UNet::new(&config, Device::Cpu).unwrap();
        let (x, t, labels) = inputs(&config, Kind::Float);
        let out = unet.forward_t(&x, &t, labels.as_ref(), true).unwrap();
        let target = Tensor::randn_like(&out);
        (out - target).square().mean(Kind::Float).backward();
        let vars = unet.vs.variables();
        let mut trainable = 0;
        for (k, v) in &vars {
            if !v.requires_grad() {
                assert_eq!(
                    k, "time_proj.weight",
                    "{name}: only the Fourier features are fixed"
                );
                continue;
            }
            trainable += 1;
            let g = v.grad();
            assert!(g.defined(), "{name}: no gradient for {k}");
            assert!(
                bool::try_from(g.isfinite().all()).unwrap(),
                "{name}: non-finite gradient for {k}"
            );
            assert!(
                g.abs().sum(Kind::Double).double_value(&[]) > 0.0,
                "{name}: zero gradient for {k}"
            );
        }
        assert!(trainable > 10, "{name}");
    }
}

/// `loss = sum(out * r)` for a fixed random `r`.
fn loss(unet: &UNet, x: &Tensor, t: &Tensor, r: &Tensor) -> Tensor {
    (unet.forward(x, t, None).unwrap() * r).sum(Kind::Double)
}

#[test]
fn gradients_match_finite_differences_in_f64() {
    tensor::seed::seed_everything(5);
    let config = UNetConfig::tiny();
    let mut unet = UNet::new(&config, Device::Cpu).unwrap();
    unet.vs.double();
    // move the norms off their ones/zeros init so that their gradients are generic
    tch::no_grad(|| {
        for (k, mut v) in unet.vs.variables() {
            if k.contains("norm") {
                let _ = v.f_add_(&(Tensor::randn_like(&v) * 0.3)).unwrap();
            }
        }
    });
    let (x, t, _) = inputs(&config, Kind::Double);
    let x = x.set_requires_grad(true);
    let r = Tensor::randn([2, 1, 8, 8], (Kind::Double, Device::Cpu));
    loss(&unet, &x, &t, &r).backward();

    let vars = unet.vs.variables();
    let probes: Vec<(&str, i64)> = vec![
        ("conv_in.weight", 3),
        ("time_embedding.linear_1.weight", 17),
        ("down_blocks.0.resnets.0.norm1.weight", 2),
        ("down_blocks.0.downsamplers.0.conv.weight", 40),
        ("down_blocks.1.resnets.0.conv_shortcut.bias", 5),
        ("down_blocks.1.attentions.0.to_q.weight", 21),
        ("down_blocks.1.attentions.0.group_norm.bias", 9),
        ("mid_block.attentions.0.to_k.weight", 100),
        ("mid_block.resnets.1.time_emb_proj.weight", 77),
        ("up_blocks.0.attentions.1.to_out.0.weight", 30),
        ("up_blocks.0.upsamplers.0.conv.weight", 300),
        ("up_blocks.1.resnets.1.conv2.weight", 11),
        ("conv_norm_out.bias", 6),
        ("conv_out.bias", 0),
    ];
    let eps = 1e-6;
    let mut worst = 0.0f64;
    let mut check = |what: String, p: &Tensor, i: i64, analytic: f64| {
        let flat = p.view([-1]);
        let at = |delta: f64| {
            tch::no_grad(|| {
                let mut e = flat.get(i);
                e += delta;
            });
            let l = tch::no_grad(|| loss(&unet, &x.detach(), &t, &r).double_value(&[]));
            tch::no_grad(|| {
                let mut e = flat.get(i);
                e -= delta;
            });
            l
        };
        let numeric = (at(eps) - at(-eps)) / (2.0 * eps);
        let rel = (numeric - analytic).abs() / numeric.abs().max(analytic.abs()).max(1e-6);
        println!(
            "{what}: analytic {analytic:.8e}, numeric {numeric:.8e}, relative error {rel:.2e}"
        );
        worst = worst.max(rel);
    };
    for (name, i) in probes {
        let p = &vars[name];
        let analytic = p.grad().view([-1]).double_value(&[i]);
        check(format!("{name}[{i}]"), p, i, analytic);
    }
    for i in [0i64, 45, 100] {
        let analytic = x.grad().view([-1]).double_value(&[i]);
        check(format!("sample[{i}]"), &x.detach(), i, analytic);
    }
    assert!(worst < 1e-4, "worst relative error {worst:.2e}");
}

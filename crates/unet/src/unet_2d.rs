//! diffusers' `UNet2DModel`: the noise-prediction U-Net of DDPM.
//!
//! `conv_in`, a timestep embedding (sinusoidal or Gaussian Fourier features,
//! then an MLP) plus an optional class embedding, the down blocks (each
//! pushing its states onto a skip stack), the mid block, the up blocks (each
//! popping one skip per ResNet block), then GroupNorm, SiLU and `conv_out`.
//! Variable names equal the keys of diffusers' state dict.

use tch::{nn, nn::Module, Device, Kind, Tensor};

use crate::config::{
    ClassEmbedding, DownBlockType, TimeEmbeddingType, TimeScaleShift, UNetConfig, UpBlockType,
};
use crate::embeddings::{GaussianFourierProjection, TimeProjection, TimestepEmbedding, Timesteps};
use crate::layers;
use crate::unet_2d_blocks::{
    AttnDownBlock2D, AttnUpBlock2D, BlockConfig, DownBlock, DownBlock2D, MidBlockConfig,
    UNetMidBlock2D, UpBlock, UpBlock2D,
};
use crate::{Error, Result};

/// The class conditioning of a model (`class_embedding`).
#[derive(Debug)]
pub enum ClassEmbed {
    /// `nn.Embedding(num_class_embeds, time_embed_dim)`: integer labels.
    Table(nn::Embedding),
    /// Labels featurised by `time_proj`, then this MLP.
    Timestep(TimestepEmbedding),
    /// Labels are `[N, time_embed_dim]` embeddings already.
    Identity,
}

impl ClassEmbed {
    /// The class embedding of `kind` under `vs` (`class_embedding`), for
    /// time features of width `t_in` and a time embedding of width `temb`.
    pub fn new(vs: nn::Path<'_>, kind: ClassEmbedding, t_in: i64, temb: i64) -> Self {
        match kind {
            ClassEmbedding::Table(rows) => {
                ClassEmbed::Table(nn::embedding(vs, rows, temb, Default::default()))
            }
            ClassEmbedding::Timestep => {
                ClassEmbed::Timestep(TimestepEmbedding::new(vs, t_in, temb))
            }
            ClassEmbedding::Identity => ClassEmbed::Identity,
        }
    }

    /// The `[n, temb]` embedding of `labels` (checked), in `kind` on
    /// `device`; `time_proj` featurises labels for [`ClassEmbed::Timestep`].
    pub fn forward(
        &self,
        labels: &Tensor,
        time_proj: &TimeProjection,
        n: i64,
        temb: i64,
        kind: Kind,
        device: Device,
    ) -> Result<Tensor> {
        let labels = labels.to_device(device);
        let out = match self {
            ClassEmbed::Table(table) => {
                if labels.is_floating_point() || labels.kind() == Kind::Bool {
                    return Err(Error::Input(format!(
                        "class_labels have kind {:?}: expected integer labels",
                        labels.kind()
                    )));
                }
                let rows = table.ws.size()[0];
                if labels.numel() > 0 {
                    let (lo, hi) = (labels.min().int64_value(&[]), labels.max().int64_value(&[]));
                    if lo < 0 || hi >= rows {
                        return Err(Error::Input(format!(
                            "class_labels range over [{lo}, {hi}]: expected 0..{rows}"
                        )));
                    }
                }
                table.forward(&labels.to_kind(Kind::Int64))
            }
            ClassEmbed::Timestep(mlp) => {
                if labels.dim() != 1 {
                    return Err(Error::Input(format!(
                        "class_labels have shape {:?}: expected [{n}]",
                        labels.size()
                    )));
                }
                mlp.forward(&time_proj.forward(&labels, kind))
            }
            ClassEmbed::Identity => labels.to_kind(kind),
        };
        let size = out.size();
        let fits = size.len() <= 2
            && size.last() == Some(&temb)
            && (size.len() < 2 || size[0] == n || size[0] == 1);
        if !fits {
            return Err(Error::Input(format!(
                "class_labels give a class embedding of shape {size:?}: expected [{n}, {temb}]"
            )));
        }
        Ok(out)
    }
}

/// `emb` (`[n, temb]`) plus the class embedding of `labels`; errors when
/// labels are missing for a class-conditional model or given to another.
pub fn add_class_embedding(
    emb: Tensor,
    class_embedding: Option<&ClassEmbed>,
    labels: Option<&Tensor>,
    time_proj: &TimeProjection,
    kind: Kind,
) -> Result<Tensor> {
    let (n, temb) = (emb.size()[0], emb.size()[1]);
    match (class_embedding, labels) {
        (Some(c), Some(labels)) => {
            let device = emb.device();
            Ok(emb + c.forward(labels, time_proj, n, temb, kind, device)?)
        }
        (Some(_), None) => Err(Error::Input(
            "class_labels are required: the model is class-conditional".into(),
        )),
        (None, Some(_)) => Err(Error::Input(
            "class_labels given but the model has no class embedding".into(),
        )),
        (None, None) => Ok(emb),
    }
}

/// `timesteps` (`[n]`, `[1]` or a scalar; integer or float) as a `[n]`
/// tensor on `device`.
pub fn broadcast_timesteps(timesteps: &Tensor, n: i64, device: Device) -> Result<Tensor> {
    let numel = timesteps.numel() as i64;
    if timesteps.dim() > 1 || (numel != 1 && numel != n) {
        return Err(Error::Input(format!(
            "timesteps have shape {:?}: expected [{n}], [1] or a scalar",
            timesteps.size()
        )));
    }
    if timesteps.kind() == Kind::Bool || timesteps.is_complex() {
        return Err(Error::Input(format!(
            "timesteps have kind {:?}: expected an integer or float tensor",
            timesteps.kind()
        )));
    }
    let t = timesteps.to_device(device).reshape([-1]);
    Ok(if numel == n { t } else { t.expand([n], false) })
}

/// The U-Net. Build it on a `VarStore` path (usually the root, so that
/// variable names are the state-dict keys) with [`UNet2DModel::new`].
#[derive(Debug)]
pub struct UNet2DModel {
    pub config: UNetConfig,
    pub conv_in: nn::Conv2D,
    pub time_proj: TimeProjection,
    pub time_embedding: TimestepEmbedding,
    pub class_embedding: Option<ClassEmbed>,
    pub down_blocks: Vec<DownBlock>,
    pub mid_block: Option<UNetMidBlock2D>,
    pub up_blocks: Vec<UpBlock>,
    pub conv_norm_out: nn::GroupNorm,
    pub conv_out: nn::Conv2D,
    /// Run in channels-last memory format: the input is converted on the way
    /// in (the weights by [`crate::UNet::to_channels_last`]). The output is
    /// returned in that format too; values are the same either way.
    pub channels_last: bool,
}

impl UNet2DModel {
    /// Creates the model's variables under `vs`, initialised as PyTorch
    /// initialises a fresh diffusers model. Fails, naming the key, on a
    /// config this implementation does not support.
    pub fn new(vs: nn::Path<'_>, config: &UNetConfig) -> Result<Self> {
        config.validate()?;
        let cfg = config;
        let ch = &cfg.block_out_channels;
        let n = ch.len();
        let temb = cfg.time_embed_dim();
        let act = cfg.activation()?;
        let shift = cfg.time_scale_shift()?;

        let conv_in = layers::conv2d(&vs / "conv_in", cfg.in_channels, ch[0], 3, 1, 1);
        let (time_proj, t_in) = match cfg.time_embedding()? {
            TimeEmbeddingType::Positional => (
                TimeProjection::Positional(Timesteps::new(
                    ch[0],
                    cfg.flip_sin_to_cos,
                    cfg.freq_shift,
                )),
                ch[0],
            ),
            TimeEmbeddingType::Fourier => (
                TimeProjection::Fourier(GaussianFourierProjection::new(
                    &vs / "time_proj",
                    ch[0],
                    16.0,
                )),
                2 * ch[0],
            ),
        };
        let time_embedding = TimestepEmbedding::new(&vs / "time_embedding", t_in, temb);
        let class_embedding = cfg
            .class_embedding()?
            .map(|c| ClassEmbed::new(&vs / "class_embedding", c, t_in, temb));

        let block = |cin: i64, cout: i64, prev: i64, last: bool, resnet_resample: bool| {
            let (heads, dim_head) = cfg.attention_heads(cout);
            BlockConfig {
                in_channels: cin,
                out_channels: cout,
                prev_output_channels: prev,
                temb_channels: temb,
                num_layers: cfg.layers_per_block,
                groups: cfg.norm_num_groups,
                eps: cfg.norm_eps,
                dropout: cfg.dropout,
                act,
                time_scale_shift: shift,
                add_resample: !last,
                resnet_resample,
                downsample_padding: cfg.downsample_padding,
                heads,
                dim_head,
            }
        };

        let mut down_blocks = Vec::with_capacity(n);
        for (i, kind) in cfg.down_blocks()?.into_iter().enumerate() {
            let cin = if i == 0 { ch[0] } else { ch[i - 1] };
            let b = block(cin, ch[i], 0, i == n - 1, cfg.downsample_type == "resnet");
            let p = &vs / "down_blocks" / i;
            down_blocks.push(match kind {
                DownBlockType::DownBlock2D => DownBlock::Down(DownBlock2D::new(p, &b)),
                DownBlockType::AttnDownBlock2D => {
                    DownBlock::AttnDown(Box::new(AttnDownBlock2D::new(p, &b)))
                }
            });
        }

        let mid_block = cfg.mid_block_type.as_ref().map(|_| {
            let c = ch[n - 1];
            let (heads, dim_head) = cfg.attention_heads(c);
            UNetMidBlock2D::new(
                &vs / "mid_block",
                &MidBlockConfig {
                    channels: c,
                    temb_channels: Some(temb),
                    groups: cfg.norm_num_groups,
                    attn_groups: cfg.attn_norm_num_groups.or(match shift {
                        TimeScaleShift::Default => Some(cfg.norm_num_groups),
                        TimeScaleShift::ScaleShift => None,
                    }),
                    eps: cfg.norm_eps,
                    dropout: cfg.dropout,
                    act,
                    time_scale_shift: shift,
                    output_scale_factor: cfg.mid_block_scale_factor,
                    add_attention: cfg.add_attention,
                    heads,
                    dim_head,
                },
            )
        });

        let rev: Vec<i64> = ch.iter().rev().copied().collect();
        let mut up_blocks = Vec::with_capacity(n);
        for (i, kind) in cfg.up_blocks()?.into_iter().enumerate() {
            let prev = if i == 0 { rev[0] } else { rev[i - 1] };
            let cin = rev[(i + 1).min(n - 1)];
            let mut b = block(cin, rev[i], prev, i == n - 1, cfg.upsample_type == "resnet");
            b.num_layers = cfg.layers_per_block + 1;
            let p = &vs / "up_blocks" / i;
            up_blocks.push(match kind {
                UpBlockType::UpBlock2D => UpBlock::Up(UpBlock2D::new(p, &b)),
                UpBlockType::AttnUpBlock2D => UpBlock::AttnUp(Box::new(AttnUpBlock2D::new(p, &b))),
            });
        }

        Ok(UNet2DModel {
            config: cfg.clone(),
            conv_in,
            time_proj,
            time_embedding,
            class_embedding,
            down_blocks,
            mid_block,
            up_blocks,
            conv_norm_out: layers::group_norm(
                &vs / "conv_norm_out",
                cfg.norm_num_groups,
                ch[0],
                cfg.norm_eps,
            ),
            conv_out: layers::conv2d(&vs / "conv_out", ch[0], cfg.out_channels, 3, 1, 1),
            channels_last: false,
        })
    }

    /// The floating-point kind of the weights.
    pub fn kind(&self) -> Kind {
        self.conv_in.ws.kind()
    }

    /// The device of the weights.
    pub fn device(&self) -> Device {
        self.conv_in.ws.device()
    }

    /// Inference forward pass (dropout off): see [`UNet2DModel::forward_t`].
    pub fn forward(
        &self,
        sample: &Tensor,
        timesteps: &Tensor,
        class_labels: Option<&Tensor>,
    ) -> Result<Tensor> {
        self.forward_t(sample, timesteps, class_labels, false)
    }

    /// The forward pass of diffusers' `UNet2DModel.forward`.
    ///
    /// - `sample`: `[N, in_channels, H, W]`, H and W multiples of
    ///   `2^(levels - 1)`.
    /// - `timesteps`: `[N]` per-sample timesteps, or one (a scalar or `[1]`)
    ///   for the whole batch; integer or float. With the Fourier embedding
    ///   these are noise levels sigma > 0 and the output is divided by them.
    /// - `class_labels`: required exactly when the model is class-conditional:
    ///   `[N]` integer labels (table), `[N]` numbers (`"timestep"`), or
    ///   `[N, time_embed_dim]` embeddings (`"identity"`).
    /// - `train`: dropout on.
    pub fn forward_t(
        &self,
        sample: &Tensor,
        timesteps: &Tensor,
        class_labels: Option<&Tensor>,
        train: bool,
    ) -> Result<Tensor> {
        let cfg = &self.config;
        let kind = self.kind();
        let device = self.device();
        let size = sample.size();
        if size.len() != 4 || size[1] != cfg.in_channels {
            return Err(Error::Input(format!(
                "sample has shape {size:?}: expected [N, {}, H, W]",
                cfg.in_channels
            )));
        }
        let n = size[0];
        cfg.check_sample_hw(size[2], size[3])
            .map_err(Error::Input)?;
        let timesteps = broadcast_timesteps(timesteps, n, device)?;

        let sample = sample.to_device(device).to_kind(kind);
        let sample = if self.channels_last {
            tensor::layout::to_channels_last(&sample)
        } else {
            sample
        };
        let sample = if cfg.center_input_sample {
            sample * 2.0 - 1.0
        } else {
            sample
        };

        let t_emb = self.time_proj.forward(&timesteps, kind);
        let emb = self.time_embedding.forward(&t_emb);
        let emb = add_class_embedding(
            emb,
            self.class_embedding.as_ref(),
            class_labels,
            &self.time_proj,
            kind,
        )?;

        let mut h = self.conv_in.forward(&sample);
        let mut skips = vec![h.shallow_clone()];
        for block in &self.down_blocks {
            let (out, states) = block.forward_t(&h, &emb, train);
            h = out;
            skips.extend(states);
        }
        if let Some(mid) = &self.mid_block {
            h = mid.forward_t(&h, Some(&emb), train);
        }
        for block in &self.up_blocks {
            h = block.forward_t(&h, &mut skips, &emb, train);
        }
        let h = self.conv_norm_out.forward(&h).silu();
        let out = self.conv_out.forward(&h);
        Ok(match self.time_proj {
            TimeProjection::Fourier(_) => out / timesteps.to_kind(kind).reshape([n, 1, 1, 1]),
            TimeProjection::Positional(_) => out,
        })
    }

    /// Forward FLOPs per block for one `h x w` sample, in forward order:
    /// `conv_in`, `time_embedding`, `class_embedding` (when it has an MLP),
    /// `down_blocks.i`, `mid_block`, `up_blocks.i`, `conv_out`. One
    /// multiply-add is 2 FLOPs; only convolutions, linear layers and the
    /// attention matmuls count (see [`crate::layers`]).
    pub fn flops(&self, h: i64, w: i64) -> Result<Vec<(String, u64)>> {
        self.config.check_sample_hw(h, w).map_err(Error::Input)?;
        let mut out = vec![
            (
                "conv_in".to_string(),
                layers::conv_flops(&self.conv_in, h, w),
            ),
            ("time_embedding".to_string(), self.time_embedding.flops(1)),
        ];
        if let Some(ClassEmbed::Timestep(mlp)) = &self.class_embedding {
            out.push(("class_embedding".to_string(), mlp.flops(1)));
        }
        let mut hw = (h, w);
        for (i, b) in self.down_blocks.iter().enumerate() {
            let (f, next) = b.flops(hw.0, hw.1);
            out.push((format!("down_blocks.{i}"), f));
            hw = next;
        }
        if let Some(mid) = &self.mid_block {
            out.push(("mid_block".to_string(), mid.flops(hw.0, hw.1)));
        }
        for (i, b) in self.up_blocks.iter().enumerate() {
            let (f, next) = b.flops(hw.0, hw.1);
            out.push((format!("up_blocks.{i}"), f));
            hw = next;
        }
        out.push((
            "conv_out".to_string(),
            layers::conv_flops(&self.conv_out, h, w),
        ));
        Ok(out)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn tiny() -> (nn::VarStore, UNet2DModel) {
        let vs = nn::VarStore::new(Device::Cpu);
        let model = UNet2DModel::new(vs.root(), &UNetConfig::tiny()).unwrap();
        (vs, model)
    }

    fn x(n: i64, c: i64, h: i64, w: i64) -> Tensor {
        Tensor::randn([n, c, h, w], (Kind::Float, Device::Cpu))
    }

    #[test]
    fn timesteps_broadcast_from_a_scalar_and_accept_ints_and_floats() {
        let (_vs, m) = tiny();
        let xs = x(3, 1, 8, 8);
        let per_sample = m
            .forward(&xs, &Tensor::from_slice(&[5i64, 5, 5]), None)
            .unwrap();
        let scalar = m.forward(&xs, &Tensor::from(5i64), None).unwrap();
        let one = m
            .forward(&xs, &Tensor::from_slice(&[5.0f32]), None)
            .unwrap();
        assert!(per_sample.allclose(&scalar, 0.0, 0.0, false));
        assert!(per_sample.allclose(&one, 1e-6, 1e-6, false));
        let different = m
            .forward(&xs, &Tensor::from_slice(&[5i64, 6, 5]), None)
            .unwrap();
        assert!(!different
            .get(1)
            .allclose(&per_sample.get(1), 1e-6, 1e-6, false));
        assert!(different
            .get(2)
            .allclose(&per_sample.get(2), 0.0, 0.0, false));
    }

    #[test]
    fn bad_inputs_are_errors_not_panics() {
        let (_vs, m) = tiny();
        let t = Tensor::from_slice(&[1i64, 2]);
        let err = |r: Result<Tensor>| r.unwrap_err().to_string();
        assert!(err(m.forward(&x(2, 3, 8, 8), &t, None)).contains("[N, 1, H, W]"));
        assert!(err(m.forward(&x(2, 1, 9, 8), &t, None)).contains("multiples of 2"));
        assert!(err(m.forward(&x(3, 1, 8, 8), &t, None)).contains("timesteps"));
        let labels = Tensor::from_slice(&[0i64, 1]);
        assert!(err(m.forward(&x(2, 1, 8, 8), &t, Some(&labels))).contains("no class embedding"));

        let vs = nn::VarStore::new(Device::Cpu);
        let cfg = UNetConfig {
            num_class_embeds: Some(3),
            ..UNetConfig::tiny()
        };
        let m = UNet2DModel::new(vs.root(), &cfg).unwrap();
        assert!(err(m.forward(&x(2, 1, 8, 8), &t, None)).contains("required"));
        let out_of_range = Tensor::from_slice(&[0i64, 3]);
        assert!(err(m.forward(&x(2, 1, 8, 8), &t, Some(&out_of_range))).contains("0..3"));
        let floats = Tensor::from_slice(&[0.0f32, 1.0]);
        assert!(err(m.forward(&x(2, 1, 8, 8), &t, Some(&floats))).contains("integer"));
        assert!(m.forward(&x(2, 1, 8, 8), &t, Some(&labels)).is_ok());
    }

    #[test]
    fn twenty_eight_pixels_go_through_three_levels_and_back() {
        let cfg = UNetConfig {
            block_out_channels: vec![8, 8, 16],
            down_block_types: vec![
                "DownBlock2D".into(),
                "DownBlock2D".into(),
                "AttnDownBlock2D".into(),
            ],
            up_block_types: vec![
                "AttnUpBlock2D".into(),
                "UpBlock2D".into(),
                "UpBlock2D".into(),
            ],
            sample_size: Some(crate::config::SampleSize::Square(28)),
            ..UNetConfig::tiny()
        };
        let vs = nn::VarStore::new(Device::Cpu);
        let m = UNet2DModel::new(vs.root(), &cfg).unwrap();
        let out = m
            .forward(&x(1, 1, 28, 28), &Tensor::from(3i64), None)
            .unwrap();
        assert_eq!(out.size(), [1, 1, 28, 28]);
        let err = m
            .forward(&x(1, 1, 30, 28), &Tensor::from(3i64), None)
            .unwrap_err();
        assert!(err.to_string().contains("30x28"), "{err}");
    }

    #[test]
    fn dropout_is_active_only_in_training() {
        let vs = nn::VarStore::new(Device::Cpu);
        let cfg = UNetConfig {
            dropout: 0.5,
            ..UNetConfig::tiny()
        };
        let m = UNet2DModel::new(vs.root(), &cfg).unwrap();
        let (xs, t) = (x(2, 1, 8, 8), Tensor::from(10i64));
        let a = m.forward(&xs, &t, None).unwrap();
        let b = m.forward(&xs, &t, None).unwrap();
        assert!(a.allclose(&b, 0.0, 0.0, false));
        let c = m.forward_t(&xs, &t, None, true).unwrap();
        assert!(!a.allclose(&c, 1e-6, 1e-6, false));
    }
}

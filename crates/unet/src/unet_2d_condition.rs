//! diffusers' `UNet2DConditionModel`: the text-conditioned U-Net of Stable
//! Diffusion 1.x and 2.x.
//!
//! The same skeleton as [`crate::UNet2DModel`] (`conv_in`, a sinusoidal
//! timestep embedding with an optional class embedding, down blocks pushing
//! skips, a mid block, up blocks popping them, GroupNorm, SiLU, `conv_out`),
//! with [`Transformer2DModel`](crate::transformer_2d::Transformer2DModel)s
//! in the `CrossAttn` blocks that attend to the encoder hidden states (the
//! text embeddings). Samples of any size work: where a side is not a
//! multiple of the downsampling factor the upsamplers resize to the skip's
//! size, as diffusers does with `upsample_size`. Variable names equal the
//! keys of diffusers' state dict.

use tch::{nn, nn::Module, Device, Kind, Tensor};

use crate::activations::Activation;
use crate::condition_config::UNetConditionConfig;
use crate::embeddings::{TimeProjection, TimestepEmbedding, Timesteps};
use crate::layers;
use crate::text_time_embedding::TextTimeEmbedding;
use crate::transformer_2d::Transformer2DConfig;
use crate::unet_2d::{add_class_embedding, broadcast_timesteps, ClassEmbed};
use crate::unet_2d_blocks::{BlockConfig, DownBlock2D, UpBlock2D};
use crate::unet_2d_condition_blocks::{
    CondDownBlock, CondUpBlock, Context, CrossAttnDownBlock2D, CrossAttnUpBlock2D,
    UNetMidBlock2DCrossAttn,
};
use crate::{Error, Result};

/// The text-conditioned U-Net. Build it on a `VarStore` path (usually the
/// root, so that variable names are the state-dict keys).
#[derive(Debug)]
pub struct UNet2DConditionModel {
    pub config: UNetConditionConfig,
    pub conv_in: nn::Conv2D,
    pub time_proj: TimeProjection,
    pub time_embedding: TimestepEmbedding,
    pub class_embedding: Option<ClassEmbed>,
    /// `add_embedding`: the pooled prompt added to the time embedding
    /// (`addition_embed_type: "text"`).
    pub add_embedding: Option<TextTimeEmbedding>,
    pub down_blocks: Vec<CondDownBlock>,
    pub mid_block: Option<UNetMidBlock2DCrossAttn>,
    pub up_blocks: Vec<CondUpBlock>,
    pub conv_norm_out: nn::GroupNorm,
    /// `conv_act`: the config's `act_fn` (SiLU in Stable Diffusion).
    pub act: Activation,
    pub conv_out: nn::Conv2D,
}

/// What a forward pass is conditioned on, besides the timestep.
#[derive(Debug, Clone, Copy)]
pub struct Conditioning<'a> {
    /// `[N or 1, S, cross_attention_dim]`: the text embeddings.
    pub encoder_hidden_states: &'a Tensor,
    /// `[N or 1, S]`: 1 for tokens to attend to, 0 for tokens to ignore.
    pub encoder_attention_mask: Option<&'a Tensor>,
    /// As for [`crate::UNet2DModel::forward`], when the model has a class
    /// embedding.
    pub class_labels: Option<&'a Tensor>,
}

impl<'a> Conditioning<'a> {
    /// Text embeddings only.
    pub fn text(encoder_hidden_states: &'a Tensor) -> Self {
        Conditioning {
            encoder_hidden_states,
            encoder_attention_mask: None,
            class_labels: None,
        }
    }
}

impl UNet2DConditionModel {
    /// Creates the model's variables under `vs`, initialised as PyTorch
    /// initialises a fresh diffusers model. Fails, naming the key, on a
    /// config this implementation does not support.
    pub fn new(vs: nn::Path<'_>, config: &UNetConditionConfig) -> Result<Self> {
        config.validate()?;
        let cfg = config;
        let ch = &cfg.block_out_channels;
        let n = ch.len();
        let temb = cfg.time_embed_dim();
        let act = cfg.activation()?;
        let shift = cfg.time_scale_shift()?;
        let levels = cfg.levels()?;

        let conv_in = layers::conv2d(
            &vs / "conv_in",
            cfg.in_channels,
            ch[0],
            cfg.conv_in_kernel,
            1,
            (cfg.conv_in_kernel - 1) / 2,
        );
        let time_proj =
            TimeProjection::Positional(Timesteps::new(ch[0], cfg.flip_sin_to_cos, cfg.freq_shift));
        let time_embedding =
            TimestepEmbedding::with_activation(&vs / "time_embedding", ch[0], temb, act);
        let class_embedding = cfg
            .class_embedding()?
            .map(|c| ClassEmbed::new(&vs / "class_embedding", c, ch[0], temb));
        let add_embedding = cfg.text_time_heads()?.map(|heads| {
            TextTimeEmbedding::new(&vs / "add_embedding", cfg.encoder_width(), temb, heads)
        });

        let block = |cin: i64, cout: i64, prev: i64, layers: i64, last: bool| BlockConfig {
            in_channels: cin,
            out_channels: cout,
            prev_output_channels: prev,
            temb_channels: temb,
            num_layers: layers,
            groups: cfg.norm_num_groups,
            eps: cfg.norm_eps,
            dropout: cfg.dropout,
            act,
            time_scale_shift: shift,
            add_resample: !last,
            resnet_resample: false,
            downsample_padding: cfg.downsample_padding,
            heads: 1,
            dim_head: cout,
        };
        let transformer = |channels: i64, heads: i64, layers: i64, context: i64, only: bool| {
            Transformer2DConfig {
                channels,
                heads,
                dim_head: channels / heads,
                num_layers: layers,
                context_dim: context,
                groups: cfg.norm_num_groups,
                linear_projection: cfg.use_linear_projection,
                only_cross_attention: only,
                upcast_attention: cfg.upcast_attention,
                dropout: cfg.dropout,
            }
        };

        let mut down_blocks = Vec::with_capacity(n);
        for (i, level) in levels.iter().enumerate() {
            let cin = if i == 0 { ch[0] } else { ch[i - 1] };
            let b = block(cin, ch[i], 0, level.layers, i == n - 1);
            let p = &vs / "down_blocks" / i;
            down_blocks.push(if level.cross_attention {
                let t = transformer(
                    ch[i],
                    level.heads,
                    level.transformer_layers,
                    level.cross_attention_dim,
                    level.only_cross_attention,
                );
                CondDownBlock::CrossAttnDown(Box::new(CrossAttnDownBlock2D::new(p, &b, &t)))
            } else {
                CondDownBlock::Down(DownBlock2D::new(p, &b))
            });
        }

        let last = &levels[n - 1];
        let mid_block = cfg.mid_block_type.as_ref().map(|_| {
            let c = ch[n - 1];
            let t = transformer(
                c,
                last.heads,
                last.transformer_layers,
                last.cross_attention_dim,
                cfg.mid_only_cross_attention(),
            );
            UNetMidBlock2DCrossAttn::new(
                &vs / "mid_block",
                &block(c, c, c, 1, true),
                &t,
                cfg.mid_block_scale_factor,
            )
        });

        let rev: Vec<i64> = ch.iter().rev().copied().collect();
        let up_cross = cfg.up_cross_attention()?;
        let mut up_blocks = Vec::with_capacity(n);
        for (i, &cross) in up_cross.iter().enumerate() {
            let level = &levels[n - 1 - i];
            let prev = if i == 0 { rev[0] } else { rev[i - 1] };
            let cin = rev[(i + 1).min(n - 1)];
            let b = block(cin, rev[i], prev, level.layers + 1, i == n - 1);
            let p = &vs / "up_blocks" / i;
            up_blocks.push(if cross {
                let t = transformer(
                    rev[i],
                    level.heads,
                    level.transformer_layers,
                    level.cross_attention_dim,
                    level.only_cross_attention,
                );
                CondUpBlock::CrossAttnUp(Box::new(CrossAttnUpBlock2D::new(p, &b, &t)))
            } else {
                CondUpBlock::Up(UpBlock2D::new(p, &b))
            });
        }

        Ok(UNet2DConditionModel {
            config: cfg.clone(),
            conv_in,
            time_proj,
            time_embedding,
            class_embedding,
            add_embedding,
            down_blocks,
            mid_block,
            up_blocks,
            conv_norm_out: layers::group_norm(
                &vs / "conv_norm_out",
                cfg.norm_num_groups,
                ch[0],
                cfg.norm_eps,
            ),
            act,
            conv_out: layers::conv2d(
                &vs / "conv_out",
                ch[0],
                cfg.out_channels,
                cfg.conv_out_kernel,
                1,
                (cfg.conv_out_kernel - 1) / 2,
            ),
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

    /// The forward pass of diffusers' `UNet2DConditionModel.forward`
    /// (inference: dropout off). See [`UNet2DConditionModel::forward_t`].
    pub fn forward(
        &self,
        sample: &Tensor,
        timesteps: &Tensor,
        cond: Conditioning<'_>,
    ) -> Result<Tensor> {
        self.forward_t(sample, timesteps, cond, false)
    }

    /// - `sample`: `[N, in_channels, H, W]`, any H and W.
    /// - `timesteps`: `[N]`, `[1]` or a scalar; integer or float.
    /// - `cond`: the encoder hidden states (and their mask, and class
    ///   labels for a class-conditional model); fields of batch 1 apply to
    ///   every sample.
    /// - `train`: dropout on.
    pub fn forward_t(
        &self,
        sample: &Tensor,
        timesteps: &Tensor,
        cond: Conditioning<'_>,
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
        let timesteps = broadcast_timesteps(timesteps, n, device)?;
        let context = self.context(cond.encoder_hidden_states, n)?;
        let bias = cond
            .encoder_attention_mask
            .map(|m| self.mask_bias(m, n, context.size()[1]))
            .transpose()?;
        let ctx = Context {
            states: &context,
            bias: bias.as_ref(),
        };

        let sample = sample.to_device(device).to_kind(kind);
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
            cond.class_labels,
            &self.time_proj,
            kind,
        )?;
        let emb = match &self.add_embedding {
            Some(add) => emb + add.forward(&context),
            None => emb,
        };

        let mut h = self.conv_in.forward(&sample);
        let mut skips = vec![h.shallow_clone()];
        for block in &self.down_blocks {
            let (out, states) = block.forward_t(&h, &emb, ctx, train);
            h = out;
            skips.extend(states);
        }
        if let Some(mid) = &self.mid_block {
            h = mid.forward_t(&h, &emb, ctx, train);
        }
        // Resize to the skips' size where a side is not a multiple of the
        // downsampling factor (diffusers' `forward_upsample_size`).
        let factor = 1i64 << (self.up_blocks.len() - 1);
        let resize = size[2] % factor != 0 || size[3] % factor != 0;
        let last = self.up_blocks.len() - 1;
        for (i, block) in self.up_blocks.iter().enumerate() {
            let upsample_size = (resize && i < last).then(|| {
                let below = skips.len() - block.num_resnets() - 1;
                let s = skips[below].size();
                [s[2], s[3]]
            });
            h = block.forward_t(&h, &mut skips, &emb, ctx, train, upsample_size);
        }
        let h = self.act.forward(&self.conv_norm_out.forward(&h));
        Ok(self.conv_out.forward(&h))
    }

    /// The encoder hidden states as `[n, S, D]` in the model's kind and
    /// device, checked against the config.
    fn context(&self, states: &Tensor, n: i64) -> Result<Tensor> {
        let size = states.size();
        let width = self.config.encoder_width();
        if size.len() != 3 || size[2] != width || (size[0] != n && size[0] != 1) {
            return Err(Error::Input(format!(
                "encoder_hidden_states have shape {size:?}: expected [{n} or 1, tokens, {width}]"
            )));
        }
        let states = states.to_device(self.device()).to_kind(self.kind());
        Ok(if size[0] == n {
            states
        } else {
            states.expand([n, size[1], width], false)
        })
    }

    /// diffusers' mask bias: (1 - mask) * -10000 as `[n, 1, 1, S]`.
    fn mask_bias(&self, mask: &Tensor, n: i64, tokens: i64) -> Result<Tensor> {
        let size = mask.size();
        if size.len() != 2 || size[1] != tokens || (size[0] != n && size[0] != 1) {
            return Err(Error::Input(format!(
                "encoder_attention_mask has shape {size:?}: expected [{n} or 1, {tokens}]"
            )));
        }
        let mask = mask.to_device(self.device()).to_kind(self.kind());
        let bias = (mask.ones_like() - mask) * -10000.0;
        Ok(bias.expand([n, tokens], false).reshape([n, 1, 1, tokens]))
    }

    /// Forward FLOPs per block for one `h x w` sample with `s` context
    /// tokens, in forward order (`conv_in`, `time_embedding`,
    /// `add_embedding` where the model has one, `down_blocks.i`, `mid_block`, `up_blocks.i`, `conv_out`); the
    /// convention of [`crate::layers`].
    pub fn flops(&self, h: i64, w: i64, s: i64) -> Vec<(String, u64)> {
        let mut out = vec![
            (
                "conv_in".to_string(),
                layers::conv_flops(&self.conv_in, h, w),
            ),
            ("time_embedding".into(), self.time_embedding.flops(1)),
        ];
        if let Some(add) = &self.add_embedding {
            out.push(("add_embedding".into(), add.flops(1, s)));
        }
        let mut hw = (h, w);
        let mut sides = vec![hw];
        for (i, b) in self.down_blocks.iter().enumerate() {
            let (f, next) = b.flops(hw.0, hw.1, s);
            out.push((format!("down_blocks.{i}"), f));
            hw = next;
            sides.push(hw);
        }
        if let Some(m) = &self.mid_block {
            out.push(("mid_block".into(), m.flops(hw.0, hw.1, s)));
        }
        sides.pop();
        for (i, b) in self.up_blocks.iter().enumerate() {
            let (f, _) = b.flops(hw.0, hw.1, s);
            out.push((format!("up_blocks.{i}"), f));
            hw = sides.pop().unwrap_or(hw);
        }
        out.push(("conv_out".into(), layers::conv_flops(&self.conv_out, h, w)));
        out
    }
}

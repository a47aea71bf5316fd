//! The SD-1.5 UNet (diffusers `UNet2DConditionModel` layout) with AnimateDiff motion modules
//! after every resnet(+attention) pair and optional LayerDiffuse attention units — what
//! diffusers builds as `UNetMotionModel.from_unet2d(unet, motion_adapter)`.
//!
//! Frames of a clip are stacked in the batch; the image layers run per frame and the motion
//! modules regroup the batch into clips. Block wiring follows diffusers exactly, including the
//! mid block's order (resnet, attention, motion module, resnet).

use candle_core::{DType, Module, Result, Tensor, bail};
use candle_nn::{Linear, VarBuilder};
use serde::{Deserialize, Serialize};

use super::attention::SpatialTransformer;
use super::layer_attn::{LayerAttnLayout, layer_attn_prefix};
use super::motion::{MotionModule, MotionModuleConfig};
use crate::model::diffusion::timestep_features;
use crate::model::fastconv::{
    Activation, FastConv2d, FusedGroupNorm, fast_conv2d, group_norm, upsample_nearest2x,
};

/// Widths and depths of a motion-aware UNet. [`MotionUNetConfig::sd15`] is SD-1.5 with
/// AnimateDiff v2; [`MotionUNetConfig::tiny`] is the small variant the golden tests use.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct MotionUNetConfig {
    /// Latent channels in and out (4).
    pub in_channels: usize,
    /// Noise channels out (4).
    pub out_channels: usize,
    /// Channels per level (SD-1.5: 320, 640, 1280, 1280).
    pub block_out_channels: Vec<usize>,
    /// Which down levels have cross-attention transformers (SD-1.5: all but the last); the up
    /// levels mirror them.
    pub cross_attention: Vec<bool>,
    /// Resnets per down block (up blocks have one more).
    pub layers_per_block: usize,
    /// Heads of the spatial attentions (SD-1.5: 8, what its config calls `attention_head_dim`).
    pub heads: usize,
    /// GroupNorm groups everywhere, motion modules included (32).
    pub norm_num_groups: usize,
    /// Epsilon of the resnets' and output GroupNorms (1e-5).
    pub norm_eps: f64,
    /// Width of the text conditioning (CLIP ViT-L: 768).
    pub cross_attention_dim: usize,
    /// Transformer blocks per spatial attention (1).
    pub transformer_depth: usize,
    /// Heads of the motion modules (8).
    pub motion_heads: usize,
    /// Transformer blocks per motion module (1).
    pub motion_layers: usize,
    /// Rows of the motion modules' position table (32 for v2; 24 for v1).
    pub motion_max_frames: usize,
    /// Whether the adapter has a mid-block motion module (v2: yes).
    pub motion_mid_block: bool,
    /// Frames per context window for longer clips (AnimateDiff was trained on 16).
    pub context_frames: usize,
    /// Frames shared by neighbouring windows.
    pub context_overlap: usize,
}

impl MotionUNetConfig {
    /// SD-1.5 with AnimateDiff v2 (`guoyww/animatediff-motion-adapter-v1-5-2`).
    pub fn sd15() -> Self {
        Self {
            in_channels: 4,
            out_channels: 4,
            block_out_channels: vec![320, 640, 1280, 1280],
            cross_attention: vec![true, true, true, false],
            layers_per_block: 2,
            heads: 8,
            norm_num_groups: 32,
            norm_eps: 1e-5,
            cross_attention_dim: 768,
            transformer_depth: 1,
            motion_heads: 8,
            motion_layers: 1,
            motion_max_frames: 32,
            motion_mid_block: true,
            context_frames: 16,
            context_overlap: 4,
        }
    }

    /// The tiny variant of `tests/golden/make_sd_goldens.py`: levels (32, 64), the first with
    /// cross-attention, 2 heads, 8 groups, context width 32; same code paths as SD-1.5.
    pub fn tiny() -> Self {
        Self {
            block_out_channels: vec![32, 64],
            cross_attention: vec![true, false],
            heads: 2,
            norm_num_groups: 8,
            cross_attention_dim: 32,
            motion_heads: 2,
            context_frames: 8,
            context_overlap: 2,
            ..Self::sd15()
        }
    }

    /// Checks the widths fit together, so a bad configuration fails before any tensor is read.
    pub fn validate(&self) -> Result<()> {
        let n = self.block_out_channels.len();
        if n == 0 || self.cross_attention.len() != n {
            bail!(
                "UNet config: {n} levels but {} cross-attention flags",
                self.cross_attention.len()
            );
        }
        for &c in &self.block_out_channels {
            if self.norm_num_groups == 0 || !c.is_multiple_of(self.norm_num_groups) {
                bail!(
                    "UNet config: {} groups do not divide {c} channels",
                    self.norm_num_groups
                );
            }
            if !c.is_multiple_of(self.heads) || !c.is_multiple_of(self.motion_heads) {
                bail!("UNet config: heads do not divide {c} channels");
            }
        }
        if self.layers_per_block == 0 {
            bail!("UNet config: layers_per_block must be at least 1");
        }
        if self.context_frames == 0 || self.context_overlap >= self.context_frames {
            bail!(
                "UNet config: context window of {} frames with overlap {}",
                self.context_frames,
                self.context_overlap
            );
        }
        Ok(())
    }

    /// Channels of the time embedding (4 × the first level).
    pub fn time_embed_dim(&self) -> usize {
        4 * self.block_out_channels[0]
    }

    fn motion(&self, channels: usize) -> MotionModuleConfig {
        MotionModuleConfig {
            channels,
            heads: self.motion_heads,
            groups: self.norm_num_groups,
            layers: self.motion_layers,
            max_frames: self.motion_max_frames,
        }
    }
}

/// diffusers' `ResnetBlock2D` (pre-norm, SiLU, time embedding added after the first conv).
#[derive(Debug, Clone)]
struct Resnet {
    norm1: FusedGroupNorm,
    conv1: FastConv2d,
    time_emb_proj: Linear,
    norm2: FusedGroupNorm,
    conv2: FastConv2d,
    shortcut: Option<FastConv2d>,
}

impl Resnet {
    fn new(c_in: usize, c_out: usize, cfg: &MotionUNetConfig, vb: VarBuilder) -> Result<Self> {
        let conv3 = candle_nn::Conv2dConfig {
            padding: 1,
            ..Default::default()
        };
        let g = cfg.norm_num_groups;
        let shortcut = if c_in != c_out {
            Some(fast_conv2d(
                c_in,
                c_out,
                1,
                Default::default(),
                vb.pp("conv_shortcut"),
            )?)
        } else {
            None
        };
        Ok(Self {
            norm1: group_norm(g, c_in, cfg.norm_eps, vb.pp("norm1"))?,
            conv1: fast_conv2d(c_in, c_out, 3, conv3, vb.pp("conv1"))?,
            time_emb_proj: candle_nn::linear(cfg.time_embed_dim(), c_out, vb.pp("time_emb_proj"))?,
            norm2: group_norm(g, c_out, cfg.norm_eps, vb.pp("norm2"))?,
            conv2: fast_conv2d(c_out, c_out, 3, conv3, vb.pp("conv2"))?,
            shortcut,
        })
    }

    /// `x` `[n, C, H, W]`; `emb_act` = SiLU(time embedding) `[1, T]`.
    fn forward(&self, x: &Tensor, emb_act: &Tensor) -> Result<Tensor> {
        let h = self
            .conv1
            .forward(&self.norm1.forward_act(x, Activation::Silu)?)?;
        let t = self
            .time_emb_proj
            .forward(emb_act)?
            .unsqueeze(2)?
            .unsqueeze(3)?;
        let h = h.broadcast_add(&t)?;
        let h = self
            .conv2
            .forward(&self.norm2.forward_act(&h, Activation::Silu)?)?;
        match &self.shortcut {
            Some(s) => s.forward(x)? + h,
            None => x + h,
        }
    }
}

/// One level of the UNet: resnets, optional spatial transformers, optional motion modules,
/// optional down/up sampler conv.
#[derive(Debug, Clone)]
struct Level {
    resnets: Vec<Resnet>,
    attentions: Vec<SpatialTransformer>,
    motion: Vec<MotionModule>,
    sampler: Option<FastConv2d>,
    channels: usize,
}

impl Level {
    /// Runs layer `j`: resnet, attention if any, motion module if any.
    fn layer(
        &self,
        j: usize,
        x: &Tensor,
        emb_act: &Tensor,
        context: &Tensor,
        frames: usize,
    ) -> Result<Tensor> {
        let mut x = self.resnets[j].forward(x, emb_act)?;
        if let Some(a) = self.attentions.get(j) {
            x = a.forward(&x, context)?;
        }
        if let Some(m) = self.motion.get(j) {
            x = m.forward(&x, frames)?;
        }
        Ok(x)
    }
}

/// The motion-aware SD-1.5 UNet. Build it with [`MotionUNet::new`] from `VarBuilder`s, or from
/// files with [`super::load_motion_unet`].
#[derive(Debug, Clone)]
pub struct MotionUNet {
    cfg: MotionUNetConfig,
    conv_in: FastConv2d,
    time_1: Linear,
    time_2: Linear,
    down: Vec<Level>,
    mid: Level,
    up: Vec<Level>,
    norm_out: FusedGroupNorm,
    conv_out: FastConv2d,
    motion: bool,
    layer_attn: bool,
    dtype: DType,
}

impl MotionUNet {
    /// The image UNet from `unet` (diffusers `UNet2DConditionModel` names), without motion
    /// modules or LayerDiffuse units.
    pub fn new(cfg: &MotionUNetConfig, vb: VarBuilder) -> Result<Self> {
        cfg.validate()?;
        let ch = &cfg.block_out_channels;
        let n = ch.len();
        let conv3 = candle_nn::Conv2dConfig {
            padding: 1,
            ..Default::default()
        };
        let transformer = |c: usize, vb: VarBuilder| {
            SpatialTransformer::new(
                c,
                cfg.heads,
                cfg.norm_num_groups,
                cfg.cross_attention_dim,
                cfg.transformer_depth,
                vb,
            )
        };
        let mut down = Vec::with_capacity(n);
        for i in 0..n {
            let vb = vb.pp(format!("down_blocks.{i}"));
            let c_in = if i == 0 { ch[0] } else { ch[i - 1] };
            let c = ch[i];
            let mut resnets = Vec::new();
            let mut attentions = Vec::new();
            for j in 0..cfg.layers_per_block {
                let r_in = if j == 0 { c_in } else { c };
                resnets.push(Resnet::new(r_in, c, cfg, vb.pp(format!("resnets.{j}")))?);
                if cfg.cross_attention[i] {
                    attentions.push(transformer(c, vb.pp(format!("attentions.{j}")))?);
                }
            }
            let sampler = if i + 1 < n {
                let cfg2 = candle_nn::Conv2dConfig {
                    padding: 1,
                    stride: 2,
                    ..Default::default()
                };
                Some(fast_conv2d(c, c, 3, cfg2, vb.pp("downsamplers.0.conv"))?)
            } else {
                None
            };
            down.push(Level {
                resnets,
                attentions,
                motion: Vec::new(),
                sampler,
                channels: c,
            });
        }
        let c_mid = ch[n - 1];
        let mvb = vb.pp("mid_block");
        let mid = Level {
            resnets: vec![
                Resnet::new(c_mid, c_mid, cfg, mvb.pp("resnets.0"))?,
                Resnet::new(c_mid, c_mid, cfg, mvb.pp("resnets.1"))?,
            ],
            attentions: vec![transformer(c_mid, mvb.pp("attentions.0"))?],
            motion: Vec::new(),
            sampler: None,
            channels: c_mid,
        };
        let rev: Vec<usize> = ch.iter().rev().copied().collect();
        let mut up = Vec::with_capacity(n);
        for i in 0..n {
            let vb = vb.pp(format!("up_blocks.{i}"));
            let c = rev[i];
            let prev = if i == 0 { rev[0] } else { rev[i - 1] };
            let c_skip_last = rev[(i + 1).min(n - 1)];
            let attn = cfg.cross_attention[n - 1 - i];
            let mut resnets = Vec::new();
            let mut attentions = Vec::new();
            for j in 0..=cfg.layers_per_block {
                let skip = if j == cfg.layers_per_block {
                    c_skip_last
                } else {
                    c
                };
                let r_in = if j == 0 { prev } else { c };
                resnets.push(Resnet::new(
                    r_in + skip,
                    c,
                    cfg,
                    vb.pp(format!("resnets.{j}")),
                )?);
                if attn {
                    attentions.push(transformer(c, vb.pp(format!("attentions.{j}")))?);
                }
            }
            let sampler = if i + 1 < n {
                Some(fast_conv2d(c, c, 3, conv3, vb.pp("upsamplers.0.conv"))?)
            } else {
                None
            };
            up.push(Level {
                resnets,
                attentions,
                motion: Vec::new(),
                sampler,
                channels: c,
            });
        }
        Ok(Self {
            cfg: cfg.clone(),
            conv_in: fast_conv2d(cfg.in_channels, ch[0], 3, conv3, vb.pp("conv_in"))?,
            time_1: candle_nn::linear(
                ch[0],
                cfg.time_embed_dim(),
                vb.pp("time_embedding.linear_1"),
            )?,
            time_2: candle_nn::linear(
                cfg.time_embed_dim(),
                cfg.time_embed_dim(),
                vb.pp("time_embedding.linear_2"),
            )?,
            down,
            mid,
            up,
            norm_out: group_norm(
                cfg.norm_num_groups,
                ch[0],
                cfg.norm_eps,
                vb.pp("conv_norm_out"),
            )?,
            conv_out: fast_conv2d(ch[0], cfg.out_channels, 3, conv3, vb.pp("conv_out"))?,
            motion: false,
            layer_attn: false,
            dtype: vb.dtype(),
        })
    }

    /// Inserts the motion modules of a diffusers `MotionAdapter` (`down_blocks.N.motion_modules.M`,
    /// `mid_block.motion_modules.0` when the config says so, `up_blocks.N.motion_modules.M`).
    pub fn with_motion(mut self, vb: VarBuilder) -> Result<Self> {
        let cfg = self.cfg.clone();
        for (i, level) in self.down.iter_mut().enumerate() {
            level.motion = (0..cfg.layers_per_block)
                .map(|j| {
                    MotionModule::new(
                        cfg.motion(level.channels),
                        vb.pp(format!("down_blocks.{i}.motion_modules.{j}")),
                    )
                })
                .collect::<Result<_>>()?;
        }
        if cfg.motion_mid_block {
            self.mid.motion = vec![MotionModule::new(
                cfg.motion(self.mid.channels),
                vb.pp("mid_block.motion_modules.0"),
            )?];
        }
        for (i, level) in self.up.iter_mut().enumerate() {
            level.motion = (0..=cfg.layers_per_block)
                .map(|j| {
                    MotionModule::new(
                        cfg.motion(level.channels),
                        vb.pp(format!("up_blocks.{i}.motion_modules.{j}")),
                    )
                })
                .collect::<Result<_>>()?;
        }
        self.motion = true;
        Ok(self)
    }

    /// Replaces every spatial attention module with LayerDiffuse's unit from `vb` (keys
    /// `hookers.{i}.…` or `hookers.layers.{i}.…`, index order of [`LayerAttnLayout`]), LoRA rank
    /// `rank` (256 in the published file).
    pub fn with_layer_attention(mut self, rank: usize, vb: VarBuilder) -> Result<Self> {
        let prefix = layer_attn_prefix(&vb);
        let layout = LayerAttnLayout::new(&self.cfg);
        let mut unit = 0usize;
        let mut replace = |t: &mut SpatialTransformer| -> Result<()> {
            for block in t.blocks_mut().iter_mut() {
                let a1 = vb.pp(format!("{prefix}.{unit}"));
                let a2 = vb.pp(format!("{prefix}.{}", unit + 1));
                *block = block.clone().with_layer_diffuse(rank, &a1, &a2)?;
                unit += 2;
            }
            Ok(())
        };
        // Order: down levels, then up levels, then the mid block (LayerDiffuse's mapping).
        for level in self.down.iter_mut().chain(self.up.iter_mut()) {
            for t in level.attentions.iter_mut() {
                replace(t)?;
            }
        }
        for t in self.mid.attentions.iter_mut() {
            replace(t)?;
        }
        if unit != layout.units().len() {
            bail!(
                "LayerDiffuse attention: replaced {unit} modules, the layout has {}",
                layout.units().len()
            );
        }
        self.layer_attn = true;
        Ok(self)
    }

    /// The configuration.
    pub fn config(&self) -> &MotionUNetConfig {
        &self.cfg
    }

    /// Whether motion modules are loaded.
    pub fn has_motion(&self) -> bool {
        self.motion
    }

    /// Whether LayerDiffuse's attention units replace the spatial attention.
    pub fn has_layer_attention(&self) -> bool {
        self.layer_attn
    }

    /// The dtype of the weights (inputs are converted to it).
    pub fn dtype(&self) -> DType {
        self.dtype
    }

    /// One UNet pass: `x` `[clips * frames, in_channels, h, w]`, `context`
    /// `[clips * frames, tokens, cross_attention_dim]`, all frames of a clip at once (no
    /// context windows: see [`MotionUNet::forward_windowed`]). Returns the predicted noise in
    /// `x`'s dtype.
    pub fn forward(
        &self,
        x: &Tensor,
        timestep: f64,
        context: &Tensor,
        frames: usize,
    ) -> Result<Tensor> {
        let (bf, c, _, _) = x.dims4()?;
        if c != self.cfg.in_channels {
            bail!(
                "UNet: input has {c} channels, expected {}",
                self.cfg.in_channels
            );
        }
        if context.dim(0)? != bf || context.dims().len() != 3 {
            bail!(
                "UNet: context {:?} does not give one [tokens, dim] per frame of {bf}",
                context.dims()
            );
        }
        if frames == 0 || !bf.is_multiple_of(frames) {
            bail!("UNet: batch {bf} is not a whole number of {frames}-frame clips");
        }
        let in_dtype = x.dtype();
        let x = x.to_dtype(self.dtype)?;
        let context = context.to_dtype(self.dtype)?;
        let dev = x.device();
        let t = timestep_features(&[timestep as f32], self.cfg.block_out_channels[0], dev)?
            .to_dtype(self.dtype)?;
        let emb = self.time_2.forward(&self.time_1.forward(&t)?.silu()?)?;
        let emb_act = emb.silu()?;

        let mut h = self.conv_in.forward(&x)?;
        let mut skips = vec![h.clone()];
        for level in &self.down {
            for j in 0..level.resnets.len() {
                h = level.layer(j, &h, &emb_act, &context, frames)?;
                skips.push(h.clone());
            }
            if let Some(d) = &level.sampler {
                h = d.forward(&h)?;
                skips.push(h.clone());
            }
        }
        h = self.mid.resnets[0].forward(&h, &emb_act)?;
        h = self.mid.attentions[0].forward(&h, &context)?;
        if let Some(m) = self.mid.motion.first() {
            h = m.forward(&h, frames)?;
        }
        h = self.mid.resnets[1].forward(&h, &emb_act)?;
        for level in &self.up {
            for j in 0..level.resnets.len() {
                let skip = skips.pop().ok_or_else(|| {
                    candle_core::Error::Msg("UNet: skip connections ran out".into())
                })?;
                h = Tensor::cat(&[&h, &skip], 1)?;
                h = level.layer(j, &h, &emb_act, &context, frames)?;
            }
            if let Some(u) = &level.sampler {
                let (_, _, hh, ww) = h.dims4()?;
                h = match skips.last() {
                    Some(s) if s.dims4()?.2 != 2 * hh || s.dims4()?.3 != 2 * ww => {
                        let (_, _, th, tw) = s.dims4()?;
                        h.upsample_nearest2d(th, tw)?
                    }
                    _ => upsample_nearest2x(&h)?,
                };
                h = u.forward(&h)?;
            }
        }
        let h = self.norm_out.forward_act(&h, Activation::Silu)?;
        self.conv_out.forward(&h)?.to_dtype(in_dtype)
    }

    /// [`MotionUNet::forward`] over clips of any length: clips longer than
    /// `config().context_frames` run as overlapping windows (stride `context_frames −
    /// context_overlap`, the last window aligned to the clip's end) and each frame's noise is
    /// the mean over the windows that hold it. Without motion modules frames are independent,
    /// so the clip runs whole.
    pub fn forward_windowed(
        &self,
        x: &Tensor,
        timestep: f64,
        context: &Tensor,
        frames: usize,
    ) -> Result<Tensor> {
        let window = self.cfg.context_frames.min(self.cfg.motion_max_frames);
        if !self.motion || frames <= window {
            return self.forward(x, timestep, context, frames);
        }
        let bf = x.dim(0)?;
        if !bf.is_multiple_of(frames) {
            bail!("UNet: batch {bf} is not a whole number of {frames}-frame clips");
        }
        let clips = bf / frames;
        let windows = context_windows(frames, window, self.cfg.context_overlap);
        let mut sum: Option<Tensor> = None;
        let mut count = vec![0f32; frames];
        for w in &windows {
            let idx: Vec<u32> = (0..clips)
                .flat_map(|c| w.clone().map(move |f| (c * frames + f) as u32))
                .collect();
            let idx_t = Tensor::new(idx.as_slice(), x.device())?;
            let out = self.forward(
                &x.index_select(&idx_t, 0)?,
                timestep,
                &context.index_select(&idx_t, 0)?,
                w.len(),
            )?;
            let out = out.to_dtype(DType::F32)?;
            let acc = match sum.take() {
                Some(s) => s,
                None => {
                    let (_, c, h, w) = out.dims4()?;
                    Tensor::zeros((bf, c, h, w), DType::F32, x.device())?
                }
            };
            sum = Some(acc.index_add(&idx_t, &out, 0)?);
            for f in w.clone() {
                count[f] += 1.0;
            }
        }
        let sum = sum.ok_or_else(|| candle_core::Error::Msg("UNet: no context window".into()))?;
        let weights: Vec<f32> = (0..bf).map(|i| 1.0 / count[i % frames]).collect();
        let weights = Tensor::from_vec(weights, (bf, 1, 1, 1), x.device())?;
        sum.broadcast_mul(&weights)?.to_dtype(x.dtype())
    }
}

/// Overlapping windows of `window` frames covering `0..frames`: stride `window − overlap`,
/// the last window ending at the last frame, every frame in at least one window.
pub fn context_windows(
    frames: usize,
    window: usize,
    overlap: usize,
) -> Vec<std::ops::Range<usize>> {
    if frames <= window || window == 0 {
        return std::iter::once(0..frames).collect();
    }
    let stride = window.saturating_sub(overlap).max(1);
    let mut out = Vec::new();
    let mut start = 0;
    loop {
        if start + window >= frames {
            out.push(frames - window..frames);
            break;
        }
        out.push(start..start + window);
        start += stride;
    }
    out
}

impl crate::model::diffusion::Denoiser for MotionUNet {
    /// Runs [`MotionUNet::forward_windowed`]: clips longer than the motion modules' window are
    /// denoised in overlapping windows, averaged per frame.
    fn predict_noise(
        &self,
        latents: &Tensor,
        timestep: f64,
        context: &Tensor,
        frames: usize,
    ) -> Result<Tensor> {
        self.forward_windowed(latents, timestep, context, frames)
    }

    fn latent_channels(&self) -> usize {
        self.cfg.out_channels
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn windows_cover_every_frame_with_the_given_overlap() {
        let whole = |w: Vec<std::ops::Range<usize>>| w.len() == 1 && w[0].start == 0;
        assert!(whole(context_windows(16, 16, 4)) && context_windows(16, 16, 4)[0].end == 16);
        assert!(whole(context_windows(8, 16, 4)) && context_windows(8, 16, 4)[0].end == 8);
        assert_eq!(context_windows(24, 16, 4), vec![0..16, 8..24]);
        assert_eq!(context_windows(40, 16, 4), vec![0..16, 12..28, 24..40]);
        for (frames, window, overlap) in [(17, 16, 4), (33, 16, 8), (50, 16, 0), (9, 8, 7)] {
            let w = context_windows(frames, window, overlap);
            for f in 0..frames {
                assert!(
                    w.iter().any(|r| r.contains(&f)),
                    "{frames}/{window}: frame {f}"
                );
            }
            assert!(w.iter().all(|r| r.len() == window && r.end <= frames));
        }
    }

    #[test]
    fn timestep_features_match_diffusers_layout() {
        let t = timestep_features(&[10.0], 8, &candle_core::Device::Cpu).expect("features");
        let v: Vec<f32> = t.flatten_all().and_then(|t| t.to_vec1()).expect("values");
        // cos first (flip_sin_to_cos), frequencies exp(-ln(1e4) * i / 4).
        for i in 0..4 {
            let a = 10.0 * (-(10000f64.ln()) * i as f64 / 4.0).exp();
            assert!((f64::from(v[i]) - a.cos()).abs() < 1e-5);
            assert!((f64::from(v[4 + i]) - a.sin()).abs() < 1e-5);
        }
    }

    #[test]
    fn bad_configs_are_refused() {
        let mut c = MotionUNetConfig::tiny();
        c.cross_attention.pop();
        assert!(c.validate().is_err());
        let mut c = MotionUNetConfig::tiny();
        c.norm_num_groups = 5;
        assert!(c.validate().is_err());
        let mut c = MotionUNetConfig::tiny();
        c.context_overlap = c.context_frames;
        assert!(c.validate().is_err());
        assert!(MotionUNetConfig::sd15().validate().is_ok());
    }
}

//! The embedded generator's denoiser: a small latent video UNet over the small codec's
//! 4-channel, 1/8-resolution latents (32² for a 256² sticker).
//!
//! ```text
//! conv_in 3x3 (4 -> c0)
//! down level i (c_i, at 32²/2^i):  layers x Block(res -> temporal -> [cross-attn]), then a
//!                                  stride-2 3x3 conv (not after the last level)
//! mid (c_last):                    Block(res -> temporal -> self-attn + cross-attn), Block(res
//!                                  -> temporal)
//! up level i (reversed):           up_layers x Block on [h, skip] concatenated (the latest
//!                                  skips of that resolution), then nearest x2 (no conv: the next
//!                                  block's 3x3 conv follows at once)
//! out: GroupNorm -> SiLU -> conv 3x3 (c0 -> 4)
//! ```
//!
//! **Factorised space-time.** Frames are the batch (`[clips * frames, C, h, w]`, as
//! [`Denoiser`] fixes); every 2-D layer sees one frame. Frames meet only in the *temporal
//! layers*, one after every resnet: GroupNorm, a per-pixel 1-D convolution over time (3 taps,
//! 1x1 in space, **circular** padding because every sticker loops, so the first and last frame
//! are neighbours), SiLU and a zero-initialised 1x1 projection added back. A fresh model is
//! therefore an image model run per frame (as AnimateDiff starts its motion modules), and the
//! temporal layers learn motion from there. Twelve such layers give each pixel a receptive field
//! of the whole 16-frame loop. At the levels in `temporal_attn_levels` a temporal
//! self-attention (each pixel position over all frames of its clip) follows the convolution,
//! so every frame can read every other directly.
//!
//! **Conditioning.** The timestep (sinusoidal embedding -> MLP) plus the mean of the word
//! context (a linear map; FiLM-like, so even a level without attention knows the prompt) is
//! added to every resnet after its first conv. At the levels listed in `attn_levels` and in
//! the mid block, pixels attend to the words (multi-head cross-attention with the differentiable
//! softmax; the fused `softmax_last_dim` has no backward). The mid block also has spatial
//! self-attention per frame (8² tokens: cheap, and it gives a global view of the shape).
//! Attention and temporal outputs start at zero.
//!
//! Convolutions and GroupNorms use [`crate::model::fastconv`] for a fast CPU backward.

use candle_core::{D, DType, Result, Tensor, bail};
use candle_nn::{Conv2dConfig, Init, Linear, Module, VarBuilder};
use serde::{Deserialize, Serialize};

use crate::model::codec::{CODEC_FACTOR, LATENT_CHANNELS};
use crate::model::diffusion::{Denoiser, timestep_features};
use crate::model::fastconv::{
    Activation, FastConv2d, FusedGroupNorm, fast_conv2d, group_norm, upsample_nearest2x,
};

/// Shape of a [`GenUnet`].
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct GenUnetConfig {
    /// Channels per level, finest first; each further level halves the resolution.
    pub channels: Vec<usize>,
    /// Resnet blocks per down level.
    pub layers: usize,
    /// Resnet blocks per up level, each fed one skip of its resolution, latest first (SD's
    /// UNet has `layers + 1`, using every skip; fewer saves a third of the cost).
    pub up_layers: usize,
    /// Levels (indices into `channels`) with cross-attention to the words.
    pub attn_levels: Vec<usize>,
    /// Attention heads (must divide every attended level's channels).
    pub heads: usize,
    /// GroupNorm groups everywhere.
    pub norm_groups: usize,
    /// Width of the word context (the conditioner's embedding width).
    pub context_dim: usize,
    /// Width of the sinusoidal timestep features (the MLP widens them to 4 x channels[0]).
    pub time_dim: usize,
    /// Levels (indices into `channels`; the last one includes the mid blocks) whose blocks
    /// also have temporal self-attention after the temporal convolution. Files written before
    /// it existed have none.
    #[serde(default)]
    pub temporal_attn_levels: Vec<usize>,
}

impl Default for GenUnetConfig {
    /// The shipped default: 32/64/96 channels at 32²/16²/8² latents, one resnet per level
    /// down and up, temporal attention at every level, cross-attention at 16² and 8². About
    /// 0.23 G multiply-adds (0.45 GFLOP) per 32² frame (see [`GenUnet::macs_per_frame`]; the
    /// temporal attention adds 8 % to 0.21 G) and 1.77 M parameters.
    fn default() -> Self {
        Self {
            channels: vec![32, 64, 96],
            layers: 1,
            up_layers: 1,
            attn_levels: vec![1, 2],
            heads: 4,
            norm_groups: 8,
            context_dim: 128,
            time_dim: 64,
            temporal_attn_levels: vec![0, 1, 2],
        }
    }
}

impl GenUnetConfig {
    /// A tiny shape for tests.
    pub fn tiny() -> Self {
        Self {
            channels: vec![8, 16],
            layers: 1,
            up_layers: 2,
            attn_levels: vec![1],
            heads: 2,
            norm_groups: 4,
            context_dim: 8,
            time_dim: 8,
            temporal_attn_levels: vec![1],
        }
    }

    /// Checks the numbers fit together.
    pub fn validate(&self) -> Result<()> {
        let g = self.norm_groups;
        if self.channels.is_empty() || self.layers == 0 || self.heads == 0 {
            bail!("generator UNet: needs at least one level, one layer and one head: {self:?}");
        }
        if self.up_layers == 0 || self.up_layers > self.layers + 1 {
            bail!(
                "generator UNet: up_layers {} must be 1..={} (one skip each)",
                self.up_layers,
                self.layers + 1
            );
        }
        for &c in &self.channels {
            if c == 0 || g == 0 || !c.is_multiple_of(g) {
                bail!("generator UNet: {c} channels are not a positive multiple of {g} groups");
            }
        }
        let last = self.channels.len() - 1;
        for &l in self.attn_levels.iter().chain(std::iter::once(&last)) {
            let Some(&c) = self.channels.get(l) else {
                bail!("generator UNet: attention level {l} does not exist");
            };
            if !c.is_multiple_of(self.heads) {
                bail!(
                    "generator UNet: {} heads do not divide {c} channels",
                    self.heads
                );
            }
        }
        for &l in &self.temporal_attn_levels {
            match self.channels.get(l) {
                None => bail!("generator UNet: temporal attention level {l} does not exist"),
                Some(c) if !c.is_multiple_of(self.heads) => bail!(
                    "generator UNet: {} heads do not divide {c} channels",
                    self.heads
                ),
                Some(_) => {}
            }
        }
        if self.context_dim == 0 || self.time_dim < 2 || !self.time_dim.is_multiple_of(2) {
            bail!("generator UNet: context_dim must be positive and time_dim even");
        }
        Ok(())
    }

    /// Latent sides must be multiples of this.
    pub fn size_multiple(&self) -> usize {
        1 << (self.channels.len() - 1)
    }

    fn temb_dim(&self) -> usize {
        4 * self.channels[0]
    }
}

/// Multiply-adds of convolutions and projections, per latent pixel of level 0 (a level-`l`
/// pixel counts 4^-l).
#[derive(Debug, Default)]
struct Cost(f64);

impl Cost {
    fn conv(&mut self, c_in: usize, c_out: usize, k: usize, level: usize) {
        self.0 += (c_in * c_out * k * k) as f64 / 4f64.powi(level as i32);
    }
}

fn conv(c_in: usize, c_out: usize, k: usize, stride: usize, vb: VarBuilder) -> Result<FastConv2d> {
    let cfg = Conv2dConfig {
        padding: k / 2,
        stride,
        ..Default::default()
    };
    fast_conv2d(c_in, c_out, k, cfg, vb)
}

/// A 1x1 conv whose weight and bias start at zero (residual branches start as the identity).
fn zero_conv(c_in: usize, c_out: usize, vb: VarBuilder) -> Result<FastConv2d> {
    let w = vb.get_with_hints((c_out, c_in, 1, 1), "weight", Init::Const(0.0))?;
    let b = vb.get_with_hints(c_out, "bias", Init::Const(0.0))?;
    Ok(FastConv2d::new(w, Some(b), Conv2dConfig::default()))
}

/// `[G, S, C]` queries attend to `[G, L, C]` keys/values with `heads` heads -> `[G, S, C]`.
fn attend(q: &Tensor, k: &Tensor, v: &Tensor, heads: usize) -> Result<Tensor> {
    let (g, s, c) = q.dims3()?;
    let l = k.dim(1)?;
    let d = c / heads;
    let split = |x: &Tensor, n: usize| -> Result<Tensor> {
        x.reshape((g, n, heads, d))?
            .transpose(1, 2)?
            .contiguous()?
            .reshape((g * heads, n, d))
    };
    let (q, k, v) = (split(q, s)?, split(k, l)?, split(v, l)?);
    let scores = (q.matmul(&k.t()?)? * (1.0 / (d as f64).sqrt()))?;
    let p = candle_nn::ops::softmax(&scores, D::Minus1)?;
    p.matmul(&v)?
        .reshape((g, heads, s, d))?
        .transpose(1, 2)?
        .contiguous()?
        .reshape((g, s, c))
}

/// `[N, C, H, W]` -> `[N, H*W, C]`.
fn to_tokens(x: &Tensor) -> Result<Tensor> {
    let (n, c, h, w) = x.dims4()?;
    x.reshape((n, c, h * w))?.transpose(1, 2)?.contiguous()
}

/// `[N, H*W, C]` -> `[N, C, H, W]`.
fn from_tokens(x: &Tensor, h: usize, w: usize) -> Result<Tensor> {
    let (n, _, c) = x.dims3()?;
    x.transpose(1, 2)?.contiguous()?.reshape((n, c, h, w))
}

#[derive(Debug, Clone)]
struct ResBlock {
    norm1: FusedGroupNorm,
    conv1: FastConv2d,
    temb: Linear,
    norm2: FusedGroupNorm,
    conv2: FastConv2d,
    skip: Option<FastConv2d>,
}

impl ResBlock {
    fn new(
        c_in: usize,
        c_out: usize,
        cfg: &GenUnetConfig,
        level: usize,
        cost: &mut Cost,
        vb: VarBuilder,
    ) -> Result<Self> {
        let g = cfg.norm_groups;
        cost.conv(c_in, c_out, 3, level);
        cost.conv(c_out, c_out, 3, level);
        let skip = if c_in != c_out {
            cost.conv(c_in, c_out, 1, level);
            Some(conv(c_in, c_out, 1, 1, vb.pp("skip"))?)
        } else {
            None
        };
        Ok(Self {
            norm1: group_norm(g, c_in, 1e-5, vb.pp("norm1"))?,
            conv1: conv(c_in, c_out, 3, 1, vb.pp("conv1"))?,
            temb: candle_nn::linear(cfg.temb_dim(), c_out, vb.pp("temb"))?,
            norm2: group_norm(g, c_out, 1e-5, vb.pp("norm2"))?,
            conv2: conv(c_out, c_out, 3, 1, vb.pp("conv2"))?,
            skip,
        })
    }

    /// `temb` is SiLU(embedding) per frame, `[N, temb_dim]`.
    fn forward(&self, x: &Tensor, temb: &Tensor) -> Result<Tensor> {
        let h = self
            .conv1
            .forward(&self.norm1.forward_act(x, Activation::Silu)?)?;
        let h = h.broadcast_add(&self.temb.forward(temb)?.unsqueeze(2)?.unsqueeze(3)?)?;
        let h = self
            .conv2
            .forward(&self.norm2.forward_act(&h, Activation::Silu)?)?;
        let skip = match &self.skip {
            Some(s) => s.forward(x)?,
            None => x.clone(),
        };
        skip + h
    }
}

/// The temporal layer: `x + proj(SiLU(tconv(GN(x))))` with a circular 3-tap conv over frames.
#[derive(Debug, Clone)]
struct Temporal {
    norm: FusedGroupNorm,
    /// The three taps stacked on the output channels: rows `k*C..(k+1)*C` act on frame
    /// `t - 1 + k`.
    taps: FastConv2d,
    proj: FastConv2d,
}

impl Temporal {
    fn new(c: usize, g: usize, level: usize, cost: &mut Cost, vb: VarBuilder) -> Result<Self> {
        cost.conv(c, 3 * c, 1, level);
        cost.conv(c, c, 1, level);
        Ok(Self {
            norm: group_norm(g, c, 1e-5, vb.pp("norm"))?,
            taps: conv(c, 3 * c, 1, 1, vb.pp("taps"))?,
            proj: zero_conv(c, c, vb.pp("proj"))?,
        })
    }

    fn forward(&self, x: &Tensor, frames: usize) -> Result<Tensor> {
        let (n, c, h, w) = x.dims4()?;
        let clips = n / frames;
        let y = self.taps.forward(&self.norm.forward(x)?)?;
        let y = y.reshape((clips, frames, 3, c, h * w))?;
        let tap = |k: usize| -> Result<Tensor> { y.narrow(2, k, 1)?.squeeze(2) };
        // Circular shifts: `prev[t] = tap0[t - 1]`, `next[t] = tap2[t + 1]`.
        let roll = |t: &Tensor, by: usize| -> Result<Tensor> {
            if frames == 1 {
                return Ok(t.clone());
            }
            Tensor::cat(
                &[t.narrow(1, frames - by, by)?, t.narrow(1, 0, frames - by)?],
                1,
            )
        };
        let prev = roll(&tap(0)?, 1)?;
        let next = roll(&tap(2)?, frames - 1)?;
        let mixed = ((prev + tap(1)?)? + next)?.reshape((n, c, h, w))?;
        x + self.proj.forward(&candle_nn::ops::silu(&mixed)?)?
    }
}

/// Temporal self-attention: each pixel position attends to the same position in every frame
/// of its clip, `x + out(attn(GN(x)))`. Why, beside the 3-tap convolution: a convolution
/// passes content one frame per layer, so a sticker's look drifts along the loop; attention
/// lets every frame read every other at once, which is what keeps the subject the same
/// across the clip (AnimateDiff's motion modules are such layers). No position encoding: the
/// convolution before it already tells neighbours apart, and attention without one treats
/// the loop's seam like any other pair of frames. Output starts at zero.
#[derive(Debug, Clone)]
struct TemporalAttention {
    heads: usize,
    norm: FusedGroupNorm,
    qkv: FastConv2d,
    out: FastConv2d,
}

impl TemporalAttention {
    fn new(
        c: usize,
        cfg: &GenUnetConfig,
        level: usize,
        cost: &mut Cost,
        vb: VarBuilder,
    ) -> Result<Self> {
        cost.conv(c, 4 * c, 1, level);
        Ok(Self {
            heads: cfg.heads,
            norm: group_norm(cfg.norm_groups, c, 1e-5, vb.pp("norm"))?,
            qkv: conv(c, 3 * c, 1, 1, vb.pp("qkv"))?,
            out: zero_conv(c, c, vb.pp("out"))?,
        })
    }

    fn forward(&self, x: &Tensor, frames: usize) -> Result<Tensor> {
        let (n, c, h, w) = x.dims4()?;
        if frames == 1 {
            return Ok(x.clone());
        }
        let clips = n / frames;
        // [clips*frames, 3c, h, w] -> [clips*h*w, frames, 3c]
        let t = self
            .qkv
            .forward(&self.norm.forward(x)?)?
            .reshape((clips, frames, 3 * c, h * w))?
            .permute((0, 3, 1, 2))?
            .contiguous()?
            .reshape((clips * h * w, frames, 3 * c))?;
        let (q, k, v) = (
            t.narrow(2, 0, c)?,
            t.narrow(2, c, c)?,
            t.narrow(2, 2 * c, c)?,
        );
        let a = attend(
            &q.contiguous()?,
            &k.contiguous()?,
            &v.contiguous()?,
            self.heads,
        )?
        .reshape((clips, h * w, frames, c))?
        .permute((0, 2, 3, 1))?
        .contiguous()?
        .reshape((n, c, h, w))?;
        x + self.out.forward(&a)?
    }
}

/// Multi-head attention of a level's pixels to the words (and, in the mid block, first to
/// the other pixels of the same frame).
#[derive(Debug, Clone)]
struct Attention {
    heads: usize,
    self_attn: Option<(FusedGroupNorm, FastConv2d, FastConv2d)>,
    norm: FusedGroupNorm,
    q: FastConv2d,
    k: Linear,
    v: Linear,
    out: FastConv2d,
}

impl Attention {
    fn new(
        c: usize,
        cfg: &GenUnetConfig,
        with_self: bool,
        level: usize,
        cost: &mut Cost,
        vb: VarBuilder,
    ) -> Result<Self> {
        let g = cfg.norm_groups;
        let self_attn = if with_self {
            let vs = vb.pp("self");
            cost.conv(c, 4 * c, 1, level);
            Some((
                group_norm(g, c, 1e-5, vs.pp("norm"))?,
                conv(c, 3 * c, 1, 1, vs.pp("qkv"))?,
                zero_conv(c, c, vs.pp("out"))?,
            ))
        } else {
            None
        };
        cost.conv(c, 2 * c, 1, level);
        Ok(Self {
            heads: cfg.heads,
            self_attn,
            norm: group_norm(g, c, 1e-5, vb.pp("norm"))?,
            q: conv(c, c, 1, 1, vb.pp("q"))?,
            k: candle_nn::linear_no_bias(cfg.context_dim, c, vb.pp("k"))?,
            v: candle_nn::linear_no_bias(cfg.context_dim, c, vb.pp("v"))?,
            out: zero_conv(c, c, vb.pp("out"))?,
        })
    }

    /// `x` `[clips * frames, C, h, w]`, `ctx` `[clips, L, D]`.
    fn forward(&self, x: &Tensor, ctx: &Tensor, frames: usize) -> Result<Tensor> {
        let (n, c, h, w) = x.dims4()?;
        let mut x = x.clone();
        if let Some((norm, qkv, out)) = &self.self_attn {
            let t = to_tokens(&qkv.forward(&norm.forward(&x)?)?)?;
            let (q, k, v) = (
                t.narrow(2, 0, c)?,
                t.narrow(2, c, c)?,
                t.narrow(2, 2 * c, c)?,
            );
            let a = attend(&q, &k, &v, self.heads)?;
            x = (&x + out.forward(&from_tokens(&a, h, w)?)?)?;
        }
        // Cross-attention: all pixels of a clip's frames query that clip's words.
        let clips = n / frames;
        let q = to_tokens(&self.q.forward(&self.norm.forward(&x)?)?)?.reshape((
            clips,
            frames * h * w,
            c,
        ))?;
        let (k, v) = (self.k.forward(ctx)?, self.v.forward(ctx)?);
        let a = attend(&q, &k, &v, self.heads)?.reshape((n, h * w, c))?;
        &x + self.out.forward(&from_tokens(&a, h, w)?)?
    }
}

#[derive(Debug, Clone)]
struct Block {
    res: ResBlock,
    temporal: Temporal,
    temporal_attn: Option<TemporalAttention>,
    attn: Option<Attention>,
}

impl Block {
    #[allow(clippy::too_many_arguments)]
    fn new(
        c_in: usize,
        c_out: usize,
        cfg: &GenUnetConfig,
        level: usize,
        attn: Option<bool>,
        cost: &mut Cost,
        vb: VarBuilder,
    ) -> Result<Self> {
        Ok(Self {
            res: ResBlock::new(c_in, c_out, cfg, level, cost, vb.pp("res"))?,
            temporal: Temporal::new(c_out, cfg.norm_groups, level, cost, vb.pp("temporal"))?,
            temporal_attn: if cfg.temporal_attn_levels.contains(&level) {
                Some(TemporalAttention::new(
                    c_out,
                    cfg,
                    level,
                    cost,
                    vb.pp("temporal_attn"),
                )?)
            } else {
                None
            },
            attn: attn
                .map(|with_self| Attention::new(c_out, cfg, with_self, level, cost, vb.pp("attn")))
                .transpose()?,
        })
    }

    fn forward(&self, x: &Tensor, temb: &Tensor, ctx: &Tensor, frames: usize) -> Result<Tensor> {
        let h = self.res.forward(x, temb)?;
        let mut h = self.temporal.forward(&h, frames)?;
        if let Some(ta) = &self.temporal_attn {
            h = ta.forward(&h, frames)?;
        }
        match &self.attn {
            Some(a) => a.forward(&h, ctx, frames),
            None => Ok(h),
        }
    }
}

/// The generator's denoiser (see the module docs). Weight names: `conv_in`, `time.{linear_1,
/// linear_2,words}`, `down.{i}.blocks.{j}.{res,temporal,temporal_attn,attn}`, `down.{i}.downsample`,
/// `mid.{0,1}`, `up.{i}.blocks.{j}`, `norm_out`, `conv_out`.
#[derive(Debug, Clone)]
pub struct GenUnet {
    cfg: GenUnetConfig,
    conv_in: FastConv2d,
    time_1: Linear,
    time_2: Linear,
    words: Linear,
    down: Vec<(Vec<Block>, Option<FastConv2d>)>,
    mid: [Block; 2],
    /// Finest level first (run in reverse); each is followed by a nearest x2 but level 0.
    up: Vec<Vec<Block>>,
    norm_out: FusedGroupNorm,
    conv_out: FastConv2d,
    macs_per_pixel: f64,
}

impl GenUnet {
    pub fn new(cfg: &GenUnetConfig, vb: VarBuilder) -> Result<Self> {
        cfg.validate()?;
        let ch = &cfg.channels;
        let levels = ch.len();
        let mut cost = Cost::default();
        let e = cfg.temb_dim();
        let vt = vb.pp("time");
        let time_1 = candle_nn::linear(cfg.time_dim, e, vt.pp("linear_1"))?;
        let time_2 = candle_nn::linear(e, e, vt.pp("linear_2"))?;
        let words = candle_nn::linear(cfg.context_dim, e, vt.pp("words"))?;
        cost.conv(LATENT_CHANNELS, ch[0], 3, 0);
        let conv_in = conv(LATENT_CHANNELS, ch[0], 3, 1, vb.pp("conv_in"))?;
        // Channels of the skips of each resolution, in push order: level 0 gets conv_in's
        // output, level i > 0 the downsample's, then each level its blocks' outputs.
        let mut skips: Vec<Vec<usize>> = vec![vec![ch[0]]];
        let mut down = Vec::new();
        let mut c_prev = ch[0];
        for (i, &c) in ch.iter().enumerate() {
            let vd = vb.pp("down").pp(i);
            let attn = cfg.attn_levels.contains(&i).then_some(false);
            let mut blocks = Vec::new();
            for j in 0..cfg.layers {
                blocks.push(Block::new(
                    c_prev,
                    c,
                    cfg,
                    i,
                    attn,
                    &mut cost,
                    vd.pp("blocks").pp(j),
                )?);
                c_prev = c;
                skips[i].push(c);
            }
            let ds = if i + 1 < levels {
                cost.conv(c, c, 3, i + 1);
                skips.push(vec![c]);
                Some(conv(c, c, 3, 2, vd.pp("downsample"))?)
            } else {
                None
            };
            down.push((blocks, ds));
        }
        let last = levels - 1;
        let c = ch[last];
        let vm = vb.pp("mid");
        let mid = [
            Block::new(c, c, cfg, last, Some(true), &mut cost, vm.pp(0))?,
            Block::new(c, c, cfg, last, None, &mut cost, vm.pp(1))?,
        ];
        let mut up_rev = Vec::new();
        for i in (0..levels).rev() {
            let vu = vb.pp("up").pp(i);
            let c = ch[i];
            let attn = cfg.attn_levels.contains(&i).then_some(false);
            let mut blocks = Vec::new();
            for j in 0..cfg.up_layers {
                let skip = skips[i].pop().unwrap_or(0);
                blocks.push(Block::new(
                    c_prev + skip,
                    c,
                    cfg,
                    i,
                    attn,
                    &mut cost,
                    vu.pp("blocks").pp(j),
                )?);
                c_prev = c;
            }
            up_rev.push(blocks);
        }
        up_rev.reverse();
        cost.conv(ch[0], LATENT_CHANNELS, 3, 0);
        Ok(Self {
            cfg: cfg.clone(),
            conv_in,
            time_1,
            time_2,
            words,
            down,
            mid,
            up: up_rev,
            norm_out: group_norm(cfg.norm_groups, ch[0], 1e-5, vb.pp("norm_out"))?,
            conv_out: conv(ch[0], LATENT_CHANNELS, 3, 1, vb.pp("conv_out"))?,
            macs_per_pixel: cost.0,
        })
    }

    pub fn config(&self) -> &GenUnetConfig {
        &self.cfg
    }

    /// Multiply-adds of the convolutions and projections for one frame of `h` x `w` latents
    /// (attention score products and norms excluded: a few per cent at these sizes).
    pub fn macs_per_frame(&self, h: usize, w: usize) -> f64 {
        self.macs_per_pixel * (h * w) as f64
    }

    /// Sinusoidal features of timesteps `[clips]` -> `[clips, time_dim]` (cos half, sin half).
    fn time_features(&self, t: &Tensor) -> Result<Tensor> {
        let ts: Vec<f32> = t.to_dtype(DType::F32)?.to_vec1()?;
        timestep_features(&ts, self.cfg.time_dim, t.device())
    }

    /// Predicts the noise: `x` `[clips * frames, 4, h, w]` (normalised latents, see
    /// `GenModel`), `timesteps` `[clips]` (0..=999, one per clip), `ctx` `[clips, L,
    /// context_dim]` from the word conditioner.
    pub fn forward(
        &self,
        x: &Tensor,
        timesteps: &Tensor,
        ctx: &Tensor,
        frames: usize,
    ) -> Result<Tensor> {
        let (n, c, h, w) = x.dims4()?;
        let m = self.cfg.size_multiple();
        if c != LATENT_CHANNELS || frames == 0 || n % frames != 0 || h % m != 0 || w % m != 0 {
            bail!(
                "generator UNet: latents are {:?}; expected [clips * {frames}, {LATENT_CHANNELS}, h, w] with h and w multiples of {m}",
                x.dims()
            );
        }
        let clips = n / frames;
        let (cb, _, cd) = ctx.dims3()?;
        if cb != clips || cd != self.cfg.context_dim || timesteps.dims() != [clips] {
            bail!(
                "generator UNet: context {:?} / timesteps {:?} do not fit {clips} clips (context width {})",
                ctx.dims(),
                timesteps.dims(),
                self.cfg.context_dim
            );
        }
        let t = self.time_features(timesteps)?;
        let t = self
            .time_2
            .forward(&candle_nn::ops::silu(&self.time_1.forward(&t)?)?)?;
        let temb = (t + self.words.forward(&ctx.mean(1)?)?)?;
        let e = temb.dim(1)?;
        let temb = candle_nn::ops::silu(&temb)?
            .unsqueeze(1)?
            .broadcast_as((clips, frames, e))?
            .reshape((n, e))?;

        let mut hs = self.conv_in.forward(x)?;
        let mut skips = vec![vec![hs.clone()]];
        for (i, (blocks, ds)) in self.down.iter().enumerate() {
            for b in blocks {
                hs = b.forward(&hs, &temb, ctx, frames)?;
                skips[i].push(hs.clone());
            }
            if let Some(ds) = ds {
                hs = ds.forward(&hs)?;
                skips.push(vec![hs.clone()]);
            }
        }
        for b in &self.mid {
            hs = b.forward(&hs, &temb, ctx, frames)?;
        }
        for (i, blocks) in self.up.iter().enumerate().rev() {
            for b in blocks {
                let skip = skips[i]
                    .pop()
                    .ok_or_else(|| candle_core::Error::Msg("generator UNet: skip stack".into()))?;
                hs = b.forward(&Tensor::cat(&[&hs, &skip], 1)?, &temb, ctx, frames)?;
            }
            if i > 0 {
                hs = upsample_nearest2x(&hs)?;
            }
        }
        self.conv_out
            .forward(&self.norm_out.forward_act(&hs, Activation::Silu)?)
    }
}

/// Brings a context to one row per clip: `[clips, L, D]` as is, `[1, L, D]` repeated, or the
/// SD-style `[clips * frames, L, D]` (the first frame's row of each clip).
pub fn context_per_clip(ctx: &Tensor, clips: usize, frames: usize) -> Result<Tensor> {
    let (b, l, d) = ctx.dims3()?;
    if b == clips {
        Ok(ctx.clone())
    } else if b == 1 {
        ctx.broadcast_as((clips, l, d))?.contiguous()
    } else if b == clips * frames {
        ctx.reshape((clips, frames, l, d))?
            .narrow(1, 0, 1)?
            .squeeze(1)
    } else {
        bail!(
            "generator: context {:?} fits neither {clips} clips nor {} frames",
            ctx.dims(),
            clips * frames
        )
    }
}

impl Denoiser for GenUnet {
    fn predict_noise(
        &self,
        latents: &Tensor,
        timestep: f64,
        context: &Tensor,
        frames: usize,
    ) -> Result<Tensor> {
        let n = latents.dim(0)?;
        if frames == 0 || n % frames != 0 {
            bail!("generator: {n} latent frames are not whole clips of {frames}");
        }
        let clips = n / frames;
        let ctx = context_per_clip(context, clips, frames)?;
        let t = Tensor::from_vec(vec![timestep as f32; clips], clips, latents.device())?;
        self.forward(latents, &t, &ctx, frames)
    }

    fn latent_channels(&self) -> usize {
        LATENT_CHANNELS
    }

    fn latent_factor(&self) -> usize {
        CODEC_FACTOR
    }
}

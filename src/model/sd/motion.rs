//! AnimateDiff's motion module in diffusers' layout (`AnimateDiffTransformer3D`, as held by a
//! `MotionAdapter` under `down_blocks.N.motion_modules.M`).
//!
//! GroupNorm convention: diffusers' — the norm runs on `[B, C, F, H, W]`, so each group's
//! statistics are pooled over all frames of a clip (the original AnimateDiff code normalised
//! each frame alone). This is what the golden vector and the published diffusers checkpoints
//! were produced with. Then `proj_in`, transformer blocks whose two self-attentions run across
//! the frames at each pixel with the sinusoidal position table added to their inputs, GEGLU
//! feed-forward, `proj_out`, residual. No text, no timestep.

use candle_core::{Device, Module, Result, Tensor, bail};
use candle_nn::{Linear, VarBuilder};

use super::attention::TransformerBlock;
use crate::model::fastconv::{FusedGroupNorm, group_norm};

/// Shape facts of one motion module.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct MotionModuleConfig {
    /// Channels C of the features it sees.
    pub channels: usize,
    /// Attention heads (8 in AnimateDiff).
    pub heads: usize,
    /// GroupNorm groups (32 in AnimateDiff).
    pub groups: usize,
    /// Transformer blocks (1 in AnimateDiff v1/v2).
    pub layers: usize,
    /// Rows of the position table: the longest clip the module accepts (32 for v2, 24 for v1).
    pub max_frames: usize,
}

impl MotionModuleConfig {
    /// AnimateDiff v2's module for `channels` channels.
    pub fn animatediff(channels: usize) -> Self {
        Self {
            channels,
            heads: 8,
            groups: 32,
            layers: 1,
            max_frames: 32,
        }
    }
}

/// The sinusoidal position table `[1, len, dim]` of diffusers' `SinusoidalPositionalEmbedding`:
/// `pe[p, 2i] = sin(p·d_i)`, `pe[p, 2i+1] = cos(p·d_i)`, `d_i = exp(2i · (−ln 10000 / dim))`,
/// computed in f32 in the same order as PyTorch so it matches the published buffers bit for
/// bit or nearly so.
pub fn position_table(len: usize, dim: usize, device: &Device) -> Result<Tensor> {
    if !dim.is_multiple_of(2) {
        bail!("motion module: the position table needs an even width, got {dim}");
    }
    let step = (-(10000f64.ln()) / dim as f64) as f32;
    let mut pe = vec![0f32; len * dim];
    for p in 0..len {
        for i in 0..dim / 2 {
            let d = ((2 * i) as f32 * step).exp();
            let a = p as f32 * d;
            pe[p * dim + 2 * i] = a.sin();
            pe[p * dim + 2 * i + 1] = a.cos();
        }
    }
    Tensor::from_vec(pe, (1, len, dim), device)
}

/// One AnimateDiff motion module.
#[derive(Debug, Clone)]
pub struct MotionModule {
    cfg: MotionModuleConfig,
    norm: FusedGroupNorm,
    proj_in: Linear,
    blocks: Vec<TransformerBlock>,
    proj_out: Linear,
    pos: Tensor,
}

impl MotionModule {
    /// Loads the module's tensors under `vb` (names relative to the module: `norm.weight`,
    /// `proj_in.weight`, `transformer_blocks.0.attn1.to_q.weight`, …). A stored
    /// `transformer_blocks.N.pos_embed.pe` buffer is accepted and checked for shape
    /// `[1, max_frames, C]` but not used: the table is computed.
    pub fn new(cfg: MotionModuleConfig, vb: VarBuilder) -> Result<Self> {
        let c = cfg.channels;
        let mut blocks = Vec::with_capacity(cfg.layers);
        for i in 0..cfg.layers {
            let bvb = vb.pp(format!("transformer_blocks.{i}"));
            if bvb.contains_tensor("pos_embed.pe") {
                bvb.get((1, cfg.max_frames, c), "pos_embed.pe")?;
            }
            blocks.push(TransformerBlock::new(c, cfg.heads, None, bvb)?);
        }
        Ok(Self {
            cfg,
            norm: group_norm(cfg.groups, c, 1e-6, vb.pp("norm"))?,
            proj_in: candle_nn::linear(c, c, vb.pp("proj_in"))?,
            blocks,
            proj_out: candle_nn::linear(c, c, vb.pp("proj_out"))?,
            pos: position_table(cfg.max_frames, c, vb.device())?.to_dtype(vb.dtype())?,
        })
    }

    /// The module's configuration.
    pub fn config(&self) -> &MotionModuleConfig {
        &self.cfg
    }

    /// `x` `[clips * frames, C, H, W]`, frames of a clip consecutive; output same shape
    /// (residual included).
    pub fn forward(&self, x: &Tensor, frames: usize) -> Result<Tensor> {
        let (bf, c, h, w) = x.dims4()?;
        if frames == 0 || !bf.is_multiple_of(frames) {
            bail!("motion module: batch {bf} is not a whole number of {frames}-frame clips");
        }
        if frames > self.cfg.max_frames {
            bail!(
                "motion module: {frames} frames exceed its position table of {} (use context windows)",
                self.cfg.max_frames
            );
        }
        let b = bf / frames;
        // [B, F, C, H, W] -> [B, C, F, H, W]: diffusers' GroupNorm pools over the frames.
        let y = x
            .reshape((b, frames, c, h, w))?
            .transpose(1, 2)?
            .contiguous()?;
        let y = self.norm.forward(&y)?;
        // [B, C, F, H, W] -> [B, H, W, F, C] -> [B·H·W, F, C]
        let y = y
            .permute((0, 3, 4, 2, 1))?
            .contiguous()?
            .reshape((b * h * w, frames, c))?;
        let mut y = self.proj_in.forward(&y)?;
        let pos = self.pos.narrow(1, 0, frames)?;
        for block in &self.blocks {
            y = block.forward(&y, Some(&pos), None)?;
        }
        let y = self.proj_out.forward(&y)?;
        // [B·H·W, F, C] -> [B, H, W, F, C] -> [B, F, C, H, W]
        let y = y
            .reshape((b, h, w, frames, c))?
            .permute((0, 3, 4, 1, 2))?
            .contiguous()?
            .reshape((bf, c, h, w))?;
        y + x
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn position_table_follows_the_formula() {
        let pe = position_table(32, 320, &Device::Cpu).expect("table");
        let v: Vec<Vec<f32>> = pe.squeeze(0).and_then(|t| t.to_vec2()).expect("values");
        for (p, i) in [(0usize, 0usize), (5, 0), (7, 3), (31, 159), (16, 80)] {
            let d = (-(2.0 * i as f64) * 10000f64.ln() / 320.0).exp();
            let a = p as f64 * d;
            assert!(
                (f64::from(v[p][2 * i]) - a.sin()).abs() < 1e-5,
                "sin {p} {i}"
            );
            assert!(
                (f64::from(v[p][2 * i + 1]) - a.cos()).abs() < 1e-5,
                "cos {p} {i}"
            );
        }
        assert!(position_table(4, 7, &Device::Cpu).is_err());
    }

    #[test]
    fn frames_are_checked() {
        let cfg = MotionModuleConfig {
            channels: 8,
            heads: 2,
            groups: 2,
            layers: 1,
            max_frames: 4,
        };
        let vb = crate::model::weights::golden_var_builder(candle_core::DType::F32, &Device::Cpu);
        let m = MotionModule::new(cfg, vb).expect("module");
        let x = Tensor::zeros((6, 8, 2, 2), candle_core::DType::F32, &Device::Cpu).expect("x");
        assert!(m.forward(&x, 4).is_err(), "6 is not a multiple of 4");
        assert!(m.forward(&x, 6).is_err(), "6 frames exceed the table of 4");
        let y = m.forward(&x, 3).expect("two clips of 3");
        assert_eq!(y.dims(), x.dims());
    }

    #[test]
    fn frames_mix_only_within_a_clip() {
        // Two clips of 3 frames: changing clip 1 must leave clip 0's output unchanged, and
        // changing one frame of clip 0 must change its other frames (temporal attention).
        let cfg = MotionModuleConfig {
            channels: 8,
            heads: 2,
            groups: 2,
            layers: 1,
            max_frames: 8,
        };
        let dev = Device::Cpu;
        let vb = crate::model::weights::golden_var_builder(candle_core::DType::F32, &dev);
        let m = MotionModule::new(cfg, vb).expect("module");
        let x = Tensor::randn(0f32, 1.0, (6, 8, 3, 3), &dev).expect("x");
        let y = m.forward(&x, 3).expect("y");
        let bump = Tensor::ones((1, 8, 3, 3), candle_core::DType::F32, &dev).expect("ones");
        let edit = |i: usize| {
            let mut parts = Vec::new();
            for j in 0..6 {
                let f = x.narrow(0, j, 1).expect("frame");
                parts.push(if j == i { (f + &bump).expect("add") } else { f });
            }
            Tensor::cat(&parts, 0).expect("cat")
        };
        let diff = |a: &Tensor, b: &Tensor, j: usize| -> f32 {
            (a.narrow(0, j, 1).expect("a") - b.narrow(0, j, 1).expect("b"))
                .and_then(|d| d.abs()?.max_all()?.to_scalar::<f32>())
                .expect("diff")
        };
        let y4 = m.forward(&edit(4), 3).expect("y4");
        for j in 0..3 {
            assert_eq!(diff(&y, &y4, j), 0.0, "clip 0 frame {j} changed");
        }
        let y0 = m.forward(&edit(0), 3).expect("y0");
        assert!(diff(&y, &y0, 2) > 1e-4, "frame 2 did not see frame 0");
    }
}

//! ILDiff's temporal modeling layers: a stack of residual 3-D convolution blocks over a clip's
//! per-frame features, the part of the layout adapter that lets a frame's alpha see its
//! neighbours (METHOD.md §3).
//!
//! Block design (ours, following "x + Conv3d(3x3x3) -> GroupNorm -> ReLU" with a zero-initialised
//! last conv):
//!
//! ```text
//! y = x + Proj(ReLU(GroupNorm(Conv3d_3x3x3(x))))      Proj = Conv3d 1x1x1, zero-initialised
//! ```
//!
//! - The projection is **pointwise** (1x1x1) so each block widens the temporal view by exactly
//!   one frame each side: N blocks see `2N + 1` frames, as METHOD.md states, and
//!   [`TemporalConfig::temporal_radius`] is N. (A second 3x3x3 conv would double it for little
//!   gain and double the cost.)
//! - The projection starts at zero, so a fresh stack is exactly the identity and a fresh adapter
//!   is harmless. At that point only the projections receive gradient; the 3x3x3 convs start
//!   learning once the projections move away from zero (the usual zero-init residual branch).
//! - GroupNorm normalises **each frame on its own** (statistics over channels-in-group x H x W,
//!   not over time). Pooling over time, as PyTorch's GroupNorm on a 5-D tensor does, would make
//!   every output depend on every frame of the clip: the result would change with clip length
//!   and windowed inference of long clips could not reproduce a single pass. With per-frame
//!   norms a frame's output depends only on the `2N + 1` frames around it.
//! - Zero temporal padding at the clip ends (PyTorch's `Conv3d(padding=1)`).
//!
//! Features are frame-major `[B * T, C, H, W]` ([`TemporalStack::forward_frames`]), PyTorch's
//! `[B, C, T, H, W]` is accepted too ([`TemporalStack::forward`]). Weight names:
//! `blocks.{i}.conv.{weight,bias}` `[C, C, 3, 3, 3]`, `blocks.{i}.norm.{weight,bias}`,
//! `blocks.{i}.proj.{weight,bias}` `[C, C, 1, 1, 1]`: a PyTorch module with
//! `nn.Conv3d(C, C, 3, padding=1)`, `nn.GroupNorm` applied per frame and `nn.Conv3d(C, C, 1)`
//! loads into it.

use crate::model::fastconv::{Activation, FastConv2d, FusedGroupNorm, group_norm};
use candle_core::{Module, Result, Tensor, bail};
use candle_nn::{Conv2dConfig, Init, VarBuilder};
use serde::{Deserialize, Serialize};

use super::conv3d::Conv3d;

/// Shape of a temporal stack.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct TemporalConfig {
    /// Feature channels (in = out).
    pub channels: usize,
    /// Number of residual blocks N (METHOD.md: 5 by default, 0 / 3 / 8 for the ablation).
    pub blocks: usize,
    /// GroupNorm groups; must divide `channels`.
    pub norm_groups: usize,
    /// GroupNorm epsilon.
    pub norm_eps: f64,
}

impl TemporalConfig {
    /// METHOD.md's default depth.
    pub const DEFAULT_BLOCKS: usize = 5;

    /// `blocks` blocks over `channels` channels with [`default_groups`] and eps 1e-5.
    pub fn new(channels: usize, blocks: usize) -> Self {
        Self {
            channels,
            blocks,
            norm_groups: default_groups(channels),
            norm_eps: 1e-5,
        }
    }

    /// Frames each side that an output frame depends on: one per block.
    pub fn temporal_radius(&self) -> usize {
        self.blocks
    }

    /// Frames an output frame depends on: `2N + 1`.
    pub fn receptive_field(&self) -> usize {
        2 * self.temporal_radius() + 1
    }

    /// Checks the numbers fit together.
    pub fn validate(&self) -> Result<()> {
        if self.blocks > 0 && self.channels == 0 {
            bail!("temporal config: channels must be positive");
        }
        if self.blocks > 0
            && (self.norm_groups == 0 || !self.channels.is_multiple_of(self.norm_groups))
        {
            bail!(
                "temporal config: {} channels are not a multiple of norm_groups {}",
                self.channels,
                self.norm_groups
            );
        }
        Ok(())
    }
}

/// 32 groups for wide features (at least 256 channels), else 8, falling back to the largest of
/// 4, 2, 1 that divides `channels`: about 8 channels per group at the adapter's usual 64.
pub fn default_groups(channels: usize) -> usize {
    let preferred = if channels >= 256 { 32 } else { 8 };
    [preferred, 4, 2, 1]
        .into_iter()
        .find(|&g| channels.is_multiple_of(g))
        .unwrap_or(1)
}

#[derive(Debug, Clone)]
struct TemporalBlock {
    conv: Conv3d,
    norm: FusedGroupNorm,
    /// The 1x1x1 projection as a 1x1 conv2d over frames (its weight is stored 5-D).
    proj: FastConv2d,
}

impl TemporalBlock {
    fn new(cfg: &TemporalConfig, vb: VarBuilder) -> Result<Self> {
        let c = cfg.channels;
        let conv = Conv3d::build(c, c, vb.pp("conv"))?;
        let norm = group_norm(cfg.norm_groups, c, cfg.norm_eps, vb.pp("norm"))?;
        let vbp = vb.pp("proj");
        let w = vbp.get_with_hints((c, c, 1, 1, 1), "weight", Init::Const(0.))?;
        let b = vbp.get_with_hints(c, "bias", Init::Const(0.))?;
        let proj = FastConv2d::new(w.reshape((c, c, 1, 1))?, Some(b), Conv2dConfig::default());
        Ok(Self { conv, norm, proj })
    }

    fn forward_frames(&self, x: &Tensor, frames: usize) -> Result<Tensor> {
        let h = self.conv.forward_frames(x, frames)?;
        let h = self.norm.forward_act(&h, Activation::Relu)?;
        x + self.proj.forward(&h)?
    }
}

/// N residual 3-D conv blocks; see the module docs.
#[derive(Debug, Clone)]
pub struct TemporalStack {
    cfg: TemporalConfig,
    blocks: Vec<TemporalBlock>,
}

impl TemporalStack {
    /// Builds the stack, asking `vb` for `blocks.{i}.*`.
    pub fn new(cfg: &TemporalConfig, vb: VarBuilder) -> Result<Self> {
        cfg.validate()?;
        let blocks = (0..cfg.blocks)
            .map(|i| TemporalBlock::new(cfg, vb.pp("blocks").pp(i)))
            .collect::<Result<_>>()?;
        Ok(Self {
            cfg: cfg.clone(),
            blocks,
        })
    }

    /// The configuration it was built with.
    pub fn config(&self) -> &TemporalConfig {
        &self.cfg
    }

    /// See [`TemporalConfig::temporal_radius`].
    pub fn temporal_radius(&self) -> usize {
        self.cfg.temporal_radius()
    }

    /// Frame-major: `[B * T, C, H, W]` (clip-major, `frames` = T) -> same shape.
    pub fn forward_frames(&self, x: &Tensor, frames: usize) -> Result<Tensor> {
        let (n, c, _, _) = x.dims4()?;
        if c != self.cfg.channels || frames == 0 || n % frames != 0 {
            bail!(
                "temporal stack: input is {:?}, expected [B * {frames}, {}, H, W]",
                x.dims(),
                self.cfg.channels
            );
        }
        let mut x = x.clone();
        for block in &self.blocks {
            x = block.forward_frames(&x, frames)?;
        }
        Ok(x)
    }

    /// PyTorch layout: `[B, C, T, H, W]` -> same shape.
    pub fn forward(&self, x: &Tensor) -> Result<Tensor> {
        let (b, c, t, h, w) = x.dims5()?;
        let frames = x
            .permute((0, 2, 1, 3, 4))?
            .contiguous()?
            .reshape((b * t, c, h, w))?;
        self.forward_frames(&frames, t)?
            .reshape((b, t, c, h, w))?
            .permute((0, 2, 1, 3, 4))?
            .contiguous()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use candle_core::{DType, Device, Var};
    use candle_nn::VarMap;

    fn stack(blocks: usize) -> (VarMap, TemporalStack) {
        let varmap = VarMap::new();
        let vb = VarBuilder::from_varmap(&varmap, DType::F32, &Device::Cpu);
        let s = TemporalStack::new(&TemporalConfig::new(8, blocks), vb).expect("stack");
        (varmap, s)
    }

    /// Gives every zero-initialised projection random weights and rebuilds the stack from the
    /// same variables, so the blocks do something.
    fn randomised(blocks: usize) -> (VarMap, TemporalStack) {
        let (varmap, _) = stack(blocks);
        {
            let data = varmap.data().lock().expect("lock");
            for (name, var) in data.iter() {
                if name.contains(".proj.") {
                    var.set(&Tensor::randn(0f32, 0.3, var.shape(), &Device::Cpu).expect("randn"))
                        .expect("set");
                }
            }
        }
        let vb = VarBuilder::from_varmap(&varmap, DType::F32, &Device::Cpu);
        let s = TemporalStack::new(&TemporalConfig::new(8, blocks), vb).expect("stack");
        (varmap, s)
    }

    fn clip(t: usize) -> Tensor {
        Tensor::randn(0f32, 1f32, (t, 8, 6, 5), &Device::Cpu).expect("clip")
    }

    fn frame_diffs(a: &Tensor, b: &Tensor) -> Vec<f32> {
        (a - b)
            .and_then(|d| d.abs())
            .and_then(|d| d.flatten_from(1))
            .and_then(|d| d.max(1))
            .and_then(|d| d.to_vec1::<f32>())
            .expect("diffs")
    }

    #[test]
    fn radius_and_groups() {
        for n in [0, 3, 5, 8] {
            let cfg = TemporalConfig::new(64, n);
            assert_eq!(cfg.temporal_radius(), n);
            assert_eq!(cfg.receptive_field(), 2 * n + 1);
        }
        assert_eq!(default_groups(64), 8);
        assert_eq!(default_groups(256), 32);
        assert_eq!(default_groups(12), 4);
        assert_eq!(default_groups(9), 1);
        let bad = TemporalConfig {
            norm_groups: 3,
            ..TemporalConfig::new(8, 2)
        };
        assert!(bad.validate().is_err());
    }

    #[test]
    fn zero_blocks_and_a_fresh_stack_are_the_identity() {
        let x = clip(4);
        for n in [0, 3] {
            let (varmap, s) = stack(n);
            assert_eq!(varmap.all_vars().len(), 6 * n);
            let y = s.forward_frames(&x, 4).expect("forward");
            assert!(frame_diffs(&x, &y).iter().all(|&d| d == 0.0), "N = {n}");
        }
    }

    #[test]
    fn receptive_field_is_two_n_plus_one_frames() {
        let n = 2;
        let (_, s) = randomised(n);
        let t = 9;
        let x = clip(t);
        let y = s.forward_frames(&x, t).expect("forward");
        // Change frame 4 only: outputs move exactly at frames 4 - N ..= 4 + N.
        let bump = Tensor::randn(0f32, 1f32, (1, 8, 6, 5), &Device::Cpu).expect("bump");
        let x2 = x
            .slice_assign(
                &[4..5, 0..8, 0..6, 0..5],
                &(x.narrow(0, 4, 1).expect("n") + bump).expect("add"),
            )
            .expect("assign");
        let y2 = s.forward_frames(&x2, t).expect("forward");
        let d = frame_diffs(&y, &y2);
        for (f, &v) in d.iter().enumerate() {
            let inside = f.abs_diff(4) <= n;
            assert_eq!(v > 0.0, inside, "frame {f}: {v}");
        }
    }

    #[test]
    fn pytorch_layout_and_batches_match_frame_major() {
        let (_, s) = randomised(2);
        let x = Tensor::randn(0f32, 1f32, (2, 8, 3, 4, 4), &Device::Cpu).expect("x");
        let y = s.forward(&x).expect("forward");
        // Clip 1 alone, frame-major, equals its part of the batched result: clips never mix.
        let one = x
            .narrow(0, 1, 1)
            .and_then(|c| c.squeeze(0))
            .and_then(|c| c.transpose(0, 1))
            .and_then(|c| c.contiguous())
            .expect("clip 1");
        let y1 = s.forward_frames(&one, 3).expect("frame-major");
        let want = y
            .narrow(0, 1, 1)
            .and_then(|c| c.squeeze(0))
            .and_then(|c| c.transpose(0, 1))
            .and_then(|c| c.contiguous())
            .expect("clip 1 out");
        assert!(frame_diffs(&y1, &want).iter().all(|&d| d < 1e-6));
        assert!(s.forward_frames(&one, 2).is_err());
    }

    fn gradients(varmap: &VarMap, s: &TemporalStack) -> Vec<(String, f32)> {
        let x = Var::from_tensor(&clip(5)).expect("var");
        let target = clip(5);
        let loss = s
            .forward_frames(x.as_tensor(), 5)
            .and_then(|y| y - &target)
            .and_then(|d| d.sqr())
            .and_then(|d| d.mean_all())
            .expect("loss");
        let grads = loss.backward().expect("backward");
        let data = varmap.data().lock().expect("lock");
        let mut out: Vec<(String, f32)> = data
            .iter()
            .map(|(name, var)| {
                let g = grads
                    .get(var.as_tensor())
                    .map(|g| {
                        g.abs()
                            .and_then(|g| g.sum_all())
                            .and_then(|g| g.to_scalar::<f32>())
                            .expect("sum")
                    })
                    .unwrap_or(0.0);
                (name.clone(), g)
            })
            .collect();
        out.sort_by(|a, b| a.0.cmp(&b.0));
        out
    }

    #[test]
    fn every_variable_gets_a_gradient_once_projections_move() {
        let (varmap, s) = randomised(3);
        let g = gradients(&varmap, &s);
        assert_eq!(g.len(), 18);
        for (name, v) in &g {
            assert!(*v > 0.0, "zero gradient for {name}");
        }
        // Fresh: the projections learn, the convs behind them wait.
        let (varmap, s) = stack(3);
        for (name, v) in gradients(&varmap, &s) {
            assert_eq!(name.contains(".proj."), v > 0.0, "{name}: {v}");
        }
    }
}

//! ILDiff's layout adapter: a small student image encoder (distilled from SAM's image encoder),
//! the temporal modeling layers over its per-frame features, and a zero-initialised 1x1
//! projection to the transparent decoder's injection point (METHOD.md §3).
//!
//! Student design (ours): a plain CNN, chosen over a small ViT because it is fast at any
//! resolution, needs no position embedding to resize, and its per-frame output depends only on
//! the frame (windowed clips stay exact):
//!
//! ```text
//! RGB [0,1] -> x*2-1 -> stem: conv3x3/2 -> GN -> SiLU                         1/2
//!   -> per stage: conv3x3/2 -> blocks x (GN -> SiLU -> conv3x3 -> GN -> SiLU -> conv3x3, +x)
//!   -> GN = features [C = last stage channels]                           1/2^(1 + stages)
//! ```
//!
//! With the default two stages the features sit at 1/8, where the decoder adds the latent.
//! The distillation head (only when `distill_channels` is set) average-pools the features to
//! 1/16 and maps them with a 1x1 conv to SAM's 256-channel embedding; it is used by training
//! only. After the temporal stack, `inject` (1x1, zero-initialised) maps to the decoder's
//! injection channels, so a fresh adapter adds exactly zero.
//!
//! Weight names: `stem.{conv,norm}`, `stages.{i}.down`, `stages.{i}.blocks.{j}.{norm1,conv1,
//! norm2,conv2}`, `feature_norm`, `distill` (optional), `temporal.blocks.{k}.*` (see
//! [`super::temporal`]), `inject`.

use crate::model::fastconv::{Activation, FastConv2d, FusedGroupNorm, fast_conv2d, group_norm};
use candle_core::{Module, Result, Tensor, bail};
use candle_nn::{Conv2dConfig, VarBuilder};
use serde::{Deserialize, Serialize};

use super::temporal::{TemporalConfig, TemporalStack, default_groups};
use super::transparent_decoder::zero_conv1x1;

/// SAM's image-embedding channels (ViT-B/L/H and MobileSAM alike).
pub const SAM_EMBED_CHANNELS: usize = 256;

/// Shape of the layout adapter.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct LayoutAdapterConfig {
    /// Channels of the stride-2 stem.
    pub stem_channels: usize,
    /// Output channels of each stage (each halves the resolution); the last is the feature width.
    pub stage_channels: Vec<usize>,
    /// Residual blocks per stage.
    pub blocks_per_stage: usize,
    /// GroupNorm groups of the student.
    pub norm_groups: usize,
    /// Temporal residual blocks N (0 turns the temporal modeling off).
    pub temporal_blocks: usize,
    /// GroupNorm groups of the temporal blocks.
    pub temporal_norm_groups: usize,
    /// Channels of the decoder's hidden state at the injection point.
    pub inject_channels: usize,
    /// Teacher embedding channels for the distillation head; `None` builds no head.
    #[serde(default)]
    pub distill_channels: Option<usize>,
}

impl LayoutAdapterConfig {
    /// The default adapter for a decoder whose injection point has `inject_channels` channels
    /// (64 for the official decoder): features of 64 channels at 1/8, N = 5, SAM distillation head.
    pub fn new(inject_channels: usize) -> Self {
        let features = 64;
        Self {
            stem_channels: 32,
            stage_channels: vec![48, features],
            blocks_per_stage: 2,
            norm_groups: 8,
            temporal_blocks: TemporalConfig::DEFAULT_BLOCKS,
            temporal_norm_groups: default_groups(features),
            inject_channels,
            distill_channels: Some(SAM_EMBED_CHANNELS),
        }
    }

    /// Channels of the student features (what the temporal stack sees).
    pub fn feature_channels(&self) -> usize {
        self.stage_channels
            .last()
            .copied()
            .unwrap_or(self.stem_channels)
    }

    /// Input size / feature size.
    pub fn downsample_factor(&self) -> usize {
        1 << (1 + self.stage_channels.len())
    }

    /// The temporal stack's configuration.
    pub fn temporal(&self) -> TemporalConfig {
        TemporalConfig {
            channels: self.feature_channels(),
            blocks: self.temporal_blocks,
            norm_groups: self.temporal_norm_groups,
            norm_eps: 1e-5,
        }
    }

    /// Frames each side an output frame depends on.
    pub fn temporal_radius(&self) -> usize {
        self.temporal().temporal_radius()
    }

    /// Checks the numbers fit together.
    pub fn validate(&self) -> Result<()> {
        if self.stem_channels == 0 || self.inject_channels == 0 {
            bail!("layout adapter config: stem_channels and inject_channels must be positive");
        }
        if self.stage_channels.contains(&0) || self.distill_channels == Some(0) {
            bail!("layout adapter config: channel counts must be positive");
        }
        let g = self.norm_groups;
        let norm_c = std::iter::once(self.stem_channels).chain(self.stage_channels.iter().copied());
        for c in norm_c {
            if g == 0 || !c.is_multiple_of(g) {
                bail!("layout adapter config: {c} channels are not a multiple of norm_groups {g}");
            }
        }
        self.temporal().validate()
    }
}

fn conv3x3(c_in: usize, c_out: usize, stride: usize, vb: VarBuilder) -> Result<FastConv2d> {
    let cfg = Conv2dConfig {
        padding: 1,
        stride,
        ..Default::default()
    };
    fast_conv2d(c_in, c_out, 3, cfg, vb)
}

/// Pre-activation residual block.
#[derive(Debug, Clone)]
struct ResBlock {
    norm1: FusedGroupNorm,
    conv1: FastConv2d,
    norm2: FusedGroupNorm,
    conv2: FastConv2d,
}

impl ResBlock {
    fn new(c: usize, groups: usize, vb: VarBuilder) -> Result<Self> {
        Ok(Self {
            norm1: group_norm(groups, c, 1e-5, vb.pp("norm1"))?,
            conv1: conv3x3(c, c, 1, vb.pp("conv1"))?,
            norm2: group_norm(groups, c, 1e-5, vb.pp("norm2"))?,
            conv2: conv3x3(c, c, 1, vb.pp("conv2"))?,
        })
    }

    fn forward(&self, x: &Tensor) -> Result<Tensor> {
        let h = self
            .conv1
            .forward(&self.norm1.forward_act(x, Activation::Silu)?)?;
        let h = self
            .conv2
            .forward(&self.norm2.forward_act(&h, Activation::Silu)?)?;
        x + h
    }
}

#[derive(Debug, Clone)]
struct Stage {
    down: FastConv2d,
    blocks: Vec<ResBlock>,
}

/// The layout adapter; see the module docs.
#[derive(Debug, Clone)]
pub struct LayoutAdapter {
    cfg: LayoutAdapterConfig,
    stem_conv: FastConv2d,
    stem_norm: FusedGroupNorm,
    stages: Vec<Stage>,
    feature_norm: FusedGroupNorm,
    distill: Option<FastConv2d>,
    temporal: TemporalStack,
    inject: FastConv2d,
}

impl LayoutAdapter {
    /// Builds the adapter, asking `vb` for the tensors named in the module docs.
    pub fn new(cfg: &LayoutAdapterConfig, vb: VarBuilder) -> Result<Self> {
        cfg.validate()?;
        let g = cfg.norm_groups;
        let stem_conv = conv3x3(3, cfg.stem_channels, 2, vb.pp("stem").pp("conv"))?;
        let stem_norm = group_norm(g, cfg.stem_channels, 1e-5, vb.pp("stem").pp("norm"))?;
        let mut c_in = cfg.stem_channels;
        let mut stages = Vec::with_capacity(cfg.stage_channels.len());
        for (i, &c) in cfg.stage_channels.iter().enumerate() {
            let vb = vb.pp("stages").pp(i);
            let down = conv3x3(c_in, c, 2, vb.pp("down"))?;
            let blocks = (0..cfg.blocks_per_stage)
                .map(|j| ResBlock::new(c, g, vb.pp("blocks").pp(j)))
                .collect::<Result<_>>()?;
            stages.push(Stage { down, blocks });
            c_in = c;
        }
        let feature_norm = group_norm(g, c_in, 1e-5, vb.pp("feature_norm"))?;
        let distill = match cfg.distill_channels {
            Some(d) => Some(fast_conv2d(
                c_in,
                d,
                1,
                Conv2dConfig::default(),
                vb.pp("distill"),
            )?),
            None => None,
        };
        let temporal = TemporalStack::new(&cfg.temporal(), vb.pp("temporal"))?;
        let inject = zero_conv1x1(c_in, cfg.inject_channels, vb.pp("inject"))?;
        Ok(Self {
            cfg: cfg.clone(),
            stem_conv,
            stem_norm,
            stages,
            feature_norm,
            distill,
            temporal,
            inject,
        })
    }

    /// The configuration it was built with.
    pub fn config(&self) -> &LayoutAdapterConfig {
        &self.cfg
    }

    /// Frames each side an output frame depends on.
    pub fn temporal_radius(&self) -> usize {
        self.temporal.temporal_radius()
    }

    /// Student features of each frame on its own: `[N, 3, H, W]` in [0, 1] ->
    /// `[N, C, H/f, W/f]`, f = [`LayoutAdapterConfig::downsample_factor`]; H and W must be
    /// multiples of f.
    pub fn features(&self, frames: &Tensor) -> Result<Tensor> {
        let (_, c, h, w) = frames.dims4()?;
        let f = self.cfg.downsample_factor();
        if c != 3 || h == 0 || w == 0 || !h.is_multiple_of(f) || !w.is_multiple_of(f) {
            bail!(
                "layout adapter: frames are {:?}; expected [N, 3, H, W] with H and W positive multiples of {f}",
                frames.dims()
            );
        }
        let x = ((frames * 2.0)? - 1.0)?;
        let mut x = self
            .stem_norm
            .forward_act(&self.stem_conv.forward(&x)?, Activation::Silu)?;
        for stage in &self.stages {
            x = stage.down.forward(&x)?;
            for b in &stage.blocks {
                x = b.forward(&x)?;
            }
        }
        self.feature_norm.forward(&x)
    }

    /// The distillation head on student features: `[N, C, h, w]` -> `[N, D, h/2, w/2]`, to be
    /// compared with the teacher's embedding (resized to match). Errors when the config has no
    /// head.
    pub fn distill(&self, features: &Tensor) -> Result<Tensor> {
        let Some(head) = &self.distill else {
            bail!("layout adapter: this configuration has no distillation head");
        };
        head.forward(&features.avg_pool2d(2)?)
    }

    /// Temporal stack and injection projection on the features of `B` clips of `frames` frames
    /// each (frame-major, `[B * T, C, h, w]`) -> `[B * T, inject_channels, h, w]`.
    pub fn inject(&self, features: &Tensor, frames: usize) -> Result<Tensor> {
        let x = self.temporal.forward_frames(features, frames)?;
        self.inject.forward(&x)
    }

    /// One clip: `[T, 3, H, W]` in [0, 1] -> the decoder's extra feature `[T, inject_c, H/f, W/f]`.
    pub fn forward(&self, frames: &Tensor) -> Result<Tensor> {
        let t = frames.dim(0)?;
        self.forward_clips(frames, t)
    }

    /// `B` clips of `frames` frames each, frame-major `[B * T, 3, H, W]`.
    pub fn forward_clips(&self, frames: &Tensor, frames_per_clip: usize) -> Result<Tensor> {
        self.inject(&self.features(frames)?, frames_per_clip)
    }
}

#[cfg(test)]
pub(crate) mod tests {
    use super::*;
    use candle_core::{DType, Device, Var};
    use candle_nn::VarMap;

    /// 8-16 channels, 2 temporal blocks, injection into 16 channels, 32-channel distillation.
    pub(crate) fn tiny() -> LayoutAdapterConfig {
        LayoutAdapterConfig {
            stem_channels: 8,
            stage_channels: vec![8, 16],
            blocks_per_stage: 1,
            norm_groups: 4,
            temporal_blocks: 2,
            temporal_norm_groups: 4,
            inject_channels: 16,
            distill_channels: Some(32),
        }
    }

    fn build(cfg: &LayoutAdapterConfig) -> (VarMap, LayoutAdapter) {
        let varmap = VarMap::new();
        let vb = VarBuilder::from_varmap(&varmap, DType::F32, &Device::Cpu);
        let a = LayoutAdapter::new(cfg, vb).expect("adapter");
        (varmap, a)
    }

    /// Random weights for every zero-initialised tensor (temporal and injection projections).
    pub(crate) fn wake_zero_inits(varmap: &VarMap) {
        let data = varmap.data().lock().expect("lock");
        for (name, var) in data.iter() {
            if name.contains("proj.") || name.contains("inject.") {
                var.set(&Tensor::randn(0f32, 0.3, var.shape(), &Device::Cpu).expect("randn"))
                    .expect("set");
            }
        }
    }

    fn frames(t: usize) -> Tensor {
        Tensor::rand(0f32, 1f32, (t, 3, 32, 32), &Device::Cpu).expect("frames")
    }

    #[test]
    fn default_config_fits_the_official_decoder() {
        let cfg = LayoutAdapterConfig::new(64);
        assert!(cfg.validate().is_ok());
        assert_eq!(cfg.downsample_factor(), 8);
        assert_eq!(cfg.feature_channels(), 64);
        assert_eq!(cfg.temporal_radius(), 5);
        let json = serde_json::to_string(&cfg).expect("json");
        let back: LayoutAdapterConfig = serde_json::from_str(&json).expect("parse");
        assert_eq!(back, cfg);
        let bad = LayoutAdapterConfig {
            norm_groups: 5,
            ..cfg
        };
        assert!(bad.validate().is_err());
    }

    #[test]
    fn shapes_and_a_fresh_adapter_adds_zero() {
        let (_, a) = build(&tiny());
        let x = frames(3);
        let f = a.features(&x).expect("features");
        assert_eq!(f.dims(), &[3, 16, 4, 4]);
        assert_eq!(a.distill(&f).expect("distill").dims(), &[3, 32, 2, 2]);
        let y = a.forward(&x).expect("forward");
        assert_eq!(y.dims(), &[3, 16, 4, 4]);
        let max = y
            .abs()
            .and_then(|t| t.max_all())
            .and_then(|t| t.to_scalar::<f32>())
            .expect("max");
        assert_eq!(max, 0.0);
        let e = a.forward(&x.narrow(3, 0, 20).expect("narrow"));
        assert!(e.expect_err("20 px").to_string().contains("multiples of 8"));
        let no_head = LayoutAdapterConfig {
            distill_channels: None,
            ..tiny()
        };
        let (_, a) = build(&no_head);
        assert!(a.distill(&f).is_err());
    }

    #[test]
    fn frames_mix_only_within_the_temporal_radius() {
        let (varmap, _) = build(&tiny());
        wake_zero_inits(&varmap);
        let vb = VarBuilder::from_varmap(&varmap, DType::F32, &Device::Cpu);
        let a = LayoutAdapter::new(&tiny(), vb).expect("adapter");
        let x = frames(7);
        let y = a.forward(&x).expect("forward");
        let x2 = x
            .slice_assign(&[0..1, 0..3, 0..32, 0..32], &frames(1))
            .expect("assign");
        let y2 = a.forward(&x2).expect("forward");
        let d: Vec<f32> = (y - y2)
            .and_then(|d| d.abs())
            .and_then(|d| d.flatten_from(1))
            .and_then(|d| d.max(1))
            .and_then(|d| d.to_vec1())
            .expect("diffs");
        assert!(d[..=2].iter().all(|&v| v > 0.0), "{d:?}");
        assert!(d[3..].iter().all(|&v| v == 0.0), "{d:?}");
    }

    #[test]
    fn every_variable_gets_a_gradient_once_zero_inits_move() {
        let (varmap, _) = build(&tiny());
        wake_zero_inits(&varmap);
        let vb = VarBuilder::from_varmap(&varmap, DType::F32, &Device::Cpu);
        let a = LayoutAdapter::new(&tiny(), vb).expect("adapter");
        let x = Var::from_tensor(&frames(3)).expect("var");
        let f = a.features(x.as_tensor()).expect("features");
        let y = a.inject(&f, 3).expect("inject");
        let d = a.distill(&f).expect("distill");
        let loss = y
            .sqr()
            .and_then(|t| t.mean_all())
            .and_then(|l| l + d.sqr()?.mean_all()?)
            .expect("loss");
        let grads = loss.backward().expect("backward");
        let data = varmap.data().lock().expect("lock");
        assert!(data.len() > 30, "{} variables", data.len());
        for (name, var) in data.iter() {
            let s = grads
                .get(var.as_tensor())
                .map(|g| {
                    g.abs()
                        .and_then(|g| g.sum_all())
                        .and_then(|g| g.to_scalar::<f32>())
                        .expect("sum")
                })
                .unwrap_or(0.0);
            assert!(s > 0.0, "zero gradient for {name}");
        }
    }
}

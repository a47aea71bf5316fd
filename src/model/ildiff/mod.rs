//! The ILDiff decoder: LayerDiffuse's transparent decoder plus the layout adapter, whose output
//! is added where the latent is added (METHOD.md §3). It decodes one clip at a time, because
//! the adapter's temporal layers look at neighbouring frames.
//!
//! Tensor names: the decoder's under their official names at the root (so an official
//! LayerDiffuse file is the decoder part of a checkpoint as is) and the adapter's under
//! `adapter.`. The configuration travels inside the checkpoint (see
//! [`crate::model::weights::save_ildiff`]), so a file is self-describing.

//!
//! The matting model's parts live in this folder: [`transparent_decoder`], [`layout`],
//! [`temporal`], [`conv3d`], [`codec`], [`offset_encoder`], [`sam`] and [`augment`]
//! (re-exported at `crate::model::*`, where the rest of the crate names them).

pub mod augment;
pub mod codec;
pub mod conv3d;
pub mod layout;
pub mod local_ramp;
pub mod offset_encoder;
pub mod sam;
pub mod temporal;
pub mod transparent_decoder;

use candle_core::{Result, Tensor, bail};
use candle_nn::VarBuilder;
use serde::{Deserialize, Serialize};

use self::codec::{SmallCodec, SmallCodecConfig};
use self::layout::{LayoutAdapter, LayoutAdapterConfig};
use self::transparent_decoder::{KeyPrior, TransparentDecoder, TransparentDecoderConfig};

/// Shape of an ILDiff decoder.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct IldiffConfig {
    /// The transparent decoder.
    pub decoder: TransparentDecoderConfig,
    /// The layout adapter; `None` is plain LayerDiffuse (per-frame, no temporal context).
    #[serde(default)]
    pub adapter: Option<LayoutAdapterConfig>,
    /// The latent codec that re-matting an RGB clip encodes it with (tensors under `codec.`);
    /// `None` when the decoder works on latents from elsewhere (e.g. the SD VAE, a separate file).
    #[serde(default)]
    pub codec: Option<SmallCodecConfig>,
}

impl IldiffConfig {
    /// The official decoder with the default adapter.
    pub fn official() -> Self {
        let decoder = TransparentDecoderConfig::official();
        let adapter = LayoutAdapterConfig::new(decoder.inject_channels());
        Self {
            decoder,
            adapter: Some(adapter),
            codec: None,
        }
    }

    /// The shipped CPU default (ours, not the paper's): the same UNet form as LayerDiffuse's
    /// decoder, narrowed to 8/16/32/64 channels with one resnet per down block and no
    /// attention (it cost a fifth of the time at 512²), behind a 2x space-to-depth so its finest level runs at half
    /// resolution (see [`TransparentDecoderConfig::pixel_unshuffle`]); a slim layout adapter
    /// (8/16/16 channels) with N = 5 temporal blocks at 1/8; and the [`SmallCodec`] for
    /// re-matting RGB clips. Sized for ≥ 4 frames/s at 512² on two cores; `ildiff bench`
    /// measures it.
    pub fn cpu_default() -> Self {
        let decoder = TransparentDecoderConfig {
            block_out_channels: vec![8, 16, 32, 64],
            layers_per_block: 1,
            attention_head_dim: 16,
            attn_levels: vec![],
            mid_attention: false,
            latent_inject_level: 2,
            pixel_unshuffle: 2,
            key_prior: Some(KeyPrior::adaptive()),
            ..TransparentDecoderConfig::official()
        };
        let adapter = LayoutAdapterConfig {
            stem_channels: 8,
            stage_channels: vec![16, 16],
            blocks_per_stage: 1,
            norm_groups: 4,
            temporal_blocks: 5,
            temporal_norm_groups: 4,
            inject_channels: decoder.inject_channels(),
            distill_channels: None,
        };
        Self {
            decoder,
            adapter: Some(adapter),
            codec: Some(SmallCodecConfig::default()),
        }
    }

    /// A tiny model (8–16 channels, N = 2, small codec) for tests, smoke runs and the studio's
    /// UI tests: fast anywhere, useless as a matte.
    pub fn tiny() -> Self {
        let decoder = TransparentDecoderConfig {
            block_out_channels: vec![8, 8, 16, 16, 16],
            layers_per_block: 1,
            attention_head_dim: 4,
            attn_levels: vec![4],
            ..TransparentDecoderConfig::official()
        };
        let adapter = LayoutAdapterConfig {
            stem_channels: 8,
            stage_channels: vec![8, 16],
            blocks_per_stage: 1,
            norm_groups: 4,
            temporal_blocks: 2,
            temporal_norm_groups: 4,
            inject_channels: decoder.inject_channels(),
            distill_channels: None,
        };
        Self {
            decoder,
            adapter: Some(adapter),
            codec: Some(SmallCodecConfig {
                channels: [8, 8, 8],
                norm_groups: 4,
            }),
        }
    }

    /// Frames each side an output frame depends on (0 without an adapter).
    pub fn temporal_radius(&self) -> usize {
        self.adapter
            .as_ref()
            .map_or(0, LayoutAdapterConfig::temporal_radius)
    }

    /// Checks that the decoder and the adapter fit each other.
    pub fn validate(&self) -> Result<()> {
        self.decoder.validate()?;
        if let Some(c) = &self.codec {
            c.validate()?;
            if self.decoder.latent_factor() != codec::CODEC_FACTOR
                || self.decoder.latent_channels != codec::LATENT_CHANNELS
            {
                bail!("ILDiff config: the codec's latents do not fit the decoder's latent input");
            }
        }
        if let Some(a) = &self.adapter {
            a.validate()?;
            let (f, lf) = (a.downsample_factor(), self.decoder.latent_factor());
            if f != lf {
                bail!(
                    "ILDiff config: the adapter's features are at 1/{f} but the decoder injects at 1/{lf}"
                );
            }
            let (c, dc) = (a.inject_channels, self.decoder.inject_channels());
            if c != dc {
                bail!(
                    "ILDiff config: the adapter injects {c} channels but the decoder has {dc} there"
                );
            }
        }
        Ok(())
    }

    /// The JSON stored in a checkpoint's metadata.
    pub fn to_json(&self) -> crate::Result<String> {
        serde_json::to_string(self)
            .map_err(|e| crate::Error::Model(format!("cannot write the ILDiff config: {e}")))
    }

    /// Parses the JSON of [`IldiffConfig::to_json`]; `source` names it in errors.
    pub fn from_json(text: &str, source: &str) -> crate::Result<Self> {
        serde_json::from_str(text).map_err(|e| {
            crate::Error::Model(format!("invalid ILDiff configuration ({e}): {source}"))
        })
    }
}

/// Layout adapter + transparent decoder.
#[derive(Debug, Clone)]
pub struct IldiffDecoder {
    cfg: IldiffConfig,
    decoder: TransparentDecoder,
    adapter: Option<LayoutAdapter>,
    codec: Option<SmallCodec>,
}

impl IldiffDecoder {
    /// Builds the decoder (tensors at the root), the adapter (under `adapter.`) and the codec
    /// (under `codec.`).
    pub fn new(cfg: &IldiffConfig, vb: VarBuilder) -> Result<Self> {
        cfg.validate()?;
        let decoder = TransparentDecoder::new(&cfg.decoder, vb.clone())?;
        let adapter = match &cfg.adapter {
            Some(a) => Some(LayoutAdapter::new(a, vb.pp("adapter"))?),
            None => None,
        };
        let codec = match &cfg.codec {
            Some(c) => Some(SmallCodec::new(c, vb.pp("codec"))?),
            None => None,
        };
        Ok(Self {
            cfg: cfg.clone(),
            decoder,
            adapter,
            codec,
        })
    }

    /// The configuration it was built with.
    pub fn config(&self) -> &IldiffConfig {
        &self.cfg
    }

    /// The transparent decoder.
    pub fn decoder(&self) -> &TransparentDecoder {
        &self.decoder
    }

    /// The layout adapter, if the configuration has one.
    pub fn adapter(&self) -> Option<&LayoutAdapter> {
        self.adapter.as_ref()
    }

    /// The checkpoint's own codec, if its configuration has one.
    pub fn codec(&self) -> Option<&SmallCodec> {
        self.codec.as_ref()
    }

    /// Frames each side an output frame depends on.
    pub fn temporal_radius(&self) -> usize {
        self.cfg.temporal_radius()
    }

    /// One clip: `pixel` `[T, 3, H, W]` (the codec-decoded RGB in [0, 1]) and `latent`
    /// `[T, 4, H/8, W/8]` (unscaled) -> `[T, 4, H, W]` unclipped, channel 0 = alpha, then
    /// straight RGB. H and W must be multiples of the decoder's size multiple.
    pub fn forward(&self, pixel: &Tensor, latent: &Tensor) -> Result<Tensor> {
        let t = pixel.dim(0)?;
        self.forward_clips(pixel, latent, t)
    }

    /// `B` clips of `frames` frames each, frame-major (`[B * T, ...]`).
    pub fn forward_clips(&self, pixel: &Tensor, latent: &Tensor, frames: usize) -> Result<Tensor> {
        self.forward_clips_with_plate(pixel, latent, None, frames)
    }

    /// Whether the decoder keys against a background plate (see
    /// [`crate::model::KeyPrior::plate`]), so callers should estimate one.
    pub fn uses_plate(&self) -> bool {
        self.cfg.decoder.key_prior.is_some_and(|k| k.plate)
    }

    /// [`IldiffDecoder::forward_clips`] with each frame's background plate `[B * T, 4, H, W]`
    /// (RGB, confidence), read by a plate-prior decoder.
    pub fn forward_clips_with_plate(
        &self,
        pixel: &Tensor,
        latent: &Tensor,
        plate: Option<&Tensor>,
        frames: usize,
    ) -> Result<Tensor> {
        let extra = match &self.adapter {
            Some(a) => Some(a.forward_clips(pixel, frames)?),
            None => None,
        };
        self.decoder
            .forward_with_plate(pixel, latent, extra.as_ref(), plate)
    }
}

#[cfg(test)]
pub(crate) mod tests {
    use super::*;
    use crate::model::layout::tests::{tiny as tiny_adapter, wake_zero_inits};
    use candle_core::{DType, Device};
    use candle_nn::VarMap;

    /// 5-level decoder (size multiple 16) with 8-16 channels and the tiny adapter (N = 2).
    pub(crate) fn tiny() -> IldiffConfig {
        IldiffConfig {
            adapter: Some(tiny_adapter()),
            codec: None,
            ..IldiffConfig::tiny()
        }
    }

    /// A tiny model whose zero-initialised tensors (latent conv, temporal and injection
    /// projections) hold random values, so every part affects the output.
    pub(crate) fn awake(cfg: &IldiffConfig) -> (VarMap, IldiffDecoder) {
        let varmap = VarMap::new();
        let vb = VarBuilder::from_varmap(&varmap, DType::F32, &Device::Cpu);
        IldiffDecoder::new(cfg, vb).expect("build");
        wake_zero_inits(&varmap);
        {
            let data = varmap.data().lock().expect("lock");
            let w = data.get("latent_conv_in.weight").expect("latent conv");
            w.set(&Tensor::randn(0f32, 0.5, w.shape(), &Device::Cpu).expect("randn"))
                .expect("set");
        }
        let vb = VarBuilder::from_varmap(&varmap, DType::F32, &Device::Cpu);
        let m = IldiffDecoder::new(cfg, vb).expect("rebuild");
        (varmap, m)
    }

    pub(crate) fn inputs(t: usize, h: usize, w: usize) -> (Tensor, Tensor) {
        let dev = Device::Cpu;
        let pixel = Tensor::rand(0f32, 1f32, (t, 3, h, w), &dev).expect("pixel");
        let latent =
            Tensor::randn(0f32, 1f32, (t, 4, h.div_ceil(8), w.div_ceil(8)), &dev).expect("latent");
        (pixel, latent)
    }

    pub(crate) fn values(t: &Tensor) -> Vec<f32> {
        t.flatten_all().and_then(|t| t.to_vec1()).expect("values")
    }

    #[test]
    fn configs_validate_and_round_trip() {
        let cfg = IldiffConfig::official();
        assert!(cfg.validate().is_ok());
        assert_eq!(cfg.temporal_radius(), 5);
        let back = IldiffConfig::from_json(&cfg.to_json().expect("json"), "test").expect("parse");
        assert_eq!(back, cfg);
        // A LayerDiffuse-only config needs no adapter key.
        let plain = r#"{"decoder": DEC}"#
            .replace("DEC", &serde_json::to_string(&cfg.decoder).expect("json"));
        let plain = IldiffConfig::from_json(&plain, "test").expect("parse");
        assert_eq!(plain.adapter, None);
        assert_eq!(plain.temporal_radius(), 0);
        let mut bad = tiny();
        if let Some(a) = bad.adapter.as_mut() {
            a.inject_channels = 8;
        }
        let e = bad.validate().expect_err("8 vs 16 channels");
        assert!(e.to_string().contains("injects 8 channels"), "{e}");
        let mut bad = tiny();
        if let Some(a) = bad.adapter.as_mut() {
            a.stage_channels = vec![16];
        }
        assert!(bad.validate().is_err(), "features at 1/4");
        let cpu = IldiffConfig::cpu_default();
        assert!(cpu.validate().is_ok());
        assert_eq!(cpu.temporal_radius(), 5);
        let back = IldiffConfig::from_json(&cpu.to_json().expect("json"), "test").expect("parse");
        assert_eq!(back, cpu);
        let e = IldiffConfig::from_json("{", "x.safetensors").expect_err("bad json");
        assert!(e.to_string().contains("x.safetensors"));
    }

    #[test]
    fn a_fresh_adapter_changes_nothing() {
        let cfg = tiny();
        let varmap = VarMap::new();
        let vb = VarBuilder::from_varmap(&varmap, DType::F32, &Device::Cpu);
        let m = IldiffDecoder::new(&cfg, vb).expect("build");
        {
            // A working latent path, so "nothing" is measured against a non-trivial injection.
            let data = varmap.data().lock().expect("lock");
            let w = data.get("latent_conv_in.weight").expect("latent conv");
            w.set(&Tensor::randn(0f32, 0.5, w.shape(), &Device::Cpu).expect("randn"))
                .expect("set");
        }
        let vb = VarBuilder::from_varmap(&varmap, DType::F32, &Device::Cpu);
        let alone = TransparentDecoder::new(&cfg.decoder, vb).expect("decoder alone");
        let (pixel, latent) = inputs(3, 32, 32);
        let with = m.forward(&pixel, &latent).expect("ildiff");
        assert_eq!(with.dims(), &[3, 4, 32, 32]);
        let without = alone.forward(&pixel, &latent).expect("decoder");
        assert_eq!(values(&with), values(&without));
    }

    #[test]
    fn an_awake_adapter_changes_the_output() {
        let cfg = tiny();
        let (varmap, m) = awake(&cfg);
        let vb = VarBuilder::from_varmap(&varmap, DType::F32, &Device::Cpu);
        let alone = TransparentDecoder::new(&cfg.decoder, vb).expect("decoder alone");
        let (pixel, latent) = inputs(2, 32, 32);
        let a = values(&m.forward(&pixel, &latent).expect("ildiff"));
        let b = values(&alone.forward(&pixel, &latent).expect("decoder"));
        let max = a
            .iter()
            .zip(&b)
            .map(|(x, y)| (x - y).abs())
            .fold(0f32, f32::max);
        assert!(max > 1e-3, "{max}");
    }
}

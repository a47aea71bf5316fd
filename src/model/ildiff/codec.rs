//! Latent codecs: RGB frames to a 4-channel latent at 1/8 resolution and back.
//!
//! The transparent decoder takes two inputs, the RGB frame and its latent (METHOD.md §2); when
//! re-matting an imported clip the latent has to come from somewhere, and that is a codec.
//! [`LatentCodec`] is the swappable step; two implementations:
//!
//! - [`SdVae`]: Stable Diffusion 1.5's VAE (candle-transformers' `AutoEncoderKL`), the codec
//!   LayerDiffuse was trained with. 84 M parameters; slow on a CPU.
//! - [`SmallCodec`]: our own small conv autoencoder, fast enough for CPU matting. Untrained
//!   until the training issue lands; never ship it with random weights.
//!
//! **Latent convention.** `encode` returns the *unscaled* latent: for the SD VAE that is the
//! posterior mean itself, *not* multiplied by [`SD_SCALING_FACTOR`]. This is what LayerDiffuse's
//! transparent decoder takes (its pipelines divide the diffusion latent by 0.18215 before
//! handing it over), and what [`crate::model::IldiffDecoder::forward`] expects. A diffusion UNet
//! works on `latent * SD_SCALING_FACTOR`; converting is the caller's business.

use candle_core::{DType, Module, Result, Shape, Tensor, bail};
use candle_nn::var_builder::SimpleBackend;
use candle_nn::{Conv2dConfig, VarBuilder};

use crate::model::fastconv::{Activation, FastConv2d, FusedGroupNorm, fast_conv2d};
use candle_transformers::models::stable_diffusion::vae::{AutoEncoderKL, AutoEncoderKLConfig};
use serde::{Deserialize, Serialize};

use super::augment::{crop, mirror_pad};

/// SD-1.5's latent scaling factor: diffusion latent = unscaled latent x this.
pub const SD_SCALING_FACTOR: f64 = 0.18215;

/// Pixel size / latent size of every codec here.
pub const CODEC_FACTOR: usize = 8;

/// Latent channels of every codec here.
pub const LATENT_CHANNELS: usize = 4;

/// RGB in [0, 1] <-> unscaled latent (see the module docs for the convention).
pub trait LatentCodec: Send + Sync {
    /// `rgb` `[B, 3, H, W]` in [0, 1], H and W multiples of [`LatentCodec::factor`] ->
    /// unscaled latent `[B, 4, H/8, W/8]` (deterministic: the posterior mean, never a sample).
    fn encode(&self, rgb: &Tensor) -> Result<Tensor>;

    /// Unscaled latent `[B, 4, h, w]` -> RGB `[B, 3, 8h, 8w]` clipped to [0, 1].
    fn decode(&self, latent: &Tensor) -> Result<Tensor>;

    /// Pixel size / latent size (8).
    fn factor(&self) -> usize {
        CODEC_FACTOR
    }

    /// [`LatentCodec::encode`] for any size: mirror-pads to a multiple of the factor, so the
    /// latent is `[B, 4, ceil(H/8), ceil(W/8)]` — the shape the matting pipeline expects.
    fn encode_any_size(&self, rgb: &Tensor) -> Result<Tensor> {
        let (_, _, h, w) = rgb.dims4()?;
        let f = self.factor();
        let padded = mirror_pad(
            &rgb.contiguous()?,
            h.div_ceil(f) * f - h,
            w.div_ceil(f) * f - w,
        )?;
        self.encode(&padded)
    }

    /// [`LatentCodec::decode`] cropped back to `h` x `w` (the inverse of the padding of
    /// [`LatentCodec::encode_any_size`]).
    fn decode_to_size(&self, latent: &Tensor, h: usize, w: usize) -> Result<Tensor> {
        crop(&self.decode(latent)?, h, w)
    }
}

fn check_rgb(rgb: &Tensor, f: usize, who: &str) -> Result<()> {
    let (_, c, h, w) = rgb.dims4()?;
    if c != 3 || h == 0 || w == 0 || h % f != 0 || w % f != 0 {
        bail!(
            "{who}: RGB input is {:?}; expected [B, 3, H, W] with H and W positive multiples of {f}",
            rgb.dims()
        );
    }
    Ok(())
}

fn check_latent(latent: &Tensor, who: &str) -> Result<()> {
    let (_, c, _, _) = latent.dims4()?;
    if c != LATENT_CHANNELS {
        bail!(
            "{who}: latent is {:?}; expected [B, {LATENT_CHANNELS}, h, w]",
            latent.dims()
        );
    }
    Ok(())
}

/// The SD-1.5 VAE. Weights: the diffusers file `vae/diffusion_pytorch_model.safetensors`
/// (names `encoder.*`, `decoder.*`, `quant_conv.*`, `post_quant_conv.*`; see
/// `reference/manifests/sd15_vae.json`), loaded through [`crate::model::weights::Checkpoint::build`]
/// so a wrong file names the offending tensor.
pub struct SdVae {
    vae: AutoEncoderKL,
}

impl std::fmt::Debug for SdVae {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("SdVae").finish_non_exhaustive()
    }
}

impl SdVae {
    /// The SD-1.5 VAE configuration (diffusers `vae/config.json`).
    pub fn sd15_config() -> AutoEncoderKLConfig {
        AutoEncoderKLConfig {
            block_out_channels: vec![128, 256, 512, 512],
            layers_per_block: 2,
            latent_channels: LATENT_CHANNELS,
            norm_num_groups: 32,
            use_quant_conv: true,
            use_post_quant_conv: true,
        }
    }

    /// Builds the VAE from `vb` (the VAE file's root).
    ///
    /// candle's posterior keeps its mean private and only offers `sample()` (mean + std x
    /// noise). For a deterministic encoder we serve `quant_conv` with its log-variance half
    /// replaced by zero weights and a bias of -1e4, so std = exp(-5000) = 0 exactly in f32 and
    /// `sample()` returns the mean bit for bit. The real log-variance tensors are still read
    /// (and checked) from the file.
    pub fn new(vb: VarBuilder) -> Result<Self> {
        Self::with_config(vb, Self::sd15_config())
    }

    /// [`SdVae::new`] with another layout (a diffusers `vae/config.json`; tests use tiny ones).
    /// The latent must still have [`LATENT_CHANNELS`] channels at 1/8 (four levels).
    pub fn with_config(vb: VarBuilder, cfg: AutoEncoderKLConfig) -> Result<Self> {
        if cfg.latent_channels != LATENT_CHANNELS || cfg.block_out_channels.len() != 4 {
            bail!(
                "SD VAE: {} latent channels over {} levels; expected {LATENT_CHANNELS} over 4 (1/8)",
                cfg.latent_channels,
                cfg.block_out_channels.len()
            );
        }
        let backend = MeanOnly {
            inner: vb.clone(),
            latent_channels: LATENT_CHANNELS,
        };
        let vb = VarBuilder::from_backend(Box::new(backend), vb.dtype(), vb.device().clone());
        let vae = AutoEncoderKL::new(vb, 3, 3, cfg)?;
        Ok(Self { vae })
    }
}

impl LatentCodec for SdVae {
    fn encode(&self, rgb: &Tensor) -> Result<Tensor> {
        check_rgb(rgb, CODEC_FACTOR, "SD VAE")?;
        let x = ((rgb * 2.0)? - 1.0)?;
        self.vae.encode(&x)?.sample()
    }

    fn decode(&self, latent: &Tensor) -> Result<Tensor> {
        check_latent(latent, "SD VAE")?;
        let x = self.vae.decode(latent)?;
        ((x + 1.0)? * 0.5)?.clamp(0f32, 1f32)
    }
}

/// Serves every tensor from `inner` except `quant_conv`'s log-variance half (see
/// [`SdVae::new`]).
struct MeanOnly<'a> {
    inner: VarBuilder<'a>,
    latent_channels: usize,
}

impl SimpleBackend for MeanOnly<'_> {
    fn get(
        &self,
        s: Shape,
        name: &str,
        init: candle_nn::Init,
        dtype: DType,
        dev: &candle_core::Device,
    ) -> Result<Tensor> {
        let t = self
            .inner
            .get_with_hints_dtype(s.clone(), name, init, dtype)?
            .to_device(dev)?;
        let l = self.latent_channels;
        let fill = match name {
            "quant_conv.weight" => 0.0,
            "quant_conv.bias" => -1e4,
            _ => return Ok(t),
        };
        if t.dim(0)? != 2 * l {
            bail!(
                "tensor `{name}` has shape {:?}, expected {} output channels",
                t.dims(),
                2 * l
            );
        }
        let mean = t.narrow(0, 0, l)?;
        let logvar = (mean.zeros_like()? + fill)?;
        Tensor::cat(&[&mean, &logvar], 0)
    }

    fn get_unchecked(&self, name: &str, dtype: DType, dev: &candle_core::Device) -> Result<Tensor> {
        self.inner.get_unchecked_dtype(name, dtype)?.to_device(dev)
    }

    fn contains_tensor(&self, name: &str) -> bool {
        self.inner.contains_tensor(name)
    }
}

/// Shape of a [`SmallCodec`].
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct SmallCodecConfig {
    /// Channels after each of the three stride-2 stages, finest first (the decoder mirrors them).
    pub channels: [usize; 3],
    /// GroupNorm groups everywhere.
    pub norm_groups: usize,
}

impl Default for SmallCodecConfig {
    /// 16/32/64 channels: about 0.1 M parameters, a few ms per 512² frame pair on two cores.
    fn default() -> Self {
        Self {
            channels: [16, 32, 64],
            norm_groups: 8,
        }
    }
}

impl SmallCodecConfig {
    /// Checks the numbers fit together.
    pub fn validate(&self) -> Result<()> {
        let g = self.norm_groups;
        for c in self.channels {
            if c == 0 || g == 0 || !c.is_multiple_of(g) {
                bail!(
                    "small codec config: {c} channels are not a positive multiple of norm_groups {g}"
                );
            }
        }
        Ok(())
    }
}

#[derive(Debug, Clone)]
struct ConvNorm {
    conv: FastConv2d,
    norm: FusedGroupNorm,
}

impl ConvNorm {
    fn new(c_in: usize, c_out: usize, stride: usize, g: usize, vb: VarBuilder) -> Result<Self> {
        Ok(Self {
            conv: conv3x3(c_in, c_out, stride, vb.pp("conv"))?,
            norm: crate::model::fastconv::group_norm(g, c_out, 1e-5, vb.pp("norm"))?,
        })
    }

    fn forward(&self, x: &Tensor) -> Result<Tensor> {
        self.norm
            .forward_act(&self.conv.forward(x)?, Activation::Silu)
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

/// Our small f=8 autoencoder:
///
/// ```text
/// encode: x*2-1 -> 3 x (conv3x3/2 -> GN -> SiLU) -> conv3x3 -> latent [4, H/8, W/8]
/// decode: conv3x3 -> GN -> SiLU -> 3 x (nearest x2 -> conv3x3 -> GN -> SiLU) -> conv3x3
///         -> (y+1)/2
/// ```
///
/// Weight names: `encoder.stages.{i}.{conv,norm}`, `encoder.conv_out`, `decoder.conv_in.{conv,
/// norm}`, `decoder.stages.{i}.{conv,norm}`, `decoder.conv_out`. Untrained until the training
/// issue; its latents are *not* SD latents, so a decoder trained on one codec's latents needs
/// retraining for the other.
#[derive(Debug, Clone)]
pub struct SmallCodec {
    cfg: SmallCodecConfig,
    enc: Vec<ConvNorm>,
    enc_out: FastConv2d,
    dec_in: ConvNorm,
    dec: Vec<ConvNorm>,
    dec_out: FastConv2d,
}

impl SmallCodec {
    /// Builds the codec, asking `vb` for the tensors named in the type's docs.
    pub fn new(cfg: &SmallCodecConfig, vb: VarBuilder) -> Result<Self> {
        cfg.validate()?;
        let [c0, c1, c2] = cfg.channels;
        let g = cfg.norm_groups;
        let ve = vb.pp("encoder");
        let enc = [(3, c0), (c0, c1), (c1, c2)]
            .iter()
            .enumerate()
            .map(|(i, &(a, b))| ConvNorm::new(a, b, 2, g, ve.pp("stages").pp(i)))
            .collect::<Result<Vec<_>>>()?;
        let enc_out = conv3x3(c2, LATENT_CHANNELS, 1, ve.pp("conv_out"))?;
        let vd = vb.pp("decoder");
        let dec_in = ConvNorm::new(LATENT_CHANNELS, c2, 1, g, vd.pp("conv_in"))?;
        let dec = [(c2, c1), (c1, c0), (c0, c0)]
            .iter()
            .enumerate()
            .map(|(i, &(a, b))| ConvNorm::new(a, b, 1, g, vd.pp("stages").pp(i)))
            .collect::<Result<Vec<_>>>()?;
        let dec_out = conv3x3(c0, 3, 1, vd.pp("conv_out"))?;
        Ok(Self {
            cfg: cfg.clone(),
            enc,
            enc_out,
            dec_in,
            dec,
            dec_out,
        })
    }

    /// The configuration it was built with.
    pub fn config(&self) -> &SmallCodecConfig {
        &self.cfg
    }

    /// The decoder's output before the clip to [0, 1], for training losses (clipping would
    /// zero the gradient of out-of-range pixels).
    pub fn decode_unclipped(&self, latent: &Tensor) -> Result<Tensor> {
        check_latent(latent, "small codec")?;
        let mut x = self.dec_in.forward(latent)?;
        for s in &self.dec {
            x = s.forward(&crate::model::fastconv::upsample_nearest2x(&x)?)?;
        }
        (self.dec_out.forward(&x)? + 1.0)? * 0.5
    }
}

impl LatentCodec for SmallCodec {
    fn encode(&self, rgb: &Tensor) -> Result<Tensor> {
        check_rgb(rgb, CODEC_FACTOR, "small codec")?;
        let mut x = ((rgb * 2.0)? - 1.0)?;
        for s in &self.enc {
            x = s.forward(&x)?;
        }
        self.enc_out.forward(&x)
    }

    fn decode(&self, latent: &Tensor) -> Result<Tensor> {
        self.decode_unclipped(latent)?.clamp(0f32, 1f32)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::model::weights::{Checkpoint, Manifest};
    use candle_core::{Device, Var};
    use candle_nn::VarMap;

    const SD15_VAE: &str = include_str!("../../../tests/reference/manifests/sd15_vae.json");

    #[test]
    fn every_sd_vae_tensor_resolves_with_its_shape() {
        let dev = Device::Cpu;
        let manifest = Manifest::from_json(SD15_VAE).expect("manifest");
        let tensors = manifest
            .placeholder_tensors(DType::F32, &dev)
            .expect("placeholders");
        let ck = Checkpoint::from_tensors(tensors.clone(), "sd15_vae.json");
        // `build` fails if the model leaves any tensor of the file unused.
        ck.build("SD VAE", DType::F32, &dev, SdVae::new)
            .expect("every tensor resolves");

        let mut missing = tensors.clone();
        missing.remove("decoder.up_blocks.1.resnets.2.conv2.weight");
        let e = Checkpoint::from_tensors(missing, "vae.safetensors")
            .build("SD VAE", DType::F32, &dev, SdVae::new)
            .expect_err("missing");
        let msg = e.to_string();
        assert!(
            msg.contains("`decoder.up_blocks.1.resnets.2.conv2.weight`") && msg.contains("missing"),
            "{msg}"
        );
        assert!(msg.contains("vae.safetensors"), "{msg}");

        let mut bad = tensors;
        let wrong = Tensor::zeros((8, 4, 1, 1), DType::F32, &dev).expect("zeros");
        bad.insert("quant_conv.weight".into(), wrong);
        let e = Checkpoint::from_tensors(bad, "vae.safetensors")
            .build("SD VAE", DType::F32, &dev, SdVae::new)
            .expect_err("mis-shaped");
        let msg = e.to_string();
        assert!(
            msg.contains("`quant_conv.weight` has shape [8, 4, 1, 1], expected [8, 8, 1, 1]"),
            "{msg}"
        );
    }

    #[test]
    fn sd_vae_encodes_the_posterior_mean() {
        // A VAE with all weights filled by a fixed rule: encoding twice must give the same
        // latent (sampling would add fresh noise each time).
        let dev = Device::Cpu;
        let manifest = Manifest::from_json(SD15_VAE).expect("manifest");
        let tensors = manifest.golden_tensors(DType::F32, &dev).expect("fill");
        let ck = Checkpoint::from_tensors(tensors, "golden");
        let vae = ck
            .build("SD VAE", DType::F32, &dev, SdVae::new)
            .expect("build");
        let rgb = Tensor::rand(0f32, 1f32, (1, 3, 16, 16), &dev).expect("rgb");
        let a = vae.encode(&rgb).expect("encode");
        let b = vae.encode(&rgb).expect("encode");
        assert_eq!(a.dims(), &[1, 4, 2, 2]);
        let (a, b): (Vec<f32>, Vec<f32>) = (
            a.flatten_all().and_then(|t| t.to_vec1()).expect("a"),
            b.flatten_all().and_then(|t| t.to_vec1()).expect("b"),
        );
        assert_eq!(a, b);
        assert!(a.iter().all(|v| v.is_finite()));
        assert!(a.iter().any(|v| v.abs() > 1e-6));
        let y = vae
            .decode(&Tensor::zeros((1, 4, 2, 2), DType::F32, &dev).expect("z"))
            .expect("decode");
        assert_eq!(y.dims(), &[1, 3, 16, 16]);
        assert!(vae.encode(&rgb.narrow(3, 0, 12).expect("n")).is_err());
    }

    #[test]
    fn small_codec_shapes_and_gradients() {
        let dev = Device::Cpu;
        let cfg = SmallCodecConfig {
            channels: [8, 8, 16],
            norm_groups: 4,
        };
        let varmap = VarMap::new();
        let vb = VarBuilder::from_varmap(&varmap, DType::F32, &dev);
        let codec = SmallCodec::new(&cfg, vb).expect("build");
        let rgb = Tensor::rand(0f32, 1f32, (2, 3, 32, 40), &dev).expect("rgb");
        let z = codec.encode(&rgb).expect("encode");
        assert_eq!(z.dims(), &[2, 4, 4, 5]);
        let y = codec.decode(&z).expect("decode");
        assert_eq!(y.dims(), &[2, 3, 32, 40]);
        let v: Vec<f32> = y.flatten_all().and_then(|t| t.to_vec1()).expect("v");
        assert!(v.iter().all(|x| (0.0..=1.0).contains(x)));
        // Any size: padded up, latent ceil(H/8), decoded and cropped back.
        let odd = rgb.narrow(2, 0, 27).expect("n");
        let z = codec.encode_any_size(&odd).expect("encode");
        assert_eq!(z.dims(), &[2, 4, 4, 5]);
        let back = codec.decode_to_size(&z, 27, 40).expect("decode");
        assert_eq!(back.dims(), &[2, 3, 27, 40]);
        assert!(codec.encode(&odd).is_err(), "unpadded odd size");

        let loss = (codec
            .decode_unclipped(&codec.encode(&rgb).expect("e"))
            .expect("d")
            - &rgb)
            .and_then(|d| d.sqr())
            .and_then(|d| d.mean_all())
            .expect("loss");
        let grads = loss.backward().expect("backward");
        let data = varmap.data().lock().expect("lock");
        assert_eq!(
            data.len(),
            2 * (3 + 1 + 3) * 2 + 2 * 2,
            "conv w/b + norm w/b"
        );
        for (name, var) in data.iter() {
            let g = grads
                .get(Var::as_tensor(var))
                .unwrap_or_else(|| panic!("no gradient for {name}"));
            let n = g
                .abs()
                .and_then(|g| g.sum_all())
                .and_then(|g| g.to_scalar::<f32>())
                .expect("norm");
            assert!(n > 0.0, "zero gradient for {name}");
        }
        let bad = SmallCodecConfig {
            channels: [8, 6, 16],
            norm_groups: 4,
        };
        assert!(bad.validate().is_err());
    }
}

//! The embedded default generator (issue 6, path 2): prompt words -> a 16-frame latent clip ->
//! RGB frames over a key colour -> RGBA through the ILDiff decoder.
//!
//! - [`words`]: the closed vocabulary and the learned word embeddings ([`WordConditioner`]).
//! - [`unet`]: the small factorised space-time latent UNet ([`GenUnet`], a
//!   [`crate::model::diffusion::Denoiser`]).
//!
//! **Latent space.** A small codec's (`crate::model::SmallCodec`: 4 channels, 1/8 size), whose
//! tensors the model file carries under `codec.` so the generator is self-contained. It need
//! not be the matting model's codec: the shipped generator has its own, trained on stickers
//! over the key (`ildiff train codec --over-key`), because the matting model's codec, trained
//! on photos and hard backgrounds, decoded flat magenta as a dull purple (on the generator's
//! data, L1 error 0.30 over the canvas and 0.20 over the sticker, against 0.026 and 0.13 for
//! the generator's own; `train::codec` tests, `codec_error_over_the_key`), and a generator
//! can only paint what its codec decodes.
//! The matting model re-encodes the decoded frames with its own codec. The UNet
//! works on *normalised* latents `(z - mean) / std` per channel ([`GenConfig::latent_mean`],
//! [`GenConfig::latent_std`], measured on the training data when training starts), the role of
//! SD's 0.18215: pure noise then has the data's scale, and the sampler needs no constant of its
//! own. [`GenModel::to_diffusion`] / [`GenModel::from_diffusion`] convert.
//!
//! **Noise schedule.** SD-1.5's betas (1000 training steps, scaled-linear from 0.00085 to
//! 0.012), which the DDIM and Euler-ancestral samplers written for SD-1.5 know. New generators
//! rescale them to zero terminal SNR and predict v ([`NoiseSchedule::zero_snr_v`]): with SD's
//! own ending (ᾱ = 0.0047, **epsilon** prediction, what the first shipped generator used) the
//! model read the layout from the seed's noise and ignored the prompt.
//!
//! **Transparency (a simplification of LayerDiffuse).** LayerDiffuse encodes transparency as a
//! small *offset* added to the SD latent of the premultiplied-over-grey image, so that the
//! latent stays on the SD manifold while carrying alpha, and decodes it with a dedicated
//! transparent decoder. We do something plainer: training clips are composited over one flat
//! key colour ([`GenConfig::key_colour`]) and the generator learns to paint its stickers over
//! that colour; the ILDiff decoder (`crate::model::IldiffDecoder`, whose CPU default takes a
//! colour-key prior from the frame border, see `crate::model::KeyPrior`) turns the decoded
//! frames and their latents into RGBA. Alpha is thus recovered by matting against a known
//! flat background rather than carried in the latent: exact for opaque parts, approximate at
//! soft edges and for translucent glows/shadows, and a sticker part of the key's own colour
//! would be keyed out. The default key is magenta `(1, 0, 1)`: the classic sprite key, it is
//! far from the skin, yellow, red, green, blue and brown that most emoji and our procedural
//! subjects are made of (pink is 0.5 away in RGB distance, well beyond the key prior's 0.2
//! ramp), and as a corner of the RGB cube it cannot be confused with a mix of two sticker
//! colours at an anti-aliased edge.
//!
//! **File.** One safetensors file: `words.*` (embeddings), `unet.*`, `codec.*`, and in the
//! metadata under [`GENERATOR_KEY`] a JSON object `{ "config": GenConfig, "vocabulary":
//! Vocabulary }`. [`load_generator`] checks every tensor by name and shape.

pub mod unet;
pub mod words;

use std::collections::HashMap;
use std::path::Path;

use candle_core::{DType, Device, Tensor};
use candle_nn::{VarBuilder, VarMap};
use serde::{Deserialize, Serialize};

pub use unet::{GenUnet, GenUnetConfig, context_per_clip};
pub use words::{ConditionerConfig, Entry, PAD, Vocabulary, WordConditioner, WordGroup};

use crate::model::weights::{Checkpoint, header_metadata, varmap_tensors};
use crate::model::{SmallCodec, SmallCodecConfig};
use crate::{Error, Result};

/// Metadata key of a generator file's configuration and vocabulary.
pub const GENERATOR_KEY: &str = "ildiff_generator";

pub use crate::model::diffusion::Prediction;

/// The diffusion process the model was trained with (a sampler must use the same).
#[derive(Debug, Clone, Copy, PartialEq, Serialize, Deserialize)]
pub struct NoiseSchedule {
    pub train_steps: usize,
    pub beta_start: f64,
    pub beta_end: f64,
    /// Always "scaled_linear": betas = linspace(√start, √end, steps)².
    pub beta_schedule: BetaSchedule,
    pub prediction: Prediction,
    /// ᾱ rescaled to reach 0 at the last step
    /// ([`crate::model::diffusion::rescale_zero_terminal_snr`]); false in files written
    /// before it existed.
    #[serde(default)]
    pub zero_terminal_snr: bool,
}

/// How betas are spaced.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum BetaSchedule {
    ScaledLinear,
}

impl Default for NoiseSchedule {
    /// SD-1.5's schedule.
    fn default() -> Self {
        Self {
            train_steps: 1000,
            beta_start: 0.00085,
            beta_end: 0.012,
            beta_schedule: BetaSchedule::ScaledLinear,
            prediction: Prediction::Epsilon,
            zero_terminal_snr: false,
        }
    }
}

impl NoiseSchedule {
    /// SD-1.5's betas rescaled to zero terminal SNR, with v-prediction: what new generators
    /// train with (see [`crate::model::diffusion::rescale_zero_terminal_snr`] for why).
    pub fn zero_snr_v() -> Self {
        Self {
            prediction: Prediction::V,
            zero_terminal_snr: true,
            ..Self::default()
        }
    }

    /// ᾱ_t (the cumulative product of 1 - β) for t = 0..train_steps.
    pub fn alphas_cumprod(&self) -> Vec<f64> {
        let BetaSchedule::ScaledLinear = self.beta_schedule;
        crate::model::diffusion::alphas_cumprod(
            self.train_steps.max(1),
            self.beta_start,
            self.beta_end,
            true,
            self.zero_terminal_snr,
        )
    }
}

/// Everything about a generator besides its weights and words.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct GenConfig {
    pub unet: GenUnetConfig,
    pub conditioner: ConditionerConfig,
    /// The codec whose latents the model denoises (its tensors are in the file as `codec.*`).
    pub codec: SmallCodecConfig,
    /// Where the codec came from when training started (informational).
    #[serde(default)]
    pub codec_source: String,
    /// Flat background (8-bit RGB) the stickers are painted over (see the module docs).
    pub key_colour: [u8; 3],
    /// Per-channel mean of the codec's latents on the training data. Rounded to 4 decimals
    /// (as is `latent_std`), so the JSON text round-trips exactly and a resumed run's
    /// configuration compares equal.
    pub latent_mean: [f64; 4],
    /// Per-channel standard deviation of the codec's latents on the training data.
    pub latent_std: [f64; 4],
    pub schedule: NoiseSchedule,
    /// Clip length it was trained on (generate this many frames).
    pub frames: usize,
    /// Sticker side in pixels it was trained on (latents are size / 8).
    pub size: usize,
    /// Share `s` of the noise's variance common to all frames of a clip: each frame's noise
    /// is `√s · shared + √(1 - s) · own` (the "mixed noise" of PYoCo, Ge et al. 2023), in
    /// training and in sampling alike. Why: frames of a sticker are nearly the same picture,
    /// and independent noise per frame makes the model invent that sameness from nothing;
    /// with shared noise the frames start alike. 0 (files written before it existed):
    /// independent noise.
    #[serde(default)]
    pub frame_noise_share: f64,
}

/// The default key colour: magenta (see the module docs for why).
pub const DEFAULT_KEY: [u8; 3] = [255, 0, 255];

impl GenConfig {
    /// The shipped shape with unit latent statistics (training measures the real ones).
    pub fn default_shape() -> Self {
        Self {
            unet: GenUnetConfig::default(),
            conditioner: ConditionerConfig::default(),
            codec: SmallCodecConfig::default(),
            codec_source: String::new(),
            key_colour: DEFAULT_KEY,
            latent_mean: [0.0; 4],
            latent_std: [1.0; 4],
            schedule: NoiseSchedule::zero_snr_v(),
            frames: 16,
            size: 256,
            frame_noise_share: 0.5,
        }
    }

    /// A tiny shape for tests.
    pub fn tiny() -> Self {
        Self {
            unet: GenUnetConfig::tiny(),
            conditioner: ConditionerConfig {
                dim: 8,
                max_tokens: 4,
            },
            codec: SmallCodecConfig {
                channels: [8, 8, 8],
                norm_groups: 4,
            },
            frames: 4,
            size: 32,
            ..Self::default_shape()
        }
    }

    /// The key colour as RGB in [0, 1].
    pub fn key_rgb(&self) -> [f32; 3] {
        self.key_colour.map(|c| f32::from(c) / 255.0)
    }

    /// Checks the parts fit together.
    pub fn validate(&self) -> Result<()> {
        let bad = |m: String| Err(Error::Model(format!("generator config: {m}")));
        self.unet
            .validate()
            .map_err(|e| Error::Model(e.to_string()))?;
        self.codec
            .validate()
            .map_err(|e| Error::Model(e.to_string()))?;
        if self.unet.context_dim != self.conditioner.dim {
            return bad(format!(
                "the UNet reads {}-wide contexts but the words are {} wide",
                self.unet.context_dim, self.conditioner.dim
            ));
        }
        if self.latent_std.iter().any(|s| !(s.is_finite() && *s > 0.0))
            || self.latent_mean.iter().any(|m| !m.is_finite())
        {
            return bad("latent statistics out of range".into());
        }
        if !(0.0..1.0).contains(&self.frame_noise_share) {
            return bad(format!(
                "frame_noise_share {} is outside [0, 1)",
                self.frame_noise_share
            ));
        }
        let m = 8 * self.unet.size_multiple();
        if self.frames == 0 || self.size == 0 || !self.size.is_multiple_of(m) {
            return bad(format!(
                "{} frames at {}² (the side must be a multiple of {m})",
                self.frames, self.size
            ));
        }
        Ok(())
    }
}

/// A loaded generator: words, denoiser, codec and configuration.
#[derive(Debug, Clone)]
pub struct GenModel {
    pub config: GenConfig,
    pub conditioner: WordConditioner,
    pub unet: GenUnet,
    pub codec: SmallCodec,
}

impl GenModel {
    /// Builds the three parts from one `VarBuilder` (names `words.*`, `unet.*`, `codec.*`).
    pub fn new(config: &GenConfig, vocab: Vocabulary, vb: VarBuilder) -> candle_core::Result<Self> {
        config
            .validate()
            .map_err(|e| candle_core::Error::Msg(e.to_string()))?;
        Ok(Self {
            conditioner: WordConditioner::new(config.conditioner, vocab, vb.pp("words"))?,
            unet: GenUnet::new(&config.unet, vb.pp("unet"))?,
            codec: SmallCodec::new(&config.codec, vb.pp("codec"))?,
            config: config.clone(),
        })
    }

    /// Latent side for the trained sticker size.
    pub fn latent_size(&self) -> usize {
        self.config.size / crate::model::codec::CODEC_FACTOR
    }

    fn stats(&self, device: &Device) -> candle_core::Result<(Tensor, Tensor)> {
        let t = |v: &[f64; 4]| Tensor::new(&v.map(|x| x as f32), device)?.reshape((1, 4, 1, 1));
        Ok((t(&self.config.latent_mean)?, t(&self.config.latent_std)?))
    }

    /// Codec latent `[N, 4, h, w]` -> the normalised latent the UNet denoises.
    pub fn to_diffusion(&self, z: &Tensor) -> candle_core::Result<Tensor> {
        let (m, s) = self.stats(z.device())?;
        z.broadcast_sub(&m)?.broadcast_div(&s)
    }

    /// The UNet's normalised latent -> a codec latent (for `codec.decode` and the ILDiff
    /// decoder).
    pub fn from_diffusion(&self, x: &Tensor) -> candle_core::Result<Tensor> {
        let (m, s) = self.stats(x.device())?;
        x.broadcast_mul(&s)?.broadcast_add(&m)
    }

    /// The key colour as RGB in [0, 1].
    pub fn key_rgb(&self) -> [f32; 3] {
        self.config.key_rgb()
    }
}

/// The metadata JSON of a generator file.
#[derive(Debug, Clone, Serialize, Deserialize)]
struct FileMeta {
    config: GenConfig,
    vocabulary: Vocabulary,
}

fn no_meta(source: &str) -> Error {
    Error::Model(format!(
        "not an ILDiff generator (no `{GENERATOR_KEY}` in its metadata): {source}"
    ))
}

/// The configuration and vocabulary of a generator checkpoint.
fn read_meta(ck: &Checkpoint) -> Result<(GenConfig, Vocabulary)> {
    let json = ck
        .metadata(GENERATOR_KEY)
        .ok_or_else(|| no_meta(ck.source()))?;
    parse_meta(json, ck.source())
}

fn parse_meta(json: &str, source: &str) -> Result<(GenConfig, Vocabulary)> {
    let value: serde_json::Value = serde_json::from_str(json)
        .map_err(|e| Error::Model(format!("invalid generator metadata ({e}): {source}")))?;
    let config: GenConfig =
        serde_json::from_value(value.get("config").cloned().unwrap_or_default())
            .map_err(|e| Error::Model(format!("invalid generator config ({e}): {source}")))?;
    let vocab_json = value
        .get("vocabulary")
        .map(|v| v.to_string())
        .unwrap_or_default();
    let vocab =
        Vocabulary::from_json(&vocab_json).map_err(|e| Error::Model(format!("{e}: {source}")))?;
    config
        .validate()
        .map_err(|e| Error::Model(format!("{e}: {source}")))?;
    Ok((config, vocab))
}

/// Builds a generator from a checkpoint's tensors and metadata, insisting every tensor fits.
pub fn build_generator(ck: &Checkpoint, dtype: DType, device: &Device) -> Result<GenModel> {
    let (config, vocab) = read_meta(ck)?;
    ck.build("generator", dtype, device, |vb| {
        GenModel::new(&config, vocab, vb)
    })
}

/// Loads a generator file written by [`save_generator`] (f32 on the CPU): configuration and
/// vocabulary from its metadata, then every tensor checked by name and shape; errors name the
/// file and the offending tensor.
pub fn load_generator(path: &Path) -> Result<GenModel> {
    load_generator_on(path, DType::F32, &Device::Cpu)
}

/// [`load_generator`] onto a chosen dtype and device.
pub fn load_generator_on(path: &Path, dtype: DType, device: &Device) -> Result<GenModel> {
    let ck = Checkpoint::read(path, dtype, device)?;
    build_generator(&ck, dtype, device)
}

/// The configuration and vocabulary of a generator file from its header alone (no tensor is
/// read), for the UI.
pub fn read_vocabulary(path: &Path) -> Result<(GenConfig, Vocabulary)> {
    let source = path.display().to_string();
    let json = header_metadata(path, GENERATOR_KEY)?.ok_or_else(|| no_meta(&source))?;
    parse_meta(&json, &source)
}

/// Writes the generator whose variables are `varmap` (names `words.*`, `unet.*`, `codec.*`;
/// others, e.g. optimiser state, are left out). The tensors are checked against `config` and
/// `vocab` first, exactly as [`load_generator`] will, so an unloadable file is never written.
/// Atomic; returns the size.
pub fn save_generator(
    varmap: &VarMap,
    config: &GenConfig,
    vocab: &Vocabulary,
    path: &Path,
) -> Result<u64> {
    let tensors: HashMap<String, Tensor> = varmap_tensors(varmap)
        .into_iter()
        .filter(|(n, _)| {
            ["words.", "unet.", "codec."]
                .iter()
                .any(|p| n.starts_with(p))
        })
        .collect();
    save_tensors(&tensors, config, vocab, path)
}

/// [`save_generator`] from named tensors.
pub fn save_tensors(
    tensors: &HashMap<String, Tensor>,
    config: &GenConfig,
    vocab: &Vocabulary,
    path: &Path,
) -> Result<u64> {
    let fail = |e: &dyn std::fmt::Display| {
        Error::Model(format!(
            "cannot write the generator ({e}): {}",
            path.display()
        ))
    };
    let meta = FileMeta {
        config: config.clone(),
        vocabulary: vocab.clone(),
    };
    let json = serde_json::to_string(&meta).map_err(|e| fail(&e))?;
    let host = tensors
        .iter()
        .map(|(name, t)| {
            Ok((
                name.as_str(),
                t.to_device(&Device::Cpu)?
                    .to_dtype(DType::F32)?
                    .contiguous()?,
            ))
        })
        .collect::<candle_core::Result<Vec<(&str, Tensor)>>>()
        .map_err(|e| fail(&e))?;
    let info = HashMap::from([(GENERATOR_KEY.to_string(), json)]);
    let bytes = safetensors::serialize(host, Some(info)).map_err(|e| fail(&e))?;
    // Check the exact bytes as loading will read them.
    let ck = Checkpoint::from_bytes(&bytes, "the generator to save", DType::F32, &Device::Cpu)?;
    build_generator(&ck, DType::F32, &Device::Cpu)
        .map_err(|e| Error::Model(format!("not saving {}: {e}", path.display())))?;
    super::weights::write_weights(path, &bytes)
}

#[cfg(test)]
mod tests;

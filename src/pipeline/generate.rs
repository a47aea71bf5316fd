//! Prompt to transparent animated sticker: text conditioning, the sampler over a
//! [`Denoiser`], latent decoding and transparency decoding, with progress, cancel and frames
//! streamed as they finish.
//!
//! A [`Generator`] is one *model family*, loaded: its [`TextConditioner`] (CLIP for SD-1.5, a
//! word-vocabulary conditioner for the embedded default), its [`Denoiser`], the
//! [`LatentCodec`] whose latent space the denoiser works in (with the scale between the codec's
//! unscaled latent and the diffusion latent), its noise schedule, and the transparency decoder
//! that turns RGB + latent into RGBA. [`generate`] knows nothing about which family it runs,
//! so the embedded default plugs in by filling a `Generator` with its own parts.
//!
//! Memory stays bounded: classifier-free guidance runs the unconditional and conditional
//! predictions one after the other (not as one doubled batch), and frames are decoded in
//! chunks. The same seed gives the same clip on every machine ([`NoiseRng`]).

use std::path::Path;
use std::sync::Arc;

use candle_core::{DType, Device, Tensor};
use image::RgbaImage;

use super::matte::{MatteOptions, animation_from_matte, matte_clip_windows};
use super::models::{default_model, find_installed};
use super::scheduler::{NoiseRng, NoiseSchedule, Sampler, SchedulerKind, Spacing};
use super::sd_models::load_decoder;
use crate::media::{Animation, Delay, Frame, LoopCount};
use crate::model::clip::{ClipTextEncoder, ClipTokenizer};
use crate::model::diffusion::Denoiser;
use crate::model::generator::{WordConditioner, load_generator_on, read_vocabulary};
use crate::model::{IldiffDecoder, LatentCodec, TransparentDecoder};
use crate::{Error, Progress, Result};

/// Progress stage names, in order.
pub const STAGE_TEXT: &str = "text";
pub const STAGE_DENOISE: &str = "denoise";
pub const STAGE_DECODE: &str = "decode latents";
pub const STAGE_MATTE: &str = "transparency";

/// What to generate.
#[derive(Debug, Clone, PartialEq)]
pub struct GenerateRequest {
    pub prompt: String,
    /// The negative prompt: its conditioning is the "unconditional" side of guidance.
    pub negative: String,
    pub seed: u64,
    pub steps: usize,
    /// Frames of the clip (16: AnimateDiff's native window).
    pub frames: usize,
    /// Output size in pixels; `None` = the generator's default (512 for SD-1.5).
    pub size: Option<(u32, u32)>,
    /// Classifier-free guidance scale; 1 runs the conditional prediction only.
    pub guidance: f64,
    /// Guidance rescale φ in [0, 1] (see [`rescale_guidance`]); 0 = plain guidance.
    pub guidance_rescale: f64,
    pub scheduler: SchedulerKind,
    /// `None` = the schedule's default spacing (see [`NoiseSchedule::default_spacing`]).
    pub spacing: Option<Spacing>,
    /// Playback rate of the result.
    pub fps: u32,
    /// Caps on the clip's size and length (the CLI's `--max-*` flags).
    pub limits: crate::media::Limits,
}

impl Default for GenerateRequest {
    fn default() -> Self {
        Self {
            prompt: String::new(),
            negative: String::new(),
            seed: 0,
            steps: 25,
            frames: 16,
            size: None,
            guidance: 7.5,
            guidance_rescale: 0.0,
            scheduler: SchedulerKind::Ddim,
            spacing: None,
            fps: 8,
            limits: crate::media::Limits::default(),
        }
    }
}

/// A prompt's conditioning and what the conditioner could not use.
#[derive(Debug, Clone)]
pub struct Conditioning {
    /// `[1, tokens, dim]`: what the denoiser attends to.
    pub context: Tensor,
    /// Words (or pieces) the conditioner does not know: shown to the user, never silently
    /// dropped.
    pub unknown: Vec<String>,
    /// Tokens cut because the prompt is too long.
    pub truncated: usize,
}

/// Turns a prompt into a denoiser's context.
pub trait TextConditioner: Send + Sync {
    fn encode(&self, prompt: &str) -> Result<Conditioning>;

    /// The words this conditioner knows, for the UI; `None` for an open vocabulary (CLIP).
    fn vocabulary(&self) -> Option<Vec<String>> {
        None
    }
}

/// SD's text conditioning: CLIP tokenizer + text encoder, last hidden state.
pub struct ClipConditioner {
    pub tokenizer: ClipTokenizer,
    pub encoder: ClipTextEncoder,
    pub device: Device,
}

impl TextConditioner for ClipConditioner {
    fn encode(&self, prompt: &str) -> Result<Conditioning> {
        let tokens = self.tokenizer.encode(prompt);
        let context = self
            .encoder
            .encode_ids(&tokens.ids, &self.device)
            .map_err(err("the text encoder"))?;
        Ok(Conditioning {
            context,
            unknown: tokens.unknown,
            truncated: tokens.truncated,
        })
    }
}

/// The decoder that makes RGBA from RGB + latent.
pub enum TransparencyDecoder {
    /// The ILDiff decoder: temporal context across frames, decoded in windows.
    Ildiff {
        model: Box<IldiffDecoder>,
        window: usize,
    },
    /// LayerDiffuse's per-frame decoder, with its 8-pass augmentation when `tta` (the
    /// published setting; 8x slower). For comparison with ILDiff.
    LayerDiffuse {
        decoder: Box<TransparentDecoder>,
        tta: bool,
    },
}

impl TransparencyDecoder {
    fn latent_channels(&self) -> usize {
        match self {
            TransparencyDecoder::Ildiff { model, .. } => model.config().decoder.latent_channels,
            TransparencyDecoder::LayerDiffuse { decoder, .. } => decoder.config().latent_channels,
        }
    }

    fn latent_factor(&self) -> usize {
        match self {
            TransparencyDecoder::Ildiff { model, .. } => model.config().decoder.latent_factor(),
            TransparencyDecoder::LayerDiffuse { decoder, .. } => decoder.config().latent_factor(),
        }
    }
}

/// How a family's diffusion latent relates to its codec's unscaled latent, per channel:
/// `codec = diffusion * std + mean`. SD-1.5: mean 0, std 1 / 0.18215; the embedded default
/// normalises each channel by statistics measured on its training data.
#[derive(Debug, Clone, PartialEq)]
pub struct LatentNorm {
    pub mean: Vec<f64>,
    pub std: Vec<f64>,
}

impl LatentNorm {
    /// One scale for every channel (SD's `scaling_factor`): diffusion = codec x `factor`.
    pub fn scale(factor: f64) -> Self {
        Self {
            mean: vec![0.0],
            std: vec![1.0 / factor],
        }
    }

    /// Diffusion latent `[N, C, h, w]` -> codec latent.
    pub fn to_codec(&self, x: &Tensor) -> Result<Tensor> {
        let e = err("latent conversion");
        let c = x.dim(1).map_err(&e)?;
        let per = |v: &[f64]| -> Result<Tensor> {
            let vals: Vec<f32> = match v.len() {
                1 => vec![v[0] as f32; c],
                n if n == c => v.iter().map(|&a| a as f32).collect(),
                n => {
                    return Err(Error::Model(format!(
                        "latent statistics for {n} channels, the latent has {c}"
                    )));
                }
            };
            Tensor::from_vec(vals, (1, c, 1, 1), x.device()).map_err(&e)
        };
        let (std, mean) = (per(&self.std)?, per(&self.mean)?);
        x.broadcast_mul(&std)
            .and_then(|y| y.broadcast_add(&mean))
            .map_err(e)
    }
}

/// One model family, loaded and checked to fit together.
pub struct Generator {
    /// Shown in progress and reports ("SD-1.5 + AnimateDiff", "embedded default").
    pub name: String,
    pub conditioner: Arc<dyn TextConditioner>,
    pub denoiser: Arc<dyn Denoiser>,
    /// Decodes the denoised latents to RGB.
    pub codec: Arc<dyn LatentCodec>,
    /// Diffusion latent <-> the codec's unscaled latent.
    pub latent_norm: LatentNorm,
    pub schedule: NoiseSchedule,
    pub decoder: Arc<TransparencyDecoder>,
    /// Sizes must be multiples of this (64 for SD-1.5: three UNet downsamplings of /8 latents).
    pub size_multiple: u32,
    pub default_size: u32,
    /// Frames decoded per chunk by the codec (bounds memory).
    pub decode_chunk: usize,
    /// Frames the denoiser may see at once when it does not window long clips itself; longer
    /// clips are then denoised in overlapping windows here. `None`: the whole clip at once
    /// (the SD UNet windows inside `predict_noise`).
    pub frame_window: Option<usize>,
    /// Share of the noise's variance common to all frames (`GenConfig::frame_noise_share`
    /// for the embedded default, 0 for SD-1.5): sampling must draw noise as training did.
    pub frame_noise_share: f64,
    /// The flat colour the model paints its stickers over (RGB in [0, 1]), when it has one
    /// (the embedded default): the matte's colours are then unmixed from it exactly (see
    /// [`unmix_key`]). `None` for SD-1.5, whose background is unknown.
    pub key_colour: Option<[f32; 3]>,
    pub device: Device,
}

/// What [`generate`] returns.
#[derive(Debug, Clone)]
pub struct Generated {
    pub animation: Animation,
    /// Unknown words of the prompt and the negative prompt.
    pub unknown: Vec<String>,
    /// Prompt tokens cut for length.
    pub truncated: usize,
}

fn err(what: &'static str) -> impl Fn(candle_core::Error) -> Error {
    move |source| Error::Candle {
        context: what.into(),
        source,
    }
}

impl Generator {
    /// Checks that the parts agree (latent channels and factors) before any work starts.
    pub fn check(&self) -> Result<()> {
        let c = self.denoiser.latent_channels();
        let f = self.denoiser.latent_factor();
        let dc = self.decoder.latent_channels();
        let df = self.decoder.latent_factor();
        if c != dc || f != df || f != self.codec.factor() {
            return Err(Error::Model(format!(
                "{}: the parts do not fit: the denoiser makes {c}-channel latents at 1/{f}, the \
                 codec works at 1/{}, the transparency decoder takes {dc} channels at 1/{df}",
                self.name,
                self.codec.factor()
            )));
        }
        if self.size_multiple == 0 || !(self.size_multiple as usize).is_multiple_of(f) {
            return Err(Error::Model(format!(
                "{}: size multiple {} is not a multiple of the latent factor {f}",
                self.name, self.size_multiple
            )));
        }
        Ok(())
    }

    /// The output size of `request`, checked.
    pub fn size(&self, request: &GenerateRequest) -> Result<(u32, u32)> {
        let (w, h) = request
            .size
            .unwrap_or((self.default_size, self.default_size));
        let m = self.size_multiple;
        if w == 0 || h == 0 || !w.is_multiple_of(m) || !h.is_multiple_of(m) {
            return Err(Error::Invalid(format!(
                "size {w}x{h}: {} makes sizes that are positive multiples of {m} (e.g. {})",
                self.name, self.default_size
            )));
        }
        Ok((w, h))
    }
}

/// Where the embedded default generator is looked for (see
/// [`crate::pipeline::models::find_installed`]).
pub const DEFAULT_GENERATOR: &str = "models/default/generator.safetensors";

/// Environment variable naming the default generator file instead.
pub const DEFAULT_GENERATOR_ENV: &str = "ILDIFF_DEFAULT_GENERATOR";

/// Shown when no embedded default generator is installed and no user weights were given.
pub const NO_DEFAULT_GENERATOR: &str = "no default generator is installed \
     (models/default/generator.safetensors with the default matting model beside it). Point at \
     your own SD-1.5 weights instead: --model-dir DIR (a diffusers folder with unet/, vae/, \
     text_encoder/, tokenizer/) with --motion (AnimateDiff motion adapter), --layer-attn \
     (layer_sd15_transparent_attn.safetensors) and --decoder (an ILDiff checkpoint or \
     layer_sd15_vae_transparent_decoder.safetensors), or --hf-cache to use such weights already \
     in the Hugging Face cache";

/// The embedded default generator ([`DEFAULT_GENERATOR`]) with the default matting model as
/// its transparency decoder. When either is missing: an error saying so and how to use one's
/// own weights, never an untrained stand-in.
pub fn default_generator(device: &Device) -> Result<Generator> {
    let missing = || Error::Model(NO_DEFAULT_GENERATOR.into());
    let path = find_installed(DEFAULT_GENERATOR_ENV, DEFAULT_GENERATOR).ok_or_else(missing)?;
    let decoder = default_model().ok_or_else(missing)?;
    embedded_generator(&path, &decoder, device)
}

/// Which weights generate from: the one choice the CLI and the studio both make.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum GeneratorChoice {
    /// The installed default generator with the default matting model.
    Default,
    /// A generator file from `ildiff train generator` and its transparency decoder (`None` =
    /// the default matting model).
    File {
        generator: std::path::PathBuf,
        decoder: Option<std::path::PathBuf>,
    },
    /// The user's SD-1.5 + AnimateDiff + LayerDiffuse files.
    Sd(super::sd_models::SdFiles),
}

impl GeneratorChoice {
    /// The user's SD files, with what is still missing filled from the Hugging Face cache
    /// when `hf_cache`; [`GeneratorChoice::Default`] when the user gave nothing at all.
    pub fn user(files: super::sd_models::SdFiles, folder_given: bool, hf_cache: bool) -> Self {
        use super::sd_models::{discover_hf_cache, hf_cache_dir};
        let given = folder_given || hf_cache || !files.is_empty();
        let files = match hf_cache.then(hf_cache_dir).flatten() {
            Some(hub) => discover_hf_cache(&hub).overridden_by(files),
            None => files,
        };
        if given {
            GeneratorChoice::Sd(files)
        } else {
            GeneratorChoice::Default
        }
    }

    /// Checks the weights without generating: every SD file's tensor names and shapes (before
    /// anything heavy is loaded), or a generator file by loading it.
    pub fn check(&self, device: &Device) -> Result<()> {
        match self {
            GeneratorChoice::Sd(files) => files.check(),
            other => other.load(device).map(drop),
        }
    }

    /// Loads the generator. SD files are checked first, so a wrong download is named before
    /// gigabytes are read; a missing default is an error saying how to use one's own weights.
    pub fn load(&self, device: &Device) -> Result<Generator> {
        match self {
            GeneratorChoice::Default => default_generator(device),
            GeneratorChoice::File { generator, decoder } => {
                let decoder = match decoder {
                    Some(d) => d.clone(),
                    None => default_model().ok_or_else(|| {
                        Error::Model(
                            "--generator needs a transparency decoder: give --decoder (an \
                             ILDiff checkpoint on the generator's codec); no default matting \
                             model is installed"
                                .into(),
                        )
                    })?,
                };
                embedded_generator(generator, &decoder, device)
            }
            GeneratorChoice::Sd(files) => {
                files.check()?;
                let denoiser = super::sd_models::load_denoiser(files, device)?;
                files.load(denoiser, device)
            }
        }
    }
}

/// Words by group (subjects, colours, motions), as the prompt panel lists them.
pub type WordGroups = Vec<(String, Vec<String>)>;

/// The installed default generator's words by group, read from its file header (no weights
/// are loaded, so the UI can ask): `Ok(None)` when no default generator is installed.
pub fn default_vocabulary() -> Result<Option<WordGroups>> {
    match find_installed(DEFAULT_GENERATOR_ENV, DEFAULT_GENERATOR) {
        Some(path) => vocabulary_groups(&path).map(Some),
        None => Ok(None),
    }
}

/// A generator file's words by group, from its header.
pub fn vocabulary_groups(path: &Path) -> Result<WordGroups> {
    let (_, vocab) = read_vocabulary(path)?;
    Ok(vocab
        .groups()
        .into_iter()
        .map(|(g, words)| {
            (
                g.name().to_string(),
                words.into_iter().map(str::to_string).collect(),
            )
        })
        .collect())
}

/// A generator file written by `ildiff train generator` (word conditioner, latent UNet and its
/// codec) with an ILDiff checkpoint as the transparency decoder. The two may have different
/// codecs of the same shape of latent (4 channels at 1/8): the matting model re-encodes the
/// decoded frames with its own.
pub fn embedded_generator(path: &Path, decoder: &Path, device: &Device) -> Result<Generator> {
    let model = load_generator_on(path, DType::F32, device)?;
    let decoder = load_decoder(decoder, device)?;
    let config = model.config.clone();
    let s = config.schedule;
    let generator = Generator {
        name: "embedded default".into(),
        conditioner: Arc::new(WordPrompts {
            words: model.conditioner,
            device: device.clone(),
        }),
        denoiser: Arc::new(model.unet),
        codec: Arc::new(model.codec),
        latent_norm: LatentNorm {
            mean: config.latent_mean.to_vec(),
            std: config.latent_std.to_vec(),
        },
        schedule: NoiseSchedule {
            train_steps: s.train_steps,
            beta_start: s.beta_start,
            beta_end: s.beta_end,
            scaled_linear: true,
            steps_offset: 1,
            set_alpha_to_one: false,
            prediction: s.prediction,
            zero_terminal_snr: s.zero_terminal_snr,
        },
        decoder: Arc::new(decoder),
        size_multiple: (crate::model::codec::CODEC_FACTOR * config.unet.size_multiple()) as u32,
        default_size: config.size as u32,
        decode_chunk: 8,
        frame_window: None,
        frame_noise_share: config.frame_noise_share,
        key_colour: Some(config.key_rgb()),
        device: device.clone(),
    };
    generator.check()?;
    Ok(generator)
}

/// The embedded default's prompt reader: the closed word vocabulary. Words it does not know
/// are reported; an empty prompt (the usual negative prompt) is the all-padding context the
/// model was trained with as its null conditioning (caption dropout).
struct WordPrompts {
    words: WordConditioner,
    device: Device,
}

impl TextConditioner for WordPrompts {
    fn encode(&self, prompt: &str) -> Result<Conditioning> {
        let (mut ids, unknown) = self.words.encode(prompt);
        let max = self.words.config().max_tokens;
        let truncated = ids.len().saturating_sub(max);
        ids.truncate(max);
        let context = self
            .words
            .context(&ids, &self.device)
            .map_err(err("the word conditioner"))?;
        Ok(Conditioning {
            context,
            unknown,
            truncated,
        })
    }

    fn vocabulary(&self) -> Option<Vec<String>> {
        Some(
            self.words
                .vocabulary()
                .entries()
                .iter()
                .map(|e| e.word.clone())
                .collect(),
        )
    }
}

/// Guidance rescale (Lin et al. 2023, §3.4): the guided output's spread is pulled back toward
/// the conditional output's, `φ · guided · σ(cond) / σ(guided) + (1 − φ) · guided`, over the whole
/// clip. Why: Lin et al. found that at zero terminal SNR a large guidance scale over-exposes
/// the picture. It is off by default: on the 128² embedded generator φ = 0.7 lowered the
/// same-prompt nearest-neighbour share from 0.25 to 0.17 (24 stickers) and did not bring back
/// the stickers that guidance shrinks (models/README.md).
pub fn rescale_guidance(guided: &Tensor, cond: &Tensor, phi: f64) -> Result<Tensor> {
    if phi <= 0.0 {
        return Ok(guided.clone());
    }
    let std = |t: &Tensor| -> candle_core::Result<f64> {
        let mean = t.mean_all()?;
        let var = t.broadcast_sub(&mean)?.sqr()?.mean_all()?;
        Ok(f64::from(var.to_scalar::<f32>()?).sqrt())
    };
    let run = || -> candle_core::Result<Tensor> {
        let (sc, sg) = (std(cond)?, std(guided)?);
        if sg <= f64::EPSILON {
            return Ok(guided.clone());
        }
        guided * (phi * sc / sg + (1.0 - phi))
    };
    run().map_err(err("guidance rescale"))
}

/// The denoiser's noise prediction for the whole clip `x` `[frames, C, h, w]`; with a frame
/// window shorter than the clip, the mean of the predictions of the overlapping windows
/// (a quarter overlap, [`crate::model::sd::context_windows`]) that contain each frame, for
/// denoisers that do not window long clips themselves (the SD UNet does).
fn predict_windowed(
    denoiser: &dyn Denoiser,
    x: &Tensor,
    t: f64,
    context: &Tensor,
    window: Option<usize>,
) -> Result<Tensor> {
    let e = err("the denoiser");
    let frames = x.dim(0).map_err(&e)?;
    let Some(w) = window.filter(|&w| w > 0 && w < frames) else {
        return denoiser.predict_noise(x, t, context, frames).map_err(e);
    };
    let mut sums: Vec<Option<Tensor>> = vec![None; frames];
    let mut counts = vec![0u32; frames];
    for range in crate::model::sd::context_windows(frames, w, w / 4) {
        let start = range.start;
        let xw = x.narrow(0, start, w).map_err(&e)?;
        let cw = context.narrow(0, start, w).map_err(&e)?;
        let eps = denoiser.predict_noise(&xw, t, &cw, w).map_err(&e)?;
        for k in 0..w {
            let f = eps.narrow(0, k, 1).map_err(&e)?;
            let slot = &mut sums[start + k];
            *slot = Some(match slot.take() {
                Some(acc) => (acc + f).map_err(&e)?,
                None => f,
            });
            counts[start + k] += 1;
        }
    }
    let parts = sums
        .into_iter()
        .zip(counts)
        .map(|(s, n)| match s {
            Some(s) => (s / f64::from(n)).map_err(&e),
            None => Err(Error::Model("a frame outside every window".into())),
        })
        .collect::<Result<Vec<_>>>()?;
    Tensor::cat(&parts, 0).map_err(e)
}

/// Alpha below which a pixel keeps the matting model's colour in [`unmix_key`] (dividing by a
/// tiny alpha would amplify the codec's noise, and such pixels are nearly invisible anyway).
pub const UNMIX_MIN_ALPHA: f64 = 0.05;

/// Replaces a matte's colours (`[N, 4, h, w]`, alpha first) by the foreground that, laid over
/// the flat `key` with the matte's alpha, gives the generated frame `pixel` (`[N, 3, h, w]`):
/// `fg = (pixel - (1 - alpha) key) / alpha`. Why: a generated sticker's edges are blends with
/// the key, and a matting model that does not know the key leaves a fringe of its colour
/// (magenta) there; with the key known, the compositing equation gives the colour exactly.
pub fn unmix_key(matte: &Tensor, pixel: &Tensor, key: [f32; 3]) -> Result<Tensor> {
    let e = err("unmixing the key colour");
    let alpha = matte.narrow(1, 0, 1).map_err(&e)?;
    let rgb = matte.narrow(1, 1, 3).map_err(&e)?;
    let k = Tensor::new(&key, matte.device())
        .and_then(|k| k.reshape((1, 3, 1, 1)))
        .map_err(&e)?;
    let fg = (|| {
        let behind = k.broadcast_mul(&(1.0 - &alpha)?)?;
        let fg = pixel
            .broadcast_sub(&behind)?
            .broadcast_div(&alpha.clamp(UNMIX_MIN_ALPHA, 1.0)?)?
            .clamp(0f32, 1f32)?;
        let keep = alpha
            .ge(UNMIX_MIN_ALPHA)?
            .broadcast_as(rgb.shape())?
            .contiguous()?;
        let fg = keep.where_cond(&fg, &rgb)?;
        Tensor::cat(&[&alpha, &fg], 1)
    })()
    .map_err(&e)?;
    Ok(fg)
}

/// Generates a clip. `on_frames(start, frames)` receives finished RGBA frames as they come
/// (previews); progress stages are [`STAGE_TEXT`], [`STAGE_DENOISE`] (one unit per step),
/// [`STAGE_DECODE`] and [`STAGE_MATTE`] (one unit per frame). Cancelling through `progress`
/// ends with [`Error::Cancelled`].
pub fn generate(
    generator: &Generator,
    request: &GenerateRequest,
    progress: &mut dyn Progress,
    on_frames: &mut dyn FnMut(usize, Vec<RgbaImage>),
) -> Result<Generated> {
    generator.check()?;
    let (width, height) = generator.size(request)?;
    let frames = request.frames;
    let label = std::path::Path::new("generated clip");
    request
        .limits
        .check_all(width, height, frames as u64, label)?;
    if frames == 0 {
        return Err(Error::Invalid("frames must be at least 1".into()));
    }
    if !request.guidance.is_finite() || request.guidance < 0.0 {
        return Err(Error::Invalid(format!(
            "guidance must be a number >= 0, got {}",
            request.guidance
        )));
    }
    let rescale = request.guidance_rescale;
    if !(0.0..=1.0).contains(&rescale) {
        return Err(Error::Invalid(format!(
            "guidance rescale must be in [0, 1], got {rescale}"
        )));
    }
    if request.fps == 0 || request.fps > 100 {
        return Err(Error::Invalid(format!(
            "fps must be 1..=100, got {}",
            request.fps
        )));
    }
    let spacing = request
        .spacing
        .unwrap_or_else(|| generator.schedule.default_spacing(request.scheduler));
    let sampler = Sampler::new(
        request.scheduler,
        &generator.schedule,
        request.steps,
        spacing,
    )?;
    let step = |p: &mut dyn Progress, stage: &str, done: usize, total: usize| {
        if p.step(stage, done as u64, total as u64) {
            Ok(())
        } else {
            Err(Error::Cancelled)
        }
    };

    // Text.
    let use_cfg = request.guidance != 1.0;
    step(progress, STAGE_TEXT, 0, 1 + usize::from(use_cfg))?;
    let cond = generator.conditioner.encode(&request.prompt)?;
    let mut unknown = cond.unknown.clone();
    let uncond = if use_cfg {
        step(progress, STAGE_TEXT, 1, 2)?;
        let u = generator.conditioner.encode(&request.negative)?;
        unknown.extend(u.unknown.iter().cloned());
        Some(u)
    } else {
        None
    };
    let per_frame = |c: &Conditioning| -> Result<Tensor> {
        let (_, t, d) = c.context.dims3().map_err(err("text conditioning"))?;
        c.context
            .to_device(&generator.device)
            .and_then(|x| x.broadcast_as((frames, t, d)))
            .and_then(|x| x.contiguous())
            .map_err(err("text conditioning"))
    };
    let ctx_cond = per_frame(&cond)?;
    let ctx_uncond = uncond.as_ref().map(per_frame).transpose()?;

    // Denoise.
    let f = generator.denoiser.latent_factor();
    let c = generator.denoiser.latent_channels();
    let shape = (frames, c, height as usize / f, width as usize / f);
    let mut rng = NoiseRng::new(request.seed);
    let share = generator.frame_noise_share;
    let mut x = (rng.clip_tensor(shape, share, &generator.device)? * sampler.init_noise_sigma())
        .map_err(err("sampling"))?;
    let total = sampler.len();
    step(progress, STAGE_DENOISE, 0, total)?;
    for (i, &t) in sampler.timesteps().iter().enumerate() {
        let input = sampler.scale_model_input(&x, i)?;
        let predict = |ctx: &Tensor| {
            predict_windowed(&*generator.denoiser, &input, t, ctx, generator.frame_window)
        };
        let e_cond = predict(&ctx_cond)?;
        let eps = match &ctx_uncond {
            Some(ctx) => {
                let e_un = predict(ctx)?;
                let guided = (&e_cond - &e_un)
                    .and_then(|d| d * request.guidance)
                    .and_then(|d| d + &e_un)
                    .map_err(err("guidance"))?;
                rescale_guidance(&guided, &e_cond, rescale)?
            }
            None => e_cond,
        };
        let noise = if sampler.needs_noise() {
            Some(rng.clip_tensor(shape, share, &generator.device)?)
        } else {
            None
        };
        x = sampler.step(i, &x, &eps, noise.as_ref())?;
        step(progress, STAGE_DENOISE, i + 1, total)?;
    }

    // Latents -> RGB, a chunk at a time.
    let latent = generator.latent_norm.to_codec(&x)?;
    let chunk = generator.decode_chunk.max(1);
    let mut rgb_parts = Vec::with_capacity(frames.div_ceil(chunk));
    step(progress, STAGE_DECODE, 0, frames)?;
    let mut start = 0;
    while start < frames {
        let n = chunk.min(frames - start);
        let part = latent
            .narrow(0, start, n)
            .and_then(|l| generator.codec.decode(&l))
            .map_err(err("decoding latents"))?;
        rgb_parts.push(part);
        start += n;
        step(progress, STAGE_DECODE, start, frames)?;
    }
    let pixel = Tensor::cat(&rgb_parts, 0).map_err(err("decoding latents"))?;
    drop(rgb_parts);

    // RGB + latent -> RGBA.
    let delay = Delay::from_ratio(1, request.fps);
    let timing = |n: usize| -> Result<Animation> {
        let blank = Frame::new(RgbaImage::new(width, height), delay);
        Animation::new(width, height, vec![blank; n], LoopCount::Infinite)
    };
    let mut out_frames: Vec<Frame> = Vec::with_capacity(frames);
    step(progress, STAGE_MATTE, 0, frames)?;
    match &*generator.decoder {
        TransparencyDecoder::Ildiff { model, window } => {
            // A matting model with its own codec reads that codec's latents of the frames,
            // exactly as when it mattes a user's clip: the generator's codec may be another
            // (trained on what the generator paints), and even the same codec gives
            // encode(decode(z)) for frames, which is what the model was trained on.
            let lat = match model.codec() {
                Some(codec) => codec.encode(&pixel).map_err(err("matting"))?,
                None => latent.clone(),
            };
            let options = MatteOptions::window((*window).max(1));
            let mut report =
                |_: &str, done: u64, total: u64| progress.step(STAGE_MATTE, done, total);
            // The matte's one windowing loop; each finished window goes to the preview.
            matte_clip_windows(
                model,
                &pixel,
                &lat,
                None,
                &options,
                &mut report,
                &mut |start, y| {
                    let n = y.dim(0).map_err(err("matting"))?;
                    let y = match generator.key_colour {
                        Some(key) => {
                            let px = pixel.narrow(0, start, n).map_err(err("matting"))?;
                            unmix_key(&y, &px, key)?
                        }
                        None => y,
                    };
                    let part = animation_from_matte(&y, &timing(n)?)?;
                    let images: Vec<RgbaImage> = part.frames.into_iter().map(|f| f.image).collect();
                    on_frames(start, images.clone());
                    out_frames.extend(images.into_iter().map(|img| Frame::new(img, delay)));
                    Ok(())
                },
            )?;
        }
        TransparencyDecoder::LayerDiffuse { decoder, tta } => {
            for i in 0..frames {
                let px = pixel.narrow(0, i, 1).map_err(err("matting"))?;
                let lat = latent.narrow(0, i, 1).map_err(err("matting"))?;
                let y = if *tta {
                    decoder.decode_tta(&px, &lat)
                } else {
                    decoder.decode(&px, &lat)
                }
                .map_err(err("LayerDiffuse decoding"))?;
                let part = animation_from_matte(&y, &timing(1)?)?;
                let images: Vec<RgbaImage> = part.frames.into_iter().map(|f| f.image).collect();
                on_frames(i, images.clone());
                out_frames.extend(images.into_iter().map(|img| Frame::new(img, delay)));
                step(progress, STAGE_MATTE, i + 1, frames)?;
            }
        }
    }
    let animation = Animation::new(width, height, out_frames, LoopCount::Infinite)?;
    Ok(Generated {
        animation,
        unknown,
        truncated: cond.truncated,
    })
}

#[cfg(test)]
pub(crate) mod tests {
    use super::*;
    use crate::model::codec::SmallCodecConfig;
    use crate::model::{IldiffConfig, SmallCodec};
    use candle_core::DType;
    use candle_nn::{VarBuilder, VarMap};
    use std::sync::Mutex;

    /// A word-vocabulary conditioner for tests: one row per known word (a one-hot over the
    /// vocabulary, padded to 4 rows); unknown words are reported.
    pub(crate) struct WordsForTests(pub Vec<&'static str>);

    impl TextConditioner for WordsForTests {
        fn encode(&self, prompt: &str) -> Result<Conditioning> {
            let n = self.0.len();
            let mut rows = vec![0f32; 4 * n];
            let mut unknown = Vec::new();
            let mut k = 0;
            for w in prompt.split_whitespace() {
                match self.0.iter().position(|v| *v == w) {
                    Some(i) if k < 4 => {
                        rows[k * n + i] = 1.0;
                        k += 1;
                    }
                    Some(_) => {}
                    None => unknown.push(w.to_string()),
                }
            }
            let context = Tensor::from_vec(rows, (1, 4, n), &Device::Cpu)
                .map_err(err("test conditioning"))?;
            Ok(Conditioning {
                context,
                unknown,
                truncated: 0,
            })
        }

        fn vocabulary(&self) -> Option<Vec<String>> {
            Some(self.0.iter().map(|s| s.to_string()).collect())
        }
    }

    /// eps = 0.1 x + 0.05 * (sum of the context), recording each call's context sum and frames.
    #[derive(Default)]
    pub(crate) struct AnalyticForTests {
        pub calls: Mutex<Vec<(f64, f32, usize)>>,
    }

    impl Denoiser for AnalyticForTests {
        fn predict_noise(
            &self,
            latents: &Tensor,
            timestep: f64,
            context: &Tensor,
            frames: usize,
        ) -> candle_core::Result<Tensor> {
            let sum = context.sum_all()?.to_scalar::<f32>()? / latents.dim(0)? as f32;
            if let Ok(mut c) = self.calls.lock() {
                c.push((timestep, sum, frames));
            }
            (latents * 0.1)? + f64::from(0.05 * sum)
        }

        fn latent_channels(&self) -> usize {
            4
        }
    }

    fn codec() -> SmallCodec {
        let vm = VarMap::new();
        let vb = VarBuilder::from_varmap(&vm, DType::F32, &Device::Cpu);
        SmallCodec::new(
            &SmallCodecConfig {
                channels: [8, 8, 16],
                norm_groups: 4,
            },
            vb,
        )
        .expect("codec")
    }

    pub(crate) fn tiny_generator(
        decoder: TransparencyDecoder,
    ) -> (Generator, Arc<AnalyticForTests>) {
        let denoiser = Arc::new(AnalyticForTests::default());
        let g = Generator {
            name: "test family".into(),
            conditioner: Arc::new(WordsForTests(vec!["red", "heart", "pulsing", "ugly"])),
            denoiser: denoiser.clone(),
            codec: Arc::new(codec()),
            latent_norm: LatentNorm::scale(0.5),
            schedule: NoiseSchedule::sd15(),
            decoder: Arc::new(decoder),
            size_multiple: 32,
            default_size: 64,
            decode_chunk: 3,
            frame_window: None,
            frame_noise_share: 0.0,
            key_colour: None,
            device: Device::Cpu,
        };
        (g, denoiser)
    }

    pub(crate) fn tiny_ildiff() -> TransparencyDecoder {
        let vm = VarMap::new();
        let vb = VarBuilder::from_varmap(&vm, DType::F32, &Device::Cpu);
        let mut cfg = IldiffConfig::tiny();
        cfg.codec = None;
        let model = IldiffDecoder::new(&cfg, vb).expect("decoder");
        TransparencyDecoder::Ildiff {
            model: Box::new(model),
            window: 2,
        }
    }

    fn request() -> GenerateRequest {
        GenerateRequest {
            prompt: "red heart pulsing sparkly".into(),
            negative: "ugly".into(),
            seed: 5,
            steps: 3,
            frames: 5,
            size: Some((64, 32)),
            ..GenerateRequest::default()
        }
    }

    fn run(g: &Generator, r: &GenerateRequest) -> (Generated, Vec<(usize, usize)>, Vec<String>) {
        let mut streamed = Vec::new();
        let mut stages: Vec<String> = Vec::new();
        let mut progress = |stage: &str, _: u64, _: u64| {
            if stages.last().map(String::as_str) != Some(stage) {
                stages.push(stage.to_string());
            }
            true
        };
        let out = generate(g, r, &mut progress, &mut |s, f| streamed.push((s, f.len())))
            .expect("generate");
        (out, streamed, stages)
    }

    /// The limits a request carries (the CLI's `--max-*`) are the ones checked, not the
    /// defaults: 5 frames pass the defaults but not a cap of 4, and a cap raised to the
    /// request's size passes.
    #[test]
    fn the_requests_limits_are_the_ones_checked() {
        let (g, _) = tiny_generator(tiny_ildiff());
        let capped = GenerateRequest {
            limits: crate::media::Limits {
                max_frames: 4,
                ..crate::media::Limits::default()
            },
            ..request()
        };
        let e = generate(&g, &capped, &mut crate::NoProgress, &mut |_, _| {})
            .expect_err("over the cap");
        assert_eq!(e.kind(), "limits", "{e}");
        let exact = GenerateRequest {
            limits: crate::media::Limits {
                max_frames: 5,
                max_side: 64,
                max_bytes: 5 * 64 * 32 * 4,
            },
            ..request()
        };
        let out = generate(&g, &exact, &mut crate::NoProgress, &mut |_, _| {}).expect("at the cap");
        assert_eq!(out.animation.len(), 5);
    }

    #[test]
    fn guidance_rescale_pulls_the_spread_back_to_the_conditional_ones() {
        let dev = Device::Cpu;
        let cond = Tensor::new(&[1.0f32, -1.0, 0.5, -0.5], &dev).expect("cond");
        let guided = Tensor::new(&[4.0f32, -3.0, 2.5, -1.5], &dev).expect("guided");
        let spread = |t: &Tensor| {
            let v: Vec<f32> = t.to_vec1().expect("v");
            let m = v.iter().sum::<f32>() / v.len() as f32;
            (v.iter().map(|x| (x - m).powi(2)).sum::<f32>() / v.len() as f32).sqrt()
        };
        // phi 0: unchanged; phi 1: the conditional spread, same direction.
        let same = rescale_guidance(&guided, &cond, 0.0).expect("0");
        assert_eq!(
            same.to_vec1::<f32>().expect("v"),
            guided.to_vec1::<f32>().expect("v")
        );
        let full = rescale_guidance(&guided, &cond, 1.0).expect("1");
        assert!((spread(&full) - spread(&cond)).abs() < 1e-5);
        let ratio: Vec<f32> = (&full / &guided).and_then(|r| r.to_vec1()).expect("ratio");
        assert!(
            ratio
                .iter()
                .all(|r| (r - ratio[0]).abs() < 1e-6 && *r > 0.0)
        );
        // In between: a blend of the two.
        let half = rescale_guidance(&guided, &cond, 0.5).expect("0.5");
        let want = (spread(&full) + spread(&guided)) / 2.0;
        assert!(
            (spread(&half) - want).abs() < 1e-4,
            "{} vs {want}",
            spread(&half)
        );
    }

    #[test]
    fn unmixing_the_key_recovers_the_foreground_of_a_blend() {
        let dev = Device::Cpu;
        let key = [1.0f32, 0.0, 1.0];
        let fg = [0.2f32, 0.6, 0.1];
        let alphas = [0.0f32, 0.03, 0.3, 0.7, 1.0];
        let n = alphas.len();
        // One pixel per alpha: the frame is fg over the key; the matte has the right alpha and
        // a fringed colour (half key).
        let mut pixel = vec![0f32; 3 * n];
        let mut matte = vec![0f32; 4 * n];
        for (i, &a) in alphas.iter().enumerate() {
            matte[i] = a;
            for c in 0..3 {
                pixel[c * n + i] = a * fg[c] + (1.0 - a) * key[c];
                matte[(c + 1) * n + i] = 0.5 * fg[c] + 0.5 * key[c];
            }
        }
        let pixel = Tensor::from_vec(pixel, (1, 3, 1, n), &dev).expect("pixel");
        let matte = Tensor::from_vec(matte, (1, 4, 1, n), &dev).expect("matte");
        let out: Vec<f32> = unmix_key(&matte, &pixel, key)
            .and_then(|t| t.flatten_all().map_err(err("flat")))
            .and_then(|t| t.to_vec1().map_err(err("vec")))
            .expect("unmix");
        for (i, &a) in alphas.iter().enumerate() {
            assert_eq!(out[i], a, "alpha is kept");
            for c in 0..3 {
                let got = out[(c + 1) * n + i];
                let want = if f64::from(a) >= UNMIX_MIN_ALPHA {
                    fg[c]
                } else {
                    0.5 * fg[c] + 0.5 * key[c]
                };
                assert!(
                    (got - want).abs() < 1e-5,
                    "alpha {a}, channel {c}: {got} vs {want}"
                );
            }
        }
    }

    #[test]
    fn generates_seeded_frames_with_alpha_and_streams_them() {
        let (g, denoiser) = tiny_generator(tiny_ildiff());
        let r = request();
        let (a, streamed, stages) = run(&g, &r);
        assert_eq!((a.animation.width, a.animation.height), (64, 32));
        assert_eq!(a.animation.len(), 5);
        assert_eq!(a.animation.frames[0].delay, Delay::from_ratio(1, 8));
        assert!(
            a.animation.has_alpha(),
            "a random decoder still makes some alpha"
        );
        assert_eq!(a.unknown, ["sparkly"]);
        assert_eq!(streamed.iter().map(|s| s.1).sum::<usize>(), 5);
        assert_eq!(streamed[0].0, 0);
        assert_eq!(
            stages,
            [STAGE_TEXT, STAGE_DENOISE, STAGE_DECODE, STAGE_MATTE]
        );
        // Guidance: conditional then unconditional prediction at every step, all 5 frames.
        let calls = denoiser.calls.lock().expect("calls").clone();
        assert_eq!(calls.len(), 6);
        assert!(calls.iter().all(|c| c.2 == 5));
        assert_eq!(calls[0].0, 667.0, "DDIM leading, 3 steps: 667, 334, 1");
        assert_eq!((calls[0].1, calls[1].1), (3.0, 1.0), "prompt then negative");
        // Same seed, same clip; another seed, another clip.
        let (b, _, _) = run(&g, &r);
        assert_eq!(a.animation.frames[3].image, b.animation.frames[3].image);
        let (c, _, _) = run(
            &g,
            &GenerateRequest {
                seed: 6,
                ..r.clone()
            },
        );
        assert_ne!(a.animation.frames[3].image, c.animation.frames[3].image);
        // Guidance 1: one prediction per step.
        denoiser.calls.lock().expect("calls").clear();
        let _ = run(
            &g,
            &GenerateRequest {
                guidance: 1.0,
                ..r.clone()
            },
        );
        assert_eq!(denoiser.calls.lock().expect("calls").len(), 3);
    }

    #[test]
    fn euler_a_and_the_layerdiffuse_decoder() {
        let vm = VarMap::new();
        let vb = VarBuilder::from_varmap(&vm, DType::F32, &Device::Cpu);
        let decoder = TransparentDecoder::new(&IldiffConfig::tiny().decoder, vb).expect("ld");
        let (g, _) = tiny_generator(TransparencyDecoder::LayerDiffuse {
            decoder: Box::new(decoder),
            tta: true,
        });
        let r = GenerateRequest {
            scheduler: SchedulerKind::EulerAncestral,
            frames: 2,
            ..request()
        };
        let (a, streamed, _) = run(&g, &r);
        assert_eq!(a.animation.len(), 2);
        assert_eq!(streamed, [(0, 1), (1, 1)], "one frame at a time");
        let (b, _, _) = run(&g, &r);
        assert_eq!(a.animation.frames[1].image, b.animation.frames[1].image);
    }

    #[test]
    fn cancel_and_bad_requests() {
        let (g, denoiser) = tiny_generator(tiny_ildiff());
        let mut stop_in_denoise =
            |stage: &str, done: u64, _: u64| !(stage == STAGE_DENOISE && done == 1);
        let e =
            generate(&g, &request(), &mut stop_in_denoise, &mut |_, _| {}).expect_err("cancelled");
        assert!(matches!(e, Error::Cancelled), "{e}");
        assert_eq!(
            denoiser.calls.lock().expect("calls").len(),
            2,
            "stopped after step 1"
        );
        for bad in [
            GenerateRequest {
                size: Some((64, 40)),
                ..request()
            },
            GenerateRequest {
                frames: 0,
                ..request()
            },
            GenerateRequest {
                steps: 0,
                ..request()
            },
            GenerateRequest {
                guidance: f64::NAN,
                ..request()
            },
            GenerateRequest {
                guidance_rescale: 1.5,
                ..request()
            },
        ] {
            let e = generate(&g, &bad, &mut crate::NoProgress, &mut |_, _| {}).expect_err("bad");
            assert_eq!(e.kind(), "invalid", "{e}");
        }
        let e = generate(
            &g,
            &GenerateRequest {
                size: Some((64, 40)),
                ..request()
            },
            &mut crate::NoProgress,
            &mut |_, _| {},
        )
        .expect_err("size");
        assert!(e.to_string().contains("multiples of 32"), "{e}");
        // Parts that do not fit are refused before any work.
        let (mut g, _) = tiny_generator(tiny_ildiff());
        g.size_multiple = 12;
        assert_eq!(g.check().expect_err("multiple").kind(), "model");
    }

    #[test]
    fn long_clips_are_denoised_in_overlapping_windows() {
        let (mut g, denoiser) = tiny_generator(tiny_ildiff());
        let r = GenerateRequest {
            frames: 7,
            guidance: 1.0,
            steps: 2,
            ..request()
        };
        let (whole, _, _) = run(&g, &r);
        denoiser.calls.lock().expect("calls").clear();
        g.frame_window = Some(4);
        let (windowed, _, _) = run(&g, &r);
        let calls = denoiser.calls.lock().expect("calls").clone();
        assert_eq!(calls.len(), 4, "two windows per step");
        assert!(calls.iter().all(|c| c.2 == 4), "{calls:?}");
        // This denoiser treats frames independently, so windows change nothing.
        for (a, b) in whole
            .animation
            .frames
            .iter()
            .zip(&windowed.animation.frames)
        {
            assert_eq!(a.image, b.image);
        }
    }
}

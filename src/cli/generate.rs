//! `ildiff generate PROMPT -o OUT`: a transparent animated sticker from a text prompt.
//!
//! With user weights (`--model-dir`, single-file options, or `--hf-cache`) it runs SD-1.5 +
//! AnimateDiff + LayerDiffuse, checking every file's names and shapes before anything heavy
//! starts; without them, the embedded default generator (an error saying how to point at
//! weights while none is installed). The clip then goes through the export presets like
//! `ildiff export`, written atomically.

use std::path::PathBuf;

use anyhow::Context;
use candle_core::Device;
use clap::Args;

use super::LimitArgs;
use super::export::{parse_preset, parse_size};
use super::progress_bar::Bar;
use crate::media::presets::{self, FitOptions, Preset};
use crate::pipeline::generate::{GenerateRequest, Generator, GeneratorChoice, generate};
use crate::pipeline::scheduler::SchedulerKind;
use crate::pipeline::sd_models::SdFiles;

#[derive(Debug, Args)]
pub struct GenerateArgs {
    /// What the sticker shows, e.g. "a red heart pulsing".
    pub prompt: String,
    /// Output file; its extension picks the format (.webm, .webp, .png = APNG, .gif).
    #[arg(short, long)]
    pub output: PathBuf,
    /// Platform preset; the clip is fitted to every rule and checked after writing.
    #[arg(long, value_parser = parse_preset)]
    pub preset: Option<Preset>,
    /// What the sticker should not look like (the unconditional side of guidance).
    #[arg(long, default_value = "")]
    pub negative: String,
    /// Noise seed; the same seed and settings give the same sticker. Default: a new one,
    /// printed.
    #[arg(long)]
    pub seed: Option<u64>,
    /// Sampling steps.
    #[arg(long, default_value_t = GenerateRequest::default().steps)]
    pub steps: usize,
    /// Frames of the clip.
    #[arg(long, default_value_t = GenerateRequest::default().frames)]
    pub frames: usize,
    /// Size: `512` or `WxH`, multiples of 64 for SD-1.5. Default: the model's (512 for SD-1.5).
    #[arg(long, value_parser = parse_size)]
    pub size: Option<(u32, u32)>,
    /// Classifier-free guidance scale (1 = no guidance).
    #[arg(long, default_value_t = GenerateRequest::default().guidance)]
    pub guidance: f64,
    /// Guidance rescale φ in [0, 1] (Lin et al. 2023): pulls the guided prediction's spread
    /// back toward the conditional one's; 0 = plain guidance.
    #[arg(long, default_value_t = 0.0)]
    pub guidance_rescale: f64,
    /// Sampler: ddim or euler-a.
    #[arg(long, default_value = "ddim", value_parser = parse_scheduler)]
    pub scheduler: SchedulerKind,
    /// Playback frame rate of the generated clip.
    #[arg(long, default_value_t = GenerateRequest::default().fps)]
    pub fps: u32,
    /// A diffusers-layout SD-1.5 folder (unet/, vae/, text_encoder/, tokenizer/; motion and
    /// LayerDiffuse files may sit beside them).
    #[arg(long, value_name = "DIR")]
    pub model_dir: Option<PathBuf>,
    /// SD-1.5 UNet (unet/diffusion_pytorch_model.safetensors).
    #[arg(long)]
    pub unet: Option<PathBuf>,
    /// AnimateDiff motion adapter (diffusers MotionAdapter safetensors).
    #[arg(long)]
    pub motion: Option<PathBuf>,
    /// SD VAE (vae/diffusion_pytorch_model.safetensors).
    #[arg(long)]
    pub vae: Option<PathBuf>,
    /// CLIP text encoder (text_encoder/model.safetensors; config.json beside it is read).
    #[arg(long)]
    pub text_encoder: Option<PathBuf>,
    /// CLIP tokenizer folder (vocab.json, merges.txt).
    #[arg(long)]
    pub tokenizer: Option<PathBuf>,
    /// LayerDiffuse attention (layer_sd15_transparent_attn.safetensors).
    #[arg(long)]
    pub layer_attn: Option<PathBuf>,
    /// Transparency decoder: an ILDiff checkpoint trained on SD latents, or LayerDiffuse's
    /// layer_sd15_vae_transparent_decoder.safetensors (decoded with its 8-pass augmentation).
    #[arg(long)]
    pub decoder: Option<PathBuf>,
    /// A generator file from `ildiff train generator` (its `generator.safetensors`) instead of
    /// the installed default; its transparency decoder is --decoder, else the default matting
    /// model (both must share the generator's codec).
    #[arg(long, value_name = "FILE", conflicts_with_all = ["model_dir", "unet", "motion", "vae", "text_encoder", "tokenizer", "layer_attn", "hf_cache"])]
    pub generator: Option<PathBuf>,
    /// Fill parts not given from the Hugging Face cache ($HF_HUB_CACHE, $HF_HOME/hub or
    /// ~/.cache/huggingface/hub), offline.
    #[arg(long)]
    pub hf_cache: bool,
    /// Check the weights and stop (no generation).
    #[arg(long)]
    pub check: bool,
    /// No progress bar.
    #[arg(short, long)]
    pub quiet: bool,
    #[command(flatten)]
    pub limits: LimitArgs,
}

fn parse_scheduler(s: &str) -> Result<SchedulerKind, String> {
    SchedulerKind::from_name(s)
        .ok_or_else(|| format!("unknown scheduler `{s}`; use ddim or euler-a"))
}

/// The user's weight files from the options (folder, then single files over it; the cache
/// fills what is still missing in [`GeneratorChoice::user`]). Empty when none were given.
pub fn user_files(args: &GenerateArgs) -> SdFiles {
    let base = args
        .model_dir
        .as_deref()
        .map(SdFiles::from_dir)
        .unwrap_or_default();
    let singles = SdFiles {
        unet: args.unet.clone(),
        motion: args.motion.clone(),
        vae: args.vae.clone(),
        text_encoder: args.text_encoder.clone(),
        tokenizer: args.tokenizer.clone(),
        layer_attn: args.layer_attn.clone(),
        decoder: args.decoder.clone(),
    };
    base.overridden_by(singles)
}

/// The generator the options choose, or `None` after `--check` has checked the user's weights.
fn generator(args: &GenerateArgs, device: &Device) -> anyhow::Result<Option<Generator>> {
    let choice = match &args.generator {
        Some(file) => GeneratorChoice::File {
            generator: file.clone(),
            decoder: args.decoder.clone(),
        },
        None => GeneratorChoice::user(user_files(args), args.model_dir.is_some(), args.hf_cache),
    };
    // The default has no files to check: `--check` alone generates as before.
    if args.check && choice != GeneratorChoice::Default {
        choice.check(device)?;
        return Ok(None);
    }
    Ok(Some(choice.load(device)?))
}

pub fn run(args: &GenerateArgs) -> anyhow::Result<bool> {
    let device = Device::Cpu;
    let Some(generator) = generator(args, &device)? else {
        println!("the weights are complete and have the expected shapes");
        return Ok(true);
    };
    let seed = args.seed.unwrap_or_else(|| {
        std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map(|d| d.as_nanos() as u64)
            .unwrap_or(0)
    });
    let request = GenerateRequest {
        prompt: args.prompt.clone(),
        negative: args.negative.clone(),
        seed,
        steps: args.steps,
        frames: args.frames,
        size: args.size,
        guidance: args.guidance,
        guidance_rescale: args.guidance_rescale,
        scheduler: args.scheduler,
        spacing: None,
        fps: args.fps,
        limits: args.limits.limits(),
    };
    let mut bar = Bar::new(args.quiet);
    let out = generate(&generator, &request, &mut bar, &mut |_, _| {})
        .with_context(|| format!("generating \"{}\" with {}", args.prompt, generator.name))?;
    bar.finish();
    if !out.unknown.is_empty() {
        eprintln!(
            "warning: not in the model's vocabulary (ignored): {}",
            out.unknown.join(", ")
        );
    }
    if out.truncated > 0 {
        eprintln!(
            "warning: the prompt is too long; its last {} tokens were dropped",
            out.truncated
        );
    }
    let opts = FitOptions::default();
    let report = presets::export(
        &out.animation,
        args.preset,
        &args.output,
        &opts,
        None,
        &mut bar,
    )
    .with_context(|| format!("writing {}", args.output.display()))?;
    bar.finish();
    println!("seed {seed}");
    println!("{report}");
    if !report.passed {
        eprintln!("error: the file breaks its platform's rules (see FAIL lines)");
    }
    Ok(report.passed)
}

//! `ildiff matte`: an opaque RGB clip in, a transparent sticker out, through an ILDiff
//! checkpoint (its own codec encodes the clip, the decoder mattes it window by window).
//!
//! There is no silent fallback to untrained weights: without `--model`, a trained default is
//! looked for beside the executable and in the crate's `models/default/`, and when none exists
//! the command says so and stops.

use std::path::{Path, PathBuf};

use anyhow::{Context, anyhow, bail};
use candle_core::{Device, Tensor};
use clap::Args;

use super::LimitArgs;
use super::export::{FitArgs, parse_preset};
use super::progress_bar::Bar;
use crate::media::decode;
use crate::media::presets::{self, Preset};
use crate::model::{IldiffDecoder, SmallCodec};
use crate::pipeline::matte::{
    MatteOptions, animation_from_matte, matte_clip, pixels_from_animation,
};

pub use crate::pipeline::models::{DEFAULT_MODEL, default_model};

#[derive(Debug, Args)]
pub struct MatteArgs {
    /// Input clip (GIF, APNG, WebP, WebM, MP4, a folder of numbered PNG frames).
    pub input: PathBuf,
    /// Output file; its extension picks the format (.png = APNG, .webp, .gif, .webm).
    #[arg(short, long)]
    pub output: PathBuf,
    /// ILDiff checkpoint (.safetensors with its configuration and codec). Default: the trained
    /// model shipped with the studio, when there is one.
    #[arg(long)]
    pub model: Option<PathBuf>,
    /// Platform preset; the matted clip is fitted to every rule and checked after writing.
    #[arg(long, value_parser = parse_preset)]
    pub preset: Option<Preset>,
    /// Output frames decoded per window (more = faster, more memory).
    #[arg(long, default_value_t = MatteOptions::default().window)]
    pub window: usize,
    #[command(flatten)]
    pub fit: FitArgs,
    /// No progress bar.
    #[arg(short, long)]
    pub quiet: bool,
    #[command(flatten)]
    pub limits: LimitArgs,
}

fn model_path(args: &MatteArgs) -> anyhow::Result<PathBuf> {
    match &args.model {
        Some(p) => Ok(p.clone()),
        None => default_model().ok_or_else(|| {
            anyhow!(
                "no trained default model is installed ({DEFAULT_MODEL}); pass --model PATH with an \
                 ILDiff checkpoint (untrained weights would produce a meaningless matte, so none \
                 are used)"
            )
        }),
    }
}

/// Loads the checkpoint (see [`crate::pipeline::models::load_model`]).
pub fn load_model(path: &Path) -> anyhow::Result<IldiffDecoder> {
    Ok(crate::pipeline::models::load_model(path)?)
}

/// Encodes a clip in chunks (see [`crate::pipeline::models::encode_clip`]).
pub fn encode_clip(codec: &SmallCodec, pixel: &Tensor, chunk: usize) -> anyhow::Result<Tensor> {
    Ok(crate::pipeline::models::encode_clip(codec, pixel, chunk)?)
}

pub fn run(args: &MatteArgs) -> anyhow::Result<bool> {
    let path = model_path(args)?;
    let model = load_model(&path)?;
    let Some(codec) = model.codec() else {
        bail!("the checkpoint has no codec: {}", path.display());
    };
    let anim = decode::open(&args.input, &args.limits.limits())?;
    let mut bar = Bar::new(args.quiet);
    let pixel = pixels_from_animation(&anim, &Device::Cpu)?;
    let latent = encode_clip(codec, &pixel, args.window)
        .with_context(|| format!("encoding {}", args.input.display()))?;
    let options = MatteOptions {
        window: args.window.max(1),
    };
    let matte = matte_clip(&model, &pixel, &latent, &options, &mut bar)
        .with_context(|| format!("matting {}", args.input.display()))?;
    drop((pixel, latent));
    let out_anim = animation_from_matte(&matte, &anim)?;
    let opts = args.fit.options();
    let report = match args.preset {
        Some(p) => presets::fit_to_preset(&out_anim, p, &opts, &args.output, &mut bar),
        None => presets::export_plain(&out_anim, &args.output, &opts, None, &mut bar),
    }
    .with_context(|| {
        format!(
            "writing the matte of {} to {}",
            args.input.display(),
            args.output.display()
        )
    })?;
    bar.finish();
    println!("{report}");
    if !report.passed {
        eprintln!("error: the file breaks its platform's rules (see FAIL lines)");
    }
    Ok(report.passed)
}

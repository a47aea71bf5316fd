//! `ildiff matte`: an opaque RGB clip in, a transparent sticker out. Parses the arguments,
//! then the library does the work: `pipeline::matte::matte_animation` (the studio's re-matte
//! calls the same function) and `presets::export`.
//!
//! There is no silent fallback to untrained weights: without `--model`, a trained default is
//! looked for beside the executable and in the crate's `models/default/`, and when none exists
//! the command says so and stops.

use std::path::{Path, PathBuf};

use anyhow::Context;
use clap::Args;

use super::LimitArgs;
use super::export::{FitArgs, parse_preset};
use super::progress_bar::Bar;
use crate::media::decode;
use crate::media::presets::{self, Preset};
use crate::pipeline::matte::{
    MatteOptions, Quality, matte_animation, plate_animation, plate_of_animation,
};
use crate::pipeline::models::{load_model, model_or_default};
use crate::pipeline::plate::PlateOptions;

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
    /// Output frames decoded per window (more = less temporal context decoded twice, more memory).
    #[arg(long, default_value_t = MatteOptions::default().window)]
    pub window: usize,
    /// Write the background plate the clip's frames show (one PNG per frame, and its
    /// confidence as grey) into this folder: the background a plate-prior model assumes.
    #[arg(long, value_name = "DIR")]
    pub save_plate: Option<PathBuf>,
    /// Matte at half size and scale back (about 4× faster, for quick looks).
    #[arg(long)]
    pub draft: bool,
    #[command(flatten)]
    pub fit: FitArgs,
    /// No progress bar.
    #[arg(short, long)]
    pub quiet: bool,
    #[command(flatten)]
    pub limits: LimitArgs,
}

pub fn run(args: &MatteArgs) -> anyhow::Result<bool> {
    let model = load_model(&model_or_default(args.model.as_deref())?)?;
    let anim = decode::open(&args.input, &args.limits.limits())?;
    let options = MatteOptions {
        window: args.window.max(1),
        quality: if args.draft {
            Quality::Draft
        } else {
            Quality::Full
        },
        plate: PlateOptions::default(),
    };
    let mut bar = Bar::new(args.quiet);
    let matted = matte_animation(&model, &anim, &options, &mut bar, &mut |_, _| {})
        .with_context(|| format!("matting {}", args.input.display()))?;
    if let Some(dir) = &args.save_plate {
        // A plate-prior model hands back the plate it used; for another model the plate is
        // estimated here, to show what one would have assumed.
        let plate = match matted.plate()? {
            Some(p) => p,
            None => {
                let p = plate_of_animation(&anim, &options.plate, &candle_core::Device::Cpu)
                    .with_context(|| {
                        format!("estimating the background of {}", args.input.display())
                    })?;
                plate_animation(&p, &anim)?
            }
        };
        save_plate(&plate, dir)?;
    }
    drop(anim);
    let matte = matted.into_clip();
    let opts = args.fit.options();
    let report = presets::export(&matte, args.preset, &args.output, &opts, None, &mut bar)
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

/// Writes a plate (RGB, confidence as alpha) as `plate_NNNN.png` (RGB) and
/// `confidence_NNNN.png` (grey).
fn save_plate(plate: &crate::media::Animation, dir: &Path) -> anyhow::Result<()> {
    std::fs::create_dir_all(dir).with_context(|| format!("creating {}", dir.display()))?;
    for (i, f) in plate.frames.iter().enumerate() {
        let rgb = image::DynamicImage::from(f.image.clone()).to_rgb8();
        let conf = image::GrayImage::from_fn(f.image.width(), f.image.height(), |x, y| {
            image::Luma([f.image.get_pixel(x, y).0[3]])
        });
        for (name, img) in [
            (format!("plate_{i:04}.png"), image::DynamicImage::from(rgb)),
            (
                format!("confidence_{i:04}.png"),
                image::DynamicImage::from(conf),
            ),
        ] {
            let path = dir.join(name);
            let mut bytes = std::io::Cursor::new(Vec::new());
            img.write_to(&mut bytes, image::ImageFormat::Png)?;
            crate::fsutil::write_atomic(&path, bytes.get_ref())?;
        }
    }
    Ok(())
}

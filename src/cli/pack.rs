//! `ildiff pack`: several stickers into one ready-to-upload folder per platform, with icons and
//! the manifest each platform's tooling expects.

use std::path::PathBuf;

use anyhow::bail;
use clap::Args;

use super::LimitArgs;
use super::export::{FitArgs, parse_preset};
use super::progress_bar::Bar;
use crate::media::pack::{self, PackSpec, PackSticker, StickerSource};
use crate::media::presets::Preset;

#[derive(Debug, Args)]
pub struct PackArgs {
    /// The stickers, in pack order (files or folders of PNG frames).
    #[arg(required = true)]
    pub inputs: Vec<PathBuf>,
    /// Folder to write into; each platform gets its own sub-folder.
    #[arg(short, long)]
    pub output: PathBuf,
    /// Platforms, comma-separated (e.g. `whatsapp,telegram,line`).
    #[arg(long, required = true, value_delimiter = ',', value_parser = parse_preset)]
    pub platform: Vec<Preset>,
    /// Pack title.
    #[arg(long, default_value = "My stickers")]
    pub name: String,
    /// Publisher shown by the platform.
    #[arg(long, default_value = "ILDiff Studio")]
    pub author: String,
    /// Emoji for each sticker in order, comma-separated per sticker: `--emoji 😀,😂 --emoji 🐱`.
    /// Stickers without one get 🙂.
    #[arg(long)]
    pub emoji: Vec<String>,
    /// Picture for the tray/tab icons (default: the first sticker).
    #[arg(long)]
    pub icon: Option<PathBuf>,
    #[command(flatten)]
    pub fit: FitArgs,
    /// Print the pack reports as JSON on stdout.
    #[arg(long)]
    pub json: bool,
    /// No progress bar.
    #[arg(short, long)]
    pub quiet: bool,
    #[command(flatten)]
    pub limits: LimitArgs,
}

pub fn run(args: &PackArgs) -> anyhow::Result<bool> {
    if args.emoji.len() > args.inputs.len() {
        bail!(
            "{} --emoji lists were given for {} stickers",
            args.emoji.len(),
            args.inputs.len()
        );
    }
    let stickers = args
        .inputs
        .iter()
        .enumerate()
        .map(|(i, p)| PackSticker {
            source: StickerSource::Path(p.clone()),
            emoji: args
                .emoji
                .get(i)
                .map(|e| {
                    e.split(',')
                        .map(|s| s.trim().to_string())
                        .filter(|s| !s.is_empty())
                        .collect()
                })
                .unwrap_or_else(|| vec!["🙂".to_string()]),
            name: String::new(),
        })
        .collect();
    let spec = PackSpec {
        name: args.name.clone(),
        author: args.author.clone(),
        stickers,
        tray_icon: args.icon.clone().map(StickerSource::Path),
        options: args.fit.options(),
        limits: args.limits.limits(),
    };
    std::fs::create_dir_all(&args.output)
        .map_err(|e| crate::Error::io("create the output folder", &args.output, e))?;
    let mut ok = true;
    let mut reports = Vec::new();
    for &preset in &args.platform {
        let mut bar = Bar::new(args.quiet || args.json);
        let r = pack::export_pack(&spec, preset, &args.output, &mut bar);
        bar.finish();
        match r {
            Ok(report) => {
                ok &= report.complete;
                if !args.json {
                    println!("{report}");
                }
                reports.push(report);
            }
            Err(e) => {
                ok = false;
                eprintln!("error: {preset} pack: {e}");
            }
        }
    }
    if args.json {
        println!("{}", serde_json::to_string_pretty(&reports)?);
    }
    Ok(ok)
}

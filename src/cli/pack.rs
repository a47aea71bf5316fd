//! `ildiff pack`: several stickers into one ready-to-upload folder per platform, with icons and
//! the manifest each platform's tooling expects; with `--from`, an existing pack (another app's
//! or ours) converted for other platforms, keeping names, emoji and order.

use std::path::PathBuf;

use anyhow::bail;
use clap::Args;

use super::LimitArgs;
use super::export::{FitArgs, parse_preset};
use super::progress_bar::Bar;
use crate::media::pack::{self, PackSpec, PackSticker, StickerSource};
use crate::media::pack_import;
use crate::media::presets::{Preset, TimeFit};

#[derive(Debug, Args)]
pub struct PackArgs {
    /// The stickers, in pack order (files or folders of PNG frames).
    #[arg(required_unless_present = "from", conflicts_with = "from")]
    pub inputs: Vec<PathBuf>,
    /// Convert this pack instead: a WhatsApp folder or `.wastickers`, a LINE ZIP or folder,
    /// a folder of Telegram `.webm`/`.webp` files, a Signal or Discord folder, or a pack
    /// folder written by `ildiff pack`. Names, emoji and order are kept.
    #[arg(long, value_name = "PACK")]
    pub from: Option<PathBuf>,
    /// Folder to write into; each platform gets its own sub-folder.
    #[arg(short, long)]
    pub output: PathBuf,
    /// Platforms, comma-separated (e.g. `whatsapp,telegram,line`).
    #[arg(long, required = true, value_delimiter = ',', value_parser = parse_preset)]
    pub platform: Vec<Preset>,
    /// Pack title (default: the converted pack's, else "My stickers").
    #[arg(long)]
    pub name: Option<String>,
    /// Publisher shown by the platform (default: the converted pack's, else "ILDiff Studio").
    #[arg(long)]
    pub author: Option<String>,
    /// Emoji for each sticker in order, comma-separated per sticker: `--emoji 😀,😂 --emoji 🐱`.
    /// Stickers without one (here or in the converted pack) get 🙂.
    #[arg(long)]
    pub emoji: Vec<String>,
    /// Picture for the tray/tab icons (default: the first sticker).
    #[arg(long)]
    pub icon: Option<PathBuf>,
    #[command(flatten)]
    pub fit: FitArgs,
    /// One sticker's own way to fit the time limit, overriding `--fit-time` for it:
    /// `--sticker-fit-time 2=speed` (sticker numbers from 1; repeatable).
    #[arg(long, value_name = "N=cut|speed", value_parser = parse_sticker_time)]
    pub sticker_fit_time: Vec<(usize, TimeFit)>,
    /// Print the pack reports as JSON on stdout.
    #[arg(long)]
    pub json: bool,
    /// No progress bar.
    #[arg(short, long)]
    pub quiet: bool,
    #[command(flatten)]
    pub limits: LimitArgs,
}

fn parse_sticker_time(s: &str) -> Result<(usize, TimeFit), String> {
    let (n, how) = s
        .split_once('=')
        .ok_or_else(|| format!("`{s}`: expected N=cut or N=speed"))?;
    let n: usize = n
        .trim()
        .parse()
        .ok()
        .filter(|&n| n >= 1)
        .ok_or_else(|| format!("`{s}`: the sticker number must be 1 or more"))?;
    let how = match how.trim() {
        "cut" => TimeFit::Cut,
        "speed" => TimeFit::Speed,
        other => return Err(format!("`{s}`: `{other}` is not cut or speed")),
    };
    Ok((n, how))
}

/// Emoji for a sticker with none: a neutral face every platform accepts.
const DEFAULT_EMOJI: &str = "🙂";

pub fn run(args: &PackArgs) -> anyhow::Result<bool> {
    // Kept alive until the export ends: a ZIP's stickers are extracted into its scratch folder.
    let imported = match &args.from {
        Some(p) => Some(pack_import::read_pack(p)?),
        None => None,
    };
    let (mut stickers, from_name, from_author, from_icon) = match &imported {
        Some(pack) => {
            if !args.quiet && !args.json {
                eprintln!(
                    "read {} ({}): {} sticker(s)",
                    pack.name,
                    pack.kind,
                    pack.stickers.len()
                );
            }
            (
                pack.stickers.clone(),
                Some(pack.name.clone()),
                Some(pack.author.clone()),
                pack.tray_icon.clone(),
            )
        }
        None => (
            args.inputs
                .iter()
                .map(|p| PackSticker::new(StickerSource::Path(p.clone()), Vec::new()))
                .collect::<Vec<_>>(),
            None,
            None,
            None,
        ),
    };
    if args.emoji.len() > stickers.len() {
        bail!(
            "{} --emoji lists were given for {} stickers",
            args.emoji.len(),
            stickers.len()
        );
    }
    if let Some(&(n, _)) = args
        .sticker_fit_time
        .iter()
        .find(|(n, _)| *n > stickers.len())
    {
        bail!(
            "--sticker-fit-time names sticker {n}, but the pack has {}",
            stickers.len()
        );
    }
    for &(n, how) in &args.sticker_fit_time {
        stickers[n - 1].time = Some(how);
    }
    for (i, s) in stickers.iter_mut().enumerate() {
        if let Some(e) = args.emoji.get(i) {
            s.emoji = e
                .split(',')
                .map(|s| s.trim().to_string())
                .filter(|s| !s.is_empty())
                .collect();
        }
        if s.emoji.is_empty() {
            s.emoji = vec![DEFAULT_EMOJI.to_string()];
        }
    }
    let pick = |given: &Option<String>, from: Option<String>, default: &str| {
        given
            .clone()
            .or(from.filter(|s| !s.trim().is_empty()))
            .unwrap_or_else(|| default.to_string())
    };
    let spec = PackSpec {
        name: pick(&args.name, from_name, "My stickers"),
        author: pick(&args.author, from_author, "ILDiff Studio"),
        stickers,
        tray_icon: args.icon.clone().map(StickerSource::Path).or(from_icon),
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

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn sticker_fit_time_names_a_sticker_and_a_way() {
        assert_eq!(parse_sticker_time("2=speed"), Ok((2, TimeFit::Speed)));
        assert_eq!(parse_sticker_time(" 1 = cut "), Ok((1, TimeFit::Cut)));
        for bad in ["0=cut", "2", "x=cut", "2=slow"] {
            let e = parse_sticker_time(bad).expect_err(bad);
            assert!(e.contains(bad), "{e}");
        }
    }
}

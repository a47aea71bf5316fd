//! `ildiff export`: any importable clip in, a sticker file out, fitted to a platform preset or
//! written as-is in the format the output's extension names.

use std::path::{Path, PathBuf};

use anyhow::{Context, bail};
use clap::{Args, ValueEnum};

use super::progress_bar::Bar;
use super::{Batch, LimitArgs};
use crate::media::encode::{Encoding, GifOptions};
use crate::media::presets::{self, ExportReport, FitOptions, Preset};
use crate::media::{Fit, Format, decode};

#[derive(Debug, Args)]
pub struct ExportArgs {
    /// Input files or folders of numbered PNG frames. With several inputs, OUT is a folder.
    #[arg(required = true)]
    pub inputs: Vec<PathBuf>,
    /// Output file (its extension picks the format: .png = APNG, .webp, .gif, .webm; a path
    /// ending in `/` = a folder of PNG frames), or a folder when there are several inputs.
    #[arg(short, long)]
    pub output: PathBuf,
    /// Platform preset; the file is fitted to every rule and checked after writing.
    #[arg(long, value_parser = parse_preset, help = preset_help())]
    pub preset: Option<Preset>,
    #[command(flatten)]
    pub fit: FitArgs,
    /// Output format for batch exports without a preset (ignored with a single output file).
    #[arg(long, value_enum)]
    pub format: Option<OutFormat>,
    /// Lossy WebP quality 0–100 (plain export; default: lossless).
    #[arg(long, value_parser = clap::value_parser!(u8).range(0..=100))]
    pub webp_quality: Option<u8>,
    /// WebM VP9 CRF 0–63, lower is better (plain export; default 30).
    #[arg(long, value_parser = clap::value_parser!(u8).range(0..=63))]
    pub crf: Option<u8>,
    /// Quantise APNG/GIF to this many colours, 2–256 (plain export).
    #[arg(long, value_parser = clap::value_parser!(u16).range(2..=256))]
    pub palette: Option<u16>,
    /// GIF: colour that semi-transparent edges are blended over (hex RRGGBB, the chat background).
    #[arg(long, value_parser = parse_hex_rgb)]
    pub matte: Option<[u8; 3]>,
    /// GIF: no dithering.
    #[arg(long)]
    pub no_dither: bool,
    /// Print the export reports as JSON on stdout.
    #[arg(long)]
    pub json: bool,
    /// No progress bar.
    #[arg(short, long)]
    pub quiet: bool,
    #[command(flatten)]
    pub limits: LimitArgs,
}

/// Timing and canvas options shared by `export` and `pack`.
#[derive(Debug, Clone, Args)]
pub struct FitArgs {
    /// Resample to this frame rate (still capped by the preset).
    #[arg(long)]
    pub fps: Option<f64>,
    /// Canvas size: `512` (square) or `WxH`.
    #[arg(long, value_parser = parse_size)]
    pub size: Option<(u32, u32)>,
    /// Keep only this part of the clip, in seconds: `START:END`, `START:` or `:END`.
    #[arg(long, value_parser = parse_trim)]
    pub trim: Option<(f64, f64)>,
    /// How to place the clip on a canvas of another aspect ratio.
    #[arg(long, value_enum, default_value_t = FitMode::Contain)]
    pub fit: FitMode,
    /// A clip longer than the preset allows: `cut` keeps the start, `speed` plays all of it
    /// faster. The report says which was used.
    #[arg(long, value_enum, default_value_t = FitTimeArg::Cut)]
    pub fit_time: FitTimeArg,
}

#[derive(Debug, Clone, Copy, ValueEnum)]
pub enum FitTimeArg {
    Cut,
    Speed,
}

impl FitArgs {
    pub fn options(&self) -> FitOptions {
        FitOptions {
            fps: self.fps,
            size: self.size,
            trim: self.trim,
            fit: match self.fit {
                FitMode::Contain => Fit::Contain,
                FitMode::Cover => Fit::Cover,
                FitMode::Stretch => Fit::Stretch,
            },
            time: match self.fit_time {
                FitTimeArg::Cut => crate::media::presets::TimeFit::Cut,
                FitTimeArg::Speed => crate::media::presets::TimeFit::Speed,
            },
        }
    }
}

#[derive(Debug, Clone, Copy, ValueEnum)]
pub enum FitMode {
    /// Scale to fit inside and pad with transparency.
    Contain,
    /// Scale to cover and crop the overflow.
    Cover,
    /// Scale each axis independently.
    Stretch,
}

#[derive(Debug, Clone, Copy, ValueEnum)]
pub enum OutFormat {
    Png,
    Webp,
    Gif,
    Webm,
    Folder,
}

impl OutFormat {
    fn extension(self) -> &'static str {
        match self {
            OutFormat::Png => "png",
            OutFormat::Webp => "webp",
            OutFormat::Gif => "gif",
            OutFormat::Webm => "webm",
            OutFormat::Folder => "",
        }
    }
}

pub fn parse_preset(s: &str) -> Result<Preset, String> {
    s.parse::<Preset>().map_err(|e| e.to_string())
}

fn preset_help() -> String {
    format!("Platform preset:\n{}", Preset::help_list())
}

pub fn parse_size(s: &str) -> Result<(u32, u32), String> {
    let parse = |t: &str| {
        t.trim()
            .parse::<u32>()
            .ok()
            .filter(|v| (1..=16384).contains(v))
            .ok_or_else(|| format!("`{s}` is not a size: use 512 or WxH (1..=16384)"))
    };
    match s.split_once(['x', 'X']) {
        Some((w, h)) => Ok((parse(w)?, parse(h)?)),
        None => parse(s).map(|v| (v, v)),
    }
}

pub fn parse_trim(s: &str) -> Result<(f64, f64), String> {
    let bad = || {
        format!("`{s}` is not a trim range: use START:END in seconds (either side may be empty)")
    };
    let (a, b) = s.split_once(':').ok_or_else(bad)?;
    let num = |t: &str, empty: f64| -> Result<f64, String> {
        if t.trim().is_empty() {
            Ok(empty)
        } else {
            t.trim()
                .parse::<f64>()
                .ok()
                .filter(|v| v.is_finite() && *v >= 0.0)
                .ok_or_else(bad)
        }
    };
    let (start, end) = (num(a, 0.0)?, num(b, f64::INFINITY)?);
    if end <= start {
        return Err(format!(
            "trim range `{s}` is empty: END must be after START"
        ));
    }
    Ok((start, end))
}

pub fn parse_hex_rgb(s: &str) -> Result<[u8; 3], String> {
    let t = s.trim_start_matches('#');
    let v = u32::from_str_radix(t, 16).ok().filter(|_| t.len() == 6);
    v.map(|v| [(v >> 16) as u8, (v >> 8) as u8, v as u8])
        .ok_or_else(|| format!("`{s}` is not a colour: use RRGGBB hex, e.g. ffffff"))
}

/// The encoding override for a plain export, from the quality flags.
fn plain_encoding(args: &ExportArgs, out: &Path) -> Option<Encoding> {
    let format = if out.as_os_str().to_string_lossy().ends_with('/') {
        Format::Folder
    } else {
        Format::from_extension(out)?
    };
    match format {
        Format::WebP => args.webp_quality.map(|q| Encoding::WebP {
            quality: Some(q as f32),
        }),
        Format::WebM => args.crf.map(|crf| Encoding::WebM { crf }),
        Format::Png => args.palette.map(|n| Encoding::Apng { palette: Some(n) }),
        Format::Gif => {
            let mut g = GifOptions::default();
            let changed = args.palette.is_some() || args.matte.is_some() || args.no_dither;
            if let Some(n) = args.palette {
                g.colors = n;
            }
            if let Some(m) = args.matte {
                g.matte = m;
            }
            g.dither = !args.no_dither;
            changed.then_some(Encoding::Gif(g))
        }
        _ => None,
    }
}

fn output_for(args: &ExportArgs, input: &Path) -> anyhow::Result<PathBuf> {
    if args.inputs.len() == 1 {
        return Ok(args.output.clone());
    }
    let stem = input
        .file_stem()
        .map(|s| s.to_string_lossy().into_owned())
        .unwrap_or_else(|| "clip".into());
    let ext = match (args.preset, args.format) {
        (_, Some(f)) => f.extension(),
        (Some(p), None) => p.default_extension(),
        (None, None) => "png",
    };
    let mut out = args.output.join(stem);
    if ext.is_empty() {
        let mut s = out.into_os_string();
        s.push("/");
        out = PathBuf::from(s);
    } else {
        out.set_extension(ext);
    }
    Ok(out)
}

fn export_one(args: &ExportArgs, input: &Path, bar: &mut Bar) -> anyhow::Result<ExportReport> {
    let out = output_for(args, input)?;
    let anim = decode::open(input, &args.limits.limits())?;
    let opts = args.fit.options();
    let plain = plain_encoding(args, &out);
    let report = presets::export(&anim, args.preset, &out, &opts, plain, bar)
        .with_context(|| format!("exporting {} to {}", input.display(), out.display()))?;
    Ok(report)
}

pub fn run(args: &ExportArgs) -> anyhow::Result<bool> {
    if args.inputs.len() > 1 {
        if args.output.is_file() {
            bail!(
                "with {} inputs the output must be a folder, but it is a file: {}",
                args.inputs.len(),
                args.output.display()
            );
        }
        std::fs::create_dir_all(&args.output)
            .with_context(|| format!("creating the output folder {}", args.output.display()))?;
    }
    let mut batch = Batch::default();
    let mut reports = Vec::new();
    let mut all_pass = true;
    for input in &args.inputs {
        let mut bar = Bar::new(args.quiet || args.json);
        let r = export_one(args, input, &mut bar);
        bar.finish();
        if let Some(report) = batch.record(input, r) {
            all_pass &= report.passed;
            if !args.json {
                println!("{report}");
            }
            reports.push(report);
        }
    }
    if args.json {
        let text = if args.inputs.len() == 1 && reports.len() == 1 {
            serde_json::to_string_pretty(&reports[0])?
        } else {
            serde_json::to_string_pretty(&reports)?
        };
        println!("{text}");
    }
    if !all_pass {
        eprintln!("error: some exported files break their platform's rules (see FAIL lines)");
    }
    Ok(batch.finish() && all_pass)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_sizes_trims_and_colours() {
        assert_eq!(parse_size("512"), Ok((512, 512)));
        assert_eq!(parse_size("320x270"), Ok((320, 270)));
        assert!(parse_size("0x5").is_err());
        assert!(parse_size("big").is_err());
        assert_eq!(parse_trim("1.5:3"), Ok((1.5, 3.0)));
        assert_eq!(parse_trim(":2"), Ok((0.0, 2.0)));
        assert_eq!(parse_trim("1:").map(|t| t.0), Ok(1.0));
        assert!(parse_trim("3:1").is_err());
        assert!(parse_trim("abc").is_err());
        assert_eq!(parse_hex_rgb("#ff8000"), Ok([255, 128, 0]));
        assert!(parse_hex_rgb("fff").is_err());
    }
}

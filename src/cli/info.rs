//! `ildiff info`: what a clip is, without writing anything.

use std::path::PathBuf;

use anyhow::Context;
use clap::Args;
use serde::Serialize;

use super::{Batch, LimitArgs};
use crate::media::animation::AlphaStats;
use crate::media::decode;

#[derive(Debug, Args)]
pub struct InfoArgs {
    /// Files or folders of numbered PNG frames.
    #[arg(required = true)]
    pub inputs: Vec<PathBuf>,
    /// Print one JSON object per input (a JSON array when several).
    #[arg(long)]
    pub json: bool,
    #[command(flatten)]
    pub limits: LimitArgs,
}

/// What `info` reports for one clip.
#[derive(Debug, Serialize)]
pub struct ClipInfo {
    pub path: PathBuf,
    pub format: &'static str,
    pub animated: bool,
    pub file_bytes: u64,
    pub width: u32,
    pub height: u32,
    pub frames: usize,
    pub fps: f64,
    pub duration_secs: f64,
    pub loops: String,
    pub has_alpha: bool,
    pub alpha: AlphaStats,
}

pub fn inspect(path: &std::path::Path, limits: &crate::media::Limits) -> anyhow::Result<ClipInfo> {
    let mut src = decode::open_source(path, limits)?;
    let info = src.info().clone();
    let mut frames = Vec::new();
    while let Some(f) = src.next_frame()? {
        frames.push(f);
    }
    let anim = crate::media::Animation::new(info.width, info.height, frames, info.loops)
        .with_context(|| format!("reading {}", path.display()))?;
    let file_bytes = if path.is_dir() {
        std::fs::read_dir(path)
            .map(|rd| {
                rd.filter_map(|e| e.ok()?.metadata().ok())
                    .map(|m| m.len())
                    .sum()
            })
            .unwrap_or(0)
    } else {
        std::fs::metadata(path).map(|m| m.len()).unwrap_or(0)
    };
    Ok(ClipInfo {
        path: path.to_path_buf(),
        format: info.format.name(),
        animated: info.animated,
        file_bytes,
        width: anim.width,
        height: anim.height,
        frames: anim.len(),
        fps: anim.fps(),
        duration_secs: anim.duration_secs(),
        loops: match anim.loops {
            crate::media::LoopCount::Infinite => "infinite".into(),
            crate::media::LoopCount::Plays(n) => format!("{n} plays"),
        },
        has_alpha: anim.has_alpha(),
        alpha: anim.alpha_stats(),
    })
}

pub fn run(args: &InfoArgs) -> anyhow::Result<bool> {
    let limits = args.limits.limits();
    let mut batch = Batch::default();
    let mut infos = Vec::new();
    for path in &args.inputs {
        if let Some(info) = batch.record(path, inspect(path, &limits)) {
            if !args.json {
                print_human(&info);
            }
            infos.push(info);
        }
    }
    if args.json {
        let text = if args.inputs.len() == 1 && infos.len() == 1 {
            serde_json::to_string_pretty(&infos[0])?
        } else {
            serde_json::to_string_pretty(&infos)?
        };
        println!("{text}");
    }
    Ok(batch.finish())
}

fn print_human(i: &ClipInfo) {
    println!("{}", i.path.display());
    println!(
        "  format    {}{}",
        i.format,
        if i.animated { " (animated)" } else { "" }
    );
    println!("  size      {} bytes", i.file_bytes);
    println!("  canvas    {}x{}", i.width, i.height);
    println!("  frames    {}", i.frames);
    println!("  fps       {:.3}", i.fps);
    println!("  duration  {:.3} s", i.duration_secs);
    println!("  loops     {}", i.loops);
    println!(
        "  alpha     {}: mean {:.3}, transparent {:.1}%, opaque {:.1}%, partial {:.1}%",
        if i.has_alpha { "yes" } else { "none (opaque)" },
        i.alpha.mean,
        i.alpha.transparent * 100.0,
        i.alpha.opaque * 100.0,
        i.alpha.partial * 100.0
    );
}

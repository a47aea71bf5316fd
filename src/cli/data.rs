//! `ildiff data`: training and evaluation data. `ildiff data synth` writes procedural stickers
//! with exact alpha (and, with `--composite`, labelled opaque composites of them) as PNG
//! folders, split into `train/` and `val/` by seed.

use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::mpsc;

use anyhow::Context;
use clap::{Args, Subcommand};
use serde::Serialize;

use super::Batch;
use super::progress_bar::Bar;
use crate::media::atomic::write_atomic;
use crate::media::encode::{self, Encoding};
use crate::progress::Progress;
use crate::train::composite::DegradeParams;
use crate::train::synth::mix;
use crate::train::{
    Background, ClipSpec, Degradation, Split, SynthConfig, composite, render, split_of,
};

#[derive(Debug, Args)]
pub struct DataArgs {
    #[command(subcommand)]
    pub command: DataCommand,
}

#[derive(Debug, Subcommand)]
pub enum DataCommand {
    /// Generate synthetic animated stickers with ground-truth alpha:
    /// DIR/{train,val}/clip_NNNNN/rgba/frame_*.png (+ composites and meta.json).
    Synth(SynthArgs),
}

#[derive(Debug, Args)]
pub struct SynthArgs {
    /// Output folder.
    #[arg(short, long)]
    pub output: PathBuf,
    /// Number of clips.
    #[arg(long, default_value_t = 100)]
    pub count: u32,
    /// Base seed; clip i uses a seed derived from it and i, so runs with the same seed agree.
    #[arg(long, default_value_t = 0)]
    pub seed: u64,
    /// Canvas side in pixels.
    #[arg(long, default_value_t = 384, value_parser = clap::value_parser!(u32).range(16..=4096))]
    pub size: u32,
    /// Frames per clip.
    #[arg(long, default_value_t = 16, value_parser = clap::value_parser!(u32).range(1..=1024))]
    pub frames: u32,
    /// Frame rate.
    #[arg(long, default_value_t = 12.0)]
    pub fps: f64,
    /// Also write one opaque composite per background kind, each with a seed-drawn
    /// degradation, into `composite_<background>_<degradation>/`.
    #[arg(long)]
    pub composite: bool,
    /// Folder of pictures for the photo and moving backgrounds (default: procedural scenery).
    #[arg(long)]
    pub photos: Option<PathBuf>,
    /// Worker threads (default: all cores, at most 8).
    #[arg(long, value_parser = clap::value_parser!(u32).range(1..=64))]
    pub jobs: Option<u32>,
    /// No progress bar.
    #[arg(short, long)]
    pub quiet: bool,
}

pub fn run(args: &DataArgs) -> anyhow::Result<bool> {
    match &args.command {
        DataCommand::Synth(a) => synth(a),
    }
}

/// `meta.json` of one clip: enough to regenerate it and to split figures by label.
#[derive(Debug, Serialize)]
struct ClipMeta {
    index: u32,
    seed: u64,
    split: Split,
    config: SynthConfig,
    spec: ClipSpec,
    composites: Vec<CompositeMeta>,
}

#[derive(Debug, Serialize)]
struct CompositeMeta {
    dir: String,
    background: Background,
    degradation: Degradation,
    params: DegradeParams,
    seed: u64,
    /// The alpha the composite carries: `rgba` (the clip's `rgba/` frames) or, for GIF,
    /// `rgba_binarised_128` (those frames' alpha thresholded at 128).
    gt_alpha: &'static str,
    #[serde(skip_serializing_if = "Option::is_none")]
    photo: Option<PathBuf>,
}

fn synth(args: &SynthArgs) -> anyhow::Result<bool> {
    let cfg = SynthConfig {
        width: args.size,
        height: args.size,
        frames: args.frames,
        fps: args.fps,
    };
    // Fail on a bad config before creating anything.
    render(&ClipSpec::from_seed(0), &SynthConfig { frames: 1, ..cfg })?;
    for split in [Split::Train, Split::Val] {
        let dir = args.output.join(split.name());
        std::fs::create_dir_all(&dir)
            .with_context(|| format!("cannot create output folder {}", dir.display()))?;
    }
    let jobs = args.jobs.map_or_else(
        || {
            std::thread::available_parallelism()
                .map_or(1, |n| n.get())
                .min(8)
        },
        |j| j as usize,
    );
    let count = args.count as usize;
    let next = AtomicUsize::new(0);
    let (tx, rx) = mpsc::channel::<(u32, PathBuf, anyhow::Result<Split>)>();
    let mut batch = Batch::default();
    let mut bar = Bar::new(args.quiet);
    let (mut train, mut val) = (0usize, 0usize);
    std::thread::scope(|s| -> anyhow::Result<()> {
        for w in 0..jobs.min(count.max(1)) {
            let tx = tx.clone();
            let next = &next;
            std::thread::Builder::new()
                .name(format!("synth-{w}"))
                .spawn_scoped(s, move || {
                    loop {
                        let i = next.fetch_add(1, Ordering::Relaxed);
                        if i >= count {
                            break;
                        }
                        let i = i as u32;
                        let seed = mix(args.seed, u64::from(i));
                        let dir = args
                            .output
                            .join(split_of(seed).name())
                            .join(format!("clip_{i:05}"));
                        let r = write_clip(args, &cfg, i, seed, &dir).map(|()| split_of(seed));
                        if tx.send((i, dir, r)).is_err() {
                            break;
                        }
                    }
                })
                .context("cannot start a worker thread")?;
        }
        drop(tx);
        let mut done = 0u64;
        bar.step("synth", 0, count as u64);
        for (_, dir, r) in rx {
            done += 1;
            match batch.record(&dir, r) {
                Some(Split::Train) => train += 1,
                Some(Split::Val) => val += 1,
                None => {}
            }
            bar.step("synth", done, count as u64);
        }
        Ok(())
    })?;
    bar.finish();
    if !args.quiet {
        println!(
            "wrote {} clips ({train} train, {val} val) to {}",
            train + val,
            args.output.display()
        );
    }
    Ok(batch.finish())
}

fn write_clip(
    args: &SynthArgs,
    cfg: &SynthConfig,
    index: u32,
    seed: u64,
    dir: &Path,
) -> anyhow::Result<()> {
    std::fs::create_dir_all(dir)
        .with_context(|| format!("cannot create clip folder {}", dir.display()))?;
    let spec = ClipSpec::from_seed(seed);
    let anim = render(&spec, cfg)?;
    encode::write(&anim, &Encoding::PngFolder, &dir.join("rgba"))?;
    let mut composites = Vec::new();
    if args.composite {
        for (k, bg) in Background::ALL.into_iter().enumerate() {
            let cseed = mix(seed, 100 + k as u64);
            let deg = Degradation::draw(cseed);
            let c = composite(&anim, bg, deg, cseed, args.photos.as_deref())?;
            let name = format!("composite_{}_{}", bg.name(), deg.name());
            encode::write(&c.rgb, &Encoding::PngFolder, &dir.join(&name))?;
            composites.push(CompositeMeta {
                dir: name,
                background: bg,
                degradation: deg,
                params: c.params,
                seed: cseed,
                gt_alpha: if deg == Degradation::Gif {
                    "rgba_binarised_128"
                } else {
                    "rgba"
                },
                photo: c.photo,
            });
        }
    }
    let meta = ClipMeta {
        index,
        seed,
        split: split_of(seed),
        config: *cfg,
        spec,
        composites,
    };
    let json = serde_json::to_vec_pretty(&meta).context("cannot serialise meta.json")?;
    write_atomic(&dir.join("meta.json"), &json)?;
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn args(dir: &Path, composite: bool) -> DataArgs {
        DataArgs {
            command: DataCommand::Synth(SynthArgs {
                output: dir.to_path_buf(),
                count: 3,
                seed: 7,
                size: 64,
                frames: 3,
                fps: 10.0,
                composite,
                photos: None,
                jobs: Some(2),
                quiet: true,
            }),
        }
    }

    #[test]
    fn synth_writes_the_expected_layout() {
        let dir = tempfile::tempdir().expect("tempdir");
        assert!(run(&args(dir.path(), true)).expect("run"));
        let mut seen = 0;
        for i in 0..3 {
            let name = format!("clip_{i:05}");
            let found: Vec<PathBuf> = ["train", "val"]
                .iter()
                .map(|s| dir.path().join(s).join(&name))
                .filter(|p| p.is_dir())
                .collect();
            assert_eq!(found.len(), 1, "{name}");
            let clip = &found[0];
            for f in 0..3 {
                assert!(clip.join(format!("rgba/frame_{f:05}.png")).is_file());
            }
            let meta: serde_json::Value =
                serde_json::from_slice(&std::fs::read(clip.join("meta.json")).expect("meta"))
                    .expect("json");
            assert_eq!(meta["index"], i);
            let split = meta["split"].as_str().expect("split");
            assert!(clip.starts_with(dir.path().join(split)));
            let comps = meta["composites"].as_array().expect("composites");
            assert_eq!(comps.len(), Background::ALL.len());
            for c in comps {
                let d = c["dir"].as_str().expect("dir");
                assert_eq!(
                    d,
                    format!(
                        "composite_{}_{}",
                        c["background"].as_str().expect("bg"),
                        c["degradation"].as_str().expect("deg")
                    )
                );
                let frame = image::open(clip.join(d).join("frame_00002.png")).expect("frame");
                assert_eq!((frame.width(), frame.height()), (64, 64));
                assert!(frame.to_rgba8().pixels().all(|p| p[3] == 255));
            }
            seen += 1;
        }
        assert_eq!(seen, 3);
    }

    #[test]
    fn synth_is_reproducible_and_plain_without_composite() {
        let (a, b) = (
            tempfile::tempdir().expect("tempdir"),
            tempfile::tempdir().expect("tempdir"),
        );
        assert!(run(&args(a.path(), false)).expect("run"));
        assert!(run(&args(b.path(), false)).expect("run"));
        for split in ["train", "val"] {
            let Ok(list) = std::fs::read_dir(a.path().join(split)) else {
                continue;
            };
            for clip in list {
                let clip = clip.expect("entry").path();
                let rel = clip.strip_prefix(a.path()).expect("rel");
                let names: Vec<String> = std::fs::read_dir(&clip)
                    .expect("ls")
                    .map(|e| e.expect("entry").file_name().to_string_lossy().into_owned())
                    .collect();
                assert!(names.iter().all(|n| !n.starts_with("composite_")));
                let f = Path::new("rgba/frame_00001.png");
                assert_eq!(
                    std::fs::read(clip.join(f)).expect("a"),
                    std::fs::read(b.path().join(rel).join(f)).expect("b")
                );
            }
        }
    }
}

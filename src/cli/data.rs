//! `ildiff data`: training and evaluation data, all in one layout so training and evaluation
//! tools read every source alike: `OUT/{train,val}/clip_NNNNN/rgba/frame_*.png` (exact alpha),
//! optional labelled opaque composites `composite_<background>_<degradation>/`, and
//! `meta.json`. `synth` draws procedural stickers, `art` animates real artwork (SVG/PNG from
//! `packaging/fetch-training-data.sh`), `import` converts real transparent stickers.

use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::mpsc;

use anyhow::Context;
use clap::{Args, Subcommand};
use serde::Serialize;

use super::progress_bar::Bar;
use super::{Batch, LimitArgs};
use crate::media::atomic::write_atomic;
use crate::media::encode::{self, Encoding};
use crate::media::{Animation, Fit, decode};
use crate::progress::Progress;
use crate::train::art::name_seed;
use crate::train::composite::DegradeParams;
use crate::train::synth::mix;
use crate::train::{
    ArtLibrary, Background, ClipSpec, Degradation, Split, SynthConfig, composite, render, split_of,
    split_of_name,
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
    /// Animate real artwork (SVG or RGBA PNG under --art, split by file name) into clips
    /// with exact alpha, in the same layout as `synth`.
    Art(ArtArgs),
    /// Convert real transparent animated stickers (APNG, WebP, GIF, WebM with alpha...) into
    /// clips in the same layout; inputs without real alpha are skipped with a reason.
    Import(ImportArgs),
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

#[derive(Debug, Args)]
pub struct ArtArgs {
    /// Artwork folder (searched recursively for *.svg and RGBA *.png).
    #[arg(long)]
    pub art: PathBuf,
    /// Output folder.
    #[arg(short, long)]
    pub output: PathBuf,
    /// Number of clips.
    #[arg(long, default_value_t = 100)]
    pub count: u32,
    /// Base seed; clip i uses a seed derived from it and i.
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
    /// Also write labelled opaque composites (see `data synth --composite`).
    #[arg(long)]
    pub composite: bool,
    /// Folder of pictures for the photo and moving backgrounds.
    #[arg(long)]
    pub photos: Option<PathBuf>,
    /// Worker threads (default: all cores, at most 8).
    #[arg(long, value_parser = clap::value_parser!(u32).range(1..=64))]
    pub jobs: Option<u32>,
    /// No progress bar.
    #[arg(short, long)]
    pub quiet: bool,
}

#[derive(Debug, Args)]
pub struct ImportArgs {
    /// Folder of transparent animated stickers (searched recursively).
    pub input: PathBuf,
    /// Output folder.
    #[arg(short, long)]
    pub output: PathBuf,
    /// Canvas side: clips are scaled to fit and padded with transparency.
    #[arg(long, default_value_t = 384, value_parser = clap::value_parser!(u32).range(16..=4096))]
    pub size: u32,
    /// Frames per clip: the clip is resampled to --fps, then cut (or looped) to this many.
    #[arg(long, default_value_t = 16, value_parser = clap::value_parser!(u32).range(1..=1024))]
    pub frames: u32,
    /// Frame rate the clips are resampled to.
    #[arg(long, default_value_t = 12.0)]
    pub fps: f64,
    /// Seed of the composites' random choices.
    #[arg(long, default_value_t = 0)]
    pub seed: u64,
    /// Also write labelled opaque composites (see `data synth --composite`).
    #[arg(long)]
    pub composite: bool,
    /// Folder of pictures for the photo and moving backgrounds.
    #[arg(long)]
    pub photos: Option<PathBuf>,
    /// Worker threads (default: all cores, at most 8).
    #[arg(long, value_parser = clap::value_parser!(u32).range(1..=64))]
    pub jobs: Option<u32>,
    /// No progress bar.
    #[arg(short, long)]
    pub quiet: bool,
    #[command(flatten)]
    pub limits: LimitArgs,
}

pub fn run(args: &DataArgs) -> anyhow::Result<bool> {
    match &args.command {
        DataCommand::Synth(a) => synth(a),
        DataCommand::Art(a) => art(a),
        DataCommand::Import(a) => import(a).map(|r| {
            if !a.quiet {
                println!(
                    "imported {} stickers, skipped {} (listed in skipped.tsv)",
                    r.written.len(),
                    r.skipped.len()
                );
            }
            r.ok
        }),
    }
}

/// `meta.json` of one clip: enough to regenerate it and to split figures by label. `spec`
/// is the source's own description (a synth [`ClipSpec`], an art spec, an import record).
#[derive(Debug, Serialize)]
struct ClipMeta<'a, S: Serialize> {
    index: u32,
    seed: u64,
    split: Split,
    /// `synth`, `art` or `import`.
    source: &'static str,
    config: SynthConfig,
    spec: &'a S,
    composites: Vec<CompositeMeta>,
}

/// What every clip writer shares: where composites come from.
#[derive(Debug, Clone, Copy)]
struct Labels<'a> {
    composite: bool,
    photos: Option<&'a Path>,
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
    let labels = Labels {
        composite: args.composite,
        photos: args.photos.as_deref(),
    };
    run_clips(
        &args.output,
        args.count as usize,
        args.jobs,
        args.quiet,
        "synth",
        |i| {
            let seed = mix(args.seed, u64::from(i));
            let split = split_of(seed);
            let dir = clip_dir(&args.output, split, i);
            let r = (|| {
                let spec = ClipSpec::from_seed(seed);
                let anim = render(&spec, &cfg)?;
                write_clip(&anim, &dir, i, seed, split, "synth", &cfg, &spec, labels)
            })();
            (dir, r.map(|()| split))
        },
    )
}

fn art(args: &ArtArgs) -> anyhow::Result<bool> {
    let cfg = SynthConfig {
        width: args.size,
        height: args.size,
        frames: args.frames,
        fps: args.fps,
    };
    cfg.validate()?;
    let lib = ArtLibrary::load(&args.art)?;
    if !args.quiet {
        println!(
            "{} artworks ({} train, {} val), {} skipped",
            lib.len(),
            lib.count(Split::Train),
            lib.count(Split::Val),
            lib.skipped().len()
        );
    }
    let labels = Labels {
        composite: args.composite,
        photos: args.photos.as_deref(),
    };
    run_clips(
        &args.output,
        args.count as usize,
        args.jobs,
        args.quiet,
        "art",
        |i| {
            let seed = mix(args.seed, u64::from(i));
            // Fall back to the other split when one has no artwork (tiny folders).
            let mut split = split_of(seed);
            if lib.count(split) == 0 {
                split = match split {
                    Split::Train => Split::Val,
                    Split::Val => Split::Train,
                };
            }
            let dir = clip_dir(&args.output, split, i);
            let r = (|| {
                let spec = lib.spec(split, seed)?;
                let anim = lib.render(&spec, &cfg)?;
                write_clip(&anim, &dir, i, seed, split, "art", &cfg, &spec, labels)
            })();
            (dir, r.map(|()| split))
        },
    )
}

/// What `data import` did: clips written and inputs skipped (with the reason).
#[derive(Debug, Default)]
pub struct ImportReport {
    pub written: Vec<PathBuf>,
    pub skipped: Vec<(PathBuf, String)>,
    /// False when writing some clip failed (skips are not failures).
    pub ok: bool,
}

/// `meta.json` spec of an imported clip.
#[derive(Debug, Serialize)]
struct ImportSpec {
    /// The input file.
    file: PathBuf,
    source_width: u32,
    source_height: u32,
    source_frames: usize,
    source_secs: f64,
}

fn import(args: &ImportArgs) -> anyhow::Result<ImportReport> {
    let cfg = SynthConfig {
        width: args.size,
        height: args.size,
        frames: args.frames,
        fps: args.fps,
    };
    cfg.validate()?;
    let mut files = Vec::new();
    list_files(&args.input, &mut files)
        .with_context(|| format!("cannot read input folder {}", args.input.display()))?;
    files.sort();
    let limits = args.limits.limits();
    let labels = Labels {
        composite: args.composite,
        photos: args.photos.as_deref(),
    };
    let skipped = std::sync::Mutex::new(Vec::new());
    let written = std::sync::Mutex::new(Vec::new());
    let ok = run_clips(
        &args.output,
        files.len(),
        args.jobs,
        args.quiet,
        "import",
        |i| {
            let file = &files[i as usize];
            let split = split_of_name(file);
            let seed = mix(name_seed(file), args.seed);
            let dir = clip_dir(&args.output, split, i);
            let anim = match decode::open(file, &limits) {
                Ok(a) => a,
                Err(e) => {
                    lock(&skipped).push((file.clone(), format!("cannot decode: {e}")));
                    return (dir, Ok(None));
                }
            };
            if let Some(reason) = lacks_real_alpha(&anim) {
                lock(&skipped).push((file.clone(), reason));
                return (dir, Ok(None));
            }
            let r = (|| {
                let clip = conform(&anim, &cfg)?;
                let spec = ImportSpec {
                    file: file.clone(),
                    source_width: anim.width,
                    source_height: anim.height,
                    source_frames: anim.frames.len(),
                    source_secs: anim.duration_secs(),
                };
                write_clip(&clip, &dir, i, seed, split, "import", &cfg, &spec, labels)
            })();
            if r.is_ok() {
                lock(&written).push(dir.clone());
            }
            (dir, r.map(|()| Some(split)))
        },
    )?;
    let mut skipped = skipped.into_inner().unwrap_or_else(|e| e.into_inner());
    skipped.sort();
    if !skipped.is_empty() {
        let list: String = skipped
            .iter()
            .map(|(p, r)| format!("{}\t{r}\n", p.display()))
            .collect();
        write_atomic(&args.output.join("skipped.tsv"), list.as_bytes())?;
        if !args.quiet {
            eprintln!("skipped {} inputs:", skipped.len());
            for (p, r) in &skipped {
                eprintln!("  {}: {r}", p.display());
            }
        }
    }
    let mut written = written.into_inner().unwrap_or_else(|e| e.into_inner());
    written.sort();
    Ok(ImportReport {
        written,
        skipped,
        ok,
    })
}

fn lock<T>(m: &std::sync::Mutex<T>) -> std::sync::MutexGuard<'_, T> {
    m.lock().unwrap_or_else(|e| e.into_inner())
}

/// Why a decoded clip is no training sticker, if it is not: the alpha must separate a
/// foreground from a clear background.
fn lacks_real_alpha(anim: &Animation) -> Option<String> {
    if !anim.has_alpha() {
        return Some("opaque: every pixel has alpha 255 (no real alpha)".into());
    }
    let st = anim.alpha_stats();
    if st.opaque + st.partial <= 0.0 {
        return Some("fully transparent: nothing visible".into());
    }
    if st.transparent < 0.01 {
        return Some(format!(
            "only {:.2} % of pixels are transparent: no cut-out background",
            st.transparent * 100.0
        ));
    }
    None
}

/// Resamples to `cfg.fps`, cuts (or loops) to `cfg.frames` frames and fits the canvas.
fn conform(anim: &Animation, cfg: &SynthConfig) -> anyhow::Result<Animation> {
    let timed = anim.resample_fps(cfg.fps)?;
    let n = cfg.frames as usize;
    let frames = (0..n)
        .map(|k| timed.frames[k % timed.frames.len()].clone())
        .collect();
    let cut = Animation::new(timed.width, timed.height, frames, timed.loops)?;
    Ok(cut.fit(cfg.width, cfg.height, Fit::Contain)?)
}

fn list_files(dir: &Path, out: &mut Vec<PathBuf>) -> std::io::Result<()> {
    for entry in std::fs::read_dir(dir)? {
        let entry = entry?;
        if entry.file_name().to_string_lossy().starts_with('.') {
            continue;
        }
        let ft = entry.file_type()?;
        if ft.is_dir() {
            list_files(&entry.path(), out)?;
        } else if ft.is_file() {
            out.push(entry.path());
        }
    }
    Ok(())
}

fn clip_dir(output: &Path, split: Split, index: u32) -> PathBuf {
    output.join(split.name()).join(format!("clip_{index:05}"))
}

/// A clip producer's answer: the clip folder and its split (`None`: input skipped, nothing
/// written).
trait Outcome {
    fn split(self) -> Option<Split>;
}

impl Outcome for Split {
    fn split(self) -> Option<Split> {
        Some(self)
    }
}

impl Outcome for Option<Split> {
    fn split(self) -> Option<Split> {
        self
    }
}

/// Runs `make(i)` for every `i < count` on worker threads with a progress bar, collecting
/// failures so every clip is tried; true when none failed.
fn run_clips<T: Outcome + Send>(
    output: &Path,
    count: usize,
    jobs: Option<u32>,
    quiet: bool,
    stage: &str,
    make: impl Fn(u32) -> (PathBuf, anyhow::Result<T>) + Sync,
) -> anyhow::Result<bool> {
    for split in [Split::Train, Split::Val] {
        let dir = output.join(split.name());
        std::fs::create_dir_all(&dir)
            .with_context(|| format!("cannot create output folder {}", dir.display()))?;
    }
    let jobs = jobs.map_or_else(
        || {
            std::thread::available_parallelism()
                .map_or(1, |n| n.get())
                .min(8)
        },
        |j| j as usize,
    );
    let next = AtomicUsize::new(0);
    let (tx, rx) = mpsc::channel::<(PathBuf, anyhow::Result<T>)>();
    let mut batch = Batch::default();
    let mut bar = Bar::new(quiet);
    let (mut train, mut val) = (0usize, 0usize);
    std::thread::scope(|s| -> anyhow::Result<()> {
        for w in 0..jobs.min(count.max(1)) {
            let tx = tx.clone();
            let (next, make) = (&next, &make);
            std::thread::Builder::new()
                .name(format!("{stage}-{w}"))
                .spawn_scoped(s, move || {
                    loop {
                        let i = next.fetch_add(1, Ordering::Relaxed);
                        if i >= count {
                            break;
                        }
                        if tx.send(make(i as u32)).is_err() {
                            break;
                        }
                    }
                })
                .context("cannot start a worker thread")?;
        }
        drop(tx);
        let mut done = 0u64;
        bar.step(stage, 0, count as u64);
        for (dir, r) in rx {
            done += 1;
            match batch.record(&dir, r).and_then(Outcome::split) {
                Some(Split::Train) => train += 1,
                Some(Split::Val) => val += 1,
                None => {}
            }
            bar.step(stage, done, count as u64);
        }
        Ok(())
    })?;
    bar.finish();
    if !quiet {
        println!(
            "wrote {} clips ({train} train, {val} val) to {}",
            train + val,
            output.display()
        );
    }
    Ok(batch.finish())
}

/// Writes one clip: `rgba/` frames, with `labels.composite` one composite per background
/// kind (each with a seed-drawn degradation), and `meta.json`.
#[allow(clippy::too_many_arguments)]
fn write_clip<S: Serialize>(
    anim: &Animation,
    dir: &Path,
    index: u32,
    seed: u64,
    split: Split,
    source: &'static str,
    cfg: &SynthConfig,
    spec: &S,
    labels: Labels<'_>,
) -> anyhow::Result<()> {
    std::fs::create_dir_all(dir)
        .with_context(|| format!("cannot create clip folder {}", dir.display()))?;
    encode::write(anim, &Encoding::PngFolder, &dir.join("rgba"))?;
    let mut composites = Vec::new();
    if labels.composite {
        for (k, bg) in Background::ALL.into_iter().enumerate() {
            let cseed = mix(seed, 100 + k as u64);
            let deg = Degradation::draw(cseed);
            let c = composite(anim, bg, deg, cseed, labels.photos)?;
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
        split,
        source,
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

    const SVG: &str = r##"<svg xmlns="http://www.w3.org/2000/svg" viewBox="0 0 20 20"><rect x="3" y="5" width="14" height="10" rx="3" fill="#3080f0"/></svg>"##;

    #[test]
    fn art_writes_the_synth_layout_with_art_specs() {
        let art = tempfile::tempdir().expect("tempdir");
        for i in 0..4 {
            std::fs::write(art.path().join(format!("a{i}.svg")), SVG).expect("svg");
        }
        let out = tempfile::tempdir().expect("tempdir");
        let args = DataArgs {
            command: DataCommand::Art(ArtArgs {
                art: art.path().to_path_buf(),
                output: out.path().to_path_buf(),
                count: 3,
                seed: 1,
                size: 48,
                frames: 2,
                fps: 12.0,
                composite: true,
                photos: None,
                jobs: Some(2),
                quiet: true,
            }),
        };
        assert!(run(&args).expect("run"));
        let mut clips = 0;
        for split in ["train", "val"] {
            for clip in std::fs::read_dir(out.path().join(split)).expect("ls") {
                let clip = clip.expect("entry").path();
                let meta: serde_json::Value =
                    serde_json::from_slice(&std::fs::read(clip.join("meta.json")).expect("meta"))
                        .expect("json");
                assert_eq!(meta["source"], "art");
                assert_eq!(meta["split"], split);
                let file = meta["spec"]["file"].as_str().expect("file");
                assert!(art.path().join(file).is_file(), "{file}");
                assert_eq!(
                    meta["composites"].as_array().expect("c").len(),
                    Background::ALL.len()
                );
                let f = image::open(clip.join("rgba/frame_00001.png")).expect("frame");
                assert_eq!((f.width(), f.height()), (48, 48));
                assert!(f.to_rgba8().pixels().any(|p| p[3] == 0));
                assert!(f.to_rgba8().pixels().any(|p| p[3] == 255));
                clips += 1;
            }
        }
        assert_eq!(clips, 3);
    }

    #[test]
    fn import_converts_gif_and_apng_and_skips_opaque_with_a_reason() {
        use crate::media::encode::GifOptions;
        use crate::media::encode::test_clip::clip;
        let input = tempfile::tempdir().expect("tempdir");
        let anim = clip(6);
        encode::write(
            &anim,
            &Encoding::Gif(GifOptions::default()),
            &input.path().join("moving.gif"),
        )
        .expect("gif");
        encode::write(
            &anim,
            &Encoding::Apng { palette: None },
            &input.path().join("sub_apng.png"),
        )
        .expect("apng");
        let mut opaque = anim.clone();
        for f in &mut opaque.frames {
            for p in f.image.pixels_mut() {
                p[3] = 255;
            }
        }
        encode::write(
            &opaque,
            &Encoding::Apng { palette: None },
            &input.path().join("opaque.png"),
        )
        .expect("opaque");
        std::fs::write(input.path().join("notes.txt"), "not a sticker").expect("txt");
        let out = tempfile::tempdir().expect("tempdir");
        let args = ImportArgs {
            input: input.path().to_path_buf(),
            output: out.path().to_path_buf(),
            size: 32,
            frames: 4,
            fps: 12.0,
            seed: 0,
            composite: false,
            photos: None,
            jobs: Some(2),
            quiet: true,
            limits: LimitArgs {
                max_side: 4096,
                max_frames: 3000,
                max_bytes: 1 << 30,
            },
        };
        let report = import(&args).expect("import");
        assert!(report.ok);
        assert_eq!(report.written.len(), 2, "{report:?}");
        assert_eq!(report.skipped.len(), 2, "{report:?}");
        let reason = |name: &str| {
            report
                .skipped
                .iter()
                .find(|(p, _)| p.ends_with(name))
                .map(|(_, r)| r.clone())
                .expect(name)
        };
        assert!(reason("opaque.png").contains("opaque"));
        assert!(reason("notes.txt").contains("decode"));
        let listed = std::fs::read_to_string(out.path().join("skipped.tsv")).expect("tsv");
        assert!(listed.contains("opaque.png\topaque"));
        for dir in &report.written {
            let meta: serde_json::Value =
                serde_json::from_slice(&std::fs::read(dir.join("meta.json")).expect("meta"))
                    .expect("json");
            assert_eq!(meta["source"], "import");
            assert_eq!(meta["spec"]["source_frames"], 6);
            for f in 0..4 {
                let img = image::open(dir.join(format!("rgba/frame_{f:05}.png")))
                    .expect("frame")
                    .to_rgba8();
                assert_eq!(img.dimensions(), (32, 32));
                assert!(img.pixels().any(|p| p[3] == 0) && img.pixels().any(|p| p[3] > 200));
            }
            assert!(!dir.join("rgba/frame_00004.png").exists());
        }
        // 6 frames of 40 ms at 12 fps: 3 frames, looped to 4 (the 4th repeats the 1st).
        let d = &report.written[0];
        assert_eq!(
            std::fs::read(d.join("rgba/frame_00000.png")).expect("f0"),
            std::fs::read(d.join("rgba/frame_00003.png")).expect("f3")
        );
        assert_ne!(
            std::fs::read(d.join("rgba/frame_00000.png")).expect("f0"),
            std::fs::read(d.join("rgba/frame_00001.png")).expect("f1")
        );
    }
}

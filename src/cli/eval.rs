//! `ildiff eval`: matting metrics (see `crate::eval`) of predicted clips against ground truth,
//! for one clip or a whole dataset of clips matched by name.

use std::collections::BTreeMap;
use std::io::{Read, Seek, SeekFrom};
use std::path::{Path, PathBuf};

use anyhow::{Context, anyhow, bail};
use clap::Args;
use serde::Serialize;

use super::{Batch, LimitArgs};
use crate::eval::{ClipMetrics, evaluate, mean_metrics};
use crate::media::{Format, Limits, decode};

#[derive(Debug, Args)]
pub struct EvalArgs {
    /// Predicted clip (a file or a folder of numbered PNG frames) or a folder of clips.
    #[arg(long)]
    pub pred: PathBuf,
    /// Ground truth, laid out like --pred; dataset clips are matched by name (extension ignored).
    #[arg(long)]
    pub gt: PathBuf,
    /// Treat every file in the two folders as a clip of its own (folders of still images),
    /// instead of reading a folder of PNG files as the frames of one clip.
    #[arg(long)]
    pub per_file: bool,
    /// Print a JSON object with per-clip and overall figures.
    #[arg(long)]
    pub json: bool,
    #[command(flatten)]
    pub limits: LimitArgs,
}

/// How an input path is read.
#[derive(Debug, PartialEq)]
enum Layout {
    /// One clip: a file or a folder of PNG frames.
    Clip,
    /// A folder of clips (sub-folders of frames or files), keyed by name without extension.
    Dataset(BTreeMap<String, PathBuf>),
}

/// One predicted/ground-truth pair to evaluate.
#[derive(Debug, PartialEq)]
struct Pair {
    name: String,
    pred: PathBuf,
    gt: PathBuf,
}

/// Per-clip result as printed and serialised.
#[derive(Debug, Serialize)]
struct ClipReport {
    name: String,
    pred: PathBuf,
    gt: PathBuf,
    width: u32,
    height: u32,
    #[serde(flatten)]
    metrics: ClipMetrics,
}

#[derive(Debug, Serialize)]
struct Overall {
    clips: usize,
    #[serde(flatten)]
    metrics: ClipMetrics,
}

#[derive(Debug, Serialize)]
struct Report {
    clips: Vec<ClipReport>,
    /// Mean over the clips that were evaluated; null when none was.
    overall: Option<Overall>,
}

pub fn run(args: &EvalArgs) -> anyhow::Result<bool> {
    let limits = args.limits.limits();
    let mut batch = Batch::default();
    let pairs = pair_up(&args.pred, &args.gt, args.per_file, &mut batch)?;
    let many = pairs.len() > 1;
    let mut clips = Vec::new();
    for (i, pair) in pairs.iter().enumerate() {
        if many && !args.json {
            eprintln!("[{}/{}] {}", i + 1, pairs.len(), pair.name);
        }
        if let Some(r) = batch.record(&pair.pred, evaluate_pair(pair, &limits)) {
            clips.push(r);
        }
    }
    let overall =
        mean_metrics(&clips.iter().map(|c| c.metrics.clone()).collect::<Vec<_>>()).map(|metrics| {
            Overall {
                clips: clips.len(),
                metrics,
            }
        });
    let report = Report { clips, overall };
    if args.json {
        println!("{}", serde_json::to_string_pretty(&report)?);
    } else if !report.clips.is_empty() {
        print_table(&report);
    }
    Ok(batch.finish())
}

fn evaluate_pair(pair: &Pair, limits: &Limits) -> anyhow::Result<ClipReport> {
    let pred = decode::open(&pair.pred, limits)
        .with_context(|| format!("reading the prediction {}", pair.pred.display()))?;
    let gt = decode::open(&pair.gt, limits)
        .with_context(|| format!("reading the ground truth {}", pair.gt.display()))?;
    let metrics = evaluate(&pred, &gt).with_context(|| {
        format!(
            "comparing {} with {}",
            pair.pred.display(),
            pair.gt.display()
        )
    })?;
    Ok(ClipReport {
        name: pair.name.clone(),
        pred: pair.pred.clone(),
        gt: pair.gt.clone(),
        width: gt.width,
        height: gt.height,
        metrics,
    })
}

/// Matches predictions to ground truth. Clips present on one side only are recorded as
/// failures (so the exit code shows the dataset is incomplete) and the rest still evaluated.
fn pair_up(pred: &Path, gt: &Path, per_file: bool, batch: &mut Batch) -> anyhow::Result<Vec<Pair>> {
    let lp = layout(pred, per_file).with_context(|| format!("reading {}", pred.display()))?;
    let lg = layout(gt, per_file).with_context(|| format!("reading {}", gt.display()))?;
    match (lp, lg) {
        (Layout::Clip, Layout::Clip) => Ok(vec![Pair {
            name: clip_key(pred),
            pred: pred.to_path_buf(),
            gt: gt.to_path_buf(),
        }]),
        (Layout::Dataset(mut p), Layout::Dataset(g)) => {
            let mut pairs = Vec::new();
            for (name, gt_path) in g {
                match p.remove(&name) {
                    Some(pred_path) => pairs.push(Pair {
                        name,
                        pred: pred_path,
                        gt: gt_path,
                    }),
                    None => {
                        batch.record::<()>(
                            &gt_path,
                            Err(anyhow!(
                                "no prediction named `{name}` in {}",
                                pred.display()
                            )),
                        );
                    }
                }
            }
            for (name, pred_path) in p {
                batch.record::<()>(
                    &pred_path,
                    Err(anyhow!(
                        "no ground truth named `{name}` in {}",
                        gt.display()
                    )),
                );
            }
            Ok(pairs)
        }
        (Layout::Dataset(_), Layout::Clip) => bail!(
            "{} is a folder of clips but {} is a single clip; give two clips or two folders of clips",
            pred.display(),
            gt.display()
        ),
        (Layout::Clip, Layout::Dataset(_)) => bail!(
            "{} is a single clip but {} is a folder of clips; give two clips or two folders of clips",
            pred.display(),
            gt.display()
        ),
    }
}

/// A clip's name: the file name without extension, or the folder name.
fn clip_key(path: &Path) -> String {
    let name = if path.is_dir() {
        path.file_name()
    } else {
        path.file_stem()
    };
    name.map(|n| n.to_string_lossy().into_owned())
        .unwrap_or_else(|| path.display().to_string())
}

/// A file is one clip. A folder is a dataset when it holds sub-folders, media files other than
/// PNG, animated PNGs, or when `per_file` says so; a folder of still PNGs is one clip's frames.
/// Hidden entries and files of unknown type (notes, JSON) are ignored.
fn layout(path: &Path, per_file: bool) -> anyhow::Result<Layout> {
    let meta = std::fs::metadata(path).context("cannot read it")?;
    if !meta.is_dir() {
        return Ok(Layout::Clip);
    }
    let mut entries = Vec::new();
    for e in std::fs::read_dir(path).context("cannot list the folder")? {
        let e = e.context("cannot list the folder")?;
        let p = e.path();
        let hidden = e.file_name().to_string_lossy().starts_with('.');
        if hidden {
            continue;
        }
        if p.is_dir() {
            entries.push((p, None));
        } else if let Some(f) = Format::from_extension(&p) {
            entries.push((p, Some(f)));
        }
    }
    let dataset = per_file
        || entries.iter().any(|(p, f)| match f {
            None => true,
            Some(Format::Png) => is_apng(p),
            Some(_) => true,
        });
    if !dataset {
        return Ok(Layout::Clip);
    }
    let mut clips = BTreeMap::new();
    for (p, _) in entries {
        let key = clip_key(&p);
        if let Some(other) = clips.insert(key.clone(), p.clone()) {
            bail!(
                "two clips are named `{key}` ({} and {}); names must be unique without extension",
                other.display(),
                p.display()
            );
        }
    }
    Ok(Layout::Dataset(clips))
}

/// True when the PNG file has an `acTL` chunk before its image data (an APNG). Unreadable files
/// count as still; the decoder reports them properly later.
fn is_apng(path: &Path) -> bool {
    let Ok(mut f) = std::fs::File::open(path) else {
        return false;
    };
    let mut sig = [0u8; 8];
    if f.read_exact(&mut sig).is_err() || &sig != b"\x89PNG\r\n\x1a\n" {
        return false;
    }
    // acTL must precede IDAT; a handful of chunks come before it in practice.
    for _ in 0..64 {
        let mut head = [0u8; 8];
        if f.read_exact(&mut head).is_err() {
            return false;
        }
        let len = u32::from_be_bytes([head[0], head[1], head[2], head[3]]);
        match &head[4..8] {
            b"acTL" => return true,
            b"IDAT" | b"IEND" => return false,
            _ => {}
        }
        if f.seek(SeekFrom::Current(i64::from(len) + 4)).is_err() {
            return false;
        }
    }
    false
}

fn opt(v: Option<f64>, decimals: usize) -> String {
    v.map_or_else(|| "-".to_string(), |v| format!("{v:.decimals$}"))
}

fn print_table(report: &Report) {
    let overall_name = report
        .overall
        .as_ref()
        .filter(|_| report.clips.len() > 1)
        .map(|o| format!("overall ({} clips)", o.clips));
    let width = report
        .clips
        .iter()
        .map(|c| c.name.chars().count())
        .chain(overall_name.iter().map(|n| n.chars().count()))
        .max()
        .unwrap_or(4)
        .max(4);
    println!(
        "{:<width$}  {:>6}  {:>6}  {:>6}  {:>8}  {:>9}  {:>8}  {:>8}  {:>7}  {:>6}  {:>8}",
        "clip", "frames", "PSNR", "SSIM", "SAD", "MSE", "Grad", "Conn", "dtSSD", "hole", "RGB PSNR"
    );
    let row = |name: &str, m: &ClipMetrics| {
        println!(
            "{:<width$}  {:>6}  {:>6.2}  {:>6.4}  {:>8.3}  {:>9.6}  {:>8.3}  {:>8.3}  {:>7.3}  {:>6}  {:>8}",
            name,
            m.frames,
            m.psnr,
            m.ssim,
            m.sad,
            m.mse,
            m.grad,
            m.conn,
            m.dtssd,
            opt(m.hole_residue, 4),
            opt(m.rgb_psnr, 2),
        );
    };
    for c in &report.clips {
        row(&c.name, &c.metrics);
    }
    if let (Some(name), Some(o)) = (overall_name, &report.overall) {
        row(&name, &o.metrics);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn touch(path: &Path, bytes: &[u8]) {
        std::fs::write(path, bytes).expect("write test file");
    }

    const STILL_PNG_HEAD: &[u8] =
        b"\x89PNG\r\n\x1a\n\0\0\0\x0dIHDR0123456789abc....\0\0\0\0IDAT....";
    const APNG_HEAD: &[u8] =
        b"\x89PNG\r\n\x1a\n\0\0\0\x0dIHDR0123456789abc....\0\0\0\x08acTL01234567....\0\0\0\0IDAT";

    #[test]
    fn apng_is_told_from_still_png() {
        let d = tempfile::tempdir().expect("tempdir");
        let (a, s) = (d.path().join("a.png"), d.path().join("s.png"));
        touch(&a, APNG_HEAD);
        touch(&s, STILL_PNG_HEAD);
        assert!(is_apng(&a));
        assert!(!is_apng(&s));
        assert!(!is_apng(&d.path().join("missing.png")));
    }

    #[test]
    fn folder_of_still_pngs_is_one_clip_unless_per_file() {
        let d = tempfile::tempdir().expect("tempdir");
        for i in 0..3 {
            touch(&d.path().join(format!("{i:04}.png")), STILL_PNG_HEAD);
        }
        touch(&d.path().join("notes.txt"), b"x");
        assert_eq!(layout(d.path(), false).expect("layout"), Layout::Clip);
        match layout(d.path(), true).expect("layout") {
            Layout::Dataset(m) => {
                assert_eq!(m.keys().collect::<Vec<_>>(), ["0000", "0001", "0002"])
            }
            other => panic!("expected a dataset, got {other:?}"),
        }
    }

    #[test]
    fn datasets_pair_by_name_and_report_missing_clips() {
        let (p, g) = (
            tempfile::tempdir().expect("p"),
            tempfile::tempdir().expect("g"),
        );
        // Prediction: a.webp, b (frame folder), c.gif; ground truth: a.png (APNG), b/, d.gif.
        touch(&p.path().join("a.webp"), b"RIFF");
        std::fs::create_dir(p.path().join("b")).expect("mkdir");
        touch(&p.path().join("c.gif"), b"GIF89a");
        touch(&g.path().join("a.png"), APNG_HEAD);
        std::fs::create_dir(g.path().join("b")).expect("mkdir");
        touch(&g.path().join("d.gif"), b"GIF89a");
        touch(&g.path().join(".hidden.gif"), b"GIF89a");

        let mut batch = Batch::default();
        let pairs = pair_up(p.path(), g.path(), false, &mut batch).expect("pairs");
        assert_eq!(pairs.len(), 2);
        assert_eq!(pairs[0].name, "a");
        assert_eq!(pairs[0].pred, p.path().join("a.webp"));
        assert_eq!(pairs[0].gt, g.path().join("a.png"));
        assert_eq!(pairs[1].name, "b");
        // c has no ground truth and d no prediction: two failures, so the run fails.
        assert!(!batch.finish());
    }

    #[test]
    fn clip_against_dataset_is_an_error() {
        let (p, g) = (
            tempfile::tempdir().expect("p"),
            tempfile::tempdir().expect("g"),
        );
        touch(&p.path().join("0001.png"), STILL_PNG_HEAD);
        std::fs::create_dir(g.path().join("clip")).expect("mkdir");
        let err =
            pair_up(p.path(), g.path(), false, &mut Batch::default()).expect_err("mixed layouts");
        assert!(err.to_string().contains("single clip"), "{err}");
    }

    #[test]
    fn duplicate_names_are_an_error() {
        let d = tempfile::tempdir().expect("tempdir");
        touch(&d.path().join("x.gif"), b"GIF89a");
        touch(&d.path().join("x.webp"), b"RIFF");
        let err = layout(d.path(), false).expect_err("duplicate");
        assert!(
            format!("{err:#}").contains("two clips are named `x`"),
            "{err:#}"
        );
    }

    #[test]
    fn two_files_make_one_pair_named_after_the_prediction() {
        let d = tempfile::tempdir().expect("tempdir");
        let (a, b) = (d.path().join("out.webp"), d.path().join("gt.gif"));
        touch(&a, b"RIFF");
        touch(&b, b"GIF89a");
        let pairs = pair_up(&a, &b, false, &mut Batch::default()).expect("pairs");
        assert_eq!(
            pairs,
            vec![Pair {
                name: "out".into(),
                pred: a,
                gt: b
            }]
        );
        assert!(
            pair_up(
                &d.path().join("nope.gif"),
                &d.path().join("gt.gif"),
                false,
                &mut Batch::default()
            )
            .is_err()
        );
    }

    /// Writes `frames` as a folder of numbered PNGs.
    fn frame_folder(dir: &Path, alphas: &[u8]) {
        std::fs::create_dir_all(dir).expect("mkdir");
        for (i, &a) in alphas.iter().enumerate() {
            image::RgbaImage::from_pixel(16, 16, image::Rgba([90, 60, 30, a]))
                .save(dir.join(format!("frame_{i:03}.png")))
                .expect("write png");
        }
    }

    #[test]
    fn dataset_of_frame_folders_evaluates_end_to_end() {
        let (p, g) = (
            tempfile::tempdir().expect("p"),
            tempfile::tempdir().expect("g"),
        );
        frame_folder(&p.path().join("same"), &[255, 255]);
        frame_folder(&g.path().join("same"), &[255, 255]);
        // 153 vs 102: a constant 0.2 alpha error, MSE 0.04.
        frame_folder(&p.path().join("off"), &[153, 153]);
        frame_folder(&g.path().join("off"), &[102, 102]);
        let mut batch = Batch::default();
        let pairs = pair_up(p.path(), g.path(), false, &mut batch).expect("pairs");
        let limits = Limits::default();
        let reports: Vec<ClipReport> = pairs
            .iter()
            .map(|pair| evaluate_pair(pair, &limits).expect("evaluates"))
            .collect();
        assert_eq!(reports.len(), 2);
        assert_eq!(reports[0].name, "off");
        assert!((reports[0].metrics.mse - 0.04).abs() < 1e-6);
        assert_eq!(reports[0].metrics.frames, 2);
        assert_eq!(reports[1].metrics.psnr, crate::eval::PSNR_CAP);
        assert!(batch.finish());

        // A frame folder compared with a 3-frame one: a clear error, not a panic.
        let q = tempfile::tempdir().expect("q");
        frame_folder(q.path(), &[0, 0, 0]);
        let pair = Pair {
            name: "x".into(),
            pred: q.path().to_path_buf(),
            gt: g.path().join("off"),
        };
        let err = evaluate_pair(&pair, &limits).expect_err("frame counts differ");
        assert!(
            format!("{err:#}").contains("frame counts differ"),
            "{err:#}"
        );
    }
}

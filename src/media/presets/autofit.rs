//! Auto-fit: turns any clip into a file that meets a platform's rules. Canvas first is cheap to
//! reason about but time first is cheaper to run (fewer frames to resize), so the order is:
//! cut and cap the timing, place on the canvas, then search the encoder's quality knob for the
//! best setting under the size cap, dropping frame rate only when even the worst setting is too
//! big. The chosen bytes are written atomically and checked by reading the file back.

use std::path::{Path, PathBuf};

use super::report::{self, ExportReport};
use super::rules::{self, LoopRule, Rules, frame_target, group_digits, plays_for};
use super::{FitOptions, Preset, TimeFit};
use crate::error::{Error, Result};
use crate::media::atomic::{parent_dir, write_atomic};
use crate::media::encode::{self, Encoding, GifOptions};
use crate::media::{Animation, Delay, Format, Limits, LoopCount};
use crate::progress::Progress;

/// One evaluated knob position of [`search_best`].
#[derive(Debug, Clone, PartialEq)]
pub struct Probe<T> {
    /// Knob index (0 = smallest file, worst quality).
    pub index: u32,
    pub size: u64,
    pub value: T,
}

/// Finds the highest knob index in `0..count` whose size is ≤ `cap`, assuming size grows with
/// the index (quality up, bytes up). Binary search, so a 60-step CRF ladder costs 6 encodes, and
/// it does not stop at the first setting that fits: it keeps the best one that fits. `eval`
/// returns the size and whatever the caller wants to keep for the winner (the encoded bytes).
/// `None` when even index 0 is too big.
pub fn search_best<T>(
    count: u32,
    cap: u64,
    mut eval: impl FnMut(u32) -> Result<(u64, T)>,
) -> Result<Option<Probe<T>>> {
    let (mut lo, mut hi) = (0i64, count as i64 - 1);
    let mut best = None;
    while lo <= hi {
        let mid = lo + (hi - lo) / 2;
        let (size, value) = eval(mid as u32)?;
        if size <= cap {
            best = Some(Probe {
                index: mid as u32,
                size,
                value,
            });
            lo = mid + 1;
        } else {
            hi = mid - 1;
        }
    }
    Ok(best)
}

/// Rounds in which [`search_best_guided`] follows its caller's guess before it falls back to
/// galloping and splitting, so a size model that keeps guessing wrong cannot make the search
/// linear.
const GUIDED_ROUNDS: u32 = 3;

/// The probes of one round of [`search_best_guided`]: `lo` is the highest index known to fit
/// (-1: none), `hi` the lowest known not to (`count`: none). A guess is checked with the step
/// above it (a right guess ends the search there); without one, once any guess was made and
/// only one bound is known, it gallops away from that bound, steps growing ×3; otherwise it
/// splits the gap in three.
fn next_probes(
    lo: i64,
    hi: i64,
    count: u32,
    guess: Option<u32>,
    guided: bool,
    round: u32,
) -> Vec<u32> {
    let inside = |i: i64| i > lo && i < hi;
    let gallop = 2 * 3i64.pow(round.saturating_sub(1).min(20));
    let top = count as i64;
    let mut out: Vec<i64> = match guess {
        Some(s) => {
            let s = (s as i64).min(top - 1);
            vec![s, s + 1]
        }
        None => Vec::new(),
    };
    out.retain(|&i| inside(i));
    if out.is_empty() && guided {
        out = if lo >= 0 && hi >= top {
            vec![lo + gallop, lo + 2 * gallop]
        } else if lo < 0 && hi < top {
            vec![hi - gallop, hi - 2 * gallop]
        } else {
            Vec::new()
        };
        out.retain(|&i| inside(i));
    }
    if out.is_empty() {
        // Split the unknown gap (lo, hi) in three.
        let w = hi - lo - 1;
        out = match w {
            ..=0 => Vec::new(),
            1 => vec![lo + 1],
            2 => vec![lo + 1, lo + 2],
            _ => vec![lo + (w + 1) / 3, lo + (2 * w + 2) / 3],
        };
        out.retain(|&i| inside(i));
    }
    out.sort_unstable();
    out.dedup();
    out.into_iter().map(|i| i as u32).collect()
}

/// [`search_best_guided`] with one guess, `seed`, for the first round.
pub fn search_best_parallel<T: Send>(
    count: u32,
    cap: u64,
    seed: Option<u32>,
    before_round: impl FnMut(&[u32]) -> Result<()>,
    eval: impl Fn(u32) -> Result<(u64, T)> + Sync,
) -> Result<Option<Probe<T>>> {
    search_best_guided(
        count,
        cap,
        |seen| if seen.is_empty() { seed } else { None },
        before_round,
        eval,
    )
}

/// [`search_best`] for two cores: each round evaluates up to two knob positions at once (one on
/// a named helper thread). Before each of the first [`GUIDED_ROUNDS`] rounds, `guess` sees
/// every (position, size) probed so far and may name the position it expects to be the
/// answer (a size model, recalibrated by the full-size probes). Ends with the highest
/// position that fits and the one above it known not to (or the top), so on a ladder whose
/// size grows with the index it picks exactly what the one-at-a-time search and an
/// exhaustive scan pick, whatever the guesses. `before_round` sees each round's positions
/// (progress, cancel).
pub fn search_best_guided<T: Send>(
    count: u32,
    cap: u64,
    mut guess: impl FnMut(&[(u32, u64)]) -> Option<u32>,
    mut before_round: impl FnMut(&[u32]) -> Result<()>,
    eval: impl Fn(u32) -> Result<(u64, T)> + Sync,
) -> Result<Option<Probe<T>>> {
    let (mut lo, mut hi) = (-1i64, count as i64);
    let mut best: Option<Probe<T>> = None;
    let mut seen: Vec<(u32, u64)> = Vec::new();
    let mut guided = false;
    let mut round = 0;
    while hi - lo > 1 {
        let g = if round < GUIDED_ROUNDS {
            guess(&seen)
        } else {
            None
        };
        guided |= g.is_some();
        let probes = next_probes(lo, hi, count, g, guided, round);
        round += 1;
        if probes.is_empty() {
            break;
        }
        before_round(&probes)?;
        let results = eval_pair(&probes, &eval)?;
        for (&i, (size, value)) in probes.iter().zip(results) {
            seen.push((i, size));
            let i64_ = i as i64;
            if size <= cap {
                if i64_ > lo {
                    lo = i64_;
                    best = Some(Probe {
                        index: i,
                        size,
                        value,
                    });
                }
            } else if i64_ < hi {
                hi = i64_;
            }
        }
        // A ladder that is not monotone here: trust the fit, search above it.
        if hi <= lo {
            hi = count as i64;
        }
    }
    Ok(best)
}

/// Evaluates one or two positions at once.
fn eval_pair<T: Send>(
    probes: &[u32],
    eval: &(impl Fn(u32) -> Result<(u64, T)> + Sync),
) -> Result<Vec<(u64, T)>> {
    crate::par::par_map(probes.len(), 2, |k| eval(probes[k]))
        .into_iter()
        .collect()
}

/// Probes [`search_best`] makes at most for `count` positions.
fn search_steps(count: u32) -> u64 {
    (u32::BITS - count.leading_zeros()) as u64
}

/// The quality ladders: knob index → encoding (index 0 = smallest).
#[derive(Debug, Clone, Copy)]
enum Ladder {
    /// CRF 63 (index 0) down to 4.
    Crf,
    /// WebP lossy: colour and alpha quality together (see [`Ladder::knob`]).
    WebPQuality,
    /// APNG palette 2..=256 colours, then lossless colour with alpha at
    /// [`Ladder::APNG_ALPHA_LEVELS`] levels (see [`Ladder::knob`]).
    ApngPalette,
    /// GIF palette 2..=256 colours.
    GifColors,
}

impl Ladder {
    const CRF_BEST: u8 = 4;
    const CRF_WORST: u8 = 63;

    /// WebP colour quality above which alpha stays lossless: down to here colours still look
    /// clean, so the alpha plane (the edges a sticker is judged on) is the next thing to give.
    const WEBP_KEEP_ALPHA_FROM: u32 = 50;
    /// Alpha quality steps between lossless and 0.
    const WEBP_ALPHA_STEP: u32 = 5;
    /// APNG's alpha knob: lossless colour with alpha rounded to this many evenly spaced levels,
    /// fewest (smallest file) first. A noisy soft matte costs a lossless APNG more than its
    /// colours do; rounding it gives bytes back before the palette touches a single colour.
    const APNG_ALPHA_LEVELS: [u16; 4] = [8, 16, 32, 64];

    fn count(self) -> u32 {
        match self {
            Ladder::Crf => (Self::CRF_WORST - Self::CRF_BEST + 1) as u32,
            // q 0..49 at alpha 0, alpha 0..95 at q 50, q 50..100 at lossless alpha.
            Ladder::WebPQuality => {
                Self::WEBP_KEEP_ALPHA_FROM
                    + 100 / Self::WEBP_ALPHA_STEP
                    + (101 - Self::WEBP_KEEP_ALPHA_FROM)
            }
            Ladder::ApngPalette => 255 + Self::APNG_ALPHA_LEVELS.len() as u32,
            Ladder::GifColors => 255,
        }
    }

    /// Knob index → setting, index 0 the smallest. WebP's path, from the best down: colour
    /// quality 100 → 50 with lossless alpha; then alpha quality 95 → 0 at colour 50; then
    /// colour 49 → 0. So the alpha plane, which colour quality cannot reach, is squeezed before
    /// colours turn ugly, and both before any frame is dropped. APNG's, below lossless: colour
    /// kept lossless with alpha at 64 → 8 levels, then palettes of 256 → 2 colours.
    fn knob(self, i: u32) -> Knob {
        match self {
            Ladder::WebPQuality => {
                let keep = Self::WEBP_KEEP_ALPHA_FROM;
                let alpha_steps = 100 / Self::WEBP_ALPHA_STEP;
                let (quality, alpha) = if i < keep {
                    (i, 0)
                } else if i < keep + alpha_steps {
                    (keep, (i - keep) * Self::WEBP_ALPHA_STEP)
                } else {
                    ((keep + i - keep - alpha_steps).min(100), 100)
                };
                Knob::WebP {
                    quality: quality as u8,
                    alpha: alpha as u8,
                }
            }
            Ladder::ApngPalette if i >= 255 => {
                let k = ((i - 255) as usize).min(Self::APNG_ALPHA_LEVELS.len() - 1);
                Knob::AlphaLevels(Self::APNG_ALPHA_LEVELS[k])
            }
            other => Knob::Enc(other.encoding(i)),
        }
    }

    fn encoding(self, i: u32) -> Encoding {
        match self {
            Ladder::Crf => Encoding::WebM {
                crf: Self::CRF_WORST - i.min(59) as u8,
            },
            Ladder::WebPQuality => Encoding::WebP {
                quality: Some(i.min(100) as f32),
            },
            Ladder::ApngPalette => Encoding::Apng {
                palette: Some(i.min(254) as u16 + 2),
            },
            Ladder::GifColors => Encoding::Gif(GifOptions {
                colors: i.min(254) as u16 + 2,
                ..gif_options()
            }),
        }
    }
}

/// GIF has 1-bit alpha: edges are blended over Discord's dark theme background, where a GIF
/// sticker is most often seen.
fn gif_options() -> GifOptions {
    GifOptions {
        matte: [0x31, 0x33, 0x38],
        ..GifOptions::default()
    }
}

/// One position of a ladder: an [`Encoding`], or a setting only the fitter uses.
#[derive(Debug, Clone, Copy, PartialEq)]
enum Knob {
    Enc(Encoding),
    /// Lossy WebP with libwebp's alpha quality below lossless.
    WebP {
        quality: u8,
        alpha: u8,
    },
    /// Lossless APNG of the clip with its alpha rounded to this many levels.
    AlphaLevels(u16),
}

impl Knob {
    fn describe(&self) -> String {
        match self {
            Knob::Enc(e) => describe(e),
            Knob::WebP {
                quality,
                alpha: 100,
            } => format!("webp q {quality}"),
            Knob::WebP { quality, alpha } => format!("webp q {quality} alpha q {alpha}"),
            Knob::AlphaLevels(n) => format!("apng lossless, alpha {n} levels"),
        }
    }
}

/// The format an encoding writes.
pub(crate) fn encoding_format(e: &Encoding) -> Format {
    match e {
        Encoding::Apng { .. } => Format::Png,
        Encoding::WebP { .. } => Format::WebP,
        Encoding::Gif(_) => Format::Gif,
        Encoding::WebM { .. } => Format::WebM,
        Encoding::PngFolder => Format::Folder,
    }
}

/// An encoding in words, for progress stages and reports ("crf 31", "webp q 78").
pub(crate) fn describe(e: &Encoding) -> String {
    match e {
        Encoding::Apng { palette: None } => "apng lossless".into(),
        Encoding::Apng { palette: Some(n) } => format!("apng palette {n}"),
        Encoding::WebP { quality: None } => "webp lossless".into(),
        Encoding::WebP { quality: Some(q) } => format!("webp q {q:.0}"),
        Encoding::Gif(o) => format!("gif {} colours", o.colors),
        Encoding::WebM { crf } => format!("crf {crf}"),
        Encoding::PngFolder => "png frames".into(),
    }
}

fn keep_going(progress: &mut dyn Progress, stage: &str, done: u64, total: u64) -> Result<()> {
    if progress.step(stage, done, total) {
        Ok(())
    } else {
        Err(Error::Cancelled)
    }
}

/// `anim` with every alpha rounded to the nearest of `levels` evenly spaced values (0 and 255
/// stay exact, so fully transparent and fully opaque pixels are untouched).
fn alpha_levels(anim: &Animation, levels: u16) -> Animation {
    let steps = levels.clamp(2, 256) as f32 - 1.0;
    let lut: Vec<u8> = (0..=255u8)
        .map(|a| ((a as f32 * steps / 255.0).round() * 255.0 / steps).round() as u8)
        .collect();
    let mut out = anim.clone();
    for f in &mut out.frames {
        for p in f.image.pixels_mut() {
            p[3] = lut[p[3] as usize];
        }
    }
    out
}

/// Encodes candidates: to memory where the encoder can, WebM through files in a scratch folder
/// beside the output (removed when this is dropped, also on error or cancel).
struct Candidates {
    out_dir: PathBuf,
    /// Made on first use (only WebM needs it); shared by the probe threads.
    scratch: std::sync::OnceLock<tempfile::TempDir>,
    made: std::sync::atomic::AtomicU32,
}

impl Candidates {
    fn new(out: &Path) -> Self {
        Candidates {
            out_dir: parent_dir(out),
            scratch: std::sync::OnceLock::new(),
            made: std::sync::atomic::AtomicU32::new(0),
        }
    }

    fn scratch_dir(&self) -> Result<&Path> {
        if let Some(d) = self.scratch.get() {
            return Ok(d.path());
        }
        let dir = tempfile::Builder::new()
            .prefix(".ildiff-fit-")
            .tempdir_in(&self.out_dir)
            .map_err(|e| Error::io("create scratch folder in", &self.out_dir, e))?;
        // Another thread may have won the race; its folder is used and this one removed.
        Ok(self.scratch.get_or_init(|| dir).path())
    }

    fn encode(&self, anim: &Animation, knob: &Knob) -> Result<Vec<u8>> {
        let n = self.made.fetch_add(1, std::sync::atomic::Ordering::Relaxed) + 1;
        let enc = match knob {
            Knob::WebP { quality, alpha } => {
                return encode::webp::encode_lossy(anim, *quality as f32, *alpha);
            }
            Knob::AlphaLevels(n) => {
                return encode::encode_to_vec(
                    &alpha_levels(anim, *n),
                    &Encoding::Apng { palette: None },
                );
            }
            Knob::Enc(e) => e,
        };
        if !matches!(enc, Encoding::WebM { .. }) {
            return encode::encode_to_vec(anim, enc);
        }
        let path = self.scratch_dir()?.join(format!("candidate-{n}.webm"));
        encode::write(anim, enc, &path)?;
        let bytes = std::fs::read(&path).map_err(|e| Error::io("read candidate", &path, e))?;
        // Best effort: the scratch folder goes away on drop anyway.
        let _ = std::fs::remove_file(&path);
        Ok(bytes)
    }
}

/// The winning encode.
struct Chosen {
    bytes: Vec<u8>,
    setting: String,
}

/// How one search at one frame rate ended.
enum Outcome {
    Fits(Chosen),
    /// Nothing fits; `worst` is the size at the lowest setting, `lossless` the lossless size if
    /// it was tried (both guide the frame-rate fallback).
    TooBig {
        worst: u64,
        lossless: Option<u64>,
    },
}

/// A size seen at some frame count, to predict the size at another: bytes grow roughly with
/// the number of frames, which lets the fallback skip encodes that cannot fit.
#[derive(Debug, Clone, Copy)]
struct Seen {
    bytes: u64,
    frames: usize,
}

impl Seen {
    /// True when `frames` frames would clearly still be over `cap` (25 % margin, since the
    /// proportionality is rough).
    fn hopeless(self, frames: usize, cap: u64) -> bool {
        let predicted = self.bytes as f64 * frames as f64 / self.frames.max(1) as f64;
        predicted > cap as f64 * 1.25
    }
}

/// When set, [`search_format`] runs the search this fitter had before the size model and the
/// two-core probes (lossless, then one full encode per bisection step), so the benchmark can
/// print before/after times on the same machine. Not for anything else.
static REFERENCE_SEARCH: std::sync::atomic::AtomicBool = std::sync::atomic::AtomicBool::new(false);

/// Switches [`REFERENCE_SEARCH`] (process-wide; the auto-fit benchmark's "before").
#[doc(hidden)]
pub fn set_reference_search(on: bool) {
    REFERENCE_SEARCH.store(on, std::sync::atomic::Ordering::Relaxed);
}

/// Frames the size model encodes: a consecutive run from the middle of the clip, so inter-frame
/// coding behaves as it does in the whole clip, at a fraction of the cost.
const MODEL_FRAMES: usize = 12;

/// The size model: an excerpt of [`MODEL_FRAMES`] frames stands for the clip, its size times a
/// ratio for the clip's. The first ratio is the share of frames; once full encodes are seen it
/// is recalibrated from the one nearest the cap (inter-frame coding and key frames make the
/// share of frames a poor guess: on a noisy 90-frame VP9 clip it missed by six CRF steps).
/// Only a guide: the search checks every guess with full encodes, so a wrong guess costs
/// time, never the choice.
struct SizeModel<'a> {
    excerpt: Animation,
    frames: usize,
    ladder: Ladder,
    cands: &'a Candidates,
    /// Excerpt size per knob position, each encoded once.
    sizes: std::sync::Mutex<std::collections::BTreeMap<u32, u64>>,
}

impl<'a> SizeModel<'a> {
    fn new(anim: &Animation, ladder: Ladder, cands: &'a Candidates) -> Option<Self> {
        Some(SizeModel {
            excerpt: model_excerpt(anim)?,
            frames: anim.len(),
            ladder,
            cands,
            sizes: Default::default(),
        })
    }

    fn excerpt_size(&self, i: u32) -> Result<u64> {
        let known = self.sizes.lock().ok().and_then(|m| m.get(&i).copied());
        if let Some(s) = known {
            return Ok(s);
        }
        let size = self
            .cands
            .encode(&self.excerpt, &self.ladder.knob(i))?
            .len() as u64;
        if let Ok(mut m) = self.sizes.lock() {
            m.insert(i, size);
        }
        Ok(size)
    }

    /// The highest position whose excerpt size times `ratio` is under `cap`, searched from
    /// `near` (0 when nothing fits; `None` when an excerpt encode failed).
    fn guess(&self, cap: u64, ratio: f64, near: Option<u32>) -> Option<u32> {
        let scaled = (cap as f64 / ratio.max(1e-6)) as u64;
        let found = search_best_parallel(
            self.ladder.count(),
            scaled,
            near,
            |_| Ok(()),
            |i| Ok((self.excerpt_size(i)?, ())),
        )
        .ok()?;
        Some(found.map_or(0, |p| p.index))
    }

    /// The first guess: from the share of frames, then corrected once for the key frame. At
    /// that guess a half-length excerpt gives the cost of one more frame, which predicts the
    /// clip as the excerpt plus that cost per missing frame; the search then moves by the
    /// ratio of that prediction to the share-of-frames one. (The share of frames alone counts
    /// the excerpt's key frame once per twelve frames: on a noisy 90-frame VP9 clip it guessed
    /// six CRF steps too low; corrected, one.)
    fn seed(&self, cap: u64) -> Option<u32> {
        let n = self.excerpt.len();
        let share = self.frames as f64 / n as f64;
        let first = self.guess(cap, share, None)?;
        let half = Animation::new(
            self.excerpt.width,
            self.excerpt.height,
            self.excerpt.frames[..n / 2].to_vec(),
            self.excerpt.loops,
        )
        .ok()?;
        let long = self.excerpt_size(first).ok()? as f64;
        let short = self
            .cands
            .encode(&half, &self.ladder.knob(first))
            .ok()?
            .len() as f64;
        let per_frame = (long - short) / (n - n / 2) as f64;
        if per_frame <= 0.0 || long <= 0.0 {
            return Some(first);
        }
        let predicted = long + (self.frames - n) as f64 * per_frame;
        self.guess(cap, predicted / long, Some(first))
    }

    /// A guess recalibrated by the full encodes `seen`: the ratio of full to excerpt size at
    /// the probe whose size is nearest the cap (in log terms).
    fn reguess(&self, cap: u64, seen: &[(u32, u64)], last: Option<u32>) -> Option<u32> {
        let &(i, full) = seen.iter().min_by(|a, b| {
            let d = |s: u64| ((s.max(1) as f64) / cap.max(1) as f64).ln().abs();
            d(a.1).total_cmp(&d(b.1))
        })?;
        let ex = self.excerpt_size(i).ok()?;
        self.guess(cap, full as f64 / ex.max(1) as f64, last)
    }
}

/// The size model's excerpt: [`MODEL_FRAMES`] consecutive frames from the middle, or `None`
/// for clips too short for an excerpt to be much cheaper than the clip.
fn model_excerpt(anim: &Animation) -> Option<Animation> {
    let n = anim.len();
    if n < 2 * MODEL_FRAMES {
        return None;
    }
    let start = (n - MODEL_FRAMES) / 2;
    Animation::new(
        anim.width,
        anim.height,
        anim.frames[start..start + MODEL_FRAMES].to_vec(),
        anim.loops,
    )
    .ok()
}

/// How far over the cap the excerpt may put the lossless size and still get a full lossless
/// encode: sizes scale only roughly with frame count, so 2× keeps every plausible fit, while a
/// noisy clip whose lossless file is ten times the cap skips the slowest encode of the search.
const LOSSLESS_HOPE: f64 = 2.0;

/// Best encoding of `anim` as `format` under `cap`: lossless first where the format has it
/// (nothing beats it if it fits; for GIF, 256 colours), then the lossy ladder. Both cores work:
/// the lossless encode runs beside the size model, then [`search_best_parallel`] probes two
/// positions at a time from the model's seed. With `worst_first` (after a frame-rate drop,
/// when failing is likely) the first round includes the lowest setting, so a hopeless rate
/// costs one round, not a whole search.
fn search_format(
    anim: &Animation,
    format: Format,
    cap: u64,
    try_lossless: bool,
    worst_first: bool,
    cands: &Candidates,
    progress: &mut dyn Progress,
) -> Result<Outcome> {
    let (lossless, ladder) = match format {
        Format::WebM => (None, Ladder::Crf),
        Format::WebP => (
            Some(Knob::Enc(Encoding::WebP { quality: None })),
            Ladder::WebPQuality,
        ),
        Format::Png => (
            Some(Knob::Enc(Encoding::Apng { palette: None })),
            Ladder::ApngPalette,
        ),
        // GIF has no lossless mode; its full palette plays that role (tried first, and the
        // answer whenever it fits, which spares the whole palette search).
        Format::Gif => (Some(Ladder::GifColors.knob(254)), Ladder::GifColors),
        other => {
            return Err(Error::Invalid(format!(
                "no size search for {} output",
                other.name()
            )));
        }
    };
    let lossless = lossless.filter(|_| try_lossless);
    let count = ladder.count();
    let worst = std::sync::atomic::AtomicU64::new(u64::MAX);
    let encode = |knob: Knob| -> Result<(u64, Chosen)> {
        let setting = knob.describe();
        let bytes = cands.encode(anim, &knob)?;
        Ok((bytes.len() as u64, Chosen { bytes, setting }))
    };
    if REFERENCE_SEARCH.load(std::sync::atomic::Ordering::Relaxed) {
        let mut lossless_size = None;
        if let Some(k) = lossless {
            keep_going(progress, "encode lossless", 0, 1)?;
            let (size, chosen) = encode(k)?;
            if size <= cap {
                return Ok(Outcome::Fits(chosen));
            }
            lossless_size = Some(size);
        }
        let found = search_best(count, cap, |i| {
            keep_going(progress, "encode", 0, 1)?;
            let r = encode(ladder.knob(i))?;
            if i == 0 {
                worst.store(r.0, std::sync::atomic::Ordering::Relaxed);
            }
            Ok(r)
        })?;
        return Ok(match found {
            Some(p) => Outcome::Fits(p.value),
            None => Outcome::TooBig {
                worst: worst.load(std::sync::atomic::Ordering::Relaxed),
                lossless: lossless_size,
            },
        });
    }
    let model = SizeModel::new(anim, ladder, cands);
    let lossless = lossless.filter(|k| {
        let Some(ex) = model.as_ref().map(|m| &m.excerpt) else {
            return true;
        };
        cands.encode(ex, k).map_or(true, |b| {
            b.len() as f64 * anim.len() as f64 / ex.len() as f64 <= LOSSLESS_HOPE * cap as f64
        })
    });
    let total = search_steps(count) + 2;
    keep_going(
        progress,
        if lossless.is_some() {
            "encode lossless + size model"
        } else {
            "size model"
        },
        0,
        total,
    )?;
    let (lossless_result, seed) = std::thread::scope(|scope| {
        let helper = lossless.map(|k| {
            std::thread::Builder::new()
                .name("ildiff-fit-lossless".into())
                .spawn_scoped(scope, move || encode(k))
        });
        let seed = if worst_first {
            Some(0)
        } else {
            model.as_ref().and_then(|m| m.seed(cap))
        };
        let result = helper.map(|h| match h {
            Ok(h) => h
                .join()
                .unwrap_or_else(|_| Err(Error::Invalid("the lossless probe panicked".into()))),
            Err(e) => Err(Error::Invalid(format!("cannot start a probe thread: {e}"))),
        });
        (result, seed)
    });
    let mut lossless_size = None;
    if let Some(r) = lossless_result {
        let (size, chosen) = r?;
        if size <= cap {
            return Ok(Outcome::Fits(chosen));
        }
        lossless_size = Some(size);
    }
    let mut done = 1u64;
    let mut last = seed;
    let found = search_best_guided(
        count,
        cap,
        |seen| {
            if seen.is_empty() {
                return seed;
            }
            let next = model.as_ref()?.reguess(cap, seen, last);
            last = next.or(last);
            next
        },
        |probes| {
            let names: Vec<String> = probes.iter().map(|&i| ladder.knob(i).describe()).collect();
            keep_going(
                progress,
                &format!("encode {}", names.join(" | ")),
                done,
                total.max(done + 1),
            )?;
            done += 1;
            Ok(())
        },
        |i| {
            let r = encode(ladder.knob(i))?;
            if i == 0 {
                worst.store(r.0, std::sync::atomic::Ordering::Relaxed);
            }
            Ok(r)
        },
    )?;
    Ok(match found {
        Some(p) => Outcome::Fits(p.value),
        None => Outcome::TooBig {
            // A search that never fits ends having probed index 0, so `worst` is known.
            worst: worst.load(std::sync::atomic::Ordering::Relaxed),
            lossless: lossless_size,
        },
    })
}

/// Names where the bytes of a clip that cannot fit go: encodes it once more at the lowest
/// setting with a hard (0/255) alpha; if that halves the size, the soft, noisy alpha is the cost.
fn size_cause(anim: &Animation, format: Format, cands: &Candidates) -> String {
    let ladder = match format {
        Format::WebM => Ladder::Crf,
        Format::WebP => Ladder::WebPQuality,
        Format::Png => Ladder::ApngPalette,
        Format::Gif => {
            return "GIF keeps one bit of alpha, so its size is all colour detail.".into();
        }
        _ => return String::new(),
    };
    let mut hard = anim.clone();
    for f in &mut hard.frames {
        for p in f.image.pixels_mut() {
            p[3] = if p[3] >= 128 { 255 } else { 0 };
        }
    }
    let knob = ladder.knob(0);
    let (Ok(soft), Ok(hard)) = (cands.encode(anim, &knob), cands.encode(&hard, &knob)) else {
        return String::new();
    };
    if (hard.len() as f64) < soft.len() as f64 * 0.5 {
        format!(
            "Most of it is the soft, noisy alpha: with hard edges it would be {} bytes.",
            group_digits(hard.len() as u64)
        )
    } else {
        "Most of it is colour detail (texture or noise in the picture), not the alpha.".into()
    }
}

/// The highest instantaneous frame rate (1 / shortest non-zero delay).
fn peak_fps(anim: &Animation) -> Option<f64> {
    anim.frames
        .iter()
        .map(|f| f.delay.secs())
        .filter(|&s| s > 0.0)
        .fold(None, |m: Option<f64>, s| Some(m.map_or(s, |m| m.min(s))))
        .map(|s| 1.0 / s)
}

/// True when every frame lasts exactly one frame at `fps`.
fn is_constant(anim: &Animation, fps: f64) -> bool {
    let d = Delay::from_fps(fps);
    anim.frames.iter().all(|f| f.delay == d)
}

fn check_trim(trim: Option<(f64, f64)>) -> Result<()> {
    if let Some((s, e)) = trim
        && !(s.is_finite() && e.is_finite() && s >= 0.0 && e > s)
    {
        return Err(Error::Invalid(format!(
            "trim range {s}..{e} s is empty or negative"
        )));
    }
    Ok(())
}

fn check_fps(fps: Option<f64>) -> Result<()> {
    if let Some(f) = fps
        && !(f.is_finite() && f > 0.0)
    {
        return Err(Error::Invalid(format!("fps must be positive, got {f}")));
    }
    Ok(())
}

/// Caps one play at the rule's duration and sets the loop count the rule asks for. Run after
/// every timing change: millisecond rounding of resampled delays can push a clip a few ms over.
fn finish_timing(mut a: Animation, rules: &Rules, source_loops: LoopCount) -> Animation {
    if let Some(max) = rules.max_duration_secs
        && a.duration_secs() > max + 1e-9
    {
        a = a.trim(max);
    }
    match rules.loops {
        LoopRule::Forever => a.loops = LoopCount::Infinite,
        LoopRule::Plays {
            max_plays,
            max_total_secs,
        } => {
            let src = match source_loops {
                LoopCount::Plays(n) => Some(n),
                LoopCount::Infinite => None,
            };
            a.loops =
                LoopCount::Plays(plays_for(a.duration_secs(), max_plays, max_total_secs, src));
        }
        LoopRule::None => {}
    }
    a
}

/// Step 2 of the fit: trim range, duration cap, frame rate (cap, minimum delay, constant rate
/// for video), frame count range, loop count.
fn prepare_time(
    anim: &Animation,
    rules: &Rules,
    opts: &FitOptions,
    format: Format,
    notes: &mut Vec<String>,
) -> Result<Animation> {
    check_trim(opts.trim)?;
    check_fps(opts.fps)?;
    let mut a = match opts.trim {
        Some((s, e)) => anim.cut(s, e),
        None => anim.clone(),
    };
    if !rules.animated {
        if a.len() > 1 {
            notes.push(format!(
                "kept the first frame only ({} frames in the source)",
                a.len()
            ));
        }
        return Ok(Animation::still(a.frames[0].image.clone()));
    }
    if a.len() > 1 && a.duration_secs() <= 0.0 {
        return Err(Error::Invalid(
            "the clip has zero duration (every frame delay is 0)".into(),
        ));
    }
    if let Some(max) = rules.max_duration_secs
        && a.duration_secs() > max + 1e-9
    {
        let d = a.duration_secs();
        match opts.time {
            TimeFit::Cut => {
                notes.push(format!(
                    "fit-time cut: cut to {max} s (the clip is {d:.2} s)"
                ));
                a = a.trim(max);
            }
            TimeFit::Speed => {
                notes.push(format!(
                    "fit-time speed: played {:.2}x faster to last {max} s (the clip is {d:.2} s), keeping the whole motion",
                    d / max
                ));
                a = a.retime(max)?;
            }
        }
    }

    // Frame rate.
    let ceiling = rules.fps_ceiling();
    let mut want = opts.fps;
    if let (Some(w), Some(c)) = (want, ceiling)
        && w > c + 1e-9
    {
        notes.push(format!("asked for {w} fps; the limit is {c} fps"));
        want = Some(c);
    }
    let peak = peak_fps(&a);
    let over = matches!((peak, ceiling), (Some(p), Some(c)) if p > c + 1e-6);
    if a.len() > 1 {
        let mut target = want.or(if over { ceiling } else { None });
        if format == Format::WebM {
            // Video stores one frame rate for the stream: make it constant and whole.
            let mut f = target.or(peak).unwrap_or(1.0).round().max(1.0);
            if let Some(c) = ceiling {
                f = f.min(c.floor());
            }
            target = (!is_constant(&a, f)).then_some(f);
        }
        if let Some(f) = target {
            if over && want.is_none() {
                notes.push(format!(
                    "resampled from {:.1} to {f} fps (the limit)",
                    peak.unwrap_or(0.0)
                ));
            }
            a = a.resample_fps(f)?;
        }
    }

    // Frame count (LINE: 5–20): pick the rate that lands the count in range.
    if let Some(range) = rules.frame_range
        && let Some(n) = frame_target(a.len(), range)
    {
        let d = a.duration_secs();
        if d <= 0.0 {
            return Err(Error::Invalid("the clip has zero duration".into()));
        }
        notes.push(format!(
            "resampled {} frames to {n} (the platform allows {}–{})",
            a.len(),
            range.0,
            range.1
        ));
        a = a.resample_fps(n as f64 / d)?;
    }
    Ok(finish_timing(a, rules, anim.loops))
}

/// Read-back limits generous enough for what was just written.
fn readback_limits(a: &Animation) -> Limits {
    let d = Limits::default();
    Limits {
        max_side: d.max_side.max(a.width.max(a.height)),
        max_frames: d.max_frames.max(a.len() as u32 * 2 + 16),
        max_bytes: d.max_bytes.max(a.pixel_bytes() * 2),
    }
}

/// Fits `anim` to a preset and writes `out` (its extension picks among the preset's formats).
/// See [`fit_with_rules`].
pub fn fit_to_preset(
    anim: &Animation,
    preset: Preset,
    opts: &FitOptions,
    out: &Path,
    progress: &mut dyn Progress,
) -> Result<ExportReport> {
    let mut report = fit_with_rules(anim, &preset.rules(), opts, out, progress)?;
    report.preset = Some(preset);
    Ok(report)
}

/// Fits `anim` to `rules` and writes `out`: canvas, timing, then the best encoder setting under
/// the size cap (lower frame rates only when the worst setting is still too big, noted in the
/// report). Cancelling through `progress` returns [`Error::Cancelled`] with nothing written. The
/// report re-reads the file; a rule that fails there is reported, and the file is kept.
pub fn fit_with_rules(
    anim: &Animation,
    rules: &Rules,
    opts: &FitOptions,
    out: &Path,
    progress: &mut dyn Progress,
) -> Result<ExportReport> {
    let format = rules.pick_format(Format::from_extension(out))?;
    check_out_dir(out)?;
    if anim.is_empty() {
        return Err(Error::Invalid("the clip has no frames".into()));
    }
    keep_going(progress, "prepare", 0, 1)?;
    let mut notes = Vec::new();
    let timed = prepare_time(anim, rules, opts, format, &mut notes)?;
    let (w, h) = rules
        .canvas
        .target(timed.width, timed.height, opts.fit, opts.size)?;
    keep_going(progress, "fit canvas", 0, 1)?;
    let mut base = timed.fit(w, h, opts.fit)?;
    drop(timed);
    // Invisible colour under alpha 0 costs bytes in every codec.
    base.clean_transparent([0, 0, 0]);

    let cands = Candidates::new(out);
    let min_frames = rules.frame_range.map_or(1, |r| r.0);
    let mut fallbacks = rules::fallback_fps(
        base.fps(),
        base.duration_secs(),
        min_frames,
        format == Format::WebM,
    )
    .into_iter();
    let mut current = base.clone();
    let mut lossless_seen: Option<Seen> = None;
    let mut first = true;
    let chosen = loop {
        let cap = rules.cap_for(current.len());
        let try_lossless = lossless_seen.is_none_or(|s| !s.hopeless(current.len(), cap));
        let outcome = search_format(
            &current,
            format,
            cap,
            try_lossless,
            !first,
            &cands,
            progress,
        )?;
        first = false;
        let worst = match outcome {
            Outcome::Fits(c) => break c,
            Outcome::TooBig { worst, lossless } => {
                if let Some(b) = lossless {
                    lossless_seen = Some(Seen {
                        bytes: b,
                        frames: current.len(),
                    });
                }
                Seen {
                    bytes: worst,
                    frames: current.len(),
                }
            }
        };
        let duration = base.duration_secs();
        // Skip rates that the worst size says cannot fit (bytes scale roughly with frames).
        let next = if rules.animated && current.len() > 1 {
            fallbacks.find(|&f| {
                let frames = (duration * f - 1e-9).ceil().max(1.0) as usize;
                !worst.hopeless(frames, cap)
            })
        } else {
            None
        };
        let Some(fps) = next else {
            let cause = size_cause(&current, format, &cands);
            return Err(Error::Encode {
                format: format.name(),
                reason: format!(
                    "{} cannot fit under {} bytes: at the lowest quality it is still {} bytes at {:.1} fps ({}x{}, {} frames, {:.2} s), and dropping below {:.1} fps (half the frames or {} fps) would turn the motion into a slideshow. {cause} Shorten it with a trim range or use a simpler clip: {}",
                    rules.title,
                    group_digits(cap),
                    group_digits(worst.bytes),
                    current.fps(),
                    current.width,
                    current.height,
                    current.len(),
                    current.duration_secs(),
                    rules::fps_floor(base.fps()),
                    rules::FPS_FLOOR,
                    out.display()
                ),
            });
        };
        let from = current.fps();
        current = finish_timing(base.resample_fps(fps)?, rules, anim.loops);
        notes.push(format!(
            "lowered the frame rate from {from:.1} to {fps:.1} fps ({} frames) because even the lowest quality did not fit {} bytes",
            current.len(),
            group_digits(rules.cap_for(current.len()))
        ));
    };
    drop(cands);

    keep_going(progress, "write", 0, 1)?;
    write_atomic(out, &chosen.bytes)?;
    // Past this point the file exists: progress is reported but cancel is not honoured.
    let _ = progress.step("check", 0, 1);
    let rb = report::read_back(out, format, &readback_limits(&current))?;
    let checks = report::check_rules(&rb, rules, format);
    let _ = progress.step("check", 1, 1);
    Ok(ExportReport {
        path: out.to_path_buf(),
        target: rules.title.to_string(),
        preset: None,
        format,
        bytes: rb.bytes,
        width: rb.width,
        height: rb.height,
        fps: rb.fps,
        duration_secs: rb.duration_secs,
        frames: rb.frames,
        loops: rb.loops,
        setting: chosen.setting,
        notes,
        passed: checks.iter().all(|c| c.pass),
        rules: checks,
    })
}

/// Fails before any encoding when the output folder is missing, rather than after the search.
fn check_out_dir(out: &Path) -> Result<()> {
    let dir = parent_dir(out);
    if dir.is_dir() {
        Ok(())
    } else {
        Err(Error::io(
            "write output",
            out,
            std::io::Error::new(
                std::io::ErrorKind::NotFound,
                format!("the folder {} does not exist", dir.display()),
            ),
        ))
    }
}

/// True when `out` names a folder: a trailing slash, an existing folder, or no extension.
fn is_folder_target(out: &Path) -> bool {
    let s = out.as_os_str().to_string_lossy();
    s.ends_with('/')
        || s.ends_with(std::path::MAIN_SEPARATOR)
        || out.is_dir()
        || out.extension().is_none()
}

/// Exports without platform rules: the extension picks the format (`.png` = APNG, `.webp`,
/// `.gif`, `.webm`; no extension or a trailing slash = a folder of PNG frames), `encoding`
/// overrides the format's default setting. Trim, fps and size from `opts` apply. The report has
/// no rules, but its figures are read back from the written file.
pub fn export_plain(
    anim: &Animation,
    out: &Path,
    opts: &FitOptions,
    encoding: Option<Encoding>,
    progress: &mut dyn Progress,
) -> Result<ExportReport> {
    check_trim(opts.trim)?;
    check_fps(opts.fps)?;
    let format = if is_folder_target(out) {
        Format::Folder
    } else {
        Format::from_extension(out).ok_or_else(|| {
            Error::Invalid(format!(
                "unknown output extension; use .png, .webp, .gif, .webm or a folder: {}",
                out.display()
            ))
        })?
    };
    let enc = match encoding {
        Some(e) if encoding_format(&e) != format => {
            return Err(Error::Invalid(format!(
                "the encoding {} does not write {} files: {}",
                describe(&e),
                format.name(),
                out.display()
            )));
        }
        Some(e) => e,
        None => Encoding::default_for(format).ok_or_else(|| Error::Unsupported {
            reason: format!("{} cannot be written", format.name()),
            path: out.to_path_buf(),
        })?,
    };
    if format != Format::Folder {
        check_out_dir(out)?;
    }
    keep_going(progress, "prepare", 0, 1)?;
    let mut a = match opts.trim {
        Some((s, e)) => anim.cut(s, e),
        None => anim.clone(),
    };
    if let Some(f) = opts.fps {
        a = a.resample_fps(f)?;
    }
    if let Some((w, h)) = opts.size {
        a = a.fit(w, h, opts.fit)?;
    }
    let setting = describe(&enc);
    keep_going(progress, &format!("encode {setting}"), 0, 1)?;
    if format == Format::Folder {
        std::fs::create_dir_all(out).map_err(|e| Error::io("create output folder", out, e))?;
    }
    // No byte cap here: the balanced effort (see `encode::Effort`).
    encode::write_with_effort(&a, &enc, out, encode::Effort::Balanced)?;
    let _ = progress.step("check", 0, 1);
    let rb = report::read_back(out, format, &readback_limits(&a))?;
    Ok(ExportReport {
        path: out.to_path_buf(),
        target: "plain export".into(),
        preset: None,
        format,
        bytes: rb.bytes,
        width: rb.width,
        height: rb.height,
        fps: rb.fps,
        duration_secs: rb.duration_secs,
        frames: rb.frames,
        loops: rb.loops,
        setting,
        notes: Vec::new(),
        rules: Vec::new(),
        passed: true,
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::media::Frame;
    use image::{Rgba, RgbaImage};

    fn clip(n: usize, ms: u32, w: u32, h: u32) -> Animation {
        let frames = (0..n)
            .map(|i| {
                Frame::new(
                    RgbaImage::from_pixel(w, h, Rgba([i as u8, 0, 0, 200])),
                    Delay::from_millis(ms),
                )
            })
            .collect();
        Animation::new(w, h, frames, LoopCount::Infinite).expect("clip")
    }

    #[test]
    fn search_picks_largest_that_fits_not_first() {
        // size = 1000 + 100 * index; cap 4250 → best index 32.
        let mut calls = Vec::new();
        let p = search_best(60, 4250, |i| {
            calls.push(i);
            Ok((1000 + 100 * i as u64, i))
        })
        .expect("search")
        .expect("found");
        assert_eq!(p.index, 32);
        assert_eq!(p.size, 4200);
        assert_eq!(p.value, 32);
        assert!(calls.len() <= 6, "{calls:?}");
        // The first probe fits, and the search still goes on to better ones.
        assert!(calls.len() > 1 && calls[0] < 32);
    }

    #[test]
    fn search_edges() {
        let all = search_best(60, u64::MAX, |i| Ok((i as u64, ())))
            .expect("s")
            .expect("f");
        assert_eq!(all.index, 59);
        let none = search_best(60, 10, |_| Ok((11, ()))).expect("s");
        assert!(none.is_none());
        let one = search_best(1, 10, |_| Ok((10, ()))).expect("s").expect("f");
        assert_eq!(one.index, 0);
        // Step-shaped function with a plateau.
        let p = search_best(255, 50, |i| Ok((if i < 100 { 40 } else { 60 }, ())))
            .expect("s")
            .expect("f");
        assert_eq!(p.index, 99);
        for count in [1u32, 2, 60, 101, 255] {
            let mut n = 0;
            let _ = search_best(count, 0, |_| {
                n += 1;
                Ok((1, ()))
            });
            assert!(n as u64 <= search_steps(count), "{count}: {n}");
        }
    }

    #[test]
    fn parallel_seeded_search_matches_exhaustive() {
        // Any seed, right or wrong, ends at the exhaustive answer on a monotone ladder.
        for count in [1u32, 2, 3, 7, 60, 121, 255] {
            let size = |i: u32| 1000 + 37 * i as u64;
            for cap in [0, 999, 1000, 1036, 1037, 1500, 3000, 10_000, u64::MAX] {
                let exhaustive = (0..count).filter(|&i| size(i) <= cap).max();
                for seed in [
                    None,
                    Some(0),
                    Some(1),
                    Some(count / 2),
                    Some(count - 1),
                    Some(count + 5),
                ] {
                    let calls = std::sync::atomic::AtomicU32::new(0);
                    let got = search_best_parallel(
                        count,
                        cap,
                        seed,
                        |p| {
                            assert!(!p.is_empty() && p.len() <= 2);
                            Ok(())
                        },
                        |i| {
                            calls.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
                            Ok((size(i), i))
                        },
                    )
                    .expect("search");
                    assert_eq!(
                        got.as_ref().map(|p| p.index),
                        exhaustive,
                        "count {count} cap {cap} seed {seed:?}"
                    );
                    if let Some(p) = got {
                        assert_eq!(p.value, p.index);
                    }
                    let n = calls.load(std::sync::atomic::Ordering::Relaxed);
                    // Two probes a round; a wrong seed costs a few gallop rounds.
                    let bound = 2 * (search_steps(count) as u32 + 3);
                    assert!(n <= bound, "{count} {cap} {seed:?}: {n}");
                }
            }
        }
        // A right seed costs one round.
        let rounds = std::sync::atomic::AtomicU32::new(0);
        let got = search_best_parallel(
            121,
            1000 + 37 * 80,
            Some(80),
            |_| {
                rounds.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
                Ok(())
            },
            |i| Ok((1000 + 37 * i as u64, ())),
        )
        .expect("search")
        .expect("fits");
        assert_eq!(got.index, 80);
        assert_eq!(rounds.load(std::sync::atomic::Ordering::Relaxed), 1);
        // Cancel from the round hook stops the search.
        let err = search_best_parallel(10, 5, None, |_| Err(Error::Cancelled), |_| Ok((1, ())))
            .expect_err("cancel");
        assert_eq!(err.kind(), "cancelled");
    }

    /// Guesses from a size model, right, wrong or wild, never change the answer, and a guide
    /// that keeps guessing wrong costs only its few guided rounds.
    #[test]
    fn guided_search_ends_at_the_exhaustive_answer_whatever_the_guesses() {
        let count = 121u32;
        let size = |i: u32| 1000 + 37 * i as u64;
        for cap in [0, 999, 1000, 2000, 3000, 5476, u64::MAX] {
            let exhaustive = (0..count).filter(|&i| size(i) <= cap).max();
            let guides: [&dyn Fn(usize) -> Option<u32>; 4] = [
                &|_| None,
                &|_| Some(0),
                &|k| Some((k as u32 * 53) % (count + 10)),
                &|_| exhaustive.or(Some(0)),
            ];
            for (g, guide) in guides.iter().enumerate() {
                let mut rounds = 0;
                let got = search_best_guided(
                    count,
                    cap,
                    |seen| guide(seen.len()),
                    |p| {
                        rounds += 1;
                        assert!(!p.is_empty() && p.len() <= 2);
                        Ok(())
                    },
                    |i| Ok((size(i), ())),
                )
                .expect("search");
                assert_eq!(got.map(|p| p.index), exhaustive, "cap {cap} guide {g}");
                assert!(
                    rounds <= search_steps(count) as u32 + 4,
                    "cap {cap} guide {g}: {rounds}"
                );
                if g == 3 && exhaustive.is_some_and(|e| e + 1 < count) {
                    assert_eq!(rounds, 1, "a right guess costs one round");
                }
            }
        }
    }

    /// The fitter's choice on a real clip (long enough for the size model) is the exhaustive
    /// scan's: the highest ladder position under the cap, for WebP (WhatsApp) and VP9
    /// (Telegram), whose size models are recalibrated by the full encodes.
    #[test]
    fn fit_picks_what_an_exhaustive_scan_picks() {
        check_fit_matches_exhaustive(
            Ladder::WebPQuality,
            Preset::WhatsApp,
            "webp",
            &[10, 30, 45, 60, 90, 100, 115],
        );
    }

    #[test]
    fn webm_fit_picks_what_an_exhaustive_scan_picks() {
        check_fit_matches_exhaustive(
            Ladder::Crf,
            Preset::Telegram,
            "webm",
            &[5, 15, 25, 35, 45, 55],
        );
    }

    fn check_fit_matches_exhaustive(ladder: Ladder, preset: Preset, ext: &str, picks: &[usize]) {
        let frames = (0..30)
            .map(|k| {
                let img = RgbaImage::from_fn(48, 48, |x, y| {
                    // Grain, so lossless is bigger than the lossy ladder (as on photos).
                    let h = (x * 73_856_093) ^ (y * 19_349_663) ^ (k * 83_492_791);
                    let v = ((x * 7 + y * 13 + k * 5) as u8).wrapping_add((h % 61) as u8);
                    let d = (x as f32 - 24.0).hypot(y as f32 - 24.0);
                    let a = ((20.0 - d) / 6.0).clamp(0.0, 1.0);
                    Rgba([v, v.wrapping_mul(3), 255 - v, (a * 255.0) as u8])
                });
                Frame::new(img, Delay::from_fps(30.0))
            })
            .collect();
        let mut clip = Animation::new(48, 48, frames, LoopCount::Infinite).expect("clip");
        clip.clean_transparent([0, 0, 0]);
        let dir = tempfile::tempdir().expect("tempdir");
        let cands = Candidates::new(&dir.path().join(format!("x.{ext}")));
        let sizes: Vec<u64> = (0..ladder.count())
            .map(|i| cands.encode(&clip, &ladder.knob(i)).expect("encode").len() as u64)
            .collect();
        let lossless = match ladder {
            Ladder::WebPQuality => encode::encode_to_vec(&clip, &Encoding::WebP { quality: None })
                .expect("lossless")
                .len() as u64,
            _ => u64::MAX,
        };
        let mut checked = 0;
        for &pick in picks {
            let cap = sizes[pick];
            let exhaustive = (0..ladder.count())
                .filter(|&i| sizes[i as usize] <= cap)
                .max()
                .expect("fits");
            // Only caps where the ladder is a clean threshold (everything below fits, nothing
            // above does): there "best that fits" has one meaning for every search.
            let e = exhaustive as usize;
            if cap >= lossless || sizes[..=e].iter().any(|&s| s > cap) {
                continue;
            }
            let rules = Rules {
                max_bytes: cap,
                static_max_bytes: None,
                canvas: rules::CanvasRule::Exact {
                    width: 48,
                    height: 48,
                },
                ..preset.rules()
            };
            let r = fit_with_rules(
                &clip,
                &rules,
                &FitOptions::default(),
                &dir.path().join(format!("c{pick}.{ext}")),
                &mut crate::progress::NoProgress,
            )
            .expect("fit");
            assert_eq!(r.frames, 30, "{r}");
            assert_eq!(
                r.setting,
                ladder.knob(exhaustive).describe(),
                "cap {cap}: sizes {sizes:?}"
            );
            checked += 1;
        }
        assert!(checked >= 3, "lossless {lossless} vs {sizes:?}");
    }

    #[test]
    fn search_passes_errors_through() {
        let err = search_best(60, 100, |i| {
            if i < 20 {
                Err(Error::Cancelled)
            } else {
                Ok((1000, ()))
            }
        })
        .expect_err("cancel");
        assert_eq!(err.kind(), "cancelled");
    }

    #[test]
    fn ladders_map_index_to_setting() {
        assert_eq!(Ladder::Crf.encoding(0), Encoding::WebM { crf: 63 });
        assert_eq!(
            Ladder::Crf.encoding(Ladder::Crf.count() - 1),
            Encoding::WebM { crf: 4 }
        );
        assert_eq!(
            Ladder::ApngPalette.encoding(254),
            Encoding::Apng { palette: Some(256) }
        );
        assert_eq!(describe(&Ladder::ApngPalette.encoding(0)), "apng palette 2");
        // WebP: colour first (alpha lossless) down to q 50, then alpha, then colour again.
        let wp = Ladder::WebPQuality;
        assert_eq!(wp.count(), 121);
        assert_eq!(
            wp.knob(wp.count() - 1),
            Knob::WebP {
                quality: 100,
                alpha: 100
            }
        );
        assert_eq!(wp.knob(70).describe(), "webp q 50");
        assert_eq!(wp.knob(69).describe(), "webp q 50 alpha q 95");
        assert_eq!(wp.knob(50).describe(), "webp q 50 alpha q 0");
        assert_eq!(wp.knob(0).describe(), "webp q 0 alpha q 0");
        let path: Vec<(u8, u8)> = (0..wp.count())
            .map(|i| match wp.knob(i) {
                Knob::WebP { quality, alpha } => (quality, alpha),
                _ => panic!("webp"),
            })
            .collect();
        // Each step lowers exactly one of the two, never raises either.
        assert!(
            path.windows(2)
                .all(|w| w[0].0 <= w[1].0 && w[0].1 <= w[1].1 && w[0] != w[1])
        );
        assert_eq!(describe(&Ladder::GifColors.encoding(62)), "gif 64 colours");
        // APNG: palettes up to 256 colours, then lossless colour with more and more alpha levels.
        let ap = Ladder::ApngPalette;
        assert_eq!(
            ap.knob(254),
            Knob::Enc(Encoding::Apng { palette: Some(256) })
        );
        assert_eq!(ap.knob(255), Knob::AlphaLevels(8));
        assert_eq!(ap.knob(ap.count() - 1), Knob::AlphaLevels(64));
        assert_eq!(ap.knob(256).describe(), "apng lossless, alpha 16 levels");
    }

    /// The APNG alpha knob: rounding a noisy soft matte to fewer levels keeps 0 and 255 exact,
    /// keeps the colours, and shrinks the lossless file step by step (the issue-18 case where
    /// the alpha plane, not the colours, held the bytes).
    #[test]
    fn apng_alpha_levels_shrink_a_noisy_matte() {
        let frames = (0..6)
            .map(|k| {
                let img = RgbaImage::from_fn(64, 64, |x, y| {
                    let h = x.wrapping_mul(73_856_093)
                        ^ y.wrapping_mul(19_349_663)
                        ^ (k as u32).wrapping_mul(83_492_791);
                    let d = (x as f32 - 32.0).hypot(y as f32 - 32.0);
                    let soft = ((28.0 - d) / 20.0).clamp(0.0, 1.0);
                    let grain = (h % 41) as f32 / 40.0 - 0.5;
                    let a = if soft > 0.0 {
                        ((soft + 0.15 * grain) * 255.0).clamp(1.0, 255.0)
                    } else {
                        0.0
                    };
                    Rgba([200, (x * 3) as u8, (y * 3) as u8, a as u8])
                });
                Frame::new(img, Delay::from_fps(10.0))
            })
            .collect();
        let clip = Animation::new(64, 64, frames, LoopCount::Infinite).expect("clip");
        let cands = Candidates::new(Path::new("x.png"));
        let mut sizes = Vec::new();
        for levels in Ladder::APNG_ALPHA_LEVELS {
            let rounded = alpha_levels(&clip, levels);
            let mut seen = std::collections::BTreeSet::new();
            for (a, b) in clip.frames.iter().zip(&rounded.frames) {
                for (p, q) in a.image.pixels().zip(b.image.pixels()) {
                    assert_eq!(p.0[..3], q.0[..3], "colours are kept");
                    if p[3] == 0 || p[3] == 255 {
                        assert_eq!(p[3], q[3]);
                    }
                    assert!((p[3] as i32 - q[3] as i32).abs() <= 255 / (levels as i32 - 1));
                    seen.insert(q[3]);
                }
            }
            assert!(seen.len() <= levels as usize, "{levels}: {}", seen.len());
            sizes.push(
                cands
                    .encode(&clip, &Knob::AlphaLevels(levels))
                    .expect("encode")
                    .len(),
            );
        }
        let lossless = encode::encode_to_vec(&clip, &Encoding::Apng { palette: None })
            .expect("lossless")
            .len();
        sizes.push(lossless);
        assert!(sizes.windows(2).all(|w| w[0] < w[1]), "{sizes:?}");
        assert!(sizes[0] * 10 < lossless * 8, "{sizes:?}");
    }

    #[test]
    fn telegram_timing_cuts_and_caps_fps() {
        // 5 s at 60 fps → 3 s at 30 fps, 90 frames, loops forever.
        let a = clip(300, 1000 / 60, 8, 8).retime(5.0).expect("retime");
        let mut notes = Vec::new();
        let t = prepare_time(
            &a,
            &Preset::Telegram.rules(),
            &FitOptions::default(),
            Format::WebM,
            &mut notes,
        )
        .expect("time");
        assert_eq!(t.len(), 90);
        assert!((t.duration_secs() - 3.0).abs() < 1e-9);
        assert!(t.frames.iter().all(|f| f.delay == Delay::from_fps(30.0)));
        assert_eq!(t.loops, LoopCount::Infinite);
        assert_eq!(notes.len(), 2, "{notes:?}");
    }

    #[test]
    fn fit_time_speed_keeps_every_moment() {
        // Telegram: ≤ 3 s. A 6 s clip sped up keeps its last frame; cut drops it.
        let mut a = clip(60, 100, 8, 8);
        a.frames[59].image.put_pixel(0, 0, Rgba([9, 9, 9, 255]));
        let rules = Preset::Telegram.rules();
        let mut notes = Vec::new();
        let speed = FitOptions {
            time: TimeFit::Speed,
            ..FitOptions::default()
        };
        let t = prepare_time(&a, &rules, &speed, Format::WebM, &mut notes).expect("speed");
        assert!(t.duration_secs() <= 3.0 + 1e-9);
        assert_eq!(
            t.frames.last().expect("last").image.get_pixel(0, 0),
            &Rgba([9, 9, 9, 255])
        );
        assert!(
            notes[0].starts_with("fit-time speed: played 2.00x faster"),
            "{notes:?}"
        );
        let mut notes = Vec::new();
        let t = prepare_time(&a, &rules, &FitOptions::default(), Format::WebM, &mut notes)
            .expect("cut");
        assert!(t.duration_secs() <= 3.0 + 1e-9);
        assert_ne!(
            t.frames.last().expect("last").image.get_pixel(0, 0),
            &Rgba([9, 9, 9, 255])
        );
        assert!(notes[0].starts_with("fit-time cut"), "{notes:?}");
    }

    #[test]
    fn webm_gets_a_constant_whole_frame_rate() {
        // Variable delays: 40 ms and 60 ms alternating, peak 25 fps.
        let mut a = clip(10, 40, 8, 8);
        for (i, f) in a.frames.iter_mut().enumerate() {
            if i % 2 == 1 {
                f.delay = Delay::from_millis(60);
            }
        }
        let t = prepare_time(
            &a,
            &Preset::Telegram.rules(),
            &FitOptions::default(),
            Format::WebM,
            &mut Vec::new(),
        )
        .expect("time");
        assert!(t.frames.iter().all(|f| f.delay == Delay::from_fps(25.0)));
        // Resampling keeps the duration up to one frame (the last is not split).
        assert_eq!(t.len(), 13);
        // Asked fps above the cap is capped.
        let opts = FitOptions {
            fps: Some(60.0),
            ..FitOptions::default()
        };
        let t = prepare_time(
            &a,
            &Preset::Telegram.rules(),
            &opts,
            Format::WebM,
            &mut Vec::new(),
        )
        .expect("time");
        assert!(t.frames.iter().all(|f| f.delay == Delay::from_fps(30.0)));
    }

    #[test]
    fn whatsapp_enforces_min_delay() {
        let a = clip(100, 5, 8, 8); // 200 fps
        let t = prepare_time(
            &a,
            &Preset::WhatsApp.rules(),
            &FitOptions::default(),
            Format::WebP,
            &mut Vec::new(),
        )
        .expect("time");
        assert!(t.frames.iter().all(|f| f.delay.millis() >= 8));
        assert!((t.duration_secs() - 0.5).abs() <= 0.008);
        // Slow clips are left alone (no needless resampling of variable delays).
        let slow = clip(4, 100, 8, 8);
        let t = prepare_time(
            &slow,
            &Preset::WhatsApp.rules(),
            &FitOptions::default(),
            Format::WebP,
            &mut Vec::new(),
        )
        .expect("time");
        assert_eq!(t.frames, slow.frames);
    }

    #[test]
    fn line_chooses_frames_and_plays() {
        let rules = Preset::Line.rules();
        let cases = [
            // (frames, ms per frame) → expectations checked generically.
            (90, 33),  // 3 s, too many frames
            (3, 100),  // 0.3 s, too few
            (12, 100), // 1.2 s, fine
            (200, 50), // 10 s, too long
            (40, 25),  // 1 s
        ];
        for (n, ms) in cases {
            let a = clip(n, ms, 8, 8);
            let t = prepare_time(
                &a,
                &rules,
                &FitOptions::default(),
                Format::Png,
                &mut Vec::new(),
            )
            .expect("time");
            let d = t.duration_secs();
            assert!((5..=20).contains(&t.len()), "{n}x{ms}: {} frames", t.len());
            assert!(d <= 4.0 + 1e-9, "{n}x{ms}: {d} s");
            let LoopCount::Plays(p) = t.loops else {
                panic!("LINE must not loop forever")
            };
            assert!((1..=4).contains(&p));
            assert!(p as f64 * d <= 4.0 + 1e-9, "{n}x{ms}: {p} x {d}");
        }
        // 12 frames of 100 ms: untouched, 3 plays.
        let t = prepare_time(
            &clip(12, 100, 8, 8),
            &rules,
            &FitOptions::default(),
            Format::Png,
            &mut Vec::new(),
        )
        .expect("time");
        assert_eq!((t.len(), t.loops), (12, LoopCount::Plays(3)));
        // 90 frames over 2.97 s → 20 frames, 1 play.
        let t = prepare_time(
            &clip(90, 33, 8, 8),
            &rules,
            &FitOptions::default(),
            Format::Png,
            &mut Vec::new(),
        )
        .expect("time");
        assert_eq!((t.len(), t.loops), (20, LoopCount::Plays(1)));
    }

    #[test]
    fn static_preset_keeps_first_frame_of_trim() {
        let a = clip(10, 100, 8, 8);
        let opts = FitOptions {
            trim: Some((0.5, 1.0)),
            ..FitOptions::default()
        };
        let t = prepare_time(
            &a,
            &Preset::TelegramStatic.rules(),
            &opts,
            Format::Png,
            &mut Vec::new(),
        )
        .expect("time");
        assert_eq!(t.len(), 1);
        assert_eq!(t.frames[0].image.get_pixel(0, 0)[0], 5);
    }

    #[test]
    fn bad_options_are_clear_errors() {
        let a = clip(4, 100, 8, 8);
        let rules = Preset::Telegram.rules();
        for opts in [
            FitOptions {
                trim: Some((2.0, 1.0)),
                ..FitOptions::default()
            },
            FitOptions {
                fps: Some(0.0),
                ..FitOptions::default()
            },
        ] {
            let err = prepare_time(&a, &rules, &opts, Format::WebM, &mut Vec::new())
                .expect_err("must fail");
            assert_eq!(err.kind(), "invalid");
        }
        let dir = tempfile::tempdir().expect("tempdir");
        let err = fit_to_preset(
            &a,
            Preset::Telegram,
            &FitOptions::default(),
            &dir.path().join("x.gif"),
            &mut crate::progress::NoProgress,
        )
        .expect_err("wrong extension");
        assert!(err.to_string().contains(".webm"), "{err}");
        let err = export_plain(
            &a,
            &dir.path().join("x.gif"),
            &FitOptions::default(),
            Some(Encoding::WebM { crf: 30 }),
            &mut crate::progress::NoProgress,
        )
        .expect_err("mismatch");
        assert_eq!(err.kind(), "invalid");
        let err = export_plain(
            &a,
            &dir.path().join("x.jpg"),
            &FitOptions::default(),
            None,
            &mut crate::progress::NoProgress,
        )
        .expect_err("jpeg");
        assert_eq!(err.kind(), "unsupported");
        let err = fit_to_preset(
            &a,
            Preset::Signal,
            &FitOptions::default(),
            &dir.path().join("no/such/folder/x.png"),
            &mut crate::progress::NoProgress,
        )
        .expect_err("missing folder");
        assert_eq!(err.kind(), "io");
        assert!(err.to_string().contains("does not exist"), "{err}");
        assert_eq!(std::fs::read_dir(dir.path()).expect("ls").count(), 0);
    }

    #[test]
    fn hopeless_rates_are_predicted_from_frame_count() {
        let seen = Seen {
            bytes: 800_000,
            frames: 90,
        };
        // 60 frames → ~533 KB: within 25 % of 500 KB, still worth a try.
        assert!(!seen.hopeless(60, 500_000));
        // 80 frames → ~711 KB: skipped.
        assert!(seen.hopeless(80, 500_000));
        assert!(!seen.hopeless(30, 500_000));
    }

    #[test]
    fn folder_targets() {
        assert!(is_folder_target(Path::new("out/")));
        assert!(is_folder_target(Path::new("frames")));
        assert!(!is_folder_target(Path::new("a.webp")));
    }
}

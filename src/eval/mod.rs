//! Matting-quality metrics of a predicted clip against its ground truth (METHOD.md §5), so the
//! figures we report are comparable with the matting and video-matting literature.
//!
//! Conventions (alpha in [0, 1] = 8-bit value / 255, whole frame, no trimap):
//! - **PSNR** (alpha): `10·log10(1/MSE)`, the MSE pooled over all frames and pixels, capped at
//!   100 dB (so identical clips give 100, not ∞).
//! - **SSIM** (alpha): per frame, then averaged. Gaussian window σ 1.5 truncated at radius 5
//!   (11×11), K1 0.01, K2 0.03, data range 1, population covariance, reflected borders, mean over
//!   the pixels at least 5 px from the border: scikit-image's `structural_similarity(
//!   gaussian_weights=True, sigma=1.5, use_sample_covariance=False, data_range=1)`. Frames with a
//!   side under 11 px (which scikit-image rejects) are averaged over all pixels.
//! - **SAD**: `Σ|α − α*| / 1000` per frame, averaged over frames.
//! - **MSE**: mean of `(α − α*)²` over all frames and pixels (not scaled).
//! - **Grad**: `Σ(|∇α| − |∇α*|)² / 1000` per frame, averaged; gradients from the Deep Image
//!   Matting `gaussgradient` filters (σ 1.4, 9×9, kernel scaled to unit L2 norm, replicated
//!   borders), without DIM's `mat2gray` min–max stretch.
//! - **Conn**: Rhemann et al.'s connectivity error as in the DIM code (thresholds 0.1…1 in steps
//!   of 0.1, largest 4-connected component of {α ≥ t ∧ α* ≥ t}, θ 0.15), `/ 1000` per frame,
//!   averaged.
//! - **dtSSD**: per frame pair `sqrt(mean_p(((α_t − α_{t−1}) − (α*_t − α*_{t−1}))²)) × 100`,
//!   averaged over pairs (Robust Video Matting's convention). A one-frame clip has no pair and
//!   gets 0.
//! - **Hole residue**: F = {α* ≥ 0.05}; hole pixels = (closing of F with a Euclidean disk of
//!   radius 9·min(H, W)/256 px ∪ the holes F encloses) ∖ F, per frame; the mean `|α − α*|` over
//!   the hole pixels of all frames. `None` when the clip has no hole pixels.
//! - **RGB PSNR**: PSNR (peak 1, capped at 100 dB) of premultiplied colour `c·α` against
//!   `c*·α*`, all three channels, pooled over the pixels with α* > 0 in all frames. `None` when
//!   α* is 0 everywhere.
//!
//! A dataset's figure is the mean of the clips' figures ([`mean_metrics`]), except PSNR: that is
//! the PSNR of the clips' mean MSE (pooled, for clips of one size). A mean of per-clip dB
//! would let one exactly matched clip (100 dB, e.g. colour keying on a 1-bit GIF over a flat
//! colour) outweigh every other clip of a group.

mod filter;
mod holes;
mod matting;
mod ssim;
mod temporal;

use std::borrow::Cow;

use image::RgbaImage;
use serde::Serialize;

use crate::error::{Error, Result};
use crate::media::Animation;

pub use temporal::{flicker_scores, temporal_diff};

/// PSNR ceiling in dB: identical clips would otherwise give infinity.
pub const PSNR_CAP: f64 = 100.0;

/// One channel of one frame as `f32` in [0, 1], row-major.
#[derive(Debug, Clone, PartialEq)]
pub struct Plane {
    pub w: usize,
    pub h: usize,
    pub data: Vec<f32>,
}

impl Plane {
    /// A plane, checking that `data` holds exactly `w × h` samples.
    pub fn new(w: usize, h: usize, data: Vec<f32>) -> Result<Plane> {
        if data.len() != w * h {
            return Err(Error::Invalid(format!(
                "a {w}x{h} plane needs {} samples, got {}",
                w * h,
                data.len()
            )));
        }
        Ok(Plane { w, h, data })
    }

    /// The alpha channel of a straight-alpha RGBA image, as value / 255.
    pub fn alpha_of(img: &RgbaImage) -> Plane {
        Plane {
            w: img.width() as usize,
            h: img.height() as usize,
            data: img
                .as_raw()
                .chunks_exact(4)
                .map(|p| f32::from(p[3]) / 255.0)
                .collect(),
        }
    }
}

/// The alpha planes of every frame of a clip.
pub fn alpha_planes(anim: &Animation) -> Vec<Plane> {
    anim.frames
        .iter()
        .map(|f| Plane::alpha_of(&f.image))
        .collect()
}

/// The figures of one clip (or, from [`mean_metrics`], the mean over clips). See the module
/// documentation for the exact definitions.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct ClipMetrics {
    /// Frames evaluated (for a mean: the total over clips).
    pub frames: usize,
    /// Alpha PSNR in dB, pooled MSE, capped at 100.
    pub psnr: f64,
    /// Alpha SSIM, mean over frames.
    pub ssim: f64,
    /// Sum of absolute alpha errors / 1000, mean over frames.
    pub sad: f64,
    /// Mean squared alpha error.
    pub mse: f64,
    /// Gradient error / 1000, mean over frames.
    pub grad: f64,
    /// Connectivity error / 1000, mean over frames.
    pub conn: f64,
    /// Temporal coherence error ×100, mean over frame pairs; 0 for one frame.
    pub dtssd: f64,
    /// Mean |Δα| over the hole pixels of the ground truth; `None` without hole pixels.
    pub hole_residue: Option<f64>,
    /// PSNR of premultiplied colour where α* > 0; `None` for alpha-only input or empty α*.
    pub rgb_psnr: Option<f64>,
}

/// Evaluates `pred` against `gt`. Canvas size and frame count must match exactly (frames are
/// compared by index; nothing is resampled), otherwise `Error::Invalid` says which differs.
pub fn evaluate(pred: &Animation, gt: &Animation) -> Result<ClipMetrics> {
    if (pred.width, pred.height) != (gt.width, gt.height) {
        return Err(Error::Invalid(format!(
            "canvas sizes differ: the prediction is {}x{}, the ground truth {}x{}",
            pred.width, pred.height, gt.width, gt.height
        )));
    }
    if pred.len() != gt.len() {
        return Err(Error::Invalid(format!(
            "frame counts differ: the prediction has {} frames, the ground truth {}",
            pred.len(),
            gt.len()
        )));
    }
    for (which, anim) in [("prediction", pred), ("ground truth", gt)] {
        anim.validate()
            .map_err(|e| Error::Invalid(format!("{which}: {e}")))?;
    }
    check_nonempty(gt.len(), gt.width as usize, gt.height as usize)?;

    let get = |t: usize| {
        (
            Cow::Owned(Plane::alpha_of(&pred.frames[t].image)),
            Cow::Owned(Plane::alpha_of(&gt.frames[t].image)),
        )
    };
    let mut m = alpha_metrics(gt.len(), &get);

    let rgb: Vec<(f64, u64)> = par_map(gt.len(), |t| {
        premultiplied_sq_error(&pred.frames[t].image, &gt.frames[t].image)
    });
    let (sq, n) = rgb
        .iter()
        .fold((0.0, 0u64), |(s, c), (fs, fc)| (s + fs, c + fc));
    m.rgb_psnr = (n > 0).then(|| psnr(sq / (3 * n) as f64));
    Ok(m)
}

/// Evaluates alpha planes directly (e.g. a model's float output before 8-bit quantisation).
/// Same conventions as [`evaluate`]; `rgb_psnr` is `None`.
pub fn evaluate_alpha(pred: &[Plane], gt: &[Plane]) -> Result<ClipMetrics> {
    if pred.len() != gt.len() {
        return Err(Error::Invalid(format!(
            "frame counts differ: the prediction has {} frames, the ground truth {}",
            pred.len(),
            gt.len()
        )));
    }
    let (w, h) = gt.first().map(|p| (p.w, p.h)).unwrap_or((0, 0));
    check_nonempty(gt.len(), w, h)?;
    for (which, planes) in [("prediction", pred), ("ground truth", gt)] {
        for (i, p) in planes.iter().enumerate() {
            if (p.w, p.h) != (w, h) || p.data.len() != w * h {
                return Err(Error::Invalid(format!(
                    "{which} frame {i} is {}x{} with {} samples, expected {w}x{h}",
                    p.w,
                    p.h,
                    p.data.len()
                )));
            }
        }
    }
    let get = |t: usize| (Cow::Borrowed(&pred[t]), Cow::Borrowed(&gt[t]));
    Ok(alpha_metrics(gt.len(), &get))
}

/// The mean of each figure over clips (`frames` is the total; PSNR is that of the mean MSE). Optional figures are averaged
/// over the clips that have them and stay `None` if none has. `None` for an empty slice.
pub fn mean_metrics(clips: &[ClipMetrics]) -> Option<ClipMetrics> {
    if clips.is_empty() {
        return None;
    }
    let n = clips.len() as f64;
    let mean = |f: fn(&ClipMetrics) -> f64| clips.iter().map(f).sum::<f64>() / n;
    let mean_opt = |f: fn(&ClipMetrics) -> Option<f64>| {
        let v: Vec<f64> = clips.iter().filter_map(f).collect();
        (!v.is_empty()).then(|| v.iter().sum::<f64>() / v.len() as f64)
    };
    Some(ClipMetrics {
        frames: clips.iter().map(|c| c.frames).sum(),
        psnr: psnr(mean(|c| c.mse)),
        ssim: mean(|c| c.ssim),
        sad: mean(|c| c.sad),
        mse: mean(|c| c.mse),
        grad: mean(|c| c.grad),
        conn: mean(|c| c.conn),
        dtssd: mean(|c| c.dtssd),
        hole_residue: mean_opt(|c| c.hole_residue),
        rgb_psnr: mean_opt(|c| c.rgb_psnr),
    })
}

fn check_nonempty(frames: usize, w: usize, h: usize) -> Result<()> {
    if frames == 0 {
        return Err(Error::Invalid("there are no frames to evaluate".into()));
    }
    if w == 0 || h == 0 {
        return Err(Error::Invalid(format!(
            "cannot evaluate an empty {w}x{h} canvas"
        )));
    }
    Ok(())
}

/// `10·log10(1/mse)`, capped at [`PSNR_CAP`].
fn psnr(mse: f64) -> f64 {
    if mse <= 0.0 {
        PSNR_CAP
    } else {
        (-10.0 * mse.log10()).min(PSNR_CAP)
    }
}

/// Per-frame sums, combined in frame order so results do not depend on thread timing.
struct FrameStats {
    abs_sum: f64,
    sq_sum: f64,
    ssim: f64,
    grad: f64,
    conn: f64,
    hole_abs: f64,
    hole_count: u64,
    /// dtSSD against the previous frame; `None` for frame 0.
    dtssd: Option<f64>,
}

type PlanePair<'a> = (Cow<'a, Plane>, Cow<'a, Plane>);

/// All alpha figures of a validated clip of `n` frames; `get(t)` yields (pred, gt) of frame t.
fn alpha_metrics<'a>(n: usize, get: &(dyn Fn(usize) -> PlanePair<'a> + Sync)) -> ClipMetrics {
    let stats = par_map(n, |t| {
        let (p, g) = get(t);
        let prev = (t > 0).then(|| get(t - 1));
        frame_stats(&p, &g, prev.as_ref().map(|(pp, gp)| (&**pp, &**gp)))
    });
    let px = stats.len() as f64 * {
        let (p, _) = get(0);
        p.data.len() as f64
    };
    let nf = stats.len() as f64;
    let sum = |f: fn(&FrameStats) -> f64| stats.iter().map(f).sum::<f64>();
    let hole_count: u64 = stats.iter().map(|s| s.hole_count).sum();
    let pairs: Vec<f64> = stats.iter().filter_map(|s| s.dtssd).collect();
    let mse = sum(|s| s.sq_sum) / px;
    ClipMetrics {
        frames: stats.len(),
        psnr: psnr(mse),
        ssim: sum(|s| s.ssim) / nf,
        sad: sum(|s| s.abs_sum) / 1000.0 / nf,
        mse,
        grad: sum(|s| s.grad) / nf,
        conn: sum(|s| s.conn) / nf,
        dtssd: if pairs.is_empty() {
            0.0
        } else {
            pairs.iter().sum::<f64>() / pairs.len() as f64
        },
        hole_residue: (hole_count > 0).then(|| sum(|s| s.hole_abs) / hole_count as f64),
        rgb_psnr: None,
    }
}

fn frame_stats(pred: &Plane, gt: &Plane, prev: Option<(&Plane, &Plane)>) -> FrameStats {
    let (mut abs_sum, mut sq_sum) = (0.0, 0.0);
    for (&a, &b) in pred.data.iter().zip(&gt.data) {
        let d = f64::from(a) - f64::from(b);
        abs_sum += d.abs();
        sq_sum += d * d;
    }
    let holes = holes::hole_mask(gt);
    let (mut hole_abs, mut hole_count) = (0.0, 0u64);
    for ((&a, &b), &is_hole) in pred.data.iter().zip(&gt.data).zip(&holes) {
        if is_hole {
            hole_abs += (f64::from(a) - f64::from(b)).abs();
            hole_count += 1;
        }
    }
    FrameStats {
        abs_sum,
        sq_sum,
        ssim: ssim::ssim(pred, gt),
        grad: matting::grad_error(pred, gt),
        conn: matting::conn_error(pred, gt),
        hole_abs,
        hole_count,
        dtssd: prev.map(|(pp, gp)| temporal::dtssd_pair(pp, pred, gp, gt)),
    }
}

/// Squared premultiplied-colour error summed over the pixels with α* > 0, and their count.
fn premultiplied_sq_error(pred: &RgbaImage, gt: &RgbaImage) -> (f64, u64) {
    let (mut sq, mut n) = (0.0, 0u64);
    for (p, g) in pred
        .as_raw()
        .chunks_exact(4)
        .zip(gt.as_raw().chunks_exact(4))
    {
        if g[3] == 0 {
            continue;
        }
        n += 1;
        let (pa, ga) = (f64::from(p[3]) / 255.0, f64::from(g[3]) / 255.0);
        for c in 0..3 {
            let d = f64::from(p[c]) / 255.0 * pa - f64::from(g[c]) / 255.0 * ga;
            sq += d * d;
        }
    }
    (sq, n)
}

/// Runs `f(0..n)` on all cores (frames are independent) and returns the results in order.
fn par_map<T: Send>(n: usize, f: impl Fn(usize) -> T + Sync) -> Vec<T> {
    crate::par::par_map(n, usize::MAX, f)
}

#[cfg(test)]
mod tests;

//! Frame-to-frame alpha change: the per-pixel map the studio's flicker heatmap shows, and the
//! signed differences dtSSD compares. One function computes the difference for both, so the
//! heatmap and the metric cannot drift apart.

use super::Plane;
use crate::error::{Error, Result};

/// Signed per-pixel change `α_t − α_{t−1}` (planes of equal size, checked by callers).
pub(crate) fn signed_delta<'a>(prev: &'a Plane, cur: &'a Plane) -> impl Iterator<Item = f32> + 'a {
    cur.data.iter().zip(&prev.data).map(|(c, p)| c - p)
}

fn check_sizes(frames: &[Plane]) -> Result<()> {
    if let Some(first) = frames.first()
        && let Some((i, f)) = frames
            .iter()
            .enumerate()
            .find(|(_, f)| (f.w, f.h) != (first.w, first.h))
    {
        return Err(Error::Invalid(format!(
            "alpha plane {i} is {}x{}, plane 0 is {}x{}",
            f.w, f.h, first.w, first.h
        )));
    }
    Ok(())
}

/// `|α_t − α_{t−1}|` per pixel for every frame; frame 0 is all zeros (nothing precedes it), so
/// the result lines up with the frames. Errors when the planes differ in size.
pub fn temporal_diff(frames: &[Plane]) -> Result<Vec<Vec<f32>>> {
    check_sizes(frames)?;
    let mut out = Vec::with_capacity(frames.len());
    if let Some(first) = frames.first() {
        out.push(vec![0.0; first.data.len()]);
    }
    for pair in frames.windows(2) {
        out.push(signed_delta(&pair[0], &pair[1]).map(f32::abs).collect());
    }
    Ok(out)
}

/// Per-frame flicker score: the mean of [`temporal_diff`] over the frame's pixels (0 for frame
/// 0), in alpha units [0, 1].
pub fn flicker_scores(frames: &[Plane]) -> Result<Vec<f64>> {
    check_sizes(frames)?;
    let mut out = Vec::with_capacity(frames.len());
    if !frames.is_empty() {
        out.push(0.0);
    }
    for pair in frames.windows(2) {
        let n = pair[1].data.len().max(1) as f64;
        let sum: f64 = signed_delta(&pair[0], &pair[1])
            .map(|d| f64::from(d.abs()))
            .sum();
        out.push(sum / n);
    }
    Ok(out)
}

/// dtSSD term of one frame pair: `sqrt(mean_p(((α_t − α_{t−1}) − (α*_t − α*_{t−1}))²)) × 100`.
pub(crate) fn dtssd_pair(pred_prev: &Plane, pred: &Plane, gt_prev: &Plane, gt: &Plane) -> f64 {
    let n = pred.data.len().max(1) as f64;
    let sum: f64 = signed_delta(pred_prev, pred)
        .zip(signed_delta(gt_prev, gt))
        .map(|(a, b)| {
            let d = f64::from(a) - f64::from(b);
            d * d
        })
        .sum();
    (sum / n).sqrt() * 100.0
}

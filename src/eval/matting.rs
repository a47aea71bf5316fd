//! The two image-matting errors from Rhemann et al. (CVPR 2009) as the Deep Image Matting
//! evaluation code (Xu et al. 2017, `compute_gradient_loss.m`, `compute_connectivity_error.m`)
//! computes them, over the whole frame (no trimap). Both return the raw sum divided by 1000, the
//! scale the matting papers report.

use super::Plane;
use super::filter::{Border, separable};

/// σ of the Gaussian-derivative filters of the gradient error.
const GRAD_SIGMA: f64 = 1.4;

/// The 1-D factors of the DIM `gaussgradient` kernel: `g(u) = exp(-u²/2σ²)/(σ√2π)` and its
/// derivative `-u·g(u)/σ²`, for `|u| ≤ halfsize = ceil(σ·sqrt(-2·ln(√(2π)·σ·0.01)))` (4 for
/// σ 1.4, a 9×9 kernel). The 2-D kernel `g(y)·g'(x)` is scaled to unit L2 norm; since it is an
/// outer product that is the same as scaling each factor to unit norm.
fn gauss_gradient_kernels(sigma: f64) -> (Vec<f64>, Vec<f64>) {
    let eps = 1e-2;
    let half = (sigma * (-2.0 * ((2.0 * std::f64::consts::PI).sqrt() * sigma * eps).ln()).sqrt())
        .ceil() as isize;
    let gauss = |u: f64| {
        (-u * u / (2.0 * sigma * sigma)).exp() / (sigma * (2.0 * std::f64::consts::PI).sqrt())
    };
    let mut g: Vec<f64> = (-half..=half).map(|u| gauss(u as f64)).collect();
    let mut dg: Vec<f64> = (-half..=half)
        .map(|u| -(u as f64) * gauss(u as f64) / (sigma * sigma))
        .collect();
    for k in [&mut g, &mut dg] {
        let norm = k.iter().map(|v| v * v).sum::<f64>().sqrt();
        for v in k.iter_mut() {
            *v /= norm;
        }
    }
    (g, dg)
}

/// Gradient magnitude `sqrt(gx² + gy²)` with replicated borders, as `imfilter(..., 'replicate')`.
/// (The DIM code convolves, which flips the derivative's sign; the magnitude does not care.)
fn gradient_magnitude(p: &Plane, g: &[f64], dg: &[f64]) -> Vec<f64> {
    let src: Vec<f64> = p.data.iter().map(|&v| f64::from(v)).collect();
    let gx = separable(&src, p.w, p.h, dg, g, Border::Replicate);
    let gy = separable(&src, p.w, p.h, g, dg, Border::Replicate);
    gx.iter()
        .zip(&gy)
        .map(|(a, b)| (a * a + b * b).sqrt())
        .collect()
}

/// Gradient error of one frame: `Σ_p (|∇α|_p − |∇α*|_p)² / 1000`.
///
/// Alpha is used as it is, in [0, 1]. (The Matlab code first applies `mat2gray`, a min–max
/// stretch of each matte; that equals the identity for mattes spanning 0..1 and is a known
/// oddity the Python ports drop, as we do.)
pub(crate) fn grad_error(pred: &Plane, gt: &Plane) -> f64 {
    let (g, dg) = gauss_gradient_kernels(GRAD_SIGMA);
    let a = gradient_magnitude(pred, &g, &dg);
    let b = gradient_magnitude(gt, &g, &dg);
    let sum: f64 = a.iter().zip(&b).map(|(x, y)| (x - y) * (x - y)).sum();
    sum / 1000.0
}

/// Connectivity threshold step.
const CONN_STEP_COUNT: u32 = 10;
/// θ: how far above the last connected level a pixel must be before it counts as disconnected.
const CONN_THETA: f64 = 0.15;

/// Connectivity error of one frame: `Σ_p |φ(α_p) − φ(α*_p)| / 1000`.
///
/// For thresholds t = 0.1, 0.2, …, 1 the largest 4-connected component Ω_t of
/// {α ≥ t and α* ≥ t} is found; each pixel's level l is the last threshold before the first one
/// whose Ω does not contain it (1 if it is in every Ω). With d = α − l,
/// φ = 1 − d·[d ≥ θ], θ = 0.15. Among equally large components the one met first in
/// column-major order wins, as Matlab's `bwconncomp` + `max` pick it; when the set is empty Ω is
/// empty (the reference code would fail there).
pub(crate) fn conn_error(pred: &Plane, gt: &Plane) -> f64 {
    let (w, h) = (pred.w, pred.h);
    let n = w * h;
    let mut level = vec![-1.0f64; n];
    let mut mask = vec![false; n];
    let mut labels = vec![0u32; n];
    let mut stack = Vec::new();
    for i in 1..=CONN_STEP_COUNT {
        // Compared in f32 so a u8 level that equals a threshold (51/255 = 0.2) counts as ≥.
        let t = i as f32 / CONN_STEP_COUNT as f32;
        for ((m, &a), &b) in mask.iter_mut().zip(&pred.data).zip(&gt.data) {
            *m = a >= t && b >= t;
        }
        let best = largest_component(&mask, w, h, &mut labels, &mut stack);
        let prev = f64::from(i - 1) / f64::from(CONN_STEP_COUNT);
        for (l, &lab) in level.iter_mut().zip(&labels) {
            if *l == -1.0 && (best == 0 || lab != best) {
                *l = prev;
            }
        }
    }
    let phi = |a: f32, l: f64| {
        let d = f64::from(a) - l;
        if d >= CONN_THETA { 1.0 - d } else { 1.0 }
    };
    let mut sum = 0.0;
    for ((&a, &b), &l) in pred.data.iter().zip(&gt.data).zip(&level) {
        let l = if l == -1.0 { 1.0 } else { l };
        sum += (phi(a, l) - phi(b, l)).abs();
    }
    sum / 1000.0
}

/// Labels the 4-connected components of `mask` (labels from 1, in column-major order of their
/// first pixel) and returns the label of the largest, or 0 when the mask is empty.
fn largest_component(
    mask: &[bool],
    w: usize,
    h: usize,
    labels: &mut [u32],
    stack: &mut Vec<usize>,
) -> u32 {
    labels.fill(0);
    let (mut next, mut best, mut best_size) = (0u32, 0u32, 0usize);
    for x in 0..w {
        for y in 0..h {
            let s = y * w + x;
            if !mask[s] || labels[s] != 0 {
                continue;
            }
            next += 1;
            labels[s] = next;
            stack.clear();
            stack.push(s);
            let mut size = 0usize;
            while let Some(p) = stack.pop() {
                size += 1;
                let (px, py) = (p % w, p / w);
                let mut visit = |q: usize| {
                    if mask[q] && labels[q] == 0 {
                        labels[q] = next;
                        stack.push(q);
                    }
                };
                if px > 0 {
                    visit(p - 1);
                }
                if px + 1 < w {
                    visit(p + 1);
                }
                if py > 0 {
                    visit(p - w);
                }
                if py + 1 < h {
                    visit(p + w);
                }
            }
            if size > best_size {
                best_size = size;
                best = next;
            }
        }
    }
    best
}

#[cfg(test)]
mod tests {
    use super::*;

    fn plane(w: usize, h: usize, f: impl Fn(usize, usize) -> f32) -> Plane {
        let mut data = Vec::with_capacity(w * h);
        for y in 0..h {
            for x in 0..w {
                data.push(f(x, y));
            }
        }
        Plane { w, h, data }
    }

    #[test]
    fn gradient_kernel_matches_dim_size_and_norm() {
        let (g, dg) = gauss_gradient_kernels(1.4);
        assert_eq!(g.len(), 9);
        assert_eq!(dg.len(), 9);
        let n2 = |k: &[f64]| k.iter().map(|v| v * v).sum::<f64>();
        assert!((n2(&g) - 1.0).abs() < 1e-12 && (n2(&dg) - 1.0).abs() < 1e-12);
        // Odd derivative, negative for positive u (dgauss = -u·g/σ²).
        assert!((dg[0] + dg[8]).abs() < 1e-15 && dg[8] < 0.0 && dg[4] == 0.0);
    }

    #[test]
    fn largest_component_is_four_connected_and_first_on_ties() {
        // Two diagonal pixels are two components under 4-connectivity.
        let mask = [true, false, false, true];
        let mut labels = vec![0; 4];
        let best = largest_component(&mask, 2, 2, &mut labels, &mut Vec::new());
        assert_eq!(best, 1);
        assert_eq!(labels, vec![1, 0, 0, 2]);
        // A 3-pixel L beats a 2-pixel bar.
        let mask = [true, false, true, true, false, true, false, false, false];
        let best = largest_component(&mask, 3, 3, &mut labels_of(9), &mut Vec::new());
        assert_eq!(best, 1);
        let mask = [false; 4];
        assert_eq!(
            largest_component(&mask, 2, 2, &mut labels_of(4), &mut Vec::new()),
            0
        );
    }

    fn labels_of(n: usize) -> Vec<u32> {
        vec![0; n]
    }

    #[test]
    fn conn_hand_checked_isolated_pixel() {
        // gt: one connected opaque 3x3 block at the left; pred also has a stray opaque pixel
        // far right (not 4-connected). At t ≥ 0.1 the intersection is the block only (gt is 0
        // at the stray pixel), so the stray pixel's level is 0: φ_pred = 1 − 1 = 0, φ_gt = 1
        // (α* = 0 → d = 0 < θ). Everything else agrees: error 1/1000.
        let gt = plane(8, 3, |x, _| if x < 3 { 1.0 } else { 0.0 });
        let pred = plane(8, 3, |x, y| {
            if x < 3 || (x == 7 && y == 1) {
                1.0
            } else {
                0.0
            }
        });
        assert!((conn_error(&pred, &gt) - 0.001).abs() < 1e-12);
        assert_eq!(conn_error(&gt, &gt), 0.0);
    }

    #[test]
    fn grad_zero_for_identical_and_grows_with_error() {
        let gt = plane(24, 24, |x, y| {
            if (6..18).contains(&x) && (6..18).contains(&y) {
                1.0
            } else {
                0.0
            }
        });
        assert_eq!(grad_error(&gt, &gt), 0.0);
        let soft = plane(24, 24, |x, y| gt.data[y * 24 + x] * 0.8);
        let softer = plane(24, 24, |x, y| gt.data[y * 24 + x] * 0.5);
        let e1 = grad_error(&soft, &gt);
        let e2 = grad_error(&softer, &gt);
        assert!(e1 > 0.0 && e2 > e1, "{e1} {e2}");
    }
}

//! Separable 2-D filtering on `f64` planes with the two border rules the evaluation code needs:
//! scipy's `reflect` (SSIM) and Matlab's `replicate` (the gradient error). Separable passes keep
//! an 11-tap window at 22 multiply-adds per pixel instead of 121.

/// How samples outside the image are made up.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Border {
    /// Half-sample symmetric: `d c b a | a b c d | d c b a` (scipy `reflect`, Matlab `symmetric`).
    Reflect,
    /// Edge value repeated: `a a a | a b c d | d d d` (scipy `nearest`, Matlab `replicate`).
    Replicate,
}

/// Index into `0..n` for the (possibly outside) position `i`. `n` must be at least 1.
pub(crate) fn border_index(i: isize, n: usize, border: Border) -> usize {
    let n = n as isize;
    let m = match border {
        Border::Replicate => i.clamp(0, n - 1),
        Border::Reflect => {
            // Period 2n; works for any offset, even windows wider than the image.
            let m = i.rem_euclid(2 * n);
            if m < n { m } else { 2 * n - 1 - m }
        }
    };
    m as usize
}

/// Correlates `src` (`w × h`, row-major) with `kx` along x and `ky` along y; both kernels have
/// odd length and are centred. Correlation, not convolution: callers that care about the sign of
/// an odd kernel say so.
pub(crate) fn separable(
    src: &[f64],
    w: usize,
    h: usize,
    kx: &[f64],
    ky: &[f64],
    border: Border,
) -> Vec<f64> {
    debug_assert_eq!(src.len(), w * h);
    if w == 0 || h == 0 {
        return Vec::new();
    }
    let rx = kx.len() / 2;
    let ry = ky.len() / 2;

    // Horizontal pass through a padded copy of each row, so the inner loop has no branches.
    let xmap: Vec<usize> = (0..w + 2 * rx)
        .map(|i| border_index(i as isize - rx as isize, w, border))
        .collect();
    let mut padded = vec![0.0; w + 2 * rx];
    let mut tmp = vec![0.0; w * h];
    for (row, out) in src.chunks_exact(w).zip(tmp.chunks_exact_mut(w)) {
        for (p, &m) in padded.iter_mut().zip(&xmap) {
            *p = row[m];
        }
        // Tap by tap over the whole row: no reduction chain, so it vectorises.
        out.fill(0.0);
        for (k, &c) in kx.iter().enumerate() {
            for (o, s) in out.iter_mut().zip(&padded[k..k + w]) {
                *o += c * s;
            }
        }
    }

    // Vertical pass: whole rows at a time (vectorises well).
    let mut dst = vec![0.0; w * h];
    for (y, out) in dst.chunks_exact_mut(w).enumerate() {
        for (k, &c) in ky.iter().enumerate() {
            let sy = border_index(y as isize + k as isize - ry as isize, h, border);
            let srow = &tmp[sy * w..(sy + 1) * w];
            for (o, s) in out.iter_mut().zip(srow) {
                *o += c * s;
            }
        }
    }
    dst
}

/// scipy's `gaussian_filter` kernel: `exp(-x²/2σ²)` for `|x| ≤ radius`, normalised to sum 1.
pub(crate) fn gaussian_kernel(sigma: f64, radius: usize) -> Vec<f64> {
    let r = radius as isize;
    let mut k: Vec<f64> = (-r..=r)
        .map(|x| (-0.5 * (x * x) as f64 / (sigma * sigma)).exp())
        .collect();
    let s: f64 = k.iter().sum();
    for v in &mut k {
        *v /= s;
    }
    k
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn reflect_and_replicate_indices() {
        let r: Vec<usize> = (-4..8)
            .map(|i| border_index(i, 4, Border::Reflect))
            .collect();
        assert_eq!(r, vec![3, 2, 1, 0, 0, 1, 2, 3, 3, 2, 1, 0]);
        let c: Vec<usize> = (-2..6)
            .map(|i| border_index(i, 4, Border::Replicate))
            .collect();
        assert_eq!(c, vec![0, 0, 0, 1, 2, 3, 3, 3]);
        // A window wider than the image keeps reflecting.
        assert_eq!(border_index(-3, 2, Border::Reflect), 1);
        assert_eq!(border_index(5, 1, Border::Reflect), 0);
    }

    #[test]
    fn separable_matches_direct_correlation() {
        let (w, h) = (7, 5);
        let src: Vec<f64> = (0..w * h).map(|i| ((i * 37) % 11) as f64).collect();
        let kx = [0.5, -1.0, 2.0];
        let ky = [1.0, 0.25, -0.5, 0.0, 3.0];
        for border in [Border::Reflect, Border::Replicate] {
            let got = separable(&src, w, h, &kx, &ky, border);
            for y in 0..h {
                for x in 0..w {
                    let mut want = 0.0;
                    for (j, cy) in ky.iter().enumerate() {
                        for (i, cx) in kx.iter().enumerate() {
                            let sx = border_index(x as isize + i as isize - 1, w, border);
                            let sy = border_index(y as isize + j as isize - 2, h, border);
                            want += cx * cy * src[sy * w + sx];
                        }
                    }
                    assert!((got[y * w + x] - want).abs() < 1e-12, "{border:?} {x},{y}");
                }
            }
        }
    }

    #[test]
    fn gaussian_kernel_sums_to_one_and_is_symmetric() {
        let k = gaussian_kernel(1.5, 5);
        assert_eq!(k.len(), 11);
        assert!((k.iter().sum::<f64>() - 1.0).abs() < 1e-15);
        assert_eq!(k[0], k[10]);
        assert!(k[5] > k[4] && k[4] > k[3]);
    }
}

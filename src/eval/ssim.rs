//! SSIM of one alpha frame, computed the way scikit-image's
//! `structural_similarity(gaussian_weights=True, sigma=1.5, use_sample_covariance=False,
//! data_range=1)` does, so figures can be compared with papers that used it.

use super::Plane;
use super::filter::{Border, gaussian_kernel, separable};

/// Gaussian window σ.
const SIGMA: f64 = 1.5;
/// Window radius: scikit-image truncates at 3.5 σ, `int(3.5 * 1.5 + 0.5) = 5`, an 11×11 window.
const RADIUS: usize = 5;
const C1: f64 = 0.01 * 0.01; // (K1 · data range)², data range 1
const C2: f64 = 0.03 * 0.03; // (K2 · data range)²

/// Mean SSIM of two equally sized planes.
///
/// Local means, variances and covariance come from the Gaussian window with reflected borders
/// (population, not sample, covariance); the SSIM map is averaged over the pixels at least
/// `RADIUS` px from every border, as scikit-image crops it. scikit-image refuses images with a
/// side under 11 px; here such frames are averaged over all their pixels instead, so a tiny clip
/// still gets a number.
pub(crate) fn ssim(a: &Plane, b: &Plane) -> f64 {
    let (w, h) = (a.w, a.h);
    let k = gaussian_kernel(SIGMA, RADIUS);
    let blur = |v: &[f64]| separable(v, w, h, &k, &k, Border::Reflect);

    let x: Vec<f64> = a.data.iter().map(|&v| f64::from(v)).collect();
    let y: Vec<f64> = b.data.iter().map(|&v| f64::from(v)).collect();
    let ux = blur(&x);
    let uy = blur(&y);
    let uxx = blur(&x.iter().map(|v| v * v).collect::<Vec<_>>());
    let uyy = blur(&y.iter().map(|v| v * v).collect::<Vec<_>>());
    let uxy = blur(&x.iter().zip(&y).map(|(p, q)| p * q).collect::<Vec<_>>());

    let (x0, x1, y0, y1) = if w > 2 * RADIUS && h > 2 * RADIUS {
        (RADIUS, w - RADIUS, RADIUS, h - RADIUS)
    } else {
        (0, w, 0, h)
    };
    let mut sum = 0.0;
    for yy in y0..y1 {
        for xx in x0..x1 {
            let i = yy * w + xx;
            let (mx, my) = (ux[i], uy[i]);
            let vx = uxx[i] - mx * mx;
            let vy = uyy[i] - my * my;
            let vxy = uxy[i] - mx * my;
            let num = (2.0 * mx * my + C1) * (2.0 * vxy + C2);
            let den = (mx * mx + my * my + C1) * (vx + vy + C2);
            sum += num / den;
        }
    }
    let n = (x1 - x0) * (y1 - y0);
    if n == 0 { 1.0 } else { sum / n as f64 }
}

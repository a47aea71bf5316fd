//! Hole pixels of a ground-truth matte: the semi-open areas (gaps between fingers, the inside of
//! a ring, hair strands) where a matting method tends to leave residue. The closing is done with
//! exact Euclidean distance transforms, so its cost does not grow with the disk radius.

use super::Plane;

/// α* at or above this is foreground for the hole mask.
pub(crate) const FOREGROUND: f32 = 0.05;

/// The closing disk radius for a `w × h` canvas: 9·min(w, h)/256 px (18 px at 512).
pub(crate) fn closing_radius(w: usize, h: usize) -> f64 {
    9.0 * w.min(h) as f64 / 256.0
}

/// Hole mask of `gt`: with F = {α* ≥ 0.05}, the pixels of (closing(F) ∪ holes enclosed by F) ∖ F.
///
/// The closing uses the disk {(dx, dy) : dx² + dy² ≤ r²} (r need not be an integer); outside the
/// canvas counts as background for the dilation and as foreground for the erosion (scikit-image's
/// convention), so the closing never grows from the image border. Enclosed holes are the
/// background pixels that a 4-connected flood fill from the border does not reach (scipy's
/// `binary_fill_holes`).
pub(crate) fn hole_mask(gt: &Plane) -> Vec<bool> {
    let (w, h) = (gt.w, gt.h);
    let fg: Vec<bool> = gt.data.iter().map(|&a| a >= FOREGROUND).collect();
    let r = closing_radius(w, h);
    let r2 = r * r;

    // Dilation: within r of some foreground pixel. Erosion of that: farther than r from every
    // pixel outside the dilation.
    let d_fg = squared_distance_to(&fg, w, h);
    let outside_dilation: Vec<bool> = d_fg.iter().map(|&d| d > r2).collect();
    let d_out = squared_distance_to(&outside_dilation, w, h);

    let enclosed = enclosed_background(&fg, w, h);
    (0..w * h)
        .map(|i| !fg[i] && (d_out[i] > r2 || enclosed[i]))
        .collect()
}

/// Background pixels not 4-connected to the canvas border.
fn enclosed_background(fg: &[bool], w: usize, h: usize) -> Vec<bool> {
    let mut reached = vec![false; w * h];
    let mut stack = Vec::new();
    let seed = |i: usize, reached: &mut Vec<bool>, stack: &mut Vec<usize>| {
        if !fg[i] && !reached[i] {
            reached[i] = true;
            stack.push(i);
        }
    };
    for x in 0..w {
        seed(x, &mut reached, &mut stack);
        seed((h - 1) * w + x, &mut reached, &mut stack);
    }
    for y in 0..h {
        seed(y * w, &mut reached, &mut stack);
        seed(y * w + w - 1, &mut reached, &mut stack);
    }
    while let Some(p) = stack.pop() {
        let (x, y) = (p % w, p / w);
        let mut nbrs = [usize::MAX; 4];
        if x > 0 {
            nbrs[0] = p - 1;
        }
        if x + 1 < w {
            nbrs[1] = p + 1;
        }
        if y > 0 {
            nbrs[2] = p - w;
        }
        if y + 1 < h {
            nbrs[3] = p + w;
        }
        for q in nbrs.into_iter().filter(|&q| q != usize::MAX) {
            if !fg[q] && !reached[q] {
                reached[q] = true;
                stack.push(q);
            }
        }
    }
    fg.iter().zip(&reached).map(|(&f, &r)| !f && !r).collect()
}

/// Squared Euclidean distance from every pixel to the nearest `true` pixel of `mask`
/// (`f64::INFINITY` when there is none): Felzenszwalb & Huttenlocher's exact two-pass transform.
pub(crate) fn squared_distance_to(mask: &[bool], w: usize, h: usize) -> Vec<f64> {
    let mut d: Vec<f64> = mask
        .iter()
        .map(|&m| if m { 0.0 } else { f64::INFINITY })
        .collect();
    let n = w.max(h);
    let mut f = vec![0.0; n];
    let mut out = vec![0.0; n];
    let mut v = vec![0usize; n];
    let mut z = vec![0.0; n + 1];
    // Columns, then rows.
    for x in 0..w {
        for y in 0..h {
            f[y] = d[y * w + x];
        }
        edt_1d(&f[..h], &mut out[..h], &mut v, &mut z);
        for y in 0..h {
            d[y * w + x] = out[y];
        }
    }
    for y in 0..h {
        f[..w].copy_from_slice(&d[y * w..(y + 1) * w]);
        edt_1d(&f[..w], &mut out[..w], &mut v, &mut z);
        d[y * w..(y + 1) * w].copy_from_slice(&out[..w]);
    }
    d
}

/// 1-D squared distance transform of the sampled function `f` (lower envelope of the parabolas
/// `(q − p)² + f(p)`). Infinite samples add no parabola, which keeps the arithmetic finite.
fn edt_1d(f: &[f64], out: &mut [f64], v: &mut [usize], z: &mut [f64]) {
    let mut k: usize = 0;
    let mut any = false;
    for (q, &fq) in f.iter().enumerate() {
        if !fq.is_finite() {
            continue;
        }
        if !any {
            any = true;
            v[0] = q;
            z[0] = f64::NEG_INFINITY;
            z[1] = f64::INFINITY;
            continue;
        }
        let qf = q as f64;
        loop {
            let p = v[k];
            let pf = p as f64;
            let s = ((fq + qf * qf) - (f[p] + pf * pf)) / (2.0 * (qf - pf));
            // z[0] is −∞, so this stops at k = 0 at the latest.
            if k > 0 && s <= z[k] {
                k -= 1;
                continue;
            }
            k += 1;
            v[k] = q;
            z[k] = s;
            z[k + 1] = f64::INFINITY;
            break;
        }
    }
    if !any {
        out.fill(f64::INFINITY);
        return;
    }
    let mut k = 0;
    for (q, o) in out.iter_mut().enumerate() {
        let qf = q as f64;
        while z[k + 1] < qf {
            k += 1;
        }
        let p = v[k];
        let dq = qf - p as f64;
        *o = dq * dq + f[p];
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn distance_transform_matches_brute_force() {
        let (w, h) = (13, 9);
        let mask: Vec<bool> = (0..w * h).map(|i| (i * 7919) % 23 == 0).collect();
        let d = squared_distance_to(&mask, w, h);
        for y in 0..h {
            for x in 0..w {
                let mut best = f64::INFINITY;
                for yy in 0..h {
                    for xx in 0..w {
                        if mask[yy * w + xx] {
                            let dx = x as f64 - xx as f64;
                            let dy = y as f64 - yy as f64;
                            best = best.min(dx * dx + dy * dy);
                        }
                    }
                }
                assert_eq!(d[y * w + x], best, "{x},{y}");
            }
        }
        assert!(
            squared_distance_to(&[false; 6], 3, 2)
                .iter()
                .all(|d| d.is_infinite())
        );
    }

    /// Closing by explicit disk dilation then erosion (outside = background for the dilation,
    /// foreground for the erosion), for checking the distance-transform version.
    fn brute_closing(fg: &[bool], w: usize, h: usize, r: f64) -> Vec<bool> {
        let ri = r.floor() as isize;
        let disk: Vec<(isize, isize)> = (-ri..=ri)
            .flat_map(|dy| (-ri..=ri).map(move |dx| (dx, dy)))
            .filter(|&(dx, dy)| ((dx * dx + dy * dy) as f64) <= r * r)
            .collect();
        let at = |m: &[bool], x: isize, y: isize, outside: bool| {
            if x < 0 || y < 0 || x >= w as isize || y >= h as isize {
                outside
            } else {
                m[y as usize * w + x as usize]
            }
        };
        let mut dil = vec![false; w * h];
        for y in 0..h as isize {
            for x in 0..w as isize {
                dil[y as usize * w + x as usize] =
                    disk.iter().any(|&(dx, dy)| at(fg, x + dx, y + dy, false));
            }
        }
        let mut ero = vec![false; w * h];
        for y in 0..h as isize {
            for x in 0..w as isize {
                ero[y as usize * w + x as usize] =
                    disk.iter().all(|&(dx, dy)| at(&dil, x + dx, y + dy, true));
            }
        }
        ero
    }

    #[test]
    fn closing_matches_brute_force() {
        // 57x40: r = 9·40/256 = 1.40625. A comb with 1- and 2-px gaps and a notch.
        let (w, h) = (57, 40);
        let data: Vec<f32> = (0..w * h)
            .map(|i| {
                let (x, y) = (i % w, i / w);
                let tooth = x % 5 < 3 || y > 30;
                let notch = (20..24).contains(&x) && y < 34;
                if y > 5 && tooth && !notch { 1.0 } else { 0.0 }
            })
            .collect();
        let gt = Plane { w, h, data };
        let fg: Vec<bool> = gt.data.iter().map(|&a| a >= FOREGROUND).collect();
        let brute = brute_closing(&fg, w, h, closing_radius(w, h));
        let holes = hole_mask(&gt);
        let enclosed = enclosed_background(&fg, w, h);
        for i in 0..w * h {
            assert_eq!(holes[i], !fg[i] && (brute[i] || enclosed[i]), "pixel {i}");
        }
        // The 2-px gaps between teeth are closed; the 4-px notch is not.
        assert!(holes[20 * w + 3] && holes[20 * w + 4]);
        assert!(!holes[20 * w + 21]);
    }

    #[test]
    fn ring_hole_is_enclosed_even_when_wider_than_the_disk() {
        // 32x32: r = 1.125, far smaller than the ring's 8-px hole, so only the fill finds it.
        let (w, h) = (32, 32);
        let data: Vec<f32> = (0..w * h)
            .map(|i| {
                let (x, y) = ((i % w) as f64 - 15.5, (i / w) as f64 - 15.5);
                let d = (x * x + y * y).sqrt();
                if (4.0..12.0).contains(&d) { 1.0 } else { 0.0 }
            })
            .collect();
        let gt = Plane { w, h, data };
        let holes = hole_mask(&gt);
        let n = holes.iter().filter(|&&b| b).count();
        let inner = gt
            .data
            .iter()
            .enumerate()
            .filter(|&(i, &a)| {
                let (x, y) = ((i % w) as f64 - 15.5, (i / w) as f64 - 15.5);
                a == 0.0 && (x * x + y * y).sqrt() < 4.0
            })
            .count();
        assert_eq!(n, inner);
        assert!(holes[16 * w + 16] && !holes[0]);
    }
}

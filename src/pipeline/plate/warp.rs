//! Sub-pixel camera motion: a zoom about the frame centre plus a translation per frame pair,
//! refined from the integer search's answer. Integer pans and a still camera stay exact
//! (whole-pixel offsets, no resampling), so checkers keep their crisp edges.

/// Where a frame lies on the canvas: frame pixel `p` is at canvas position `scale·p + (x, y)`
/// (canvas positions in the first frame's pixels; the first frame's warp is the identity).
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Warp {
    pub scale: f32,
    pub x: f32,
    pub y: f32,
}

impl Warp {
    pub const IDENTITY: Warp = Warp {
        scale: 1.0,
        x: 0.0,
        y: 0.0,
    };

    /// A whole-pixel offset: frames sample and place without interpolation.
    pub fn is_exact(&self) -> bool {
        self.scale == 1.0 && self.x.fract() == 0.0 && self.y.fract() == 0.0
    }

    /// Canvas position of frame pixel `(px, py)`.
    pub fn to_canvas(&self, px: f32, py: f32) -> (f32, f32) {
        (self.scale * px + self.x, self.scale * py + self.y)
    }

    /// Frame position of canvas position `(cx, cy)`.
    pub fn to_frame(&self, cx: f32, cy: f32) -> (f32, f32) {
        ((cx - self.x) / self.scale, (cy - self.y) / self.scale)
    }

    /// The offset rounded to whole pixels (what a report or a test reads).
    pub fn rounded(&self) -> (i32, i32) {
        (self.x.round() as i32, self.y.round() as i32)
    }

    /// The warp of the next frame, given the pair motion `b(A(p)) ≈ a(p)` from this frame
    /// `a` to the next `b`, with `A(p) = s·(p − m) + m + d` about the frame centre `m`.
    pub fn then(&self, pair: &PairMotion, centre: (f32, f32)) -> Warp {
        let PairMotion { scale: s, dx, dy } = *pair;
        // Next frame's p is this frame's A⁻¹(p) = (p − m − d)/s + m.
        let k = self.scale / s;
        Warp {
            scale: k,
            x: self.x + self.scale * (centre.0 - (centre.0 + dx) / s),
            y: self.y + self.scale * (centre.1 - (centre.1 + dy) / s),
        }
    }
}

/// The motion between two frames: content at `p` in the first is at
/// `scale·(p − m) + m + (dx, dy)` in the second (`m` the frame centre).
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct PairMotion {
    pub scale: f32,
    pub dx: f32,
    pub dy: f32,
}

/// A zoom this close to 1 is no zoom (and keeps whole-pixel pans exact).
const SNAP_SCALE: f32 = 1e-3;
/// A translation this close to a whole pixel is that pixel.
const SNAP_SHIFT: f32 = 0.05;
/// A sample whose smoothed luma changes less than this per pixel (about one 8-bit level) is
/// flat for [`Trim::Displacement`].
const FLAT_GRADIENT: f32 = 0.004;
/// How much lower the textured fit's edge-band error must be for [`refine`] to take it.
const TEXTURED_GAIN: f32 = 0.9;
/// Gauss–Newton rounds of [`refine`].
const ROUNDS: usize = 8;

/// The four pixels around `(x, y)` (clamped to the plane) and their bilinear weights: computed
/// once and applied to each colour plane.
#[derive(Debug, Clone, Copy)]
pub struct Taps {
    at: [usize; 4],
    weight: [f32; 4],
}

impl Taps {
    pub fn new(w: usize, h: usize, x: f32, y: f32) -> Taps {
        let x = x.clamp(0.0, (w - 1) as f32);
        let y = y.clamp(0.0, (h - 1) as f32);
        let (x0, y0) = (x.floor() as usize, y.floor() as usize);
        let (x1, y1) = ((x0 + 1).min(w - 1), (y0 + 1).min(h - 1));
        let (fx, fy) = (x - x0 as f32, y - y0 as f32);
        Taps {
            at: [y0 * w + x0, y0 * w + x1, y1 * w + x0, y1 * w + x1],
            weight: [
                (1.0 - fx) * (1.0 - fy),
                fx * (1.0 - fy),
                (1.0 - fx) * fy,
                fx * fy,
            ],
        }
    }

    pub fn sample(&self, p: &[f32]) -> f32 {
        (0..4).map(|i| p[self.at[i]] * self.weight[i]).sum()
    }
}

/// Which samples each Gauss–Newton round of [`refine_by`] fits.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Trim {
    /// The half with the smallest residuals: flat samples (any motion fits them) fill it when
    /// the background has little texture, and then the integer answer stands.
    Residual,
    /// The half of the textured samples that the current motion puts closest to agreeing
    /// (residual over gradient: a displacement in pixels): texture that a zoom has moved by a
    /// pixel still counts. On a flat background it is the character's edges that remain.
    Displacement,
}

/// Refines the motion from `a` to `b` (one plane each, `w`×`h`) from an integer translation
/// by robust Gauss–Newton on `b(A(p)) − a(p)`, so the character (a minority that moves on its
/// own) does not drag the camera. Two fits ([`Trim`]) compete: the one on textured samples is
/// kept only where it clearly aligns the frame's edge band better (a zoom over a photo the
/// residual fit never sees), else the residual fit stands (a flat background, where the
/// textured samples are the character's). Snaps to no zoom and whole pixels when within
/// `SNAP_*` of them. Both planes must have been through [`smooth`] (once per frame, as each
/// frame is `b` of one pair and `a` of the next).
pub fn refine(a: &[f32], b: &[f32], w: usize, h: usize, start: (i32, i32)) -> PairMotion {
    let (gx, gy) = gradients(b, w, h);
    let plain = refine_by((a, b), (&gx, &gy), w, h, start, Trim::Residual);
    let textured = refine_by((a, b), (&gx, &gy), w, h, start, Trim::Displacement);
    if textured == plain {
        return plain;
    }
    let (e_plain, e_textured) = (
        band_error(a, b, w, h, &plain),
        band_error(a, b, w, h, &textured),
    );
    if e_textured < TEXTURED_GAIN * e_plain {
        textured
    } else {
        plain
    }
}

/// The trimmed mean (lower half) of |b(A(p)) − a(p)| over the samples in the frame's edge
/// band (the shift search's), where the background is the majority.
fn band_error(a: &[f32], b: &[f32], w: usize, h: usize, pair: &PairMotion) -> f32 {
    let m = ((w as f32 - 1.0) / 2.0, (h as f32 - 1.0) / 2.0);
    let band = super::motion_band(w, h);
    let step = if w * h > 128 * 128 { 2 } else { 1 };
    let mut d = Vec::new();
    for y in (0..h).step_by(step) {
        for x in (0..w).step_by(step) {
            if y >= band && y + band < h && x >= band && x + band < w {
                continue;
            }
            let (rx, ry) = (x as f32 - m.0, y as f32 - m.1);
            let (u, v) = (
                pair.scale * rx + m.0 + pair.dx,
                pair.scale * ry + m.1 + pair.dy,
            );
            if u < 0.0 || v < 0.0 || u > (w - 1) as f32 || v > (h - 1) as f32 {
                continue;
            }
            d.push((Taps::new(w, h, u, v).sample(b) - a[y * w + x]).abs());
        }
    }
    if d.is_empty() {
        return f32::INFINITY;
    }
    let keep = (d.len() / 2).max(1);
    d.select_nth_unstable_by(keep - 1, f32::total_cmp);
    d[..keep].iter().sum::<f32>() / keep as f32
}

/// The central-difference gradients of `b` across and down (one-sided at the edges), which
/// both of [`refine`]'s fits sample.
fn gradients(b: &[f32], w: usize, h: usize) -> (Vec<f32>, Vec<f32>) {
    let grad = |dir: (usize, usize)| -> Vec<f32> {
        (0..h)
            .flat_map(|y| (0..w).map(move |x| (x, y)))
            .map(|(x, y)| {
                let (xm, xp) = if dir.0 == 1 {
                    (x.saturating_sub(1), (x + 1).min(w - 1))
                } else {
                    (x, x)
                };
                let (ym, yp) = if dir.1 == 1 {
                    (y.saturating_sub(1), (y + 1).min(h - 1))
                } else {
                    (y, y)
                };
                let span = ((xp - xm) + (yp - ym)).max(1) as f32;
                (b[yp * w + xp] - b[ym * w + xm]) / span
            })
            .collect()
    };
    (grad((1, 0)), grad((0, 1)))
}

fn refine_by(
    (a, b): (&[f32], &[f32]),
    grads: (&[f32], &[f32]),
    w: usize,
    h: usize,
    start: (i32, i32),
    trim: Trim,
) -> PairMotion {
    let m = ((w as f32 - 1.0) / 2.0, (h as f32 - 1.0) / 2.0);
    let (gx, gy) = grads;
    let step = if w * h > 128 * 128 { 2 } else { 1 };
    let mut p = [1.0f32, start.0 as f32, start.1 as f32];
    // (the sample's rank for the trim, its residual, its Jacobian row)
    let mut rows: Vec<(f32, f32, [f32; 3])> = Vec::new();
    for _ in 0..ROUNDS {
        rows.clear();
        for y in (0..h).step_by(step) {
            for x in (0..w).step_by(step) {
                let (rx, ry) = (x as f32 - m.0, y as f32 - m.1);
                let (u, v) = (p[0] * rx + m.0 + p[1], p[0] * ry + m.1 + p[2]);
                if u < 0.0 || v < 0.0 || u > (w - 1) as f32 || v > (h - 1) as f32 {
                    continue;
                }
                let taps = Taps::new(w, h, u, v);
                let r = taps.sample(b) - a[y * w + x];
                let (g0, g1) = (taps.sample(gx), taps.sample(gy));
                let rank = match trim {
                    Trim::Residual => r.abs(),
                    Trim::Displacement => {
                        let g = g0.hypot(g1);
                        if g < FLAT_GRADIENT {
                            continue;
                        }
                        r.abs() / g
                    }
                };
                rows.push((rank, r, [g0 * rx + g1 * ry, g0, g1]));
            }
        }
        if rows.len() < 16 {
            break;
        }
        let keep = rows.len() / 2;
        rows.select_nth_unstable_by(keep, |a, b| a.0.total_cmp(&b.0));
        let mut jtj = [[0f64; 3]; 3];
        let mut jtr = [0f64; 3];
        for (_, r, j) in &rows[..keep] {
            for i in 0..3 {
                jtr[i] += f64::from(j[i]) * f64::from(*r);
                for k in 0..3 {
                    jtj[i][k] += f64::from(j[i]) * f64::from(j[k]);
                }
            }
        }
        let Some(delta) = solve3(jtj, jtr) else {
            break;
        };
        for i in 0..3 {
            p[i] -= delta[i] as f32;
        }
        // A step outside the search's reach is a diverging fit: keep the integer answer.
        if (p[0] - 1.0).abs() > 0.1
            || (p[1] - start.0 as f32).abs() > 2.0
            || (p[2] - start.1 as f32).abs() > 2.0
        {
            p = [1.0, start.0 as f32, start.1 as f32];
            break;
        }
        if delta[0].abs() < 1e-5 && delta[1].abs() < 1e-3 && delta[2].abs() < 1e-3 {
            break;
        }
    }
    let snap = |v: f32| {
        if (v - v.round()).abs() <= SNAP_SHIFT {
            v.round()
        } else {
            v
        }
    };
    let scale = if (p[0] - 1.0).abs() <= SNAP_SCALE {
        1.0
    } else {
        p[0]
    };
    PairMotion {
        scale,
        dx: snap(p[1]),
        dy: snap(p[2]),
    }
}

/// A plane blurred by the binomial [1 2 1]/4 filter across and down (edges clamped), as
/// [`refine`] reads it. Interpolation smooths what it samples between pixels and not at whole
/// ones, which pulls a fit towards whole-pixel motion and no zoom; pre-smoothed frames make
/// that small.
pub fn smooth(p: &[f32], w: usize, h: usize) -> Vec<f32> {
    let pass = |src: &[f32], across: bool| -> Vec<f32> {
        (0..w * h)
            .map(|i| {
                let (x, y) = (i % w, i / w);
                let at = |d: isize| {
                    let (xx, yy) = if across {
                        ((x as isize + d).clamp(0, w as isize - 1) as usize, y)
                    } else {
                        (x, (y as isize + d).clamp(0, h as isize - 1) as usize)
                    };
                    src[yy * w + xx]
                };
                0.25 * at(-1) + 0.5 * at(0) + 0.25 * at(1)
            })
            .collect()
    };
    pass(&pass(p, true), false)
}

/// Solves a 3×3 system by Cramer's rule; `None` when it is singular (a flat frame).
fn solve3(a: [[f64; 3]; 3], b: [f64; 3]) -> Option<[f64; 3]> {
    let det = |m: &[[f64; 3]; 3]| {
        m[0][0] * (m[1][1] * m[2][2] - m[1][2] * m[2][1])
            - m[0][1] * (m[1][0] * m[2][2] - m[1][2] * m[2][0])
            + m[0][2] * (m[1][0] * m[2][1] - m[1][1] * m[2][0])
    };
    let d = det(&a);
    let scale: f64 = a.iter().flatten().map(|v| v.abs()).sum::<f64>().max(1e-30);
    if d.abs() <= 1e-12 * scale.powi(3) {
        return None;
    }
    Some(std::array::from_fn(|i| {
        let mut m = a;
        for r in 0..3 {
            m[r][i] = b[r];
        }
        det(&m) / d
    }))
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Smooth texture with detail at several scales.
    fn scene(x: f32, y: f32) -> f32 {
        0.5 + 0.2 * (x / 7.0).sin() * (y / 9.0).cos() + 0.15 * ((x + 2.0 * y) / 13.0).sin()
    }

    #[test]
    fn refine_finds_a_zoom_and_a_subpixel_pan() {
        let (w, h) = (96, 80);
        let m = ((w as f32 - 1.0) / 2.0, (h as f32 - 1.0) / 2.0);
        let truth = PairMotion {
            scale: 1.02,
            dx: 1.3,
            dy: -0.6,
        };
        let a: Vec<f32> = (0..w * h)
            .map(|i| scene((i % w) as f32, (i / w) as f32))
            .collect();
        // b(A(p)) = a(p): b at q shows the scene at A⁻¹(q).
        let b: Vec<f32> = (0..w * h)
            .map(|i| {
                let (qx, qy) = ((i % w) as f32, (i / w) as f32);
                let px = (qx - m.0 - truth.dx) / truth.scale + m.0;
                let py = (qy - m.1 - truth.dy) / truth.scale + m.1;
                scene(px, py)
            })
            .collect();
        let got = refine(&smooth(&a, w, h), &smooth(&b, w, h), w, h, (1, -1));
        assert!((got.scale - truth.scale).abs() < 2e-3, "{got:?}");
        assert!((got.dx - truth.dx).abs() < 0.05, "{got:?}");
        assert!((got.dy - truth.dy).abs() < 0.05, "{got:?}");
    }

    #[test]
    fn a_character_moving_over_a_flat_background_is_not_the_camera() {
        let (w, h) = (96, 96);
        // A textured disc at the middle moves (2, 1) px; the background is one flat colour.
        let frame = |ox: f32, oy: f32| -> Vec<f32> {
            (0..w * h)
                .map(|i| {
                    let (x, y) = ((i % w) as f32 - ox, (i / w) as f32 - oy);
                    let (dx, dy) = (x - 47.5, y - 47.5);
                    if dx * dx + dy * dy <= 20.0 * 20.0 {
                        scene(x, y)
                    } else {
                        0.3
                    }
                })
                .collect()
        };
        let (a, b) = (
            smooth(&frame(0.0, 0.0), w, h),
            smooth(&frame(2.0, 1.0), w, h),
        );
        // The textured samples are the character's: that fit alone follows it...
        let (gx, gy) = gradients(&b, w, h);
        let textured = refine_by((&a, &b), (&gx, &gy), w, h, (0, 0), Trim::Displacement);
        assert!(textured.dx > 0.5, "{textured:?}");
        // ...and the edge band, flat under any motion, gives it no reason to win.
        let got = refine(&a, &b, w, h, (0, 0));
        assert_eq!(
            got,
            PairMotion {
                scale: 1.0,
                dx: 0.0,
                dy: 0.0
            }
        );
    }

    #[test]
    fn whole_pixel_motion_stays_exact_and_chains() {
        let (w, h) = (64, 64);
        let a: Vec<f32> = (0..w * h)
            .map(|i| scene((i % w) as f32, (i / w) as f32))
            .collect();
        let b: Vec<f32> = (0..w * h)
            .map(|i| scene((i % w) as f32 - 3.0, (i / w) as f32))
            .collect();
        let pair = refine(&smooth(&a, w, h), &smooth(&b, w, h), w, h, (3, 0));
        assert_eq!(
            pair,
            PairMotion {
                scale: 1.0,
                dx: 3.0,
                dy: 0.0
            }
        );
        let next = Warp::IDENTITY.then(&pair, (31.5, 31.5));
        assert!(next.is_exact());
        assert_eq!(next.rounded(), (-3, 0));
        // A zoom then maps the centre to itself.
        let zoom = Warp::IDENTITY.then(
            &PairMotion {
                scale: 1.1,
                dx: 0.0,
                dy: 0.0,
            },
            (31.5, 31.5),
        );
        let (cx, cy) = zoom.to_canvas(31.5, 31.5);
        assert!((cx - 31.5).abs() < 1e-4 && (cy - 31.5).abs() < 1e-4);
        let (fx, fy) = zoom.to_frame(cx, cy);
        assert!((fx - 31.5).abs() < 1e-4 && (fy - 31.5).abs() < 1e-4);
    }
}

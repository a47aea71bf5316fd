//! A per-pixel end for the key's ramp, read from the pixel's neighbourhood.
//!
//! The plate prior maps a pixel's distance from the plate to alpha with one ramp per frame. A
//! sticker part whose colour sits close to the background's (lavender on pink, a blue barrel on
//! blue) then comes out half transparent all over, although a composite `α·F + (1 − α)·B`
//! that stays the same over a whole region is almost always an opaque part: soft alpha lives
//! at edges, where the colour runs from the background's towards the part's. So, where the
//! plate is trusted, a pixel's ramp ends at the farthest its neighbours reach *in its own
//! colour direction* (the part it belongs to) instead of at the frame's end. Isolated pixels
//! (noise, dither) have no such neighbours and keep the frame's ramp.

use serde::{Deserialize, Serialize};

/// How the local ramp end is read (see the module doc).
#[derive(Debug, Clone, Copy, PartialEq, Serialize, Deserialize)]
pub struct LocalRamp {
    /// Half the side of the square window, in pixels.
    pub radius: usize,
    /// A neighbour lies in the pixel's colour direction when its difference from the plate
    /// strays across that direction by at most this share of how far it reaches along it.
    pub across: f32,
    /// Share of the window that must lie in the pixel's direction (at least half as far from
    /// the plate) before the local end applies.
    pub support: f32,
    /// The local end is never closer than this to the ramp's start: a pixel just past the
    /// noise floor stays faint.
    pub min_span: f32,
    /// Plate confidence where the local end starts to apply, and where it applies fully: an
    /// inpainted or rough plate is wrong in broad smooth patches, which would read as parts.
    pub conf_lo: f32,
    pub conf_hi: f32,
    /// How far past the ramp's start a pixel must be to belong to a part: at least `onset`,
    /// and at least `onset_noise` × the start (which follows the border's noise): a
    /// compressed background's errors inside a hole are flat, sharp-edged regions too.
    pub onset: f32,
    /// (Files written before it existed read 0.)
    #[serde(default)]
    pub onset_noise: f32,
    /// How many pixels past a part's edge its colour may continue, fainter, before the edge
    /// counts as a fade.
    pub depth: usize,
    /// A region is a part when at most this share of its edge fades.
    pub soft_share: f32,
    /// A region is a part when its distances from the plate spread (standard deviation) by at
    /// most this share of their mean.
    pub flat: f32,
}

impl Default for LocalRamp {
    /// Chosen on training-split clips (`ildiff train validate --tuning`, seeds 11 and 12, GIF
    /// and H.264-like input), never on the validation clips; the model card has the figures.
    fn default() -> Self {
        Self {
            radius: 2,
            across: 0.3,
            support: 0.3,
            min_span: 0.05,
            conf_lo: 0.6,
            conf_hi: 0.9,
            onset: 0.02,
            onset_noise: 1.0,
            depth: 4,
            soft_share: 0.15,
            flat: 0.35,
        }
    }
}

impl LocalRamp {
    /// Whether the numbers make sense (a config read from a file is checked before use; a
    /// huge window would make every matte crawl).
    pub fn is_valid(&self) -> bool {
        let shares = [
            self.across,
            self.support,
            self.min_span,
            self.onset,
            self.onset_noise,
            self.soft_share,
            self.flat,
        ];
        (1..=8).contains(&self.radius)
            && (1..=16).contains(&self.depth)
            && shares.iter().all(|x| x.is_finite() && *x >= 0.0)
            && self.conf_lo.is_finite()
            && self.conf_hi.is_finite()
            && self.conf_lo < self.conf_hi
    }

    /// Keyed alpha of one `w`×`h` frame: `diff` holds the three planes of pixel − plate,
    /// `conf` the plate's confidence, `(lo, hi)` the frame's ramp. Never below the frame
    /// ramp's alpha, since the local end lies between the start and the frame's end.
    pub fn alpha(
        &self,
        diff: [&[f32]; 3],
        conf: &[f32],
        w: usize,
        h: usize,
        (lo, hi): (f32, f32),
    ) -> Vec<f32> {
        let n = w * h;
        let dist: Vec<f32> = (0..n)
            .map(|k| (diff[0][k].powi(2) + diff[1][k].powi(2) + diff[2][k].powi(2)).sqrt())
            .collect();
        let cos_min = 1.0 / (1.0 + self.across * self.across).sqrt();
        // Same colour direction from the plate (both pixels off it).
        let same = |p: usize, q: usize| {
            let dot = diff[0][p] * diff[0][q] + diff[1][p] * diff[1][q] + diff[2][p] * diff[2][q];
            dot >= cos_min * dist[p] * dist[q] && dist[q] > lo
        };
        let parts = self.parts(&dist, w, h, lo, &same);
        let r = self.radius as isize;
        let floor = (lo + self.min_span).min(hi);
        let mut out = vec![0f32; n];
        for y in 0..h {
            for x in 0..w {
                let k = y * w + x;
                let d = dist[k];
                if d <= lo {
                    continue;
                }
                let g = ((conf[k] - self.conf_lo) / (self.conf_hi - self.conf_lo).max(1e-6))
                    .clamp(0.0, 1.0);
                let mut end = hi;
                if g > 0.0 {
                    let u = [diff[0][k] / d, diff[1][k] / d, diff[2][k] / d];
                    // A pixel of an accepted part reaches at least itself; a rim pixel only
                    // as far as an accepted part beside it.
                    let mut reach: f32 = if parts[k] { d } else { 0.0 };
                    let (mut along, mut seen) = (0usize, 0usize);
                    let (x0, x1) = (
                        (x as isize - r).max(0),
                        (x as isize + r).min(w as isize - 1),
                    );
                    let (y0, y1) = (
                        (y as isize - r).max(0),
                        (y as isize + r).min(h as isize - 1),
                    );
                    for qy in y0..=y1 {
                        for qx in x0..=x1 {
                            let q = qy as usize * w + qx as usize;
                            seen += 1;
                            let v = [diff[0][q], diff[1][q], diff[2][q]];
                            let s = v[0] * u[0] + v[1] * u[1] + v[2] * u[2];
                            if s < 0.5 * d {
                                continue;
                            }
                            let cross2 = (dist[q] * dist[q] - s * s).max(0.0);
                            if cross2 <= (self.across * s).powi(2) {
                                along += 1;
                                if parts[q] {
                                    reach = reach.max(s);
                                }
                            }
                        }
                    }
                    if reach >= d && along as f32 >= self.support * seen as f32 {
                        let local = reach.clamp(floor, hi);
                        end = hi - g * (hi - local);
                    }
                }
                out[k] = ((d - lo) / (end - lo).max(1e-6)).clamp(0.0, 1.0);
            }
        }
        out
    }

    /// Which pixels belong to a *part*: a region past `lo + onset` of one colour direction
    /// whose edge is sharp. A plate's error (a gradient's plateau the fit missed) is a region
    /// too, but it fades into the background over many pixels; a sticker part ends within an
    /// anti-aliased pixel or two, at the background or at another part.
    fn parts(
        &self,
        dist: &[f32],
        w: usize,
        h: usize,
        lo: f32,
        same: &impl Fn(usize, usize) -> bool,
    ) -> Vec<bool> {
        let n = w * h;
        let onset = self.onset.max(self.onset_noise * lo);
        let inside = |k: usize| dist[k] > lo + onset;
        let mut parent: Vec<u32> = (0..n as u32).collect();
        fn find(parent: &mut [u32], mut k: u32) -> u32 {
            while parent[k as usize] != k {
                parent[k as usize] = parent[parent[k as usize] as usize];
                k = parent[k as usize];
            }
            k
        }
        for y in 0..h {
            for x in 0..w {
                let k = y * w + x;
                if !inside(k) {
                    continue;
                }
                for q in [(x + 1 < w).then(|| k + 1), (y + 1 < h).then(|| k + w)]
                    .into_iter()
                    .flatten()
                {
                    if inside(q) && same(k, q) {
                        let (a, b) = (find(&mut parent, k as u32), find(&mut parent, q as u32));
                        parent[a.max(b) as usize] = a.min(b);
                    }
                }
            }
        }
        let root: Vec<u32> = (0..n as u32).map(|k| find(&mut parent, k)).collect();
        // Per part: edge steps, and those that fade (still the part's colour, fainter, `depth`
        // pixels out).
        let mut edges = vec![0u32; n];
        let mut soft = vec![0u32; n];
        // Per part: count, sum and sum of squares of the distances (a part is one colour; a
        // glow or a compressed gradient's blocks are not).
        let mut moments = vec![[0f64; 3]; n];
        let depth = self.depth as isize;
        for y in 0..h as isize {
            for x in 0..w as isize {
                let k = (y * w as isize + x) as usize;
                if !inside(k) {
                    continue;
                }
                let m = &mut moments[root[k] as usize];
                let d = f64::from(dist[k]);
                m[0] += 1.0;
                m[1] += d;
                m[2] += d * d;
                for (dx, dy) in [(1, 0), (-1, 0), (0, 1), (0, -1)] {
                    let at = |j: isize| {
                        let (qx, qy) = (x + j * dx, y + j * dy);
                        (qx >= 0 && qy >= 0 && qx < w as isize && qy < h as isize)
                            .then(|| (qy * w as isize + qx) as usize)
                    };
                    match at(1) {
                        Some(q) if inside(q) && root[q] == root[k] => continue,
                        None => continue,
                        _ => {}
                    }
                    let mut fades = true;
                    for j in 1..=depth {
                        match at(j) {
                            // The frame cuts it: says nothing.
                            None => {
                                fades = false;
                                break;
                            }
                            Some(q) if root[q] == root[k] || !same(k, q) => {
                                fades = false;
                                break;
                            }
                            Some(_) => {}
                        }
                    }
                    edges[root[k] as usize] += 1;
                    soft[root[k] as usize] += u32::from(fades);
                }
            }
        }
        (0..n)
            .map(|k| {
                let r = root[k] as usize;
                let [c, s1, s2] = moments[r];
                let mean = s1 / c.max(1.0);
                let spread = (s2 / c.max(1.0) - mean * mean).max(0.0).sqrt();
                inside(k)
                    && edges[r] > 0
                    && soft[r] as f32 <= self.soft_share * edges[r] as f32
                    && spread <= f64::from(self.flat) * mean
            })
            .collect()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A `w`×`h` frame over a black plate: `part` (a colour) inside `[x0, x1)`, with `edge`
    /// of it in the columns just outside on both sides, the rest background.
    fn frame(w: usize, h: usize, part: [f32; 3], x0: usize, x1: usize, edge: f32) -> Vec<f32> {
        let mut v = vec![0f32; 3 * w * h];
        for y in 0..h {
            for x in 0..w {
                let a = if (x0..x1).contains(&x) {
                    1.0
                } else if x + 1 == x0 || x == x1 {
                    edge
                } else {
                    0.0
                };
                for c in 0..3 {
                    v[c * w * h + y * w + x] = a * part[c];
                }
            }
        }
        v
    }

    fn planes(v: &[f32]) -> [&[f32]; 3] {
        let n = v.len() / 3;
        [&v[..n], &v[n..2 * n], &v[2 * n..]]
    }

    #[test]
    fn a_part_close_to_the_background_is_opaque_inside_and_soft_at_its_edge() {
        let (w, h) = (16, 8);
        // Distance 0.15 from the plate; the frame's ramp 0.03..0.3 keys it 44 % opaque.
        let part = [0.15, 0.0, 0.0];
        let v = frame(w, h, part, 5, 11, 0.5);
        let conf = vec![1.0; w * h];
        let a = LocalRamp::default().alpha(planes(&v), &conf, w, h, (0.03, 0.3));
        let at = |x: usize| a[4 * w + x];
        assert!((at(7) - 1.0).abs() < 1e-5, "inside: {}", at(7));
        // The half-covered edge pixel ramps against its part's colour, not the frame's end.
        let edge = (0.075 - 0.03) / (0.15 - 0.03);
        assert!((at(4) - edge).abs() < 1e-5, "edge: {}", at(4));
        assert!((at(11) - edge).abs() < 1e-5, "edge: {}", at(11));
        assert_eq!(at(1), 0.0);
        // Untrusted plate: the frame's ramp, unchanged.
        let low = vec![0.2; w * h];
        let b = LocalRamp::default().alpha(planes(&v), &low, w, h, (0.03, 0.3));
        assert!(
            (b[4 * w + 7] - (0.15 - 0.03) / 0.27).abs() < 1e-5,
            "{}",
            b[4 * w + 7]
        );
    }

    #[test]
    fn isolated_noise_and_pixels_at_the_noise_floor_stay_faint() {
        let (w, h) = (15, 15);
        let n = w * h;
        let mut v = vec![0f32; 3 * n];
        // One dither pixel at 0.06 among background: too few neighbours share its direction.
        v[4 * w + 4] = 0.06;
        // A neighbour in another direction does not count either.
        v[n + 4 * w + 5] = 0.08;
        // A faint uniform 5×5 part just past the start keeps `min_span` of ramp.
        for y in 8..13 {
            for x in 8..13 {
                v[y * w + x] = 0.07;
            }
        }
        let conf = vec![1.0; n];
        let a = LocalRamp::default().alpha(planes(&v), &conf, w, h, (0.03, 0.3));
        assert!(
            (a[4 * w + 4] - 0.03 / 0.27).abs() < 1e-5,
            "{}",
            a[4 * w + 4]
        );
        assert!(
            (a[10 * w + 10] - 0.04 / 0.05).abs() < 1e-5,
            "{}",
            a[10 * w + 10]
        );
        // Over a noisy background (the ramp starts at 0.1) a region 0.05 past the start is
        // within the noise's reach: a compressed plate's error, not a part.
        for y in 8..13 {
            for x in 8..13 {
                v[y * w + x] = 0.15;
            }
        }
        let noisy = LocalRamp::default().alpha(planes(&v), &conf, w, h, (0.1, 0.3));
        assert!(
            (noisy[10 * w + 10] - 0.25).abs() < 1e-5,
            "{}",
            noisy[10 * w + 10]
        );
        let trusting = LocalRamp {
            onset_noise: 0.0,
            ..LocalRamp::default()
        };
        let b = trusting.alpha(planes(&v), &conf, w, h, (0.1, 0.3));
        assert!((b[10 * w + 10] - 1.0).abs() < 1e-5, "{}", b[10 * w + 10]);
    }

    #[test]
    fn a_plate_error_that_fades_out_keeps_the_frames_ramp() {
        // A gradient's plateau the fit missed: a cone of distance that fades out by 0.004 a
        // pixel, no edge.
        let (w, h) = (60, 60);
        let n = w * h;
        let bump = |x: usize, y: usize| {
            let r = ((x as f32 - 30.0).powi(2) + (y as f32 - 30.0).powi(2)).sqrt();
            (0.1 - 0.0036 * r).max(0.0)
        };
        let mut v = vec![0f32; 3 * n];
        for y in 0..h {
            for x in 0..w {
                v[y * w + x] = bump(x, y);
                v[n + y * w + x] = 0.5 * bump(x, y);
            }
        }
        let conf = vec![1.0; n];
        let a = LocalRamp::default().alpha(planes(&v), &conf, w, h, (0.03, 0.3));
        for k in 0..n {
            let d = (v[k].powi(2) + v[n + k].powi(2)).sqrt();
            let frame = ((d - 0.03) / 0.27).clamp(0.0, 1.0);
            assert!(
                (a[k] - frame).abs() < 1e-6,
                "pixel {k}: {} vs {frame}",
                a[k]
            );
        }
        // The same bump cut off sharply (a part with a shaded fill) is a part.
        for y in 0..h {
            for x in 0..w {
                if bump(x, y) < 0.09 {
                    v[y * w + x] = 0.0;
                    v[n + y * w + x] = 0.0;
                }
            }
        }
        let b = LocalRamp::default().alpha(planes(&v), &conf, w, h, (0.03, 0.3));
        assert!((b[30 * w + 30] - 1.0).abs() < 1e-5, "{}", b[30 * w + 30]);
    }

    #[test]
    fn a_config_with_a_huge_window_or_reversed_confidence_is_refused() {
        assert!(LocalRamp::default().is_valid());
        let big = LocalRamp {
            radius: 100,
            ..LocalRamp::default()
        };
        assert!(!big.is_valid());
        let reversed = LocalRamp {
            conf_lo: 0.9,
            conf_hi: 0.6,
            ..LocalRamp::default()
        };
        assert!(!reversed.is_valid());
        let nan = LocalRamp {
            flat: f32::NAN,
            ..LocalRamp::default()
        };
        assert!(!nan.is_valid());
    }

    #[test]
    fn a_darker_neighbour_of_another_hue_does_not_lower_a_parts_alpha() {
        // Lavender beside a black outline, keyed against pink: the outline lies in another
        // direction, so the lavender's end stays its own and it stays opaque.
        let (w, h) = (12, 6);
        let n = w * h;
        let pink = [0.78, 0.6, 0.6];
        let mut v = vec![0f32; 3 * n];
        for y in 0..h {
            for x in 0..w {
                let c = if x < 6 {
                    [0.7, 0.6, 0.8]
                } else {
                    [0.0, 0.0, 0.0]
                };
                for ch in 0..3 {
                    v[ch * n + y * w + x] = c[ch] - pink[ch];
                }
            }
        }
        let conf = vec![1.0; n];
        let a = LocalRamp::default().alpha(planes(&v), &conf, w, h, (0.03, 0.3));
        assert!((a[3 * w + 5] - 1.0).abs() < 1e-5, "{}", a[3 * w + 5]);
        assert!((a[3 * w + 6] - 1.0).abs() < 1e-5, "{}", a[3 * w + 6]);
    }
}

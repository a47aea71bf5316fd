//! Procedural animated stickers with exact ground-truth alpha, for training and evaluating the
//! matting decoder where it fails most (METHOD.md §1): *semi-open areas* — the inside of rings,
//! chain links and letter counters, the gap between an arm and the body, mug handles, lattice
//! cells, hair — and soft or translucent parts (glow, shadows, motion streaks, wings).
//!
//! Every shape is a signed distance function in the subject's own coordinates (about [-1, 1]²,
//! y down); a pixel's coverage is `clamp(0.5 − d/soft, 0, 1)` with `d` in canvas pixels and
//! `soft` = 1 px for an anti-aliased hard edge or wider for soft parts. Parts are layered
//! back to front with premultiplied "over", so the result is an exact straight-alpha RGBA frame.
//! Motion is a smooth function of the loop phase (a global transform plus per-subject knobs such
//! as arm swing), so alpha is coherent from frame to frame.
//!
//! Everything is a pure function of the seed (own SplitMix64 generator, no thread-dependent
//! order), so a clip can be regenerated from its `meta.json` instead of being stored.

use std::f32::consts::{PI, TAU};

use image::{Rgba, RgbaImage};
use serde::Serialize;

use crate::error::{Error, Result};
use crate::media::{Animation, Delay, Frame, LoopCount};

/// SplitMix64: tiny, fast and good enough for procedural content; deterministic everywhere.
#[derive(Debug, Clone)]
pub struct Rng(u64);

impl Rng {
    pub fn new(seed: u64) -> Self {
        Rng(seed)
    }

    pub fn next_u64(&mut self) -> u64 {
        self.0 = self.0.wrapping_add(0x9E37_79B9_7F4A_7C15);
        finalize(self.0)
    }

    /// Uniform in [0, 1).
    pub fn f32(&mut self) -> f32 {
        (self.next_u64() >> 40) as f32 / (1u64 << 24) as f32
    }

    /// Uniform in [lo, hi).
    pub fn range(&mut self, lo: f32, hi: f32) -> f32 {
        lo + (hi - lo) * self.f32()
    }

    /// Uniform integer in 0..n (0 when n is 0).
    pub fn below(&mut self, n: usize) -> usize {
        if n == 0 {
            0
        } else {
            (self.next_u64() % n as u64) as usize
        }
    }

    pub fn chance(&mut self, p: f32) -> bool {
        self.f32() < p
    }

    /// -1 or +1.
    pub fn sign(&mut self) -> f32 {
        if self.chance(0.5) { 1.0 } else { -1.0 }
    }
}

/// The SplitMix64 output function: a good 64-bit mixer.
fn finalize(mut z: u64) -> u64 {
    z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
    z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
    z ^ (z >> 31)
}

/// Combines a seed with a stream tag, so independent choices (shape, background, degradation)
/// draw from unrelated streams of the same seed.
pub fn mix(seed: u64, tag: u64) -> u64 {
    finalize(seed ^ finalize(tag.wrapping_add(0x632B_E59B_D9B4_E019)))
}

/// Lattice value noise in [0, 1] (smooth, deterministic from `seed`).
pub fn value_noise(seed: u64, x: f32, y: f32) -> f32 {
    let (x0, y0) = (x.floor(), y.floor());
    let (fx, fy) = (x - x0, y - y0);
    let (sx, sy) = (fx * fx * (3.0 - 2.0 * fx), fy * fy * (3.0 - 2.0 * fy));
    let (ix, iy) = (x0 as i64, y0 as i64);
    let h = |i: i64, j: i64| -> f32 {
        let k = mix(
            seed,
            (i as u64).wrapping_mul(0x9E37_79B1) ^ (j as u64).rotate_left(32),
        );
        (k >> 40) as f32 / (1u64 << 24) as f32
    };
    let a = h(ix, iy) + (h(ix + 1, iy) - h(ix, iy)) * sx;
    let b = h(ix, iy + 1) + (h(ix + 1, iy + 1) - h(ix, iy + 1)) * sx;
    a + (b - a) * sy
}

/// Multi-octave value noise in [0, 1].
pub fn fbm(seed: u64, x: f32, y: f32, octaves: u32) -> f32 {
    let (mut sum, mut amp, mut norm, mut f) = (0.0, 1.0, 0.0, 1.0);
    for o in 0..octaves {
        sum += amp * value_noise(mix(seed, u64::from(o)), x * f, y * f);
        norm += amp;
        amp *= 0.5;
        f *= 2.0;
    }
    sum / norm
}

/// Frame size, length and rate of a generated clip.
#[derive(Debug, Clone, Copy, PartialEq, Serialize)]
pub struct SynthConfig {
    pub width: u32,
    pub height: u32,
    pub frames: u32,
    pub fps: f64,
}

impl Default for SynthConfig {
    fn default() -> Self {
        SynthConfig {
            width: 384,
            height: 384,
            frames: 16,
            fps: 12.0,
        }
    }
}

impl SynthConfig {
    /// Checks the canvas, frame count and rate are in range.
    pub fn validate(&self) -> Result<()> {
        if !(16..=4096).contains(&self.width) || !(16..=4096).contains(&self.height) {
            return Err(Error::Invalid(format!(
                "synthetic canvas {}x{} is outside 16..=4096 per side",
                self.width, self.height
            )));
        }
        if !(1..=1024).contains(&self.frames) {
            return Err(Error::Invalid(format!(
                "synthetic clips need 1..=1024 frames, got {}",
                self.frames
            )));
        }
        if !(self.fps.is_finite() && self.fps > 0.0 && self.fps <= 120.0) {
            return Err(Error::Invalid(format!(
                "synthetic frame rate {} is not in (0, 120]",
                self.fps
            )));
        }
        Ok(())
    }
}

/// What the sticker shows; each kind stresses a different semi-open structure.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum Subject {
    /// A donut with sprinkles: one enclosed hole.
    Ring,
    /// Figure-8 or a row of interlocking links: several holes.
    Chain,
    /// Body, head and limbs whose gaps to the body open and close; whiskers and an antenna.
    Character,
    /// A mug with a handle (a partly covered hole) and translucent steam strands.
    Mug,
    /// Block letters with counters (O, A, B, D, P, R, 8).
    Lettering,
    /// A grid or a spoked wheel: many holes.
    Lattice,
    /// A ball with many 1–2 px hair strands.
    Hairy,
    /// A bug with translucent flapping wings and thin antennae.
    Winged,
}

impl Subject {
    pub const ALL: [Subject; 8] = [
        Subject::Ring,
        Subject::Chain,
        Subject::Character,
        Subject::Mug,
        Subject::Lettering,
        Subject::Lattice,
        Subject::Hairy,
        Subject::Winged,
    ];
}

/// How the subject moves over the loop.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum Motion {
    Bounce,
    Spin,
    SquashStretch,
    Wave,
    Walk,
    /// Shape parameters interpolate between two settings (e.g. a hole opening and closing).
    Morph,
    /// Scale breathing with a pulsing glow.
    Pulse,
}

impl Motion {
    pub const ALL: [Motion; 7] = [
        Motion::Bounce,
        Motion::Spin,
        Motion::SquashStretch,
        Motion::Wave,
        Motion::Walk,
        Motion::Morph,
        Motion::Pulse,
    ];
}

/// Everything that defines a clip besides the canvas; `meta.json` records it.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct ClipSpec {
    pub subject: Subject,
    pub motion: Motion,
    /// A soft halo behind the subject.
    pub glow: bool,
    /// A soft ground or drop shadow.
    pub shadow: bool,
    /// Translucent motion-blur streaks behind the subject.
    pub streaks: bool,
    /// The letters drawn (for [`Subject::Lettering`]).
    pub text: Option<String>,
    /// Seed of the shape, colour and texture choices.
    pub style_seed: u64,
}

impl ClipSpec {
    /// The spec a seed gives: subject, motion and extras drawn uniformly-ish.
    pub fn from_seed(seed: u64) -> ClipSpec {
        let mut rng = Rng::new(mix(seed, 1));
        let subject = Subject::ALL[rng.below(Subject::ALL.len())];
        let motion = Motion::ALL[rng.below(Motion::ALL.len())];
        let glow = motion == Motion::Pulse || rng.chance(0.25);
        let shadow = rng.chance(0.4);
        let streaks = matches!(motion, Motion::Bounce | Motion::Walk) && rng.chance(0.35);
        let text = (subject == Subject::Lettering).then(|| {
            const LETTERS: &[u8] = b"OABDPR8";
            let n = 1 + rng.below(3);
            (0..n)
                .map(|_| LETTERS[rng.below(LETTERS.len())] as char)
                .collect()
        });
        ClipSpec {
            subject,
            motion,
            glow,
            shadow,
            streaks,
            text,
            style_seed: mix(seed, 2),
        }
    }

    /// A plain spec (no extras) for a chosen subject and motion.
    pub fn plain(subject: Subject, motion: Motion, seed: u64) -> ClipSpec {
        ClipSpec {
            subject,
            motion,
            glow: false,
            shadow: false,
            streaks: false,
            text: (subject == Subject::Lettering).then(|| "OB".to_string()),
            style_seed: mix(seed, 2),
        }
    }
}

/// The ground-truth clip the seed gives (straight alpha, looping, `cfg.fps`).
pub fn synth_clip(seed: u64, cfg: &SynthConfig) -> Result<Animation> {
    render(&ClipSpec::from_seed(seed), cfg)
}

/// Renders a spec. Deterministic: the same spec and config give identical bytes.
pub fn render(spec: &ClipSpec, cfg: &SynthConfig) -> Result<Animation> {
    cfg.validate()?;
    let style = Style::new(spec);
    let delay = Delay::from_fps(cfg.fps);
    let frames = (0..cfg.frames)
        .map(|i| {
            let t = i as f32 / cfg.frames as f32;
            let scene = style.scene(spec, cfg, t);
            Frame::new(scene.rasterize(cfg.width, cfg.height), delay)
        })
        .collect();
    Animation::new(cfg.width, cfg.height, frames, LoopCount::Infinite)
}

// ---------------------------------------------------------------------------------------------
// Geometry

type V = [f32; 2];

fn sub(a: V, b: V) -> V {
    [a[0] - b[0], a[1] - b[1]]
}

fn dot(a: V, b: V) -> f32 {
    a[0] * b[0] + a[1] * b[1]
}

fn len(a: V) -> f32 {
    dot(a, a).sqrt()
}

fn rot(p: V, ang: f32) -> V {
    let (s, c) = ang.sin_cos();
    [c * p[0] - s * p[1], s * p[0] + c * p[1]]
}

fn lerp(a: f32, b: f32, t: f32) -> f32 {
    a + (b - a) * t
}

/// A signed distance function in subject coordinates (negative inside).
#[derive(Debug, Clone)]
enum Sdf {
    Circle {
        c: V,
        r: f32,
    },
    /// iq's ellipse approximation: exact on the axes, close elsewhere (enough for coverage).
    Ellipse {
        c: V,
        rx: f32,
        ry: f32,
    },
    /// The band of half-width `w` around an ellipse outline.
    EllipseRing {
        c: V,
        rx: f32,
        ry: f32,
        w: f32,
    },
    /// A capsule: all points within `r` of the segment a–b.
    Segment {
        a: V,
        b: V,
        r: f32,
    },
    /// A rotated rounded box with half sizes `h` and corner radius `r`.
    RoundBox {
        c: V,
        h: V,
        angle: f32,
        r: f32,
    },
    Union(Vec<Sdf>),
    /// `inner` restricted to the half plane dot(p − o, n) ≤ 0.
    Clip {
        inner: Box<Sdf>,
        o: V,
        n: V,
    },
    /// `a` minus `b`.
    Sub(Box<Sdf>, Box<Sdf>),
    /// `inner` grown by `by` (a halo or an outline).
    Grow {
        inner: Box<Sdf>,
        by: f32,
    },
    /// `inner` moved by `by` (drop shadows).
    Shift {
        inner: Box<Sdf>,
        by: V,
    },
}

impl Sdf {
    fn dist(&self, p: V) -> f32 {
        match self {
            Sdf::Circle { c, r } => len(sub(p, *c)) - r,
            Sdf::Ellipse { c, rx, ry } => ellipse(sub(p, *c), *rx, *ry),
            Sdf::EllipseRing { c, rx, ry, w } => ellipse(sub(p, *c), *rx, *ry).abs() - w,
            Sdf::Segment { a, b, r } => {
                let (pa, ba) = (sub(p, *a), sub(*b, *a));
                let h = (dot(pa, ba) / dot(ba, ba).max(1e-12)).clamp(0.0, 1.0);
                len([pa[0] - ba[0] * h, pa[1] - ba[1] * h]) - r
            }
            Sdf::RoundBox { c, h, angle, r } => {
                let q = rot(sub(p, *c), -angle);
                let d = [q[0].abs() - h[0] + r, q[1].abs() - h[1] + r];
                len([d[0].max(0.0), d[1].max(0.0)]) + d[0].max(d[1]).min(0.0) - r
            }
            Sdf::Union(items) => items
                .iter()
                .map(|s| s.dist(p))
                .fold(f32::INFINITY, f32::min),
            Sdf::Clip { inner, o, n } => inner.dist(p).max(dot(sub(p, *o), *n)),
            Sdf::Sub(a, b) => a.dist(p).max(-b.dist(p)),
            Sdf::Grow { inner, by } => inner.dist(p) - by,
            Sdf::Shift { inner, by } => inner.dist(sub(p, *by)),
        }
    }

    /// Axis-aligned bounds [x0, y0, x1, y1] of the negative region.
    fn bounds(&self) -> [f32; 4] {
        match self {
            Sdf::Circle { c, r } => [c[0] - r, c[1] - r, c[0] + r, c[1] + r],
            Sdf::Ellipse { c, rx, ry } => [c[0] - rx, c[1] - ry, c[0] + rx, c[1] + ry],
            Sdf::EllipseRing { c, rx, ry, w } => {
                [c[0] - rx - w, c[1] - ry - w, c[0] + rx + w, c[1] + ry + w]
            }
            Sdf::Segment { a, b, r } => [
                a[0].min(b[0]) - r,
                a[1].min(b[1]) - r,
                a[0].max(b[0]) + r,
                a[1].max(b[1]) + r,
            ],
            Sdf::RoundBox { c, h, .. } => {
                let e = len(*h);
                [c[0] - e, c[1] - e, c[0] + e, c[1] + e]
            }
            Sdf::Union(items) => items.iter().map(Sdf::bounds).fold(
                [
                    f32::INFINITY,
                    f32::INFINITY,
                    f32::NEG_INFINITY,
                    f32::NEG_INFINITY,
                ],
                |a, b| {
                    [
                        a[0].min(b[0]),
                        a[1].min(b[1]),
                        a[2].max(b[2]),
                        a[3].max(b[3]),
                    ]
                },
            ),
            Sdf::Clip { inner, .. } => inner.bounds(),
            Sdf::Sub(a, _) => a.bounds(),
            Sdf::Grow { inner, by } => {
                let b = inner.bounds();
                [b[0] - by, b[1] - by, b[2] + by, b[3] + by]
            }
            Sdf::Shift { inner, by } => {
                let b = inner.bounds();
                [b[0] + by[0], b[1] + by[1], b[2] + by[0], b[3] + by[1]]
            }
        }
    }
}

fn ellipse(p: V, rx: f32, ry: f32) -> f32 {
    let k0 = len([p[0] / rx, p[1] / ry]);
    let k1 = len([p[0] / (rx * rx), p[1] / (ry * ry)]);
    if k1 < 1e-9 {
        -rx.min(ry)
    } else {
        k0 * (k0 - 1.0) / k1
    }
}

fn circle(x: f32, y: f32, r: f32) -> Sdf {
    Sdf::Circle { c: [x, y], r }
}

fn seg(a: V, b: V, r: f32) -> Sdf {
    Sdf::Segment { a, b, r }
}

fn ring(x: f32, y: f32, rx: f32, ry: f32, w: f32) -> Sdf {
    Sdf::EllipseRing {
        c: [x, y],
        rx,
        ry,
        w,
    }
}

/// Left-closed half of an elliptical ring (the bowl of D, P, B, R): the part with x ≥ `x`.
fn bowl(x: f32, y: f32, rx: f32, ry: f32, w: f32) -> Sdf {
    Sdf::Clip {
        inner: Box::new(ring(x, y, rx, ry, w)),
        o: [x, y],
        n: [-1.0, 0.0],
    }
}

// ---------------------------------------------------------------------------------------------
// Fills

type Rgb = [f32; 3];

#[derive(Debug, Clone, Copy)]
enum Pattern {
    Solid,
    Stripes { freq: f32, angle: f32 },
    Dots { spacing: f32, r: f32 },
    Noise { scale: f32, seed: u64 },
    Gradient { angle: f32 },
}

/// Colour as a function of the subject-space position, so textures move with the subject.
#[derive(Debug, Clone, Copy)]
struct Fill {
    a: Rgb,
    b: Rgb,
    pattern: Pattern,
}

impl Fill {
    fn solid(c: Rgb) -> Fill {
        Fill {
            a: c,
            b: c,
            pattern: Pattern::Solid,
        }
    }

    fn at(&self, p: V) -> Rgb {
        let t = match self.pattern {
            Pattern::Solid => return self.a,
            Pattern::Stripes { freq, angle } => {
                let s = (dot(p, [angle.cos(), angle.sin()]) * freq).sin();
                (s * 4.0 + 0.5).clamp(0.0, 1.0)
            }
            Pattern::Dots { spacing, r } => {
                let q = [p[0] / spacing, p[1] / spacing];
                let f = [q[0] - q[0].round(), q[1] - q[1].round()];
                ((r - len(f)) * 8.0 + 0.5).clamp(0.0, 1.0)
            }
            Pattern::Noise { scale, seed } => fbm(seed, p[0] * scale + 9.0, p[1] * scale + 9.0, 3),
            Pattern::Gradient { angle } => {
                (0.5 + 0.5 * dot(p, [angle.cos(), angle.sin()])).clamp(0.0, 1.0)
            }
        };
        [
            lerp(self.a[0], self.b[0], t),
            lerp(self.a[1], self.b[1], t),
            lerp(self.a[2], self.b[2], t),
        ]
    }
}

fn hsv(h: f32, s: f32, v: f32) -> Rgb {
    let h = h.rem_euclid(1.0) * 6.0;
    let i = h.floor();
    let f = h - i;
    let (p, q, t) = (v * (1.0 - s), v * (1.0 - s * f), v * (1.0 - s * (1.0 - f)));
    match i as u32 {
        0 => [v, t, p],
        1 => [q, v, p],
        2 => [p, v, t],
        3 => [p, q, v],
        4 => [t, p, v],
        _ => [v, p, q],
    }
}

fn shade(c: Rgb, k: f32) -> Rgb {
    [
        (c[0] * k).min(1.0),
        (c[1] * k).min(1.0),
        (c[2] * k).min(1.0),
    ]
}

// ---------------------------------------------------------------------------------------------
// Scene

/// Which transform a part follows.
#[derive(Debug, Clone, Copy, PartialEq)]
enum Space {
    /// The full per-frame transform (translation, rotation, squash).
    Body,
    /// Translation only (motion streaks keep their direction while the subject rotates).
    Translate,
    /// Horizontal translation only, at a fixed ground line (ground shadows).
    Ground,
}

#[derive(Debug, Clone)]
struct Part {
    sdf: Sdf,
    fill: Fill,
    opacity: f32,
    /// Edge ramp width in canvas pixels: 1 = anti-aliased hard edge.
    soft: f32,
    space: Space,
}

impl Part {
    fn hard(sdf: Sdf, fill: Fill) -> Part {
        Part {
            sdf,
            fill,
            opacity: 1.0,
            soft: 1.0,
            space: Space::Body,
        }
    }
}

/// The per-frame placement of subject space on the canvas.
#[derive(Debug, Clone, Copy)]
struct Transform {
    /// Canvas position of the subject origin.
    c: V,
    /// Canvas pixels per subject unit.
    scale: f32,
    angle: f32,
    sx: f32,
    sy: f32,
    /// Canvas y of the ground line (for [`Space::Ground`]).
    ground_y: f32,
    /// Canvas x of the subject without the bounce/squash offsets (ground shadows follow it).
    ground_x: f32,
}

impl Transform {
    /// Canvas → subject coordinates for a part in `space`, and the distance scale back.
    fn to_local(self, space: Space, p: V) -> (V, f32) {
        match space {
            Space::Body => {
                let q = rot(sub(p, self.c), -self.angle);
                let k = self.scale;
                (
                    [q[0] / (k * self.sx), q[1] / (k * self.sy)],
                    k * self.sx.min(self.sy),
                )
            }
            Space::Translate => {
                let q = sub(p, self.c);
                ([q[0] / self.scale, q[1] / self.scale], self.scale)
            }
            Space::Ground => (
                [
                    (p[0] - self.ground_x) / self.scale,
                    (p[1] - self.ground_y) / self.scale,
                ],
                self.scale,
            ),
        }
    }

    /// Subject → canvas (for bounding boxes).
    fn to_canvas(self, space: Space, q: V) -> V {
        match space {
            Space::Body => {
                let k = self.scale;
                let r = rot([q[0] * k * self.sx, q[1] * k * self.sy], self.angle);
                [r[0] + self.c[0], r[1] + self.c[1]]
            }
            Space::Translate => [q[0] * self.scale + self.c[0], q[1] * self.scale + self.c[1]],
            Space::Ground => [
                q[0] * self.scale + self.ground_x,
                q[1] * self.scale + self.ground_y,
            ],
        }
    }
}

struct Scene {
    parts: Vec<Part>,
    tf: Transform,
}

impl Scene {
    fn rasterize(&self, w: u32, h: u32) -> RgbaImage {
        let (wu, hu) = (w as usize, h as usize);
        // Premultiplied RGB + alpha.
        let mut acc = vec![[0f32; 4]; wu * hu];
        for part in &self.parts {
            let b = part.sdf.bounds();
            let corners = [[b[0], b[1]], [b[2], b[1]], [b[0], b[3]], [b[2], b[3]]]
                .map(|q| self.tf.to_canvas(part.space, q));
            let pad = part.soft + 2.0;
            let x0 = corners.iter().map(|c| c[0]).fold(f32::INFINITY, f32::min) - pad;
            let x1 = corners
                .iter()
                .map(|c| c[0])
                .fold(f32::NEG_INFINITY, f32::max)
                + pad;
            let y0 = corners.iter().map(|c| c[1]).fold(f32::INFINITY, f32::min) - pad;
            let y1 = corners
                .iter()
                .map(|c| c[1])
                .fold(f32::NEG_INFINITY, f32::max)
                + pad;
            if !(x0.is_finite() && x1.is_finite() && y0.is_finite() && y1.is_finite()) {
                continue;
            }
            let (xa, xb) = (x0.max(0.0) as usize, (x1.max(0.0) as usize).min(wu));
            let (ya, yb) = (y0.max(0.0) as usize, (y1.max(0.0) as usize).min(hu));
            for y in ya..yb {
                for x in xa..xb {
                    let p = [x as f32 + 0.5, y as f32 + 0.5];
                    let (q, k) = self.tf.to_local(part.space, p);
                    let d = part.sdf.dist(q) * k;
                    let cov = (0.5 - d / part.soft).clamp(0.0, 1.0) * part.opacity;
                    if cov <= 0.0 {
                        continue;
                    }
                    let c = part.fill.at(q);
                    let px = &mut acc[y * wu + x];
                    for ch in 0..3 {
                        px[ch] = c[ch] * cov + px[ch] * (1.0 - cov);
                    }
                    px[3] = cov + px[3] * (1.0 - cov);
                }
            }
        }
        RgbaImage::from_fn(w, h, |x, y| {
            let px = acc[y as usize * wu + x as usize];
            let a8 = (px[3] * 255.0).round().clamp(0.0, 255.0) as u8;
            if a8 == 0 {
                return Rgba([0, 0, 0, 0]);
            }
            let to8 = |v: f32| ((v / px[3]) * 255.0).round().clamp(0.0, 255.0) as u8;
            Rgba([to8(px[0]), to8(px[1]), to8(px[2]), a8])
        })
    }
}

/// Shape knobs in [0, 1] that each subject interprets (thickness, hole size, limb angle,
/// aspect); [`Motion::Morph`] interpolates between two settings.
type Knobs = [f32; 4];

/// The fixed random choices of a clip (colours, textures, counts, knob settings).
struct Style {
    rng_seed: u64,
    main: Fill,
    second: Fill,
    accent: Rgb,
    dark: Rgb,
    glow: Rgb,
    knobs_a: Knobs,
    knobs_b: Knobs,
    /// Subject extent as a fraction of the canvas's shorter side (radius).
    size: f32,
    variant: usize,
    count: usize,
    swing: f32,
    spin_dir: f32,
    amp: f32,
}

impl Style {
    fn new(spec: &ClipSpec) -> Style {
        let mut rng = Rng::new(spec.style_seed);
        let hue = rng.f32();
        let base = hsv(hue, rng.range(0.35, 0.95), rng.range(0.45, 1.0));
        let other = hsv(
            hue + rng.range(0.08, 0.5),
            rng.range(0.2, 0.9),
            rng.range(0.3, 1.0),
        );
        let pattern = |rng: &mut Rng| match rng.below(6) {
            0 | 1 => Pattern::Solid,
            2 => Pattern::Stripes {
                freq: rng.range(8.0, 25.0),
                angle: rng.range(0.0, PI),
            },
            3 => Pattern::Dots {
                spacing: rng.range(0.12, 0.3),
                r: rng.range(0.15, 0.35),
            },
            4 => Pattern::Noise {
                scale: rng.range(2.0, 8.0),
                seed: rng.next_u64(),
            },
            _ => Pattern::Gradient {
                angle: rng.range(0.0, TAU),
            },
        };
        let main = Fill {
            a: base,
            b: shade(other, 1.1),
            pattern: pattern(&mut rng),
        };
        let second = Fill {
            a: other,
            b: shade(base, 0.7),
            pattern: pattern(&mut rng),
        };
        let knobs_a = [rng.f32(), rng.f32(), rng.f32(), rng.f32()];
        let mut knobs_b = [rng.f32(), rng.f32(), rng.f32(), rng.f32()];
        // A morph should visibly change the shape: push the first knob to the other end.
        knobs_b[0] = if knobs_a[0] < 0.5 {
            rng.range(0.75, 1.0)
        } else {
            rng.range(0.0, 0.25)
        };
        Style {
            main,
            second,
            accent: hsv(hue + 0.5, rng.range(0.5, 1.0), rng.range(0.6, 1.0)),
            dark: hsv(hue, rng.range(0.2, 0.6), rng.range(0.05, 0.25)),
            glow: hsv(hue + rng.range(-0.15, 0.15), rng.range(0.2, 0.7), 1.0),
            knobs_a,
            knobs_b,
            size: rng.range(0.22, 0.27),
            variant: rng.below(2),
            count: rng.below(1000),
            swing: rng.range(0.25, 0.6),
            spin_dir: rng.sign(),
            amp: rng.range(0.6, 1.0),
            rng_seed: rng.next_u64(),
        }
    }

    fn scene(&self, spec: &ClipSpec, cfg: &SynthConfig, t: f32) -> Scene {
        let side = cfg.width.min(cfg.height) as f32;
        let scale = side * self.size;
        let px = 1.0 / scale;
        let wave = (TAU * t).sin();
        let (mut angle, mut sx, mut sy, mut tx, mut ty) = (0.0, 1.0, 1.0, 0.0, 0.0);
        let mut knobs = self.knobs_a;
        let mut glow_k = 1.0;
        let a = self.amp;
        match spec.motion {
            Motion::Bounce => {
                let h = (PI * t).sin().abs();
                ty = -0.4 * a * h * scale;
                let squash = 0.12 * a * (1.0 - h).powi(3);
                sx = 1.0 + squash;
                sy = 1.0 - squash;
                ty += squash * scale;
            }
            Motion::Spin => angle = self.spin_dir * TAU * t,
            Motion::SquashStretch => {
                let s = 0.15 * a * wave;
                sx = 1.0 + s;
                sy = 1.0 - s;
                ty = s * scale;
            }
            Motion::Wave => angle = 0.3 * a * wave,
            Motion::Walk => {
                tx = (t - 0.5) * 0.6 * scale;
                ty = -0.08 * scale * (TAU * t).sin().abs();
            }
            Motion::Morph => {
                let s = 0.5 - 0.5 * (TAU * t).cos();
                for (k, b) in knobs.iter_mut().zip(self.knobs_b) {
                    *k = lerp(*k, b, s);
                }
            }
            Motion::Pulse => {
                let s = 1.0 + 0.07 * a * wave;
                sx = s;
                sy = s;
                glow_k = 0.55 + 0.45 * wave;
            }
        }
        // Limbs swing more when walking or waving.
        let swing = match spec.motion {
            Motion::Walk | Motion::Wave => self.swing,
            _ => self.swing * 0.4,
        } * wave;
        let c = [cfg.width as f32 / 2.0 + tx, cfg.height as f32 / 2.0 + ty];
        let tf = Transform {
            c,
            scale,
            angle,
            sx,
            sy,
            ground_y: cfg.height as f32 / 2.0 + 1.05 * scale,
            ground_x: cfg.width as f32 / 2.0 + tx,
        };
        let body = self.subject(spec, &knobs, t, swing, px);
        let mut parts = Vec::new();
        let silhouette = Sdf::Union(body.iter().map(|p| p.sdf.clone()).collect());
        if spec.shadow {
            if self.variant == 0 || spec.motion == Motion::Spin {
                // Drop shadow: a soft dark copy, offset down-right.
                parts.push(Part {
                    sdf: Sdf::Shift {
                        inner: Box::new(silhouette.clone()),
                        by: [0.08, 0.1],
                    },
                    fill: Fill::solid([0.0, 0.0, 0.0]),
                    opacity: 0.4,
                    soft: 0.08 * scale,
                    space: Space::Body,
                });
            } else {
                // Ground shadow: shrinks as the subject rises.
                let lift = (-ty / scale).max(0.0);
                parts.push(Part {
                    sdf: Sdf::Ellipse {
                        c: [0.0, 0.0],
                        rx: 0.7 * (1.0 - 0.4 * lift),
                        ry: 0.12,
                    },
                    fill: Fill::solid(self.dark),
                    opacity: 0.45 * (1.0 - 0.5 * lift),
                    soft: 0.1 * scale,
                    space: Space::Ground,
                });
            }
        }
        if spec.glow {
            parts.push(Part {
                sdf: Sdf::Grow {
                    inner: Box::new(silhouette),
                    by: 0.06 + 0.06 * glow_k,
                },
                fill: Fill::solid(self.glow),
                opacity: 0.35 + 0.35 * glow_k,
                soft: 0.15 * scale,
                space: Space::Body,
            });
        }
        if spec.streaks {
            let mut rng = Rng::new(mix(self.rng_seed, 7));
            // Streaks trail opposite the velocity: below when rising, behind when walking.
            let vertical = spec.motion == Motion::Bounce;
            for i in 0..3 {
                let off = (i as f32 - 1.0) * 0.45 + rng.range(-0.1, 0.1);
                let l = rng.range(0.5, 0.9);
                let (a, b) = if vertical {
                    ([off, 0.9], [off, 0.9 + l])
                } else {
                    ([-0.9, off], [-0.9 - l, off])
                };
                parts.push(Part {
                    sdf: seg(a, b, rng.range(0.03, 0.07)),
                    fill: Fill::solid(self.glow),
                    opacity: rng.range(0.2, 0.45),
                    soft: 0.05 * scale,
                    space: Space::Translate,
                });
            }
        }
        parts.extend(body);
        Scene { parts, tf }
    }

    /// The subject's parts, back to front, in subject space.
    fn subject(&self, spec: &ClipSpec, k: &Knobs, t: f32, swing: f32, px: f32) -> Vec<Part> {
        let mut rng = Rng::new(self.rng_seed);
        let eye = Fill::solid(self.dark);
        let mut parts = Vec::new();
        match spec.subject {
            Subject::Ring => {
                let r = 0.8 + 0.15 * k[3];
                let w = lerp(0.14, 0.34, k[0]);
                let (rx, ry) = (r, r * lerp(0.8, 1.0, k[1]));
                parts.push(Part::hard(ring(0.0, 0.0, rx, ry, w), self.main));
                // Icing on the upper part, with sprinkles.
                parts.push(Part::hard(
                    Sdf::Clip {
                        inner: Box::new(ring(0.0, 0.0, rx, ry, w * 0.8)),
                        o: [0.0, 0.15],
                        n: [0.0, 1.0],
                    },
                    self.second,
                ));
                for _ in 0..12 {
                    let a = rng.range(PI, TAU);
                    let rr = rng.range(-w * 0.5, w * 0.5);
                    let c = [(rx + rr) * a.cos(), (ry + rr) * a.sin()];
                    let d = rot([0.05, 0.0], rng.range(0.0, PI));
                    parts.push(Part::hard(
                        seg(sub(c, d), [c[0] + d[0], c[1] + d[1]], 0.02 + px),
                        Fill::solid(self.accent),
                    ));
                }
                // Thin translucent highlight.
                parts.push(Part {
                    opacity: 0.5,
                    ..Part::hard(
                        Sdf::Clip {
                            inner: Box::new(ring(0.0, 0.0, rx, ry, px)),
                            o: [0.0, -0.2],
                            n: [0.0, 1.0],
                        },
                        Fill::solid([1.0, 1.0, 1.0]),
                    )
                });
            }
            Subject::Chain => {
                let w = lerp(0.07, 0.14, k[0]);
                if self.variant == 0 {
                    // Figure-8: two rings stacked, the waist opening and closing with knob 1.
                    let r = 0.45;
                    let gap = lerp(0.75, 0.95, k[1]) * r;
                    parts.push(Part::hard(ring(0.0, -gap, r * 1.05, r, w), self.main));
                    parts.push(Part::hard(ring(0.0, gap, r * 1.05, r, w), self.main));
                } else {
                    let n = 2 + self.count % 2;
                    let step = 1.6 / n as f32;
                    for i in 0..n {
                        let x = (i as f32 - (n - 1) as f32 / 2.0) * step;
                        let (rx, ry) = if i % 2 == 0 {
                            (step * 0.75, 0.4)
                        } else {
                            (step * 0.75, 0.28)
                        };
                        let fill = if i % 2 == 0 { self.main } else { self.second };
                        parts.push(Part::hard(
                            ring(x, 0.0, rx, ry * lerp(0.8, 1.1, k[3]), w),
                            fill,
                        ));
                    }
                }
            }
            Subject::Character => {
                let arm_base = lerp(0.25, 0.8, k[2]);
                let limb_r = lerp(0.07, 0.11, k[0]);
                // Legs, swinging in opposition.
                for s in [-1.0f32, 1.0] {
                    let a = s * swing * 0.6;
                    let hip = [s * 0.2, 0.55];
                    let foot = [hip[0] + 0.45 * a.sin(), hip[1] + 0.45 * a.cos()];
                    parts.push(Part::hard(seg(hip, foot, limb_r), self.second));
                    parts.push(Part::hard(
                        Sdf::Ellipse {
                            c: [foot[0] + s * 0.04, foot[1]],
                            rx: 0.12,
                            ry: 0.07,
                        },
                        self.second,
                    ));
                }
                // Body and head.
                parts.push(Part::hard(
                    Sdf::Ellipse {
                        c: [0.0, 0.15],
                        rx: lerp(0.33, 0.42, k[3]),
                        ry: 0.5,
                    },
                    self.main,
                ));
                parts.push(Part::hard(circle(0.0, -0.6, 0.34), self.main));
                // Arms: hanging out from the shoulders; the gap to the body opens and closes.
                for s in [-1.0f32, 1.0] {
                    let a = arm_base + s * swing;
                    let sh = [s * 0.3, -0.12];
                    let hand = [sh[0] + s * 0.6 * a.sin(), sh[1] + 0.6 * a.cos()];
                    parts.push(Part::hard(seg(sh, hand, limb_r), self.main));
                    parts.push(Part::hard(
                        circle(hand[0], hand[1], limb_r * 1.5),
                        self.second,
                    ));
                }
                // Face and whiskers (1 px strands).
                for s in [-1.0f32, 1.0] {
                    parts.push(Part::hard(circle(s * 0.12, -0.66, 0.05), eye));
                    for j in 0..3 {
                        let y = -0.52 + 0.05 * j as f32;
                        parts.push(Part::hard(
                            seg(
                                [s * 0.15, y],
                                [s * 0.55, y + (j as f32 - 1.0) * 0.08],
                                0.5 * px,
                            ),
                            eye,
                        ));
                    }
                }
                // Antenna: a thin strand with a ball, swaying.
                let tip = [0.15 + 0.1 * swing, -1.2];
                parts.push(Part::hard(seg([0.0, -0.9], tip, px), eye));
                parts.push(Part::hard(
                    circle(tip[0], tip[1], 0.07),
                    Fill::solid(self.accent),
                ));
            }
            Subject::Mug => {
                let body = Sdf::RoundBox {
                    c: [-0.15, 0.15],
                    h: [0.5, lerp(0.5, 0.62, k[3])],
                    angle: 0.0,
                    r: 0.1,
                };
                let hr = lerp(0.25, 0.35, k[1]);
                parts.push(Part::hard(
                    ring(0.4, 0.12, hr, hr * 1.1, lerp(0.05, 0.1, k[0])),
                    self.second,
                ));
                parts.push(Part::hard(body, self.main));
                parts.push(Part::hard(
                    Sdf::Ellipse {
                        c: [-0.15, -0.42],
                        rx: 0.42,
                        ry: 0.06,
                    },
                    Fill::solid(shade(self.main.a, 0.5)),
                ));
                // Steam: translucent wavy strands.
                for i in 0..3 {
                    let x0 = -0.4 + 0.25 * i as f32;
                    let pts: Vec<V> = (0..8)
                        .map(|j| {
                            let y = -0.55 - 0.09 * j as f32;
                            let x = x0 + 0.06 * (j as f32 * 1.3 + TAU * t + i as f32).sin();
                            [x, y]
                        })
                        .collect();
                    let strand = Sdf::Union(
                        pts.windows(2)
                            .map(|w| seg(w[0], w[1], 0.025 + px))
                            .collect(),
                    );
                    parts.push(Part {
                        opacity: 0.45,
                        soft: 2.0,
                        ..Part::hard(strand, Fill::solid([0.95, 0.95, 0.95]))
                    });
                }
            }
            Subject::Lettering => {
                let text = spec.text.as_deref().unwrap_or("O");
                let n = text.chars().count().max(1);
                let cell = (1.9 / n as f32).min(1.0);
                let lw = cell * 0.8;
                let lh = 1.3_f32.min(lw * 1.6);
                let sw = lerp(0.05, 0.1, k[0]) * (lh / 1.3);
                for (i, ch) in text.chars().enumerate() {
                    let x = (i as f32 - (n - 1) as f32 / 2.0) * cell;
                    // Letters bob one after another.
                    let y = 0.06 * (TAU * t - i as f32).sin();
                    let letter = letter_sdf(ch, x, y, lw, lh, sw);
                    // A dark outline under the fill, as sticker lettering has.
                    parts.push(Part::hard(
                        Sdf::Grow {
                            inner: Box::new(letter.clone()),
                            by: 0.04 + 1.5 * px,
                        },
                        Fill::solid(self.dark),
                    ));
                    parts.push(Part::hard(letter, self.main));
                }
            }
            Subject::Lattice => {
                let w = lerp(0.05, 0.1, k[0]);
                if self.variant == 0 {
                    let hsz = 0.85;
                    let frame = Sdf::Sub(
                        Box::new(Sdf::RoundBox {
                            c: [0.0, 0.0],
                            h: [hsz, hsz],
                            angle: 0.0,
                            r: 0.12,
                        }),
                        Box::new(Sdf::RoundBox {
                            c: [0.0, 0.0],
                            h: [hsz - 2.0 * w, hsz - 2.0 * w],
                            angle: 0.0,
                            r: 0.05,
                        }),
                    );
                    let n = 2 + self.count % 3;
                    let mut bars = vec![frame];
                    for i in 1..=n {
                        let v = -hsz + 2.0 * hsz * i as f32 / (n + 1) as f32;
                        bars.push(seg([v, -hsz], [v, hsz], w * 0.8));
                        bars.push(seg([-hsz, v], [hsz, v], w * 0.8));
                    }
                    parts.push(Part::hard(Sdf::Union(bars), self.main));
                } else {
                    // A wheel: rim, hub and spokes.
                    let n = 5 + self.count % 4;
                    let mut items = vec![ring(0.0, 0.0, 0.85, 0.85, w), circle(0.0, 0.0, 0.15)];
                    for i in 0..n {
                        let a = TAU * i as f32 / n as f32 + 0.3 * k[1];
                        items.push(seg([0.0, 0.0], [0.85 * a.cos(), 0.85 * a.sin()], w * 0.6));
                    }
                    parts.push(Part::hard(Sdf::Union(items), self.main));
                    parts.push(Part::hard(circle(0.0, 0.0, 0.07), Fill::solid(self.accent)));
                }
            }
            Subject::Hairy => {
                let n = 14 + self.count % 30;
                let r = 0.55;
                let hair = Fill::solid(shade(self.main.a, 0.6));
                let mut strands = Vec::new();
                for i in 0..n {
                    let a = TAU * i as f32 / n as f32 + rng.range(-0.1, 0.1);
                    let l = rng.range(0.2, 0.45);
                    let bend = 0.25 * swing + rng.range(-0.2, 0.2);
                    let p0 = [r * 0.9 * a.cos(), r * 0.9 * a.sin()];
                    let mid = [(r + l * 0.5) * a.cos(), (r + l * 0.5) * a.sin()];
                    let end_a = a + bend;
                    let p1 = [(r + l) * end_a.cos(), (r + l) * end_a.sin()];
                    let hw = rng.range(0.5, 1.0) * px;
                    strands.push(seg(p0, mid, hw));
                    strands.push(seg(mid, p1, hw));
                }
                parts.push(Part::hard(Sdf::Union(strands), hair));
                parts.push(Part::hard(circle(0.0, 0.0, r), self.main));
                for s in [-1.0f32, 1.0] {
                    parts.push(Part::hard(circle(s * 0.18, -0.08, 0.08), eye));
                }
            }
            Subject::Winged => {
                let flap = 0.55 + 0.45 * (TAU * t * 2.0).cos().abs();
                let wing = Fill {
                    a: shade(self.glow, 1.0),
                    b: self.second.a,
                    pattern: Pattern::Gradient { angle: 0.0 },
                };
                let op = lerp(0.35, 0.7, k[1]);
                for s in [-1.0f32, 1.0] {
                    for (dy, ry, rxk) in [(-0.3, 0.35, 0.55), (0.25, 0.25, 0.4)] {
                        let rx = rxk * flap;
                        parts.push(Part {
                            opacity: op,
                            ..Part::hard(
                                Sdf::Ellipse {
                                    c: [s * (0.12 + rx), dy],
                                    rx,
                                    ry,
                                },
                                wing,
                            )
                        });
                    }
                }
                let body_fill = Fill {
                    a: self.main.a,
                    b: self.dark,
                    pattern: Pattern::Stripes {
                        freq: 25.0,
                        angle: PI / 2.0,
                    },
                };
                parts.push(Part::hard(
                    seg([0.0, -0.35], [0.0, 0.55], lerp(0.12, 0.18, k[0])),
                    body_fill,
                ));
                parts.push(Part::hard(circle(0.0, -0.55, 0.16), self.main));
                for s in [-1.0f32, 1.0] {
                    let tip = [s * (0.3 + 0.05 * swing), -1.0];
                    parts.push(Part::hard(seg([s * 0.05, -0.65], tip, 0.8 * px), eye));
                    parts.push(Part::hard(circle(tip[0], tip[1], 0.045), eye));
                }
            }
        }
        parts
    }
}

/// A block letter of size `w × h` centred at (x, y) with stroke half-width `s`. Letters other
/// than O, A, B, D, P, R, 8 draw as O.
fn letter_sdf(ch: char, x: f32, y: f32, w: f32, h: f32, s: f32) -> Sdf {
    let (l, r, t, b) = (
        x - w / 2.0 + s,
        x + w / 2.0 - s,
        y - h / 2.0 + s,
        y + h / 2.0 - s,
    );
    let stem = seg([l, t], [l, b], s);
    let (ih, iw) = (b - t, r - l);
    match ch.to_ascii_uppercase() {
        'A' => {
            let apex = [x, t];
            let cy = t + 0.62 * ih;
            let f = 0.62;
            Sdf::Union(vec![
                seg([l, b], apex, s),
                seg([r, b], apex, s),
                seg([x + (l - x) * f, cy], [x + (r - x) * f, cy], s * 0.9),
            ])
        }
        'D' => Sdf::Union(vec![stem, bowl(l, y, iw, ih / 2.0, s)]),
        'P' => Sdf::Union(vec![stem, bowl(l, t + ih * 0.28, iw, ih * 0.28, s)]),
        'R' => Sdf::Union(vec![
            stem,
            bowl(l, t + ih * 0.28, iw * 0.9, ih * 0.28, s),
            seg([l + iw * 0.35, t + ih * 0.56], [r, b], s),
        ]),
        'B' => Sdf::Union(vec![
            stem,
            bowl(l, t + ih * 0.25, iw * 0.85, ih * 0.25, s),
            bowl(l, t + ih * 0.75, iw, ih * 0.25, s),
        ]),
        '8' => Sdf::Union(vec![
            ring(x, t + ih * 0.24, iw * 0.42, ih * 0.24, s),
            ring(x, t + ih * 0.74, iw * 0.5, ih * 0.26, s),
        ]),
        _ => ring(x, y, iw / 2.0, ih / 2.0, s),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn cfg(size: u32, frames: u32) -> SynthConfig {
        SynthConfig {
            width: size,
            height: size,
            frames,
            fps: 12.0,
        }
    }

    fn alphas(img: &RgbaImage) -> Vec<f32> {
        img.pixels().map(|p| f32::from(p[3]) / 255.0).collect()
    }

    #[test]
    fn same_seed_same_bytes_and_seeds_differ() {
        let c = cfg(64, 4);
        let a = synth_clip(42, &c).expect("clip");
        let b = synth_clip(42, &c).expect("clip");
        assert_eq!(a, b);
        let other = synth_clip(43, &c).expect("clip");
        assert_ne!(a.frames[0].image, other.frames[0].image);
        assert_eq!(a.len(), 4);
        assert_eq!(a.frames[0].delay, Delay::from_fps(12.0));
    }

    #[test]
    fn every_subject_and_motion_has_coherent_nonempty_alpha() {
        let c = cfg(80, 16);
        for (i, &subject) in Subject::ALL.iter().enumerate() {
            for motion in [Motion::Bounce, Motion::Wave, Motion::Morph, Motion::Pulse] {
                let spec = ClipSpec::plain(subject, motion, i as u64);
                let anim = render(&spec, &c).expect("clip");
                let planes: Vec<Vec<f32>> = anim.frames.iter().map(|f| alphas(&f.image)).collect();
                for (t, p) in planes.iter().enumerate() {
                    let mass: f32 = p.iter().sum();
                    let frac = mass / p.len() as f32;
                    assert!(
                        (0.03..0.8).contains(&frac),
                        "{subject:?}/{motion:?} frame {t}: alpha coverage {frac}"
                    );
                    if t > 0 {
                        let diff: f32 = p
                            .iter()
                            .zip(&planes[t - 1])
                            .map(|(a, b)| (a - b).abs())
                            .sum();
                        assert!(
                            diff / mass < 1.0,
                            "{subject:?}/{motion:?} frame {t}: Σ|Δα|/Σα = {}",
                            diff / mass
                        );
                    }
                }
            }
        }
    }

    #[test]
    fn slow_motions_change_alpha_little_per_frame() {
        let c = cfg(96, 24);
        for (subject, motion) in [
            (Subject::Character, Motion::Bounce),
            (Subject::Mug, Motion::SquashStretch),
            (Subject::Ring, Motion::Morph),
        ] {
            let anim = render(&ClipSpec::plain(subject, motion, 5), &c).expect("clip");
            let planes: Vec<Vec<f32>> = anim.frames.iter().map(|f| alphas(&f.image)).collect();
            for t in 1..planes.len() {
                let mass: f32 = planes[t].iter().sum();
                let diff: f32 = planes[t]
                    .iter()
                    .zip(&planes[t - 1])
                    .map(|(a, b)| (a - b).abs())
                    .sum();
                assert!(
                    diff / mass < 0.3,
                    "{subject:?}/{motion:?} frame {t}: {}",
                    diff / mass
                );
                assert!(diff > 0.0, "{subject:?}/{motion:?} frame {t} did not move");
            }
        }
    }

    /// Background pixels (α < 0.05) not 4-connected to the border through background.
    fn enclosed(alpha: &[f32], w: usize, h: usize) -> Vec<bool> {
        let bg: Vec<bool> = alpha.iter().map(|&a| a < 0.05).collect();
        let mut reached = vec![false; w * h];
        let mut stack: Vec<usize> = (0..w * h)
            .filter(|&i| {
                let (x, y) = (i % w, i / w);
                bg[i] && (x == 0 || y == 0 || x == w - 1 || y == h - 1)
            })
            .collect();
        for &i in &stack {
            reached[i] = true;
        }
        while let Some(p) = stack.pop() {
            let (x, y) = (p % w, p / w);
            let mut n = Vec::with_capacity(4);
            if x > 0 {
                n.push(p - 1);
            }
            if x + 1 < w {
                n.push(p + 1);
            }
            if y > 0 {
                n.push(p - w);
            }
            if y + 1 < h {
                n.push(p + w);
            }
            for q in n {
                if bg[q] && !reached[q] {
                    reached[q] = true;
                    stack.push(q);
                }
            }
        }
        (0..w * h).map(|i| bg[i] && !reached[i]).collect()
    }

    #[test]
    fn rings_letters_and_lattices_have_transparent_enclosed_holes() {
        let c = cfg(96, 4);
        for (subject, motion) in [
            (Subject::Ring, Motion::Spin),
            (Subject::Ring, Motion::Morph),
            (Subject::Lettering, Motion::Wave),
            (Subject::Lattice, Motion::Bounce),
            (Subject::Chain, Motion::Pulse),
        ] {
            let anim = render(&ClipSpec::plain(subject, motion, 3), &c).expect("clip");
            for (t, f) in anim.frames.iter().enumerate() {
                let a = alphas(&f.image);
                let holes = enclosed(&a, 96, 96);
                let n = holes.iter().filter(|&&h| h).count();
                assert!(n >= 20, "{subject:?} frame {t}: only {n} hole pixels");
                // Fully transparent hole pixels, each walled in by mostly-opaque alpha in all
                // four directions.
                let clear: Vec<usize> = (0..a.len()).filter(|&i| holes[i] && a[i] == 0.0).collect();
                assert!(
                    clear.len() >= 20,
                    "{subject:?} frame {t}: {} clear",
                    clear.len()
                );
                for &i in &clear {
                    let (x, y) = ((i % 96) as i64, (i / 96) as i64);
                    for (dx, dy) in [(1, 0), (-1, 0), (0, 1), (0, -1)] {
                        let walled = (1..96).any(|k| {
                            let (u, v) = (x + dx * k, y + dy * k);
                            (0..96).contains(&u)
                                && (0..96).contains(&v)
                                && a[(v * 96 + u) as usize] >= 0.5
                        });
                        assert!(walled, "{subject:?} frame {t}: hole pixel ({x},{y}) open");
                    }
                }
            }
        }
    }

    /// Background pixels inside the morphological closing of {α ≥ 0.05} with a disk of radius
    /// `r` (brute force; test sizes only).
    fn closing_gaps(alpha: &[f32], w: usize, h: usize, r: i64) -> usize {
        let fg: Vec<bool> = alpha.iter().map(|&a| a >= 0.05).collect();
        let disk = |f: &dyn Fn(usize, usize) -> bool, want: bool, outside: bool| -> Vec<bool> {
            (0..w * h)
                .map(|i| {
                    let (x, y) = ((i % w) as i64, (i / w) as i64);
                    let mut hit = false;
                    for dy in -r..=r {
                        for dx in -r..=r {
                            if dx * dx + dy * dy > r * r {
                                continue;
                            }
                            let (u, v) = (x + dx, y + dy);
                            let val = if u < 0 || v < 0 || u >= w as i64 || v >= h as i64 {
                                outside
                            } else {
                                f(u as usize, v as usize)
                            };
                            hit |= val == want;
                        }
                    }
                    if want { hit } else { !hit }
                })
                .collect()
        };
        let dil = disk(&|x, y| fg[y * w + x], true, false);
        let closed = disk(&|x, y| dil[y * w + x], false, true);
        (0..w * h).filter(|&i| closed[i] && !fg[i]).count()
    }

    #[test]
    fn character_limbs_leave_semi_open_gaps() {
        let c = cfg(96, 6);
        let anim = render(&ClipSpec::plain(Subject::Character, Motion::Walk, 1), &c).expect("clip");
        let mut gaps = Vec::new();
        for f in &anim.frames {
            let partial = f.image.pixels().filter(|p| p[3] > 0 && p[3] < 255).count();
            let opaque = f.image.pixels().filter(|p| p[3] == 255).count();
            assert!(opaque > 500, "opaque {opaque}");
            // Anti-aliased edges and 1 px whiskers give many partial pixels.
            assert!(partial > 100, "partial {partial}");
            gaps.push(closing_gaps(&alphas(&f.image), 96, 96, 3));
        }
        assert!(gaps.iter().all(|&g| g > 5), "gap pixels per frame {gaps:?}");
        // The gaps open and close with the limb swing.
        let (lo, hi) = (gaps.iter().min(), gaps.iter().max());
        assert!(hi > lo, "gaps do not change: {gaps:?}");
    }

    #[test]
    fn bad_configs_are_errors() {
        for c in [
            cfg(8, 4),
            cfg(64, 0),
            SynthConfig {
                fps: 0.0,
                ..cfg(64, 2)
            },
        ] {
            assert_eq!(synth_clip(1, &c).expect_err("bad").kind(), "invalid");
        }
    }

    #[test]
    fn spec_from_seed_covers_all_subjects_and_motions() {
        let specs: Vec<ClipSpec> = (0..400).map(ClipSpec::from_seed).collect();
        for s in Subject::ALL {
            assert!(specs.iter().any(|c| c.subject == s), "{s:?}");
        }
        for m in Motion::ALL {
            assert!(specs.iter().any(|c| c.motion == m), "{m:?}");
        }
        assert!(specs.iter().any(|c| c.glow) && specs.iter().any(|c| c.shadow));
        assert!(specs.iter().any(|c| c.streaks));
    }
}

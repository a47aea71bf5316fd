//! Clean-plate estimation: what lies behind the moving character, per frame, with a confidence.
//!
//! A colour key knows one border colour; a sticker clip shows much more. Where the character
//! moves, other frames show the background it hides (the *temporal* plate); where it never
//! moves, what is seen of the background around it says what continues under it (the
//! *spatial* plates: one colour, a smooth low-order surface, or a periodic tile such as the
//! grey/white transparency checker baked into so many downloaded "transparent" GIFs). The plate
//! is a pure function of the clip's frames, computed once per clip before the windowed decoding,
//! so windowed output still equals one pass.
//!
//! Steps:
//! 1. global motion of each frame against the one before: whole-pixel translation coarse to
//!    fine, scored by a trimmed mean so the character does not drag it, taking the smallest of
//!    equally good shifts (a checker's period aliases; any alias gives the same periodic
//!    plate); then sub-pixel pan and zoom by robust Gauss–Newton ([`warp`]), chained;
//! 2. the frames placed on one canvas; per canvas pixel the per-channel median of the frames
//!    that cover it and the share of them that agree with it. When the camera moves, samples
//!    steadier in frame coordinates than on the canvas (the character riding with the camera)
//!    are held out of that vote;
//! 3. background samples: each frame's border ring where the frames agree over time;
//!    constant, quadratic and periodic fits to them, the best kept when it explains them;
//! 4. the inside of a character that never leaves its place (steady pixels its ring of moving
//!    pixels encloses, or that meet the canvas's edge much less than the background does) is
//!    not trusted to the median, which there is the character itself;
//! 5. per pixel: the temporal median where it is trusted and consistent with a good spatial
//!    fit (or the fit is only a rough model of a texture the frames show unchanged), else the
//!    spatial fit, else a pull-push fill from trusted pixels; under a character's inside,
//!    what is seen of the background around it, carried inward at a low confidence.

use crate::{Error, Result};

mod warp;
use warp::Taps;
pub use warp::Warp;

/// Which plates [`estimate`] may use (the ablation switches).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct PlateOptions {
    /// The per-pixel statistic over aligned frames.
    pub temporal: bool,
    /// The constant / smooth / periodic fits to the seen background.
    pub spatial: bool,
}

impl Default for PlateOptions {
    fn default() -> Self {
        Self {
            temporal: true,
            spatial: true,
        }
    }
}

/// The spatial model that explained the seen background best.
#[derive(Debug, Clone, Copy, PartialEq)]
pub enum SpatialFit {
    /// No spatial model fits (photos, scenery): the temporal plate and fill are used.
    None,
    /// One colour.
    Constant,
    /// A quadratic surface per channel (linear and radial gradients, vignettes).
    Smooth,
    /// A tile repeating every `period.0` px across and `period.1` px down (`f32::INFINITY` on
    /// an axis without repetition, e.g. stripes).
    Periodic { period: (f32, f32) },
}

/// A clip's estimated background.
#[derive(Debug, Clone)]
pub struct Plate {
    pub frames: usize,
    pub height: usize,
    pub width: usize,
    /// Plate RGB in [0, 1], `[T, 3, H, W]`.
    pub rgb: Vec<f32>,
    /// Confidence in [0, 1], `[T, H, W]`: how far the plate is to be trusted at each pixel.
    pub confidence: Vec<f32>,
    /// Each frame's offset on the canvas, rounded to whole pixels (the first frame's is the
    /// origin).
    pub shifts: Vec<(i32, i32)>,
    /// Each frame's place on the canvas: zoom and sub-pixel offset.
    pub warps: Vec<Warp>,
    pub fit: SpatialFit,
    /// Median absolute error (3x3-averaged, worst channel) of the chosen spatial fit on the
    /// background samples it explains.
    pub fit_error: f32,
    /// Share of the background samples the chosen fit explains (error within `FIT_TOL`).
    pub fit_share: f32,
}

/// Two colours closer than this (max over channels) agree.
const AGREE: f32 = 0.06;
/// A background sample is explained by a spatial fit within this (3x3-averaged) error.
const FIT_TOL: f32 = 0.03;
/// A spatial fit that explains this share of the ring samples models the background: the
/// rest is the character where the frame cuts it (stickers often touch the border).
const FIT_SHARE_GOOD: f32 = 0.55;
/// A frame sample is the character's when it is steadier in frame coordinates than the
/// background is on the canvas by this share of frames.
const STEADIER: f32 = 0.2;
/// Camera motion (px over the clip) from which frame and canvas coordinates are told apart.
const MIN_CAMERA_SPAN: f32 = 4.0;
/// An enclosed region is made of flat parts when this share of its pixels equal their right
/// and lower neighbours (within half of [`AGREE`]).
const ENCLOSED_FLAT: f32 = 0.7;
/// Fewest samples left after holding out the character's for the rest to give the background.
const MIN_FREE: usize = 2;
/// A frame sample this far from the median (max over channels) is not noise: an edge of the
/// character passed over the pixel.
const STRONG: f32 = 0.15;
/// Gaps in the ring of moving pixels around a character that are closed before looking for
/// what it encloses (px).
const WALL_CLOSE: usize = 2;
/// A steady region meeting the canvas's edge less than this share of what the background
/// region meets is a character's inside.
const BACKGROUND_CONTACT: f32 = 0.35;
/// A good spatial fit with a larger error than this is a rough model of a textured
/// background (photos), not the background itself (flat colours, gradients, tiles: 0-0.005).
const TEXTURE_FIT_ERROR: f32 = 0.006;
/// A periodic fit explaining less of the ring than this may hold a still character cut by
/// the frame in its tile (see `unexplained_regions`).
const UNEXPLAINED_SHARE_MAX: f32 = 0.97;
/// A steady region whose pixels a periodic tile explains less than this share of is not the
/// background it repeats.
const UNEXPLAINED_REGION: f32 = 0.5;
/// ... provided the tile explains this share of the best-explained region (less where the
/// character's colour stands in some of the tile's phases).
const UNEXPLAINED_BEST: f32 = 0.7;
/// A tile bin whose ring samples are all of colours the ring shows less than this share of
/// its most common colour's is not trusted to them (a still character cut by the frame).
const RARE_IN_RING: f32 = 0.25;
/// A pixel within this (max over channels) of a tile is explained by it.
const EXPLAINED: f32 = 0.1;
/// Confidence of a plate inpainted under a character that never left its place.
const HIDDEN_CONF: f32 = 0.2;
/// How much more a whole period's folded variation may be than a fractional one's and still
/// be kept (see `refine_period`).
const WHOLE_PERIOD_MARGIN: f64 = 4.0;
/// The share of the ring a tile repeating along one axis only must explain.
const ONE_AXIS_SHARE: f32 = 0.8;
/// The share of a shift's sample pairs whose mean finds a period's dip: the rest may be a
/// character that sits on the ring and never moves.
const PERIOD_KEEP: f32 = 0.75;
/// The edge band the shift search scores, as a share of the shorter side (see
/// `shift_error`).
const MOTION_BAND: f32 = 0.2;
/// The edge band of a `w`×`h` plane that motion is judged on, in pixels.
fn motion_band(w: usize, h: usize) -> usize {
    ((MOTION_BAND * w.min(h) as f32) as usize).max(4)
}
/// Largest frame-to-frame motion searched, as a share of the shorter side.
const MAX_MOTION: f32 = 0.25;

/// Estimates the plate of a clip given as planar RGB `[T, 3, H, W]` in [0, 1].
pub fn estimate(
    rgb: &[f32],
    frames: usize,
    height: usize,
    width: usize,
    options: &PlateOptions,
) -> Result<Plate> {
    if frames == 0 || height == 0 || width == 0 || rgb.len() != frames * 3 * height * width {
        return Err(Error::Invalid(format!(
            "plate: {} values for {frames} frames of {width}x{height} RGB",
            rgb.len()
        )));
    }
    let plane = height * width;
    let warps = if options.temporal && frames > 1 {
        global_motion(rgb, frames, height, width)
    } else {
        vec![Warp::IDENTITY; frames]
    };
    let canvas = Canvas::new(&warps, height, width);
    let (cw, ch) = (canvas.width, canvas.height);
    let cplane = cw * ch;

    // Temporal statistics on the canvas.
    let mut parts = temporal_stats(rgb, &warps, &canvas, height, width, None);
    let moved = camera_moved(&warps, height, width);
    if moved {
        // A moving camera separates the layers: the character that stays put in the frame
        // is steady in frame coordinates while the background slides under it. Samples
        // steadier in the frame than on the canvas are the character's and must not vote
        // for the background, even where it covers a canvas pixel in most frames.
        let agree_c: Vec<f32> = parts.iter().flat_map(|p| p.agree.iter().copied()).collect();
        let still = vec![Warp::IDENTITY; frames];
        let frame_canvas = Canvas::new(&still, height, width);
        let in_frame = temporal_stats(rgb, &still, &frame_canvas, height, width, None);
        let m_f: Vec<[f32; 3]> = in_frame
            .iter()
            .flat_map(|p| p.mean.iter().copied())
            .collect();
        let a_f: Vec<f32> = in_frame
            .iter()
            .flat_map(|p| p.agree.iter().copied())
            .collect();
        let mut held = vec![false; frames * plane];
        for (t, warp) in warps.iter().enumerate() {
            let f = &rgb[t * 3 * plane..(t + 1) * 3 * plane];
            for y in 0..height {
                for x in 0..width {
                    let p = y * width + x;
                    let k = canvas.index(x, y, warp);
                    let steady = a_f[p] >= 0.5 && a_f[p] >= agree_c[k] + STEADIER;
                    held[t * plane + p] =
                        steady && (0..3).all(|c| (f[c * plane + p] - m_f[p][c]).abs() <= AGREE);
                }
            }
        }
        parts = temporal_stats(rgb, &warps, &canvas, height, width, Some(&held));
        // Where the character covers a canvas pixel in every frame, its median is the
        // character's, and as steady as any background where the part is flat. Each frame
        // gives it away: the pixels matching that median there are enclosed by pixels that
        // do not (the character's parts over the background the canvas did see).
        let m_c: Vec<[f32; 3]> = parts.iter().flat_map(|p| p.mean.iter().copied()).collect();
        if enclosed_matches(rgb, &warps, &canvas, &m_c, (height, width), &mut held) {
            parts = temporal_stats(rgb, &warps, &canvas, height, width, Some(&held));
        }
    }
    let mut median = vec![0f32; 3 * cplane];
    let mut agree = Vec::with_capacity(cplane);
    let mut varied = Vec::with_capacity(cplane);
    let mut covered = Vec::with_capacity(cplane);
    for (k, m) in parts.iter().flat_map(|p| &p.mean).enumerate() {
        for c in 0..3 {
            median[c * cplane + k] = m[c];
        }
    }
    let mut strong = Vec::with_capacity(cplane);
    let mut held_major = Vec::with_capacity(cplane);
    for part in parts {
        agree.extend(part.agree);
        varied.extend(part.varied);
        covered.extend(part.covered);
        strong.extend(part.strong);
        held_major.extend(part.held_major);
    }
    // Where the character never leaves its place, the median of its pixels is the character
    // itself, steady and confident. What gives it away is the ring of moving pixels around it
    // (a wobble, a pulse, a turn): steady pixels that ring encloses, and the canvas pixels a
    // character riding with the camera covers in most frames, are not trusted to the median.
    let (mut hidden, wall) = if options.temporal && frames > 1 {
        // Under a moving camera, sub-pixel misalignment on a textured background leaves
        // moving pixels that cut the background into pieces, each meeting the canvas edge
        // little: there only fully enclosed regions count.
        let contact = if moved { 0.0 } else { BACKGROUND_CONTACT };
        hidden_interior(&covered, &strong, &held_major, contact, (cw, ch), plane)
    } else {
        (vec![false; cplane], vec![false; cplane])
    };

    // Background samples: border rings of every frame, and pixels the character uncovered.
    let ring = (height.min(width) / 16).clamp(2, 32);
    let mut sample = vec![false; cplane];
    for warp in &warps {
        for y in 0..height {
            let edge_row = y < ring || y + ring >= height;
            // Inner rows: only their two ends lie in the ring.
            let (left, right) = if edge_row {
                (0..width, 0..0)
            } else {
                (
                    0..ring.min(width),
                    width.saturating_sub(ring).max(ring)..width,
                )
            };
            for x in left.chain(right) {
                let k = canvas.index(x, y, warp);
                sample[k] = true;
            }
        }
    }
    // Only the rings: inside, a character that stays put in most frames makes the majority
    // (and would pull the fits towards its own colour). Nor the inside of a still character
    // the frame cuts: half the ring can be a large one's, and the fit then looks poor.
    for k in 0..cplane {
        sample[k] = sample[k] && covered[k] > 0 && agree[k] >= 0.6;
    }
    let ring_sample = sample;
    // The ring's samples outside `hidden` (unless too few remain), and the steady pixels
    // inside: a periodic tile needs every phase, and a ring covers few of a large tile's; its
    // empty phases are filled from the inside, where a character that stays put is one voice
    // among the many repeats of the same phase.
    let sets = |hidden: &[bool]| {
        let unhidden = (0..cplane)
            .filter(|&k| ring_sample[k] && !hidden[k])
            .count();
        let sample: Vec<bool> = (0..cplane)
            .map(|k| ring_sample[k] && (unhidden < 16 || !hidden[k]))
            .collect();
        let samples: Vec<usize> = (0..cplane).filter(|&k| sample[k]).collect();
        let inner: Vec<usize> = (0..cplane)
            .filter(|&k| !sample[k] && covered[k] > 0 && agree[k] >= 0.6 && !hidden[k])
            .collect();
        (samples, inner)
    };
    let fit_to = |samples: &[usize], inner: &[usize]| {
        if options.spatial && samples.len() >= 16 {
            fit_spatial(&median, samples, inner, cw, ch)
        } else {
            (SpatialFit::None, Score::NONE, None)
        }
    };
    let (samples, inner) = sets(&hidden);
    let (mut fit, mut score, mut spatial) = fit_to(&samples, &inner);
    if let (SpatialFit::Periodic { period }, Some(s), false) = (fit, &spatial, moved) {
        // A tile is a median per phase, and a still character that the frame cuts can hold
        // most of a phase's ring samples (it meets the edge too much to count as an inside
        // above): its colour then stands in the tile wherever that phase repeats. Its steady
        // region gives it away: the tile explains the background's region and little of it.
        // Such regions are left out and the tile built again.
        if score.share < UNEXPLAINED_SHARE_MAX && options.temporal && frames > 1 {
            let axis = |p: f32| p.is_finite().then_some(p);
            let palette = RingPalette::new(&median, &samples, cplane);
            let tile_without = |out: &[bool]| {
                let keep = |v: &[usize]| -> Vec<usize> {
                    v.iter().copied().filter(|&k| !out[k]).collect()
                };
                periodic_tile(
                    &median,
                    &keep(&samples),
                    &keep(&inner),
                    &palette,
                    (cw, ch),
                    (axis(period.0), axis(period.1)),
                )
            };
            let more = unexplained_regions(
                &median,
                s,
                &tile_without,
                &wall,
                &covered,
                &agree,
                (cw, ch),
                plane,
            );
            if more.iter().zip(&hidden).any(|(&m, &h)| m && !h) {
                let hidden2: Vec<bool> = hidden.iter().zip(&more).map(|(&h, &m)| h || m).collect();
                let (samples2, inner2) = sets(&hidden2);
                let refit = fit_to(&samples2, &inner2);
                if matches!(refit.0, SpatialFit::Periodic { .. }) && refit.1.share > score.share {
                    (fit, score, spatial) = refit;
                    hidden = hidden2;
                }
            }
        }
    }
    let Score {
        share,
        error: fit_error,
    } = score;
    let good_fit = share >= FIT_SHARE_GOOD;
    // Far from a rough fit: not the background it models (see below).
    let far = STRONG.max(3.0 * fit_error);
    let off_fit = |v: &[f32], s: &[f32], k: usize| {
        (0..3).any(|c| (v[c * cplane + k] - s[c * cplane + k]).abs() > far)
    };
    // (Under a moving camera the wall also holds a textured background's misaligned edges.)
    let rough = spatial.as_ref().filter(|_| !good_fit && !moved);
    if let (Some(s), true) = (rough, hidden.iter().any(|&h| h)) {
        // A still character's moving parts (a turning face, a swinging arm) cover the
        // pixels of its outline in most frames: with no good fit to check the median against,
        // those far from the rough fit are the character's, like the inside they bound.
        for k in 0..cplane {
            if wall[k] && off_fit(&median, s, k) {
                hidden[k] = true;
            }
        }
    }

    // The temporal statistic is trusted where the frames saw the pixel and most agree.
    let t_ok = |k: usize| options.temporal && covered[k] > 0 && agree[k] >= 0.5 && !hidden[k];
    // Under a good fit, what the fit misses (a radial gradient's plateau, a vignette) is
    // carried inward from where the frames agree with it: the residual there, membrane-filled
    // under the character.
    let residual = match (&spatial, good_fit) {
        (Some(s), true) => {
            let tol = (3.0 * fit_error).max(AGREE);
            let mut r = vec![0f32; 3 * cplane];
            let mut src = vec![false; cplane];
            for k in 0..cplane {
                if t_ok(k)
                    && (0..3).all(|c| (median[c * cplane + k] - s[c * cplane + k]).abs() <= tol)
                {
                    src[k] = true;
                    for c in 0..3 {
                        r[c * cplane + k] = median[c * cplane + k] - s[c * cplane + k];
                    }
                }
            }
            if src.iter().any(|&k| k) {
                pull_push_fill(&mut r, &src, cw, ch);
                Some(r)
            } else {
                None
            }
        }
        _ => None,
    };

    // Combine per canvas pixel.
    let mut plate = vec![0f32; 3 * cplane];
    let mut conf = vec![0f32; cplane];
    let mut known = vec![false; cplane];
    for k in 0..cplane {
        let t_ok = t_ok(k);
        let s = spatial
            .as_ref()
            .map(|s| [s[k], s[cplane + k], s[2 * cplane + k]]);
        let m = [median[k], median[cplane + k], median[2 * cplane + k]];
        let (v, c) = match (good_fit, s) {
            (true, Some(s)) => {
                // The temporal value refines a good fit only where it is as close to it as the
                // fit is to the samples: a character the colour of the background, still in
                // most frames, must not become background.
                let tol = (2.0 * fit_error).max(4.0 / 255.0);
                let consistent = (0..3).all(|c| (m[c] - s[c]).abs() <= tol);
                // A fit that explains the ring only roughly (a photo's smooth part) misses the
                // texture: there a pixel no frame ever changed, outside any character's
                // inside, is the background as seen.
                let texture = fit_error > TEXTURE_FIT_ERROR && !varied[k];
                let fit_conf = 1.0 - fit_error / (2.0 * FIT_TOL);
                if t_ok && (consistent || texture) {
                    (m, fit_conf.max(agree[k]))
                } else if let Some(r) = &residual {
                    let v: [f32; 3] =
                        std::array::from_fn(|c| (s[c] + r[c * cplane + k]).clamp(0.0, 1.0));
                    (v, fit_conf)
                } else {
                    (s, fit_conf)
                }
            }
            _ if t_ok => {
                // Seen both covered and uncovered: the majority is the background. Never seen
                // changing: the background, or a character that never moved.
                let c = if varied[k] { agree[k] } else { 0.75 * agree[k] };
                (m, c)
            }
            _ => continue,
        };
        for c in 0..3 {
            plate[c * cplane + k] = v[c];
        }
        conf[k] = c.clamp(0.0, 1.0);
        known[k] = true;
    }
    if (0..cplane).any(|k| hidden[k] && !known[k]) {
        // Under a character that never moved: what is seen of the background around it,
        // carried inward (the moving ring itself is left out: its median is often the
        // character's outline). Without a good fit, nor what lies far from the rough one:
        // the parts of a still character the frame cuts.
        let mut src: Vec<bool> = (0..cplane).map(|k| known[k] && !wall[k]).collect();
        if let Some(s) = rough {
            let near: Vec<bool> = (0..cplane)
                .map(|k| src[k] && !off_fit(&plate, s, k))
                .collect();
            if near.iter().any(|&n| n) {
                src = near;
            }
        }
        if !src.iter().any(|&s| s) {
            src.clone_from(&known);
        }
        if src.iter().any(|&s| s) {
            let mut fill = plate.clone();
            pull_push_fill(&mut fill, &src, cw, ch);
            for k in 0..cplane {
                if !hidden[k] || known[k] {
                    continue;
                }
                for c in 0..3 {
                    plate[c * cplane + k] = fill[c * cplane + k];
                }
                conf[k] = HIDDEN_CONF;
                known[k] = true;
            }
        }
    }
    if known.iter().any(|&k| !k) {
        if let Some(s) = &spatial {
            // A poor fit still beats nothing where no frame ever showed the background.
            for k in 0..cplane {
                if !known[k] {
                    for c in 0..3 {
                        plate[c * cplane + k] = s[c * cplane + k];
                    }
                    conf[k] = 0.1;
                    known[k] = true;
                }
            }
        } else {
            pull_push_fill(&mut plate, &known, cw, ch);
        }
    }

    // Back to each frame's coordinates.
    let mut out_rgb = vec![0f32; frames * 3 * plane];
    let mut out_conf = vec![0f32; frames * plane];
    // Frames are independent: half of them on a helper thread.
    crate::par::split2(
        &mut out_rgb,
        &mut out_conf,
        frames,
        |first, out_rgb, out_conf| {
            let mine = out_conf.len() / plane;
            for (t, warp) in warps[first..first + mine].iter().enumerate() {
                let exact = warp.is_exact();
                for y in 0..height {
                    for x in 0..width {
                        let p = y * width + x;
                        if exact {
                            let k = canvas.index(x, y, warp);
                            for c in 0..3 {
                                out_rgb[(t * 3 + c) * plane + p] = plate[c * cplane + k];
                            }
                            out_conf[t * plane + p] = conf[k];
                        } else {
                            let (u, v) = canvas.position(x, y, warp);
                            let taps = Taps::new(cw, ch, u, v);
                            for c in 0..3 {
                                out_rgb[(t * 3 + c) * plane + p] =
                                    taps.sample(&plate[c * cplane..(c + 1) * cplane]);
                            }
                            out_conf[t * plane + p] = taps.sample(&conf);
                        }
                    }
                }
            }
        },
    );
    Ok(Plate {
        frames,
        height,
        width,
        rgb: out_rgb,
        confidence: out_conf,
        shifts: warps.iter().map(Warp::rounded).collect(),
        warps,
        fit,
        fit_error,
        fit_share: share,
    })
}

impl Plate {
    /// The plate as planar `[T, 4, H, W]` (RGB, confidence), the layout the decoder reads,
    /// without a second copy: the RGB buffer grows in place and the frames move back to make
    /// room for each confidence plane.
    pub fn into_planar(self) -> Vec<f32> {
        let plane = self.height * self.width;
        let mut v = self.rgb;
        v.resize(self.frames * 4 * plane, 0.0);
        // From the last frame back: frame t moves from 3t planes to 4t planes, never over a
        // frame not moved yet.
        for t in (0..self.frames).rev() {
            v.copy_within(t * 3 * plane..(t + 1) * 3 * plane, t * 4 * plane);
            v[(t * 4 + 3) * plane..(t + 1) * 4 * plane]
                .copy_from_slice(&self.confidence[t * plane..(t + 1) * plane]);
        }
        v
    }
}

/// The union of all warped frames, on the first frame's pixel grid.
struct Canvas {
    width: usize,
    height: usize,
    /// Canvas pixel of the first frame's origin.
    ox: i64,
    oy: i64,
}

impl Canvas {
    fn new(warps: &[Warp], height: usize, width: usize) -> Self {
        let (mut lo, mut hi) = ((f32::MAX, f32::MAX), (f32::MIN, f32::MIN));
        for w in warps {
            for (px, py) in [(0, 0), (width - 1, height - 1)] {
                let (x, y) = w.to_canvas(px as f32, py as f32);
                lo = (lo.0.min(x), lo.1.min(y));
                hi = (hi.0.max(x), hi.1.max(y));
            }
        }
        let (x0, y0) = (lo.0.floor() as i64, lo.1.floor() as i64);
        Canvas {
            width: (hi.0.ceil() as i64 - x0) as usize + 1,
            height: (hi.1.ceil() as i64 - y0) as usize + 1,
            ox: -x0,
            oy: -y0,
        }
    }

    /// Canvas pixel position (fractional) of frame pixel `(x, y)`.
    fn position(&self, x: usize, y: usize, warp: &Warp) -> (f32, f32) {
        let (cx, cy) = warp.to_canvas(x as f32, y as f32);
        (cx + self.ox as f32, cy + self.oy as f32)
    }

    /// The canvas pixel nearest to frame pixel `(x, y)`.
    fn index(&self, x: usize, y: usize, warp: &Warp) -> usize {
        let (cx, cy) = self.position(x, y, warp);
        let cx = (cx.round().max(0.0) as usize).min(self.width - 1);
        let cy = (cy.round().max(0.0) as usize).min(self.height - 1);
        cy * self.width + cx
    }
}

/// The per-pixel temporal statistics of the whole canvas, the rows split between two threads
/// (the per-pixel medians are most of the plate's time and rows are independent). `held`
/// marks frame samples `[T, H, W]` that vote only where too few others saw the pixel.
fn temporal_stats(
    rgb: &[f32],
    warps: &[Warp],
    canvas: &Canvas,
    height: usize,
    width: usize,
    held: Option<&[bool]>,
) -> Vec<TemporalRows> {
    let ch = canvas.height;
    let mid = ch / 2;
    crate::par::par_map(2, 2, |k| {
        let rows = if k == 0 { 0..mid } else { mid..ch };
        temporal_rows(rgb, warps, canvas, height, width, rows, held)
    })
}

/// Whether the frames' corners move enough over the clip for the frame and canvas
/// coordinates to tell the character (still in the frame) from the background (still on the
/// canvas).
fn camera_moved(warps: &[Warp], height: usize, width: usize) -> bool {
    let corners = [(0.0, 0.0), ((width - 1) as f32, (height - 1) as f32)];
    corners.iter().any(|&(px, py)| {
        let at: Vec<(f32, f32)> = warps.iter().map(|w| w.to_canvas(px, py)).collect();
        let span = |f: fn(&(f32, f32)) -> f32| {
            let v = at.iter().map(f);
            v.clone().fold(f32::MIN, f32::max) - v.fold(f32::MAX, f32::min)
        };
        span(|p| p.0).max(span(|p| p.1)) >= MIN_CAMERA_SPAN
    })
}

/// Temporal statistics of some canvas rows, pixel by pixel in row order.
struct TemporalRows {
    /// Mean colour of the frames that agree with the median (the median where none does).
    mean: Vec<[f32; 3]>,
    /// Share of the frames that saw the pixel and agree with the median.
    agree: Vec<f32>,
    /// Whether some frame disagreed.
    varied: Vec<bool>,
    /// Frames that saw the pixel.
    covered: Vec<u16>,
    /// Frames that differ from the median by more than [`STRONG`]: something passed.
    strong: Vec<u16>,
    /// Most samples were held out as the character's, but too few others remained to say
    /// what lies behind it: the median is the character's.
    held_major: Vec<bool>,
}

fn temporal_rows(
    rgb: &[f32],
    warps: &[Warp],
    canvas: &Canvas,
    height: usize,
    width: usize,
    rows: std::ops::Range<usize>,
    held: Option<&[bool]>,
) -> TemporalRows {
    let plane = height * width;
    let cw = canvas.width;
    let n = rows.len() * cw;
    let mut out = TemporalRows {
        mean: vec![[0.0; 3]; n],
        agree: vec![0.0; n],
        varied: vec![false; n],
        covered: vec![0; n],
        strong: vec![0; n],
        held_major: vec![false; n],
    };
    let mut vals: Vec<[f32; 3]> = Vec::with_capacity(warps.len());
    let mut chan: Vec<f32> = Vec::with_capacity(warps.len());
    let mut hold: Vec<bool> = Vec::with_capacity(warps.len());
    let exact: Vec<bool> = warps.iter().map(Warp::is_exact).collect();
    for (r, cy) in rows.enumerate() {
        for cx in 0..cw {
            vals.clear();
            for (t, warp) in warps.iter().enumerate() {
                let f = &rgb[t * 3 * plane..(t + 1) * 3 * plane];
                let p = if exact[t] {
                    let (x, y) = (
                        cx as i64 - canvas.ox - warp.x as i64,
                        cy as i64 - canvas.oy - warp.y as i64,
                    );
                    if x < 0 || y < 0 || x >= width as i64 || y >= height as i64 {
                        continue;
                    }
                    let p = y as usize * width + x as usize;
                    vals.push([f[p], f[plane + p], f[2 * plane + p]]);
                    p
                } else {
                    let (x, y) = warp.to_frame(
                        (cx as i64 - canvas.ox) as f32,
                        (cy as i64 - canvas.oy) as f32,
                    );
                    if x < 0.0 || y < 0.0 || x > (width - 1) as f32 || y > (height - 1) as f32 {
                        continue;
                    }
                    let taps = Taps::new(width, height, x, y);
                    vals.push(std::array::from_fn(|c| {
                        taps.sample(&f[c * plane..(c + 1) * plane])
                    }));
                    y.round() as usize * width + x.round() as usize
                };
                hold.push(held.is_some_and(|h| h[t * plane + p]));
            }
            let k = r * cw + cx;
            out.covered[k] = vals.len() as u16;
            if vals.is_empty() {
                continue;
            }
            // Held samples vote only when too few others remain to say what is behind.
            let free = hold.iter().filter(|&&h| !h).count();
            let dropped = free < vals.len() && free >= MIN_FREE.max(vals.len() / 5);
            out.held_major[k] = !dropped && 2 * free < vals.len();
            if dropped {
                let mut i = 0;
                vals.retain(|_| {
                    i += 1;
                    !hold[i - 1]
                });
            }
            hold.clear();
            let mut m = [0f32; 3];
            for (c, mc) in m.iter_mut().enumerate() {
                chan.clear();
                chan.extend(vals.iter().map(|v| v[c]));
                *mc = lower_median(&mut chan);
            }
            let close = |v: &[f32; 3]| (0..3).all(|c| (v[c] - m[c]).abs() <= AGREE);
            let n_agree = vals.iter().filter(|v| close(v)).count();
            // Refine: the mean of the agreeing frames is less noisy than the median (GIF
            // dither, codec noise) and still ignores the frames where the character is.
            let mut mean = [0f32; 3];
            for v in vals.iter().filter(|v| close(v)) {
                for c in 0..3 {
                    mean[c] += v[c];
                }
            }
            out.mean[k] = if n_agree > 0 {
                mean.map(|s| s / n_agree as f32)
            } else {
                m
            };
            out.agree[k] = n_agree as f32 / vals.len() as f32;
            out.varied[k] = dropped || n_agree < vals.len();
            out.strong[k] = vals
                .iter()
                .filter(|v| (0..3).any(|c| (v[c] - m[c]).abs() > STRONG))
                .count() as u16;
        }
    }
    out
}

/// Marks as `held` (`[T, H, W]`) each frame's pixels that match the canvas median `m_c` but
/// lie in regions that pixels off it enclose: the canvas median there is a part of the
/// character that never uncovered it (the same test as [`hidden_interior`]'s, on each frame,
/// where the character's outline is sharp rather than smeared by the pan). Returns whether any
/// were found.
fn enclosed_matches(
    rgb: &[f32],
    warps: &[Warp],
    canvas: &Canvas,
    m_c: &[[f32; 3]],
    (height, width): (usize, usize),
    held: &mut [bool],
) -> bool {
    let plane = height * width;
    let all = vec![1u16; plane];
    let min_area = (plane / 256).max(16);
    // Per canvas pixel: frames where it matched inside an enclosed region, and where it
    // matched in the open.
    let mut votes = vec![(0u16, 0u16); canvas.width * canvas.height];
    for (t, warp) in warps.iter().enumerate() {
        let f = &rgb[t * 3 * plane..(t + 1) * 3 * plane];
        // Each frame pixel's canvas pixel, found once for the match and the votes.
        let at: Vec<usize> = (0..plane)
            .map(|p| canvas.index(p % width, p / width, warp))
            .collect();
        let off: Vec<bool> = (0..plane)
            .map(|p| (0..3).any(|c| (f[c * plane + p] - m_c[at[p]][c]).abs() > STRONG))
            .collect();
        let wall = dilate(&off, width, height, WALL_CLOSE);
        let (label, regions) = steady_regions(&wall, &all, (width, height));
        let most = regions.iter().map(|r| r.1).max().unwrap_or(0);
        // Flat parts: a sticker's, whose pixels mostly equal their neighbours. Texture
        // enclosed by the character is the background seen through a gap between its parts,
        // and the canvas saw it right.
        let mut near = vec![0usize; regions.len()];
        for p in (0..plane).filter(|&p| label[p] != u32::MAX) {
            let (x, y) = (p % width, p / width);
            let flat = |q: usize| {
                (0..3).all(|c| (f[c * plane + p] - f[c * plane + q]).abs() <= AGREE / 2.0)
            };
            let right = x + 1 >= width || flat(p + 1);
            let down = y + 1 >= height || flat(p + width);
            near[label[p] as usize] += usize::from(right && down);
        }
        let inside: Vec<bool> = regions
            .iter()
            .zip(&near)
            .map(|(&(area, contact), &near)| {
                area >= min_area
                    && (contact as f32) < BACKGROUND_CONTACT * most as f32
                    && near as f32 >= ENCLOSED_FLAT * area as f32
            })
            .collect();
        let enclosed: Vec<bool> = (0..plane)
            .map(|p| label[p] != u32::MAX && inside[label[p] as usize])
            .collect();
        let grown = dilate(&enclosed, width, height, WALL_CLOSE);
        for p in (0..plane).filter(|&p| !off[p]) {
            if grown[p] {
                votes[at[p]].0 += 1;
            } else {
                votes[at[p]].1 += 1;
            }
        }
    }
    // A canvas pixel enclosed in more frames than it was open background: every sample of the
    // median's colour there is the character's (also where its outline met the median's own
    // edge, which it does in the frames that made the median).
    if !votes.iter().any(|&(e, c)| e > c) {
        return false;
    }
    let mut any = false;
    for (t, warp) in warps.iter().enumerate() {
        let f = &rgb[t * 3 * plane..(t + 1) * 3 * plane];
        for y in 0..height {
            for x in 0..width {
                let p = y * width + x;
                let k = canvas.index(x, y, warp);
                let (e, c) = votes[k];
                if e > c && (0..3).all(|ch| (f[ch * plane + p] - m_c[k][ch]).abs() <= STRONG) {
                    held[t * plane + p] = true;
                    any = true;
                }
            }
        }
    }
    any
}

/// Canvas pixels whose temporal median is the character's own, and the closed ring of moving
/// pixels (`wall`) used to find them: steady regions between the moving pixels that meet the
/// canvas's edge much less than the background does (`background_contact`, see
/// [`BACKGROUND_CONTACT`]; 0: only regions that do not meet it), of at least
/// 1/256 of a frame (smaller islands are noise between moving pixels), grown back by the
/// closing radius; plus
/// `held_major` pixels (the character riding with the camera over most of the clip).
fn hidden_interior(
    covered: &[u16],
    strong: &[u16],
    held_major: &[bool],
    background_contact: f32,
    (cw, ch): (usize, usize),
    frame_plane: usize,
) -> (Vec<bool>, Vec<bool>) {
    let n = cw * ch;
    let moving: Vec<bool> = (0..n)
        .map(|k| covered[k] > 0 && usize::from(strong[k]) >= 2.max(usize::from(covered[k]) / 10))
        .collect();
    let wall = dilate(&moving, cw, ch, WALL_CLOSE);
    let (label, regions) = steady_regions(&wall, covered, (cw, ch));
    // The background is the region that meets the edge most, and any that meets it nearly as
    // much (a character standing across the canvas splits it); a large region that meets it
    // much less is the inside of a character that stays put (enclosed by its moving ring, or
    // cut by the frame: stickers often touch it). A small one is noise between moving pixels.
    let most = regions.iter().map(|r| r.1).max().unwrap_or(0);
    let min_area = (frame_plane / 256).max(16);
    let inside: Vec<bool> = regions
        .iter()
        .map(|&(area, contact)| {
            area >= min_area
                && (contact == 0 || (contact as f32) < background_contact * most as f32)
        })
        .collect();
    let enclosed: Vec<bool> = (0..n)
        .map(|k| label[k] != u32::MAX && inside[label[k] as usize])
        .collect();
    // Grown back over the steady pixels the closing took (the enclosed ones are steady too).
    let grown = dilate(&enclosed, cw, ch, WALL_CLOSE);
    let hidden = (0..n)
        .map(|k| held_major[k] || (grown[k] && !moving[k]))
        .collect();
    (hidden, wall)
}

/// Large steady regions (between the moving pixels' `wall`) that a periodic tile built
/// without them explains little of, while `tile` explains most of the background's region
/// (the one meeting the canvas's edge most): a still character that the frame cuts. Left out
/// of its own tile, because where it holds a phase's samples it explains itself. Grown by
/// the closing radius over its outline.
#[allow(clippy::too_many_arguments)]
fn unexplained_regions(
    median: &[f32],
    tile: &[f32],
    tile_without: &dyn Fn(&[bool]) -> Option<Vec<f32>>,
    wall: &[bool],
    covered: &[u16],
    agree: &[f32],
    (cw, ch): (usize, usize),
    frame_plane: usize,
) -> Vec<bool> {
    let n = cw * ch;
    let (label, regions) = steady_regions(wall, covered, (cw, ch));
    let steady = |k: usize| label[k] != u32::MAX && covered[k] > 0 && agree[k] >= 0.6;
    let explained = |tile: &[f32], k: usize| {
        (0..3).all(|c| (median[c * n + k] - tile[c * n + k]).abs() <= EXPLAINED)
    };
    // Per region: steady pixels, and those the tile explains.
    let mut counts = vec![(0usize, 0usize); regions.len()];
    for k in (0..n).filter(|&k| steady(k)) {
        let c = &mut counts[label[k] as usize];
        c.0 += 1;
        c.1 += usize::from(explained(tile, k));
    }
    let share = |(steady, explained): (usize, usize)| explained as f32 / steady.max(1) as f32;
    let Some(main) = (0..regions.len()).max_by_key(|&i| regions[i].1) else {
        return vec![false; n];
    };
    if share(counts[main]) < UNEXPLAINED_BEST {
        return vec![false; n];
    }
    let min_area = (frame_plane / 256).max(16);
    let mut found = vec![false; n];
    for i in (0..regions.len()).filter(|&i| i != main && counts[i].0 >= min_area) {
        let members: Vec<bool> = label.iter().map(|&l| l == i as u32).collect();
        let Some(other) = tile_without(&members) else {
            continue;
        };
        let (mut total, mut hit) = (0usize, 0usize);
        for k in (0..n).filter(|&k| members[k] && steady(k)) {
            total += 1;
            hit += usize::from(explained(&other, k));
        }
        if share((total, hit)) < UNEXPLAINED_REGION {
            for (f, m) in found.iter_mut().zip(&members) {
                *f |= m;
            }
        }
    }
    dilate(&found, cw, ch, WALL_CLOSE)
}

/// The connected regions of canvas pixels outside `wall` (4-neighbours): each pixel's region
/// (`u32::MAX` on the wall) and per region its area and how many of its pixels meet the
/// canvas's edge (or the part of it no frame saw).
fn steady_regions(
    wall: &[bool],
    covered: &[u16],
    (cw, ch): (usize, usize),
) -> (Vec<u32>, Vec<(usize, usize)>) {
    let n = cw * ch;
    let neighbours = |k: usize| {
        let (x, y) = (k % cw, k / cw);
        [
            (x > 0).then(|| k - 1),
            (x + 1 < cw).then(|| k + 1),
            (y > 0).then(|| k - cw),
            (y + 1 < ch).then(|| k + cw),
        ]
        .into_iter()
        .flatten()
    };
    let edge = |k: usize| {
        let (x, y) = (k % cw, k / cw);
        x == 0 || y == 0 || x + 1 == cw || y + 1 == ch || covered[k] == 0
    };
    let mut label = vec![u32::MAX; n];
    let mut regions: Vec<(usize, usize)> = Vec::new();
    let mut stack = Vec::new();
    for start in 0..n {
        if wall[start] || label[start] != u32::MAX {
            continue;
        }
        let id = regions.len() as u32;
        let (mut area, mut contact) = (0, 0);
        label[start] = id;
        stack.push(start);
        while let Some(k) = stack.pop() {
            area += 1;
            contact += usize::from(edge(k));
            for j in neighbours(k) {
                if !wall[j] && label[j] == u32::MAX {
                    label[j] = id;
                    stack.push(j);
                }
            }
        }
        regions.push((area, contact));
    }
    (label, regions)
}

/// `mask` grown by `r` pixels (a square neighbourhood), separably.
fn dilate(mask: &[bool], w: usize, h: usize, r: usize) -> Vec<bool> {
    let mut rows = vec![false; w * h];
    for y in 0..h {
        for x in 0..w {
            let (a, b) = (x.saturating_sub(r), (x + r).min(w - 1));
            rows[y * w + x] = mask[y * w + a..=y * w + b].iter().any(|&m| m);
        }
    }
    let mut out = vec![false; w * h];
    for y in 0..h {
        let (a, b) = (y.saturating_sub(r), (y + r).min(h - 1));
        for x in 0..w {
            out[y * w + x] = (a..=b).any(|yy| rows[yy * w + x]);
        }
    }
    out
}

fn lower_median(v: &mut [f32]) -> f32 {
    let at = (v.len() - 1) / 2;
    *v.select_nth_unstable_by(at, f32::total_cmp).1
}

/// The luma plane of one planar RGB frame.
fn luma(f: &[f32], plane: usize) -> Vec<f32> {
    (0..plane)
        .map(|p| 0.299 * f[p] + 0.587 * f[plane + p] + 0.114 * f[2 * plane + p])
        .collect()
}

/// A frame's luma pyramid, finest first: (plane, width, height) per level.
type Pyramid = Vec<(Vec<f32>, usize, usize)>;

/// A step between neighbouring pixels of more than this (about five 8-bit levels, above GIF
/// dither) marks both pixels textured for the shift search.
const TEXTURE_STEP: f32 = 0.02;
/// The share of the textured pixels' differences a shift is scored on: the character's edges
/// are a minority among them, and flat faces no longer fill the lower half with zeros.
const TEXTURED_KEEP: f32 = 0.75;
/// How far from the previous motion (or none) a textured background's motion is searched,
/// in pixels per frame.
const TEXTURED_RADIUS: i32 = 6;
/// The share of an edge band's corner that must be textured for that corner to count.
const TEXTURE_CORNER_SHARE: f32 = 0.02;

/// The pixels on either side of a step of more than [`TEXTURE_STEP`] in `p`: where a shift
/// shows.
fn texture_mask(p: &[f32], w: usize, h: usize) -> Vec<bool> {
    let mut step = vec![false; w * h];
    for y in 0..h {
        for x in 0..w {
            let v = p[y * w + x];
            let right = x + 1 < w && (p[y * w + x + 1] - v).abs() > TEXTURE_STEP;
            let down = y + 1 < h && (p[(y + 1) * w + x] - v).abs() > TEXTURE_STEP;
            if right || down {
                step[y * w + x] = true;
                if x + 1 < w {
                    step[y * w + x + 1] = true;
                }
                if y + 1 < h {
                    step[(y + 1) * w + x] = true;
                }
            }
        }
    }
    step
}

/// Whether the background shows texture all round the frame: each of the edge band's four
/// corners has some of `mask`. Flat areas match at every shift and drown a pan's evidence in
/// the lower half's zeros (a zooming photo of tiles with flat faces), so such a clip's motion
/// is also scored on textured pixels only. A character alone on a flat background seldom
/// reaches every corner; where it does, [`steady_pan`] still keeps its hops from becoming the
/// camera's.
fn texture_all_round(mask: &[bool], w: usize, h: usize, band: usize) -> bool {
    let band = band.min(h / 2).min(w / 2).max(1);
    let share = |xs: std::ops::Range<usize>, ys: std::ops::Range<usize>| {
        let n = xs.len() * ys.len();
        let on = ys
            .flat_map(|y| xs.clone().map(move |x| (x, y)))
            .filter(|&(x, y)| mask[y * w + x])
            .count();
        n > 0 && on as f32 >= TEXTURE_CORNER_SHARE * n as f32
    };
    let corners = [
        share(0..band, 0..band),
        share(w - band..w, 0..band),
        share(0..band, h - band..h),
        share(w - band..w, h - band..h),
    ];
    corners.iter().all(|&c| c)
}

/// Halves a plane (2x2 mean), rounding odd sizes down.
fn half(src: &[f32], w: usize, h: usize) -> (Vec<f32>, usize, usize) {
    let (hw, hh) = ((w / 2).max(1), (h / 2).max(1));
    let mut out = vec![0f32; hw * hh];
    for y in 0..hh {
        for x in 0..hw {
            let at = |xx: usize, yy: usize| src[yy.min(h - 1) * w + xx.min(w - 1)];
            out[y * hw + x] = 0.25
                * (at(2 * x, 2 * y)
                    + at(2 * x + 1, 2 * y)
                    + at(2 * x, 2 * y + 1)
                    + at(2 * x + 1, 2 * y + 1));
        }
    }
    (out, hw, hh)
}

/// The trimmed mean of |a(x) − b(x + d)| over the overlap's pixels within `band` of the
/// frame's edge: the lower 50 % of the differences, so the character (which moves differently
/// from the background) is ignored. The band keeps a large character at the centre from being
/// that majority: under a moving camera it rides with the frame, and a whole-frame vote would
/// take its stillness for the camera's. With a `texture` mask, only the first plane's textured
/// pixels are scored, on their lower [`TEXTURED_KEEP`] (see [`texture_all_round`]). `None`
/// when the overlap is too small to judge. `diffs` is scratch space, reused across the candidate
/// shifts; the histogram is counted in the same pass that takes the differences.
fn shift_error(
    a: &[f32],
    b: &[f32],
    (w, h): (usize, usize),
    d: (i32, i32),
    search: &Search,
    diffs: &mut Vec<f32>,
) -> Option<f32> {
    let Search {
        step,
        band,
        texture,
        ..
    } = *search;
    let (dx, dy) = d;
    let x0 = 0.max(-dx) as usize;
    let x1 = (w as i64).min(w as i64 - i64::from(dx)).max(0) as usize;
    let y0 = 0.max(-dy) as usize;
    let y1 = (h as i64).min(h as i64 - i64::from(dy)).max(0) as usize;
    if x1 <= x0 + 2 || y1 <= y0 + 2 || (x1 - x0) * (y1 - y0) < (w * h) / 4 {
        return None;
    }
    // The columns a row contributes: all of them in the top and bottom bands, else the two
    // side bands (every column when `band` covers the frame).
    let sides = if 2 * band >= w {
        [(x0, x1), (x1, x1)]
    } else {
        [(x0, band.clamp(x0, x1)), ((w - band).clamp(x0, x1), x1)]
    };
    diffs.clear();
    // Two histograms, alternate samples: neighbouring differences often share a bin, and one
    // counter would make each increment wait for the last.
    let mut count = [[0u32; HALF_MEAN_BINS]; 2];
    for y in (y0..y1).step_by(step) {
        let by = (y as i64 + i64::from(dy)) as usize;
        let whole = [(x0, x1), (x1, x1)];
        let spans = if y < band || y + band >= h {
            &whole
        } else {
            &sides
        };
        for &(s0, s1) in spans {
            if s1 <= s0 {
                continue;
            }
            let bx = (s0 as i64 + i64::from(dx)) as usize;
            let ar = &a[y * w + s0..y * w + s1];
            let br = &b[by * w + bx..by * w + bx + (s1 - s0)];
            let first = diffs.len();
            if let Some(mask) = texture {
                let mr = &mask[y * w + s0..y * w + s1];
                diffs.extend(
                    ar.iter()
                        .zip(br)
                        .zip(mr)
                        .step_by(step)
                        .filter(|&(_, &m)| m)
                        .map(|((p, q), _)| (p - q).abs()),
                );
            } else if step == 1 {
                diffs.extend(ar.iter().zip(br).map(|(p, q)| (p - q).abs()));
            } else {
                diffs.extend(
                    ar.iter()
                        .step_by(step)
                        .zip(br.iter().step_by(step))
                        .map(|(p, q)| (p - q).abs()),
                );
            }
            let mut pairs = diffs[first..].chunks_exact(2);
            for pair in &mut pairs {
                count[0][half_mean_bin(pair[0])] += 1;
                count[1][half_mean_bin(pair[1])] += 1;
            }
            for &d in pairs.remainder() {
                count[0][half_mean_bin(d)] += 1;
            }
        }
    }
    if diffs.len() < 16 {
        return None;
    }
    let [mut total, odd] = count;
    for (t, o) in total.iter_mut().zip(odd) {
        *t += o;
    }
    let share = if texture.is_some() {
        TEXTURED_KEEP
    } else {
        0.5
    };
    Some(lower_share_mean_counted(diffs, &total, share))
}

const HALF_MEAN_BINS: usize = 1024;

/// Differences a shift search must take before half of its shifts go to a helper thread
/// (about a quarter of a millisecond of work against a thread start's tens of microseconds).
const PAR_SHIFT_WORK: usize = 1 << 18;

/// The histogram bin of a difference in [0, 1]: `⌊1024·d⌋`, the top bin taking 1.
#[inline]
fn half_mean_bin(d: f32) -> usize {
    // max first: it maps NaN to 0, so the clamped value is always a float in [0, 1023].
    let x = (d * HALF_MEAN_BINS as f32)
        .max(0.0)
        .min((HALF_MEAN_BINS - 1) as f32);
    // SAFETY: x is finite and in [0, 1023] (above), so the truncation fits a u32. The
    // checked `as` conversion costs its saturation tests in the plate's hottest loop.
    (unsafe { x.to_int_unchecked::<u32>() }) as usize
}

/// The mean of the smaller half of `v` (values in [0, 1]): [`lower_share_mean_counted`] with
/// the histogram counted here, for tests.
#[cfg(test)]
fn lower_half_mean(v: &mut [f32]) -> f32 {
    let mut count = [0u32; HALF_MEAN_BINS];
    for &d in v.iter() {
        count[half_mean_bin(d)] += 1;
    }
    lower_share_mean_counted(v, &count, 0.5)
}

/// The mean of the smallest `share` of `v` (values in [0, 1]), given its histogram `count`.
/// The histogram finds the bin where that share ends, so only that bin's values are ordered:
/// the motion search calls this for every candidate shift (a full selection there was the
/// plate's hot spot in `perf`). Reorders `v`.
fn lower_share_mean_counted(v: &mut [f32], count: &[u32; HALF_MEAN_BINS], share: f32) -> f32 {
    let keep = ((v.len() as f32 * share) as usize).clamp(1, v.len().max(1));
    let (mut below, mut edge) = (0usize, HALF_MEAN_BINS - 1);
    for (b, &c) in count.iter().enumerate() {
        if below + c as usize >= keep {
            edge = b;
            break;
        }
        below += c as usize;
    }
    let mut sum = 0f32;
    let mut n = 0;
    // Bin `edge` is [edge, edge + 1) in units of 1/1024 (the top bin also takes 1): compared
    // on the scaled value, which is exactly what `half_mean_bin` truncates.
    let (lo, hi) = (
        edge as f32,
        if edge == HALF_MEAN_BINS - 1 {
            f32::INFINITY
        } else {
            (edge + 1) as f32
        },
    );
    // Branch-free: which side of the edge a difference falls is a coin toss, and mispredicted
    // branches were most of this loop's time. Adding 0.0 leaves the sum as it was.
    for i in 0..v.len() {
        let d = v[i];
        let x = d * HALF_MEAN_BINS as f32;
        sum += if x < lo { d } else { 0.0 };
        // The edge bin's values gather at the front (the ones before i are done with; a
        // value outside the bin is overwritten by the next one in).
        v[n] = d;
        n += usize::from(x >= lo && x < hi);
    }
    let rest = keep - below;
    let edge_vals = &mut v[..n];
    // Mostly exact zeros (a still background at the right shift): the smallest `rest` are
    // zeros and sum to 0, which the selection below would take long to find.
    if below == 0 && edge_vals.iter().filter(|&&d| d == 0.0).count() >= rest {
        return 0.0;
    }
    if rest < n {
        edge_vals.select_nth_unstable_by(rest, f32::total_cmp);
    }
    sum += edge_vals[..rest].iter().sum::<f32>();
    sum / keep as f32
}

/// The best shift of `b` against `a` within `±radius` of the centres: the smallest error, ties
/// (within a small margin: periodic backgrounds alias) broken by the shift closest to
/// `prefer`.
fn best_shift(a: &[f32], b: &[f32], w: usize, h: usize, search: &Search) -> (i32, i32) {
    let Search {
        centres,
        radius,
        prefer,
        step,
        ..
    } = *search;
    let centre = centres.first().copied().unwrap_or((0, 0));
    let mut shifts: Vec<(i32, i32)> = centres
        .iter()
        .flat_map(|&(cx, cy)| {
            (cy - radius..=cy + radius)
                .flat_map(move |dy| (cx - radius..=cx + radius).map(move |dx| (dx, dy)))
        })
        .collect();
    shifts.sort_unstable();
    shifts.dedup();
    let score = |part: &[(i32, i32)]| -> Vec<((i32, i32), f32)> {
        let mut diffs = Vec::with_capacity(w * h / (step * step) + 1);
        part.iter()
            .filter_map(|&d| shift_error(a, b, (w, h), d, search, &mut diffs).map(|e| (d, e)))
            .collect()
    };
    // The candidate shifts are independent: half on a helper thread when there are enough
    // differences to pay for starting it (the coarsest level's wide search, and the finer
    // levels of frames from 128 px up); the choice below does not depend on it.
    let work = shifts.len() * (w / step) * (h / step);
    let scored: Vec<((i32, i32), f32)> = if shifts.len() >= 2 && work >= PAR_SHIFT_WORK {
        let halves = shifts.split_at(shifts.len() / 2);
        crate::par::par_map(2, 2, |k| score(if k == 0 { halves.0 } else { halves.1 })).concat()
    } else {
        score(&shifts)
    };
    let Some(best) = scored.iter().map(|s| s.1).min_by(f32::total_cmp) else {
        return centre;
    };
    // The absolute part is small: on a smooth photo (sky, water) a real pan beats no motion
    // by little, while a checker's aliases tie at exactly zero.
    let margin = best * 0.1 + 2.5e-4;
    scored
        .iter()
        .filter(|s| s.1 <= best + margin)
        .min_by_key(|s| {
            let (dx, dy) = s.0;
            (
                (dx - prefer.0).pow(2) + (dy - prefer.1).pow(2),
                dx.abs() + dy.abs(),
            )
        })
        .map_or(centre, |s| s.0)
}

/// Where [`best_shift`] looks: shifts within `radius` of any of `centres`, ties broken towards
/// `prefer`, every `step`-th pixel within `band` of the edge scored.
#[derive(Debug, Clone, Copy)]
struct Search<'a> {
    centres: &'a [(i32, i32)],
    radius: i32,
    prefer: (i32, i32),
    step: usize,
    band: usize,
    /// Only these pixels of the first plane are scored (see [`texture_all_round`]).
    texture: Option<&'a [bool]>,
}

/// Each frame's place on the canvas (the first frame's grid). Frame-to-frame translations,
/// coarse to fine over whole pixels, then refined to sub-pixel pans and zooms
/// ([`warp::refine`]; on the half-size level for frames over 256 px), chained; the
/// previous motion is the preferred tie-break, so a steady pan over a checker stays steady.
fn global_motion(rgb: &[f32], frames: usize, height: usize, width: usize) -> Vec<Warp> {
    let plane = height * width;
    // Pyramid levels down to about 64 px on the shorter side.
    let mut levels = 0;
    while (height.min(width) >> (levels + 1)) >= 48 && levels < 4 {
        levels += 1;
    }
    let fine = if height.min(width) > 256 {
        levels.min(1)
    } else {
        0
    };
    // Per frame (both cores): luma, its pyramid, and the smoothed level the refinement reads.
    #[allow(clippy::type_complexity)]
    let (pyramids, smoothed): (Vec<(Pyramid, [Vec<bool>; 2])>, Vec<Vec<f32>>) =
        crate::par::par_map(frames, 2, |t| {
            let mut pyr = vec![(
                luma(&rgb[t * 3 * plane..(t + 1) * 3 * plane], plane),
                width,
                height,
            )];
            for _ in 0..levels {
                let (src, w, h) = pyr.last().map(|p| (&p.0, p.1, p.2)).expect("level");
                let next = half(src, w, h);
                pyr.push(next);
            }
            let smooth = warp::smooth(&pyr[fine].0, pyr[fine].1, pyr[fine].2);
            // The steps' pixels, and those a pixel away.
            let edges = texture_mask(&pyr[0].0, width, height);
            let near = dilate(&edges, width, height, 1);
            ((pyr, [edges, near]), smooth)
        })
        .into_iter()
        .unzip();
    let (pyramids, masks): (Vec<Pyramid>, Vec<[Vec<bool>; 2]>) = pyramids.into_iter().unzip();
    // Whole-pixel motion of each pair (index t - 1 for frames t - 1 → t): content at x in
    // frame t - 1 is at x - d in frame t.
    // `texture`: which of each frame's masks a textured background is scored on.
    let steps = |texture: Option<usize>| -> Vec<(i32, i32)> {
        let textured = texture.is_some();
        let mut out = Vec::with_capacity(frames - 1);
        let mut last_step = (0i32, 0i32);
        for t in 1..frames {
            let mut d = (0i32, 0i32);
            // A textured background is searched at full size only, near the previous motion
            // and no motion: its flat faces hide it from the coarse levels, where only the
            // character's motion shows.
            let searched: Vec<usize> = if textured {
                vec![0]
            } else {
                (0..=levels).rev().collect()
            };
            for lvl in searched {
                let (a, w, h) = (
                    &pyramids[t - 1][lvl].0,
                    pyramids[t - 1][lvl].1,
                    pyramids[t - 1][lvl].2,
                );
                let b = &pyramids[t][lvl].0;
                let scale = 1i32 << lvl;
                let prefer = (last_step.0 / scale, last_step.1 / scale);
                let (centres, radius) = if textured {
                    let mut c = vec![prefer, (0, 0)];
                    c.dedup();
                    (c, TEXTURED_RADIUS)
                } else if lvl == levels {
                    let r = ((MAX_MOTION * h.min(w) as f32) as i32).clamp(2, 24);
                    (vec![(0, 0)], r)
                } else if lvl == 0 {
                    // A background finer than the coarse levels resolve (a small checker)
                    // leaves them only the character's motion to follow: at full size, the
                    // previous motion and no motion are candidates too, and the aliases of a
                    // periodic background then tie towards the steady one.
                    let mut c = vec![(d.0 * 2, d.1 * 2), prefer, (0, 0)];
                    c.dedup();
                    (c, 2)
                } else {
                    (vec![(d.0 * 2, d.1 * 2)], 2)
                };
                // A textured search runs at full size: over 256², every fourth pixel keeps
                // its samples to a 256² frame's.
                let step = match w * h {
                    n if textured && n > 256 * 256 => 4,
                    n if n > 128 * 128 => 2,
                    _ => 1,
                };
                let band = motion_band(w, h);
                d = best_shift(
                    a,
                    b,
                    w,
                    h,
                    &Search {
                        centres: &centres,
                        radius,
                        prefer,
                        step,
                        band,
                        texture: texture.map(|m| masks[t - 1][m].as_slice()),
                    },
                );
            }
            last_step = d;
            out.push(d);
        }
        out
    };
    let mut chosen = steps(None);
    let band = motion_band(width, height);
    let textured_pairs = (1..frames)
        .filter(|&t| texture_all_round(&masks[t - 1][1], width, height, band))
        .count();
    if textured_pairs > 0 {
        // Scored on textured pixels only, a character's edges can outvote the background's
        // where they are many (a large character, a coarse checker): its motion is taken
        // only when it is a steady pan, as a camera's is. The steps' own pixels tell a pan
        // of a pixel or two; where they are too few against the character's, the pixels
        // beside them too.
        // Over 256² the search scores every fourth row and column, which can miss a
        // two-pixel-wide edge altogether: there only the wider mask is used.
        let first = if width * height > 256 * 256 { 1 } else { 0 };
        if let Some(pan) = (first..2).find_map(|m| steady_pan(&steps(Some(m)))) {
            chosen = pan;
        }
    }
    let mut out = vec![Warp::IDENTITY; frames];
    let centre = ((width as f32 - 1.0) / 2.0, (height as f32 - 1.0) / 2.0);
    for t in 1..frames {
        let d = chosen[t - 1];
        // b(x + d) ≈ a(x): frame t's pixel x + d shows what frame t-1 showed at x. Large
        // frames are refined on the half-size level (a sample costs a quarter and 128 px
        // still measure a zoom); smaller ones need every pixel's leverage.
        let (w, h) = (pyramids[t][fine].1, pyramids[t][fine].2);
        let k = 1i32 << fine;
        let start = (d.0 / k, d.1 / k);
        let mut pair = warp::refine(&smoothed[t - 1], &smoothed[t], w, h, start);
        if fine > 0 {
            // Back to full-size pixels; a fraction the half-size level cannot tell from the
            // integer search's whole pixel is that pixel.
            let at_full = |v: f32, whole: i32| {
                let full = v * k as f32;
                if (full - whole as f32).abs() <= 0.1 {
                    whole as f32
                } else {
                    full
                }
            };
            pair.dx = at_full(pair.dx, d.0);
            pair.dy = at_full(pair.dy, d.1);
        }
        out[t] = out[t - 1].then(&pair, centre);
    }
    bounded(out, height, width)
}

/// The steps as a camera's steady pan (or slow zoom): a median step that moves, with at least
/// [`STEADY_SHARE`] of the steps within a pixel of it on both axes; the others (where the
/// character's edges won, or the first pairs' ties went to no motion) take the median.
/// `None` for a character's walk, hop or turn.
fn steady_pan(steps: &[(i32, i32)]) -> Option<Vec<(i32, i32)>> {
    let median = |mut v: Vec<i32>| {
        v.sort_unstable();
        v[v.len() / 2]
    };
    if steps.is_empty() {
        return None;
    }
    let m = (
        median(steps.iter().map(|s| s.0).collect()),
        median(steps.iter().map(|s| s.1).collect()),
    );
    let near = |s: &(i32, i32)| (s.0 - m.0).abs() <= 1 && (s.1 - m.1).abs() <= 1;
    let steady = steps.iter().filter(|s| near(s)).count();
    (m != (0, 0) && steady as f32 >= STEADY_SHARE * steps.len() as f32)
        .then(|| steps.iter().map(|s| if near(s) { *s } else { m }).collect())
}

/// The share of a clip's steps that must agree for [`steady_pan`].
const STEADY_SHARE: f32 = 0.75;

/// Largest canvas, as a multiple of the frame's area, a clip's motion may spread over (or
/// `MAX_CANVAS_PIXELS`, whichever is more: a fast pan over small frames is still sane).
const MAX_CANVAS_AREA: f32 = 16.0;
const MAX_CANVAS_PIXELS: f32 = 2048.0 * 2048.0;

/// The warps, or no motion at all where they would spread the frames over an absurd canvas
/// (a zoom chained past 2× either way, or a canvas over `MAX_CANVAS_AREA` frames): what a
/// scene cut or pure noise gives. The temporal statistics cost memory per canvas pixel, so
/// the canvas must stay bounded whatever the input.
fn bounded(warps: Vec<Warp>, height: usize, width: usize) -> Vec<Warp> {
    let zoom_ok = warps.iter().all(|w| (0.5..=2.0).contains(&w.scale));
    let canvas = zoom_ok.then(|| Canvas::new(&warps, height, width));
    let area_ok = canvas.is_some_and(|c| {
        (c.width * c.height) as f32
            <= (MAX_CANVAS_AREA * (width * height) as f32).max(MAX_CANVAS_PIXELS)
    });
    if area_ok {
        warps
    } else {
        vec![Warp::IDENTITY; warps.len()]
    }
}

/// How well a spatial model explains the background samples.
#[derive(Debug, Clone, Copy, PartialEq)]
struct Score {
    /// Share of the samples within `FIT_TOL`.
    share: f32,
    /// Median error of those samples.
    error: f32,
}

impl Score {
    const NONE: Score = Score {
        share: 0.0,
        error: f32::INFINITY,
    };

    /// Whether `self`, a model with more parameters, earns its place over `simpler`: it
    /// explains clearly more of the background, or as much with clearly less error.
    fn beats(self, simpler: Score) -> bool {
        self.share > simpler.share + 0.05
            || (self.share >= simpler.share - 0.01 && self.error < 0.8 * simpler.error)
    }
}

/// Fits constant, quadratic and periodic models to the samples of the canvas plane `median`
/// `[3, ch, cw]`; returns the best fit, its score, and its prediction over the whole canvas.
fn fit_spatial(
    median: &[f32],
    samples: &[usize],
    inner: &[usize],
    cw: usize,
    ch: usize,
) -> (SpatialFit, Score, Option<Vec<f32>>) {
    let cplane = cw * ch;
    let value = |k: usize, c: usize| median[c * cplane + k];
    let mut is_sample = vec![false; cplane];
    for &k in samples {
        is_sample[k] = true;
    }
    let score_of = |pred: &[f32]| -> Score {
        let mut explained: Vec<f32> = samples
            .iter()
            .map(|&k| {
                // The residual averaged over the sample's 3x3 sample neighbours: GIF dither
                // and codec noise average out, a model that misses the background does not.
                let (x, y) = (k % cw, k / cw);
                let mut sum = [0f32; 3];
                let mut n = 0f32;
                for j in y.saturating_sub(1)..(y + 2).min(ch) {
                    for i in x.saturating_sub(1)..(x + 2).min(cw) {
                        let q = j * cw + i;
                        if is_sample[q] {
                            for (c, s) in sum.iter_mut().enumerate() {
                                *s += pred[c * cplane + q] - value(q, c);
                            }
                            n += 1.0;
                        }
                    }
                }
                sum.iter().map(|s| (s / n).abs()).fold(0f32, f32::max)
            })
            .filter(|&e| e <= FIT_TOL)
            .collect();
        if explained.is_empty() {
            return Score::NONE;
        }
        let share = explained.len() as f32 / samples.len() as f32;
        let at = (explained.len() - 1) / 2;
        let error = *explained.select_nth_unstable_by(at, f32::total_cmp).1;
        Score { share, error }
    };
    // Constant.
    let mut constant = vec![0f32; 3 * cplane];
    for c in 0..3 {
        let mut v: Vec<f32> = samples.iter().map(|&k| value(k, c)).collect();
        let m = lower_median(&mut v);
        constant[c * cplane..(c + 1) * cplane].fill(m);
    }
    let s_const = score_of(&constant);
    let mut best = (SpatialFit::Constant, s_const, constant);
    if s_const.share >= 0.95 && s_const.error <= AGREE / 8.0 {
        return (best.0, best.1, Some(best.2));
    }
    // A plane seeded by the constant (the background's typical colour, not the character's),
    // then a quadratic surface seeded by the plane; each robustly reweighted. The periodic
    // fit is independent of them and runs beside them.
    let (surfaces, periodic) = crate::par::join(
        || {
            fit_surface(median, samples, cw, ch, false, Some((&best.2, 0.1))).map(|plane| {
                let quad = fit_surface(median, samples, cw, ch, true, Some((&plane, 0.03)));
                (plane, quad)
            })
        },
        || fit_periodic(median, samples, inner, cw, ch),
    );
    if let Some((plane, quad)) = surfaces {
        let sc = score_of(&plane);
        if sc.beats(best.1) {
            best = (SpatialFit::Smooth, sc, plane);
        }
        if let Some(quad) = quad {
            let sc = score_of(&quad);
            if sc.beats(best.1) {
                best = (SpatialFit::Smooth, sc, quad);
            }
        }
    }
    // The found and the refined periods' tiles: the better explains the ring (the refined,
    // second, on a tie).
    let mut periodic_best: Option<(Score, PeriodicFit)> = None;
    for fit in periodic {
        let sc = score_of(fit.judge.as_ref().unwrap_or(&fit.tile));
        if periodic_best
            .as_ref()
            .is_none_or(|(b, _)| sc.share > b.share || (sc.share == b.share && sc.error <= b.error))
        {
            periodic_best = Some((sc, fit));
        }
    }
    if let Some((_, PeriodicFit { period, tile, .. })) = periodic_best {
        let sc = score_of(&tile);
        // Stripes repeat along one axis only; a 2-D pattern whose second period was missed
        // also explains part of the ring with a 1-D tile, and then everywhere wrongly.
        let one_axis = period.0.is_infinite() || period.1.is_infinite();
        if sc.beats(best.1) && (!one_axis || sc.share >= ONE_AXIS_SHARE) {
            best = (SpatialFit::Periodic { period }, sc, tile);
        }
    }
    (best.0, best.1, Some(best.2))
}

/// A robust least-squares surface per channel: planar (`quadratic` false: linear gradients)
/// or quadratic (radial gradients, vignettes). The samples' weights are shared by the channels
/// (a character's pixel is an outlier in every channel, though it may match the background in
/// one) and start from `start`'s residuals when given (with a scale `start_scale`), so the fit
/// does not bend towards a character that covers a corner of the ring: least squares would
/// start halfway between the two, where reweighting cannot tell them apart.
fn fit_surface(
    median: &[f32],
    samples: &[usize],
    cw: usize,
    ch: usize,
    quadratic: bool,
    start: Option<(&[f32], f32)>,
) -> Option<Vec<f32>> {
    let cplane = cw * ch;
    let (sx, sy) = (cw.max(2) as f32 - 1.0, ch.max(2) as f32 - 1.0);
    let q = if quadratic { 1.0 } else { 0.0 };
    let basis = |k: usize| {
        let (x, y) = (
            (k % cw) as f32 / sx * 2.0 - 1.0,
            (k / cw) as f32 / sy * 2.0 - 1.0,
        );
        // An unused term is a zero column: the ridge in `solve6` sets its coefficient to 0.
        [1.0, x, y, q * x * x, q * x * y, q * y * y]
    };
    let weight_of = |r: f32, scale: f32| 1.0 / (1.0 + (r / scale).powi(2));
    let residual = |pred: &dyn Fn(usize, usize) -> f32, k: usize| {
        (0..3)
            .map(|c| (pred(c, k) - median[c * cplane + k]).abs())
            .fold(0f32, f32::max)
    };
    let mut weights: Vec<f32> = match start {
        Some((p, scale)) => samples
            .iter()
            .map(|&k| weight_of(residual(&|c, k| p[c * cplane + k], k), scale))
            .collect(),
        None => vec![1.0; samples.len()],
    };
    let mut coef = [[0f32; 6]; 3];
    for _round in 0..6 {
        for (c, cc) in coef.iter_mut().enumerate() {
            let mut ata = [[0f64; 6]; 6];
            let mut atb = [0f64; 6];
            for (i, &k) in samples.iter().enumerate() {
                let b = basis(k);
                let wgt = f64::from(weights[i]);
                let v = f64::from(median[c * cplane + k]);
                for r in 0..6 {
                    atb[r] += wgt * f64::from(b[r]) * v;
                    for j in 0..6 {
                        ata[r][j] += wgt * f64::from(b[r]) * f64::from(b[j]);
                    }
                }
            }
            *cc = solve6(ata, atb)?;
        }
        // Down-weight outliers (the character where it touches the border).
        let eval =
            |c: usize, k: usize| -> f32 { basis(k).iter().zip(&coef[c]).map(|(p, q)| p * q).sum() };
        for (i, &k) in samples.iter().enumerate() {
            weights[i] = weight_of(residual(&eval, k), 0.03);
        }
    }
    let mut out = vec![0f32; 3 * cplane];
    for (c, cc) in coef.iter().enumerate() {
        for k in 0..cplane {
            out[c * cplane + k] = basis(k)
                .iter()
                .zip(cc)
                .map(|(p, q)| p * q)
                .sum::<f32>()
                .clamp(0.0, 1.0);
        }
    }
    Some(out)
}

/// Gaussian elimination with partial pivoting for the 6x6 normal equations (ridge-regularised
/// so a degenerate sample set does not blow up).
fn solve6(mut a: [[f64; 6]; 6], mut b: [f64; 6]) -> Option<[f32; 6]> {
    for (i, row) in a.iter_mut().enumerate() {
        row[i] += 1e-6;
    }
    for col in 0..6 {
        let piv = (col..6).max_by(|&i, &j| a[i][col].abs().total_cmp(&a[j][col].abs()))?;
        if a[piv][col].abs() < 1e-12 {
            return None;
        }
        a.swap(col, piv);
        b.swap(col, piv);
        for r in 0..6 {
            if r != col {
                let f = a[r][col] / a[col][col];
                let pivot_row = a[col];
                for (x, p) in a[r].iter_mut().zip(pivot_row).skip(col) {
                    *x -= f * p;
                }
                b[r] -= f * b[col];
            }
        }
    }
    let mut x = [0f32; 6];
    for i in 0..6 {
        x[i] = (b[i] / a[i][i]) as f32;
    }
    Some(x)
}

/// One axis's period from sample pairs `p` apart: among the local minima (4–130 px,
/// quarter-pixel steps) of the mean colour difference that come close to the least one, the
/// shortest that differs far less than at half its period (a gradient, or a checker of large
/// squares, also differs little at small shifts, but not periodically), if that least is well
/// below the typical difference. `None` for an axis without repetition.
fn axis_period(median: &[f32], sample: &[bool], cw: usize, ch: usize, across: bool) -> Option<f32> {
    let cplane = cw * ch;
    let len = if across { cw } else { ch };
    let max_p = 130f32.min(len as f32 / 2.0);
    if max_p < 4.0 {
        return None;
    }
    let stride = if cplane > 200_000 { 3 } else { 1 };
    // Per shift: the mean pair difference, and the mean of its best `PERIOD_KEEP` share.
    let err_at = |p: f32| -> Option<(f32, f32)> {
        let (i0, frac) = (p.floor() as usize, p.fract());
        let mut diffs = Vec::new();
        for y in (0..ch).step_by(if across { stride } else { 1 }) {
            for x in (0..cw).step_by(if across { 1 } else { stride }) {
                let pos = if across { x } else { y };
                if pos + i0 + 1 >= len {
                    continue;
                }
                let at = |o: usize| {
                    if across {
                        y * cw + x + o
                    } else {
                        (y + o) * cw + x
                    }
                };
                let (k, k0, k1) = (at(0), at(i0), at(i0 + 1));
                if !(sample[k] && sample[k0] && sample[k1]) {
                    continue;
                }
                let mut d = 0f32;
                for c in 0..3 {
                    let m = &median[c * cplane..(c + 1) * cplane];
                    d += (m[k] - (m[k0] * (1.0 - frac) + m[k1] * frac)).abs();
                }
                diffs.push(d);
            }
        }
        let n = diffs.len();
        if n < 64 {
            return None;
        }
        let mean = diffs.iter().sum::<f32>() / n as f32;
        let keep = ((n as f32 * PERIOD_KEEP) as usize).max(1);
        diffs.select_nth_unstable_by(keep - 1, f32::total_cmp);
        let trimmed = diffs[..keep].iter().sum::<f32>() / keep as f32;
        Some((mean, trimmed))
    };
    let mut errs = Vec::new();
    let mut p = 4.0f32;
    while p <= max_p {
        if let Some((e, t)) = err_at(p) {
            errs.push((p, e, t));
        }
        p += 0.25;
    }
    let stats = |f: fn(&(f32, f32, f32)) -> f32| {
        let mut v: Vec<f32> = errs.iter().map(f).collect();
        let min = v.iter().copied().min_by(f32::total_cmp)?;
        let max = v.iter().copied().max_by(f32::total_cmp)?;
        Some((min, max, lower_median(&mut v)))
    };
    let (min, max, typical) = stats(|e| e.1)?;
    // The absolute cap was 0.1: a character that never moves on the ring adds its pairs'
    // difference at every shift (a barrel on a grey/white checker: 0.12 at its period).
    if max < 0.06 || min > 0.35 * typical.max(1e-6) || min > 0.15 {
        return None;
    }
    // Dips are found on the trimmed curve, where a character sitting on the ring (a
    // quarter of its pairs at most) no longer fills the dip at the period, and located on the
    // mean's, whose V is sharp where the trimmed one is flat.
    let (min_t, _, typical_t) = stats(|e| e.2)?;
    let near = min_t + 0.15 * (typical_t - min_t);
    // Candidates in order of period: the mean's lowest point in or near each run below
    // `near`. The first that is not a gradient's (large cells also differ little at small shifts) wins.
    let mut i = 0;
    while i < errs.len() {
        if errs[i].2 > near {
            i += 1;
            continue;
        }
        let mut best = i;
        while i < errs.len() && errs[i].2 <= near {
            if errs[i].1 < errs[best].1 {
                best = i;
            }
            i += 1;
        }
        // Noise can split a dip's trimmed run short of its bottom: the mean's lowest within
        // a tenth of the period (the next dip is a whole period away).
        let around = errs[best].0;
        let (p, e, _) = errs
            .iter()
            .filter(|x| (x.0 - around).abs() <= 0.1 * around)
            .fold(errs[best], |a, &x| if x.1 < a.1 { x } else { a });
        if err_at(p / 2.0).is_some_and(|half| half.0 >= 2.0 * e + 0.05) {
            // The trimmed curve cannot see what tells a period from its fraction when that is
            // under a quarter of the pairs (thin grid lines, small dots, or block noise on top):
            // a multiple whose mean is clearly lower is the period. Whole periods only, as
            // baked-in patterns are drawn: a fractional one's multiple can land on a whole
            // shift and differ less for that alone.
            let mut found = (p, e);
            if p.fract() == 0.0 {
                for k in 2..=8 {
                    let want = k as f32 * p;
                    if let Some(&(q, m, _)) = errs.iter().find(|x| x.0 == want)
                        && m + 0.02 < 0.5 * found.1
                    {
                        found = (q, m);
                    }
                }
            }
            return Some(found.0);
        }
    }
    None
}

/// The exact period near `p` along one axis (or a fraction of it): textures drawn at a
/// fractional cell size repeat only approximately at any whole or quarter-pixel shift, and a
/// tile built with a period off by δ drifts by δ per repeat, a pixel or more across the
/// canvas, where the plate then shows seams at every cell edge. Each whole line of the ring
/// samples `sample` (row for `across`) is folded at a candidate period; the right period
/// leaves the fold with the least total variation. Candidates: `p / k` for k ≤ 4 (fractions at
/// least 8 px long with four repeats per line), each searched ±0.6 px in 0.02 px steps, then
/// ±0.03 in 0.005 around the best; the shortest within 10 % of the least wins (the
/// fundamental), the middle of a flat bottom, and a whole period unless clearly worse.
fn refine_period(
    median: &[f32],
    sample: &[bool],
    cw: usize,
    ch: usize,
    across: bool,
    p: f32,
) -> f32 {
    let cplane = cw * ch;
    let (len, lines) = if across { (cw, ch) } else { (ch, cw) };
    let step = if cplane > 200_000 { 2 } else { 1 };
    let at = |line: usize, pos: usize| {
        if across {
            line * cw + pos
        } else {
            pos * cw + line
        }
    };
    // The samples per line as (position, value), read once.
    let mut points: Vec<(usize, [f32; 3])> = Vec::new();
    let mut starts = vec![0usize];
    for line in (0..lines).step_by(step) {
        for pos in 0..len {
            let k = at(line, pos);
            if sample[k] {
                points.push((pos, std::array::from_fn(|c| median[c * cplane + k])));
            }
        }
        starts.push(points.len());
    }
    // The folded line's total variation: each line's samples in order of their phase at
    // `period`, summed absolute steps between neighbours. At the true period the fold is the
    // pattern itself (a step per edge); off it, repeats drift apart and their samples
    // interleave across every edge. Unlike binning, it needs no bin width and does not reward
    // a period that spreads samples thinly.
    let mut fold: Vec<(u32, [f32; 3])> = Vec::new();
    let mut spread = |period: f32| -> Option<f64> {
        let (mut tv, mut n) = (0f64, 0usize);
        for w in starts.windows(2) {
            // Whole lines of the ring only: a line through a still character folds its
            // colours into the sum differently at every period.
            let line = &points[w[0]..w[1]];
            if line.len() * 4 < len * 3 {
                continue;
            }
            fold.clear();
            fold.extend(
                line.iter()
                    .map(|&(pos, v)| (((pos as f32 % period) * 64.0) as u32, v)),
            );
            fold.sort_unstable_by_key(|f| f.0);
            for pair in fold.windows(2) {
                tv += (0..3)
                    .map(|c| f64::from((pair[1].1[c] - pair[0].1[c]).abs()))
                    .sum::<f64>();
            }
            n += fold.len();
        }
        (n >= 64).then(|| tv / n as f64)
    };
    let mut best: Vec<(f32, f64)> = Vec::new();
    for k in 1..=4 {
        let base = p / k as f32;
        // A short fraction can line up with a GIF's ordered dither instead of the pattern.
        if k > 1 && base < 8.0 {
            break;
        }
        if k > 1 && base * 4.0 > len as f32 {
            continue;
        }
        // Coarse (±0.6 px: the shift search favours whole shifts, where no interpolation
        // blurs the edges), then fine around the coarse best.
        let mut scan = |centre: f32, half: i32, step: f32| -> Vec<(f32, f64)> {
            (-half..=half)
                .filter_map(|i| {
                    let q = centre + i as f32 * step;
                    spread(q).map(|e| (q, e))
                })
                .collect()
        };
        // The middle of a flat bottom, at both scales: hard edges on whole pixels fold
        // without interleaving anywhere within a pixel of a large period (two repeats).
        let middle = |scan: &[(f32, f64)]| -> Option<(f32, f64)> {
            let least = scan.iter().map(|s| s.1).min_by(f64::total_cmp)?;
            let flat: Vec<f32> = scan
                .iter()
                .filter(|s| s.1 <= least + 1e-7)
                .map(|s| s.0)
                .collect();
            Some((flat[flat.len() / 2], least))
        };
        let Some((centre, _)) = middle(&scan(base, 30, 0.02)) else {
            continue;
        };
        if let Some(fine) = middle(&scan(centre, 6, 0.005)) {
            best.push(fine);
        }
    }
    let Some(least) = best.iter().map(|b| b.1).min_by(f64::total_cmp) else {
        return p;
    };
    let Some(&(found, found_spread)) = best
        .iter()
        .filter(|b| b.1 <= 1.1 * least + 1e-6)
        .min_by(|a, b| a.0.total_cmp(&b.0))
    else {
        return p;
    };
    // Baked-in checkers, the common case, are drawn in whole pixels: a whole period within
    // 4× of the found one's variation is kept. On the training split's checkers the whole
    // period's variation was 1.0–1.6× the found one's where the whole one was right (a flat
    // bottom's middle can sit tenths off it, and dither or a character on the ring tilts it)
    // and 2.6–47× where the cells were fractional; the margin is wide because a fractional
    // period wrongly taken paints seams over the whole plate.
    let whole = found.round();
    match spread(whole) {
        Some(w) if w <= WHOLE_PERIOD_MARGIN * found_spread + 1e-4 => whole,
        _ => found,
    }
}

/// A tile's periods across and down (`None`: that axis does not repeat).
type Periods = (Option<f32>, Option<f32>);
/// The period pairs whose tiles compete: as the shift search found them, refined when that
/// differs, and, when refinement rounded one axis of a square tile to whole pixels and not
/// the other (its variation there within the margin, e.g. under GIF dither), the fractional
/// one on both: the rounded axis would drift a fraction of a pixel every repeat.
fn candidate_periods(raw: Periods, refined: Periods) -> Vec<Periods> {
    let mut periods = vec![raw];
    if refined != raw {
        periods.push(refined);
    }
    if let (Some(x), Some(y)) = refined
        && (x.fract() == 0.0) != (y.fract() == 0.0)
        && (x - y).abs() < 1.0
    {
        let f = if x.fract() == 0.0 { y } else { x };
        periods.push((Some(f), Some(f)));
    }
    periods
}

/// Periodic candidates for the samples: the periods as the shift search found them, and
/// refined (see [`refine_period`]) when that differs, each with its tile.
fn fit_periodic(
    median: &[f32],
    samples: &[usize],
    inner: &[usize],
    cw: usize,
    ch: usize,
) -> Vec<PeriodicFit> {
    let cplane = cw * ch;
    let mut mask = vec![false; cplane];
    for &k in samples {
        mask[k] = true;
    }
    let axis = |across: bool| {
        axis_period(median, &mask, cw, ch, across)
            .map(|p| (p, refine_period(median, &mask, cw, ch, across, p)))
    };
    let (ax, ay) = crate::par::join(|| axis(true), || axis(false));
    if ax.is_none() && ay.is_none() {
        return Vec::new();
    }
    let raw = (ax.map(|a| a.0), ay.map(|a| a.0));
    let refined = (ax.map(|a| a.1), ay.map(|a| a.1));
    let periods = candidate_periods(raw, refined);
    // Two candidates are judged by tiles built from the inside alone, scored on the ring
    // they never saw: a fractional period's fine bins can otherwise fit a character that sits
    // on the ring and look better for it.
    let held_out = periods.len() > 1 && inner.len() >= 1024;
    let palette = RingPalette::new(median, samples, cplane);
    periods
        .into_iter()
        .filter_map(|period| {
            let tile = periodic_tile(median, samples, inner, &palette, (cw, ch), period)?;
            let judge = if held_out {
                Some(periodic_tile(
                    median,
                    &[],
                    inner,
                    &palette,
                    (cw, ch),
                    period,
                )?)
            } else {
                None
            };
            let (px, py) = period;
            Some(PeriodicFit {
                period: (px.unwrap_or(f32::INFINITY), py.unwrap_or(f32::INFINITY)),
                tile,
                judge,
            })
        })
        .collect()
}

/// A periodic candidate: its periods, its tile, and (when candidates compete) the tile built
/// without the ring samples that judge it.
struct PeriodicFit {
    period: (f32, f32),
    tile: Vec<f32>,
    judge: Option<Vec<f32>>,
}

/// The tile of periods `(px, py)` (`None`: that axis does not repeat) over the canvas: the
/// per-channel median of the samples in each phase bin (where the ring has too few, of the
/// inside's samples in colours `palette` says the ring shows often), empty bins filled from
/// their neighbours.
fn periodic_tile(
    median: &[f32],
    samples: &[usize],
    inner: &[usize],
    palette: &RingPalette,
    (cw, ch): (usize, usize),
    (px, py): (Option<f32>, Option<f32>),
) -> Option<Vec<f32>> {
    let cplane = cw * ch;
    // A whole period: one bin per pixel phase, exact (integer arithmetic, no rounding at the
    // bin edges). A fractional one: quarter-pixel bins, so few bins straddle a cell edge.
    let bins = |p: Option<f32>| {
        p.map_or(1, |p| {
            let per_px = if p.fract() == 0.0 { 1.0 } else { 4.0 };
            ((per_px * p).round() as usize).max(1)
        })
    };
    let (nx, ny) = (bins(px), bins(py));
    let bin = |pos: usize, p: Option<f32>, n: usize| -> usize {
        p.map_or(0, |p| {
            if p.fract() == 0.0 {
                pos % n
            } else {
                ((((pos as f32) % p) / p * n as f32) as usize).min(n - 1)
            }
        })
    };
    let collect = |from: &[usize]| {
        let mut tile: Vec<Vec<f32>> = vec![Vec::new(); nx * ny * 3];
        for &k in from {
            let (x, y) = (k % cw, k / cw);
            let b = bin(y, py, ny) * nx + bin(x, px, nx);
            for c in 0..3 {
                tile[b * 3 + c].push(median[c * cplane + k]);
            }
        }
        tile
    };
    let (ring, inside) = (collect(samples), collect(inner));
    let mut value = vec![f32::NAN; nx * ny * 3];
    let mut seen = vec![false; nx * ny];
    // The ring's samples where it has a few, in the colours the ring shows often: a
    // fractional period's bin is met in a few bands only, and a still character the frame
    // cuts can be half of its samples there (the median would then mix the two), or all of
    // them (a colour the ring shows rarely: the bin is then left to the rules below).
    let shares: Vec<Vec<f32>> = (0..nx * ny)
        .map(|b| {
            (0..ring[b * 3].len())
                .map(|j| palette.share(&sample_at(&ring, b, j)))
                .collect()
        })
        .collect();
    let most = |b: usize| shares[b].iter().copied().fold(0f32, f32::max);
    let top = (0..nx * ny).map(most).fold(0f32, f32::max);
    let ring_votes = |b: usize| {
        let ring = &ring;
        (0..ring[b * 3].len()).map(move |j| sample_at(ring, b, j))
    };
    for b in 0..nx * ny {
        if ring[b * 3].len() < 2 || most(b) < RARE_IN_RING * top {
            continue;
        }
        seen[b] = true;
        let votes: Vec<[f32; 3]> = ring_votes(b).collect();
        value[b * 3..b * 3 + 3].copy_from_slice(&common_median(&votes, &shares[b]));
    }
    // Where the ring has too few samples of a phase: the inside's with them, in the colours
    // the ring shows often (a large tile's phase has few repeats inside, and a character that
    // never moves can be half of them).
    let inside_vote = |b: usize| -> Option<[f32; 3]> {
        let votes: Vec<[f32; 3]> = ring_votes(b)
            .chain((0..inside[b * 3].len()).map(|j| sample_at(&inside, b, j)))
            .collect();
        let share: Vec<f32> = votes.iter().map(|v| palette.share(v)).collect();
        (!votes.is_empty()).then(|| common_median(&votes, &share))
    };
    // A fractional period's quarter-pixel bins drift against the pixel grid: each bin is met
    // only by pixels in bands some periods wide, and where such a band never crosses the
    // ring, the inside alone votes for its bins; where a still character covers the band, it
    // is all the inside shows. The ring's bins a fraction of a pixel of phase away say what
    // colours lie there: an inside vote of none of them is the character's, and then the two
    // nearest seen bins along an axis are taken when they agree (no cell edge between them),
    // else the median of those around it.
    let reach = |p: Option<f32>| {
        if p.is_some_and(|p| p.fract() != 0.0) {
            3
        } else {
            0
        }
    };
    let (rx, ry) = (reach(px), reach(py));
    let at = |x: usize, y: usize| (y % ny) * nx + x % nx;
    let close = |a: &[f32], b: &[f32]| (0..3).all(|c| (a[c] - b[c]).abs() <= AGREE);
    let mut near: [Vec<f32>; 3] = Default::default();
    'bins: for b in 0..nx * ny {
        if seen[b] {
            continue;
        }
        let (bx, by) = (b % nx, b / nx);
        let vote = inside_vote(b);
        let (sx, sy) = (rx.min(2), ry.min(2));
        let mut around = (0..=2 * sy)
            .flat_map(|dy| (0..=2 * sx).map(move |dx| (dx, dy)))
            .map(|(dx, dy)| at(bx + nx + dx - sx, by + ny + dy - sy))
            .filter(|&nb| seen[nb])
            .peekable();
        let plausible = match &vote {
            Some(v) => around.peek().is_none() || around.any(|nb| close(&value[nb * 3..], v)),
            None => false,
        };
        if let (true, Some(v)) = (plausible, vote) {
            value[b * 3..b * 3 + 3].copy_from_slice(&v);
            continue;
        }
        // The nearest seen bin forward or back along an axis, within `reach` bins.
        let nearest = |across: bool, forward: bool, reach: usize| {
            (1..=reach)
                .map(|d| match (across, forward) {
                    (true, true) => at(bx + d, by),
                    (true, false) => at(bx + nx - d, by),
                    (false, true) => at(bx, by + d),
                    (false, false) => at(bx, by + ny - d),
                })
                .find(|&nb| seen[nb])
        };
        for (across, r) in [(true, rx), (false, ry)] {
            if let (Some(a), Some(z)) = (nearest(across, true, r), nearest(across, false, r))
                && close(&value[a * 3..], &value[z * 3..])
            {
                for c in 0..3 {
                    value[b * 3 + c] = 0.5 * (value[a * 3 + c] + value[z * 3 + c]);
                }
                continue 'bins;
            }
        }
        for r in 1..=rx.max(ry).min(2) {
            let (sx, sy) = (r.min(rx), r.min(ry));
            near.iter_mut().for_each(Vec::clear);
            for dy in 0..=2 * sy {
                for dx in 0..=2 * sx {
                    let nb = at(bx + nx + dx - sx, by + ny + dy - sy);
                    for (c, v) in near.iter_mut().enumerate() {
                        v.extend_from_slice(&ring[nb * 3 + c]);
                    }
                }
            }
            if near[0].len() >= 2 {
                for (c, v) in near.iter_mut().enumerate() {
                    value[b * 3 + c] = lower_median(v);
                }
                continue 'bins;
            }
        }
        if let Some(v) = vote {
            value[b * 3..b * 3 + 3].copy_from_slice(&v);
        }
    }
    // Fill empty bins from filled neighbours (cyclic), a few sweeps.
    for _ in 0..(nx + ny) {
        let mut changed = false;
        let snapshot = value.clone();
        for by in 0..ny {
            for bx in 0..nx {
                let b = by * nx + bx;
                if !snapshot[b * 3].is_nan() {
                    continue;
                }
                let nbrs = [
                    by * nx + (bx + 1) % nx,
                    by * nx + (bx + nx - 1) % nx,
                    ((by + 1) % ny) * nx + bx,
                    ((by + ny - 1) % ny) * nx + bx,
                ];
                if let Some(&nb) = nbrs.iter().find(|&&nb| !snapshot[nb * 3].is_nan()) {
                    for c in 0..3 {
                        value[b * 3 + c] = snapshot[nb * 3 + c];
                    }
                    changed = true;
                }
            }
        }
        if !changed {
            break;
        }
    }
    if value.iter().any(|v| v.is_nan()) {
        return None;
    }
    let mut out = vec![0f32; 3 * cplane];
    for y in 0..ch {
        let by = bin(y, py, ny);
        for x in 0..cw {
            let b = by * nx + bin(x, px, nx);
            for c in 0..3 {
                out[c * cplane + y * cw + x] = value[b * 3 + c];
            }
        }
    }
    Some(out)
}

/// Sample `j` of bin `b` of per-channel vote lists (`[bins * 3]`).
fn sample_at(lists: &[Vec<f32>], b: usize, j: usize) -> [f32; 3] {
    std::array::from_fn(|c| lists[b * 3 + c][j])
}

/// The per-channel median of `votes` in the colours the ring shows often: those whose
/// `share` is at least half the best one's. `votes` must not be empty.
fn common_median(votes: &[[f32; 3]], share: &[f32]) -> [f32; 3] {
    let most = share.iter().copied().fold(0f32, f32::max);
    std::array::from_fn(|c| {
        let mut v: Vec<f32> = votes
            .iter()
            .zip(share)
            .filter(|&(_, &sh)| sh >= 0.5 * most)
            .map(|(v, _)| v[c])
            .collect();
        lower_median(&mut v)
    })
}

/// How often the ring samples show a colour: a coarse RGB histogram (16 levels a channel)
/// read with its neighbouring cells, so a colour on a cell's edge is not split.
struct RingPalette {
    counts: Vec<u32>,
    total: f32,
}

impl RingPalette {
    const LEVELS: usize = 16;

    fn cell(v: f32) -> usize {
        ((v.clamp(0.0, 1.0) * Self::LEVELS as f32) as usize).min(Self::LEVELS - 1)
    }

    fn new(median: &[f32], samples: &[usize], cplane: usize) -> Self {
        let l = Self::LEVELS;
        let mut counts = vec![0u32; l * l * l];
        for &k in samples {
            let [r, g, b] = std::array::from_fn(|c| Self::cell(median[c * cplane + k]));
            counts[(r * l + g) * l + b] += 1;
        }
        RingPalette {
            counts,
            total: samples.len().max(1) as f32,
        }
    }

    /// The share of ring samples within about one cell of `rgb`.
    fn share(&self, rgb: &[f32; 3]) -> f32 {
        let l = Self::LEVELS as isize;
        let [r, g, b] = rgb.map(|v| Self::cell(v) as isize);
        let mut n = 0u32;
        for i in r - 1..=r + 1 {
            for j in g - 1..=g + 1 {
                for k in b - 1..=b + 1 {
                    if (0..l).contains(&i) && (0..l).contains(&j) && (0..l).contains(&k) {
                        n += self.counts[((i * l + j) * l + k) as usize];
                    }
                }
            }
        }
        n as f32 / self.total
    }
}

/// Fills the unknown pixels of `plane` `[3, h, w]` smoothly from the known ones (pull-push:
/// weighted means down a pyramid, then back up), the membrane fill of a hole in one pass.
fn pull_push_fill(plane: &mut [f32], known: &[bool], w: usize, h: usize) {
    let n = w * h;
    let mut levels: Vec<(Vec<f32>, Vec<f32>, usize, usize)> = Vec::new();
    let mut vals = vec![0f32; 3 * n];
    let mut wts = vec![0f32; n];
    for k in 0..n {
        if known[k] {
            wts[k] = 1.0;
            for c in 0..3 {
                vals[c * n + k] = plane[c * n + k];
            }
        }
    }
    levels.push((vals, wts, w, h));
    while {
        let l = levels.last().expect("level");
        l.2 > 1 || l.3 > 1
    } {
        let (v, wt, lw, lh) = levels.last().expect("level");
        let (nw, nh) = (lw.div_ceil(2), lh.div_ceil(2));
        let (lw, lh) = (*lw, *lh);
        let mut nv = vec![0f32; 3 * nw * nh];
        let mut nwt = vec![0f32; nw * nh];
        for y in 0..lh {
            for x in 0..lw {
                let k = y * lw + x;
                let q = (y / 2) * nw + x / 2;
                nwt[q] += wt[k];
                for c in 0..3 {
                    nv[c * nw * nh + q] += v[c * lw * lh + k] * wt[k];
                }
            }
        }
        for q in 0..nw * nh {
            if nwt[q] > 0.0 {
                for c in 0..3 {
                    nv[c * nw * nh + q] /= nwt[q];
                }
                nwt[q] = nwt[q].min(1.0);
            }
        }
        levels.push((nv, nwt, nw, nh));
    }
    // Push: fill each level's gaps from the coarser level.
    for i in (0..levels.len() - 1).rev() {
        let (coarse, rest) = levels.split_at_mut(i + 1);
        let (cv, _, cw, chh) = &rest[0];
        let (fv, fwt, fw, fh) = &mut coarse[i];
        let (fw, fh) = (*fw, *fh);
        for y in 0..fh {
            for x in 0..fw {
                let k = y * fw + x;
                let a = fwt[k].min(1.0);
                if a >= 1.0 {
                    continue;
                }
                // Bilinear from the coarser level: nearest-neighbour leaves blocks the size
                // of the coarse pixels, which a key then reads as edges.
                let taps = Taps::new(
                    *cw,
                    *chh,
                    ((x as f32 + 0.5) / 2.0 - 0.5).clamp(0.0, (cw - 1) as f32),
                    ((y as f32 + 0.5) / 2.0 - 0.5).clamp(0.0, (chh - 1) as f32),
                );
                for c in 0..3 {
                    let up = taps.sample(&cv[c * cw * chh..(c + 1) * cw * chh]);
                    fv[c * fw * fh + k] = fv[c * fw * fh + k] * a + up * (1.0 - a);
                }
                fwt[k] = 1.0;
            }
        }
    }
    let (v, _, _, _) = &levels[0];
    for k in 0..n {
        if !known[k] {
            for c in 0..3 {
                plane[c * n + k] = v[c * n + k];
            }
        }
    }
}

#[cfg(test)]
mod tests;

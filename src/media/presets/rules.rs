//! The platform rules as plain data, plus the pure arithmetic that turns a rule into a target
//! (canvas size, LINE's frame count and number of plays). Kept free of encoders so every rule
//! can be unit-tested on numbers alone.
//!
//! Every size cap is in bytes with **1 KB = 1000 bytes**: the platforms disagree on (or do not
//! say) whether "KB" means 1000 or 1024 bytes, and the smaller reading is always accepted.

use serde::Serialize;

use crate::error::{Error, Result};
use crate::media::{Fit, Format};

/// Tolerance for comparing durations read back from containers (millisecond timestamps).
pub(crate) const TIME_EPS: f64 = 5e-4;

/// What the canvas must measure.
#[derive(Debug, Clone, Copy, PartialEq, Serialize)]
#[serde(tag = "kind", rename_all = "snake_case")]
pub enum CanvasRule {
    /// Exactly `width × height`.
    Exact { width: u32, height: u32 },
    /// One side exactly `side`, the other at most `side` (Telegram).
    OneSide { side: u32 },
    /// At most `max_width × max_height`, with the width or the height at least `min_side` (LINE).
    Within {
        max_width: u32,
        max_height: u32,
        min_side: u32,
    },
}

impl CanvasRule {
    /// True when `width × height` satisfies the rule.
    pub fn allows(&self, width: u32, height: u32) -> bool {
        match *self {
            CanvasRule::Exact {
                width: w,
                height: h,
            } => (width, height) == (w, h),
            CanvasRule::OneSide { side } => {
                width <= side && height <= side && (width == side || height == side)
            }
            CanvasRule::Within {
                max_width,
                max_height,
                min_side,
            } => {
                width <= max_width
                    && height <= max_height
                    && (width >= min_side || height >= min_side)
                    && width > 0
                    && height > 0
            }
        }
    }

    /// The rule in words, for reports and `--help`.
    pub fn describe(&self) -> String {
        match *self {
            CanvasRule::Exact { width, height } => format!("exactly {width}x{height}"),
            CanvasRule::OneSide { side } => {
                format!("one side exactly {side}, the other ≤ {side}")
            }
            CanvasRule::Within {
                max_width,
                max_height,
                min_side,
            } => format!("≤ {max_width}x{max_height}, width or height ≥ {min_side}"),
        }
    }

    /// The canvas a `src_w × src_h` clip is placed on.
    ///
    /// With [`Fit::Contain`] the flexible rules keep the clip's aspect ratio and add no padding
    /// (the longer side is scaled to the limit), because transparent padding only costs bytes;
    /// [`Fit::Cover`] and [`Fit::Stretch`] fill the largest allowed box instead. A `requested`
    /// size must itself satisfy the rule.
    pub fn target(
        &self,
        src_w: u32,
        src_h: u32,
        fit: Fit,
        requested: Option<(u32, u32)>,
    ) -> Result<(u32, u32)> {
        if src_w == 0 || src_h == 0 {
            return Err(Error::Invalid(format!("source canvas is {src_w}x{src_h}")));
        }
        if let Some((w, h)) = requested {
            if !self.allows(w, h) {
                return Err(Error::Invalid(format!(
                    "size {w}x{h} does not meet the canvas rule ({})",
                    self.describe()
                )));
            }
            return Ok((w, h));
        }
        let (box_w, box_h) = match *self {
            CanvasRule::Exact { width, height } => return Ok((width, height)),
            CanvasRule::OneSide { side } => (side, side),
            CanvasRule::Within {
                max_width,
                max_height,
                ..
            } => (max_width, max_height),
        };
        if fit != Fit::Contain {
            return Ok((box_w, box_h));
        }
        let (sw, sh) = (src_w as f64, src_h as f64);
        let k = (box_w as f64 / sw).min(box_h as f64 / sh);
        // The side that limits the scale gets the box's size exactly (no rounding drift).
        let (w, h) = if box_w as f64 / sw <= box_h as f64 / sh {
            (box_w, ((sh * k).round() as u32).clamp(1, box_h))
        } else {
            (((sw * k).round() as u32).clamp(1, box_w), box_h)
        };
        Ok((w, h))
    }
}

/// How the clip must loop.
#[derive(Debug, Clone, Copy, PartialEq, Serialize)]
#[serde(tag = "kind", rename_all = "snake_case")]
pub enum LoopRule {
    /// Loops forever (WebM has no loop flag: the app loops it).
    Forever,
    /// A finite number of plays, `1..=max_plays`, never infinite, and
    /// plays × duration ≤ `max_total_secs` (LINE).
    Plays { max_plays: u32, max_total_secs: f64 },
    /// Not animated: no loop rule.
    None,
}

/// What the file must say about transparency.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum AlphaRule {
    /// No rule.
    Any,
    /// The video must carry a VP9 alpha stream (`alpha_mode=1`).
    VideoAlpha,
    /// The background must be transparent: some pixels of the first frame have alpha 0.
    TransparentBackground,
}

/// Every rule a platform sets for one sticker file.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct Rules {
    /// Human name of what is exported ("Telegram video sticker").
    pub title: &'static str,
    /// Allowed output formats; the first is the default.
    pub formats: &'static [Format],
    /// False for still stickers: only the first frame (of the trimmed range) is kept.
    pub animated: bool,
    pub canvas: CanvasRule,
    /// Longest duration of one play, seconds.
    pub max_duration_secs: Option<f64>,
    /// Highest frame rate.
    pub max_fps: Option<u32>,
    /// Shortest frame delay in milliseconds (WhatsApp: 8).
    pub min_frame_delay_ms: Option<u32>,
    /// Allowed frame counts, inclusive (LINE: 5..=20).
    pub frame_range: Option<(u32, u32)>,
    pub loops: LoopRule,
    /// Size cap in bytes (1 KB = 1000 bytes).
    pub max_bytes: u64,
    /// Size cap when the result is a still image, if the platform has a different one
    /// (WhatsApp: 100 KB for static stickers).
    pub static_max_bytes: Option<u64>,
    /// The video must have no audio stream.
    pub no_audio: bool,
    pub alpha: AlphaRule,
    /// All-identical frames are rejected (LINE).
    pub distinct_frames: bool,
}

impl Rules {
    /// The size cap that applies to a result of `frames` frames.
    pub fn cap_for(&self, frames: usize) -> u64 {
        match self.static_max_bytes {
            Some(cap) if frames <= 1 => cap,
            _ => self.max_bytes,
        }
    }

    /// The highest frame rate allowed by both the fps cap and the shortest frame delay.
    pub fn fps_ceiling(&self) -> Option<f64> {
        let by_fps = self.max_fps.map(f64::from);
        let by_delay = self.min_frame_delay_ms.map(|ms| 1000.0 / ms.max(1) as f64);
        match (by_fps, by_delay) {
            (Some(a), Some(b)) => Some(a.min(b)),
            (a, b) => a.or(b),
        }
    }

    /// The output format for `ext_format` (what the output path's extension asks for), or the
    /// default when the extension does not name a format.
    pub fn pick_format(&self, ext_format: Option<Format>) -> Result<Format> {
        match ext_format {
            Some(f) if self.formats.contains(&f) => Ok(f),
            Some(f) => Err(Error::Invalid(format!(
                "{} cannot be written as {}; use {}",
                self.title,
                f.name(),
                self.extensions()
            ))),
            None => Err(Error::Invalid(format!(
                "the output file for a {} needs the extension {}",
                self.title,
                self.extensions()
            ))),
        }
    }

    /// The allowed extensions in words (".webm", ".png or .webp").
    pub fn extensions(&self) -> String {
        let exts: Vec<String> = self
            .formats
            .iter()
            .map(|f| format!(".{}", extension_of(*f)))
            .collect();
        exts.join(" or ")
    }

    /// One-line summary for `--help` and `ildiff presets`.
    pub fn summary(&self) -> String {
        let mut parts = vec![self.extensions(), self.canvas.describe()];
        if let Some(d) = self.max_duration_secs {
            parts.push(format!("≤ {d} s"));
        }
        if let Some(f) = self.max_fps {
            parts.push(format!("≤ {f} fps"));
        }
        if let Some(ms) = self.min_frame_delay_ms {
            parts.push(format!("frames ≥ {ms} ms"));
        }
        if let Some((lo, hi)) = self.frame_range {
            parts.push(format!("{lo}–{hi} frames"));
        }
        if let LoopRule::Plays {
            max_plays,
            max_total_secs,
        } = self.loops
        {
            parts.push(format!("1–{max_plays} plays, ≤ {max_total_secs} s in all"));
        }
        parts.push(format!("≤ {} bytes", group_digits(self.max_bytes)));
        format!("{}: {}", self.title, parts.join(", "))
    }
}

/// The usual file extension for an output format.
pub fn extension_of(format: Format) -> &'static str {
    match format {
        Format::Gif => "gif",
        Format::Png => "png",
        Format::Jpeg => "jpg",
        Format::WebP => "webp",
        Format::WebM => "webm",
        Format::Mp4 => "mp4",
        Format::Folder => "",
        Format::Tgs => "tgs",
    }
}

/// `256000` → `"256 000"`: caps are easier to compare at a glance.
pub fn group_digits(n: u64) -> String {
    let s = n.to_string();
    let mut out = String::new();
    for (i, c) in s.chars().enumerate() {
        if i > 0 && (s.len() - i).is_multiple_of(3) {
            out.push(' ');
        }
        out.push(c);
    }
    out
}

/// How many plays a clip of `duration` seconds gets under a [`LoopRule::Plays`] rule: as many
/// as allowed (a sticker that stops early looks broken), but no more than the source asked for.
pub fn plays_for(duration: f64, max_plays: u32, max_total_secs: f64, source: Option<u32>) -> u32 {
    let fit = if duration > 0.0 {
        // Strict here (tiny slack for float error only); the checker allows container rounding.
        (max_total_secs / duration + 1e-9).floor() as u32
    } else {
        max_plays
    };
    let mut plays = fit.clamp(1, max_plays.max(1));
    if let Some(s) = source {
        plays = plays.min(s.max(1));
    }
    plays
}

/// The frame count to resample to when `frames` is outside `range`, else `None`.
pub fn frame_target(frames: usize, range: (u32, u32)) -> Option<u32> {
    let (lo, hi) = range;
    let n = frames as u64;
    if n < lo as u64 {
        Some(lo)
    } else if n > hi as u64 {
        Some(hi)
    } else {
        None
    }
}

/// The lowest frame rate the fitter may drop a clip of `fps` to: half its frames, but never
/// below 8 fps (unless it started there). Below that motion turns into a slideshow, and a clear
/// error that names the cause serves the user better than a 2-frame sticker.
pub fn fps_floor(fps: f64) -> f64 {
    (fps / 2.0).max(fps.min(FPS_FLOOR))
}

/// See [`fps_floor`].
pub const FPS_FLOOR: f64 = 8.0;

/// The lower frame rates tried, best first, when nothing fits the size cap at `fps`: each step
/// drops frames, the strongest lever left once the encoder's knob is at its worst. `min_frames`
/// keeps LINE's lower bound; `integer` rounds for video, whose frame rate is stored as a ratio.
pub fn fallback_fps(fps: f64, duration: f64, min_frames: u32, integer: bool) -> Vec<f64> {
    let mut out: Vec<f64> = Vec::new();
    let floor = fps_floor(fps);
    for k in [0.75, 0.5, 0.375, 0.25, 0.125] {
        let mut f = fps * k;
        if integer {
            f = f.floor();
        }
        let frames = (duration * f - 1e-9).ceil();
        if f < 1.0 || f < floor - 1e-9 || frames < min_frames.max(2) as f64 {
            continue;
        }
        if out.last().is_none_or(|&last| f < last - 1e-9) {
            out.push(f);
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn canvas_rules_accept_and_reject() {
        let tg = CanvasRule::OneSide { side: 512 };
        assert!(tg.allows(512, 384));
        assert!(tg.allows(200, 512));
        assert!(tg.allows(512, 512));
        assert!(!tg.allows(511, 384));
        assert!(!tg.allows(513, 100));
        let line = CanvasRule::Within {
            max_width: 320,
            max_height: 270,
            min_side: 270,
        };
        assert!(line.allows(320, 240));
        assert!(line.allows(100, 270));
        assert!(!line.allows(260, 260));
        assert!(!line.allows(320, 271));
        let wa = CanvasRule::Exact {
            width: 512,
            height: 512,
        };
        assert!(wa.allows(512, 512));
        assert!(!wa.allows(512, 511));
    }

    #[test]
    fn one_side_contain_keeps_aspect_with_longer_side_exact() {
        let tg = CanvasRule::OneSide { side: 512 };
        assert_eq!(
            tg.target(200, 150, Fit::Contain, None).expect("t"),
            (512, 384)
        );
        assert_eq!(
            tg.target(150, 200, Fit::Contain, None).expect("t"),
            (384, 512)
        );
        assert_eq!(tg.target(1000, 3, Fit::Contain, None).expect("t"), (512, 2));
        assert_eq!(
            tg.target(200, 150, Fit::Cover, None).expect("t"),
            (512, 512)
        );
        for (w, h) in [(7, 5), (640, 480), (33, 1000), (512, 512), (999, 998)] {
            let (tw, th) = tg.target(w, h, Fit::Contain, None).expect("t");
            assert!(tg.allows(tw, th), "{w}x{h} -> {tw}x{th}");
        }
    }

    #[test]
    fn line_contain_touches_a_limit() {
        let line = CanvasRule::Within {
            max_width: 320,
            max_height: 270,
            min_side: 270,
        };
        assert_eq!(
            line.target(200, 150, Fit::Contain, None).expect("t"),
            (320, 240)
        );
        assert_eq!(
            line.target(100, 100, Fit::Contain, None).expect("t"),
            (270, 270)
        );
        assert_eq!(
            line.target(100, 400, Fit::Contain, None).expect("t"),
            (68, 270)
        );
        for (w, h) in [(7, 5), (640, 480), (33, 1000), (320, 270), (2000, 10)] {
            let (tw, th) = line.target(w, h, Fit::Contain, None).expect("t");
            assert!(line.allows(tw, th), "{w}x{h} -> {tw}x{th}");
        }
    }

    #[test]
    fn requested_size_must_meet_the_rule() {
        let tg = CanvasRule::OneSide { side: 512 };
        assert_eq!(
            tg.target(10, 10, Fit::Contain, Some((512, 300)))
                .expect("ok"),
            (512, 300)
        );
        let err = tg
            .target(10, 10, Fit::Contain, Some((400, 300)))
            .expect_err("must fail");
        assert!(err.to_string().contains("one side exactly 512"), "{err}");
        let exact = CanvasRule::Exact {
            width: 100,
            height: 100,
        };
        assert_eq!(
            exact.target(640, 360, Fit::Contain, None).expect("t"),
            (100, 100)
        );
    }

    #[test]
    fn line_plays_fill_four_seconds() {
        assert_eq!(plays_for(1.0, 4, 4.0, None), 4);
        assert_eq!(plays_for(1.3, 4, 4.0, None), 3);
        assert_eq!(plays_for(2.0, 4, 4.0, None), 2);
        assert_eq!(plays_for(2.01, 4, 4.0, None), 1);
        assert_eq!(plays_for(4.0, 4, 4.0, None), 1);
        assert_eq!(plays_for(0.2, 4, 4.0, None), 4);
        // A source that plays once stays once.
        assert_eq!(plays_for(1.0, 4, 4.0, Some(1)), 1);
        for d in [0.1, 0.5, 0.99, 1.0, 1.33, 1.34, 2.5, 3.99, 4.0] {
            let p = plays_for(d, 4, 4.0, None);
            assert!((1..=4).contains(&p));
            assert!(p as f64 * d <= 4.0 + TIME_EPS, "{d} s x {p}");
        }
    }

    #[test]
    fn frame_targets_clamp_to_range() {
        assert_eq!(frame_target(3, (5, 20)), Some(5));
        assert_eq!(frame_target(5, (5, 20)), None);
        assert_eq!(frame_target(20, (5, 20)), None);
        assert_eq!(frame_target(90, (5, 20)), Some(20));
    }

    #[test]
    fn fps_ceiling_combines_fps_and_delay() {
        let mut r = Rules {
            title: "t",
            formats: &[Format::WebP],
            animated: true,
            canvas: CanvasRule::OneSide { side: 1 },
            max_duration_secs: None,
            max_fps: Some(30),
            min_frame_delay_ms: None,
            frame_range: None,
            loops: LoopRule::Forever,
            max_bytes: 1,
            static_max_bytes: Some(0),
            no_audio: false,
            alpha: AlphaRule::Any,
            distinct_frames: false,
        };
        assert_eq!(r.fps_ceiling(), Some(30.0));
        r.max_fps = None;
        r.min_frame_delay_ms = Some(8);
        assert_eq!(r.fps_ceiling(), Some(125.0));
        assert_eq!(r.cap_for(1), 0);
        assert_eq!(r.cap_for(2), 1);
        assert!(r.pick_format(Some(Format::Gif)).is_err());
        assert_eq!(r.pick_format(Some(Format::WebP)).expect("ok"), Format::WebP);
    }

    #[test]
    fn fallback_rates_decrease_and_respect_min_frames() {
        // Never below half the frames or 8 fps (issue 18: a 15 fps clip went out at 1.9 fps).
        let f = fallback_fps(30.0, 3.0, 2, true);
        assert_eq!(f, vec![22.0, 15.0]);
        assert_eq!(fallback_fps(15.0, 1.0, 2, false), vec![11.25]);
        assert_eq!(fps_floor(30.0), 15.0);
        assert_eq!(fps_floor(15.0), 8.0);
        assert_eq!(fps_floor(6.0), 6.0);
        assert!(fallback_fps(6.0, 2.0, 2, false).is_empty());
        let line = fallback_fps(20.0 / 4.0, 4.0, 5, false);
        assert!(line.iter().all(|&r| (4.0 * r).ceil() >= 5.0));
        assert!(line.windows(2).all(|w| w[0] > w[1]));
        assert_eq!(group_digits(256000), "256 000");
        assert_eq!(group_digits(1234567), "1 234 567");
        assert_eq!(group_digits(12), "12");
    }
}

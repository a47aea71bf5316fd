//! The in-memory animation every part of the studio passes around.
//!
//! **Alpha convention: RGBA here is always straight (unassociated) alpha**: the colour channels
//! hold the full colour of the pixel, not colour × alpha. Premultiply only transiently (for
//! resizing and compositing) and convert back with [`unpremultiply`].

use image::{Rgba, RgbaImage, imageops::FilterType};

use crate::error::{Error, Result};

/// Exact frame delay as a ratio of seconds (`num / den`), as GIF (1/100 s), APNG (any ratio) and
/// WebP (1/1000 s) store it, so that re-encoding never accumulates rounding drift.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, serde::Serialize, serde::Deserialize)]
pub struct Delay {
    num: u32,
    den: u32,
}

impl Delay {
    /// A delay of `num / den` seconds, reduced. A zero denominator is treated as 1/100 s, as
    /// APNG's specification says.
    pub fn from_ratio(num: u32, den: u32) -> Self {
        let den = if den == 0 { 100 } else { den };
        let g = gcd(num, den).max(1);
        Delay {
            num: num / g,
            den: den / g,
        }
    }

    /// A delay of `ms` milliseconds.
    pub fn from_millis(ms: u32) -> Self {
        Self::from_ratio(ms, 1000)
    }

    /// The delay of one frame at `fps` frames per second (rounded to 1/1000 s for non-integer fps).
    pub fn from_fps(fps: f64) -> Self {
        if fps.fract() == 0.0 && fps >= 1.0 && fps <= u32::MAX as f64 {
            Self::from_ratio(1, fps as u32)
        } else {
            Self::from_millis((1000.0 / fps.max(1e-3)).round().max(1.0) as u32)
        }
    }

    /// Numerator and denominator (seconds = num / den).
    pub fn ratio(self) -> (u32, u32) {
        (self.num, self.den)
    }

    /// The delay in seconds.
    pub fn secs(self) -> f64 {
        self.num as f64 / self.den as f64
    }

    /// The delay in milliseconds (not rounded).
    pub fn millis_f64(self) -> f64 {
        self.secs() * 1000.0
    }

    /// The delay rounded to whole milliseconds (WebP's unit).
    pub fn millis(self) -> u32 {
        (self.millis_f64().round()).min(u32::MAX as f64) as u32
    }

    /// The delay rounded to hundredths of a second (GIF's unit).
    pub fn centis(self) -> u16 {
        (self.secs() * 100.0).round().clamp(0.0, u16::MAX as f64) as u16
    }
}

fn gcd(mut a: u32, mut b: u32) -> u32 {
    while b != 0 {
        (a, b) = (b, a % b);
    }
    a
}

/// How many times an animation plays.
#[derive(Debug, Clone, Copy, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub enum LoopCount {
    /// Loops forever.
    Infinite,
    /// Plays this many times in total (1 = play once).
    Plays(u32),
}

impl LoopCount {
    /// APNG/WebP convention: 0 means infinite.
    pub fn from_zero_infinite(n: u32) -> Self {
        if n == 0 {
            LoopCount::Infinite
        } else {
            LoopCount::Plays(n)
        }
    }

    /// APNG/WebP convention: 0 means infinite.
    pub fn to_zero_infinite(self) -> u32 {
        match self {
            LoopCount::Infinite => 0,
            LoopCount::Plays(n) => n.max(1),
        }
    }
}

/// One frame: a full-canvas straight-alpha RGBA image and how long it is shown.
#[derive(Debug, Clone, PartialEq)]
pub struct Frame {
    pub image: RgbaImage,
    pub delay: Delay,
}

impl Frame {
    pub fn new(image: RgbaImage, delay: Delay) -> Self {
        Frame { image, delay }
    }
}

/// An animation: full-canvas frames (already composited; no disposal left to apply), each
/// `width × height`, with exact delays and a loop count.
#[derive(Debug, Clone, PartialEq)]
pub struct Animation {
    pub width: u32,
    pub height: u32,
    pub frames: Vec<Frame>,
    pub loops: LoopCount,
}

/// How to map a clip onto a canvas of another aspect ratio.
#[derive(Debug, Clone, Copy, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub enum Fit {
    /// Scale to fit inside, pad the rest with transparency (the default for stickers).
    Contain,
    /// Scale to cover, crop the overflow (centred).
    Cover,
    /// Scale each axis independently.
    Stretch,
}

/// Alpha statistics of a clip, as `ildiff info` prints them.
#[derive(Debug, Clone, Copy, PartialEq, serde::Serialize)]
pub struct AlphaStats {
    /// Mean alpha in [0, 1].
    pub mean: f64,
    /// Fraction of pixels with alpha 0.
    pub transparent: f64,
    /// Fraction of pixels with alpha 255.
    pub opaque: f64,
    /// Fraction of pixels with 0 < alpha < 255.
    pub partial: f64,
}

impl Animation {
    /// Builds an animation, checking that every frame has the canvas size.
    pub fn new(width: u32, height: u32, frames: Vec<Frame>, loops: LoopCount) -> Result<Self> {
        let anim = Animation {
            width,
            height,
            frames,
            loops,
        };
        anim.validate()?;
        Ok(anim)
    }

    /// Checks what every consumer relies on: at least one frame and every frame the canvas
    /// size. The fields are public, so code that builds an animation by hand calls this.
    pub fn validate(&self) -> Result<()> {
        if self.frames.is_empty() {
            return Err(Error::Invalid(
                "an animation needs at least one frame".into(),
            ));
        }
        if let Some((i, f)) = self
            .frames
            .iter()
            .enumerate()
            .find(|(_, f)| f.image.dimensions() != (self.width, self.height))
        {
            return Err(Error::Invalid(format!(
                "frame {i} is {}x{}, the canvas is {}x{}",
                f.image.width(),
                f.image.height(),
                self.width,
                self.height
            )));
        }
        Ok(())
    }

    /// A single still image as a one-frame animation.
    pub fn still(image: RgbaImage) -> Self {
        Animation {
            width: image.width(),
            height: image.height(),
            frames: vec![Frame::new(image, Delay::from_millis(100))],
            loops: LoopCount::Infinite,
        }
    }

    /// Number of frames.
    pub fn len(&self) -> usize {
        self.frames.len()
    }

    /// True when there are no frames (never for a value built by [`Animation::new`]).
    pub fn is_empty(&self) -> bool {
        self.frames.is_empty()
    }

    /// Duration of one play in seconds.
    pub fn duration_secs(&self) -> f64 {
        self.frames.iter().map(|f| f.delay.secs()).sum()
    }

    /// Mean frame rate (frames / duration).
    pub fn fps(&self) -> f64 {
        let d = self.duration_secs();
        if d > 0.0 {
            self.frames.len() as f64 / d
        } else {
            0.0
        }
    }

    /// Bytes of pixel data held.
    pub fn pixel_bytes(&self) -> u64 {
        self.frames.len() as u64 * self.width as u64 * self.height as u64 * 4
    }

    /// Resamples to a constant `fps`, keeping the duration: output frame k shows whatever source
    /// frame is on screen at time k / fps. Used to meet platform fps caps.
    pub fn resample_fps(&self, fps: f64) -> Result<Animation> {
        if !(fps.is_finite() && fps > 0.0) {
            return Err(Error::Invalid(format!("fps must be positive, got {fps}")));
        }
        let duration = self.duration_secs();
        let n = ((duration * fps) - 1e-9).ceil().max(1.0) as usize;
        let delay = Delay::from_fps(fps);
        let starts = self.frame_starts();
        let frames = (0..n)
            .map(|k| {
                let t = k as f64 / fps;
                let idx = starts.partition_point(|&s| s <= t + 1e-9).saturating_sub(1);
                Frame::new(self.frames[idx].image.clone(), delay)
            })
            .collect();
        Animation::new(self.width, self.height, frames, self.loops)
    }

    /// Start time of each frame in seconds.
    pub fn frame_starts(&self) -> Vec<f64> {
        let mut t = 0.0;
        self.frames
            .iter()
            .map(|f| {
                let s = t;
                t += f.delay.secs();
                s
            })
            .collect()
    }

    /// Cuts the clip to at most `max_secs` (the last kept frame is shortened if needed).
    pub fn trim(&self, max_secs: f64) -> Animation {
        let mut out = Vec::new();
        let mut t = 0.0;
        for f in &self.frames {
            // Whole milliseconds left: float sums of delays must not create a 1 ms sliver frame.
            let left_ms = ((max_secs - t) * 1000.0).round();
            if left_ms < 1.0 {
                break;
            }
            let mut frame = f.clone();
            if f.delay.millis_f64() > left_ms + 1e-6 {
                frame.delay = Delay::from_millis(left_ms as u32);
            }
            t += frame.delay.secs();
            out.push(frame);
        }
        if out.is_empty() {
            out.push(self.frames[0].clone());
        }
        Animation {
            width: self.width,
            height: self.height,
            frames: out,
            loops: self.loops,
        }
    }

    /// Keeps only frames in `[start, end)` seconds.
    pub fn cut(&self, start: f64, end: f64) -> Animation {
        let starts = self.frame_starts();
        let frames: Vec<Frame> = self
            .frames
            .iter()
            .zip(&starts)
            .filter(|(f, s)| **s + f.delay.secs() > start + 1e-9 && **s < end - 1e-9)
            .map(|(f, _)| f.clone())
            .collect();
        Animation {
            width: self.width,
            height: self.height,
            frames: if frames.is_empty() {
                vec![self.frames[0].clone()]
            } else {
                frames
            },
            loops: self.loops,
        }
    }

    /// Scales every delay so that one play lasts `secs` (speeds the clip up or slows it down).
    pub fn retime(&self, secs: f64) -> Result<Animation> {
        let d = self.duration_secs();
        if !(secs.is_finite() && secs > 0.0) || d <= 0.0 {
            return Err(Error::Invalid(format!(
                "cannot retime a clip of {d:.3} s to {secs} s"
            )));
        }
        let k = secs / d;
        let mut out = self.clone();
        for f in &mut out.frames {
            f.delay = Delay::from_millis((f.delay.millis_f64() * k).round().max(1.0) as u32);
        }
        Ok(out)
    }

    /// Resizes every frame to exactly `width × height` (premultiplied filtering, so transparent
    /// pixels' hidden colour cannot bleed into edges).
    pub fn resize_exact(&self, width: u32, height: u32) -> Result<Animation> {
        check_dims(width, height)?;
        if (width, height) == (self.width, self.height) {
            return Ok(self.clone());
        }
        let frames = self
            .frames
            .iter()
            .map(|f| Frame::new(resize_rgba(&f.image, width, height), f.delay))
            .collect();
        Animation::new(width, height, frames, self.loops)
    }

    /// Places the clip on a `width × height` canvas with the given [`Fit`].
    pub fn fit(&self, width: u32, height: u32, fit: Fit) -> Result<Animation> {
        check_dims(width, height)?;
        let (sw, sh) = (self.width as f64, self.height as f64);
        match fit {
            Fit::Stretch => self.resize_exact(width, height),
            Fit::Contain => {
                let k = (width as f64 / sw).min(height as f64 / sh);
                let w = ((sw * k).round() as u32).clamp(1, width);
                let h = ((sh * k).round() as u32).clamp(1, height);
                self.resize_exact(w, h)?.pad_to(width, height)
            }
            Fit::Cover => {
                let k = (width as f64 / sw).max(height as f64 / sh);
                let w = ((sw * k).round() as u32).max(width);
                let h = ((sh * k).round() as u32).max(height);
                let r = self.resize_exact(w, h)?;
                let (x, y) = ((w - width) / 2, (h - height) / 2);
                let frames = r
                    .frames
                    .iter()
                    .map(|f| {
                        Frame::new(
                            image::imageops::crop_imm(&f.image, x, y, width, height).to_image(),
                            f.delay,
                        )
                    })
                    .collect();
                Animation::new(width, height, frames, self.loops)
            }
        }
    }

    /// Centres the clip on a larger transparent canvas (a smaller canvas is an error).
    pub fn pad_to(&self, width: u32, height: u32) -> Result<Animation> {
        if width < self.width || height < self.height {
            return Err(Error::Invalid(format!(
                "cannot pad {}x{} to the smaller canvas {width}x{height}",
                self.width, self.height
            )));
        }
        if (width, height) == (self.width, self.height) {
            return Ok(self.clone());
        }
        let (x, y) = ((width - self.width) / 2, (height - self.height) / 2);
        let frames = self
            .frames
            .iter()
            .map(|f| {
                let mut canvas = RgbaImage::new(width, height);
                image::imageops::replace(&mut canvas, &f.image, x as i64, y as i64);
                Frame::new(canvas, f.delay)
            })
            .collect();
        Animation::new(width, height, frames, self.loops)
    }

    /// Sets the colour of fully transparent pixels to `rgb` (black by default in exporters):
    /// invisible colour noise costs bytes and leaks out when a player ignores alpha.
    pub fn clean_transparent(&mut self, rgb: [u8; 3]) {
        for f in &mut self.frames {
            clean_transparent(&mut f.image, rgb);
        }
    }

    /// Alpha statistics over all frames.
    pub fn alpha_stats(&self) -> AlphaStats {
        let (mut sum, mut zero, mut full, mut n) = (0u64, 0u64, 0u64, 0u64);
        for f in &self.frames {
            for p in f.image.pixels() {
                let a = p[3];
                sum += a as u64;
                zero += (a == 0) as u64;
                full += (a == 255) as u64;
                n += 1;
            }
        }
        let n = n.max(1) as f64;
        AlphaStats {
            mean: sum as f64 / 255.0 / n,
            transparent: zero as f64 / n,
            opaque: full as f64 / n,
            partial: (n - zero as f64 - full as f64) / n,
        }
    }

    /// True when any pixel is not fully opaque.
    pub fn has_alpha(&self) -> bool {
        self.frames
            .iter()
            .any(|f| f.image.pixels().any(|p| p[3] != 255))
    }
}

fn check_dims(width: u32, height: u32) -> Result<()> {
    if width == 0 || height == 0 || width > 16384 || height > 16384 {
        return Err(Error::Invalid(format!(
            "canvas size {width}x{height} is out of range (1..=16384)"
        )));
    }
    Ok(())
}

/// Resizes straight-alpha RGBA with premultiplied filtering (Catmull-Rom when shrinking or
/// growing), returning straight alpha.
pub fn resize_rgba(img: &RgbaImage, width: u32, height: u32) -> RgbaImage {
    if img.dimensions() == (width, height) {
        return img.clone();
    }
    // Premultiply in f32 to keep precision for low alpha.
    let (w, h) = img.dimensions();
    let mut pm = image::Rgba32FImage::new(w, h);
    for (d, s) in pm.pixels_mut().zip(img.pixels()) {
        let a = s[3] as f32 / 255.0;
        *d = Rgba([
            s[0] as f32 / 255.0 * a,
            s[1] as f32 / 255.0 * a,
            s[2] as f32 / 255.0 * a,
            a,
        ]);
    }
    let r = image::imageops::resize(&pm, width, height, FilterType::CatmullRom);
    let mut out = RgbaImage::new(width, height);
    for (d, s) in out.pixels_mut().zip(r.pixels()) {
        let a = s[3].clamp(0.0, 1.0);
        let q = |c: f32| {
            if a > 0.0 {
                ((c / a).clamp(0.0, 1.0) * 255.0).round() as u8
            } else {
                0
            }
        };
        *d = Rgba([q(s[0]), q(s[1]), q(s[2]), (a * 255.0).round() as u8]);
    }
    out
}

/// Converts straight alpha to premultiplied in place (colour × alpha, rounded).
pub fn premultiply(img: &mut RgbaImage) {
    for p in img.pixels_mut() {
        let a = p[3] as u32;
        for c in 0..3 {
            p[c] = ((p[c] as u32 * a + 127) / 255) as u8;
        }
    }
}

/// Converts premultiplied alpha back to straight alpha in place. Lossy for small alpha (the
/// colour resolution left is alpha levels), which is why straight alpha is the stored form.
pub fn unpremultiply(img: &mut RgbaImage) {
    for p in img.pixels_mut() {
        let a = p[3] as u32;
        if a == 0 {
            p[0] = 0;
            p[1] = 0;
            p[2] = 0;
        } else if a < 255 {
            for c in 0..3 {
                p[c] = ((p[c] as u32 * 255 + a / 2) / a).min(255) as u8;
            }
        }
    }
}

/// Sets the colour of fully transparent pixels to `rgb`.
pub fn clean_transparent(img: &mut RgbaImage, rgb: [u8; 3]) {
    for p in img.pixels_mut() {
        if p[3] == 0 {
            *p = Rgba([rgb[0], rgb[1], rgb[2], 0]);
        }
    }
}

/// Composites straight-alpha `fg` over an opaque colour, returning an opaque image.
pub fn over_color(fg: &RgbaImage, rgb: [u8; 3]) -> RgbaImage {
    let mut out = fg.clone();
    for p in out.pixels_mut() {
        let a = p[3] as u32;
        for c in 0..3 {
            p[c] = ((p[c] as u32 * a + rgb[c] as u32 * (255 - a) + 127) / 255) as u8;
        }
        p[3] = 255;
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    fn clip(n: usize, ms: u32) -> Animation {
        let frames = (0..n)
            .map(|i| {
                Frame::new(
                    RgbaImage::from_pixel(4, 4, Rgba([i as u8, 0, 0, 255])),
                    Delay::from_millis(ms),
                )
            })
            .collect();
        Animation::new(4, 4, frames, LoopCount::Infinite).expect("valid clip")
    }

    #[test]
    fn delay_is_exact_ratio() {
        let d = Delay::from_ratio(10, 100);
        assert_eq!(d.ratio(), (1, 10));
        assert_eq!(d.millis(), 100);
        assert_eq!(Delay::from_ratio(1, 0).centis(), 1);
        assert_eq!(Delay::from_fps(30.0).ratio(), (1, 30));
    }

    #[test]
    fn resample_keeps_duration_and_picks_frame_on_screen() {
        let a = clip(10, 100); // 1 s at 10 fps
        let r = a.resample_fps(5.0).expect("resample");
        assert_eq!(r.len(), 5);
        assert!((r.duration_secs() - 1.0).abs() < 1e-9);
        let reds: Vec<u8> = r
            .frames
            .iter()
            .map(|f| f.image.get_pixel(0, 0)[0])
            .collect();
        assert_eq!(reds, vec![0, 2, 4, 6, 8]);
        let up = a.resample_fps(20.0).expect("resample");
        assert_eq!(up.len(), 20);
        assert_eq!(up.frames[3].image.get_pixel(0, 0)[0], 1);
    }

    #[test]
    fn trim_and_retime() {
        let a = clip(10, 100);
        let t = a.trim(0.35);
        assert_eq!(t.len(), 4);
        assert!((t.duration_secs() - 0.35).abs() < 1e-3);
        let r = a.retime(2.0).expect("retime");
        assert!((r.duration_secs() - 2.0).abs() < 1e-9);
    }

    #[test]
    fn fit_contain_pads_with_transparency() {
        let img = RgbaImage::from_pixel(20, 10, Rgba([255, 0, 0, 255]));
        let a = Animation::still(img);
        let f = a.fit(40, 40, Fit::Contain).expect("fit");
        assert_eq!((f.width, f.height), (40, 40));
        assert_eq!(f.frames[0].image.get_pixel(20, 0)[3], 0);
        assert_eq!(*f.frames[0].image.get_pixel(20, 20), Rgba([255, 0, 0, 255]));
        let c = a.fit(10, 10, Fit::Cover).expect("cover");
        assert_eq!((c.width, c.height), (10, 10));
    }

    #[test]
    fn resize_does_not_bleed_hidden_colour() {
        // Left half opaque red, right half transparent *green* (hidden colour).
        let img = RgbaImage::from_fn(8, 8, |x, _| {
            if x < 4 {
                Rgba([255, 0, 0, 255])
            } else {
                Rgba([0, 255, 0, 0])
            }
        });
        let r = resize_rgba(&img, 4, 4);
        for p in r.pixels() {
            if p[3] > 0 {
                assert!(p[1] < 8, "green leaked into {p:?}");
            }
        }
    }

    #[test]
    fn premultiply_roundtrip_close() {
        let mut img = RgbaImage::from_pixel(1, 1, Rgba([200, 100, 50, 128]));
        premultiply(&mut img);
        assert_eq!(*img.get_pixel(0, 0), Rgba([100, 50, 25, 128]));
        unpremultiply(&mut img);
        let p = img.get_pixel(0, 0);
        assert!((p[0] as i32 - 200).abs() <= 2 && (p[1] as i32 - 100).abs() <= 2);
    }

    #[test]
    fn new_rejects_mismatched_frames() {
        let frames = vec![
            Frame::new(RgbaImage::new(4, 4), Delay::from_millis(10)),
            Frame::new(RgbaImage::new(4, 5), Delay::from_millis(10)),
        ];
        assert!(Animation::new(4, 4, frames, LoopCount::Infinite).is_err());
    }
}

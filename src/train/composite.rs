//! Puts a synthetic sticker over an opaque background and degrades the result the way imported
//! clips are degraded, so the re-matting use of the decoder (METHOD.md §3, "two uses") trains
//! and is evaluated on inputs where matting is hard: a background of the subject's own colour,
//! textures that look like holes, photos, a moving camera; GIF palettes with 1-bit edges,
//! codec blocking, resampling blur. Every composite carries its [`Background`] and
//! [`Degradation`] labels so figures can be reported per kind (METHOD.md §5).

use std::collections::{HashMap, VecDeque};
use std::path::{Path, PathBuf};
use std::sync::{Arc, LazyLock, Mutex};

use image::imageops::{self, FilterType};
use image::{Rgb, RgbImage, RgbaImage};
use serde::Serialize;

use super::synth::{Rng, fbm, mix};
use crate::error::{Error, Result};
use crate::media::encode::quantize::Palette;
use crate::media::{Animation, Frame, Limits};

/// The kind of background behind the sticker.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum Background {
    /// One flat colour.
    Plain,
    /// A flat colour close to the subject's mean colour (the hardest case for colour cues).
    SimilarColour,
    /// A linear or radial two-colour gradient.
    Gradient,
    /// A checkerboard, stripes or dots (regular textures that resemble holes and lattices).
    Checker,
    /// A picture from the photo folder, or photo-like procedural scenery without one.
    Photo,
    /// Photo-like scenery that pans and zooms over time (a moving camera).
    Moving,
}

impl Background {
    pub const ALL: [Background; 6] = [
        Background::Plain,
        Background::SimilarColour,
        Background::Gradient,
        Background::Checker,
        Background::Photo,
        Background::Moving,
    ];

    /// The label used in folder names and reports.
    pub fn name(self) -> &'static str {
        match self {
            Background::Plain => "plain",
            Background::SimilarColour => "similar_colour",
            Background::Gradient => "gradient",
            Background::Checker => "checker",
            Background::Photo => "photo",
            Background::Moving => "moving",
        }
    }
}

/// What happens to the composite after compositing.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum Degradation {
    None,
    /// GIF-like: alpha binarised at 128 before compositing (GIF stickers have 1-bit edges),
    /// then the frames quantised to a 64–256 colour palette, optionally dithered.
    Gif,
    /// Codec blocking (stands in for H.264/WebM sources): a JPEG round trip at quality 40–70.
    Blocking,
    /// Downscaled by 0.4–0.75 and scaled back up (softened edges, lost strands).
    Resize,
}

impl Degradation {
    pub const ALL: [Degradation; 4] = [
        Degradation::None,
        Degradation::Gif,
        Degradation::Blocking,
        Degradation::Resize,
    ];

    pub fn name(self) -> &'static str {
        match self {
            Degradation::None => "none",
            Degradation::Gif => "gif",
            Degradation::Blocking => "blocking",
            Degradation::Resize => "resize",
        }
    }

    /// A degradation for a seed: none 40 %, the others 20 % each.
    pub fn draw(seed: u64) -> Degradation {
        match Rng::new(mix(seed, 31)).below(5) {
            0 | 1 => Degradation::None,
            2 => Degradation::Gif,
            3 => Degradation::Blocking,
            _ => Degradation::Resize,
        }
    }
}

/// The parameters a degradation was applied with (for `meta.json`).
#[derive(Debug, Clone, Copy, PartialEq, Default, Serialize)]
pub struct DegradeParams {
    /// GIF palette size.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub colors: Option<u16>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub dither: Option<bool>,
    /// JPEG quality.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub quality: Option<u8>,
    /// Resize factor.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub factor: Option<f32>,
}

/// An opaque input clip with the alpha that produced it.
#[derive(Debug, Clone)]
pub struct Composite {
    /// The composite: alpha 255 everywhere.
    pub rgb: Animation,
    /// The ground truth that was composited: the foreground, with alpha binarised for
    /// [`Degradation::Gif`] (the alpha the pixels really carry).
    pub gt: Animation,
    pub background: Background,
    pub degradation: Degradation,
    pub params: DegradeParams,
    /// The photo used, when one came from the photo folder.
    pub photo: Option<PathBuf>,
    /// The background moves (a pan or zoom) rather than staying still.
    pub panning: bool,
}

/// Composites `fg` over a `bg` background and applies `deg`; every random choice comes from
/// `seed`. `photos` is a folder of pictures for [`Background::Photo`] and
/// [`Background::Moving`]; without it those use procedural scenery.
pub fn composite(
    fg: &Animation,
    bg: Background,
    deg: Degradation,
    seed: u64,
    photos: Option<&Path>,
) -> Result<Composite> {
    crate::media::encode::validate(fg)?;
    let mut rng = Rng::new(mix(seed, 41));
    let mut gt = fg.clone();
    if deg == Degradation::Gif {
        for f in &mut gt.frames {
            for p in f.image.pixels_mut() {
                p[3] = if p[3] >= 128 { 255 } else { 0 };
            }
        }
    }
    let (backgrounds, photo) = background_frames(bg, fg, mix(seed, 43), photos)?;
    let panning = backgrounds.windows(2).any(|w| w[0] != w[1]);
    let mut frames: Vec<RgbaImage> = gt
        .frames
        .iter()
        .zip(&backgrounds)
        .map(|(f, b)| over(&f.image, b))
        .collect();
    let mut params = DegradeParams::default();
    match deg {
        Degradation::None => {}
        Degradation::Gif => {
            let colors = 64 + rng.below(193) as u16;
            let dither = rng.chance(0.5);
            let palette = Palette::build(&frames, usize::from(colors))?;
            let indices = palette.remap_frames(&frames, dither);
            let table = palette.colors();
            for (img, idx) in frames.iter_mut().zip(indices) {
                for (p, i) in img.pixels_mut().zip(idx) {
                    let c = table.get(usize::from(i)).copied().unwrap_or([0, 0, 0, 255]);
                    *p = image::Rgba([c[0], c[1], c[2], 255]);
                }
            }
            params.colors = Some(colors);
            params.dither = Some(dither);
        }
        Degradation::Blocking => {
            let quality = 40 + rng.below(31) as u8;
            for img in &mut frames {
                *img = jpeg_round_trip(img, quality)?;
            }
            params.quality = Some(quality);
        }
        Degradation::Resize => {
            let factor = rng.range(0.4, 0.75);
            let (w, h) = (fg.width, fg.height);
            let (sw, sh) = (
                ((w as f32 * factor).round() as u32).max(1),
                ((h as f32 * factor).round() as u32).max(1),
            );
            for img in &mut frames {
                let small = imageops::resize(img, sw, sh, FilterType::Triangle);
                *img = imageops::resize(&small, w, h, FilterType::CatmullRom);
            }
            params.factor = Some(factor);
        }
    }
    let rgb = Animation::new(
        fg.width,
        fg.height,
        frames
            .into_iter()
            .zip(&fg.frames)
            .map(|(img, f)| Frame::new(img, f.delay))
            .collect(),
        fg.loops,
    )?;
    Ok(Composite {
        rgb,
        gt,
        background: bg,
        degradation: deg,
        params,
        photo,
        panning,
    })
}

/// `fg` over an opaque background, exact where alpha is 0 or 255.
pub fn over(fg: &RgbaImage, bg: &RgbImage) -> RgbaImage {
    RgbaImage::from_fn(fg.width(), fg.height(), |x, y| {
        let f = fg.get_pixel(x, y);
        let b = bg.get_pixel(x, y);
        let a = u32::from(f[3]);
        let ch = |i: usize| ((u32::from(f[i]) * a + u32::from(b[i]) * (255 - a) + 127) / 255) as u8;
        image::Rgba([ch(0), ch(1), ch(2), 255])
    })
}

fn jpeg_round_trip(img: &RgbaImage, quality: u8) -> Result<RgbaImage> {
    let rgb = image::DynamicImage::ImageRgba8(img.clone()).to_rgb8();
    let mut buf = Vec::new();
    image::codecs::jpeg::JpegEncoder::new_with_quality(&mut buf, quality)
        .encode_image(&rgb)
        .map_err(|e| Error::encode("JPEG", e))?;
    let back = image::load_from_memory_with_format(&buf, image::ImageFormat::Jpeg)
        .map_err(|e| Error::encode("JPEG", format!("round trip failed: {e}")))?;
    Ok(back.to_rgba8())
}

/// Alpha-weighted mean colour of all frames (0..=255 per channel); mid grey when empty.
pub fn mean_colour(fg: &Animation) -> [f32; 3] {
    let (mut s, mut n) = ([0f64; 3], 0f64);
    for f in &fg.frames {
        for p in f.image.pixels() {
            let a = f64::from(p[3]);
            for c in 0..3 {
                s[c] += f64::from(p[c]) * a;
            }
            n += a;
        }
    }
    if n <= 0.0 {
        return [128.0; 3];
    }
    [(s[0] / n) as f32, (s[1] / n) as f32, (s[2] / n) as f32]
}

fn random_colour(rng: &mut Rng) -> [f32; 3] {
    [
        rng.range(0.0, 255.0),
        rng.range(0.0, 255.0),
        rng.range(0.0, 255.0),
    ]
}

fn to_px(c: [f32; 3]) -> Rgb<u8> {
    Rgb(c.map(|v| v.round().clamp(0.0, 255.0) as u8))
}

fn mix3(a: [f32; 3], b: [f32; 3], t: f32) -> [f32; 3] {
    [
        a[0] + (b[0] - a[0]) * t,
        a[1] + (b[1] - a[1]) * t,
        a[2] + (b[2] - a[2]) * t,
    ]
}

/// One background frame per foreground frame, and the photo file used (if any).
pub fn background_frames(
    kind: Background,
    fg: &Animation,
    seed: u64,
    photos: Option<&Path>,
) -> Result<(Vec<RgbImage>, Option<PathBuf>)> {
    let (w, h) = (fg.width, fg.height);
    let n = fg.frames.len();
    let mut rng = Rng::new(seed);
    let still = |img: RgbImage| vec![img; n];
    Ok(match kind {
        Background::Plain => {
            let c = to_px(random_colour(&mut rng));
            (still(RgbImage::from_pixel(w, h, c)), None)
        }
        Background::SimilarColour => {
            let m = mean_colour(fg);
            let c = m.map(|v| v + rng.range(-18.0, 18.0));
            // A faint texture so it is not trivially flat; ±4 levels.
            let nseed = rng.next_u64();
            let img = RgbImage::from_fn(w, h, |x, y| {
                let t = fbm(nseed, x as f32 / 40.0, y as f32 / 40.0, 2) * 8.0 - 4.0;
                to_px(c.map(|v| v + t))
            });
            (still(img), None)
        }
        Background::Gradient => {
            let (a, b) = (random_colour(&mut rng), random_colour(&mut rng));
            let img = if rng.chance(0.5) {
                let ang = rng.range(0.0, std::f32::consts::TAU);
                let (dx, dy) = (ang.cos(), ang.sin());
                let half = 0.5 * (w as f32 * dx.abs() + h as f32 * dy.abs()).max(1.0);
                RgbImage::from_fn(w, h, |x, y| {
                    let p = (x as f32 - w as f32 / 2.0) * dx + (y as f32 - h as f32 / 2.0) * dy;
                    to_px(mix3(a, b, (0.5 + 0.5 * p / half).clamp(0.0, 1.0)))
                })
            } else {
                let (cx, cy) = (
                    rng.range(0.2, 0.8) * w as f32,
                    rng.range(0.2, 0.8) * h as f32,
                );
                let r = w.max(h) as f32 * rng.range(0.5, 1.0);
                RgbImage::from_fn(w, h, |x, y| {
                    let d = ((x as f32 - cx).powi(2) + (y as f32 - cy).powi(2)).sqrt();
                    to_px(mix3(a, b, (d / r).clamp(0.0, 1.0)))
                })
            };
            (still(img), None)
        }
        Background::Checker if rng.chance(0.5) => {
            // The transparency checker baked into downloaded "transparent" GIFs and
            // screenshots of editors: grey/white (or dark) squares of a whole-pixel size,
            // sometimes coloured tiles; still in most clips, panning (scrolled) in some.
            const GREYS: [([f32; 3], [f32; 3]); 4] = [
                ([204.0; 3], [255.0; 3]),
                ([191.0; 3], [255.0; 3]),
                ([153.0; 3], [102.0; 3]),
                ([51.0; 3], [68.0; 3]),
            ];
            const CELLS: [u32; 12] = [4, 5, 6, 8, 10, 12, 16, 20, 24, 32, 48, 64];
            let (a, b) = if rng.chance(0.75) {
                GREYS[rng.below(GREYS.len())]
            } else {
                (random_colour(&mut rng), random_colour(&mut rng))
            };
            let cell = CELLS[rng.below(CELLS.len())];
            let (ox, oy) = (
                rng.below(cell as usize * 2) as u32,
                rng.below(cell as usize * 2) as u32,
            );
            let (vx, vy) = if rng.chance(0.25) {
                (rng.below(7) as i64 - 3, rng.below(5) as i64 - 2)
            } else {
                (0, 0)
            };
            let frames = (0..n)
                .map(|i| {
                    RgbImage::from_fn(w, h, |x, y| {
                        let u =
                            (i64::from(x + ox) + vx * i as i64).rem_euclid(1 << 20) as u32 / cell;
                        let v =
                            (i64::from(y + oy) + vy * i as i64).rem_euclid(1 << 20) as u32 / cell;
                        to_px(if (u + v).is_multiple_of(2) { a } else { b })
                    })
                })
                .collect();
            (frames, None)
        }
        Background::Checker => {
            let (a, b) = (random_colour(&mut rng), random_colour(&mut rng));
            let cell = rng.range(4.0, 32.0);
            let variant = rng.below(3);
            let img = RgbImage::from_fn(w, h, |x, y| {
                let (u, v) = (x as f32 / cell, y as f32 / cell);
                let t = match variant {
                    0 => ((u.floor() + v.floor()) as i64).rem_euclid(2) as f32,
                    1 => ((u + v).floor() as i64).rem_euclid(2) as f32,
                    _ => {
                        let (fx, fy) = (u - u.round(), v - v.round());
                        if fx * fx + fy * fy < 0.09 { 1.0 } else { 0.0 }
                    }
                };
                to_px(mix3(a, b, t))
            });
            (still(img), None)
        }
        Background::Photo => {
            let (src, path) = picture(&mut rng, w, h, photos)?;
            let win = Window::draw(&mut rng, &src, w, h);
            let img = imageops::crop_imm(
                src.as_ref(),
                win.x.floor() as u32,
                win.y.floor() as u32,
                (win.w.round() as u32).clamp(1, src.width()),
                (win.h.round() as u32).clamp(1, src.height()),
            )
            .to_image();
            (
                still(imageops::resize(&img, w, h, FilterType::Triangle)),
                path,
            )
        }
        Background::Moving => {
            let (src, path) = picture(&mut rng, w, h, photos)?;
            let a = Window::draw(&mut rng, &src, w, h);
            let b = a.pan(&mut rng, &src);
            // Sample a copy scaled so the window maps about 1:1 to the canvas: bilinear
            // sampling is then neither blurry nor aliased.
            let k = (w as f32 / a.w.min(b.w)).min(1.0);
            let scaled = if k < 0.99 {
                let (sw, sh) = (
                    ((src.width() as f32 * k).round() as u32).max(1),
                    ((src.height() as f32 * k).round() as u32).max(1),
                );
                imageops::resize(src.as_ref(), sw, sh, FilterType::Triangle)
            } else {
                src.as_ref().clone()
            };
            let frames = (0..n)
                .map(|i| {
                    let t = if n > 1 {
                        i as f32 / (n - 1) as f32
                    } else {
                        0.0
                    };
                    let lerp = |p: f32, q: f32| (p + (q - p) * t) * k;
                    let (ox, oy, ww, wh) = (
                        lerp(a.x, b.x),
                        lerp(a.y, b.y),
                        lerp(a.w, b.w),
                        lerp(a.h, b.h),
                    );
                    RgbImage::from_fn(w, h, |x, y| {
                        let sx = ox + (x as f32 + 0.5) * ww / w as f32 - 0.5;
                        let sy = oy + (y as f32 + 0.5) * wh / h as f32 - 0.5;
                        bilinear(&scaled, sx, sy)
                    })
                })
                .collect();
            (frames, path)
        }
    })
}

/// A crop window in picture pixels with the canvas's aspect ratio.
#[derive(Debug, Clone, Copy, PartialEq)]
struct Window {
    x: f32,
    y: f32,
    w: f32,
    h: f32,
}

impl Window {
    /// A random window covering 35–100 % of the largest one that fits: from a detail of the
    /// scene (the scale of a sticker in front of it) to the whole picture.
    fn draw(rng: &mut Rng, src: &RgbImage, w: u32, h: u32) -> Window {
        let (pw, ph) = (src.width() as f32, src.height() as f32);
        let aspect = w as f32 / h as f32;
        let (mw, mh) = if pw / ph > aspect {
            (ph * aspect, ph)
        } else {
            (pw, pw / aspect)
        };
        let f = rng.range(0.35, 1.0);
        let (ww, wh) = ((mw * f).max(1.0), (mh * f).max(1.0));
        Window {
            x: rng.range(0.0, 1.0) * (pw - ww).max(0.0),
            y: rng.range(0.0, 1.0) * (ph - wh).max(0.0),
            w: ww,
            h: wh,
        }
    }

    /// Where a slow camera move starting at `self` ends: a pan of up to 30 % of the window
    /// and a zoom of up to ±15 %, kept inside the picture.
    fn pan(self, rng: &mut Rng, src: &RgbImage) -> Window {
        let (pw, ph) = (src.width() as f32, src.height() as f32);
        let z = rng.range(0.85, 1.15);
        let (mut ww, mut wh) = (self.w * z, self.h * z);
        if ww > pw || wh > ph {
            let s = (pw / ww).min(ph / wh);
            ww *= s;
            wh *= s;
        }
        let cx = self.x + self.w / 2.0 + rng.range(-0.3, 0.3) * self.w;
        let cy = self.y + self.h / 2.0 + rng.range(-0.3, 0.3) * self.h;
        Window {
            x: (cx - ww / 2.0).clamp(0.0, (pw - ww).max(0.0)),
            y: (cy - wh / 2.0).clamp(0.0, (ph - wh).max(0.0)),
            w: ww,
            h: wh,
        }
    }
}

fn bilinear(img: &RgbImage, x: f32, y: f32) -> Rgb<u8> {
    let (w, h) = (img.width() as i64, img.height() as i64);
    let (x0, y0) = (x.floor(), y.floor());
    let (fx, fy) = (x - x0, y - y0);
    let at = |i: i64, j: i64| {
        let p = img.get_pixel(i.clamp(0, w - 1) as u32, j.clamp(0, h - 1) as u32);
        [f32::from(p[0]), f32::from(p[1]), f32::from(p[2])]
    };
    let (i, j) = (x0 as i64, y0 as i64);
    let top = mix3(at(i, j), at(i + 1, j), fx);
    let bottom = mix3(at(i, j + 1), at(i + 1, j + 1), fx);
    to_px(mix3(top, bottom, fy))
}

/// Longest side pictures are scaled down to on load: plenty for 256–512 px stickers.
pub const PICTURE_SIDE: u32 = 1024;
/// Pictures kept decoded (each at most `PICTURE_SIDE`² × 3 bytes = 3 MiB).
pub const PICTURE_CACHE: usize = 32;
/// Picks tried before a folder of undecodable pictures is an error.
const PICTURE_TRIES: usize = 4;

/// Decoded pictures shared by every composite of the process (least recently used first) and
/// folder listings (listing thousands of files for every clip would dominate small clips).
struct Pictures {
    lists: HashMap<PathBuf, Arc<Vec<PathBuf>>>,
    images: VecDeque<(PathBuf, Arc<RgbImage>)>,
}

static PICTURES: LazyLock<Mutex<Pictures>> = LazyLock::new(|| {
    Mutex::new(Pictures {
        lists: HashMap::new(),
        images: VecDeque::new(),
    })
});

fn pictures() -> std::sync::MutexGuard<'static, Pictures> {
    // A panic while holding the lock leaves consistent data (plain inserts): keep going.
    PICTURES.lock().unwrap_or_else(|e| e.into_inner())
}

/// A source picture for a `w × h` canvas: a file from `photos` (decode size capped, scaled to
/// at most [`PICTURE_SIDE`], cached) or procedural scenery of 1.5× the canvas.
fn picture(
    rng: &mut Rng,
    w: u32,
    h: u32,
    photos: Option<&Path>,
) -> Result<(Arc<RgbImage>, Option<PathBuf>)> {
    let pick = rng.next_u64();
    let Some(dir) = photos else {
        return Ok((Arc::new(photo_like(pick, w * 3 / 2, h * 3 / 2)), None));
    };
    let files = list_pictures(dir)?;
    if files.is_empty() {
        return Err(Error::Invalid(format!(
            "no pictures (png, jpg, jpeg, webp) in the photo folder {}",
            dir.display()
        )));
    }
    let mut last = None;
    for k in 0..PICTURE_TRIES.min(files.len()) {
        let path = &files[(mix(pick, k as u64) % files.len() as u64) as usize];
        match load_picture(path) {
            Ok(img) => return Ok((img, Some(path.clone()))),
            Err(e) => last = Some(e),
        }
    }
    Err(last.unwrap_or_else(|| Error::Invalid(format!("no usable picture in {}", dir.display()))))
}

/// A picture from the cache, or decoded with its size checked first against
/// [`Limits`] (so a hostile header cannot allocate gigabytes) and scaled down on load.
fn load_picture(path: &Path) -> Result<Arc<RgbImage>> {
    {
        let mut cache = pictures();
        if let Some(i) = cache.images.iter().position(|(p, _)| p == path)
            && let Some(hit) = cache.images.remove(i)
        {
            let img = Arc::clone(&hit.1);
            cache.images.push_back(hit);
            return Ok(img);
        }
    }
    let limits = Limits {
        max_side: 16384,
        max_frames: 1,
        max_bytes: 1 << 30,
    };
    let open = || {
        image::ImageReader::open(path)
            .map_err(|e| Error::io("open picture", path, e))?
            .with_guessed_format()
            .map_err(|e| Error::io("open picture", path, e))
    };
    let (pw, ph) = open()?
        .into_dimensions()
        .map_err(|e| Error::decode("picture", path, e))?;
    limits.check_all(pw, ph, 1, path)?;
    let mut reader = open()?;
    let mut lim = image::Limits::default();
    lim.max_image_width = Some(limits.max_side);
    lim.max_image_height = Some(limits.max_side);
    lim.max_alloc = Some(limits.max_bytes);
    reader.limits(lim);
    let img = reader
        .decode()
        .map_err(|e| Error::decode("picture", path, e))?
        .to_rgb8();
    if img.width() == 0 || img.height() == 0 {
        return Err(Error::decode("picture", path, "empty image"));
    }
    let long = img.width().max(img.height());
    let img = if long > PICTURE_SIDE {
        let k = PICTURE_SIDE as f32 / long as f32;
        let (sw, sh) = (
            ((img.width() as f32 * k).round() as u32).max(1),
            ((img.height() as f32 * k).round() as u32).max(1),
        );
        imageops::resize(&img, sw, sh, FilterType::Triangle)
    } else {
        img
    };
    let img = Arc::new(img);
    let mut cache = pictures();
    cache
        .images
        .push_back((path.to_path_buf(), Arc::clone(&img)));
    while cache.images.len() > PICTURE_CACHE {
        cache.images.pop_front();
    }
    Ok(img)
}

/// Sorted picture files of a folder (sorted so a seed always picks the same file); a listing
/// that found pictures is remembered for the process.
fn list_pictures(dir: &Path) -> Result<Arc<Vec<PathBuf>>> {
    if let Some(l) = pictures().lists.get(dir) {
        return Ok(Arc::clone(l));
    }
    let mut files: Vec<PathBuf> = std::fs::read_dir(dir)
        .map_err(|e| Error::io("read photo folder", dir, e))?
        .filter_map(|e| e.ok().map(|e| e.path()))
        .filter(|p| {
            !p.file_name()
                .is_some_and(|n| n.to_string_lossy().starts_with('.'))
                && p.extension().and_then(|e| e.to_str()).is_some_and(|e| {
                    matches!(
                        e.to_ascii_lowercase().as_str(),
                        "png" | "jpg" | "jpeg" | "webp"
                    )
                })
        })
        .collect();
    files.sort();
    let files = Arc::new(files);
    if !files.is_empty() {
        pictures()
            .lists
            .insert(dir.to_path_buf(), Arc::clone(&files));
    }
    Ok(files)
}

/// Photo-like scenery: a wavy horizon between two tinted regions, multi-octave value noise for
/// texture, and soft blobs (out-of-focus objects).
pub fn photo_like(seed: u64, w: u32, h: u32) -> RgbImage {
    let mut rng = Rng::new(seed);
    let sky = (random_colour(&mut rng), random_colour(&mut rng));
    let ground = (random_colour(&mut rng), random_colour(&mut rng));
    let horizon = rng.range(0.3, 0.7) * h as f32;
    let (nseed, hseed) = (rng.next_u64(), rng.next_u64());
    let scale = rng.range(2.0, 6.0) / w.max(1) as f32;
    let blobs: Vec<([f32; 2], f32, [f32; 3], f32)> = (0..6 + rng.below(7))
        .map(|_| {
            (
                [rng.range(0.0, w as f32), rng.range(0.0, h as f32)],
                rng.range(0.04, 0.22) * w.max(h) as f32,
                random_colour(&mut rng),
                rng.range(0.3, 0.8),
            )
        })
        .collect();
    RgbImage::from_fn(w, h, |x, y| {
        let (xf, yf) = (x as f32, y as f32);
        let line = horizon + (fbm(hseed, xf * scale, 0.5, 3) - 0.5) * 0.3 * h as f32;
        let (a, b) = if yf < line { sky } else { ground };
        let n = fbm(nseed, xf * scale * 2.0, yf * scale * 2.0, 5);
        let mut c = mix3(a, b, n);
        // Detail noise, stronger on the ground.
        let detail = (fbm(nseed ^ 1, xf * scale * 12.0, yf * scale * 12.0, 3) - 0.5)
            * if yf < line { 20.0 } else { 60.0 };
        c = c.map(|v| v + detail);
        for (p, r, col, op) in &blobs {
            let d = ((xf - p[0]).powi(2) + (yf - p[1]).powi(2)).sqrt();
            let cov = ((r - d) / (0.3 * r)).clamp(0.0, 1.0) * op;
            c = mix3(c, *col, cov);
        }
        to_px(c)
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::train::synth::{ClipSpec, Motion, Subject, SynthConfig, render};

    fn fg() -> Animation {
        let cfg = SynthConfig {
            width: 64,
            height: 64,
            frames: 4,
            fps: 10.0,
        };
        render(
            &ClipSpec::plain(Subject::Character, Motion::Bounce, 9),
            &cfg,
        )
        .expect("clip")
    }

    #[test]
    fn composite_is_fg_where_opaque_and_background_where_clear() {
        let fg = fg();
        for bg in Background::ALL {
            let c = composite(&fg, bg, Degradation::None, 5, None).expect("composite");
            let (bgs, _) = background_frames(bg, &fg, mix(5, 43), None).expect("bg");
            assert_eq!(c.gt, fg);
            let (mut opaque, mut clear) = (0, 0);
            for ((f, out), b) in fg.frames.iter().zip(&c.rgb.frames).zip(&bgs) {
                for ((p, q), r) in f.image.pixels().zip(out.image.pixels()).zip(b.pixels()) {
                    assert_eq!(q[3], 255);
                    if p[3] == 255 {
                        assert_eq!(&p.0[..3], &q.0[..3], "{bg:?}");
                        opaque += 1;
                    } else if p[3] == 0 {
                        assert_eq!(&r.0[..3], &q.0[..3], "{bg:?}");
                        clear += 1;
                    }
                }
            }
            assert!(opaque > 100 && clear > 100);
        }
    }

    #[test]
    fn similar_colour_background_is_close_to_the_foreground() {
        let fg = fg();
        let m = mean_colour(&fg);
        for seed in 0..5 {
            let (bgs, _) =
                background_frames(Background::SimilarColour, &fg, seed, None).expect("bg");
            let (mut s, mut n) = ([0f64; 3], 0f64);
            for p in bgs[0].pixels() {
                for c in 0..3 {
                    s[c] += f64::from(p[c]);
                }
                n += 1.0;
            }
            let d: f64 = (0..3)
                .map(|c| (s[c] / n - f64::from(m[c])).powi(2))
                .sum::<f64>()
                .sqrt();
            assert!(d < 40.0, "seed {seed}: distance {d}");
        }
        // A plain random colour is usually much farther.
        let far = (0..20)
            .filter(|&seed| {
                let (bgs, _) = background_frames(Background::Plain, &fg, seed, None).expect("bg");
                let p = bgs[0].get_pixel(0, 0);
                let d: f32 = (0..3)
                    .map(|c| (f32::from(p[c]) - m[c]).powi(2))
                    .sum::<f32>()
                    .sqrt();
                d > 40.0
            })
            .count();
        assert!(far > 10);
    }

    #[test]
    fn moving_background_moves_and_static_ones_do_not() {
        let fg = fg();
        let (moving, _) = background_frames(Background::Moving, &fg, 3, None).expect("bg");
        assert_ne!(moving[0], moving[3]);
        let (photo, _) = background_frames(Background::Photo, &fg, 3, None).expect("bg");
        assert_eq!(photo[0], photo[3]);
    }

    #[test]
    fn degradations_change_pixels_and_gif_binarises_gt() {
        let fg = fg();
        let clean = composite(&fg, Background::Photo, Degradation::None, 2, None).expect("c");
        for deg in [Degradation::Gif, Degradation::Blocking, Degradation::Resize] {
            let c = composite(&fg, Background::Photo, deg, 2, None).expect("c");
            assert_ne!(c.rgb, clean.rgb, "{deg:?}");
            assert!(
                c.rgb
                    .frames
                    .iter()
                    .all(|f| f.image.pixels().all(|p| p[3] == 255))
            );
            let partial =
                c.gt.frames
                    .iter()
                    .flat_map(|f| f.image.pixels())
                    .filter(|p| p[3] != 0 && p[3] != 255)
                    .count();
            assert_eq!(partial == 0, deg == Degradation::Gif, "{deg:?}");
        }
        let gif = composite(&fg, Background::Photo, Degradation::Gif, 2, None).expect("c");
        let colors: std::collections::HashSet<[u8; 4]> = gif
            .rgb
            .frames
            .iter()
            .flat_map(|f| f.image.pixels().map(|p| p.0))
            .collect();
        let max = usize::from(gif.params.colors.expect("colors"));
        assert!(colors.len() <= max, "{} colours > {max}", colors.len());
    }

    #[test]
    fn photo_folder_is_used_and_an_empty_one_is_an_error() {
        let dir = tempfile::tempdir().expect("tempdir");
        let fg = fg();
        let err = composite(
            &fg,
            Background::Photo,
            Degradation::None,
            1,
            Some(dir.path()),
        )
        .expect_err("empty folder");
        assert_eq!(err.kind(), "invalid");
        let pic = RgbImage::from_pixel(50, 30, Rgb([10, 200, 30]));
        pic.save(dir.path().join("a.png")).expect("save");
        let c = composite(
            &fg,
            Background::Photo,
            Degradation::None,
            1,
            Some(dir.path()),
        )
        .expect("composite");
        assert_eq!(c.photo.as_deref(), Some(dir.path().join("a.png").as_path()));
        let corner = c.rgb.frames[0].image.get_pixel(0, 0);
        assert_eq!(corner.0, [10, 200, 30, 255]);
    }

    fn gradient_folder(w: u32, h: u32) -> tempfile::TempDir {
        let dir = tempfile::tempdir().expect("tempdir");
        let pic = RgbImage::from_fn(w, h, |x, y| {
            Rgb([(x * 255 / w) as u8, (y * 255 / h) as u8, 90])
        });
        pic.save(dir.path().join("grad.png")).expect("save");
        dir
    }

    fn red_range(img: &RgbImage) -> i32 {
        let reds: Vec<i32> = img.pixels().map(|p| i32::from(p[0])).collect();
        reds.iter().max().expect("px") - reds.iter().min().expect("px")
    }

    #[test]
    fn photo_backgrounds_are_random_crops_and_moving_ones_pan_slowly() {
        let dir = gradient_folder(600, 400);
        let fg = fg();
        let mut ranges = Vec::new();
        let mut corners = std::collections::HashSet::new();
        for seed in 0..12 {
            let (bgs, path) =
                background_frames(Background::Photo, &fg, seed, Some(dir.path())).expect("bg");
            assert!(path.is_some());
            assert_eq!(bgs[0], bgs[3]);
            ranges.push(red_range(&bgs[0]));
            corners.insert(bgs[0].get_pixel(0, 0).0);
        }
        // The whole picture spans red 0..255; crops of 35-100 % span less, and differ.
        assert!(ranges.iter().any(|&r| r < 170), "{ranges:?}");
        assert!(corners.len() > 6, "{corners:?}");
        for seed in 0..4 {
            let (m, _) =
                background_frames(Background::Moving, &fg, seed, Some(dir.path())).expect("bg");
            let diff = |a: &RgbImage, b: &RgbImage| -> f64 {
                a.pixels()
                    .zip(b.pixels())
                    .map(|(p, q)| {
                        (0..3)
                            .map(|c| (f64::from(p[c]) - f64::from(q[c])).abs())
                            .sum::<f64>()
                    })
                    .sum::<f64>()
                    / f64::from(a.width() * a.height() * 3)
            };
            let step = diff(&m[0], &m[1]);
            let total = diff(&m[0], &m[3]);
            assert!(step < 20.0, "seed {seed}: step {step}");
            assert!(step <= total + 1e-9, "seed {seed}: {step} > {total}");
        }
    }

    #[test]
    fn large_pictures_are_scaled_down_on_load_and_broken_ones_are_errors() {
        let dir = gradient_folder(1500, 300);
        let img = load_picture(&dir.path().join("grad.png")).expect("load");
        assert_eq!((img.width(), img.height()), (PICTURE_SIDE, 205));
        let bad = tempfile::tempdir().expect("tempdir");
        std::fs::write(bad.path().join("x.jpg"), b"not a jpeg").expect("write");
        let err = composite(
            &fg(),
            Background::Photo,
            Degradation::None,
            0,
            Some(bad.path()),
        )
        .expect_err("broken picture");
        assert!(err.to_string().contains("x.jpg"), "{err}");
    }
}

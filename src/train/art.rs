//! Real artwork as training stickers. Procedural shapes alone teach the decoder a narrow idea
//! of "foreground"; emoji and sticker artwork (SVG sets fetched by
//! `packaging/fetch-training-data.sh`, or pre-rasterised RGBA PNGs) look like what users bring.
//! [`ArtLibrary`] finds the artwork, splits it into train/val by file name (so a validation
//! design is never trained on), rasterises on demand into a bounded cache, and animates a still
//! with the motion vocabulary of [`super::synth`] plus soft parts (shadow, glow, trails) whose
//! alpha is exact because it is computed, not estimated.

use std::collections::{HashMap, VecDeque};
use std::f32::consts::{PI, TAU};
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex};

use image::RgbaImage;
use serde::Serialize;

use super::Split;
use super::synth::{Rng, SynthConfig, mix};
use crate::error::{Error, Result};
use crate::media::animation::{premultiply, resize_rgba};
use crate::media::{Animation, Delay, Frame, LoopCount};

/// Largest raster side kept in the cache: stickers are at most 512 px and the artwork fills
/// at most about two thirds of them.
pub const MAX_RASTER: u32 = 512;
/// Rasters kept in memory (each at most `MAX_RASTER`² × 4 bytes = 1 MiB).
pub const CACHE_RASTERS: usize = 256;
/// SVG files larger than this are skipped (emoji are a few kB; huge files are not artwork).
const MAX_SVG_BYTES: u64 = 4 << 20;
/// Tries with other artwork when a picked file fails to rasterise.
const PICK_TRIES: u64 = 16;

/// A stable 64-bit hash of a file's lower-case stem (FNV-1a: unlike `DefaultHasher` it never
/// changes between Rust versions), for splits and per-file seeds.
pub fn name_seed(path: &Path) -> u64 {
    let stem = path
        .file_stem()
        .map(|s| s.to_string_lossy().to_lowercase())
        .unwrap_or_default();
    stem.bytes().fold(0xcbf2_9ce4_8422_2325u64, |h, b| {
        (h ^ u64::from(b)).wrapping_mul(0x0000_0100_0000_01b3)
    })
}

/// The split of an artwork (or imported) file: 10 % validation, by [`name_seed`], so a file
/// keeps its split wherever the folder lives, and the same emoji code point drawn by two sets
/// (e.g. `1f600.svg`) lands in the same split.
pub fn split_of_name(path: &Path) -> Split {
    if mix(name_seed(path), 0xA127_5911).is_multiple_of(10) {
        Split::Val
    } else {
        Split::Train
    }
}

/// How the artwork moves over the loop; every motion is periodic so clips loop seamlessly.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum ArtMotion {
    /// Hops up and lands with a squash.
    Bounce,
    /// Turns a full circle about its centre.
    Spin,
    /// Squashes and stretches on its base.
    SquashStretch,
    /// Tilts back and forth about its base (waving, rocking).
    Wave,
    /// Walks left and right with a hop per step and a sway.
    Walk,
    /// Grows and shrinks (breathing, pulsing).
    Zoom,
    /// Drifts along a figure eight with a slight tilt.
    Float,
    /// Turns back and forth about its vertical axis (foreshortened, as if looking around).
    Turn,
}

impl ArtMotion {
    pub const ALL: [ArtMotion; 8] = [
        ArtMotion::Bounce,
        ArtMotion::Spin,
        ArtMotion::SquashStretch,
        ArtMotion::Wave,
        ArtMotion::Walk,
        ArtMotion::Zoom,
        ArtMotion::Float,
        ArtMotion::Turn,
    ];

    /// Motions that travel, for which motion-blur trails make sense.
    fn travels(self) -> bool {
        matches!(
            self,
            ArtMotion::Bounce | ArtMotion::Walk | ArtMotion::Float | ArtMotion::Spin
        )
    }
}

/// Everything that defines an artwork clip besides the canvas; `meta.json` records it.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct ArtSpec {
    /// The artwork, relative to the library folder.
    pub file: PathBuf,
    pub motion: ArtMotion,
    /// Longest side of the artwork's visible content as a fraction of the canvas side
    /// (at rest; motions scale it by at most ±20 %).
    pub fill: f32,
    /// Drawn mirrored left-right.
    pub mirror: bool,
    /// A soft drop shadow.
    pub shadow: bool,
    /// A soft coloured halo behind the artwork.
    pub glow: bool,
    /// Semi-transparent copies of earlier poses behind the artwork.
    pub trails: bool,
    /// Seed of the numeric choices (amplitudes, offsets, colours).
    pub style_seed: u64,
}

#[derive(Debug, Clone)]
struct Item {
    path: PathBuf,
    svg: bool,
}

/// Indices of items, one list per focused subject.
type Pools = Vec<Vec<usize>>;

/// A folder of artwork (`*.svg`, RGBA `*.png`) with a train/val split and a raster cache.
/// `Sync`: one library can serve several data-loading threads.
#[derive(Debug)]
pub struct ArtLibrary {
    root: PathBuf,
    items: Vec<Item>,
    train: Vec<usize>,
    val: Vec<usize>,
    /// Per-subject pools after [`ArtLibrary::focus`] (train, val): a clip first picks a subject
    /// uniformly, then a file of it, so a subject with 400 files (faces) does not drown one with 3.
    groups: Option<(Pools, Pools)>,
    skipped: Vec<(PathBuf, String)>,
    cache: Mutex<RasterCache>,
}

/// Least-recently-used premultiplied rasters keyed by (item, raster side).
#[derive(Debug, Default)]
struct RasterCache {
    map: HashMap<(usize, u32), Arc<RgbaImage>>,
    order: VecDeque<(usize, u32)>,
}

impl RasterCache {
    fn get(&mut self, key: (usize, u32)) -> Option<Arc<RgbaImage>> {
        let r = self.map.get(&key).cloned()?;
        if let Some(i) = self.order.iter().position(|k| *k == key) {
            self.order.remove(i);
        }
        self.order.push_back(key);
        Some(r)
    }

    fn put(&mut self, key: (usize, u32), r: Arc<RgbaImage>) {
        if self.map.insert(key, r).is_none() {
            self.order.push_back(key);
        }
        while self.order.len() > CACHE_RASTERS {
            if let Some(old) = self.order.pop_front() {
                self.map.remove(&old);
            }
        }
    }
}

impl ArtLibrary {
    /// Finds artwork under `dir` (recursively) and checks that each file parses; files that do
    /// not, PNGs without alpha and anything named "noto" (Noto Color Emoji is the evaluation
    /// hold-out) are skipped and listed in [`ArtLibrary::skipped`]. An error only when the folder
    /// cannot be read or holds no usable artwork.
    pub fn load(dir: &Path) -> Result<ArtLibrary> {
        let mut files = Vec::new();
        walk(dir, &mut files)?;
        files.sort();
        let mut skipped = Vec::new();
        let mut candidates = Vec::new();
        for path in files {
            let name = path
                .file_name()
                .map(|n| n.to_string_lossy().to_lowercase())
                .unwrap_or_default();
            if name.contains("noto") {
                skipped.push((path, "held out for evaluation (Noto)".to_string()));
            } else if name.ends_with(".svg") {
                candidates.push(Item { path, svg: true });
            } else if name.ends_with(".png") {
                candidates.push(Item { path, svg: false });
            }
        }
        let checks = check_all(&candidates);
        let mut items = Vec::new();
        for (item, check) in candidates.into_iter().zip(checks) {
            match check {
                Ok(()) => items.push(item),
                Err(reason) => skipped.push((item.path, reason)),
            }
        }
        if items.is_empty() {
            return Err(Error::Invalid(format!(
                "no usable artwork (*.svg, RGBA *.png) under {} ({} files skipped)",
                dir.display(),
                skipped.len()
            )));
        }
        let (mut train, mut val) = (Vec::new(), Vec::new());
        for (i, item) in items.iter().enumerate() {
            match split_of_name(&item.path) {
                Split::Train => train.push(i),
                Split::Val => val.push(i),
            }
        }
        Ok(ArtLibrary {
            root: dir.to_path_buf(),
            items,
            train,
            val,
            groups: None,
            skipped,
            cache: Mutex::new(RasterCache::default()),
        })
    }

    /// Narrows the library to the files of some subjects and balances them: afterwards a clip
    /// picks one of `subjects` uniformly, then one of its files. `words_of` gives a file's
    /// words, or None to leave the file out whatever its words; a file matches a subject when
    /// one of its words is the subject or its plural. Returns each subject's (train, val) file
    /// counts; an error when no training file matches any subject.
    ///
    /// Why: the whole library is ~10 000 files for a few hundred words, so a CPU-sized training
    /// run sees each file less than once. (Focusing alone did not make the generator follow its
    /// prompt; see the generator's model card.)
    pub fn focus(
        &mut self,
        subjects: &[String],
        words_of: impl Fn(&Path) -> Option<Vec<String>>,
    ) -> Result<Vec<(String, usize, usize)>> {
        let words: Vec<Option<Vec<String>>> =
            self.items.iter().map(|it| words_of(&it.path)).collect();
        let matches = |i: usize, s: &str| {
            words[i].as_ref().is_some_and(|ws| {
                ws.iter().any(|w| {
                    w == s || w.strip_suffix('s') == Some(s) || w.strip_suffix("es") == Some(s)
                })
            })
        };
        let pools = |split: &[usize]| -> Pools {
            subjects
                .iter()
                .map(|s| split.iter().copied().filter(|&i| matches(i, s)).collect())
                .collect()
        };
        let (train, val) = (pools(&self.train), pools(&self.val));
        let counts: Vec<(String, usize, usize)> = subjects
            .iter()
            .zip(train.iter().zip(&val))
            .map(|(s, (t, v))| (s.clone(), t.len(), v.len()))
            .collect();
        if train.iter().all(Vec::is_empty) {
            return Err(Error::Invalid(format!(
                "no training artwork under {} is named after any of: {}",
                self.root.display(),
                subjects.join(", ")
            )));
        }
        let union = |g: &Pools| {
            let mut all: Vec<usize> = g.iter().flatten().copied().collect();
            all.sort_unstable();
            all.dedup();
            all
        };
        self.train = union(&train);
        self.val = union(&val);
        let keep = |g: Pools| g.into_iter().filter(|p| !p.is_empty()).collect();
        self.groups = Some((keep(train), keep(val)));
        Ok(counts)
    }

    /// The folder the library was loaded from.
    pub fn root(&self) -> &Path {
        &self.root
    }

    /// Usable artwork files.
    pub fn len(&self) -> usize {
        self.items.len()
    }

    pub fn is_empty(&self) -> bool {
        self.items.is_empty()
    }

    /// Usable files of one split.
    pub fn count(&self, split: Split) -> usize {
        self.indices(split).len()
    }

    /// The files of one split, sorted.
    pub fn files(&self, split: Split) -> Vec<&Path> {
        self.indices(split)
            .iter()
            .map(|&i| self.items[i].path.as_path())
            .collect()
    }

    /// The files of one split grouped as a clip draws them: one group per focused subject
    /// (see [`ArtLibrary::focus`]; a file may be in several), or one group of every file when
    /// the library is not focused. For exporting the draw to another trainer.
    pub fn pools(&self, split: Split) -> Vec<Vec<&Path>> {
        let paths = |g: &[usize]| g.iter().map(|&i| self.items[i].path.as_path()).collect();
        match &self.groups {
            Some((t, v)) => match split {
                Split::Train => t,
                Split::Val => v,
            }
            .iter()
            .map(|g| paths(g))
            .collect(),
            None => vec![paths(self.indices(split))],
        }
    }

    /// The premultiplied raster of a file of the library, its content's long side `side` px
    /// (at most [`MAX_RASTER`]), cropped to the visible content plus a clear 1 px border: what
    /// clips are drawn from.
    pub fn sprite(&self, file: &Path, side: u32) -> Result<Arc<RgbaImage>> {
        let idx = self
            .items
            .iter()
            .position(|it| it.path == file)
            .ok_or_else(|| {
                Error::Invalid(format!("{} is not in the art library", file.display()))
            })?;
        self.raster(idx, side.clamp(16, MAX_RASTER))
    }

    /// Files that were skipped while loading, with the reason.
    pub fn skipped(&self) -> &[(PathBuf, String)] {
        &self.skipped
    }

    fn indices(&self, split: Split) -> &[usize] {
        match split {
            Split::Train => &self.train,
            Split::Val => &self.val,
        }
    }

    /// A clip of artwork from `split` for `seed`: `frames` frames of `size`×`size` at 12 fps,
    /// straight alpha, looping. Deterministic for (library, split, seed, size, frames).
    pub fn clip(&self, split: Split, seed: u64, size: u32, frames: u32) -> Result<Animation> {
        let cfg = SynthConfig {
            width: size,
            height: size,
            frames,
            fps: 12.0,
        };
        let spec = self.spec(split, seed)?;
        self.render(&spec, &cfg)
    }

    /// The spec a seed gives in a split: the artwork and the motion, size and extras. Artwork
    /// that fails to rasterise is passed over for another pick of the same seed.
    pub fn spec(&self, split: Split, seed: u64) -> Result<ArtSpec> {
        let pool = self.indices(split);
        if pool.is_empty() {
            return Err(Error::Invalid(format!(
                "no {} artwork under {}",
                split.name(),
                self.root.display()
            )));
        }
        let mut last = None;
        for attempt in 0..PICK_TRIES {
            let mut rng = Rng::new(mix(seed, 0xA57 + attempt));
            let groups = self.groups.as_ref().map(|(t, v)| match split {
                Split::Train => t,
                Split::Val => v,
            });
            let idx = match groups {
                Some(g) if !g.is_empty() => {
                    let group = &g[rng.below(g.len())];
                    group[rng.below(group.len())]
                }
                _ => pool[rng.below(pool.len())],
            };
            if let Err(e) = self.raster(idx, 64) {
                last = Some(e);
                continue;
            }
            let motion = ArtMotion::ALL[rng.below(ArtMotion::ALL.len())];
            let item = &self.items[idx];
            return Ok(ArtSpec {
                file: item
                    .path
                    .strip_prefix(&self.root)
                    .unwrap_or(&item.path)
                    .to_path_buf(),
                motion,
                fill: rng.range(0.30, 0.65),
                mirror: rng.chance(0.3),
                shadow: rng.chance(0.3),
                glow: rng.chance(0.2),
                trails: motion.travels() && rng.chance(0.3),
                style_seed: rng.next_u64(),
            });
        }
        Err(last.unwrap_or_else(|| Error::Invalid("no artwork could be rasterised".into())))
    }

    /// Renders a spec (from [`ArtLibrary::spec`] of this library) on `cfg`'s canvas.
    pub fn render(&self, spec: &ArtSpec, cfg: &SynthConfig) -> Result<Animation> {
        cfg.validate()?;
        let path = self.root.join(&spec.file);
        let idx = self
            .items
            .iter()
            .position(|it| it.path == path || it.path == spec.file)
            .ok_or_else(|| {
                Error::Invalid(format!("{} is not in the art library", spec.file.display()))
            })?;
        let side = cfg.width.min(cfg.height) as f32;
        // The most canvas pixels the content's long side can need (Zoom grows it by 20 %).
        let need = (spec.fill * side * 1.25).ceil() as u32;
        let bucket = need.max(16).next_power_of_two().clamp(32, MAX_RASTER);
        let raster = self.raster(idx, bucket)?;
        let anim = Animator::new(spec, cfg, &raster);
        let delay = Delay::from_fps(cfg.fps);
        let frames = (0..cfg.frames)
            .map(|i| Frame::new(anim.frame(i as f32 / cfg.frames as f32), delay))
            .collect();
        Animation::new(cfg.width, cfg.height, frames, LoopCount::Infinite)
    }

    /// The premultiplied raster of item `idx`, its content's long side `side` px (or less for
    /// a small PNG), cropped to the visible content.
    fn raster(&self, idx: usize, side: u32) -> Result<Arc<RgbaImage>> {
        let key = (idx, side);
        if let Some(r) = self.lock().get(key) {
            return Ok(r);
        }
        let item = &self.items[idx];
        let img = if item.svg {
            rasterise_svg(&item.path, side)?
        } else {
            load_png(&item.path, side)?
        };
        let r = Arc::new(img);
        self.lock().put(key, Arc::clone(&r));
        Ok(r)
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, RasterCache> {
        // A panic elsewhere while holding the lock leaves a usable cache: keep going.
        self.cache.lock().unwrap_or_else(|e| e.into_inner())
    }
}

fn walk(dir: &Path, out: &mut Vec<PathBuf>) -> Result<()> {
    let list = std::fs::read_dir(dir).map_err(|e| Error::io("read art folder", dir, e))?;
    for entry in list {
        let entry = entry.map_err(|e| Error::io("read art folder", dir, e))?;
        let path = entry.path();
        if entry.file_name().to_string_lossy().starts_with('.') {
            continue;
        }
        let Ok(ft) = entry.file_type() else { continue };
        if ft.is_dir() {
            walk(&path, out)?;
        } else if ft.is_file() {
            out.push(path);
        }
    }
    Ok(())
}

/// Checks every candidate, in parallel (parsing thousands of SVGs serially takes a while).
fn check_all(items: &[Item]) -> Vec<std::result::Result<(), String>> {
    let jobs = std::thread::available_parallelism()
        .map_or(1, |n| n.get())
        .clamp(1, 8);
    let chunk = items.len().div_ceil(jobs).max(1);
    std::thread::scope(|s| {
        let handles: Vec<_> = items
            .chunks(chunk)
            .map(|c| s.spawn(move || c.iter().map(check).collect::<Vec<_>>()))
            .collect();
        handles
            .into_iter()
            .zip(items.chunks(chunk))
            .flat_map(|(h, c)| {
                h.join().unwrap_or_else(|_| {
                    vec![Err("checking this file crashed".to_string()); c.len()]
                })
            })
            .collect()
    })
}

fn check(item: &Item) -> std::result::Result<(), String> {
    if item.svg {
        parse_svg(&item.path).map(|_| ()).map_err(|e| e.to_string())
    } else {
        let reader = image::ImageReader::open(&item.path)
            .and_then(|r| r.with_guessed_format())
            .map_err(|e| e.to_string())?;
        let (w, h) = reader.into_dimensions().map_err(|e| e.to_string())?;
        let reader = image::ImageReader::open(&item.path).map_err(|e| e.to_string())?;
        let decoder = reader
            .with_guessed_format()
            .map_err(|e| e.to_string())?
            .into_decoder()
            .map_err(|e| e.to_string())?;
        use image::ImageDecoder;
        if !decoder.color_type().has_alpha() {
            return Err("no alpha channel".into());
        }
        if w == 0 || h == 0 || w > 4096 || h > 4096 {
            return Err(format!("size {w}x{h} is outside 1..=4096"));
        }
        Ok(())
    }
}

fn parse_svg(path: &Path) -> Result<resvg::usvg::Tree> {
    let meta = std::fs::metadata(path).map_err(|e| Error::io("read SVG", path, e))?;
    if meta.len() > MAX_SVG_BYTES {
        return Err(Error::decode(
            "SVG",
            path,
            format!("{} bytes is more than {MAX_SVG_BYTES}", meta.len()),
        ));
    }
    let data = std::fs::read(path).map_err(|e| Error::io("read SVG", path, e))?;
    let tree = resvg::usvg::Tree::from_data(&data, &resvg::usvg::Options::default())
        .map_err(|e| Error::decode("SVG", path, e))?;
    if !tree.root().has_children() {
        return Err(Error::decode("SVG", path, "draws nothing"));
    }
    Ok(tree)
}

/// Rasterises an SVG so that its drawn content's long side is `side` px, premultiplied and
/// cropped to the visible pixels.
fn rasterise_svg(path: &Path, side: u32) -> Result<RgbaImage> {
    let tree = parse_svg(path)?;
    let size = tree.size();
    let bb = tree.root().abs_layer_bounding_box();
    // What a viewer shows: the content clipped to the viewport.
    let x0 = bb.left().max(0.0);
    let y0 = bb.top().max(0.0);
    let x1 = bb.right().min(size.width());
    let y1 = bb.bottom().min(size.height());
    let (bw, bh) = (x1 - x0, y1 - y0);
    if !(bw > 0.0 && bh > 0.0) {
        return Err(Error::decode(
            "SVG",
            path,
            "nothing visible in the viewport",
        ));
    }
    let s = side as f32 / bw.max(bh);
    let (pw, ph) = (
        ((bw * s).ceil() as u32 + 2).min(MAX_RASTER + 2),
        ((bh * s).ceil() as u32 + 2).min(MAX_RASTER + 2),
    );
    let mut pixmap = resvg::tiny_skia::Pixmap::new(pw, ph)
        .ok_or_else(|| Error::decode("SVG", path, format!("bad raster size {pw}x{ph}")))?;
    let tf = resvg::tiny_skia::Transform::from_row(s, 0.0, 0.0, s, 1.0 - x0 * s, 1.0 - y0 * s);
    resvg::render(&tree, tf, &mut pixmap.as_mut());
    let img = RgbaImage::from_raw(pw, ph, pixmap.take())
        .ok_or_else(|| Error::decode("SVG", path, "raster buffer size mismatch"))?;
    crop_visible(&img).ok_or_else(|| Error::decode("SVG", path, "renders no visible pixels"))
}

/// Loads an RGBA PNG (decode size capped), shrinks its content to at most `side` px and
/// premultiplies it.
fn load_png(path: &Path, side: u32) -> Result<RgbaImage> {
    let mut reader = image::ImageReader::open(path)
        .map_err(|e| Error::io("open picture", path, e))?
        .with_guessed_format()
        .map_err(|e| Error::io("open picture", path, e))?;
    let mut limits = image::Limits::default();
    limits.max_image_width = Some(4096);
    limits.max_image_height = Some(4096);
    limits.max_alloc = Some(256 << 20);
    reader.limits(limits);
    let mut img = reader
        .decode()
        .map_err(|e| Error::decode("PNG", path, e))?
        .to_rgba8();
    let (w, h) = (img.width(), img.height());
    // Crop first so the size refers to the content, then shrink (never enlarge: the sampler
    // interpolates).
    premultiply(&mut img);
    let cropped = crop_visible(&img)
        .ok_or_else(|| Error::decode("PNG", path, format!("{w}x{h} picture is fully clear")))?;
    let long = cropped.width().max(cropped.height());
    if long <= side {
        return Ok(cropped);
    }
    let k = side as f32 / long as f32;
    let (nw, nh) = (
        ((cropped.width() as f32 * k).round() as u32).max(1),
        ((cropped.height() as f32 * k).round() as u32).max(1),
    );
    // resize_rgba filters premultiplied internally; give it straight alpha.
    let mut straight = cropped;
    crate::media::animation::unpremultiply(&mut straight);
    let mut small = resize_rgba(&straight, nw, nh);
    premultiply(&mut small);
    Ok(small)
}

/// The image cropped to its pixels with alpha > 0, with a 1 px clear border (so bilinear
/// sampling fades to zero at the edges); `None` when nothing is visible.
fn crop_visible(img: &RgbaImage) -> Option<RgbaImage> {
    let (mut x0, mut y0, mut x1, mut y1) = (u32::MAX, u32::MAX, 0, 0);
    for (x, y, p) in img.enumerate_pixels() {
        if p[3] > 0 {
            x0 = x0.min(x);
            y0 = y0.min(y);
            x1 = x1.max(x);
            y1 = y1.max(y);
        }
    }
    if x0 > x1 {
        return None;
    }
    let (w, h) = (x1 - x0 + 1, y1 - y0 + 1);
    let mut out = RgbaImage::new(w + 2, h + 2);
    image::imageops::replace(
        &mut out,
        &image::imageops::crop_imm(img, x0, y0, w, h).to_image(),
        1,
        1,
    );
    Some(out)
}

/// Canvas placement of the raster in one frame.
#[derive(Debug, Clone, Copy)]
struct Pose {
    /// Canvas position of the pivot.
    c: [f32; 2],
    /// Canvas pixels per raster pixel along the artwork's own x and y (negative x mirrors).
    kx: f32,
    ky: f32,
    angle: f32,
}

/// Per-clip numbers drawn from the spec's style seed.
struct Animator<'a> {
    spec: &'a ArtSpec,
    raster: &'a RgbaImage,
    w: u32,
    h: u32,
    /// Canvas pixels per raster pixel at rest.
    k: f32,
    /// Pivot in raster coordinates: bottom centre for motions on a base, else the centre.
    pivot: [f32; 2],
    /// Rest position of the pivot.
    rest: [f32; 2],
    /// Travel amplitude in canvas pixels (bounded so the artwork stays on the canvas).
    amp: [f32; 2],
    dir: f32,
    phase: f32,
    strength: f32,
    shadow_off: [f32; 2],
    shadow_opacity: f32,
    glow_colour: [f32; 3],
    glow_opacity: f32,
}

impl<'a> Animator<'a> {
    fn new(spec: &'a ArtSpec, cfg: &SynthConfig, raster: &'a RgbaImage) -> Animator<'a> {
        let mut rng = Rng::new(spec.style_seed);
        let (w, h) = (cfg.width, cfg.height);
        let side = w.min(h) as f32;
        let (rw, rh) = (raster.width() as f32 - 2.0, raster.height() as f32 - 2.0);
        let long = rw.max(rh).max(1.0);
        let k = spec.fill * side / long;
        let (cw, ch) = (rw * k, rh * k);
        let on_base = matches!(
            spec.motion,
            ArtMotion::Bounce | ArtMotion::SquashStretch | ArtMotion::Wave | ArtMotion::Walk
        );
        let pivot = if on_base {
            [raster.width() as f32 / 2.0, raster.height() as f32 - 1.0]
        } else {
            [raster.width() as f32 / 2.0, raster.height() as f32 / 2.0]
        };
        // Half extents the motion may reach (rotation: the half diagonal; zoom: +20 %).
        let grow = match spec.motion {
            ArtMotion::Spin => (cw * cw + ch * ch).sqrt() / cw.max(ch).max(1.0),
            ArtMotion::Zoom => 1.2,
            ArtMotion::Wave => 1.1,
            _ => 1.05,
        };
        let (ex, ey) = (cw.max(ch) * grow / 2.0, cw.max(ch) * grow / 2.0);
        // Free room around the artwork's centre on each axis, minus a small margin.
        let margin = 0.03 * side;
        let slack_x = (w as f32 / 2.0 - ex - margin).max(0.0);
        let slack_y = (h as f32 / 2.0 - ey - margin).max(0.0);
        let (ax, ay) = match spec.motion {
            ArtMotion::Walk => (slack_x * rng.range(0.6, 1.0), 0.1 * ch.min(slack_y)),
            ArtMotion::Bounce => (0.0, (slack_y * 1.6).min(0.45 * ch) * rng.range(0.6, 1.0)),
            ArtMotion::Float => (slack_x * rng.range(0.3, 0.6), slack_y * rng.range(0.2, 0.4)),
            _ => (0.0, 0.0),
        };
        // Rest position: centred, shifted by what the motion leaves free.
        let free_x = (slack_x - ax).max(0.0);
        let mut cx = w as f32 / 2.0 + rng.range(-0.5, 0.5) * free_x;
        let mut cy = h as f32 / 2.0 + rng.range(-0.5, 0.5) * (slack_y - ay / 2.0).max(0.0);
        if on_base {
            cy += ch / 2.0;
        }
        if spec.motion == ArtMotion::Bounce {
            // The hop goes up from the rest (landing) position: start lower.
            cy += ay / 2.0;
        }
        cx = cx.clamp(0.0, w as f32);
        cy = cy.clamp(0.0, h as f32);
        let glow_colour = match rng.below(4) {
            0 => [1.0, 0.95, 0.6],
            1 => [1.0, 1.0, 1.0],
            2 => [0.6, 0.85, 1.0],
            _ => [rng.f32(), rng.f32(), rng.f32()],
        };
        Animator {
            spec,
            raster,
            w,
            h,
            k,
            pivot,
            rest: [cx, cy],
            amp: [ax, ay],
            dir: rng.sign(),
            phase: if rng.chance(0.5) { 0.0 } else { 0.5 },
            strength: rng.range(0.6, 1.0),
            shadow_off: [
                rng.range(0.02, 0.06) * side * rng.sign(),
                rng.range(0.02, 0.06) * side,
            ],
            shadow_opacity: rng.range(0.25, 0.5),
            glow_colour,
            glow_opacity: rng.range(0.4, 0.8),
        }
    }

    fn pose(&self, t: f32) -> Pose {
        let s = self.strength;
        let wv = TAU * (t + self.phase);
        let mirror = if self.spec.mirror { -1.0 } else { 1.0 };
        let (mut kx, mut ky, mut angle) = (self.k * mirror, self.k, 0.0);
        let [mut x, mut y] = self.rest;
        match self.spec.motion {
            ArtMotion::Bounce => {
                let hop = (PI * t).sin().abs();
                y -= self.amp[1] * hop;
                let squash = 0.14 * s * (1.0 - hop).powi(4);
                kx *= 1.0 + squash;
                ky *= 1.0 - squash;
            }
            ArtMotion::Spin => angle = self.dir * TAU * t,
            ArtMotion::SquashStretch => {
                let q = 0.14 * s * wv.sin();
                kx *= 1.0 + q;
                ky *= 1.0 - q;
            }
            ArtMotion::Wave => angle = 0.3 * s * wv.sin(),
            ArtMotion::Walk => {
                x += self.dir * self.amp[0] * wv.sin();
                y -= self.amp[1] * (2.0 * wv).sin().abs();
                angle = 0.08 * s * (2.0 * wv).sin();
            }
            ArtMotion::Zoom => {
                let z = 1.0 + 0.18 * s * wv.sin();
                kx *= z;
                ky *= z;
            }
            ArtMotion::Float => {
                x += self.dir * self.amp[0] * wv.sin();
                y += self.amp[1] * (2.0 * wv).sin();
                angle = 0.1 * s * wv.cos();
            }
            ArtMotion::Turn => {
                // Up to about 70° each way: foreshortened, never edge-on.
                kx *= (1.25 * s * wv.sin()).cos();
            }
        }
        Pose {
            c: [x, y],
            kx,
            ky,
            angle,
        }
    }

    /// Draws the raster in `pose` into a premultiplied canvas with `opacity`, 2×2 supersampled.
    fn draw(&self, pose: Pose, opacity: f32, canvas: &mut [[f32; 4]]) {
        let (w, h) = (self.w as i64, self.h as i64);
        let (sin, cos) = pose.angle.sin_cos();
        let (rw, rh) = (self.raster.width() as f32, self.raster.height() as f32);
        // Canvas bounding box of the raster's corners.
        let to_canvas = |q: [f32; 2]| {
            let u = (q[0] - self.pivot[0]) * pose.kx;
            let v = (q[1] - self.pivot[1]) * pose.ky;
            [pose.c[0] + u * cos - v * sin, pose.c[1] + u * sin + v * cos]
        };
        let corners = [[0.0, 0.0], [rw, 0.0], [0.0, rh], [rw, rh]].map(to_canvas);
        let fold = |f: fn(f32, f32) -> f32, i: usize, init: f32| {
            corners.iter().map(|c| c[i]).fold(init, f)
        };
        let x0 = (fold(f32::min, 0, f32::INFINITY).floor() as i64 - 1).clamp(0, w);
        let x1 = (fold(f32::max, 0, f32::NEG_INFINITY).ceil() as i64 + 1).clamp(0, w);
        let y0 = (fold(f32::min, 1, f32::INFINITY).floor() as i64 - 1).clamp(0, h);
        let y1 = (fold(f32::max, 1, f32::NEG_INFINITY).ceil() as i64 + 1).clamp(0, h);
        let weight = opacity / 4.0;
        for y in y0..y1 {
            for x in x0..x1 {
                let mut acc = [0f32; 4];
                for (dx, dy) in [(0.25, 0.25), (0.75, 0.25), (0.25, 0.75), (0.75, 0.75)] {
                    let px = x as f32 + dx - pose.c[0];
                    let py = y as f32 + dy - pose.c[1];
                    // Inverse rotation, then inverse scale, back to raster pixels.
                    let u = (px * cos + py * sin) / pose.kx;
                    let v = (-px * sin + py * cos) / pose.ky;
                    let s = bilinear(self.raster, u + self.pivot[0], v + self.pivot[1]);
                    for c in 0..4 {
                        acc[c] += s[c];
                    }
                }
                if acc[3] <= 0.0 {
                    continue;
                }
                let dst = &mut canvas[(y * w + x) as usize];
                let src = acc.map(|v| v * weight);
                let keep = 1.0 - src[3];
                for c in 0..4 {
                    dst[c] = src[c] + dst[c] * keep;
                }
            }
        }
    }

    /// One frame at loop phase `t` ∈ [0, 1): straight-alpha RGBA.
    fn frame(&self, t: f32) -> RgbaImage {
        let n = (self.w * self.h) as usize;
        let mut body = vec![[0f32; 4]; n];
        self.draw(self.pose(t), 1.0, &mut body);
        let mut out = vec![[0f32; 4]; n];
        if self.spec.shadow {
            let a: Vec<f32> = body.iter().map(|p| p[3]).collect();
            let side = self.w.min(self.h) as f32;
            let mut sh = shift(&a, self.w, self.h, self.shadow_off);
            blur(
                &mut sh,
                self.w,
                self.h,
                (0.02 * side).ceil().max(1.0) as usize,
            );
            over_into(&mut out, &sh, [0.0, 0.0, 0.0], self.shadow_opacity);
        }
        if self.spec.glow {
            let mut g: Vec<f32> = body.iter().map(|p| p[3]).collect();
            let side = self.w.min(self.h) as f32;
            blur(
                &mut g,
                self.w,
                self.h,
                (0.025 * side).ceil().max(1.0) as usize,
            );
            for v in &mut g {
                *v = (*v * 2.5).min(1.0);
            }
            over_into(&mut out, &g, self.glow_colour, self.glow_opacity);
        }
        if self.spec.trails {
            // Earlier poses, oldest first, fading out.
            for (lag, op) in [(0.09, 0.15), (0.045, 0.3)] {
                let mut trail = vec![[0f32; 4]; n];
                self.draw(self.pose((t - lag).rem_euclid(1.0)), op, &mut trail);
                over_premul(&mut out, &trail);
            }
        }
        over_premul(&mut out, &body);
        let mut img = RgbaImage::new(self.w, self.h);
        for (p, q) in img.pixels_mut().zip(&out) {
            let a = q[3].clamp(0.0, 1.0);
            let a8 = (a * 255.0).round() as u8;
            if a8 == 0 {
                continue;
            }
            let un = |v: f32| ((v / a).clamp(0.0, 1.0) * 255.0).round() as u8;
            *p = image::Rgba([un(q[0]), un(q[1]), un(q[2]), a8]);
        }
        img
    }
}

/// Premultiplied bilinear sample in [0, 1] per channel; clear outside the raster. Reads the
/// raw buffer (this is the inner loop of clip rendering).
fn bilinear(img: &RgbaImage, x: f32, y: f32) -> [f32; 4] {
    let (w, h) = (img.width() as i64, img.height() as i64);
    let (fx, fy) = (x - 0.5, y - 0.5);
    let (x0, y0) = (fx.floor(), fy.floor());
    let (i, j) = (x0 as i64, y0 as i64);
    if i < -1 || j < -1 || i >= w || j >= h {
        return [0.0; 4];
    }
    let (tx, ty) = (fx - x0, fy - y0);
    let raw = img.as_raw();
    let at = |i: i64, j: i64| -> [f32; 4] {
        if i < 0 || j < 0 || i >= w || j >= h {
            return [0.0; 4];
        }
        let o = ((j * w + i) * 4) as usize;
        [raw[o], raw[o + 1], raw[o + 2], raw[o + 3]].map(f32::from)
    };
    let (a, b, c, d) = (at(i, j), at(i + 1, j), at(i, j + 1), at(i + 1, j + 1));
    let mut out = [0f32; 4];
    for k in 0..4 {
        let top = a[k] + (b[k] - a[k]) * tx;
        let bottom = c[k] + (d[k] - c[k]) * tx;
        out[k] = (top + (bottom - top) * ty) / 255.0;
    }
    out
}

/// `src` (premultiplied) over `dst` (premultiplied), in place in `dst`.
fn over_premul(dst: &mut [[f32; 4]], src: &[[f32; 4]]) {
    for (d, s) in dst.iter_mut().zip(src) {
        let keep = 1.0 - s[3];
        for c in 0..4 {
            d[c] = s[c] + d[c] * keep;
        }
    }
}

/// A flat-colour layer with coverage `a × opacity` over `dst`.
fn over_into(dst: &mut [[f32; 4]], a: &[f32], rgb: [f32; 3], opacity: f32) {
    for (d, &v) in dst.iter_mut().zip(a) {
        let s = (v * opacity).clamp(0.0, 1.0);
        let keep = 1.0 - s;
        for c in 0..3 {
            d[c] = rgb[c] * s + d[c] * keep;
        }
        d[3] = s + d[3] * keep;
    }
}

/// A plane shifted by a whole-pixel offset (clear where it comes from outside).
fn shift(a: &[f32], w: u32, h: u32, by: [f32; 2]) -> Vec<f32> {
    let (w, h) = (w as i64, h as i64);
    let (dx, dy) = (by[0].round() as i64, by[1].round() as i64);
    let mut out = vec![0f32; a.len()];
    for y in 0..h {
        let sy = y - dy;
        if sy < 0 || sy >= h {
            continue;
        }
        for x in 0..w {
            let sx = x - dx;
            if sx >= 0 && sx < w {
                out[(y * w + x) as usize] = a[(sy * w + sx) as usize];
            }
        }
    }
    out
}

/// Three box blurs of radius `r` (close to a Gaussian), zero outside the plane.
fn blur(a: &mut [f32], w: u32, h: u32, r: usize) {
    let (w, h) = (w as usize, h as usize);
    let mut line = Vec::new();
    for _ in 0..3 {
        for y in 0..h {
            line.clear();
            line.extend_from_slice(&a[y * w..(y + 1) * w]);
            box_line(&line, &mut a[y * w..(y + 1) * w], r);
        }
        for x in 0..w {
            line.clear();
            line.extend((0..h).map(|y| a[y * w + x]));
            let mut col = vec![0f32; h];
            box_line(&line, &mut col, r);
            for (y, v) in col.into_iter().enumerate() {
                a[y * w + x] = v;
            }
        }
    }
}

fn box_line(src: &[f32], dst: &mut [f32], r: usize) {
    let n = src.len();
    let norm = 1.0 / (2 * r + 1) as f32;
    let mut sum: f32 = src.iter().take(r.min(n)).sum();
    for i in 0..n {
        if i + r < n {
            sum += src[i + r];
        }
        if i > r {
            sum -= src[i - r - 1];
        }
        dst[i] = sum * norm;
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const CIRCLE: &str = r##"<svg xmlns="http://www.w3.org/2000/svg" width="32" height="32" viewBox="0 0 32 32"><circle cx="16" cy="16" r="12" fill="#e05020"/><rect x="10" y="12" width="3" height="5" fill="#202020"/><rect x="24" y="1" width="5" height="10" fill="#40a040"/></svg>"##;

    fn library(n: usize, corrupt: usize) -> (tempfile::TempDir, ArtLibrary) {
        let dir = tempfile::tempdir().expect("tempdir");
        let sub = dir.path().join("set");
        std::fs::create_dir_all(&sub).expect("mkdir");
        for i in 0..n {
            let svg = CIRCLE.replace("#e05020", &format!("#{:02x}5020", (i * 37) % 256));
            std::fs::write(sub.join(format!("art_{i:03}.svg")), svg).expect("write");
        }
        for i in 0..corrupt {
            std::fs::write(sub.join(format!("bad_{i}.svg")), "<svg><circle").expect("write");
        }
        std::fs::write(sub.join("noto_1f600.svg"), CIRCLE).expect("write");
        std::fs::write(sub.join("readme.txt"), "not art").expect("write");
        let lib = ArtLibrary::load(dir.path()).expect("load");
        (dir, lib)
    }

    fn bbox(img: &RgbaImage) -> Option<(u32, u32, u32, u32)> {
        let mut b: Option<(u32, u32, u32, u32)> = None;
        for (x, y, p) in img.enumerate_pixels() {
            if p[3] > 8 {
                b = Some(match b {
                    None => (x, y, x, y),
                    Some((a, c, d, e)) => (a.min(x), c.min(y), d.max(x), e.max(y)),
                });
            }
        }
        b
    }

    #[test]
    fn corrupt_and_held_out_files_are_skipped_and_counted() {
        let (_d, lib) = library(5, 2);
        assert_eq!(lib.len(), 5);
        assert_eq!(lib.skipped().len(), 3, "{:?}", lib.skipped());
        assert!(
            lib.skipped()
                .iter()
                .any(|(p, r)| p.ends_with("noto_1f600.svg") && r.contains("held out"))
        );
        assert_eq!(
            lib.skipped()
                .iter()
                .filter(|(p, _)| p.to_string_lossy().contains("bad_"))
                .count(),
            2
        );
        let empty = tempfile::tempdir().expect("tempdir");
        std::fs::write(empty.path().join("x.svg"), "garbage").expect("write");
        let err = ArtLibrary::load(empty.path()).expect_err("nothing usable");
        assert_eq!(err.kind(), "invalid");
    }

    #[test]
    fn focus_keeps_named_subjects_and_balances_them() {
        let dir = tempfile::tempdir().expect("tempdir");
        let mut names = Vec::new();
        for i in 0..8 {
            names.push(format!("heart-{i}"));
            names.push(format!("cats-{i}"));
        }
        for i in 0..40 {
            names.push(format!("grinning-face-{i}"));
        }
        names.push("man-heart".into());
        for n in &names {
            std::fs::write(dir.path().join(format!("{n}.svg")), CIRCLE).expect("write");
        }
        let mut lib = ArtLibrary::load(dir.path()).expect("load");
        let words_of = |p: &Path| {
            let stem = p.file_stem()?.to_string_lossy().to_string();
            let words: Vec<String> = stem.split('-').map(str::to_string).collect();
            (!words.iter().any(|w| w == "man")).then_some(words)
        };
        let subjects = ["heart", "cat", "dog"].map(String::from);
        let counts = lib.focus(&subjects, words_of).expect("focus");
        let total = |s: &str| {
            let c = counts.iter().find(|c| c.0 == s).expect("counted");
            c.1 + c.2
        };
        // "cats" matches "cat"; "man-heart" is left out by `words_of`; no dog files.
        assert_eq!((total("heart"), total("cat"), total("dog")), (8, 8, 0));
        assert_eq!(lib.count(Split::Train) + lib.count(Split::Val), 16);
        let mut cats = 0;
        let n = 400;
        for seed in 0..n {
            let spec = lib.spec(Split::Train, seed).expect("spec");
            let name = spec.file.to_string_lossy().to_string();
            assert!(
                name.starts_with("heart-") || name.starts_with("cats-"),
                "{name} is outside the focus"
            );
            cats += usize::from(name.starts_with("cats-"));
        }
        // Subjects, not files, are drawn uniformly.
        assert!((150..250).contains(&cats), "{cats} of {n} cats");
        let err = lib
            .focus(&["unicorn".to_string()], |_| Some(vec!["heart".into()]))
            .expect_err("no unicorn");
        assert!(err.to_string().contains("unicorn"), "{err}");
    }

    #[test]
    fn split_is_stable_disjoint_and_about_ten_percent() {
        let names: Vec<PathBuf> = (0..1000)
            .map(|i| PathBuf::from(format!("a/{i:x}.svg")))
            .collect();
        let val = names
            .iter()
            .filter(|p| split_of_name(p) == Split::Val)
            .count();
        assert!((60..=140).contains(&val), "{val}");
        // Same stem, other folder or case: same split.
        for p in &names[..50] {
            let moved = Path::new("elsewhere").join(p.file_name().expect("name"));
            assert_eq!(split_of_name(p), split_of_name(&moved));
            let upper = PathBuf::from(p.to_string_lossy().to_uppercase());
            assert_eq!(split_of_name(p), split_of_name(&upper));
        }
        let (_d, lib) = library(40, 0);
        let train = lib.files(Split::Train);
        let val = lib.files(Split::Val);
        assert_eq!(train.len() + val.len(), 40);
        assert!(train.iter().all(|p| !val.contains(p)));
        assert!(!val.is_empty(), "40 files should give some val");
        // Clips of a split only ever use that split's files.
        for seed in 0..20 {
            let s = lib.spec(Split::Val, seed).expect("spec");
            assert_eq!(split_of_name(&s.file), Split::Val);
            let s = lib.spec(Split::Train, seed).expect("spec");
            assert_eq!(split_of_name(&s.file), Split::Train);
        }
    }

    #[test]
    fn clip_is_deterministic_and_coverage_is_in_range() {
        let (_d, lib) = library(12, 0);
        let a = lib.clip(Split::Train, 3, 64, 4).expect("clip");
        let b = lib.clip(Split::Train, 3, 64, 4).expect("clip");
        assert_eq!(a, b);
        assert_eq!((a.width, a.height, a.frames.len()), (64, 64, 4));
        let c = lib.clip(Split::Train, 4, 64, 4).expect("clip");
        assert_ne!(a, c);
        let mut motions = std::collections::HashSet::new();
        for seed in 0..24 {
            let spec = lib.spec(Split::Train, seed).expect("spec");
            motions.insert(spec.motion);
            let clip = lib.clip(Split::Train, seed, 64, 4).expect("clip");
            let mut sides = 0.0;
            for f in &clip.frames {
                let (x0, y0, x1, y1) = bbox(&f.image).expect("visible");
                let side = (x1 - x0 + 1).max(y1 - y0 + 1) as f32 / 64.0;
                assert!((0.2..=0.95).contains(&side), "seed {seed}: side {side}");
                sides += side;
            }
            let mean = sides / clip.frames.len() as f32;
            assert!(
                (0.25..=0.85).contains(&mean),
                "seed {seed}: mean side {mean}"
            );
            let st = clip.alpha_stats();
            assert!((0.03..0.6).contains(&st.mean), "seed {seed}: {st:?}");
            assert!(st.transparent > 0.3, "seed {seed}: {st:?}");
            assert!(st.opaque > 0.01, "seed {seed}: {st:?}");
        }
        assert!(motions.len() >= 5, "{motions:?}");
    }

    #[test]
    fn motion_is_frame_coherent_and_soft_parts_are_partial() {
        let (_d, lib) = library(6, 0);
        let cfg = SynthConfig {
            width: 64,
            height: 64,
            frames: 12,
            fps: 12.0,
        };
        let base = lib.spec(Split::Train, 1).expect("spec");
        for motion in ArtMotion::ALL {
            let spec = ArtSpec {
                motion,
                fill: 0.5,
                shadow: false,
                glow: false,
                trails: false,
                ..base.clone()
            };
            let clip = lib.render(&spec, &cfg).expect("render");
            let alpha = |i: usize| -> Vec<f32> {
                clip.frames[i % 12]
                    .image
                    .pixels()
                    .map(|p| f32::from(p[3]) / 255.0)
                    .collect()
            };
            let mut moved = false;
            for i in 0..12 {
                let (a, b) = (alpha(i), alpha(i + 1));
                let diff: f32 =
                    a.iter().zip(&b).map(|(x, y)| (x - y).abs()).sum::<f32>() / a.len() as f32;
                let area = a.iter().sum::<f32>().max(b.iter().sum::<f32>()) / a.len() as f32;
                // Neighbouring frames (including the loop seam) differ by a fraction of
                // the artwork's area.
                assert!(diff < 0.8 * area, "{motion:?} frame {i}: {diff} vs {area}");
                moved |= diff > 0.002;
            }
            assert!(moved, "{motion:?} does not move");
        }
        let soft = ArtSpec {
            motion: ArtMotion::Walk,
            shadow: true,
            glow: true,
            trails: true,
            ..base
        };
        let plain = ArtSpec {
            shadow: false,
            glow: false,
            trails: false,
            ..soft.clone()
        };
        let (s, p) = (
            lib.render(&soft, &cfg).expect("soft"),
            lib.render(&plain, &cfg).expect("plain"),
        );
        assert!(s.alpha_stats().partial > p.alpha_stats().partial + 0.05);
        assert!(s.alpha_stats().mean > p.alpha_stats().mean);
    }

    #[test]
    fn rgba_pngs_are_used_and_opaque_ones_skipped() {
        let dir = tempfile::tempdir().expect("tempdir");
        let mut img = RgbaImage::new(40, 30);
        for (x, y, p) in img.enumerate_pixels_mut() {
            if (x as i32 - 20).pow(2) + (y as i32 - 15).pow(2) < 100 {
                *p = image::Rgba([20, 200, 40, 255]);
            }
        }
        img.save(dir.path().join("blob.png")).expect("save");
        image::RgbImage::new(8, 8)
            .save(dir.path().join("opaque.png"))
            .expect("save");
        let lib = ArtLibrary::load(dir.path()).expect("load");
        assert_eq!(lib.len(), 1);
        assert_eq!(lib.skipped().len(), 1);
        assert!(lib.skipped()[0].1.contains("alpha"));
        let split = split_of_name(Path::new("blob.png"));
        let clip = lib.clip(split, 0, 48, 2).expect("clip");
        let green = clip.frames[0]
            .image
            .pixels()
            .filter(|p| p[3] == 255 && p[1] > 150 && p[0] < 60)
            .count();
        assert!(green > 50, "{green}");
    }
}

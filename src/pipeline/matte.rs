//! The matte: an opaque clip in, a transparent clip out, through an ILDiff checkpoint.
//! [`matte_animation`] is the whole job (`ildiff matte` and the studio's re-matte both call
//! it, so they give the same bytes); [`matte_clip`] is the same loop over tensors (training
//! validation, the generator, the benchmark). There is one windowing loop, [`run_windows`].
//!
//! The adapter's temporal layers make frame t depend on frames `t - r ..= t + r` (r =
//! [`IldiffDecoder::temporal_radius`]), and on nothing else: the codec, the student encoder,
//! the norms and the decoder work frame by frame. So a clip is decoded in windows of `window`
//! output frames, each given `r` frames of context on both sides (fewer at the clip ends, where
//! the zero temporal padding of a single pass applies anyway); the context outputs are
//! dropped. The result equals one pass over the whole clip while the activations held at once
//! stay bounded: the adapter's temporal stack sees at most `window + 2r` frames and the decoder
//! `window`. Student features are per frame, so those of the context frames are kept from the
//! previous window rather than recomputed.
//!
//! Both cores work: two threads matte windows at once. A window's preparation (its pixels,
//! the codec encode, the adapter's features and temporal stack) runs in window order under a
//! lock, its decoding in parallel with the other thread's window. candle's CPU ops are mostly
//! single-threaded outside matmul, so one thread alone keeps about one core busy. Each window
//! is computed exactly as in a sequential run (same batches, same order of preparation), so the
//! result does not depend on timing.
//!
//! Sizes that are not a multiple of the decoder's are mirror-padded per window and cropped back,
//! like [`crate::model::TransparentDecoder::decode`].

use std::collections::BTreeMap;
use std::sync::Mutex;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::Instant;

use candle_core::{DType, Device, Tensor};
use image::RgbaImage;
use serde::{Deserialize, Serialize};

use crate::media::{Animation, Frame};
use crate::model::IldiffDecoder;
use crate::model::augment::{crop, mirror_pad};
use crate::model::codec::LatentCodec;
use crate::pipeline::plate::{self, PlateOptions};
use crate::{Error, Progress, Result};

/// Progress stage name reported by [`matte_clip`] and [`matte_animation`].
pub const STAGE: &str = "matte";

/// Processing size of a matte.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, Default)]
pub enum Quality {
    /// Native resolution.
    #[default]
    Full,
    /// Half resolution, scaled back up: about 4× faster, for quick looks.
    Draft,
}

/// How a clip is matted.
#[derive(Debug, Clone, PartialEq)]
pub struct MatteOptions {
    /// Output frames per window (at least 1). Larger windows recompute less temporal context
    /// but hold more activations.
    pub window: usize,
    /// Processing size ([`matte_animation`] only; [`matte_clip`] takes tensors as they are).
    pub quality: Quality,
    /// Which background plates [`matte_animation`] estimates for a model that keys against
    /// one (see [`crate::pipeline::plate`]); other models need none and ignore it.
    pub plate: PlateOptions,
}

impl MatteOptions {
    /// The defaults with `window` output frames per window.
    pub fn window(window: usize) -> Self {
        Self {
            window,
            ..Self::default()
        }
    }
}

impl Default for MatteOptions {
    fn default() -> Self {
        Self {
            // 5: on 512² × 48 frames with two windows in flight, 8 peaked at 1 003–1 157 MiB,
            // 6 at 862–987 MiB and 5 at 832–864 MiB. Speed did not tell 5 from 6 (means of three
            // alternated runs: 8.35 s with 5, 8.23 s with 6), nor 6 from 8 with older kernels.
            window: 5,
            quality: Quality::Full,
            plate: PlateOptions::default(),
        }
    }
}

/// What [`matte_animation`] returns.
#[derive(Debug, Clone)]
pub struct Matted {
    /// The RGBA sticker, timed and looped like the input.
    pub clip: Animation,
    /// The plate the model read `[T, 4, h, w]`, at processing size; see [`Matted::plate`].
    plate: Option<Tensor>,
}

impl Matted {
    /// The background the model assumed (for models that read a plate): RGB = the plate, alpha
    /// = its confidence, at the clip's size and timing. The studio shows it as a preview mode
    /// and `ildiff matte --save-plate` writes it, so a bad matte can be traced to a bad plate.
    /// Converted on request: a 512², 48-frame plate took ~0.4 s of one core, which a plain
    /// `ildiff matte` would otherwise spend after the last window for nothing.
    pub fn plate(&self) -> Result<Option<Animation>> {
        self.plate
            .as_ref()
            .map(|p| plate_animation(p, &self.clip))
            .transpose()
    }

    /// The sticker alone, freeing the plate (four f32 planes a frame) before an export.
    pub fn into_clip(self) -> Animation {
        self.clip
    }
}

/// Mattes an opaque clip with `model` (which must carry a codec): each window's frames go
/// through the codec and the decoder, and `on_frames(start, frames)` receives every finished
/// window (live previews) before the rest is done. Draft quality works at half size and scales
/// the result back. Reports `(STAGE, frames done, frames)`; stops with [`Error::Cancelled`]
/// when `progress` says so. Frame timing and loop count are the clip's.
pub fn matte_animation(
    model: &IldiffDecoder,
    clip: &Animation,
    options: &MatteOptions,
    progress: &mut dyn Progress,
    on_frames: &mut dyn FnMut(usize, &[RgbaImage]),
) -> Result<Matted> {
    if clip.is_empty() {
        return Err(Error::Invalid("the clip has no frames".into()));
    }
    let Some(codec) = model.codec() else {
        return Err(Error::Model(
            "the checkpoint has no codec, so it cannot encode an RGB clip".into(),
        ));
    };
    let draft;
    let work = match options.quality {
        Quality::Full => clip,
        Quality::Draft => {
            draft = clip.resize_exact(
                clip.width.div_ceil(2).max(1),
                clip.height.div_ceil(2).max(1),
            )?;
            &draft
        }
    };
    let source = FrameSource {
        clip: work,
        codec,
        device: Device::Cpu,
    };
    let plan = Plan::new(
        model,
        work.len(),
        work.height as usize,
        work.width as usize,
        options,
    )?;
    // The plate is a statistic of the whole clip: estimated once, before the windows, and cut
    // like the frames, so windowed output still equals one pass.
    let plate = if model.uses_plate() {
        Some(plate_of_animation(work, &options.plate, &source.device)?)
    } else {
        None
    };
    let mut frames: Vec<Frame> = Vec::with_capacity(clip.len());
    run_windows(
        model,
        &plan,
        &source,
        plate.as_ref(),
        progress,
        &mut |start, matte| {
            let images: Vec<RgbaImage> = images_from_matte(&matte)?
                .into_iter()
                .map(|img| at_clip_size(img, clip))
                .collect();
            on_frames(start, &images);
            let delays = clip.frames[start..start + images.len()].iter();
            frames.extend(
                images
                    .into_iter()
                    .zip(delays)
                    .map(|(img, src)| Frame::new(img, src.delay)),
            );
            Ok(())
        },
    )?;
    Ok(Matted {
        clip: Animation::new(clip.width, clip.height, frames, clip.loops)?,
        plate,
    })
}

/// `img` at `clip`'s size: draft quality works at half size.
fn at_clip_size(img: RgbaImage, clip: &Animation) -> RgbaImage {
    if (img.width(), img.height()) == (clip.width, clip.height) {
        img
    } else {
        crate::media::animation::resize_rgba(&img, clip.width, clip.height)
    }
}

/// A plate `[T, 4, h, w]` (RGB, confidence) as an RGBA animation (alpha = confidence) with
/// `clip`'s timing, scaled to `clip`'s size when it was estimated at draft size.
pub fn plate_animation(plate: &Tensor, clip: &Animation) -> Result<Animation> {
    let (t, c, h, w) = plate.dims4().map_err(Error::candle("plate"))?;
    if c != 4 || t != clip.len() {
        return Err(Error::Invalid(format!(
            "plate: {:?} for a clip of {} frames",
            plate.dims(),
            clip.len()
        )));
    }
    let plane = h * w;
    let to_u8 = unit_to_u8;
    let frames = (0..t)
        .map(|i| {
            // A frame at a time: the whole plate as f32 would be another copy of it.
            let v: Vec<f32> = plate
                .get(i)
                .and_then(|p| p.to_dtype(DType::F32))
                .and_then(|p| p.flatten_all())
                .and_then(|p| p.to_vec1())
                .map_err(Error::candle("plate"))?;
            let img = RgbaImage::from_fn(w as u32, h as u32, |x, y| {
                let p = y as usize * w + x as usize;
                image::Rgba([0, 1, 2, 3].map(|c| to_u8(v[c * plane + p])))
            });
            Ok(Frame::new(at_clip_size(img, clip), clip.frames[i].delay))
        })
        .collect::<Result<Vec<_>>>()?;
    Animation::new(clip.width, clip.height, frames, clip.loops)
}

/// Mattes one clip: `pixel` `[T, 3, H, W]` (decoded RGB in [0, 1]) and `latent`
/// `[T, 4, ceil(H/8), ceil(W/8)]` (unscaled) -> `[T, 4, H, W]` in [0, 1], channel 0 = alpha,
/// then straight RGB. Reports `(STAGE, frames done, T)` after each window and stops with
/// [`Error::Cancelled`] when `progress` returns false.
pub fn matte_clip(
    model: &IldiffDecoder,
    pixel: &Tensor,
    latent: &Tensor,
    options: &MatteOptions,
    progress: &mut dyn Progress,
) -> Result<Tensor> {
    matte_clip_with_plate(model, pixel, latent, None, options, progress)
}

/// [`matte_clip`] with the clip's background plate `[T, 4, H, W]` (RGB, confidence; see
/// [`plate_of_animation`]), estimated once over the whole clip and cut into the same windows as the
/// frames, so the windowed result still equals one pass.
pub fn matte_clip_with_plate(
    model: &IldiffDecoder,
    pixel: &Tensor,
    latent: &Tensor,
    plate: Option<&Tensor>,
    options: &MatteOptions,
    progress: &mut dyn Progress,
) -> Result<Tensor> {
    let mut outputs = Vec::new();
    matte_clip_windows(
        model,
        pixel,
        latent,
        plate,
        options,
        progress,
        &mut |_, y| {
            outputs.push(y);
            Ok(())
        },
    )?;
    Tensor::cat(&outputs, 0).map_err(Error::candle("matting"))
}

/// [`matte_clip_with_plate`] handing each finished window to `on_window(start, matte)` in
/// order instead of joining them (the generator's live preview), through the same one
/// windowing loop.
pub fn matte_clip_windows(
    model: &IldiffDecoder,
    pixel: &Tensor,
    latent: &Tensor,
    plate: Option<&Tensor>,
    options: &MatteOptions,
    progress: &mut dyn Progress,
    on_window: &mut dyn FnMut(usize, Tensor) -> Result<()>,
) -> Result<()> {
    let cfg = &model.config().decoder;
    let (t, c, h, w) = pixel.dims4().map_err(|_| shape_err(pixel, "pixel"))?;
    if t == 0 || h == 0 || w == 0 || c != cfg.in_channels {
        return Err(shape_err(pixel, "pixel"));
    }
    let f = cfg.latent_factor();
    let (lh, lw) = (h.div_ceil(f), w.div_ceil(f));
    if latent.dims() != [t, cfg.latent_channels, lh, lw] {
        return Err(Error::Invalid(format!(
            "latent is {:?}, expected [{t}, {}, {lh}, {lw}] for frames {:?}",
            latent.dims(),
            cfg.latent_channels,
            pixel.dims()
        )));
    }
    if let Some(p) = plate
        && p.dims() != [t, 4, h, w]
    {
        return Err(Error::Invalid(format!(
            "plate is {:?}, expected [{t}, 4, {h}, {w}] for frames {:?}",
            p.dims(),
            pixel.dims()
        )));
    }
    let plan = Plan::new(model, t, h, w, options)?;
    run_windows(
        model,
        &plan,
        &TensorSource { pixel, latent },
        plate,
        progress,
        on_window,
    )
}

/// Where a window's inputs come from: whole-clip tensors, or an animation's frames encoded
/// window by window (so the whole clip never exists as a tensor).
trait WindowSource: Sync {
    /// RGB `[hi - lo, 3, H, W]` in [0, 1] of frames `lo..hi`.
    fn pixels(&self, lo: usize, hi: usize) -> Result<Tensor>;
    /// Unscaled latent of frames `start..end`, whose RGB is `rgb`.
    fn latent(&self, start: usize, end: usize, rgb: &Tensor) -> Result<Tensor>;
}

struct TensorSource<'a> {
    pixel: &'a Tensor,
    latent: &'a Tensor,
}

impl WindowSource for TensorSource<'_> {
    fn pixels(&self, lo: usize, hi: usize) -> Result<Tensor> {
        narrow(self.pixel, lo, hi - lo)
    }

    fn latent(&self, start: usize, end: usize, _: &Tensor) -> Result<Tensor> {
        narrow(self.latent, start, end - start)
    }
}

struct FrameSource<'a> {
    clip: &'a Animation,
    codec: &'a crate::model::SmallCodec,
    device: Device,
}

impl WindowSource for FrameSource<'_> {
    fn pixels(&self, lo: usize, hi: usize) -> Result<Tensor> {
        pixels_of_frames(
            &self.clip.frames[lo..hi],
            self.clip.width,
            self.clip.height,
            &self.device,
        )
    }

    /// The codec's latent of exactly this window's frames: the same batches as
    /// [`crate::pipeline::models::encode_clip`] with `chunk` = the window.
    fn latent(&self, _: usize, _: usize, rgb: &Tensor) -> Result<Tensor> {
        self.codec
            .encode_any_size(rgb)
            .map_err(Error::candle("encoding the clip"))
    }
}

/// The geometry of a windowed matte.
struct Plan {
    frames: usize,
    h: usize,
    w: usize,
    window: usize,
    radius: usize,
    /// Latent downscale factor.
    factor: usize,
    /// Padded frame size (a multiple of the decoder's).
    ph: usize,
    pw: usize,
}

impl Plan {
    fn new(
        model: &IldiffDecoder,
        frames: usize,
        h: usize,
        w: usize,
        options: &MatteOptions,
    ) -> Result<Plan> {
        if frames == 0 || h == 0 || w == 0 {
            return Err(Error::Invalid(format!(
                "cannot matte {frames} frames of {w}x{h}"
            )));
        }
        let cfg = &model.config().decoder;
        let m = cfg.size_multiple();
        Ok(Plan {
            frames,
            h,
            w,
            window: options.window.max(1),
            radius: model.temporal_radius(),
            factor: cfg.latent_factor(),
            ph: h.div_ceil(m) * m,
            pw: w.div_ceil(m) * m,
        })
    }

    /// Start frames of the windows, in order.
    fn starts(&self) -> impl Iterator<Item = usize> + use<> {
        (0..self.frames).step_by(self.window)
    }
}

/// One window's decoder inputs, padded.
struct Prepared {
    centre: Tensor,
    latent: Tensor,
    extra: Option<Tensor>,
    /// The window's part of the clip's plate, padded.
    plate: Option<Tensor>,
}

/// Stage one of a window: pixels, latent, the adapter's features and injection. Keeps the
/// student features of the last window for the next one's context.
struct Preparer<'a> {
    model: &'a IldiffDecoder,
    plan: &'a Plan,
    /// The whole clip's plate `[T, 4, H, W]`, for plate-prior models.
    plate: Option<&'a Tensor>,
    /// Student features of frames `cached.0 ..`.
    cached: Option<(usize, Tensor)>,
    /// Seconds spent per stage (read by [`stage_times`]).
    times: StageTimes,
}

impl<'a> Preparer<'a> {
    fn new(model: &'a IldiffDecoder, plan: &'a Plan, plate: Option<&'a Tensor>) -> Self {
        Preparer {
            model,
            plan,
            plate,
            cached: None,
            times: StageTimes::default(),
        }
    }
}

/// Seconds a sequential matte spends in each stage, so `ildiff bench` can say where the time
/// goes (see [`stage_times`]).
#[derive(Debug, Clone, Copy, Default, PartialEq)]
pub struct StageTimes {
    /// Frames to an RGB tensor, mirror padding.
    pub pixels: f64,
    /// The codec's encode.
    pub codec: f64,
    /// The layout adapter: student features and the temporal stack.
    pub adapter: f64,
    /// The transparent decoder, crop and clamp.
    pub decoder: f64,
    /// The matte tensor to RGBA frames.
    pub frames: f64,
}

impl StageTimes {
    pub fn total(&self) -> f64 {
        self.pixels + self.codec + self.adapter + self.decoder + self.frames
    }
}

/// Runs [`matte_animation`]'s windows one after another on this thread, timing each stage.
pub fn stage_times(
    model: &IldiffDecoder,
    clip: &Animation,
    options: &MatteOptions,
) -> Result<StageTimes> {
    let Some(codec) = model.codec() else {
        return Err(Error::Model("the checkpoint has no codec".into()));
    };
    let source = FrameSource {
        clip,
        codec,
        device: Device::Cpu,
    };
    let plan = Plan::new(
        model,
        clip.len(),
        clip.height as usize,
        clip.width as usize,
        options,
    )?;
    let mut preparer = Preparer::new(model, &plan, None);
    for start in plan.starts() {
        let prepared = preparer.prepare(&source, start)?;
        let t = Instant::now();
        let matte = decode(model, &plan, &prepared)?;
        preparer.times.decoder += t.elapsed().as_secs_f64();
        let t = Instant::now();
        images_from_matte(&matte)?;
        preparer.times.frames += t.elapsed().as_secs_f64();
    }
    Ok(preparer.times)
}

impl Preparer<'_> {
    fn prepare(&mut self, source: &dyn WindowSource, start: usize) -> Result<Prepared> {
        let p = self.plan;
        let err = Error::candle("matting");
        let end = (start + p.window).min(p.frames);
        let (lo, hi) = (
            start.saturating_sub(p.radius),
            (end + p.radius).min(p.frames),
        );
        let t = Instant::now();
        let rgb = source.pixels(lo, hi)?;
        self.times.pixels += t.elapsed().as_secs_f64();
        let t = Instant::now();
        let latent = source.latent(start, end, &narrow(&rgb, start - lo, end - start)?)?;
        self.times.codec += t.elapsed().as_secs_f64();
        let t = Instant::now();
        let frames = pad(&rgb, p.ph, p.pw)?;
        drop(rgb);
        let centre = narrow(&frames, start - lo, end - start)?;
        let latent = pad(&latent, p.ph / p.factor, p.pw / p.factor)?;
        self.times.pixels += t.elapsed().as_secs_f64();
        let t = Instant::now();
        let extra = match self.model.adapter() {
            Some(adapter) => {
                // Reuse the features of this window's first frames from the previous window.
                let reuse = match self.cached.take() {
                    Some((c_lo, c)) => {
                        let c_hi = c_lo + c.dim(0).map_err(Error::candle("matting"))?;
                        (c_lo <= lo && lo < c_hi).then_some((c_lo, c_hi, c))
                    }
                    None => None,
                };
                let feats = match reuse {
                    Some((c_lo, c_hi, c)) => {
                        let kept = narrow(&c, lo - c_lo, c_hi - lo)?;
                        if c_hi < hi {
                            let new = narrow(&frames, c_hi - lo, hi - c_hi)?;
                            let new = adapter.features(&new).map_err(Error::candle("matting"))?;
                            Tensor::cat(&[&kept, &new], 0).map_err(Error::candle("matting"))?
                        } else {
                            kept
                        }
                    }
                    None => adapter
                        .features(&frames)
                        .map_err(Error::candle("matting"))?,
                };
                let extra = adapter
                    .inject(&feats, hi - lo)
                    .and_then(|e| e.narrow(0, start - lo, end - start))
                    .map_err(err)?;
                self.cached = Some((lo, feats));
                Some(extra)
            }
            None => None,
        };
        self.times.adapter += t.elapsed().as_secs_f64();
        let plate = match self.plate {
            Some(pl) => Some(pad(&narrow(pl, start, end - start)?, p.ph, p.pw)?),
            None => None,
        };
        Ok(Prepared {
            centre,
            latent,
            extra,
            plate,
        })
    }
}

/// Stage two of a window: the decoder, cropped back and clamped: `[n, 4, H, W]`.
fn decode(model: &IldiffDecoder, plan: &Plan, p: &Prepared) -> Result<Tensor> {
    model
        .decoder()
        .forward_with_plate(&p.centre, &p.latent, p.extra.as_ref(), p.plate.as_ref())
        .and_then(|y| crop(&y, plan.h, plan.w))
        .and_then(|y| y.clamp(0f32, 1f32))
        .map_err(Error::candle("matting"))
}

/// Threads that matte windows at once. Two keep a two-core machine busy (candle's CPU ops are
/// mostly single-threaded outside matmul); each holds one window's activations, so more would
/// mostly cost memory.
const WORKERS: usize = 2;

/// The windowing loop. Worker threads take windows in order: each prepares its window under a
/// lock (preparation keeps the previous window's features, so it runs in window order), then
/// decodes it while the other worker prepares and decodes the next. The calling thread hands
/// the decoded windows to `sink(start, matte)` in order and reports `(STAGE, frames done,
/// frames)` at the start and after each window.
fn run_windows(
    model: &IldiffDecoder,
    plan: &Plan,
    source: &dyn WindowSource,
    plate: Option<&Tensor>,
    progress: &mut dyn Progress,
    sink: &mut dyn FnMut(usize, Tensor) -> Result<()>,
) -> Result<()> {
    let total = plan.frames as u64;
    if !progress.step(STAGE, 0, total) {
        return Err(Error::Cancelled);
    }
    let starts: Vec<usize> = plan.starts().collect();
    let end_of = |k: usize| (starts[k] + plan.window).min(plan.frames);
    let mut deliver = |k: usize, matte: Tensor, progress: &mut dyn Progress| -> Result<()> {
        sink(starts[k], matte)?;
        if progress.step(STAGE, end_of(k) as u64, total) {
            Ok(())
        } else {
            Err(Error::Cancelled)
        }
    };
    let sequential = |deliver: &mut dyn FnMut(usize, Tensor, &mut dyn Progress) -> Result<()>,
                      progress: &mut dyn Progress|
     -> Result<()> {
        let mut preparer = Preparer::new(model, plan, plate);
        for (k, &start) in starts.iter().enumerate() {
            let prepared = preparer.prepare(source, start)?;
            deliver(k, decode(model, plan, &prepared)?, progress)?;
        }
        Ok(())
    };
    if starts.len() == 1 {
        return sequential(&mut deliver, progress);
    }
    // The preparer and the index of the next window to prepare.
    let queue = Mutex::new((Preparer::new(model, plan, plate), 0usize));
    let stop = AtomicBool::new(false);
    std::thread::scope(|scope| {
        let (tx, rx) = crossbeam_channel::bounded::<(usize, Result<Tensor>)>(WORKERS);
        let mut spawned = 0;
        for i in 0..WORKERS {
            let tx = tx.clone();
            let (queue, stop, starts) = (&queue, &stop, &starts);
            let worker = move || {
                while !stop.load(Ordering::Relaxed) {
                    let (k, prepared) = {
                        let Ok(mut guard) = queue.lock() else { return };
                        let (preparer, next) = &mut *guard;
                        if *next == starts.len() {
                            return;
                        }
                        *next += 1;
                        (*next - 1, preparer.prepare(source, starts[*next - 1]))
                    };
                    let matte = prepared.and_then(|p| decode(model, plan, &p));
                    let failed = matte.is_err();
                    if tx.send((k, matte)).is_err() || failed {
                        return;
                    }
                }
            };
            let name = format!("ildiff-matte-{i}");
            if std::thread::Builder::new()
                .name(name)
                .spawn_scoped(scope, worker)
                .is_ok()
            {
                spawned += 1;
            }
        }
        drop(tx);
        let result = if spawned == 0 {
            // No thread could be started: the same windows on this thread.
            sequential(&mut deliver, progress)
        } else {
            // Windows finish out of order; hand them on in order.
            let mut done: BTreeMap<usize, Tensor> = BTreeMap::new();
            let mut next = 0;
            (|| -> Result<()> {
                while next < starts.len() {
                    let (k, matte) = rx.recv().map_err(|_| {
                        Error::Model("the matting threads stopped without a result".into())
                    })?;
                    done.insert(k, matte?);
                    while let Some(matte) = done.remove(&next) {
                        deliver(next, matte, progress)?;
                        next += 1;
                    }
                }
                Ok(())
            })()
        };
        // On cancel or error the workers stop before their next window (the scope joins them;
        // a panic there is re-raised here).
        stop.store(true, Ordering::Relaxed);
        drop(rx);
        result
    })
}

fn pad(x: &Tensor, ph: usize, pw: usize) -> Result<Tensor> {
    let (_, _, xh, xw) = x.dims4().map_err(Error::candle("matting"))?;
    mirror_pad(x, ph - xh, pw - xw).map_err(Error::candle("matting"))
}

fn narrow(x: &Tensor, start: usize, len: usize) -> Result<Tensor> {
    x.narrow(0, start, len).map_err(Error::candle("matting"))
}

fn shape_err(pixel: &Tensor, what: &str) -> Error {
    Error::Invalid(format!(
        "{what} is {:?}, expected [T, 3, H, W] with at least one frame",
        pixel.dims()
    ))
}

/// The background plate of `anim`'s frames as the decoder reads it, `[T, 4, H, W]` (RGB,
/// confidence), estimated straight from the frames (a 512², 48-frame clip's RGB is 150 MB in
/// f32, so no tensor of it is made).
pub fn plate_of_animation(
    anim: &Animation,
    options: &PlateOptions,
    device: &Device,
) -> Result<Tensor> {
    let values = planar_rgb(&anim.frames, anim.width, anim.height);
    let (h, w) = (anim.height as usize, anim.width as usize);
    plate_of_values(values, anim.len(), h, w, options, device)
}

fn plate_of_values(
    values: Vec<f32>,
    t: usize,
    h: usize,
    w: usize,
    options: &PlateOptions,
    device: &Device,
) -> Result<Tensor> {
    let plate = plate::estimate(&values, t, h, w, options)?;
    drop(values);
    Tensor::from_vec(plate.into_planar(), (t, 4, h, w), device).map_err(Error::candle("plate"))
}

/// The RGB of an animation's frames as `[T, 3, H, W]` f32 in [0, 1] (alpha ignored: the
/// matting input is an opaque clip).
pub fn pixels_from_animation(anim: &Animation, device: &Device) -> Result<Tensor> {
    pixels_of_frames(&anim.frames, anim.width, anim.height, device)
}

fn pixels_of_frames(frames: &[Frame], width: u32, height: u32, device: &Device) -> Result<Tensor> {
    let (w, h) = (width as usize, height as usize);
    let data = planar_rgb(frames, width, height);
    Tensor::from_vec(data, (frames.len(), 3, h, w), device).map_err(Error::candle("matting"))
}

/// Frames' RGB as planar `[T, 3, H, W]` f32 in [0, 1].
fn planar_rgb(frames: &[Frame], width: u32, height: u32) -> Vec<f32> {
    let plane = width as usize * height as usize;
    let mut data = vec![0f32; frames.len() * 3 * plane];
    for (i, frame) in frames.iter().enumerate() {
        let base = i * 3 * plane;
        for (p, px) in frame.image.pixels().enumerate() {
            for ch in 0..3 {
                data[base + ch * plane + p] = f32::from(px.0[ch]) / 255.0;
            }
        }
    }
    data
}

/// The frames of a matte `[T, 4, H, W]` (alpha, straight RGB in [0, 1]) as straight RGBA.
pub fn images_from_matte(matte: &Tensor) -> Result<Vec<RgbaImage>> {
    let err = Error::candle("reading the matte");
    let (t, c, h, w) = matte.dims4().map_err(Error::candle("reading the matte"))?;
    if c != 4 {
        return Err(Error::Invalid(format!(
            "matte is {:?}, expected [T, 4, H, W]",
            matte.dims()
        )));
    }
    let values: Vec<f32> = matte
        .to_dtype(DType::F32)
        .and_then(|m| m.flatten_all())
        .and_then(|m| m.to_vec1())
        .map_err(err)?;
    let plane = h * w;
    let to_u8 = unit_to_u8;
    Ok((0..t)
        .map(|i| {
            let base = i * 4 * plane;
            let mut img = RgbaImage::new(w as u32, h as u32);
            for (p, px) in img.pixels_mut().enumerate() {
                let at = |ch: usize| to_u8(values[base + ch * plane + p]);
                px.0 = [at(1), at(2), at(3), at(0)];
            }
            img
        })
        .collect())
}

/// A value in [0, 1] as a byte, rounded half away from zero like `f32::round` (NaN gives 0),
/// without `round`: that is a libm call on the baseline x86-64 target, and it was 2 % of
/// `ildiff matte`'s CPU time in `perf`. `x − ⌊x⌋` is exact for these values.
#[inline]
fn unit_to_u8(v: f32) -> u8 {
    let x = v.clamp(0.0, 1.0) * 255.0;
    let whole = x as u8;
    whole + u8::from(x - f32::from(whole) >= 0.5)
}

/// An animation from a matte `[T, 4, H, W]` (alpha, straight RGB in [0, 1]) with the timing of
/// `timing` (same frame count and size).
pub fn animation_from_matte(matte: &Tensor, timing: &Animation) -> Result<Animation> {
    let (t, c, h, w) = matte.dims4().map_err(Error::candle("reading the matte"))?;
    if (t, c, h, w)
        != (
            timing.len(),
            4,
            timing.height as usize,
            timing.width as usize,
        )
    {
        return Err(Error::Invalid(format!(
            "matte is {:?}, expected [{}, 4, {}, {}]",
            matte.dims(),
            timing.len(),
            timing.height,
            timing.width
        )));
    }
    let frames = images_from_matte(matte)?
        .into_iter()
        .zip(&timing.frames)
        .map(|(img, src)| Frame::new(img, src.delay))
        .collect();
    Animation::new(timing.width, timing.height, frames, timing.loops)
}

#[cfg(test)]
pub(crate) mod tests {
    use super::*;
    use crate::media::{Delay, LoopCount};
    use crate::model::ildiff::tests::{awake, inputs, tiny, values};

    /// The plate of a clip given as a tensor `[T, 3, H, W]`.
    fn plate_for(pixel: &Tensor, options: &PlateOptions) -> Result<Tensor> {
        let (t, _, h, w) = pixel.dims4().map_err(Error::candle("plate"))?;
        let values: Vec<f32> = pixel
            .flatten_all()
            .and_then(|p| p.to_vec1())
            .map_err(Error::candle("plate"))?;
        plate_of_values(values, t, h, w, options, pixel.device())
    }

    /// The small codec of the test checkpoints.
    fn tiny_codec() -> crate::model::codec::SmallCodecConfig {
        crate::model::codec::SmallCodecConfig {
            channels: [8, 8, 16],
            norm_groups: 4,
        }
    }

    fn max_diff(a: &Tensor, b: &Tensor) -> f32 {
        values(a)
            .iter()
            .zip(values(b))
            .map(|(x, y)| (x - y).abs())
            .fold(0f32, f32::max)
    }

    /// The adapter in one pass over the whole (padded) clip, then the decoder on the same
    /// frame groups as the windows. candle's CPU matmul picks its kernel by matrix size, so a
    /// decoder batch of another size rounds differently (about 1e-6); grouping the decoder like
    /// the windows isolates what windowing could get wrong: the temporal context.
    fn one_adapter_pass(
        model: &IldiffDecoder,
        pixel: &Tensor,
        latent: &Tensor,
        window: usize,
    ) -> Tensor {
        let (t, _, h, w) = pixel.dims4().expect("dims");
        let m = model.config().decoder.size_multiple();
        let (ph, pw) = (h.div_ceil(m) * m, w.div_ceil(m) * m);
        let padded = mirror_pad(pixel, ph - h, pw - w).expect("pad");
        let (_, _, lh, lw) = latent.dims4().expect("dims");
        let lat = mirror_pad(latent, ph / 8 - lh, pw / 8 - lw).expect("pad");
        let extra = model
            .adapter()
            .expect("adapter")
            .forward(&padded)
            .expect("adapter");
        let mut parts = Vec::new();
        for start in (0..t).step_by(window) {
            let n = window.min(t - start);
            let y = model
                .decoder()
                .forward_with_extra(
                    &padded.narrow(0, start, n).expect("n"),
                    &lat.narrow(0, start, n).expect("n"),
                    Some(&extra.narrow(0, start, n).expect("n")),
                )
                .and_then(|y| crop(&y, h, w))
                .and_then(|y| y.clamp(0f32, 1f32))
                .expect("decode");
            parts.push(y);
        }
        Tensor::cat(&parts, 0).expect("cat")
    }

    #[test]
    fn windowed_equals_one_pass_with_the_plate() {
        let mut cfg = tiny();
        cfg.decoder.key_prior = Some(crate::model::KeyPrior::plate());
        let (_, model) = awake(&cfg);
        assert!(model.uses_plate());
        let (pixel, latent) = inputs(9, 32, 32);
        let plate = plate_for(&pixel, &PlateOptions::default()).expect("plate");
        assert_eq!(plate.dims(), &[9, 4, 32, 32]);
        let run = |window: usize, plate: Option<&Tensor>| {
            matte_clip_with_plate(
                &model,
                &pixel,
                &latent,
                plate,
                &MatteOptions::window(window),
                &mut crate::NoProgress,
            )
            .expect("matte")
        };
        let one = run(9, Some(&plate));
        let windowed = run(3, Some(&plate));
        let d = max_diff(&one, &windowed);
        assert!(d <= 2e-5, "max difference {d}");
        // The plate is read: keying against the border colour instead differs.
        let border = run(3, None);
        assert!(max_diff(&border, &windowed) > 1e-3);
        // The animation pipeline hands the plate it used back, at the clip's size and timing
        // (draft quality estimates it at half size), alpha = confidence.
        let mut with_codec = cfg.clone();
        with_codec.codec = Some(tiny_codec());
        let (_, coded) = awake(&with_codec);
        let anim = clip(9, 32, 32);
        let plate = plate_for(
            &pixels_from_animation(&anim, &Device::Cpu).expect("pixels"),
            &PlateOptions::default(),
        )
        .expect("plate");
        for quality in [Quality::Full, Quality::Draft] {
            let options = MatteOptions {
                quality,
                ..MatteOptions::window(4)
            };
            let out = matte_animation(
                &coded,
                &anim,
                &options,
                &mut crate::NoProgress,
                &mut |_, _| {},
            )
            .expect("matte");
            let p = out
                .plate()
                .expect("plate anim")
                .expect("a plate-prior model returns its plate");
            assert_eq!((p.width, p.height, p.len()), (32, 32, 9));
            assert!(
                p.frames
                    .iter()
                    .zip(&anim.frames)
                    .all(|(a, b)| a.delay == b.delay)
            );
            if quality == Quality::Full {
                let want = plate_animation(&plate, &anim).expect("plate anim");
                assert!(
                    p.frames
                        .iter()
                        .zip(&want.frames)
                        .all(|(a, b)| a.image == b.image)
                );
            }
        }
        assert!(plate_animation(&plate.narrow(0, 0, 8).expect("n"), &anim).is_err());
        // A plate of the wrong shape is refused.
        let short = plate.narrow(0, 0, 8).expect("n");
        let e = matte_clip_with_plate(
            &model,
            &pixel,
            &latent,
            Some(&short),
            &MatteOptions::default(),
            &mut crate::NoProgress,
        )
        .expect_err("bad plate");
        assert_eq!(e.kind(), "invalid");
    }

    #[test]
    fn windowed_equals_one_pass_over_the_clip() {
        let (_, model) = awake(&tiny());
        assert_eq!(model.temporal_radius(), 2);
        let (pixel, latent) = inputs(11, 32, 32);
        let mut reports = Vec::new();
        let mut progress = |stage: &str, done: u64, total: u64| {
            reports.push((stage.to_string(), done, total));
            true
        };
        let windowed = matte_clip(
            &model,
            &pixel,
            &latent,
            &MatteOptions::window(4),
            &mut progress,
        )
        .expect("windowed");
        assert_eq!(windowed.dims(), &[11, 4, 32, 32]);
        let d = max_diff(&one_adapter_pass(&model, &pixel, &latent, 4), &windowed);
        assert!(d <= 1e-6, "max difference {d}");
        // And against a single call of the model on all 11 frames, up to batch-size rounding.
        let whole = model
            .forward(&pixel, &latent)
            .and_then(|y| y.clamp(0f32, 1f32))
            .expect("whole clip");
        let d = max_diff(&whole, &windowed);
        assert!(d <= 2e-5, "max difference {d}");
        let done: Vec<u64> = reports.iter().map(|r| r.1).collect();
        assert_eq!(done, [0, 4, 8, 11]);
        assert!(reports.iter().all(|r| r.0 == STAGE && r.2 == 11));
        // The context matters: a window decoded without it differs.
        let cut = model
            .forward(
                &pixel.narrow(0, 4, 4).expect("n"),
                &latent.narrow(0, 4, 4).expect("n"),
            )
            .and_then(|y| y.clamp(0f32, 1f32))
            .expect("cut");
        let want = whole.narrow(0, 4, 4).expect("n");
        assert!(max_diff(&cut, &want) > 1e-3);
    }

    #[test]
    fn odd_sizes_are_padded_and_cropped_back() {
        let (_, model) = awake(&tiny());
        let (pixel, latent) = inputs(5, 24, 40);
        let out = matte_clip(
            &model,
            &pixel,
            &latent,
            &MatteOptions::window(2),
            &mut crate::NoProgress,
        )
        .expect("matte");
        assert_eq!(out.dims(), &[5, 4, 24, 40]);
        let d = max_diff(&out, &one_adapter_pass(&model, &pixel, &latent, 2));
        assert!(d <= 1e-6, "max difference {d}");
    }

    #[test]
    fn cancel_and_bad_shapes() {
        let (_, model) = awake(&tiny());
        let (pixel, latent) = inputs(6, 32, 32);
        let mut calls = 0;
        let mut stop_after_first = |_: &str, _: u64, _: u64| {
            calls += 1;
            calls < 2
        };
        let e = matte_clip(
            &model,
            &pixel,
            &latent,
            &MatteOptions::window(2),
            &mut stop_after_first,
        )
        .expect_err("cancelled");
        assert!(matches!(e, Error::Cancelled), "{e}");
        assert_eq!(calls, 2, "stops at the first report that says no");
        let e = matte_clip(
            &model,
            &pixel,
            &latent.narrow(0, 0, 5).expect("n"),
            &MatteOptions::default(),
            &mut crate::NoProgress,
        )
        .expect_err("latent frames");
        assert_eq!(e.kind(), "invalid");
        let e = matte_clip(
            &model,
            &pixel.narrow(0, 0, 0).expect("n"),
            &latent.narrow(0, 0, 0).expect("n"),
            &MatteOptions::default(),
            &mut crate::NoProgress,
        )
        .expect_err("empty clip");
        assert_eq!(e.kind(), "invalid");
    }

    /// A tiny checkpoint with a codec (random weights; tests only).
    pub(crate) fn write_tiny_model(path: &std::path::Path) {
        use candle_nn::{VarBuilder, VarMap};
        let mut cfg = tiny();
        cfg.codec = Some(tiny_codec());
        let varmap = VarMap::new();
        let vb = VarBuilder::from_varmap(&varmap, DType::F32, &Device::Cpu);
        IldiffDecoder::new(&cfg, vb).expect("build");
        crate::model::weights::save_ildiff(&varmap, &cfg, path).expect("save");
    }

    /// An opaque test clip of 50 ms frames.
    pub(crate) fn clip(frames: usize, w: u32, h: u32) -> Animation {
        let frames = (0..frames)
            .map(|i| {
                let img = RgbaImage::from_fn(w, h, |x, y| {
                    image::Rgba([(x * 7 + i as u32 * 20) as u8, (y * 5) as u8, 90, 255])
                });
                Frame::new(img, Delay::from_millis(50))
            })
            .collect();
        Animation::new(w, h, frames, LoopCount::Infinite).expect("clip")
    }

    fn tiny_model() -> (tempfile::TempDir, IldiffDecoder) {
        let dir = tempfile::tempdir().expect("tempdir");
        let path = dir.path().join("tiny.safetensors");
        write_tiny_model(&path);
        let model = crate::pipeline::models::load_model(&path).expect("load");
        (dir, model)
    }

    #[test]
    fn animation_matte_equals_the_tensor_matte_and_streams_every_window() {
        let (_dir, model) = tiny_model();
        let anim = clip(11, 32, 24);
        let options = MatteOptions::window(3);
        let mut streamed = Vec::new();
        let mut done = Vec::new();
        let mut progress = |_: &str, d: u64, _: u64| {
            done.push(d);
            true
        };
        let out = matte_animation(&model, &anim, &options, &mut progress, &mut |s, f| {
            streamed.push((s, f.to_vec()))
        })
        .expect("matte");
        // A key-prior model assumes no plate.
        assert!(out.plate().expect("plate").is_none());
        let out = out.clip;
        assert_eq!(done, [0, 3, 6, 9, 11]);
        assert_eq!((out.width, out.height, out.len()), (32, 24, 11));
        assert_eq!(out.loops, anim.loops);
        let starts: Vec<usize> = streamed.iter().map(|s| s.0).collect();
        assert_eq!(starts, [0, 3, 6, 9]);
        let flat: Vec<RgbaImage> = streamed.into_iter().flat_map(|s| s.1).collect();
        assert!(out.frames.iter().zip(&flat).all(|(f, s)| f.image == *s));
        // The whole clip as tensors, encoded in the same batches: the same bytes.
        let pixel = pixels_from_animation(&anim, &Device::Cpu).expect("pixels");
        let codec = model.codec().expect("codec");
        let latent = crate::pipeline::models::encode_clip(codec, &pixel, 3).expect("latent");
        let whole =
            matte_clip(&model, &pixel, &latent, &options, &mut crate::NoProgress).expect("whole");
        let whole = animation_from_matte(&whole, &anim).expect("anim");
        for (a, b) in out.frames.iter().zip(&whole.frames) {
            assert!(a.image == b.image);
            assert_eq!(a.delay, b.delay);
        }
    }

    #[test]
    fn draft_keeps_the_size_and_cancel_stops() {
        let (_dir, model) = tiny_model();
        let anim = clip(5, 40, 36);
        let draft = MatteOptions {
            window: 2,
            quality: Quality::Draft,
            plate: PlateOptions::default(),
        };
        let out = matte_animation(
            &model,
            &anim,
            &draft,
            &mut crate::NoProgress,
            &mut |_, _| {},
        )
        .expect("draft")
        .clip;
        assert_eq!((out.width, out.height, out.len()), (40, 36, 5));
        let mut calls = 0;
        let mut stop_second = |_: &str, _: u64, _: u64| {
            calls += 1;
            calls < 2
        };
        let e = matte_animation(&model, &anim, &draft, &mut stop_second, &mut |_, _| {})
            .expect_err("cancelled");
        assert!(matches!(e, Error::Cancelled), "{e}");
        let empty = Animation {
            frames: Vec::new(),
            ..anim
        };
        assert!(
            matte_animation(
                &model,
                &empty,
                &draft,
                &mut crate::NoProgress,
                &mut |_, _| {}
            )
            .is_err()
        );
    }

    #[test]
    fn bytes_round_like_f32_round() {
        // Every step of 1/2^16 through [0, 1], the values either side of each half-way
        // point, and what lies outside the range.
        let mut vals: Vec<f32> = (0..=65536).map(|i| i as f32 / 65536.0).collect();
        for k in 0..255 {
            let half = (k as f32 + 0.5) / 255.0;
            vals.extend([half, half.next_down(), half.next_up()]);
        }
        vals.extend([
            -1.0,
            2.0,
            f32::NAN,
            f32::INFINITY,
            0.5f32.next_down() / 255.0,
        ]);
        for v in vals {
            let want = (v.clamp(0.0, 1.0) * 255.0).round() as u8;
            assert_eq!(unit_to_u8(v), want, "{v:e}");
        }
    }

    #[test]
    fn animation_conversions_round_trip() {
        let mut frames = Vec::new();
        for i in 0..3u8 {
            let img = RgbaImage::from_fn(5, 4, |x, y| {
                image::Rgba([x as u8 * 40, y as u8 * 50, i * 60, 255])
            });
            frames.push(Frame::new(img, Delay::from_millis(40 + u32::from(i))));
        }
        let anim = Animation::new(5, 4, frames, LoopCount::Plays(2)).expect("anim");
        let px = pixels_from_animation(&anim, &Device::Cpu).expect("pixels");
        assert_eq!(px.dims(), &[3, 3, 4, 5]);
        let alpha = Tensor::full(0.5f32, (3, 1, 4, 5), &Device::Cpu).expect("alpha");
        let matte = Tensor::cat(&[&alpha, &px], 1).expect("matte");
        let back = animation_from_matte(&matte, &anim).expect("animation");
        assert_eq!(back.loops, anim.loops);
        for (a, b) in back.frames.iter().zip(&anim.frames) {
            assert_eq!(a.delay, b.delay);
            for (pa, pb) in a.image.pixels().zip(b.image.pixels()) {
                assert_eq!(&pa.0[..3], &pb.0[..3]);
                assert_eq!(pa.0[3], 128);
            }
        }
        assert!(animation_from_matte(&px, &anim).is_err());
    }
}

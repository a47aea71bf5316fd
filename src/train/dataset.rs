//! Training samples drawn in memory, and a multi-threaded loader that keeps them in order.
//!
//! A sample is a function of `(seed, index)` alone: which clip, which background, which
//! degradation, which crop. So a run is reproducible, a resumed run sees exactly the samples the
//! uninterrupted one would have, and any number of loader threads may make them in any order
//! (the loader hands them out by index).

use std::collections::BTreeMap;
use std::path::PathBuf;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::thread::JoinHandle;

use crossbeam_channel::{Receiver, Sender, bounded};

use super::composite::{Background, Degradation, composite};
use super::synth::{Rng, SynthConfig, mix, synth_clip};
use super::{Split, split_of};
use crate::media::Animation;
use crate::pipeline::plate::{self, PlateOptions};
use crate::{Error, Result};

/// Where foreground clips come from: the procedural generator, artwork, imported stickers.
pub trait ClipSource: Send + Sync {
    /// A straight-alpha clip of `frames` frames at `size`×`size` for `seed`, from `split`.
    fn clip(&self, split: Split, seed: u64, size: u32, frames: u32) -> Result<Animation>;
    /// A short label for logs and model cards.
    fn name(&self) -> &str;
}

/// The procedural generator of [`super::synth`].
#[derive(Debug, Clone, Copy, Default)]
pub struct Procedural;

impl ClipSource for Procedural {
    fn clip(&self, _split: Split, seed: u64, size: u32, frames: u32) -> Result<Animation> {
        // Clip seeds carry their own split (see `split_of`), chosen by `seed_in`.
        let cfg = SynthConfig {
            width: size,
            height: size,
            frames,
            fps: 12.0,
        };
        synth_clip(seed, &cfg)
    }

    fn name(&self) -> &str {
        "procedural"
    }
}

impl ClipSource for super::art::ArtLibrary {
    fn clip(&self, split: Split, seed: u64, size: u32, frames: u32) -> Result<Animation> {
        super::art::ArtLibrary::clip(self, split, seed, size, frames)
    }

    fn name(&self) -> &str {
        "art"
    }
}

/// What to draw.
#[derive(Clone)]
pub struct DataConfig {
    /// Side of the square training crops.
    pub size: u32,
    /// Frames per clip.
    pub frames: u32,
    /// Train or validation clips.
    pub split: Split,
    /// Foreground sources with their weights (drawn per sample).
    pub sources: Vec<(Arc<dyn ClipSource>, f32)>,
    /// Folder of background pictures (photo and moving backgrounds).
    pub photos: Option<PathBuf>,
    /// Only these backgrounds (all when empty).
    pub backgrounds: Vec<Background>,
    /// Only these input degradations (all, by their usual shares, when empty).
    pub degradations: Vec<Degradation>,
    /// Estimate each clip's background plate (`Sample::plate`) with these switches, for
    /// plate-prior models; `None` for the others (it costs a little per clip).
    pub plate: Option<PlateOptions>,
}

impl std::fmt::Debug for DataConfig {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("DataConfig")
            .field("size", &self.size)
            .field("frames", &self.frames)
            .field("split", &self.split)
            .field(
                "sources",
                &self
                    .sources
                    .iter()
                    .map(|(s, w)| format!("{}:{w}", s.name()))
                    .collect::<Vec<_>>(),
            )
            .field("photos", &self.photos)
            .field("plate", &self.plate)
            .finish()
    }
}

impl DataConfig {
    /// Procedural clips only.
    pub fn procedural(size: u32, frames: u32, split: Split) -> Self {
        Self {
            size,
            frames,
            split,
            sources: vec![(Arc::new(Procedural), 1.0)],
            photos: None,
            backgrounds: Vec::new(),
            degradations: Vec::new(),
            plate: None,
        }
    }
}

/// One training clip: the opaque input, the truth, and its labels. Planar f32, frame-major.
#[derive(Debug, Clone, PartialEq)]
pub struct Sample {
    pub frames: usize,
    pub size: usize,
    /// Composite RGB in [0, 1], `[T, 3, S, S]`.
    pub rgb: Vec<f32>,
    /// Ground-truth alpha in [0, 1], `[T, 1, S, S]`.
    pub alpha: Vec<f32>,
    /// Ground-truth straight foreground colour in [0, 1], `[T, 3, S, S]`.
    pub fg: Vec<f32>,
    pub background: Background,
    pub degradation: Degradation,
    /// Caption word ids (the generator's training; empty for the other trainers).
    pub labels: Vec<u32>,
    /// The background pans or zooms (validation splits static from panning backgrounds).
    pub panning: bool,
    /// The estimated background plate `[T, 4, S, S]` (RGB, confidence) when the data asks
    /// for one ([`DataConfig::plate`]), else empty.
    pub plate: Vec<f32>,
    /// What the plate estimate found (its spatial fit and that fit's error), for reports.
    pub plate_fit: String,
}

impl Sample {
    /// Fills [`Sample::plate`] from the sample's own frames, as the matte pipeline does for a
    /// user's clip.
    pub fn estimate_plate(&mut self, options: &PlateOptions) -> Result<()> {
        let p = plate::estimate(&self.rgb, self.frames, self.size, self.size, options)?;
        // The last frame's place on the canvas says what camera motion the plate assumed.
        let last = p.warps.last().copied().unwrap_or(plate::Warp::IDENTITY);
        self.plate_fit = format!(
            "{:?} {:.0}% {:.3}, last frame at {:+.1},{:+.1} ×{:.3}",
            p.fit,
            100.0 * p.fit_share,
            p.fit_error,
            last.x,
            last.y,
            last.scale
        );
        self.plate = p.into_planar();
        Ok(())
    }
}

/// The `index`-th clip seed of `split` for a run seeded `seed`: seeds are drawn until one falls
/// in the split, so train and validation never share a clip.
pub fn seed_in(seed: u64, index: u64, split: Split) -> u64 {
    let mut k = 0u64;
    loop {
        let s = mix(mix(seed, index), k);
        if split_of(s) == split {
            return s;
        }
        k += 1;
    }
}

/// Makes sample `index` of a run seeded `seed`.
pub fn make_sample(cfg: &DataConfig, seed: u64, index: u64) -> Result<Sample> {
    if cfg.sources.is_empty() {
        return Err(Error::Invalid("training data has no clip source".into()));
    }
    let clip_seed = seed_in(seed, index, cfg.split);
    let mut rng = Rng::new(mix(clip_seed, 0xDA7A));
    let total: f32 = cfg.sources.iter().map(|(_, w)| w.max(0.0)).sum();
    let mut pick = rng.f32() * total;
    let mut source = &cfg.sources[0].0;
    for (s, w) in &cfg.sources {
        if pick < w.max(0.0) {
            source = s;
            break;
        }
        pick -= w.max(0.0);
    }
    // Half the samples show the whole sticker at the crop size; the others render it up to 2x
    // larger and crop, so the net sees sticker-scale edges and partial views.
    let size = cfg.size;
    let render = if rng.chance(0.5) {
        size
    } else {
        ((size as f32 * rng.range(1.2, 2.0)) as u32).max(size)
    };
    let fg = source.clip(cfg.split, clip_seed, render, cfg.frames)?;
    let all = Background::ALL;
    let pool: &[Background] = if cfg.backgrounds.is_empty() {
        &all
    } else {
        &cfg.backgrounds
    };
    let bg = pool[rng.below(pool.len())];
    let deg = match cfg.degradations.as_slice() {
        [] => Degradation::draw(mix(clip_seed, 7)),
        pool => pool[Rng::new(mix(clip_seed, 7)).below(pool.len())],
    };
    let comp = composite(&fg, bg, deg, mix(clip_seed, 9), cfg.photos.as_deref())?;
    let (x0, y0) = (
        rng.below((render - size + 1) as usize) as u32,
        rng.below((render - size + 1) as usize) as u32,
    );
    let mut sample = to_sample(&comp.rgb, &comp.gt, (x0, y0), size, bg, deg);
    sample.panning = comp.panning;
    if let Some(options) = &cfg.plate {
        sample.estimate_plate(options)?;
    }
    Ok(sample)
}

fn to_sample(
    rgb: &Animation,
    gt: &Animation,
    (x0, y0): (u32, u32),
    size: u32,
    background: Background,
    degradation: Degradation,
) -> Sample {
    let t = rgb.frames.len();
    let s = size as usize;
    let plane = s * s;
    let mut out = Sample {
        frames: t,
        size: s,
        rgb: vec![0.0; t * 3 * plane],
        alpha: vec![0.0; t * plane],
        fg: vec![0.0; t * 3 * plane],
        background,
        degradation,
        labels: Vec::new(),
        panning: false,
        plate: Vec::new(),
        plate_fit: String::new(),
    };
    for (i, (a, g)) in rgb.frames.iter().zip(&gt.frames).enumerate() {
        for y in 0..s {
            for x in 0..s {
                let p = a.image.get_pixel(x0 + x as u32, y0 + y as u32).0;
                let q = g.image.get_pixel(x0 + x as u32, y0 + y as u32).0;
                let k = y * s + x;
                for c in 0..3 {
                    out.rgb[(i * 3 + c) * plane + k] = p[c] as f32 / 255.0;
                    out.fg[(i * 3 + c) * plane + k] = q[c] as f32 / 255.0;
                }
                out.alpha[i * plane + k] = q[3] as f32 / 255.0;
            }
        }
    }
    out
}

/// A maker of samples by index, shared by the loader threads.
pub type MakeFn = dyn Fn(u64) -> Result<Sample> + Send + Sync;

/// Makes samples `start, start + 1, …` on `workers` threads and hands them out in index order.
/// At most `prefetch` finished samples wait at once, so memory stays bounded however far the
/// workers run ahead. Dropping the loader stops its threads.
pub struct Loader {
    rx: Receiver<(u64, Result<Sample>)>,
    pending: BTreeMap<u64, Result<Sample>>,
    next: u64,
    stop: Arc<AtomicBool>,
    threads: Vec<JoinHandle<()>>,
}

impl Loader {
    pub fn new(make: Arc<MakeFn>, start: u64, workers: usize, prefetch: usize) -> Result<Self> {
        let (tx, rx): (Sender<(u64, Result<Sample>)>, _) = bounded(prefetch.max(1));
        let counter = Arc::new(AtomicU64::new(start));
        let stop = Arc::new(AtomicBool::new(false));
        let threads = (0..workers.max(1))
            .map(|i| {
                let (tx, counter, stop, make) =
                    (tx.clone(), counter.clone(), stop.clone(), make.clone());
                std::thread::Builder::new()
                    .name(format!("ildiff-data-{i}"))
                    .spawn(move || {
                        while !stop.load(Ordering::Relaxed) {
                            let index = counter.fetch_add(1, Ordering::Relaxed);
                            let sample = make(index);
                            if tx.send((index, sample)).is_err() {
                                break;
                            }
                        }
                    })
                    .map_err(|e| Error::Io {
                        action: "starting a data loader thread",
                        path: PathBuf::new(),
                        source: e,
                    })
            })
            .collect::<Result<Vec<_>>>()?;
        Ok(Self {
            rx,
            pending: BTreeMap::new(),
            next: start,
            stop,
            threads,
        })
    }

    /// The next sample in index order (blocks until it is made).
    pub fn next_sample(&mut self) -> Result<Sample> {
        loop {
            if let Some(s) = self.pending.remove(&self.next) {
                self.next += 1;
                return s;
            }
            let (i, s) = self
                .rx
                .recv()
                .map_err(|_| Error::Invalid("the data loader threads stopped".into()))?;
            self.pending.insert(i, s);
        }
    }
}

impl Drop for Loader {
    fn drop(&mut self) {
        self.stop.store(true, Ordering::Relaxed);
        // Unblock workers waiting on a full channel, then join them.
        while self.rx.try_recv().is_ok() {}
        for t in self.threads.drain(..) {
            while !t.is_finished() {
                while self.rx.try_recv().is_ok() {}
                std::thread::yield_now();
            }
            let _ = t.join();
        }
    }
}

/// A batch as planar buffers: `[B·T, C, S, S]` frame-major.
#[derive(Debug, Clone)]
pub struct Batch {
    pub clips: usize,
    pub frames: usize,
    pub size: usize,
    pub rgb: Vec<f32>,
    pub alpha: Vec<f32>,
    pub fg: Vec<f32>,
    /// The samples' caption ids, concatenated (`labels.len() / clips` per clip).
    pub labels: Vec<u32>,
    /// The samples' plates `[B·T, 4, S, S]`, empty when the samples have none.
    pub plate: Vec<f32>,
}

impl Batch {
    /// Concatenates samples that share frame count and size.
    pub fn stack(samples: &[Sample]) -> Result<Batch> {
        let first = samples
            .first()
            .ok_or_else(|| Error::Invalid("empty batch".into()))?;
        let (t, s) = (first.frames, first.size);
        if samples.iter().any(|x| x.frames != t || x.size != s) {
            return Err(Error::Invalid(
                "samples of one batch differ in size or length".into(),
            ));
        }
        let cat = |f: fn(&Sample) -> &Vec<f32>| samples.iter().flat_map(f).copied().collect();
        Ok(Batch {
            clips: samples.len(),
            frames: t,
            size: s,
            rgb: cat(|x| &x.rgb),
            alpha: cat(|x| &x.alpha),
            fg: cat(|x| &x.fg),
            labels: samples.iter().flat_map(|x| &x.labels).copied().collect(),
            plate: cat(|x| &x.plate),
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn samples_are_deterministic_and_split_apart() {
        let cfg = DataConfig::procedural(32, 3, Split::Train);
        let a = make_sample(&cfg, 5, 2).expect("sample");
        let b = make_sample(&cfg, 5, 2).expect("sample");
        assert_eq!(a, b);
        assert_eq!(a.rgb.len(), 3 * 3 * 32 * 32);
        assert_eq!(a.alpha.len(), 3 * 32 * 32);
        let c = make_sample(&cfg, 5, 3).expect("sample");
        assert_ne!(a.rgb, c.rgb);
        assert!(
            a.rgb
                .iter()
                .chain(&a.alpha)
                .all(|v| (0.0..=1.0).contains(v))
        );
        for i in 0..50 {
            assert_eq!(split_of(seed_in(1, i, Split::Val)), Split::Val);
            assert_eq!(split_of(seed_in(1, i, Split::Train)), Split::Train);
        }
    }

    #[test]
    fn the_loader_returns_samples_in_index_order() {
        let cfg = DataConfig::procedural(24, 2, Split::Train);
        let make: Arc<MakeFn> = Arc::new(move |i| make_sample(&cfg, 9, i));
        let mut loader = Loader::new(make.clone(), 4, 3, 2).expect("loader");
        for i in 4..10 {
            let s = loader.next_sample().expect("sample");
            assert_eq!(s, make(i).expect("direct"), "index {i}");
        }
        drop(loader);
        let batch = Batch::stack(&[make(0).expect("a"), make(1).expect("b")]).expect("stack");
        assert_eq!(batch.rgb.len(), 2 * 2 * 3 * 24 * 24);
        assert!(Batch::stack(&[]).is_err());
    }
}

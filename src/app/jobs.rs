//! What the workers do for each [`Job`]: the same library calls as the CLI (`decode`,
//! `pipeline::models`' model loading and clip encoding, `pipeline::matte::matte_clip`,
//! `presets::fit_to_preset`, `pack::export_pack`, `eval::flicker_scores`), with the
//! [`Emitter`] as their [`Progress`], so cancelling and progress work as in the terminal.
//!
//! Re-matting calls `matte_clip` on successive segments of the clip, each with the model's
//! temporal radius of context on both sides, so finished frames can be shown while the rest
//! is still running. Frame t depends only on frames `t - r ..= t + r`, so the result is the
//! same as one call over the whole clip; the context frames only cost the adapter's cheap
//! per-frame features again.

use std::collections::HashMap;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::SystemTime;

use candle_core::{Device, Tensor};

use super::settings::Quality;
use super::worker::{Emitter, Event, Job};
use crate::media::presets::{self, FitOptions, Preset};
use crate::media::{Animation, Frame, Limits, decode};
use crate::model::IldiffDecoder;
use crate::pipeline::generate::{
    GenerateRequest, Generator, WordGroups, default_generator, generate,
};
use crate::pipeline::matte::{
    MatteOptions, STAGE, animation_from_matte, matte_clip, pixels_from_animation,
};
use crate::pipeline::sd_models::{SdFiles, discover_hf_cache, hf_cache_dir, load_denoiser};
use crate::{Error, Progress, Result};

/// A re-matte job.
#[derive(Debug, Clone)]
pub struct MatteRequest {
    /// The opaque input clip.
    pub clip: Arc<Animation>,
    /// Checkpoint to use; `None` = the installed default (an error when none is installed).
    pub model: Option<PathBuf>,
    /// Output frames per window of `matte_clip`.
    pub window: usize,
    pub quality: Quality,
}

/// An export of one sticker.
#[derive(Debug, Clone)]
pub struct ExportRequest {
    pub clip: Arc<Animation>,
    /// `None`: plain export, the extension of `out` picks the format.
    pub preset: Option<Preset>,
    pub out: PathBuf,
    pub options: FitOptions,
    /// Decode the written file back for the preview.
    pub read_back: bool,
}

/// A generate job: the request and where the weights are.
#[derive(Debug, Clone, Default)]
pub struct GenerateJob {
    pub request: GenerateRequest,
    /// The user's SD-1.5 weights (a diffusers folder); `None` = the embedded default
    /// generator.
    pub model_dir: Option<PathBuf>,
    /// Fill parts missing from `model_dir` (or all of them) from the Hugging Face cache.
    pub hf_cache: bool,
}

impl GenerateJob {
    /// Which generator this job needs (the cache key of [`WorkerState::generator`]).
    fn key(&self) -> String {
        match (&self.model_dir, self.hf_cache) {
            (None, false) => "default".into(),
            (dir, hf) => format!(
                "sd:{}:{hf}",
                dir.as_deref()
                    .map(Path::display)
                    .map(|d| d.to_string())
                    .unwrap_or_default()
            ),
        }
    }
}

/// The job panel's prompt-mode settings and the last run's word feedback.
#[derive(Debug, Clone, Default)]
pub struct GenerateForm {
    pub job: GenerateJob,
    /// Text of the SD-1.5 folder field (empty = the embedded default).
    pub dir_text: String,
    /// Words of the last prompt the model did not know.
    pub unknown: Vec<String>,
    /// The built-in generator's words by group, read once when the prompt panel first shows
    /// them (`Ok(None)`: none installed; `Err`: the file could not be read).
    pub vocabulary: Option<std::result::Result<Option<WordGroups>, String>>,
}

impl GenerateForm {
    /// The job to submit for `prompt`.
    pub fn job_for(&self, prompt: &str) -> GenerateJob {
        let dir = self.dir_text.trim();
        let mut job = self.job.clone();
        job.request.prompt = prompt.to_string();
        job.model_dir = (!dir.is_empty()).then(|| PathBuf::from(dir));
        job
    }
}

/// What a worker keeps between jobs: loaded models, by path and modification time, and
/// loaded generators by weights.
#[derive(Default)]
pub struct WorkerState {
    models: HashMap<PathBuf, (Option<SystemTime>, Arc<IldiffDecoder>)>,
    generators: HashMap<String, Arc<Generator>>,
}

/// Message shown when no trained default model is installed.
pub const NO_DEFAULT_MODEL: &str = "no trained default model is installed; choose a model \
     file (an ILDiff checkpoint) in the job panel. Untrained weights are never used, because \
     their matte would be meaningless.";

/// The installed default checkpoint, if any (the same lookup as `ildiff matte`).
pub fn default_model() -> Option<PathBuf> {
    crate::pipeline::models::default_model()
}

impl WorkerState {
    /// The model at `path`, loaded once and kept (reloaded when the file changes).
    pub fn model(&mut self, path: &Path) -> Result<Arc<IldiffDecoder>> {
        let mtime = std::fs::metadata(path)
            .map_err(|e| Error::io("read the model", path, e))?
            .modified()
            .ok();
        if let Some((t, m)) = self.models.get(path)
            && *t == mtime
        {
            return Ok(m.clone());
        }
        let model = crate::pipeline::models::load_model(path)?;
        let model = Arc::new(model);
        self.models
            .insert(path.to_path_buf(), (mtime, model.clone()));
        Ok(model)
    }

    /// The generator `job` needs, loaded once and kept: the embedded default, or the user's
    /// SD-1.5 weights, checked (every missing or misshaped tensor named) before loading.
    pub fn generator(&mut self, job: &GenerateJob) -> Result<Arc<Generator>> {
        let key = job.key();
        if let Some(g) = self.generators.get(&key) {
            return Ok(g.clone());
        }
        let device = Device::Cpu;
        let generator = if key == "default" {
            default_generator(&device)?
        } else {
            let mut files = job
                .model_dir
                .as_deref()
                .map(SdFiles::from_dir)
                .unwrap_or_default();
            if job.hf_cache
                && let Some(hub) = hf_cache_dir()
            {
                files = discover_hf_cache(&hub).overridden_by(files);
            }
            files.check()?;
            files.load(load_denoiser(&files, &device)?, &device)?
        };
        let generator = Arc::new(generator);
        self.generators.insert(key, generator.clone());
        Ok(generator)
    }

    /// Makes `generator` the one used for `job`'s weights (tests; a future model picker).
    pub fn insert_generator(&mut self, job: &GenerateJob, generator: Arc<Generator>) {
        self.generators.insert(job.key(), generator);
    }
}

/// Runs one job; returns its final event (errors become `Failed`/`Cancelled` in the caller).
pub fn execute(job: Job, state: &mut WorkerState, emit: &Emitter) -> Result<Event> {
    let id = job.id();
    let what = match &job {
        Job::Import { .. } => "import",
        Job::LoadModel { .. } => "load model",
        Job::Matte { .. } => "re-matte",
        Job::Generate { .. } => "generate",
        Job::Flicker { .. } => "flicker",
        Job::Export { .. } => "export",
        Job::ExportPack { .. } => "export pack",
    };
    emit.send(Event::Started { id, what });
    let mut progress = emit.clone();
    match job {
        Job::Import { path, limits, .. } => {
            let clip = decode::open_with_progress(&path, &limits, &mut progress)?;
            Ok(Event::Imported {
                id,
                path,
                clip: Box::new(clip),
            })
        }
        Job::LoadModel { path, .. } => {
            let model = state.model(&path)?;
            let cfg = model.config();
            let summary = format!(
                "ILDiff checkpoint: temporal radius {} frames, decoder channels {:?}, codec {}",
                model.temporal_radius(),
                cfg.decoder.block_out_channels,
                if cfg.codec.is_some() { "yes" } else { "no" }
            );
            Ok(Event::ModelReady { id, path, summary })
        }
        Job::Matte { request, .. } => {
            let path = match &request.model {
                Some(p) => p.clone(),
                None => default_model().ok_or_else(|| Error::Model(NO_DEFAULT_MODEL.into()))?,
            };
            if !progress.step("load model", 0, 1) {
                return Err(Error::Cancelled);
            }
            let model = state.model(&path)?;
            let clip = matte_animation(&model, &request, &mut progress, &mut |start, frames| {
                emit.send(Event::FramesDone { id, start, frames })
            })?;
            Ok(Event::Matted {
                id,
                clip: Box::new(clip),
            })
        }
        Job::Generate { job, .. } => {
            if !progress.step("load model", 0, 1) {
                return Err(Error::Cancelled);
            }
            let generator = state.generator(&job)?;
            let out = generate(
                &generator,
                &job.request,
                &mut progress,
                &mut |start, frames| emit.send(Event::FramesDone { id, start, frames }),
            )?;
            Ok(Event::Generated {
                id,
                prompt: job.request.prompt.clone(),
                clip: Box::new(out.animation),
                unknown: out.unknown,
            })
        }
        Job::Flicker { clip, .. } => {
            let planes = crate::eval::alpha_planes(&clip);
            let scores = crate::eval::flicker_scores(&planes)?;
            Ok(Event::Flicker { id, scores })
        }
        Job::Export { request, .. } => {
            let report = match request.preset {
                Some(p) => presets::fit_to_preset(
                    &request.clip,
                    p,
                    &request.options,
                    &request.out,
                    &mut progress,
                )?,
                None => presets::export_plain(
                    &request.clip,
                    &request.out,
                    &request.options,
                    None,
                    &mut progress,
                )?,
            };
            let read_back = if request.read_back && report.path.is_file() {
                let limits = Limits {
                    max_frames: Limits::default()
                        .max_frames
                        .max(request.clip.len() as u32 * 4),
                    ..Limits::default()
                };
                Some(Box::new(decode::open(&report.path, &limits)?))
            } else {
                None
            };
            Ok(Event::Exported {
                id,
                report: Box::new(report),
                read_back,
            })
        }
        Job::ExportPack {
            spec,
            preset,
            out_dir,
            ..
        } => {
            let report = crate::media::pack::export_pack(&spec, preset, &out_dir, &mut progress)?;
            Ok(Event::PackExported {
                id,
                report: Box::new(report),
            })
        }
    }
}

fn model_err(e: impl std::fmt::Display) -> Error {
    Error::Model(format!("re-matting failed: {e}"))
}

/// Output frames per segment of [`matte_animation`]: long enough that the repeated context is
/// a small cost, short enough that previews arrive every few seconds.
pub fn segment_len(window: usize, radius: usize) -> usize {
    (window.max(1) * 4).max(4 * radius).max(16)
}

/// Re-mattes `request.clip` with `model`: frames go through the model's codec and
/// `matte_clip` segment by segment; `on_frames(start, frames)` receives each finished segment.
/// Draft quality works at half size and scales the result back.
pub fn matte_animation(
    model: &IldiffDecoder,
    request: &MatteRequest,
    progress: &mut dyn Progress,
    on_frames: &mut dyn FnMut(usize, Vec<image::RgbaImage>),
) -> Result<Animation> {
    let source = &*request.clip;
    if source.is_empty() {
        return Err(Error::Invalid("the clip has no frames".into()));
    }
    let Some(codec) = model.codec() else {
        return Err(Error::Model(
            "the checkpoint has no codec, so it cannot encode an RGB clip".into(),
        ));
    };
    let work = match request.quality {
        Quality::Full => source.clone(),
        Quality::Draft => source.resize_exact(
            source.width.div_ceil(2).max(1),
            source.height.div_ceil(2).max(1),
        )?,
    };
    let scale_back = |img: image::RgbaImage| {
        if (img.width(), img.height()) == (source.width, source.height) {
            img
        } else {
            crate::media::animation::resize_rgba(&img, source.width, source.height)
        }
    };
    let t = work.len();
    let window = request.window.max(1);
    if !progress.step("encode", 0, t as u64) {
        return Err(Error::Cancelled);
    }
    let pixel = pixels_from_animation(&work, &Device::Cpu)?;
    let latent = crate::pipeline::models::encode_clip(codec, &pixel, window)?;
    let r = model.temporal_radius();
    let seg = segment_len(window, r);
    let options = MatteOptions { window };
    let mut frames: Vec<Frame> = Vec::with_capacity(t);
    let mut start = 0;
    while start < t {
        let end = (start + seg).min(t);
        let (lo, hi) = (start.saturating_sub(r), (end + r).min(t));
        let narrow = |x: &Tensor| x.narrow(0, lo, hi - lo).map_err(model_err);
        let mut inner = |_: &str, done: u64, _: u64| {
            let done_here = (done as usize).saturating_sub(start - lo).min(end - start);
            progress.step(STAGE, (start + done_here) as u64, t as u64)
        };
        let out = matte_clip(
            model,
            &narrow(&pixel)?,
            &narrow(&latent)?,
            &options,
            &mut inner,
        )?;
        let centre = out.narrow(0, start - lo, end - start).map_err(model_err)?;
        let timing = Animation::new(
            work.width,
            work.height,
            work.frames[start..end].to_vec(),
            work.loops,
        )?;
        let part = animation_from_matte(&centre, &timing)?;
        let images: Vec<image::RgbaImage> = part
            .frames
            .into_iter()
            .map(|f| scale_back(f.image))
            .collect();
        on_frames(start, images.clone());
        frames.extend(
            images
                .into_iter()
                .zip(&source.frames[start..end])
                .map(|(img, src)| Frame::new(img, src.delay)),
        );
        start = end;
    }
    Animation::new(source.width, source.height, frames, source.loops)
}

#[cfg(test)]
pub(crate) mod tests {
    use super::*;
    use crate::media::{Delay, LoopCount};
    use crate::model::codec::SmallCodecConfig;
    use crate::model::weights::save_ildiff;
    use candle_core::DType;
    use candle_nn::{VarBuilder, VarMap};

    /// A tiny checkpoint with a codec (random weights; tests only).
    pub(crate) fn write_tiny_model(path: &Path) {
        let mut cfg = crate::model::ildiff::tests::tiny();
        cfg.codec = Some(SmallCodecConfig {
            channels: [8, 8, 16],
            norm_groups: 4,
        });
        let varmap = VarMap::new();
        let vb = VarBuilder::from_varmap(&varmap, DType::F32, &Device::Cpu);
        IldiffDecoder::new(&cfg, vb).expect("build");
        save_ildiff(&varmap, &cfg, path).expect("save");
    }

    pub(crate) fn clip(frames: usize, w: u32, h: u32) -> Animation {
        let frames = (0..frames)
            .map(|i| {
                let img = image::RgbaImage::from_fn(w, h, |x, y| {
                    image::Rgba([(x * 7 + i as u32 * 20) as u8, (y * 5) as u8, 90, 255])
                });
                Frame::new(img, Delay::from_millis(50))
            })
            .collect();
        Animation::new(w, h, frames, LoopCount::Infinite).expect("clip")
    }

    #[test]
    fn segmented_matte_equals_one_call_and_streams_every_frame() {
        let dir = tempfile::tempdir().expect("tempdir");
        let path = dir.path().join("tiny.safetensors");
        write_tiny_model(&path);
        let mut state = WorkerState::default();
        let model = state.model(&path).expect("load");
        let again = state.model(&path).expect("cached");
        assert!(Arc::ptr_eq(&model, &again), "loaded once");
        let r = model.temporal_radius();
        assert!(r > 0);
        // More frames than one segment, so context across segment borders matters.
        let n = segment_len(1, r) + 5;
        let request = MatteRequest {
            clip: Arc::new(clip(n, 32, 32)),
            model: Some(path),
            window: 1,
            quality: Quality::Full,
        };
        let mut streamed = Vec::new();
        let mut last_done = 0;
        let mut progress = |_: &str, done: u64, _: u64| {
            assert!(done as usize <= n);
            last_done = done;
            true
        };
        let out = matte_animation(&model, &request, &mut progress, &mut |s, f| {
            streamed.push((s, f.len()))
        })
        .expect("matte");
        assert_eq!(last_done as usize, n);
        assert_eq!(out.len(), n);
        assert_eq!(streamed.iter().map(|s| s.1).sum::<usize>(), n);
        assert_eq!(streamed[0].0, 0);
        // One call over the whole clip gives the same alpha (up to rounding).
        let pixel = pixels_from_animation(&request.clip, &Device::Cpu).expect("pixels");
        let codec = model.codec().expect("codec");
        let latent = crate::pipeline::models::encode_clip(codec, &pixel, 1).expect("latent");
        let whole = matte_clip(
            &model,
            &pixel,
            &latent,
            &MatteOptions { window: 1 },
            &mut crate::NoProgress,
        )
        .expect("whole");
        let whole = animation_from_matte(&whole, &request.clip).expect("anim");
        let max = out
            .frames
            .iter()
            .zip(&whole.frames)
            .flat_map(|(a, b)| a.image.pixels().zip(b.image.pixels()))
            .map(|(a, b)| (i16::from(a.0[3]) - i16::from(b.0[3])).abs())
            .max()
            .unwrap_or(0);
        assert!(max <= 1, "alpha differs by {max}");
    }

    #[test]
    fn draft_quality_keeps_the_size_and_cancel_stops() {
        let dir = tempfile::tempdir().expect("tempdir");
        let path = dir.path().join("tiny.safetensors");
        write_tiny_model(&path);
        let model = WorkerState::default().model(&path).expect("load");
        let request = MatteRequest {
            clip: Arc::new(clip(3, 40, 36)),
            model: Some(path),
            window: 2,
            quality: Quality::Draft,
        };
        let out = matte_animation(&model, &request, &mut crate::NoProgress, &mut |_, _| {})
            .expect("draft");
        assert_eq!((out.width, out.height, out.len()), (40, 36, 3));
        let mut stop = |_: &str, _: u64, _: u64| false;
        let e =
            matte_animation(&model, &request, &mut stop, &mut |_, _| {}).expect_err("cancelled");
        assert!(matches!(e, Error::Cancelled));
    }

    #[test]
    fn generate_job_streams_frames_and_reports_unknown_words() {
        use crate::pipeline::generate::tests::{tiny_generator, tiny_ildiff};
        let (tx, rx) = crossbeam_channel::unbounded();
        let emit = Emitter::for_tests(7, tx);
        let mut state = WorkerState::default();
        let job = GenerateJob {
            request: GenerateRequest {
                prompt: "red heart sparkly".into(),
                steps: 2,
                frames: 3,
                size: Some((64, 64)),
                ..GenerateRequest::default()
            },
            ..GenerateJob::default()
        };
        let (generator, _) = tiny_generator(tiny_ildiff());
        state.insert_generator(&job, Arc::new(generator));
        let last = execute(
            Job::Generate {
                id: 7,
                job: Box::new(job),
            },
            &mut state,
            &emit,
        )
        .expect("generated");
        match last {
            Event::Generated {
                clip,
                unknown,
                prompt,
                ..
            } => {
                assert_eq!((clip.len(), clip.width, clip.height), (3, 64, 64));
                assert_eq!(unknown, ["sparkly"]);
                assert_eq!(prompt, "red heart sparkly");
            }
            other => panic!("{other:?}"),
        }
        let events: Vec<Event> = rx.try_iter().collect();
        let streamed: usize = events
            .iter()
            .map(|e| match e {
                Event::FramesDone { frames, .. } => frames.len(),
                _ => 0,
            })
            .sum();
        assert_eq!(streamed, 3);
        assert!(events.iter().any(|e| matches!(
            e,
            Event::Progress { stage, done: 2, total: 2, .. } if stage == crate::pipeline::generate::STAGE_DENOISE
        )));
    }
}

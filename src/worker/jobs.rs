//! What the workers do for each [`Job`]: the same library calls as the CLI (`decode`,
//! `pipeline::models`' model loading, `pipeline::matte::matte_animation`, `presets::export`,
//! `pack::export_pack`, `eval::flicker_scores`), with the [`Emitter`] as their [`Progress`], so
//! cancelling and progress work as in the terminal. A re-matte streams each finished window
//! to the studio as it comes.

use std::collections::HashMap;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::SystemTime;

use candle_core::Device;

use super::events::{Emitter, Event, Job};
pub use super::events::{ExportRequest, GenerateJob, MatteRequest};
use crate::media::presets;
use crate::media::{Limits, decode};
use crate::model::IldiffDecoder;
use crate::pipeline::generate::{Generator, GeneratorChoice, generate};
use crate::pipeline::matte::matte_animation;
use crate::pipeline::models::model_or_default;
use crate::pipeline::sd_models::SdFiles;
use crate::{Error, Progress, Result};

/// What a worker keeps between jobs: loaded models, by path and modification time, and
/// loaded generators by weights.
#[derive(Default)]
pub struct WorkerState {
    models: HashMap<PathBuf, (Option<SystemTime>, Arc<IldiffDecoder>)>,
    generators: HashMap<String, Arc<Generator>>,
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
        let files = job
            .model_dir
            .as_deref()
            .map(SdFiles::from_dir)
            .unwrap_or_default();
        let choice = GeneratorChoice::user(files, job.model_dir.is_some(), job.hf_cache);
        let generator = choice.load(&Device::Cpu)?;
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
            let path = model_or_default(request.model.as_deref())?;
            if !progress.step("load model", 0, 1) {
                return Err(Error::Cancelled);
            }
            let model = state.model(&path)?;
            let matted = matte_animation(
                &model,
                &request.clip,
                &request.options,
                &mut progress,
                &mut |start, frames| {
                    emit.send(Event::FramesDone {
                        id,
                        start,
                        frames: frames.to_vec(),
                    })
                },
            )?;
            let plate = matted.plate()?.map(Box::new);
            Ok(Event::Matted {
                id,
                clip: Box::new(matted.clip),
                plate,
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
            let report = presets::export(
                &request.clip,
                request.preset,
                &request.out,
                &request.options,
                None,
                &mut progress,
            )?;
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

#[cfg(test)]
pub(crate) mod tests {
    use super::*;
    use crate::pipeline::generate::GenerateRequest;

    pub(crate) use crate::pipeline::matte::tests::clip;

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

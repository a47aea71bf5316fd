//! What goes into the workers and what comes out: [`Job`] with its requests, [`Event`], and
//! the [`Emitter`] through which a running job reports (its [`Progress`]).

use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};

use crossbeam_channel::Sender;
use image::RgbaImage;

use crate::Progress;
use crate::media::pack::{PackReport, PackSpec};
use crate::media::presets::{ExportReport, FitOptions, Preset};
use crate::media::{Animation, Limits};
use crate::pipeline::generate::GenerateRequest;
use crate::pipeline::matte::MatteOptions;

/// Id value meaning "no job".
pub(super) const NO_JOB: JobId = 0;

/// Identifies a job in its events; unique per [`super::Workers`] pair (the app hands them out).
pub type JobId = u64;

/// Called after every event, from the worker thread (e.g. `egui::Context::request_repaint`).
pub type Waker = Arc<dyn Fn() + Send + Sync>;

/// Work for a worker.
#[derive(Debug, Clone)]
pub enum Job {
    /// Decode a clip (any format `media::decode` reads).
    Import {
        id: JobId,
        path: PathBuf,
        limits: Limits,
    },
    /// Load and check a checkpoint, keeping it for later jobs.
    LoadModel { id: JobId, path: PathBuf },
    /// Re-matte an opaque clip.
    Matte { id: JobId, request: MatteRequest },
    /// Make a transparent clip from a text prompt; finished frames stream as `FramesDone`.
    Generate { id: JobId, job: Box<GenerateJob> },
    /// Per-frame flicker scores of a clip's alpha (the numbers `ildiff eval` uses).
    Flicker { id: JobId, clip: Arc<Animation> },
    /// Write one sticker.
    Export { id: JobId, request: ExportRequest },
    /// Write a whole pack for one platform.
    ExportPack {
        id: JobId,
        spec: Box<PackSpec>,
        preset: Preset,
        out_dir: PathBuf,
    },
}

impl Job {
    pub fn id(&self) -> JobId {
        match self {
            Job::Import { id, .. }
            | Job::LoadModel { id, .. }
            | Job::Matte { id, .. }
            | Job::Generate { id, .. }
            | Job::Flicker { id, .. }
            | Job::Export { id, .. }
            | Job::ExportPack { id, .. } => *id,
        }
    }

    /// Jobs that need a model run on the inference worker; the rest on the I/O worker, so an
    /// import is never stuck behind a long matte.
    pub fn needs_model(&self) -> bool {
        matches!(
            self,
            Job::LoadModel { .. } | Job::Matte { .. } | Job::Generate { .. }
        )
    }
}

/// What a worker reports.
#[derive(Debug, Clone)]
pub enum Event {
    Started {
        id: JobId,
        what: &'static str,
    },
    Progress {
        id: JobId,
        stage: String,
        done: u64,
        total: u64,
    },
    Imported {
        id: JobId,
        path: PathBuf,
        clip: Box<Animation>,
    },
    ModelReady {
        id: JobId,
        path: PathBuf,
        summary: String,
    },
    /// Frames of a running matte job, from `start`, as they finish.
    FramesDone {
        id: JobId,
        start: usize,
        frames: Vec<RgbaImage>,
    },
    Matted {
        id: JobId,
        clip: Box<Animation>,
        /// The background the model assumed (RGB + confidence as alpha), for plate-prior
        /// models: the studio's "Background plate" preview.
        plate: Option<Box<Animation>>,
    },
    /// A generated clip, with the prompt's words the model does not know (shown to the user).
    Generated {
        id: JobId,
        prompt: String,
        clip: Box<Animation>,
        unknown: Vec<String>,
    },
    Flicker {
        id: JobId,
        scores: Vec<f64>,
    },
    Exported {
        id: JobId,
        report: Box<ExportReport>,
        /// The written file decoded back, when asked for.
        read_back: Option<Box<Animation>>,
    },
    PackExported {
        id: JobId,
        report: Box<PackReport>,
    },
    Failed {
        id: JobId,
        kind: &'static str,
        error: String,
    },
    Cancelled {
        id: JobId,
    },
}

impl Event {
    pub fn id(&self) -> JobId {
        match self {
            Event::Started { id, .. }
            | Event::Progress { id, .. }
            | Event::Imported { id, .. }
            | Event::ModelReady { id, .. }
            | Event::FramesDone { id, .. }
            | Event::Matted { id, .. }
            | Event::Generated { id, .. }
            | Event::Flicker { id, .. }
            | Event::Exported { id, .. }
            | Event::PackExported { id, .. }
            | Event::Failed { id, .. }
            | Event::Cancelled { id } => *id,
        }
    }

    /// True for the last event of a job.
    pub fn is_final(&self) -> bool {
        !matches!(
            self,
            Event::Started { .. } | Event::Progress { .. } | Event::FramesDone { .. }
        )
    }
}

/// Sends events and wakes the UI; also answers "was I cancelled?" for the running job.
#[derive(Clone)]
pub struct Emitter {
    tx: Sender<Event>,
    waker: Waker,
    cancel: Arc<AtomicU64>,
    id: JobId,
}

impl Emitter {
    /// The emitter of job `id` (the executor makes one per job).
    pub(super) fn new(tx: Sender<Event>, waker: Waker, cancel: Arc<AtomicU64>, id: JobId) -> Self {
        Emitter {
            tx,
            waker,
            cancel,
            id,
        }
    }

    pub fn send(&self, event: Event) {
        // The receiver is gone only while the app shuts down; nothing to report to then.
        let _ = self.tx.send(event);
        (self.waker)();
    }

    pub fn cancelled(&self) -> bool {
        self.cancel.load(Ordering::SeqCst) == self.id
    }

    pub fn id(&self) -> JobId {
        self.id
    }
}

#[cfg(test)]
impl Emitter {
    /// An emitter outside any worker thread, for tests of `jobs::execute`.
    pub(crate) fn for_tests(id: JobId, tx: Sender<Event>) -> Emitter {
        Emitter {
            tx,
            waker: Arc::new(|| {}),
            cancel: Arc::new(AtomicU64::new(NO_JOB)),
            id,
        }
    }
}

/// The [`Progress`] of a job: forwards steps as events, stops when cancelled.
impl Progress for Emitter {
    fn step(&mut self, stage: &str, done: u64, total: u64) -> bool {
        self.send(Event::Progress {
            id: self.id,
            stage: stage.to_string(),
            done,
            total,
        });
        !self.cancelled()
    }
}

/// A re-matte job.
#[derive(Debug, Clone)]
pub struct MatteRequest {
    /// The opaque input clip.
    pub clip: Arc<Animation>,
    /// Checkpoint to use; `None` = the installed default (an error when none is installed).
    pub model: Option<PathBuf>,
    /// Window and quality.
    pub options: MatteOptions,
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
    /// Which generator this job needs (the cache key of [`super::jobs::WorkerState::generator`]).
    pub(super) fn key(&self) -> String {
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

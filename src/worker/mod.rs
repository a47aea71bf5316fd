//! The studio's background threads: a [`Job`] goes in over a channel, [`Event`]s come out.
//!
//! The window never waits on decoding, inference or encoding: each [`Worker`] is one named,
//! long-lived thread that owns what it loads (models are loaded once and kept). Cancelling
//! does not queue behind the job it cancels: it is an atomic the running job's [`Progress`]
//! reads at every step. The worker wakes the UI through a plain callback, so this module knows
//! nothing about egui. Dropping a [`Worker`] cancels the running job and joins the thread.

use std::path::PathBuf;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::thread::JoinHandle;

use crossbeam_channel::{Receiver, Sender, unbounded};
use image::RgbaImage;

pub mod jobs;

use self::jobs::{ExportRequest, GenerateJob, MatteRequest};
use crate::Progress;
use crate::media::pack::{PackReport, PackSpec};
use crate::media::presets::{ExportReport, Preset};
use crate::media::{Animation, Limits};

/// Identifies a job in its events; unique per [`Worker`] pair (the app hands them out).
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
            cancel: Arc::new(AtomicU64::new(NONE)),
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

/// One named background thread with its job queue.
pub struct Worker {
    jobs: Option<Sender<Job>>,
    cancel: Arc<AtomicU64>,
    running: Arc<AtomicU64>,
    thread: Option<JoinHandle<()>>,
}

/// Id value meaning "none".
const NONE: JobId = 0;

impl Worker {
    /// Starts the thread `name`; its events go to `events`, and `waker` runs after each.
    pub fn spawn(name: &str, events: Sender<Event>, waker: Waker) -> std::io::Result<Worker> {
        let (tx, rx) = unbounded::<Job>();
        let cancel = Arc::new(AtomicU64::new(NONE));
        let running = Arc::new(AtomicU64::new(NONE));
        let (c, r) = (cancel.clone(), running.clone());
        let thread = std::thread::Builder::new()
            .name(name.to_string())
            .spawn(move || run(rx, events, waker, c, r))?;
        Ok(Worker {
            jobs: Some(tx),
            cancel,
            running,
            thread: Some(thread),
        })
    }

    /// Queues a job.
    pub fn submit(&self, job: Job) {
        if let Some(tx) = &self.jobs {
            let _ = tx.send(job);
        }
    }

    /// Cancels job `id` whether it is running or still queued.
    pub fn cancel(&self, id: JobId) {
        self.cancel.store(id, Ordering::SeqCst);
    }

    /// The job running now, if any.
    pub fn running(&self) -> Option<JobId> {
        Some(self.running.load(Ordering::SeqCst)).filter(|&id| id != NONE)
    }
}

impl Drop for Worker {
    fn drop(&mut self) {
        self.jobs = None; // closes the queue: the thread ends after the current job
        if let Some(id) = self.running() {
            self.cancel(id);
        }
        if let Some(t) = self.thread.take() {
            let _ = t.join();
        }
    }
}

fn run(
    rx: Receiver<Job>,
    events: Sender<Event>,
    waker: Waker,
    cancel: Arc<AtomicU64>,
    running: Arc<AtomicU64>,
) {
    let mut state = jobs::WorkerState::default();
    for job in rx.iter() {
        let id = job.id();
        let emit = Emitter {
            tx: events.clone(),
            waker: waker.clone(),
            cancel: cancel.clone(),
            id,
        };
        if emit.cancelled() {
            emit.send(Event::Cancelled { id });
            continue;
        }
        running.store(id, Ordering::SeqCst);
        // A panic in a job must not take the worker (and every later job) down with it.
        let outcome = std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| {
            jobs::execute(job, &mut state, &emit)
        }));
        running.store(NONE, Ordering::SeqCst);
        let last = match outcome {
            Ok(Ok(event)) => event,
            Ok(Err(crate::Error::Cancelled)) => Event::Cancelled { id },
            Ok(Err(e)) => Event::Failed {
                id,
                kind: e.kind(),
                error: e.to_string(),
            },
            Err(panic) => Event::Failed {
                id,
                kind: "internal",
                error: format!(
                    "internal error: {}",
                    panic
                        .downcast_ref::<&str>()
                        .map(|s| s.to_string())
                        .or_else(|| panic.downcast_ref::<String>().cloned())
                        .unwrap_or_else(|| "the job panicked".into())
                ),
            },
        };
        emit.send(last);
    }
}

/// The studio's two workers with one event stream: "ildiff-infer" runs model jobs,
/// "ildiff-io" imports, analyses and exports.
pub struct Workers {
    infer: Worker,
    io: Worker,
    events: Receiver<Event>,
    next_id: JobId,
}

impl Workers {
    pub fn spawn(waker: Waker) -> std::io::Result<Workers> {
        let (tx, rx) = unbounded();
        Ok(Workers {
            infer: Worker::spawn("ildiff-infer", tx.clone(), waker.clone())?,
            io: Worker::spawn("ildiff-io", tx, waker)?,
            events: rx,
            next_id: NONE,
        })
    }

    /// A fresh job id.
    pub fn next_id(&mut self) -> JobId {
        self.next_id += 1;
        self.next_id
    }

    pub fn submit(&self, job: Job) {
        if job.needs_model() {
            self.infer.submit(job);
        } else {
            self.io.submit(job);
        }
    }

    pub fn cancel(&self, id: JobId) {
        self.infer.cancel(id);
        self.io.cancel(id);
    }

    /// The next event, without waiting.
    pub fn try_recv(&self) -> Option<Event> {
        self.events.try_recv().ok()
    }

    /// The next event, waiting at most `timeout` (tests and benchmarks).
    pub fn recv_timeout(&self, timeout: std::time::Duration) -> Option<Event> {
        self.events.recv_timeout(timeout).ok()
    }

    /// Whether the inference worker is busy.
    pub fn inference_running(&self) -> Option<JobId> {
        self.infer.running()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::sync::atomic::AtomicUsize;
    use std::time::Duration;

    fn collect_until_final(w: &Workers, id: JobId) -> Vec<Event> {
        let mut out = Vec::new();
        while let Some(e) = w.recv_timeout(Duration::from_secs(30)) {
            let done = e.id() == id && e.is_final();
            out.push(e);
            if done {
                return out;
            }
        }
        panic!("no final event for job {id}: {out:?}");
    }

    #[test]
    fn generate_with_the_default_finishes_or_says_none_is_installed_and_wakes_the_ui() {
        let wakes = Arc::new(AtomicUsize::new(0));
        let w2 = wakes.clone();
        let mut w = Workers::spawn(Arc::new(move || {
            w2.fetch_add(1, Ordering::SeqCst);
        }))
        .expect("spawn");
        let id = w.next_id();
        let job = GenerateJob {
            request: crate::pipeline::generate::GenerateRequest {
                prompt: "a cat".into(),
                steps: 2,
                frames: 4,
                ..Default::default()
            },
            ..GenerateJob::default()
        };
        w.submit(Job::Generate {
            id,
            job: Box::new(job),
        });
        let installed = crate::pipeline::generate::default_vocabulary()
            .expect("readable")
            .is_some();
        let events = collect_until_final(&w, id);
        match events.last() {
            Some(Event::Generated { clip, unknown, .. }) if installed => {
                assert_eq!(clip.len(), 4);
                assert!(unknown.is_empty(), "{unknown:?}");
            }
            Some(Event::Failed { error, kind, .. }) if !installed => {
                assert!(
                    error.contains("no default generator is installed"),
                    "{error}"
                );
                assert_eq!(*kind, "model");
            }
            Some(Event::Failed { error, .. }) => panic!("installed: {installed}, failed: {error}"),
            _ => panic!("installed: {installed}, the job ended with another event"),
        }
        assert!(wakes.load(Ordering::SeqCst) >= 1);
    }

    #[test]
    fn import_reports_decode_errors_with_the_path_and_a_queued_cancel_skips_the_job() {
        let dir = tempfile::tempdir().expect("tempdir");
        let bad = dir.path().join("broken.gif");
        std::fs::write(&bad, b"GIF89a nonsense").expect("write");
        let mut w = Workers::spawn(Arc::new(|| {})).expect("spawn");
        let id = w.next_id();
        w.submit(Job::Import {
            id,
            path: bad.clone(),
            limits: Limits::default(),
        });
        let events = collect_until_final(&w, id);
        match events.last() {
            Some(Event::Failed { error, .. }) => assert!(error.contains("broken.gif"), "{error}"),
            other => panic!("{other:?}"),
        }
        // Cancelled before it starts: answered with Cancelled, nothing decoded.
        let id = w.next_id();
        w.cancel(id);
        w.submit(Job::Import {
            id,
            path: bad,
            limits: Limits::default(),
        });
        let events = collect_until_final(&w, id);
        assert!(matches!(events.last(), Some(Event::Cancelled { .. })));
        assert!(!events.iter().any(|e| matches!(e, Event::Started { .. })));
    }
}

//! The studio's runtime state and what changes it: imports, jobs, events, playback. Panels read
//! this state and call these methods; they hold no logic of their own and no tensor code.
//! Nothing here is persisted except through [`Settings`] (a separate struct).

use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, Instant};

use image::RgbaImage;

use super::settings::{ModelChoice, Settings, SettingsStore};
use crate::media::pack::{PackReport, PackSpec, PackSticker, StickerSource};
use crate::media::presets::{ExportReport, FitOptions};
use crate::media::{Animation, Limits};
use crate::pipeline::matte::MatteOptions;
use crate::pipeline::models::{NO_DEFAULT_MODEL, default_model};
use crate::worker::jobs::{ExportRequest, MatteRequest};
use crate::worker::{Event, Job, JobId, Waker, Workers};

static NEXT_CLIP: AtomicU64 = AtomicU64::new(1);

/// `n + 1` fresh ids: the first for a clip, the rest for its frames.
fn fresh_ids(n: usize) -> u64 {
    NEXT_CLIP.fetch_add(n as u64 + 1, Ordering::Relaxed)
}

/// A clip with an id that changes whenever its pixels do, and an id per frame's pixels: equal
/// frame ids mean equal pixels, so the texture cache (which keys on frame ids) reuses what a
/// re-matte preview already uploaded when the finished clip replaces it.
#[derive(Debug, Clone)]
pub struct Clip {
    pub id: u64,
    pub anim: Arc<Animation>,
    pub frame_ids: Arc<[u64]>,
}

impl Clip {
    pub fn new(anim: Animation) -> Clip {
        let base = fresh_ids(anim.len());
        let frame_ids = (1..=anim.len() as u64).map(|k| base + k).collect();
        Clip {
            id: base,
            anim: Arc::new(anim),
            frame_ids,
        }
    }

    /// `anim` whose frames are known to carry the pixels `frame_ids` name (fresh ids when the
    /// lengths differ).
    pub fn with_frame_ids(anim: Animation, frame_ids: Arc<[u64]>) -> Clip {
        if frame_ids.len() != anim.len() {
            return Clip::new(anim);
        }
        Clip {
            id: fresh_ids(0),
            anim: Arc::new(anim),
            frame_ids,
        }
    }

    pub fn len(&self) -> usize {
        self.anim.len()
    }

    pub fn is_empty(&self) -> bool {
        self.anim.is_empty()
    }
}

/// The frames of a running re-matte that have arrived so far. Kept apart from the clips, so
/// that a preview update moves the new frames in and copies no pixels on the UI thread.
#[derive(Debug, Clone, Default)]
pub struct Partial {
    /// Changes with every update (flicker and the preview key on it).
    pub id: u64,
    /// Per frame: its pixel id and image, once matted.
    pub frames: Vec<Option<(u64, Arc<RgbaImage>)>>,
    /// Frames matted so far.
    pub done: usize,
}

/// Where the pixels of one frame are, for work off the UI thread: shared, never copied.
#[derive(Debug, Clone)]
pub enum Pixels {
    Frame(Arc<Animation>, usize),
    Image(Arc<RgbaImage>),
}

impl Pixels {
    pub fn image(&self) -> Option<&RgbaImage> {
        match self {
            Pixels::Frame(a, i) => a.frames.get(*i).map(|f| &f.image),
            Pixels::Image(img) => Some(img),
        }
    }
}

/// What the panels show of a sticker: its current clip with the frames of a running re-matte
/// laid over it. Cheap to clone (shared pointers only).
#[derive(Debug, Clone)]
pub struct Shown {
    /// Changes whenever any shown pixel does.
    pub id: u64,
    /// Timing, size, and the frames not re-matted yet.
    pub clip: Clip,
    partial: Option<Arc<Partial>>,
}

impl Shown {
    pub fn of(clip: &Clip) -> Shown {
        Shown {
            id: clip.id,
            clip: clip.clone(),
            partial: None,
        }
    }

    /// Whether some frames come from a re-matte still running.
    pub fn is_partial(&self) -> bool {
        self.partial.is_some()
    }

    pub fn anim(&self) -> &Animation {
        &self.clip.anim
    }

    pub fn len(&self) -> usize {
        self.clip.len()
    }

    pub fn is_empty(&self) -> bool {
        self.clip.is_empty()
    }

    fn matted(&self, i: usize) -> Option<&(u64, Arc<RgbaImage>)> {
        self.partial.as_ref()?.frames.get(i)?.as_ref()
    }

    /// Frame `i`'s pixels.
    pub fn image(&self, i: usize) -> Option<&RgbaImage> {
        match self.matted(i) {
            Some((_, img)) => Some(img),
            None => self.clip.anim.frames.get(i).map(|f| &f.image),
        }
    }

    /// The id of frame `i`'s pixels.
    pub fn frame_id(&self, i: usize) -> Option<u64> {
        match self.matted(i) {
            Some((id, _)) => Some(*id),
            None => self.clip.frame_ids.get(i).copied(),
        }
    }

    /// A shared handle on frame `i`'s pixels.
    pub fn pixels(&self, i: usize) -> Option<Pixels> {
        match self.matted(i) {
            Some((_, img)) => Some(Pixels::Image(img.clone())),
            None => (i < self.clip.len()).then(|| Pixels::Frame(self.clip.anim.clone(), i)),
        }
    }
}

/// One sticker of the pack: its source clip, the matte result and per-sticker metadata.
#[derive(Debug, Clone)]
pub struct Sticker {
    pub name: String,
    /// Emoji, space-separated.
    pub emoji: String,
    pub path: Option<PathBuf>,
    pub source: Clip,
    /// The re-matted clip, once a re-matte has finished.
    pub result: Option<Clip>,
    /// The frames of a re-matte still running, shown over [`Sticker::current`].
    pub partial: Option<Arc<Partial>>,
    /// Frames `[trim_in, trim_out]` (inclusive) are exported.
    pub trim_in: usize,
    pub trim_out: usize,
    /// Per-frame flicker of the shown clip's alpha (None until computed).
    pub flicker: Option<(u64, Vec<f64>)>,
    /// The background plate the last re-matte assumed (RGB, confidence as alpha); None for
    /// models that key against the border colour.
    pub plate: Option<Clip>,
    /// How this sticker fits a platform's time limit; `None`: the export panel's setting.
    pub time: Option<crate::media::presets::TimeFit>,
}

impl Sticker {
    pub fn new(name: String, path: Option<PathBuf>, anim: Animation) -> Sticker {
        let n = anim.len();
        Sticker {
            name,
            emoji: String::new(),
            path,
            source: Clip::new(anim),
            result: None,
            partial: None,
            trim_in: 0,
            trim_out: n.saturating_sub(1),
            flicker: None,
            plate: None,
            time: None,
        }
    }

    /// What is exported and previewed as "the sticker": the result when there is one.
    pub fn current(&self) -> &Clip {
        self.result.as_ref().unwrap_or(&self.source)
    }

    /// What the preview, timeline and pack show: [`Sticker::current`] with the frames of a
    /// running re-matte over it.
    pub fn shown(&self) -> Shown {
        let mut shown = Shown::of(self.current());
        if let Some(p) = &self.partial {
            shown.id = p.id;
            shown.partial = Some(p.clone());
        }
        shown
    }

    pub fn len(&self) -> usize {
        self.source.anim.len()
    }

    pub fn is_empty(&self) -> bool {
        self.source.anim.is_empty()
    }

    /// The trimmed clip that export writes.
    pub fn trimmed(&self) -> crate::Result<Animation> {
        let a = &self.current().anim;
        let hi = self.trim_out.min(a.len().saturating_sub(1));
        let lo = self.trim_in.min(hi);
        if lo == 0 && hi + 1 == a.len() {
            return Ok((**a).clone());
        }
        Animation::new(a.width, a.height, a.frames[lo..=hi].to_vec(), a.loops)
    }
}

/// Severity of a notification.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Level {
    Info,
    Warning,
    Error,
}

#[derive(Debug, Clone)]
pub struct Note {
    pub level: Level,
    pub text: String,
    pub at: Instant,
}

/// Which job kind a tracked job is (for the panels).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum JobKind {
    Import,
    Model,
    Matte,
    Generate,
    Flicker,
    Export,
    Pack,
}

/// A job the UI is waiting on.
#[derive(Debug, Clone)]
pub struct Running {
    pub id: JobId,
    pub kind: JobKind,
    /// Which sticker it belongs to (index may shift; matched by clip id).
    pub clip_id: Option<u64>,
    pub stage: String,
    pub done: u64,
    pub total: u64,
    pub started: Instant,
    /// When `done` last moved from 0 (for the ETA).
    pub first_progress: Option<(Instant, u64)>,
    pub cancelling: bool,
}

impl Running {
    /// Seconds left, from the rate since the first progress report.
    pub fn eta(&self) -> Option<Duration> {
        let (t0, d0) = self.first_progress?;
        let elapsed = t0.elapsed().as_secs_f64();
        let done = self.done.saturating_sub(d0);
        if done == 0 || self.total <= self.done || elapsed <= 0.0 {
            return None;
        }
        let rate = done as f64 / elapsed;
        Some(Duration::from_secs_f64(
            (self.total - self.done) as f64 / rate,
        ))
    }
}

/// Playback of the current sticker.
#[derive(Debug, Clone)]
pub struct Playback {
    pub frame: usize,
    pub playing: bool,
    pub looping: bool,
    /// Seconds already spent on the current frame.
    pub into_frame: f64,
}

impl Default for Playback {
    fn default() -> Self {
        Self {
            frame: 0,
            playing: false,
            looping: true,
            into_frame: 0.0,
        }
    }
}

/// Export results kept for the export panel.
#[derive(Debug, Clone, Default)]
pub struct ExportState {
    /// File name (without folder) of single-sticker exports; empty = the sticker's name.
    pub file_name: String,
    pub last_report: Option<ExportReport>,
    pub read_back: Option<Clip>,
    pub pack_report: Option<PackReport>,
    /// Show the decoded-back file in the preview instead of the sticker.
    pub show_read_back: bool,
}

/// Model status for the job panel.
#[derive(Debug, Clone, PartialEq)]
pub enum ModelStatus {
    Unchecked,
    Checking,
    Ready(String),
    Failed(String),
}

/// The stickers being made: what a save would keep.
pub struct Document {
    pub stickers: Vec<Sticker>,
    pub selected: usize,
    /// Export and pack results for the export panel.
    pub export: ExportState,
}

/// The background work: the workers, the jobs in flight and the model check.
pub struct JobBook {
    pub workers: Workers,
    pub jobs: Vec<Running>,
    pub model_status: ModelStatus,
}

/// What only the screen needs: playback, zoom and pan, and the text of the input fields.
pub struct View {
    pub playback: Playback,
    /// Preview zoom (1 = fit) and pan in points.
    pub zoom: f32,
    pub pan: [f32; 2],
    /// Screen rectangle `[x0, y0, x1, y1]` of the timeline's scrub strip in the last frame
    /// (UI tests drag across it).
    pub timeline_rect: Option<[f32; 4]>,
    /// Text of the job panel's model path field.
    pub model_path_text: String,
    /// Text of the import path field (the dialog's fallback).
    pub open_path_text: String,
    /// Prompt of a generate job.
    pub prompt: String,
    pub generate_mode: bool,
    /// Prompt-mode settings (weights, steps, seed, ...) and unknown-word feedback.
    pub generate: crate::app::panels::job::GenerateForm,
}

/// Everything the studio knows while it runs, in three parts that change for different
/// reasons (the document, the jobs, the view) beside the settings and the notes.
pub struct Studio {
    pub settings: Settings,
    pub store: SettingsStore,
    pub doc: Document,
    pub work: JobBook,
    pub view: View,
    pub notes: Vec<Note>,
    pub limits: Limits,
    last_settings_check: Instant,
}

/// How long info notes stay on screen.
pub const NOTE_SECS: f64 = 8.0;

impl Studio {
    /// A studio with settings from `config_dir` (None: nothing persisted) and its workers.
    pub fn new(config_dir: Option<&Path>, waker: Waker) -> std::io::Result<Studio> {
        let (store, settings, warning) = SettingsStore::load(config_dir);
        let model_path_text = match &settings.job.model {
            ModelChoice::File(p) => p.display().to_string(),
            ModelChoice::Default => String::new(),
        };
        let mut s = Studio {
            settings,
            store,
            doc: Document {
                stickers: Vec::new(),
                selected: 0,
                export: ExportState::default(),
            },
            work: JobBook {
                workers: Workers::spawn(waker)?,
                jobs: Vec::new(),
                model_status: ModelStatus::Unchecked,
            },
            view: View {
                playback: Playback::default(),
                zoom: 1.0,
                pan: [0.0, 0.0],
                timeline_rect: None,
                model_path_text,
                open_path_text: String::new(),
                prompt: String::new(),
                generate_mode: false,
                generate: Default::default(),
            },
            notes: Vec::new(),
            limits: Limits::default(),
            last_settings_check: Instant::now(),
        };
        if let Some(w) = warning {
            s.notify(Level::Warning, w);
        }
        Ok(s)
    }

    pub fn notify(&mut self, level: Level, text: impl Into<String>) {
        self.notes.push(Note {
            level,
            text: text.into(),
            at: Instant::now(),
        });
        if self.notes.len() > 50 {
            self.notes.remove(0);
        }
    }

    pub fn current(&self) -> Option<&Sticker> {
        self.doc.stickers.get(self.doc.selected)
    }

    pub fn current_mut(&mut self) -> Option<&mut Sticker> {
        self.doc.stickers.get_mut(self.doc.selected)
    }

    /// Opens files: the one path used by drag-and-drop, the open dialog, the path field, the
    /// recent list and the command line. Decoding runs on the I/O worker.
    pub fn import_paths(&mut self, paths: impl IntoIterator<Item = PathBuf>) {
        for path in paths {
            let id = self.work.workers.next_id();
            self.work.jobs.push(Running::new(id, JobKind::Import, None));
            self.work.workers.submit(Job::Import {
                id,
                path,
                limits: self.limits,
            });
        }
    }

    /// Selects sticker `i` and rewinds playback.
    pub fn select(&mut self, i: usize) {
        if i < self.doc.stickers.len() {
            self.doc.selected = i;
            self.view.playback = Playback {
                looping: self.view.playback.looping,
                ..Playback::default()
            };
            self.doc.export.read_back = None;
            self.doc.export.show_read_back = false;
            self.request_flicker();
        }
    }

    pub fn remove(&mut self, i: usize) {
        if i < self.doc.stickers.len() {
            self.doc.stickers.remove(i);
            if self.doc.selected >= self.doc.stickers.len() {
                self.doc.selected = self.doc.stickers.len().saturating_sub(1);
            }
            self.view.playback.frame = 0;
        }
    }

    /// Moves sticker `i` by `delta` places (reorder).
    pub fn move_sticker(&mut self, i: usize, delta: isize) {
        let j = i as isize + delta;
        if i < self.doc.stickers.len() && j >= 0 && (j as usize) < self.doc.stickers.len() {
            self.doc.stickers.swap(i, j as usize);
            if self.doc.selected == i {
                self.doc.selected = j as usize;
            } else if self.doc.selected == j as usize {
                self.doc.selected = i;
            }
        }
    }

    pub fn running(&self, kind: JobKind) -> Option<&Running> {
        self.work.jobs.iter().find(|j| j.kind == kind)
    }

    /// Starts a re-matte of the current sticker (or a generate job in prompt mode).
    pub fn run_job(&mut self) {
        if self.view.generate_mode {
            if self.running(JobKind::Generate).is_some() {
                self.notify(Level::Info, "a generate job is already running");
                return;
            }
            let id = self.work.workers.next_id();
            self.work
                .jobs
                .push(Running::new(id, JobKind::Generate, None));
            self.view.generate.unknown.clear();
            self.work.workers.submit(Job::Generate {
                id,
                job: Box::new(self.view.generate.job_for(&self.view.prompt)),
            });
            return;
        }
        if self.running(JobKind::Matte).is_some() {
            self.notify(Level::Info, "a re-matte job is already running");
            return;
        }
        let Some(st) = self.current() else {
            self.notify(Level::Warning, "import a clip first");
            return;
        };
        let model = match &self.settings.job.model {
            ModelChoice::Default => match default_model() {
                Some(_) => None,
                None => {
                    self.work.model_status = ModelStatus::Failed(NO_DEFAULT_MODEL.into());
                    self.notify(Level::Error, NO_DEFAULT_MODEL);
                    return;
                }
            },
            ModelChoice::File(p) => Some(p.clone()),
        };
        let request = MatteRequest {
            clip: st.source.anim.clone(),
            model,
            options: MatteOptions {
                window: self.settings.job.window.max(1),
                quality: self.settings.job.quality,
                plate: Default::default(),
            },
        };
        let clip_id = st.source.id;
        let id = self.work.workers.next_id();
        self.work
            .jobs
            .push(Running::new(id, JobKind::Matte, Some(clip_id)));
        self.work.workers.submit(Job::Matte { id, request });
    }

    /// Cancels every running job of `kind`.
    pub fn cancel(&mut self, kind: JobKind) {
        for j in self.work.jobs.iter_mut().filter(|j| j.kind == kind) {
            j.cancelling = true;
            self.work.workers.cancel(j.id);
        }
    }

    /// Chooses the model: `None` = the installed default. A file is checked on the worker.
    pub fn choose_model(&mut self, path: Option<PathBuf>) {
        match path {
            None => {
                self.settings.job.model = ModelChoice::Default;
                self.work.model_status = match default_model() {
                    Some(p) => ModelStatus::Ready(format!("default model: {}", p.display())),
                    None => ModelStatus::Failed(NO_DEFAULT_MODEL.into()),
                };
            }
            Some(p) => {
                self.view.model_path_text = p.display().to_string();
                self.settings.job.model = ModelChoice::File(p.clone());
                self.work.model_status = ModelStatus::Checking;
                let id = self.work.workers.next_id();
                self.work.jobs.push(Running::new(id, JobKind::Model, None));
                self.work.workers.submit(Job::LoadModel { id, path: p });
            }
        }
    }

    /// Asks the I/O worker for the flicker curve of the current sticker's shown clip.
    pub fn request_flicker(&mut self) {
        let Some(st) = self.current() else { return };
        if st.partial.is_some() {
            return; // the curve of a half-matted clip means nothing; it comes when it ends
        }
        let clip = st.current().clone();
        if st.flicker.as_ref().is_some_and(|f| f.0 == clip.id)
            || self
                .work
                .jobs
                .iter()
                .any(|j| j.kind == JobKind::Flicker && j.clip_id == Some(clip.id))
        {
            return;
        }
        let id = self.work.workers.next_id();
        self.work
            .jobs
            .push(Running::new(id, JobKind::Flicker, Some(clip.id)));
        self.work.workers.submit(Job::Flicker {
            id,
            clip: clip.anim,
        });
    }

    /// The output path of a single-sticker export.
    pub fn export_path(&self) -> Option<PathBuf> {
        let st = self.current()?;
        let dir = self.settings.export.folder.clone()?;
        let stem = if self.doc.export.file_name.trim().is_empty() {
            crate::media::pack::identifier(&st.name)
        } else {
            self.doc.export.file_name.trim().to_string()
        };
        let ext = match self.settings.export.preset {
            Some(p) => p.default_extension().to_string(),
            None => self.settings.export.plain_extension.clone(),
        };
        let name = if Path::new(&stem).extension().is_some() {
            stem
        } else {
            format!("{stem}.{ext}")
        };
        Some(dir.join(name))
    }

    fn fit_options(&self) -> FitOptions {
        FitOptions {
            fit: self.settings.export.fit,
            time: self.settings.export.time,
            ..FitOptions::default()
        }
    }

    /// Exports the current sticker (trimmed) to [`Studio::export_path`].
    pub fn export_current(&mut self) {
        let Some(out) = self.export_path() else {
            self.notify(Level::Warning, "choose an export folder first");
            return;
        };
        let Some(st) = self.current() else {
            self.notify(Level::Warning, "import a clip first");
            return;
        };
        let clip = match st.trimmed() {
            Ok(c) => c,
            Err(e) => {
                self.notify(Level::Error, format!("cannot export: {e}"));
                return;
            }
        };
        let time = st.time;
        let mut options = self.fit_options();
        if let Some(t) = time {
            options.time = t;
        }
        let request = ExportRequest {
            clip: Arc::new(clip),
            preset: self.settings.export.preset,
            out,
            options,
            read_back: self.settings.export.preview_export,
        };
        let id = self.work.workers.next_id();
        self.work.jobs.push(Running::new(id, JobKind::Export, None));
        self.work.workers.submit(Job::Export { id, request });
    }

    /// Exports the whole pack for the chosen preset into the export folder.
    pub fn export_pack(&mut self) {
        let Some(preset) = self.settings.export.preset else {
            self.notify(Level::Warning, "a pack export needs a platform preset");
            return;
        };
        let Some(dir) = self.settings.export.folder.clone() else {
            self.notify(Level::Warning, "choose an export folder first");
            return;
        };
        let mut stickers = Vec::new();
        for st in &self.doc.stickers {
            match st.trimmed() {
                Ok(a) => stickers.push(PackSticker {
                    source: StickerSource::Animation(a),
                    emoji: st.emoji.split_whitespace().map(str::to_string).collect(),
                    name: st.name.clone(),
                    accessibility_text: String::new(),
                    time: st.time,
                }),
                Err(e) => {
                    let msg = format!("cannot export {}: {e}", st.name);
                    self.notify(Level::Error, msg);
                    return;
                }
            }
        }
        let spec = PackSpec {
            name: self.settings.pack_name.clone(),
            author: self.settings.pack_author.clone(),
            stickers,
            tray_icon: None,
            options: self.fit_options(),
            limits: self.limits,
        };
        if let Err(e) = crate::media::pack::validate(&spec, preset) {
            self.notify(Level::Error, format!("the pack cannot be exported: {e}"));
            return;
        }
        let id = self.work.workers.next_id();
        self.work.jobs.push(Running::new(id, JobKind::Pack, None));
        self.work.workers.submit(Job::ExportPack {
            id,
            spec: Box::new(spec),
            preset,
            out_dir: dir,
        });
    }

    /// Handles the events waiting, for at most `budget`; returns how many were handled.
    pub fn drain_events(&mut self, budget: Duration) -> usize {
        let start = Instant::now();
        let mut n = 0;
        while start.elapsed() < budget {
            let Some(e) = self.work.workers.try_recv() else {
                break;
            };
            self.handle(e);
            n += 1;
        }
        n
    }

    /// Applies one worker event to the state.
    pub fn handle(&mut self, event: Event) {
        let id = event.id();
        let Some(pos) = self.work.jobs.iter().position(|j| j.id == id) else {
            return; // a job the UI no longer tracks
        };
        let kind = self.work.jobs[pos].kind;
        let clip_id = self.work.jobs[pos].clip_id;
        if event.is_final() {
            self.work.jobs.remove(pos);
        }
        match event {
            Event::Started { .. } => {}
            Event::Progress {
                stage, done, total, ..
            } => {
                let j = &mut self.work.jobs[pos];
                if j.first_progress.is_none()
                    && done > 0
                    && (stage == crate::pipeline::matte::STAGE
                        || stage == crate::pipeline::generate::STAGE_DENOISE)
                {
                    j.first_progress = Some((Instant::now(), done));
                }
                if j.stage != stage {
                    j.first_progress = None;
                }
                j.stage = stage;
                j.done = done;
                j.total = total;
            }
            Event::Imported { path, clip, .. } => {
                let name = path
                    .file_stem()
                    .map(|s| s.to_string_lossy().into_owned())
                    .unwrap_or_else(|| "sticker".into());
                self.settings.push_recent(&path);
                self.doc
                    .stickers
                    .push(Sticker::new(name, Some(path), *clip));
                let last = self.doc.stickers.len() - 1;
                self.select(last);
            }
            Event::ModelReady { summary, .. } => {
                self.work.model_status = ModelStatus::Ready(summary);
            }
            Event::FramesDone { start, frames, .. } => {
                let clip_id = match (kind, clip_id) {
                    (JobKind::Generate, None) => self.start_generated_sticker(pos, &frames),
                    _ => clip_id,
                };
                if let Some(st) = self.sticker_by_clip(clip_id) {
                    let (n, size) = (st.len(), (st.source.anim.width, st.source.anim.height));
                    let p = Arc::make_mut(st.partial.get_or_insert_with(Default::default));
                    p.frames.resize(n, None);
                    let base = fresh_ids(frames.len());
                    for (k, img) in frames.into_iter().enumerate() {
                        if let Some(slot) = p.frames.get_mut(start + k)
                            && img.dimensions() == size
                        {
                            if slot.is_none() {
                                p.done += 1;
                            }
                            *slot = Some((base + 1 + k as u64, Arc::new(img)));
                        }
                    }
                    p.id = base;
                }
            }
            Event::Matted { clip, plate, .. } => {
                if let Some(st) = self.sticker_by_clip(clip_id) {
                    st.plate = plate.map(|p| Clip::new(*p));
                    // The finished clip is the frames the previews already brought: keep their
                    // ids, so nothing is uploaded again.
                    let partial = st.partial.take();
                    let ids: Option<Arc<[u64]>> = partial
                        .filter(|p| p.done == clip.len() && p.frames.len() == clip.len())
                        .and_then(|p| p.frames.iter().map(|f| f.as_ref().map(|f| f.0)).collect());
                    st.result = Some(match ids {
                        Some(ids) => Clip::with_frame_ids(*clip, ids),
                        None => Clip::new(*clip),
                    });
                    st.flicker = None;
                }
                self.notify(Level::Info, "re-matte finished");
                self.request_flicker();
            }
            Event::Generated {
                prompt,
                clip,
                unknown,
                ..
            } => {
                let anim = *clip;
                match self.sticker_by_clip(clip_id) {
                    Some(st) => {
                        // The clip is the frames the previews brought: keep their ids.
                        let n = anim.len();
                        let ids: Option<Arc<[u64]>> = st
                            .partial
                            .take()
                            .filter(|p| p.done == n && p.frames.len() == n)
                            .and_then(|p| {
                                p.frames.iter().map(|f| f.as_ref().map(|f| f.0)).collect()
                            });
                        st.source = match ids {
                            Some(ids) => Clip::with_frame_ids(anim, ids),
                            None => Clip::new(anim),
                        };
                        st.result = None;
                        st.flicker = None;
                        st.trim_in = 0;
                        st.trim_out = n.saturating_sub(1);
                    }
                    None => {
                        self.doc
                            .stickers
                            .push(Sticker::new(sticker_name(&prompt), None, anim));
                        let last = self.doc.stickers.len() - 1;
                        self.select(last);
                    }
                }
                if unknown.is_empty() {
                    self.notify(Level::Info, "generated");
                } else {
                    self.notify(
                        Level::Warning,
                        format!(
                            "generated; words the model does not know: {}",
                            unknown.join(", ")
                        ),
                    );
                }
                self.view.generate.unknown = unknown;
                self.request_flicker();
            }
            Event::Flicker { scores, .. } => {
                if let Some(cid) = clip_id {
                    for st in &mut self.doc.stickers {
                        if st.current().id == cid {
                            st.flicker = Some((cid, scores.clone()));
                        }
                    }
                }
            }
            Event::Exported {
                report, read_back, ..
            } => {
                let level = if report.passed {
                    Level::Info
                } else {
                    Level::Warning
                };
                let msg = if report.passed {
                    format!(
                        "exported {} ({} bytes)",
                        report.path.display(),
                        report.bytes
                    )
                } else {
                    format!(
                        "exported {}, but it breaks platform rules (see the report)",
                        report.path.display()
                    )
                };
                self.notify(level, msg);
                self.doc.export.read_back = read_back.map(|a| Clip::new(*a));
                self.doc.export.last_report = Some(*report);
            }
            Event::PackExported { report, .. } => {
                let level = if report.complete {
                    Level::Info
                } else {
                    Level::Warning
                };
                self.notify(
                    level,
                    format!(
                        "pack written to {} ({} stickers{})",
                        report.dir.display(),
                        report.stickers.len(),
                        if report.complete {
                            ""
                        } else {
                            ", with problems"
                        }
                    ),
                );
                self.doc.export.pack_report = Some(*report);
            }
            Event::Failed { error, .. } => {
                if kind == JobKind::Model {
                    self.work.model_status = ModelStatus::Failed(error.clone());
                }
                self.drop_partial_generation(kind, clip_id);
                if kind == JobKind::Matte {
                    // A partial result must not pass for a finished one.
                    if let Some(st) = self.sticker_by_clip(clip_id) {
                        st.partial = None;
                    }
                }
                let what = match kind {
                    JobKind::Import => "import failed",
                    JobKind::Model => "model check failed",
                    JobKind::Matte => "re-matte failed",
                    JobKind::Generate => "generate",
                    JobKind::Flicker => "flicker analysis failed",
                    JobKind::Export => "export failed",
                    JobKind::Pack => "pack export failed",
                };
                self.notify(Level::Error, format!("{what}: {error}"));
            }
            Event::Cancelled { .. } => {
                self.drop_partial_generation(kind, clip_id);
                if kind == JobKind::Matte
                    && let Some(st) = self.sticker_by_clip(clip_id)
                {
                    st.partial = None;
                }
                if kind != JobKind::Flicker {
                    self.notify(Level::Info, "cancelled; nothing was written");
                }
            }
        }
    }

    /// A sticker for a generate job's first finished frames: transparent placeholders for the
    /// frames still to come (the job's progress total), selected so the preview shows it.
    fn start_generated_sticker(&mut self, pos: usize, frames: &[image::RgbaImage]) -> Option<u64> {
        let (w, h) = frames.first()?.dimensions();
        let n = (self.work.jobs.get(pos)?.total as usize).max(frames.len());
        let delay = crate::media::Delay::from_ratio(1, 8);
        let blank = crate::media::Frame::new(image::RgbaImage::new(w, h), delay);
        let anim = Animation::new(w, h, vec![blank; n], crate::media::LoopCount::Infinite).ok()?;
        let name = sticker_name(&self.view.prompt);
        self.doc.stickers.push(Sticker::new(name, None, anim));
        let last = self.doc.stickers.len() - 1;
        self.select(last);
        let id = self.doc.stickers[last].source.id;
        self.work.jobs.get_mut(pos)?.clip_id = Some(id);
        Some(id)
    }

    /// Removes the preview sticker of a generate job that failed or was cancelled.
    fn drop_partial_generation(&mut self, kind: JobKind, clip_id: Option<u64>) {
        if kind != JobKind::Generate {
            return;
        }
        if let Some(cid) = clip_id
            && let Some(i) = self.doc.stickers.iter().position(|s| s.source.id == cid)
        {
            self.doc.stickers.remove(i);
            self.doc.selected = self
                .doc
                .selected
                .min(self.doc.stickers.len().saturating_sub(1));
        }
    }

    fn sticker_by_clip(&mut self, clip_id: Option<u64>) -> Option<&mut Sticker> {
        let cid = clip_id?;
        self.doc.stickers.iter_mut().find(|s| s.source.id == cid)
    }

    /// Advances playback by `dt` seconds at the clip's own frame delays; returns how long until
    /// the next frame change (for scheduling a repaint), `None` when not playing.
    pub fn advance(&mut self, dt: f64) -> Option<Duration> {
        let st = self.current()?;
        let anim = st.current().anim.clone();
        let (lo, hi) = (st.trim_in, st.trim_out.min(anim.len().saturating_sub(1)));
        if !self.view.playback.playing || anim.len() < 2 {
            return None;
        }
        let pb = &mut self.view.playback;
        if pb.frame < lo || pb.frame > hi {
            pb.frame = lo;
            pb.into_frame = 0.0;
        }
        pb.into_frame += dt.clamp(0.0, 1.0);
        loop {
            let delay = anim.frames[pb.frame].delay.secs().max(0.01);
            if pb.into_frame < delay {
                return Some(Duration::from_secs_f64(delay - pb.into_frame));
            }
            pb.into_frame -= delay;
            if pb.frame >= hi {
                if pb.looping {
                    pb.frame = lo;
                } else {
                    pb.playing = false;
                    pb.into_frame = 0.0;
                    return None;
                }
            } else {
                pb.frame += 1;
            }
        }
    }

    /// Steps one frame (arrow keys), stopping playback.
    pub fn step_frame(&mut self, delta: isize) {
        let n = self.current().map_or(0, Sticker::len);
        if n == 0 {
            return;
        }
        self.view.playback.playing = false;
        self.view.playback.into_frame = 0.0;
        let f = self.view.playback.frame as isize + delta;
        self.view.playback.frame = f.clamp(0, n as isize - 1) as usize;
    }

    pub fn seek(&mut self, frame: usize) {
        let n = self.current().map_or(0, Sticker::len);
        self.view.playback.frame = frame.min(n.saturating_sub(1));
        self.view.playback.into_frame = 0.0;
    }

    /// Saves settings if they changed, at most once a second (and always when `force`).
    pub fn persist(&mut self, force: bool) {
        if !force && self.last_settings_check.elapsed() < Duration::from_secs(1) {
            return;
        }
        self.last_settings_check = Instant::now();
        if let Err(e) = self.store.save_if_changed(&self.settings) {
            self.notify(Level::Error, format!("cannot save settings: {e}"));
        }
    }

    /// Drops info notes older than [`NOTE_SECS`].
    pub fn expire_notes(&mut self) {
        self.notes
            .retain(|n| n.level != Level::Info || n.at.elapsed().as_secs_f64() < NOTE_SECS);
    }

    /// Whether any job is waiting (the UI keeps repainting to show progress).
    pub fn busy(&self) -> bool {
        !self.work.jobs.is_empty()
    }
}

impl Running {
    pub fn new(id: JobId, kind: JobKind, clip_id: Option<u64>) -> Running {
        Running {
            id,
            kind,
            clip_id,
            stage: "queued".into(),
            done: 0,
            total: 0,
            started: Instant::now(),
            first_progress: None,
            cancelling: false,
        }
    }
}

/// A sticker name from a prompt: its first words.
fn sticker_name(prompt: &str) -> String {
    let words: Vec<&str> = prompt.split_whitespace().take(4).collect();
    if words.is_empty() {
        "generated".into()
    } else {
        words.join(" ")
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::worker::jobs::tests::clip;

    /// A studio with one 4-frame sticker and a matte job `id` running on it.
    fn matting() -> (Studio, JobId) {
        let mut s = Studio::new(None, Arc::new(|| {})).expect("studio");
        s.doc
            .stickers
            .push(Sticker::new("a".into(), None, clip(4, 8, 8)));
        let id = s.work.workers.next_id();
        let cid = s.doc.stickers[0].source.id;
        s.work
            .jobs
            .push(Running::new(id, JobKind::Matte, Some(cid)));
        (s, id)
    }

    fn matted_frame(v: u8) -> RgbaImage {
        RgbaImage::from_pixel(8, 8, image::Rgba([v, v, v, 128]))
    }

    #[test]
    fn previews_move_frames_in_and_the_finished_clip_keeps_their_ids() {
        let (mut s, id) = matting();
        let source_ids = s.doc.stickers[0].source.frame_ids.clone();
        s.handle(Event::FramesDone {
            id,
            start: 1,
            frames: vec![matted_frame(10), matted_frame(20)],
        });
        let st = &s.doc.stickers[0];
        assert!(st.result.is_none(), "a preview is not a result");
        let shown = st.shown();
        assert!(shown.is_partial());
        assert_eq!(
            shown.image(1).expect("frame").get_pixel(0, 0).0,
            [10, 10, 10, 128]
        );
        assert_eq!(
            shown.frame_id(0),
            Some(source_ids[0]),
            "not matted yet: the source"
        );
        assert_ne!(shown.frame_id(1), Some(source_ids[1]));
        let first_id = shown.id;
        s.handle(Event::FramesDone {
            id,
            start: 0,
            frames: vec![matted_frame(0)],
        });
        s.handle(Event::FramesDone {
            id,
            start: 3,
            frames: vec![matted_frame(30)],
        });
        let shown = s.doc.stickers[0].shown();
        assert_ne!(shown.id, first_id, "each update is a new picture");
        let ids: Vec<u64> = (0..4).map(|i| shown.frame_id(i).expect("id")).collect();
        let mut done = clip(4, 8, 8);
        for (i, f) in done.frames.iter_mut().enumerate() {
            f.image = matted_frame(i as u8 * 10);
        }
        let plate = clip(4, 8, 8);
        s.handle(Event::Matted {
            id,
            clip: Box::new(done),
            plate: Some(Box::new(plate.clone())),
        });
        let st = &s.doc.stickers[0];
        // The plate the model assumed is kept for the "Background plate" preview.
        let kept = st.plate.as_ref().expect("plate");
        assert!(
            kept.anim
                .frames
                .iter()
                .zip(&plate.frames)
                .all(|(a, b)| a.image == b.image)
        );
        assert!(st.partial.is_none());
        let result = st.result.as_ref().expect("result");
        assert_eq!(
            &*result.frame_ids,
            ids.as_slice(),
            "textures of the previews stay valid"
        );
        assert_eq!(st.shown().frame_id(2), Some(ids[2]));
    }

    #[test]
    fn a_cancelled_rematte_drops_its_previews_and_keeps_the_earlier_result() {
        let (mut s, id) = matting();
        let earlier = Clip::new(clip(4, 8, 8));
        s.doc.stickers[0].result = Some(earlier.clone());
        s.handle(Event::FramesDone {
            id,
            start: 0,
            frames: vec![matted_frame(5)],
        });
        assert!(s.doc.stickers[0].shown().is_partial());
        s.handle(Event::Cancelled { id });
        let st = &s.doc.stickers[0];
        assert!(st.partial.is_none());
        assert_eq!(st.result.as_ref().map(|r| r.id), Some(earlier.id));
        assert_eq!(st.shown().id, earlier.id);
    }

    /// A studio with a generate job `id` running (no sticker yet) that reported 4 frames.
    fn generating() -> (Studio, JobId) {
        let mut s = Studio::new(None, Arc::new(|| {})).expect("studio");
        s.view.prompt = "a red heart pulsing".into();
        let id = s.work.workers.next_id();
        s.work.jobs.push(Running::new(id, JobKind::Generate, None));
        s.handle(Event::Progress {
            id,
            stage: crate::pipeline::generate::STAGE_MATTE.into(),
            done: 0,
            total: 4,
        });
        (s, id)
    }

    #[test]
    fn generated_frames_make_a_sticker_that_the_finished_clip_completes() {
        let (mut s, id) = generating();
        assert!(s.doc.stickers.is_empty());
        s.handle(Event::FramesDone {
            id,
            start: 0,
            frames: vec![matted_frame(10), matted_frame(20)],
        });
        assert_eq!(s.doc.stickers.len(), 1, "the first frames make the sticker");
        let st = &s.doc.stickers[0];
        assert_eq!(st.name, "a red heart pulsing");
        assert_eq!(st.len(), 4);
        assert!(st.shown().is_partial());
        s.handle(Event::FramesDone {
            id,
            start: 2,
            frames: vec![matted_frame(30), matted_frame(40)],
        });
        let ids: Vec<u64> = (0..4)
            .map(|i| s.doc.stickers[0].shown().frame_id(i).expect("id"))
            .collect();
        let mut done = clip(4, 8, 8);
        for (i, f) in done.frames.iter_mut().enumerate() {
            f.image = matted_frame(10 + i as u8 * 10);
        }
        s.handle(Event::Generated {
            id,
            prompt: s.view.prompt.clone(),
            clip: Box::new(done),
            unknown: vec!["pulsing".into()],
        });
        assert_eq!(s.doc.stickers.len(), 1);
        let st = &s.doc.stickers[0];
        assert!(st.partial.is_none());
        assert_eq!(
            &*st.source.frame_ids,
            ids.as_slice(),
            "previews' textures stay valid"
        );
        assert_eq!(s.view.generate.unknown, ["pulsing"]);
        assert!(s.notes.iter().any(|n| n.text.contains("pulsing")));
        assert!(s.running(JobKind::Generate).is_none());
    }

    #[test]
    fn a_cancelled_generation_removes_its_preview_sticker() {
        let (mut s, id) = generating();
        s.handle(Event::FramesDone {
            id,
            start: 0,
            frames: vec![matted_frame(10)],
        });
        assert_eq!(s.doc.stickers.len(), 1);
        s.handle(Event::Cancelled { id });
        assert!(s.doc.stickers.is_empty());
    }
}

//! ILDiff Studio, the desktop window (eframe/egui).
//!
//! Layout: import bar on top, the pack on the left, job and export panels on the right, the
//! timeline with its flicker curve at the bottom and the preview canvas in the middle. Each
//! panel is its own module with a `ui(&mut self, ui)` method over the shared [`Studio`] state;
//! the work happens on the workers of [`crate::worker`], which know nothing about egui.

pub mod dialogs;
pub mod panels;
pub mod settings;
pub mod state;
pub mod textures;

use std::path::PathBuf;
use std::sync::Arc;
use std::time::{Duration, Instant};

use eframe::egui;

use self::dialogs::{Dialogs, Picked};
use self::settings::{LayoutSettings, PreviewMode};
use self::state::{Level, Studio};
use self::textures::TextureCache;

/// Time the UI spends on worker events per frame; the rest waits for the next frame.
pub const EVENT_BUDGET: Duration = Duration::from_millis(4);

/// How the studio is started.
#[derive(Debug, Clone, Default)]
pub struct StudioOptions {
    /// Settings folder; `None` = [`settings::default_dir`].
    pub config_dir: Option<PathBuf>,
    /// Clips to import at start.
    pub files: Vec<PathBuf>,
    /// Save a screenshot of the window here once the clips are loaded, then quit.
    pub screenshot: Option<PathBuf>,
    /// Preview mode to start in (overrides the saved one).
    pub view: Option<PreviewMode>,
    /// Start with the flicker heatmap on.
    pub heatmap: bool,
}

/// Screenshot progress (`--screenshot`).
enum Shot {
    Waiting { path: PathBuf, since: Instant },
    Requested,
    Done,
}

/// The eframe application: state plus caches; logic lives in [`Studio`] and the panels.
pub struct StudioApp {
    pub studio: Studio,
    pub textures: TextureCache,
    pub dialogs: Dialogs,
    shot: Option<Shot>,
    shot_result: Arc<std::sync::Mutex<Option<Result<PathBuf, String>>>>,
    last_frame: Option<Instant>,
    /// Wall time of the last `logic` + `ui` calls, for the frame-time figures.
    pub last_frame_time: Duration,
}

impl StudioApp {
    /// The app on context `ctx` (the workers and dialogs wake it with `request_repaint`).
    pub fn new(ctx: &egui::Context, options: StudioOptions) -> std::io::Result<StudioApp> {
        let repaint = ctx.clone();
        let waker: crate::worker::Waker = Arc::new(move || repaint.request_repaint());
        let dir = options.config_dir.clone().or_else(settings::default_dir);
        let mut studio = Studio::new(dir.as_deref(), waker.clone())?;
        if let Some(v) = options.view {
            studio.settings.layout.preview_mode = v;
        }
        if options.heatmap {
            studio.settings.layout.heatmap = true;
        }
        studio.import_paths(options.files);
        Ok(StudioApp {
            studio,
            textures: TextureCache::new(600, waker.clone()),
            dialogs: Dialogs::new(waker),
            shot: options.screenshot.map(|path| Shot::Waiting {
                path,
                since: Instant::now(),
            }),
            shot_result: Arc::default(),
            last_frame: None,
            last_frame_time: Duration::ZERO,
        })
    }

    /// Per-frame work before drawing: worker events (bounded by [`EVENT_BUDGET`]), dropped
    /// files, dialog answers, keyboard shortcuts, playback, settings.
    pub fn logic(&mut self, ctx: &egui::Context) {
        let s = &mut self.studio;
        s.drain_events(EVENT_BUDGET);
        let dropped: Vec<PathBuf> = ctx.input(|i| {
            i.raw
                .dropped_files
                .iter()
                .map(|f| f.path().to_path_buf())
                .filter(|p| !p.as_os_str().is_empty())
                .collect()
        });
        if !dropped.is_empty() {
            s.import_paths(dropped);
        }
        if let Some(p) = self.dialogs.poll() {
            match p {
                Picked::Clips(paths) => s.import_paths(paths),
                Picked::Model(path) => s.choose_model(Some(path)),
                Picked::ExportFolder(dir) => s.settings.export.folder = Some(dir),
                Picked::Nothing => s.notify(
                    Level::Info,
                    "no file chosen (if no dialog appeared, type the path in the field)",
                ),
            }
        }
        if !ctx.egui_wants_keyboard_input() {
            let (space, left, right) = ctx.input(|i| {
                (
                    i.key_pressed(egui::Key::Space),
                    i.key_pressed(egui::Key::ArrowLeft),
                    i.key_pressed(egui::Key::ArrowRight),
                )
            });
            if space {
                s.view.playback.playing = !s.view.playback.playing;
            }
            if left {
                s.step_frame(-1);
            }
            if right {
                s.step_frame(1);
            }
        }
        let now = Instant::now();
        let dt = self
            .last_frame
            .map_or(0.0, |t| now.duration_since(t).as_secs_f64());
        self.last_frame = Some(now);
        if let Some(wait) = s.advance(dt) {
            ctx.request_repaint_after(wait);
        }
        if s.busy() {
            // Progress bars and ETA tick even between worker events.
            ctx.request_repaint_after(Duration::from_millis(250));
        }
        if let Some(r) = ctx.input(|i| i.viewport().inner_rect) {
            s.settings.layout.window_size = Some([r.width().round(), r.height().round()]);
        }
        s.expire_notes();
        s.persist(false);
        self.screenshot_logic(ctx);
    }

    fn screenshot_logic(&mut self, ctx: &egui::Context) {
        let ready = self.studio.running(state::JobKind::Import).is_none();
        match &self.shot {
            Some(Shot::Waiting { path, since }) => {
                // Wait for imports (and a few frames for layout); give up waiting after 20 s.
                let settled = ready && since.elapsed() > Duration::from_millis(1500);
                if settled || since.elapsed() > Duration::from_secs(20) {
                    let path = path.clone();
                    let slot = self.shot_result.clone();
                    let waker = ctx.clone();
                    ctx.request_screenshot(move |img| {
                        let r = save_color_image(&img, &path).map(|()| path);
                        if let Ok(mut s) = slot.lock() {
                            *s = Some(r);
                        }
                        waker.request_repaint();
                    });
                    self.shot = Some(Shot::Requested);
                }
                ctx.request_repaint_after(Duration::from_millis(100));
            }
            Some(Shot::Requested) => {
                let done = self.shot_result.lock().ok().and_then(|mut s| s.take());
                match done {
                    Some(Ok(p)) => {
                        println!("screenshot saved: {}", p.display());
                        self.shot = Some(Shot::Done);
                        ctx.send_viewport_cmd(egui::ViewportCommand::Close);
                    }
                    Some(Err(e)) => {
                        eprintln!("error: screenshot failed: {e}");
                        self.shot = Some(Shot::Done);
                        ctx.send_viewport_cmd(egui::ViewportCommand::Close);
                    }
                    None => ctx.request_repaint_after(Duration::from_millis(50)),
                }
            }
            Some(Shot::Done) | None => {}
        }
    }

    /// Draws the window.
    pub fn show(&mut self, ui: &mut egui::Ui) {
        let started = Instant::now();
        self.textures.begin_frame(ui.ctx());
        let (studio, textures, dialogs) = (&mut self.studio, &mut self.textures, &mut self.dialogs);
        egui::Panel::top("import").show(ui, |ui| {
            panels::import::ImportPanel {
                studio: &mut *studio,
                dialogs: &mut *dialogs,
            }
            .ui(ui)
        });
        let layout = &studio.settings.layout;
        let pack_width = LayoutSettings::panel_width(layout.pack_width, settings::PACK_WIDTH);
        let side_width = LayoutSettings::panel_width(layout.side_width, settings::SIDE_WIDTH);
        if studio.settings.layout.show_pack {
            let shown = egui::Panel::left("pack")
                .resizable(true)
                .default_size(pack_width)
                .size_range(settings::PANEL_WIDTHS)
                .show(ui, |ui| {
                    panels::pack::PackPanel {
                        studio: &mut *studio,
                        textures: &mut *textures,
                        dialogs: &mut *dialogs,
                    }
                    .ui(ui)
                });
            // Remembered for the next start (egui keeps it within this run).
            studio.settings.layout.pack_width = shown.response.rect.width().round();
        }
        if studio.settings.layout.show_side {
            let shown = egui::Panel::right("side")
                .resizable(true)
                .default_size(side_width)
                .size_range(settings::PANEL_WIDTHS)
                .show(ui, |ui| {
                    egui::ScrollArea::vertical().show(ui, |ui| {
                        panels::job::JobPanel {
                            studio: &mut *studio,
                            dialogs: &mut *dialogs,
                        }
                        .ui(ui);
                        ui.separator();
                        panels::export::ExportPanel {
                            studio: &mut *studio,
                            dialogs: &mut *dialogs,
                        }
                        .ui(ui);
                    });
                });
            studio.settings.layout.side_width = shown.response.rect.width().round();
        }
        egui::Panel::bottom("timeline")
            .resizable(false)
            .show(ui, |ui| {
                panels::timeline::TimelinePanel {
                    studio: &mut *studio,
                    textures: &mut *textures,
                }
                .ui(ui)
            });
        egui::CentralPanel::default().show(ui, |ui| {
            panels::preview::PreviewPanel {
                studio: &mut *studio,
                textures: &mut *textures,
            }
            .ui(ui)
        });
        panels::notes::NotesPanel {
            studio: &mut *studio,
        }
        .ui(ui);
        self.last_frame_time = started.elapsed();
    }
}

impl eframe::App for StudioApp {
    fn logic(&mut self, ctx: &egui::Context, _frame: &mut eframe::Frame) {
        StudioApp::logic(self, ctx);
    }

    fn ui(&mut self, ui: &mut egui::Ui, _frame: &mut eframe::Frame) {
        self.show(ui);
    }

    fn on_exit(&mut self, _gl: Option<&eframe::glow::Context>) {
        self.studio.persist(true);
    }
}

impl Drop for StudioApp {
    fn drop(&mut self) {
        self.studio.persist(true);
    }
}

fn save_color_image(img: &egui::ColorImage, path: &std::path::Path) -> Result<(), String> {
    let [w, h] = img.size;
    let mut rgba = Vec::with_capacity(w * h * 4);
    for p in &img.pixels {
        rgba.extend_from_slice(&p.to_srgba_unmultiplied());
    }
    let buf = image::RgbaImage::from_raw(w as u32, h as u32, rgba)
        .ok_or_else(|| "screenshot has the wrong size".to_string())?;
    buf.save_with_format(path, image::ImageFormat::Png)
        .map_err(|e| format!("{}: {e}", path.display()))
}

/// The application icon (the same PNG the Debian package installs).
fn icon() -> Option<egui::IconData> {
    let bytes = include_bytes!("../../packaging/ildiff-studio.png");
    let img = image::load_from_memory_with_format(bytes, image::ImageFormat::Png).ok()?;
    let rgba = img.to_rgba8();
    Some(egui::IconData {
        width: rgba.width(),
        height: rgba.height(),
        rgba: rgba.into_raw(),
    })
}

/// Opens the studio window and runs until it is closed.
pub fn run(options: StudioOptions) -> anyhow::Result<()> {
    let dir = options.config_dir.clone().or_else(settings::default_dir);
    let (_, saved, _) = settings::SettingsStore::load(dir.as_deref());
    let size = saved.layout.window_size.unwrap_or([1280.0, 800.0]);
    let mut viewport = egui::ViewportBuilder::default()
        .with_title("ILDiff Studio")
        .with_app_id("ildiff-studio")
        .with_inner_size([size[0].max(640.0), size[1].max(480.0)])
        .with_min_inner_size([640.0, 480.0])
        .with_drag_and_drop(true);
    if let Some(icon) = icon() {
        viewport = viewport.with_icon(Arc::new(icon));
    }
    let native = eframe::NativeOptions {
        viewport,
        ..Default::default()
    };
    eframe::run_native(
        "ILDiff Studio",
        native,
        Box::new(move |cc| {
            let app = StudioApp::new(&cc.egui_ctx, options)?;
            Ok(Box::new(app))
        }),
    )
    .map_err(|e| anyhow::anyhow!("cannot open the studio window: {e}"))
}

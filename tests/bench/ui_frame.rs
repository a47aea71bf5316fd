//! UI frame time while a re-matte job runs: the real `StudioApp` (`logic` and `show`, as
//! eframe calls them: events, panels, texture uploads) on a headless `egui::Context`, plus
//! the tessellation eframe does after each frame, with playback and the flicker heatmap on,
//! while the inference worker mattes a clip with the proposed CPU default model (random
//! weights: only speed is measured). GPU rasterisation is not included (there is no GPU here);
//! it is the same for an idle and a busy studio.
//!
//! `cargo bench --profile test --bench ui_frame [-- SIDE FRAMES]` (default 192 px, 48
//! frames; the figures in the README are `-- 192 48` and `-- 384 96`).

#[path = "../common/mod.rs"]
mod common;

use std::path::PathBuf;
use std::sync::Arc;
use std::time::{Duration, Instant};

use candle_core::{DType, Device};
use candle_nn::{VarBuilder, VarMap};
use eframe::egui;
use ildiff::app::state::JobKind;
use ildiff::app::{StudioApp, StudioOptions};
use ildiff::model::weights::save_ildiff;
use ildiff::model::{IldiffConfig, IldiffDecoder};

#[derive(Debug)]
struct Dropped(PathBuf);

impl egui::DroppedFile for Dropped {
    fn path(&self) -> &std::path::Path {
        &self.0
    }
    fn bytes(&self) -> Result<Vec<u8>, String> {
        std::fs::read(&self.0).map_err(|e| e.to_string())
    }
}

/// The studio driven as eframe drives it: one `egui::Context`, the app's `logic` and `show`
/// each frame, then tessellation of what it drew (eframe's frame minus the GPU calls). No test
/// harness in between: egui_kittest would add an accessibility tree the window never builds.
struct Window {
    ctx: egui::Context,
    app: StudioApp,
    start: Instant,
    input: egui::RawInput,
    /// Bytes of texture data handed to the GPU so far.
    uploaded: usize,
}

impl Window {
    fn new(config: PathBuf) -> Window {
        let ctx = egui::Context::default();
        let app = StudioApp::new(
            &ctx,
            StudioOptions {
                config_dir: Some(config),
                ..StudioOptions::default()
            },
        )
        .expect("app");
        Window {
            ctx,
            app,
            start: Instant::now(),
            input: egui::RawInput::default(),
            uploaded: 0,
        }
    }

    /// One frame (the app, texture uploads, tessellation); returns the primitives drawn.
    fn frame(&mut self) -> usize {
        let mut input = std::mem::take(&mut self.input);
        input.screen_rect = Some(egui::Rect::from_min_size(
            egui::Pos2::ZERO,
            egui::vec2(1280.0, 800.0),
        ));
        input.time = Some(self.start.elapsed().as_secs_f64());
        input.predicted_dt = 1.0 / 60.0;
        let app = &mut self.app;
        let out = self.ctx.run_ui(input, |ui| {
            app.logic(ui.ctx());
            app.show(ui);
        });
        let mut out = out;
        // The driver copies each uploaded image once; so does this.
        for deltas in out.textures_delta.set.values() {
            for delta in deltas {
                let egui::ImageData::Color(img) = &delta.image;
                self.uploaded += img.pixels.len() * 4;
                std::hint::black_box(img.pixels.to_vec());
            }
        }
        out.textures_delta.clear();
        let prims = self.ctx.tessellate(out.shapes, out.pixels_per_point);
        prims.len()
    }
}

struct Stats {
    frames: usize,
    mean: f64,
    p50: f64,
    p95: f64,
    max: f64,
    over_16: usize,
}

fn stats(mut ms: Vec<f64>) -> Stats {
    ms.sort_by(f64::total_cmp);
    let n = ms.len().max(1);
    let at = |q: f64| {
        ms.get(((n - 1) as f64 * q).round() as usize)
            .copied()
            .unwrap_or(0.0)
    };
    Stats {
        frames: ms.len(),
        mean: ms.iter().sum::<f64>() / n as f64,
        p50: at(0.5),
        p95: at(0.95),
        max: ms.last().copied().unwrap_or(0.0),
        over_16: ms.iter().filter(|&&t| t > 16.0).count(),
    }
}

fn print(name: &str, s: &Stats, uploaded_mb: f64) {
    println!(
        "{name:<22} frames {:>5}  mean {:>6.2} ms  p50 {:>6.2}  p95 {:>6.2}  max {:>6.2}  >16 ms: {:>4}  \
         textures {:.1} MB",
        s.frames, s.mean, s.p50, s.p95, s.max, s.over_16, uploaded_mb
    );
}

fn main() {
    let args: Vec<String> = std::env::args()
        .skip(1)
        .filter(|a| !a.starts_with('-'))
        .collect();
    let side: u32 = args.first().and_then(|a| a.parse().ok()).unwrap_or(192);
    let frames: u32 = args.get(1).and_then(|a| a.parse().ok()).unwrap_or(48);
    let dir = tempfile::tempdir().expect("tempdir");
    let clip = common::ffmpeg_clip(
        dir.path(),
        "bench.gif",
        &format!("{side}x{side}"),
        24,
        frames as f32 / 24.0,
        &[],
    );
    let model = dir.path().join("cpu_default.safetensors");
    let cfg = IldiffConfig::cpu_default();
    let varmap = VarMap::new();
    IldiffDecoder::new(
        &cfg,
        VarBuilder::from_varmap(&varmap, DType::F32, &Device::Cpu),
    )
    .expect("build");
    save_ildiff(&varmap, &cfg, &model).expect("save");

    let mut w = Window::new(dir.path().join("config"));
    w.input.dropped_files.push(Arc::new(Dropped(clip)));
    let t = Instant::now();
    while w.app.studio.doc.stickers.is_empty() {
        w.frame();
        std::thread::sleep(Duration::from_millis(5));
        assert!(t.elapsed().as_secs() < 120, "import timed out");
    }
    {
        let s = &mut w.app.studio;
        s.view.playback.playing = true;
        s.settings.layout.heatmap = true;
        s.choose_model(Some(model));
    }
    // Idle (playing, heatmap on), at 60 Hz pacing: the first loop through the clip, when
    // every frame's textures are new.
    let pace = Duration::from_micros(16_667);
    let mut idle = Vec::new();
    let up0 = w.uploaded;
    for _ in 0..120 {
        let t = Instant::now();
        w.frame();
        idle.push(t.elapsed().as_secs_f64() * 1e3);
        std::thread::sleep(pace.saturating_sub(t.elapsed()));
    }
    let idle_mb = (w.uploaded - up0) as f64 / 1e6;
    w.app.studio.run_job();
    let up0 = w.uploaded;
    let mut busy = Vec::new();
    let started = Instant::now();
    let mut last_done = 0;
    loop {
        let t = Instant::now();
        w.frame();
        let dt = t.elapsed();
        let s = &w.app.studio;
        let Some(job) = s.running(JobKind::Matte) else {
            break;
        };
        last_done = job.done;
        busy.push(dt.as_secs_f64() * 1e3);
        std::thread::sleep(pace.saturating_sub(dt));
        assert!(started.elapsed().as_secs() < 600, "job timed out");
    }
    let busy_mb = (w.uploaded - up0) as f64 / 1e6;
    let job_secs = started.elapsed().as_secs_f64();
    let ok = w.app.studio.doc.stickers[0].result.is_some();
    println!(
        "clip {side}x{side}, {frames} frames; cpu_default (random weights); job {job_secs:.1} s, \
         finished: {ok} (last progress {last_done}); {} cores",
        std::thread::available_parallelism().map_or(1, |n| n.get())
    );
    print("idle (playing)", &stats(idle), idle_mb);
    print("while matting", &stats(busy), busy_mb);
}

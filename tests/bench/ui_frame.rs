//! UI frame time while a re-matte job runs: the real `StudioApp` (events, panels, textures,
//! tessellation) stepped headless by egui_kittest, with playback on, while the inference
//! worker mattes a clip with the proposed CPU default model (random weights: only speed is
//! measured). GPU rasterisation is not included (there is no GPU here); it is the same for an
//! idle and a busy studio.
//!
//! `cargo bench --bench ui_frame [-- SIDE FRAMES]` (default 192 px, 48 frames).

#[path = "../common/mod.rs"]
mod common;

use std::sync::Arc;
use std::time::{Duration, Instant};

use candle_core::{DType, Device};
use candle_nn::{VarBuilder, VarMap};
use egui_kittest::Harness;
use ildiff::app::state::JobKind;
use ildiff::app::{StudioApp, StudioOptions};
use ildiff::model::weights::save_ildiff;
use ildiff::model::{IldiffConfig, IldiffDecoder};

#[derive(Debug)]
struct Dropped(std::path::PathBuf);

impl eframe::egui::DroppedFile for Dropped {
    fn path(&self) -> &std::path::Path {
        &self.0
    }
    fn bytes(&self) -> Result<Vec<u8>, String> {
        std::fs::read(&self.0).map_err(|e| e.to_string())
    }
}

type App = Option<StudioApp>;

fn app<'a>(h: &'a mut Harness<'static, App>) -> &'a mut StudioApp {
    h.state_mut().as_mut().expect("app")
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

fn print(name: &str, s: &Stats) {
    println!(
        "{name:<22} frames {:>5}  mean {:>6.2} ms  p50 {:>6.2}  p95 {:>6.2}  max {:>6.2}  >16 ms: {}",
        s.frames, s.mean, s.p50, s.p95, s.max, s.over_16
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

    let mut h = Harness::builder()
        .with_size([1280.0, 800.0])
        .build_ui_state(
            |ui, app: &mut App| {
                if let Some(app) = app {
                    app.logic(ui.ctx());
                    app.show(ui);
                }
            },
            None,
        );
    let studio = StudioApp::new(
        &h.ctx,
        StudioOptions {
            config_dir: Some(dir.path().join("config")),
            ..StudioOptions::default()
        },
    )
    .expect("app");
    *h.state_mut() = Some(studio);
    h.input_mut().dropped_files.push(Arc::new(Dropped(clip)));
    let t = Instant::now();
    while app(&mut h).studio.stickers.is_empty() {
        h.step();
        std::thread::sleep(Duration::from_millis(5));
        assert!(t.elapsed().as_secs() < 120, "import timed out");
    }
    {
        let s = &mut app(&mut h).studio;
        s.playback.playing = true;
        s.settings.layout.heatmap = true;
        s.choose_model(Some(model));
    }
    // Idle (playing, heatmap on), at 60 Hz pacing.
    let pace = Duration::from_micros(16_667);
    let mut idle = Vec::new();
    for _ in 0..120 {
        let t = Instant::now();
        h.step();
        idle.push(t.elapsed().as_secs_f64() * 1e3);
        std::thread::sleep(pace.saturating_sub(t.elapsed()));
    }
    app(&mut h).studio.run_job();
    let mut busy = Vec::new();
    let started = Instant::now();
    let mut last_done = 0;
    loop {
        let t = Instant::now();
        h.step();
        let dt = t.elapsed();
        let s = &app(&mut h).studio;
        let Some(job) = s.running(JobKind::Matte) else {
            break;
        };
        last_done = job.done;
        busy.push(dt.as_secs_f64() * 1e3);
        std::thread::sleep(pace.saturating_sub(dt));
        assert!(started.elapsed().as_secs() < 600, "job timed out");
    }
    let job_secs = started.elapsed().as_secs_f64();
    let ok = app(&mut h).studio.stickers[0].result.is_some();
    println!(
        "clip {side}x{side}, {frames} frames; cpu_default (random weights); job {job_secs:.1} s, \
         finished: {ok} (last progress {last_done}); {} cores",
        std::thread::available_parallelism().map_or(1, |n| n.get())
    );
    print("idle (playing)", &stats(idle));
    print("while matting", &stats(busy));
}

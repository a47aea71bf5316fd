//! The studio window driven headless with egui_kittest: the real `StudioApp` (its `logic` and
//! `show`, as eframe calls them), real workers, a tiny random-weight checkpoint and clips made
//! by ffmpeg. Files are imported through a simulated drop, the path drag-and-drop takes.

mod common;

use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::{Duration, Instant};

use candle_core::{DType, Device};
use candle_nn::{VarBuilder, VarMap};
use egui_kittest::Harness;
use egui_kittest::kittest::Queryable;
use ildiff::app::settings::{PreviewMode, Quality};
use ildiff::app::state::{JobKind, Level, Shown};
use ildiff::app::textures::{Key, View};
use ildiff::app::{StudioApp, StudioOptions};
use ildiff::media::presets::Preset;
use ildiff::model::weights::save_ildiff;
use ildiff::model::{IldiffConfig, IldiffDecoder};

fn write_tiny_model(path: &Path) {
    write_model(path, IldiffConfig::tiny());
}

/// The tiny model keying against the clip's background plate instead of the border colour.
fn write_tiny_plate_model(path: &Path) {
    let mut cfg = IldiffConfig::tiny();
    cfg.decoder.key_prior = Some(ildiff::model::KeyPrior::plate());
    write_model(path, cfg);
}

fn write_model(path: &Path, cfg: IldiffConfig) {
    let varmap = VarMap::new();
    let vb = VarBuilder::from_varmap(&varmap, DType::F32, &Device::Cpu);
    IldiffDecoder::new(&cfg, vb).expect("build");
    save_ildiff(&varmap, &cfg, path).expect("save");
}

/// A dropped file, as the window system hands it to egui.
#[derive(Debug)]
struct Dropped(PathBuf);

impl eframe::egui::DroppedFile for Dropped {
    fn path(&self) -> &Path {
        &self.0
    }
    fn bytes(&self) -> Result<Vec<u8>, String> {
        std::fs::read(&self.0).map_err(|e| e.to_string())
    }
}

type App = Option<StudioApp>;

fn harness(config: &Path) -> Harness<'static, App> {
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
    let app = StudioApp::new(
        &h.ctx,
        StudioOptions {
            config_dir: Some(config.to_path_buf()),
            ..StudioOptions::default()
        },
    )
    .expect("app");
    *h.state_mut() = Some(app);
    h.step();
    h
}

fn app<'a>(h: &'a mut Harness<'static, App>) -> &'a mut StudioApp {
    h.state_mut().as_mut().expect("app")
}

/// Steps until `done` holds (the workers run in real time), failing after `secs`.
fn step_until(
    h: &mut Harness<'static, App>,
    secs: u64,
    what: &str,
    mut done: impl FnMut(&mut StudioApp) -> bool,
) {
    let t = Instant::now();
    loop {
        h.step();
        if done(app(h)) {
            return;
        }
        let notes: Vec<String> = app(h).studio.notes.iter().map(|n| n.text.clone()).collect();
        let jobs: Vec<String> = app(h)
            .studio
            .work
            .jobs
            .iter()
            .map(|j| format!("{:?} {} {}/{}", j.kind, j.stage, j.done, j.total))
            .collect();
        assert!(
            t.elapsed().as_secs() < secs,
            "timed out waiting for {what}; notes: {notes:?}; jobs: {jobs:?}"
        );
        std::thread::sleep(Duration::from_millis(10));
    }
}

fn drop_file(h: &mut Harness<'static, App>, path: &Path) {
    h.input_mut()
        .dropped_files
        .push(Arc::new(Dropped(path.to_path_buf())));
    let before = app(h).studio.doc.stickers.len();
    step_until(h, 60, "the import", |a| {
        a.studio.doc.stickers.len() > before
    });
}

/// Steps until the texture `key` is uploaded (images are made on the prep thread).
fn step_until_texture(h: &mut Harness<'static, App>, key: Key, what: &str) {
    step_until(h, 30, what, |a| a.textures.contains(&key));
}

fn has_error(a: &StudioApp) -> Option<String> {
    a.studio
        .notes
        .iter()
        .find(|n| n.level == Level::Error)
        .map(|n| n.text.clone())
}

#[test]
fn import_scrub_preview_modes_heatmap_and_rematte() {
    let dir = tempfile::tempdir().expect("tempdir");
    let clip = common::ffmpeg_clip(dir.path(), "walk.gif", "48x40", 10, 0.6, &[]);
    let model = dir.path().join("tiny.safetensors");
    write_tiny_model(&model);
    let mut h = harness(&dir.path().join("config"));
    drop_file(&mut h, &clip);
    let n = app(&mut h).studio.doc.stickers[0].len();
    assert_eq!(n, 6);
    assert_eq!(app(&mut h).studio.doc.stickers[0].name, "walk");

    // Per-sticker emoji are drawn as glyphs (egui's bundled emoji font), not as boxes.
    let emoji = "🐱 🎉 👍";
    app(&mut h).studio.doc.stickers[0].emoji = emoji.into();
    h.run_steps(2);
    assert!(
        h.query_all_by_value(emoji).next().is_some(),
        "the emoji field shows {emoji}"
    );
    for c in emoji.chars().filter(|c| !c.is_whitespace()) {
        let font = eframe::egui::FontId::proportional(14.0);
        let drawn = h.ctx.fonts_mut(|f| f.has_glyph(&font, c));
        assert!(drawn, "the fonts have no glyph for {c:?}");
    }

    // Arrow keys step, space plays.
    h.key_press(eframe::egui::Key::ArrowRight);
    h.step();
    assert_eq!(app(&mut h).studio.view.playback.frame, 1);
    h.key_press(eframe::egui::Key::ArrowLeft);
    h.step();
    assert_eq!(app(&mut h).studio.view.playback.frame, 0);
    // Scrub: drag across the thumbnail strip to its right end.
    let [x0, y0, x1, y1] = app(&mut h)
        .studio
        .view
        .timeline_rect
        .expect("timeline drawn");
    let y = (y0 + y1) / 2.0;
    h.drag_at(eframe::egui::pos2(x0 + 2.0, y));
    h.step();
    for k in 1..=10 {
        h.hover_at(eframe::egui::pos2(
            x0 + (x1 - x0 - 4.0) * k as f32 / 10.0,
            y,
        ));
        h.step();
    }
    h.drop_at(eframe::egui::pos2(x1 - 2.0, y));
    h.step();
    assert_eq!(
        app(&mut h).studio.view.playback.frame,
        n - 1,
        "scrubbed to the end"
    );
    h.key_press(eframe::egui::Key::Space);
    h.step();
    assert!(app(&mut h).studio.view.playback.playing);
    h.key_press(eframe::egui::Key::Space);
    h.step();
    assert!(!app(&mut h).studio.view.playback.playing);

    // Every preview mode draws its texture of the current frame.
    let frame = app(&mut h).studio.view.playback.frame;
    let src = Shown::of(&app(&mut h).studio.doc.stickers[0].source);
    for mode in PreviewMode::ALL {
        h.get_by_label(mode.label()).click();
        h.run_steps(2);
        assert_eq!(app(&mut h).studio.settings.layout.preview_mode, mode);
        let view = match mode {
            // No re-matte has run: the plate mode shows the input (and says why).
            PreviewMode::Input | PreviewMode::SideBySide | PreviewMode::Plate => View::Rgb,
            PreviewMode::Alpha => View::Alpha,
            PreviewMode::Checker | PreviewMode::Chat => View::Rgba,
        };
        let key = Key::of(&src, frame, view).expect("frame");
        step_until_texture(&mut h, key, &format!("{mode:?} to draw {key:?}"));
    }
    // The chat background presets.
    h.get_by_label("Chat background").click();
    h.run_steps(2);
    h.get_by_label("Dark chat").click();
    h.run_steps(2);
    assert_eq!(
        app(&mut h).studio.settings.layout.chat_background,
        ildiff::app::settings::CHAT_DARK
    );
    // Heatmap on: the overlay texture of this frame is made.
    h.get_by_label("Flicker heatmap").click();
    h.run_steps(2);
    assert!(app(&mut h).studio.settings.layout.heatmap);
    let heat = Key::of(&src, frame, View::Heat).expect("frame");
    assert_ne!(
        heat.prev, 0,
        "the heatmap of frame {frame} compares it with the one before"
    );
    step_until_texture(&mut h, heat, "the heatmap");
    // A still frame is not uploaded again.
    step_until(&mut h, 30, "the thumbnails", |a| a.textures.pending() == 0);
    let uploads = app(&mut h).textures.uploads;
    h.run_steps(3);
    assert_eq!(app(&mut h).textures.uploads, uploads);
    // The flicker curve arrives from the worker (opaque input: all zero).
    step_until(&mut h, 30, "flicker scores", |a| {
        a.studio.doc.stickers[0].flicker.is_some()
    });

    // Re-matte with the tiny model.
    app(&mut h).studio.choose_model(Some(model.clone()));
    step_until(&mut h, 60, "the model check", |a| {
        matches!(
            a.studio.work.model_status,
            ildiff::app::state::ModelStatus::Ready(_)
        )
    });
    h.get_by_label("Run").click();
    h.step();
    assert!(app(&mut h).studio.running(JobKind::Matte).is_some());
    step_until(&mut h, 120, "the re-matte", |a| {
        a.studio.running(JobKind::Matte).is_none()
    });
    let a = app(&mut h);
    assert_eq!(has_error(a), None);
    let st = &a.studio.doc.stickers[0];
    let result = st.result.as_ref().expect("matte result");
    assert_eq!(result.anim.len(), n);
    assert_eq!(
        (result.anim.width, result.anim.height),
        (st.source.anim.width, st.source.anim.height)
    );
    // The result has real alpha (random weights: anything but all opaque).
    assert!(
        result
            .anim
            .frames
            .iter()
            .any(|f| f.image.pixels().any(|p| p.0[3] < 255))
    );
    // A border-key model assumes no plate.
    assert!(st.plate.is_none());

    // A plate-prior model: its re-matte brings the plate it assumed, and the "Background
    // plate" preview draws it.
    let plate_model = dir.path().join("tiny-plate.safetensors");
    write_tiny_plate_model(&plate_model);
    app(&mut h).studio.choose_model(Some(plate_model));
    step_until(&mut h, 60, "the plate model check", |a| {
        matches!(
            a.studio.work.model_status,
            ildiff::app::state::ModelStatus::Ready(_)
        )
    });
    h.get_by_label("Run").click();
    h.step();
    step_until(&mut h, 120, "the plate re-matte", |a| {
        a.studio.running(JobKind::Matte).is_none()
    });
    assert_eq!(has_error(app(&mut h)), None);
    let plate = app(&mut h).studio.doc.stickers[0]
        .plate
        .clone()
        .expect("the plate-prior re-matte keeps its plate");
    assert_eq!(plate.anim.len(), n);
    h.get_by_label(PreviewMode::Plate.label()).click();
    h.run_steps(2);
    let frame = app(&mut h).studio.view.playback.frame;
    let key = Key::of(&Shown::of(&plate), frame, View::Rgb).expect("plate frame");
    step_until_texture(&mut h, key, "the plate preview");
}

#[test]
fn cancel_keeps_the_ui_responsive_and_writes_nothing() {
    let dir = tempfile::tempdir().expect("tempdir");
    // Enough frames at window 1 that the job runs for a while.
    let clip = common::ffmpeg_clip(dir.path(), "long.gif", "64x64", 25, 4.0, &[]);
    let model = dir.path().join("tiny.safetensors");
    write_tiny_model(&model);
    let out = dir.path().join("out");
    std::fs::create_dir_all(&out).expect("mkdir");
    let mut h = harness(&dir.path().join("config"));
    drop_file(&mut h, &clip);
    {
        let s = &mut app(&mut h).studio;
        s.settings.job.window = 1;
        s.settings.job.quality = Quality::Full;
        s.settings.export.folder = Some(out.clone());
        s.choose_model(Some(model));
    }
    step_until(&mut h, 60, "the model check", |a| {
        matches!(
            a.studio.work.model_status,
            ildiff::app::state::ModelStatus::Ready(_)
        )
    });
    h.run_steps(2); // the layout settles before clicking
    h.get_by_label("Run").click();
    h.step();
    assert!(app(&mut h).studio.running(JobKind::Matte).is_some());
    step_until(&mut h, 60, "matte progress", |a| {
        a.studio
            .running(JobKind::Matte)
            .is_some_and(|r| r.stage == "matte" && r.done > 0)
    });
    // Frames keep coming while the job runs.
    let mut worst = Duration::ZERO;
    for _ in 0..10 {
        let t = Instant::now();
        h.step();
        worst = worst.max(t.elapsed());
    }
    h.get_by_label("Cancel").click();
    let t = Instant::now();
    step_until(&mut h, 30, "the cancel", |a| {
        a.studio.running(JobKind::Matte).is_none()
    });
    let cancel_latency = t.elapsed();
    let a = app(&mut h);
    assert!(
        a.studio.doc.stickers[0].result.is_none(),
        "no partial result kept"
    );
    assert!(
        a.studio.notes.iter().any(|n| n.text.contains("cancelled")),
        "the user is told"
    );
    assert_eq!(
        common::entries(&out),
        Vec::<String>::new(),
        "nothing written"
    );
    assert!(
        worst < Duration::from_millis(250),
        "a frame took {worst:?} while the job ran"
    );
    assert!(
        cancel_latency < Duration::from_secs(20),
        "{cancel_latency:?}"
    );
}

#[test]
fn export_with_a_preset_then_settings_survive_a_restart() {
    let dir = tempfile::tempdir().expect("tempdir");
    let clip = common::ffmpeg_clip(dir.path(), "wave.gif", "48x40", 10, 0.6, &[]);
    let out = dir.path().join("out");
    std::fs::create_dir_all(&out).expect("mkdir");
    let config = dir.path().join("config");
    let saved_layout;
    {
        let mut h = harness(&config);
        drop_file(&mut h, &clip);
        {
            let s = &mut app(&mut h).studio;
            s.settings.export.preset = Some(Preset::Discord);
            s.settings.export.folder = Some(out.clone());
            s.settings.export.preview_export = true;
        }
        h.get_by_label("Alpha").click();
        h.run_steps(2);
        h.get_by_label("Export sticker").click();
        h.step();
        assert!(app(&mut h).studio.running(JobKind::Export).is_some());
        h.step();
        step_until(&mut h, 120, "the export", |a| {
            a.studio.running(JobKind::Export).is_none()
        });
        let a = app(&mut h);
        assert_eq!(has_error(a), None);
        let report = a.studio.doc.export.last_report.clone().expect("report");
        assert!(report.passed, "{report}");
        assert_eq!(report.path, out.join("wave.png"));
        let back = ildiff::media::decode::open(&report.path, &Default::default()).expect("decode");
        assert_eq!((back.width, back.height), (report.width, report.height));
        assert!(back.width <= 320 && back.height <= 320, "Discord's canvas");
        let rb = a.studio.doc.export.read_back.clone().expect("decoded back");
        assert_eq!(rb.anim.len(), back.len());
        // The decoded file can be shown in the preview.
        a.studio.doc.export.show_read_back = true;
        let key = Key::of(&Shown::of(&rb), 0, View::Alpha).expect("frame");
        step_until_texture(&mut h, key, "the exported file's preview");
        // The panels as the user left them: wider than their defaults (egui reports the
        // widths after each frame; the last ones are saved when the window closes).
        h.run_steps(2);
        let layout = &mut app(&mut h).studio.settings.layout;
        assert!(
            layout.pack_width > 0.0 && layout.side_width > 0.0,
            "{layout:?}"
        );
        h.get_by_label("Jobs & export").click();
        h.run_steps(2);
        let layout = &mut app(&mut h).studio.settings.layout;
        assert!(!layout.show_side);
        (layout.pack_width, layout.side_width) = (340.0, 420.0);
        saved_layout = layout.clone();
        // Leaving the harness drops the app, which saves the settings.
    }
    let mut h = harness(&config);
    let s = &app(&mut h).studio;
    assert_eq!(s.settings.export.preset, Some(Preset::Discord));
    assert_eq!(s.settings.export.folder.as_deref(), Some(out.as_path()));
    assert_eq!(s.settings.layout.preview_mode, PreviewMode::Alpha);
    assert_eq!(s.settings.recent_files.first(), Some(&clip));
    // The window layout: panel widths as drawn in the new window, the hidden panel hidden.
    let saved = saved_layout;
    let layout = &s.settings.layout;
    assert!(!layout.show_side);
    assert!(
        (layout.pack_width - saved.pack_width).abs() <= 1.0,
        "pack panel drawn {} wide, saved {}",
        layout.pack_width,
        saved.pack_width
    );
    assert_eq!(layout.side_width, saved.side_width);
    h.get_by_label("Jobs & export").click();
    h.run_steps(2);
    let side = app(&mut h).studio.settings.layout.side_width;
    assert!(
        (side - saved.side_width).abs() <= 1.0,
        "{side} vs {}",
        saved.side_width
    );
}

#[test]
fn errors_are_notes_not_crashes() {
    let dir = tempfile::tempdir().expect("tempdir");
    let mut h = harness(&dir.path().join("config"));
    // A file that is not a clip.
    let bad = dir.path().join("notes.gif");
    std::fs::write(&bad, "hello").expect("write");
    h.input_mut().dropped_files.push(Arc::new(Dropped(bad)));
    step_until(&mut h, 30, "the import error", |a| has_error(a).is_some());
    let e = has_error(app(&mut h)).expect("error");
    assert!(e.contains("notes.gif"), "{e}");
    // A model file that is not a checkpoint.
    let m = dir.path().join("junk.safetensors");
    std::fs::write(&m, "junk").expect("write");
    app(&mut h).studio.notes.clear();
    app(&mut h).studio.choose_model(Some(m));
    step_until(&mut h, 30, "the model error", |a| has_error(a).is_some());
    assert!(matches!(
        app(&mut h).studio.work.model_status,
        ildiff::app::state::ModelStatus::Failed(_)
    ));
    // Generate from a prompt without weights: no default generator installed, said clearly.
    app(&mut h).studio.notes.clear();
    h.get_by_label("Generate from a prompt").click();
    h.run_steps(2);
    if ildiff::pipeline::generate::default_vocabulary()
        .expect("readable")
        .is_none()
    {
        h.get_by_label("Run").click();
        step_until(&mut h, 30, "the generate answer", |a| {
            has_error(a).is_some()
        });
        let e = has_error(app(&mut h)).expect("error");
        assert!(e.contains("no default generator is installed"), "{e}");
    }
    // No default model installed: the user is told, nothing runs untrained.
    let clip = common::ffmpeg_clip(dir.path(), "c.gif", "32x32", 10, 0.3, &[]);
    drop_file(&mut h, &clip);
    app(&mut h).studio.notes.clear();
    app(&mut h).studio.view.generate_mode = false;
    app(&mut h).studio.choose_model(None);
    if ildiff::pipeline::models::default_model().is_none() {
        app(&mut h).studio.run_job();
        let e = has_error(app(&mut h)).expect("error");
        assert!(e.contains("no trained default model is installed"), "{e}");
        assert!(app(&mut h).studio.running(JobKind::Matte).is_none());
    }
}

#[test]
fn the_built_in_vocabulary_is_listed_and_words_go_into_the_prompt() {
    let dir = tempfile::tempdir().expect("tempdir");
    let mut h = harness(&dir.path().join("config"));
    // The groups as the installed generator's header would give them.
    app(&mut h).studio.view.generate.vocabulary = Some(Ok(Some(vec![
        (
            "subjects".to_string(),
            vec!["heart".to_string(), "cat".to_string()],
        ),
        ("motions".to_string(), vec!["pulsing".to_string()]),
    ])));
    h.get_by_label("Generate from a prompt").click();
    h.run_steps(2);
    h.get_by_label("Words the built-in model knows (3)").click();
    h.run_steps(2);
    h.get_by_label("heart").click();
    h.run_steps(1);
    h.get_by_label("pulsing").click();
    h.run_steps(1);
    assert_eq!(app(&mut h).studio.view.prompt, "heart pulsing");
    // With SD-1.5 weights named the vocabulary is open: the list goes away.
    app(&mut h).studio.view.generate.dir_text = "/some/sd15".into();
    h.run_steps(2);
    assert!(
        h.query_by_label("Words the built-in model knows (3)")
            .is_none()
    );
}

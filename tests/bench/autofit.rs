//! Seconds `ildiff export --preset P` spends fitting a hard clip to each preset: 512², 3 s at
//! 30 fps, a photo-like texture under a soft, slightly noisy alpha (the issue-18 benchmark).
//! Prints, per preset, the time of the search this fitter had before (lossless, then one full
//! encode per bisection step) and of the current one (a size model from two excerpts, corrected
//! by each full encode; two probes at a time), with the chosen setting and size of each. Both
//! use today's encoders (VP9 at cpu-used 4, APNG frames compressed on all cores). Not a test.
//!
//! Run: `cargo bench --bench autofit --profile test` (add `CARGO_PROFILE_TEST_OPT_LEVEL=3` for
//! release-like speed). Environment: `ILDIFF_BENCH_PRESETS` (comma-separated, default all
//! animated presets), `ILDIFF_BENCH_BEFORE=0` to skip the "before" runs.

use std::time::Instant;

use ildiff::media::presets::{FitOptions, Preset, fit_to_preset, set_reference_search};
use ildiff::media::{Animation, Delay, Frame, LoopCount};
use image::{Rgba, RgbaImage};

fn clip() -> Animation {
    let mut s: u64 = 0x9E37_79B9_7F4A_7C15;
    let mut next = move || {
        s ^= s << 13;
        s ^= s >> 7;
        s ^= s << 17;
        s
    };
    let frames = (0..90)
        .map(|i| {
            let t = i as f32 / 90.0;
            let (cx, cy) = (
                180.0 + 150.0 * t,
                256.0 + 40.0 * (t * std::f32::consts::TAU).sin(),
            );
            let img = RgbaImage::from_fn(512, 512, |x, y| {
                let v = next();
                let d = ((x as f32 - cx).powi(2) + (y as f32 - cy).powi(2)).sqrt();
                let soft = ((200.0 - d) / 40.0).clamp(0.0, 1.0);
                let grain = ((v >> 40) & 0x0f) as f32 / 15.0 - 0.5;
                let a = if soft > 0.0 {
                    ((soft + 0.1 * grain) * 255.0).clamp(0.0, 255.0) as u8
                } else {
                    0
                };
                let g = (v & 0x1f) as f32;
                let (xf, yf) = (x as f32 + 40.0 * t, y as f32);
                Rgba([
                    (100.0 + 80.0 * (xf / 37.0).sin() + g) as u8,
                    (110.0 + 70.0 * (yf / 23.0).cos() + g) as u8,
                    (120.0 + 60.0 * ((xf + yf) / 51.0).sin() + g) as u8,
                    a,
                ])
            });
            Frame::new(img, Delay::from_fps(30.0))
        })
        .collect();
    Animation::new(512, 512, frames, LoopCount::Infinite).expect("clip")
}

fn main() {
    let anim = clip();
    let wanted: Vec<Preset> = match std::env::var("ILDIFF_BENCH_PRESETS") {
        Ok(list) => list
            .split(',')
            .map(|p| p.parse().expect("preset name"))
            .collect(),
        Err(_) => vec![
            Preset::WhatsApp,
            Preset::Signal,
            Preset::Discord,
            Preset::Telegram,
            Preset::TelegramEmoji,
            Preset::Line,
        ],
    };
    let before = std::env::var("ILDIFF_BENCH_BEFORE").map_or(true, |v| v != "0");
    let dir = tempfile::tempdir().expect("tempdir");
    println!("clip: 512x512, 90 frames at 30 fps (3 s), soft noisy alpha over texture");
    println!("| preset | before (s) | after (s) | chosen before | chosen after |");
    println!("|---|---|---|---|---|");
    for preset in wanted {
        let out = dir
            .path()
            .join(format!("{}.{}", preset.name(), preset.default_extension()));
        let run = |reference: bool| {
            set_reference_search(reference);
            let t = Instant::now();
            let r = fit_to_preset(
                &anim,
                preset,
                &FitOptions::default(),
                &out,
                &mut ildiff::progress::NoProgress,
            );
            let secs = t.elapsed().as_secs_f64();
            set_reference_search(false);
            match r {
                Ok(r) => (
                    secs,
                    format!("{} ({} B, {} frames)", r.setting, r.bytes, r.frames),
                ),
                Err(e) => (secs, format!("error: {e}")),
            }
        };
        let (tb, cb) = if before {
            run(true)
        } else {
            (f64::NAN, "-".into())
        };
        let (ta, ca) = run(false);
        println!("| {preset} | {tb:.1} | {ta:.1} | {cb} | {ca} |");
    }
}

//! Media benchmark (not a test): import and export time of a 512×512, 90-frame clip per format,
//! and the quality that auto-fit reaches under each platform's size cap.
//! Run: `cargo bench --bench media` (release profile). Prints a table; asserts nothing.

use std::time::Instant;

use ildiff::media::encode::{self, Encoding, GifOptions};
use ildiff::media::presets::{FitOptions, Preset, fit_to_preset};
use ildiff::media::{Animation, Delay, Fit, Frame, Limits, LoopCount, decode};
use image::{Rgba, RgbaImage};

/// A sticker-like test clip: a textured disc with a hole and a soft glow that bounces and spins
/// over transparency, 30 fps.
fn clip(size: u32, frames: usize) -> Animation {
    let s = size as f32;
    let out = (0..frames)
        .map(|t| {
            let ph = t as f32 / frames as f32 * std::f32::consts::TAU;
            let (cx, cy) = (
                s * (0.5 + 0.15 * ph.cos()),
                s * (0.5 + 0.1 * (2.0 * ph).sin()),
            );
            let img = RgbaImage::from_fn(size, size, |x, y| {
                let (dx, dy) = (x as f32 - cx, y as f32 - cy);
                let r = (dx * dx + dy * dy).sqrt() / s;
                let ang = dy.atan2(dx) + ph;
                let ring = (0.3 - r).clamp(0.0, 0.01) / 0.01 * ((r - 0.1).clamp(0.0, 0.01) / 0.01);
                let glow = (0.4 - r).clamp(0.0, 0.1) / 0.1 * 0.4;
                let a = ring.max(glow);
                let stripe = ((ang * 6.0).sin() * 0.5 + 0.5) * 255.0;
                Rgba([
                    stripe as u8,
                    (x * 255 / size) as u8,
                    (255.0 - stripe) as u8,
                    (a * 255.0) as u8,
                ])
            });
            Frame::new(img, Delay::from_ratio(1, 30))
        })
        .collect();
    Animation::new(size, size, out, LoopCount::Infinite).expect("clip")
}

fn alpha_mse_rgb_psnr(a: &Animation, b: &Animation) -> (f64, f64) {
    let (mut se_a, mut se_c, mut n_c, mut n) = (0.0f64, 0.0f64, 0u64, 0u64);
    for (fa, fb) in a.frames.iter().zip(&b.frames) {
        for (p, q) in fa.image.pixels().zip(fb.image.pixels()) {
            let (pa, qa) = (p[3] as f64 / 255.0, q[3] as f64 / 255.0);
            se_a += (pa - qa).powi(2);
            n += 1;
            if p[3] > 0 {
                for c in 0..3 {
                    let d = p[c] as f64 / 255.0 * pa - q[c] as f64 / 255.0 * qa;
                    se_c += d * d;
                }
                n_c += 3;
            }
        }
    }
    let mse_c = se_c / n_c.max(1) as f64;
    (
        se_a / n.max(1) as f64,
        if mse_c > 0.0 {
            10.0 * (1.0 / mse_c).log10()
        } else {
            100.0
        },
    )
}

fn main() {
    let dir = tempfile::tempdir().expect("tempdir");
    let src = clip(512, 90);
    println!(
        "clip: 512x512, 90 frames, 30 fps ({:.0} MB raw)\n",
        src.pixel_bytes() as f64 / 1e6
    );
    println!(
        "{:<22} {:>10} {:>10} {:>10} {:>11} {:>9}",
        "format", "export s", "import s", "bytes", "alpha MSE", "RGB PSNR"
    );
    let cases: Vec<(&str, &str, Encoding)> = vec![
        ("apng lossless", "a.png", Encoding::Apng { palette: None }),
        (
            "apng palette 256",
            "b.png",
            Encoding::Apng { palette: Some(256) },
        ),
        ("webp lossless", "c.webp", Encoding::WebP { quality: None }),
        (
            "webp q80",
            "d.webp",
            Encoding::WebP {
                quality: Some(80.0),
            },
        ),
        ("gif 256", "e.gif", Encoding::Gif(GifOptions::default())),
        ("webm crf 30", "f.webm", Encoding::WebM { crf: 30 }),
        ("png folder", "g", Encoding::PngFolder),
    ];
    for (name, file, enc) in cases {
        let path = dir.path().join(file);
        let t = Instant::now();
        let bytes = match encode::write(&src, &enc, &path) {
            Ok(b) => b,
            Err(e) => {
                println!("{name:<22} export failed: {e}");
                continue;
            }
        };
        let te = t.elapsed().as_secs_f64();
        let t = Instant::now();
        let back = match decode::open(&path, &Limits::default()) {
            Ok(a) => a,
            Err(e) => {
                println!("{name:<22} import failed: {e}");
                continue;
            }
        };
        let ti = t.elapsed().as_secs_f64();
        let (amse, psnr) = alpha_mse_rgb_psnr(&src, &back);
        println!("{name:<22} {te:>10.2} {ti:>10.2} {bytes:>10} {amse:>11.6} {psnr:>9.2}");
    }

    println!(
        "\nauto-fit per preset (same clip; quality measured against the source fitted to the same canvas and frame rate)"
    );
    println!(
        "{:<16} {:>8} {:>10} {:>9} {:>8} {:>20} {:>11} {:>9} {:>8}",
        "preset", "secs", "bytes", "cap", "canvas", "setting", "alpha MSE", "RGB PSNR", "rules"
    );
    for preset in [
        Preset::Telegram,
        Preset::TelegramEmoji,
        Preset::WhatsApp,
        Preset::Line,
        Preset::Discord,
        Preset::Signal,
    ] {
        let out = dir.path().join(format!(
            "fit-{}.{}",
            preset.name(),
            preset.default_extension()
        ));
        let t = Instant::now();
        let report = match fit_to_preset(
            &src,
            preset,
            &FitOptions::default(),
            &out,
            &mut ildiff::NoProgress,
        ) {
            Ok(r) => r,
            Err(e) => {
                println!("{:<16} failed: {e}", preset.name());
                continue;
            }
        };
        let secs = t.elapsed().as_secs_f64();
        let back = decode::open(&out, &Limits::default()).expect("re-read");
        let reference = src
            .fit(back.width, back.height, Fit::Contain)
            .and_then(|a| a.trim(back.duration_secs()).resample_fps(back.fps()))
            .expect("reference");
        let n = reference.len().min(back.len());
        let cut = |a: &Animation| Animation {
            frames: a.frames[..n].to_vec(),
            ..a.clone()
        };
        let (amse, psnr) = alpha_mse_rgb_psnr(&cut(&reference), &cut(&back));
        println!(
            "{:<16} {secs:>8.1} {:>10} {:>9} {:>8} {:>20} {amse:>11.6} {psnr:>9.2} {:>8}",
            preset.name(),
            report.bytes,
            preset.rules().max_bytes,
            format!("{}x{}", report.width, report.height),
            report.setting,
            if report.passed { "pass" } else { "FAIL" }
        );
    }
}

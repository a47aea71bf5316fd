//! End-to-end tests: a generated clip exported with every preset through the real encoders,
//! then checked twice: by the report's own rules, and independently here (the image crate,
//! raw PNG chunks, `ffprobe`), so a bug shared by the fitter and the checker cannot hide.

use std::path::Path;
use std::process::Command;

use image::{Rgba, RgbaImage};

use super::*;
use crate::media::pack::{PackSpec, PackSticker, StickerSource, export_pack};
use crate::media::{Animation, Delay, Frame, Limits, LoopCount, decode};
use crate::progress::NoProgress;

/// 200×150, 20 frames at 20 fps: a soft-edged disc moving across a transparent background and
/// a half-transparent bar, so alpha has opaque, partial and empty areas.
fn moving_shapes(w: u32, h: u32, n: usize) -> Animation {
    let frames = (0..n)
        .map(|i| {
            let t = i as f32 / n as f32;
            let (cx, cy) = (w as f32 * (0.2 + 0.6 * t), h as f32 * 0.5);
            let r = h as f32 * 0.3;
            let img = RgbaImage::from_fn(w, h, |x, y| {
                let d = ((x as f32 - cx).powi(2) + (y as f32 - cy).powi(2)).sqrt();
                if d < r {
                    let a = ((r - d) / 3.0).clamp(0.0, 1.0);
                    Rgba([255, (200.0 * t) as u8, 40, (a * 255.0) as u8])
                } else if y < h / 6 && (x as f32) < w as f32 * (1.0 - t) {
                    Rgba([30, 90, 220, 128])
                } else {
                    Rgba([0, 0, 0, 0])
                }
            });
            Frame::new(img, Delay::from_millis(50))
        })
        .collect();
    Animation::new(w, h, frames, LoopCount::Infinite).expect("clip")
}

/// 512×512, 90 frames at 30 fps of per-pixel noise under a moving alpha mask: close to the
/// worst case for every codec.
fn hard_noise() -> Animation {
    let mut s: u64 = 0x9E37_79B9_7F4A_7C15;
    let mut next = move || {
        s ^= s << 13;
        s ^= s >> 7;
        s ^= s << 17;
        s
    };
    let frames = (0..90)
        .map(|i| {
            let cx = 100.0 + 3.5 * i as f32;
            let img = RgbaImage::from_fn(512, 512, |x, y| {
                let v = next();
                let d = ((x as f32 - cx).powi(2) + (y as f32 - 256.0).powi(2)).sqrt();
                let a = if d < 180.0 { 255 } else { 0 };
                Rgba([v as u8, (v >> 8) as u8, (v >> 16) as u8, a])
            });
            Frame::new(img, Delay::from_fps(30.0))
        })
        .collect();
    Animation::new(512, 512, frames, LoopCount::Infinite).expect("noise")
}

fn export(anim: &Animation, preset: Preset, out: &Path) -> ExportReport {
    let r =
        fit_to_preset(anim, preset, &FitOptions::default(), out, &mut NoProgress).expect("export");
    // Shown with --nocapture: the report as a user reads it.
    eprintln!("{r}");
    assert!(r.passed, "{preset}: {r}");
    assert!(r.rules.iter().all(|c| c.pass), "{r}");
    assert!(!r.rules.is_empty());
    let on_disk = std::fs::metadata(out).expect("written").len();
    assert_eq!(r.bytes, on_disk);
    assert!(
        on_disk <= preset.rules().max_bytes,
        "{preset}: {on_disk} bytes"
    );
    r
}

/// `ffprobe` read separately from the report's parser.
fn ffprobe(path: &Path) -> serde_json::Value {
    let out = Command::new("ffprobe")
        .args([
            "-v",
            "error",
            "-show_streams",
            "-show_format",
            "-of",
            "json",
        ])
        .arg(path)
        .output()
        .expect("ffprobe runs");
    assert!(out.status.success());
    serde_json::from_slice(&out.stdout).expect("json")
}

/// `num_frames` and `num_plays` of a PNG's acTL chunk.
fn actl(path: &Path) -> Option<(u32, u32)> {
    let b = std::fs::read(path).expect("read");
    let mut i = 8;
    while i + 8 <= b.len() {
        let len = u32::from_be_bytes(b[i..i + 4].try_into().ok()?) as usize;
        if &b[i + 4..i + 8] == b"acTL" {
            let d = &b[i + 8..i + 16];
            return Some((
                u32::from_be_bytes(d[0..4].try_into().ok()?),
                u32::from_be_bytes(d[4..8].try_into().ok()?),
            ));
        }
        i += 12 + len;
    }
    None
}

fn check_webm(path: &Path, w: u32, h: u32, max_bytes: u64) {
    let v = ffprobe(path);
    let streams = v["streams"].as_array().expect("streams");
    assert_eq!(streams.len(), 1, "one stream, no audio: {v}");
    let s = &streams[0];
    assert_eq!(s["codec_name"], "vp9");
    assert_eq!(s["width"].as_u64(), Some(w as u64));
    assert_eq!(s["height"].as_u64(), Some(h as u64));
    assert_eq!(s["tags"]["alpha_mode"], "1", "{v}");
    let (n, d) = s["r_frame_rate"]
        .as_str()
        .and_then(|r| r.split_once('/'))
        .expect("rate");
    let fps = n.parse::<f64>().expect("n") / d.parse::<f64>().expect("d");
    assert!(fps <= 30.0, "{fps}");
    let dur: f64 = v["format"]["duration"]
        .as_str()
        .expect("duration")
        .parse()
        .expect("f64");
    assert!(dur <= 3.0 + 1e-3, "{dur}");
    assert!(std::fs::metadata(path).expect("meta").len() <= max_bytes);
    // The alpha survives: decoded through the libvpx decoder there are empty and solid pixels.
    let back = decode::open(path, &Limits::default()).expect("decode");
    let first = &back.frames[0].image;
    assert!(first.pixels().any(|p| p[3] == 0));
    assert!(first.pixels().any(|p| p[3] == 255));
}

#[test]
fn telegram_video_sticker() {
    let dir = tempfile::tempdir().expect("tempdir");
    let out = dir.path().join("s.webm");
    let r = export(&moving_shapes(200, 150, 20), Preset::Telegram, &out);
    assert_eq!((r.width, r.height), (512, 384));
    assert!(r.setting.starts_with("crf "), "{}", r.setting);
    check_webm(&out, 512, 384, 256_000);
    // Nothing but the sticker is left in the folder (scratch files are removed).
    assert_eq!(std::fs::read_dir(dir.path()).expect("ls").count(), 1);
}

#[test]
fn telegram_video_emoji() {
    let dir = tempfile::tempdir().expect("tempdir");
    let out = dir.path().join("e.webm");
    export(&moving_shapes(200, 150, 20), Preset::TelegramEmoji, &out);
    // Telegram custom emoji: 100×100 video, ≤ 256 KB.
    check_webm(&out, 100, 100, 256_000);
}

#[test]
fn telegram_static_png_and_webp() {
    let dir = tempfile::tempdir().expect("tempdir");
    for ext in ["png", "webp"] {
        let out = dir.path().join(format!("s.{ext}"));
        let r = export(&moving_shapes(200, 150, 20), Preset::TelegramStatic, &out);
        assert_eq!(r.frames, 1);
        let img = image::open(&out).expect("image").to_rgba8();
        assert_eq!(img.dimensions(), (512, 384));
        assert!(img.pixels().any(|p| p[3] == 0), "transparent background");
        assert!(std::fs::metadata(&out).expect("meta").len() <= 512_000);
    }
}

#[test]
fn whatsapp_animated_webp() {
    let dir = tempfile::tempdir().expect("tempdir");
    let out = dir.path().join("w.webp");
    let r = export(&moving_shapes(200, 150, 20), Preset::WhatsApp, &out);
    assert_eq!(r.loops, LoopCount::Infinite);
    assert_eq!(image::image_dimensions(&out).expect("dims"), (512, 512));
    let back = decode::open(&out, &Limits::default()).expect("decode");
    assert!(back.len() > 1);
    assert!(back.frames.iter().all(|f| f.delay.millis() >= 8));
    assert!(back.duration_secs() <= 10.0);
    assert_eq!(back.loops, LoopCount::Infinite);
    assert!(std::fs::metadata(&out).expect("meta").len() <= 500_000);
}

#[test]
fn line_apng_plays_and_frames() {
    let dir = tempfile::tempdir().expect("tempdir");
    let out = dir.path().join("l.png");
    let r = export(&moving_shapes(200, 150, 20), Preset::Line, &out);
    assert_eq!((r.width, r.height), (320, 240));
    assert_eq!(image::image_dimensions(&out).expect("dims"), (320, 240));
    let (frames, plays) = actl(&out).expect("acTL chunk");
    assert!((5..=20).contains(&frames), "{frames}");
    assert!(
        (1..=4).contains(&plays),
        "num_plays {plays} (0 = infinite is forbidden)"
    );
    let back = decode::open(&out, &Limits::default()).expect("decode");
    assert_eq!(back.len(), frames as usize);
    assert!(plays as f64 * back.duration_secs() <= 4.0 + 1e-3);
    // 1 s clip → 4 plays.
    assert_eq!(plays, 4);
    assert!(std::fs::metadata(&out).expect("meta").len() <= 300_000);
}

#[test]
fn discord_apng_and_gif() {
    let dir = tempfile::tempdir().expect("tempdir");
    for ext in ["png", "gif"] {
        let out = dir.path().join(format!("d.{ext}"));
        let r = export(&moving_shapes(200, 150, 20), Preset::Discord, &out);
        assert_eq!(image::image_dimensions(&out).expect("dims"), (320, 320));
        assert!(r.duration_secs <= 5.0);
        assert!(std::fs::metadata(&out).expect("meta").len() <= 512_000);
    }
}

#[test]
fn signal_apng() {
    let dir = tempfile::tempdir().expect("tempdir");
    let out = dir.path().join("s.png");
    let r = export(&moving_shapes(200, 150, 20), Preset::Signal, &out);
    assert_eq!(image::image_dimensions(&out).expect("dims"), (512, 512));
    let (_, plays) = actl(&out).expect("animated");
    assert_eq!(plays, 0, "loops forever");
    assert!(r.duration_secs <= 3.0);
    assert!(std::fs::metadata(&out).expect("meta").len() <= 300_000);
}

#[test]
fn cancel_writes_nothing() {
    let dir = tempfile::tempdir().expect("tempdir");
    let out = dir.path().join("c.webm");
    let mut calls = 0;
    let mut cancel_on_second_encode = |stage: &str, _: u64, _: u64| {
        if stage.starts_with("encode") {
            calls += 1;
        }
        calls < 2
    };
    let err = fit_to_preset(
        &moving_shapes(64, 48, 6),
        Preset::Telegram,
        &FitOptions::default(),
        &out,
        &mut cancel_on_second_encode,
    )
    .expect_err("cancelled");
    assert_eq!(err.kind(), "cancelled");
    assert_eq!(std::fs::read_dir(dir.path()).expect("ls").count(), 0);
}

#[test]
fn plain_export_picks_format_from_extension() {
    let dir = tempfile::tempdir().expect("tempdir");
    let anim = moving_shapes(64, 48, 6);
    let r = export_plain(
        &anim,
        &dir.path().join("p.gif"),
        &FitOptions::default(),
        None,
        &mut NoProgress,
    )
    .expect("gif");
    assert_eq!(r.format, crate::media::Format::Gif);
    assert!(r.rules.is_empty() && r.passed);
    assert_eq!((r.width, r.height, r.frames), (64, 48, 6));
    let folder = dir.path().join("frames/");
    let r = export_plain(
        &anim,
        &folder,
        &FitOptions::default(),
        None,
        &mut NoProgress,
    )
    .expect("folder");
    assert_eq!(r.format, crate::media::Format::Folder);
    assert_eq!(r.frames, 6);
}

/// Hard clip for the 256 KB Telegram cap (the acceptance test; ~1 min of CPU: several
/// VP9 encodes of 512² noise).
#[test]
fn hard_noise_fits_telegram() {
    let dir = tempfile::tempdir().expect("tempdir");
    let out = dir.path().join("hard.webm");
    let t = std::time::Instant::now();
    let r = export(&hard_noise(), Preset::Telegram, &out);
    eprintln!(
        "telegram hard clip: {:.1} s\n{r}",
        t.elapsed().as_secs_f64()
    );
    check_webm(&out, 512, 512, 256_000);
}

/// Hard clip for WhatsApp's 500 KB cap (the acceptance test; ~35 s of CPU).
#[test]
fn hard_noise_fits_whatsapp() {
    let dir = tempfile::tempdir().expect("tempdir");
    let out = dir.path().join("hard.webp");
    let t = std::time::Instant::now();
    let r = export(&hard_noise(), Preset::WhatsApp, &out);
    eprintln!(
        "whatsapp hard clip: {:.1} s\n{r}",
        t.elapsed().as_secs_f64()
    );
    assert_eq!(image::image_dimensions(&out).expect("dims"), (512, 512));
}

fn small_pack(count: usize, emoji: &[&str]) -> PackSpec {
    PackSpec {
        name: "Test Pack".into(),
        author: "ILDiff".into(),
        stickers: (0..count)
            .map(|i| PackSticker {
                source: StickerSource::Animation(moving_shapes(64 + i as u32, 48, 6)),
                emoji: emoji.iter().map(|e| e.to_string()).collect(),
                name: format!("s{i}"),
                accessibility_text: String::new(),
                time: None,
            })
            .collect(),
        tray_icon: None,
        options: FitOptions::default(),
        limits: Limits::default(),
    }
}

#[test]
fn whatsapp_pack_layout() {
    let dir = tempfile::tempdir().expect("tempdir");
    let mut spec = small_pack(3, &["😀", "🎉"]);
    spec.stickers[0].accessibility_text = "a cat waves".into();
    let r = export_pack(&spec, Preset::WhatsApp, dir.path(), &mut NoProgress).expect("pack");
    assert!(r.complete, "{r}");
    let root = dir.path().join("whatsapp");
    let v: serde_json::Value =
        serde_json::from_slice(&std::fs::read(root.join("contents.json")).expect("contents"))
            .expect("json");
    assert_eq!(v["android_play_store_link"], "");
    assert_eq!(v["ios_app_store_link"], "");
    let p = &v["sticker_packs"][0];
    assert_eq!(p["identifier"], "Test_Pack");
    assert_eq!(p["name"], "Test Pack");
    assert_eq!(p["publisher"], "ILDiff");
    assert_eq!(p["tray_image_file"], "tray.png");
    assert_eq!(p["image_data_version"], "1");
    assert_eq!(p["avoid_cache"], false);
    assert_eq!(p["animated_sticker_pack"], true);
    for key in [
        "publisher_email",
        "publisher_website",
        "privacy_policy_website",
        "license_agreement_website",
    ] {
        assert_eq!(p[key], "", "{key}");
    }
    let stickers = p["stickers"].as_array().expect("stickers");
    assert_eq!(stickers.len(), 3);
    assert_eq!(stickers[0]["image_file"], "01.webp");
    assert_eq!(stickers[2]["image_file"], "03.webp");
    assert_eq!(stickers[1]["emojis"], serde_json::json!(["😀", "🎉"]));
    // WhatsApp's `accessibility_text` is written when given, absent otherwise.
    assert_eq!(stickers[0]["accessibility_text"], "a cat waves");
    assert!(stickers[1].get("accessibility_text").is_none());
    let files = root.join("Test_Pack");
    let tray = files.join("tray.png");
    assert_eq!(image::image_dimensions(&tray).expect("tray"), (96, 96));
    assert!(std::fs::metadata(&tray).expect("meta").len() <= 50_000);
    for i in 1..=3 {
        let f = files.join(format!("{i:02}.webp"));
        assert_eq!(image::image_dimensions(&f).expect("sticker"), (512, 512));
    }
    // The .wastickers sticker-maker apps import: title, author, tray icon and the WebP files,
    // byte for byte the files that passed WhatsApp's rules.
    let wa = r.zip.clone().expect(".wastickers");
    assert_eq!(wa, root.join("Test_Pack.wastickers"));
    let mut zip = zip::ZipArchive::new(std::fs::File::open(&wa).expect("open")).expect("zip");
    let mut names: Vec<String> = zip
        .file_names()
        .map(|n| n.expect("entry name").to_string())
        .collect();
    names.sort();
    assert_eq!(
        names,
        [
            "01.webp",
            "02.webp",
            "03.webp",
            "author.txt",
            "title.txt",
            "tray.png"
        ]
    );
    let mut read = |name: &str| {
        let mut v = Vec::new();
        std::io::Read::read_to_end(&mut zip.by_name(name).expect(name), &mut v).expect("read");
        v
    };
    assert_eq!(read("title.txt"), b"Test Pack");
    assert_eq!(read("author.txt"), b"ILDiff");
    assert_eq!(
        read("02.webp"),
        std::fs::read(files.join("02.webp")).expect("webp")
    );
    assert_eq!(read("tray.png"), std::fs::read(&tray).expect("tray"));
    // Nothing half-written is left beside it.
    let leftovers: Vec<_> = std::fs::read_dir(&root)
        .expect("ls")
        .filter_map(|e| e.ok())
        .map(|e| e.file_name().to_string_lossy().into_owned())
        .filter(|n| n.starts_with('.'))
        .collect();
    assert!(leftovers.is_empty(), "{leftovers:?}");
}

#[test]
fn line_pack_zip() {
    let dir = tempfile::tempdir().expect("tempdir");
    let r = export_pack(
        &small_pack(8, &[]),
        Preset::Line,
        dir.path(),
        &mut NoProgress,
    )
    .expect("pack");
    assert!(r.complete, "{r}");
    let zip_path = r.zip.clone().expect("zip");
    let mut zip = zip::ZipArchive::new(std::fs::File::open(&zip_path).expect("open")).expect("zip");
    let mut names: Vec<String> = zip
        .file_names()
        .map(|n| n.expect("entry name").to_string())
        .collect();
    names.sort();
    let mut want: Vec<String> = (1..=8).map(|i| format!("{i:02}.png")).collect();
    want.push("main.png".into());
    want.push("tab.png".into());
    want.sort();
    assert_eq!(names, want);
    let mut main = Vec::new();
    std::io::Read::read_to_end(&mut zip.by_name("main.png").expect("main"), &mut main)
        .expect("read");
    let img = image::load_from_memory(&main).expect("png");
    assert_eq!((img.width(), img.height()), (240, 240));
    // LINE animation guideline: an animated set's main image is an animated APNG (5–20
    // frames, a finite number of plays), not a still PNG.
    let main_path = dir.path().join("line").join("main.png");
    assert_eq!(std::fs::read(&main_path).expect("main"), main);
    let (frames, plays) = actl(&main_path).expect("main.png must be an APNG");
    assert!(
        (5..=20).contains(&frames) && (1..=4).contains(&plays),
        "{frames} {plays}"
    );
    // Names and emoji survive beside the ZIP (LINE's ZIP has no place for them).
    let m: serde_json::Value = serde_json::from_slice(
        &std::fs::read(dir.path().join("line/manifest.json")).expect("manifest"),
    )
    .expect("json");
    assert_eq!(m["stickers"][7]["file"], "08.png");
    assert_eq!(m["stickers"][7]["name"], "s7");
    let tab = dir.path().join("line").join("tab.png");
    assert_eq!(image::image_dimensions(&tab).expect("tab"), (96, 74));
}

#[test]
fn telegram_pack_manifest_and_icon() {
    let dir = tempfile::tempdir().expect("tempdir");
    let r = export_pack(
        &small_pack(2, &["😀"]),
        Preset::Telegram,
        dir.path(),
        &mut NoProgress,
    )
    .expect("pack");
    assert!(r.complete, "{r}");
    let root = dir.path().join("telegram");
    let m: serde_json::Value =
        serde_json::from_slice(&std::fs::read(root.join("pack.json")).expect("pack.json"))
            .expect("json");
    assert_eq!(m["name"], "Test Pack");
    assert_eq!(m["author"], "ILDiff");
    assert_eq!(m["icon"], "icon.webm");
    assert_eq!(m["stickers"][0]["file"], "01.webm");
    assert_eq!(m["stickers"][1]["file"], "02.webm");
    assert_eq!(m["stickers"][1]["emoji"], serde_json::json!(["😀"]));
    check_webm(&root.join("icon.webm"), 100, 100, 32_000);
    check_webm(&root.join("01.webm"), 512, 384, 256_000);
}

#[test]
fn telegram_emoji_pack_has_no_thumbnail() {
    // Telegram's setStickerSetThumbnail takes no thumbnail file for custom emoji sets.
    let dir = tempfile::tempdir().expect("tempdir");
    let r = export_pack(
        &small_pack(2, &["😀"]),
        Preset::TelegramEmoji,
        dir.path(),
        &mut NoProgress,
    )
    .expect("pack");
    assert!(r.complete, "{r}");
    assert!(r.icons.is_empty());
    let root = dir.path().join("telegram-emoji");
    assert!(!root.join("icon.webm").exists());
    let m: serde_json::Value =
        serde_json::from_slice(&std::fs::read(root.join("pack.json")).expect("pack.json"))
            .expect("json");
    assert!(m.get("icon").is_none(), "{m}");
    check_webm(&root.join("01.webm"), 100, 100, 256_000);
}

#[test]
fn discord_manifest_tags_are_emoji_names() {
    // Discord "Create Guild Sticker": `tags` is the name of a Unicode emoji (2–200
    // characters) and `name` has 2–30 characters.
    let dir = tempfile::tempdir().expect("tempdir");
    let mut spec = small_pack(2, &["🐱"]);
    spec.stickers[1].name = String::new();
    spec.stickers[1].emoji = vec!["😀".into(), "🎉".into()];
    let r = export_pack(&spec, Preset::Discord, dir.path(), &mut NoProgress).expect("pack");
    assert!(r.complete, "{r}");
    let m: serde_json::Value = serde_json::from_slice(
        &std::fs::read(dir.path().join("discord/manifest.json")).expect("manifest"),
    )
    .expect("json");
    assert_eq!(m["stickers"][0]["tags"], "cat");
    assert_eq!(m["stickers"][0]["name"], "s0");
    assert_eq!(m["stickers"][1]["tags"], "grinning");
    let name = m["stickers"][1]["name"].as_str().expect("name");
    assert!((2..=30).contains(&name.chars().count()), "{name}");
}

#[test]
fn line_short_clip_is_resampled_to_five_frames() {
    let dir = tempfile::tempdir().expect("tempdir");
    let out = dir.path().join("short.png");
    let r = export(&moving_shapes(64, 48, 3), Preset::Line, &out);
    let (frames, plays) = actl(&out).expect("acTL");
    assert_eq!((frames, r.frames), (5, 5));
    assert_eq!(plays, 4);
}

#[test]
fn pack_reports_failed_sticker_and_keeps_others() {
    let dir = tempfile::tempdir().expect("tempdir");
    let mut spec = small_pack(3, &["😀"]);
    spec.stickers[1].source = StickerSource::Path(dir.path().join("missing.gif"));
    let r = export_pack(&spec, Preset::Signal, dir.path(), &mut NoProgress).expect("pack");
    assert!(!r.complete);
    assert_eq!(r.stickers.len(), 2);
    assert_eq!(r.failures.len(), 1);
    assert!(r.failures[0].what.contains("sticker 2"), "{r}");
    let m: serde_json::Value = serde_json::from_slice(
        &std::fs::read(dir.path().join("signal/manifest.json")).expect("manifest"),
    )
    .expect("json");
    let files: Vec<&str> = m["stickers"]
        .as_array()
        .expect("stickers")
        .iter()
        .filter_map(|s| s["file"].as_str())
        .collect();
    assert_eq!(files, ["01.png", "03.png"]);
    assert_eq!(m["stickers"][0]["emoji"], "😀");
}

/// Stickers are fitted two at a time behind one bar: every step reports the pack's total,
/// the bar reaches it, the stickers stay in spec order, and a cancel stops both workers.
#[test]
fn pack_has_one_progress_bar_and_cancel_stops_every_sticker() {
    let dir = tempfile::tempdir().expect("tempdir");
    let spec = small_pack(4, &["😀"]);
    let mut steps: Vec<(u64, u64)> = Vec::new();
    let mut record = |_: &str, done: u64, total: u64| {
        steps.push((done, total));
        true
    };
    let r = export_pack(&spec, Preset::Signal, dir.path(), &mut record).expect("pack");
    assert!(r.complete, "{r}");
    let files: Vec<&str> = r.stickers.iter().map(|s| s.file.as_str()).collect();
    assert_eq!(files, ["01.png", "02.png", "03.png", "04.png"]);
    assert!(steps.len() > 8);
    assert!(steps.iter().all(|&(d, t)| t == 4000 && d <= t), "{steps:?}");
    assert_eq!(steps.iter().map(|s| s.0).max(), Some(4000));

    let out = dir.path().join("cancelled");
    let mut calls = 0;
    let mut cancel = |_: &str, _: u64, _: u64| {
        calls += 1;
        calls < 4
    };
    let err = export_pack(&spec, Preset::Signal, &out, &mut cancel).expect_err("cancel");
    assert_eq!(err.kind(), "cancelled");
    // Nothing half-written: whatever is there is a whole sticker.
    for f in std::fs::read_dir(out.join("signal"))
        .expect("dir")
        .flatten()
    {
        let name = f.file_name().to_string_lossy().into_owned();
        assert!(name.ends_with(".png"), "{name}");
        decode::open(&f.path(), &Limits::default()).expect("complete sticker");
    }
}

/// A disc of one colour moving over transparency: the colour tells stickers apart after
/// lossy conversions.
fn coloured_disc(rgb: [u8; 3], n: usize) -> Animation {
    let (w, h) = (96u32, 96u32);
    let frames = (0..n)
        .map(|i| {
            let cx = 30.0 + 6.0 * i as f32;
            let img = RgbaImage::from_fn(w, h, |x, y| {
                let d = ((x as f32 - cx).powi(2) + (y as f32 - 48.0).powi(2)).sqrt();
                let a = ((26.0 - d) / 2.0).clamp(0.0, 1.0);
                Rgba([rgb[0], rgb[1], rgb[2], (a * 255.0) as u8])
            });
            Frame::new(img, Delay::from_millis(80))
        })
        .collect();
    Animation::new(w, h, frames, LoopCount::Infinite).expect("clip")
}

/// Mean colour of the mostly opaque pixels of a sticker's first frame.
fn first_frame_colour(path: &Path) -> [f64; 3] {
    let a = decode::open(path, &Limits::default()).expect("decode");
    let (mut s, mut n) = ([0f64; 3], 0f64);
    for p in a.frames[0].image.pixels().filter(|p| p[3] > 200) {
        for c in 0..3 {
            s[c] += p[c] as f64;
        }
        n += 1.0;
    }
    assert!(n > 0.0, "{} has an empty first frame", path.display());
    s.map(|v| v / n)
}

/// Checks what every written file of a pack must satisfy, read back independently of the
/// exporter's own report, and returns the sticker files in pack order.
fn check_written_pack(
    r: &crate::media::pack::PackReport,
    preset: Preset,
) -> Vec<std::path::PathBuf> {
    assert!(r.complete, "{r}");
    let rules = preset.rules();
    let mut files = Vec::new();
    for s in &r.stickers {
        // The report's own read-back rules, every one of them.
        assert!(s.report.passed && !s.report.rules.is_empty(), "{r}");
        let path = &s.report.path;
        let bytes = std::fs::metadata(path).expect("meta").len();
        assert!(
            bytes <= rules.max_bytes,
            "{}: {bytes} bytes",
            path.display()
        );
        match preset {
            // WhatsApp: 512×512 animated WebP ≤ 500 KB.
            Preset::WhatsApp => {
                assert_eq!(image::image_dimensions(path).expect("dims"), (512, 512));
            }
            // Telegram: VP9 with alpha, no audio, one side 512, ≤ 256 KB.
            Preset::Telegram => check_webm(path, 512, 512, 256_000),
            // LINE: APNG ≤ 320×270, 5–20 frames, 1–4 plays.
            Preset::Line => {
                let (frames, plays) = actl(path).expect("APNG");
                assert!((5..=20).contains(&frames) && (1..=4).contains(&plays));
                let (w, h) = image::image_dimensions(path).expect("dims");
                assert!(w <= 320 && h <= 270 && (w >= 270 || h >= 270), "{w}x{h}");
            }
            _ => {}
        }
        files.push(path.clone());
    }
    for i in &r.icons {
        assert!(i.passed, "{r}");
    }
    files
}

/// The round trip: WhatsApp → Telegram → LINE → WhatsApp, each step read back from
/// the folder the previous one wrote. LINE sets have 8, 16 or 24 stickers (Creators Market
/// guideline), so the pack has 8 rather than 3.
#[test]
fn pack_round_trip_whatsapp_telegram_line_whatsapp() {
    use crate::media::pack_import::read_pack;
    let colours: [[u8; 3]; 8] = [
        [230, 30, 30],
        [30, 200, 30],
        [30, 60, 230],
        [240, 220, 20],
        [220, 30, 220],
        [20, 210, 220],
        [250, 250, 250],
        [20, 20, 20],
    ];
    let emoji: [&[&str]; 3] = [&["😀"], &["🐱", "🎉"], &["❤️", "👍🏽", "🍕"]];
    let spec = PackSpec {
        name: "Round Trip".into(),
        author: "ILDiff".into(),
        stickers: colours
            .iter()
            .enumerate()
            .map(|(i, c)| {
                PackSticker::new(
                    StickerSource::Animation(coloured_disc(*c, 6)),
                    emoji[i % 3].iter().map(|e| e.to_string()).collect(),
                )
            })
            .collect(),
        tray_icon: None,
        options: FitOptions::default(),
        limits: Limits::default(),
    };
    let want_emoji: Vec<Vec<String>> = spec.stickers.iter().map(|s| s.emoji.clone()).collect();
    let check_order = |files: &[std::path::PathBuf]| {
        assert_eq!(files.len(), colours.len());
        for (i, f) in files.iter().enumerate() {
            let got = first_frame_colour(f);
            let nearest = (0..colours.len())
                .min_by(|&a, &b| {
                    let d = |k: usize| -> f64 {
                        (0..3)
                            .map(|c| (got[c] - colours[k][c] as f64).powi(2))
                            .sum()
                    };
                    d(a).total_cmp(&d(b))
                })
                .expect("colours");
            assert_eq!(nearest, i, "{} is {got:?}", f.display());
        }
    };

    let root = tempfile::tempdir().expect("tempdir");
    let mut current = spec;
    let mut from = None;
    for (step, preset) in [
        Preset::WhatsApp,
        Preset::Telegram,
        Preset::Line,
        Preset::WhatsApp,
    ]
    .into_iter()
    .enumerate()
    {
        let out = root.path().join(format!("step{step}"));
        std::fs::create_dir_all(&out).expect("mkdir");
        let r = export_pack(&current, preset, &out, &mut NoProgress).expect("pack");
        let files = check_written_pack(&r, preset);
        check_order(&files);
        let emoji: Vec<Vec<String>> = r.stickers.iter().map(|s| s.emoji.clone()).collect();
        assert_eq!(emoji, want_emoji, "step {step} ({preset})");
        // Read the folder just written, as `ildiff pack --from` does.
        let pack = read_pack(&out).expect("read pack");
        assert_eq!(pack.name, "Round Trip", "step {step}");
        assert_eq!(pack.author, "ILDiff", "step {step}");
        assert_eq!(pack.stickers.len(), colours.len());
        current = pack.spec(FitOptions::default(), Limits::default());
        from = Some(pack);
    }
    // The .wastickers of the last step reads back as the same pack.
    drop(from);
    let wa = root.path().join("step3/whatsapp/Round_Trip.wastickers");
    let pack = read_pack(&wa).expect("read .wastickers");
    assert_eq!(pack.kind, ".wastickers");
    assert_eq!(
        (pack.name.as_str(), pack.author.as_str()),
        ("Round Trip", "ILDiff")
    );
    let files: Vec<std::path::PathBuf> = pack
        .stickers
        .iter()
        .map(|s| match &s.source {
            StickerSource::Path(p) => p.clone(),
            StickerSource::Animation(_) => panic!("a ZIP sticker is a file"),
        })
        .collect();
    check_order(&files);
}

/// Issue 18's 2-frame case: 16 frames (15 fps) of a photo-like texture under a soft matte with
/// per-pixel noise in alpha, 512². Lossless alpha alone is far over WhatsApp's 500 KB, which
/// used to cost 14 of the 16 frames; the alpha knob must be used first.
fn noisy_soft_alpha_clip() -> Animation {
    let mut s: u64 = 0x2545_F491_4F6C_DD1D;
    let mut next = move || {
        s ^= s << 13;
        s ^= s >> 7;
        s ^= s << 17;
        s
    };
    let frames = (0..16)
        .map(|i| {
            let cx = 220.0 + 5.0 * i as f32;
            let img = RgbaImage::from_fn(512, 512, |x, y| {
                let v = next();
                let d = ((x as f32 - cx).powi(2) + (y as f32 - 256.0).powi(2)).sqrt();
                // Soft edge 60 px wide, then ±25 % noise on the whole matte.
                let soft = ((210.0 - d) / 60.0).clamp(0.0, 1.0);
                let noise = ((v >> 32) & 0xff) as f32 / 255.0 - 0.5;
                let a = if soft > 0.0 {
                    ((soft + 0.5 * noise) * 255.0).clamp(1.0, 255.0) as u8
                } else {
                    0
                };
                // Photo-like colour: smooth gradients plus grain.
                let g = (v & 0x1f) as f32;
                Rgba([
                    (x as f32 * 0.4 + g) as u8,
                    (y as f32 * 0.4 + g) as u8,
                    (128.0 + 60.0 * ((x + y) as f32 / 90.0).sin() + g) as u8,
                    a,
                ])
            });
            Frame::new(img, Delay::from_fps(15.0))
        })
        .collect();
    Animation::new(512, 512, frames, LoopCount::Infinite).expect("clip")
}

#[test]
fn noisy_soft_alpha_fits_whatsapp_with_all_16_frames() {
    let dir = tempfile::tempdir().expect("tempdir");
    let out = dir.path().join("noisy.webp");
    let clip = noisy_soft_alpha_clip();
    // The alpha plane is the cost: lossless alpha at the lowest colour quality is over the cap.
    let alpha_lossless = crate::media::encode::webp::encode_lossy(&clip, 0.0, 100).expect("enc");
    assert!(alpha_lossless.len() > 500_000, "{}", alpha_lossless.len());
    let t = std::time::Instant::now();
    let r = export(&clip, Preset::WhatsApp, &out);
    eprintln!("noisy soft alpha: {:.1} s\n{r}", t.elapsed().as_secs_f64());
    // WhatsApp: 512×512, ≤ 500 KB, and here every one of the 16 frames kept.
    assert_eq!(r.frames, 16, "{r}");
    assert!(r.passed && r.bytes <= 500_000, "{r}");
    assert!(r.notes.iter().all(|n| !n.contains("frame rate")), "{r}");
    assert!(r.setting.contains("alpha q"), "{r}");
}

#[test]
fn wastickers_is_not_written_for_a_pack_whatsapp_would_refuse() {
    // WhatsApp packs need 3–30 stickers: with one of three unreadable, two are written and
    // the .wastickers (which goes straight to WhatsApp) is withheld, saying why.
    let dir = tempfile::tempdir().expect("tempdir");
    let mut spec = small_pack(3, &["😀"]);
    spec.stickers[2].source = StickerSource::Path(dir.path().join("missing.gif"));
    let r = export_pack(&spec, Preset::WhatsApp, dir.path(), &mut NoProgress).expect("pack");
    assert!(!r.complete);
    assert_eq!(r.stickers.len(), 2);
    assert!(r.zip.is_none(), "{r}");
    assert!(
        r.problems
            .iter()
            .any(|p| p.contains("no .wastickers") && p.contains("3–30")),
        "{r}"
    );
    assert!(!dir.path().join("whatsapp/Test_Pack.wastickers").exists());
}

/// One sticker of a pack may fit the time limit its own way: with the pack set to cut, the
/// sticker set to speed up keeps its whole motion, the other is cut (and each report says so).
#[test]
fn a_sticker_can_override_the_packs_fit_time() {
    let dir = tempfile::tempdir().expect("tempdir");
    let mut spec = small_pack(2, &["😀"]);
    for s in &mut spec.stickers {
        // 4 s at 10 fps: over Telegram's 3 s.
        let mut a = moving_shapes(64, 48, 40);
        for f in &mut a.frames {
            f.delay = crate::media::Delay::from_millis(100);
        }
        s.source = StickerSource::Animation(a);
    }
    spec.stickers[1].time = Some(crate::media::presets::TimeFit::Speed);
    let r = export_pack(&spec, Preset::Telegram, dir.path(), &mut NoProgress).expect("pack");
    assert!(r.complete, "{r}");
    let notes = |i: usize| r.stickers[i].report.notes.join("\n");
    assert!(notes(0).contains("fit-time cut"), "{}", notes(0));
    assert!(notes(1).contains("fit-time speed"), "{}", notes(1));
}

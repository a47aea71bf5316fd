//! End-to-end tests of the `ildiff` binary: inputs made by ffmpeg (an independent encoder), the
//! binary run as a user would, outputs re-read independently. Bad inputs must give a clear error
//! naming the file, a non-zero exit, and no output file.

mod common;

use std::path::{Path, PathBuf};
use std::process::Command;

use common::{entries, ffmpeg_clip, ildiff, ildiff_env, stderr};

#[test]
fn info_json_reports_frames_and_size() {
    let dir = tempfile::tempdir().expect("tempdir");
    let gif = ffmpeg_clip(dir.path(), "in.gif", "160x120", 10, 1.0, &[]);
    let o = ildiff(&["info", "--json", gif.to_str().expect("utf8")]);
    assert!(o.status.success(), "{}", stderr(&o));
    let v: serde_json::Value = serde_json::from_slice(&o.stdout).expect("json");
    assert_eq!(v["format"], "gif");
    assert_eq!(v["width"], 160);
    assert_eq!(v["height"], 120);
    assert_eq!(v["frames"], 10);
    assert!((v["duration_secs"].as_f64().expect("f64") - 1.0).abs() < 0.02);
    assert_eq!(v["has_alpha"], false);
}

#[test]
fn info_sniffs_content_not_extension() {
    let dir = tempfile::tempdir().expect("tempdir");
    let gif = ffmpeg_clip(dir.path(), "in.gif", "32x32", 5, 0.5, &[]);
    let liar = dir.path().join("really-a-gif.png");
    std::fs::copy(&gif, &liar).expect("copy");
    let o = ildiff(&["info", "--json", liar.to_str().expect("utf8")]);
    assert!(o.status.success(), "{}", stderr(&o));
    let v: serde_json::Value = serde_json::from_slice(&o.stdout).expect("json");
    assert_eq!(v["format"], "gif");
}

#[test]
fn bad_inputs_fail_clearly_and_batch_reports_all() {
    let dir = tempfile::tempdir().expect("tempdir");
    let good = ffmpeg_clip(dir.path(), "good.gif", "32x32", 5, 0.5, &[]);
    let empty = dir.path().join("empty.gif");
    std::fs::write(&empty, b"").expect("write");
    let text = dir.path().join("notes.gif");
    std::fs::write(&text, b"this is not a picture at all").expect("write");
    let truncated = dir.path().join("truncated.gif");
    let bytes = std::fs::read(&good).expect("read");
    std::fs::write(&truncated, &bytes[..bytes.len() / 3]).expect("write");
    let mut huge = b"GIF89a".to_vec();
    huge.extend_from_slice(&[0xFF, 0xFF, 0xFF, 0xFF, 0x00, 0x00, 0x00, 0x3B]);
    let huge_path = dir.path().join("huge.gif");
    std::fs::write(&huge_path, &huge).expect("write");
    let missing = dir.path().join("does-not-exist.gif");

    let paths = [&good, &empty, &text, &truncated, &huge_path, &missing];
    let args: Vec<&str> = std::iter::once("info")
        .chain(paths.iter().map(|p| p.to_str().expect("utf8")))
        .collect();
    let o = ildiff(&args);
    assert!(
        !o.status.success(),
        "a batch with failures must exit non-zero"
    );
    let err = stderr(&o);
    assert!(err.contains("5 of 6 inputs failed"), "{err}");
    for p in &paths[1..] {
        assert!(
            err.contains(p.to_str().expect("utf8")),
            "no mention of {}: {err}",
            p.display()
        );
    }
    assert!(
        err.contains("limit"),
        "huge canvas must be a limits error: {err}"
    );
    assert!(!err.contains("panicked"), "{err}");
    assert!(String::from_utf8_lossy(&o.stdout).contains("good.gif"));
}

#[test]
fn missing_ffmpeg_says_how_to_install() {
    let dir = tempfile::tempdir().expect("tempdir");
    let mp4 = ffmpeg_clip(
        dir.path(),
        "in.mp4",
        "64x64",
        10,
        0.5,
        &["-pix_fmt", "yuv420p"],
    );
    let o = ildiff_env(&["info", mp4.to_str().expect("utf8")], &[("PATH", "")]);
    assert!(!o.status.success());
    let err = stderr(&o);
    assert!(err.contains("apt-get install ffmpeg"), "{err}");
    assert_eq!(entries(dir.path()), vec!["in.mp4".to_string()]);
}

/// A 200×150, 20-frame, 10 fps clip with real transparency: a disc with a hole moving over a
/// transparent canvas, written as APNG through the library.
fn alpha_clip(dir: &Path) -> PathBuf {
    use ildiff::media::encode::{Encoding, write};
    use ildiff::media::{Animation, Delay, Frame, LoopCount};
    use image::{Rgba, RgbaImage};
    let frames = (0..20)
        .map(|t| {
            let cx = 50.0 + 5.0 * t as f32;
            let img = RgbaImage::from_fn(200, 150, |x, y| {
                let d = ((x as f32 - cx).powi(2) + (y as f32 - 75.0).powi(2)).sqrt();
                let a = if (15.0..40.0).contains(&d) { 255 } else { 0 };
                Rgba([200, (x % 256) as u8, 40, a])
            });
            Frame::new(img, Delay::from_ratio(1, 10))
        })
        .collect();
    let anim = Animation::new(200, 150, frames, LoopCount::Infinite).expect("clip");
    let path = dir.join("disc.png");
    write(&anim, &Encoding::Apng { palette: None }, &path).expect("write input");
    path
}

fn ffprobe_json(path: &Path) -> serde_json::Value {
    let o = Command::new("ffprobe")
        .args([
            "-v",
            "error",
            "-print_format",
            "json",
            "-show_streams",
            "-show_format",
        ])
        .arg(path)
        .output()
        .expect("ffprobe runs");
    assert!(o.status.success());
    serde_json::from_slice(&o.stdout).expect("ffprobe json")
}

/// Reads `num_plays` from an APNG's acTL chunk (the image crate does not expose it).
fn apng_plays(bytes: &[u8]) -> Option<u32> {
    let i = bytes.windows(4).position(|w| w == b"acTL")?;
    let p = &bytes[i + 8..i + 12];
    Some(u32::from_be_bytes([p[0], p[1], p[2], p[3]]))
}

#[test]
fn export_telegram_preset_meets_rules_checked_by_ffprobe() {
    let dir = tempfile::tempdir().expect("tempdir");
    let input = alpha_clip(dir.path());
    let out = dir.path().join("sticker.webm");
    let o = ildiff(&[
        "export",
        input.to_str().expect("utf8"),
        "-o",
        out.to_str().expect("utf8"),
        "--preset",
        "telegram",
        "--json",
    ]);
    assert!(o.status.success(), "{}", stderr(&o));
    let report: serde_json::Value = serde_json::from_slice(&o.stdout).expect("json report");
    assert_eq!(report["passed"], true, "{report}");
    let probe = ffprobe_json(&out);
    let streams = probe["streams"].as_array().expect("streams");
    assert_eq!(streams.len(), 1, "no audio stream, one video stream");
    let v = &streams[0];
    assert_eq!(v["codec_name"], "vp9");
    assert_eq!(v["tags"]["alpha_mode"], "1");
    let (w, h) = (
        v["width"].as_u64().expect("w"),
        v["height"].as_u64().expect("h"),
    );
    assert!(w == 512 || h == 512, "{w}x{h}");
    assert!(w <= 512 && h <= 512);
    let dur: f64 = probe["format"]["duration"]
        .as_str()
        .expect("duration")
        .parse()
        .expect("f64");
    assert!(dur <= 3.0 + 1e-6, "{dur}");
    let bytes = std::fs::metadata(&out).expect("stat").len();
    assert!(bytes <= 256_000, "{bytes}");
    assert_eq!(
        entries(dir.path()),
        vec!["disc.png".to_string(), "sticker.webm".to_string()]
    );
}

#[test]
fn export_line_preset_sets_finite_plays_and_frame_count() {
    let dir = tempfile::tempdir().expect("tempdir");
    let input = alpha_clip(dir.path());
    let out = dir.path().join("line.png");
    let o = ildiff(&[
        "export",
        input.to_str().expect("utf8"),
        "-o",
        out.to_str().expect("utf8"),
        "--preset",
        "line",
    ]);
    assert!(
        o.status.success(),
        "{}{}",
        stderr(&o),
        String::from_utf8_lossy(&o.stdout)
    );
    let bytes = std::fs::read(&out).expect("read");
    assert!(bytes.len() <= 300_000);
    let plays = apng_plays(&bytes).expect("acTL");
    assert!((1..=4).contains(&plays), "plays {plays}");
    use image::AnimationDecoder;
    let dec = image::codecs::png::PngDecoder::new(std::io::Cursor::new(&bytes)).expect("png");
    let frames = dec
        .apng()
        .expect("apng")
        .into_frames()
        .collect_frames()
        .expect("frames");
    assert!((5..=20).contains(&frames.len()), "{} frames", frames.len());
    let (w, h) = frames[0].buffer().dimensions();
    assert!(w <= 320 && h <= 270 && (w >= 270 || h >= 270), "{w}x{h}");
    let total: f64 = frames
        .iter()
        .map(|f| {
            let (n, d) = f.delay().numer_denom_ms();
            n as f64 / d as f64 / 1000.0
        })
        .sum();
    assert!(total * plays as f64 <= 4.0 + 1e-6, "{total} s × {plays}");
}

#[test]
fn batch_export_writes_good_inputs_and_lists_failures() {
    let dir = tempfile::tempdir().expect("tempdir");
    let good = alpha_clip(dir.path());
    let bad = dir.path().join("broken.gif");
    std::fs::write(&bad, b"GIF89a not really").expect("write");
    let out = dir.path().join("out");
    let o = ildiff(&[
        "export",
        good.to_str().expect("utf8"),
        bad.to_str().expect("utf8"),
        "-o",
        out.to_str().expect("utf8"),
        "--preset",
        "discord",
    ]);
    assert!(!o.status.success());
    let err = stderr(&o);
    assert!(
        err.contains("1 of 2 inputs failed") && err.contains("broken.gif"),
        "{err}"
    );
    assert_eq!(entries(&out), vec!["disc.png".to_string()]);
    let img = image::open(out.join("disc.png")).expect("readable");
    assert_eq!((img.width(), img.height()), (320, 320));
}

#[test]
fn export_to_unwritable_place_leaves_nothing() {
    let dir = tempfile::tempdir().expect("tempdir");
    let input = alpha_clip(dir.path());
    // A "folder" that is a regular file cannot hold the output (works even as root).
    let blocker = dir.path().join("blocker");
    std::fs::write(&blocker, b"x").expect("write");
    let out = blocker.join("out.webp");
    let o = ildiff(&[
        "export",
        input.to_str().expect("utf8"),
        "-o",
        out.to_str().expect("utf8"),
    ]);
    assert!(!o.status.success());
    assert!(stderr(&o).contains("blocker"), "{}", stderr(&o));
    assert_eq!(
        entries(dir.path()),
        vec!["blocker".to_string(), "disc.png".to_string()]
    );
}

#[test]
fn pack_whatsapp_writes_contents_json_tray_and_stickers() {
    let dir = tempfile::tempdir().expect("tempdir");
    let input = alpha_clip(dir.path());
    let i = input.to_str().expect("utf8");
    let out = dir.path().join("pack");
    let o = ildiff(&[
        "pack",
        i,
        i,
        i,
        "-o",
        out.to_str().expect("utf8"),
        "--platform",
        "whatsapp",
        "--name",
        "Discs",
        "--author",
        "Tester",
        "--emoji",
        "😀,😎",
        "--json",
    ]);
    assert!(o.status.success(), "{}", stderr(&o));
    let contents =
        std::fs::read_to_string(out.join("whatsapp").join("contents.json")).expect("contents.json");
    let v: serde_json::Value = serde_json::from_str(&contents).expect("json");
    let pack = &v["sticker_packs"][0];
    assert_eq!(pack["name"], "Discs");
    assert_eq!(pack["publisher"], "Tester");
    assert_eq!(pack["animated_sticker_pack"], true);
    let stickers = pack["stickers"].as_array().expect("stickers");
    assert_eq!(stickers.len(), 3);
    assert_eq!(stickers[0]["emojis"], serde_json::json!(["😀", "😎"]));
    let ident = pack["identifier"].as_str().expect("identifier");
    let tray = pack["tray_image_file"].as_str().expect("tray");
    let folder = out.join("whatsapp").join(ident);
    let tray_img = image::open(folder.join(tray)).expect("tray readable");
    assert_eq!((tray_img.width(), tray_img.height()), (96, 96));
    for s in stickers {
        let f = folder.join(s["image_file"].as_str().expect("file"));
        let bytes = std::fs::metadata(&f).expect("sticker exists").len();
        assert!(bytes <= 500_000);
        let img = image::open(&f).expect("webp readable");
        assert_eq!((img.width(), img.height()), (512, 512));
    }
}

#[test]
fn pack_from_converts_a_whatsapp_pack_keeping_emoji_and_order() {
    let dir = tempfile::tempdir().expect("tempdir");
    let input = alpha_clip(dir.path());
    let i = input.to_str().expect("utf8");
    let out = dir.path().join("pack");
    let o = ildiff(&[
        "pack",
        i,
        i,
        i,
        "-o",
        out.to_str().expect("utf8"),
        "--platform",
        "whatsapp",
        "--name",
        "Discs",
        "--author",
        "Tester",
        "--emoji",
        "😀,😎",
        "--emoji",
        "🐱",
    ]);
    assert!(o.status.success(), "{}", stderr(&o));
    // The .wastickers sticker-maker apps import sits beside contents.json.
    assert!(out.join("whatsapp").join("Discs.wastickers").is_file());
    let conv = dir.path().join("conv");
    let o = ildiff(&[
        "pack",
        "--from",
        out.join("whatsapp").to_str().expect("utf8"),
        "-o",
        conv.to_str().expect("utf8"),
        "--platform",
        "telegram-emoji",
        "--json",
    ]);
    assert!(o.status.success(), "{}", stderr(&o));
    let v: serde_json::Value = serde_json::from_slice(
        &std::fs::read(conv.join("telegram-emoji").join("pack.json")).expect("pack.json"),
    )
    .expect("json");
    assert_eq!(v["name"], "Discs");
    assert_eq!(v["author"], "Tester");
    let emoji: Vec<&serde_json::Value> = v["stickers"]
        .as_array()
        .expect("stickers")
        .iter()
        .map(|s| &s["emoji"])
        .collect();
    assert_eq!(
        emoji,
        [
            &serde_json::json!(["😀", "😎"]),
            &serde_json::json!(["🐱"]),
            &serde_json::json!(["🙂"])
        ]
    );
    // Letters are not emoji: refused before anything is written.
    let o = ildiff(&[
        "pack",
        i,
        "-o",
        dir.path().join("bad").to_str().expect("utf8"),
        "--platform",
        "telegram",
        "--emoji",
        "a",
    ]);
    assert!(!o.status.success());
    assert!(stderr(&o).contains("`a` is not an emoji"), "{}", stderr(&o));
}

/// Arguments of a tiny `train codec --over-key` run writing to `out` (3 steps of 32² stills).
fn tiny_key_codec(out: &str) -> Vec<&str> {
    vec![
        "train",
        "codec",
        "-o",
        out,
        "--over-key",
        "255,0,255",
        "--fg-weight",
        "3",
        "--channels",
        "8,8,8",
        "--steps",
        "3",
        "--batch",
        "1",
        "--frames",
        "1",
        "--size",
        "32",
        "--warmup",
        "1",
        "--checkpoint-every",
        "10",
        "-q",
    ]
}

/// A codec for the generator: trained on stickers over a flat key, stopped early with
/// `--stop-after` (schedule of `--steps` kept), then carried on with `--resume`.
#[test]
fn codec_over_a_key_stops_after_a_step_and_resumes() {
    let dir = tempfile::tempdir().expect("tempdir");
    let out = dir.path().join("run");
    let o = out.to_str().expect("utf8");
    let base = tiny_key_codec(o);
    let steps_in_log = || {
        std::fs::read_to_string(out.join("log.csv"))
            .expect("log")
            .lines()
            .skip(1)
            .count()
    };
    let mut first = base.to_vec();
    first.extend(["--stop-after", "2"]);
    let r = ildiff(&first);
    assert!(r.status.success(), "{}", stderr(&r));
    assert_eq!(steps_in_log(), 2, "stopped after step 2");
    assert!(out.join("codec.safetensors").is_file());
    let run: serde_json::Value =
        serde_json::from_str(&std::fs::read_to_string(out.join("run.json")).expect("run.json"))
            .expect("json");
    assert_eq!(run["args"]["over_key"], "255,0,255");
    let mut again = base.to_vec();
    again.push("--resume");
    let r = ildiff(&again);
    assert!(r.status.success(), "{}", stderr(&r));
    assert_eq!(steps_in_log(), 3, "resumed to the schedule's end");
    // Photos do not belong to a codec over a key.
    let mut bad = base.to_vec();
    bad.extend(["--photos", o]);
    let r = ildiff(&bad);
    assert!(!r.status.success());
    assert!(stderr(&r).contains("--over-key"), "{}", stderr(&r));
}

/// `train generator --art-subjects` keeps only artwork named after the subjects (code point
/// names spelled out) and says what it kept; a subject no file is named after is an error that
/// names it.
#[test]
fn generator_training_focuses_on_named_subjects() {
    let dir = tempfile::tempdir().expect("tempdir");
    let art = dir.path().join("art");
    std::fs::create_dir_all(&art).expect("mkdir");
    let svg = r##"<svg xmlns="http://www.w3.org/2000/svg" width="32" height="32"><circle cx="16" cy="16" r="10" fill="#e02020"/></svg>"##;
    // Ten hearts by name and ten cat faces by code point (U+1F431 CAT FACE).
    for i in 0..10 {
        std::fs::write(art.join(format!("heart-{i}.svg")), svg).expect("write");
        std::fs::write(art.join(format!("1f431-{i:04}.svg")), svg).expect("write");
        std::fs::write(art.join(format!("rocket-{i}.svg")), svg).expect("write");
    }
    let codec = dir.path().join("codec");
    let r = ildiff(&tiny_key_codec(codec.to_str().expect("utf8")));
    assert!(r.status.success(), "{}", stderr(&r));
    let codec_file = codec.join("codec.safetensors");
    let out = dir.path().join("gen");
    let run = |subjects: &str, with_art: bool| {
        let mut a = vec![
            "train",
            "generator",
            "-o",
            out.to_str().expect("utf8"),
            "--arch",
            "tiny",
            "--codec",
            codec_file.to_str().expect("utf8"),
            "--size",
            "64",
            "--frames",
            "2",
            "--steps",
            "1",
            "--batch",
            "1",
            "--warmup",
            "1",
            "--stats-clips",
            "1",
            "--art-subjects",
            subjects,
            "-q",
        ];
        if with_art {
            a.extend(["--art", art.to_str().expect("utf8")]);
        }
        ildiff(&a)
    };
    let r = run("heart,cat", true);
    assert!(r.status.success(), "{}", stderr(&r));
    let err = stderr(&r);
    let focus = err
        .lines()
        .find(|l| l.starts_with("art focus:"))
        .unwrap_or_else(|| panic!("no focus line in {err}"));
    // 20 of the 30 files, hearts and cats; no rockets.
    let kept: usize = focus
        .split_whitespace()
        .nth(2)
        .and_then(|n| n.parse().ok())
        .expect("training count");
    let val: usize = focus
        .split_whitespace()
        .nth(5)
        .and_then(|n| n.parse().ok())
        .expect("validation count");
    assert_eq!(kept + val, 20, "{focus}");
    assert!(
        focus.contains("cat ") && !focus.contains("rocket"),
        "{focus}"
    );
    assert!(out.join("generator.safetensors").is_file());
    let r = run("unicorn", true);
    assert!(!r.status.success());
    assert!(stderr(&r).contains("unicorn"), "{}", stderr(&r));
    let r = run("heart", false);
    assert!(!r.status.success());
    assert!(
        stderr(&r).contains("--art-subjects needs --art"),
        "{}",
        stderr(&r)
    );
}

/// `train generator --export-kit` writes what the GPU trainer needs instead of training: a
/// loadable fresh model with measured latent statistics, and every focused training file as a
/// sprite whose caption words are the ones this crate's trainer would use.
#[test]
fn generator_kit_holds_sprites_captions_and_a_loadable_model() {
    use ildiff::model::generator::{load_generator, read_vocabulary};
    let dir = tempfile::tempdir().expect("tempdir");
    let art = dir.path().join("art");
    std::fs::create_dir_all(&art).expect("mkdir");
    let disc = |fill: &str| {
        format!(
            r##"<svg xmlns="http://www.w3.org/2000/svg" width="40" height="40"><rect x="4" y="10" width="32" height="20" fill="{fill}"/></svg>"##
        )
    };
    for i in 0..6 {
        std::fs::write(art.join(format!("red-heart-{i}.svg")), disc("#e02020")).expect("write");
        std::fs::write(art.join(format!("1f431-{i:04}.svg")), disc("#2040e0")).expect("write");
        std::fs::write(art.join(format!("rocket-{i}.svg")), disc("#20e020")).expect("write");
    }
    let codec = dir.path().join("codec");
    let r = ildiff(&tiny_key_codec(codec.to_str().expect("utf8")));
    assert!(r.status.success(), "{}", stderr(&r));
    let kit = dir.path().join("kit");
    let r = ildiff(&[
        "train",
        "generator",
        "-o",
        kit.to_str().expect("utf8"),
        "--export-kit",
        "--arch",
        "tiny",
        "--codec",
        codec.join("codec.safetensors").to_str().expect("utf8"),
        "--art",
        art.to_str().expect("utf8"),
        "--art-subjects",
        "heart,cat",
        "--art-share",
        "1",
        "--size",
        "64",
        "--frames",
        "2",
        "--stats-clips",
        "2",
        "-q",
    ]);
    assert!(r.status.success(), "{}", stderr(&r));
    assert!(
        !kit.join("generator.safetensors").exists(),
        "a kit run must not train"
    );
    let init = kit.join("init.safetensors");
    let model = load_generator(&init).expect("the kit's model loads");
    assert_eq!((model.config.size, model.config.frames), (64, 2));
    assert_ne!(model.config.latent_std, [1.0; 4], "statistics measured");
    let (_, vocab) = read_vocabulary(&init).expect("vocabulary");
    let id = |w: &str| {
        vocab
            .id(w)
            .unwrap_or_else(|| panic!("{w} not in the vocabulary"))
    };

    let v: serde_json::Value =
        serde_json::from_slice(&std::fs::read(kit.join("kit.json")).expect("kit.json"))
            .expect("json");
    assert_eq!(v["size"], 64);
    assert_eq!(v["frames"], 2);
    let sprites = v["sprites"].as_array().expect("sprites");
    let pools = v["pools"].as_array().expect("pools");
    assert_eq!(pools.len(), 2, "one pool per subject: {pools:?}");
    let mut seen = std::collections::HashSet::new();
    for p in pools {
        for i in p.as_array().expect("pool") {
            let i = i.as_u64().expect("index") as usize;
            assert!(i < sprites.len());
            seen.insert(i);
        }
    }
    assert_eq!(
        seen.len(),
        sprites.len(),
        "every sprite is drawn from a pool"
    );
    assert!(
        (8..=12).contains(&sprites.len()),
        "hearts and cats of the training split, no rockets: {}",
        sprites.len()
    );
    let (mut hearts, mut cats) = (0, 0);
    for s in sprites {
        let file = s["file"].as_str().expect("file");
        assert!(!file.contains("rocket"), "{file}");
        let words: Vec<u32> = s["words"]
            .as_array()
            .expect("words")
            .iter()
            .map(|w| w.as_u64().expect("id") as u32)
            .collect();
        let png = image::open(kit.join(s["png"].as_str().expect("png")))
            .expect("sprite decodes")
            .to_rgba8();
        // Long side ceil(0.82 * 64) = 53 px of content plus the clear border.
        let long = png.width().max(png.height());
        assert!(
            (52..=56).contains(&long),
            "{file}: {}x{}",
            png.width(),
            png.height()
        );
        let centre = png.get_pixel(png.width() / 2, png.height() / 2);
        assert_eq!(centre[3], 255, "{file}: straight alpha, opaque inside");
        if file.contains("heart") {
            hearts += 1;
            assert!(
                words.contains(&id("heart")) && words.contains(&id("red")),
                "{file}: {words:?}"
            );
            assert!(centre[0] > 200 && centre[2] < 60, "{file}: {centre:?}");
        } else {
            cats += 1;
            // Named by code point; blue from the picture, since the name has no colour.
            assert!(
                words.contains(&id("cat")) && words.contains(&id("blue")),
                "{file}: {words:?}"
            );
        }
    }
    assert!(hearts > 0 && cats > 0, "{hearts} hearts, {cats} cats");
    for m in v["motions"].as_array().expect("motions") {
        assert!(m["word"].as_u64().is_some(), "motion without a word: {m}");
    }
    assert_eq!(
        v["modifiers"]["glowing"].as_u64(),
        Some(u64::from(id("glowing")))
    );
}

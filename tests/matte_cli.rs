//! End-to-end tests of `ildiff matte`: a tiny random-weight checkpoint written through the
//! library API, a GIF made by ffmpeg, the binary run as a user would, and the APNG re-read with
//! the `png` crate.

mod common;

use std::path::Path;

use common::ildiff;

use candle_core::{DType, Device, Tensor};
use candle_nn::{VarBuilder, VarMap};
use ildiff::model::weights::save_ildiff;
use ildiff::model::{IldiffConfig, IldiffDecoder};

/// The library's tiny model, with or without its codec.
fn tiny_config(codec: bool) -> IldiffConfig {
    let cfg = IldiffConfig::tiny();
    IldiffConfig {
        codec: if codec { cfg.codec } else { None },
        ..cfg
    }
}

/// Writes a random-weight checkpoint whose zero-initialised tensors (latent and adapter
/// injections, temporal output convs) are woken, so the adapter really affects the output.
fn write_checkpoint(path: &Path, codec: bool) {
    let cfg = tiny_config(codec);
    let varmap = VarMap::new();
    let vb = VarBuilder::from_varmap(&varmap, DType::F32, &Device::Cpu);
    IldiffDecoder::new(&cfg, vb).expect("build");
    let mut woken = 0;
    {
        let data = varmap.data().lock().expect("lock");
        for (name, var) in data.iter() {
            let zero = var
                .as_tensor()
                .abs()
                .and_then(|t| t.sum_all())
                .and_then(|t| t.to_scalar::<f32>())
                .expect("sum")
                == 0.0;
            if zero && name.ends_with(".weight") && var.as_tensor().rank() >= 2 {
                let r = Tensor::randn(0f32, 0.3, var.shape(), &Device::Cpu).expect("randn");
                var.set(&r).expect("set");
                if name.starts_with("adapter.inject") {
                    woken += 1;
                }
            }
        }
    }
    assert_eq!(
        woken, 1,
        "the adapter's injection was zero and is now random"
    );
    save_ildiff(&varmap, &cfg, path).expect("save");
}

fn ffmpeg_gif(dir: &Path) -> std::path::PathBuf {
    common::ffmpeg_clip(dir, "in.gif", "48x40", 10, 0.5, &[])
}

#[test]
fn matte_writes_an_rgba_apng_with_every_frame() {
    let dir = tempfile::tempdir().expect("tempdir");
    let model = dir.path().join("tiny.safetensors");
    write_checkpoint(&model, true);
    let gif = ffmpeg_gif(dir.path());
    let out = dir.path().join("out.png");
    let o = ildiff(&[
        "matte",
        gif.to_str().expect("utf8"),
        "-o",
        out.to_str().expect("utf8"),
        "--model",
        model.to_str().expect("utf8"),
        "--window",
        "2",
    ]);
    assert!(o.status.success(), "{}", String::from_utf8_lossy(&o.stderr));
    let file = std::fs::File::open(&out).expect("output exists");
    let mut reader = png::Decoder::new(std::io::BufReader::new(file))
        .read_info()
        .expect("png");
    let info = reader.info();
    assert_eq!((info.width, info.height), (48, 40));
    assert_eq!(
        info.color_type,
        png::ColorType::Rgba,
        "has an alpha channel"
    );
    let actl = info.animation_control.expect("animated");
    assert_eq!(actl.num_frames, 5);
    let mut buf = vec![0; reader.output_buffer_size().expect("size")];
    reader.next_frame(&mut buf).expect("first frame");
}

#[test]
fn matte_explains_missing_models_and_codecs() {
    let dir = tempfile::tempdir().expect("tempdir");
    let gif = ffmpeg_gif(dir.path());
    let out = dir.path().join("out.png");
    let o = std::process::Command::new(env!("CARGO_BIN_EXE_ildiff"))
        .args(["matte", gif.to_str().expect("utf8"), "-o"])
        .arg(&out)
        .env(
            "ILDIFF_DEFAULT_MODEL",
            dir.path().join("not-installed.safetensors"),
        )
        .output()
        .expect("run ildiff");
    assert!(!o.status.success());
    let err = String::from_utf8_lossy(&o.stderr);
    assert!(
        err.contains("no trained default model is installed"),
        "{err}"
    );
    assert!(err.contains("--model"), "{err}");
    assert!(!out.exists());

    let model = dir.path().join("nocodec.safetensors");
    write_checkpoint(&model, false);
    let o = ildiff(&[
        "matte",
        gif.to_str().expect("utf8"),
        "-o",
        out.to_str().expect("utf8"),
        "--model",
        model.to_str().expect("utf8"),
    ]);
    assert!(!o.status.success());
    let err = String::from_utf8_lossy(&o.stderr);
    assert!(
        err.contains("no codec") && err.contains("nocodec.safetensors"),
        "{err}"
    );
    assert!(!out.exists());
}

/// The trained default in `models/default/` cuts a moving sticker-like shape (a ring, so
/// there is a hole to keep clear) out of a flat background with no `--model` flag. This is the
/// acceptance check for a model before it ships; while none ships, the refusal is what
/// `matte_explains_missing_models_and_codecs` checks.
#[test]
fn matte_uses_the_shipped_default_model() {
    use ildiff::media::encode::{Encoding, write};
    use ildiff::media::{Animation, Delay, Frame, LoopCount};
    let shipped =
        Path::new(env!("CARGO_MANIFEST_DIR")).join(ildiff::pipeline::models::DEFAULT_MODEL);
    if !shipped.is_file() {
        eprintln!("no default model ships yet: {}", shipped.display());
        return;
    }
    let dir = tempfile::tempdir().expect("tempdir");
    let (s, n) = (128u32, 6);
    // Truth: inside the ring (radius 22..44 around a moving centre) the sticker, else background.
    let inside = |x: f32, y: f32, t: u32| {
        let (cx, cy) = (56.0 + 3.0 * t as f32, 64.0);
        let d = ((x - cx).powi(2) + (y - cy).powi(2)).sqrt();
        (22.0..44.0).contains(&d)
    };
    let frames = (0..n)
        .map(|t| {
            let img = image::RgbaImage::from_fn(s, s, |x, y| {
                if inside(x as f32, y as f32, t) {
                    image::Rgba([230, 60, 40, 255])
                } else {
                    image::Rgba([70, 140, 220, 255])
                }
            });
            Frame::new(img, Delay::from_fps(12.0))
        })
        .collect();
    let anim = Animation::new(s, s, frames, LoopCount::Infinite).expect("animation");
    let input = dir.path().join("ring.png");
    write(&anim, &Encoding::Apng { palette: None }, &input).expect("write");
    let out = dir.path().join("out.png");
    let o = std::process::Command::new(env!("CARGO_BIN_EXE_ildiff"))
        .args(["matte", "-q"])
        .arg(&input)
        .arg("-o")
        .arg(&out)
        .env_remove("ILDIFF_DEFAULT_MODEL")
        .output()
        .expect("run ildiff");
    assert!(o.status.success(), "{}", String::from_utf8_lossy(&o.stderr));
    let got = ildiff::media::decode::open(&out, &ildiff::media::Limits::default()).expect("read");
    assert_eq!(got.frames.len(), n as usize);
    let (mut fg, mut nf, mut bg, mut nb, mut hole, mut nh) = (0f64, 0, 0f64, 0, 0f64, 0);
    for (t, f) in got.frames.iter().enumerate() {
        for (x, y, p) in f.image.enumerate_pixels() {
            let a = p[3] as f64 / 255.0;
            let (xf, yf) = (x as f32, y as f32);
            let cx = 56.0 + 3.0 * t as f32;
            let d = ((xf - cx).powi(2) + (yf - 64.0).powi(2)).sqrt();
            if (26.0..40.0).contains(&d) {
                fg += a;
                nf += 1;
            } else if d < 16.0 {
                hole += a;
                nh += 1;
            } else if d > 50.0 {
                bg += a;
                nb += 1;
            }
        }
    }
    let (fg, bg, hole) = (fg / nf as f64, bg / nb as f64, hole / nh as f64);
    assert!(fg > 0.8, "ring alpha {fg:.3}");
    assert!(bg < 0.2, "background alpha {bg:.3}");
    assert!(hole < 0.3, "hole alpha {hole:.3}");
}

/// `ildiff matte` and the studio's re-matte job run the same pipeline: on the same clip and
/// model they write byte-identical frames, and the frames the job streams while it runs are
/// those of its result.
#[test]
fn the_studio_rematte_and_the_cli_give_identical_frames() {
    use ildiff::media::presets::{self, FitOptions};
    use ildiff::media::{Limits, decode};
    use ildiff::pipeline::matte::MatteOptions;
    use ildiff::worker::jobs::MatteRequest;
    use ildiff::worker::{Event, Job, Workers};
    use std::sync::Arc;

    let dir = tempfile::tempdir().expect("tempdir");
    let model = dir.path().join("tiny.safetensors");
    write_checkpoint(&model, true);
    let gif = common::ffmpeg_clip(dir.path(), "in.gif", "48x40", 10, 1.1, &[]);
    let cli_out = dir.path().join("cli.png");
    let o = ildiff(&[
        "matte",
        "-q",
        gif.to_str().expect("utf8"),
        "-o",
        cli_out.to_str().expect("utf8"),
        "--model",
        model.to_str().expect("utf8"),
        "--window",
        "3",
    ]);
    assert!(o.status.success(), "{}", String::from_utf8_lossy(&o.stderr));

    let clip = decode::open(&gif, &Limits::default()).expect("decode");
    assert!(clip.len() > 6, "several windows: {}", clip.len());
    let mut workers = Workers::spawn(Arc::new(|| {})).expect("workers");
    let id = workers.next_id();
    workers.submit(Job::Matte {
        id,
        request: MatteRequest {
            clip: Arc::new(clip),
            model: Some(model),
            options: MatteOptions::window(3),
        },
    });
    let mut streamed = Vec::new();
    let studio = loop {
        match workers.recv_timeout(std::time::Duration::from_secs(120)) {
            Some(Event::FramesDone { start, frames, .. }) => {
                assert_eq!(start, streamed.len(), "windows arrive in order");
                streamed.extend(frames);
            }
            Some(Event::Matted { clip, plate, .. }) => {
                // The tiny model keys against the border: it assumes no plate.
                assert!(plate.is_none());
                break clip;
            }
            Some(e) if e.is_final() => panic!("{e:?}"),
            Some(_) => {}
            None => panic!("the re-matte did not finish"),
        }
    };
    assert_eq!(streamed.len(), studio.len());
    assert!(
        studio
            .frames
            .iter()
            .zip(&streamed)
            .all(|(f, s)| f.image == *s)
    );
    let studio_out = dir.path().join("studio.png");
    presets::export(
        &studio,
        None,
        &studio_out,
        &FitOptions::default(),
        None,
        &mut ildiff::NoProgress,
    )
    .expect("export");
    let a = decode::open(&cli_out, &Limits::default()).expect("cli output");
    let b = decode::open(&studio_out, &Limits::default()).expect("studio output");
    assert_eq!(a.len(), b.len());
    for (i, (fa, fb)) in a.frames.iter().zip(&b.frames).enumerate() {
        assert_eq!(fa.delay, fb.delay, "frame {i}");
        assert!(fa.image == fb.image, "frame {i} differs");
    }
    // The matte is not trivial: the alpha varies.
    let alphas: std::collections::BTreeSet<u8> =
        a.frames[0].image.pixels().map(|p| p.0[3]).collect();
    assert!(alphas.len() > 1);
}

/// README's first-run command, read from README itself so the two cannot drift apart: on a
/// fresh clone it re-mattes a shipped example (an octopus over a baked-in transparency
/// checker) into a Telegram sticker with the shipped default, and the checker comes out
/// transparent while the octopus stays.
#[test]
fn the_readme_first_run_command_makes_a_clean_telegram_sticker() {
    let root = Path::new(env!("CARGO_MANIFEST_DIR"));
    let shipped = root.join(ildiff::pipeline::models::DEFAULT_MODEL);
    if !shipped.is_file() {
        eprintln!("no default model ships yet: {}", shipped.display());
        return;
    }
    let readme = std::fs::read_to_string(root.join("README.md")).expect("README");
    let line = readme
        .lines()
        .find(|l| l.starts_with("./target/release/ildiff matte assets/examples/"))
        .expect("README has a first-run command on a shipped example");
    let mut args: Vec<String> = line
        .split_whitespace()
        .skip(1)
        .map(str::to_string)
        .collect();
    let dir = tempfile::tempdir().expect("tempdir");
    let out = dir.path().join("sticker.webm");
    let o = args
        .iter()
        .position(|a| a == "-o")
        .expect("-o in the command");
    args[o + 1] = out.to_string_lossy().into_owned();
    assert!(root.join(&args[1]).is_file(), "{} is shipped", args[1]);
    let run = std::process::Command::new(env!("CARGO_BIN_EXE_ildiff"))
        .args(&args)
        .current_dir(root)
        .env_remove("ILDIFF_DEFAULT_MODEL")
        .output()
        .expect("run ildiff");
    assert!(
        run.status.success(),
        "{line}\n{}",
        String::from_utf8_lossy(&run.stderr)
    );
    let got = ildiff::media::decode::open(&out, &ildiff::media::Limits::default()).expect("read");
    assert!(got.frames.len() >= 8, "{} frames", got.frames.len());
    let (w, h) = (got.width as usize, got.height as usize);
    let (mut ring, mut nr, mut all) = (0f64, 0usize, 0f64);
    for f in &got.frames {
        for (x, y, p) in f.image.enumerate_pixels() {
            let a = f64::from(p[3]) / 255.0;
            all += a;
            let (x, y) = (x as usize, y as usize);
            // The outer tenth of the frame: the octopus never reaches it, the checker fills it.
            if x < w / 10 || y < h / 10 || x >= w - w / 10 || y >= h - h / 10 {
                ring += a;
                nr += 1;
            }
        }
    }
    let ring = ring / nr as f64;
    let cover = all / (w * h * got.frames.len()) as f64;
    assert!(
        ring < 0.05,
        "the baked-in checker stays opaque: mean border alpha {ring:.3}"
    );
    assert!(
        (0.03..0.5).contains(&cover),
        "the octopus should cover part of the frame: mean alpha {cover:.3}"
    );
}

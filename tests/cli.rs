//! End-to-end tests of the `ildiff` binary: inputs made by ffmpeg (an independent encoder), the
//! binary run as a user would, outputs re-read independently. Bad inputs must give a clear error
//! naming the file, a non-zero exit, and no output file.

use std::path::{Path, PathBuf};
use std::process::{Command, Output};

fn ildiff(args: &[&str]) -> Output {
    Command::new(env!("CARGO_BIN_EXE_ildiff"))
        .args(args)
        .output()
        .expect("run ildiff")
}

fn ildiff_env(args: &[&str], env: &[(&str, &str)]) -> Output {
    let mut c = Command::new(env!("CARGO_BIN_EXE_ildiff"));
    c.args(args);
    for (k, v) in env {
        c.env(k, v);
    }
    c.output().expect("run ildiff")
}

fn stderr(o: &Output) -> String {
    String::from_utf8_lossy(&o.stderr).into_owned()
}

/// Makes a clip with ffmpeg's test source (`lavfi`), e.g. `ffmpeg_clip(dir, "in.gif", "160x120", 10, 1.0)`.
fn ffmpeg_clip(dir: &Path, name: &str, size: &str, fps: u32, secs: f32, extra: &[&str]) -> PathBuf {
    let out = dir.join(name);
    let status = Command::new("ffmpeg")
        .args([
            "-hide_banner",
            "-loglevel",
            "error",
            "-y",
            "-f",
            "lavfi",
            "-i",
        ])
        .arg(format!("testsrc=size={size}:rate={fps}"))
        .args(["-t", &secs.to_string()])
        .args(extra)
        .arg(&out)
        .status()
        .expect("ffmpeg runs (install it with apt-get install ffmpeg)");
    assert!(status.success(), "ffmpeg failed to make {name}");
    out
}

fn entries(dir: &Path) -> Vec<String> {
    let mut v: Vec<String> = std::fs::read_dir(dir)
        .expect("list")
        .map(|e| e.expect("entry").file_name().to_string_lossy().into_owned())
        .collect();
    v.sort();
    v
}

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

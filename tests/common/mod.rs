//! Helpers shared by the integration tests that run the `ildiff` binary.
#![allow(dead_code)] // each test binary uses a different subset

use std::path::{Path, PathBuf};
use std::process::{Command, Output};

pub fn ildiff(args: &[&str]) -> Output {
    Command::new(env!("CARGO_BIN_EXE_ildiff"))
        .args(args)
        .output()
        .expect("run ildiff")
}

pub fn ildiff_env(args: &[&str], env: &[(&str, &str)]) -> Output {
    let mut c = Command::new(env!("CARGO_BIN_EXE_ildiff"));
    c.args(args);
    for (k, v) in env {
        c.env(k, v);
    }
    c.output().expect("run ildiff")
}

pub fn stderr(o: &Output) -> String {
    String::from_utf8_lossy(&o.stderr).into_owned()
}

/// Makes a clip with ffmpeg's test source (`lavfi`), e.g. `ffmpeg_clip(dir, "in.gif", "160x120", 10, 1.0)`.
pub fn ffmpeg_clip(
    dir: &Path,
    name: &str,
    size: &str,
    fps: u32,
    secs: f32,
    extra: &[&str],
) -> PathBuf {
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

pub fn entries(dir: &Path) -> Vec<String> {
    let mut v: Vec<String> = std::fs::read_dir(dir)
        .expect("list")
        .map(|e| e.expect("entry").file_name().to_string_lossy().into_owned())
        .collect();
    v.sort();
    v
}

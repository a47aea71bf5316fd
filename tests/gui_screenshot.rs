//! The real `ildiff` binary opens its window under Xvfb (software OpenGL), loads a clip given
//! on the command line and saves a screenshot of what it rendered; the PNG must be a drawn
//! window, not a blank frame. Skipped when Xvfb is not installed, unless
//! `ILDIFF_REQUIRE_XVFB=1` (set by `.ci/run`, which installs it).

mod common;

use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

fn find(tool: &str) -> Option<PathBuf> {
    std::env::var_os("PATH")?
        .to_str()?
        .split(':')
        .map(|d| Path::new(d).join(tool))
        .find(|p| p.is_file())
}

struct Kill(Child);

impl Drop for Kill {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

/// Starts Xvfb on a free display number; returns it with the server.
fn start_xvfb(xvfb: &Path) -> (String, Kill) {
    for n in (90 + std::process::id() % 50)..200 {
        if Path::new(&format!("/tmp/.X11-unix/X{n}")).exists()
            || Path::new(&format!("/tmp/.X{n}-lock")).exists()
        {
            continue;
        }
        let child = Command::new(xvfb)
            .args([
                format!(":{n}").as_str(),
                "-screen",
                "0",
                "1280x800x24",
                "-nolisten",
                "tcp",
            ])
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .expect("start Xvfb");
        let server = Kill(child);
        let t = Instant::now();
        while t.elapsed() < Duration::from_secs(10) {
            if Path::new(&format!("/tmp/.X11-unix/X{n}")).exists() {
                return (format!(":{n}"), server);
            }
            std::thread::sleep(Duration::from_millis(50));
        }
    }
    panic!("Xvfb did not start");
}

/// Runs the studio on `display` with `args`, waiting at most `secs`.
pub fn run_studio(display: &str, config: &Path, args: &[&str], secs: u64) -> (bool, String) {
    let mut child = Command::new(env!("CARGO_BIN_EXE_ildiff"))
        .args(args)
        .arg("--config-dir")
        .arg(config)
        .env("DISPLAY", display)
        .env("LIBGL_ALWAYS_SOFTWARE", "1")
        .env_remove("WAYLAND_DISPLAY")
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("run ildiff");
    let t = Instant::now();
    loop {
        if let Some(status) = child.try_wait().expect("wait") {
            let out = child.wait_with_output().expect("output");
            let text = format!(
                "{}{}",
                String::from_utf8_lossy(&out.stdout),
                String::from_utf8_lossy(&out.stderr)
            );
            return (status.success(), text);
        }
        if t.elapsed().as_secs() > secs {
            let _ = child.kill();
            let out = child.wait_with_output().expect("output");
            return (
                false,
                format!("timed out: {}", String::from_utf8_lossy(&out.stderr)),
            );
        }
        std::thread::sleep(Duration::from_millis(100));
    }
}

#[test]
fn the_real_window_renders_a_loaded_clip_under_xvfb() {
    let Some(xvfb) = find("Xvfb") else {
        assert!(
            std::env::var("ILDIFF_REQUIRE_XVFB").is_err(),
            "Xvfb is required here (apt-get install xvfb)"
        );
        eprintln!("skipped: Xvfb is not installed");
        return;
    };
    let dir = tempfile::tempdir().expect("tempdir");
    let clip = common::ffmpeg_clip(dir.path(), "clip.gif", "96x96", 10, 1.0, &[]);
    let shot = dir.path().join("shot.png");
    let (display, _server) = start_xvfb(&xvfb);
    let (ok, log) = run_studio(
        &display,
        &dir.path().join("config"),
        &[
            clip.to_str().expect("utf8"),
            "--screenshot",
            shot.to_str().expect("utf8"),
            "--view",
            "compare",
        ],
        120,
    );
    assert!(ok, "the studio failed: {log}");
    let img = image::open(&shot).expect("screenshot is a PNG").to_rgba8();
    assert!(
        img.width() >= 640 && img.height() >= 480,
        "{:?}",
        img.dimensions()
    );
    // A rendered window: many colours (text, thumbnails, the clip), no single colour covering
    // nearly everything.
    let mut counts = std::collections::HashMap::new();
    for p in img.pixels() {
        *counts.entry(p.0).or_insert(0usize) += 1;
    }
    let total = (img.width() * img.height()) as usize;
    let top = counts.values().copied().max().unwrap_or(0);
    assert!(counts.len() > 200, "only {} colours", counts.len());
    assert!(
        top * 10 < total * 9,
        "one colour covers {top} of {total} pixels"
    );
    // testsrc's colour bars appear in the preview: saturated yellow-ish and cyan-ish pixels.
    let yellowish = img
        .pixels()
        .filter(|p| p.0[0] > 180 && p.0[1] > 180 && p.0[2] < 80)
        .count();
    assert!(
        yellowish > 50,
        "the clip is not visible ({yellowish} yellow pixels)"
    );
}

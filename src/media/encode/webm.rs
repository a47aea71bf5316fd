//! WebM (VP9 with alpha) through ffmpeg: no Rust crate writes VP9 with an alpha channel.
//!
//! Command (frames go in as raw RGBA on stdin, written from a second thread so a full stderr
//! pipe can never deadlock us):
//! `ffmpeg -f rawvideo -pix_fmt rgba -s WxH -framerate N/D -i - -c:v libvpx-vp9
//!  -pix_fmt yuva420p -b:v 0 -crf CRF -an -row-mt 1 -deadline good -cpu-used 4 -f webm TMP`.
//! Checked on Debian's ffmpeg 5.1: alpha survives with the default alt-ref setting, and the
//! muxer sets `alpha_mode=1` on its own, so neither needs an option. `-b:v 0 -crf` is
//! constant quality. `-cpu-used 4` rather than 2: measured on a matted sticker (256² octopus
//! scaled to 512, crf 20/35/50) it gives the same size and PSNR within 0.06 dB, and on a noisy
//! 512² 90-frame clip a smaller file at equal PSNR, in 40 % of the time; the auto-fit's
//! probes are full encodes, so this time is most of a Telegram export.
//!
//! Frame rate: when every delay is the same, that delay's exact ratio is the rate (`1/30 s` →
//! `-framerate 30/1`, `7/300 s` → `300/7`). Otherwise the clip is first resampled with
//! [`Animation::resample_fps`] to its mean frame rate rounded to a whole number and capped at
//! 30 (the Telegram limit), because WebM from raw input has one constant rate.
//!
//! WebM has no loop count (players such as Telegram loop stickers on their own), so
//! [`crate::media::LoopCount`] is not written.
//!
//! Output goes to the [`AtomicFile`]'s temporary path (`-f webm` because its name ends in
//! `.part`) and is renamed into place only when ffmpeg succeeded.

use std::borrow::Cow;
use std::io::Write;
use std::path::Path;
use std::process::{Command, Stdio};

use crate::error::{Error, Result};
use crate::media::atomic::AtomicFile;
use crate::media::{Animation, ffmpeg};

const PURPOSE: &str = "WebM export";

/// Highest rate used when a clip with uneven delays is resampled.
pub const MAX_RESAMPLE_FPS: u32 = 30;

/// Encodes `anim` to `path` with ffmpeg found by [`ffmpeg::locate`].
pub fn write(anim: &Animation, crf: u8, path: &Path) -> Result<u64> {
    check_crf(crf)?;
    let tool = ffmpeg::locate("ffmpeg", PURPOSE)?;
    write_with(anim, crf, path, &tool)
}

fn check_crf(crf: u8) -> Result<()> {
    if crf > 63 {
        return Err(Error::Invalid(format!(
            "WebM crf must be 0..=63, got {crf}"
        )));
    }
    Ok(())
}

/// Like [`write()`] with an explicit ffmpeg program (tests, callers that located it themselves).
/// A program that cannot be started because it does not exist is [`Error::ToolMissing`].
pub fn write_with(anim: &Animation, crf: u8, path: &Path, ffmpeg_bin: &Path) -> Result<u64> {
    check_crf(crf)?;
    super::validate(anim)?;
    let (anim, (num, den)) = constant_rate(anim)?;
    let out = AtomicFile::new(path)?;
    let mut cmd = Command::new(ffmpeg_bin);
    cmd.args(["-hide_banner", "-loglevel", "error", "-nostdin"])
        .args(["-f", "rawvideo", "-pix_fmt", "rgba"])
        .args(["-s", &format!("{}x{}", anim.width, anim.height)])
        .args(["-framerate", &format!("{num}/{den}")])
        .args(["-i", "-"])
        .args(["-c:v", "libvpx-vp9", "-pix_fmt", "yuva420p"])
        .args(["-b:v", "0", "-crf", &crf.to_string(), "-an"])
        .args(["-row-mt", "1", "-deadline", "good", "-cpu-used", "4"])
        .args(["-f", "webm", "-y"])
        .arg(out.path())
        .stdin(Stdio::piped())
        .stdout(Stdio::null())
        .stderr(Stdio::piped());
    // `-nostdin` only stops ffmpeg reading keyboard commands; `-i -` still reads the pipe.
    let mut child = cmd.spawn().map_err(|e| {
        if e.kind() == std::io::ErrorKind::NotFound {
            Error::ToolMissing {
                tool: "ffmpeg",
                purpose: PURPOSE,
            }
        } else {
            Error::Tool {
                tool: "ffmpeg",
                reason: format!("cannot start {}: {e}", ffmpeg_bin.display()),
            }
        }
    })?;
    let stdin = child.stdin.take();
    let frames = &anim.frames;
    let (output, fed) = std::thread::scope(|s| {
        let feeder = s.spawn(move || -> std::io::Result<()> {
            let Some(mut stdin) = stdin else {
                return Err(std::io::Error::other("no stdin pipe"));
            };
            for f in frames {
                stdin.write_all(f.image.as_raw())?;
            }
            Ok(())
            // Dropping stdin closes the pipe: ffmpeg sees the end of input.
        });
        let output = child.wait_with_output();
        let fed = feeder.join();
        (output, fed)
    });
    let output = output.map_err(|e| Error::Tool {
        tool: "ffmpeg",
        reason: format!("waiting for ffmpeg failed: {e}"),
    })?;
    if !output.status.success() {
        return Err(Error::Tool {
            tool: "ffmpeg",
            reason: format!(
                "{} ({})",
                ffmpeg::stderr_tail(&output.stderr),
                output.status
            ),
        });
    }
    match fed {
        Ok(Ok(())) => {}
        Ok(Err(e)) => {
            return Err(Error::Tool {
                tool: "ffmpeg",
                reason: format!("feeding frames failed: {e}"),
            });
        }
        Err(_) => {
            return Err(Error::Tool {
                tool: "ffmpeg",
                reason: "the frame feeder thread panicked".into(),
            });
        }
    }
    out.commit()
}

/// The clip at one constant rate and that rate as `num/den` frames per second (see module docs).
pub fn constant_rate(anim: &Animation) -> Result<(Cow<'_, Animation>, (u32, u32))> {
    let first = anim.frames.first().map(|f| f.delay);
    if let Some(d) = first
        && anim.frames.iter().all(|f| f.delay == d)
        && d.ratio().0 > 0
    {
        let (num, den) = d.ratio();
        return Ok((Cow::Borrowed(anim), (den, num)));
    }
    let fps = anim.fps().round().clamp(1.0, MAX_RESAMPLE_FPS as f64) as u32;
    let resampled = anim.resample_fps(fps as f64)?;
    Ok((Cow::Owned(resampled), (fps, 1)))
}

#[cfg(test)]
mod tests {
    use super::super::test_clip::{clip, decode_webm, mean_alpha_error};
    use super::*;
    use crate::media::Delay;

    #[test]
    fn rate_exact_or_resampled() {
        let mut anim = clip(6);
        assert_eq!(constant_rate(&anim).expect("rate").1, (25, 1));
        for f in &mut anim.frames {
            f.delay = Delay::from_ratio(7, 300);
        }
        assert_eq!(constant_rate(&anim).expect("rate").1, (300, 7));
        anim.frames[0].delay = Delay::from_millis(100);
        let (r, fps) = constant_rate(&anim).expect("rate");
        // 6 frames in 0.2167 s = 27.7 fps → 28 fps, same duration.
        assert_eq!(fps, (28, 1));
        assert!((r.duration_secs() - anim.duration_secs()).abs() < 1.0 / 28.0);
    }

    #[test]
    fn round_trip_keeps_alpha_close() {
        let anim = clip(6);
        let dir = tempfile::tempdir().expect("tempdir");
        let path = dir.path().join("out.webm");
        let size = write(&anim, 30, &path).expect("encode");
        assert_eq!(size, std::fs::metadata(&path).expect("stat").len());
        let frames = decode_webm(&path, anim.width, anim.height);
        assert_eq!(frames.len(), anim.frames.len());
        let err = mean_alpha_error(&anim, &frames);
        // Measured mean |Δα| 0.31/255 (max 5/255) at crf 30 on this clip (crf 20: 0.21,
        // crf 40: 0.50).
        assert!(err < 1.0 / 255.0, "mean |Δα| = {}/255", err * 255.0);
        // Only the output is left in the folder.
        assert_eq!(std::fs::read_dir(dir.path()).expect("ls").count(), 1);
    }

    #[test]
    fn missing_program_is_tool_missing_and_leaves_nothing() {
        let dir = tempfile::tempdir().expect("tempdir");
        let path = dir.path().join("out.webm");
        let err = write_with(&clip(2), 30, &path, Path::new("/nonexistent/ffmpeg"))
            .expect_err("must fail");
        assert_eq!(err.kind(), "tool-missing");
        assert_eq!(std::fs::read_dir(dir.path()).expect("ls").count(), 0);
    }

    #[test]
    fn ffmpeg_failure_is_tool_error_and_leaves_nothing() {
        // `false` runs and fails, standing in for an ffmpeg that errors out.
        let Ok(bin) = which("false") else { return };
        let dir = tempfile::tempdir().expect("tempdir");
        let path = dir.path().join("out.webm");
        let err = write_with(&clip(2), 30, &path, &bin).expect_err("must fail");
        assert_eq!(err.kind(), "tool");
        assert_eq!(std::fs::read_dir(dir.path()).expect("ls").count(), 0);
    }

    fn which(name: &str) -> std::result::Result<std::path::PathBuf, ()> {
        let path = std::env::var_os("PATH").ok_or(())?;
        std::env::split_paths(&path)
            .map(|d| d.join(name))
            .find(|p| p.is_file())
            .ok_or(())
    }

    /// Runs in a child process with `ILDIFF_FFMPEG` pointing nowhere (env vars are process-wide,
    /// so setting it here would race other tests).
    #[test]
    fn env_override_to_missing_ffmpeg_is_tool_missing() {
        if std::env::var_os("ILDIFF_ENCODE_CHILD").is_some() {
            let dir = std::env::var_os("ILDIFF_ENCODE_CHILD_DIR").expect("dir");
            let path = Path::new(&dir).join("out.webm");
            let err = write(&clip(2), 30, &path).expect_err("must fail");
            assert_eq!(err.kind(), "tool-missing");
            return;
        }
        let dir = tempfile::tempdir().expect("tempdir");
        let exe = std::env::current_exe().expect("test binary");
        let out = Command::new(exe)
            .args([
                "--exact",
                "media::encode::webm::tests::env_override_to_missing_ffmpeg_is_tool_missing",
                "--test-threads",
                "1",
            ])
            .env("ILDIFF_ENCODE_CHILD", "1")
            .env("ILDIFF_ENCODE_CHILD_DIR", dir.path())
            .env("ILDIFF_FFMPEG", "/nonexistent/ildiff-ffmpeg")
            .output()
            .expect("run child");
        let stdout = String::from_utf8_lossy(&out.stdout);
        assert!(out.status.success(), "child failed: {stdout}");
        assert!(stdout.contains("1 passed"), "child did not run: {stdout}");
        assert_eq!(std::fs::read_dir(dir.path()).expect("ls").count(), 0);
    }
}

//! Video import (MP4/MOV, WebM/MKV) through `ffprobe` and `ffmpeg`: no Rust crate decodes VP9
//! with alpha. `ffprobe` gives the size, rate, codec and alpha flag; `ffmpeg` then pipes raw
//! RGBA at a constant rate, and [`VideoSource`] reads one frame's bytes per `next_frame`, so long
//! clips stream. For VP9/VP8 with an alpha side stream, the libvpx decoder is named *before* the
//! input: ffmpeg's native vp9 decoder silently drops alpha. Audio and subtitles are ignored.

use std::io::Read;
use std::path::{Path, PathBuf};
use std::process::{Child, ChildStdout, Stdio};
use std::thread::JoinHandle;

use super::{FrameSource, SourceInfo};
use crate::error::{Error, Result};
use crate::media::ffmpeg;
use crate::media::{Delay, Format, Frame, Limits, LoopCount};

const PURPOSE: &str = "importing video (MP4, MOV, WebM, MKV)";

/// What `ffprobe` says about the first video stream.
#[derive(Debug, Clone, PartialEq)]
pub(crate) struct VideoProbe {
    pub codec: String,
    /// Display size (after the rotation ffmpeg applies when decoding).
    pub width: u32,
    pub height: u32,
    /// Frames per second as an exact ratio (num, den).
    pub fps: (u32, u32),
    /// Frame count stated by the container, if any.
    pub nb_frames: Option<u64>,
    /// Duration in seconds, if known.
    pub duration: Option<f64>,
    /// WebM `alpha_mode=1`: a VP8/VP9 alpha side stream is present.
    pub alpha: bool,
}

impl VideoProbe {
    /// The number of frames ffmpeg will deliver at [`VideoProbe::fps`], if it can be told.
    pub fn frame_estimate(&self) -> Option<u64> {
        self.nb_frames.or_else(|| {
            let (n, d) = self.fps;
            self.duration
                .filter(|s| s.is_finite() && *s >= 0.0)
                .map(|s| (s * n as f64 / d as f64).round() as u64)
        })
    }
}

fn parse_ratio(s: Option<&str>) -> Option<(u32, u32)> {
    let (n, d) = s?.split_once('/')?;
    let (n, d) = (n.trim().parse::<u32>().ok()?, d.trim().parse::<u32>().ok()?);
    (n > 0 && d > 0).then_some((n, d))
}

/// Parses `ffprobe -of json` output for one video stream.
pub(crate) fn parse_probe(json: &str) -> Option<VideoProbe> {
    let v: serde_json::Value = serde_json::from_str(json).ok()?;
    let s = v.get("streams")?.as_array()?.first()?;
    let num = |k: &str| -> Option<u64> {
        let x = s.get(k)?;
        x.as_u64().or_else(|| x.as_str()?.parse().ok())
    };
    let secs = |x: Option<&serde_json::Value>| -> Option<f64> { x?.as_str()?.parse().ok() };
    let (mut width, mut height) = (num("width")? as u32, num("height")? as u32);
    let rotation = s
        .get("side_data_list")
        .and_then(|l| l.as_array())
        .into_iter()
        .flatten()
        .find_map(|d| d.get("rotation").and_then(|r| r.as_f64()))
        .or_else(|| s.get("tags")?.get("rotate")?.as_str()?.parse::<f64>().ok())
        .unwrap_or(0.0);
    if (rotation.round() as i64).rem_euclid(180) == 90 {
        (width, height) = (height, width);
    }
    // A very high r_frame_rate is a timebase, not a rate (VFR files); fall back to the average.
    let r = parse_ratio(s.get("r_frame_rate").and_then(|x| x.as_str()))
        .filter(|&(n, d)| n as f64 / d as f64 <= 240.0);
    let avg = parse_ratio(s.get("avg_frame_rate").and_then(|x| x.as_str()));
    let fps = r.or(avg).unwrap_or((30, 1));
    let alpha = s
        .get("tags")
        .and_then(|t| t.as_object())
        .into_iter()
        .flatten()
        .any(|(k, v)| k.eq_ignore_ascii_case("alpha_mode") && v.as_str() == Some("1"));
    Some(VideoProbe {
        codec: s.get("codec_name")?.as_str()?.to_string(),
        width,
        height,
        fps,
        nb_frames: num("nb_frames").filter(|&n| n > 0),
        duration: secs(s.get("duration")).or_else(|| secs(v.get("format")?.get("duration"))),
        alpha,
    })
}

/// Runs `ffprobe` on `path`.
pub(crate) fn probe_video(path: &Path, format: Format) -> Result<VideoProbe> {
    let out = ffmpeg::command("ffprobe", PURPOSE)?
        .args([
            "-select_streams",
            "v:0",
            "-show_entries",
            "stream=codec_name,width,height,r_frame_rate,avg_frame_rate,nb_frames,duration:\
             stream_tags:stream_side_data:format=duration",
            "-of",
            "json",
        ])
        .arg(path)
        .stdin(Stdio::null())
        .output()
        .map_err(|e| Error::Tool {
            tool: "ffprobe",
            reason: format!("could not run it ({e}): {}", path.display()),
        })?;
    if !out.status.success() {
        return Err(Error::decode(
            format.name(),
            path,
            format!("ffprobe: {}", ffmpeg::stderr_tail(&out.stderr)),
        ));
    }
    let json = String::from_utf8_lossy(&out.stdout);
    parse_probe(&json).ok_or_else(|| Error::decode(format.name(), path, "no video stream found"))
}

/// The ffmpeg decoder to name before `-i`, if the default one would lose something.
fn forced_decoder(p: &VideoProbe) -> Option<&'static str> {
    match (p.codec.as_str(), p.alpha) {
        ("vp9", true) => Some("libvpx-vp9"),
        ("vp8", true) => Some("libvpx"),
        _ => None,
    }
}

struct Running {
    child: Child,
    stdout: ChildStdout,
    stderr: Option<JoinHandle<Vec<u8>>>,
}

impl Running {
    /// Waits for ffmpeg and returns its success and stderr.
    fn finish(mut self) -> (bool, Vec<u8>) {
        let ok = self.child.wait().map(|s| s.success()).unwrap_or(false);
        let err = self
            .stderr
            .take()
            .and_then(|h| h.join().ok())
            .unwrap_or_default();
        (ok, err)
    }
}

impl Drop for Running {
    fn drop(&mut self) {
        // Stop a decode we no longer read (no-op once it has exited), and reap it.
        let _ = self.child.kill();
        let _ = self.child.wait();
        if let Some(h) = self.stderr.take() {
            let _ = h.join();
        }
    }
}

pub(super) struct VideoSource {
    info: SourceInfo,
    path: PathBuf,
    format: Format,
    limits: Limits,
    probe: VideoProbe,
    /// The ffmpeg program (resolved at open; tests substitute a failing stand-in).
    program: PathBuf,
    running: Option<Running>,
    finished: bool,
    done: u64,
    delay: Delay,
}

impl VideoSource {
    /// Probes the file and checks the limits; ffmpeg starts on the first `next_frame`.
    pub fn open(path: &Path, format: Format, limits: &Limits) -> Result<VideoSource> {
        // Fail early with install advice even if only ffmpeg (not ffprobe) is missing.
        let program = ffmpeg::locate("ffmpeg", PURPOSE)?;
        let probe = probe_video(path, format)?;
        limits.check_canvas(probe.width, probe.height, path)?;
        limits.check_bytes(probe.width, probe.height, 1, path)?;
        if let Some(n) = probe.frame_estimate() {
            limits.check_frames(n, path)?;
        }
        let (n, d) = probe.fps;
        Ok(VideoSource {
            info: SourceInfo {
                format,
                animated: true,
                width: probe.width,
                height: probe.height,
                frame_count: probe.nb_frames,
                loops: LoopCount::Infinite,
            },
            path: path.to_path_buf(),
            format,
            limits: *limits,
            delay: Delay::from_ratio(d, n),
            probe,
            program,
            running: None,
            finished: false,
            done: 0,
        })
    }

    fn spawn(&self) -> Result<Running> {
        let mut cmd = std::process::Command::new(&self.program);
        cmd.args(["-hide_banner", "-loglevel", "error", "-nostdin"]);
        if let Some(dec) = forced_decoder(&self.probe) {
            cmd.args(["-c:v", dec]);
        }
        let (n, d) = self.probe.fps;
        cmd.arg("-i")
            .arg(&self.path)
            .args(["-map", "0:v:0", "-an", "-sn", "-dn"])
            .args(["-vf", &format!("fps={n}/{d}")])
            // One frame past the limit is enough to report it; never decode the rest.
            .args([
                "-frames:v",
                &(self.limits.max_frames as u64 + 1).to_string(),
            ])
            .args(["-f", "rawvideo", "-pix_fmt", "rgba", "-"])
            .stdin(Stdio::null())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped());
        let mut child = cmd.spawn().map_err(|e| Error::Tool {
            tool: "ffmpeg",
            reason: format!("could not start it ({e}): {}", self.path.display()),
        })?;
        let (Some(stdout), Some(mut stderr)) = (child.stdout.take(), child.stderr.take()) else {
            let _ = child.kill();
            let _ = child.wait();
            return Err(Error::Tool {
                tool: "ffmpeg",
                reason: format!("no output pipes: {}", self.path.display()),
            });
        };
        // Drain stderr on its own thread: a chatty failure must not fill the pipe and stall
        // ffmpeg while we wait on stdout.
        let stderr = std::thread::Builder::new()
            .name("ffmpeg-stderr".into())
            .spawn(move || {
                let mut buf = Vec::new();
                let mut chunk = [0u8; 4096];
                while let Ok(n) = stderr.read(&mut chunk) {
                    if n == 0 {
                        break;
                    }
                    buf.extend_from_slice(&chunk[..n]);
                    if buf.len() > 64 * 1024 {
                        buf.drain(..buf.len() - 32 * 1024);
                    }
                }
                buf
            })
            .map_err(|e| Error::Tool {
                tool: "ffmpeg",
                reason: format!(
                    "could not start a reader thread ({e}): {}",
                    self.path.display()
                ),
            })?;
        Ok(Running {
            child,
            stdout,
            stderr: Some(stderr),
        })
    }

    fn failed(&self, stderr: &[u8], what: &str) -> Error {
        let mut reason = format!("{what}: {}", ffmpeg::stderr_tail(stderr));
        if let Some(dec) = forced_decoder(&self.probe)
            && String::from_utf8_lossy(stderr).contains(dec)
        {
            reason.push_str(&format!(
                " (this ffmpeg lacks the {dec} decoder needed to keep the alpha channel)"
            ));
        }
        Error::Tool {
            tool: "ffmpeg",
            reason: format!("{reason}: {}", self.path.display()),
        }
    }
}

impl FrameSource for VideoSource {
    fn info(&self) -> &SourceInfo {
        &self.info
    }

    fn next_frame(&mut self) -> Result<Option<Frame>> {
        if self.finished {
            return Ok(None);
        }
        if self.running.is_none() {
            self.running = Some(self.spawn()?);
        }
        let Some(running) = self.running.as_mut() else {
            return Ok(None);
        };
        let size = self.info.width as usize * self.info.height as usize * 4;
        let mut buf = vec![0u8; size];
        let mut filled = 0;
        while filled < size {
            match running.stdout.read(&mut buf[filled..]) {
                Ok(0) => break,
                Ok(n) => filled += n,
                Err(e) if e.kind() == std::io::ErrorKind::Interrupted => {}
                Err(e) => return Err(Error::io("reading ffmpeg output", &self.path, e)),
            }
        }
        if filled == size {
            self.done += 1;
            if self.done > self.limits.max_frames as u64 {
                self.limits.check_frames(self.done, &self.path)?;
            }
            let image = image::RgbaImage::from_raw(self.info.width, self.info.height, buf)
                .ok_or_else(|| Error::decode(self.format.name(), &self.path, "bad frame size"))?;
            return Ok(Some(Frame::new(image, self.delay)));
        }
        // End of stream: a clean end needs a successful exit and no partial frame.
        self.finished = true;
        let (ok, stderr) = match self.running.take() {
            Some(r) => r.finish(),
            None => (false, Vec::new()),
        };
        if !ok {
            return Err(self.failed(&stderr, "decoding stopped"));
        }
        if filled > 0 {
            return Err(Error::decode(
                self.format.name(),
                &self.path,
                format!(
                    "the last frame is truncated ({filled} of {size} bytes): {}",
                    ffmpeg::stderr_tail(&stderr)
                ),
            ));
        }
        if self.done == 0 {
            return Err(Error::decode(
                self.format.name(),
                &self.path,
                format!(
                    "ffmpeg produced no frames: {}",
                    ffmpeg::stderr_tail(&stderr)
                ),
            ));
        }
        Ok(None)
    }
}

#[cfg(test)]
mod tests {
    use std::io::Write;
    use std::process::Command;

    use image::RgbaImage;

    use super::*;
    use crate::media::decode::{open, open_source};

    fn have_ffmpeg() -> bool {
        ffmpeg::locate("ffmpeg", "tests").is_ok() && ffmpeg::locate("ffprobe", "tests").is_ok()
    }

    /// A 32×24 clip: a moving opaque square on a transparent background, with a half-alpha band.
    fn frames(n: u32) -> Vec<RgbaImage> {
        (0..n)
            .map(|i| {
                RgbaImage::from_fn(32, 24, |x, y| {
                    if (4 + i..14 + i).contains(&x) && (6..16).contains(&y) {
                        image::Rgba([230, 40, 40, 255])
                    } else if y >= 20 {
                        image::Rgba([40, 40, 230, 128])
                    } else {
                        image::Rgba([0, 0, 0, 0])
                    }
                })
            })
            .collect()
    }

    fn encode(frames: &[RgbaImage], out: &Path, codec_args: &[&str]) {
        let (w, h) = frames[0].dimensions();
        let mut child = Command::new("ffmpeg")
            .args(["-hide_banner", "-loglevel", "error", "-y", "-f", "rawvideo"])
            .args([
                "-pix_fmt",
                "rgba",
                "-s",
                &format!("{w}x{h}"),
                "-framerate",
                "10",
            ])
            .args(["-i", "-"])
            .args(codec_args)
            .arg(out)
            .stdin(Stdio::piped())
            .spawn()
            .expect("spawn ffmpeg");
        {
            let mut stdin = child.stdin.take().expect("stdin");
            for f in frames {
                stdin.write_all(f.as_raw()).expect("write frame");
            }
        }
        assert!(
            child.wait().expect("wait").success(),
            "ffmpeg encode failed"
        );
    }

    #[test]
    fn parses_probe_json() {
        let json = r#"{"streams":[{"codec_name":"vp9","width":64,"height":48,
            "r_frame_rate":"30000/1001","avg_frame_rate":"0/0",
            "tags":{"alpha_mode":"1","DURATION":"00:00:01.000000000"}}],
            "format":{"duration":"2.002000"}}"#;
        let p = parse_probe(json).expect("parse");
        assert_eq!((p.width, p.height, p.fps), (64, 48, (30000, 1001)));
        assert!(p.alpha);
        assert_eq!(p.nb_frames, None);
        assert_eq!(p.frame_estimate(), Some(60));
        let rotated = r#"{"streams":[{"codec_name":"h264","width":64,"height":48,
            "r_frame_rate":"90000/1","avg_frame_rate":"25/1","nb_frames":"50",
            "side_data_list":[{"rotation":-90}]}]}"#;
        let p = parse_probe(rotated).expect("parse");
        assert_eq!((p.width, p.height, p.fps), (48, 64, (25, 1)));
        assert!(!p.alpha);
        assert_eq!(p.frame_estimate(), Some(50));
        assert!(parse_probe(r#"{"streams":[]}"#).is_none());
    }

    #[test]
    fn webm_vp9_alpha_survives() {
        if !have_ffmpeg() {
            eprintln!("skipping: ffmpeg not installed");
            return;
        }
        let dir = tempfile::tempdir().expect("tempdir");
        let path = dir.path().join("clip.webm");
        let src = frames(6);
        encode(
            &src,
            &path,
            &[
                "-c:v",
                "libvpx-vp9",
                "-pix_fmt",
                "yuva420p",
                "-b:v",
                "0",
                "-crf",
                "20",
            ],
        );
        let info = open_source(&path, &Limits::default())
            .expect("open")
            .info()
            .clone();
        assert_eq!(
            (info.format, info.width, info.height),
            (Format::WebM, 32, 24)
        );
        let a = open(&path, &Limits::default()).expect("decode");
        assert_eq!(a.frames.len(), 6);
        assert_eq!(a.frames[0].delay, Delay::from_ratio(1, 10));
        let mut sum = 0.0;
        let mut count = 0.0;
        for (ours, want) in a.frames.iter().zip(&src) {
            for (p, q) in ours.image.pixels().zip(want.pixels()) {
                sum += p.0[3].abs_diff(q.0[3]) as f64;
                count += 1.0;
            }
            // A transparent corner reads back transparent, the square opaque.
            assert!(ours.image.get_pixel(30, 1).0[3] < 16);
            assert!(ours.image.get_pixel(9, 11).0[3] > 240);
            let band = ours.image.get_pixel(16, 22).0[3];
            assert!((100..=156).contains(&band), "half-alpha band read {band}");
        }
        let mean = sum / count;
        assert!(mean < 6.0, "mean |Δα| = {mean}");
    }

    #[test]
    fn mp4_opaque_and_truncated() {
        if !have_ffmpeg() {
            eprintln!("skipping: ffmpeg not installed");
            return;
        }
        let dir = tempfile::tempdir().expect("tempdir");
        let path = dir.path().join("clip.mp4");
        let src = frames(5);
        encode(&src, &path, &["-c:v", "libx264", "-pix_fmt", "yuv420p"]);
        // The extension lies: sniffing must still find MP4.
        let liar = dir.path().join("clip.gif");
        std::fs::copy(&path, &liar).expect("copy");
        let a = open(&liar, &Limits::default()).expect("decode");
        assert_eq!((a.width, a.height, a.frames.len()), (32, 24, 5));
        assert!(
            a.frames
                .iter()
                .all(|f| f.image.pixels().all(|p| p.0[3] == 255))
        );
        let red = a.frames[0].image.get_pixel(9, 11).0;
        assert!(red[0] > 180 && red[1] < 90, "{red:?}");

        // Limits from the probe, before any frame is decoded.
        let few = Limits {
            max_frames: 3,
            ..Limits::default()
        };
        assert_eq!(open(&path, &few).expect_err("frames").kind(), "limits");
        let narrow = Limits {
            max_side: 16,
            ..Limits::default()
        };
        assert_eq!(open(&path, &narrow).expect_err("side").kind(), "limits");

        // A truncated MP4 (moov at the end is lost) fails with a message naming the file.
        let bytes = std::fs::read(&path).expect("read");
        let cut = dir.path().join("cut.mp4");
        std::fs::write(&cut, &bytes[..bytes.len() / 2]).expect("write");
        let e = open(&cut, &Limits::default()).expect_err("truncated");
        assert!(matches!(e.kind(), "decode" | "tool"), "{e}");
        assert!(e.to_string().contains("cut.mp4"), "{e}");
    }

    /// Opens a real clip, then swaps ffmpeg for a shell script that writes `bytes` bytes of
    /// frame data, a message on stderr, and exits with `code`.
    fn with_fake_ffmpeg(bytes: usize, code: i32) -> (tempfile::TempDir, VideoSource) {
        use std::os::unix::fs::PermissionsExt;
        let dir = tempfile::tempdir().expect("tempdir");
        let path = dir.path().join("clip.mp4");
        encode(
            &frames(3),
            &path,
            &["-c:v", "libx264", "-pix_fmt", "yuv420p"],
        );
        let mut src = VideoSource::open(&path, Format::Mp4, &Limits::default()).expect("open");
        let script = dir.path().join("fake-ffmpeg");
        std::fs::write(
            &script,
            format!(
                "#!/bin/sh\nhead -c {bytes} /dev/zero\necho 'simulated: corrupt packet' >&2\n\
                 exit {code}\n"
            ),
        )
        .expect("script");
        std::fs::set_permissions(&script, std::fs::Permissions::from_mode(0o755)).expect("chmod");
        // A test on another thread that forks while the script's write handle is open hands
        // its child a copy until that child execs, and running the script then fails with
        // "Text file busy": wait until it runs once.
        for _ in 0..100 {
            match std::process::Command::new(&script)
                .stdout(std::process::Stdio::null())
                .stderr(std::process::Stdio::null())
                .status()
            {
                Err(e) if e.raw_os_error() == Some(libc::ETXTBSY) => {
                    std::thread::sleep(std::time::Duration::from_millis(10))
                }
                _ => break,
            }
        }
        src.program = script;
        (dir, src)
    }

    #[test]
    fn ffmpeg_dying_halfway_is_a_tool_error_with_its_stderr() {
        if !have_ffmpeg() {
            eprintln!("skipping: ffmpeg not installed");
            return;
        }
        let frame = 32 * 24 * 4;
        let (_d, mut src) = with_fake_ffmpeg(frame + frame / 2, 1);
        assert!(src.next_frame().expect("first frame").is_some());
        let e = src.next_frame().expect_err("died");
        assert_eq!(e.kind(), "tool", "{e}");
        let msg = e.to_string();
        assert!(
            msg.contains("simulated: corrupt packet") && msg.contains("clip.mp4"),
            "{msg}"
        );
        assert!(src.next_frame().expect("after the end").is_none());

        let (_d, mut src) = with_fake_ffmpeg(frame + frame / 2, 0);
        assert!(src.next_frame().expect("first frame").is_some());
        let e = src.next_frame().expect_err("truncated");
        assert_eq!(e.kind(), "decode", "{e}");
        assert!(e.to_string().contains("truncated"), "{e}");

        let (_d, mut src) = with_fake_ffmpeg(0, 0);
        let e = src.next_frame().expect_err("no frames");
        assert!(e.to_string().contains("no frames"), "{e}");
    }

    #[test]
    fn dropping_a_source_mid_stream_stops_ffmpeg() {
        if !have_ffmpeg() {
            eprintln!("skipping: ffmpeg not installed");
            return;
        }
        let dir = tempfile::tempdir().expect("tempdir");
        let path = dir.path().join("clip.webm");
        encode(
            &frames(8),
            &path,
            &["-c:v", "libvpx-vp9", "-pix_fmt", "yuva420p"],
        );
        let mut s = open_source(&path, &Limits::default()).expect("open");
        assert!(s.next_frame().expect("frame").is_some());
        drop(s); // must not hang or leak: Running::drop kills and reaps ffmpeg
    }
}

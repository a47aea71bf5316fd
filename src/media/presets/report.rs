//! The export report: what was written, read back from the file itself (the importers, and
//! `ffprobe` for WebM), and one PASS/FAIL line per platform rule. Checking the written bytes
//! rather than the fitter's intentions is what catches container rounding and encoder surprises.

use std::fmt;
use std::io::Read;
use std::path::{Path, PathBuf};

use serde::Serialize;

use super::Preset;
use super::rules::{AlphaRule, LoopRule, Rules, TIME_EPS, group_digits};
use crate::error::{Error, Result};
use crate::media::{Animation, Format, Limits, LoopCount, decode, ffmpeg, format::sniff};

/// One rule's verdict.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct RuleCheck {
    /// Short rule name ("canvas", "size", ...).
    pub name: String,
    pub pass: bool,
    /// The measured value and the limit ("512x384 (one side exactly 512, the other ≤ 512)").
    pub detail: String,
}

impl RuleCheck {
    fn new(name: &str, pass: bool, detail: impl Into<String>) -> Self {
        RuleCheck {
            name: name.to_string(),
            pass,
            detail: detail.into(),
        }
    }
}

impl fmt::Display for RuleCheck {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let verdict = if self.pass { "PASS" } else { "FAIL" };
        write!(f, "{verdict} {} {}", self.name, self.detail)
    }
}

/// What an export wrote, as read back from the file, and how it meets each rule.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct ExportReport {
    pub path: PathBuf,
    /// What was made ("Telegram video sticker", "WhatsApp tray icon", "plain export").
    pub target: String,
    pub preset: Option<Preset>,
    pub format: Format,
    /// File size (for a frame folder: the sum of its files).
    pub bytes: u64,
    pub width: u32,
    pub height: u32,
    /// Mean frame rate (for WebM: the stream's frame rate).
    pub fps: f64,
    pub duration_secs: f64,
    pub frames: usize,
    pub loops: LoopCount,
    /// The encoder setting chosen ("crf 31", "webp q 78", "apng palette 128").
    pub setting: String,
    /// What the fitter changed to meet the rules (cuts, resampling, lowered frame rate).
    pub notes: Vec<String>,
    /// Empty for a plain export.
    pub rules: Vec<RuleCheck>,
    /// True when every rule passes. A failing file is kept on disk, and this says so.
    pub passed: bool,
}

impl ExportReport {
    /// The rules that failed.
    pub fn failures(&self) -> impl Iterator<Item = &RuleCheck> {
        self.rules.iter().filter(|r| !r.pass)
    }
}

impl fmt::Display for ExportReport {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let loops = match self.loops {
            LoopCount::Infinite => "loops forever".to_string(),
            LoopCount::Plays(1) => "plays once".to_string(),
            LoopCount::Plays(n) => format!("plays {n} times"),
        };
        writeln!(
            f,
            "{} ({}): {} {}x{}, {} frames, {:.2} fps, {:.3} s, {loops}, {} bytes, {}",
            self.path.display(),
            self.target,
            self.format.name(),
            self.width,
            self.height,
            self.frames,
            self.fps,
            self.duration_secs,
            group_digits(self.bytes),
            self.setting
        )?;
        for n in &self.notes {
            writeln!(f, "note: {n}")?;
        }
        for r in &self.rules {
            writeln!(f, "{r}")?;
        }
        if !self.rules.is_empty() && !self.passed {
            let names: Vec<&str> = self.failures().map(|r| r.name.as_str()).collect();
            writeln!(
                f,
                "the file was kept but breaks {} rule(s): {}",
                names.len(),
                names.join(", ")
            )?;
        }
        Ok(())
    }
}

/// What `ffprobe` says about a video.
#[derive(Debug, Clone, Default, PartialEq)]
pub(crate) struct VideoProbe {
    pub codec: Option<String>,
    pub width: u32,
    pub height: u32,
    /// `r_frame_rate` as num/den.
    pub frame_rate: Option<(u64, u64)>,
    /// The `alpha_mode` tag of the video stream ("1" when VP9 alpha is present).
    pub alpha_mode: Option<String>,
    pub audio_streams: usize,
    pub duration: Option<f64>,
}

impl VideoProbe {
    pub fn fps(&self) -> Option<f64> {
        self.frame_rate
            .filter(|&(_, d)| d > 0)
            .map(|(n, d)| n as f64 / d as f64)
    }
}

/// Parses `ffprobe -of json` output (streams with codec_type/codec_name/width/height/
/// r_frame_rate and tags, plus format.duration).
pub(crate) fn parse_probe(json: &str) -> Result<VideoProbe> {
    let v: serde_json::Value = serde_json::from_str(json).map_err(|e| Error::Tool {
        tool: "ffprobe",
        reason: format!("unreadable JSON output: {e}"),
    })?;
    let mut probe = VideoProbe::default();
    let streams = v["streams"].as_array().cloned().unwrap_or_default();
    let mut seen_video = false;
    for s in &streams {
        match s["codec_type"].as_str() {
            Some("audio") => probe.audio_streams += 1,
            Some("video") if !seen_video => {
                seen_video = true;
                probe.codec = s["codec_name"].as_str().map(str::to_string);
                probe.width = s["width"].as_u64().unwrap_or(0) as u32;
                probe.height = s["height"].as_u64().unwrap_or(0) as u32;
                probe.frame_rate = s["r_frame_rate"].as_str().and_then(|r| {
                    let (n, d) = r.split_once('/')?;
                    Some((n.trim().parse().ok()?, d.trim().parse().ok()?))
                });
                // Matroska tags keep the muxer's case; accept either.
                let tags = &s["tags"];
                probe.alpha_mode = tags["alpha_mode"]
                    .as_str()
                    .or_else(|| tags["ALPHA_MODE"].as_str())
                    .map(str::to_string);
            }
            _ => {}
        }
    }
    probe.duration = v["format"]["duration"]
        .as_str()
        .and_then(|d| d.parse::<f64>().ok());
    Ok(probe)
}

/// Runs `ffprobe` on a written video.
pub(crate) fn probe_video(path: &Path) -> Result<VideoProbe> {
    let purpose = "checking exported WebM stickers";
    let out = ffmpeg::command("ffprobe", purpose)?
        .args([
            "-show_entries",
            "stream=codec_type,codec_name,width,height,r_frame_rate:stream_tags=alpha_mode:format=duration",
            "-of",
            "json",
        ])
        .arg(path)
        .output()
        .map_err(|e| Error::io("run ffprobe on", path, e))?;
    if !out.status.success() {
        return Err(Error::Tool {
            tool: "ffprobe",
            reason: format!("{}: {}", ffmpeg::stderr_tail(&out.stderr), path.display()),
        });
    }
    parse_probe(&String::from_utf8_lossy(&out.stdout))
}

/// The written file as the importers (and ffprobe) see it.
#[derive(Debug, Clone, PartialEq)]
pub(crate) struct ReadBack {
    pub sniffed: Option<Format>,
    pub bytes: u64,
    pub width: u32,
    pub height: u32,
    pub frames: usize,
    /// Shortest frame delay in milliseconds.
    pub min_delay_ms: f64,
    pub duration_secs: f64,
    pub fps: f64,
    pub loops: LoopCount,
    pub video: Option<VideoProbe>,
    /// Some pixel of the first frame is fully transparent.
    pub transparent_pixels: bool,
    /// Every frame equals the first.
    pub all_frames_identical: bool,
}

impl ReadBack {
    /// Measures a decoded animation (`bytes` and `sniffed` come from the file).
    pub fn from_animation(
        anim: &Animation,
        sniffed: Option<Format>,
        bytes: u64,
        video: Option<VideoProbe>,
    ) -> Self {
        let first = anim.frames.first().map(|f| &f.image);
        let transparent_pixels = first.is_some_and(|img| img.pixels().any(|p| p[3] == 0));
        let all_frames_identical = anim.frames.iter().all(|f| Some(&f.image) == first);
        let min_delay_ms = anim
            .frames
            .iter()
            .map(|f| f.delay.millis_f64())
            .fold(f64::INFINITY, f64::min);
        let (mut fps, mut duration) = (anim.fps(), anim.duration_secs());
        if let Some(v) = &video {
            if let Some(f) = v.fps() {
                fps = f;
            }
            if let Some(d) = v.duration {
                duration = d;
            }
        }
        ReadBack {
            sniffed,
            bytes,
            width: anim.width,
            height: anim.height,
            frames: anim.len(),
            min_delay_ms,
            duration_secs: duration,
            fps,
            loops: anim.loops,
            video,
            transparent_pixels,
            all_frames_identical,
        }
    }
}

/// Reads a written file back: size, magic number, decoded frames, and ffprobe for WebM.
pub(crate) fn read_back(path: &Path, format: Format, limits: &Limits) -> Result<ReadBack> {
    let (bytes, sniffed) = if format == Format::Folder {
        (folder_bytes(path)?, Some(Format::Folder))
    } else {
        let mut head = [0u8; 16];
        let mut f = std::fs::File::open(path).map_err(|e| Error::io("re-open output", path, e))?;
        let n = f
            .read(&mut head)
            .map_err(|e| Error::io("read output", path, e))?;
        let bytes = f
            .metadata()
            .map_err(|e| Error::io("read output", path, e))?
            .len();
        (bytes, sniff(&head[..n]))
    };
    let anim = decode::open(path, limits)?;
    let video = if format == Format::WebM {
        Some(probe_video(path)?)
    } else {
        None
    };
    Ok(ReadBack::from_animation(&anim, sniffed, bytes, video))
}

fn folder_bytes(path: &Path) -> Result<u64> {
    let rd = std::fs::read_dir(path).map_err(|e| Error::io("list output folder", path, e))?;
    let mut sum = 0;
    for e in rd {
        let e = e.map_err(|e| Error::io("list output folder", path, e))?;
        let m = e
            .metadata()
            .map_err(|err| Error::io("read output", e.path(), err))?;
        if m.is_file() {
            sum += m.len();
        }
    }
    Ok(sum)
}

/// Checks every rule against what was read back. Pure, so each rule is unit-tested on numbers.
pub(crate) fn check_rules(rb: &ReadBack, rules: &Rules, format: Format) -> Vec<RuleCheck> {
    let mut out = Vec::new();
    let still = rb.frames <= 1;

    // Container and codec.
    let mut fmt_ok = rb.sniffed == Some(format);
    let mut fmt_detail = match rb.sniffed {
        Some(f) => f.name().to_string(),
        None => "unrecognised bytes".to_string(),
    };
    if format == Format::WebM {
        let codec = rb.video.as_ref().and_then(|v| v.codec.clone());
        fmt_ok &= codec.as_deref() == Some("vp9");
        fmt_detail = format!("{fmt_detail} ({})", codec.as_deref().unwrap_or("no video"));
    }
    out.push(RuleCheck::new(
        "format",
        fmt_ok,
        format!("{fmt_detail} (must be {})", rules.extensions()),
    ));

    // Canvas: the decoder's size, and for video also the stream's.
    let mut canvas_ok = rules.canvas.allows(rb.width, rb.height);
    if let Some(v) = &rb.video {
        canvas_ok &= (v.width, v.height) == (rb.width, rb.height);
    }
    out.push(RuleCheck::new(
        "canvas",
        canvas_ok,
        format!("{}x{} ({})", rb.width, rb.height, rules.canvas.describe()),
    ));

    if !rules.animated {
        out.push(RuleCheck::new(
            "still",
            still,
            format!("{} frame(s) (a still image)", rb.frames),
        ));
    }

    if let (Some(max), false) = (rules.max_duration_secs, still) {
        out.push(RuleCheck::new(
            "duration",
            rb.duration_secs <= max + TIME_EPS,
            format!("{:.3} s (≤ {max} s)", rb.duration_secs),
        ));
    }

    if let (Some(max), false) = (rules.max_fps, still) {
        let fps = match &rb.video {
            Some(v) => v.fps().unwrap_or(f64::INFINITY),
            // Containers round delays to milliseconds: 30 fps reads back as 33 ms frames.
            None => 1000.0 / rb.min_delay_ms.round().max(1.0),
        };
        let ok = if rb.video.is_some() {
            fps <= max as f64 + 1e-9
        } else {
            rb.min_delay_ms.round() >= (1000.0 / max as f64).floor()
        };
        out.push(RuleCheck::new("fps", ok, format!("{fps:.2} fps (≤ {max})")));
    }

    if let (Some(min), false) = (rules.min_frame_delay_ms, still) {
        out.push(RuleCheck::new(
            "frame delay",
            rb.min_delay_ms + 1e-6 >= min as f64,
            format!("shortest frame {:.1} ms (≥ {min} ms)", rb.min_delay_ms),
        ));
    }

    if let Some((lo, hi)) = rules.frame_range {
        let n = rb.frames as u64;
        out.push(RuleCheck::new(
            "frames",
            (lo as u64..=hi as u64).contains(&n),
            format!("{n} ({lo}–{hi})"),
        ));
    }

    match rules.loops {
        LoopRule::None => {}
        LoopRule::Forever if still => {}
        LoopRule::Forever if format == Format::WebM => out.push(RuleCheck::new(
            "loop",
            true,
            "looped by the app (WebM has no loop flag)",
        )),
        LoopRule::Forever => out.push(RuleCheck::new(
            "loop",
            rb.loops == LoopCount::Infinite,
            match rb.loops {
                LoopCount::Infinite => "loops forever".to_string(),
                LoopCount::Plays(n) => format!("plays {n} time(s) (must loop forever)"),
            },
        )),
        LoopRule::Plays {
            max_plays,
            max_total_secs,
        } => {
            let (ok, detail) = match rb.loops {
                LoopCount::Infinite => (
                    false,
                    format!("loops forever (must play 1–{max_plays} times)"),
                ),
                LoopCount::Plays(n) => {
                    let total = n as f64 * rb.duration_secs;
                    (
                        (1..=max_plays).contains(&n) && total <= max_total_secs + TIME_EPS,
                        format!(
                            "{n} play(s) × {:.3} s = {total:.3} s (1–{max_plays} plays, ≤ {max_total_secs} s)",
                            rb.duration_secs
                        ),
                    )
                }
            };
            out.push(RuleCheck::new("loop", ok, detail));
        }
    }

    let cap = rules.cap_for(rb.frames);
    out.push(RuleCheck::new(
        "size",
        rb.bytes <= cap,
        format!(
            "{} bytes (≤ {} bytes{})",
            group_digits(rb.bytes),
            group_digits(cap),
            if cap != rules.max_bytes {
                ", still image"
            } else {
                ""
            }
        ),
    ));

    if rules.no_audio {
        let audio = rb.video.as_ref().map(|v| v.audio_streams);
        out.push(RuleCheck::new(
            "audio",
            audio == Some(0),
            match audio {
                Some(0) => "no audio stream".to_string(),
                Some(n) => format!("{n} audio stream(s) (none allowed)"),
                None => "not probed".to_string(),
            },
        ));
    }

    match rules.alpha {
        AlphaRule::Any => {}
        AlphaRule::VideoAlpha => {
            let mode = rb.video.as_ref().and_then(|v| v.alpha_mode.clone());
            out.push(RuleCheck::new(
                "alpha",
                mode.as_deref() == Some("1"),
                match mode {
                    Some(m) => format!("VP9 alpha_mode={m} (must be 1)"),
                    None => "no VP9 alpha stream (alpha_mode missing)".to_string(),
                },
            ));
        }
        AlphaRule::TransparentBackground => out.push(RuleCheck::new(
            "transparent",
            rb.transparent_pixels,
            if rb.transparent_pixels {
                "the background is transparent"
            } else {
                "no fully transparent pixel in the first frame (the background must be transparent)"
            },
        )),
    }

    if rules.distinct_frames {
        out.push(RuleCheck::new(
            "distinct frames",
            !rb.all_frames_identical,
            if rb.all_frames_identical {
                "all frames are identical (rejected)"
            } else {
                "frames differ"
            },
        ));
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    fn rb() -> ReadBack {
        ReadBack {
            sniffed: Some(Format::WebM),
            bytes: 200_000,
            width: 512,
            height: 384,
            frames: 90,
            min_delay_ms: 1000.0 / 30.0,
            duration_secs: 3.0,
            fps: 30.0,
            loops: LoopCount::Infinite,
            video: Some(VideoProbe {
                codec: Some("vp9".into()),
                width: 512,
                height: 384,
                frame_rate: Some((30, 1)),
                alpha_mode: Some("1".into()),
                audio_streams: 0,
                duration: Some(3.0),
            }),
            transparent_pixels: true,
            all_frames_identical: false,
        }
    }

    fn failing(checks: &[RuleCheck]) -> Vec<&str> {
        checks
            .iter()
            .filter(|c| !c.pass)
            .map(|c| c.name.as_str())
            .collect()
    }

    #[test]
    fn telegram_rules_pass_and_each_breach_is_named() {
        let rules = Preset::Telegram.rules();
        let ok = check_rules(&rb(), &rules, Format::WebM);
        assert!(ok.iter().all(|c| c.pass), "{ok:?}");
        let names: Vec<&str> = ok.iter().map(|c| c.name.as_str()).collect();
        assert_eq!(
            names,
            [
                "format", "canvas", "duration", "fps", "loop", "size", "audio", "alpha"
            ]
        );
        assert_eq!(
            ok[1].to_string(),
            "PASS canvas 512x384 (one side exactly 512, the other ≤ 512)"
        );

        let mut bad = rb();
        bad.bytes = 256_001;
        bad.duration_secs = 3.04;
        if let Some(v) = bad.video.as_mut() {
            v.frame_rate = Some((60, 1));
            v.alpha_mode = None;
            v.audio_streams = 1;
            v.duration = Some(3.04);
        }
        assert_eq!(
            failing(&check_rules(&bad, &rules, Format::WebM)),
            ["duration", "fps", "size", "audio", "alpha"]
        );
        let mut h264 = rb();
        if let Some(v) = h264.video.as_mut() {
            v.codec = Some("h264".into());
            v.width = 500;
        }
        assert_eq!(
            failing(&check_rules(&h264, &rules, Format::WebM)),
            ["format", "canvas"]
        );
    }

    #[test]
    fn line_loop_and_frame_rules() {
        let rules = Preset::Line.rules();
        let mut r = rb();
        r.sniffed = Some(Format::Png);
        r.video = None;
        r.width = 320;
        r.height = 240;
        r.frames = 12;
        r.duration_secs = 1.2;
        r.min_delay_ms = 100.0;
        r.loops = LoopCount::Plays(3);
        r.bytes = 100_000;
        let checks = check_rules(&r, &rules, Format::Png);
        assert!(failing(&checks).is_empty(), "{checks:?}");
        r.loops = LoopCount::Plays(4); // 4 × 1.2 = 4.8 s
        r.frames = 21;
        assert_eq!(
            failing(&check_rules(&r, &rules, Format::Png)),
            ["frames", "loop"]
        );
        r.loops = LoopCount::Infinite;
        r.frames = 12;
        r.all_frames_identical = true;
        r.transparent_pixels = false;
        assert_eq!(
            failing(&check_rules(&r, &rules, Format::Png)),
            ["loop", "transparent", "distinct frames"]
        );
    }

    #[test]
    fn whatsapp_delay_and_static_cap() {
        let rules = Preset::WhatsApp.rules();
        let mut r = rb();
        r.sniffed = Some(Format::WebP);
        r.video = None;
        r.width = 512;
        r.height = 512;
        r.min_delay_ms = 5.0;
        r.loops = LoopCount::Plays(1);
        assert_eq!(
            failing(&check_rules(&r, &rules, Format::WebP)),
            ["frame delay", "loop"]
        );
        // A still image meets the static 100 KB cap, not the animated one.
        r.frames = 1;
        r.bytes = 150_000;
        let checks = check_rules(&r, &rules, Format::WebP);
        assert_eq!(failing(&checks), ["size"]);
        assert!(
            checks
                .iter()
                .any(|c| c.detail.contains("100 000") && c.detail.contains("still"))
        );
    }

    #[test]
    fn parses_ffprobe_json() {
        let json = r#"{"programs":[],"streams":[
            {"codec_name":"vp9","codec_type":"video","width":512,"height":384,
             "r_frame_rate":"30/1","tags":{"alpha_mode":"1"}},
            {"codec_name":"opus","codec_type":"audio","r_frame_rate":"0/0"}],
            "format":{"duration":"2.966000"}}"#;
        let p = parse_probe(json).expect("parse");
        assert_eq!(p.codec.as_deref(), Some("vp9"));
        assert_eq!((p.width, p.height), (512, 384));
        assert_eq!(p.fps(), Some(30.0));
        assert_eq!(p.alpha_mode.as_deref(), Some("1"));
        assert_eq!(p.audio_streams, 1);
        assert_eq!(p.duration, Some(2.966));
        assert!(parse_probe("not json").is_err());
    }
}

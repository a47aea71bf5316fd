//! Auto-fit: turns any clip into a file that meets a platform's rules. Canvas first is cheap to
//! reason about but time first is cheaper to run (fewer frames to resize), so the order is:
//! cut and cap the timing, place on the canvas, then search the encoder's quality knob for the
//! best setting under the size cap, dropping frame rate only when even the worst setting is too
//! big. The chosen bytes are written atomically and checked by reading the file back.

use std::path::{Path, PathBuf};

use super::report::{self, ExportReport};
use super::rules::{self, LoopRule, Rules, frame_target, group_digits, plays_for};
use super::{FitOptions, Preset};
use crate::error::{Error, Result};
use crate::media::atomic::{parent_dir, write_atomic};
use crate::media::encode::{self, Encoding, GifOptions};
use crate::media::{Animation, Delay, Format, Limits, LoopCount};
use crate::progress::Progress;

/// One evaluated knob position of [`search_best`].
#[derive(Debug, Clone, PartialEq)]
pub struct Probe<T> {
    /// Knob index (0 = smallest file, worst quality).
    pub index: u32,
    pub size: u64,
    pub value: T,
}

/// Finds the highest knob index in `0..count` whose size is ≤ `cap`, assuming size grows with
/// the index (quality up, bytes up). Binary search, so a 60-step CRF ladder costs 6 encodes, and
/// it does not stop at the first setting that fits: it keeps the best one that fits. `eval`
/// returns the size and whatever the caller wants to keep for the winner (the encoded bytes).
/// `None` when even index 0 is too big.
pub fn search_best<T>(
    count: u32,
    cap: u64,
    mut eval: impl FnMut(u32) -> Result<(u64, T)>,
) -> Result<Option<Probe<T>>> {
    let (mut lo, mut hi) = (0i64, count as i64 - 1);
    let mut best = None;
    while lo <= hi {
        let mid = lo + (hi - lo) / 2;
        let (size, value) = eval(mid as u32)?;
        if size <= cap {
            best = Some(Probe {
                index: mid as u32,
                size,
                value,
            });
            lo = mid + 1;
        } else {
            hi = mid - 1;
        }
    }
    Ok(best)
}

/// Probes [`search_best`] makes at most for `count` positions.
fn search_steps(count: u32) -> u64 {
    (u32::BITS - count.leading_zeros()) as u64
}

/// The quality ladders: knob index → encoding (index 0 = smallest).
#[derive(Debug, Clone, Copy)]
enum Ladder {
    /// CRF 63 (index 0) down to 4.
    Crf,
    /// WebP lossy quality 0..=100.
    WebPQuality,
    /// APNG palette 2..=256 colours.
    ApngPalette,
    /// GIF palette 2..=256 colours.
    GifColors,
}

impl Ladder {
    const CRF_BEST: u8 = 4;
    const CRF_WORST: u8 = 63;

    fn count(self) -> u32 {
        match self {
            Ladder::Crf => (Self::CRF_WORST - Self::CRF_BEST + 1) as u32,
            Ladder::WebPQuality => 101,
            Ladder::ApngPalette | Ladder::GifColors => 255,
        }
    }

    fn encoding(self, i: u32) -> Encoding {
        match self {
            Ladder::Crf => Encoding::WebM {
                crf: Self::CRF_WORST - i.min(59) as u8,
            },
            Ladder::WebPQuality => Encoding::WebP {
                quality: Some(i.min(100) as f32),
            },
            Ladder::ApngPalette => Encoding::Apng {
                palette: Some(i.min(254) as u16 + 2),
            },
            Ladder::GifColors => Encoding::Gif(GifOptions {
                colors: i.min(254) as u16 + 2,
                ..gif_options()
            }),
        }
    }
}

/// GIF has 1-bit alpha: edges are blended over Discord's dark theme background, where a GIF
/// sticker is most often seen.
fn gif_options() -> GifOptions {
    GifOptions {
        matte: [0x31, 0x33, 0x38],
        ..GifOptions::default()
    }
}

/// The format an encoding writes.
pub(crate) fn encoding_format(e: &Encoding) -> Format {
    match e {
        Encoding::Apng { .. } => Format::Png,
        Encoding::WebP { .. } => Format::WebP,
        Encoding::Gif(_) => Format::Gif,
        Encoding::WebM { .. } => Format::WebM,
        Encoding::PngFolder => Format::Folder,
    }
}

/// An encoding in words, for progress stages and reports ("crf 31", "webp q 78").
pub(crate) fn describe(e: &Encoding) -> String {
    match e {
        Encoding::Apng { palette: None } => "apng lossless".into(),
        Encoding::Apng { palette: Some(n) } => format!("apng palette {n}"),
        Encoding::WebP { quality: None } => "webp lossless".into(),
        Encoding::WebP { quality: Some(q) } => format!("webp q {q:.0}"),
        Encoding::Gif(o) => format!("gif {} colours", o.colors),
        Encoding::WebM { crf } => format!("crf {crf}"),
        Encoding::PngFolder => "png frames".into(),
    }
}

fn keep_going(progress: &mut dyn Progress, stage: &str, done: u64, total: u64) -> Result<()> {
    if progress.step(stage, done, total) {
        Ok(())
    } else {
        Err(Error::Cancelled)
    }
}

/// Encodes candidates: to memory where the encoder can, WebM through files in a scratch folder
/// beside the output (removed when this is dropped, also on error or cancel).
struct Candidates {
    out_dir: PathBuf,
    scratch: Option<tempfile::TempDir>,
    made: u32,
}

impl Candidates {
    fn new(out: &Path) -> Self {
        Candidates {
            out_dir: parent_dir(out),
            scratch: None,
            made: 0,
        }
    }

    fn encode(&mut self, anim: &Animation, enc: &Encoding) -> Result<Vec<u8>> {
        self.made += 1;
        if !matches!(enc, Encoding::WebM { .. }) {
            return encode::encode_to_vec(anim, enc);
        }
        if self.scratch.is_none() {
            let dir = tempfile::Builder::new()
                .prefix(".ildiff-fit-")
                .tempdir_in(&self.out_dir)
                .map_err(|e| Error::io("create scratch folder in", &self.out_dir, e))?;
            self.scratch = Some(dir);
        }
        let dir = self
            .scratch
            .as_ref()
            .map(|d| d.path().to_path_buf())
            .unwrap_or_else(|| self.out_dir.clone());
        let path = dir.join(format!("candidate-{}.webm", self.made));
        encode::write(anim, enc, &path)?;
        let bytes = std::fs::read(&path).map_err(|e| Error::io("read candidate", &path, e))?;
        // Best effort: the scratch folder goes away on drop anyway.
        let _ = std::fs::remove_file(&path);
        Ok(bytes)
    }
}

/// The winning encode.
struct Chosen {
    bytes: Vec<u8>,
    setting: String,
}

/// Best encoding of `anim` as `format` under `cap`: lossless first where the format has it
/// (nothing beats it if it fits), then the lossy ladder.
fn search_format(
    anim: &Animation,
    format: Format,
    cap: u64,
    cands: &mut Candidates,
    progress: &mut dyn Progress,
) -> Result<Option<Chosen>> {
    let (lossless, ladder) = match format {
        Format::WebM => (None, Ladder::Crf),
        Format::WebP => (Some(Encoding::WebP { quality: None }), Ladder::WebPQuality),
        Format::Png => (Some(Encoding::Apng { palette: None }), Ladder::ApngPalette),
        Format::Gif => (None, Ladder::GifColors),
        other => {
            return Err(Error::Invalid(format!(
                "no size search for {} output",
                other.name()
            )));
        }
    };
    let total = search_steps(ladder.count()) + lossless.is_some() as u64;
    let mut done = 0u64;
    if let Some(enc) = lossless {
        let setting = describe(&enc);
        keep_going(progress, &format!("encode {setting}"), done, total)?;
        let bytes = cands.encode(anim, &enc)?;
        done += 1;
        if bytes.len() as u64 <= cap {
            return Ok(Some(Chosen { bytes, setting }));
        }
    }
    let found = search_best(ladder.count(), cap, |i| {
        let enc = ladder.encoding(i);
        let setting = describe(&enc);
        keep_going(progress, &format!("encode {setting}"), done, total)?;
        let bytes = cands.encode(anim, &enc)?;
        done += 1;
        Ok((bytes.len() as u64, (bytes, setting)))
    })?;
    Ok(found.map(|p| Chosen {
        bytes: p.value.0,
        setting: p.value.1,
    }))
}

/// The highest instantaneous frame rate (1 / shortest non-zero delay).
fn peak_fps(anim: &Animation) -> Option<f64> {
    anim.frames
        .iter()
        .map(|f| f.delay.secs())
        .filter(|&s| s > 0.0)
        .fold(None, |m: Option<f64>, s| Some(m.map_or(s, |m| m.min(s))))
        .map(|s| 1.0 / s)
}

/// True when every frame lasts exactly one frame at `fps`.
fn is_constant(anim: &Animation, fps: f64) -> bool {
    let d = Delay::from_fps(fps);
    anim.frames.iter().all(|f| f.delay == d)
}

fn check_trim(trim: Option<(f64, f64)>) -> Result<()> {
    if let Some((s, e)) = trim
        && !(s.is_finite() && e.is_finite() && s >= 0.0 && e > s)
    {
        return Err(Error::Invalid(format!(
            "trim range {s}..{e} s is empty or negative"
        )));
    }
    Ok(())
}

fn check_fps(fps: Option<f64>) -> Result<()> {
    if let Some(f) = fps
        && !(f.is_finite() && f > 0.0)
    {
        return Err(Error::Invalid(format!("fps must be positive, got {f}")));
    }
    Ok(())
}

/// Caps one play at the rule's duration and sets the loop count the rule asks for. Run after
/// every timing change: millisecond rounding of resampled delays can push a clip a few ms over.
fn finish_timing(mut a: Animation, rules: &Rules, source_loops: LoopCount) -> Animation {
    if let Some(max) = rules.max_duration_secs
        && a.duration_secs() > max + 1e-9
    {
        a = a.trim(max);
    }
    match rules.loops {
        LoopRule::Forever => a.loops = LoopCount::Infinite,
        LoopRule::Plays {
            max_plays,
            max_total_secs,
        } => {
            let src = match source_loops {
                LoopCount::Plays(n) => Some(n),
                LoopCount::Infinite => None,
            };
            a.loops =
                LoopCount::Plays(plays_for(a.duration_secs(), max_plays, max_total_secs, src));
        }
        LoopRule::None => {}
    }
    a
}

/// Step 2 of the fit: trim range, duration cap, frame rate (cap, minimum delay, constant rate
/// for video), frame count range, loop count.
fn prepare_time(
    anim: &Animation,
    rules: &Rules,
    opts: &FitOptions,
    format: Format,
    notes: &mut Vec<String>,
) -> Result<Animation> {
    check_trim(opts.trim)?;
    check_fps(opts.fps)?;
    let mut a = match opts.trim {
        Some((s, e)) => anim.cut(s, e),
        None => anim.clone(),
    };
    if !rules.animated {
        if a.len() > 1 {
            notes.push(format!(
                "kept the first frame only ({} frames in the source)",
                a.len()
            ));
        }
        return Ok(Animation::still(a.frames[0].image.clone()));
    }
    if a.len() > 1 && a.duration_secs() <= 0.0 {
        return Err(Error::Invalid(
            "the clip has zero duration (every frame delay is 0)".into(),
        ));
    }
    if let Some(max) = rules.max_duration_secs
        && a.duration_secs() > max + 1e-9
    {
        notes.push(format!(
            "cut to {max} s (the clip is {:.2} s)",
            a.duration_secs()
        ));
        a = a.trim(max);
    }

    // Frame rate.
    let ceiling = rules.fps_ceiling();
    let mut want = opts.fps;
    if let (Some(w), Some(c)) = (want, ceiling)
        && w > c + 1e-9
    {
        notes.push(format!("asked for {w} fps; the limit is {c} fps"));
        want = Some(c);
    }
    let peak = peak_fps(&a);
    let over = matches!((peak, ceiling), (Some(p), Some(c)) if p > c + 1e-6);
    if a.len() > 1 {
        let mut target = want.or(if over { ceiling } else { None });
        if format == Format::WebM {
            // Video stores one frame rate for the stream: make it constant and whole.
            let mut f = target.or(peak).unwrap_or(1.0).round().max(1.0);
            if let Some(c) = ceiling {
                f = f.min(c.floor());
            }
            target = (!is_constant(&a, f)).then_some(f);
        }
        if let Some(f) = target {
            if over && want.is_none() {
                notes.push(format!(
                    "resampled from {:.1} to {f} fps (the limit)",
                    peak.unwrap_or(0.0)
                ));
            }
            a = a.resample_fps(f)?;
        }
    }

    // Frame count (LINE: 5–20): pick the rate that lands the count in range.
    if let Some(range) = rules.frame_range
        && let Some(n) = frame_target(a.len(), range)
    {
        let d = a.duration_secs();
        if d <= 0.0 {
            return Err(Error::Invalid("the clip has zero duration".into()));
        }
        notes.push(format!(
            "resampled {} frames to {n} (the platform allows {}–{})",
            a.len(),
            range.0,
            range.1
        ));
        a = a.resample_fps(n as f64 / d)?;
    }
    Ok(finish_timing(a, rules, anim.loops))
}

/// Read-back limits generous enough for what was just written.
fn readback_limits(a: &Animation) -> Limits {
    let d = Limits::default();
    Limits {
        max_side: d.max_side.max(a.width.max(a.height)),
        max_frames: d.max_frames.max(a.len() as u32 * 2 + 16),
        max_bytes: d.max_bytes.max(a.pixel_bytes() * 2),
    }
}

/// Fits `anim` to a preset and writes `out` (its extension picks among the preset's formats).
/// See [`fit_with_rules`].
pub fn fit_to_preset(
    anim: &Animation,
    preset: Preset,
    opts: &FitOptions,
    out: &Path,
    progress: &mut dyn Progress,
) -> Result<ExportReport> {
    let mut report = fit_with_rules(anim, &preset.rules(), opts, out, progress)?;
    report.preset = Some(preset);
    Ok(report)
}

/// Fits `anim` to `rules` and writes `out`: canvas, timing, then the best encoder setting under
/// the size cap (lower frame rates only when the worst setting is still too big, noted in the
/// report). Cancelling through `progress` returns [`Error::Cancelled`] with nothing written. The
/// report re-reads the file; a rule that fails there is reported, and the file is kept.
pub fn fit_with_rules(
    anim: &Animation,
    rules: &Rules,
    opts: &FitOptions,
    out: &Path,
    progress: &mut dyn Progress,
) -> Result<ExportReport> {
    let format = rules.pick_format(Format::from_extension(out))?;
    if anim.is_empty() {
        return Err(Error::Invalid("the clip has no frames".into()));
    }
    keep_going(progress, "prepare", 0, 1)?;
    let mut notes = Vec::new();
    let timed = prepare_time(anim, rules, opts, format, &mut notes)?;
    let (w, h) = rules
        .canvas
        .target(timed.width, timed.height, opts.fit, opts.size)?;
    keep_going(progress, "fit canvas", 0, 1)?;
    let mut base = timed.fit(w, h, opts.fit)?;
    drop(timed);
    // Invisible colour under alpha 0 costs bytes in every codec.
    base.clean_transparent([0, 0, 0]);

    let mut cands = Candidates::new(out);
    let min_frames = rules.frame_range.map_or(1, |r| r.0);
    let mut fallbacks = rules::fallback_fps(
        base.fps(),
        base.duration_secs(),
        min_frames,
        format == Format::WebM,
    )
    .into_iter();
    let mut current = base.clone();
    let chosen = loop {
        let cap = rules.cap_for(current.len());
        if let Some(c) = search_format(&current, format, cap, &mut cands, progress)? {
            break c;
        }
        let next = if rules.animated && current.len() > 1 {
            fallbacks.next()
        } else {
            None
        };
        let Some(fps) = next else {
            return Err(Error::Encode {
                format: format.name(),
                reason: format!(
                    "{} cannot fit under {} bytes even at the lowest quality ({}x{}, {} frames, {:.2} s); shorten it with a trim range or lower the fps: {}",
                    rules.title,
                    group_digits(cap),
                    current.width,
                    current.height,
                    current.len(),
                    current.duration_secs(),
                    out.display()
                ),
            });
        };
        let from = current.fps();
        current = finish_timing(base.resample_fps(fps)?, rules, anim.loops);
        notes.push(format!(
            "lowered the frame rate from {from:.1} to {fps:.1} fps ({} frames) because even the lowest quality did not fit {} bytes",
            current.len(),
            group_digits(rules.cap_for(current.len()))
        ));
    };
    drop(cands);

    keep_going(progress, "write", 0, 1)?;
    write_atomic(out, &chosen.bytes)?;
    // Past this point the file exists: progress is reported but cancel is not honoured.
    let _ = progress.step("check", 0, 1);
    let rb = report::read_back(out, format, &readback_limits(&current))?;
    let checks = report::check_rules(&rb, rules, format);
    let _ = progress.step("check", 1, 1);
    Ok(ExportReport {
        path: out.to_path_buf(),
        target: rules.title.to_string(),
        preset: None,
        format,
        bytes: rb.bytes,
        width: rb.width,
        height: rb.height,
        fps: rb.fps,
        duration_secs: rb.duration_secs,
        frames: rb.frames,
        loops: rb.loops,
        setting: chosen.setting,
        notes,
        passed: checks.iter().all(|c| c.pass),
        rules: checks,
    })
}

/// True when `out` names a folder: a trailing slash, an existing folder, or no extension.
fn is_folder_target(out: &Path) -> bool {
    let s = out.as_os_str().to_string_lossy();
    s.ends_with('/')
        || s.ends_with(std::path::MAIN_SEPARATOR)
        || out.is_dir()
        || out.extension().is_none()
}

/// Exports without platform rules: the extension picks the format (`.png` = APNG, `.webp`,
/// `.gif`, `.webm`; no extension or a trailing slash = a folder of PNG frames), `encoding`
/// overrides the format's default setting. Trim, fps and size from `opts` apply. The report has
/// no rules, but its figures are read back from the written file.
pub fn export_plain(
    anim: &Animation,
    out: &Path,
    opts: &FitOptions,
    encoding: Option<Encoding>,
    progress: &mut dyn Progress,
) -> Result<ExportReport> {
    check_trim(opts.trim)?;
    check_fps(opts.fps)?;
    let format = if is_folder_target(out) {
        Format::Folder
    } else {
        Format::from_extension(out).ok_or_else(|| {
            Error::Invalid(format!(
                "unknown output extension; use .png, .webp, .gif, .webm or a folder: {}",
                out.display()
            ))
        })?
    };
    let enc = match encoding {
        Some(e) if encoding_format(&e) != format => {
            return Err(Error::Invalid(format!(
                "the encoding {} does not write {} files: {}",
                describe(&e),
                format.name(),
                out.display()
            )));
        }
        Some(e) => e,
        None => Encoding::default_for(format).ok_or_else(|| Error::Unsupported {
            reason: format!("{} cannot be written", format.name()),
            path: out.to_path_buf(),
        })?,
    };
    keep_going(progress, "prepare", 0, 1)?;
    let mut a = match opts.trim {
        Some((s, e)) => anim.cut(s, e),
        None => anim.clone(),
    };
    if let Some(f) = opts.fps {
        a = a.resample_fps(f)?;
    }
    if let Some((w, h)) = opts.size {
        a = a.fit(w, h, opts.fit)?;
    }
    let setting = describe(&enc);
    keep_going(progress, &format!("encode {setting}"), 0, 1)?;
    if format == Format::Folder {
        std::fs::create_dir_all(out).map_err(|e| Error::io("create output folder", out, e))?;
    }
    encode::write(&a, &enc, out)?;
    let _ = progress.step("check", 0, 1);
    let rb = report::read_back(out, format, &readback_limits(&a))?;
    Ok(ExportReport {
        path: out.to_path_buf(),
        target: "plain export".into(),
        preset: None,
        format,
        bytes: rb.bytes,
        width: rb.width,
        height: rb.height,
        fps: rb.fps,
        duration_secs: rb.duration_secs,
        frames: rb.frames,
        loops: rb.loops,
        setting,
        notes: Vec::new(),
        rules: Vec::new(),
        passed: true,
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::media::Frame;
    use image::{Rgba, RgbaImage};

    fn clip(n: usize, ms: u32, w: u32, h: u32) -> Animation {
        let frames = (0..n)
            .map(|i| {
                Frame::new(
                    RgbaImage::from_pixel(w, h, Rgba([i as u8, 0, 0, 200])),
                    Delay::from_millis(ms),
                )
            })
            .collect();
        Animation::new(w, h, frames, LoopCount::Infinite).expect("clip")
    }

    #[test]
    fn search_picks_largest_that_fits_not_first() {
        // size = 1000 + 100 * index; cap 4250 → best index 32.
        let mut calls = Vec::new();
        let p = search_best(60, 4250, |i| {
            calls.push(i);
            Ok((1000 + 100 * i as u64, i))
        })
        .expect("search")
        .expect("found");
        assert_eq!(p.index, 32);
        assert_eq!(p.size, 4200);
        assert_eq!(p.value, 32);
        assert!(calls.len() <= 6, "{calls:?}");
        // The first probe fits, and the search still goes on to better ones.
        assert!(calls.len() > 1 && calls[0] < 32);
    }

    #[test]
    fn search_edges() {
        let all = search_best(60, u64::MAX, |i| Ok((i as u64, ())))
            .expect("s")
            .expect("f");
        assert_eq!(all.index, 59);
        let none = search_best(60, 10, |_| Ok((11, ()))).expect("s");
        assert!(none.is_none());
        let one = search_best(1, 10, |_| Ok((10, ()))).expect("s").expect("f");
        assert_eq!(one.index, 0);
        // Step-shaped function with a plateau.
        let p = search_best(255, 50, |i| Ok((if i < 100 { 40 } else { 60 }, ())))
            .expect("s")
            .expect("f");
        assert_eq!(p.index, 99);
        for count in [1u32, 2, 60, 101, 255] {
            let mut n = 0;
            let _ = search_best(count, 0, |_| {
                n += 1;
                Ok((1, ()))
            });
            assert!(n as u64 <= search_steps(count), "{count}: {n}");
        }
    }

    #[test]
    fn search_passes_errors_through() {
        let err = search_best(60, 100, |i| {
            if i < 20 {
                Err(Error::Cancelled)
            } else {
                Ok((1000, ()))
            }
        })
        .expect_err("cancel");
        assert_eq!(err.kind(), "cancelled");
    }

    #[test]
    fn ladders_map_index_to_setting() {
        assert_eq!(Ladder::Crf.encoding(0), Encoding::WebM { crf: 63 });
        assert_eq!(
            Ladder::Crf.encoding(Ladder::Crf.count() - 1),
            Encoding::WebM { crf: 4 }
        );
        assert_eq!(
            Ladder::ApngPalette.encoding(254),
            Encoding::Apng { palette: Some(256) }
        );
        assert_eq!(describe(&Ladder::ApngPalette.encoding(0)), "apng palette 2");
        assert_eq!(describe(&Ladder::WebPQuality.encoding(78)), "webp q 78");
        assert_eq!(describe(&Ladder::GifColors.encoding(62)), "gif 64 colours");
    }

    #[test]
    fn telegram_timing_cuts_and_caps_fps() {
        // 5 s at 60 fps → 3 s at 30 fps, 90 frames, loops forever.
        let a = clip(300, 1000 / 60, 8, 8).retime(5.0).expect("retime");
        let mut notes = Vec::new();
        let t = prepare_time(
            &a,
            &Preset::Telegram.rules(),
            &FitOptions::default(),
            Format::WebM,
            &mut notes,
        )
        .expect("time");
        assert_eq!(t.len(), 90);
        assert!((t.duration_secs() - 3.0).abs() < 1e-9);
        assert!(t.frames.iter().all(|f| f.delay == Delay::from_fps(30.0)));
        assert_eq!(t.loops, LoopCount::Infinite);
        assert_eq!(notes.len(), 2, "{notes:?}");
    }

    #[test]
    fn webm_gets_a_constant_whole_frame_rate() {
        // Variable delays: 40 ms and 60 ms alternating, peak 25 fps.
        let mut a = clip(10, 40, 8, 8);
        for (i, f) in a.frames.iter_mut().enumerate() {
            if i % 2 == 1 {
                f.delay = Delay::from_millis(60);
            }
        }
        let t = prepare_time(
            &a,
            &Preset::Telegram.rules(),
            &FitOptions::default(),
            Format::WebM,
            &mut Vec::new(),
        )
        .expect("time");
        assert!(t.frames.iter().all(|f| f.delay == Delay::from_fps(25.0)));
        // Resampling keeps the duration up to one frame (the last is not split).
        assert_eq!(t.len(), 13);
        // Asked fps above the cap is capped.
        let opts = FitOptions {
            fps: Some(60.0),
            ..FitOptions::default()
        };
        let t = prepare_time(
            &a,
            &Preset::Telegram.rules(),
            &opts,
            Format::WebM,
            &mut Vec::new(),
        )
        .expect("time");
        assert!(t.frames.iter().all(|f| f.delay == Delay::from_fps(30.0)));
    }

    #[test]
    fn whatsapp_enforces_min_delay() {
        let a = clip(100, 5, 8, 8); // 200 fps
        let t = prepare_time(
            &a,
            &Preset::WhatsApp.rules(),
            &FitOptions::default(),
            Format::WebP,
            &mut Vec::new(),
        )
        .expect("time");
        assert!(t.frames.iter().all(|f| f.delay.millis() >= 8));
        assert!((t.duration_secs() - 0.5).abs() <= 0.008);
        // Slow clips are left alone (no needless resampling of variable delays).
        let slow = clip(4, 100, 8, 8);
        let t = prepare_time(
            &slow,
            &Preset::WhatsApp.rules(),
            &FitOptions::default(),
            Format::WebP,
            &mut Vec::new(),
        )
        .expect("time");
        assert_eq!(t.frames, slow.frames);
    }

    #[test]
    fn line_chooses_frames_and_plays() {
        let rules = Preset::Line.rules();
        let cases = [
            // (frames, ms per frame) → expectations checked generically.
            (90, 33),  // 3 s, too many frames
            (3, 100),  // 0.3 s, too few
            (12, 100), // 1.2 s, fine
            (200, 50), // 10 s, too long
            (40, 25),  // 1 s
        ];
        for (n, ms) in cases {
            let a = clip(n, ms, 8, 8);
            let t = prepare_time(
                &a,
                &rules,
                &FitOptions::default(),
                Format::Png,
                &mut Vec::new(),
            )
            .expect("time");
            let d = t.duration_secs();
            assert!((5..=20).contains(&t.len()), "{n}x{ms}: {} frames", t.len());
            assert!(d <= 4.0 + 1e-9, "{n}x{ms}: {d} s");
            let LoopCount::Plays(p) = t.loops else {
                panic!("LINE must not loop forever")
            };
            assert!((1..=4).contains(&p));
            assert!(p as f64 * d <= 4.0 + 1e-9, "{n}x{ms}: {p} x {d}");
        }
        // 12 frames of 100 ms: untouched, 3 plays.
        let t = prepare_time(
            &clip(12, 100, 8, 8),
            &rules,
            &FitOptions::default(),
            Format::Png,
            &mut Vec::new(),
        )
        .expect("time");
        assert_eq!((t.len(), t.loops), (12, LoopCount::Plays(3)));
        // 90 frames over 2.97 s → 20 frames, 1 play.
        let t = prepare_time(
            &clip(90, 33, 8, 8),
            &rules,
            &FitOptions::default(),
            Format::Png,
            &mut Vec::new(),
        )
        .expect("time");
        assert_eq!((t.len(), t.loops), (20, LoopCount::Plays(1)));
    }

    #[test]
    fn static_preset_keeps_first_frame_of_trim() {
        let a = clip(10, 100, 8, 8);
        let opts = FitOptions {
            trim: Some((0.5, 1.0)),
            ..FitOptions::default()
        };
        let t = prepare_time(
            &a,
            &Preset::TelegramStatic.rules(),
            &opts,
            Format::Png,
            &mut Vec::new(),
        )
        .expect("time");
        assert_eq!(t.len(), 1);
        assert_eq!(t.frames[0].image.get_pixel(0, 0)[0], 5);
    }

    #[test]
    fn bad_options_are_clear_errors() {
        let a = clip(4, 100, 8, 8);
        let rules = Preset::Telegram.rules();
        for opts in [
            FitOptions {
                trim: Some((2.0, 1.0)),
                ..FitOptions::default()
            },
            FitOptions {
                fps: Some(0.0),
                ..FitOptions::default()
            },
        ] {
            let err = prepare_time(&a, &rules, &opts, Format::WebM, &mut Vec::new())
                .expect_err("must fail");
            assert_eq!(err.kind(), "invalid");
        }
        let dir = tempfile::tempdir().expect("tempdir");
        let err = fit_to_preset(
            &a,
            Preset::Telegram,
            &FitOptions::default(),
            &dir.path().join("x.gif"),
            &mut crate::progress::NoProgress,
        )
        .expect_err("wrong extension");
        assert!(err.to_string().contains(".webm"), "{err}");
        let err = export_plain(
            &a,
            &dir.path().join("x.gif"),
            &FitOptions::default(),
            Some(Encoding::WebM { crf: 30 }),
            &mut crate::progress::NoProgress,
        )
        .expect_err("mismatch");
        assert_eq!(err.kind(), "invalid");
        let err = export_plain(
            &a,
            &dir.path().join("x.jpg"),
            &FitOptions::default(),
            None,
            &mut crate::progress::NoProgress,
        )
        .expect_err("jpeg");
        assert_eq!(err.kind(), "unsupported");
        assert_eq!(std::fs::read_dir(dir.path()).expect("ls").count(), 0);
    }

    #[test]
    fn folder_targets() {
        assert!(is_folder_target(Path::new("out/")));
        assert!(is_folder_target(Path::new("frames")));
        assert!(!is_folder_target(Path::new("a.webp")));
    }
}

//! Importers. The format is sniffed from the bytes; each format lives in its own file and yields
//! frames through [`FrameSource`] so long clips can be streamed.
//!
//! Conventions shared by every importer:
//! - frames are full-canvas, already composited (disposal and blending applied), straight alpha;
//! - [`Limits`] are checked from the header *before* the canvas or any frame is allocated, and the
//!   frame count is checked again as frames arrive (headers can lie);
//! - a zero frame delay becomes 100 ms, as browsers show it (see [`display_delay`]);
//! - every error names the file; a panic inside a third-party decoder is caught at the decoder
//!   boundary and reported as [`Error::Decode`].

use std::io::Read;
use std::panic::{AssertUnwindSafe, catch_unwind};
use std::path::Path;

use crate::error::{Error, Result};
use crate::media::{Animation, Delay, Format, Frame, Limits, LoopCount};
use crate::progress::Progress;

pub(crate) mod compose;
mod folder;
mod gif;
mod png;
mod still;
mod tgs;
mod video;
mod webp;

pub use folder::FOLDER_FPS;

/// What an importer knows before decoding frames.
#[derive(Debug, Clone, PartialEq, serde::Serialize)]
pub struct SourceInfo {
    pub format: Format,
    /// True for animated containers (APNG, animated WebP, multi-frame GIF, video).
    pub animated: bool,
    pub width: u32,
    pub height: u32,
    /// Frame count if the container states it.
    pub frame_count: Option<u64>,
    pub loops: LoopCount,
}

/// A lazily decoded stream of full-canvas, composited, straight-alpha frames.
pub trait FrameSource {
    fn info(&self) -> &SourceInfo;
    /// The next frame, `Ok(None)` at the end.
    fn next_frame(&mut self) -> Result<Option<Frame>>;
}

/// Identifies what `path` holds from its bytes (a directory is a frame folder). The extension is
/// never consulted: a PNG named `.gif` is a PNG.
pub fn detect(path: &Path) -> Result<Format> {
    let meta = std::fs::metadata(path).map_err(|e| Error::io("open", path, e))?;
    if meta.is_dir() {
        return Ok(Format::Folder);
    }
    let head = read_head(path, 32)?;
    if head.is_empty() {
        return Err(Error::Unsupported {
            reason: "the file is empty (0 bytes)".into(),
            path: path.to_path_buf(),
        });
    }
    crate::media::format::sniff(&head).ok_or_else(|| Error::Unsupported {
        reason: "not a recognised image or video (expected GIF, PNG/APNG, JPEG, WebP, \
                 WebM/MKV, MP4/MOV or Telegram .tgs)"
            .into(),
        path: path.to_path_buf(),
    })
}

/// Opens any importable file or folder of numbered PNG frames as a frame stream.
pub fn open_source(path: &Path, limits: &Limits) -> Result<Box<dyn FrameSource>> {
    let format = detect(path)?;
    let inner: Box<dyn FrameSource> = guard(format, path, || {
        Ok(match format {
            Format::Gif => Box::new(gif::GifSource::open(path, limits)?) as Box<dyn FrameSource>,
            Format::Png => png::open(path, limits)?,
            Format::Jpeg => Box::new(still::open_jpeg(path, limits)?),
            Format::WebP => webp::open(path, limits)?,
            Format::WebM | Format::Mp4 => Box::new(video::VideoSource::open(path, format, limits)?),
            Format::Folder => Box::new(folder::FolderSource::open(path, limits)?),
            Format::Tgs => Box::new(tgs::TgsSource::open(path, limits)?),
        })
    })?;
    Ok(Box::new(Guarded {
        inner,
        format,
        path: path.to_path_buf(),
        poisoned: false,
        limits: *limits,
        delivered: 0,
    }))
}

/// What a file is (format, size, frame count if stated, loops) without decoding frames. For
/// video this runs only `ffprobe`.
pub fn probe(path: &Path, limits: &Limits) -> Result<SourceInfo> {
    Ok(open_source(path, limits)?.info().clone())
}

/// Decodes a whole clip into memory (limits checked before and while decoding).
pub fn open(path: &Path, limits: &Limits) -> Result<Animation> {
    open_with_progress(path, limits, &mut crate::progress::NoProgress)
}

/// [`open`] reporting progress as stage `"decode"` (`total` is 0 when the count is unknown);
/// returns [`Error::Cancelled`] when `progress` asks to stop.
pub fn open_with_progress(
    path: &Path,
    limits: &Limits,
    progress: &mut dyn Progress,
) -> Result<Animation> {
    let mut source = open_source(path, limits)?;
    let info = source.info().clone();
    if let Some(n) = info.frame_count {
        // The whole clip is held in memory, so the byte budget applies to all of it up front.
        limits.check_bytes(info.width, info.height, n, path)?;
    }
    let total = info.frame_count.unwrap_or(0);
    let mut frames = Vec::new();
    if !progress.step("decode", 0, total) {
        return Err(Error::Cancelled);
    }
    while let Some(frame) = source.next_frame()? {
        limits.check_bytes(info.width, info.height, frames.len() as u64 + 1, path)?;
        frames.push(frame);
        if !progress.step(
            "decode",
            frames.len() as u64,
            total.max(frames.len() as u64),
        ) {
            return Err(Error::Cancelled);
        }
    }
    if frames.is_empty() {
        return Err(Error::decode(
            info.format.name(),
            path,
            "the file holds no frames",
        ));
    }
    Animation::new(info.width, info.height, frames, info.loops)
        .map_err(|e| Error::decode(info.format.name(), path, e))
}

/// A zero delay means "as fast as possible" to the encoder that wrote it, but every browser shows
/// such frames for 100 ms; we follow the browsers so a clip plays here as it does on the web.
/// Non-zero delays are kept exact (browsers also slow down 10 ms frames; we do not, so that a
/// round trip through our own exporters is lossless).
pub(crate) fn display_delay(delay: Delay) -> Delay {
    if delay.ratio().0 == 0 {
        Delay::from_millis(100)
    } else {
        delay
    }
}

/// Up to `n` first bytes of a file.
pub(crate) fn read_head(path: &Path, n: usize) -> Result<Vec<u8>> {
    let file = std::fs::File::open(path).map_err(|e| Error::io("open", path, e))?;
    let mut head = Vec::with_capacity(n);
    file.take(n as u64)
        .read_to_end(&mut head)
        .map_err(|e| Error::io("read", path, e))?;
    Ok(head)
}

/// Reads a whole file, refusing files larger than the decoded-byte budget (compressed data is
/// never larger than what it decodes to, so such a file cannot be within the limits anyway).
pub(crate) fn read_all(path: &Path, limits: &Limits) -> Result<Vec<u8>> {
    let len = std::fs::metadata(path)
        .map_err(|e| Error::io("open", path, e))?
        .len();
    if len > limits.max_bytes {
        return Err(Error::Limits {
            what: "file size",
            value: len,
            limit: limits.max_bytes,
            flag: "--max-bytes",
            path: path.to_path_buf(),
        });
    }
    std::fs::read(path).map_err(|e| Error::io("read", path, e))
}

/// Runs a third-party decoder call, turning a panic into [`Error::Decode`]: no input may crash the
/// studio, whatever bugs the decoders we depend on have.
pub(crate) fn guard<T>(format: Format, path: &Path, f: impl FnOnce() -> Result<T>) -> Result<T> {
    match catch_unwind(AssertUnwindSafe(f)) {
        Ok(r) => r,
        Err(payload) => {
            let msg = payload
                .downcast_ref::<&str>()
                .map(|s| s.to_string())
                .or_else(|| payload.downcast_ref::<String>().cloned())
                .unwrap_or_else(|| "unknown panic".into());
            Err(Error::decode(
                format.name(),
                path,
                format!("the decoder crashed on this input ({msg})"),
            ))
        }
    }
}

/// Wraps every source: catches decoder panics, stops after the first error, and counts delivered
/// frames against `max_frames` whatever the container claimed.
struct Guarded {
    inner: Box<dyn FrameSource>,
    format: Format,
    path: std::path::PathBuf,
    poisoned: bool,
    limits: Limits,
    delivered: u64,
}

impl FrameSource for Guarded {
    fn info(&self) -> &SourceInfo {
        self.inner.info()
    }

    fn next_frame(&mut self) -> Result<Option<Frame>> {
        if self.poisoned {
            return Err(Error::decode(
                self.format.name(),
                &self.path,
                "decoding already failed",
            ));
        }
        let inner = &mut self.inner;
        let r = guard(self.format, &self.path, || inner.next_frame());
        match r {
            Ok(Some(frame)) => {
                self.delivered += 1;
                if let Err(e) = self.limits.check_frames(self.delivered, &self.path) {
                    self.poisoned = true;
                    return Err(e);
                }
                Ok(Some(frame))
            }
            Ok(None) => Ok(None),
            Err(e) => {
                self.poisoned = true;
                Err(e)
            }
        }
    }
}

#[cfg(test)]
pub(crate) mod testutil {
    //! Helpers for the importer tests: temp files and tiny synthetic clips.

    use std::path::PathBuf;

    use image::RgbaImage;

    /// Writes `bytes` to `name` inside a fresh temp dir (kept alive by the returned guard).
    pub fn write_temp(name: &str, bytes: &[u8]) -> (tempfile::TempDir, PathBuf) {
        let dir = tempfile::tempdir().expect("tempdir");
        let path = dir.path().join(name);
        std::fs::write(&path, bytes).expect("write temp file");
        (dir, path)
    }

    /// A deterministic, varied RGBA test pattern with some partial and zero alpha.
    pub fn pattern(w: u32, h: u32, seed: u32) -> RgbaImage {
        RgbaImage::from_fn(w, h, |x, y| {
            let a = if (x + y + seed).is_multiple_of(7) {
                0
            } else if x < w / 3 {
                128
            } else {
                255
            };
            image::Rgba([
                (x * 37 + seed * 11) as u8,
                (y * 23 + seed * 5) as u8,
                ((x ^ y) * 9 + seed) as u8,
                a,
            ])
        })
    }

    /// Encodes a still RGBA PNG.
    pub fn png_bytes(img: &RgbaImage) -> Vec<u8> {
        let mut out = Vec::new();
        let mut enc = png::Encoder::new(&mut out, img.width(), img.height());
        enc.set_color(png::ColorType::Rgba);
        enc.set_depth(png::BitDepth::Eight);
        let mut w = enc.write_header().expect("png header");
        w.write_image_data(img.as_raw()).expect("png data");
        w.finish().expect("png finish");
        out
    }
}

#[cfg(test)]
mod tests {
    use super::testutil::*;
    use super::*;

    fn kind(r: Result<Animation>) -> &'static str {
        match r {
            Ok(_) => "ok",
            Err(e) => e.kind(),
        }
    }

    #[test]
    fn missing_path_is_io_error_naming_it() {
        let dir = tempfile::tempdir().expect("tempdir");
        let p = dir.path().join("nope.gif");
        let e = open(&p, &Limits::default()).expect_err("missing file must fail");
        assert_eq!(e.kind(), "io");
        assert!(e.to_string().contains("nope.gif"), "{e}");
    }

    #[test]
    fn zero_byte_and_text_files_are_unsupported() {
        let (_d, p) = write_temp("empty.png", b"");
        let e = open(&p, &Limits::default()).expect_err("empty");
        assert_eq!(e.kind(), "unsupported");
        assert!(e.to_string().contains("empty.png"), "{e}");
        assert!(e.to_string().contains("empty"), "{e}");

        let (_d, p) = write_temp("notes.gif", b"hello, this is not an image at all\n");
        let e = open(&p, &Limits::default()).expect_err("text");
        assert_eq!(e.kind(), "unsupported");
        assert!(e.to_string().contains("notes.gif"), "{e}");
    }

    #[test]
    fn png_named_gif_is_sniffed_as_png() {
        let img = pattern(5, 4, 1);
        let (_d, p) = write_temp("liar.gif", &png_bytes(&img));
        assert_eq!(detect(&p).expect("detect"), Format::Png);
        let anim = open(&p, &Limits::default()).expect("decode");
        assert_eq!(anim.frames.len(), 1);
        assert_eq!(anim.frames[0].image, img);
        let info = probe(&p, &Limits::default()).expect("probe");
        assert_eq!(info.format, Format::Png);
        assert!(!info.animated);
    }

    #[test]
    fn progress_can_cancel() {
        let img = pattern(5, 4, 1);
        let (_d, p) = write_temp("a.png", &png_bytes(&img));
        let mut cancel = |_: &str, _: u64, _: u64| false;
        let r = open_with_progress(&p, &Limits::default(), &mut cancel);
        assert_eq!(kind(r), "cancelled");
    }

    #[test]
    fn zero_delay_shows_for_100ms() {
        assert_eq!(display_delay(Delay::from_ratio(0, 100)).millis(), 100);
        assert_eq!(display_delay(Delay::from_ratio(1, 100)).millis(), 10);
    }

    #[test]
    fn guard_turns_panics_into_decode_errors() {
        let r: Result<()> = guard(Format::Gif, Path::new("x.gif"), || panic!("boom"));
        let e = r.expect_err("panic must become an error");
        assert_eq!(e.kind(), "decode");
        assert!(
            e.to_string().contains("boom") && e.to_string().contains("x.gif"),
            "{e}"
        );
    }

    /// Tiny xorshift so the mutation test needs no extra crate and is reproducible by seed.
    struct XorShift(u64);

    impl XorShift {
        fn next(&mut self) -> u64 {
            let mut x = self.0;
            x ^= x << 13;
            x ^= x >> 7;
            x ^= x << 17;
            self.0 = x;
            x
        }
        fn below(&mut self, n: usize) -> usize {
            (self.next() % n.max(1) as u64) as usize
        }
    }

    fn mutate(rng: &mut XorShift, src: &[u8]) -> Vec<u8> {
        let mut b = src.to_vec();
        for _ in 0..1 + rng.below(4) {
            match rng.below(5) {
                0 | 1 => {
                    // Flip a byte (past the magic most of the time, so the format still sniffs).
                    if !b.is_empty() {
                        let i = rng.below(b.len());
                        b[i] ^= 1 << rng.below(8);
                    }
                }
                2 => {
                    let i = rng.below(b.len());
                    b[i] = rng.next() as u8;
                }
                3 => {
                    let cut = 12 + rng.below(b.len().saturating_sub(12));
                    b.truncate(cut);
                }
                _ => {
                    let i = rng.below(b.len());
                    let n = 1 + rng.below(16);
                    let junk: Vec<u8> = (0..n).map(|_| rng.next() as u8).collect();
                    b.splice(i..i, junk);
                }
            }
        }
        b
    }

    /// Recomputes every PNG chunk CRC so mutations reach the decoder instead of stopping at the
    /// checksum.
    fn fix_png_crcs(b: &mut [u8]) {
        let mut pos = 8;
        while pos + 12 <= b.len() {
            let len = u32::from_be_bytes([b[pos], b[pos + 1], b[pos + 2], b[pos + 3]]) as usize;
            let Some(end) = (pos + 8).checked_add(len).filter(|e| e + 4 <= b.len()) else {
                return;
            };
            let crc = super::png::tests::crc32(&b[pos + 4..end]);
            b[end..end + 4].copy_from_slice(&crc.to_be_bytes());
            pos = end + 4;
        }
    }

    /// Property: for mutated GIF, PNG/APNG, WebP and JPEG inputs, `open` returns `Ok` or `Err` and
    /// never panics (panics inside decoders are converted by [`guard`], so here we check that the
    /// conversion covers every path, and report which seed failed).
    #[test]
    fn mutated_inputs_never_panic() {
        let samples: Vec<(&str, Vec<u8>)> = vec![
            ("gif", super::gif::tests::sample_gif()),
            ("png", png_bytes(&pattern(8, 6, 3))),
            ("apng", super::png::tests::sample_apng()),
            (
                "apng-interlaced",
                super::png::tests::interlaced_apng(
                    9,
                    7,
                    &[(0, 0, &pattern(9, 7, 1)), (2, 1, &pattern(5, 4, 2))],
                ),
            ),
            ("webp", super::webp::tests::sample_still_webp()),
            ("webp-anim", super::webp::tests::sample_animated_webp()),
            ("jpeg", super::still::tests::sample_jpeg()),
        ];
        let dir = tempfile::tempdir().expect("tempdir");
        let limits = Limits {
            max_side: 256,
            max_frames: 64,
            max_bytes: 16 << 20,
        };
        let mut panics = Vec::new();
        // Panics inside third-party decoders that `guard` turned into errors: printed so they can
        // be reported upstream (run with `--nocapture`).
        let mut crashes = Vec::new();
        let mut outcomes = std::collections::BTreeMap::<(&str, &str), u32>::new();
        // `ILDIFF_FUZZ_ITERS=20000 cargo test --release ... mutated` for a longer hunt.
        let iters: u64 = std::env::var("ILDIFF_FUZZ_ITERS")
            .ok()
            .and_then(|v| v.parse().ok())
            .unwrap_or(250);
        for (name, bytes) in &samples {
            for seed in 1..=iters {
                let mut rng = XorShift(seed.wrapping_mul(0x9E37_79B9_7F4A_7C15) | 1);
                let mut data = mutate(&mut rng, bytes);
                if name.contains("png") && seed % 2 == 0 {
                    fix_png_crcs(&mut data);
                }
                let path = dir.path().join(format!("{name}-{seed}"));
                std::fs::write(&path, &data).expect("write");
                let r = catch_unwind(AssertUnwindSafe(|| open(&path, &limits)));
                match r {
                    Ok(r) => {
                        if let Err(e) = &r
                            && e.to_string().contains("decoder crashed")
                        {
                            crashes.push(format!("{name} seed {seed}: {e}"));
                        }
                        *outcomes.entry((name, kind(r))).or_default() += 1;
                    }
                    Err(_) => panics.push(format!("{name} seed {seed}")),
                }
            }
        }
        eprintln!("outcomes: {outcomes:?}");
        assert!(panics.is_empty(), "open panicked on: {panics:?}");
        for c in &crashes {
            eprintln!("guarded decoder panic: {c}");
        }
        // The mutations must actually exercise the error paths of each format.
        for (name, _) in &samples {
            let errors: u32 = outcomes
                .iter()
                .filter(|((n, k), _)| n == name && *k != "ok")
                .map(|(_, c)| c)
                .sum();
            assert!(
                errors > 10,
                "{name}: too few failing mutations ({outcomes:?})"
            );
        }
    }
}

//! Exporters, one file per format. Every write goes through [`crate::media::atomic`]: a
//! temporary file (or folder) beside the target, renamed into place when complete, so a failed
//! export leaves nothing behind.
//!
//! Lossless outputs (APNG without palette, lossless WebP) first set the colour of fully
//! transparent pixels to black on a copy: that colour is invisible but costs bytes. Lossy and
//! quantised outputs ignore it anyway, and the PNG folder keeps frames exactly.
//!
//! [`Encoding`] picks the common settings; each format module also has a fuller entry point
//! (`apng::encode` with [`apng::ApngOptions`] for dithered palettes, `webp::encode_with` for
//! more lossless effort, `webm::write_with` for an explicit ffmpeg). Through [`Encoding`],
//! palette APNG is not dithered: dither noise compresses poorly and APNG is mostly chosen for
//! platforms with tight size caps.

pub mod apng;
pub mod folder;
pub mod gif;
pub mod quantize;
pub mod webm;
pub mod webp;

use std::borrow::Cow;
use std::io::Write;
use std::path::Path;

use crate::error::{Error, Result};
use crate::media::atomic::AtomicFile;
use crate::media::{Animation, Format};

/// GIF export options (GIF has 1-bit alpha and at most 256 colours per frame).
#[derive(Debug, Clone, Copy, PartialEq, serde::Serialize, serde::Deserialize)]
pub struct GifOptions {
    /// Palette size, 2..=256 (one entry is reserved for transparency).
    pub colors: u16,
    /// Floyd–Steinberg dithering of colour.
    pub dither: bool,
    /// Colour that semi-transparent edge pixels are blended over before thresholding: pick the
    /// chat background the sticker will be seen on.
    pub matte: [u8; 3],
    /// Alpha at or above which a pixel is opaque.
    pub alpha_threshold: u8,
}

impl Default for GifOptions {
    fn default() -> Self {
        GifOptions {
            colors: 256,
            dither: true,
            matte: [255, 255, 255],
            alpha_threshold: 128,
        }
    }
}

/// How hard a lossless encoder works for its bytes. APNG is the one writer where this matters:
/// on the frames of a 512², 48-frame matte, zlib level 9 took about ten times level 6's time
/// (Python's zlib, row-differenced: 7.0 s against 0.65 s) for 6 % fewer bytes, and it was 10 %
/// of `ildiff matte`'s CPU samples in `perf`. Size searches and preset fits, where every byte
/// counts against a cap, keep the smallest; a plain export takes the balanced level.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum Effort {
    /// zlib level 6 for APNG.
    Balanced,
    /// zlib level 9 for APNG: the smallest files.
    #[default]
    Smallest,
}

/// An output encoding with its quality knob.
#[derive(Debug, Clone, Copy, PartialEq, serde::Serialize, serde::Deserialize)]
pub enum Encoding {
    /// APNG (a still PNG for one frame). `palette: None` = lossless RGBA; `Some(n)` = quantised
    /// to `n` colours (2..=256) with alpha in the palette.
    Apng {
        palette: Option<u16>,
    },
    /// Animated (or still) WebP. `quality: None` = lossless; `Some(q)`, q in 0..=100 = lossy
    /// colour with alpha.
    WebP {
        quality: Option<f32>,
    },
    Gif(GifOptions),
    /// WebM VP9 with alpha (`yuva420p`) through ffmpeg; `crf` 0..=63, lower = better.
    WebM {
        crf: u8,
    },
    /// A folder of numbered RGBA PNG frames (`frame_00000.png`, ...).
    PngFolder,
}

impl Encoding {
    /// The default (best-quality) encoding for a format.
    pub fn default_for(format: Format) -> Option<Encoding> {
        Some(match format {
            Format::Png => Encoding::Apng { palette: None },
            Format::WebP => Encoding::WebP { quality: None },
            Format::Gif => Encoding::Gif(GifOptions::default()),
            Format::WebM => Encoding::WebM { crf: 30 },
            Format::Folder => Encoding::PngFolder,
            Format::Jpeg | Format::Mp4 | Format::Tgs => return None,
        })
    }
}

/// Writes `anim` to `path` atomically with the smallest output. Returns the size in bytes (for
/// a folder, the sum).
pub fn write(anim: &Animation, encoding: &Encoding, path: &Path) -> Result<u64> {
    write_with_effort(anim, encoding, path, Effort::Smallest)
}

/// [`write`] with a chosen [`Effort`].
pub fn write_with_effort(
    anim: &Animation,
    encoding: &Encoding,
    path: &Path,
    effort: Effort,
) -> Result<u64> {
    validate(anim)?;
    match encoding {
        Encoding::WebM { crf } => webm::write(anim, *crf, path),
        Encoding::PngFolder => folder::write(anim, path),
        _ => {
            // Open first: a bad output folder fails before any encoding work.
            let mut out = AtomicFile::new(path)?;
            let bytes = encode_to_vec_with_effort(anim, encoding, effort)?;
            out.file()
                .write_all(&bytes)
                .map_err(|e| Error::io("write output", path, e))?;
            out.commit()
        }
    }
}

/// Encodes to memory (not for WebM or folders, which need a path): used by size searches, so
/// with the smallest output.
pub fn encode_to_vec(anim: &Animation, encoding: &Encoding) -> Result<Vec<u8>> {
    encode_to_vec_with_effort(anim, encoding, Effort::Smallest)
}

fn encode_to_vec_with_effort(
    anim: &Animation,
    encoding: &Encoding,
    effort: Effort,
) -> Result<Vec<u8>> {
    validate(anim)?;
    match encoding {
        Encoding::Apng { palette } => {
            let opts = apng::ApngOptions {
                palette: *palette,
                compression: match effort {
                    Effort::Balanced => png::Compression::Balanced,
                    Effort::Smallest => png::Compression::High,
                },
                ..apng::ApngOptions::default()
            };
            let src = if palette.is_none() {
                cleaned(anim)
            } else {
                Cow::Borrowed(anim)
            };
            apng::encode(&src, &opts)
        }
        Encoding::WebP { quality } => {
            let src = if quality.is_none() {
                cleaned(anim)
            } else {
                Cow::Borrowed(anim)
            };
            webp::encode(&src, *quality)
        }
        Encoding::Gif(opts) => gif::encode(anim, opts),
        Encoding::WebM { .. } | Encoding::PngFolder => Err(Error::Invalid(
            "WebM and PNG-folder output need a path; use `write`".into(),
        )),
    }
}

/// Checks what the writers rely on: at least one frame, every frame the canvas size. Every
/// format's entry point calls it, so a hand-built [`Animation`] errors instead of panicking.
pub fn validate(anim: &Animation) -> Result<()> {
    if anim.width == 0 || anim.height == 0 {
        return Err(Error::Invalid(format!(
            "cannot export an empty canvas ({}x{})",
            anim.width, anim.height
        )));
    }
    anim.validate()
}

/// `anim` with fully transparent pixels' colour set to black (copied only if needed).
fn cleaned(anim: &Animation) -> Cow<'_, Animation> {
    let dirty = anim.frames.iter().any(|f| {
        f.image
            .pixels()
            .any(|p| p[3] == 0 && (p[0] | p[1] | p[2]) != 0)
    });
    if dirty {
        let mut c = anim.clone();
        c.clean_transparent([0, 0, 0]);
        Cow::Owned(c)
    } else {
        Cow::Borrowed(anim)
    }
}

/// Test clip and independent readers shared by the format tests.
#[cfg(test)]
pub(crate) mod test_clip {
    use std::io::Cursor;
    use std::path::Path;

    use image::{AnimationDecoder, Rgba, RgbaImage};

    use crate::media::{Animation, Delay, Frame, LoopCount};

    /// `n` frames of 64×64: a soft-edged, partly translucent disc moving right over
    /// transparency, with a transparent hole, a colour gradient, and random-looking colour
    /// hidden under the fully transparent pixels. 40 ms per frame, loops forever.
    pub fn clip(n: usize) -> Animation {
        let frames = (0..n)
            .map(|k| {
                let img = RgbaImage::from_fn(64, 64, |x, y| {
                    let cx = 22.0 + 4.0 * k as f32;
                    let (dx, dy) = (x as f32 - cx, y as f32 - 32.0);
                    let r = (dx * dx + dy * dy).sqrt();
                    let edge = ((20.0 - r) / 4.0).clamp(0.0, 1.0);
                    let hole = ((r - 5.0) / 2.0).clamp(0.0, 1.0);
                    let translucent = if x < cx as u32 { 1.0 } else { 0.6 };
                    let a = (edge * hole * translucent * 255.0).round() as u8;
                    if a == 0 {
                        let noise = (x * 31 + y * 17 + k as u32 * 7) as u8;
                        Rgba([noise, noise.wrapping_mul(3), 99, 0])
                    } else {
                        Rgba([(x * 4) as u8, (y * 4) as u8, (200 - k * 10) as u8, a])
                    }
                });
                Frame::new(img, Delay::from_millis(40))
            })
            .collect();
        Animation::new(64, 64, frames, LoopCount::Infinite).expect("valid clip")
    }

    /// Equal where visible; where `want` is fully transparent only alpha is compared.
    pub fn assert_rgba_eq_visible(want: &RgbaImage, got: &RgbaImage) {
        assert_eq!(want.dimensions(), got.dimensions());
        for (i, (a, b)) in want.pixels().zip(got.pixels()).enumerate() {
            if a[3] == 0 {
                assert_eq!(b[3], 0, "pixel {i}: {a:?} vs {b:?}");
            } else {
                assert_eq!(a, b, "pixel {i}");
            }
        }
    }

    /// Mean |Δα| over all pixels of all frames, in 0..=1.
    pub fn mean_alpha_error(anim: &Animation, got: &[RgbaImage]) -> f64 {
        let (mut s, mut n) = (0f64, 0f64);
        for (f, g) in anim.frames.iter().zip(got) {
            for (a, b) in f.image.pixels().zip(g.pixels()) {
                s += (a[3] as f64 - b[3] as f64).abs();
                n += 1.0;
            }
        }
        s / n.max(1.0) / 255.0
    }

    /// Decoded frames with their delays, in each format's unit.
    pub type Decoded<D> = Vec<(RgbaImage, D)>;

    /// APNG through the image crate: frames with exact delay ratios, and plays (0 = infinite).
    pub fn decode_apng(bytes: &[u8]) -> (Decoded<(u32, u32)>, u32) {
        let dec = image::codecs::png::PngDecoder::new(Cursor::new(bytes))
            .expect("png")
            .apng()
            .expect("apng");
        let loops = match dec.loop_count() {
            image::metadata::LoopCount::Infinite => 0,
            image::metadata::LoopCount::Finite(n) => n.get(),
        };
        let frames = dec
            .into_frames()
            .collect_frames()
            .expect("frames")
            .into_iter()
            .map(|f| {
                let (n, d) = f.delay().numer_denom_ms();
                let delay = Delay::from_ratio(n, d * 1000).ratio();
                (f.into_buffer(), delay)
            })
            .collect();
        (frames, loops)
    }

    /// GIF through the image crate: frames with delays in cs, and the NETSCAPE repeat value
    /// (`None` when the extension is absent) read with the gif crate.
    pub fn decode_gif(bytes: &[u8]) -> (Decoded<u16>, Option<u16>) {
        let dec = image::codecs::gif::GifDecoder::new(Cursor::new(bytes)).expect("gif");
        let frames = dec
            .into_frames()
            .collect_frames()
            .expect("frames")
            .into_iter()
            .map(|f| {
                let (n, d) = f.delay().numer_denom_ms();
                assert_eq!(n % (d * 10), 0, "GIF delay not whole cs");
                (f.into_buffer(), (n / d / 10) as u16)
            })
            .collect();
        let repeat = if bytes.windows(11).any(|w| w == b"NETSCAPE2.0") {
            let mut d = gif::DecodeOptions::new()
                .read_info(Cursor::new(bytes))
                .expect("gif");
            while d.next_frame_info().expect("frame").is_some() {}
            Some(match d.repeat() {
                gif::Repeat::Infinite => 0,
                gif::Repeat::Finite(n) => n,
            })
        } else {
            None
        };
        (frames, repeat)
    }

    /// WebP through the image crate (image-webp, independent of libwebp): frames with delays in
    /// ms, and plays (0 = infinite).
    pub fn decode_webp(bytes: &[u8]) -> (Decoded<u32>, u32) {
        let mut dec = image::codecs::webp::WebPDecoder::new(Cursor::new(bytes)).expect("webp");
        // image-webp only applies "dispose to background" when a colour is set (it does not use
        // the file's hint): transparent is what browsers and libwebp use.
        dec.set_background_color(Rgba([0, 0, 0, 0]))
            .expect("animated webp");
        let loops = match dec.loop_count() {
            image::metadata::LoopCount::Infinite => 0,
            image::metadata::LoopCount::Finite(n) => n.get(),
        };
        let frames = dec
            .into_frames()
            .collect_frames()
            .expect("frames")
            .into_iter()
            .map(|f| {
                let (n, d) = f.delay().numer_denom_ms();
                (f.into_buffer(), (n as f64 / d as f64).round() as u32)
            })
            .collect();
        (frames, loops)
    }

    /// WebM through ffmpeg with the libvpx decoder named before `-i` (the native VP9 decoder
    /// drops alpha).
    pub fn decode_webm(path: &Path, w: u32, h: u32) -> Vec<RgbaImage> {
        let out = std::process::Command::new("ffmpeg")
            .args([
                "-hide_banner",
                "-loglevel",
                "error",
                "-c:v",
                "libvpx-vp9",
                "-i",
            ])
            .arg(path)
            .args(["-f", "rawvideo", "-pix_fmt", "rgba", "-"])
            .output()
            .expect("run ffmpeg");
        assert!(out.status.success(), "ffmpeg decode failed");
        let size = (w * h * 4) as usize;
        assert_eq!(out.stdout.len() % size, 0);
        out.stdout
            .chunks_exact(size)
            .map(|c| RgbaImage::from_raw(w, h, c.to_vec()).expect("frame"))
            .collect()
    }
}

#[cfg(test)]
mod tests {
    use super::test_clip::{clip, decode_apng};
    use super::*;

    fn all_encodings() -> Vec<Encoding> {
        vec![
            Encoding::Apng { palette: None },
            Encoding::Apng { palette: Some(64) },
            Encoding::WebP { quality: None },
            Encoding::WebP {
                quality: Some(80.0),
            },
            Encoding::Gif(GifOptions::default()),
            Encoding::WebM { crf: 30 },
            Encoding::PngFolder,
        ]
    }

    #[test]
    fn missing_or_unusable_folder_is_io_and_leaves_nothing() {
        let dir = tempfile::tempdir().expect("tempdir");
        // A "folder" that is a regular file: nothing can be created inside it.
        let file = dir.path().join("plain-file");
        std::fs::write(&file, b"x").expect("write");
        let anim = clip(2);
        for enc in all_encodings() {
            for target in [
                dir.path().join("no-such-dir").join("out.bin"),
                file.join("out.bin"),
            ] {
                let err = write(&anim, &enc, &target).expect_err("must fail");
                assert_eq!(err.kind(), "io", "{enc:?}: {err}");
                assert!(err.to_string().contains("out.bin"), "{err}");
            }
        }
        assert_eq!(std::fs::read_dir(dir.path()).expect("ls").count(), 1);
    }

    #[test]
    fn write_matches_encode_to_vec_and_reports_size() {
        let dir = tempfile::tempdir().expect("tempdir");
        let anim = clip(3);
        for (i, enc) in all_encodings().into_iter().enumerate() {
            let path = dir.path().join(format!("out{i}"));
            let size = write(&anim, &enc, &path).expect("write");
            assert!(size > 0);
            match enc {
                Encoding::WebM { .. } | Encoding::PngFolder => {
                    assert_eq!(
                        encode_to_vec(&anim, &enc).expect_err("needs a path").kind(),
                        "invalid"
                    );
                }
                _ => {
                    let bytes = encode_to_vec(&anim, &enc).expect("encode");
                    assert_eq!(std::fs::read(&path).expect("read"), bytes, "{enc:?}");
                    assert_eq!(size, bytes.len() as u64);
                }
            }
        }
        // No temporary files left beside the outputs.
        assert_eq!(std::fs::read_dir(dir.path()).expect("ls").count(), 7);
    }

    #[test]
    fn balanced_effort_changes_bytes_not_pixels() {
        let dir = tempfile::tempdir().expect("tempdir");
        let anim = clip(3);
        let enc = Encoding::Apng { palette: None };
        let (small, quick) = (dir.path().join("s.png"), dir.path().join("q.png"));
        write(&anim, &enc, &small).expect("smallest");
        write_with_effort(&anim, &enc, &quick, Effort::Balanced).expect("balanced");
        let (a, b) = (
            std::fs::read(&small).expect("read"),
            std::fs::read(&quick).expect("read"),
        );
        // Another zlib level: other bytes (else the knob would do nothing) ...
        assert_ne!(a, b);
        // ... and exactly the same frames and delays.
        let ((fa, la), (fb, lb)) = (decode_apng(&a), decode_apng(&b));
        assert_eq!(la, lb);
        assert_eq!(fa.len(), 3);
        for ((ia, da), (ib, db)) in fa.iter().zip(&fb) {
            assert_eq!(ia, ib);
            assert_eq!(da, db);
        }
    }

    #[test]
    fn invalid_clips_are_rejected() {
        let mut anim = clip(2);
        anim.frames[1].image = image::RgbaImage::new(3, 3);
        let err = encode_to_vec(&anim, &Encoding::Apng { palette: None }).expect_err("bad");
        assert_eq!(err.kind(), "invalid");
        anim.frames.clear();
        assert!(encode_to_vec(&anim, &Encoding::Gif(GifOptions::default())).is_err());
    }
}

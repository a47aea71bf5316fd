//! WebP import, still and animated. We parse the RIFF container ourselves (canvas size, frame
//! count, loop count: all checked against the limits before any pixel is decoded) and decode each
//! frame's bitstream with the `image` crate (image-webp underneath), then composite here.
//!
//! Why not let image-webp composite: in 0.2.4 it skips "dispose to background" unless a
//! background colour is set, and clears the previous rectangle with a 3-byte stride when the new
//! frame has no alpha, corrupting the canvas. Browsers and libwebp's own animation decoder ignore
//! the background colour and dispose to transparent; so do we (checked against libwebp in tests).

use std::io::Cursor;
use std::ops::Range;
use std::path::{Path, PathBuf};

use image::ImageDecoder;
use image::codecs::webp::WebPDecoder;

use super::compose::{Blend, Canvas, Rect};
use super::still::{StillSource, decode_checked};
use super::{FrameSource, SourceInfo, display_delay, read_all};
use crate::error::{Error, Result};
use crate::media::{Delay, Format, Frame, Limits, LoopCount};

fn decode_err(path: &Path, e: impl std::fmt::Display) -> Error {
    Error::decode("webp", path, e)
}

fn u24(b: &[u8]) -> u32 {
    b[0] as u32 | (b[1] as u32) << 8 | (b[2] as u32) << 16
}

/// One RIFF chunk: its four-character code and payload range in the file.
struct Chunk {
    fourcc: [u8; 4],
    payload: Range<usize>,
    /// The whole chunk (header, payload, pad byte if any), to copy it verbatim.
    whole: Range<usize>,
}

/// Splits `data[range]` into chunks; a chunk running past the end is an error (truncated file).
fn chunks(data: &[u8], range: Range<usize>, path: &Path) -> Result<Vec<Chunk>> {
    let mut out = Vec::new();
    let mut pos = range.start;
    while pos + 8 <= range.end {
        let fourcc: [u8; 4] = [data[pos], data[pos + 1], data[pos + 2], data[pos + 3]];
        let size = u32::from_le_bytes([data[pos + 4], data[pos + 5], data[pos + 6], data[pos + 7]]);
        let start = pos + 8;
        let end = start
            .checked_add(size as usize)
            .filter(|&e| e <= range.end)
            .ok_or_else(|| {
                decode_err(
                    path,
                    format!(
                        "chunk {} runs past the end of the file (truncated?)",
                        String::from_utf8_lossy(&fourcc)
                    ),
                )
            })?;
        let next = (end + (size as usize & 1)).min(range.end);
        out.push(Chunk {
            fourcc,
            payload: start..end,
            whole: pos..next,
        });
        pos = next;
    }
    Ok(out)
}

/// Opens a WebP file: a one-frame source for a still, a compositing source for an animation.
pub(super) fn open(path: &Path, limits: &Limits) -> Result<Box<dyn FrameSource>> {
    let data = read_all(path, limits)?;
    if data.len() < 12 || &data[0..4] != b"RIFF" || &data[8..12] != b"WEBP" {
        return Err(decode_err(path, "missing RIFF/WEBP header"));
    }
    let riff_len = u32::from_le_bytes([data[4], data[5], data[6], data[7]]) as usize;
    // Tolerate a RIFF size larger than the file only as far as whole chunks go (checked below).
    let end = riff_len.saturating_add(8).min(data.len());
    let top = chunks(&data, 12..end, path)?;
    let first = top
        .first()
        .ok_or_else(|| decode_err(path, "no image data"))?;
    let animated =
        &first.fourcc == b"VP8X" && data.get(first.payload.start).is_some_and(|f| f & 0x02 != 0);
    if !animated {
        return open_still(data, path, limits);
    }
    let p = &data[first.payload.clone()];
    if p.len() < 10 {
        return Err(decode_err(path, "VP8X chunk too short"));
    }
    let width = u24(&p[4..7]) + 1;
    let height = u24(&p[7..10]) + 1;
    limits.check_canvas(width, height, path)?;
    let mut loops = LoopCount::Infinite;
    let mut frames = Vec::new();
    for c in &top[1..] {
        match &c.fourcc {
            b"ANIM" if c.payload.len() >= 6 => {
                let n = u16::from_le_bytes([data[c.payload.start + 4], data[c.payload.start + 5]]);
                loops = LoopCount::from_zero_infinite(n as u32);
            }
            b"ANMF" => {
                if c.payload.len() < 16 {
                    return Err(decode_err(path, "ANMF chunk too short"));
                }
                frames.push(c.payload.clone());
                limits.check_frames(frames.len() as u64, path)?;
            }
            _ => {}
        }
    }
    if frames.is_empty() {
        return Err(decode_err(path, "animated WebP without frames"));
    }
    limits.check_bytes(width, height, 1, path)?;
    Ok(Box::new(AnimatedWebP {
        info: SourceInfo {
            format: Format::WebP,
            animated: true,
            width,
            height,
            frame_count: Some(frames.len() as u64),
            loops,
        },
        path: path.to_path_buf(),
        limits: *limits,
        canvas: Canvas::new(width, height),
        data,
        frames,
        next: 0,
        clear_before_next: None,
    }))
}

fn open_still(data: Vec<u8>, path: &Path, limits: &Limits) -> Result<Box<dyn FrameSource>> {
    // `new` reads only the headers, so the size is checked before pixels are allocated.
    let decoder = WebPDecoder::new(Cursor::new(data)).map_err(|e| decode_err(path, e))?;
    let (w, h) = decoder.dimensions();
    limits.check_canvas(w, h, path)?;
    limits.check_bytes(w, h, 1, path)?;
    let (p, l) = (path.to_path_buf(), *limits);
    Ok(Box::new(StillSource::lazy(
        Format::WebP,
        w,
        h,
        Box::new(move || decode_checked(decoder, Format::WebP, &p, &l, false)),
    )))
}

struct AnimatedWebP {
    info: SourceInfo,
    path: PathBuf,
    limits: Limits,
    canvas: Canvas,
    data: Vec<u8>,
    /// Payload range of each ANMF chunk.
    frames: Vec<Range<usize>>,
    next: usize,
    /// The previous frame's rectangle when it asked to be disposed to the background.
    clear_before_next: Option<Rect>,
}

/// Appends a chunk to a RIFF body, with its pad byte.
fn push_chunk(body: &mut Vec<u8>, fourcc: &[u8; 4], payload: &[u8]) {
    body.extend_from_slice(fourcc);
    body.extend_from_slice(&(payload.len() as u32).to_le_bytes());
    body.extend_from_slice(payload);
    if payload.len() % 2 == 1 {
        body.push(0);
    }
}

impl AnimatedWebP {
    /// Decodes one ANMF frame's bitstream (ALPH + VP8, or VP8L) to RGBA by wrapping it in a
    /// minimal still WebP for the `image` decoder.
    fn decode_sub(&self, payload: Range<usize>, w: u32, h: u32) -> Result<Vec<u8>> {
        let path = &self.path;
        let subs = chunks(&self.data, payload.start + 16..payload.end, path)?;
        let alph = subs.iter().find(|c| &c.fourcc == b"ALPH");
        let bits = subs
            .iter()
            .find(|c| &c.fourcc == b"VP8 " || &c.fourcc == b"VP8L")
            .ok_or_else(|| decode_err(path, format!("frame {} has no bitstream", self.next)))?;
        let mut body = Vec::new();
        match (alph, &bits.fourcc) {
            (Some(a), b"VP8 ") => {
                let mut vp8x = [0u8; 10];
                vp8x[0] = 0x10; // alpha
                vp8x[4..7].copy_from_slice(&(w - 1).to_le_bytes()[..3]);
                vp8x[7..10].copy_from_slice(&(h - 1).to_le_bytes()[..3]);
                push_chunk(&mut body, b"VP8X", &vp8x);
                body.extend_from_slice(&self.data[a.whole.clone()]);
                body.extend_from_slice(&self.data[bits.whole.clone()]);
            }
            _ => body.extend_from_slice(&self.data[bits.whole.clone()]),
        }
        let mut mini = Vec::with_capacity(body.len() + 12);
        mini.extend_from_slice(b"RIFF");
        mini.extend_from_slice(&(body.len() as u32 + 4).to_le_bytes());
        mini.extend_from_slice(b"WEBP");
        mini.extend_from_slice(&body);
        let decoder = WebPDecoder::new(Cursor::new(mini)).map_err(|e| decode_err(path, e))?;
        if decoder.dimensions() != (w, h) {
            let (bw, bh) = decoder.dimensions();
            return Err(decode_err(
                path,
                format!(
                    "frame {} bitstream is {bw}x{bh}, its ANMF header says {w}x{h}",
                    self.next
                ),
            ));
        }
        let img = decode_checked(decoder, Format::WebP, path, &self.limits, false)?;
        Ok(img.into_raw())
    }
}

impl FrameSource for AnimatedWebP {
    fn info(&self) -> &SourceInfo {
        &self.info
    }

    fn next_frame(&mut self) -> Result<Option<Frame>> {
        let Some(payload) = self.frames.get(self.next).cloned() else {
            return Ok(None);
        };
        let h = &self.data[payload.start..payload.start + 16];
        let (x, y) = (u24(&h[0..3]) * 2, u24(&h[3..6]) * 2);
        let (w, hh) = (u24(&h[6..9]) + 1, u24(&h[9..12]) + 1);
        let duration = u24(&h[12..15]);
        let flags = h[15];
        let rect =
            Rect::inside(x, y, w, hh, self.canvas.width, self.canvas.height).ok_or_else(|| {
                decode_err(
                    &self.path,
                    format!(
                        "frame {} ({w}x{hh} at {x},{y}) lies outside the canvas",
                        self.next
                    ),
                )
            })?;
        let rgba = self.decode_sub(payload, w, hh)?;
        if let Some(r) = self.clear_before_next.take() {
            self.canvas.clear(r);
        }
        let blend = if flags & 0x02 != 0 {
            Blend::Source
        } else {
            Blend::Over
        };
        self.canvas.draw(rect, &rgba, blend);
        if flags & 0x01 != 0 {
            self.clear_before_next = Some(rect);
        }
        self.next += 1;
        let delay = display_delay(Delay::from_millis(duration));
        Ok(Some(Frame::new(self.canvas.to_image(), delay)))
    }
}

#[cfg(test)]
pub(crate) mod tests {
    use image::RgbaImage;
    use webp_animation::{Encoder, EncoderOptions, EncodingConfig};

    use super::*;
    use crate::media::decode::testutil::{pattern, write_temp};
    use crate::media::decode::{open as open_anim, open_source};

    /// Lossless still WebP with alpha, via `image`.
    fn still_bytes(img: &RgbaImage) -> Vec<u8> {
        let mut out = Vec::new();
        image::codecs::webp::WebPEncoder::new_lossless(&mut out)
            .encode(
                img.as_raw(),
                img.width(),
                img.height(),
                image::ExtendedColorType::Rgba8,
            )
            .expect("webp");
        out
    }

    pub(crate) fn sample_still_webp() -> Vec<u8> {
        still_bytes(&pattern(8, 6, 4))
    }

    /// Frames with moving content and a region going transparent, so libwebp's encoder picks
    /// sub-rectangles, no-blend and dispose-to-background.
    fn clip_frames() -> Vec<RgbaImage> {
        (0..4u32)
            .map(|i| {
                RgbaImage::from_fn(16, 12, |x, y| {
                    let inside = x >= 2 + i * 2 && x < 8 + i * 2 && (3..9).contains(&y);
                    if inside {
                        image::Rgba([200, (40 * i) as u8, 30, if x % 2 == 0 { 255 } else { 140 }])
                    } else if i == 0 || y > 10 {
                        image::Rgba([10, 90, 200, 255])
                    } else {
                        image::Rgba([0, 0, 0, 0])
                    }
                })
            })
            .collect()
    }

    fn encode_anim(frames: &[RgbaImage], lossy: bool, loops: i32) -> Vec<u8> {
        let (w, h) = frames[0].dimensions();
        let mut opts = EncoderOptions::default();
        opts.anim_params.loop_count = loops;
        opts.encoding_config = Some(if lossy {
            EncodingConfig::new_lossy(80.0)
        } else {
            EncodingConfig::default()
        });
        let mut enc = Encoder::new_with_options((w, h), opts).expect("encoder");
        let mut t = 0;
        for (i, f) in frames.iter().enumerate() {
            enc.add_frame(f.as_raw(), t).expect("frame");
            t += 40 + 20 * i as i32;
        }
        enc.finalize(t).expect("finalize").to_vec()
    }

    pub(crate) fn sample_animated_webp() -> Vec<u8> {
        encode_anim(&clip_frames()[..3], false, 0)
    }

    /// libwebp's own animation decoder, as the reference.
    fn libwebp_frames(bytes: &[u8]) -> Vec<RgbaImage> {
        let dec = webp_animation::Decoder::new(bytes).expect("libwebp decoder");
        dec.into_iter()
            .map(|f| {
                let (w, h) = f.dimensions();
                RgbaImage::from_raw(w, h, f.data().to_vec()).expect("rgba frame")
            })
            .collect()
    }

    /// Max channel difference, ignoring colour where both pixels are fully transparent.
    fn max_diff(a: &RgbaImage, b: &RgbaImage) -> u8 {
        a.pixels()
            .zip(b.pixels())
            .map(|(p, q)| {
                if p.0[3] == 0 && q.0[3] == 0 {
                    0
                } else {
                    (0..4).map(|c| p.0[c].abs_diff(q.0[c])).max().unwrap_or(0)
                }
            })
            .max()
            .unwrap_or(0)
    }

    /// (x, y, w, h, flags) of every ANMF chunk.
    fn anmf_headers(bytes: &[u8]) -> Vec<(u32, u32, u32, u32, u8)> {
        chunks(bytes, 12..bytes.len(), Path::new("t"))
            .expect("chunks")
            .iter()
            .filter(|c| &c.fourcc == b"ANMF")
            .map(|c| {
                let h = &bytes[c.payload.clone()];
                let (x, y) = (u24(&h[0..3]) * 2, u24(&h[3..6]) * 2);
                (x, y, u24(&h[6..9]) + 1, u24(&h[9..12]) + 1, h[15])
            })
            .collect()
    }

    #[test]
    fn encoder_output_exercises_subframes() {
        for lossy in [false, true] {
            let h = anmf_headers(&encode_anim(&clip_frames(), lossy, 0));
            assert!(
                h.iter()
                    .any(|&(x, y, w, hh, _)| (x, y, w, hh) != (0, 0, 16, 12))
            );
            assert!(
                h.iter().any(|&(.., flags)| flags & 0x01 != 0),
                "no dispose-to-background"
            );
        }
    }

    #[test]
    fn animated_lossless_matches_libwebp_and_source() {
        let frames = clip_frames();
        let bytes = encode_anim(&frames, false, 3);
        let (_d, p) = write_temp("a.webp", &bytes);
        let info = open_source(&p, &Limits::default())
            .expect("open")
            .info()
            .clone();
        assert!(info.animated);
        assert_eq!(info.frame_count, Some(4));
        assert_eq!(info.loops, LoopCount::Plays(3));
        let a = open_anim(&p, &Limits::default()).expect("decode");
        let reference = libwebp_frames(&bytes);
        assert_eq!(a.frames.len(), reference.len());
        for (i, (ours, theirs)) in a.frames.iter().zip(&reference).enumerate() {
            assert!(
                max_diff(&ours.image, theirs) <= 1,
                "frame {i} differs from libwebp"
            );
            // Lossless: also equal to what was encoded.
            assert!(
                max_diff(&ours.image, &frames[i]) <= 1,
                "frame {i} differs from input"
            );
        }
        let ms: Vec<u32> = a.frames.iter().map(|f| f.delay.millis()).collect();
        assert_eq!(ms, vec![40, 60, 80, 100]);
    }

    #[test]
    fn animated_lossy_matches_libwebp() {
        let bytes = encode_anim(&clip_frames(), true, 0);
        let (_d, p) = write_temp("l.webp", &bytes);
        let a = open_anim(&p, &Limits::default()).expect("decode");
        assert_eq!(a.loops, LoopCount::Infinite);
        let reference = libwebp_frames(&bytes);
        assert_eq!(a.frames.len(), reference.len());
        for (i, (ours, theirs)) in a.frames.iter().zip(&reference).enumerate() {
            // Lossy: libwebp's fancy upsampling and blending round differently from image-webp.
            let d = max_diff(&ours.image, theirs);
            assert!(d <= 40, "frame {i}: max diff {d}");
            let alpha_diff = ours
                .image
                .pixels()
                .zip(theirs.pixels())
                .map(|(p, q)| p.0[3].abs_diff(q.0[3]))
                .max()
                .unwrap_or(0);
            assert!(alpha_diff <= 2, "frame {i}: alpha differs by {alpha_diff}");
        }
    }

    /// Builds an animated WebP by hand from lossless sub-images with chosen flags, to pin down
    /// dispose (bit 0) and no-blend (bit 1) independently of libwebp's encoder choices.
    fn hand_anim(w: u32, h: u32, subs: &[(u32, u32, RgbaImage, u8, u32)]) -> Vec<u8> {
        let mut body = Vec::new();
        let mut vp8x = [0u8; 10];
        vp8x[0] = 0x10 | 0x02;
        vp8x[4..7].copy_from_slice(&(w - 1).to_le_bytes()[..3]);
        vp8x[7..10].copy_from_slice(&(h - 1).to_le_bytes()[..3]);
        push_chunk(&mut body, b"VP8X", &vp8x);
        push_chunk(&mut body, b"ANIM", &[0, 0, 0, 0, 2, 0]);
        for (x, y, img, flags, ms) in subs {
            let still = still_bytes(img);
            let mut anmf = Vec::new();
            anmf.extend_from_slice(&(x / 2).to_le_bytes()[..3]);
            anmf.extend_from_slice(&(y / 2).to_le_bytes()[..3]);
            anmf.extend_from_slice(&(img.width() - 1).to_le_bytes()[..3]);
            anmf.extend_from_slice(&(img.height() - 1).to_le_bytes()[..3]);
            anmf.extend_from_slice(&ms.to_le_bytes()[..3]);
            anmf.push(*flags);
            anmf.extend_from_slice(&still[12..]); // the VP8L chunk
            push_chunk(&mut body, b"ANMF", &anmf);
        }
        let mut out = b"RIFF".to_vec();
        out.extend_from_slice(&(body.len() as u32 + 4).to_le_bytes());
        out.extend_from_slice(b"WEBP");
        out.extend_from_slice(&body);
        out
    }

    #[test]
    fn hand_built_dispose_and_blend() {
        let solid = |w, h, c: [u8; 4]| RgbaImage::from_pixel(w, h, image::Rgba(c));
        let bytes = hand_anim(
            6,
            4,
            &[
                (0, 0, solid(6, 4, [255, 0, 0, 255]), 0, 50),
                // Half-transparent blue over red, then disposed to background.
                (2, 2, solid(2, 2, [0, 0, 255, 128]), 0x01, 0),
                // No-blend: a half-transparent green pixel replaces what is below.
                (0, 0, solid(2, 2, [0, 255, 0, 100]), 0x02, 30),
            ],
        );
        let (_d, p) = write_temp("h.webp", &bytes);
        let a = open_anim(&p, &Limits::default()).expect("decode");
        assert_eq!(a.loops, LoopCount::Plays(2));
        let px = |i: usize, x, y| a.frames[i].image.get_pixel(x, y).0;
        let m = px(1, 2, 2);
        assert_eq!(m[3], 255);
        assert!(
            (m[0] as i32 - 127).abs() <= 1 && (m[2] as i32 - 128).abs() <= 1,
            "{m:?}"
        );
        assert_eq!(px(2, 2, 2), [0, 0, 0, 0], "disposed to transparent");
        assert_eq!(px(2, 0, 0), [0, 255, 0, 100], "no-blend replaces");
        assert_eq!(px(2, 5, 0), [255, 0, 0, 255]);
        let ms: Vec<u32> = a.frames.iter().map(|f| f.delay.millis()).collect();
        assert_eq!(ms, vec![50, 100, 30]);
        // libwebp agrees.
        let reference = libwebp_frames(&bytes);
        for (ours, theirs) in a.frames.iter().zip(&reference) {
            assert!(max_diff(&ours.image, theirs) <= 1);
        }
    }

    #[test]
    fn still_webp_decodes_exactly() {
        let img = pattern(8, 6, 4);
        let (_d, p) = write_temp("s.webp", &still_bytes(&img));
        let a = open_anim(&p, &Limits::default()).expect("decode");
        assert_eq!(a.frames.len(), 1);
        assert_eq!(a.frames[0].image, img);
        assert_eq!(a.loops, LoopCount::Infinite);
    }

    #[test]
    fn limits_and_truncation() {
        let bytes = sample_animated_webp();
        let (_d, p) = write_temp("a.webp", &bytes);
        let few = Limits {
            max_frames: 2,
            ..Limits::default()
        };
        assert_eq!(open_anim(&p, &few).expect_err("frames").kind(), "limits");
        let narrow = Limits {
            max_side: 8,
            ..Limits::default()
        };
        assert_eq!(open_anim(&p, &narrow).expect_err("side").kind(), "limits");

        // A VP8X header claiming a 16384×16384 canvas.
        let mut huge = bytes.clone();
        let vp8x = 12 + 8;
        huge[vp8x + 4..vp8x + 7].copy_from_slice(&[0xFF, 0x3F, 0]);
        huge[vp8x + 7..vp8x + 10].copy_from_slice(&[0xFF, 0x3F, 0]);
        let (_d, p) = write_temp("huge.webp", &huge);
        assert_eq!(
            open_anim(&p, &Limits::default()).expect_err("huge").kind(),
            "limits"
        );

        for src in [bytes, sample_still_webp()] {
            for cut in [12, 20, src.len() / 2, src.len() - 3] {
                let (_d, p) = write_temp("cut.webp", &src[..cut]);
                let e = open_anim(&p, &Limits::default()).expect_err("truncated");
                assert_eq!(e.kind(), "decode", "cut {cut}: {e}");
                assert!(e.to_string().contains("cut.webp"));
            }
        }
    }
}

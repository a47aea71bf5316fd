//! PNG and APNG import through the `png` crate. Every colour type and depth (palette, grey,
//! 16-bit, tRNS) becomes straight RGBA8 (16-bit samples rounded, not truncated). APNG frames are
//! composited here: fcTL offsets, dispose ops (none / background / previous; "previous" on the
//! first frame means "background", as the specification says) and blend ops (source / over).
//! A default image written without an fcTL is not part of the animation and is skipped.

use std::fs::File;
use std::io::BufReader;
use std::path::{Path, PathBuf};

use png::{BitDepth, BlendOp, ColorType, DisposeOp, Transformations};

use super::compose::{Blend, Canvas, Pending, Rect};
use super::{FrameSource, SourceInfo, display_delay};
use crate::error::{Error, Result};
use crate::media::{Delay, Format, Frame, Limits, LoopCount};

type Reader = png::Reader<BufReader<File>>;

fn decode_err(path: &Path, e: impl std::fmt::Display) -> Error {
    Error::decode("png", path, e)
}

/// Opens a PNG: a one-frame source for a still image, a compositing source for an APNG.
pub(super) fn open(path: &Path, limits: &Limits) -> Result<Box<dyn FrameSource>> {
    let file = File::open(path).map_err(|e| Error::io("open", path, e))?;
    // The crate's own allocation cap covers its internal buffers; ours come from `Limits`.
    let cap = png::Limits {
        bytes: usize::try_from(limits.max_bytes).unwrap_or(usize::MAX),
    };
    let mut decoder = png::Decoder::new_with_limits(BufReader::new(file), cap);
    decoder.set_transformations(Transformations::EXPAND | Transformations::ALPHA);
    decoder.set_ignore_text_chunk(true);
    let header = decoder
        .read_header_info()
        .map_err(|e| decode_err(path, e))?;
    let (width, height) = (header.width, header.height);
    limits.check_canvas(width, height, path)?;
    limits.check_bytes(width, height, 1, path)?;
    let mut reader = decoder.read_info().map_err(|e| decode_err(path, e))?;

    let actl = reader.info().animation_control.filter(|a| a.num_frames > 0);
    let Some(actl) = actl else {
        return Ok(Box::new(StillPng {
            info: SourceInfo {
                format: Format::Png,
                animated: false,
                width,
                height,
                frame_count: Some(1),
                loops: LoopCount::Infinite,
            },
            path: path.to_path_buf(),
            reader: Some(reader),
        }));
    };
    limits.check_frames(actl.num_frames as u64, path)?;
    if reader.info().frame_control.is_none() {
        // The IDAT image has no fcTL: it is the fallback for viewers without APNG support and not
        // a frame of the animation. Skip its data and stop at the first real frame.
        reader.next_frame_info().map_err(|e| decode_err(path, e))?;
    }
    Ok(Box::new(ApngSource {
        info: SourceInfo {
            format: Format::Png,
            animated: true,
            width,
            height,
            frame_count: Some(actl.num_frames as u64),
            loops: LoopCount::from_zero_infinite(actl.num_plays),
        },
        path: path.to_path_buf(),
        reader,
        canvas: Canvas::new(width, height),
        buf: Vec::new(),
        pending: Pending::None,
        done: 0,
        total: actl.num_frames as u64,
    }))
}

/// Decodes the first (IDAT) image of a PNG file as RGBA8; used for frame folders.
pub(super) fn decode_still(path: &Path, limits: &Limits) -> Result<image::RgbaImage> {
    let mut source = open(path, limits)?;
    // A frame of an APNG in a folder counts as its first frame.
    source
        .next_frame()?
        .map(|f| f.image)
        .ok_or_else(|| decode_err(path, "the file holds no image"))
}

/// Reads the next (sub-)frame into `buf` and converts it to packed RGBA8 of its own size.
fn read_rgba(reader: &mut Reader, buf: &mut Vec<u8>, path: &Path) -> Result<(u32, u32, Vec<u8>)> {
    let size = reader
        .output_buffer_size()
        .ok_or_else(|| decode_err(path, "image too large for this machine"))?;
    buf.resize(size, 0);
    let out = reader.next_frame(buf).map_err(|e| decode_err(path, e))?;
    let (w, h) = (out.width, out.height);
    let samples = match out.color_type {
        ColorType::Rgba => 4,
        ColorType::GrayscaleAlpha => 2,
        other => {
            return Err(decode_err(
                path,
                format!("unexpected colour type {other:?} after expansion"),
            ));
        }
    };
    let wide = out.bit_depth == BitDepth::Sixteen;
    if !wide && out.bit_depth != BitDepth::Eight {
        return Err(decode_err(path, "unexpected bit depth after expansion"));
    }
    let bytes_per_sample = if wide { 2 } else { 1 };
    let row_bytes = w as usize * samples * bytes_per_sample;
    // Interlaced (sub-)frames are expanded with the stride of the full image width, whatever
    // `line_size` says (png 0.18's Adam7 path); progressive ones are packed at `line_size`.
    let stride = if reader.info().interlaced {
        reader
            .output_line_size(reader.info().width)
            .ok_or_else(|| decode_err(path, "image too large for this machine"))?
    } else {
        out.line_size
    };
    if stride < row_bytes || buf.len() < stride * (h as usize).saturating_sub(1) + row_bytes {
        return Err(decode_err(path, "frame rows are shorter than its width"));
    }
    let mut rgba = Vec::with_capacity(w as usize * h as usize * 4);
    for row in buf.chunks(stride).take(h as usize) {
        let row = &row[..row_bytes];
        // One sample as 8 bits; 16-bit samples are rounded to nearest.
        let sample = |i: usize| -> u8 {
            if wide {
                let v = u16::from_be_bytes([row[2 * i], row[2 * i + 1]]) as u32;
                ((v * 255 + 32767) / 65535) as u8
            } else {
                row[i]
            }
        };
        for x in 0..w as usize {
            let i = x * samples;
            if samples == 4 {
                rgba.extend_from_slice(&[sample(i), sample(i + 1), sample(i + 2), sample(i + 3)]);
            } else {
                let g = sample(i);
                rgba.extend_from_slice(&[g, g, g, sample(i + 1)]);
            }
        }
    }
    Ok((w, h, rgba))
}

/// A still PNG: one frame of 100 ms that loops (the convention of [`crate::media::Animation::still`]).
struct StillPng {
    info: SourceInfo,
    path: PathBuf,
    reader: Option<Reader>,
}

impl FrameSource for StillPng {
    fn info(&self) -> &SourceInfo {
        &self.info
    }

    fn next_frame(&mut self) -> Result<Option<Frame>> {
        let Some(mut reader) = self.reader.take() else {
            return Ok(None);
        };
        let mut buf = Vec::new();
        let (w, h, rgba) = read_rgba(&mut reader, &mut buf, &self.path)?;
        let image = image::RgbaImage::from_raw(w, h, rgba)
            .ok_or_else(|| decode_err(&self.path, "image buffer has the wrong size"))?;
        Ok(Some(Frame::new(image, Delay::from_millis(100))))
    }
}

struct ApngSource {
    info: SourceInfo,
    path: PathBuf,
    reader: Reader,
    canvas: Canvas,
    buf: Vec<u8>,
    pending: Pending,
    done: u64,
    total: u64,
}

impl FrameSource for ApngSource {
    fn info(&self) -> &SourceInfo {
        &self.info
    }

    fn next_frame(&mut self) -> Result<Option<Frame>> {
        if self.done >= self.total {
            return Ok(None);
        }
        std::mem::replace(&mut self.pending, Pending::None).apply(&mut self.canvas);
        let path = &self.path;
        let (w, h, rgba) = read_rgba(&mut self.reader, &mut self.buf, path)?;
        let fc = self
            .reader
            .info()
            .frame_control
            .ok_or_else(|| decode_err(path, "APNG frame without an fcTL chunk"))?;
        if (fc.width, fc.height) != (w, h) {
            return Err(decode_err(path, "fcTL size differs from the frame data"));
        }
        let rect = Rect::inside(
            fc.x_offset,
            fc.y_offset,
            w,
            h,
            self.canvas.width,
            self.canvas.height,
        )
        .ok_or_else(|| {
            decode_err(
                path,
                format!(
                    "frame {} ({w}x{h} at {},{}) lies outside the canvas",
                    self.done, fc.x_offset, fc.y_offset
                ),
            )
        })?;
        let dispose = match fc.dispose_op {
            DisposeOp::Previous if self.done == 0 => DisposeOp::Background,
            d => d,
        };
        if dispose == DisposeOp::Previous {
            self.pending = Pending::Restore(rect, self.canvas.save(rect));
        }
        let blend = match fc.blend_op {
            BlendOp::Source => Blend::Source,
            BlendOp::Over => Blend::Over,
        };
        self.canvas.draw(rect, &rgba, blend);
        if dispose == DisposeOp::Background {
            self.pending = Pending::Clear(rect);
        }
        self.done += 1;
        let delay = display_delay(Delay::from_ratio(fc.delay_num as u32, fc.delay_den as u32));
        Ok(Some(Frame::new(self.canvas.to_image(), delay)))
    }
}

#[cfg(test)]
pub(crate) mod tests {
    use image::RgbaImage;

    use super::*;
    use crate::media::decode::testutil::{pattern, png_bytes, write_temp};
    use crate::media::decode::{open as open_anim, open_source};

    struct Sub {
        x: u32,
        y: u32,
        w: u32,
        h: u32,
        rgba: Vec<u8>,
        dispose: DisposeOp,
        blend: BlendOp,
        delay: (u16, u16),
    }

    fn solid(w: u32, h: u32, c: [u8; 4]) -> Vec<u8> {
        c.iter()
            .copied()
            .cycle()
            .take((w * h * 4) as usize)
            .collect()
    }

    /// Writes an APNG. With `default_image`, an IDAT image without fcTL comes first (not part of
    /// the animation); otherwise the first sub-frame is the IDAT.
    fn apng(w: u32, h: u32, plays: u32, default_image: Option<&[u8]>, subs: &[Sub]) -> Vec<u8> {
        let mut out = Vec::new();
        let mut enc = png::Encoder::new(&mut out, w, h);
        enc.set_color(ColorType::Rgba);
        enc.set_depth(BitDepth::Eight);
        enc.set_animated(subs.len() as u32, plays).expect("actl");
        enc.set_sep_def_img(default_image.is_some()).expect("sep");
        let mut wr = enc.write_header().expect("header");
        if let Some(img) = default_image {
            wr.write_image_data(img).expect("default image");
        }
        for s in subs {
            wr.reset_frame_position().expect("reset");
            wr.set_frame_dimension(s.w, s.h).expect("dim");
            wr.set_frame_position(s.x, s.y).expect("pos");
            wr.set_dispose_op(s.dispose).expect("dispose");
            wr.set_blend_op(s.blend).expect("blend");
            wr.set_frame_delay(s.delay.0, s.delay.1).expect("delay");
            wr.write_image_data(&s.rgba).expect("data");
        }
        wr.finish().expect("finish");
        out
    }

    pub(crate) fn crc32(bytes: &[u8]) -> u32 {
        let mut c = 0xFFFF_FFFFu32;
        for &b in bytes {
            c ^= b as u32;
            for _ in 0..8 {
                c = if c & 1 != 0 {
                    0xEDB8_8320 ^ (c >> 1)
                } else {
                    c >> 1
                };
            }
        }
        !c
    }

    const RED: [u8; 4] = [255, 0, 0, 255];
    const HALF_BLUE: [u8; 4] = [0, 0, 255, 128];
    const GREEN: [u8; 4] = [0, 255, 0, 255];

    /// 4×4, 3 frames, a default image (all white) outside the animation:
    /// 1. full red, dispose none; 2. half-transparent blue 2×2 at (2,2), blend over, dispose
    ///    previous; 3. green 1×1 at (0,0), blend source, dispose background.
    pub(crate) fn sample_apng() -> Vec<u8> {
        apng(
            4,
            4,
            2,
            Some(&solid(4, 4, [255, 255, 255, 255])),
            &[
                Sub {
                    x: 0,
                    y: 0,
                    w: 4,
                    h: 4,
                    rgba: solid(4, 4, RED),
                    dispose: DisposeOp::None,
                    blend: BlendOp::Source,
                    delay: (1, 10),
                },
                Sub {
                    x: 2,
                    y: 2,
                    w: 2,
                    h: 2,
                    rgba: solid(2, 2, HALF_BLUE),
                    dispose: DisposeOp::Previous,
                    blend: BlendOp::Over,
                    delay: (1, 3),
                },
                Sub {
                    x: 0,
                    y: 0,
                    w: 1,
                    h: 1,
                    rgba: solid(1, 1, GREEN),
                    dispose: DisposeOp::Background,
                    blend: BlendOp::Source,
                    delay: (5, 0),
                },
            ],
        )
    }

    #[test]
    fn apng_compositing_skips_default_image() {
        let (_d, p) = write_temp("a.png", &sample_apng());
        let info = open_source(&p, &Limits::default())
            .expect("open")
            .info()
            .clone();
        assert!(info.animated);
        assert_eq!(info.frame_count, Some(3));
        let a = open_anim(&p, &Limits::default()).expect("decode");
        assert_eq!(a.frames.len(), 3, "the default image is not a frame");
        assert_eq!(a.loops, LoopCount::Plays(2));
        let px = |i: usize, x, y| a.frames[i].image.get_pixel(x, y).0;
        assert!(a.frames[0].image.pixels().all(|p| p.0 == RED));
        // Half blue over red: (127.5·0 + …) → colour mix, opaque.
        let mixed = px(1, 3, 3);
        assert_eq!(mixed[3], 255);
        assert!((mixed[0] as i32 - 127).abs() <= 1 && (mixed[2] as i32 - 128).abs() <= 1);
        assert_eq!(px(1, 0, 0), RED);
        // Frame 3: the blue square was disposed to previous (red again); green put at (0,0).
        assert_eq!(px(2, 3, 3), RED);
        assert_eq!(px(2, 0, 0), GREEN);
        // Delays: exact ratios; den 0 means 1/100.
        assert_eq!(a.frames[0].delay, Delay::from_ratio(1, 10));
        assert_eq!(a.frames[1].delay, Delay::from_ratio(1, 3));
        assert_eq!(a.frames[2].delay, Delay::from_ratio(5, 100));
    }

    #[test]
    fn apng_background_dispose_clears_to_transparent_and_source_replaces_alpha() {
        let bytes = apng(
            3,
            1,
            0,
            None,
            &[
                Sub {
                    x: 0,
                    y: 0,
                    w: 3,
                    h: 1,
                    rgba: solid(3, 1, RED),
                    dispose: DisposeOp::Previous, // first frame: acts as background
                    blend: BlendOp::Source,
                    delay: (1, 10),
                },
                Sub {
                    x: 1,
                    y: 0,
                    w: 1,
                    h: 1,
                    rgba: solid(1, 1, HALF_BLUE),
                    dispose: DisposeOp::None,
                    blend: BlendOp::Source,
                    delay: (0, 10),
                },
            ],
        );
        let (_d, p) = write_temp("b.png", &bytes);
        let a = open_anim(&p, &Limits::default()).expect("decode");
        assert_eq!(a.loops, LoopCount::Infinite);
        let f = &a.frames[1].image;
        assert_eq!(f.get_pixel(0, 0).0, [0, 0, 0, 0]);
        assert_eq!(f.get_pixel(1, 0).0, HALF_BLUE);
        // A zero delay is shown for 100 ms.
        assert_eq!(a.frames[1].delay.millis(), 100);
    }

    #[test]
    fn still_png_of_every_colour_type_becomes_rgba8() {
        // 16-bit RGBA: rounded, not truncated.
        let mut out = Vec::new();
        let mut enc = png::Encoder::new(&mut out, 2, 1);
        enc.set_color(ColorType::Rgba);
        enc.set_depth(BitDepth::Sixteen);
        let mut w = enc.write_header().expect("h");
        let px16: Vec<u8> = [
            0xFFFFu16, 0x8080, 0x0000, 0x7FFF, 0x00FF, 0x0100, 0x1234, 0xFFFF,
        ]
        .iter()
        .flat_map(|v| v.to_be_bytes())
        .collect();
        w.write_image_data(&px16).expect("d");
        w.finish().expect("f");
        let (_d, p) = write_temp("16.png", &out);
        let a = open_anim(&p, &Limits::default()).expect("16-bit");
        assert_eq!(a.frames[0].image.get_pixel(0, 0).0, [255, 128, 0, 127]);
        assert_eq!(a.frames[0].image.get_pixel(1, 0).0, [1, 1, 18, 255]);

        // Palette with tRNS.
        let mut out = Vec::new();
        let mut enc = png::Encoder::new(&mut out, 2, 1);
        enc.set_color(ColorType::Indexed);
        enc.set_depth(BitDepth::Eight);
        enc.set_palette(vec![10, 20, 30, 40, 50, 60]);
        enc.set_trns(vec![0]);
        let mut w = enc.write_header().expect("h");
        w.write_image_data(&[0, 1]).expect("d");
        w.finish().expect("f");
        let (_d, p) = write_temp("pal.png", &out);
        let a = open_anim(&p, &Limits::default()).expect("palette");
        assert_eq!(a.frames[0].image.get_pixel(0, 0).0, [10, 20, 30, 0]);
        assert_eq!(a.frames[0].image.get_pixel(1, 0).0, [40, 50, 60, 255]);

        // 1-bit grey.
        let mut out = Vec::new();
        let mut enc = png::Encoder::new(&mut out, 2, 1);
        enc.set_color(ColorType::Grayscale);
        enc.set_depth(BitDepth::One);
        let mut w = enc.write_header().expect("h");
        w.write_image_data(&[0b0100_0000]).expect("d");
        w.finish().expect("f");
        let (_d, p) = write_temp("g.png", &out);
        let a = open_anim(&p, &Limits::default()).expect("grey");
        assert_eq!(a.frames[0].image.get_pixel(0, 0).0, [0, 0, 0, 255]);
        assert_eq!(a.frames[0].image.get_pixel(1, 0).0, [255, 255, 255, 255]);

        // Still RGBA8 round trip, with the still conventions.
        let img = pattern(7, 5, 2);
        let (_d, p) = write_temp("s.png", &png_bytes(&img));
        let a = open_anim(&p, &Limits::default()).expect("rgba");
        assert_eq!(a.frames[0].image, img);
        assert_eq!(a.frames[0].delay.millis(), 100);
        assert_eq!(a.loops, LoopCount::Infinite);
    }

    /// Builds an interlaced (Adam7) APNG by hand, since the png crate's encoder cannot: zlib with
    /// stored blocks, one pass after another, each row with filter type 0.
    pub(crate) fn interlaced_apng(w: u32, h: u32, frames: &[(u32, u32, &RgbaImage)]) -> Vec<u8> {
        fn chunk(out: &mut Vec<u8>, kind: &[u8; 4], data: &[u8]) {
            out.extend_from_slice(&(data.len() as u32).to_be_bytes());
            let mut body = kind.to_vec();
            body.extend_from_slice(data);
            out.extend_from_slice(&body);
            out.extend_from_slice(&crc32(&body).to_be_bytes());
        }
        fn zlib_stored(data: &[u8]) -> Vec<u8> {
            let mut z = vec![0x78, 0x01];
            let blocks: Vec<&[u8]> = data.chunks(65535).collect();
            for (i, b) in blocks.iter().enumerate() {
                z.push(u8::from(i + 1 == blocks.len()));
                z.extend_from_slice(&(b.len() as u16).to_le_bytes());
                z.extend_from_slice(&(!(b.len() as u16)).to_le_bytes());
                z.extend_from_slice(b);
            }
            let (mut a, mut b) = (1u32, 0u32);
            for &x in data {
                a = (a + x as u32) % 65521;
                b = (b + a) % 65521;
            }
            z.extend_from_slice(&((b << 16) | a).to_be_bytes());
            z
        }
        fn adam7(img: &RgbaImage) -> Vec<u8> {
            let (w, h) = img.dimensions();
            let mut out = Vec::new();
            for (x0, y0, dx, dy) in [
                (0, 0, 8, 8),
                (4, 0, 8, 8),
                (0, 4, 4, 8),
                (2, 0, 4, 4),
                (0, 2, 2, 4),
                (1, 0, 2, 2),
                (0, 1, 1, 2),
            ] {
                if x0 >= w || y0 >= h {
                    continue;
                }
                for y in (y0..h).step_by(dy) {
                    out.push(0);
                    for x in (x0..w).step_by(dx) {
                        out.extend_from_slice(&img.get_pixel(x, y).0);
                    }
                }
            }
            out
        }
        let mut out = b"\x89PNG\r\n\x1a\n".to_vec();
        let mut ihdr = w.to_be_bytes().to_vec();
        ihdr.extend_from_slice(&h.to_be_bytes());
        ihdr.extend_from_slice(&[8, 6, 0, 0, 1]); // RGBA8, Adam7
        chunk(&mut out, b"IHDR", &ihdr);
        let mut actl = (frames.len() as u32).to_be_bytes().to_vec();
        actl.extend_from_slice(&0u32.to_be_bytes());
        chunk(&mut out, b"acTL", &actl);
        let mut seq = 0u32;
        for (i, (x, y, img)) in frames.iter().enumerate() {
            let mut fctl = seq.to_be_bytes().to_vec();
            seq += 1;
            for v in [img.width(), img.height(), *x, *y] {
                fctl.extend_from_slice(&v.to_be_bytes());
            }
            fctl.extend_from_slice(&[0, 1, 0, 10, 0, 0]); // 1/10 s, dispose none, blend source
            chunk(&mut out, b"fcTL", &fctl);
            let z = zlib_stored(&adam7(img));
            if i == 0 {
                chunk(&mut out, b"IDAT", &z);
            } else {
                let mut fdat = seq.to_be_bytes().to_vec();
                seq += 1;
                fdat.extend_from_slice(&z);
                chunk(&mut out, b"fdAT", &fdat);
            }
        }
        chunk(&mut out, b"IEND", &[]);
        out
    }

    #[test]
    fn interlaced_apng_subframes_are_placed_correctly() {
        let base = pattern(11, 9, 1);
        let sub = pattern(5, 6, 7);
        let bytes = interlaced_apng(11, 9, &[(0, 0, &base), (3, 2, &sub)]);
        let (_d, p) = write_temp("i.png", &bytes);
        let a = open_anim(&p, &Limits::default()).expect("interlaced apng");
        assert_eq!(a.frames[0].image, base);
        let mut want = base.clone();
        image::imageops::replace(&mut want, &sub, 3, 2);
        assert_eq!(a.frames[1].image, want);
    }

    #[test]
    fn limits_are_checked_from_the_header() {
        // IHDR claiming 100000×100000 (valid CRC), nothing else.
        let mut b = b"\x89PNG\r\n\x1a\n".to_vec();
        let mut ihdr = b"IHDR".to_vec();
        ihdr.extend_from_slice(&100_000u32.to_be_bytes());
        ihdr.extend_from_slice(&100_000u32.to_be_bytes());
        ihdr.extend_from_slice(&[8, 6, 0, 0, 0]);
        b.extend_from_slice(&13u32.to_be_bytes());
        b.extend_from_slice(&ihdr);
        b.extend_from_slice(&crc32(&ihdr).to_be_bytes());
        let (_d, p) = write_temp("huge.png", &b);
        let e = open_anim(&p, &Limits::default()).expect_err("huge");
        assert_eq!(e.kind(), "limits", "{e}");

        // acTL claiming more frames than allowed.
        let (_d, p) = write_temp("many.png", &sample_apng());
        let small = Limits {
            max_frames: 2,
            ..Limits::default()
        };
        let e = open_anim(&p, &small).expect_err("frames");
        assert_eq!(e.kind(), "limits", "{e}");
    }

    #[test]
    fn truncated_png_and_apng_are_errors() {
        for bytes in [sample_apng(), png_bytes(&pattern(8, 8, 1))] {
            for cut in [9, 30, bytes.len() / 2, bytes.len() - 13] {
                let (_d, p) = write_temp("t.png", &bytes[..cut]);
                let e = open_anim(&p, &Limits::default()).expect_err("truncated");
                assert_eq!(e.kind(), "decode", "cut {cut}: {e}");
                assert!(e.to_string().contains("t.png"));
            }
        }
    }
}

//! APNG (and still PNG) writer on the `png` crate.
//!
//! - One frame: a plain PNG (no `acTL`), so every viewer shows it.
//! - Several frames: `acTL` with `num_plays` (0 = infinite) and one `fcTL` per frame with the
//!   delay written as the exact ratio from [`Delay::ratio`]; only a ratio whose terms exceed
//!   `u16` is approximated (see [`delay_u16`]).
//! - Frames after the first are cropped to the rectangle that changed since the previous frame
//!   (`fcTL` offsets, dispose `None`, blend `Source`): the canvas then holds exactly the previous
//!   frame, and `Source` replaces the rectangle, so the result is exact while static areas cost
//!   nothing. The first frame is always the full canvas (it is also the default image).
//! - Lossless mode writes RGBA (RGB when nothing is transparent); palette mode quantises all
//!   frames to one global palette with alpha (`PLTE` + `tRNS`, entries with alpha sorted first so
//!   `tRNS` is short) and packs 1/2/4-bit indices for small palettes.
//! - Compression: adaptive per-row filters and zlib level 9 (`High`) by default, level 6
//!   (`Balanced`) for a plain export (see [`super::Effort`]).

use png::{BitDepth, BlendOp, ColorType, Compression, DisposeOp, Filter};

use super::quantize::Palette;
use crate::error::{Error, Result};
use crate::media::{Animation, Delay};

/// Options of the APNG writer.
#[derive(Debug, Clone, Copy)]
pub struct ApngOptions {
    /// `None` = lossless; `Some(n)` = one global palette of `n` (2..=256) colours with alpha.
    pub palette: Option<u16>,
    /// Floyd–Steinberg dithering in palette mode (smoother gradients, larger files).
    pub dither: bool,
    /// Crop frames to the changed rectangle (smaller files, same pixels).
    pub sub_rect: bool,
    /// zlib effort; `High` by default. The folder exporter and plain exports use `Balanced` for
    /// speed.
    pub compression: Compression,
}

impl Default for ApngOptions {
    fn default() -> Self {
        ApngOptions {
            palette: None,
            dither: false,
            sub_rect: true,
            compression: Compression::High,
        }
    }
}

/// Pixel rows ready for the encoder: one buffer per frame in the chosen colour type.
struct Planes {
    color: ColorType,
    depth: BitDepth,
    /// Bytes per pixel before packing (1 for indices, 3 RGB, 4 RGBA).
    bpp: usize,
    frames: Vec<Vec<u8>>,
    plte: Option<Vec<u8>>,
    trns: Option<Vec<u8>>,
}

/// Encodes `anim` to PNG/APNG bytes. Each frame is its own zlib stream, so frames are
/// compressed on all cores at once (zlib level 9 was the longest single-threaded stage of a
/// 512², 48-frame matte) and the chunks are then laid out in order: the bytes are those of the
/// png crate's own APNG writer (a test checks it).
pub fn encode(anim: &Animation, opts: &ApngOptions) -> Result<Vec<u8>> {
    super::validate(anim)?;
    let planes = match opts.palette {
        None => lossless_planes(anim),
        Some(n) => palette_planes(anim, n, opts.dither)?,
    };
    let (w, h) = (anim.width, anim.height);
    let n = anim.frames.len();
    let rects: Vec<Rect> = (0..n)
        .map(|k| {
            if n > 1 && k > 0 && opts.sub_rect {
                changed_rect(
                    &planes.frames[k - 1],
                    &planes.frames[k],
                    w as usize,
                    h as usize,
                    planes.bpp,
                )
            } else {
                Rect::full(w, h)
            }
        })
        .collect();
    let stride = w as usize * planes.bpp;
    // Frame k as a plain PNG of its rectangle.
    let still = |k: usize| -> Result<Vec<u8>> {
        let r = &rects[k];
        let data = pack(
            &crop(&planes.frames[k], stride, planes.bpp, r),
            r.w as usize,
            r.h as usize,
            planes.depth,
        );
        still_png(&data, r.w, r.h, &planes, opts.compression)
    };
    if n == 1 {
        return still(0);
    }
    let stills = crate::par::par_map(n, usize::MAX, still)
        .into_iter()
        .collect::<Result<Vec<_>>>()?;

    let mut out = Vec::with_capacity(stills.iter().map(Vec::len).sum::<usize>() + 64 * n);
    out.extend_from_slice(PNG_SIGNATURE);
    // The first frame's header chunks (IHDR, PLTE, tRNS), with acTL after IHDR as the png
    // crate writes it.
    for (kind, data) in chunks(&stills[0]).take_while(|(k, _)| k != b"IDAT") {
        write_chunk(&mut out, kind, data);
        if kind == b"IHDR" {
            let mut actl = Vec::with_capacity(8);
            actl.extend_from_slice(&(n as u32).to_be_bytes());
            actl.extend_from_slice(&anim.loops.to_zero_infinite().to_be_bytes());
            write_chunk(&mut out, b"acTL", &actl);
        }
    }
    let mut seq = 0u32;
    for (k, frame) in anim.frames.iter().enumerate() {
        let r = &rects[k];
        let (num, den) = delay_u16(frame.delay);
        let mut fctl = Vec::with_capacity(26);
        for v in [seq, r.w, r.h, r.x, r.y] {
            fctl.extend_from_slice(&v.to_be_bytes());
        }
        fctl.extend_from_slice(&num.to_be_bytes());
        fctl.extend_from_slice(&den.to_be_bytes());
        fctl.extend_from_slice(&[DisposeOp::None as u8, BlendOp::Source as u8]);
        write_chunk(&mut out, b"fcTL", &fctl);
        seq += 1;
        for (kind, data) in chunks(&stills[k]).filter(|(k, _)| k == b"IDAT") {
            if k == 0 {
                write_chunk(&mut out, kind, data);
            } else {
                let mut fdat = Vec::with_capacity(4 + data.len());
                fdat.extend_from_slice(&seq.to_be_bytes());
                fdat.extend_from_slice(data);
                write_chunk(&mut out, b"fdAT", &fdat);
                seq += 1;
            }
        }
    }
    write_chunk(&mut out, b"IEND", &[]);
    Ok(out)
}

const PNG_SIGNATURE: &[u8] = b"\x89PNG\r\n\x1a\n";

/// `rows` (already packed to `planes.depth`) as a plain PNG in `planes`' colour type.
fn still_png(
    rows: &[u8],
    w: u32,
    h: u32,
    planes: &Planes,
    compression: Compression,
) -> Result<Vec<u8>> {
    let mut out = Vec::new();
    let mut enc = png::Encoder::new(&mut out, w, h);
    enc.set_color(planes.color);
    enc.set_depth(planes.depth);
    enc.set_compression(compression);
    enc.set_filter(Filter::Adaptive);
    if let Some(p) = &planes.plte {
        enc.set_palette(p.clone());
    }
    if let Some(t) = &planes.trns {
        enc.set_trns(t.clone());
    }
    let mut writer = enc.write_header().map_err(png_err)?;
    writer.write_image_data(rows).map_err(png_err)?;
    writer.finish().map_err(png_err)?;
    Ok(out)
}

/// The chunks of a PNG written by the png crate: (type, data).
fn chunks(png: &[u8]) -> impl Iterator<Item = (&[u8], &[u8])> {
    let mut at = PNG_SIGNATURE.len();
    std::iter::from_fn(move || {
        let len = u32::from_be_bytes(png.get(at..at + 4)?.try_into().ok()?) as usize;
        let kind = png.get(at + 4..at + 8)?;
        let data = png.get(at + 8..at + 8 + len)?;
        at += 12 + len;
        Some((kind, data))
    })
}

fn write_chunk(out: &mut Vec<u8>, kind: &[u8], data: &[u8]) {
    out.extend_from_slice(&(data.len() as u32).to_be_bytes());
    out.extend_from_slice(kind);
    out.extend_from_slice(data);
    let mut crc = flate2::Crc::new();
    crc.update(kind);
    crc.update(data);
    out.extend_from_slice(&crc.sum().to_be_bytes());
}

/// One RGBA image as a plain PNG (the folder exporter: exact pixels, hidden colour included).
pub fn encode_image(img: &image::RgbaImage, compression: Compression) -> Result<Vec<u8>> {
    let mut out = Vec::new();
    let mut enc = png::Encoder::new(&mut out, img.width(), img.height());
    enc.set_color(ColorType::Rgba);
    enc.set_depth(BitDepth::Eight);
    enc.set_compression(compression);
    enc.set_filter(Filter::Adaptive);
    let mut writer = enc.write_header().map_err(png_err)?;
    writer.write_image_data(img.as_raw()).map_err(png_err)?;
    writer.finish().map_err(png_err)?;
    Ok(out)
}

fn png_err(e: png::EncodingError) -> Error {
    Error::encode("PNG", e)
}

/// Straight RGBA (or RGB when every pixel is opaque: same pixels, a quarter fewer bytes).
fn lossless_planes(anim: &Animation) -> Planes {
    let opaque = !anim.has_alpha();
    let frames = anim
        .frames
        .iter()
        .map(|f| {
            if opaque {
                f.image
                    .as_raw()
                    .chunks_exact(4)
                    .flat_map(|p| [p[0], p[1], p[2]])
                    .collect()
            } else {
                f.image.as_raw().clone()
            }
        })
        .collect();
    Planes {
        color: if opaque {
            ColorType::Rgb
        } else {
            ColorType::Rgba
        },
        depth: BitDepth::Eight,
        bpp: if opaque { 3 } else { 4 },
        frames,
        plte: None,
        trns: None,
    }
}

fn palette_planes(anim: &Animation, n: u16, dither: bool) -> Result<Planes> {
    if !(2..=256).contains(&n) {
        return Err(Error::Invalid(format!(
            "APNG palette size must be 2..=256, got {n}"
        )));
    }
    let images = anim.frames.iter().map(|f| &f.image);
    let pal = Palette::build(images.clone(), n as usize)?;
    let indices = pal.remap_frames(images, dither);
    // Entries with alpha first, so tRNS can stop at the last of them.
    let mut order: Vec<usize> = (0..pal.len()).collect();
    order.sort_by_key(|&i| (pal.colors()[i][3] == 255, i));
    let mut remap = [0u8; 256];
    for (new, &old) in order.iter().enumerate() {
        remap[old] = new as u8;
    }
    let colors: Vec<[u8; 4]> = order.iter().map(|&i| pal.colors()[i]).collect();
    let plte: Vec<u8> = colors.iter().flat_map(|c| [c[0], c[1], c[2]]).collect();
    let alphas: Vec<u8> = colors
        .iter()
        .take_while(|c| c[3] != 255)
        .map(|c| c[3])
        .collect();
    let frames = indices
        .into_iter()
        .map(|v| v.into_iter().map(|i| remap[i as usize]).collect())
        .collect();
    let depth = match colors.len() {
        0..=2 => BitDepth::One,
        3..=4 => BitDepth::Two,
        5..=16 => BitDepth::Four,
        _ => BitDepth::Eight,
    };
    Ok(Planes {
        color: ColorType::Indexed,
        depth,
        bpp: 1,
        frames,
        plte: Some(plte),
        trns: (!alphas.is_empty()).then_some(alphas),
    })
}

pub(crate) use crate::media::decode::compose::Rect;

/// Bounding box of the pixels that differ between two frames (`bpp` bytes per pixel); a 1×1
/// rectangle when nothing changed (APNG and GIF frames cannot be empty).
pub(crate) fn changed_rect(prev: &[u8], cur: &[u8], w: usize, h: usize, bpp: usize) -> Rect {
    let row = w * bpp;
    let differs = |y: usize| prev[y * row..(y + 1) * row] != cur[y * row..(y + 1) * row];
    let Some(y0) = (0..h).find(|&y| differs(y)) else {
        return Rect {
            x: 0,
            y: 0,
            w: 1,
            h: 1,
        };
    };
    let y1 = (0..h).rev().find(|&y| differs(y)).unwrap_or(y0);
    let (mut x0, mut x1) = (w, 0);
    for y in y0..=y1 {
        let (p, c) = (&prev[y * row..(y + 1) * row], &cur[y * row..(y + 1) * row]);
        for x in 0..w {
            if p[x * bpp..(x + 1) * bpp] != c[x * bpp..(x + 1) * bpp] {
                x0 = x0.min(x);
                x1 = x1.max(x);
            }
        }
    }
    Rect {
        x: x0 as u32,
        y: y0 as u32,
        w: (x1 - x0 + 1) as u32,
        h: (y1 - y0 + 1) as u32,
    }
}

fn crop(data: &[u8], stride: usize, bpp: usize, r: &Rect) -> Vec<u8> {
    let mut out = Vec::with_capacity(r.w as usize * r.h as usize * bpp);
    for y in r.y as usize..(r.y + r.h) as usize {
        let s = y * stride + r.x as usize * bpp;
        out.extend_from_slice(&data[s..s + r.w as usize * bpp]);
    }
    out
}

/// Packs 8-bit indices into 1/2/4-bit rows (each row starts on a byte boundary).
fn pack(data: &[u8], w: usize, h: usize, depth: BitDepth) -> Vec<u8> {
    let bits = match depth {
        BitDepth::One => 1,
        BitDepth::Two => 2,
        BitDepth::Four => 4,
        _ => return data.to_vec(),
    };
    let per_byte = 8 / bits;
    let row_bytes = w.div_ceil(per_byte);
    let mut out = vec![0u8; row_bytes * h];
    for y in 0..h {
        for x in 0..w {
            let v = data[y * w + x];
            let shift = 8 - bits * (x % per_byte + 1);
            out[y * row_bytes + x / per_byte] |= v << shift;
        }
    }
    out
}

/// The `fcTL` delay for `d`: its exact reduced ratio when both terms fit `u16`. Otherwise the
/// closest ratio with the largest denominator that keeps the numerator in range (error below
/// 1/65535 s for delays under a second); delays over 65535 s are clamped.
pub fn delay_u16(d: Delay) -> (u16, u16) {
    let (num, den) = d.ratio();
    if let (Ok(n), Ok(m)) = (u16::try_from(num), u16::try_from(den)) {
        return (n, m);
    }
    let secs = d.secs();
    if secs >= u16::MAX as f64 {
        return (u16::MAX, 1);
    }
    let den = ((u16::MAX as f64) / secs.max(1.0 / u16::MAX as f64))
        .floor()
        .min(u16::MAX as f64);
    let num = (secs * den).round().max(if num > 0 { 1.0 } else { 0.0 });
    let d = Delay::from_ratio(num as u32, den as u32);
    let (n, m) = d.ratio();
    (n as u16, m as u16)
}

#[cfg(test)]
mod tests {
    use super::super::test_clip::{assert_rgba_eq_visible, clip, decode_apng};
    use super::*;
    use crate::media::LoopCount;

    #[test]
    fn delay_ratio_exact_or_close() {
        assert_eq!(delay_u16(Delay::from_ratio(1, 30)), (1, 30));
        assert_eq!(delay_u16(Delay::from_millis(40)), (1, 25));
        // 100001/1000000 s does not fit: approximated within 1/65535 s.
        let (n, m) = delay_u16(Delay::from_ratio(100_001, 1_000_000));
        assert!((n as f64 / m as f64 - 0.100001).abs() < 1.0 / 65535.0);
        assert_eq!(delay_u16(Delay::from_ratio(100_000, 1)), (65535, 1));
    }

    #[test]
    fn lossless_round_trip_exact_with_ratios_and_loops() {
        let mut anim = clip(6);
        anim.frames[2].delay = Delay::from_ratio(1, 30);
        anim.frames[3].delay = Delay::from_ratio(7, 300);
        anim.loops = LoopCount::Plays(3);
        let mut cleaned = anim.clone();
        cleaned.clean_transparent([0, 0, 0]);
        let bytes = encode(&cleaned, &ApngOptions::default()).expect("encode");
        let (frames, loops) = decode_apng(&bytes);
        assert_eq!(loops, 3);
        assert_eq!(frames.len(), 6);
        for (f, (img, delay)) in anim.frames.iter().zip(&frames) {
            assert_rgba_eq_visible(&f.image, img);
            assert_eq!(f.delay.ratio(), *delay);
        }
        // Sub-rectangles must be smaller than full frames and give the same pixels.
        let full = encode(
            &cleaned,
            &ApngOptions {
                sub_rect: false,
                ..ApngOptions::default()
            },
        )
        .expect("encode");
        assert!(
            bytes.len() < full.len(),
            "{} >= {}",
            bytes.len(),
            full.len()
        );
    }

    /// The png crate's own APNG writer, frame after frame on one thread: what [`encode`]
    /// must equal byte for byte.
    fn reference_encode(anim: &Animation, opts: &ApngOptions) -> Vec<u8> {
        let planes = match opts.palette {
            None => lossless_planes(anim),
            Some(n) => palette_planes(anim, n, opts.dither).expect("palette"),
        };
        let (w, h) = (anim.width, anim.height);
        let mut out = Vec::new();
        let mut enc = png::Encoder::new(&mut out, w, h);
        enc.set_color(planes.color);
        enc.set_depth(planes.depth);
        enc.set_compression(opts.compression);
        enc.set_filter(Filter::Adaptive);
        if let Some(p) = &planes.plte {
            enc.set_palette(p.clone());
        }
        if let Some(t) = &planes.trns {
            enc.set_trns(t.clone());
        }
        let n = anim.frames.len();
        enc.set_animated(n as u32, anim.loops.to_zero_infinite())
            .expect("animated");
        let mut writer = enc.write_header().expect("header");
        let stride = w as usize * planes.bpp;
        for (k, frame) in anim.frames.iter().enumerate() {
            let data = &planes.frames[k];
            let rect = if k > 0 && opts.sub_rect {
                let prev = &planes.frames[k - 1];
                changed_rect(prev, data, w as usize, h as usize, planes.bpp)
            } else {
                Rect::full(w, h)
            };
            let (num, den) = delay_u16(frame.delay);
            writer.reset_frame_position().expect("reset");
            writer.set_frame_dimension(rect.w, rect.h).expect("dim");
            writer.set_frame_position(rect.x, rect.y).expect("pos");
            writer.set_frame_delay(num, den).expect("delay");
            writer.set_dispose_op(DisposeOp::None).expect("dispose");
            writer.set_blend_op(BlendOp::Source).expect("blend");
            let crop = crop(data, stride, planes.bpp, &rect);
            let packed = pack(&crop, rect.w as usize, rect.h as usize, planes.depth);
            writer.write_image_data(&packed).expect("frame");
        }
        writer.finish().expect("finish");
        out
    }

    #[test]
    fn parallel_frames_give_the_png_crates_bytes() {
        let mut anim = clip(7);
        anim.loops = LoopCount::Plays(2);
        anim.frames[3].delay = Delay::from_ratio(7, 300);
        anim.clean_transparent([0, 0, 0]);
        for palette in [None, Some(256), Some(12), Some(2)] {
            for sub_rect in [true, false] {
                let opts = ApngOptions {
                    palette,
                    sub_rect,
                    ..ApngOptions::default()
                };
                let got = encode(&anim, &opts).expect("encode");
                assert!(
                    got == reference_encode(&anim, &opts),
                    "palette {palette:?} sub_rect {sub_rect}"
                );
            }
        }
    }

    #[test]
    fn one_frame_is_a_plain_png() {
        let anim = Animation::still(clip(1).frames[0].image.clone());
        let bytes = encode(&anim, &ApngOptions::default()).expect("encode");
        assert!(!bytes.windows(4).any(|w| w == b"acTL"));
        let img = image::load_from_memory(&bytes).expect("decode").to_rgba8();
        assert_rgba_eq_visible(&anim.frames[0].image, &img);
    }

    #[test]
    fn palette_mode_small_error_and_exact_mask() {
        let anim = clip(6);
        for dither in [false, true] {
            let opts = ApngOptions {
                palette: Some(256),
                dither,
                ..ApngOptions::default()
            };
            let bytes = encode(&anim, &opts).expect("encode");
            let (frames, loops) = decode_apng(&bytes);
            assert_eq!(loops, 0);
            assert_eq!(frames.len(), 6);
            let (mut sum, mut n) = (0f64, 0f64);
            for (f, (img, _)) in anim.frames.iter().zip(&frames) {
                for (a, b) in f.image.pixels().zip(img.pixels()) {
                    // Transparent stays transparent; a barely visible pixel may become so.
                    assert!(a[3] != 0 || b[3] == 0, "transparent pixel became visible");
                    assert!(
                        a[3] < 8 || b[3] != 0,
                        "visible pixel {a:?} became transparent"
                    );
                    for c in 0..4 {
                        sum += (a[c] as f64 - b[c] as f64).abs()
                            * if c < 3 { a[3] as f64 / 255.0 } else { 1.0 };
                    }
                    n += 4.0;
                }
            }
            // Measured: mean alpha-weighted |Δ| 0.92 (plain) / 1.14 (dithered) levels.
            let mean = sum / n;
            assert!(mean < 2.0, "mean error {mean} (dither {dither})");
        }
        // Small palettes pack below 8 bits and still decode.
        let bytes = encode(
            &anim,
            &ApngOptions {
                palette: Some(4),
                ..ApngOptions::default()
            },
        )
        .expect("encode");
        assert_eq!(decode_apng(&bytes).0.len(), 6);
    }
}

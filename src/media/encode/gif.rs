//! GIF writer on the `gif` crate.
//!
//! - Alpha is 1-bit: a pixel with `alpha >= alpha_threshold` is opaque, after its colour is
//!   blended over `matte` (so an anti-aliased edge looks right on that chat background); every
//!   other pixel is transparent.
//! - One global palette for the whole clip, built by [`super::quantize`] from every frame's
//!   opaque pixels; one of `colors` entries is reserved for transparency when any pixel is
//!   transparent. A global palette keeps colours stable from frame to frame (no palette flicker)
//!   and is written once; sticker clips rarely change palette mid-clip enough to gain from local
//!   tables.
//! - Delays are centiseconds, computed from the exact running time (each timestamp rounded, so
//!   30 fps becomes 3, 3, 4, 3, 3, 4 … cs with no drift) and at least 2 cs per frame: browsers
//!   play delays of 0 or 1 cs at 10 cs, which would slow the clip down far more.
//! - Looping: `Infinite` → NETSCAPE extension with 0 (forever); `Plays(n)` → NETSCAPE `n - 1`
//!   extra repeats (capped at 65535); `Plays(1)` → no extension (play once).
//! - Frames after the first hold only the rectangle that changed; inside it, unchanged pixels
//!   are written as the transparent index (they keep what is on the canvas). Where a pixel must
//!   turn transparent in the next frame, this frame uses disposal `Background` (cleared to
//!   transparent after display) and its rectangle is widened to cover those pixels; otherwise
//!   disposal `Keep`. The last frame is treated as followed by the first, so a looping GIF also
//!   stays correct at the wrap. The composited result equals the thresholded frames exactly.

use std::borrow::Cow;

use gif::{DisposalMethod, Repeat};
use image::RgbaImage;

use super::GifOptions;
use super::apng::Rect;
use super::quantize::Palette;
use crate::error::{Error, Result};
use crate::media::{Animation, LoopCount};

/// Smallest delay written, in centiseconds (see the module docs).
pub const MIN_DELAY_CS: u16 = 2;

/// Encodes `anim` as GIF bytes.
pub fn encode(anim: &Animation, opts: &GifOptions) -> Result<Vec<u8>> {
    super::validate(anim)?;
    if !(2..=256).contains(&opts.colors) {
        return Err(Error::Invalid(format!(
            "GIF palette size must be 2..=256, got {}",
            opts.colors
        )));
    }
    let (w, h) = (
        u16::try_from(anim.width).map_err(|_| too_big(anim))?,
        u16::try_from(anim.height).map_err(|_| too_big(anim))?,
    );
    let frames: Vec<RgbaImage> = anim
        .frames
        .iter()
        .map(|f| threshold(&f.image, opts.matte, opts.alpha_threshold))
        .collect();
    let pal = Palette::build(&frames, opts.colors as usize)?;
    let indices = pal.remap_frames(&frames, opts.dither);
    let trans = pal.transparent_index();
    let rgb: Vec<u8> = pal
        .colors()
        .iter()
        .flat_map(|c| [c[0], c[1], c[2]])
        .collect();

    let mut out = Vec::new();
    {
        let mut enc = gif::Encoder::new(&mut out, w, h, &rgb).map_err(gif_err)?;
        match anim.loops {
            LoopCount::Infinite => enc.set_repeat(Repeat::Infinite).map_err(gif_err)?,
            LoopCount::Plays(n) if n >= 2 => enc
                .set_repeat(Repeat::Finite((n - 1).min(u16::MAX as u32) as u16))
                .map_err(gif_err)?,
            LoopCount::Plays(_) => {}
        }
        let delays = centis(anim);
        for (k, plan) in plan_frames(&indices, trans, w as usize, h as usize)
            .into_iter()
            .enumerate()
        {
            let frame = gif::Frame {
                delay: delays[k],
                dispose: plan.dispose,
                transparent: trans,
                left: plan.rect.x as u16,
                top: plan.rect.y as u16,
                width: plan.rect.w as u16,
                height: plan.rect.h as u16,
                buffer: Cow::Owned(plan.pixels),
                ..gif::Frame::default()
            };
            enc.write_frame(&frame).map_err(gif_err)?;
        }
    }
    Ok(out)
}

fn too_big(anim: &Animation) -> Error {
    Error::Invalid(format!(
        "GIF frames are at most 65535x65535, the canvas is {}x{}",
        anim.width, anim.height
    ))
}

fn gif_err(e: gif::EncodingError) -> Error {
    Error::encode("GIF", e)
}

/// Frame delays in centiseconds from rounded running timestamps, each at least
/// [`MIN_DELAY_CS`].
pub fn centis(anim: &Animation) -> Vec<u16> {
    let mut t = 0f64;
    let mut written = 0u64;
    anim.frames
        .iter()
        .map(|f| {
            t += f.delay.secs();
            let end = (t * 100.0).round() as u64;
            let d = end
                .saturating_sub(written)
                .clamp(MIN_DELAY_CS as u64, u16::MAX as u64);
            written += d;
            d as u16
        })
        .collect()
}

/// The 1-bit-alpha version of a frame: opaque pixels blended over `matte`, the rest `[0,0,0,0]`.
pub fn threshold(img: &RgbaImage, matte: [u8; 3], alpha_threshold: u8) -> RgbaImage {
    let mut out = img.clone();
    for p in out.pixels_mut() {
        let a = p[3] as u32;
        if p[3] >= alpha_threshold.max(1) {
            for c in 0..3 {
                p[c] = ((p[c] as u32 * a + matte[c] as u32 * (255 - a) + 127) / 255) as u8;
            }
            p[3] = 255;
        } else {
            p.0 = [0, 0, 0, 0];
        }
    }
    out
}

/// One frame as written: rectangle, indices inside it, disposal.
struct Plan {
    rect: Rect,
    pixels: Vec<u8>,
    dispose: DisposalMethod,
}

/// Works out rectangles and disposals (see the module docs); simulates the canvas so every
/// decision is checked against what a decoder will show.
fn plan_frames(frames: &[Vec<u8>], trans: Option<u8>, w: usize, h: usize) -> Vec<Plan> {
    let n = frames.len();
    let opaque = |v: u8| Some(v) != trans;
    // `None` = transparent canvas pixel.
    let mut canvas: Vec<Option<u8>> = vec![None; w * h];
    let mut plans = Vec::with_capacity(n);
    for k in 0..n {
        let cur = &frames[k];
        let next = &frames[(k + 1) % n];
        // Pixels that the next frame needs cleared: only disposal can make them transparent.
        let must_clear: Vec<bool> = if n > 1 && trans.is_some() {
            cur.iter()
                .zip(next)
                .map(|(&c, &x)| opaque(c) && !opaque(x))
                .collect()
        } else {
            vec![false; w * h]
        };
        let clear = must_clear.iter().any(|&b| b);
        let rect = if k == 0 {
            Rect::full(w as u32, h as u32)
        } else {
            bbox(w, h, |i| {
                must_clear[i] || canvas[i] != opaque(cur[i]).then_some(cur[i])
            })
        };
        let mut pixels = Vec::with_capacity(rect.w as usize * rect.h as usize);
        for y in rect.y as usize..(rect.y + rect.h) as usize {
            for x in rect.x as usize..(rect.x + rect.w) as usize {
                let i = y * w + x;
                let want = opaque(cur[i]).then_some(cur[i]);
                match (trans, want) {
                    // Already on the canvas: leave it (transparent index compresses best).
                    (Some(t), _) if canvas[i] == want => pixels.push(t),
                    (_, Some(v)) => {
                        pixels.push(v);
                        canvas[i] = Some(v);
                    }
                    // Want transparent, canvas opaque: cannot happen (the previous frame
                    // cleared it); write transparent, which keeps the canvas.
                    (Some(t), None) => pixels.push(t),
                    (None, None) => pixels.push(cur[i]),
                }
            }
        }
        let dispose = if clear {
            for y in rect.y as usize..(rect.y + rect.h) as usize {
                for x in rect.x as usize..(rect.x + rect.w) as usize {
                    canvas[y * w + x] = None;
                }
            }
            DisposalMethod::Background
        } else {
            DisposalMethod::Keep
        };
        plans.push(Plan {
            rect,
            pixels,
            dispose,
        });
    }
    plans
}

/// Bounding box of pixels where `hit(i)`; 1×1 at the origin when there are none.
fn bbox(w: usize, h: usize, hit: impl Fn(usize) -> bool) -> Rect {
    let (mut x0, mut y0, mut x1, mut y1) = (w, h, 0, 0);
    for y in 0..h {
        for x in 0..w {
            if hit(y * w + x) {
                x0 = x0.min(x);
                x1 = x1.max(x);
                y0 = y0.min(y);
                y1 = y1.max(y);
            }
        }
    }
    if x0 > x1 {
        return Rect {
            x: 0,
            y: 0,
            w: 1,
            h: 1,
        };
    }
    Rect {
        x: x0 as u32,
        y: y0 as u32,
        w: (x1 - x0 + 1) as u32,
        h: (y1 - y0 + 1) as u32,
    }
}

#[cfg(test)]
mod tests {
    use super::super::test_clip::{clip, decode_gif};
    use super::*;
    use crate::media::Delay;

    #[test]
    fn centis_follow_exact_time_with_minimum() {
        let mut anim = clip(6);
        for f in &mut anim.frames {
            f.delay = Delay::from_ratio(1, 30);
        }
        assert_eq!(centis(&anim), vec![3, 4, 3, 3, 4, 3]);
        anim.frames[0].delay = Delay::from_millis(5);
        assert_eq!(centis(&anim)[0], MIN_DELAY_CS);
    }

    #[test]
    fn round_trip_keeps_mask_delays_and_loops() {
        for (dither, loops, netscape) in [
            (true, LoopCount::Infinite, Some(0u16)),
            (false, LoopCount::Plays(3), Some(2)),
            (true, LoopCount::Plays(1), None),
        ] {
            let opts = GifOptions {
                dither,
                ..GifOptions::default()
            };
            let mut anim = clip(6);
            anim.loops = loops;
            anim.frames[1].delay = Delay::from_millis(70);
            let bytes = encode(&anim, &opts).expect("encode");
            let (frames, repeat) = decode_gif(&bytes);
            assert_eq!(repeat, netscape, "loops {loops:?}");
            assert_eq!(frames.len(), 6);
            for (k, (f, (img, cs))) in anim.frames.iter().zip(&frames).enumerate() {
                assert_eq!(*cs as u32 * 10, f.delay.millis(), "frame {k} delay");
                let want = threshold(&f.image, opts.matte, opts.alpha_threshold);
                for (a, b) in want.pixels().zip(img.pixels()) {
                    assert_eq!(a[3] == 255, b[3] == 255, "frame {k}: mask differs");
                    assert!(b[3] == 0 || b[3] == 255);
                }
                // Colour of opaque pixels, 256 colours for a two-axis gradient: measured mean
                // |Δ| per channel 3.5–3.9 (dithered) / 2.9–3.1 (plain).
                let (mut s, mut n) = (0f64, 0f64);
                for (a, b) in want.pixels().zip(img.pixels()).filter(|(a, _)| a[3] == 255) {
                    for c in 0..3 {
                        s += (a[c] as f64 - b[c] as f64).abs();
                        n += 1.0;
                    }
                }
                let limit = if dither { 5.0 } else { 4.0 };
                assert!(s / n.max(1.0) < limit, "frame {k}: colour error {}", s / n);
            }
        }
    }

    #[test]
    fn sub_rectangles_stay_correct_when_pixels_turn_transparent() {
        // A square that jumps around (opaque → transparent transitions everywhere), few
        // colours, no dithering: the decoded frames must equal the source exactly.
        let frames: Vec<crate::media::Frame> = (0..5u32)
            .map(|k| {
                let img = RgbaImage::from_fn(32, 32, |x, y| {
                    let (cx, cy) = ((k * 7) % 24, (k * 11) % 24);
                    if x >= cx && x < cx + 8 && y >= cy && y < cy + 8 {
                        image::Rgba([200, (k * 40) as u8, 10, 255])
                    } else if x < 4 {
                        image::Rgba([0, 0, 255, 255])
                    } else {
                        image::Rgba([0, 0, 0, 0])
                    }
                });
                crate::media::Frame::new(img, Delay::from_millis(50))
            })
            .collect();
        let anim = Animation::new(32, 32, frames, LoopCount::Infinite).expect("clip");
        let opts = GifOptions {
            dither: false,
            ..GifOptions::default()
        };
        let bytes = encode(&anim, &opts).expect("encode");
        let (decoded, _) = decode_gif(&bytes);
        for (f, (img, _)) in anim.frames.iter().zip(&decoded) {
            assert_eq!(&f.image, img);
        }
    }

    /// Replays the written frames twice on one canvas that is *not* reset at the loop (what a
    /// decoder that only follows disposal does) and checks every shown frame's mask, so the
    /// wrap from the last frame to the first is correct too.
    #[test]
    fn second_play_without_canvas_reset_is_correct() {
        let mut anim = clip(6);
        // The last frame covers pixels that are transparent in the first.
        let last = anim.frames.len() - 1;
        for p in anim.frames[last].image.pixels_mut() {
            *p = image::Rgba([10, 200, 30, 255]);
        }
        let opts = GifOptions {
            dither: false,
            ..GifOptions::default()
        };
        let bytes = encode(&anim, &opts).expect("encode");
        let mut dec = gif::DecodeOptions::new();
        dec.set_color_output(gif::ColorOutput::Indexed);
        let mut dec = dec.read_info(std::io::Cursor::new(&bytes)).expect("gif");
        let mut frames = Vec::new();
        while let Some(f) = dec.read_next_frame().expect("frame") {
            frames.push(f.clone());
        }
        let w = anim.width as usize;
        // Canvas of "opaque?" flags.
        let mut canvas = vec![false; w * anim.height as usize];
        let rect = |f: &gif::Frame<'_>| -> Vec<(usize, usize)> {
            let (l, t, fw) = (f.left as usize, f.top as usize, f.width as usize);
            (0..f.height as usize)
                .flat_map(|y| (0..fw).map(move |x| (y * fw + x, (y + t) * w + x + l)))
                .collect()
        };
        for play in 0..2 {
            for (k, f) in frames.iter().enumerate() {
                for (src, dst) in rect(f) {
                    if Some(f.buffer[src]) != f.transparent {
                        canvas[dst] = true;
                    }
                }
                let want = threshold(&anim.frames[k].image, opts.matte, opts.alpha_threshold);
                for (i, p) in want.pixels().enumerate() {
                    assert_eq!(p[3] == 255, canvas[i], "play {play} frame {k} pixel {i}");
                }
                if f.dispose == DisposalMethod::Background {
                    for (_, dst) in rect(f) {
                        canvas[dst] = false;
                    }
                }
            }
        }
    }

    #[test]
    fn bad_options_are_invalid() {
        let anim = clip(2);
        let opts = GifOptions {
            colors: 1,
            ..GifOptions::default()
        };
        assert_eq!(encode(&anim, &opts).expect_err("bad").kind(), "invalid");
    }
}

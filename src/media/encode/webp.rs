//! Animated (or still) WebP writer on `webp-animation` (bundled libwebp `WebPAnimEncoder`).
//!
//! - `quality: None` is lossless (libwebp's `quality` then means *effort*, 75 by default, see
//!   [`encode_with`]; pixels are exact either way); `Some(q)` is lossy VP8 colour at quality `q`
//!   with the alpha plane kept lossless (`alpha_quality` 100, best alpha filtering): edges are
//!   what a sticker is judged on and alpha compresses well, so it is not worth trading.
//! - Method: libwebp's default, 4. `webp-animation` 0.9 has a `method` field but does not pass
//!   it to libwebp, so 4 is what every frame gets.
//! - Timestamps are the exact running time in ms, rounded per frame (no drift); each frame lasts
//!   at least 1 ms because libwebp needs strictly increasing timestamps.
//! - One frame: written through the same animation encoder. libwebp turns it into a plain still
//!   file only when the frame covers the whole canvas and that is smaller; a sticker with
//!   transparent borders stays a one-frame animation (`VP8X` + `ANIM` + one `ANMF`), which the
//!   image crate, libwebp and browsers read as a still image. (A platform that insists on a
//!   non-animated WebP would need another encoder: `webp-animation` exposes no still encoder.)
//! - libwebp merges a frame identical to the one before it into that frame's duration, so such
//!   clips read back with fewer, longer frames (same playback).

use webp_animation::{
    AnimParams, Encoder, EncoderOptions, EncodingConfig, EncodingType, LossyEncodingConfig,
};

use crate::error::{Error, Result};
use crate::media::Animation;

/// Encodes `anim` as WebP bytes.
pub fn encode(anim: &Animation, quality: Option<f32>) -> Result<Vec<u8>> {
    encode_with(anim, quality, LOSSLESS_EFFORT, false)
}

/// Lossless effort used by [`encode`] (libwebp's own default, as `cwebp` uses).
pub const LOSSLESS_EFFORT: f32 = 75.0;

/// [`encode`] with explicit lossless `effort` (0..=100, ignored for lossy) and libwebp's
/// `minimize_size` (tries both dispose/blend choices per sub-frame). Measured on a 512×512,
/// 30-frame clip: effort 100 is 3 % smaller than 75 at twice the time; `minimize_size` saves
/// 0.3 % at twice the time. So the defaults are 75 and off; a caller squeezing under a size
/// cap can ask for more.
pub fn encode_with(
    anim: &Animation,
    quality: Option<f32>,
    effort: f32,
    minimize_size: bool,
) -> Result<Vec<u8>> {
    encode_full(anim, quality, 100, effort, minimize_size)
}

/// Lossy colour at `quality` with the alpha plane at libwebp's `alpha_quality` (100 = lossless,
/// lower = fewer alpha levels, still predicted with the best filter). A soft, noisy matte keeps
/// most of a sticker's bytes in its alpha plane, out of reach of the colour quality; this is
/// the knob that reaches them.
pub fn encode_lossy(anim: &Animation, quality: f32, alpha_quality: u8) -> Result<Vec<u8>> {
    encode_full(anim, Some(quality), alpha_quality, LOSSLESS_EFFORT, false)
}

fn encode_full(
    anim: &Animation,
    quality: Option<f32>,
    alpha_quality: u8,
    effort: f32,
    minimize_size: bool,
) -> Result<Vec<u8>> {
    super::validate(anim)?;
    if alpha_quality > 100 {
        return Err(Error::Invalid(format!(
            "WebP alpha quality must be 0..=100, got {alpha_quality}"
        )));
    }
    if !(effort.is_finite() && (0.0..=100.0).contains(&effort)) {
        return Err(Error::Invalid(format!(
            "WebP effort must be 0..=100, got {effort}"
        )));
    }
    let config = match quality {
        None => EncodingConfig {
            encoding_type: EncodingType::Lossless,
            quality: effort,
            method: 4,
        },
        Some(q) => {
            if !(q.is_finite() && (0.0..=100.0).contains(&q)) {
                return Err(Error::Invalid(format!(
                    "WebP quality must be 0..=100, got {q}"
                )));
            }
            EncodingConfig {
                encoding_type: EncodingType::Lossy(LossyEncodingConfig {
                    alpha_quality: alpha_quality as usize,
                    alpha_filtering: 2,
                    alpha_compression: true,
                    ..LossyEncodingConfig::default()
                }),
                quality: q,
                method: 4,
            }
        }
    };
    let loops = i32::try_from(anim.loops.to_zero_infinite()).unwrap_or(i32::MAX);
    let options = EncoderOptions {
        anim_params: AnimParams { loop_count: loops },
        minimize_size,
        encoding_config: Some(config),
        ..EncoderOptions::default()
    };
    let mut enc = Encoder::new_with_options((anim.width, anim.height), options).map_err(wp_err)?;
    let stamps = timestamps_ms(anim)?;
    for (f, &ts) in anim.frames.iter().zip(&stamps) {
        enc.add_frame(f.image.as_raw(), ts).map_err(wp_err)?;
    }
    let end = *stamps.last().unwrap_or(&0);
    let data = enc.finalize(end).map_err(wp_err)?;
    let mut bytes = data.to_vec();
    clear_background_hint(&mut bytes);
    Ok(bytes)
}

/// Sets the `ANIM` chunk's background colour to transparent black. libwebp writes opaque white
/// there and `webp-animation` does not expose the option; the spec calls it a hint, but a reader
/// that honours it would fill disposed areas with white, so stickers would get white boxes.
fn clear_background_hint(bytes: &mut [u8]) {
    let mut i = 12;
    while i + 8 <= bytes.len() {
        let size = u32::from_le_bytes([bytes[i + 4], bytes[i + 5], bytes[i + 6], bytes[i + 7]]);
        if &bytes[i..i + 4] == b"ANIM" {
            if size >= 4 && i + 12 <= bytes.len() {
                bytes[i + 8..i + 12].fill(0);
            }
            return;
        }
        i += 8 + size as usize + (size as usize & 1);
    }
}

fn wp_err(e: webp_animation::Error) -> Error {
    Error::encode("WebP", format!("{e:?}"))
}

/// Start timestamps of every frame plus the end time, in ms: rounded exact running time, each
/// frame at least 1 ms long.
pub fn timestamps_ms(anim: &Animation) -> Result<Vec<i32>> {
    let mut out = Vec::with_capacity(anim.frames.len() + 1);
    let mut t = 0f64;
    let mut last: i64 = 0;
    out.push(0);
    for f in &anim.frames {
        t += f.delay.millis_f64();
        let ts = (t.round() as i64).max(last + 1);
        let ts = i32::try_from(ts).map_err(|_| {
            Error::Invalid(format!(
                "clip too long for WebP timestamps ({:.0} s)",
                t / 1000.0
            ))
        })?;
        out.push(ts);
        last = ts as i64;
    }
    Ok(out)
}

#[cfg(test)]
mod tests {
    use super::super::test_clip::{assert_rgba_eq_visible, clip, decode_webp, mean_alpha_error};
    use super::*;
    use crate::media::{Delay, LoopCount};

    #[test]
    fn timestamps_do_not_drift() {
        let mut anim = clip(6);
        for f in &mut anim.frames {
            f.delay = Delay::from_ratio(1, 30);
        }
        assert_eq!(
            timestamps_ms(&anim).expect("ts"),
            vec![0, 33, 67, 100, 133, 167, 200]
        );
    }

    #[test]
    fn lossless_round_trip_exact() {
        let mut anim = clip(6);
        anim.loops = LoopCount::Plays(2);
        anim.frames[4].delay = Delay::from_millis(130);
        let mut cleaned = anim.clone();
        cleaned.clean_transparent([0, 0, 0]);
        let bytes = encode(&cleaned, None).expect("encode");
        let (frames, loops) = decode_webp(&bytes);
        assert_eq!(loops, 2);
        assert_eq!(frames.len(), 6);
        for (f, (img, ms)) in anim.frames.iter().zip(&frames) {
            assert_rgba_eq_visible(&f.image, img);
            assert_eq!(f.delay.millis(), *ms);
        }
        // Background hint (ANIM chunk, after VP8X at byte 30) is transparent.
        assert_eq!(&bytes[30..34], b"ANIM");
        assert_eq!(&bytes[38..42], &[0, 0, 0, 0]);
    }

    #[test]
    fn lossy_keeps_alpha_close() {
        let anim = clip(6);
        let bytes = encode(&anim, Some(80.0)).expect("encode");
        let (frames, loops) = decode_webp(&bytes);
        assert_eq!(loops, 0);
        assert_eq!(frames.len(), 6);
        let imgs: Vec<_> = frames.into_iter().map(|f| f.0).collect();
        let err = mean_alpha_error(&anim, &imgs);
        // Measured 0.0 (alpha plane is lossless at alpha_quality 100).
        assert!(err < 0.5 / 255.0, "mean |Δα| = {}", err * 255.0);
        // Colour of opaque pixels: measured mean |Δ| 1.8 levels per channel.
        let (mut s, mut n) = (0f64, 0f64);
        for (f, g) in anim.frames.iter().zip(&imgs) {
            for (a, b) in f
                .image
                .pixels()
                .zip(g.pixels())
                .filter(|(a, _)| a[3] == 255)
            {
                for c in 0..3 {
                    s += (a[c] as f64 - b[c] as f64).abs();
                    n += 1.0;
                }
            }
        }
        assert!(s / n < 4.0, "colour error {}", s / n);
        assert!(encode(&anim, Some(101.0)).is_err());
    }

    #[test]
    fn alpha_quality_shrinks_a_noisy_soft_matte() {
        // Per-pixel noise in alpha: lossless alpha costs most of the file.
        let mut anim = clip(4);
        let mut s: u32 = 12345;
        for f in &mut anim.frames {
            for p in f.image.pixels_mut() {
                s = s.wrapping_mul(1_103_515_245).wrapping_add(12345);
                p[3] = 64 + (s >> 24) as u8 / 2;
            }
        }
        let full = encode_lossy(&anim, 0.0, 100).expect("alpha lossless");
        let low = encode_lossy(&anim, 0.0, 0).expect("alpha q 0");
        assert!(
            (low.len() as f64) < full.len() as f64 * 0.7,
            "{} vs {}",
            low.len(),
            full.len()
        );
        assert_eq!(
            encode_lossy(&anim, 50.0, 100).expect("same"),
            encode(&anim, Some(50.0)).expect("same")
        );
        assert!(encode_lossy(&anim, 50.0, 101).is_err());
    }

    #[test]
    fn one_frame_reads_back_as_still() {
        let mut anim = clip(1);
        anim.clean_transparent([0, 0, 0]);
        let bytes = encode(&anim, None).expect("encode");
        let img = image::load_from_memory_with_format(&bytes, image::ImageFormat::WebP)
            .expect("decode")
            .to_rgba8();
        assert_rgba_eq_visible(&anim.frames[0].image, &img);
        let lossy = encode(&anim, Some(80.0)).expect("encode");
        let img = image::load_from_memory_with_format(&lossy, image::ImageFormat::WebP)
            .expect("decode")
            .to_rgba8();
        let err = mean_alpha_error(&anim, &[img]);
        assert!(err < 0.5 / 255.0, "mean |Δα| = {}", err * 255.0);
    }
}

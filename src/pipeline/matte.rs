//! Windowed ILDiff decoding of a clip of any length and size.
//!
//! The adapter's temporal layers make frame t depend on frames `t - r ..= t + r` (r =
//! [`IldiffDecoder::temporal_radius`]), and on nothing else: the student encoder, the norms and
//! the decoder work frame by frame. So a clip is decoded in windows of `window` output frames,
//! each given `r` frames of context on both sides (fewer at the clip ends, where the zero
//! temporal padding of a single pass applies anyway); the context outputs are dropped. The
//! result equals one pass over the whole clip while the activations held at once stay bounded:
//! the adapter's temporal stack sees at most `window + 2r` frames and the decoder `window`.
//! Student features are per frame, so those of the context frames are kept from the previous
//! window rather than recomputed.
//!
//! Sizes that are not a multiple of the decoder's are mirror-padded per window and cropped back,
//! like [`crate::model::TransparentDecoder::decode`].

use candle_core::{DType, Device, Tensor};
use image::RgbaImage;

use crate::media::{Animation, Frame};
use crate::model::IldiffDecoder;
use crate::model::augment::{crop, mirror_pad};
use crate::{Error, Progress, Result};

/// Progress stage name reported by [`matte_clip`].
pub const STAGE: &str = "matte";

/// How [`matte_clip`] splits a clip.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct MatteOptions {
    /// Output frames per window (at least 1). Larger windows recompute less temporal context
    /// but hold more activations.
    pub window: usize,
}

impl Default for MatteOptions {
    fn default() -> Self {
        Self { window: 8 }
    }
}

fn model_err(e: candle_core::Error) -> Error {
    Error::Model(format!("matting failed: {e}"))
}

/// Mattes one clip: `pixel` `[T, 3, H, W]` (decoded RGB in [0, 1]) and `latent`
/// `[T, 4, ceil(H/8), ceil(W/8)]` (unscaled) -> `[T, 4, H, W]` in [0, 1], channel 0 = alpha,
/// then straight RGB. Reports `(STAGE, frames done, T)` after each window and stops with
/// [`Error::Cancelled`] when `progress` returns false.
pub fn matte_clip(
    model: &IldiffDecoder,
    pixel: &Tensor,
    latent: &Tensor,
    options: &MatteOptions,
    progress: &mut dyn Progress,
) -> Result<Tensor> {
    let cfg = &model.config().decoder;
    let (t, c, h, w) = pixel.dims4().map_err(|_| shape_err(pixel, "pixel"))?;
    if t == 0 || h == 0 || w == 0 || c != cfg.in_channels {
        return Err(shape_err(pixel, "pixel"));
    }
    let f = cfg.latent_factor();
    let (lh, lw) = (h.div_ceil(f), w.div_ceil(f));
    if latent.dims() != [t, cfg.latent_channels, lh, lw] {
        return Err(Error::Invalid(format!(
            "latent is {:?}, expected [{t}, {}, {lh}, {lw}] for frames {:?}",
            latent.dims(),
            cfg.latent_channels,
            pixel.dims()
        )));
    }
    let window = options.window.max(1);
    let r = model.temporal_radius();
    let m = cfg.size_multiple();
    let (ph, pw) = (h.div_ceil(m) * m, w.div_ceil(m) * m);
    let pad = |x: &Tensor, ph: usize, pw: usize| -> Result<Tensor> {
        let (_, _, xh, xw) = x.dims4().map_err(model_err)?;
        mirror_pad(x, ph - xh, pw - xw).map_err(model_err)
    };
    let total = t as u64;
    if !progress.step(STAGE, 0, total) {
        return Err(Error::Cancelled);
    }

    // Student features of frames `cached.0 ..`, kept for the next window's context.
    let mut cached: Option<(usize, Tensor)> = None;
    let mut outputs = Vec::with_capacity(t.div_ceil(window));
    let mut start = 0;
    while start < t {
        let end = (start + window).min(t);
        let (lo, hi) = (start.saturating_sub(r), (end + r).min(t));
        let frames = pad(&narrow(pixel, lo, hi - lo)?, ph, pw)?;
        let centre = frames
            .narrow(0, start - lo, end - start)
            .map_err(model_err)?;
        let lat = pad(&narrow(latent, start, end - start)?, ph / f, pw / f)?;
        let extra = match model.adapter() {
            Some(adapter) => {
                // Reuse the features of this window's first frames from the previous window.
                let reuse = match cached.take() {
                    Some((c_lo, c)) => {
                        let c_hi = c_lo + c.dim(0).map_err(model_err)?;
                        (c_lo <= lo && lo < c_hi).then_some((c_lo, c_hi, c))
                    }
                    None => None,
                };
                let feats = match reuse {
                    Some((c_lo, c_hi, c)) => {
                        let kept = narrow(&c, lo - c_lo, c_hi - lo)?;
                        if c_hi < hi {
                            let new = narrow(&frames, c_hi - lo, hi - c_hi)?;
                            let new = adapter.features(&new).map_err(model_err)?;
                            Tensor::cat(&[&kept, &new], 0).map_err(model_err)?
                        } else {
                            kept
                        }
                    }
                    None => adapter.features(&frames).map_err(model_err)?,
                };
                let extra = adapter
                    .inject(&feats, hi - lo)
                    .and_then(|e| e.narrow(0, start - lo, end - start))
                    .map_err(model_err)?;
                cached = Some((lo, feats));
                Some(extra)
            }
            None => None,
        };
        let out = model
            .decoder()
            .forward_with_extra(&centre, &lat, extra.as_ref())
            .and_then(|y| crop(&y, h, w))
            .and_then(|y| y.clamp(0f32, 1f32))
            .map_err(model_err)?;
        outputs.push(out);
        if !progress.step(STAGE, end as u64, total) {
            return Err(Error::Cancelled);
        }
        start = end;
    }
    Tensor::cat(&outputs, 0).map_err(model_err)
}

fn narrow(x: &Tensor, start: usize, len: usize) -> Result<Tensor> {
    x.narrow(0, start, len).map_err(model_err)
}

fn shape_err(pixel: &Tensor, what: &str) -> Error {
    Error::Invalid(format!(
        "{what} is {:?}, expected [T, 3, H, W] with at least one frame",
        pixel.dims()
    ))
}

/// The RGB of an animation's frames as `[T, 3, H, W]` f32 in [0, 1] (alpha ignored: the
/// matting input is an opaque clip).
pub fn pixels_from_animation(anim: &Animation, device: &Device) -> Result<Tensor> {
    let (w, h) = (anim.width as usize, anim.height as usize);
    let plane = w * h;
    let mut data = vec![0f32; anim.frames.len() * 3 * plane];
    for (i, frame) in anim.frames.iter().enumerate() {
        let base = i * 3 * plane;
        for (p, px) in frame.image.pixels().enumerate() {
            for ch in 0..3 {
                data[base + ch * plane + p] = f32::from(px.0[ch]) / 255.0;
            }
        }
    }
    Tensor::from_vec(data, (anim.frames.len(), 3, h, w), device).map_err(model_err)
}

/// An animation from a matte `[T, 4, H, W]` (alpha, straight RGB in [0, 1]) with the timing of
/// `timing` (same frame count and size).
pub fn animation_from_matte(matte: &Tensor, timing: &Animation) -> Result<Animation> {
    let (t, c, h, w) = matte.dims4().map_err(model_err)?;
    if (t, c, h, w)
        != (
            timing.len(),
            4,
            timing.height as usize,
            timing.width as usize,
        )
    {
        return Err(Error::Invalid(format!(
            "matte is {:?}, expected [{}, 4, {}, {}]",
            matte.dims(),
            timing.len(),
            timing.height,
            timing.width
        )));
    }
    let values: Vec<f32> = matte
        .to_dtype(DType::F32)
        .and_then(|m| m.flatten_all())
        .and_then(|m| m.to_vec1())
        .map_err(model_err)?;
    let plane = h * w;
    let to_u8 = |v: f32| (v.clamp(0.0, 1.0) * 255.0).round() as u8;
    let frames = timing
        .frames
        .iter()
        .enumerate()
        .map(|(i, src)| {
            let base = i * 4 * plane;
            let mut img = RgbaImage::new(timing.width, timing.height);
            for (p, px) in img.pixels_mut().enumerate() {
                let at = |ch: usize| to_u8(values[base + ch * plane + p]);
                px.0 = [at(1), at(2), at(3), at(0)];
            }
            Frame::new(img, src.delay)
        })
        .collect();
    Animation::new(timing.width, timing.height, frames, timing.loops)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::media::{Delay, LoopCount};
    use crate::model::ildiff::tests::{awake, inputs, tiny, values};

    fn max_diff(a: &Tensor, b: &Tensor) -> f32 {
        values(a)
            .iter()
            .zip(values(b))
            .map(|(x, y)| (x - y).abs())
            .fold(0f32, f32::max)
    }

    /// The adapter in one pass over the whole (padded) clip, then the decoder on the same
    /// frame groups as the windows. candle's CPU matmul picks its kernel by matrix size, so a
    /// decoder batch of another size rounds differently (about 1e-6); grouping the decoder like
    /// the windows isolates what windowing could get wrong: the temporal context.
    fn one_adapter_pass(
        model: &IldiffDecoder,
        pixel: &Tensor,
        latent: &Tensor,
        window: usize,
    ) -> Tensor {
        let (t, _, h, w) = pixel.dims4().expect("dims");
        let m = model.config().decoder.size_multiple();
        let (ph, pw) = (h.div_ceil(m) * m, w.div_ceil(m) * m);
        let padded = mirror_pad(pixel, ph - h, pw - w).expect("pad");
        let (_, _, lh, lw) = latent.dims4().expect("dims");
        let lat = mirror_pad(latent, ph / 8 - lh, pw / 8 - lw).expect("pad");
        let extra = model
            .adapter()
            .expect("adapter")
            .forward(&padded)
            .expect("adapter");
        let mut parts = Vec::new();
        for start in (0..t).step_by(window) {
            let n = window.min(t - start);
            let y = model
                .decoder()
                .forward_with_extra(
                    &padded.narrow(0, start, n).expect("n"),
                    &lat.narrow(0, start, n).expect("n"),
                    Some(&extra.narrow(0, start, n).expect("n")),
                )
                .and_then(|y| crop(&y, h, w))
                .and_then(|y| y.clamp(0f32, 1f32))
                .expect("decode");
            parts.push(y);
        }
        Tensor::cat(&parts, 0).expect("cat")
    }

    #[test]
    fn windowed_equals_one_pass_over_the_clip() {
        let (_, model) = awake(&tiny());
        assert_eq!(model.temporal_radius(), 2);
        let (pixel, latent) = inputs(11, 32, 32);
        let mut reports = Vec::new();
        let mut progress = |stage: &str, done: u64, total: u64| {
            reports.push((stage.to_string(), done, total));
            true
        };
        let windowed = matte_clip(
            &model,
            &pixel,
            &latent,
            &MatteOptions { window: 4 },
            &mut progress,
        )
        .expect("windowed");
        assert_eq!(windowed.dims(), &[11, 4, 32, 32]);
        let d = max_diff(&one_adapter_pass(&model, &pixel, &latent, 4), &windowed);
        assert!(d <= 1e-6, "max difference {d}");
        // And against a single call of the model on all 11 frames, up to batch-size rounding.
        let whole = model
            .forward(&pixel, &latent)
            .and_then(|y| y.clamp(0f32, 1f32))
            .expect("whole clip");
        let d = max_diff(&whole, &windowed);
        assert!(d <= 2e-5, "max difference {d}");
        let done: Vec<u64> = reports.iter().map(|r| r.1).collect();
        assert_eq!(done, [0, 4, 8, 11]);
        assert!(reports.iter().all(|r| r.0 == STAGE && r.2 == 11));
        // The context matters: a window decoded without it differs.
        let cut = model
            .forward(
                &pixel.narrow(0, 4, 4).expect("n"),
                &latent.narrow(0, 4, 4).expect("n"),
            )
            .and_then(|y| y.clamp(0f32, 1f32))
            .expect("cut");
        let want = whole.narrow(0, 4, 4).expect("n");
        assert!(max_diff(&cut, &want) > 1e-3);
    }

    #[test]
    fn odd_sizes_are_padded_and_cropped_back() {
        let (_, model) = awake(&tiny());
        let (pixel, latent) = inputs(5, 24, 40);
        let out = matte_clip(
            &model,
            &pixel,
            &latent,
            &MatteOptions { window: 2 },
            &mut crate::NoProgress,
        )
        .expect("matte");
        assert_eq!(out.dims(), &[5, 4, 24, 40]);
        let d = max_diff(&out, &one_adapter_pass(&model, &pixel, &latent, 2));
        assert!(d <= 1e-6, "max difference {d}");
    }

    #[test]
    fn cancel_and_bad_shapes() {
        let (_, model) = awake(&tiny());
        let (pixel, latent) = inputs(6, 32, 32);
        let mut calls = 0;
        let mut stop_after_first = |_: &str, _: u64, _: u64| {
            calls += 1;
            calls < 2
        };
        let e = matte_clip(
            &model,
            &pixel,
            &latent,
            &MatteOptions { window: 2 },
            &mut stop_after_first,
        )
        .expect_err("cancelled");
        assert!(matches!(e, Error::Cancelled), "{e}");
        assert_eq!(calls, 2, "stops at the first report that says no");
        let e = matte_clip(
            &model,
            &pixel,
            &latent.narrow(0, 0, 5).expect("n"),
            &MatteOptions::default(),
            &mut crate::NoProgress,
        )
        .expect_err("latent frames");
        assert_eq!(e.kind(), "invalid");
        let e = matte_clip(
            &model,
            &pixel.narrow(0, 0, 0).expect("n"),
            &latent.narrow(0, 0, 0).expect("n"),
            &MatteOptions::default(),
            &mut crate::NoProgress,
        )
        .expect_err("empty clip");
        assert_eq!(e.kind(), "invalid");
    }

    #[test]
    fn animation_conversions_round_trip() {
        let mut frames = Vec::new();
        for i in 0..3u8 {
            let img = RgbaImage::from_fn(5, 4, |x, y| {
                image::Rgba([x as u8 * 40, y as u8 * 50, i * 60, 255])
            });
            frames.push(Frame::new(img, Delay::from_millis(40 + u32::from(i))));
        }
        let anim = Animation::new(5, 4, frames, LoopCount::Plays(2)).expect("anim");
        let px = pixels_from_animation(&anim, &Device::Cpu).expect("pixels");
        assert_eq!(px.dims(), &[3, 3, 4, 5]);
        let alpha = Tensor::full(0.5f32, (3, 1, 4, 5), &Device::Cpu).expect("alpha");
        let matte = Tensor::cat(&[&alpha, &px], 1).expect("matte");
        let back = animation_from_matte(&matte, &anim).expect("animation");
        assert_eq!(back.loops, anim.loops);
        for (a, b) in back.frames.iter().zip(&anim.frames) {
            assert_eq!(a.delay, b.delay);
            for (pa, pb) in a.image.pixels().zip(b.image.pixels()) {
                assert_eq!(&pa.0[..3], &pb.0[..3]);
                assert_eq!(pa.0[3], 128);
            }
        }
        assert!(animation_from_matte(&px, &anim).is_err());
    }
}

//! LayerDiffuse's latent-transparency offset encoder and the input preparation it expects.
//!
//! Encoding an RGBA image into an SD latent that "carries" its transparency: the SD VAE sees
//! premultiplied-to-black colour, and a small conv net looks at alpha plus a padded RGB (invisible
//! pixels filled with smooth colour) and predicts an offset that replaces the posterior noise:
//! `latent = mean + std * 300 * offset` ([`offset_latent`]).

use crate::model::fastconv::{FastConv2d, fast_conv2d};
use candle_core::{Module, Result, Tensor, bail};
use candle_nn::{Conv2dConfig, Init, VarBuilder};
use serde::{Deserialize, Serialize};

/// The factor the encoder output is multiplied by before it scales the posterior std.
pub const OFFSET_SCALE: f64 = 300.0;

/// Shape of the offset encoder. `official()` matches the published weights.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct OffsetEncoderConfig {
    /// Input channels (`alpha, R, G, B`).
    pub in_channels: usize,
    /// Output channels of the hidden convs, in order; a SiLU follows each.
    pub channels: Vec<usize>,
    /// Indices (0-based, into `channels`) of the convs with stride 2.
    pub stride2: Vec<usize>,
    /// Output channels of the final (zero-initialised) conv.
    pub out_channels: usize,
}

impl OffsetEncoderConfig {
    /// The published encoder: 9 convs 4 -> 32 -> 32 -> 64 -> 64 -> 128 -> 128 -> 256 -> 256 -> 4,
    /// stride 2 at the 3rd, 5th and 7th (1.18 M parameters).
    pub fn official() -> Self {
        Self {
            in_channels: 4,
            channels: vec![32, 32, 64, 64, 128, 128, 256, 256],
            stride2: vec![2, 4, 6],
            out_channels: 4,
        }
    }
}

/// The offset encoder: `[B, 4, H, W]` -> `[B, 4, H/8, W/8]` (before the x300).
#[derive(Debug, Clone)]
pub struct OffsetEncoder {
    convs: Vec<FastConv2d>,
}

impl OffsetEncoder {
    /// Builds the encoder; weights are named `blocks.{0,2,..,16}` as in the official file
    /// (the odd indices are the parameter-free SiLUs of the torch `Sequential`).
    pub fn new(cfg: &OffsetEncoderConfig, vb: VarBuilder) -> Result<Self> {
        if cfg.channels.is_empty() {
            bail!("offset encoder config: channels is empty");
        }
        let vb = vb.pp("blocks");
        let mut convs = Vec::with_capacity(cfg.channels.len() + 1);
        let mut c_in = cfg.in_channels;
        for (i, &c_out) in cfg.channels.iter().enumerate() {
            let conv_cfg = Conv2dConfig {
                padding: 1,
                stride: if cfg.stride2.contains(&i) { 2 } else { 1 },
                ..Default::default()
            };
            convs.push(fast_conv2d(c_in, c_out, 3, conv_cfg, vb.pp(2 * i))?);
            c_in = c_out;
        }
        // The last conv starts at zero so a fresh encoder adds no offset.
        let last = vb.pp(2 * cfg.channels.len());
        let w = last.get_with_hints((cfg.out_channels, c_in, 3, 3), "weight", Init::Const(0.))?;
        let b = last.get_with_hints(cfg.out_channels, "bias", Init::Const(0.))?;
        let conv_cfg = Conv2dConfig {
            padding: 1,
            ..Default::default()
        };
        convs.push(FastConv2d::new(w, Some(b), conv_cfg));
        Ok(Self { convs })
    }
}

impl Module for OffsetEncoder {
    fn forward(&self, x: &Tensor) -> Result<Tensor> {
        let mut x = x.clone();
        let last = self.convs.len() - 1;
        for (i, conv) in self.convs.iter().enumerate() {
            x = conv.forward(&x)?;
            if i < last {
                x = x.silu()?;
            }
        }
        Ok(x)
    }
}

/// The encoder input: `cat[alpha, pad_rgb(rgb, alpha)]` along channels.
pub fn encoder_input(rgb: &Tensor, alpha: &Tensor) -> Result<Tensor> {
    Tensor::cat(&[alpha, &pad_rgb(rgb, alpha)?], 1)
}

/// What the SD VAE encodes for an RGBA image: `(rgb * 2 - 1) * alpha`, i.e. colour in [-1, 1]
/// faded to 0 where transparent.
pub fn vae_input(rgb: &Tensor, alpha: &Tensor) -> Result<Tensor> {
    rgb.affine(2.0, -1.0)?.broadcast_mul(alpha)
}

/// `latent = mean + std * 300 * offset`: the unscaled SD latent that carries transparency.
pub fn offset_latent(mean: &Tensor, std: &Tensor, offset: &Tensor) -> Result<Tensor> {
    mean + (std * offset.affine(OFFSET_SCALE, 0.0)?)?
}

/// Fills invisible pixels with smooth colour (LayerDiffuse's `pad_rgb`): `rgb` `[B, 3, H, W]`
/// straight colour and `alpha` `[B, 1, H, W]`, both in [0, 1]; returns `[B, 3, H, W]`.
///
/// A pyramid of premultiplied colour and alpha, each level an area-downsample of the previous by
/// 1/1.2 (sizes truncated, as `int(W / 1.2)`), until one side is 1. The fill starts at the
/// alpha-weighted mean colour of the coarsest level and goes coarse -> fine:
/// `fill = premult_l + bilinear_up(fill) * (1 - alpha_l)`. Resizes follow OpenCV's `INTER_AREA`
/// and `INTER_LINEAR` and are done as matrix products, so they run on any device.
pub fn pad_rgb(rgb: &Tensor, alpha: &Tensor) -> Result<Tensor> {
    let (b, _, h, w) = rgb.dims4()?;
    if alpha.dims() != [b, 1, h, w] || h == 0 || w == 0 {
        bail!(
            "pad_rgb: rgb is {:?} and alpha {:?}; expected [B, C, H, W] and [B, 1, H, W], H and W positive",
            rgb.dims(),
            alpha.dims()
        );
    }
    let mut colour = rgb.broadcast_mul(alpha)?;
    let mut a = alpha.clone();
    let mut pyramid = vec![(colour.clone(), a.clone())];
    let (mut ch, mut cw) = (h, w);
    while ch.min(cw) > 1 {
        let (nh, nw) = ((ch as f64 / 1.2) as usize, (cw as f64 / 1.2) as usize);
        let ry = resize_matrix(&area_weights(ch, nh), ch, rgb)?;
        let rx = resize_matrix(&area_weights(cw, nw), cw, rgb)?;
        colour = resize(&colour, &ry, &rx)?;
        a = resize(&a, &ry, &rx)?;
        pyramid.push((colour.clone(), a.clone()));
        (ch, cw) = (nh, nw);
    }
    let (top_c, top_a) = &pyramid[pyramid.len() - 1];
    let sum_a = top_a.sum_keepdim((2, 3))?.clamp(1e-8f32, 1e32f32)?;
    let mut fill = top_c.sum_keepdim((2, 3))?.broadcast_div(&sum_a)?;
    let (mut fh, mut fw) = (1, 1);
    for (lc, la) in pyramid.iter().rev() {
        let (_, _, lh, lw) = lc.dims4()?;
        let ry = resize_matrix(&linear_weights(fh, lh), fh, rgb)?;
        let rx = resize_matrix(&linear_weights(fw, lw), fw, rgb)?;
        fill = resize(&fill, &ry, &rx)?;
        fill = (lc + fill.broadcast_mul(&la.affine(-1.0, 1.0)?)?)?;
        (fh, fw) = (lh, lw);
    }
    Ok(fill)
}

/// Separable resize `ry @ x @ rx^T` of `[B, C, H, W]` with `ry` `[h, H]` and `rx` `[w, W]`.
fn resize(x: &Tensor, ry: &Tensor, rx: &Tensor) -> Result<Tensor> {
    let y = x.broadcast_matmul(&rx.t()?)?;
    ry.broadcast_matmul(&y)
}

/// A `[dst, src]` matrix from per-output `(source index, weight)` lists.
fn resize_matrix(weights: &[Vec<(usize, f64)>], src: usize, like: &Tensor) -> Result<Tensor> {
    let mut m = vec![0f32; weights.len() * src];
    for (d, row) in weights.iter().enumerate() {
        for &(s, wgt) in row {
            m[d * src + s] += wgt as f32;
        }
    }
    Tensor::from_vec(m, (weights.len(), src), like.device())?.to_dtype(like.dtype())
}

/// OpenCV `INTER_AREA` weights for shrinking `src` samples to `dst` (fractional cell overlap,
/// as `computeResizeAreaTab`).
pub(crate) fn area_weights(src: usize, dst: usize) -> Vec<Vec<(usize, f64)>> {
    let scale = src as f64 / dst as f64;
    (0..dst)
        .map(|dx| {
            let fsx1 = dx as f64 * scale;
            let fsx2 = fsx1 + scale;
            let cell = scale.min(src as f64 - fsx1);
            let sx2 = (fsx2.floor() as usize).min(src - 1);
            let sx1 = (fsx1.ceil() as usize).min(sx2);
            let mut row = Vec::new();
            if sx1 as f64 - fsx1 > 1e-3 {
                row.push((sx1 - 1, (sx1 as f64 - fsx1) / cell));
            }
            for sx in sx1..sx2 {
                row.push((sx, 1.0 / cell));
            }
            if fsx2 - sx2 as f64 > 1e-3 {
                row.push((sx2, (fsx2 - sx2 as f64).min(1.0).min(cell) / cell));
            }
            row
        })
        .collect()
}

/// OpenCV `INTER_LINEAR` weights (half-pixel centres, edges clamped) from `src` to `dst`.
pub(crate) fn linear_weights(src: usize, dst: usize) -> Vec<Vec<(usize, f64)>> {
    let scale = src as f64 / dst as f64;
    (0..dst)
        .map(|dx| {
            let f = (dx as f64 + 0.5) * scale - 0.5;
            let mut sx = f.floor();
            let mut frac = f - sx;
            if sx < 0.0 {
                sx = 0.0;
                frac = 0.0;
            }
            let mut sx = sx as usize;
            if sx >= src - 1 {
                sx = src - 1;
                frac = 0.0;
            }
            let next = (sx + 1).min(src - 1);
            vec![(sx, 1.0 - frac), (next, frac)]
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;
    use candle_core::{DType, Device};

    #[test]
    fn area_weights_match_hand_computation() {
        // 5 -> 4, scale 1.25: output 0 covers [0, 1.25): 0.8 of pixel 0, 0.2 of pixel 1.
        let w = area_weights(5, 4);
        assert_eq!(w[0].len(), 2);
        assert!((w[0][0].1 - 0.8).abs() < 1e-12 && w[0][0].0 == 0);
        assert!((w[0][1].1 - 0.2).abs() < 1e-12 && w[0][1].0 == 1);
        for row in area_weights(37, 30).iter().chain(area_weights(3, 2).iter()) {
            let s: f64 = row.iter().map(|r| r.1).sum();
            assert!((s - 1.0).abs() < 1e-9, "row sums to {s}");
        }
    }

    #[test]
    fn linear_weights_follow_half_pixel_centres() {
        // 2 -> 4: outputs sit at source coords -0.25, 0.25, 0.75, 1.25 -> clamp, 0.25, 0.75, clamp.
        let w = linear_weights(2, 4);
        assert_eq!(w[0], vec![(0, 1.0), (1, 0.0)]);
        assert!((w[1][0].1 - 0.75).abs() < 1e-12 && (w[1][1].1 - 0.25).abs() < 1e-12);
        assert!((w[2][0].1 - 0.25).abs() < 1e-12 && (w[2][1].1 - 0.75).abs() < 1e-12);
        assert_eq!(w[3], vec![(1, 1.0), (1, 0.0)]);
    }

    #[test]
    fn pad_rgb_keeps_opaque_and_fills_transparent_smoothly() {
        let dev = Device::Cpu;
        let (h, w) = (20, 27);
        // Left half opaque red-ish with a gradient in green, right half transparent garbage.
        let mut rgb = vec![0f32; 3 * h * w];
        let mut alpha = vec![0f32; h * w];
        for y in 0..h {
            for x in 0..w {
                let i = y * w + x;
                if x < 10 {
                    alpha[i] = 1.0;
                    rgb[i] = 0.9;
                    rgb[h * w + i] = y as f32 / h as f32;
                    rgb[2 * h * w + i] = 0.1;
                } else {
                    rgb[i] = 0.0;
                    rgb[h * w + i] = 1.0;
                    rgb[2 * h * w + i] = 1.0;
                }
            }
        }
        let rgb_t = Tensor::from_vec(rgb.clone(), (1, 3, h, w), &dev).expect("rgb");
        let a_t = Tensor::from_vec(alpha.clone(), (1, 1, h, w), &dev).expect("alpha");
        let out = pad_rgb(&rgb_t, &a_t).expect("pad");
        let out: Vec<f32> = out.flatten_all().and_then(|t| t.to_vec1()).expect("vec");
        for y in 0..h {
            for x in 0..w {
                let i = y * w + x;
                let (r, b) = (out[i], out[2 * h * w + i]);
                if x < 10 {
                    for c in 0..3 {
                        let k = c * h * w + i;
                        assert!((out[k] - rgb[k]).abs() < 1e-5, "opaque pixel changed");
                    }
                } else {
                    // The hidden garbage (r=0, b=1) must not show; the visible colours spread.
                    assert!(r > 0.8 && b < 0.2, "fill at ({x},{y}) is r={r} b={b}");
                }
            }
        }
    }

    #[test]
    fn encoder_shapes_and_fresh_zero_output() {
        let dev = Device::Cpu;
        let varmap = candle_nn::VarMap::new();
        let vb = VarBuilder::from_varmap(&varmap, DType::F32, &dev);
        let enc = OffsetEncoder::new(&OffsetEncoderConfig::official(), vb).expect("encoder");
        let x = Tensor::rand(0f32, 1f32, (2, 4, 24, 40), &dev).expect("x");
        let y = enc.forward(&x).expect("forward");
        assert_eq!(y.dims(), &[2, 4, 3, 5]);
        let m = y
            .abs()
            .and_then(|t| t.max_all())
            .and_then(|t| t.to_scalar::<f32>());
        assert_eq!(m.expect("max"), 0.0, "a fresh encoder must add no offset");
        let n: usize = varmap.all_vars().iter().map(|v| v.elem_count()).sum();
        assert_eq!(n, 1_181_764);
    }
}

//! A 3-D convolution (kernel 3x3x3, zero padding 1 in time and space, stride 1) built from
//! candle's 2-D convolution, which has a backward pass on every device; candle has no 3-D one.
//!
//! The three temporal taps `w[:, :, k]` are stacked along the output channels and applied to all
//! frames in **one** conv2d (one im2col instead of three), then each tap's result is shifted
//! along time with zero fill and the three are summed:
//! `y[t] = w0 * x[t-1] + w1 * x[t] + w2 * x[t+1] + b`, which is PyTorch's `Conv3d` (a
//! cross-correlation) with `padding=1`. Weights use PyTorch's layout `[Cout, Cin, 3, 3, 3]`
//! (`[out, in, time, height, width]`), so weights trained in PyTorch load unchanged.
//!
//! Two layouts are accepted: PyTorch's `[B, C, T, H, W]` ([`Conv3d::forward`]) and the
//! *frame-major* `[B*T, C, H, W]` ([`Conv3d::forward_frames`]), which is how the rest of the
//! model sees a clip (a batch of frames); a stack of temporal layers stays frame-major and never
//! transposes.

use candle_core::{Module, Result, Tensor, bail};
use candle_nn::{Conv2dConfig, Init, VarBuilder};

/// Temporal (and spatial) kernel size.
pub const KERNEL: usize = 3;

/// `Conv3d(c_in, c_out, kernel_size=3, padding=1)` with bias.
#[derive(Debug, Clone)]
pub struct Conv3d {
    weight: Tensor,
    bias: Option<Tensor>,
    /// `weight` as `[3 * Cout, Cin, 3, 3]`, tap-major (rows `k * Cout .. (k + 1) * Cout` = tap k).
    stacked: Tensor,
    c_in: usize,
    c_out: usize,
}

impl Conv3d {
    /// Wraps a `[Cout, Cin, 3, 3, 3]` weight and an optional `[Cout]` bias.
    pub fn new(weight: Tensor, bias: Option<Tensor>) -> Result<Self> {
        let (c_out, c_in, kt, kh, kw) = weight.dims5()?;
        if (kt, kh, kw) != (KERNEL, KERNEL, KERNEL) {
            bail!(
                "conv3d: weight is {:?}, expected [Cout, Cin, 3, 3, 3]",
                weight.dims()
            );
        }
        if let Some(b) = &bias
            && b.dims() != [c_out]
        {
            bail!("conv3d: bias is {:?}, expected [{c_out}]", b.dims());
        }
        let stacked = weight.permute((2, 0, 1, 3, 4))?.contiguous()?.reshape((
            KERNEL * c_out,
            c_in,
            KERNEL,
            KERNEL,
        ))?;
        Ok(Self {
            weight,
            bias,
            stacked,
            c_in,
            c_out,
        })
    }

    /// Builds a conv with PyTorch's default init (Kaiming-uniform weights, uniform bias).
    pub fn build(c_in: usize, c_out: usize, vb: VarBuilder) -> Result<Self> {
        let fan_in = (c_in * KERNEL * KERNEL * KERNEL) as f64;
        let w = vb.get_with_hints(
            (c_out, c_in, KERNEL, KERNEL, KERNEL),
            "weight",
            candle_nn::init::DEFAULT_KAIMING_NORMAL,
        )?;
        let bound = 1.0 / fan_in.sqrt();
        let b = vb.get_with_hints(
            c_out,
            "bias",
            Init::Uniform {
                lo: -bound,
                up: bound,
            },
        )?;
        Self::new(w, Some(b))
    }

    /// The `[Cout, Cin, 3, 3, 3]` weight.
    pub fn weight(&self) -> &Tensor {
        &self.weight
    }

    /// The `[Cout]` bias, if any.
    pub fn bias(&self) -> Option<&Tensor> {
        self.bias.as_ref()
    }

    /// PyTorch layout: `[B, Cin, T, H, W]` -> `[B, Cout, T, H, W]`.
    pub fn forward(&self, x: &Tensor) -> Result<Tensor> {
        let (b, c, t, h, w) = x.dims5()?;
        if c != self.c_in {
            bail!(
                "conv3d: input is {:?}, expected {} channels",
                x.dims(),
                self.c_in
            );
        }
        let frames = x
            .permute((0, 2, 1, 3, 4))?
            .contiguous()?
            .reshape((b * t, c, h, w))?;
        self.forward_frames(&frames, t)?
            .reshape((b, t, self.c_out, h, w))?
            .permute((0, 2, 1, 3, 4))?
            .contiguous()
    }

    /// Frame-major layout: `x` is `[B * T, Cin, H, W]` holding `B` clips of `frames` frames each,
    /// clip-major (frame `t` of clip `b` at index `b * T + t`). Returns `[B * T, Cout, H, W]`.
    pub fn forward_frames(&self, x: &Tensor, frames: usize) -> Result<Tensor> {
        let (n, c, h, w) = x.dims4()?;
        if c != self.c_in || frames == 0 || n % frames != 0 {
            bail!(
                "conv3d: input is {:?}, expected [B * {frames}, {}, H, W]",
                x.dims(),
                self.c_in
            );
        }
        let b = n / frames;
        let cfg = Conv2dConfig {
            padding: 1,
            ..Default::default()
        };
        let y = crate::model::fastconv::conv2d(
            x,
            &self.stacked,
            cfg.padding,
            cfg.stride,
            cfg.dilation,
            cfg.groups,
        )?
        .reshape((b, frames, KERNEL, self.c_out, h, w))?;
        let tap = |k: usize| y.narrow(2, k, 1)?.squeeze(2);
        // Tap 0 looks one frame back: out[t] += y0[t - 1]; tap 2 one frame ahead.
        let mut out = tap(1)?;
        if frames > 1 {
            let zero = Tensor::zeros((b, 1, self.c_out, h, w), y.dtype(), y.device())?;
            let back = Tensor::cat(&[&zero, &tap(0)?.narrow(1, 0, frames - 1)?], 1)?;
            let ahead = Tensor::cat(&[&tap(2)?.narrow(1, 1, frames - 1)?, &zero], 1)?;
            out = ((out + back)? + ahead)?;
        }
        let out = out.reshape((n, self.c_out, h, w))?;
        match &self.bias {
            Some(bias) => out.broadcast_add(&bias.reshape((1, self.c_out, 1, 1))?),
            None => Ok(out),
        }
    }
}

impl Module for Conv3d {
    fn forward(&self, x: &Tensor) -> Result<Tensor> {
        Conv3d::forward(self, x)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use candle_core::{DType, Device, Var};
    use candle_nn::VarMap;

    /// Direct 7-loop definition of PyTorch's Conv3d(padding=1) on `[B, C, T, H, W]`.
    fn naive(
        x: &[f32],
        (b, ci, t, h, w): (usize, usize, usize, usize, usize),
        wt: &[f32],
        bias: &[f32],
        co: usize,
    ) -> Vec<f32> {
        let xi = |bb: usize, c: usize, tt: usize, y: usize, xx: usize| {
            (((bb * ci + c) * t + tt) * h + y) * w + xx
        };
        let wi = |o: usize, c: usize, a: usize, p: usize, q: usize| {
            (((o * ci + c) * 3 + a) * 3 + p) * 3 + q
        };
        let mut out = vec![0f32; b * co * t * h * w];
        for bb in 0..b {
            for o in 0..co {
                for tt in 0..t {
                    for y in 0..h {
                        for xx in 0..w {
                            let mut s = f64::from(bias[o]);
                            for c in 0..ci {
                                for a in 0..3 {
                                    for p in 0..3 {
                                        for q in 0..3 {
                                            let (st, sy, sx) = (
                                                (tt + a).checked_sub(1),
                                                (y + p).checked_sub(1),
                                                (xx + q).checked_sub(1),
                                            );
                                            if let (Some(st), Some(sy), Some(sx)) = (st, sy, sx)
                                                && st < t
                                                && sy < h
                                                && sx < w
                                            {
                                                s += f64::from(x[xi(bb, c, st, sy, sx)])
                                                    * f64::from(wt[wi(o, c, a, p, q)]);
                                            }
                                        }
                                    }
                                }
                            }
                            out[(((bb * co + o) * t + tt) * h + y) * w + xx] = s as f32;
                        }
                    }
                }
            }
        }
        out
    }

    fn check(b: usize, ci: usize, co: usize, t: usize, h: usize, w: usize) {
        let dev = Device::Cpu;
        let x = Tensor::randn(0f32, 1f32, (b, ci, t, h, w), &dev).expect("x");
        let wt = Tensor::randn(0f32, 0.3f32, (co, ci, 3, 3, 3), &dev).expect("w");
        let bias = Tensor::randn(0f32, 1f32, co, &dev).expect("b");
        let conv = Conv3d::new(wt.clone(), Some(bias.clone())).expect("conv");
        let got = conv.forward(&x).expect("forward");
        assert_eq!(got.dims(), &[b, co, t, h, w]);
        let flat = |t: &Tensor| {
            t.flatten_all()
                .and_then(|t| t.to_vec1::<f32>())
                .expect("vec")
        };
        let want = naive(&flat(&x), (b, ci, t, h, w), &flat(&wt), &flat(&bias), co);
        let max = flat(&got)
            .iter()
            .zip(&want)
            .map(|(g, w)| (g - w).abs())
            .fold(0f32, f32::max);
        assert!(max < 1e-5, "max error {max} for b{b} ci{ci} co{co} t{t}");
    }

    #[test]
    fn matches_the_naive_definition() {
        check(2, 3, 4, 5, 6, 7);
        check(1, 2, 3, 2, 4, 5);
        // One frame: only the middle tap sees data.
        check(1, 3, 2, 1, 5, 4);
    }

    #[test]
    fn frame_major_equals_pytorch_layout() {
        let dev = Device::Cpu;
        let (b, c, t, h, w) = (2, 3, 4, 5, 5);
        let x = Tensor::randn(0f32, 1f32, (b, c, t, h, w), &dev).expect("x");
        let wt = Tensor::randn(0f32, 0.3f32, (2, c, 3, 3, 3), &dev).expect("w");
        let conv = Conv3d::new(wt, None).expect("conv");
        let frames = x
            .permute((0, 2, 1, 3, 4))
            .and_then(|t| t.contiguous())
            .and_then(|f| f.reshape((b * t, c, h, w)))
            .expect("frames");
        let fm = conv.forward_frames(&frames, t).expect("frame-major");
        let pt = conv
            .forward(&x)
            .and_then(|y| y.permute((0, 2, 1, 3, 4)))
            .and_then(|y| y.contiguous())
            .and_then(|y| y.reshape((b * t, 2, h, w)))
            .expect("pytorch layout");
        let d = (fm - pt)
            .and_then(|d| d.abs())
            .and_then(|d| d.max_all())
            .and_then(|d| d.to_scalar::<f32>())
            .expect("diff");
        assert_eq!(d, 0.0);
        assert!(conv.forward_frames(&frames, 3).is_err(), "8 is not 3k");
    }

    #[test]
    fn bad_shapes_are_errors() {
        let dev = Device::Cpu;
        let w = Tensor::zeros((2, 3, 3, 3, 1), DType::F32, &dev).expect("w");
        assert!(Conv3d::new(w, None).is_err());
        let w = Tensor::zeros((2, 3, 3, 3, 3), DType::F32, &dev).expect("w");
        let b = Tensor::zeros(3, DType::F32, &dev).expect("b");
        assert!(Conv3d::new(w.clone(), Some(b)).is_err());
        let conv = Conv3d::new(w, None).expect("conv");
        let x = Tensor::zeros((1, 2, 2, 4, 4), DType::F32, &dev).expect("x");
        assert!(conv.forward(&x).is_err());
    }

    #[test]
    fn gradients_reach_weight_bias_and_input() {
        let dev = Device::Cpu;
        let varmap = VarMap::new();
        let vb = VarBuilder::from_varmap(&varmap, DType::F32, &dev);
        let conv = Conv3d::build(2, 3, vb).expect("conv");
        let x = Var::from_tensor(&Tensor::randn(0f32, 1f32, (1, 2, 3, 4, 4), &dev).expect("x"))
            .expect("var");
        let loss = conv
            .forward(x.as_tensor())
            .and_then(|y| y.sqr())
            .and_then(|y| y.sum_all())
            .expect("loss");
        let grads = loss.backward().expect("backward");
        let data = varmap.data().lock().expect("lock");
        for name in ["weight", "bias"] {
            let v = data.get(name).expect("variable");
            let g = grads.get(v.as_tensor()).expect("gradient");
            assert_eq!(g.dims(), v.dims());
            let s = g
                .abs()
                .and_then(|g| g.sum_all())
                .and_then(|g| g.to_scalar::<f32>())
                .expect("sum");
            assert!(s > 0.0, "zero gradient for {name}");
        }
        let gx = grads.get(x.as_tensor()).expect("input gradient");
        assert_eq!(gx.dims(), x.dims());
        // Finite-difference check of one weight element: d(sum y^2)/dw.
        let wvar = data.get("weight").expect("weight");
        let g = grads
            .get(wvar.as_tensor())
            .and_then(|g| g.flatten_all().ok())
            .and_then(|g| g.to_vec1::<f32>().ok())
            .expect("grad");
        let base = wvar
            .flatten_all()
            .and_then(|t| t.to_vec1::<f32>())
            .expect("w");
        let idx = 4; // centre of tap 0 (looks back), so the temporal shift is exercised
        let eps = 1e-2f32;
        let loss_at = |delta: f32| {
            let mut w = base.clone();
            w[idx] += delta;
            let wt = Tensor::from_vec(w, wvar.shape(), &dev).expect("w");
            let c = Conv3d::new(wt, conv.bias().cloned()).expect("conv");
            c.forward(x.as_tensor())
                .and_then(|y| y.sqr())
                .and_then(|y| y.sum_all())
                .and_then(|y| y.to_scalar::<f32>())
                .expect("loss")
        };
        let fd = (loss_at(eps) - loss_at(-eps)) / (2.0 * eps);
        assert!(
            (fd - g[idx]).abs() <= 1e-2 * fd.abs().max(1.0),
            "finite difference {fd} vs backward {}",
            g[idx]
        );
    }
}

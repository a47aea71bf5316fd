//! Fast CPU convolutions and GroupNorm for our models, for inference and training.
//!
//! candle 0.11's CPU conv2d runs one multi-threaded gemm per image; with our small channel
//! counts (8–128) over big images its threads spend their time in barriers, and its backward
//! goes through a naive `conv_transpose2d`. [`conv2d_fast`] instead runs tiled im2col +
//! single-threaded gemm calls, parallel over (image, tile of output rows), for the forward and
//! both gradients, with no full-size column tensor (see [`kernels`]); 3×3 convs, most of ours,
//! run on [`direct`] kernels instead where the CPU has AVX2 (forward, input gradient) or
//! AVX-512 (the weight gradient too). [`gn`] fuses GroupNorm
//! with the SiLU/ReLU after it.
//!
//! [`FastConv2d`] mirrors `candle_nn::Conv2d` (same `weight`/`bias` names and layout) and
//! [`FusedGroupNorm`] `candle_nn::GroupNorm`. Both take the fast ops for f32 tensors on the
//! CPU (convs: dilation 1, groups 1) and candle's ops otherwise. A thread can switch the fast
//! ops off ([`set_enabled`]) to get candle's reference results, which tests and the
//! benchmark compare against; results differ from candle's only by float rounding.

mod direct;
mod gn;
mod kernels;
mod shuffle;

use std::cell::Cell;

use candle_core::{DType, Module, Result, Tensor, bail};
use candle_nn::{Conv2d, Conv2dConfig, VarBuilder};

pub use gn::{Activation, FusedGroupNorm, group_norm, group_norm_act};
use kernels::{Conv, ConvGeom, Upsample2x};

thread_local! {
    /// Per-thread switch for the fast ops. On by default; a thread-local, so switching it off
    /// for a reference run cannot change what other threads, or parallel tests, compute.
    static ENABLED: Cell<bool> = const { Cell::new(true) };
}

/// Turns the fast conv/GroupNorm/upsample ops on or off for calls made on this thread; returns
/// the previous setting. Off gives candle's own ops (the reference the fast ones are tested
/// and benchmarked against).
pub fn set_enabled(on: bool) -> bool {
    ENABLED.with(|e| e.replace(on))
}

/// Whether the fast ops are on for this thread (see [`set_enabled`]).
pub fn enabled() -> bool {
    ENABLED.with(|e| e.get())
}

/// conv2d (dilation 1, groups 1) with the fast CPU kernels: `x` `[B, C, H, W]`, `weight`
/// `[Cout, C, kh, kw]`, `bias` `[Cout]`; CPU f32 only (see [`conv2d`] for the dispatching
/// version). Differentiable in all three.
pub fn conv2d_fast(
    x: &Tensor,
    weight: &Tensor,
    bias: Option<&Tensor>,
    padding: usize,
    stride: usize,
) -> Result<Tensor> {
    let (_, c, h, w) = x.dims4()?;
    let (c_out, c_in, kh, kw) = weight.dims4()?;
    if c != c_in {
        bail!(
            "fastconv: input has {c} channels, weight {:?} expects {c_in}",
            weight.dims()
        );
    }
    let f32_cpu = |t: &Tensor| t.device().is_cpu() && t.dtype() == DType::F32;
    if !f32_cpu(x) || !f32_cpu(weight) || !bias.is_none_or(f32_cpu) {
        bail!("fastconv: the fast conv is for f32 tensors on the CPU");
    }
    let op = Conv(ConvGeom::new(c, c_out, h, w, kh, kw, stride, padding)?);
    let (x, weight) = (x.contiguous()?, weight.contiguous()?);
    match bias {
        Some(b) => {
            if b.dims1()? != c_out {
                bail!("fastconv: bias {:?} for {c_out} output channels", b.dims());
            }
            x.apply_op3(&weight, &b.contiguous()?, op)
        }
        None => x.apply_op2(&weight, op),
    }
}

/// Whether [`conv2d`] would take the fast path for these tensors.
fn fast_applies(x: &Tensor, weight: &Tensor, dilation: usize, groups: usize) -> bool {
    enabled()
        && dilation == 1
        && groups == 1
        && x.device().is_cpu()
        && x.dtype() == DType::F32
        && weight.dtype() == DType::F32
}

/// Drop-in for `Tensor::conv2d`: the fast path on the CPU in f32, candle's conv2d otherwise
/// (other devices, dtypes, dilation, groups, or switched off).
pub fn conv2d(
    x: &Tensor,
    weight: &Tensor,
    padding: usize,
    stride: usize,
    dilation: usize,
    groups: usize,
) -> Result<Tensor> {
    if fast_applies(x, weight, dilation, groups) {
        conv2d_fast(x, weight, None, padding, stride)
    } else {
        x.conv2d(weight, padding, stride, dilation, groups)
    }
}

/// `candle_nn::Conv2d` on the fast kernels (see the module docs). Same weight layout
/// `[Cout, Cin/groups, kh, kw]` and optional bias `[Cout]`.
#[derive(Debug, Clone)]
pub struct FastConv2d {
    weight: Tensor,
    bias: Option<Tensor>,
    config: Conv2dConfig,
}

impl FastConv2d {
    /// Wraps existing tensors, like `candle_nn::Conv2d::new`.
    pub fn new(weight: Tensor, bias: Option<Tensor>, config: Conv2dConfig) -> Self {
        Self {
            weight,
            bias,
            config,
        }
    }

    /// The weight `[Cout, Cin/groups, kh, kw]`.
    pub fn weight(&self) -> &Tensor {
        &self.weight
    }

    /// The bias `[Cout]`, if any.
    pub fn bias(&self) -> Option<&Tensor> {
        self.bias.as_ref()
    }

    /// Padding, stride, dilation, groups.
    pub fn config(&self) -> &Conv2dConfig {
        &self.config
    }
}

impl From<Conv2d> for FastConv2d {
    fn from(c: Conv2d) -> Self {
        Self::new(c.weight().clone(), c.bias().cloned(), *c.config())
    }
}

impl Module for FastConv2d {
    fn forward(&self, x: &Tensor) -> Result<Tensor> {
        let cfg = &self.config;
        let bias_ok = self
            .bias
            .as_ref()
            .is_none_or(|b| b.dtype() == DType::F32 && b.device().is_cpu());
        if bias_ok && fast_applies(x, &self.weight, cfg.dilation, cfg.groups) {
            return conv2d_fast(x, &self.weight, self.bias.as_ref(), cfg.padding, cfg.stride);
        }
        let y = x.conv2d_with_algo(
            &self.weight,
            cfg.padding,
            cfg.stride,
            cfg.dilation,
            cfg.groups,
            cfg.cudnn_fwd_algo,
        )?;
        match &self.bias {
            Some(bias) => y.broadcast_add(&bias.reshape((1, bias.dims1()?, 1, 1))?),
            None => Ok(y),
        }
    }
}

/// `candle_nn::conv2d` (same names, shapes and initialisation) returning a [`FastConv2d`].
pub fn fast_conv2d(
    c_in: usize,
    c_out: usize,
    kernel: usize,
    cfg: Conv2dConfig,
    vb: VarBuilder,
) -> Result<FastConv2d> {
    Ok(candle_nn::conv2d(c_in, c_out, kernel, cfg, vb)?.into())
}

/// Nearest-neighbour x2 upsampling: the same values as `upsample_nearest2d(2h, 2w)`, as one
/// parallel copy whose backward sums 2×2 blocks (candle differentiates `upsample_nearest2d`
/// with a grouped conv2d, one conv per channel). candle's op when switched off or not CPU f32.
pub fn upsample_nearest2x(x: &Tensor) -> Result<Tensor> {
    let (_, _, h, w) = x.dims4()?;
    if !enabled() || !x.device().is_cpu() || x.dtype() != DType::F32 {
        return x.upsample_nearest2d(2 * h, 2 * w);
    }
    x.contiguous()?.apply_op1(Upsample2x)
}

/// PyTorch's `pixel_unshuffle`: `[B, C, H, W]` to `[B, C·r², H/r, W/r]` (H, W multiples of
/// r), channel `c·r² + dy·r + dx` holding sub-pixel `(dy, dx)`; identity for r = 1. One copy
/// on the CPU in f32 (see [`shuffle`]), candle's reshape + permute otherwise.
pub fn space_to_depth(x: &Tensor, r: usize) -> Result<Tensor> {
    pixel_shuffle(x, r, true)
}

/// The inverse of [`space_to_depth`] (PyTorch's `pixel_shuffle`).
pub fn depth_to_space(x: &Tensor, r: usize) -> Result<Tensor> {
    pixel_shuffle(x, r, false)
}

fn pixel_shuffle(x: &Tensor, r: usize, to_depth: bool) -> Result<Tensor> {
    if r == 1 {
        return Ok(x.clone());
    }
    let (b, c, h, w) = x.dims4()?;
    if enabled() && x.device().is_cpu() && x.dtype() == DType::F32 {
        return x.contiguous()?.apply_op1(shuffle::Shuffle { r, to_depth });
    }
    if to_depth {
        x.reshape((b, c, h / r, r, w / r, r))?
            .permute((0, 1, 3, 5, 2, 4))?
            .contiguous()?
            .reshape((b, c * r * r, h / r, w / r))
    } else {
        let co = c / (r * r);
        x.reshape((b, co, r, r, h, w))?
            .permute((0, 1, 4, 2, 5, 3))?
            .contiguous()?
            .reshape((b, co, h * r, w * r))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use candle_core::{Device, Var};
    use candle_nn::VarMap;

    fn rand(shape: &[usize], seed: u64) -> Tensor {
        // Small deterministic LCG so failures reproduce.
        let n: usize = shape.iter().product();
        let mut s = seed
            .wrapping_mul(6364136223846793005)
            .wrapping_add(1442695040888963407);
        let v: Vec<f32> = (0..n)
            .map(|_| {
                s = s
                    .wrapping_mul(6364136223846793005)
                    .wrapping_add(1442695040888963407);
                ((s >> 40) as f32 / (1u64 << 24) as f32) * 2.0 - 1.0
            })
            .collect();
        Tensor::from_vec(v, shape, &Device::Cpu).expect("tensor")
    }

    fn max_rel(a: &Tensor, b: &Tensor) -> f32 {
        assert_eq!(a.dims(), b.dims());
        let diff = (a - b)
            .expect("sub")
            .abs()
            .expect("abs")
            .flatten_all()
            .expect("flat")
            .max(0)
            .expect("max")
            .to_scalar::<f32>()
            .expect("scalar");
        let scale = b
            .abs()
            .expect("abs")
            .flatten_all()
            .expect("flat")
            .max(0)
            .expect("max")
            .to_scalar::<f32>()
            .expect("scalar");
        diff / scale.max(1e-6)
    }

    /// (batch, c_in, c_out, h, w, k, stride, padding)
    type Case = (usize, usize, usize, usize, usize, usize, usize, usize);

    const SHAPES: [Case; 14] = [
        (2, 3, 5, 9, 7, 3, 1, 1),
        (3, 3, 5, 9, 7, 3, 1, 1),
        (3, 4, 5, 17, 13, 3, 1, 1),
        (1, 3, 4, 15, 11, 3, 2, 1),
        (3, 5, 3, 12, 9, 1, 1, 0),
        (3, 2, 3, 11, 9, 3, 2, 0),
        (1, 2, 3, 2, 2, 3, 1, 1),
        (2, 3, 5, 9, 7, 3, 2, 1),
        (1, 4, 6, 8, 8, 3, 1, 0),
        (2, 4, 6, 8, 8, 3, 2, 0),
        (2, 6, 4, 5, 7, 1, 1, 0),
        (1, 6, 4, 6, 6, 1, 2, 0),
        (1, 2, 3, 6, 5, 1, 1, 1),
        (2, 3, 2, 7, 7, 5, 2, 2),
    ];

    /// Forward only: candle's own conv2d backward takes the output padding of the height for
    /// the width too, so it fails on this shape (ours does not; see `odd_width_backward_works`).
    const ODD: Case = (2, 3, 2, 7, 6, 5, 2, 2);

    #[test]
    fn forward_matches_candle() {
        for (seed, &(b, ci, co, h, w, k, s, p)) in SHAPES.iter().chain([&ODD]).enumerate() {
            let seed = seed as u64;
            let x = rand(&[b, ci, h, w], 10 + seed);
            let wt = rand(&[co, ci, k, k], 20 + seed);
            let bias = rand(&[co], 30 + seed);
            let want = x
                .conv2d(&wt, p, s, 1, 1)
                .expect("conv")
                .broadcast_add(&bias.reshape((1, co, 1, 1)).expect("reshape"))
                .expect("add");
            let got = conv2d_fast(&x, &wt, Some(&bias), p, s).expect("fast conv");
            let err = max_rel(&got, &want);
            assert!(
                err < 1e-5,
                "shape {b}x{ci}x{h}x{w} k{k} s{s} p{p}: rel err {err}"
            );
        }
    }

    #[test]
    fn gradients_match_candle() {
        set_enabled(true);
        for (seed, &(b, ci, co, h, w, k, s, p)) in SHAPES.iter().enumerate() {
            let seed = seed as u64;
            let x = Var::from_tensor(&rand(&[b, ci, h, w], 40 + seed)).expect("var");
            let wt = Var::from_tensor(&rand(&[co, ci, k, k], 50 + seed)).expect("var");
            let bias = Var::from_tensor(&rand(&[co], 60 + seed)).expect("var");
            let conv = FastConv2d::new(
                wt.as_tensor().clone(),
                Some(bias.as_tensor().clone()),
                Conv2dConfig {
                    padding: p,
                    stride: s,
                    ..Default::default()
                },
            );
            // A non-uniform upstream gradient: weight the output by a fixed random tensor.
            let run = |fast: bool| {
                let y = if fast {
                    conv.forward(x.as_tensor()).expect("fast")
                } else {
                    x.conv2d(&wt, p, s, 1, 1)
                        .expect("conv")
                        .broadcast_add(&bias.reshape((1, co, 1, 1)).expect("reshape"))
                        .expect("add")
                };
                let mask = rand(y.dims(), 70 + seed);
                let loss = (y * mask).expect("mul").sum_all().expect("sum");
                let g = loss.backward().expect("backward");
                [x.as_tensor(), wt.as_tensor(), bias.as_tensor()]
                    .map(|t| g.get(t).expect("grad").clone())
            };
            let fast = run(true);
            let slow = run(false);
            for (name, (f, sl)) in ["input", "weight", "bias"]
                .iter()
                .zip(fast.iter().zip(slow.iter()))
            {
                let err = max_rel(f, sl);
                assert!(
                    err < 1e-4,
                    "grad {name}, shape {b}x{ci}x{h}x{w} k{k} s{s} p{p}: rel err {err}"
                );
            }
        }
    }

    #[test]
    fn finite_difference_on_one_weight_and_input() {
        let (p, s) = (1, 2);
        let x0 = rand(&[1, 2, 6, 5], 80).to_dtype(DType::F64).expect("f64");
        let w0 = rand(&[3, 2, 3, 3], 81).to_dtype(DType::F64).expect("f64");
        let mask = rand(&[1, 3, 3, 3], 82);
        let loss = |x: &Tensor, w: &Tensor| -> f64 {
            let y = conv2d_fast(
                &x.to_dtype(DType::F32).expect("f32"),
                &w.to_dtype(DType::F32).expect("f32"),
                None,
                p,
                s,
            )
            .expect("conv");
            (y * &mask)
                .expect("mul")
                .sum_all()
                .expect("sum")
                .to_dtype(DType::F64)
                .expect("f64")
                .to_scalar::<f64>()
                .expect("scalar")
        };
        let x = Var::from_tensor(&x0.to_dtype(DType::F32).expect("f32")).expect("var");
        let w = Var::from_tensor(&w0.to_dtype(DType::F32).expect("f32")).expect("var");
        let y = conv2d_fast(x.as_tensor(), w.as_tensor(), None, p, s).expect("conv");
        let grads = (y * &mask)
            .expect("mul")
            .sum_all()
            .expect("sum")
            .backward()
            .expect("bwd");
        let eps = 1e-2;
        let bump = |t: &Tensor, idx: usize, d: f64| -> Tensor {
            let mut v = t
                .flatten_all()
                .expect("flat")
                .to_vec1::<f64>()
                .expect("vec");
            v[idx] += d;
            Tensor::from_vec(v, t.dims(), &Device::Cpu).expect("tensor")
        };
        // Weight element (1, 0, 2, 1) and input element (0, 1, 0, 0) (a padded border pixel).
        let wi = 9 * 2 + 2 * 3 + 1;
        let num_w = (loss(&x0, &bump(&w0, wi, eps)) - loss(&x0, &bump(&w0, wi, -eps))) / (2. * eps);
        let an_w = grads
            .get(w.as_tensor())
            .expect("grad w")
            .flatten_all()
            .expect("flat")
            .to_vec1::<f32>()
            .expect("vec")[wi] as f64;
        assert!(
            (num_w - an_w).abs() < 1e-3 * (1.0 + an_w.abs()),
            "weight: {num_w} vs {an_w}"
        );
        let xi = 30;
        let num_x = (loss(&bump(&x0, xi, eps), &w0) - loss(&bump(&x0, xi, -eps), &w0)) / (2. * eps);
        let an_x = grads
            .get(x.as_tensor())
            .expect("grad x")
            .flatten_all()
            .expect("flat")
            .to_vec1::<f32>()
            .expect("vec")[xi] as f64;
        assert!(an_x.abs() > 1e-3, "input grad is trivially zero");
        assert!(
            (num_x - an_x).abs() < 1e-3 * (1.0 + an_x.abs()),
            "input: {num_x} vs {an_x}"
        );
    }

    #[test]
    fn upsample_matches_candle_and_sums_gradients() {
        set_enabled(true);
        let x = Var::from_tensor(&rand(&[2, 3, 4, 5], 110)).expect("var");
        let a = upsample_nearest2x(x.as_tensor()).expect("fast");
        let b = x.upsample_nearest2d(8, 10).expect("candle");
        assert_eq!(
            a.flatten_all().expect("f").to_vec1::<f32>().expect("v"),
            b.flatten_all().expect("f").to_vec1::<f32>().expect("v")
        );
        let mask = rand(a.dims(), 111);
        let ga = (a * &mask)
            .expect("m")
            .sum_all()
            .expect("s")
            .backward()
            .expect("bwd");
        let gb = (b * &mask)
            .expect("m")
            .sum_all()
            .expect("s")
            .backward()
            .expect("bwd");
        let (ga, gb) = (ga.get(&x).expect("ga"), gb.get(&x).expect("gb"));
        assert!(max_rel(ga, gb) < 1e-5);
    }

    #[test]
    fn pixel_shuffles_match_candle_and_their_gradients() {
        for (shape, r) in [
            ([2usize, 3, 4, 6], 2usize),
            ([1, 2, 6, 3], 3),
            ([1, 8, 2, 2], 2),
        ] {
            let x = Var::from_tensor(&rand(&shape, 120)).expect("var");
            let run = |fast: bool, to_depth: bool| {
                let before = set_enabled(fast);
                let y = if to_depth {
                    space_to_depth(x.as_tensor(), r)
                } else {
                    depth_to_space(x.as_tensor(), r)
                };
                set_enabled(before);
                y
            };
            for to_depth in [true, false] {
                let (a, b) = (run(true, to_depth), run(false, to_depth));
                if !to_depth && shape[1] % (r * r) != 0 {
                    assert!(a.is_err() && b.is_err(), "{shape:?} r {r}");
                    continue;
                }
                let (a, b) = (a.expect("fast"), b.expect("candle"));
                assert_eq!(a.dims(), b.dims());
                let flat = |t: &Tensor| t.flatten_all().and_then(|t| t.to_vec1::<f32>());
                assert_eq!(flat(&a).expect("a"), flat(&b).expect("b"));
                let mask = rand(a.dims(), 121);
                let grad = |y: Tensor| {
                    let g = (y * &mask)
                        .and_then(|t| t.sum_all())
                        .and_then(|t| t.backward());
                    g.expect("bwd").get(&x).expect("grad").clone()
                };
                assert_eq!(flat(&grad(a)).expect("ga"), flat(&grad(b)).expect("gb"));
            }
        }
    }

    #[test]
    fn odd_width_backward_matches_exact_differences() {
        // The loss is linear in x, so loss(x + e_i) - loss(x) is exactly d loss / d x_i (up to
        // rounding); the reference uses candle's forward conv only.
        let (b, ci, co, h, w, k, s, p) = ODD;
        let x0 = rand(&[b, ci, h, w], 100);
        let wt = rand(&[co, ci, k, k], 101);
        let x = Var::from_tensor(&x0).expect("var");
        let y = conv2d_fast(x.as_tensor(), &wt, None, p, s).expect("conv");
        let mask = rand(y.dims(), 102);
        let g = (y * &mask)
            .expect("mul")
            .sum_all()
            .expect("sum")
            .backward()
            .expect("bwd");
        let gx = g
            .get(x.as_tensor())
            .expect("grad")
            .flatten_all()
            .expect("flat");
        let gx = gx.to_vec1::<f32>().expect("vec");
        let loss = |v: &[f32]| -> f32 {
            let t = Tensor::from_slice(v, (b, ci, h, w), &Device::Cpu).expect("t");
            let y = t.conv2d(&wt, p, s, 1, 1).expect("conv");
            (y * &mask)
                .expect("mul")
                .sum_all()
                .expect("s")
                .to_scalar::<f32>()
                .expect("s")
        };
        let base = x0
            .flatten_all()
            .expect("flat")
            .to_vec1::<f32>()
            .expect("vec");
        let l0 = loss(&base);
        for (i, &an) in gx.iter().enumerate() {
            let mut v = base.clone();
            v[i] += 1.0;
            let num = loss(&v) - l0;
            assert!(
                (num - an).abs() < 1e-3 * (1.0 + an.abs()),
                "x[{i}]: {num} vs {an}"
            );
        }
    }

    #[test]
    fn switched_off_the_layer_is_candle_bit_for_bit() {
        let x = rand(&[1, 3, 6, 6], 90);
        let conv = FastConv2d::new(
            rand(&[4, 3, 3, 3], 91),
            Some(rand(&[4], 92)),
            Conv2dConfig {
                padding: 1,
                ..Default::default()
            },
        );
        let candle = Conv2d::new(conv.weight().clone(), conv.bias().cloned(), *conv.config());
        let want = candle.forward(&x).expect("candle");
        let bits = |t: &Tensor| t.flatten_all().expect("f").to_vec1::<f32>().expect("v");
        let prev = set_enabled(false);
        let off = conv.forward(&x).expect("off");
        set_enabled(prev);
        assert_eq!(bits(&off), bits(&want));
        // On (the default), the fast kernels: equal up to rounding.
        assert!(enabled());
        let on = conv.forward(&x).expect("on");
        assert!(max_rel(&on, &want) < 1e-5);
        // Other dtypes fall back to candle.
        let x64 = x.to_dtype(DType::F64).expect("f64");
        let c64 = FastConv2d::new(
            conv.weight().to_dtype(DType::F64).expect("f64"),
            None,
            *conv.config(),
        );
        let y64 = c64.forward(&x64).expect("f64 conv");
        assert_eq!(y64.dtype(), DType::F64);
    }

    #[test]
    fn bad_shapes_are_errors_not_panics() {
        let x = rand(&[1, 3, 2, 2], 1);
        let w = rand(&[4, 3, 5, 5], 2);
        assert!(conv2d_fast(&x, &w, None, 0, 1).is_err());
        let w = rand(&[4, 2, 3, 3], 3);
        assert!(conv2d_fast(&x, &w, None, 1, 1).is_err());
        let w = rand(&[4, 3, 3, 3], 4);
        assert!(conv2d_fast(&x, &w, Some(&rand(&[3], 5)), 1, 1).is_err());
        assert!(conv2d_fast(&x, &w, None, 1, 0).is_err());
    }

    /// Fused GroupNorm + activation against candle's GroupNorm then the activation, forward
    /// and the gradients of x, gamma and beta, on 4-D and 3-D inputs.
    #[test]
    fn fused_group_norm_matches_candle() {
        let cases: [(&[usize], usize, Activation); 4] = [
            (&[2, 6, 5, 7], 3, Activation::Silu),
            (&[3, 4, 10], 2, Activation::Relu),
            (&[2, 8, 3, 3], 8, Activation::Identity),
            (&[1, 6, 9, 4], 1, Activation::Silu),
        ];
        for (seed, &(shape, groups, act)) in cases.iter().enumerate() {
            let seed = 200 + 10 * seed as u64;
            let c = shape[1];
            // An offset and scale, so the mean/variance handling matters.
            let x = Var::from_tensor(&((rand(shape, seed) * 3.0).expect("s") + 0.7).expect("o"))
                .expect("var");
            let gamma = Var::from_tensor(&(rand(&[c], seed + 1) + 1.0).expect("g")).expect("var");
            let beta = Var::from_tensor(&rand(&[c], seed + 2)).expect("var");
            let mask = rand(shape, seed + 3);
            let run = |fast: bool| {
                let prev = set_enabled(fast);
                let y =
                    group_norm_act(x.as_tensor(), &gamma, &beta, groups, 1e-5, act).expect("gn");
                set_enabled(prev);
                let g = (&y * &mask)
                    .expect("mul")
                    .sum_all()
                    .expect("sum")
                    .backward()
                    .expect("backward");
                let grads = [x.as_tensor(), gamma.as_tensor(), beta.as_tensor()]
                    .map(|t| g.get(t).expect("grad").clone());
                (y, grads)
            };
            let (yf, gf) = run(true);
            let (ys, gs) = run(false);
            let err = max_rel(&yf, &ys);
            assert!(err < 1e-5, "{shape:?} {act:?}: forward rel err {err}");
            for (name, (f, sl)) in ["x", "gamma", "beta"].iter().zip(gf.iter().zip(&gs)) {
                let err = max_rel(f, sl);
                assert!(err < 1e-4, "{shape:?} {act:?}: grad {name} rel err {err}");
            }
        }
    }

    #[test]
    fn fused_group_norm_layer_keeps_names_and_checks_groups() {
        let varmap = VarMap::new();
        let vb = VarBuilder::from_varmap(&varmap, DType::F32, &Device::Cpu);
        let gn = group_norm(2, 4, 1e-5, vb.pp("norm1")).expect("gn");
        let mut names: Vec<String> = varmap
            .data()
            .lock()
            .expect("lock")
            .keys()
            .cloned()
            .collect();
        names.sort();
        assert_eq!(names, ["norm1.bias", "norm1.weight"]);
        // Fresh: weight 1, bias 0, so each group comes out with mean 0 and variance ~1.
        let x = (rand(&[1, 4, 6, 6], 7) * 5.0).expect("x");
        let y = gn.forward(&x).expect("forward");
        let g0 = y.narrow(1, 0, 2).expect("group").flatten_all().expect("f");
        let mean = g0.mean_all().expect("m").to_scalar::<f32>().expect("s");
        let var = g0
            .sqr()
            .expect("sq")
            .mean_all()
            .expect("m")
            .to_scalar::<f32>()
            .expect("s");
        assert!(
            mean.abs() < 1e-5 && (var - 1.0).abs() < 1e-3,
            "{mean} {var}"
        );
        assert!(FusedGroupNorm::new(rand(&[6], 1), rand(&[6], 2), 4, 1e-5).is_err());
        // A non-contiguous input works too.
        let xt = rand(&[1, 6, 4, 4], 8).transpose(2, 3).expect("t");
        let gn3 = FusedGroupNorm::new(rand(&[4], 3), rand(&[4], 4), 2, 1e-5).expect("gn");
        let xt = xt.narrow(1, 0, 4).expect("narrow");
        let a = gn3.forward_act(&xt, Activation::Silu).expect("fast");
        let prev = set_enabled(false);
        let b = gn3.forward_act(&xt, Activation::Silu).expect("candle");
        set_enabled(prev);
        assert!(max_rel(&a, &b) < 1e-5);
    }
}

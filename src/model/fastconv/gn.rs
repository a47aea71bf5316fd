//! GroupNorm fused with the activation that follows it (SiLU or ReLU), as one CPU op with a
//! hand-written backward.
//!
//! Why: candle builds GroupNorm from ~10 tensor ops (mean, sub, sqr, mean, div, mul, add, then
//! SiLU's exp/div), each a full pass over the activations plus its own backward nodes; at
//! 256² × 64 channels that memory traffic costs as much as the convs. Here the forward is two
//! reads and one write, the backward three reads and one write, parallel over (image, group).
//!
//! Maths (per image and group, `N` elements, `x̂ = (x − μ)·r`, `r = 1/√(σ² + ε)`,
//! `z = γ_c x̂ + β_c`, `y = act(z)`, `gz = gy · act'(z)`):
//! `gβ_c = Σ gz`, `gγ_c = Σ gz·x̂`, `gx = r·(γ_c gz − A/N − x̂·B/N)` with `A = Σ γ_c gz`,
//! `B = Σ γ_c gz x̂` over the group.

use candle_core::{CpuStorage, CustomOp3, DType, Layout, Module, Result, Shape, Tensor, bail};
use candle_nn::VarBuilder;

use super::kernels::{SendPtr, contiguous_f32, has_avx2, run_tasks};

/// The activation fused after the norm.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Activation {
    /// The norm alone.
    Identity,
    /// `z · sigmoid(z)`.
    Silu,
    /// `max(z, 0)`.
    Relu,
}

/// `e^x` to within a few ulp, in plain arithmetic the compiler can vectorise: libm's `expf`
/// is a scalar call, and SiLU's exp was 5 % of `ildiff matte`'s CPU time in `perf`. `x` is
/// clamped to [−87, 88] (the normal f32 range of the result); NaN stays NaN.
#[inline(always)]
fn fast_exp(x: f32) -> f32 {
    const LOG2E: f32 = std::f32::consts::LOG2_E;
    // ln 2 split in two, so n·ln 2 is subtracted without rounding error.
    const LN2_HI: f32 = 0.693_145_75;
    const LN2_LO: f32 = 1.428_606_8e-6;
    // 1.5 · 2^23: adding it rounds to the nearest integer in the low mantissa bits.
    const ROUND: f32 = 12_582_912.0;
    let x = x.clamp(-87.0, 88.0);
    let t = x * LOG2E + ROUND;
    let n = t - ROUND;
    let r = (x - n * LN2_HI) - n * LN2_LO;
    // Taylor to degree 7 on |r| ≤ ln 2 / 2: the remainder is below 6e-9.
    let p = 1.0
        + r * (1.0
            + r * (0.5
                + r * (1.0 / 6.0
                    + r * (1.0 / 24.0
                        + r * (1.0 / 120.0 + r * (1.0 / 720.0 + r * (1.0 / 5040.0)))))));
    // n read back from t's mantissa as an integer: `n as i32` is a saturating conversion
    // whose checks kept the loop scalar. |n| ≤ 126, so t's exponent is ROUND's.
    let n_int = (t.to_bits() as i32).wrapping_sub(ROUND.to_bits() as i32);
    let scale = f32::from_bits((n_int.wrapping_add(127) as u32) << 23);
    p * scale
}

/// `ys = act(xs · scale + shift)`: the forward's one write pass. The activation is matched
/// once per row, not per element, so each arm is a straight loop that vectorises; on AVX2
/// CPUs it runs eight lanes wide (same arithmetic, so the same results as the SSE2 build).
fn norm_act_row(act: Activation, xs: &[f32], ys: &mut [f32], scale: f32, shift: f32) {
    #[cfg(target_arch = "x86_64")]
    if has_avx2(false) {
        // SAFETY: the CPU has AVX2 (checked above).
        unsafe { norm_act_row_avx2(act, xs, ys, scale, shift) };
        return;
    }
    norm_act_row_any(act, xs, ys, scale, shift);
}

#[cfg(target_arch = "x86_64")]
#[target_feature(enable = "avx2")]
fn norm_act_row_avx2(act: Activation, xs: &[f32], ys: &mut [f32], scale: f32, shift: f32) {
    norm_act_row_any(act, xs, ys, scale, shift);
}

#[inline(always)]
fn norm_act_row_any(act: Activation, xs: &[f32], ys: &mut [f32], scale: f32, shift: f32) {
    let pairs = ys.iter_mut().zip(xs);
    match act {
        Activation::Identity => pairs.for_each(|(o, &v)| *o = v * scale + shift),
        Activation::Silu => pairs.for_each(|(o, &v)| {
            let z = v * scale + shift;
            *o = z / (1.0 + fast_exp(-z));
        }),
        Activation::Relu => pairs.for_each(|(o, &v)| *o = (v * scale + shift).max(0.0)),
    }
}

impl Activation {
    #[inline(always)]
    fn derivative(self, z: f32) -> f32 {
        match self {
            Activation::Identity => 1.0,
            Activation::Silu => {
                let s = 1.0 / (1.0 + fast_exp(-z));
                s * (1.0 + z * (1.0 - s))
            }
            Activation::Relu => {
                if z > 0.0 {
                    1.0
                } else {
                    0.0
                }
            }
        }
    }

    /// The unfused candle version, for the reference path.
    fn apply_tensor(self, t: Tensor) -> Result<Tensor> {
        match self {
            Activation::Identity => Ok(t),
            Activation::Silu => t.silu(),
            Activation::Relu => t.relu(),
        }
    }
}

/// The backward's first pass over one channel: `gz = gy · act'(γ·x̂ + β)` into `gx`, and the
/// sums of `gz` and `gz·x̂` (`p` = mean, 1/σ, γ, β). Like the forward, the activation is
/// matched once per row and the sums run in 8 lanes per block of 4096 (blocks added in f64),
/// so the loop vectorises; eight lanes wide on AVX2 CPUs.
fn bwd_row(act: Activation, xs: &[f32], gy: &[f32], gx: &mut [f32], p: [f32; 4]) -> (f64, f64) {
    #[cfg(target_arch = "x86_64")]
    if has_avx2(false) {
        // SAFETY: the CPU has AVX2 (checked above).
        return unsafe { bwd_row_avx2(act, xs, gy, gx, p) };
    }
    bwd_row_any(act, xs, gy, gx, p)
}

#[cfg(target_arch = "x86_64")]
#[target_feature(enable = "avx2")]
fn bwd_row_avx2(
    act: Activation,
    xs: &[f32],
    gy: &[f32],
    gx: &mut [f32],
    p: [f32; 4],
) -> (f64, f64) {
    bwd_row_any(act, xs, gy, gx, p)
}

#[inline(always)]
fn bwd_row_any(act: Activation, xs: &[f32], gy: &[f32], gx: &mut [f32], p: [f32; 4]) -> (f64, f64) {
    // Each arm passes a constant, so `derivative`'s match folds away inside the loop.
    match act {
        Activation::Identity => bwd_row_with(xs, gy, gx, p, |z| Activation::Identity.derivative(z)),
        Activation::Silu => bwd_row_with(xs, gy, gx, p, |z| Activation::Silu.derivative(z)),
        Activation::Relu => bwd_row_with(xs, gy, gx, p, |z| Activation::Relu.derivative(z)),
    }
}

#[inline(always)]
fn bwd_row_with(
    xs: &[f32],
    gy: &[f32],
    gx: &mut [f32],
    [mean, rstd, g, bt]: [f32; 4],
    d: impl Fn(f32) -> f32,
) -> (f64, f64) {
    let (mut sgz, mut sgzx) = (0f64, 0f64);
    for ((xb, gyb), gxb) in xs
        .chunks(4096)
        .zip(gy.chunks(4096))
        .zip(gx.chunks_mut(4096))
    {
        let (mut s1, mut s2) = ([0f32; 8], [0f32; 8]);
        let mut lanes = xb
            .chunks_exact(8)
            .zip(gyb.chunks_exact(8))
            .zip(gxb.chunks_exact_mut(8));
        for ((xv, gv), ov) in &mut lanes {
            for l in 0..8 {
                let xh = (xv[l] - mean) * rstd;
                let gz = gv[l] * d(g * xh + bt);
                ov[l] = gz;
                s1[l] += gz;
                s2[l] += gz * xh;
            }
        }
        let done = xb.len() / 8 * 8;
        let (mut t1, mut t2) = (0f32, 0f32);
        for ((&v, &gv), o) in xb[done..].iter().zip(&gyb[done..]).zip(&mut gxb[done..]) {
            let xh = (v - mean) * rstd;
            let gz = gv * d(g * xh + bt);
            *o = gz;
            t1 += gz;
            t2 += gz * xh;
        }
        sgz += f64::from(s1.iter().sum::<f32>() + t1);
        sgzx += f64::from(s2.iter().sum::<f32>() + t2);
    }
    (sgz, sgzx)
}

/// Sum of `f(v)` over `xs`, in 8 f32 lanes per block of 4096, blocks added in f64: vectorises,
/// and loses little precision even at 128 × 512² elements.
#[inline(always)]
fn sum_by(xs: &[f32], f: impl Fn(f32) -> f32) -> f64 {
    let mut total = 0f64;
    for block in xs.chunks(4096) {
        let mut acc = [0f32; 8];
        let mut it = block.chunks_exact(8);
        for c in &mut it {
            for (a, &v) in acc.iter_mut().zip(c) {
                *a += f(v);
            }
        }
        let tail: f32 = it.remainder().iter().map(|&v| f(v)).sum();
        total += f64::from(acc.iter().sum::<f32>() + tail);
    }
    total
}

/// Mean and `1/√(var + eps)` of one group (two passes, like candle's GroupNorm), eight lanes
/// wide on AVX2 CPUs (the lanes are explicit, so the sums are the same either way).
fn stats(xs: &[f32], eps: f64) -> (f32, f32) {
    #[cfg(target_arch = "x86_64")]
    if has_avx2(false) {
        // SAFETY: the CPU has AVX2 (checked above).
        return unsafe { stats_avx2(xs, eps) };
    }
    stats_any(xs, eps)
}

#[cfg(target_arch = "x86_64")]
#[target_feature(enable = "avx2")]
fn stats_avx2(xs: &[f32], eps: f64) -> (f32, f32) {
    stats_any(xs, eps)
}

#[inline(always)]
fn stats_any(xs: &[f32], eps: f64) -> (f32, f32) {
    let n = xs.len().max(1) as f64;
    let mean = sum_by(xs, |v| v) / n;
    let m = mean as f32;
    let var = sum_by(xs, |v| (v - m) * (v - m)) / n;
    (m, (1.0 / (var + eps).sqrt()) as f32)
}

/// Shape facts of one GroupNorm call: batch, channels, channels per group, elements per
/// channel.
#[derive(Debug, Clone, Copy)]
struct Dims {
    b: usize,
    c: usize,
    cg: usize,
    s: usize,
}

fn dims(l: &Layout, groups: usize) -> Result<Dims> {
    let d = l.dims();
    if d.len() < 3 {
        bail!("fused GroupNorm: input rank must be at least 3, got {d:?}");
    }
    let (b, c) = (d[0], d[1]);
    if groups == 0 || c % groups != 0 {
        bail!("fused GroupNorm: {groups} groups do not divide {c} channels");
    }
    Ok(Dims {
        b,
        c,
        cg: c / groups,
        s: d[2..].iter().product(),
    })
}

/// Forward: (x, gamma, beta) to `act(GroupNorm(x))`.
#[derive(Debug, Clone, Copy)]
struct GnFwd {
    groups: usize,
    eps: f64,
    act: Activation,
}

/// Backward: (x, `[gamma; beta]`, gy) to one flat tensor `[gx…, gγ…, gβ…]`.
#[derive(Debug, Clone, Copy)]
struct GnBwd(GnFwd);

impl CustomOp3 for GnFwd {
    fn name(&self) -> &'static str {
        "fastconv-groupnorm"
    }

    fn cpu_fwd(
        &self,
        s1: &CpuStorage,
        l1: &Layout,
        s2: &CpuStorage,
        l2: &Layout,
        s3: &CpuStorage,
        l3: &Layout,
    ) -> Result<(CpuStorage, Shape)> {
        let d = dims(l1, self.groups)?;
        let x = contiguous_f32(s1, l1, "fused GroupNorm input")?;
        let gamma = contiguous_f32(s2, l2, "fused GroupNorm weight")?;
        let beta = contiguous_f32(s3, l3, "fused GroupNorm bias")?;
        if gamma.len() != d.c || beta.len() != d.c {
            bail!(
                "fused GroupNorm: weight/bias have {}/{} entries for {} channels",
                gamma.len(),
                beta.len(),
                d.c
            );
        }
        let block = d.cg * d.s;
        let mut y = vec![0f32; x.len()];
        let yp = SendPtr(y.as_mut_ptr());
        let act = self.act;
        run_tasks(
            d.b * self.groups,
            x.len() * 4,
            || (),
            |_, task| {
                let xs = &x[task * block..(task + 1) * block];
                // SAFETY: block `task` of the output is this task's alone.
                let ys =
                    unsafe { std::slice::from_raw_parts_mut(yp.get().add(task * block), block) };
                let (mean, rstd) = stats(xs, self.eps);
                let c0 = (task % self.groups) * d.cg;
                for (k, (xc, yc)) in xs
                    .chunks_exact(d.s)
                    .zip(ys.chunks_exact_mut(d.s))
                    .enumerate()
                {
                    let scale = gamma[c0 + k] * rstd;
                    let shift = beta[c0 + k] - mean * scale;
                    norm_act_row(act, xc, yc, scale, shift);
                }
            },
        );
        Ok((CpuStorage::F32(y), l1.shape().clone()))
    }

    fn bwd(
        &self,
        x: &Tensor,
        gamma: &Tensor,
        beta: &Tensor,
        _res: &Tensor,
        grad: &Tensor,
    ) -> Result<(Option<Tensor>, Option<Tensor>, Option<Tensor>)> {
        let params = Tensor::cat(&[gamma, beta], 0)?;
        let flat = x.apply_op3_no_bwd(&params, &grad.contiguous()?, &GnBwd(*self))?;
        let (n, c) = (x.elem_count(), gamma.elem_count());
        let pick = |t: &Tensor, start: usize, len: usize| -> Result<Option<Tensor>> {
            if t.track_op() {
                Ok(Some(flat.narrow(0, start, len)?.reshape(t.shape())?))
            } else {
                Ok(None)
            }
        };
        Ok((pick(x, 0, n)?, pick(gamma, n, c)?, pick(beta, n + c, c)?))
    }
}

impl CustomOp3 for GnBwd {
    fn name(&self) -> &'static str {
        "fastconv-groupnorm-backward"
    }

    fn cpu_fwd(
        &self,
        s1: &CpuStorage,
        l1: &Layout,
        s2: &CpuStorage,
        l2: &Layout,
        s3: &CpuStorage,
        l3: &Layout,
    ) -> Result<(CpuStorage, Shape)> {
        let GnBwd(GnFwd { groups, eps, act }) = *self;
        let d = dims(l1, groups)?;
        let x = contiguous_f32(s1, l1, "fused GroupNorm input")?;
        let params = contiguous_f32(s2, l2, "fused GroupNorm parameters")?;
        let gy = contiguous_f32(s3, l3, "fused GroupNorm gradient")?;
        if params.len() != 2 * d.c || gy.len() != x.len() {
            bail!("fused GroupNorm backward: mismatched parameter or gradient sizes");
        }
        let (gamma, beta) = params.split_at(d.c);
        let (n, block) = (x.len(), d.cg * d.s);
        // gx, then per-(image, channel) partial sums of gz·x̂ and gz, reduced over images below.
        let mut out = vec![0f32; n + 2 * d.b * d.c];
        let op = SendPtr(out.as_mut_ptr());
        let inv_n = 1.0 / block.max(1) as f32;
        run_tasks(
            d.b * groups,
            n * 6,
            || (),
            |_, task| {
                let xs = &x[task * block..(task + 1) * block];
                let gys = &gy[task * block..(task + 1) * block];
                // SAFETY: this task alone writes block `task` of gx and the partial sums of its
                // own (image, channel) pairs, `task·cg .. (task+1)·cg` in both partial arrays.
                let (gx, part_g, part_b) = unsafe {
                    (
                        std::slice::from_raw_parts_mut(op.get().add(task * block), block),
                        std::slice::from_raw_parts_mut(op.get().add(n + task * d.cg), d.cg),
                        std::slice::from_raw_parts_mut(
                            op.get().add(n + d.b * d.c + task * d.cg),
                            d.cg,
                        ),
                    )
                };
                let (mean, rstd) = stats(xs, eps);
                let c0 = (task % groups) * d.cg;
                let (mut a, mut bsum) = (0f64, 0f64);
                for k in 0..d.cg {
                    let (g, bt) = (gamma[c0 + k], beta[c0 + k]);
                    let range = k * d.s..(k + 1) * d.s;
                    let (xc, gyc, gxc) = (&xs[range.clone()], &gys[range.clone()], &mut gx[range]);
                    let (sgz, sgzx) = bwd_row(act, xc, gyc, gxc, [mean, rstd, g, bt]);
                    part_b[k] = sgz as f32;
                    part_g[k] = sgzx as f32;
                    a += f64::from(g) * sgz;
                    bsum += f64::from(g) * sgzx;
                }
                let (a, bsum) = (a as f32 * inv_n, bsum as f32 * inv_n);
                for k in 0..d.cg {
                    let g = gamma[c0 + k];
                    let range = k * d.s..(k + 1) * d.s;
                    for (o, &v) in gx[range.clone()].iter_mut().zip(&xs[range]) {
                        let xh = (v - mean) * rstd;
                        *o = rstd * (g * *o - a - xh * bsum);
                    }
                }
            },
        );
        // Reduce the partial sums over images into [gγ; gβ] right after gx.
        let parts = &out[n..];
        let mut sums = vec![0f32; 2 * d.c];
        for (which, dst) in sums.chunks_exact_mut(d.c).enumerate() {
            let src = &parts[which * d.b * d.c..(which + 1) * d.b * d.c];
            for img in src.chunks_exact(d.c) {
                for (s, v) in dst.iter_mut().zip(img) {
                    *s += v;
                }
            }
        }
        out.truncate(n);
        out.extend_from_slice(&sums);
        Ok((CpuStorage::F32(out), Shape::from(n + 2 * d.c)))
    }
}

/// `act(GroupNorm(x))` for `x` `[B, C, …]` with `weight`/`bias` `[C]`: the fused op on the CPU
/// in f32 (unless switched off, see [`super::set_enabled`]), candle's GroupNorm then the
/// activation otherwise.
pub fn group_norm_act(
    x: &Tensor,
    weight: &Tensor,
    bias: &Tensor,
    groups: usize,
    eps: f64,
    act: Activation,
) -> Result<Tensor> {
    let fused = super::enabled()
        && x.device().is_cpu()
        && x.dtype() == DType::F32
        && weight.dtype() == DType::F32
        && bias.dtype() == DType::F32;
    if fused {
        x.contiguous()?
            .apply_op3(weight, bias, GnFwd { groups, eps, act })
    } else {
        let c = x.dim(1)?;
        let gn = candle_nn::GroupNorm::new(weight.clone(), bias.clone(), c, groups, eps)?;
        act.apply_tensor(gn.forward(x)?)
    }
}

/// A GroupNorm layer (same parameters, names and maths as `candle_nn::GroupNorm`) whose
/// [`forward_act`](FusedGroupNorm::forward_act) fuses the following activation.
#[derive(Debug, Clone)]
pub struct FusedGroupNorm {
    weight: Tensor,
    bias: Tensor,
    groups: usize,
    eps: f64,
}

impl FusedGroupNorm {
    /// Wraps existing `[C]` weight and bias; `groups` must divide C.
    pub fn new(weight: Tensor, bias: Tensor, groups: usize, eps: f64) -> Result<Self> {
        let c = weight.dims1()?;
        if groups == 0 || c % groups != 0 || bias.dims1()? != c {
            bail!(
                "GroupNorm: {groups} groups, weight {c} and bias {:?} do not fit",
                bias.dims()
            );
        }
        Ok(Self {
            weight,
            bias,
            groups,
            eps,
        })
    }

    /// `act(GroupNorm(x))`.
    pub fn forward_act(&self, x: &Tensor, act: Activation) -> Result<Tensor> {
        group_norm_act(x, &self.weight, &self.bias, self.groups, self.eps, act)
    }
}

impl Module for FusedGroupNorm {
    fn forward(&self, x: &Tensor) -> Result<Tensor> {
        self.forward_act(x, Activation::Identity)
    }
}

/// `candle_nn::group_norm` (same names `weight`/`bias` and initialisation) returning a
/// [`FusedGroupNorm`].
pub fn group_norm(
    groups: usize,
    channels: usize,
    eps: f64,
    vb: VarBuilder,
) -> Result<FusedGroupNorm> {
    let weight = vb.get_with_hints(channels, "weight", candle_nn::Init::Const(1.))?;
    let bias = vb.get_with_hints(channels, "bias", candle_nn::Init::Const(0.))?;
    FusedGroupNorm::new(weight, bias, groups, eps)
}

#[cfg(test)]
mod tests {
    use super::fast_exp;

    #[test]
    fn fast_exp_matches_libm_to_a_few_ulp() {
        let mut worst = 0f32;
        let mut x = -87.0f32;
        while x <= 88.0 {
            let (want, got) = (x.exp(), fast_exp(x));
            worst = worst.max(((got - want) / want).abs());
            x += 0.0137;
        }
        // A few ulp (f32 epsilon is 1.2e-7); SiLU's sigmoid is insensitive well below this.
        assert!(worst < 4e-7, "worst relative error {worst:e}");
        assert_eq!(fast_exp(0.0), 1.0);
        assert!(fast_exp(-1000.0) > 0.0 && fast_exp(-1000.0) < 1e-37);
        assert!(fast_exp(1000.0).is_finite());
        assert!(fast_exp(f32::NAN).is_nan());
    }
}

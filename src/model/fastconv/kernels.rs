//! CPU kernels behind [`super::conv2d_fast`]: a conv2d whose forward and both gradients are
//! tiled im2col + single-threaded gemm calls, parallelised over (image, tile of output rows).
//!
//! Why not candle's conv2d: its CPU forward runs one multi-threaded gemm per image, and with
//! our small channel counts (8–128) the gemm threads spend most of their time in barriers; its
//! backward goes through a naive `conv_transpose2d`. Here each worker owns a column buffer the
//! size of one tile (a few output rows, so it stays in L2) and calls `gemm` with
//! `Parallelism::None`; no full-size column tensor ever exists. 1×1 convs (stride 1, no
//! padding) read the input directly as the column matrix.
//!
//! Workers write disjoint parts of the output through a raw pointer ([`SendPtr`]); every
//! `unsafe` block says which part and why no other worker touches it.

use std::sync::atomic::{AtomicUsize, Ordering};

use candle_core::backend::BackendStorage;
use candle_core::{
    CpuStorage, CustomOp1, CustomOp2, CustomOp3, Layout, Result, Shape, Tensor, bail,
};
use gemm::{Parallelism, gemm};

/// Column-buffer size of one forward tile, in floats (≈384 KiB: a tile plus the packed gemm
/// panels stay in a 1 MiB L2). Unit tests use tiny tiles so that small images still split
/// into many tiles and every tiling path runs.
const FWD_TILE: usize = if cfg!(test) { 600 } else { 96 * 1024 };
/// Tile size for the weight gradient: bigger, since each tile's gemm reads and writes the
/// whole `[Cout, K]` accumulator and a longer inner dimension amortises that.
const GW_TILE: usize = if cfg!(test) { 900 } else { 192 * 1024 };
/// Tile size for the input gradient's column buffer.
const GX_TILE: usize = if cfg!(test) { 600 } else { 96 * 1024 };
/// Below this many multiply-adds a call runs on the calling thread: spawning workers costs
/// more than it saves. (Tests go parallel at once, to exercise the workers.)
const SERIAL_WORK: usize = if cfg!(test) { 1 } else { 1 << 18 };

/// Shape of one convolution (dilation 1, groups 1).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) struct ConvGeom {
    pub c_in: usize,
    pub c_out: usize,
    pub h: usize,
    pub w: usize,
    pub kh: usize,
    pub kw: usize,
    pub stride: usize,
    pub padding: usize,
    pub ho: usize,
    pub wo: usize,
}

impl ConvGeom {
    /// Checks that the kernel fits the padded input and works out the output size.
    #[allow(clippy::too_many_arguments)]
    pub fn new(
        c_in: usize,
        c_out: usize,
        h: usize,
        w: usize,
        kh: usize,
        kw: usize,
        stride: usize,
        padding: usize,
    ) -> Result<Self> {
        let (hp, wp) = (h + 2 * padding, w + 2 * padding);
        if stride == 0 || kh == 0 || kw == 0 || hp < kh || wp < kw || c_in == 0 || c_out == 0 {
            bail!(
                "fastconv: kernel {kh}x{kw} (stride {stride}, {c_in}->{c_out} channels) does not \
                 fit a {h}x{w} input padded by {padding}"
            );
        }
        Ok(Self {
            c_in,
            c_out,
            h,
            w,
            kh,
            kw,
            stride,
            padding,
            ho: (hp - kh) / stride + 1,
            wo: (wp - kw) / stride + 1,
        })
    }

    /// Rows of the column matrix: `C·kh·kw`.
    fn k(&self) -> usize {
        self.c_in * self.kh * self.kw
    }

    fn in_plane(&self) -> usize {
        self.h * self.w
    }

    fn out_plane(&self) -> usize {
        self.ho * self.wo
    }

    /// A 1×1, stride-1, unpadded conv: the input already is the column matrix.
    fn pointwise(&self) -> bool {
        self.kh == 1 && self.kw == 1 && self.stride == 1 && self.padding == 0
    }

    /// Output rows per tile so that one tile's `[k_rows, rows·wo]` buffer holds about `target`
    /// floats, at least `min_rows` and at most all rows.
    fn tile_rows(&self, k_rows: usize, target: usize, min_rows: usize) -> usize {
        (target / (k_rows * self.wo).max(1))
            .max(min_rows)
            .min(self.ho)
            .max(1)
    }

    /// Output positions `[lo, hi)` (along an axis of input `size`, output `out`) whose input
    /// position `o·stride + j − padding` lies inside the image, for kernel offset `j`.
    fn valid_range(&self, j: usize, size: usize, out: usize) -> (usize, usize) {
        let s = self.stride;
        let lo = if self.padding > j {
            (self.padding - j).div_ceil(s)
        } else {
            0
        };
        let hi = if size + self.padding > j {
            ((size - 1 + self.padding - j) / s + 1).min(out)
        } else {
            0
        };
        (lo.min(hi), hi)
    }

    /// Input rows `[lo, hi)` that output rows `[oh0, oh1)` read.
    fn input_rows(&self, oh0: usize, oh1: usize) -> (usize, usize) {
        let lo = (oh0 * self.stride).saturating_sub(self.padding);
        let hi = ((oh1 - 1) * self.stride + self.kh)
            .saturating_sub(self.padding)
            .min(self.h);
        (lo.min(hi), hi)
    }

    fn flops(&self, batch: usize) -> usize {
        batch * self.c_out * self.k() * self.out_plane()
    }
}

/// A raw pointer that may cross threads; the code using it guarantees disjoint writes.
#[derive(Clone, Copy)]
pub(crate) struct SendPtr(pub(crate) *mut f32);

// SAFETY: the pointer is only dereferenced on regions that no other thread accesses at the
// same time (see each use).
unsafe impl Send for SendPtr {}
// SAFETY: as above.
unsafe impl Sync for SendPtr {}

impl SendPtr {
    pub(crate) fn get(self) -> *mut f32 {
        self.0
    }
}

/// Runs `f(state, task)` for every task in `0..n` on up to candle's CPU thread count of scoped
/// workers (tasks handed out one at a time, so uneven tiles balance), each with its own
/// `init()` state; returns the states. `work` (multiply-adds) below [`SERIAL_WORK`] stays on
/// this thread.
pub(crate) fn run_tasks<S, I, F>(n: usize, work: usize, init: I, f: F) -> Vec<S>
where
    S: Send,
    I: Fn() -> S + Sync,
    F: Fn(&mut S, usize) + Sync,
{
    let threads = if work < SERIAL_WORK {
        1
    } else {
        candle_core::utils::get_num_threads().clamp(1, n.max(1))
    };
    if threads <= 1 {
        let mut s = init();
        for i in 0..n {
            f(&mut s, i);
        }
        return vec![s];
    }
    let next = AtomicUsize::new(0);
    std::thread::scope(|scope| {
        let handles: Vec<_> = (0..threads)
            .map(|_| {
                scope.spawn(|| {
                    let mut s = init();
                    loop {
                        let i = next.fetch_add(1, Ordering::Relaxed);
                        if i >= n {
                            break;
                        }
                        f(&mut s, i);
                    }
                    s
                })
            })
            .collect();
        handles
            .into_iter()
            .map(|h| h.join().unwrap_or_else(|e| std::panic::resume_unwind(e)))
            .collect()
    })
}

/// Whether this CPU runs AVX2 (and, with `fma`, FMA too); std caches the answer.
#[inline]
pub(crate) fn has_avx2(fma: bool) -> bool {
    #[cfg(target_arch = "x86_64")]
    {
        std::is_x86_feature_detected!("avx2") && (!fma || std::is_x86_feature_detected!("fma"))
    }
    #[cfg(not(target_arch = "x86_64"))]
    {
        let _ = fma;
        false
    }
}

/// The contiguous f32 data of a storage, or an error naming the op.
pub(crate) fn contiguous_f32<'a>(s: &'a CpuStorage, l: &Layout, what: &str) -> Result<&'a [f32]> {
    let CpuStorage::F32(data) = s else {
        bail!("{what}: expected f32, got {:?}", s.dtype());
    };
    match l.contiguous_offsets() {
        Some((a, b)) => Ok(&data[a..b]),
        None => bail!("{what}: input must be contiguous"),
    }
}

/// im2col of output rows `[oh0, oh1)` of one image `[C, H, W]` into `cols` `[C·kh·kw, n]`
/// (`n = (oh1 − oh0)·wo`), row `(c·kh + i)·kw + j`, so the weight `[Cout, C, kh, kw]` read as
/// `[Cout, C·kh·kw]` multiplies it directly. Writes every entry (padding as zeros).
fn im2col_tile(g: &ConvGeom, img: &[f32], oh0: usize, oh1: usize, cols: &mut [f32]) {
    let (h, w, wo, s, p) = (g.h, g.w, g.wo, g.stride, g.padding);
    let n = (oh1 - oh0) * wo;
    for c in 0..g.c_in {
        let plane = &img[c * h * w..(c + 1) * h * w];
        for i in 0..g.kh {
            let (lo, hi) = g.valid_range(i, h, g.ho);
            for j in 0..g.kw {
                let (wlo, whi) = g.valid_range(j, w, wo);
                let r = (c * g.kh + i) * g.kw + j;
                let row = &mut cols[r * n..(r + 1) * n];
                for oh in oh0..oh1 {
                    let out = &mut row[(oh - oh0) * wo..(oh - oh0 + 1) * wo];
                    if oh < lo || oh >= hi {
                        out.fill(0.0);
                        continue;
                    }
                    let inp = &plane[(oh * s + i - p) * w..(oh * s + i - p + 1) * w];
                    out[..wlo].fill(0.0);
                    out[whi..].fill(0.0);
                    if s == 1 {
                        let iw0 = wlo + j - p;
                        out[wlo..whi].copy_from_slice(&inp[iw0..iw0 + (whi - wlo)]);
                    } else {
                        for (ow, o) in out.iter_mut().enumerate().take(whi).skip(wlo) {
                            *o = inp[ow * s + j - p];
                        }
                    }
                }
            }
        }
    }
}

/// col2im, the adjoint of [`im2col_tile`]: adds the columns of output rows `[oh0, oh1)` back
/// into the input image at `img` (`[C, H, W]`).
///
/// # Safety
/// `img` must point to a `[C, H, W]` buffer, and no other thread may access input rows
/// [`ConvGeom::input_rows`]`(oh0, oh1)` of any channel during the call.
unsafe fn col2im_tile(g: &ConvGeom, cols: &[f32], oh0: usize, oh1: usize, img: *mut f32) {
    let (h, w, wo, s, p) = (g.h, g.w, g.wo, g.stride, g.padding);
    let n = (oh1 - oh0) * wo;
    let (r0, r1) = g.input_rows(oh0, oh1);
    if r0 >= r1 {
        return;
    }
    for c in 0..g.c_in {
        // SAFETY: rows [r0, r1) of channel c lie inside the buffer and belong to this call
        // alone (see the function's contract).
        let rows =
            unsafe { std::slice::from_raw_parts_mut(img.add(c * h * w + r0 * w), (r1 - r0) * w) };
        for i in 0..g.kh {
            let (lo, hi) = g.valid_range(i, h, g.ho);
            for j in 0..g.kw {
                let (wlo, whi) = g.valid_range(j, w, wo);
                let r = (c * g.kh + i) * g.kw + j;
                let row = &cols[r * n..(r + 1) * n];
                for oh in oh0.max(lo)..oh1.min(hi) {
                    let src = &row[(oh - oh0) * wo..(oh - oh0 + 1) * wo];
                    let ih = oh * s + i - p;
                    let dst = &mut rows[(ih - r0) * w..(ih - r0 + 1) * w];
                    if s == 1 {
                        let iw0 = wlo + j - p;
                        for (d, v) in dst[iw0..iw0 + (whi - wlo)].iter_mut().zip(&src[wlo..whi]) {
                            *d += v;
                        }
                    } else {
                        for (ow, v) in src.iter().enumerate().take(whi).skip(wlo) {
                            dst[ow * s + j - p] += v;
                        }
                    }
                }
            }
        }
    }
}

/// Forward: `x` `[B, C, H, W]`, `w` `[Cout, C·kh·kw]`, optional `bias` `[Cout]`, to
/// `[B, Cout, Ho, Wo]`: the direct kernel for 3×3 / stride 1 or 2 / padding 1 on AVX2 + FMA
/// CPUs, the tiled im2col + gemm otherwise.
fn conv_forward(
    g: &ConvGeom,
    batch: usize,
    x: &[f32],
    w: &[f32],
    bias: Option<&[f32]>,
) -> Vec<f32> {
    if super::direct::applies(g) {
        super::direct::conv3x3(g, batch, x, w, bias)
    } else {
        conv_forward_im2col(g, batch, x, w, bias)
    }
}

/// [`conv_forward`] through im2col + gemm, for every geometry.
pub(crate) fn conv_forward_im2col(
    g: &ConvGeom,
    batch: usize,
    x: &[f32],
    w: &[f32],
    bias: Option<&[f32]>,
) -> Vec<f32> {
    let (k, np_in, np_out) = (g.k(), g.in_plane(), g.out_plane());
    let mut out = vec![0f32; batch * g.c_out * np_out];
    let rows = g.tile_rows(
        if g.pointwise() { g.c_in + g.c_out } else { k },
        FWD_TILE,
        1,
    );
    let tiles = g.ho.div_ceil(rows);
    let outp = SendPtr(out.as_mut_ptr());
    let scratch = if g.pointwise() { 0 } else { k * rows * g.wo };
    run_tasks(
        batch * tiles,
        g.flops(batch),
        || vec![0f32; scratch],
        |cols, task| {
            let (bi, t) = (task / tiles, task % tiles);
            let (oh0, oh1) = (t * rows, (t * rows + rows).min(g.ho));
            let n = (oh1 - oh0) * g.wo;
            let img = &x[bi * g.c_in * np_in..(bi + 1) * g.c_in * np_in];
            // SAFETY: task (bi, t) is the only one writing output rows [oh0, oh1) of image bi;
            // the offset stays inside `out`.
            let dst = unsafe { outp.get().add(bi * g.c_out * np_out + oh0 * g.wo) };
            if let Some(bias) = bias {
                for (co, &b) in bias.iter().enumerate() {
                    // SAFETY: channel co's rows [oh0, oh1) of this image; ours alone (above).
                    unsafe { std::slice::from_raw_parts_mut(dst.add(co * np_out), n) }.fill(b);
                }
            }
            let (rhs, rhs_rs) = if g.pointwise() {
                (img[oh0 * g.w..].as_ptr(), np_in)
            } else {
                im2col_tile(g, img, oh0, oh1, cols);
                (cols.as_ptr(), n)
            };
            // SAFETY: dst is [Cout, n] with row stride np_out (our rows only), lhs [Cout, k]
            // row-major, rhs [k, n] with row stride rhs_rs; all in bounds.
            unsafe {
                gemm(
                    g.c_out,
                    n,
                    k,
                    dst,
                    1,
                    np_out as isize,
                    bias.is_some(),
                    w.as_ptr(),
                    1,
                    k as isize,
                    rhs,
                    1,
                    rhs_rs as isize,
                    1.0,
                    1.0,
                    false,
                    false,
                    false,
                    Parallelism::None,
                )
            }
        },
    );
    out
}

/// Weight gradient `[Cout, C·kh·kw]` = Σ over images and tiles of `gy_tile · colsᵀ`, each
/// worker accumulating its own copy, summed at the end.
///
/// Both operands have the summed (pixel) axis contiguous, so gemm must transpose one of them
/// while packing; the accumulator is kept as `[k, Cout]` so that it picks the small gradient
/// tile (`Cout` rows) rather than the columns (`C·kh·kw` rows), and is transposed once at the
/// end.
pub(crate) fn conv_grad_weight_im2col(
    g: &ConvGeom,
    batch: usize,
    x: &[f32],
    gy: &[f32],
) -> Vec<f32> {
    let (k, np_in, np_out) = (g.k(), g.in_plane(), g.out_plane());
    let rows = g.tile_rows(if g.pointwise() { g.c_in + g.c_out } else { k }, GW_TILE, 1);
    let tiles = g.ho.div_ceil(rows);
    let scratch = if g.pointwise() { 0 } else { k * rows * g.wo };
    let accs = run_tasks(
        batch * tiles,
        g.flops(batch),
        || (vec![0f32; g.c_out * k], vec![0f32; scratch]),
        |(acc, cols), task| {
            let (bi, t) = (task / tiles, task % tiles);
            let (oh0, oh1) = (t * rows, (t * rows + rows).min(g.ho));
            let n = (oh1 - oh0) * g.wo;
            let img = &x[bi * g.c_in * np_in..(bi + 1) * g.c_in * np_in];
            let gtile = &gy[bi * g.c_out * np_out + oh0 * g.wo..];
            // colsᵀ as the rhs `[n, k]`: element (p, r) sits at r·(row stride) + p.
            let (rhs, rhs_cs) = if g.pointwise() {
                (img[oh0 * g.w..].as_ptr(), np_in)
            } else {
                im2col_tile(g, img, oh0, oh1, cols);
                (cols.as_ptr(), n)
            };
            // SAFETY: acc is a column-major [Cout, k] matrix (element (co, r) at r·Cout + co),
            // private to this worker; lhs is the [Cout, n] gradient tile with row stride
            // np_out; rhs [n, k] as above.
            unsafe {
                gemm(
                    g.c_out,
                    k,
                    n,
                    acc.as_mut_ptr(),
                    g.c_out as isize,
                    1,
                    true,
                    gtile.as_ptr(),
                    1,
                    np_out as isize,
                    rhs,
                    rhs_cs as isize,
                    1,
                    1.0,
                    1.0,
                    false,
                    false,
                    false,
                    Parallelism::None,
                )
            }
        },
    );
    let mut total = vec![0f32; g.c_out * k];
    for (acc, _) in &accs {
        for (t, a) in total.iter_mut().zip(acc) {
            *t += a;
        }
    }
    // [k, Cout] to [Cout, k].
    let mut out = vec![0f32; g.c_out * k];
    for (r, row) in total.chunks_exact(g.c_out).enumerate() {
        for (co, &v) in row.iter().enumerate() {
            out[co * k + r] = v;
        }
    }
    out
}

/// Input gradient `[B, C, H, W]`. For a 3×3 / stride 1 / padding 1 conv on an AVX2 CPU that is
/// itself such a conv, of `gy` with the kernel flipped and its channel axes swapped, so the
/// direct kernel runs it; otherwise [`conv_grad_input_im2col`].
pub(crate) fn conv_grad_input(g: &ConvGeom, batch: usize, gy: &[f32], w: &[f32]) -> Vec<f32> {
    if super::direct::applies(g)
        && g.stride == 1
        && let Ok(gt) = ConvGeom::new(g.c_out, g.c_in, g.ho, g.wo, 3, 3, 1, 1)
    {
        // W'[ci, co, i, j] = W[co, ci, 2 − i, 2 − j].
        let mut wt = vec![0f32; g.c_in * g.c_out * 9];
        for co in 0..g.c_out {
            for ci in 0..g.c_in {
                for tap in 0..9 {
                    wt[(ci * g.c_out + co) * 9 + 8 - tap] = w[(co * g.c_in + ci) * 9 + tap];
                }
            }
        }
        return super::direct::conv3x3(&gt, batch, gy, &wt, None);
    }
    conv_grad_input_im2col(g, batch, gy, w)
}

/// Input gradient through per-tile `gcols = Wᵀ · gy_tile`, then col2im. Tiles of one image
/// overlap in the input only with their neighbours (tiles have at least `kh` rows), so even
/// tiles run in parallel first, then odd ones: no two workers ever add to the same pixel.
pub(crate) fn conv_grad_input_im2col(
    g: &ConvGeom,
    batch: usize,
    gy: &[f32],
    w: &[f32],
) -> Vec<f32> {
    let (k, np_in, np_out) = (g.k(), g.in_plane(), g.out_plane());
    let mut gx = vec![0f32; batch * g.c_in * np_in];
    let gxp = SendPtr(gx.as_mut_ptr());
    let gemm_tile = |dst: *mut f32, dst_rs: usize, gtile: &[f32], n: usize| {
        // SAFETY: dst is [k, n] with row stride dst_rs, owned by the caller's task; lhs Wᵀ
        // [k, Cout] (element (r, co) at co·k + r); rhs the [Cout, n] gradient tile.
        unsafe {
            gemm(
                k,
                n,
                g.c_out,
                dst,
                1,
                dst_rs as isize,
                false,
                w.as_ptr(),
                k as isize,
                1,
                gtile.as_ptr(),
                1,
                np_out as isize,
                0.0,
                1.0,
                false,
                false,
                false,
                Parallelism::None,
            )
        }
    };
    if g.pointwise() {
        let rows = g.tile_rows(g.c_in + g.c_out, GX_TILE, 1);
        let tiles = g.ho.div_ceil(rows);
        run_tasks(
            batch * tiles,
            g.flops(batch),
            || (),
            |_, task| {
                let (bi, t) = (task / tiles, task % tiles);
                let (oh0, oh1) = (t * rows, (t * rows + rows).min(g.ho));
                let gtile = &gy[bi * g.c_out * np_out + oh0 * g.wo..];
                // SAFETY: pixels [oh0·w, oh1·w) of every channel of image bi: this task's alone.
                let dst = unsafe { gxp.get().add(bi * g.c_in * np_in + oh0 * g.w) };
                gemm_tile(dst, np_in, gtile, (oh1 - oh0) * g.wo);
            },
        );
        return gx;
    }
    let rows = g.tile_rows(k, GX_TILE, g.kh);
    let tiles = g.ho.div_ceil(rows);
    for parity in 0..2 {
        let per_image = (tiles + 1 - parity) / 2;
        run_tasks(
            batch * per_image,
            g.flops(batch) / 2,
            || vec![0f32; k * rows * g.wo],
            |cols, task| {
                let (bi, t) = (task / per_image, 2 * (task % per_image) + parity);
                let (oh0, oh1) = (t * rows, (t * rows + rows).min(g.ho));
                let n = (oh1 - oh0) * g.wo;
                let gtile = &gy[bi * g.c_out * np_out + oh0 * g.wo..];
                gemm_tile(cols.as_mut_ptr(), n, gtile, n);
                // SAFETY: tiles of the same parity are ≥ rows ≥ kh output rows apart, so their
                // input rows never meet; other images are other memory.
                unsafe {
                    col2im_tile(g, cols, oh0, oh1, gxp.get().add(bi * g.c_in * np_in));
                }
            },
        );
    }
    gx
}

/// Checks an `[B, C, H, W]` layout against the geometry and returns B.
fn batch_of(g: &ConvGeom, l: &Layout, what: &str) -> Result<usize> {
    let (b, c, h, w) = l.shape().dims4()?;
    if (c, h, w) != (g.c_in, g.h, g.w) {
        bail!(
            "{what}: input is [{b}, {c}, {h}, {w}], expected [B, {}, {}, {}]",
            g.c_in,
            g.h,
            g.w
        );
    }
    Ok(b)
}

fn check_weight(g: &ConvGeom, l: &Layout) -> Result<()> {
    if l.shape().elem_count() != g.c_out * g.k() {
        bail!(
            "fastconv: weight {:?} does not match {}x{}x{}x{}",
            l.dims(),
            g.c_out,
            g.c_in,
            g.kh,
            g.kw
        );
    }
    Ok(())
}

/// The differentiable conv: a [`CustomOp2`] on (x, w) without bias, a [`CustomOp3`] on
/// (x, w, bias) with it.
#[derive(Debug, Clone, Copy)]
pub(crate) struct Conv(pub ConvGeom);

impl Conv {
    fn fwd(
        &self,
        xs: &CpuStorage,
        xl: &Layout,
        ws: &CpuStorage,
        wl: &Layout,
        bias: Option<&[f32]>,
    ) -> Result<(CpuStorage, Shape)> {
        let g = &self.0;
        let b = batch_of(g, xl, "fastconv")?;
        check_weight(g, wl)?;
        let x = contiguous_f32(xs, xl, "fastconv input")?;
        let w = contiguous_f32(ws, wl, "fastconv weight")?;
        let out = conv_forward(g, b, x, w, bias);
        Ok((CpuStorage::F32(out), Shape::from((b, g.c_out, g.ho, g.wo))))
    }

    fn grads(
        &self,
        x: &Tensor,
        w: &Tensor,
        grad: &Tensor,
    ) -> Result<(Option<Tensor>, Option<Tensor>)> {
        let grad = grad.contiguous()?;
        let gx = if x.track_op() {
            Some(grad.apply_op2_no_bwd(w, &GradInput(self.0))?)
        } else {
            None
        };
        let gw = if w.track_op() {
            Some(
                x.apply_op2_no_bwd(&grad, &GradWeight(self.0))?
                    .reshape(w.shape())?,
            )
        } else {
            None
        };
        Ok((gx, gw))
    }
}

impl CustomOp2 for Conv {
    fn name(&self) -> &'static str {
        "fastconv-conv2d"
    }

    fn cpu_fwd(
        &self,
        s1: &CpuStorage,
        l1: &Layout,
        s2: &CpuStorage,
        l2: &Layout,
    ) -> Result<(CpuStorage, Shape)> {
        self.fwd(s1, l1, s2, l2, None)
    }

    fn bwd(
        &self,
        x: &Tensor,
        w: &Tensor,
        _res: &Tensor,
        grad: &Tensor,
    ) -> Result<(Option<Tensor>, Option<Tensor>)> {
        self.grads(x, w, grad)
    }
}

impl CustomOp3 for Conv {
    fn name(&self) -> &'static str {
        "fastconv-conv2d-bias"
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
        let bias = contiguous_f32(s3, l3, "fastconv bias")?;
        if bias.len() != self.0.c_out {
            bail!(
                "fastconv: bias has {} entries for {} output channels",
                bias.len(),
                self.0.c_out
            );
        }
        self.fwd(s1, l1, s2, l2, Some(bias))
    }

    fn bwd(
        &self,
        x: &Tensor,
        w: &Tensor,
        bias: &Tensor,
        _res: &Tensor,
        grad: &Tensor,
    ) -> Result<(Option<Tensor>, Option<Tensor>, Option<Tensor>)> {
        let (gx, gw) = self.grads(x, w, grad)?;
        let gb = if bias.track_op() {
            Some(grad.sum(3)?.sum(2)?.sum(0)?)
        } else {
            None
        };
        Ok((gx, gw, gb))
    }
}

/// (gy `[B, Cout, Ho, Wo]`, w) to the input gradient `[B, C, H, W]`.
#[derive(Debug, Clone, Copy)]
struct GradInput(ConvGeom);

impl CustomOp2 for GradInput {
    fn name(&self) -> &'static str {
        "fastconv-grad-input"
    }

    fn cpu_fwd(
        &self,
        s1: &CpuStorage,
        l1: &Layout,
        s2: &CpuStorage,
        l2: &Layout,
    ) -> Result<(CpuStorage, Shape)> {
        let g = &self.0;
        let (b, c, ho, wo) = l1.shape().dims4()?;
        if (c, ho, wo) != (g.c_out, g.ho, g.wo) {
            bail!(
                "fastconv grad-input: gradient is {:?}, expected [B, {}, {}, {}]",
                l1.dims(),
                g.c_out,
                g.ho,
                g.wo
            );
        }
        check_weight(g, l2)?;
        let gy = contiguous_f32(s1, l1, "fastconv grad-input")?;
        let w = contiguous_f32(s2, l2, "fastconv weight")?;
        let gx = conv_grad_input(g, b, gy, w);
        Ok((CpuStorage::F32(gx), Shape::from((b, g.c_in, g.h, g.w))))
    }
}

/// (x, gy) to the weight gradient `[Cout, C·kh·kw]`.
#[derive(Debug, Clone, Copy)]
struct GradWeight(ConvGeom);

impl CustomOp2 for GradWeight {
    fn name(&self) -> &'static str {
        "fastconv-grad-weight"
    }

    fn cpu_fwd(
        &self,
        s1: &CpuStorage,
        l1: &Layout,
        s2: &CpuStorage,
        l2: &Layout,
    ) -> Result<(CpuStorage, Shape)> {
        let g = &self.0;
        let b = batch_of(g, l1, "fastconv grad-weight")?;
        if l2.dims() != [b, g.c_out, g.ho, g.wo] {
            bail!(
                "fastconv grad-weight: gradient is {:?}, expected [{b}, {}, {}, {}]",
                l2.dims(),
                g.c_out,
                g.ho,
                g.wo
            );
        }
        let x = contiguous_f32(s1, l1, "fastconv input")?;
        let gy = contiguous_f32(s2, l2, "fastconv grad-weight")?;
        let gw = if super::direct::grad_weight_applies(g) {
            super::direct::grad_weight3x3(g, b, x, gy)
        } else {
            conv_grad_weight_im2col(g, b, x, gy)
        };
        Ok((CpuStorage::F32(gw), Shape::from((g.c_out, g.k()))))
    }
}

/// Nearest-neighbour ×2 upsampling `[B, C, H, W]` → `[B, C, 2H, 2W]`, with a backward that
/// sums each 2×2 block (candle differentiates its upsample with a grouped conv).
#[derive(Debug, Clone, Copy)]
pub(crate) struct Upsample2x;

/// The adjoint of [`Upsample2x`]: sums 2×2 blocks.
#[derive(Debug, Clone, Copy)]
struct BlockSum2x;

fn planes_op(s: &CpuStorage, l: &Layout, what: &str, up: bool) -> Result<(CpuStorage, Shape)> {
    let (b, c, h, w) = l.shape().dims4()?;
    let src = contiguous_f32(s, l, what)?;
    let (oh, ow) = if up { (2 * h, 2 * w) } else { (h / 2, w / 2) };
    if !up && (h % 2 != 0 || w % 2 != 0) {
        bail!("{what}: {h}x{w} is not a multiple of 2");
    }
    let mut dst = vec![0f32; b * c * oh * ow];
    let dp = SendPtr(dst.as_mut_ptr());
    run_tasks(
        b * c,
        b * c * h * w,
        || (),
        |_, p| {
            let plane = &src[p * h * w..(p + 1) * h * w];
            // SAFETY: plane p of the output is this task's alone.
            let out = unsafe { std::slice::from_raw_parts_mut(dp.get().add(p * oh * ow), oh * ow) };
            if up {
                for (y, row) in plane.chunks_exact(w).enumerate() {
                    let o = &mut out[2 * y * ow..(2 * y + 1) * ow];
                    for (pair, &v) in o.chunks_exact_mut(2).zip(row) {
                        pair[0] = v;
                        pair[1] = v;
                    }
                    out.copy_within(2 * y * ow..(2 * y + 1) * ow, (2 * y + 1) * ow);
                }
            } else {
                for (y, o) in out.chunks_exact_mut(ow).enumerate() {
                    let (r0, r1) = (
                        &plane[2 * y * w..(2 * y + 1) * w],
                        &plane[(2 * y + 1) * w..(2 * y + 2) * w],
                    );
                    for (x, v) in o.iter_mut().enumerate() {
                        *v = r0[2 * x] + r0[2 * x + 1] + r1[2 * x] + r1[2 * x + 1];
                    }
                }
            }
        },
    );
    Ok((CpuStorage::F32(dst), Shape::from((b, c, oh, ow))))
}

impl CustomOp1 for Upsample2x {
    fn name(&self) -> &'static str {
        "fastconv-upsample2x"
    }

    fn cpu_fwd(&self, s: &CpuStorage, l: &Layout) -> Result<(CpuStorage, Shape)> {
        planes_op(s, l, "fastconv upsample", true)
    }

    fn bwd(&self, _arg: &Tensor, _res: &Tensor, grad: &Tensor) -> Result<Option<Tensor>> {
        Ok(Some(grad.contiguous()?.apply_op1_no_bwd(&BlockSum2x)?))
    }
}

impl CustomOp1 for BlockSum2x {
    fn name(&self) -> &'static str {
        "fastconv-blocksum2x"
    }

    fn cpu_fwd(&self, s: &CpuStorage, l: &Layout) -> Result<(CpuStorage, Shape)> {
        planes_op(s, l, "fastconv upsample backward", false)
    }
}

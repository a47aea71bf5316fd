//! A direct 3×3, padding-1 convolution (stride 1 or 2) for AVX2 + FMA and AVX-512 CPUs: the
//! forward of most of our convs, and the input gradient of the stride-1 ones.
//!
//! Why: our decoder's convs have few output channels (8–64) over large images, so the im2col
//! path copies each input value nine times into the column buffer and gemm packs it once more,
//! for only 8–64 multiply-adds per copied value; in `perf` of `ildiff matte` the copies cost
//! about half as much as the gemm itself. Here each task copies its input rows once into a
//! zero-bordered buffer, and a register-blocked kernel reads them straight from there. With
//! AVX2 a block is 4 output channels × 16 pixels in 8 accumulators (per kernel tap two loads
//! and four broadcasts feed eight FMAs). Where the CPU has AVX-512 (the training machine
//! does), a block holds 16 accumulators of 16 floats, shaped by the output width (see
//! [`Plan`]): twice the work per instruction and twice the FMAs per load (in `perf` of the
//! 128² benchmark step, this kernel's time fell from ~530 to ~300 ms).
//!
//! Sums run in another order than the gemm's, so results differ from the im2col path by float
//! rounding only (tested, for every block shape).

use super::kernels::{ConvGeom, SendPtr, has_avx2, run_tasks};

/// Floats of the padded input buffer one task aims for (≈256 KiB, in L2 with the weights).
const TILE_FLOATS: usize = if cfg!(test) { 400 } else { 64 * 1024 };

/// How a conv's output is cut into register blocks, and which kernel computes them.
#[derive(Clone, Copy, Debug, PartialEq)]
pub(crate) enum Plan {
    /// AVX2 + FMA: 4 output channels × 16 pixels of one row.
    Avx2,
    /// AVX-512: `co` output channels × `nv` 16-float vectors × `nr` output rows (16
    /// accumulators in every shape). Wide rows take 4 channels × 64 pixels; narrow ones more
    /// channels or rows, so that few lanes fall past the row's end.
    Avx512 { co: usize, nv: usize, nr: usize },
}

impl Plan {
    /// The fastest plan this CPU runs for output width `wo` and `c_out` channels, or None
    /// without AVX2 + FMA.
    fn best(wo: usize, c_out: usize) -> Option<Plan> {
        if has_avx512() {
            Some(Plan::avx512_for(wo, c_out))
        } else if has_avx2(true) {
            Some(Plan::Avx2)
        } else {
            None
        }
    }

    /// Every AVX-512 block shape (co, nv, nr) `run_block` compiles (tests run each, and check
    /// that `avx512_for` picks among them).
    #[cfg(test)]
    const AVX512_SHAPES: [(usize, usize, usize); 5] =
        [(4, 4, 1), (8, 2, 1), (4, 2, 2), (8, 1, 2), (4, 1, 4)];

    fn avx512_for(wo: usize, c_out: usize) -> Plan {
        let many = c_out > 4;
        let (co, nv, nr) = match wo {
            33.. => (4, 4, 1),
            17..=32 if many => (8, 2, 1),
            17..=32 => (4, 2, 2),
            _ if many => (8, 1, 2),
            _ => (4, 1, 4),
        };
        Plan::Avx512 { co, nv, nr }
    }

    /// Output channels per block.
    fn co(self) -> usize {
        match self {
            Plan::Avx2 => 4,
            Plan::Avx512 { co, .. } => co,
        }
    }

    /// Output pixels per block along a row.
    fn x_block(self) -> usize {
        match self {
            Plan::Avx2 => 16,
            Plan::Avx512 { nv, .. } => 16 * nv,
        }
    }
}

/// Whether this CPU runs AVX-512 F (std caches the answer).
#[inline]
fn has_avx512() -> bool {
    #[cfg(target_arch = "x86_64")]
    {
        std::is_x86_feature_detected!("avx512f")
    }
    #[cfg(not(target_arch = "x86_64"))]
    {
        false
    }
}

/// Whether [`conv3x3`] can run this conv on this CPU.
pub(crate) fn applies(g: &ConvGeom) -> bool {
    g.kh == 3 && g.kw == 3 && (g.stride == 1 || g.stride == 2) && g.padding == 1 && has_avx2(true)
}

/// Forward of a 3×3 / stride 1 or 2 / padding 1 conv: `x` `[B, C, H, W]`, `w` `[Cout, C·9]`,
/// optional `bias` `[Cout]`, to `[B, Cout, Ho, Wo]`. Call only where [`applies`] says so.
pub(crate) fn conv3x3(
    g: &ConvGeom,
    batch: usize,
    x: &[f32],
    w: &[f32],
    bias: Option<&[f32]>,
) -> Vec<f32> {
    let plan = Plan::best(g.wo, g.c_out).expect("conv3x3 is called only where `applies` holds");
    conv3x3_with(plan, g, batch, x, w, bias)
}

/// [`conv3x3`] with a chosen plan (tests run every plan the CPU has).
fn conv3x3_with(
    plan: Plan,
    g: &ConvGeom,
    batch: usize,
    x: &[f32],
    w: &[f32],
    bias: Option<&[f32]>,
) -> Vec<f32> {
    let c = g.c_in;
    let co_block = plan.co();
    let x_block = plan.x_block();
    let blocks = g.c_out.div_ceil(co_block);
    // Weights as [block][ci][tap][co in block], zero past Cout: one broadcast per (tap, co).
    let mut wp = vec![0f32; blocks * c * 9 * co_block];
    for co in 0..g.c_out {
        let (b, o) = (co / co_block, co % co_block);
        for ci in 0..c {
            for tap in 0..9 {
                wp[((b * c + ci) * 9 + tap) * co_block + o] = w[co * c * 9 + ci * 9 + tap];
            }
        }
    }
    let pl = Padding::new(g, x_block);
    // Not zero-filled: the tasks store every float, so a memset pass would be wasted.
    let total = batch * g.c_out * g.ho * g.wo;
    let mut out: Vec<f32> = Vec::with_capacity(total);
    let outp = SendPtr(out.as_mut_ptr());
    let out_plane = g.ho * g.wo;
    run_tasks(
        batch * pl.tiles,
        g.c_out * c * 9 * out_plane * batch,
        || vec![0f32; c * pl.pad_rows * pl.stride],
        |pad, task| {
            let (bi, t) = (task / pl.tiles, task % pl.tiles);
            let (r0, n_rows) = pl.fill(g, x, bi, t, pad);
            // SAFETY: task (bi, t) alone writes rows r0 .. r0 + n_rows of image bi's channels.
            let dst = unsafe { outp.get().add(bi * g.c_out * out_plane) };
            let geo = Tile {
                c,
                c_out: g.c_out,
                rows: n_rows,
                pad_rows: pl.pad_rows,
                stride: pl.stride,
                step: g.stride,
                cols: pl.cols,
                width: g.wo,
                plane: out_plane,
                r0,
            };
            for b in 0..blocks {
                let wb = &wp[b * c * 9 * co_block..(b + 1) * c * 9 * co_block];
                // SAFETY: the plan was made for this CPU's features (`Plan::best`, or the
                // tests' check); the pointers cover the tile (see `Tile`).
                unsafe { run_block(plan, &geo, pad, wb, bias, b, dst) };
            }
        },
    );
    // SAFETY: the tasks (one per image and tile of rows, the tiles covering all `ho` rows)
    // stored every pixel of every channel: each block stores all its pixels inside the row.
    unsafe { out.set_len(total) };
    out
}

/// Whether [`grad_weight3x3`] can run this conv's weight gradient on this CPU (AVX-512 only:
/// with AVX2 the im2col + gemm path is as fast).
pub(crate) fn grad_weight_applies(g: &ConvGeom) -> bool {
    applies(g) && has_avx512()
}

/// Weight gradient `[Cout, C·9]` of a 3×3 / stride 1 or 2 / padding 1 conv from its input `x`
/// `[B, C, H, W]` and output gradient `gy` `[B, Cout, Ho, Wo]`. Call only where
/// [`grad_weight_applies`] says so.
///
/// Why not im2col + gemm: that path copies every input value nine times into a column buffer
/// (in `perf` of the training step the copies cost a third as much as the gemm), and the gemm
/// crate ran its AVX2 microkernel on this AVX-512 machine (`perf`). Here each task pads its input rows once (as the
/// forward does) and a kernel keeps 4 output channels × 3 taps of one input channel in 12
/// AVX-512 accumulators, summed across lanes once per tile.
pub(crate) fn grad_weight3x3(g: &ConvGeom, batch: usize, x: &[f32], gy: &[f32]) -> Vec<f32> {
    let pl = Padding::new(g, 16);
    let k = g.c_in * 9;
    let out_plane = g.ho * g.wo;
    let accs = run_tasks(
        batch * pl.tiles,
        g.c_out * k * out_plane * batch,
        || {
            (
                vec![0f32; g.c_in * pl.pad_rows * pl.stride],
                vec![0f32; g.c_out * k],
            )
        },
        |(pad, acc), task| {
            let (bi, t) = (task / pl.tiles, task % pl.tiles);
            let (r0, n_rows) = pl.fill(g, x, bi, t, pad);
            let gimg = &gy[bi * g.c_out * out_plane..(bi + 1) * g.c_out * out_plane];
            // SAFETY: `grad_weight_applies` checked AVX-512; the slices are this image's.
            unsafe { grad_weight_tile_avx512(g, &pl, pad, gimg, (r0, n_rows), acc) };
        },
    );
    let mut total = vec![0f32; g.c_out * k];
    for (_, acc) in &accs {
        for (t, a) in total.iter_mut().zip(acc) {
            *t += a;
        }
    }
    total
}

/// Adds one tile's share of the weight gradient to `acc` `[Cout, C·9]`: output rows
/// `rows.0 .. rows.0 + rows.1` of the image whose output gradient is `gimg` `[Cout, Ho, Wo]`
/// and whose padded input rows are in `pad` (laid out by `pl`).
///
/// # Safety
/// The CPU must have AVX-512 F.
#[cfg(target_arch = "x86_64")]
#[target_feature(enable = "avx512f")]
unsafe fn grad_weight_tile_avx512(
    g: &ConvGeom,
    pl: &Padding,
    pad: &[f32],
    gimg: &[f32],
    rows: (usize, usize),
    acc: &mut [f32],
) {
    use std::arch::x86_64::*;
    const CO: usize = 4;
    let (r0, n_rows) = rows;
    let (wo, k) = (g.wo, g.c_in * 9);
    let out_plane = g.ho * wo;
    let zeros = vec![0f32; wo];
    for co0 in (0..g.c_out).step_by(CO) {
        let live = (g.c_out - co0).min(CO);
        for ci in 0..g.c_in {
            // One kernel row i at a time: 4 channels × 3 taps in 12 accumulators (all nine
            // taps at once would not fit the registers).
            for i in 0..3 {
                let mut a = [[_mm512_setzero_ps(); 3]; CO];
                for r in 0..n_rows {
                    let y = r0 + r;
                    // The padded row this output row reads through kernel row i, and the
                    // gradient rows, each bounds-checked once: raw pointers below keep the
                    // accumulators in registers.
                    let at = (ci * pl.pad_rows + g.stride * r + i) * pl.stride;
                    let prow = pad[at..at + pl.stride].as_ptr();
                    // Channels past Cout read a row of zeros.
                    let grow: [*const f32; CO] = std::array::from_fn(|o| {
                        if o < live {
                            let at = (co0 + o) * out_plane + y * wo;
                            gimg[at..at + wo].as_ptr()
                        } else {
                            zeros.as_ptr()
                        }
                    });
                    let mut x0 = 0;
                    while x0 < wo {
                        let valid = (wo - x0).min(16);
                        // SAFETY (loads): full blocks read 16 floats inside each row of
                        // `wo` (`x0 + 16 ≤ wo`), the last one only its `valid` floats; the
                        // padded row holds col + x0 + 16 floats (`Padding`).
                        let gv: [__m512; CO] = if valid == 16 {
                            std::array::from_fn(|o| unsafe { _mm512_loadu_ps(grow[o].add(x0)) })
                        } else {
                            let mask = ((1u32 << valid) - 1) as __mmask16;
                            std::array::from_fn(|o| unsafe {
                                _mm512_maskz_loadu_ps(mask, grow[o].add(x0))
                            })
                        };
                        for (j, &col) in pl.cols.iter().enumerate() {
                            let v = unsafe { _mm512_loadu_ps(prow.add(col + x0)) };
                            for (ao, go) in a.iter_mut().zip(&gv) {
                                ao[j] = _mm512_fmadd_ps(*go, v, ao[j]);
                            }
                        }
                        x0 += 16;
                    }
                }
                for (o, ao) in a.iter().enumerate().take(live) {
                    let dst = &mut acc[(co0 + o) * k + ci * 9 + i * 3..][..3];
                    for (d, v) in dst.iter_mut().zip(ao) {
                        *d += _mm512_reduce_add_ps(*v);
                    }
                }
            }
        }
    }
}

#[cfg(not(target_arch = "x86_64"))]
unsafe fn grad_weight_tile_avx512(
    _: &ConvGeom,
    _: &Padding,
    _: &[f32],
    _: &[f32],
    _: (usize, usize),
    _: &mut [f32],
) {
    unreachable!("grad_weight3x3 runs only where the CPU has AVX-512")
}

/// How [`conv3x3`] and [`grad_weight3x3`] lay out their zero-bordered copies of the input, and
/// cut the output rows into tiles (one task each).
///
/// A padded row is the input row with a zero on the left (padded position k holds input pixel
/// k − 1), zero past the image, long enough for whole blocks of `x_block` output pixels.
/// Output pixel x reads padded positions s·x + j. For stride 2 the row is stored
/// deinterleaved, even positions then odd ones, so that every tap still reads a block of
/// consecutive floats: j = 0 and 2 the even half at x and x + 1, j = 1 the odd half at x.
struct Padding {
    /// Floats per padded row, and where stride 2's odd half starts.
    stride: usize,
    half: usize,
    /// Where tap column j's block starts in a padded row, past the block's first pixel.
    cols: [usize; 3],
    /// Output rows per tile, tiles per image, padded rows per channel in a tile's buffer.
    rows: usize,
    tiles: usize,
    pad_rows: usize,
}

impl Padding {
    fn new(g: &ConvGeom, x_block: usize) -> Padding {
        let s = g.stride;
        let xb = g.wo.div_ceil(x_block);
        let half = xb * x_block + 1;
        let (stride, cols) = if s == 1 {
            (xb * x_block + 2, [0, 1, 2])
        } else {
            (2 * half, [0, half, 1])
        };
        let rows = (TILE_FLOATS / (g.c_in * stride * s)).clamp(1, g.ho);
        Padding {
            stride,
            half,
            cols,
            rows,
            tiles: g.ho.div_ceil(rows),
            pad_rows: s * (rows - 1) + 3,
        }
    }

    /// Copies the input rows tile `t` of image `bi` of `x` reads (rows s·r0 − 1 ..) into
    /// `pad` (`[C, pad_rows, stride]`, zeros outside the image); returns the tile's first
    /// output row and its row count.
    fn fill(
        &self,
        g: &ConvGeom,
        x: &[f32],
        bi: usize,
        t: usize,
        pad: &mut [f32],
    ) -> (usize, usize) {
        let (c, h, wd, s) = (g.c_in, g.h, g.w, g.stride);
        let (stride, half, pad_rows) = (self.stride, self.half, self.pad_rows);
        let plane = h * wd;
        let r0 = t * self.rows;
        let n_rows = (r0 + self.rows).min(g.ho) - r0;
        let img = &x[bi * c * plane..(bi + 1) * c * plane];
        for ci in 0..c {
            for pr in 0..s * (n_rows - 1) + 3 {
                let dst = &mut pad[(ci * pad_rows + pr) * stride..][..stride];
                let y = (s * r0 + pr) as isize - 1;
                if y < 0 || y >= h as isize {
                    dst.fill(0.0);
                    continue;
                }
                let src = &img[ci * plane + y as usize * wd..][..wd];
                if s == 1 {
                    dst[0] = 0.0;
                    dst[1..=wd].copy_from_slice(src);
                    dst[wd + 1..].fill(0.0);
                } else {
                    dst.fill(0.0);
                    let (even, odd) = dst.split_at_mut(half);
                    // Padded position k = i + 1: even k in `even[k / 2]`, odd in `odd`.
                    for (m, e) in even.iter_mut().enumerate().skip(1) {
                        if 2 * m - 1 < wd {
                            *e = src[2 * m - 1];
                        }
                    }
                    for (m, o) in odd.iter_mut().enumerate() {
                        if 2 * m < wd {
                            *o = src[2 * m];
                        }
                    }
                }
            }
        }
        (r0, n_rows)
    }
}

/// Calls the kernel of `plan` for output channel block `b` of one tile.
///
/// # Safety
/// As [`block_avx2`], with the CPU features `plan` needs.
unsafe fn run_block(
    plan: Plan,
    t: &Tile,
    pad: &[f32],
    wb: &[f32],
    bias: Option<&[f32]>,
    b: usize,
    dst: *mut f32,
) {
    let Plan::Avx512 { co, nv, nr } = plan else {
        // SAFETY: the caller's contract.
        return unsafe { block_avx2(t, pad, wb, bias, b, dst) };
    };
    // SAFETY (all arms): the caller's contract.
    unsafe {
        match (co, nv, nr) {
            (4, 4, 1) => block_avx512::<4, 4, 1>(t, pad, wb, bias, b, dst),
            (8, 2, 1) => block_avx512::<8, 2, 1>(t, pad, wb, bias, b, dst),
            (4, 2, 2) => block_avx512::<4, 2, 2>(t, pad, wb, bias, b, dst),
            (8, 1, 2) => block_avx512::<8, 1, 2>(t, pad, wb, bias, b, dst),
            (4, 1, 4) => block_avx512::<4, 1, 4>(t, pad, wb, bias, b, dst),
            _ => unreachable!("Plan::avx512_for makes only Plan::AVX512_SHAPES"),
        }
    }
}

/// One task's geometry.
struct Tile {
    c: usize,
    c_out: usize,
    /// Output rows in this tile.
    rows: usize,
    /// Rows per channel in the padded buffer.
    pad_rows: usize,
    /// Floats per padded row.
    stride: usize,
    /// The conv's stride: output row r reads padded rows `step·r + i`.
    step: usize,
    /// Where tap column j's 16 floats start in a padded row, past the block's first pixel.
    cols: [usize; 3],
    /// Output width and plane.
    width: usize,
    plane: usize,
    /// First output row.
    r0: usize,
}

/// Output channels `4·b .. 4·b + 4` (those below Cout) of one tile.
///
/// # Safety
/// The CPU must have AVX2 and FMA; `dst` must point to a `[Cout, H, W]` image whose rows
/// `[r0, r0 + rows)` no other thread touches during the call.
#[cfg(target_arch = "x86_64")]
#[target_feature(enable = "avx2,fma")]
unsafe fn block_avx2(
    t: &Tile,
    pad: &[f32],
    wb: &[f32],
    bias: Option<&[f32]>,
    b: usize,
    dst: *mut f32,
) {
    use std::arch::x86_64::*;
    const CO_BLOCK: usize = 4;
    const X_BLOCK: usize = 16;
    let co0 = b * CO_BLOCK;
    let live = (t.c_out - co0).min(CO_BLOCK);
    let bias_of = |o: usize| {
        if o < live {
            bias.map_or(0.0, |bs| bs[co0 + o])
        } else {
            0.0
        }
    };
    let init = [bias_of(0), bias_of(1), bias_of(2), bias_of(3)];
    let xb = t.width.div_ceil(X_BLOCK);
    let mut tail = [0f32; X_BLOCK];
    for r in 0..t.rows {
        for bx in 0..xb {
            let x0 = bx * X_BLOCK;
            let mut acc = [[_mm256_setzero_ps(); 2]; CO_BLOCK];
            for (o, a) in acc.iter_mut().enumerate() {
                a[0] = _mm256_set1_ps(init[o]);
                a[1] = a[0];
            }
            for ci in 0..t.c {
                let base = (ci * t.pad_rows + t.step * r) * t.stride + x0;
                let wc = &wb[ci * 9 * CO_BLOCK..(ci + 1) * 9 * CO_BLOCK];
                for i in 0..3 {
                    let row = base + i * t.stride;
                    for (j, &col) in t.cols.iter().enumerate() {
                        // Both vectors lie inside the padded row (see `conv3x3`'s layout).
                        let src = &pad[row + col..row + col + X_BLOCK];
                        // SAFETY: `src` holds 16 floats (the slice above is bounds-checked).
                        let (v0, v1) = unsafe {
                            (
                                _mm256_loadu_ps(src.as_ptr()),
                                _mm256_loadu_ps(src.as_ptr().add(8)),
                            )
                        };
                        let wt = &wc[(i * 3 + j) * CO_BLOCK..(i * 3 + j + 1) * CO_BLOCK];
                        for (o, a) in acc.iter_mut().enumerate() {
                            let k = _mm256_set1_ps(wt[o]);
                            a[0] = _mm256_fmadd_ps(v0, k, a[0]);
                            a[1] = _mm256_fmadd_ps(v1, k, a[1]);
                        }
                    }
                }
            }
            let y = t.r0 + r;
            let n = X_BLOCK.min(t.width - x0);
            for (o, a) in acc.iter().enumerate().take(live) {
                // SAFETY: channel co0 + o < Cout, row y of this tile, pixels x0 .. x0 + n < W:
                // inside the image and this call's own rows (see the contract).
                let out = unsafe { dst.add((co0 + o) * t.plane + y * t.width + x0) };
                if n == X_BLOCK {
                    // SAFETY: 16 floats from `out` are in the row (n == 16).
                    unsafe {
                        _mm256_storeu_ps(out, a[0]);
                        _mm256_storeu_ps(out.add(8), a[1]);
                    }
                } else {
                    // SAFETY: `tail` holds 16 floats; only the n in the image are copied out.
                    unsafe {
                        _mm256_storeu_ps(tail.as_mut_ptr(), a[0]);
                        _mm256_storeu_ps(tail.as_mut_ptr().add(8), a[1]);
                        std::ptr::copy_nonoverlapping(tail.as_ptr(), out, n);
                    }
                }
            }
        }
    }
}

#[cfg(not(target_arch = "x86_64"))]
unsafe fn block_avx2(_: &Tile, _: &[f32], _: &[f32], _: Option<&[f32]>, _: usize, _: *mut f32) {
    unreachable!("conv3x3 runs only where `applies` found AVX2 and FMA")
}

/// Output channels `CO·b .. CO·b + CO` (those below Cout) of one tile, in blocks of `NR` rows
/// × `NV` vectors of 16 pixels (the tile's last rows in blocks of one row).
///
/// # Safety
/// The CPU must have AVX-512 F; `dst` as in [`block_avx2`].
#[cfg(target_arch = "x86_64")]
#[target_feature(enable = "avx512f")]
unsafe fn block_avx512<const CO: usize, const NV: usize, const NR: usize>(
    t: &Tile,
    pad: &[f32],
    wb: &[f32],
    bias: Option<&[f32]>,
    b: usize,
    dst: *mut f32,
) {
    let co0 = b * CO;
    let live = (t.c_out - co0).min(CO);
    let mut init = [0f32; CO];
    for (o, v) in init.iter_mut().enumerate().take(live) {
        *v = bias.map_or(0.0, |bs| bs[co0 + o]);
    }
    let xb = t.width.div_ceil(16 * NV);
    let mut r = 0;
    while r < t.rows {
        let nr = if t.rows - r >= NR { NR } else { 1 };
        for bx in 0..xb {
            let at = (r, bx * 16 * NV);
            // SAFETY: the caller's contract; rows r .. r + nr are in the tile.
            unsafe {
                if nr == NR {
                    rows_avx512::<CO, NV, NR>(t, pad, wb, &init, (co0, live), at, dst)
                } else {
                    rows_avx512::<CO, NV, 1>(t, pad, wb, &init, (co0, live), at, dst)
                }
            }
        }
        r += nr;
    }
}

/// One register block of [`block_avx512`]: output rows `at.0 .. at.0 + NR` of the tile, pixels
/// `at.1 ..` (`16·NV` of them, those inside the row stored), output channels `ch.0 ..` (the
/// `ch.1` below Cout stored).
///
/// # Safety
/// As [`block_avx512`].
#[cfg(target_arch = "x86_64")]
#[target_feature(enable = "avx512f")]
#[inline]
unsafe fn rows_avx512<const CO: usize, const NV: usize, const NR: usize>(
    t: &Tile,
    pad: &[f32],
    wb: &[f32],
    init: &[f32; CO],
    ch: (usize, usize),
    at: (usize, usize),
    dst: *mut f32,
) {
    use std::arch::x86_64::*;
    let (r, x0) = at;
    let (co0, live) = ch;
    let mut acc = [[[_mm512_setzero_ps(); NV]; NR]; CO];
    for (o, a) in acc.iter_mut().enumerate() {
        *a = [[_mm512_set1_ps(init[o]); NV]; NR];
    }
    for ci in 0..t.c {
        let wc = &wb[ci * 9 * CO..(ci + 1) * 9 * CO];
        for i in 0..3 {
            for (j, &col) in t.cols.iter().enumerate() {
                let mut v = [[_mm512_setzero_ps(); NV]; NR];
                for (rr, vr) in v.iter_mut().enumerate() {
                    let row = (ci * t.pad_rows + t.step * (r + rr) + i) * t.stride;
                    // Inside the padded row (see `conv3x3_with`'s layout); bounds-checked.
                    let src = &pad[row + col + x0..][..16 * NV];
                    for (k, vk) in vr.iter_mut().enumerate() {
                        // SAFETY: `src` holds 16·NV floats.
                        *vk = unsafe { _mm512_loadu_ps(src.as_ptr().add(16 * k)) };
                    }
                }
                let wt = &wc[(i * 3 + j) * CO..(i * 3 + j + 1) * CO];
                for (o, a) in acc.iter_mut().enumerate() {
                    let w = _mm512_set1_ps(wt[o]);
                    for (ar, vr) in a.iter_mut().zip(&v) {
                        for (ak, vk) in ar.iter_mut().zip(vr) {
                            *ak = _mm512_fmadd_ps(*vk, w, *ak);
                        }
                    }
                }
            }
        }
    }
    let n = (16 * NV).min(t.width - x0);
    for (o, a) in acc.iter().enumerate().take(live) {
        for (rr, ar) in a.iter().enumerate() {
            let y = t.r0 + r + rr;
            for (k, ak) in ar.iter().enumerate() {
                let valid = n.saturating_sub(16 * k).min(16);
                if valid == 0 {
                    break;
                }
                // SAFETY: channel co0 + o < Cout, row y of this tile, pixels x0 + 16·k ..
                // + valid < W: inside the image and this call's own rows (see the contract).
                unsafe {
                    let out = dst.add((co0 + o) * t.plane + y * t.width + x0 + 16 * k);
                    if valid == 16 {
                        _mm512_storeu_ps(out, *ak);
                    } else {
                        _mm512_mask_storeu_ps(out, ((1u32 << valid) - 1) as __mmask16, *ak);
                    }
                }
            }
        }
    }
}

#[cfg(not(target_arch = "x86_64"))]
unsafe fn block_avx512<const CO: usize, const NV: usize, const NR: usize>(
    _: &Tile,
    _: &[f32],
    _: &[f32],
    _: Option<&[f32]>,
    _: usize,
    _: *mut f32,
) {
    unreachable!("conv3x3 runs AVX-512 blocks only where the CPU has AVX-512")
}

#[cfg(test)]
mod tests {
    use super::super::kernels::{
        ConvGeom, conv_forward_im2col, conv_grad_input, conv_grad_input_im2col,
        conv_grad_weight_im2col,
    };
    use super::*;

    /// Deterministic values in [-1, 1).
    fn values(n: usize, seed: u32) -> Vec<f32> {
        let mut s = seed.wrapping_mul(2_654_435_761).max(1);
        (0..n)
            .map(|_| {
                s ^= s << 13;
                s ^= s >> 17;
                s ^= s << 5;
                (s % 2000) as f32 / 1000.0 - 1.0
            })
            .collect()
    }

    /// `got` equals `want` to float rounding (1e-4 on values of a few units).
    fn assert_close(got: &[f32], want: &[f32], what: &str) {
        assert_eq!(got.len(), want.len(), "{what}");
        let worst = got
            .iter()
            .zip(want)
            .map(|(a, b)| (a - b).abs())
            .fold(0f32, f32::max);
        assert!(worst < 1e-4, "{what}: off by {worst}");
    }

    /// Every block shape this CPU can run (AVX-512's only where it has AVX-512).
    fn plans() -> Vec<Plan> {
        let mut plans = vec![Plan::Avx2];
        if has_avx512() {
            plans.extend(Plan::AVX512_SHAPES.map(|(co, nv, nr)| Plan::Avx512 { co, nv, nr }));
            // The shapes `Plan::best` picks are among them.
            for (wo, c_out) in [(128, 16), (64, 4), (32, 64), (20, 3), (16, 128), (8, 4)] {
                assert!(plans.contains(&Plan::avx512_for(wo, c_out)), "{wo} {c_out}");
            }
        } else {
            eprintln!("no AVX-512 here: only the AVX2 kernel is checked");
        }
        plans
    }

    #[test]
    fn direct_3x3_equals_im2col_to_rounding() {
        if !has_avx2(true) {
            eprintln!("no AVX2 + FMA here: the direct kernel is not used");
            return;
        }
        // Stride 1: output channels not a multiple of 4, widths not a multiple of 16 (and
        // below it), one-row images, several tiles, batch 2, with and without bias. Stride 2:
        // odd and even sizes, without bias. (Value seeds per stride.)
        let stride1: &[(usize, usize, usize, usize, usize)] = &[
            (1, 1, 1, 1, 1),
            (2, 3, 8, 5, 17),
            (1, 8, 20, 9, 16),
            (2, 16, 5, 12, 33),
            (1, 36, 8, 7, 40),
            (1, 4, 3, 1, 7),
            (1, 1, 6, 11, 70),
            (2, 2, 9, 7, 130),
        ];
        let stride2: &[(usize, usize, usize, usize, usize)] = &[
            (1, 3, 16, 9, 9),
            (2, 8, 8, 16, 40),
            (1, 5, 6, 2, 3),
            (1, 16, 20, 13, 34),
            (1, 2, 8, 13, 131),
        ];
        for (s, cases, (sx, sw)) in [(1, stride1, (1, 7)), (2, stride2, (5, 9))] {
            for &(batch, c, c_out, h, w) in cases {
                let g = ConvGeom::new(c, c_out, h, w, 3, 3, s, 1).expect("geometry");
                assert!(applies(&g));
                let x = values(batch * c * h * w, sx + c as u32);
                let wt = values(c_out * c * 9, sw + c_out as u32);
                let bias = values(c_out, 3);
                let biases = if s == 1 {
                    vec![None, Some(&bias[..])]
                } else {
                    vec![None]
                };
                for b in biases {
                    let want = conv_forward_im2col(&g, batch, &x, &wt, b);
                    let got = conv3x3(&g, batch, &x, &wt, b);
                    assert_close(
                        &got,
                        &want,
                        &format!("stride {s} {batch}x{c}->{c_out} {h}x{w}"),
                    );
                    for plan in plans() {
                        let got = conv3x3_with(plan, &g, batch, &x, &wt, b);
                        assert_close(
                            &got,
                            &want,
                            &format!("{plan:?} stride {s} {batch}x{c}->{c_out} {h}x{w}"),
                        );
                    }
                }
            }
        }
        // The input gradient of a stride-1 conv runs as a direct conv too.
        for &(batch, c, c_out, h, w) in &[(2, 3, 8, 5, 17), (1, 16, 5, 12, 33), (1, 8, 20, 1, 9)] {
            let g = ConvGeom::new(c, c_out, h, w, 3, 3, 1, 1).expect("geometry");
            let gy = values(batch * c_out * h * w, 11 + c as u32);
            let wt = values(c_out * c * 9, 13 + c_out as u32);
            let want = conv_grad_input_im2col(&g, batch, &gy, &wt);
            let got = conv_grad_input(&g, batch, &gy, &wt);
            assert_close(
                &got,
                &want,
                &format!("grad input {batch}x{c}->{c_out} {h}x{w}"),
            );
        }
        // The weight gradient, stride 1 and 2, against im2col + gemm.
        if has_avx512() {
            let cases: &[(usize, usize, usize, usize, usize, usize)] = &[
                (1, 2, 1, 3, 4, 1),
                (2, 3, 8, 5, 17, 1),
                (1, 16, 5, 12, 33, 1),
                (2, 4, 3, 9, 70, 1),
                (1, 3, 16, 9, 9, 2),
                (2, 5, 6, 13, 34, 2),
            ];
            for &(batch, c, c_out, h, w, s) in cases {
                let g = ConvGeom::new(c, c_out, h, w, 3, 3, s, 1).expect("geometry");
                assert!(grad_weight_applies(&g));
                let x = values(batch * c * h * w, 17 + c as u32);
                let gy = values(batch * c_out * g.ho * g.wo, 19 + c_out as u32);
                let want = conv_grad_weight_im2col(&g, batch, &x, &gy);
                let got = grad_weight3x3(&g, batch, &x, &gy);
                assert_close(
                    &got,
                    &want,
                    &format!("grad weight stride {s} {batch}x{c}->{c_out} {h}x{w}"),
                );
            }
        }
        // Other geometries keep the im2col path.
        let g = ConvGeom::new(4, 4, 8, 8, 3, 3, 3, 1).expect("geometry");
        assert!(!applies(&g));
        let g = ConvGeom::new(4, 4, 8, 8, 1, 1, 1, 0).expect("geometry");
        assert!(!applies(&g));
    }
}

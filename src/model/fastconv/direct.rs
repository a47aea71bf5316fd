//! A direct 3×3, padding-1 convolution (stride 1 or 2) for AVX2 + FMA CPUs: the forward of
//! most of our convs.
//!
//! Why: our decoder's convs have few output channels (8–64) over large images, so the im2col
//! path copies each input value nine times into the column buffer and gemm packs it once more,
//! for only 8–64 multiply-adds per copied value; in `perf` of `ildiff matte` the copies cost
//! about half as much as the gemm itself. Here each task copies its input rows once into a
//! zero-bordered buffer, and a register-blocked kernel (4 output channels × 16 pixels in 8
//! accumulators) reads them straight from there: per kernel tap two loads and four broadcasts
//! feed eight FMAs.
//!
//! Sums run in another order than the gemm's, so results differ from the im2col path by float
//! rounding only (tested).

use super::kernels::{ConvGeom, SendPtr, has_avx2, run_tasks};

/// Output channels per register block.
const CO_BLOCK: usize = 4;
/// Output pixels per register block (two AVX vectors).
const X_BLOCK: usize = 16;
/// Floats of the padded input buffer one task aims for (≈256 KiB, in L2 with the weights).
const TILE_FLOATS: usize = if cfg!(test) { 400 } else { 64 * 1024 };

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
    let (c, h, wd, s) = (g.c_in, g.h, g.w, g.stride);
    let (ho, wo) = (g.ho, g.wo);
    let blocks = g.c_out.div_ceil(CO_BLOCK);
    // Weights as [block][ci][tap][co in block], zero past Cout: one broadcast per (tap, co).
    let mut wp = vec![0f32; blocks * c * 9 * CO_BLOCK];
    for co in 0..g.c_out {
        let (b, o) = (co / CO_BLOCK, co % CO_BLOCK);
        for ci in 0..c {
            for tap in 0..9 {
                wp[((b * c + ci) * 9 + tap) * CO_BLOCK + o] = w[co * c * 9 + ci * 9 + tap];
            }
        }
    }
    // A padded row is the input row with a zero on the left (padded position k holds input
    // pixel k − 1), zero past the image. Output pixel x reads padded positions s·x + j. For
    // stride 2 the row is stored deinterleaved, even positions then odd ones, so that every
    // tap still reads 16 consecutive floats: j = 0 and 2 the even half at x and x + 1, j = 1
    // the odd half at x.
    let xb = wo.div_ceil(X_BLOCK);
    let half = xb * X_BLOCK + 1;
    let (stride, cols) = if s == 1 {
        (xb * X_BLOCK + 2, [0, 1, 2])
    } else {
        (2 * half, [0, half, 1])
    };
    let rows = (TILE_FLOATS / (c * stride * s)).clamp(1, ho);
    let pad_rows = s * (rows - 1) + 3;
    let tiles = ho.div_ceil(rows);
    let mut out = vec![0f32; batch * g.c_out * ho * wo];
    let outp = SendPtr(out.as_mut_ptr());
    let (plane, out_plane) = (h * wd, ho * wo);
    run_tasks(
        batch * tiles,
        g.c_out * c * 9 * out_plane * batch,
        || vec![0f32; c * pad_rows * stride],
        |pad, task| {
            let (bi, t) = (task / tiles, task % tiles);
            let (r0, r1) = (t * rows, (t * rows + rows).min(ho));
            let n_rows = r1 - r0;
            let img = &x[bi * c * plane..(bi + 1) * c * plane];
            // Input rows s·r0 − 1 .. into the padded buffer (zeros outside the image).
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
            // SAFETY: task (bi, t) alone writes rows [r0, r1) of image bi's channels.
            let dst = unsafe { outp.get().add(bi * g.c_out * out_plane) };
            let geo = Tile {
                c,
                c_out: g.c_out,
                rows: n_rows,
                pad_rows,
                stride,
                step: s,
                cols,
                width: wo,
                plane: out_plane,
                r0,
            };
            for b in 0..blocks {
                let wb = &wp[b * c * 9 * CO_BLOCK..(b + 1) * c * 9 * CO_BLOCK];
                // SAFETY: `applies` checked AVX2 and FMA; the pointers cover the tile (see
                // `Tile`).
                unsafe { block_avx2(&geo, pad, wb, bias, b, dst) };
            }
        },
    );
    out
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

#[cfg(test)]
mod tests {
    use super::super::kernels::{
        ConvGeom, conv_forward_im2col, conv_grad_input, conv_grad_input_im2col,
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
        ];
        let stride2: &[(usize, usize, usize, usize, usize)] = &[
            (1, 3, 16, 9, 9),
            (2, 8, 8, 16, 40),
            (1, 5, 6, 2, 3),
            (1, 16, 20, 13, 34),
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
        // Other geometries keep the im2col path.
        let g = ConvGeom::new(4, 4, 8, 8, 3, 3, 3, 1).expect("geometry");
        assert!(!applies(&g));
        let g = ConvGeom::new(4, 4, 8, 8, 1, 1, 1, 0).expect("geometry");
        assert!(!applies(&g));
    }
}

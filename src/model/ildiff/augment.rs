//! Geometric helpers for image-to-image nets: the 8 flip x rot90 transforms of test-time
//! augmentation, their inverses, the per-element lower median that merges the passes, and
//! mirror padding to the size a UNet needs.
//!
//! Everything is built from `index_select`, `transpose`, `minimum` and `maximum`, so it runs on
//! any device and keeps gradients. Tensors are `[B, C, H, W]`.

use candle_core::{D, Device, Result, Tensor};

/// One of the 8 symmetries of the square: an optional horizontal flip (of the width axis)
/// followed by `rot90` counter-clockwise quarter turns, as `torch.rot90(x, k, dims=(2, 3))`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Dihedral {
    /// Flip the width axis before rotating.
    pub flip: bool,
    /// Quarter turns, 0..=3.
    pub rot90: u8,
}

impl Dihedral {
    /// The identity.
    pub const IDENTITY: Dihedral = Dihedral {
        flip: false,
        rot90: 0,
    };

    /// The 8 transforms in LayerDiffuse's order: no flip with k = 0..3, then flip with k = 0..3.
    pub const ALL: [Dihedral; 8] = [
        Dihedral {
            flip: false,
            rot90: 0,
        },
        Dihedral {
            flip: false,
            rot90: 1,
        },
        Dihedral {
            flip: false,
            rot90: 2,
        },
        Dihedral {
            flip: false,
            rot90: 3,
        },
        Dihedral {
            flip: true,
            rot90: 0,
        },
        Dihedral {
            flip: true,
            rot90: 1,
        },
        Dihedral {
            flip: true,
            rot90: 2,
        },
        Dihedral {
            flip: true,
            rot90: 3,
        },
    ];

    /// Applies the transform to the two last axes.
    pub fn apply(&self, x: &Tensor) -> Result<Tensor> {
        let x = if self.flip { flip(x, 3)? } else { x.clone() };
        rot90(&x, self.rot90 % 4)
    }

    /// Undoes [`Dihedral::apply`].
    pub fn undo(&self, x: &Tensor) -> Result<Tensor> {
        let x = rot90(x, (4 - self.rot90 % 4) % 4)?;
        if self.flip { flip(&x, 3) } else { Ok(x) }
    }
}

/// Reverses the order along `dim`.
pub fn flip(x: &Tensor, dim: usize) -> Result<Tensor> {
    let n = x.dim(dim)?;
    let idx: Vec<u32> = (0..n as u32).rev().collect();
    x.index_select(&index_tensor(idx, x.device())?, dim)
}

/// `torch.rot90(x, k, dims=(2, 3))`: `k` counter-clockwise quarter turns of the last two axes.
pub fn rot90(x: &Tensor, k: u8) -> Result<Tensor> {
    match k % 4 {
        0 => Ok(x.clone()),
        1 => flip(x, 3)?.transpose(2, 3)?.contiguous(),
        2 => flip(&flip(x, 2)?, 3),
        _ => flip(x, 2)?.transpose(2, 3)?.contiguous(),
    }
}

/// Per-element median of equally shaped tensors; with an even count the *lower* middle value
/// (sorted index `(n - 1) / 2`), which is what `torch.median` returns.
///
/// Uses a min/max sorting network, so it needs no sort kernel and works on any device.
pub fn lower_median(values: &[Tensor]) -> Result<Tensor> {
    let n = values.len();
    if n == 0 {
        candle_core::bail!("lower_median needs at least one tensor");
    }
    let mut v: Vec<Tensor> = values.to_vec();
    let target = (n - 1) / 2;
    // Bubble passes from the top: after pass p the p+1 largest values are in place, so we can
    // stop once everything above `target` is settled and position `target` holds its value.
    for pass in 0..n - target {
        for j in 0..n - 1 - pass {
            let lo = v[j].minimum(&v[j + 1])?;
            let hi = v[j].maximum(&v[j + 1])?;
            v[j] = lo;
            v[j + 1] = hi;
        }
    }
    Ok(v.swap_remove(target))
}

/// Pads the end of axes 2 and 3 by mirroring with the edge repeated (`numpy` "symmetric"), for
/// any pad size: 0 1 2 | 2 1 0 0 1 2 ...
///
/// Why mirror: padding a pixel image and its /8 latent this way keeps them roughly consistent
/// (a mirrored 8-pixel block is the mirror of one latent cell), and the padded content looks like
/// the image rather than a flat edge.
pub fn mirror_pad(x: &Tensor, pad_h: usize, pad_w: usize) -> Result<Tensor> {
    let x = mirror_pad_dim(x, 2, pad_h)?;
    mirror_pad_dim(&x, 3, pad_w)
}

fn mirror_pad_dim(x: &Tensor, dim: usize, pad: usize) -> Result<Tensor> {
    if pad == 0 {
        return Ok(x.clone());
    }
    let n = x.dim(dim)?;
    if n == 0 {
        candle_core::bail!("cannot mirror-pad an empty axis");
    }
    let period = 2 * n;
    let idx: Vec<u32> = (0..n + pad)
        .map(|i| {
            let m = i % period;
            (if m < n { m } else { period - 1 - m }) as u32
        })
        .collect();
    x.index_select(&index_tensor(idx, x.device())?, dim)
}

fn index_tensor(idx: Vec<u32>, device: &Device) -> Result<Tensor> {
    let n = idx.len();
    Tensor::from_vec(idx, n, device)
}

/// Crops axes 2 and 3 to `h` x `w` from the top-left corner.
pub fn crop(x: &Tensor, h: usize, w: usize) -> Result<Tensor> {
    x.narrow(D::Minus2, 0, h)?.narrow(D::Minus1, 0, w)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn grid(h: usize, w: usize) -> Tensor {
        let v: Vec<f32> = (0..h * w).map(|i| i as f32).collect();
        Tensor::from_vec(v, (1, 1, h, w), &Device::Cpu).expect("tensor")
    }

    fn rows(t: &Tensor) -> Vec<Vec<f32>> {
        t.squeeze(0)
            .and_then(|t| t.squeeze(0))
            .and_then(|t| t.to_vec2())
            .expect("2-D")
    }

    #[test]
    fn rot90_follows_torch() {
        // torch.rot90([[0,1,2],[3,4,5]], 1) == [[2,5],[1,4],[0,3]]
        let x = grid(2, 3);
        assert_eq!(
            rows(&rot90(&x, 1).expect("rot")),
            vec![vec![2., 5.], vec![1., 4.], vec![0., 3.]]
        );
        assert_eq!(
            rows(&rot90(&x, 2).expect("rot")),
            vec![vec![5., 4., 3.], vec![2., 1., 0.]]
        );
        assert_eq!(
            rows(&rot90(&x, 3).expect("rot")),
            vec![vec![3., 0.], vec![4., 1.], vec![5., 2.]]
        );
        assert_eq!(
            rows(&flip(&x, 3).expect("flip")),
            vec![vec![2., 1., 0.], vec![5., 4., 3.]]
        );
    }

    #[test]
    fn every_transform_is_undone_and_all_differ() {
        let x = grid(3, 5);
        let mut seen = Vec::new();
        for t in Dihedral::ALL {
            let y = t.apply(&x).expect("apply");
            let back = t.undo(&y).expect("undo");
            assert_eq!(rows(&back), rows(&x), "{t:?}");
            let r = rows(&y);
            assert!(!seen.contains(&r), "{t:?} duplicates another transform");
            seen.push(r);
        }
    }

    #[test]
    fn lower_median_takes_index_three_of_eight() {
        // Per element, values are a permutation of 10..80 step 10 (different per element).
        let perms: [[f32; 8]; 2] = [
            [80., 10., 70., 20., 60., 30., 50., 40.],
            [30., 30., 10., 80., 20., 70., 70., 5.],
        ];
        let values: Vec<Tensor> = (0..8)
            .map(|k| Tensor::new(&[perms[0][k], perms[1][k]], &Device::Cpu).expect("t"))
            .collect();
        let m = lower_median(&values)
            .expect("median")
            .to_vec1::<f32>()
            .expect("vec");
        // sorted: 10 20 30 [40] 50 ..., and 5 10 20 [30] 30 70 70 80
        assert_eq!(m, vec![40., 30.]);
        let odd = lower_median(&values[..3])
            .expect("median")
            .to_vec1::<f32>()
            .expect("vec");
        assert_eq!(odd, vec![70., 30.]);
    }

    #[test]
    fn mirror_pad_repeats_the_edge_and_wraps() {
        let x = grid(1, 3);
        let p = mirror_pad(&x, 0, 7).expect("pad");
        assert_eq!(rows(&p), vec![vec![0., 1., 2., 2., 1., 0., 0., 1., 2., 2.]]);
        let p = mirror_pad(&grid(2, 1), 3, 0).expect("pad");
        assert_eq!(
            rows(&p),
            vec![vec![0.], vec![1.], vec![1.], vec![0.], vec![0.]]
        );
    }
}

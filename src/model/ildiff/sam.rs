//! The SAM image encoder as the layout adapter's distillation *teacher* (METHOD.md §3), through
//! candle-transformers' `segment_anything` module: ViT-B/L/H (the original SAM) and MobileSAM's
//! TinyViT. Each maps a 1024² input to a `[256, 64, 64]` embedding.
//!
//! Only the teacher lives here: the distillation itself (student, 1x1 projection, MSE after
//! resize) is trained in another issue, and no SAM weights ship with the studio.
//!
//! Weights: the image-encoder part of a SAM checkpoint, i.e. pass `vb.pp("image_encoder")` of
//! a `sam_vit_{b,l,h}` / `mobile_sam` safetensors file. candle builds no classification head
//! for TinyViT, so MobileSAM's `norm_head`/`head` tensors (and the prompt/mask decoder tensors
//! of every SAM file) are left unused.

use candle_core::{DType, Module, Result, Tensor, bail};
use candle_nn::VarBuilder;
use candle_transformers::models::segment_anything::image_encoder::ImageEncoderViT;
use candle_transformers::models::segment_anything::tiny_vit::{TinyViT, tiny_vit_5m};

/// SAM's input side: images are resized so the longest side is this, then padded to a square.
pub const SAM_INPUT_SIZE: usize = 1024;

/// SAM's embedding: channels and side (1/16 of [`SAM_INPUT_SIZE`]).
pub const SAM_EMBED_SHAPE: [usize; 3] = [256, 64, 64];

/// SAM's pixel normalisation (ImageNet statistics on the 0..255 scale).
pub const SAM_PIXEL_MEAN: [f32; 3] = [123.675, 116.28, 103.53];
/// See [`SAM_PIXEL_MEAN`].
pub const SAM_PIXEL_STD: [f32; 3] = [58.395, 57.12, 57.375];

/// Which SAM image encoder.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum SamKind {
    /// SAM ViT-B (91 M parameters in the encoder).
    VitB,
    /// SAM ViT-L.
    VitL,
    /// SAM ViT-H.
    VitH,
    /// MobileSAM's TinyViT-5M.
    Mobile,
}

impl SamKind {
    /// `(embed_dim, depth, heads, global-attention block indexes)` of the ViT variants.
    fn vit_shape(self) -> Option<(usize, usize, usize, [usize; 4])> {
        match self {
            SamKind::VitB => Some((768, 12, 12, [2, 5, 8, 11])),
            SamKind::VitL => Some((1024, 24, 16, [5, 11, 17, 23])),
            SamKind::VitH => Some((1280, 32, 16, [7, 15, 23, 31])),
            SamKind::Mobile => None,
        }
    }
}

/// A SAM image encoder used as a frozen teacher.
#[derive(Debug)]
pub enum SamTeacher {
    /// The original SAM ViT (B, L or H).
    Vit(Box<ImageEncoderViT>),
    /// MobileSAM's TinyViT.
    TinyVit(Box<TinyViT>),
}

impl SamTeacher {
    /// Builds the encoder of `kind` from `vb` (the `image_encoder.` part of a SAM checkpoint).
    pub fn load(kind: SamKind, vb: VarBuilder) -> Result<Self> {
        Ok(match kind.vit_shape() {
            Some((dim, depth, heads, global)) => SamTeacher::Vit(Box::new(ImageEncoderViT::new(
                SAM_INPUT_SIZE,
                16,
                3,
                dim,
                depth,
                heads,
                SAM_EMBED_SHAPE[0],
                true,
                true,
                true,
                14,
                &global,
                vb,
            )?)),
            None => SamTeacher::TinyVit(Box::new(tiny_vit_5m(vb)?)),
        })
    }

    /// `rgb` `[B, 3, H, W]` in [0, 1] (any size) -> SAM embedding `[B, 256, 64, 64]`, with
    /// SAM's preprocessing ([`preprocess`]).
    pub fn embed(&self, rgb: &Tensor) -> Result<Tensor> {
        let x = preprocess(rgb, SAM_INPUT_SIZE)?;
        match self {
            SamTeacher::Vit(m) => m.forward(&x),
            SamTeacher::TinyVit(m) => m.forward(&x),
        }
    }
}

/// The size SAM resizes an `h` x `w` image to: longest side `target`, the other scaled and
/// rounded half up (`ResizeLongestSide.get_preprocess_shape`).
pub fn resized_shape(h: usize, w: usize, target: usize) -> (usize, usize) {
    let scale = target as f64 / h.max(w) as f64;
    let r = |v: usize| ((v as f64 * scale + 0.5) as usize).max(1);
    (r(h), r(w))
}

/// SAM's preprocessing for a `target`-sized square input: `rgb` `[B, 3, H, W]` in [0, 1] ->
/// bilinear resize so the longest side is `target` -> x255 -> `(x - mean) / std` -> zero pad at
/// the bottom and right to `target` x `target` (zero after normalising, as SAM pads).
///
/// SAM resizes with antialiasing when it shrinks; candle's bilinear resize has none, so shrinking
/// large frames differs slightly from SAM's own numbers. Stickers are at most 512 px, which SAM
/// *enlarges* to 1024, where the two agree.
pub fn preprocess(rgb: &Tensor, target: usize) -> Result<Tensor> {
    let (_, c, h, w) = rgb.dims4()?;
    if c != 3 || h == 0 || w == 0 {
        bail!(
            "SAM preprocessing: input is {:?}, expected [B, 3, H, W]",
            rgb.dims()
        );
    }
    let (nh, nw) = resized_shape(h, w, target);
    let x = rgb.to_dtype(DType::F32)?;
    let x = if (nh, nw) == (h, w) {
        x
    } else {
        x.upsample_bilinear2d(nh, nw, false)?
    };
    let dev = rgb.device();
    let mean = Tensor::new(&SAM_PIXEL_MEAN, dev)?.reshape((1, 3, 1, 1))?;
    let std = Tensor::new(&SAM_PIXEL_STD, dev)?.reshape((1, 3, 1, 1))?;
    let x = (x * 255.0)?.broadcast_sub(&mean)?.broadcast_div(&std)?;
    x.pad_with_zeros(2, 0, target - nh)?
        .pad_with_zeros(3, 0, target - nw)
}

#[cfg(test)]
mod tests {
    use super::*;
    use candle_core::{Device, Shape};
    use candle_nn::var_builder::SimpleBackend;
    use std::collections::BTreeMap;
    use std::sync::{Arc, Mutex};

    /// Serves zeros of whatever shape is asked for and records the request, so a model's expected
    /// names and shapes can be read without weights.
    struct Recorder(Arc<Mutex<BTreeMap<String, Vec<usize>>>>);

    impl SimpleBackend for Recorder {
        fn get(
            &self,
            s: Shape,
            name: &str,
            _: candle_nn::Init,
            dtype: DType,
            dev: &Device,
        ) -> Result<Tensor> {
            self.0
                .lock()
                .expect("lock")
                .insert(name.to_string(), s.dims().to_vec());
            Tensor::zeros(s, dtype, dev)
        }
        fn get_unchecked(&self, name: &str, _: DType, _: &Device) -> Result<Tensor> {
            bail!("no shape for `{name}`")
        }
        fn contains_tensor(&self, _: &str) -> bool {
            true
        }
    }

    fn names(kind: SamKind) -> BTreeMap<String, Vec<usize>> {
        let seen = Arc::new(Mutex::new(BTreeMap::new()));
        let vb = VarBuilder::from_backend(
            Box::new(Recorder(Arc::clone(&seen))),
            DType::F32,
            Device::Cpu,
        );
        SamTeacher::load(kind, vb).expect("build");
        seen.lock().expect("lock").clone()
    }

    #[test]
    fn teachers_ask_for_sam_checkpoint_names() {
        let b = names(SamKind::Mobile);
        let want: [(&str, &[usize]); 4] = [
            ("patch_embed.seq.0.c.weight", &[32, 3, 3, 3]),
            ("neck.0.weight", &[256, 320, 1, 1]),
            ("neck.2.weight", &[256, 256, 3, 3]),
            ("neck.3.bias", &[256]),
        ];
        for (n, s) in want {
            assert_eq!(b.get(n).map(Vec::as_slice), Some(s), "{n}");
        }
        assert!(b.keys().all(|k| !k.starts_with("head")), "no class head");

        let b = names(SamKind::VitB);
        let want: [(&str, &[usize]); 6] = [
            ("patch_embed.proj.weight", &[768, 3, 16, 16]),
            ("pos_embed", &[1, 64, 64, 768]),
            ("blocks.0.attn.rel_pos_h", &[27, 64]),
            ("blocks.2.attn.rel_pos_h", &[127, 64]),
            ("blocks.11.mlp.lin1.weight", &[3072, 768]),
            ("neck.0.weight", &[256, 768, 1, 1]),
        ];
        for (n, s) in want {
            assert_eq!(b.get(n).map(Vec::as_slice), Some(s), "{n}");
        }
        assert!(b.keys().all(|k| !k.starts_with("blocks.12.")), "12 blocks");
    }

    #[test]
    fn preprocessing_resizes_normalises_and_pads() {
        assert_eq!(resized_shape(512, 512, 1024), (1024, 1024));
        assert_eq!(resized_shape(300, 500, 1024), (614, 1024));
        assert_eq!(resized_shape(2, 3, 8), (5, 8));
        let dev = Device::Cpu;
        // A constant colour stays constant under resizing, so every valid pixel is known.
        let colour = [0.2f32, 0.5, 1.0];
        let rgb = Tensor::new(&colour, &dev)
            .and_then(|t| t.reshape((1, 3, 1, 1)))
            .and_then(|t| t.broadcast_as((2, 3, 2, 3)))
            .and_then(|t| t.contiguous())
            .expect("rgb");
        let x = preprocess(&rgb, 8).expect("preprocess");
        assert_eq!(x.dims(), &[2, 3, 8, 8]);
        let v: Vec<f32> = x.flatten_all().and_then(|t| t.to_vec1()).expect("v");
        for b in 0..2 {
            for c in 0..3 {
                let want = (colour[c] * 255.0 - SAM_PIXEL_MEAN[c]) / SAM_PIXEL_STD[c];
                for y in 0..8 {
                    for xx in 0..8 {
                        let got = v[((b * 3 + c) * 8 + y) * 8 + xx];
                        let expect = if y < 5 { want } else { 0.0 };
                        assert!((got - expect).abs() < 1e-5, "{b} {c} {y} {xx}: {got}");
                    }
                }
            }
        }
        assert!(preprocess(&rgb.narrow(1, 0, 2).expect("n"), 8).is_err());
    }
}

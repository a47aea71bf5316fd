//! Training the small latent codec (f = 8, 4 channels) of the embedded default: an autoencoder
//! on sticker composites. Loss: `L1(decode(encode(x)), x) + w_latent · mean(z²)`; the small
//! latent penalty keeps latents near unit scale, so the decoder (and a later latent diffusion
//! model) see inputs of a known range.

use candle_core::{DType, Device, Tensor};
use candle_nn::{VarBuilder, VarMap};

use super::dataset::Batch;
use super::run::LossOut;
use crate::model::codec::LatentCodec;
use crate::model::{SmallCodec, SmallCodecConfig};
use crate::{Error, Result};

/// Column names of [`codec_loss`]'s terms.
pub const TERMS: [&str; 2] = ["recon_l1", "latent_l2"];

/// Weight of the latent penalty.
pub const LATENT_WEIGHT: f64 = 1e-3;

fn model_err(source: candle_core::Error) -> Error {
    Error::Candle {
        context: "codec training".into(),
        source,
    }
}

/// A fresh codec on its own `VarMap` (names `encoder.*`, `decoder.*`).
pub fn build(cfg: &SmallCodecConfig, device: &Device) -> Result<(VarMap, SmallCodec)> {
    let varmap = VarMap::new();
    let vb = VarBuilder::from_varmap(&varmap, DType::F32, device);
    let codec = SmallCodec::new(cfg, vb).map_err(model_err)?;
    super::decoder::seeded_init(&varmap, 0xC0DEC)?;
    Ok((varmap, codec))
}

/// Reconstruction loss of the batch's composite frames. With `fg_weight` > 0 a pixel's L1
/// error counts `1 + fg_weight · alpha` times (normalised by the mean weight): over a flat key
/// the background is most of the canvas and trivially easy, so an unweighted loss spends the
/// codec's capacity on it rather than on the sticker.
pub fn codec_loss(
    codec: &SmallCodec,
    batch: &Batch,
    fg_weight: f64,
    device: &Device,
) -> Result<LossOut> {
    let n = batch.clips * batch.frames;
    let s = batch.size;
    let x = Tensor::from_slice(&batch.rgb, (n, 3, s, s), device).map_err(model_err)?;
    let weight = if fg_weight > 0.0 && batch.alpha.len() == n * s * s {
        let a = Tensor::from_slice(&batch.alpha, (n, 1, s, s), device).map_err(model_err)?;
        let w = ((a * fg_weight).and_then(|w| w + 1.0)).map_err(model_err)?;
        let mean = w
            .mean_all()
            .and_then(|m| m.to_scalar::<f32>())
            .map_err(model_err)?;
        Some((w / f64::from(mean)).map_err(model_err)?)
    } else {
        None
    };
    let inner = || -> candle_core::Result<LossOut> {
        let z = codec.encode(&x)?;
        let y = codec.decode_unclipped(&z)?;
        let err = (y - &x)?.abs()?;
        let recon = match &weight {
            Some(w) => err.broadcast_mul(w)?.mean_all()?,
            None => err.mean_all()?,
        };
        let lat = z.sqr()?.mean_all()?;
        let total = (&recon + (&lat * LATENT_WEIGHT)?)?;
        let parts = vec![
            (TERMS[0], recon.to_scalar::<f32>()?),
            (TERMS[1], lat.to_scalar::<f32>()?),
        ];
        Ok((total, parts))
    };
    inner().map_err(model_err)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::train::Split;
    use crate::train::dataset::{DataConfig, make_sample};
    use crate::train::optim::{Adam, AdamParams};

    /// The reconstruction error of a codec file on the generator's data (stickers over the
    /// magenta key: 16 clips of 4 frames at 128², or `ILDIFF_CODEC_SIZE`, drawn with a seed no
    /// training run uses), plain L1 in [0, 1] units, for the model card: `ILDIFF_CODEC=file
    /// ILDIFF_ART=data/art cargo test --lib train::codec::tests::codec_error_over_the_key --
    /// --ignored --nocapture`.
    #[test]
    #[ignore]
    fn codec_error_over_the_key() {
        use crate::model::generator::GenConfig;
        use crate::model::weights::{Checkpoint, ILDIFF_CONFIG_KEY};
        use crate::train::generator::{GenData, build_vocabulary, make_gen_sample};
        use std::sync::Arc;
        let dev = Device::Cpu;
        let (Ok(path), Ok(art)) = (std::env::var("ILDIFF_CODEC"), std::env::var("ILDIFF_ART"))
        else {
            eprintln!("set ILDIFF_CODEC and ILDIFF_ART");
            return;
        };
        let ck = Checkpoint::read(std::path::Path::new(&path), DType::F32, &dev).expect("read");
        let cfg: SmallCodecConfig =
            serde_json::from_str(ck.metadata(ILDIFF_CONFIG_KEY).expect("config")).expect("json");
        let codec = ck
            .build("codec", DType::F32, &dev, |vb| SmallCodec::new(&cfg, vb))
            .expect("codec");
        let lib =
            Arc::new(crate::train::ArtLibrary::load(std::path::Path::new(&art)).expect("art"));
        // The generator trains at 256² now; its codec was trained at 128².
        let size = std::env::var("ILDIFF_CODEC_SIZE")
            .ok()
            .and_then(|v| v.parse().ok())
            .unwrap_or(128);
        let gen_cfg = GenConfig {
            size,
            frames: 4,
            ..GenConfig::default_shape()
        };
        let vocab = Arc::new(build_vocabulary(Some(&lib), 0));
        let data = GenData::new(&gen_cfg, vocab, Some(lib));
        let clips = 16;
        let (mut all, mut fg) = (0f64, 0f64);
        for i in 0..clips {
            // A seed no training run uses.
            let s = make_gen_sample(&data, 0xE7A1, i).expect("sample");
            let x = Tensor::from_slice(&s.rgb, (s.frames, 3, s.size, s.size), &dev).expect("x");
            let y = codec.decode(&codec.encode(&x).expect("enc")).expect("dec");
            let err = (y - &x).and_then(|d| d.abs()).expect("err");
            all += f64::from(
                err.mean_all()
                    .and_then(|m| m.to_scalar::<f32>())
                    .expect("l1"),
            );
            let a = Tensor::from_slice(&s.alpha, (s.frames, 1, s.size, s.size), &dev).expect("a");
            let num = err
                .broadcast_mul(&a)
                .and_then(|e| e.sum_all())
                .expect("num");
            let den = (a.sum_all().expect("den").to_scalar::<f32>().expect("d") * 3.0).max(1.0);
            fg += f64::from(num.to_scalar::<f32>().expect("n") / den);
        }
        let n = clips as f64;
        println!(
            "{path}: L1 {:.4} over the canvas, {:.4} over the sticker ({clips} clips at {size}²)",
            all / n,
            fg / n
        );
    }

    #[test]
    fn every_codec_variable_gets_a_gradient_and_training_lowers_the_loss() {
        let dev = Device::Cpu;
        let cfg = SmallCodecConfig {
            channels: [8, 8, 8],
            norm_groups: 4,
        };
        let (varmap, codec) = build(&cfg, &dev).expect("build");
        let data = DataConfig::procedural(32, 2, Split::Train);
        let batch = Batch::stack(&[make_sample(&data, 3, 0).expect("s")]).expect("batch");
        let vars: Vec<_> = {
            let d = varmap.data().lock().expect("lock");
            let mut v: Vec<_> = d.iter().map(|(n, v)| (n.clone(), v.clone())).collect();
            v.sort_by(|a, b| a.0.cmp(&b.0));
            v
        };
        let mut opt = Adam::new(
            vars,
            AdamParams {
                lr: 3e-3,
                ..Default::default()
            },
        )
        .expect("adam");
        let first = codec_loss(&codec, &batch, 0.0, &dev).expect("loss");
        let g = first.0.backward().expect("bwd");
        assert_eq!(opt.missing_grads(&g), Vec::<String>::new());
        let l0 = first.1[0].1;
        opt.step(&g).expect("step");
        for _ in 0..19 {
            let (l, _) = codec_loss(&codec, &batch, 0.0, &dev).expect("loss");
            opt.step(&l.backward().expect("bwd")).expect("step");
        }
        let l1 = codec_loss(&codec, &batch, 0.0, &dev).expect("loss").1[0].1;
        assert!(l1 < 0.8 * l0, "reconstruction {l0} -> {l1}");
    }
}

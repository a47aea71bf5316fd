//! Distilling the layout adapter's student encoder from a SAM image encoder (METHOD.md §3):
//! the student's features go through the distillation head (pool to 1/16, 1x1 to 256
//! channels) and are matched by MSE to the teacher's embedding, average-pooled to the same grid.
//!
//! SAM embeds a square frame of side S as a 64×64 grid over the frame (it resizes the longest
//! side to 1024 first), so one teacher cell covers S/64 pixels; the head's grid is S/16 cells
//! of 16 pixels. For S ≤ 1024 the teacher grid is the finer one and is pooled by `64 / (S/16)`,
//! which must be a whole number (S a power of two from 64 to 1024).

use candle_core::{DType, Device, Tensor};
use candle_nn::{VarBuilder, VarMap};

use super::dataset::Batch;
use super::run::LossOut;
use crate::model::layout::{LayoutAdapter, LayoutAdapterConfig, SAM_EMBED_CHANNELS};
use crate::model::sam::SamTeacher;
use crate::{Error, Result};

/// Column names of [`distill_loss`]'s terms.
pub const TERMS: [&str; 1] = ["feature_mse"];

/// The teacher's side of distillation: frames in [0, 1] -> `[N, 256, 64, 64]`.
pub trait Teacher: Send + Sync {
    fn embed(&self, rgb: &Tensor) -> candle_core::Result<Tensor>;
}

impl Teacher for SamTeacher {
    fn embed(&self, rgb: &Tensor) -> candle_core::Result<Tensor> {
        SamTeacher::embed(self, rgb)
    }
}

fn model_err(source: candle_core::Error) -> Error {
    Error::Candle {
        context: "distillation".into(),
        source,
    }
}

/// The student (the adapter with a distillation head) on a fresh `VarMap`, tensors under
/// `adapter.` as in an ILDiff checkpoint.
pub fn build(cfg: &LayoutAdapterConfig, device: &Device) -> Result<(VarMap, LayoutAdapter)> {
    if cfg.distill_channels != Some(SAM_EMBED_CHANNELS) {
        return Err(Error::Invalid(format!(
            "distillation needs an adapter with a {SAM_EMBED_CHANNELS}-channel distillation head"
        )));
    }
    let varmap = VarMap::new();
    let vb = VarBuilder::from_varmap(&varmap, DType::F32, device);
    let adapter = LayoutAdapter::new(cfg, vb.pp("adapter")).map_err(model_err)?;
    super::decoder::seeded_init(&varmap, 0xD157)?;
    Ok((varmap, adapter))
}

/// The variables distillation trains: the student encoder and its head (not the temporal
/// layers or the injection, which only the decoder loss can train).
pub fn trainable_names(varmap: &VarMap) -> Vec<String> {
    let data = varmap.data().lock().unwrap_or_else(|p| p.into_inner());
    let mut names: Vec<String> = data
        .keys()
        .filter(|n| {
            [
                "adapter.stem",
                "adapter.stages",
                "adapter.feature_norm",
                "adapter.distill",
            ]
            .iter()
            .any(|p| n.starts_with(p))
        })
        .cloned()
        .collect();
    names.sort();
    names
}

/// MSE between the head's output and the teacher's embedding pooled to its grid.
pub fn distill_loss(
    student: &LayoutAdapter,
    teacher: &dyn Teacher,
    batch: &Batch,
    device: &Device,
) -> Result<LossOut> {
    let n = batch.clips * batch.frames;
    let s = batch.size;
    let x = Tensor::from_slice(&batch.rgb, (n, 3, s, s), device).map_err(model_err)?;
    let target = teacher.embed(&x).map_err(model_err)?.detach();
    let inner = || -> candle_core::Result<LossOut> {
        let pred = student.distill(&student.features(&x)?)?;
        let (_, _, ph, pw) = pred.dims4()?;
        let (_, _, th, tw) = target.dims4()?;
        if th % ph != 0 || tw % pw != 0 {
            candle_core::bail!(
                "the teacher grid {th}x{tw} is not a multiple of the student's {ph}x{pw}; use a \
                 power-of-two frame size from 64 to 1024"
            );
        }
        let target = if th == ph {
            target.clone()
        } else {
            target.avg_pool2d((th / ph, tw / pw))?
        };
        let mse = (pred - target)?.sqr()?.mean_all()?;
        let v = mse.to_scalar::<f32>()?;
        Ok((mse, vec![(TERMS[0], v)]))
    };
    inner().map_err(model_err)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::train::Split;
    use crate::train::dataset::{DataConfig, make_sample};
    use crate::train::optim::{Adam, AdamParams};

    /// A stand-in teacher with SAM's output shape: a fixed function of the frame (mean colour
    /// sampled on a 64×64 grid, lifted to 256 channels by a fixed projection).
    struct FakeSam(Tensor);

    impl Teacher for FakeSam {
        fn embed(&self, rgb: &Tensor) -> candle_core::Result<Tensor> {
            let pooled = rgb.upsample_nearest2d(64, 64)?;
            let (n, c, gh, gw) = pooled.dims4()?;
            let flat = pooled.permute((0, 2, 3, 1))?.reshape((n * gh * gw, c))?;
            flat.matmul(&self.0)?
                .reshape((n, gh, gw, SAM_EMBED_CHANNELS))?
                .permute((0, 3, 1, 2))?
                .contiguous()
        }
    }

    #[test]
    fn distillation_trains_the_student_and_its_head() {
        let dev = Device::Cpu;
        let cfg = LayoutAdapterConfig {
            distill_channels: Some(SAM_EMBED_CHANNELS),
            ..crate::model::IldiffConfig::tiny().adapter.expect("adapter")
        };
        let (varmap, student) = build(&cfg, &dev).expect("build");
        let proj = Tensor::randn(0f32, 1.0, (3, SAM_EMBED_CHANNELS), &dev).expect("proj");
        let teacher = FakeSam(proj);
        let data = DataConfig::procedural(64, 2, Split::Train);
        let batch = Batch::stack(&[make_sample(&data, 2, 0).expect("s")]).expect("batch");
        let names = trainable_names(&varmap);
        assert!(names.iter().any(|n| n.starts_with("adapter.distill")));
        assert!(
            !names
                .iter()
                .any(|n| n.contains("temporal") || n.contains("inject"))
        );
        let vars: Vec<_> = {
            let d = varmap.data().lock().expect("lock");
            names.iter().map(|n| (n.clone(), d[n].clone())).collect()
        };
        let mut opt = Adam::new(
            vars,
            AdamParams {
                lr: 1e-2,
                ..Default::default()
            },
        )
        .expect("adam");
        let (l0, _) = distill_loss(&student, &teacher, &batch, &dev).expect("loss");
        let g = l0.backward().expect("bwd");
        assert_eq!(opt.missing_grads(&g), Vec::<String>::new());
        opt.step(&g).expect("step");
        let first = l0.to_scalar::<f32>().expect("scalar");
        for _ in 0..15 {
            let (l, _) = distill_loss(&student, &teacher, &batch, &dev).expect("loss");
            opt.step(&l.backward().expect("bwd")).expect("step");
        }
        let (l, _) = distill_loss(&student, &teacher, &batch, &dev).expect("loss");
        let last = l.to_scalar::<f32>().expect("scalar");
        assert!(last < 0.5 * first, "feature MSE {first} -> {last}");
        // A frame size whose grid does not divide the teacher's is an error, not a panic.
        let odd = Batch::stack(&[
            make_sample(&DataConfig::procedural(96, 1, Split::Train), 1, 0).expect("s"),
        ])
        .expect("batch");
        assert!(distill_loss(&student, &teacher, &odd, &dev).is_err());
    }
}

//! The user's big weights: SD-1.5's UNet with AnimateDiff motion modules and LayerDiffuse's
//! transparent attention, in candle, loaded from diffusers-layout safetensors files.
//!
//! - [`MotionUNet`] / [`MotionUNetConfig`]: the UNet (implements
//!   [`crate::model::diffusion::Denoiser`]; clips longer than the motion window run as
//!   overlapping context windows inside `predict_noise`).
//! - [`MotionUNet::load`]: the three files, each checked name by name and shape by shape;
//!   errors name the file and the tensor.
//! - [`motion`]: one AnimateDiff motion module (diffusers' GroupNorm over all frames).
//! - [`attention`]: attention (memory-bounded), GEGLU feed-forward, transformer blocks, the
//!   LayerDiffuse unit.
//! - [`layer_attn`]: the LayerDiffuse file's unit order and tensor layout.

pub mod attention;
pub mod layer_attn;
pub mod motion;
pub mod unet;

use std::path::Path;

use candle_core::{DType, Device};

pub use layer_attn::{LayerAttnLayout, LayerAttnUnit};
pub use motion::{MotionModule, MotionModuleConfig, position_table};
pub use unet::{MotionUNet, MotionUNetConfig, context_windows};

use crate::model::weights::Checkpoint;
use crate::{Error, Result};

/// A hint for files in a layout other than the one asked for (the commonest wrong download).
fn layout_hint(ck: &Checkpoint, what: &str) -> &'static str {
    let names = ck.names();
    let has = |needle: &str| names.iter().any(|n| n.contains(needle));
    match what {
        "SD-1.5 UNet" if has("model.diffusion_model.") => {
            " (this is a single-file LDM checkpoint; point at the diffusers folder's \
             unet/diffusion_pytorch_model.safetensors instead)"
        }
        "motion adapter" if has(".temporal_transformer.") => {
            " (this is an original AnimateDiff motion module file; use the diffusers \
             MotionAdapter conversion, diffusion_pytorch_model.safetensors)"
        }
        "motion adapter" if has("attentions.") && !has("motion_modules.") => {
            " (this looks like an image UNet, not a motion adapter)"
        }
        _ => "",
    }
}

/// Runs one build stage on one checkpoint: errors name the stage, the file and (from the
/// checked loader) the tensor; tensors the stage did not use are an error too.
fn stage<T>(
    ck: &Checkpoint,
    what: &str,
    dtype: DType,
    device: &Device,
    f: impl FnOnce(candle_nn::VarBuilder<'static>) -> candle_core::Result<T>,
) -> Result<T> {
    let hint = layout_hint(ck, what);
    let model = f(ck.var_builder(dtype, device)).map_err(|e| {
        Error::Model(format!(
            "cannot build the {what}: {e}{hint}: {}",
            ck.source()
        ))
    })?;
    let unused = ck.unused();
    if !unused.is_empty() {
        let shown: Vec<&str> = unused.iter().take(5).map(String::as_str).collect();
        let more = if unused.len() > 5 { ", ..." } else { "" };
        return Err(Error::Model(format!(
            "cannot build the {what}: {} tensor(s) in the file are not part of it (wrong file \
             or configuration?){hint}: {}{more}: {}",
            unused.len(),
            shown.join(", "),
            ck.source()
        )));
    }
    Ok(model)
}

impl MotionUNet {
    /// Builds the UNet from already-read checkpoints: the image UNet, optionally a diffusers
    /// `MotionAdapter` and optionally LayerDiffuse's transparent attention. Each file must
    /// hold exactly the tensors its part needs.
    pub fn from_checkpoints(
        cfg: &MotionUNetConfig,
        unet: &Checkpoint,
        motion: Option<&Checkpoint>,
        layer_attn: Option<&Checkpoint>,
        dtype: DType,
        device: &Device,
    ) -> Result<Self> {
        cfg.validate()
            .map_err(|e| Error::Invalid(format!("UNet configuration: {e}")))?;
        let mut model = stage(unet, "SD-1.5 UNet", dtype, device, |vb| {
            MotionUNet::new(cfg, vb)
        })?;
        if let Some(ck) = motion {
            model = stage(ck, "motion adapter", dtype, device, |vb| {
                model.with_motion(vb)
            })?;
        }
        if let Some(ck) = layer_attn {
            let rank = ["hookers.0", "hookers.layers.0"]
                .iter()
                .find_map(|p| ck.get(&format!("{p}.to_q_lora.0.down.weight")))
                .and_then(|t| t.dims().first().copied())
                .unwrap_or(attention::LAYER_LORA_RANK);
            model = stage(ck, "LayerDiffuse attention", dtype, device, |vb| {
                model.with_layer_attention(rank, vb)
            })?;
        }
        Ok(model)
    }

    /// Reads and builds the UNet from files: `unet_path` = diffusers
    /// `unet/diffusion_pytorch_model.safetensors`, `motion_path` = a `MotionAdapter`'s
    /// `diffusion_pytorch_model.safetensors`, `layer_attn_path` =
    /// `layer_sd15_transparent_attn.safetensors`. Weights are converted to `dtype` on `device`.
    /// Errors name the file and the offending tensor.
    pub fn load(
        cfg: &MotionUNetConfig,
        unet_path: &Path,
        motion_path: Option<&Path>,
        layer_attn_path: Option<&Path>,
        dtype: DType,
        device: &Device,
    ) -> Result<Self> {
        let unet = Checkpoint::read(unet_path, dtype, device)?;
        let motion = motion_path
            .map(|p| Checkpoint::read(p, dtype, device))
            .transpose()?;
        let layer = layer_attn_path
            .map(|p| Checkpoint::read(p, dtype, device))
            .transpose()?;
        Self::from_checkpoints(cfg, &unet, motion.as_ref(), layer.as_ref(), dtype, device)
    }
}

/// Tensor name -> shape, shared between a [`Recorder`] and the caller.
type Seen = std::sync::Arc<std::sync::Mutex<std::collections::BTreeMap<String, Vec<usize>>>>;

/// A `VarBuilder` backend that records every tensor a model asks for and serves zeros that
/// share one scalar of storage, so a full-size layout is listed without allocating it.
struct Recorder(Seen);

impl candle_nn::var_builder::SimpleBackend for Recorder {
    fn get(
        &self,
        s: candle_core::Shape,
        name: &str,
        _: candle_nn::Init,
        dtype: DType,
        dev: &Device,
    ) -> candle_core::Result<candle_core::Tensor> {
        self.0
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
            .insert(name.to_string(), s.dims().to_vec());
        candle_core::Tensor::zeros((), dtype, dev)?.broadcast_as(s)
    }

    fn get_unchecked(
        &self,
        name: &str,
        _: DType,
        _: &Device,
    ) -> candle_core::Result<candle_core::Tensor> {
        candle_core::bail!("the layout recorder needs a shape for tensor `{name}`")
    }

    fn contains_tensor(&self, _: &str) -> bool {
        true
    }
}

/// The tensor names and shapes `f` asks for.
fn record(
    f: impl FnOnce(candle_nn::VarBuilder<'static>) -> candle_core::Result<()>,
) -> Result<crate::model::Manifest> {
    let seen = Seen::default();
    let backend = Recorder(std::sync::Arc::clone(&seen));
    let vb = candle_nn::VarBuilder::from_backend(Box::new(backend), DType::F32, Device::Cpu);
    f(vb).map_err(Error::candle("listing the layout"))?;
    let tensors = seen
        .lock()
        .unwrap_or_else(std::sync::PoisonError::into_inner)
        .clone();
    let mut m = crate::model::Manifest {
        tensors,
        num_params: None,
        note: None,
    };
    m.num_params = Some(m.num_elements());
    Ok(m)
}

impl MotionUNetConfig {
    /// Tensor name → shape the image UNet file must hold (diffusers `UNet2DConditionModel`
    /// names), e.g. to check a file's header before a job starts.
    pub fn unet_manifest(&self) -> Result<crate::model::Manifest> {
        self.validate()
            .map_err(|e| Error::Invalid(format!("UNet configuration: {e}")))?;
        record(|vb| MotionUNet::new(self, vb).map(drop))
    }

    /// Tensor name → shape of the `MotionAdapter` file, `pos_embed.pe` buffers included (they
    /// are optional when loading: the table is computed).
    pub fn motion_manifest(&self) -> Result<crate::model::Manifest> {
        let base = record(|vb| MotionUNet::new(self, vb).map(drop))?;
        let all = record(|vb| MotionUNet::new(self, vb.clone())?.with_motion(vb).map(drop))?;
        let tensors = all
            .tensors
            .into_iter()
            .filter(|(k, _)| !base.tensors.contains_key(k))
            .collect();
        let mut m = crate::model::Manifest {
            tensors,
            num_params: None,
            note: None,
        };
        m.num_params = Some(m.num_elements());
        Ok(m)
    }

    /// Tensor name → shape of LayerDiffuse's attention file for this UNet (LoRA rank `rank`).
    pub fn layer_attn_manifest(&self, rank: usize) -> crate::model::Manifest {
        LayerAttnLayout::new(self).manifest(rank)
    }
}

//! Layout of LayerDiffuse's SD-1.5 transparent attention file
//! (`layer_sd15_transparent_attn.safetensors`): which attention module each unit replaces and
//! which tensors it holds.
//!
//! Unit order (LayerDiffuse's `module_mapping_sd15`): the down levels with attention in
//! order, each attention's `attn1` then `attn2`; then the up levels with attention; then the
//! mid block. For SD-1.5 that is 0–11 = down blocks 0..2, 12–29 = up blocks 1..3, 30–31 = mid.
//! Keys are `hookers.{i}.…` (the patcher's `ModuleList`) or `hookers.layers.{i}.…` (a
//! diffusers port's wrapper); both are accepted.

use std::collections::BTreeMap;

use candle_nn::VarBuilder;

use super::attention::LAYER_LORA_RANK;
use super::unet::MotionUNetConfig;
use crate::model::weights::Manifest;

/// One LayerDiffuse unit: the diffusers path of the attention module it replaces and its
/// widths.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct LayerAttnUnit {
    /// Index `i` in the file's keys.
    pub index: usize,
    /// diffusers module path, e.g. `down_blocks.0.attentions.0.transformer_blocks.0.attn1`.
    pub module: String,
    /// Hidden width (the level's channels).
    pub dim: usize,
    /// Width of what keys and values are computed from (`dim` for attn1, the text width for
    /// attn2).
    pub context_dim: usize,
}

/// All units of a UNet configuration, in file order.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct LayerAttnLayout {
    units: Vec<LayerAttnUnit>,
}

impl LayerAttnLayout {
    /// The units for `cfg` (32 for SD-1.5).
    pub fn new(cfg: &MotionUNetConfig) -> Self {
        let n = cfg.block_out_channels.len();
        let mut attns: Vec<(String, usize)> = Vec::new();
        for i in 0..n {
            if cfg.cross_attention[i] {
                for j in 0..cfg.layers_per_block {
                    attns.push((
                        format!("down_blocks.{i}.attentions.{j}"),
                        cfg.block_out_channels[i],
                    ));
                }
            }
        }
        for i in 0..n {
            if cfg.cross_attention[n - 1 - i] {
                for j in 0..=cfg.layers_per_block {
                    attns.push((
                        format!("up_blocks.{i}.attentions.{j}"),
                        cfg.block_out_channels[n - 1 - i],
                    ));
                }
            }
        }
        attns.push((
            "mid_block.attentions.0".into(),
            cfg.block_out_channels[n - 1],
        ));
        let mut units = Vec::new();
        for (path, dim) in attns {
            for b in 0..cfg.transformer_depth {
                for (which, context_dim) in [("attn1", dim), ("attn2", cfg.cross_attention_dim)] {
                    units.push(LayerAttnUnit {
                        index: units.len(),
                        module: format!("{path}.transformer_blocks.{b}.{which}"),
                        dim,
                        context_dim,
                    });
                }
            }
        }
        Self { units }
    }

    /// The units in file order.
    pub fn units(&self) -> &[LayerAttnUnit] {
        &self.units
    }

    /// Tensor name → shape of the file (prefix `hookers`, LoRA rank `rank`), for checking a
    /// file's header before a job starts and for building test files.
    pub fn manifest(&self, rank: usize) -> Manifest {
        let mut tensors = BTreeMap::new();
        for u in &self.units {
            let p = format!("hookers.{}", u.index);
            for (name, inp) in [
                ("to_q", u.dim),
                ("to_k", u.context_dim),
                ("to_v", u.context_dim),
                ("to_out", u.dim),
            ] {
                tensors.insert(format!("{p}.{name}_lora.0.down.weight"), vec![rank, inp]);
                tensors.insert(format!("{p}.{name}_lora.0.up.weight"), vec![u.dim, rank]);
            }
            tensors.insert(format!("{p}.temporal_n.weight"), vec![u.dim]);
            tensors.insert(format!("{p}.temporal_n.bias"), vec![u.dim]);
            for l in ["i", "q", "k", "v", "o"] {
                tensors.insert(format!("{p}.temporal_{l}.weight"), vec![u.dim, u.dim]);
                tensors.insert(format!("{p}.temporal_{l}.bias"), vec![u.dim]);
            }
        }
        let mut m = Manifest {
            tensors,
            num_params: None,
            note: Some(
                "LayerDiffuse transparent attention (rank-256 LoRA + temporal layers)".into(),
            ),
        };
        m.num_params = Some(m.num_elements());
        m
    }

    /// The published SD-1.5 file's layout (rank 256).
    pub fn sd15_manifest() -> Manifest {
        Self::new(&MotionUNetConfig::sd15()).manifest(LAYER_LORA_RANK)
    }
}

/// `hookers.layers` when the file uses a diffusers port's naming, else `hookers`.
pub fn layer_attn_prefix(vb: &VarBuilder) -> &'static str {
    if vb.contains_tensor("hookers.layers.0.temporal_n.weight") {
        "hookers.layers"
    } else {
        "hookers"
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn sd15_mapping_matches_layerdiffuse() {
        let l = LayerAttnLayout::new(&MotionUNetConfig::sd15());
        let u = l.units();
        assert_eq!(u.len(), 32);
        assert_eq!(
            u[0].module,
            "down_blocks.0.attentions.0.transformer_blocks.0.attn1"
        );
        assert_eq!(
            u[3].module,
            "down_blocks.0.attentions.1.transformer_blocks.0.attn2"
        );
        assert_eq!(
            u[11].module,
            "down_blocks.2.attentions.1.transformer_blocks.0.attn2"
        );
        assert_eq!(
            u[12].module,
            "up_blocks.1.attentions.0.transformer_blocks.0.attn1"
        );
        assert_eq!(
            u[29].module,
            "up_blocks.3.attentions.2.transformer_blocks.0.attn2"
        );
        assert_eq!(
            u[30].module,
            "mid_block.attentions.0.transformer_blocks.0.attn1"
        );
        assert_eq!((u[12].dim, u[13].context_dim), (1280, 768));
        assert_eq!((u[28].dim, u[28].context_dim), (320, 320));
        let m = LayerAttnLayout::sd15_manifest();
        assert_eq!(m.tensors.len(), 32 * 20);
        assert_eq!(
            m.tensors["hookers.13.to_k_lora.0.down.weight"],
            vec![256, 768]
        );
        assert_eq!(
            m.tensors["hookers.31.to_out_lora.0.up.weight"],
            vec![1280, 256]
        );
    }
}

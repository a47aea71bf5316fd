//! SD-1.5's text encoder: CLIP ViT-L/14's text transformer, from the user's
//! `text_encoder/model.safetensors` (Hugging Face `CLIPTextModel` names, `text_model.*`).
//!
//! The transformer itself is candle-transformers' `clip::text_model` (its config has public
//! fields, so tests can build a tiny one); this module adds the configuration file, the checked
//! load and the output SD conditions on: the last hidden state after the final LayerNorm, for
//! all 77 positions.

use std::path::Path;

use candle_core::{DType, Device, Tensor};
use candle_nn::VarBuilder;
use candle_transformers::models::clip::text_model::{
    Activation, ClipTextConfig, ClipTextTransformer,
};

use super::weights::Checkpoint;
use crate::{Error, Result};

pub use super::clip_tokenizer::{ClipTokenizer, MAX_TOKENS, Tokens};

/// Buffers some `CLIPTextModel` files carry that are not weights (transformers < 4.31 saved
/// the position ids); skipped when loading.
const BUFFERS: [&str; 1] = ["text_model.embeddings.position_ids"];

/// A CLIP text encoder.
pub struct ClipTextEncoder {
    model: ClipTextTransformer,
    config: ClipTextConfig,
}

impl std::fmt::Debug for ClipTextEncoder {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("ClipTextEncoder")
            .field("config", &self.config)
            .finish_non_exhaustive()
    }
}

/// SD-1.5's text encoder configuration (openai/clip-vit-large-patch14's text tower).
pub fn sd15_config() -> ClipTextConfig {
    ClipTextConfig {
        vocab_size: 49408,
        embed_dim: 768,
        activation: Activation::QuickGelu,
        intermediate_size: 3072,
        max_position_embeddings: MAX_TOKENS,
        pad_with: None,
        num_hidden_layers: 12,
        num_attention_heads: 12,
        projection_dim: 768,
    }
}

/// Parses a Hugging Face `text_encoder/config.json` (`CLIPTextConfig`). Only `quick_gelu`
/// models are supported (SD-1.x); `source` names the file in errors.
pub fn config_from_json(text: &str, source: &str) -> Result<ClipTextConfig> {
    let v: serde_json::Value = serde_json::from_str(text)
        .map_err(|e| Error::Model(format!("invalid text encoder config ({e}): {source}")))?;
    let base = sd15_config();
    let num = |key: &str, default: usize| -> Result<usize> {
        match v.get(key) {
            None => Ok(default),
            Some(x) => x.as_u64().map(|n| n as usize).ok_or_else(|| {
                Error::Model(format!(
                    "text encoder config: `{key}` is not a count: {source}"
                ))
            }),
        }
    };
    if let Some(act) = v.get("hidden_act").and_then(serde_json::Value::as_str)
        && act != "quick_gelu"
    {
        return Err(Error::Model(format!(
            "text encoder config: activation `{act}` is not supported (SD-1.5's CLIP uses \
             quick_gelu; SD-2's OpenCLIP text encoder is not supported): {source}"
        )));
    }
    let cfg = ClipTextConfig {
        vocab_size: num("vocab_size", base.vocab_size)?,
        embed_dim: num("hidden_size", base.embed_dim)?,
        activation: Activation::QuickGelu,
        intermediate_size: num("intermediate_size", base.intermediate_size)?,
        max_position_embeddings: num("max_position_embeddings", base.max_position_embeddings)?,
        pad_with: None,
        num_hidden_layers: num("num_hidden_layers", base.num_hidden_layers)?,
        num_attention_heads: num("num_attention_heads", base.num_attention_heads)?,
        projection_dim: num("projection_dim", base.projection_dim)?,
    };
    if cfg.num_attention_heads == 0 || !cfg.embed_dim.is_multiple_of(cfg.num_attention_heads) {
        return Err(Error::Model(format!(
            "text encoder config: hidden_size {} is not a multiple of num_attention_heads {}: \
             {source}",
            cfg.embed_dim, cfg.num_attention_heads
        )));
    }
    if cfg.max_position_embeddings < MAX_TOKENS {
        return Err(Error::Model(format!(
            "text encoder config: max_position_embeddings {} is below the {MAX_TOKENS} tokens SD \
             uses: {source}",
            cfg.max_position_embeddings
        )));
    }
    Ok(cfg)
}

/// The configuration JSON as a string, for the tiny files tests write.
pub fn config_to_json(cfg: &ClipTextConfig) -> String {
    serde_json::json!({
        "architectures": ["CLIPTextModel"],
        "hidden_act": "quick_gelu",
        "vocab_size": cfg.vocab_size,
        "hidden_size": cfg.embed_dim,
        "intermediate_size": cfg.intermediate_size,
        "max_position_embeddings": cfg.max_position_embeddings,
        "num_hidden_layers": cfg.num_hidden_layers,
        "num_attention_heads": cfg.num_attention_heads,
        "projection_dim": cfg.projection_dim,
    })
    .to_string()
}

impl ClipTextEncoder {
    /// Builds the encoder; `vb` is the file's root (tensors under `text_model.`).
    pub fn new(cfg: &ClipTextConfig, vb: VarBuilder) -> candle_core::Result<Self> {
        Ok(Self {
            model: ClipTextTransformer::new(vb.pp("text_model"), cfg)?,
            config: cfg.clone(),
        })
    }

    /// Loads `weights` (a `CLIPTextModel` safetensors file) with the configuration `cfg`,
    /// checking every tensor by name and shape; errors name the file and the tensor.
    pub fn load(
        weights: &Path,
        cfg: &ClipTextConfig,
        dtype: DType,
        device: &Device,
    ) -> Result<Self> {
        let ck = without_buffers(Checkpoint::read(weights, dtype, device)?);
        ck.build("CLIP text encoder", dtype, device, |vb| Self::new(cfg, vb))
    }

    /// The configuration.
    pub fn config(&self) -> &ClipTextConfig {
        &self.config
    }

    /// Width of the hidden states (768 for SD-1.5), the UNet's cross-attention dimension.
    pub fn dim(&self) -> usize {
        self.config.embed_dim
    }

    /// Token ids `[B, 77]` (u32) -> last hidden state `[B, 77, dim]` after the final LayerNorm.
    pub fn forward(&self, ids: &Tensor) -> candle_core::Result<Tensor> {
        self.model.forward_with_mask(ids, usize::MAX)
    }

    /// Encodes one token sequence to `[1, 77, dim]`.
    pub fn encode_ids(&self, ids: &[u32], device: &Device) -> candle_core::Result<Tensor> {
        let t = Tensor::new(ids, device)?.unsqueeze(0)?;
        self.forward(&t)
    }
}

/// The checkpoint less the non-weight buffers of [`BUFFERS`].
pub fn without_buffers(ck: Checkpoint) -> Checkpoint {
    if !BUFFERS.iter().any(|b| ck.get(b).is_some()) {
        return ck;
    }
    let tensors = ck
        .names()
        .into_iter()
        .filter(|n| !BUFFERS.contains(&n.as_str()))
        .filter_map(|n| ck.get(&n).cloned().map(|t| (n, t)))
        .collect();
    Checkpoint::from_tensors(tensors, ck.source().to_string())
}

#[cfg(test)]
pub(crate) mod tests {
    use super::*;
    use crate::model::weights::{save_checkpoint, varmap_tensors};
    use candle_nn::VarMap;

    /// A tiny CLIP text encoder (width 16, 2 layers, 2 heads) over the tiny tokenizer's vocab.
    pub(crate) fn tiny_config(vocab_size: usize) -> ClipTextConfig {
        ClipTextConfig {
            vocab_size,
            embed_dim: 16,
            activation: Activation::QuickGelu,
            intermediate_size: 32,
            max_position_embeddings: MAX_TOKENS,
            pad_with: None,
            num_hidden_layers: 2,
            num_attention_heads: 2,
            projection_dim: 16,
        }
    }

    #[test]
    fn config_json_round_trips_and_rejects_gelu() {
        let cfg = tiny_config(600);
        let back = config_from_json(&config_to_json(&cfg), "cfg").expect("parse");
        assert_eq!(back.embed_dim, 16);
        assert_eq!(back.num_hidden_layers, 2);
        assert_eq!(back.vocab_size, 600);
        let e = config_from_json(r#"{"hidden_act": "gelu"}"#, "x.json").expect_err("gelu");
        assert!(e.to_string().contains("x.json"), "{e}");
        let e = config_from_json(r#"{"hidden_size": 10, "num_attention_heads": 3}"#, "y")
            .expect_err("heads");
        assert!(e.to_string().contains("num_attention_heads"), "{e}");
    }

    #[test]
    fn saved_encoder_loads_checked_and_is_causal() {
        let dir = tempfile::tempdir().expect("tempdir");
        let cfg = tiny_config(600);
        let varmap = VarMap::new();
        let vb = VarBuilder::from_varmap(&varmap, DType::F32, &Device::Cpu);
        let enc = ClipTextEncoder::new(&cfg, vb).expect("build");
        let mut tensors = varmap_tensors(&varmap);
        // An old-style file with the position-id buffer still loads.
        tensors.insert(
            BUFFERS[0].to_string(),
            Tensor::arange(0i64, 77, &Device::Cpu)
                .and_then(|t| t.unsqueeze(0))
                .expect("ids"),
        );
        let path = dir.path().join("model.safetensors");
        save_checkpoint(&tensors, "{}", &path).expect("save");
        let loaded = ClipTextEncoder::load(&path, &cfg, DType::F32, &Device::Cpu).expect("load");
        let mut ids = vec![598u32, 5, 9, 599];
        ids.resize(MAX_TOKENS, 599);
        let a = enc.encode_ids(&ids, &Device::Cpu).expect("a");
        let b = loaded.encode_ids(&ids, &Device::Cpu).expect("b");
        assert_eq!(a.dims(), &[1, MAX_TOKENS, 16]);
        let diff = (&a - &b)
            .and_then(|d| d.abs())
            .and_then(|d| d.max_all())
            .and_then(|d| d.to_scalar::<f32>())
            .expect("diff");
        assert_eq!(diff, 0.0);
        // Causal: changing token 3 leaves positions 0..3 alone and changes position 3.
        let mut other = ids.clone();
        other[3] = 7;
        let c = enc.encode_ids(&other, &Device::Cpu).expect("c");
        let row = |t: &Tensor, i: usize| -> Vec<f32> {
            t.get(0)
                .and_then(|t| t.get(i))
                .and_then(|t| t.to_vec1())
                .expect("row")
        };
        for i in 0..3 {
            assert_eq!(row(&a, i), row(&c, i));
        }
        assert_ne!(row(&a, 3), row(&c, 3));

        // A misshaped tensor is named with the file.
        let mut bad = varmap_tensors(&varmap);
        let key = "text_model.embeddings.token_embedding.weight".to_string();
        bad.insert(
            key.clone(),
            Tensor::zeros((10, 16), DType::F32, &Device::Cpu).expect("zeros"),
        );
        let bad_path = dir.path().join("bad.safetensors");
        save_checkpoint(&bad, "{}", &bad_path).expect("save");
        let e = ClipTextEncoder::load(&bad_path, &cfg, DType::F32, &Device::Cpu)
            .expect_err("misshaped");
        let msg = e.to_string();
        assert!(
            msg.contains(&key) && msg.contains("bad.safetensors"),
            "{msg}"
        );
    }
}

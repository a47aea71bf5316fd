//! The user's SD-1.5 + AnimateDiff + LayerDiffuse weights: where they are, whether they are
//! complete and the right shapes (checked from the safetensors headers before a job starts),
//! and loading the parts the generation pipeline needs.
//!
//! Files come from a diffusers-layout folder (`unet/`, `vae/`, `text_encoder/`, `tokenizer/`,
//! plus the motion adapter and LayerDiffuse files beside them), from single-file options that
//! override it, or from the standard Hugging Face cache when the user already has them there.
//! Nothing is ever downloaded.
//!
//! Checking builds each model over *placeholder* tensors with the header's shapes (one shared
//! zero scalar, nothing read from the file's data), so the model code itself says what it
//! needs and every missing or misshaped tensor is named with its file.

use std::collections::HashMap;
use std::io::Read;
use std::path::{Path, PathBuf};
use std::sync::Arc;

use candle_core::{DType, Device};
use candle_transformers::models::stable_diffusion::vae::AutoEncoderKLConfig;

use super::generate::{ClipConditioner, Generator, LatentNorm, TransparencyDecoder};
use super::scheduler::NoiseSchedule;
use crate::model::clip::{self, ClipTextEncoder};
use crate::model::codec::SD_SCALING_FACTOR;
use crate::model::diffusion::Denoiser;
use crate::model::sd::{MotionUNet, MotionUNetConfig};
use crate::model::weights::{Checkpoint, ILDIFF_CONFIG_KEY, Manifest};
use crate::model::{
    IldiffConfig, IldiffDecoder, SdVae, TransparentDecoder, TransparentDecoderConfig,
};
use crate::{Error, Result};

/// File names of the LayerDiffuse SD-1.5 release and the AnimateDiff motion adapter.
pub const LAYER_ATTN_FILE: &str = "layer_sd15_transparent_attn.safetensors";
pub const LAYER_DECODER_FILE: &str = "layer_sd15_vae_transparent_decoder.safetensors";
pub const MOTION_FILE: &str = "diffusion_pytorch_model.safetensors";

/// Where each part's file is. `None` = not found (yet).
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct SdFiles {
    /// `unet/diffusion_pytorch_model.safetensors`.
    pub unet: Option<PathBuf>,
    /// AnimateDiff `MotionAdapter` weights.
    pub motion: Option<PathBuf>,
    /// `vae/diffusion_pytorch_model.safetensors`.
    pub vae: Option<PathBuf>,
    /// `text_encoder/model.safetensors` (its `config.json` beside it is read when present).
    pub text_encoder: Option<PathBuf>,
    /// The `tokenizer/` folder (`vocab.json`, `merges.txt`).
    pub tokenizer: Option<PathBuf>,
    /// LayerDiffuse's `layer_sd15_transparent_attn.safetensors`.
    pub layer_attn: Option<PathBuf>,
    /// The transparency decoder: an ILDiff checkpoint trained on SD latents, or LayerDiffuse's
    /// `layer_sd15_vae_transparent_decoder.safetensors`.
    pub decoder: Option<PathBuf>,
}

fn existing(p: PathBuf) -> Option<PathBuf> {
    p.exists().then_some(p)
}

impl SdFiles {
    /// The parts found in a diffusers-layout folder (and LayerDiffuse / motion files at its top
    /// level or in `motion_adapter/`).
    pub fn from_dir(dir: &Path) -> Self {
        let pick = |names: &[&str]| names.iter().find_map(|n| existing(dir.join(n)));
        Self {
            unet: pick(&["unet/diffusion_pytorch_model.safetensors"]),
            motion: pick(&[
                "motion_adapter/diffusion_pytorch_model.safetensors",
                "motion_adapter.safetensors",
            ]),
            vae: pick(&["vae/diffusion_pytorch_model.safetensors"]),
            text_encoder: pick(&["text_encoder/model.safetensors"]),
            tokenizer: pick(&["tokenizer"]),
            layer_attn: pick(&[LAYER_ATTN_FILE]),
            decoder: pick(&["ildiff.safetensors", LAYER_DECODER_FILE]),
        }
    }

    /// `self` with every part `other` has replacing this one's (single-file options over a
    /// folder).
    pub fn overridden_by(self, other: SdFiles) -> Self {
        Self {
            unet: other.unet.or(self.unet),
            motion: other.motion.or(self.motion),
            vae: other.vae.or(self.vae),
            text_encoder: other.text_encoder.or(self.text_encoder),
            tokenizer: other.tokenizer.or(self.tokenizer),
            layer_attn: other.layer_attn.or(self.layer_attn),
            decoder: other.decoder.or(self.decoder),
        }
    }

    /// True when no part is set.
    pub fn is_empty(&self) -> bool {
        *self == SdFiles::default()
    }

    fn parts(&self) -> [(&'static str, &'static str, &Option<PathBuf>); 7] {
        [
            (
                "unet",
                "SD-1.5 UNet (unet/diffusion_pytorch_model.safetensors)",
                &self.unet,
            ),
            (
                "motion",
                "AnimateDiff motion adapter (e.g. guoyww/animatediff-motion-adapter-v1-5-2)",
                &self.motion,
            ),
            (
                "vae",
                "SD VAE (vae/diffusion_pytorch_model.safetensors)",
                &self.vae,
            ),
            (
                "text-encoder",
                "CLIP text encoder (text_encoder/model.safetensors)",
                &self.text_encoder,
            ),
            (
                "tokenizer",
                "CLIP tokenizer folder (tokenizer/ with vocab.json and merges.txt)",
                &self.tokenizer,
            ),
            (
                "layer-attn",
                "LayerDiffuse attention (layer_sd15_transparent_attn.safetensors)",
                &self.layer_attn,
            ),
            (
                "decoder",
                "transparency decoder (an ILDiff checkpoint or layer_sd15_vae_transparent_decoder.safetensors)",
                &self.decoder,
            ),
        ]
    }

    /// Checks every part from the file headers (no tensor data is read) and returns every
    /// problem at once: what is missing (with the option that supplies it) and which tensor of
    /// which file is absent or misshaped.
    pub fn check(&self) -> Result<()> {
        let mut problems = Vec::new();
        for (flag, what, path) in self.parts() {
            match path {
                None => problems.push(format!("missing: {what}; give it with --{flag} PATH")),
                Some(p) => match check_part(self, flag, p) {
                    Ok(()) => {}
                    Err(Error::Model(m)) => problems.push(m),
                    Err(e) => problems.push(e.to_string()),
                },
            }
        }
        if problems.is_empty() {
            Ok(())
        } else {
            Err(Error::Model(format!(
                "the SD-1.5 weights are incomplete or wrong:\n  - {}",
                problems.join("\n  - ")
            )))
        }
    }

    /// Loads the text conditioner, VAE and transparency decoder (the UNet comes from
    /// [`load_denoiser`]) and assembles the generator.
    pub fn load(&self, denoiser: Arc<dyn Denoiser>, device: &Device) -> Result<Generator> {
        let need = |p: &Option<PathBuf>, flag: &str| {
            p.clone()
                .ok_or_else(|| Error::Model(format!("missing --{flag}")))
        };
        let tokenizer =
            crate::model::weights::read_clip_tokenizer(&need(&self.tokenizer, "tokenizer")?)?;
        let te = need(&self.text_encoder, "text-encoder")?;
        let encoder = ClipTextEncoder::load(&te, &text_config(&te)?, DType::F32, device)?;
        let vae_path = need(&self.vae, "vae")?;
        let vae_cfg = vae_config(&vae_path)?;
        let vae = Checkpoint::read(&vae_path, DType::F32, device)?.build(
            "SD VAE",
            DType::F32,
            device,
            |vb| SdVae::with_config(vb, vae_cfg),
        )?;
        let cfg = unet_config(self)?;
        if encoder.dim() != cfg.cross_attention_dim {
            return Err(Error::Model(format!(
                "the text encoder makes {}-wide states but the UNet attends to {}: {} / {}",
                encoder.dim(),
                cfg.cross_attention_dim,
                te.display(),
                self.unet
                    .as_deref()
                    .map(Path::display)
                    .map(|d| d.to_string())
                    .unwrap_or_default()
            )));
        }
        let decoder = load_decoder(&need(&self.decoder, "decoder")?, device)?;
        let generator = Generator {
            name: "SD-1.5 + AnimateDiff + LayerDiffuse".into(),
            conditioner: Arc::new(ClipConditioner {
                tokenizer,
                encoder,
                device: device.clone(),
            }),
            denoiser,
            codec: Arc::new(vae),
            latent_norm: LatentNorm::scale(SD_SCALING_FACTOR),
            schedule: NoiseSchedule::sd15(),
            decoder: Arc::new(decoder),
            size_multiple: 64,
            default_size: 512,
            decode_chunk: 2,
            frame_window: None,
            frame_noise_share: 0.0,
            key_colour: None,
            device: device.clone(),
        };
        generator.check()?;
        Ok(generator)
    }
}

/// The motion-aware SD-1.5 UNet with LayerDiffuse attention, from `files` (f32 on `device`).
pub fn load_denoiser(files: &SdFiles, device: &Device) -> Result<Arc<dyn Denoiser>> {
    let unet = files
        .unet
        .as_deref()
        .ok_or_else(|| Error::Model("missing --unet".into()))?;
    let cfg = unet_config(files)?;
    let model = MotionUNet::load(
        &cfg,
        unet,
        files.motion.as_deref(),
        files.layer_attn.as_deref(),
        DType::F32,
        device,
    )?;
    Ok(Arc::new(model))
}

/// The UNet's shape: `config.json` beside the UNet file (diffusers `UNet2DConditionModel`) and
/// beside the motion adapter (`MotionAdapter`), else SD-1.5 with AnimateDiff v2.
pub fn unet_config(files: &SdFiles) -> Result<MotionUNetConfig> {
    let mut cfg = MotionUNetConfig::sd15();
    let read = |p: &Path| -> Result<Option<(serde_json::Value, PathBuf)>> {
        let c = p.with_file_name("config.json");
        let Ok(text) = std::fs::read_to_string(&c) else {
            return Ok(None);
        };
        let v = serde_json::from_str(&text)
            .map_err(|e| Error::Model(format!("invalid config ({e}): {}", c.display())))?;
        Ok(Some((v, c)))
    };
    let count = |v: &serde_json::Value, k: &str| {
        v.get(k)
            .and_then(serde_json::Value::as_u64)
            .map(|n| n as usize)
    };
    if let Some((v, path)) = files.unet.as_deref().map(read).transpose()?.flatten() {
        let bad = |k: &str| {
            Error::Model(format!(
                "UNet config: `{k}` is not understood: {}",
                path.display()
            ))
        };
        if let Some(b) = v.get("block_out_channels") {
            cfg.block_out_channels = b
                .as_array()
                .and_then(|a| a.iter().map(|x| x.as_u64().map(|n| n as usize)).collect())
                .ok_or_else(|| bad("block_out_channels"))?;
        }
        if let Some(d) = v.get("down_block_types") {
            cfg.cross_attention = d
                .as_array()
                .and_then(|a| {
                    a.iter()
                        .map(|x| x.as_str().map(|s| s.contains("CrossAttn")))
                        .collect()
                })
                .ok_or_else(|| bad("down_block_types"))?;
        }
        // SD-1.5's config calls its head count `attention_head_dim`.
        if let Some(h) = count(&v, "attention_head_dim") {
            cfg.heads = h;
        }
        for (k, slot) in [
            ("in_channels", &mut cfg.in_channels),
            ("out_channels", &mut cfg.out_channels),
            ("layers_per_block", &mut cfg.layers_per_block),
            ("norm_num_groups", &mut cfg.norm_num_groups),
            ("cross_attention_dim", &mut cfg.cross_attention_dim),
            ("transformer_layers_per_block", &mut cfg.transformer_depth),
        ] {
            if let Some(n) = count(&v, k) {
                *slot = n;
            }
        }
        if let Some(e) = v.get("norm_eps").and_then(serde_json::Value::as_f64) {
            cfg.norm_eps = e;
        }
    }
    if let Some((v, _)) = files.motion.as_deref().map(read).transpose()?.flatten() {
        if let Some(h) = count(&v, "motion_num_attention_heads") {
            cfg.motion_heads = h;
        }
        if let Some(n) = count(&v, "motion_max_seq_length") {
            cfg.motion_max_frames = n;
        }
        if let Some(n) = count(&v, "motion_layers_per_block") {
            cfg.motion_layers = n;
        }
        if let Some(b) = v
            .get("use_motion_mid_block")
            .and_then(serde_json::Value::as_bool)
        {
            cfg.motion_mid_block = b;
        }
    }
    cfg.validate()
        .map_err(|e| Error::Model(format!("UNet configuration: {e}")))?;
    Ok(cfg)
}

/// Compares a file's header with the layout a model needs; names the first few problems.
fn compare_layout(
    path: &Path,
    what: &str,
    header: &Manifest,
    want: &Manifest,
    optional: &dyn Fn(&str) -> bool,
) -> Result<()> {
    let mut problems = Vec::new();
    for (name, shape) in &want.tensors {
        match header.tensors.get(name) {
            None if optional(name) => {}
            None => problems.push(format!("tensor `{name}` (shape {shape:?}) is missing")),
            Some(s) if s != shape => problems.push(format!(
                "tensor `{name}` has shape {s:?}, expected {shape:?}"
            )),
            Some(_) => {}
        }
    }
    let extra = header
        .tensors
        .keys()
        .filter(|k| !want.tensors.contains_key(*k))
        .count();
    if extra > 0 {
        problems.push(format!(
            "{extra} tensor(s) are not part of the {what} (wrong file or configuration?)"
        ));
    }
    if problems.is_empty() {
        return Ok(());
    }
    let n = problems.len();
    let shown: Vec<String> = problems.into_iter().take(4).collect();
    let more = if n > 4 {
        format!(" (and {} more)", n - 4)
    } else {
        String::new()
    };
    Err(Error::Model(format!(
        "{what}: {}{more}: {}",
        shown.join("; "),
        path.display()
    )))
}

/// The text encoder's configuration: `config.json` beside the weights, else SD-1.5's.
fn text_config(
    weights: &Path,
) -> Result<candle_transformers::models::clip::text_model::ClipTextConfig> {
    let cfg_path = weights.with_file_name("config.json");
    match std::fs::read_to_string(&cfg_path) {
        Ok(text) => clip::config_from_json(&text, &cfg_path.display().to_string()),
        Err(_) => Ok(clip::sd15_config()),
    }
}

/// The VAE's configuration: `config.json` beside the weights, else SD-1.5's.
fn vae_config(weights: &Path) -> Result<AutoEncoderKLConfig> {
    let cfg_path = weights.with_file_name("config.json");
    let Ok(text) = std::fs::read_to_string(&cfg_path) else {
        return Ok(SdVae::sd15_config());
    };
    let bad = |why: &str| Error::Model(format!("VAE config: {why}: {}", cfg_path.display()));
    let v: serde_json::Value =
        serde_json::from_str(&text).map_err(|e| bad(&format!("invalid JSON ({e})")))?;
    let base = SdVae::sd15_config();
    let num = |k: &str, d: usize| {
        v.get(k)
            .and_then(serde_json::Value::as_u64)
            .map_or(d, |n| n as usize)
    };
    let blocks = match v.get("block_out_channels") {
        None => base.block_out_channels.clone(),
        Some(b) => b
            .as_array()
            .and_then(|a| a.iter().map(|x| x.as_u64().map(|n| n as usize)).collect())
            .ok_or_else(|| bad("block_out_channels is not a list of counts"))?,
    };
    Ok(AutoEncoderKLConfig {
        block_out_channels: blocks,
        layers_per_block: num("layers_per_block", base.layers_per_block),
        latent_channels: num("latent_channels", base.latent_channels),
        norm_num_groups: num("norm_num_groups", base.norm_num_groups),
        use_quant_conv: true,
        use_post_quant_conv: true,
    })
}

/// An ILDiff checkpoint (it carries its configuration) or LayerDiffuse's decoder file.
pub fn load_decoder(path: &Path, device: &Device) -> Result<TransparencyDecoder> {
    let ck = Checkpoint::read(path, DType::F32, device)?;
    match ck.metadata(ILDIFF_CONFIG_KEY) {
        Some(json) => {
            let cfg = IldiffConfig::from_json(json, &path.display().to_string())?;
            let model = ck.build("ILDiff decoder", DType::F32, device, |vb| {
                IldiffDecoder::new(&cfg, vb)
            })?;
            Ok(TransparencyDecoder::Ildiff {
                model: Box::new(model),
                window: 8,
            })
        }
        None => {
            let cfg = TransparentDecoderConfig::official();
            let decoder = ck.build(
                "LayerDiffuse transparent decoder",
                DType::F32,
                device,
                |vb| TransparentDecoder::new(&cfg, vb),
            )?;
            Ok(TransparencyDecoder::LayerDiffuse {
                decoder: Box::new(decoder),
                tta: true,
            })
        }
    }
}

/// Largest safetensors header read (the format's own limit).
const MAX_HEADER: u64 = 100_000_000;

/// Tensor names and shapes, and the metadata, of a safetensors file, from its header alone.
pub fn read_header(path: &Path) -> Result<(Manifest, HashMap<String, String>)> {
    let bad = |why: String| Error::Model(format!("cannot read weights: {why}: {}", path.display()));
    let mut file = std::fs::File::open(path).map_err(|e| Error::io("opening weights", path, e))?;
    let size = file
        .metadata()
        .map_err(|e| Error::io("reading weights", path, e))?
        .len();
    let mut len = [0u8; 8];
    file.read_exact(&mut len)
        .map_err(|_| bad("not a safetensors file (too short)".into()))?;
    let n = u64::from_le_bytes(len);
    if n > MAX_HEADER || n > size.saturating_sub(8) {
        return Err(bad(format!(
            "not a safetensors file, or truncated (header of {n} bytes in a {size}-byte file)"
        )));
    }
    let mut header = vec![0u8; n as usize];
    file.read_exact(&mut header)
        .map_err(|e| Error::io("reading weights", path, e))?;
    let value: serde_json::Map<String, serde_json::Value> = serde_json::from_slice(&header)
        .map_err(|e| bad(format!("not a safetensors file (header: {e})")))?;
    let mut tensors = std::collections::BTreeMap::new();
    let mut metadata = HashMap::new();
    for (name, v) in value {
        if name == "__metadata__" {
            if let Some(m) = v.as_object() {
                for (k, x) in m {
                    if let Some(s) = x.as_str() {
                        metadata.insert(k.clone(), s.to_string());
                    }
                }
            }
            continue;
        }
        let shape = v
            .get("shape")
            .and_then(serde_json::Value::as_array)
            .and_then(|a| a.iter().map(|d| d.as_u64().map(|d| d as usize)).collect())
            .ok_or_else(|| bad(format!("tensor `{name}` has no shape in the header")))?;
        tensors.insert(name, shape);
    }
    Ok((
        Manifest {
            tensors,
            num_params: None,
            note: None,
        },
        metadata,
    ))
}

/// A checkpoint of zero placeholders with the header's shapes, named after the file.
fn placeholders(path: &Path) -> Result<(Checkpoint, HashMap<String, String>)> {
    let (manifest, meta) = read_header(path)?;
    let tensors = manifest
        .placeholder_tensors(DType::F32, &Device::Cpu)
        .map_err(|e| Error::Model(format!("{e}: {}", path.display())))?;
    Ok((
        Checkpoint::from_tensors(tensors, path.display().to_string()),
        meta,
    ))
}

fn check_part(files: &SdFiles, flag: &str, path: &Path) -> Result<()> {
    let cpu = Device::Cpu;
    match flag {
        "tokenizer" => crate::model::weights::read_clip_tokenizer(path).map(|_| ()),
        "text-encoder" => {
            let (ck, _) = placeholders(path)?;
            let cfg = text_config(path)?;
            clip::without_buffers(ck)
                .build("CLIP text encoder", DType::F32, &cpu, |vb| {
                    ClipTextEncoder::new(&cfg, vb)
                })
                .map(|_| ())
        }
        "vae" => {
            let (ck, _) = placeholders(path)?;
            let cfg = vae_config(path)?;
            ck.build("SD VAE", DType::F32, &cpu, |vb| SdVae::with_config(vb, cfg))
                .map(|_| ())
        }
        "decoder" => {
            let (ck, meta) = placeholders(path)?;
            match meta.get(ILDIFF_CONFIG_KEY) {
                Some(json) => {
                    let cfg = IldiffConfig::from_json(json, &path.display().to_string())?;
                    ck.build("ILDiff decoder", DType::F32, &cpu, |vb| {
                        IldiffDecoder::new(&cfg, vb)
                    })
                    .map(|_| ())
                }
                None => {
                    let cfg = TransparentDecoderConfig::official();
                    ck.build("LayerDiffuse transparent decoder", DType::F32, &cpu, |vb| {
                        TransparentDecoder::new(&cfg, vb)
                    })
                    .map(|_| ())
                }
            }
        }
        "unet" | "motion" | "layer-attn" => {
            let cfg = unet_config(files)?;
            let (header, _) = read_header(path)?;
            match flag {
                "unet" => {
                    compare_layout(path, "SD-1.5 UNet", &header, &cfg.unet_manifest()?, &|_| {
                        false
                    })
                }
                "motion" => compare_layout(
                    path,
                    "motion adapter",
                    &header,
                    &cfg.motion_manifest()?,
                    // The position tables are computed, not loaded.
                    &|n| n.ends_with("pos_embed.pe"),
                ),
                _ => {
                    // `hookers.layers.{i}` (a diffusers port) and `hookers.{i}` name the same.
                    let tensors = header
                        .tensors
                        .into_iter()
                        .map(|(k, v)| (k.replacen("hookers.layers.", "hookers.", 1), v))
                        .collect();
                    let header = Manifest {
                        tensors,
                        num_params: None,
                        note: None,
                    };
                    let rank = header
                        .tensors
                        .get("hookers.0.to_q_lora.0.down.weight")
                        .and_then(|s| s.first().copied())
                        .unwrap_or(256);
                    compare_layout(
                        path,
                        "LayerDiffuse attention",
                        &header,
                        &cfg.layer_attn_manifest(rank),
                        &|_| false,
                    )
                }
            }
        }
        _ => Ok(()),
    }
}

/// The Hugging Face hub cache folder: `$HF_HUB_CACHE`, `$HF_HOME/hub`, or
/// `~/.cache/huggingface/hub`.
pub fn hf_cache_dir() -> Option<PathBuf> {
    if let Some(p) = std::env::var_os("HF_HUB_CACHE") {
        return Some(PathBuf::from(p));
    }
    if let Some(p) = std::env::var_os("HF_HOME") {
        return Some(PathBuf::from(p).join("hub"));
    }
    let home = std::env::var_os("HOME")?;
    Some(PathBuf::from(home).join(".cache/huggingface/hub"))
}

/// Parts found in a Hugging Face hub cache (`models--*/snapshots/*/`), offline. A snapshot with
/// `unet/`, `vae/`, `text_encoder/` and `tokenizer/` gives the base model (repositories named
/// like SD-1.5 first); motion adapters and LayerDiffuse files are found by name.
pub fn discover_hf_cache(hub: &Path) -> SdFiles {
    let mut repos: Vec<PathBuf> = std::fs::read_dir(hub)
        .map(|d| d.filter_map(|e| e.ok().map(|e| e.path())).collect())
        .unwrap_or_default();
    repos.retain(|p| {
        p.file_name()
            .and_then(|n| n.to_str())
            .is_some_and(|n| n.starts_with("models--"))
    });
    // SD-1.5 repositories before other bases; otherwise stable order.
    repos.sort_by_key(|p| {
        let n = p.to_string_lossy().to_lowercase();
        (
            !(n.contains("v1-5") || n.contains("v1_5") || n.contains("sd15")),
            n,
        )
    });
    let mut found = SdFiles::default();
    for repo in repos {
        let name = repo.to_string_lossy().to_lowercase();
        let mut snaps: Vec<PathBuf> = std::fs::read_dir(repo.join("snapshots"))
            .map(|d| d.filter_map(|e| e.ok().map(|e| e.path())).collect())
            .unwrap_or_default();
        snaps.sort();
        for snap in snaps {
            let here = SdFiles::from_dir(&snap);
            let is_base = here.unet.is_some()
                && here.vae.is_some()
                && here.text_encoder.is_some()
                && here.tokenizer.is_some();
            if is_base && found.unet.is_none() {
                // Parts found earlier in their own repositories win over the base's.
                let earlier = SdFiles {
                    layer_attn: found.layer_attn.take(),
                    decoder: found.decoder.take(),
                    motion: found.motion.take(),
                    ..SdFiles::default()
                };
                found = here.clone().overridden_by(earlier);
            }
            if found.motion.is_none() && (name.contains("motion") || name.contains("animatediff")) {
                found.motion = existing(snap.join(MOTION_FILE));
            }
            if found.layer_attn.is_none() {
                found.layer_attn = here.layer_attn.clone();
            }
            if found.decoder.is_none() {
                found.decoder = existing(snap.join(LAYER_DECODER_FILE));
            }
        }
    }
    found
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn unet_config_comes_from_the_diffusers_configs() {
        let dir = tempfile::tempdir().expect("tempdir");
        let unet = dir.path().join("unet/diffusion_pytorch_model.safetensors");
        let motion = dir
            .path()
            .join("motion/diffusion_pytorch_model.safetensors");
        for p in [&unet, &motion] {
            std::fs::create_dir_all(p.parent().expect("parent")).expect("dir");
        }
        let files = SdFiles {
            unet: Some(unet.clone()),
            motion: Some(motion.clone()),
            ..SdFiles::default()
        };
        assert_eq!(
            unet_config(&files).expect("defaults"),
            MotionUNetConfig::sd15()
        );
        std::fs::write(
            unet.with_file_name("config.json"),
            r#"{"block_out_channels": [32, 64], "down_block_types": ["CrossAttnDownBlock2D",
               "DownBlock2D"], "attention_head_dim": 2, "norm_num_groups": 8,
               "cross_attention_dim": 32}"#,
        )
        .expect("write");
        std::fs::write(
            motion.with_file_name("config.json"),
            r#"{"motion_num_attention_heads": 2, "use_motion_mid_block": false}"#,
        )
        .expect("write");
        let cfg = unet_config(&files).expect("tiny");
        assert_eq!(cfg.block_out_channels, [32, 64]);
        assert_eq!(cfg.cross_attention, [true, false]);
        assert_eq!(
            (cfg.heads, cfg.motion_heads, cfg.norm_num_groups),
            (2, 2, 8)
        );
        assert!(!cfg.motion_mid_block);
        std::fs::write(
            unet.with_file_name("config.json"),
            r#"{"norm_num_groups": 7}"#,
        )
        .expect("write");
        let e = unet_config(&files).expect_err("groups");
        assert!(e.to_string().contains("groups"), "{e}");
    }

    #[test]
    fn layouts_are_compared_by_name_and_shape() {
        let want = Manifest {
            tensors: [("a".to_string(), vec![2, 3]), ("b.pe".to_string(), vec![4])]
                .into_iter()
                .collect(),
            num_params: None,
            note: None,
        };
        let mut header = want.clone();
        let p = Path::new("x.safetensors");
        assert!(compare_layout(p, "part", &header, &want, &|_| false).is_ok());
        header.tensors.remove("b.pe");
        assert!(compare_layout(p, "part", &header, &want, &|n| n.ends_with(".pe")).is_ok());
        let e = compare_layout(p, "part", &header, &want, &|_| false).expect_err("missing");
        assert!(
            e.to_string().contains("`b.pe` (shape [4]) is missing"),
            "{e}"
        );
        header.tensors.insert("a".into(), vec![3, 2]);
        header.tensors.insert("c".into(), vec![1]);
        let e = compare_layout(p, "part", &header, &want, &|_| true).expect_err("shape");
        let msg = e.to_string();
        assert!(
            msg.contains("`a` has shape [3, 2], expected [2, 3]"),
            "{msg}"
        );
        assert!(
            msg.contains("1 tensor(s) are not part of the part"),
            "{msg}"
        );
        assert!(msg.contains("x.safetensors"), "{msg}");
    }
}

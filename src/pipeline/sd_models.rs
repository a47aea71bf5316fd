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

use super::generate::{ClipConditioner, Generator, TransparencyDecoder};
use super::scheduler::NoiseSchedule;
use crate::model::clip::{self, ClipTextEncoder, ClipTokenizer};
use crate::model::codec::SD_SCALING_FACTOR;
use crate::model::diffusion::Denoiser;
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
                Some(p) => match check_part(flag, p) {
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
        let tokenizer = ClipTokenizer::from_dir(&need(&self.tokenizer, "tokenizer")?)?;
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
            latent_scale: SD_SCALING_FACTOR,
            schedule: NoiseSchedule::sd15(),
            decoder: Arc::new(decoder),
            size_multiple: 64,
            default_size: 512,
            decode_chunk: 2,
            frame_window: Some(16),
            device: device.clone(),
        };
        generator.check()?;
        Ok(generator)
    }
}

/// The motion-aware SD-1.5 UNet with LayerDiffuse attention, from `files`.
///
/// The UNet code (AnimateDiff motion modules + LayerDiffuse attention) is not part of this
/// build yet, so this says so instead of running anything else.
pub fn load_denoiser(files: &SdFiles, _device: &Device) -> Result<Arc<dyn Denoiser>> {
    let unet = files
        .unet
        .as_deref()
        .map(|p| p.display().to_string())
        .unwrap_or_default();
    Err(Error::Model(format!(
        "the motion-aware SD-1.5 UNet is not available in this build yet, so the weights \
         ({unet}) cannot be run; the files were checked and are complete"
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
fn load_decoder(path: &Path, device: &Device) -> Result<TransparencyDecoder> {
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

/// One tensor the file must have, for the parts whose model code is not in this build: a
/// signature that tells a wrong file from the right one.
fn expect_tensor(path: &Path, what: &str, name: &str, shape: &[usize]) -> Result<()> {
    let (m, _) = read_header(path)?;
    match m.tensors.get(name) {
        Some(s) if s == shape => Ok(()),
        Some(s) => Err(Error::Model(format!(
            "{what}: tensor `{name}` has shape {s:?}, expected {shape:?}: {}",
            path.display()
        ))),
        None => Err(Error::Model(format!(
            "{what}: tensor `{name}` (shape {shape:?}) is missing; is this the right file?: {}",
            path.display()
        ))),
    }
}

fn check_part(flag: &str, path: &Path) -> Result<()> {
    let cpu = Device::Cpu;
    match flag {
        "tokenizer" => ClipTokenizer::from_dir(path).map(|_| ()),
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
        "unet" => expect_tensor(path, "SD-1.5 UNet", "conv_in.weight", &[320, 4, 3, 3]),
        "motion" => expect_tensor(
            path,
            "AnimateDiff motion adapter",
            "down_blocks.0.motion_modules.0.proj_in.weight",
            &[320, 320],
        ),
        "layer-attn" => {
            let (m, _) = read_header(path)?;
            if m.tensors.keys().any(|k| k.starts_with("hookers.layers.")) {
                Ok(())
            } else {
                Err(Error::Model(format!(
                    "LayerDiffuse attention: no `hookers.layers.*` tensors; is this \
                     {LAYER_ATTN_FILE}?: {}",
                    path.display()
                )))
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
                found = SdFiles {
                    layer_attn: found.layer_attn.clone(),
                    decoder: found.decoder.clone(),
                    motion: found.motion.clone(),
                    ..here.clone()
                };
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
pub(crate) mod tests {
    use super::*;
    use crate::model::clip_tokenizer::tests::{TINY_MERGES, tiny_vocab};
    use crate::model::weights::{save_checkpoint, save_ildiff, varmap_tensors};
    use candle_core::Tensor;
    use candle_nn::{VarBuilder, VarMap};

    /// A tiny SD VAE config (four levels of 32 channels).
    pub(crate) fn tiny_vae_config() -> AutoEncoderKLConfig {
        AutoEncoderKLConfig {
            block_out_channels: vec![32, 32, 32, 32],
            layers_per_block: 1,
            latent_channels: 4,
            norm_num_groups: 32,
            use_quant_conv: true,
            use_post_quant_conv: true,
        }
    }

    /// Writes a tiny diffusers-layout folder: text encoder (+config), tokenizer, VAE (+config)
    /// and an ILDiff decoder, with random weights. The UNet, motion and LayerDiffuse files are
    /// header-only fakes with the signature tensors.
    pub(crate) fn write_tiny_sd(dir: &Path) {
        let dev = Device::Cpu;
        let fresh = || {
            let vm = VarMap::new();
            let vb = VarBuilder::from_varmap(&vm, DType::F32, &dev);
            (vm, vb)
        };
        std::fs::create_dir_all(dir.join("tokenizer")).expect("dir");
        let vocab = tiny_vocab(TINY_MERGES);
        std::fs::write(
            dir.join("tokenizer/vocab.json"),
            serde_json::to_string(&vocab).expect("json"),
        )
        .expect("vocab");
        std::fs::write(dir.join("tokenizer/merges.txt"), TINY_MERGES).expect("merges");
        std::fs::create_dir_all(dir.join("text_encoder")).expect("dir");
        let cfg = crate::model::clip::tests::tiny_config(vocab.len());
        let (vm, vb) = fresh();
        ClipTextEncoder::new(&cfg, vb).expect("clip");
        save_checkpoint(
            &varmap_tensors(&vm),
            "{}",
            &dir.join("text_encoder/model.safetensors"),
        )
        .expect("save");
        std::fs::write(
            dir.join("text_encoder/config.json"),
            clip::config_to_json(&cfg),
        )
        .expect("config");
        std::fs::create_dir_all(dir.join("vae")).expect("dir");
        let (vm, vb) = fresh();
        SdVae::with_config(vb, tiny_vae_config()).expect("vae");
        save_checkpoint(
            &varmap_tensors(&vm),
            "{}",
            &dir.join("vae/diffusion_pytorch_model.safetensors"),
        )
        .expect("save");
        std::fs::write(
            dir.join("vae/config.json"),
            r#"{"block_out_channels": [32, 32, 32, 32], "layers_per_block": 1, "latent_channels": 4, "norm_num_groups": 32}"#,
        )
        .expect("config");
        let (vm, vb) = fresh();
        let mut dcfg = IldiffConfig::tiny();
        dcfg.codec = None;
        IldiffDecoder::new(&dcfg, vb).expect("decoder");
        save_ildiff(&vm, &dcfg, &dir.join("ildiff.safetensors")).expect("save");
        let one = |name: &str, shape: &[usize], path: &Path| {
            std::fs::create_dir_all(path.parent().expect("parent")).expect("dir");
            let t = Tensor::zeros(shape, DType::F16, &dev).expect("zeros");
            let map = HashMap::from([(name.to_string(), t)]);
            save_checkpoint(&map, "{}", path).expect("save");
        };
        one(
            "conv_in.weight",
            &[320, 4, 3, 3],
            &dir.join("unet/diffusion_pytorch_model.safetensors"),
        );
        one(
            "down_blocks.0.motion_modules.0.proj_in.weight",
            &[320, 320],
            &dir.join("motion_adapter/diffusion_pytorch_model.safetensors"),
        );
        one(
            "hookers.layers.0.to_q_lora.0.down.weight",
            &[256, 320],
            &dir.join(LAYER_ATTN_FILE),
        );
    }

    #[test]
    fn a_complete_folder_checks_and_loads() {
        let dir = tempfile::tempdir().expect("tempdir");
        write_tiny_sd(dir.path());
        let files = SdFiles::from_dir(dir.path());
        assert!(files.parts().iter().all(|p| p.2.is_some()), "{files:?}");
        files.check().expect("complete");
        let denoiser = Arc::new(super::super::generate::tests::AnalyticForTests::default());
        let g = files.load(denoiser, &Device::Cpu).expect("load");
        let c = g.conditioner.encode("a red heart").expect("encode");
        assert_eq!(c.context.dims(), &[1, 77, 16]);
        let e = load_denoiser(&files, &Device::Cpu)
            .err()
            .expect("no UNet in this build");
        assert!(e.to_string().contains("not available"), "{e}");
    }

    #[test]
    fn problems_name_the_file_and_tensor() {
        let dir = tempfile::tempdir().expect("tempdir");
        write_tiny_sd(dir.path());
        // A misshaped tensor in the text encoder, and no motion adapter.
        let te = dir.path().join("text_encoder/model.safetensors");
        let ck = Checkpoint::read(&te, DType::F32, &Device::Cpu).expect("read");
        let mut map: HashMap<String, Tensor> = ck
            .names()
            .into_iter()
            .filter_map(|n| ck.get(&n).cloned().map(|t| (n, t)))
            .collect();
        let key = "text_model.final_layer_norm.weight";
        map.insert(
            key.into(),
            Tensor::zeros(8, DType::F32, &Device::Cpu).expect("zeros"),
        );
        map.remove("text_model.encoder.layers.1.mlp.fc2.bias");
        save_checkpoint(&map, "{}", &te).expect("save");
        std::fs::remove_dir_all(dir.path().join("motion_adapter")).expect("rm");
        let files = SdFiles::from_dir(dir.path());
        let msg = files.check().expect_err("problems").to_string();
        assert!(msg.contains("--motion"), "{msg}");
        assert!(msg.contains("model.safetensors"), "{msg}");
        // The first problem the model meets is named (here the missing bias or the shape).
        assert!(
            msg.contains("text_model.encoder.layers.1.mlp.fc2.bias")
                || msg.contains("`text_model.final_layer_norm.weight` has shape [8]"),
            "{msg}"
        );
        // A file that is not safetensors at all.
        std::fs::write(
            dir.path().join("vae/diffusion_pytorch_model.safetensors"),
            b"nope",
        )
        .expect("write");
        let msg = SdFiles::from_dir(dir.path())
            .check()
            .expect_err("vae")
            .to_string();
        assert!(
            msg.contains("vae/diffusion_pytorch_model.safetensors"),
            "{msg}"
        );
        // Nothing at all: every part is listed with its option.
        let msg = SdFiles::default().check().expect_err("empty").to_string();
        for flag in [
            "--unet",
            "--motion",
            "--vae",
            "--text-encoder",
            "--tokenizer",
            "--layer-attn",
            "--decoder",
        ] {
            assert!(msg.contains(flag), "{flag}: {msg}");
        }
    }

    #[test]
    fn finds_weights_in_a_hub_cache() {
        let hub = tempfile::tempdir().expect("tempdir");
        let base = hub
            .path()
            .join("models--stable-diffusion-v1-5--stable-diffusion-v1-5/snapshots/abc");
        write_tiny_sd(&base);
        // Move the motion adapter and LayerDiffuse files into their own repositories.
        let motion = hub
            .path()
            .join("models--guoyww--animatediff-motion-adapter-v1-5-2/snapshots/def");
        std::fs::create_dir_all(&motion).expect("dir");
        std::fs::rename(
            base.join("motion_adapter/diffusion_pytorch_model.safetensors"),
            motion.join(MOTION_FILE),
        )
        .expect("mv");
        let ld = hub
            .path()
            .join("models--LayerDiffusion--layerdiffusion-v1/snapshots/1");
        std::fs::create_dir_all(&ld).expect("dir");
        std::fs::rename(base.join(LAYER_ATTN_FILE), ld.join(LAYER_ATTN_FILE)).expect("mv");
        let found = discover_hf_cache(hub.path());
        assert_eq!(
            found.unet,
            Some(base.join("unet/diffusion_pytorch_model.safetensors"))
        );
        assert_eq!(found.motion, Some(motion.join(MOTION_FILE)));
        assert_eq!(found.layer_attn, Some(ld.join(LAYER_ATTN_FILE)));
        assert_eq!(found.tokenizer, Some(base.join("tokenizer")));
        assert!(discover_hf_cache(&hub.path().join("nowhere")).is_empty());
    }
}

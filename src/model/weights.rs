//! Weight files, layout manifests and the reference fill rule.
//!
//! Loading lives here, one level above the model files, so a model only ever sees a
//! `VarBuilder`. Every tensor a model asks for is checked by name and shape, and the error names
//! the tensor and both shapes: the first thing a user needs after pointing the studio at the
//! wrong download. Tensors the model never asked for are an error too, because a file trained
//! with a different configuration would otherwise load "successfully" and decode garbage.
//!
//! The tokenizer's vocabulary files are read here too: this module is the model layer's one
//! door to the file system.
//!
//! The fill rule (see `reference/README.md`) rebuilds the weights behind the golden vectors
//! exactly, so numeric tests need no weight files.

use std::collections::{BTreeMap, BTreeSet, HashMap};
use std::path::Path;
use std::sync::{Arc, Mutex, PoisonError};

use candle_core::safetensors::Load;
use candle_core::{DType, Device, Shape, Tensor};
use candle_nn::var_builder::SimpleBackend;
use candle_nn::{VarBuilder, VarMap};
use safetensors::{SafeTensorError, SafeTensors};
use serde::{Deserialize, Serialize};

use super::clip_tokenizer::ClipTokenizer;
use super::ildiff::{IldiffConfig, IldiffDecoder};
use crate::fsutil::write_atomic;
use crate::{Error, Result};

/// Writes a weight file whose bytes the caller has checked, atomically: the one way the
/// model layer writes a file.
pub fn write_weights(path: &Path, bytes: &[u8]) -> Result<u64> {
    write_atomic(path, bytes)
}

/// A CLIP tokenizer from `vocab.json` and `merges.txt`; `pad` overrides the padding token (SD-1.5 pads with
/// `<|endoftext|>`, SD-2 with `!`).
pub fn read_clip_tokenizer_files(
    vocab: &Path,
    merges: &Path,
    pad: Option<&str>,
) -> Result<ClipTokenizer> {
    let v = std::fs::read_to_string(vocab)
        .map_err(|e| Error::io("reading the tokenizer vocabulary", vocab, e))?;
    let m = std::fs::read_to_string(merges)
        .map_err(|e| Error::io("reading the tokenizer merges", merges, e))?;
    let vocab_map: HashMap<String, u32> = serde_json::from_str(&v).map_err(|e| {
        Error::Model(format!(
            "the tokenizer vocabulary is not a JSON object of token -> id ({e}): {}",
            vocab.display()
        ))
    })?;
    ClipTokenizer::new(vocab_map, &m, pad)
        .map_err(|e| Error::Model(format!("{e}: {} / {}", vocab.display(), merges.display())))
}

/// A CLIP tokenizer from a diffusers `tokenizer/` folder (`vocab.json`, `merges.txt`, and
/// the pad token from `special_tokens_map.json` when present).
pub fn read_clip_tokenizer(dir: &Path) -> Result<ClipTokenizer> {
    let pad = std::fs::read_to_string(dir.join("special_tokens_map.json"))
        .ok()
        .and_then(|t| serde_json::from_str::<serde_json::Value>(&t).ok())
        .and_then(|v| {
            let p = v.get("pad_token")?;
            p.as_str()
                .or_else(|| p.get("content").and_then(serde_json::Value::as_str))
                .map(str::to_string)
        });
    read_clip_tokenizer_files(
        &dir.join("vocab.json"),
        &dir.join("merges.txt"),
        pad.as_deref(),
    )
}

/// A tensor-name -> shape layout, in the JSON format of `reference/manifests/`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Manifest {
    /// Tensor name -> shape, diffusers naming.
    pub tensors: BTreeMap<String, Vec<usize>>,
    /// Parameter count as stated by the producer (informational).
    #[serde(default)]
    pub num_params: Option<u64>,
    /// What the layout describes (informational).
    #[serde(default)]
    pub note: Option<String>,
}

impl Manifest {
    /// Parses a manifest from its JSON text.
    pub fn from_json(text: &str) -> Result<Self> {
        serde_json::from_str(text)
            .map_err(|e| Error::Model(format!("invalid weight manifest: {e}")))
    }

    /// Total number of elements over all tensors.
    pub fn num_elements(&self) -> u64 {
        self.tensors
            .values()
            .map(|s| s.iter().map(|&d| d as u64).product::<u64>())
            .sum()
    }

    /// Zero tensors of the manifest's shapes that share one scalar of storage, so a 100 M-param
    /// layout can be checked against a model without allocating it.
    pub fn placeholder_tensors(
        &self,
        dtype: DType,
        device: &Device,
    ) -> candle_core::Result<HashMap<String, Tensor>> {
        let zero = Tensor::zeros((), dtype, device)?;
        self.tensors
            .iter()
            .map(|(name, shape)| Ok((name.clone(), zero.broadcast_as(shape.as_slice())?)))
            .collect()
    }

    /// The manifest's tensors filled with [`golden_fill`].
    pub fn golden_tensors(
        &self,
        dtype: DType,
        device: &Device,
    ) -> candle_core::Result<HashMap<String, Tensor>> {
        self.tensors
            .iter()
            .map(|(name, shape)| {
                let t = Tensor::from_vec(golden_fill(name, shape), shape.as_slice(), device)?;
                Ok((name.clone(), t.to_dtype(dtype)?))
            })
            .collect()
    }
}

/// Tensors loaded from one weight file (or built in memory), handed to models through a checking
/// `VarBuilder` that remembers which names were used.
#[derive(Clone, Debug)]
pub struct Checkpoint {
    tensors: Arc<HashMap<String, Tensor>>,
    metadata: Arc<HashMap<String, String>>,
    source: String,
    used: Arc<Mutex<BTreeSet<String>>>,
}

impl Checkpoint {
    /// Reads a safetensors file. Tensors are converted to `dtype` on `device`.
    pub fn read(path: &Path, dtype: DType, device: &Device) -> Result<Self> {
        precheck(path)?;
        let bytes = std::fs::read(path).map_err(|e| Error::io("reading weights", path, e))?;
        Self::from_bytes(&bytes, &path.display().to_string(), dtype, device)
    }

    /// Parses safetensors bytes; `source` names them in error messages (usually the path).
    pub fn from_bytes(bytes: &[u8], source: &str, dtype: DType, device: &Device) -> Result<Self> {
        let st = SafeTensors::deserialize(bytes).map_err(|e| {
            let why = match e {
                SafeTensorError::MetadataIncompleteBuffer
                | SafeTensorError::InvalidOffset(_)
                | SafeTensorError::TensorInvalidInfo => {
                    format!("its data does not match its header ({e}); is the download truncated?")
                }
                _ => format!("not a safetensors file ({e})"),
            };
            Error::Model(format!("cannot read weights: {why}: {source}"))
        })?;
        let mut tensors = HashMap::new();
        for (name, view) in st.iter() {
            let t = view
                .load(device)
                .and_then(|t| t.to_dtype(dtype))
                .map_err(|e| Error::Candle {
                    context: format!("reading tensor `{name}` of {source}"),
                    source: e,
                })?;
            tensors.insert(name.to_string(), t);
        }
        let metadata = SafeTensors::read_metadata(bytes)
            .ok()
            .and_then(|(_, m)| m.metadata().clone())
            .unwrap_or_default();
        let mut ck = Self::from_tensors(tensors, source);
        ck.metadata = Arc::new(metadata);
        Ok(ck)
    }

    /// Wraps tensors built in memory; `source` names them in error messages.
    pub fn from_tensors(tensors: HashMap<String, Tensor>, source: impl Into<String>) -> Self {
        Self {
            tensors: Arc::new(tensors),
            metadata: Arc::new(HashMap::new()),
            source: source.into(),
            used: Arc::new(Mutex::new(BTreeSet::new())),
        }
    }

    /// Where the tensors came from (a path or a label).
    pub fn source(&self) -> &str {
        &self.source
    }

    /// One entry of the file's `__metadata__` (string to string).
    pub fn metadata(&self, key: &str) -> Option<&str> {
        self.metadata.get(key).map(String::as_str)
    }

    /// Number of tensors.
    pub fn len(&self) -> usize {
        self.tensors.len()
    }

    /// True when the file holds no tensors.
    pub fn is_empty(&self) -> bool {
        self.tensors.is_empty()
    }

    /// One tensor by name.
    pub fn get(&self, name: &str) -> Option<&Tensor> {
        self.tensors.get(name)
    }

    /// Every tensor name, sorted.
    pub fn names(&self) -> Vec<String> {
        let mut n: Vec<String> = self.tensors.keys().cloned().collect();
        n.sort();
        n
    }

    /// The tensors under `prefix` (e.g. `codec.`), renamed without it: one part of a whole
    /// model, read as the file of that part alone (a model's codec reused by another run).
    /// `None` when no tensor has the prefix.
    pub fn part(&self, prefix: &str) -> Option<Checkpoint> {
        let tensors: HashMap<String, Tensor> = self
            .tensors
            .iter()
            .filter_map(|(n, t)| n.strip_prefix(prefix).map(|r| (r.to_string(), t.clone())))
            .collect();
        if tensors.is_empty() {
            return None;
        }
        Some(Self::from_tensors(
            tensors,
            format!("{} ({prefix}*)", self.source),
        ))
    }

    /// A `VarBuilder` that serves this checkpoint's tensors, checking names and shapes and
    /// recording what was used.
    pub fn var_builder(&self, dtype: DType, device: &Device) -> VarBuilder<'static> {
        let backend = CheckedBackend {
            tensors: Arc::clone(&self.tensors),
            used: Arc::clone(&self.used),
        };
        VarBuilder::from_backend(Box::new(backend), dtype, device.clone())
    }

    /// Names no model has asked for so far, sorted.
    pub fn unused(&self) -> Vec<String> {
        let used = self.used.lock().unwrap_or_else(PoisonError::into_inner);
        let mut names: Vec<String> = self
            .tensors
            .keys()
            .filter(|n| !used.contains(*n))
            .cloned()
            .collect();
        names.sort();
        names
    }

    /// Builds a model from this checkpoint and insists that it used every tensor. `what` names
    /// the model in the error ("transparent decoder").
    pub fn build<T>(
        &self,
        what: &str,
        dtype: DType,
        device: &Device,
        f: impl FnOnce(VarBuilder<'static>) -> candle_core::Result<T>,
    ) -> Result<T> {
        // A message (not the candle chain): it must end with the file, which users look for
        // first, and name the tensor that is wrong.
        let model = f(self.var_builder(dtype, device))
            .map_err(|e| Error::Model(format!("cannot build the {what}: {e}: {}", self.source)))?;
        let unused = self.unused();
        if !unused.is_empty() {
            let shown: Vec<&str> = unused.iter().take(5).map(String::as_str).collect();
            let more = if unused.len() > 5 { ", ..." } else { "" };
            return Err(Error::Model(format!(
                "cannot build the {what}: {} tensor(s) in the file are not part of this model \
                 (wrong file or configuration?): {}{more}: {}",
                unused.len(),
                shown.join(", "),
                self.source
            )));
        }
        Ok(model)
    }
}

/// Looks at the first bytes only, so pointing at a multi-gigabyte `.ckpt` or video fails at
/// once instead of after reading it all: a safetensors file starts with a little-endian u64
/// header length that fits in the file, followed by a JSON object.
fn precheck(path: &Path) -> Result<()> {
    use std::io::Read;
    let mut file = std::fs::File::open(path).map_err(|e| Error::io("opening weights", path, e))?;
    let len = file
        .metadata()
        .map_err(|e| Error::io("reading weights", path, e))?
        .len();
    let mut head = [0u8; 9];
    let why = if len < 9 || file.read_exact(&mut head).is_err() || head[8] != b'{' {
        "not a safetensors file (no safetensors header)"
    } else {
        let header_len = u64::from_le_bytes([
            head[0], head[1], head[2], head[3], head[4], head[5], head[6], head[7],
        ]);
        if header_len <= len - 8 {
            return Ok(());
        }
        "the file is shorter than its header says; is the download truncated?"
    };
    Err(Error::Model(format!(
        "cannot read weights: {why}: {}",
        path.display()
    )))
}

/// Metadata key under which an ILDiff checkpoint stores its [`IldiffConfig`] as JSON.
pub const ILDIFF_CONFIG_KEY: &str = "ildiff_config";

/// Largest safetensors header we read (the format's own limit).
const MAX_HEADER_BYTES: u64 = 100_000_000;

/// The tensors of a `VarMap` by name, sharing storage (no copy).
pub fn varmap_tensors(varmap: &VarMap) -> HashMap<String, Tensor> {
    let data = varmap.data().lock().unwrap_or_else(PoisonError::into_inner);
    data.iter()
        .map(|(name, var)| (name.clone(), var.as_tensor().clone()))
        .collect()
}

/// Writes `tensors` as a safetensors file with `config_json` under [`ILDIFF_CONFIG_KEY`] in its
/// `__metadata__`, atomically: an interrupted save never replaces a good checkpoint with half a
/// file. The file is built in memory first (one extra copy of the weights). Returns its size.
pub fn save_checkpoint(
    tensors: &HashMap<String, Tensor>,
    config_json: &str,
    path: &Path,
) -> Result<u64> {
    let fail = |e: &dyn std::fmt::Display| {
        Error::Model(format!("cannot write weights ({e}): {}", path.display()))
    };
    // candle's `View` panics if its device-to-host copy fails; copying here makes it an error.
    let host = tensors
        .iter()
        .map(|(name, t)| Ok((name.as_str(), t.to_device(&Device::Cpu)?.contiguous()?)))
        .collect::<candle_core::Result<Vec<(&str, Tensor)>>>()
        .map_err(|e| fail(&e))?;
    let info = HashMap::from([(ILDIFF_CONFIG_KEY.to_string(), config_json.to_string())]);
    let bytes = safetensors::serialize(host, Some(info)).map_err(|e| fail(&e))?;
    write_atomic(path, &bytes)
}

/// The ILDiff configuration JSON of a checkpoint, read from its header alone (no tensor data is
/// read), e.g. to describe a file or pick a device before loading it.
pub fn load_config_from_metadata(path: &Path) -> Result<String> {
    header_metadata(path, ILDIFF_CONFIG_KEY)?.ok_or_else(|| no_config(path))
}

/// One metadata entry of a safetensors file, read from its header alone (the size is checked
/// before the header is read). `None` when the file has no such entry.
pub fn header_metadata(path: &Path, key: &str) -> Result<Option<String>> {
    use std::io::Read;
    precheck(path)?;
    let mut file = std::fs::File::open(path).map_err(|e| Error::io("opening weights", path, e))?;
    let mut len = [0u8; 8];
    file.read_exact(&mut len)
        .map_err(|e| Error::io("reading weights", path, e))?;
    let n = u64::from_le_bytes(len);
    if n > MAX_HEADER_BYTES {
        return Err(Error::Model(format!(
            "cannot read weights: header of {n} bytes is larger than safetensors allows: {}",
            path.display()
        )));
    }
    let mut header = vec![0u8; n as usize];
    file.read_exact(&mut header)
        .map_err(|e| Error::io("reading weights", path, e))?;
    let value: serde_json::Value = serde_json::from_slice(&header).map_err(|e| {
        Error::Model(format!(
            "cannot read weights: invalid safetensors header ({e}): {}",
            path.display()
        ))
    })?;
    Ok(value
        .get("__metadata__")
        .and_then(|m| m.get(key))
        .and_then(serde_json::Value::as_str)
        .map(str::to_string))
}

fn no_config(path: &Path) -> Error {
    Error::Model(format!(
        "the file has no ILDiff configuration (`{ILDIFF_CONFIG_KEY}` in its metadata); a plain \
         LayerDiffuse decoder file loads as a transparent decoder instead: {}",
        path.display()
    ))
}

/// Saves a model's variables with its configuration. The variables are first checked against
/// `cfg` exactly as [`load_ildiff`] will check them, so a file that could not be loaded back is
/// never written.
pub fn save_ildiff(varmap: &VarMap, cfg: &IldiffConfig, path: &Path) -> Result<u64> {
    let tensors = varmap_tensors(varmap);
    let (dtype, device) = match tensors.values().next() {
        Some(t) => (t.dtype(), t.device().clone()),
        None => (DType::F32, Device::Cpu),
    };
    Checkpoint::from_tensors(tensors.clone(), "the variables to save")
        .build("ILDiff decoder", dtype, &device, |vb| {
            IldiffDecoder::new(cfg, vb)
        })
        .map_err(|e| Error::Model(format!("not saving {}: {e}", path.display())))?;
    save_checkpoint(&tensors, &cfg.to_json()?, path)
}

/// Loads a checkpoint written by [`save_ildiff`]: the configuration from its metadata, then
/// every tensor checked by name and shape (errors name the offending tensor).
pub fn load_ildiff(path: &Path, dtype: DType, device: &Device) -> Result<IldiffDecoder> {
    let ck = Checkpoint::read(path, dtype, device)?;
    let json = ck
        .metadata(ILDIFF_CONFIG_KEY)
        .ok_or_else(|| no_config(path))?;
    let cfg = IldiffConfig::from_json(json, &path.display().to_string())?;
    ck.build("ILDiff decoder", dtype, device, |vb| {
        IldiffDecoder::new(&cfg, vb)
    })
}

/// The `VarBuilder` backend of a [`Checkpoint`].
struct CheckedBackend {
    tensors: Arc<HashMap<String, Tensor>>,
    used: Arc<Mutex<BTreeSet<String>>>,
}

impl CheckedBackend {
    fn lookup(&self, name: &str, expected: Option<&Shape>) -> candle_core::Result<&Tensor> {
        let t = self.tensors.get(name).ok_or_else(|| {
            let shape = expected.map(|s| format!(" (shape {:?})", s.dims()));
            candle_core::Error::Msg(format!(
                "tensor `{name}`{} is missing",
                shape.unwrap_or_default()
            ))
        })?;
        if let Some(s) = expected
            && t.dims() != s.dims()
        {
            return Err(candle_core::Error::Msg(format!(
                "tensor `{name}` has shape {:?}, expected {:?}",
                t.dims(),
                s.dims()
            )));
        }
        self.used
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .insert(name.to_string());
        Ok(t)
    }
}

impl SimpleBackend for CheckedBackend {
    fn get(
        &self,
        s: Shape,
        name: &str,
        _: candle_nn::Init,
        dtype: DType,
        dev: &Device,
    ) -> candle_core::Result<Tensor> {
        self.lookup(name, Some(&s))?.to_dtype(dtype)?.to_device(dev)
    }

    fn get_unchecked(&self, name: &str, dtype: DType, dev: &Device) -> candle_core::Result<Tensor> {
        self.lookup(name, None)?.to_dtype(dtype)?.to_device(dev)
    }

    fn contains_tensor(&self, name: &str) -> bool {
        self.tensors.contains_key(name)
    }
}

/// 32-bit FNV-1a over the UTF-8 bytes of `name`.
pub fn fnv1a32(name: &str) -> u32 {
    name.bytes().fold(0x811C_9DC5u32, |h, b| {
        (h ^ u32::from(b)).wrapping_mul(0x0100_0193)
    })
}

/// `u_j` of the fill rule: `((j * 2654435761 + fnv1a32(name)) mod 2^32) / 2^32`.
fn golden_u(hash: u32, j: usize) -> f64 {
    let v = (j as u64)
        .wrapping_mul(2_654_435_761)
        .wrapping_add(u64::from(hash));
    (v & 0xFFFF_FFFF) as f64 / 4_294_967_296.0
}

/// The reference fill rule for a weight tensor: norm weights near 1, other 1-D tensors near 0,
/// and tensors of 2 or more dims uniform with the variance of a default init for their fan-in.
/// A 1-D tensor is a norm weight when its name contains "norm" and ends with ".weight" (true of
/// every GroupNorm/LayerNorm in the LayerDiffuse and AnimateDiff layouts).
pub fn golden_fill(name: &str, shape: &[usize]) -> Vec<f32> {
    let numel: usize = shape.iter().product();
    let hash = fnv1a32(name);
    let is_norm_weight = shape.len() == 1 && name.contains("norm") && name.ends_with(".weight");
    let bound = if shape.len() >= 2 && numel > 0 {
        let fan_in = (numel / shape[0]) as f64;
        2.0 * (3.0 / fan_in).sqrt()
    } else {
        0.0
    };
    (0..numel)
        .map(|j| {
            let u = golden_u(hash, j);
            let v = if shape.len() >= 2 {
                (u - 0.5) * bound
            } else if is_norm_weight {
                1.0 + (u - 0.5) * 0.2
            } else {
                (u - 0.5) * 0.2
            };
            v as f32
        })
        .collect()
}

/// A golden *input* of `numel` elements: `lo + (hi - lo) * u_j` with the fill rule's `u_j`.
pub fn golden_input(name: &str, numel: usize, lo: f64, hi: f64) -> Vec<f32> {
    let hash = fnv1a32(name);
    (0..numel)
        .map(|j| (lo + (hi - lo) * golden_u(hash, j)) as f32)
        .collect()
}

/// A `VarBuilder` that fills every tensor it is asked for with [`golden_fill`], lazily, so a
/// model can be built with the reference weights without a manifest.
pub fn golden_var_builder(dtype: DType, device: &Device) -> VarBuilder<'static> {
    VarBuilder::from_backend(Box::new(GoldenFill), dtype, device.clone())
}

struct GoldenFill;

impl SimpleBackend for GoldenFill {
    fn get(
        &self,
        s: Shape,
        name: &str,
        _: candle_nn::Init,
        dtype: DType,
        dev: &Device,
    ) -> candle_core::Result<Tensor> {
        Tensor::from_vec(golden_fill(name, s.dims()), s, dev)?.to_dtype(dtype)
    }

    fn get_unchecked(&self, name: &str, _: DType, _: &Device) -> candle_core::Result<Tensor> {
        candle_core::bail!("the golden fill needs a shape for tensor `{name}`")
    }

    fn contains_tensor(&self, _: &str) -> bool {
        true
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::model::LayoutAdapterConfig;

    use crate::model::ildiff::tests::{awake, inputs, tiny, values};

    fn saved_tiny(dir: &Path) -> (IldiffConfig, VarMap, IldiffDecoder, std::path::PathBuf) {
        let cfg = tiny();
        let (varmap, model) = awake(&cfg);
        let path = dir.join("tiny.safetensors");
        let size = save_ildiff(&varmap, &cfg, &path).expect("save");
        assert_eq!(std::fs::metadata(&path).expect("file").len(), size);
        (cfg, varmap, model, path)
    }

    #[test]
    fn ildiff_checkpoint_round_trips_exactly() {
        let dir = tempfile::tempdir().expect("tempdir");
        let (cfg, _, model, path) = saved_tiny(dir.path());
        // Only the checkpoint is left behind: the atomic write cleaned up after itself.
        assert_eq!(std::fs::read_dir(dir.path()).expect("dir").count(), 1);
        let json = load_config_from_metadata(&path).expect("config");
        assert_eq!(IldiffConfig::from_json(&json, "meta").expect("parse"), cfg);
        let loaded = load_ildiff(&path, DType::F32, &Device::Cpu).expect("load");
        assert_eq!(loaded.config(), &cfg);
        let (pixel, latent) = inputs(3, 32, 32);
        let a = model.forward(&pixel, &latent).expect("original");
        let b = loaded.forward(&pixel, &latent).expect("loaded");
        assert_eq!(values(&a), values(&b));
    }

    #[test]
    fn a_part_of_a_model_reads_as_that_part_alone() {
        let dir = tempfile::tempdir().expect("tempdir");
        let (_, varmap, _, path) = saved_tiny(dir.path());
        let ck = Checkpoint::read(&path, DType::F32, &Device::Cpu).expect("read");
        // The layout adapter stands in for the codec (this tiny model has none).
        let part = ck.part("adapter.").expect("the tiny model has an adapter");
        let whole = ck.names();
        let want: Vec<String> = whole
            .iter()
            .filter_map(|n| n.strip_prefix("adapter.").map(str::to_string))
            .collect();
        assert!(!want.is_empty() && want.len() < whole.len());
        assert_eq!(part.names(), want);
        let name = &want[0];
        let tensors = varmap_tensors(&varmap);
        let original = &tensors[&format!("adapter.{name}")];
        assert_eq!(values(part.get(name).expect("tensor")), values(original));
        assert!(ck.part("codec.").is_none());
    }

    #[test]
    fn mismatched_checkpoints_name_the_offending_tensor() {
        let dir = tempfile::tempdir().expect("tempdir");
        let (cfg, varmap, _, _) = saved_tiny(dir.path());
        let tensors = varmap_tensors(&varmap);
        let with = |edit: &dyn Fn(&mut LayoutAdapterConfig)| {
            let mut c = cfg.clone();
            if let Some(a) = c.adapter.as_mut() {
                edit(a);
            }
            c
        };
        let cases: [(IldiffConfig, &str); 3] = [
            (
                with(&|a| a.temporal_blocks = 3),
                "`adapter.temporal.blocks.2.conv.weight`",
            ),
            (
                with(&|a| a.stem_channels = 16),
                "`adapter.stem.conv.weight` has shape [8, 3, 3, 3], expected [16, 3, 3, 3]",
            ),
            (
                with(&|a| a.temporal_blocks = 1),
                "adapter.temporal.blocks.1.",
            ),
        ];
        for (i, (c, want)) in cases.iter().enumerate() {
            let path = dir.path().join(format!("bad{i}.safetensors"));
            save_checkpoint(&tensors, &c.to_json().expect("json"), &path).expect("save");
            let e = load_ildiff(&path, DType::F32, &Device::Cpu).expect_err("mismatch");
            let msg = e.to_string();
            assert!(msg.contains(want), "case {i}: {msg}");
            assert!(msg.contains(&path.display().to_string()), "case {i}: {msg}");
            // Saving through the checked path refuses the same mismatch and writes nothing.
            let refused = dir.path().join(format!("refused{i}.safetensors"));
            let e = save_ildiff(&varmap, c, &refused).expect_err("refuse");
            assert!(e.to_string().contains(want), "case {i}: {e}");
            assert!(!refused.exists());
        }
    }

    #[test]
    fn files_without_a_config_are_explained() {
        let dir = tempfile::tempdir().expect("tempdir");
        let path = dir.path().join("plain.safetensors");
        let t = Tensor::zeros(3, DType::F32, &Device::Cpu).expect("zeros");
        let bytes = safetensors::serialize([("x", t)], None).expect("serialize");
        std::fs::write(&path, bytes).expect("write");
        for e in [
            load_config_from_metadata(&path).expect_err("no metadata"),
            load_ildiff(&path, DType::F32, &Device::Cpu).expect_err("no metadata"),
        ] {
            assert!(e.to_string().contains(ILDIFF_CONFIG_KEY), "{e}");
        }
        std::fs::write(&path, b"not a weight file at all").expect("write");
        assert!(load_config_from_metadata(&path).is_err());
    }

    #[test]
    fn fnv1a32_matches_known_vectors() {
        // Reference values of the 32-bit FNV-1a test suite.
        assert_eq!(fnv1a32(""), 0x811C_9DC5);
        assert_eq!(fnv1a32("a"), 0xE40C_292C);
        assert_eq!(fnv1a32("foobar"), 0xBF9C_F968);
    }

    #[test]
    fn fill_rule_kinds() {
        let h = fnv1a32("x.norm1.weight");
        let u0 = golden_u(h, 0);
        let w = golden_fill("x.norm1.weight", &[3]);
        assert!((f64::from(w[0]) - (1.0 + (u0 - 0.5) * 0.2)).abs() < 1e-7);
        let b = golden_fill("x.norm1.bias", &[3]);
        assert!(b.iter().all(|v| v.abs() <= 0.1));
        let c = golden_fill("conv.weight", &[2, 3, 3, 3]);
        let bound = (3.0f32 / 27.0).sqrt();
        assert!(c.iter().all(|v| v.abs() <= bound));
        assert!(c.iter().any(|v| v.abs() > bound * 0.5));
    }
}

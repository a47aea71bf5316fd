//! Weight files, layout manifests and the reference fill rule.
//!
//! Loading lives here, one level above the model files, so a model only ever sees a
//! `VarBuilder`. Every tensor a model asks for is checked by name and shape, and the error names
//! the tensor and both shapes: the first thing a user needs after pointing the studio at the
//! wrong download. Tensors the model never asked for are an error too, because a file trained
//! with a different configuration would otherwise load "successfully" and decode garbage.
//!
//! The fill rule (see `reference/README.md`) rebuilds the weights behind the golden vectors
//! exactly, so numeric tests need no weight files.

use std::collections::{BTreeMap, BTreeSet, HashMap};
use std::path::Path;
use std::sync::{Arc, Mutex, PoisonError};

use candle_core::safetensors::Load;
use candle_core::{DType, Device, Shape, Tensor};
use candle_nn::VarBuilder;
use candle_nn::var_builder::SimpleBackend;
use safetensors::{SafeTensorError, SafeTensors};
use serde::{Deserialize, Serialize};

use crate::{Error, Result};

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
                .map_err(|e| {
                    Error::Model(format!("cannot read tensor `{name}` ({e}): {source}"))
                })?;
            tensors.insert(name.to_string(), t);
        }
        Ok(Self::from_tensors(tensors, source))
    }

    /// Wraps tensors built in memory; `source` names them in error messages.
    pub fn from_tensors(tensors: HashMap<String, Tensor>, source: impl Into<String>) -> Self {
        Self {
            tensors: Arc::new(tensors),
            source: source.into(),
            used: Arc::new(Mutex::new(BTreeSet::new())),
        }
    }

    /// Where the tensors came from (a path or a label).
    pub fn source(&self) -> &str {
        &self.source
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

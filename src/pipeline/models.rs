//! Finding and loading the matting model, shared by the CLI and the studio (one code path).
//!
//! There is no silent fallback to untrained weights: the default model is looked for beside
//! the executable and in the crate's `models/default/`, and when none exists callers say so.

use std::path::{Path, PathBuf};

use candle_core::{DType, Device, Tensor};

use crate::model::codec::LatentCodec;
use crate::model::weights::load_ildiff;
use crate::model::{IldiffDecoder, SmallCodec};
use crate::{Error, Result};

/// Where the trained default checkpoint is looked for, relative to a base folder.
pub const DEFAULT_MODEL: &str = "models/default/ildiff.safetensors";

/// Environment variable naming the default checkpoint instead (a path; a path that does not
/// exist means "no default installed", which tests use).
pub const DEFAULT_MODEL_ENV: &str = "ILDIFF_DEFAULT_MODEL";

/// The trained default checkpoint, if one is installed: `$ILDIFF_DEFAULT_MODEL` when set, else
/// beside the executable (and in `../share/ildiff-studio/` for a packaged install), then in the
/// crate.
pub fn default_model() -> Option<PathBuf> {
    find_installed(DEFAULT_MODEL_ENV, DEFAULT_MODEL)
}

/// The one message for "no model given and none installed", in the terminal and the studio.
pub const NO_DEFAULT_MODEL: &str = "no trained default model is installed \
     (models/default/ildiff.safetensors); choose an ILDiff checkpoint: --model PATH in the \
     terminal, the model file in the studio's job panel. Untrained weights are never used, \
     because their matte would be meaningless.";

/// `path`, or the installed default when `None`; [`NO_DEFAULT_MODEL`] when there is none.
pub fn model_or_default(path: Option<&Path>) -> Result<PathBuf> {
    match path {
        Some(p) => Ok(p.to_path_buf()),
        None => default_model().ok_or_else(|| Error::Model(NO_DEFAULT_MODEL.into())),
    }
}

/// An installed file: `$env` when set (a path that does not exist means "not installed", which
/// tests use), else `rel` under the executable's `../share/ildiff-studio/`, beside the
/// executable, then in the crate. One search for every shipped default, so a packaged install
/// finds all of them in the same place.
pub fn find_installed(env: &str, rel: &str) -> Option<PathBuf> {
    if let Some(p) = std::env::var_os(env) {
        let p = PathBuf::from(p);
        return p.is_file().then_some(p);
    }
    let exe_dir = std::env::current_exe()
        .ok()
        .and_then(|p| p.parent().map(Path::to_path_buf));
    let mut bases: Vec<PathBuf> = Vec::new();
    if let Some(d) = exe_dir {
        bases.push(d.join("../share/ildiff-studio"));
        bases.push(d);
    }
    bases.push(PathBuf::from(env!("CARGO_MANIFEST_DIR")));
    bases.into_iter().map(|d| d.join(rel)).find(|p| p.is_file())
}

/// Loads a checkpoint and insists it carries a codec (an RGB clip has to be encoded).
pub fn load_model(path: &Path) -> Result<IldiffDecoder> {
    let model = load_ildiff(path, DType::F32, &Device::Cpu)?;
    if model.codec().is_none() {
        return Err(Error::Model(format!(
            "the checkpoint has no codec (`codec` in its configuration), so it cannot encode an \
             RGB clip: {}",
            path.display()
        )));
    }
    Ok(model)
}

/// Encodes `pixel` `[T, 3, H, W]` with `codec`, `chunk` frames at a time to bound memory.
pub fn encode_clip(codec: &SmallCodec, pixel: &Tensor, chunk: usize) -> Result<Tensor> {
    let err = |e| Error::candle("encoding the clip")(e);
    let t = pixel.dim(0).map_err(err)?;
    let mut parts = Vec::with_capacity(t.div_ceil(chunk.max(1)));
    let mut start = 0;
    while start < t {
        let n = chunk.max(1).min(t - start);
        let part = pixel.narrow(0, start, n).map_err(err)?;
        parts.push(codec.encode_any_size(&part).map_err(err)?);
        start += n;
    }
    Tensor::cat(&parts, 0).map_err(err)
}

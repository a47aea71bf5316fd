//! Pipelines: jobs that join media and models (clip in, clip out), with progress and cancel.
//! Depends on `media` and `model`; nothing below depends on it.
//!
//! - [`generate`]: prompt to transparent clip over any model family ([`generate::Generator`]).
//! - [`matte`]: windowed ILDiff decoding of a whole clip.
//! - [`models`]: finding and loading the matting model.
//! - [`sd_models`]: the user's SD-1.5 + AnimateDiff + LayerDiffuse files: find, check, load.
//! - [`scheduler`]: DDIM and Euler-ancestral samplers, seeded noise.

pub mod generate;
pub mod matte;
pub mod models;
pub mod plate;
pub mod scheduler;
pub mod sd_models;

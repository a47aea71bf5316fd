//! Media: the animation type, importers, exporters, platform presets and pack export.
//! Depends on nothing above it (no models, no UI).

pub mod animation;
pub mod decode;
pub mod encode;
pub mod ffmpeg;
pub mod format;
pub mod limits;
pub mod pack;
pub mod pack_import;
pub mod presets;

/// The atomic write lives in [`crate::fsutil`] (the model layer saves checkpoints with it and
/// must not depend on media); this name keeps media's callers unchanged.
pub use crate::fsutil as atomic;

pub use animation::{Animation, Delay, Fit, Frame, LoopCount};
pub use format::Format;
pub use limits::Limits;

//! Importers. The format is sniffed from the bytes; each format lives in its own file and yields
//! frames through [`FrameSource`] so long clips can be streamed.

use std::path::Path;

use crate::error::Result;
use crate::media::{Animation, Format, Frame, Limits, LoopCount};

/// What an importer knows before decoding frames.
#[derive(Debug, Clone, PartialEq, serde::Serialize)]
pub struct SourceInfo {
    pub format: Format,
    /// True for animated containers (APNG, animated WebP, multi-frame GIF, video).
    pub animated: bool,
    pub width: u32,
    pub height: u32,
    /// Frame count if the container states it.
    pub frame_count: Option<u64>,
    pub loops: LoopCount,
}

/// A lazily decoded stream of full-canvas, composited, straight-alpha frames.
pub trait FrameSource {
    fn info(&self) -> &SourceInfo;
    /// The next frame, `Ok(None)` at the end.
    fn next_frame(&mut self) -> Result<Option<Frame>>;
}

/// Opens any importable file or folder of numbered PNG frames as a frame stream.
pub fn open_source(path: &Path, limits: &Limits) -> Result<Box<dyn FrameSource>> {
    let _ = (path, limits);
    unimplemented!("decode helper")
}

/// Decodes a whole clip into memory (limits checked before and while decoding).
pub fn open(path: &Path, limits: &Limits) -> Result<Animation> {
    let _ = (path, limits);
    unimplemented!("decode helper")
}

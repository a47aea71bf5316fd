//! Exporters, one file per format. Every write goes through [`crate::media::atomic`].

use std::path::Path;

use crate::error::Result;
use crate::media::{Animation, Format};

/// GIF export options (GIF has 1-bit alpha and at most 256 colours per frame).
#[derive(Debug, Clone, Copy, PartialEq, serde::Serialize, serde::Deserialize)]
pub struct GifOptions {
    /// Palette size, 2..=256 (one entry is reserved for transparency).
    pub colors: u16,
    /// Floyd–Steinberg dithering of colour.
    pub dither: bool,
    /// Colour that semi-transparent edge pixels are blended over before thresholding: pick the
    /// chat background the sticker will be seen on.
    pub matte: [u8; 3],
    /// Alpha at or above which a pixel is opaque.
    pub alpha_threshold: u8,
}

impl Default for GifOptions {
    fn default() -> Self {
        GifOptions {
            colors: 256,
            dither: true,
            matte: [255, 255, 255],
            alpha_threshold: 128,
        }
    }
}

/// An output encoding with its quality knob.
#[derive(Debug, Clone, Copy, PartialEq, serde::Serialize, serde::Deserialize)]
pub enum Encoding {
    /// APNG (a still PNG for one frame). `palette: None` = lossless RGBA; `Some(n)` = quantised
    /// to `n` colours (2..=256) with alpha in the palette.
    Apng {
        palette: Option<u16>,
    },
    /// Animated (or still) WebP. `quality: None` = lossless; `Some(q)`, q in 0..=100 = lossy
    /// colour with alpha.
    WebP {
        quality: Option<f32>,
    },
    Gif(GifOptions),
    /// WebM VP9 with alpha (`yuva420p`) through ffmpeg; `crf` 0..=63, lower = better.
    WebM {
        crf: u8,
    },
    /// A folder of numbered RGBA PNG frames (`frame_00000.png`, ...).
    PngFolder,
}

impl Encoding {
    /// The default (best-quality) encoding for a format.
    pub fn default_for(format: Format) -> Option<Encoding> {
        Some(match format {
            Format::Png => Encoding::Apng { palette: None },
            Format::WebP => Encoding::WebP { quality: None },
            Format::Gif => Encoding::Gif(GifOptions::default()),
            Format::WebM => Encoding::WebM { crf: 30 },
            Format::Folder => Encoding::PngFolder,
            Format::Jpeg | Format::Mp4 => return None,
        })
    }
}

/// Writes `anim` to `path` atomically. Returns the size in bytes (for a folder, the sum).
pub fn write(anim: &Animation, encoding: &Encoding, path: &Path) -> Result<u64> {
    let _ = (anim, encoding, path);
    unimplemented!("encode helper")
}

/// Encodes to memory (not for WebM or folders, which need a path): used by size searches.
pub fn encode_to_vec(anim: &Animation, encoding: &Encoding) -> Result<Vec<u8>> {
    let _ = (anim, encoding);
    unimplemented!("encode helper")
}

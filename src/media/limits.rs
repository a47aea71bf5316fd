//! Safety limits checked *before* decoding allocates, so a hostile header (a 65535×65535 GIF,
//! 100 000 frames) fails fast with a clear error instead of exhausting memory.

use std::path::Path;

use crate::error::{Error, Result};

/// Caps on what an importer will allocate. Raise them with the CLI's `--max-*` flags.
#[derive(Debug, Clone, Copy, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub struct Limits {
    /// Largest canvas width or height in pixels.
    pub max_side: u32,
    /// Most frames in one clip.
    pub max_frames: u32,
    /// Most decoded pixel bytes for the whole clip (frames × width × height × 4).
    pub max_bytes: u64,
}

impl Default for Limits {
    fn default() -> Self {
        Limits {
            max_side: 4096,
            max_frames: 3000,
            max_bytes: 2 << 30,
        }
    }
}

impl Limits {
    /// Checks a canvas size (also rejects zero sizes).
    pub fn check_canvas(&self, width: u32, height: u32, path: &Path) -> Result<()> {
        if width == 0 || height == 0 {
            return Err(Error::decode(
                "image",
                path,
                format!("canvas is {width}x{height}"),
            ));
        }
        let side = width.max(height);
        if side > self.max_side {
            return Err(Error::Limits {
                what: "canvas side",
                value: side as u64,
                limit: self.max_side as u64,
                flag: "--max-side",
                path: path.to_path_buf(),
            });
        }
        Ok(())
    }

    /// Checks that `count` frames are allowed.
    pub fn check_frames(&self, count: u64, path: &Path) -> Result<()> {
        if count > self.max_frames as u64 {
            return Err(Error::Limits {
                what: "frame count",
                value: count,
                limit: self.max_frames as u64,
                flag: "--max-frames",
                path: path.to_path_buf(),
            });
        }
        Ok(())
    }

    /// Checks that `frames` full frames of `width × height` fit the byte budget.
    pub fn check_bytes(&self, width: u32, height: u32, frames: u64, path: &Path) -> Result<()> {
        let bytes = (width as u64)
            .saturating_mul(height as u64)
            .saturating_mul(4)
            .saturating_mul(frames);
        if bytes > self.max_bytes {
            return Err(Error::Limits {
                what: "decoded bytes",
                value: bytes,
                limit: self.max_bytes,
                flag: "--max-bytes",
                path: path.to_path_buf(),
            });
        }
        Ok(())
    }

    /// All three checks for a clip whose frame count is known up front.
    pub fn check_all(&self, width: u32, height: u32, frames: u64, path: &Path) -> Result<()> {
        self.check_canvas(width, height, path)?;
        self.check_frames(frames, path)?;
        self.check_bytes(width, height, frames, path)
    }
}

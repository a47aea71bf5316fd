//! Atomic output, a core utility below both `media` and `model`: every file is written to a
//! temporary file in the target folder and renamed into place only when complete, so a failed
//! or cancelled export never leaves a half-written file.

use std::io::Write;
use std::path::{Path, PathBuf};

use crate::error::{Error, Result};

/// A temporary file beside `target`; [`AtomicFile::commit`] renames it into place, dropping it
/// without committing deletes it.
pub struct AtomicFile {
    tmp: tempfile::NamedTempFile,
    target: PathBuf,
}

impl AtomicFile {
    /// Creates the temporary file in `target`'s folder (the folder must exist and be writable).
    pub fn new(target: &Path) -> Result<Self> {
        let dir = parent_dir(target);
        let tmp = tempfile::Builder::new()
            .prefix(".ildiff-")
            .suffix(".part")
            .tempfile_in(&dir)
            .map_err(|e| Error::io("create output", target, e))?;
        Ok(AtomicFile {
            tmp,
            target: target.to_path_buf(),
        })
    }

    /// The temporary path (for external tools such as ffmpeg that write by name).
    pub fn path(&self) -> &Path {
        self.tmp.path()
    }

    /// The final path.
    pub fn target(&self) -> &Path {
        &self.target
    }

    /// Writer for the temporary file.
    pub fn file(&mut self) -> &mut std::fs::File {
        self.tmp.as_file_mut()
    }

    /// Flushes, syncs and renames into place. Returns the final size in bytes.
    pub fn commit(mut self) -> Result<u64> {
        self.tmp
            .as_file_mut()
            .flush()
            .map_err(|e| Error::io("write output", &self.target, e))?;
        let size = std::fs::metadata(self.tmp.path())
            .map_err(|e| Error::io("write output", &self.target, e))?
            .len();
        self.tmp
            .persist(&self.target)
            .map_err(|e| Error::io("rename output into place", &self.target, e.error))?;
        Ok(size)
    }
}

/// Writes `bytes` to `target` atomically.
pub fn write_atomic(target: &Path, bytes: &[u8]) -> Result<u64> {
    let mut f = AtomicFile::new(target)?;
    f.file()
        .write_all(bytes)
        .map_err(|e| Error::io("write output", target, e))?;
    f.commit()
}

/// The folder a path lives in (`.` for a bare file name).
pub fn parent_dir(path: &Path) -> PathBuf {
    match path.parent() {
        Some(p) if !p.as_os_str().is_empty() => p.to_path_buf(),
        _ => PathBuf::from("."),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn dropped_file_leaves_nothing() {
        let dir = tempfile::tempdir().expect("tempdir");
        let target = dir.path().join("out.bin");
        {
            let mut f = AtomicFile::new(&target).expect("create");
            f.file().write_all(b"partial").expect("write");
        }
        assert!(!target.exists());
        assert_eq!(std::fs::read_dir(dir.path()).expect("list").count(), 0);
        write_atomic(&target, b"done").expect("write");
        assert_eq!(std::fs::read(&target).expect("read"), b"done");
    }

    #[test]
    fn missing_folder_is_an_io_error_naming_the_path() {
        let err =
            write_atomic(Path::new("/nonexistent-dir-ildiff/x.png"), b"x").expect_err("must fail");
        assert_eq!(err.kind(), "io");
        assert!(err.to_string().contains("/nonexistent-dir-ildiff/x.png"));
    }
}

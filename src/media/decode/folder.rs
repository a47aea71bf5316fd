//! A folder of numbered PNG frames (what `ildiff` and most tools write for frame sequences).
//! Files are ordered by the numbers in their names, so `frame_2.png` comes before
//! `frame_10.png`; files that are not PNGs (by their bytes, or a `.png` extension on a broken
//! file, which then fails loudly) and hidden files are ignored. Every frame must have the first
//! frame's size. Frames play at 30 fps; callers retime as they wish.

use std::cmp::Ordering;
use std::path::{Path, PathBuf};

use super::{FrameSource, SourceInfo, read_head};
use crate::error::{Error, Result};
use crate::media::{Delay, Format, Frame, Limits, LoopCount};

/// The frame rate given to folders, which carry no timing.
pub const FOLDER_FPS: u32 = 30;

/// Natural order: runs of digits compare as numbers, the rest as text.
pub(crate) fn natural_cmp(a: &str, b: &str) -> Ordering {
    let (mut a, mut b) = (a.as_bytes(), b.as_bytes());
    loop {
        match (a.first(), b.first()) {
            (None, None) => return Ordering::Equal,
            (None, Some(_)) => return Ordering::Less,
            (Some(_), None) => return Ordering::Greater,
            (Some(x), Some(y)) if x.is_ascii_digit() && y.is_ascii_digit() => {
                let na = a.iter().take_while(|c| c.is_ascii_digit()).count();
                let nb = b.iter().take_while(|c| c.is_ascii_digit()).count();
                let (da, db) = (&a[..na], &b[..nb]);
                // Compare without leading zeros by length then digits (no overflow on long runs).
                let ta = &da[da.iter().take_while(|&&c| c == b'0').count()..];
                let tb = &db[db.iter().take_while(|&&c| c == b'0').count()..];
                let ord = ta.len().cmp(&tb.len()).then_with(|| ta.cmp(tb));
                if ord != Ordering::Equal {
                    return ord;
                }
                (a, b) = (&a[na..], &b[nb..]);
            }
            (Some(x), Some(y)) => {
                let ord = x.to_ascii_lowercase().cmp(&y.to_ascii_lowercase());
                if ord != Ordering::Equal {
                    return ord;
                }
                (a, b) = (&a[1..], &b[1..]);
            }
        }
    }
}

/// The PNG frame files of `dir`, in natural order.
pub(crate) fn frame_files(dir: &Path) -> Result<Vec<PathBuf>> {
    let entries = std::fs::read_dir(dir).map_err(|e| Error::io("read folder", dir, e))?;
    let mut files = Vec::new();
    for entry in entries {
        let entry = entry.map_err(|e| Error::io("read folder", dir, e))?;
        let path = entry.path();
        let name = entry.file_name().to_string_lossy().into_owned();
        if name.starts_with('.') || !path.is_file() {
            continue;
        }
        let png_ext = path
            .extension()
            .and_then(|e| e.to_str())
            .is_some_and(|e| e.eq_ignore_ascii_case("png"));
        let png_magic = read_head(&path, 8)? == b"\x89PNG\r\n\x1a\n";
        if png_ext || png_magic {
            files.push((name, path));
        }
    }
    files.sort_by(|a, b| natural_cmp(&a.0, &b.0).then_with(|| a.0.cmp(&b.0)));
    Ok(files.into_iter().map(|(_, p)| p).collect())
}

/// Reads the size from a PNG's IHDR without decoding it.
fn png_size(path: &Path) -> Result<(u32, u32)> {
    let head = read_head(path, 24)?;
    if head.len() < 24 || &head[..8] != b"\x89PNG\r\n\x1a\n" || &head[12..16] != b"IHDR" {
        return Err(Error::decode(
            "png",
            path,
            "not a PNG file (no IHDR header)",
        ));
    }
    let be = |b: &[u8]| u32::from_be_bytes([b[0], b[1], b[2], b[3]]);
    Ok((be(&head[16..20]), be(&head[20..24])))
}

pub(super) struct FolderSource {
    info: SourceInfo,
    limits: Limits,
    files: Vec<PathBuf>,
    next: usize,
}

impl FolderSource {
    pub fn open(dir: &Path, limits: &Limits) -> Result<FolderSource> {
        let files = frame_files(dir)?;
        let Some(first) = files.first() else {
            return Err(Error::Unsupported {
                reason: "the folder holds no PNG frames".into(),
                path: dir.to_path_buf(),
            });
        };
        limits.check_frames(files.len() as u64, dir)?;
        let (width, height) = png_size(first)?;
        limits.check_canvas(width, height, first)?;
        limits.check_bytes(width, height, 1, first)?;
        Ok(FolderSource {
            info: SourceInfo {
                format: Format::Folder,
                animated: files.len() > 1,
                width,
                height,
                frame_count: Some(files.len() as u64),
                loops: LoopCount::Infinite,
            },
            limits: *limits,
            files,
            next: 0,
        })
    }
}

impl FrameSource for FolderSource {
    fn info(&self) -> &SourceInfo {
        &self.info
    }

    fn next_frame(&mut self) -> Result<Option<Frame>> {
        let Some(path) = self.files.get(self.next) else {
            return Ok(None);
        };
        let (w, h) = png_size(path)?;
        if (w, h) != (self.info.width, self.info.height) {
            let first = self.files[0]
                .file_name()
                .map(|n| n.to_string_lossy().into_owned())
                .unwrap_or_default();
            return Err(Error::decode(
                "folder",
                path,
                format!(
                    "frame is {w}x{h} but the first frame ({first}) is {}x{}; all frames must have \
                     the same size",
                    self.info.width, self.info.height
                ),
            ));
        }
        let image = super::png::decode_still(path, &self.limits)?;
        self.next += 1;
        Ok(Some(Frame::new(image, Delay::from_ratio(1, FOLDER_FPS))))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::media::decode::open;
    use crate::media::decode::testutil::{pattern, png_bytes};

    #[test]
    fn natural_order() {
        let mut v = vec![
            "frame_10.png",
            "frame_2.png",
            "frame_1.png",
            "Frame_3.png",
            "f.png",
        ];
        v.sort_by(|a, b| natural_cmp(a, b));
        assert_eq!(
            v,
            vec![
                "f.png",
                "frame_1.png",
                "frame_2.png",
                "Frame_3.png",
                "frame_10.png"
            ]
        );
        assert_eq!(natural_cmp("a007", "a7"), Ordering::Equal);
        assert_eq!(
            natural_cmp("a99999999999999999999999", "a1"),
            Ordering::Greater
        );
    }

    #[test]
    fn folder_of_numbered_pngs_in_numeric_order() {
        let dir = tempfile::tempdir().expect("tempdir");
        for i in [1u32, 2, 10, 3] {
            std::fs::write(
                dir.path().join(format!("frame_{i}.png")),
                png_bytes(&pattern(6, 5, i)),
            )
            .expect("write");
        }
        std::fs::write(dir.path().join("notes.txt"), b"not a frame").expect("write");
        std::fs::write(dir.path().join(".hidden.png"), b"junk").expect("write");
        let a = open(dir.path(), &Limits::default()).expect("folder");
        assert_eq!(a.frames.len(), 4);
        for (f, seed) in a.frames.iter().zip([1u32, 2, 3, 10]) {
            assert_eq!(f.image, pattern(6, 5, seed));
            assert_eq!(f.delay, Delay::from_ratio(1, 30));
        }
        assert_eq!(a.loops, LoopCount::Infinite);
    }

    #[test]
    fn odd_sized_frame_is_named() {
        let dir = tempfile::tempdir().expect("tempdir");
        std::fs::write(dir.path().join("a_1.png"), png_bytes(&pattern(6, 5, 1))).expect("w");
        std::fs::write(dir.path().join("a_2.png"), png_bytes(&pattern(7, 5, 1))).expect("w");
        let e = open(dir.path(), &Limits::default()).expect_err("odd size");
        let msg = e.to_string();
        assert!(msg.contains("a_2.png") && msg.contains("7x5"), "{msg}");
        assert!(msg.contains("a_1.png"), "{msg}");
    }

    #[test]
    fn empty_folder_and_broken_png() {
        let dir = tempfile::tempdir().expect("tempdir");
        assert_eq!(
            open(dir.path(), &Limits::default())
                .expect_err("empty")
                .kind(),
            "unsupported"
        );
        std::fs::write(dir.path().join("x_1.png"), png_bytes(&pattern(4, 4, 1))).expect("w");
        std::fs::write(dir.path().join("x_2.png"), b"broken").expect("w");
        let e = open(dir.path(), &Limits::default()).expect_err("broken");
        assert!(e.to_string().contains("x_2.png"), "{e}");
    }
}

//! PNG folder export: `frame_00000.png`, `frame_00001.png`, … plus `timing.json`.
//!
//! Frames are written exactly as they are (RGBA, hidden colour under alpha 0 kept: a folder is
//! for handing frames to other tools, which may care). `timing.json` holds the exact delay ratios
//! and the loop count so the folder reads back with the same timing.
//!
//! Atomic like every other output: the files are written into a temporary folder beside the
//! target, which is renamed into place at the end; on any error nothing is left. An existing
//! target folder is replaced only when it is empty or holds nothing but our own files
//! (`frame_*.png`, `timing.json`) from an earlier export; anything else is refused, so an
//! export can never wipe unrelated files.

use std::path::Path;

use super::apng;
use crate::error::{Error, Result};
use crate::media::Animation;
use crate::media::atomic::parent_dir;

/// Name of the timing file inside the folder.
pub const TIMING_FILE: &str = "timing.json";

/// Contents of `timing.json`.
#[derive(Debug, Clone, PartialEq, serde::Serialize, serde::Deserialize)]
pub struct FolderTiming {
    /// Format version (1).
    pub version: u32,
    pub width: u32,
    pub height: u32,
    /// Plays, 0 = infinite (as APNG/WebP).
    pub loops: u32,
    pub frames: Vec<FolderFrame>,
}

/// One frame's file name and delay.
#[derive(Debug, Clone, PartialEq, serde::Serialize, serde::Deserialize)]
pub struct FolderFrame {
    pub file: String,
    /// Delay in seconds as `[numerator, denominator]`.
    pub delay: [u32; 2],
}

/// File name of frame `i`.
pub fn frame_name(i: usize) -> String {
    format!("frame_{i:05}.png")
}

/// True for names this exporter writes (`frame_<digits>.png`, `timing.json`).
pub fn is_export_file(name: &str) -> bool {
    if name == TIMING_FILE {
        return true;
    }
    name.strip_prefix("frame_")
        .and_then(|r| r.strip_suffix(".png"))
        .is_some_and(|d| d.len() >= 5 && d.bytes().all(|b| b.is_ascii_digit()))
}

/// Writes the folder; returns the total bytes of the files written.
pub fn write(anim: &Animation, path: &Path) -> Result<u64> {
    super::validate(anim)?;
    let replace = check_target(path)?;
    let parent = parent_dir(path);
    let tmp = tempfile::Builder::new()
        .prefix(".ildiff-")
        .suffix(".part")
        .tempdir_in(&parent)
        .map_err(|e| Error::io("create output folder", path, e))?;
    let mut total = 0u64;
    let mut timing = FolderTiming {
        version: 1,
        width: anim.width,
        height: anim.height,
        loops: anim.loops.to_zero_infinite(),
        frames: Vec::with_capacity(anim.frames.len()),
    };
    for (i, f) in anim.frames.iter().enumerate() {
        let name = frame_name(i);
        let bytes = apng::encode_image(&f.image, png::Compression::Balanced)?;
        std::fs::write(tmp.path().join(&name), &bytes)
            .map_err(|e| Error::io("write frame", path.join(&name), e))?;
        total += bytes.len() as u64;
        let (num, den) = f.delay.ratio();
        timing.frames.push(FolderFrame {
            file: name,
            delay: [num, den],
        });
    }
    let json = serde_json::to_vec_pretty(&timing)
        .map_err(|e| Error::encode("timing.json", e.to_string()))?;
    std::fs::write(tmp.path().join(TIMING_FILE), &json)
        .map_err(|e| Error::io("write timing", path.join(TIMING_FILE), e))?;
    total += json.len() as u64;

    if replace {
        // Move the old export aside (into a temporary folder that deletes it when dropped),
        // put the new one in place, and move the old one back if that fails.
        let old_holder = tempfile::Builder::new()
            .prefix(".ildiff-old-")
            .tempdir_in(&parent)
            .map_err(|e| Error::io("replace output folder", path, e))?;
        let old = old_holder.path().join("old");
        std::fs::rename(path, &old).map_err(|e| Error::io("replace output folder", path, e))?;
        if let Err(e) = std::fs::rename(tmp.path(), path) {
            let _ = std::fs::rename(&old, path);
            return Err(Error::io("rename output folder into place", path, e));
        }
    } else {
        std::fs::rename(tmp.path(), path)
            .map_err(|e| Error::io("rename output folder into place", path, e))?;
    }
    // The temporary folder is now the target: do not let its guard delete anything.
    let _ = tmp.keep();
    Ok(total)
}

/// Checks the target: Ok(false) = absent, Ok(true) = an empty folder or a previous export that
/// may be replaced, Err otherwise.
fn check_target(path: &Path) -> Result<bool> {
    let meta = match std::fs::symlink_metadata(path) {
        Ok(m) => m,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(false),
        Err(e) => return Err(Error::io("inspect output folder", path, e)),
    };
    if !meta.is_dir() {
        return Err(Error::Invalid(format!(
            "the output exists and is not a folder: {}",
            path.display()
        )));
    }
    let entries = std::fs::read_dir(path).map_err(|e| Error::io("list output folder", path, e))?;
    for entry in entries {
        let entry = entry.map_err(|e| Error::io("list output folder", path, e))?;
        let name = entry.file_name();
        let ours = name.to_str().is_some_and(is_export_file)
            && entry.file_type().is_ok_and(|t| t.is_file());
        if !ours {
            return Err(Error::Invalid(format!(
                "the output folder is not empty (it holds {:?}); choose an empty or new folder: {}",
                name,
                path.display()
            )));
        }
    }
    Ok(true)
}

#[cfg(test)]
mod tests {
    use super::super::test_clip::clip;
    use super::*;
    use crate::media::{Delay, LoopCount};

    fn read_back(dir: &Path) -> (FolderTiming, Vec<image::RgbaImage>) {
        let timing: FolderTiming =
            serde_json::from_slice(&std::fs::read(dir.join(TIMING_FILE)).expect("timing"))
                .expect("json");
        let imgs = timing
            .frames
            .iter()
            .map(|f| image::open(dir.join(&f.file)).expect("png").to_rgba8())
            .collect();
        (timing, imgs)
    }

    #[test]
    fn round_trip_exact_including_hidden_colour() {
        let mut anim = clip(4);
        anim.loops = LoopCount::Plays(2);
        anim.frames[1].delay = Delay::from_ratio(1, 30);
        let dir = tempfile::tempdir().expect("tempdir");
        let out = dir.path().join("frames");
        let size = write(&anim, &out).expect("write");
        let (timing, imgs) = read_back(&out);
        assert_eq!(timing.loops, 2);
        assert_eq!(timing.frames.len(), 4);
        assert_eq!(timing.frames[1].delay, [1, 30]);
        for (f, img) in anim.frames.iter().zip(&imgs) {
            assert_eq!(&f.image, img, "folder frames must be bit-exact");
        }
        let on_disk: u64 = std::fs::read_dir(&out)
            .expect("ls")
            .map(|e| e.expect("entry").metadata().expect("meta").len())
            .sum();
        assert_eq!(size, on_disk);
        // Only the target is left beside it.
        assert_eq!(std::fs::read_dir(dir.path()).expect("ls").count(), 1);

        // A previous export is replaced (fewer frames: stale ones must go).
        let short = Animation::still(anim.frames[0].image.clone());
        write(&short, &out).expect("replace");
        let (timing, _) = read_back(&out);
        assert_eq!(timing.frames.len(), 1);
        assert_eq!(std::fs::read_dir(&out).expect("ls").count(), 2);
        assert_eq!(std::fs::read_dir(dir.path()).expect("ls").count(), 1);
    }

    #[test]
    fn refuses_foreign_files_and_leaves_them() {
        let dir = tempfile::tempdir().expect("tempdir");
        let out = dir.path().join("frames");
        std::fs::create_dir(&out).expect("mkdir");
        std::fs::write(out.join("notes.txt"), b"mine").expect("write");
        let err = write(&clip(2), &out).expect_err("must refuse");
        assert_eq!(err.kind(), "invalid");
        assert!(err.to_string().contains("notes.txt"));
        assert_eq!(std::fs::read(out.join("notes.txt")).expect("kept"), b"mine");
        assert_eq!(std::fs::read_dir(dir.path()).expect("ls").count(), 1);
        // An empty folder is fine.
        let empty = dir.path().join("empty");
        std::fs::create_dir(&empty).expect("mkdir");
        write(&clip(2), &empty).expect("write into empty");
        assert_eq!(std::fs::read_dir(&empty).expect("ls").count(), 3);
    }

    #[test]
    fn names() {
        assert_eq!(frame_name(7), "frame_00007.png");
        assert!(is_export_file("frame_00007.png"));
        assert!(is_export_file("frame_123456.png"));
        assert!(!is_export_file("frame_7.png"));
        assert!(!is_export_file("frame_0000a.png"));
        assert!(!is_export_file("other.png"));
    }
}

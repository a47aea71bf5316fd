//! Pack import: reads a sticker pack another app (or this one) wrote, so `ildiff pack --from`
//! can write it for other platforms with its names, emoji and order.
//!
//! Understood (by content, not by name):
//! - a WhatsApp folder with `contents.json` (the sample app's `assets` layout, ours included);
//! - a `.wastickers` (ZIP of `title.txt`, `author.txt`, `tray.png`, WebP stickers);
//! - a LINE ZIP (`01.png…`, `main.png`, `tab.png`) or our `line/` folder with `manifest.json`;
//! - our Telegram folder (`pack.json`), Discord and Signal folders (`manifest.json`);
//! - our pack output folder (`whatsapp/`, `telegram/`, … inside): the one platform in it;
//! - any other folder of sticker files (`.webm`, `.webp`, `.png`, `.gif`, `.tgs`), in name order.
//!
//! A ZIP is a decompression bomb candidate: entry count, each entry's size and the total are
//! capped before anything is extracted, and each entry is read through a counting limit, so a
//! header that lies about its size still cannot make us write more than the cap.

use std::io::Read;
use std::path::{Path, PathBuf};

use serde_json::Value;

use crate::error::{Error, Result};
use crate::media::pack::{PackSpec, PackSticker, StickerSource};
use crate::media::presets::{FitOptions, Preset};
use crate::media::{Format, Limits};

/// Most entries a pack ZIP may have (the largest pack, 200 emoji, plus icons and text).
const MAX_ZIP_ENTRIES: usize = 256;
/// Largest single file in a pack ZIP: stickers are ≤ 512 KB everywhere; 16 MB leaves room for
/// source art without letting a bomb fill the disk.
const MAX_ZIP_ENTRY: u64 = 16 << 20;
/// Largest total of a pack ZIP's files once extracted.
const MAX_ZIP_TOTAL: u64 = 256 << 20;

/// File names that are icons, never stickers, in the layouts above.
const ICON_NAMES: [&str; 7] = [
    "tray.png",
    "main.png",
    "tab.png",
    "icon.webm",
    "icon.png",
    "icon.webp",
    "icon.tgs",
];

/// A pack read from disk.
#[derive(Debug)]
pub struct ImportedPack {
    pub name: String,
    pub author: String,
    /// In pack order; `emoji` may be empty where the source had none (LINE, plain folders).
    pub stickers: Vec<PackSticker>,
    /// The pack's own icon, when it had one.
    pub tray_icon: Option<StickerSource>,
    /// What it was read as, in words ("WhatsApp folder", ".wastickers", ...).
    pub kind: &'static str,
    /// Files extracted from a ZIP live here until the pack is dropped.
    scratch: Option<tempfile::TempDir>,
}

impl ImportedPack {
    /// A spec to export with: the pack's stickers and icon with `options` and `limits`.
    pub fn spec(&self, options: FitOptions, limits: Limits) -> PackSpec {
        PackSpec {
            name: self.name.clone(),
            author: self.author.clone(),
            stickers: self.stickers.clone(),
            tray_icon: self.tray_icon.clone(),
            options,
            limits,
        }
    }

    /// The folder holding extracted files, if the pack came from a ZIP.
    pub fn scratch_dir(&self) -> Option<&Path> {
        self.scratch.as_ref().map(|d| d.path())
    }
}

/// Reads the pack at `path` (a folder, a `.wastickers` or a ZIP).
pub fn read_pack(path: &Path) -> Result<ImportedPack> {
    if path.is_dir() {
        return read_folder(path);
    }
    let meta = std::fs::metadata(path).map_err(|e| Error::io("open pack", path, e))?;
    if !meta.is_file() {
        return Err(Error::Unsupported {
            reason: "not a pack folder or ZIP".into(),
            path: path.to_path_buf(),
        });
    }
    read_zip(path)
}

fn stem(p: &Path) -> String {
    p.file_stem()
        .map(|s| s.to_string_lossy().into_owned())
        .unwrap_or_default()
}

fn is_sticker_file(p: &Path) -> bool {
    let name = p
        .file_name()
        .map(|n| n.to_string_lossy().to_ascii_lowercase())
        .unwrap_or_default();
    if name.starts_with('.') || ICON_NAMES.contains(&name.as_str()) {
        return false;
    }
    let ext = p
        .extension()
        .map(|e| e.to_string_lossy().to_ascii_lowercase())
        .unwrap_or_default();
    matches!(
        ext.as_str(),
        "webm" | "webp" | "png" | "apng" | "gif" | "tgs"
    ) || Format::from_extension(p).is_some_and(|f| f == Format::Mp4)
}

/// Sticker files of a folder in name order ("2" before "10" when both are numbers).
fn sticker_files(dir: &Path) -> Result<Vec<PathBuf>> {
    let mut files: Vec<PathBuf> = std::fs::read_dir(dir)
        .map_err(|e| Error::io("read pack folder", dir, e))?
        .filter_map(|e| e.ok().map(|e| e.path()))
        .filter(|p| p.is_file() && is_sticker_file(p))
        .collect();
    files.sort_by_key(|p| natural_key(p));
    Ok(files)
}

fn natural_key(p: &Path) -> (u64, String) {
    let s = stem(p);
    let digits: String = s.chars().take_while(|c| c.is_ascii_digit()).collect();
    (digits.parse().unwrap_or(u64::MAX), s)
}

fn read_json(path: &Path) -> Result<Value> {
    let bytes = std::fs::read(path).map_err(|e| Error::io("read manifest", path, e))?;
    serde_json::from_slice(&bytes).map_err(|e| Error::decode("JSON", path, e))
}

fn text(v: &Value, keys: &[&str]) -> String {
    keys.iter()
        .find_map(|k| v.get(*k).and_then(Value::as_str))
        .unwrap_or_default()
        .trim()
        .to_string()
}

/// Emoji from a manifest entry: an array (`emojis`, `emoji`) or one string (Signal).
fn emoji_of(v: &Value) -> Vec<String> {
    for key in ["emojis", "emoji"] {
        match v.get(key) {
            Some(Value::Array(a)) => {
                return a
                    .iter()
                    .filter_map(Value::as_str)
                    .map(|s| s.trim().to_string())
                    .filter(|s| !s.is_empty())
                    .collect();
            }
            Some(Value::String(s)) if !s.trim().is_empty() => return vec![s.trim().to_string()],
            _ => {}
        }
    }
    Vec::new()
}

/// A sticker named in a manifest; a file that is not there is an error naming it, not a silent
/// gap in the pack.
fn manifest_sticker(dir: &Path, entry: &Value, file_key: &[&str]) -> Result<PackSticker> {
    let file = text(entry, file_key);
    if file.is_empty() || file.contains("..") || Path::new(&file).is_absolute() {
        return Err(Error::Invalid(format!(
            "a sticker entry names no usable file: {entry}"
        )));
    }
    let path = dir.join(&file);
    if !path.is_file() {
        return Err(Error::io(
            "read sticker",
            &path,
            std::io::Error::new(std::io::ErrorKind::NotFound, "named in the manifest"),
        ));
    }
    Ok(PackSticker {
        source: StickerSource::Path(path.clone()),
        emoji: emoji_of(entry),
        name: {
            let n = text(entry, &["name"]);
            if n.is_empty() { stem(&path) } else { n }
        },
        accessibility_text: text(entry, &["accessibility_text"]),
        time: None,
    })
}

fn icon(dir: &Path, name: &str) -> Option<StickerSource> {
    let p = dir.join(name);
    p.is_file().then_some(StickerSource::Path(p))
}

fn read_folder(dir: &Path) -> Result<ImportedPack> {
    let contents = dir.join("contents.json");
    if contents.is_file() {
        return read_whatsapp_folder(dir, &read_json(&contents)?);
    }
    for (manifest, kind) in [
        ("pack.json", "Telegram folder"),
        ("manifest.json", "pack folder"),
    ] {
        let m = dir.join(manifest);
        if m.is_file() {
            let v = read_json(&m)?;
            let stickers = v
                .get("stickers")
                .and_then(Value::as_array)
                .map(Vec::as_slice)
                .unwrap_or_default()
                .iter()
                .map(|s| manifest_sticker(dir, s, &["file"]))
                .collect::<Result<Vec<_>>>()?;
            let icon_name = text(&v, &["icon"]);
            let tray_icon = if icon_name.is_empty() {
                icon(dir, "main.png")
            } else {
                icon(dir, &icon_name)
            };
            return Ok(ImportedPack {
                name: text(&v, &["name", "title"]),
                author: text(&v, &["author"]),
                stickers,
                tray_icon,
                kind,
                scratch: None,
            });
        }
    }
    // Our pack output folder: one sub-folder per platform.
    let platforms: Vec<PathBuf> = Preset::ALL
        .iter()
        .map(|p| dir.join(p.name()))
        .filter(|p| {
            ["contents.json", "pack.json", "manifest.json"]
                .iter()
                .any(|m| p.join(m).is_file())
        })
        .collect();
    match platforms.as_slice() {
        [one] => return read_folder(one),
        [] => {}
        many => {
            let names: Vec<String> = many.iter().map(|p| p.display().to_string()).collect();
            return Err(Error::Invalid(format!(
                "the folder holds packs for several platforms; name one of: {}",
                names.join(", ")
            )));
        }
    }
    let files = sticker_files(dir)?;
    if files.is_empty() {
        return Err(Error::Unsupported {
            reason: "no manifest and no sticker files (.webm, .webp, .png, .gif, .tgs) found"
                .into(),
            path: dir.to_path_buf(),
        });
    }
    let tray_icon = ICON_NAMES.iter().find_map(|n| icon(dir, n));
    Ok(ImportedPack {
        name: dir
            .file_name()
            .map(|n| n.to_string_lossy().into_owned())
            .unwrap_or_default(),
        author: String::new(),
        stickers: files
            .into_iter()
            .map(|p| PackSticker {
                name: stem(&p),
                ..PackSticker::new(StickerSource::Path(p), Vec::new())
            })
            .collect(),
        tray_icon,
        kind: "folder of sticker files",
        scratch: None,
    })
}

fn read_whatsapp_folder(dir: &Path, v: &Value) -> Result<ImportedPack> {
    let pack = v
        .get("sticker_packs")
        .and_then(Value::as_array)
        .and_then(|a| a.first())
        .ok_or_else(|| {
            Error::decode(
                "contents.json",
                dir.join("contents.json"),
                "no sticker_packs entry",
            )
        })?;
    let ident = text(pack, &["identifier"]);
    // The sample app keeps files in `<identifier>/`; a flat folder is accepted too.
    let files_dir = if !ident.is_empty() && dir.join(&ident).is_dir() {
        dir.join(&ident)
    } else {
        dir.to_path_buf()
    };
    let stickers = pack
        .get("stickers")
        .and_then(Value::as_array)
        .map(Vec::as_slice)
        .unwrap_or_default()
        .iter()
        .map(|s| manifest_sticker(&files_dir, s, &["image_file"]))
        .collect::<Result<Vec<_>>>()?;
    let tray = text(pack, &["tray_image_file"]);
    Ok(ImportedPack {
        name: text(pack, &["name"]),
        author: text(pack, &["publisher"]),
        stickers,
        tray_icon: if tray.is_empty() {
            None
        } else {
            icon(&files_dir, &tray)
        },
        kind: "WhatsApp folder",
        scratch: None,
    })
}

/// Extracts a pack ZIP into a scratch folder under the limits above, then reads that folder.
fn read_zip(path: &Path) -> Result<ImportedPack> {
    let file = std::fs::File::open(path).map_err(|e| Error::io("open pack", path, e))?;
    let zerr = |e: zip::result::ZipError| Error::decode("ZIP", path, e);
    let mut zip = zip::ZipArchive::new(file).map_err(zerr)?;
    if zip.len() > MAX_ZIP_ENTRIES {
        return Err(Error::Invalid(format!(
            "the pack ZIP has {} entries; at most {MAX_ZIP_ENTRIES} are read: {}",
            zip.len(),
            path.display()
        )));
    }
    let scratch = tempfile::Builder::new()
        .prefix("ildiff-pack-")
        .tempdir()
        .map_err(|e| Error::io("create scratch folder for", path, e))?;
    let mut total = 0u64;
    let mut names = Vec::new();
    for i in 0..zip.len() {
        let mut entry = zip.by_index(i).map_err(zerr)?;
        if entry.is_dir() {
            continue;
        }
        // Only the base name: packs are flat, and this keeps `../` out of the scratch folder.
        let Some(name) = entry
            .enclosed_name()
            .and_then(|p| p.file_name().map(|n| n.to_string_lossy().into_owned()))
        else {
            continue;
        };
        if name.starts_with('.') {
            continue;
        }
        let declared = entry.size();
        if declared > MAX_ZIP_ENTRY || total + declared > MAX_ZIP_TOTAL {
            return Err(Error::Invalid(format!(
                "the pack ZIP entry {name} unpacks to {declared} bytes (limit {MAX_ZIP_ENTRY} per file, {MAX_ZIP_TOTAL} in all): {}",
                path.display()
            )));
        }
        let mut bytes = Vec::with_capacity(declared as usize);
        // The header may lie; never read past the cap.
        (&mut entry)
            .take(MAX_ZIP_ENTRY + 1)
            .read_to_end(&mut bytes)
            .map_err(|e| Error::io("read ZIP entry", path, e))?;
        if bytes.len() as u64 > MAX_ZIP_ENTRY {
            return Err(Error::Invalid(format!(
                "the pack ZIP entry {name} unpacks past {MAX_ZIP_ENTRY} bytes: {}",
                path.display()
            )));
        }
        total += bytes.len() as u64;
        let out = scratch.path().join(&name);
        std::fs::write(&out, &bytes).map_err(|e| Error::io("extract", &out, e))?;
        names.push(name);
    }
    let dir = scratch.path();
    let is_wastickers = names.iter().any(|n| n == "title.txt" || n == "author.txt");
    let mut pack = if dir.join("contents.json").is_file()
        || dir.join("pack.json").is_file()
        || dir.join("manifest.json").is_file()
    {
        read_folder(dir)?
    } else {
        let files = sticker_files(dir)?;
        if files.is_empty() {
            return Err(Error::Unsupported {
                reason: "the ZIP holds no sticker files".into(),
                path: path.to_path_buf(),
            });
        }
        ImportedPack {
            name: String::new(),
            author: String::new(),
            stickers: files
                .into_iter()
                .map(|p| PackSticker {
                    name: stem(&p),
                    ..PackSticker::new(StickerSource::Path(p), Vec::new())
                })
                .collect(),
            tray_icon: ICON_NAMES.iter().find_map(|n| icon(dir, n)),
            kind: if is_wastickers {
                ".wastickers"
            } else {
                "LINE ZIP"
            },
            scratch: None,
        }
    };
    let read_text = |n: &str| {
        std::fs::read_to_string(dir.join(n))
            .map(|s| s.trim().to_string())
            .unwrap_or_default()
    };
    if pack.name.is_empty() {
        pack.name = read_text("title.txt");
    }
    if pack.author.is_empty() {
        pack.author = read_text("author.txt");
    }
    if pack.name.is_empty() {
        pack.name = stem(path);
    }
    pack.scratch = Some(scratch);
    Ok(pack)
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::io::Write;

    fn write_zip(path: &Path, entries: &[(&str, &[u8])]) {
        let f = std::fs::File::create(path).expect("create");
        let mut z = zip::ZipWriter::new(f);
        for (name, bytes) in entries {
            z.start_file(*name, zip::write::SimpleFileOptions::default())
                .expect("start");
            z.write_all(bytes).expect("write");
        }
        z.finish().expect("finish");
    }

    #[test]
    fn wastickers_reads_title_author_order_and_tray() {
        let dir = tempfile::tempdir().expect("tempdir");
        let p = dir.path().join("cats.wastickers");
        write_zip(
            &p,
            &[
                ("title.txt", b"Cats\n"),
                ("author.txt", b"Me"),
                ("tray.png", b"png"),
                ("10.webp", b"x"),
                ("2.webp", b"x"),
                ("1.webp", b"x"),
            ],
        );
        let pack = read_pack(&p).expect("read");
        assert_eq!(pack.kind, ".wastickers");
        assert_eq!((pack.name.as_str(), pack.author.as_str()), ("Cats", "Me"));
        let names: Vec<&str> = pack.stickers.iter().map(|s| s.name.as_str()).collect();
        assert_eq!(names, ["1", "2", "10"]);
        assert!(pack.tray_icon.is_some());
        let scratch = pack.scratch_dir().expect("scratch").to_path_buf();
        assert!(scratch.join("1.webp").is_file());
        drop(pack);
        assert!(!scratch.exists());
    }

    #[test]
    fn zip_bomb_is_refused_before_extracting() {
        // A 17 MB run of zeros deflates to a few KB; the declared size alone refuses it.
        let dir = tempfile::tempdir().expect("tempdir");
        let p = dir.path().join("bomb.zip");
        let f = std::fs::File::create(&p).expect("create");
        let mut z = zip::ZipWriter::new(f);
        z.start_file(
            "01.png",
            zip::write::SimpleFileOptions::default()
                .compression_method(zip::CompressionMethod::Deflated),
        )
        .expect("start");
        let chunk = vec![0u8; 1 << 20];
        for _ in 0..17 {
            z.write_all(&chunk).expect("write");
        }
        z.finish().expect("finish");
        assert!(std::fs::metadata(&p).expect("meta").len() < 100_000);
        let err = read_pack(&p).expect_err("bomb");
        assert_eq!(err.kind(), "invalid");
        assert!(err.to_string().contains("01.png"), "{err}");
    }

    #[test]
    fn path_traversal_names_stay_inside() {
        let dir = tempfile::tempdir().expect("tempdir");
        let p = dir.path().join("line.zip");
        write_zip(
            &p,
            &[
                ("../../evil.png", b"x"),
                ("01.png", b"x"),
                ("main.png", b"x"),
            ],
        );
        let pack = read_pack(&p).expect("read");
        assert_eq!(pack.kind, "LINE ZIP");
        assert!(!dir.path().join("evil.png").exists());
        // main.png is the icon, not a sticker.
        let names: Vec<&str> = pack.stickers.iter().map(|s| s.name.as_str()).collect();
        assert_eq!(names, ["01"]);
        assert!(pack.tray_icon.is_some());
    }

    #[test]
    fn manifest_naming_a_missing_file_is_an_error() {
        let dir = tempfile::tempdir().expect("tempdir");
        std::fs::write(
            dir.path().join("pack.json"),
            r#"{"name":"x","author":"y","stickers":[{"file":"01.webm","emoji":["😀"]}]}"#,
        )
        .expect("write");
        let err = read_pack(dir.path()).expect_err("missing");
        assert!(err.to_string().contains("01.webm"), "{err}");
        let err = read_pack(&dir.path().join("nothing-here")).expect_err("absent");
        assert_eq!(err.kind(), "io");
    }

    #[test]
    fn plain_folder_without_stickers_is_unsupported() {
        let dir = tempfile::tempdir().expect("tempdir");
        std::fs::write(dir.path().join("notes.txt"), "hi").expect("write");
        let err = read_pack(dir.path()).expect_err("empty");
        assert_eq!(err.kind(), "unsupported");
    }
}

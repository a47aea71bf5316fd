//! Container formats and sniffing from the bytes: an extension can lie, the magic number cannot.

use std::path::Path;

/// The file formats the studio reads or writes.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, serde::Serialize, serde::Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Format {
    Gif,
    /// PNG, still or animated (APNG): the importer tells them apart by the `acTL` chunk.
    Png,
    Jpeg,
    WebP,
    /// Matroska family (WebM and MKV share the EBML magic).
    WebM,
    /// ISO-BMFF (MP4, MOV, M4V).
    Mp4,
    /// A folder of numbered PNG frames.
    Folder,
    /// Telegram animated sticker: gzipped Lottie (vector), read only.
    Tgs,
}

impl Format {
    /// Lower-case name for messages and `--json`.
    pub fn name(self) -> &'static str {
        match self {
            Format::Gif => "gif",
            Format::Png => "png",
            Format::Jpeg => "jpeg",
            Format::WebP => "webp",
            Format::WebM => "webm",
            Format::Mp4 => "mp4",
            Format::Folder => "folder",
            Format::Tgs => "tgs",
        }
    }

    /// True for formats decoded through ffmpeg.
    pub fn is_video(self) -> bool {
        matches!(self, Format::WebM | Format::Mp4)
    }

    /// The output format an extension asks for (`.png` = APNG; no extension = frame folder).
    pub fn from_extension(path: &Path) -> Option<Format> {
        let ext = path.extension()?.to_str()?.to_ascii_lowercase();
        Some(match ext.as_str() {
            "gif" => Format::Gif,
            "png" | "apng" => Format::Png,
            "jpg" | "jpeg" => Format::Jpeg,
            "webp" => Format::WebP,
            "webm" | "mkv" => Format::WebM,
            "mp4" | "mov" | "m4v" => Format::Mp4,
            "tgs" => Format::Tgs,
            _ => return None,
        })
    }
}

/// Identifies a format from the first bytes of a file (at least 12 bytes are needed for WebP
/// and MP4; fewer give `None`).
pub fn sniff(head: &[u8]) -> Option<Format> {
    if head.starts_with(b"GIF87a") || head.starts_with(b"GIF89a") {
        Some(Format::Gif)
    } else if head.starts_with(b"\x89PNG\r\n\x1a\n") {
        Some(Format::Png)
    } else if head.starts_with(&[0xFF, 0xD8, 0xFF]) {
        Some(Format::Jpeg)
    } else if head.len() >= 12 && &head[0..4] == b"RIFF" && &head[8..12] == b"WEBP" {
        Some(Format::WebP)
    } else if head.starts_with(&[0x1A, 0x45, 0xDF, 0xA3]) {
        Some(Format::WebM)
    } else if head.len() >= 12 && &head[4..8] == b"ftyp" {
        Some(Format::Mp4)
    } else if head.len() >= 8
        && matches!(&head[4..8], b"moov" | b"mdat" | b"wide" | b"free" | b"skip")
    {
        // Old QuickTime files may start without an ftyp box.
        Some(Format::Mp4)
    } else if head.starts_with(&[0x1f, 0x8b]) {
        // gzip: of the formats read here only a `.tgs` (gzipped Lottie) is gzip.
        Some(Format::Tgs)
    } else {
        None
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn sniffs_magic_numbers() {
        assert_eq!(sniff(b"GIF89a\x01\x00"), Some(Format::Gif));
        assert_eq!(sniff(b"\x89PNG\r\n\x1a\n\0\0"), Some(Format::Png));
        assert_eq!(sniff(b"RIFF\0\0\0\0WEBPVP8 "), Some(Format::WebP));
        assert_eq!(sniff(b"\0\0\0\x20ftypisom"), Some(Format::Mp4));
        assert_eq!(sniff(&[0x1A, 0x45, 0xDF, 0xA3, 0x9f]), Some(Format::WebM));
        assert_eq!(sniff(b"hello world!"), None);
        assert_eq!(sniff(b""), None);
    }
}

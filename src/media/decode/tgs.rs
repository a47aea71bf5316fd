//! Telegram animated stickers (`.tgs`): gzipped Lottie JSON, rendered frame by frame with
//! rlottie (the renderer Telegram itself uses; Debian's `librlottie-dev`).
//!
//! A `.tgs` is a decompression-bomb candidate (a few KB of gzip can claim gigabytes), so the
//! inflated size is measured by streaming into a counter before anything is kept, and refused
//! past [`MAX_JSON_BYTES`]. The Lottie header's canvas (`w`, `h`) and frame range (`ip`, `op`)
//! are checked against [`Limits`] before rlottie sees the data, and rlottie renders one frame
//! at a time into one reused surface.

use std::io::Read;
use std::path::Path;

use crate::error::{Error, Result};
use crate::media::animation::unpremultiply;
use crate::media::{Delay, Format, Frame, Limits, LoopCount};

use super::{FrameSource, SourceInfo};

/// Largest inflated Lottie JSON accepted. Telegram caps a `.tgs` at 64 KB *compressed*; vector
/// JSON rarely inflates more than 20×, so 16 MB is generous and still bounded.
pub const MAX_JSON_BYTES: u64 = 16 << 20;
/// Largest `.tgs` file read (compressed).
const MAX_FILE_BYTES: u64 = 4 << 20;

/// Inflates gzip `data`, refusing output past `max` bytes: a first pass only counts (nothing is
/// kept), so a bomb is refused without allocating its claimed size.
pub fn gunzip_limited(data: &[u8], max: u64, path: &Path) -> Result<Vec<u8>> {
    let counted = std::io::copy(
        &mut flate2::read::GzDecoder::new(data).take(max + 1),
        &mut std::io::sink(),
    )
    .map_err(|e| Error::decode("tgs", path, format!("not valid gzip: {e}")))?;
    if counted > max {
        return Err(Error::Limits {
            what: "inflated .tgs size",
            value: counted,
            limit: max,
            flag: "--max-bytes",
            path: path.to_path_buf(),
        });
    }
    let mut out = Vec::with_capacity(counted as usize);
    flate2::read::GzDecoder::new(data)
        .take(max)
        .read_to_end(&mut out)
        .map_err(|e| Error::decode("tgs", path, e))?;
    Ok(out)
}

/// The Lottie header fields the limits need.
#[derive(Debug, Clone, Copy, PartialEq)]
struct Header {
    width: u32,
    height: u32,
    fps: f64,
    frames: u64,
}

fn header(json: &[u8], path: &Path) -> Result<Header> {
    #[derive(serde::Deserialize)]
    struct Raw {
        w: f64,
        h: f64,
        fr: f64,
        ip: f64,
        op: f64,
    }
    let raw: Raw = serde_json::from_slice(json)
        .map_err(|e| Error::decode("tgs", path, format!("not a Lottie animation: {e}")))?;
    let ok = |v: f64| v.is_finite() && v >= 0.0;
    if !(ok(raw.w) && ok(raw.h) && ok(raw.ip) && ok(raw.op) && raw.fr.is_finite() && raw.fr > 0.0)
        || raw.op <= raw.ip
    {
        return Err(Error::decode(
            "tgs",
            path,
            format!(
                "bad Lottie header (w {}, h {}, fr {}, ip {}, op {})",
                raw.w, raw.h, raw.fr, raw.ip, raw.op
            ),
        ));
    }
    Ok(Header {
        width: raw.w.min(u32::MAX as f64) as u32,
        height: raw.h.min(u32::MAX as f64) as u32,
        fps: raw.fr,
        frames: (raw.op - raw.ip).ceil() as u64,
    })
}

/// Frames of a `.tgs`, rendered on demand.
pub struct TgsSource {
    info: SourceInfo,
    anim: rlottie::Animation,
    surface: rlottie::Surface,
    next: usize,
    total: usize,
    delay: Delay,
}

impl TgsSource {
    pub fn open(path: &Path, limits: &Limits) -> Result<Self> {
        let file_limits = Limits {
            max_bytes: MAX_FILE_BYTES.min(limits.max_bytes),
            ..*limits
        };
        let data = super::read_all(path, &file_limits)?;
        let json = gunzip_limited(&data, MAX_JSON_BYTES.min(limits.max_bytes), path)?;
        let h = header(&json, path)?;
        limits.check_all(h.width, h.height, h.frames, path)?;
        if json.contains(&0) {
            return Err(Error::decode("tgs", path, "NUL byte in the Lottie JSON"));
        }
        // rlottie caches parsed animations by key: the content's hash keeps two files apart.
        let key = {
            use std::hash::{Hash, Hasher};
            let mut hasher = std::collections::hash_map::DefaultHasher::new();
            json.hash(&mut hasher);
            format!("ildiff-tgs-{:016x}", hasher.finish())
        };
        // No external resources: a sticker is self-contained, so the resource path is empty.
        let anim = rlottie::Animation::from_data(json, key, "")
            .ok_or_else(|| Error::decode("tgs", path, "rlottie cannot parse this animation"))?;
        let total = anim.totalframe().min(h.frames as usize).max(1);
        let size = rlottie::Size::new(h.width as usize, h.height as usize);
        Ok(TgsSource {
            info: SourceInfo {
                format: Format::Tgs,
                animated: total > 1,
                width: h.width,
                height: h.height,
                frame_count: Some(total as u64),
                loops: LoopCount::Infinite,
            },
            anim,
            surface: rlottie::Surface::new(size),
            next: 0,
            total,
            delay: Delay::from_fps(h.fps),
        })
    }
}

impl FrameSource for TgsSource {
    fn info(&self) -> &SourceInfo {
        &self.info
    }

    fn next_frame(&mut self) -> Result<Option<Frame>> {
        if self.next >= self.total {
            return Ok(None);
        }
        self.anim.render(self.next, &mut self.surface);
        self.next += 1;
        let (w, h) = (self.info.width, self.info.height);
        // rlottie writes premultiplied BGRA; frames here are straight RGBA.
        let mut rgba = Vec::with_capacity(w as usize * h as usize * 4);
        for p in self.surface.data() {
            rgba.extend_from_slice(&[p.r, p.g, p.b, p.a]);
        }
        let mut img = image::RgbaImage::from_raw(w, h, rgba)
            .ok_or_else(|| Error::Invalid("rlottie surface has the wrong size".into()))?;
        unpremultiply(&mut img);
        Ok(Some(Frame::new(img, self.delay)))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::io::Write;

    /// A 64×64, 10-frame, 10 fps Lottie: a red square whose opacity fades from 100 to 0.
    const LOTTIE: &str = r#"{"v":"5.5.2","fr":10,"ip":0,"op":10,"w":64,"h":64,"nm":"t","ddd":0,"assets":[],
"layers":[{"ddd":0,"ind":1,"ty":4,"nm":"sq","sr":1,"ks":{"o":{"a":1,"k":[{"t":0,"s":[100],"i":{"x":[1],"y":[1]},"o":{"x":[0],"y":[0]}},{"t":9,"s":[0]}]},
"r":{"a":0,"k":0},"p":{"a":0,"k":[32,32,0]},"a":{"a":0,"k":[0,0,0]},"s":{"a":0,"k":[100,100,100]}},"ao":0,
"shapes":[{"ty":"rc","d":1,"s":{"a":0,"k":[40,40]},"p":{"a":0,"k":[0,0]},"r":{"a":0,"k":0},"nm":"r"},
{"ty":"fl","c":{"a":0,"k":[1,0,0,1]},"o":{"a":0,"k":100},"r":1,"nm":"f"}],"ip":0,"op":10,"st":0,"bm":0}]}"#;

    fn gzip(bytes: &[u8]) -> Vec<u8> {
        let mut enc = flate2::write::GzEncoder::new(Vec::new(), flate2::Compression::best());
        enc.write_all(bytes).expect("gzip");
        enc.finish().expect("gzip")
    }

    #[test]
    fn renders_a_small_lottie_the_test_writes() {
        let dir = tempfile::tempdir().expect("tempdir");
        let path = dir.path().join("fade.tgs");
        std::fs::write(&path, gzip(LOTTIE.as_bytes())).expect("write");
        let anim = super::super::open(&path, &Limits::default()).expect("decode");
        assert_eq!((anim.width, anim.height, anim.len()), (64, 64, 10));
        assert_eq!(anim.frames[0].delay, Delay::from_fps(10.0));
        let first = &anim.frames[0].image;
        // Centre: opaque red; corner: transparent.
        let c = first.get_pixel(32, 32);
        assert!(c[0] > 240 && c[1] < 16 && c[3] > 240, "{c:?}");
        assert_eq!(first.get_pixel(2, 2)[3], 0);
        // Opacity fades: straight alpha falls while the colour stays red.
        let late = anim.frames[8].image.get_pixel(32, 32);
        assert!(late[3] < c[3] / 2 && late[3] > 0, "{late:?}");
        assert!(late[0] > 200, "unpremultiplied: {late:?}");
        let info = super::super::probe(&path, &Limits::default()).expect("probe");
        assert_eq!(info.format, Format::Tgs);
    }

    #[test]
    fn gzip_bomb_is_refused_without_allocating() {
        // 64 MB of spaces inflates from ~64 KB of gzip; the count pass refuses it before
        // any buffer of that size exists.
        let mut enc = flate2::write::GzEncoder::new(Vec::new(), flate2::Compression::best());
        let chunk = vec![b' '; 1 << 20];
        for _ in 0..64 {
            enc.write_all(&chunk).expect("gzip");
        }
        let bomb = enc.finish().expect("gzip");
        assert!(bomb.len() < 200_000, "{}", bomb.len());
        let dir = tempfile::tempdir().expect("tempdir");
        let path = dir.path().join("bomb.tgs");
        std::fs::write(&path, &bomb).expect("write");
        let err = super::super::open(&path, &Limits::default()).expect_err("bomb");
        assert_eq!(err.kind(), "limits", "{err}");
        assert!(err.to_string().contains("inflated .tgs size"), "{err}");
        // The same check on the bytes directly, with a tiny cap.
        let err = gunzip_limited(&gzip(&[b'x'; 1000]), 999, &path).expect_err("cap");
        assert_eq!(err.kind(), "limits");
        assert_eq!(
            gunzip_limited(&gzip(&[b'x'; 1000]), 1000, &path).expect("fits"),
            vec![b'x'; 1000]
        );
    }

    #[test]
    fn header_limits_apply_before_rendering() {
        let dir = tempfile::tempdir().expect("tempdir");
        let huge = LOTTIE.replace(r#""w":64,"h":64"#, r#""w":100000,"h":64"#);
        let path = dir.path().join("huge.tgs");
        std::fs::write(&path, gzip(huge.as_bytes())).expect("write");
        let err = super::super::open(&path, &Limits::default()).expect_err("canvas");
        assert_eq!(err.kind(), "limits", "{err}");
        let long = LOTTIE.replace(r#""ip":0,"op":10,"w""#, r#""ip":0,"op":100000,"w""#);
        let path = dir.path().join("long.tgs");
        std::fs::write(&path, gzip(long.as_bytes())).expect("write");
        let err = super::super::open(&path, &Limits::default()).expect_err("frames");
        assert_eq!(err.kind(), "limits", "{err}");
        let path = dir.path().join("junk.tgs");
        std::fs::write(&path, gzip(b"{\"not\": \"lottie\"}")).expect("write");
        let err = super::super::open(&path, &Limits::default()).expect_err("junk");
        assert_eq!(err.kind(), "decode", "{err}");
    }
}

//! Single-image import (JPEG, still WebP) through the `image` crate's decoders, and the
//! one-frame [`FrameSource`] every still format uses: 100 ms, looping, the convention of
//! [`crate::media::Animation::still`]. JPEG's EXIF orientation is applied so phone photos stand up.

use std::io::Cursor;
use std::path::Path;

use image::metadata::Orientation;
use image::{DynamicImage, ImageDecoder, RgbaImage};

use super::{FrameSource, SourceInfo, read_all};
use crate::error::{Error, Result};
use crate::media::{Delay, Format, Frame, Limits, LoopCount};

/// `image`'s own limits, set from ours so its internal allocations are capped as well.
pub(super) fn image_limits(limits: &Limits) -> image::Limits {
    let mut l = image::Limits::default();
    l.max_image_width = Some(limits.max_side);
    l.max_image_height = Some(limits.max_side);
    l.max_alloc = Some(limits.max_bytes);
    l
}

/// Decodes to RGBA8 after checking the size the decoder read from the header against `limits`.
/// With `orient`, EXIF orientation is applied (the size reported is then the rotated one).
pub(super) fn decode_checked(
    mut decoder: impl ImageDecoder,
    format: Format,
    path: &Path,
    limits: &Limits,
    orient: bool,
) -> Result<RgbaImage> {
    let (w, h) = decoder.dimensions();
    limits.check_canvas(w, h, path)?;
    limits.check_bytes(w, h, 1, path)?;
    let name = format.name();
    decoder
        .set_limits(image_limits(limits))
        .map_err(|e| Error::decode(name, path, e))?;
    let orientation = if orient {
        decoder.orientation().ok()
    } else {
        None
    };
    let mut img = DynamicImage::from_decoder(decoder).map_err(|e| Error::decode(name, path, e))?;
    if let Some(o) = orientation {
        img.apply_orientation(o);
    }
    Ok(img.to_rgba8())
}

/// True when the marker structure reaches the end-of-image marker. The JPEG decoder fills a cut
/// scan with grey and reports success; a half-grey sticker source is worse than an error, so we
/// check: segments are skipped by their lengths (so an EXIF thumbnail's own markers are not
/// mistaken for ours), entropy-coded data up to the next real marker.
pub(super) fn jpeg_complete(data: &[u8]) -> bool {
    if !data.starts_with(&[0xFF, 0xD8]) {
        return false;
    }
    let mut i = 2;
    loop {
        // Skip to the marker (fill bytes 0xFF included).
        while i < data.len() && data[i] != 0xFF {
            i += 1;
        }
        while i < data.len() && data[i] == 0xFF {
            i += 1;
        }
        let Some(&marker) = data.get(i) else {
            return false;
        };
        i += 1;
        match marker {
            0xD9 => return true,
            0x00 | 0x01 | 0xD0..=0xD8 => continue,
            _ => {
                let Some(len) = data.get(i..i + 2).map(|b| u16::from_be_bytes([b[0], b[1]])) else {
                    return false;
                };
                if len < 2 {
                    return false;
                }
                i += len as usize;
                if marker == 0xDA {
                    // Entropy-coded data: 0xFF is stuffed as FF 00; FF D0..D7 are restarts.
                    loop {
                        let (Some(&a), Some(&b)) = (data.get(i), data.get(i + 1)) else {
                            return false;
                        };
                        if a == 0xFF && b != 0x00 && !(0xD0..=0xD7).contains(&b) {
                            break;
                        }
                        i += 1;
                    }
                }
            }
        }
    }
}

/// Opens a JPEG: the header (and the size limits) now, the pixels on the first `next_frame`.
pub(super) fn open_jpeg(path: &Path, limits: &Limits) -> Result<StillSource> {
    let data = read_all(path, limits)?;
    if !jpeg_complete(&data) {
        return Err(Error::decode(
            "jpeg",
            path,
            "the file is truncated (no end-of-image marker)",
        ));
    }
    let mut decoder = image::codecs::jpeg::JpegDecoder::new(Cursor::new(data))
        .map_err(|e| Error::decode("jpeg", path, e))?;
    let (w, h) = decoder.dimensions();
    limits.check_canvas(w, h, path)?;
    limits.check_bytes(w, h, 1, path)?;
    let orientation = decoder.orientation().unwrap_or(Orientation::NoTransforms);
    let (w, h) = match orientation {
        Orientation::Rotate90
        | Orientation::Rotate270
        | Orientation::Rotate90FlipH
        | Orientation::Rotate270FlipH => (h, w),
        _ => (w, h),
    };
    let (p, l) = (path.to_path_buf(), *limits);
    Ok(StillSource::lazy(
        Format::Jpeg,
        w,
        h,
        Box::new(move || decode_checked(decoder, Format::Jpeg, &p, &l, true)),
    ))
}

type Decode = Box<dyn FnOnce() -> Result<RgbaImage>>;

/// A still image served as a one-frame clip, decoded when the frame is asked for (so probing a
/// file costs only its header).
pub(super) struct StillSource {
    info: SourceInfo,
    decode: Option<Decode>,
}

impl StillSource {
    /// A still of `width × height` (already checked against the limits) decoded by `decode`.
    pub fn lazy(format: Format, width: u32, height: u32, decode: Decode) -> StillSource {
        StillSource {
            info: SourceInfo {
                format,
                animated: false,
                width,
                height,
                frame_count: Some(1),
                loops: LoopCount::Infinite,
            },
            decode: Some(decode),
        }
    }
}

impl FrameSource for StillSource {
    fn info(&self) -> &SourceInfo {
        &self.info
    }

    fn next_frame(&mut self) -> Result<Option<Frame>> {
        let Some(decode) = self.decode.take() else {
            return Ok(None);
        };
        let img = decode()?;
        if img.dimensions() != (self.info.width, self.info.height) {
            return Err(Error::Invalid(format!(
                "decoded {}x{} image, header said {}x{}",
                img.width(),
                img.height(),
                self.info.width,
                self.info.height
            )));
        }
        Ok(Some(Frame::new(img, Delay::from_millis(100))))
    }
}

#[cfg(test)]
pub(crate) mod tests {
    use super::*;
    use crate::media::decode::open;
    use crate::media::decode::testutil::write_temp;

    /// A 16×12 JPEG with a red left half and a blue right half.
    pub(crate) fn sample_jpeg() -> Vec<u8> {
        let img = image::RgbImage::from_fn(16, 12, |x, _| {
            if x < 8 {
                image::Rgb([250, 0, 0])
            } else {
                image::Rgb([0, 0, 250])
            }
        });
        let mut out = Vec::new();
        image::codecs::jpeg::JpegEncoder::new_with_quality(&mut out, 95)
            .encode_image(&img)
            .expect("jpeg");
        out
    }

    #[test]
    fn jpeg_decodes_as_opaque_still() {
        let (_d, p) = write_temp("photo.jpg", &sample_jpeg());
        let a = open(&p, &Limits::default()).expect("jpeg");
        assert_eq!((a.width, a.height, a.frames.len()), (16, 12, 1));
        assert_eq!(a.loops, LoopCount::Infinite);
        assert_eq!(a.frames[0].delay.millis(), 100);
        let img = &a.frames[0].image;
        assert!(img.pixels().all(|p| p.0[3] == 255));
        let l = img.get_pixel(2, 6).0;
        let r = img.get_pixel(13, 6).0;
        assert!(l[0] > 200 && l[2] < 50, "{l:?}");
        assert!(r[2] > 200 && r[0] < 50, "{r:?}");
    }

    #[test]
    fn end_marker_check_skips_segments_and_stuffed_bytes() {
        // SOI, APP1 holding a fake EOI, SOS with a stuffed FF 00 and a restart marker, EOI.
        let mut j = vec![0xFF, 0xD8, 0xFF, 0xE1, 0x00, 0x06, 0xFF, 0xD9, 0xAA, 0xBB];
        j.extend_from_slice(&[
            0xFF, 0xDA, 0x00, 0x02, 0x12, 0xFF, 0x00, 0x34, 0xFF, 0xD3, 0x56,
        ]);
        assert!(
            !jpeg_complete(&j),
            "the APP1 payload's FF D9 must not count"
        );
        j.extend_from_slice(&[0xFF, 0xD9]);
        assert!(jpeg_complete(&j));
        assert!(!jpeg_complete(&j[..j.len() - 1]));
    }

    #[test]
    fn jpeg_limits_and_truncation() {
        let bytes = sample_jpeg();
        let (_d, p) = write_temp("photo.jpg", &bytes);
        let small = Limits {
            max_side: 8,
            ..Limits::default()
        };
        assert_eq!(open(&p, &small).expect_err("limits").kind(), "limits");
        assert!(jpeg_complete(&bytes));
        for cut in [
            3,
            20,
            100,
            bytes.len() / 2,
            bytes.len() - 10,
            bytes.len() - 1,
        ] {
            let (_d, p) = write_temp("cut.jpg", &bytes[..cut]);
            let e = open(&p, &Limits::default()).expect_err("truncated");
            assert_eq!(e.kind(), "decode", "cut {cut}: {e}");
            assert!(e.to_string().contains("cut.jpg"));
        }
    }
}

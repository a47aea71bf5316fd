//! GIF import with our own compositing (the `gif` crate only decodes indexed sub-frames):
//! disposal Keep / Background (cleared to transparent, as browsers do) / Previous, sub-frames
//! offset from or overhanging the logical screen (clipped), the transparent index, and the
//! NETSCAPE loop count.
//!
//! The file is read twice: a cheap first pass that skips LZW decoding counts the frames (so a
//! file claiming 100 000 frames fails with [`Error::Limits`] before any pixel is decoded) and
//! finds the canvas size; the second pass decodes one frame per [`FrameSource::next_frame`].
//! A missing trailer byte (`;`) is tolerated, as browsers do, by appending one virtual `;`.

use std::fs::File;
use std::io::{Chain, Read};
use std::num::NonZeroU64;
use std::path::{Path, PathBuf};

use gif::{ColorOutput, DecodeOptions, DisposalMethod, MemoryLimit, Repeat};

use super::compose::{Canvas, Pending, Rect};
use super::{FrameSource, SourceInfo, display_delay};
use crate::error::{Error, Result};
use crate::media::{Delay, Format, Frame, Limits, LoopCount};

type Input = Chain<File, &'static [u8]>;

fn input(path: &Path) -> Result<Input> {
    let file = File::open(path).map_err(|e| Error::io("open", path, e))?;
    Ok(file.chain(&b";"[..]))
}

fn decode_err(path: &Path, e: impl std::fmt::Display) -> Error {
    Error::decode("gif", path, e)
}

/// Decoder options: indexed output (we composite), and the crate's own per-frame memory cap set
/// from our limits (a frame of at most `max_side²` indices).
fn options(limits: &Limits, skip_decoding: bool) -> DecodeOptions {
    let mut o = DecodeOptions::new();
    o.set_color_output(ColorOutput::Indexed);
    let side = limits.max_side as u64;
    let cap = side.saturating_mul(side).min(limits.max_bytes).max(1);
    o.set_memory_limit(MemoryLimit::Bytes(
        NonZeroU64::new(cap).unwrap_or(NonZeroU64::MIN),
    ));
    o.check_frame_consistency(false);
    o.skip_frame_decoding(skip_decoding);
    o
}

/// GIF's NETSCAPE count is the number of *repeats*; without the extension the clip plays once.
fn loops(repeat: Repeat) -> LoopCount {
    match repeat {
        Repeat::Infinite => LoopCount::Infinite,
        Repeat::Finite(n) => LoopCount::Plays(n as u32 + 1),
    }
}

fn frame_side_limit(side: u32, limits: &Limits, path: &Path) -> Result<()> {
    if side > limits.max_side {
        return Err(Error::Limits {
            what: "frame side",
            value: side as u64,
            limit: limits.max_side as u64,
            flag: "--max-side",
            path: path.to_path_buf(),
        });
    }
    Ok(())
}

pub(super) struct GifSource {
    info: SourceInfo,
    path: PathBuf,
    limits: Limits,
    decoder: gif::Decoder<Input>,
    canvas: Canvas,
    pending: Pending,
    indices: Vec<u8>,
    done: u64,
    total: u64,
}

impl GifSource {
    pub fn open(path: &Path, limits: &Limits) -> Result<GifSource> {
        // Pass 1: header, frame count, first frame rectangle; no LZW decoding.
        let mut scan = options(limits, true)
            .read_info(input(path)?)
            .map_err(|e| decode_err(path, e))?;
        let (sw, sh) = (scan.width() as u32, scan.height() as u32);
        if sw > 0 && sh > 0 {
            limits.check_canvas(sw, sh, path)?;
        }
        let repeat = scan.repeat();
        let mut total = 0u64;
        let mut first_extent = None;
        while let Some(f) = scan.read_next_frame().map_err(|e| decode_err(path, e))? {
            if first_extent.is_none() {
                first_extent = Some((
                    f.left as u32 + f.width as u32,
                    f.top as u32 + f.height as u32,
                ));
            }
            total += 1;
            limits.check_frames(total, path)?;
        }
        let Some((fw, fh)) = first_extent else {
            return Err(decode_err(path, "the file holds no frames"));
        };
        // Some encoders write a 0×0 logical screen; browsers then use the first frame's extent.
        let (width, height) = if sw == 0 || sh == 0 {
            (sw.max(fw), sh.max(fh))
        } else {
            (sw, sh)
        };
        limits.check_canvas(width, height, path)?;
        limits.check_bytes(width, height, 1, path)?;

        // Pass 2: the decoder that streams frames.
        let decoder = options(limits, false)
            .read_info(input(path)?)
            .map_err(|e| decode_err(path, e))?;
        Ok(GifSource {
            info: SourceInfo {
                format: Format::Gif,
                animated: total > 1,
                width,
                height,
                frame_count: Some(total),
                loops: loops(repeat),
            },
            path: path.to_path_buf(),
            limits: *limits,
            decoder,
            canvas: Canvas::new(width, height),
            pending: Pending::None,
            indices: Vec::new(),
            done: 0,
            total,
        })
    }
}

impl FrameSource for GifSource {
    fn info(&self) -> &SourceInfo {
        &self.info
    }

    fn next_frame(&mut self) -> Result<Option<Frame>> {
        if self.done >= self.total {
            return Ok(None);
        }
        std::mem::replace(&mut self.pending, Pending::None).apply(&mut self.canvas);
        let path = &self.path;
        let f = self
            .decoder
            .next_frame_info()
            .map_err(|e| decode_err(path, e))?
            .ok_or_else(|| decode_err(path, "the file ended before its last frame"))?;
        let (left, top, fw, fh) = (f.left as u32, f.top as u32, f.width as u32, f.height as u32);
        let transparent = f.transparent;
        let dispose = f.dispose;
        let delay = display_delay(Delay::from_ratio(f.delay as u32, 100));
        frame_side_limit(fw.max(fh), &self.limits, path)?;
        self.indices.clear();
        self.indices.resize(fw as usize * fh as usize, 0);
        if !self.indices.is_empty() {
            self.decoder
                .read_into_buffer(&mut self.indices)
                .map_err(|e| decode_err(path, e))?;
        }
        let palette = self
            .decoder
            .palette()
            .map_err(|e| decode_err(path, e))?
            .to_vec();

        // The visible part of the frame: sub-frames may overhang the screen; browsers clip them.
        let (cw, ch) = (self.canvas.width, self.canvas.height);
        let vis_w = fw.min(cw.saturating_sub(left));
        let vis_h = fh.min(ch.saturating_sub(top));
        let visible = Rect::inside(left, top, vis_w, vis_h, cw, ch).filter(|r| r.w > 0 && r.h > 0);

        if let Some(r) = visible {
            if dispose == DisposalMethod::Previous {
                self.pending = Pending::Restore(r, self.canvas.save(r));
            }
            for row in 0..r.h {
                let src = &self.indices[(row * fw) as usize..][..r.w as usize];
                let start = ((r.y + row) as usize * cw as usize + r.x as usize) * 4;
                let dst = &mut self.canvas.data[start..start + r.w as usize * 4];
                for (px, &idx) in dst.chunks_exact_mut(4).zip(src) {
                    if Some(idx) == transparent {
                        continue;
                    }
                    // Indices past the palette's end draw nothing, like the transparent index.
                    if let Some(rgb) = palette.get(idx as usize * 3..idx as usize * 3 + 3) {
                        px.copy_from_slice(&[rgb[0], rgb[1], rgb[2], 255]);
                    }
                }
            }
            if dispose == DisposalMethod::Background {
                self.pending = Pending::Clear(r);
            }
        }
        self.done += 1;
        Ok(Some(Frame::new(self.canvas.to_image(), delay)))
    }
}

#[cfg(test)]
pub(crate) mod tests {
    use std::borrow::Cow;

    use super::*;
    use crate::media::decode::testutil::write_temp;
    use crate::media::decode::{open, open_source};

    const PAL: [u8; 12] = [0, 0, 0, 255, 0, 0, 0, 255, 0, 0, 0, 255]; // black red green blue

    #[allow(
        clippy::too_many_arguments,
        reason = "one argument per GIF frame field"
    )]
    fn frame(
        left: u16,
        top: u16,
        w: u16,
        h: u16,
        idx: &[u8],
        dispose: DisposalMethod,
        transparent: Option<u8>,
        delay: u16,
    ) -> gif::Frame<'static> {
        gif::Frame {
            left,
            top,
            width: w,
            height: h,
            buffer: Cow::Owned(idx.to_vec()),
            dispose,
            transparent,
            delay,
            ..gif::Frame::default()
        }
    }

    fn encode(w: u16, h: u16, repeat: Option<Repeat>, frames: &[gif::Frame<'static>]) -> Vec<u8> {
        let mut out = Vec::new();
        {
            let mut enc = gif::Encoder::new(&mut out, w, h, &PAL).expect("encoder");
            if let Some(r) = repeat {
                enc.set_repeat(r).expect("repeat");
            }
            for f in frames {
                enc.write_frame(f).expect("frame");
            }
        }
        out
    }

    /// A 4×4, 4-frame GIF exercising Background, Previous, an offset sub-frame and transparency.
    pub(crate) fn sample_gif() -> Vec<u8> {
        encode(
            4,
            4,
            Some(Repeat::Finite(2)),
            &[
                // 1: full red.
                frame(0, 0, 4, 4, &[1; 16], DisposalMethod::Keep, None, 5),
                // 2: green 2×2 at (1,1), disposed to background after display.
                frame(1, 1, 2, 2, &[2; 4], DisposalMethod::Background, None, 0),
                // 3: blue 1×2 at (3,0), index 0 transparent in its second pixel; disposed to
                //    previous after display.
                frame(3, 0, 1, 2, &[3, 0], DisposalMethod::Previous, Some(0), 7),
                // 4: one black pixel at (0,3).
                frame(0, 3, 1, 1, &[0], DisposalMethod::Keep, None, 10),
            ],
        )
    }

    const R: [u8; 4] = [255, 0, 0, 255];
    const G: [u8; 4] = [0, 255, 0, 255];
    const B: [u8; 4] = [0, 0, 255, 255];
    const K: [u8; 4] = [0, 0, 0, 255];
    const T: [u8; 4] = [0, 0, 0, 0];

    fn px(img: &image::RgbaImage, x: u32, y: u32) -> [u8; 4] {
        img.get_pixel(x, y).0
    }

    #[test]
    fn composites_disposal_offsets_and_transparency() {
        let (_d, p) = write_temp("s.gif", &sample_gif());
        let a = open(&p, &Limits::default()).expect("decode");
        assert_eq!((a.width, a.height, a.frames.len()), (4, 4, 4));
        // NETSCAPE repeat 2 = 3 plays.
        assert_eq!(a.loops, LoopCount::Plays(3));
        let f: Vec<_> = a.frames.iter().map(|f| &f.image).collect();
        assert!(f[0].pixels().all(|p| p.0 == R));
        // Frame 2: green square over red.
        assert_eq!(px(f[1], 1, 1), G);
        assert_eq!(px(f[1], 2, 2), G);
        assert_eq!(px(f[1], 0, 0), R);
        // Frame 3: the green square was disposed to background = transparent.
        assert_eq!(px(f[2], 1, 1), T);
        assert_eq!(px(f[2], 2, 2), T);
        assert_eq!(px(f[2], 3, 0), B);
        // Its transparent pixel lets the red below show through.
        assert_eq!(px(f[2], 3, 1), R);
        // Frame 4: the blue pixel restored to red (Previous); the green hole stays transparent.
        assert_eq!(px(f[3], 3, 0), R);
        assert_eq!(px(f[3], 1, 1), T);
        assert_eq!(px(f[3], 0, 3), K);
        // Delays: 5 cs exact, 0 cs shown as 100 ms, 7 cs, 10 cs.
        let ms: Vec<u32> = a.frames.iter().map(|f| f.delay.millis()).collect();
        assert_eq!(ms, vec![50, 100, 70, 100]);
        assert_eq!(a.frames[0].delay, Delay::from_ratio(1, 20));
    }

    #[test]
    fn loop_count_conventions() {
        let one = [frame(0, 0, 1, 1, &[1], DisposalMethod::Keep, None, 10)];
        for (repeat, want) in [
            (None, LoopCount::Plays(1)),
            (Some(Repeat::Infinite), LoopCount::Infinite),
            (Some(Repeat::Finite(1)), LoopCount::Plays(2)),
        ] {
            let (_d, p) = write_temp("l.gif", &encode(1, 1, repeat, &one));
            let info = open_source(&p, &Limits::default())
                .expect("open")
                .info()
                .clone();
            assert_eq!(info.loops, want, "{repeat:?}");
            assert!(!info.animated);
            assert_eq!(info.frame_count, Some(1));
        }
    }

    #[test]
    fn overhanging_subframe_is_clipped() {
        // A 3×3 frame at (2,2) on a 4×4 screen: only its top-left 2×2 is visible.
        let idx = [1, 2, 3, 1, 2, 3, 1, 2, 3];
        let bytes = encode(
            4,
            4,
            None,
            &[frame(2, 2, 3, 3, &idx, DisposalMethod::Keep, None, 10)],
        );
        let (_d, p) = write_temp("o.gif", &bytes);
        let a = open(&p, &Limits::default()).expect("decode");
        let img = &a.frames[0].image;
        assert_eq!(px(img, 2, 2), R);
        assert_eq!(px(img, 3, 3), G);
        assert_eq!(px(img, 0, 0), T);
    }

    #[test]
    fn missing_trailer_is_tolerated_but_cut_frame_data_is_an_error() {
        let bytes = sample_gif();
        assert_eq!(bytes.last(), Some(&b';'));
        let (_d, p) = write_temp("nt.gif", &bytes[..bytes.len() - 1]);
        assert_eq!(open(&p, &Limits::default()).expect("no trailer").len(), 4);

        for cut in [10, 20, 40, bytes.len() - 6] {
            let (_d, p) = write_temp("cut.gif", &bytes[..cut]);
            let e = open(&p, &Limits::default()).expect_err("truncated");
            assert_eq!(e.kind(), "decode", "cut at {cut}: {e}");
            assert!(e.to_string().contains("cut.gif"));
        }
    }

    /// A hand-written header: GIF89a, logical screen `w × h`, global palette of 2 colours.
    fn header(w: u16, h: u16) -> Vec<u8> {
        let mut b = b"GIF89a".to_vec();
        b.extend_from_slice(&w.to_le_bytes());
        b.extend_from_slice(&h.to_le_bytes());
        b.extend_from_slice(&[0x80, 0, 0]); // global table, 2 entries
        b.extend_from_slice(&[0, 0, 0, 255, 255, 255]);
        b
    }

    /// One 1×1 image block: descriptor, LZW min code size 2, data for a single index-0 pixel.
    const TINY: [u8; 15] = [
        0x2C, 0, 0, 0, 0, 1, 0, 1, 0, 0, // descriptor at (0,0), 1×1, no local table
        2, 2, 0x44, 0x01, 0, // LZW: clear, 0, end
    ];

    #[test]
    fn hand_built_tiny_gif_decodes() {
        let mut b = header(1, 1);
        b.extend_from_slice(&TINY);
        b.push(b';');
        let (_d, p) = write_temp("t.gif", &b);
        let a = open(&p, &Limits::default()).expect("decode");
        assert_eq!(a.frames[0].image.get_pixel(0, 0).0, K);
    }

    #[test]
    fn huge_logical_screen_fails_with_limits_before_allocating() {
        let mut b = header(65535, 65535);
        b.extend_from_slice(&TINY);
        b.push(b';');
        let (_d, p) = write_temp("huge.gif", &b);
        let e = open(&p, &Limits::default()).expect_err("too big");
        assert_eq!(e.kind(), "limits", "{e}");
        assert!(e.to_string().contains("huge.gif"));
    }

    #[test]
    fn huge_subframe_fails_with_limits() {
        // Small screen, but a frame descriptor claiming 60000×60000.
        let mut b = header(4, 4);
        let mut d = TINY;
        d[5..7].copy_from_slice(&60000u16.to_le_bytes());
        d[7..9].copy_from_slice(&60000u16.to_le_bytes());
        b.extend_from_slice(&d);
        b.push(b';');
        let (_d, p) = write_temp("bigframe.gif", &b);
        let e = open(&p, &Limits::default()).expect_err("too big");
        assert!(matches!(e.kind(), "limits" | "decode"), "{e}");
    }

    #[test]
    fn hundred_thousand_frames_fail_with_limits_fast() {
        let mut b = header(1, 1);
        b.reserve(TINY.len() * 100_000 + 1);
        for _ in 0..100_000 {
            b.extend_from_slice(&TINY);
        }
        b.push(b';');
        let (_d, p) = write_temp("many.gif", &b);
        let t = std::time::Instant::now();
        let e = open(&p, &Limits::default()).expect_err("too many frames");
        assert_eq!(e.kind(), "limits", "{e}");
        assert!(e.to_string().contains("frame count"), "{e}");
        assert!(t.elapsed().as_secs_f64() < 5.0, "took {:?}", t.elapsed());
    }
}

//! The canvas the animated importers (APNG, animated WebP; GIF draws its own indexed pixels)
//! composite sub-frames onto: clear, save/restore and blend a rectangle, in straight alpha.

use image::RgbaImage;

/// A rectangle on a canvas (importers check it lies inside before use; exporters use it for
/// changed sub-frames).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) struct Rect {
    pub x: u32,
    pub y: u32,
    pub w: u32,
    pub h: u32,
}

impl Rect {
    /// The whole `w × h` canvas.
    pub fn full(w: u32, h: u32) -> Rect {
        Rect { x: 0, y: 0, w, h }
    }

    /// The rectangle if it fits inside a `width × height` canvas (no overflow possible).
    pub fn inside(x: u32, y: u32, w: u32, h: u32, width: u32, height: u32) -> Option<Rect> {
        let fits = x.checked_add(w).is_some_and(|r| r <= width)
            && y.checked_add(h).is_some_and(|b| b <= height);
        fits.then_some(Rect { x, y, w, h })
    }
}

/// How a sub-frame is put onto the canvas.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Blend {
    /// Replace the pixels, alpha included.
    Source,
    /// Straight-alpha "over" compositing.
    Over,
}

/// A straight-alpha RGBA canvas, transparent at the start.
pub(crate) struct Canvas {
    pub width: u32,
    pub height: u32,
    pub data: Vec<u8>,
}

impl Canvas {
    /// A transparent canvas; the caller has checked the size against the limits.
    pub fn new(width: u32, height: u32) -> Canvas {
        Canvas {
            width,
            height,
            data: vec![0; width as usize * height as usize * 4],
        }
    }

    fn row_range(&self, r: Rect, row: u32) -> std::ops::Range<usize> {
        let start = ((r.y + row) as usize * self.width as usize + r.x as usize) * 4;
        start..start + r.w as usize * 4
    }

    /// Clears `r` to transparent black (the "background" of APNG, WebP and browser GIFs).
    pub fn clear(&mut self, r: Rect) {
        for row in 0..r.h {
            let range = self.row_range(r, row);
            self.data[range].fill(0);
        }
    }

    /// A copy of the pixels in `r`, for "dispose to previous".
    pub fn save(&self, r: Rect) -> Vec<u8> {
        let mut out = Vec::with_capacity(r.w as usize * r.h as usize * 4);
        for row in 0..r.h {
            out.extend_from_slice(&self.data[self.row_range(r, row)]);
        }
        out
    }

    /// Puts back pixels taken by [`Canvas::save`] with the same rectangle.
    pub fn restore(&mut self, r: Rect, saved: &[u8]) {
        let stride = r.w as usize * 4;
        for (row, src) in (0..r.h).zip(saved.chunks_exact(stride)) {
            let range = self.row_range(r, row);
            self.data[range].copy_from_slice(src);
        }
    }

    /// Draws a `r.w × r.h` RGBA sub-frame at `r`.
    pub fn draw(&mut self, r: Rect, pixels: &[u8], blend: Blend) {
        let stride = r.w as usize * 4;
        for (row, src) in (0..r.h).zip(pixels.chunks_exact(stride)) {
            let range = self.row_range(r, row);
            let dst = &mut self.data[range];
            match blend {
                Blend::Source => dst.copy_from_slice(src),
                Blend::Over => {
                    for (d, s) in dst.chunks_exact_mut(4).zip(src.chunks_exact(4)) {
                        let out = over([s[0], s[1], s[2], s[3]], [d[0], d[1], d[2], d[3]]);
                        d.copy_from_slice(&out);
                    }
                }
            }
        }
    }

    /// The canvas as an image (a copy: the canvas goes on to the next frame).
    pub fn to_image(&self) -> RgbaImage {
        // The buffer always has exactly width × height × 4 bytes.
        RgbaImage::from_raw(self.width, self.height, self.data.clone())
            .unwrap_or_else(|| RgbaImage::new(self.width, self.height))
    }
}

/// Straight-alpha `src over dst`, rounded: the formula APNG and WebP specify.
pub(crate) fn over(s: [u8; 4], d: [u8; 4]) -> [u8; 4] {
    let sa = s[3] as u32;
    if sa == 255 {
        return s;
    }
    if sa == 0 {
        return d;
    }
    let da = d[3] as u32;
    // Alpha scaled by 255²: sa·255 + da·(255 − sa).
    let src_w = sa * 255;
    let dst_w = da * (255 - sa);
    let a2 = src_w + dst_w;
    if a2 == 0 {
        return [0; 4];
    }
    let mix = |sc: u8, dc: u8| ((sc as u32 * src_w + dc as u32 * dst_w + a2 / 2) / a2) as u8;
    [
        mix(s[0], d[0]),
        mix(s[1], d[1]),
        mix(s[2], d[2]),
        ((a2 + 127) / 255) as u8,
    ]
}

/// Disposal left over from the previous frame, applied before the next one is drawn (GIF and
/// APNG share the same three cases).
pub(crate) enum Pending {
    None,
    /// Clear the rectangle to transparent.
    Clear(Rect),
    /// Put back the pixels saved before the frame was drawn.
    Restore(Rect, Vec<u8>),
}

impl Pending {
    pub fn apply(self, canvas: &mut Canvas) {
        match self {
            Pending::None => {}
            Pending::Clear(r) => canvas.clear(r),
            Pending::Restore(r, saved) => canvas.restore(r, &saved),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn over_matches_the_float_formula() {
        for &(s, d) in &[
            ([200u8, 10, 30, 128u8], [0u8, 255, 0, 255u8]),
            ([200, 10, 30, 64], [10, 20, 250, 100]),
            ([1, 2, 3, 0], [9, 8, 7, 6]),
            ([1, 2, 3, 255], [9, 8, 7, 6]),
            ([50, 60, 70, 10], [0, 0, 0, 0]),
        ] {
            let got = over(s, d);
            let sa = s[3] as f64 / 255.0;
            let da = d[3] as f64 / 255.0;
            let a = sa + da * (1.0 - sa);
            for c in 0..3 {
                let want = if a == 0.0 {
                    0.0
                } else {
                    (s[c] as f64 * sa + d[c] as f64 * da * (1.0 - sa)) / a
                };
                assert!(
                    (got[c] as f64 - want).abs() <= 0.5 + 1e-9,
                    "{s:?} over {d:?}"
                );
            }
            assert!((got[3] as f64 - a * 255.0).abs() <= 0.5 + 1e-9);
        }
    }

    #[test]
    fn rect_inside_rejects_overflow_and_outside() {
        assert!(Rect::inside(0, 0, 4, 4, 4, 4).is_some());
        assert!(Rect::inside(1, 0, 4, 4, 4, 4).is_none());
        assert!(Rect::inside(u32::MAX, 0, 2, 1, 4, 4).is_none());
    }

    #[test]
    fn save_restore_and_clear_touch_only_the_rect() {
        let mut c = Canvas::new(4, 3);
        c.data.fill(7);
        let r = Rect::inside(1, 1, 2, 2, 4, 3).expect("rect");
        let saved = c.save(r);
        c.clear(r);
        assert_eq!(c.data.iter().filter(|&&v| v == 0).count(), 16);
        c.restore(r, &saved);
        assert!(c.data.iter().all(|&v| v == 7));
    }
}

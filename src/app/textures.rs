//! GPU textures of frames, made once per (clip, frame, view) and reused until evicted, so a
//! paused preview uploads nothing and playback uploads each frame once.

use std::collections::HashMap;

use eframe::egui::{self, ColorImage, TextureHandle, TextureId, TextureOptions};
use image::RgbaImage;

/// What a texture shows of a frame.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum View {
    /// Straight RGBA (blended over whatever is drawn beneath).
    Rgba,
    /// RGB with alpha forced opaque.
    Rgb,
    /// Alpha as grey.
    Alpha,
    /// |α_t − α_{t−1}| as a colour overlay.
    Heat,
    /// A small RGBA copy for thumbnails.
    Thumb,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub struct Key {
    pub clip: u64,
    pub frame: usize,
    pub view: View,
}

/// Longest side of thumbnail textures.
pub const THUMB_SIDE: u32 = 96;

/// A bounded cache of textures, least recently used evicted first.
pub struct TextureCache {
    map: HashMap<Key, (TextureHandle, u64)>,
    tick: u64,
    capacity: usize,
    checker: Option<TextureHandle>,
    /// Textures created so far (tests check that a still frame is not re-uploaded).
    pub uploads: u64,
}

impl Default for TextureCache {
    fn default() -> Self {
        Self::new(600)
    }
}

impl TextureCache {
    pub fn new(capacity: usize) -> Self {
        TextureCache {
            map: HashMap::new(),
            tick: 0,
            capacity: capacity.max(8),
            checker: None,
            uploads: 0,
        }
    }

    /// The texture for `key`, made by `make` when missing.
    pub fn get(
        &mut self,
        ctx: &egui::Context,
        key: Key,
        make: impl FnOnce() -> ColorImage,
    ) -> TextureId {
        self.tick += 1;
        if let Some((h, used)) = self.map.get_mut(&key) {
            *used = self.tick;
            return h.id();
        }
        if self.map.len() >= self.capacity {
            self.evict();
        }
        let options = if key.view == View::Thumb {
            TextureOptions::LINEAR
        } else {
            // Pixels stay crisp when zoomed in, as a designer inspecting edges expects.
            TextureOptions::NEAREST
        };
        let handle = ctx.load_texture(
            format!("{}-{}-{:?}", key.clip, key.frame, key.view),
            make(),
            options,
        );
        self.uploads += 1;
        let id = handle.id();
        self.map.insert(key, (handle, self.tick));
        id
    }

    fn evict(&mut self) {
        let mut by_age: Vec<(u64, Key)> = self.map.iter().map(|(k, (_, t))| (*t, *k)).collect();
        by_age.sort_unstable_by_key(|(t, _)| *t);
        for (_, k) in by_age.into_iter().take(self.capacity / 4) {
            self.map.remove(&k);
        }
    }

    /// A 2×2 checkerboard drawn with repeat wrapping (see `preview::paint_checker`).
    pub fn checker(&mut self, ctx: &egui::Context) -> TextureId {
        if let Some(h) = &self.checker {
            return h.id();
        }
        let (a, b) = (
            egui::Color32::from_gray(0xcc),
            egui::Color32::from_gray(0x99),
        );
        let img = ColorImage::new([2, 2], vec![a, b, b, a]);
        let options = TextureOptions {
            wrap_mode: egui::TextureWrapMode::Repeat,
            ..TextureOptions::NEAREST
        };
        let h = ctx.load_texture("checker", img, options);
        let id = h.id();
        self.checker = Some(h);
        id
    }

    /// Whether `key` has a texture (UI tests check what was drawn).
    pub fn contains(&self, key: &Key) -> bool {
        self.map.contains_key(key)
    }

    pub fn len(&self) -> usize {
        self.map.len()
    }

    pub fn is_empty(&self) -> bool {
        self.map.is_empty()
    }
}

/// Straight RGBA as an egui image.
pub fn rgba_image(img: &RgbaImage) -> ColorImage {
    ColorImage::from_rgba_unmultiplied([img.width() as usize, img.height() as usize], img.as_raw())
}

/// RGB with opaque alpha.
pub fn rgb_image(img: &RgbaImage) -> ColorImage {
    let pixels = img
        .pixels()
        .map(|p| egui::Color32::from_rgb(p.0[0], p.0[1], p.0[2]))
        .collect();
    ColorImage::new([img.width() as usize, img.height() as usize], pixels)
}

/// Alpha as grey levels.
pub fn alpha_image(img: &RgbaImage) -> ColorImage {
    let pixels = img
        .pixels()
        .map(|p| egui::Color32::from_gray(p.0[3]))
        .collect();
    ColorImage::new([img.width() as usize, img.height() as usize], pixels)
}

/// A thumbnail no larger than [`THUMB_SIDE`].
pub fn thumb_image(img: &RgbaImage) -> ColorImage {
    let (w, h) = img.dimensions();
    let s = (THUMB_SIDE as f32 / w.max(h) as f32).min(1.0);
    let (tw, th) = (
        ((w as f32 * s).round() as u32).max(1),
        ((h as f32 * s).round() as u32).max(1),
    );
    let small = crate::media::animation::resize_rgba(img, tw, th);
    rgba_image(&small)
}

/// The heat colour of an alpha change `d` in [0, 1]: transparent for no change, then red to
/// yellow. Small changes are boosted (square root), because flicker of a few levels matters.
pub fn heat_color(d: f32) -> egui::Color32 {
    if d <= 1.0 / 512.0 {
        return egui::Color32::TRANSPARENT;
    }
    let v = d.clamp(0.0, 1.0).sqrt();
    let a = (80.0 + 175.0 * v) as u8;
    let g = (255.0 * v) as u8;
    egui::Color32::from_rgba_unmultiplied(255, g, 0, a)
}

/// The heat overlay of one frame from its `temporal_diff` plane.
pub fn heat_image(w: usize, h: usize, diff: &[f32]) -> ColorImage {
    let pixels = diff.iter().map(|&d| heat_color(d)).collect();
    ColorImage::new([w, h], pixels)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn images_have_the_frame_size_and_the_right_channels() {
        let img = RgbaImage::from_fn(5, 3, |x, _| image::Rgba([200, 10, 10, (x * 50) as u8]));
        let a = alpha_image(&img);
        assert_eq!(a.size, [5, 3]);
        assert_eq!(a.pixels[4], egui::Color32::from_gray(200));
        let rgb = rgb_image(&img);
        assert_eq!(rgb.pixels[0].a(), 255);
        assert_eq!(rgb.pixels[0].r(), 200);
        let t = thumb_image(&RgbaImage::new(300, 150));
        assert_eq!(t.size, [96, 48]);
        assert_eq!(heat_color(0.0), egui::Color32::TRANSPARENT);
        assert!(heat_color(1.0).a() > heat_color(0.05).a());
    }

    #[test]
    fn textures_are_cached_and_evicted_oldest_first() {
        let ctx = egui::Context::default();
        let mut cache = TextureCache::new(8);
        let img = RgbaImage::new(4, 4);
        let key = |frame| Key {
            clip: 1,
            frame,
            view: View::Rgba,
        };
        let a = cache.get(&ctx, key(0), || rgba_image(&img));
        let b = cache.get(&ctx, key(0), || panic!("cached"));
        assert_eq!(a, b);
        assert_eq!(cache.uploads, 1);
        for f in 1..20 {
            cache.get(&ctx, key(f), || rgba_image(&img));
        }
        assert!(cache.len() <= 8);
        assert_eq!(cache.uploads, 20);
    }
}

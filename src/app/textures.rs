//! GPU textures of frames, made once per (pixels, view) and reused until evicted, so a paused
//! preview uploads nothing and playback uploads each frame once.
//!
//! The pixel work (colour conversion, the heat map, thumbnails) runs on a small background
//! thread, "ildiff-prep", never on the UI thread: a frame of a 512² sticker is a few
//! milliseconds of it, which on a busy 2-core machine would eat the 16 ms frame. The UI thread
//! only uploads finished images, within a byte budget per frame, and until a texture is ready it
//! shows the last texture of the same place (a held frame, never a blank or a stall).

use std::collections::{HashMap, HashSet, VecDeque};
use std::sync::Arc;
use std::thread::JoinHandle;

use crossbeam_channel::{Receiver, Sender, unbounded};
use eframe::egui::{self, ColorImage, TextureHandle, TextureId, TextureOptions};
use image::RgbaImage;

use crate::app::state::{Pixels, Shown};
use crate::eval::{Plane, temporal_diff};
use crate::worker::Waker;

/// What a texture shows of a frame.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum View {
    /// Straight RGBA (blended over whatever is drawn beneath: the checkerboard or the chat
    /// colour is drawn by the GPU, never composited into pixels).
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

/// Which texture: the pixels it is made from (frame ids, see [`crate::app::state::Clip`]) and
/// the view. Equal pixels give equal keys, whatever clip they belong to.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub struct Key {
    pub pixels: u64,
    /// The previous frame's pixels ([`View::Heat`] only; 0 otherwise and for frame 0).
    pub prev: u64,
    pub view: View,
}

impl Key {
    /// The key of frame `frame` of `shown` in `view`; `None` past the end.
    pub fn of(shown: &Shown, frame: usize, view: View) -> Option<Key> {
        let pixels = shown.frame_id(frame)?;
        let prev = match view {
            View::Heat => frame
                .checked_sub(1)
                .and_then(|p| shown.frame_id(p))
                .unwrap_or(0),
            _ => 0,
        };
        Some(Key { pixels, prev, view })
    }
}

/// Longest side of thumbnail textures.
pub const THUMB_SIDE: u32 = 96;
/// Bytes of finished images uploaded per frame at most (at least one image always goes): two
/// 512² frames, well under a millisecond of upload.
pub const UPLOAD_BUDGET: usize = 2 << 20;
/// Requests waiting on the prep thread beyond which prefetching pauses.
pub const MAX_IN_FLIGHT: usize = 8;
/// GPU memory the cache keeps at most (textures in use are kept regardless).
pub const MAX_BYTES: usize = 256 << 20;

/// A frame image asked of the prep thread.
struct Request {
    key: Key,
    cur: Pixels,
    prev: Option<Pixels>,
}

/// The prep thread and its channels; dropping it ends and joins the thread.
struct Prep {
    tx: Option<Sender<Request>>,
    rx: Receiver<(Key, ColorImage)>,
    thread: Option<JoinHandle<()>>,
}

impl Prep {
    fn spawn(waker: Waker) -> std::io::Result<Prep> {
        let (tx, requests) = unbounded::<Request>();
        let (done, rx) = unbounded();
        let thread = std::thread::Builder::new()
            .name("ildiff-prep".into())
            .spawn(move || {
                for r in requests.iter() {
                    let Some(img) = make(&r) else { continue };
                    if done.send((r.key, img)).is_err() {
                        return;
                    }
                    waker();
                }
            })?;
        Ok(Prep {
            tx: Some(tx),
            rx,
            thread: Some(thread),
        })
    }
}

impl Drop for Prep {
    fn drop(&mut self) {
        self.tx = None; // closes the queue
        if let Some(t) = self.thread.take() {
            let _ = t.join();
        }
    }
}

/// The image of a request (`None` when the frame is gone).
fn make(r: &Request) -> Option<ColorImage> {
    let cur = r.cur.image()?;
    Some(match r.key.view {
        View::Rgb => rgb_image(cur),
        View::Alpha => alpha_image(cur),
        View::Rgba => rgba_image(cur),
        View::Thumb => thumb_image(cur),
        View::Heat => {
            // `temporal_diff` of `ildiff eval`, for this frame and the one before.
            let (w, h) = (cur.width() as usize, cur.height() as usize);
            let diff = r
                .prev
                .as_ref()
                .and_then(Pixels::image)
                .filter(|p| p.dimensions() == cur.dimensions())
                .and_then(|p| temporal_diff(&[Plane::alpha_of(p), Plane::alpha_of(cur)]).ok())
                .and_then(|mut d| d.pop())
                .unwrap_or_else(|| vec![0.0; w * h]);
            heat_image(w, h, &diff)
        }
    })
}

/// A place on screen where frames are drawn one after another (panel name, index).
pub type Slot = (&'static str, u64);

/// A cached texture.
struct Entry {
    handle: TextureHandle,
    used: u64,
    bytes: usize,
}

/// A bounded cache of textures, least recently used evicted first, filled by the prep thread.
pub struct TextureCache {
    map: HashMap<Key, Entry>,
    bytes: usize,
    tick: u64,
    /// Frames begun (for forgetting places not drawn any more).
    frame: u64,
    capacity: usize,
    checker: Option<TextureHandle>,
    pending: HashSet<Key>,
    ready: VecDeque<(Key, ColorImage)>,
    /// Per place on screen: the last texture drawn there, its stream and the frame it was
    /// last asked for.
    last: HashMap<(Slot, View), (TextureHandle, u64, u64)>,
    /// `None`: images are made on the calling thread (no thread could be started).
    prep: Option<Prep>,
    /// Textures created so far (tests check that a still frame is not re-uploaded).
    pub uploads: u64,
}

impl TextureCache {
    /// A cache of at most `capacity` textures; `waker` runs when an image is ready.
    pub fn new(capacity: usize, waker: Waker) -> Self {
        TextureCache {
            map: HashMap::new(),
            bytes: 0,
            tick: 0,
            frame: 0,
            capacity: capacity.max(8),
            checker: None,
            pending: HashSet::new(),
            ready: VecDeque::new(),
            last: HashMap::new(),
            // Without a thread the studio still works, only slower: no reason to stop it.
            prep: Prep::spawn(waker).ok(),
            uploads: 0,
        }
    }

    /// Call once per frame before drawing: uploads finished images (within
    /// [`UPLOAD_BUDGET`]; the rest next frame) and forgets places not drawn last frame.
    pub fn begin_frame(&mut self, ctx: &egui::Context) {
        self.frame += 1;
        if let Some(p) = &self.prep {
            self.ready.extend(p.rx.try_iter());
        }
        let mut spent = 0;
        while spent < UPLOAD_BUDGET {
            let Some((key, img)) = self.ready.pop_front() else {
                break;
            };
            self.pending.remove(&key);
            spent += img.pixels.len() * 4;
            self.upload(ctx, key, img);
        }
        if !self.ready.is_empty() {
            ctx.request_repaint();
        }
        let frame = self.frame;
        self.last.retain(|_, (_, _, f)| *f + 1 >= frame);
    }

    fn upload(&mut self, ctx: &egui::Context, key: Key, img: ColorImage) {
        if self.map.contains_key(&key) {
            return;
        }
        let bytes = img.pixels.len() * 4;
        while !self.map.is_empty()
            && (self.map.len() >= self.capacity || self.bytes + bytes > MAX_BYTES)
        {
            self.evict();
        }
        let options = if key.view == View::Thumb {
            TextureOptions::LINEAR
        } else {
            // Pixels stay crisp when zoomed in, as a designer inspecting edges expects.
            TextureOptions::NEAREST
        };
        let handle = ctx.load_texture(
            format!("{}-{}-{:?}", key.pixels, key.prev, key.view),
            img,
            options,
        );
        self.uploads += 1;
        self.tick += 1;
        self.bytes += bytes;
        self.map.insert(
            key,
            Entry {
                handle,
                used: self.tick,
                bytes,
            },
        );
    }

    fn evict(&mut self) {
        let mut by_age: Vec<(u64, Key)> = self.map.iter().map(|(k, e)| (e.used, *k)).collect();
        by_age.sort_unstable_by_key(|(t, _)| *t);
        for (_, k) in by_age.into_iter().take((self.map.len() / 4).max(1)) {
            if let Some(e) = self.map.remove(&k) {
                self.bytes -= e.bytes;
            }
        }
    }

    /// Asks for `key` to be made, unless it is cached or on its way.
    fn request(&mut self, ctx: &egui::Context, key: Key, cur: Pixels, prev: Option<Pixels>) {
        if self.map.contains_key(&key) || self.pending.contains(&key) {
            return;
        }
        let r = Request { key, cur, prev };
        match self.prep.as_ref().and_then(|p| p.tx.as_ref()) {
            Some(tx) => {
                if tx.send(r).is_ok() {
                    self.pending.insert(key);
                }
            }
            None => {
                if let Some(img) = make(&r) {
                    self.upload(ctx, key, img);
                }
            }
        }
    }

    /// The texture for `key` if it is ready; otherwise it is asked for and `None` returned.
    pub fn get(
        &mut self,
        ctx: &egui::Context,
        key: Key,
        cur: Pixels,
        prev: Option<Pixels>,
    ) -> Option<TextureId> {
        self.tick += 1;
        if let Some(e) = self.map.get_mut(&key) {
            e.used = self.tick;
            return Some(e.handle.id());
        }
        self.request(ctx, key, cur, prev);
        self.map.get(&key).map(|e| e.handle.id())
    }

    /// What to draw at the place `slot` for `key`: its texture when ready, else the last one
    /// of the same view drawn there for the same `stream` (e.g. the previous frame of the same clip while this
    /// one is being made), else nothing.
    pub fn show(
        &mut self,
        ctx: &egui::Context,
        slot: Slot,
        stream: u64,
        key: Key,
        cur: Pixels,
        prev: Option<Pixels>,
    ) -> Option<TextureId> {
        let frame = self.frame;
        let slot = (slot, key.view);
        if self.get(ctx, key, cur, prev).is_some()
            && let Some(e) = self.map.get(&key)
        {
            self.last.insert(slot, (e.handle.clone(), stream, frame));
            return Some(e.handle.id());
        }
        match self.last.get_mut(&slot) {
            Some((h, s, f)) if *s == stream => {
                *f = frame;
                Some(h.id())
            }
            _ => None,
        }
    }

    /// Asks for `key` ahead of time (the next frames of a playing clip), unless the prep
    /// thread already has enough to do.
    pub fn prefetch(&mut self, ctx: &egui::Context, key: Key, cur: Pixels, prev: Option<Pixels>) {
        if self.pending.len() < MAX_IN_FLIGHT {
            self.request(ctx, key, cur, prev);
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

    /// Images asked for and not uploaded yet.
    pub fn pending(&self) -> usize {
        self.pending.len()
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

/// A shared image (tests, and callers outside a clip).
pub fn pixels_of(img: RgbaImage) -> Pixels {
    Pixels::Image(Arc::new(img))
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::time::{Duration, Instant};

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

    /// Steps frames until `key` is uploaded (the prep thread runs in real time).
    fn wait_for(cache: &mut TextureCache, ctx: &egui::Context, key: Key) {
        let t = Instant::now();
        while !cache.contains(&key) {
            cache.begin_frame(ctx);
            assert!(t.elapsed() < Duration::from_secs(10), "{key:?} never came");
            std::thread::sleep(Duration::from_millis(1));
        }
    }

    #[test]
    fn textures_are_made_off_thread_cached_and_evicted_oldest_first() {
        let ctx = egui::Context::default();
        let mut cache = TextureCache::new(8, Arc::new(|| {}));
        let img = pixels_of(RgbaImage::new(4, 4));
        let key = |pixels| Key {
            pixels,
            prev: 0,
            view: View::Rgba,
        };
        assert_eq!(
            cache.get(&ctx, key(1), img.clone(), None),
            None,
            "not ready"
        );
        assert_eq!(cache.pending(), 1);
        wait_for(&mut cache, &ctx, key(1));
        assert_eq!(cache.pending(), 0);
        let a = cache.get(&ctx, key(1), img.clone(), None).expect("ready");
        let b = cache.get(&ctx, key(1), img.clone(), None).expect("cached");
        assert_eq!(a, b);
        assert_eq!(cache.uploads, 1);
        for p in 2..=20 {
            cache.get(&ctx, key(p), img.clone(), None);
            wait_for(&mut cache, &ctx, key(p));
        }
        assert!(cache.len() <= 8);
        assert_eq!(cache.uploads, 20);
        assert!(!cache.contains(&key(2)), "the oldest went first");
    }

    #[test]
    fn a_place_shows_its_last_texture_of_the_same_stream_until_the_new_one_is_ready() {
        let ctx = egui::Context::default();
        let mut cache = TextureCache::new(64, Arc::new(|| {}));
        let slot = ("test", 0);
        let img = pixels_of(RgbaImage::new(64, 64));
        let key = |pixels| Key {
            pixels,
            prev: 0,
            view: View::Alpha,
        };
        cache.begin_frame(&ctx);
        assert_eq!(cache.show(&ctx, slot, 7, key(1), img.clone(), None), None);
        wait_for(&mut cache, &ctx, key(1));
        let first = cache.show(&ctx, slot, 7, key(1), img.clone(), None);
        assert!(first.is_some());
        cache.begin_frame(&ctx);
        // The next frame is not made yet: the place holds the previous one.
        let held = cache.show(&ctx, slot, 7, key(2), img.clone(), None);
        assert_eq!(held, first);
        // Another clip never shows this clip's frame.
        assert_eq!(cache.show(&ctx, slot, 8, key(3), img.clone(), None), None);
    }

    #[test]
    fn uploads_per_frame_stay_within_the_budget() {
        let ctx = egui::Context::default();
        let mut cache = TextureCache::new(64, Arc::new(|| {}));
        // Each 512² RGBA image is 1 MiB: two fit the budget per frame.
        let img = pixels_of(RgbaImage::new(512, 512));
        for p in 1..=6 {
            let k = Key {
                pixels: p,
                prev: 0,
                view: View::Rgba,
            };
            cache.get(&ctx, k, img.clone(), None);
        }
        let t = Instant::now();
        while cache.ready.len() + cache.uploads as usize != 6 {
            if let Some(p) = &cache.prep {
                cache.ready.extend(p.rx.try_iter());
            }
            assert!(t.elapsed() < Duration::from_secs(10));
            std::thread::sleep(Duration::from_millis(1));
        }
        cache.begin_frame(&ctx);
        assert_eq!(cache.uploads, 2);
        cache.begin_frame(&ctx);
        assert_eq!(cache.uploads, 4);
    }
}

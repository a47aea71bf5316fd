//! The preview canvas: the current frame as input RGB, alpha, RGBA over a checkerboard or a
//! chat background, or before/after side by side; zoom (wheel, pinch), pan (drag), reset
//! (double-click), the RGBA under the cursor, and the flicker heatmap overlay.

use eframe::egui::{self, Color32, Pos2, Rect, Sense, TextureId, pos2, vec2};

use crate::app::settings::{CHAT_DARK, CHAT_LIGHT, PreviewMode};
use crate::app::state::{Pixels, Shown, Studio};
use crate::app::textures::{Key, Slot, TextureCache, View};

pub struct PreviewPanel<'a> {
    pub studio: &'a mut Studio,
    pub textures: &'a mut TextureCache,
}

const FULL_UV: Rect = Rect {
    min: Pos2 { x: 0.0, y: 0.0 },
    max: Pos2 { x: 1.0, y: 1.0 },
};

/// Paints a checkerboard of `cell`-point squares over `rect` with the cache's repeat texture.
pub fn paint_checker(painter: &egui::Painter, tex: TextureId, rect: Rect, cell: f32) {
    let uv = Rect::from_min_max(
        pos2(0.0, 0.0),
        pos2(rect.width() / (2.0 * cell), rect.height() / (2.0 * cell)),
    );
    painter.image(tex, rect, uv, Color32::WHITE);
}

/// How many frames ahead of the playhead playback asks textures for.
const PREFETCH: usize = 2;

/// The texture of frame `frame` of `shown` in `view` at place `slot`, or the last one drawn
/// there for the same clip while it is being made.
fn texture(
    textures: &mut TextureCache,
    ctx: &egui::Context,
    slot: Slot,
    stream: u64,
    shown: &Shown,
    frame: usize,
    view: View,
) -> Option<TextureId> {
    let key = Key::of(shown, frame, view)?;
    let cur = shown.pixels(frame)?;
    let prev = prev_pixels(shown, frame, view);
    textures.show(ctx, slot, stream, key, cur, prev)
}

fn prev_pixels(shown: &Shown, frame: usize, view: View) -> Option<Pixels> {
    if view == View::Heat {
        frame.checked_sub(1).and_then(|p| shown.pixels(p))
    } else {
        None
    }
}

/// Asks for the textures of the frames after `frame`, so playback finds them ready.
fn prefetch(
    textures: &mut TextureCache,
    ctx: &egui::Context,
    shown: &Shown,
    frame: usize,
    view: View,
) {
    let n = shown.len();
    for k in 1..=PREFETCH.min(n.saturating_sub(1)) {
        let f = (frame + k) % n;
        if let (Some(key), Some(cur)) = (Key::of(shown, f, view), shown.pixels(f)) {
            textures.prefetch(ctx, key, cur, prev_pixels(shown, f, view));
        }
    }
}

impl PreviewPanel<'_> {
    pub fn ui(&mut self, ui: &mut egui::Ui) {
        self.toolbar(ui);
        self.canvas(ui);
    }

    fn toolbar(&mut self, ui: &mut egui::Ui) {
        let s = &mut *self.studio;
        let layout = &mut s.settings.layout;
        ui.horizontal_wrapped(|ui| {
            for mode in PreviewMode::ALL {
                ui.selectable_value(&mut layout.preview_mode, mode, mode.label());
            }
            ui.separator();
            ui.checkbox(&mut layout.heatmap, "Flicker heatmap")
                .on_hover_text("|a(t) - a(t-1)| per pixel, the map `ildiff eval` measures");
            if layout.preview_mode == PreviewMode::Chat {
                ui.separator();
                if ui.button("Light chat").clicked() {
                    layout.chat_background = CHAT_LIGHT;
                }
                if ui.button("Dark chat").clicked() {
                    layout.chat_background = CHAT_DARK;
                }
                ui.color_edit_button_srgb(&mut layout.chat_background)
                    .on_hover_text("chat background colour");
            }
            ui.separator();
            if ui.button("Fit").clicked() {
                s.view.zoom = 1.0;
                s.view.pan = [0.0, 0.0];
            }
            if s.doc.export.read_back.is_some() {
                ui.checkbox(&mut s.doc.export.show_read_back, "Show exported file")
                    .on_hover_text("the written file decoded back: compression artefacts included");
            }
        });
    }

    fn canvas(&mut self, ui: &mut egui::Ui) {
        let ctx = ui.ctx().clone();
        let avail = ui.available_size() - vec2(0.0, 20.0);
        let (resp, painter) =
            ui.allocate_painter(avail.max(vec2(32.0, 32.0)), Sense::click_and_drag());
        let rect = resp.rect;
        painter.rect_filled(rect, 0.0, Color32::from_gray(0x22));
        let s = &mut *self.studio;
        let Some(st) = s.doc.stickers.get(s.doc.selected) else {
            painter.text(
                rect.center(),
                egui::Align2::CENTER_CENTER,
                "Drop clips here, or use Open… / the path field above",
                egui::FontId::proportional(18.0),
                Color32::GRAY,
            );
            ui.label(" ");
            return;
        };
        let source = Shown::of(&st.source);
        let plate = st.plate.as_ref().map(Shown::of);
        // Held frames are only ever taken from the same sticker (or the same exported file).
        let (shown, stream) = match (&s.doc.export.read_back, s.doc.export.show_read_back) {
            (Some(rb), true) => (Shown::of(rb), rb.id),
            _ => (st.shown(), st.source.id),
        };
        let frame = s.view.playback.frame;
        let shown_frame = if shown.len() == source.len() {
            frame
        } else {
            (frame * shown.len() / source.len().max(1)).min(shown.len().saturating_sub(1))
        };
        let playing = s.view.playback.playing;
        // Zoom around the cursor, pan by dragging, reset by double-click.
        if resp.hovered() {
            let (scroll, pinch) = ui.input(|i| (i.smooth_scroll_delta.y, i.zoom_delta()));
            let factor = pinch * (scroll * 0.0015).exp();
            if (factor - 1.0).abs() > 1e-4 {
                let old = s.view.zoom;
                s.view.zoom = (s.view.zoom * factor).clamp(0.05, 64.0);
                if let Some(c) = resp.hover_pos() {
                    let p = rect.center() + vec2(s.view.pan[0], s.view.pan[1]);
                    let np = c + (p - c) * (s.view.zoom / old);
                    let d = np - rect.center();
                    s.view.pan = [d.x, d.y];
                }
            }
        }
        if resp.dragged() {
            let d = resp.drag_delta();
            s.view.pan = [s.view.pan[0] + d.x, s.view.pan[1] + d.y];
        }
        if resp.double_clicked() {
            s.view.zoom = 1.0;
            s.view.pan = [0.0, 0.0];
        }
        let mode = s.settings.layout.preview_mode;
        let panes = if mode == PreviewMode::SideBySide {
            2
        } else {
            1
        };
        let pane_w = rect.width() / panes as f32;
        let (w, h) = (source.anim().width as f32, source.anim().height as f32);
        let fit = ((pane_w - 16.0) / w)
            .min((rect.height() - 16.0) / h)
            .max(0.01);
        let scale = fit * s.view.zoom;
        let checker = self.textures.checker(&ctx);
        let mut readout = None;
        for k in 0..panes {
            let pane = Rect::from_min_size(
                pos2(rect.left() + pane_w * k as f32, rect.top()),
                vec2(pane_w, rect.height()),
            );
            let p = painter.with_clip_rect(pane);
            let center = pane.center() + vec2(s.view.pan[0], s.view.pan[1]);
            let img_rect = Rect::from_center_size(center, vec2(w * scale, h * scale));
            let (clip, f, view, bg) = match (mode, k) {
                (PreviewMode::Input, _) | (PreviewMode::SideBySide, 0) => {
                    (&source, frame, View::Rgb, None)
                }
                (PreviewMode::Alpha, _) => (&shown, shown_frame, View::Alpha, None),
                // The plate has the source's frames; without one, the input stands in and
                // the caption below says why.
                (PreviewMode::Plate, _) => match &plate {
                    Some(p) if p.len() == source.len() => (p, frame, View::Rgb, None),
                    _ => (&source, frame, View::Rgb, None),
                },
                (PreviewMode::Chat, _) => {
                    let [r, g, b] = s.settings.layout.chat_background;
                    (
                        &shown,
                        shown_frame,
                        View::Rgba,
                        Some(Color32::from_rgb(r, g, b)),
                    )
                }
                _ => (&shown, shown_frame, View::Rgba, None),
            };
            match bg {
                Some(c) => {
                    p.rect_filled(pane, 0.0, c);
                }
                None if view == View::Rgba => paint_checker(&p, checker, img_rect, 8.0),
                None => {}
            }
            let slot = ("preview", k as u64);
            if let Some(tex) = texture(self.textures, &ctx, slot, stream, clip, f, view) {
                p.image(tex, img_rect, FULL_UV, Color32::WHITE);
            }
            if playing {
                prefetch(self.textures, &ctx, clip, f, view);
            }
            let overlay = s.settings.layout.heatmap && (panes == 1 || k == 1);
            let heat_slot = ("preview-heat", k as u64);
            if overlay
                && let Some(tex) = texture(
                    self.textures,
                    &ctx,
                    heat_slot,
                    stream,
                    &shown,
                    shown_frame,
                    View::Heat,
                )
            {
                p.image(tex, img_rect, FULL_UV, Color32::WHITE);
            }
            if overlay && playing {
                prefetch(self.textures, &ctx, &shown, shown_frame, View::Heat);
            }
            if mode == PreviewMode::Plate {
                let caption = if plate.is_some() {
                    "background the model assumed behind the character"
                } else {
                    "no plate: the model keys against the border colour (re-matte with a \
                     plate-prior model to see the background it assumes)"
                };
                p.text(
                    pane.left_top() + vec2(8.0, 6.0),
                    egui::Align2::LEFT_TOP,
                    caption,
                    egui::FontId::proportional(13.0),
                    Color32::LIGHT_GRAY,
                );
            }
            if panes == 2 {
                p.text(
                    pane.left_top() + vec2(8.0, 6.0),
                    egui::Align2::LEFT_TOP,
                    if k == 0 { "before (input)" } else { "after" },
                    egui::FontId::proportional(13.0),
                    Color32::LIGHT_GRAY,
                );
            }
            if let Some(pos) = resp
                .hover_pos()
                .filter(|p| img_rect.contains(*p) && pane.contains(*p))
            {
                let x = ((pos.x - img_rect.left()) / scale) as u32;
                let y = ((pos.y - img_rect.top()) / scale) as u32;
                if let Some(img) = clip.image(f)
                    && x < img.width()
                    && y < img.height()
                {
                    readout = Some((x, y, img.get_pixel(x, y).0));
                }
            }
        }
        let flicker = st
            .flicker
            .as_ref()
            .filter(|f| f.0 == shown.id)
            .and_then(|f| f.1.get(shown_frame).copied());
        ui.horizontal(|ui| {
            ui.label(format!(
                "{}×{} · frame {}/{} · zoom {:.0}%",
                shown.anim().width,
                shown.anim().height,
                frame + 1,
                source.len(),
                s.view.zoom * fit * 100.0
            ));
            if let Some(fl) = flicker {
                ui.label(format!("· flicker {:.4}", fl));
            }
            if let Some((x, y, [r, g, b, a])) = readout {
                ui.label(
                    egui::RichText::new(format!("· x {x} y {y}  RGBA {r} {g} {b} {a}")).monospace(),
                );
            }
        });
    }
}

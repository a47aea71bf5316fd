//! The pack: its name and author, and its stickers as animated thumbnails that can be
//! selected, renamed, given emoji, reordered and removed.

use eframe::egui;

use crate::app::dialogs::Dialogs;
use crate::app::state::Studio;
use crate::app::textures::{Key, TextureCache, View};
use crate::media::Animation;

pub struct PackPanel<'a> {
    pub studio: &'a mut Studio,
    pub textures: &'a mut TextureCache,
    pub dialogs: &'a mut Dialogs,
}

/// The frame shown at `t` seconds into a looping clip, and seconds until it changes.
pub fn frame_at(anim: &Animation, t: f64) -> (usize, f64) {
    let total = anim.duration_secs();
    if anim.len() < 2 || total <= 0.0 {
        return (0, f64::INFINITY);
    }
    let mut t = t.rem_euclid(total);
    for (i, f) in anim.frames.iter().enumerate() {
        let d = f.delay.secs();
        if t < d {
            return (i, d - t);
        }
        t -= d;
    }
    (anim.len() - 1, 0.05)
}

impl PackPanel<'_> {
    pub fn ui(&mut self, ui: &mut egui::Ui) {
        let s = &mut *self.studio;
        crate::app::panels::heading(ui, "Pack");
        egui::Grid::new("pack-meta").num_columns(2).show(ui, |ui| {
            ui.label("Name");
            ui.add(
                egui::TextEdit::singleline(&mut s.settings.pack_name)
                    .hint_text("pack title")
                    .desired_width(140.0),
            );
            ui.end_row();
            ui.label("Author");
            ui.add(
                egui::TextEdit::singleline(&mut s.settings.pack_author)
                    .hint_text("publisher")
                    .desired_width(140.0),
            );
            ui.end_row();
        });
        if ui
            .add_enabled(!self.dialogs.is_open(), egui::Button::new("Add stickers…"))
            .clicked()
        {
            self.dialogs.open_clips(s.settings.last_open_dir.clone());
        }
        ui.separator();
        if s.doc.stickers.is_empty() {
            ui.label(egui::RichText::new("No stickers yet: open or drop clips.").weak());
            return;
        }
        let now = ui.input(|i| i.time);
        let mut next_change = f64::INFINITY;
        let (mut select, mut remove, mut moved) = (None, None, None);
        let n = s.doc.stickers.len();
        egui::ScrollArea::vertical().show(ui, |ui| {
            for i in 0..n {
                let selected = i == s.doc.selected;
                let st = &mut s.doc.stickers[i];
                let clip = st.shown();
                let (frame, wait) = frame_at(clip.anim(), now);
                next_change = next_change.min(wait);
                let slot = ("pack-thumb", st.source.id);
                let tex = Key::of(&clip, frame, View::Thumb)
                    .zip(clip.pixels(frame))
                    .and_then(|(key, cur)| {
                        self.textures
                            .show(ui.ctx(), slot, st.source.id, key, cur, None)
                    });
                // The next frame of the animation, made before it is due.
                let next = (frame + 1) % clip.len().max(1);
                if let (Some(key), Some(cur)) =
                    (Key::of(&clip, next, View::Thumb), clip.pixels(next))
                {
                    self.textures.prefetch(ui.ctx(), key, cur, None);
                }
                let frame_fill = if selected {
                    ui.visuals().selection.bg_fill.linear_multiply(0.4)
                } else {
                    egui::Color32::TRANSPARENT
                };
                egui::Frame::new()
                    .fill(frame_fill)
                    .inner_margin(4.0)
                    .corner_radius(4.0)
                    .show(ui, |ui| {
                        ui.horizontal(|ui| {
                            let (w, h) = (clip.anim().width as f32, clip.anim().height as f32);
                            let k = 56.0 / w.max(h).max(1.0);
                            let size = egui::vec2(w * k, h * k);
                            let (rect, resp) = ui
                                .allocate_exact_size(egui::vec2(56.0, 56.0), egui::Sense::click());
                            let checker = self.textures.checker(ui.ctx());
                            crate::app::panels::preview::paint_checker(
                                ui.painter(),
                                checker,
                                rect,
                                6.0,
                            );
                            if let Some(tex) = tex {
                                ui.painter().image(
                                    tex,
                                    egui::Rect::from_center_size(rect.center(), size),
                                    egui::Rect::from_min_max(
                                        egui::pos2(0.0, 0.0),
                                        egui::pos2(1.0, 1.0),
                                    ),
                                    egui::Color32::WHITE,
                                );
                            }
                            if resp.clicked() {
                                select = Some(i);
                            }
                            ui.vertical(|ui| {
                                ui.add(
                                    egui::TextEdit::singleline(&mut st.name)
                                        .desired_width(110.0)
                                        .hint_text("name"),
                                );
                                ui.horizontal(|ui| {
                                    ui.add(
                                        egui::TextEdit::singleline(&mut st.emoji)
                                            .desired_width(50.0)
                                            .hint_text("emoji"),
                                    )
                                    .on_hover_text(
                                        "emoji this sticker answers to, space-separated",
                                    );
                                    if ui.small_button("Select").clicked() {
                                        select = Some(i);
                                    }
                                });
                                ui.horizontal(|ui| {
                                    if ui
                                        .add_enabled(i > 0, egui::Button::new("Up").small())
                                        .on_hover_text("move up")
                                        .clicked()
                                    {
                                        moved = Some((i, -1));
                                    }
                                    if ui
                                        .add_enabled(i + 1 < n, egui::Button::new("Down").small())
                                        .on_hover_text("move down")
                                        .clicked()
                                    {
                                        moved = Some((i, 1));
                                    }
                                    if ui.small_button("Remove").clicked() {
                                        remove = Some(i);
                                    }
                                });
                            });
                        });
                    });
            }
        });
        if next_change.is_finite() {
            ui.ctx()
                .request_repaint_after(std::time::Duration::from_secs_f64(next_change.max(0.01)));
        }
        if let Some((i, d)) = moved {
            s.move_sticker(i, d);
        }
        if let Some(i) = remove {
            s.remove(i);
        } else if let Some(i) = select {
            s.select(i);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn frame_at_follows_the_real_delays_and_loops() {
        let anim = crate::worker::jobs::tests::clip(3, 4, 4); // 50 ms frames
        assert_eq!(frame_at(&anim, 0.0).0, 0);
        assert_eq!(frame_at(&anim, 0.06).0, 1);
        assert_eq!(frame_at(&anim, 0.149).0, 2);
        assert_eq!(frame_at(&anim, 0.16).0, 0, "loops");
        let (_, wait) = frame_at(&anim, 0.06);
        assert!((wait - 0.04).abs() < 1e-9);
    }
}

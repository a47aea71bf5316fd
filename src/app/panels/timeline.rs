//! The timeline: transport (play/pause/loop at the clip's own frame delays, step), trim in/out
//! points, a strip of thumbnails to scrub by dragging, and the per-frame flicker curve with
//! the worst frames marked (`eval::flicker_scores`, as `ildiff eval` computes it).

use eframe::egui::{self, Color32, Rect, Sense, Stroke, pos2, vec2};

use crate::app::state::Studio;
use crate::app::textures::{Key, TextureCache, View};

pub struct TimelinePanel<'a> {
    pub studio: &'a mut Studio,
    pub textures: &'a mut TextureCache,
}

/// How many of the worst frames the flicker curve marks.
pub const WORST_MARKED: usize = 3;

/// Indices of the `n` largest scores (frame 0, always 0, never counts), largest first.
pub fn worst_frames(scores: &[f64], n: usize) -> Vec<usize> {
    let mut idx: Vec<usize> = (1..scores.len()).filter(|&i| scores[i] > 0.0).collect();
    idx.sort_by(|&a, &b| scores[b].total_cmp(&scores[a]));
    idx.truncate(n);
    idx
}

impl TimelinePanel<'_> {
    pub fn ui(&mut self, ui: &mut egui::Ui) {
        let s = &mut *self.studio;
        let Some(st) = s.doc.stickers.get(s.doc.selected) else {
            ui.label(egui::RichText::new("timeline: no clip").weak());
            return;
        };
        let clip = st.shown();
        let stream = st.source.id;
        let n = clip.len();
        let (trim_in, trim_out) = (st.trim_in, st.trim_out);
        let flicker = st.flicker.clone();
        ui.horizontal(|ui| {
            let label = if s.view.playback.playing {
                "Pause"
            } else {
                "Play"
            };
            if ui.button(label).on_hover_text("space").clicked() {
                s.view.playback.playing = !s.view.playback.playing;
            }
            if ui.button("<").on_hover_text("previous frame (←)").clicked() {
                s.step_frame(-1);
            }
            if ui.button(">").on_hover_text("next frame (->)").clicked() {
                s.step_frame(1);
            }
            ui.checkbox(&mut s.view.playback.looping, "Loop");
            let starts = clip.anim().frame_starts();
            let t = starts.get(s.view.playback.frame).copied().unwrap_or(0.0);
            ui.label(format!(
                "frame {}/{}  {:.2}s / {:.2}s  {:.1} fps",
                s.view.playback.frame + 1,
                n,
                t,
                clip.anim().duration_secs(),
                clip.anim().fps()
            ));
            ui.separator();
            let frame = s.view.playback.frame;
            if let Some(st) = s.doc.stickers.get_mut(s.doc.selected) {
                if ui.button("Set in").clicked() {
                    st.trim_in = frame.min(st.trim_out);
                }
                if ui.button("Set out").clicked() {
                    st.trim_out = frame.max(st.trim_in);
                }
                ui.label(format!("trim {}–{}", st.trim_in + 1, st.trim_out + 1));
                if ui.button("Clear trim").clicked() {
                    st.trim_in = 0;
                    st.trim_out = n.saturating_sub(1);
                }
            }
        });
        // Thumbnail strip: click or drag anywhere to scrub.
        let width = ui.available_width();
        let (resp, painter) = ui.allocate_painter(vec2(width, 52.0), Sense::click_and_drag());
        let rect = resp.rect;
        s.view.timeline_rect = Some([rect.left(), rect.top(), rect.right(), rect.bottom()]);
        painter.rect_filled(rect, 2.0, Color32::from_gray(0x1a));
        let frame_x = |f: usize| rect.left() + (f as f32 + 0.5) / n.max(1) as f32 * rect.width();
        let thumbs = ((rect.width() / 60.0) as usize).clamp(1, n.max(1));
        let cell = rect.width() / thumbs as f32;
        for k in 0..thumbs {
            let f = k * n / thumbs;
            let tex = Key::of(&clip, f, View::Thumb)
                .zip(clip.pixels(f))
                .and_then(|(key, cur)| {
                    let slot = ("timeline-thumb", k as u64);
                    self.textures.show(ui.ctx(), slot, stream, key, cur, None)
                });
            let (w, h) = (clip.anim().width as f32, clip.anim().height as f32);
            let k_ = (cell - 4.0).min(48.0) / w.max(h);
            let r = Rect::from_center_size(
                pos2(rect.left() + cell * (k as f32 + 0.5), rect.center().y),
                vec2(w * k_, h * k_),
            );
            if let Some(tex) = tex {
                painter.image(
                    tex,
                    r,
                    Rect::from_min_max(pos2(0.0, 0.0), pos2(1.0, 1.0)),
                    Color32::WHITE,
                );
            }
        }
        // Outside the trim: dimmed.
        let dim = Color32::from_black_alpha(150);
        let step = rect.width() / n.max(1) as f32;
        if trim_in > 0 {
            painter.rect_filled(
                Rect::from_min_max(
                    rect.min,
                    pos2(rect.left() + step * trim_in as f32, rect.bottom()),
                ),
                0.0,
                dim,
            );
        }
        if trim_out + 1 < n {
            painter.rect_filled(
                Rect::from_min_max(
                    pos2(rect.left() + step * (trim_out + 1) as f32, rect.top()),
                    rect.max,
                ),
                0.0,
                dim,
            );
        }
        let x = frame_x(s.view.playback.frame);
        painter.line_segment(
            [pos2(x, rect.top()), pos2(x, rect.bottom())],
            Stroke::new(2.0, Color32::from_rgb(0xff, 0x7a, 0x59)),
        );
        if (resp.dragged() || resp.clicked())
            && let Some(p) = resp.interact_pointer_pos()
        {
            let f = ((p.x - rect.left()) / rect.width() * n as f32)
                .floor()
                .max(0.0) as usize;
            s.view.playback.playing = false;
            s.seek(f);
        }
        // Flicker curve.
        let (resp, painter) = ui.allocate_painter(vec2(width, 40.0), Sense::click());
        let rect = resp.rect;
        painter.rect_filled(rect, 2.0, Color32::from_gray(0x16));
        match flicker.filter(|f| f.0 == clip.id) {
            Some((_, scores)) if !scores.is_empty() => {
                let max = scores.iter().copied().fold(0.0, f64::max).max(1e-6);
                let pts: Vec<_> = scores
                    .iter()
                    .enumerate()
                    .map(|(i, v)| {
                        pos2(
                            frame_x(i),
                            rect.bottom() - 3.0 - (*v / max) as f32 * (rect.height() - 8.0),
                        )
                    })
                    .collect();
                painter.add(egui::Shape::line(
                    pts,
                    Stroke::new(1.5, Color32::from_rgb(0x59, 0xc3, 0xff)),
                ));
                for f in worst_frames(&scores, WORST_MARKED) {
                    let x = frame_x(f);
                    painter.line_segment(
                        [pos2(x, rect.top()), pos2(x, rect.bottom())],
                        Stroke::new(1.0, Color32::from_rgb(0xff, 0x40, 0x40)),
                    );
                }
                painter.text(
                    rect.left_top() + vec2(4.0, 2.0),
                    egui::Align2::LEFT_TOP,
                    format!("flicker (max {:.4}; red: worst frames)", max),
                    egui::FontId::proportional(11.0),
                    Color32::GRAY,
                );
                if resp.clicked()
                    && let Some(p) = resp.interact_pointer_pos()
                {
                    let f = ((p.x - rect.left()) / rect.width() * n as f32)
                        .floor()
                        .max(0.0) as usize;
                    s.seek(f);
                }
            }
            _ if clip.is_partial() => {
                painter.text(
                    rect.center(),
                    egui::Align2::CENTER_CENTER,
                    "flicker curve: when the re-matte finishes",
                    egui::FontId::proportional(11.0),
                    Color32::GRAY,
                );
            }
            _ => {
                painter.text(
                    rect.center(),
                    egui::Align2::CENTER_CENTER,
                    "flicker curve: computing…",
                    egui::FontId::proportional(11.0),
                    Color32::GRAY,
                );
                s.request_flicker();
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn worst_frames_are_the_largest_scores() {
        assert_eq!(worst_frames(&[0.0, 0.1, 0.5, 0.2, 0.0], 2), vec![2, 3]);
        assert_eq!(worst_frames(&[0.0], 3), Vec::<usize>::new());
        assert_eq!(worst_frames(&[0.0, 0.0, 0.3], 3), vec![2]);
    }
}

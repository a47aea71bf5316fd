//! Notifications: errors and results as readable notes in the corner, never a crash or a
//! modal that blocks the window. Info notes fade after a few seconds; errors stay until closed.

use eframe::egui;

use crate::app::state::{Level, Studio};

pub struct NotesPanel<'a> {
    pub studio: &'a mut Studio,
}

impl NotesPanel<'_> {
    pub fn ui(&mut self, ui: &mut egui::Ui) {
        let s = &mut *self.studio;
        if s.notes.is_empty() {
            return;
        }
        let mut close = None;
        egui::Area::new(egui::Id::unique("ildiff-notes"))
            .anchor(egui::Align2::RIGHT_BOTTOM, [-12.0, -120.0])
            .order(egui::Order::Foreground)
            .show(ui.ctx(), |ui| {
                ui.set_max_width(380.0);
                for (i, n) in s.notes.iter().enumerate().rev().take(5) {
                    let (fill, icon) = match n.level {
                        Level::Info => (egui::Color32::from_rgb(0x22, 0x44, 0x33), "i"),
                        Level::Warning => (egui::Color32::from_rgb(0x55, 0x44, 0x11), "!"),
                        Level::Error => (egui::Color32::from_rgb(0x66, 0x22, 0x22), "x"),
                    };
                    egui::Frame::new()
                        .fill(fill)
                        .corner_radius(6.0)
                        .inner_margin(8.0)
                        .show(ui, |ui| {
                            ui.horizontal_wrapped(|ui| {
                                ui.label(
                                    egui::RichText::new(format!("{icon} {}", n.text))
                                        .color(egui::Color32::WHITE),
                                );
                                if ui.small_button("Dismiss").clicked() {
                                    close = Some(i);
                                }
                            });
                        });
                    ui.add_space(4.0);
                }
            });
        if let Some(i) = close {
            s.notes.remove(i);
        }
        if s.notes.iter().any(|n| n.level == Level::Info) {
            ui.ctx()
                .request_repaint_after(std::time::Duration::from_secs(1));
        }
    }
}

//! The top bar: import (open dialog, a plain path field as its fallback, recent files) and the
//! panel toggles. Every way in ends in [`Studio::import_paths`], the path a drop takes.

use std::path::PathBuf;

use eframe::egui;

use crate::app::dialogs::Dialogs;
use crate::app::state::{JobKind, Studio};

pub struct ImportPanel<'a> {
    pub studio: &'a mut Studio,
    pub dialogs: &'a mut Dialogs,
}

impl ImportPanel<'_> {
    pub fn ui(&mut self, ui: &mut egui::Ui) {
        let s = &mut *self.studio;
        ui.horizontal(|ui| {
            ui.label(egui::RichText::new("ILDiff Studio").strong());
            ui.separator();
            if ui
                .add_enabled(!self.dialogs.is_open(), egui::Button::new("Open…"))
                .on_hover_text("Import clips (GIF, APNG, WebP, WebM, MP4, PNG frames…)")
                .clicked()
            {
                self.dialogs.open_clips(s.settings.last_open_dir.clone());
            }
            let field = ui.add(
                egui::TextEdit::singleline(&mut s.view.open_path_text)
                    .hint_text("or type a path and press Enter")
                    .desired_width(260.0),
            );
            let enter = field.lost_focus() && ui.input(|i| i.key_pressed(egui::Key::Enter));
            if (ui.button("Import").clicked() || enter) && !s.view.open_path_text.trim().is_empty()
            {
                let path = PathBuf::from(s.view.open_path_text.trim());
                s.view.open_path_text.clear();
                s.import_paths([path]);
            }
            ui.menu_button("Recent", |ui| {
                if s.settings.recent_files.is_empty() {
                    ui.label("no recent files");
                }
                let mut chosen = None;
                for p in &s.settings.recent_files {
                    if ui.button(p.display().to_string()).clicked() {
                        chosen = Some(p.clone());
                    }
                }
                if let Some(p) = chosen {
                    s.import_paths([p]);
                    ui.close();
                }
            });
            if let Some(j) = s.running(JobKind::Import) {
                ui.spinner();
                ui.label(format!("importing… {}", j.done));
                if ui.button("Cancel import").clicked() {
                    s.cancel(JobKind::Import);
                }
            }
            ui.with_layout(egui::Layout::right_to_left(egui::Align::Center), |ui| {
                ui.toggle_value(&mut s.settings.layout.show_side, "Jobs & export");
                ui.toggle_value(&mut s.settings.layout.show_pack, "Pack");
                ui.label(egui::RichText::new("drop files anywhere").weak());
            });
        });
    }
}

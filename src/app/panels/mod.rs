//! One module per panel. Each is a short-lived view over the [`super::state::Studio`] with a
//! `ui(&mut self, ui)` method: it draws and calls `Studio` methods, nothing more.

pub mod export;
pub mod import;
pub mod job;
pub mod notes;
pub mod pack;
pub mod preview;
pub mod timeline;

use eframe::egui;

/// Formats a duration as `1m 05s` / `12s` for ETAs.
pub fn short_duration(d: std::time::Duration) -> String {
    let s = d.as_secs();
    if s >= 60 {
        format!("{}m {:02}s", s / 60, s % 60)
    } else {
        format!("{}s", s.max(1))
    }
}

/// A small heading used by the side panels.
pub fn heading(ui: &mut egui::Ui, text: &str) {
    ui.label(egui::RichText::new(text).strong().size(15.0));
}

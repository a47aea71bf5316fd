//! The export panel: platform preset, a live check of the current sticker against the
//! preset's rules (canvas, duration, fps, frame count, estimated size), export of the sticker
//! or the whole pack, the report, and the written file decoded back for the preview.

use std::path::PathBuf;

use eframe::egui;

use crate::app::dialogs::Dialogs;
use crate::app::panels::heading;
use crate::app::state::{JobKind, Studio};
use crate::media::presets::{Preset, Rules, TimeFit};
use crate::media::{Animation, Fit, Format};

pub struct ExportPanel<'a> {
    pub studio: &'a mut Studio,
    pub dialogs: &'a mut Dialogs,
}

/// One line of the live rule check.
#[derive(Debug, Clone, PartialEq)]
pub struct Check {
    pub name: &'static str,
    pub ok: bool,
    pub detail: String,
}

/// Rough bytes per pixel per frame of each format at sticker settings, for the size estimate.
fn bytes_per_pixel_frame(format: Format) -> f64 {
    match format {
        Format::WebM | Format::Mp4 => 0.02,
        Format::WebP => 0.12,
        Format::Gif => 0.3,
        _ => 0.45,
    }
}

/// What the rule check needs of a clip: sizes and timing, no pixels. Drawn every frame, so it
/// must not copy frames (a trimmed copy of a 384² clip is tens of megabytes).
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct ClipFacts {
    pub width: u32,
    pub height: u32,
    pub frames: usize,
    pub duration_secs: f64,
}

impl ClipFacts {
    /// Frames `lo..=hi` of `anim` (clamped to the clip).
    pub fn of(anim: &Animation, lo: usize, hi: usize) -> ClipFacts {
        let hi = hi.min(anim.len().saturating_sub(1));
        let frames = anim.frames.get(lo.min(hi)..=hi).unwrap_or(&[]);
        ClipFacts {
            width: anim.width,
            height: anim.height,
            frames: frames.len(),
            duration_secs: frames.iter().map(|f| f.delay.secs()).sum(),
        }
    }

    /// Mean frame rate, as [`Animation::fps`] computes it.
    pub fn fps(&self) -> f64 {
        if self.duration_secs > 0.0 {
            self.frames as f64 / self.duration_secs
        } else {
            0.0
        }
    }
}

/// Checks a clip against `rules` before export. A failed check is what the exporter will have
/// to change (resize, shorten, resample) or, for the size, may not manage.
pub fn live_check(anim: &ClipFacts, rules: &Rules, fit: Fit) -> Vec<Check> {
    let mut out = Vec::new();
    let (w, h) = (anim.width, anim.height);
    let target = rules.canvas.target(w, h, fit, None);
    out.push(Check {
        name: "dimensions",
        ok: rules.canvas.allows(w, h),
        detail: match &target {
            Ok((tw, th)) if (*tw, *th) != (w, h) => {
                format!(
                    "{w}×{h}, will be fitted to {tw}×{th} ({})",
                    rules.canvas.describe()
                )
            }
            Ok(_) => format!("{w}×{h} ({})", rules.canvas.describe()),
            Err(e) => e.to_string(),
        },
    });
    let dur = anim.duration_secs;
    out.push(Check {
        name: "duration",
        ok: rules.max_duration_secs.is_none_or(|m| dur <= m + 1e-9),
        detail: match rules.max_duration_secs {
            Some(m) if dur > m + 1e-9 => format!("{dur:.2} s > {m} s, will be shortened"),
            Some(m) => format!("{dur:.2} s <= {m} s"),
            None => format!("{dur:.2} s"),
        },
    });
    let fps = anim.fps();
    out.push(Check {
        name: "fps",
        ok: rules.max_fps.is_none_or(|m| fps <= f64::from(m) + 1e-6),
        detail: match rules.max_fps {
            Some(m) if fps > f64::from(m) + 1e-6 => format!("{fps:.1} > {m}, will be resampled"),
            Some(m) => format!("{fps:.1} <= {m}"),
            None => format!("{fps:.1}"),
        },
    });
    if let Some((lo, hi)) = rules.frame_range {
        let n = anim.frames as u32;
        out.push(Check {
            name: "frames",
            ok: (lo..=hi).contains(&n),
            detail: format!("{n} frames (allowed {lo}–{hi})"),
        });
    }
    let (tw, th) = target.unwrap_or((w, h));
    let frames = if rules.animated { anim.frames } else { 1 };
    let est =
        (f64::from(tw) * f64::from(th) * frames as f64 * bytes_per_pixel_frame(rules.formats[0]))
            as u64;
    let cap = rules.cap_for(frames);
    out.push(Check {
        name: "size",
        ok: est <= cap,
        detail: format!(
            "~{} KB estimated, limit {} KB (the exporter searches the best setting under it)",
            est.div_ceil(1000),
            cap / 1000
        ),
    });
    out
}

impl ExportPanel<'_> {
    pub fn ui(&mut self, ui: &mut egui::Ui) {
        let s = &mut *self.studio;
        heading(ui, "Export");
        let ex = &mut s.settings.export;
        egui::ComboBox::from_label("Preset")
            .selected_text(ex.preset.map_or("plain file", Preset::name))
            .show_ui(ui, |ui| {
                ui.selectable_value(&mut ex.preset, None, "plain file");
                for p in Preset::ALL {
                    ui.selectable_value(&mut ex.preset, Some(p), p.name());
                }
            });
        if ex.preset.is_none() {
            egui::ComboBox::from_label("Format")
                .selected_text(ex.plain_extension.clone())
                .show_ui(ui, |ui| {
                    for e in ["png", "webp", "gif", "webm"] {
                        ui.selectable_value(&mut ex.plain_extension, e.to_string(), e);
                    }
                });
        }
        ui.horizontal(|ui| {
            ui.label("Fit");
            ui.selectable_value(&mut ex.fit, Fit::Contain, "contain");
            ui.selectable_value(&mut ex.fit, Fit::Cover, "cover");
            ui.selectable_value(&mut ex.fit, Fit::Stretch, "stretch");
        });
        ui.horizontal(|ui| {
            ui.label("Too long");
            ui.selectable_value(&mut ex.time, TimeFit::Cut, "cut")
                .on_hover_text("keep the start, drop the rest");
            ui.selectable_value(&mut ex.time, TimeFit::Speed, "speed up")
                .on_hover_text("play the whole clip faster");
        });
        if let Some(st) = s.doc.stickers.get_mut(s.doc.selected) {
            ui.horizontal(|ui| {
                ui.label("This sticker");
                ui.selectable_value(&mut st.time, None, "as above")
                    .on_hover_text("the setting above, for every sticker of the pack");
                ui.selectable_value(&mut st.time, Some(TimeFit::Cut), "cut");
                ui.selectable_value(&mut st.time, Some(TimeFit::Speed), "speed up");
            });
        }
        ui.horizontal(|ui| {
            ui.label("Folder");
            let mut text = ex
                .folder
                .as_ref()
                .map(|p| p.display().to_string())
                .unwrap_or_default();
            let r = ui.add(
                egui::TextEdit::singleline(&mut text)
                    .hint_text("export folder")
                    .desired_width(150.0),
            );
            if r.changed() {
                ex.folder = (!text.trim().is_empty()).then(|| PathBuf::from(text.trim()));
            }
            if ui
                .add_enabled(!self.dialogs.is_open(), egui::Button::new("Browse…"))
                .clicked()
            {
                self.dialogs.pick_folder();
            }
        });
        ui.horizontal(|ui| {
            ui.label("File name");
            ui.add(
                egui::TextEdit::singleline(&mut s.doc.export.file_name)
                    .hint_text("default: sticker name")
                    .desired_width(150.0),
            );
        });
        ui.checkbox(
            &mut s.settings.export.preview_export,
            "Preview the exported file (decoded back)",
        );
        // Live rule check of the current sticker.
        if let (Some(p), Some(st)) = (s.settings.export.preset, s.current()) {
            let anim = ClipFacts::of(&st.current().anim, st.trim_in, st.trim_out);
            ui.label(egui::RichText::new(format!("Rules: {}", p.rules().title)).strong());
            for c in live_check(&anim, &p.rules(), s.settings.export.fit) {
                let (mark, color) = if c.ok {
                    ("ok", egui::Color32::LIGHT_GREEN)
                } else {
                    ("!", egui::Color32::from_rgb(0xff, 0xb0, 0x40))
                };
                ui.label(
                    egui::RichText::new(format!("{mark} {}: {}", c.name, c.detail)).color(color),
                );
            }
        }
        if let Some(out) = s.export_path() {
            ui.label(egui::RichText::new(format!("-> {}", out.display())).weak());
        }
        let busy = s
            .running(JobKind::Export)
            .or_else(|| s.running(JobKind::Pack))
            .cloned();
        ui.horizontal(|ui| {
            let ready = busy.is_none() && !s.doc.stickers.is_empty();
            if ui
                .add_enabled(ready, egui::Button::new("Export sticker"))
                .clicked()
            {
                s.export_current();
            }
            if ui
                .add_enabled(
                    ready && s.settings.export.preset.is_some(),
                    egui::Button::new("Export pack"),
                )
                .clicked()
            {
                s.export_pack();
            }
            if busy.is_some() && ui.button("Cancel export").clicked() {
                s.cancel(JobKind::Export);
                s.cancel(JobKind::Pack);
            }
        });
        if let Some(r) = busy {
            let frac = if r.total > 0 {
                r.done as f32 / r.total as f32
            } else {
                0.0
            };
            ui.add(
                egui::ProgressBar::new(frac)
                    .text(r.stage.clone())
                    .animate(true),
            );
        }
        if let Some(rep) = &s.doc.export.last_report {
            egui::CollapsingHeader::new("Export report")
                .default_open(true)
                .show(ui, |ui| {
                    ui.label(egui::RichText::new(rep.to_string()).monospace().size(11.0));
                });
        }
        if let Some(rep) = &s.doc.export.pack_report {
            egui::CollapsingHeader::new("Pack report").show(ui, |ui| {
                ui.label(egui::RichText::new(rep.to_string()).monospace().size(11.0));
            });
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn live_check_flags_what_the_exporter_must_change() {
        // 40 frames of 50 ms = 2 s at 20 fps, 64×48.
        let facts = |a: &Animation| ClipFacts::of(a, 0, a.len() - 1);
        let anim = facts(&crate::worker::jobs::tests::clip(40, 64, 48));
        let checks = live_check(&anim, &Preset::Telegram.rules(), Fit::Contain);
        let get = |n: &str| checks.iter().find(|c| c.name == n).expect("check").clone();
        assert!(!get("dimensions").ok, "Telegram wants a 512 side");
        assert!(
            get("dimensions").detail.contains("512"),
            "{:?}",
            get("dimensions")
        );
        assert!(get("duration").ok);
        assert!(get("fps").ok);
        let line = live_check(&anim, &Preset::Line.rules(), Fit::Contain);
        let frames = line.iter().find(|c| c.name == "frames").expect("frames");
        assert!(!frames.ok, "LINE allows 5–20 frames: {frames:?}");
        let long = facts(&crate::worker::jobs::tests::clip(80, 64, 48)); // 4 s
        assert!((long.duration_secs - 4.0).abs() < 1e-9 && (long.fps() - 20.0).abs() < 1e-9);
        let trimmed = ClipFacts::of(&crate::worker::jobs::tests::clip(80, 64, 48), 10, 29);
        assert_eq!(trimmed.frames, 20);
        assert!((trimmed.duration_secs - 1.0).abs() < 1e-9);
        let c = live_check(&long, &Preset::Telegram.rules(), Fit::Contain);
        assert!(!c.iter().find(|c| c.name == "duration").expect("d").ok);
    }
}

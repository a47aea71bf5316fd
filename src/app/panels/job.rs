//! The job panel: re-matte the current clip or generate from a prompt, the model (installed
//! default or a checkpoint file, checked when chosen), temporal depth and quality, Run and
//! Cancel, and progress with stage, frames done and ETA. Finished frames appear in the
//! preview while the job runs.

use std::path::PathBuf;

use eframe::egui;

use crate::app::dialogs::Dialogs;
use crate::app::panels::{heading, short_duration};
use crate::app::settings::{ModelChoice, Quality};
use crate::app::state::{JobKind, ModelStatus, Studio};
use crate::pipeline::generate::WordGroups;
use crate::worker::jobs::GenerateJob;

/// The job panel's prompt-mode settings and the last run's word feedback.
#[derive(Debug, Clone, Default)]
pub struct GenerateForm {
    pub job: GenerateJob,
    /// Text of the SD-1.5 folder field (empty = the embedded default).
    pub dir_text: String,
    /// Words of the last prompt the model did not know.
    pub unknown: Vec<String>,
    /// The built-in generator's words by group, read once when the prompt panel first shows
    /// them (`Ok(None)`: none installed; `Err`: the file could not be read).
    pub vocabulary: Option<std::result::Result<Option<WordGroups>, String>>,
}

impl GenerateForm {
    /// The job to submit for `prompt`.
    pub fn job_for(&self, prompt: &str) -> GenerateJob {
        let dir = self.dir_text.trim();
        let mut job = self.job.clone();
        job.request.prompt = prompt.to_string();
        job.model_dir = (!dir.is_empty()).then(|| PathBuf::from(dir));
        job
    }
}

pub struct JobPanel<'a> {
    pub studio: &'a mut Studio,
    pub dialogs: &'a mut Dialogs,
}

impl JobPanel<'_> {
    pub fn ui(&mut self, ui: &mut egui::Ui) {
        let s = &mut *self.studio;
        heading(ui, "Job");
        ui.horizontal(|ui| {
            ui.selectable_value(&mut s.view.generate_mode, false, "Re-matte this clip");
            ui.selectable_value(&mut s.view.generate_mode, true, "Generate from a prompt");
        });
        if s.view.generate_mode {
            ui.add(
                egui::TextEdit::multiline(&mut s.view.prompt)
                    .hint_text("a cat waving, sticker style")
                    .desired_rows(2),
            );
            generate_settings(ui, &mut s.view.generate, &mut s.view.prompt);
        } else {
            ui.label("Model");
            let mut use_default = s.settings.job.model == ModelChoice::Default;
            ui.horizontal(|ui| {
                if ui.radio(use_default, "Installed default").clicked() && !use_default {
                    use_default = true;
                    s.choose_model(None);
                }
                if ui.radio(!use_default, "Checkpoint file").clicked() && use_default {
                    s.settings.job.model =
                        ModelChoice::File(PathBuf::from(s.view.model_path_text.trim()));
                    s.work.model_status = ModelStatus::Unchecked;
                }
            });
            if !use_default {
                ui.horizontal(|ui| {
                    let field = ui.add(
                        egui::TextEdit::singleline(&mut s.view.model_path_text)
                            .hint_text("path to .safetensors")
                            .desired_width(170.0),
                    );
                    let enter = field.lost_focus() && ui.input(|i| i.key_pressed(egui::Key::Enter));
                    if ui.button("Use").clicked() || enter {
                        let p = PathBuf::from(s.view.model_path_text.trim());
                        s.choose_model(Some(p));
                    }
                    if ui
                        .add_enabled(!self.dialogs.is_open(), egui::Button::new("Browse…"))
                        .clicked()
                    {
                        self.dialogs.pick_model();
                    }
                });
            }
            match &s.work.model_status {
                ModelStatus::Unchecked => {}
                ModelStatus::Checking => {
                    ui.horizontal(|ui| {
                        ui.spinner();
                        ui.label("checking the model…");
                    });
                }
                ModelStatus::Ready(m) => {
                    ui.label(
                        egui::RichText::new(format!("OK: {m}")).color(egui::Color32::LIGHT_GREEN),
                    );
                }
                ModelStatus::Failed(e) => {
                    ui.label(
                        egui::RichText::new(format!("Error: {e}")).color(egui::Color32::LIGHT_RED),
                    );
                }
            }
            ui.add(
                egui::Slider::new(&mut s.settings.job.window, 1..=32)
                    .text("temporal depth (frames per window)"),
            )
            .on_hover_text("more frames per window: faster, more memory; the result is the same");
            ui.horizontal(|ui| {
                ui.label("Quality");
                ui.selectable_value(&mut s.settings.job.quality, Quality::Full, "Full");
                ui.selectable_value(
                    &mut s.settings.job.quality,
                    Quality::Draft,
                    "Draft (½ size)",
                );
            });
        }
        let running = s
            .running(JobKind::Matte)
            .or_else(|| s.running(JobKind::Generate))
            .cloned();
        ui.horizontal(|ui| {
            let can_run = running.is_none() && (s.view.generate_mode || !s.doc.stickers.is_empty());
            if ui.add_enabled(can_run, egui::Button::new("Run")).clicked() {
                s.run_job();
            }
            let cancelling = running.as_ref().is_some_and(|r| r.cancelling);
            if ui
                .add_enabled(
                    running.is_some() && !cancelling,
                    egui::Button::new("Cancel"),
                )
                .clicked()
            {
                s.cancel(JobKind::Matte);
                s.cancel(JobKind::Generate);
            }
        });
        if let Some(r) = running {
            let frac = if r.total > 0 {
                r.done as f32 / r.total as f32
            } else {
                0.0
            };
            let eta = r.eta().map(short_duration).unwrap_or_else(|| "…".into());
            let text = if r.cancelling {
                "cancelling…".to_string()
            } else {
                format!("{} · {}/{} frames · ETA {eta}", r.stage, r.done, r.total)
            };
            ui.add(egui::ProgressBar::new(frac).text(text).animate(true));
        }
    }
}

/// Prompt-mode settings: negative prompt, weights, sampling, and the unknown-word feedback of
/// the last run.
fn generate_settings(ui: &mut egui::Ui, form: &mut GenerateForm, prompt: &mut String) {
    if form.dir_text.trim().is_empty() {
        vocabulary(ui, form, prompt);
    }
    let r = &mut form.job.request;
    ui.add(
        egui::TextEdit::singleline(&mut r.negative)
            .hint_text("negative prompt (what to avoid)")
            .desired_width(f32::INFINITY),
    );
    ui.horizontal(|ui| {
        ui.label("Weights");
        ui.add(
            egui::TextEdit::singleline(&mut form.dir_text)
                .hint_text("SD-1.5 folder (empty: built-in default)")
                .desired_width(170.0),
        )
        .on_hover_text(
            "a diffusers folder with unet/, vae/, text_encoder/, tokenizer/, the AnimateDiff \
             motion adapter and the LayerDiffuse files; checked before the job starts",
        );
        ui.checkbox(&mut form.job.hf_cache, "HF cache")
            .on_hover_text("fill missing parts from the Hugging Face cache (offline)");
    });
    ui.horizontal(|ui| {
        ui.add(
            egui::DragValue::new(&mut r.steps)
                .range(1..=200)
                .prefix("steps "),
        );
        ui.add(
            egui::DragValue::new(&mut r.frames)
                .range(1..=64)
                .prefix("frames "),
        );
        ui.add(
            egui::DragValue::new(&mut r.guidance)
                .range(0.0..=30.0)
                .speed(0.1)
                .prefix("guidance "),
        );
    });
    ui.horizontal(|ui| {
        ui.add(egui::DragValue::new(&mut r.seed).prefix("seed "));
        if ui.small_button("new").on_hover_text("a new seed").clicked() {
            r.seed = std::time::SystemTime::now()
                .duration_since(std::time::UNIX_EPOCH)
                .map(|d| d.subsec_nanos() as u64 ^ d.as_secs())
                .unwrap_or(0);
        }
        use crate::pipeline::scheduler::SchedulerKind;
        ui.selectable_value(&mut r.scheduler, SchedulerKind::Ddim, "DDIM");
        ui.selectable_value(&mut r.scheduler, SchedulerKind::EulerAncestral, "Euler a");
    });
    if !form.unknown.is_empty() {
        ui.label(
            egui::RichText::new(format!(
                "not in the model's vocabulary: {}",
                form.unknown.join(", ")
            ))
            .color(egui::Color32::YELLOW),
        );
    }
}

/// The built-in generator's closed vocabulary, by group; clicking a word adds it to the prompt.
/// Read from the file header the first time it is shown (a few kB, no weights).
fn vocabulary(ui: &mut egui::Ui, form: &mut GenerateForm, prompt: &mut String) {
    let groups = form.vocabulary.get_or_insert_with(|| {
        crate::pipeline::generate::default_vocabulary().map_err(|e| e.to_string())
    });
    let groups = match groups {
        Ok(Some(g)) => g,
        Ok(None) => return,
        Err(e) => {
            ui.label(egui::RichText::new(e.as_str()).color(egui::Color32::YELLOW));
            return;
        }
    };
    let total: usize = groups.iter().map(|(_, w)| w.len()).sum();
    egui::CollapsingHeader::new(format!("Words the built-in model knows ({total})"))
        .id_salt("vocabulary")
        .show(ui, |ui| {
            egui::ScrollArea::vertical()
                .max_height(160.0)
                .show(ui, |ui| {
                    for (group, words) in groups.iter() {
                        ui.label(egui::RichText::new(group.as_str()).strong());
                        ui.horizontal_wrapped(|ui| {
                            for w in words {
                                if ui.small_button(w.as_str()).clicked() {
                                    if !prompt.trim().is_empty() {
                                        prompt.push(' ');
                                    }
                                    prompt.push_str(w);
                                }
                            }
                        });
                    }
                });
        });
}

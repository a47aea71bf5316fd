//! Settings that survive a restart: model choice, recent files, last folders, export defaults
//! and window layout. Kept apart from the runtime state so that what is written to disk is a
//! small, versionable record, never a snapshot of clips or jobs.
//!
//! Stored as JSON under the platform's config directory (`directories`), or under
//! `$ILDIFF_CONFIG_DIR` when set (tests, screenshots). Writes are atomic, so a crash mid-save
//! leaves the previous file; a file that cannot be parsed is moved aside and reported, never
//! fatal.

use std::path::{Path, PathBuf};

use serde::{Deserialize, Serialize};

use crate::media::Fit;
use crate::media::presets::Preset;
use crate::{Error, Result};

/// File name inside the config directory.
pub const FILE_NAME: &str = "studio.json";
/// Most recent files remembered.
pub const MAX_RECENT: usize = 10;

/// Which ILDiff checkpoint re-matting uses.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, Default)]
pub enum ModelChoice {
    /// The trained model shipped with the studio (when one is installed).
    #[default]
    Default,
    /// A checkpoint chosen by the user.
    File(PathBuf),
}

/// How the preview canvas shows the current frame.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, Default, Hash)]
pub enum PreviewMode {
    /// The input clip's RGB, alpha ignored.
    Input,
    /// Alpha as grey levels.
    Alpha,
    /// RGBA over a checkerboard.
    #[default]
    Checker,
    /// RGBA over a chat background colour.
    Chat,
    /// Input RGB and the result side by side.
    SideBySide,
    /// The background plate the last re-matte assumed (plate-prior models).
    Plate,
}

impl PreviewMode {
    pub const ALL: [PreviewMode; 6] = [
        PreviewMode::Input,
        PreviewMode::Alpha,
        PreviewMode::Checker,
        PreviewMode::Chat,
        PreviewMode::SideBySide,
        PreviewMode::Plate,
    ];

    /// Button label (also what UI tests click).
    pub fn label(self) -> &'static str {
        match self {
            PreviewMode::Input => "Input RGB",
            PreviewMode::Alpha => "Alpha",
            PreviewMode::Checker => "Checkerboard",
            PreviewMode::Chat => "Chat background",
            PreviewMode::SideBySide => "Before / after",
            PreviewMode::Plate => "Background plate",
        }
    }

    /// Short name for the command line (`--view`).
    pub fn name(self) -> &'static str {
        match self {
            PreviewMode::Input => "input",
            PreviewMode::Alpha => "alpha",
            PreviewMode::Checker => "checker",
            PreviewMode::Chat => "chat",
            PreviewMode::SideBySide => "compare",
            PreviewMode::Plate => "plate",
        }
    }

    pub fn from_name(name: &str) -> Option<PreviewMode> {
        PreviewMode::ALL.into_iter().find(|m| m.name() == name)
    }
}

/// The matte's processing size; it lives with the matte, the studio only stores the choice.
pub use crate::pipeline::matte::Quality;

/// Re-matte defaults.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(default)]
pub struct JobSettings {
    pub model: ModelChoice,
    /// Output frames decoded per window ("temporal depth" in the panel).
    pub window: usize,
    pub quality: Quality,
}

impl Default for JobSettings {
    fn default() -> Self {
        Self {
            model: ModelChoice::Default,
            window: crate::pipeline::matte::MatteOptions::default().window,
            quality: Quality::Full,
        }
    }
}

/// Export defaults.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(default)]
pub struct ExportSettings {
    /// `None`: plain export, the file name's extension picks the format.
    pub preset: Option<Preset>,
    /// Extension of plain exports (`png`, `webp`, `gif`, `webm`).
    pub plain_extension: String,
    pub fit: Fit,
    /// A clip longer than the preset allows: cut it or play it faster.
    pub time: crate::media::presets::TimeFit,
    /// Decode the written file back and show it, so compression artefacts are visible.
    pub preview_export: bool,
    pub folder: Option<PathBuf>,
}

impl Default for ExportSettings {
    fn default() -> Self {
        Self {
            preset: Some(Preset::Telegram),
            plain_extension: "png".into(),
            fit: Fit::Contain,
            time: crate::media::presets::TimeFit::Cut,
            preview_export: true,
            folder: None,
        }
    }
}

/// Window and view layout.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(default)]
pub struct LayoutSettings {
    /// Inner window size in points.
    pub window_size: Option<[f32; 2]>,
    pub show_pack: bool,
    pub show_side: bool,
    /// Width of the pack panel (left) in points, as the user last dragged it.
    pub pack_width: f32,
    /// Width of the job and export panel (right) in points.
    pub side_width: f32,
    pub preview_mode: PreviewMode,
    pub heatmap: bool,
    /// Chat background colour (sRGB).
    pub chat_background: [u8; 3],
}

impl Default for LayoutSettings {
    fn default() -> Self {
        Self {
            window_size: None,
            show_pack: true,
            show_side: true,
            pack_width: PACK_WIDTH,
            side_width: SIDE_WIDTH,
            preview_mode: PreviewMode::Checker,
            heatmap: false,
            chat_background: CHAT_LIGHT,
        }
    }
}

/// Default width of the pack panel in points.
pub const PACK_WIDTH: f32 = 230.0;
/// Default width of the job and export panel in points.
pub const SIDE_WIDTH: f32 = 300.0;
/// Widths a side panel is restored to (a hand-edited or stale file cannot hide the preview).
pub const PANEL_WIDTHS: std::ops::RangeInclusive<f32> = 160.0..=900.0;

impl LayoutSettings {
    /// A saved panel width, or `default` when it is out of [`PANEL_WIDTHS`] or not a number.
    pub fn panel_width(saved: f32, default: f32) -> f32 {
        if PANEL_WIDTHS.contains(&saved) {
            saved
        } else {
            default
        }
    }
}

/// Light chat background preset (a typical light theme wallpaper tone).
pub const CHAT_LIGHT: [u8; 3] = [0xdf, 0xe6, 0xd9];
/// Dark chat background preset.
pub const CHAT_DARK: [u8; 3] = [0x17, 0x21, 0x2b];

/// Everything persisted.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, Default)]
#[serde(default)]
pub struct Settings {
    pub recent_files: Vec<PathBuf>,
    pub last_open_dir: Option<PathBuf>,
    pub job: JobSettings,
    pub export: ExportSettings,
    pub layout: LayoutSettings,
    pub pack_name: String,
    pub pack_author: String,
}

impl Settings {
    /// Puts `path` first in the recent list (no duplicates, at most [`MAX_RECENT`]) and
    /// remembers its folder for the next open dialog.
    pub fn push_recent(&mut self, path: &Path) {
        self.recent_files.retain(|p| p != path);
        self.recent_files.insert(0, path.to_path_buf());
        self.recent_files.truncate(MAX_RECENT);
        if let Some(dir) = path.parent().filter(|d| !d.as_os_str().is_empty()) {
            self.last_open_dir = Some(dir.to_path_buf());
        }
    }
}

/// Where settings live and what was last written (so unchanged settings are not rewritten).
#[derive(Debug)]
pub struct SettingsStore {
    path: Option<PathBuf>,
    saved: Settings,
}

/// The config directory: `$ILDIFF_CONFIG_DIR`, else the platform's (`~/.config/ildiff-studio`
/// on Linux); `None` when the platform has none (then nothing is persisted).
pub fn default_dir() -> Option<PathBuf> {
    if let Some(dir) = std::env::var_os("ILDIFF_CONFIG_DIR").filter(|d| !d.is_empty()) {
        return Some(PathBuf::from(dir));
    }
    directories::ProjectDirs::from("org", "ILDiff", "ildiff-studio")
        .map(|d| d.config_dir().to_path_buf())
}

impl SettingsStore {
    /// Loads from `dir` (see [`default_dir`]). A missing file gives defaults; an unreadable one
    /// gives defaults plus a warning to show, and is renamed `studio.json.bad` so it is not
    /// overwritten silently.
    pub fn load(dir: Option<&Path>) -> (SettingsStore, Settings, Option<String>) {
        let path = dir.map(|d| d.join(FILE_NAME));
        let mut warning = None;
        let settings = match &path {
            Some(p) if p.exists() => match std::fs::read_to_string(p)
                .map_err(|e| e.to_string())
                .and_then(|t| serde_json::from_str::<Settings>(&t).map_err(|e| e.to_string()))
            {
                Ok(s) => s,
                Err(e) => {
                    let bad = p.with_extension("json.bad");
                    let _ = std::fs::rename(p, &bad);
                    warning = Some(format!(
                        "settings in {} could not be read ({e}); defaults are used and the file \
                         was kept as {}",
                        p.display(),
                        bad.display()
                    ));
                    Settings::default()
                }
            },
            _ => Settings::default(),
        };
        let store = SettingsStore {
            path,
            saved: settings.clone(),
        };
        (store, settings, warning)
    }

    /// The settings file, when there is a config directory.
    pub fn path(&self) -> Option<&Path> {
        self.path.as_deref()
    }

    /// Writes `settings` if they differ from what was last written; true when written.
    pub fn save_if_changed(&mut self, settings: &Settings) -> Result<bool> {
        if *settings == self.saved {
            return Ok(false);
        }
        self.save(settings)?;
        Ok(true)
    }

    /// Writes `settings` atomically.
    pub fn save(&mut self, settings: &Settings) -> Result<()> {
        let Some(path) = &self.path else {
            return Ok(());
        };
        if let Some(dir) = path.parent() {
            std::fs::create_dir_all(dir)
                .map_err(|e| Error::io("create the settings folder", dir, e))?;
        }
        let json = serde_json::to_string_pretty(settings)
            .map_err(|e| Error::Invalid(format!("cannot serialise settings: {e}")))?;
        crate::media::atomic::write_atomic(path, json.as_bytes())?;
        self.saved = settings.clone();
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn settings_round_trip_through_the_store() {
        let dir = tempfile::tempdir().expect("tempdir");
        let (mut store, mut s, warn) = SettingsStore::load(Some(dir.path()));
        assert!(warn.is_none());
        assert_eq!(s, Settings::default());
        assert!(!store.save_if_changed(&s).expect("save"), "unchanged");
        s.job.model = ModelChoice::File("/m/x.safetensors".into());
        s.export.preset = Some(Preset::WhatsApp);
        s.layout.preview_mode = PreviewMode::Alpha;
        s.layout.window_size = Some([800.0, 600.0]);
        assert!(store.save_if_changed(&s).expect("save"));
        let (_, back, warn) = SettingsStore::load(Some(dir.path()));
        assert!(warn.is_none());
        assert_eq!(back, s);
    }

    #[test]
    fn a_corrupt_file_gives_defaults_and_is_kept_aside() {
        let dir = tempfile::tempdir().expect("tempdir");
        std::fs::write(dir.path().join(FILE_NAME), "{ not json").expect("write");
        let (_, s, warn) = SettingsStore::load(Some(dir.path()));
        assert_eq!(s, Settings::default());
        let warn = warn.expect("warning");
        assert!(warn.contains("studio.json"), "{warn}");
        assert!(dir.path().join("studio.json.bad").exists());
        // Unknown and missing fields are tolerated (older or newer versions of the file).
        std::fs::write(
            dir.path().join(FILE_NAME),
            r#"{"pack_name": "Cats", "future_field": 1}"#,
        )
        .expect("write");
        let (_, s, warn) = SettingsStore::load(Some(dir.path()));
        assert!(warn.is_none(), "{warn:?}");
        assert_eq!(s.pack_name, "Cats");
    }

    #[test]
    fn recent_files_are_unique_newest_first_and_capped() {
        let mut s = Settings::default();
        for i in 0..15 {
            s.push_recent(Path::new(&format!("/clips/{i}.gif")));
        }
        s.push_recent(Path::new("/clips/3.gif"));
        assert_eq!(s.recent_files.len(), MAX_RECENT);
        assert_eq!(s.recent_files[0], Path::new("/clips/3.gif"));
        assert_eq!(
            s.recent_files
                .iter()
                .filter(|p| p.ends_with("3.gif"))
                .count(),
            1
        );
        assert_eq!(s.last_open_dir.as_deref(), Some(Path::new("/clips")));
        assert_eq!(PreviewMode::from_name("alpha"), Some(PreviewMode::Alpha));
        assert_eq!(PreviewMode::from_name("plate"), Some(PreviewMode::Plate));
    }
}

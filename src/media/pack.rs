//! Pack export: several stickers into one folder per platform, with icons and manifests in the
//! layout each platform's own tooling expects.
//!
//! Layouts (under `out_dir`):
//! - `whatsapp/contents.json` + `whatsapp/<identifier>/{01.webp.., tray.png}`: the `assets`
//!   layout of WhatsApp's sticker sample app (WhatsApp/stickers), so the folder drops in as is.
//! - `telegram/` (or `telegram-emoji/`, `telegram-static/`): `01.webm..`, `icon.webm` (100×100,
//!   ≤ 32 KB, the set thumbnail) and `pack.json` (title, author, emoji and file per sticker).
//! - `line/`: `01.png..`, `main.png` (240×240), `tab.png` (96×74) and `<name>.zip` of them.
//! - `discord/`, `signal/`: the stickers and `manifest.json`.
//!
//! Pack-level rules (sticker count, emoji count, WhatsApp's all-animated-or-all-static) are
//! checked before anything is written and fail with one error listing every problem. LINE's set
//! size of 8, 16 or 24 is enforced the same way: Creators Market rejects any other count, so a
//! pack that cannot be submitted is better refused early than written. A sticker that fails to
//! decode or fit is recorded in the report and the others are still written; cancelling stops
//! the pack (files already finished stay, each one complete).

use std::fmt;
use std::io::Write;
use std::path::{Path, PathBuf};

use serde::Serialize;

use crate::error::{Error, Result};
use crate::media::atomic::{AtomicFile, write_atomic};
use crate::media::presets::{
    AlphaRule, CanvasRule, ExportReport, FitOptions, LoopRule, Preset, Rules, fit_to_preset,
    fit_with_rules,
};
use crate::media::{Animation, Format, Limits, decode};
use crate::progress::Progress;

/// Where a sticker comes from.
#[derive(Debug, Clone)]
pub enum StickerSource {
    /// A clip already in memory.
    Animation(Animation),
    /// A file (or folder of frames) decoded when its turn comes, so a pack of 30 long clips is
    /// never all in memory at once.
    Path(PathBuf),
}

impl StickerSource {
    fn load(&self, limits: &Limits) -> Result<Animation> {
        match self {
            StickerSource::Animation(a) => Ok(a.clone()),
            StickerSource::Path(p) => decode::open(p, limits),
        }
    }

    /// Whether the source is animated, from its header only; `None` if it cannot be read (the
    /// sticker then fails at its turn, with the decoder's message).
    fn animated(&self, limits: &Limits) -> Option<bool> {
        match self {
            StickerSource::Animation(a) => Some(a.len() > 1),
            StickerSource::Path(p) => decode::open_source(p, limits)
                .ok()
                .map(|s| s.info().animated),
        }
    }

    fn label(&self) -> Option<String> {
        match self {
            StickerSource::Animation(_) => None,
            StickerSource::Path(p) => p.file_stem().map(|s| s.to_string_lossy().into_owned()),
        }
    }
}

/// One sticker of a pack.
#[derive(Debug, Clone)]
pub struct PackSticker {
    pub source: StickerSource,
    /// Emoji the sticker answers to (WhatsApp: 1–3; Telegram: 1–20).
    pub emoji: Vec<String>,
    /// Display name (Discord's sticker name); empty = taken from the file name.
    pub name: String,
}

/// A pack to export.
#[derive(Debug, Clone)]
pub struct PackSpec {
    /// Pack title.
    pub name: String,
    /// Publisher.
    pub author: String,
    pub stickers: Vec<PackSticker>,
    /// Source of the icons (tray icon, LINE main/tab, Telegram thumbnail); default: the first
    /// sticker (its first frame for still icons, the clip for Telegram's video thumbnail).
    pub tray_icon: Option<StickerSource>,
    /// Applied to every sticker (trim, fps, fit).
    pub options: FitOptions,
    /// Decoding limits for path sources.
    pub limits: Limits,
}

/// A sticker that was written.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct PackItem {
    /// 1-based position in the spec.
    pub index: usize,
    pub name: String,
    /// File name inside the pack folder.
    pub file: String,
    pub emoji: Vec<String>,
    pub report: ExportReport,
}

/// A sticker or icon that could not be made.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct PackFailure {
    /// "sticker 3 (cat)" or "tray icon".
    pub what: String,
    /// `Error::kind()`.
    pub kind: String,
    pub error: String,
}

/// What a pack export wrote.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct PackReport {
    pub preset: Preset,
    /// The platform folder (`out_dir/whatsapp`, ...).
    pub dir: PathBuf,
    pub stickers: Vec<PackItem>,
    pub icons: Vec<ExportReport>,
    pub manifest: Option<PathBuf>,
    pub zip: Option<PathBuf>,
    pub failures: Vec<PackFailure>,
    /// Pack-level problems found after writing (too few stickers left, a failed rule).
    pub problems: Vec<String>,
    /// True when every sticker and icon was written and passes its rules.
    pub complete: bool,
}

impl fmt::Display for PackReport {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        writeln!(
            f,
            "{} pack in {}: {} sticker(s), {} icon(s){}",
            self.preset,
            self.dir.display(),
            self.stickers.len(),
            self.icons.len(),
            if self.complete { "" } else { " (INCOMPLETE)" }
        )?;
        for s in &self.stickers {
            let fails: Vec<&str> = s.report.failures().map(|r| r.name.as_str()).collect();
            writeln!(
                f,
                "{} {} {} bytes, {} {}{}",
                if s.report.passed { "PASS" } else { "FAIL" },
                s.file,
                s.report.bytes,
                s.report.setting,
                s.emoji.join(""),
                if fails.is_empty() {
                    String::new()
                } else {
                    format!(" (breaks: {})", fails.join(", "))
                }
            )?;
        }
        for i in &self.icons {
            writeln!(
                f,
                "{} {} {} bytes",
                if i.passed { "PASS" } else { "FAIL" },
                i.path.file_name().unwrap_or_default().to_string_lossy(),
                i.bytes
            )?;
        }
        if let Some(m) = &self.manifest {
            writeln!(f, "manifest {}", m.display())?;
        }
        if let Some(z) = &self.zip {
            writeln!(f, "zip {}", z.display())?;
        }
        for x in &self.failures {
            writeln!(f, "FAILED {}: {}", x.what, x.error)?;
        }
        for p in &self.problems {
            writeln!(f, "problem: {p}")?;
        }
        Ok(())
    }
}

/// Pack-level numbers per platform.
#[derive(Debug, Clone, Copy)]
struct PackRules {
    /// Allowed sticker counts (inclusive range) …
    count: (usize, usize),
    /// … or an explicit list (LINE: 8, 16, 24).
    counts: Option<&'static [usize]>,
    /// Emoji per sticker, inclusive.
    emoji: (usize, usize),
    /// Longest pack name and author (WhatsApp: 128 characters).
    max_text: usize,
}

fn pack_rules(preset: Preset) -> PackRules {
    match preset {
        Preset::WhatsApp => PackRules {
            count: (3, 30),
            counts: None,
            emoji: (1, 3),
            max_text: 128,
        },
        Preset::Line => PackRules {
            count: (8, 24),
            counts: Some(&[8, 16, 24]),
            emoji: (0, usize::MAX),
            max_text: usize::MAX,
        },
        Preset::Telegram | Preset::TelegramStatic => PackRules {
            count: (1, 120),
            counts: None,
            emoji: (1, 20),
            max_text: 64,
        },
        Preset::TelegramEmoji => PackRules {
            count: (1, 200),
            counts: None,
            emoji: (1, 20),
            max_text: 64,
        },
        Preset::Discord => PackRules {
            count: (1, 60),
            counts: None,
            emoji: (0, usize::MAX),
            max_text: usize::MAX,
        },
        Preset::Signal => PackRules {
            count: (1, 200),
            counts: None,
            emoji: (0, usize::MAX),
            max_text: usize::MAX,
        },
    }
}

impl PackRules {
    fn count_ok(&self, n: usize) -> bool {
        match self.counts {
            Some(list) => list.contains(&n),
            None => (self.count.0..=self.count.1).contains(&n),
        }
    }

    fn count_words(&self) -> String {
        match self.counts {
            Some(list) => {
                let v: Vec<String> = list.iter().map(|n| n.to_string()).collect();
                v.join(", ")
            }
            None => format!("{}–{}", self.count.0, self.count.1),
        }
    }
}

/// Checks a spec against the platform's pack rules; every problem is listed in one error.
pub fn validate(spec: &PackSpec, preset: Preset) -> Result<()> {
    let pr = pack_rules(preset);
    let mut problems = Vec::new();
    let n = spec.stickers.len();
    if !pr.count_ok(n) {
        problems.push(format!(
            "{n} sticker(s); a {preset} pack needs {}",
            pr.count_words()
        ));
    }
    if spec.name.trim().is_empty() {
        problems.push("the pack has no name".into());
    }
    for (what, text) in [("name", &spec.name), ("author", &spec.author)] {
        if text.chars().count() > pr.max_text {
            problems.push(format!(
                "the pack {what} is {} characters; {preset} allows {}",
                text.chars().count(),
                pr.max_text
            ));
        }
    }
    if preset == Preset::WhatsApp && spec.author.trim().is_empty() {
        problems.push("WhatsApp packs need a publisher (author)".into());
    }
    for (i, s) in spec.stickers.iter().enumerate() {
        let k = s.emoji.iter().filter(|e| !e.trim().is_empty()).count();
        if k < pr.emoji.0 || k > pr.emoji.1 {
            problems.push(format!(
                "sticker {} has {k} emoji; {preset} needs {}–{}",
                i + 1,
                pr.emoji.0,
                pr.emoji.1
            ));
        }
    }
    if preset == Preset::WhatsApp {
        let kinds: Vec<Option<bool>> = spec
            .stickers
            .iter()
            .map(|s| s.source.animated(&spec.limits))
            .collect();
        let stills: Vec<String> = kinds
            .iter()
            .enumerate()
            .filter(|(_, k)| **k == Some(false))
            .map(|(i, _)| (i + 1).to_string())
            .collect();
        if !stills.is_empty() && kinds.contains(&Some(true)) {
            problems.push(format!(
                "WhatsApp packs are all animated or all static; sticker(s) {} are still images",
                stills.join(", ")
            ));
        }
    }
    if problems.is_empty() {
        Ok(())
    } else {
        Err(Error::Invalid(format!(
            "the {preset} pack `{}` cannot be made: {}",
            spec.name,
            problems.join("; ")
        )))
    }
}

/// Prefixes progress stages with the item being made ("sticker 2/8: encode crf 31").
struct Scoped<'a> {
    inner: &'a mut dyn Progress,
    prefix: String,
}

impl Progress for Scoped<'_> {
    fn step(&mut self, stage: &str, done: u64, total: u64) -> bool {
        self.inner
            .step(&format!("{}: {stage}", self.prefix), done, total)
    }
}

/// `"My Pack!"` → `"My_Pack"`: WhatsApp identifiers allow letters, digits, `_`, `-`, `.`.
pub fn identifier(name: &str) -> String {
    let mut out = String::new();
    for c in name.trim().chars() {
        if c.is_ascii_alphanumeric() || matches!(c, '_' | '-' | '.') {
            out.push(c);
        } else if !out.ends_with('_') {
            out.push('_');
        }
    }
    let out: String = out.trim_matches('_').chars().take(128).collect();
    if out.is_empty() { "pack".into() } else { out }
}

const KB: u64 = 1000;

/// A still PNG icon of exactly `width × height` under `cap` bytes.
fn icon_rules(title: &'static str, width: u32, height: u32, cap: u64) -> Rules {
    Rules {
        title,
        formats: &[Format::Png],
        animated: false,
        canvas: CanvasRule::Exact { width, height },
        max_duration_secs: None,
        max_fps: None,
        min_frame_delay_ms: None,
        frame_range: None,
        loops: LoopRule::None,
        max_bytes: cap,
        static_max_bytes: None,
        no_audio: false,
        alpha: AlphaRule::Any,
        distinct_frames: false,
    }
}

/// The icons a platform's pack needs: (file name, rules).
fn icons_for(preset: Preset) -> Vec<(&'static str, Rules)> {
    match preset {
        Preset::WhatsApp => vec![(
            "tray.png",
            icon_rules("WhatsApp tray icon", 96, 96, 50 * KB),
        )],
        Preset::Line => vec![
            (
                "main.png",
                icon_rules("LINE main image", 240, 240, 300 * KB),
            ),
            ("tab.png", icon_rules("LINE tab image", 96, 74, 300 * KB)),
        ],
        // Telegram's set thumbnail: 100×100, ≤ 32 KB; a video for video sets.
        Preset::Telegram | Preset::TelegramEmoji => vec![(
            "icon.webm",
            Rules {
                title: "Telegram set thumbnail",
                max_bytes: 32 * KB,
                ..Preset::TelegramEmoji.rules()
            },
        )],
        Preset::TelegramStatic => vec![(
            "icon.png",
            icon_rules("Telegram set thumbnail", 100, 100, 32 * KB),
        )],
        Preset::Discord | Preset::Signal => Vec::new(),
    }
}

/// Exports a pack for one platform into `out_dir/<platform>/`. Returns an error only for
/// problems that stop the whole pack (invalid spec, unwritable folder, cancel); failed stickers
/// are listed in the report.
pub fn export_pack(
    spec: &PackSpec,
    preset: Preset,
    out_dir: &Path,
    progress: &mut dyn Progress,
) -> Result<PackReport> {
    validate(spec, preset)?;
    let dir = out_dir.join(preset.name());
    let ident = identifier(&spec.name);
    // WhatsApp's sample app reads `assets/contents.json` and `assets/<identifier>/*`.
    let files_dir = if preset == Preset::WhatsApp {
        dir.join(&ident)
    } else {
        dir.clone()
    };
    std::fs::create_dir_all(&files_dir)
        .map_err(|e| Error::io("create pack folder", &files_dir, e))?;

    let ext = preset.default_extension();
    let n = spec.stickers.len();
    let width = n.to_string().len().max(2);
    let mut report = PackReport {
        preset,
        dir: dir.clone(),
        stickers: Vec::new(),
        icons: Vec::new(),
        manifest: None,
        zip: None,
        failures: Vec::new(),
        problems: Vec::new(),
        complete: false,
    };
    let icons = icons_for(preset);
    let mut icons_done = icons.is_empty();
    if let Some(src) = &spec.tray_icon {
        match src.load(&spec.limits) {
            Ok(anim) => {
                make_icons(&anim, &icons, &files_dir, spec, &mut report, progress)?;
                icons_done = true;
            }
            // Recorded; the icons then come from the first sticker instead.
            Err(e) => report.failures.push(PackFailure {
                what: "icon source".into(),
                kind: e.kind().into(),
                error: e.to_string(),
            }),
        }
    }

    for (i, sticker) in spec.stickers.iter().enumerate() {
        let index = i + 1;
        let name = if sticker.name.trim().is_empty() {
            sticker
                .source
                .label()
                .unwrap_or_else(|| format!("sticker {index:0width$}"))
        } else {
            sticker.name.clone()
        };
        let what = format!("sticker {index} ({name})");
        if !progress.step(&format!("sticker {index}/{n}"), i as u64, n as u64) {
            return Err(Error::Cancelled);
        }
        let file = format!("{index:0width$}.{ext}");
        let path = files_dir.join(&file);
        let mut scoped = Scoped {
            inner: progress,
            prefix: format!("sticker {index}/{n}"),
        };
        let result = sticker.source.load(&spec.limits).and_then(|anim| {
            let r = fit_to_preset(&anim, preset, &spec.options, &path, &mut scoped);
            Ok((anim, r?))
        });
        match result {
            Ok((anim, r)) => {
                if !r.passed {
                    report
                        .problems
                        .push(format!("{what} was written but breaks its rules"));
                }
                report.stickers.push(PackItem {
                    index,
                    name,
                    file,
                    emoji: sticker.emoji.clone(),
                    report: r,
                });
                if !icons_done {
                    make_icons(&anim, &icons, &files_dir, spec, &mut report, progress)?;
                    icons_done = true;
                }
            }
            Err(Error::Cancelled) => return Err(Error::Cancelled),
            Err(e) => report.failures.push(PackFailure {
                what,
                kind: e.kind().into(),
                error: e.to_string(),
            }),
        }
    }
    if !icons_done {
        report
            .problems
            .push("no icon was made: no sticker could be read".into());
    }

    // libwebp folds identical frames together, so a sticker that barely moves can come back
    // as a still, which WhatsApp refuses inside an animated pack.
    if preset == Preset::WhatsApp && report.stickers.iter().any(|s| s.report.frames > 1) {
        let stills: Vec<String> = report
            .stickers
            .iter()
            .filter(|s| s.report.frames <= 1)
            .map(|s| {
                format!(
                    "{} reads back as a still image (its frames are identical); WhatsApp rejects stills in an animated pack",
                    s.file
                )
            })
            .collect();
        report.problems.extend(stills);
    }

    let written = report.stickers.len();
    let pr = pack_rules(preset);
    if written < n && !pr.count_ok(written) {
        report.problems.push(format!(
            "only {written} of {n} stickers were written; a {preset} pack needs {}",
            pr.count_words()
        ));
    }

    report.manifest = write_manifest(spec, preset, &ident, &dir, &report)?;
    if preset == Preset::Line {
        report.zip = Some(write_line_zip(spec, &dir, &report)?);
    }
    report.complete = report.failures.is_empty()
        && report.problems.is_empty()
        && report.icons.iter().all(|i| i.passed);
    Ok(report)
}

/// Makes every icon of the platform from `anim`; failures are recorded, cancel is returned.
fn make_icons(
    anim: &Animation,
    icons: &[(&'static str, Rules)],
    dir: &Path,
    spec: &PackSpec,
    report: &mut PackReport,
    progress: &mut dyn Progress,
) -> Result<()> {
    for (file, rules) in icons {
        let mut scoped = Scoped {
            inner: progress,
            prefix: (*file).to_string(),
        };
        // Icons use the whole canvas; trim still applies so the icon matches the stickers.
        let opts = FitOptions {
            size: None,
            fps: None,
            ..spec.options
        };
        match fit_with_rules(anim, rules, &opts, &dir.join(file), &mut scoped) {
            Ok(r) => {
                if !r.passed {
                    report
                        .problems
                        .push(format!("{file} was written but breaks its rules"));
                }
                report.icons.push(r);
            }
            Err(Error::Cancelled) => return Err(Error::Cancelled),
            Err(e) => report.failures.push(PackFailure {
                what: rules.title.to_string(),
                kind: e.kind().into(),
                error: e.to_string(),
            }),
        }
    }
    Ok(())
}

fn icon_file(report: &PackReport, ext: &str) -> Option<String> {
    report.icons.iter().find_map(|i| {
        let name = i.path.file_name()?.to_string_lossy().into_owned();
        name.ends_with(ext).then_some(name)
    })
}

#[derive(Serialize)]
struct WaContents<'a> {
    android_play_store_link: &'a str,
    ios_app_store_link: &'a str,
    sticker_packs: Vec<WaPack<'a>>,
}

#[derive(Serialize)]
struct WaPack<'a> {
    identifier: &'a str,
    name: &'a str,
    publisher: &'a str,
    tray_image_file: String,
    image_data_version: &'a str,
    avoid_cache: bool,
    publisher_email: &'a str,
    publisher_website: &'a str,
    privacy_policy_website: &'a str,
    license_agreement_website: &'a str,
    animated_sticker_pack: bool,
    stickers: Vec<WaSticker<'a>>,
}

#[derive(Serialize)]
struct WaSticker<'a> {
    image_file: &'a str,
    emojis: &'a [String],
}

#[derive(Serialize)]
struct SimpleManifest<'a> {
    /// Pack name (Telegram, Discord).
    #[serde(skip_serializing_if = "Option::is_none")]
    name: Option<&'a str>,
    /// Pack title (Signal's word for it).
    #[serde(skip_serializing_if = "Option::is_none")]
    title: Option<&'a str>,
    author: &'a str,
    #[serde(skip_serializing_if = "Option::is_none")]
    kind: Option<&'a str>,
    #[serde(skip_serializing_if = "Option::is_none")]
    icon: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    cover: Option<&'a str>,
    stickers: Vec<serde_json::Value>,
}

/// Writes the platform's manifest (none for LINE, whose zip is the submission).
fn write_manifest(
    spec: &PackSpec,
    preset: Preset,
    ident: &str,
    dir: &Path,
    report: &PackReport,
) -> Result<Option<PathBuf>> {
    let json = match preset {
        Preset::Line => return Ok(None),
        Preset::WhatsApp => {
            let contents = WaContents {
                android_play_store_link: "",
                ios_app_store_link: "",
                sticker_packs: vec![WaPack {
                    identifier: ident,
                    name: &spec.name,
                    publisher: &spec.author,
                    tray_image_file: icon_file(report, ".png").unwrap_or_else(|| "tray.png".into()),
                    image_data_version: "1",
                    avoid_cache: false,
                    publisher_email: "",
                    publisher_website: "",
                    privacy_policy_website: "",
                    license_agreement_website: "",
                    animated_sticker_pack: report.stickers.iter().any(|s| s.report.frames > 1),
                    stickers: report
                        .stickers
                        .iter()
                        .map(|s| WaSticker {
                            image_file: &s.file,
                            emojis: &s.emoji,
                        })
                        .collect(),
                }],
            };
            serde_json::to_string_pretty(&contents)
        }
        Preset::Telegram | Preset::TelegramEmoji | Preset::TelegramStatic => {
            let m = SimpleManifest {
                name: Some(&spec.name),
                title: None,
                author: &spec.author,
                kind: Some(match preset {
                    Preset::TelegramEmoji => "video emoji",
                    Preset::TelegramStatic => "static sticker",
                    _ => "video sticker",
                }),
                icon: icon_file(report, &format!(".{}", preset.default_extension())),
                cover: None,
                stickers: report
                    .stickers
                    .iter()
                    .map(|s| serde_json::json!({"file": s.file, "emoji": s.emoji, "name": s.name}))
                    .collect(),
            };
            serde_json::to_string_pretty(&m)
        }
        Preset::Discord => {
            let m = SimpleManifest {
                name: Some(&spec.name),
                title: None,
                author: &spec.author,
                kind: None,
                icon: None,
                cover: None,
                // Discord's API takes `name` (2–30 characters) and `tags` (the emoji).
                stickers: report
                    .stickers
                    .iter()
                    .map(|s| {
                        let name: String = s.name.chars().take(30).collect();
                        let tags = s.emoji.join(",");
                        serde_json::json!({"file": s.file, "name": name, "tags": tags})
                    })
                    .collect(),
            };
            serde_json::to_string_pretty(&m)
        }
        Preset::Signal => {
            let m = SimpleManifest {
                name: None,
                title: Some(&spec.name),
                author: &spec.author,
                kind: None,
                icon: None,
                cover: report.stickers.first().map(|s| s.file.as_str()),
                // Signal keeps one emoji per sticker: the first.
                stickers: report
                    .stickers
                    .iter()
                    .map(|s| {
                        let emoji = s.emoji.first().cloned().unwrap_or_default();
                        serde_json::json!({"file": s.file, "emoji": emoji})
                    })
                    .collect(),
            };
            serde_json::to_string_pretty(&m)
        }
    }
    .map_err(|e| Error::Invalid(format!("cannot write the manifest: {e}")))?;
    let name = match preset {
        Preset::WhatsApp => "contents.json",
        Preset::Telegram | Preset::TelegramEmoji | Preset::TelegramStatic => "pack.json",
        _ => "manifest.json",
    };
    let path = dir.join(name);
    write_atomic(&path, json.as_bytes())?;
    Ok(Some(path))
}

/// Zips LINE's main.png, tab.png and numbered stickers, written atomically.
fn write_line_zip(spec: &PackSpec, dir: &Path, report: &PackReport) -> Result<PathBuf> {
    let zip_path = dir.join(format!("{}.zip", identifier(&spec.name)));
    let mut names: Vec<String> = report
        .icons
        .iter()
        .filter_map(|i| Some(i.path.file_name()?.to_string_lossy().into_owned()))
        .collect();
    names.extend(report.stickers.iter().map(|s| s.file.clone()));
    let mut tmp = AtomicFile::new(&zip_path)?;
    {
        let mut zip = zip::ZipWriter::new(tmp.file());
        let opts = zip::write::SimpleFileOptions::default()
            .compression_method(zip::CompressionMethod::Deflated);
        let zerr = |e: zip::result::ZipError| {
            Error::io("write zip", &zip_path, std::io::Error::other(e.to_string()))
        };
        for name in &names {
            let src = dir.join(name);
            let bytes = std::fs::read(&src).map_err(|e| Error::io("read pack file", &src, e))?;
            zip.start_file(name.as_str(), opts).map_err(zerr)?;
            zip.write_all(&bytes)
                .map_err(|e| Error::io("write zip", &zip_path, e))?;
        }
        zip.finish().map_err(zerr)?;
    }
    tmp.commit()?;
    Ok(zip_path)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::media::{Delay, Frame, LoopCount};
    use image::{Rgba, RgbaImage};

    fn anim(n: usize) -> Animation {
        let frames = (0..n)
            .map(|i| {
                Frame::new(
                    RgbaImage::from_pixel(8, 8, Rgba([i as u8 * 20, 0, 0, 255])),
                    Delay::from_millis(100),
                )
            })
            .collect();
        Animation::new(8, 8, frames, LoopCount::Infinite).expect("anim")
    }

    fn spec(count: usize, frames: usize, emoji: &[&str]) -> PackSpec {
        PackSpec {
            name: "Test Pack".into(),
            author: "Me".into(),
            stickers: (0..count)
                .map(|_| PackSticker {
                    source: StickerSource::Animation(anim(frames)),
                    emoji: emoji.iter().map(|e| e.to_string()).collect(),
                    name: String::new(),
                })
                .collect(),
            tray_icon: None,
            options: FitOptions::default(),
            limits: Limits::default(),
        }
    }

    #[test]
    fn pack_counts_are_enforced_with_one_clear_error() {
        let err = validate(&spec(2, 3, &["😀"]), Preset::WhatsApp).expect_err("too few");
        assert!(err.to_string().contains("needs 3–30"), "{err}");
        assert!(validate(&spec(3, 3, &["😀"]), Preset::WhatsApp).is_ok());
        assert!(validate(&spec(31, 3, &["😀"]), Preset::WhatsApp).is_err());
        let err = validate(&spec(5, 3, &[]), Preset::Line).expect_err("line count");
        assert!(err.to_string().contains("8, 16, 24"), "{err}");
        assert!(validate(&spec(16, 3, &[]), Preset::Line).is_ok());
        assert!(validate(&spec(1, 3, &[]), Preset::Discord).is_ok());
    }

    #[test]
    fn emoji_and_text_rules() {
        let err = validate(&spec(3, 3, &[]), Preset::WhatsApp).expect_err("no emoji");
        assert!(err.to_string().contains("sticker 1 has 0 emoji"), "{err}");
        let err =
            validate(&spec(3, 3, &["a", "b", "c", "d"]), Preset::WhatsApp).expect_err("four emoji");
        assert!(err.to_string().contains("4 emoji"), "{err}");
        let err = validate(&spec(1, 3, &[]), Preset::Telegram).expect_err("tg needs emoji");
        assert_eq!(err.kind(), "invalid");
        let mut s = spec(3, 3, &["😀"]);
        s.name = "x".repeat(129);
        s.author = String::new();
        let msg = validate(&s, Preset::WhatsApp)
            .expect_err("long")
            .to_string();
        assert!(
            msg.contains("129 characters") && msg.contains("publisher"),
            "{msg}"
        );
    }

    #[test]
    fn whatsapp_rejects_mixed_still_and_animated() {
        let mut s = spec(3, 3, &["😀"]);
        s.stickers[1].source = StickerSource::Animation(anim(1));
        let err = validate(&s, Preset::WhatsApp).expect_err("mixed");
        assert!(err.to_string().contains("sticker(s) 2 are still"), "{err}");
        assert!(validate(&spec(3, 1, &["😀"]), Preset::WhatsApp).is_ok());
    }

    #[test]
    fn identifiers_are_safe() {
        assert_eq!(identifier("My Pack!"), "My_Pack");
        assert_eq!(identifier("  a/b\\c  "), "a_b_c");
        assert_eq!(identifier("日本"), "pack");
        assert_eq!(identifier(&"x".repeat(300)).len(), 128);
    }

    #[test]
    fn invalid_pack_writes_nothing() {
        let dir = tempfile::tempdir().expect("tempdir");
        let err = export_pack(
            &spec(2, 3, &["😀"]),
            Preset::WhatsApp,
            dir.path(),
            &mut crate::progress::NoProgress,
        )
        .expect_err("invalid");
        assert_eq!(err.kind(), "invalid");
        assert_eq!(std::fs::read_dir(dir.path()).expect("ls").count(), 0);
    }
}

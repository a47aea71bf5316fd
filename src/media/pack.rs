//! Pack export: several stickers into one folder per platform, with icons and manifests in the
//! layout each platform's own tooling expects.
//!
//! Layouts (under `out_dir`):
//! - `whatsapp/contents.json` + `whatsapp/<identifier>/{01.webp.., tray.png}`: the `assets`
//!   layout of WhatsApp's sticker sample app (WhatsApp/stickers), so the folder drops in as is.
//! - `telegram/` (or `telegram-emoji/`, `telegram-static/`): `01.webm..`, `icon.webm` (100×100,
//!   ≤ 32 KB, the set thumbnail; emoji sets get none, Telegram takes no thumbnail file for them)
//!   and `pack.json` (title, author, emoji and file per sticker).
//! - `line/`: `01.png..`, `main.png` (240×240, an APNG that moves, as LINE asks of animated
//!   sets), `tab.png` (96×74), `<name>.zip` of them and `manifest.json` (names and emoji, which
//!   LINE's ZIP has no place for, so a pack converted through LINE keeps them).
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
    /// What a screen reader says for the sticker (WhatsApp's `accessibility_text`); empty = none.
    pub accessibility_text: String,
    /// How this sticker fits a platform's time limit when it is too long (`None`: the pack's
    /// [`FitOptions::time`]): a walk cycle may be cut, a one-off gesture sped up.
    pub time: Option<crate::media::presets::TimeFit>,
}

impl PackSticker {
    /// A sticker with emoji and nothing else set.
    pub fn new(source: StickerSource, emoji: Vec<String>) -> Self {
        PackSticker {
            source,
            emoji,
            name: String::new(),
            accessibility_text: String::new(),
            time: None,
        }
    }
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
    #[serde(skip_serializing_if = "String::is_empty")]
    pub accessibility_text: String,
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
    /// LINE's submission ZIP, or WhatsApp's `.wastickers`.
    pub zip: Option<PathBuf>,
    pub failures: Vec<PackFailure>,
    /// Pack-level problems found after writing (too few stickers left, a failed rule).
    pub problems: Vec<String>,
    /// Advice that does not stop the pack (WhatsApp's first-frame guidance).
    pub warnings: Vec<String>,
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
        for w in &self.warnings {
            writeln!(f, "warning: {w}")?;
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
        // Discord's "Create Guild Sticker" requires `tags` (made from the emoji's name).
        Preset::Discord => PackRules {
            count: (1, 60),
            counts: None,
            emoji: (1, usize::MAX),
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
    let kinds: Vec<Option<bool>> = if preset == Preset::WhatsApp {
        spec.stickers
            .iter()
            .map(|s| s.source.animated(&spec.limits))
            .collect()
    } else {
        Vec::new()
    };
    for (i, s) in spec.stickers.iter().enumerate() {
        let given: Vec<&str> = s
            .emoji
            .iter()
            .map(|e| e.trim())
            .filter(|e| !e.is_empty())
            .collect();
        let k = given.len();
        if k < pr.emoji.0 || k > pr.emoji.1 {
            problems.push(format!(
                "sticker {} has {k} emoji; {preset} needs {}–{}",
                i + 1,
                pr.emoji.0,
                pr.emoji.1
            ));
        }
        let fake: Vec<String> = given
            .iter()
            .filter(|e| !is_emoji(e))
            .map(|e| format!("`{e}`"))
            .collect();
        if !fake.is_empty() {
            problems.push(format!(
                "sticker {}: {} is not an emoji (give one emoji per entry, e.g. 😀)",
                i + 1,
                fake.join(", ")
            ));
        }
        if preset == Preset::Discord && !s.name.trim().is_empty() {
            let n = s.name.trim().chars().count();
            if !(DISCORD_NAME.0..=DISCORD_NAME.1).contains(&n) {
                problems.push(format!(
                    "sticker {} is named `{}` ({n} characters); Discord sticker names have {}–{}",
                    i + 1,
                    s.name.trim(),
                    DISCORD_NAME.0,
                    DISCORD_NAME.1
                ));
            }
        }
        if preset == Preset::WhatsApp {
            let n = s.accessibility_text.chars().count();
            let animated = kinds.get(i).copied().flatten().unwrap_or(true);
            let max = if animated {
                WA_A11Y_ANIMATED
            } else {
                WA_A11Y_STATIC
            };
            if n > max {
                problems.push(format!(
                    "sticker {}'s accessibility text is {n} characters; WhatsApp allows {max} for {} stickers",
                    i + 1,
                    if animated { "animated" } else { "static" }
                ));
            }
        }
    }
    if preset == Preset::WhatsApp {
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

/// Discord sticker names: 2–30 characters ("Create Guild Sticker").
const DISCORD_NAME: (usize, usize) = (2, 30);
/// Discord `tags`: at most 200 characters, and at least the 2 a name needs.
const DISCORD_TAGS: (usize, usize) = (2, 200);
/// WhatsApp's `accessibility_text` limits (its sample app's validator: 125 static, 255 animated).
const WA_A11Y_STATIC: usize = 125;
const WA_A11Y_ANIMATED: usize = 255;

/// True when `s` is exactly one emoji in Unicode's list (qualified or not, any skin tone).
/// Platforms index stickers by emoji, and a letter or word there is dropped or refused.
pub fn is_emoji(s: &str) -> bool {
    emojis::get(s.trim()).is_some()
}

/// Discord's `tags` for a sticker: the name of its first emoji (`grinning`), the form Discord's
/// own picker suggests; `None` when the sticker has no real emoji.
pub fn discord_tags(emoji: &[String]) -> Option<String> {
    let e = emoji.iter().find_map(|e| emojis::get(e.trim()))?;
    // Shortcodes like `a` (🅰️) are too short for Discord; the full name is used then.
    let name = e
        .shortcode()
        .filter(|s| s.chars().count() >= DISCORD_TAGS.0)
        .map(str::to_string)
        .unwrap_or_else(|| e.name().replace(' ', "_"));
    let tags: String = name.chars().take(DISCORD_TAGS.1).collect();
    (tags.chars().count() >= DISCORD_TAGS.0).then_some(tags)
}

/// A Discord sticker name of 2–30 characters: `name` cut to 30, or `sticker NN` when shorter
/// than 2 (a one-letter file name).
pub fn discord_name(name: &str, index: usize) -> String {
    let n: String = name.trim().chars().take(DISCORD_NAME.1).collect();
    if n.chars().count() >= DISCORD_NAME.0 {
        n
    } else {
        format!("sticker {index:02}")
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

/// `"My Pack!"` → `"My_Pack"`: WhatsApp identifiers allow letters, digits, `_`, `-`, `.` and
/// must be *under* 128 characters, so at most 127 are kept.
pub fn identifier(name: &str) -> String {
    let mut out = String::new();
    for c in name.trim().chars() {
        if c.is_ascii_alphanumeric() || matches!(c, '_' | '-' | '.') {
            out.push(c);
        } else if !out.ends_with('_') {
            out.push('_');
        }
    }
    let out: String = out
        .trim_matches('_')
        .chars()
        .take(WA_IDENTIFIER_MAX)
        .collect();
    if out.is_empty() { "pack".into() } else { out }
}

const KB: u64 = 1000;
/// WhatsApp: "The identifier should be less than 128 characters".
const WA_IDENTIFIER_MAX: usize = 127;

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
        // LINE's animation guideline: the main image of an animated set is itself a 240×240
        // APNG (same frame, play and size rules as a sticker).
        Preset::Line => vec![
            (
                "main.png",
                Rules {
                    title: "LINE main image",
                    canvas: CanvasRule::Exact {
                        width: 240,
                        height: 240,
                    },
                    ..Preset::Line.rules()
                },
            ),
            ("tab.png", icon_rules("LINE tab image", 96, 74, 300 * KB)),
        ],
        // Telegram's set thumbnail: 100×100, ≤ 32 KB; a video for video sets. Custom emoji
        // sets take no thumbnail file (setStickerSetThumbnail: the first emoji stands in).
        Preset::Telegram => vec![(
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
        Preset::TelegramEmoji | Preset::Discord | Preset::Signal => Vec::new(),
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
        warnings: Vec::new(),
        complete: false,
    };
    // Icons still to make; an icon source that is a still image cannot make a moving icon, which
    // then comes from the first sticker like every icon without a source.
    let mut icons = icons_for(preset);
    if let Some(src) = &spec.tray_icon {
        match src.load(&spec.limits) {
            Ok(anim) => {
                make_icons(&anim, &mut icons, &files_dir, spec, &mut report, progress)?;
            }
            // Recorded; the icons then come from the first sticker instead.
            Err(e) => report.failures.push(PackFailure {
                what: "icon source".into(),
                kind: e.kind().into(),
                error: e.to_string(),
            }),
        }
    }

    let made = export_stickers(spec, preset, &files_dir, width, progress)?;
    for m in made {
        match m {
            Made::Written {
                item,
                breaks,
                warning,
            } => {
                if breaks {
                    report.problems.push(format!(
                        "sticker {} ({}) was written but breaks its rules",
                        item.index, item.name
                    ));
                }
                report.warnings.extend(warning);
                report.stickers.push(*item);
            }
            Made::Failed(f) => report.failures.push(f),
        }
    }
    // Icons without a source of their own come from the stickers, first one first (decoded
    // again: cheaper than holding every clip until the end).
    let written: Vec<usize> = report.stickers.iter().map(|s| s.index).collect();
    for index in written {
        if icons.is_empty() {
            break;
        }
        let Some(sticker) = spec.stickers.get(index - 1) else {
            continue;
        };
        if let Ok(anim) = sticker.source.load(&spec.limits) {
            make_icons(&anim, &mut icons, &files_dir, spec, &mut report, progress)?;
        }
    }
    if !icons.is_empty() {
        let names: Vec<&str> = icons.iter().map(|(n, _)| *n).collect();
        report.problems.push(format!(
            "{} not made: no sticker could be read",
            names.join(", ")
        ));
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
    if preset == Preset::WhatsApp {
        report.zip = write_wastickers(spec, &ident, &dir, &files_dir, &mut report)?;
    }
    report.complete = report.failures.is_empty()
        && report.problems.is_empty()
        && report.icons.iter().all(|i| i.passed);
    Ok(report)
}

/// Stickers fitted at once. Each fit already runs its probes two at a time; a second sticker
/// fills the stretches where one fit leaves a core idle (decode, resize, the size model, the
/// read-back check), and memory stays bounded by two clips in flight.
const PACK_WORKERS: usize = 2;

/// One sticker's outcome, in the order of the spec once collected.
enum Made {
    Written {
        item: Box<PackItem>,
        /// Written but fails a rule on read-back.
        breaks: bool,
        warning: Option<String>,
    },
    Failed(PackFailure),
}

/// The pack's one progress bar, shared by the sticker workers: each sticker reports its own
/// fraction and the bar shows their sum, so two stickers in flight move one bar.
struct PackProgress<'a> {
    inner: std::sync::Mutex<(&'a mut dyn Progress, Vec<f64>)>,
    cancelled: std::sync::atomic::AtomicBool,
}

/// Units of the pack bar per sticker.
const STICKER_UNITS: f64 = 1000.0;

impl PackProgress<'_> {
    fn cancelled(&self) -> bool {
        self.cancelled.load(std::sync::atomic::Ordering::Relaxed)
    }

    /// Sets sticker `i`'s fraction done and redraws the bar; false once anyone cancelled.
    fn report(&self, i: usize, stage: &str, frac: f64) -> bool {
        if self.cancelled() {
            return false;
        }
        let Ok(mut guard) = self.inner.lock() else {
            return false;
        };
        let (inner, fracs) = &mut *guard;
        if let Some(f) = fracs.get_mut(i) {
            *f = frac.clamp(0.0, 1.0);
        }
        let done = (fracs.iter().sum::<f64>() * STICKER_UNITS) as u64;
        let total = (fracs.len() as f64 * STICKER_UNITS) as u64;
        let go = inner.step(stage, done, total);
        if !go {
            self.cancelled
                .store(true, std::sync::atomic::Ordering::Relaxed);
        }
        go
    }
}

/// One sticker's view of the pack bar: its stages prefixed ("sticker 2/8: encode crf 31").
struct StickerProgress<'p, 'a> {
    pack: &'p PackProgress<'a>,
    i: usize,
    prefix: String,
}

impl Progress for StickerProgress<'_, '_> {
    fn step(&mut self, stage: &str, done: u64, total: u64) -> bool {
        let frac = if total > 0 {
            done as f64 / total as f64
        } else {
            0.0
        };
        // Never quite 1 before the sticker is finished.
        self.pack
            .report(self.i, &format!("{}: {stage}", self.prefix), frac.min(0.99))
    }
}

/// Fits every sticker of the pack, [`PACK_WORKERS`] at a time; outcomes in spec order.
fn export_stickers(
    spec: &PackSpec,
    preset: Preset,
    files_dir: &Path,
    width: usize,
    progress: &mut dyn Progress,
) -> Result<Vec<Made>> {
    let n = spec.stickers.len();
    let ext = preset.default_extension();
    let bar = PackProgress {
        inner: std::sync::Mutex::new((progress, vec![0.0; n])),
        cancelled: std::sync::atomic::AtomicBool::new(false),
    };
    let one = |i: usize| -> Result<Made> {
        let sticker = &spec.stickers[i];
        let index = i + 1;
        let name = if sticker.name.trim().is_empty() {
            sticker
                .source
                .label()
                .unwrap_or_else(|| format!("sticker {index:0width$}"))
        } else {
            sticker.name.clone()
        };
        let prefix = format!("sticker {index}/{n}");
        if !bar.report(i, &prefix, 0.0) {
            return Err(Error::Cancelled);
        }
        let file = format!("{index:0width$}.{ext}");
        let path = files_dir.join(&file);
        let mut scoped = StickerProgress {
            pack: &bar,
            i,
            prefix,
        };
        let options = FitOptions {
            time: sticker.time.unwrap_or(spec.options.time),
            ..spec.options
        };
        let result = sticker.source.load(&spec.limits).and_then(|anim| {
            let r = fit_to_preset(&anim, preset, &options, &path, &mut scoped);
            Ok((anim, r?))
        });
        let made = match result {
            Ok((anim, r)) => Made::Written {
                breaks: !r.passed,
                warning: (preset == Preset::WhatsApp)
                    .then(|| first_frame_warning(&anim, &options, &file))
                    .flatten(),
                item: Box::new(PackItem {
                    index,
                    name,
                    file,
                    emoji: sticker.emoji.clone(),
                    accessibility_text: sticker.accessibility_text.clone(),
                    report: r,
                }),
            },
            Err(Error::Cancelled) => return Err(Error::Cancelled),
            Err(e) => Made::Failed(PackFailure {
                what: format!("sticker {index} ({name})"),
                kind: e.kind().into(),
                error: e.to_string(),
            }),
        };
        bar.report(i, &format!("sticker {index}/{n}: done"), 1.0);
        Ok(made)
    };
    // A cancel (the only error `one` returns) stops every sticker not yet started.
    let made = crate::par::par_map(n, PACK_WORKERS, |i| {
        if bar.cancelled() {
            Err(Error::Cancelled)
        } else {
            one(i)
        }
    });
    if bar.cancelled() {
        return Err(Error::Cancelled);
    }
    made.into_iter().collect()
}

/// WhatsApp asks that the first frame of an animated sticker be the complete image (it is
/// what shows where animation is off). Warns when the first frame covers less than half of
/// what the fullest frame covers (alpha summed).
fn first_frame_warning(anim: &Animation, opts: &FitOptions, file: &str) -> Option<String> {
    let a = match opts.trim {
        Some((s, e)) => anim.cut(s, e),
        None => anim.clone(),
    };
    let cover = |f: &crate::media::Frame| -> u64 { f.image.pixels().map(|p| p[3] as u64).sum() };
    let first = cover(a.frames.first()?);
    let most = a.frames.iter().map(cover).max()?;
    if a.len() < 2 || most == 0 || first * 2 >= most {
        return None;
    }
    Some(format!(
        "{file}: the first frame shows {:.0} % of the fullest frame; WhatsApp shows the first frame where animation is off, so it should be the complete image",
        first as f64 * 100.0 / most as f64
    ))
}

/// Makes the icons of `icons` that `anim` can make (a moving icon needs a moving clip) and
/// removes them from the list; failures are recorded, cancel is returned.
fn make_icons(
    anim: &Animation,
    icons: &mut Vec<(&'static str, Rules)>,
    dir: &Path,
    spec: &PackSpec,
    report: &mut PackReport,
    progress: &mut dyn Progress,
) -> Result<()> {
    let (now, later): (Vec<_>, Vec<_>) = std::mem::take(icons)
        .into_iter()
        .partition(|(_, rules)| !rules.animated || anim.len() > 1);
    *icons = later;
    for (file, rules) in &now {
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
    #[serde(skip_serializing_if = "str::is_empty")]
    accessibility_text: &'a str,
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
        // LINE's ZIP carries no names or emoji; this file (outside the ZIP) keeps them so the
        // pack can be converted onwards.
        Preset::Line => {
            let m = SimpleManifest {
                name: Some(&spec.name),
                title: None,
                author: &spec.author,
                kind: Some("animation sticker"),
                icon: icon_file(report, "main.png"),
                cover: None,
                stickers: report
                    .stickers
                    .iter()
                    .map(|s| serde_json::json!({"file": s.file, "emoji": s.emoji, "name": s.name}))
                    .collect(),
            };
            serde_json::to_string_pretty(&m)
        }
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
                            accessibility_text: &s.accessibility_text,
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
                // Discord's API takes `name` (2–30 characters) and `tags` (the emoji's name,
                // 2–200 characters); the emoji themselves are kept for converting onwards.
                stickers: report
                    .stickers
                    .iter()
                    .map(|s| {
                        let name = discord_name(&s.name, s.index);
                        let tags = discord_tags(&s.emoji).unwrap_or_default();
                        serde_json::json!({"file": s.file, "name": name, "tags": tags, "emoji": s.emoji})
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

/// Why a written WhatsApp pack may not become a `.wastickers` (empty = it may): the file goes to
/// sticker-maker apps that pass it straight to WhatsApp, which refuses a pack with any fault.
pub fn wastickers_problems(report: &PackReport) -> Vec<String> {
    let mut out = Vec::new();
    let pr = pack_rules(Preset::WhatsApp);
    let n = report.stickers.len();
    if !pr.count_ok(n) {
        out.push(format!("{n} sticker(s) written; WhatsApp needs 3–30"));
    }
    for s in &report.stickers {
        if !s.report.passed {
            out.push(format!("{} breaks a WhatsApp rule", s.file));
        }
        let k = s.emoji.iter().filter(|e| is_emoji(e)).count();
        if !(pr.emoji.0..=pr.emoji.1).contains(&k) {
            out.push(format!("{} has {k} emoji; WhatsApp needs 1–3", s.file));
        }
    }
    let animated = report
        .stickers
        .iter()
        .filter(|s| s.report.frames > 1)
        .count();
    if animated != 0 && animated != n {
        out.push("the stickers are not all animated or all static".into());
    }
    match report.icons.iter().find(|i| i.path.ends_with("tray.png")) {
        Some(t) if t.passed => {}
        _ => out.push("no tray icon that passes 96×96, ≤ 50 KB".into()),
    }
    if !report.failures.is_empty() {
        out.push(format!("{} item(s) failed", report.failures.len()));
    }
    out
}

/// Writes `<identifier>.wastickers` beside `contents.json`: a ZIP of `title.txt`, `author.txt`,
/// `tray.png` and the WebP stickers, the layout sticker-maker apps import. Only a pack that passes
/// [`wastickers_problems`] is zipped; otherwise the reasons join the report's problems.
fn write_wastickers(
    spec: &PackSpec,
    ident: &str,
    dir: &Path,
    files_dir: &Path,
    report: &mut PackReport,
) -> Result<Option<PathBuf>> {
    let problems = wastickers_problems(report);
    if !problems.is_empty() {
        report.problems.push(format!(
            "no .wastickers was written: {}",
            problems.join("; ")
        ));
        return Ok(None);
    }
    let path = dir.join(format!("{ident}.wastickers"));
    let mut entries: Vec<(String, Vec<u8>)> = vec![
        ("title.txt".into(), spec.name.trim().as_bytes().to_vec()),
        ("author.txt".into(), spec.author.trim().as_bytes().to_vec()),
    ];
    let mut files = vec!["tray.png".to_string()];
    files.extend(report.stickers.iter().map(|s| s.file.clone()));
    for name in files {
        let src = files_dir.join(&name);
        let bytes = std::fs::read(&src).map_err(|e| Error::io("read pack file", &src, e))?;
        entries.push((name, bytes));
    }
    write_zip(&path, &entries)?;
    Ok(Some(path))
}

/// Writes a ZIP of `(name, bytes)` atomically. WebP and PNG are already compressed, so they
/// are stored; text is deflated.
fn write_zip(path: &Path, entries: &[(String, Vec<u8>)]) -> Result<()> {
    let mut tmp = AtomicFile::new(path)?;
    {
        let mut zip = zip::ZipWriter::new(tmp.file());
        let zerr = |e: zip::result::ZipError| {
            Error::io("write zip", path, std::io::Error::other(e.to_string()))
        };
        for (name, bytes) in entries {
            let method = if name.ends_with(".txt") || name.ends_with(".json") {
                zip::CompressionMethod::Deflated
            } else {
                zip::CompressionMethod::Stored
            };
            let opts = zip::write::SimpleFileOptions::default().compression_method(method);
            zip.start_file(name.as_str(), opts).map_err(zerr)?;
            zip.write_all(bytes)
                .map_err(|e| Error::io("write zip", path, e))?;
        }
        zip.finish().map_err(zerr)?;
    }
    tmp.commit()?;
    Ok(())
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
                    accessibility_text: String::new(),
                    time: None,
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
        assert!(validate(&spec(1, 3, &["😀"]), Preset::Discord).is_ok());
    }

    #[test]
    fn emoji_and_text_rules() {
        let err = validate(&spec(3, 3, &[]), Preset::WhatsApp).expect_err("no emoji");
        assert!(err.to_string().contains("sticker 1 has 0 emoji"), "{err}");
        // WhatsApp/stickers README: "add up to a maximum of three emoji for each sticker".
        let err = validate(&spec(3, 3, &["😀", "🎉", "🐱", "🍕"]), Preset::WhatsApp)
            .expect_err("four emoji");
        assert!(err.to_string().contains("4 emoji"), "{err}");
        assert!(validate(&spec(3, 3, &["😀", "🎉", "🐱"]), Preset::WhatsApp).is_ok());
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
        // WhatsApp/stickers README: "The identifier should be less than 128 characters".
        assert_eq!(identifier(&"x".repeat(300)).len(), 127);
        assert_eq!(identifier(&"x".repeat(127)).len(), 127);
    }

    #[test]
    fn only_real_emoji_pass() {
        // Every platform indexes stickers by emoji; letters are not emoji (the old tests used
        // "a", "b", "c" and passed).
        let err = validate(&spec(3, 3, &["a"]), Preset::WhatsApp).expect_err("letter");
        assert!(err.to_string().contains("`a` is not an emoji"), "{err}");
        let err = validate(&spec(1, 3, &["smile"]), Preset::Telegram).expect_err("word");
        assert!(err.to_string().contains("`smile` is not an emoji"), "{err}");
        // Two emoji in one entry are two entries, not one emoji.
        assert!(!is_emoji("😀😀"));
        // Unqualified, skin-tone and ZWJ forms are real emoji.
        for e in ["❤", "❤️", "👍🏽", "👩‍💻", "🏳️‍🌈", " 😀 "] {
            assert!(is_emoji(e), "{e}");
        }
        assert!(validate(&spec(3, 3, &["❤", "👍🏽"]), Preset::WhatsApp).is_ok());
    }

    #[test]
    fn discord_tags_are_emoji_names_and_names_have_two_characters() {
        // Discord "Create Guild Sticker": name 2–30 characters; tags 2–200 characters, the
        // name of a Unicode emoji.
        assert_eq!(discord_tags(&["😀".into()]).as_deref(), Some("grinning"));
        assert_eq!(
            discord_tags(&["x".into(), "🐱".into()]).as_deref(),
            Some("cat")
        );
        assert_eq!(discord_tags(&["x".into()]), None);
        for e in emojis::iter() {
            let t = discord_tags(&[e.as_str().to_string()]).expect("tag");
            assert!((2..=200).contains(&t.chars().count()), "{e}: {t}");
        }
        assert_eq!(discord_name("a", 3), "sticker 03");
        assert_eq!(discord_name("ok", 3), "ok");
        assert_eq!(discord_name(&"y".repeat(40), 1).chars().count(), 30);
        let mut s = spec(1, 3, &["😀"]);
        s.stickers[0].name = "x".into();
        let err = validate(&s, Preset::Discord).expect_err("short name");
        assert!(err.to_string().contains("2–30"), "{err}");
        let err = validate(&spec(1, 3, &[]), Preset::Discord).expect_err("no tags");
        assert!(err.to_string().contains("0 emoji"), "{err}");
    }

    #[test]
    fn whatsapp_accessibility_text_limits() {
        // WhatsApp's sample-app validator: accessibility_text ≤ 125 characters for static
        // stickers, ≤ 255 for animated ones.
        let mut s = spec(3, 3, &["😀"]);
        s.stickers[0].accessibility_text = "é".repeat(255);
        assert!(validate(&s, Preset::WhatsApp).is_ok());
        s.stickers[0].accessibility_text = "é".repeat(256);
        let err = validate(&s, Preset::WhatsApp).expect_err("long");
        assert!(err.to_string().contains("256 characters"), "{err}");
        let mut still = spec(3, 1, &["😀"]);
        still.stickers[2].accessibility_text = "a".repeat(126);
        let err = validate(&still, Preset::WhatsApp).expect_err("static");
        assert!(err.to_string().contains("125 for static"), "{err}");
    }

    #[test]
    fn first_frame_should_be_the_complete_image() {
        // WhatsApp/stickers: the first frame of an animated sticker should be the complete image.
        let mut a = anim(4);
        a.frames[0].image = RgbaImage::new(8, 8);
        let w = first_frame_warning(&a, &FitOptions::default(), "01.webp").expect("warn");
        assert!(w.contains("01.webp") && w.contains("0 %"), "{w}");
        assert!(first_frame_warning(&anim(4), &FitOptions::default(), "01.webp").is_none());
    }

    #[test]
    fn pack_icons_per_platform() {
        // Telegram custom emoji sets take no thumbnail file.
        assert!(icons_for(Preset::TelegramEmoji).is_empty());
        assert_eq!(icons_for(Preset::Telegram)[0].0, "icon.webm");
        // LINE animation guideline: the main image of an animated set is a 240×240 APNG.
        let line = icons_for(Preset::Line);
        let (file, main) = &line[0];
        assert_eq!(*file, "main.png");
        assert!(main.animated);
        assert_eq!(
            main.canvas,
            CanvasRule::Exact {
                width: 240,
                height: 240
            }
        );
        assert_eq!(main.frame_range, Some((5, 20)));
        assert!(!line[1].1.animated);
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

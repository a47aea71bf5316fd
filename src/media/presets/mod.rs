//! Platform presets: canvas, timing and size rules per messaging app, auto-fit, and the export
//! report that re-reads the written file and checks every rule.
//!
//! The rules come from `STICKER-PLATFORMS.md` and live here as data ([`Preset::rules`]), so the
//! fitter ([`fit_to_preset`]) and the checker ([`ExportReport`]) read the same numbers. Size caps
//! use 1 KB = 1000 bytes everywhere (the stricter reading; see [`rules`]).

mod autofit;
#[cfg(test)]
mod e2e_tests;
pub mod report;
pub mod rules;

use std::fmt;
use std::str::FromStr;

use crate::Progress;
use crate::error::{Error, Result};
use crate::media::encode::Encoding;
use crate::media::{Animation, Fit, Format};

pub use autofit::{
    Probe, export_plain, fit_to_preset, fit_with_rules, search_best, search_best_parallel,
    set_reference_search,
};
pub use report::{ExportReport, RuleCheck};
pub use rules::{AlphaRule, CanvasRule, LoopRule, Rules};

/// Writes `anim` to `out`, the one export call of the CLI and the studio: fitted to `preset`'s
/// rules and checked ([`fit_to_preset`]), or with no preset a plain export whose format the
/// extension picks and whose encoder settings are `plain` (`None` = the format's defaults).
pub fn export(
    anim: &Animation,
    preset: Option<Preset>,
    out: &std::path::Path,
    opts: &FitOptions,
    plain: Option<Encoding>,
    progress: &mut dyn Progress,
) -> Result<ExportReport> {
    match preset {
        Some(p) => fit_to_preset(anim, p, opts, out, progress),
        None => export_plain(anim, out, opts, plain, progress),
    }
}

/// A target platform and sticker kind.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Preset {
    /// Telegram video sticker (WebM VP9 with alpha).
    Telegram,
    /// Telegram custom emoji (100×100 WebM).
    TelegramEmoji,
    /// Telegram static sticker (PNG or WebP).
    TelegramStatic,
    /// WhatsApp animated sticker (animated WebP).
    WhatsApp,
    /// LINE animation sticker (APNG).
    Line,
    /// Discord guild sticker (APNG or GIF).
    Discord,
    /// Signal animated sticker (APNG).
    Signal,
}

impl Preset {
    /// Every preset, in the order `--help` lists them.
    pub const ALL: [Preset; 7] = [
        Preset::Telegram,
        Preset::TelegramEmoji,
        Preset::TelegramStatic,
        Preset::WhatsApp,
        Preset::Line,
        Preset::Discord,
        Preset::Signal,
    ];

    /// The name used on the command line and in `--json`.
    pub fn name(self) -> &'static str {
        match self {
            Preset::Telegram => "telegram",
            Preset::TelegramEmoji => "telegram-emoji",
            Preset::TelegramStatic => "telegram-static",
            Preset::WhatsApp => "whatsapp",
            Preset::Line => "line",
            Preset::Discord => "discord",
            Preset::Signal => "signal",
        }
    }

    /// All names, comma-separated (for error messages and clap's help).
    pub fn names() -> String {
        Preset::ALL.map(Preset::name).join(", ")
    }

    /// One line per preset: name and its rules, for `--help`.
    pub fn help_list() -> String {
        Preset::ALL
            .iter()
            .map(|p| format!("{:<16} {}", p.name(), p.rules().summary()))
            .collect::<Vec<_>>()
            .join("\n")
    }

    /// The file extension written by default (`sticker.<ext>`).
    pub fn default_extension(self) -> &'static str {
        rules::extension_of(self.rules().formats[0])
    }

    /// The rules of this preset.
    pub fn rules(self) -> Rules {
        const KB: u64 = 1000;
        match self {
            Preset::Telegram => Rules {
                title: "Telegram video sticker",
                formats: &[Format::WebM],
                animated: true,
                canvas: CanvasRule::OneSide { side: 512 },
                max_duration_secs: Some(3.0),
                max_fps: Some(30),
                min_frame_delay_ms: None,
                frame_range: None,
                loops: LoopRule::Forever,
                max_bytes: 256 * KB,
                static_max_bytes: None,
                no_audio: true,
                alpha: AlphaRule::VideoAlpha,
                distinct_frames: false,
            },
            // core.telegram.org/stickers, video emoji: 100×100, ≤ 3 s, ≤ 30 fps, ≤ 256 KB
            // (64 KB is the `.tgs` cap, not the video one).
            Preset::TelegramEmoji => Rules {
                title: "Telegram video emoji",
                canvas: CanvasRule::Exact {
                    width: 100,
                    height: 100,
                },
                max_bytes: 256 * KB,
                ..Preset::Telegram.rules()
            },
            Preset::TelegramStatic => Rules {
                title: "Telegram static sticker",
                formats: &[Format::Png, Format::WebP],
                animated: false,
                canvas: CanvasRule::OneSide { side: 512 },
                max_duration_secs: None,
                max_fps: None,
                min_frame_delay_ms: None,
                frame_range: None,
                loops: LoopRule::None,
                max_bytes: 512 * KB,
                static_max_bytes: None,
                no_audio: false,
                alpha: AlphaRule::TransparentBackground,
                distinct_frames: false,
            },
            Preset::WhatsApp => Rules {
                title: "WhatsApp animated sticker",
                formats: &[Format::WebP],
                animated: true,
                canvas: CanvasRule::Exact {
                    width: 512,
                    height: 512,
                },
                max_duration_secs: Some(10.0),
                max_fps: None,
                min_frame_delay_ms: Some(8),
                frame_range: None,
                loops: LoopRule::Forever,
                max_bytes: 500 * KB,
                static_max_bytes: Some(100 * KB),
                no_audio: false,
                alpha: AlphaRule::Any,
                distinct_frames: false,
            },
            Preset::Line => Rules {
                title: "LINE animation sticker",
                formats: &[Format::Png],
                animated: true,
                canvas: CanvasRule::Within {
                    max_width: 320,
                    max_height: 270,
                    min_side: 270,
                },
                max_duration_secs: Some(4.0),
                max_fps: None,
                min_frame_delay_ms: None,
                frame_range: Some((5, 20)),
                loops: LoopRule::Plays {
                    max_plays: 4,
                    max_total_secs: 4.0,
                },
                max_bytes: 300 * KB,
                static_max_bytes: None,
                no_audio: false,
                alpha: AlphaRule::TransparentBackground,
                distinct_frames: true,
            },
            Preset::Discord => Rules {
                title: "Discord sticker",
                formats: &[Format::Png, Format::Gif],
                animated: true,
                canvas: CanvasRule::Exact {
                    width: 320,
                    height: 320,
                },
                max_duration_secs: Some(5.0),
                max_fps: None,
                min_frame_delay_ms: None,
                frame_range: None,
                loops: LoopRule::Forever,
                max_bytes: 512 * KB,
                static_max_bytes: None,
                no_audio: false,
                alpha: AlphaRule::Any,
                distinct_frames: false,
            },
            Preset::Signal => Rules {
                title: "Signal animated sticker",
                formats: &[Format::Png],
                canvas: CanvasRule::Exact {
                    width: 512,
                    height: 512,
                },
                max_duration_secs: Some(3.0),
                max_bytes: 300 * KB,
                ..Preset::Discord.rules()
            },
        }
    }
}

impl fmt::Display for Preset {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.name())
    }
}

impl FromStr for Preset {
    type Err = Error;

    fn from_str(s: &str) -> Result<Self> {
        let want = s.trim().to_ascii_lowercase();
        Preset::ALL
            .into_iter()
            .find(|p| p.name() == want)
            .ok_or_else(|| {
                Error::Invalid(format!(
                    "unknown preset `{s}`; choose one of: {}",
                    Preset::names()
                ))
            })
    }
}

impl serde::Serialize for Preset {
    fn serialize<S: serde::Serializer>(&self, s: S) -> std::result::Result<S::Ok, S::Error> {
        s.serialize_str(self.name())
    }
}

impl<'de> serde::Deserialize<'de> for Preset {
    fn deserialize<D: serde::Deserializer<'de>>(d: D) -> std::result::Result<Self, D::Error> {
        let s = String::deserialize(d)?;
        s.parse().map_err(serde::de::Error::custom)
    }
}

/// What the user asks of an export on top of the platform rules.
#[derive(Debug, Clone, Copy, PartialEq, serde::Serialize, serde::Deserialize)]
#[serde(default)]
pub struct FitOptions {
    /// Frame rate to resample to (still capped by the preset).
    pub fps: Option<f64>,
    /// Canvas size; with a preset it must satisfy the preset's canvas rule.
    pub size: Option<(u32, u32)>,
    /// Keep only `[start, end)` seconds of the source.
    pub trim: Option<(f64, f64)>,
    /// How the clip is placed on a canvas of another aspect ratio.
    pub fit: Fit,
    /// What happens to a clip longer than the platform allows.
    pub time: TimeFit,
}

impl Default for FitOptions {
    fn default() -> Self {
        FitOptions {
            fps: None,
            size: None,
            trim: None,
            fit: Fit::Contain,
            time: TimeFit::Cut,
        }
    }
}

/// Fitting a clip that is longer than the platform allows (`--fit-time`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, serde::Serialize, serde::Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum TimeFit {
    /// Keep the start, drop the rest.
    #[default]
    Cut,
    /// Play the whole clip faster, so the motion stays complete (a loop still closes).
    Speed,
}

impl TimeFit {
    /// The name used by `--fit-time`.
    pub fn name(self) -> &'static str {
        match self {
            TimeFit::Cut => "cut",
            TimeFit::Speed => "speed",
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn names_round_trip_and_unknown_names_list_choices() {
        for p in Preset::ALL {
            assert_eq!(p.name().parse::<Preset>().expect("parse"), p);
            assert_eq!(
                serde_json::to_string(&p).expect("json"),
                format!("\"{}\"", p.name())
            );
        }
        assert_eq!(
            "WhatsApp".parse::<Preset>().expect("case"),
            Preset::WhatsApp
        );
        let err = "tiktok".parse::<Preset>().expect_err("unknown");
        assert!(err.to_string().contains("telegram-emoji"), "{err}");
    }

    #[test]
    fn rules_match_the_platform_table() {
        let tg = Preset::Telegram.rules();
        assert_eq!(tg.max_bytes, 256_000);
        assert_eq!(tg.formats, &[Format::WebM]);
        assert_eq!(tg.max_fps, Some(30));
        assert!(tg.no_audio);
        let emoji = Preset::TelegramEmoji.rules();
        assert_eq!(
            emoji.canvas,
            CanvasRule::Exact {
                width: 100,
                height: 100
            }
        );
        // Telegram's stickers page, "Video requirements" for custom emoji: ≤ 256 KB (64 KB is
        // the animated `.tgs` limit, which an earlier table here had copied).
        assert_eq!(emoji.max_bytes, 256_000);
        assert_eq!(emoji.max_duration_secs, Some(3.0));
        let wa = Preset::WhatsApp.rules();
        assert_eq!(wa.min_frame_delay_ms, Some(8));
        assert_eq!(wa.cap_for(1), 100_000);
        assert_eq!(wa.cap_for(30), 500_000);
        let line = Preset::Line.rules();
        assert_eq!(line.frame_range, Some((5, 20)));
        assert!(line.distinct_frames);
        let sig = Preset::Signal.rules();
        assert_eq!(sig.max_bytes, 300_000);
        assert_eq!(sig.max_duration_secs, Some(3.0));
        assert_eq!(sig.formats, &[Format::Png]);
        assert_eq!(Preset::Discord.rules().max_bytes, 512_000);
        assert_eq!(Preset::TelegramStatic.default_extension(), "png");
        let help = Preset::help_list();
        assert_eq!(help.lines().count(), Preset::ALL.len());
        assert!(help.contains("≤ 256 000 bytes"), "{help}");
    }
}

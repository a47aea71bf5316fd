//! Training the embedded generator ([`crate::model::generator`]): captioned sticker clips
//! composited over the key colour, encoded by a frozen trained codec, and the UNet taught to
//! predict the noise (ε) or the velocity (v), as the model's schedule says.
//!
//! **Samples.** Sample `i` is a function of the run seed (as in [`super::dataset`]): a
//! procedural clip ([`super::synth`]; subject, motion and extras known from its `ClipSpec`) or
//! an artwork clip ([`super::art`]; the file name's words, the `ArtSpec` motion and extras),
//! rendered at the training size, composited over the key colour, and captioned with word
//! ids: subject words (at most [`MAX_SUBJECT_WORDS`]), one colour (from the name if it has one,
//! else the dominant colour of the first frame, if one colour covers at least
//! [`DOMINANT_SHARE`] of the opaque pixels), the motion, and modifiers (glow, shadow, trails,
//! small/big for artwork). Then **caption dropout**: the whole caption is dropped with
//! probability `caption_drop` (the null conditioning classifier-free guidance needs) and each
//! remaining word with `word_drop` (so one- and two-word prompts are in the training
//! distribution too).
//!
//! **Loss.** Per clip a timestep `t` ~ U{0..999} and Gaussian noise, both from a generator seeded
//! by (run seed, step), so a resumed run draws what the uninterrupted one would have; the
//! normalised latent `x0` becomes `√ᾱ_t x0 + √(1-ᾱ_t) ε` and the loss is `MSE(unet(x_t, t,
//! words), target)` with target ε, or `v = √ᾱ_t ε − √(1-ᾱ_t) x0` for the zero-terminal-SNR
//! schedule new generators use (at t = 999 there, x_t is pure noise and v = −x0: only the words
//! can say what to draw).
//!
//! **Focus.** `--art-subjects` ([`ArtLibrary::focus`] with [`focus_words`]) trains on the
//! artwork named after a list of subjects only, each subject drawn equally often. A CPU run
//! sees a few thousand clips: spread over ten thousand files that is less than one look per
//! file, spread over ten subjects hundreds per subject. (That alone did not make the model
//! follow its prompt; see the model card.)

use std::collections::HashSet;
use std::path::Path;
use std::sync::Arc;

use candle_core::{DType, Device, Tensor};
use candle_nn::{VarBuilder, VarMap};
use image::RgbaImage;

use super::art::{ArtLibrary, ArtMotion, ArtSpec};
use super::dataset::{Batch, Sample, seed_in};
use super::run::LossOut;
use super::synth::{ClipSpec, Motion, Rng, Subject, SynthConfig, mix, render};
use super::{Background, Degradation, Split};
use crate::media::Animation;
use crate::model::codec::LatentCodec;
use crate::model::generator::words::{SYNTH_SUBJECTS, strip_tone, subject_words, tokens};
use crate::model::generator::{GenConfig, GenModel, PAD, Prediction, Vocabulary, WordGroup};
use crate::{Error, Result};

/// Column names of [`generator_loss`]'s terms. The one term keeps its first name, `eps_mse`,
/// so older runs' logs and checkpoints still read; with v-prediction it is the MSE to v.
pub const TERMS: [&str; 1] = ["eps_mse"];

/// Subject words kept from one artwork name (in name order).
pub const MAX_SUBJECT_WORDS: usize = 4;

/// Share of opaque pixels one colour class must cover to name the clip's colour.
pub const DOMINANT_SHARE: f32 = 0.45;

fn model_err(source: candle_core::Error) -> Error {
    Error::Candle {
        context: "generator training".into(),
        source,
    }
}

/// The vocabulary word of a procedural subject.
pub fn subject_word(s: Subject) -> &'static str {
    let i = Subject::ALL.iter().position(|&x| x == s).unwrap_or(0);
    SYNTH_SUBJECTS[i].0
}

/// The vocabulary word of a procedural motion.
pub fn motion_word(m: Motion) -> &'static str {
    match m {
        Motion::Bounce => "bounce",
        Motion::Spin => "spin",
        Motion::SquashStretch => "squash",
        Motion::Wave => "wave",
        Motion::Walk => "walk",
        Motion::Morph => "morph",
        Motion::Pulse => "pulse",
    }
}

/// The vocabulary word of an artwork motion (zoom breathes in scale like pulse).
pub fn art_motion_word(m: ArtMotion) -> &'static str {
    match m {
        ArtMotion::Bounce => "bounce",
        ArtMotion::Spin => "spin",
        ArtMotion::SquashStretch => "squash",
        ArtMotion::Wave => "wave",
        ArtMotion::Walk => "walk",
        ArtMotion::Zoom => "pulse",
        ArtMotion::Float => "float",
        ArtMotion::Turn => "turn",
    }
}

/// The colour class of one RGB pixel (values in [0, 1]), by hue, saturation and value.
pub fn colour_class(rgb: [f32; 3]) -> &'static str {
    let [r, g, b] = rgb;
    let max = r.max(g).max(b);
    let min = r.min(g).min(b);
    let v = max;
    let s = if max > 0.0 { (max - min) / max } else { 0.0 };
    if v < 0.2 {
        return "black";
    }
    if s < 0.18 {
        return if v > 0.85 { "white" } else { "grey" };
    }
    let d = (max - min).max(1e-6);
    let h = if max == r {
        60.0 * ((g - b) / d).rem_euclid(6.0)
    } else if max == g {
        60.0 * ((b - r) / d + 2.0)
    } else {
        60.0 * ((r - g) / d + 4.0)
    };
    match h {
        h if !(15.0..345.0).contains(&h) => {
            if s < 0.5 && v > 0.8 {
                "pink"
            } else if v < 0.45 {
                "brown"
            } else {
                "red"
            }
        }
        h if h < 40.0 => {
            if v < 0.6 {
                "brown"
            } else {
                "orange"
            }
        }
        h if h < 70.0 => {
            if v < 0.45 {
                "brown"
            } else {
                "yellow"
            }
        }
        h if h < 170.0 => "green",
        h if h < 255.0 => "blue",
        h if h < 290.0 => "purple",
        _ => "pink",
    }
}

/// The colour covering at least [`DOMINANT_SHARE`] of a straight-alpha image's opaque
/// (alpha ≥ 50 %) pixels, if any.
pub fn dominant_colour(img: &RgbaImage) -> Option<&'static str> {
    let mut counts: Vec<(&'static str, usize)> = Vec::new();
    let mut total = 0usize;
    for p in img.pixels() {
        if p[3] < 128 {
            continue;
        }
        total += 1;
        let c = colour_class([p[0], p[1], p[2]].map(|v| f32::from(v) / 255.0));
        match counts.iter_mut().find(|(n, _)| *n == c) {
            Some(e) => e.1 += 1,
            None => counts.push((c, 1)),
        }
    }
    let (name, n) = counts.into_iter().max_by_key(|&(_, n)| n)?;
    (n as f32 >= DOMINANT_SHARE * total as f32).then_some(name)
}

/// Lower-case stems of artwork files, codepoint names spelled out ([`art_stem`]).
pub fn stems_of(files: &[&Path]) -> Vec<String> {
    files.iter().map(|p| art_stem(p)).collect()
}

/// Code points of emoji sequences that carry no words of their own: joiner, variation
/// selectors, keycap, tags and regional indicators (flags would spell only letters).
fn silent(c: u32) -> bool {
    matches!(c, 0x200d | 0xfe0e | 0xfe0f | 0x20e3)
        || (0xe0000..=0xe007f).contains(&c)
        || (0x1f1e6..=0x1f1ff).contains(&c)
        || is_tone(c)
}

/// The Fitzpatrick skin-tone modifiers.
fn is_tone(c: u32) -> bool {
    (0x1f3fb..=0x1f3ff).contains(&c)
}

/// Words of Unicode character names that describe the glyph, not the thing drawn
/// ("HEAVY BLACK HEART" is a red heart in every emoji set).
const GLYPH_WORDS: [&str; 5] = ["black", "white", "heavy", "sign", "symbol"];

/// The code points of a stem written as a code point sequence (`1f600`, `1f468-200d-1f469`,
/// `0023-FE0F-20E3`: Twemoji and OpenMoji file names), or None for a stem of words.
fn codepoints(stem: &str) -> Option<Vec<u32>> {
    let parts: Vec<&str> = stem.split(['-', '_']).collect();
    let hex = |p: &&str| (4..=6).contains(&p.len()) && p.chars().all(|c| c.is_ascii_hexdigit());
    if !parts.iter().all(hex) || !stem.chars().any(|c| c.is_ascii_digit()) {
        return None;
    }
    parts
        .iter()
        .map(|p| u32::from_str_radix(p, 16).ok())
        .collect()
}

/// An artwork file's stem as words: lower case, and a code point name spelled out with the
/// characters' Unicode names (`1f431.svg` -> `cat-face`), skin tones and joiners dropped, so
/// the two thirds of the artwork named by code point caption with subjects too.
pub fn art_stem(path: &Path) -> String {
    let stem = path
        .file_stem()
        .map(|s| s.to_string_lossy().to_lowercase())
        .unwrap_or_default();
    let Some(cps) = codepoints(&stem) else {
        return stem;
    };
    let words: Vec<String> = cps
        .into_iter()
        .filter(|&c| !silent(c))
        .filter_map(char::from_u32)
        .filter_map(unicode_names2::name)
        .flat_map(|n| tokens(&n.to_string()))
        .filter(|w| !GLYPH_WORDS.contains(&w.as_str()))
        .collect();
    if words.is_empty() {
        stem
    } else {
        words.join("-")
    }
}

/// Words that make an artwork a picture of people (kissing couples, families, professions):
/// left out of a subject focus, whose "heart" should not be a couple with a heart.
const PERSON_WORDS: [&str; 12] = [
    "man", "woman", "person", "adult", "boy", "girl", "people", "couple", "family", "men", "women",
    "kiss",
];

/// An artwork's words for [`ArtLibrary::focus`]: None for skin-tone variants (one design five
/// times) and pictures of people; `stems` is every stem of the set (see [`strip_tone`]).
pub fn focus_words(path: &Path, stems: &HashSet<String>) -> Option<Vec<String>> {
    let raw = path
        .file_stem()
        .map(|s| s.to_string_lossy().to_lowercase())
        .unwrap_or_default();
    if codepoints(&raw).is_some_and(|cps| cps.into_iter().any(is_tone)) {
        return None;
    }
    let stem = art_stem(path);
    if strip_tone(&stem, stems) != stem {
        return None;
    }
    let words = tokens(&stem);
    (!words.iter().any(|w| PERSON_WORDS.contains(&w.as_str()))).then_some(words)
}

/// The vocabulary of a run: the fixed words plus the `cap` most frequent subject words of the
/// artwork's *training* split (validation names never shape the vocabulary).
pub fn build_vocabulary(art: Option<&ArtLibrary>, cap: usize) -> Vocabulary {
    let stems = art
        .map(|a| stems_of(&a.files(Split::Train)))
        .unwrap_or_default();
    Vocabulary::new(&subject_words(&stems, cap, 1))
}

/// What generator samples are made of.
#[derive(Clone)]
pub struct GenData {
    /// Sticker side in pixels (a multiple of 8 x the UNet's size multiple).
    pub size: u32,
    pub frames: u32,
    pub art: Option<Arc<ArtLibrary>>,
    /// Share of artwork samples (the rest procedural) when `art` is set.
    pub art_share: f32,
    /// Stems of every artwork file (to tell skin-tone suffixes from words).
    pub stems: Arc<HashSet<String>>,
    pub key: [f32; 3],
    pub vocab: Arc<Vocabulary>,
    /// Word slots per caption (the conditioner's `max_tokens`).
    pub max_tokens: usize,
    pub caption_drop: f32,
    pub word_drop: f32,
}

impl std::fmt::Debug for GenData {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("GenData")
            .field("size", &self.size)
            .field("frames", &self.frames)
            .field("art", &self.art.as_ref().map(|a| a.len()))
            .field("art_share", &self.art_share)
            .field("key", &self.key)
            .field("caption_drop", &self.caption_drop)
            .field("word_drop", &self.word_drop)
            .finish()
    }
}

impl GenData {
    /// Data for `cfg`'s size, frames, key and word slots, with the default dropout (10 % of
    /// captions, 15 % of words).
    pub fn new(cfg: &GenConfig, vocab: Arc<Vocabulary>, art: Option<Arc<ArtLibrary>>) -> Self {
        let stems = art
            .as_ref()
            .map(|a| {
                let mut all = a.files(Split::Train);
                all.extend(a.files(Split::Val));
                stems_of(&all).into_iter().collect()
            })
            .unwrap_or_default();
        Self {
            size: cfg.size as u32,
            frames: cfg.frames as u32,
            art,
            art_share: 0.5,
            stems: Arc::new(stems),
            key: cfg.key_rgb(),
            vocab,
            max_tokens: cfg.conditioner.max_tokens,
            caption_drop: 0.1,
            word_drop: 0.15,
        }
    }

    /// The configuration a resumed run must match.
    pub fn to_json(&self) -> serde_json::Value {
        serde_json::json!({
            "size": self.size,
            "frames": self.frames,
            "art_files": self.art.as_ref().map(|a| a.count(Split::Train) + a.count(Split::Val)),
            "art_share": self.art_share,
            "key": self.key,
            "caption_drop": self.caption_drop,
            "word_drop": self.word_drop,
            "vocabulary": serde_json::to_value(&*self.vocab).unwrap_or_default(),
        })
    }

    fn id(&self, word: &str) -> Option<u32> {
        self.vocab.id(word)
    }

    fn group(&self, id: u32) -> Option<WordGroup> {
        self.vocab.word(id).map(|e| e.group)
    }

    /// Caption words of a procedural clip, before dropout.
    pub fn caption_synth(&self, spec: &ClipSpec, clip: &Animation) -> Vec<u32> {
        let mut words = vec![subject_word(spec.subject)];
        words.extend(clip.frames.first().and_then(|f| dominant_colour(&f.image)));
        words.push(motion_word(spec.motion));
        for (on, w) in [
            (spec.glow, "glowing"),
            (spec.shadow, "shadow"),
            (spec.streaks, "trails"),
        ] {
            if on {
                words.push(w);
            }
        }
        self.dedup(words.iter().filter_map(|w| self.id(w)))
    }

    /// Caption words of an artwork clip, before dropout: the name's subject and colour words
    /// (motion words in a name describe a pose, not the animation, and are left out).
    pub fn caption_art(&self, spec: &ArtSpec, clip: &Animation) -> Vec<u32> {
        let mut out = self.caption_file(&spec.file, clip.frames.first().map(|f| &f.image));
        out.extend(self.id(art_motion_word(spec.motion)));
        let size = if spec.fill < 0.4 {
            Some("small")
        } else if spec.fill > 0.55 {
            Some("big")
        } else {
            None
        };
        for (on, w) in [
            (spec.glow, Some("glowing")),
            (spec.shadow, Some("shadow")),
            (spec.trails, Some("trails")),
            (true, size),
        ] {
            if let (true, Some(w)) = (on, w) {
                out.extend(self.id(w));
            }
        }
        self.dedup(out.into_iter())
    }

    /// The words an artwork file brings whatever its animation: the name's subject words and
    /// colour, else the dominant colour of `look` (straight alpha; a frame or the artwork).
    pub fn caption_file(&self, file: &Path, look: Option<&RgbaImage>) -> Vec<u32> {
        let stem = art_stem(file);
        let base = strip_tone(&stem, &self.stems);
        let (ids, _) = self.vocab.encode(&tokens(base).join(" "));
        let mut out: Vec<u32> = ids
            .iter()
            .copied()
            .filter(|&i| self.group(i) == Some(WordGroup::Subject))
            .take(MAX_SUBJECT_WORDS)
            .collect();
        let named = ids
            .iter()
            .copied()
            .find(|&i| self.group(i) == Some(WordGroup::Colour));
        out.extend(named.or_else(|| look.and_then(dominant_colour).and_then(|w| self.id(w))));
        out
    }

    fn dedup(&self, ids: impl Iterator<Item = u32>) -> Vec<u32> {
        let mut out = Vec::new();
        for i in ids {
            if !out.contains(&i) {
                out.push(i);
            }
        }
        out
    }

    /// Applies caption and word dropout and pads to `max_tokens`.
    pub fn drop_and_pad(&self, ids: &[u32], rng: &mut Rng) -> Vec<u32> {
        let mut out: Vec<u32> = if rng.chance(self.caption_drop) {
            Vec::new()
        } else {
            ids.iter()
                .copied()
                .filter(|_| !rng.chance(self.word_drop))
                .collect()
        };
        out.truncate(self.max_tokens);
        out.resize(self.max_tokens, PAD);
        out
    }

    /// A clip for a seed with its caption (before dropout).
    pub fn clip(&self, clip_seed: u64) -> Result<(Animation, Vec<u32>)> {
        let mut rng = Rng::new(mix(clip_seed, 0x6E4));
        let cfg = SynthConfig {
            width: self.size,
            height: self.size,
            frames: self.frames,
            fps: 12.0,
        };
        match &self.art {
            Some(lib) if rng.chance(self.art_share) => {
                let spec = lib.spec(Split::Train, clip_seed)?;
                let clip = lib.render(&spec, &cfg)?;
                let words = self.caption_art(&spec, &clip);
                Ok((clip, words))
            }
            _ => {
                let spec = ClipSpec::from_seed(clip_seed);
                let clip = render(&spec, &cfg)?;
                let words = self.caption_synth(&spec, &clip);
                Ok((clip, words))
            }
        }
    }
}

/// File name of a GPU training kit's description (see [`export_kit`]).
pub const KIT_FILE: &str = "kit.json";

/// Writes the artwork half of a *GPU training kit* into `dir`: every training file of
/// `data`'s library rasterised with its long side `side` px (straight-alpha PNGs under
/// `sprites/`) and [`KIT_FILE`], which holds each sprite's caption words ([`GenData::caption_file`]),
/// the focus pools a clip draws from, the word ids of the motions and modifiers, and the data
/// settings. Why: `packaging/gpu/train_generator.py` animates, composites and encodes the
/// clips on a GPU, where rendering SVGs is not possible, so the words and rasters must come
/// from here to mean what they mean to this trainer. Files that fail to rasterise are left
/// out (and counted). Returns (sprites written, files left out).
pub fn export_kit(data: &GenData, dir: &Path, side: u32) -> Result<(usize, usize)> {
    let lib = data
        .art
        .as_ref()
        .ok_or_else(|| Error::Invalid("a GPU training kit needs artwork (--art)".into()))?;
    let sprites_dir = dir.join("sprites");
    std::fs::create_dir_all(&sprites_dir)
        .map_err(|e| Error::io("create folder", &sprites_dir, e))?;
    let pools = lib.pools(Split::Train);
    let mut index: std::collections::HashMap<&Path, usize> = std::collections::HashMap::new();
    let mut sprites = Vec::new();
    let mut failed = 0usize;
    let mut pool_ids: Vec<Vec<usize>> = Vec::new();
    for pool in &pools {
        let mut ids = Vec::new();
        for &file in pool {
            if let Some(&i) = index.get(file) {
                ids.push(i);
                continue;
            }
            let Ok(raster) = lib.sprite(file, side) else {
                failed += 1;
                continue;
            };
            let mut straight = (*raster).clone();
            crate::media::animation::unpremultiply(&mut straight);
            let i = sprites.len();
            let name = format!("sprites/{i:05}.png");
            let mut bytes = Vec::new();
            straight
                .write_to(
                    &mut std::io::Cursor::new(&mut bytes),
                    image::ImageFormat::Png,
                )
                .map_err(|e| Error::Model(format!("encode sprite {}: {e}", file.display())))?;
            crate::media::atomic::write_atomic(&dir.join(&name), &bytes)?;
            let rel = file.strip_prefix(lib.root()).unwrap_or(file);
            sprites.push(serde_json::json!({
                "png": name,
                "file": rel.display().to_string(),
                "words": data.caption_file(file, Some(&straight)),
            }));
            index.insert(file, i);
            ids.push(i);
        }
        if !ids.is_empty() {
            pool_ids.push(ids);
        }
    }
    if sprites.is_empty() {
        return Err(Error::Invalid(
            "no artwork could be rasterised for the kit".into(),
        ));
    }
    let motions: Vec<serde_json::Value> = ArtMotion::ALL
        .iter()
        .map(|&m| {
            serde_json::json!({
                "motion": serde_json::to_value(m).unwrap_or_default(),
                "word": data.id(art_motion_word(m)),
            })
        })
        .collect();
    let modifiers: serde_json::Map<String, serde_json::Value> =
        ["glowing", "shadow", "trails", "small", "big"]
            .iter()
            .map(|w| (w.to_string(), serde_json::json!(data.id(w))))
            .collect();
    let kit = serde_json::json!({
        "size": data.size,
        "frames": data.frames,
        "key": data.key,
        "max_tokens": data.max_tokens,
        "pad": PAD,
        "caption_drop": data.caption_drop,
        "word_drop": data.word_drop,
        "sprite_side": side,
        "motions": motions,
        "modifiers": modifiers,
        "pools": pool_ids,
        "sprites": sprites,
    });
    let text = serde_json::to_string_pretty(&kit)
        .map_err(|e| Error::Model(format!("kit description: {e}")))?;
    crate::media::atomic::write_atomic(&dir.join(KIT_FILE), text.as_bytes())?;
    Ok((sprites.len(), failed))
}

/// Sample `index` of a run seeded `seed`: the clip over the key colour (`rgb`), its alpha, and
/// the dropped-out, padded caption (`labels`). `fg` is left empty (nothing here reads it).
pub fn make_gen_sample(data: &GenData, seed: u64, index: u64) -> Result<Sample> {
    let clip_seed = seed_in(seed, index, Split::Train);
    let (clip, words) = data.clip(clip_seed)?;
    let mut rng = Rng::new(mix(clip_seed, 0xCA9));
    let labels = data.drop_and_pad(&words, &mut rng);
    let s = data.size as usize;
    let plane = s * s;
    let t = clip.frames.len();
    let mut rgb = vec![0f32; t * 3 * plane];
    let mut alpha = vec![0f32; t * plane];
    for (i, f) in clip.frames.iter().enumerate() {
        for (k, p) in f.image.pixels().enumerate().take(plane) {
            let a = f32::from(p[3]) / 255.0;
            alpha[i * plane + k] = a;
            for c in 0..3 {
                rgb[(i * 3 + c) * plane + k] =
                    f32::from(p[c]) / 255.0 * a + data.key[c] * (1.0 - a);
            }
        }
    }
    Ok(Sample {
        frames: t,
        size: s,
        rgb,
        alpha,
        fg: Vec::new(),
        background: Background::Plain,
        degradation: Degradation::None,
        labels,
        panning: false,
        plate: Vec::new(),
        plate_fit: String::new(),
    })
}

/// A fresh generator on its own `VarMap`, seeded (the codec's variables are overwritten by
/// the trained codec afterwards).
pub fn build(cfg: &GenConfig, vocab: Vocabulary, device: &Device) -> Result<(VarMap, GenModel)> {
    let varmap = VarMap::new();
    let vb = VarBuilder::from_varmap(&varmap, DType::F32, device);
    let model = GenModel::new(cfg, vocab, vb).map_err(model_err)?;
    super::decoder::seeded_init(&varmap, 0x6E7E)?;
    Ok((varmap, model))
}

/// The variables generator training optimises: everything but the frozen codec.
pub fn trainable_names(varmap: &VarMap) -> Vec<String> {
    let data = varmap.data().lock().unwrap_or_else(|p| p.into_inner());
    let mut names: Vec<String> = data
        .keys()
        .filter(|n| !n.starts_with("codec."))
        .cloned()
        .collect();
    names.sort();
    names
}

/// Per-channel mean and standard deviation of the codec latents of `n` samples (from a seed
/// of their own, so they are not the first training samples), rounded to 4 decimals.
pub fn latent_stats(
    codec: &dyn LatentCodec,
    data: &GenData,
    seed: u64,
    n: usize,
    device: &Device,
) -> Result<([f64; 4], [f64; 4])> {
    let mut sum = [0f64; 4];
    let mut sq = [0f64; 4];
    let mut count = 0f64;
    for i in 0..n.max(1) {
        let s = make_gen_sample(data, mix(seed, 0x57A7), i as u64)?;
        let x =
            Tensor::from_slice(&s.rgb, (s.frames, 3, s.size, s.size), device).map_err(model_err)?;
        let z = codec.encode(&x).map_err(model_err)?;
        let (b, c, h, w) = z.dims4().map_err(model_err)?;
        let v: Vec<f32> = z
            .transpose(0, 1)
            .and_then(|t| t.flatten_all())
            .and_then(|t| t.to_vec1())
            .map_err(model_err)?;
        let per = b * h * w;
        for ch in 0..c.min(4) {
            for &x in &v[ch * per..(ch + 1) * per] {
                sum[ch] += f64::from(x);
                sq[ch] += f64::from(x) * f64::from(x);
            }
        }
        count += per as f64;
    }
    let round = |x: f64| (x * 1e4).round() / 1e4;
    let mean = sum.map(|s| round(s / count));
    let mut std = [1f64; 4];
    for c in 0..4 {
        let var = sq[c] / count - (sum[c] / count).powi(2);
        std[c] = round(var.max(1e-8).sqrt()).max(1e-3);
    }
    Ok((mean, std))
}

/// Standard normal samples from a seeded generator (Box-Muller).
fn normals(rng: &mut Rng, n: usize) -> Vec<f32> {
    (0..n)
        .map(|_| {
            let (u1, u2) = (rng.f32().max(1e-7), rng.f32());
            (-2.0 * u1.ln()).sqrt() * (std::f32::consts::TAU * u2).cos()
        })
        .collect()
}

/// The prediction loss of one batch (MSE to ε or to v, as the model's schedule says);
/// `noise_seed` fixes the timesteps and noise (derive it from the run seed and the step).
pub fn generator_loss(
    model: &GenModel,
    alphas_cumprod: &[f64],
    batch: &Batch,
    noise_seed: u64,
    device: &Device,
) -> Result<LossOut> {
    let (clips, frames, s) = (batch.clips, batch.frames, batch.size);
    let n = clips * frames;
    let l = model.conditioner.config().max_tokens;
    if batch.labels.len() != clips * l {
        return Err(Error::Model(format!(
            "generator training: {} caption ids for {clips} clips of {l} slots",
            batch.labels.len()
        )));
    }
    let steps = alphas_cumprod.len();
    let mut rng = Rng::new(noise_seed);
    let ts: Vec<usize> = (0..clips).map(|_| rng.below(steps)).collect();
    let mut inner = || -> candle_core::Result<LossOut> {
        let x = Tensor::from_slice(&batch.rgb, (n, 3, s, s), device)?;
        let z = model.codec.encode(&x)?.detach();
        let x0 = model.to_diffusion(&z)?;
        let dims = x0.dims().to_vec();
        let mut eps =
            Tensor::from_vec(normals(&mut rng, x0.elem_count()), dims.as_slice(), device)?;
        let share = model.config.frame_noise_share;
        if share > 0.0 {
            // Mixed noise: one draw per clip shared by its frames (see `GenConfig`).
            let per = x0.elem_count() / n;
            let shared = Tensor::from_vec(normals(&mut rng, clips * per), (clips, 1, per), device)?;
            eps = crate::model::diffusion::mix_frame_noise(
                &eps.reshape((clips, frames, per))?,
                &shared,
                share,
            )?
            .reshape(dims.as_slice())?;
        }
        let per_frame = |f: &dyn Fn(f64) -> f64| -> candle_core::Result<Tensor> {
            let v: Vec<f32> = ts
                .iter()
                .flat_map(|&t| std::iter::repeat_n(f(alphas_cumprod[t]) as f32, frames))
                .collect();
            Tensor::from_vec(v, (n, 1, 1, 1), device)
        };
        let a = per_frame(&|ac| ac.sqrt())?;
        let b = per_frame(&|ac| (1.0 - ac).sqrt())?;
        let xt = (x0.broadcast_mul(&a)? + eps.broadcast_mul(&b)?)?;
        let ids = Tensor::from_slice(&batch.labels, (clips, l), device)?;
        let ctx = model.conditioner.context_batch(&ids)?;
        let t = Tensor::from_vec(
            ts.iter().map(|&t| t as f32).collect::<Vec<_>>(),
            clips,
            device,
        )?;
        let target = match model.config.schedule.prediction {
            Prediction::Epsilon => eps,
            // v = sqrt(a) eps - sqrt(1 - a) x0
            Prediction::V => (eps.broadcast_mul(&a)? - x0.broadcast_mul(&b)?)?,
        };
        let pred = model.unet.forward(&xt, &t, &ctx, frames)?;
        let mse = (pred - target)?.sqr()?.mean_all()?;
        let v = mse.to_scalar::<f32>()?;
        Ok((mse, vec![(TERMS[0], v)]))
    };
    inner().map_err(model_err)
}

#[cfg(test)]
mod tests;

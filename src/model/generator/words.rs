//! The embedded generator's prompt language: a small, closed vocabulary of words in four
//! groups (subjects, colours, motions, modifiers), and the learned word embeddings that turn a
//! prompt into the denoiser's context tensor.
//!
//! Why a closed vocabulary and not CLIP: the default model is trained on a few thousand clips on
//! two CPU cores, so it can only ever learn words its captions contain. Saying exactly which words
//! those are (the UI lists [`Vocabulary::groups`]) and reporting every other word of a prompt is
//! more honest than a text encoder that accepts anything and silently ignores most of it.
//!
//! **Tokenising.** Lower-case, split on anything that is not a letter, digit or apostrophe,
//! drop a trailing `'s`. A word is looked up as written, then with a plural ending removed
//! (`hearts` -> `heart`, `cherries` -> `cherry`, `boxes` -> `box`). Words of the
//! [`Vocabulary::ignored`] list (articles and glue such as "a", "with", "and", plus words every
//! sticker shares such as "sticker", "animated") are dropped; they are listed too, so the UI can
//! say so. Everything else unknown is returned to the caller. Known words are de-duplicated
//! (synonyms share one id: "spin" and "spinning" are one word to the model); their order does
//! not matter (the model has no position embeddings: a prompt is a bag of words).
//!
//! **Where the words come from.** Colours, motions and modifiers are fixed lists with synonyms
//! ([`fixed_entries`]). Subjects are the procedural generator's kinds under plain words
//! ([`SYNTH_SUBJECTS`]) plus the most frequent content words of the training split's named
//! artwork (Fluent Emoji file names such as `red-heart.svg`; see [`subject_words`]). Code point
//! file names (Twemoji, OpenMoji: `1f431.svg`) are spelled out with the characters' Unicode
//! names before that (`cat-face`; `crate::train::generator::art_stem`).

use std::collections::{BTreeMap, HashMap, HashSet};

use candle_core::{DType, Device, Result, Tensor, bail};
use candle_nn::{Embedding, Module, VarBuilder};
use serde::{Deserialize, Serialize};

/// The id of the padding / "no word" slot. A context of only padding is the null
/// conditioning of classifier-free guidance; its embedding is learned like any word's.
pub const PAD: u32 = 0;

/// Which kind of word an entry is.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum WordGroup {
    Subject,
    Colour,
    Motion,
    Modifier,
}

impl WordGroup {
    pub const ALL: [WordGroup; 4] = [
        WordGroup::Subject,
        WordGroup::Colour,
        WordGroup::Motion,
        WordGroup::Modifier,
    ];

    /// The group's name for the UI.
    pub fn name(self) -> &'static str {
        match self {
            WordGroup::Subject => "subjects",
            WordGroup::Colour => "colours",
            WordGroup::Motion => "motions",
            WordGroup::Modifier => "modifiers",
        }
    }
}

/// One word the model knows, with the other spellings that mean the same to it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Entry {
    pub word: String,
    pub group: WordGroup,
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub synonyms: Vec<String>,
}

/// The words a generator was trained with. Ids are `1 + index` into `entries` ([`PAD`] is 0).
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct Vocabulary {
    entries: Vec<Entry>,
    ignored: Vec<String>,
    #[serde(skip)]
    lookup: HashMap<String, u32>,
}

impl PartialEq for Vocabulary {
    fn eq(&self, other: &Self) -> bool {
        self.entries == other.entries && self.ignored == other.ignored
    }
}

/// Words dropped from prompts without a report (they are listed by [`Vocabulary::ignored`]):
/// articles and glue, and words that every training clip shares.
pub const IGNORED: &[&str] = &[
    "a",
    "an",
    "the",
    "with",
    "and",
    "of",
    "in",
    "on",
    "its",
    "is",
    "that",
    "very",
    "sticker",
    "emoji",
    "animated",
    "animation",
    "cute",
];

/// The procedural generator's subjects (`crate::train::Subject`, in its order) under plain
/// words, with synonyms. "ring" is not claimed for the donut: Fluent Emoji has a ring.
pub const SYNTH_SUBJECTS: [(&str, &[&str]); 8] = [
    ("donut", &["doughnut"]),
    ("chain", &["links", "link"]),
    ("character", &["creature", "critter"]),
    ("mug", &["cup"]),
    ("letters", &["lettering", "text", "letter"]),
    ("lattice", &["grid", "wheel"]),
    ("hairy", &["fuzzy", "furry", "fluffy"]),
    ("bug", &["insect", "winged"]),
];

/// Motion words. The procedural `Motion` and artwork `ArtMotion` names map onto these
/// (`crate::train::generator::motion_word`); art's `zoom` joins `pulse` (both breathe in
/// scale), `squash_stretch` is `squash`.
pub const MOTIONS: [(&str, &[&str]); 9] = [
    (
        "bounce",
        &[
            "bouncing", "bounces", "bouncy", "hop", "hopping", "jump", "jumping",
        ],
    ),
    (
        "spin",
        &[
            "spinning", "spins", "rotate", "rotating", "rotation", "twirl",
        ],
    ),
    (
        "squash",
        &[
            "squashing",
            "stretch",
            "stretching",
            "squish",
            "squishy",
            "squishing",
        ],
    ),
    (
        "wave",
        &[
            "waving", "waves", "wobble", "wobbling", "rock", "rocking", "tilt", "tilting",
        ],
    ),
    ("walk", &["walking", "walks", "stroll", "strolling"]),
    (
        "morph",
        &["morphing", "morphs", "shapeshift", "shapeshifting"],
    ),
    (
        "pulse",
        &[
            "pulsing",
            "pulses",
            "pulsate",
            "pulsating",
            "throb",
            "throbbing",
            "beat",
            "beating",
            "breathe",
            "breathing",
            "zoom",
            "zooming",
            "grow",
            "growing",
            "shrink",
            "shrinking",
        ],
    ),
    (
        "float",
        &[
            "floating", "floats", "drift", "drifting", "hover", "hovering",
        ],
    ),
    (
        "turn",
        &[
            "turning",
            "turns",
            "swivel",
            "swivelling",
            "look",
            "looking",
        ],
    ),
];

/// Colour words: [`colour_of`]'s classes.
pub const COLOURS: [(&str, &[&str]); 11] = [
    ("red", &["crimson", "scarlet"]),
    ("orange", &[]),
    ("yellow", &["gold", "golden"]),
    ("green", &["lime"]),
    ("blue", &["cyan", "teal", "turquoise", "navy", "azure"]),
    ("purple", &["violet", "lilac", "lavender"]),
    ("pink", &["magenta", "rose"]),
    ("brown", &["beige", "tan"]),
    ("black", &["dark"]),
    ("white", &[]),
    ("grey", &["gray", "silver"]),
];

/// Modifier words: the extras of the procedural and artwork clips.
pub const MODIFIERS: [(&str, &[&str]); 5] = [
    (
        "glowing",
        &["glow", "glows", "shiny", "shining", "bright", "halo"],
    ),
    ("shadow", &["shadows", "shadowed", "shaded"]),
    (
        "trails",
        &["trail", "streaks", "streak", "blur", "blurred", "blurry"],
    ),
    ("small", &["tiny", "little"]),
    ("big", &["large", "huge"]),
];

fn entries_of(group: WordGroup, list: &[(&str, &[&str])]) -> Vec<Entry> {
    list.iter()
        .map(|(w, syn)| Entry {
            word: w.to_string(),
            group,
            synonyms: syn.iter().map(|s| s.to_string()).collect(),
        })
        .collect()
}

/// The colour, motion and modifier entries every vocabulary has, plus the procedural subjects.
pub fn fixed_entries() -> Vec<Entry> {
    let mut v = entries_of(WordGroup::Subject, &SYNTH_SUBJECTS);
    v.extend(entries_of(WordGroup::Colour, &COLOURS));
    v.extend(entries_of(WordGroup::Motion, &MOTIONS));
    v.extend(entries_of(WordGroup::Modifier, &MODIFIERS));
    v
}

/// Splits text into lower-case word tokens (see the module docs).
pub fn tokens(text: &str) -> Vec<String> {
    text.to_lowercase()
        .split(|c: char| !(c.is_alphanumeric() || c == '\'' || c == '’'))
        .map(|w| {
            let w = w.trim_matches(|c| c == '\'' || c == '’');
            let w = w
                .strip_suffix("'s")
                .or_else(|| w.strip_suffix("’s"))
                .unwrap_or(w);
            w.replace(['\'', '’'], "")
        })
        .filter(|w| !w.is_empty())
        .collect()
}

/// Skin-tone suffixes of Fluent Emoji file names (`artist-medium-dark`): not words of the
/// design. `-light`/`-dark` alone are stripped only when a `-medium` sibling proves the file is
/// a tone variant (`traffic-light` keeps its light).
const TONES: [&str; 5] = [
    "-medium-light",
    "-medium-dark",
    "-medium",
    "-light",
    "-dark",
];

/// A file stem without its skin-tone suffix; `stems` is every stem of the set.
pub fn strip_tone<'a>(stem: &'a str, stems: &HashSet<String>) -> &'a str {
    for t in TONES {
        if let Some(base) = stem.strip_suffix(t) {
            let certain = t.starts_with("-medium");
            if certain || stems.contains(&format!("{base}-medium")) {
                return base;
            }
        }
    }
    stem
}

/// Whether a token is a word at all: codepoint names (`1f600`, `fe0f`) and single letters are
/// not.
pub fn is_word(token: &str) -> bool {
    let hex =
        token.chars().all(|c| c.is_ascii_hexdigit()) && token.chars().any(|c| c.is_ascii_digit());
    token.chars().count() >= 2 && token.chars().any(char::is_alphabetic) && !hex
}

/// The subject vocabulary of a set of artwork file stems: content words (not ignored, not
/// already a colour/motion/modifier word, not a codepoint), most frequent first (ties
/// alphabetical), at most `cap`, each occurring in at least `min_count` files. Stems are
/// de-duplicated after removing skin tones, so 5 tone variants count once; plurals of words
/// that also occur singular count as the singular.
pub fn subject_words(stems: &[String], cap: usize, min_count: usize) -> Vec<String> {
    let fixed = fixed_entries();
    let taken: HashSet<&str> = fixed
        .iter()
        .filter(|e| e.group != WordGroup::Subject)
        .flat_map(|e| std::iter::once(e.word.as_str()).chain(e.synonyms.iter().map(String::as_str)))
        .chain(IGNORED.iter().copied())
        .collect();
    let all: HashSet<String> = stems.iter().map(|s| s.to_lowercase()).collect();
    let bases: HashSet<&str> = all.iter().map(|s| strip_tone(s, &all)).collect();
    let mut counts: BTreeMap<String, usize> = BTreeMap::new();
    for base in bases {
        let words: HashSet<String> = tokens(base)
            .into_iter()
            .filter(|w| is_word(w) && !taken.contains(w.as_str()))
            .collect();
        for w in words {
            *counts.entry(w).or_default() += 1;
        }
    }
    // A plural whose singular is also a word counts for the singular (`hearts` -> `heart`;
    // encoding finds the singular of a plural prompt word anyway).
    let plurals: Vec<(String, String)> = counts
        .keys()
        .filter_map(|w| {
            let one = w.strip_suffix('s')?;
            counts
                .contains_key(one)
                .then(|| (w.clone(), one.to_string()))
        })
        .collect();
    for (many, one) in plurals {
        if let Some(n) = counts.remove(&many) {
            *counts.entry(one).or_default() += n;
        }
    }
    let mut ranked: Vec<(String, usize)> = counts
        .into_iter()
        .filter(|(_, n)| *n >= min_count.max(1))
        .collect();
    ranked.sort_by(|a, b| b.1.cmp(&a.1).then_with(|| a.0.cmp(&b.0)));
    ranked.into_iter().take(cap).map(|(w, _)| w).collect()
}

impl Vocabulary {
    /// A vocabulary of [`fixed_entries`] plus `subjects` (words already present, as a word or a
    /// synonym, are not added twice).
    pub fn new(subjects: &[String]) -> Self {
        let mut entries = fixed_entries();
        let mut seen: HashSet<String> = entries
            .iter()
            .flat_map(|e| std::iter::once(e.word.clone()).chain(e.synonyms.iter().cloned()))
            .collect();
        for s in subjects {
            let s = s.to_lowercase();
            if seen.insert(s.clone()) && !IGNORED.contains(&s.as_str()) {
                entries.push(Entry {
                    word: s,
                    group: WordGroup::Subject,
                    synonyms: Vec::new(),
                });
            }
        }
        Self::from_parts(entries, IGNORED.iter().map(|s| s.to_string()).collect())
            .unwrap_or_else(|_| Self::fixed_only())
    }

    fn fixed_only() -> Self {
        let entries = fixed_entries();
        let lookup = Self::index(&entries).unwrap_or_default();
        Self {
            entries,
            ignored: IGNORED.iter().map(|s| s.to_string()).collect(),
            lookup,
        }
    }

    fn index(entries: &[Entry]) -> std::result::Result<HashMap<String, u32>, String> {
        let mut lookup = HashMap::new();
        for (i, e) in entries.iter().enumerate() {
            for w in std::iter::once(&e.word).chain(&e.synonyms) {
                if let Some(prev) = lookup.insert(w.clone(), i as u32 + 1) {
                    return Err(format!(
                        "the word `{w}` is listed twice (as `{}` and `{}`)",
                        entries[prev as usize - 1].word,
                        e.word
                    ));
                }
            }
        }
        Ok(lookup)
    }

    /// Builds from stored parts (a model file's metadata), checking that no word is listed
    /// twice.
    pub fn from_parts(
        entries: Vec<Entry>,
        ignored: Vec<String>,
    ) -> std::result::Result<Self, String> {
        let lookup = Self::index(&entries)?;
        Ok(Self {
            entries,
            ignored,
            lookup,
        })
    }

    /// Parses the JSON written by `serde_json::to_string(&vocabulary)`.
    pub fn from_json(json: &str) -> std::result::Result<Self, String> {
        let raw: Vocabulary =
            serde_json::from_str(json).map_err(|e| format!("invalid vocabulary: {e}"))?;
        Self::from_parts(raw.entries, raw.ignored)
    }

    /// Number of ids including [`PAD`] (the embedding table's rows).
    pub fn table_len(&self) -> usize {
        self.entries.len() + 1
    }

    /// The entries in id order (id = index + 1).
    pub fn entries(&self) -> &[Entry] {
        &self.entries
    }

    /// Words dropped from prompts without a report.
    pub fn ignored(&self) -> &[String] {
        &self.ignored
    }

    /// The id of a word or synonym exactly as given (lower-case), if known.
    pub fn id(&self, word: &str) -> Option<u32> {
        self.lookup.get(word).copied()
    }

    /// The canonical word of an id.
    pub fn word(&self, id: u32) -> Option<&Entry> {
        (id as usize)
            .checked_sub(1)
            .and_then(|i| self.entries.get(i))
    }

    /// Looks a token up as written and then without a plural ending.
    fn find(&self, token: &str) -> Option<u32> {
        if let Some(id) = self.id(token) {
            return Some(id);
        }
        let mut stems = Vec::new();
        if let Some(s) = token.strip_suffix("ies") {
            stems.push(format!("{s}y"));
        }
        if let Some(s) = token.strip_suffix("es") {
            stems.push(s.to_string());
        }
        if let Some(s) = token.strip_suffix('s') {
            stems.push(s.to_string());
        }
        stems.iter().find_map(|s| self.id(s))
    }

    /// A prompt to word ids (de-duplicated, in prompt order) and the words the model does not
    /// know (in prompt order, each once). Ignored words are in neither.
    pub fn encode(&self, prompt: &str) -> (Vec<u32>, Vec<String>) {
        let (mut ids, mut unknown) = (Vec::new(), Vec::new());
        for t in tokens(prompt) {
            if self.ignored.contains(&t) {
                continue;
            }
            match self.find(&t) {
                Some(id) if !ids.contains(&id) => ids.push(id),
                Some(_) => {}
                None if !unknown.contains(&t) => unknown.push(t),
                None => {}
            }
        }
        (ids, unknown)
    }

    /// The canonical words by group, for the UI (subjects in vocabulary order: the procedural
    /// ones first, then artwork words by frequency).
    pub fn groups(&self) -> Vec<(WordGroup, Vec<&str>)> {
        WordGroup::ALL
            .iter()
            .map(|&g| {
                let words = self
                    .entries
                    .iter()
                    .filter(|e| e.group == g)
                    .map(|e| e.word.as_str())
                    .collect();
                (g, words)
            })
            .collect()
    }

    /// Ids of a group's canonical words.
    pub fn ids_of(&self, group: WordGroup) -> Vec<u32> {
        self.entries
            .iter()
            .enumerate()
            .filter(|(_, e)| e.group == group)
            .map(|(i, _)| i as u32 + 1)
            .collect()
    }
}

/// The conditioner's shape.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub struct ConditionerConfig {
    /// Width of a word embedding (the context's last dimension).
    pub dim: usize,
    /// Word slots of the context; prompts with more known words are refused.
    pub max_tokens: usize,
}

impl Default for ConditionerConfig {
    fn default() -> Self {
        Self {
            dim: 128,
            max_tokens: 10,
        }
    }
}

/// Word ids -> context `[clips, max_tokens, dim]`: a learned embedding per word, padded with the
/// learned [`PAD`] embedding. Weights: `embed.weight` `[table_len, dim]`.
#[derive(Debug, Clone)]
pub struct WordConditioner {
    cfg: ConditionerConfig,
    vocab: Vocabulary,
    embed: Embedding,
}

impl WordConditioner {
    pub fn new(cfg: ConditionerConfig, vocab: Vocabulary, vb: VarBuilder) -> Result<Self> {
        if cfg.dim == 0 || cfg.max_tokens == 0 {
            bail!("word conditioner: dim and max_tokens must be positive, got {cfg:?}");
        }
        // Small embeddings, like a freshly initialised transformer's.
        let w = vb.get_with_hints(
            (vocab.table_len(), cfg.dim),
            "embed.weight",
            candle_nn::Init::Randn {
                mean: 0.0,
                stdev: 0.5,
            },
        )?;
        Ok(Self {
            cfg,
            embed: Embedding::new(w, cfg.dim),
            vocab,
        })
    }

    pub fn config(&self) -> &ConditionerConfig {
        &self.cfg
    }

    pub fn vocabulary(&self) -> &Vocabulary {
        &self.vocab
    }

    /// [`Vocabulary::encode`] of the model's vocabulary.
    pub fn encode(&self, prompt: &str) -> (Vec<u32>, Vec<String>) {
        self.vocab.encode(prompt)
    }

    /// Pads one prompt's ids to `max_tokens` (an error naming the limit if there are more).
    pub fn pad(&self, ids: &[u32]) -> Result<Vec<u32>> {
        let n = self.cfg.max_tokens;
        if ids.len() > n {
            bail!(
                "the prompt has {} known words; this model reads at most {n}",
                ids.len()
            );
        }
        if let Some(bad) = ids.iter().find(|&&i| i as usize >= self.vocab.table_len()) {
            bail!("word id {bad} is outside the vocabulary");
        }
        let mut v = ids.to_vec();
        v.resize(n, PAD);
        Ok(v)
    }

    /// The context of one prompt's ids: `[1, max_tokens, dim]`.
    pub fn context(&self, ids: &[u32], device: &Device) -> Result<Tensor> {
        let padded = self.pad(ids)?;
        self.context_batch(&Tensor::new(padded.as_slice(), device)?.unsqueeze(0)?)
    }

    /// The null conditioning (every slot [`PAD`]) of classifier-free guidance: `[1, max_tokens,
    /// dim]`.
    pub fn null_context(&self, device: &Device) -> Result<Tensor> {
        self.context(&[], device)
    }

    /// Padded ids `[clips, max_tokens]` (u32) -> context `[clips, max_tokens, dim]`.
    pub fn context_batch(&self, ids: &Tensor) -> Result<Tensor> {
        let (_, l) = ids.dims2()?;
        if l != self.cfg.max_tokens {
            bail!(
                "word conditioner: ids are {:?}, expected [clips, {}]",
                ids.dims(),
                self.cfg.max_tokens
            );
        }
        self.embed.forward(&ids.to_dtype(DType::U32)?)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn vocab() -> Vocabulary {
        let stems: Vec<String> = [
            "red-heart",
            "cat-face",
            "cat",
            "grinning-cat",
            "artist-medium",
            "artist-medium-dark",
            "artist-light",
            "traffic-light",
            "1f600",
            "person-walking",
        ]
        .iter()
        .map(|s| s.to_string())
        .collect();
        Vocabulary::new(&subject_words(&stems, 300, 1))
    }

    #[test]
    fn subject_words_come_from_names_without_tones_codepoints_or_other_groups() {
        let stems: Vec<String> = [
            "red-heart",
            "cat-face",
            "cat",
            "artist-medium",
            "artist-light",
            "artist-dark",
            "traffic-light",
            "1f600",
            "person-walking",
            "a-button",
            "two-hearts",
        ]
        .iter()
        .map(|s| s.to_string())
        .collect();
        let w = subject_words(&stems, 300, 1);
        assert_eq!(w[0], "cat", "most frequent first: {w:?}");
        for want in [
            "heart", "face", "artist", "traffic", "light", "person", "button",
        ] {
            assert!(w.contains(&want.to_string()), "{want} missing from {w:?}");
        }
        for not in ["red", "walking", "medium", "dark", "1f600", "a"] {
            assert!(!w.contains(&not.to_string()), "{not} in {w:?}");
        }
        assert!(!w.contains(&"hearts".to_string()), "{w:?}");
        // "artist" counted once though three tone variants exist; "hearts" counts for "heart".
        assert_eq!(
            subject_words(&stems, 2, 2),
            vec!["cat".to_string(), "heart".to_string()]
        );
        assert_eq!(subject_words(&stems, 1, 2), vec!["cat".to_string()]);
    }

    #[test]
    fn encode_maps_synonyms_and_plurals_and_reports_unknown_words() {
        let v = vocab();
        let (ids, unknown) = v.encode("A red heart, pulsing!");
        let want: Vec<u32> = ["red", "heart", "pulse"]
            .iter()
            .map(|w| v.id(w).expect("known"))
            .collect();
        assert_eq!(ids, want);
        assert!(unknown.is_empty(), "{unknown:?}");
        // Synonyms share an id and are not repeated; plurals find their singular.
        let (a, _) = v.encode("spinning hearts");
        let (b, _) = v.encode("spin heart spin");
        assert_eq!(a, b);
        assert_eq!(v.encode("zoom").0, v.encode("pulse").0);
        assert_eq!(v.encode("GRAY cat's").0, v.encode("grey cat").0);
        // Unknown words are reported once each, in order; ignored ones are not.
        let (ids, unknown) = v.encode("the purple unicorn and a dragon with a unicorn");
        assert_eq!(ids, vec![v.id("purple").expect("purple")]);
        assert_eq!(unknown, vec!["unicorn".to_string(), "dragon".to_string()]);
        let groups = v.groups();
        assert_eq!(groups.len(), 4);
        assert!(groups[0].1.contains(&"donut") && groups[0].1.contains(&"cat"));
        assert!(groups[2].1.contains(&"bounce") && !groups[2].1.contains(&"bouncing"));
    }

    #[test]
    fn vocabulary_round_trips_and_refuses_duplicates() {
        let v = vocab();
        let json = serde_json::to_string(&v).expect("json");
        let back = Vocabulary::from_json(&json).expect("parse");
        assert_eq!(back, v);
        assert_eq!(
            back.encode("red cat bouncing"),
            v.encode("red cat bouncing")
        );
        let mut e = v.entries().to_vec();
        e.push(Entry {
            word: "spinning".into(),
            group: WordGroup::Subject,
            synonyms: vec![],
        });
        let err = Vocabulary::from_parts(e, vec![]).expect_err("duplicate");
        assert!(err.contains("`spinning`"), "{err}");
    }

    #[test]
    fn conditioner_pads_and_limits_and_null_differs() {
        let dev = Device::Cpu;
        let varmap = candle_nn::VarMap::new();
        let vb = VarBuilder::from_varmap(&varmap, DType::F32, &dev);
        let cfg = ConditionerConfig {
            dim: 8,
            max_tokens: 3,
        };
        let c = WordConditioner::new(cfg, vocab(), vb).expect("build");
        let (ids, _) = c.encode("red cat spinning");
        let ctx = c.context(&ids, &dev).expect("context");
        assert_eq!(ctx.dims(), &[1, 3, 8]);
        let null = c.null_context(&dev).expect("null");
        let d = (ctx - &null)
            .and_then(|d| d.abs())
            .and_then(|d| d.sum_all())
            .and_then(|d| d.to_scalar::<f32>())
            .expect("diff");
        assert!(d > 1e-3);
        let (four, _) = c.encode("red cat spinning glowing");
        let e = c.context(&four, &dev).expect_err("too many");
        assert!(e.to_string().contains("at most 3"), "{e}");
    }
}

//! CLIP's byte-level BPE tokenizer, built from the user's `tokenizer/vocab.json` and
//! `tokenizer/merges.txt` (the files every diffusers SD-1.5 folder carries; read by
//! [`crate::model::weights::read_clip_tokenizer`]).
//!
//! Written here rather than taken from the `tokenizers` crate, which would pull in a large
//! dependency tree for ~200 lines. It follows Hugging Face's fast `CLIPTokenizer`:
//! whitespace runs become one space, the text is lowercased, CLIP's pre-split pattern
//! (`<|startoftext|>`, `<|endoftext|>`, `'s 't 're 've 'm 'll 'd`, letter runs, single digits,
//! runs of other non-space characters) cuts it into words, each word's UTF-8 bytes are mapped
//! to GPT-2's printable byte alphabet, the last symbol gets `</w>`, and merges are applied in
//! rank order. Not done: Unicode NFC normalisation (text typed in the studio is already NFC in
//! practice) and ftfy's mojibake repair.

use std::collections::HashMap;

use crate::{Error, Result};

/// Context length of CLIP's text encoder (SD-1.5): bos + 75 tokens + eos.
pub const MAX_TOKENS: usize = 77;

/// CLIP's begin-of-text token.
pub const BOS: &str = "<|startoftext|>";
/// CLIP's end-of-text token (also SD-1.5's pad and unknown token).
pub const EOS: &str = "<|endoftext|>";

/// Merges used from the file: Hugging Face's CLIP tokenizer keeps the first
/// 49152 - 256 - 2 lines, which with the 512 byte symbols and 2 specials makes the 49408-entry
/// vocabulary; later lines would only make tokens the vocabulary does not have.
const MAX_MERGES: usize = 49152 - 256 - 2;

/// A CLIP tokenizer.
#[derive(Debug, Clone)]
pub struct ClipTokenizer {
    vocab: HashMap<String, u32>,
    ranks: HashMap<(String, String), usize>,
    byte_char: [char; 256],
    bos: u32,
    eos: u32,
    pad: u32,
}

/// Prompt token ids and what was lost on the way.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Tokens {
    /// `MAX_TOKENS` ids: bos, the prompt, eos, then padding.
    pub ids: Vec<u32>,
    /// Prompt tokens dropped because the prompt is longer than 75 tokens.
    pub truncated: usize,
    /// BPE pieces not in the vocabulary (mapped to the unknown token). Never happens with a
    /// complete CLIP vocabulary, which covers every byte.
    pub unknown: Vec<String>,
}

/// GPT-2's reversible byte -> printable character table.
fn bytes_to_unicode() -> [char; 256] {
    let mut table = ['\0'; 256];
    let printable = |b: u32| {
        (u32::from(b'!')..=u32::from(b'~')).contains(&b)
            || (0xA1..=0xAC).contains(&b)
            || (0xAE..=0xFF).contains(&b)
    };
    let mut n = 0;
    for (b, slot) in table.iter_mut().enumerate() {
        let b = b as u32;
        let c = if printable(b) {
            b
        } else {
            n += 1;
            255 + n
        };
        *slot = char::from_u32(c).unwrap_or('?');
    }
    table
}

impl ClipTokenizer {
    /// Builds a tokenizer from a vocabulary and the text of a merges file (first line
    /// `#version: ...` is skipped when present).
    pub fn new(vocab: HashMap<String, u32>, merges: &str, pad: Option<&str>) -> Result<Self> {
        let id = |t: &str| {
            vocab
                .get(t)
                .copied()
                .ok_or_else(|| Error::Model(format!("the tokenizer vocabulary has no `{t}` token")))
        };
        let bos = id(BOS)?;
        let eos = id(EOS)?;
        let pad = match pad {
            Some(p) => id(p)?,
            None => eos,
        };
        let mut ranks = HashMap::new();
        let lines = merges
            .lines()
            .filter(|l| !l.starts_with("#version"))
            .filter(|l| !l.trim().is_empty())
            .take(MAX_MERGES);
        for (rank, line) in lines.enumerate() {
            let mut parts = line.split_whitespace();
            match (parts.next(), parts.next(), parts.next()) {
                (Some(a), Some(b), None) => {
                    ranks.entry((a.to_string(), b.to_string())).or_insert(rank);
                }
                _ => {
                    return Err(Error::Model(format!(
                        "merges line {} is not two symbols: `{line}`",
                        rank + 1
                    )));
                }
            }
        }
        Ok(Self {
            vocab,
            ranks,
            byte_char: bytes_to_unicode(),
            bos,
            eos,
            pad,
        })
    }

    /// The begin-of-text id.
    pub fn bos(&self) -> u32 {
        self.bos
    }

    /// The end-of-text id.
    pub fn eos(&self) -> u32 {
        self.eos
    }

    /// The padding id.
    pub fn pad(&self) -> u32 {
        self.pad
    }

    /// Entries in the vocabulary.
    pub fn vocab_size(&self) -> usize {
        self.vocab.len()
    }

    /// The prompt's token ids without bos/eos or padding.
    pub fn encode_raw(&self, text: &str) -> (Vec<u32>, Vec<String>) {
        let mut ids = Vec::new();
        let mut unknown = Vec::new();
        let text = normalize(text);
        for word in pre_split(&text) {
            if let Some(&id) = (word == BOS || word == EOS)
                .then(|| self.vocab.get(word))
                .flatten()
            {
                ids.push(id);
                continue;
            }
            let mapped: String = word.bytes().map(|b| self.byte_char[b as usize]).collect();
            for piece in self.bpe(&mapped) {
                match self.vocab.get(&piece) {
                    Some(&id) => ids.push(id),
                    None => {
                        ids.push(self.eos);
                        unknown.push(piece);
                    }
                }
            }
        }
        (ids, unknown)
    }

    /// `MAX_TOKENS` ids as SD feeds the text encoder: bos, the prompt (at most 75 tokens), eos,
    /// then the pad token.
    pub fn encode(&self, text: &str) -> Tokens {
        let (raw, unknown) = self.encode_raw(text);
        let keep = raw.len().min(MAX_TOKENS - 2);
        let mut ids = Vec::with_capacity(MAX_TOKENS);
        ids.push(self.bos);
        ids.extend_from_slice(&raw[..keep]);
        ids.push(self.eos);
        ids.resize(MAX_TOKENS, self.pad);
        Tokens {
            ids,
            truncated: raw.len() - keep,
            unknown,
        }
    }

    /// Byte-pair merges of one pre-split word (already in the byte alphabet).
    fn bpe(&self, word: &str) -> Vec<String> {
        let chars: Vec<char> = word.chars().collect();
        let Some((last, rest)) = chars.split_last() else {
            return Vec::new();
        };
        let mut symbols: Vec<String> = rest.iter().map(|c| c.to_string()).collect();
        symbols.push(format!("{last}</w>"));
        loop {
            let best = symbols
                .windows(2)
                .enumerate()
                .filter_map(|(i, p)| {
                    self.ranks
                        .get(&(p[0].clone(), p[1].clone()))
                        .map(|&r| (r, i))
                })
                .min();
            let Some((_, at)) = best else {
                break;
            };
            // Merge every occurrence of the best pair, left to right (as the reference does).
            let (a, b) = (symbols[at].clone(), symbols[at + 1].clone());
            let mut merged = Vec::with_capacity(symbols.len());
            let mut i = 0;
            while i < symbols.len() {
                if i + 1 < symbols.len() && symbols[i] == a && symbols[i + 1] == b {
                    merged.push(format!("{a}{b}"));
                    i += 2;
                } else {
                    merged.push(symbols[i].clone());
                    i += 1;
                }
            }
            symbols = merged;
            if symbols.len() == 1 {
                break;
            }
        }
        symbols
    }
}

/// Whitespace runs to one space, trimmed, lowercased (the fast tokenizer's normaliser).
pub fn normalize(text: &str) -> String {
    text.split_whitespace()
        .collect::<Vec<_>>()
        .join(" ")
        .to_lowercase()
}

/// CLIP's pre-split pattern on normalised text:
/// `<|startoftext|>|<|endoftext|>|'s|'t|'re|'ve|'m|'ll|'d|\p{L}+|\p{N}|[^\s\p{L}\p{N}]+`.
pub fn pre_split(text: &str) -> Vec<&str> {
    let mut out = Vec::new();
    let mut rest = text;
    const CONTRACTIONS: [&str; 7] = ["'s", "'t", "'re", "'ve", "'m", "'ll", "'d"];
    while let Some(c) = rest.chars().next() {
        if c.is_whitespace() {
            rest = &rest[c.len_utf8()..];
            continue;
        }
        let len = if let Some(s) = [BOS, EOS].iter().find(|s| rest.starts_with(**s)) {
            s.len()
        } else if let Some(s) = CONTRACTIONS.iter().find(|s| rest.starts_with(**s)) {
            s.len()
        } else if c.is_alphabetic() {
            run_len(rest, |c| c.is_alphabetic())
        } else if c.is_numeric() {
            c.len_utf8()
        } else {
            run_len(rest, |c| {
                !c.is_whitespace() && !c.is_alphabetic() && !c.is_numeric()
            })
        };
        out.push(&rest[..len]);
        rest = &rest[len..];
    }
    out
}

fn run_len(s: &str, keep: impl Fn(char) -> bool) -> usize {
    s.char_indices()
        .find(|&(_, c)| !keep(c))
        .map_or(s.len(), |(i, _)| i)
}

#[cfg(test)]
pub(crate) mod tests {
    use super::*;

    /// A tiny vocabulary: the 512 byte symbols (plain and with `</w>`), the merges' results and
    /// the two specials, ids in that order (as CLIP's real vocabulary is laid out).
    pub(crate) fn tiny_vocab(merges: &str) -> HashMap<String, u32> {
        let table = bytes_to_unicode();
        let mut tokens: Vec<String> = table.iter().map(|c| c.to_string()).collect();
        tokens.extend(table.iter().map(|c| format!("{c}</w>")));
        for l in merges.lines().filter(|l| !l.starts_with('#')) {
            let mut p = l.split_whitespace();
            if let (Some(a), Some(b)) = (p.next(), p.next()) {
                tokens.push(format!("{a}{b}"));
            }
        }
        tokens.push(BOS.into());
        tokens.push(EOS.into());
        tokens
            .into_iter()
            .enumerate()
            .map(|(i, t)| (t, i as u32))
            .collect()
    }

    pub(crate) const TINY_MERGES: &str =
        "#version: 0.2\nh e\nr e\nl l\nhe ll\nhell o</w>\nre d</w>\na r\nhe ar\nhear t</w>\n";

    #[test]
    fn byte_table_is_a_bijection_with_gpt2_values() {
        let t = bytes_to_unicode();
        assert_eq!(t[b'!' as usize], '!');
        assert_eq!(t[0], '\u{100}');
        assert_eq!(t[b' ' as usize], '\u{120}');
        let mut seen: Vec<char> = t.to_vec();
        seen.sort();
        seen.dedup();
        assert_eq!(seen.len(), 256);
    }

    #[test]
    fn pre_split_follows_clips_pattern() {
        assert_eq!(
            pre_split("a cat's 123 hearts!!  <|endoftext|>x"),
            [
                "a",
                "cat",
                "'s",
                "1",
                "2",
                "3",
                "hearts",
                "!!",
                "<|endoftext|>",
                "x"
            ]
        );
        assert_eq!(normalize("  A\tRed\n\nHEART "), "a red heart");
    }

    #[test]
    fn merges_apply_by_rank_and_pad_to_77() {
        let tok = ClipTokenizer::new(tiny_vocab(TINY_MERGES), TINY_MERGES, None).expect("tok");
        let id = |s: &str| tok.vocab[s];
        let (raw, unknown) = tok.encode_raw("Hello red heart");
        assert!(unknown.is_empty());
        assert_eq!(raw, [id("hello</w>"), id("red</w>"), id("heart</w>")]);
        // "hel" has no merge to "hel" + "</w>": falls back to smaller pieces.
        let (raw, _) = tok.encode_raw("he");
        assert_eq!(raw, [id("h"), id("e</w>")]);
        let t = tok.encode("red");
        assert_eq!(t.ids.len(), MAX_TOKENS);
        assert_eq!(&t.ids[..3], &[tok.bos(), id("red</w>"), tok.eos()]);
        assert!(t.ids[3..].iter().all(|&i| i == tok.eos()));
        let long = "red ".repeat(100);
        let t = tok.encode(&long);
        assert_eq!(t.truncated, 25);
        assert_eq!(t.ids[76], tok.eos());
        let t = ClipTokenizer::new(tiny_vocab(TINY_MERGES), TINY_MERGES, Some("!"))
            .expect("tok")
            .encode("red");
        assert_eq!(t.ids[3], id("!"));
    }

    #[test]
    fn bad_files_are_named() {
        let dir = tempfile::tempdir().expect("tempdir");
        let v = dir.path().join("vocab.json");
        let m = dir.path().join("merges.txt");
        std::fs::write(&v, "[1, 2]").expect("write");
        std::fs::write(&m, TINY_MERGES).expect("write");
        let e =
            crate::model::weights::read_clip_tokenizer_files(&v, &m, None).expect_err("bad vocab");
        assert!(e.to_string().contains("vocab.json"), "{e}");
        std::fs::write(&v, r#"{"a": 1}"#).expect("write");
        let e = crate::model::weights::read_clip_tokenizer_files(&v, &m, None)
            .expect_err("no specials");
        assert!(e.to_string().contains("<|startoftext|>"), "{e}");
        let e = crate::model::weights::read_clip_tokenizer(&dir.path().join("nowhere"))
            .expect_err("missing");
        assert!(e.to_string().contains("vocab.json"), "{e}");
    }
}

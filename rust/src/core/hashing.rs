//! Feature hashing of text into a fixed-width sparse space (word and character n-grams).
//!
//! # Compatibility contract
//!
//! Trained models store weights by column, so everything below decides which column a piece of
//! text lands in and must never change for an existing configuration. Any change here is a
//! breaking change that invalidates every saved model; the golden tests in `tests/golden.rs` pin it.
//!
//! **Tokens.** [`words`] splits text on UAX #29 word boundaries (`unicode-segmentation`) and keeps
//! the segments that `unicode_words` keeps (those containing an alphanumeric character), plus any
//! segment containing an emoji code point (see [`is_emoji`]), so that emoji-only queries still get
//! features. Han ideographs come out one per token, kana and Thai as runs. With `lowercase`, each
//! token is lowercased with full Unicode rules (`str::to_lowercase`, which also handles final
//! sigma) after segmentation.
//!
//! **Grams.** With `word_ngrams = (lo, hi)`: for every n in `lo..=hi`, every window of n
//! consecutive tokens, joined by a single U+0020. With `char_ngrams = (lo, hi)`: each token is
//! wrapped as `"<" + token + ">"` and split into extended grapheme clusters (of the wrapped
//! string); for every n in `lo..=hi`, every window of n clusters. A wrapped token with fewer than
//! `lo` clusters contributes itself, once.
//!
//! **Hash.** `h = xxh3_64_with_seed([kind] ++ utf8(gram), seed)` with `kind = b'w'` for word grams
//! and `b'c'` for char grams. Column is `h % n_features`; the sign is `-1` when `signed` and bit 63
//! of `h` is set, else `+1`. Byte-oriented hashing keeps this independent of platform endianness.
//!
//! **Values.** Each occurrence adds its sign to its column; columns summing to exactly zero are
//! dropped; the row is then divided by its L1 or L2 norm (empty rows stay empty).

use rayon::prelude::*;
use unicode_segmentation::UnicodeSegmentation;
use xxhash_rust::xxh3::xxh3_64_with_seed;

use super::error::{CoreError, Result};

/// Largest n accepted for word and char n-grams; beyond this, grams stop being useful features
/// and the cost grows with every extra n.
pub const MAX_NGRAM: usize = 16;

const KIND_WORD: u8 = b'w';
const KIND_CHAR: u8 = b'c';

/// Row normalisation applied after summing.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Norm {
    L1,
    L2,
    None,
}

impl Norm {
    pub fn from_name(s: &str) -> Option<Norm> {
        match s {
            "l1" => Some(Norm::L1),
            "l2" => Some(Norm::L2),
            "none" => Some(Norm::None),
            _ => None,
        }
    }

    pub fn name(self) -> &'static str {
        match self {
            Norm::L1 => "l1",
            Norm::L2 => "l2",
            Norm::None => "none",
        }
    }
}

#[derive(Clone, Debug, PartialEq)]
pub struct HasherConfig {
    pub n_features: u32,
    pub word_ngrams: Option<(usize, usize)>,
    pub char_ngrams: Option<(usize, usize)>,
    pub seed: u64,
    pub signed: bool,
    pub norm: Norm,
    pub lowercase: bool,
}

impl Default for HasherConfig {
    fn default() -> Self {
        HasherConfig {
            n_features: 1 << 20,
            word_ngrams: Some((1, 2)),
            char_ngrams: Some((3, 5)),
            seed: 0,
            signed: true,
            norm: Norm::L2,
            lowercase: true,
        }
    }
}

impl HasherConfig {
    pub fn validate(&self) -> Result<()> {
        // Column indices leave as i32 (scipy's default index dtype), hence the i32 bound.
        let max = i32::MAX as u32;
        if self.n_features == 0 || self.n_features > max {
            return Err(CoreError::invalid(
                "n_features",
                format!("expected 1 <= n_features <= {max}, got {}", self.n_features),
            ));
        }
        check_ngram_range("word_ngrams", self.word_ngrams)?;
        check_ngram_range("char_ngrams", self.char_ngrams)?;
        if self.word_ngrams.is_none() && self.char_ngrams.is_none() {
            return Err(CoreError::invalid(
                "word_ngrams",
                "at least one of word_ngrams and char_ngrams must be enabled, both are None",
            ));
        }
        Ok(())
    }
}

fn check_ngram_range(arg: &str, range: Option<(usize, usize)>) -> Result<()> {
    match range {
        Some((lo, hi)) if !(1 <= lo && lo <= hi && hi <= MAX_NGRAM) => Err(CoreError::invalid(
            arg,
            format!("expected 1 <= min <= max <= {MAX_NGRAM}, got ({lo}, {hi})"),
        )),
        _ => Ok(()),
    }
}

/// Emoji code points that make a word segment a token even without any alphanumeric character.
///
/// Part of the compatibility contract, so this is a fixed list of blocks rather than a property
/// looked up in whatever Unicode tables the dependencies ship: Miscellaneous Symbols, Dingbats,
/// Miscellaneous Symbols and Arrows, the emoji presentation characters of Miscellaneous Technical,
/// and U+1F000..U+1FAFF (emoticons, pictographs, transport, regional indicators and so on).
pub fn is_emoji(c: char) -> bool {
    matches!(
        c as u32,
        0x231A..=0x231B
            | 0x23E9..=0x23F3
            | 0x23F8..=0x23FA
            | 0x2600..=0x27BF
            | 0x2B00..=0x2BFF
            | 0x1F000..=0x1FAFF
    )
}

/// Calls `f` with every token of `text` in order (not lowercased).
fn for_each_token<'a>(text: &'a str, mut f: impl FnMut(&'a str)) {
    // The ASCII check is first because it is far cheaper than decoding chars, and the common case.
    if text.is_ascii() || !text.chars().any(is_emoji) {
        text.unicode_words().for_each(f);
        return;
    }
    // `unicode_word_indices` is the word-bound segmentation filtered, so walking both in lockstep
    // keeps exactly its tokens and adds the emoji segments it drops.
    let mut alnum = text.unicode_word_indices().peekable();
    for (offset, segment) in text.split_word_bound_indices() {
        if alnum.peek().is_some_and(|&(o, _)| o == offset) {
            alnum.next();
            f(segment);
        } else if segment.chars().any(is_emoji) {
            f(segment);
        }
    }
}

fn lower(word: &str) -> String {
    if word.is_ascii() {
        word.to_ascii_lowercase()
    } else {
        word.to_lowercase()
    }
}

/// The tokens of `text` as defined in the module docs, lowercased when asked.
pub fn words(text: &str, lowercase: bool) -> Vec<String> {
    let mut out = Vec::new();
    for_each_token(text, |w| out.push(if lowercase { lower(w) } else { w.to_owned() }));
    out
}

/// Reusable buffers for hashing the char n-grams of one word at a time.
#[derive(Default)]
pub(crate) struct CharGrams {
    /// `[slot] ++ "<" ++ word ++ ">"`: the byte before each grapheme is overwritten with the kind
    /// byte just before hashing the grams that start there, so no gram is ever copied.
    buf: Vec<u8>,
    wrapped: String,
    bounds: Vec<usize>,
}

impl CharGrams {
    /// Calls `sink` with the hash of every char n-gram of `word`, which must be lowercased already
    /// if lowercasing is wanted.
    pub(crate) fn hash_word(&mut self, word: &str, range: (usize, usize), seed: u64, sink: &mut impl FnMut(u64)) {
        if word.is_ascii() {
            self.hash_ascii(word.as_bytes(), range, seed, sink);
            return;
        }
        self.wrapped.clear();
        self.wrapped.push('<');
        self.wrapped.push_str(word);
        self.wrapped.push('>');
        // Clusters are taken over the wrapped string because a leading combining mark or a
        // trailing prepend character merges with the marker.
        self.bounds.clear();
        self.bounds.extend(self.wrapped.grapheme_indices(true).map(|(o, _)| o));
        self.bounds.push(self.wrapped.len());
        self.buf.clear();
        self.buf.push(KIND_CHAR);
        self.buf.extend_from_slice(self.wrapped.as_bytes());
        let bounds = &self.bounds;
        emit_char_grams(&mut self.buf, bounds.len() - 1, |i| bounds[i], range, seed, sink);
    }

    /// [`Self::hash_word`] for ASCII, where every byte is its own grapheme cluster (CR LF, the
    /// one multi-byte ASCII cluster, never occurs inside a word).
    pub(crate) fn hash_ascii(&mut self, word: &[u8], range: (usize, usize), seed: u64, sink: &mut impl FnMut(u64)) {
        self.buf.clear();
        self.buf.push(KIND_CHAR);
        self.buf.push(b'<');
        self.buf.extend_from_slice(word);
        self.buf.push(b'>');
        emit_char_grams(&mut self.buf, word.len() + 2, |i| i, range, seed, sink);
    }
}

/// `buf[1 + j]` is byte j of the wrapped word, `m` its number of clusters and `bound(i)` the byte
/// offset of cluster i in the wrapped word (`bound(m)` its length).
#[inline(always)]
fn emit_char_grams(
    buf: &mut [u8],
    m: usize,
    bound: impl Fn(usize) -> usize,
    (lo, hi): (usize, usize),
    seed: u64,
    sink: &mut impl FnMut(u64),
) {
    let lo = lo.max(1);
    if m < lo {
        buf[0] = KIND_CHAR;
        sink(xxh3_64_with_seed(&buf[..bound(m) + 1], seed));
        return;
    }
    for i in 0..=m - lo {
        let start = bound(i);
        // Bytes before `start` belong to grams already hashed, so the slot is free to overwrite.
        buf[start] = KIND_CHAR;
        for n in lo..=hi.min(m - i) {
            sink(xxh3_64_with_seed(&buf[start..bound(i + n) + 1], seed));
        }
    }
}

/// Per-thread buffers, reused across rows so that hashing a row allocates only for non-ASCII
/// lowercasing.
#[derive(Default)]
struct Scratch {
    /// `[slot] ++ w0 ++ " " ++ w1 ++ " " ++ ...`: word n-grams are slices of it, with the separator
    /// before the first word overwritten by the kind byte, as for char grams.
    arena: Vec<u8>,
    spans: Vec<(usize, usize)>,
    grams: CharGrams,
    /// `column << 1 | negative` per occurrence, so one integer sort groups columns.
    keys: Vec<u32>,
    cols: Vec<u32>,
    vals: Vec<f32>,
}

impl Scratch {
    /// Leaves the row's summed, unnormalised entries in `cols`/`vals` and returns the norm to
    /// divide them by.
    fn hash(&mut self, text: &str, cfg: &HasherConfig) -> f64 {
        let Scratch { arena, spans, grams, keys, cols, vals } = self;
        arena.clear();
        spans.clear();
        keys.clear();
        cols.clear();
        vals.clear();
        arena.push(0);

        let n_features = u64::from(cfg.n_features.max(1));
        // A 64-bit division per gram is a measurable share of the run time; for the usual
        // power-of-two widths the mask gives the same column.
        let pow2_mask = n_features.is_power_of_two().then(|| n_features - 1);
        let sign_mask = u64::from(cfg.signed);
        let seed = cfg.seed;
        let mut sink = |h: u64| {
            let col = match pow2_mask {
                Some(m) => h & m,
                None => h % n_features,
            };
            // col < 2^31 (validate), so the key fits in 32 bits.
            keys.push(((col << 1) | ((h >> 63) & sign_mask)) as u32);
        };
        let char_range = cfg.char_ngrams;

        for_each_token(text, |w| {
            let start = arena.len();
            if w.is_ascii() {
                if cfg.lowercase {
                    arena.extend(w.bytes().map(|b| b.to_ascii_lowercase()));
                } else {
                    arena.extend_from_slice(w.as_bytes());
                }
                if let Some(range) = char_range {
                    grams.hash_ascii(&arena[start..], range, seed, &mut sink);
                }
            } else {
                let lowered;
                let w = if cfg.lowercase {
                    lowered = w.to_lowercase();
                    lowered.as_str()
                } else {
                    w
                };
                arena.extend_from_slice(w.as_bytes());
                if let Some(range) = char_range {
                    grams.hash_word(w, range, seed, &mut sink);
                }
            }
            spans.push((start, arena.len()));
            arena.push(b' ');
        });

        if let Some((lo, hi)) = cfg.word_ngrams {
            let lo = lo.max(1);
            for i in 0..spans.len() {
                let start = spans[i].0 - 1;
                // Windows starting at i - 1 are done, so the separator before word i is free.
                arena[start] = KIND_WORD;
                for n in lo..=hi {
                    let Some(&(_, end)) = spans.get(i + n - 1) else { break };
                    sink(xxh3_64_with_seed(&arena[start..end], seed));
                }
            }
        }

        keys.sort_unstable();
        let mut sum_abs = 0.0f64;
        let mut sum_sq = 0.0f64;
        let mut i = 0;
        while i < keys.len() {
            let col = keys[i] >> 1;
            let mut total = 0i64;
            while i < keys.len() && keys[i] >> 1 == col {
                total += if keys[i] & 1 == 1 { -1 } else { 1 };
                i += 1;
            }
            if total != 0 {
                let v = total as f64;
                sum_abs += v.abs();
                sum_sq += v * v;
                cols.push(col);
                vals.push(total as f32);
            }
        }
        match cfg.norm {
            Norm::L1 => sum_abs,
            Norm::L2 => sum_sq.sqrt(),
            Norm::None => 1.0,
        }
    }
}

#[inline]
fn scaled(v: f32, norm: f64) -> f32 {
    (f64::from(v) / norm) as f32
}

/// One row: sorted unique column indices and their (normalised) values.
///
/// `cfg` is expected to have passed [`HasherConfig::validate`].
pub fn hash_row(text: &str, cfg: &HasherConfig) -> (Vec<u32>, Vec<f32>) {
    let mut s = Scratch::default();
    let norm = s.hash(text, cfg);
    let vals = s.vals.iter().map(|&v| scaled(v, norm)).collect();
    (std::mem::take(&mut s.cols), vals)
}

/// A CSR matrix in scipy's layout.
#[derive(Clone, Debug, Default, PartialEq)]
pub struct Csr {
    pub indptr: Vec<i64>,
    pub indices: Vec<i32>,
    pub data: Vec<f32>,
}

#[derive(Default)]
struct Part {
    nnz: Vec<usize>,
    indices: Vec<i32>,
    data: Vec<f32>,
}

/// Hashes every text into one row of a CSR matrix, rows in parallel on the current rayon pool.
///
/// `cfg` is expected to have passed [`HasherConfig::validate`]. The result does not depend on the
/// number of threads: rows are independent and concatenated in input order.
pub fn transform(texts: &[&str], cfg: &HasherConfig) -> Csr {
    // Several chunks per thread balance uneven text lengths; chunks of rows rather than single
    // rows keep per-task overhead and per-row allocations away.
    let chunk = (texts.len() / (rayon::current_num_threads() * 8)).clamp(1, 256);
    let parts: Vec<Part> = texts
        .par_chunks(chunk)
        .map_init(Scratch::default, |s, rows| {
            let mut part = Part::default();
            for text in rows {
                let norm = s.hash(text, cfg);
                part.nnz.push(s.cols.len());
                // validate() bounds n_features by i32::MAX, so columns fit.
                part.indices.extend(s.cols.iter().map(|&c| c as i32));
                part.data.extend(s.vals.iter().map(|&v| scaled(v, norm)));
            }
            part
        })
        .collect();

    let nnz: usize = parts.iter().map(|p| p.indices.len()).sum();
    let mut csr = Csr {
        indptr: Vec::with_capacity(texts.len() + 1),
        indices: Vec::with_capacity(nnz),
        data: Vec::with_capacity(nnz),
    };
    csr.indptr.push(0);
    let mut end = 0i64;
    for part in parts {
        for n in part.nnz {
            end += n as i64;
            csr.indptr.push(end);
        }
        csr.indices.extend_from_slice(&part.indices);
        csr.data.extend_from_slice(&part.data);
    }
    csr
}

/// Column and sign of one gram (`kind` is `b'w'` or `b'c'`), straight from the hash definition.
pub fn feature_index(kind: u8, token: &str, cfg: &HasherConfig) -> (u32, f32) {
    let mut bytes = Vec::with_capacity(token.len() + 1);
    bytes.push(kind);
    bytes.extend_from_slice(token.as_bytes());
    let h = xxh3_64_with_seed(&bytes, cfg.seed);
    let col = (h % u64::from(cfg.n_features.max(1))) as u32;
    let sign = if cfg.signed && h >> 63 == 1 { -1.0 } else { 1.0 };
    (col, sign)
}

#[cfg(test)]
mod tests {
    use std::collections::BTreeMap;

    use super::*;

    /// The hash definition spelled out naively: one String per gram, through `feature_index`.
    fn reference_row(text: &str, cfg: &HasherConfig) -> (Vec<u32>, Vec<f32>) {
        let toks = words(text, cfg.lowercase);
        let mut acc: BTreeMap<u32, f64> = BTreeMap::new();
        let mut add = |kind: u8, gram: &str| {
            let (c, s) = feature_index(kind, gram, cfg);
            *acc.entry(c).or_default() += f64::from(s);
        };
        if let Some((lo, hi)) = cfg.word_ngrams {
            for n in lo..=hi {
                for w in toks.windows(n) {
                    add(b'w', &w.join(" "));
                }
            }
        }
        if let Some((lo, hi)) = cfg.char_ngrams {
            for t in &toks {
                let wrapped = format!("<{t}>");
                let g: Vec<&str> = wrapped.graphemes(true).collect();
                if g.len() < lo {
                    add(b'c', &wrapped);
                }
                for n in lo..=hi {
                    for w in g.windows(n) {
                        add(b'c', &w.concat());
                    }
                }
            }
        }
        acc.retain(|_, v| *v != 0.0);
        let norm = match cfg.norm {
            Norm::L1 => acc.values().map(|v| v.abs()).sum(),
            Norm::L2 => acc.values().map(|v| v * v).sum::<f64>().sqrt(),
            Norm::None => 1.0,
        };
        (acc.keys().copied().collect(), acc.values().map(|v| (v / norm) as f32).collect())
    }

    const TEXTS: &[&str] = &[
        "",
        "   ",
        "!!! ...",
        "a",
        "Hello world",
        "The quick brown fox jumps over the lazy dog, the fox!",
        "Ümlaut café ΟΔΟΣ",
        "東京タワーに行きました",
        "สวัสดีครับ ภาษาไทย",
        "مرحبا بالعالم",
        "नमस्ते दुनिया",
        "🙂 pizza 🍕🍕 👨\u{200d}👩\u{200d}👧 🇫🇷",
        "e\u{301}te\u{301} x\u{301}",
        "can't stop 3.14 U.S.A.",
        "İstanbul KELVIN \u{212a}",
    ];

    fn configs() -> Vec<HasherConfig> {
        let base = HasherConfig::default();
        vec![
            base.clone(),
            HasherConfig { n_features: 16, ..base.clone() },
            HasherConfig { n_features: 1000, seed: 42, signed: false, norm: Norm::L1, ..base.clone() },
            HasherConfig { word_ngrams: None, char_ngrams: Some((1, 3)), lowercase: false, ..base.clone() },
            HasherConfig { word_ngrams: Some((2, 4)), char_ngrams: None, norm: Norm::None, ..base.clone() },
            HasherConfig { char_ngrams: Some((4, 16)), ..base.clone() },
            HasherConfig { char_ngrams: Some((6, 6)), n_features: 3, ..base },
        ]
    }

    #[test]
    fn matches_naive_reference() {
        for cfg in configs() {
            cfg.validate().unwrap();
            for text in TEXTS {
                let (ci, cv) = hash_row(text, &cfg);
                let (ri, rv) = reference_row(text, &cfg);
                assert_eq!(ci, ri, "{text:?} {cfg:?}");
                for (a, b) in cv.iter().zip(&rv) {
                    assert!((a - b).abs() <= 1e-6, "{text:?} {cfg:?}: {cv:?} vs {rv:?}");
                }
            }
        }
    }

    #[test]
    fn transform_matches_rows() {
        let cfg = HasherConfig::default();
        let csr = transform(TEXTS, &cfg);
        assert_eq!(csr.indptr.len(), TEXTS.len() + 1);
        for (r, text) in TEXTS.iter().enumerate() {
            let (a, b) = (csr.indptr[r] as usize, csr.indptr[r + 1] as usize);
            let (ci, cv) = hash_row(text, &cfg);
            let ci: Vec<i32> = ci.into_iter().map(|c| c as i32).collect();
            assert_eq!(&csr.indices[a..b], ci.as_slice());
            assert_eq!(&csr.data[a..b], cv.as_slice());
        }
    }

    #[test]
    fn tokens() {
        assert_eq!(words("Hello, World!", true), ["hello", "world"]);
        assert_eq!(words("Hello, World!", false), ["Hello", "World"]);
        assert_eq!(words("東京タワー", true), ["東", "京", "タワー"]);
        assert_eq!(words("ΟΔΟΣ", true), ["οδος"]);
        assert_eq!(words("I like 🍕🍕!", true), ["i", "like", "🍕", "🍕"]);
        assert_eq!(words("👍🏽 ok", true), ["👍🏽", "ok"]);
        assert!(words("... --- ©", true).is_empty());
    }

    #[test]
    fn short_words_contribute_once() {
        let cfg = HasherConfig { word_ngrams: None, char_ngrams: Some((5, 6)), norm: Norm::None, ..Default::default() };
        let (ci, cv) = hash_row("ab", &cfg);
        let (c, s) = feature_index(b'c', "<ab>", &cfg);
        assert_eq!((ci, cv), (vec![c], vec![s]));
    }

    #[test]
    fn combining_mark_at_start_merges_with_marker() {
        let cfg = HasherConfig { word_ngrams: None, char_ngrams: Some((1, 1)), norm: Norm::None, ..Default::default() };
        let mut got = Vec::new();
        CharGrams::default().hash_word("\u{301}a", (1, 1), 0, &mut |h| got.push(h));
        let expect: Vec<u64> = ["c<\u{301}", "ca", "c>"].iter().map(|g| xxh3_64_with_seed(g.as_bytes(), 0)).collect();
        assert_eq!(got, expect);
        let _ = cfg;
    }

    #[test]
    fn cancelling_signs_are_dropped() {
        // Two grams in the same column with opposite signs must leave no explicit zero behind.
        let cfg = HasherConfig { n_features: 1, word_ngrams: Some((1, 1)), char_ngrams: None, norm: Norm::None, ..Default::default() };
        let mut pos = None;
        let mut neg = None;
        for i in 0..100 {
            let t = format!("tok{i}");
            let (_, s) = feature_index(b'w', &t, &cfg);
            if s > 0.0 { pos.get_or_insert(t) } else { neg.get_or_insert(t) };
        }
        let text = format!("{} {}", pos.unwrap(), neg.unwrap());
        assert_eq!(hash_row(&text, &cfg), (vec![], vec![]));
    }

    #[test]
    fn norm_names_round_trip() {
        for n in [Norm::L1, Norm::L2, Norm::None] {
            assert_eq!(Norm::from_name(n.name()), Some(n));
        }
        assert_eq!(Norm::from_name("L2"), None);
    }

    #[test]
    fn validation_messages() {
        let bad = HasherConfig { word_ngrams: Some((3, 2)), ..Default::default() };
        assert_eq!(bad.validate(), Err(CoreError::invalid("word_ngrams", "expected 1 <= min <= max <= 16, got (3, 2)")));
        let bad = HasherConfig { char_ngrams: Some((0, 2)), ..Default::default() };
        assert!(matches!(bad.validate(), Err(CoreError::InvalidValue { arg, .. }) if arg == "char_ngrams"));
        let bad = HasherConfig { char_ngrams: Some((1, 17)), ..Default::default() };
        assert!(bad.validate().is_err());
        let bad = HasherConfig { n_features: 0, ..Default::default() };
        assert!(matches!(bad.validate(), Err(CoreError::InvalidValue { arg, .. }) if arg == "n_features"));
        let bad = HasherConfig { n_features: 1 << 31, ..Default::default() };
        assert!(bad.validate().is_err());
        let ok = HasherConfig { n_features: i32::MAX as u32, char_ngrams: Some((1, 16)), ..Default::default() };
        assert!(ok.validate().is_ok());
        let bad = HasherConfig { word_ngrams: None, char_ngrams: None, ..Default::default() };
        assert!(bad.validate().is_err());
    }
}

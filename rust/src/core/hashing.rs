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
//! features. UAX #29 (without a dictionary) makes every Han ideograph, hiragana letter and Thai
//! letter cluster a segment of its own; touching segments made only of hiragana, or only of
//! Thai/Lao/Myanmar/Khmer-like scripts (see [`Run`]), are merged back into one token, so that char
//! n-grams see those runs as words. Han stays one token per ideograph (word bigrams capture
//! neighbours) and katakana runs are already single segments. With `lowercase`, each token is
//! lowercased with full Unicode rules (`str::to_lowercase`, which also handles final sigma) after
//! segmentation.
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
//! dropped; with L1 or L2 normalisation, the integer sums are then multiplied by `1 / norm`
//! (computed in f64, the product rounded to f32). Empty rows stay empty.

use std::mem::MaybeUninit;
use std::sync::Mutex;

use rayon::prelude::*;
use unicode_segmentation::UnicodeSegmentation;
use xxhash_rust::xxh3::xxh3_64_with_seed;

use super::error::{CoreError, Result};
use super::recycle::Recycler;

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

/// Scripts whose letters UAX #29 leaves unjoined, so that a segment is one letter (with its marks)
/// and adjacent segments of the same class are merged back into one token.
#[derive(Clone, Copy, PartialEq, Eq)]
enum Run {
    /// Thai, Lao, Myanmar, Khmer, New Tai Lue, Tai Tham and Tai Viet: written without spaces and
    /// left to dictionary segmentation (Line_Break=SA), which UAX #29 does not do.
    Complex,
    /// Hiragana, plus the prolonged sound mark that often follows it.
    Hiragana,
}

/// Fixed block ranges rather than Unicode properties, for the same reason as [`is_emoji`].
fn run_class(c: char) -> Option<Run> {
    match c as u32 {
        0x0E00..=0x0EFF | 0x1000..=0x109F | 0x1780..=0x17FF | 0x1980..=0x19FF | 0x1A20..=0x1AAF => Some(Run::Complex),
        0xA9E0..=0xA9FF | 0xAA60..=0xAADF => Some(Run::Complex),
        0x3041..=0x309F | 0x30FC => Some(Run::Hiragana),
        _ => None,
    }
}

fn segment_run(segment: &str) -> Option<Run> {
    let mut chars = segment.chars();
    let run = run_class(chars.next()?)?;
    chars.all(|c| run_class(c) == Some(run)).then_some(run)
}

/// `unicode_words` for ASCII text, as byte ranges: the segmentation crate's own ASCII rules (runs
/// of letters, digits and `_`, joined across `.` `,` `;` `'` between digits and `.` `:` `'`
/// between letters), kept if they contain a letter or digit. It matches `unicode_words` exactly
/// (see the tests) and runs in about half the time, which is a tenth of a row's cost.
fn ascii_words(text: &[u8], mut f: impl FnMut(usize, usize)) {
    // One table load per byte instead of a chain of range compares.
    const CORE: u8 = 1;
    const ALNUM: u8 = 2;
    const CLASS: [u8; 256] = {
        let mut t = [0u8; 256];
        let mut b = 0;
        while b < 256 {
            let c = b as u8;
            if c.is_ascii_alphanumeric() {
                t[b] = CORE | ALNUM;
            } else if c == b'_' {
                t[b] = CORE;
            }
            b += 1;
        }
        t
    };
    let core = |b: u8| CLASS[b as usize] & CORE != 0;
    let infix = |b: u8, prev: u8, next: u8| match b {
        b'.' | b',' | b';' | b'\'' if prev.is_ascii_digit() && next.is_ascii_digit() => true,
        b'\'' | b'.' | b':' => prev.is_ascii_alphabetic() && next.is_ascii_alphabetic(),
        _ => false,
    };
    let n = text.len();
    let mut i = 0;
    while i < n {
        if !core(text[i]) {
            i += 1;
            continue;
        }
        let start = i;
        let mut alnum = CLASS[text[i] as usize] & ALNUM;
        i += 1;
        while i < n {
            let class = CLASS[text[i] as usize];
            if class & CORE != 0 {
                alnum |= class & ALNUM;
            } else if !(i + 1 < n && infix(text[i], text[i - 1], text[i + 1])) {
                break;
            }
            i += 1;
        }
        if alnum != 0 {
            f(start, i);
        }
    }
}

/// Whether a UAX #29 word segment is a token: `unicode_words`' test (a letter or digit; that
/// crate defers to the standard library's tables when their Unicode versions agree, as they do),
/// or an emoji.
fn is_token_segment(segment: &str) -> bool {
    segment
        .chars()
        .any(|c| surely_alphabetic(c) || c.is_alphanumeric() || is_emoji(c))
}

/// Letters of the busiest scripts, decided without the standard library's table search (a
/// shortcut only: everything here is Alphabetic, see the tests).
#[inline]
fn surely_alphabetic(c: char) -> bool {
    matches!(
        c as u32,
        0x41..=0x5A
            | 0x61..=0x7A
            | 0xC0..=0xD6
            | 0xD8..=0xF6
            | 0xF8..=0x17F
            | 0x391..=0x3A1
            | 0x3A3..=0x3A9
            | 0x3B1..=0x3C9
            | 0x410..=0x44F
            | 0x621..=0x63A
            | 0x641..=0x64A
            | 0xE01..=0xE2E
            | 0x3041..=0x3096
            | 0x30A1..=0x30FA
            | 0x3400..=0x4DBF
            | 0x4E00..=0x9FEF
            | 0xAC00..=0xD7A3
    )
}

/// Calls `f` with every token of `text` in order (not lowercased).
fn for_each_token<'a>(text: &'a str, mut f: impl FnMut(&'a str)) {
    let bytes = text.as_bytes();
    // UAX #29 always breaks between an ASCII space and a following ASCII char other than a space,
    // and no rule looks across that break (those that look past a neighbour need a letter, digit
    // or joiner on the space's side). So the text can be cut there, and the pieces without
    // non-ASCII bytes take the ASCII path, which is many times faster: most non-ASCII product
    // texts are ASCII but for a few symbols or accented words.
    let cut_at = |p: usize| bytes[p - 1] == b' ' && bytes[p] != b' ' && bytes[p].is_ascii();
    let mut pos = 0;
    while pos < bytes.len() {
        let Some(q) = bytes[pos..].iter().position(|b| !b.is_ascii()).map(|r| pos + r) else {
            ascii_words(&bytes[pos..], |s, e| f(&text[pos + s..pos + e]));
            return;
        };
        let start = (pos + 1..=q).rev().find(|&p| cut_at(p)).unwrap_or(pos);
        let end = (q + 1..bytes.len()).find(|&p| cut_at(p)).unwrap_or(bytes.len());
        ascii_words(&bytes[pos..start], |s, e| f(&text[pos + s..pos + e]));
        unicode_tokens(&text[start..end], &mut f);
        pos = end;
    }
}

/// The tokens of `text` by the general path: word-bound segments that are tokens, with touching
/// runs of the same [`Run`] class merged.
fn unicode_tokens<'a>(text: &'a str, f: &mut impl FnMut(&'a str)) {
    // A run of touching same-class segments, as (start, end, class).
    let mut run: Option<(usize, usize, Run)> = None;
    for (offset, segment) in text.split_word_bound_indices() {
        if !is_token_segment(segment) {
            continue;
        }
        let class = segment_run(segment);
        let end = offset + segment.len();
        match (run, class) {
            (Some((start, prev_end, prev)), Some(c)) if prev_end == offset && prev == c => {
                run = Some((start, end, c));
                continue;
            }
            (Some((start, prev_end, _)), _) => f(&text[start..prev_end]),
            (None, _) => {}
        }
        run = None;
        match class {
            Some(c) => run = Some((offset, end, c)),
            None => f(segment),
        }
    }
    if let Some((start, end, _)) = run {
        f(&text[start..end]);
    }
}

fn lower(word: &str) -> String {
    let mut out = String::with_capacity(word.len());
    push_lowercase(&mut out, word);
    out
}

/// Appends exactly what `str::to_lowercase` returns, without allocating: that function differs
/// from mapping each char only for capital sigma, whose form depends on its neighbours.
fn push_lowercase(out: &mut String, word: &str) {
    if word.is_ascii() {
        let start = out.len();
        out.push_str(word);
        out[start..].make_ascii_lowercase();
        return;
    }
    if word.chars().all(is_caseless) {
        out.push_str(word);
        return;
    }
    if word.contains('Σ') {
        out.push_str(&word.to_lowercase());
        return;
    }
    for c in word.chars() {
        if c.is_ascii() {
            out.push(c.to_ascii_lowercase());
        } else {
            out.extend(c.to_lowercase());
        }
    }
}

/// Scripts without case (Hebrew to Myanmar, kana to CJK ideographs, Hangul syllables), whose words
/// can skip the lowercase table search; the tests check that lowercasing leaves each unchanged.
#[inline]
fn is_caseless(c: char) -> bool {
    matches!(c as u32, 0x590..=0x109F | 0x3040..=0x9FFF | 0xAC00..=0xD7A3)
}

/// Whether `c` is a grapheme cluster of its own next to any other such char, so that words made
/// only of these need no cluster segmentation. It excludes every class that can join (Extend, ZWJ,
/// SpacingMark, Prepend, Hangul jamo, regional indicators, CR); the tests check each char.
#[inline]
fn is_simple_char(c: char) -> bool {
    matches!(
        c as u32,
        0x20..=0x7E
            | 0xA0..=0x2FF
            | 0x370..=0x482
            | 0x48A..=0x52F
            | 0x620..=0x64A
            | 0x660..=0x66F
            | 0x671..=0x6D3
            | 0x3041..=0x3096
            | 0x30A1..=0x30FF
            | 0x3400..=0x4DBF
            | 0x4E00..=0x9FFF
            | 0xAC00..=0xD7A3
            | 0xF900..=0xFAFF
            | 0xFF01..=0xFF9D
    )
}

/// Calls `f` with every token of `text`, lowercased when asked, without allocating per token:
/// lowercased tokens are built in `buf`.
pub(crate) fn for_each_word(text: &str, lowercase: bool, buf: &mut String, mut f: impl FnMut(&str)) {
    for_each_token(text, |w| {
        if lowercase {
            buf.clear();
            push_lowercase(buf, w);
            f(buf);
        } else {
            f(w);
        }
    });
}

/// Number of extended grapheme clusters in `word`.
pub(crate) fn cluster_count(word: &str) -> usize {
    if word.is_ascii() {
        word.len()
    } else if word.chars().all(is_simple_char) {
        word.chars().count()
    } else {
        word.graphemes(true).count()
    }
}

/// The tokens of `text` as defined in the module docs, lowercased when asked.
pub fn words(text: &str, lowercase: bool) -> Vec<String> {
    let mut out = Vec::new();
    for_each_token(text, |w| out.push(if lowercase { lower(w) } else { w.to_owned() }));
    out
}

/// Zero bytes kept after every buffer that [`with_kind`] reads from.
const PAD: usize = 16;

/// `[kind] ++ buf[at..at + 15]`, built in a register.
///
/// Most grams fit in these 16 bytes. Hashing such a copy, rather than writing the kind byte into
/// the shared buffer just before hashing across it, avoids a failed store-to-load forwarding per
/// gram, which was the largest single cost of the hot loop.
#[inline(always)]
fn with_kind(kind: u8, buf: &[u8], at: usize) -> u128 {
    let bytes: [u8; 16] = buf[at..at + 16].try_into().expect("16-byte window");
    (u128::from_le_bytes(bytes) << 8) | u128::from(kind)
}

/// `xxh3_64_with_seed` for inputs of up to 16 bytes held in a register, with the seed-dependent
/// constants of xxh3's short-input paths worked out once.
///
/// Nearly every gram is that short (every ASCII char 3-5 gram, most word unigrams and bigrams).
/// The library reads its input from memory, which here meant spilling the window to the stack
/// and loading it back at a variable offset: a third of the cost of hashing such a gram. The
/// paths below are xxh3's own (the tests compare them with the library for every length).
#[derive(Clone, Copy)]
struct ShortHash {
    seed: u64,
    flip_1to3: u64,
    flip_4to8: u64,
    flip_9to16: (u64, u64),
}

impl ShortHash {
    fn new(seed: u64) -> ShortHash {
        // Bytes 0..56 of xxh3's default secret, as little-endian words.
        const S: [u64; 7] = [
            0xbe4b_a423_396c_feb8,
            0x1cad_21f7_2c81_017c,
            0xdb97_9083_e96d_d4de,
            0x1f67_b3b7_a4a4_4072,
            0x78e5_c0cc_4ee6_79cb,
            0x2172_ffcc_7dd0_5a82,
            0x8e24_43f7_7446_08b8,
        ];
        let seed_4to8 = seed ^ (u64::from((seed as u32).swap_bytes()) << 32);
        ShortHash {
            seed,
            flip_1to3: u64::from((S[0] as u32) ^ ((S[0] >> 32) as u32)).wrapping_add(seed),
            flip_4to8: (S[1] ^ S[2]).wrapping_sub(seed_4to8),
            flip_9to16: ((S[3] ^ S[4]).wrapping_add(seed), (S[5] ^ S[6]).wrapping_sub(seed)),
        }
    }

    /// The hash of the first `len` bytes of `window` (little-endian).
    #[inline(always)]
    fn hash(self, window: u128, len: usize) -> u64 {
        match len {
            4..=8 => {
                let w = window as u64;
                let first = w as u32;
                let last = (w >> (8 * (len - 4))) as u32;
                let mut h = (u64::from(last).wrapping_add(u64::from(first) << 32)) ^ self.flip_4to8;
                h ^= h.rotate_left(49) ^ h.rotate_left(24);
                h = h.wrapping_mul(0x9FB2_1C65_1E98_DF25);
                h ^= (h >> 35).wrapping_add(len as u64);
                h = h.wrapping_mul(0x9FB2_1C65_1E98_DF25);
                h ^ (h >> 28)
            }
            9..=16 => {
                let lo = (window as u64) ^ self.flip_9to16.0;
                let hi = ((window >> (8 * (len - 8))) as u64) ^ self.flip_9to16.1;
                let product = u128::from(lo) * u128::from(hi);
                let mut h = (len as u64)
                    .wrapping_add(lo.swap_bytes())
                    .wrapping_add(hi)
                    .wrapping_add((product as u64) ^ ((product >> 64) as u64));
                h ^= h >> 37;
                h = h.wrapping_mul(0x1656_6791_9E37_79F9);
                h ^ (h >> 32)
            }
            1..=3 => {
                let byte = |i: usize| u32::from((window >> (8 * i)) as u8);
                let combo = (byte(0) << 16) | (byte(len >> 1) << 24) | byte(len - 1) | ((len as u32) << 8);
                let mut h = u64::from(combo) ^ self.flip_1to3;
                h ^= h >> 33;
                h = h.wrapping_mul(0xC2B2_AE3D_27D4_EB4F);
                h ^= h >> 29;
                h = h.wrapping_mul(0x1656_67B1_9E37_79F9);
                h ^ (h >> 32)
            }
            _ => xxh3_64_with_seed(&window.to_le_bytes()[..len.min(16)], self.seed),
        }
    }
}

/// Reusable buffers for hashing the char n-grams of one word at a time.
#[derive(Default)]
pub(crate) struct CharGrams {
    /// `[slot] ++ "<" ++ word ++ ">" ++ [0; PAD]`. Grams too long for [`with_kind`] are hashed in
    /// place, with the byte before the gram overwritten by the kind byte.
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
        if word.chars().all(is_simple_char) {
            self.bounds.extend(self.wrapped.char_indices().map(|(o, _)| o));
        } else {
            self.bounds.extend(self.wrapped.grapheme_indices(true).map(|(o, _)| o));
        }
        self.bounds.push(self.wrapped.len());
        self.buf.clear();
        self.buf.push(KIND_CHAR);
        self.buf.extend_from_slice(self.wrapped.as_bytes());
        self.buf.extend_from_slice(&[0; PAD]);
        let bounds = &self.bounds;
        emit_char_grams(&mut self.buf, bounds.len() - 1, |i| bounds[i], range, seed, sink);
    }

    /// [`Self::hash_word`] for ASCII, where every byte is its own grapheme cluster (CR LF, the
    /// one multi-byte ASCII cluster, never occurs inside a word).
    fn hash_ascii(&mut self, word: &[u8], range: (usize, usize), seed: u64, sink: &mut impl FnMut(u64)) {
        self.buf.clear();
        self.buf.push(KIND_CHAR);
        self.buf.push(b'<');
        self.buf.extend_from_slice(word);
        self.buf.push(b'>');
        self.buf.extend_from_slice(&[0; PAD]);
        emit_char_grams(&mut self.buf, word.len() + 2, |i| i, range, seed, sink);
    }
}

/// `buf` is laid out as in [`CharGrams::buf`], `m` is the number of clusters of the wrapped word
/// and `bound(i)` the byte offset of cluster i in it (`bound(m)` its length).
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
    let short_hash = ShortHash::new(seed);
    for i in 0..=m - lo {
        let start = bound(i);
        let short = with_kind(KIND_CHAR, buf, start + 1);
        for n in lo..=hi.min(m - i) {
            let len = bound(i + n) - start + 1;
            let h = if len <= 16 {
                short_hash.hash(short, len)
            } else {
                // Bytes before `start` belong to grams already hashed, so the slot is free.
                buf[start] = KIND_CHAR;
                xxh3_64_with_seed(&buf[start..start + len], seed)
            };
            sink(h);
        }
    }
}

/// Sorts `keys` (below `2^key_bits`) by column, i.e. ignoring the sign bit: merging only needs
/// equal columns to be adjacent.
///
/// LSD radix sort with digits sized to the row; at the usual row sizes (hundreds to thousands of
/// keys) that is two to three times faster than `sort_unstable`.
fn sort_keys(keys: &mut [u32], tmp: &mut Vec<u32>, counts: &mut Vec<[u32; MAX_BUCKETS]>, key_bits: u32) {
    let n = keys.len();
    if n < 128 {
        keys.sort_unstable();
        return;
    }
    let col_bits = key_bits.saturating_sub(1).max(1);
    // Each pass costs its bucket count plus two touches per key, so small rows get narrower
    // digits (and more passes) than large ones; never more than three passes.
    let max_digit = (usize::BITS - n.leading_zeros()).clamp(6, MAX_DIGIT);
    let max_digit = if col_bits.div_ceil(max_digit) > 3 {
        MAX_DIGIT
    } else {
        max_digit
    };
    let passes = col_bits.div_ceil(max_digit);
    let digit = col_bits.div_ceil(passes);
    match passes {
        1 => radix_passes::<1>(keys, tmp, counts, digit),
        2 => radix_passes::<2>(keys, tmp, counts, digit),
        _ => radix_passes::<3>(keys, tmp, counts, digit),
    }
}

/// Widest digit [`sort_keys`] uses, in bits.
const MAX_DIGIT: u32 = 11;
const MAX_BUCKETS: usize = 1 << MAX_DIGIT;

/// `P` passes of `digit` bits over the column (bits 1 and up); a constant `P` lets the histogram
/// loop unroll.
fn radix_passes<const P: usize>(
    keys: &mut [u32],
    tmp: &mut Vec<u32>,
    counts: &mut Vec<[u32; MAX_BUCKETS]>,
    digit: u32,
) {
    let buckets = 1usize << digit;
    // Fixed-size tables and a mask that provably fits them let the compiler drop the bounds
    // checks of the two innermost loops.
    let mask = ((buckets - 1) & (MAX_BUCKETS - 1)) as u32;
    if counts.len() < P {
        counts.resize(P, [0; MAX_BUCKETS]);
    }
    let counts: &mut [[u32; MAX_BUCKETS]; P] = (&mut counts[..P]).try_into().expect("P tables");
    for count in counts.iter_mut() {
        count[..buckets].fill(0);
    }
    for &k in keys.iter() {
        for (p, count) in counts.iter_mut().enumerate() {
            count[((k >> (1 + digit * p as u32)) & mask) as usize] += 1;
        }
    }
    let n = keys.len();
    // Every slot gets overwritten, so `tmp` only ever grows and is never cleared.
    if tmp.len() < n {
        tmp.resize(n, 0);
    }
    let (mut src, mut dst) = (keys, &mut tmp[..n]);
    for (p, count) in counts.iter_mut().enumerate() {
        let shift = 1 + digit * p as u32;
        let mut sum = 0;
        for c in count[..buckets].iter_mut() {
            let here = *c;
            *c = sum;
            sum += here;
        }
        for &k in src.iter() {
            let d = ((k >> shift) & mask) as usize;
            dst[count[d] as usize] = k;
            count[d] += 1;
        }
        std::mem::swap(&mut src, &mut dst);
    }
    if P % 2 == 1 {
        dst.copy_from_slice(src);
    }
}

/// Column and sign of a hash, packed as a sort key: `column << 1 | negative`.
#[derive(Clone, Copy)]
struct KeyOf {
    n_features: u64,
    /// `n_features - 1` when it is a power of two: a 64-bit division per gram is a measurable
    /// share of the run time, and for the usual power-of-two widths the mask gives the same column.
    pow2_mask: Option<u64>,
    sign_mask: u64,
}

impl KeyOf {
    fn new(cfg: &HasherConfig) -> KeyOf {
        let n_features = u64::from(cfg.n_features.max(1));
        KeyOf {
            n_features,
            pow2_mask: n_features.is_power_of_two().then(|| n_features - 1),
            sign_mask: u64::from(cfg.signed),
        }
    }

    #[inline(always)]
    fn key(self, h: u64) -> u32 {
        let col = match self.pow2_mask {
            Some(m) => h & m,
            None => h % self.n_features,
        };
        // col < 2^31 (validate), so the key fits in 32 bits.
        ((col << 1) | ((h >> 63) & self.sign_mask)) as u32
    }
}

/// Writes keys to consecutive slots of a slice long enough for all of them.
struct KeyWriter<'a> {
    out: &'a mut [u32],
    n: usize,
    key_of: KeyOf,
}

impl<'a> KeyWriter<'a> {
    /// A writer to `keys[at..at + bound]`, growing `keys` as needed.
    fn new(keys: &'a mut Vec<u32>, at: usize, bound: usize, key_of: KeyOf) -> Self {
        if keys.len() < at + bound {
            keys.resize(at + bound, 0);
        }
        KeyWriter {
            out: &mut keys[at..],
            n: 0,
            key_of,
        }
    }

    #[inline(always)]
    fn push(&mut self, h: u64) {
        self.out[self.n] = self.key_of.key(h);
        self.n += 1;
    }
}

/// Per-thread buffers, reused across rows so that a row allocates nothing once they have grown
/// (except to lowercase words containing a capital sigma).
#[derive(Default)]
struct Scratch {
    /// `[slot] ++ w0 ++ " " ++ w1 ++ " " ++ ... ++ [0; PAD]`, the row's lowercased words. Word
    /// n-grams are slices of it; those too long for [`with_kind`] are hashed in place with the
    /// separator before their first word overwritten by the kind byte.
    arena: Vec<u8>,
    /// Byte range of each word in `arena`.
    spans: Vec<(usize, usize)>,
    /// `[slot] ++ "<" ++ w0 ++ ">" ++ "<" ++ w1 ++ ">" ++ ... ++ [0; PAD]` for the words made of
    /// [`is_simple_char`]s, whose char grams are hashed after tokenizing, with the byte range of
    /// each wrapped word and whether it is ASCII.
    wrapped: Vec<u8>,
    wrapped_spans: Vec<(usize, usize, bool)>,
    /// Cluster (char) offsets of the current non-ASCII wrapped word.
    bounds: Vec<usize>,
    /// The current non-ASCII word, lowercased.
    lowered: String,
    grams: CharGrams,
    /// `column << 1 | negative` per occurrence, so one integer sort groups columns.
    keys: Vec<u32>,
    tmp: Vec<u32>,
    counts: Vec<[u32; MAX_BUCKETS]>,
    /// `(column, summed signs)` per distinct column, in column order.
    cols: Vec<i32>,
    totals: Vec<i32>,
}

impl Scratch {
    /// Appends the row's sorted columns and normalised values to `idx` and `val`.
    fn hash(&mut self, text: &str, cfg: &HasherConfig, idx: &mut Vec<i32>, val: &mut Vec<f32>) {
        let Scratch {
            arena,
            spans,
            wrapped,
            wrapped_spans,
            bounds,
            lowered,
            grams,
            keys,
            tmp,
            counts,
            cols,
            totals,
        } = self;
        arena.clear();
        spans.clear();
        wrapped.clear();
        wrapped_spans.clear();
        wrapped.push(0);
        arena.push(0);
        // `keys[..nk]` are the row's keys. The Vec only ever grows, so that it need not be
        // zeroed for each row: every slot read is written first.
        let mut nk = 0;

        let n_features = u64::from(cfg.n_features.max(1));
        let key_of = KeyOf::new(cfg);
        let seed = cfg.seed;
        let char_range = cfg.char_ngrams;
        // Grams per start position.
        let span =
            |r: Option<(usize, usize)>| r.map_or(0, |(lo, hi): (usize, usize)| (hi + 1).saturating_sub(lo.max(1)));

        for_each_token(text, |w| {
            let start = arena.len();
            let (ascii, simple) = if w.is_ascii() {
                if char_range.is_some() {
                    // Words are short: a byte loop filling both buffers beats two copies.
                    wrapped_spans.push((wrapped.len(), wrapped.len() + w.len() + 2, true));
                    wrapped.push(b'<');
                    for &b in w.as_bytes() {
                        let b = if cfg.lowercase { b.to_ascii_lowercase() } else { b };
                        arena.push(b);
                        wrapped.push(b);
                    }
                    wrapped.push(b'>');
                    spans.push((start, arena.len()));
                    arena.push(b' ');
                    return;
                }
                arena.extend_from_slice(w.as_bytes());
                if cfg.lowercase {
                    arena[start..].make_ascii_lowercase();
                }
                (true, true)
            } else {
                let w = if cfg.lowercase {
                    lowered.clear();
                    push_lowercase(lowered, w);
                    lowered.as_str()
                } else {
                    w
                };
                arena.extend_from_slice(w.as_bytes());
                let simple = w.chars().all(is_simple_char);
                if let (Some(range), false) = (char_range, simple) {
                    let mut out = KeyWriter::new(keys, nk, (w.len() + 2) * span(char_range) + 1, key_of);
                    grams.hash_word(w, range, seed, &mut |h| out.push(h));
                    nk += out.n;
                }
                (w.is_ascii(), simple)
            };
            if simple && char_range.is_some() {
                // Hashed once the row is tokenized, straight from `wrapped`: reading bytes stored
                // moments earlier with wider loads would stall on store forwarding.
                let ws = wrapped.len();
                wrapped.push(b'<');
                wrapped.extend_from_slice(&arena[start..]);
                wrapped.push(b'>');
                wrapped_spans.push((ws, wrapped.len(), ascii));
            }
            spans.push((start, arena.len()));
            arena.push(b' ');
        });
        arena.extend_from_slice(&[0; PAD]);
        wrapped.extend_from_slice(&[0; PAD]);

        // Every key below goes to a slot of a slice sized in advance (an upper bound: a wrapped
        // word of b bytes has at most b clusters, so at most b grams per n), with the count in a
        // local. Pushing to the Vec instead kept its length in memory, a store-to-load
        // dependency from each gram to the next that cost a tenth of the run time.
        let bound = wrapped.len() * span(char_range) + wrapped_spans.len() + spans.len() * span(cfg.word_ngrams);
        let mut out = KeyWriter::new(keys, nk, bound, key_of);
        let mut sink = |h: u64| out.push(h);

        if let Some(range) = char_range {
            for &(ws, we, ascii) in wrapped_spans.iter() {
                // `wrapped[ws - 1]` (the previous word's '>', or the leading slot) is free: the
                // previous word is done.
                if ascii {
                    emit_char_grams(&mut wrapped[ws - 1..], we - ws, |i| i, range, seed, &mut sink);
                } else {
                    bounds.clear();
                    bounds.extend((ws..we).filter(|&j| wrapped[j] & 0xc0 != 0x80).map(|j| j - ws));
                    bounds.push(we - ws);
                    let m = bounds.len() - 1;
                    emit_char_grams(&mut wrapped[ws - 1..], m, |i| bounds[i], range, seed, &mut sink);
                }
            }
        }

        if let Some((lo, hi)) = cfg.word_ngrams {
            let lo = lo.max(1);
            let short_hash = ShortHash::new(seed);
            for i in 0..spans.len() {
                let start = spans[i].0 - 1;
                let short = with_kind(KIND_WORD, arena, start + 1);
                for n in lo..=hi {
                    let Some(&(_, end)) = spans.get(i + n - 1) else { break };
                    let len = end - start;
                    let h = if len <= 16 {
                        short_hash.hash(short, len)
                    } else {
                        // Windows starting before word i are done, so its separator is free.
                        arena[start] = KIND_WORD;
                        xxh3_64_with_seed(&arena[start..end], seed)
                    };
                    sink(h);
                }
            }
        }

        nk += out.n;
        let keys = &mut keys[..nk];
        let key_bits = u64::BITS - ((n_features << 1) - 1).leading_zeros();
        sort_keys(keys, tmp, counts, key_bits);

        // Sum each column's signs without branching on where columns change, which is
        // unpredictable: every key writes its column's running total at slot `j`, and `j` moves
        // on when the column does, unless the finished column summed to zero (then the next
        // column overwrites it).
        let Some((&k0, rest)) = keys.split_first() else { return };
        // Only ever grow: every slot read below is written first.
        if cols.len() < keys.len() {
            cols.resize(keys.len(), 0);
            totals.resize(keys.len(), 0);
        }
        let sign = |k: u32| 1 - 2 * (k & 1) as i32;
        // Integer sums are exact, and avoid a chain of dependent float additions.
        let (mut sum_abs, mut sum_sq) = (0u64, 0u64);
        let (mut col, mut total) = (k0 >> 1, sign(k0));
        let mut j = 0;
        for &k in rest {
            // validate() bounds n_features by i32::MAX, so columns fit.
            cols[j] = col as i32;
            totals[j] = total;
            // All ones when the column changes. Masks rather than `if`, which the compiler turns
            // back into the branch this loop exists to avoid.
            let next = -i32::from(k >> 1 != col);
            let done = u64::from((total & next).unsigned_abs());
            sum_abs += done;
            sum_sq += done * done;
            j += usize::from(done != 0);
            total = (total & !next) + sign(k);
            col = k >> 1;
        }
        cols[j] = col as i32;
        totals[j] = total;
        sum_abs += u64::from(total.unsigned_abs());
        sum_sq += u64::from(total.unsigned_abs()).pow(2);
        j += usize::from(total != 0);

        // The output is written once, from these cached buffers: sizing it first (zeroing, or
        // growing past its capacity) and scaling in place were each a visible cost.
        let norm = match cfg.norm {
            Norm::L1 => sum_abs as f64,
            Norm::L2 => (sum_sq as f64).sqrt(),
            Norm::None => 1.0,
        };
        let totals = &totals[..j];
        idx.extend_from_slice(&cols[..j]);
        if norm != 1.0 && norm != 0.0 {
            let inv = 1.0 / norm;
            val.extend(totals.iter().map(|&t| (f64::from(t as f32) * inv) as f32));
        } else {
            val.extend(totals.iter().map(|&t| t as f32));
        }
    }
}

/// One row: sorted unique column indices and their (normalised) values.
///
/// `cfg` is expected to have passed [`HasherConfig::validate`].
pub fn hash_row(text: &str, cfg: &HasherConfig) -> (Vec<u32>, Vec<f32>) {
    let (mut idx, mut val) = (Vec::new(), Vec::new());
    Scratch::default().hash(text, cfg, &mut idx, &mut val);
    (idx.into_iter().map(|c| c as u32).collect(), val)
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

impl Part {
    /// Hashes `texts` into `part`. Growing the output by doubling was measured to cost a
    /// quarter of the run time in copies and page faults, and reserving from a fixed guess of
    /// entries per byte over-reserves up to twofold, which pushes large outputs past the size
    /// where the allocator stops reusing freed memory. So a sample of rows is hashed first and
    /// the rest is reserved from its measured rate. Writes into `part`'s buffers (cleared first,
    /// their capacity kept).
    fn hash_into(mut part: Part, s: &mut Scratch, texts: &[&str], cfg: &HasherConfig) -> Part {
        let bytes = |texts: &[&str]| texts.iter().map(|t| t.len()).sum::<usize>() as f64;
        let sample = (texts.len() / 16).clamp(1, 256).min(texts.len());
        let span = |r: Option<(usize, usize)>| r.map_or(0.0, |(lo, hi)| (hi + 1).saturating_sub(lo) as f64);
        let guess = (0.8 * span(cfg.char_ngrams) + 0.25 * span(cfg.word_ngrams)).min(4.0);
        let first = (bytes(&texts[..sample]) * guess) as usize;
        part.nnz.clear();
        part.indices.clear();
        part.data.clear();
        part.nnz.reserve(texts.len());
        part.indices.reserve(first);
        part.data.reserve(first);
        for text in &texts[..sample] {
            part.push_row(s, text, cfg);
        }
        let rate = part.indices.len() as f64 / bytes(&texts[..sample]).max(1.0);
        let expected = rate * bytes(&texts[sample..]);
        // Generous headroom: the first rows are no fair sample (on the CrowdFlower products the
        // rest has 15% more entries per byte), and outgrowing the reservation near the end
        // copies the whole output when the allocator cannot move it in place. Unused capacity
        // costs address space only; the expected part is faulted in up front.
        let rest = (expected * 1.3) as usize + 1024;
        // Recycled buffers (see `transform`) usually have room already: growing them would copy.
        if part.indices.capacity() - part.indices.len() < (expected * 1.1) as usize {
            part.indices.reserve(rest);
            part.data.reserve(rest);
        }
        prefault(&part.indices, (expected * 1.1) as usize * 4);
        prefault(&part.data, (expected * 1.1) as usize * 4);
        for text in &texts[sample..] {
            part.push_row(s, text, cfg);
        }
        part
    }

    fn push_row(&mut self, s: &mut Scratch, text: &str, cfg: &HasherConfig) {
        let before = self.indices.len();
        s.hash(text, cfg, &mut self.indices, &mut self.data);
        self.nnz.push(self.indices.len() - before);
    }
}

/// Faults in the first `bytes` bytes of `v`'s spare capacity in one system call.
///
/// The output is written once, front to back, into fresh memory. Taking one page fault per 4 KiB
/// page as the writes reach it was about a seventh of the run time (13 thousand faults for 10
/// thousand product texts); populating the range up front in one call costs about half as much.
#[cfg(target_os = "linux")]
fn prefault<T>(v: &Vec<T>, bytes: usize) {
    const PAGE: usize = 4096;
    let start = v.as_ptr_range().end as usize;
    let end = v.as_ptr() as usize + v.capacity() * std::mem::size_of::<T>();
    let (lo, hi) = (start.next_multiple_of(PAGE), (start + bytes).min(end) & !(PAGE - 1));
    if lo < hi {
        // SAFETY: the range lies inside `v`'s own allocation, and MADV_POPULATE_WRITE only
        // allocates the pages now rather than on first write (never changing contents or what is
        // mapped). Kernels before 5.14 reject it, which just leaves the faults to the writes.
        unsafe {
            libc::madvise(lo as *mut libc::c_void, hi - lo, libc::MADV_POPULATE_WRITE);
        }
    }
}

#[cfg(not(target_os = "linux"))]
fn prefault<T>(_: &Vec<T>, _: usize) {}

/// Spare output buffers of [`transform`] (see [`crate::core::recycle`]).
pub struct OutputBuffers {
    pub indices: Recycler<i32>,
    pub values: Recycler<f32>,
}

impl OutputBuffers {
    pub const fn new() -> Self {
        OutputBuffers {
            indices: Recycler::new(),
            values: Recycler::new(),
        }
    }

    /// Kept buffers for at least `len` entries each, if both are there (one alone goes back).
    fn take_kept(&self, len: usize) -> Option<(Vec<i32>, Vec<f32>)> {
        match (self.indices.take_kept(len), self.values.take_kept(len)) {
            (Some(i), Some(d)) => Some((i, d)),
            (i, d) => {
                if let Some(v) = i {
                    self.indices.give(v);
                }
                if let Some(v) = d {
                    self.values.give(v);
                }
                None
            }
        }
    }
}

impl Default for OutputBuffers {
    fn default() -> Self {
        Self::new()
    }
}

/// Where the bindings hand a transform's output buffers back once Python has dropped them, for the
/// next [`transform`] to write into.
pub static OUTPUT_BUFFERS: OutputBuffers = OutputBuffers::new();

/// Hashes every text into one row of a CSR matrix, rows in parallel on the current rayon pool.
///
/// `cfg` is expected to have passed [`HasherConfig::validate`]. The result does not depend on the
/// number of threads: rows are independent and concatenated in input order.
pub fn transform(texts: &[&str], cfg: &HasherConfig) -> Csr {
    transform_reusing(texts, cfg, &OUTPUT_BUFFERS)
}

/// [`transform`] with the output written into buffers from `spare` where it has fitting ones.
pub fn transform_reusing(texts: &[&str], cfg: &HasherConfig, spare: &OutputBuffers) -> Csr {
    let threads = rayon::current_num_threads();
    // With output buffers handed back by an earlier call (mapped already), one thread hashes
    // straight into them: no parts, no copy, no page faults. A text yields more than one entry per
    // byte for any n-gram setting that hashes at all, hence the size asked for.
    let kept = (threads == 1 && texts.len() >= 2)
        .then(|| spare.take_kept(texts.iter().map(|t| t.len()).sum()))
        .flatten();
    if texts.len() < 2 || kept.is_some() {
        let part = kept.map_or_else(Part::default, |(indices, data)| Part {
            nnz: Vec::new(),
            indices,
            data,
        });
        let out = Part::hash_into(part, &mut Scratch::default(), texts, cfg);
        return assemble(out.nnz.iter().copied(), out.indices, out.data);
    }

    // Several chunks per thread balance uneven text lengths; chunks rather than single rows keep
    // per-task overhead and allocations down. One thread without kept output buffers takes this
    // path too: hashing into the kept part buffers and copying once into an exact-size output
    // measured faster on the CrowdFlower products than writing straight into a fresh, over-reserved
    // output, which is faulted in a page at a time.
    let chunk = (texts.len() / (threads * 8)).clamp(1, 256);
    let spare_parts = Mutex::new(take_spare_parts());
    let parts: Vec<Part> = texts
        .par_chunks(chunk)
        .map_init(Scratch::default, |s, rows| {
            let reuse = spare_parts
                .lock()
                .unwrap_or_else(|e| e.into_inner())
                .pop()
                .unwrap_or_default();
            Part::hash_into(reuse, s, rows, cfg)
        })
        .collect();

    let nnz: usize = parts.iter().map(|p| p.indices.len()).sum();
    let mut indices = spare.indices.take(nnz);
    let mut data = spare.values.take(nnz);
    let mut targets = Vec::with_capacity(parts.len());
    {
        // Written once, in parallel, without zeroing first: every slot of `..nnz` is covered by
        // exactly one part. A fresh allocation's page faults are spread over the threads this way.
        let (mut rest_i, mut rest_d) = (
            &mut indices.spare_capacity_mut()[..nnz],
            &mut data.spare_capacity_mut()[..nnz],
        );
        for part in &parts {
            let (i, ri) = rest_i.split_at_mut(part.indices.len());
            let (d, rd) = rest_d.split_at_mut(part.data.len());
            targets.push((i, d));
            (rest_i, rest_d) = (ri, rd);
        }
        parts.par_iter().zip(targets).for_each(|(part, (i, d))| {
            write_slice(i, &part.indices);
            write_slice(d, &part.data);
        });
    }
    // SAFETY: the loop above initialised all of `..nnz` (the parts' lengths sum to `nnz`).
    unsafe {
        indices.set_len(nnz);
        data.set_len(nnz);
    }
    let csr = assemble(parts.iter().flat_map(|p| p.nnz.iter().copied()), indices, data);
    keep_spare_parts(parts);
    csr
}

fn write_slice<T: Copy>(dst: &mut [MaybeUninit<T>], src: &[T]) {
    for (d, &s) in dst.iter_mut().zip(src) {
        d.write(s);
    }
}

/// Part buffers kept from the last parallel call for the next one. Fresh memory is faulted in a
/// page at a time (about 13 thousand faults for the CrowdFlower products, a fifth of the CPU
/// time), and the parallel path would otherwise fault in its parts and then the output on every
/// call; kept parts are already mapped. Bounded: at most [`SPARE_BYTES`] are kept.
static SPARE_PARTS: Mutex<Vec<Part>> = Mutex::new(Vec::new());
const SPARE_BYTES: usize = 128 << 20;

fn take_spare_parts() -> Vec<Part> {
    std::mem::take(&mut *SPARE_PARTS.lock().unwrap_or_else(|e| e.into_inner()))
}

fn keep_spare_parts(parts: Vec<Part>) {
    let mut kept = Vec::new();
    let mut bytes = 0;
    for part in parts {
        bytes += 4 * (part.indices.capacity() + part.data.capacity()) + 8 * part.nnz.capacity();
        if bytes > SPARE_BYTES {
            break;
        }
        kept.push(part);
    }
    *SPARE_PARTS.lock().unwrap_or_else(|e| e.into_inner()) = kept;
}

fn assemble(row_nnz: impl Iterator<Item = usize>, indices: Vec<i32>, data: Vec<f32>) -> Csr {
    let mut indptr = Vec::with_capacity(row_nnz.size_hint().0 + 1);
    indptr.push(0i64);
    let mut end = 0i64;
    for n in row_nnz {
        end += n as i64;
        indptr.push(end);
    }
    Csr { indptr, indices, data }
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

    /// One step of a 32-bit xorshift: reproducible test inputs without a dependency.
    fn xorshift32(state: &mut u32) {
        *state ^= *state << 13;
        *state ^= *state >> 17;
        *state ^= *state << 5;
    }

    /// A text of fewer than `max_pieces` pieces drawn from `pieces` (the draw advances `state`).
    fn random_text(pieces: &[&str], state: &mut u32, max_pieces: u32) -> String {
        (0..(*state % max_pieces))
            .map(|_| {
                xorshift32(state);
                pieces[*state as usize % pieces.len()]
            })
            .collect()
    }

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
        (
            acc.keys().copied().collect(),
            acc.values().map(|v| (v / norm) as f32).collect(),
        )
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
        "Supercalifragilisticexpialidocious antidisestablishmentarianism pneumonoultramicroscopic x",
    ];

    /// Long enough for the bucketed sort path, with words of every length up to 20 bytes.
    fn long_text() -> String {
        let mut state = 7u32;
        (0..400)
            .map(|i| {
                state = state.wrapping_mul(1_103_515_245).wrapping_add(12_345);
                let len = 1 + (state >> 16) as usize % 20;
                let word: String = (0..len)
                    .map(|j| (b'a' + ((state >> (j % 16)) as u8 % 26)) as char)
                    .collect();
                if i % 7 == 0 {
                    word.to_uppercase()
                } else {
                    word
                }
            })
            .collect::<Vec<_>>()
            .join(" ")
    }

    fn configs() -> Vec<HasherConfig> {
        let base = HasherConfig::default();
        vec![
            base.clone(),
            HasherConfig {
                n_features: 16,
                ..base.clone()
            },
            HasherConfig {
                n_features: 1000,
                seed: 42,
                signed: false,
                norm: Norm::L1,
                ..base.clone()
            },
            HasherConfig {
                word_ngrams: None,
                char_ngrams: Some((1, 3)),
                lowercase: false,
                ..base.clone()
            },
            HasherConfig {
                word_ngrams: Some((2, 4)),
                char_ngrams: None,
                norm: Norm::None,
                ..base.clone()
            },
            HasherConfig {
                char_ngrams: Some((4, 16)),
                ..base.clone()
            },
            HasherConfig {
                char_ngrams: Some((6, 6)),
                n_features: 3,
                ..base.clone()
            },
            HasherConfig {
                word_ngrams: Some((1, 16)),
                n_features: i32::MAX as u32,
                ..base.clone()
            },
            HasherConfig {
                word_ngrams: Some((3, 3)),
                char_ngrams: Some((15, 15)),
                n_features: 77_777,
                ..base
            },
        ]
    }

    #[test]
    fn matches_naive_reference() {
        for cfg in configs() {
            cfg.validate().unwrap();
            let long = long_text();
            for text in TEXTS.iter().copied().chain([long.as_str()]) {
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
    fn short_hash_is_xxh3() {
        let mut state = 0x51f1_5eedu64;
        for seed in [0, 1, 42, 0xdead_beef, u64::MAX, 1 << 32, 0x0123_4567_89ab_cdef] {
            let short_hash = ShortHash::new(seed);
            for _ in 0..2000 {
                state ^= state << 13;
                state ^= state >> 7;
                state ^= state << 17;
                let window = u128::from(state) << 64 | u128::from(state.rotate_left(29) ^ seed);
                for len in 0..=16 {
                    let bytes = window.to_le_bytes();
                    assert_eq!(
                        short_hash.hash(window, len),
                        xxh3_64_with_seed(&bytes[..len], seed),
                        "seed={seed} len={len} {window:x}"
                    );
                }
            }
        }
    }

    #[test]
    fn sort_keys_sorts() {
        let (mut tmp, mut counts) = (Vec::new(), Vec::new());
        for (n, bits) in [
            (0usize, 1u32),
            (5, 8),
            (63, 21),
            (64, 21),
            (1000, 9),
            (3000, 32),
            (500, 17),
            (100_000, 21),
            (300, 3),
        ] {
            let mut state = n as u32 + 1;
            let mut keys: Vec<u32> = (0..n)
                .map(|_| {
                    xorshift32(&mut state);
                    if bits == 32 {
                        state
                    } else {
                        state & ((1 << bits) - 1)
                    }
                })
                .collect();
            let mut expect = keys.clone();
            expect.sort_unstable();
            sort_keys(&mut keys, &mut tmp, &mut counts, bits);
            // Ordered by column (k >> 1); the sign bit may come in any order within a column.
            assert!(keys.windows(2).all(|w| w[0] >> 1 <= w[1] >> 1), "n={n} bits={bits}");
            let mut got = keys.clone();
            got.sort_unstable();
            assert_eq!(got, expect);
        }
    }

    #[test]
    fn transform_matches_rows() {
        let cfg = HasherConfig::default();
        let long = long_text();
        let texts: Vec<&str> = TEXTS.iter().copied().chain([long.as_str()]).cycle().take(100).collect();
        let csr = transform(&texts, &cfg);
        let single = rayon::ThreadPoolBuilder::new()
            .num_threads(1)
            .build()
            .unwrap()
            .install(|| transform(&texts, &cfg));
        assert_eq!(csr, single);
        assert_eq!(csr.indptr.len(), texts.len() + 1);
        for (r, text) in texts.iter().enumerate() {
            let (a, b) = (csr.indptr[r] as usize, csr.indptr[r + 1] as usize);
            let (ci, cv) = hash_row(text, &cfg);
            let ci: Vec<i32> = ci.into_iter().map(|c| c as i32).collect();
            assert_eq!(&csr.indices[a..b], ci.as_slice());
            assert_eq!(&csr.data[a..b], cv.as_slice());
        }
    }

    #[test]
    fn reused_part_buffers_leave_nothing_behind() {
        // The parallel path reuses the previous call's part buffers: a call after a larger, different
        // one must give exactly what a fresh single-threaded call gives.
        let cfg = HasherConfig::default();
        let long = long_text();
        let big: Vec<&str> = [long.as_str()].iter().copied().cycle().take(3000).collect();
        let small: Vec<&str> = TEXTS.iter().copied().cycle().take(700).collect();
        let pool = rayon::ThreadPoolBuilder::new().num_threads(3).build().unwrap();
        let single = rayon::ThreadPoolBuilder::new().num_threads(1).build().unwrap();
        for texts in [&big, &small, &big, &small] {
            assert_eq!(
                pool.install(|| transform(texts, &cfg)),
                single.install(|| transform(texts, &cfg))
            );
        }
    }

    #[test]
    fn recycled_output_buffers_leave_nothing_behind() {
        // One thread hashes straight into output buffers handed back by earlier calls (as the
        // bindings do when Python drops a matrix): stale contents, other sizes and a call that finds
        // no fitting buffer must all give exactly what the parallel path gives.
        let cfg = HasherConfig::default();
        let long = long_text();
        let big: Vec<&str> = [long.as_str()].iter().copied().cycle().take(3000).collect();
        let mid: Vec<&str> = [long.as_str()].iter().copied().cycle().take(1200).collect();
        let pool = rayon::ThreadPoolBuilder::new().num_threads(2).build().unwrap();
        let single = rayon::ThreadPoolBuilder::new().num_threads(1).build().unwrap();
        let spare = OutputBuffers::new();
        let mut written_in_place = 0;
        for texts in [&big, &mid, &big, &mid, &mid] {
            let expected = pool.install(|| transform_reusing(texts, &cfg, &OutputBuffers::new()));
            let got = single.install(|| transform_reusing(texts, &cfg, &spare));
            assert_eq!(got, expected);
            // Hand the result back with stale contents, as a dropped matrix would be.
            let (mut indices, mut data) = (got.indices, got.data);
            let (ptr, cap) = (indices.as_ptr(), indices.capacity());
            indices.iter_mut().for_each(|i| *i = -7);
            data.iter_mut().for_each(|d| *d = f32::NAN);
            spare.indices.give(indices);
            spare.values.give(data);
            let again = single.install(|| transform_reusing(texts, &cfg, &spare));
            assert_eq!(again, expected);
            // A buffer that had to grow was reallocated, and whether that moved it is the
            // allocator's choice; one that did not grow must be the very buffer handed back.
            if again.indices.capacity() == cap {
                assert_eq!(again.indices.as_ptr(), ptr, "a recycled buffer with room was not used");
                written_in_place += 1;
            }
            spare.indices.give(again.indices);
            spare.values.give(again.data);
        }
        // The first big and the first mid call find no kept buffer that fits (the big one is over
        // four times what a mid call needs), so they get exact-size buffers from the parallel path,
        // which grow when one thread writes into them with its usual headroom; from the second big
        // call on, every result lands in place.
        assert!(
            written_in_place >= 3,
            "results written into the recycled buffers without growing: {written_in_place} of 5"
        );
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
    fn ascii_words_match_unicode_words() {
        let alphabet = b"aZq09_.,;':  \r\n-!/";
        let mut state = 0x9e37_79b9u32;
        for len in 0..2000 {
            let text: String = (0..len % 40)
                .map(|_| {
                    xorshift32(&mut state);
                    alphabet[state as usize % alphabet.len()] as char
                })
                .collect();
            let mut ours = Vec::new();
            ascii_words(text.as_bytes(), |s, e| ours.push(&text[s..e]));
            let theirs: Vec<&str> = text.unicode_words().collect();
            assert_eq!(ours, theirs, "{text:?}");
        }
        for text in [
            "can't stop",
            "e.g. 3.14 1,000;5 a:b a::b _x_ __ x.",
            "U.S.A. 'quoted' it's",
            "a'1 1'a 1.a a.1",
        ] {
            let mut ours = Vec::new();
            ascii_words(text.as_bytes(), |s, e| ours.push(&text[s..e]));
            assert_eq!(ours, text.unicode_words().collect::<Vec<_>>(), "{text:?}");
        }
    }

    #[test]
    fn simple_chars_never_join() {
        let mut n = 0;
        for c in (0..=0x10FFFFu32)
            .filter_map(char::from_u32)
            .filter(|&c| is_simple_char(c))
        {
            for pair in [
                format!("a{c}"),
                format!("{c}a"),
                format!("가{c}"),
                format!("{c}가"),
                format!("{c}{c}"),
            ] {
                assert_eq!(pair.graphemes(true).count(), 2, "{c:?} U+{:04X} in {pair:?}", c as u32);
            }
            n += 1;
        }
        assert!(n > 30_000);
    }

    #[test]
    fn shortcuts_agree_with_unicode_tables() {
        for c in (0..=0x10FFFFu32).filter_map(char::from_u32) {
            if surely_alphabetic(c) {
                assert!(c.is_alphabetic(), "U+{:04X}", c as u32);
            }
        }
        for c in (0..=0x10FFFFu32).filter_map(char::from_u32).filter(|&c| is_caseless(c)) {
            assert!(c.to_lowercase().eq([c]), "U+{:04X}", c as u32);
        }
        for w in [
            "ΟΔΟΣ",
            "ΣΑΣ Σ",
            "İstanbul",
            "ǅemal",
            "ÀÉÎ",
            "Straße",
            "ᾈ",
            "КИРИЛЛИЦА",
            "ԱԲ",
        ] {
            assert_eq!(lower(w), w.to_lowercase(), "{w:?}");
        }
    }

    #[test]
    fn token_segments_match_unicode_words() {
        let pieces = [
            "a", "Z", "1", "_", ".", ",", "'", ":", " ", "\n", "é", "e\u{301}", "東", "京", "タ", "ー", "に", "ส",
            "\u{e31}", "م", "\u{64b}", "Я", "Σ", "가", "\u{1100}", "\u{200d}", "🙂", "🇫", "🇷", "٣", "\u{ad}", "-",
            "！", "ａ",
        ];
        let mut state = 0x2545_f491u32;
        for _ in 0..5000 {
            let text = random_text(&pieces, &mut state, 16);
            let ours: Vec<(usize, &str)> = text
                .split_word_bound_indices()
                .filter(|&(_, s)| is_token_segment(s) && s.chars().any(char::is_alphanumeric))
                .collect();
            let theirs: Vec<(usize, &str)> = text.unicode_word_indices().collect();
            assert_eq!(ours, theirs, "{text:?}");
        }
    }

    #[test]
    fn cutting_at_spaces_changes_no_token() {
        let pieces = [
            "a", "Z", "1", "_", ".", ",", "'", ":", " ", " ", "  ", "\n", "\t", "é", "e\u{301}", "\u{301}", "東", "タ",
            "ー", "に", "ส", "\u{e31}", "م", "Я", "Σ", "가", "\u{200d}", "\u{200b}", "🙂", "🇫", "🇷", "\u{ad}", "-",
            "™", "’", "ℹ",
        ];
        let mut state = 0x1234_5678u32;
        for _ in 0..20_000 {
            let text = random_text(&pieces, &mut state, 24);
            let mut cut = Vec::new();
            for_each_token(&text, |w| cut.push(w));
            let mut whole = Vec::new();
            unicode_tokens(&text, &mut |w| whole.push(w));
            assert_eq!(cut, whole, "{text:?}");
        }
    }

    #[test]
    fn short_words_contribute_once() {
        let cfg = HasherConfig {
            word_ngrams: None,
            char_ngrams: Some((5, 6)),
            norm: Norm::None,
            ..Default::default()
        };
        let (ci, cv) = hash_row("ab", &cfg);
        let (c, s) = feature_index(b'c', "<ab>", &cfg);
        assert_eq!((ci, cv), (vec![c], vec![s]));
    }

    #[test]
    fn combining_mark_at_start_merges_with_marker() {
        let mut got = Vec::new();
        CharGrams::default().hash_word("\u{301}a", (1, 1), 0, &mut |h| got.push(h));
        let expect: Vec<u64> = ["c<\u{301}", "ca", "c>"]
            .iter()
            .map(|g| xxh3_64_with_seed(g.as_bytes(), 0))
            .collect();
        assert_eq!(got, expect);
    }

    #[test]
    fn cancelling_signs_are_dropped() {
        // Two grams in the same column with opposite signs must leave no explicit zero behind.
        let cfg = HasherConfig {
            n_features: 1,
            word_ngrams: Some((1, 1)),
            char_ngrams: None,
            norm: Norm::None,
            ..Default::default()
        };
        let mut pos = None;
        let mut neg = None;
        for i in 0..100 {
            let t = format!("tok{i}");
            let (_, s) = feature_index(b'w', &t, &cfg);
            if s > 0.0 {
                pos.get_or_insert(t)
            } else {
                neg.get_or_insert(t)
            };
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
        let bad = HasherConfig {
            word_ngrams: Some((3, 2)),
            ..Default::default()
        };
        assert_eq!(
            bad.validate(),
            Err(CoreError::invalid(
                "word_ngrams",
                "expected 1 <= min <= max <= 16, got (3, 2)"
            ))
        );
        let bad = HasherConfig {
            char_ngrams: Some((0, 2)),
            ..Default::default()
        };
        assert!(matches!(bad.validate(), Err(CoreError::InvalidValue { arg, .. }) if arg == "char_ngrams"));
        let bad = HasherConfig {
            char_ngrams: Some((1, 17)),
            ..Default::default()
        };
        assert!(bad.validate().is_err());
        let bad = HasherConfig {
            n_features: 0,
            ..Default::default()
        };
        assert!(matches!(bad.validate(), Err(CoreError::InvalidValue { arg, .. }) if arg == "n_features"));
        let bad = HasherConfig {
            n_features: 1 << 31,
            ..Default::default()
        };
        assert!(bad.validate().is_err());
        let ok = HasherConfig {
            n_features: i32::MAX as u32,
            char_ngrams: Some((1, 16)),
            ..Default::default()
        };
        assert!(ok.validate().is_ok());
        let bad = HasherConfig {
            word_ngrams: None,
            char_ngrams: None,
            ..Default::default()
        };
        assert!(bad.validate().is_err());
    }
}

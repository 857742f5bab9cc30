//! Lexical query/item match features and a BM25 index.
//!
//! Tokens are [`hashing::words`], so matching sees exactly the units the hasher hashes (including
//! one token per Han ideograph and emoji tokens), and char trigrams are the hasher's char grams.
//! Unless noted otherwise, set-based features work on unique tokens, and every feature is 0 where
//! it would be undefined (no query or item words).

use std::collections::HashMap;

use rayon::prelude::*;
use xxhash_rust::xxh3::{xxh3_64, Xxh3DefaultBuilder};

use super::error::{CoreError, Result};
use super::hashing::{self, CharGrams};

pub const MATCH_FEATURE_NAMES: [&str; 10] = [
    "word_overlap",
    "word_overlap_item",
    "char3_jaccard",
    "bm25",
    "phrase_match",
    "bigram_overlap",
    "first_match_pos",
    "log_query_words",
    "log_item_words",
    "query_coverage_chars",
];

pub const N_MATCH_FEATURES: usize = MATCH_FEATURE_NAMES.len();

#[derive(Clone, Debug, PartialEq)]
pub struct MatchConfig {
    pub k1: f32,
    pub b: f32,
    /// Average item length in words; there is no corpus at pair level, so it is a parameter.
    pub avgdl: f32,
    pub lowercase: bool,
}

impl Default for MatchConfig {
    fn default() -> Self {
        MatchConfig {
            k1: 1.2,
            b: 0.75,
            avgdl: 64.0,
            lowercase: true,
        }
    }
}

impl MatchConfig {
    pub fn validate(&self) -> Result<()> {
        check_bm25_params(self.k1, self.b)?;
        if !(self.avgdl.is_finite() && self.avgdl > 0.0) {
            return Err(CoreError::invalid(
                "avgdl",
                format!("expected a finite value > 0, got {}", self.avgdl),
            ));
        }
        Ok(())
    }
}

/// Checks BM25's `k1` and `b`; [`Bm25Index::build`] expects parameters that pass this.
pub fn check_bm25_params(k1: f32, b: f32) -> Result<()> {
    if !(k1.is_finite() && k1 >= 0.0) {
        return Err(CoreError::invalid(
            "k1",
            format!("expected a finite value >= 0, got {k1}"),
        ));
    }
    if !(b.is_finite() && (0.0..=1.0).contains(&b)) {
        return Err(CoreError::invalid("b", format!("expected 0 <= b <= 1, got {b}")));
    }
    Ok(())
}

/// BM25 term-frequency saturation, shared by the pair feature and the index.
#[inline]
fn bm25_tf(tf: f64, dl: f64, avgdl: f64, k1: f64, b: f64) -> f64 {
    tf * (k1 + 1.0) / (tf + k1 * (1.0 - b + b * dl / avgdl))
}

fn sorted_unique<T: Ord + Copy>(items: impl Iterator<Item = T>) -> Vec<T> {
    let mut v: Vec<T> = items.collect();
    v.sort_unstable();
    v.dedup();
    v
}

/// Number of elements common to two sorted, deduplicated slices.
fn intersection_len<T: Ord>(a: &[T], b: &[T]) -> usize {
    let (mut i, mut j, mut n) = (0, 0, 0);
    while i < a.len() && j < b.len() {
        match a[i].cmp(&b[j]) {
            std::cmp::Ordering::Less => i += 1,
            std::cmp::Ordering::Greater => j += 1,
            std::cmp::Ordering::Equal => {
                n += 1;
                i += 1;
                j += 1;
            }
        }
    }
    n
}

fn ratio(num: usize, den: usize) -> f32 {
    if den == 0 {
        0.0
    } else {
        num as f32 / den as f32
    }
}

/// Tokens are compared by a 64-bit hash of their text, which makes sorting and matching integer
/// work; two distinct tokens of one pair or corpus colliding has odds of about n^2 / 2^65.
fn token_id(token: &str) -> u64 {
    xxh3_64(token.as_bytes())
}

/// One side of a pair: token ids in text order, and optionally the sorted, deduplicated hashes
/// of its char trigrams and each token's cluster count.
#[derive(Default)]
struct Side {
    ids: Vec<u64>,
    trigrams: Vec<u64>,
    clusters: Vec<usize>,
}

/// Per-thread buffers for [`pair_features`].
#[derive(Default)]
struct PairScratch {
    query: Side,
    item: Side,
    grams: CharGrams,
    buf: String,
}

impl Side {
    fn fill(&mut self, text: &str, lowercase: bool, with_clusters: bool, grams: &mut CharGrams, buf: &mut String) {
        let Side {
            ids,
            trigrams,
            clusters,
        } = self;
        ids.clear();
        trigrams.clear();
        clusters.clear();
        hashing::for_each_word(text, lowercase, buf, |w| {
            ids.push(token_id(w));
            if with_clusters {
                clusters.push(hashing::cluster_count(w));
            }
            // Trigram hashes stand in for the trigrams; a collision would need ~2^32 of them.
            grams.hash_word(w, (3, 3), 0, &mut |h| trigrams.push(h));
        });
        trigrams.sort_unstable();
        trigrams.dedup();
    }
}

/// The ten features of [`MATCH_FEATURE_NAMES`] for one (query, item text) pair.
///
/// `cfg` is expected to have passed [`MatchConfig::validate`].
pub fn pair_features(query: &str, text: &str, cfg: &MatchConfig) -> [f32; N_MATCH_FEATURES] {
    pair_features_with(&mut PairScratch::default(), query, text, cfg)
}

fn pair_features_with(s: &mut PairScratch, query: &str, text: &str, cfg: &MatchConfig) -> [f32; N_MATCH_FEATURES] {
    s.query.fill(query, cfg.lowercase, true, &mut s.grams, &mut s.buf);
    s.item.fill(text, cfg.lowercase, false, &mut s.grams, &mut s.buf);
    let (q, t) = (&s.query.ids, &s.item.ids);

    let q_unique = sorted_unique(q.iter().copied());
    let t_sorted = {
        let mut v = t.clone();
        v.sort_unstable();
        v
    };
    let t_unique = {
        let mut v = t_sorted.clone();
        v.dedup();
        v
    };
    let in_item = |w: u64| t_unique.binary_search(&w).is_ok();
    let shared = intersection_len(&q_unique, &t_unique);

    let (q3, t3) = (&s.query.trigrams, &s.item.trigrams);
    let common3 = intersection_len(q3, t3);
    let char3_jaccard = ratio(common3, q3.len() + t3.len() - common3);

    let (k1, b, avgdl) = (f64::from(cfg.k1), f64::from(cfg.b), f64::from(cfg.avgdl));
    let dl = t.len() as f64;
    let bm25_sum: f64 = q_unique
        .iter()
        .map(|&w| {
            let tf = (t_sorted.partition_point(|&x| x <= w) - t_sorted.partition_point(|&x| x < w)) as f64;
            if tf == 0.0 {
                0.0
            } else {
                bm25_tf(tf, dl, avgdl, k1, b)
            }
        })
        .sum();
    let bm25 = if q_unique.is_empty() {
        0.0
    } else {
        (bm25_sum / q_unique.len() as f64) as f32
    };

    let phrase_match = !q.is_empty() && t.windows(q.len()).any(|w| w == q.as_slice());

    let bigram_overlap = if q.len() < 2 {
        0.0
    } else {
        let pairs = |v: &[u64]| sorted_unique(v.windows(2).map(|w| (w[0], w[1])));
        let qb = pairs(q);
        ratio(intersection_len(&qb, &pairs(t)), qb.len())
    };

    let first_match_pos = t
        .iter()
        .position(|w| q_unique.binary_search(w).is_ok())
        .map_or(0.0, |p| 1.0 / (1.0 + p as f32));

    // Over query positions, so a repeated query word counts every time it appears.
    let (mut covered, mut total) = (0usize, 0usize);
    for (&w, &n) in q.iter().zip(&s.query.clusters) {
        total += n;
        if in_item(w) {
            covered += n;
        }
    }

    [
        ratio(shared, q_unique.len()),
        ratio(shared, t_unique.len()),
        char3_jaccard,
        bm25,
        if phrase_match { 1.0 } else { 0.0 },
        bigram_overlap,
        first_match_pos,
        (q.len() as f32).ln_1p(),
        (t.len() as f32).ln_1p(),
        ratio(covered, total),
    ]
}

/// [`pair_features`] for `queries[i]` against `texts[i]`, row-major `n x 10`, rows in parallel on
/// the current rayon pool. The caller guarantees equal lengths (extra entries would be ignored).
pub fn transform_pairs(queries: &[&str], texts: &[&str], cfg: &MatchConfig) -> Vec<f32> {
    debug_assert_eq!(queries.len(), texts.len());
    let n = queries.len().min(texts.len());
    let mut out = vec![0.0f32; n * N_MATCH_FEATURES];
    out.par_chunks_mut(N_MATCH_FEATURES)
        .zip(queries.par_iter().zip(texts.par_iter()))
        .for_each_init(PairScratch::default, |s, (row, (q, t))| {
            row.copy_from_slice(&pair_features_with(s, q, t, cfg))
        });
    out
}

/// Token ids of `text`, in order.
fn token_ids(text: &str, lowercase: bool, buf: &mut String) -> Vec<u64> {
    let mut ids = Vec::new();
    hashing::for_each_word(text, lowercase, buf, |w| ids.push(token_id(w)));
    ids
}

/// An inverted index over a fixed corpus for Okapi BM25 scoring and retrieval.
///
/// `idf = ln(1 + (N - df + 0.5) / (df + 0.5))` (always positive). A query term that occurs several
/// times in the query contributes each time (query term frequency weighting, as in Lucene's
/// boolean queries and `rank_bm25`).
#[derive(Clone, Debug)]
pub struct Bm25Index {
    k1: f64,
    b: f64,
    lowercase: bool,
    avgdl: f64,
    /// Token id (see [`token_id`]) to term number.
    vocab: HashMap<u64, u32, Xxh3DefaultBuilder>,
    /// Per term, `(doc, tf)` in increasing doc order.
    postings: Vec<Vec<(u32, u32)>>,
    idf: Vec<f64>,
    doc_len: Vec<u32>,
}

impl Bm25Index {
    /// Indexes `docs`; `k1` and `b` are expected to pass [`check_bm25_params`].
    pub fn build(docs: &[&str], k1: f32, b: f32, lowercase: bool) -> Bm25Index {
        let tokenized: Vec<Vec<u64>> = docs
            .par_iter()
            .map_init(String::new, |buf, d| token_ids(d, lowercase, buf))
            .collect();
        let mut vocab: HashMap<u64, u32, Xxh3DefaultBuilder> = HashMap::default();
        let mut postings: Vec<Vec<(u32, u32)>> = Vec::new();
        let mut doc_len = Vec::with_capacity(docs.len());
        for (doc, mut ids) in tokenized.into_iter().enumerate() {
            doc_len.push(ids.len() as u32);
            ids.sort_unstable();
            for run in ids.chunk_by(|a, b| a == b) {
                let next_id = postings.len() as u32;
                let term = *vocab.entry(run[0]).or_insert(next_id);
                if term == next_id {
                    postings.push(Vec::new());
                }
                postings[term as usize].push((doc as u32, run.len() as u32));
            }
        }
        let n = docs.len() as f64;
        let idf = postings
            .iter()
            .map(|p| {
                let df = p.len() as f64;
                (1.0 + (n - df + 0.5) / (df + 0.5)).ln()
            })
            .collect();
        let total: u64 = doc_len.iter().map(|&l| u64::from(l)).sum();
        // With no words in the corpus no term is ever scored, so any positive value will do.
        let avgdl = if total == 0 { 1.0 } else { total as f64 / n };
        Bm25Index {
            k1: f64::from(k1),
            b: f64::from(b),
            lowercase,
            avgdl,
            vocab,
            postings,
            idf,
            doc_len,
        }
    }

    pub fn n_docs(&self) -> usize {
        self.doc_len.len()
    }

    /// Mean document length in words.
    pub fn avgdl(&self) -> f32 {
        self.avgdl as f32
    }

    fn contribution(&self, term: usize, doc: u32, tf: u32) -> f64 {
        let dl = f64::from(self.doc_len[doc as usize]);
        self.idf[term] * bm25_tf(f64::from(tf), dl, self.avgdl, self.k1, self.b)
    }

    fn query_terms(&self, query: &str) -> Vec<usize> {
        token_ids(query, self.lowercase, &mut String::new())
            .iter()
            .filter_map(|id| self.vocab.get(id).map(|&term| term as usize))
            .collect()
    }

    /// BM25 score of document `doc` for `query`. Panics if `doc >= n_docs()`.
    pub fn score(&self, query: &str, doc: usize) -> f32 {
        assert!(
            doc < self.n_docs(),
            "doc {doc} out of range for an index of {} docs",
            self.n_docs()
        );
        let doc = doc as u32;
        let mut total = 0.0f64;
        // Same terms in the same order as top_k, so both return bit-identical scores.
        for term in self.query_terms(query) {
            let p = &self.postings[term];
            if let Ok(k) = p.binary_search_by_key(&doc, |&(d, _)| d) {
                total += self.contribution(term, doc, p[k].1);
            }
        }
        total as f32
    }

    /// The `k` best documents containing at least one query term, by descending score then
    /// ascending doc id. Only the postings of the query's terms are visited.
    pub fn top_k(&self, query: &str, k: usize) -> Vec<(usize, f32)> {
        if k == 0 {
            return Vec::new();
        }
        let mut acc: HashMap<u32, f64, Xxh3DefaultBuilder> = HashMap::default();
        for term in self.query_terms(query) {
            for &(doc, tf) in &self.postings[term] {
                *acc.entry(doc).or_insert(0.0) += self.contribution(term, doc, tf);
            }
        }
        let mut hits: Vec<(usize, f32)> = acc.into_iter().map(|(d, s)| (d as usize, s as f32)).collect();
        let order = |a: &(usize, f32), b: &(usize, f32)| b.1.total_cmp(&a.1).then(a.0.cmp(&b.0));
        if hits.len() > k {
            hits.select_nth_unstable_by(k - 1, order);
            hits.truncate(k);
        }
        hits.sort_unstable_by(order);
        hits
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn close(a: f32, b: f32) -> bool {
        (a - b).abs() <= 1e-6
    }

    fn feats(q: &str, t: &str) -> [f32; 10] {
        pair_features(q, t, &MatchConfig::default())
    }

    #[test]
    fn hand_computed_pair() {
        // q words: red shoes (2 unique); item: big red shoes for red feet (6 words, 5 unique).
        let f = feats("Red shoes", "big red shoes, for red feet");
        assert!(close(f[0], 1.0));
        assert!(close(f[1], 2.0 / 5.0));
        // Trigrams: q {<re red ed> <sh sho hoe oes es>} = 8; item adds <bi big ig> <fo for or>
        // <fe fee eet et> = 10 more; shared 8 -> 8 / 18.
        assert!(close(f[2], 8.0 / 18.0), "{}", f[2]);
        // red tf 2, shoes tf 1, dl 6, avgdl 64, k1 1.2, b 0.75.
        let norm = 1.2 * (1.0 - 0.75 + 0.75 * 6.0 / 64.0);
        let expect = (2.0 * 2.2 / (2.0 + norm) + 2.2 / (1.0 + norm)) / 2.0;
        assert!(close(f[3], expect as f32), "{} vs {expect}", f[3]);
        assert_eq!(f[4], 1.0);
        assert_eq!(f[5], 1.0);
        assert!(close(f[6], 0.5));
        assert!(close(f[7], 3.0f32.ln()));
        assert!(close(f[8], 7.0f32.ln()));
        assert_eq!(f[9], 1.0);
    }

    #[test]
    fn partial_match() {
        let f = feats("blue running shoes", "shoes that run");
        assert!(close(f[0], 1.0 / 3.0));
        assert!(close(f[1], 1.0 / 3.0));
        assert_eq!(f[4], 0.0);
        assert_eq!(f[5], 0.0);
        assert!(close(f[6], 1.0));
        // Graphemes: blue 4, running 7, shoes 5 -> 5 / 16.
        assert!(close(f[9], 5.0 / 16.0));
        let f = feats("new york pizza", "best pizza in new york");
        assert_eq!(f[4], 0.0);
        assert!(close(f[5], 0.5));
        assert!(close(f[6], 0.5));
    }

    #[test]
    fn empty_sides_are_zero() {
        assert_eq!(feats("", ""), [0.0; 10]);
        let f = feats("", "some item");
        assert_eq!(&f[..8], &[0.0; 8]);
        assert!(close(f[8], 3.0f32.ln()));
        assert_eq!(f[9], 0.0);
        let f = feats("query", "!!!");
        assert_eq!(&f[..7], &[0.0; 7]);
        assert!(close(f[7], 2.0f32.ln()));
        assert_eq!(f[8], 0.0);
    }

    #[test]
    fn cjk_and_case() {
        let f = feats("東京", "東京タワー");
        assert_eq!(f[4], 1.0);
        assert!(close(f[0], 1.0));
        assert!(close(f[1], 2.0 / 3.0));
        let cfg = MatchConfig {
            lowercase: false,
            ..Default::default()
        };
        assert_eq!(pair_features("Shoe", "shoe", &cfg)[0], 0.0);
        assert_eq!(pair_features("Shoe", "shoe", &MatchConfig::default())[0], 1.0);
    }

    #[test]
    fn coverage_counts_clusters() {
        // "ab" has 2 clusters, "e\u{301}x" has 2 (the accent joins its e), so half is covered.
        let f = feats("ab e\u{301}x", "ab");
        assert!(close(f[9], 0.5), "{}", f[9]);
        let f = feats("สวัสดี", "สวัสดี ครับ");
        assert_eq!(f[4], 1.0);
        assert!(f.iter().all(|v| v.is_finite()));
    }

    #[test]
    fn transform_pairs_is_row_major() {
        let qs = ["red shoes", "", "東京"];
        let ts = ["red shoes", "x", "タワー"];
        let cfg = MatchConfig::default();
        let out = transform_pairs(&qs, &ts, &cfg);
        assert_eq!(out.len(), 30);
        for i in 0..3 {
            assert_eq!(&out[i * 10..i * 10 + 10], &pair_features(qs[i], ts[i], &cfg));
        }
        assert!(out.iter().all(|v| v.is_finite()));
    }

    #[test]
    fn config_validation() {
        assert!(MatchConfig::default().validate().is_ok());
        for (cfg, arg) in [
            (
                MatchConfig {
                    k1: -0.1,
                    ..Default::default()
                },
                "k1",
            ),
            (
                MatchConfig {
                    k1: f32::NAN,
                    ..Default::default()
                },
                "k1",
            ),
            (
                MatchConfig {
                    b: 1.5,
                    ..Default::default()
                },
                "b",
            ),
            (
                MatchConfig {
                    avgdl: 0.0,
                    ..Default::default()
                },
                "avgdl",
            ),
            (
                MatchConfig {
                    avgdl: f32::INFINITY,
                    ..Default::default()
                },
                "avgdl",
            ),
        ] {
            assert!(matches!(cfg.validate(), Err(CoreError::InvalidValue { arg: a, .. }) if a == arg));
        }
    }

    #[test]
    fn bm25_index_hand_computed() {
        let docs = ["the cat sat", "the dog", "cat cat dog bird", ""];
        let idx = Bm25Index::build(&docs, 1.2, 0.75, true);
        assert_eq!(idx.n_docs(), 4);
        assert!(close(idx.avgdl(), 9.0 / 4.0));
        let n = 4.0f64;
        let idf = |df: f64| (1.0 + (n - df + 0.5) / (df + 0.5)).ln();
        let tfp = |tf: f64, dl: f64| tf * 2.2 / (tf + 1.2 * (0.25 + 0.75 * dl / 2.25));
        let s2 = idf(2.0) * tfp(2.0, 4.0);
        assert!(close(idx.score("Cat", 2), s2 as f32));
        let s0 = idf(2.0) * tfp(1.0, 3.0);
        assert!(close(idx.score("cat", 0), s0 as f32));
        assert_eq!(idx.score("cat", 1), 0.0);
        assert_eq!(idx.score("cat", 3), 0.0);
        assert_eq!(idx.score("unknown", 0), 0.0);
        // Repeating a query term counts it again.
        assert!(close(idx.score("cat cat", 0), 2.0 * s0 as f32));

        let top = idx.top_k("cat dog", 10);
        let ids: Vec<usize> = top.iter().map(|&(d, _)| d).collect();
        assert_eq!(ids, [2, 1, 0]);
        for &(d, s) in &top {
            assert_eq!(s, idx.score("cat dog", d));
        }
        assert_eq!(idx.top_k("cat dog", 1), &top[..1]);
        assert!(idx.top_k("cat", 0).is_empty());
        assert!(idx.top_k("zebra", 5).is_empty());
    }

    #[test]
    fn bm25_ties_break_by_doc_id() {
        let docs = ["b x", "a", "x b", "a"];
        let idx = Bm25Index::build(&docs, 1.2, 0.75, true);
        let top = idx.top_k("a b", 3);
        assert_eq!(top.iter().map(|&(d, _)| d).collect::<Vec<_>>(), [1, 3, 0]);
        assert_eq!(top[0].1, top[1].1);
    }

    #[test]
    fn bm25_params_checked() {
        assert!(check_bm25_params(1.2, 0.75).is_ok());
        assert!(check_bm25_params(0.0, 0.0).is_ok());
        assert!(check_bm25_params(1.2, -0.1).is_err());
        assert!(check_bm25_params(f32::INFINITY, 0.5).is_err());
    }

    #[test]
    fn empty_corpus() {
        let idx = Bm25Index::build(&[], 1.2, 0.75, true);
        assert_eq!(idx.n_docs(), 0);
        assert!(idx.top_k("anything", 3).is_empty());
    }
}

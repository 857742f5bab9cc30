//! Assembly of an item's fields into one labelled, budgeted text for a cross-encoder.
//!
//! The budget is in chars (Unicode scalar values), never bytes: byte budgets would give CJK or
//! Devanagari items a third of the text a Latin item gets.

use std::collections::HashSet;

use unicode_segmentation::GraphemeCursor;

use super::error::{CoreError, Result};
use super::text::{char_len, clean_text, truncate_graphemes};

#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum Field {
    Title,
    Description,
    Captions,
    Boards,
    Queries,
    LinkTitle,
    LinkDescription,
}

impl Field {
    pub const ALL: [Field; 7] = [
        Field::Title,
        Field::Description,
        Field::Captions,
        Field::Boards,
        Field::Queries,
        Field::LinkTitle,
        Field::LinkDescription,
    ];

    pub fn name(self) -> &'static str {
        match self {
            Field::Title => "title",
            Field::Description => "description",
            Field::Captions => "captions",
            Field::Boards => "boards",
            Field::Queries => "queries",
            Field::LinkTitle => "link_title",
            Field::LinkDescription => "link_description",
        }
    }

    pub fn from_name(s: &str) -> Option<Field> {
        Field::ALL.into_iter().find(|f| f.name() == s)
    }

    pub fn is_list(self) -> bool {
        matches!(self, Field::Captions | Field::Boards | Field::Queries)
    }

    fn default_label(self) -> &'static str {
        match self {
            Field::Title => "title: ",
            Field::Description => "description: ",
            Field::Captions => "captions: ",
            Field::Boards => "boards: ",
            Field::Queries => "queries: ",
            Field::LinkTitle => "link title: ",
            Field::LinkDescription => "link description: ",
        }
    }

    fn default_cap(self) -> usize {
        match self {
            Field::Title => 200,
            Field::Description => 600,
            Field::Captions => 300,
            Field::Boards => 200,
            Field::Queries => 200,
            Field::LinkTitle => 150,
            Field::LinkDescription => 300,
        }
    }
}

#[derive(Clone, Debug, Default, PartialEq)]
pub struct Item {
    pub title: Option<String>,
    pub description: Option<String>,
    pub captions: Vec<String>,
    pub boards: Vec<String>,
    pub queries: Vec<String>,
    pub link_title: Option<String>,
    pub link_description: Option<String>,
    pub lang: Option<String>,
}

impl Item {
    fn single(&self, f: Field) -> Option<&str> {
        match f {
            Field::Title => self.title.as_deref(),
            Field::Description => self.description.as_deref(),
            Field::LinkTitle => self.link_title.as_deref(),
            Field::LinkDescription => self.link_description.as_deref(),
            Field::Captions | Field::Boards | Field::Queries => None,
        }
    }

    fn list(&self, f: Field) -> &[String] {
        match f {
            Field::Captions => &self.captions,
            Field::Boards => &self.boards,
            Field::Queries => &self.queries,
            _ => &[],
        }
    }
}

/// Upper bound on `Spec::max_chars`; larger budgets are a units mistake (bytes, or a whole page).
pub const MAX_BUDGET: usize = 1_000_000;

/// Label of the optional language pseudo-field.
const LANG_LABEL: &str = "lang: ";
/// BCP 47 tags longer than this (RFC 5646's recommended buffer size) are not real tags.
const MAX_LANG_CHARS: usize = 35;

#[derive(Clone, Debug, PartialEq)]
pub struct Spec {
    pub fields: Vec<Field>,
    pub labels: Vec<(Field, String)>,
    pub separator: String,
    pub list_separator: String,
    pub max_chars: usize,
    pub field_max_chars: Vec<(Field, usize)>,
    pub query_label: String,
    pub pair_separator: String,
    pub max_query_chars: usize,
    pub include_lang: bool,
}

impl Default for Spec {
    fn default() -> Self {
        Spec {
            fields: Field::ALL.to_vec(),
            labels: Field::ALL.iter().map(|&f| (f, f.default_label().to_owned())).collect(),
            separator: " | ".to_owned(),
            list_separator: "; ".to_owned(),
            max_chars: 1024,
            field_max_chars: Field::ALL.iter().map(|&f| (f, f.default_cap())).collect(),
            query_label: "query: ".to_owned(),
            pair_separator: " [SEP] ".to_owned(),
            max_query_chars: 256,
            include_lang: false,
        }
    }
}

impl Spec {
    pub fn validate(&self) -> Result<()> {
        if self.max_chars < 1 {
            return Err(CoreError::invalid(
                "spec.max_chars",
                format!("must be >= 1, got {}", self.max_chars),
            ));
        }
        if self.max_chars > MAX_BUDGET {
            return Err(CoreError::invalid(
                "spec.max_chars",
                format!("must be <= {MAX_BUDGET}, got {}", self.max_chars),
            ));
        }
        if self.max_query_chars < 1 {
            return Err(CoreError::invalid(
                "spec.max_query_chars",
                format!("must be >= 1, got {}", self.max_query_chars),
            ));
        }
        if self.fields.is_empty() {
            return Err(CoreError::invalid("spec.fields", "must not be empty"));
        }
        let mut seen = HashSet::new();
        for f in &self.fields {
            if !seen.insert(*f) {
                return Err(CoreError::invalid(
                    "spec.fields",
                    format!("duplicate field '{}'", f.name()),
                ));
            }
        }
        for &(f, cap) in &self.field_max_chars {
            if cap < 1 {
                return Err(CoreError::invalid(
                    format!("spec.field_max_chars['{}']", f.name()),
                    format!("must be >= 1, got {cap}"),
                ));
            }
        }
        Ok(())
    }

    /// The label for `f`. Fields missing from `labels` fall back to the default label so that a
    /// partial override does not silently strip labels; the last entry wins when `f` repeats, so
    /// pushing an override onto the defaults works.
    pub fn label(&self, f: Field) -> &str {
        self.labels
            .iter()
            .rev()
            .find(|(g, _)| *g == f)
            .map_or(f.default_label(), |(_, l)| l.as_str())
    }

    /// The content cap for `f`, with the same fallback and precedence rules as [`Spec::label`].
    pub fn field_cap(&self, f: Field) -> usize {
        self.field_max_chars
            .iter()
            .rev()
            .find(|(g, _)| *g == f)
            .map_or(f.default_cap(), |&(_, c)| c)
    }
}

/// One labelled segment of the output.
struct Part<'a> {
    label: &'a str,
    label_chars: usize,
    content: String,
    /// What the content asks for: min(content chars, field cap).
    want: usize,
    /// Fixed parts (the language tag) are overhead: a truncated language code means nothing.
    fixed: bool,
    /// For list fields, byte ranges `(entry_end, next_entry_start)` of the list separators, so a
    /// cut never leaves a dangling separator.
    gaps: Vec<(usize, usize)>,
}

impl Part<'_> {
    fn min_chars(&self) -> usize {
        // Every truncatable part needs at least one char of content to be worth its label.
        self.label_chars + if self.fixed { self.want } else { 1 }
    }

    fn overhead(&self) -> usize {
        self.label_chars + if self.fixed { self.want } else { 0 }
    }

    /// The content cut to `allot` chars, on a cluster boundary and never inside a list separator.
    fn truncated(&self, allot: usize) -> &str {
        let cut = truncate_graphemes(&self.content, allot);
        let end = cut.len();
        if end == self.content.len() {
            return cut;
        }
        match self
            .gaps
            .iter()
            .find(|&&(entry_end, next_start)| entry_end < end && end <= next_start)
        {
            Some(&(entry_end, _)) if is_cluster_boundary(&self.content, entry_end) => {
                truncate_graphemes(&self.content[..entry_end], allot)
            }
            _ => cut,
        }
    }
}

fn is_cluster_boundary(s: &str, at: usize) -> bool {
    GraphemeCursor::new(at, s.len(), true)
        .is_boundary(s, 0)
        .unwrap_or(false)
}

fn clean_list(entries: &[String], list_separator: &str) -> (String, Vec<(usize, usize)>) {
    let mut seen = HashSet::new();
    let mut joined = String::new();
    let mut gaps = Vec::new();
    for entry in entries {
        let cleaned = clean_text(entry);
        if cleaned.is_empty() || !seen.insert(cleaned.to_lowercase()) {
            continue;
        }
        if !joined.is_empty() {
            let entry_end = joined.len();
            joined.push_str(list_separator);
            gaps.push((entry_end, joined.len()));
        }
        joined.push_str(&cleaned);
    }
    (joined, gaps)
}

fn collect_parts<'a>(item: &Item, spec: &'a Spec) -> Vec<Part<'a>> {
    let mut parts = Vec::with_capacity(spec.fields.len() + 1);
    if spec.include_lang {
        if let Some(lang) = item.lang.as_deref() {
            let lang = truncate_graphemes(&clean_text(lang), MAX_LANG_CHARS).to_owned();
            if !lang.is_empty() {
                parts.push(Part {
                    label: LANG_LABEL,
                    label_chars: char_len(LANG_LABEL),
                    want: char_len(&lang),
                    content: lang,
                    fixed: true,
                    gaps: Vec::new(),
                });
            }
        }
    }
    for &f in &spec.fields {
        let (content, gaps) = if f.is_list() {
            clean_list(item.list(f), &spec.list_separator)
        } else {
            (item.single(f).map(clean_text).unwrap_or_default(), Vec::new())
        };
        if content.is_empty() {
            continue;
        }
        let cap = spec.field_cap(f);
        let label = spec.label(f);
        parts.push(Part {
            label,
            label_chars: char_len(label),
            // Counting stops at the cap: a multi-megabyte description needs no full count.
            want: content.chars().take(cap).count(),
            content,
            fixed: false,
            gaps,
        });
    }
    parts
}

/// Split `budget` among `wants`: everyone gets min(want, L) for the highest level L that fits, and
/// the few chars left over by integer rounding go to the still-hungry fields in order. Budget a
/// short field does not use therefore flows to the long ones.
fn water_fill(wants: &[usize], budget: usize) -> Vec<usize> {
    let total: usize = wants.iter().sum();
    if total <= budget {
        return wants.to_vec();
    }
    let filled = |level: usize| wants.iter().map(|&w| w.min(level)).sum::<usize>();
    // Invariant: filled(lo) <= budget < filled(hi).
    let (mut lo, mut hi) = (0usize, wants.iter().copied().max().unwrap_or(0));
    while hi - lo > 1 {
        let mid = lo + (hi - lo) / 2;
        if filled(mid) <= budget {
            lo = mid;
        } else {
            hi = mid;
        }
    }
    // filled(lo + 1) > budget, so fewer chars are left than fields wanting more than `lo`.
    let mut left = budget - filled(lo);
    wants
        .iter()
        .map(|&w| {
            let mut a = w.min(lo);
            if w > lo && left > 0 {
                a += 1;
                left -= 1;
            }
            a
        })
        .collect()
}

/// Assemble `item` into one text of at most `spec.max_chars` chars.
///
/// Never fails: an invalid spec (see [`Spec::validate`]) still yields a text within its budget, so
/// callers validate once up front instead of per item.
pub fn assemble(item: &Item, spec: &Spec) -> String {
    let mut parts = collect_parts(item, spec);
    let sep_chars = char_len(&spec.separator);
    let seps = |n: usize| n.saturating_sub(1) * sep_chars;

    // Each round either returns or removes at least one part, so this ends.
    loop {
        while !parts.is_empty() && parts.iter().map(Part::min_chars).sum::<usize>() + seps(parts.len()) > spec.max_chars
        {
            parts.pop();
        }
        let overhead = parts.iter().map(Part::overhead).sum::<usize>() + seps(parts.len());
        let flexible: Vec<usize> = (0..parts.len()).filter(|&i| !parts[i].fixed).collect();
        let wants: Vec<usize> = flexible.iter().map(|&i| parts[i].want).collect();
        let allots = water_fill(&wants, spec.max_chars.saturating_sub(overhead));

        let mut texts: Vec<&str> = parts.iter().map(|p| p.content.as_str()).collect();
        for (&i, &a) in flexible.iter().zip(&allots) {
            texts[i] = parts[i].truncated(a);
        }
        if texts.iter().any(|t| t.is_empty()) {
            // A field whose first cluster did not fit frees its label and separator for the others.
            let keep: Vec<bool> = texts.iter().map(|t| !t.is_empty()).collect();
            let mut k = keep.into_iter();
            parts.retain(|_| k.next().unwrap_or(false));
            continue;
        }

        // Exact size: a budget-sized buffer per item costs more than the assembly of a short item.
        let len = parts
            .iter()
            .zip(&texts)
            .map(|(p, t)| p.label.len() + t.len())
            .sum::<usize>()
            + spec.separator.len() * parts.len().saturating_sub(1);
        let mut out = String::with_capacity(len);
        for (n, (part, text)) in parts.iter().zip(&texts).enumerate() {
            if n > 0 {
                out.push_str(&spec.separator);
            }
            out.push_str(part.label);
            out.push_str(text);
        }
        return out;
    }
}

/// The query as the model sees it: cleaned like item text, cut to `spec.max_query_chars`.
pub fn clean_query(query: &str, spec: &Spec) -> String {
    truncate_graphemes(&clean_text(query), spec.max_query_chars).to_owned()
}

/// `query_label + clean_query(query) + pair_separator + assemble(item)`.
pub fn assemble_pair(query: &str, item: &Item, spec: &Spec) -> String {
    let q = clean_query(query, spec);
    let text = assemble(item, spec);
    let mut out = String::with_capacity(spec.query_label.len() + q.len() + spec.pair_separator.len() + text.len());
    out.push_str(&spec.query_label);
    out.push_str(&q);
    out.push_str(&spec.pair_separator);
    out.push_str(&text);
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    fn spec(max_chars: usize) -> Spec {
        Spec {
            max_chars,
            ..Spec::default()
        }
    }

    #[test]
    fn field_names_round_trip() {
        for f in Field::ALL {
            assert_eq!(Field::from_name(f.name()), Some(f));
        }
        assert_eq!(Field::from_name("Title"), None);
        assert_eq!(Field::ALL.iter().filter(|f| f.is_list()).count(), 3);
    }

    #[test]
    fn water_fill_levels_and_leftovers() {
        assert_eq!(water_fill(&[3, 4], 10), vec![3, 4]);
        assert_eq!(water_fill(&[2, 100], 50), vec![2, 48]);
        assert_eq!(water_fill(&[100, 100, 100], 10), vec![4, 3, 3]);
        assert_eq!(water_fill(&[5, 100, 100], 20), vec![5, 8, 7]);
        assert_eq!(water_fill(&[7, 9], 0), vec![0, 0]);
        assert_eq!(water_fill(&[], 5), Vec::<usize>::new());
    }

    #[test]
    fn list_cut_never_leaves_a_separator() {
        let item = Item {
            boards: vec!["abc".into(), "def".into()],
            ..Item::default()
        };
        let s = Spec {
            fields: vec![Field::Boards],
            ..spec(char_len("boards: abc; "))
        };
        assert_eq!(assemble(&item, &s), "boards: abc");
        let s = Spec {
            fields: vec![Field::Boards],
            ..spec(char_len("boards: abc; d"))
        };
        assert_eq!(assemble(&item, &s), "boards: abc; d");
    }

    #[test]
    fn lang_is_a_fixed_first_field() {
        let item = Item {
            title: Some("hello world".into()),
            lang: Some(" fr ".into()),
            ..Item::default()
        };
        let s = Spec {
            include_lang: true,
            ..Spec::default()
        };
        assert_eq!(assemble(&item, &s), "lang: fr | title: hello world");
        let s = Spec {
            include_lang: true,
            ..spec(char_len("lang: fr | title: h"))
        };
        assert_eq!(assemble(&item, &s), "lang: fr | title: h");
        let s = Spec {
            include_lang: true,
            ..spec(char_len("lang: fr | title: "))
        };
        assert_eq!(assemble(&item, &s), "lang: fr");
        let s = Spec {
            include_lang: true,
            ..spec(3)
        };
        assert_eq!(assemble(&item, &s), "");
    }
}

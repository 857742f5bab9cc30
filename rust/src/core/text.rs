//! Text cleaning and grapheme-safe truncation.
//!
//! Catalog text arrives as scraped HTML, user input and machine-translated strings in every script.
//! Everything here is a hand-written linear scanner: inputs can be megabytes long, and the cleaned
//! text must be identical no matter which language or markup it came wrapped in.

use unicode_normalization::{is_nfkc_quick, IsNormalized, UnicodeNormalization};
use unicode_segmentation::{GraphemeCursor, UnicodeSegmentation};

/// Clean raw (possibly HTML) text into a single line of normalized, visible text.
///
/// Steps, in order: strip markup (`<script>`/`<style>` with their content, every other tag
/// becomes a space), decode character references, drop control and invisible format characters,
/// NFKC-normalize, then collapse whitespace runs to one ASCII space and trim.
///
/// Junk characters are removed *before* NFKC rather than after it: removing e.g. a soft hyphen
/// between a letter and a combining accent after normalization would leave the pair unnormalized.
/// NFKC never produces control or junk format characters, so the result is the same otherwise and
/// is guaranteed to be NFKC.
pub fn clean_text(s: &str) -> String {
    let stripped = if s.contains('<') { strip_html(s) } else { s.to_owned() };
    let decoded = if stripped.contains('&') {
        decode_entities(&stripped)
    } else {
        stripped
    };

    let mut out = String::with_capacity(decoded.len());
    if decoded.is_ascii() {
        // ASCII is always NFKC; skipping the normalizer matters for multi-megabyte inputs.
        push_collapsed_ascii(&mut out, &decoded);
    } else {
        let visible = || decoded.chars().filter(|&c| !is_junk(c));
        match is_nfkc_quick(visible()) {
            IsNormalized::Yes => push_collapsed(&mut out, visible()),
            _ => push_collapsed(&mut out, visible().nfkc()),
        }
    }
    out
}

/// Number of Unicode scalar values, the unit every budget in pinrel is expressed in.
pub fn char_len(s: &str) -> usize {
    s.chars().count()
}

/// The longest prefix of `s` made of whole extended grapheme clusters with at most `max_chars`
/// scalar values, with trailing whitespace removed.
///
/// Cutting inside a cluster would leave a dangling combining mark, half a flag or a broken emoji
/// ZWJ sequence, which tokenizers turn into garbage tokens.
pub fn truncate_graphemes(s: &str, max_chars: usize) -> &str {
    // Byte length bounds char length, so a short-enough string needs no segmentation at all.
    let end = if s.len() <= max_chars {
        s.len()
    } else {
        match s.char_indices().nth(max_chars) {
            None => s.len(),
            // The cut is the last cluster boundary at or before char `max_chars`. Asking the cursor
            // about that one position, instead of segmenting every cluster before it, keeps long
            // fields cheap: a 600-char description cap would otherwise segment 600 clusters.
            Some((at, _)) => {
                let mut cursor = GraphemeCursor::new(at, s.len(), true);
                // With the whole string as the chunk, the cursor never asks for more context.
                if cursor.is_boundary(s, 0).unwrap_or(false) {
                    at
                } else {
                    cursor.prev_boundary(s, 0).ok().flatten().unwrap_or(0)
                }
            }
        }
    };
    trim_end_clusters(&s[..end])
}

/// Trim trailing whitespace one whole cluster at a time: `str::trim_end` could strip the last
/// char of a cluster such as a prepended concatenation mark followed by a space.
fn trim_end_clusters(s: &str) -> &str {
    let mut cut = s.len();
    let mut clusters = s.graphemes(true);
    while let Some(cluster) = clusters.next_back() {
        if !cluster.chars().all(char::is_whitespace) {
            break;
        }
        cut -= cluster.len();
    }
    &s[..cut]
}

// ---------------------------------------------------------------------------------------------
// Whitespace and invisible characters
// ---------------------------------------------------------------------------------------------

/// U+001C..U+001F are "information separators": they split records and fields in legacy data, so
/// gluing the neighbouring words together would be wrong (Python's `str.split` agrees).
fn is_space(c: char) -> bool {
    c.is_whitespace() || ('\u{1C}'..='\u{1F}').contains(&c)
}

/// Characters that carry no visible content for a text model.
///
/// ZWNJ (U+200C) and ZWJ (U+200D) are deliberately absent: Persian and Indic orthography and emoji
/// sequences depend on them. Emoji tag characters (U+E0020..U+E007F) stay for subdivision flags.
fn is_junk(c: char) -> bool {
    if is_space(c) {
        return false;
    }
    c.is_control()
        || matches!(
            c,
            '\u{00AD}'                      // soft hyphen
                | '\u{061C}'                // Arabic letter mark
                | '\u{200B}'                // zero-width space
                | '\u{200E}'..='\u{200F}'   // LRM, RLM
                | '\u{202A}'..='\u{202E}'   // bidi embeddings and overrides
                | '\u{2060}'..='\u{2064}'   // word joiner, invisible math operators
                | '\u{2066}'..='\u{2069}'   // bidi isolates
                | '\u{206A}'..='\u{206F}'   // deprecated format characters
                | '\u{FEFF}'                // BOM / zero-width no-break space
                | '\u{FFF9}'..='\u{FFFB}'   // interlinear annotation
                | '\u{E0001}'              // language tag
        )
}

/// [`push_collapsed`] for ASCII text, copying runs of visible bytes at once. Most catalog text is
/// ASCII, and decoding it char by char with Unicode property lookups was the largest single cost
/// of assembly. The classes are those of [`is_space`] and [`is_junk`] restricted to ASCII.
fn push_collapsed_ascii(out: &mut String, s: &str) {
    let b = s.as_bytes();
    let mut pending_space = false;
    let mut i = 0usize;
    while i < b.len() {
        match b[i] {
            b'\t' | b'\n' | 0x0B | 0x0C | b'\r' | b' ' | 0x1C..=0x1F => {
                pending_space = true;
                i += 1;
            }
            0x00..=0x1F | 0x7F => i += 1,
            _ => {
                let start = i;
                while i < b.len() && matches!(b[i], 0x21..=0x7E) {
                    i += 1;
                }
                if pending_space && !out.is_empty() {
                    out.push(' ');
                }
                pending_space = false;
                out.push_str(&s[start..i]);
            }
        }
    }
}

fn push_collapsed(out: &mut String, chars: impl Iterator<Item = char>) {
    let mut pending_space = false;
    for c in chars {
        if is_space(c) {
            pending_space = true;
        } else if !is_junk(c) {
            if pending_space && !out.is_empty() {
                out.push(' ');
            }
            pending_space = false;
            out.push(c);
        }
    }
}

// ---------------------------------------------------------------------------------------------
// Markup
// ---------------------------------------------------------------------------------------------

/// Replace markup with spaces. Every search below either consumes the bytes it scans or ends the
/// scan (or sets a flag that prevents repeating it), which keeps the whole pass linear even on
/// adversarial input such as thousands of unclosed `<script>` or `<!--`.
fn strip_html(s: &str) -> String {
    let b = s.as_bytes();
    let mut out = String::with_capacity(s.len());
    // A `<` after the last `>` can never close, so it is text; knowing this up front avoids
    // rescanning to the end for each of them.
    let last_gt = b.iter().rposition(|&x| x == b'>');
    let mut comment_end_missing = false;
    let mut copied = 0usize;
    let mut i = 0usize;

    while i < b.len() {
        if b[i] != b'<' || !starts_tag(b, i) || last_gt.is_none_or(|g| g < i) {
            i += 1;
            continue;
        }
        out.push_str(&s[copied..i]);
        out.push(' ');

        if !comment_end_missing && b[i..].starts_with(b"<!--") {
            match find(b, i + 4, b"-->") {
                Some(p) => {
                    i = p + 3;
                    copied = i;
                    continue;
                }
                // Browsers would swallow the rest; treating it as an ordinary tag loses less text
                // when a stray `<!--` appears in user-written content.
                None => comment_end_missing = true,
            }
        }

        let tag_end = find_byte(b, i + 1, b'>').expect("a '>' exists after every '<' before last_gt");
        if let Some(name) = raw_text_element(b, i) {
            // Script and style bodies are code, not text: drop them up to the closing tag, or to
            // the end of input when it is missing (as a browser would).
            match find_ci(b, tag_end + 1, name) {
                Some(close) => {
                    i = find_byte(b, close + name.len(), b'>').map_or(b.len(), |p| p + 1);
                }
                None => i = b.len(),
            }
        } else {
            i = tag_end + 1;
        }
        copied = i;
    }
    out.push_str(&s[copied..]);
    out
}

/// `<` starts markup only when followed by a letter, `/`, `!` or `?` (XML declarations and
/// processing instructions), so "a < b" and "<3" survive as text.
fn starts_tag(b: &[u8], i: usize) -> bool {
    matches!(b.get(i + 1), Some(c) if c.is_ascii_alphabetic() || matches!(c, b'/' | b'!' | b'?'))
}

/// For `<script` / `<style` openings, the closing-tag prefix to search for.
fn raw_text_element(b: &[u8], i: usize) -> Option<&'static [u8]> {
    for (open, close) in [(&b"<script"[..], &b"</script"[..]), (b"<style", b"</style")] {
        if starts_with_ci(&b[i..], open) {
            let next = b.get(i + open.len());
            if next.is_none_or(|c| c.is_ascii_whitespace() || matches!(c, b'>' | b'/')) {
                return Some(close);
            }
        }
    }
    None
}

fn starts_with_ci(hay: &[u8], needle: &[u8]) -> bool {
    hay.len() >= needle.len() && hay[..needle.len()].eq_ignore_ascii_case(needle)
}

fn find_byte(b: &[u8], from: usize, x: u8) -> Option<usize> {
    b.get(from..)?.iter().position(|&c| c == x).map(|p| p + from)
}

/// Needles here are a few bytes long, so the naive scan is linear in practice (O(n * |needle|)).
fn find(b: &[u8], from: usize, needle: &[u8]) -> Option<usize> {
    b.get(from..)?
        .windows(needle.len())
        .position(|w| w == needle)
        .map(|p| p + from)
}

fn find_ci(b: &[u8], from: usize, needle: &[u8]) -> Option<usize> {
    b.get(from..)?
        .windows(needle.len())
        .position(|w| w.eq_ignore_ascii_case(needle))
        .map(|p| p + from)
}

// ---------------------------------------------------------------------------------------------
// Character references
// ---------------------------------------------------------------------------------------------

/// Longest entity name we look up; bounding the look-ahead keeps decoding linear.
const MAX_ENTITY_NAME: usize = 32;

fn decode_entities(s: &str) -> String {
    let b = s.as_bytes();
    let mut out = String::with_capacity(s.len());
    let mut copied = 0usize;
    let mut i = 0usize;
    while i < b.len() {
        if b[i] != b'&' {
            i += 1;
            continue;
        }
        let Some((decoded, next)) = parse_reference(b, i) else {
            i += 1;
            continue;
        };
        out.push_str(&s[copied..i]);
        out.push(decoded);
        i = next;
        copied = i;
    }
    out.push_str(&s[copied..]);
    out
}

/// Parse a character reference starting at `b[at] == b'&'`: the decoded char and the index just
/// past the reference. Unknown or malformed references return `None` and stay verbatim.
fn parse_reference(b: &[u8], at: usize) -> Option<(char, usize)> {
    let mut i = at + 1;
    if b.get(i) == Some(&b'#') {
        i += 1;
        let hex = matches!(b.get(i), Some(b'x' | b'X'));
        if hex {
            i += 1;
        }
        let radix = if hex { 16 } else { 10 };
        let digits_start = i;
        // Saturate instead of overflowing: anything past U+10FFFF is invalid anyway.
        let mut value: u32 = 0;
        while let Some(d) = b.get(i).and_then(|&c| (c as char).to_digit(radix)) {
            value = value.saturating_mul(radix).saturating_add(d).min(0x11_0000);
            i += 1;
        }
        if i == digits_start {
            return None;
        }
        // Browsers accept numeric references without the semicolon, and scraped text relies on it.
        if b.get(i) == Some(&b';') {
            i += 1;
        }
        return Some((numeric_char(value), i));
    }

    let name_start = i;
    while i < b.len() && i - name_start < MAX_ENTITY_NAME && b[i].is_ascii_alphanumeric() {
        i += 1;
    }
    if i == name_start || b.get(i) != Some(&b';') {
        return None;
    }
    let name = std::str::from_utf8(&b[name_start..i]).ok()?;
    named_entity(name).map(|c| (c, i + 1))
}

/// Map a numeric reference to a char the way HTML does: NUL, surrogates and out-of-range values
/// become U+FFFD, and C1 values are read as Windows-1252 because that is what the authors of such
/// pages meant (`&#150;` is an en dash on the web, not a control character).
fn numeric_char(v: u32) -> char {
    const CP1252: [u32; 32] = [
        0x20AC, 0x81, 0x201A, 0x0192, 0x201E, 0x2026, 0x2020, 0x2021, 0x02C6, 0x2030, 0x0160, 0x2039, 0x0152, 0x8D,
        0x017D, 0x8F, 0x90, 0x2018, 0x2019, 0x201C, 0x201D, 0x2022, 0x2013, 0x2014, 0x02DC, 0x2122, 0x0161, 0x203A,
        0x0153, 0x9D, 0x017E, 0x0178,
    ];
    let v = match v {
        0 => return char::REPLACEMENT_CHARACTER,
        0x80..=0x9F => CP1252[(v - 0x80) as usize],
        _ => v,
    };
    char::from_u32(v).unwrap_or(char::REPLACEMENT_CHARACTER)
}

/// Named references that actually occur in catalog text. Names are case-sensitive, as in HTML.
fn named_entity(name: &str) -> Option<char> {
    let c = match name {
        "amp" | "AMP" => '&',
        "lt" | "LT" => '<',
        "gt" | "GT" => '>',
        "quot" | "QUOT" => '"',
        "apos" => '\'',
        "nbsp" => '\u{A0}',
        "ensp" => '\u{2002}',
        "emsp" => '\u{2003}',
        "thinsp" => '\u{2009}',
        "zwnj" => '\u{200C}',
        "zwj" => '\u{200D}',
        "lrm" => '\u{200E}',
        "rlm" => '\u{200F}',
        "shy" => '\u{AD}',
        "copy" | "COPY" => '©',
        "reg" | "REG" => '®',
        "trade" | "TRADE" => '™',
        "hellip" => '…',
        "mdash" => '—',
        "ndash" => '–',
        "lsquo" => '‘',
        "rsquo" => '’',
        "sbquo" => '‚',
        "ldquo" => '“',
        "rdquo" => '”',
        "bdquo" => '„',
        "laquo" => '«',
        "raquo" => '»',
        "lsaquo" => '‹',
        "rsaquo" => '›',
        "bull" => '•',
        "middot" => '·',
        "prime" => '′',
        "Prime" => '″',
        "dagger" => '†',
        "Dagger" => '‡',
        "permil" => '‰',
        "euro" => '€',
        "cent" => '¢',
        "pound" => '£',
        "yen" => '¥',
        "curren" => '¤',
        "sect" => '§',
        "para" => '¶',
        "deg" => '°',
        "plusmn" => '±',
        "times" => '×',
        "divide" => '÷',
        "micro" => 'µ',
        "frac14" => '¼',
        "frac12" => '½',
        "frac34" => '¾',
        "sup1" => '¹',
        "sup2" => '²',
        "sup3" => '³',
        "ordf" => 'ª',
        "ordm" => 'º',
        "iexcl" => '¡',
        "iquest" => '¿',
        "brvbar" => '¦',
        "not" => '¬',
        "macr" => '¯',
        "acute" => '´',
        "cedil" => '¸',
        "uml" => '¨',
        "larr" => '←',
        "rarr" => '→',
        "uarr" => '↑',
        "darr" => '↓',
        "harr" => '↔',
        "hearts" => '♥',
        "spades" => '♠',
        "clubs" => '♣',
        "diams" => '♦',
        "star" => '☆',
        "check" => '✓',
        "infin" => '∞',
        "ne" => '≠',
        "le" => '≤',
        "ge" => '≥',
        "asymp" => '≈',
        "minus" => '−',
        "Agrave" => 'À',
        "Aacute" => 'Á',
        "Acirc" => 'Â',
        "Atilde" => 'Ã',
        "Auml" => 'Ä',
        "Aring" => 'Å',
        "AElig" => 'Æ',
        "Ccedil" => 'Ç',
        "Egrave" => 'È',
        "Eacute" => 'É',
        "Ecirc" => 'Ê',
        "Euml" => 'Ë',
        "Igrave" => 'Ì',
        "Iacute" => 'Í',
        "Icirc" => 'Î',
        "Iuml" => 'Ï',
        "ETH" => 'Ð',
        "Ntilde" => 'Ñ',
        "Ograve" => 'Ò',
        "Oacute" => 'Ó',
        "Ocirc" => 'Ô',
        "Otilde" => 'Õ',
        "Ouml" => 'Ö',
        "Oslash" => 'Ø',
        "Ugrave" => 'Ù',
        "Uacute" => 'Ú',
        "Ucirc" => 'Û',
        "Uuml" => 'Ü',
        "Yacute" => 'Ý',
        "THORN" => 'Þ',
        "szlig" => 'ß',
        "agrave" => 'à',
        "aacute" => 'á',
        "acirc" => 'â',
        "atilde" => 'ã',
        "auml" => 'ä',
        "aring" => 'å',
        "aelig" => 'æ',
        "ccedil" => 'ç',
        "egrave" => 'è',
        "eacute" => 'é',
        "ecirc" => 'ê',
        "euml" => 'ë',
        "igrave" => 'ì',
        "iacute" => 'í',
        "icirc" => 'î',
        "iuml" => 'ï',
        "eth" => 'ð',
        "ntilde" => 'ñ',
        "ograve" => 'ò',
        "oacute" => 'ó',
        "ocirc" => 'ô',
        "otilde" => 'õ',
        "ouml" => 'ö',
        "oslash" => 'ø',
        "ugrave" => 'ù',
        "uacute" => 'ú',
        "ucirc" => 'û',
        "uuml" => 'ü',
        "yacute" => 'ý',
        "thorn" => 'þ',
        "yuml" => 'ÿ',
        "OElig" => 'Œ',
        "oelig" => 'œ',
        "Scaron" => 'Š',
        "scaron" => 'š',
        "Yuml" => 'Ÿ',
        "fnof" => 'ƒ',
        "circ" => 'ˆ',
        "tilde" => '˜',
        "alpha" => 'α',
        "beta" => 'β',
        "gamma" => 'γ',
        "delta" => 'δ',
        "pi" => 'π',
        "mu" => 'μ',
        "sigma" => 'σ',
        "omega" => 'ω',
        "Omega" => 'Ω',
        _ => return None,
    };
    Some(c)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn strips_tags_scripts_styles_and_comments() {
        assert_eq!(clean_text("<p>Hello <b>world</b></p>"), "Hello world");
        assert_eq!(clean_text("a<script type=\"x\">var x = '<b>';</script>b"), "a b");
        assert_eq!(clean_text("a<STYLE>p { color: red }</Style >b"), "a b");
        assert_eq!(clean_text("a<!-- <b> x > y -->b"), "a b");
        assert_eq!(clean_text("<?xml version=\"1.0\"?><r>x</r>"), "x");
        assert_eq!(clean_text("x<script>never closed"), "x");
        // <scripts> is not <script>
        assert_eq!(clean_text("<scripts>kept</scripts>"), "kept");
    }

    #[test]
    fn lone_angle_brackets_are_text() {
        assert_eq!(clean_text("a < b and c > d"), "a < b and c > d");
        assert_eq!(clean_text("I <3 you"), "I <3 you");
        assert_eq!(clean_text("x <y"), "x <y");
        assert_eq!(clean_text("x <!-- unterminated"), "x <!-- unterminated");
        assert_eq!(clean_text("<"), "<");
    }

    #[test]
    fn decodes_entities_once_and_never_as_markup() {
        assert_eq!(clean_text("Tom &amp; Jerry"), "Tom & Jerry");
        assert_eq!(clean_text("&lt;b&gt;bold&lt;/b&gt;"), "<b>bold</b>");
        assert_eq!(clean_text("&amp;lt;"), "&lt;");
        assert_eq!(clean_text("caf&eacute; &#233; &#xE9; &#XE9"), "café é é é");
        assert_eq!(clean_text("&quot;q&quot; &apos;a&apos;"), "\"q\" 'a'");
        assert_eq!(clean_text("&copy;&reg;&hellip;&mdash;&euro;"), "©®...—€");
        assert_eq!(clean_text("&#150;"), "–");
        assert_eq!(
            clean_text("&#0;|&#xD800;|&#x110000;|&#99999999999999999999;"),
            "\u{FFFD}|\u{FFFD}|\u{FFFD}|\u{FFFD}"
        );
        assert_eq!(clean_text("&bogus; &amp &; &#; &#x;"), "&bogus; &amp &; &#; &#x;");
        assert_eq!(clean_text("a&nbsp;&nbsp;b"), "a b");
    }

    #[test]
    fn nfkc_and_invisible_characters() {
        assert_eq!(clean_text("ＡＢＣ１２３"), "ABC123");
        assert_eq!(clean_text("ﬁle"), "file");
        assert_eq!(clean_text("e\u{301}"), "\u{e9}");
        assert_eq!(clean_text("a\u{0}b\u{7}c\u{7F}d\u{9F}e"), "abcde");
        assert_eq!(
            clean_text("zero\u{200B}width\u{FEFF} soft\u{AD}hyphen"),
            "zerowidth softhyphen"
        );
        assert_eq!(clean_text("\u{202E}abc\u{202C} \u{2067}x\u{2069}"), "abc x");
        // ZWNJ in Persian and ZWJ in emoji sequences must survive.
        assert_eq!(clean_text("می\u{200C}خواهم"), "می\u{200C}خواهم");
        assert_eq!(clean_text("👩\u{200D}💻"), "👩\u{200D}💻");
        // A soft hyphen between a letter and its accent must not leave the pair decomposed.
        assert_eq!(clean_text("e\u{AD}\u{301}"), "\u{e9}");
    }

    #[test]
    fn collapses_whitespace() {
        assert_eq!(
            clean_text("  a \t\n\r b\u{2003}\u{3000}c\u{2028}d\u{85}e\u{1F}f  "),
            "a b c d e f"
        );
        assert_eq!(clean_text("\n\t "), "");
        assert_eq!(clean_text(""), "");
        assert_eq!(clean_text("a \u{200B} b"), "a b");
    }

    #[test]
    fn ascii_fast_path_matches_the_general_one() {
        let all: String = (0u8..=0x7F).map(char::from).collect();
        for s in [
            all.as_str(),
            " a\x0Bb\x1Fc\x7Fd\x00 e\t\r\n",
            "\x01\x02",
            "x  ",
            "  ",
            "",
        ] {
            let mut fast = String::new();
            push_collapsed_ascii(&mut fast, s);
            let mut slow = String::new();
            push_collapsed(&mut slow, s.chars());
            assert_eq!(fast, slow, "{s:?}");
        }
    }

    #[test]
    fn char_len_counts_scalars() {
        assert_eq!(char_len(""), 0);
        assert_eq!(char_len("héllo"), 5);
        assert_eq!(char_len("👩‍👩‍👧‍👦"), 7);
    }

    #[test]
    fn truncation_keeps_clusters_whole() {
        assert_eq!(truncate_graphemes("hello world", 5), "hello");
        assert_eq!(truncate_graphemes("hello world", 6), "hello");
        assert_eq!(truncate_graphemes("hi  ", 10), "hi");
        assert_eq!(truncate_graphemes("abc", 0), "");
        let family = "👩‍👩‍👧‍👦";
        assert_eq!(truncate_graphemes(family, 6), "");
        assert_eq!(truncate_graphemes(family, 7), family);
        assert_eq!(truncate_graphemes("🇯🇵🇫🇷", 3), "🇯🇵");
        assert_eq!(truncate_graphemes("e\u{301}x", 1), "");
        assert_eq!(truncate_graphemes("\r\n", 1), "");
    }

    #[test]
    fn truncation_matches_the_cluster_by_cluster_definition() {
        // The definition, spelled out: whole clusters while they fit, then trim.
        fn reference(s: &str, max_chars: usize) -> &str {
            let mut used = 0;
            let mut end = 0;
            for (start, cluster) in s.grapheme_indices(true) {
                used += char_len(cluster);
                if used > max_chars {
                    break;
                }
                end = start + cluster.len();
            }
            trim_end_clusters(&s[..end])
        }
        let samples = [
            "hello world",
            "👨\u{200d}👩\u{200d}👧\u{200d}👦🇯🇵e\u{301}👍🏽नमस्ते",
            "a\r\nb\r\n",
            "🇯🇵🇫🇷🇩",
            "สวัสดีครับ ภาษาไทย",
            "x\u{301}\u{302}y  z \u{3000}w",
            "각\u{1100}\u{1161}\u{11a8}",
        ];
        for s in samples {
            for max_chars in 0..=char_len(s) + 1 {
                assert_eq!(
                    truncate_graphemes(s, max_chars),
                    reference(s, max_chars),
                    "{s:?} {max_chars}"
                );
            }
        }
    }

    #[test]
    fn large_adversarial_inputs_are_linear() {
        let n = 200_000;
        for s in [
            "<script>".repeat(n),
            "<!--".repeat(n),
            "<a".repeat(n),
            "&#".repeat(n),
            "&amp".repeat(n),
        ] {
            let t = std::time::Instant::now();
            let _ = clean_text(&s);
            assert!(t.elapsed().as_secs_f64() < 2.0);
        }
    }
}

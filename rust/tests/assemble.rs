//! Behaviour of text cleaning and item assembly through the public core API, across scripts.

use _native::core::assemble::{assemble, assemble_pair, clean_query, Field, Item, Spec};
use _native::core::text::{char_len, clean_text, truncate_graphemes};
use _native::core::CoreError;
use unicode_segmentation::UnicodeSegmentation;

/// One sample per script the system must handle, each with multi-char clusters where the script
/// has them.
const SCRIPTS: &[(&str, &str)] = &[
    ("latin", "Crème brûlée façon grand-mère"),
    ("combining", "e\u{301}e\u{301}a\u{308}o\u{302}\u{323}"),
    ("cyrillic", "Пирог с вишней и сметаной"),
    ("greek", "Ελληνική σαλάτα με φέτα"),
    ("arabic", "سلطة فتوش لبنانية بالسماق"),
    ("hebrew", "סלט ירקות ישראלי עם טחינה"),
    ("persian_zwnj", "می\u{200C}خواهم کتاب\u{200C}ها"),
    ("cjk", "日本の伝統的な料理と中文菜谱"),
    ("hangul", "한국 전통 음식 레시피"),
    ("thai", "สวัสดีครับ อาหารไทย"),
    ("devanagari", "नमस्ते क्षत्रिय स्वादिष्ट"),
    ("family_emoji", "👩‍👩‍👧‍👦👨‍👩‍👦"),
    ("flags", "🇯🇵🇫🇷🇧🇷🏴󠁧󠁢󠁳󠁣󠁴󠁿"),
    ("skin_tone", "👍🏽👋🏿 ok"),
];

/// Byte offsets where `s` may be cut without splitting an extended grapheme cluster.
fn boundaries(s: &str) -> Vec<usize> {
    let mut b: Vec<usize> = s.grapheme_indices(true).map(|(i, _)| i).collect();
    b.push(s.len());
    b
}

fn assert_whole_prefix(full: &str, part: &str, ctx: &str) {
    assert!(full.starts_with(part), "{ctx}: {part:?} is not a prefix of {full:?}");
    assert!(
        boundaries(full).contains(&part.len()),
        "{ctx}: {part:?} splits a grapheme cluster of {full:?}"
    );
}

// ----------------------------------------------------------------------------------------------
// clean_text
// ----------------------------------------------------------------------------------------------

#[test]
fn html_is_stripped() {
    assert_eq!(
        clean_text("<div><h1>Title</h1><p>Body&nbsp;text</p></div>"),
        "Title Body text"
    );
    assert_eq!(
        clean_text("before<script>alert('<p>hi</p>')</script>after"),
        "before after"
    );
    assert_eq!(
        clean_text("before<style type=text/css>.a>b{}</style>after"),
        "before after"
    );
    assert_eq!(clean_text("x<br/>y<BR>z<img src='a.png' alt=\"pic\">w"), "x y z w");
    assert_eq!(clean_text("<!DOCTYPE html><html>ok</html>"), "ok");
    assert_eq!(clean_text("3 < 5 and 5 > 3"), "3 < 5 and 5 > 3");
}

#[test]
fn entities_are_decoded_but_not_reparsed() {
    assert_eq!(clean_text("Fish &amp; Chips"), "Fish & Chips");
    assert_eq!(
        clean_text("&lt;script&gt;alert(1)&lt;/script&gt;"),
        "<script>alert(1)</script>"
    );
    assert_eq!(clean_text("&#72;&#x69;&#X21;"), "Hi!");
    assert_eq!(
        clean_text("Caf&eacute; &ldquo;Paris&rdquo; &ndash; 5&euro;"),
        "Café “Paris” – 5€"
    );
    assert_eq!(clean_text("&unknown; &#xZZ;"), "&unknown; &#xZZ;");
    assert_eq!(clean_text("bad &#xD83D; &#1114112;"), "bad \u{FFFD} \u{FFFD}");
}

#[test]
fn nfkc_normalization() {
    assert_eq!(clean_text("ＡＢＣ"), "ABC");
    assert_eq!(clean_text("ﬁ ﬂ"), "fi fl");
    assert_eq!(clean_text("ｶﾀｶﾅ"), "カタカナ");
    assert_eq!(clean_text("A\u{30A}"), "\u{C5}");
    assert_eq!(clean_text("①"), "1");
}

#[test]
fn controls_and_invisibles_are_removed() {
    assert_eq!(clean_text("a\u{0}b\u{1}c\u{1B}[0md"), "abc[0md");
    assert_eq!(clean_text("\u{FEFF}bom"), "bom");
    assert_eq!(clean_text("zero\u{200B}width"), "zerowidth");
    assert_eq!(clean_text("soft\u{AD}hyphen"), "softhyphen");
    assert_eq!(
        clean_text("\u{202D}over\u{202C}ride \u{2066}iso\u{2069}"),
        "override iso"
    );
    assert_eq!(clean_text("کتاب\u{200C}ها"), "کتاب\u{200C}ها");
    assert_eq!(clean_text("👨\u{200D}🍳"), "👨\u{200D}🍳");
}

#[test]
fn whitespace_is_collapsed() {
    assert_eq!(
        clean_text("\t a\n\n b \r\n c\u{A0}d\u{2009}e\u{3000}f \u{2029}"),
        "a b c d e f"
    );
    assert_eq!(clean_text(" \u{200B} "), "");
    assert_eq!(clean_text("<p> </p>&nbsp;"), "");
}

#[test]
fn clean_text_is_idempotent_on_clean_text() {
    for (name, s) in SCRIPTS {
        let once = clean_text(s);
        assert_eq!(clean_text(&once), once, "{name}");
    }
}

#[test]
fn clean_text_handles_a_large_input_quickly() {
    let page = "<div class=\"c\">Caf&eacute; <b>au lait</b> — 日本語 नमस्ते 👩‍👩‍👧‍👦</div>\n".repeat(20_000);
    let t = std::time::Instant::now();
    let out = clean_text(&page);
    assert!(t.elapsed().as_secs_f64() < 5.0);
    assert!(out.starts_with("Café au lait — 日本語 नमस्ते 👩‍👩‍👧‍👦 Café"));
}

// ----------------------------------------------------------------------------------------------
// truncate_graphemes
// ----------------------------------------------------------------------------------------------

#[test]
fn truncation_examples() {
    let family = "👩‍👩‍👧‍👦";
    assert_eq!(char_len(family), 7);
    assert_eq!(truncate_graphemes(family, 6), "");
    assert_eq!(truncate_graphemes(&format!("{family}{family}"), 13), family);
    assert_eq!(truncate_graphemes("🇯🇵", 1), "");
    assert_eq!(truncate_graphemes("🇯🇵", 2), "🇯🇵");
    // The conjunct स्ते (4 chars) is a single cluster under Unicode 15.1's rule GB9c.
    assert_eq!(truncate_graphemes("नमस्ते", 3), "नम");
    assert_eq!(truncate_graphemes("नमस्ते", 5), "नम");
    assert_eq!(truncate_graphemes("नमस्ते", 6), "नमस्ते");
    assert_eq!(truncate_graphemes("สวัสดี", 2), "ส");
    assert_eq!(truncate_graphemes("สวัสดี", 3), "สวั");
    assert_eq!(truncate_graphemes("e\u{301}", 1), "");
    assert_eq!(truncate_graphemes("e\u{301}", 2), "e\u{301}");
    assert_eq!(truncate_graphemes("ab cd", 3), "ab");
    assert_eq!(truncate_graphemes("trailing   ", 100), "trailing");
}

#[test]
fn truncation_never_splits_clusters_in_any_script() {
    for (name, s) in SCRIPTS {
        let n = char_len(s);
        let mut prev_len = 0;
        for k in 0..=n + 2 {
            let t = truncate_graphemes(s, k);
            let ctx = format!("{name} k={k}");
            assert!(char_len(t) <= k, "{ctx}: {t:?} too long");
            assert_whole_prefix(s, t, &ctx);
            assert_eq!(t, t.trim_end(), "{ctx}: trailing whitespace");
            assert!(t.len() >= prev_len, "{ctx}: not monotone");
            prev_len = t.len();
            // Maximal: the next cluster (ignoring whitespace-only ones) would not have fit.
            let rest = &s[t.len()..];
            let skipped_ws: usize = rest
                .graphemes(true)
                .take_while(|g| g.trim().is_empty())
                .map(char_len)
                .sum();
            if let Some(next) = rest.graphemes(true).find(|g| !g.trim().is_empty()) {
                assert!(
                    char_len(t) + skipped_ws + char_len(next) > k,
                    "{ctx}: {t:?} is not maximal"
                );
            }
        }
        assert_eq!(truncate_graphemes(s, n), s.trim_end(), "{name}");
    }
}

// ----------------------------------------------------------------------------------------------
// assemble
// ----------------------------------------------------------------------------------------------

fn rich_item() -> Item {
    Item {
        title: Some("<b>Crème brûlée</b> — 日本の料理 👩‍👩‍👧‍👦".into()),
        description: Some(
            "Пирог с вишней. Ελληνική σαλάτα. سلطة فتوش. סלט ירקות. สวัสดีครับ. नमस्ते क्षत्रिय. 🇯🇵🇫🇷 e\u{301}té".repeat(8),
        ),
        captions: vec!["한국 전통 음식".into(), "Thai สวัสดี".into(), "한국 전통 음식".into()],
        boards: vec!["Desserts 🍰".into(), "DESSERTS 🍰".into(), "Рецепты".into()],
        queries: vec![
            "creme brulee".into(),
            "ｃｒｅｍｅ ｂｒｕｌｅｅ".into(),
            "कैसे बनाएं".into(),
        ],
        link_title: Some("Recipe &amp; tips".into()),
        link_description: Some("A very long link description. ".repeat(30)),
        lang: Some("fr".into()),
    }
}

/// Split an assembled text back into (label, content) pairs. Test data avoids the separator text.
fn parse<'a>(text: &'a str, spec: &'a Spec) -> Vec<(&'a str, &'a str)> {
    if text.is_empty() {
        return Vec::new();
    }
    let mut labels: Vec<&str> = spec.fields.iter().map(|&f| spec.label(f)).collect();
    labels.push("lang: ");
    text.split(spec.separator.as_str())
        .map(|seg| {
            let label = labels
                .iter()
                .find(|l| seg.starts_with(**l))
                .unwrap_or_else(|| panic!("no label in {seg:?}"));
            (*label, &seg[label.len()..])
        })
        .collect()
}

#[test]
fn budget_is_respected_and_clusters_are_never_split() {
    let item = rich_item();
    for include_lang in [false, true] {
        let base = Spec {
            include_lang,
            ..Spec::default()
        };
        let unlimited = Spec {
            max_chars: 1_000_000,
            field_max_chars: Field::ALL.iter().map(|&f| (f, 1_000_000)).collect(),
            ..base.clone()
        };
        let full_text = assemble(&item, &unlimited);
        let full = parse(&full_text, &unlimited);
        assert_eq!(full.len(), if include_lang { 8 } else { 7 });

        for max_chars in (1..=400).chain((400..=1500).step_by(37)) {
            let spec = Spec {
                max_chars,
                ..base.clone()
            };
            let out = assemble(&item, &spec);
            assert!(
                char_len(&out) <= max_chars,
                "max_chars={max_chars}: {} chars",
                char_len(&out)
            );
            let mut last_index = None;
            for (label, content) in parse(&out, &spec) {
                let index = full
                    .iter()
                    .position(|(l, _)| *l == label)
                    .expect("label from the full text");
                assert!(
                    last_index < Some(index),
                    "max_chars={max_chars}: field order changed in {out:?}"
                );
                last_index = Some(index);
                assert!(!content.is_empty(), "max_chars={max_chars}: empty field in {out:?}");
                assert_whole_prefix(full[index].1, content, &format!("max_chars={max_chars} {label}"));
            }
        }
    }
}

#[test]
fn budget_is_well_used() {
    let item = rich_item();
    for max_chars in [100, 300, 1024] {
        let out = assemble(
            &item,
            &Spec {
                max_chars,
                ..Spec::default()
            },
        );
        // Losses come only from cluster boundaries, trailing spaces and list separators.
        assert!(
            char_len(&out) + 20 >= max_chars,
            "max_chars={max_chars}: only {} chars used",
            char_len(&out)
        );
    }
}

#[test]
fn unused_budget_flows_to_long_fields() {
    let item = Item {
        title: Some("Cat".into()),
        description: Some("x".repeat(5000)),
        ..Item::default()
    };
    let spec = Spec {
        max_chars: 300,
        ..Spec::default()
    };
    let out = assemble(&item, &spec);
    let overhead = char_len("title: ") + char_len(" | ") + char_len("description: ");
    assert_eq!(
        out,
        format!("title: Cat | description: {}", "x".repeat(300 - overhead - 3))
    );
    assert_eq!(char_len(&out), 300);

    // Both long: the budget is shared evenly (the odd char goes to the first field).
    let item = Item {
        title: Some("t".repeat(5000)),
        description: Some("d".repeat(5000)),
        ..Item::default()
    };
    let out = assemble(
        &item,
        &Spec {
            max_chars: 100,
            ..Spec::default()
        },
    );
    let content = 100 - overhead;
    let (t, d) = (content.div_ceil(2), content / 2);
    assert_eq!(
        out,
        format!("title: {} | description: {}", "t".repeat(t), "d".repeat(d))
    );
}

#[test]
fn field_caps_limit_content_even_with_budget_to_spare() {
    let item = Item {
        title: Some("a".repeat(1000)),
        description: Some("b".repeat(1000)),
        ..Item::default()
    };
    let out = assemble(&item, &Spec::default());
    assert_eq!(
        out,
        format!("title: {} | description: {}", "a".repeat(200), "b".repeat(600))
    );

    let spec = Spec {
        field_max_chars: vec![(Field::Title, 5)],
        ..Spec::default()
    };
    assert_eq!(spec.field_cap(Field::Title), 5);
    assert_eq!(spec.field_cap(Field::Description), 600);
    let out = assemble(&item, &spec);
    assert_eq!(out, format!("title: aaaaa | description: {}", "b".repeat(600)));
}

#[test]
fn lists_are_cleaned_and_deduplicated() {
    let item = Item {
        captions: vec![
            "Cats".into(),
            "  cats ".into(),
            "<b>CATS</b>".into(),
            "".into(),
            "   ".into(),
            "Dogs".into(),
            "Ｃａｔｓ".into(),
            "Straße".into(),
            "STRASSE".into(),
        ],
        ..Item::default()
    };
    // Case-insensitive by to_lowercase: "STRASSE" differs from "straße" and stays.
    assert_eq!(
        assemble(&item, &Spec::default()),
        "captions: Cats; Dogs; Straße; STRASSE"
    );

    let spec = Spec {
        list_separator: " / ".into(),
        ..Spec::default()
    };
    assert_eq!(assemble(&item, &spec), "captions: Cats / Dogs / Straße / STRASSE");
}

#[test]
fn absent_and_blank_fields_are_skipped() {
    assert_eq!(assemble(&Item::default(), &Spec::default()), "");
    let item = Item {
        title: Some("  \n ".into()),
        description: Some("<p></p>".into()),
        captions: vec![" ".into()],
        link_title: Some("Link".into()),
        ..Item::default()
    };
    assert_eq!(assemble(&item, &Spec::default()), "link title: Link");
    // lang without include_lang is ignored
    let item = Item {
        title: Some("T".into()),
        lang: Some("de".into()),
        ..Item::default()
    };
    assert_eq!(assemble(&item, &Spec::default()), "title: T");
    assert_eq!(
        assemble(
            &item,
            &Spec {
                include_lang: true,
                ..Spec::default()
            }
        ),
        "lang: de | title: T"
    );
}

#[test]
fn field_order_labels_and_separator_follow_the_spec() {
    let item = Item {
        title: Some("T".into()),
        description: Some("D".into()),
        boards: vec!["B".into()],
        ..Item::default()
    };
    let spec = Spec {
        fields: vec![Field::Boards, Field::Description, Field::Title],
        labels: vec![(Field::Title, "Title=".into()), (Field::Boards, "".into())],
        separator: "\n".into(),
        ..Spec::default()
    };
    assert_eq!(assemble(&item, &spec), "B\ndescription: D\nTitle=T");

    let only_title = Spec {
        fields: vec![Field::Title],
        ..Spec::default()
    };
    assert_eq!(assemble(&item, &only_title), "title: T");
}

#[test]
fn fields_are_dropped_from_the_end_when_labels_do_not_fit() {
    let item = Item {
        title: Some("Title".into()),
        description: Some("Description".into()),
        link_title: Some("Link".into()),
        ..Item::default()
    };
    let spec = |max_chars| Spec {
        max_chars,
        ..Spec::default()
    };
    assert_eq!(assemble(&item, &spec(7)), "");
    assert_eq!(assemble(&item, &spec(8)), "title: T");
    // Two fields need both labels, a separator and a char each; the rest is shared evenly.
    assert_eq!(
        assemble(&item, &spec(char_len("title: T | description: D"))),
        "title: T | description: D"
    );
    assert_eq!(
        assemble(&item, &spec(char_len("title: Tit | description: Des"))),
        "title: Tit | description: Des"
    );
    assert_eq!(
        assemble(&item, &spec(char_len("title: T | description: D") - 1)),
        "title: Title"
    );
}

#[test]
fn a_field_whose_first_cluster_does_not_fit_is_dropped() {
    let item = Item {
        title: Some("👩‍👩‍👧‍👦".into()),
        description: Some("abc".into()),
        ..Item::default()
    };
    // 7 chars of budget for the emoji would be needed; the title goes and description takes over.
    let max = char_len("title: ") + 6 + char_len(" | description: abc");
    let out = assemble(
        &item,
        &Spec {
            max_chars: max,
            ..Spec::default()
        },
    );
    assert_eq!(out, "description: abc");
}

#[test]
fn every_script_fits_as_every_field() {
    for (name, s) in SCRIPTS {
        let item = Item {
            title: Some(s.repeat(20)),
            description: Some(s.repeat(50)),
            captions: vec![s.to_string(), format!("{s} 2")],
            ..Item::default()
        };
        for max_chars in [1, 10, 25, 50, 120, 333] {
            let out = assemble(
                &item,
                &Spec {
                    max_chars,
                    ..Spec::default()
                },
            );
            assert!(char_len(&out) <= max_chars, "{name} {max_chars}");
            assert_eq!(clean_text(&out), out, "{name} {max_chars}: output is not clean");
        }
    }
}

#[test]
fn pairs_and_queries() {
    let item = Item {
        title: Some("Red shoes".into()),
        ..Item::default()
    };
    let spec = Spec::default();
    assert_eq!(
        assemble_pair("  <i>red</i>\tshoes ", &item, &spec),
        "query: red shoes [SEP] title: Red shoes"
    );
    let spec = Spec {
        max_query_chars: 8,
        ..Spec::default()
    };
    assert_eq!(clean_query("ｒｅｄ running shoes", &spec), "red runn");
    assert_eq!(
        clean_query(
            "नमस्ते दुनिया",
            &Spec {
                max_query_chars: 8,
                ..Spec::default()
            }
        ),
        "नमस्ते"
    );
    let spec = Spec {
        query_label: "Q: ".into(),
        pair_separator: " || ".into(),
        ..Spec::default()
    };
    assert_eq!(assemble_pair("x", &item, &spec), "Q: x || title: Red shoes");
}

// ----------------------------------------------------------------------------------------------
// Spec
// ----------------------------------------------------------------------------------------------

#[test]
fn defaults() {
    let spec = Spec::default();
    assert_eq!(spec.fields, Field::ALL.to_vec());
    assert_eq!(spec.max_chars, 1024);
    assert_eq!(spec.separator, " | ");
    assert_eq!(spec.list_separator, "; ");
    assert_eq!(spec.query_label, "query: ");
    assert_eq!(spec.pair_separator, " [SEP] ");
    assert_eq!(spec.max_query_chars, 256);
    assert!(!spec.include_lang);
    let labels: Vec<&str> = Field::ALL.iter().map(|&f| spec.label(f)).collect();
    assert_eq!(
        labels,
        [
            "title: ",
            "description: ",
            "captions: ",
            "boards: ",
            "queries: ",
            "link title: ",
            "link description: "
        ]
    );
    let caps: Vec<usize> = Field::ALL.iter().map(|&f| spec.field_cap(f)).collect();
    assert_eq!(caps, [200, 600, 300, 200, 200, 150, 300]);
    let names: Vec<&str> = Field::ALL.iter().map(|f| f.name()).collect();
    assert_eq!(
        names,
        [
            "title",
            "description",
            "captions",
            "boards",
            "queries",
            "link_title",
            "link_description"
        ]
    );
    assert_eq!(Field::from_name("link_description"), Some(Field::LinkDescription));
    assert_eq!(Field::from_name("nope"), None);
    assert!(Field::Captions.is_list() && Field::Boards.is_list() && Field::Queries.is_list());
    assert!(!Field::Title.is_list() && !Field::LinkTitle.is_list());
    assert_eq!(spec.validate(), Ok(()));
}

#[test]
fn validation_names_the_attribute() {
    let check = |spec: Spec, arg: &str, msg: &str| {
        let err = spec.validate().expect_err(arg);
        assert_eq!(err, CoreError::invalid(arg, msg));
    };
    check(
        Spec {
            max_chars: 0,
            ..Spec::default()
        },
        "spec.max_chars",
        "must be >= 1, got 0",
    );
    check(
        Spec {
            max_chars: 1_000_001,
            ..Spec::default()
        },
        "spec.max_chars",
        "must be <= 1000000, got 1000001",
    );
    check(
        Spec {
            max_query_chars: 0,
            ..Spec::default()
        },
        "spec.max_query_chars",
        "must be >= 1, got 0",
    );
    check(
        Spec {
            fields: vec![],
            ..Spec::default()
        },
        "spec.fields",
        "must not be empty",
    );
    check(
        Spec {
            fields: vec![Field::Title, Field::Boards, Field::Title],
            ..Spec::default()
        },
        "spec.fields",
        "duplicate field 'title'",
    );
    check(
        Spec {
            field_max_chars: vec![(Field::Boards, 0)],
            ..Spec::default()
        },
        "spec.field_max_chars['boards']",
        "must be >= 1, got 0",
    );
    assert!(Spec {
        max_chars: 1_000_000,
        max_query_chars: 1,
        ..Spec::default()
    }
    .validate()
    .is_ok());
    let msg = Spec {
        max_chars: 0,
        ..Spec::default()
    }
    .validate()
    .unwrap_err()
    .to_string();
    assert_eq!(msg, "spec.max_chars: must be >= 1, got 0");
}

#[test]
fn invalid_specs_still_respect_the_budget() {
    let item = rich_item();
    assert_eq!(
        assemble(
            &item,
            &Spec {
                max_chars: 0,
                ..Spec::default()
            }
        ),
        ""
    );
    assert_eq!(
        assemble(
            &item,
            &Spec {
                fields: vec![],
                ..Spec::default()
            }
        ),
        ""
    );
    let zero_cap = Spec {
        field_max_chars: vec![(Field::Title, 0)],
        ..Spec::default()
    };
    let out = assemble(&item, &zero_cap);
    assert!(out.starts_with("description: "), "{out}");
}

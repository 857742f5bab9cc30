//! Golden feature columns. Trained models store weights by column, so these values must NEVER
//! change: a failure here means the hash, the tokenizer or the gram definition changed and every
//! saved model would silently score garbage. Fix the code, do not update the numbers. (A
//! deliberate break needs a new, versioned hashing scheme alongside this one.)
//!
//! All values: n_features = 2^20, seed = 0, signed, lowercase, word (1, 2), char (3, 5).

use _native::core::hashing::{feature_index, hash_row, words, HasherConfig};

fn cfg() -> HasherConfig {
    HasherConfig {
        n_features: 1 << 20,
        seed: 0,
        ..Default::default()
    }
}

/// (kind, gram, column, sign) straight from the hash definition.
const GRAMS: &[(u8, &str, u32, f32)] = &[
    (b'w', "hello", 64713, 1.0),
    (b'w', "hello world", 823550, -1.0),
    (b'c', "<he", 555705, 1.0),
    (b'c', "llo>", 1015693, 1.0),
    (b'c', "<hello>", 70242, 1.0),
    (b'w', "東", 862094, -1.0),
    (b'c', "<東>", 170936, -1.0),
    (b'w', "🙂", 178211, -1.0),
    (b'c', "<🙂>", 395211, 1.0),
    (b'w', "สว\u{e31}สด\u{e35}คร\u{e31}บ", 991116, 1.0),
    (b'c', "café>", 573365, 1.0),
    (b'w', "", 605737, -1.0),
];

/// (text, tokens, [(column, sign)]) for whole rows with the default grams.
type Row = (&'static str, &'static [&'static str], &'static [(u32, f32)]);

const ROWS: &[Row] = &[
    (
        "hello",
        &["hello"],
        &[
            (41797, 1.0),
            (64713, 1.0),
            (212667, 1.0),
            (247913, 1.0),
            (289442, 1.0),
            (470824, 1.0),
            (479399, 1.0),
            (548311, -1.0),
            (555705, 1.0),
            (590158, 1.0),
            (684733, 1.0),
            (750419, -1.0),
            (1015693, 1.0),
        ],
    ),
    (
        "hello world",
        &["hello", "world"],
        &[
            (41797, 1.0),
            (64713, 1.0),
            (65626, -1.0),
            (89365, -1.0),
            (165232, 1.0),
            (197382, 1.0),
            (212667, 1.0),
            (233261, 1.0),
            (247913, 1.0),
            (250564, 1.0),
            (289442, 1.0),
            (470824, 1.0),
            (479399, 1.0),
            (485125, 1.0),
            (548311, -1.0),
            (554459, -1.0),
            (555705, 1.0),
            (590158, 1.0),
            (684733, 1.0),
            (750419, -1.0),
            (785348, 1.0),
            (820250, 1.0),
            (823550, -1.0),
            (941130, 1.0),
            (986486, -1.0),
            (1014065, 1.0),
            (1015693, 1.0),
        ],
    ),
    (
        "東京タワー",
        &["東", "京", "タワー"],
        &[
            (7558, -1.0),
            (92488, -1.0),
            (170936, -1.0),
            (194118, -1.0),
            (316606, 1.0),
            (323722, 1.0),
            (339387, -1.0),
            (466528, 1.0),
            (646688, -1.0),
            (664838, 1.0),
            (787664, -1.0),
            (862094, -1.0),
            (998550, -1.0),
        ],
    ),
    (
        "สว\u{e31}สด\u{e35}คร\u{e31}บ",
        &["สว\u{e31}สด\u{e35}คร\u{e31}บ"],
        &[
            (52944, -1.0),
            (134925, -1.0),
            (175019, 1.0),
            (241800, 1.0),
            (309159, 1.0),
            (316772, -1.0),
            (430961, -1.0),
            (603131, 1.0),
            (706682, 1.0),
            (731755, 1.0),
            (738990, -1.0),
            (760410, 1.0),
            (792648, 1.0),
            (866050, -1.0),
            (872593, -1.0),
            (897834, -1.0),
            (991116, 1.0),
            (1035340, 1.0),
            (1042985, -1.0),
        ],
    ),
    (
        "Ümlaut café",
        &["ümlaut", "café"],
        &[
            (37421, 1.0),
            (44522, -1.0),
            (87175, 1.0),
            (127967, -1.0),
            (131514, -1.0),
            (153756, 1.0),
            (186202, -1.0),
            (225345, 1.0),
            (289913, 1.0),
            (340675, -1.0),
            (363829, -1.0),
            (376630, 1.0),
            (416939, 1.0),
            (471763, 1.0),
            (502800, 1.0),
            (534789, -1.0),
            (552142, -1.0),
            (573365, 1.0),
            (589954, -1.0),
            (673867, -1.0),
            (701885, -1.0),
            (721255, 1.0),
            (735181, 1.0),
            (827714, -1.0),
            (865919, 1.0),
            (955099, 1.0),
            (973217, -1.0),
        ],
    ),
    ("🙂", &["🙂"], &[(178211, -1.0), (395211, 1.0)]),
];

#[test]
fn gram_columns_and_signs() {
    let cfg = cfg();
    for &(kind, gram, col, sign) in GRAMS {
        assert_eq!(
            feature_index(kind, gram, &cfg),
            (col, sign),
            "{} {gram:?}",
            kind as char
        );
    }
}

#[test]
fn row_tokens_columns_and_signs() {
    let cfg = cfg();
    for &(text, tokens, expected) in ROWS {
        assert_eq!(words(text, true), tokens, "{text:?}");
        let (idx, val) = hash_row(text, &cfg);
        let got: Vec<(u32, f32)> = idx.into_iter().zip(val.iter().map(|v| v.signum())).collect();
        assert_eq!(got, expected, "{text:?}");
    }
}

#[test]
fn row_values() {
    // "hello" has 13 distinct grams, each seen once.
    let (_, val) = hash_row("hello", &cfg());
    let expect = 1.0 / 13f32.sqrt();
    assert!(val.iter().all(|v| (v.abs() - expect).abs() < 1e-7), "{val:?}");
}

#[test]
fn rows_are_built_from_the_grams() {
    let cfg = cfg();
    let (idx, val) = hash_row("hello", &cfg);
    for gram in ["<he", "<hel", "ello>"] {
        let (col, sign) = feature_index(b'c', gram, &cfg);
        let at = idx.binary_search(&col).unwrap_or_else(|_| panic!("{gram:?} missing"));
        assert_eq!(val[at].signum(), sign);
    }
    assert!(idx.binary_search(&feature_index(b'w', "hello", &cfg).0).is_ok());
    assert!(hash_row("hello world", &cfg)
        .0
        .binary_search(&feature_index(b'w', "hello world", &cfg).0)
        .is_ok());
}

#[test]
fn seed_width_and_sign_options() {
    let seeded = HasherConfig {
        n_features: 1000,
        seed: 12345,
        ..Default::default()
    };
    assert_eq!(feature_index(b'w', "hello", &seeded), (675, 1.0));
    let unsigned = HasherConfig {
        signed: false,
        ..seeded
    };
    assert_eq!(feature_index(b'w', "hello world", &unsigned), (989, 1.0));
}

//! Properties of the feature hasher that callers rely on, whatever the input.

use _native::core::hashing::{feature_index, hash_row, transform, words, Csr, HasherConfig, Norm};
use _native::core::CoreError;

const MULTILINGUAL: &[&str] = &[
    "Hello, world! The quick brown fox jumps over the lazy dog.",
    "東京タワーに行きました",
    "北京大学",
    "สวัสดีครับ ยินดีต้อนรับ",
    "مرحبا بالعالم",
    "Привет, мир",
    "नमस्ते दुनिया",
    "안녕하세요 세계",
    "🙂",
    "🍕🍕 👍🏽 🇫🇷",
    "Ümlaut café naïve façade",
    "ΟΔΟΣ Αθηνών",
    "e\u{301}te\u{301}",
    "x",
];

fn corpus() -> Vec<String> {
    let mut texts: Vec<String> = MULTILINGUAL.iter().map(|s| s.to_string()).collect();
    texts.extend(["", "   ", "!!! ... ---", "\n\t"].iter().map(|s| s.to_string()));
    for i in 0..300 {
        let a = MULTILINGUAL[i % MULTILINGUAL.len()];
        let b = MULTILINGUAL[(i * 7 + 3) % MULTILINGUAL.len()];
        texts.push(format!("{a} {i} {b} {}", "lorem ipsum ".repeat(i % 13)));
    }
    texts
}

fn rows(csr: &Csr) -> impl Iterator<Item = (&[i32], &[f32])> {
    csr.indptr.windows(2).map(|w| {
        let (a, b) = (w[0] as usize, w[1] as usize);
        (&csr.indices[a..b], &csr.data[a..b])
    })
}

fn in_pool<T: Send>(threads: usize, f: impl FnOnce() -> T + Send) -> T {
    rayon::ThreadPoolBuilder::new()
        .num_threads(threads)
        .build()
        .unwrap()
        .install(f)
}

#[test]
fn deterministic_and_thread_count_independent() {
    let owned = corpus();
    let texts: Vec<&str> = owned.iter().map(String::as_str).collect();
    let cfg = HasherConfig::default();
    let one = in_pool(1, || transform(&texts, &cfg));
    let four = in_pool(4, || transform(&texts, &cfg));
    let again = in_pool(4, || transform(&texts, &cfg));
    let three = in_pool(3, || transform(&texts, &cfg));
    assert_eq!(one, four);
    assert_eq!(four, again);
    assert_eq!(one, three);
}

#[test]
fn csr_is_well_formed() {
    let owned = corpus();
    let texts: Vec<&str> = owned.iter().map(String::as_str).collect();
    for cfg in [
        HasherConfig::default(),
        HasherConfig {
            n_features: 1000,
            ..Default::default()
        },
        HasherConfig {
            n_features: 7,
            signed: false,
            norm: Norm::L1,
            ..Default::default()
        },
    ] {
        let csr = in_pool(4, || transform(&texts, &cfg));
        assert_eq!(csr.indptr.len(), texts.len() + 1);
        assert_eq!(csr.indptr[0], 0);
        assert_eq!(*csr.indptr.last().unwrap() as usize, csr.indices.len());
        assert_eq!(csr.indices.len(), csr.data.len());
        for (idx, val) in rows(&csr) {
            assert!(idx.windows(2).all(|w| w[0] < w[1]), "indices sorted and unique");
            assert!(idx.iter().all(|&c| c >= 0 && (c as u32) < cfg.n_features));
            assert!(val.iter().all(|v| v.is_finite() && *v != 0.0), "no explicit zeros");
            if !cfg.signed {
                assert!(val.iter().all(|&v| v > 0.0));
            }
        }
    }
}

#[test]
fn norms() {
    let owned = corpus();
    let texts: Vec<&str> = owned.iter().map(String::as_str).collect();
    let l2 = transform(&texts, &HasherConfig::default());
    for (_, val) in rows(&l2).filter(|(i, _)| !i.is_empty()) {
        let norm: f64 = val.iter().map(|&v| f64::from(v) * f64::from(v)).sum::<f64>().sqrt();
        assert!((norm - 1.0).abs() < 1e-5, "L2 norm {norm}");
    }
    let l1 = transform(
        &texts,
        &HasherConfig {
            norm: Norm::L1,
            ..Default::default()
        },
    );
    for (_, val) in rows(&l1).filter(|(i, _)| !i.is_empty()) {
        let norm: f64 = val.iter().map(|&v| f64::from(v).abs()).sum();
        assert!((norm - 1.0).abs() < 1e-5, "L1 norm {norm}");
    }
    let raw = transform(
        &texts,
        &HasherConfig {
            norm: Norm::None,
            ..Default::default()
        },
    );
    assert!(
        raw.data.iter().all(|v| v.fract() == 0.0),
        "unnormalised values are counts"
    );
}

#[test]
fn every_script_gets_features() {
    let cfg = HasherConfig::default();
    for text in MULTILINGUAL {
        let (idx, _) = hash_row(text, &cfg);
        assert!(!idx.is_empty(), "{text:?} produced no features");
        assert!(!words(text, true).is_empty(), "{text:?} produced no words");
    }
    // Char grams alone must still cover single-character CJK and emoji words.
    let chars_only = HasherConfig {
        word_ngrams: None,
        ..Default::default()
    };
    for text in ["東", "🙂", "x"] {
        assert!(!hash_row(text, &chars_only).0.is_empty(), "{text:?}");
    }
}

#[test]
fn empty_and_wordless_text_give_empty_rows() {
    let cfg = HasherConfig::default();
    for text in ["", " ", "\n\t ", "!!! ... ---", "\u{200b}"] {
        assert_eq!(hash_row(text, &cfg), (vec![], vec![]), "{text:?}");
    }
    let csr = transform(&["", "a", ""], &cfg);
    assert_eq!(csr.indptr[0..2], [0, 0]);
    assert_eq!(csr.indptr[2], csr.indptr[3]);
    assert_eq!(
        transform(&[], &cfg),
        Csr {
            indptr: vec![0],
            indices: vec![],
            data: vec![]
        }
    );
}

#[test]
fn lowercase_option() {
    let on = HasherConfig::default();
    let off = HasherConfig {
        lowercase: false,
        ..Default::default()
    };
    assert_eq!(hash_row("Hello WORLD", &on), hash_row("hello world", &on));
    assert_ne!(hash_row("Hello WORLD", &off), hash_row("hello world", &off));
    assert_eq!(hash_row("ÜMLAUT", &on), hash_row("ümlaut", &on));
}

#[test]
fn seed_changes_columns() {
    let a = HasherConfig::default();
    let b = HasherConfig {
        seed: 1,
        ..Default::default()
    };
    assert_ne!(feature_index(b'w', "hello", &a), feature_index(b'w', "hello", &b));
    assert_ne!(hash_row("hello world", &a).0, hash_row("hello world", &b).0);
}

#[test]
fn word_and_char_kinds_do_not_collide_by_construction() {
    // "<ab>" as a char gram and as a (hypothetical) word must hash differently.
    let cfg = HasherConfig::default();
    assert_ne!(feature_index(b'c', "<ab>", &cfg), feature_index(b'w', "<ab>", &cfg));
}

fn invalid_arg(cfg: HasherConfig) -> String {
    match cfg.validate() {
        Err(CoreError::InvalidValue { arg, .. }) => arg,
        Ok(()) => panic!("{cfg:?} should be invalid"),
    }
}

#[test]
fn config_validation() {
    assert!(HasherConfig::default().validate().is_ok());
    assert_eq!(
        invalid_arg(HasherConfig {
            n_features: 0,
            ..Default::default()
        }),
        "n_features"
    );
    assert_eq!(
        invalid_arg(HasherConfig {
            n_features: u32::MAX,
            ..Default::default()
        }),
        "n_features"
    );
    assert_eq!(
        invalid_arg(HasherConfig {
            word_ngrams: Some((0, 1)),
            ..Default::default()
        }),
        "word_ngrams"
    );
    assert_eq!(
        invalid_arg(HasherConfig {
            word_ngrams: Some((2, 1)),
            ..Default::default()
        }),
        "word_ngrams"
    );
    assert_eq!(
        invalid_arg(HasherConfig {
            char_ngrams: Some((3, 17)),
            ..Default::default()
        }),
        "char_ngrams"
    );
    assert!(invalid_arg(HasherConfig {
        word_ngrams: None,
        char_ngrams: None,
        ..Default::default()
    })
    .contains("ngrams"));
    let err = HasherConfig {
        word_ngrams: Some((3, 2)),
        ..Default::default()
    }
    .validate()
    .unwrap_err();
    assert_eq!(
        err.to_string(),
        "word_ngrams: expected 1 <= min <= max <= 16, got (3, 2)"
    );
    assert!(HasherConfig {
        n_features: 1,
        word_ngrams: None,
        ..Default::default()
    }
    .validate()
    .is_ok());
    assert!(HasherConfig {
        n_features: i32::MAX as u32,
        ..Default::default()
    }
    .validate()
    .is_ok());
}

#[test]
fn norm_names() {
    assert_eq!(Norm::from_name("l2"), Some(Norm::L2));
    assert_eq!(Norm::from_name("l1"), Some(Norm::L1));
    assert_eq!(Norm::from_name("none"), Some(Norm::None));
    assert_eq!(Norm::from_name("max"), None);
    assert_eq!(Norm::L2.name(), "l2");
}

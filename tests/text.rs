//! Tokenizers, the docs corpus and token windows, against independent references: token ids
//! from `scripts/tokenizer_reference.py` (a pure-Python GPT-2 BPE and transformers' pure-Python
//! `BertTokenizer`, neither of which is the Rust `tokenizers` crate quantlens runs), and the
//! lossless round trip of byte-level BPE on the whole corpus.

mod common;

use candle_core::Device;
use quantlens::text::{Document, TextCorpus, TokenWindows, Tokenizer, TokenizerKind, token_stream};

#[derive(serde::Deserialize)]
struct Reference {
    cases: Vec<Case>,
}

#[derive(serde::Deserialize)]
struct Case {
    text: String,
    smollm2: Vec<u32>,
    minilm: Vec<u32>,
}

fn reference() -> Reference {
    let raw = include_str!("data/tokenizer_reference.json");
    serde_json::from_str(raw).expect("tests/data/tokenizer_reference.json parses")
}

#[test]
fn smollm2_bpe_matches_the_python_reference_and_round_trips() {
    common::ensure_fixtures();
    let tok = Tokenizer::smollm2().unwrap();
    assert_eq!(tok.kind(), TokenizerKind::ByteLevelBpe);
    assert_eq!(tok.vocab_size(), 49152);
    assert_eq!(tok.bos_id(), Some(1));
    assert_eq!(tok.eos_id(), Some(2));
    assert_eq!(tok.token_to_id("<|im_start|>"), Some(1));
    for case in reference().cases {
        let ids = tok.encode(&case.text).unwrap();
        assert_eq!(
            ids,
            case.smollm2,
            "text {:?}",
            &case.text[..case.text.len().min(60)]
        );
        assert_eq!(tok.decode(&ids).unwrap(), case.text);
    }
}

#[test]
fn minilm_wordpiece_matches_the_python_reference() {
    common::ensure_fixtures();
    let tok = Tokenizer::minilm().unwrap();
    assert_eq!(tok.kind(), TokenizerKind::WordPiece);
    assert_eq!(tok.vocab_size(), 30522);
    assert_eq!(
        (tok.bos_id(), tok.eos_id(), tok.pad_id()),
        (Some(101), Some(102), Some(0))
    );
    for case in reference().cases {
        let ids = tok.encode_with_special(&case.text).unwrap();
        assert_eq!(
            ids,
            case.minilm,
            "text {:?}",
            &case.text[..case.text.len().min(60)]
        );
    }
}

#[test]
fn decode_refuses_ids_outside_the_vocabulary() {
    common::ensure_fixtures();
    let tok = Tokenizer::smollm2().unwrap();
    let err = tok.decode(&[5, 49152]).unwrap_err();
    assert!(err.to_string().contains("49152"), "{err}");
}

#[test]
fn python_docs_round_trip_through_the_bpe_and_split_by_file() {
    common::ensure_fixtures();
    let corpus = TextCorpus::python_docs().unwrap();
    assert_eq!(corpus.len(), 497);
    let names: Vec<&str> = corpus.documents().iter().map(|d| d.name.as_str()).collect();
    assert!(names.windows(2).all(|w| w[0] < w[1]), "sorted by name");
    assert!(names.contains(&"library/functions.rst.txt"));

    // Lossless on every document: the byte-level BPE must reproduce the text exactly.
    let tok = Tokenizer::smollm2().unwrap();
    for d in corpus.documents() {
        let ids = tok.encode(&d.text).unwrap();
        assert_eq!(tok.decode(&ids).unwrap(), d.text, "{}", d.name);
    }

    let (members, held_out) = corpus.split_by_document(0.5, 11).unwrap();
    assert_eq!(members.len() + held_out.len(), 497);
    assert!(members.len().abs_diff(held_out.len()) <= 1);
    for d in held_out.documents() {
        assert!(!members.documents().iter().any(|m| m.name == d.name));
    }
    assert_eq!(corpus.split_by_document(0.5, 11).unwrap().0, members);
    assert_ne!(corpus.split_by_document(0.5, 12).unwrap().0, members);

    // The stream is the concatenation of the documents' ids with the separator between them.
    let small = corpus.subset(&[3, 1]).unwrap();
    let stream = token_stream(&small, &tok, Some(0)).unwrap();
    let mut expected = tok.encode(&corpus.documents()[3].text).unwrap();
    expected.push(0);
    expected.extend(tok.encode(&corpus.documents()[1].text).unwrap());
    assert_eq!(stream, expected);
}

#[test]
fn windows_follow_length_and_stride() {
    let stream: Vec<u32> = (0..100).collect();
    let w = TokenWindows::new(10, 7).unwrap();
    let all: Vec<Vec<u32>> = w.windows(&stream).collect();
    // Naive count: starts 0, 7, …, while start + 10 ≤ 100.
    let starts: Vec<usize> = (0..100).step_by(7).filter(|s| s + 10 <= 100).collect();
    assert_eq!(all.len(), starts.len());
    for (win, s) in all.iter().zip(&starts) {
        assert_eq!(win, &((*s as u32)..(*s as u32 + 10)).collect::<Vec<_>>());
    }
    let framed = TokenWindows::non_overlapping(10)
        .unwrap()
        .framed(Some(101), Some(102))
        .unwrap();
    let f: Vec<Vec<u32>> = framed.windows(&stream).collect();
    assert_eq!(f.len(), 100 / 8);
    assert_eq!(f[1], [101, 8, 9, 10, 11, 12, 13, 14, 15, 102]);
    let t = framed.to_tensor(&stream, Some(3), &Device::Cpu).unwrap();
    assert_eq!(t.dims(), [3, 10]);
    assert_eq!(t.to_vec2::<u32>().unwrap()[2][1], 16);

    // A seeded sample: distinct whole windows, in stream order, reproducible.
    let sampled = w
        .sample_tensor(&stream, 5, 3, &Device::Cpu)
        .unwrap()
        .to_vec2::<u32>()
        .unwrap();
    assert_eq!(sampled.len(), 5);
    for win in &sampled {
        assert!(all.contains(win));
    }
    assert!(sampled.windows(2).all(|p| p[0][0] < p[1][0]));
    assert_ne!(
        sampled,
        w.sample_tensor(&stream, 5, 4, &Device::Cpu)
            .unwrap()
            .to_vec2::<u32>()
            .unwrap()
    );
    assert!(w.sample_tensor(&stream, 0, 3, &Device::Cpu).is_err());
    assert!(
        w.sample_tensor(&stream, all.len() + 1, 3, &Device::Cpu)
            .is_err()
    );

    assert!(TokenWindows::new(0, 1).is_err());
    assert!(TokenWindows::new(4, 0).is_err());
    assert!(
        TokenWindows::new(2, 2)
            .unwrap()
            .framed(Some(1), Some(2))
            .is_err()
    );
    assert!(w.to_tensor(&stream[..9], None, &Device::Cpu).is_err());
}

#[test]
fn corpus_refuses_bad_input() {
    assert!(TextCorpus::new(vec![]).is_err());
    let doc = |n: &str| Document {
        name: n.into(),
        text: "x".into(),
    };
    assert!(TextCorpus::new(vec![doc("a"), doc("a")]).is_err());
    let c = TextCorpus::new(vec![doc("a"), doc("b"), doc("c")]).unwrap();
    assert!(c.split_by_document(0.0, 1).is_err());
    assert!(c.split_by_document(1.0, 1).is_err());
    assert!(c.split_by_document(f64::NAN, 1).is_err());
    assert!(c.subset(&[5]).is_err());
    let shuffled = c.shuffled(3);
    assert_eq!(shuffled, c.shuffled(3));
    let mut names: Vec<String> = shuffled
        .documents()
        .iter()
        .map(|d| d.name.clone())
        .collect();
    names.sort();
    assert_eq!(names, ["a", "b", "c"]);
    assert!(
        TextCorpus::new(vec![doc("a")])
            .unwrap()
            .split_by_document(0.5, 1)
            .is_err()
    );
    assert!(TextCorpus::from_dir("/nonexistent/quantlens", ".txt").is_err());
}

#[test]
fn compact_vocabulary_keeps_the_most_frequent_ids() {
    use proptest::prelude::*;
    use quantlens::text::CompactVocabulary;
    proptest!(ProptestConfig::with_cases(64), |(stream in proptest::collection::vec(0u32..40, 1..300), size in 2usize..20)| {
        let vocab = CompactVocabulary::most_frequent(&stream, size).unwrap();
        // Naive reference: count, order by (count desc, id asc), keep size − 1.
        let mut counts = std::collections::BTreeMap::new();
        for &id in &stream {
            *counts.entry(id).or_insert(0usize) += 1;
        }
        let mut order: Vec<(u32, usize)> = counts.into_iter().collect();
        order.sort_by(|a, b| b.1.cmp(&a.1).then(a.0.cmp(&b.0)));
        let kept: Vec<u32> = order.iter().take(size - 1).map(|p| p.0).collect();
        let encoded = vocab.encode(&stream);
        for (&id, &c) in stream.iter().zip(&encoded) {
            match kept.iter().position(|&k| k == id) {
                Some(i) => prop_assert_eq!(c as usize, i),
                None => prop_assert_eq!(c, (size - 1) as u32),
            }
        }
        prop_assert!(encoded.iter().all(|&c| (c as usize) < size));
        prop_assert_eq!(vocab.size(), size);
        for (i, &k) in kept.iter().enumerate() {
            prop_assert_eq!(vocab.original(i as u32), Some(k));
        }
        prop_assert_eq!(vocab.original((size - 1) as u32), None);
        let covered = stream.iter().filter(|id| kept.contains(id)).count() as f64 / stream.len() as f64;
        prop_assert!((vocab.coverage(&stream) - covered).abs() < 1e-12);
    });
    assert!(CompactVocabulary::most_frequent(&[1, 2], 1).is_err());
    assert!(CompactVocabulary::most_frequent(&[], 8).is_err());
}

//! Fuzzing the file readers of ood-core (issue 12): the safetensors reader (through the feature
//! file and the head reader), and the `.npy` and text score readers, get random bytes and
//! mutated valid files. Whatever they are given, they return `Ok` or an `Err` naming the file;
//! they never panic, hang or allocate absurd amounts. A bounded run (proptest's case counts
//! below, `PROPTEST_CASES` to raise them) is part of every `cargo test`; failures found are kept
//! as the named regression tests at the end of this file.

use ood_core::safetensors::{SafeTensorsFile, TensorToWrite, write};
use ood_core::scores::{npy_bytes, parse_npy, parse_text, read_scores};
use ood_core::{FeatureFile, Features, Head};
use proptest::prelude::*;
use std::path::Path;

/// A valid feature file's bytes (3 rows, d = 2, c = 2, labels) to mutate.
fn valid_features() -> Vec<u8> {
    let dir = tempfile::tempdir().unwrap();
    let p = dir.path().join("f.safetensors");
    write(
        &p,
        &[
            TensorToWrite::f32("features", vec![3, 2], &[1.0, 2.0, 3.0, 4.0, 5.0, 6.0]),
            TensorToWrite::f32("logits", vec![3, 2], &[0.5, -0.5, 1.5, 0.0, 2.0, 1.0]),
            TensorToWrite::i64("labels", vec![3], &[0, 1, 1]),
            TensorToWrite::f32("weight", vec![2, 2], &[1.0, 0.0, 0.0, 1.0]),
            TensorToWrite::f32("bias", vec![2], &[0.0, 0.0]),
        ],
        &[("model".to_string(), "x".to_string())]
            .into_iter()
            .collect(),
    )
    .unwrap();
    std::fs::read(p).unwrap()
}

/// Reads `bytes` as a feature file, a head and raw tensors; every error must name the file.
fn read_all(bytes: &[u8]) {
    let dir = tempfile::tempdir().unwrap();
    let p = dir.path().join("fuzz.safetensors");
    std::fs::write(&p, bytes).unwrap();
    let named = |e: ood_core::Error| {
        let m = e.to_string();
        assert!(m.contains("fuzz.safetensors") || !m.contains('/'), "{m}");
    };
    match FeatureFile::open(&p) {
        Ok(f) => {
            if let Err(e) = f.read_rows(0, f.len()) {
                named(e);
            }
            if f.len() > 1 {
                let _ = f.read_rows(1, f.len() - 1);
            }
        }
        Err(e) => named(e),
    }
    if let Err(e) = Features::load(&p) {
        named(e);
    }
    if let Err(e) = Head::load(&p) {
        named(e);
    }
    if let Ok(f) = SafeTensorsFile::open(&p) {
        for name in f.tensors.keys() {
            let _ = f.read_f32(name);
            let _ = f.read_i64(name);
        }
    }
}

/// A mutation: overwrite, insert, delete or truncate.
#[derive(Debug, Clone)]
enum Mutation {
    Set(usize, u8),
    Insert(usize, u8),
    Remove(usize),
    Truncate(usize),
}

fn mutation() -> impl Strategy<Value = Mutation> {
    prop_oneof![
        (any::<usize>(), any::<u8>()).prop_map(|(i, b)| Mutation::Set(i, b)),
        (any::<usize>(), any::<u8>()).prop_map(|(i, b)| Mutation::Insert(i, b)),
        any::<usize>().prop_map(Mutation::Remove),
        any::<usize>().prop_map(Mutation::Truncate),
    ]
}

fn mutate(mut bytes: Vec<u8>, ms: &[Mutation]) -> Vec<u8> {
    for m in ms {
        if bytes.is_empty() {
            break;
        }
        let n = bytes.len();
        match *m {
            Mutation::Set(i, b) => bytes[i % n] = b,
            Mutation::Insert(i, b) => bytes.insert(i % (n + 1), b),
            Mutation::Remove(i) => {
                bytes.remove(i % n);
            }
            Mutation::Truncate(i) => bytes.truncate(i % n),
        }
    }
    bytes
}

/// Mutations aimed at the JSON header: digits of shapes and offsets swapped for large numbers.
fn header_edit() -> impl Strategy<Value = (usize, String)> {
    (
        any::<usize>(),
        prop_oneof![
            Just("18446744073709551615".to_string()),
            Just("4611686018427387904".to_string()),
            Just("-1".to_string()),
            Just("1e300".to_string()),
            Just("\"F64\"".to_string()),
            Just("\"I32\"".to_string()),
            Just("[]".to_string()),
            Just("0".to_string()),
            (0u64..1_000_000).prop_map(|v| v.to_string()),
        ],
    )
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 400, ..ProptestConfig::default() })]

    #[test]
    fn safetensors_random_bytes(bytes in proptest::collection::vec(any::<u8>(), 0..200)) {
        read_all(&bytes);
    }

    #[test]
    fn safetensors_mutated(ms in proptest::collection::vec(mutation(), 1..6)) {
        read_all(&mutate(valid_features(), &ms));
    }

    #[test]
    fn safetensors_header_numbers_replaced(edits in proptest::collection::vec(header_edit(), 1..4)) {
        let bytes = valid_features();
        let hlen = u64::from_le_bytes(bytes[..8].try_into().unwrap()) as usize;
        let mut header = String::from_utf8(bytes[8..8 + hlen].to_vec()).unwrap();
        for (at, text) in edits {
            // Replace the number (or quoted word) starting at a random digit or quote.
            let starts: Vec<usize> = header
                .char_indices()
                .filter(|(_, c)| c.is_ascii_digit() || *c == '"')
                .map(|(i, _)| i)
                .collect();
            let s = starts[at % starts.len()];
            let rest = &header[s..];
            let len = match rest.strip_prefix('"') {
                Some(quoted) => quoted.find('"').map_or(1, |e| e + 2),
                None => rest.find(|c: char| !c.is_ascii_digit()).unwrap_or(rest.len()),
            };
            header.replace_range(s..s + len, &text);
        }
        let mut out = (header.len() as u64).to_le_bytes().to_vec();
        out.extend_from_slice(header.as_bytes());
        out.extend_from_slice(&bytes[8 + hlen..]);
        read_all(&out);
    }

    #[test]
    fn npy_random_and_mutated(
        bytes in proptest::collection::vec(any::<u8>(), 0..120),
        ms in proptest::collection::vec(mutation(), 1..5),
        scores in proptest::collection::vec(-1e6f32..1e6, 0..20),
    ) {
        let p = Path::new("fuzz.npy");
        let _ = parse_npy(&bytes, p);
        let mut magic = b"\x93NUMPY".to_vec();
        magic.extend_from_slice(&bytes);
        let _ = parse_npy(&magic, p);
        let valid = npy_bytes(&scores);
        prop_assert_eq!(parse_npy(&valid, p).unwrap(), scores);
        if let Err(e) = parse_npy(&mutate(valid, &ms), p) {
            prop_assert!(e.to_string().contains("fuzz.npy"), "{}", e);
        }
    }

    #[test]
    fn text_scores_random(text in "\\PC{0,80}", bytes in proptest::collection::vec(any::<u8>(), 0..80)) {
        let _ = parse_text(&text, Path::new("fuzz.txt"));
        let dir = tempfile::tempdir().unwrap();
        let p = dir.path().join("fuzz.txt");
        std::fs::write(&p, &bytes).unwrap();
        if let Err(e) = read_scores(&p) {
            prop_assert!(e.to_string().contains("fuzz.txt"), "{}", e);
        }
    }
}

/// Regression (issue 12, before fuzzing existed): `[2^62, 4]` overflowed the size arithmetic.
#[test]
fn regression_overflowing_shape() {
    let header =
        r#"{"features":{"dtype":"F32","shape":[4611686018427387904,4],"data_offsets":[0,16]}}"#;
    let mut bytes = (header.len() as u64).to_le_bytes().to_vec();
    bytes.extend_from_slice(header.as_bytes());
    bytes.extend_from_slice(&[0u8; 16]);
    read_all(&bytes);
}

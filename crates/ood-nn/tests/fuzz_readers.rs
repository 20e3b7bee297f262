//! Fuzzing the data readers of ood-nn (issue 12): the JPEG decoder, the idx reader and the tar
//! walker get mutated valid inputs (bytes overwritten, inserted, removed, truncated) and random
//! bytes. They must return images or errors, never panic or hang. A bounded run is part of every
//! `cargo test` (`PROPTEST_CASES` raises it); failures found are kept as regression tests below.

use ood_nn::data::jpeg;
use ood_nn::data::{DataSpec, Pixels};
use proptest::prelude::*;
use std::io::Write;

fn jpeg_bytes(w: u32, h: u32) -> Vec<u8> {
    let img = image::RgbImage::from_fn(w, h, |x, y| {
        image::Rgb([(x * 13) as u8, (y * 7) as u8, ((x ^ y) * 5) as u8])
    });
    let mut out = Vec::new();
    image::codecs::jpeg::JpegEncoder::new_with_quality(&mut out, 75)
        .encode_image(&img)
        .unwrap();
    out
}

fn idx_bytes(n: u32) -> Vec<u8> {
    let mut b = vec![0, 0, 8, 3];
    for d in [n, 4, 4] {
        b.extend_from_slice(&d.to_be_bytes());
    }
    b.extend((0..n * 16).map(|i| i as u8));
    b
}

fn tar_bytes() -> Vec<u8> {
    let mut b = tar::Builder::new(Vec::new());
    for (name, data) in [("a/x.jpg", jpeg_bytes(8, 8)), ("b/y.jpg", jpeg_bytes(8, 8))] {
        let mut h = tar::Header::new_gnu();
        h.set_size(data.len() as u64);
        h.set_mode(0o644);
        h.set_cksum();
        b.append_data(&mut h, name, data.as_slice()).unwrap();
    }
    b.into_inner().unwrap()
}

#[derive(Debug, Clone)]
enum Mutation {
    Set(usize, u8),
    Insert(usize, u8),
    Remove(usize),
    Truncate(usize),
}

fn mutation() -> impl Strategy<Value = Mutation> {
    prop_oneof![
        4 => (any::<usize>(), any::<u8>()).prop_map(|(i, b)| Mutation::Set(i, b)),
        1 => (any::<usize>(), any::<u8>()).prop_map(|(i, b)| Mutation::Insert(i, b)),
        1 => any::<usize>().prop_map(Mutation::Remove),
        1 => any::<usize>().prop_map(Mutation::Truncate),
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

/// Every sample of a source, decoded; errors are fine, panics are not.
fn drain(spec: &DataSpec) {
    let _ = spec.classes();
    let _ = spec.fingerprint();
    if let Ok(samples) = spec.samples() {
        for s in samples.take(100).flatten() {
            if let Pixels::Encoded(_) = s.pixels {
                let _ = s.decode();
            }
        }
    }
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 300, ..ProptestConfig::default() })]

    #[test]
    fn jpeg_decoder_mutated(ms in proptest::collection::vec(mutation(), 1..8), big in any::<bool>()) {
        let valid = if big { jpeg_bytes(40, 24) } else { jpeg_bytes(9, 7) };
        let ok = jpeg::decode(&valid).unwrap();
        prop_assert_eq!((ok.width, ok.height), if big { (40, 24) } else { (9, 7) });
        if let Ok(img) = jpeg::decode(&mutate(valid, &ms)) {
            prop_assert_eq!(img.data.len(), (img.width * img.height * 3) as usize);
        }
    }

    #[test]
    fn jpeg_decoder_random(tail in proptest::collection::vec(any::<u8>(), 0..300)) {
        let mut b = vec![0xFF, 0xD8];
        b.extend_from_slice(&tail);
        let _ = jpeg::decode(&b);
    }

    #[test]
    fn idx_reader_mutated(ms in proptest::collection::vec(mutation(), 1..4), n in 1u32..5) {
        let dir = tempfile::tempdir().unwrap();
        let p = dir.path().join("fuzz-idx3-ubyte");
        std::fs::write(&p, mutate(idx_bytes(n), &ms)).unwrap();
        drain(&DataSpec::Idx { images: p, labels: None });
    }

    #[test]
    fn tar_walker_mutated(ms in proptest::collection::vec(mutation(), 1..6), gz in any::<bool>()) {
        let dir = tempfile::tempdir().unwrap();
        let p = dir.path().join(if gz { "f.tar.gz" } else { "f.tar" });
        let mut bytes = tar_bytes();
        if gz {
            let mut e = flate2::write::GzEncoder::new(Vec::new(), flate2::Compression::fast());
            e.write_all(&bytes).unwrap();
            bytes = e.finish().unwrap();
        }
        std::fs::write(&p, mutate(bytes, &ms)).unwrap();
        drain(&DataSpec::Tar(p.clone()));
        drain(&DataSpec::TinVal(p));
    }
}

/// Found by the fuzzer: a DHT segment with one byte removed gave a length with more codes than
/// it has room for, and the decoder indexed past its fast lookup table (panic).
#[test]
fn regression_huffman_code_space_overflow() {
    let valid = jpeg_bytes(9, 7);
    let dht = valid
        .windows(2)
        .position(|w| w == [0xFF, 0xC4])
        .expect("a DHT marker");
    // Counts of the first table: move 3 codes to length 1, where only 2 fit (the total, and so
    // the segment length, stays the same).
    let mut bad = valid.clone();
    let counts = dht + 5..dht + 21;
    let j = counts.clone().max_by_key(|&i| valid[i]).expect("16 counts");
    assert!(valid[j] >= 3);
    bad[j] -= 3;
    bad[counts.start] += 3;
    let e = jpeg::decode(&bad).unwrap_err().to_string();
    assert!(e.contains("Huffman"), "{e}");
    for i in 0..valid.len() {
        let mut b = valid.clone();
        b.remove(i);
        let _ = jpeg::decode(&b);
    }
}

/// Found by the fuzzer: an inserted byte made idx dimensions whose product overflowed (panic).
#[test]
fn regression_idx_dimensions_overflow() {
    let dir = tempfile::tempdir().unwrap();
    let p = dir.path().join("x-idx3-ubyte");
    let mut b = vec![0, 0, 8, 3];
    for d in [u32::MAX, u32::MAX, u32::MAX] {
        b.extend_from_slice(&d.to_be_bytes());
    }
    b.extend_from_slice(&[1, 2, 3]);
    std::fs::write(&p, b).unwrap();
    let e = DataSpec::Idx {
        images: p,
        labels: None,
    }
    .samples()
    .err()
    .unwrap()
    .to_string();
    assert!(e.contains("more than fit in memory"), "{e}");
    for i in 0..40 {
        let mut b = idx_bytes(2);
        b.insert(i, 1);
        std::fs::write(dir.path().join("y"), b).unwrap();
        drain(&DataSpec::Idx {
            images: dir.path().join("y"),
            labels: None,
        });
    }
}

//! The own JPEG decoder (`ood_nn::data::jpeg`) against libjpeg-turbo as Pillow uses it:
//! byte-exact equality with `Image.open(f).convert("RGB")` on the 1,000 golden CIFAR-10 JPEGs
//! (the golden decoded array), and on a sample of Tiny-ImageNet and all 300 DTD-subset files
//! (Pillow's output computed at test time with the project's `.venv/bin/python` and
//! `scripts/pillow_decode_tar.py`). Corrupt data must be an `Error::Data` naming the file.
//!
//! Tests needing `/work/shared` (or `$OOD_DATA_ROOT`) or the `.venv` skip with a message.

mod common;

use ood_nn::Error;
use ood_nn::data::npy::{NpyData, read_npy};
use ood_nn::data::{DataSpec, Pixels, RawSample, jpeg};
use std::io::Read;
use std::path::{Path, PathBuf};

/// (mismatching bytes, max abs difference) between two equally long buffers.
fn compare(a: &[u8], b: &[u8]) -> (usize, u8) {
    assert_eq!(a.len(), b.len());
    a.iter().zip(b).fold((0, 0), |(n, m), (x, y)| {
        (n + usize::from(x != y), m.max(x.abs_diff(*y)))
    })
}

#[test]
fn golden_cifar10_first1000_byte_exact() {
    let Some(root) = common::shared_root("golden_cifar10_first1000_byte_exact") else {
        return;
    };
    let dir = root.join("data/cifar10-jpeg");
    let a = read_npy(dir.join("golden_decoded_first1000_uint8_NHWC.npy")).unwrap();
    let NpyData::U8(golden) = a.data else {
        panic!("golden images must be uint8")
    };
    let spec = DataSpec::Tar(dir.join("cifar10_test_jpeg.tar.gz"));
    let mut bad_images = Vec::new();
    let (mut mismatches, mut max_diff) = (0usize, 0u8);
    for (i, s) in spec.samples().unwrap().take(1000).enumerate() {
        let s = s.unwrap();
        let Pixels::Encoded(bytes) = &s.pixels else {
            panic!("{}: expected encoded bytes", s.name)
        };
        let own = jpeg::decode(bytes).unwrap_or_else(|e| panic!("{}: {e}", s.name));
        assert_eq!((own.width, own.height), (32, 32), "{}", s.name);
        let (n, m) = compare(&own.data, &golden[i * 3072..(i + 1) * 3072]);
        if n > 0 {
            bad_images.push(s.name.clone());
        }
        mismatches += n;
        max_diff = max_diff.max(m);
        // RawSample::decode uses the own decoder by default (unless OOD_JPEG_DECODER=image).
        if i < 10 && !ood_nn::data::image_crate_for_jpeg() {
            assert_eq!(s.clone().decode().unwrap().as_raw(), &own.data);
        }
    }
    assert!(
        bad_images.is_empty(),
        "{} of 1000 images differ from libjpeg-turbo ({mismatches} bytes, max pixel difference \
         {max_diff}), first: {:?}",
        bad_images.len(),
        &bad_images[..bad_images.len().min(5)]
    );
}

fn venv_python() -> Option<PathBuf> {
    let p = PathBuf::from(concat!(
        env!("CARGO_MANIFEST_DIR"),
        "/../../.venv/bin/python"
    ));
    p.is_file().then_some(p)
}

/// Pillow's decoding of every `stride`-th JPEG member of `archive`: (name, width, height, rgb).
fn pillow_decode(
    py: &Path,
    archive: &Path,
    stride: usize,
    tmp: &Path,
) -> Vec<(String, u32, u32, Vec<u8>)> {
    let script = concat!(
        env!("CARGO_MANIFEST_DIR"),
        "/../../scripts/pillow_decode_tar.py"
    );
    let out = tmp.join("pillow.bin");
    let st = std::process::Command::new(py)
        .arg(script)
        .arg(archive)
        .arg(stride.to_string())
        .arg(&out)
        .status()
        .unwrap();
    assert!(st.success(), "pillow_decode_tar.py failed");
    let b = std::fs::read(&out).unwrap();
    let u32_at = |p: usize| u32::from_le_bytes(b[p..p + 4].try_into().unwrap());
    let mut v = Vec::new();
    let mut p = 0;
    while p < b.len() {
        let n = u32_at(p) as usize;
        let name = String::from_utf8(b[p + 4..p + 4 + n].to_vec()).unwrap();
        p += 4 + n;
        let (w, h) = (u32_at(p), u32_at(p + 4));
        p += 8;
        let len = (w * h * 3) as usize;
        v.push((name, w, h, b[p..p + len].to_vec()));
        p += len;
    }
    v
}

/// Every `stride`-th JPEG member (same rule as the script) of a tar or tar.gz.
fn jpeg_members(archive: &Path, stride: usize) -> Vec<(String, Vec<u8>)> {
    let f = std::fs::File::open(archive).unwrap();
    let r: Box<dyn Read> = if archive.extension().is_some_and(|e| e == "gz") {
        Box::new(flate2::read::GzDecoder::new(f))
    } else {
        Box::new(f)
    };
    let mut tar = tar::Archive::new(r);
    let mut v = Vec::new();
    let mut k = 0;
    for e in tar.entries().unwrap() {
        let mut e = e.unwrap();
        let name = e.path().unwrap().to_string_lossy().into_owned();
        let lower = name.to_lowercase();
        if !e.header().entry_type().is_file()
            || !(lower.ends_with(".jpg") || lower.ends_with(".jpeg"))
        {
            continue;
        }
        let take = k % stride == 0;
        k += 1;
        if take {
            let mut b = Vec::new();
            e.read_to_end(&mut b).unwrap();
            v.push((name, b));
        }
    }
    v
}

fn exact_vs_pillow(test: &str, rel: &str, stride: usize, expect_at_least: usize) {
    let Some(root) = common::shared_root(test) else {
        return;
    };
    let Some(py) = venv_python() else {
        common::skip(&format!(
            "SKIPPED {test}: the project's .venv/bin/python (with Pillow) is missing"
        ));
        return;
    };
    let archive = root.join(rel);
    let tmp = tempfile::tempdir().unwrap();
    let want = pillow_decode(&py, &archive, stride, tmp.path());
    let ours = jpeg_members(&archive, stride);
    assert_eq!(want.len(), ours.len());
    assert!(ours.len() >= expect_at_least, "only {} images", ours.len());
    let mut bad = Vec::new();
    let (mut mismatches, mut max_diff, mut pixels) = (0usize, 0u8, 0usize);
    let mut sizes = std::collections::BTreeSet::new();
    for ((name, w, h, rgb), (oname, bytes)) in want.iter().zip(&ours) {
        assert_eq!(name, oname);
        let own = jpeg::decode(bytes).unwrap_or_else(|e| panic!("{name}: {e}"));
        assert_eq!((own.width, own.height), (*w, *h), "{name}");
        sizes.insert((w, h));
        let (n, m) = compare(&own.data, rgb);
        pixels += rgb.len();
        if n > 0 {
            bad.push(format!("{name} ({n} bytes, max {m})"));
        }
        mismatches += n;
        max_diff = max_diff.max(m);
    }
    eprintln!(
        "{test}: {} images, {} sizes, {pixels} bytes compared, {mismatches} differ",
        ours.len(),
        sizes.len()
    );
    assert!(
        bad.is_empty(),
        "{} of {} images differ from Pillow: {mismatches} bytes, max pixel difference {max_diff}; \
         first: {:?}",
        bad.len(),
        ours.len(),
        &bad[..bad.len().min(5)]
    );
}

#[test]
fn tiny_imagenet_sample_byte_exact_with_pillow() {
    // Every 40th of the 20,000 JPEGs: 500 images, 4:2:0 and grayscale.
    exact_vs_pillow(
        "tiny_imagenet_sample_byte_exact_with_pillow",
        "data/tiny-imagenet-200/tin200_val_test_jpeg.tar.gz",
        40,
        500,
    );
}

#[test]
fn dtd_subset_byte_exact_with_pillow() {
    // All 300: sizes 300-640 px, 4:2:0, 4:2:2, 4:4:0, 4:4:4 and grayscale.
    exact_vs_pillow(
        "dtd_subset_byte_exact_with_pillow",
        "data/dtd-subset10/dtd10_30perclass_jpeg.tar",
        1,
        300,
    );
}

/// A real JPEG made here (the `image` crate's encoder, 4:2:0), so that this test needs no data.
fn small_jpeg() -> Vec<u8> {
    let img = image::RgbImage::from_fn(37, 21, |x, y| {
        image::Rgb([(x * 7) as u8, (y * 11) as u8, ((x + y) * 5) as u8])
    });
    let mut buf = Vec::new();
    image::codecs::jpeg::JpegEncoder::new_with_quality(&mut buf, 80)
        .encode_image(&img)
        .unwrap();
    buf
}

#[test]
fn corrupt_jpegs_are_data_errors_naming_the_file() {
    let good = small_jpeg();
    let own = jpeg::decode(&good).unwrap();
    assert_eq!((own.width, own.height), (37, 21));
    // Close to the image crate's decoding of the same file (not bit-exact: other IDCT/upsampling).
    let other = image::load_from_memory(&good).unwrap().to_rgb8();
    let (_, max) = compare(&own.data, other.as_raw());
    assert!(max <= 8, "max difference to the image crate {max}");

    let mut garbage = good[..good.len() / 2].to_vec();
    garbage.extend((0..200u32).map(|i| (i.wrapping_mul(2654435761) >> 13) as u8));
    let cases: Vec<(&str, Vec<u8>)> = vec![
        ("trunc_half.jpg", good[..good.len() / 2].to_vec()),
        ("trunc_header.jpg", good[..40].to_vec()),
        ("soi_only.jpg", vec![0xFF, 0xD8]),
        ("garbage.jpg", {
            let mut v = vec![0xFF, 0xD8];
            v.extend((0..500u32).map(|i| (i.wrapping_mul(2654435761) >> 7) as u8));
            v
        }),
    ];
    for (name, bytes) in cases {
        let s = RawSample {
            name: format!("some/dir/{name}"),
            label: 0,
            pixels: Pixels::Encoded(bytes),
        };
        match s.decode() {
            Err(Error::Data { path, reason }) => {
                assert_eq!(path, PathBuf::from(format!("some/dir/{name}")));
                assert!(reason.contains("decode"), "{reason}");
            }
            other => panic!("{name}: expected Error::Data, got {other:?}"),
        }
    }
    // Garbage after valid headers: an error or (as libjpeg-turbo, which zero-fills after a
    // marker) an image of the right size, but never a panic.
    let s = RawSample {
        name: "g.jpg".into(),
        label: 0,
        pixels: Pixels::Encoded(garbage),
    };
    if let Ok(img) = s.decode() {
        assert_eq!(img.dimensions(), (37, 21));
    }
}

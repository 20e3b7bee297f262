//! Data sources on small synthetic fixtures written on the fly: folder trees, tar and tar.gz
//! archives, idx (raw and gz), CIFAR binary batches, Tiny-ImageNet layout, image lists; and the
//! `on_error` policy of `extract`.

use flate2::Compression;
use flate2::write::GzEncoder;
use ood_nn::data::{DataSpec, OnError, Pixels, Preprocess};
use ood_nn::network::{ExtractOptions, extract, extract_cached};
use std::io::Write;
use std::path::Path;

fn png(w: u32, h: u32, v: u8) -> Vec<u8> {
    let img = image::RgbImage::from_fn(w, h, |x, y| image::Rgb([v, x as u8, y as u8]));
    let mut out = std::io::Cursor::new(Vec::new());
    img.write_to(&mut out, image::ImageFormat::Png).unwrap();
    out.into_inner()
}

fn write_tar(path: &Path, members: &[(&str, Vec<u8>)], gz: bool) {
    let f = std::fs::File::create(path).unwrap();
    let w: Box<dyn Write> = if gz {
        Box::new(GzEncoder::new(f, Compression::fast()))
    } else {
        Box::new(f)
    };
    let mut b = tar::Builder::new(w);
    for (name, data) in members {
        let mut h = tar::Header::new_gnu();
        h.set_size(data.len() as u64);
        h.set_mode(0o644);
        h.set_cksum();
        b.append_data(&mut h, name, data.as_slice()).unwrap();
    }
    b.into_inner().unwrap().flush().unwrap();
}

fn collect(spec: &DataSpec) -> Vec<(String, i64, image::RgbImage)> {
    spec.samples()
        .unwrap()
        .map(|s| {
            let s = s.unwrap();
            (s.name.clone(), s.label, s.decode().unwrap())
        })
        .collect()
}

#[test]
fn tar_and_tar_gz_in_class_major_order_even_when_the_archive_is_not() {
    let dir = tempfile::tempdir().unwrap();
    // Archive order deliberately scrambled; the stream must come out sorted.
    let members = vec![
        ("root/dog/b.png", png(4, 4, 30)),
        ("root/cat/2.png", png(4, 4, 20)),
        ("root/dog/a.png", png(4, 4, 40)),
        ("root/cat/1.png", png(4, 4, 10)),
        ("root/notes.txt", b"not an image".to_vec()),
    ];
    for gz in [false, true] {
        let p = dir.path().join(if gz { "d.tar.gz" } else { "d.tar" });
        write_tar(&p, &members, gz);
        let spec = DataSpec::parse(&format!("tar:{}", p.display())).unwrap();
        let got = collect(&spec);
        let names: Vec<&str> = got.iter().map(|g| g.0.as_str()).collect();
        assert_eq!(
            names,
            [
                "root/cat/1.png",
                "root/cat/2.png",
                "root/dog/a.png",
                "root/dog/b.png"
            ]
        );
        assert_eq!(got.iter().map(|g| g.1).collect::<Vec<_>>(), [0, 0, 1, 1]);
        assert_eq!(
            got.iter()
                .map(|g| g.2.get_pixel(0, 0).0[0])
                .collect::<Vec<_>>(),
            [10, 20, 40, 30]
        );
        assert_eq!(spec.classes().unwrap(), ["cat", "dog"]);
    }
}

#[test]
fn folder_tree_and_image_list() {
    let dir = tempfile::tempdir().unwrap();
    for (class, file, v) in [("b", "x.png", 1u8), ("a", "z.png", 2), ("a", "y.png", 3)] {
        std::fs::create_dir_all(dir.path().join(class)).unwrap();
        std::fs::write(dir.path().join(class).join(file), png(3, 2, v)).unwrap();
    }
    let spec = DataSpec::Folder(dir.path().to_path_buf());
    let got = collect(&spec);
    let vals: Vec<(u8, i64)> = got
        .iter()
        .map(|g| (g.2.get_pixel(0, 0).0[0], g.1))
        .collect();
    assert_eq!(vals, [(3, 0), (2, 0), (1, 1)]);
    let fp = spec.fingerprint().unwrap();
    assert_eq!(fp, spec.fingerprint().unwrap());

    let list = dir.path().join("list.txt");
    std::fs::write(&list, "b/x.png 7\n\na/y.png -1\n").unwrap();
    let spec = DataSpec::parse(&format!(
        "imglist:{}@{}",
        list.display(),
        dir.path().display()
    ))
    .unwrap();
    let got = collect(&spec);
    assert_eq!(
        got.iter().map(|g| (g.0.as_str(), g.1)).collect::<Vec<_>>(),
        [("b/x.png", 7), ("a/y.png", -1)]
    );
    std::fs::write(&list, "/etc/passwd 0\n").unwrap();
    let err = spec.samples().err().unwrap().to_string();
    assert!(
        err.contains("absolute path") && err.contains("line 1"),
        "{err}"
    );
}

fn idx_bytes(magic_dims: u8, shape: &[u32], data: &[u8]) -> Vec<u8> {
    let mut b = vec![0, 0, 0x08, magic_dims];
    for s in shape {
        b.extend_from_slice(&s.to_be_bytes());
    }
    b.extend_from_slice(data);
    b
}

#[test]
fn idx_raw_and_gz_are_gray_replicated_and_padded() {
    let dir = tempfile::tempdir().unwrap();
    let images: Vec<u8> = (0..2 * 28 * 28).map(|i| (i % 251) as u8).collect();
    let ip = dir.path().join("img-idx3-ubyte.gz");
    let mut gz = GzEncoder::new(std::fs::File::create(&ip).unwrap(), Compression::fast());
    gz.write_all(&idx_bytes(3, &[2, 28, 28], &images)).unwrap();
    gz.finish().unwrap();
    let lp = dir.path().join("lab-idx1-ubyte");
    std::fs::write(&lp, idx_bytes(1, &[2], &[7, 3])).unwrap();
    let spec = DataSpec::parse(&format!("idx:{},{}", ip.display(), lp.display())).unwrap();
    let got = collect(&spec);
    assert_eq!(got.len(), 2);
    assert_eq!((got[0].1, got[1].1), (7, 3));
    let img = &got[1].2;
    assert_eq!(img.dimensions(), (28, 28));
    let v = images[784 + 5 * 28 + 6];
    assert_eq!(img.get_pixel(6, 5).0, [v, v, v]);
    let pre = Preprocess {
        resize: None,
        interpolation: Default::default(),
        crop: None,
        pad: 2,
        mean: [0.0; 3],
        std: [1.0; 3],
    };
    let padded = pre.geometry(img.clone());
    assert_eq!(padded.dimensions(), (32, 32));
    assert_eq!(padded.get_pixel(0, 0).0, [0, 0, 0]);
    assert_eq!(padded.get_pixel(8, 7).0, [v, v, v]);
    // Wrong label count is an error naming the labels file.
    std::fs::write(&lp, idx_bytes(1, &[3], &[1, 2, 3])).unwrap();
    let err = spec.samples().err().unwrap().to_string();
    assert!(
        err.contains("lab-idx1-ubyte") && err.contains("3 labels for 2 images"),
        "{err}"
    );
}

#[test]
fn cifar_binary_batches_are_planar_rgb() {
    let dir = tempfile::tempdir().unwrap();
    let mut rec = vec![4u8];
    for c in 0..3u8 {
        rec.extend((0..1024).map(|j| (j % 256) as u8 ^ (c * 85)));
    }
    let mut file = rec.clone();
    file[0] = 9;
    file.extend_from_slice(&rec);
    let p = dir.path().join("test_batch.bin");
    std::fs::write(&p, &file).unwrap();
    let got = collect(&DataSpec::parse(&format!("cifar10-bin:{}", p.display())).unwrap());
    assert_eq!(got.iter().map(|g| g.1).collect::<Vec<_>>(), [9, 4]);
    // pixel (x=3, y=1) is planar index 35
    assert_eq!(got[1].2.get_pixel(3, 1).0, [35, 35 ^ 85, 35 ^ 170]);
    std::fs::write(&p, &file[..100]).unwrap();
    let spec = DataSpec::parse(&format!("cifar10-bin:{}", p.display())).unwrap();
    assert!(
        spec.samples()
            .err()
            .unwrap()
            .to_string()
            .contains("3073-byte")
    );
}

#[test]
fn tiny_imagenet_val_and_test_layout() {
    let dir = tempfile::tempdir().unwrap();
    let p = dir.path().join("tin.tar.gz");
    write_tar(
        &p,
        &[
            ("tiny-imagenet-200/test/images/test_1.JPEG", png(2, 2, 1)),
            ("tiny-imagenet-200/val/images/val_10.JPEG", png(2, 2, 2)),
            ("tiny-imagenet-200/val/images/val_2.JPEG", png(2, 2, 3)),
            ("tiny-imagenet-200/test/images/test_0.JPEG", png(2, 2, 4)),
            (
                "tiny-imagenet-200/val/val_annotations.txt",
                b"val_2.JPEG\tn02\t0\t0\t1\t1\nval_10.JPEG\tn01\t0\t0\t1\t1\n".to_vec(),
            ),
            ("tiny-imagenet-200/wnids.txt", b"n02\nn01\n".to_vec()),
        ],
        true,
    );
    let val = collect(&DataSpec::TinVal(p.clone()));
    // sorted by file name (byte order): val_10 < val_2; labels index sorted wnids (n01=0, n02=1)
    assert_eq!(
        val.iter()
            .map(|g| (g.2.get_pixel(0, 0).0[0], g.1))
            .collect::<Vec<_>>(),
        [(2, 0), (3, 1)]
    );
    let test = collect(&DataSpec::TinTest(p));
    assert_eq!(
        test.iter()
            .map(|g| (g.2.get_pixel(0, 0).0[0], g.1))
            .collect::<Vec<_>>(),
        [(4, -1), (1, -1)]
    );
}

#[test]
fn extract_skips_or_fails_on_corrupt_images_and_caches() {
    let dir = tempfile::tempdir().unwrap();
    let root = dir.path().join("imgs");
    std::fs::create_dir_all(root.join("a")).unwrap();
    std::fs::write(root.join("a/1.png"), png(32, 32, 9)).unwrap();
    std::fs::write(root.join("a/2.png"), b"\x89PNG broken").unwrap();
    std::fs::write(root.join("a/3.png"), png(32, 32, 200)).unwrap();
    let spec = DataSpec::Folder(root.clone());
    tch::manual_seed(0);
    let net = ood_nn::models::Arch::He(20)
        .build(10, tch::Device::Cpu)
        .unwrap();
    let mut opts = ExtractOptions {
        batch_size: 2,
        preprocess: Preprocess::normalize_only([0.5; 3], [0.25; 3]),
        on_error: OnError::Fail,
        precision: Default::default(),
        probes: Vec::new(),
        fit_statistics: None,
    };
    let err = extract(&net, spec.samples().unwrap(), &opts, &mut |_| {})
        .unwrap_err()
        .to_string();
    assert!(
        err.contains("2.png") && err.contains("cannot decode"),
        "{err}"
    );
    opts.on_error = OnError::Skip;
    let mut seen = Vec::new();
    let ex = extract(&net, spec.samples().unwrap(), &opts, &mut |d| seen.push(d)).unwrap();
    assert_eq!(seen, [2, 3]);
    assert_eq!(ex.skipped.len(), 1);
    assert_eq!(ex.features.len(), 2);
    assert_eq!(ex.features.dim(), 64);
    assert_eq!(ex.features.num_classes(), 10);
    assert_eq!(ex.features.metadata["num_skipped"], "1");
    // The logits are the head applied to the features.
    let head = ood_nn::Network::head(&net).unwrap();
    let re = head.logits(ex.features.embeddings.view()).unwrap();
    let d = (&re - &ex.features.logits)
        .mapv(f32::abs)
        .fold(0.0f32, |a, &b| a.max(b));
    // Float rounding relative to the logits' size (PyTorch's initialisation, now the registry's,
    // gives logits of order 10 where tch's U(0, 1) BatchNorm weights gave order 1).
    let scale = ex.features.logits.fold(1.0f32, |a, &b| a.max(b.abs()));
    assert!(d < 1e-5 * scale, "{d} (logits up to {scale})");

    // Cache: the second call reuses the file; changing the preprocessing changes the key.
    let cache = dir.path().join("cache");
    let a = extract_cached(&cache, &net, "w", &spec, &opts, &mut |_| {}).unwrap();
    assert!(!a.reused);
    let b = extract_cached(&cache, &net, "w", &spec, &opts, &mut |_| {}).unwrap();
    assert!(b.reused);
    assert_eq!(a.path, b.path);
    let f = ood_core::Features::load(&a.path).unwrap();
    assert_eq!(f.embeddings, ex.features.embeddings);
    assert_eq!(f.metadata["weights_sha256"], "w");
    assert_eq!(f.metadata["precision"], "fp32");
    // bf16 autocast: its own cache key and metadata, features within bf16 rounding of fp32's.
    let mut bf = opts.clone();
    bf.precision = ood_nn::train::Precision::Bf16;
    let e = extract_cached(&cache, &net, "w", &spec, &bf, &mut |_| {}).unwrap();
    assert!(!e.reused);
    assert_ne!(e.key, a.key);
    let g = ood_core::Features::load(&e.path).unwrap();
    assert_eq!(g.metadata["precision"], "bf16");
    let range = f.embeddings.fold(0.0f32, |m, &v| m.max(v.abs()));
    let diff = (&g.embeddings - &f.embeddings).fold(0.0f32, |m, &v| m.max(v.abs()));
    assert!(
        diff > 0.0 && diff < 0.05 * range,
        "bf16 vs fp32: {diff} of {range}"
    );
    opts.preprocess.mean = [0.4; 3];
    let c = extract_cached(&cache, &net, "w", &spec, &opts, &mut |_| {}).unwrap();
    assert!(!c.reused);
    assert_ne!(c.key, a.key);
}

#[test]
fn decode_gray_pixels() {
    let s = ood_nn::data::RawSample {
        name: "g".into(),
        label: 0,
        pixels: Pixels::Gray {
            width: 2,
            height: 1,
            data: vec![5, 6],
        },
    };
    let img = s.decode().unwrap();
    assert_eq!(img.get_pixel(1, 0).0, [6, 6, 6]);
}

/// Issue 12: `up -> ..` made a one-image folder yield 41 rows, and three links to `.` made the
/// walk endless. Each real directory is read once; links into the tree's ancestors are skipped;
/// a link to a class folder elsewhere is still followed.
#[cfg(unix)]
#[test]
fn folder_walk_follows_links_once_and_never_loops() {
    use std::os::unix::fs::symlink;
    let dir = tempfile::tempdir().unwrap();
    let root = dir.path().join("data");
    std::fs::create_dir_all(root.join("cat")).unwrap();
    std::fs::write(root.join("cat/a.png"), png(4, 4, 1)).unwrap();
    symlink("..", root.join("up")).unwrap();
    symlink(".", root.join("cat/loop1")).unwrap();
    symlink(".", root.join("cat/loop2")).unwrap();
    symlink(".", root.join("loop3")).unwrap();
    symlink("cat", root.join("cat_again")).unwrap();
    // A class folder that lives outside the tree, linked in.
    std::fs::create_dir_all(dir.path().join("elsewhere/dog")).unwrap();
    std::fs::write(dir.path().join("elsewhere/dog/b.png"), png(4, 4, 2)).unwrap();
    symlink(dir.path().join("elsewhere/dog"), root.join("dog")).unwrap();
    let spec = DataSpec::Folder(root.clone());
    let got = collect(&spec);
    let labels: Vec<i64> = got.iter().map(|g| g.1).collect();
    assert_eq!(
        got.len(),
        2,
        "{:?}",
        got.iter().map(|g| &g.0).collect::<Vec<_>>()
    );
    assert_eq!(labels, [0, 1]);
    assert_eq!(spec.classes().unwrap(), ["cat", "dog"]);
    assert!(spec.fingerprint().is_ok());
}

/// A file name that is not UTF-8 is read by its real name (it was reported as missing).
#[cfg(unix)]
#[test]
fn folder_images_with_non_utf8_names_are_read() {
    use std::os::unix::ffi::OsStrExt;
    let dir = tempfile::tempdir().unwrap();
    let class = dir.path().join("cls");
    std::fs::create_dir_all(&class).unwrap();
    let name = std::ffi::OsStr::from_bytes(b"caf\xe9.png");
    std::fs::write(class.join(name), png(4, 4, 7)).unwrap();
    let got = collect(&DataSpec::Folder(dir.path().to_path_buf()));
    assert_eq!(got.len(), 1);
    assert_eq!(got[0].2.get_pixel(0, 0).0[0], 7);
}

/// A dangling link named like an image: `--on-error skip` skips it (it failed in the
/// fingerprint), `fail` names it.
#[cfg(unix)]
#[test]
fn dangling_image_link_is_skipped_or_named() {
    let dir = tempfile::tempdir().unwrap();
    let class = dir.path().join("cls");
    std::fs::create_dir_all(&class).unwrap();
    std::fs::write(class.join("a.png"), png(8, 8, 3)).unwrap();
    std::os::unix::fs::symlink(class.join("gone.png"), class.join("b.png")).unwrap();
    let spec = DataSpec::Folder(dir.path().to_path_buf());
    assert!(spec.fingerprint().is_ok());
    let net = ood_nn::models::Arch::He(8)
        .build(10, tch::Device::Cpu)
        .unwrap();
    let opts = |on_error| ExtractOptions {
        batch_size: 4,
        preprocess: Preprocess {
            resize: Some(32),
            interpolation: Default::default(),
            crop: Some(32),
            pad: 0,
            mean: [0.5; 3],
            std: [0.5; 3],
        },
        on_error,
        precision: Default::default(),
        probes: Vec::new(),
        fit_statistics: None,
    };
    let ex = extract(
        &net,
        spec.samples().unwrap(),
        &opts(OnError::Skip),
        &mut |_| {},
    )
    .unwrap();
    assert_eq!(ex.features.len(), 1);
    assert_eq!(ex.skipped.len(), 1);
    let e = extract(
        &net,
        spec.samples().unwrap(),
        &opts(OnError::Fail),
        &mut |_| {},
    )
    .err()
    .unwrap()
    .to_string();
    assert!(e.contains("b.png"), "{e}");
}

/// A member stored twice (`tar -r`) is an error saying so (it was "vanished between passes").
#[test]
fn duplicate_tar_member_is_named() {
    let dir = tempfile::tempdir().unwrap();
    let p = dir.path().join("dup.tar");
    write_tar(
        &p,
        &[
            ("c/a.png", png(4, 4, 1)),
            ("c/b.png", png(4, 4, 2)),
            ("c/a.png", png(4, 4, 3)),
        ],
        false,
    );
    let e = DataSpec::Tar(p).samples().err().unwrap().to_string();
    assert!(
        e.contains("'c/a.png' appears twice") && e.contains("dup.tar"),
        "{e}"
    );
}

/// Images at an archive's root: an unlabelled set when all are there, an error naming one when
/// mixed with class folders (they were dropped without a word).
#[test]
fn images_at_an_archive_root() {
    let dir = tempfile::tempdir().unwrap();
    let flat = dir.path().join("flat.tar");
    write_tar(
        &flat,
        &[("b.png", png(4, 4, 2)), ("a.png", png(4, 4, 1))],
        false,
    );
    let got = collect(&DataSpec::Tar(flat));
    assert_eq!(
        got.iter().map(|g| (g.0.as_str(), g.1)).collect::<Vec<_>>(),
        [("a.png", -1), ("b.png", -1)]
    );
    let mixed = dir.path().join("mixed.tar");
    write_tar(
        &mixed,
        &[("cls/a.png", png(4, 4, 1)), ("stray.png", png(4, 4, 2))],
        false,
    );
    let e = DataSpec::Tar(mixed).samples().err().unwrap().to_string();
    assert!(
        e.contains("1 of its 2 images") && e.contains("'stray.png'"),
        "{e}"
    );
}

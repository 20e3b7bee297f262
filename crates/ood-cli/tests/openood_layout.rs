//! The OpenOOD v1.5 layout on real data (issue 14): a miniature OpenOOD `data/` folder is built
//! at test time from ../shared (CIFAR-10 JPEG as ID, Tiny-ImageNet, MNIST, notMNIST and DTD as
//! OOD; the sets OpenOOD has and ../shared lacks stand in with other images), with
//! `benchmark_imglist/cifar10/*.txt` listing files under `images_classic/`, exactly as OpenOOD's
//! download script lays them out. `ood bench openood-cifar10 --data-root MINI` must give the same
//! table as reading the same image files another way: `ood extract` of each set as a class-folder
//! tree and `ood eval` of the feature files.

mod common;
use common::layout::{
    As, Sources, assert_same_results, extract_and_eval, list_set, resnet20_weights, results,
    write_openood,
};
use common::{ok, ood, shared_root};

#[test]
fn openood_cifar10_on_a_miniature_layout_equals_extract_and_eval() {
    let Some(root) = shared_root("openood_cifar10_on_a_miniature_layout_equals_extract_and_eval")
    else {
        return;
    };
    let tmp = tempfile::tempdir().unwrap();
    let mini = tmp.path().join("data");
    let src = Sources::new(&root);
    let ic = "images_classic";
    // (imglist file, images folder, set folder, source, (offset, step, n), OOD?)
    #[rustfmt::skip]
    let sets = [
        list_set("train_cifar10", ic, "cifar10/train", &src.cifar_train, (0, 125, 400), false),
        list_set("val_cifar10", ic, "cifar10/val", &src.cifar_test, (7, 125, 80), false),
        list_set("test_cifar10", ic, "cifar10/test", &src.cifar_test, (0, 50, 200), false),
        list_set("test_cifar10c", ic, "cifar10c", &src.cifar_test, (3, 500, 20), false),
        list_set("test_cifar100", ic, "cifar100", &src.tin_test, (0, 50, 100), true),
        list_set("test_tin", ic, "tin/test", &src.tin_val, (0, 50, 100), true),
        list_set("val_tin", ic, "tin/val", &src.tin_val, (25, 200, 40), true),
        list_set("test_mnist", ic, "mnist", &src.mnist, (0, 50, 100), true),
        list_set("test_svhn", ic, "svhn", &src.notmnist, (0, 50, 100), true),
        list_set("test_texture", ic, "texture", &src.dtd, (0, 3, 100), true),
        list_set("test_places365", ic, "places365", &src.tin_test, (25, 50, 100), true),
    ];
    write_openood(&mini, "cifar10", &sets);
    let weights = resnet20_weights(&root);
    let w = weights.to_str().unwrap();
    let cache = tmp.path().join("cache");
    let bench_json = tmp.path().join("bench.json");
    let o = ok(ood(&[
        "bench",
        "openood-cifar10",
        "--data-root",
        mini.to_str().unwrap(),
        "--model",
        "resnet20",
        "--weights",
        w,
        "--cache-dir",
        cache.to_str().unwrap(),
        "--out-dir",
        tmp.path().join("bench").to_str().unwrap(),
        "--json",
        bench_json.to_str().unwrap(),
    ]));
    // The built-in's expected set sizes (OpenOOD's) differ here: warnings with both numbers.
    let err = String::from_utf8_lossy(&o.stderr);
    assert!(
        err.contains("set 'tin' has 100 images, the benchmark defines 7793"),
        "{err}"
    );

    // The same image files through other readers: class-folder trees, `ood extract`, `ood eval`.
    let ic = mini.join(ic);
    let sets: Vec<(&str, As, std::path::PathBuf)> = [
        ("train", As::Fit, "cifar10/train"),
        ("val", As::FitVal, "cifar10/val"),
        ("test", As::Id, "cifar10/test"),
        // The benchmark's OOD-val set: `ood bench` hands it to grood (its noise prototype).
        ("val_tin", As::ValOod, "tin/val"),
        ("cifar100", As::Near, "cifar100"),
        ("tin", As::Near, "tin/test"),
        ("mnist", As::Far, "mnist"),
        ("svhn", As::Far, "svhn"),
        ("texture", As::Far, "texture"),
        ("places365", As::Far, "places365"),
    ]
    .into_iter()
    .map(|(n, r, dir)| (n, r, ic.join(dir)))
    .collect();
    let eval_json = extract_and_eval(
        tmp.path(),
        &["--model", "resnet20", "--weights", w],
        &sets,
        Some("network"),
        &[],
    );

    let b = results(&bench_json);
    let e = results(&eval_json);
    assert_same_results(&b, &e);
    assert!(
        b.id_accuracy > 0.6,
        "ResNet-20 on 200 CIFAR-10 test images: {}",
        b.id_accuracy
    );
    // Every near/far set and both group means, for every detector that fitted.
    for want in ["cifar100", "tin", "mnist", "svhn", "texture", "places365"] {
        assert!(b.groups.contains_key(want), "{:?}", b.groups);
    }
    assert!(b.table.len() >= 20 * 8, "{} rows", b.table.len());
}

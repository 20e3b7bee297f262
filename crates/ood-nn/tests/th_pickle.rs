//! The legacy `.th` reader against the converted safetensors files of the akamaster release
//! (needs /work/shared; skipped with a message when the folder is missing).

mod common;

use std::collections::HashMap;
use std::path::PathBuf;

use ood_nn::models::th_pickle::{ThData, load_th, read_th};
use tch::Tensor;

fn shared() -> Option<PathBuf> {
    let root = std::env::var_os("OOD_DATA_ROOT")
        .map(PathBuf::from)
        .unwrap_or_else(|| PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../../../shared"));
    let dir = root.join("models/akamaster-resnet-cifar10");
    if dir.is_dir() {
        Some(dir)
    } else {
        common::skip(&format!(
            "skipping: {} not found (set OOD_DATA_ROOT)",
            dir.display()
        ));
        None
    }
}

#[test]
fn akamaster_th_equals_converted_safetensors() {
    let Some(dir) = shared() else { return };
    for stem in ["resnet20-12fca82f", "resnet56-4bfd9763"] {
        let th = load_th(dir.join(format!("{stem}.th"))).unwrap();
        let st: HashMap<String, Tensor> =
            Tensor::read_safetensors(dir.join(format!("{stem}.safetensors")))
                .unwrap()
                .into_iter()
                .collect();
        assert_eq!(th.len(), st.len(), "{stem}: tensor count");
        for (name, t) in &th {
            let s = st
                .get(name)
                .unwrap_or_else(|| panic!("{stem}: {name} not in safetensors"));
            assert_eq!(t.size(), s.size(), "{stem}: {name} shape");
            assert_eq!(t.kind(), s.kind(), "{stem}: {name} kind");
            assert!(t.equal(s), "{stem}: {name} values differ");
        }
        println!("{stem}: {} tensors identical", th.len());
    }
    // names in file order, prefix stripped, f32 data
    let raw = read_th(dir.join("resnet20-12fca82f.th")).unwrap();
    assert_eq!(raw[0].0, "conv1.weight");
    assert_eq!(raw[0].1.shape, vec![16, 3, 3, 3]);
    assert!(matches!(&raw[0].1.data, ThData::F32(v) if v.len() == 432));
}

#[test]
fn truncated_th_is_an_error_naming_the_file() {
    let Some(dir) = shared() else { return };
    let bytes = std::fs::read(dir.join("resnet20-12fca82f.th")).unwrap();
    let tmp = tempfile::tempdir().unwrap();
    let path = tmp.path().join("cut.th");
    std::fs::write(&path, &bytes[..bytes.len() - 1000]).unwrap();
    let e = read_th(&path).unwrap_err().to_string();
    assert!(e.contains("cut.th") && e.contains("truncated"), "{e}");
}

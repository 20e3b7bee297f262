//! `ood_nn::network::load_init`: starting a run from a classifier's weights. A K-class head
//! starts a larger head (TagFog's K+1 outputs): its rows are copied, the extra row keeps the fresh
//! initialisation, every other tensor is copied exactly; anything else that does not fit is an
//! error.

use ood_nn::models::Arch;
use ood_nn::network::load_init;
use std::collections::BTreeMap;
use tch::{Device, Tensor};

fn snapshot(vs: &tch::nn::VarStore) -> BTreeMap<String, Tensor> {
    vs.variables()
        .into_iter()
        .map(|(k, v)| (k, v.detach().copy()))
        .collect()
}

#[test]
fn a_k_class_head_starts_a_k_plus_one_class_head() {
    tch::manual_seed(1);
    let arch = Arch::parse("resnet8").unwrap();
    let src = arch.build(10, Device::Cpu).unwrap();
    let dir = tempfile::tempdir().unwrap();
    let file = dir.path().join("ten.safetensors");
    src.var_store().save(&file).unwrap();
    let want = snapshot(src.var_store());

    tch::manual_seed(2);
    let mut dst = arch.build(11, Device::Cpu).unwrap();
    let fresh = snapshot(dst.var_store());
    load_init(dst.var_store_mut(), &file, arch.head_name()).unwrap();
    let got = snapshot(dst.var_store());
    assert_eq!(got.len(), want.len());
    for (name, t) in &got {
        let w = &want[name];
        if name.starts_with("linear.") {
            // Rows 0..10 from the file, row 10 as freshly initialised.
            assert!(t.narrow(0, 0, 10).equal(w), "{name}");
            assert!(
                t.narrow(0, 10, 1).equal(&fresh[name].narrow(0, 10, 1)),
                "{name}"
            );
            assert!(
                !fresh[name].narrow(0, 0, 10).equal(w),
                "{name}: fresh rows differ"
            );
        } else {
            assert!(t.equal(w), "{name}");
        }
    }

    // Another depth does not fit: an error naming the file, nothing copied silently.
    let deeper = Arch::parse("resnet20").unwrap();
    let mut other = deeper.build(11, Device::Cpu).unwrap();
    let e = load_init(other.var_store_mut(), &file, deeper.head_name())
        .unwrap_err()
        .to_string();
    assert!(
        e.contains("ten.safetensors") && e.contains("missing"),
        "{e}"
    );
}

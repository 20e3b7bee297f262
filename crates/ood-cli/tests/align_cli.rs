//! `ood align` end to end on the seeded synthetic benchmark of `ood example`: the projection
//! learns to point every training row at its class's anchor (here the head's rows), and bad
//! anchors are a clear error with exit code 2 and no output file.

mod common;
use common::ood;

#[test]
fn align_fits_anchors_and_rejects_bad_input() {
    let dir = tempfile::tempdir().unwrap();
    let d = dir.path();
    let o = ood(&[
        "example",
        "--out-dir",
        d.to_str().unwrap(),
        "--detectors",
        "msp",
    ]);
    assert!(o.status.success(), "{}", String::from_utf8_lossy(&o.stderr));
    let f = d.join("features");
    let train = f.join("train.safetensors");
    let head = f.join("head.safetensors");
    let proj = d.join("proj.safetensors");
    let o = ood(&[
        "align",
        "--fit",
        train.to_str().unwrap(),
        "--anchors",
        head.to_str().unwrap(),
        "--out",
        proj.to_str().unwrap(),
        "--epochs",
        "8",
        "--batch-size",
        "64",
        "--lr",
        "0.01",
    ]);
    assert!(o.status.success(), "{}", String::from_utf8_lossy(&o.stderr));
    let cfg: serde_json::Value =
        serde_json::from_slice(&std::fs::read(d.join("proj.config.json")).unwrap()).unwrap();
    let losses: Vec<f64> = cfg["epoch_losses"]
        .as_array()
        .unwrap()
        .iter()
        .map(|v| v.as_f64().unwrap())
        .collect();
    assert_eq!(losses.len(), 8);
    assert!(losses[7] < 0.5 * losses[0], "L_CI did not fall: {losses:?}");
    let acc = cfg["train_anchor_accuracy"].as_f64().unwrap();
    assert!(acc > 0.9, "train anchor accuracy {acc}");
    assert_eq!(cfg["anchors"]["classes"], 6);
    assert_eq!(cfg["fit"]["rows"], 1800);

    // A features file is not an anchor file: exit 2, message names the file, nothing written.
    let bad_out = d.join("bad.safetensors");
    let o = ood(&[
        "align",
        "--fit",
        train.to_str().unwrap(),
        "--anchors",
        train.to_str().unwrap(),
        "--out",
        bad_out.to_str().unwrap(),
    ]);
    assert_eq!(o.status.code(), Some(2));
    let err = String::from_utf8_lossy(&o.stderr);
    assert!(
        err.contains("train.safetensors") && err.contains("no `weight` or `embeddings`"),
        "{err}"
    );
    assert!(!bad_out.exists());
}

//! `ood example`: generate the seeded synthetic benchmark of `ood_core::synthetic` as feature files
//! and evaluate detectors on it with [`crate::light::eval::execute`].

use crate::light::args::ExampleArgs;
use crate::light::eval::{self, Inputs, Options};
use anyhow::Result;
use ood_core::benchmark::Group;
use ood_core::metrics::Convention;
use ood_core::synthetic;
use serde_json::json;

/// Runs `ood example`.
pub fn run(a: ExampleArgs) -> Result<()> {
    let (classes, dim, per_class) = (6, 64, 300);
    let b = synthetic::generate(a.seed, classes, dim, per_class);
    let dir = a.out_dir.join("features");
    let p = |n: &str| dir.join(format!("{n}.safetensors"));
    b.head.save(p("head"))?;
    b.train.save(p("train"))?;
    b.val.save(p("val"))?;
    b.test.save(p("test"))?;
    b.near.save(p("near"))?;
    b.far.save(p("far"))?;
    let inputs = Inputs {
        fit: p("train"),
        fit_val: Some(p("val")),
        head: p("head"),
        id: p("test"),
        ood: vec![
            ("held_out_class".into(), Some(Group::Near), p("near")),
            ("low_activation".into(), Some(Group::Far), p("far")),
        ],
        negatives: None,
    };
    let opts = Options {
        detectors: eval::parse_detectors(&a.detectors, &[], false)?,
        convention: Convention::Openood,
        sweep: None,
        ood_val: None,
        out_dir: a.out_dir.join("results"),
        json: None,
        vision_language: None,
    };
    eval::execute(
        "oodkit example: synthetic feature-space benchmark",
        "example",
        &inputs,
        &opts,
        json!({"generator": "ood_core::synthetic::generate", "seed": a.seed, "classes": classes, "dim": dim, "per_class": per_class}),
    )
}

//! The `ood` command line. The binary `ood` runs the commands that need only numbers (`light`)
//! itself, so they start in milliseconds without loading libtorch, and hands every other command
//! (extraction, training, benchmarks, text encoders) to its sibling binary `ood-net`, which links
//! `ood-nn`. This library holds the light half; nothing in it may use `ood_nn` or `tch`.

pub mod light;

//! Network architectures with PyTorch-compatible tensor names.
//!
//! Every model has an inherent API: `new(vs, num_classes, ..)` builds it with fresh weights for
//! training, `load_safetensors(path, device)` builds it from a weights file (architecture read from the
//! tensor names and shapes, every tensor checked), `forward_t(x, train)` returns
//! `(features, logits)`, and `head()` copies the final linear layer out as an [`ood_core::Head`].

pub mod cifar_resnet;
pub mod common;
pub mod resnet;
pub mod th_pickle;
pub mod torchscript;
pub mod wrn;

pub mod akamaster;

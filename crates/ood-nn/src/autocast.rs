//! Mixed precision (`torch.autocast`) and channels-last memory layout for training.
//!
//! `tch` 0.24 exposes autocast only for CUDA with libtorch's default float16, and has no
//! memory-format argument. PyTorch's `torch.autocast(device_type, dtype=torch.bfloat16)` is four
//! calls into ATen's autocast state (`at::autocast::set_autocast_enabled`,
//! `set_autocast_dtype`, `increment_nesting`, `decrement_nesting`), which libtorch exports as
//! plain C++ functions taking one-byte enums. [`autocast`] calls them directly, for the CPU and
//! for CUDA, and restores the previous state afterwards (also on panic). Inside, libtorch's own
//! per-op, per-device casting policy applies, exactly as under `torch.autocast`: convolutions and
//! matrix products run in the autocast dtype, losses such as `cross_entropy` in float32.
//!
//! Channels-last is a stride permutation: [`channels_last`] returns the same NCHW tensor stored
//! NHWC (`x.contiguous(memory_format=torch.channels_last)`); convolutions keep the layout.
#![allow(unsafe_code)]

use tch::{Device, Kind, Tensor};

// libtorch's exports (libtorch_cpu.so, linked by torch-sys). `c10::DeviceType` and
// `c10::ScalarType` are `enum class : int8_t`, so they travel as `i8`.
unsafe extern "C" {
    #[link_name = "_ZN2at8autocast20set_autocast_enabledEN3c1010DeviceTypeEb"]
    fn at_set_autocast_enabled(device: i8, enabled: bool);
    #[link_name = "_ZN2at8autocast19is_autocast_enabledEN3c1010DeviceTypeE"]
    fn at_is_autocast_enabled(device: i8) -> bool;
    #[link_name = "_ZN2at8autocast18set_autocast_dtypeEN3c1010DeviceTypeENS1_10ScalarTypeE"]
    fn at_set_autocast_dtype(device: i8, dtype: i8);
    #[link_name = "_ZN2at8autocast18get_autocast_dtypeEN3c1010DeviceTypeE"]
    fn at_get_autocast_dtype(device: i8) -> i8;
    #[link_name = "_ZN2at8autocast17increment_nestingEv"]
    fn at_increment_nesting() -> i32;
    #[link_name = "_ZN2at8autocast17decrement_nestingEv"]
    fn at_decrement_nesting() -> i32;
    #[link_name = "_ZN2at8autocast11clear_cacheEv"]
    fn at_clear_cache();
}

/// `c10::DeviceType` of a tch device, for the devices autocast supports.
fn device_type(device: Device) -> Option<i8> {
    match device {
        Device::Cpu => Some(0),
        Device::Cuda(_) => Some(1),
        Device::Mps => Some(13),
        _ => None,
    }
}

/// `c10::ScalarType` of the two autocast dtypes.
fn scalar_type(kind: Kind) -> Option<i8> {
    match kind {
        Kind::Half => Some(5),
        Kind::BFloat16 => Some(15),
        _ => None,
    }
}

fn kind_of(scalar: i8) -> Kind {
    match scalar {
        5 => Kind::Half,
        15 => Kind::BFloat16,
        _ => Kind::Float,
    }
}

/// Restores the autocast state of one device type when dropped.
struct Restore {
    device: i8,
    enabled: bool,
    dtype: i8,
}

impl Drop for Restore {
    fn drop(&mut self) {
        // SAFETY: plain setters of ATen's thread-local autocast state; the arguments are valid
        // enum values read back from the same functions.
        unsafe {
            if at_decrement_nesting() == 0 {
                at_clear_cache();
            }
            at_set_autocast_enabled(self.device, self.enabled);
            at_set_autocast_dtype(self.device, self.dtype);
        }
    }
}

/// Runs `f` under `torch.autocast(device, dtype=kind)` (`kind`: [`Kind::BFloat16`] or
/// [`Kind::Half`]). A device or dtype autocast does not support runs `f` unchanged; the
/// previous state is restored afterwards. Autocast state is per thread, like PyTorch's.
pub fn autocast<T>(device: Device, kind: Kind, f: impl FnOnce() -> T) -> T {
    let (Some(dev), Some(dtype)) = (device_type(device), scalar_type(kind)) else {
        return f();
    };
    // SAFETY: see `Restore::drop`; the values are valid `DeviceType` / `ScalarType` members.
    let _restore = unsafe {
        let r = Restore {
            device: dev,
            enabled: at_is_autocast_enabled(dev),
            dtype: at_get_autocast_dtype(dev),
        };
        at_set_autocast_enabled(dev, true);
        at_set_autocast_dtype(dev, dtype);
        at_increment_nesting();
        r
    };
    f()
}

/// Whether autocast is on for `device` in this thread, and its dtype.
pub fn autocast_state(device: Device) -> Option<Kind> {
    let dev = device_type(device)?;
    // SAFETY: read-only queries of ATen's thread-local autocast state.
    unsafe { at_is_autocast_enabled(dev).then(|| kind_of(at_get_autocast_dtype(dev))) }
}

/// The same values stored channels-last (NHWC strides) when `x` is 4-D; other tensors are
/// returned as they are.
pub fn channels_last(x: &Tensor) -> Tensor {
    if x.dim() == 4 {
        x.permute([0, 2, 3, 1]).contiguous().permute([0, 3, 1, 2])
    } else {
        x.shallow_clone()
    }
}

/// Whether a 4-D tensor is stored channels-last (its channel stride is 1).
pub fn is_channels_last(x: &Tensor) -> bool {
    x.dim() == 4 && {
        let s = x.stride();
        let sz = x.size();
        s[1] == 1 && s[3] == sz[1] && s[2] == sz[1] * sz[3]
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn cpu_bf16_autocast_runs_convolutions_in_bf16_and_restores_state() {
        tch::manual_seed(0);
        let x = Tensor::randn([2, 3, 8, 8], (Kind::Float, Device::Cpu));
        let w = Tensor::randn([4, 3, 3, 3], (Kind::Float, Device::Cpu));
        assert_eq!(autocast_state(Device::Cpu), None);
        let (y, sm, inner) = autocast(Device::Cpu, Kind::BFloat16, || {
            let y = x.conv2d(&w, None::<Tensor>, [1, 1], [1, 1], [1, 1], 1);
            // cross_entropy is on autocast's float32 list (CPU and CUDA), as in PyTorch.
            let t = Tensor::from_slice(&[0i64, 3]);
            let sm = y
                .flatten(1, -1)
                .narrow(1, 0, 4)
                .cross_entropy_loss::<Tensor>(&t, None, tch::Reduction::Mean, -100, 0.0);
            (y, sm, autocast_state(Device::Cpu))
        });
        assert_eq!(inner, Some(Kind::BFloat16));
        assert_eq!(y.kind(), Kind::BFloat16);
        assert_eq!(sm.kind(), Kind::Float);
        assert_eq!(autocast_state(Device::Cpu), None);
        // Outside autocast the same op stays f32, and the bf16 result is close to it.
        let y32 = x.conv2d(&w, None::<Tensor>, [1, 1], [1, 1], [1, 1], 1);
        assert_eq!(y32.kind(), Kind::Float);
        let err = (y.to_kind(Kind::Float) - &y32)
            .abs()
            .max()
            .double_value(&[]);
        let scale = y32.abs().max().double_value(&[]);
        assert!(
            err > 0.0 && err < 0.02 * scale,
            "bf16 error {err} vs scale {scale}"
        );
    }

    #[test]
    fn unsupported_kinds_run_unchanged() {
        let x = Tensor::ones([2, 2], (Kind::Float, Device::Cpu));
        let y = autocast(Device::Cpu, Kind::Float, || x.matmul(&x));
        assert_eq!(y.kind(), Kind::Float);
        assert_eq!(autocast_state(Device::Cpu), None);
    }

    #[test]
    fn channels_last_keeps_values_and_sets_strides() {
        let x = Tensor::arange(2 * 3 * 4 * 5, (Kind::Float, Device::Cpu)).view([2, 3, 4, 5]);
        let c = channels_last(&x);
        assert!(is_channels_last(&c) && !is_channels_last(&x));
        assert_eq!(c.stride(), vec![60, 1, 15, 3]);
        assert!(c.equal(&x));
        let w = Tensor::ones([3, 3, 1, 1], (Kind::Float, Device::Cpu));
        let y = c.conv2d(&w, None::<Tensor>, [1, 1], [0, 0], [1, 1], 1);
        assert!(is_channels_last(&y), "convolution keeps the layout");
        assert!(y.equal(&x.conv2d(&w, None::<Tensor>, [1, 1], [0, 0], [1, 1], 1)));
    }
}

//! The one parser of device names (`--device` of every command) and the thread count.

use crate::error::{Error, Result};
use tch::Device;

/// Parses `cpu`, `cuda` (= `cuda:0`, also `gpu`) or `cuda:N`, checking that CUDA is there and has
/// device `N` when asked for, so that a missing GPU is a clear error before any work.
pub fn parse_device(s: &str) -> Result<Device> {
    let cuda = |i: usize| -> Result<Device> {
        if !tch::Cuda::is_available() {
            return Err(Error::Config(format!(
                "--device {s}: CUDA is not available to libtorch on this machine"
            )));
        }
        let count = tch::Cuda::device_count() as usize;
        if i >= count {
            return Err(Error::Config(format!(
                "--device {s}: only {count} CUDA device(s)"
            )));
        }
        Ok(Device::Cuda(i))
    };
    match s {
        "cpu" => Ok(Device::Cpu),
        "cuda" | "gpu" => cuda(0),
        _ => match s.strip_prefix("cuda:").map(str::parse::<usize>) {
            Some(Ok(i)) => cuda(i),
            _ => Err(Error::Config(format!(
                "--device must be cpu, cuda or cuda:N, got '{s}'"
            ))),
        },
    }
}

/// Sets the number of threads libtorch uses for intra-op parallelism (`--threads`).
pub fn set_threads(n: i32) {
    tch::set_num_threads(n);
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn devices_parse_or_are_named() {
        assert_eq!(parse_device("cpu").unwrap(), Device::Cpu);
        for bad in ["gpu0", "cuda:x", "CUDA", ""] {
            let e = parse_device(bad).unwrap_err().to_string();
            assert!(e.contains("cpu, cuda or cuda:N"), "{e}");
        }
        if !tch::Cuda::is_available() {
            let e = parse_device("cuda:1").unwrap_err().to_string();
            assert!(e.contains("not available"), "{e}");
        }
    }
}

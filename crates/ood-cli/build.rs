//! Links libtorch's CUDA library into the `ood-net` binary (the linker drops it otherwise, and
//! `tch::Cuda::is_available()` is then false even on a GPU) and bakes an rpath to torch's `lib`
//! folder so `target/*/ood-net` runs without `LD_LIBRARY_PATH` on the build machine. See
//! /work/shared/spec/rust-stack.md, "Installing libtorch for tch".

use std::path::PathBuf;
use std::process::Command;

fn torch_lib_dir() -> Option<PathBuf> {
    if let Some(lt) = std::env::var_os("LIBTORCH") {
        return Some(PathBuf::from(lt).join("lib"));
    }
    for py in ["python", "python3"] {
        let out = Command::new(py)
            .args([
                "-c",
                "import os,torch;print(os.path.dirname(torch.__file__)+'/lib')",
            ])
            .output();
        let s = match out {
            Ok(o) if o.status.success() => String::from_utf8_lossy(&o.stdout).trim().to_string(),
            _ => continue,
        };
        if !s.is_empty() {
            return Some(PathBuf::from(s));
        }
    }
    None
}

fn main() {
    println!("cargo:rerun-if-env-changed=LIBTORCH");
    println!("cargo:rerun-if-env-changed=PATH");
    println!("cargo:rerun-if-changed=build.rs");
    let Some(dir) = torch_lib_dir() else {
        println!("cargo:warning=torch lib folder not found; `ood` will need LD_LIBRARY_PATH");
        return;
    };
    println!("cargo:rustc-link-search=native={}", dir.display());
    println!("cargo:rustc-link-arg=-Wl,-rpath,{}", dir.display());
    if dir.join("libtorch_cuda.so").exists() {
        println!("cargo:rustc-link-arg-bin=ood-net=-Wl,--no-as-needed");
        println!("cargo:rustc-link-arg-bin=ood-net=-ltorch_cuda");
        println!("cargo:rustc-link-arg-bin=ood-net=-Wl,--as-needed");
    }
}

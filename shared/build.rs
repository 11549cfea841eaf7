//! Sets `cfg(x86_simd)` when building for x86_64 with a rustc whose AVX-512
//! intrinsics are stable (1.89+), so the crate keeps its 1.85 MSRV: older
//! compilers build it without the hand-written SIMD kernels.

use std::env;
use std::process::Command;

fn main() {
    println!("cargo:rustc-check-cfg=cfg(x86_simd)");
    println!("cargo:rerun-if-changed=build.rs");
    let x86_64 = env::var("CARGO_CFG_TARGET_ARCH").is_ok_and(|a| a == "x86_64");
    let rustc = env::var("RUSTC").unwrap_or_else(|_| "rustc".into());
    let minor = Command::new(rustc)
        .arg("--version")
        .output()
        .ok()
        .and_then(|o| String::from_utf8(o.stdout).ok())
        // "rustc 1.95.0 (...)"
        .and_then(|v| v.split_whitespace().nth(1)?.split('.').nth(1)?.parse::<u32>().ok());
    if x86_64 && minor.is_some_and(|m| m >= 89) {
        println!("cargo:rustc-cfg=x86_simd");
    }
}

//! Sets `cfg(x86_simd)` when building for x86_64 (the hand-written AVX2 /
//! AVX-512 kernels; their intrinsics are stable since rustc 1.89, the
//! workspace MSRV), `cfg(arm_dsp)` for Arm targets with the DSP extension and
//! `cfg(arm_fpu)` for hard-float Arm targets (the FPU f16 kernels).

use std::env;

fn main() {
    println!("cargo:rerun-if-env-changed=CARGO_ENCODED_RUSTFLAGS");
    println!("cargo:rustc-check-cfg=cfg(x86_simd)");
    println!("cargo:rustc-check-cfg=cfg(arm_dsp)");
    println!("cargo:rustc-check-cfg=cfg(arm_fpu)");
    println!("cargo:rerun-if-changed=build.rs");
    if env::var("CARGO_CFG_TARGET_ARCH").is_ok_and(|a| a == "x86_64") {
        println!("cargo:rustc-cfg=x86_simd");
    }
    if arm_dsp() {
        println!("cargo:rustc-cfg=arm_dsp");
    }
    // The hard-float Arm targets (Cortex-M4F/M7F on thumbv7em, the M33's FPU
    // on thumbv8m.main): a single-precision FPU with the half-precision
    // conversions (VCVTB/VCVTT) and VMLA.F32.
    let arm = env::var("CARGO_CFG_TARGET_ARCH").is_ok_and(|a| a == "arm");
    if arm && env::var("TARGET").is_ok_and(|t| t.ends_with("eabihf")) {
        println!("cargo:rustc-cfg=arm_fpu");
    }
}

/// Whether the Arm target has the DSP extension (SMLAD, SXTB16, ...) and the
/// code generator will accept its instructions: `cfg(target_feature = "dsp")`
/// is unstable, so stable rustc never reports it and we decide here.
/// - thumbv7em (ARMv7E-M: Cortex-M4/M7): the "E" is the DSP extension, always.
/// - thumbv8m.main: optional on the core; only when the build names a core
///   that has it (`-C target-cpu=cortex-m33`, as firmware/.cargo/config.toml
///   does for the M33 board) or enables the feature (`+dsp`, a nightly flag).
fn arm_dsp() -> bool {
    if env::var("CARGO_CFG_TARGET_ARCH").map_or(true, |a| a != "arm") {
        return false;
    }
    let target = env::var("TARGET").unwrap_or_default();
    let features = env::var("CARGO_CFG_TARGET_FEATURE").unwrap_or_default();
    let flags = env::var("CARGO_ENCODED_RUSTFLAGS").unwrap_or_default();
    let flags: Vec<&str> = flags.split('\x1f').collect();
    let dsp_cpu = flags.iter().any(|f| {
        f.strip_prefix("target-cpu=")
            .or_else(|| f.strip_prefix("-Ctarget-cpu="))
            .is_some_and(|cpu| matches!(cpu, "cortex-m33" | "cortex-m35p" | "cortex-m55" | "cortex-m85"))
    });
    let dsp_feature = flags.iter().any(|f| f.contains("+dsp")) || features.split(',').any(|f| f == "dsp");
    target.starts_with("thumbv7em") || (target.starts_with("thumbv8m.main") && (dsp_cpu || dsp_feature))
}

//! x86_64 SIMD variants of the int8 ([`int8`]) and f16 ([`mod@f16`]) kernels,
//! each tested (tests/kernels_simd.rs) to give exactly the bytes of the
//! plain kernel in [`super::generic`], and the CPU feature checks
//! [`super::dispatch`] uses to pick one.
//!
//! Every kernel here is `unsafe` only because it needs CPU features: the
//! caller must have checked them (the `has_*` helpers below do, under `std`).
//! This module only exists under `cfg(x86_simd)`, which build.rs sets for
//! rustc 1.89+ (stable AVX-512 intrinsics).

pub mod f16;
pub mod int8;
pub mod int8_avx2;
pub mod int8_winograd;
pub mod live;

#[cfg(feature = "std")]
use core::sync::atomic::{AtomicU8, Ordering};

/// The widest x86 instruction sets the kernels here may use, in order.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord)]
pub enum Isa {
    /// AVX2 (and F16C): what an AMD Zen 3 or an Intel client core has.
    Avx2 = 1,
    /// AVX-512F/BW, without VNNI.
    Avx512 = 2,
    /// AVX-512 VNNI: everything.
    Vnni = 3,
}

/// The cap [`limit_isa`] set (`Isa::Vnni`: none).
#[cfg(feature = "std")]
static ISA_CAP: AtomicU8 = AtomicU8::new(Isa::Vnni as u8);

/// Let the kernels use nothing wider than `isa`, process-wide, from the next
/// call on (as oneDNN's `ONEDNN_MAX_CPU_ISA` does): so that one machine can
/// run, test and time the kernels a narrower CPU would take (the AVX2 ones
/// on an AVX-512 machine). Every variant gives the same bytes, so a cap
/// changes only speed.
#[cfg(feature = "std")]
pub fn limit_isa(isa: Isa) {
    ISA_CAP.store(isa as u8, Ordering::Relaxed);
}

/// Whether the cap allows `isa`.
#[cfg(feature = "std")]
fn allowed(isa: Isa) -> bool {
    ISA_CAP.load(Ordering::Relaxed) >= isa as u8
}

/// Whether this CPU can run [`int8::conv2d_vnni`] and [`int8::dense_vnni`].
#[cfg(feature = "std")]
pub fn has_vnni() -> bool {
    allowed(Isa::Vnni)
        && std::is_x86_feature_detected!("avx512f")
        && std::is_x86_feature_detected!("avx512bw")
        && std::is_x86_feature_detected!("avx512vnni")
}

/// Whether this CPU can run the AVX-512BW variants.
#[cfg(feature = "std")]
pub fn has_avx512bw() -> bool {
    allowed(Isa::Avx512) && std::is_x86_feature_detected!("avx512f") && std::is_x86_feature_detected!("avx512bw")
}

/// Whether this CPU has AVX-512F and the cap ([`limit_isa`]) allows it: the
/// host's float kernels ask this, so that one cap runs a machine's whole
/// pipeline, float and int8, as an AVX2-only CPU would.
#[cfg(feature = "std")]
pub fn has_avx512f() -> bool {
    allowed(Isa::Avx512) && std::is_x86_feature_detected!("avx512f")
}

/// Whether this CPU can run the AVX2 variants.
#[cfg(feature = "std")]
pub fn has_avx2() -> bool {
    std::is_x86_feature_detected!("avx2")
}

/// Whether this CPU can run the F16C f16 kernels ([`f16::f16_conv2d_f16c`], [`f16::f16_dense_f16c`]).
#[cfg(feature = "std")]
pub fn has_f16c() -> bool {
    std::is_x86_feature_detected!("avx2") && std::is_x86_feature_detected!("f16c")
}

/// Whether this CPU can run the AVX-512 f16 kernels ([`f16::f16_conv2d_avx512`], [`f16::f16_dense_avx512`]).
#[cfg(feature = "std")]
pub fn has_avx512_f16() -> bool {
    has_f16c() && has_avx512bw()
}

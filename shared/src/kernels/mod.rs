//! Per-op kernels: plain, obviously correct ones first; faster variants are
//! tested to give the same bytes.
//!
//! Kernels take slices in and out and never allocate. They assume the slice
//! lengths agree with the geometry (the engine checks this before calling)
//! and panic otherwise, like slice indexing does.
//!
//! The modules form a tree with no cycle (as tract's linalg and CMSIS-NN
//! are laid out):
//! - [`generic`], the leaf: support functions (requantization, length
//!   checks, the max-pool walk), the plain reference kernels and the portable
//!   int8 reorderings. It imports no other kernel module.
//! - ISA modules that build on [`generic`]: [`x86`] (`int8`, `f16`, and the
//!   CPU feature checks) and `arm` (the DSP int8 kernels, built for Arm cores
//!   with DSP and for tests), `arm_fpu` (the f16 kernels on the FPU, built
//!   for the hard-float Arm targets and for tests).
//! - [`dispatch`], the one place that picks a variant for this CPU or target.
//! - [`int8`] and [`mod@f16`], what callers use: the plain and the dispatched
//!   kernels of one precision, re-exported (nothing inside `kernels` imports
//!   them).
//!
//! The geometry types live in [`crate::geometry`] and are re-exported here.

// The DSP kernels run on Arm cores with the DSP extension (`cfg(arm_dsp)`,
// set by build.rs); the host compiles them with emulated instructions for
// its unit tests.
#[cfg(any(arm_dsp, test))]
pub mod arm;
// The f16 kernels on the Arm single-precision FPU (`cfg(arm_fpu)`, set by
// build.rs for the hard-float targets); the host compiles them with plain
// Rust conversions for its unit tests.
#[cfg(any(arm_fpu, test))]
pub mod arm_fpu;
pub mod dispatch;
pub mod generic;
#[cfg(x86_simd)]
pub mod x86;

pub use crate::geometry::{ConvGeom, PoolGeom};

/// The int8 kernels: the plain ones ([`generic::int8`]) and the fastest
/// variant for this CPU ([`dispatch::int8`]).
pub mod int8 {
    pub use super::dispatch::int8::*;
    pub use super::generic::int8::*;
}

/// The f16 kernels: the plain ones ([`generic::f16`]) and the fastest
/// variant for this CPU ([`dispatch::f16`]).
pub mod f16 {
    pub use super::dispatch::f16::*;
    pub use super::generic::f16::*;
}

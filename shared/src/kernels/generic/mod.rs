//! The leaf of the kernels: the support functions (requantization, length
//! checks, the max-pool and concatenation walks, the kernels' scratch sizes) and the plain, obviously correct reference
//! kernel of every op, plus portable reorderings of the int8 sums that any
//! target can compile. Everything faster is tested against these on bytes.
//!
//! It imports nothing from the other kernel modules (only
//! [`crate::geometry`], [`crate::model`], [`crate::quant`], [`crate::spec`]):
//! the ISA modules ([`super::x86`], `super::arm`) build on it, and
//! [`super::dispatch`] picks among them.

pub mod concat;
pub mod f16;
pub mod int8;
pub mod pool;
pub mod scratch;

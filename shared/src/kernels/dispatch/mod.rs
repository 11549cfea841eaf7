//! The one place that picks a kernel variant: for each op with faster
//! variants, a `*_fast` function that checks the CPU (x86_64 under `std`) or
//! the target (`cfg(arm_dsp)`) and calls the best one, falling back to the
//! portable kernel of [`super::generic`]. Every variant gives the plain
//! kernel's bytes, so the pick never changes a result.

pub mod f16;
pub mod int8;

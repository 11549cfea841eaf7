//! Per-op kernels: plain, obviously correct ones first; faster variants are
//! tested to give the same bytes.
pub mod f16;
pub mod int8;

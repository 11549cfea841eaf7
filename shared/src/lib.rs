//! The code both sides run: one description of the layer stack ([`spec`]),
//! the model file ([`format`]), the int8 arithmetic of QUANT-SPEC.md
//! ([`quant`]), int8 and f16 kernels ([`kernels`]) and the allocation-free
//! engine that plans an arena and runs a model layer by layer ([`engine`]),
//! or conv → BN → pool in bands of rows in a smaller arena ([`band`]).
//!
//! `#![no_std]`: it builds for `thumbv7em-none-eabihf` and
//! `thumbv8m.main-none-eabihf`. The `alloc`/`std` features add host-side
//! conveniences (the model-file writer, `std::error::Error` impls); nothing on
//! the run path ever allocates.
#![no_std]
#![forbid(unsafe_op_in_unsafe_fn)]

#[cfg(feature = "alloc")]
extern crate alloc;
#[cfg(feature = "std")]
extern crate std;

pub mod arena;
pub mod band;
/// The boards: QEMU machine, core, clock, memory map ([`board::BOARDS`]).
pub mod board;
/// Float parameters -> [`model::QuantModel`]: int8 quantization and f16
/// conversion (the host's quantizer and the tests).
#[cfg(feature = "std")]
pub mod convert;
pub mod engine;
pub mod format;
pub mod geometry;
#[cfg(feature = "alloc")]
pub mod host_layouts;
pub mod kernels;
pub mod model;
pub mod numeric;
pub mod protocol;
pub mod quant;
pub mod spec;

pub use half::f16;

//! The desktop side of the toolchain: training, quantization, simulation and
//! reports, built on the layer stack of the `shared` crate.
pub mod checkpoint;
pub mod cli;
pub mod compare;
pub mod data;
pub mod eval;
pub mod flash;
pub mod inspect;
pub mod nn;
pub mod optim;
pub mod predict;
pub mod provenance;
pub mod quantize;
pub mod reference;
pub mod report;
pub mod simulate;
pub mod summary;
pub mod train;

//! The desktop side of the toolchain: training, quantization, simulation and
//! reports, built on the layer stack of the `shared` crate.
pub mod cli;
pub mod data;
pub mod nn;
pub mod optim;
pub mod summary;

//! The desktop side of the toolchain: training, quantization, simulation and
//! reports, built on the layer stack of the `shared` crate.
//!
//! Library modules are named for what they are; [`commands`] holds one thin
//! module per subcommand over them, and nothing else imports from it.
pub mod arch;
pub mod atomic;
pub mod budget;
pub mod checkpoint;
pub mod commands;
pub mod compare;
pub mod data;
pub mod engine_threads;
pub mod eval;
pub mod export;
pub mod flash;
pub mod import;
pub mod model_file;
pub mod nn;
pub mod optim;
pub mod out;
pub mod prediction;
pub mod preprocess;
pub mod provenance;
pub mod quantize;
pub mod reference;
pub mod report;
pub mod runs;
pub mod simulate;
pub mod summary;
pub mod tensor_file;
pub mod train;

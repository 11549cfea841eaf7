//! The `host` command line: one thin module per subcommand that parses its
//! options, calls the library modules and renders the result. Library code
//! never imports from here.
use anyhow::Result;
use clap::{Parser, Subcommand};

pub mod compare;
pub mod dataset;
pub mod eval;
pub mod flash;
pub mod import;
pub mod inspect;
pub mod predict;
pub mod quantize;
pub mod simulate;
pub mod summary;
pub mod train;

/// Train AlexNet on the desktop, quantize it, and run it on a microcontroller.
#[derive(Parser, Debug)]
#[command(name = "host", version, about)]
pub struct Cli {
    #[command(subcommand)]
    pub command: Command,
}

/// The subcommands.
#[derive(Subcommand, Debug)]
pub enum Command {
    /// Print the Keras-style summary of a preset.
    Summary(summary::SummaryArgs),
    /// Build the firmware, run a model file on a board (QEMU) and report its output.
    Flash(flash::FlashArgs),
    /// Train a model (default: alexnet-micro on the embedded shapes; --data DIR for a class-folder set).
    Train(train::TrainArgs),
    /// Loss, accuracy, per-class accuracy and confusion matrix of a checkpoint.
    Eval(eval::EvalArgs),
    /// Classify image files with a checkpoint.
    Predict(predict::PredictArgs),
    /// Dataset tools: export the embedded set to a folder, inspect a folder.
    Dataset(dataset::DatasetArgs),
    /// Quantize a checkpoint to an int8 or f16 model file.
    Quantize(quantize::QuantizeArgs),
    /// Show a model file's layers, quantization, weight and arena bytes.
    Inspect(inspect::InspectArgs),
    /// Run a model file with the shared engine on the desktop (what the firmware runs).
    Simulate(simulate::SimulateArgs),
    /// Import a model trained in Keras or PyTorch (.keras, .h5, weights-only .h5, .onnx) as a checkpoint.
    Import(import::ImportArgs),
    /// Compare quantized model files with the float checkpoint (accuracy, agreement, SQNR).
    Compare(compare::CompareArgs),
}

/// Run one parsed command line.
pub fn run(cli: Cli) -> Result<()> {
    match cli.command {
        Command::Summary(args) => summary::run(&args),
        Command::Flash(args) => flash::run(args),
        Command::Train(args) => train::run(&args),
        Command::Eval(args) => eval::run(&args),
        Command::Predict(args) => predict::run(&args),
        Command::Dataset(args) => dataset::run(&args),
        Command::Quantize(args) => quantize::run(&args),
        Command::Inspect(args) => inspect::run(&args),
        Command::Simulate(args) => simulate::run(&args),
        Command::Compare(args) => compare::run(&args),
        Command::Import(args) => import::run(&args),
    }
}

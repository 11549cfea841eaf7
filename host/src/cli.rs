//! Command-line parsing and dispatch. Each subcommand lives in its own module;
//! this file only wires arguments to them.
use anyhow::{anyhow, Result};
use clap::{Parser, Subcommand};
use shared::spec::Arch;

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
    Summary {
        /// Preset: alexnet (the tutorial's) or alexnet-micro (scaled for a Cortex-M4).
        #[arg(long, default_value = "alexnet")]
        arch: String,
        /// Number of classes.
        #[arg(long, default_value_t = 1000)]
        classes: u32,
        /// Input height and width (default: the preset's).
        #[arg(long)]
        input: Option<u32>,
    },
    /// Build the firmware, run a model file on a board (QEMU) and report its output.
    Flash(crate::flash::FlashArgs),
    /// Train a model (default: alexnet-micro on the embedded shapes; --data DIR for a class-folder set).
    Train(crate::train::TrainArgs),
    /// Loss, accuracy, per-class accuracy and confusion matrix of a checkpoint.
    Eval(crate::eval::EvalArgs),
    /// Classify image files with a checkpoint.
    Predict(crate::predict::PredictArgs),
    /// Dataset tools: export the embedded set to a folder, inspect a folder.
    Dataset(crate::data::DatasetArgs),
    /// Quantize a checkpoint to an int8 or f16 model file.
    Quantize(crate::quantize::QuantizeArgs),
    /// Show a model file's layers, quantization, weight and arena bytes.
    Inspect(crate::inspect::InspectArgs),
    /// Run a model file with the shared engine on the desktop (what the firmware runs).
    Simulate(crate::simulate::SimulateArgs),
    /// Compare quantized model files with the float checkpoint (accuracy, agreement, SQNR).
    Compare(crate::compare::CompareArgs),
}

/// Parse a preset name, listing the valid ones on error.
pub fn parse_arch(name: &str) -> Result<Arch> {
    Arch::from_name(name).ok_or_else(|| {
        let names: Vec<_> = Arch::ALL.iter().map(|a| a.name()).collect();
        anyhow!("unknown --arch {name:?}; choose one of: {}", names.join(", "))
    })
}

/// Run one parsed command line.
pub fn run(cli: Cli) -> Result<()> {
    match cli.command {
        Command::Summary { arch, classes, input } => {
            let arch = parse_arch(&arch)?;
            let input = input.unwrap_or(arch.default_input());
            let model = arch.build(input, classes).map_err(|e| anyhow!("{} at {input}x{input}x3: {e}", arch.name()))?;
            print!("{}", crate::summary::render(&model, arch.name()));
            Ok(())
        }
        Command::Flash(args) => crate::flash::run(args),
        Command::Train(args) => crate::train::run_cli(&args),
        Command::Eval(args) => crate::eval::run_cli(&args),
        Command::Predict(args) => crate::predict::run_cli(&args),
        Command::Dataset(args) => Ok(crate::data::run_cli(&args)?),
        Command::Quantize(args) => crate::quantize::run_cli(&args),
        Command::Inspect(args) => crate::inspect::run_cli(&args),
        Command::Simulate(args) => crate::simulate::run_cli(&args),
        Command::Compare(args) => crate::compare::run_cli(&args),
    }
}

//! The `host` command line: one thin module per subcommand that parses its
//! options, calls the library modules and renders the result. Library code
//! never imports from here.
use anyhow::Result;
use clap::{Parser, Subcommand};

pub mod compare;
pub mod dataset;
pub mod eval;
pub mod export;
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
    /// Refuse models, images and files whose declared sizes need more memory than this
    /// (bytes, or with a K/M/G/T suffix; default: $HOST_MAX_MEMORY, else 8G).
    #[arg(long, global = true, value_parser = crate::budget::parse_size)]
    pub max_memory: Option<u64>,
    /// The float stride-1 3x3 and 5x5 convolutions' arithmetic (training, predict, eval,
    /// calibration): `direct` (im2col + GEMM), `winograd` (F(2x2, 3x3) and F(2x2, 5x5): 2.25x
    /// and 2.8x fewer multiplies, other rounding), `winograd-4x4` (F(4x4, 3x3) and F(4x4, 5x5):
    /// 4x and 6.25x fewer, coarser rounding), or `auto` (per layer, batch and pass, whichever of these ran
    /// fastest when first timed; inference times them in whole forward passes).
    #[arg(long, global = true, value_enum, default_value_t = Conv::Direct)]
    pub conv: Conv,
}

/// `--conv`'s values.
#[derive(clap::ValueEnum, Clone, Copy, Debug, PartialEq, Eq)]
pub enum Conv {
    Direct,
    Winograd,
    #[value(name = "winograd-4x4")]
    Winograd4x4,
    Auto,
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
    /// Import a model trained in Keras or PyTorch (.keras, .h5, weights-only .h5, .onnx) as a checkpoint, or a full-integer .tflite as a model file.
    Import(import::ImportArgs),
    /// Write an int8 model file as a TensorFlow Lite flatbuffer (.tflite).
    Export(export::ExportArgs),
    /// Compare quantized model files with the float checkpoint (accuracy, agreement, SQNR).
    Compare(compare::CompareArgs),
}

/// For the commands that take `--skip-bad` (train, eval): an unreadable
/// image's error says that the option exists. Predict, simulate and flash
/// read the files they are given and have no such option.
pub fn with_skip_bad_hint(e: anyhow::Error) -> anyhow::Error {
    use crate::data::DataError;
    let unreadable = e.chain().any(|c| {
        c.downcast_ref::<DataError>()
            .or_else(|| match c.downcast_ref::<crate::train::TrainError>() {
                Some(crate::train::TrainError::Data(d)) => Some(d),
                _ => None,
            })
            .or_else(|| match c.downcast_ref::<crate::eval::EvalError>() {
                Some(crate::eval::EvalError::Data(d)) => Some(d),
                _ => None,
            })
            .is_some_and(DataError::is_unreadable_image)
    });
    if unreadable {
        anyhow::anyhow!("{e:#} (pass --skip-bad to skip unreadable images)")
    } else {
        e
    }
}

/// Run one parsed command line.
pub fn run(cli: Cli) -> Result<()> {
    if let Some(bytes) = cli.max_memory {
        crate::budget::set_limit(bytes);
    }
    crate::nn::conv::set_algo(match cli.conv {
        Conv::Direct => crate::nn::conv::ConvAlgo::Direct,
        Conv::Winograd => crate::nn::conv::ConvAlgo::Winograd,
        Conv::Winograd4x4 => crate::nn::conv::ConvAlgo::Winograd4x4,
        Conv::Auto => crate::nn::conv::ConvAlgo::Auto,
    });
    let done = match cli.command {
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
        Command::Export(args) => export::run(&args),
    };
    if cli.conv == Conv::Auto {
        // What `auto` timed on this machine and took, layer shape by shape.
        let choices = crate::nn::conv::auto_choices();
        if !choices.is_empty() {
            crate::errln!("--conv auto, as timed on this machine:");
            for n in crate::nn::tune::network_choices() {
                crate::errln!("  {n}");
            }
            for c in &choices {
                crate::errln!("  {c}");
            }
        }
    }
    done
}

//! `host quantize`: calibrate (int8) and quantize a checkpoint into a model
//! file, written atomically and validated by reading it back.
use std::path::PathBuf;

use anyhow::{bail, Context, Result};
use shared::model::Precision;

use crate::checkpoint::Checkpoint;
use crate::quantize::{quantize_checkpoint, write_model_file, Calibration, RangeMethod};

/// The precision of a model file, as `--to` names it.
#[derive(Clone, Copy, Debug, PartialEq, Eq, clap::ValueEnum)]
pub enum Target {
    /// Per-channel int8 weights, int8 activations (TFLite's scheme).
    Int8,
    /// IEEE half-precision weights and activations.
    F16,
}

impl From<Target> for Precision {
    fn from(t: Target) -> Precision {
        match t {
            Target::Int8 => Precision::Int8,
            Target::F16 => Precision::F16,
        }
    }
}

/// `host quantize`'s arguments.
#[derive(clap::Args, Debug, Clone)]
pub struct QuantizeArgs {
    /// The float checkpoint (safetensors from `host train`).
    #[arg(long)]
    pub checkpoint: PathBuf,
    /// Target precision.
    #[arg(long, value_enum)]
    pub to: Target,
    /// Calibration data (default: the data the checkpoint was trained on).
    #[arg(long)]
    pub data: Option<PathBuf>,
    /// Images used to calibrate int8 activation ranges.
    #[arg(long, default_value_t = 256)]
    pub calibration_images: usize,
    /// Calibrate on these `.npy` float32 tensors (in the model's input
    /// units, as `simulate --tensor` takes them) instead of images: for
    /// models that take features, not pictures.
    #[arg(long, num_args = 1.., conflicts_with = "data")]
    pub calibration_tensors: Vec<PathBuf>,
    /// Clip activation ranges to this percentile (e.g. 99.99) instead of min/max.
    #[arg(long)]
    pub percentile: Option<f64>,
    /// Seed that picks the calibration images.
    #[arg(long, default_value_t = 7)]
    pub seed: u64,
    /// The model file to write.
    #[arg(long)]
    pub out: PathBuf,
}

/// Run `host quantize`.
pub fn run(args: &QuantizeArgs) -> Result<()> {
    crate::atomic::refuse_input_as_output("--out", &args.out, &[&args.checkpoint])?;
    let ck = Checkpoint::load_model(&args.checkpoint)?;
    let precision = Precision::from(args.to);
    let method = match args.percentile {
        Some(p) if (50.0..=100.0).contains(&p) => RangeMethod::Percentile(p),
        Some(p) => bail!("--percentile {p} must lie in [50, 100]"),
        None => RangeMethod::MinMax,
    };
    let cal = Calibration {
        data: args.data.as_deref(),
        images: args.calibration_images,
        method,
        seed: args.seed,
        tensors: &args.calibration_tensors,
    };
    let model = quantize_checkpoint(&ck, precision, &cal)
        .with_context(|| format!("quantizing {}", args.checkpoint.display()))?;
    let bytes = write_model_file(&model, &args.out)?;
    let view = model.view();
    let plan = shared::engine::plan(&view);
    crate::outln!(
        "wrote {} ({} model, {} bytes; {} bytes of weights; arena {} bytes); validated by reading it back",
        args.out.display(),
        precision.name(),
        bytes,
        view.weight_bytes(),
        plan.arena_bytes
    )?;
    Ok(())
}

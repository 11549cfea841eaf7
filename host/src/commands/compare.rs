//! `host compare`: quantized model files against their float checkpoint —
//! accuracy, agreement, logit error, per-layer SQNR — failing past the
//! thresholds given, so CI can hold the line.
use std::path::PathBuf;

use anyhow::Result;
use shared::format::AlignedBytes;
use shared::model::QuantModel;

use crate::checkpoint::Checkpoint;
use crate::compare::compare;
use crate::model_file::{parse_model, read_model_file};
use crate::provenance::{open_for_checkpoint, Subset};

/// `host compare`'s arguments.
#[derive(clap::Args, Debug, Clone)]
pub struct CompareArgs {
    /// The float checkpoint.
    #[arg(long)]
    pub checkpoint: PathBuf,
    /// Quantized model files (repeat for int8 and f16).
    #[arg(long = "model", required = true)]
    pub models: Vec<PathBuf>,
    /// Class-folder dataset (default: the checkpoint's own training data, validation split).
    #[arg(long)]
    pub data: Option<PathBuf>,
    /// Which images: val or all (default: val for the training data, all for another folder).
    #[arg(long, value_enum)]
    pub subset: Option<Subset>,
    /// Use at most this many images.
    #[arg(long)]
    pub limit: Option<usize>,
    /// Fail when a model's accuracy is more than this many points below the float model's.
    #[arg(long)]
    pub max_drop: Option<f64>,
    /// Fail when a model's top-1 agreement with the float model is below this fraction (e.g. 0.99).
    #[arg(long)]
    pub min_agreement: Option<f64>,
    /// Print JSON instead of text.
    #[arg(long)]
    pub json: bool,
    /// Where to draw the per-layer SQNR plot (default: sqnr.png beside the first model).
    #[arg(long)]
    pub plot: Option<PathBuf>,
}

/// Run `host compare`.
pub fn run(args: &CompareArgs) -> Result<()> {
    let ck = Checkpoint::load_model(&args.checkpoint)?;
    let files: Vec<(PathBuf, AlignedBytes)> =
        args.models.iter().map(|p| Ok((p.clone(), read_model_file(p)?))).collect::<Result<_>>()?;
    let models: Vec<(PathBuf, QuantModel)> =
        files.iter().map(|(p, b)| Ok((p.clone(), parse_model(b, p)?))).collect::<Result<_>>()?;
    let sel = open_for_checkpoint(&ck, args.data.as_deref(), args.subset)?;
    let mut indices = sel.indices.clone();
    if let Some(n) = args.limit {
        indices.truncate(n);
    }
    let report = compare(&ck, &models, &sel.data, &indices)?;
    let plot = args.plot.clone().unwrap_or_else(|| args.models[0].with_file_name("sqnr.png"));
    let mut inputs: Vec<&std::path::Path> = args.models.iter().map(PathBuf::as_path).collect();
    inputs.push(&args.checkpoint);
    crate::atomic::refuse_input_as_output("--plot", &plot, &inputs)?;
    report.plot(&plot)?;
    if args.json {
        let mut v = serde_json::to_value(&report)?;
        v["sqnr_png"] = serde_json::json!(plot);
        v["data"] = serde_json::json!(sel.data.source.summary());
        v["subset"] = serde_json::json!(sel.subset.name());
        crate::outln!("{}", serde_json::to_string_pretty(&v)?)?;
    } else {
        crate::outln!("on {} ({} split)", sel.data.source.summary(), sel.subset.name())?;
        crate::out!("{}", report.render())?;
        crate::outln!("per-layer SQNR plot: {}", plot.display())?;
    }
    report.check(args.max_drop, args.min_agreement)
}

//! `host eval`: loss, accuracy, per-class accuracy and the confusion matrix
//! of a checkpoint on its validation split or another folder.
use std::path::PathBuf;

use anyhow::{Context, Result};

use crate::checkpoint::Checkpoint;
use crate::eval::evaluate;
use crate::provenance::{open_for_checkpoint, CheckpointData, Subset};

/// `host eval`'s arguments.
#[derive(clap::Args, Debug, Clone)]
pub struct EvalArgs {
    /// Checkpoint (default: runs/latest/best.safetensors, else last.safetensors).
    #[arg(long)]
    pub checkpoint: Option<PathBuf>,
    /// Class-folder dataset (default: the data the checkpoint was trained on).
    #[arg(long)]
    pub data: Option<PathBuf>,
    /// Which images: val (the training run's validation split) or all.
    /// Default: val for the training data, all for another folder.
    #[arg(long, value_enum)]
    pub subset: Option<Subset>,
    #[arg(long, default_value_t = 64)]
    pub batch_size: usize,
    /// Skip unreadable images instead of stopping.
    #[arg(long)]
    pub skip_bad: bool,
    /// Print JSON instead of text.
    #[arg(long)]
    pub json: bool,
    /// Where to draw the confusion matrix (default: confusion.png beside the checkpoint).
    #[arg(long)]
    pub plot: Option<PathBuf>,
}

/// Run `host eval`.
pub fn run(args: &EvalArgs) -> Result<()> {
    let path = crate::runs::checkpoint_or_default(args.checkpoint.as_deref());
    let ck = Checkpoint::load_model(&path)?;
    let mut net = ck.network().with_context(|| format!("checkpoint {}", path.display()))?;
    let CheckpointData { data, subset, indices } = open_for_checkpoint(&ck, args.data.as_deref(), args.subset)?;
    let r = evaluate(&mut net, data.source.clone(), &indices, args.batch_size.max(1), args.skip_bad)
        .map_err(|e| super::with_skip_bad_hint(e.into()))?;
    let plot = args.plot.clone().unwrap_or_else(|| path.with_file_name("confusion.png"));
    crate::atomic::refuse_input_as_output("--plot", &plot, &[&path])?;
    crate::report::plot_confusion(&plot, &r.class_names, &r.confusion)?;
    if args.json {
        let v = serde_json::json!({
            "checkpoint": path, "data": data.source.summary(), "subset": subset.name(),
            "loss": r.loss, "accuracy": r.accuracy, "images": r.images, "class_names": r.class_names,
            "per_class_accuracy": r.per_class_accuracy, "confusion": r.confusion, "skipped": r.skipped,
            "confusion_png": plot,
        });
        crate::outln!("{}", serde_json::to_string_pretty(&v)?)?;
    } else {
        crate::outln!("{} on {} ({} split)", path.display(), data.source.summary(), subset.name())?;
        crate::out!("{}", r.render())?;
        crate::outln!("confusion matrix plot: {}", plot.display())?;
    }
    Ok(())
}

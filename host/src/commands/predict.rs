//! `host predict`: classify image files with a checkpoint, in the tutorial's
//! words, with the top five classes.
use std::path::PathBuf;

use anyhow::Result;

use crate::checkpoint::Checkpoint;
use crate::prediction::predict_files;

/// `host predict`'s arguments.
#[derive(clap::Args, Debug, Clone)]
pub struct PredictArgs {
    /// Checkpoint (default: runs/latest/best.safetensors, else last.safetensors).
    #[arg(long)]
    pub checkpoint: Option<PathBuf>,
    /// Image files (JPEG, PNG, BMP, GIF).
    #[arg(required = true)]
    pub images: Vec<PathBuf>,
    /// Print JSON instead of text.
    #[arg(long)]
    pub json: bool,
}

/// Run `host predict`.
pub fn run(args: &PredictArgs) -> Result<()> {
    let path = crate::runs::checkpoint_or_default(args.checkpoint.as_deref());
    let ck = Checkpoint::load_model(&path)?;
    let mut net = ck.network()?;
    let preds = predict_files(&mut net, &ck.class_names, &args.images)?;
    if args.json {
        crate::outln!("{}", serde_json::to_string_pretty(&preds)?)?;
        return Ok(());
    }
    for (i, p) in preds.iter().enumerate() {
        if preds.len() > 1 {
            if i > 0 {
                crate::outln!()?;
            }
            crate::outln!("{}:", p.path.display())?;
        }
        crate::out!("{}", p.render())?;
    }
    Ok(())
}

//! `host export --tflite OUT.tflite --model M.int8`: our int8 model as a
//! `.tflite` for TensorFlow Lite's interpreter or TFLite Micro, read back
//! through the importer before it is renamed into place.
use std::path::PathBuf;

use anyhow::{Context, Result};

use crate::export::tflite::to_tflite;

/// `host export`'s arguments.
#[derive(clap::Args, Debug, Clone)]
pub struct ExportArgs {
    /// The int8 model file to export.
    #[arg(long)]
    pub model: PathBuf,
    /// Where to write the TensorFlow Lite flatbuffer (atomically).
    #[arg(long)]
    pub tflite: PathBuf,
}

/// Run `host export`.
pub fn run(args: &ExportArgs) -> Result<()> {
    crate::atomic::refuse_input_as_output("--tflite", &args.tflite, &[&args.model])?;
    let bytes = crate::model_file::read_model_file(&args.model)?;
    let model = crate::model_file::parse_model(&bytes, &args.model)?;
    let file = to_tflite(&model).with_context(|| format!("{}: cannot export", args.model.display()))?;
    // Checked before it lands: our own importer must take it back.
    let back = crate::import::tflite::import_tflite_bytes(&file, &args.tflite)
        .with_context(|| format!("{}: the exported file does not read back", args.tflite.display()))?;
    crate::atomic::write_atomic(&args.tflite, &file)?;
    crate::outln!("wrote {} ({} bytes, {} operators, int8)", args.tflite.display(), file.len(), back.operators)?;
    if matches!(
        model.spec.layers().last(),
        Some(shared::spec::Layer::Dense { activation: shared::spec::Activation::Softmax, .. })
    ) {
        crate::outln!(
            "note: the last Dense's softmax is not exported: the .tflite gives the logits, as our engine does"
        )?;
    }
    Ok(())
}

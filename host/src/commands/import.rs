//! `host import`: a model trained in Keras or PyTorch (`.keras`, `.h5`,
//! weights-only `.h5`, `.onnx`) as a checkpoint every other command takes,
//! or a full-integer TensorFlow Lite model (`.tflite`) as a model file.
use std::path::PathBuf;

use anyhow::{anyhow, Context, Result};

use crate::arch::ArchSource;
use crate::import;
use crate::preprocess::{self, Preprocess};

/// `host import`'s arguments.
#[derive(clap::Args, Debug, Clone)]
pub struct ImportArgs {
    /// The model file: .keras, .h5 (full model or weights only), .onnx, or a full-integer .tflite.
    pub file: PathBuf,
    /// Where to write the checkpoint (atomically); for a full-integer .tflite, the int8 model file.
    #[arg(long)]
    pub out: PathBuf,
    /// Class names: a file with one per line, or a comma-separated list (default class_0..class_N-1).
    #[arg(long)]
    pub class_names: Option<String>,
    /// For a weights-only .h5: the stack the weights belong to (a preset or a stack file).
    #[arg(long, value_parser = ArchSource::parse)]
    pub arch: Option<ArchSource>,
    /// With a preset --arch: the number of classes.
    #[arg(long)]
    pub classes: Option<u32>,
    /// With a preset --arch: the input height and width (default: the preset's).
    #[arg(long)]
    pub input: Option<u32>,
    /// The model's input is pixel(0..1) * scale + offset: one value, or one per channel
    /// (comma-separated). Overrides what the file says; ONNX files default to 1 (pixels in [0, 1]).
    #[arg(long, value_delimiter = ',', allow_hyphen_values = true)]
    pub input_scale: Vec<f32>,
    /// See --input-scale (default 0).
    #[arg(long, value_delimiter = ',', allow_hyphen_values = true)]
    pub input_offset: Vec<f32>,
}

impl ImportArgs {
    /// `host import FILE --out OUT` with every other option at its default.
    pub fn new(file: PathBuf, out: PathBuf) -> Self {
        ImportArgs {
            file,
            out,
            class_names: None,
            arch: None,
            classes: None,
            input: None,
            input_scale: Vec::new(),
            input_offset: Vec::new(),
        }
    }
}

/// Run `host import`.
pub fn run(args: &ImportArgs) -> Result<()> {
    crate::atomic::refuse_input_as_output("--out", &args.out, &[&args.file])?;
    let stack = match &args.arch {
        Some(a) => Some(a.build_with(args.input, args.classes).map_err(anyhow::Error::msg)?),
        None => None,
    };
    let mut imported = if import::FileKind::detect(&args.file)? == import::FileKind::Tflite {
        if args.arch.is_some() || args.classes.is_some() || args.input.is_some() {
            anyhow::bail!("--arch, --classes and --input are for weights-only .h5 files; a .tflite carries its graph");
        }
        match import::tflite::import_any(&args.file)? {
            import::tflite::TfliteModel::Int8(lowered) => return write_tflite_int8(args, lowered),
            import::tflite::TfliteModel::Float(imported) => imported,
        }
    } else {
        import::import(&args.file, stack.as_ref().map(|s| (&s.spec, s.name.as_str())))?
    };
    if let Some(s) = &stack {
        if imported.preprocess.is_none() {
            imported.preprocess = s.preprocess.clone();
        }
    }
    if !args.input_scale.is_empty() || !args.input_offset.is_empty() {
        let c = imported.spec.input().channels() as usize;
        imported.preprocess =
            Preprocess::from_lists(&args.input_scale, &args.input_offset, c).map_err(anyhow::Error::msg)?;
    }
    let outputs = imported.spec.output().elements() as usize;
    let names = import::class_names(args.class_names.as_deref(), outputs).map_err(anyhow::Error::msg)?;
    let notes = imported.notes.clone();
    let ck = imported.into_checkpoint(names).map_err(|e| anyhow!("{}: {e}", args.file.display()))?;
    ck.save(&args.out).with_context(|| format!("writing {}", args.out.display()))?;
    crate::out!("{}", crate::summary::render(&ck.spec, &ck.arch))?;
    crate::outln!("input: {}", preprocess::describe(ck.preprocess.as_ref()))?;
    for n in notes {
        crate::outln!("note: {n}")?;
    }
    crate::outln!("classes: {}", ck.class_names.join(", "))?;
    crate::outln!("wrote {}", args.out.display())?;
    Ok(())
}

/// `host import model.tflite --out model.int8`: the converter's int8 model as
/// our model file, its quantization kept.
fn write_tflite_int8(args: &ImportArgs, lowered: import::tflite::Lowered) -> Result<()> {
    let mut model = lowered.model;
    let outputs = model.spec.output().elements() as usize;
    let names = import::class_names(args.class_names.as_deref(), outputs).map_err(anyhow::Error::msg)?;
    model.labels = names.join("\n");
    if !args.input_scale.is_empty() || !args.input_offset.is_empty() {
        let c = model.spec.input().channels() as usize;
        let p = Preprocess::from_lists(&args.input_scale, &args.input_offset, c).map_err(anyhow::Error::msg)?;
        model.preprocess = p.map(|p| p.values().to_vec()).unwrap_or_default();
    }
    let bytes = crate::quantize::write_model_file(&model, &args.out)?;
    crate::out!("{}", crate::summary::render(&model.spec, "tflite (int8)"))?;
    for n in &lowered.notes {
        crate::outln!("note: {n}")?;
    }
    crate::outln!("classes: {}", names.join(", "))?;
    crate::outln!(
        "wrote {} ({bytes} bytes, int8, the converter's scales, zero points and biases)",
        args.out.display()
    )?;
    Ok(())
}

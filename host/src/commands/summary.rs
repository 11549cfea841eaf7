//! `host summary`: the Keras-style table of a preset or a stack file.
use anyhow::Result;

use crate::arch::ArchSource;

/// `host summary`'s arguments.
#[derive(clap::Args, Debug, Clone)]
pub struct SummaryArgs {
    /// Preset: alexnet (the tutorial's), alexnet-micro (scaled for a Cortex-M4) or alexnet-tiny;
    /// or a stack file (a Keras model.to_json() document or a checkpoint's layer JSON).
    #[arg(long, default_value = "alexnet", value_parser = ArchSource::parse)]
    pub arch: ArchSource,
    /// Number of classes (default: 1000 for a preset, the file's for a stack file).
    #[arg(long)]
    pub classes: Option<u32>,
    /// Input height and width (default: the preset's).
    #[arg(long)]
    pub input: Option<u32>,
}

/// Run `host summary`.
pub fn run(args: &SummaryArgs) -> Result<()> {
    // Presets default to the tutorial's 1000 classes; a stack file has its own.
    let classes = args.classes.or(matches!(args.arch, ArchSource::Preset(_)).then_some(1000));
    let stack = args.arch.build_with(args.input, classes).map_err(anyhow::Error::msg)?;
    crate::out!("{}", crate::summary::render(&stack.spec, &stack.name))?;
    crate::outln!("input: {}", crate::preprocess::describe(stack.preprocess.as_ref()))?;
    Ok(())
}

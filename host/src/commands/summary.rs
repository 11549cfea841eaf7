//! `host summary`: the Keras-style table of a preset.
use anyhow::{anyhow, Result};
use shared::spec::Arch;

/// `host summary`'s arguments.
#[derive(clap::Args, Debug, Clone)]
pub struct SummaryArgs {
    /// Preset: alexnet (the tutorial's), alexnet-micro (scaled for a Cortex-M4) or alexnet-tiny.
    #[arg(long, default_value = "alexnet", value_parser = super::parse_arch)]
    pub arch: Arch,
    /// Number of classes.
    #[arg(long, default_value_t = 1000)]
    pub classes: u32,
    /// Input height and width (default: the preset's).
    #[arg(long)]
    pub input: Option<u32>,
}

/// Run `host summary`.
pub fn run(args: &SummaryArgs) -> Result<()> {
    let arch = args.arch;
    let input = args.input.unwrap_or(arch.default_input());
    let model = arch.build(input, args.classes).map_err(|e| anyhow!("{} at {input}x{input}x3: {e}", arch.name()))?;
    print!("{}", crate::summary::render(&model, arch.name()));
    Ok(())
}

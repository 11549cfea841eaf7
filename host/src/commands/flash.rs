//! `host flash`: build the firmware, run a model file on a board (QEMU) and
//! report the device's answer, optionally held to the desktop's bytes.
use std::path::PathBuf;
use std::time::Duration;

use anyhow::Result;

use crate::flash::{flash, Board, FlashOptions};

/// `host flash` command line.
#[derive(clap::Args, Debug, Clone)]
pub struct FlashArgs {
    /// Board: qemu-an386 (Cortex-M4, scaled AlexNet) or qemu-an524 (Cortex-M33, full AlexNet).
    #[arg(long, value_enum, default_value_t = Board::QemuAn386)]
    pub board: Board,
    /// Model file (from `host quantize`).
    #[arg(long)]
    pub model: PathBuf,
    /// Image to classify (decoded, resized and quantized like the training data).
    #[arg(long)]
    pub image: Option<PathBuf>,
    /// Raw model input instead of an image: int8 values, or f16 little-endian, NHWC.
    #[arg(long, conflicts_with = "image")]
    pub input_raw: Option<PathBuf>,
    /// Print `{ "output": [...], "top5": [...], "layers": [...] }` instead of tables.
    #[arg(long)]
    pub json: bool,
    /// Have the device send every layer's full output (checked against its hash; in --json).
    #[arg(long)]
    pub layers: bool,
    /// Also run the model with the desktop engine and require identical bytes
    /// (output and every layer's hash); fails otherwise.
    #[arg(long)]
    pub verify: bool,
    /// Give up on QEMU after this many seconds.
    #[arg(long, default_value_t = 600)]
    pub timeout: u64,
    /// Use this firmware ELF instead of building one.
    #[arg(long)]
    pub elf: Option<PathBuf>,
    /// The firmware crate (default: the one next to this host crate).
    #[arg(long)]
    pub firmware_dir: Option<PathBuf>,
    /// Also save the firmware's raw defmt bytes (decode with `defmt-print -e ELF < FILE`).
    #[arg(long)]
    pub defmt_log: Option<PathBuf>,
    /// Do not print the firmware's decoded log on stderr (`--json` still has it under "log").
    #[arg(long)]
    pub quiet_log: bool,
}

impl FlashArgs {
    /// Validate the command line.
    pub fn options(self) -> Result<FlashOptions> {
        Ok(FlashOptions {
            board: self.board,
            model: self.model,
            image: self.image,
            input_raw: self.input_raw,
            json: self.json,
            layers: self.layers,
            verify: self.verify,
            timeout: Duration::from_secs(self.timeout),
            elf: self.elf,
            firmware_dir: self.firmware_dir,
            defmt_log: self.defmt_log,
            quiet_log: self.quiet_log,
        })
    }
}

/// Run `host flash`.
pub fn run(args: FlashArgs) -> Result<()> {
    flash(&args.options()?)
}

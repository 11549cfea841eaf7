//! `host flash`: build the firmware, run a model file on a board (QEMU, or
//! a board on a desk with `--probe`), send it the inputs in one session and
//! report each answer, optionally held to the desktop's bytes.
use std::path::PathBuf;
use std::time::Duration;

use anyhow::Result;

use crate::flash::{flash, Board, FlashOptions};

/// `host flash` command line.
#[derive(clap::Args, Debug, Clone)]
pub struct FlashArgs {
    /// Board: stm32f405 (STM32F405 through its HAL, QEMU netduinoplus2 or --probe), stm32h743
    /// (NUCLEO-H743ZI, --probe only), rp2350 (Pico 2, --probe only), qemu-an386 (Cortex-M4,
    /// scaled AlexNet) or qemu-an524 (Cortex-M33, full AlexNet).
    #[arg(long, value_enum, default_value_t = Board::QemuAn386)]
    pub board: Board,
    /// Model file (from `host quantize`).
    #[arg(long)]
    pub model: PathBuf,
    /// Images to classify (decoded, resized and quantized like the training data), all in one boot.
    #[arg(long, num_args = 1..)]
    pub image: Vec<PathBuf>,
    /// Raw model inputs instead of images: int8 values, or f16 little-endian, NHWC.
    #[arg(long, num_args = 1.., conflicts_with = "image")]
    pub input_raw: Vec<PathBuf>,
    /// `.npy` input tensors instead of images: int8 in the model's input
    /// quantization, or float32 that it encodes, shaped as the model's input.
    #[arg(long, num_args = 1.., conflicts_with_all = ["image", "input_raw"])]
    pub tensor: Vec<PathBuf>,
    /// Print `{ "output": [...], "top5": [...], "layers": [...] }` instead of tables (an array for several inputs).
    #[arg(long)]
    pub json: bool,
    /// Have the device send every layer's full output (checked against its hash; in --json).
    #[arg(long)]
    pub layers: bool,
    /// Also run the model with the desktop engine and require identical bytes
    /// (output and every layer's hash); fails otherwise.
    #[arg(long)]
    pub verify: bool,
    /// Give up when the device says nothing for this many seconds.
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
    /// A board on a desk: flash the model and the silicon firmware with probe-rs, reset it and
    /// talk over --port (needs probe-rs and a debug probe).
    #[arg(long)]
    pub probe: bool,
    /// The board's serial port, with --probe.
    #[arg(long, default_value = "/dev/ttyACM0", requires = "probe")]
    pub port: PathBuf,
}

impl FlashArgs {
    /// Validate the command line.
    pub fn options(self) -> Result<FlashOptions> {
        Ok(FlashOptions {
            board: self.board,
            model: self.model,
            images: self.image,
            input_raw: self.input_raw,
            tensors: self.tensor,
            json: self.json,
            layers: self.layers,
            verify: self.verify,
            timeout: Duration::from_secs(self.timeout),
            elf: self.elf,
            firmware_dir: self.firmware_dir,
            defmt_log: self.defmt_log,
            quiet_log: self.quiet_log,
            probe: self.probe,
            port: self.port,
        })
    }
}

/// Run `host flash`.
pub fn run(args: FlashArgs) -> Result<()> {
    flash(&args.options()?)
}

//! `host flash`: build the firmware for a board, start it (QEMU today, a
//! probe-rs flasher for real boards later) with a model file and an input
//! loaded at the board's fixed addresses, and decode the result frames the
//! firmware sends over its UART.
//!
//! One module per concern:
//! - [`board`]: `--board` over the shared board table, and the firmware build;
//! - [`qemu`]: the runner (QEMU's command line, scratch folders, time-outs);
//! - [`frames`]: the input blob and the frame stream, through `shared::protocol`
//!   (which the firmware encodes with), into a [`DeviceRun`];
//! - [`defmt`]: the firmware's log;
//! - [`report`]: the [`DeviceReport`] that both the text and `--json` render;
//! - [`verify`]: `--verify`, the device's bytes against the desktop's.
//!
//! `tests/device.rs` holds the two ends together by comparing the device's
//! bytes with the desktop engine's.

pub mod board;
pub mod defmt;
pub mod frames;
pub mod qemu;
pub mod report;
pub mod verify;

pub use board::{build_firmware, default_firmware_dir, Board};
pub use defmt::{decode_defmt, DefmtLog};
pub use frames::{input_blob, DeviceRun, Hello, LayerReport, ModelInfo};
pub use qemu::{run_qemu, ScratchDir};
pub use report::{DeviceReport, LayerRow};
pub use shared::protocol::{fnv1a64, kind, FLAG_LAYER_BYTES, INPUT_HEADER};
pub use verify::verify_against_desktop;

use anyhow::{anyhow, bail, Context, Result};
use shared::model::QuantModel;
use std::path::PathBuf;
use std::time::Duration;

/// The firmware's exit codes (`shared::protocol::exit_code`) as process exit statuses.
pub mod exit_code {
    use shared::protocol::exit_code as code;
    pub const OK: i32 = code::OK as i32;
    pub const BAD_MODEL: i32 = code::BAD_MODEL as i32;
    pub const ARENA_TOO_SMALL: i32 = code::ARENA_TOO_SMALL as i32;
    pub const BAD_INPUT: i32 = code::BAD_INPUT as i32;
    pub const ENGINE: i32 = code::ENGINE as i32;
    pub const PANIC: i32 = code::PANIC as i32;
    pub const FAULT: i32 = code::FAULT as i32;
}

/// Options of `host flash`, validated.
#[derive(Clone, Debug)]
pub struct FlashOptions {
    pub board: Board,
    pub model: PathBuf,
    pub image: Option<PathBuf>,
    pub input_raw: Option<PathBuf>,
    pub json: bool,
    pub layers: bool,
    pub verify: bool,
    pub timeout: Duration,
    pub elf: Option<PathBuf>,
    pub firmware_dir: Option<PathBuf>,
    pub defmt_log: Option<PathBuf>,
    pub quiet_log: bool,
}

/// The model's input bytes for `--image` or `--input-raw`.
fn model_input(opts: &FlashOptions, model: &QuantModel<'_>) -> Result<Vec<u8>> {
    let expected = model.spec.input().elements() as usize * model.precision.activation_bytes();
    let data = match (&opts.input_raw, &opts.image) {
        (Some(raw), _) => std::fs::read(raw).with_context(|| format!("reading {}", raw.display()))?,
        (None, Some(image)) => crate::model_file::image_input(model, image)?,
        (None, None) => bail!("give --image IMAGE or --input-raw FILE"),
    };
    if data.len() != expected {
        bail!(
            "the input has {} bytes, the model takes {} ({} {} values of shape {})",
            data.len(),
            expected,
            model.spec.input().elements(),
            model.precision.name(),
            model.spec.input()
        );
    }
    Ok(data)
}

/// `host flash`.
pub fn flash(opts: &FlashOptions) -> Result<()> {
    // Validated here exactly as the firmware will, so a bad file fails before QEMU starts.
    let model_bytes = crate::model_file::read_model_file(&opts.model)?;
    let model = crate::model_file::parse_model(&model_bytes, &opts.model)?;
    if model_bytes.len() as u64 > opts.board.model_capacity() {
        bail!(
            "the model has {} bytes; {}'s model region holds {}",
            model_bytes.len(),
            opts.board.name(),
            opts.board.model_capacity()
        );
    }
    let data = model_input(opts, &model)?;
    let elf = match &opts.elf {
        Some(e) => e.clone(),
        None => build_firmware(opts.board, opts.firmware_dir.as_deref().unwrap_or(&default_firmware_dir()))?,
    };
    // A folder of this flash's own: another flash in this process must not
    // delete the input blob under it.
    let dir = ScratchDir::new("host-flash")?;
    let blob = dir.path().join("input.axin");
    std::fs::write(&blob, input_blob(&data, opts.layers)?).with_context(|| format!("writing {}", blob.display()))?;
    let run = run_qemu(opts.board, &elf, &opts.model, &blob, opts.timeout, opts.defmt_log.as_deref())?;
    drop(dir);
    // Before the success check: a failed run's log says why.
    if !opts.quiet_log {
        for line in &run.log {
            eprintln!("device: {line}");
        }
        for w in &run.log_warnings {
            eprintln!("warning: device log: {w}");
        }
    }
    run.ensure_success()?;
    for l in &run.layers {
        if let Some(b) = &l.bytes {
            if fnv1a64(b) != l.fnv {
                bail!("layer {}: the bytes received do not match the hash the device computed", l.index);
            }
        }
    }
    run.output.as_ref().ok_or_else(|| anyhow!("no output frame"))?;
    if opts.verify {
        verify_against_desktop(&model, &data, &run)?;
        if !opts.json {
            println!(
                "verified: the device's output and all {} layer hashes equal the desktop engine's",
                run.layers.len()
            );
        }
    }
    let report = DeviceReport::new(&run, &model, opts.image.as_deref().unwrap_or(&opts.model), opts.layers)?;
    if opts.json {
        println!("{}", serde_json::to_string_pretty(&report.to_json())?);
    } else {
        print!("{}", report.render_text());
    }
    Ok(())
}

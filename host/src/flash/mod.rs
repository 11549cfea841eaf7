//! `host flash`: build the firmware for a board, start it with a model file
//! in its model region (QEMU; or flashed with probe-rs on a board on a
//! desk), send it the inputs over its serial port in one session, and
//! decode its answers.
//!
//! One module per concern:
//! - [`board`]: `--board` over the shared board table, and the firmware build;
//! - [`session`]: the session over a serial link (boot, requests, answers),
//!   through `shared::protocol` (which the firmware speaks too);
//! - [`qemu`]: the emulated board (QEMU's command line, its UART socket,
//!   scratch folders, time-outs);
//! - [`probe`]: a board on a desk (probe-rs, the serial port);
//! - [`frames`]: the device's frames as owned replies and a [`DeviceRun`];
//! - [`defmt`]: the firmware's log;
//! - [`report`]: the [`DeviceReport`] that both the text and `--json` render;
//! - [`verify`]: `--verify`, the device's bytes against the desktop's.
//!
//! `tests/device.rs` holds the two ends together by comparing the device's
//! bytes with the desktop engine's.

pub mod board;
pub mod defmt;
pub mod frames;
pub mod probe;
pub mod qemu;
pub mod report;
pub mod session;
pub mod verify;

pub use board::{build_firmware, build_firmware_for, build_firmware_with, default_firmware_dir, Board, Build};
pub use defmt::{decode_defmt, DefmtLog};
pub use frames::{DeviceRun, Hello, LayerReport, ModelInfo, Reply};
pub use probe::{flash_and_serve, ProbeRs};
pub use qemu::{run_qemu, ScratchDir};
pub use report::{DeviceReport, LayerRow};
pub use session::{run_session, Answer, DeviceSession, Link, Step};
pub use shared::protocol::{fnv1a64, kind, FLAG_LAYER_BYTES};
pub use verify::verify_against_desktop;

use anyhow::{bail, Context, Result};
use shared::model::QuantModel;
use std::path::{Path, PathBuf};
use std::time::Duration;

/// The firmware's exit codes (`shared::protocol::exit_code`) as process exit statuses.
pub mod exit_code {
    use shared::protocol::exit_code as code;
    pub const OK: i32 = code::OK as i32;
    pub const BAD_MODEL: i32 = code::BAD_MODEL as i32;
    pub const ARENA_TOO_SMALL: i32 = code::ARENA_TOO_SMALL as i32;
    pub const BAD_INPUT: i32 = code::BAD_INPUT as i32;
    pub const ENGINE: i32 = code::ENGINE as i32;
    pub const BAD_REQUEST: i32 = code::BAD_REQUEST as i32;
    pub const PANIC: i32 = code::PANIC as i32;
    pub const FAULT: i32 = code::FAULT as i32;
}

/// Options of `host flash`, validated.
#[derive(Clone, Debug)]
pub struct FlashOptions {
    pub board: Board,
    pub model: PathBuf,
    /// Images to classify, in one session.
    pub images: Vec<PathBuf>,
    /// Raw model inputs, in one session (instead of images).
    pub input_raw: Vec<PathBuf>,
    /// `.npy` input tensors, in one session (instead of images).
    pub tensors: Vec<PathBuf>,
    pub json: bool,
    pub layers: bool,
    pub verify: bool,
    pub timeout: Duration,
    pub elf: Option<PathBuf>,
    pub firmware_dir: Option<PathBuf>,
    pub defmt_log: Option<PathBuf>,
    pub quiet_log: bool,
    /// A board on a desk: flash with probe-rs and talk over `port`.
    pub probe: bool,
    pub port: PathBuf,
}

/// The model's input bytes for each `--image`, `--tensor` or `--input-raw`, with the
/// path that names it.
fn model_inputs(opts: &FlashOptions, model: &QuantModel<'_>) -> Result<Vec<(PathBuf, Vec<u8>)>> {
    crate::model_file::check_runnable(model).with_context(|| opts.model.display().to_string())?;
    let expected = model.spec.input().elements() as usize * model.precision.activation_bytes();
    let mut inputs = Vec::new();
    for raw in &opts.input_raw {
        inputs.push((raw.clone(), std::fs::read(raw).with_context(|| format!("reading {}", raw.display()))?));
    }
    for tensor in &opts.tensors {
        inputs.push((tensor.clone(), crate::tensor_file::read_input(tensor, model)?));
    }
    for image in &opts.images {
        inputs.push((image.clone(), crate::model_file::image_input(model, image)?));
    }
    if inputs.is_empty() {
        bail!("give --image IMAGE..., --tensor FILE.npy... or --input-raw FILE...");
    }
    for (path, data) in &inputs {
        if data.len() != expected {
            bail!(
                "{}: the input has {} bytes, the model takes {} ({} {} values of shape {})",
                path.display(),
                data.len(),
                expected,
                model.spec.input().elements(),
                model.precision.name(),
                model.spec.input()
            );
        }
    }
    Ok(inputs)
}

/// Refuse a model whose run would not fit `board`'s RAM (the banded plan
/// the firmware runs, its stack region and static data), before anything is
/// built or flashed.
pub fn check_ram(board: Board, model: &QuantModel<'_>) -> Result<shared::board::RamUse> {
    let plan = shared::band::plan_banded(model, shared::band::InputRows::Resident);
    let ram = board.spec().ram_use(plan.arena_bytes as u64);
    if !ram.fits() {
        bail!("the model does not fit {}: {ram}", board.name());
    }
    Ok(ram)
}

/// `host flash`.
pub fn flash(opts: &FlashOptions) -> Result<()> {
    // Validated here exactly as the firmware will, so a bad file fails before the device starts.
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
    check_ram(opts.board, &model)?;
    let inputs = model_inputs(opts, &model)?;
    let build = if opts.probe { Build::Silicon } else { Build::Qemu };
    let elf = match &opts.elf {
        Some(e) => e.clone(),
        None => build_firmware_for(opts.board, build, opts.firmware_dir.as_deref().unwrap_or(&default_firmware_dir()))?,
    };
    // Each input twice: with its layers' reports (checked against the
    // desktop), then quiet, for the inference's own ticks.
    let steps: Vec<Step<'_>> = inputs
        .iter()
        .flat_map(|(_, data)| [Step::Run { input: data, layer_bytes: opts.layers }, Step::Time { input: data }])
        .collect();
    let session = if opts.probe {
        flash_and_serve(&ProbeRs::default(), opts.board, &elf, &opts.model, &opts.port, &steps, opts.timeout)?
    } else {
        run_qemu(opts.board, &elf, &opts.model, &steps, opts.timeout, opts.defmt_log.as_deref())?
    };
    // Before the success checks: a failed run's log says why.
    if !opts.quiet_log {
        for line in &session.log {
            crate::errln!("device: {line}");
        }
        for w in &session.log_warnings {
            crate::errln!("warning: device log: {w}");
        }
    }
    if session.answers.is_empty() {
        session.boot_run().ensure_success()?;
    }
    let mut json = Vec::new();
    for (i, (path, data)) in inputs.iter().enumerate() {
        let mut run = session.run(2 * i).with_context(|| format!("{}: the device sent no answer", path.display()))?;
        let timed =
            session.run(2 * i + 1).with_context(|| format!("{}: no answer to the timed run", path.display()))?;
        timed.ensure_success().with_context(|| format!("{}: the timed run", path.display()))?;
        // A firmware without FLAG_QUIET reports its layers: then its ticks
        // count the reports too, and the reported run's stand.
        if timed.layers.is_empty() {
            run.quiet = timed.output;
        }
        report_one(opts, &model, path, data, &run, &mut json).with_context(|| path.display().to_string())?;
    }
    if opts.json {
        let out = if json.len() == 1 { json.remove(0) } else { serde_json::Value::Array(json) };
        crate::outln!("{}", serde_json::to_string_pretty(&out)?)?;
    } else if inputs.len() > 1 {
        crate::outln!("{} inputs in one boot of {}", inputs.len(), opts.board.name())?;
    }
    Ok(())
}

/// Check, verify and print (or collect for `--json`) one input's answer.
fn report_one(
    opts: &FlashOptions,
    model: &QuantModel<'_>,
    path: &Path,
    data: &[u8],
    run: &DeviceRun,
    json: &mut Vec<serde_json::Value>,
) -> Result<()> {
    run.ensure_success()?;
    for l in &run.layers {
        if let Some(b) = &l.bytes {
            if fnv1a64(b) != l.fnv {
                bail!("layer {}: the bytes received do not match the hash the device computed", l.index);
            }
        }
    }
    if opts.verify {
        verify_against_desktop(model, data, run)?;
        if !opts.json {
            crate::outln!(
                "verified: the device's output and all {} layer hashes equal the desktop engine's",
                run.layers.len()
            )?;
        }
    }
    let report = DeviceReport::new(run, model, path, opts.layers)?;
    if opts.json {
        json.push(report.to_json());
    } else {
        crate::out!("{}", report.render_text())?;
    }
    Ok(())
}

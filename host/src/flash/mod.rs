//! `host flash`: build the firmware for a board, start it (QEMU today, a
//! probe-rs flasher for real boards later) with a model file and an input
//! loaded at the board's fixed addresses, and decode the result frames the
//! firmware sends over its UART.
//!
//! The frame format and the input blob are defined by `firmware/src/frame.rs`
//! and `firmware/src/main.rs`; this file is their host half. Both sides are
//! held together by `tests/device.rs`, which compares the device's bytes
//! with the desktop engine's.

use anyhow::{anyhow, bail, Context, Result};
use shared::engine;
use shared::model::QuantModel;
use std::io::Read;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

/// The boards the firmware supports. The addresses must match
/// `firmware/memory/<board>.x`; the firmware echoes its own in the HELLO
/// frame and [`DeviceRun::check_addresses`] compares them.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Board {
    /// QEMU `mps2-an386`: Cortex-M4F, 4 MiB code SSRAM, for the scaled AlexNet.
    QemuAn386,
    /// QEMU `mps3-an524`: Cortex-M33 with 2 GiB DDR, for the full AlexNet.
    QemuAn524,
}

impl Board {
    /// All boards, for help texts.
    pub const ALL: [Board; 2] = [Board::QemuAn386, Board::QemuAn524];

    /// Command-line name, also the firmware's cargo feature.
    pub fn name(self) -> &'static str {
        match self {
            Board::QemuAn386 => "qemu-an386",
            Board::QemuAn524 => "qemu-an524",
        }
    }

    /// Parse a command-line name.
    pub fn from_name(name: &str) -> Result<Board> {
        Board::ALL.into_iter().find(|b| b.name() == name).ok_or_else(|| {
            let names: Vec<_> = Board::ALL.iter().map(|b| b.name()).collect();
            anyhow!("unknown --board {name:?}; choose one of: {}", names.join(", "))
        })
    }

    /// The Rust target of the board's core.
    pub fn target(self) -> &'static str {
        match self {
            Board::QemuAn386 => "thumbv7em-none-eabihf",
            Board::QemuAn524 => "thumbv8m.main-none-eabihf",
        }
    }

    fn machine(self) -> (&'static str, &'static str) {
        match self {
            Board::QemuAn386 => ("mps2-an386", "cortex-m4"),
            Board::QemuAn524 => ("mps3-an524", "cortex-m33"),
        }
    }

    /// Where the model file is loaded (the `MODEL` region of memory.x).
    pub fn model_addr(self) -> u32 {
        match self {
            Board::QemuAn386 => 0x0010_0000,
            Board::QemuAn524 => 0x6000_0000,
        }
    }

    /// Size of the model region.
    pub fn model_capacity(self) -> u64 {
        match self {
            Board::QemuAn386 => 3 << 20,
            Board::QemuAn524 => 256 << 20,
        }
    }

    /// Where the input blob is loaded (the `INPUT` region of memory.x).
    pub fn input_addr(self) -> u32 {
        match self {
            Board::QemuAn386 => 0x2100_0000,
            Board::QemuAn524 => 0x7000_0000,
        }
    }
}

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

/// The firmware crate, as this host binary was built next to it.
pub fn default_firmware_dir() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("..").join("firmware")
}

/// `cargo build --release` the firmware for `board`; returns the ELF path.
///
/// The target directory is given explicitly so that the ELF's place does not
/// depend on a CARGO_TARGET_DIR the caller may have set for the workspace.
pub fn build_firmware(board: Board, firmware_dir: &Path) -> Result<PathBuf> {
    let target_dir = firmware_dir.join("target");
    let status = Command::new(std::env::var_os("CARGO").unwrap_or_else(|| "cargo".into()))
        .current_dir(firmware_dir)
        .args(["build", "--release", "--target", board.target(), "--no-default-features", "--features"])
        .arg(board.name())
        .arg("--target-dir")
        .arg(&target_dir)
        // Flags meant for the host workspace must not leak into a thumb build.
        .env_remove("RUSTFLAGS")
        .env_remove("CARGO_ENCODED_RUSTFLAGS")
        .env_remove("CARGO_BUILD_TARGET")
        .stdin(Stdio::null())
        .status()
        .with_context(|| format!("running cargo in {}", firmware_dir.display()))?;
    if !status.success() {
        bail!("building the firmware for {} failed ({status})", board.name());
    }
    let elf = target_dir.join(board.target()).join("release").join("firmware");
    if !elf.is_file() {
        bail!("cargo succeeded but {} is missing", elf.display());
    }
    Ok(elf)
}

pub use shared::protocol::{fnv1a64, kind, FLAG_LAYER_BYTES, INPUT_HEADER};
use shared::protocol::{CRC32, FRAME_HEADER, FRAME_MAGIC, INPUT_MAGIC, INPUT_VERSION};

/// Wrap raw model-input bytes (int8 values, or f16 little-endian) in the
/// blob the firmware reads: `b"AXIN"`, version 1, flags, length, 0.
pub fn input_blob(data: &[u8], layer_bytes: bool) -> Result<Vec<u8>> {
    let len = u32::try_from(data.len()).map_err(|_| anyhow!("input of {} bytes is too large", data.len()))?;
    let mut blob = Vec::with_capacity(INPUT_HEADER + data.len());
    blob.extend_from_slice(&INPUT_MAGIC);
    blob.extend_from_slice(&INPUT_VERSION.to_le_bytes());
    blob.extend_from_slice(&(if layer_bytes { FLAG_LAYER_BYTES } else { 0 }).to_le_bytes());
    blob.extend_from_slice(&len.to_le_bytes());
    blob.extend_from_slice(&0u32.to_le_bytes());
    blob.extend_from_slice(data);
    Ok(blob)
}

/// One CRC-checked frame.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Frame {
    pub kind: u8,
    pub payload: Vec<u8>,
}

/// Split a UART byte stream into frames. Bytes outside valid frames (noise,
/// a frame cut short by a crash) are skipped and counted, never trusted.
pub fn decode_frames(stream: &[u8]) -> (Vec<Frame>, usize) {
    let mut frames = Vec::new();
    let mut skipped = 0;
    let mut i = 0;
    while i < stream.len() {
        let rest = &stream[i..];
        if let Some(frame) = try_frame(rest) {
            i += FRAME_HEADER + frame.payload.len() + 4;
            frames.push(frame);
        } else {
            i += 1;
            skipped += 1;
        }
    }
    (frames, skipped)
}

fn try_frame(b: &[u8]) -> Option<Frame> {
    if b.len() < FRAME_HEADER + 4 || b[..2] != FRAME_MAGIC {
        return None;
    }
    let len = u32::from_le_bytes(b[4..8].try_into().ok()?) as usize;
    let end = 8usize.checked_add(len)?;
    let crc = u32::from_le_bytes(b.get(end..end + 4)?.try_into().ok()?);
    (CRC32.checksum(&b[2..end]) == crc).then(|| Frame { kind: b[2], payload: b[8..end].to_vec() })
}

fn u32_at(p: &[u8], at: usize) -> Result<u32> {
    Ok(u32::from_le_bytes(p.get(at..at + 4).ok_or_else(|| anyhow!("short frame"))?.try_into()?))
}

fn u64_at(p: &[u8], at: usize) -> Result<u64> {
    Ok(u64::from_le_bytes(p.get(at..at + 8).ok_or_else(|| anyhow!("short frame"))?.try_into()?))
}

/// The HELLO frame: who is talking.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Hello {
    pub protocol: u16,
    pub cpu_hz: u32,
    pub arena_capacity: u32,
    pub model_addr: u32,
    pub input_addr: u32,
    pub board: String,
}

/// The MODEL frame: what the firmware made of the model file.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ModelInfo {
    pub precision: u8,
    pub layers: u8,
    pub model_len: u32,
    pub arena_needed: u32,
    pub input_len: u32,
}

/// One LAYER frame.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct LayerReport {
    pub index: u32,
    /// SysTick ticks between the engine's layer_start and layer_done.
    pub ticks: u64,
    pub output_len: u32,
    pub fnv: u64,
    /// The output bytes, when requested (`--layers`).
    pub bytes: Option<Vec<u8>>,
}

/// Everything one device run produced.
#[derive(Clone, Debug, Default)]
pub struct DeviceRun {
    /// QEMU's exit status (the firmware's semihosting exit code).
    pub exit_code: Option<i32>,
    pub hello: Option<Hello>,
    pub model: Option<ModelInfo>,
    pub layers: Vec<LayerReport>,
    /// Ticks of the whole `engine::run` call, and the output tensor bytes.
    pub output: Option<(u64, Vec<u8>)>,
    /// The firmware's ERROR frame: exit code and message.
    pub error: Option<(u8, String)>,
    /// The DONE frame's code.
    pub done: Option<u8>,
    /// Frames of kinds this host does not know (a newer firmware).
    pub unknown_frames: usize,
    /// Stack bytes the firmware used (painted high-water mark, STATS frame).
    pub stack_used: Option<u32>,
    /// UART bytes that were not part of a valid frame.
    pub skipped_bytes: usize,
    /// QEMU's own diagnostics.
    pub stderr: String,
    /// The firmware's defmt log, decoded with the ELF's `.defmt` table: one
    /// `"LEVEL message"` string per `defmt::info!`/`error!`, in order. The
    /// frames carry results; this is the firmware's own account of its run,
    /// the first place to look when a run fails.
    pub log: Vec<String>,
    /// Why [`log`](Self::log) may be incomplete (no `.defmt` table, garbled
    /// or cut-short frames). A log that cannot be decoded must not fail a run
    /// whose result frames are fine, so these are warnings, not errors.
    pub log_warnings: Vec<String>,
}

impl DeviceRun {
    /// Decode a UART stream into a run report.
    pub fn from_stream(stream: &[u8]) -> Result<DeviceRun> {
        let (frames, skipped_bytes) = decode_frames(stream);
        let mut run = DeviceRun { skipped_bytes, ..DeviceRun::default() };
        for f in frames {
            let p = &f.payload;
            match f.kind {
                kind::HELLO => {
                    run.hello = Some(Hello {
                        protocol: u16::from_le_bytes([p.first().copied().unwrap_or(0), p.get(1).copied().unwrap_or(0)]),
                        cpu_hz: u32_at(p, 4)?,
                        arena_capacity: u32_at(p, 8)?,
                        model_addr: u32_at(p, 12)?,
                        input_addr: u32_at(p, 16)?,
                        board: String::from_utf8_lossy(p.get(20..).unwrap_or_default()).into_owned(),
                    })
                }
                kind::MODEL => {
                    run.model = Some(ModelInfo {
                        precision: *p.first().ok_or_else(|| anyhow!("short MODEL frame"))?,
                        layers: *p.get(1).ok_or_else(|| anyhow!("short MODEL frame"))?,
                        model_len: u32_at(p, 4)?,
                        arena_needed: u32_at(p, 8)?,
                        input_len: u32_at(p, 12)?,
                    })
                }
                kind::LAYER => {
                    let output_len = u32_at(p, 12)?;
                    let bytes = (p.len() > 24).then(|| p[24..].to_vec());
                    run.layers.push(LayerReport {
                        index: u32_at(p, 0)?,
                        ticks: u64_at(p, 4)?,
                        output_len,
                        fnv: u64_at(p, 16)?,
                        bytes,
                    });
                }
                kind::OUTPUT => run.output = Some((u64_at(p, 0)?, p[8..].to_vec())),
                kind::ERROR => {
                    let code = *p.first().ok_or_else(|| anyhow!("short ERROR frame"))?;
                    run.error = Some((code, String::from_utf8_lossy(&p[1..]).into_owned()));
                }
                kind::DONE => run.done = p.first().copied(),
                kind::STATS => run.stack_used = Some(u32_at(p, 0)?),
                // A newer firmware's frame: not ours to judge, keep going.
                _ => run.unknown_frames += 1,
            }
        }
        Ok(run)
    }

    /// Instructions a SysTick tick stands for under `-icount shift=0`
    /// (1 ns per instruction): 1e9 / CPU_HZ.
    pub fn instructions(&self, ticks: u64) -> Option<u64> {
        let hz = self.hello.as_ref()?.cpu_hz as u64;
        (hz > 0).then(|| (ticks as u128 * 1_000_000_000 / hz as u128) as u64)
    }

    /// The firmware's addresses must be the ones the host loaded at.
    pub fn check_addresses(&self, board: Board) -> Result<()> {
        if let Some(h) = &self.hello {
            if h.model_addr != board.model_addr() || h.input_addr != board.input_addr() {
                bail!(
                    "firmware expects the model at {:#x} and the input at {:#x}, the host loaded them at {:#x} and {:#x}: \
                     firmware/memory/{}.x and host/src/flash.rs disagree",
                    h.model_addr,
                    h.input_addr,
                    board.model_addr(),
                    board.input_addr(),
                    board.name()
                );
            }
        }
        Ok(())
    }

    /// Ok when the firmware ran the model to the end; otherwise its error.
    pub fn ensure_success(&self) -> Result<()> {
        if let Some((code, msg)) = &self.error {
            bail!("the firmware stopped with exit code {code}: {msg}");
        }
        match (self.exit_code, &self.output) {
            (Some(0), Some(_)) => Ok(()),
            (code, _) => {
                bail!("the firmware exited with {code:?} without an output frame; QEMU said: {}", self.stderr.trim())
            }
        }
    }
}

/// The firmware's defmt log lines and the problems met decoding them.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct DefmtLog {
    /// One `"LEVEL message"` per decoded frame (as `defmt-print` shows it, uncoloured).
    pub lines: Vec<String>,
    /// What could not be decoded, and why.
    pub warnings: Vec<String>,
}

/// Decode the raw defmt bytes the firmware wrote over semihosting, with the
/// format strings of `elf`'s `.defmt` table (the bytes carry only indices
/// into it, so the very ELF that ran is needed).
///
/// Never fails and never panics: a broken log must not hide the result
/// frames, so every problem becomes a warning. The encoding (rzcobs, defmt's
/// default, or raw) is the one the table records. Garbled rzcobs frames are
/// skipped and counted (the encoding resynchronises on the next zero byte);
/// a raw stream cannot resynchronise, so decoding stops at the first bad frame.
pub fn decode_defmt(elf: &[u8], stream: &[u8]) -> DefmtLog {
    let mut log = DefmtLog::default();
    if stream.is_empty() {
        return log;
    }
    let table = match defmt_decoder::Table::parse(elf) {
        Ok(Some(t)) => t,
        Ok(None) => {
            log.warnings.push(format!(
                "{} bytes of defmt log, but the ELF has no .defmt section to decode them with",
                stream.len()
            ));
            return log;
        }
        Err(e) => {
            log.warnings.push(format!("cannot read the ELF's defmt table: {e:#}"));
            return log;
        }
    };
    let encoding = table.encoding();
    // The decoder has `unwrap`s and `panic!`s on its formatting paths; a log
    // line is not worth a crash, so a panic ends decoding with a warning.
    let decoded = std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| {
        let mut lines = Vec::new();
        let mut malformed = 0usize;
        let mut decoder = table.new_stream_decoder();
        decoder.received(stream);
        loop {
            match decoder.decode() {
                Ok(frame) => lines.push(frame.display(false).to_string()),
                Err(defmt_decoder::DecodeError::UnexpectedEof) => break,
                Err(defmt_decoder::DecodeError::Malformed) => {
                    malformed += 1;
                    if !encoding.can_recover() {
                        break;
                    }
                }
            }
        }
        (lines, malformed)
    }));
    match decoded {
        Ok((lines, malformed)) => {
            log.lines = lines;
            if malformed > 0 {
                let what = if encoding.can_recover() { "skipped" } else { "stopped at" };
                log.warnings.push(format!("{what} {malformed} malformed defmt frame(s) ({encoding:?} encoding)"));
            }
        }
        Err(_) => log.warnings.push("the defmt decoder panicked on this log; no lines decoded".into()),
    }
    // rzcobs frames end with a zero byte: anything after the last one is a
    // frame the firmware did not finish (it stopped mid-write).
    if encoding == defmt_decoder::Encoding::Rzcobs {
        let tail = stream.len() - stream.iter().rposition(|&b| b == 0).map_or(0, |i| i + 1);
        if tail > 0 {
            log.warnings.push(format!("the defmt log ends with an unfinished frame ({tail} bytes)"));
        }
    }
    log
}

/// Start QEMU with `elf`, the model file and the input blob, wait at most
/// `timeout`, and decode what came out of the UART and the defmt log
/// ([`DeviceRun::log`]).
///
/// The UART goes to a file and QEMU's stdout carries the semihosting output
/// (the defmt log): QEMU 7.2 sends a guest's `:tt` writes to its own stdout
/// whatever `-semihosting-config chardev=` says, so the two cannot share it.
/// A missing qemu-system-arm is an error with the install hint, never a skip.
pub fn run_qemu(
    board: Board,
    elf: &Path,
    model: &Path,
    input_blob: &Path,
    timeout: Duration,
    defmt_log: Option<&Path>,
) -> Result<DeviceRun> {
    static RUNS: std::sync::atomic::AtomicUsize = std::sync::atomic::AtomicUsize::new(0);
    let n = RUNS.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
    let dir = std::env::temp_dir().join(format!("host-qemu-{}-{n}", std::process::id()));
    std::fs::create_dir_all(&dir).with_context(|| format!("creating {}", dir.display()))?;
    let uart = dir.join("uart.bin");
    let result = run_qemu_in(board, elf, model, input_blob, timeout, &uart);
    let _ = std::fs::remove_dir_all(&dir);
    let (mut run, defmt, status) = result?;
    if let Some(path) = defmt_log {
        std::fs::write(path, &defmt).with_context(|| format!("writing {}", path.display()))?;
    }
    let log = match std::fs::read(elf) {
        Ok(elf_bytes) => decode_defmt(&elf_bytes, &defmt),
        Err(e) => DefmtLog {
            lines: Vec::new(),
            warnings: vec![format!("cannot read {} to decode the defmt log: {e}", elf.display())],
        },
    };
    (run.log, run.log_warnings) = (log.lines, log.warnings);
    match status {
        // A hung firmware's last log lines say where it got to.
        None => bail!(
            "QEMU did not finish within {:.0} s (firmware hung?); {} layer frames received{}{}",
            timeout.as_secs_f64(),
            run.layers.len(),
            run.error.as_ref().map(|(c, m)| format!(", error {c}: {m}")).unwrap_or_default(),
            run.log.last().map(|l| format!("; last device log line: {l}")).unwrap_or_default()
        ),
        Some(s) => run.exit_code = s.code(),
    }
    run.check_addresses(board)?;
    Ok(run)
}

fn run_qemu_in(
    board: Board,
    elf: &Path,
    model: &Path,
    input_blob: &Path,
    timeout: Duration,
    uart: &Path,
) -> Result<(DeviceRun, Vec<u8>, Option<std::process::ExitStatus>)> {
    let (machine, cpu) = board.machine();
    let mut cmd = Command::new("qemu-system-arm");
    cmd.args(["-machine", machine, "-cpu", cpu, "-nographic", "-monitor", "none"])
        .arg("-serial")
        .arg(format!("file:{}", uart.display()))
        // Instruction-exact virtual time: SysTick ticks become instruction counts.
        .args(["-icount", "shift=0"])
        .args(["-semihosting-config", "enable=on,target=native"])
        .arg("-kernel")
        .arg(elf)
        .arg("-device")
        .arg(format!("loader,file={},addr={:#x}", model.display(), board.model_addr()))
        .arg("-device")
        .arg(format!("loader,file={},addr={:#x}", input_blob.display(), board.input_addr()))
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped());
    let mut child = cmd.spawn().map_err(|e| {
        if e.kind() == std::io::ErrorKind::NotFound {
            anyhow!("qemu-system-arm is not installed: run scripts/setup.sh (Debian package qemu-system-arm)")
        } else {
            anyhow!("starting qemu-system-arm: {e}")
        }
    })?;
    let mut stdout = child.stdout.take().ok_or_else(|| anyhow!("no stdout pipe"))?;
    let mut stderr = child.stderr.take().ok_or_else(|| anyhow!("no stderr pipe"))?;
    let out_reader = std::thread::spawn(move || {
        let mut buf = Vec::new();
        let _ = stdout.read_to_end(&mut buf);
        buf
    });
    let err_reader = std::thread::spawn(move || {
        let mut buf = String::new();
        let _ = stderr.read_to_string(&mut buf);
        buf
    });
    let deadline = Instant::now() + timeout;
    let status = loop {
        if let Some(status) = child.try_wait()? {
            break Some(status);
        }
        if Instant::now() >= deadline {
            let _ = child.kill();
            let _ = child.wait();
            break None;
        }
        std::thread::sleep(Duration::from_millis(20));
    };
    let defmt = out_reader.join().map_err(|_| anyhow!("stdout reader thread panicked"))?;
    let qemu_stderr = err_reader.join().map_err(|_| anyhow!("stderr reader thread panicked"))?;
    let stream = std::fs::read(uart).unwrap_or_default();
    let mut run = DeviceRun::from_stream(&stream)?;
    run.stderr = qemu_stderr;
    Ok((run, defmt, status))
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

/// Run `model` on the desktop and require the device's bytes: the output
/// tensor and the FNV-1a of every layer (and the layer bytes when sent).
pub fn verify_against_desktop(model: &QuantModel<'_>, input: &[u8], run: &DeviceRun) -> Result<()> {
    let desk = crate::simulate::simulate(model, input, true)?;
    let (_, got) = run.output.as_ref().ok_or_else(|| anyhow!("the device sent no output"))?;
    if run.layers.len() != desk.layers.len() {
        bail!("the device reported {} layers, the desktop ran {}", run.layers.len(), desk.layers.len());
    }
    for (dev, want) in run.layers.iter().zip(&desk.layers) {
        let bytes_differ = matches!((&dev.bytes, &want.bytes), (Some(a), Some(b)) if a != b);
        if dev.index as usize != want.index || dev.fnv != want.hash || bytes_differ {
            bail!(
                "layer {} ({}): device hash {:016x}, desktop {:016x}: the executors diverge here",
                want.index,
                want.name,
                dev.fnv,
                want.hash
            );
        }
    }
    if *got != desk.output {
        bail!("the output bytes differ between the device and the desktop");
    }
    Ok(())
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
    let dir = std::env::temp_dir().join(format!("host-flash-{}", std::process::id()));
    std::fs::create_dir_all(&dir)?;
    let blob = dir.join("input.axin");
    std::fs::write(&blob, input_blob(&data, opts.layers)?)?;
    let result = run_qemu(opts.board, &elf, &opts.model, &blob, opts.timeout, opts.defmt_log.as_deref());
    let _ = std::fs::remove_dir_all(&dir);
    let run = result?;
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
    let (total_ticks, out) = run.output.clone().ok_or_else(|| anyhow!("no output frame"))?;
    if opts.verify {
        verify_against_desktop(&model, &data, &run)?;
        if !opts.json {
            println!(
                "verified: the device's output and all {} layer hashes equal the desktop engine's",
                run.layers.len()
            );
        }
    }
    let report = device_report(&run, &model, opts.image.as_deref().unwrap_or(&opts.model), &out, opts.layers)?;
    if opts.json {
        println!("{}", serde_json::to_string_pretty(&report)?);
    } else {
        let board = run.hello.as_ref().map(|h| h.board.as_str()).unwrap_or("?");
        println!("{board}:");
        let logits: Vec<f32> =
            report["logits"].as_array().into_iter().flatten().filter_map(|v| v.as_f64()).map(|v| v as f32).collect();
        let path = opts.image.as_deref().unwrap_or(&opts.model);
        print!(
            "{}",
            crate::prediction::Prediction::from_logits(path, &crate::model_file::class_names(&model), &logits).render()
        );
        println!("{:>3}  {:<44} {:<20} {:>14} {:>16}  fnv1a64", "#", "layer", "output shape", "ticks", "instructions");
        let shapes: Vec<_> = model.spec.shapes().collect();
        for l in &run.layers {
            let (name, shape) = shapes
                .get(l.index as usize)
                .map(|&(i, layer, _, o)| {
                    (format!("{} ({})", model.spec.layer_name(i), layer.kind().class_name()), o.to_string())
                })
                .unwrap_or_default();
            println!(
                "{:>3}  {:<44} {:<20} {:>14} {:>16}  {:016x}",
                l.index,
                name,
                shape,
                l.ticks,
                run.instructions(l.ticks).unwrap_or(0),
                l.fnv
            );
        }
        println!(
            "total: {} ticks, ~{} instructions (QEMU -icount shift=0), {} stack bytes",
            total_ticks,
            run.instructions(total_ticks).unwrap_or(0),
            run.stack_used.unwrap_or(0)
        );
    }
    Ok(())
}

/// The device run in the same JSON shape as `host simulate --json` (image,
/// precision, class, confidence, top5, raw `output`, `logits`, `layers`),
/// plus the board, tick/instruction counts, the stack high-water mark and
/// the decoded defmt log (`log`, `log_warnings`).
pub fn device_report(
    run: &DeviceRun,
    model: &QuantModel<'_>,
    image: &Path,
    output: &[u8],
    with_bytes: bool,
) -> Result<serde_json::Value> {
    let mut logits = vec![0f32; output.len() / model.precision.activation_bytes()];
    engine::dequantize_output(model, output, &mut logits).map_err(|e| anyhow!("device output: {e}"))?;
    let pred = crate::prediction::Prediction::from_logits(image, &crate::model_file::class_names(model), &logits);
    let shapes: Vec<_> = model.spec.shapes().collect();
    let layers: Vec<serde_json::Value> = run
        .layers
        .iter()
        .map(|l| {
            let i = l.index as usize;
            let (name, kind, shape, macs) = shapes
                .get(i)
                .map(|&(_, layer, input, out)| {
                    (
                        model.spec.layer_name(i).to_string(),
                        layer.kind().class_name(),
                        out.to_string(),
                        layer.macs(input, out),
                    )
                })
                .unwrap_or_default();
            let mut o = serde_json::json!({
                "index": i, "name": name, "kind": kind, "shape": shape, "macs": macs, "ticks": l.ticks,
                "instructions": run.instructions(l.ticks), "fnv1a64": format!("{:016x}", l.fnv),
            });
            if let (true, Some(b)) = (with_bytes, &l.bytes) {
                o["output"] = serde_json::json!(crate::model_file::output_values(model.precision, b));
            }
            o
        })
        .collect();
    let total = run.output.as_ref().map(|o| o.0).unwrap_or(0);
    Ok(serde_json::json!({
        "image": image,
        "board": run.hello.as_ref().map(|h| h.board.clone()),
        "precision": model.precision.name(),
        "class": pred.class,
        "confidence": pred.confidence,
        "top5": pred.top,
        "output": crate::model_file::output_values(model.precision, output),
        "logits": logits,
        "arena_bytes": run.model.as_ref().map(|m| m.arena_needed),
        "layers": layers,
        "ticks": total,
        "instructions": run.instructions(total),
        "stack_bytes": run.stack_used,
        "log": run.log,
        "log_warnings": run.log_warnings,
    }))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn frame(kind: u8, payload: &[u8]) -> Vec<u8> {
        let mut f = b"AX".to_vec();
        f.extend_from_slice(&[kind, 0]);
        f.extend_from_slice(&(payload.len() as u32).to_le_bytes());
        f.extend_from_slice(payload);
        let crc = CRC32.checksum(&f[2..]);
        f.extend_from_slice(&crc.to_le_bytes());
        f
    }

    #[test]
    fn crc_and_fnv_match_their_check_values() {
        assert_eq!(CRC32.checksum(b"123456789"), 0xCBF4_3926);
        assert_eq!(fnv1a64(b""), 0xcbf2_9ce4_8422_2325);
        assert_eq!(fnv1a64(b"a"), 0xaf63_dc4c_8601_ec8c);
    }

    #[test]
    fn frames_resync_after_junk_and_reject_bad_crc() {
        let mut s = b"junkAX".to_vec();
        s.extend(frame(kind::DONE, &[0]));
        let mut bad = frame(kind::ERROR, b"\x02oops");
        let n = bad.len();
        bad[n - 1] ^= 1;
        s.extend(bad);
        s.extend(frame(kind::OUTPUT, &[5, 0, 0, 0, 0, 0, 0, 0, 0xff]));
        let run = DeviceRun::from_stream(&s).unwrap();
        assert_eq!(run.done, Some(0));
        assert!(run.error.is_none());
        assert_eq!(run.output, Some((5, vec![0xff])));
        assert!(run.skipped_bytes > 0);
    }

    #[test]
    fn defmt_decoding_problems_are_warnings_not_errors() {
        assert_eq!(decode_defmt(b"not an elf", b""), DefmtLog::default(), "no log, nothing to say");
        let log = decode_defmt(b"not an elf", &[1, 2, 3, 0]);
        assert!(log.lines.is_empty());
        assert!(log.warnings[0].contains("defmt table"), "{log:?}");
    }

    #[test]
    fn input_blob_has_the_firmware_header() {
        let b = input_blob(&[1, 2, 3], true).unwrap();
        assert_eq!(&b[..4], b"AXIN");
        assert_eq!(u16::from_le_bytes([b[6], b[7]]), FLAG_LAYER_BYTES);
        assert_eq!(u32::from_le_bytes(b[8..12].try_into().unwrap()), 3);
        assert_eq!(&b[16..], &[1, 2, 3]);
    }
}

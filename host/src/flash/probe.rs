//! A board on a desk: flash the model and the code with probe-rs, reset the
//! chip, and hold the session over the board's serial port (the debug
//! probe's virtual COM port, `--port /dev/ttyACM0`).
//!
//! The model goes to its own flash sectors (the board's `MODEL` region) as a
//! raw binary, then the code from the ELF (probe-rs erases only the sectors
//! it writes, so neither erases the other), then `probe-rs reset` starts the
//! firmware, with the serial port already open so that HELLO is not missed.

use super::board::Board;
use super::session::{run_session, DeviceSession, Link, Step};
use anyhow::{anyhow, bail, Context, Result};
use std::ffi::OsString;
use std::fs::File;
use std::io::{Read, Write};
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::time::Duration;

/// Where to install probe-rs from, for the error that says it is missing.
pub const INSTALL_HINT: &str =
    "install it with `cargo install probe-rs-tools --locked` (see https://probe.rs/docs/getting-started/installation/)";

/// The probe-rs program to run (`probe-rs` on the PATH unless told otherwise).
#[derive(Clone, Debug)]
pub struct ProbeRs {
    pub program: PathBuf,
}

impl Default for ProbeRs {
    fn default() -> Self {
        ProbeRs { program: PathBuf::from("probe-rs") }
    }
}

/// The probe-rs command lines that flash `model` and `elf` to `board` and
/// start it, in order (arguments after the program name).
pub fn flash_commands(board: Board, elf: &Path, model: &Path) -> Result<Vec<Vec<OsString>>> {
    let Some(chip) = board.probe_chip() else {
        bail!("{} exists only in QEMU here: there is nothing to flash with --probe", board.name());
    };
    let args = |list: &[&str]| list.iter().map(OsString::from).collect::<Vec<_>>();
    let mut model_cmd = args(&["download", "--chip", chip, "--binary-format", "bin", "--base-address"]);
    model_cmd.push(format!("{:#010x}", board.model_addr()).into());
    model_cmd.push(model.into());
    let mut code_cmd = args(&["download", "--chip", chip]);
    code_cmd.push(elf.into());
    Ok(vec![model_cmd, code_cmd, args(&["reset", "--chip", chip])])
}

impl ProbeRs {
    fn run(&self, args: &[OsString]) -> Result<String> {
        let shown = || {
            let mut s = self.program.display().to_string();
            for a in args {
                s.push(' ');
                s.push_str(&a.to_string_lossy());
            }
            s
        };
        let out = Command::new(&self.program).args(args).stdin(Stdio::null()).output().map_err(|e| {
            if e.kind() == std::io::ErrorKind::NotFound {
                anyhow!("probe-rs is not installed ({} not found): {INSTALL_HINT}", self.program.display())
            } else {
                anyhow!("running {}: {e}", shown())
            }
        })?;
        let stdout = String::from_utf8_lossy(&out.stdout).into_owned();
        if !out.status.success() {
            bail!("`{}` failed ({}): {}", shown(), out.status, String::from_utf8_lossy(&out.stderr).trim());
        }
        Ok(stdout)
    }

    /// probe-rs runs and sees at least one debug probe.
    pub fn check(&self) -> Result<()> {
        self.run(&["--version".into()])?;
        let list = self.run(&["list".into()])?;
        if list.contains("No debug probes") || !list.lines().any(|l| l.trim_start().starts_with('[')) {
            bail!(
                "no debug probe found: connect the board's ST-LINK (or another SWD probe, such as a \
                 Raspberry Pi Debug Probe) over USB; \
                 `{} list` shows the probes it sees",
                self.program.display()
            );
        }
        Ok(())
    }
}

/// Flash `model` and `elf` to `board`, start it and hold the session over `port`.
pub fn flash_and_serve(
    probe: &ProbeRs,
    board: Board,
    elf: &Path,
    model: &Path,
    port: &Path,
    steps: &[Step<'_>],
    timeout: Duration,
) -> Result<DeviceSession> {
    probe.check()?;
    let commands = flash_commands(board, elf, model)?;
    let (reset, flash) = commands.split_last().ok_or_else(|| anyhow!("no probe-rs commands"))?;
    for args in flash {
        probe.run(args)?;
    }
    let mut link = SerialPort::open(port)?;
    probe.run(reset)?;
    let session = run_session(&mut link, steps, timeout)?;
    let run = session.boot_run();
    run.check_addresses(board)?;
    Ok(session)
}

/// A serial port in raw mode, reads returning after 0.1 s without data.
struct SerialPort {
    file: File,
}

impl SerialPort {
    fn open(port: &Path) -> Result<SerialPort> {
        let file = std::fs::OpenOptions::new().read(true).write(true).open(port).with_context(|| {
            format!(
                "cannot open the serial port {}: connect the board's USB serial (or name it with --port)",
                port.display()
            )
        })?;
        // 115200 8N1, raw, no echo; a read waits at most 0.1 s (VTIME=1).
        let status = Command::new("stty")
            .arg("-F")
            .arg(port)
            .args(["115200", "raw", "-echo", "min", "0", "time", "1"])
            .status()
            .context("running stty to set up the serial port")?;
        if !status.success() {
            bail!("stty could not set up {} ({status})", port.display());
        }
        Ok(SerialPort { file })
    }
}

impl Link for SerialPort {
    fn send(&mut self, bytes: &[u8]) -> Result<()> {
        self.file.write_all(bytes).context("writing to the serial port")
    }

    fn recv(&mut self, buf: &mut [u8]) -> Result<usize> {
        self.file.read(buf).context("reading the serial port")
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The probe-rs command lines for flashing `fw.elf` and `m.int8` to `board`.
    fn command_lines(board: Board) -> Vec<String> {
        let cmds = flash_commands(board, Path::new("fw.elf"), Path::new("m.int8")).expect("commands");
        cmds.iter().map(|c| c.iter().map(|a| a.to_string_lossy().into_owned()).collect::<Vec<_>>().join(" ")).collect()
    }

    #[test]
    fn the_model_goes_to_its_own_sectors_then_the_code_then_a_reset() {
        let lines = command_lines(Board::Stm32f405);
        assert_eq!(
            lines,
            [
                "download --chip STM32F405RGTx --binary-format bin --base-address 0x08040000 m.int8",
                "download --chip STM32F405RGTx fw.elf",
                "reset --chip STM32F405RGTx",
            ]
        );
        // The address is the board table's model region, past the code's sectors.
        let spec = Board::Stm32f405.spec();
        assert_eq!(spec.model.origin, 0x0804_0000);
        assert_eq!(spec.flash.origin as u64 + spec.flash.length as u64, spec.model.origin as u64);
        assert!(flash_commands(Board::QemuAn386, Path::new("e"), Path::new("m")).is_err());
    }

    /// The chips QEMU lacks flash the same way: the model into the table's
    /// model region (the H743's flash bank 2, the Pico 2's flash behind the
    /// code's first MiB), then the code, then a reset.
    #[test]
    fn the_silicon_only_boards_flash_their_model_region() {
        for (board, chip, addr) in
            [(Board::Stm32h743, "STM32H743ZITx", "0x08100000"), (Board::Rp2350, "RP235x", "0x10100000")]
        {
            let lines = command_lines(board);
            assert_eq!(
                lines,
                [
                    format!("download --chip {chip} --binary-format bin --base-address {addr} m.int8"),
                    format!("download --chip {chip} fw.elf"),
                    format!("reset --chip {chip}"),
                ]
            );
            let spec = board.spec();
            assert_eq!(spec.flash.origin as u64 + spec.flash.length as u64, spec.model.origin as u64);
        }
    }

    #[test]
    fn missing_probe_rs_or_probe_or_port_are_clear_errors() {
        let none = ProbeRs { program: PathBuf::from("/nonexistent/probe-rs") };
        let err = none.check().expect_err("not installed").to_string();
        assert!(err.contains("probe-rs is not installed") && err.contains("cargo install probe-rs-tools"), "{err}");

        // A probe-rs that sees no probe (as the real one prints it).
        let dir = super::super::ScratchDir::new("host-probe-test").expect("dir");
        let fake = dir.path().join("probe-rs");
        std::fs::write(&fake, "#!/bin/sh\n[ \"$1\" = list ] && echo 'No debug probes were found.'\nexit 0\n")
            .expect("write");
        use std::os::unix::fs::PermissionsExt;
        std::fs::set_permissions(&fake, std::fs::Permissions::from_mode(0o755)).expect("chmod");
        let err = ProbeRs { program: fake.clone() }.check().expect_err("no probe").to_string();
        assert!(err.contains("no debug probe found") && err.contains("ST-LINK"), "{err}");
        let err = flash_and_serve(
            &ProbeRs { program: fake },
            Board::Stm32f405,
            Path::new("fw.elf"),
            Path::new("m"),
            Path::new("/dev/ttyACM0"),
            &[],
            Duration::from_secs(1),
        )
        .expect_err("no probe");
        assert!(err.to_string().contains("no debug probe found"), "{err}");

        let err = SerialPort::open(Path::new("/nonexistent/ttyACM9")).err().expect("no port").to_string();
        assert!(err.contains("/nonexistent/ttyACM9") && err.contains("--port"), "{err}");
    }
}

//! The host's view of the board table (`shared::board`): `--board` as a
//! typed option, and the firmware build for a board.

use anyhow::{anyhow, bail, Context, Result};
use std::fmt;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};

/// The boards the firmware supports, one per entry of
/// [`shared::board::BOARDS`] (a test holds them to each other). The firmware
/// echoes its own load addresses in the HELLO frame and
/// [`DeviceRun::check_addresses`](super::DeviceRun::check_addresses) compares them.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, clap::ValueEnum)]
pub enum Board {
    /// QEMU `mps2-an386`: Cortex-M4F, 4 MiB code SSRAM, for the scaled AlexNet.
    #[value(name = "qemu-an386")]
    QemuAn386,
    /// QEMU `mps3-an524`: Cortex-M33 with 2 GiB DDR, for the full AlexNet.
    #[value(name = "qemu-an524")]
    QemuAn524,
    /// STM32F405 (Cortex-M4F, 1 MiB flash, 128 KiB SRAM) through its HAL:
    /// QEMU `netduinoplus2`, or a board on a desk with `--probe`.
    #[value(name = "stm32f405")]
    Stm32f405,
    /// STM32H743 (Cortex-M7F, NUCLEO-H743ZI) through its HAL: `--probe` only
    /// (QEMU has no H7 machine).
    #[value(name = "stm32h743")]
    Stm32h743,
    /// RP2350 (Cortex-M33, Raspberry Pi Pico 2) through its HAL: `--probe`
    /// only (QEMU has no RP2350).
    #[value(name = "rp2350")]
    Rp2350,
}

/// Which firmware build: the one QEMU runs, or the one for silicon.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum Build {
    Qemu,
    Silicon,
}

impl Board {
    /// All boards, in the order of [`shared::board::BOARDS`].
    pub const ALL: [Board; 5] = [Board::QemuAn386, Board::QemuAn524, Board::Stm32f405, Board::Stm32h743, Board::Rp2350];

    /// The board's entry in the shared table.
    pub fn spec(self) -> &'static shared::board::Board {
        match self {
            Board::QemuAn386 => &shared::board::QEMU_AN386,
            Board::QemuAn524 => &shared::board::QEMU_AN524,
            Board::Stm32f405 => &shared::board::STM32F405,
            Board::Stm32h743 => &shared::board::STM32H743,
            Board::Rp2350 => &shared::board::RP2350,
        }
    }

    /// The firmware's cargo features for `build`: the board's name, plus
    /// `qemu` for a real chip's emulated build. `None`: no such build (the
    /// MPS FPGA images exist only in QEMU here, QEMU emulates neither the
    /// STM32H743 nor the RP2350).
    pub fn features(self, build: Build) -> Option<String> {
        match (self, build) {
            (Board::QemuAn386 | Board::QemuAn524, Build::Qemu) => Some(self.name().to_string()),
            (Board::QemuAn386 | Board::QemuAn524, Build::Silicon) => None,
            (Board::Stm32f405, Build::Qemu) => Some(format!("{},qemu", self.name())),
            (Board::Stm32f405, Build::Silicon) => Some(self.name().to_string()),
            (Board::Stm32h743 | Board::Rp2350, Build::Qemu) => None,
            (Board::Stm32h743 | Board::Rp2350, Build::Silicon) => Some(self.name().to_string()),
        }
    }

    /// probe-rs's name for the chip (`probe-rs chip list`), for a board on a desk.
    pub fn probe_chip(self) -> Option<&'static str> {
        match self {
            Board::Stm32f405 => Some("STM32F405RGTx"),
            // The NUCLEO-H743ZI's chip (LQFP144, 2 MiB).
            Board::Stm32h743 => Some("STM32H743ZITx"),
            // probe-rs names the RP2350 family so (the Pico 2's RP2350A).
            Board::Rp2350 => Some("RP235x"),
            Board::QemuAn386 | Board::QemuAn524 => None,
        }
    }

    /// Command-line name, also the firmware's cargo feature.
    pub fn name(self) -> &'static str {
        self.spec().name
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
        self.spec().target
    }

    /// `qemu-system-arm -machine` and `-cpu`, when QEMU emulates the board.
    pub fn machine(self) -> Option<(&'static str, &'static str)> {
        self.spec().qemu.map(|q| (q.machine, q.cpu))
    }

    /// Where the model file is loaded (the `MODEL` region of memory.x).
    pub fn model_addr(self) -> u32 {
        self.spec().model.origin
    }

    /// Size of the model region.
    pub fn model_capacity(self) -> u64 {
        self.spec().model.length as u64
    }
}

impl fmt::Display for Board {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.name())
    }
}

/// The firmware crate, as this host binary was built next to it.
pub fn default_firmware_dir() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("..").join("firmware")
}

/// `cargo build --release` the firmware QEMU runs for `board`; returns the ELF path.
pub fn build_firmware(board: Board, firmware_dir: &Path) -> Result<PathBuf> {
    build_firmware_for(board, Build::Qemu, firmware_dir)
}

/// `cargo build --release` the firmware for `board` and `build`; returns the ELF path.
///
/// The target directory is given explicitly so that the ELF's place does not
/// depend on a CARGO_TARGET_DIR the caller may have set for the workspace.
pub fn build_firmware_for(board: Board, build: Build, firmware_dir: &Path) -> Result<PathBuf> {
    build_firmware_with(board, build, firmware_dir, None)
}

/// [`build_firmware_for`] with one more cargo feature of the firmware (a test
/// build such as `stack-overflow-test`), in a target folder of its own.
pub fn build_firmware_with(board: Board, build: Build, firmware_dir: &Path, extra: Option<&str>) -> Result<PathBuf> {
    let Some(mut features) = board.features(build) else {
        match build {
            Build::Silicon => {
                bail!("{} exists only in QEMU here: there is no silicon build to flash with --probe", board.name())
            }
            Build::Qemu => bail!("QEMU does not emulate {}: flash it with --probe", board.name()),
        }
    };
    // The MPS boards share `target` (their targets differ); a real chip's
    // builds get folders of their own, so that no two builds that run at
    // once (the device tests) write the same ELF path.
    let target_dir = match (board, build) {
        (Board::QemuAn386 | Board::QemuAn524, _) => firmware_dir.join("target"),
        (_, Build::Qemu) => firmware_dir.join("target").join(format!("{}-qemu", board.name())),
        (_, Build::Silicon) => firmware_dir.join("target").join(board.name()),
    };
    let target_dir = match extra {
        Some(feature) => {
            features = format!("{features},{feature}");
            target_dir.join(format!("{}-{feature}", board.name()))
        }
        None => target_dir,
    };
    let status = Command::new(std::env::var_os("CARGO").unwrap_or_else(|| "cargo".into()))
        .current_dir(firmware_dir)
        .args(["build", "--release", "--target", board.target(), "--no-default-features", "--features"])
        .arg(&features)
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
        bail!("building the firmware for {} (features {features}) failed ({status})", board.name());
    }
    let elf = target_dir.join(board.target()).join("release").join("firmware");
    if !elf.is_file() {
        bail!("cargo succeeded but {} is missing", elf.display());
    }
    Ok(elf)
}

#[cfg(test)]
mod tests {
    use super::*;
    use clap::ValueEnum;

    /// One host board per table entry, in order, under the table's name.
    #[test]
    fn host_boards_are_the_shared_table() {
        assert_eq!(Board::ALL.len(), shared::board::BOARDS.len());
        assert_eq!(Board::value_variants(), Board::ALL);
        for (b, spec) in Board::ALL.into_iter().zip(&shared::board::BOARDS) {
            assert_eq!(b.spec(), spec);
            let value = b.to_possible_value().expect("a --board value");
            assert_eq!(value.get_name(), spec.name);
            assert_eq!(Board::from_str(spec.name, false), Ok(b));
            assert_eq!(Board::from_name(spec.name).ok(), Some(b));
            assert_eq!(b.to_string(), spec.name);
        }
        assert!(Board::from_name("qemu-an385").is_err());
    }
}

//! Everything board-specific, behind embedded-hal 1.0 / embedded-io traits.
//!
//! A board module provides [`init`] returning a [`Board`]: a serial port
//! (`embedded_io::Write`) and a delay (`embedded_hal::delay::DelayNs`), plus
//! the constants the rest of the firmware needs ([`NAME`], [`CPU_HZ`],
//! [`ARENA_BYTES`], from the board table `shared::board`, which also gives
//! the memory map the linker script follows). `main.rs` never touches a register: a real board (an
//! STM32H7 with its HAL's `Serial` and `Delay`) replaces only this module.

mod cmsdk_uart;

#[cfg(feature = "qemu-an386")]
mod qemu_an386;
#[cfg(feature = "qemu-an386")]
pub use qemu_an386::*;

#[cfg(feature = "qemu-an524")]
mod qemu_an524;
#[cfg(feature = "qemu-an524")]
pub use qemu_an524::*;

/// What a board hands to the application.
pub struct Board<S, D> {
    /// Where result frames go.
    pub serial: S,
    /// Busy-wait delay (SysTick-based on the QEMU boards).
    pub delay: D,
}

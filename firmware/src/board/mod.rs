//! Everything board-specific, behind embedded-hal 1.0 / embedded-io traits.
//!
//! A board module provides [`init`] returning a [`Board`]: a serial port
//! (`embedded_io::Read + Write`) and a delay (`embedded_hal::delay::DelayNs`),
//! the layer clock (`now`, and `CLOCK`: which counter it is), plus the
//! constants the rest of the firmware needs (`NAME`, `CPU_HZ`,
//! `ARENA_BYTES`, from the board table `shared::board`, which also gives
//! the memory map the linker script follows), `pre_main`, `steal_serial`
//! and `exit`. `main.rs` never touches a register: a new chip is a new
//! module here (on its HAL's serial port and timer) and a memory map.

#[cfg(any(feature = "qemu-an386", feature = "qemu-an524"))]
mod cmsdk_uart;

#[cfg(feature = "qemu-an386")]
mod qemu_an386;
#[cfg(feature = "qemu-an386")]
pub use qemu_an386::*;

#[cfg(feature = "qemu-an524")]
mod qemu_an524;
#[cfg(feature = "qemu-an524")]
pub use qemu_an524::*;

#[cfg(feature = "stm32f405")]
mod stm32f405;
#[cfg(feature = "stm32f405")]
pub use stm32f405::*;

#[cfg(feature = "stm32h743")]
mod stm32h743;
#[cfg(feature = "stm32h743")]
pub use stm32h743::*;

#[cfg(feature = "rp2350")]
mod rp2350;
#[cfg(feature = "rp2350")]
pub use rp2350::*;

/// What a board hands to the application.
pub struct Board<S, D> {
    /// Where requests come from and answers go.
    pub serial: S,
    /// Busy-wait delay (a HAL timer on silicon, SysTick under QEMU).
    pub delay: D,
}

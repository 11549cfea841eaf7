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

/// The real chips' transmitter for the panic and HardFault handlers, after
/// `init` took the HAL's peripherals: `put` writes one byte through the
/// UART's registers (waiting for room first). One `embedded_io` impl for
/// every chip; each board supplies only its register access.
#[cfg(any(feature = "stm32f405", feature = "stm32h743", feature = "rp2350"))]
pub(crate) struct RegisterTx(pub(crate) fn(u8));

#[cfg(any(feature = "stm32f405", feature = "stm32h743", feature = "rp2350"))]
impl embedded_io::ErrorType for RegisterTx {
    type Error = core::convert::Infallible;
}

#[cfg(any(feature = "stm32f405", feature = "stm32h743", feature = "rp2350"))]
impl embedded_io::Write for RegisterTx {
    fn write(&mut self, buf: &[u8]) -> Result<usize, Self::Error> {
        buf.iter().for_each(|&b| (self.0)(b));
        Ok(buf.len())
    }

    fn flush(&mut self) -> Result<(), Self::Error> {
        Ok(())
    }
}

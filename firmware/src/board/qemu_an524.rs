//! QEMU `mps3-an524`: Cortex-M33 (SSE-200) at 32 MHz, CMSDK UART0 at 0x4130_3000.
use super::cmsdk_uart::CmsdkUart;
use super::Board;
use crate::clock::TickDelay;

/// Board name reported in the HELLO frame.
pub const NAME: &str = "qemu-an524";
/// SYSCLK of the AN524 image (QEMU's `mps2-tz.c`); SysTick counts it. With
/// `-icount shift=0` QEMU retires one instruction per ns: 31.25 per tick.
pub const CPU_HZ: u32 = 32_000_000;
/// The arena: sized for the tutorial's full AlexNet at 227 px (int8 or f16)
/// with room to spare; it lives in DDR (memory/qemu-an524.x), never loaded or
/// zeroed whole. plan() is checked against it at run time.
pub const ARENA_BYTES: usize = 32 * 1024 * 1024;
const UART0: usize = 0x4130_3000;

/// Set up the board's serial port and delay.
pub fn init(clock: &'static crate::clock::Clock) -> Board<CmsdkUart, TickDelay> {
    // SAFETY: called once from main; UART0 has no other user.
    let serial = unsafe { CmsdkUart::new(UART0, CPU_HZ, 115_200) };
    Board { serial, delay: TickDelay::new(clock, CPU_HZ) }
}

/// The serial port again, for the panic and HardFault handlers only.
///
/// # Safety
/// Only when the main path will never run again.
pub unsafe fn steal_serial() -> CmsdkUart {
    // SAFETY: forwarded to the caller.
    unsafe { CmsdkUart::new(UART0, CPU_HZ, 115_200) }
}

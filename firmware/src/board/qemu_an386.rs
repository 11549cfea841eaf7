//! QEMU `mps2-an386`: Cortex-M4F at 25 MHz, CMSDK UART0 at 0x4000_4000.
use super::cmsdk_uart::CmsdkUart;
use super::Board;
use crate::clock::{TickDelay, SYSTICK};
// The defmt transport of the QEMU boards: semihosting, which QEMU writes to
// its stdout (a real board without a debugger attached would fault on it:
// use defmt-rtt there).
use defmt_semihosting as _;

/// This board in the board table (`shared::board`).
const BOARD: shared::board::Board = shared::board::QEMU_AN386;
/// Board name reported in the HELLO frame.
pub const NAME: &str = BOARD.name;
/// SYSCLK of the MPS2 FPGA images (QEMU's `mps2.c`); SysTick counts it. With
/// `-icount shift=0` QEMU retires one instruction per ns: 40 per tick.
pub const CPU_HZ: u32 = BOARD.cpu_hz;
/// The arena: sized for the scaled AlexNet (`alexnet-micro`, int8 or f16, up
/// to ~160 px inputs) with room to spare in the 4 MiB data SSRAM; plan() is
/// checked against it at run time.
pub const ARENA_BYTES: usize = BOARD.arena_bytes as usize;
const UART0: usize = 0x4000_4000;

/// Layer times come from SysTick (QEMU does not model DWT.CYCCNT).
pub const CLOCK: u16 = shared::protocol::clock::SYSTICK;

/// Nothing to do before `main` on a single-core Cortex-M4F.
pub fn pre_main() {}

/// Start the layer clock, set up the board's serial port and delay.
pub fn init(core: cortex_m::Peripherals) -> Board<CmsdkUart, TickDelay> {
    SYSTICK.start(core.SYST);
    // SAFETY: called once from main; UART0 has no other user.
    let serial = unsafe { CmsdkUart::new(UART0, CPU_HZ, 115_200) };
    Board { serial, delay: TickDelay::new(&SYSTICK, CPU_HZ) }
}

/// Ticks of the layer clock.
pub fn now() -> u64 {
    SYSTICK.now()
}

/// The serial port again, for the panic and HardFault handlers only.
///
/// # Safety
/// Only when the main path will never run again.
pub unsafe fn steal_serial() -> CmsdkUart {
    // SAFETY: forwarded to the caller.
    unsafe { CmsdkUart::new(UART0, CPU_HZ, 115_200) }
}

/// Leave QEMU with `code`. SYS_EXIT_EXTENDED carries the exact code
/// (cortex-m-semihosting's `debug::exit` only has success/failure).
pub fn exit(code: u8) -> ! {
    semihosting::process::exit(code as i32)
}

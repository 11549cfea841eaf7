//! QEMU `mps3-an524`: Cortex-M33 (SSE-200) at 32 MHz, CMSDK UART0 at 0x4130_3000.
//!
//! The SSE-200 has two Cortex-M33s and, as on the real FPGA image, only CPU1
//! has the FPU and DSP extensions; CPU0 boots first and would fault (NOCP) on
//! the first floating-point instruction of this `eabihf` build. So CPU0 only
//! points CPU1 at the vector table, releases it, and sleeps: see [`pre_main`].
use super::cmsdk_uart::CmsdkUart;
use super::Board;
use crate::clock::{TickDelay, SYSTICK};
// The defmt transport of the QEMU boards: semihosting, which QEMU writes to
// its stdout (a real board without a debugger attached would fault on it:
// use defmt-rtt there).
use defmt_semihosting as _;

/// This board in the board table (`shared::board`).
const BOARD: shared::board::Board = shared::board::QEMU_AN524;
/// Board name reported in the HELLO frame.
pub const NAME: &str = BOARD.name;
/// SYSCLK of the AN524 image (QEMU's `mps2-tz.c`); SysTick counts it. With
/// `-icount shift=0` QEMU retires one instruction per ns: 31.25 per tick.
pub const CPU_HZ: u32 = BOARD.cpu_hz;
/// The arena: sized for the tutorial's full AlexNet at 227 px (int8 or f16)
/// with room to spare; it lives in DDR (memory/qemu-an524.x), never loaded or
/// zeroed whole. plan() is checked against it at run time.
pub const ARENA_BYTES: usize = BOARD.arena_bytes as usize;
const UART0: usize = 0x4130_3000;

/// Layer times come from SysTick (QEMU does not model DWT.CYCCNT).
pub const CLOCK: u16 = shared::protocol::clock::SYSTICK;

/// SSE-200 CPUID register: reads as the number of the core reading it.
const CPUID: usize = 0x5001_F000;
/// SSE-200 system control (secure): CPU1's initial secure VTOR and CPUWAIT.
const SYSCTL_INITSVTOR1: usize = 0x5002_1114;
const SYSCTL_CPUWAIT: usize = 0x5002_1118;

/// Run the firmware on CPU1 (the core with the FPU). Called first thing in
/// `main`, before anything that may use floating point: on CPU0 it never
/// returns, on CPU1 it returns at once. CPU1 starts from the same reset
/// vector, so it re-initialises RAM while CPU0 sleeps with interrupts off,
/// touching neither memory nor its (now reused) stack.
#[inline(never)]
pub fn pre_main() {
    use core::ptr::{read_volatile, write_volatile};
    extern "C" {
        static __vector_table: u32;
    }
    // SAFETY: fixed SSE-200 registers; only CPU0 writes them, once.
    unsafe {
        if read_volatile(CPUID as *const u32) != 0 {
            return;
        }
        cortex_m::interrupt::disable();
        write_volatile(SYSCTL_INITSVTOR1 as *mut u32, &raw const __vector_table as u32);
        let wait = read_volatile(SYSCTL_CPUWAIT as *const u32);
        write_volatile(SYSCTL_CPUWAIT as *mut u32, wait & !0b10);
    }
    loop {
        cortex_m::asm::wfi();
    }
}

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

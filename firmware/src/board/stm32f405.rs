//! STM32F405 (Cortex-M4F) through its HAL, `stm32f4xx-hal`: USART1 on
//! PA9 (TX) / PA10 (RX) at 115200 baud, a HAL timer (TIM5) for delays and the
//! DWT cycle counter for layer times, defmt over RTT (what probe-rs reads).
//!
//! With the `qemu` feature the same module runs under `qemu-system-arm -M
//! netduinoplus2`, which emulates this chip but not all of it. It skips
//! exactly this:
//! - the PLL: QEMU does not model RCC, and the HAL's bring-up to 168 MHz
//!   waits for PLL lock forever. The qemu build keeps `Config::hsi()` (no
//!   PLL, nothing to wait for); the USART's divider is then computed for
//!   16 MHz, which QEMU ignores.
//! - the timers: QEMU's DWT.CYCCNT reads 0 and the HAL's TIM2-TIM5 delays
//!   never finish, so layer times and delays use SysTick, which QEMU counts
//!   at 168 MHz whatever RCC says.
//! - RTT: nothing reads it under QEMU; defmt goes out over semihosting.
//! - exit: semihosting (QEMU ends with the code); on silicon the firmware
//!   stops in a `wfi` loop after its DONE frame.
use super::Board;
use shared::protocol::clock;
use stm32f4xx_hal::{
    pac,
    prelude::*,
    rcc::Config,
    serial::{self, Rx, Serial, Tx},
};

/// This board in the board table (`shared::board`).
const BOARD: shared::board::Board = shared::board::STM32F405;
/// Board name reported in the HELLO frame.
pub const NAME: &str = BOARD.name;
/// 168 MHz: the silicon's core clock after the HAL's PLL bring-up, and
/// the rate QEMU's SysTick counts at.
pub const CPU_HZ: u32 = BOARD.cpu_hz;
/// The arena, in the 128 KiB of SRAM (alexnet-micro: 42 KB int8, 84 KB f16).
pub const ARENA_BYTES: usize = BOARD.arena_bytes as usize;
const BAUD: u32 = 115_200;

#[cfg(not(feature = "qemu"))]
use defmt_rtt as _;
#[cfg(feature = "qemu")]
use defmt_semihosting as _;

/// The layer clock this build reports in HELLO.
#[cfg(feature = "qemu")]
pub const CLOCK: u16 = clock::SYSTICK;
#[cfg(not(feature = "qemu"))]
pub const CLOCK: u16 = clock::DWT;

#[cfg(not(feature = "qemu"))]
static DWT_CLOCK: crate::clock::DwtClock = crate::clock::DwtClock::new();

/// Ticks of the layer clock.
pub fn now() -> u64 {
    #[cfg(feature = "qemu")]
    return crate::clock::SYSTICK.now();
    #[cfg(not(feature = "qemu"))]
    return DWT_CLOCK.now();
}

/// Nothing to do before `main`.
pub fn pre_main() {}

/// USART1 behind `embedded_io`: blocking reads and writes over the HAL's
/// non-blocking (`nb`) serial traits.
pub struct Usart {
    tx: Tx<pac::USART1>,
    rx: Rx<pac::USART1>,
}

impl embedded_io::ErrorType for Usart {
    type Error = serial::Error;
}

impl embedded_io::Read for Usart {
    fn read(&mut self, buf: &mut [u8]) -> Result<usize, serial::Error> {
        let Some(first) = buf.first_mut() else { return Ok(0) };
        *first = nb::block!(embedded_hal_nb::serial::Read::read(&mut self.rx))?;
        Ok(1)
    }
}

impl embedded_io::Write for Usart {
    fn write(&mut self, buf: &[u8]) -> Result<usize, serial::Error> {
        for &b in buf {
            nb::block!(embedded_hal_nb::serial::Write::write(&mut self.tx, b))?;
        }
        Ok(buf.len())
    }

    fn flush(&mut self) -> Result<(), serial::Error> {
        nb::block!(embedded_hal_nb::serial::Write::flush(&mut self.tx))
    }
}

/// The delay: a HAL timer on silicon, SysTick under QEMU (see the module docs).
#[cfg(feature = "qemu")]
pub type Delay = crate::clock::TickDelay;
#[cfg(not(feature = "qemu"))]
pub type Delay = stm32f4xx_hal::timer::Delay<pac::TIM5, 1_000_000>;

/// Bring up the clocks, the layer clock, USART1 and the delay.
#[allow(unused_mut)]
pub fn init(mut core: cortex_m::Peripherals) -> Board<Usart, Delay> {
    let Some(dp) = pac::Peripherals::take() else { exit(shared::protocol::exit_code::FAULT) };
    #[cfg(feature = "qemu")]
    let mut rcc = dp.RCC.freeze(Config::hsi());
    #[cfg(not(feature = "qemu"))]
    let mut rcc = dp.RCC.freeze(Config::hsi().sysclk(CPU_HZ.Hz()));
    let gpioa = dp.GPIOA.split(&mut rcc);
    let serial: Serial<pac::USART1> = match dp.USART1.serial((gpioa.pa9, gpioa.pa10), BAUD.bps(), &mut rcc) {
        Ok(s) => s,
        Err(_) => exit(shared::protocol::exit_code::FAULT),
    };
    let (tx, rx) = serial.split();
    #[cfg(feature = "qemu")]
    let delay = {
        crate::clock::SYSTICK.start(core.SYST);
        crate::clock::TickDelay::new(&crate::clock::SYSTICK, CPU_HZ)
    };
    #[cfg(not(feature = "qemu"))]
    let delay = {
        DWT_CLOCK.start(&mut core.DCB, &mut core.DWT);
        dp.TIM5.delay_us(&mut rcc)
    };
    Board { serial: Usart { tx, rx }, delay }
}

/// The serial port again, for the panic and HardFault handlers only: USART1
/// as `init` left it, transmit side.
///
/// # Safety
/// Only when the main path will never run again.
pub unsafe fn steal_serial() -> impl embedded_io::Write {
    super::RegisterTx(put)
}

/// One byte out of USART1's transmitter, through its registers (the HAL's
/// handle cannot be conjured again once `init` took the peripherals).
fn put(b: u8) {
    // SAFETY: only reached through steal_serial, whose contract is that the
    // main path is dead; USART1 was configured by init.
    let usart = unsafe { &*pac::USART1::ptr() };
    while usart.sr().read().txe().bit_is_clear() {}
    usart.dr().write(|w| unsafe { w.dr().bits(b as u16) });
}

/// Stop with `code`: QEMU exits with it (semihosting); silicon waits for a
/// reset (a semihosting call without a debugger would fault).
pub fn exit(code: u8) -> ! {
    #[cfg(feature = "qemu")]
    semihosting::process::exit(code as i32);
    #[cfg(not(feature = "qemu"))]
    {
        let _ = code;
        loop {
            cortex_m::asm::wfi();
        }
    }
}

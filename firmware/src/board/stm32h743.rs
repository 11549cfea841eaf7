//! STM32H743ZI (Cortex-M7F, NUCLEO-H743ZI) through its HAL, `stm32h7xx-hal`:
//! USART3 on PD8 (TX) / PD9 (RX) at 115200 baud, the pins the NUCLEO wires
//! to its ST-LINK's virtual COM port (so the board's one USB cable carries
//! the probe and the serial port); a HAL timer (TIM2) for delays and the DWT
//! cycle counter for layer times; defmt over RTT (what probe-rs reads).
//!
//! Silicon only: QEMU 7.2 has no H7 machine, so there is no `qemu` build.
//! The code runs from flash bank 1, the model sits in bank 2, data/bss/stack
//! in DTCM and the arena in AXI SRAM (memory/stm32h743.x).
//!
//! stm32h7xx-hal 0.16 implements embedded-hal 0.2's traits; this module
//! turns them into the embedded-hal 1.0 / embedded-io ones `main.rs` takes.
use super::Board;
use shared::protocol::clock;
use stm32h7xx_hal::{
    delay::DelayFromCountDownTimer,
    pac,
    prelude::*,
    serial::{self, Rx, Serial, Tx},
    timer::Timer,
};

#[cfg(feature = "qemu")]
compile_error!("QEMU does not emulate the STM32H743: build `stm32h743` without `qemu`");

// defmt over RTT: probe-rs reads it from RAM (`probe-rs attach`).
use defmt_rtt as _;

/// This board in the board table (`shared::board`).
const BOARD: shared::board::Board = shared::board::STM32H743;
/// Board name reported in the HELLO frame.
pub const NAME: &str = BOARD.name;
/// 400 MHz: the core clock after the HAL's PLL bring-up (the most VOS1
/// allows; 480 MHz needs VOS0, which only revision V silicon has).
pub const CPU_HZ: u32 = BOARD.cpu_hz;
/// The arena, the whole AXI SRAM (alexnet-micro: 42 KB int8, 84 KB f16).
pub const ARENA_BYTES: usize = BOARD.arena_bytes as usize;
const BAUD: u32 = 115_200;

/// Layer times come from DWT.CYCCNT: core cycles at [`CPU_HZ`].
pub const CLOCK: u16 = clock::DWT;

static DWT_CLOCK: crate::clock::DwtClock = crate::clock::DwtClock::new();

/// Ticks of the layer clock.
pub fn now() -> u64 {
    DWT_CLOCK.now()
}

/// Nothing to do before `main`.
pub fn pre_main() {}

/// USART3's receive errors (parity, framing, noise, overrun) as an
/// `embedded_io` error.
#[derive(Debug)]
pub struct UsartError(#[allow(dead_code)] serial::Error);

impl embedded_io::Error for UsartError {
    fn kind(&self) -> embedded_io::ErrorKind {
        embedded_io::ErrorKind::Other
    }
}

/// USART3 behind `embedded_io`: blocking reads and writes over the HAL's
/// non-blocking (`nb`, embedded-hal 0.2) serial traits.
pub struct Usart {
    tx: Tx<pac::USART3>,
    rx: Rx<pac::USART3>,
}

impl embedded_io::ErrorType for Usart {
    type Error = UsartError;
}

impl embedded_io::Read for Usart {
    fn read(&mut self, buf: &mut [u8]) -> Result<usize, UsartError> {
        let Some(first) = buf.first_mut() else { return Ok(0) };
        *first = nb::block!(self.rx.read()).map_err(UsartError)?;
        Ok(1)
    }
}

impl embedded_io::Write for Usart {
    fn write(&mut self, buf: &[u8]) -> Result<usize, UsartError> {
        // The HAL's transmit side cannot fail (its error is `Infallible`).
        for &b in buf {
            let Ok(()) = nb::block!(self.tx.write(b));
        }
        Ok(buf.len())
    }

    fn flush(&mut self) -> Result<(), UsartError> {
        let Ok(()) = nb::block!(self.tx.flush());
        Ok(())
    }
}

/// The delay: TIM2 counting down, as embedded-hal 1.0's `DelayNs`. (A
/// timer rather than the HAL's SysTick delay, whose rate depends on the
/// silicon revision: ES0392 2.2.3.)
pub struct Delay(DelayFromCountDownTimer<Timer<pac::TIM2>>);

impl embedded_hal::delay::DelayNs for Delay {
    fn delay_ns(&mut self, ns: u32) {
        // The HAL counts whole microseconds.
        self.0.delay_us(ns.div_ceil(1_000));
    }

    fn delay_us(&mut self, us: u32) {
        self.0.delay_us(us);
    }

    fn delay_ms(&mut self, ms: u32) {
        self.0.delay_ms(ms);
    }
}

/// Bring up power, the clocks and the caches, the layer clock, USART3 and
/// the delay.
pub fn init(mut core: cortex_m::Peripherals) -> Board<Usart, Delay> {
    let Some(dp) = pac::Peripherals::take() else { exit(shared::protocol::exit_code::FAULT) };
    // The NUCLEO-H743ZI powers the core from the LDO (the HAL's default
    // here); HSI -> PLL1 -> 400 MHz at VOS1.
    let pwrcfg = dp.PWR.constrain().freeze();
    let ccdr = dp.RCC.constrain().sys_ck(CPU_HZ.Hz()).freeze(pwrcfg, &dp.SYSCFG);
    // The M7's caches: the model is read from flash over AXI, the code runs
    // from flash. No DMA touches memory, so the D-cache needs no upkeep.
    core.SCB.enable_icache();
    core.SCB.enable_dcache(&mut core.CPUID);

    let gpiod = dp.GPIOD.split(ccdr.peripheral.GPIOD);
    let pins = (gpiod.pd8.into_alternate(), gpiod.pd9.into_alternate());
    let serial: Serial<pac::USART3> = match dp.USART3.serial(pins, BAUD.bps(), ccdr.peripheral.USART3, &ccdr.clocks) {
        Ok(s) => s,
        Err(_) => exit(shared::protocol::exit_code::FAULT),
    };
    let (tx, rx) = serial.split();
    DWT_CLOCK.start(&mut core.DCB, &mut core.DWT);
    let timer = dp.TIM2.timer(1.kHz(), ccdr.peripheral.TIM2, &ccdr.clocks);
    let delay = Delay(DelayFromCountDownTimer::new(timer));
    Board { serial: Usart { tx, rx }, delay }
}

/// The serial port again, for the panic and HardFault handlers only: USART3
/// as `init` left it, transmit side.
///
/// # Safety
/// Only when the main path will never run again.
pub unsafe fn steal_serial() -> impl embedded_io::Write {
    super::RegisterTx(put)
}

/// One byte out of USART3's transmitter, through its registers (the HAL's
/// handle cannot be conjured again once `init` took the peripherals).
fn put(b: u8) {
    // SAFETY: only reached through steal_serial, whose contract is that the
    // main path is dead; USART3 was configured by init.
    let usart = unsafe { &*pac::USART3::ptr() };
    while usart.isr.read().txe().bit_is_clear() {}
    usart.tdr.write(|w| w.tdr().bits(b as u16));
}

/// Stop: no semihosting on silicon (without a debugger it would fault), so
/// the core waits for a reset after its DONE frame.
pub fn exit(code: u8) -> ! {
    let _ = code;
    loop {
        cortex_m::asm::wfi();
    }
}

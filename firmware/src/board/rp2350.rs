//! RP2350 (Cortex-M33, Raspberry Pi Pico 2) through its HAL, `rp235x-hal`:
//! UART0 on GP0 (TX) / GP1 (RX) at 115200 baud (the Pico 2 has no USB-serial
//! bridge on them: a Raspberry Pi Debug Probe's UART port, or any 3.3 V
//! USB-serial adapter, connects them); the HAL's TIMER0 for delays and the
//! DWT cycle counter for layer times; defmt over RTT (what probe-rs reads).
//!
//! Silicon only: QEMU 7.2 has no RP2350, so there is no `qemu` build. The
//! code and the model are executed/read in place from the QSPI flash, data,
//! bss, stack and arena share the 520 KiB of SRAM (memory/rp2350.x).
//!
//! The boot ROM starts only an image with an IMAGE_DEF block in its first
//! 4 KiB of flash: [`IMAGE_DEF`], placed there by memory/rp2350.x.
use super::Board;
use rp235x_hal::{
    self as hal,
    clocks::init_clocks_and_plls,
    fugit::RateExtU32,
    gpio::{bank0::Gpio0, bank0::Gpio1, FunctionUart, Pin, Pins, PullDown},
    pac,
    uart::{DataBits, ReadErrorType, StopBits, UartConfig, UartPeripheral},
    Clock,
};
use shared::protocol::clock;

#[cfg(feature = "qemu")]
compile_error!("QEMU does not emulate the RP2350: build `rp2350` without `qemu`");

// defmt over RTT: probe-rs reads it from RAM (`probe-rs attach`).
use defmt_rtt as _;

/// The boot ROM's IMAGE_DEF: a secure Arm executable, vector table at the
/// start of flash (its default).
#[link_section = ".start_block"]
#[used]
pub static IMAGE_DEF: hal::block::ImageDef = hal::block::ImageDef::secure_exe();

/// This board in the board table (`shared::board`).
const BOARD: shared::board::Board = shared::board::RP2350;
/// Board name reported in the HELLO frame.
pub const NAME: &str = BOARD.name;
/// 150 MHz: the core clock after the HAL's PLL bring-up (its standard
/// configuration from the Pico 2's 12 MHz crystal).
pub const CPU_HZ: u32 = BOARD.cpu_hz;
/// The arena, in the 520 KiB of SRAM (alexnet-micro: 42 KB int8, 84 KB f16).
pub const ARENA_BYTES: usize = BOARD.arena_bytes as usize;
const BAUD: u32 = 115_200;
/// The Pico 2's crystal.
const XOSC_HZ: u32 = 12_000_000;

/// Layer times come from DWT.CYCCNT: core cycles at [`CPU_HZ`].
pub const CLOCK: u16 = clock::DWT;

static DWT_CLOCK: crate::clock::DwtClock = crate::clock::DwtClock::new();

/// Ticks of the layer clock.
pub fn now() -> u64 {
    DWT_CLOCK.now()
}

/// What the HAL's own `#[entry]` does first (`main.rs` uses cortex-m-rt's):
/// release the SIO spinlocks, which survive a soft reset (a probe's reset
/// between sessions) and would otherwise stay taken.
pub fn pre_main() {
    // SAFETY: called once, first thing in main, before anything takes a lock.
    unsafe { hal::sio::spinlock_reset() };
}

type UartPins = (Pin<Gpio0, FunctionUart, PullDown>, Pin<Gpio1, FunctionUart, PullDown>);

/// UART0's receive errors (overrun, break, parity, framing) as an
/// `embedded_io` error. (The HAL implements embedded-io 0.7; the firmware
/// and `shared` use 0.6, so this module adapts the HAL's own methods.)
#[derive(Debug)]
pub struct UartError(#[allow(dead_code)] ReadErrorType);

impl embedded_io::Error for UartError {
    fn kind(&self) -> embedded_io::ErrorKind {
        embedded_io::ErrorKind::Other
    }
}

/// UART0 behind `embedded_io`: blocking reads and writes.
pub struct Uart(UartPeripheral<hal::uart::Enabled, pac::UART0, UartPins>);

impl embedded_io::ErrorType for Uart {
    type Error = UartError;
}

impl embedded_io::Read for Uart {
    fn read(&mut self, buf: &mut [u8]) -> Result<usize, UartError> {
        if buf.is_empty() {
            return Ok(0);
        }
        // Blocks until at least one byte is there; a receive error drops the
        // bytes read with it (the frame's CRC then fails and the host is told).
        nb::block!(self.0.read_raw(buf)).map_err(|e| UartError(e.err_type))
    }
}

impl embedded_io::Write for Uart {
    fn write(&mut self, buf: &[u8]) -> Result<usize, UartError> {
        self.0.write_full_blocking(buf);
        Ok(buf.len())
    }

    fn flush(&mut self) -> Result<(), UartError> {
        while self.0.uart_is_busy() {}
        Ok(())
    }
}

/// The delay: the HAL's TIMER0 (1 MHz ticks), already embedded-hal 1.0's `DelayNs`.
pub type Delay = hal::Timer<hal::timer::CopyableTimer0>;

/// Bring up the clocks (XOSC -> PLL -> 150 MHz), the layer clock, UART0 and
/// the delay.
pub fn init(mut core: cortex_m::Peripherals) -> Board<Uart, Delay> {
    use shared::protocol::exit_code::FAULT;
    let Some(mut dp) = pac::Peripherals::take() else { exit(FAULT) };
    let mut watchdog = hal::Watchdog::new(dp.WATCHDOG);
    let Ok(clocks) =
        init_clocks_and_plls(XOSC_HZ, dp.XOSC, dp.CLOCKS, dp.PLL_SYS, dp.PLL_USB, &mut dp.RESETS, &mut watchdog)
    else {
        exit(FAULT)
    };
    let sio = hal::Sio::new(dp.SIO);
    let pins = Pins::new(dp.IO_BANK0, dp.PADS_BANK0, sio.gpio_bank0, &mut dp.RESETS);
    let uart_pins: UartPins = (pins.gpio0.into_function(), pins.gpio1.into_function());
    let config = UartConfig::new(BAUD.Hz(), DataBits::Eight, None, StopBits::One);
    let Ok(uart) =
        UartPeripheral::new(dp.UART0, uart_pins, &mut dp.RESETS).enable(config, clocks.peripheral_clock.freq())
    else {
        exit(FAULT)
    };
    DWT_CLOCK.start(&mut core.DCB, &mut core.DWT);
    let delay = hal::Timer::new_timer0(dp.TIMER0, &mut dp.RESETS, &clocks);
    Board { serial: Uart(uart), delay }
}

/// The serial port again, for the panic and HardFault handlers only: UART0
/// as `init` left it, transmit side.
///
/// # Safety
/// Only when the main path will never run again.
pub unsafe fn steal_serial() -> impl embedded_io::Write {
    super::RegisterTx(put)
}

/// One byte out of UART0's transmitter, through its registers (the HAL's
/// handle cannot be conjured again once `init` took the peripherals).
fn put(b: u8) {
    // SAFETY: only reached through steal_serial, whose contract is that the
    // main path is dead; UART0 was configured by init.
    let uart = unsafe { &*pac::UART0::ptr() };
    while uart.uartfr().read().txff().bit_is_set() {}
    uart.uartdr().write(|w| unsafe { w.data().bits(b) });
}

/// Stop: no semihosting on silicon (without a debugger it would fault), so
/// the core waits for a reset after its DONE frame.
pub fn exit(code: u8) -> ! {
    let _ = code;
    loop {
        cortex_m::asm::wfi();
    }
}

//! The layer clocks: a 64-bit tick counter from SysTick plus a wrap count
//! (the QEMU builds), the DWT cycle counter (silicon), and a [`DelayNs`] on
//! the SysTick one. A board picks one (its `CLOCK` and `now`) and says which
//! in HELLO (`shared::protocol::clock`).
//!
//! Why SysTick and not DWT.CYCCNT: QEMU does not model the cycle counter (it
//! reads 0), while SysTick runs from QEMU's virtual clock; under
//! `-icount shift=0` that clock advances exactly 1 ns per guest instruction,
//! so ticks convert to instruction counts (ticks * 1e9 / CPU_HZ), repeatable
//! run after run. On real silicon the same ticks are CPU cycles.
//!
//! SysTick is 24-bit (it wraps every 0.67 s at 25 MHz, well inside one conv
//! layer of AlexNet), so its exception counts wraps. A reload whose exception
//! has not run yet (it is pending for a few cycles, or for as long as
//! interrupts are masked) is seen through ICSR.PENDSTSET, so time never runs
//! back a period: see `shared::board::systick::read`, where the arithmetic
//! lives and is tested on the host against every interleaving.

use core::sync::atomic::{AtomicU32, Ordering};
use cortex_m::peripheral::syst::SystClkSource;
use cortex_m::peripheral::{SCB, SYST};
use embedded_hal::delay::DelayNs;
use shared::board::systick::{self, RELOAD};

/// The SysTick counter of the boards that use it (started by their `init`;
/// the SysTick exception counts its wraps).
pub static SYSTICK: Clock = Clock::new();

/// The free-running counter. One per firmware, started once.
pub struct Clock {
    wraps: AtomicU32,
}

// Silicon builds time with DWT: SysTick only counts wraps there.
#[cfg_attr(all(feature = "dwt-clock", not(feature = "qemu")), allow(dead_code))]
impl Clock {
    /// A counter that is not running yet.
    pub const fn new() -> Self {
        Clock { wraps: AtomicU32::new(0) }
    }

    /// Start SysTick on the core clock, wrapping every 2^24 ticks with an exception.
    pub fn start(&self, mut syst: SYST) {
        syst.set_clock_source(SystClkSource::Core);
        syst.set_reload(RELOAD);
        syst.clear_current();
        syst.enable_interrupt();
        syst.enable_counter();
    }

    /// Called from the SysTick exception.
    pub fn on_wrap(&self) {
        self.wraps.fetch_add(1, Ordering::Relaxed);
    }

    /// Ticks since [`Clock::start`].
    pub fn now(&self) -> u64 {
        systick::read(|| self.wraps.load(Ordering::Acquire), SCB::is_pendst_pending, SYST::get_current)
    }
}

impl Default for Clock {
    fn default() -> Self {
        Self::new()
    }
}

/// Busy-wait delay on the shared [`Clock`], so the delay and the layer
/// timings share SysTick instead of fighting over it.
#[cfg_attr(all(feature = "dwt-clock", not(feature = "qemu")), allow(dead_code))]
pub struct TickDelay {
    clock: &'static Clock,
    hz: u32,
}

#[cfg_attr(all(feature = "dwt-clock", not(feature = "qemu")), allow(dead_code))]
impl TickDelay {
    /// A delay counting `hz` ticks a second.
    pub fn new(clock: &'static Clock, hz: u32) -> Self {
        TickDelay { clock, hz }
    }
}

impl DelayNs for TickDelay {
    fn delay_ns(&mut self, ns: u32) {
        let ticks = (ns as u64 * self.hz as u64).div_ceil(1_000_000_000);
        let start = self.clock.now();
        while self.clock.now().wrapping_sub(start) < ticks {}
    }
}

/// DWT.CYCCNT (the core's cycle counter) extended to 64 bits: the layer
/// clock on silicon, where it counts every core cycle. QEMU does not model
/// it (it reads 0), hence SysTick there. The extension counts a wrap when a
/// reading is below the previous one, so differences are right as long as
/// the clock is read at least once per 2^32 cycles (25 s at 168 MHz), which
/// every layer and run does; an idle spell between requests only shifts the
/// origin.
#[cfg(all(feature = "dwt-clock", not(feature = "qemu")))]
pub struct DwtClock {
    high: AtomicU32,
    last: AtomicU32,
}

#[cfg(all(feature = "dwt-clock", not(feature = "qemu")))]
impl DwtClock {
    pub const fn new() -> Self {
        DwtClock { high: AtomicU32::new(0), last: AtomicU32::new(0) }
    }

    /// Enable tracing and the cycle counter.
    pub fn start(&self, dcb: &mut cortex_m::peripheral::DCB, dwt: &mut cortex_m::peripheral::DWT) {
        dcb.enable_trace();
        cortex_m::peripheral::DWT::unlock();
        dwt.enable_cycle_counter();
    }

    /// Cycles since the counter started (single-threaded use: main only).
    pub fn now(&self) -> u64 {
        let c = cortex_m::peripheral::DWT::cycle_count();
        if c < self.last.swap(c, Ordering::Relaxed) {
            self.high.fetch_add(1, Ordering::Relaxed);
        }
        ((self.high.load(Ordering::Relaxed) as u64) << 32) | c as u64
    }
}
